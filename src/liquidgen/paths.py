"""liquidgen's one time convention, and exact converters between parameterisations.

    t in [0, 1],  t = 0 is data,  t = 1 is noise
    x_t = (1 - t) x0 + t eps,      eps ~ N(0, I)
    v   = dx_t/dt = eps - x0

Any Gaussian path x = a x0 + s eps is this one up to scale: x / (a + s) = x_t at t = s / (a + s).
So every noise level has three names, converted here exactly:
    sigma  = s / a = t / (1 - t)                      noise-to-signal ratio (EDM, VE)
    lambda = log(a^2 / s^2) = 2 log((1 - t) / t)      log-SNR (VP diffusion, DPM-Solver)
    theta  = arctan(sigma / sigma_d)                  TrigFlow angle (sCM): x = cos th x0 + sin th sigma_d eps

A backbone predicts one kind of quantity (its objective says which); samplers work on v:
    x0, eps, v           the data, the noise, the flow velocity eps - x0
    v_vp                 diffusion's v = alpha eps - sigma x0 with alpha^2 + sigma^2 = 1 (Salimans & Ho 2022)
    trigflow             sCM's F with sigma_d F = dx/dtheta = -sin th x0 + cos th sigma_d eps
    score                grad log p(x_t) = -eps / t  (Tweedie)
Given (x_t, t) each determines x0 and eps, so converting is exact (no re-training, no
approximation). Every map is affine in the prediction with coefficients that depend on t only,
which is why classifier-free guidance gives the same result in any space.
"""
from __future__ import annotations

import torch
from torch import Tensor

PREDICTIONS: tuple[str, ...] = ("x0", "eps", "v", "v_vp", "trigflow", "score")
SIGMA_D = 0.5  # TrigFlow's data standard deviation (sCM); images in [-1, 1] have about this


def expand(t: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a per-sample time (B,) or a scalar against a batch shaped like `like`."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim == 1 else t


def interpolate(x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
    """x_t = (1 - t) x0 + t eps."""
    t = expand(t, x0)
    return (1 - t) * x0 + t * eps


def velocity(x0: Tensor, eps: Tensor) -> Tensor:
    """v = eps - x0, the (constant in t) velocity of the straight path."""
    return eps - x0


# Noise-level conversions. Each is exact; t = 0 and t = 1 map to the ends of each range.
def t_to_sigma(t: Tensor) -> Tensor:
    return t / (1 - t)


def sigma_to_t(sigma: Tensor) -> Tensor:
    return sigma / (1 + sigma)


def t_to_lambda(t: Tensor) -> Tensor:
    return 2 * (torch.log1p(-t) - torch.log(t))


def lambda_to_t(lam: Tensor) -> Tensor:
    return torch.sigmoid(-lam / 2)


def t_to_theta(t: Tensor, sigma_d: float = SIGMA_D) -> Tensor:
    return torch.atan2(t, sigma_d * (1 - t))  # arctan(sigma / sigma_d), finite at t = 1


def theta_to_t(theta: Tensor, sigma_d: float = SIGMA_D) -> Tensor:
    s, c = sigma_d * torch.sin(theta), torch.cos(theta)
    return s / (c + s)


def vp_coefficients(t: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) of the variance-preserving path through x_t: alpha^2 + sigma^2 = 1."""
    norm = torch.sqrt((1 - t) ** 2 + t**2)
    return (1 - t) / norm, t / norm


def to_x0_eps(pred: Tensor, kind: str, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Recover (x0, eps) from a prediction of `kind` at (x_t, t).

    From x0 the noise is eps = (x_t - (1 - t) x0) / t, singular at t = 0 (where x_t = x0 says
    nothing about eps); from eps, x0 = (x_t - t eps) / (1 - t), singular at t = 1. From v, v_vp
    and trigflow both are regular everywhere.
    """
    t = expand(t, x_t)
    if kind == "v":
        return x_t - t * pred, x_t + (1 - t) * pred
    if kind == "x0":
        return pred, (x_t - (1 - t) * pred) / t
    if kind == "eps":
        return (x_t - t * pred) / (1 - t), pred
    if kind == "score":
        eps = -t * pred
        return (x_t - t * eps) / (1 - t), eps
    if kind == "v_vp":
        # x_vp = alpha x0 + sigma eps = x_t / norm; then x0 = alpha x_vp - sigma v, eps = sigma x_vp + alpha v
        alpha, sigma = vp_coefficients(t)
        x_vp = x_t / torch.sqrt((1 - t) ** 2 + t**2)
        return alpha * x_vp - sigma * pred, sigma * x_vp + alpha * pred
    if kind == "trigflow":
        # x_trig = cos th x0 + sin th sigma_d eps = x_t (cos th + sigma_d sin th); x0 = cos th x_trig - sin th sigma_d F
        # (the consistency function of sCM, eq. 9), and sigma_d eps = sin th x_trig + cos th sigma_d F.
        theta = t_to_theta(t)
        c, s = torch.cos(theta), torch.sin(theta)
        x_trig = x_t * (c + SIGMA_D * s)
        return c * x_trig - s * SIGMA_D * pred, (s * x_trig + c * SIGMA_D * pred) / SIGMA_D
    raise ValueError(f"unknown prediction {kind!r}; expected one of {PREDICTIONS}")


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, t: Tensor | float) -> Tensor:
    """The prediction of `kind` that (x0, eps) correspond to at time t."""
    t = expand(t, x0)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        return eps - x0
    if kind == "score":
        return -eps / t
    if kind == "v_vp":
        alpha, sigma = vp_coefficients(t)
        return alpha * eps - sigma * x0
    if kind == "trigflow":
        theta = t_to_theta(t)
        return (torch.cos(theta) * SIGMA_D * eps - torch.sin(theta) * x0) / SIGMA_D
    raise ValueError(f"unknown prediction {kind!r}; expected one of {PREDICTIONS}")


def convert(pred: Tensor, src: str, dst: str, x_t: Tensor, t: Tensor | float) -> Tensor:
    """Convert a prediction of kind `src` to kind `dst` at (x_t, t), exactly."""
    if dst not in PREDICTIONS:
        raise ValueError(f"unknown prediction {dst!r}; expected one of {PREDICTIONS}")
    if src == dst:
        return pred
    x0, eps = to_x0_eps(pred, src, x_t, t)
    return from_x0_eps(x0, eps, dst, t)
