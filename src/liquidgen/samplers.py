"""Samplers: flat functions over one denoiser interface (k-diffusion's shape).

A *velocity function* `v = fn(x, t)` returns the flow velocity dx_t/dt of liquidgen's convention
(`liquidgen.paths`) for a batch x at time t (a tensor of shape (B,)). `denoiser()` builds one from any
backbone, whatever its objective predicts, with classifier-free guidance folded in. A sampler takes
`fn`, the starting point and a decreasing time grid ending at 0, and returns the sample at t = 0.
From v the data and noise estimates are x0 = x - t v and eps = x + (1 - t) v.

Samplers (`SAMPLERS`, chosen by name): euler, heun, ddim, dpmpp_2m, consistency.
Time grids (`GRIDS`): uniform, karras, logit, tld, consistency; a grid spec "name[:key=value,...]" sets the grid's
own parameters (`grid_times`), e.g. "karras:rho=5" or "consistency:theta_mid=0.9".
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import paths
from .models.base import null_token_mask

VelocityFn = Callable[[Tensor, Tensor], Tensor]
# Fresh standard-normal noise for step i of a stochastic sampler, shaped like its state x (`Pipeline.sample`
# derives it from the seed and the row, so that samples are reproducible); None: torch's global generator.
NoiseFn = Callable[[int, Tensor], Tensor]


def _global_noise(i: int, x: Tensor) -> Tensor:
    return torch.randn_like(x)


def denoiser(model: nn.Module, prediction: str, y: Tensor | None = None, cfg: float = 1.0,
             state=None, cfg_interval: tuple[float, float] | None = None, context: Tensor | None = None,
             concat: Tensor | None = None, context_mask: Tensor | None = None) -> VelocityFn:
    """Wrap a backbone into a velocity function.

    With guidance scale `cfg` != 1 and a condition (labels `y` and/or a text `context`), the
    conditional and unconditional (null class, null context: `model.unconditional`) predictions run
    as one doubled batch and combine as u + cfg (c - u) (Ho & Salimans 2022). `concat` (inpainting's
    known image and mask) is the same in both halves: guidance is towards the label or the text.
    `context_mask` marks the real tokens of a token context (None: all real); the null half's L copies
    of the null token get a mask with only the first one real (`null_token_mask`).
    The converters are affine in the prediction with coefficients that depend only on (x_t, t),
    so guiding before or after conversion to v gives the same result. With `cfg_interval`
    (t_low, t_high), guidance applies only for t in that interval and the conditional prediction
    alone elsewhere (Kynkaanniemi et al. 2024).
    `state` (a fixed-point model's SolverState) is handed to every model call of this batch.
    """
    if y is not None and getattr(model, "num_classes", 0) == 0:
        y = None  # an unconditional model ignores labels (a class-conditional teacher's batch, say)
    guided = cfg != 1.0 and (y is not None or context is not None)
    cond = {k: v for k, v in (("context", context), ("concat", concat), ("context_mask", context_mask))
            if v is not None}
    if state is not None:
        cond["state"] = state
    if guided:
        null_y, null_context = model.unconditional(y, context)
        if context is not None and context.ndim == 3:
            real = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            cond["context_mask"] = context_mask = real if context_mask is None else context_mask
        pairs = {"context": (context, null_context), "concat": (concat, concat),
                 "context_mask": (context_mask, None if context_mask is None else null_token_mask(context_mask))}
        doubled = {**cond, **{k: torch.cat(pairs[k]) for k in pairs if k in cond}}  # state is shared as is
        doubled_y = None if y is None else torch.cat([y, null_y])

    def fn(x: Tensor, t: Tensor) -> Tensor:
        inside = cfg_interval is None or cfg_interval[0] <= float(t[0]) <= cfg_interval[1]
        if guided and inside:
            cond_pred, uncond = model(torch.cat([x, x]), torch.cat([t, t]), doubled_y, **doubled).chunk(2)
            pred = uncond + cfg * (cond_pred - uncond)
        else:
            pred = model(x, t, y, **cond)
        return paths.convert(pred.float(), prediction, "v", x.float(), t.float())

    return fn


# ---- time grids: steps + 1 decreasing times, first <= 1, last = 0 -------------------------------

def time_grid(steps: int, device: torch.device | str = "cpu") -> Tensor:
    """steps + 1 uniformly spaced times from 1 (noise) to 0 (data)."""
    _check_steps(steps)
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def karras_grid(steps: int, device="cpu", sigma_min: float = 0.002, sigma_max: float = 80.0,
                rho: float = 7.0) -> Tensor:
    """EDM's sigma schedule (Karras et al. 2022, eq. 5), as flow times, plus the final 0."""
    _check_steps(steps)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([paths.sigma_to_t(sigmas), torch.zeros(1, dtype=torch.float64)]).float().to(device)


def logit_grid(steps: int, device="cpu", mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Equal-probability quantiles of the logit-normal density that flow models are often trained
    with (SD3), from 1 to 0: more steps where training spent its time."""
    _check_steps(steps)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    ts = torch.sigmoid(normal.icdf(u.clamp(1e-12, 1 - 1e-12)))
    ts[0], ts[-1] = 1.0, 0.0
    return ts.float().to(device)


def tld_grid(steps: int, device="cpu", exponent: float = 1.0) -> Tensor:
    """TLD's noise levels 1 - u^(1/exponent) on a uniform u (exponent > 1 spends more steps near the data)."""
    _check_steps(steps)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return (1 - u ** (1 / exponent)).float().to(device)


def consistency_grid(steps: int, device="cpu", theta_max: float = math.atan(80 / paths.SIGMA_D),
                     theta_mid: float = 1.1) -> Tensor:
    """sCM's few-step times: start at TrigFlow angle arctan(80 / sigma_d) = 1.5645; with 2 steps,
    re-noise at angle 1.1; with more, spread the angles between evenly. As flow times, plus 0."""
    _check_steps(steps)
    thetas = torch.tensor([theta_max] if steps == 1 else
                          [theta_max, *torch.linspace(theta_mid, 0, steps)[:-1].tolist()], dtype=torch.float64)
    return torch.cat([paths.theta_to_t(thetas), torch.zeros(1, dtype=torch.float64)]).float().to(device)


GRIDS: dict[str, Callable[..., Tensor]] = {
    "uniform": time_grid, "karras": karras_grid, "logit": logit_grid, "tld": tld_grid,
    "consistency": consistency_grid,
}


def parse_grid(spec: str) -> tuple[str, dict[str, float]]:
    """A grid spec "name[:key=value,...]" -> (name, its numeric options), checked against the grid's own
    parameters, so that a typo fails before any sampling."""
    name, _, text = spec.partition(":")
    if name not in GRIDS:
        raise ValueError(f"unknown time grid {name!r}; choose from {sorted(GRIDS)}")
    allowed = [p for p in inspect.signature(GRIDS[name]).parameters if p not in ("steps", "device")]
    options = {}
    for item in filter(None, text.split(",")):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or key not in allowed:
            raise ValueError(f"time grid {spec!r}: {item!r} is not KEY=VALUE with KEY one of {name}'s options "
                             f"{allowed or '(none)'}")
        try:
            options[key] = float(value)
        except ValueError:
            raise ValueError(f"time grid {spec!r}: {key} needs a number, got {value!r}") from None
    return name, options


def grid_times(spec: str, steps: int, device: torch.device | str = "cpu") -> Tensor:
    """The steps + 1 times of a grid spec (`parse_grid`); options that would not give times falling from at
    most 1 to 0 (a re-noising angle above the start, say) are a ValueError naming the spec. Built and checked on
    the CPU, so that the check costs a GPU sampling call no synchronisation."""
    name, options = parse_grid(spec)
    ts = GRIDS[name](steps, device="cpu", **options)
    if not (torch.isfinite(ts).all() and ts[0] <= 1 and ts[-1] == 0 and (ts[:-1] > ts[1:]).all()):
        raise ValueError(f"time grid {spec!r} at {steps} steps gives times {ts.tolist()}, not decreasing from at "
                         "most 1 to 0")
    return ts.to(device)


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def _last(i: int, ts: Tensor) -> bool:
    """Whether step i ends at t = 0 (every grid ends there and only there); an index test, so no
    device sync per step."""
    return i == len(ts) - 2


def _at_least_fp32(x: Tensor) -> Tensor:
    """Integrate in float32 at least (bf16 states drift), keeping float64 for exact tests."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _progress(n: int, progress: bool):
    return tqdm(range(n), desc="sampling", disable=None if progress else True, leave=False)


# ---- samplers ----------------------------------------------------------------------------------

def sample_euler(fn: VelocityFn, x: Tensor, ts: Tensor, progress: bool = False) -> Tensor:
    """Explicit Euler on dx/dt = v(x, t): x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i). First order.
    On this straight path deterministic DDIM (eta = 0) is exactly this update."""
    x = _at_least_fp32(x)
    for i in _progress(len(ts) - 1, progress):
        x = x + (ts[i + 1] - ts[i]) * fn(x, ts[i].expand(x.shape[0]))
    return x


def sample_heun(fn: VelocityFn, x: Tensor, ts: Tensor, progress: bool = False) -> Tensor:
    """Heun's method (EDM, Karras et al. 2022, Alg. 1): Euler, then the trapezoid of the slopes at
    both ends; the last step (to t = 0) stays Euler. Second order, 2 * steps - 1 evaluations."""
    x = _at_least_fp32(x)
    for i in _progress(len(ts) - 1, progress):
        t, t_next = ts[i].expand(x.shape[0]), ts[i + 1].expand(x.shape[0])
        h = ts[i + 1] - ts[i]
        v = fn(x, t)
        x_euler = x + h * v
        x = x_euler if _last(i, ts) else x + h / 2 * (v + fn(x_euler, t_next))
    return x


def sample_ddim(fn: VelocityFn, x: Tensor, ts: Tensor, progress: bool = False, eta: float = 0.0,
                fresh: NoiseFn | None = None) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) on the variance-preserving path through x_t. eta = 0 is the
    deterministic sampler (identical to Euler here); eta = 1 is ancestral DDPM sampling."""
    x = _at_least_fp32(x)
    for i in _progress(len(ts) - 1, progress):
        t, t_next = ts[i], ts[i + 1]
        v = fn(x, t.expand(x.shape[0]))
        x0, eps = x - t * v, x + (1 - t) * v
        a, s = paths.vp_coefficients(t)
        a_next, s_next = paths.vp_coefficients(t_next)
        # eq. 16: sigma_eta = eta sqrt((1 - ab_next) / (1 - ab)) sqrt(1 - ab / ab_next), with ab = alpha^2
        noise_std = 0 * t if _last(i, ts) else eta * s_next / s * torch.sqrt((1 - (a / a_next) ** 2).clamp_min(0))
        x_vp = a_next * x0 + torch.sqrt((s_next**2 - noise_std**2).clamp_min(0)) * eps
        if eta > 0 and not _last(i, ts):
            x_vp = x_vp + noise_std * (fresh or _global_noise)(i, x)
        x = x_vp / (a_next + s_next)  # back to the flow path's scale
    return x


def sample_dpmpp_2m(fn: VelocityFn, x: Tensor, ts: Tensor, progress: bool = False) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the half-log-SNR lambda = log((1 - t) / t) -
    the form TLD uses, and the standard one, since alpha = 1 - t and sigma = t here:
        x_{i+1} = (t_{i+1} / t_i) x_i - (1 - t_{i+1}) (e^{-h} - 1) D_i,   h = lambda_{i+1} - lambda_i
        D_i = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},   r = h_{i-1} / h_i   (first order at both ends)
    Second order, one evaluation per step."""
    x = _at_least_fp32(x)
    lam = lambda t: torch.log1p(-t) - torch.log(t)  # noqa: E731 (infinite at t = 0 and 1: handled below)
    x0_prev, h_prev = None, None
    for i in _progress(len(ts) - 1, progress):
        t, t_next = ts[i], ts[i + 1]
        v = fn(x, t.expand(x.shape[0]))
        x0 = x - t * v
        if _last(i, ts):
            # t_next = 0, lambda = inf: land on the data estimate (first order, as usual; grids whose
            # last nonzero time is small, like karras, make that harmless).
            x = x0
            break
        # From t = 1 (lambda = -inf), h = inf: expm1(-h) = -1 and r = inf make this the exact
        # first-order step (1 - t_next) x0 + t_next x, with no special case.
        h = lam(t_next) - lam(t)
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        x = (t_next / t) * x - (1 - t_next) * torch.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def sample_consistency(fn: VelocityFn, x: Tensor, ts: Tensor, progress: bool = False,
                       fresh: NoiseFn | None = None) -> Tensor:
    """Consistency sampling (Song et al. 2023, Alg. 1; sCM): jump to the data estimate
    x0 = x - t v (for a TrigFlow model this is exactly its consistency function), then re-noise to
    the next time with fresh noise. One evaluation per step."""
    x = _at_least_fp32(x)
    for i in _progress(len(ts) - 1, progress):
        t = ts[i]
        x0 = x - t * fn(x, t.expand(x.shape[0]))
        x = x0 if _last(i, ts) else paths.interpolate(x0, (fresh or _global_noise)(i, x0), ts[i + 1])
    return x


class Sampler(NamedTuple):
    run: Callable[..., Tensor]
    nfe: Callable[[int], int]  # model evaluations for a number of steps (CFG's doubled batch counts once)
    grid: str  # default time grid
    stochastic: bool = False  # draws fresh noise on the way (`run` takes `fresh`, a NoiseFn)


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler(sample_euler, lambda n: n, "uniform"),
    "heun": Sampler(sample_heun, lambda n: 2 * n - 1, "uniform"),
    "ddim": Sampler(sample_ddim, lambda n: n, "uniform", stochastic=True),  # with eta > 0
    "dpmpp_2m": Sampler(sample_dpmpp_2m, lambda n: n, "uniform"),
    "consistency": Sampler(sample_consistency, lambda n: n, "consistency", stochastic=True),
}


@torch.no_grad()
def sample(model: nn.Module, prediction: str, noise: Tensor, y: Tensor | None = None, steps: int = 50,
           cfg: float = 1.0, sampler: str = "euler", progress: bool = False, state=None, grid: str | None = None,
           cfg_interval: tuple[float, float] | None = None, context: Tensor | None = None,
           concat: Tensor | None = None, context_mask: Tensor | None = None,
           callback: Callable[[Tensor, Tensor], None] | None = None, fresh: NoiseFn | None = None) -> Tensor:
    """Generate from `noise` (standard normal): returns x0 in the model's data space. `y`, `context` and
    `concat` (and `context_mask` for token contexts) condition the model (see `denoiser`); `grid` is a grid spec
    (`grid_times`; default: the sampler's own). `fresh` supplies the noise that stochastic samplers draw on the
    way (default: torch's global generator).

    The run starts at the grid's first time t0 from t0 * noise (exact at t0 = 1; grids that start
    lower, like karras or consistency, drop the (1 - t0) x0 part, as EDM and sCM do).
    Models with per-batch sampling state (fixed-point models: `model.sampling_state()`) get a fresh
    one per call, or `state` when given (to read its residuals afterwards); it is reset here.
    `callback(t, x0_hat)` sees every model evaluation's estimate of the clean sample, x0 = x_t - t v
    (a denoising trajectory), without changing the result. The inputs are checked first (`check_inputs`): one
    row per sample, labels within the classes, a context only for a text model, a finite cfg."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    check_inputs(model, prediction, noise, y, cfg, cfg_interval, context=context, concat=concat,
                 context_mask=context_mask)
    ts = grid_times(grid or SAMPLERS[sampler].grid, steps, device=noise.device)
    if state is None and hasattr(model, "sampling_state"):
        state = model.sampling_state()
    if state is not None:
        state.start(ts)
    fn = denoiser(model, prediction, y, cfg, state, cfg_interval, context, concat, context_mask)
    if callback is not None:
        fn = _observed(fn, callback)
    extra = {"fresh": fresh} if SAMPLERS[sampler].stochastic else {}
    return SAMPLERS[sampler].run(fn, ts[0] * noise.float(), ts, progress=progress, **extra)


