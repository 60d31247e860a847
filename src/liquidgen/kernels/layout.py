"""How the fused elementwise ops read (B, C, H, W) tensors of any layout: as (B, C, H*W) views through their
own strides, so NCHW, channels-last and channel slices of either are read in place, never copied to match."""
from __future__ import annotations

from torch import Tensor


def flattens(t: Tensor) -> bool:
    """Whether H and W of `t` are laid out as one axis (true of NCHW, channels-last and their channel slices)."""
    return t.shape[2] == 1 or t.stride(2) == t.shape[3] * t.stride(3)


def as_flat(t: Tensor) -> Tensor:
    """`t` itself where its H and W flatten, else a contiguous copy."""
    return t if flattens(t) else t.contiguous()


def flat_strides(t: Tensor) -> tuple[int, int, int]:
    """Strides of (B, C, H, W) `t` read as (B, C, H*W)."""
    if not flattens(t):
        raise ValueError(f"strides {t.stride()} of a {tuple(t.shape)} tensor do not flatten H and W")
    return t.stride(0), t.stride(1), t.stride(3)
