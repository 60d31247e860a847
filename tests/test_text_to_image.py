"""End to end on the CPU: captioned images -> taef2 latents + MiniLM embeddings -> a tiny text-conditioned
latent model -> `sample --prompt`; text CFG and caption dropout; the inpainting variant."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from liquidgen import checkpoint as ckpt_io
from liquidgen.bench.records import read_records
from liquidgen.cli import main
from liquidgen.data import read_image, stored_prompt_embeddings
from liquidgen.generate import Pipeline
from liquidgen.spec import ModelSpec, init_weights
from liquidgen.text import encode_prompts
from liquidgen.config import load_config
from liquidgen.inpainting import concat_input, load_mask, random_masks
from liquidgen.models import build_model
from liquidgen.samplers import denoiser
from liquidgen.train import drop_context

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 60, 230)}
QUICK = ["model.preset=tiny", "model.options.patch_size=1", "data.image_size=null", "train.steps=6",
         "train.batch_size=8", "train.log_every=3", "train.sample_every=6", "train.ckpt_every=0", "sample.steps=2",
         "sample.per_class=2", "optim.lr=1e-3"]


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory) -> Path:
    """30 images of coloured squares on grey, of assorted sizes, captioned by .txt files and metadata.jsonl."""
    root = tmp_path_factory.mktemp("captioned")
    rng = np.random.default_rng(0)
    meta = []
    for i in range(30):
        colour = list(COLOURS)[i % 3]
        w, h = int(rng.integers(32, 60)), int(rng.integers(32, 60))
        a = np.full((h, w, 3), 128, np.uint8)
        a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = COLOURS[colour]
        Image.fromarray(a).save(root / f"img{i:02d}.png")
        caption = f"a {colour} square"
        if i % 2:
            (root / f"img{i:02d}.txt").write_text(caption)
        else:
            meta.append({"file_name": f"img{i:02d}.png", "text": caption})
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


@pytest.mark.slow
def test_captioned_folder_to_latents_to_text_model_to_prompted_samples(captioned_folder, taef2_weights, tmp_path,
                                                                       monkeypatch):
    latents = tmp_path / "latents"
    main(["precompute", "folder", "--root", str(captioned_folder), "--out", str(latents), "--size", "32",
          "--autoencoder", "taesd", "--ae-option", "variant=taef2", f"weights={taef2_weights}",
          "--text-encoder", "minilm", "--shard-size", "16", "--device", "cpu"])
    manifest = json.loads((latents / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 30 and manifest["latent_shape"] == [32, 4, 4]
    assert manifest["context_dim"] == 384 and len(manifest["stats"]["mean"]) == 32

    run = tmp_path / "run"
    main(["train", "configs/folder-dit-text-latent.yaml", "--out", str(run), "--set", *QUICK,
          f"data.root={latents}", "model.preset=tiny"])
    spec = json.loads(next((run / "checkpoints").iterdir()).joinpath("model.json").read_text())
    assert spec["options"]["context_dim"] == 384 and spec["num_classes"] == 0
    assert spec["space"]["autoencoder"]["variant"] == "taef2" and spec["text_encoder"]["name"] == "minilm"
    grid = Image.open(run / "samples" / "step-000006.png")
    assert grid.mode == "RGB" and (run / "samples" / "prompts.txt").read_text().count("square") == 3

    out = tmp_path / "prompted.png"
    main(["sample", str(run), "--prompt", "a red square", "a blue square", "--n", "4", "--steps", "2",
          "--out", str(out)])
    image = Image.open(out)
    assert image.mode == "RGB" and image.size[0] >= 2 * 32 and image.size[1] >= 2 * 32  # 2 rows of 2, decoded
    with pytest.raises(ValueError, match="not text-conditioned"):
        encode_prompts(["x"], None, 0, "cpu")
    # eval's prompted generation: sample i gets prompt i % 2's embedding and that index as its label
    seen = []

    def spy(model, prediction, noise, y=None, *args, **kwargs):
        seen.append(kwargs.get("context"))
        return noise

    monkeypatch.setattr("liquidgen.generate.sample", spy)
    prompts = ["a red square", "a blue square"]
    pipe = Pipeline.load(run, device="cpu")
    images, labels = pipe.generate(4, prompts=prompts, settings=pipe.settings.with_(steps=2), progress=False)
    assert labels.tolist() == [0, 1, 0, 1] and images.shape[0] == 4
    expected = encode_prompts(prompts, spec["text_encoder"], spec["text_tokens"], "cpu")[0]
    assert torch.equal(seen[0], expected[labels])


def test_text_guidance_uses_the_null_context():
    model = build_model("liquid", "tiny", 1, 8, 0, context_dim=6)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.8])
    context = torch.randn(3, 6)
    v = denoiser(model, "v", cfg=3.0, context=context)(x, t)
    with torch.no_grad():
        cond = model(x, t, context=context)
        uncond = model(x, t)  # None is the learned null context
    torch.testing.assert_close(v, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)
    tokens = torch.randn(3, 5, 6)  # a token context: L copies of the null token act as the null token
    null_y, null_tokens = model.unconditional(None, tokens)
    assert null_y is None and null_tokens.shape == tokens.shape
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, context=null_tokens), uncond)


def test_caption_dropout_is_per_sample_to_the_null_context():
    context = torch.randn(20_000, 4)
    null = torch.full((20_000, 4), 7.0)
    dropped, no_mask = drop_context(context, 0.15, null)
    hit = (dropped == 7.0).all(1)
    assert 0.13 < hit.float().mean() < 0.17 and no_mask is None
    assert torch.equal(dropped[~hit], context[~hit])
    tokens, mask = torch.randn(1000, 3, 4), torch.tensor([True, True, False]).repeat(1000, 1)
    dropped, new_mask = drop_context(tokens, 0.5, torch.full((1000, 3, 4), 7.0), mask)
    hit = (dropped == 7.0).flatten(1).all(1)
    assert new_mask[hit, 0].all() and not new_mask[hit, 1:].any()  # L null copies act as one null token
    assert torch.equal(new_mask[~hit], mask[~hit])


def test_random_masks_cover_every_kind():
    torch.manual_seed(0)
    masks = random_masks(600, 8, 12)
    assert masks.shape == (600, 1, 8, 12) and set(masks.unique().tolist()) <= {0.0, 1.0}
    fraction = masks.flatten(1).mean(1)
    assert (fraction == 1).float().mean() > 0.25  # "generate everything" keeps plain sampling
    assert ((fraction > 0) & (fraction < 1)).float().mean() > 0.5  # boxes and borders keep something
    known = torch.randn(2, 3, 8, 12)
    concat = concat_input(known, masks[:2])
    assert concat.shape == (2, 4, 8, 12) and torch.equal(concat[:, 3:], masks[:2])
    assert torch.equal(concat[:, :3] * masks[:2], torch.zeros_like(known))  # nothing leaks from the hole


@pytest.mark.parametrize("name,preset", [("liquid", "tiny"), ("dit", "tiny"), ("unet", "tiny"),
                                         ("fixed_point", "dit-tiny")])
def test_an_inpainting_model_starts_as_the_plain_model(name, preset, tmp_path):
    config = load_config(None, [f"model.name={name}", f"model.preset={preset}"])
    plain = ModelSpec.for_run(config, 1, 8, ["a", "b"]).build()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    ckpt_io.save_checkpoint(tmp_path, 1, config, ModelSpec.for_run(config, 1, 8, ["a", "b"]).to_json(), plain, plain)
    config.model.inpainting = True
    spec = ModelSpec.for_run(config, 1, 8, ["a", "b"])
    assert spec.options["concat_channels"] == 2
    model = spec.build()
    init_weights(model, tmp_path)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([0, 1])
    concat = concat_input(torch.randn(2, 1, 8, 8), random_masks(2, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, concat=concat), plain(x, t, y))
    with pytest.raises(ValueError, match="needs concat of shape"):
        model(x, t, y, concat=concat[:, :1])
    with torch.no_grad():  # no concat: nothing known, as for plain sampling
        everything = concat_input(torch.zeros_like(x), torch.ones_like(x))
        torch.testing.assert_close(model(x, t, y), model(x, t, y, concat=everything))


@pytest.mark.slow
def test_inpainting_training_and_sampling_keep_the_known_pixels(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(run), "--set", "model.inpainting=true",
          "train.steps=4", "train.batch_size=16", "train.log_every=2", "train.sample_every=4", "train.ckpt_every=0",
          "sample.steps=2", "sample.per_class=1", "data.image_size=8"])
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(init)
    hole = np.zeros((8, 8), np.uint8)
    hole[2:6, 2:6] = 255
    Image.fromarray(hole).save(mask)
    out = tmp_path / "filled.npz"
    main(["sample", str(run), "--init", str(init), "--mask", str(mask), "--labels", "3", "--n", "2",
          "--steps", "2", "--out", str(out)])
    images = np.load(out)["images"][..., 0]
    keep = hole == 0
    assert images.shape == (2, 8, 8) and (images[:, keep] == pixels[keep]).all()
    plain = _plain_run(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["sample", str(plain), "--init", str(init), "--mask", str(mask)])
    assert exc.value.code == 2 and "need an inpainting model" in capsys.readouterr().err


def test_a_mask_is_cropped_like_the_init_image_it_masks(tmp_path):
    """A wide mask marking the left half of the init's centre square marks the left half of the square the
    init is cropped to, not the squashed strip a plain resize would give."""
    marked = np.zeros((16, 32), np.uint8)
    marked[:, 8:16] = 255
    Image.fromarray(marked).save(tmp_path / "mask.png")
    Image.fromarray(np.stack([marked] * 3, -1)).save(tmp_path / "init.png")
    mask = load_mask(tmp_path / "mask.png", 8)
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., :4] = 1
    assert torch.equal(mask, expected)
    init = torch.from_numpy(read_image(tmp_path / "init.png", 8, 3)[..., 0] > 127).float()
    assert torch.equal(mask[0, 0], init)


def _plain_run(tmp_path: Path) -> Path:
    run = tmp_path / "plain"
    main(["train", "configs/digits-liquid-tiny.yaml", "--out", str(run), "--set", "train.steps=1",
          "train.batch_size=8", "train.sample_every=0", "data.image_size=8"])
    return run


def test_padding_tokens_are_invisible_behind_the_mask():
    """A token context padded to a fixed length with its mask gives exactly the unpadded result, in
    cross-attention (DiT, TLD-style) and in the pooled path (LiquidGen), with and without guidance."""
    torch.manual_seed(0)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.6])
    tokens = torch.randn(2, 3, 6)
    padded = torch.cat([tokens, torch.randn(2, 2, 6)], dim=1)  # junk where the mask is False
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    for model in (build_model("dit", "tiny", 1, 8, 0, context_dim=6, cross_attention=True),
                  build_model("liquid", "tiny", 1, 8, 0, context_dim=6)):
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, context=padded, context_mask=mask), model(x, t, context=tokens))
            assert not torch.allclose(model(x, t, context=padded), model(x, t, context=tokens))
            torch.testing.assert_close(denoiser(model, "v", cfg=2.0, context=padded, context_mask=mask)(x, t),
                                       denoiser(model, "v", cfg=2.0, context=tokens)(x, t))


@pytest.mark.slow
def test_token_contexts_from_precompute_to_prompted_samples(tmp_path):
    data = tmp_path / "tokens"
    main(["precompute", "digits", "--size", "8", "--limit", "64", "--out", str(data), "--text-encoder", "minilm",
          "--text-tokens", "12", "--caption-template", "a handwritten {}", "--device", "cpu"])
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["text_tokens"] == 12 and manifest["context_dim"] == 384
    assert np.load(data / "shard-00000.context.npy").shape == (64, 12, 384)
    mask = np.load(data / "shard-00000.context_mask.npy")
    assert mask.shape == (64, 12) and mask[:, 0].all() and not mask.all()  # short captions are padded
    run = tmp_path / "run"
    main(["train", "configs/folder-dit-text-latent.yaml", "--out", str(run), "--set", *QUICK, f"data.root={data}",
          "model.preset=tiny", "model.options.patch_size=2"])
    spec = json.loads(next((run / "checkpoints").iterdir()).joinpath("model.json").read_text())
    assert spec["text_tokens"] == 12
    out = tmp_path / "seven.npz"
    main(["sample", str(run), "--prompt", "a handwritten seven", "--n", "2", "--steps", "2", "--out", str(out)])
    assert np.load(out)["images"].shape == (2, 8, 8, 1)


def test_stored_prompt_embeddings_stand_in_for_the_text_model(tmp_path, capsys):
    """A GPU machine without the text model conditions on the embeddings a captioned dataset stores: they are the
    encoder's (to fp16), so the samples are those the encoder's embeddings give."""
    data = tmp_path / "text"
    main(["precompute", "digits", "--size", "8", "--limit", "40", "--out", str(data), "--text-encoder", "minilm",
          "--caption-template", "a handwritten {}", "--device", "cpu"])
    prompts = ["a handwritten 7", "a handwritten 2"]
    stored = stored_prompt_embeddings(data, prompts)
    spec = json.loads((data / "manifest.json").read_text())["request"]["text_encoder"]
    encoded = encode_prompts(prompts, spec, 0, "cpu")[0]
    torch.testing.assert_close(stored, encoded, atol=2e-3, rtol=1e-2)
    with pytest.raises(ValueError, match="no image captioned 'a red apple'"):
        stored_prompt_embeddings(data, ["a handwritten 1", "a red apple"])
    run = tmp_path / "run"
    main(["train", "configs/mnist-text-liquid-S.yaml", "--out", str(run), "--set", *QUICK, f"data.root={data}",
          "model.preset=tiny"])
    pipe = Pipeline.load(run, device="cpu")
    settings = pipe.settings.with_(steps=2, cfg=2.0)
    images, labels = pipe.generate(4, seed=3, prompts=prompts, settings=settings, progress=False)
    again, _ = pipe.generate(4, seed=3, prompts=prompts, settings=settings, progress=False, prompt_context=stored)
    assert labels.tolist() == [0, 1, 0, 1] and (images.int() - again.int()).abs().max() <= 2
    with pytest.raises(ValueError, match="one pooled embedding per prompt"):
        pipe.generate(4, prompts=prompts, prompt_context=stored[:1])
    with pytest.raises(SystemExit):  # a guidance sweep of unconditional samples would measure nothing
        main(["eval", str(run), "--data", "digits", "--cfg", "1", "2", "--n", "4", "--device", "cpu",
              "--cache", str(tmp_path / "cache")])
    assert "guidance changes nothing" in capsys.readouterr().err


def test_bench_quality_needs_a_text_models_prompts_and_conditions_on_them(tmp_path):
    data, out = tmp_path / "text", tmp_path / "quality"
    main(["precompute", "digits", "--size", "8", "--limit", "64", "--out", str(data), "--text-encoder", "minilm",
          "--caption-template", "a handwritten {}", "--device", "cpu"])
    args = ["bench", "quality", "configs/mnist-text-liquid-S.yaml", "liquid:tiny", "--set", "optim.schedule=constant",
            f"data.root={data}", "train.batch_size=16", "--reference", "digits", "", "--out", str(out),
            "--minutes", "0.01", "--curve-every", "1", "--nfe", "2", "--samples", "20", "--cfg", "1", "2",
            "--classifier", str(tmp_path / "clf.safetensors"), "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    with pytest.raises(SystemExit):  # said before any training: unconditional samples would score nothing asked
        main(args)
    assert not (out / "runs").exists()
    main(args + ["--prompts", *[f"a handwritten {k}" for k in range(10)], "--prompt-embeddings", str(data)])
    records = [r for r in read_records(out / "quality.jsonl") if not r.get("floor")]
    assert sorted(r["cfg"] for r in records) == [1.0, 2.0]
    assert all(0 <= r["class_accuracy"] <= 1 and r["classifier_fd"] > 0 for r in records)