def check_inputs(model: nn.Module, prediction: str, noise: Tensor, y: Tensor | None, cfg: float,
                 cfg_interval: tuple[float, float] | None, **cond: Tensor | None) -> None:
    """`sample`'s arguments, checked once per call: a ValueError naming the argument, where torch would fail
    deep in the backbone at the first step, or give wrong samples without a word (NaN from a NaN cfg, no
    guidance from a reversed interval)."""
    if prediction not in paths.PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose from {list(paths.PREDICTIONS)}")
    if not math.isfinite(cfg):
        raise ValueError(f"cfg must be a finite number, got {cfg}")
    if cfg_interval is not None and not (len(cfg_interval) == 2 and 0 <= cfg_interval[0] < cfg_interval[1] <= 1):
        raise ValueError(f"cfg_interval must be (low, high) with 0 <= low < high <= 1, got {cfg_interval}")
    channels = getattr(model, "in_channels", None)
    if noise.ndim != 4 or noise.shape[1] != (channels or noise.shape[1]):
        raise ValueError(f"noise must be (B, {channels or 'C'}, H, W), got {tuple(noise.shape)}")
    check_rows(len(noise), y, **cond)
    _check_labels(model, y)
    _check_context(model, cond.get("context"), cond.get("context_mask"))


def check_rows(n: int, y: Tensor | None = None, **cond: Tensor | None) -> None:
    """One row of labels and of each condition per sample: other counts would broadcast or be cut off."""
    for name, value in (("labels", y), *cond.items()):
        if value is not None and len(value) != n:
            raise ValueError(f"{name} has {len(value)} rows for {n} samples; give one per sample")


