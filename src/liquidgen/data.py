"""In-memory image datasets and a deterministic, resumable batch sampler.

Every dataset loads into one tensor (N, C, H, W): uint8 images, or float16 latents of a precomputed
dataset (the folder `liquidgen precompute` writes, read here through the name "precomputed");
`BatchSampler` moves it to the training device once, so a step costs an index and a conversion there.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from PIL import Image, ImageOps

from .latent_space import LatentSpace, to_float

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "BatchSampler",
    "ImageData",
    "UnreadableImage",
    "PrecomputedData",
    "load_dataset",
    "load_precomputed",
    "read_image",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


@dataclass
class ImageData:
    """A whole image dataset held in memory as uint8."""

    images: torch.Tensor  # uint8, (N, C, H, W), C in {1, 3}, H == W
    labels: torch.Tensor  # int64, (N,); all zeros when the dataset has no labels
    num_classes: int  # 0 for an unlabelled dataset
    class_names: list[str]  # len == num_classes

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
            raise ValueError(f"images must be uint8 (N, 1|3, S, S), got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (len(x),):
            raise ValueError(f"labels must be int64 ({len(x)},), got {y.dtype} {tuple(y.shape)}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    # Text (per-image embeddings, captions, the encoder that made them): only precomputed datasets have it.
    context = context_mask = captions = text_encoder = None
    text_tokens = 0

    @property
    def space(self) -> LatentSpace:
        return LatentSpace(None, self.size)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Stored batch -> the model's float space."""
        return to_float(x)

    @property
    def size(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return len(self.images)


# A loader gets (root, split, image_size, limit) already validated and returns the dataset
# with `limit` and `image_size` applied (through `_pack`).
Loader = Callable[[Path | None, str, int | None, int | None], ImageData]


def load_dataset(
    name: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    split: str = "train",
    limit: int | None = None,
    skip_bad_images: bool = False,
) -> ImageData:
    """Load dataset `name` (a key of `DATASETS`) into memory.

    `image_size` resizes (bicubic, antialiased) to image_size x image_size, center-cropping
    non-square images; None keeps the native size. `limit` keeps the first `limit` images.
    `skip_bad_images` (folder datasets): leave out image files that cannot be decoded, counted and
    named in a warning, instead of stopping at the first.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    path = None if root is None else Path(root).expanduser()
    if skip_bad_images:
        if name != "folder":
            raise ValueError(f"data.skip_bad_images applies to the folder dataset (one file per image), not {name!r}")
        return _load_folder(path, split, image_size, limit, skip_bad=True)
    return DATASETS[name](path, split, image_size, limit)


def _pack(
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str],
    image_size: int | None,
    limit: int | None,
) -> ImageData:
    """Build an ImageData from uint8 NCHW `images`; `labels` None means unlabelled."""
    x = _fit(torch.from_numpy(np.array(images[:limit])), image_size)  # copy: sources may be read-only
    if labels is None:
        return ImageData(x, torch.zeros(len(x), dtype=torch.int64), 0, [])
    y = torch.from_numpy(np.array(labels[:limit], dtype=np.int64))
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(class_names):
        raise ValueError(f"labels must lie in [0, {len(class_names)}), got [{int(y.min())}, {int(y.max())}]")
    return ImageData(x, y, len(class_names), list(class_names))


def _fit(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Center-crop uint8 (N, C, H, W) to a square, then resize it to `size` (None: keep)."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top : top + side, left : left + side].contiguous()
    if size is None or size == side:
        return images
    # Chunks bound the float32 copy for large datasets (e.g. all of MNIST).
    return torch.cat([
        F.interpolate(chunk.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        .round_().clamp_(0, 255).to(torch.uint8)
        for chunk in images.split(4096)
    ])


def _need_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<path>")
    return root


class MissingSplit(ValueError):
    """The dataset has no such split (as opposed to a broken or missing file)."""


def _train_only(name: str, split: str) -> None:
    if split != "train":
        raise MissingSplit(f"dataset {name!r} has only a 'train' split, got split={split!r}")


def load_split(name: str, root: str | Path | None, image_size: int | None, split: str,
               limit: int | None = None) -> ImageData | None:
    """`load_dataset`, or None when the dataset has no such split or its files are absent (CIFAR-10's
    test batch is often missing); errors in files that are there still raise."""
    try:
        return load_dataset(name, root, image_size, split=split, limit=limit)
    except (MissingSplit, FileNotFoundError):
        return None


# --- digits -------------------------------------------------------------------------------


def _load_digits(root: Path | None, split: str, image_size: int | None, limit: int | None) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), upscaled to 16x16 by default.

    There is no test split; `root` is ignored.
    """
    _train_only("digits", split)
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install scikit-learn "
            "(or pip install 'liquidgen[digits]')"
        ) from e
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # values are 0..16
    return _pack(images, digits.target, [str(d) for d in range(10)], image_size or 16, limit)


