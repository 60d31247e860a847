"""A run folder has one owner: no run is mixed into another, deleted without being asked, or written by two
processes; a resume is checked against the checkpoint before anything is written."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from liquidgen.checkpoint import list_checkpoints, load_training_state
from liquidgen.cli import main
from liquidgen.config import load_config
from liquidgen.precompute import Request, precompute
from liquidgen.run_folder import LOCK, RunFolderError, claim
from liquidgen.spec import ModelSpec
from liquidgen.train import train

TINY = ["model.preset=tiny", "data.name=digits", "data.image_size=8", "data.limit=64", "train.batch_size=16",
        "train.log_every=1", "train.sample_every=0", "train.ckpt_every=2", "train.steps=2", "sample.steps=2"]
AE_TINY = ["data.name=digits", "data.image_size=8", "model.channels=8", "model.channel_mult=[1, 2]", "train.steps=2",
           "train.batch_size=16", "train.holdout=16", "train.log_every=1", "train.sample_every=0", "train.ckpt_every=0"]


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(load_config(None, TINY), out)
    return out


def cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    return e.value.code, captured.err + captured.out


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(finished_run, capsys):
    before = snapshot(finished_run)
    code, text = cli(["train", "configs/digits-liquid-tiny.yaml", "--out", str(finished_run), "--set", *TINY], capsys)
    assert code == 2 and text.count("\n") == 1, text
    assert f"error: {finished_run} already holds a run (1 checkpoint (newest step-000002)" in text
    assert "--resume" in text and "--overwrite" in text
    assert snapshot(finished_run) == before


def test_resume_with_another_model_is_refused_before_anything_is_written(finished_run, capsys):
    before = snapshot(finished_run)
    code, text = cli(["train", "configs/digits-liquid-tiny.yaml", "--out", str(finished_run), "--resume",
                      "--set", *TINY, "model.preset=XS", "train.steps=4"], capsys)
    assert code == 2, text
    assert "differs from this run in model.preset ('tiny' there, 'XS' now)" in text
    assert snapshot(finished_run) == before and not (finished_run / LOCK).exists()


def test_resume_with_other_data_geometry_names_it(finished_run, tmp_path):
    with pytest.raises(ValueError, match=r"input_size \(8 there, 12 now\)"):
        train(load_config(None, TINY + ["data.image_size=12", "train.steps=4"]), finished_run, resume=True)


def test_resume_lists_changed_settings_and_continues(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    train(load_config(None, TINY + ["train.steps=4", "optim.lr=5e-4"]), run, resume=True)
    out = capsys.readouterr().out
    assert "note: resuming with changed settings: optim.lr 0.0001 -> 0.0005, train.steps 2 -> 4" in out
    assert [c.name for c in list_checkpoints(run)] == ["step-000002", "step-000004"]
    assert "steps: 4" in (run / "config.yaml").read_text()


def test_overwrite_replaces_the_run_and_keeps_other_files(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "step-000002" / "marker").write_text("old run")
    train(load_config(None, TINY + ["train.steps=3", "train.ckpt_every=0"]), run, overwrite=True)
    assert [c.name for c in list_checkpoints(run)] == ["step-000003"]
    assert (run / "notes.txt").read_text() == "mine"
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(RunFolderError, match="give one"):
        train(load_config(None, TINY), tmp_path / "new", resume=True, overwrite=True)
    assert not (tmp_path / "new").exists()


def test_resume_of_an_empty_folder_says_so_and_starts(tmp_path, capsys):
    train(load_config(None, TINY), tmp_path / "new", resume=True)
    assert f"warning: --resume: {tmp_path / 'new'} holds no checkpoint to resume from" in capsys.readouterr().out
    assert list_checkpoints(tmp_path / "new")


def test_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        train(load_config(None, TINY), tmp_path / "f")


HOLDER = textwrap.dedent("""
    import sys, time
    from liquidgen.run_folder import claim
    with claim(sys.argv[1], resume=False, overwrite=False):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_is_refused_and_a_killed_holder_leaves_a_stale_lock(tmp_path, capsys):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=rf"{folder} is in use by process {holder.pid} on .*: wait"):
            train(load_config(None, TINY), folder, resume=True)
        assert (folder / LOCK).exists() and not (folder / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK).exists()  # SIGKILL leaves the file, but not the lock
    with claim(folder, resume=False, overwrite=False):
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()
    assert f"was left by process {holder.pid}" in capsys.readouterr().out
    assert not (folder / LOCK).exists()


