"""The gate of LiquidGen's local stimulus as one Triton kernel each way: out = gelu(v) * sigmoid(g), with v the
depthwise conv's output and g the gate half of the 1x1 expansion (a GLU over space; GELU exact, erf form).

Layouts: v comes channels-last (the depthwise conv's layout, see models.liquid.DEPTHWISE_LAYOUT), g is a
channel slice of an NCHW tensor, and out is written NCHW-contiguous for the 1x1 projection. Each is read
through its own strides (`layout`), so no operand is copied to match another; the backward writes dv in v's
layout, which is what the depthwise conv's backward reads.

    dv = dout sigmoid(g) gelu'(v),  gelu'(v) = Phi(v) + v phi(v)
    dg = dout gelu(v) sigmoid(g) (1 - sigmoid(g))
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .layout import C_BLOCK, P_BLOCK, as_flat, flat_strides, grid, load, store, tile


@triton.jit
def _gelu_parts(v):
    cdf = 0.5 * (1.0 + tl.math.erf(v * 0.7071067811865476))
    pdf = tl.exp(-0.5 * v * v) * 0.3989422804014327
    return v * cdf, cdf + v * pdf


@triton.jit
def _glu_fwd(v_ptr, g_ptr, o_ptr, C, HW, v_sb, v_sc, v_sp, g_sb, g_sc, g_sp, o_sb, o_sc, o_sp,
             C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr):
    b, c, p, mask = tile(C, HW, C_BLOCK, P_BLOCK)
    gelu, _ = _gelu_parts(load(v_ptr, b, c, p, v_sb, v_sc, v_sp, mask))
    out = gelu * tl.sigmoid(load(g_ptr, b, c, p, g_sb, g_sc, g_sp, mask))
    store(o_ptr, out, b, c, p, o_sb, o_sc, o_sp, mask)


@triton.jit
def _glu_bwd(do_ptr, v_ptr, g_ptr, dv_ptr, dg_ptr, C, HW, do_sb, do_sc, do_sp, v_sb, v_sc, v_sp,
             g_sb, g_sc, g_sp, dv_sb, dv_sc, dv_sp, dg_sb, dg_sc, dg_sp,
             C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr):
    b, c, p, mask = tile(C, HW, C_BLOCK, P_BLOCK)
    do = load(do_ptr, b, c, p, do_sb, do_sc, do_sp, mask)
    gelu, dgelu = _gelu_parts(load(v_ptr, b, c, p, v_sb, v_sc, v_sp, mask))
    sig = tl.sigmoid(load(g_ptr, b, c, p, g_sb, g_sc, g_sp, mask))
    store(dv_ptr, do * sig * dgelu, b, c, p, dv_sb, dv_sc, dv_sp, mask)
    store(dg_ptr, do * gelu * sig * (1.0 - sig), b, c, p, dg_sb, dg_sc, dg_sp, mask)


@torch.library.custom_op("liquidgen::gated_gelu", mutates_args=())
def gated_gelu(v: Tensor, g: Tensor) -> Tensor:
    """gelu(v) * sigmoid(g) for (B, C, H, W) v and g of any layout; the result is NCHW-contiguous."""
    v, g = as_flat(v), as_flat(g)
    out = torch.empty(v.shape, device=v.device, dtype=torch.promote_types(v.dtype, g.dtype))
    _glu_fwd[grid(v)](v, g, out, v.shape[1], v.shape[2] * v.shape[3], *flat_strides(v), *flat_strides(g),
                      *flat_strides(out), C_BLOCK=C_BLOCK, P_BLOCK=P_BLOCK, num_warps=4)
    return out


@gated_gelu.register_fake
def _(v: Tensor, g: Tensor) -> Tensor:
    return v.new_empty(v.shape, dtype=torch.promote_types(v.dtype, g.dtype))


@torch.library.custom_op("liquidgen::gated_gelu_backward", mutates_args=())
def gated_gelu_backward(dout: Tensor, v: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(dv, dg): dv in v's layout (channels-last in the model), dg NCHW-contiguous."""
    dout, v, g = as_flat(dout), as_flat(v), as_flat(g)
    dv, dg = torch.empty_like(v), torch.empty(g.shape, device=g.device, dtype=g.dtype)
    _glu_bwd[grid(v)](dout, v, g, dv, dg, v.shape[1], v.shape[2] * v.shape[3], *flat_strides(dout),
                      *flat_strides(v), *flat_strides(g), *flat_strides(dv), *flat_strides(dg),
                      C_BLOCK=C_BLOCK, P_BLOCK=P_BLOCK, num_warps=4)
    return dv, dg


@gated_gelu_backward.register_fake
def _(dout: Tensor, v: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(as_flat(v)), g.new_empty(g.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, dout: Tensor):
    return gated_gelu_backward(dout, *ctx.saved_tensors)


gated_gelu.register_autograd(_backward, setup_context=_setup_context)
