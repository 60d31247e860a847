"""Reference classifiers: the offline quality metric.

Inception weights cannot be downloaded everywhere, so liquidgen trains its own small classifier per
labelled dataset with one fixed recipe and seed (`liquidgen eval fit-classifier`). Its penultimate
layer is a feature space for a Frechet distance ("classifier FD", like FID but in this network's
features, so only comparable between runs scored by the same classifier file), and its predictions
give the class accuracy of class-conditional or prompted samples. Numbers from it are not FID.

A second, independent feature space (`SECOND`): a differently built network (residual, GroupNorm, strided
convolutions, 256-d features) trained from another seed. Two feature spaces that rank models alike make a ranking
more than one network's taste; where they disagree, the disagreement is reported, not hidden.

A classifier is one safetensors file: the weights, plus the recipe, dataset and test accuracy as JSON
in the file's metadata, so nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..autoencoders.safe_loading import first_line
from ..checkpoint import save_safetensors, state_dict_problems
from ..data import ImageData, load_dataset, load_split
from ..latent_space import to_float

FEATURES = 128


@dataclass(frozen=True)
class Recipe:
    """The fixed training recipe (changing it changes every number measured with the classifier)."""

    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    hflip: bool = True  # RGB datasets only: digits must not be mirrored
    holdout: int = 500  # images held out for the accuracy when the dataset has no test split
    arch: str = "cnn"  # ARCHITECTURES
    width: int = 0  # channels of the first stage; 0: the architecture's default
    shift: int = 0  # random translation by up to this many pixels (reflect-padded crops), for small datasets
    weight_decay: float = 0.0  # AdamW's decoupled decay
    label_smoothing: float = 0.0
    cosine: bool = False  # the learning rate decays to 0 on a half cosine over the run


class ReferenceClassifier(nn.Module):
    """A small CNN for any (channels, size): conv blocks, average pooling to 4x4, a 128-d feature layer."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 32):
        super().__init__()
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(4 * width, 4 * width, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(4 * width * 16, FEATURES), nn.GELU())
        self.head = nn.Linear(FEATURES, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [-1, 1] -> (logits, features)."""
        f = self.body(fit_input(x, self.channels, self.size))
        return self.head(f), f


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, stride, 1),
                                 nn.GroupNorm(8, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.net(x)


class ResidualClassifier(nn.Module):
    """The second feature space: pre-activation residual blocks with GroupNorm and SiLU, strided downsampling,
    global average pooling and 256-d features; nothing in common with ReferenceClassifier but the task."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 48):
        super().__init__()
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), ResidualBlock(width, width, 1),
            ResidualBlock(width, 2 * width, 2), ResidualBlock(2 * width, 4 * width, 2),
            nn.GroupNorm(8, 4 * width), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, 2 * FEATURES), nn.SiLU())
        self.head = nn.Linear(2 * FEATURES, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.body(fit_input(x, self.channels, self.size))
        return self.head(f), f


ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": ReferenceClassifier, "resnet": ResidualClassifier}
# The second feature space's recipe: another network, another seed (eval's classifier-2 FD).
SECOND = Recipe(arch="resnet", seed=1, lr=2e-3)
# Datasets whose default recipes do not rank: (first, second). CIFAR-10's 4,000-image subset (3,500 to train,
# the last 500 held out): the 3-epoch recipes reach 36% / 24%, these 72.4% / 71.0% on an H200 in 6.5 s / 20 s
# (benchmarks/cifar_classifier.py; results/2026-12-04-cifar-classifier). On a CPU they take tens of minutes /
# hours; `eval --classifier2 none` skips the second.
_SMALL_RGB = Recipe(epochs=100, lr=2e-3, shift=4, weight_decay=0.05, label_smoothing=0.1, cosine=True)
RECIPES: dict[str, tuple[Recipe, Recipe]] = {
    "cifar10": (replace(_SMALL_RGB, arch="cnn", width=64, seed=1), replace(_SMALL_RGB, arch="resnet", width=64,
                                                                          epochs=200)),
}


def recipes_for(data: str) -> tuple[Recipe, Recipe]:
    """(first, second) reference recipes of dataset `data`."""
    return RECIPES.get(data, (Recipe(), SECOND))


def recipe_tag(recipe: Recipe) -> str:
    """A cached classifier file's name suffix: none for the default recipe, the architecture for SECOND (the
    names files had before per-dataset recipes), else the architecture and a hash of the recipe, so that a file
    fitted with another recipe is never taken for this one."""
    if recipe == Recipe():
        return ""
    if recipe == SECOND:
        return f"-{recipe.arch}"
    return f"-{recipe.arch}-{hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:8]}"


def fit_input(x: Tensor, channels: int, size: int) -> Tensor:
    """Samples as a classifier of (channels, size) takes them: grey <-> RGB, resized when the size differs."""
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = x.mean(1, keepdim=True)  # decoded RGB samples of a grayscale dataset
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise ValueError(f"classifier takes {channels}-channel images, got {x.shape[1]}")
    if x.shape[-2:] != (size, size):  # 64 px samples of a latent model of a 32 px dataset; non-square samples
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def fit_classifier(train: ImageData, test: ImageData | None, device: torch.device | str = "cpu",
                   recipe: Recipe = Recipe(), progress: bool = True) -> tuple[nn.Module, dict]:
    """Train a reference classifier; `test` None holds out the last `recipe.holdout` images instead.
    Returns (classifier in eval mode, info with the test accuracy)."""
    if train.num_classes < 2:
        raise ValueError("a reference classifier needs a labelled dataset with at least 2 classes")
    if test is None:
        if len(train) <= 2 * recipe.holdout:
            raise ValueError(f"{len(train)} images are too few to hold out {recipe.holdout} for testing")
        n = len(train) - recipe.holdout
        test = ImageData(train.images[n:], train.labels[n:], train.num_classes, train.class_names)
        train = ImageData(train.images[:n], train.labels[:n], train.num_classes, train.class_names)
    device = torch.device(device)
    torch.manual_seed(recipe.seed)
    if recipe.arch not in ARCHITECTURES:
        raise ValueError(f"classifier architecture {recipe.arch!r} is not one of {', '.join(ARCHITECTURES)}")
    model = build_classifier(recipe.arch, train.channels, train.size, train.num_classes, recipe.width).to(device)
    # Adam without decay, exactly as the recipes before weight decay: their classifier files stay reproducible
    optimizer = (torch.optim.AdamW(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
                 if recipe.weight_decay else torch.optim.Adam(model.parameters(), recipe.lr))
    x, y = train.images.to(device), train.labels.to(device)
    g = torch.Generator().manual_seed(recipe.seed)  # a CPU generator: the same order on every device
    flip = recipe.hflip and train.channels == 3
    steps = recipe.epochs * (len(x) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))) if recipe.cosine else (lambda i: 1.0))
    bar = tqdm(total=steps, desc="classifier", disable=None if progress else True)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=g)
        for idx in order[: len(x) // recipe.batch_size * recipe.batch_size].split(recipe.batch_size):
            idx = idx.to(device)
            xb = to_float(x[idx])
            if flip:
                mirror = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                xb = torch.where(mirror[:, None, None, None], xb.flip(-1), xb)
            if recipe.shift:
                xb = random_shift(xb, recipe.shift, g)
            loss = F.cross_entropy(model(xb)[0], y[idx], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
    bar.close()
    model.eval().requires_grad_(False)
    logits, _ = extract(model, to_float(test.images))
    accuracy = float((logits.argmax(1) == test.labels).float().mean())
    info = {"channels": train.channels, "size": train.size, "num_classes": train.num_classes,
            "class_names": train.class_names, "recipe": asdict(recipe), "train_images": len(train),
            "test_images": len(test), "test_accuracy": accuracy}
    return model, info


def random_shift(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    """Each image translated by its own random offset in [-pad, pad]^2, the border reflected (the pad-and-crop
    augmentation of small-data CIFAR training)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=g)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


def build_classifier(arch: str, channels: int, size: int, num_classes: int, width: int = 0) -> nn.Module:
    """A reference network of `arch` (ARCHITECTURES); `width` 0 keeps the architecture's default."""
    return ARCHITECTURES[arch](channels, size, num_classes, **({"width": width} if width else {}))


@torch.no_grad()
def extract(model: nn.Module, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(logits, float64 features) on the CPU for float images in [-1, 1], batched on the model's device."""
    device = next(model.parameters()).device
    outs = [model(b.to(device).float()) for b in images.split(batch_size)]
    return torch.cat([o[0].cpu() for o in outs]), torch.cat([o[1].double().cpu() for o in outs])


def save_classifier(model: nn.Module, info: dict, path: str | Path) -> Path:
    return save_safetensors(model.state_dict(), path, {"liquidgen_classifier": json.dumps(info)})


def ensure_classifier(path: str | Path, data: str, root: str | None, size: int | None,
                      device: torch.device | str = "cpu", recipe: Recipe | None = None) -> Path:
    """`path`, after fitting the reference classifier of dataset `data` there (with `recipe`; None: the
    dataset's first, `recipes_for`) if the file is missing. Without a test split, `fit_classifier` holds out the
    last training images instead."""
    path = Path(path).expanduser()
    recipe = recipe or recipes_for(data)[0]
    if not path.is_file():
        print(f"fitting the reference classifier {path} on {data} ({recipe.arch}, fixed recipe, {recipe.epochs} "
              f"epochs)", flush=True)
        model, info = fit_classifier(load_dataset(data, root, size, split="train"),
                                     load_split(data, root, size, "test"), device, recipe)
        info.update(dataset=data, root=str(root))
        save_classifier(model, info, path)
    return path


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The classifier in the .safetensors file `path` and its info; every unusable file is one ValueError naming
    it (FileNotFoundError when it is missing)."""
    path = Path(path).expanduser()
    make = f"make one with `liquidgen eval fit-classifier --data NAME --root DIR --out {path}`"
    if path.is_dir():
        raise ValueError(f"reference classifier {path} is a folder; pass the .safetensors file, or {make}")
    if not path.is_file():
        raise FileNotFoundError(f"reference classifier {path} not found; {make}")
    info, state = read_classifier_file(path, make)
    model = build_classifier(info["recipe"].get("arch", "cnn"), info["channels"], info["size"], info["num_classes"],
                             info["recipe"].get("width", 0))
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise ValueError(f"{path}: its weights do not fit the {info['channels']}-channel, {info['num_classes']}-class "
                         f"reference classifier its metadata describes ({problems}); {make}")
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), info


def read_safetensors_with_metadata(path: Path, key: str, what: str, make: str) -> tuple[dict, dict[str, Tensor]]:
    """(the JSON object in metadata `key`, tensors) of one of liquidgen's evaluation networks (`what`, e.g.
    "reference classifier"); anything else is one ValueError naming the file and how to `make` a good one."""
    not_ours = f"{path} is not a liquidgen {what}"
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    except (SafetensorError, OSError, ValueError) as e:  # garbage, truncated, unreadable
        raise ValueError(f"{not_ours} (unreadable as safetensors: {first_line(e)}); {make}") from None
    if key not in meta:
        raise ValueError(f"{not_ours} (a safetensors file without its {key!r} metadata); {make}")
    try:
        info = json.loads(meta[key])
    except ValueError as e:
        raise ValueError(f"{not_ours} (its metadata is unreadable: {e}); {make}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{not_ours} (its metadata is {type(info).__name__}, not an object); {make}")
    return info, state


def read_classifier_file(path: Path, make: str) -> tuple[dict, dict[str, Tensor]]:
    """(info from the metadata, tensors) of a classifier file, with the info's sizes checked."""
    not_ours = f"{path} is not a liquidgen reference classifier"
    info, state = read_safetensors_with_metadata(path, "liquidgen_classifier", "reference classifier", make)
    try:
        sizes = {k: info[k] for k in ("channels", "size", "num_classes")}
    except KeyError as e:
        raise ValueError(f"{not_ours} (its metadata is unreadable: {e}); {make}") from None
    recipe = info.setdefault("recipe", {})  # files from before the second network name no architecture: cnn
    if not isinstance(recipe, dict) or recipe.get("arch", "cnn") not in ARCHITECTURES:
        raise ValueError(f"{not_ours} (its metadata's recipe {recipe!r} names no known architecture); {make}")
    if not (sizes["channels"] in (1, 3) and all(isinstance(v, int) and v >= 1 for v in sizes.values())
            and sizes["num_classes"] >= 2):
        raise ValueError(f"{not_ours} (its metadata describes {sizes}); {make}")
    return info, state


def file_id(path: str | Path) -> str:
    """A short content hash: reference statistics are cached per feature network by it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
