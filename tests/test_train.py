import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from liquidgen.config import ConfigError, load_config
from liquidgen.data import BatchSampler, load_dataset
from liquidgen.ema import EMA, power_exponent
from liquidgen.objectives import build_objective
from liquidgen.spec import ModelSpec, load_model
from liquidgen.train import accumulate_gradients, drop_labels, train

TINY = ["model.preset=tiny", "data.name=digits", "data.image_size=8", "train.batch_size=32",
        "train.log_every=10", "train.sample_every=0", "train.ckpt_every=0", "sample.steps=4",
        "optim.lr=2e-3", "train.ema_decay=0.99"]


def fixed_loss(model, objective, data, seed=123):
    """The flow-matching loss on a fixed batch, times and noise: comparable across weights."""
    x, y, _ = BatchSampler(data, 128, seed=seed)(0)
    torch.manual_seed(seed)
    with torch.no_grad():
        return objective.loss(model.eval(), x, y).item()


def logged(run: Path, key: str = "loss") -> list:
    """`key` of each record of a run's metrics.jsonl."""
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses_before_and_after(final):
    """fixed_loss of a run's freshly initialised backbone and of its final (live) weights."""
    data = load_dataset("digits", image_size=8)
    objective = build_objective("flow")
    untrained = ModelSpec.from_json(json.loads((final / "model.json").read_text())).build()
    trained, _, _ = load_model(final, ema=False)
    return fixed_loss(untrained, objective, data), fixed_loss(trained, objective, data)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = load_config(None, TINY + ["train.steps=60"])
    final = train(config, out)
    return out, final, config


def test_short_training_lowers_the_loss(short_run):
    _, final, _ = short_run
    before, after = losses_before_and_after(final)
    assert after < 0.75 * before, (before, after)


@pytest.mark.parametrize("name,preset", [("dit", "tiny"), ("unet", "tiny"), ("fixed_point", "dit-tiny"),
                                         ("fixed_point", "liquid-tiny")])
def test_every_backbone_learns_digits_with_flow_matching(name, preset, tmp_path):
    config = load_config(None, TINY + [f"model.name={name}", f"model.preset={preset}", "train.steps=60"])
    final = train(config, tmp_path)
    before, after = losses_before_and_after(final)
    assert after < 0.8 * before, (before, after)


def test_compile_tuning_adds_inductor_settings_to_the_mode(tmp_path, monkeypatch):
    """torch.compile takes a mode or options, not both: a tuned run hands over the mode's own options (CUDA graphs
    for reduce-overhead) with the tuning's, and an untuned one the mode as before."""
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(kwargs))
    for tuning in ("coordinate", "default"):
        train(load_config(None, TINY + ["train.steps=1", "train.device=cpu", "train.compile=true",
                                        "train.compile_mode=reduce-overhead", f"train.compile_tuning={tuning}"]),
              tmp_path / tuning)
    assert seen == [{"options": {"triton.cudagraphs": True, "coordinate_descent_tuning": True}, "dynamic": False},
                    {"mode": "reduce-overhead", "dynamic": False}]


def test_run_folder_layout(short_run):
    out, final, _ = short_run
    assert final == out / "checkpoints" / "step-000060"
    for name in ("config.json", "model.json", "model.safetensors", "ema.safetensors",
                 "optimizer.safetensors", "state.json"):
        assert (final / name).is_file(), name
    assert (out / "config.yaml").is_file() and (out / "loss.png").is_file()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30, 40, 50, 60]
    assert {"loss", "lr", "grad_norm", "images_per_s"} <= set(lines[0])
    assert json.loads((final / "state.json").read_text())["step"] == 60


