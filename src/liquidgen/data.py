"""In-memory image datasets and a deterministic, resumable batch sampler.

Every dataset loads into one tensor (N, C, H, W): uint8 images, or float16 latents of a precomputed
dataset (the folder `liquidgen precompute` writes, read here through the name "precomputed");
`BatchSampler` moves it to the training device once, so a step costs an index and a conversion there.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import sys
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from .latent_space import LatentSpace, to_float

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "BatchSampler",
    "ImageData",
    "PrecomputedData",
    "ReadNotes",
    "UnreadableImage",
    "load_dataset",
    "load_precomputed",
    "read_image",
    "read_manifest",
    "shard_problem",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
COMPANION_SUFFIXES = {".txt", ".json", ".jsonl"}  # captions and metadata beside images: not worth a warning
NPY_MAGIC = b"\x93NUMPY"
# PIL refuses images over Image.MAX_IMAGE_PIXELS (its guard against decompression bombs); this environment
# variable raises (or lowers) that limit for datasets of genuinely huge images.
PIXEL_LIMIT_ENV = "LIQUIDGEN_MAX_IMAGE_PIXELS"


def warn(text: str) -> None:
    """One `warning: ...` line on stderr: something was done quietly that the user may not expect."""
    print(f"warning: {text}", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


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
        data = _load_folder(path, split, image_size, limit, skip_bad=True)
    else:
        data = DATASETS[name](path, split, image_size, limit)
    warn_limit(limit, len(data), f"dataset {name!r}" if path is None else str(path))
    return data


def warn_limit(limit: int | None, found: int, where: str) -> None:
    """A limit above the dataset's size is not an error, but training on fewer images than asked should not
    go unsaid."""
    if limit is not None and found < limit:
        warn(f"limit {limit} is more than the {found} images read from {where}: using all {found}")


def _pack(
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str],
    image_size: int | None,
    limit: int | None,
    where: Path | str,
) -> ImageData:
    """Build an ImageData from uint8 NCHW `images`; `labels` None means unlabelled; `where` (the file that
    holds the labels) names the culprit in errors."""
    x = fit_images(torch.from_numpy(np.array(images[:limit])), image_size)  # copy: sources may be read-only
    if labels is None:
        return ImageData(x, torch.zeros(len(x), dtype=torch.int64), 0, [])
    y = torch.from_numpy(np.array(labels[:limit], dtype=np.int64))
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(class_names):
        raise ValueError(f"{where}: labels must lie in [0, {len(class_names)}) (one per class), got "
                         f"[{int(y.min())}, {int(y.max())}]")
    return ImageData(x, y, len(class_names), list(class_names))


def fit_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
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
        raise ValueError(f"dataset {name!r} needs its folder or file: --root on the command line (eval, precompute), "
                         f"data.root in a config")
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
    return _pack(images, digits.target, [str(d) for d in range(10)], image_size or 16, limit, "digits")


# --- MNIST --------------------------------------------------------------------------------


def _load_mnist(root: Path | None, split: str, image_size: int | None, limit: int | None) -> ImageData:
    """MNIST idx files (gzipped or plain) in torchvision's layout, root/MNIST/raw/.

    `root` may also be the MNIST/ or the raw/ folder itself.
    """
    base = _need_root("mnist", root)
    prefix = "train" if split == "train" else "t10k"
    for folder in (base / "MNIST" / "raw", base / "raw", base):
        images = _find_file(folder / f"{prefix}-images-idx3-ubyte")
        labels = _find_file(folder / f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            break
    else:
        raise FileNotFoundError(f"MNIST {split} files not found under {base}: looked for {prefix}-images-idx3-ubyte "
                                f"and {prefix}-labels-idx1-ubyte (or .gz) in {base}/MNIST/raw, {base}/raw and {base}; "
                                f"data.root / --root is the folder holding MNIST/raw (torchvision's layout)")
    x, y = _read_idx(images, ndim=3), _read_idx(labels, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return _pack(x[:, None], y, [str(d) for d in range(10)], image_size, limit, labels)


def _find_file(path: Path) -> Path | None:
    """`path` or `path`.gz, whichever exists."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx array of `ndim` dimensions (gzipped when named *.gz)."""
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # not gzip, or cut short: gzip raises all three
        raise ValueError(f"{path}: cannot read it as a {'gzipped ' * gz}MNIST idx file ({e}); download it "
                         f"again") from None
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:  # 0x08 = unsigned byte, then the number of dimensions
        raise ValueError(f"{path}: bad idx magic number 0x{magic:08x}, expected 0x{0x0800 + ndim:08x} (an MNIST "
                         f"{'image' if ndim == 3 else 'label'} file); download it again")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: {max(len(raw) - header, 0)} data bytes do not match the dimensions {dims} "
                         f"(truncated?); download it again")
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
            return _pack(x, y, CIFAR10_CLASSES, image_size, limit, f"the CIFAR-10 batches in {folder}")
        if tiles := sorted(folder.glob(f"{split}_*.webp")):
            x, y = _read_cifar_tiles(tiles, split, folder / f"{split}_labels.npy", limit)
            return _pack(x, y, CIFAR10_CLASSES, image_size, limit, folder / f"{split}_labels.npy")
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
        a = np.asarray(open_image(path).convert("RGB"))
        rows, cols = a.shape[0] // 32, a.shape[1] // 32
        if a.shape[:2] != (rows * 32, cols * 32):
            raise ValueError(f"{path}: size {a.shape[1]}x{a.shape[0]} is not a grid of 32x32 tiles")
        tiles.append(a.reshape(rows, 32, cols, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3))
        if limit is not None and sum(map(len, tiles)) >= limit:
            break
    x = np.concatenate(tiles).transpose(0, 3, 1, 2)
    y = read_npy(labels_path, f"a 1-D array of >= {len(x)} integer labels")
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
        raise ValueError("dataset 'folder' needs an image size (its images may differ in size): --size on the command "
                         "line (eval, fit-classifier), data.image_size in a config")
    classes, files = folder_files(base)
    files = files[:limit]
    arrays, kept, bad = [], [], []
    notes = ReadNotes(image_size)
    for path, label in files:
        try:
            arrays.append(read_image(path, image_size, notes=notes))
            kept.append((path, label))
        except UnreadableImage as e:
            if not skip_bad:
                raise
            bad.append(e)
    if bad:
        warn_skipped(bad, len(files), base)
    if not arrays:
        raise ValueError(f"none of the {len(files)} images in {base} could be read")
    notes.report(base)
    files = kept
    gray = sum(a.ndim == 2 for a in arrays)
    if gray < len(arrays):
        if gray:
            warn(f"{gray} of the {len(arrays)} images in {base} are grayscale and the others colour: all are read "
                 f"as RGB (gray copied to the 3 channels)")
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        images = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        images = np.stack(arrays)[:, None]
    labels = np.array([c for _, c in files]) if classes else None
    return _pack(images, labels, classes, image_size, limit, base)


