"""Precomputed datasets: shards, resume after a crash, latent statistics, sources, error messages."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from liquidgen import precompute as pc
from liquidgen.autoencoders import AUTOENCODERS, Identity
from liquidgen.data import BatchSampler, load_dataset, load_precomputed
from liquidgen.latent_space import to_float
from liquidgen.precompute import Request, precompute


def _digits(**kw) -> Request:
    return Request(source="digits", root=None, image_size=8, **kw)


def _arrays(root):
    data = load_precomputed(root)
    return data.images, data.labels, data.context, data.captions


def test_identity_stores_the_pixels_losslessly(tmp_path):
    precompute(_digits(shard_size=500), tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 1797 and len(manifest["shards"]) == 4
    assert manifest["latent_shape"] == [1, 8, 8] and manifest["stats"] is None
    data = load_precomputed(tmp_path)
    images = load_dataset("digits", image_size=8)
    assert data.images.dtype == torch.uint8 and torch.equal(data.images, images.images)
    assert torch.equal(data.labels, images.labels) and data.class_names == images.class_names
    assert data.context is None and data.captions is None and data.space.pixels
    x, y, cond = BatchSampler(data, 16, seed=0)(0)  # the same model space as the images
    x_img, y_img, _ = BatchSampler(images, 16, seed=0)(0)
    assert torch.equal(x, x_img) and torch.equal(y, y_img) and cond == {}
    assert len(load_precomputed(tmp_path, limit=600)) == 600


class Affine(Identity):
    """A stand-in autoencoder with known float latents: z_c = (c + 1) x_c + c."""

    name = "affine"

    def _encode(self, images):
        c = torch.arange(images.shape[1], dtype=images.dtype).view(1, -1, 1, 1)
        return (c + 1) * images + c

    def _decode(self, latents):
        c = torch.arange(latents.shape[1], dtype=latents.dtype).view(1, -1, 1, 1)
        return (latents - c) / (c + 1)


def test_latent_statistics_are_per_channel_and_normalise(tmp_path, monkeypatch):
    monkeypatch.setitem(AUTOENCODERS, "affine", Affine)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    images[..., 0] //= 4  # channels with different means and spreads
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(40) % 4)
    req = Request(source="npz", root=str(tmp_path / "d.npz"), image_size=16, shard_size=16,
                  autoencoder={"name": "affine"})
    precompute(req, tmp_path / "lat", progress=False)
    data = load_precomputed(tmp_path / "lat")
    assert data.images.dtype == torch.float16 and data.images.shape == (40, 3, 16, 16)
    z = Affine().encode(to_float(torch.from_numpy(images).permute(0, 3, 1, 2)))
    per_channel = z.double().transpose(0, 1).flatten(1)
    torch.testing.assert_close(data.space.mean.double(), per_channel.mean(1))
    torch.testing.assert_close(data.space.std.double(), per_channel.std(1, unbiased=False))
    normed = data.to_model(data.images)
    torch.testing.assert_close(normed.transpose(0, 1).flatten(1).mean(1), torch.zeros(3), atol=2e-3, rtol=0)
    torch.testing.assert_close(normed.transpose(0, 1).flatten(1).std(1), torch.ones(3), atol=2e-3, rtol=0)
    # decode(normalised) gives back the images (up to float16 storage)
    back = data.space.decode(normed[:4])
    torch.testing.assert_close(back, to_float(torch.from_numpy(images[:4]).permute(0, 3, 1, 2)), atol=2e-2, rtol=0)
    torch.testing.assert_close(data.space.encode(back), normed[:4], atol=2e-2, rtol=0)


def test_a_crash_leaves_no_readable_half_shard_and_a_rerun_finishes(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    precompute(_digits(shard_size=300, caption_templates=["digit {}"]), clean, progress=False)
    out = tmp_path / "crashed"
    read = pc.MemorySource.read

    def failing(self, i):
        if i == 700:
            raise KeyboardInterrupt  # killed mid-shard
        return read(self, i)

    monkeypatch.setattr(pc.MemorySource, "read", failing)
    with pytest.raises(KeyboardInterrupt):
        precompute(_digits(shard_size=300, caption_templates=["digit {}"]), out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and [s["name"] for s in manifest["shards"]] == ["shard-00000", "shard-00001"]
    (out / "shard-00002.latents.tmp.npy").write_bytes(b"half a file")  # as if killed while writing
    with pytest.raises(ValueError, match="incomplete.*rerun the same command"):
        load_precomputed(out)
    monkeypatch.setattr(pc.MemorySource, "read", read)
    with pytest.raises(ValueError, match="other settings.*shard_size"):
        precompute(_digits(shard_size=100, caption_templates=["digit {}"]), out, progress=False)
    precompute(_digits(shard_size=300, caption_templates=["digit {}"]), out, progress=False)
    for a, b in zip(_arrays(out), _arrays(clean)):
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b
    assert not list(out.glob("*.tmp*"))  # the stale half file was overwritten and renamed


def test_caption_templates():
    caps = pc.label_captions([7, 1, 7], ["0", "1", "2", "3", "4", "5", "6", "7"], ["a {}", "the digit {}"],
                             ["zero", "one", "two", "three", "four", "five", "six", "seven"])
    assert caps == ["a seven", "the digit one", "a seven"]
    with pytest.raises(ValueError, match="exactly once"):
        pc.label_captions([0], ["0"], ["no placeholder"], [])
    with pytest.raises(ValueError, match="2 class words for 1 classes"):
        pc.label_captions([0], ["0"], ["{}"], ["a", "b"])


def _folder(root, n=6, size=(20, 12)):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (40 * i, 0, 0)).save(root / f"im{i}.png")
        (root / f"im{i}.txt").write_text(f"caption {i}\n")
    return root


def test_folder_captions_from_txt_and_metadata(tmp_path):
    root = _folder(tmp_path / "f")
    src = pc.FolderSource(str(root), 8, None, None, True)
    assert [src.read(i)[2] for i in range(6)] == [f"caption {i}" for i in range(6)]
    image, label, _ = src.read(0)
    assert image.shape == (3, 8, 8) and image.dtype == np.uint8 and label == 0
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "im1.png", "text": "from metadata"}) + "\n")
    assert pc.FolderSource(str(root), 8, None, None, True).read(1)[2] == "from metadata"


def test_clear_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"no images .* found in {empty}"):
        pc.FolderSource(str(empty), 8, None, None, True)

    root = _folder(tmp_path / "orphan")
    (root / "ghost.txt").write_text("no image")
    with pytest.raises(ValueError, match="caption file .*ghost.txt has no image"):
        pc.FolderSource(str(root), 8, None, None, True)

    root = _folder(tmp_path / "meta")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "missing.png", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="line 1: missing.png is not an image"):
        pc.FolderSource(str(root), 8, None, None, True)

    root = _folder(tmp_path / "corrupt")
    (root / "im3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="cannot read image .*im3.png"):
        precompute(Request("folder", str(root), 8), tmp_path / "o1", progress=False)
    assert not (tmp_path / "o1" / "shard-00000.latents.npy").exists()
    # asked to, precompute leaves it out and counts it; a shard of only bad images is empty but valid
    (root / "im2.png").write_bytes(b"garbage")
    (root / "im4.png").write_bytes(b"garbage")
    precompute(Request("folder", str(root), 8, shard_size=2, skip_bad_images=True), tmp_path / "skip", progress=False)
    manifest = json.loads((tmp_path / "skip" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["skipped"] == 3 and manifest["count"] == 3
    assert [sh["count"] for sh in manifest["shards"]] == [2, 0, 1]
    assert len(load_precomputed(tmp_path / "skip")) == 3

    root = _folder(tmp_path / "wide")
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(root / "im2.png")  # a 16-bit PNG
    with pytest.raises(ValueError, match="im2.png has mode I;16"):
        precompute(Request("folder", str(root), 8), tmp_path / "o2", progress=False)

    root = _folder(tmp_path / "size")
    with pytest.raises(ValueError, match="im0.png is 20x12, expected 8x8"):
        precompute(Request("folder", str(root), 8, resize=False), tmp_path / "o3", progress=False)

    with pytest.raises(ValueError, match="has no captions"):
        precompute(_digits(text_encoder={"name": "minilm"}), tmp_path / "o4", progress=False)

    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        load_precomputed(tmp_path / "nowhere")


def test_hugging_face_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (10, 10), (i * 30, 255 - i * 30, 0)) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"]),
                                  "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1] * 3, "text": [f"t{i}" for i in range(6)]},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "hf"))
    req = Request("hf", str(tmp_path / "hf"), 8, shard_size=4,
                  hf_columns={"image_column": "image", "label_column": "label", "caption_column": "text"})
    precompute(req, tmp_path / "out", progress=False)
    data = load_precomputed(tmp_path / "out")
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 1] * 3
    assert data.captions == [f"t{i}" for i in range(6)] and data.images.shape == (6, 3, 8, 8)
    assert data.images[2, 0].float().mean() == pytest.approx(60, abs=1)  # row 2's red value survives
    with pytest.raises(ValueError, match="no column 'caption'"):
        pc.HFSource(str(tmp_path / "hf"), 8, "train", None, None, True, caption_column="caption")


def test_a_precomputed_pixel_dataset_is_encoded_again_with_its_caption_features(tmp_path, monkeypatch):
    """Source 'precomputed': a pixel dataset into latents on a machine without the text model (the GPU's), its
    images, labels and captions carried over and its stored caption features copied, not encoded again."""
    monkeypatch.setitem(AUTOENCODERS, "affine", Affine)
    text = {"name": "minilm"}
    pixels = tmp_path / "px"
    precompute(_digits(limit=40, shard_size=16, text_encoder=text, caption_templates=["a handwritten {}"]), pixels,
               progress=False)

    def no_text_model(**kwargs):
        raise AssertionError("the text model was built")

    monkeypatch.setattr(pc, "build_text_encoder", no_text_model)
    req = Request(source="precomputed", root=str(pixels), image_size=8, shard_size=16, autoencoder={"name": "affine"},
                  text_encoder=text)
    precompute(req, tmp_path / "lat", progress=False)
    before, after = load_precomputed(pixels), load_precomputed(tmp_path / "lat")
    rgb = before.images.expand(-1, 3, -1, -1)  # the autoencoder takes RGB; digits are grayscale
    assert after.images.dtype == torch.float16 and after.images.shape == rgb.shape
    torch.testing.assert_close(after.images.float(), Affine().encode(to_float(rgb)), atol=1e-2, rtol=0)
    assert torch.equal(after.labels, before.labels) and after.captions == before.captions
    assert torch.equal(after.context, before.context) and after.text_encoder == text and after.text_tokens == 0
    assert json.loads((tmp_path / "lat" / "manifest.json").read_text())["context_dim"] == before.context.shape[1]
    # features of another kind (per-token) are not stored there: the text model is needed, and asked for
    with pytest.raises(AssertionError, match="text model was built"):
        precompute(Request(source="precomputed", root=str(pixels), image_size=8, autoencoder={"name": "affine"},
                           text_encoder=text, text_tokens=4), tmp_path / "tok", progress=False)
    with pytest.raises(ValueError, match="holds latents, not pixels"):
        precompute(Request(source="precomputed", root=str(tmp_path / "lat"), image_size=8), tmp_path / "again",
                   progress=False)


# --- data inputs audit: a source changed between runs, the user's files, captions -----------------------------


def _classes(root, names, per_class=2):
    for c, name in enumerate(names):
        for k in range(per_class):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), 50 * c + k).save(root / name / f"{k}.png")
    return root


def _interrupt_after_one_shard(monkeypatch, req, out):
    write = pc._write_shard
    monkeypatch.setattr(pc, "_write_shard", lambda out, name, *a: write(out, name, *a) if name == "shard-00000"
                        else (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        precompute(req, out, progress=False)
    monkeypatch.setattr(pc, "_write_shard", write)


def test_a_source_changed_before_the_rerun_is_refused_not_mixed(tmp_path, monkeypatch):
    """Shards resumed from another listing stored images twice or never, under shifted labels: a class folder
    added after an interruption made the first shard's birds 'ant'."""
    root, out = _classes(tmp_path / "src", ["bird", "cat"]), tmp_path / "out"
    req = Request("folder", str(root), 8, shard_size=2)
    _interrupt_after_one_shard(monkeypatch, req, out)
    _classes(root, ["ant"])
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match=f"{root} changed since {out} was started.*--overwrite"):
        precompute(req, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    precompute(req, out, progress=False, overwrite=True)
    data = load_precomputed(out)
    assert data.class_names == ["ant", "bird", "cat"] and data.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_an_unchanged_source_resumes(tmp_path, monkeypatch):
    root, out = _classes(tmp_path / "src", ["bird", "cat"]), tmp_path / "out"
    req = Request("folder", str(root), 8, shard_size=2)
    _interrupt_after_one_shard(monkeypatch, req, out)
    precompute(req, out, progress=False)
    assert load_precomputed(out).images[:, 0, 0, 0].tolist() == [0, 1, 50, 51]


def test_an_npz_replaced_before_the_rerun_is_refused(tmp_path, monkeypatch):
    images = np.zeros((4, 8, 8), np.uint8)
    np.savez(tmp_path / "d.npz", images=images)
    req = Request("npz", str(tmp_path / "d.npz"), 8, shard_size=2)
    _interrupt_after_one_shard(monkeypatch, req, tmp_path / "out")
    np.savez(tmp_path / "d.npz", images=images + 1)  # the same count and size, other images
    with pytest.raises(ValueError, match="changed since"):
        precompute(req, tmp_path / "out", progress=False)


def test_overwrite_deletes_the_datasets_files_only(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard-notes.txt").write_text("mine")
    (out / "shard-photo.png").write_bytes(b"mine too")
    precompute(_digits(limit=20), out, progress=False)
    precompute(_digits(limit=10), out, progress=False, overwrite=True)
    assert (out / "shard-notes.txt").read_text() == "mine" and (out / "shard-photo.png").is_file()
    assert len(load_precomputed(out)) == 10


def test_an_output_folder_inside_the_source_folder_is_refused(tmp_path):
    root = _classes(tmp_path / "src", ["bird", "cat"])
    for out in (root / "latents", root):
        with pytest.raises(ValueError, match="is inside the source folder"):
            precompute(Request("folder", str(root), 8), out, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["bird", "cat"]


def test_labels_outside_the_manifests_classes_are_refused(tmp_path):
    precompute(_digits(limit=20), tmp_path, progress=False)
    np.save(tmp_path / "shard-00000.labels.npy", np.full(20, 17, np.int64))
    with pytest.raises(ValueError, match=r"labels in \[17, 17\], but its manifest lists 10 classes"):
        load_precomputed(tmp_path)


@pytest.mark.parametrize("lines, expected", [
    ([{"file_name": "im0.png", "text": None}], "line 1: the caption of im0.png is null, not a string"),
    ([{"file_name": "im0.png", "text": ["a", "b"]}], 'line 1: the caption of im0.png is \\["a", "b"\\]'),
    ([{"file_name": "im0.png", "text": "a"}, {"file_name": "im0.png", "text": "b"}],
     "lines 1 and 2 both caption im0.png"),
], ids=["null", "list", "twice"])
def test_metadata_captions_are_one_string_per_image(tmp_path, lines, expected):
    root = _folder(tmp_path / "f")
    (root / "metadata.jsonl").write_text("\n".join(map(json.dumps, lines)))
    with pytest.raises(ValueError, match=expected):
        pc.FolderSource(str(root), 8, None, None, True)


def test_an_image_without_a_caption_is_found_before_anything_is_read(tmp_path, monkeypatch):
    root = _folder(tmp_path / "f")
    (root / "im4.txt").unlink()
    monkeypatch.setattr(pc, "read_image", lambda *a: pytest.fail("an image was read"))
    with pytest.raises(ValueError, match="1 of the 6 images .* have no caption.*im4.png"):
        precompute(Request("folder", str(root), 8, shard_size=2), tmp_path / "out", progress=False)


def test_caption_files_bom_encoding_and_empty(tmp_path, capsys):
    root = _folder(tmp_path / "f", n=3)
    (root / "im0.txt").write_bytes("\ufeffcaption 0".encode())  # Notepad's byte-order mark
    (root / "im1.txt").write_text("")
    assert [pc.FolderSource(str(root), 8, None, None, True).read(i)[2] for i in range(3)] == \
        ["caption 0", "", "caption 2"]
    assert "1 of the 3 images" in capsys.readouterr().err
    (root / "im2.txt").write_bytes(b"caf\xe9")  # Latin-1
    with pytest.raises(ValueError, match="im2.txt is not UTF-8 text"):
        pc.FolderSource(str(root), 8, None, None, True)


def test_captions_beside_images_in_linked_folders_hidden_ones_ignored(tmp_path):
    elsewhere = _folder(tmp_path / "elsewhere", n=2)
    root = tmp_path / "f"
    _folder(root / "cat", n=2)
    (root / "cat" / "more").symlink_to(elsewhere)
    _folder(root / "cat" / ".cache", n=1)
    (root / "cat" / ".cache" / "im0.png").unlink()  # an orphan caption, in a hidden folder
    src = pc.FolderSource(str(root), 8, None, None, True)
    assert [p.relative_to(root).as_posix() for p, _ in src.files] == \
        ["cat/im0.png", "cat/im1.png", "cat/more/im0.png", "cat/more/im1.png"]
    assert src.captions == ["caption 0", "caption 1", "caption 0", "caption 1"]
