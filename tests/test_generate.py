"""The one generation path: `Pipeline` from a checkpoint to samples."""
import json

import pytest
import torch

import liquidgen.aot
from liquidgen import checkpoint as ckpt_io
from liquidgen.config import ConfigError, SampleConfig, load_config
from liquidgen.generate import CompiledForward, Pipeline
from liquidgen.models import build_model
from liquidgen.samplers import sample
from liquidgen.spec import ModelSpec

SMALL = {"width": 16, "depth": 2, "groups": 4}
CLASSES = ["zero", "one", "two"]


def write_checkpoint(root, class_names, overrides=()):
    """A checkpoint of an untrained small LiquidGen whose model.json is written as liquidgen wrote it before
    ModelSpec existed (a plain dict, num_classes included), so old checkpoints keep loading."""
    config = load_config(None, ["model.preset=tiny", "sample.steps=3", "sample.cfg=1.5", *overrides])
    config.model.options = dict(SMALL)
    old_style = {"name": "liquid", "preset": "tiny", "options": dict(SMALL), "in_channels": 1, "input_size": 8,
                 "num_classes": len(class_names), "class_names": class_names, "space": None,
                 "text_encoder": None, "text_tokens": 0}
    model = ModelSpec.from_json(old_style).build()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)  # zero-initialised heads would make every sample equal
    return ckpt_io.save_checkpoint(root, 1, config, old_style, model, model)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.load(write_checkpoint(tmp_path_factory.mktemp("ckpt"), CLASSES), device="cpu")


def test_an_old_checkpoint_loads_with_its_run_settings(pipe, tmp_path):
    assert pipe.spec.num_classes == 3 and pipe.spec.shape == (1, 8, 8) and pipe.prediction == "v"
    assert pipe.settings.steps == 3 and pipe.settings.cfg == 1.5 and pipe.settings.cfg_interval is None
    old = json.loads((write_checkpoint(tmp_path, CLASSES) / "model.json").read_text())
    assert pipe.spec.to_json() == old  # what is written now reads the same as before
    with pytest.raises(ValueError, match="num_classes"):
        ModelSpec.from_json({**old, "num_classes": 5})


def test_the_pipeline_draws_what_the_sampler_draws(pipe):
    noise, y = pipe.noise(4, seed=3), torch.tensor([0, 1, 2, 0])
    expected = sample(pipe.model, "v", noise, y, steps=3, cfg=1.5, sampler="euler")
    assert torch.equal(pipe.sample(noise, y), expected)
    other = pipe.settings.with_(steps=2, sampler="heun")
    assert torch.equal(pipe.sample(noise, y, other), sample(pipe.model, "v", noise, y, steps=2, cfg=1.5,
                                                            sampler="heun"))


def test_generate_is_class_balanced_and_independent_of_the_batch_size(pipe):
    images, labels = pipe.generate(7, seed=1, batch_size=7, progress=False)
    assert images.dtype == torch.uint8 and images.shape == (7, 1, 8, 8)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    again, _ = pipe.generate(7, seed=1, batch_size=2, progress=False)
    assert torch.allclose(images.float(), again.float(), atol=1)  # batches may round differently, never differ
    other, _ = pipe.generate(7, seed=2, progress=False)
    assert not torch.equal(images, other)
    _, sevens = pipe.generate(4, labels=[2], progress=False)
    assert sevens.tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match=">= 1"):
        pipe.generate(0)


def test_consistency_sampling_is_reproducible_from_the_seed_whatever_the_batch(pipe):
    """Consistency sampling re-noises between its steps: that noise too comes from the seed and the row, not
    from torch's global generator, so a multi-step score can be reproduced."""
    settings = pipe.settings.with_(sampler="consistency", steps=3)
    images, _ = pipe.generate(300, seed=1, settings=settings, batch_size=300, progress=False)
    torch.manual_seed(123)  # the global generator's state must not matter
    again, _ = pipe.generate(300, seed=1, settings=settings, batch_size=7, progress=False)
    assert torch.allclose(images.float(), again.float(), atol=1)
    other, _ = pipe.generate(300, seed=2, settings=settings, progress=False)
    assert not torch.equal(images, other)