def folder_files(base: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, class index)]) of an image folder: one class per subfolder (sorted,
    searched recursively), or every image directly in `base` as class 0 of an unlabelled set. What the
    listing passes over (empty class folders, loose images beside class folders, dangling links, folders
    that cannot be listed, files of other types) is reported in warnings."""
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {base} does not exist")
    scan = _Scan()
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = scan.images(base, recursive=False)
    if not classes:
        files = [(p, 0) for p in loose]
    else:
        per_class = [scan.images(base / name, recursive=True) for name in classes]
        files = [(p, c) for c, paths in enumerate(per_class) for p in paths]
        if files and loose:
            warn(f"ignored {_count(len(loose), 'image')} directly in {base} (e.g. {loose[0].name}): with class "
                 f"subfolders only the images inside them are read; move them into a class folder")
        empty = [f"{name!r} (label {c})" for c, (name, paths) in enumerate(zip(classes, per_class)) if not paths]
        if files and empty:
            warn(f"class folders with no images in {base} ({len(empty)} of {len(classes)}): {', '.join(empty[:5])}"
                 f"{' and more' * (len(empty) > 5)}; they stay classes, with no examples to learn from (a model "
                 f"can still be asked for them)")
    _warn_numbered_classes(classes, base)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {base}"
                         + (f" (the {len(loose)} directly in it are ignored beside its class folders "
                            f"{', '.join(classes[:5])})" if loose and classes else ""))
    scan.report(base)
    return classes, files


def _warn_numbered_classes(classes: list[str], base: Path) -> None:
    """Class folders named by numbers are still ordered as text ("10" before "2"); a label given as a number
    (`sample --labels 2`) is an index, so it would not be the folder of that name."""
    numeric = sorted(classes, key=int) if all(name.isdecimal() for name in classes) else classes
    if (moved := next((k for k, (a, b) in enumerate(zip(classes, numeric)) if a != b), None)) is not None:
        width = max(map(len, classes))
        warn(f"the class folders of {base} are numbers, ordered as text: label {moved} (`sample --labels {moved}`) "
             f"is folder {classes[moved]!r}, not {numeric[moved]!r}; rename them with leading zeros "
             f"({numeric[moved].zfill(width)!r}, ...) to order them as numbers")


@dataclass
class _Scan:
    """Lists a folder's image files, noting what it passes over for one warning per kind."""

    dangling: list[Path] = field(default_factory=list)  # image names whose link target is gone
    unlisted: list[str] = field(default_factory=list)  # folders that could not be read
    others: Counter = field(default_factory=Counter)  # files of other types, by suffix

    def images(self, folder: Path, recursive: bool) -> list[Path]:
        found, seen = [], set()
        # os.walk rather than rglob: rglob passes over folders it cannot read without a word. Linked folders are
        # followed (a class folder of links to image folders is a common layout), each real folder read once,
        # which also ends a link loop; hidden folders (.thumbnails, .git) hold no images of the dataset.
        for top, dirs, names in os.walk(folder, onerror=self._unlisted, followlinks=True):
            real = os.path.realpath(top)
            if real in seen:  # a second link to a folder read already, or a loop
                dirs.clear()
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if recursive and not d.startswith("."))  # the first link read: by name
            for name in names:
                if name.startswith("."):  # macOS "._x.jpg" resource forks carry an image suffix but no image
                    continue
                path = Path(top) / name
                suffix = path.suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    if path.is_file():
                        found.append(path)
                    elif not path.exists():
                        self.dangling.append(path)
                elif suffix not in COMPANION_SUFFIXES:
                    self.others[suffix or "no extension"] += 1
        return sorted(found)

    def _unlisted(self, error: OSError) -> None:
        self.unlisted.append(f"{error.filename} ({error.strerror})")

    def report(self, base: Path) -> None:
        if self.dangling:
            warn(f"skipped {_count(len(self.dangling), 'dangling symlink')} in {base} (e.g. {self.dangling[0]} -> "
                 f"{os.readlink(self.dangling[0])}, which does not exist)")
        if self.unlisted:
            warn(f"skipped {_count(len(self.unlisted), 'folder')} in {base} that could not be listed: "
                 f"{'; '.join(self.unlisted[:3])}")
        if self.others:
            listed = ", ".join(f"{suffix} ({n})" for suffix, n in self.others.most_common(5))
            warn(f"ignored {_count(self.others.total(), 'file')} in {base} with extensions not read as images: "
                 f"{listed}; "
                 f"images are read from {', '.join(sorted(IMAGE_SUFFIXES))} files")


