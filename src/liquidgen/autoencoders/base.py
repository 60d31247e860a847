"""The interface every autoencoder implements: float images in [-1, 1] <-> raw latents."""
from __future__ import annotations

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
