"""A run folder has one owner. `claim(folder, ...)` is held for the life of a training run (or a
precompute job): it refuses a folder that already holds a run unless the caller asked to continue it
(`--resume`) or to replace it (`--overwrite`, which deletes what such a run writes and nothing else),
and it holds `folder/.lock` so that a second process cannot write into the same folder. The lock is an
OS advisory lock (flock): the kernel releases it when its process dies, even by SIGKILL, so a lock file
left behind is recognised as stale."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .checkpoint import list_checkpoints

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file is created exclusively instead
    fcntl = None

LOCK = ".lock"
# What `train` and `train-autoencoder` write into a run folder; `--overwrite` deletes these and nothing else.
RUN_FILES = ("checkpoints", "config.yaml", "metrics.jsonl", "samples", "loss.png", "eval.png", "tensorboard", "wandb")
# What marks a precomputed dataset (precompute.DATASET_FILES); neither kind of folder takes the other.
DATASET_MARK = ("manifest.json",)
RUN_MARK = ("checkpoints", "config.yaml", "metrics.jsonl")


def default_folder(config: str | Path) -> Path:
    """Where the run of a config file goes when no folder is given: runs/<the file's name>."""
    return Path("runs") / Path(config).stem


class RunFolderError(ValueError):
    """The folder is someone else's: another run's, or another process's."""


def describe(folder: Path, owned: Sequence[str]) -> str:
    """What of a run is in `folder`, for messages: '3 checkpoints (newest step-000600), metrics.jsonl'."""
    ckpts = list_checkpoints(folder)
    parts = [f"{len(ckpts)} checkpoint{'s' * (len(ckpts) != 1)} (newest {ckpts[-1].name})"] if ckpts else []
    parts += [path.name for path in _entries(folder, owned) if path.name != "checkpoints"][:6]
    return ", ".join(parts)


class RunLock:
    """`folder/.lock`, naming its holder (pid, host, start time, command) for the messages of others."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return (f"process {info['pid']} on {info['host']} (started {info['started']}: "
                    f"{info['command']})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def in_use(self) -> RunFolderError:
        return RunFolderError(f"{self.path.parent} is in use by {self.holder()}: wait for it to finish or stop "
                              f"it, or choose another output folder")

    def check(self) -> None:
        """Raise RunFolderError if a live process holds the lock; reads only."""
        if fcntl is None or not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self.in_use() from None
        finally:
            os.close(fd)  # closing drops a lock taken here

    def acquire(self, say: Callable[[str], None]) -> None:
        """Take the lock or raise RunFolderError naming its holder; a stale lock is reported and taken over."""
        stale = self.path.exists() and self.holder()
        if fcntl is None:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise RunFolderError(f"{self.path.parent} is in use by {stale}; if that process has ended, "
                                     f"delete {self.path} and start again") from None
            stale = False
        else:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                self.fd = None
                raise self.in_use() from None
        if stale:
            say(f"note: {self.path} was left by {stale}, which has ended (killed?); taking it over")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]}
        os.ftruncate(self.fd, 0)
        os.write(self.fd, json.dumps(info).encode())

    def release(self) -> None:
        if self.fd is None:
            return
        # Unlink while still holding the lock, so no process can take it between the two steps and lose it.
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def claim(folder: str | Path, *, resume: bool, overwrite: bool, owned: Sequence[str] = RUN_FILES,
          foreign: Sequence[str] = DATASET_MARK, main: bool = True, say: Callable[[str], None] = print
          ) -> Iterator[Path]:
    """Own `folder` while the block runs. A folder holding any of `owned` (names or glob patterns) is
    refused unless `resume` (continue it) or `overwrite` (delete those entries first); one holding any of
    `foreign` (what the other kind of job writes) is refused whatever was asked. A refusal changes
    nothing on disk. Only the main process of a multi-process run locks and deletes; every process checks,
    so all refuse alike."""
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder and --overwrite deletes it: give one")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder: choose another output folder")
    if found := _entries(folder, foreign):
        kind = "a precomputed dataset" if foreign == DATASET_MARK else "a training run"
        raise RunFolderError(f"{folder} holds {kind} ({', '.join(p.name for p in found)}); give this job a "
                             f"folder of its own")
    lock = RunLock(folder)
    if main:
        lock.check()  # a live run's folder is named as in use, whatever it holds
    _check(folder, resume, overwrite, owned)  # refused before anything is created
    if not main:
        yield folder
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock.acquire(say)
    try:
        _check(folder, resume, overwrite, owned)  # again, now that no other process can write here
        if overwrite:
            for path in _entries(folder, owned):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        yield folder
    finally:
        lock.release()
        if created and not any(folder.iterdir()):  # a run that failed before writing anything leaves no trace
            folder.rmdir()


def _entries(folder: Path, owned: Sequence[str]) -> list[Path]:
    return [path for pattern in owned for path in sorted(folder.glob(pattern))]


def _check(folder: Path, resume: bool, overwrite: bool, owned: Sequence[str]) -> None:
    if resume or overwrite or not _entries(folder, owned):
        return
    raise RunFolderError(f"{folder} already holds a run ({describe(folder, owned)}): continue it with --resume, "
                         f"replace it with --overwrite, or choose another output folder")
