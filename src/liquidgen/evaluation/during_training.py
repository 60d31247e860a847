"""In-training evaluation: every `train.eval_every` steps, a small-sample score of the EMA weights.

Cheap by construction: a fixed set of noise and labels (the same samples improving, so the curve is not
noisy from resampling), the reference classifier's features (no Inception), and reference features
computed once at start. Logged to metrics.jsonl as `eval_fd` / `eval_acc` / `eval_seconds` and plotted
to eval.png beside loss.png. It is the classifier FD of `classifier.py`, not FID.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from .classifier import extract, load_classifier
from .metrics import frechet_distance, gaussian_stats


class TrainingEval:
    def __init__(self, classifier: str, data, space, n: int, seed: int, device: torch.device):
        self.net, self.info = load_classifier(classifier, device)
        self.space, self.n, self.device = space, n, device
        num_classes = getattr(data, "num_classes", 0)
        g = torch.Generator().manual_seed(seed + 2)
        self.noise = torch.randn(n, data.channels, data.size, data.size, generator=g)
        self.labels = torch.arange(n) % num_classes if num_classes else None
        # Reference: the first n training items as pixels (latent datasets are decoded once, here).
        ref = data.images[: max(n, 2)]
        pixels = torch.cat([space.decode(data.to_model(b.to(device))).cpu() for b in ref.split(500)])
        self.reference = gaussian_stats(extract(self.net, pixels)[1])

    @torch.no_grad()
    def __call__(self, generate) -> dict:
        """`generate(noise, labels) -> model-space samples` on the device; returns the log record."""
        t0 = time.perf_counter()
        outs = []
        for i in range(0, self.n, 500):
            noise = self.noise[i:i + 500].to(self.device)
            labels = None if self.labels is None else self.labels[i:i + 500].to(self.device)
            outs.append(self.space.decode(generate(noise, labels)).clamp(-1, 1).cpu())
        images: Tensor = torch.cat(outs)
        logits, feats = extract(self.net, images)
        record = {"eval_fd": frechet_distance(gaussian_stats(feats), self.reference), "eval_samples": self.n}
        if self.labels is not None and self.info["num_classes"] > int(self.labels.max()):
            record["eval_acc"] = float((logits.argmax(1) == self.labels).float().mean())
        record["eval_seconds"] = time.perf_counter() - t0
        return record
