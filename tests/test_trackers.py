"""train.log_with: the numbers of metrics.jsonl also go to an experiment tracker through accelerate."""
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from liquidgen.cli import main
from liquidgen.config import load_config
from liquidgen.train import train

QUICK = ["train.steps=6", "train.batch_size=16", "train.log_every=2", "train.sample_every=0", "train.ckpt_every=0",
         "data.image_size=8"]


def test_tensorboard_receives_the_scalars_of_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    train(load_config("configs/digits-liquid-tiny.yaml", QUICK + ["train.log_with=tensorboard"]), out)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert {"loss", "grad_norm", "lr", "images_per_s"} <= set(events.Tags()["scalars"])
    for key in ("loss", "lr"):
        points = [(e.step, e.value) for e in events.Scalars(key)]
        assert points == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in logged]  # float32 in the events


def test_a_missing_tracker_is_one_line_before_the_run_starts(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(SystemExit) as exc:
        main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(tmp_path / "run"), "--set", *QUICK,
              "train.log_with=wandb"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("error: train.log_with: wandb is not installed; pip install wandb, or set "
                                       "train.log_with to none\n")
    assert not (tmp_path / "run").exists()


def test_log_with_names_the_trackers():
    with pytest.raises(ValueError, match="train.log_with: 'mlflow' is not one of none, tensorboard, wandb"):
        load_config("configs/digits-liquid-tiny.yaml", ["train.log_with=mlflow"])
