"""Your own autoencoder: the KL-VAE / VQ-VAE networks, the EMA codebook, train-autoencoder, and its use by
path through precompute."""
import json

import pytest
import torch
from safetensors.torch import load_file

from liquidgen.autoencoders import build_autoencoder
from liquidgen.autoencoders.discriminator import PatchDiscriminator, adaptive_weight
from liquidgen.autoencoders.own import ConvAutoencoder, psnr
from liquidgen.autoencoders.quantize import VectorQuantizer
from liquidgen.config import ConfigError, load_config
from liquidgen.train_autoencoder import AutoencoderConfig, train_autoencoder

TINY = ["data.name=digits", "data.image_size=8", "model.channels=16", "model.channel_mult=[1, 2]",
        "model.codebook_size=32", "train.batch_size=32", "train.log_every=5", "train.sample_every=0",
        "train.ckpt_every=0", "train.holdout=200", "optim.lr=2e-3", "optim.warmup_steps=0"]


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("channels,mult,size", [(1, (1, 2), 8), (3, (1, 2, 2), 16)])
def test_shapes(kind, channels, mult, size):
    net = ConvAutoencoder(kind, channels, 16, mult, 1, latent_channels=3, codebook_size=16)
    x = torch.rand(2, channels, size, size) * 2 - 1
    recon, loss, stats = net(x)
    factor = 2 ** (len(mult) - 1)
    assert recon.shape == x.shape and loss.ndim == 0 and net.downscale == factor
    z = net.encode(x)
    assert z.shape == (2, 3, size // factor, size // factor) and net.decode(z).shape == x.shape
    if kind == "vq":
        assert stats["indices"].shape == (2, size // factor, size // factor) and 1 <= stats["perplexity"] <= 16
        assert torch.equal(net.quantizer.quantize(z), z)  # encode returns codes, which quantise to themselves


def test_kl_term_is_the_gaussian_kl_in_image_units():
    net = ConvAutoencoder("kl", 1, 16, (1, 2), 1, latent_channels=2, kl_weight=1.0)
    x = torch.zeros(1, 1, 8, 8)
    mean, logvar = torch.full((1, 2, 4, 4), 0.5), torch.full((1, 2, 4, 4), -1.0)
    net.encoder.forward = lambda _: torch.cat([mean, logvar], 1)
    _, loss, stats = net(x)
    per_element = 0.5 * (0.25 + torch.exp(torch.tensor(-1.0)) - 1 + 1)  # (m^2 + s^2 - 1 - log s^2) / 2
    torch.testing.assert_close(loss, per_element * 32 / 64)  # 32 latent elements, 64 pixels
    torch.testing.assert_close(stats["kl"], loss)


def test_straight_through_gradient_is_the_identity():
    vq = VectorQuantizer(8, 3).eval()
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    q, _, _ = vq(z)
    torch.testing.assert_close(q.detach(), vq.quantize(z))  # the forward value is the code (up to rounding) ...
    w = torch.randn_like(q)
    (q * w).sum().backward()
    assert torch.equal(z.grad, w)  # ... the gradient passes as if there were no quantiser


def test_commitment_pulls_the_encoder_towards_its_code():
    vq = VectorQuantizer(4, 2, commitment=0.25).eval()
    z = torch.randn(1, 2, 1, 1, requires_grad=True)
    _, commitment, _ = vq(z)
    commitment.backward()
    code = vq.quantize(z.detach())
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - code) / 2)  # d/dz beta * mean((z - e)^2)


