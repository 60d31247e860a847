"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) in liquidgen's convention.

    x_t = (1 - t) x0 + t eps,  the backbone predicts v = eps - x0 (or x0, or eps),
    loss = E || prediction - its target ||^2

Time densities: uniform; logit-normal t = sigmoid(m + s n), n ~ N(0, 1), which spends more steps at
intermediate t where the velocity is hardest to predict (SD3, Esser et al. 2024, eq. 19); or
Beta(a, b) (TLD samples its noise level from Beta(1, 2.5), favouring low noise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import paths

TIME_SAMPLINGS = ("uniform", "logit_normal", "beta")
FLOW_PREDICTIONS = ("v", "x0", "eps")


@dataclass
class FlowMatching:
    time_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    beta_a: float = 1.0
    beta_b: float = 2.5
    prediction: str = "v"

    def __post_init__(self):
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"objective.time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")
        if self.prediction not in FLOW_PREDICTIONS:
            raise ValueError(f"objective.prediction must be one of {FLOW_PREDICTIONS}, got {self.prediction!r}")

    def sample_time(self, n: int, device: torch.device) -> Tensor:
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device)
        if self.time_sampling == "beta":
            beta = torch.distributions.Beta(torch.tensor(self.beta_a, device=device),
                                            torch.tensor(self.beta_b, device=device))
            return beta.sample((n,))
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, device=device))

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None, **cond: Tensor) -> Tensor:
        t = self.sample_time(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        pred = model(paths.interpolate(x0, eps, t), t, y, **cond)
        return F.mse_loss(pred.float(), paths.from_x0_eps(x0, eps, self.prediction, t).float())
