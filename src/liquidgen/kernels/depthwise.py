"""Depthwise 2-D convolution of channels-last tensors, stride 1, 'same' padding, as Triton kernels each way:
LiquidGen's 7x7 local stimulus conv and the scan's 1-D k=31 conv run as a (1, 31) 2-D conv (models.liquid,
DEPTHWISE_LAYOUT).

    y[b, h, w, c] = bias[c] + sum_{i<kh, j<kw} x_pad[b, h + i, w + j, c] wt[c, i, j],
    x_pad[b, u, v, c] = x[b, u - ph, v - pw, c] inside the image and 0 outside (ph, pw = kh // 2, kw // 2).

Layout: x (B, C, H, W) in channels-last memory, i.e. a (B, H, W, C)-contiguous array, so a tile of
[positions, channels] has the channels as its contiguous axis (coalesced loads), and a tap (i, j) is the same
tile shifted by (i - ph) W + (j - pw) positions of the flattened H*W axis; the masks drop the shifted rows
and columns that fall outside the image (the zero padding). Every product is accumulated in fp32.

Backward, with dy = dL/dy:
    dx[b, u, v, c] = sum_{i, j} dy[b, u - i + ph, v - j + pw, c] wt[c, i, j]
                   = sum_{i', j'} dy[b, u + i' - ph, v + j' - pw, c] wt[c, kh-1-i', kw-1-j']   (i' = kh-1-i)
  where kh - 1 - ph = ph for odd kh (the same for w): dx is this forward conv of dy with the kernel flipped
  in both axes and the same padding, out of the image read as 0 just as for x. So dx is the op itself.
    dwt[c, i, j] = sum_{b, h, w} x_pad[b, h + i, w + j, c] dy[b, h, w, c],   dbias[c] = sum_{b, h, w} dy[b, h, w, c]
  One program sums a chunk of the B*H*W positions for a block of channels and writes fp32 partial sums; torch
  adds the chunks after (deterministic, no atomics).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import INTERPRET

# [positions, channels] per program. 64 channels of bf16 are one 128-byte line per position. The fastest of 7
# tile choices on an H200 (benchmarks/depthwise.py --sweep, batch 256, C 512 and 768, both kernels); a 64x64
# forward tile ran 20x slower (the 49 unrolled taps then spill registers).
FWD_P_BLOCK, FWD_C_BLOCK = 32, 64
WGT_P_BLOCK, WGT_C_BLOCK = 32, 64
# Positions one weight-gradient program sums: its dy and x tiles (32 KiB each at bf16) are re-read once per tap,
# from L1 rather than memory; the partial sums it writes, kh*kw*C fp32 a chunk, stay small against x and dy.
WGT_CHUNK = 256


@triton.jit
def _dw_fwd(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W,
            KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, HAS_BIAS: tl.constexpr,
            P_BLOCK: tl.constexpr, C_BLOCK: tl.constexpr):
    p = tl.program_id(0) * P_BLOCK + tl.arange(0, P_BLOCK)
    c = tl.program_id(1) * C_BLOCK + tl.arange(0, C_BLOCK)
    base = tl.program_id(2).to(tl.int64) * H * W * C  # sample b
    h, w = p // W, p % W
    p_ok, c_ok = p < H * W, c < C
    acc = tl.zeros([P_BLOCK, C_BLOCK], tl.float32)
    # Unrolled taps: the shifted tiles overlap, so after the first few they come from L1/L2, not memory.
    for i in tl.static_range(KH):
        hh = h + (i - PH)
        row_ok = p_ok & (hh >= 0) & (hh < H)
        for j in tl.static_range(KW):
            ww = w + (j - PW)
            ok = row_ok & (ww >= 0) & (ww < W)
            src = (p + (i - PH) * W + (j - PW)).to(tl.int64) * C  # masked-off entries may point outside x
            xv = tl.load(x_ptr + base + src[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
            wv = tl.load(w_ptr + (i * KW + j) * C + c, mask=c_ok, other=0.0)  # (kh*kw, C) fp32: coalesced
            acc += xv.to(tl.float32) * wv[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    dst = base + p.to(tl.int64)[:, None] * C + c[None, :]
    tl.store(y_ptr + dst, acc.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _dw_wgrad(x_ptr, dy_ptr, dw_ptr, db_ptr, C, H, W, N, CHUNK,
              KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
              P_BLOCK: tl.constexpr, C_BLOCK: tl.constexpr):
    c = tl.program_id(0) * C_BLOCK + tl.arange(0, C_BLOCK)
    chunk = tl.program_id(1)
    start = chunk * CHUNK
    c_ok = c < C
    # dbias first: it reads the chunk of dy once, which also brings it into cache for the taps.
    acc = tl.zeros([P_BLOCK, C_BLOCK], tl.float32)
    for s in range(start, start + CHUNK, P_BLOCK):
        n = s + tl.arange(0, P_BLOCK)  # flattened (b, h, w)
        offs = n.to(tl.int64)[:, None] * C + c[None, :]
        acc += tl.load(dy_ptr + offs, mask=(n < N)[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
    tl.store(db_ptr + chunk * C + c, tl.sum(acc, axis=0), mask=c_ok)
    # One accumulator per tap, in turn: [positions, channels] products summed over positions only at the end
    # (a cross-thread reduction per tap, not per tile).
    for t in range(KH * KW):
        i, j = t // KW, t % KW
        acc = tl.zeros([P_BLOCK, C_BLOCK], tl.float32)
        for s in range(start, start + CHUNK, P_BLOCK):
            n = s + tl.arange(0, P_BLOCK)
            n_ok = n < N
            q = n % (H * W)
            hh, ww = q // W + (i - PH), q % W + (j - PW)
            ok = n_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)  # x_pad is 0 outside the image
            n64 = n.to(tl.int64)
            dy = tl.load(dy_ptr + n64[:, None] * C + c[None, :], mask=n_ok[:, None] & c_ok[None, :], other=0.0)
            src = (n64 + (i - PH) * W + (j - PW))[:, None] * C + c[None, :]
            xv = tl.load(x_ptr + src, mask=ok[:, None] & c_ok[None, :], other=0.0)
            acc += xv.to(tl.float32) * dy.to(tl.float32)
        tl.store(dw_ptr + (chunk * KH * KW + t) * C + c, tl.sum(acc, axis=0), mask=c_ok)


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, padding: Sequence[int]) -> None:
    c = x.shape[1] if x.ndim == 4 else -1
    if x.ndim != 4 or weight.ndim != 4 or weight.shape[:2] != (c, 1) or (bias is not None and bias.shape != (c,)):
        raise ValueError(f"depthwise_conv: x (B, C, H, W) needs weight (C, 1, kh, kw) and bias (C,) or None, got "
                         f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)}")
    kh, kw = weight.shape[2:]
    if kh % 2 == 0 or kw % 2 == 0 or tuple(padding) != (kh // 2, kw // 2):
        raise ValueError(f"depthwise_conv: only odd kernels with 'same' padding (kh // 2, kw // 2) are supported, "
                         f"got a {kh}x{kw} kernel with padding {tuple(padding)}")


def _channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _taps(weight: Tensor) -> Tensor:
    """(C, 1, kh, kw) -> (kh*kw, C) fp32: one tap's weights for a block of channels are one contiguous load."""
    return weight.reshape(weight.shape[0], -1).t().float().contiguous()


