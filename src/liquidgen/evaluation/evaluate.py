"""`liquidgen eval`: score generated images against a dataset.

Samples come from an `.npz` (what `sample --out x.npz` writes) or are generated from a checkpoint with a
fixed seed and a class-balanced label list (`generate.Pipeline.generate`), so the same command gives the
same number. Feature networks:
- a reference classifier (`classifier.py`): classifier FD, precision/recall in its features, and the class
  accuracy of labelled samples - the metric that works offline;
- a second, independent one (`classifier.recipes_for`: another architecture and seed): classifier-2 FD / KID, so
  that a ranking can be checked in two feature spaces (`rank_agreement`);
- the FID Inception-v3 (`inception.py`), when its weights are available: FID, KID, precision/recall.
Reference features are cached per (dataset, split, size, a fingerprint of the reference images, feature network)
under `cache_dir`, so only the samples are featurised after the first run, and another dataset of the same name,
count and size (another --root, another .npz) is never scored against the first one's features.

Samples that differ from the reference in channels, size or classes are scored with a warning (the number is
still a distance, but not the one expected); a classifier fitted on other images than the reference's is an
error, since its features and classes mean nothing there.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..autoencoders.safe_loading import first_line
from ..checkpoint import save_safetensors
from ..data import ImageData, load_dataset, load_split, read_npz, warn
from ..latent_space import to_float
from .classifier import ensure_classifier, extract, file_id, load_classifier, recipe_tag, recipes_for
from .metrics import (
    bootstrap_frechet,
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
    precision_recall,
)

DEFAULT_CACHE = Path("~/.cache/liquidgen/eval")
# Datasets liquidgen loads by name, whose reference classifier `eval` and `bench quality` fit when none is given.
BUILT_IN = ("digits", "mnist", "cifar10")
BOOTSTRAP_ROUNDS = 200  # a 95% percentile interval of FD; 2.7 s for 10,000 128-d features on 2 CPU cores
SAMPLES_FORMAT = ("what `liquidgen sample --out FILE.npz` writes: uint8 'images' (N, H, W, C) with C = 1 or 3, "
                  "optional integer 'labels' (N,) and 'class_names'")


@dataclass
class Samples:
    """A samples .npz. labels: int64 (N,), None when absent or when the file's empty class_names mark them as
    the placeholders of an unconditional model; class_names: the generating model's classes, None when the
    file does not say."""

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor | None
    class_names: list[str] | None


def read_samples(path: str | Path) -> Samples:
    """A samples .npz, checked; anything else is one ValueError naming the file and what it should hold."""
    path = Path(path)
    arrays = read_npz(path)  # a folder, a missing, truncated or non-npz file, arrays of Python objects
    if "images" not in arrays:
        raise ValueError(f"{path}: no 'images' array (found: {', '.join(arrays) or 'nothing'}); expected "
                         f"{SAMPLES_FORMAT}")
    images = check_images(arrays["images"], path)
    names = class_names(arrays.get("class_names"), path)
    labels = None if names == [] else check_labels(arrays.get("labels"), len(images), names, path)
    return Samples(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, names)


def load_samples(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """(images, labels) of `read_samples`."""
    samples = read_samples(path)
    return samples.images, samples.labels


def check_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype != np.uint8:
        nan = " with NaN values" if images.dtype.kind == "f" and np.isnan(images).any() else ""
        raise ValueError(f"{path}: 'images' is {images.dtype}{nan}, not uint8 (0..255); expected {SAMPLES_FORMAT}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        layout = " (channels first?)" if images.ndim == 4 and images.shape[1] in (1, 3) else ""
        raise ValueError(f"{path}: 'images' has shape {images.shape}{layout}; expected {SAMPLES_FORMAT}")
    if not images.size:
        raise ValueError(f"{path}: 'images' holds no pixels (shape {images.shape}); expected {SAMPLES_FORMAT}")
    return images


def class_names(names: np.ndarray | None, path: Path) -> list[str] | None:
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ValueError(f"{path}: 'class_names' is {names.dtype} {names.shape}; expected a 1-d str array")
    return [str(n) for n in names.tolist()]


def check_labels(labels: np.ndarray | None, n: int, names: list[str] | None, path: Path) -> Tensor | None:
    if labels is None:
        return None
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: 'labels' is {labels.dtype} {labels.shape}; expected integer class indices, one "
                         f"per image ({n},)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (names is not None and high >= len(names)):
        within = f"0..{len(names) - 1} (its {len(names)} class_names)" if names is not None else ">= 0"
        raise ValueError(f"{path}: 'labels' run from {low} to {high}; expected class indices {within}")
    return torch.from_numpy(labels.astype(np.int64))


def describe(channels: int, size: str | int, classes: int | None = None) -> str:
    kind = "grayscale" if channels == 1 else "RGB" if channels == 3 else f"{channels}-channel"
    of = "" if classes is None else f" of {classes} classes" if classes else " without classes"
    return f"{kind} {size} px images{of}"


def comparable_labels(images: Tensor, labels: Tensor | None, names: list[str] | None, reference: ImageData,
                      reference_name: str, scoring_classes: bool) -> Tensor | None:
    """Warnings for samples that differ from the reference in channels, size or classes (scored anyway, but
    not what one would expect); returns the labels, or None where class accuracy would compare other classes."""
    height, width = images.shape[-2:]
    sample_size = f"{height}x{width}" if height != width else height
    if images.shape[1] != reference.channels:
        ours, theirs = describe(images.shape[1], sample_size), describe(reference.channels, reference.size)
        warn(f"scoring {ours} against the {theirs} of {reference_name}: grayscale is repeated to RGB for Inception "
             f"and RGB averaged to gray for a grayscale classifier; is the reference the samples' dataset?")
    if (height, width) != (reference.size, reference.size):
        warn(f"scoring {sample_size} px samples against the {reference.size} px images of {reference_name}: both are "
             f"resized for the feature networks, so the score also measures the difference in size")
    if labels is None or not len(labels):
        return labels
    left_out = "; class_accuracy is left out" if scoring_classes else ""
    if names is not None and reference.num_classes and len(names) != reference.num_classes:
        warn(f"the samples come from a model of {len(names)} classes, the reference {reference_name} has "
             f"{reference.num_classes}: their labels mean other classes{left_out}")
        return None
    if reference.num_classes and int(labels.max()) >= reference.num_classes:
        warn(f"the samples are labelled up to class {int(labels.max())}, the reference {reference_name} has "
             f"{reference.num_classes} classes (samples of another dataset?){left_out}")
        return None
    if names and reference.class_names and names != reference.class_names:
        warn(f"the samples' classes ({', '.join(names[:3])}, ...) are named unlike those of {reference_name} "
             f"({', '.join(reference.class_names[:3])}, ...): labels are compared by index")
    return labels


def check_classifier(info: dict, reference: ImageData, reference_name: str, path: str | Path,
                     dataset_name: str | None = None) -> None:
    """ValueError when the reference classifier was fitted on images unlike the reference's: its features and
    classes would mean nothing there. `dataset_name` (the reference's dataset, where known): a classifier of
    another built-in dataset is refused even when its image shape fits (MNIST's classifier on digits, say)."""
    fitted = describe(info["channels"], info["size"], info["num_classes"])
    wanted = describe(reference.channels, reference.size, reference.num_classes or None)
    dataset = f" ({info['dataset']})" if info.get("dataset") else ""
    other_classes = reference.num_classes and info["num_classes"] != reference.num_classes
    if other_classes or info["channels"] != reference.channels:
        raise ValueError(f"reference classifier {path} was fitted on {fitted}{dataset}, but {reference_name} has "
                         f"{wanted}; fit one on this dataset with `liquidgen eval fit-classifier --data NAME "
                         f"--size {reference.size} --out FILE`")
    if info["size"] != reference.size:
        raise ValueError(f"reference classifier {path} was fitted on {info['size']} px images, but {reference_name} "
                         f"is loaded at {reference.size} px; load the reference at the classifier's size "
                         f"(eval --size {info['size']}) or fit a classifier at {reference.size} px")
    fitted_on = info.get("dataset")
    if dataset_name in BUILT_IN and fitted_on in BUILT_IN and fitted_on != dataset_name:
        raise ValueError(f"reference classifier {path} was fitted on {fitted_on}, but the reference is "
                         f"{dataset_name}: its features would not describe {dataset_name}'s images; leave out "
                         f"--classifier to use {dataset_name}'s own (fitted once and cached), or fit one with "
                         f"`liquidgen eval fit-classifier --data {dataset_name} --out FILE`")


def cache_folder(cache_dir: str | Path) -> Path:
    folder = Path(cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"eval cache folder {folder} cannot be created ({e.strerror or e}); pass --cache a "
                      f"writable folder") from None
    return folder


def reference_features(name: str, feature_id: str, featurize, data: ImageData, cache_dir: Path) -> Tensor:
    """Features of a reference dataset, cached as safetensors keyed by dataset and feature network; an
    unreadable cache entry is computed again."""
    path = cache_folder(cache_dir) / f"{name}-{feature_id}.safetensors"
    if path.is_file():
        try:
            return load_file(path)["features"].double()
        except (SafetensorError, OSError, KeyError) as e:
            warn(f"cached reference features {path} are unreadable ({first_line(e)}); computing them again")
    if not os.access(path.parent, os.W_OK):  # before the featurising, which can take minutes
        raise OSError(f"eval cache folder {path.parent} is not writable; pass --cache a writable folder")
    features = featurize(data.images)
    try:
        save_safetensors({"features": features.float()}, path)
    except OSError as e:
        raise OSError(f"could not write {path} to the eval cache ({e.strerror or e}); pass --cache a writable "
                      f"folder") from None
    return features


def check_sample_tensor(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) < 2:
        raise ValueError(f"samples to score must be at least 2 uint8 images (N, 1 or 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")


def evaluate(images: Tensor, labels: Tensor | None, reference: ImageData, reference_name: str,
             classifier: str | Path | None = None, inception_weights: str | Path | None = None,
             use_inception: bool = False, cache_dir: str | Path = DEFAULT_CACHE,
             device: torch.device | str = "cpu", k: int = 3, class_names: list[str] | None = None,
             bootstrap: int = BOOTSTRAP_ROUNDS, second_classifier: str | Path | None = None) -> dict:
    """Metrics of uint8 `images` against `reference`; `reference_name` names its cache entries (dataset,
    split, size). `class_names`: the classes of the model that made the samples, where known (None: unknown).
    `second_classifier`: another reference classifier, scored as classifier2_* (an independent feature space).
    Samples unlike the reference are scored with a warning; a classifier fitted on other images is an error.
    FDs come with a `bootstrap`-round 95% interval (`*_ci95`), KIDs with their std over subsets.
    Returns a flat dict of numbers (and seconds per stage)."""
    if classifier is None and not (use_inception or inception_weights):
        raise ValueError("nothing to measure with: give a reference classifier and/or Inception weights")
    check_sample_tensor(images)
    labels = comparable_labels(images, labels, class_names, reference, reference_name, classifier is not None)
    result: dict = {"samples": len(images), "reference_images": len(reference)}
    if classifier is not None:
        result |= classifier_scores(images, labels, reference, reference_name, classifier, cache_dir, device, k,
                                    bootstrap)
    if second_classifier is not None:
        result |= classifier_scores(images, None, reference, reference_name, second_classifier, cache_dir, device,
                                    k, bootstrap, prefix="classifier2")
    if use_inception or inception_weights:
        result |= inception_scores(images, reference, reference_name, inception_weights, cache_dir, device, k,
                                   bootstrap)
    return result


def classifier_scores(images: Tensor, labels: Tensor | None, reference: ImageData, reference_name: str,
                      classifier: str | Path, cache_dir: str | Path, device: torch.device | str, k: int,
                      bootstrap: int, prefix: str = "classifier") -> dict:
    t0 = time.perf_counter()
    net, info = load_classifier(classifier, device)
    check_classifier(info, reference, reference_name, classifier)

    def featurize(x: Tensor) -> Tensor:
        return extract(net, to_float(x))[1]

    ref = reference_features(reference_name, f"classifier-{file_id(classifier)}", featurize, reference, cache_dir)
    logits, feats = extract(net, to_float(images))
    pr = precision_recall(ref, feats, k=k)
    ref_stats = gaussian_stats(ref)
    kid, kid_std = kernel_inception_distance(feats, ref, subset_size=min(1000, len(feats), len(ref)))
    result = {f"{prefix}_fd": frechet_distance(gaussian_stats(feats), ref_stats),
              f"{prefix}_fd_ci95": bootstrap_frechet(feats, ref_stats, bootstrap),
              f"{prefix}_kid": kid, f"{prefix}_kid_std": kid_std,  # KID's kernel on classifier features
              f"{prefix}_precision": pr["precision"], f"{prefix}_recall": pr["recall"]}
    if labels is not None and len(labels):
        if int(labels.max()) < info["num_classes"]:
            result["class_accuracy"] = float((logits.argmax(1) == labels).float().mean())
        else:
            warn(f"the samples are labelled up to class {int(labels.max())}, beyond the {info['num_classes']} "
                 f"classes of the reference classifier {classifier}; class_accuracy is left out")
    result[f"{prefix}_test_accuracy"] = info["test_accuracy"]
    result[f"{prefix}_seconds"] = time.perf_counter() - t0
    return result


def inception_scores(images: Tensor, reference: ImageData, reference_name: str,
                     inception_weights: str | Path | None, cache_dir: str | Path, device: torch.device | str,
                     k: int, bootstrap: int) -> dict:
    from .inception import features as inception_features
    from .inception import find_weights, load_inception

    t0 = time.perf_counter()
    weights = find_weights(inception_weights)
    net = load_inception(weights, device)

    def featurize(x: Tensor) -> Tensor:
        return inception_features(net, x)

    # Keyed by the weights file too: reference features of other weights would silently change FID.
    ref = reference_features(reference_name, f"inception-{file_id(weights)}", featurize, reference, cache_dir)
    feats = featurize(images)
    kid, kid_std = kernel_inception_distance(feats, ref, subset_size=min(1000, len(feats), len(ref)))
    pr = precision_recall(ref, feats, k=k)
    ref_stats = gaussian_stats(ref)
    return {"fid": frechet_distance(gaussian_stats(feats), ref_stats),
            "fid_ci95": bootstrap_frechet(feats, ref_stats, bootstrap), "kid": kid, "kid_std": kid_std,
            "precision": pr["precision"], "recall": pr["recall"], "inception_seconds": time.perf_counter() - t0}


def load_reference(name: str, root: str | None, split: str, size: int | None, limit: int | None
                   ) -> tuple[ImageData, bool]:
    """The dataset to compare with, and whether it is held out: `split`, else (a dataset without it, such as
    the CIFAR-10 subset or digits) the train split."""
    data = load_split(name, root, size, split, limit)
    if data is not None:
        return data, True
    return load_dataset(name, root, size, split="train", limit=limit), False


def reference_classifier(data: str, size: int, cache_dir: str | Path, second: bool = False) -> Path | None:
    """Where `eval` / `bench quality` keep the reference classifier of a built-in dataset when none is given
    (fitted there on first use by `ensure_classifier`; `second`: the dataset's second recipe's, `recipes_for`);
    None for other datasets."""
    name = f"classifier-{data}-{size}px" + recipe_tag(recipes_for(data)[1 if second else 0])
    return cache_folder(cache_dir) / f"{name}.safetensors" if data in BUILT_IN else None


def fingerprint(data: ImageData) -> str:
    """8 hex digits of a hash of a dataset's images and labels: the cache names of two datasets that share a name,
    a count and a size (another --root, another .npz) differ, so neither is scored against the other's features."""
    digest = hashlib.sha1(data.images.contiguous().numpy().tobytes())
    digest.update(data.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def subset(data: ImageData, index: Tensor) -> ImageData:
    return ImageData(data.images[index], data.labels[index], data.num_classes, data.class_names)


class Scorer:
    """Scores uint8 samples against one reference dataset (`split`, else train) with a reference classifier,
    fitted into `classifier` first if that file is missing (`classifier.ensure_classifier`; None: the cached one
    of a built-in dataset, `reference_classifier`, unless Inception is asked for), and FID / KID where Inception
    weights are given: what `eval`, `bench quality` and the benchmark scripts share. `second_classifier`: the
    independent second feature space (the dataset's second recipe, `classifier.recipes_for`), fitted there if
    missing; None: a built-in dataset's cached one when the first is the cached one too; False: none.

    Where the dataset has no held-out split (digits, the CIFAR-10 subset), the reference is the training set
    itself, and real images drawn from it would score against themselves (FD 0 once all are drawn). So the
    training set is split in two halves once (a fixed seeded pick): samples and the real-data floor are both
    scored against the same half, and the floor draws its real images from the other (`floor`).
    Everything a score needs (the classifiers fit the reference, the Inception weights exist) is checked here,
    before any sample is drawn."""

    def __init__(self, data: str, root: str | None, classifier: str | Path | None, device: torch.device | str,
                 size: int | None = None, split: str = "test", limit: int | None = None,
                 inception_weights: str | Path | None = None, cache_dir: str | Path = DEFAULT_CACHE,
                 use_inception: bool = False, bootstrap: int = BOOTSTRAP_ROUNDS,
                 second_classifier: str | Path | None | bool = None):
        reference, self.held_out = load_reference(data, root, split, size, limit)
        inception = bool(use_inception or inception_weights)
        if inception:
            from .inception import find_weights
            find_weights(inception_weights)  # a missing file is said now, not after the sampling
        built_in = classifier is None and not inception  # FID alone fits no classifier
        if second_classifier is None:  # the built-in second network goes with the built-in first one
            second_classifier = built_in and reference_classifier(data, reference.size, cache_dir, second=True)
        if built_in:
            classifier = reference_classifier(data, reference.size, cache_dir)
        if classifier is None and not inception:
            raise ValueError(f"nothing to measure with: give --classifier (make one with `liquidgen eval "
                             f"fit-classifier`) and/or --inception-weights / --inception ({data} is not one of the "
                             f"built-in datasets {', '.join(BUILT_IN)}, whose classifier is fitted when missing)")
        shown = f"{data}-{split}-{reference.size}px-{len(reference)}"  # the reference's name in messages
        self.name = f"{shown}-{fingerprint(reference)}"
        self.pool = None  # where the floor's real images come from, without a held-out split
        if not self.held_out:
            pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(0))
            half = len(reference) // 2
            self.pool, reference = subset(reference, pick[:half]), subset(reference, pick[half:])
            self.name += "-half"
        self.reference = reference
        self.classifier = self.second_classifier = None
        for attr, file, recipe in (("classifier", classifier, recipes_for(data)[0]),
                                   ("second_classifier", second_classifier, recipes_for(data)[1])):
            if file:
                setattr(self, attr, ensure_classifier(file, data, root, reference.size, device, recipe))
                info = load_classifier(getattr(self, attr))[1]
                check_classifier(info, reference, shown, file, data)
                fitted_root = info.get("root")
                if built_in and fitted_root not in (None, "None") and (
                        root is None or Path(fitted_root).expanduser().resolve() != Path(root).expanduser().resolve()):
                    warn(f"the cached reference classifier {file} was fitted on {data} from {info['root']}, this "
                         f"reference is read from {root}; if that folder holds other images, pass --cache a "
                         f"folder of its own")
        self.data, self.root = data, root
        self.inception_weights, self.use_inception, self.cache_dir = inception_weights, use_inception, cache_dir
        self.device, self.bootstrap = device, bootstrap

    def __call__(self, images: Tensor, labels: Tensor | None, class_names: list[str] | None = None) -> dict:
        return evaluate(images, labels, self.reference, self.name, classifier=self.classifier,
                        inception_weights=self.inception_weights, use_inception=self.use_inception,
                        cache_dir=self.cache_dir, device=self.device, class_names=class_names,
                        bootstrap=self.bootstrap, second_classifier=self.second_classifier)

    def floor(self, n: int, seed: int = 0, through: Callable[[Tensor], Tensor] | None = None) -> dict:
        """What n real training images (a seeded random pick; all of them if fewer) score against the
        reference: the floor below which no model can be told apart, at the sample count of the score it is
        shown beside (FD's small-sample bias depends on n). Without a held-out split they come from the half of
        the training set that is not the reference (`floor_split_half`).
        `through` maps the drawn uint8 images to what a model's data space makes of them (an autoencoder's round
        trip), so the floor is what a perfect model of that space would score."""
        real = load_dataset(self.data, self.root, self.reference.size, split="train") if self.held_out else self.pool
        if len(real) < n:
            warn(f"{self.data} has {len(real)} training images for the real-data floor"
                 f"{'' if self.held_out else ' (half of them: the other half is the reference)'}, fewer than the "
                 f"{n} samples scored: it is measured at {len(real)}, and is higher than it would be at {n}")
        drawn = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
        images = real.images[drawn] if through is None else through(real.images[drawn])
        return {"floor": True, **({} if self.held_out else {"floor_split_half": True}),
                **self(images, real.labels[drawn])}


# (FD key, its label, KID key) of each feature space a score can hold, in the order the table shows them.
FEATURE_SPACES = (("classifier_fd", "classifier FD", "classifier_kid"),
                  ("classifier2_fd", "classifier-2 FD", "classifier2_kid"), ("fid", "FID", "kid"))


def best_point(points: list[dict]) -> dict:
    """The point of a guidance sweep with the lowest FD (the classifier's where measured, else FID); with prompt
    retrieval alone, the one with the highest top-5."""
    key = next((fd for fd, _, _ in FEATURE_SPACES if fd in points[0]), None)
    if key is None:
        return max(points, key=lambda p: p["prompt_top5"])
    return min(points, key=lambda p: p[key])


def sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def rank_agreement(points: list[dict], names: list[str]) -> str | None:
    """Whether the feature spaces measured in every point order the points (contenders, or guidance scales) alike:
    Kendall's tau between each space's order and the first's, and whether their best three agree. None where
    fewer than two spaces or points are there."""
    spaces = [(fd, label) for fd, label, _ in FEATURE_SPACES if all(fd in p for p in points)]
    if len(spaces) < 2 or len(points) < 2:
        return None
    (first, first_label), lines = spaces[0], []
    for fd, label in spaces[1:]:
        pairs = [(i, j) for i in range(len(points)) for j in range(i + 1, len(points))]
        # Kendall's tau-a (Kendall 1938): (concordant - discordant) / pairs; a pair tied in either space is neither
        # and adds 0 (it used to count as discordant, -1)
        concordant = sum(sign((points[i][first] - points[j][first]) * (points[i][fd] - points[j][fd]))
                         for i, j in pairs)
        top = [sorted(range(len(points)), key=lambda i, k=key: points[i][k])[:3] for key in (first, fd)]
        agree = "the same" if top[0] == top[1] else "different"
        lines.append(f"{first_label} vs {label}: Kendall tau {concordant / len(pairs):+.2f} over {len(points)}; best "
                     f"three {agree} ({', '.join(names[i] for i in top[0])} | {', '.join(names[i] for i in top[1])})")
    return "\n".join(lines)


def sweep_table(points: list[dict], floor: dict | None) -> str:
    """A markdown table of a guidance sweep: one row per scale (the best marked), then the real-data floor."""
    spaces = [(fd, label, kid) for fd, label, kid in FEATURE_SPACES if fd in points[0]]
    has_acc = "class_accuracy" in points[0]
    head = ["cfg", *[f"{label} [95% CI] | {label.replace('FD', 'KID').replace('FID', 'KID')} ± std"
                     for _, label, _ in spaces], *(["class acc"] if has_acc else [])]
    lines = ["| " + " | ".join(head) + " |", "|---" * sum(h.count("|") + 1 for h in head) + "|"]
    best = best_point(points) if len(points) > 1 else None
    for p in [*points, *([floor] if floor else [])]:
        scale = "-" if p.get("cfg") is None else f"{p['cfg']:g}" + (" (best)" if p is best else "")
        name = f"real ({p['samples']:,})" if p.get("floor") else scale
        cells = [name]
        for fd, _, kid in spaces:
            low, high = p[f"{fd}_ci95"]
            cells += [f"{p[fd]:.2f} [{low:.2f}, {high:.2f}]", f"{p[kid]:.4g} ± {p[kid + '_std']:.2g}"]
        if has_acc:
            cells.append(f"{p['class_accuracy']:.3f}" if "class_accuracy" in p else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