class UnreadableImage(ValueError):
    """An image file that cannot be decoded (truncated, corrupt, not an image, over the pixel limit)."""


def warn_skipped(errors: list[Exception], total: int, where: Path | str) -> None:
    """The warning for images left out by `skip_bad_images`: how many, and the first few by name."""
    named = "; ".join(str(e) for e in errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    warn(f"skipped {len(errors)} of {total} images in {where} that could not be read: {named}")


@dataclass
class ReadNotes:
    """What reading a dataset's images changed without a word (alpha dropped, small images upscaled),
    counted while `read_image` / `fit_image` run and reported once per dataset by `report`."""

    size: int
    read: int = 0
    alpha: int = 0
    upscaled: int = 0
    smallest: tuple[int, int] = (0, 0)  # (width, height) of the smallest upscaled image

    def see(self, img: Image.Image, resize: bool) -> None:
        self.read += 1
        self.alpha += _has_transparency(img)
        if resize and min(img.size) < self.size:
            self.upscaled += 1
            if not self.smallest[0] or min(img.size) < min(self.smallest):
                self.smallest = img.size

    def report(self, where: Path | str) -> None:
        if self.alpha:
            warn(f"{self.alpha} of {self.read} images in {where} have transparency, which is dropped, not composited "
                 f"onto a background: transparent pixels keep the colour stored under them (often black); flatten "
                 f"the images onto a background first if that matters")
        if self.upscaled:
            w, h = self.smallest
            warn(f"{self.upscaled} of {self.read} images in {where} are smaller than {self.size}x{self.size} and were "
                 f"upscaled (the smallest is {w}x{h}), which blurs them")


def _has_transparency(img: Image.Image) -> bool:
    """An alpha channel or transparent palette entry that some pixel uses (opaque alpha loses nothing)."""
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = img.getchannel("A")
    elif "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
    else:
        return False
    return alpha.getextrema()[0] < 255


# Modes PIL can read but that hold more than 8 bits per channel: converting would clip them silently.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_image(path: str | Path, size: int, channels: int | None = None, resize: bool = True,
               notes: ReadNotes | None = None) -> np.ndarray:
    """Read one image as uint8: (size, size) grayscale or (size, size, 3) RGB.

    channels None keeps grayscale files grayscale, 1 or 3 converts. With `resize`, the short side is
    resized and the center cropped to size x size; without, the file must already be that size.
    `notes` counts quiet changes for a dataset's warnings. Every failure is a ValueError naming the file."""
    return fit_image(open_image(path), size, channels, resize, str(path), notes)


