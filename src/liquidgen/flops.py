"""Counted (not estimated) floating-point operations of a model's forward pass.

PyTorch's FlopCounterMode counts matrix multiplies, convolutions and attention from their shapes
(2 FLOPs per multiply-add); elementwise work is not counted, as in the usual MFU accounting. Running
on the meta device makes counting free: no memory, no arithmetic.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(model: nn.Module, channels: int, size: int, num_classes: int, batch: int = 1) -> int:
    """FLOPs of one forward pass on `batch` images (eval mode: e.g. a fixed-point model's sampling depth)."""
    device = next(model.parameters()).device
    x = torch.zeros(batch, channels, size, size, device=device)
    t = torch.full((batch,), 0.5, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device) if num_classes else None
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x, t, y)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
