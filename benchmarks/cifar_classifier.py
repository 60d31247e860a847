"""Which reference network ranks CIFAR-10 (issue 20, item 3): candidate recipes fitted on the 4,000-image
subset (the last 500 held out, as `fit_classifier` holds out without a test split), each with its held-out
accuracy and fitting time. One device call:

    PYTHONPATH=src python benchmarks/cifar_classifier.py --root .carry/data --out $OUT/cifar_classifier.jsonl

The recipe chosen goes into `evaluation/classifier.py` (RECIPES) with its measured accuracy beside it.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace

import torch

from liquidgen.data import load_dataset
from liquidgen.evaluation.classifier import Recipe, fit_classifier

AUGMENTED = Recipe(arch="resnet", epochs=100, lr=2e-3, shift=4, weight_decay=0.05, label_smoothing=0.1, cosine=True)
CANDIDATES = {
    "cnn, 3 epochs (the default recipe)": Recipe(),
    "resnet-48, 3 epochs (the second space's recipe)": Recipe(arch="resnet", seed=1, lr=2e-3),
    "resnet-48, 60 epochs, shift+flip, cosine": replace(AUGMENTED, epochs=60),
    "resnet-48, 100 epochs, shift+flip, cosine": AUGMENTED,
    "resnet-64, 100 epochs": replace(AUGMENTED, width=64),
    "resnet-96, 100 epochs": replace(AUGMENTED, width=96),
    "resnet-64, 200 epochs": replace(AUGMENTED, width=64, epochs=200),
    "cnn-64, 100 epochs, shift+flip, cosine": replace(AUGMENTED, arch="cnn", width=64, seed=1),
    "cnn-32, 100 epochs, shift+flip, cosine": replace(AUGMENTED, arch="cnn", seed=1),
    "resnet-96, 200 epochs": replace(AUGMENTED, width=96, epochs=200),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding cifar10/ (the WebP tiles and labels)")
    parser.add_argument("--out", required=True, help="JSON lines file: one record per recipe")
    parser.add_argument("--budget", type=float, default=400, help="seconds; later candidates are skipped past it")
    parser.add_argument("--device", default="cuda", help="cuda | cpu")
    args = parser.parse_args()
    data = load_dataset("cifar10", args.root, split="train")
    start = time.perf_counter()
    print(f"{'recipe':<50} {'held-out accuracy':>17} {'seconds':>8}")
    for name, recipe in CANDIDATES.items():
        if time.perf_counter() - start > args.budget:
            print(f"{name:<50} skipped (past --budget)")
            continue
        t0 = time.perf_counter()
        _, info = fit_classifier(data, None, args.device, recipe, progress=False)
        seconds = time.perf_counter() - t0
        record = {"name": name, "recipe": asdict(recipe), "test_accuracy": info["test_accuracy"],
                  "train_images": info["train_images"], "test_images": info["test_images"], "seconds": seconds,
                  "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{name:<50} {info['test_accuracy']:>17.3f} {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
