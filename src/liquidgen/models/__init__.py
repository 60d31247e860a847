"""Backbone registry: `build_model(name, preset, ...)`. Adding a backbone = one file + one line below."""
from __future__ import annotations

import inspect

from .base import Backbone
from . import liquid

# name -> (class, presets)
BACKBONES: dict[str, tuple[type[Backbone], dict[str, dict]]] = {
    "liquid": (liquid.LiquidGen, liquid.PRESETS),
}


def build_model(name: str, preset: str, in_channels: int, input_size: int, num_classes: int,
                **options) -> Backbone:
    """Build backbone `name` at `preset`, with `options` overriding the preset's architecture keys."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    cls, presets = BACKBONES[name]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for backbone {name!r}; choose from {list(presets)}")
    allowed = [p for p in inspect.signature(cls).parameters
               if p not in ("in_channels", "input_size", "num_classes")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for backbone {name!r}; allowed: {', '.join(allowed)}")
    return cls(in_channels=in_channels, input_size=input_size, num_classes=num_classes,
               **{**presets[preset], **options})


__all__ = ["BACKBONES", "Backbone", "build_model"]