def test_save_load_gives_bit_identical_outputs(short_run, tmp_path):
    _, final, _ = short_run
    for use_ema in (True, False):
        model, _, spec = load_model(final, ema=use_ema)
        weights = load_file(final / ("ema.safetensors" if use_ema else "model.safetensors"))
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
        x, t, y = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 4, 10])
        again, _, _ = load_model(final, ema=use_ema)
        assert torch.equal(model(x, t, y), again(x, t, y))
    live, _, _ = load_model(final, ema=False)
    ema, _, _ = load_model(final, ema=True)
    assert not torch.equal(live.unpatchify.weight, ema.unpatchify.weight)


def test_training_is_reproducible_for_a_seed(tmp_path):
    config = load_config(None, TINY + ["train.steps=6", "train.log_every=2"])
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.jsonl").read_text().split("images_per_s")[0] == \
           (tmp_path / "b" / "metrics.jsonl").read_text().split("images_per_s")[0]
    wa = load_file(tmp_path / "a" / "checkpoints" / "step-000006" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "checkpoints" / "step-000006" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class FixedTimeObjective:
    """Flow matching at t = 0.5 with noise fixed per image: no randomness, so gradients compare exactly."""
    prediction = "v"

    def loss(self, model, x0, y):
        eps = torch.sin(1000 * x0 + torch.arange(x0[0].numel()).view_as(x0[0]))
        t = torch.full((x0.shape[0],), 0.5)
        return torch.nn.functional.mse_loss(model(0.5 * x0 + 0.5 * eps, t, y), eps - x0)


def test_gradient_accumulation_matches_one_big_batch():
    data = load_dataset("digits", image_size=8)
    model = ModelSpec.for_run(load_config(None, TINY), 1, 8, data.class_names).build()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)

    def grads(batch, accum):
        model.zero_grad()
        loss = accumulate_gradients(model, FixedTimeObjective(), BatchSampler(data, batch, seed=1), 0, accum,
                                    None)
        return loss, [p.grad.clone() for p in model.parameters()]

    loss1, g1 = grads(32, 1)
    loss2, g2 = grads(32, 2)
    torch.testing.assert_close(loss1, loss2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_label_dropout_is_per_sample_to_the_null_class():
    y = torch.randint(0, 10, (20_000,))
    dropped = drop_labels(y, 0.1, null_class=10)
    changed = dropped != y
    assert (dropped[changed] == 10).all()
    assert 0.09 < changed.float().mean() < 0.11
    assert torch.equal(dropped[~changed], y[~changed])
    assert torch.equal(drop_labels(y, 0.0, 10), y)


def test_ema_warmup_follows_then_averages():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9999, warmup=True)
    init = ema.model.weight.clone()
    assert ema.current_decay() == pytest.approx(0.1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, 0.1 * init + 0.9)  # early on the EMA follows the live weights
    ema.updates = 1_000
    assert ema.current_decay() == pytest.approx(1001 / 1010)
    ema.updates = 100_000  # past ~90k updates the configured decay takes over
    assert ema.current_decay() == 0.9999
    assert EMA(model, decay=0.99, warmup=False).current_decay() == 0.99


def test_power_ema_weighs_the_run_as_edm2_defines_it():
    """EDM2's power-function EMA: gamma from sigma_rel as its paper tabulates (0.05 -> 16.97, 0.10 -> 6.94); after
    T updates the average is the closed form sum_t x_t (1 - beta_t) (t / T)^(gamma + 1) with beta_t =
    (1 - 1/t)^(gamma + 1) (the product of the later betas telescopes), and that profile's standard deviation over
    t / T is sigma_rel."""
    assert power_exponent(0.05) == pytest.approx(16.97, abs=0.01)
    assert power_exponent(0.10) == pytest.approx(6.94, abs=0.01)
    with pytest.raises(ValueError, match="EMA std"):
        power_exponent(0.3)
    std, steps = 0.15, 3_000
    gamma = power_exponent(std)
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5, warmup=False, std=std)  # decay and warm-up unused
    values = torch.randn(steps, dtype=torch.float64)
    for v in values:
        with torch.no_grad():
            model.weight.fill_(float(v))
        ema.update(model)
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    weights = (1 - (1 - 1 / t) ** (gamma + 1)) * (t / steps) ** (gamma + 1)
    assert weights.sum() == pytest.approx(1.0)
    assert ema.model.weight.item() == pytest.approx((weights * values).sum().item(), abs=1e-5)
    position = t / steps
    mean = (weights * position).sum()
    assert ((weights * (position - mean) ** 2).sum().sqrt()).item() == pytest.approx(std, rel=0.01)