def test_the_quantizer_stays_in_float32_under_bf16_autocast():
    vq = VectorQuantizer(16, 3).train()
    z = torch.randn(2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, commitment, _ = vq(z.bfloat16())
    assert q.dtype == torch.float32 and commitment.dtype == torch.float32 and vq.embed.dtype == torch.float32


def test_one_ema_codebook_update_follows_the_formulas():
    vq = VectorQuantizer(2, 1, decay=0.9, restart_threshold=0.0, eps=0.0)
    vq.embed.copy_(torch.tensor([[0.0], [10.0]]))
    vq.embed_sum.copy_(vq.embed)
    vq.cluster_size.fill_(1.0)
    z = torch.tensor([1.0, 2.0, 12.0]).view(3, 1, 1, 1)  # two vectors go to code 0, one to code 1
    vq.train()(z)
    torch.testing.assert_close(vq.cluster_size, torch.tensor([0.9 + 0.1 * 2, 0.9 + 0.1 * 1]))
    torch.testing.assert_close(vq.embed_sum[:, 0], torch.tensor([0.0 + 0.1 * 3, 9.0 + 0.1 * 12]))
    torch.testing.assert_close(vq.embed[:, 0], vq.embed_sum[:, 0] / vq.cluster_size)


def test_ema_codebook_finds_the_clusters_of_a_toy_set():
    torch.manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    vq = VectorQuantizer(4, 2, decay=0.9, restart_threshold=0.5).train()
    for _ in range(200):
        points = centres[torch.randint(0, 4, (256,))] + 0.05 * torch.randn(256, 2)
        _, _, stats = vq(points.view(256, 2, 1, 1))
    distance = torch.cdist(centres, vq.embed).min(1).values
    assert (distance < 0.05).all(), vq.embed  # every cluster has a code at its centre
    assert stats["perplexity"] > 3.9 and stats["usage"] == 1.0


def test_a_dead_code_restarts_on_a_batch_vector():
    vq = VectorQuantizer(3, 2, decay=0.5, restart_threshold=0.5, eps=0.0)
    vq.embed.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]))  # code 2 is far from everything
    vq.embed_sum.copy_(vq.embed)
    vq.cluster_size.fill_(1.0)
    z = torch.tensor([[0.1, 0.0], [0.9, 1.1], [0.0, 0.2], [1.2, 0.8]]).view(4, 2, 1, 1)
    vq.train()(z)  # code 2 takes nothing: its count halves to 0.5, not yet below the threshold
    assert vq.embed[2].tolist() == [100.0, 100.0]
    vq(z)  # 0.25 < 0.5: restarted on one of the batch's vectors
    assert any(torch.equal(vq.embed[2], row) for row in z.view(4, 2)) and vq.cluster_size[2] == 0.5


def test_psnr_and_adaptive_weight():
    x = torch.zeros(1, 1, 4, 4)
    torch.testing.assert_close(psnr(x + 0.2, x), torch.tensor([-10 * torch.log10(torch.tensor(0.01))]))
    layer = torch.nn.Linear(3, 1)
    out = layer(torch.ones(5, 3))
    w = adaptive_weight((out - 1).square().mean(), 10 * out.mean(), layer.weight)
    g_rec = (2 * (out - 1).mean()).abs() * 3 ** 0.5  # |d rec / d w| over the three equal inputs
    torch.testing.assert_close(w, g_rec.detach() / (10 * 3 ** 0.5 + 1e-4))
    assert PatchDiscriminator(3, 8)(torch.randn(2, 3, 32, 32)).shape == (2, 1, 6, 6)  # a logit per patch


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="model.channel_mult"):
        load_config(None, ["model.channel_mult=4"], cls=AutoencoderConfig)
    with pytest.raises(ConfigError, match="unknown config key model.depth"):
        load_config(None, ["model.depth=3"], cls=AutoencoderConfig)
    with pytest.raises(ValueError, match="kind must be one of"):
        ConvAutoencoder("ae")


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq")
    config = load_config(None, TINY + ["model.kind=vq", "train.steps=150"], cls=AutoencoderConfig)
    return out, train_autoencoder(config, out)


def test_training_a_vq_vae_writes_a_run_and_reconstructs(vq_run):
    out, final = vq_run
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "psnr", "perplexity", "usage", "reconstruction"} <= set(lines[0])
    assert lines[-2]["psnr"] > lines[0]["psnr"] + 3  # it learns
    held = lines[-1]
    assert held["heldout_psnr"] > 18 and 0 < held["heldout_codebook_usage"] <= 1 and held["heldout_codebook_perplexity"] > 2
    assert (out / "samples" / "step-000150.png").is_file() and (out / "loss.png").is_file()
    assert json.loads((final / "state.json").read_text())["heldout"]["psnr"] == held["heldout_psnr"]


