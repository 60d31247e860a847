"""Precomputed datasets: images -> autoencoder latents (+ labels, + text embeddings) in shards on disk,
which training reads instead of images (`data.name: precomputed`, `data.load_precomputed`).

An output folder:
    manifest.json               what made it (source, autoencoder, text encoder, size), the shards done
                                so far, per-channel latent statistics, and whether it is complete
    shard-00000.latents.npy     (n, c, h, w) float16 latents; uint8 images for the identity autoencoder
    shard-00000.labels.npy      (n,) int64 class labels (zeros for an unlabelled source)
    shard-00000.context.npy     (n, D) float16 pooled text embeddings (with a text encoder), or
                                (n, L, D) token embeddings with `text_tokens` = L > 0, and then
    shard-00000.context_mask.npy  (n, L) bool, False at padding tokens
    shard-00000.captions.json   the n captions (with captions)
Plain .npy files, so a reader can memory-map them. Each shard is written under temporary names,
renamed into place, and only then listed in the manifest (itself replaced atomically): a crash leaves
at most an unlisted shard, which rerunning the same command overwrites before going on. A dataset is
usable only once `complete` is true.

The per-channel latent mean and std are measured over the whole dataset here and stored in the
manifest; training normalises with them, so no autoencoder needs a hard-coded scale factor
(TLD's /8, SDXL's 0.13025).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .autoencoders import build_autoencoder
from .data import (
    IMAGE_SUFFIXES,
    ReadNotes,
    UnreadableImage,
    chw,
    decoding,
    fit_image,
    fit_images,
    folder_files,
    load_dataset,
    load_precomputed,
    read_image,
    read_manifest,
    shard_problem,
    warn,
    warn_limit,
    warn_skipped,
)
from .latent_space import to_float
from .run_folder import RUN_MARK, claim
from .text import build_text_encoder, fixed_length

FORMAT_VERSION = 1
CAPTION_KEYS = ("text", "caption", "prompt")  # metadata.jsonl columns read as the caption, in this order


# --- sources ----------------------------------------------------------------------------------


class Source:
    """Items of a dataset to precompute, read lazily: `read(i)` -> (uint8 image (C, S, S), label, caption)."""

    class_names: list[str]
    has_captions: bool
    notes: ReadNotes | None = None  # what reading changed quietly, for warnings (sources that decode files)

    def __len__(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def read(self, i: int) -> tuple[np.ndarray, int, str | None]:  # pragma: no cover
        raise NotImplementedError

    def stored_text(self, text_encoder: dict, tokens: int) -> dict[str, Tensor] | None:
        """{"context": (N, ...), maybe "context_mask"} when this source already holds its captions' features by
        `text_encoder` at `tokens`, so that they are copied rather than encoded again; else None."""
        return None

    def fingerprint(self) -> str:
        """A digest of what this source holds now, kept in the manifest: an interrupted precompute resumed after
        the source changed (images added, removed, relabelled) would store shards of two versions of it."""
        return digest([len(self), self.class_names])


def digest(*parts) -> str:
    """16 hex digits of a SHA-1 over `parts`: bytes as they are, anything else as its JSON."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, default=str).encode())
    return h.hexdigest()[:16]


class MemorySource(Source):
    """A dataset `liquidgen.data.load_dataset` reads into memory (digits, mnist, cifar10, npz), with captions
    optionally made from its labels by templates ("a handwritten {}" -> "a handwritten seven")."""

    def __init__(self, name: str, root: str | None, size: int, split: str, limit: int | None,
                 templates: Sequence[str] = (), class_words: Sequence[str] = (), resize: bool = True):
        self.data = load_dataset(name, root, size if resize else None, split=split, limit=limit)
        if self.data.size != size:
            raise ValueError(f"--no-resize: the {name} images are {self.data.size}x{self.data.size}, not --size "
                             f"{size}; give --size {self.data.size}, or let them be resized")
        self.class_names = self.data.class_names
        self.captions = label_captions(self.data.labels.tolist(), self.class_names, templates, class_words)
        self.has_captions = self.captions is not None

    def __len__(self) -> int:
        return len(self.data)

    def read(self, i: int) -> tuple[np.ndarray, int, str | None]:
        return self.data.images[i].numpy(), int(self.data.labels[i]), self.captions[i] if self.captions else None

    def fingerprint(self) -> str:  # the whole dataset is in memory: hash it (an .npz replaced by another)
        return digest(self.class_names, self.data.images.numpy().tobytes(), self.data.labels.numpy().tobytes())


