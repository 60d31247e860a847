"""Experiment trackers (`train.log_with`): TensorBoard or Weights & Biases, through accelerate's trackers. A
tracker receives the numbers of every metrics.jsonl record at its step; metrics.jsonl stays the record that the
plots, resuming and the tests read."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .runtime import flatten

def check_tracker(name: str) -> None:
    """A one-line ImportError when the package of tracker `name` is not installed (before a run starts)."""
    if name != "none" and importlib.util.find_spec(name) is None:
        raise ImportError(f"train.log_with: {name} is not installed; pip install {name}, or set train.log_with "
                          f"to none")


class Tracker:
    """An accelerate tracker fed with metrics.jsonl's records (`MetricsLog.tracker`)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def log(self, record: dict) -> None:
        numbers = {k: v for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.tracker.log(numbers, step=record["step"])

    def close(self) -> None:
        self.tracker.finish()


def open_tracker(name: str, out: Path, config: dict, step: int = 0) -> Tracker | None:
    """Tracker `name` for the run in `out`, which (re)starts at `step`, with the run's config as its
    hyperparameters; None for `none`. TensorBoard writes into out/tensorboard; W&B into the project
    liquidgen, as a run named after the folder."""
    if name == "none":
        return None
    check_tracker(name)
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    if name == "tensorboard":
        # purge_step: a resumed run drops the events after its checkpoint, as metrics.jsonl drops its lines
        tracker = TensorBoardTracker("tensorboard", out, purge_step=step or None)
    else:
        tracker = WandBTracker("liquidgen", name=Path(out).resolve().name, dir=str(out))
    tracker.start()
    # trackers take scalars and strings as hyperparameters: lists and mappings go as their text
    tracker.store_init_configuration({k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
                                      for k, v in flatten(config).items()})
    return Tracker(tracker)
