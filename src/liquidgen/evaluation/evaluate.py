"""`liquidgen eval`: score generated images against a dataset.

Samples come from an `.npz` (what `sample --out x.npz` writes) or are generated from a checkpoint with a
fixed seed and a class-balanced label list (`generate.Pipeline.generate`), so the same command gives the
same number. Feature networks:
- a reference classifier (`classifier.py`): classifier FD, precision/recall in its features, and the class
  accuracy of labelled samples - the metric that works offline;
- the FID Inception-v3 (`inception.py`), when its weights are available: FID, KID, precision/recall.
Reference features are cached per (dataset, split, size, feature network) under `cache_dir`, so only
the samples are featurised after the first run.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data import ImageData, load_dataset, load_split
from ..latent_space import to_float
from .classifier import ensure_classifier, extract, file_id, load_classifier
from .metrics import (
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
    precision_recall,
)

DEFAULT_CACHE = Path("~/.cache/liquidgen/eval")


def load_samples(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """uint8 (N, C, H, W) images and int64 labels (None if absent) from a samples .npz."""
    with np.load(path, allow_pickle=False) as z:
        if "images" not in z.files:
            raise ValueError(f"{path}: no 'images' array (found: {', '.join(z.files)})")
        images = z["images"]
        labels = z["labels"] if "labels" in z.files else None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: 'images' must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), \
        None if labels is None else torch.from_numpy(labels.astype(np.int64))


def reference_features(name: str, feature_id: str, featurize, data: ImageData, cache_dir: Path) -> Tensor:
    """Features of a reference dataset, cached as safetensors keyed by dataset and feature network."""
    path = Path(cache_dir).expanduser() / f"{name}-{feature_id}.safetensors"
    if path.is_file():
        return load_file(path)["features"].double()
    features = featurize(data.images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": features.float().contiguous()}, tmp)
    tmp.replace(path)
    return features


def evaluate(images: Tensor, labels: Tensor | None, reference: ImageData, reference_name: str,
             classifier: str | Path | None = None, inception_weights: str | Path | None = None,
             use_inception: bool = False, cache_dir: str | Path = DEFAULT_CACHE,
             device: torch.device | str = "cpu", k: int = 3) -> dict:
    """Metrics of uint8 `images` against `reference`; `reference_name` names its cache entries (dataset,
    split, size). Returns a flat dict of numbers (and seconds per stage)."""
    if classifier is None and not (use_inception or inception_weights):
        raise ValueError("nothing to measure with: give a reference classifier and/or Inception weights")
    result: dict = {"samples": len(images), "reference_images": len(reference)}
    cache_dir = Path(cache_dir)
    if classifier is not None:
        t0 = time.perf_counter()
        net, info = load_classifier(classifier, device)

        def featurize(x: Tensor) -> Tensor:
            return extract(net, to_float(x))[1]

        ref = reference_features(reference_name, f"classifier-{file_id(classifier)}", featurize, reference, cache_dir)
        logits, feats = extract(net, to_float(images))
        result["classifier_fd"] = frechet_distance(gaussian_stats(feats), gaussian_stats(ref))
        pr = precision_recall(ref, feats, k=k)
        result["classifier_precision"], result["classifier_recall"] = pr["precision"], pr["recall"]
        if labels is not None and len(labels) and int(labels.max()) < info["num_classes"]:
            result["class_accuracy"] = float((logits.argmax(1) == labels).float().mean())
        result["classifier_test_accuracy"] = info["test_accuracy"]
        result["classifier_seconds"] = time.perf_counter() - t0
    if use_inception or inception_weights:
        from .inception import features as inception_features
        from .inception import load_inception

        t0 = time.perf_counter()
        net = load_inception(None if inception_weights is None else str(inception_weights), device)

        def featurize(x: Tensor) -> Tensor:
            return inception_features(net, x)

        ref = reference_features(reference_name, "inception-fid", featurize, reference, cache_dir)
        feats = featurize(images)
        result["fid"] = frechet_distance(gaussian_stats(feats), gaussian_stats(ref))
        kid, kid_std = kernel_inception_distance(feats, ref, subset_size=min(1000, len(feats), len(ref)))
        result["kid"], result["kid_std"] = kid, kid_std
        pr = precision_recall(ref, feats, k=k)
        result["precision"], result["recall"] = pr["precision"], pr["recall"]
        result["inception_seconds"] = time.perf_counter() - t0
    return result


def load_reference(name: str, root: str | None, split: str, size: int | None, limit: int | None) -> ImageData:
    """The dataset to compare with: `split`, else (a dataset without it) the train split."""
    data = load_split(name, root, size, split, limit)
    return data if data is not None else load_dataset(name, root, size, split="train", limit=limit)


class Scorer:
    """Scores uint8 samples against one reference dataset (`split`, else train) with a reference classifier,
    fitted into `classifier` first if that file is missing (`classifier.ensure_classifier`), and FID / KID
    where Inception weights are given: what `bench quality` and the benchmark scripts share."""

    def __init__(self, data: str, root: str | None, classifier: str | Path | None, device: torch.device | str,
                 size: int | None = None, split: str = "test", limit: int | None = None,
                 inception_weights: str | Path | None = None, cache_dir: str | Path = DEFAULT_CACHE):
        self.classifier = None if classifier is None else ensure_classifier(classifier, data, root, size, device)
        self.reference = load_reference(data, root, split, size, limit)
        self.name = f"{data}-{split}-{self.reference.size}px-{len(self.reference)}"
        self.inception_weights, self.cache_dir, self.device = inception_weights, cache_dir, device

    def __call__(self, images: Tensor, labels: Tensor | None) -> dict:
        return evaluate(images, labels, self.reference, self.name, classifier=self.classifier,
                        inception_weights=self.inception_weights, cache_dir=self.cache_dir, device=self.device)
