"""Backbone registry: `build_model(name, preset, ...)`. Adding a backbone = one file + one line below."""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from . import dit, fixed_point, liquid, unet
from .base import Backbone, BlockStack, build_preset


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
    # nn.Module would build a model of 0 input channels or a negative class count without a word
    for key, value, low in (("in_channels", in_channels, 1), ("input_size", input_size, 1),
                            ("num_classes", num_classes, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    cls, presets, _ = BACKBONES[name]
    return build_preset(cls, presets, name, preset, in_channels, input_size, num_classes, **options)


__all__ = ["BACKBONES", "Backbone", "BlockStack", "Registered", "build_model"]
