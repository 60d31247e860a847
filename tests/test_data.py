from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from liquidgen.data import (
    CIFAR10_CLASSES,
    DATASETS,
    BatchSampler,
    ImageData,
    load_dataset,
)
from liquidgen.latent_space import to_float, to_uint8

SHARED = Path(__file__).parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is missing")


def _idx_bytes(a: np.ndarray) -> bytes:
    header = (0x0800 + a.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def _tiny(n: int = 10, size: int = 8, channels: int = 1) -> ImageData:
    """Image k is filled with the value k, so a batch reveals which images it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size).contiguous()
    return ImageData(images, torch.arange(n) % 3, 3, ["a", "b", "c"])


# --- load_dataset -------------------------------------------------------------------------


def test_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="digits, mnist, cifar10, folder, npz"):
        load_dataset("imagenet")
    assert set(DATASETS) == {"digits", "mnist", "cifar10", "folder", "npz", "precomputed"}
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", limit=0)
    with pytest.raises(ValueError, match="needs its folder or file"):
        load_dataset("mnist")


def test_digits() -> None:
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    assert d.images.shape == (1797, 1, 16, 16) and d.images.dtype == torch.uint8
    assert (d.channels, d.size, len(d)) == (1, 16, 1797)
    assert d.images.max() == 255 and d.images.min() == 0
    assert d.labels.dtype == torch.int64 and d.num_classes == 10
    assert d.class_names == [str(k) for k in range(10)]
    source = load_digits()
    assert torch.equal(d.labels, torch.from_numpy(source.target))
    # Averaging 2x2 blocks of the upscaled images gives back the 8x8 originals.
    down = F.avg_pool2d(d.images.float(), 2)[:, 0].numpy()
    original = source.images * 255 / 16
    assert np.corrcoef(down.ravel(), original.ravel())[0, 1] > 0.97
    assert np.abs(down - original).mean() < 12

    assert load_dataset("digits", image_size=8, limit=5).images.shape == (5, 1, 8, 8)
    native = load_dataset("digits", image_size=8).images[:, 0]
    assert torch.equal(native, torch.from_numpy(np.rint(original).astype(np.uint8)))
    with pytest.raises(ValueError, match="only a 'train' split"):
        load_dataset("digits", split="test")


@needs_shared
def test_mnist_real_files() -> None:
    train = load_dataset("mnist", SHARED)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert train.images.max() == 255 and train.images.min() == 0
    assert torch.bincount(train.labels).tolist()[:2] == [5923, 6742]
    assert train.class_names == [str(k) for k in range(10)]
    test = load_dataset("mnist", SHARED / "MNIST" / "raw", split="test", limit=100, image_size=32)
    assert test.images.shape == (100, 1, 32, 32)
    assert test.labels[:3].tolist() == [7, 2, 1]
    assert load_dataset("mnist", SHARED / "MNIST", limit=3).labels.tolist() == [5, 0, 4]


def test_mnist_plain_and_gz_synthetic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 7, dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(x))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y)))
    for root in (tmp_path, tmp_path / "MNIST", raw):
        d = load_dataset("mnist", root, split="test")
        assert torch.equal(d.images[:, 0], torch.from_numpy(x))
        assert torch.equal(d.labels, torch.from_numpy(y).long())
    with pytest.raises(FileNotFoundError, match=rf"MNIST train files not found under {tmp_path}: looked for "
                                                 r"train-images-idx3-ubyte and train-labels-idx1-ubyte \(or .gz\)"):
        load_dataset("mnist", tmp_path, split="train")


def test_mnist_bad_idx(tmp_path: Path) -> None:
    x = np.zeros((2, 28, 28), np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + _idx_bytes(x)[4:])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match="magic"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(x)[:-1])
    with pytest.raises(ValueError, match="do not match"):
        load_dataset("mnist", tmp_path)


@needs_shared
def test_cifar10_webp_tiles() -> None:
    d = load_dataset("cifar10", SHARED)
    assert d.images.shape == (4000, 3, 32, 32) and d.class_names == CIFAR10_CLASSES
    nhwc = d.images.permute(0, 2, 3, 1).contiguous().numpy()
    assert hashlib.md5(nhwc.tobytes()).hexdigest() == "5ecc921211046fdd5974fb7c7c83d9e3"
    assert nhwc[0, 0, :3].tolist() == [[59, 62, 63], [43, 46, 45], [50, 48, 43]]
    assert d.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    first = load_dataset("cifar10", SHARED / "cifar10", limit=1200, image_size=16)
    assert first.images.shape == (1200, 3, 16, 16)
    assert torch.equal(first.labels, d.labels[:1200])
    with pytest.raises(FileNotFoundError, match="test"):
        load_dataset("cifar10", SHARED, split="test")


def test_cifar10_binary_synthetic(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    batches = []
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (3, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (folder / name).write_bytes(records.tobytes())
        batches.append(records)
    train = np.concatenate(batches[:5])
    for root in (tmp_path, folder):
        d = load_dataset("cifar10", root)
        assert d.images.shape == (15, 3, 32, 32)
        assert torch.equal(d.images, torch.from_numpy(train[:, 1:].reshape(15, 3, 32, 32)))
        assert d.labels.tolist() == train[:, 0].tolist()
    test = load_dataset("cifar10", tmp_path, split="test")
    assert test.labels.tolist() == batches[5][:, 0].tolist()
    assert len(load_dataset("cifar10", tmp_path, limit=4)) == 4
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="3,073-byte records"):
        load_dataset("cifar10", tmp_path, split="test")


def test_cifar10_pickled_version_refused(tmp_path: Path) -> None:
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (py / name).write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickled python version is not loaded for safety"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="no CIFAR-10"):
        load_dataset("cifar10", tmp_path / "cifar-10-batches-py" / "nothing")


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_with_classes(tmp_path: Path) -> None:
    # A wide image: red | green | blue in quarters; the center crop keeps only green.
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10, 0] = wide[:, 10:30, 1] = wide[:, 30:, 2] = 255
    _save(tmp_path / "cats" / "a.png", wide)
    _save(tmp_path / "cats" / "b.jpg", np.full((30, 30, 3), 200, np.uint8))
    _save(tmp_path / "dogs" / "sub" / "c.bmp", np.full((16, 48), 50, np.uint8))  # grayscale, tall crop
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    (tmp_path / "dogs" / "._c.bmp").write_bytes(b"macOS metadata")
    _save(tmp_path / "loose.png", np.zeros((8, 8, 3), np.uint8))  # ignored next to class folders

    d = load_dataset("folder", tmp_path, image_size=8)
    assert d.images.shape == (3, 3, 8, 8) and d.class_names == ["cats", "dogs"] and d.num_classes == 2
    assert d.labels.tolist() == [0, 0, 1]
    red, green, blue = d.images[0].float().mean((1, 2)).tolist()
    assert green > 250 and red < 5 and blue < 5
    assert abs(d.images[1].float().mean() - 200) < 3
    assert (d.images[2] == 50).all()  # grayscale expanded to RGB since the others are colour
    assert len(load_dataset("folder", tmp_path, image_size=8, limit=2)) == 2

    with pytest.raises(ValueError, match="image_size"):
        load_dataset("folder", tmp_path)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        load_dataset("folder", tmp_path, image_size=8)


def test_folder_bad_images_stop_the_load_or_are_skipped_and_counted(tmp_path: Path, capsys) -> None:
    for k in range(4):
        _save(tmp_path / "good" / f"{k}.png", np.full((8, 8), 60 * k, np.uint8))
    png = (tmp_path / "good" / "0.png").read_bytes()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cut.png").write_bytes(png[: len(png) // 2])  # a truncated download
    (tmp_path / "bad" / "fake.jpg").write_bytes(b"<html>404</html>")  # not an image at all
    _save(tmp_path / "bad" / "ok.png", np.full((8, 8), 255, np.uint8))
    with pytest.raises(ValueError, match="cannot read image .*cut.png"):
        load_dataset("folder", tmp_path, image_size=8)
    d = load_dataset("folder", tmp_path, image_size=8, skip_bad_images=True)
    assert len(d) == 5 and d.labels.tolist() == [0, 1, 1, 1, 1] and d.class_names == ["bad", "good"]
    assert d.images[:, 0, 0, 0].tolist() == [255, 0, 60, 120, 180]
    err = capsys.readouterr().err
    assert "skipped 2 of 7 images" in err and "cut.png" in err and "fake.jpg" in err
    with pytest.raises(ValueError, match="applies to the folder dataset"):
        load_dataset("digits", image_size=8, skip_bad_images=True)


def test_folder_unlabelled_grayscale(tmp_path: Path) -> None:
    for k in range(3):
        _save(tmp_path / f"{k}.png", np.full((12, 12), 40 * k, np.uint8))
    d = load_dataset("folder", tmp_path, image_size=6)
    assert d.images.shape == (3, 1, 6, 6) and d.num_classes == 0 and d.class_names == []
    assert d.labels.tolist() == [0, 0, 0]
    assert d.images[:, 0, 0, 0].tolist() == [0, 40, 80]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_dataset("folder", empty, image_size=6)


def test_folder_follows_linked_folders_once_and_skips_hidden_ones(tmp_path: Path) -> None:
    for k in range(2):
        _save(tmp_path / "elsewhere" / f"{k}.png", np.full((8, 8), 10 + k, np.uint8))
    root = tmp_path / "data"
    _save(root / "cats" / "a.png", np.zeros((8, 8), np.uint8))
    _save(root / "dogs" / "b.png", np.full((8, 8), 90, np.uint8))
    (root / "cats" / "more").symlink_to(tmp_path / "elsewhere")  # was passed over without a word
    (root / "cats" / "again").symlink_to(tmp_path / "elsewhere")  # a second link to it: read once
    (root / "cats" / "loop").symlink_to(root / "cats")  # a loop ends
    _save(root / "dogs" / ".thumbnails" / "b.png", np.full((8, 8), 255, np.uint8))  # a viewer's cache
    d = load_dataset("folder", root, image_size=8)
    assert d.images[:, 0, 0, 0].tolist() == [0, 10, 11, 90] and d.labels.tolist() == [0, 0, 0, 1]


def test_folder_reads_photos_the_way_up_their_exif_says(tmp_path: Path) -> None:
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = 255  # stored landscape: left half white
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show it": a portrait photo, white on top
    (tmp_path / "photos").mkdir()
    img.save(tmp_path / "photos" / "p.jpg", exif=exif, quality=100)
    x = load_dataset("folder", tmp_path / "photos", image_size=8).images[0, 0].float()
    assert x[0].mean() > 250 and x[-1].mean() < 5  # a center crop of the portrait: white top, black bottom


def test_class_folders_named_by_numbers_say_their_order(tmp_path: Path, capsys) -> None:
    for name in [str(k) for k in range(11)]:
        _save(tmp_path / "num" / name / "a.png", np.zeros((8, 8), np.uint8))
        _save(tmp_path / "padded" / name.zfill(2) / "a.png", np.zeros((8, 8), np.uint8))
    assert load_dataset("folder", tmp_path / "num", image_size=8).class_names[2] == "10"
    assert "label 2 (`sample --labels 2`) is folder '10', not '2'" in capsys.readouterr().err
    load_dataset("folder", tmp_path / "padded", image_size=8)
    assert "warning" not in capsys.readouterr().err


def test_npz_non_square_images_are_cropped_with_a_word(tmp_path: Path, capsys) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 8, 12), np.uint8))
    assert load_dataset("npz", tmp_path / "d.npz").images.shape == (2, 1, 8, 8)
    assert "12x8 (width x height), not square: each is center-cropped to 8x8" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(5, 6, 6), (5, 6, 6, 1), (5, 6, 6, 3)])
def test_npz_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.array([0, 2, 1, 2, 0])
    np.savez(tmp_path / "a.npz", images=x, labels=y)
    d = load_dataset("npz", tmp_path / "a.npz")
    nhwc = x if x.ndim == 4 else x[..., None]
    assert torch.equal(d.images, torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert d.labels.tolist() == y.tolist() and d.num_classes == 3 and d.class_names == ["0", "1", "2"]


def test_npz_class_names_unlabelled_and_resize(tmp_path: Path) -> None:
    x = np.zeros((4, 10, 12, 3), np.uint8)
    names = np.array(["x", "y", "z"])
    np.savez(tmp_path / "named.npz", images=x, labels=np.array([0, 1, 0, 1]), class_names=names)
    d = load_dataset("npz", tmp_path / "named.npz")
    assert d.num_classes == 3 and d.class_names == ["x", "y", "z"]
    assert d.images.shape == (4, 3, 10, 10)  # non-square: center-cropped to the short side
    np.savez(tmp_path / "plain.npz", images=x[..., 0])
    d = load_dataset("npz", tmp_path / "plain.npz", image_size=4)
    assert d.images.shape == (4, 1, 4, 4) and d.num_classes == 0


def test_npz_errors(tmp_path: Path) -> None:
    def check(match: str, **arrays: np.ndarray) -> None:
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match=match):
            load_dataset("npz", tmp_path / "bad.npz")

    x = np.zeros((3, 4, 4), np.uint8)
    check("missing key 'images'", pixels=x)
    check("uint8", images=x.astype(np.float32))
    check("shape", images=np.zeros((3, 4, 4, 2), np.uint8))
    check("labels", images=x, labels=np.zeros(2, np.int64))
    check("labels", images=x, labels=np.zeros(3, np.float32))
    check(r"\[0, 2\)", images=x, labels=np.array([0, 1, 2]), class_names=np.array(["a", "b"]))
    check("unpickling", images=x, class_names=np.array(["a", None], dtype=object))


# --- BatchSampler -------------------------------------------------------------------------


def test_float_uint8_round_trip() -> None:
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_float(x)
    assert f.dtype == torch.float32 and f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), x)
    assert to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_sampler_deterministic_and_covers_each_epoch() -> None:
    data = _tiny(n=10)
    sampler = BatchSampler(data, batch_size=3, seed=7)
    assert sampler.steps_per_epoch == 3  # 10 // 3; the 10th image waits for another epoch
    x, y, cond = sampler(0)
    assert x.shape == (3, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64 and cond == {}
    assert x.min() >= -1 and x.max() <= 1

    def ids(s: BatchSampler, i: int) -> list[int]:
        x, y, _ = s(i)
        k = to_uint8(x[:, 0, 0, 0]).long()
        assert torch.equal(y, k % 3)  # labels travel with their images
        return k.tolist()

    fresh = BatchSampler(data, batch_size=3, seed=7)
    for i in (5, 0, 4, 1):  # any order, any fresh instance: same batches
        assert ids(fresh, i) == ids(sampler, i)
    assert ids(sampler, 0) != ids(sampler, 1)
    for epoch in range(3):
        seen = sum((ids(sampler, epoch * 3 + s) for s in range(3)), [])
        assert len(set(seen)) == 9  # each image at most once per epoch, one dropped
    epoch0 = sum((ids(sampler, s) for s in range(3)), [])
    epoch1 = sum((ids(sampler, 3 + s) for s in range(3)), [])
    assert epoch0 != epoch1  # a new permutation at the epoch boundary
    other_seed = BatchSampler(data, batch_size=3, seed=8)
    assert sum((ids(other_seed, s) for s in range(3)), []) != epoch0


def test_sampler_exact_epoch_and_errors() -> None:
    data = _tiny(n=12)
    sampler = BatchSampler(data, batch_size=4, seed=0)
    seen = torch.cat([to_uint8(sampler(i)[0][:, 0, 0, 0]) for i in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(data, batch_size=13)
    with pytest.raises(ValueError, match="step"):
        sampler(-1)


def test_sampler_parts_make_up_the_whole_batch() -> None:
    """Micro-batches and processes take disjoint slices of the same step batch, in part order."""
    data = _tiny(n=24)
    sampler = BatchSampler(data, batch_size=8, seed=2, hflip=True)
    for step in (0, 2, 3):  # 3 is the first step of epoch 1
        x, y, _ = sampler(step)
        parts = [sampler(step, part, 4) for part in range(4)]
        assert all(len(p[0]) == 2 for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="part 0 of 3"):
        sampler(0, 0, 3)
    with pytest.raises(ValueError, match="part 4 of 4"):
        sampler(0, 4, 4)


def test_sampler_hflip() -> None:
    n = 400
    ramp = torch.arange(8, dtype=torch.uint8).repeat(n, 3, 8, 1)  # increases left to right
    data = ImageData(ramp, torch.zeros(n, dtype=torch.int64), 0, [])
    sampler = BatchSampler(data, batch_size=200, seed=3, hflip=True)
    x = sampler(1)[0]
    flipped = x[:, 0, 0, 0] > x[:, 0, 0, -1]
    assert 60 < int(flipped.sum()) < 140
    assert torch.equal(x[flipped], to_float(ramp[:1].flip(-1)).expand(int(flipped.sum()), -1, -1, -1))
    assert torch.equal(x[~flipped], to_float(ramp[:1]).expand(int((~flipped).sum()), -1, -1, -1))
    assert torch.equal(x, BatchSampler(data, batch_size=200, seed=3, hflip=True)(1)[0])
    assert not torch.equal(x, sampler(2)[0])
    assert torch.equal(BatchSampler(data, batch_size=200, seed=3)(1)[0], to_float(ramp[:200]))


def test_image_data_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), 0, [])
    with pytest.raises(ValueError, match="class names"):
        ImageData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 2, ["a"])


def test_load_split_is_none_only_for_a_missing_split(tmp_path) -> None:
    from liquidgen.data import load_split

    assert load_split("digits", None, 8, "test") is None  # digits has no test split
    assert len(load_split("digits", None, 8, "train", limit=5)) == 5
    assert load_split("cifar10", tmp_path, None, "test") is None  # no test files there
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError):  # a broken file is still an error, not a missing split
        load_split("npz", bad, None, "train")