def test_a_trained_autoencoder_plugs_in_by_path(vq_run, tmp_path):
    from liquidgen.data import load_dataset, load_precomputed
    from liquidgen.latent_space import to_float
    from liquidgen.precompute import Request, precompute

    out, final = vq_run
    ae = build_autoencoder("own", path=str(out))
    assert ae.spec() == {"name": "own", "path": str(final.resolve())}
    assert (ae.latent_channels, ae.downscale, ae.image_channels) == (4, 2, 1)
    precompute(Request("digits", None, 8, limit=64, autoencoder={"name": "own", "path": str(out)}), tmp_path,
               progress=False)
    data = load_precomputed(tmp_path)
    assert data.images.shape == (64, 4, 4, 4)
    images = load_dataset("digits", image_size=8).images[:64]
    decoded = data.space.decode(data.space.normalize(data.images.float()))
    assert psnr(decoded, to_float(images)).mean() > 18  # the latents decode back to the digits


def test_kl_vae_with_gan_resumes_exactly(tmp_path):
    base = TINY + ["model.kind=kl", "loss.gan_weight=0.5", "loss.gan_start=4", "train.ckpt_every=5",
                   "optim.schedule=constant", "train.log_every=1"]
    train_autoencoder(load_config(None, base + ["train.steps=10"], cls=AutoencoderConfig), tmp_path / "straight")
    train_autoencoder(load_config(None, base + ["train.steps=5"], cls=AutoencoderConfig), tmp_path / "split")
    train_autoencoder(load_config(None, base + ["train.steps=10"], cls=AutoencoderConfig), tmp_path / "split",
                      resume=True)
    for name in ("model.safetensors", "ema.safetensors", "discriminator.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step-000010" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "step-000010" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    lines = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert "gan_d" not in lines[3] and "gan_d" in lines[4] and lines[4]["gan_weight"] > 0


def test_an_unreadable_discriminator_changes_nothing_and_resume_falls_back(tmp_path, capsys):
    from liquidgen.checkpoint import CorruptCheckpoint
    from liquidgen.train_autoencoder import load_checkpoint, start_run
    config = load_config(None, TINY + ["model.kind=kl", "loss.gan_weight=0.5", "loss.gan_start=2", "train.steps=6",
                                       "train.ckpt_every=3"], cls=AutoencoderConfig)
    train_autoencoder(config, tmp_path / "run")
    newest = tmp_path / "run" / "checkpoints" / "step-000006" / "discriminator.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # a kill mid-write
    run = start_run(config, tmp_path / "run")
    before = [p.detach().clone() for p in [*run.net.parameters(), *run.disc.parameters()]]
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(run, newest.parent)
    assert all(torch.equal(a, b) for a, b in zip(before, [*run.net.parameters(), *run.disc.parameters()]))
    assert not run.optimizer.state and not run.disc_opt.state
    capsys.readouterr()
    train_autoencoder(config, tmp_path / "run", resume=True)  # from step 3, to a fresh step 6
    out = capsys.readouterr().out
    assert "discriminator.safetensors" in out and "trying the previous checkpoint" in out
    assert f"resumed from {tmp_path / 'run' / 'checkpoints' / 'step-000003'} at step 3" in out
    steps = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6


def test_skipped_final_steps_still_end_with_the_final_checkpoint(tmp_path, monkeypatch, capsys):
    """The last steps non-finite, hence skipped: the run still ends with the held-out measurement and the final
    checkpoint, of the last good weights, and says how many steps it skipped."""
    import liquidgen.train_autoencoder as train_module

    calls = []

    def nan_after_four_steps(recon, x):
        calls.append(None)
        return train_module.F.l1_loss(recon, x) * (float("nan") if len(calls) > 4 else 1.0)

    monkeypatch.setitem(train_module.RECONSTRUCTION, "l1", nan_after_four_steps)
    config = load_config(None, TINY + ["train.steps=6", "train.ckpt_every=3"], cls=AutoencoderConfig)
    final = train_autoencoder(config, tmp_path)
    assert final == tmp_path / "checkpoints" / "step-000006"
    state = json.loads((final / "state.json").read_text())
    assert state["skipped_steps"] == 2 and "heldout" in state
    assert all(torch.isfinite(w).all() for w in load_file(final / "model.safetensors").values())
    *_, window, held = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert window["step"] == 6 and "loss" not in window and held["heldout_psnr"] == state["heldout"]["psnr"]
    out = capsys.readouterr().out
    assert "step 6/6  loss n/a (all 1 step skipped)" in out and "2 of 6 steps skipped" in out
