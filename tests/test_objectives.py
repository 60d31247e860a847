"""Objectives: exact targets, schedules and weights, the consistency tangent, training on digits."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from liquidgen import paths
from liquidgen.config import load_config
from liquidgen.models import build_model
from liquidgen.objectives import OBJECTIVES, build_objective
from liquidgen.objectives.consistency import consistency_tangent
from liquidgen.objectives.diffusion import alphas_cumprod
from liquidgen.spec import init_weights
from liquidgen.train import train

from test_backbones import randomize
from test_samplers import MU, S, gaussian_velocity


class Oracle(torch.nn.Module):
    """Knows the clean batch: returns the exact target of `kind` for whatever (x_t, t) it is shown."""

    def __init__(self, x0, kind):
        super().__init__()
        self.x0, self.kind = x0, kind
        self.num_classes = 0

    def forward(self, x_t, t, y=None):
        te = paths.expand(t, x_t)
        eps = (x_t - (1 - te) * self.x0) / te
        return paths.from_x0_eps(self.x0, eps, self.kind, t)


@pytest.mark.parametrize("name,options", [
    ("flow", {}), ("flow", {"prediction": "x0", "time_sampling": "uniform"}), ("tld", {}),
    ("diffusion", {}), ("diffusion", {"prediction_type": "v", "schedule": "cosine"}),
    ("diffusion", {"prediction_type": "v", "zero_terminal_snr": True, "weighting": "min_snr"}),
    ("trigflow", {"adaptive_weighting": False})])
def test_an_oracle_of_the_declared_prediction_has_zero_loss(name, options):
    """The loss's input and target agree with the prediction kind the objective declares - the kind
    samplers convert from - so a model predicting exactly that kind has (numerically) zero loss."""
    objective = build_objective(name, **options)
    x0 = torch.randn(64, 1, 4, 4, dtype=torch.float64)
    loss = objective.loss(Oracle(x0, objective.prediction), x0, None)
    assert loss.item() < 1e-12
    assert objective.loss(Oracle(x0 + 0.1, objective.prediction), x0, None).item() > 1e-6


def test_tld_is_x0_prediction_with_beta_noise_levels():
    objective = build_objective("tld")
    assert objective.prediction == "x0"
    t = objective.sample_time(200000, torch.device("cpu"))
    assert abs(t.mean().item() - 1 / 3.5) < 0.005  # mean of Beta(1, 2.5)


def test_schedules_and_zero_terminal_snr():
    for schedule in ("linear", "cosine"):
        ab = alphas_cumprod(schedule, 1000)
        assert (ab[1:] < ab[:-1]).all() and 0 < ab[-1] < 0.01 and ab[0] > 0.99
        z = alphas_cumprod(schedule, 1000, zero_terminal_snr=True)
        assert z[-1] == 0 and torch.isclose(z[0], ab[0]) and (z[1:] < z[:-1]).all()
    objective = build_objective("diffusion", prediction_type="v", zero_terminal_snr=True)
    assert objective.times[-1] == 1 and (objective.times[1:] > objective.times[:-1]).all()
    with pytest.raises(ValueError, match="needs prediction_type: v"):
        build_objective("diffusion", zero_terminal_snr=True)


def test_loss_weights():
    k = torch.arange(0, 1000, 50)
    eps = build_objective("diffusion", weighting="min_snr", gamma=5.0)
    snr = eps.snr[k]
    torch.testing.assert_close(eps.weights(k), torch.minimum(snr, torch.tensor(5.0)) / snr)
    v = build_objective("diffusion", prediction_type="v", weighting="min_snr", gamma=5.0)
    torch.testing.assert_close(v.weights(k), torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))  # Hang et al.
    p2 = build_objective("diffusion", weighting="p2", gamma=1.0, p2_k=1.0)
    torch.testing.assert_close(p2.weights(k), 1 / (1 + snr))


def test_bad_objective_options_are_named():
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("edm")
    with pytest.raises(ValueError, match="prediction must be one of"):
        build_objective("flow", prediction="score")
    with pytest.raises(ValueError, match="needs objective.teacher"):
        build_objective("consistency", mode="cd")
    with pytest.raises(ValueError, match="tangent_norm"):
        build_objective("consistency", tangent_norm="l2")


def test_consistency_tangent_is_the_derivative_of_the_consistency_function():
    """At r = 1, sCM's g = cos(th) df/dth along the trajectory, f = cos(th) x - sin(th) sigma_d F."""
    model = randomize(build_model("unet", "tiny", 1, 8, 0)).double().eval()
    sd = paths.SIGMA_D
    x0, z = torch.randn(3, 1, 8, 8, dtype=torch.float64), sd * torch.randn(3, 1, 8, 8, dtype=torch.float64)
    theta = torch.tensor([0.3, 0.8, 1.2], dtype=torch.float64)
    e = lambda th: paths.expand(th, x0)  # noqa: E731
    path = lambda th: e(torch.cos(th)) * x0 + e(torch.sin(th)) * z  # noqa: E731

    def student(x, th):
        return model(x / e(torch.cos(th) + sd * torch.sin(th)), paths.theta_to_t(th))

    def f(th):
        x = path(th)
        return e(torch.cos(th)) * x - e(torch.sin(th)) * sd * student(x, th)

    dx = e(torch.cos(theta)) * z - e(torch.sin(theta)) * x0
    _, g = consistency_tangent(student, path(theta), theta, dx, r=1.0)
    h = 1e-7  # small: 1000 t in the time embedding oscillates fast, so O(h^2) truncation is large
    fd = e(torch.cos(theta)) * (f(theta + h) - f(theta - h)) / (2 * h)
    assert g.abs().max() > 1e-3
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)
    # and f(x, th) is the x0 that the "trigflow" converter recovers
    x = path(theta)
    x_t = x / e(torch.cos(theta) + sd * torch.sin(theta))
    x0_hat = paths.convert(student(x, theta), "trigflow", "x0", x_t, paths.theta_to_t(theta))
    torch.testing.assert_close(x0_hat, f(theta))


