"""Counted (not estimated) floating-point operations of a model's forward pass.

PyTorch's FlopCounterMode counts matrix multiplies, convolutions and attention from their shapes
(2 FLOPs per multiply-add); elementwise work is not counted, as in the usual MFU accounting. Running
on the meta device makes counting free: no memory, no arithmetic.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
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


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix multiplies, convolutions and attention that `fn()` runs (backward included)."""
    fixes = {torch.ops.aten.convolution_backward: _conv_backward_flops}
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
