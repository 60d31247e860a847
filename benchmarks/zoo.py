"""Backbone zoo on MNIST, one GPU: train each backbone with the same recipe, then measure speed,
memory and sample quality; for fixed-point models also the residual / quality / iteration trade-off.

    python benchmarks/zoo.py --mnist-root .carry/data --out $OUT liquid-S dit-S unet fp-dit-S

Quality is measured offline with liquidgen's reference MNIST classifier (`liquidgen eval fit-classifier`'s
fixed recipe; fitted into --classifier first if that file is missing): `class_accuracy` is the fraction of
class-conditional samples it assigns to their class, `classifier_fd` the Frechet distance between its
features of the samples and of the 10k MNIST test images (lower is better; like FID, but in this
classifier's feature space, and with 1,000 samples, so only comparable within this table). Before
2026-12-02 this script used a private probe classifier; its `acc` / `fd` are not comparable with these.
Writes <name>.json, <name>-samples.png and <name>-metrics.jsonl per backbone into --out, and prints
a table last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from liquidgen.bench.quality import class_rows
from liquidgen.config import load_config
from liquidgen.evaluation.evaluate import Scorer
from liquidgen.generate import Pipeline
from liquidgen.latent_space import to_uint8
from liquidgen.plots import save_grid
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"liquid-S": "mnist-liquid-S.yaml", "dit-S": "mnist-dit-S.yaml", "unet": "mnist-unet.yaml",
           "fp-dit-S": "mnist-fixed-point-dit-S.yaml"}


def judge_with(scorer: Scorer):
    """The two scores the tables show, of uint8 samples."""
    def judge(images: torch.Tensor, labels: torch.Tensor) -> dict:
        scores = scorer(images, labels)
        return {k: scores[k] for k in ("class_accuracy", "classifier_fd")}

    return judge


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fixed_point_study(pipe: Pipeline, judge, device, per_class: int) -> dict:
    """Residual and quality against iterations per step, with and without reuse; budget schedules. Each
    setting samples all 10 x per_class images in one call, so its solver state sees every step."""
    settings = pipe.settings.with_(steps=20, cfg=2.0)
    labels = torch.arange(10).repeat_interleave(per_class)
    noise = pipe.noise(len(labels), seed=0)

    def run(state) -> tuple[dict, list[float]]:
        x = pipe.sample(noise, labels, settings, state=state)
        return judge(to_uint8(pipe.decode(x)).cpu(), labels), state.residuals

    rows = []
    for reuse in (False, True):
        for iters in (1, 2, 3, 4, 6, 8, 10, 14):
            state = pipe.model.sampling_state()
            state.iters, state.reuse, state.budget = iters, reuse, None
            sync(device)
            t0 = time.perf_counter()
            scores, res = run(state)
            sync(device)
            rows.append({"reuse": reuse, "iters": iters, "residual": statistics.mean(res),
                         "seconds": time.perf_counter() - t0, **scores})
    schedules = []
    for schedule in ("constant", "increasing", "decreasing"):
        state = pipe.model.sampling_state()
        state.budget, state.schedule, state.reuse = 60, schedule, True
        scores, res = run(state)
        schedules.append({"schedule": schedule, "budget": 60, "plan": state.used, "residual": statistics.mean(res),
                          **scores})
    return {"steps": 20, "cfg": 2.0, "samples": len(labels), "iterations": rows, "budget": schedules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(CONFIGS), help="backbones to run")
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--out", required=True, help="where results go")
    parser.add_argument("--runs", default="/tmp/zoo-runs", help="scratch folder for run folders")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per backbone")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--no-compile", action="store_true", help="train eagerly")
    parser.add_argument("--per-class", type=int, default=100, help="samples per class for the metrics")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--limit", type=int, help="use only this many MNIST images (smoke tests)")
    parser.add_argument("--classifier", default="classifiers/mnist-28.safetensors",
                        help="reference MNIST classifier (.safetensors); fitted there first if missing")
    args = parser.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("torch", torch.__version__, torch.cuda.get_device_name() if device.type == "cuda" else "cpu", flush=True)
    t0 = time.perf_counter()
    scorer = Scorer("mnist", args.mnist_root, args.classifier, device, limit=args.limit)
    judge = judge_with(scorer)
    print(f"reference classifier {scorer.classifier} ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    results = []
    for name in args.names:
        run = Path(args.runs) / name
        config = load_config(ROOT / "configs" / CONFIGS[name], [
            f"data.root={args.mnist_root}", f"train.steps={args.steps}", f"train.batch_size={args.batch}",
            f"train.compile={not args.no_compile}", "train.log_every=100", "train.sample_every=0",
            "train.ckpt_every=0", "train.keep_checkpoints=1", f"train.device={args.device}",
            *([f"data.limit={args.limit}"] if args.limit else [])])
        t0 = time.perf_counter()
        final = train(config, run, overwrite=True)
        wall = time.perf_counter() - t0
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        pipe = Pipeline.load(final, device=device)
        sync(device)
        t0 = time.perf_counter()
        x, y = pipe.generate(10 * args.per_class, settings=pipe.settings.with_(steps=50, cfg=2.0), progress=False)
        sync(device)
        sample_s = time.perf_counter() - t0
        grid, nrow = class_rows(x, y, min(10, args.per_class))  # a row per class
        save_grid(grid, out / f"{name}-samples.png", nrow=nrow)
        result = {
            "name": name, "config": CONFIGS[name], "steps": args.steps, "batch": args.batch,
            "compile": not args.no_compile, "params_M": pipe.model.num_params() / 1e6,
            # steady state: the median logged window after the first two (compilation, warm-up)
            "train_img_s": statistics.median(r["images_per_s"] for r in log[2:] or log),
            "peak_gb": max(r.get("max_memory_gb", 0) for r in log), "final_loss": log[-1]["loss"],
            "train_wall_s": wall, "samples": len(x), "sample_s_50_steps": sample_s, **judge(x, y),
        }
        if name.startswith("fp-"):
            result["fixed_point"] = fixed_point_study(pipe, judge, device, args.per_class)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out / f"{name}-metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "fixed_point"}), flush=True)
        del pipe

    for r in results:
        for row in r.get("fixed_point", {}).get("iterations", []):
            print(f"  {r['name']} reuse={row['reuse']!s:<5} iters={row['iters']:>2}  residual {row['residual']:.3e}"
                  f"  acc {row['class_accuracy']:.3f}  fd {row['classifier_fd']:7.2f}  {row['seconds']:.1f}s")
        for row in r.get("fixed_point", {}).get("budget", []):
            print(f"  {r['name']} budget {row['budget']} {row['schedule']:<10} residual {row['residual']:.3e}"
                  f"  acc {row['class_accuracy']:.3f}  fd {row['classifier_fd']:7.2f}  plan {row['plan']}")
    print(f"\n{'backbone':<10} {'params':>8} {'img/s':>7} {'peak GB':>8} {'loss':>7} {'acc':>6} {'fd':>7} "
          f"{'train s':>8} {'sample s':>8}")
    for r in results:
        print(f"{r['name']:<10} {r['params_M']:>7.1f}M {r['train_img_s']:>7.0f} {r['peak_gb']:>8.2f} "
              f"{r['final_loss']:>7.4f} {r['class_accuracy']:>6.3f} {r['classifier_fd']:>7.2f} "
              f"{r['train_wall_s']:>8.0f} "
              f"{r['sample_s_50_steps']:>8.1f}")


if __name__ == "__main__":
    main()