def open_image(path: str | Path) -> Image.Image:
    """An image file, decoded; an UnreadableImage naming the file if that fails."""
    with decoding(str(path)), Image.open(path) as img:
        img.load()  # decode now, so a truncated file fails here, with its name
    return img


@contextlib.contextmanager
def decoding(name: str) -> Iterator[None]:
    """Decode images in the block: a failure becomes an UnreadableImage naming `name`. An image over the pixel
    limit is one too: PIL raises above twice its limit but only warns between once and twice, and a limit
    that holds only sometimes is no limit."""
    limit = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if limit:
        if not limit.isdigit() or not int(limit):
            raise ValueError(f"{PIXEL_LIMIT_ENV}={limit!r}: expected a positive whole number of pixels")
        Image.MAX_IMAGE_PIXELS = int(limit)  # PIL offers only this global
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL names only the pixel count, in its message
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{int(pixels[1]):,} pixels" if pixels else str(e)
        raise UnreadableImage(
            f"cannot read image {name}: {count} is over the limit of {Image.MAX_IMAGE_PIXELS:,} that guards "
            f"against decompression bombs; leave such images out with data.skip_bad_images: true (precompute: "
            f"--skip-bad-images), or raise the limit with the environment variable {PIXEL_LIMIT_ENV}=<pixels>"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL reports corrupt files with any of these
        raise UnreadableImage(f"cannot read image {name}: {e}") from e


def chw(image: np.ndarray) -> np.ndarray:
    """`read_image`'s (S, S) or (S, S, 3) array as (C, S, S)."""
    return image[None] if image.ndim == 2 else image.transpose(2, 0, 1)


def fit_image(img: Image.Image, size: int, channels: int | None, resize: bool, name: str,
              notes: ReadNotes | None = None) -> np.ndarray:
    """A PIL image -> uint8 array as `read_image` returns it; `name` identifies it in errors."""
    if img.mode in WIDE_MODES:
        raise ValueError(f"image {name} has mode {img.mode} (more than 8 bits per channel); convert it to "
                         f"8-bit RGB or L first")
    if not resize and img.size != (size, size):
        raise ValueError(f"image {name} is {img.size[0]}x{img.size[1]}, expected {size}x{size} "
                         f"(or allow resizing)")
    if notes is not None:
        notes.see(img, resize)
    # Cameras store a portrait photo as landscape pixels plus an EXIF orientation tag that viewers apply
    img = ImageOps.exif_transpose(img)
    gray = img.mode in ("1", "L", "LA") if channels is None else channels == 1
    img = img.convert("L" if gray else "RGB")
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC) if resize else img)


