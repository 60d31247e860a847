"""The interface every backbone implements, and the time / class conditioning they share.

A backbone maps (x_t, t, y) to a tensor shaped like x_t: `forward(x, t, y=None)` with
    x: (B, in_channels, H, W) noisy input,
    t: (B,) flow time in [0, 1] (liquidgen's convention, see `liquidgen.paths`),
    y: (B,) int64 class labels, where `num_classes` is the dedicated null class used for
       classifier-free guidance; None means unconditional (every sample gets the null class).
What the output means (v, x0 or eps) is the objective's business, not the backbone's.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sin/cos features of `scale * t` (DDPM/DiT; scale maps t in [0, 1] to step units)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class Backbone(nn.Module):
    """Base class: holds the input geometry and builds the conditioning vector c(t, y)."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, cond_dim: int,
                 out_channels: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.input_size = input_size
        self.num_classes = num_classes
        self.time_embed = TimestepEmbedding(cond_dim)
        # One extra row: index num_classes is the learned "no label" embedding that CFG's
        # unconditional branch uses (not class 0, not a zero vector).
        self.class_embed = nn.Embedding(num_classes + 1, cond_dim) if num_classes > 0 else None

    @property
    def null_class(self) -> int:
        return self.num_classes

    def condition(self, t: Tensor, y: Tensor | None) -> Tensor:
        c = self.time_embed(t)
        if self.class_embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.null_class, device=t.device, dtype=torch.long)
            c = c + self.class_embed(y)
        return c

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
