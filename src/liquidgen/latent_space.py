"""The map between images and a model's data space.

Images are uint8 on disk and float in [-1, 1] in memory (`to_float` / `to_uint8`). A model's data space
is either those pixels (the identity autoencoder) or autoencoder latents normalised per channel,
z_model = (z - mean) / std, with the statistics `liquidgen precompute` measured over the dataset.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .autoencoders import Autoencoder, build_autoencoder


def to_float(x: Tensor) -> Tensor:
    """uint8 images -> float32 in [-1, 1]."""
    return x.float() / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [-1, 1] -> uint8 (rounded, clamped); the inverse of `to_float`."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class LatentSpace:
    """Pixels, or an autoencoder's latents with per-channel statistics. The autoencoder is built on
    first use, so a pixel model or a training run on precomputed latents never loads it."""

    def __init__(self, autoencoder: dict | None, image_size: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        self.spec = autoencoder or {"name": "identity"}
        self.image_size = image_size
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        self._ae: Autoencoder | None = None

    @classmethod
    def from_state(cls, state: dict | None, image_size: int) -> LatentSpace:
        """What `state()` wrote (a checkpoint's model.json), or pixels of `image_size` for None."""
        return cls(**state) if state else cls(None, image_size)

    @property
    def pixels(self) -> bool:
        return self.spec["name"] == "identity"

    def describe(self) -> str:
        return "images" if self.pixels else f"{self.spec['name']} latents"

    def state(self) -> dict | None:
        """JSON-able; None for pixels. `LatentSpace(**state)` rebuilds it."""
        if self.pixels and self.mean is None:
            return None
        return {"autoencoder": self.spec, "image_size": self.image_size,
                "mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist()}

    def _view(self, v: Tensor, like: Tensor) -> Tensor:
        return v.to(like.device).view(1, -1, 1, 1)

    def normalize(self, z: Tensor) -> Tensor:
        """Stored values (uint8 pixels or float16 raw latents) -> model space."""
        if z.dtype == torch.uint8:
            return to_float(z)
        z = z.float()
        return z if self.mean is None else (z - self._view(self.mean, z)) / self._view(self.std, z)

    def autoencoder(self, device: torch.device | str) -> Autoencoder:
        if self._ae is None:
            self._ae = build_autoencoder(**self.spec)
        return self._ae.to(device)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] -> model space."""
        if self.pixels:
            return images.float()
        return self.normalize(self.autoencoder(images.device).encode(images))

    @torch.no_grad()
    def decode(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """Model space -> images in [-1, 1]."""
        if self.pixels:
            return x.float()
        z = x.float() * self._view(self.std, x) + self._view(self.mean, x)
        ae = self.autoencoder(x.device)
        return torch.cat([ae.decode(b) for b in z.split(batch_size)])