# --- npz ----------------------------------------------------------------------------------


def _load_npz(root: Path | None, split: str, image_size: int | None, limit: int | None) -> ImageData:
    """A .npz file (root) with uint8 `images` (N, H, W) or (N, H, W, C), C in {1, 3}, optional
    integer `labels` (N,) and optional string `class_names` (the format `sample` writes)."""
    path = _need_root("npz", root)
    _train_only("npz", split)
    arrays = read_npz(path)
    if "images" not in arrays:
        raise ValueError(f"{path}: missing key 'images' (found: {', '.join(arrays) or 'none'})")
    x = arrays["images"]
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: 'images' must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3) or 0 in x.shape:
        shape = arrays["images"].shape
        raise ValueError(f"{path}: 'images' must have shape (N, H, W) or (N, H, W, 1|3) with N, H, W >= 1, "
                         f"got {shape}")
    x = x.transpose(0, 3, 1, 2)
    if x.shape[2] != x.shape[3]:  # datasets are square; the cut is not the user's choice, so it is said
        side = min(x.shape[2:])
        warn(f"{path}: the images are {x.shape[3]}x{x.shape[2]} (width x height), not square: each is center-cropped "
             f"to {side}x{side}, losing {abs(x.shape[3] - x.shape[2])} pixels of its long side")
    y = arrays.get("labels")
    names = arrays.get("class_names")
    if y is None:
        if names is not None:
            raise ValueError(f"{path}: 'class_names' given without 'labels'")
        return _pack(x, None, [], image_size, limit, path)
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise ValueError(f"{path}: 'labels' must be integers of shape ({len(x)},), got {y.dtype} {y.shape}")
    if names is None:
        class_names = [str(k) for k in range(int(y.max()) + 1 if len(y) else 0)]
    elif names.dtype.kind != "U" or names.ndim != 1:
        raise ValueError(f"{path}: 'class_names' must be a 1-D array of str, got {names.dtype} {names.shape}")
    else:
        class_names = names.tolist()
    return _pack(x, y, class_names, image_size, limit, path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file; each failure one ValueError naming the file and what it should be."""
    expected = "np.savez output with a uint8 'images' array (and optional 'labels', 'class_names')"
    if path.is_dir():
        raise ValueError(f"{path} is a folder; the npz dataset reads one .npz file: {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"npz file {path} not found")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == NPY_MAGIC:
        raise ValueError(f"{path} is a .npy file (one unnamed array); expected a .npz file, {expected}")
    if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):  # a .npz is a zip archive (numpy's own test)
        raise ValueError(f"{path} is not a .npz file (not a zip archive); expected {expected}")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                arrays[key] = _npz_array(z, key, path)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path} is truncated or corrupt ({e}); write it again") from None
    return arrays


def _npz_array(z, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy's only word that the array holds Python objects
            raise ValueError(f"{path}: array {key!r} holds Python objects, which would need unpickling (not done "
                             f"for safety); store strings as a str array, e.g. np.array(names, dtype=str)") from None
        raise ValueError(f"{path}: array {key!r} is corrupt ({e}); write the file again") from None


def read_npy(path: Path, expected: str, mmap: bool = False) -> np.ndarray:
    """A .npy file's array (memory-mapped with `mmap`); each failure one ValueError naming the file and
    what it should hold."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != NPY_MAGIC:
            raise ValueError("an empty file" if not magic else "no .npy header")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # numpy reports a cut-short file with any of these
        raise ValueError(f"{path} is not a readable .npy file ({e}; truncated?); expected {expected}") from None


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
    manifest = read_manifest(root)
    if not manifest["complete"]:
        raise ValueError(f"{root} is incomplete ({manifest['count']} of {manifest.get('total', '?')} items): "
                         f"precompute was interrupted; rerun the same command to finish it")
    if not manifest["count"]:
        raise ValueError(f"{root} holds no items: every image of its source was skipped as unreadable")
    arrays: dict[str, list] = {key: [] for key, _ in _shard_arrays(manifest)}
    captions: list[str] = []
    remaining = limit if limit is not None else manifest["count"]
    for shard in manifest["shards"]:
        if remaining <= 0:
            break
        if not shard["count"]:  # every image of it was skipped as unreadable: no files
            continue
        if problem := shard_problem(root, manifest, shard):
            raise ValueError(f"{problem}: rerun the same `liquidgen precompute` command, which writes it again")
        take = min(shard["count"], remaining)
        for key, parts in arrays.items():  # checked just above
            array = np.load(root / f"{shard['name']}.{key}.npy", mmap_mode="r", allow_pickle=False)
            parts.append(np.array(array[:take]))
        if _has_captions(root, manifest):
            captions += json.loads((root / f"{shard['name']}.captions.json").read_text())[:take]
        remaining -= take
    stats = manifest["stats"]
    space = LatentSpace(manifest["request"]["autoencoder"], manifest["request"]["image_size"],
                        None if stats is None else stats["mean"], None if stats is None else stats["std"])
    joined = {key: torch.from_numpy(np.concatenate(parts)) for key, parts in arrays.items()}
    _check_labels(joined["labels"], manifest["num_classes"], root)
    return PrecomputedData(
        images=joined["latents"], labels=joined["labels"],
        num_classes=manifest["num_classes"], class_names=manifest["class_names"],
        context=joined.get("context"), context_mask=joined.get("context_mask"),
        captions=captions or None, space=space, text_encoder=manifest["request"]["text_encoder"],
        text_tokens=manifest.get("text_tokens", 0))


def _check_labels(labels: Tensor, num_classes: int, root: Path) -> None:
    """Labels outside the manifest's classes (shards of another dataset, or edited) would fail deep inside
    training, or on a GPU as a device-side assert; an unlabelled dataset's labels are all 0."""
    top = max(num_classes, 1)
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < top:
        raise ValueError(f"{root}: its shards hold labels in [{int(labels.min())}, {int(labels.max())}], but its "
                         f"manifest lists {num_classes} classes (labels 0..{top - 1}); precompute it again with "
                         f"--overwrite")


def stored_prompt_embeddings(root: str | Path, prompts: list[str]) -> Tensor:
    """The pooled embeddings (len(prompts), D) that a precomputed captioned dataset stores for `prompts`, each of
    which must be one of its captions: prompts encoded without the text model (a GPU machine that lacks it)."""
    data = load_precomputed(root)
    if data.captions is None or data.context is None:
        raise ValueError(f"{root} stores no captions with text embeddings: precompute it with --text-encoder")
    if data.text_tokens:
        raise ValueError(f"{root} stores per-token text features; only pooled embeddings can stand in for prompts")
    row = {caption: i for i, caption in enumerate(data.captions)}
    if missing := [p for p in prompts if p not in row]:
        raise ValueError(f"{root} has no image captioned {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more prompts)" if len(missing) > 1 else "")
                         + f"; its captions include {data.captions[0]!r}")
    return data.context[[row[p] for p in prompts]].float()


