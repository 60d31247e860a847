"""AdaGN as one Triton kernel each way: GroupNorm statistics, normalisation and the per-sample scale and shift
of the conditioning, y = (x - mean_g) * rstd_g * (1 + scale[b, c]) + shift[b, c].

Layout: x is NCHW-contiguous (B, C, H, W), so one group of one sample is a contiguous span of
(C / groups) x H x W values. One program owns one (sample, group) and walks it as a
[channels of the group, positions] tile: the statistics never leave the program, and the per-channel
sums the backward needs fall out of the same tile. `ss` is the conditioning projection (B, 2C): scale
in the first C columns, shift in the last C (AdaGN's `proj(c).chunk(2)`).

Backward (GroupNorm's, Wu & He 2018, with xhat = (x - mean) rstd and w = 1 + scale):
    dshift = sum_hw dy, dscale = sum_hw dy xhat,
    dx = rstd (w dy - mean_g(w dy) - xhat mean_g(w dy xhat)).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

EPS = 1e-5  # nn.GroupNorm's default, which the reference AdaGN uses


@triton.jit
def _group(G, C, HW, CPG, CPG_BLOCK: tl.constexpr):
    """This program's (sample, group): its index, sample b, the group's channels ch (CPG_BLOCK,) and which of them
    exist, and where the group's contiguous span starts."""
    pid = tl.program_id(0).to(tl.int64)
    b, g = pid // G, pid % G
    ch = tl.arange(0, CPG_BLOCK)
    return pid, b, g * CPG + ch, ch < CPG, (b * C + g * CPG) * HW


@triton.jit
def _span(base, ch_ok, start, HW, CPG_BLOCK: tl.constexpr, HW_BLOCK: tl.constexpr):
    """Offsets and mask of the group's [channels, positions start..start + HW_BLOCK) tile."""
    hw = start + tl.arange(0, HW_BLOCK)
    offs = base + tl.arange(0, CPG_BLOCK)[:, None] * HW + hw[None, :]
    return offs, ch_ok[:, None] & (hw < HW)[None, :]


@triton.jit
def _adagn_fwd(x_ptr, ss_ptr, y_ptr, mean_ptr, rstd_ptr, C, HW, CPG, G, eps,
               CPG_BLOCK: tl.constexpr, HW_BLOCK: tl.constexpr):
    pid, b, c, ch_ok, base = _group(G, C, HW, CPG, CPG_BLOCK)
    n = CPG * HW
    # Two passes for the variance (mean first, then centred squares): exact where sum/sum-of-squares
    # cancels; the second and third passes re-read the group from cache, not from memory.
    acc = tl.zeros([CPG_BLOCK, HW_BLOCK], tl.float32)
    for start in range(0, HW, HW_BLOCK):
        offs, mask = _span(base, ch_ok, start, HW, CPG_BLOCK, HW_BLOCK)
        acc += tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(tl.sum(acc, axis=1), axis=0) / n
    acc = tl.zeros([CPG_BLOCK, HW_BLOCK], tl.float32)
    for start in range(0, HW, HW_BLOCK):
        offs, mask = _span(base, ch_ok, start, HW, CPG_BLOCK, HW_BLOCK)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean, 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(acc, axis=1), axis=0) / n + eps)
    scale = tl.load(ss_ptr + b * 2 * C + c, mask=ch_ok, other=0.0).to(tl.float32)
    shift = tl.load(ss_ptr + b * 2 * C + C + c, mask=ch_ok, other=0.0).to(tl.float32)
    w = (1.0 + scale) * rstd
    for start in range(0, HW, HW_BLOCK):
        offs, mask = _span(base, ch_ok, start, HW, CPG_BLOCK, HW_BLOCK)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * w[:, None] + shift[:, None]
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + pid, mean)
    tl.store(rstd_ptr + pid, rstd)


