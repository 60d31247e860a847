"""liquidgen's one time convention, and exact converters between parameterisations.

    t in [0, 1],  t = 0 is data,  t = 1 is noise
    x_t = (1 - t) x0 + t eps,      eps ~ N(0, I)
    v   = dx_t/dt = eps - x0

Every backbone predicts one of `x0`, `eps` or `v` (its objective says which); samplers work on v.
Given (x_t, t) each of the three determines the others, so converting is exact (no re-training,
no approximation). The maps below are affine in the prediction with coefficients that depend on t
only, which is why classifier-free guidance gives the same result in any of the three spaces.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["x0", "eps", "v"]
PREDICTIONS: tuple[str, ...] = ("x0", "eps", "v")


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


def to_x0_eps(pred: Tensor, kind: str, x_t: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Recover (x0, eps) from a prediction of `kind` at (x_t, t).

    From x0 the noise is eps = (x_t - (1 - t) x0) / t, singular at t = 0 (where x_t = x0 says
    nothing about eps); from eps, x0 = (x_t - t eps) / (1 - t), singular at t = 1. From v both are
    regular: x0 = x_t - t v and eps = x_t + (1 - t) v.
    """
    t = expand(t, x_t)
    if kind == "v":
        return x_t - t * pred, x_t + (1 - t) * pred
    if kind == "x0":
        return pred, (x_t - (1 - t) * pred) / t
    if kind == "eps":
        return (x_t - t * pred) / (1 - t), pred
    raise ValueError(f"unknown prediction {kind!r}; expected one of {PREDICTIONS}")


def convert(pred: Tensor, src: str, dst: str, x_t: Tensor, t: Tensor | float) -> Tensor:
    """Convert a prediction of kind `src` to kind `dst` at (x_t, t), exactly."""
    if dst not in PREDICTIONS:
        raise ValueError(f"unknown prediction {dst!r}; expected one of {PREDICTIONS}")
    if src == dst:
        return pred
    x0, eps = to_x0_eps(pred, src, x_t, t)
    return {"x0": x0, "eps": eps, "v": eps - x0}[dst]