# The keys a manifest needs before any shard is listed, and those `precompute` adds with the first shard.
MANIFEST_KEYS = ("request", "shards", "count", "complete")
SHARD_KEYS = ("class_names", "num_classes", "pixels", "context_dim", "latent_shape")


def read_manifest(root: Path) -> dict:
    """The manifest.json of a precomputed dataset folder, checked enough to be read: one ValueError naming it
    and the fix if it is not JSON or not a manifest."""
    path = root / "manifest.json"
    if root.is_file():
        raise ValueError(f"{root} is a file; a precomputed dataset is the folder `liquidgen precompute` wrote "
                         f"({root.parent}?)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} the output folder of `liquidgen precompute`?")
    redo = f"precompute {root} again: the same command with --overwrite"
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:  # JSON, or not UTF-8 text at all
        raise ValueError(f"{path} is not valid JSON ({e}), so which shards are done is lost; {redo}") from None
    if problem := _manifest_problem(manifest):
        raise ValueError(f"{path} is not a manifest as `liquidgen precompute` writes it ({problem}); {redo}")
    return manifest


def _manifest_problem(manifest) -> str | None:
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    shards = manifest.get("shards")
    needed = MANIFEST_KEYS + (SHARD_KEYS if shards else ()) + (("stats",) if manifest.get("complete") else ())
    if missing := [key for key in needed if key not in manifest]:
        return f"no {', '.join(missing)}"
    if not isinstance(manifest["request"], dict) or not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("count"), int) for s in shards):
        return "its request or shard list is malformed"
    return None


