"""Muon against AdamW at equal steps on MNIST: final loss and sample quality.

    python benchmarks/muon.py --mnist-root .carry/data --classifier .carry/classifiers/mnist-28.safetensors \
        --steps 2000 --runs adamw:2e-4 muon:2e-4 muon:1e-3 --out $OUT/muon

Every run is `liquidgen train --config` (default configs/mnist-dit-S.yaml, compiled) for --steps steps with
`optim.name` and `optim.lr` set per run; everything else (batch, warm-up, EMA, seed) is shared. Samples:
1,000 from the EMA weights, 50 Euler steps at the config's cfg, scored by the offline reference
classifier (classifier FD against the test split, class accuracy; fitted first if the file is missing).
Writes results.json, results.md (printed last) and loss.png into --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from liquidgen.config import load_config
from liquidgen.data import load_split
from liquidgen.evaluation.classifier import ensure_classifier
from liquidgen.evaluation.evaluate import evaluate
from liquidgen.generate import Pipeline
from liquidgen.plots import plot_curves
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-root", required=True, help="MNIST folder")
    p.add_argument("--config", default=str(ROOT / "configs" / "mnist-dit-S.yaml"), help="training config")
    p.add_argument("--classifier", required=True, help="reference classifier .safetensors (fitted if missing)")
    p.add_argument("--steps", type=int, default=2000, help="training steps per run")
    p.add_argument("--runs", nargs="+", default=["adamw:2e-4", "muon:2e-4"], help="optimizer:lr pairs")
    p.add_argument("--samples", type=int, default=1000, help="samples scored per run")
    p.add_argument("--set", nargs="*", default=["train.compile=true"], metavar="KEY=VALUE",
                   help="overrides shared by every run")
    p.add_argument("--out", required=True, help="folder for the results")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    test = load_split("mnist", args.mnist_root, None, "test", None)
    ensure_classifier(args.classifier, "mnist", args.mnist_root, None, device)
    results, curves = [], {}
    for spec in args.runs:
        name, lr = spec.split(":")
        run = out / "runs" / spec.replace(":", "-")
        config = load_config(args.config, [f"data.root={args.mnist_root}", f"train.steps={args.steps}",
                                           f"optim.name={name}", f"optim.lr={lr}", f"train.sample_every={args.steps}",
                                           f"train.ckpt_every={args.steps}", *args.set])
        final = train(config, run, overwrite=True)
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        curves[spec] = ([r["step"] for r in log], [r["loss"] for r in log])
        images, labels = Pipeline.load(final, device=device).generate(args.samples, progress=False)
        scores = evaluate(images, labels, test, "mnist-test-28", classifier=args.classifier,
                          cache_dir=out / "cache", device=device)
        results.append({"run": spec, "steps": args.steps, "final_loss": statistics.mean(r["loss"] for r in log[-3:]),
                        "img_s": statistics.median(r["images_per_s"] for r in log[2:] or log),
                        "classifier_fd": scores["classifier_fd"], "class_accuracy": scores.get("class_accuracy")})
        (out / "results.json").write_text(json.dumps(results, indent=1))
    plot_curves(out / "loss.png", curves, title="training loss: Muon vs AdamW", ylabel="loss", logy=True, smooth=0.6)
    rows = ["| optimizer:lr | steps | final loss | img/s | classifier FD | class accuracy |",
            "|---|---:|---:|---:|---:|---:|"]
    rows += [f"| {r['run']} | {r['steps']} | {r['final_loss']:.4f} | {r['img_s']:,.0f} | {r['classifier_fd']:.2f} | "
             f"{r['class_accuracy']:.3f} |" for r in results]
    text = "\n".join(rows) + "\n"
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
