"""How the fused elementwise ops (blend, glu) read (B, C, H, W) tensors of any layout: as (B, C, H*W) views through
their own strides, so NCHW, channels-last and channel slices of either are read in place, never copied to match.
Host side: which tensors flatten and their strides; device side (Triton): one program's [channels, positions] tile
and the loads and stores through those strides."""
from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

C_BLOCK, P_BLOCK = 32, 64  # [channels, positions] per program


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


def grid(t: Tensor) -> tuple[int, int, int]:
    """Programs over (B, C, H, W) `t`: one per sample, channel block and position block."""
    b, c, h, w = t.shape
    return b, triton.cdiv(c, C_BLOCK), triton.cdiv(h * w, P_BLOCK)


@triton.jit
def tile(C, HW, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr):
    """This program's sample b, channels c (C_BLOCK,), positions p (P_BLOCK,) and the [c, p] mask of those in range."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * C_BLOCK + tl.arange(0, C_BLOCK)
    p = tl.program_id(2) * P_BLOCK + tl.arange(0, P_BLOCK)
    return b, c, p, (c < C)[:, None] & (p < HW)[None, :]


@triton.jit
def load(ptr, b, c, p, sb, sc, sp, mask):
    """The [c, p] tile of sample b of a tensor with (B, C, H*W) strides sb, sc, sp, in fp32."""
    return tl.load(ptr + b * sb + c[:, None] * sc + p[None, :] * sp, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def store(ptr, value, b, c, p, sb, sc, sp, mask):
    """Writes `value` as the [c, p] tile of sample b, in the tensor's own dtype."""
    tl.store(ptr + b * sb + c[:, None] * sc + p[None, :] * sp, value.to(ptr.dtype.element_ty), mask=mask)
