"""Transformer Latent Diffusion's objective (github.com/apapiu/transformer_latent_diffusion): x0-prediction
on the straight path x_t = (1 - s) x0 + s eps, MSE on x0, with the noise level s ~ Beta(1, 2.5) (earlier TLD versions:
Beta(0.75, 0.75)). It is flow matching with another prediction and time density, so it reuses it.
Sample TLD models with `dpmpp_2m` (TLD's solver) on the `tld` grid, or any other sampler."""
from __future__ import annotations

from dataclasses import dataclass

from .flow import FlowMatching


@dataclass
class TLD(FlowMatching):
    time_sampling: str = "beta"
    beta_a: float = 1.0
    beta_b: float = 2.5
    prediction: str = "x0"
