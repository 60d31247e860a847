"""The liquid blend (closed-form CfC update, Hasani et al. 2022) as one Triton kernel each way, with the residual
sum in front of it folded in:

    out = a x + (1 - a) (s1 + s2),   a = exp(-softplus(rho)) per channel (computed by the caller, fp32)
    dx = a dout,  ds1 = ds2 = (1 - a) dout,  da_c = sum_{b, hw} dout (x - s1 - s2)

LiquidBlock's first blend takes the local and the global stimulus as s1 and s2, so `local + scan` is never
written out. Operands are read through their own strides (`layout`); out and dx are NCHW-contiguous. da is
summed per program and the partial sums added by PyTorch (deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .layout import C_BLOCK, P_BLOCK, as_flat, flat_strides, grid, load, store, tile


@triton.jit
def _stimulus(s1_ptr, s2_ptr, b, c, p, s1_sb, s1_sc, s1_sp, s2_sb, s2_sc, s2_sp, mask, TWO: tl.constexpr):
    """s1 + s2 (s1 alone unless TWO) in fp32: the residual sum folded into the blend, never written out."""
    s = load(s1_ptr, b, c, p, s1_sb, s1_sc, s1_sp, mask)
    if TWO:
        s += load(s2_ptr, b, c, p, s2_sb, s2_sc, s2_sp, mask)
    return s


@triton.jit
def _blend_fwd(x_ptr, s1_ptr, s2_ptr, a_ptr, o_ptr, C, HW, x_sb, x_sc, x_sp, s1_sb, s1_sc, s1_sp,
               s2_sb, s2_sc, s2_sp, o_sb, o_sc, o_sp,
               TWO: tl.constexpr, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr):
    b, c, p, mask = tile(C, HW, C_BLOCK, P_BLOCK)
    a = tl.load(a_ptr + c, mask=c < C, other=0.0)[:, None]
    x = load(x_ptr, b, c, p, x_sb, x_sc, x_sp, mask)
    s = _stimulus(s1_ptr, s2_ptr, b, c, p, s1_sb, s1_sc, s1_sp, s2_sb, s2_sc, s2_sp, mask, TWO)
    store(o_ptr, a * x + (1.0 - a) * s, b, c, p, o_sb, o_sc, o_sp, mask)


@triton.jit
def _blend_bwd(do_ptr, x_ptr, s1_ptr, s2_ptr, a_ptr, dx_ptr, ds_ptr, da_ptr, C, HW, NP,
               do_sb, do_sc, do_sp, x_sb, x_sc, x_sp, s1_sb, s1_sc, s1_sp, s2_sb, s2_sc, s2_sp,
               TWO: tl.constexpr, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr):
    b, c, p, mask = tile(C, HW, C_BLOCK, P_BLOCK)
    a = tl.load(a_ptr + c, mask=c < C, other=0.0)[:, None]
    do = load(do_ptr, b, c, p, do_sb, do_sc, do_sp, mask)
    x = load(x_ptr, b, c, p, x_sb, x_sc, x_sp, mask)
    s = _stimulus(s1_ptr, s2_ptr, b, c, p, s1_sb, s1_sc, s1_sp, s2_sb, s2_sc, s2_sp, mask, TWO)
    # dx and ds are NCHW-contiguous: strides (C HW, HW, 1)
    store(dx_ptr, a * do, b, c, p, C * HW, HW, 1, mask)
    store(ds_ptr, (1.0 - a) * do, b, c, p, C * HW, HW, 1, mask)
    da = tl.sum(tl.where(mask, do * (x - s), 0.0), axis=1)
    tl.store(da_ptr + (b * NP + tl.program_id(2)) * C + c, da, mask=c < C)


def _dtype(x: Tensor, s1: Tensor, s2: Tensor | None) -> torch.dtype:
    dtype = torch.promote_types(x.dtype, s1.dtype)
    return dtype if s2 is None else torch.promote_types(dtype, s2.dtype)


@torch.library.custom_op("liquidgen::blend", mutates_args=())
def blend(x: Tensor, s1: Tensor, s2: Tensor | None, a: Tensor) -> Tensor:
    """a x + (1 - a) (s1 + s2) for (B, C, H, W) x, s1, s2 (s2 may be None) and per-channel a (C,);
    the result is NCHW-contiguous."""
    x, s1 = as_flat(x), as_flat(s1)
    s2f = s1 if s2 is None else as_flat(s2)
    out = torch.empty(x.shape, device=x.device, dtype=_dtype(x, s1, s2))
    _blend_fwd[grid(x)](x, s1, s2f, a.float().contiguous(), out, x.shape[1], x.shape[2] * x.shape[3],
                        *flat_strides(x), *flat_strides(s1), *flat_strides(s2f), *flat_strides(out),
                        TWO=s2 is not None, C_BLOCK=C_BLOCK, P_BLOCK=P_BLOCK, num_warps=4)
    return out


@blend.register_fake
def _(x: Tensor, s1: Tensor, s2: Tensor | None, a: Tensor) -> Tensor:
    return x.new_empty(x.shape, dtype=_dtype(x, s1, s2))


@torch.library.custom_op("liquidgen::blend_backward", mutates_args=())
def blend_backward(dout: Tensor, x: Tensor, s1: Tensor, s2: Tensor | None, a: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, ds, da): ds is the gradient of both s1 and s2; da is fp32 (C,)."""
    dout, x, s1 = as_flat(dout), as_flat(x), as_flat(s1)
    s2f = s1 if s2 is None else as_flat(s2)
    b, c, h, w = x.shape
    programs = grid(x)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    ds = torch.empty(x.shape, device=x.device, dtype=s1.dtype)
    partial = torch.empty(b * programs[2], c, device=x.device, dtype=torch.float32)
    _blend_bwd[programs](dout, x, s1, s2f, a.float().contiguous(), dx, ds, partial, c, h * w, programs[2],
                         *flat_strides(dout), *flat_strides(x), *flat_strides(s1), *flat_strides(s2f),
                         TWO=s2 is not None, C_BLOCK=C_BLOCK, P_BLOCK=P_BLOCK, num_warps=4)
    return dx, ds, partial.sum(0)


@blend_backward.register_fake
def _(dout: Tensor, x: Tensor, s1: Tensor, s2: Tensor | None, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return x.new_empty(x.shape), s1.new_empty(x.shape), a.new_empty(a.shape, dtype=torch.float32)


def _setup_context(ctx, inputs, output) -> None:
    x, s1, s2, a = inputs
    ctx.s2_dtype = None if s2 is None else s2.dtype
    ctx.a_dtype = a.dtype
    ctx.save_for_backward(x, s1, s2, a)


def _backward(ctx, dout: Tensor):
    x, s1, s2, a = ctx.saved_tensors
    dx, ds, da = blend_backward(dout, x, s1, s2, a)
    # s1 and s2 get the same gradient: one tensor for both (autograd never adds into a shared one in place)
    return dx, ds, (None if ctx.s2_dtype is None else ds.to(ctx.s2_dtype)), da.to(ctx.a_dtype)


blend.register_autograd(_backward, setup_context=_setup_context)