def label_captions(labels: list[int], class_names: list[str], templates: Sequence[str],
                   class_words: Sequence[str]) -> list[str] | None:
    """Caption i = templates[i % len(templates)] filled with the class word of labels[i]; None without
    templates. Cycling by index keeps the choice deterministic and every template equally used."""
    if not templates:
        return None
    if not class_names:
        raise ValueError("caption templates need a labelled dataset")
    words = list(class_words) or class_names
    if len(words) != len(class_names):
        raise ValueError(f"{len(words)} class words for {len(class_names)} classes ({', '.join(class_names)})")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"caption template {template!r} must contain '{{}}' exactly once (the class word)")
    return [templates[i % len(templates)].format(words[label]) for i, label in enumerate(labels)]


class FolderSource(Source):
    """Images in one subfolder per class or directly in `root`, with optional captions: a `.txt` file
    beside an image (same stem), or `metadata.jsonl` in `root` with one {"file_name": path relative to
    root, "text" | "caption" | "prompt": ...} object per line (Hugging Face's imagefolder convention)."""

    def __init__(self, root: str | None, size: int, limit: int | None, channels: int | None, resize: bool):
        if root is None:
            raise ValueError("source 'folder' needs --root <folder>")
        self.base = base = Path(root).expanduser()
        self.size, self.channels, self.resize = size, channels, resize
        self.notes = ReadNotes(size)
        self.class_names, self.files = folder_files(base)
        captions = folder_captions(base, [p for p, _ in self.files])
        warn_limit(limit, len(self.files), str(base))
        self.files = self.files[:limit]
        self.captions = None if captions is None else [captions.get(p) for p, _ in self.files]
        self.has_captions = self.captions is not None
        if self.captions is not None:
            check_captions(self.files, self.captions, base)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> tuple[np.ndarray, int, str | None]:
        path, label = self.files[i]
        image = read_image(path, self.size, self.channels, self.resize, self.notes)
        return chw(image), label, None if self.captions is None else self.captions[i]

    def fingerprint(self) -> str:  # names, sizes, labels and captions: not the pixels, which are read lazily
        rows = [(str(p.relative_to(self.base)), label, p.stat().st_size) for p, label in self.files]
        return digest(self.class_names, rows, self.captions)


class PrecomputedSource(Source):
    """A pixel dataset precomputed before (`--autoencoder identity`), read again to encode it into a latent space:
    the same images, labels and captions, and its stored caption features copied when the text encoder asked for
    is the one that made them, so no text model is needed (a GPU machine without MiniLM)."""

    def __init__(self, root: str | None, size: int, limit: int | None, resize: bool):
        if root is None:
            raise ValueError("source 'precomputed' needs --root <a precomputed pixel dataset>")
        self.data = load_precomputed(root, limit)
        if self.data.images.dtype != torch.uint8:
            raise ValueError(f"{root} holds latents, not pixels: source 'precomputed' re-encodes a dataset "
                             f"precomputed with --autoencoder identity")
        if self.data.size != size and not resize:
            raise ValueError(f"--no-resize: the images of {root} are {self.data.size}x{self.data.size}, not --size "
                             f"{size}")
        self.images = fit_images(self.data.images, size)  # grayscale stays so: autoencoders read it as RGB
        self.class_names, self.captions = self.data.class_names, self.data.captions
        self.has_captions = self.captions is not None

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> tuple[np.ndarray, int, str | None]:
        return self.images[i].numpy(), int(self.data.labels[i]), self.captions[i] if self.captions else None

    def stored_text(self, text_encoder: dict, tokens: int) -> dict[str, Tensor] | None:
        d = self.data
        if d.context is None or d.text_encoder != text_encoder or d.text_tokens != tokens:
            return None
        return {"context": d.context} | ({"context_mask": d.context_mask} if d.context_mask is not None else {})

    def fingerprint(self) -> str:
        return digest(self.class_names, self.images.numpy().tobytes(), self.data.labels.numpy().tobytes(),
                      self.captions)


