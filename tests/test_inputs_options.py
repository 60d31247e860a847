"""Every numeric option is range-checked where it is parsed (flags by argparse, config keys at load time),
device names are checked against what the build has, and a user's mistake ends in one line naming the
culprit, before anything is written."""
import dataclasses
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import SafetensorError

from liquidgen.cli import build_parser, main
from liquidgen.config import (
    AT_LEAST_ONE,
    NONNEGATIVE,
    RANGES,
    Bound,
    Config,
    ConfigError,
    load_config,
)
from liquidgen.distributed import pick_device, setup
from liquidgen.train_autoencoder import AutoencoderConfig

TINY = str(Path("configs/digits-liquid-tiny.yaml").resolve())
VAE = str(Path("configs/mnist-vq-vae.yaml").resolve())


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding a few inputs, made the current one so that default outputs (runs/...) land in it."""
    np.savez(tmp_path / "three.npz", images=np.zeros((3, 8, 8, 1), np.uint8), labels=np.arange(3))
    (tmp_path / "syntax.yaml").write_text("model:\n  name: liquid\n  preset: [tiny\ntrain:\n  steps: 3\n")
    (tmp_path / "list.yaml").write_text("- model\n- train\n")
    tiny = Path(TINY).read_text()
    (tmp_path / "dropout.yaml").write_text(tiny.replace("  ema_decay: 0.999\n", "  label_dropout: 1.5\n"))
    (tmp_path / "folder.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder: Path) -> dict:
    """Every path under `folder`: files with their bytes and mtime, folders with their mtime."""
    return {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def fails(argv: list[str], capsys) -> str:
    """stderr of a command that must stop with rc 2 and no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def train(*overrides: str) -> list[str]:
    return ["train", TINY, "--out", "run", "--set", *overrides]


