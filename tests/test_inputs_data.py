"""Issue 18, dataset and image inputs: every bad input is one ValueError naming the file (and the fix), never a
numpy / PIL / zipfile traceback; quiet changes are one `warning:` line per dataset; a failing precompute
changes nothing already on disk, and rerunning the same command repairs a damaged folder."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from liquidgen.data import PIXEL_LIMIT_ENV, load_dataset, load_precomputed, read_image
from liquidgen.precompute import Request, precompute


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _gray(path: Path, side: int = 8, value: int = 100) -> Path:
    return _save(path, np.full((side, side), value, np.uint8))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and isinstance(e.value, ValueError)
    return text


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]


# --- images over PIL's decompression-bomb limit ---------------------------------------------------


@pytest.mark.parametrize("side", [40, 50], ids=["over the limit (PIL warns)", "over twice the limit (PIL raises)"])
def test_an_image_over_the_pixel_limit_is_a_bad_image(tmp_path, monkeypatch, capsys, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1,600 and 50x50 = 2,500 pixels
    root = tmp_path / "images"
    big = _gray(root / "big.png", side)
    _gray(root / "small.png")
    with pytest.raises(ValueError) as e:
        load_dataset("folder", root, image_size=8)
    text = _one_line(e)
    assert str(big) in text and f"{side * side:,} pixels" in text and "1,000" in text
    assert "skip_bad_images" in text and "--skip-bad-images" in text and PIXEL_LIMIT_ENV in text

    assert len(load_dataset("folder", root, image_size=8, skip_bad_images=True)) == 1
    assert "skipped 1 of 2 images" in capsys.readouterr().err

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="big.png: .* pixels is over the limit"):
        precompute(Request("folder", str(root), 8), out, progress=False)
    precompute(Request("folder", str(root), 8, skip_bad_images=True), out, progress=False, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["skipped"] == 1

    monkeypatch.setenv(PIXEL_LIMIT_ENV, "10000")  # the documented way to allow huge images
    assert len(load_dataset("folder", root, image_size=8)) == 2


def test_a_bad_pixel_limit_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=f"{PIXEL_LIMIT_ENV}='lots': expected a positive whole number"):
        read_image(_gray(tmp_path / "a.png"), 8)


# --- files that are not what their name says ------------------------------------------------------


def _idx(a: np.ndarray) -> bytes:
    return (0x0800 + a.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()


def _png_text(root: Path) -> tuple[str, Path]:
    _gray(root / "a" / "good.png")
    (root / "a" / "text.png").write_text("hello, not a PNG")
    return "folder", root


def _jpg_cut(root: Path) -> tuple[str, Path]:
    _save(root / "a" / "cut.jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = (root / "a" / "cut.jpg").read_bytes()
    (root / "a" / "cut.jpg").write_bytes(data[: len(data) // 2])
    return "folder", root


def _npz_text(root: Path) -> tuple[str, Path]:
    (root / "d.npz").write_text("images")
    return "npz", root / "d.npz"


def _npz_is_npy(root: Path) -> tuple[str, Path]:
    np.save(root / "d.npy", np.zeros((2, 4, 4), np.uint8))
    (root / "d.npy").rename(root / "d.npz")
    return "npz", root / "d.npz"


def _npz_cut(root: Path) -> tuple[str, Path]:
    np.savez(root / "d.npz", images=np.zeros((20, 8, 8), np.uint8))
    data = (root / "d.npz").read_bytes()
    (root / "d.npz").write_bytes(data[: len(data) // 2])
    return "npz", root / "d.npz"


def _npz_empty(root: Path) -> tuple[str, Path]:
    np.savez(root / "d.npz", images=np.zeros((0, 8, 8), np.uint8))
    return "npz", root / "d.npz"


def _npz_negative_labels(root: Path) -> tuple[str, Path]:
    np.savez(root / "d.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, -1, 1]))
    return "npz", root / "d.npz"


def _mnist(root: Path, images: bytes, gz: bool = False) -> tuple[str, Path]:
    name = "train-images-idx3-ubyte" + ".gz" * gz
    (root / name).write_bytes(images)
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(2, np.uint8)))
    return "mnist", root / name


def _mnist_cut_gz(root: Path) -> tuple[str, Path]:
    return _mnist(root, gzip.compress(_idx(np.zeros((2, 28, 28), np.uint8)))[:-12], gz=True)


def _mnist_labels_out_of_range(root: Path) -> tuple[str, Path]:
    _mnist(root, _idx(np.zeros((2, 28, 28), np.uint8)))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(np.array([3, 12], np.uint8)))
    return "mnist", root / "train-labels-idx1-ubyte"


def _npz_pk(root: Path) -> tuple[str, Path]:
    (root / "d.npz").write_bytes(b"PK but no zip archive follows")  # numpy would call it a pickle
    return "npz", root / "d.npz"


def _cifar_tile(root: Path) -> tuple[str, Path]:
    (root / "train_00.webp").write_bytes(b"RIFF garbage")
    np.save(root / "train_labels.npy", np.zeros(4, np.int64))
    return "cifar10", root / "train_00.webp"


def _cifar_labels(root: Path) -> tuple[str, Path]:
    Image.new("RGB", (64, 32)).save(root / "train_00.webp", lossless=True)
    (root / "train_labels.npy").write_text("0 1")
    return "cifar10", root / "train_labels.npy"


@pytest.mark.parametrize("make, expected", [
    pytest.param(_png_text, "cannot read image .*text.png", id="png that is text"),
    pytest.param(_jpg_cut, "cannot read image .*cut.jpg", id="truncated jpg"),
    pytest.param(_npz_text, "d.npz is not a .npz file .*expected np.savez output", id="npz that is text"),
    pytest.param(_npz_pk, "d.npz is not a .npz file .*expected np.savez output", id="npz that only starts PK"),
    pytest.param(_npz_is_npy, "d.npz is a .npy file .*expected a .npz file", id="npz that is an npy"),
    pytest.param(_npz_cut, "d.npz is truncated or corrupt", id="truncated npz"),
    pytest.param(_npz_empty, "d.npz: 'images' must have shape .*N, H, W >= 1, got \\(0, 8, 8\\)", id="npz of 0"),
    pytest.param(_npz_negative_labels, "d.npz: labels must lie in \\[0, 2\\)", id="npz negative label"),
    pytest.param(lambda root: _mnist(root, b"garbage, not idx"),
                 "train-images-idx3-ubyte: bad idx magic .*an MNIST image file", id="idx garbage"),
    pytest.param(lambda root: _mnist(root, _idx(np.zeros((2, 28, 28), np.uint8))[:-100]),
                 "train-images-idx3-ubyte: .*truncated", id="idx truncated"),
    pytest.param(lambda root: _mnist(root, b"not gzip", gz=True),
                 "train-images-idx3-ubyte.gz: cannot read it as a gzipped", id="gz that is not gzip"),
    pytest.param(_mnist_cut_gz, "train-images-idx3-ubyte.gz: cannot read it as a gzipped", id="gz truncated"),
    pytest.param(_mnist_labels_out_of_range, "train-labels-idx1-ubyte: labels must lie in \\[0, 10\\)",
                 id="idx label 12"),
    pytest.param(_cifar_tile, "cannot read image .*train_00.webp", id="cifar tile garbage"),
    pytest.param(_cifar_labels, "train_labels.npy is not a readable .npy file .*expected a 1-D array of >= 2 "
                 "integer labels", id="cifar labels garbage"),
])
def test_a_file_that_is_not_what_its_name_says_is_named(tmp_path, make, expected):
    name, culprit = make(tmp_path)
    root = culprit if name == "npz" else tmp_path
    with pytest.raises(ValueError, match=expected) as e:
        load_dataset(name, root, image_size=8 if name == "folder" else None)
    assert str(culprit) in _one_line(e)


def test_an_npz_path_that_is_a_folder_or_missing(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder; the npz dataset reads one .npz file"):
        load_dataset("npz", tmp_path)
    with pytest.raises(FileNotFoundError, match="npz file .*nothing.npz not found"):
        load_dataset("npz", tmp_path / "nothing.npz")


# --- precomputed datasets: damaged shards and manifests -------------------------------------------


def _digits(**kw) -> Request:
    return Request(source="digits", root=None, image_size=8, limit=40, shard_size=16, **kw)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    precompute(_digits(caption_templates=["digit {}"]), out, progress=False)
    return out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _cut_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:30])


def _not_npy(path: Path) -> None:
    path.write_text("not an array")


def _other_dtype(path: Path) -> None:
    np.save(path, np.load(path).astype(np.float32))


DAMAGES = [Path.unlink, _truncate, _cut_header, _not_npy]


@pytest.mark.parametrize("file, damage", [
    *[("shard-00001.latents.npy", d) for d in [*DAMAGES, _other_dtype]],
    *[("shard-00001.labels.npy", d) for d in [*DAMAGES, _other_dtype]],
    *[("shard-00002.captions.json", d) for d in DAMAGES],
], ids=lambda v: getattr(v, "__name__", v))
def test_a_damaged_shard_is_named_and_the_same_command_repairs_it(tmp_path, clean, file, damage, capsys):
    out = tmp_path / "out"
    precompute(_digits(caption_templates=["digit {}"]), out, progress=False)
    damage(out / file)
    before = _snapshot(out)
    with pytest.raises(ValueError) as e:
        load_precomputed(out)
    text = _one_line(e)
    assert str(out / file) in text and "rerun the same `liquidgen precompute` command" in text
    assert _snapshot(out) == before  # reading changes nothing

    precompute(_digits(caption_templates=["digit {}"]), out, progress=False)
    assert f"{out / file}" in capsys.readouterr().err  # said what it writes again
    repaired, reference = load_precomputed(out), load_precomputed(clean)
    assert torch.equal(repaired.images, reference.images) and torch.equal(repaired.labels, reference.labels)
    assert repaired.captions == reference.captions  # in order: the rewritten shard is back in its place
    assert [s["name"] for s in json.loads((out / "manifest.json").read_text())["shards"]] == \
        [f"shard-{k:05d}" for k in range(3)]


def test_captions_of_a_manifest_that_predates_the_captions_key_are_still_checked(tmp_path):
    out = tmp_path / "out"
    precompute(_digits(caption_templates=["digit {}"]), out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["captions"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert len(load_precomputed(out).captions) == 40
    (out / "shard-00002.captions.json").unlink()  # read before: the captions of later shards moved up silently
    with pytest.raises(ValueError, match="shard-00002.captions.json is missing or not JSON"):
        load_precomputed(out)


@pytest.mark.parametrize("text, expected", [
    ("{not json", "is not valid JSON .*the same command with --overwrite"),
    ("[1, 2]", "is not a manifest as `liquidgen precompute` writes it \\(a JSON list"),
    ('{"shards": []}', "is not a manifest .*\\(no request, count, complete\\)"),
])
def test_a_broken_manifest_is_named_and_a_rerun_changes_nothing(tmp_path, text, expected):
    out = tmp_path / "out"
    precompute(_digits(), out, progress=False)
    (out / "manifest.json").write_text(text)
    before = _snapshot(out)
    for call in (lambda: load_precomputed(out), lambda: precompute(_digits(), out, progress=False)):
        with pytest.raises(ValueError, match=expected) as e:
            call()
        assert str(out / "manifest.json") in _one_line(e)
        assert _snapshot(out) == before


@pytest.mark.parametrize("breaker", ["garbage", "bomb"])
def test_a_failing_precompute_changes_nothing_on_disk(tmp_path, monkeypatch, breaker):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "images"
    for k in range(6):
        _gray(root / f"im{k}.png", value=40 * k)
    if breaker == "garbage":
        (root / "im3.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    else:
        _gray(root / "im3.png", side=50)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="im3.png"):  # shard 0 done, shard 1 fails
        precompute(Request("folder", str(root), 8, shard_size=2), out, progress=False)
    before = _snapshot(out)
    assert "shard-00000.latents.npy" in before and "shard-00001.latents.npy" not in before
    with pytest.raises(ValueError, match="im3.png"):
        precompute(Request("folder", str(root), 8, shard_size=2), out, progress=False)
    assert _snapshot(out) == before


def test_precompute_with_every_image_unreadable_is_an_error(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for k in range(3):
        (root / f"{k}.png").write_text("no image")
    with pytest.raises(ValueError, match=f"none of the 3 images of {root} could be read"):
        precompute(Request("folder", str(root), 8, skip_bad_images=True), tmp_path / "out", progress=False)


def test_image_size_must_match_a_precomputed_dataset(tmp_path, clean):
    assert len(load_dataset("precomputed", clean, image_size=8)) == 40  # the same size is no error
    with pytest.raises(ValueError, match=rf"image size 16 \(--size on the command line, data.image_size in a config\) "
                                         rf"does not match {clean}, precomputed at 8x8: .*--size 16"):
        load_dataset("precomputed", clean, image_size=16)
    with pytest.raises(ValueError, match="manifest.json is a file; a precomputed dataset is the folder"):
        load_dataset("precomputed", clean / "manifest.json")


@pytest.mark.parametrize("kw, expected", [
    ({"source": "digits", "skip_bad_images": True}, "--skip-bad-images applies to the folder and hf sources"),
    ({"source": "folder", "caption_templates": ["a {}"]}, "--caption-template applies to .*\\.txt files"),
    ({"source": "hf", "caption_templates": ["a {}"]}, "--caption-template applies to .*--caption-column"),
    ({"source": "digits", "class_words": ["x"]}, "--class-words .*give --caption-template too"),
    ({"source": "folder", "split": "test"}, "source 'folder' has no splits \\(got --split test\\)"),
    ({"source": "digits", "text_tokens": 8}, "text_tokens needs a text encoder"),
])
def test_requests_that_would_be_silently_ignored_are_refused(kw, expected):
    with pytest.raises(ValueError, match=expected):
        Request(root=None, image_size=8, **kw)


def test_hugging_face_rows_over_the_pixel_limit_are_skippable(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (10, 10)), Image.new("RGB", (50, 50)), Image.new("RGB", (10, 10))]
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})) \
        .save_to_disk(str(tmp_path / "hf"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    req = {"source": "hf", "root": str(tmp_path / "hf"), "image_size": 8, "hf_columns": {"image_column": "image"}}
    with pytest.raises(ValueError, match=f"cannot read image row 1 of {tmp_path / 'hf'}: 2,500 pixels"):
        precompute(Request(**req), tmp_path / "o1", progress=False)
    precompute(Request(**req, skip_bad_images=True), tmp_path / "o2", progress=False)
    assert json.loads((tmp_path / "o2" / "manifest.json").read_text())["skipped"] == 1
    with pytest.raises(ValueError, match="is one dataset without splits, so --split test cannot be read"):
        precompute(Request(**req, split="test"), tmp_path / "o3", progress=False)


def test_no_resize_is_honoured_for_in_memory_sources(tmp_path):
    with pytest.raises(ValueError, match="--no-resize: the digits images are 16x16, not --size 8; give --size 16"):
        precompute(_digits(resize=False), tmp_path / "o", progress=False)
    precompute(Request("digits", None, 16, limit=4, resize=False), tmp_path / "o", progress=False)
    assert load_precomputed(tmp_path / "o").images.shape == (4, 1, 16, 16)


# --- quiet changes: one warning per dataset, with counts ------------------------------------------


def _rgba(path: Path, transparent: bool) -> None:
    a = np.full((8, 8, 4), 200, np.uint8)
    a[..., 3] = 255
    if transparent:
        a[:2, :2, 3] = 0
    _save(path, a)


def test_dropped_alpha_is_counted_once(tmp_path, capsys):
    root = tmp_path / "images"
    for k in range(3):
        _rgba(root / f"t{k}.png", transparent=True)
    _rgba(root / "opaque.png", transparent=False)  # an opaque alpha channel loses nothing: not counted
    load_dataset("folder", root, image_size=8)
    [warning] = _warnings(capsys)
    assert warning.startswith(f"warning: 3 of 4 images in {root} have transparency, which is dropped, not "
                              f"composited")

    precompute(Request("folder", str(root), 8), tmp_path / "out", progress=False)
    assert next(w for w in _warnings(capsys) if "transparency" in w).startswith("warning: 3 of 4 images")


def test_upscaled_images_are_counted_with_the_smallest(tmp_path, capsys):
    _save(tmp_path / "a.png", np.zeros((6, 5), np.uint8))
    _save(tmp_path / "b.png", np.zeros((4, 7), np.uint8))
    _gray(tmp_path / "c.png", side=16)
    load_dataset("folder", tmp_path, image_size=8)
    assert _warnings(capsys) == [(f"warning: 2 of 3 images in {tmp_path} are smaller than 8x8 and were upscaled "
                                  f"(the smallest is 7x4), which blurs them")]


def test_mixed_grayscale_and_colour_says_what_it_becomes(tmp_path, capsys):
    _gray(tmp_path / "g1.png")
    _gray(tmp_path / "g2.png")
    _save(tmp_path / "c.png", np.zeros((8, 8, 3), np.uint8))
    assert load_dataset("folder", tmp_path, image_size=8).channels == 3
    assert _warnings(capsys) == [(f"warning: 2 of the 3 images in {tmp_path} are grayscale and the others colour: "
                                  f"all are read as RGB (gray copied to the 3 channels)")]


def test_folder_listing_warnings(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    _gray(root / "cats" / "a.png")
    _gray(root / "cats" / "deep" / "b.png")
    (root / "dogs").mkdir()  # a class with no examples
    (root / "emus").mkdir()
    _gray(root / "emus" / "c.png")
    os.symlink(tmp_path / "gone.png", root / "emus" / "dead.png")
    (root / "emus" / "c.txt").write_text("a caption: a companion file, not worth a warning")
    (root / "emus" / "d.tif").write_bytes(b"a format that is not read")
    _gray(root / "loose.png")  # beside class folders: ignored
    (root / "locked").mkdir()
    _gray(root / "locked" / "e.png")
    real = os.scandir

    def scandir(path="."):  # a folder without read permission (chmod does not stop root, who runs CI)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)

    d = load_dataset("folder", root, image_size=8)
    assert d.class_names == ["cats", "dogs", "emus", "locked"] and d.labels.tolist() == [0, 0, 2]
    warnings = _warnings(capsys)
    assert warnings == [
        (f"warning: ignored 1 image directly in {root} (e.g. loose.png): with class subfolders only the images "
         f"inside them are read; move them into a class folder"),
        (f"warning: class folders with no images in {root} (2 of 4): 'dogs' (label 1), 'locked' (label 3); they "
         f"stay classes, with no examples to learn from (a model can still be asked for them)"),
        (f"warning: skipped 1 dangling symlink in {root} (e.g. {root / 'emus' / 'dead.png'} -> "
         f"{tmp_path / 'gone.png'}, which does not exist)"),
        f"warning: skipped 1 folder in {root} that could not be listed: {root / 'locked'} (Permission denied)",
        (f"warning: ignored 1 file in {root} with extensions not read as images: .tif (1); images are read from "
         f".bmp, .gif, .jpeg, .jpg, .png, .webp files"),
    ]


def test_no_images_in_class_folders_explains_the_ignored_loose_ones(tmp_path):
    _gray(tmp_path / "a.png")
    (tmp_path / "thumbnails").mkdir()
    with pytest.raises(ValueError, match="no images .* found in .*the 1 directly in it are ignored beside its "
                                         "class folders thumbnails"):
        load_dataset("folder", tmp_path, image_size=8)


@pytest.mark.parametrize("name, root", [("npz", "d.npz"), ("folder", "images"), ("precomputed", "pre")])
def test_a_limit_above_the_dataset_size_is_said(tmp_path, capsys, name, root):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 8, 8), np.uint8))
    for k in range(3):
        _gray(tmp_path / "images" / f"{k}.png")
    precompute(Request("npz", str(tmp_path / "d.npz"), 8), tmp_path / "pre", progress=False)
    capsys.readouterr()
    data = load_dataset(name, tmp_path / root, image_size=8 if name == "folder" else None, limit=10)
    assert len(data) == 3
    assert _warnings(capsys) == [f"warning: limit 10 is more than the 3 images read from {tmp_path / root}: using all 3"]
