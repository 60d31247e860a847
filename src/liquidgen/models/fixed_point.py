"""Fixed-point denoisers (FPDM, Bai & Melas-Kyriazi, CVPR 2024): the middle of any block stack made implicit.

    stem -> pre blocks -> x_inj = Linear(h)
         -> z* = f(z*),  f(z) = Block(Inject(z, x_inj), cond),  Inject(z, x) = fc2(GELU(fc1([z, x])))
         -> post blocks -> head

One weight-tied block replaces the explicit middle of the stack; depth becomes a run-time choice.
Training (FPDM sec. 3.3): a random number of iterations without gradient, then a random number
with gradient, so the model learns to improve any iterate and backprop stays truncated.
Sampling (FPDM sec. 3.4): an iteration count per step, or a budget spread over the steps, and the
previous step's solution as the next step's initial guess - consecutive steps solve nearly the same
problem. That per-batch memory is a `SolverState`, created fresh by the sampler for every batch.

Works over any `BlockStack` (DiT, LiquidGen - the fixed-point LiquidGen is new here).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import dit, liquid
from .base import BlockStack, build_preset, run_stack

# Each preset wraps a backbone preset with 1 pre + 1 tied + 1 post block (FPDM's default split).
PRESETS: dict[str, dict] = {
    "dit-tiny": dict(backbone="dit", backbone_preset="tiny"),
    "dit-S": dict(backbone="dit", backbone_preset="S"),
    "dit-B": dict(backbone="dit", backbone_preset="B"),
    "liquid-tiny": dict(backbone="liquid", backbone_preset="tiny"),
    "liquid-S": dict(backbone="liquid", backbone_preset="S"),
}
# The block stacks a fixed point can wrap, with their presets (the registry in __init__ builds on this
# module, so the table is its own).
STACKS: dict[str, tuple[type[BlockStack], dict[str, dict]]] = {"dit": (dit.DiT, dit.PRESETS),
                                                                "liquid": (liquid.LiquidGen, liquid.PRESETS)}
_INNER_NATIVE = {"dit": dit.NATIVE, "liquid": liquid.NATIVE}
NATIVE = {name: _INNER_NATIVE[p["backbone"]][p["backbone_preset"]] for name, p in PRESETS.items()}
SCHEDULES = ("constant", "increasing", "decreasing")


def iteration_plan(budget: int, steps: int, schedule: str = "constant") -> list[int]:
    """Spread `budget` iterations over `steps` sampling steps (first step = noisiest): equal, or
    linearly increasing / decreasing along the trajectory (FPDM's linear controller). Every step
    gets at least one iteration and the plan sums to `budget` exactly (largest remainders)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if budget < steps:
        raise ValueError(f"an iteration budget of {budget} cannot give {steps} steps one iteration each")
    ramp = torch.arange(1, steps + 1, dtype=torch.float64)
    weights = {"constant": torch.ones(steps, dtype=torch.float64), "increasing": ramp,
               "decreasing": ramp.flip(0)}[schedule]
    raw = (budget - steps) * weights / weights.sum()
    plan = raw.floor()
    rest = int(budget - steps - plan.sum().item())
    plan[torch.argsort(raw - plan, descending=True, stable=True)[:rest]] += 1
    return [1 + int(n) for n in plan]


@dataclass
class SolverState:
    """What a fixed-point model carries from one sampling step to the next, for one batch."""
    iters: int  # iterations per call when there is no plan
    reuse: bool = True
    budget: int | None = None
    schedule: str = "constant"
    plan: list[int] | None = None
    times: Tensor | None = None
    z: Tensor | None = None
    residuals: list[float] = field(default_factory=list)
    used: list[int] = field(default_factory=list)

    def start(self, times: Tensor) -> None:
        """Begin a batch on the sampler's time grid (times[0] = 1 ... times[-1] = 0): forget the
        previous batch's solution and plan the iteration budget over the steps."""
        self.z, self.residuals, self.used = None, [], []
        self.times = times[:-1].float().cpu()
        steps = len(self.times)
        self.plan = iteration_plan(self.budget, steps, self.schedule) if self.budget else None

    def iterations_at(self, t: Tensor) -> int:
        if self.plan is None or self.times is None:
            return self.iters
        return self.plan[int((self.times - float(t[0])).abs().argmin())]


class Inject(nn.Module):
    """fc2(GELU(fc1([z, x_inj]))) along the feature axis."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(2 * width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, z: Tensor, x_inj: Tensor, dim: int) -> Tensor:
        joint = torch.cat([z, x_inj], dim=dim).movedim(dim, -1)
        return self.fc2(F.gelu(self.fc1(joint))).movedim(-1, dim).contiguous()


class FixedPoint(nn.Module):
    """Wraps backbone `backbone` at `backbone_preset`, built with pre + 1 + post blocks, the middle one tied.

    `train_iters_nograd` / `train_iters_grad`: [low, high) ranges of the random iteration counts in
    training (FPDM: 0-9 without and 1-11 with gradient). `sample_iters`: iterations per sampling call
    (default: the explicit preset's depth minus pre and post, i.e. the same compute as the explicit
    model). `sample_budget` (optional): total iterations over a sampling run, spread by
    `sample_schedule`. `reuse`: start each step from the previous step's solution."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, backbone: str = "dit",
                 backbone_preset: str = "S", pre: int = 1, post: int = 1, train_iters_nograd: tuple[int, int] = (0, 10),
                 train_iters_grad: tuple[int, int] = (1, 12), sample_iters: int | None = None,
                 sample_budget: int | None = None, sample_schedule: str = "constant", reuse: bool = True,
                 options: dict | None = None, context_dim: int = 0, concat_channels: int = 0, logvar: bool = False,
                 time_scale: float | None = None):
        super().__init__()
        if "depth" in (options or {}):
            raise ValueError("a fixed-point model sets its backbone's depth itself (pre + 1 + post); "
                             "choose pre and post instead")
        for name, (low, high) in (("train_iters_nograd", train_iters_nograd), ("train_iters_grad", train_iters_grad)):
            if not 0 <= low < high:
                raise ValueError(f"{name} must be a range [low, high) with 0 <= low < high, got {[low, high]}")
        if train_iters_grad[0] < 1:
            raise ValueError("train_iters_grad must start at 1 or more: some iterations need a gradient")
        if sample_schedule not in SCHEDULES:
            raise ValueError(f"sample_schedule must be one of {SCHEDULES}, got {sample_schedule!r}")
        if backbone not in STACKS:
            raise ValueError(f"backbone {backbone!r} is not a block stack; choose from {sorted(STACKS)}")
        # Text and inpainting inputs, the logvar head (adaptive weighting) and the time embedding's scale are the
        # wrapped stack's (its stem and conditioning take them), set here as on every other backbone.
        data_options = {k: v for k, v in (("context_dim", context_dim), ("concat_channels", concat_channels),
                                          ("logvar", logvar), ("time_scale", time_scale)) if v}
        cls, presets = STACKS[backbone]
        self.inner: BlockStack = build_preset(cls, presets, backbone, backbone_preset, in_channels, input_size,
                                              num_classes, depth=pre + 1 + post, **{**(options or {}), **data_options})
        if self.inner.long_skips and pre != post:
            raise ValueError(f"{backbone} pairs blocks with long skips: pre ({pre}) must equal post ({post})")
        explicit_depth = presets[backbone_preset].get("depth", pre + 1 + post)
        self.pre, self.post = pre, post
        self.train_iters_nograd, self.train_iters_grad = tuple(train_iters_nograd), tuple(train_iters_grad)
        self.sample_iters = sample_iters or max(1, explicit_depth - pre - post)
        self.sample_budget, self.sample_schedule, self.reuse = sample_budget, sample_schedule, reuse
        self.inject_in = nn.Linear(self.inner.width, self.inner.width)
        self.inject = Inject(self.inner.width)

    # The Backbone interface, delegated to the wrapped stack.
    in_channels = property(lambda self: self.inner.in_channels)
    out_channels = property(lambda self: self.inner.out_channels)
    input_size = property(lambda self: self.inner.input_size)
    num_classes = property(lambda self: self.inner.num_classes)
    null_class = property(lambda self: self.inner.null_class)
    context_dim = property(lambda self: self.inner.context_dim)
    concat_channels = property(lambda self: self.inner.concat_channels)

    def unconditional(self, y: Tensor | None, context: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        return self.inner.unconditional(y, context)

    def logvar(self, t: Tensor) -> Tensor:
        return self.inner.logvar(t)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def compile(self, *args, **kwargs) -> None:
        """Compile each block and the injection, not the whole model: the iteration counts are random
        Python integers, and one graph per count would exhaust torch.compile's recompile limit."""
        for module in (*self.inner.blocks, self.inject, self.inject_in):
            module.compile(*args, **kwargs)

    def sampling_state(self) -> SolverState:
        return SolverState(self.sample_iters, self.reuse, self.sample_budget, self.sample_schedule)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                concat: Tensor | None = None, context_mask: Tensor | None = None,
                state: SolverState | None = None) -> Tensor:
        inner = self.inner
        h, cond = inner.stem(inner.with_concat(x, concat), t, y, context, context_mask)
        blocks = inner.blocks
        h = run_stack(h, cond, blocks[:self.pre], lambda h: self.solve(h, cond, t, state),
                      blocks[self.pre + 1:], inner.long_skips)
        return inner.head(h, cond, x)

    def solve(self, h: Tensor, cond, t: Tensor, state: SolverState | None) -> Tensor:
        dim = self.inner.channel_dim
        x_inj = self.inject_in(h.movedim(dim, -1)).movedim(-1, dim)
        core = self.inner.blocks[self.pre]

        def f(z: Tensor) -> Tensor:
            return core(self.inject(z, x_inj, dim), cond)

        if self.training and state is None:
            n_free = int(torch.randint(*self.train_iters_nograd, ()).item())
            n_grad = int(torch.randint(*self.train_iters_grad, ()).item())
            z = h
            if n_free:
                with torch.no_grad():
                    for _ in range(n_free):
                        z = f(z)
            for _ in range(n_grad):
                z = f(z)
            return z

        z = h
        if state is not None and state.reuse and state.z is not None and state.z.shape == h.shape:
            z = state.z.to(h.dtype)
        iters = state.iterations_at(t) if state is not None else self.sample_iters
        previous = z
        for _ in range(iters):
            previous, z = z, f(z)
        if state is not None:
            state.z = z.detach()
            state.used.append(iters)
            state.residuals.append(relative_residual(z, previous))
        return z


def relative_residual(z: Tensor, previous: Tensor) -> float:
    """||z_{k+1} - z_k|| / ||z_k|| over the batch: how far the last iteration still moved."""
    return (torch.linalg.vector_norm((z - previous).float())
            / torch.linalg.vector_norm(previous.float()).clamp_min(1e-12)).item()

