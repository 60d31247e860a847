"""What every training loop needs around its steps: seeding, precision, stop requests, resuming from the
newest readable checkpoint, a guard against non-finite steps, and the metrics log. Used by `train.py` and
`train_autoencoder.py`."""
from __future__ import annotations

import contextlib
import json
import random
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CorruptCheckpoint, check_kind, list_checkpoints, read_files, run_kind, set_aside


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compile_options(mode: str, inductor: dict | None = None) -> dict:
    """torch.compile's keyword arguments for `mode` with the Inductor settings `inductor` on top (e.g.
    config.COMPILE_TUNINGS[name]): torch.compile takes a mode or an options dict, not both, so settings spell the mode
    out as its options (what the mode itself applies). Settings given per compile, not set in Inductor's global
    config, hold for that compile alone: nothing leaks into the next model compiled in the process."""
    if not inductor:
        return {"mode": mode}
    from torch._inductor import list_mode_options

    return {"options": {**list_mode_options(mode, False), **inductor}}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked for (`auto`: on CUDA only, where it is fast and stable)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def resume_newest(run_dir: Path, restore: Callable[[Path], dict], say: Callable[[str], None] = print,
                  move_aside: bool = True) -> tuple[Path, dict] | None:
    """`restore(checkpoint)` from the newest checkpoint of `run_dir` that reads, falling back one at a time
    past unreadable ones (a truncated file): (checkpoint, what `restore` returned), or None when the run has
    no checkpoint. `restore` must change nothing when it raises CorruptCheckpoint. Once one restores, the
    unreadable ones passed over are set aside (`checkpoint.set_aside`) where `move_aside` (one process of
    several does it); when none reads, all stay, so that a second --resume does not start the run afresh."""
    existing = list_checkpoints(run_dir)
    skipped = []
    for ckpt in reversed(existing):
        try:
            found = ckpt, restore(ckpt)
        except CorruptCheckpoint as e:
            say(f"warning: {e}; trying the previous checkpoint")
            skipped.append(ckpt)
            continue
        for bad in skipped if move_aside else []:
            say(f"warning: renamed the unreadable {bad} to {set_aside(bad).name}, so that neither pruning nor "
                f"the run's newest checkpoint counts it")
        return found
    if existing:
        raise CorruptCheckpoint(f"none of the {len(existing)} checkpoints in {run_dir} is readable")
    return None


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}, leaves as JSON would hold them (tuples as lists)."""
    out = {}
    for key, value in json.loads(json.dumps(tree)).items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changes(saved: dict, now: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, value now) where they differ; keys a checkpoint of an older version lacks are not
    counted as changed."""
    saved, now = flatten(saved), flatten(now)
    return [(k, saved[k], now.get(k)) for k in saved if saved[k] != now.get(k)]


def check_resume(ckpt: Path, config: dict, spec: dict, fixed: tuple[str, ...],
                 say: Callable[[str], None] = print) -> None:
    """Before `ckpt` is restored: the model it holds (its model.json) must be the one this run builds
    (`spec`), and the config keys under the sections `fixed` must be unchanged, else a ValueError says what
    differs (not a CorruptCheckpoint: an older checkpoint differs the same way). Other changed settings
    (more steps, another learning rate) are allowed and listed."""
    files = read_files(ckpt, ("config.json", "model.json"))
    check_kind(ckpt, files["model.json"], run_kind(spec), "resume it with the command that made it, or give this run "
               "another --out")
    changes = _changes(files["config.json"], config)
    locked = [c for c in changes if c[0].split(".")[0] in fixed] or _changes(files["model.json"], spec)
    if locked:
        listed = ", ".join(f"{k} ({old!r} there, {new!r} now)" for k, old, new in locked[:4])
        raise ValueError(f"--resume: {ckpt} differs from this run in {listed}: a run keeps its "
                         f"{' and '.join(fixed)} settings; resume without the change, or start a new run "
                         f"(another --out, or --overwrite)")
    if changes:
        say("note: resuming with changed settings: "
            + ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes[:8]))


class NonFiniteGuard:
    """Counts steps skipped for a non-finite gradient; a streak of `limit` of them stops the run, since
    a diverged run only wastes the GPU. A bad batch must never reach the weights or the EMA. The counts
    live on the device, so recording a step needs no host sync; `check` reads them."""

    def __init__(self, limit: int, total: int = 0, device: torch.device | str = "cpu"):
        self.limit = limit
        self.total = torch.tensor(total, device=device)
        self.streak = torch.zeros((), dtype=torch.long, device=device)
        self.tripped = torch.full((), -1, dtype=torch.long, device=device)  # step at which a streak hit the limit

    def __call__(self, taken: torch.Tensor, step: int) -> None:
        """Record step `step` (0-based), taken or skipped (`taken`: a bool tensor)."""
        bad = (~taken).long()
        self.total += bad
        self.streak = (self.streak + 1) * bad
        self.tripped = torch.where((self.tripped < 0) & (self.streak >= self.limit), step + 1, self.tripped)

    def check(self) -> int:
        """The number of skipped steps so far; raises FloatingPointError if a streak reached the limit."""
        if (tripped := int(self.tripped)) >= 0:
            raise FloatingPointError(f"{self.limit} consecutive steps with non-finite gradients (all skipped), up "
                                     f"to step {tripped}; lower optim.lr or check the data, then --resume from "
                                     f"the newest checkpoint")
        return int(self.total)


def loss_text(record: dict, steps: int) -> str:
    """A log line's loss; a window of `steps` that were all skipped (non-finite) has none, and says so."""
    return f"{record['loss']:.4f}" if "loss" in record else f"n/a (all {steps} step{'s' * (steps != 1)} skipped)"


class MetricsLog:
    """metrics.jsonl: one JSON object per line, each with its `step`. A `tracker` (`trackers.open_tracker`:
    TensorBoard, W&B) gets each record too."""

    def __init__(self, path: Path, tracker=None):
        self.path = Path(path)
        self.tracker = tracker

    def append(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self) -> None:
        """Flush and close the tracker, if any (the file is closed after every record)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def restart(self, step: int) -> None:
        """Keep what was logged up to `step` (the checkpoint a run resumes from; 0: nothing), so the curves
        have no repeats. A line cut off by a kill ends what is kept."""
        keep = []
        if step and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        keep.append(line)
                except (ValueError, KeyError):
                    break
        self.path.write_text("".join(line + "\n" for line in keep))
