"""Inpainting and outpainting (TLD's mask-conditioned variant): the model sees, beside x_t, the known
image with the region to generate blanked out and the mask itself, as `concat` channels:

    concat = [known * (1 - mask), mask],   mask = 1 where the model generates, 0 where it keeps

Training draws a random mask per sample: an inpainting box, an outpainting border (keep one side or the
centre), or everything (plain generation, so the model still samples from scratch).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import read_image

KINDS = ("box", "border", "all")  # drawn uniformly


def concat_input(known: Tensor, mask: Tensor) -> Tensor:
    """The model's extra input channels: the kept part of `known` and the mask (B, 1, H, W)."""
    return torch.cat([known * (1 - mask), mask.to(known.dtype)], dim=1)


def random_masks(n: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """(n, 1, height, width) float masks of random kinds, from the global RNG (restored on resume)."""
    kind = torch.randint(len(KINDS), (n,), device=device)
    rows = torch.arange(height, device=device).view(1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1)
    # A box covering 1/4 to 3/4 of each side, anywhere.
    bh = (height * (0.25 + 0.5 * torch.rand(n, device=device))).long().clamp_min(1).view(-1, 1, 1)
    bw = (width * (0.25 + 0.5 * torch.rand(n, device=device))).long().clamp_min(1).view(-1, 1, 1)
    top = (torch.rand(n, device=device).view(-1, 1, 1) * (height - bh + 1)).long()
    left = (torch.rand(n, device=device).view(-1, 1, 1) * (width - bw + 1)).long()
    box = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
    # A border: generate everything outside a kept band of 1/4 to 3/4 of the image along one side.
    side = torch.randint(4, (n,), device=device).view(-1, 1, 1)
    keep = (0.25 + 0.5 * torch.rand(n, device=device)).view(-1, 1, 1)
    border = torch.where(side == 0, rows >= keep * height,
                         torch.where(side == 1, rows < (1 - keep) * height,
                                     torch.where(side == 2, cols >= keep * width, cols < (1 - keep) * width)))
    everything = torch.ones_like(box)
    masks = torch.where((kind == 0).view(-1, 1, 1), box, torch.where((kind == 1).view(-1, 1, 1), border, everything))
    return masks[:, None].float()


def load_mask(path: str | Path, size: int) -> Tensor:
    """A mask image (white = generate, black = keep) as a (1, 1, size, size) {0, 1} tensor. It is cropped and
    resized by `read_image`, as the init image is, so that a mask of the init's shape marks the same pixels
    whatever that shape."""
    return torch.from_numpy(read_image(path, size, channels=1) > 127).float()[None, None]


def to_latent_grid(mask: Tensor, size: int) -> Tensor:
    """A pixel mask at a latent grid: a latent cell is generated if any of its pixels is (max pooling),
    so no kept latent carries a pixel the user asked to replace."""
    return F.adaptive_max_pool2d(mask, size) if mask.shape[-1] != size else mask
