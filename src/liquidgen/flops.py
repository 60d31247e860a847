"""Counted (not estimated) floating-point operations of a model's forward pass, and the bytes it moves.

PyTorch's FlopCounterMode counts matrix multiplies, convolutions and attention from their shapes
(2 FLOPs per multiply-add); elementwise work is not counted, as in the usual MFU accounting. Running
on the meta device makes counting free: no memory, no arithmetic. `forward_bytes` gives the other axis
of a roofline: how many bytes per image a forward must move, unfused and ideally fused.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from .models.base import model_flops_mode


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None) -> int:
    """Each of the input and weight gradients of a convolution costs what its forward pass costs:
    2 x batch x (positions the kernel visits) x prod(weight shape). The weight's shape is per group,
    so grouped and depthwise convolutions come out right; PyTorch's own formula (torch 2.13) ignores
    the groups in backward and counts a depthwise 3x3 conv's backward ~groups x too high."""
    positions = math.prod(x_shape[2:] if transposed else grad_out_shape[2:])
    forward = 2 * grad_out_shape[0] * positions * math.prod(w_shape)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _addmm_activation_flops(_bias, a_shape, b_shape, *_, out_shape=None, **__) -> int:
    """An addmm with its activation in the epilogue (LiquidGen's sampling MLP) costs the addmm's multiply-adds."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix multiplies, convolutions and attention that `fn()` runs (backward included)."""
    fixes = {torch.ops.aten.convolution_backward: _conv_backward_flops,
             torch.ops.aten._addmm_activation: _addmm_activation_flops}
    with FlopCounterMode(display=False, custom_mapping=fixes) as counter:
        fn()
    return counter.get_total_flops()


def forward_flops(model: nn.Module, channels: int, size: int, num_classes: int, batch: int = 1) -> int:
    """FLOPs of one forward pass on `batch` images (eval mode: e.g. a fixed-point model's sampling depth)."""
    device = next(model.parameters()).device
    x = torch.zeros(batch, channels, size, size, device=device)
    t = torch.full((batch,), 0.5, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device) if num_classes else None
    was_training = model.training
    model.eval()
    try:
        with model_flops_mode(model):
            return count_flops(lambda: model(x, t, y))
    finally:
        model.train(was_training)


# Operators whose inputs and outputs stay in memory even in an ideally fused forward: everything else can ride in
# their prologues and epilogues.
GEMMS = {"convolution", "mm", "addmm", "_addmm_activation", "bmm", "baddbmm",
         "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
         "_scaled_dot_product_flash_attention_for_cpu"}


class _ByteCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.unfused = self.gemm = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:  # a view moves no data
            touched = [a for a in tree_leaves((args, kwargs, out)) if isinstance(a, torch.Tensor)]
            elements = sum(a.numel() for a in touched)
            self.unfused += elements
            if func.overloadpacket.__name__ in GEMMS:
                self.gemm += elements
        return out


def forward_bytes(model: nn.Module, channels: int, size: int, num_classes: int, element_size: int = 2,
                  batch: int = 4) -> dict[str, float]:
    """Bytes per image that one forward moves, at `element_size` bytes per element (2: bf16): `unfused` if every
    operator reads its tensor inputs and writes its outputs once (eager PyTorch, roughly), `gemm` if only the
    matrix multiplies, convolutions and attention touch memory (all else fused into them: the floor). Counted
    at two batch sizes and differenced, so that the weights, read once per call whatever the batch, drop out,
    as they do at a sampling batch of thousands."""
    counts = []
    was_training = model.training
    model.eval()
    try:
        for b in (batch, 2 * batch):
            x = torch.zeros(b, channels, size, size)
            t = torch.full((b,), 0.5)
            y = torch.zeros(b, dtype=torch.long) if num_classes else None
            with torch.no_grad(), model_flops_mode(model), _ByteCounter() as counter:  # the model's bytes, as its FLOPs
                model(x, t, y)
            counts.append(counter)
    finally:
        model.train(was_training)
    return {k: (getattr(counts[1], k) - getattr(counts[0], k)) / batch * element_size for k in ("unfused", "gemm")}
