"""TrigFlow diffusion pre-training (sCM, Lu & Song, ICLR 2025, sec. 2).

    x = cos(th) x0 + sin(th) z,  z ~ N(0, sigma_d^2),  th = arctan(sigma / sigma_d),  log sigma ~ N(p_mean, p_std^2)
    the backbone predicts F with sigma_d F = dx/dth;  loss = exp(-u(t)) ||F - F*||^2 / D + u(t)

u(t) is the backbone's learned log-variance (`model.logvar`, EDM2's adaptive weighting, Karras et
al. 2024, eq. 21): it learns the loss's scale per noise level, so every level contributes evenly.
The backbone sees liquidgen's x_t and t (x is x_t rescaled, `liquidgen.paths`); its prediction kind is
"trigflow", so every sampler converts it exactly, and it is the teacher format sCD wants.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import paths


def lognormal_times(n: int, p_mean: float, p_std: float, device) -> Tensor:
    """Flow times whose noise-to-signal ratio sigma is log-normal (EDM's training density)."""
    sigma = torch.exp(p_mean + p_std * torch.randn(n, device=device))
    return paths.sigma_to_t(sigma)


def adaptive_loss(model: nn.Module, per_sample: Tensor, t: Tensor) -> Tensor:
    """exp(-u) l + u per sample, u = model.logvar(t); the minimiser over u is u = log l."""
    u = model.logvar(t).float()
    return (torch.exp(-u) * per_sample + u).mean()


@dataclass
class TrigFlow:
    p_mean: float = -1.73  # sCM's values
    p_std: float = 1.4
    adaptive_weighting: bool = True

    prediction = "trigflow"

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None, **cond: Tensor) -> Tensor:
        t = lognormal_times(x0.shape[0], self.p_mean, self.p_std, x0.device)
        eps = torch.randn_like(x0)
        pred = model(paths.interpolate(x0, eps, t), t, y, **cond)
        target = paths.from_x0_eps(x0, eps, "trigflow", t)
        per_sample = (pred.float() - target.float()).square().flatten(1).mean(1)
        return adaptive_loss(model, per_sample, t) if self.adaptive_weighting else per_sample.mean()
