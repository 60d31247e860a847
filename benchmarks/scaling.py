"""Data-parallel scaling: the same `liquidgen train` command on 1, 2, 4, ... GPUs of one host.

    python benchmarks/scaling.py --gpus 1 2 --models dit:B liquid:B --per-gpu-batch 256 --steps 200 \\
        --data-root .carry/cifar10 --equal-batch --resume --out benchmarks/results/DATE-scaling

Each (backbone, GPU count G) trains CIFAR-10 pixels (3x32x32: 256 tokens for DiT-B/2, as on 4x32x32
latents) with `torchrun --standalone --nproc_per_node G -m liquidgen.cli train configs/cifar10-*.yaml`,
compiled, bf16, at a fixed per-GPU batch (global batch G x per-GPU). Training images/s is the median over
the log windows after the first two (compilation, warm-up).
--equal-batch: the 1-GPU run is repeated at each larger global batch, as G micro-batches of gradient
accumulation, which are the same batches and the same noise as the G processes take: the loss curves
compare at equal global batch. --resume: the largest run is continued from its final checkpoint for
half as many steps again, to show that its loss curve goes on.
Writes scaling.jsonl (a record per run, appended as each ends), scaling.md, scaling.png (img/s against GPUs,
beside linear scaling from 1 GPU) and loss-<backbone>.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from liquidgen.bench.records import append_record, read_records
from liquidgen.plots import plot_curves

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {"dit": "configs/cifar10-dit-S-fm.yaml", "liquid": "configs/cifar10-liquid-S.yaml"}
EMA_LINE = "EMA weights bit-identical on all"


def command(backbone: str, preset: str, gpus: int, batch: int, accum: int, steps: int, run: Path, args,
            resume: bool = False) -> list[str]:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
              if gpus > 1 else [sys.executable])
    return [*launch, "-m", "liquidgen.cli", "train", CONFIGS[backbone], "--out", str(run),
            *(["--resume"] if resume else []), "--set", f"model.name={backbone}", f"model.preset={preset}",
            f"data.root={args.data_root}", f"train.batch_size={batch}", f"train.grad_accum={accum}",
            f"train.steps={steps}", "train.compile=true", f"train.log_every={args.log_every}",
            "train.sample_every=0", f"train.ckpt_every={steps}", "optim.warmup_steps=100", *args.set]


def train(cmd: list[str], log: Path, timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, (e.stdout or b"").decode() + (e.stderr or b"").decode()
    log.write_text(out)
    print(f"  {time.perf_counter() - t0:.0f} s, exit {code}", flush=True)
    return code, out


def summarize(run: Path, out: str) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_s"] for r in lines[2:]] or [r["images_per_s"] for r in lines]
    return {"img_s": statistics.median(speeds), "losses": [[r["step"], r["loss"]] for r in lines],
            "final_loss": statistics.mean(r["loss"] for r in lines[-3:]),
            "peak_memory_gb": max(r.get("max_memory_gb", 0) for r in lines),
            "ema_identical": EMA_LINE in out}


def report(out_dir: Path) -> None:
    records = [r for r in read_records(out_dir / "scaling.jsonl") if "img_s" in r]
    rows = ["| backbone | GPUs | global batch | img/s | img/s per GPU | speed-up | efficiency | final loss | "
            "EMA identical | peak GB |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    series, losses = {}, {}
    for model in dict.fromkeys(r["model"] for r in records):
        mine = sorted((r for r in records if r["model"] == model and r["kind"] == "scaling"), key=lambda r: r["gpus"])
        base = next((r["img_s"] for r in mine if r["gpus"] == 1), None)
        for r in mine:
            gpus = r["gpus"]
            up, eff = ("-", "-") if not base else (f"{r['img_s'] / base:.2f}x", f"{r['img_s'] / base / gpus:.0%}")
            same = "yes" if r["ema_identical"] else "-" if gpus == 1 else "NO"
            rows.append(f"| {model} | {gpus} | {r['global_batch']} | {r['img_s']:,.0f} | {r['img_s'] / gpus:,.0f} | "
                        f"{up} | {eff} | {r['final_loss']:.4f} | {same} | {r['peak_memory_gb']:.1f} |")
        series[model] = ([r["gpus"] for r in mine], [r["img_s"] for r in mine])
        for r in records:
            if r["model"] == model:
                steps, loss = zip(*r["losses"])
                losses.setdefault(model, {})[r["label"]] = (list(steps), list(loss))
    text = ["# Data-parallel scaling", "", *rows, ""]
    for r in records:
        twin = next((o for o in records if o["kind"] == "scaling" and o["model"] == r["model"]
                     and o["global_batch"] == r["global_batch"]), None)
        if r["kind"] == "equal-batch" and twin:
            a, b = dict(map(tuple, r["losses"])), dict(map(tuple, twin["losses"]))
            gaps = [abs(a[k] - b[k]) / b[k] for k in a if k in b]
            text.append(f"- {r['label']} vs {twin['label']} (same batches and noise): loss differs by "
                        f"{statistics.mean(gaps):.2%} on average, {max(gaps):.2%} at most, over {len(gaps)} windows")
        if r["kind"] == "resume" and twin:
            before = [loss for step, loss in twin["losses"]][-3:]
            after = [loss for step, loss in r["losses"] if step > twin["steps"]][:3]
            text.append(f"- {r['label']}: last 3 windows before the resume {', '.join(f'{v:.4f}' for v in before)}; "
                        f"first 3 after {', '.join(f'{v:.4f}' for v in after)}")
    text.append("")
    for r in records:
        text.append(f"- {r['label']} ({r['model']}): `{r['command']}`")
    (out_dir / "scaling.md").write_text("\n".join(text) + "\n")
    if series:  # each backbone's measured line beside the linear one through its 1-GPU point
        lines = {}
        for model, (gs, vs) in series.items():
            lines[model] = (gs, vs)
            if 1 in gs:
                lines[f"{model}, linear"] = (gs, [vs[gs.index(1)] * g for g in gs])
        plot_curves(out_dir / "scaling.png", lines, title="training images / s vs GPUs", xlabel="GPUs",
                    ylabel="images / s", markers=True)
    for model, curves in losses.items():
        plot_curves(out_dir / f"loss-{model.replace(':', '-')}.png", curves, title=f"{model}: training loss",
                    ylabel="loss", smooth=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="GPU counts to run")
    p.add_argument("--models", nargs="+", default=["dit:B", "liquid:B"], help="backbone:preset pairs")
    p.add_argument("--per-gpu-batch", type=int, default=256, help="images per GPU per step")
    p.add_argument("--steps", type=int, default=200, help="training steps per run")
    p.add_argument("--log-every", type=int, default=20, help="steps per log window (one throughput sample)")
    p.add_argument("--data-root", required=True, help="CIFAR-10 folder (python pickles, binaries or tiles)")
    p.add_argument("--equal-batch", action="store_true",
                   help="also 1 GPU at each larger global batch (gradient accumulation), to compare loss curves")
    p.add_argument("--resume", action="store_true", help="continue the largest run from its checkpoint")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides for every run")
    p.add_argument("--runs", default="/tmp/scaling-runs", help="where the run folders go")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per training run")
    p.add_argument("--out", required=True, help="folder for scaling.jsonl, scaling.md and the plots")
    args = p.parse_args()
    out_dir, runs = Path(args.out), Path(args.runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = {r["label"] for r in read_records(out_dir / "scaling.jsonl")}
    from liquidgen.bench.records import environment
    import torch

    env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    plan = []
    for model in args.models:
        for g in args.gpus:
            plan.append((model, "scaling", g, g * args.per_gpu_batch, 1, args.steps, f"{model} x{g}"))
        if args.equal_batch:
            plan += [(model, "equal-batch", 1, g * args.per_gpu_batch, g, args.steps, f"{model} x1 batch {g * args.per_gpu_batch}")
                     for g in args.gpus if g > 1]
        if args.resume:
            g = max(args.gpus)
            plan.append((model, "resume", g, g * args.per_gpu_batch, 1, args.steps + args.steps // 2,
                         f"{model} x{g} resumed"))
    for model, kind, gpus, batch, accum, steps, label in plan:
        if label in done:
            continue
        backbone, preset = model.split(":")
        resume = kind == "resume"
        run = runs / (f"{backbone}-{preset}-x{gpus}" if kind != "equal-batch" else f"{backbone}-{preset}-x1-b{batch}")
        cmd = command(backbone, preset, gpus, batch, accum, steps, run, args, resume=resume)
        print(f"{label}: {' '.join(cmd)}", flush=True)
        code, out = train(cmd, out_dir / f"{label.replace(' ', '_').replace(':', '-')}.log", args.timeout)
        record = {"label": label, "model": model, "kind": kind, "gpus": gpus, "global_batch": batch,
                  "per_gpu_batch": batch // gpus // accum, "grad_accum": accum, "steps": steps,
                  "command": " ".join(cmd).replace(sys.executable, "python"), "exit": code, **env}
        if code == 0 or (run / "metrics.jsonl").is_file():
            record.update(summarize(run, out))
        else:
            record["error"] = out[-2000:]
        append_record(out_dir / "scaling.jsonl", record)
        report(out_dir)
    report(out_dir)
    print((out_dir / "scaling.md").read_text())


if __name__ == "__main__":
    main()