def test_step_noise_depends_on_seed_step_and_row_alone(pipe):
    whole = pipe.step_noise(0, 1, slice(0, 700))
    assert whole.shape == (700, 1, 8, 8)
    assert torch.equal(pipe.step_noise(0, 1, slice(250, 600)), whole[250:600])  # across generator blocks
    assert not torch.equal(pipe.step_noise(0, 2, slice(0, 700)), whole)  # another step
    assert not torch.equal(pipe.step_noise(1, 1, slice(0, 700)), whole)  # another seed
    assert not torch.equal(whole[:300], whole[300:600])  # blocks are not copies of each other
    assert not torch.equal(pipe.step_noise(0, 0, slice(0, 4)), pipe.noise(4, 0))  # nor of the starting noise
    assert abs(float(whole.mean())) < 0.02 and abs(float(whole.std()) - 1) < 0.02


def test_a_sample_s_noise_does_not_depend_on_how_many_are_drawn():
    """torch's CPU sampler redraws the last 16 values of a count that is not a multiple of 16, so with 108 values a
    sample the last one's noise changed with n; a shape of a multiple of 16 values draws as it always did."""
    spec = ModelSpec("liquid", "tiny", SMALL, 3, 6)
    odd = Pipeline(spec.build(), spec, "v")
    whole = odd.noise(9, seed=3)
    assert all(torch.equal(odd.noise(n, seed=3), whole[:n]) for n in range(1, 9))
    spec = ModelSpec("liquid", "tiny", SMALL, 1, 8)
    assert torch.equal(Pipeline(spec.build(), spec, "v").noise(5, seed=3),
                       torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3)))


def test_labels_and_conditions_give_one_row_per_sample(pipe):
    """Extra labels were cut off without a word (each batch takes its own rows), too few failed deep in the
    backbone, and label 3, the null class of this 3-class model, gave unconditional samples labelled 3."""
    noise = pipe.noise(4)
    with pytest.raises(ValueError, match="labels has 6 rows for 4 samples"):
        pipe.sample(noise, torch.tensor([0, 1, 2, 0, 1, 2]))
    with pytest.raises(ValueError, match="labels has 2 rows for 4 samples"):
        pipe.sample(noise, torch.tensor([0, 1]), batch_size=2)
    with pytest.raises(ValueError, match="label 3 out of range: this model has 3 classes"):
        pipe.generate(2, labels=[3], progress=False)


def test_conditions_of_a_picture(pipe):
    y, cond, n, row = pipe.conditions()
    assert cond == {} and n == 24 and row == 8 and y.tolist() == [0] * 8 + [1] * 8 + [2] * 8  # a class grid
    y, _, n, row = pipe.conditions(n=5, labels=[1, 2])
    assert y.tolist() == [1, 2, 1, 2, 1] and n == 5 and row is None
    with pytest.raises(ValueError, match=">= 1"):
        pipe.conditions(n=0)
    with pytest.raises(ValueError, match="not text-conditioned"):
        pipe.conditions(prompts=["a cat"])


def test_an_unconditional_model_takes_no_labels(tmp_path):
    pipe = Pipeline.load(write_checkpoint(tmp_path, []), device="cpu")
    y, cond, n, row = pipe.conditions()
    assert y is None and n == 64 and row == 8
    with pytest.raises(ValueError, match="unconditional"):
        pipe.conditions(labels=[1])
    with pytest.raises(ValueError, match="unconditional"):
        pipe.sample(pipe.noise(2), torch.tensor([0, 1]))
    images, labels = pipe.generate(3, progress=False)
    assert labels is None and images.shape == (3, 1, 8, 8)


def test_sampling_settings_override_one_field_and_are_checked():
    base = SampleConfig(steps=30, cfg=2.0)
    assert base.with_(steps=None, cfg=1.0) == SampleConfig(steps=30, cfg=1.0)
    assert base.with_(cfg_interval=[0.1, 0.9]).cfg_interval == (0.1, 0.9)
    with pytest.raises(ConfigError, match="sample.cfg_interval"):
        base.with_(cfg_interval=[0.9, 0.1])
    with pytest.raises(ConfigError, match="sample.steps"):
        base.with_(steps=0)
    with pytest.raises(ConfigError, match="sample.sampler"):
        base.with_(sampler="dopri5")


