"""Several processes on CPU (gloo): the same commands under `accelerate launch` and `torchrun`.

The strongest check available on one machine: two processes with DDP take exactly the steps one process
takes with twice the gradient accumulation, because both see the same global batch, the same noise per
micro-batch and the same averaged gradient.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from liquidgen.distributed import Dist, Replicated, fingerprint, part_seed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "digits-liquid-tiny.yaml")
# A UNet, whose logvar head gets no gradient under flow matching: DDP must be told (see Dist.wrap).
SETTINGS = ["model.name=unet", "model.preset=tiny", "data.image_size=8", "train.device=cpu", "train.batch_size=32",
            "train.log_every=1", "train.sample_every=3", "train.ckpt_every=3", "train.keep_checkpoints=0",
            "sample.steps=2", "sample.per_class=4", "optim.lr=2e-3", "optim.schedule=constant"]
# One thread per process everywhere, so that float reductions are the same in every run.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def liquidgen(*args: str, processes: int = 1, launcher: str = "torchrun") -> str:
    if processes == 1:
        return run([sys.executable, "-m", "liquidgen.cli", *args])
    if launcher == "accelerate":
        # --multi_gpu is accelerate's DDP launcher; with train.device=cpu the processes talk over gloo.
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                  "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", "0"]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return run([*launch, "-m", "liquidgen.cli", *args])


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path, step: int, name: str) -> dict:
    return load_file(run_dir / "checkpoints" / f"step-{step:06d}" / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two processes, stopped at step 3 and resumed to 6; one process with 2 micro-batches per step."""
    tmp = tmp_path_factory.mktemp("dist")
    two, one = tmp / "two", tmp / "one"
    first = liquidgen("train", CONFIG, "--out", str(two), "--set", *SETTINGS, "train.steps=3",
                      processes=2, launcher="accelerate")
    resumed = liquidgen("train", CONFIG, "--out", str(two), "--resume", "--set", *SETTINGS, "train.steps=6",
                        processes=2)
    liquidgen("train", CONFIG, "--out", str(one), "--set", *SETTINGS, "train.grad_accum=2", "train.steps=6")
    return two, one, first + resumed


def test_two_processes_follow_one_process_with_accumulation_through_a_resume(runs):
    """Bit for bit: process r's gradient g_r, halved by DDP and summed, is g_0 / 2 + g_1 / 2, as is one
    process accumulating the two halves of the batch (scaling by 2 is exact)."""
    two, one, _ = runs
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(two, 6, name), weights(one, 6, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # the logged loss is a mean of per-process means: equal up to the order of the float additions
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-6)
    assert [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()] == list(range(1, 7))


