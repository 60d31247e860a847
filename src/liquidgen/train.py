"""The training loop: one function, `train(config, out_dir)`.

Per optimizer step: `grad_accum` micro-batches (labels dropped per sample to the null class for
CFG), bf16 autocast on CUDA, global gradient clipping, AdamW, EMA. Steps whose gradient is not
finite are skipped and counted. Writes into `out_dir`:
    config.yaml, metrics.jsonl, loss.png, samples/step-XXXXXX.png, checkpoints/step-XXXXXX/
Under `accelerate launch` / `torchrun` the same function runs once per GPU (see `distributed.py`).
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .config import Config
from .data import BatchSampler, load_dataset
from .distributed import Dist, part_seed, setup
from .ema import EMA
from .inpainting import concat_input, random_masks
from .models.base import null_token_mask
from .objectives import build_objective
from .optim import make_optimizer, make_scheduler
from .plots import plot_metrics_jsonl, save_grid
from .precompute import LatentSpace
from .samplers import sample

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for (`auto`: on CUDA only, where it is fast and stable)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    the update, LR schedule and EMA - all skipped when the gradient is not finite. Returns (this
    process's loss, grad norm, whether the step was taken). With DDP the gradients, hence the norm and
    the decision to skip, are the same on every process."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = accumulate_gradients(model, objective, batches, step, config.train.grad_accum, label_dropout,
                                config.train.caption_dropout, amp, dist, config.train.seed)
    clip = config.optim.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
    finite = bool(torch.isfinite(grad_norm))
    if finite:
        optimizer.step()
        scheduler.step()
        ema.update(model)
    return loss, grad_norm, finite


def grid_labels(num_classes: int, per_class: int, n: int, device) -> tuple[torch.Tensor | None, int]:
    """Labels for a class grid (one row per class) and the row length."""
    if num_classes == 0:
        return None, int(math.ceil(math.sqrt(n)))
    return torch.arange(num_classes, device=device).repeat_interleave(per_class), per_class


GRID_PROMPTS = 8  # rows of a text model's training grids


def grid_conditions(data, num_classes: int, per_class: int, n: int, device
                    ) -> tuple[torch.Tensor | None, dict, int, list[str]]:
    """What training grids are conditioned on: (labels, {"context": ...} or {}, row length, row captions).
    Text datasets: one row per distinct caption among the first ones (with their labels, if any), using
    the stored embeddings, so no text encoder is needed while training. Otherwise a class grid."""
    if data.context is None:
        y, nrow = grid_labels(num_classes, per_class, n, device)
        return y, {}, nrow, []
    first: dict[str, int] = {}
    for i, caption in enumerate(data.captions or []):
        if len(first) == GRID_PROMPTS:
            break
        first.setdefault(caption, i)
    rows = torch.tensor(list(first.values()) or [0]).repeat_interleave(per_class)
    y = data.labels[rows].to(device) if num_classes else None
    cond = {"context": data.context[rows].float().to(device)}
    if data.context_mask is not None:
        cond["context_mask"] = data.context_mask[rows].to(device)
    return y, cond, per_class, list(first)


class StopRequest:
    """SIGTERM (a scheduler's preemption, `kill`) and SIGINT (Ctrl-C) ask the loop to finish its step,
    save a checkpoint and return, instead of dying mid-step with everything since the last save lost.
    A second signal of the same kind acts as usual. Only the main thread can install handlers."""

    def __init__(self):
        self.signal: str | None = None
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): keep the default behaviour
                pass

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(config: Config, out_dir: str | Path, resume: bool = False) -> Path:
    """Train per `config`, writing everything into `out_dir`. With `resume`, continue from the newest
    checkpoint in `out_dir`. Returns the final checkpoint folder."""
    tc = config.train
    out_dir = Path(out_dir)
    dist, device = setup(tc.device)
    seed_everything(tc.seed)  # the same initial weights in every process
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # max_memory_gb is this run's, not the process's

    data = load_dataset(config.data.name, config.data.root, config.data.image_size, limit=config.data.limit,
                        skip_bad_images=config.data.skip_bad_images)
    space = getattr(data, "space", None) or LatentSpace(None, data.size)
    context_dim = 0 if data.context is None else data.context.shape[-1]
    class_names = data.class_names if config.data.labels else []
    spec = ckpt_io.model_spec(config, data.channels, data.size, class_names, context_dim=context_dim,
                              space=None if space.pixels else space.state(),
                              text_encoder=getattr(data, "text_encoder", None),
                              text_tokens=getattr(data, "text_tokens", 0))
    model = ckpt_io.build_from_spec(spec).to(device)
    if tc.init_from:
        ckpt_io.init_weights(model, tc.init_from)
    objective = build_objective(config.objective.name, **config.objective.options)
    if tc.batch_size % (tc.grad_accum * dist.world):
        raise ValueError(f"train.batch_size {tc.batch_size} (the global batch) must be divisible by train.grad_accum "
                         f"{tc.grad_accum} x {dist.world} processes")
    batches = BatchSampler(data, tc.batch_size, seed=tc.seed, device=device, hflip=config.data.hflip)
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config.optim, tc.steps)
    if tc.compile:
        model.compile(mode=tc.compile_mode)  # in place: parameter names, the EMA copy and checkpoints are unaffected

    metrics_path = out_dir / "metrics.jsonl"
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "samples").mkdir(exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    start, train_seconds = 0, 0.0
    existing = ckpt_io.list_checkpoints(out_dir) if resume else []
    if existing:
        for ckpt in reversed(existing):  # newest first; an unreadable one falls back to the one before
            try:
                state = ckpt_io.load_training_state(ckpt, model, ema.model, optimizer, scheduler)
                break
            except ckpt_io.CorruptCheckpoint as e:
                if dist.main:
                    print(f"warning: {e}; trying the previous checkpoint")
        else:
            raise ckpt_io.CorruptCheckpoint(f"none of the {len(existing)} checkpoints in {out_dir} is readable")
        start, ema.updates = state["step"], state["ema_updates"]
        train_seconds = state.get("train_seconds", 0.0)
        if dist.main:
            ckpt_io.truncate_metrics(metrics_path, start)
            print(f"resumed from {ckpt} at step {start}")
            if state.get("processes", 1) != dist.world:
                print(f"note: saved by {state.get('processes', 1)} processes, resumed by {dist.world}: the same "
                      f"batches follow, but the noise drawn for them differs from an uninterrupted run")
    elif metrics_path.exists() and dist.main:
        metrics_path.unlink()
    label_dropout = tc.label_dropout if class_names else None

    def amp():
        return autocast(device, tc.precision)

    # What the training step calls: DDP with several processes, after a probe step on the bare model.
    net = dist.wrap(model, lambda bare: accumulate_gradients(bare, objective, batches, start, tc.grad_accum,
                                                              label_dropout, tc.caption_dropout, amp, dist, tc.seed))

    # Fixed noise and conditions, so successive grids show the same samples improving.
    g = torch.Generator().manual_seed(tc.seed + 1)
    grid_y, grid_cond, grid_row, prompts = grid_conditions(data, len(class_names), config.sample.per_class,
                                                              config.sample.n, device)
    n_grid = len(grid_y) if grid_y is not None else len(grid_cond.get("context", [None] * config.sample.n))
    grid_noise = torch.randn(n_grid, data.channels, data.size, data.size, generator=g).to(device)
    if prompts and dist.main:
        (out_dir / "samples" / "prompts.txt").write_text("".join(f"row {i}: {p}\n" for i, p in enumerate(prompts)))

    def save_samples(step: int) -> None:
        def draw(rows: slice) -> torch.Tensor:
            with autocast(device, tc.precision):
                return sample(ema.model, objective.prediction, grid_noise[rows],
                              None if grid_y is None else grid_y[rows], config.sample.steps, config.sample.cfg,
                              config.sample.sampler, grid=config.sample.grid or None,
                              **{k: v[rows] for k, v in grid_cond.items()})

        x = dist.map_rows(draw, len(grid_noise))
        if dist.main:
            save_grid(space.decode(x), out_dir / "samples" / f"step-{step:06d}.png", nrow=grid_row)

    evaluator = None
    if tc.eval_every:
        if not tc.eval_classifier:
            raise ValueError("train.eval_every needs train.eval_classifier (make one with "
                             "`liquidgen eval fit-classifier`)")
        from .evaluation.during_training import TrainingEval

        evaluator = TrainingEval(tc.eval_classifier, data, space, tc.eval_samples, tc.seed, device)

    def evaluate(step: int) -> None:
        def generate(noise, labels):
            def draw(rows: slice) -> torch.Tensor:
                with autocast(device, tc.precision):
                    return sample(ema.model, objective.prediction, noise[rows],
                                  labels[rows] if class_names else None, tc.eval_steps or config.sample.steps,
                                  config.sample.cfg, config.sample.sampler, grid=config.sample.grid or None)

            return dist.map_rows(draw, len(noise))

        record = {"step": step, **evaluator(generate)}
        if not dist.main:
            return
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        plot_metrics_jsonl(metrics_path, out_dir / "eval.png", keys=("eval_fd",), logy=False, smooth=0.0)
        if bar.disable:
            print(f"step {step}: eval FD {record['eval_fd']:.2f}"
                  + (f", acc {record['eval_acc']:.3f}" if "eval_acc" in record else "")
                  + f" ({record['eval_seconds']:.1f} s)", flush=True)

    ema_checks = []

    def save(step: int, bad_total: int) -> None:
        # Every process takes the same steps, so its EMA must be bit-identical to process 0's, which is saved.
        if not dist.identical(ema.model, device):
            raise RuntimeError(f"step {step}: the EMA weights differ between processes; the run is not "
                               f"data-parallel any more (a bug: please report it)")
        ema_checks.append(step)
        if dist.main:
            ckpt_io.save_checkpoint(out_dir, step, config, spec, model, ema.model, optimizer, scheduler,
                                    extra={"ema_updates": ema.updates, "skipped_steps": bad_total,
                                           "train_seconds": train_seconds, "processes": dist.world},
                                    keep=tc.keep_checkpoints, keep_every=tc.keep_every)

    kind = "images" if space.pixels else f"{space.spec['name']} latents"
    text = f", text context {context_dim}-d" if context_dim else ""
    where = f"on {dist.world} processes ({device.type}), {tc.batch_size // dist.world} images each per step" \
        if dist.world > 1 else f"on {device}"
    if dist.main:
        print(f"{config.model.name}-{config.model.preset}: {model.num_params() / 1e6:.2f}M parameters, "
              f"{len(data)} {kind} {data.channels}x{data.size}x{data.size}, {len(class_names)} classes{text}, {where}")
    loss_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    logged, bad_run, bad_total = 0, 0, 0
    window_seconds = 0.0  # time in training steps since the last log line: throughput excludes grids, evals, saves
    out_of_time = tc.minutes > 0 and train_seconds >= 60 * tc.minutes
    timed_every = 60 * tc.ckpt_minutes
    next_timed = (math.floor(train_seconds / timed_every) + 1) * timed_every if timed_every else math.inf
    stop = StopRequest()
    # disable=None: a bar on a terminal; in a log file (no TTY) one line per log interval instead.
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="train", dynamic_ncols=True,
               disable=None if dist.main else True)
    try:
        for step in bar:
            if out_of_time:
                break
            t_step = time.perf_counter()
            step_loss, grad_norm, finite = train_step(net, objective, batches, step, optimizer, scheduler, ema,
                                                      config, label_dropout, amp, dist)
            if finite:
                bad_run = 0
                loss_sum += step_loss
                norm_sum += grad_norm.detach()
                logged += 1
            else:
                # A bad batch must not poison the weights or the EMA: skip, count, give up after a streak.
                bad_run += 1
                bad_total += 1
                if bad_run >= tc.max_bad_steps:
                    raise FloatingPointError(f"{bad_run} consecutive steps with non-finite gradients (all skipped), up "
                                             f"to step {step + 1}; lower optim.lr or check the data, then --resume "
                                             f"from the newest checkpoint")
            done = step + 1
            if (tc.minutes or tc.ckpt_minutes) and device.type == "cuda":
                torch.cuda.synchronize(device)  # the budget is GPU time, not the time to queue kernels
            step_seconds = time.perf_counter() - t_step
            window_seconds += step_seconds
            if step > start:  # the first step after a (re)start compiles and warms up: not budgeted
                train_seconds += step_seconds
            out_of_time = tc.minutes > 0 and train_seconds >= 60 * tc.minutes
            timed = train_seconds >= next_timed
            # All processes must stop and save at the same step: a signal may reach only some of them,
            # and the clocks are process 0's.
            stopping, out_of_time, timed = dist.any(stop.signal is not None, out_of_time and dist.main,
                                                    timed and dist.main, device=device)
            last = done == tc.steps or out_of_time or stopping
            if done % tc.log_every == 0 or last:
                n = max(logged, 1)
                record = {"step": done, "loss": dist.mean(loss_sum / n).item(), "grad_norm": (norm_sum / n).item(),
                          "lr": scheduler.get_last_lr()[0], "images_per_s": logged * tc.batch_size / window_seconds,
                          "skipped_steps": bad_total, "train_seconds": train_seconds}
                if device.type == "cuda":
                    record["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                if dist.main:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
                if bar.disable and dist.main:
                    print(f"step {done}/{tc.steps}  loss {record['loss']:.4f}  {record['images_per_s']:.0f} img/s",
                          flush=True)
                loss_sum.zero_(), norm_sum.zero_()
                logged, window_seconds = 0, 0.0
            if tc.sample_every and (done % tc.sample_every == 0 or last):
                save_samples(done)
                if dist.main:
                    plot_metrics_jsonl(metrics_path, out_dir / "loss.png")
            if evaluator is not None and (done % tc.eval_every == 0 or last):
                evaluate(done)
            if timed:
                next_timed = (math.floor(train_seconds / timed_every) + 1) * timed_every
            if (tc.ckpt_every and done % tc.ckpt_every == 0) or last or timed:
                save(done, bad_total)
            if stopping:
                if dist.main:
                    print(f"\nstopped by {stop.signal or 'a signal to another process'} at step {done}: "
                          f"checkpoint saved; continue with --resume", flush=True)
                break
        bar.close()
    finally:
        stop.restore()
    if dist.main and metrics_path.exists():
        plot_metrics_jsonl(metrics_path, out_dir / "loss.png")
    if dist.main and dist.world > 1 and ema_checks:
        print(f"EMA weights bit-identical on all {dist.world} processes at each checkpoint (steps "
              f"{', '.join(map(str, ema_checks))})")
    dist.barrier()  # the final checkpoint is complete before any process returns it
    return ckpt_io.resolve(out_dir)