def _shard_arrays(manifest: dict) -> list[tuple[str, tuple[np.dtype, int]]]:
    """(key, (dtype, ndim)) of each .npy file a shard of this manifest has."""
    arrays = [("latents", (np.dtype(np.uint8 if manifest["pixels"] else np.float16), 4)),
              ("labels", (np.dtype(np.int64), 1))]
    if manifest["context_dim"]:
        arrays.append(("context", (np.dtype(np.float16), 3 if manifest.get("text_tokens") else 2)))
    if manifest.get("text_tokens"):
        arrays.append(("context_mask", (np.dtype(bool), 2)))
    return arrays


def _has_captions(root: Path, manifest: dict) -> bool:
    if "captions" in manifest:
        return bool(manifest["captions"])
    # folders written before the manifest said so: the first shard with items tells
    first = next((s for s in manifest["shards"] if s["count"]), None)
    return first is not None and (root / f"{first['name']}.captions.json").is_file()


def shard_problem(root: Path, manifest: dict, shard: dict) -> str | None:
    """What is wrong with a listed shard's files (missing, truncated, other rows or types than the manifest
    says), or None. Reads only the headers."""
    count = shard["count"]
    if not count:
        return None
    for key, (dtype, ndim) in _shard_arrays(manifest):
        file = root / f"{shard['name']}.{key}.npy"
        if not file.is_file():
            return f"{file} is missing, but {root / 'manifest.json'} lists it"
        try:
            a = read_npy(file, f"the {key} of {count} items", mmap=True)
        except ValueError as e:
            return str(e)
        shape = (count, *manifest["latent_shape"]) if key == "latents" else None
        if len(a) != count or a.dtype != dtype or a.ndim != ndim or (shape and a.shape != shape):
            return (f"{file} holds {a.dtype} {a.shape}, but the manifest lists {count} rows of {dtype}"
                    + (f" {shape[1:]}" if shape else ""))
    if _has_captions(root, manifest):
        file = root / f"{shard['name']}.captions.json"
        try:
            captions = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            return f"{file} is missing or not JSON ({e})"
        if not isinstance(captions, list) or len(captions) != count:
            return f"{file} does not hold the {count} captions the manifest lists"
    return None


def _load_precomputed(root: Path | None, split: str, image_size: int | None, limit: int | None):
    """The output folder of `liquidgen precompute` (latents or pixels, labels, text embeddings)."""
    _train_only("precomputed", split)
    root = _need_root("precomputed", root)
    made = read_manifest(root)["request"].get("image_size")
    if image_size is not None and image_size != made:
        raise ValueError(f"image size {image_size} (--size on the command line, data.image_size in a config) does not "
                         f"match {root}, precomputed at {made}x{made}: leave it out, or precompute again with --size "
                         f"{image_size}")
    return load_precomputed(root, limit)


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
