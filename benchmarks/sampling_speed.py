"""Sampling speed as a user meets it: `liquidgen sample RUN --labels 0..9 --n N --steps S --cfg C --out x.npz`
timed from process start to the file written, then, inside one process, images per second at a few steps.

    python benchmarks/sampling_speed.py runs/mnist-liquid-S runs/mnist-unet --n 10000 --steps 50 --cfg 2 \
        --out benchmarks/results/<date>-sampling --label after [--python-path OLD/src --label before]

`--python-path` runs another copy of liquidgen (an older commit's src/) for a before/after table in one call;
`--sample-args` passes extra flags to that copy's `sample` (e.g. --batch 1000). `--compile-cache DIR` points each run's
compile caches at DIR/<run name>: empty, the run times a user's first call (`cold_cache` in the record); rerun with
the same DIR, a later one. Appends to <out>/sampling.jsonl. `--phases BATCH` times the parts of such a call instead,
in a fresh process (import, load, the first batch with its compilation, the rest, and one more batch profiled: the
GPU's busy share and its split), into <out>/phases.jsonl.
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


def compile_cache_env(run: str, compile_cache: str | None) -> dict:
    """Inductor's and Triton's caches in one folder per run under `compile_cache` (empty: what a user's first
    call meets); none: the machine's own cache."""
    if not compile_cache:
        return {}
    folder = str(Path(compile_cache) / Path(run).name)
    return {"TORCHINDUCTOR_CACHE_DIR": folder, "TRITON_CACHE_DIR": folder}


