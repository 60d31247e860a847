"""Discrete-time diffusion (DDPM, Ho et al. 2020) with eps- or v-prediction, on liquidgen's path.

A variance-preserving schedule gives x_k = sqrt(ab_k) x0 + sqrt(1 - ab_k) eps for k = 0..T-1. That
is the straight path rescaled (`liquidgen.paths`), at flow time t_k = s / (a + s) with a = sqrt(ab_k),
s = sqrt(1 - ab_k); the backbone sees x_t and t_k, so every sampler works on these models too.

- schedules: `linear` (DDPM's betas) or `cosine` (Nichol & Dhariwal 2021, eq. 17);
- `zero_terminal_snr` rescales sqrt(ab) so the last step is pure noise (Lin et al. 2024, Alg. 1;
  FPDM's option). eps is unidentifiable there, so it requires v-prediction;
- predictions: `eps`, or `v` = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022);
- weighting: `none`, `min_snr` (Hang et al. 2023: min(SNR, gamma) / SNR on the eps loss) or `p2`
  (Choi et al. 2022: 1 / (k + SNR)^gamma on the eps loss). A v-loss is alpha^-2 times the eps loss
  of the same error, so its weight is the eps weight times alpha^2 = SNR / (1 + SNR).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import paths

SCHEDULES = ("linear", "cosine")
WEIGHTINGS = ("none", "min_snr", "p2")
KINDS = {"eps": "eps", "v": "v_vp"}


def alphas_cumprod(schedule: str, steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                   zero_terminal_snr: bool = False) -> Tensor:
    """ab_k for k = 0..steps-1, in float64."""
    if schedule == "linear":
        ab = torch.cumprod(1 - torch.linspace(beta_start, beta_end, steps, dtype=torch.float64), 0)
    elif schedule == "cosine":
        s = 0.008
        f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        ab = torch.cumprod(1 - betas, 0)
    else:
        raise ValueError(f"objective.schedule must be one of {SCHEDULES}, got {schedule!r}")
    if zero_terminal_snr:
        root = ab.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * first / (first - last)  # shift to 0 at the end, keep the first value
        ab = root**2
    return ab


@dataclass
class Diffusion:
    prediction_type: str = "eps"
    schedule: str = "linear"
    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    zero_terminal_snr: bool = False
    weighting: str = "none"
    gamma: float = 5.0  # min-SNR's gamma (5), or P2's exponent (set 1.0 for P2)
    p2_k: float = 1.0

    def __post_init__(self):
        if self.prediction_type not in KINDS:
            raise ValueError(f"objective.prediction_type must be one of {tuple(KINDS)}, got {self.prediction_type!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"objective.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.zero_terminal_snr and self.prediction_type == "eps":
            raise ValueError("zero_terminal_snr needs prediction_type: v (at zero SNR the noise equals the input "
                             "and eps-prediction learns nothing about the data)")
        ab = alphas_cumprod(self.schedule, self.steps, self.beta_start, self.beta_end, self.zero_terminal_snr)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        self.times = (s / (a + s)).float()  # flow time of each discrete step
        self.snr = (ab / (1 - ab)).float()  # 0 at the last step under zero-terminal SNR; finite elsewhere

    @property
    def prediction(self) -> str:
        return KINDS[self.prediction_type]

    def weights(self, k: Tensor) -> Tensor:
        snr = self.snr.to(k.device)[k]
        if self.weighting == "none":
            return torch.ones_like(snr)
        if self.weighting == "min_snr":
            w = (self.gamma / snr).clamp(max=1.0)  # min(SNR, gamma) / SNR, 1 where SNR = 0
        else:
            w = (self.p2_k + snr) ** -self.gamma
        return w * snr / (1 + snr) if self.prediction_type == "v" else w

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None, **cond: Tensor) -> Tensor:
        k = torch.randint(0, self.steps, (x0.shape[0],), device=x0.device)
        t = self.times.to(x0.device)[k]
        eps = torch.randn_like(x0)
        pred = model(paths.interpolate(x0, eps, t), t, y, **cond)
        target = paths.from_x0_eps(x0, eps, self.prediction, t)
        per_sample = (pred.float() - target.float()).square().flatten(1).mean(1)
        return (self.weights(k) * per_sample).mean()
