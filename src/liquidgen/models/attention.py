"""Multi-head attention that also works under forward-mode AD.

Fused SDPA kernels (flash, memory-efficient, the CPU flash kernel) have no forward-mode derivative,
so `torch.func.jvp` through them fails - and continuous-time consistency training (sCM) needs exactly
that JVP. `attention()` detects a forward-AD or functorch-wrapped input (or a JVP being compiled,
`kernels.compiled_jvp`) and then computes
softmax(q k^T / sqrt(d)) v from primitives, whose JVP rules exist; otherwise it calls SDPA.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import forward_ad_active


def _needs_math_path(*tensors: Tensor) -> bool:
    return any(forward_ad_active(x) for x in tensors)


def math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention from primitives: (B, heads, N, d) x (B, heads, M, d) -> (B, heads, N, d); `mask`
    (B, M) bool hides the keys where it is False (padding)."""
    logits = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    if _needs_math_path(q, k, v):
        return math_attention(q, k, v, mask)
    # SDPA's fused kernels (flash, memory-efficient, the CPU's) need the head dim contiguous; otherwise SDPA falls
    # back to its math path, which runs bf16 attention as fp32 matmuls: the UNet's (B, heads, positions, head dim)
    # views were 6 + 6 fp32 GEMMs in an H100 profile of UNet-28 sampling; contiguous, its compiled 2,000-row forward
    # went from 27.3 to 26.2 ms (benchmarks/results/2026-12-05-unet-layouts-and-curves-h100)
    q, k, v = (z if z.stride(-1) == 1 else z.contiguous() for z in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])


class Attention(nn.Module):
    """Self-attention over x, or cross-attention from x to `context` when `context_dim` is given.
    x: (B, N, width); context: (B, M, context_dim); mask: (B, M) bool, False for padding tokens."""

    def __init__(self, width: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        source = x if context is None else context.to(x.dtype)
        split = lambda z: z.reshape(b, z.shape[1], self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        k, v = self.kv(source).chunk(2, dim=-1)
        out = attention(split(self.q(x)), split(k), split(v), mask)
        return self.out(out.transpose(1, 2).reshape(b, n, d))