@triton.jit
def _adagn_bwd(dy_ptr, x_ptr, ss_ptr, mean_ptr, rstd_ptr, dx_ptr, dss_ptr, C, HW, CPG, G,
               CPG_BLOCK: tl.constexpr, HW_BLOCK: tl.constexpr):
    pid, b, c, ch_ok, base = _group(G, C, HW, CPG, CPG_BLOCK)
    n = CPG * HW
    mean = tl.load(mean_ptr + pid)
    rstd = tl.load(rstd_ptr + pid)
    sum_dy = tl.zeros([CPG_BLOCK, HW_BLOCK], tl.float32)
    sum_dy_xhat = tl.zeros([CPG_BLOCK, HW_BLOCK], tl.float32)
    for start in range(0, HW, HW_BLOCK):
        offs, mask = _span(base, ch_ok, start, HW, CPG_BLOCK, HW_BLOCK)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        sum_dy += dy
        sum_dy_xhat += dy * (x - mean) * rstd
    dshift = tl.sum(sum_dy, axis=1)
    dscale = tl.sum(sum_dy_xhat, axis=1)
    tl.store(dss_ptr + b * 2 * C + c, dscale, mask=ch_ok)
    tl.store(dss_ptr + b * 2 * C + C + c, dshift, mask=ch_ok)
    w = 1.0 + tl.load(ss_ptr + b * 2 * C + c, mask=ch_ok, other=0.0).to(tl.float32)
    mean_wdy = tl.sum(w * dshift, axis=0) / n
    mean_wdy_xhat = tl.sum(w * dscale, axis=0) / n
    for start in range(0, HW, HW_BLOCK):
        offs, mask = _span(base, ch_ok, start, HW, CPG_BLOCK, HW_BLOCK)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        dx = rstd * (w[:, None] * dy - mean_wdy - xhat * mean_wdy_xhat)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _tile(channels_per_group: int, hw: int) -> tuple[int, int]:
    """[channels, positions] of one tile: the whole group of a 16x16 grid in one go, at most 4,096 values."""
    cpg_block = triton.next_power_of_2(channels_per_group)
    return cpg_block, max(16, min(triton.next_power_of_2(hw), 4096 // cpg_block))


def _check(x: Tensor, ss: Tensor, groups: int) -> None:
    if x.ndim != 4 or x.shape[1] % groups or ss.shape != (x.shape[0], 2 * x.shape[1]):
        raise ValueError(f"adagn: x {tuple(x.shape)} with {groups} groups needs ss of shape "
                         f"({x.shape[0]}, {2 * x.shape[1]}), got {tuple(ss.shape)}")


@torch.library.custom_op("liquidgen::adagn", mutates_args=())
def adagn(x: Tensor, ss: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd): AdaGN of NCHW `x` with scale and shift `ss` (B, 2C); mean and rstd (B * groups,)
    fp32 are kept for the backward."""
    _check(x, ss, groups)
    x, ss = x.contiguous(), ss.contiguous()
    b, c, h, w = x.shape
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    mean = torch.empty(b * groups, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    cpg_block, hw_block = _tile(c // groups, h * w)
    _adagn_fwd[(b * groups,)](x, ss, y, mean, rstd, c, h * w, c // groups, groups, EPS,
                               CPG_BLOCK=cpg_block, HW_BLOCK=hw_block, num_warps=4)
    return y, mean, rstd


@adagn.register_fake
def _(x: Tensor, ss: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    _check(x, ss, groups)
    stats = x.new_empty(x.shape[0] * groups, dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)


@torch.library.custom_op("liquidgen::adagn_backward", mutates_args=())
def adagn_backward(dy: Tensor, x: Tensor, ss: Tensor, mean: Tensor, rstd: Tensor,
                   groups: int) -> tuple[Tensor, Tensor]:
    """(dx, dss) of `adagn` for the output gradient dy."""
    dy, x, ss = dy.contiguous(), x.contiguous(), ss.contiguous()
    b, c, h, w = x.shape
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dss = torch.empty(b, 2 * c, device=x.device, dtype=torch.float32)
    cpg_block, hw_block = _tile(c // groups, h * w)
    _adagn_bwd[(b * groups,)](dy, x, ss, mean, rstd, dx, dss, c, h * w, c // groups, groups,
                              CPG_BLOCK=cpg_block, HW_BLOCK=hw_block, num_warps=4)
    return dx, dss.to(ss.dtype)


@adagn_backward.register_fake
def _(dy: Tensor, x: Tensor, ss: Tensor, mean: Tensor, rstd: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), ss.new_empty(ss.shape)


def _setup_context(ctx, inputs, output) -> None:
    x, ss, groups = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, ss, mean, rstd)
    ctx.groups = groups


def _backward(ctx, dy: Tensor, _dmean: Tensor, _drstd: Tensor):
    x, ss, mean, rstd = ctx.saved_tensors
    dx, dss = adagn_backward(dy, x, ss, mean, rstd, ctx.groups)
    return dx, dss, None


adagn.register_autograd(_backward, setup_context=_setup_context)