@torch.library.custom_op("liquidgen::depthwise_conv", mutates_args=())
def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, padding: Sequence[int]) -> Tensor:
    """F.conv2d(x, weight, bias, padding=padding, groups=C) for (B, C, H, W) x (made channels-last if it is
    not), weight (C, 1, kh, kw) with odd kh, kw and padding (kh // 2, kw // 2); the result is channels-last, in
    x's dtype, accumulated in fp32 (weight and bias may be fp32 with bf16 x, as under autocast)."""
    _check(x, weight, bias, padding)
    x = _channels_last(x)
    b, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    # Triton's interpreter (3.9) casts fp32 to bf16 by truncation, twice the error of a GPU's round-to-nearest
    # and biased: there the kernel writes fp32 and torch rounds.
    y = torch.empty_like(x, memory_format=torch.channels_last, dtype=torch.float32 if INTERPRET else x.dtype)
    if y.numel() == 0:
        return y.to(x.dtype)
    grid = (triton.cdiv(h * w, FWD_P_BLOCK), triton.cdiv(c, FWD_C_BLOCK), b)
    _dw_fwd[grid](x, _taps(weight), x if bias is None else bias.contiguous(), y, c, h, w,
                  KH=kh, KW=kw, PH=kh // 2, PW=kw // 2, HAS_BIAS=bias is not None,
                  P_BLOCK=FWD_P_BLOCK, C_BLOCK=FWD_C_BLOCK, num_warps=4)
    return y.to(x.dtype)


@depthwise_conv.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, padding: Sequence[int]) -> Tensor:
    _check(x, weight, bias, padding)
    return torch.empty_like(x, memory_format=torch.channels_last)


@torch.library.custom_op("liquidgen::depthwise_conv_weight_grad", mutates_args=())
def depthwise_conv_weight_grad(dy: Tensor, x: Tensor, kernel: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(dweight (C, 1, kh, kw), dbias (C,)), both fp32, of `depthwise_conv` for the output gradient dy."""
    dy, x = _channels_last(dy), _channels_last(x)
    b, c, h, w = x.shape
    kh, kw = kernel
    n = b * h * w
    # ~1,024 programs: enough to fill a GPU, and chunks of at least WGT_CHUNK positions.
    c_blocks = triton.cdiv(c, WGT_C_BLOCK)
    chunk = max(WGT_CHUNK, triton.cdiv(triton.cdiv(n, max(1, 1024 // c_blocks)), WGT_P_BLOCK) * WGT_P_BLOCK)
    chunks = max(1, triton.cdiv(n, chunk))
    dw = torch.empty(chunks, kh * kw, c, device=x.device, dtype=torch.float32)
    db = torch.empty(chunks, c, device=x.device, dtype=torch.float32)
    if n > 0 and c > 0:
        _dw_wgrad[(c_blocks, chunks)](x, dy, dw, db, c, h, w, n, chunk, KH=kh, KW=kw, PH=kh // 2, PW=kw // 2,
                                      P_BLOCK=WGT_P_BLOCK, C_BLOCK=WGT_C_BLOCK, num_warps=4)
    else:  # nothing to sum: the gradients are 0
        dw.zero_()
        db.zero_()
    return dw.sum(0).t().contiguous().view(c, 1, kh, kw), db.sum(0)


@depthwise_conv_weight_grad.register_fake
def _(dy: Tensor, x: Tensor, kernel: Sequence[int]) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    return x.new_empty(c, 1, *kernel, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, padding = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding = tuple(padding)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, dy: Tensor):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx = dw = db = None
    if need_x:  # the forward with the kernel flipped (module docstring); no bias
        dx = depthwise_conv(dy.to(x.dtype), weight.flip(-2, -1), None, ctx.padding)
    if need_w or need_b:
        dw32, db32 = depthwise_conv_weight_grad(dy, x, tuple(weight.shape[2:]))
        dw = dw32.to(weight.dtype) if need_w else None
        db = db32.to(ctx.bias_dtype) if need_b else None
    return dx, dw, db, None


depthwise_conv.register_autograd(_backward, setup_context=_setup_context)