class GaussianFlow(torch.nn.Module):
    """The exact flow velocity of test_samplers' Gaussian data: a teacher that knows the answer."""

    def forward(self, x_t, t, y=None):
        return gaussian_velocity(x_t, t)


class GaussianConsistency(torch.nn.Module):
    """A TrigFlow F whose consistency function is that of data N(MU, s^2): the probability-flow ODE keeps the
    standardised value, so f(x, th) = MU + s (x - cos MU) / std(th), std^2 = cos^2 s^2 + sin^2 sigma_d^2 (sCM's
    TrigFlow), and F = (cos x - f) / (sigma_d sin)."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def forward(self, x_t, t, y=None):
        sd, th = paths.SIGMA_D, paths.t_to_theta(paths.expand(t, x_t))
        c, n = torch.cos(th), torch.sin(th)
        x = x_t * (c + sd * n)  # TrigFlow's x
        f = MU + self.s * (x - c * MU) / torch.sqrt(c**2 * self.s**2 + n**2 * sd**2)
        return (c * x - f) / (sd * n)


@pytest.mark.parametrize("student_s,vanishes", [(S, True), (0.75 * S, False)])
def test_distillation_loss_vanishes_at_the_exact_consistency_function(student_s, vanishes):
    """sCD's target, end to end (the teacher's velocity converted to TrigFlow, the student's JVP, sCM's g): for
    Gaussian data, whose teacher and consistency function are known in closed form, the loss (without
    normalisation or weighting) is |g|^2, zero at the exact student and not at a wrong one."""
    objective = build_objective("consistency", mode="cd", teacher="exact", tangent_warmup=0, tangent_norm="none",
                                adaptive_weighting=False, p_mean=0.0, p_std=0.5)
    objective.bind_teacher(GaussianFlow(), "v")
    torch.manual_seed(0)
    loss = objective.loss(GaussianConsistency(student_s), MU + S * torch.randn(256, 1, 4, 4))
    assert (loss < 1e-9) if vanishes else (loss > 1e-4), loss


TINY = ["model.name=unet", "model.preset=tiny", "data.name=digits", "data.image_size=8",
        "train.batch_size=32", "train.log_every=10", "train.sample_every=0", "train.ckpt_every=0",
        "sample.steps=2", "optim.lr=2e-3", "train.ema_decay=0.9"]


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name,options", [
    ("tld", {}), ("diffusion", {"prediction_type": "v", "zero_terminal_snr": True, "weighting": "min_snr"}),
    ("diffusion", {"prediction_type": "eps", "schedule": "cosine"}), ("trigflow", {})])
def test_every_objective_trains_on_digits(name, options, tmp_path):
    config = load_config(None, TINY + ["train.steps=80", f"objective.name={name}"])
    config.objective.options = options
    train(config, tmp_path)
    history = losses(tmp_path)
    assert history[-1] < history[0], history


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(load_config(None, TINY + ["train.steps=60", "objective.name=flow"]), out)
    return out


@pytest.mark.parametrize("mode", ["ct", "cd"])
def test_consistency_training_and_distillation_run_and_start_from_a_teacher(mode, teacher, tmp_path):
    config = load_config(None, TINY + ["train.steps=20", "objective.name=consistency", "optim.lr=1e-4",
                                       f"train.init_from={teacher}", "sample.sampler=consistency"])
    config.objective.options = {"mode": mode, "teacher": str(teacher), "tangent_warmup": 10} if mode == "cd" \
        else {"mode": mode, "tangent_warmup": 10}
    final = train(config, tmp_path)
    history = losses(tmp_path)
    assert all(torch.isfinite(torch.tensor(history)))
    assert (final / "ema.safetensors").is_file()


def test_distillation_starts_the_student_from_its_teacher_and_says_when_told_otherwise(teacher, tmp_path, capsys):
    """sCD with train.init_from empty starts from the teacher's weights (a preset names its teacher once); an
    init_from naming another run is said when the run starts, the teacher under another spelling of its path is not."""
    import shutil

    from liquidgen.train import start_run

    other = tmp_path / "other-teacher"
    shutil.copytree(teacher, other)
    models = {}
    for init, said in (("", False), (teacher / ".." / teacher.name, False), (other, True)):
        init_set = [f"train.init_from={init}"] if init else []  # an empty override would read as None
        config = load_config(None, TINY + ["objective.name=consistency", *init_set])
        config.objective.options = {"mode": "cd", "teacher": str(teacher)}
        models[str(init)] = start_run(config, tmp_path / f"run-{len(models)}").model.state_dict()
        assert ("is not objective.options.teacher" in capsys.readouterr().out) == said
    fresh = start_run(load_config(None, TINY), tmp_path / "fresh").model.state_dict()
    from_teacher = models[str(teacher / ".." / teacher.name)]
    assert all(torch.equal(models[""][k], from_teacher[k]) for k in from_teacher)
    assert not all(torch.equal(fresh[k], from_teacher[k]) for k in from_teacher if k in fresh)


def test_distillation_teacher_velocity_is_the_converted_teacher(teacher):
    from liquidgen.generate import Pipeline

    objective = build_objective("consistency", mode="cd", teacher=str(teacher))
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="bind_teacher"):
        objective.teacher_velocity(x, t, y)
    pipe = Pipeline.load(teacher, device="cpu")
    objective.bind_teacher(pipe.model, pipe.prediction)
    model = pipe.model
    with torch.no_grad():
        expected = paths.convert(model(x, t, y), "v", "trigflow", x, t)
        torch.testing.assert_close(objective.teacher_velocity(x, t, y), expected)


def test_init_from_needs_the_same_architecture(teacher, tmp_path):
    config = load_config(None, TINY + ["train.steps=2", f"train.init_from={teacher}", "model.preset=28"])
    with pytest.raises(ValueError, match=r"ema\.safetensors \(architectures differ\)"):
        train(config, tmp_path)


def test_init_from_needs_the_same_time_scale(teacher):
    """time_scale is no weight's shape: a student embedding time at another scale than its teacher would load every
    weight and read every time wrongly, so init_from refuses it and names the setting."""
    init_weights(build_model("unet", "tiny", 1, 8, 10), teacher)  # both at the default scale
    with pytest.raises(ValueError, match=r"time_scale 1000, this model at 1; set model.options.time_scale=1000"):
        init_weights(build_model("unet", "tiny", 1, 8, 10, time_scale=1.0), teacher)


def test_the_few_step_presets_chain_from_teacher_to_students(tmp_path):
    """The shipped sCM presets at toy size: the sCD student starts from the TrigFlow teacher it names (init_from
    refuses one embedding time at another scale, so the pair must agree), and sCT trains from scratch with no
    teacher."""
    small = ["model.preset=tiny", "data.name=digits", "data.image_size=8", "train.device=cpu", "train.batch_size=16",
             "train.log_every=1", "train.sample_every=0", "train.ckpt_every=0", "train.steps=3"]
    presets = {name: load_config(f"configs/mnist-unet-{name}.yaml", small) for name in ("trigflow", "scm", "sct")}
    assert presets["scm"].model.options["time_scale"] == presets["trigflow"].model.options["time_scale"] == 1.0
    teacher = train(presets["trigflow"], tmp_path / "teacher").parent.parent
    student = load_config("configs/mnist-unet-scm.yaml", small + [f"objective.options.teacher={teacher}"])
    train(student, tmp_path / "scd")
    assert presets["sct"].objective.options["mode"] == "ct" and not presets["sct"].train.init_from
    assert "teacher" not in presets["sct"].objective.options
    train(presets["sct"], tmp_path / "sct")
    for run in ("scd", "sct"):
        assert all(torch.isfinite(torch.tensor(losses(tmp_path / run))))


def test_tf32_applies_inside_the_consistency_loss_only():
    """`tf32: true` changes the fp32 matmul precision for the loss and restores the process's afterwards (on a CPU
    it changes nothing numerically here: the loss is the same)."""
    model = randomize(build_model("unet", "tiny", 1, 8, 10)).eval()
    x0, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    seen = []
    original = model.forward

    def forward(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return original(*args, **kwargs)
    model.forward = forward
    losses = []
    for tf32 in (False, True):
        torch.manual_seed(0)
        losses.append(build_objective("consistency", tf32=tf32, tangent_warmup=0).loss(model, x0, y))
        assert torch.get_float32_matmul_precision() == "highest"
    assert set(seen[:len(seen) // 2]) == {"highest"} and set(seen[len(seen) // 2:]) == {"high"}
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("mode", ["ct", "cd"])
def test_fp32_tangent_only_keeps_the_jvp_in_fp32_and_the_rest_in_the_training_autocast(mode, teacher):
    """Under the training's bf16 autocast, `fp32_tangent_only` runs the JVP in fp32 and the teacher's and the
    student's gradient passes in bf16; without it every pass is fp32. The loss moves by bf16 rounding only."""
    from liquidgen.generate import Pipeline

    pipe = Pipeline.load(teacher, device="cpu")
    model = pipe.model
    x0, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    seen = []
    original = model.forward

    def forward(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(*args, **kwargs)
    model.forward = forward
    losses = {}
    for only in (False, True):
        objective = build_objective("consistency", mode=mode, teacher=str(teacher), tangent_warmup=0,
                                    fp32_tangent_only=only)
        objective.bind_teacher(pipe.model, pipe.prediction)  # the same module: its passes are counted too
        seen.clear()
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses[only] = objective.loss(model, x0, y)
        teacher_pass = [seen[0]] if mode == "cd" else []
        tangent, grad_pass = seen[len(teacher_pass)], seen[-1]
        assert len(seen) == len(teacher_pass) + 2
        assert not tangent, "the JVP runs in fp32 either way"
        assert teacher_pass + [grad_pass] == [only] * (len(teacher_pass) + 1)
        assert losses[only].dtype == torch.float32
    torch.testing.assert_close(losses[True], losses[False], rtol=0.05, atol=0.05)


def test_a_student_with_a_logvar_head_starts_from_a_teacher_without_one(tmp_path):
    """A flow LiquidGen has no logvar head; its sCD student needs one for adaptive weighting: every other weight
    is the teacher's, the head starts fresh, and a real architecture difference still fails."""
    liquid = [o.replace("model.name=unet", "model.name=liquid") for o in TINY]
    train(load_config(None, liquid + ["train.steps=2", "objective.name=flow"]), tmp_path / "teacher")
    teacher = tmp_path / "teacher" / "checkpoints"
    student = build_model("liquid", "tiny", 1, 8, 10, logvar=True)
    fresh = student.logvar_head.weight.detach().clone()
    init_weights(student, tmp_path / "teacher")
    ema = load_file(next(teacher.iterdir()) / "ema.safetensors")
    assert ema and not any(k.startswith("logvar_head.") for k in ema)
    own = student.state_dict()
    for k, v in ema.items():
        torch.testing.assert_close(own[k], v)
    torch.testing.assert_close(student.logvar_head.weight, fresh)
    with pytest.raises(ValueError, match="architectures differ"):
        init_weights(build_model("liquid", "S", 1, 8, 10, logvar=True), tmp_path / "teacher")


def test_registry_lists_every_objective():
    assert set(OBJECTIVES) == {"flow", "tld", "diffusion", "trigflow", "consistency"}


def test_distill_takes_model_data_and_hardware_from_the_teacher_and_the_rest_from_the_recipe(teacher):
    """`liquidgen distill`: a student of a run that no preset mirrors (here the tiny UNet on 8x8 digits, distilled by
    the MNIST UNet-28 recipe) gets the teacher's architecture with sCM's logvar head, its data and device, the
    teacher's sampling scale folded into the target, and the recipe's objective, optimiser and length."""
    from liquidgen.config import Config, from_dict
    from liquidgen.distill import advice, student_config

    taught = from_dict(Config, json.loads((teacher / "checkpoints" / "step-000060" / "config.json").read_text()))
    recipe = load_config("configs/mnist-unet-scm.yaml")
    student = student_config(teacher, "configs/mnist-unet-scm.yaml")
    assert (student.model.name, student.model.preset) == ("unet", "tiny") != (recipe.model.name, recipe.model.preset)
    assert student.model.options == {**taught.model.options, "logvar": True}
    assert student.data == taught.data and student.data.name == "digits"
    assert student.objective.options == {**recipe.objective.options, "teacher": str(teacher),
                                         "teacher_cfg": taught.sample.cfg}
    assert taught.sample.cfg != recipe.objective.options["teacher_cfg"]  # the teacher's scale, not the recipe's
    assert student.optim == recipe.optim
    assert (student.train.steps, student.train.batch_size, student.train.ema_decay, student.train.init_from) == (
        recipe.train.steps, recipe.train.batch_size, recipe.train.ema_decay, "")
    assert (student.train.device, student.train.compile) == (taught.train.device, taught.train.compile)
    assert (student.sample.sampler, student.sample.steps, student.sample.cfg) == ("consistency", 2, 1.0)
    # the recipe was measured at time_scale 1; this teacher embeds time at the default 1000, and is told so
    assert any("time_scale 1000" in line for line in advice(teacher))


def test_distill_takes_the_recipe_measured_for_the_teachers_backbone(teacher, tmp_path):
    """With no --recipe, a LiquidGen teacher gets the LiquidGen sCD preset (its measured length) and any other
    backbone the UNet's."""
    from liquidgen.distill import RECIPES, student_config

    liquid = train(load_config("configs/digits-liquid-tiny.yaml", ["train.steps=1", "train.sample_every=0",
                                                                   "train.ckpt_every=0", "train.device=cpu"]),
                   tmp_path / "liquid")
    steps = {name: load_config(path).train.steps for name, path in RECIPES.items()}
    assert steps["liquid"] != steps["unet"]
    assert student_config(liquid).train.steps == steps["liquid"]
    assert student_config(teacher).train.steps == steps["unet"]


def test_distill_refuses_a_consistency_teacher_and_a_recipe_that_is_not_scd(teacher, tmp_path):
    from liquidgen.distill import student_config

    with pytest.raises(ValueError, match="not an sCD config"):
        student_config(teacher, "configs/mnist-unet-sct.yaml")
    student = train(load_config(None, TINY + ["train.steps=2", "objective.name=consistency",
                                              "sample.sampler=consistency"]), tmp_path / "ct")
    with pytest.raises(ValueError, match="a consistency model already"):
        student_config(student)


def test_distill_command_trains_a_student_that_samples_in_one_step(teacher, tmp_path, capsys, monkeypatch):
    from liquidgen.cli import main

    monkeypatch.chdir(tmp_path)  # the default recipe is found from any folder, not only the repository's root
    out = tmp_path / "student"
    main(["distill", str(teacher), "--out", str(out), "--set", "train.steps=3", "train.batch_size=8",
          "train.sample_every=0", "train.device=cpu"])
    said = capsys.readouterr().out
    assert "time_scale 1000" in said and f"liquidgen sample {out} --steps 1" in said
    config = json.loads((out / "checkpoints" / "step-000003" / "config.json").read_text())
    assert config["objective"]["options"]["teacher"] == str(teacher) and config["model"]["preset"] == "tiny"
    main(["sample", str(out), "--steps", "1", "--n", "10", "--out", str(tmp_path / "one.npz"), "--device", "cpu"])
    images = np.load(tmp_path / "one.npz")["images"]
    assert images.shape[0] == 10 and images.std() > 0


def test_distill_reaches_into_a_wrapped_backbone(tmp_path):
    """A fixed-point model keeps its time embedding and its logvar head in the stack it wraps: the student gets the
    head there and starts from every teacher weight, and a student embedding time at another scale is refused."""
    from liquidgen.distill import student_config
    from liquidgen.spec import init_weights
    from liquidgen.train import start_run

    wrapped = ["model.name=fixed_point", "model.preset=dit-tiny", "model.options.options.patch_size=2"]
    teacher = train(load_config(None, TINY + wrapped + ["train.steps=2"]), tmp_path / "teacher")
    config = student_config(teacher)
    config.train.device = "cpu"
    student = start_run(config, tmp_path / "student").model.state_dict()
    taught = load_file(teacher / "ema.safetensors")
    assert {k for k in student if k not in taught} == {"inner.logvar_head.weight", "inner.logvar_head.bias"}
    assert all(torch.equal(student[k], v) for k, v in taught.items())
    other = build_model("fixed_point", "dit-tiny", 1, 8, 10, options={"patch_size": 2}, time_scale=1.0)
    assert float(other.inner.time_embed.scale) == 1.0  # set on the wrapper as on any backbone, taken by its stack
    with pytest.raises(ValueError, match="time_scale 1000, this model at 1; set model.options.time_scale=1000"):
        init_weights(other, teacher)
