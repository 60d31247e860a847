"""The Python API: liquidgen.load / liquidgen.train, a thin layer over generate.Pipeline and train.train."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import liquidgen
from liquidgen.cli import main
from liquidgen.config import load_config
from liquidgen.generate import Pipeline

QUICK = ["train.steps=4", "train.batch_size=16", "train.log_every=2", "train.sample_every=0", "train.ckpt_every=0",
         "data.image_size=8", "sample.steps=3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    assert liquidgen.train("configs/digits-liquid-tiny.yaml", out=out, overrides=QUICK) == out
    return out


@pytest.fixture(scope="module")
def pipe(run):
    return liquidgen.load(run, device="cpu")


def test_import_liquidgen_loads_no_torch():
    code = "import sys, liquidgen; assert 'torch' not in sys.modules; print(sorted(liquidgen.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['LiquidPipeline', 'load', 'train']"


def test_train_stays_callable_after_its_module_is_imported(tmp_path):
    import liquidgen.train as module  # the import that would shadow a function of the same name

    assert module is liquidgen.train and callable(liquidgen.train)
    config = load_config("configs/digits-liquid-tiny.yaml", QUICK)
    assert liquidgen.train(config, out=tmp_path / "run", overrides=["train.steps=2"]) == tmp_path / "run"
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2]  # the override reached the Config object


def test_labels_give_pil_images_and_tensors_of_the_same_samples(pipe):
    images = pipe(labels=[3, 7], steps=3, cfg=1.5, seed=0)
    assert [(im.mode, im.size) for im in images] == [("L", (8, 8))] * 2
    x = pipe(labels=[3, 7], steps=3, cfg=1.5, seed=0, output="pt")
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(np.stack([np.asarray(im) for im in images]), (x[:, 0] * 255).round().byte().numpy())
    assert not torch.equal(x, pipe(labels=[3, 7], steps=3, cfg=1.5, seed=1, output="pt"))


def test_a_call_is_the_pipeline_s_samples(pipe):
    """No second way to make images: the API's output is Pipeline.sample's, decoded."""
    inner: Pipeline = pipe.pipeline
    settings = inner.settings.with_(steps=3, cfg=1.5, sampler="heun")
    expected = inner.decode(inner.sample(inner.noise(4, seed=2), torch.tensor([3, 3, 7, 7]), settings))
    got = pipe(labels=["3", 7], num_images=2, steps=3, cfg=1.5, sampler="heun", seed=2, output="pt")
    assert torch.allclose(got, (expected.clamp(-1, 1) + 1) / 2)


def test_the_cli_and_the_api_draw_the_same_images(run, pipe, tmp_path):
    main(["sample", str(run), "--labels", "3", "7", "--n", "2", "--steps", "3", "--seed", "5",
          "--out", str(tmp_path / "s.npz")])
    cli = np.load(tmp_path / "s.npz")["images"][..., 0]
    api = np.stack([np.asarray(im) for im in pipe(labels=[3, 7], steps=3, seed=5)])
    assert np.array_equal(cli, api)


def test_without_labels_a_class_model_gives_each_class(pipe):
    assert len(pipe(num_images=2, steps=2)) == 20


@pytest.mark.parametrize("call,message", [
    ({"labels": [12]}, "label 12 out of range: this model has 10 classes (0..9)"),
    ({"labels": ["cat"]}, "label 'cat' is neither an index nor one of"),
    ({"prompt": "a seven"}, "not text-conditioned, so prompts do not apply; give labels= (0..9"),
    ({"output": "np"}, "output must be one of pil, pt"),
    ({"num_images": 0}, "num_images must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer in [0, 2^63)"),
    ({"sampler": "fast"}, "sample.sampler: 'fast' is not one of"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"labels": np.array([3, 10])}, "label 10 out of range: this model has 10 classes"),
])
def test_bad_input_is_a_value_error_saying_what_is_wrong(pipe, call, message):
    with pytest.raises(ValueError) as e:
        pipe(**call)
    assert message in str(e.value)


def test_labels_may_be_numpy_or_torch_integers(pipe):
    """A notebook's labels are often an array or a tensor: their integers are indices (they were refused as
    "neither an index nor one of" the class names, and a 0-d one failed in list())."""
    want = pipe(labels=[3, 7], steps=2, output="pt")
    assert torch.equal(pipe(labels=np.array([3, 7]), steps=2, output="pt"), want)
    assert torch.equal(pipe(labels=torch.tensor([3, 7], dtype=torch.int32), steps=2, output="pt"), want)
    assert torch.allclose(pipe(labels=torch.tensor(3), steps=2, output="pt"), want[:1], atol=1e-6)


@pytest.mark.slow
def test_prompts_give_num_images_per_prompt_in_order(tiny_text_run):
    pipe = liquidgen.load(tiny_text_run, device="cpu")
    prompts = ["a handwritten seven", "a handwritten one"]
    x = pipe(prompt=prompts, num_images=2, steps=2, seed=3, output="pt")
    inner = pipe.pipeline
    context = inner.encode_prompts(prompts)[0].cpu()[torch.tensor([0, 0, 1, 1])]
    expected = inner.decode(inner.sample(inner.noise(4, seed=3), None, inner.settings.with_(steps=2), context=context))
    assert x.shape == (4, 1, 8, 8) and torch.allclose(x, (expected.clamp(-1, 1) + 1) / 2)
    with pytest.raises(ValueError, match="this model has no classes, so labels do not apply"):
        pipe(labels=[7])


@pytest.mark.slow
def test_a_text_run_standardizes_captions_with_its_datasets_statistics(tiny_text_run):
    from liquidgen.data import load_precomputed

    model = liquidgen.load(tiny_text_run, device="cpu").pipeline.model  # folder-dit-text-latent.yaml turns it on
    context = load_precomputed(Path(tiny_text_run).parent / "captions").context.double()
    assert model.standardize_context
    torch.testing.assert_close(model.context_mean.double(), context.mean(0), rtol=0, atol=1e-6)
    spread = context.std(0)
    torch.testing.assert_close(model.context_std.double(), spread.clamp_min(0.01 * float(spread.mean())),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_to_an_absent_device_says_why(pipe):
    with pytest.raises(ValueError, match="device cuda: .*without CUDA"):
        pipe.to("cuda")
    assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")


def test_train_needs_a_folder_for_a_config_object():
    with pytest.raises(ValueError, match="give out="):
        liquidgen.train(load_config("configs/digits-liquid-tiny.yaml"))
