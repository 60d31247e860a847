"""Checkpoints: a folder per step, written atomically, holding only safe formats.

    run/checkpoints/step-001000/
        config.json          the run's full configuration
        model.json           what rebuilds the backbone: name, preset, options, input geometry, classes
        model.safetensors    live weights
        ema.safetensors      EMA weights (what `sample` uses by default)
        optimizer.safetensors + state.json   optimizer tensors; step, RNG states, scalars

Nothing is ever unpickled: tensors go through safetensors, everything else through JSON.
A checkpoint is written to `step-XXXXXX.tmp/` and renamed into place, so a crash mid-write
never leaves a half-written folder under a final name.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def checkpoint_step(ckpt: Path) -> int:
    """The training step of a checkpoint folder (`step_dir`'s name)."""
    return int(STEP_DIR.match(Path(ckpt).name).group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)] if root.is_dir() else []
    return sorted(found, key=checkpoint_step)


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or the newest checkpoint of a run folder."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"no checkpoint at {path} (expected a step-XXXXXX folder or a run folder "
                                f"with checkpoints/step-XXXXXX inside)")
    return found[-1]


def set_aside(ckpt: Path) -> Path:
    """Rename an unreadable checkpoint to `step-XXXXXX.unreadable` (`.unreadable.2`, ... if taken), which
    `list_checkpoints` does not match: pruning would count it among the newest it keeps and delete good ones
    instead, and `resolve` would name it as the run's newest. Kept rather than deleted, to see what broke."""
    ckpt = Path(ckpt)
    target, n = ckpt.with_name(f"{ckpt.name}.unreadable"), 1
    while target.exists():
        n += 1
        target = ckpt.with_name(f"{ckpt.name}.unreadable.{n}")
    ckpt.rename(target)
    return target