# --- MNIST --------------------------------------------------------------------------------


def _load_mnist(root: Path | None, split: str, image_size: int | None, limit: int | None) -> ImageData:
    """MNIST idx files (gzipped or plain) in torchvision's layout, root/MNIST/raw/.

    `root` may also be the MNIST/ or the raw/ folder itself.
    """
    base = _need_root("mnist", root)
    prefix = "train" if split == "train" else "t10k"
    tried = []
    for folder in (base / "MNIST" / "raw", base / "raw", base):
        images = _find_file(folder / f"{prefix}-images-idx3-ubyte", tried)
        labels = _find_file(folder / f"{prefix}-labels-idx1-ubyte", tried)
        if images and labels:
            break
    else:
        raise FileNotFoundError("MNIST idx files not found; tried:\n  " + "\n  ".join(tried))
    x, y = _read_idx(images, ndim=3), _read_idx(labels, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return _pack(x[:, None], y, [str(d) for d in range(10)], image_size, limit)


def _find_file(path: Path, tried: list[str]) -> Path | None:
    """`path` or `path`.gz, whichever exists; records the candidates in `tried`."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx array of `ndim` dimensions (gzipped when named *.gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:  # 0x08 = unsigned byte, then the number of dimensions
        raise ValueError(f"{path}: bad idx magic number 0x{magic:08x}, expected 0x{0x0800 + ndim:08x}")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: {len(raw) - header} data bytes do not match the dimensions {dims}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


# --- CIFAR-10 -----------------------------------------------------------------------------


def _load_cifar10(root: Path | None, split: str, image_size: int | None, limit: int | None) -> ImageData:
    """CIFAR-10 from the official binary batches or from lossless WebP tile atlases.

    Searched in root, root/cifar10 and root/cifar-10-batches-bin:
    binary: data_batch_{1..5}.bin (train) or test_batch.bin (test);
    tiles: {split}_00.webp, {split}_01.webp, ... (32x32 tiles in row-major order) + {split}_labels.npy.
    """
    base = _need_root("cifar10", root)
    folders = [base, base / "cifar10", base / "cifar-10-batches-bin"]
    for folder in folders:
        names = [f"data_batch_{k}.bin" for k in range(1, 6)] if split == "train" else ["test_batch.bin"]
        if all((folder / n).is_file() for n in names):
            x, y = _read_cifar_bin([folder / n for n in names], limit)
            return _pack(x, y, CIFAR10_CLASSES, image_size, limit)
        if tiles := sorted(folder.glob(f"{split}_*.webp")):
            x, y = _read_cifar_tiles(tiles, split, folder / f"{split}_labels.npy", limit)
            return _pack(x, y, CIFAR10_CLASSES, image_size, limit)
    pickled = [base, base / "cifar10", base / "cifar-10-batches-py", base / "cifar10" / "cifar-10-batches-py"]
    if any((d / n).is_file() for d in pickled for n in ("data_batch_1", "test_batch")):
        raise FileNotFoundError(
            f"only the pickled python version of CIFAR-10 was found under {base}: the pickled python "
            "version is not loaded for safety; use the binary version (cifar-10-binary.tar.gz)"
        )
    raise FileNotFoundError(
        f"no CIFAR-10 {split} data (binary *.bin batches or {split}_*.webp tiles) in any of: "
        + ", ".join(map(str, folders))
    )


def _read_cifar_bin(paths: list[Path], limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte + 3,072 pixel bytes (CHW); stops once `limit` images are read."""
    records = []
    for path in paths:
        raw = np.fromfile(path, np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise ValueError(f"{path}: {raw.size} bytes is not a whole number of 3,073-byte records")
        records.append(raw.reshape(-1, 3073))
        if limit is not None and sum(map(len, records)) >= limit:
            break
    rec = np.concatenate(records)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0]


def _read_cifar_tiles(
    paths: list[Path], split: str, labels_path: Path, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Tile atlases: image k of a file is the 32x32 tile at (k // columns, k % columns)."""
    expected = [f"{split}_{k:02d}.webp" for k in range(len(paths))]
    if [p.name for p in paths] != expected:
        # A gap in the numbering would silently misalign images and labels.
        raise ValueError(f"tile files must be numbered without gaps: expected {expected}")
    if not labels_path.is_file():
        raise FileNotFoundError(f"missing labels file {labels_path}")
    tiles = []
    for path in paths:
        with Image.open(path) as img:
            a = np.asarray(img.convert("RGB"))
        rows, cols = a.shape[0] // 32, a.shape[1] // 32
        if a.shape[:2] != (rows * 32, cols * 32):
            raise ValueError(f"{path}: size {a.shape[1]}x{a.shape[0]} is not a grid of 32x32 tiles")
        tiles.append(a.reshape(rows, 32, cols, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3))
        if limit is not None and sum(map(len, tiles)) >= limit:
            break
    x = np.concatenate(tiles).transpose(0, 3, 1, 2)
    y = np.load(labels_path, allow_pickle=False)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) < len(x):
        raise ValueError(f"{labels_path}: need >= {len(x)} integer labels, got {y.dtype} {y.shape}")
    return x, y[: len(x)]


# --- image folder -------------------------------------------------------------------------


def _load_folder(root: Path | None, split: str, image_size: int | None, limit: int | None,
                 skip_bad: bool = False) -> ImageData:
    """Images in one subfolder per class (searched recursively), or directly in `root` (unlabelled).

    Class indices follow sorted subfolder names; with subfolders, loose files in `root` are
    ignored. Images are resized on the short side and center-cropped to image_size (required).
    Grayscale when every image is grayscale, else RGB. `skip_bad`: see `load_dataset`.
    """
    base = _need_root("folder", root)
    _train_only("folder", split)
    if image_size is None:
        raise ValueError("dataset 'folder' needs image_size (its images may differ in size)")
    classes, files = folder_files(base)
    files = files[:limit]
    arrays, kept, bad = [], [], []
    for path, label in files:
        try:
            arrays.append(read_image(path, image_size))
            kept.append((path, label))
        except UnreadableImage as e:
            if not skip_bad:
                raise
            bad.append(e)
    if bad:
        warn_skipped(bad, len(files), base)
    if not arrays:
        raise ValueError(f"none of the {len(files)} images in {base} could be read")
    files = kept
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        images = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        images = np.stack(arrays)[:, None]
    labels = np.array([c for _, c in files]) if classes else None
    return _pack(images, labels, classes, image_size, limit)


def folder_files(base: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, class index)]) of an image folder: one class per subfolder (sorted,
    searched recursively), or every image directly in `base` as class 0 of an unlabelled set."""
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {base} does not exist")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:
        files = [(p, c) for c, name in enumerate(classes) for p in _image_files((base / name).rglob("*"))]
    else:
        files = [(p, 0) for p in _image_files(base.iterdir())]
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {base}")
    return classes, files


def _image_files(paths: Iterable[Path]) -> list[Path]:
    # Hidden files skipped: macOS "._x.jpg" resource forks carry an image suffix but no image.
    return sorted(
        p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


class UnreadableImage(ValueError):
    """An image file that cannot be decoded (truncated, corrupt, not an image)."""


def warn_skipped(errors: list[Exception], total: int, where: Path | str) -> None:
    """The warning for images left out by `skip_bad_images`: how many, and the first few by name."""
    import sys

    named = "; ".join(str(e) for e in errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    print(f"warning: skipped {len(errors)} of {total} images in {where} that could not be read: {named}",
          file=sys.stderr)


# Modes PIL can read but that hold more than 8 bits per channel: converting would clip them silently.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_image(path: str | Path, size: int, channels: int | None = None, resize: bool = True) -> np.ndarray:
    """Read one image as uint8: (size, size) grayscale or (size, size, 3) RGB.

    channels None keeps grayscale files grayscale, 1 or 3 converts. With `resize`, the short side is
    resized and the center cropped to size x size; without, the file must already be that size.
    Every failure is a ValueError naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here, with its name
    except (OSError, ValueError, SyntaxError) as e:  # PIL reports corrupt files with any of these
        raise UnreadableImage(f"cannot read image {path}: {e}") from e
    return fit_image(img, size, channels, resize, str(path))


