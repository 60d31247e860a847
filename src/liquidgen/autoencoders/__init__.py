"""Autoencoder registry: frozen image <-> latent maps for training generators in latent space.

Every autoencoder speaks liquidgen's pixel convention, float images in [-1, 1] shaped (B, C, H, W),
whatever its network was trained on, so data loading, precompute and sampling never care which one
is in use. `encode` returns *raw* latents: liquidgen normalises them with per-channel statistics
measured at precompute time, so no model-specific scaling factor is applied here. `spec()` is the
JSON-able record of how to rebuild the autoencoder (`build_autoencoder(**spec)`), which is what a
latent dataset or checkpoint stores to decode its samples later.

Adding one = one file with a subclass of `Autoencoder` implementing `_encode` / `_decode` + one line
in `AUTOENCODERS`.
"""
from __future__ import annotations

import inspect
from typing import Any

from .base import DTYPES, Autoencoder, parse_dtype
from .diffusers_vae import DiffusersVAE
from .identity import Identity
from .own import OwnAutoencoder
from .taesd import TAESD

AUTOENCODERS: dict[str, type[Autoencoder]] = {"identity": Identity, "taesd": TAESD, "diffusers": DiffusersVAE,
                                              "own": OwnAutoencoder}


def build_autoencoder(name: str, **options: Any) -> Autoencoder:
    """Build autoencoder `name` with `options` (its constructor's arguments), frozen: in eval mode
    with requires_grad False on every parameter, since liquidgen never trains them."""
    if name not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder {name!r}; choose from {sorted(AUTOENCODERS)}")
    params = inspect.signature(AUTOENCODERS[name]).parameters
    allowed = list(params)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for autoencoder {name!r}; allowed: {', '.join(allowed)}")
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise ValueError(f"autoencoder {name!r} needs option {missing[0]!r}; allowed: {', '.join(allowed)}")
    autoencoder = AUTOENCODERS[name](**options)
    autoencoder.eval().requires_grad_(False)
    return autoencoder


__all__ = [
    "AUTOENCODERS",
    "DTYPES",
    "TAESD",
    "Autoencoder",
    "DiffusersVAE",
    "Identity",
    "OwnAutoencoder",
    "build_autoencoder",
    "parse_dtype",
]