def end_to_end(run: str, n: int, steps: int, cfg: float, python_path: str | None, extra: list[str],
               compile_cache: str | None) -> dict:
    env = dict(os.environ)
    if python_path:
        env["PYTHONPATH"] = python_path
    cold = None
    if compile_cache:
        folder = Path(compile_cache) / Path(run).name
        cold = not (folder.is_dir() and any(folder.iterdir()))
        env.update(compile_cache_env(run, compile_cache))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.npz"
        cmd = [sys.executable, "-m", "liquidgen.cli", "sample", run, "--labels", *map(str, range(10)), "--n", str(n),
               "--steps", str(steps), "--cfg", str(cfg), "--out", str(out), *extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode or not out.exists():
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return {"wall_s": wall, "cold_cache": cold, "command": " ".join(cmd[1:]).replace(str(out), "samples.npz")}


def in_process(run: str, n: int, steps: int, batch: int, compile: str) -> dict:
    """Images per second of `Pipeline.generate` at `steps` steps without guidance, after one warm-up call.
    `compile` on or off: a few-step call falls under `compile: auto`'s threshold (samples x steps), so auto would
    time the eager network; the records before 2026-12-06 did, though they said compiled."""
    import torch

    from liquidgen.generate import Pipeline

    pipe = Pipeline.load(run, device="cuda", compile=compile)
    settings = pipe.settings.with_(steps=steps, cfg=1.0)
    pipe.generate(batch, settings=settings, batch_size=batch, progress=False)  # compiles, where on
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    pipe.generate(n, settings=settings, batch_size=batch, progress=False)
    torch.cuda.synchronize()
    return {"img_s": n / (time.perf_counter() - t0)}


def phases(run: str, n: int, steps: int, cfg: float, batch: int, compile: str = "auto") -> dict:
    """Where one end-to-end call's seconds go, timed inside one process: importing torch, importing liquidgen
    and loading the run, importing the compiler (when the call compiles), the first batch (compilation, from
    whatever cache the environment points at, split by Dynamo's timers), and the other n - batch samples. On
    CUDA where there is one (the CPU: a smoke test). `compile`: auto (the call's own decision), on or off."""
    t0 = time.perf_counter()
    import torch
    t1 = time.perf_counter()
    from liquidgen.bench.speed import profile_step
    from liquidgen.generate import Pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pipe = Pipeline.load(run, device=device)
    # The end-to-end call draws all n rows in one `generate`, which compiles or not by that call's work (samples x
    # steps). Split in two calls here, each would decide by its own: a first batch of 1,000 at 50 steps falls
    # under the threshold and ran eager, and the rest then paid the compilation (the phases of 2026-12-05 did).
    pipe.compile = compile if compile != "auto" else "on" if pipe.compiles(n * steps) else "off"
    sync()
    t2 = time.perf_counter()
    if pipe.compile == "on":  # the compiler's own modules, which its first call imports: a phase of their own
        import torch._dynamo
        import torch._inductor.compile_fx  # noqa: F401
    t_compiler = time.perf_counter()
    settings = pipe.settings.with_(steps=steps, cfg=cfg)
    pipe.generate(batch, settings=settings, batch_size=batch, progress=False)
    sync()
    t3 = time.perf_counter()
    # Dynamo's own account of the compilation inside the first batch (tracing, Inductor's compile or cache load,
    # guards), summed over the graphs: which part of a warm start's seconds a faster start would have to remove
    names, seconds = torch._dynamo.utils.compile_times(repr="csv", aggregate=True)
    compile_split = {name: float(s) for name, s in zip(names, seconds) if float(s) >= 0.01}
    pipe.generate(n - batch, settings=settings, batch_size=batch, progress=False)
    sync()
    t4 = time.perf_counter()
    # One more batch, profiled: how much of its wall time the GPU is busy, and with what, against the compiled
    # UNet-28 alone at 26.2 ms per guided 2,000-row step on an H100 (results/2026-12-05-unet-layouts-and-curves-h100).
    timings = {"import_torch_s": t1 - t0, "load_s": t2 - t1, "import_compiler_s": t_compiler - t2,
               "first_batch_s": t3 - t_compiler, "rest_s": t4 - t3, "rest_img_s": (n - batch) / (t4 - t3),
               "compile_split_s": compile_split}
    if device != "cuda":  # the profile reads GPU kernels
        return timings
    split = profile_step(lambda: pipe.generate(batch, settings=settings, batch_size=batch, progress=False),
                         torch.device(device), repeats=1, top=25)
    return {**timings, "batch_ms_per_step": split["step_ms"] / steps,
            **{f"batch_{k}": v for k, v in split.items() if k != "step_ms"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (checkpoints of MNIST models)")
    p.add_argument("--n", type=int, default=10_000, help="samples per end-to-end run")
    p.add_argument("--steps", type=int, default=50, help="sampling steps end to end")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance scale end to end")
    p.add_argument("--fast-steps", type=int, default=0,
                   help="also time this many steps inside the process, compiled and eager (0: no)")
    p.add_argument("--fast-batch", type=int, default=2000, help="batch of the in-process timing")
    p.add_argument("--python-path", help="PYTHONPATH of the liquidgen to time (default: the installed one)")
    p.add_argument("--sample-args", default="", help="extra flags for `liquidgen sample`, as one string")
    p.add_argument("--compile-cache", help="folder for the compile caches of the end-to-end runs: a new one times a "
                   "first call, the same one again a later call (default: the machine's own cache)")
    p.add_argument("--phases", type=int, default=0, help="instead of the end-to-end command, time its phases "
                   "inside a fresh process at this batch (import, load, first batch, the rest, a profiled batch)")
    p.add_argument("--phases-here", action="store_true", help="with --phases: time them in this process and print "
                   "them as JSON (what --phases runs in its fresh process)")
    p.add_argument("--phases-compile", choices=["auto", "on", "off"], default="auto",
                   help="with --phases: whether the call compiles (auto: as `liquidgen sample` decides; on: also on "
                   "the CPU)")
    p.add_argument("--label", required=True, help="name of this variant in the records, e.g. before / after")
    p.add_argument("--out", required=True, help="results folder")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        if args.phases_here:
            print(json.dumps(phases(run, args.n, args.steps, args.cfg, args.phases, args.phases_compile)))
            continue
        if args.phases:  # a fresh process, so that importing torch is timed as a user's call meets it
            cmd = [sys.executable, __file__, run, "--n", str(args.n), "--steps", str(args.steps), "--cfg",
                   str(args.cfg), "--phases", str(args.phases), "--phases-here", "--phases-compile",
                   args.phases_compile, "--label", args.label, "--out", str(out)]
            done = subprocess.run(cmd, env=dict(os.environ, **compile_cache_env(run, args.compile_cache)),
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            record = {"run": run, "label": args.label, "n": args.n, "steps": args.steps, "cfg": args.cfg,
                      "batch": args.phases, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(json.dumps(record), flush=True)
            with (out / "phases.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            continue
        record = {"run": run, "label": args.label, "n": args.n, "steps": args.steps, "cfg": args.cfg,
                  **end_to_end(run, args.n, args.steps, args.cfg, args.python_path, args.sample_args.split(),
                                     args.compile_cache)}
        for compiled, suffix in ((True, ""), (False, "_eager")) if args.fast_steps else ():
            record[f"img_s_at_{args.fast_steps}_steps{suffix}"] = in_process(
                run, 4 * args.fast_batch, args.fast_steps, args.fast_batch, "on" if compiled else "off")["img_s"]
        print(json.dumps(record), flush=True)
        with (out / "sampling.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
