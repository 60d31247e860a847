"""Sampling forwards compiled ahead of time (AOTInductor), kept on disk beside their checkpoint.

torch.compile traces the network again in every process: by difference about 9 s of a warm `liquidgen sample` of
UNet-28 on an H200 (benchmarks/results/2026-12-05-sampling-warm). `compile: aot` exports the forward once per input
signature (torch.export, under the run's autocast), compiles it into an AOTInductor package
(`torch._inductor.aoti_compile_and_package`) in the checkpoint's `aot/` folder, and every later call, in this
process or another, loads that package instead: 2.3 s against 5.4 s from a warm torch.compile cache to a first
output on a CPU (benchmarks/results/2026-12-06-aot-start-cpu). The first call pays the export and the compilation.

A package holds the weights, so it belongs to one checkpoint (and one of its two weight sets); its file name
carries everything else it depends on: the inputs' names, shapes and dtypes, the precision, the device, the torch
version and liquidgen's own source (a package built before a change to a model's code is not reused after it). No
CUDA graphs: a package runs its kernels from C++, without Python between them.

Some torch builds crash (a segmentation fault, nothing to catch) loading AOTInductor packages: on an H100 with torch
2.11.0+cu130 every CUDA package did, a lone nn.Linear's too (benchmarks/results/2026-12-06-aot-cuda-h100). So a
package is first loaded in a child process; only after that succeeds (remembered by a `.ok` file beside it) does this
process load it, and a crash becomes an error that names the way out instead of a lost sampling job.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from .runtime import autocast


@functools.cache
def _source_digest() -> str:
    """A digest of liquidgen's Python source, read once per process."""
    digest = hashlib.sha256()
    for file in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()


# What the child process runs to find out whether loading `sys.argv[1]` crashes this torch build.
_LOAD_PROBE = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1])"


def _loaded_once(path: Path) -> Path:
    """The file whose presence says that the package at `path` loaded in a child process."""
    return path.with_name(path.name + ".ok")


def check_loads(path: Path) -> None:
    """Raise a RuntimeError if loading the package at `path` crashes a child process; pass at once where it loaded
    before (its `.ok` file)."""
    ok = _loaded_once(path)
    if ok.exists():
        return
    child = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(path)], capture_output=True, text=True)
    if child.returncode != 0:
        said = (child.stderr.strip().splitlines() or ["nothing on stderr"])[-1]
        raise RuntimeError(f"torch {torch.__version__} could not load the AOTInductor package {path} in a test "
                           f"process (exit code {child.returncode}; a negative code is the signal that killed it, "
                           f"-11 a segmentation fault; its last words: {said}). This process would have failed the "
                           "same way: use compile=on (torch.compile) here, or another torch build for compile=aot.")
    ok.touch()


class _Signature(nn.Module):
    """The backbone's forward over the tensors a sampler passes (None inputs left out), under the run's autocast,
    which export then records."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], device: torch.device, precision: str):
        super().__init__()
        self.model, self.names, self.device, self.precision = model, names, device, precision

    def forward(self, *tensors: Tensor) -> Tensor:
        inputs = dict(zip(self.names, tensors))
        with autocast(self.device, self.precision):
            return self.model(inputs.pop("x"), inputs.pop("t"), inputs.pop("y", None), **inputs)


class AOTForward:
    """A backbone whose forward runs from AOTInductor packages in `folder`, one per input signature, built on first
    use where missing; every other attribute is the backbone's (as `generate.CompiledForward`)."""

    def __init__(self, model: nn.Module, folder: Path, precision: str):
        self.model, self.folder, self.precision = model, Path(folder), precision
        self.loaded: dict[tuple, object] = {}  # by the inputs' names, shapes and dtypes: no hashing per call

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None, **cond: Tensor | None) -> Tensor:
        inputs = {k: v for k, v in {"x": x, "t": t, "y": y, **cond}.items() if v is not None}
        signature = tuple((k, v.shape, v.dtype) for k, v in inputs.items())
        run = self.loaded.get(signature)
        if run is None:
            path = self.folder / f"{self.key(inputs)}.pt2"
            if not path.exists():
                self.build(inputs, path)
            check_loads(path)
            run = self.loaded[signature] = torch._inductor.aoti_load_package(str(path))
        return run(*inputs.values())

    def key(self, inputs: dict[str, Tensor]) -> str:
        """What a package depends on besides the weights, hashed into its file name."""
        device = next(self.model.parameters()).device
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        parts = [f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in inputs.items()]
        parts += [f"precision:{self.precision}", f"device:{device.type}:{gpu}", f"torch:{torch.__version__}",
                  f"source:{_source_digest()}"]
        return "forward-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def build(self, inputs: dict[str, Tensor], path: Path) -> None:
        """Export and compile the forward for `inputs`' signature into `path`, written whole or not at all."""
        try:  # before the export, which takes as long as compiling
            path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(path.parent, os.W_OK):
                raise PermissionError(path.parent)
        except OSError as e:
            raise OSError(f"compile=aot writes its package into {path.parent}, which cannot be written ({e}): copy "
                          "the checkpoint somewhere writable, or use compile=on") from e
        device = next(self.model.parameters()).device
        signature = _Signature(self.model, tuple(inputs), device, self.precision)
        with torch.no_grad():
            program = torch.export.export(signature, tuple(inputs.values()))
        partial = path.with_name(f".{os.getpid()}-{path.name}")  # a crash or a second process leaves no half file
        torch._inductor.aoti_compile_and_package(program, package_path=str(partial))
        _loaded_once(path).unlink(missing_ok=True)  # a new package is checked anew
        partial.replace(path)

    def __getattr__(self, name: str):
        return getattr(self.model, name)
