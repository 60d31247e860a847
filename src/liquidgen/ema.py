"""Exponential moving average of model weights, kept in fp32 beside the trained model."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow <- d * shadow + (1 - d) * live after every optimizer step.

    With `warmup` the decay is min(decay, (1 + n) / (10 + n)) after n updates (the schedule of
    TensorFlow's ExponentialMovingAverage): early on the average follows the live weights, so a
    short run still has a useful EMA, while long runs reach the full `decay` (0.9999 averages over
    ~10k steps, which would otherwise leave a 1k-step run's EMA mostly at initialisation).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module, taken: torch.Tensor | None = None) -> None:
        """One update after an optimizer step; `taken` (a bool tensor on the device) False leaves the
        average as it is, without a host sync (the trainer's skipped non-finite steps). Every call counts
        towards the warm-up, taken or not."""
        d = self.current_decay()
        ema = list(self.model.parameters())
        live = [p.detach().float() for p in model.parameters()]
        if taken is None:
            torch._foreach_lerp_(ema, live, 1.0 - d)
        else:
            step = torch._foreach_sub(live, ema)
            torch._foreach_mul_(step, taken.float() * (1.0 - d))
            torch._foreach_add_(ema, step)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1
