"""Samplers: flat functions over one denoiser interface (k-diffusion's shape).

A *velocity function* `v = fn(x, t)` returns the flow velocity dx_t/dt of liquidgen's convention
(`liquidgen.paths`) for a batch x at time t (a tensor of shape (B,)). `denoiser()` builds one from any
backbone, whatever its objective predicts, with classifier-free guidance folded in. A sampler takes
`fn`, the starting noise and a decreasing time grid from 1 to 0, and returns the sample at t = 0.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import paths

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def denoiser(model: nn.Module, prediction: str, y: Tensor | None = None, cfg: float = 1.0,
             state=None) -> VelocityFn:
    """Wrap a backbone into a velocity function.

    With guidance scale `cfg` != 1 and labels `y`, the conditional and unconditional (null class)
    predictions run as one doubled batch and combine as u + cfg (c - u) (Ho & Salimans 2022).
    The converters are affine in the prediction with coefficients that depend only on (x_t, t),
    so guiding before or after conversion to v gives the same result.
    `state` (a fixed-point model's SolverState) is handed to every model call of this batch.
    """
    guided = cfg != 1.0 and y is not None and getattr(model, "num_classes", 0) > 0
    extra = {} if state is None else {"state": state}

    def fn(x: Tensor, t: Tensor) -> Tensor:
        if guided:
            null = torch.full_like(y, model.null_class)
            cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), **extra).chunk(2)
            pred = uncond + cfg * (cond - uncond)
        else:
            pred = model(x, t, y, **extra)
        return paths.convert(pred.float(), prediction, "v", x.float(), t)

    return fn


def time_grid(steps: int, device: torch.device | str = "cpu") -> Tensor:
    """steps + 1 uniformly spaced times from 1 (noise) to 0 (data)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def sample_euler(fn: VelocityFn, x: Tensor, ts: Tensor, progress: bool = False) -> Tensor:
    """Explicit Euler on dx/dt = v(x, t): x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i). First order."""
    x = x.float()
    for i in tqdm(range(len(ts) - 1), desc="sampling", disable=None if progress else True, leave=False):
        t = ts[i].expand(x.shape[0])
        x = x + (ts[i + 1] - ts[i]) * fn(x, t)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
}


@torch.no_grad()
def sample(model: nn.Module, prediction: str, noise: Tensor, y: Tensor | None = None, steps: int = 50,
           cfg: float = 1.0, sampler: str = "euler", progress: bool = False, state=None) -> Tensor:
    """Generate from `noise` (the state at t = 1): returns x0 in the model's data space.

    Models with per-batch sampling state (fixed-point models: `model.sampling_state()`) get a fresh
    one per call, or `state` when given (to read its residuals afterwards); it is reset here."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    ts = time_grid(steps, noise.device)
    if state is None and hasattr(model, "sampling_state"):
        state = model.sampling_state()
    if state is not None:
        state.start(ts)
    fn = denoiser(model, prediction, y, cfg, state)
    return SAMPLERS[sampler](fn, noise, ts, progress=progress)
