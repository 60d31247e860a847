"""Autoencoders: the registry, the shared interface checks, TAESD weight loading (random weights for
every variant, the real taef2 when present) and the diffusers wrapper against diffusers itself."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from liquidgen.autoencoders import AUTOENCODERS, TAESD, Autoencoder, Identity, build_autoencoder
from liquidgen.autoencoders.taesd import VARIANTS, make_decoder, make_encoder
from liquidgen.data import load_dataset
from liquidgen.latent_space import to_float

TAESD_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "weights" / "taesd"
CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the PSNR in dB of [-1, 1] images, measured on [0, 1] pixels."""
    mse = ((a - b) / 2).square().flatten(1).mean(1)
    return (10 * torch.log10(1 / mse)).mean().item()


def write_taesd(folder: Path, variant: str, fmt: str = "pth", seed: int = 0) -> Path:
    """Random fp16 weights for `variant` in the published layout (plain Sequential keys)."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, make in (("encoder", make_encoder), ("decoder", make_decoder)):
        state = {k: v.half() for k, v in make(VARIANTS[variant], variant == "taef2").state_dict().items()}
        if fmt == "pth":
            torch.save(state, folder / f"{variant}_{part}.pth")
        else:
            save_file(state, str(folder / f"{variant}_{part}.safetensors"))
    return folder


# --- registry and the shared interface ---------------------------------------------------------------


def test_registry_errors_name_the_allowed_choices():
    assert set(AUTOENCODERS) == {"identity", "taesd", "diffusers", "own"}
    with pytest.raises(ValueError, match=r"unknown autoencoder 'vqgan'.*diffusers.*identity.*taesd"):
        build_autoencoder("vqgan")
    with pytest.raises(ValueError, match=r"unknown option 'size' for autoencoder 'identity'; allowed: channels"):
        build_autoencoder("identity", size=3)
    with pytest.raises(ValueError, match=r"needs option 'model'"):
        build_autoencoder("diffusers")
    with pytest.raises(ValueError, match=r"unknown TAESD variant 'taesd4'.*taef2"):
        build_autoencoder("taesd", variant="taesd4")
    with pytest.raises(ValueError, match=r"unknown dtype 'fp16'"):
        build_autoencoder("taesd", dtype="fp16")


def test_identity_round_trip_and_grayscale():
    ae = build_autoencoder("identity")
    assert isinstance(ae, Autoencoder) and not ae.training
    assert (ae.latent_channels, ae.downscale, ae.image_channels) == (3, 1, 3)
    x = torch.rand(5, 3, 7, 9) * 2 - 1
    assert torch.equal(ae.decode(ae.encode(x)), x)
    assert torch.equal(ae.decode(x * 3), (x * 3).clamp(-1, 1))
    gray = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.equal(ae.encode(gray), gray.repeat(1, 3, 1, 1))
    assert ae.encode(x.double()).dtype == torch.float32
    assert ae.latent_shape(28) == (3, 28, 28)
    mono = build_autoencoder(**json.loads(json.dumps(Identity(channels=1).spec())))
    assert mono.spec() == {"name": "identity", "channels": 1} and mono.latent_shape(5) == (1, 5, 5)
    with pytest.raises(ValueError, match="takes 1-channel images, got 3"):
        mono.encode(x)
    with pytest.raises(ValueError, match=r"takes 3-channel images \(or grayscale\), got 2"):
        ae.encode(x[:, :2])
    with pytest.raises(ValueError, match=r"latents must be \(B, 3, h, w\)"):
        ae.decode(x[:, :2])


def test_divisibility_errors_name_sizes_and_factor(tmp_path):
    ae = build_autoencoder("taesd", variant="taesd", weights=str(write_taesd(tmp_path, "taesd")))
    with pytest.raises(ValueError, match=r"image size 28x32 is not divisible by the downscale factor 8"):
        ae.encode(torch.zeros(1, 3, 28, 32))
    with pytest.raises(ValueError, match=r"image size 30x30 is not divisible by the downscale factor 8"):
        ae.latent_shape(30)
    assert ae.latent_shape(32) == (4, 4, 4)


# --- TAESD ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_taesd_every_variant_loads_and_has_its_shapes(tmp_path, fmt):
    write_taesd(tmp_path, "taef2", "pth")  # a .pth next to the .safetensors: the .safetensors wins
    for variant, channels in VARIANTS.items():
        write_taesd(tmp_path, variant, fmt, seed=1)
        ae = build_autoencoder("taesd", variant=variant, weights=str(tmp_path))
        assert not ae.training and not any(p.requires_grad for p in ae.parameters())
        assert (ae.latent_channels, ae.downscale, ae.image_channels) == (channels, 8, 3)
        x = torch.rand(3, 3, 16, 24) * 2 - 1
        z = ae.encode(x)
        assert z.shape == (3, channels, 2, 3) and z.dtype == torch.float32
        images = ae.decode(z)
        assert images.shape == (3, 3, 16, 24) and images.abs().max() <= 1
        gray = ae.encode(x[:, :1])
        assert torch.allclose(gray, ae.encode(x[:, :1].repeat(1, 3, 1, 1)))
        # The file's fp16 values, cast to float32.
        torch.manual_seed(1)
        reference = make_encoder(channels, variant == "taef2").state_dict()
        assert torch.equal(ae.encoder.state_dict()["0.weight"], reference["0.weight"].half().float())


def test_taesd_spec_rebuilds_an_equal_module_and_casts_dtype(tmp_path, monkeypatch):
    folder = write_taesd(tmp_path / "weights", "taesd3", "safetensors")
    monkeypatch.setenv("LIQUIDGEN_TAESD", str(folder))  # found through the environment...
    ae = build_autoencoder("taesd", variant="taesd3")
    spec = json.loads(json.dumps(ae.spec()))
    assert spec == {"name": "taesd", "variant": "taesd3", "weights": str(folder.resolve()), "dtype": "float32"}
    monkeypatch.delenv("LIQUIDGEN_TAESD")  # ...and rebuilt without it: spec records the folder used
    again = build_autoencoder(**spec)
    a, b = ae.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(ae.encode(x), again.encode(x))
    half = build_autoencoder(**{**spec, "dtype": "bfloat16"})
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    z = half.encode(x)  # float32 in, cast to bfloat16 inside, float32 out
    assert z.dtype == torch.float32 and torch.allclose(z, ae.encode(x), atol=0.1, rtol=0.1)


def test_taesd_missing_file_names_every_path_tried(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        TAESD("taef1", weights=str(tmp_path))
    message = str(info.value)
    for name in ("taef1_encoder.safetensors", "taef1_encoder.pth", "taef1_decoder.safetensors", "taef1_decoder.pth"):
        assert str(tmp_path / name) in message
    assert "github.com/madebyollin/taesd" in message
    write_taesd(tmp_path, "taesd")
    with pytest.raises(ValueError, match="is a file; pass the folder"):
        TAESD("taesd", weights=str(tmp_path / "taesd_encoder.pth"))
    monkeypatch.setenv("LIQUIDGEN_TAESD", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError) as info:
        TAESD("taef1")
    message = str(info.value)
    assert str(tmp_path / "env" / "taef1_encoder.pth") in message
    assert str(tmp_path / "home" / ".cache" / "liquidgen" / "taesd" / "taef1_decoder.pth") in message


def test_taesd_wrong_variant_and_invalid_files_are_clear_errors(tmp_path):
    write_taesd(tmp_path, "taesd")
    for part in ("encoder", "decoder"):  # SD weights under the FLUX.2 names
        (tmp_path / f"taesd_{part}.pth").rename(tmp_path / f"taef2_{part}.pth")
    with pytest.raises(ValueError, match=r"taef2_encoder.pth does not match the taef2 architecture: .*missing 11"
                                         r".*Is this a taef2 file\?"):
        TAESD("taef2", weights=str(tmp_path))

    bad = tmp_path / "bad"
    write_taesd(bad, "taesd")
    torch.save([torch.zeros(3)], bad / "taesd_encoder.pth")  # loadable, but a list
    with pytest.raises(ValueError, match=r"taesd_encoder.pth is not a state dict .* but a list.*is this a taesd"):
        TAESD("taesd", weights=str(bad))
    torch.save(torch.nn.Conv2d(1, 1, 1), bad / "taesd_encoder.pth")  # a pickled module: refused by weights_only
    with pytest.raises(ValueError, match=r"could not read .*taesd_encoder.pth.*is this a taesd file"):
        TAESD("taesd", weights=str(bad))
    (bad / "taesd_encoder.pth").unlink()
    (bad / "taesd_encoder.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"could not read .*taesd_encoder.safetensors"):
        TAESD("taesd", weights=str(bad))


def test_real_taef2_reconstructs_cifar10():
    """The published FLUX.2 tiny autoencoder, loaded by our architecture, reconstructs CIFAR-10 at 64x64
    (bicubic upsampling) at ~31 dB; a wrong layer order or a missing pool branch falls to <= 28."""
    if not (TAESD_WEIGHTS / "taef2_encoder.pth").is_file() or not CIFAR10.is_dir():
        pytest.skip(f"taef2 weights or CIFAR-10 not found under {TAESD_WEIGHTS.parents[2]}")
    ae = build_autoencoder("taesd", variant="taef2", weights=str(TAESD_WEIGHTS))
    x = to_float(load_dataset("cifar10", CIFAR10, limit=16).images)
    x = F.interpolate(x, size=64, mode="bicubic", align_corners=False).clamp(-1, 1)
    z = ae.encode(x)
    assert z.shape == (16, 32, 8, 8)
    assert psnr(ae.decode(z), x) >= 28


# --- diffusers -----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_vae(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, latent_channels=4, sample_size=16, scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path / "vae")
    return vae.eval(), tmp_path / "vae"


def test_diffusers_vae_matches_diffusers(tiny_vae):
    vae, folder = tiny_vae
    ae = build_autoencoder("diffusers", model=str(folder))
    assert (ae.latent_channels, ae.downscale, ae.image_channels) == (4, 2, 3)
    assert ae.latent_shape(16) == (4, 8, 8)
    assert not any(p.requires_grad for p in ae.parameters())
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    z = ae.encode(x)
    with torch.no_grad():  # unscaled, unshifted posterior mode; decode clamped
        assert torch.allclose(z, vae.encode(x).latent_dist.mode(), atol=1e-6)
        assert torch.allclose(ae.decode(z), vae.decode(z).sample.clamp(-1, 1), atol=1e-6)
    assert ae.encode(x[:, :1]).shape == (3, 4, 8, 8)
    spec = json.loads(json.dumps(ae.spec()))
    assert spec == {"name": "diffusers", "model": str(folder), "subfolder": None, "sample": False, "dtype": "float32"}
    assert torch.equal(build_autoencoder(**spec).encode(x), z)
    sampled = build_autoencoder(**{**spec, "sample": True}).encode(x)
    assert sampled.shape == z.shape and not torch.allclose(sampled, z)


def test_diffusers_vae_errors(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        build_autoencoder("diffusers", model=str(tmp_path / "nowhere"))
    (tmp_path / "repo").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "repo" / "vae")):
        build_autoencoder("diffusers", model=str(tmp_path / "repo"), subfolder="vae")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'liquidgen\[latent\]'"):
        build_autoencoder("diffusers", model=str(tmp_path))