def check_captions(files: list[tuple[Path, int]], captions: list[str | None], base: Path) -> None:
    """Before any image is read: an image without a caption among captioned ones is an error (found only when
    its shard came, it stopped a long precompute midway), and empty captions are said."""
    if missing := [path for (path, _), caption in zip(files, captions) if caption is None]:
        raise ValueError(f"{len(missing)} of the {len(files)} images in {base} have no caption, but the others "
                         f"have one: e.g. {missing[0]} (no {missing[0].with_suffix('.txt').name} beside it and no "
                         f"metadata.jsonl entry)")
    if empty := sum(not caption for caption in captions):
        warn(f"{empty} of the {len(files)} images in {base} have an empty caption, which is encoded as the empty "
             f"string, not left unconditional")


def folder_captions(base: Path, images: list[Path]) -> dict[Path, str] | None:
    """Captions by image path from metadata.jsonl and .txt files (metadata.jsonl's win); None when the folder has
    neither. A caption that names no image is an error: it usually means a renamed or deleted image."""
    captions: dict[Path, str] = {}
    for image in images:  # the .txt beside each image the listing found (in linked folders too)
        if (txt := image.with_suffix(".txt")).is_file():
            captions[image] = _read_text(txt).strip()
    used = {image.with_suffix(".txt") for image in captions}
    for txt in sorted(base.rglob("*.txt")):
        if txt not in used and not any(part.startswith(".") for part in txt.relative_to(base).parts):
            raise ValueError(f"caption file {txt} has no image beside it (expected {txt.stem} with one of "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return {**captions, **_metadata_captions(base, set(images))} or None


def _read_text(path: Path) -> str:
    # utf-8-sig: a byte-order mark (Windows editors write one) would otherwise start the caption or break line 1
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); save it as UTF-8") from None


