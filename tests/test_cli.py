import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from liquidgen.cli import main

QUICK = ["train.steps=4", "train.batch_size=16", "train.log_every=2", "train.sample_every=4",
         "train.ckpt_every=2", "train.keep_checkpoints=1", "data.image_size=8", "sample.steps=3",
         "sample.per_class=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(out), "--set", *QUICK])
    return out


def test_train_writes_the_run_folder(run_dir):
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-000004"]  # keep_checkpoints=1
    grid = Image.open(run_dir / "samples" / "step-000004.png")
    assert grid.mode == "L" and grid.width < grid.height  # 10 class rows of 2 samples
    assert (run_dir / "loss.png").is_file() and (run_dir / "config.yaml").is_file()


def test_sample_png_grid_and_npz(run_dir, tmp_path):
    png = tmp_path / "grid.png"
    main(["sample", str(run_dir), "--steps", "3", "--out", str(png), "--n", "20"])
    assert Image.open(png).size[0] > 0
    npz = tmp_path / "s.npz"
    main(["sample", str(run_dir / "checkpoints" / "step-000004"), "--steps", "3", "--n", "6",
          "--labels", "3", "7", "--cfg", "2.5", "--seed", "5", "--out", str(npz)])
    data = np.load(npz)
    assert data["images"].shape == (6, 8, 8, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [3, 7, 3, 7, 3, 7]
    again = tmp_path / "again.npz"
    main(["sample", str(run_dir), "--steps", "3", "--n", "6", "--labels", "3", "7", "--cfg", "2.5",
          "--seed", "5", "--out", str(again)])
    assert np.array_equal(np.load(again)["images"], data["images"])  # same seed, same images


def fails(argv: list[str], capsys) -> str:
    """What a command that must stop with a message (rc 2, no traceback) says on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_sample_rejects_bad_labels(run_dir, tmp_path, capsys):
    assert "out of range" in fails(["sample", str(run_dir), "--labels", "12", "--out", str(tmp_path / "x.png")], capsys)
    assert "neither an index nor one of" in fails(
        ["sample", str(run_dir), "--labels", "cat", "--out", str(tmp_path / "x.png")], capsys)
    assert not (tmp_path / "x.png").exists()


def test_bad_config_key_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(tmp_path), "--set", "train.lr=1"])
    assert exc.value.code == 2
    assert "unknown config key train.lr" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_models_table_lists_presets():
    out = subprocess.run([sys.executable, "-m", "liquidgen.cli", "models"], capture_output=True, text=True,
                         check=True).stdout
    from liquidgen.models import BACKBONES
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines() if line.split()[0] in BACKBONES}
    assert set(rows) == {(name, preset) for name, entry in BACKBONES.items() for preset in entry.presets}
    assert rows[("liquid", "S")][:2] == ["16x32x32", "27"]
    assert 49.5 < float(rows[("liquid", "S")][2].rstrip("M")) < 60.5
    # DiT-S/2 and DiT-B/2 as in the DiT paper (Table 4: 6.06 and 23.01 GMACs at 256 px ImageNet latents)
    assert abs(float(rows[("dit", "S")][3]) - 2 * 6.06) < 0.1
    assert abs(float(rows[("dit", "B")][3]) - 2 * 23.01) < 0.2
    unfused, fused = (float(v) for v in rows[("unet", "28")][4:6])
    assert 0 < fused < unfused  # fusing can only remove memory traffic


def test_every_flag_has_help():
    import argparse

    from liquidgen.cli import build_parser

    root = build_parser()
    subparsers = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) >= {"train", "sample", "models"}
    todo = list(subparsers.choices.items())
    while todo:  # nested commands too (bench speed / quality / report)
        name, sub = todo.pop()
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.dest} has no help"
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {k}", v) for k, v in action.choices.items()]


def test_fixed_point_sampling_flags(tmp_path, capsys, run_dir):
    out = tmp_path / "fp"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(out), "--set", *QUICK,
          "model.name=fixed_point", "model.preset=dit-tiny"])
    capsys.readouterr()
    main(["sample", str(out), "--steps", "4", "--budget", "12", "--schedule", "increasing",
          "--out", str(tmp_path / "fp.png")])
    report = capsys.readouterr().out
    assert "fixed point: 12 iterations over 4 calls (2 first, 4 last)" in report
    assert "relative residual" in report
    assert "--iters applies to fixed-point models only" in fails(
        ["sample", str(run_dir), "--iters", "3", "--out", str(tmp_path / "x.png")], capsys)


@pytest.mark.parametrize("sampler,grid", [("heun", "uniform"), ("dpmpp_2m", "karras:rho=5"),
                                          ("consistency", "consistency:theta_mid=0.9"),
                                          ("ddim", "logit")])
def test_sample_with_any_sampler_grid_and_guidance_interval(run_dir, tmp_path, sampler, grid):
    out = tmp_path / "s.npz"
    main(["sample", str(run_dir), "--sampler", sampler, "--grid", grid, "--steps", "3", "--n", "4",
          "--labels", "1", "2",
          "--cfg-interval", "0.2", "0.8", "--out", str(out)])
    assert np.load(out)["images"].shape == (4, 8, 8, 1)
    with pytest.raises(SystemExit):
        main(["sample", str(run_dir), "--sampler", "dopri5"])
    with pytest.raises(SystemExit):  # refused by argparse, before the run loads
        main(["sample", str(run_dir), "--grid", "karras:rh0=5"])


def test_every_preset_loads():
    from pathlib import Path

    from liquidgen.config import Config, load_config
    from liquidgen.train_autoencoder import AutoencoderConfig

    presets = sorted(Path("configs").glob("*.yaml"))
    assert len(presets) >= 18
    for path in presets:
        # unknown keys, bad types and bad choices would raise, naming the key
        load_config(path, cls=AutoencoderConfig if path.stem.endswith("-vae") else Config)


def test_set_refuses_to_replace_a_whole_section(tmp_path, capsys):
    """`--set model=` would swap the config's model for the defaults (another backbone) without a word."""
    for section in ("model", "train"):
        with pytest.raises(SystemExit):
            main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(tmp_path / "run"), "--set", f"{section}="])
        assert f"{section} is a section of the config" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sample_says_when_n_is_rounded_and_reads_the_suffix_in_any_case(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(run), "--set", "train.steps=2",
          "train.batch_size=8", "train.sample_every=0", "data.image_size=8"])
    capsys.readouterr()
    main(["sample", str(run), "--n", "15", "--steps", "2", "--out", str(tmp_path / "s.NPZ")])
    assert "--n 15 is drawn as 10 samples, 1 for each of the 10 classes" in capsys.readouterr().err
    with np.load(tmp_path / "s.NPZ") as f:  # an archive, not a PNG grid under an .NPZ name
        assert f["images"].shape == (10, 8, 8, 1)
    main(["sample", str(run), "--n", "5", "--labels", "3", "--steps", "2", "--out", str(tmp_path / "t.npz")])
    assert "drawn as" not in capsys.readouterr().err