def chw(image: np.ndarray) -> np.ndarray:
    """`read_image`'s (S, S) or (S, S, 3) array as (C, S, S)."""
    return image[None] if image.ndim == 2 else image.transpose(2, 0, 1)


def fit_image(img: Image.Image, size: int, channels: int | None, resize: bool, name: str) -> np.ndarray:
    """A PIL image -> uint8 array as `read_image` returns it; `name` identifies it in errors."""
    if img.mode in WIDE_MODES:
        raise ValueError(f"image {name} has mode {img.mode} (more than 8 bits per channel); convert it to "
                         f"8-bit RGB or L first")
    if not resize and img.size != (size, size):
        raise ValueError(f"image {name} is {img.size[0]}x{img.size[1]}, expected {size}x{size} "
                         f"(or allow resizing)")
    gray = img.mode in ("1", "L", "LA") if channels is None else channels == 1
    img = img.convert("L" if gray else "RGB")
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC) if resize else img)


# --- npz ----------------------------------------------------------------------------------


def _load_npz(root: Path | None, split: str, image_size: int | None, limit: int | None) -> ImageData:
    """A .npz file (root) with uint8 `images` (N, H, W) or (N, H, W, C), C in {1, 3}, optional
    integer `labels` (N,) and optional string `class_names` (the format `sample` writes)."""
    path = _need_root("npz", root)
    _train_only("npz", split)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays, which would need unpickling
        raise ValueError(f"{path}: cannot load without unpickling ({e})") from e
    if "images" not in arrays:
        raise ValueError(f"{path}: missing key 'images' (found: {', '.join(arrays) or 'none'})")
    x = arrays["images"]
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: 'images' must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        shape = arrays["images"].shape
        raise ValueError(f"{path}: 'images' must have shape (N, H, W) or (N, H, W, 1|3), got {shape}")
    x = x.transpose(0, 3, 1, 2)
    y = arrays.get("labels")
    names = arrays.get("class_names")
    if y is None:
        if names is not None:
            raise ValueError(f"{path}: 'class_names' given without 'labels'")
        return _pack(x, None, [], image_size, limit)
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise ValueError(f"{path}: 'labels' must be integers of shape ({len(x)},), got {y.dtype} {y.shape}")
    if names is None:
        class_names = [str(k) for k in range(int(y.max()) + 1 if len(y) else 0)]
    elif names.dtype.kind != "U" or names.ndim != 1:
        raise ValueError(f"{path}: 'class_names' must be a 1-D array of str, got {names.dtype} {names.shape}")
    else:
        class_names = names.tolist()
    return _pack(x, y, class_names, image_size, limit)