# (argv, what stderr must say). Flags fail in argparse (usage line, "argument --flag: ..."); config keys and
# devices as one "error: ..." line. None of them may get as far as reading a checkpoint or building a model.
FLAG_CASES = [
    (["sample", "ckpt", "--n", "-5"], "argument --n/--num-samples: must be >= 1, got -5"),
    (["sample", "ckpt", "--n", "-5", "--labels", "3"], "argument --n/--num-samples: must be >= 1, got -5"),
    (["sample", "ckpt", "--n", "0"], "argument --n/--num-samples: must be >= 1, got 0"),
    (["sample", "ckpt", "--n", "many"], "argument --n/--num-samples: expected an integer, got 'many'"),
    (["sample", "ckpt", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["sample", "ckpt", "--cfg", "-1"], "argument --cfg: must be >= 0, got -1"),
    (["sample", "ckpt", "--cfg", "nan"], "argument --cfg: must be >= 0, got nan"),
    (["sample", "ckpt", "--cfg-interval", "0.9", "0.1"],
     "argument --cfg-interval: expected T_LOW < T_HIGH, got 0.9 0.1"),
    (["sample", "ckpt", "--cfg-interval", "0.5", "0.5"], "argument --cfg-interval: expected T_LOW < T_HIGH"),
    (["sample", "ckpt", "--cfg-interval", "0.5", "1.5"], "argument --cfg-interval: must be in [0, 1], got 1.5"),
    (["sample", "ckpt", "--iters", "0"], "argument --iters: must be >= 1, got 0"),
    (["sample", "ckpt", "--budget", "0"], "argument --budget: must be >= 1, got 0"),
    (["sample", "ckpt", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    (["sample", "ckpt", "--seed", "-1"], "argument --seed: must be in [0, 2^63), got -1"),
    (["sample", "ckpt", "--device", "gpu"], "argument --device: 'gpu' is not a device; expected auto, cpu, cuda"),
    (["sample", "ckpt", "--device", "cuda:x"], "argument --device: 'cuda:x' is not a device"),
    (["interpolate", "ckpt", "--seeds", "1", "2", "--frames", "1"], "argument --frames: must be in [2, 1000], got 1"),
    (["interpolate", "ckpt", "--seeds", "1", "-2"], "argument --seeds: must be in [0, 2^63), got -2"),
    (["interpolate", "ckpt", "--seeds", "1", "2", "--duration", "0"], "argument --duration: must be >= 1, got 0"),
    (["precompute", "digits", "--out", "pre", "--size", "0"], "argument --size: must be >= 1, got 0"),
    (["precompute", "digits", "--out", "pre", "--size", "8", "--batch-size", "0"], "argument --batch-size: must be"),
    (["precompute", "digits", "--out", "pre", "--size", "8", "--shard-size", "0"], "argument --shard-size: must be"),
    (["precompute", "digits", "--out", "pre", "--size", "8", "--text-tokens", "-1"], "argument --text-tokens: must"),
    (["precompute", "digits", "--out", "pre", "--size", "8", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["eval", "three.npz", "--data", "digits", "--n", "0"], "argument --n/--num-samples: must be >= 1, got 0"),
    (["eval", "three.npz", "--data", "digits", "--size", "0"], "argument --size: must be >= 1, got 0"),
    (["eval", "three.npz", "--data", "digits", "--reference-limit", "0"], "argument --reference-limit: must be >= 1"),
    (["eval", "fit-classifier", "--data", "digits", "--size", "0"], "argument --size: must be >= 1, got 0"),
    (["bench", "speed", "--out", "b", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    (["bench", "speed", "--out", "b", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["bench", "speed", "--out", "b", "--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
    (["bench", "speed", "--out", "b", "--sample-batch", "0"], "argument --sample-batch: must be >= 1, got 0"),
    (["bench", "quality", TINY, "liquid:tiny", "--out", "b", "--minutes", "0"], "argument --minutes: must be > 0"),
    (["bench", "quality", TINY, "liquid:tiny", "--out", "b", "--minutes", "1", "--curve-every", "0"],
     "argument --curve-every: must be in (0, 1], got 0"),
    (["bench", "quality", TINY, "liquid:tiny", "--out", "b", "--minutes", "1", "--curve-every", "1.5"],
     "argument --curve-every: must be in (0, 1], got 1.5"),
    (["bench", "quality", TINY, "liquid:tiny", "--out", "b", "--minutes", "1", "--nfe", "4", "0"],
     "argument --nfe: must be >= 1, got 0"),
    (["bench", "quality", TINY, "liquid:tiny", "--out", "b", "--minutes", "1", "--samples", "0"],
     "argument --samples: must be >= 1, got 0"),
    (["models", "--size", "0"], "argument --size: must be >= 1, got 0"),
    (["models", "--classes", "-1"], "argument --classes: must be >= 0, got -1"),
]
ERROR_CASES = [
    (["train", "syntax.yaml", "--out", "run"],
     ("config syntax.yaml:4:6: invalid YAML: expected ',' or ']', but got ':' "
      "(while parsing a flow sequence at line 3)")),
    (["train", "list.yaml", "--out", "run"], "config list.yaml: expected a mapping of sections"),
    (["train", "folder.yaml", "--out", "run"], "config folder.yaml is a folder"),
    (["train", "missing.yaml"], "config file not found: missing.yaml"),
    (["train", "dropout.yaml"], "train.label_dropout: must be in [0, 1], got 1.5"),
    (train("train.label_dropout=2"), "train.label_dropout: must be in [0, 1], got 2"),
    (train("train.caption_dropout=-0.1"), "train.caption_dropout: must be in [0, 1], got -0.1"),
    (train("train.ema_decay=1.01"), "train.ema_decay: must be in [0, 1], got 1.01"),
    (train("optim.lr=0"), "optim.lr: must be > 0, got 0"),
    (train("optim.lr=.nan"), "optim.lr: must be > 0, got nan"),
    (train("optim.betas=[0.9, 1.0]"), "optim.betas[1]: must be in [0, 1), got 1.0"),
    (train("optim.weight_decay=-1"), "optim.weight_decay: must be >= 0, got -1"),
    (train("optim.warmup_steps=-1"), "optim.warmup_steps: must be >= 0, got -1"),
    (train("train.minutes=-1"), "train.minutes: must be >= 0, got -1"),
    (train("train.keep_checkpoints=-1"), "train.keep_checkpoints: must be >= 0, got -1"),
    (train("train.eval_samples=0"), "train.eval_samples: must be >= 1, got 0"),
    (train("data.image_size=0"), "data.image_size: must be >= 1, got 0"),
    (train("data.limit=0"), "data.limit: must be >= 1, got 0"),
    (train("sample.n=0"), "sample.n: must be >= 1, got 0"),
    (train("sample.cfg=-1"), "sample.cfg: must be >= 0, got -1"),
    (train("sample.cfg_interval=[0.9, 0.1]"), "sample.cfg_interval: expected 0 <= low < high <= 1"),
    (train("train.seed=-1"), "train.seed: must be in [0, 2^63), got -1"),
    (train("train.device=gpu"), "train.device: 'gpu' is not a device; expected auto, cpu, cuda, cuda:N or mps"),
    (["train-autoencoder", VAE, "--out", "run", "--set", "train.ema_decay=2"], "train.ema_decay: must be in [0, 1]"),
    (["train-autoencoder", VAE, "--out", "run", "--set", "optim.name=muon"],
     "optim.name: muon trains the weights of linear layers (optim.py), and train-autoencoder's networks have none"),
    (["train-autoencoder", VAE, "--out", "run", "--set", "data.name=digits", "data.limit=64"],
     "train.holdout 500: holding out 500 of the 64 images leaves none to train on"),
    (["train-autoencoder", VAE, "--out", "run", "--set", "data.name=digits", "data.limit=600", "train.holdout=580",
      "train.batch_size=32"], "holding out 580 of the 600 images leaves only 20, less than a batch of 32"),
    (["eval", "fit-classifier", "--data", "folder", "--root", "."],
     "dataset 'folder' needs an image size (its images may differ in size): --size on the command line"),
    (["eval", "three.npz", "--data", "digits", "--n", "10", "--device", "cpu", "--inception-weights", "no.pth"],
     "--n 10: three.npz holds only 3 samples; lower --n or leave it out"),
    (["eval", "ckpt", "--data", "folder", "--root", "x", "--device", "cpu"],  # said before a sample is drawn
     "nothing to measure with: give --classifier"),
    (["sample", "ckpt", "--device", "cuda"], "--device cuda: "),
    (["sample", "ckpt", "--out", "grid.txt", "--device", "cpu"],
     "--out grid.txt: give a .png (a grid) or a .npz (uint8 images and labels)"),
    (["interpolate", "ckpt", "--seeds", "1", "2", "--out", "walk.gif", "--device", "cpu"],
     "--out walk.gif: give a .png (the strip; the GIF is written beside it)"),
]


@pytest.mark.parametrize("argv,message", FLAG_CASES + ERROR_CASES, ids=lambda v: " ".join(v) if isinstance(v, list)
                         else None)
def test_a_bad_input_is_one_line_and_changes_nothing(argv, message, workdir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU build's answer, on any machine
    before = snapshot(workdir)
    err = fails(argv, capsys)
    assert message in err
    if (argv, message) in ERROR_CASES:
        assert err.startswith("error: ") and err.count("\n") == 1, err
    else:  # one line too: argparse's usage block is left to --help
        assert err.startswith(f"liquidgen {argv[0]}") and err.count("\n") == 1, err
        assert f"(see liquidgen {argv[0]}" in err and err.endswith(" --help)\n")
    assert snapshot(workdir) == before  # no run folder, no output, nothing touched


def test_flags_accept_their_bounds():
    parse = build_parser().parse_args
    args = parse(["sample", "ckpt", "--n", "1", "--steps", "1", "--cfg", "0", "--cfg-interval", "0", "1",
                  "--seed", str(2**63 - 1), "--batch", "1", "--device", "cuda:3"])
    assert (args.n, args.steps, args.cfg, args.cfg_interval, args.device) == (1, 1, 0.0, [0.0, 1.0], "cuda:3")
    args = parse(["bench", "quality", TINY, "liquid:tiny", "--out", "b", "--minutes", "0.01", "--curve-every", "1"])
    assert (args.minutes, args.curve_every) == (0.01, 1.0)
    assert parse(["bench", "speed", "--out", "b", "--warmup", "0"]).warmup == 0
    assert parse(["precompute", "digits", "--out", "p", "--size", "1", "--text-tokens", "0"]).text_tokens == 0
    assert parse(["interpolate", "ckpt", "--seeds", "0", "1", "--frames", "2"]).frames == 2


@pytest.mark.parametrize("key,ok,bad", [
    ("train.label_dropout", [0, 1], [-0.001, 1.001, float("nan")]),
    ("train.ema_decay", [0, 1], [1.0001]),
    ("optim.lr", [1e-12], [0, -1e-3, float("inf")]),
    ("optim.muon_momentum", [0, 0.999], [1, -0.1]),
    ("optim.grad_clip", [0], [-1e-9]),
    ("train.sample_every", [0], [-1]),
    ("train.eval_steps", [0], [-1]),
    ("train.steps", [1], [0]),
    ("sample.per_class", [1], [0]),
    ("data.image_size", [None, 1], [0]),
    ("train.seed", [0, 2**63 - 1], [-1, 2**63]),
])
def test_ranges_accept_the_bound_and_refuse_just_past_it(key, ok, bad):
    section, name = key.split(".")
    for value in ok:
        config = load_config(None, [f"{key}={yaml.safe_dump(value).splitlines()[0]}"])
        assert getattr(getattr(config, section), name) == value
    for value in bad:
        with pytest.raises(ConfigError, match=f"^{key}: must be "):
            load_config(None, [f"{key}={value}"])


def test_sample_grid_takes_a_grid_spec():
    assert load_config(None, ["sample.grid=consistency:theta_mid=0.9"]).sample.grid == "consistency:theta_mid=0.9"
    with pytest.raises(ConfigError, match="^sample.grid: unknown time grid 'cosine'"):
        load_config(None, ["sample.grid=cosine"])
    with pytest.raises(ConfigError, match="^sample.grid: time grid 'karras:rh0=5'"):
        load_config(None, ["sample.grid=karras:rh0=5"])


def test_every_range_names_a_real_key():
    """A misspelt key in RANGES would check nothing; each must be a field of a top-level config."""
    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                yield from keys(type(default), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"
    known = set(keys(Config)) | set(keys(AutoencoderConfig))
    assert set(RANGES) <= known, set(RANGES) - known


def test_other_configs_add_bounds_by_key():
    """The table is keyed by dotted key, so train-autoencoder registers its own sections' bounds."""
    assert RANGES["loss.gan_weight"] is NONNEGATIVE and RANGES["model.channel_mult"] is AT_LEAST_ONE
    with pytest.raises(ConfigError, match=r"^model.kind: 'nope' is not one of kl, vq"):
        load_config(None, ["model.kind=nope"], cls=AutoencoderConfig)
    with pytest.raises(ConfigError, match=r"^loss.gan_weight: must be >= 0, got -1"):
        load_config(None, ["loss.gan_weight=-1"], cls=AutoencoderConfig)
    with pytest.raises(ConfigError, match=r"^model.channel_mult\[1\]: must be >= 1, got 0"):
        load_config(None, ["model.channel_mult=[1, 0]"], cls=AutoencoderConfig)


def test_bound_describes_itself():
    assert str(Bound(0, 1)) == "in [0, 1]" and str(Bound(0, 1, high_open=True)) == "in [0, 1)"
    assert str(Bound(0, low_open=True)) == "> 0" and str(Bound(2)) == ">= 2"


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this process sees `count` CUDA GPUs (0: a torch build without CUDA)."""
    def see(count: int, cuda_version: str | None = "12.4"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.version, "cuda", cuda_version)
        monkeypatch.setattr(torch.version, "hip", None)
    return see


def test_devices_are_checked_against_the_machine(gpus, monkeypatch):
    gpus(2)
    assert pick_device("cuda:1") == torch.device("cuda:1") and pick_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"^--device cuda:2: this machine shows 2 CUDA devices \(cuda:0 to cuda:1\); "
                                         r"use --device cpu \(or auto\)$"):
        pick_device("cuda:2", "--device")
    gpus(0, cuda_version=None)
    assert pick_device("auto") == torch.device("cpu")
    build = re.escape(torch.__version__)
    with pytest.raises(ValueError, match=rf"^train.device cuda: this torch {build} is a build without CUDA; "
                                         r"use --set train.device=cpu \(or auto\)$"):
        setup("cuda")
    gpus(0)
    with pytest.raises(ValueError, match="finds no usable GPU"):
        pick_device("cuda", "--device")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device mps: MPS is not available"):
        pick_device("mps", "--device")
    with pytest.raises(ValueError, match=r"^--device: 'meta' is not a device"):
        pick_device("meta", "--device")


def test_ctrl_c_is_one_line_and_rc_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("liquidgen.flops.forward_flops", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize("error", [yaml.YAMLError("bad yaml"), SafetensorError("bad header"),
                                   Image.DecompressionBombError("too many pixels"), zipfile.BadZipFile("not a zip"),
                                   FloatingPointError("loss is nan")])
def test_third_party_file_errors_are_one_line(error, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr("liquidgen.flops.forward_flops", fail)
    assert fails(["models"], capsys) == f"error: {error}\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr("liquidgen.flops.forward_flops", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["models"])


def test_a_config_object_takes_overrides_as_a_file_does():
    """`liquidgen distill` and the benchmarks override a built Config: a copy, checked like a file's."""
    base = load_config("configs/mnist-unet-scm.yaml")
    copy = load_config(base, ["optim.lr=3e-4", "objective.options.teacher_cfg=1.5"])
    assert (copy.optim.lr, copy.objective.options["teacher_cfg"]) == (3e-4, 1.5)
    assert (base.optim.lr, base.objective.options["teacher_cfg"]) == (1e-4, 1.0)
    assert load_config(base) == base
    with pytest.raises(ConfigError, match="^optim.lr: must be "):
        load_config(base, ["optim.lr=-1"])