def _metadata_captions(base: Path, known: set[Path]) -> dict[Path, str]:
    """metadata.jsonl's captions by image path; a line that is not one string caption of one known image, or a
    second line for an image (one of the two would be dropped without a word), is an error naming the line."""
    meta = base / "metadata.jsonl"
    if not meta.is_file():
        return {}
    captions: dict[Path, str] = {}
    line_of: dict[Path, int] = {}
    for n, line in enumerate(_read_text(meta).splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            path = base / entry["file_name"]
            text = next(entry[k] for k in CAPTION_KEYS if k in entry)
        except (ValueError, KeyError, TypeError, StopIteration):
            raise ValueError(f"{meta}, line {n}: expected a JSON object with file_name and one of "
                             f"{', '.join(CAPTION_KEYS)}") from None
        if not isinstance(text, str):  # str() would train on the caption "None" or "['a', 'b']"
            raise ValueError(f"{meta}, line {n}: the caption of {entry['file_name']} is {json.dumps(text)}, not a "
                             f"string")
        if path not in known:
            raise ValueError(f"{meta}, line {n}: {entry['file_name']} is not an image in {base}")
        if path in line_of:
            raise ValueError(f"{meta}, lines {line_of[path]} and {n} both caption {entry['file_name']}: keep one")
        captions[path], line_of[path] = text, n
    return captions


class HFSource(Source):
    """A Hugging Face `datasets` dataset: a folder written by `save_to_disk`, else a hub name (online
    users). Columns are named by the caller; a ClassLabel label column gives the class names."""

    def __init__(self, root: str | None, size: int, split: str, limit: int | None, channels: int | None,
                 resize: bool, image_column: str = "image", label_column: str = "", caption_column: str = ""):
        try:
            import datasets
        except ImportError as e:
            raise ImportError("source 'hf' needs Hugging Face datasets: pip install 'liquidgen[hf]'") from e
        if root is None:
            raise ValueError("source 'hf' needs --root <dataset folder or hub name>")
        if Path(root).expanduser().exists():
            ds = datasets.load_from_disk(str(Path(root).expanduser()))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ValueError(f"{root} has splits {list(ds)}, not {split!r}")
                ds = ds[split]
            elif split != "train":
                raise ValueError(f"{root} is one dataset without splits, so --split {split} cannot be read from "
                                 f"it; leave --split unset")
        else:
            ds = datasets.load_dataset(root, split=split)
        for column in (image_column, label_column, caption_column):
            if column and column not in ds.column_names:
                raise ValueError(f"{root} has no column {column!r}; its columns: {', '.join(ds.column_names)}")
        warn_limit(limit, len(ds), root)
        self.ds = ds.select(range(min(limit, len(ds)))) if limit else ds
        self.root, self.size, self.channels, self.resize = root, size, channels, resize
        self.notes = ReadNotes(size)
        self.image_column, self.label_column, self.caption_column = image_column, label_column, caption_column
        feature = ds.features[label_column] if label_column else None
        if feature is not None and hasattr(feature, "names"):
            self.class_names = list(feature.names)
        elif label_column:
            self.class_names = [str(k) for k in range(int(max(ds[label_column])) + 1)]
        else:
            self.class_names = []
        self.has_captions = bool(caption_column)

    def __len__(self) -> int:
        return len(self.ds)

    def read(self, i: int) -> tuple[np.ndarray, int, str | None]:
        name = f"row {i} of {self.root}"
        with decoding(name):  # `datasets` decodes the image here, so a bad one fails here
            row = self.ds[i]
        image = fit_image(row[self.image_column], self.size, self.channels, self.resize, name, self.notes)
        label = int(row[self.label_column]) if self.label_column else 0
        return chw(image), label, str(row[self.caption_column]) if self.caption_column else None


SOURCES = ("digits", "mnist", "cifar10", "npz", "folder", "hf", "precomputed")


@dataclass
class Request:
    """Everything that determines a precomputed dataset's content: a rerun must ask for the same."""

    source: str
    root: str | None
    image_size: int
    split: str = "train"
    limit: int | None = None
    autoencoder: dict = field(default_factory=lambda: {"name": "identity"})
    text_encoder: dict | None = None
    caption_templates: list[str] = field(default_factory=list)
    class_words: list[str] = field(default_factory=list)
    resize: bool = True
    hf_columns: dict = field(default_factory=dict)  # image_column, label_column, caption_column
    shard_size: int = 4096
    text_tokens: int = 0  # > 0: store per-token text features, truncated or padded to this many tokens
    skip_bad_images: bool = False  # folder, hf: leave out images that cannot be decoded, counted in the manifest

    def __post_init__(self) -> None:
        # Checked here, as the request is made: before the output folder is claimed or anything is read.
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose from {', '.join(SOURCES)}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.text_tokens and self.text_encoder is None:
            raise ValueError("text_tokens needs a text encoder")
        if self.skip_bad_images and self.source not in ("folder", "hf"):
            raise ValueError(f"--skip-bad-images applies to the folder and hf sources (one decoded image at a "
                             f"time), not {self.source!r}, which is read whole")
        if self.caption_templates and self.source in ("folder", "hf"):
            raise ValueError(f"--caption-template applies to the sources digits, mnist, cifar10 and npz; the "
                             f"{self.source} source's captions come from "
                             + (".txt files or metadata.jsonl" if self.source == "folder" else "--caption-column"))
        if self.class_words and not self.caption_templates:
            raise ValueError("--class-words are the words caption templates use: give --caption-template too")
        if self.source in ("folder", "precomputed") and self.split != "train":
            raise ValueError(f"source {self.source!r} has no splits (got --split {self.split}): point --root at the "
                             f"folder of that split")


def open_source(req: Request, channels: int | None) -> Source:
    if req.source == "folder":
        return FolderSource(req.root, req.image_size, req.limit, channels, req.resize)
    if req.source == "precomputed":
        return PrecomputedSource(req.root, req.image_size, req.limit, req.resize)
    if req.source == "hf":
        return HFSource(req.root, req.image_size, req.split, req.limit, channels, req.resize, **req.hf_columns)
    return MemorySource(req.source, req.root, req.image_size, req.split, req.limit, req.caption_templates,
                        req.class_words, req.resize)


# --- writing ----------------------------------------------------------------------------------


# What a precomputed dataset consists of; --overwrite deletes these and nothing else.
# Shard files only by their numbered names: a user's own "shard-notes.txt" in the folder is not ours to delete.
DATASET_FILES = ("manifest.json", "manifest.tmp", "shard-[0-9][0-9][0-9][0-9][0-9]*.npy",
                 "shard-[0-9][0-9][0-9][0-9][0-9]*.json")


def precompute(req: Request, out: str | Path, device: str | torch.device = "cpu", batch_size: int = 64,
               progress: bool = True, overwrite: bool = False) -> Path:
    """Write (or finish) the precomputed dataset `req` into `out`, which is locked meanwhile; returns the
    manifest's path. The same request again finishes an interrupted folder; a folder holding another
    dataset is refused unless `overwrite`, which deletes that dataset first."""
    source = Path(req.root).expanduser().resolve() if req.source == "folder" and req.root else None
    if source and Path(out).resolve().is_relative_to(source):
        # the output would be listed as part of the source: an extra (empty) class folder, or loose shard files
        raise ValueError(f"--out {out} is inside the source folder --root {req.root}: choose an output folder outside "
                         f"it")
    with claim(out, resume=not overwrite, overwrite=overwrite, owned=DATASET_FILES, foreign=RUN_MARK):
        return write_dataset(req, Path(out), device, batch_size, progress)


def write_dataset(req: Request, out: Path, device: str | torch.device, batch_size: int, progress: bool) -> Path:
    """`precompute` once the folder is this job's."""
    if (out / "manifest.json").is_file():
        read_manifest(out)  # one line naming a manifest that is not JSON or not a manifest, before anything
    manifest = _start_manifest(out, req)
    _unlist_damaged_shards(out, manifest)
    if manifest["complete"]:
        print(f"{out} is already complete ({manifest['count']} items)")
        return out / "manifest.json"
    device = torch.device(device)
    ae = build_autoencoder(**req.autoencoder).to(device)
    pixels = req.autoencoder["name"] == "identity"
    # Autoencoders take RGB; the identity keeps grayscale files grayscale unless given `channels`.
    source = open_source(req, req.autoencoder.get("channels") if pixels else ae.image_channels)
    if req.text_encoder is not None and not source.has_captions:
        raise ValueError(f"a text encoder was given but source {req.source!r} has no captions "
                         f"(.txt files or metadata.jsonl beside the images, a caption column, or caption templates)")
    stored = None if req.text_encoder is None else source.stored_text(req.text_encoder, req.text_tokens)
    text = None if req.text_encoder is None or stored else build_text_encoder(**req.text_encoder)
    if stored:
        context_dim = stored["context"].shape[-1]
    else:
        context_dim = 0 if text is None else text.token_dim if req.text_tokens else text.dim
    n_shards = math.ceil(len(source) / req.shard_size)
    _check_same_source(manifest, source.fingerprint(), req, out)
    manifest.update(class_names=source.class_names, num_classes=len(source.class_names), total=len(source),
                    pixels=pixels, context_dim=context_dim, text_tokens=req.text_tokens, captions=source.has_captions)
    done = {s["name"] for s in manifest["shards"]}
    skipped: list[Exception] = []
    bar = tqdm(total=len(source), desc="precompute", unit="img", disable=None if progress else True)
    bar.update(sum(s["count"] + s.get("skipped", 0) for s in manifest["shards"]))
    for k in range(n_shards):
        name = f"shard-{k:05d}"
        if name in done:
            continue
        rows = range(k * req.shard_size, min((k + 1) * req.shard_size, len(source)))
        images, labels, captions = [], [], []
        for i in rows:
            bar.update(1)
            try:
                image, label, caption = source.read(i)
            except UnreadableImage as e:
                if not req.skip_bad_images:
                    raise
                skipped.append(e)
                continue
            images.append(image), labels.append(label), captions.append(caption)
        if not images:  # every image of this shard was skipped
            _list_shard(manifest, {"name": name, "count": 0, "skipped": len(rows)})
            continue
        shape = list(ae.latent_shape(req.image_size)) if not pixels else list(images[0].shape)
        if len({im.shape for im in images}) > 1 or manifest.setdefault("latent_shape", shape) != shape:
            raise ValueError(f"{name}: images differ in channels (grayscale and RGB); set the identity "
                             f"autoencoder's channels option (1 or 3) to read them all alike")
        arrays, stats = _encode(images, ae, None if pixels else device, batch_size)
        if stored:  # a source without unreadable images: the shard's rows are `rows`
            arrays.update({key: v[rows.start:rows.stop].numpy() for key, v in stored.items()})
        elif text is not None:
            arrays.update(_embed(captions, text, req.text_tokens))
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
        _write_shard(out, name, arrays, captions if source.has_captions else None)
        _list_shard(manifest, {"name": name, "count": len(images), "skipped": len(rows) - len(images), **stats})
        _write_json(out / "manifest.json", manifest)
    bar.close()
    if skipped:
        warn_skipped(skipped, len(source), req.root)
    if source.notes is not None:
        source.notes.report(req.root)
    if not manifest["count"]:
        raise ValueError(f"none of the {len(source)} images of {req.root} could be read: nothing to precompute")
    manifest["skipped"] = sum(s.get("skipped", 0) for s in manifest["shards"])
    manifest["stats"] = None if pixels else _channel_stats(manifest["shards"])
    manifest["complete"] = True
    _write_json(out / "manifest.json", manifest)
    return out / "manifest.json"


def _check_same_source(manifest: dict, fingerprint: str, req: Request, out: Path) -> None:
    """Record the source's fingerprint; refuse to resume shards written from another version of it: shard k of
    the new listing is not shard k of the old, so images would be stored twice or never, and labels shifted."""
    if manifest["shards"] and manifest.get("source", fingerprint) != fingerprint:  # older folders: none kept
        raise ValueError(f"{req.root or req.source} changed since {out} was started (images or classes added, "
                         f"removed, renamed or relabelled): the shards done so far ({len(manifest['shards'])}) and "
                         f"the rest would mix the two versions; precompute again with --overwrite, or into a new "
                         f"folder")
    manifest["source"] = fingerprint


def _unlist_damaged_shards(out: Path, manifest: dict) -> None:
    """Take shards whose files are missing or damaged off the manifest, so that this run writes them again:
    rerunning the same command repairs a folder."""
    for shard in list(manifest["shards"]):
        if problem := shard_problem(out, manifest, shard):
            warn(f"{problem}; writing {shard['name']} again")
            manifest["shards"].remove(shard)
            manifest["complete"] = False


def _list_shard(manifest: dict, shard: dict) -> None:
    # Kept in name order: a shard written again after repair goes back to its place in the dataset.
    manifest["shards"] = sorted([*manifest["shards"], shard], key=lambda s: s["name"])
    manifest["count"] = sum(s["count"] for s in manifest["shards"])


def _encode(images: list[np.ndarray], ae, device: torch.device | None, batch_size: int) -> tuple[dict, dict]:
    """A shard's stored values ({"latents": ...}) and its per-channel sums for the statistics; device None:
    the identity, whose uint8 pixels are stored as they are."""
    x = torch.from_numpy(np.stack(images))
    if device is None:
        return {"latents": x.numpy()}, {}
    z = torch.cat([ae.encode(to_float(b.to(device))).float().cpu() for b in x.split(batch_size)])
    z64 = z.double().transpose(0, 1).flatten(1)  # (c, n h w)
    stats = {"sum": z64.sum(1).tolist(), "sumsq": z64.square().sum(1).tolist(), "n": z64.shape[1]}
    return {"latents": z.to(torch.float16).numpy()}, stats


def _embed(captions: list[str], text, tokens: int) -> dict[str, np.ndarray]:
    """A shard's text features: pooled (n, D), or `tokens` token features (n, L, D) with their mask."""
    chunks = [text.encode(captions[j:j + 256]) for j in range(0, len(captions), 256)]
    if not tokens:
        return {"context": torch.cat([c.pooled for c in chunks]).to(torch.float16).cpu().numpy()}
    features, masks = zip(*(fixed_length(c, tokens) for c in chunks))
    return {"context": torch.cat(features).to(torch.float16).cpu().numpy(),
            "context_mask": torch.cat(masks).cpu().numpy()}


def _start_manifest(out: Path, req: Request) -> dict:
    """The manifest to continue: the existing one if it asked for the same, else a fresh one."""
    path = out / "manifest.json"
    wanted = json.loads(json.dumps(asdict(req)))  # as it reads back from JSON
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("request") != wanted:
            changed = sorted(k for k in wanted if manifest.get("request", {}).get(k) != wanted[k])
            raise ValueError(f"{out} holds a precomputed dataset made with other settings ({', '.join(changed)}); "
                             f"use another output folder, or --overwrite to replace it")
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    return {"version": FORMAT_VERSION, "request": wanted, "shards": [], "count": 0, "complete": False}


def _write_shard(out: Path, name: str, arrays: dict[str, np.ndarray], captions: list[str] | None) -> None:
    tmp = {}
    for key, array in arrays.items():
        tmp[key] = out / f"{name}.{key}.tmp.npy"
        np.save(tmp[key], array)
    if captions is not None:
        tmp["captions"] = out / f"{name}.captions.tmp.json"
        tmp["captions"].write_text(json.dumps(captions))
    for key, path in tmp.items():
        os.replace(path, out / path.name.replace(".tmp", ""))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _channel_stats(shards: list[dict]) -> dict:
    shards = [s for s in shards if s["count"]]
    n = sum(s["n"] for s in shards)
    total = np.sum([s["sum"] for s in shards], axis=0)
    total_sq = np.sum([s["sumsq"] for s in shards], axis=0)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0))
    return {"mean": mean.tolist(), "std": np.maximum(std, 1e-6).tolist()}