# --- precomputed (the folder `liquidgen precompute` writes) --------------------------------


@dataclass
class PrecomputedData:
    """A precomputed dataset in memory, shaped for `BatchSampler` like `liquidgen.data.ImageData`."""

    images: Tensor  # (N, c, h, w): float16 latents, or uint8 images (identity autoencoder)
    labels: Tensor  # int64 (N,)
    num_classes: int
    class_names: list[str]
    context: Tensor | None  # float16 (N, D) pooled text embeddings, or (N, L, D) tokens
    context_mask: Tensor | None  # bool (N, L) for tokens: False at padding
    captions: list[str] | None
    space: LatentSpace
    text_encoder: dict | None  # spec of the encoder that made `context`
    text_tokens: int  # 0: pooled context; L: token context of L positions

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return len(self.images)

    def to_model(self, x: Tensor) -> Tensor:
        return self.space.normalize(x)


def load_precomputed(root: str | Path, limit: int | None = None) -> PrecomputedData:
    """Read a complete precomputed dataset (memory-mapped shards, copied once into one tensor)."""
    root = Path(root).expanduser()
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} the output folder of `liquidgen precompute`?")
    manifest = json.loads(path.read_text())
    if not manifest.get("complete"):
        raise ValueError(f"{root} is incomplete ({manifest.get('count', 0)} of {manifest.get('total', '?')} items): "
                         f"precompute was interrupted; rerun the same command to finish it")
    shards = manifest["shards"]
    arrays: dict[str, list] = {"latents": [], "labels": [], "context": [], "context_mask": []}
    captions: list[str] = []
    remaining = limit if limit is not None else manifest["count"]
    for shard in shards:
        if remaining <= 0:
            break
        if not shard["count"]:  # every image of it was skipped as unreadable: no files
            continue
        take = min(shard["count"], remaining)
        for key in arrays:
            file = root / f"{shard['name']}.{key}.npy"
            if (key == "context" and not manifest["context_dim"]) or (key == "context_mask"
                                                                    and not manifest.get("text_tokens")):
                continue
            if not file.is_file():
                raise FileNotFoundError(f"{file} is missing, but {path} lists it")
            a = np.load(file, mmap_mode="r", allow_pickle=False)
            if len(a) != shard["count"]:
                raise ValueError(f"{file} holds {len(a)} rows, the manifest says {shard['count']}")
            arrays[key].append(np.array(a[:take]))
        file = root / f"{shard['name']}.captions.json"
        if file.is_file():
            captions += json.loads(file.read_text())[:take]
        remaining -= take
    stats = manifest["stats"]
    space = LatentSpace(manifest["request"]["autoencoder"], manifest["request"]["image_size"],
                        None if stats is None else stats["mean"], None if stats is None else stats["std"])
    return PrecomputedData(
        images=torch.from_numpy(np.concatenate(arrays["latents"])),
        labels=torch.from_numpy(np.concatenate(arrays["labels"])),
        num_classes=manifest["num_classes"], class_names=manifest["class_names"],
        context=torch.from_numpy(np.concatenate(arrays["context"])) if arrays["context"] else None,
        context_mask=torch.from_numpy(np.concatenate(arrays["context_mask"])) if arrays["context_mask"] else None,
        captions=captions or None, space=space, text_encoder=manifest["request"]["text_encoder"],
        text_tokens=manifest.get("text_tokens", 0))


