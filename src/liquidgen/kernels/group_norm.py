"""GroupNorm with its per-sample affine and SiLU as one Triton kernel, for sampling (no backward):
y = act((x - mean_g) * rstd_g * a[b, c] + s[b, c]), act = SiLU or identity.

Every GroupNorm of the UNet has this form: the norm's own affine (a = gamma, s = beta), times a per-sample
conditioning scale where a block has one (a = gamma * k[b], s = beta * k[b]), then SiLU before the next conv.

Measured slower than Inductor, so no default path uses it (H100, 2026-12-06,
benchmarks/results/2026-12-06-unet-norm-kernel-h100): in UNet-28's compiled 2,000-row sampling forward its 41
calls take 12.0 ms, while Inductor's norm kernels shrank by only 6.2 ms when it took them over (those kernels
also carry the convolutions' epilogues, which now run apart): 32.8 ms a forward against 26.6. A sample of a wide
layer (300 KB at 192 x 28 x 28 in bf16) times the programs in flight outgrows L2, so the second and third passes
below re-read memory; one program per (sample, group), the group held in registers, would read it once.

One program owns one sample and walks its (channels, positions) as [positions, channels] tiles through
strides, so the NCHW layout and the channels-last one torch.compile gives convolutions both read without a
copy (each coalesced along its own contiguous axis). Three passes over the sample: channel sums (-> group
means), centred squares (-> group variances, exact where sum / sum-of-squares cancels), then the output.
Channels fold into groups by a reshape where channels and
group size are powers of two (UNet-28), else through a [channels, channels] membership mask.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _group_sums(per_channel, c, C, CPG, C_BLOCK: tl.constexpr, GROUP_BLOCK: tl.constexpr):
    """Each channel's group total: sum over c2 in the group of c of per_channel[c2]. GROUP_BLOCK > 0: the channels
    fill C_BLOCK in groups of GROUP_BLOCK (both powers of two, as in UNet-28), so a reshape folds them; else a
    [channels, channels] membership mask does (any count, but C_BLOCK^2 values: slow for wide layers)."""
    if GROUP_BLOCK > 0:
        totals = tl.sum(tl.reshape(per_channel, [C_BLOCK // GROUP_BLOCK, GROUP_BLOCK]), axis=1)
        return tl.reshape(tl.broadcast_to(totals[:, None], [C_BLOCK // GROUP_BLOCK, GROUP_BLOCK]), [C_BLOCK])
    c2 = tl.arange(0, C_BLOCK)
    same = ((c[:, None] // CPG) == (c2[None, :] // CPG)) & (c2[None, :] < C)
    return tl.sum(tl.where(same, per_channel[None, :], 0.0), axis=1)


@triton.jit
def _group_norm_act_fwd(x_ptr, a_ptr, s_ptr, y_ptr, C, HW, CPG, stride_b, stride_c, stride_hw, eps,
                        SILU: tl.constexpr, C_BLOCK: tl.constexpr, HW_BLOCK: tl.constexpr,
                        GROUP_BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, C_BLOCK)
    hw = tl.arange(0, HW_BLOCK)
    c_ok = c < C
    base = b * stride_b
    n = (CPG * HW).to(tl.float32)
    acc = tl.zeros([HW_BLOCK, C_BLOCK], tl.float32)
    for start in range(0, HW, HW_BLOCK):
        mask = (start + hw < HW)[:, None] & c_ok[None, :]
        offs = base + (start + hw)[:, None] * stride_hw + c[None, :] * stride_c
        acc += tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = _group_sums(tl.sum(acc, axis=0), c, C, CPG, C_BLOCK, GROUP_BLOCK) / n
    acc = tl.zeros([HW_BLOCK, C_BLOCK], tl.float32)
    for start in range(0, HW, HW_BLOCK):
        mask = (start + hw < HW)[:, None] & c_ok[None, :]
        offs = base + (start + hw)[:, None] * stride_hw + c[None, :] * stride_c
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean[None, :], 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(_group_sums(tl.sum(acc, axis=0), c, C, CPG, C_BLOCK, GROUP_BLOCK) / n + eps)
    w = tl.load(a_ptr + b * C + c, mask=c_ok, other=0.0) * rstd
    shift = tl.load(s_ptr + b * C + c, mask=c_ok, other=0.0) - mean * w
    for start in range(0, HW, HW_BLOCK):
        mask = (start + hw < HW)[:, None] & c_ok[None, :]
        offs = base + (start + hw)[:, None] * stride_hw + c[None, :] * stride_c
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = x * w[None, :] + shift[None, :]
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _check(x: Tensor, a: Tensor, s: Tensor, groups: int) -> None:
    if x.ndim != 4 or x.shape[1] % groups or a.shape != (x.shape[0], x.shape[1]) or s.shape != a.shape:
        raise ValueError(f"group_norm_act: x {tuple(x.shape)} with {groups} groups needs a and s of shape "
                         f"({x.shape[0]}, {x.shape[1]}), got {tuple(a.shape)} and {tuple(s.shape)}")


def _layout(x: Tensor) -> Tensor:
    """x itself where one stride walks its positions (NCHW or channels-last), else a contiguous copy."""
    b, c, h, w = x.shape
    if x.stride(2) == w * x.stride(3) and (x.stride(3) == 1 or x.stride(1) == 1):
        return x
    return x.contiguous()


@torch.library.custom_op("liquidgen::group_norm_act", mutates_args=())
def group_norm_act(x: Tensor, a: Tensor, s: Tensor, groups: int, silu: bool, eps: float) -> Tensor:
    """act(GroupNorm(x) * a + s) of a (B, C, H, W) `x` (NCHW or channels-last; y has x's layout) with
    per-sample, per-channel `a` and `s` (B, C), computed in fp32, stored in x's dtype."""
    _check(x, a, s, groups)
    x = _layout(x)
    b, c, h, w = x.shape
    y = torch.empty_like(x)
    c_block, cpg = triton.next_power_of_2(c), c // groups
    hw_block = max(1, min(triton.next_power_of_2(h * w), 4096 // c_block))
    group_block = cpg if c == c_block and cpg & (cpg - 1) == 0 else 0
    _group_norm_act_fwd[(b,)](x, a.float().contiguous(), s.float().contiguous(), y, c, h * w, cpg,
                              x.stride(0), x.stride(1), x.stride(3), eps, SILU=silu, C_BLOCK=c_block,
                              HW_BLOCK=hw_block, GROUP_BLOCK=group_block, num_warps=4)
    return y


@group_norm_act.register_fake
def _(x: Tensor, a: Tensor, s: Tensor, groups: int, silu: bool, eps: float) -> Tensor:
    _check(x, a, s, groups)
    return torch.empty_like(_layout(x))
