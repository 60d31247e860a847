"""Exponential moving average of model weights, kept in fp32 beside the trained model."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def power_exponent(std: float) -> float:
    """gamma of the power-function EMA whose averaging profile has relative standard deviation `std` (EDM2,
    Karras et al. 2024, sec. 3.1: std^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), solved as the cubic
    gamma^3 + 7 gamma^2 + (16 - 1/std^2) gamma + (12 - 1/std^2) = 0 for its real root above -1)."""
    if not 0.0 < std < 12 ** -0.5:  # gamma > 0 needs std below 1/sqrt(12)
        raise ValueError(f"EMA std must lie in (0, {12 ** -0.5:.4f}), got {std}")
    roots = np.roots([1.0, 7.0, 16.0 - std ** -2, 12.0 - std ** -2])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


class EMA:
    """shadow <- d * shadow + (1 - d) * live after every optimizer step.

    With `warmup` the decay is min(decay, (1 + n) / (10 + n)) after n updates (the schedule of
    TensorFlow's ExponentialMovingAverage): early on the average follows the live weights, so a
    short run still has a useful EMA, while long runs reach the full `decay` (0.9999 averages over
    ~10k steps, which would otherwise leave a 1k-step run's EMA mostly at initialisation).

    With `std` (> 0) the average is EDM2's power function instead (Karras et al. 2024, sec. 3.1), `decay` and
    `warmup` unused: the decay at update n is (1 - 1/n)^(gamma + 1), which weighs the weights after step t about
    in proportion to t^gamma, so the average always spans the same fraction of the run, of relative width `std`
    (EDM2's sigma_rel). The warm-up above behaves like sigma_rel 0.09 until it reaches `decay`.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True, std: float = 0.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.gamma = power_exponent(std) if std else None
        self.updates = 0
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        if self.gamma is not None:  # the first update (n = 1) copies the live weights
            return (1 - 1 / (self.updates + 1)) ** (self.gamma + 1)
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