def save_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` to `path` through a temporary file beside it, renamed into place: a reader never sees a
    half-written file, and a failure (a full disk, a folder at `path`) leaves neither it nor the temporary file.
    The temporary file is this process's own: two processes filling one cache (two `eval`s fitting the same
    reference classifier) each write whole, and the last rename wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful rename
    return path


def _rng_state() -> tuple[dict, dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    plain = {"python": _jsonable(random.getstate()),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, plain


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _set_rng_state(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tuples(plain["python"]))
    kind, keys, *rest = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


def _split_optimizer(state: dict) -> tuple[dict, dict]:
    """Optimizer state_dict -> (tensors for safetensors, JSON-able remainder)."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict, plain: dict) -> dict:
    state: dict = {}
    for flat, v in [*tensors.items(), *plain["scalars"].items()]:
        idx, k = flat.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in plain["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: Path, step: int, config, spec: dict, model: torch.nn.Module,
                    ema: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                    extra: dict | None = None, keep: int = 0, keep_every: int = 0,
                    more: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write checkpoint `step` atomically; then delete all but the newest `keep` (0: keep all), sparing
    steps that are multiples of `keep_every`. `config` is anything with `to_dict()`; `more` holds further
    tensor files ({name: tensors} -> name.safetensors), e.g. a discriminator."""
    final = step_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, config, spec, model, ema, optimizer, scheduler, step, extra, more or {})
    except (OSError, SafetensorError) as e:  # a full disk, a quota, a vanished mount
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(run_dir)
        kept = f"the newest complete checkpoint, {previous[-1]}, is intact" if previous else "no earlier checkpoint"
        raise OSError(getattr(e, "errno", None), f"could not write checkpoint {final.name} in {final.parent} "
                      f"({getattr(e, 'strerror', None) or e}); {kept}") from e
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            if not (keep_every and checkpoint_step(old) % keep_every == 0):
                shutil.rmtree(old)
    return final


def _write(tmp: Path, config, spec: dict, model, ema, optimizer, scheduler, step: int,
           extra: dict | None, more: dict[str, dict[str, torch.Tensor]]) -> None:
    tmp.mkdir(parents=True)
    for name, tensors in more.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / f"{name}.safetensors")
    (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (tmp / "model.json").write_text(json.dumps(spec, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    rng_tensors, rng_plain = _rng_state()
    state = {"step": step, "rng": rng_plain, **(extra or {})}
    if optimizer is not None:
        opt_tensors, opt_plain = _split_optimizer(optimizer.state_dict())
        save_file({**opt_tensors, **rng_tensors}, tmp / "optimizer.safetensors")
        state["optimizer"] = opt_plain
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    (tmp / "state.json").write_text(json.dumps(state))


def read_weight_file(path: Path, hint: str) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a user-given .safetensors or .pth file (published weights: TAESD,
    Inception). .pth files go through torch.load(weights_only=True), which refuses arbitrary objects.
    Anything else is a ValueError naming the file, followed by `hint` (what was expected)."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle of something other than tensors
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"could not read {path}: {type(e).__name__}: {first}; {hint}") from e
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path} is not a state dict (a mapping of parameter names to tensors) but a "
                         f"{type(state).__name__}; {hint}")
    return dict(state)


def state_dict_problems(own: dict, state: dict) -> str:
    """The first mismatches between a module's state dict and a file's ('' when they match): missing and
    unexpected names, and wrong shapes, so an error can say what is wrong with a weight file."""
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in own.items() if k in state and state[k].shape != v.shape]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


def check_fits(module: nn.Module, state: dict, what: str) -> None:
    """Raise ValueError naming the mismatches when `state` cannot be loaded into `module` exactly, before
    any tensor is copied (load_state_dict copies the tensors that fit before it raises)."""
    problems = state_dict_problems(module.state_dict(), state)
    if problems:
        raise ValueError(f"{what} does not fit the {type(module).__name__} built for it: {problems}")


def module_and_optimizer_files(name: str, module: nn.Module, optimizer: torch.optim.Optimizer
                                ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """A second trained module (a GAN's discriminator) for `save_checkpoint`: (`more` tensor files: its
    weights and its optimizer's tensors, the optimizer's JSON-able rest for state.json)."""
    tensors, plain = _split_optimizer(optimizer.state_dict())
    return {name: module.state_dict(), f"{name}-optimizer": tensors}, plain


def load_module_and_optimizer(ckpt: Path, name: str, module: nn.Module, optimizer: torch.optim.Optimizer,
                              plain: dict) -> None:
    """Restore what `module_and_optimizer_files` saved; `plain` is its entry in state.json."""
    files = read_files(ckpt, (f"{name}.safetensors", f"{name}-optimizer.safetensors"))
    module.load_state_dict(files[f"{name}.safetensors"])
    optimizer.load_state_dict(_join_optimizer(files[f"{name}-optimizer.safetensors"], plain))


# The two kinds of run, each made by its own command; an autoencoder's model.json names it "autoencoder".
RUN_KINDS = {"generator": "a generator run (made by `liquidgen train`)",
             "autoencoder": "an autoencoder run (made by `liquidgen train-autoencoder`)"}


def run_kind(model_json) -> str:
    """The kind of run (a key of RUN_KINDS) whose checkpoint holds this model.json."""
    return "autoencoder" if isinstance(model_json, dict) and model_json.get("name") == "autoencoder" else "generator"


def check_kind(ckpt: Path, model_json, expected: str, instead: str) -> None:
    """A ValueError naming both kinds, and what to do `instead`, when the checkpoint `ckpt` (its parsed model.json)
    is not of kind `expected`: the other kind's files would fail later, with a message about their contents."""
    found = run_kind(model_json)
    if found != expected:
        raise ValueError(f"{ckpt} is a checkpoint of {RUN_KINDS[found]}, not of {RUN_KINDS[expected]}; {instead}")


class CorruptCheckpoint(ValueError):
    """A checkpoint file is missing, truncated or not what it should be."""


def read_files(ckpt: Path, names: tuple[str, ...]) -> dict:
    """The named files of a checkpoint (.json parsed, .safetensors as tensor dicts), all read before
    anything is restored, so that an unreadable checkpoint changes nothing."""
    out = {}
    for name in names:
        path = Path(ckpt) / name
        try:
            out[name] = json.loads(path.read_text()) if name.endswith(".json") else load_file(path)
        except (OSError, ValueError, SafetensorError) as e:
            raise CorruptCheckpoint(f"checkpoint {ckpt} is unreadable: {name}: {e}") from None
    return out


def load_training_state(ckpt: Path, model, ema, optimizer, scheduler) -> dict:
    """Restore everything `save_checkpoint` wrote into live objects; returns state.json's content.
    Raises CorruptCheckpoint, with nothing restored, when a file cannot be read."""
    ckpt = Path(ckpt)
    files = read_files(ckpt, ("state.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors"))
    state = files["state.json"]
    check_fits(model, files["model.safetensors"], f"{ckpt}/model.safetensors")
    check_fits(ema, files["ema.safetensors"], f"{ckpt}/ema.safetensors")
    model.load_state_dict(files["model.safetensors"])
    ema.load_state_dict(files["ema.safetensors"])
    tensors = files["optimizer.safetensors"]
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    opt = {k: v for k, v in tensors.items() if not k.startswith("rng.")}
    # The run's config, not the checkpoint, sets the hyperparameters a resumed run continues with (`--resume`
    # announces a changed lr, betas or weight decay): loading would bring back the old ones with the moments.
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    base_lrs = list(scheduler.base_lrs) if scheduler is not None else None
    optimizer.load_state_dict(_join_optimizer(opt, state["optimizer"]))
    for group, fresh in zip(optimizer.param_groups, settings):
        group.update(fresh)
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
        scheduler.base_lrs = base_lrs
        for group, base, factor in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas):
            group["initial_lr"], group["lr"] = base, base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    _set_rng_state(rng, state["rng"])
    return state