def _load_precomputed(root: Path | None, split: str, image_size: int | None, limit: int | None):
    """The output folder of `liquidgen precompute` (latents or pixels, labels, text embeddings)."""
    _train_only("precomputed", split)
    if image_size is not None:
        raise ValueError("a precomputed dataset has its size fixed at precompute time; leave data.image_size unset")
    return load_precomputed(_need_root("precomputed", root), limit)


DATASETS: dict[str, Loader] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "folder": _load_folder,
    "npz": _load_npz,
    "precomputed": _load_precomputed,
}


# --- batches ------------------------------------------------------------------------------


class BatchSampler:
    """Deterministic, stateless-per-step batches from an in-memory dataset on any device.

    `data` is an ImageData or a precomputed dataset: anything with `images`, `labels`, `context`
    (None or per-image embeddings) and `to_model` (stored dtype -> model space).

    The batch for step `i` is a pure function of (seed, i): epoch e = i // steps_per_epoch
    shuffles with torch.randperm seeded by seed * 1_000_003 + e, so resuming at step i needs
    no loader state. The last incomplete batch of each epoch is dropped. A step's batch can be
    taken in `parts` equal slices (micro-batches, processes): together they are the same batch.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        hflip: bool = False,
    ) -> None:
        if not 1 <= batch_size <= len(data):
            raise ValueError(f"batch_size must be in [1, {len(data)}] (the dataset size), got {batch_size}")
        self.device = torch.device(device)
        # One copy to the device up front: per step only device-side indexing remains.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.context = None if data.context is None else data.context.to(self.device)
        self.context_mask = None if data.context_mask is None else data.context_mask.to(self.device)
        self.to_model = data.to_model
        self.batch_size, self.seed, self.hflip = batch_size, seed, hflip
        self.steps_per_epoch = len(data) // batch_size
        self._epoch = -1
        self._perm = self._flip = torch.empty(0)

    def _start_epoch(self, epoch: int) -> None:
        # A CPU generator gives the same order on every device; one transfer per epoch.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.images)
        self._perm = torch.randperm(n, generator=g).to(self.device)
        if self.hflip:  # drawn after the permutation, so hflip does not change the order
            self._flip = (torch.rand(n, generator=g) < 0.5).to(self.device)
        self._epoch = epoch

    def __call__(self, i: int, part: int = 0, parts: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Slice `part` of `parts` of step i's batch: (x float32 in model space (B, C, H, W); labels int64
        (B,); the other conditioning inputs: {"context": (B, D) or (B, L, D) float32, + "context_mask":
        (B, L) bool for tokens} for datasets with text, else {}), all on the device."""
        if i < 0:
            raise ValueError(f"step must be >= 0, got {i}")
        if self.batch_size % parts or not 0 <= part < parts:
            raise ValueError(f"cannot take part {part} of {parts} of a batch of {self.batch_size}")
        epoch, step = divmod(i, self.steps_per_epoch)
        if epoch != self._epoch:
            self._start_epoch(epoch)
        size = self.batch_size // parts
        start = step * self.batch_size + part * size
        rows = slice(start, start + size)
        idx = self._perm[rows]
        x = self.images[idx]
        if self.hflip:
            x = torch.where(self._flip[rows, None, None, None], x.flip(-1), x)
        cond = {} if self.context is None else {"context": self.context[idx].float()}
        if self.context_mask is not None:
            cond["context_mask"] = self.context_mask[idx]
        return self.to_model(x), self.labels[idx], cond
