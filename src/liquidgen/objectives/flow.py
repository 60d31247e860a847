"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) in liquidgen's convention.

    x_t = (1 - t) x0 + t eps,  target v = eps - x0,  loss = E ||v_theta(x_t, t) - v||^2

Time densities: uniform, or logit-normal t = sigmoid(m + s n), n ~ N(0, 1), which spends more
steps at intermediate t where the velocity is hardest to predict (SD3, Esser et al. 2024, eq. 19).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import paths

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass
class FlowMatching:
    time_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    prediction = "v"  # what the backbone outputs (class attribute, not a config key)

    def __post_init__(self):
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"objective.time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")

    def sample_time(self, n: int, device: torch.device) -> Tensor:
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, device=device))

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None) -> Tensor:
        t = self.sample_time(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        pred = model(paths.interpolate(x0, eps, t), t, y)
        return F.mse_loss(pred.float(), paths.velocity(x0, eps).float())