@pytest.mark.parametrize("processes,accum", [(2, 2), (4, 1)])
def test_processes_times_micro_batches_follow_one_process_at_equal_global_batch(tmp_path, processes, accum):
    """2 processes x 2 micro-batches (DDP's no_sync on the first), and 4 processes (the 4-GPU scaling run's
    loss-curve check), each = 1 process accumulating 4 parts, up to the order in which the gradients are summed."""
    quick = [*SETTINGS, "train.steps=2", "train.sample_every=0", "train.ckpt_every=0"]
    many, one = tmp_path / "many", tmp_path / "one"
    liquidgen("train", CONFIG, "--out", str(many), "--set", *quick, f"train.grad_accum={accum}", processes=processes)
    liquidgen("train", CONFIG, "--out", str(one), "--set", *quick, "train.grad_accum=4")
    a, b = weights(many, 2, "model.safetensors"), weights(one, 2, "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses(many), losses(one), rtol=1e-6)


def test_only_process_zero_prints_and_writes(runs):
    two, _, out = runs
    assert out.count("step 6/6") == 1 and out.count("done:") == 2 and "on 2 processes (cpu)" in out
    assert "get no gradient from this objective" in out and "logvar_head.weight" in out
    assert "resumed from" in out and out.count("resumed from") == 1
    assert sorted(p.name for p in (two / "samples").iterdir()) == ["step-000003.png", "step-000006.png"]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    assert json.loads((two / "checkpoints" / "step-000006" / "state.json").read_text())["processes"] == 2


def test_sampling_and_evaluation_are_shared_and_gathered(runs, tmp_path):
    from liquidgen.evaluation.classifier import Recipe, fit_classifier, save_classifier
    from liquidgen.data import load_dataset

    two, _, _ = runs
    files = {}
    for processes in (1, 2):
        files[processes] = tmp_path / f"samples-{processes}.npz"
        liquidgen("sample", str(two), "--num-samples", "7", "--labels", "3", "--out", str(files[processes]),
                  "--device", "cpu", processes=processes)  # 7 rows: shares of 3 and 4
    one, both = np.load(files[1]), np.load(files[2])
    assert both["images"].shape == (7, 8, 8, 1) and both["labels"].tolist() == [3] * 7
    # the same rows, in batches of other sizes: equal up to a rounding step of the uint8 pixels
    assert np.abs(one["images"].astype(int) - both["images"].astype(int)).max() <= 1

    digits = load_dataset("digits", image_size=8)
    net, info = fit_classifier(digits, None, torch.device("cpu"), Recipe(epochs=1))
    save_classifier(net, info, tmp_path / "classifier.safetensors")
    scores = {}
    for processes in (1, 2):
        out = tmp_path / f"eval-{processes}.json"
        liquidgen("eval", str(two), "--data", "digits", "--size", "8", "--num-samples", "41", "--classifier",
                  str(tmp_path / "classifier.safetensors"), "--cache", str(tmp_path / "cache"), "--device", "cpu",
                  "--out", str(out), processes=processes)
        scores[processes] = json.loads(out.read_text().splitlines()[0])
    assert scores[2]["samples"] == 41
    assert scores[2]["classifier_fd"] == pytest.approx(scores[1]["classifier_fd"], rel=1e-3)


def test_part_seeds_differ_per_step_and_part_and_repeat():
    seeds = {part_seed(0, step, part) for step in range(50) for part in range(8)}
    assert len(seeds) == 400 and part_seed(0, 3, 1) == part_seed(0, 3, 1) != part_seed(1, 3, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_fingerprint_sees_one_bit():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    copy = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    copy.load_state_dict(model.state_dict())
    assert torch.equal(fingerprint(model), fingerprint(copy))
    with torch.no_grad():
        w = copy[1].weight.view(-1)
        w[2] = torch.nextafter(w[2], torch.tensor(1.0))
    changed = fingerprint(model) != fingerprint(copy)
    assert changed.tolist() == [False, False, True, False]


def test_one_process_is_the_identity():
    dist = Dist()
    assert (dist.rank, dist.world, dist.main) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert dist.wrap(model, probe=lambda m: pytest.fail("no probe without DDP")) is model
    assert dist.map_rows(lambda rows: torch.arange(10)[rows] * 2, 10).tolist() == list(range(0, 20, 2))
    assert dist.any(True, False, device=torch.device("cpu")) == [True, False]
    assert dist.any_and_main(False, True, value=2.5, device=torch.device("cpu")) == ([False, True], 2.5)
    assert dist.identical(model, torch.device("cpu"))


def test_replicated_routes_graph_building_calls_through_ddp():
    calls = []
    module = torch.nn.Linear(2, 2)
    replica = Replicated(module, lambda x: calls.append("ddp") or module(x))
    replica(torch.ones(1, 2))
    with torch.no_grad():
        replica(torch.ones(1, 2))
    assert calls == ["ddp"] and replica.out_features == 2


def test_a_cosine_over_the_minutes_keeps_the_processes_in_step(tmp_path):
    """A time-budgeted cosine reads process 0's training seconds on every process. With each process's own
    clock the rates, hence the weights, would drift apart and the final checkpoint would refuse to save."""
    out = tmp_path / "two"
    liquidgen("train", CONFIG, "--out", str(out), "--set", *SETTINGS, "optim.schedule=cosine", "train.steps=100000",
              "train.minutes=0.02", "train.sample_every=0", "train.ckpt_every=0", processes=2)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_seconds"] >= 1.2 and records[-1]["lr"] < 0.1 * 2e-3
