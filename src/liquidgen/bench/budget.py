"""Training runs stopped by the clock, not by a step count: what every equal-GPU-minutes study needs.

A budgeted run trains until `train.minutes` of training steps have passed (the compiling first step not
counted) and writes no samples or evaluations along the way. It checkpoints at the end, every `ckpt_minutes` if
asked, and when stopped by SIGTERM or Ctrl-C (a `timeout`), so a rerun with the same run folder continues to the
(possibly raised) budget instead of starting over.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ..config import Config, load_config
from ..train import train
from .records import read_records


def budget_overrides(minutes: float, device: str | torch.device, *, compiled: bool | None = None,
                     keep_checkpoints: int = 1, ckpt_minutes: float | None = None, log_every: int = 100) -> list[str]:
    """`--set` overrides that turn a config into a budgeted run: `minutes` of training, checkpoints every
    `ckpt_minutes` (None: at the end only), the newest `keep_checkpoints` kept (0: all); `compiled` True compiles
    with CUDA graphs, False runs eager, None leaves the config's choice."""
    return ["train.steps=1000000000", f"train.minutes={minutes}", "train.sample_every=0", "train.eval_every=0",
            "train.ckpt_every=0", f"train.keep_checkpoints={keep_checkpoints}", f"train.log_every={log_every}",
            f"train.device={device}", *([f"train.ckpt_minutes={ckpt_minutes}"] if ckpt_minutes else []),
            *([] if compiled is None else [f"train.compile={compiled}"]),
            *(["train.compile_mode=reduce-overhead"] if compiled else [])]


def budgeted_config(path: str | Path | Config, minutes: float, device: str | torch.device, overrides=(),
                    **options) -> Config:
    """The config at `path` (or a config object) with a user's `overrides`, made a budgeted run (`budget_overrides`,
    which win: the study's budget and checkpoints are what its scores are read at)."""
    return load_config(path, [*overrides, *budget_overrides(minutes, device, **options)])


def train_to_budget(config: Config, run: Path) -> dict:
    """Train `config` into `run` until its `train.minutes`, resuming the run if it exists; the summary of
    `training_summary` plus the wall seconds of this call (compilation and resuming included)."""
    t0 = time.perf_counter()
    torch._dynamo.reset()  # each contender compiles as in a fresh process: no graphs, limits or guards carried over
    train(config, run, resume=Path(run).exists())
    return {**training_summary(run), "wall_s": time.perf_counter() - t0}


def training_summary(run: Path) -> dict:
    """Steps, training seconds, steady training speed (the median img/s of the logged windows after the first
    two, which hold compilation and warm-up), final loss and peak memory of a run, from its metrics.jsonl."""
    log = [r for r in read_records(Path(run) / "metrics.jsonl") if "loss" in r]
    if not log:
        raise ValueError(f"{run}: no training steps logged in metrics.jsonl")
    steady = log[2:] or log
    return {"steps": log[-1]["step"], "train_seconds": log[-1].get("train_seconds"),
            "train_img_s": statistics.median(r["images_per_s"] for r in steady), "loss": log[-1]["loss"],
            "peak_gb": max((r.get("max_memory_gb", 0.0) for r in log), default=0.0)}