def test_ema_update_is_a_lerp():
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, decay=0.9, warmup=False)
    start = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, 0.9 * start + 0.1 * model.weight)


@pytest.mark.parametrize("override,message", [
    ("train.stepz=3", "unknown config key train.stepz; allowed keys: steps"),
    ("train.steps=many", "train.steps: expected int"),
    ("train.precision=fp8", "train.precision: 'fp8' is not one of auto, bf16, fp32"),
    ("optim.betas=[0.9]", "optim.betas: expected a list of 2"),
    ("train.batch_size=0", "train.batch_size: must be >= 1"),
    ("colour=red", "unknown config key colour"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_config_coerces_ints_to_floats_and_loads_presets():
    config = load_config("configs/digits-liquid-tiny.yaml", ["optim.lr=1"])
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.model.preset == "tiny" and config.data.name == "digits"


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_the_same_trajectory(tmp_path, optimizer):
    """Stopping at a checkpoint and resuming gives bit-identical weights to an uninterrupted run."""
    base = TINY + ["train.log_every=1", "train.ckpt_every=3", "optim.schedule=constant", "optim.warmup_steps=2",
                   f"optim.name={optimizer}"]
    train(load_config(None, base + ["train.steps=6"]), tmp_path / "straight")
    train(load_config(None, base + ["train.steps=3"]), tmp_path / "split")
    train(load_config(None, base + ["train.steps=6"]), tmp_path / "split", resume=True)
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step-000006" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "step-000006" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert logged(tmp_path / "straight") == logged(tmp_path / "split")


def test_resume_continues_with_the_changed_optimizer_settings(tmp_path):
    """`--resume` announces a changed lr or weight decay; the resumed steps must use them, not the checkpoint's."""
    base = TINY + ["train.log_every=1", "train.ckpt_every=3", "optim.schedule=constant", "optim.warmup_steps=0"]
    train(load_config(None, base + ["train.steps=3", "optim.lr=1e-3"]), tmp_path)
    train(load_config(None, base + ["train.steps=5", "optim.lr=2e-2", "optim.weight_decay=0.5"]), tmp_path,
          resume=True)
    logged = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if "lr" in r}
    assert logged[3] == pytest.approx(1e-3) and logged[5] == pytest.approx(2e-2)
    state = json.loads((tmp_path / "checkpoints" / "step-000005" / "state.json").read_text())
    decays = {g["weight_decay"] for g in state["optimizer"]["param_groups"]}
    assert 0.5 in decays and 0.01 not in decays


def test_cosine_schedule_decays_over_the_minutes_and_resumes_on_the_clock(tmp_path, step_clock):
    """Stopped by train.minutes, a cosine run decays over the minutes, not over train.steps (never reached):
    each step's rate is the cosine at the training seconds before it. A resumed run with a longer budget
    goes on from the saved seconds, not from the top of the cosine."""
    import math
    base = TINY + ["train.log_every=1", "train.steps=1000000", "optim.schedule=cosine", "optim.warmup_steps=0"]

    def records():
        lines = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        return [r for r in lines if "lr" in r]

    def cosine(seconds, budget):
        return 2e-3 * 0.5 * (1 + math.cos(math.pi * min(seconds / budget, 1.0)))

    train(load_config(None, base + ["train.minutes=0.01"]), tmp_path)
    first = records()
    # step_clock: each step counts 0.0625 s, the first (warm-up) none, so 0.6 s end at step 11 with 0.625 s
    assert len(first) == 11 and first[-1]["train_seconds"] == 0.625
    for before, r in zip([{"train_seconds": 0.0}] + first, first):  # the step's rate: the cosine before it
        assert r["lr"] == pytest.approx(cosine(before["train_seconds"], 0.6), rel=1e-9, abs=1e-12)
    assert first[-1]["lr"] < 0.05 * 2e-3
    train(load_config(None, base + ["train.minutes=0.02"]), tmp_path, resume=True)
    resumed = records()[len(first)]
    assert resumed["lr"] == pytest.approx(cosine(first[-1]["train_seconds"], 1.2), rel=1e-6)
    assert resumed["lr"] < 0.6 * 2e-3


def test_resume_falls_back_from_a_truncated_checkpoint(tmp_path, capsys):
    """A checkpoint cut short (a crash or a full disk mid-write of a file) is named and skipped: the run
    resumes from the previous good one and still follows the uninterrupted trajectory."""
    from liquidgen.checkpoint import CorruptCheckpoint

    base = TINY + ["train.log_every=1", "train.ckpt_every=3", "optim.schedule=constant", "train.keep_checkpoints=0"]
    train(load_config(None, base + ["train.steps=9"]), tmp_path / "straight")
    train(load_config(None, base + ["train.steps=6"]), tmp_path / "split")
    bad = tmp_path / "split" / "checkpoints" / "step-000006" / "ema.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(CorruptCheckpoint, match="step-000006 is unreadable: ema.safetensors"):
        load_model(tmp_path / "split")
    train(load_config(None, base + ["train.steps=9"]), tmp_path / "split", resume=True)
    assert "step-000006 is unreadable" in capsys.readouterr().out
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step-000009" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "step-000009" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_resume_sets_an_unreadable_checkpoint_aside_so_pruning_keeps_good_ones(tmp_path, capsys):
    """Once --resume has fallen back past a broken checkpoint, that one is renamed out of the way: else, in a
    resumed run ending before its step (fewer steps here; a time budget, a stop), it would count among the
    newest two kept, pruning would delete the good step-000006, and the run's newest would be the broken one."""
    from liquidgen.checkpoint import resolve

    base = TINY + ["train.ckpt_every=3"]
    train(load_config(None, base + ["train.steps=9", "train.keep_checkpoints=0"]), tmp_path)
    bad = tmp_path / "checkpoints" / "step-000009" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    final = train(load_config(None, base + ["train.steps=8", "train.keep_checkpoints=2"]), tmp_path, resume=True)
    assert final == resolve(tmp_path) == tmp_path / "checkpoints" / "step-000008"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-000006", "step-000008", "step-000009.unreadable"]
    assert "step-000009 to step-000009.unreadable" in capsys.readouterr().out


def test_resuming_a_fine_tune_no_longer_needs_the_run_it_started_from(tmp_path):
    """train.init_from's weights are replaced by the checkpoint's on --resume, so that run may be gone."""
    train(load_config(None, TINY + ["train.steps=2"]), tmp_path / "base")
    tune = TINY + [f"train.init_from={tmp_path / 'base'}", "train.ckpt_every=2"]
    train(load_config(None, tune + ["train.steps=2"]), tmp_path / "tune")
    (tmp_path / "base").rename(tmp_path / "moved")
    final = train(load_config(None, tune + ["train.steps=4"]), tmp_path / "tune", resume=True)
    assert final == tmp_path / "tune" / "checkpoints" / "step-000004"


def test_keep_every_spares_milestones(tmp_path):
    train(load_config(None, TINY + ["train.steps=8", "train.ckpt_every=2", "train.keep_checkpoints=1",
                                    "train.keep_every=4"]), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000004", "step-000008"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_resume_continues(tmp_path, sig):
    """Preemption (SIGTERM) or Ctrl-C (SIGINT) mid-run: the step finishes, a checkpoint is written, the
    process exits cleanly, and --resume goes on from that step."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "liquidgen.cli", "train", "configs/digits-liquid-tiny.yaml", "--out", str(run),
           "--set", "train.log_every=1", "train.sample_every=0", "train.ckpt_every=0", "data.image_size=8",
           "train.batch_size=16"]
    proc = subprocess.Popen(cmd + ["train.steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and f"stopped by {sig}" in out, out
    (ckpt,) = (run / "checkpoints").iterdir()
    step = json.loads((ckpt / "state.json").read_text())["step"]
    assert 3 <= step < 100000
    subprocess.run(cmd + [f"train.steps={step + 2}", "--resume"], check=True, capture_output=True)
    assert json.loads(metrics.read_text().splitlines()[-1])["step"] == step + 2


def test_sigkill_at_an_arbitrary_step_then_resume_gives_the_uninterrupted_trajectory(tmp_path):
    """No chance to save: the process dies mid-step (perhaps mid-checkpoint). Resuming from the newest
    complete checkpoint must replay the lost steps exactly: the same loss at every step, bit for bit."""
    import random
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "liquidgen.cli", "train", "configs/digits-liquid-tiny.yaml", "--set",
           "train.log_every=1", "train.sample_every=0", "train.ckpt_every=7", "train.keep_checkpoints=2",
           "data.image_size=8", "train.batch_size=16", "train.steps=160"]
    subprocess.run(cmd + ["--out", str(tmp_path / "straight")], check=True, capture_output=True)
    kill_after = random.Random().randrange(10, 140)  # a different step every time the test runs
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= kill_after):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(metrics.read_text().splitlines())
    assert proc.returncode == -signal.SIGKILL and written < 160, (kill_after, written)
    subprocess.run(cmd + ["--out", str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    losses = logged(tmp_path / "killed")
    assert len(losses) == 160 and losses == logged(tmp_path / "straight"), (kill_after, written)
    assert not list((tmp_path / "killed" / "checkpoints").glob("*.tmp"))  # a half-written one is cleaned up


class PoisonedFlow:
    """Flow matching whose loss is NaN at the steps in `bad` (a corrupt batch, an overflow)."""

    def __init__(self, bad):
        self.inner, self.bad, self.step = build_objective("flow"), set(bad), 0
        self.prediction = self.inner.prediction

    def set_step(self, step):
        self.step = step

    def loss(self, model, x0, y=None, **cond):
        loss = self.inner.loss(model, x0, y, **cond)
        return loss * float("nan") if self.step in self.bad else loss


def test_a_non_finite_step_changes_nothing_and_is_counted(tmp_path, monkeypatch):
    import liquidgen.train as train_module
    from liquidgen.optim import make_optimizer, make_scheduler
    from liquidgen.train import train_step

    config = load_config(None, TINY)
    data = load_dataset("digits", image_size=8)
    model = ModelSpec.for_run(config, 1, 8, data.class_names).build()
    optimizer, ema = make_optimizer(model, config.optim), EMA(model, 0.9)
    scheduler = make_scheduler(optimizer, config.optim, 100)
    batches = BatchSampler(data, 32)
    train_step(model, PoisonedFlow([]), batches, 0, optimizer, scheduler, ema, config, 0.1)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (model, ema.model)]
    moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    steps = [s["step"].clone() for s in optimizer.state.values()]
    assert optimizer.defaults["fused"]  # so the step is skipped on the device, without a host sync
    _, norm, finite = train_step(model, PoisonedFlow([1]), batches, 1, optimizer, scheduler, ema, config, 0.1)
    assert not finite and not torch.isfinite(norm)
    for m, saved in zip((model, ema.model), before):
        assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items())
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(optimizer.state.values(), moments))
    assert all(torch.equal(s["step"], n) for s, n in zip(optimizer.state.values(), steps))  # Adam's bias correction
    # the host-side decision (optimizers that cannot skip on the device) leaves everything alike
    host = make_optimizer(model, config.optim.__class__(**{**vars(config.optim), "name": "muon"}))
    train_step(model, PoisonedFlow([]), batches, 0, host, make_scheduler(host, config.optim, 100), ema, config, 0.1)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (model, ema.model)]
    train_step(model, PoisonedFlow([1]), batches, 1, host, make_scheduler(host, config.optim, 100), ema, config, 0.1)
    for m, saved in zip((model, ema.model), before):
        assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items())

    # In a run: two bad steps are skipped and counted, the weights stay finite and training goes on ...
    monkeypatch.setattr(train_module, "objective_from", lambda config: PoisonedFlow([3, 4]))
    final = train(load_config(None, TINY + ["train.steps=10", "train.log_every=5"]), tmp_path / "ok")
    assert logged(tmp_path / "ok", "skipped_steps") == [2, 2]
    assert all(torch.isfinite(w).all() for w in load_file(final / "ema.safetensors").values())
    # ... but a streak of train.max_bad_steps stops the run, saying why
    monkeypatch.setattr(train_module, "objective_from", lambda config: PoisonedFlow(range(2, 100)))
    with pytest.raises(FloatingPointError, match="3 consecutive steps with non-finite gradients .* up to step 5"):
        train(load_config(None, TINY + ["train.steps=10", "train.max_bad_steps=3"]), tmp_path / "bad")


def test_a_log_window_of_skipped_steps_has_no_made_up_loss(tmp_path, monkeypatch, capsys):
    """Every step since the last log line skipped: there is no loss to log, and it must not read as 0.0."""
    import liquidgen.train as train_module

    monkeypatch.setattr(train_module, "objective_from", lambda config: PoisonedFlow(range(4, 8)))
    train(load_config(None, TINY + ["train.steps=8", "train.log_every=4"]), tmp_path)
    first, second = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert first["skipped_steps"] == 0 and first["loss"] > 0 and first["grad_norm"] > 0
    assert second["skipped_steps"] == 4 and "loss" not in second and "grad_norm" not in second
    assert "step 8/8  loss n/a (all 4 steps skipped)" in capsys.readouterr().out


def test_a_crash_while_saving_leaves_the_previous_checkpoint_to_resume_from(tmp_path, monkeypatch):
    """A kill mid-write (here: an interrupt inside the second checkpoint's weight file) leaves only a
    .tmp folder, which nothing reads; the previous checkpoint loads and --resume goes on from it."""
    import liquidgen.checkpoint as ckpt_io

    real_save = ckpt_io.save_file

    def killed_midway(tensors, path, *args, **kwargs):
        if "step-000004" in str(path) and "ema" in str(path):
            Path(path).write_bytes(b"\0" * 10)
            raise KeyboardInterrupt
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_io, "save_file", killed_midway)
    run = tmp_path / "run"
    config = load_config(None, TINY + ["train.steps=6", "train.ckpt_every=2", "train.log_every=1"])
    with pytest.raises(KeyboardInterrupt):
        train(config, run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004.tmp"]
    assert ckpt_io.resolve(run).name == "step-000002"
    load_model(run)
    monkeypatch.setattr(ckpt_io, "save_file", real_save)
    train(config, run, resume=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004", "step-000006"]


def test_a_full_disk_names_the_problem_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import errno

    import liquidgen.checkpoint as ckpt_io

    real_save = ckpt_io.save_file
    calls = []

    def filling_disk(tensors, path, *args, **kwargs):
        calls.append(path)
        if "step-000004" in str(path):  # the disk fills up while the second checkpoint is written
            Path(path).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_io, "save_file", filling_disk)
    run = tmp_path / "run"
    with pytest.raises(OSError, match=r"could not write checkpoint step-000004 .*No space left on device.*"
                                      r"step-000002, is intact"):
        train(load_config(None, TINY + ["train.steps=4", "train.ckpt_every=2"]), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]  # no half-written folder
    load_model(run)  # the last good checkpoint still loads
