"""In-training evaluation: every `train.eval_every` steps, a small-sample score of the EMA weights.

Cheap by construction: a fixed set of noise and labels (the same samples improving, so the curve is not
noisy from resampling), the reference classifier's features (no Inception), and reference features
computed once at start. Logged to metrics.jsonl as `eval_fd` / `eval_acc` / `eval_seconds` and plotted
to eval.png beside loss.png. It is the classifier FD of `classifier.py`, not FID.
"""
from __future__ import annotations

import time

import torch

from ..config import SampleConfig
from ..generate import Pipeline
from .classifier import extract, load_classifier
from .metrics import frechet_distance, gaussian_stats


class TrainingEval:
    def __init__(self, classifier: str, data, n: int, seed: int, device: torch.device):
        self.net, self.info = load_classifier(classifier, device)
        if data.num_classes and self.info["num_classes"] != data.num_classes:
            # eval_acc would compare other classes, eval_fd features of another dataset.
            raise ValueError(f"train.eval_classifier {classifier} was fitted on {self.info['num_classes']} classes, "
                             f"the training data has {data.num_classes}; fit one on this dataset with "
                             f"`liquidgen eval fit-classifier`")
        self.n = n
        g = torch.Generator().manual_seed(seed + 2)
        self.noise = torch.randn(n, data.channels, data.size, data.size, generator=g)
        self.labels = torch.arange(n) % data.num_classes if data.num_classes else None
        # Reference: the first n training items as pixels (latent datasets are decoded once, here).
        ref = data.images[: max(n, 2)]
        pixels = torch.cat([data.space.decode(data.to_model(b.to(device))).cpu() for b in ref.split(500)])
        self.reference = gaussian_stats(extract(self.net, pixels)[1])

    @torch.no_grad()
    def __call__(self, pipe: Pipeline, settings: SampleConfig) -> dict:
        """Score `pipe`'s samples of the fixed inputs; returns the log record."""
        t0 = time.perf_counter()
        x = pipe.sample(self.noise, self.labels if pipe.model.num_classes else None, settings, batch_size=500)
        images = torch.cat([pipe.decode(b).clamp(-1, 1).cpu() for b in x.split(500)])
        logits, feats = extract(self.net, images)
        record = {"eval_fd": frechet_distance(gaussian_stats(feats), self.reference), "eval_samples": self.n}
        if self.labels is not None and pipe.model.num_classes and self.info["num_classes"] > int(self.labels.max()):
            record["eval_acc"] = float((logits.argmax(1) == self.labels).float().mean())
        record["eval_seconds"] = time.perf_counter() - t0
        return record
