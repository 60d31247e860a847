"""Depthwise convolutions on a small token grid as one dense L x L matrix per channel (tensor-core GEMMs).

A depthwise conv is linear in its input, channel by channel: on a grid of L tokens,

    y[b, c, i] = bias[c] + sum_j T[c, i, j] x[b, c, j],    T[c, i, j] = w[c, tap(i, j)],

where tap(i, j) is the kernel tap that carries token j to token i (none, so T = 0, when j is out of reach).
For a 2-D k x k conv T is block-Toeplitz; for LiquidGen's scan, a 1-D conv along a snake path through the
grid, T is a banded Toeplitz matrix with its rows and columns permuted into grid order, so the snake never
has to be laid out. T is built as a GEMM too: T = w (C, K) @ S (K, L*L), where S[t] is the fixed 0/1 matrix
of tap t; its backward, dw = dT @ S^T, is one more GEMM where an index-based gather would need a scatter.

Why: depthwise convs do ~2 k FLOPs per value moved, so they run memory-bound on CUDA cores; in a compiled
LiquidGen-S block on an H200 cuDNN's depthwise kernels took 2.59 of 8.59 ms (forward + backward,
benchmarks/results/2026-12-03-memory-and-layout). The dense form does L/k times the arithmetic (5x for the
7x7 conv and 8x for the k=31 scan on a 16x16 grid) on tensor cores, which have ~60x the throughput, and keeps
C L^2 values of T per conv (32 MiB in bf16 at C=512, L=256) - hence only on small grids (`DENSE_MAX_TOKENS`).
MFU still counts the convs' FLOPs (`models.base.model_flops_mode`): the extra arithmetic is the method's, not
the model's.

The per-channel GEMM runs as a custom op (`channel_gemm`, and its backward) whose inputs Inductor must hand over
contiguous (`needs_contiguous_strides`): x (B, C, L) channel-major, so that each channel's (B, L) slice has a unit
stride, written so by the kernel that produces it. As a plain `matmul`, Inductor was free to lay x out channels-last
for the 1x1 conv that reads the same tensor, and the GEMM then copied it with aten's generic strided kernel: six
copies, 47 of 212 ms of LiquidGen-S's compiled sampling forward at 16x32x32 on an H100
(benchmarks/results/2026-12-08-gelu-gemm-h100). A tag that follows the traced program's strides
(`needs_fixed_stride_order`) is not enough: the backward is traced with the strides that the compiled forward gave
its saved tensors, channels-last (`tests/test_toeplitz.py` checks both directions with CUDA's layout rules forced).
*Not yet measured with the op, nor the padding below* (2026-12-08: no device was lent after they were built); the
before / after, sampling forward and training, is one call: `bash benchmarks/dense_layout_device.sh`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ..kernels import forward_ad_active

CHOICES = ("auto", "conv", "matmul")
# `auto` takes the dense form on CUDA up to this many tokens (16x16, LiquidGen's native 32x32 latents at patch 2;
# MNIST's 14x14). Above, T's memory grows as L^2 and the arithmetic as L. Measured on an H200 (batch 256, CUDA
# graphs; benchmarks/results/2026-12-03-dense-depthwise): training +4% at S and +5% at B on 16x32x32, for 1.5-2.6 GB
# more peak memory (model.checkpointing takes that back); compiled sampling forwards unchanged, because the GEMM's
# input copies (aten's generic copy kernel, 36 of 200 ms) eat what leaving cuDNN's depthwise kernels saves.
DENSE_MAX_TOKENS = 256
# The GEMM's token count is padded to a multiple of ALIGN: cuBLAS runs bf16 GEMMs whose inner dimensions are not
# multiples of 8 elements (16 bytes) with unvectorised kernels. At MNIST's 7x7 tokens (the shipped LiquidGen-S,
# patch 4) the 24 dense GEMMs of a sampling forward ran as `cutlass_75_..._align1` at about 27 TFLOP/s on an H100, 4.4
# of 40.9 ms (benchmarks/results/2026-12-08-gelu-gemm-h100, sample.jsonl); padded to 56 they do 31% more arithmetic.
ALIGN = 8


def check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise ValueError(f"model option depthwise must be one of {CHOICES}, got {choice!r}")


def use_dense(choice: str, x: Tensor) -> bool:
    """Whether a depthwise conv with option `choice` runs as dense matrices on input x (B, C, H, W)."""
    if choice == "auto":
        return x.is_cuda and x.shape[-2] * x.shape[-1] <= DENSE_MAX_TOKENS
    return choice == "matmul"


def tap_basis(coords: Tensor, kernel: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """S (K, L, L), K = prod(kernel): S[t, i, j] = 1 where coords[j] - coords[i] is tap t's offset
    (t - k // 2 per axis, taps in row-major order: a cross-correlation, as F.conv2d computes)."""
    offset = coords[None, :, :] - coords[:, None, :]  # (L, L, D): where token j sits relative to token i
    tap = torch.zeros_like(offset[..., 0])
    inside = torch.ones_like(tap, dtype=torch.bool)
    for axis, k in enumerate(kernel):
        shifted = offset[..., axis] + k // 2
        inside &= (shifted >= 0) & (shifted < k)
        tap = tap * k + shifted
    taps = torch.arange(math.prod(kernel), device=coords.device)
    return ((tap[None] == taps[:, None, None]) & inside[None]).to(dtype)


def grid_coords(h: int, w: int, device: torch.device) -> Tensor:
    """(row, column) of each token of an h x w grid in row-major order, (h*w, 2)."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=1)


def snake_coords(h: int, w: int, transpose: bool, device: torch.device) -> Tensor:
    """Each token's position along the boustrophedon path (models.liquid.snake), (h*w, 1): rows in turn, every
    other one reversed; with `transpose` the same over columns."""
    rows, cols = grid_coords(h, w, device).unbind(1)
    if transpose:
        rows, cols, w = cols, rows, h
    along = torch.where(rows % 2 == 1, w - 1 - cols, cols)
    return (rows * w + along)[:, None]


_BASES: dict[tuple, Tensor] = {}


def basis_for(h: int, w: int, kernel: tuple[int, ...], device: torch.device, dtype: torch.dtype,
              snake: bool | None = None) -> Tensor:
    """tap_basis of an h x w grid in row-major order, or (`snake` False / True: row / column snakes) along the
    snake path. Eager code builds each once per shape and keeps it (a model uses a handful, a few MB each): built
    per call it would add a dozen small ops per conv to every forward. Inside torch.compile it stays part of the
    traced graph (the measured setting), since a cache is invisible there."""
    def build() -> Tensor:
        coords = grid_coords(h, w, device) if snake is None else snake_coords(h, w, snake, device)
        return tap_basis(coords, kernel, dtype)

    if torch.compiler.is_compiling():
        return build()
    key = (h, w, tuple(kernel), str(device), dtype, snake)
    if key not in _BASES:
        _BASES[key] = build()
    return _BASES[key]


def dense_depthwise(x: Tensor, weight: Tensor, bias: Tensor | None, basis: Tensor) -> Tensor:
    """Depthwise conv of x (B, C, H, W) with weight (C, 1, *kernel) whose taps `basis` (K, L, L) places, as one
    batched GEMM over channels. The output is a (B, C, H, W) view of a (C, B, L padded) array: whatever reads it
    next (an elementwise op, fused by torch.compile) writes the layout it wants."""
    b, c, h, w = x.shape
    taps, tokens = basis.shape[0], basis.shape[1]
    matrix = (weight.reshape(c, taps) @ basis.reshape(taps, tokens * tokens)).view(c, tokens, tokens)
    x = x.reshape(b, c, tokens).to(matrix.dtype)  # the dtype autocast's matmul would take; the op is outside it
    if pad := -tokens % ALIGN:  # zero tokens in, zero rows and columns of T: the first `tokens` outputs unchanged
        x, matrix = F.pad(x, (0, pad)), F.pad(matrix, (0, pad, 0, pad))
    # The custom op has no forward-mode rule (sCM's torch.func.jvp): there, the same product as plain PyTorch.
    y = _channel_gemm(x, matrix) if forward_ad_active(x) else channel_gemm(x, matrix)
    y = y[..., :tokens]
    if bias is not None:
        y = y + bias[:, None, None].to(y.dtype)
    return y.unflatten(-1, (h, w)).transpose(0, 1)


def _channel_gemm(x: Tensor, matrix: Tensor) -> Tensor:
    # (C, B, L) = (C, B, L) @ (C, L, L)^T: y_c = x_c T_c^T per channel, the batch as the GEMM's rows
    return torch.bmm(x.transpose(0, 1), matrix.transpose(1, 2))


FIXED_LAYOUT = (torch.Tag.needs_contiguous_strides,)  # see the module docstring


@torch.library.custom_op("liquidgen::channel_gemm", mutates_args=(), tags=FIXED_LAYOUT)
def channel_gemm(x: Tensor, matrix: Tensor) -> Tensor:
    """y (C, B, L), y[c] = x[:, c] @ matrix[c]^T, for x (B, C, L) and matrix (C, L, L)."""
    return _channel_gemm(x, matrix)


@channel_gemm.register_fake
def _(x: Tensor, matrix: Tensor) -> Tensor:
    return x.new_empty(x.shape[1], x.shape[0], matrix.shape[1])


@torch.library.custom_op("liquidgen::channel_gemm_backward", mutates_args=(), tags=FIXED_LAYOUT)
def channel_gemm_backward(dy: Tensor, x: Tensor, matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(dx as (C, B, L), dmatrix) of `channel_gemm` for the output gradient dy (C, B, L): dx_c = dy_c T_c and
    dT_c = dy_c^T x_c, both GEMMs over unit-stride slices of the contiguous dy and x."""
    return _channel_gemm_grads(dy, x, matrix)


def _channel_gemm_grads(dy: Tensor, x: Tensor, matrix: Tensor) -> tuple[Tensor, Tensor]:
    return torch.bmm(dy, matrix), torch.bmm(dy.transpose(1, 2), x.transpose(0, 1))


@channel_gemm_backward.register_fake
def _(dy: Tensor, x: Tensor, matrix: Tensor) -> tuple[Tensor, Tensor]:
    return dy.new_empty(dy.shape), matrix.new_empty(matrix.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor]:
    x, matrix = ctx.saved_tensors
    dx, dmatrix = channel_gemm_backward(dy, x, matrix)
    return dx.transpose(0, 1), dmatrix


channel_gemm.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.liquidgen.channel_gemm)
def _channel_gemm_flops(x_shape, matrix_shape, out_shape=None, **_) -> int:
    b, c, tokens = x_shape
    return 2 * c * b * tokens * matrix_shape[1]


@register_flop_formula(torch.ops.liquidgen.channel_gemm_backward)
def _channel_gemm_backward_flops(dy_shape, x_shape, matrix_shape, out_shape=None, **_) -> int:
    c, b, tokens = dy_shape
    return 2 * 2 * c * b * tokens * matrix_shape[1]