def test_the_lock_is_released_when_training_fails(tmp_path, monkeypatch):
    import liquidgen.train as train_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(train_module, "train_step", broken)
    with pytest.raises(RuntimeError, match="boom"):
        train(load_config(None, TINY), tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists()
    t0 = time.time()
    with claim(tmp_path / "run", resume=True, overwrite=False):
        assert time.time() - t0 < 5


def test_a_checkpoint_that_does_not_fit_names_the_tensors_and_restores_nothing(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ckpt = list_checkpoints(run)[-1]
    weights = load_file(ckpt / "model.safetensors")
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, ckpt / "model.safetensors")
    model = ModelSpec.from_json(json.loads((ckpt / "model.json").read_text())).build()
    ema = ModelSpec.from_json(json.loads((ckpt / "model.json").read_text())).build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=rf"model.safetensors does not fit the LiquidGen built for it: "
                                         rf"missing {dropped}"):
        load_training_state(ckpt, model, ema, opt, None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_autoencoder_owns_its_folder(tmp_path):
    from liquidgen.train_autoencoder import AutoencoderConfig, train_autoencoder
    config = load_config(None, AE_TINY, cls=AutoencoderConfig)
    train_autoencoder(config, tmp_path / "ae")
    before = snapshot(tmp_path / "ae")
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_autoencoder(config, tmp_path / "ae")
    assert snapshot(tmp_path / "ae") == before
    bigger = load_config(None, AE_TINY + ["model.latent_channels=8", "train.steps=4"], cls=AutoencoderConfig)
    with pytest.raises(ValueError, match=r"model.latent_channels \(4 there, 8 now\)"):
        train_autoencoder(bigger, tmp_path / "ae", resume=True)
    assert snapshot(tmp_path / "ae") == before


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    from liquidgen.train_autoencoder import AutoencoderConfig, train_autoencoder
    out = tmp_path_factory.mktemp("runs") / "ae"
    train_autoencoder(load_config(None, AE_TINY, cls=AutoencoderConfig), out)
    return out


GENERATOR_RUN = "a generator run (made by `liquidgen train`)"
AUTOENCODER_RUN = "an autoencoder run (made by `liquidgen train-autoencoder`)"


@pytest.mark.parametrize("argv, found, expected, advice", [
    (["sample", "{ae}", "--out", "{tmp}/s.png", "--device", "cpu"], AUTOENCODER_RUN, GENERATOR_RUN,
     "an autoencoder encodes and decodes images but does not generate them: encode a dataset with it"),
    (["train", "configs/digits-liquid-tiny.yaml", "--out", "{tmp}/run", "--set", *TINY, "train.init_from={ae}"],
     AUTOENCODER_RUN, GENERATOR_RUN, "train.init_from starts a generator from another generator's weights"),
    (["train", "configs/digits-liquid-tiny.yaml", "--out", "{ae}", "--resume", "--set", *TINY, "train.steps=4"],
     AUTOENCODER_RUN, GENERATOR_RUN, "resume it with the command that made it"),
    (["train-autoencoder", "configs/mnist-vq-vae.yaml", "--out", "{gen}", "--resume", "--set", *AE_TINY],
     GENERATOR_RUN, AUTOENCODER_RUN, "resume it with the command that made it"),
    (["precompute", "digits", "--size", "8", "--autoencoder", "own", "--ae-option", "path={gen}", "--out",
      "{tmp}/pre"], GENERATOR_RUN, AUTOENCODER_RUN, "the own autoencoder's path= takes the folder of a `liquidgen "
                                                  "train-autoencoder` run"),
], ids=["sample-ae", "init-from-ae", "train-resume-ae", "train-autoencoder-resume-generator", "precompute-generator"])
def test_a_run_of_the_other_kind_is_named_as_such(argv, found, expected, advice, autoencoder_run, finished_run,
                                                  tmp_path, capsys):
    runs = {"ae": autoencoder_run, "gen": finished_run}
    before = {name: snapshot(run) for name, run in runs.items()}
    code, text = cli([a.format(tmp=tmp_path, **runs) for a in argv], capsys)
    assert code == 2 and text.count("\n") == 1, text
    assert f"is a checkpoint of {found}, not of {expected}; {advice}" in text
    assert {name: snapshot(run) for name, run in runs.items()} == before and not any(tmp_path.iterdir())


def test_precompute_continues_its_own_dataset_and_refuses_another(tmp_path, capsys):
    req = Request(source="digits", root=None, image_size=8, limit=40, shard_size=16)
    precompute(req, tmp_path / "pre", progress=False)
    before = snapshot(tmp_path / "pre")
    precompute(req, tmp_path / "pre", progress=False)  # the same command: already complete
    assert "is already complete (40 items)" in capsys.readouterr().out
    other = Request(source="digits", root=None, image_size=8, limit=24, shard_size=16)
    with pytest.raises(ValueError, match="made with other settings \\(limit\\); use another output folder, or "
                                         "--overwrite"):
        precompute(other, tmp_path / "pre", progress=False)
    assert snapshot(tmp_path / "pre") == before
    precompute(other, tmp_path / "pre", progress=False, overwrite=True)
    shards = sorted(p.name for p in (tmp_path / "pre").glob("shard-*.latents.npy"))
    assert shards == ["shard-00000.latents.npy", "shard-00001.latents.npy"]
    assert '"count": 24' in (tmp_path / "pre" / "manifest.json").read_text()


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path, monkeypatch):
    import liquidgen.train as train_module

    def no_gpu(*args, **kwargs):
        raise ValueError("train.device cuda: this PyTorch build has no CUDA")
    monkeypatch.setattr(train_module, "setup", no_gpu)
    with pytest.raises(ValueError, match="no CUDA"):
        train(load_config(None, TINY), tmp_path / "new" / "run")
    assert not (tmp_path / "new" / "run").exists()


def test_runs_and_precomputed_datasets_do_not_share_a_folder(finished_run, tmp_path):
    req = Request(source="digits", root=None, image_size=8, limit=16, shard_size=16)
    before = snapshot(finished_run)
    with pytest.raises(RunFolderError, match=r"holds a training run \(checkpoints, config.yaml, metrics.jsonl\)"):
        precompute(req, finished_run, progress=False)
    assert snapshot(finished_run) == before
    precompute(req, tmp_path / "pre", progress=False)
    with pytest.raises(RunFolderError, match=r"holds a precomputed dataset \(manifest.json\); give this job"):
        train(load_config(None, TINY), tmp_path / "pre", overwrite=True)