class Recorded(torch.nn.Module):
    """Stands in for what torch.compile returns (a module too): the module itself, logging each call's rows."""

    def __init__(self, module, rows: list[int]):
        super().__init__()
        self.module, self.rows = module, rows

    def forward(self, x, *args, **kwargs):
        self.rows.append(x.shape[0])
        return self.module(x, *args, **kwargs)


def test_a_compiled_network_sees_equal_batches_and_gives_the_eager_samples(tmp_path, monkeypatch):
    """With compile on, every batch reaches the network padded to batch_size rows (one compiled shape for all),
    the padding is dropped, and the samples equal the eager ones (torch.compile replaced by a recorder). A
    block stack compiles block by block and leaves the loaded model's own blocks eager."""
    import liquidgen.generate as generate
    from liquidgen.models.liquid import LiquidBlock

    calls, shapes = [], []

    def recording_compile(module, **options):
        calls.append((type(module), options))
        return Recorded(module, shapes)
    monkeypatch.setattr(generate.torch, "compile", recording_compile)
    ckpt = write_checkpoint(tmp_path, CLASSES)
    eager, compiled = Pipeline.load(ckpt, device="cpu", compile="off"), Pipeline.load(ckpt, device="cpu", compile="on")
    assert not eager.compiles(10**9) and compiled.compiles(1)
    assert not Pipeline.load(ckpt, device="cpu").compiles(10**9)  # auto: CUDA only
    noise, labels = eager.noise(7, seed=3), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    settings = eager.settings.with_(sampler="heun", cfg=2.0)
    want = eager.sample(noise, labels, settings, batch_size=3)
    got = compiled.sample(noise, labels, settings, batch_size=3)
    assert torch.allclose(got, want, atol=1e-6) and got.shape == (7, 1, 8, 8)
    assert calls == [(LiquidBlock, {"dynamic": False})] * SMALL["depth"]
    assert set(shapes) == {6}  # 3 rows, doubled for guidance, in every call: the last batch of 1 was padded
    assert all(type(block) is LiquidBlock for block in compiled.model.blocks)
    before = len(shapes)
    compiled.model(noise[:2], torch.rand(2), labels[:2])  # the model itself: eager, not through the compiled blocks
    assert len(shapes) == before
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        Pipeline.load(ckpt, device="cpu", compile="yes")

    calls.clear()
    unet = build_model("unet", "tiny", 1, 8, 3).eval()
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 2])
    whole = CompiledForward(unet)
    out = whole(x, t, y)
    assert calls == [(type(unet), {"mode": "reduce-overhead", "dynamic": False})]  # one CUDA graph per call
    assert torch.equal(out, unet(x, t, y))


def test_auto_reuses_compiled_shapes_for_small_calls(tmp_path, monkeypatch):
    """compile: auto as on CUDA (its threshold faked; torch.compile replaced by a recorder): a call too small to pay for
    compiling runs eager, until a large call has compiled its batch shape; then it runs compiled too, while
    one of another shape (other batch, no guidance) stays eager."""
    import liquidgen.generate as generate

    compiled_rows = []
    monkeypatch.setattr(generate.torch, "compile", lambda module, **options: Recorded(module, compiled_rows))
    # auto's rule as on CUDA, with a threshold of 100 samples x steps
    monkeypatch.setattr(Pipeline, "compiles", lambda self, work: self.compile == "on" or (
        self.compile == "auto" and work >= 100))
    pipe = Pipeline.load(write_checkpoint(tmp_path, CLASSES), device="cpu")
    noise, labels = pipe.noise(4, seed=1), torch.tensor([0, 1, 2, 0])
    guided = pipe.settings.with_(steps=2, cfg=2.0)

    def calls(n, settings, batch):  # network calls that went through the compiled forward
        before = len(compiled_rows)
        pipe.sample(noise[:n], labels[:n], settings, batch_size=batch)
        return len(compiled_rows) - before
    assert calls(4, guided, 4) == 0  # 8 samples x steps: eager
    assert calls(4, pipe.settings.with_(steps=40, cfg=2.0), 4) > 0  # 160: compiled, shape (4 rows, guided)
    assert calls(3, guided, 4) > 0  # small, but padded to the compiled shape
    assert calls(3, guided, 3) == 0  # another batch shape
    assert calls(4, pipe.settings.with_(steps=2, cfg=1.0), 4) == 0  # no guidance: half the rows
    pipe.compile = "off"
    assert calls(4, guided, 4) == 0  # off means off


