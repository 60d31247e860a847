"""The training loop: `train(config, out_dir)`.

Per optimizer step: `grad_accum` micro-batches (labels dropped per sample to the null class for
CFG), bf16 autocast on CUDA, global gradient clipping, the optimizer, EMA. Steps whose gradient is not
finite are skipped and counted. Writes into `out_dir`:
    config.yaml, metrics.jsonl, loss.png, samples/step-XXXXXX.png, checkpoints/step-XXXXXX/
Under `accelerate launch` / `torchrun` the same function runs once per GPU (see `distributed.py`).
This module is callable: `liquidgen.train(config, out=...)` is `run` (the Python API).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .config import COMPILE_TUNINGS, Config, load_config
from .data import BatchSampler, ImageData, PrecomputedData, load_dataset
from .distributed import Dist, main_process, part_seed, setup
from .ema import EMA
from .evaluation.during_training import TrainingEval
from .generate import Pipeline, grid_labels
from .inpainting import concat_input, random_masks
from .models import Backbone, BlockStack
from .models.base import null_token_mask
from .objectives import Objective, objective_from
from .optim import make_optimizer, make_scheduler, skip_on_device
from .plots import plot_metrics_jsonl, save_grid
from .run_folder import claim, default_folder
from .runtime import (MetricsLog, NonFiniteGuard, StopRequest, autocast, check_resume, compile_options, loss_text,
                      resume_newest, seed_everything)
from .spec import ModelSpec, init_weights
from .trackers import check_tracker, open_tracker


def drop_labels(y: torch.Tensor, p: float, null_class: int) -> torch.Tensor:
    """Replace each label independently with probability p by the null class (not the whole batch)."""
    if p <= 0:
        return y
    return torch.where(torch.rand(y.shape, device=y.device) < p, torch.full_like(y, null_class), y)


def drop_context(context: torch.Tensor, p: float, null: torch.Tensor, mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Replace each sample's text context with probability p by the learned null context `null` (shaped
    like `context`), which therefore gets its gradient from the dropped samples (TLD drops 15%). A token
    `mask` becomes `null_token_mask` on dropped rows (the L null copies act as one). Returns (context, mask)."""
    if p <= 0:
        return context, mask
    drop = torch.rand(context.shape[0], device=context.device) < p
    context = torch.where(drop.view(-1, *[1] * (context.ndim - 1)), null.to(context.dtype), context)
    return context, None if mask is None else torch.where(drop[:, None], null_token_mask(mask), mask)


def accumulate_gradients(model, objective, batches: BatchSampler, step: int, grad_accum: int,
                         label_dropout: float | None, caption_dropout: float = 0.0,
                         amp=contextlib.nullcontext, dist: Dist | None = None, seed: int = 0) -> torch.Tensor:
    """Backpropagate the loss of optimizer step `step` over this process's `grad_accum` micro-batches
    (with DDP, the gradient is the mean over the whole global batch, like one big batch); `label_dropout`
    None means unconditional. Models with concat channels (inpainting) get a random mask per sample.
    The RNG is reseeded per micro-batch from (seed, step, part): see `distributed.part_seed`."""
    dist = dist or Dist()
    total = 0.0
    if hasattr(objective, "set_step"):  # step-dependent losses (consistency's tangent warm-up)
        objective.set_step(step)
    for k in range(grad_accum):
        part = k * dist.world + dist.rank
        torch.manual_seed(part_seed(seed, step, part))
        x, y, cond = batches(step, part, grad_accum * dist.world)
        y = None if label_dropout is None else drop_labels(y, label_dropout, model.null_class)
        if "context" in cond:
            null = model.unconditional(None, cond["context"])[1]
            cond["context"], mask = drop_context(cond["context"], caption_dropout, null, cond.get("context_mask"))
            if mask is not None:
                cond["context_mask"] = mask
        if model.concat_channels:
            cond["concat"] = concat_input(x, random_masks(x.shape[0], *x.shape[-2:], device=x.device))
        with dist.no_sync(model) if k < grad_accum - 1 else contextlib.nullcontext():
            with amp():
                loss = objective.loss(model, x, y, **cond) / grad_accum
            loss.backward()
        total = total + loss.detach()
    return total


