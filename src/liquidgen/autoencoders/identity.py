"""The identity autoencoder: pixel space behind the latent-space interface, so code written for
latents (precompute, normalisation, sampling) runs unchanged on pixels and is testable without weights."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Autoencoder


class Identity(Autoencoder):
    """encode and decode return their input (decode clamps to [-1, 1]); latents are the pixels."""

    name = "identity"

    def __init__(self, channels: int = 3):
        super().__init__()
        if channels < 1:
            raise ValueError(f"identity autoencoder: channels must be positive, got {channels}")
        self.channels = channels
        self.latent_channels = self.image_channels = channels
        self.downscale = 1

    def _encode(self, images: Tensor) -> Tensor:
        return images

    def _decode(self, latents: Tensor) -> Tensor:
        return latents

    def options(self) -> dict[str, Any]:
        return {"channels": self.channels}
