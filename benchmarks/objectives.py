"""Objectives on MNIST with one backbone (UNet-28), one GPU: quality against function evaluations.

    python benchmarks/objectives.py --mnist-root .carry/data --out $OUT flow tld diffusion trigflow scd

Each pre-training stage trains the UNet with the same recipe (`configs/mnist-unet.yaml`, batch 128,
bf16, compiled) under its objective. `scd` distils the `trigflow` run into a consistency model
(`configs/mnist-unet-scm.yaml`: starts from the teacher, guidance 2 distilled in, fp32, eager).
Quality uses liquidgen's reference MNIST classifier (--classifier, fitted there if missing;
`class_accuracy`, `classifier_fd`; not FID; before 2026-12-02 a private probe classifier, not comparable)
on 500 class-conditional samples (50 per class), at NFE 1, 2, 4, 8, 16, 50 with Euler (uniform grid) and
DPM-Solver++(2M) (karras grid), consistency sampling for the student, and TLD's DPM-Solver++ at 15
steps on its own grid. Run folders in --runs are reused when their final checkpoint exists, so
the stages can be split over calls on one machine. Writes results.json and one grid PNG per stage.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from liquidgen import checkpoint as ckpt_io
from liquidgen.config import load_config
from liquidgen.evaluation.evaluate import Scorer
from liquidgen.generate import Pipeline
from liquidgen.latent_space import to_uint8
from liquidgen.plots import save_grid
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]

PRETRAIN = {
    "flow": ("mnist-unet.yaml", "flow", {"time_sampling": "logit_normal"}),
    "tld": ("mnist-unet.yaml", "tld", {}),
    "diffusion": ("mnist-unet.yaml", "diffusion", {"prediction_type": "v", "schedule": "cosine",
                                                    "zero_terminal_snr": True, "weighting": "min_snr"}),
    "trigflow": ("mnist-unet-trigflow.yaml", "trigflow", {}),
}
NFES = (1, 2, 4, 8, 16, 50)


def run_stage(name: str, args, runs: Path) -> Path:
    run = runs / name
    done = ckpt_io.list_checkpoints(run) if run.exists() else []
    if done and done[-1].name == f"step-{args.steps if name != 'scd' else args.distill_steps:06d}":
        print(f"{name}: reusing {done[-1]}", flush=True)
        return done[-1]
    common = [f"data.root={args.mnist_root}", "train.log_every=100", "train.sample_every=0", "train.ckpt_every=0",
              "train.keep_checkpoints=1", f"train.batch_size={args.batch}", f"train.device={args.device}",
              *([f"data.limit={args.limit}"] if args.limit else [])]
    if name == "scd":
        teacher = runs / "trigflow"
        config = load_config(ROOT / "configs" / "mnist-unet-scm.yaml", common + [
            f"train.steps={args.distill_steps}", f"train.init_from={teacher}"])
        config.objective.options = {**config.objective.options, "teacher": str(teacher),
                                    "tangent_warmup": args.distill_steps // 4}
    else:
        file, objective, options = PRETRAIN[name]
        config = load_config(ROOT / "configs" / file, common + [f"train.steps={args.steps}",
                                                                  f"train.compile={args.device != 'cpu'}"])
        config.objective.name, config.objective.options = objective, options
    t0 = time.perf_counter()
    final = train(config, run, overwrite=True)
    print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return final


def evaluate(name: str, final: Path, scorer: Scorer, device, out: Path, per_class: int) -> list[dict]:
    pipe = Pipeline.load(final, device=device)
    labels = torch.arange(10).repeat_interleave(per_class)
    noise = pipe.noise(len(labels), seed=0)
    cfg = 1.0 if name == "scd" else 2.0
    settings = [("consistency", "consistency", n) for n in (1, 2, 4)] if name == "scd" else []
    settings += [("euler", "uniform", n) for n in NFES] + [("dpmpp_2m", "karras", n) for n in NFES]
    if name == "tld":
        settings += [("dpmpp_2m", "tld", 15)]
    rows, shown = [], []
    for sampler, grid, steps in settings:
        chosen = pipe.settings.with_(sampler=sampler, grid=grid, steps=steps, cfg=cfg)
        x = pipe.decode(pipe.sample(noise, labels, chosen, batch_size=500))
        scores = scorer(to_uint8(x).cpu(), labels)
        rows.append({"stage": name, "sampler": sampler, "grid": grid, "nfe": steps, "cfg": cfg,
                     "class_accuracy": scores["class_accuracy"], "classifier_fd": scores["classifier_fd"]})
        print(json.dumps(rows[-1]), flush=True)
        if (name == "scd" and sampler == "consistency" and steps <= 2) or \
                (name != "scd" and sampler == "dpmpp_2m" and grid == "karras" and steps == 16):
            k = min(10, per_class)
            pick = torch.arange(10).repeat_interleave(k) * per_class + torch.arange(k).repeat(10)
            shown.append(x[pick].cpu())
    save_grid(torch.cat(shown, dim=-1), out / f"{name}.png", nrow=min(10, per_class))  # scd: 1 step | 2 steps side by side
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=[*PRETRAIN, "scd"], help="stages to run, in order")
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--out", required=True, help="where results go")
    parser.add_argument("--runs", default="runs/objectives", help="run folders (reused when complete)")
    parser.add_argument("--steps", type=int, default=1500, help="pre-training steps")
    parser.add_argument("--distill-steps", type=int, default=1000, help="sCD steps")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--per-class", type=int, default=50, help="samples per class for the metrics")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--limit", type=int, help="use only this many MNIST images (smoke tests)")
    parser.add_argument("--classifier", default="classifiers/mnist-28.safetensors",
                        help="reference MNIST classifier (.safetensors); fitted there first if missing")
    args = parser.parse_args()
    device = torch.device(args.device)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__, torch.cuda.get_device_name() if device.type == "cuda" else "cpu", flush=True)
    scorer = Scorer("mnist", args.mnist_root, args.classifier, device, limit=args.limit)
    rows = []
    for name in args.stages:
        rows += evaluate(name, run_stage(name, args, runs), scorer, device, out, args.per_class)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'stage':<10} {'sampler':<12} {'grid':<12} " + " ".join(f"{'NFE ' + str(n):>14}" for n in NFES))
    keys = sorted({(r["stage"], r["sampler"], r["grid"]) for r in rows}, key=lambda k: args.stages.index(k[0]))
    for key in keys:
        cells = {r["nfe"]: f"{r['class_accuracy']:.3f}/{r['classifier_fd']:.1f}" for r in rows if (r["stage"], r["sampler"], r["grid"]) == key}
        print(f"{key[0]:<10} {key[1]:<12} {key[2]:<12} " + " ".join(f"{cells.get(n, '-'):>14}" for n in NFES)
              + ("" if set(cells) <= set(NFES) else f"  (NFE {sorted(set(cells) - set(NFES))}: "
                 + ", ".join(cells[n] for n in sorted(set(cells) - set(NFES))) + ")"))
    print(f"cells: class accuracy / classifier FD ({10 * args.per_class} samples)")


if __name__ == "__main__":
    main()