def _check_labels(model: nn.Module, y: Tensor | None) -> None:
    """Class indices (B,) in [0, num_classes), or class weights (B, num_classes + 1). Index num_classes is the
    null class, so a label past the end would give unconditional samples silently (use y=None for those)."""
    if y is None:
        return
    classes = getattr(model, "num_classes", 0)
    if not classes:
        raise ValueError("this model is unconditional; labels do not apply")
    if y.is_floating_point():
        if y.shape[1:] != (classes + 1,):
            raise ValueError(f"float labels are class weights (B, {classes + 1}), the last column the null "
                             f"class; got {tuple(y.shape)} (class indices are integers)")
        return
    if y.dtype not in (torch.int32, torch.int64) or y.ndim != 1:
        raise ValueError(f"labels must be integer class indices (B,), got {y.dtype} {tuple(y.shape)}")
    low, high = (int(y.min()), int(y.max())) if len(y) else (0, 0)
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(f"label {bad} out of range: this model has {classes} classes (0..{classes - 1}); "
                         f"for unconditional samples give no labels")


def _check_context(model: nn.Module, context: Tensor | None, mask: Tensor | None) -> None:
    """A text context (B, context_dim) pooled or (B, L, context_dim) tokens, the mask (B, L) of tokens."""
    if context is None:
        return
    width = getattr(model, "context_dim", 0)
    if not width:
        raise ValueError("this model is not text-conditioned; context does not apply")
    if context.ndim not in (2, 3) or context.shape[-1] != width:
        raise ValueError(f"context must be (B, {width}) or (B, L, {width}), got {tuple(context.shape)}")
    if mask is not None and (context.ndim != 3 or mask.shape != context.shape[:2]):
        raise ValueError(f"context_mask must be (B, L) of a token context (B, L, {width}), got "
                         f"{tuple(mask.shape)} for context {tuple(context.shape)}")


def _observed(fn: VelocityFn, callback: Callable[[Tensor, Tensor], None]) -> VelocityFn:
    def observed(x: Tensor, t: Tensor) -> Tensor:
        v = fn(x, t)
        callback(t[0], x - paths.expand(t, x) * v)
        return v

    return observed
