"""Would an ahead-of-time compiled network cut `liquidgen sample`'s start-up? (issue 19)

A warm `liquidgen sample` of 10,000 UNet-28 MNIST images spends, by difference, about 9 s compiling from the warm
Inductor cache (results/2026-12-05-sampling-warm, corrected 2026-12-06): Dynamo traces the model again in every
process. An AOTInductor package (torch.export + `torch._inductor.aoti_compile_and_package`), written once beside a
run, loads without tracing. This script times, each in a fresh process as a user's call meets it:

- `compile`: torch.compile as `--compile on` runs it (`generate.CompiledForward`: a UNet whole with CUDA graphs, a
  block stack one block) from an empty cache, then again from the cache the first left (a user's second call);
- `aot`: as `--compile aot` runs it (`aot.AOTForward`): export and package (the one-off cost), then a fresh process
  that loads the package;
- `precompile`: torch.compile's own ahead-of-time path (`torch.compile(...).aot_compile`, experimental; whether the
  lent GPU's torch 2.11 has it in this form is for the device to say, a failing mode is recorded, not fatal): the
  whole model traced and compiled once and saved (Dynamo's and Inductor's output, kernels included), then a fresh
  process that loads it, skipping Dynamo's trace. Unlike an AOTInductor package it stays in Python (Inductor's usual
  runtime, not the C++ loader that crashed on the lent H100's torch 2.11, results/2026-12-06-aot-cuda-h100) and holds
  no weights. On a loaded 2-core CPU (UNet-28, 40 rows, results/2026-12-06-precompile-cpu) a warm torch.compile
  reached its first output in 10.6-10.7 s, the loaded artifact in 6.9-8.0 s. `--skip` leaves modes out (`--skip
  export` also leaves out the load of its package, where AOTInductor crashes);

each to its first output and then its steady milliseconds per forward, on one fixed batch of `--rows` (a guided
sampling batch of rows / 2) under the run's bf16 autocast. Class-conditional runs only (x, t, labels).

    python benchmarks/aot_start.py runs/mnist-unet --rows 2000 --out benchmarks/results/<date>-aot-start
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def precompiled(model, x, t, y, file: Path, build: bool):
    """The model compiled by `torch.compile(...).aot_compile` for these inputs under the autocast already entered:
    built and saved to `file`, or loaded from it. Whole graph, no CUDA graphs (the probe asks what loading saves,
    not which mode runs fastest). Through the module's form of the API (`OptimizedModule._aot_compile`, private in
    torch 2.13: the public `aot_compile` takes free functions), which binds the loaded code to this module's own
    parameters. The file is a pickle: this probe reads only what it wrote itself."""
    import torch

    torch._dynamo.config.enable_aot_compile = True
    fn = torch.compile(model, fullgraph=True, dynamic=False)
    if build:
        fn._aot_compile([torch._dynamo.aot_compile.ModelInput(args=(x, t, y), kwargs={}, contexts=[])])
        fn._save_aot_compiled_module(str(file))
    else:
        fn._load_aot_compiled_module(file.read_bytes())
    return fn


def one(run: str, mode: str, rows: int, package: str, repeats: int) -> dict:
    """In this process: the model of `run` at `rows` rows, as `liquidgen sample` runs it per `mode`: compile
    (`generate.CompiledForward`), export (`aot.AOTForward` building its package into the folder `package`) or load
    (the same, finding the package there); precompile / preload: `precompiled`, its file in `package`."""
    t0 = time.perf_counter()
    import torch

    from liquidgen.aot import AOTForward
    from liquidgen.generate import CompiledForward, Pipeline
    from liquidgen.runtime import autocast

    pipe = Pipeline.load(run, compile="off")
    model, device = pipe.model.eval(), pipe.device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, *pipe.spec.shape, generator=generator).to(device)
    t = torch.rand(rows, generator=generator).to(device)
    y = torch.randint(0, model.num_classes + 1, (rows,), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t1 = time.perf_counter()
    if mode == "load" and not any(Path(package).glob("*.pt2")):
        raise SystemExit(f"no package in {package}: run the export mode first")
    with torch.no_grad(), autocast(device, pipe.precision):
        if mode in ("precompile", "preload"):
            Path(package).mkdir(parents=True, exist_ok=True)
            fn = precompiled(model, x, t, y, Path(package) / "precompiled.bin", build=mode == "precompile")
        else:
            fn = CompiledForward(model) if mode == "compile" else AOTForward(model, Path(package), pipe.precision)
        out = fn(x, t, y)
        sync()
        t2 = time.perf_counter()
        for _ in range(2):  # CUDA graphs record on the second and third calls
            fn(x, t, y)
        sync()
        t3 = time.perf_counter()
        for _ in range(repeats):
            fn(x, t, y)
        sync()
        t4 = time.perf_counter()
        ref = model(x, t, y)
    return {"mode": mode, "rows": rows, "device": str(device), "import_load_s": t1 - t0,
            "to_first_output_s": t2 - t1, "warmup_s": t3 - t2, "forward_ms": (t4 - t3) / repeats * 1e3,
            "rel_diff_vs_eager": float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))}


def fresh(run: str, mode: str, rows: int, package: str, repeats: int, cache: str) -> dict:
    """`one` in a new Python process with the compile caches in `cache`, timed from its start; a process that fails
    (an experimental API missing from this torch, a crash on load) gives its exit code and last words instead, so
    that the other modes still run."""
    cmd = [sys.executable, __file__, run, "--rows", str(rows), "--repeats", str(repeats), "--one", mode,
           "--package", package, "--out", "-"]
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=cache)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        return {"error": f"exit code {done.returncode}: {done.stderr.strip()[-1500:]}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t0}


MODES = ["compile", "export", "load", "precompile", "preload"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a class-conditional run folder (e.g. of configs/mnist-unet.yaml)")
    p.add_argument("--rows", type=int, default=2000, help="rows per forward (a guided batch doubles the samples)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards after the warm-up")
    p.add_argument("--out", required=True, help="results folder (aot_start.jsonl), or - to print only")
    p.add_argument("--skip", nargs="+", default=[], choices=MODES, help="modes to leave out")
    p.add_argument("--one", choices=MODES, help="internal: one mode in this process")
    p.add_argument("--package", help="internal: the folder of the AOTInductor package and the aot_compile artifact")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.run, args.one, args.rows, args.package, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        package, records = str(Path(tmp) / "aot"), []
        for label, mode, cache in (("torch.compile, empty cache", "compile", "compile-cache"),
                                   ("torch.compile, warm cache", "compile", "compile-cache"),
                                   ("AOTInductor export + package (once)", "export", "aot-cache"),
                                   ("AOTInductor package loaded", "load", "aot-cache"),
                                   ("aot_compile, built and saved (once)", "precompile", "precompile-cache"),
                                   ("aot_compile, loaded", "preload", "precompile-cache")):
            if mode in args.skip or (mode == "load" and "export" in args.skip):
                continue
            record = {"label": label, "run": args.run,
                      **fresh(args.run, mode, args.rows, package, args.repeats, str(Path(tmp) / cache))}
            records.append(record)
            print(json.dumps(record), flush=True)
    if args.out != "-":
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with (Path(args.out) / "aot_start.jsonl").open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    print(f"\n{'':38} {'process s':>9} {'to 1st out s':>12} {'forward ms':>10} {'rel diff':>9}")
    for r in records:
        if "error" in r:
            print(f"{r['label']:38} failed, {r['error'].split(':')[0]}: {r['error'].splitlines()[-1][:200]}")
            continue
        print(f"{r['label']:38} {r['process_s']:9.1f} {r['to_first_output_s']:12.1f} {r['forward_ms']:10.2f} "
              f"{r['rel_diff_vs_eager']:9.1e}")


if __name__ == "__main__":
    main()
