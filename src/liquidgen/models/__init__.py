"""Backbone registry: `build_model(name, preset, ...)`. Adding a backbone = one file + one line below."""
from __future__ import annotations

import inspect
from typing import NamedTuple

from torch import nn

from . import dit, fixed_point, liquid, unet
from .base import Backbone, BlockStack


class Registered(NamedTuple):
    cls: type[nn.Module]
    presets: dict[str, dict]  # preset -> architecture keys
    native: dict[str, tuple[int, int, int]]  # preset -> (channels, size, classes) it is specified at


BACKBONES: dict[str, Registered] = {
    "liquid": Registered(liquid.LiquidGen, liquid.PRESETS, liquid.NATIVE),
    "dit": Registered(dit.DiT, dit.PRESETS, dit.NATIVE),
    "unet": Registered(unet.UNet, unet.PRESETS, unet.NATIVE),
    "fixed_point": Registered(fixed_point.FixedPoint, fixed_point.PRESETS, fixed_point.NATIVE),
}


def build_model(name: str, preset: str, in_channels: int, input_size: int, num_classes: int,
                **options) -> nn.Module:
    """Build backbone `name` at `preset`, with `options` overriding the preset's architecture keys."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    cls, presets, _ = BACKBONES[name]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for backbone {name!r}; choose from {list(presets)}")
    allowed = [p for p in inspect.signature(cls).parameters
               if p not in ("in_channels", "input_size", "num_classes")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for backbone {name!r}; allowed: {', '.join(allowed)}")
    return cls(in_channels=in_channels, input_size=input_size, num_classes=num_classes,
               **{**presets[preset], **options})


__all__ = ["BACKBONES", "Backbone", "BlockStack", "Registered", "build_model"]
