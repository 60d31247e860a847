"""Devices and processes: one process per GPU through Hugging Face accelerate over torch.distributed.

`accelerate launch` or `torchrun` starts the same `liquidgen` command once per GPU; their environment
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR) is all that says a run is distributed. How the work is split:
- data: each optimizer step's global batch (`train.batch_size`) falls into world x grad_accum equal parts,
  and process r takes parts r, r + world, ... (`BatchSampler`), so a run sees the same images whatever the
  number of processes, and noise is drawn per part (`part_seed`), not per process;
- gradients: averaged over processes by DDP (accelerate's `prepare_model`). Every process then applies the
  same update and the same EMA step to the same weights, so weights and EMA stay identical without a
  broadcast; `identical` checks that at every checkpoint;
- metrics: the loss is averaged over processes; only process 0 prints, plots and writes files;
- sampling and evaluation: rows split across processes and gathered (`Dist.map_rows`).
DDP only: the models here fit one GPU, so FSDP's sharding would buy nothing but complexity.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import math
import os
import re
import sys
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

# cpu:N and mps:N are what str() of a launched process's torch.device can give back
DEVICE_NAMES = re.compile(r"auto|(cpu|cuda|mps)(:\d+)?")


def check_device_name(name: str) -> str:
    """`name` if it is one of the device names liquidgen runs on, else a ValueError saying which those are
    (torch.device would take more - meta, xpu, hpu - that nothing here is built or tested for)."""
    if not isinstance(name, str) or not DEVICE_NAMES.fullmatch(name):
        raise ValueError(f"{name!r} is not a device; expected auto, cpu, cuda, cuda:N or mps")
    return name


def pick_device(name: str = "auto", source: str = "train.device") -> torch.device:
    """The torch device `name` (auto: cuda when there is a GPU, else cpu), or a one-line ValueError naming
    `source` (the flag or config key it came from) when this machine or torch build cannot run on it."""
    try:
        check_device_name(name)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    problem = unavailable(device)
    if problem:
        fix = f"{source} cpu" if source.startswith("-") else f"--set {source}=cpu"
        raise ValueError(f"{source} {name}: {problem}; use {fix} (or auto)")
    return device


def unavailable(device: torch.device) -> str | None:
    """Why this process cannot run on `device`, or None if it can."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and torch.version.hip is None:
                return f"this torch {torch.__version__} is a build without CUDA"
            return f"torch {torch.__version__} finds no usable GPU (driver, CUDA_VISIBLE_DEVICES?)"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine shows {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"MPS is not available (it needs Apple silicon and a macOS build of torch; this is {torch.__version__})"
    return None


def launched_world() -> int:
    """How many processes the launcher started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def main_process() -> bool:
    """Whether this is process 0 (or the only one): the one that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def part_seed(seed: int, step: int, part: int) -> int:
    """The RNG seed of micro-batch `part` of optimizer step `step`: the noise of a training step is a
    function of (seed, step, part) alone, so a resumed run draws exactly what an uninterrupted one would,
    at any process count, and nothing that runs between steps (grids, evaluation) can shift it."""
    return int(np.random.SeedSequence([seed, step, part]).generate_state(1, np.uint64)[0] >> 1)


class Replicated:
    """A model seen through its DDP replica: calls that build a graph for backward go through DDP (whose
    hooks average the gradients); calls without gradients (samplers, a consistency objective's tangent
    under no_grad) and attribute lookups (`null_class`, `logvar`) go to the model itself."""

    def __init__(self, module: nn.Module, ddp: nn.Module):
        self.module, self.ddp = module, ddp

    def __call__(self, *args, **kwargs):
        return (self.ddp if torch.is_grad_enabled() else self.module)(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


class Dist:
    """This process's place in the run, and the few collectives training and sampling need. A single
    process (no launcher) is rank 0 of 1, and every collective is the identity."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.device = accelerator.device if accelerator is not None else None  # where collectives run

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, probe: Callable[[nn.Module], object]):
        """What training calls: the model itself, or with several processes, `Replicated` over DDP.
        `probe(model)` backpropagates one step's loss through the bare model first, to find parameters
        that get no gradient from this objective (a UNet's logvar head under flow matching, a null text
        context never dropped in): those are frozen, as single-process training leaves them untouched
        anyway, because DDP waits for a gradient of every trainable parameter. (DDP's alternatives fail
        here: find_unused_parameters misses gradients that reach the logvar head outside the forward,
        under TrigFlow's adaptive weighting, and static_graph breaks under no_sync.)"""
        if self.world == 1:
            return model
        model.zero_grad(set_to_none=True)
        probe(model)
        unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        for name, p in model.named_parameters():
            if name in unused:
                p.requires_grad_(False)
        model.zero_grad(set_to_none=True)
        if unused and self.main:
            print(f"note: {len(unused)} parameter tensors get no gradient from this objective and stay as they "
                  f"are: {', '.join(unused[:4])}{' ...' if len(unused) > 4 else ''}")
        return Replicated(model, self.accelerator.prepare_model(model, device_placement=False))

    def no_sync(self, model) -> contextlib.AbstractContextManager:
        """Accumulate gradients locally: every micro-batch but the last of a step skips DDP's all-reduce."""
        return model.ddp.no_sync() if isinstance(model, Replicated) else contextlib.nullcontext()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return x
        x = x.clone()
        torch.distributed.all_reduce(x)
        return x / self.world

    def any(self, *flags: bool, device: torch.device) -> list[bool]:
        """Per flag: whether it is set on any process (so that all stop, or all save, at the same step)."""
        return self.any_and_main(*flags, value=0.0, device=device)[0]

    def any_and_main(self, *flags: bool, value: float, device: torch.device) -> tuple[list[bool], float]:
        """`any(*flags)`, and process 0's `value` on every process (a clock that must read the same everywhere),
        in one all-reduce: the training step's only collective besides DDP's gradients."""
        if self.world == 1:
            return list(flags), value
        # MAX over [flags..., value on process 0 and -inf elsewhere]
        t = torch.tensor([*map(float, flags), value if self.main else -math.inf], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        *got, main = t.tolist()
        return [bool(v) for v in got], main

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def map_rows(self, fn: Callable[[slice], torch.Tensor], n: int) -> torch.Tensor:
        """`fn(rows)` over this process's contiguous share of rows 0..n-1, the results of all processes
        concatenated in row order on every process (on the device `fn` returned them on). Fewer rows than
        processes: each computes them all."""
        if self.world == 1 or n < self.world:
            return fn(slice(0, n))
        bounds = [n * r // self.world for r in range(self.world + 1)]
        mine = fn(slice(bounds[self.rank], bounds[self.rank + 1]))
        longest = max(b - a for a, b in itertools.pairwise(bounds))
        padded = torch.zeros(longest, *mine.shape[1:], dtype=mine.dtype, device=self.device)  # NCCL: on the GPU
        padded[:len(mine)] = mine
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([p[:b - a] for p, a, b in zip(parts, bounds, bounds[1:])]).to(mine.device)

    def identical(self, module: nn.Module, device: torch.device) -> bool:
        """Whether `module`'s parameters are bit-identical on every process (compares fingerprints)."""
        if self.world == 1:
            return True
        mine = fingerprint(module).to(device)
        every = [torch.empty_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(every, mine)
        return all(torch.equal(mine, other) for other in every)


def fingerprint(module: nn.Module) -> torch.Tensor:
    """One int64 per parameter, a position-weighted sum of its raw bits: equal tensors give equal values,
    and a change of one bit anywhere changes it."""
    out = []
    for p in module.parameters():
        bits = p.detach().reshape(-1).contiguous().view(torch.uint8).long()
        weights = torch.arange(1, len(bits) + 1, device=bits.device) % 65_521 + 1
        out.append((bits * weights).sum())
    return torch.stack(out).cpu()


def shutdown() -> None:
    """End this process's part in a launched run: wait for the others, close the process group, and exit.
    A process that exits while another still talks to it (process 0 writing the results) can abort in
    gloo's or NCCL's teardown, failing a command whose work is done. Even after the group is closed, the
    interpreter's own teardown aborted 4 of 103 4-process CPU trainings ("terminate called without an active
    exception", after the exit handlers had run; 0 of 80 since), so a launched process skips it: exit handlers,
    flushed streams, then `os._exit`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def setup(device: str = "auto", source: str = "train.device") -> tuple[Dist, torch.device]:
    """This process's `Dist` and device (`source`: the flag or config key `device` came from, for errors).
    Under a launcher, accelerate starts the process group (NCCL on GPUs, gloo with train.device cpu) and
    picks this process's GPU (LOCAL_RANK)."""
    picked = pick_device(device, source)  # checked before a launched run starts its process group
    if launched_world() == 1:
        return Dist(), picked
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{source} {device!r} with {launched_world()} processes: each process takes its "
                         f"own GPU; choose which ones with CUDA_VISIBLE_DEVICES instead")
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    # bf16 is liquidgen's own autocast (train.precision), so accelerate must not add a second one.
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no", device_placement=False)
    if accelerator.distributed_type not in (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise ValueError(f"accelerate is configured for {accelerator.distributed_type.value}; liquidgen trains "
                         f"with DDP only (multi-GPU or multi-CPU): rerun `accelerate config` without FSDP/DeepSpeed")
    return Dist(accelerator), accelerator.device
