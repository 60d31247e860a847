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

import torch
from torch import Tensor, nn


class Autoencoder(nn.Module):
    """Base class. Images are float tensors in [-1, 1] (liquidgen's pixel range), (B, C, H, W).

    The public `encode` / `decode` do the checks and conversions every autoencoder shares (size
    divisibility, grayscale -> RGB, casting to the parameters' dtype and back to float32, clamping)
    and call the subclass's `_encode` / `_decode`, which see inputs already on the module's dtype."""

    name: str  # registry key, the "name" of `spec()`
    latent_channels: int
    downscale: int  # spatial factor: latents are (H / downscale, W / downscale)
    image_channels: int  # channels `decode` returns (3 for the VAEs)

    # --- what subclasses implement ----------------------------------------------------------------

    def _encode(self, images: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _decode(self, latents: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def options(self) -> dict[str, Any]:  # pragma: no cover
        """The constructor arguments that rebuild this autoencoder (JSON-able)."""
        raise NotImplementedError

    # --- the interface ----------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1], (B, C, H, W) -> raw (unnormalised) float32 latents
        (B, latent_channels, H / downscale, W / downscale)."""
        if images.ndim != 4:
            raise ValueError(f"{self.name} autoencoder: images must be (B, C, H, W), got shape {tuple(images.shape)}")
        self._check_divisible(*images.shape[-2:])
        channels = images.shape[1]
        if channels == 1 and self.image_channels == 3:
            images = images.repeat(1, 3, 1, 1)  # grayscale as RGB: R = G = B
        elif channels != self.image_channels:
            raise ValueError(f"{self.name} autoencoder takes {self.image_channels}-channel images"
                             f"{' (or grayscale)' if self.image_channels == 3 else ''}, got {channels} channels")
        return self._encode(images.to(self._dtype())).float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Raw latents (B, latent_channels, h, w) -> float32 images in [-1, 1] (clamped),
        (B, image_channels, h * downscale, w * downscale)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"{self.name} autoencoder: latents must be (B, {self.latent_channels}, h, w), "
                             f"got shape {tuple(latents.shape)}")
        return self._decode(latents.to(self._dtype())).float().clamp(-1, 1)

    def spec(self) -> dict[str, Any]:
        """{"name": registry name, **options}; `build_autoencoder(**spec)` rebuilds this autoencoder."""
        return {"name": self.name, **self.options()}

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        """(latent_channels, h, w) of the latents of a square image of side `size`."""
        self._check_divisible(size, size)
        return self.latent_channels, size // self.downscale, size // self.downscale

    # --- helpers ----------------------------------------------------------------------------------

    def _check_divisible(self, h: int, w: int) -> None:
        if h % self.downscale or w % self.downscale:
            raise ValueError(f"image size {h}x{w} is not divisible by the downscale factor {self.downscale} "
                             f"of the {self.name} autoencoder; resize or crop to a multiple of {self.downscale}")

    def _dtype(self) -> torch.dtype:
        """The parameters' dtype (float32 for parameter-free autoencoders): inputs are cast to it."""
        param = next(self.parameters(), None)
        return torch.float32 if param is None else param.dtype


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(dtype: str, owner: str) -> torch.dtype:
    """The `dtype` option of an autoencoder (a string, so that `spec()` stays JSON-able)."""
    if dtype not in DTYPES:
        raise ValueError(f"{owner}: unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[dtype]


# The subclasses import `Autoencoder` from this (partially initialised) package, so they come after it.
from .diffusers_vae import DiffusersVAE  # noqa: E402
from .identity import Identity  # noqa: E402
from .own import OwnAutoencoder  # noqa: E402
from .taesd import TAESD  # noqa: E402

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


__all__ = ["AUTOENCODERS", "Autoencoder", "DiffusersVAE", "Identity", "OwnAutoencoder", "TAESD", "build_autoencoder"]