def test_regional_compilation_computes_what_the_eager_stack_does():
    """Real torch.compile (the CPU's inductor) of a small LiquidGen, one block compiled for all of them."""
    model = build_model("liquid", "tiny", 1, 8, 3, **SMALL).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.allclose(CompiledForward(model)(x, t, y), model(x, t, y), atol=1e-5)


def test_a_checkpoint_trained_with_triton_kernels_loads_without_them(tmp_path):
    ckpt = write_checkpoint(tmp_path, CLASSES)
    spec = json.loads((ckpt / "model.json").read_text())
    spec["options"]["kernels"] = "triton"  # as a run on a GPU with `--set model.options.kernels=triton` saves it
    (ckpt / "model.json").write_text(json.dumps(spec))
    pipe = Pipeline.load(ckpt, device="cpu")
    assert pipe.sample(pipe.noise(2), torch.tensor([0, 1])).shape == (2, 1, 8, 8)


def test_aot_packages_give_the_eager_samples_and_a_new_pipeline_loads_them(tmp_path, monkeypatch):
    """compile=aot: the first call exports and compiles one AOTInductor package for its batch signature into the
    checkpoint's aot/ folder (the padded last batch reuses it), samples as the eager network does, and a pipeline
    loaded afresh (a later process) samples from that package without exporting again."""
    ckpt = write_checkpoint(tmp_path, CLASSES)
    eager = Pipeline.load(ckpt, device="cpu", compile="off")
    noise, labels = eager.noise(5, seed=1), torch.tensor([0, 1, 2, 0, 1])
    settings = eager.settings.with_(sampler="euler", steps=2, cfg=2.0)
    want = eager.sample(noise, labels, settings, batch_size=3)
    probe = liquidgen.aot._LOAD_PROBE
    # a torch build whose loader crashes (as CUDA packages did on an H100 with torch 2.11): an error, not a crash
    monkeypatch.setattr(liquidgen.aot, "_LOAD_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(RuntimeError, match="exit code -11.*compile=on"):
        Pipeline.load(ckpt, device="cpu", compile="aot").sample(noise, labels, settings, batch_size=3)
    packages = list((ckpt / "aot" / "ema").glob("forward-*.pt2"))
    assert len(packages) == 1 and not list((ckpt / "aot" / "ema").glob("*.ok"))
    monkeypatch.setattr(liquidgen.aot, "_LOAD_PROBE", probe)
    got = Pipeline.load(ckpt, device="cpu", compile="aot").sample(noise, labels, settings, batch_size=3)
    assert torch.allclose(got, want, atol=1e-5)
    assert list((ckpt / "aot" / "ema").glob("forward-*.pt2")) == packages  # built once, the failed check kept it
    assert packages[0].with_name(packages[0].name + ".ok").exists()
    # once a package has loaded, no child process checks it again
    monkeypatch.setattr(liquidgen.aot, "_LOAD_PROBE", "raise SystemExit(1)")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")
    monkeypatch.setattr(torch.export, "export", no_export)
    again = Pipeline.load(ckpt, device="cpu", compile="aot")
    assert again.compiles(1) and torch.allclose(again.sample(noise, labels, settings, batch_size=3), want, atol=1e-5)
    monkeypatch.setattr(liquidgen.aot, "_source_digest", lambda: "changed")  # a code change: the package is stale
    with pytest.raises(AssertionError, match="exported again"):
        Pipeline.load(ckpt, device="cpu", compile="aot").sample(noise, labels, settings, batch_size=3)
    with pytest.raises(ValueError, match="aot"):
        Pipeline(eager.model, eager.spec, eager.prediction, compile="aot")
    (tmp_path / "a-file").write_text("")
    blocked = Pipeline(eager.model, eager.spec, eager.prediction, compile="aot", aot_folder=tmp_path / "a-file" / "aot")
    with pytest.raises(OSError, match="cannot be written"):
        blocked.sample(noise, labels, settings, batch_size=3)
