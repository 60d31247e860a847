"""What evaluation costs on one GPU: the reference classifier, in-training evaluation, 10k-sample scoring.

    python benchmarks/eval_cost.py --mnist-root .carry/data --out $OUT

1. `liquidgen eval fit-classifier` on MNIST (time, test accuracy).
2. UNet-28 flow matching on MNIST, 1,000 steps at batch 128, compiled, with in-training evaluation every 250
   steps on 2,000 fixed-noise samples (20 Euler steps, CFG 2): its cost in seconds against the training time.
3. `liquidgen eval` of the final checkpoint on 10,000 generated samples (50 steps): generation, classifier
   metrics, and the FID Inception features of the same 10k images. The Inception weights are random here
   (the real file cannot be downloaded on this machine), so only its timing is meaningful.
Writes eval-cost.json and prints a table last.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from liquidgen.config import load_config
from liquidgen.data import load_dataset
from liquidgen.evaluation.classifier import fit_classifier, save_classifier
from liquidgen.evaluation.evaluate import evaluate
from liquidgen.generate import Pipeline
from liquidgen.evaluation.inception import FIDInception, features
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--runs", default="/tmp/eval-cost", help="scratch folder")
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--n", type=int, default=10_000, help="samples scored at the end")
    args = parser.parse_args()
    device = torch.device(args.device)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}

    t0 = time.perf_counter()
    train_set = load_dataset("mnist", args.mnist_root, split="train")
    test_set = load_dataset("mnist", args.mnist_root, split="test")
    clf, info = fit_classifier(train_set, test_set, device, progress=False)
    clf_path = save_classifier(clf, info, runs / "mnist-28.safetensors")
    sync()
    rows["fit classifier (60k images, 3 epochs)"] = f"{time.perf_counter() - t0:.1f} s, test acc {info['test_accuracy']:.4f}"

    every = max(1, args.steps // 4)
    config = load_config(ROOT / "configs" / "mnist-unet.yaml", [
        f"data.root={args.mnist_root}", f"train.steps={args.steps}", "train.batch_size=128",
        f"train.compile={device.type == 'cuda'}", "train.log_every=100", "train.sample_every=0", "train.ckpt_every=0",
        f"train.device={args.device}", f"train.eval_every={every}", f"train.eval_classifier={clf_path}",
        "train.eval_samples=2000", "train.eval_steps=20", "sample.cfg=2.0"])
    t0 = time.perf_counter()
    final = train(config, runs / "unet", overwrite=True)
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in (runs / "unet" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_fd" in r]
    eval_s = sum(r["eval_seconds"] for r in evals)
    rows["in-training eval (2k samples, 20 steps, CFG)"] = (
        f"{eval_s / len(evals):.1f} s each, {len(evals)} x = {eval_s:.0f} s of {wall:.0f} s run "
        f"({100 * eval_s / wall:.0f}%)")
    rows["eval_fd by step"] = ", ".join(f"{r['step']}: {r['eval_fd']:.1f} (acc {r.get('eval_acc', 0):.3f})"
                                        for r in evals)
    (out / "unet-metrics.jsonl").write_text((runs / "unet" / "metrics.jsonl").read_text())

    sync()
    t0 = time.perf_counter()
    pipe = Pipeline.load(final, device=device)
    images, labels = pipe.generate(args.n, seed=0, settings=pipe.settings.with_(steps=50, cfg=2.0),
                                   progress=False)
    sync()
    rows[f"generate {args.n} samples (50 steps, CFG 2)"] = f"{time.perf_counter() - t0:.1f} s"
    t0 = time.perf_counter()
    metrics = evaluate(images, labels, test_set, "mnist-test-28px-10000", classifier=clf_path,
                       cache_dir=runs / "cache", device=device)
    sync()
    rows[f"classifier metrics on {args.n} (first run: + reference features)"] = f"{time.perf_counter() - t0:.1f} s"
    t0 = time.perf_counter()
    evaluate(images, labels, test_set, "mnist-test-28px-10000", classifier=clf_path, cache_dir=runs / "cache",
             device=device)
    sync()
    rows[f"classifier metrics on {args.n} (cached reference)"] = f"{time.perf_counter() - t0:.1f} s"
    net = FIDInception().to(device).eval()
    features(net, images[:200])  # warm-up
    sync()
    t0 = time.perf_counter()
    features(net, images)
    sync()
    rows[f"Inception features of {args.n} images (299 px, fp32)"] = f"{time.perf_counter() - t0:.1f} s"
    rows["final scores (classifier space, offline; not FID)"] = (
        f"FD {metrics['classifier_fd']:.2f}, acc {metrics['class_accuracy']:.4f}, "
        f"precision {metrics['classifier_precision']:.3f}, recall {metrics['classifier_recall']:.3f}")
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "classifier": info, "metrics": metrics, "rows": rows}
    (out / "eval-cost.json").write_text(json.dumps(summary, indent=1))
    print()
    for k, v in rows.items():
        print(f"{k:<58} {v}")


if __name__ == "__main__":
    main()