def train_step(model, objective, batches, step: int, optimizer, scheduler, ema: EMA, config: Config,
               label_dropout: float | None, amp=contextlib.nullcontext, dist: Dist | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimizer step: gradients over `train.grad_accum` micro-batches, global norm clipping, then
    the update and EMA - both left out when the gradient is not finite - and the LR schedule. Returns
    (this process's loss, grad norm, whether the step was taken, as a bool tensor). With the fused AdamW
    the decision stays on the device: no host sync per step, so the CPU can queue the next step while
    the GPU runs this one. With DDP the gradients, hence the norm and the decision, are the same on every
    process."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = accumulate_gradients(model, objective, batches, step, config.train.grad_accum, label_dropout,
                                config.train.caption_dropout, amp, dist, config.train.seed)
    clip = config.optim.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
    finite = torch.isfinite(grad_norm)
    if skip_on_device(optimizer, ~finite) or finite:  # `or finite` reads the flag on the host
        optimizer.step()
    scheduler.step()  # the schedule follows the step count, skipped steps included
    ema.update(model, finite)
    return loss, grad_norm, finite


@dataclass
class Clock:
    seconds: float = 0.0  # of training steps so far, process 0's on every process


@dataclass
class Run:
    """Everything a training run holds, built once by `start_run`."""

    config: Config
    out: Path
    dist: Dist
    device: torch.device
    data: ImageData | PrecomputedData
    spec: ModelSpec
    model: Backbone
    objective: Objective
    batches: BatchSampler
    ema: EMA
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    pipe: Pipeline  # samples from the EMA weights: grids and evaluation
    metrics: MetricsLog
    clock: Clock  # the training seconds a time-budgeted cosine schedule reads
    evaluator: TrainingEval | None = None
    ema_checks: list[int] = field(default_factory=list)

    @property
    def label_dropout(self) -> float | None:
        """None: an unconditional model, which gets no labels at all."""
        return self.config.train.label_dropout if self.spec.num_classes else None

    def amp(self):
        return autocast(self.device, self.config.train.precision)

    def say(self, text: str) -> None:
        if self.dist.main:
            print(text, flush=True)


def start_run(config: Config, out: Path, resume: bool = False) -> Run:
    """Data, model, objective, optimizer and EMA of a fresh run (weights from the seed, or `train.init_from`
    unless `resume` finds checkpoints to restore)."""
    tc = config.train
    check_tracker(tc.log_with)  # before anything is loaded
    dist, device = setup(tc.device)
    seed_everything(tc.seed)  # the same initial weights in every process
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # max_memory_gb is this run's, not the process's
    d = config.data
    data = load_dataset(d.name, d.root, d.image_size, limit=d.limit, skip_bad_images=d.skip_bad_images)
    if tc.batch_size % (tc.grad_accum * dist.world):
        raise ValueError(f"train.batch_size {tc.batch_size} (the global batch) must be divisible by train.grad_accum "
                         f"{tc.grad_accum} x {dist.world} processes")
    spec = ModelSpec.for_run(config, data.channels, data.size, data.class_names if d.labels else [],
                             0 if data.context is None else data.context.shape[-1], data.space, data.text_encoder,
                             data.text_tokens)
    model = spec.build().to(device)
    for m in model.modules():  # a fixed-point model's inner stack holds the text input
        if getattr(m, "standardize_context", False):
            m.fit_context(data.context, data.context_mask)  # a resumed run then loads the same from its checkpoint
    if config.model.checkpointing:
        if not isinstance(model, BlockStack):
            raise ValueError(f"model.checkpointing needs a block stack (liquid, dit); {config.model.name!r} is not one")
        model.set_checkpointing(config.model.checkpointing)
    objective = objective_from(config.objective)
    teacher_run = getattr(objective, "teacher", "")
    # sCM starts a distilled student from its pre-trained teacher: with train.init_from empty, sCD does, so
    # that a preset names its teacher once and a user who points it at their own run cannot start the student from
    # another model by leaving a second name behind.
    init_from = tc.init_from or teacher_run
    # Resuming, the checkpoint's weights replace init_from's: the run they came from may be gone by now.
    if init_from and not (resume and ckpt_io.list_checkpoints(out)):
        init_weights(model, init_from)
    if teacher_run:  # distillation: any checkpoint teaches, through the converters
        teacher = Pipeline.load(teacher_run, ema=objective.teacher_ema, device=device)
        objective.bind_teacher(teacher.model, teacher.prediction)
        if dist.main and Path(init_from).resolve() != Path(teacher_run).resolve():
            print(f"note: train.init_from ({init_from}) is not objective.options.teacher ({teacher_run}): the "
                  "student starts from other weights than its teacher's (leave init_from empty to start from the "
                  "teacher, as sCM does)", flush=True)
    ema = EMA(model, tc.ema_decay, tc.ema_warmup, tc.ema_std)
    optimizer = make_optimizer(model, config.optim)
    if tc.compile:
        # In place: parameter names, the EMA copy and checkpoints are unaffected. Static shapes: a run's batches
        # have one shape, and with dynamic=None a second run of the same backbone in one process (a study's next
        # contender) recompiled the shared forward with symbolic sizes: LiquidGen-S trained at 1,298 img/s after
        # its latent twin in one process, 2,270 alone (H100, benchmarks/results/2026-12-06-emoji-guidance-10k-h100).
        model.compile(**compile_options(tc.compile_mode, COMPILE_TUNINGS[tc.compile_tuning]), dynamic=False)
        if hasattr(objective, "compile_tangent"):  # consistency: its JVP compiled as well
            objective.compile_tangent()
    evaluator = None
    if tc.eval_every:
        if not tc.eval_classifier:
            raise ValueError("train.eval_every needs train.eval_classifier (make one with "
                             "`liquidgen eval fit-classifier`)")
        evaluator = TrainingEval(tc.eval_classifier, data, tc.eval_samples, tc.seed, device)
    clock = Clock()
    return Run(config, out, dist, device, data, spec, model, objective,
               BatchSampler(data, tc.batch_size, seed=tc.seed, device=device, hflip=d.hflip), ema, optimizer,
               make_scheduler(optimizer, config.optim, tc.steps, 60 * tc.minutes, lambda: clock.seconds),
               # grids and evaluations repeat, so they sample compiled whenever training does on CUDA
               Pipeline(ema.model, spec, objective.prediction, config.sample, tc.precision, dist,
                        "on" if tc.compile and device.type == "cuda" else "off"),
               MetricsLog(out / "metrics.jsonl"), clock, evaluator)


def load_checkpoint(run: Run, ckpt: Path) -> dict:
    """Restore `ckpt` into the run, once it is known to hold this run's model and objective; returns its
    state.json. Nothing is restored when it raises."""
    check_resume(ckpt, run.config.to_dict(), run.spec.to_json(), ("model", "objective"), run.say)
    return ckpt_io.load_training_state(ckpt, run.model, run.ema.model, run.optimizer, run.scheduler)


def restore(run: Run, resume: bool) -> dict:
    """Continue from the newest readable checkpoint (with `resume`), or start afresh; then writes
    config.yaml. Returns the state to go on from: step, train_seconds, skipped_steps."""
    state = {"step": 0, "train_seconds": 0.0, "skipped_steps": 0}
    found = resume_newest(run.out, lambda ckpt: load_checkpoint(run, ckpt), run.say,
                          move_aside=run.dist.main) if resume else None
    if resume and found is None:
        run.say(f"warning: --resume: {run.out} holds no checkpoint to resume from; starting a new run there")
    if found is not None:
        ckpt, saved = found
        state.update({k: saved[k] for k in state if k in saved})
        run.ema.updates = saved["ema_updates"]
        run.say(f"resumed from {ckpt} at step {state['step']}")
        if saved.get("processes", 1) != run.dist.world:
            run.say(f"note: saved by {saved.get('processes', 1)} processes, resumed by {run.dist.world}: the same "
                    f"batches follow, but the noise drawn for them differs from an uninterrupted run")
    if run.dist.main:
        (run.out / "samples").mkdir(parents=True, exist_ok=True)
        (run.out / "config.yaml").write_text(yaml.safe_dump(run.config.to_dict(), sort_keys=False))
        run.metrics.restart(state["step"])
        run.metrics.tracker = open_tracker(run.config.train.log_with, run.out, run.config.to_dict(), state["step"])
    return state


GRID_PROMPTS = 8  # rows of a text model's training grids


@dataclass
class Grid:
    """The inputs of the training grids, fixed so that successive grids show the same samples improving."""

    noise: torch.Tensor
    labels: torch.Tensor | None
    cond: dict[str, torch.Tensor]
    row: int  # samples per row
    seed: int  # of the noise, and of what stochastic samplers draw on the way (`Pipeline.sample`)


def training_grid(run: Run) -> Grid:
    """Text datasets: one row per distinct caption among the first ones (with their labels, if any), using
    the stored embeddings, so no text encoder is needed while training. Otherwise a class grid."""
    data, sc = run.data, run.config.sample
    if data.context is None:
        labels, row = grid_labels(run.spec.num_classes, sc.per_class, sc.n)
        cond: dict[str, torch.Tensor] = {}
        n = sc.n if labels is None else len(labels)
    else:
        first: dict[str, int] = {}
        for i, caption in enumerate(data.captions or []):
            if len(first) == GRID_PROMPTS:
                break
            first.setdefault(caption, i)
        rows = torch.tensor(list(first.values()) or [0]).repeat_interleave(sc.per_class)
        labels, row, n = data.labels[rows] if run.spec.num_classes else None, sc.per_class, len(rows)
        cond = {"context": data.context[rows].float()}
        if data.context_mask is not None:
            cond["context_mask"] = data.context_mask[rows]
        if run.dist.main:
            (run.out / "samples" / "prompts.txt").write_text("".join(f"row {i}: {p}\n" for i, p in enumerate(first)))
    seed = run.config.train.seed + 1
    return Grid(run.pipe.noise(n, seed), labels, cond, row, seed)


def save_samples(run: Run, grid: Grid, step: int) -> None:
    x = run.pipe.sample(grid.noise, grid.labels, seed=grid.seed, **grid.cond)
    if run.dist.main:
        save_grid(run.pipe.decode(x), run.out / "samples" / f"step-{step:06d}.png", nrow=grid.row)
        plot_metrics_jsonl(run.metrics.path, run.out / "loss.png")


def evaluate(run: Run, step: int, quiet: bool) -> None:
    settings = run.config.sample.with_(steps=run.config.train.eval_steps or None)  # 0: the grids' steps
    record = {"step": step, **run.evaluator(run.pipe, settings)}
    if not run.dist.main:
        return
    run.metrics.append(record)
    plot_metrics_jsonl(run.metrics.path, run.out / "eval.png", keys=("eval_fd",), logy=False, smooth=0.0)
    if quiet:
        print(f"step {step}: eval FD {record['eval_fd']:.2f}"
              + (f", acc {record['eval_acc']:.3f}" if "eval_acc" in record else "")
              + f" ({record['eval_seconds']:.1f} s)", flush=True)


def save(run: Run, step: int, state: dict) -> None:
    # Every process takes the same steps, so its EMA must be bit-identical to process 0's, which is saved.
    if not run.dist.identical(run.ema.model, run.device):
        raise RuntimeError(f"step {step}: the EMA weights differ between processes; the run is not "
                           f"data-parallel any more (a bug: please report it)")
    run.ema_checks.append(step)
    if run.dist.main:
        tc = run.config.train
        ckpt_io.save_checkpoint(run.out, step, run.config, run.spec.to_json(), run.model, run.ema.model,
                                run.optimizer, run.scheduler,
                                extra={"ema_updates": run.ema.updates, "skipped_steps": state["skipped_steps"],
                                       "train_seconds": state["train_seconds"], "processes": run.dist.world},
                                keep=tc.keep_checkpoints, keep_every=tc.keep_every)


class Window:
    """Loss and gradient norm summed on the device between two log lines (no sync per step), and the
    time spent in training steps, so throughput excludes grids, evaluation and checkpoints."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.norm = torch.zeros((), device=self.device)
        self.taken = torch.zeros((), device=self.device)
        self.steps, self.seconds = 0, 0.0

    def add(self, loss: torch.Tensor, norm: torch.Tensor, taken: torch.Tensor) -> None:
        """A step's loss and norm, counted only if the step was `taken` (the skipped ones are not finite)."""
        self.loss += torch.where(taken, loss, 0.0)
        self.norm += torch.where(taken, norm.detach(), 0.0)
        self.taken += taken
        self.steps += 1

    def record(self, run: Run, step: int, state: dict) -> dict:
        """The window's log record. Loss and gradient norm are means over the taken steps; with none taken
        they are left out rather than made up (readers of metrics.jsonl skip a missing key)."""
        means = {}
        if self.taken.item():  # the same on every process, as the gradient that decides it is all-reduced
            means = {"loss": run.dist.mean(self.loss / self.taken).item(), "grad_norm": (self.norm / self.taken).item()}
        record = {"step": step, **means, "lr": run.scheduler.get_last_lr()[0],
                  "images_per_s": self.steps * run.config.train.batch_size / max(self.seconds, 1e-9),
                  "skipped_steps": state["skipped_steps"], "train_seconds": state["train_seconds"]}
        if run.device.type == "cuda":
            record["max_memory_gb"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        self.reset()
        return record


def announce(run: Run) -> None:
    tc, data, space = run.config.train, run.data, run.pipe.space
    text = f", text context {data.context.shape[-1]}-d" if data.context is not None else ""
    where = f"on {run.dist.world} processes ({run.device.type}), {tc.batch_size // run.dist.world} images each " \
            f"per step" if run.dist.world > 1 else f"on {run.device}"
    run.say(f"{run.config.model.name}-{run.config.model.preset}: {run.model.num_params() / 1e6:.2f}M parameters, "
            f"{len(data)} {space.describe()} {data.channels}x{data.size}x{data.size}, {run.spec.num_classes} "
            f"classes{text}, {where}")


def train(config: Config, out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train per `config`, writing everything into `out_dir`, which must not hold another run: with
    `resume`, continue from its newest checkpoint; with `overwrite`, delete that run first (see
    `run_folder.claim`). Returns the final checkpoint folder."""
    with claim(out_dir, resume=resume, overwrite=overwrite, main=main_process()):
        return train_loop(config, Path(out_dir), resume)


def train_loop(config: Config, out_dir: Path, resume: bool) -> Path:
    """`train` once the folder is this run's."""
    tc = config.train
    run = start_run(config, out_dir, resume)
    state = restore(run, resume)
    start, dist = state["step"], run.dist
    run.clock.seconds = state["train_seconds"]
    # What the training step calls: DDP with several processes, after a probe step on the bare model.
    net = dist.wrap(run.model, lambda bare: accumulate_gradients(
        bare, run.objective, run.batches, start, tc.grad_accum, run.label_dropout, tc.caption_dropout, run.amp,
        dist, tc.seed))
    grid = training_grid(run)
    announce(run)
    guard = NonFiniteGuard(tc.max_bad_steps, state["skipped_steps"], run.device)
    window = Window(run.device)
    budget, every = 60 * tc.minutes, 60 * tc.ckpt_minutes
    next_timed = (math.floor(state["train_seconds"] / every) + 1) * every if every else math.inf
    out_of_time = budget > 0 and state["train_seconds"] >= budget
    stop = StopRequest()
    # disable=None: a bar on a terminal; in a log file (no TTY) one line per log interval instead.
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="train", dynamic_ncols=True,
               disable=None if dist.main else True)
    try:
        for step in bar:
            if out_of_time:
                break
            t_step = time.perf_counter()
            loss, grad_norm, taken = train_step(net, run.objective, run.batches, step, run.optimizer,
                                                run.scheduler, run.ema, config, run.label_dropout, run.amp, dist)
            guard(taken, step)
            window.add(loss, grad_norm, taken)
            done = step + 1
            if (tc.minutes or tc.ckpt_minutes) and run.device.type == "cuda":
                torch.cuda.synchronize(run.device)  # the budget is GPU time, not the time to queue kernels
            seconds = time.perf_counter() - t_step
            window.seconds += seconds
            if step > start:  # the first step after a (re)start compiles and warms up: not budgeted
                state["train_seconds"] += seconds
            # All processes must stop and save at the same step: a signal may reach only some of them,
            # and the clocks are process 0's.
            # The next step's learning rate (a cosine over train.minutes) follows process 0's clock as well.
            (stopping, out_of_time, timed), run.clock.seconds = dist.any_and_main(
                stop.signal is not None, dist.main and budget > 0 and state["train_seconds"] >= budget,
                dist.main and state["train_seconds"] >= next_timed, value=state["train_seconds"], device=run.device)
            last = done == tc.steps or out_of_time or stopping
            saving = (tc.ckpt_every and done % tc.ckpt_every == 0) or last or timed
            if done % tc.log_every == 0 or saving:
                state["skipped_steps"] = guard.check()  # reads the device's counts; raises after a bad streak
            if done % tc.log_every == 0 or last:
                steps = window.steps
                record = window.record(run, done, state)
                if dist.main:
                    run.metrics.append(record)
                loss = loss_text(record, steps)
                bar.set_postfix(loss=loss, img_s=f"{record['images_per_s']:.0f}")
                if bar.disable:
                    run.say(f"step {done}/{tc.steps}  loss {loss}  {record['images_per_s']:.0f} img/s")
            if tc.sample_every and (done % tc.sample_every == 0 or last):
                save_samples(run, grid, done)
            if run.evaluator is not None and (done % tc.eval_every == 0 or last):
                evaluate(run, done, quiet=bar.disable)
            if timed:
                next_timed = (math.floor(state["train_seconds"] / every) + 1) * every
            if saving:
                save(run, done, state)
            if stopping:
                run.say(f"\nstopped by {stop.signal or 'a signal to another process'} at step {done}: "
                        f"checkpoint saved; continue with --resume")
                break
        bar.close()
    finally:
        stop.restore()
        run.metrics.close()
    if dist.main and run.metrics.path.exists():
        plot_metrics_jsonl(run.metrics.path, run.out / "loss.png")
    if dist.world > 1 and run.ema_checks:
        run.say(f"EMA weights bit-identical on all {dist.world} processes at each checkpoint (steps "
                f"{', '.join(map(str, run.ema_checks))})")
    dist.barrier()  # the final checkpoint is complete before any process returns it
    return ckpt_io.resolve(out_dir)


def run(config: Config | str | Path, out: str | Path | None = None, *, overrides: Sequence[str] = (),
        resume: bool = False, overwrite: bool = False) -> Path:
    """`liquidgen.train`: train from a YAML config file or a `Config`, with `section.key=value` overrides,
    into the run folder `out` (default: runs/<the config file's name>); returns the run folder, which
    `liquidgen.load` and `liquidgen sample` read. `resume` and `overwrite` as in `train`."""
    if out is None:
        if isinstance(config, Config):
            raise ValueError("give out= (the run folder) with a Config; only a config file names a default")
        out = default_folder(config)
    config = load_config(config, overrides)
    train(config, out, resume=resume, overwrite=overwrite)
    return Path(out)


class _Callable(types.ModuleType):
    """Once anything imports this module, it is the package's attribute `train`, where a function of that name
    would be replaced: so the module itself is what `liquidgen.train(...)` calls."""

    def __call__(self, *args, **kwargs) -> Path:
        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
