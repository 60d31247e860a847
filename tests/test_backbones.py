"""Every backbone behind the one interface: shapes, sizes, conditioning, null paths, forward-mode AD."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp
from torch.utils._python_dispatch import TorchDispatchMode

from liquidgen.models import BACKBONES, build_model
from liquidgen.models.attention import attention, math_attention
from liquidgen.models.dit import sincos_2d

TLD_STYLE = dict(adaln=False, cross_attention=True, mlp_conv=True, pos_embed="learned", context_dim=12)
TINY = [("liquid", "tiny", {}), ("dit", "tiny", {}), ("dit", "tiny", TLD_STYLE), ("unet", "tiny", {}),
        ("fixed_point", "dit-tiny", {}), ("fixed_point", "liquid-tiny", {})]
IDS = ["liquid", "dit", "dit-tld", "unet", "fp-dit", "fp-liquid"]


def randomize(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give zero-initialised layers (adaLN-Zero, output heads) random weights, so that every input
    path reaches the output - at initialisation most of them are deliberately cut."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def build(name, preset, options, channels=1, size=8, classes=3, **extra):
    return build_model(name, preset, channels, size, classes, **{**options, **extra})


@pytest.mark.parametrize("name,preset,options", TINY, ids=IDS)
@pytest.mark.parametrize("channels,size,classes", [(1, 16, 10), (3, 12, 0), (4, 8, 2)])
def test_forward_shape(name, preset, options, channels, size, classes):
    model = build(name, preset, options, channels, size, classes)
    x = torch.randn(2, channels, size, size)
    y = torch.tensor([0, classes]) if classes else None
    out = model(x, torch.rand(2), y)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name,preset,options", TINY, ids=IDS)
def test_output_starts_at_zero(name, preset, options):
    """Zero-initialised output layers: the first loss is the target's variance, whatever the backbone."""
    model = build(name, preset, options)
    assert model(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1])).abs().max() == 0


@pytest.mark.parametrize("name,preset,options", TINY, ids=IDS)
def test_time_class_and_null_class_reach_the_output(name, preset, options):
    model = randomize(build(name, preset, options)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    base = model(x, t, torch.tensor([0, 0]))
    assert not torch.allclose(base, model(x, t, torch.tensor([1, 1])), atol=1e-6)
    assert not torch.allclose(base, model(x, torch.full((2,), 0.9), torch.tensor([0, 0])), atol=1e-6)
    null = torch.full((2,), model.null_class)
    assert not torch.allclose(base, model(x, t, null), atol=1e-6)  # its own embedding, not class 0
    torch.testing.assert_close(model(x, t, None), model(x, t, null))


@pytest.mark.parametrize("name,preset", [("liquid", "tiny"), ("dit", "tiny"), ("unet", "tiny")])
@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("mlp", [False, True])
def test_text_context_reaches_the_output_and_none_is_the_null_context(name, preset, tokens, mlp):
    extra = dict(context_dim=6, context_mlp=mlp) | (dict(cross_attention=True) if name == "dit" else {})
    model = randomize(build(name, preset, {}, classes=0, **extra)).eval()
    # the pooled text's embedding into c: affine as one linear map, not with the MLP
    a, b, zero = torch.randn(1, 6), torch.randn(1, 6), torch.zeros(1, 6)
    f = model.context_embed
    assert torch.allclose(f(a) + f(b) - f(zero), f(a + b), atol=1e-5) != mlp
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    context = torch.randn(2, 5, 6) if tokens else torch.randn(2, 6)
    assert not torch.allclose(model(x, t, None, context), model(x, t, None, None), atol=1e-6)
    null = model.null_context.expand(2, 1, 6) if tokens else model.null_context.expand(2, 6)
    torch.testing.assert_close(model(x, t, None, null), model(x, t, None, None))
    with pytest.raises(ValueError, match="expects 6"):
        model(x, t, None, torch.randn(2, 7))


@pytest.mark.parametrize("name,preset,extra", [("liquid", "tiny", {}), ("unet", "tiny", {}),
                                                ("dit", "tiny", dict(cross_attention=True))])
@pytest.mark.parametrize("tokens", [False, True])
def test_standardized_context_is_the_plain_models_on_z_scored_features(name, preset, extra, tokens):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(200, 5, 6, generator=g) * torch.tensor([1.0, 2, 3, 4, 5, 0]) + 7  # one constant feature
    mask = torch.rand(200, 5, generator=g) < 0.7 if tokens else None
    standard = randomize(build(name, preset, {}, classes=0, context_dim=6, standardize_context=True, **extra)).eval()
    standard.fit_context(data if tokens else data[:, 0], mask)
    rows = data[mask] if tokens else data[:, 0]
    torch.testing.assert_close(standard.context_mean, rows.mean(0))
    spread = rows.std(0)
    torch.testing.assert_close(standard.context_std[:5], spread[:5])
    assert standard.context_std[5] == pytest.approx(0.01 * float(spread.mean()))  # constant: bounded, not 0
    plain = build(name, preset, {}, classes=0, context_dim=6, **extra).eval()
    plain.load_state_dict({k: v for k, v in standard.state_dict().items() if k not in ("context_mean", "context_std")})
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    context = data[:3] if tokens else data[:3, 0]
    z = (context - standard.context_mean) / standard.context_std
    torch.testing.assert_close(standard(x, t, None, context), plain(x, t, None, z))
    # the null context goes through the same map, as the unconditional half of guidance must
    torch.testing.assert_close(standard(x, t, None, None),
                               plain(x, t, None, ((standard.null_context - standard.context_mean)
                                                  / standard.context_std).expand(3, 6)))
    assert {"context_mean", "context_std"} <= set(standard.state_dict())  # saved with the weights


def test_standardize_context_needs_a_context_and_fit_context_the_option():
    with pytest.raises(ValueError, match="standardize_context needs a text context"):
        build("liquid", "tiny", {}, classes=3, standardize_context=True)
    with pytest.raises(ValueError, match="standardize_context"):
        build("liquid", "tiny", {}, classes=0, context_dim=6).fit_context(torch.randn(4, 6))


def test_context_needs_context_dim():
    model = build_model("dit", "tiny", 1, 8, 0)
    with pytest.raises(ValueError, match="without text conditioning"):
        model(torch.randn(1, 1, 8, 8), torch.rand(1), None, torch.randn(1, 4))


@pytest.mark.parametrize("preset,paper", [("S", 33.0e6), ("B", 130.5e6)])
def test_dit_sizes_match_the_paper(preset, paper):
    """DiT-S/2 and DiT-B/2 at ImageNet-256 latents (DiT Table 4; ours predicts no sigma channels)."""
    with torch.device("meta"):
        model = build_model("dit", preset, 4, 32, 1000)
    assert abs(model.num_params() - paper) / paper < 0.01


def test_unet_cifar_preset_matches_ddpm_size():
    with torch.device("meta"):
        model = build_model("unet", "32", 3, 32, 0)
    assert abs(model.num_params() - 35.7e6) / 35.7e6 < 0.02  # DDPM's CIFAR-10 network, 35.7M


def test_every_registered_preset_builds_at_its_native_size():
    for name, (_, presets, native) in BACKBONES.items():
        assert set(native) == set(presets), name
        for preset in presets:
            with torch.device("meta"):
                build_model(name, preset, *native[preset])


def test_unet_handles_mnist_odd_resolutions():
    model = build_model("unet", "28", 1, 28, 10)  # 28 -> 14 -> 7, attention at 7x7
    x = torch.randn(1, 1, 28, 28)
    assert model(x, torch.rand(1), torch.tensor([3])).shape == x.shape
    model = build_model("unet", "tiny", 1, 10, 0)  # 10 -> 5 -> back to 10
    assert model(torch.randn(1, 1, 10, 10), torch.rand(1)).shape == (1, 1, 10, 10)


@pytest.mark.parametrize("name,preset,size,layers", [("unet", "28", 28, 6), ("dit", "tiny", 16, None)])
def test_attention_reaches_sdpa_fused_kernel_under_bf16(name, preset, size, layers):
    """q, k and v reach SDPA with a contiguous head dim. Without it SDPA falls back to its math path, which runs
    bf16 attention as fp32 matmuls: UNet-28's six 7x7 attentions were fp32 GEMMs in an H100 profile of its
    sampling. The CPU's fused kernel has the same stride rule as CUDA's, so the choice made here is the GPU's."""
    ops = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append((str(func), [a.dtype for a in args if isinstance(a, torch.Tensor)]))
            return func(*args, **(kwargs or {}))
    model = randomize(build_model(name, preset, 1, size, 10)).eval()
    x, t, y = torch.randn(2, 1, size, size), torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), Record():
        out = model(x, t, y)
    fused = [dtypes for op, dtypes in ops if "scaled_dot_product" in op]
    assert fused and all(d == torch.bfloat16 for dtypes in fused for d in dtypes)
    assert layers is None or len(fused) == layers
    assert not [op for op, _ in ops if "bmm" in op]
    with torch.no_grad():
        reference = model(x, t, y)
    assert (out.float() - reference).norm() <= 0.05 * reference.norm()


def test_unet_uses_group_norm_never_batch_norm():
    model = build_model("unet", "28", 1, 28, 10)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)


def test_logvar_head():
    model = randomize(build_model("unet", "tiny", 1, 8, 0))
    t = torch.tensor([0.1, 0.5, 0.9])
    out = model.logvar(t)
    assert out.shape == (3,) and len(set(out.tolist())) == 3
    with pytest.raises(ValueError, match="logvar"):
        build_model("dit", "tiny", 1, 8, 0).logvar(t)
    assert build_model("dit", "tiny", 1, 8, 0, logvar=True).logvar(t).shape == (3,)


def test_sincos_table_is_dit_layout():
    table = sincos_2d(8, 3, 5)[0]  # (8, 3, 5)
    # rows in the first half of the channels, columns in the second; position 0 is (sin 0, cos 0)
    torch.testing.assert_close(table[:, 0, 0], torch.tensor([0., 0, 1, 1, 0, 0, 1, 1]))
    assert torch.allclose(table[:4, 1, 0], table[:4, 1, 4]) and not torch.allclose(table[4:, 1, 0], table[4:, 1, 4])


@pytest.mark.parametrize("name,preset,options", [("dit", "tiny", {}), ("dit", "tiny", {"pos_embed": "learned"}),
                                                 ("liquid", "tiny", {})])
def test_position_embedding_interpolates_at_twice_the_resolution(name, preset, options):
    from liquidgen.models.base import resize_positions

    model = randomize(build(name, preset, options, size=16)).eval()
    x = torch.randn(2, 1, 32, 32)
    out = model(x, torch.rand(2), torch.tensor([0, 1]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    table = model.pos_embed
    assert resize_positions(table, *table.shape[-2:]) is table
    if options.get("pos_embed", "sincos") == "sincos" and name == "dit":
        # A smooth table resampled to 2x and averaged back over 2x2 cells returns to itself.
        up = resize_positions(table, 2 * table.shape[-2], 2 * table.shape[-1])
        torch.testing.assert_close(F.avg_pool2d(up, 2)[..., 1:-1, 1:-1], table[..., 1:-1, 1:-1],
                                   atol=0.08, rtol=0)


def test_math_attention_matches_sdpa():
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    torch.testing.assert_close(math_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_attention_takes_the_math_path_under_jvp():
    q = torch.randn(2, 4, 10, 8)
    with pytest.raises(Exception, match="forward AD|not implemented|derivative"):
        jvp(lambda q: F.scaled_dot_product_attention(q, q, q), (q,), (torch.ones_like(q),))
    out, tangent = jvp(lambda q: attention(q, q, q), (q,), (torch.ones_like(q),))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q))
    assert torch.isfinite(tangent).all()


@pytest.mark.parametrize("name,preset,options", TINY, ids=IDS)
def test_jvp_matches_finite_differences(name, preset, options):
    """torch.func.jvp through the whole backbone in fp32 (what sCM's consistency training does),
    against central differences of a float64 copy, along a joint direction in (x, t)."""
    model = randomize(build(name, preset, options)).eval()
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([0, 2])
    dx, dt = torch.randn_like(x), torch.tensor([0.5, -1.0])
    _, tangent = jvp(lambda x, t: model(x, t, y), (x, t), (dx, dt))

    model64, h = copy.deepcopy(model).double(), 1e-5
    x64, t64, dx64, dt64 = x.double(), t.double(), dx.double(), dt.double()
    with torch.no_grad():
        fd = (model64(x64 + h * dx64, t64 + h * dt64, y) - model64(x64 - h * dx64, t64 - h * dt64, y)) / (2 * h)
    assert tangent.abs().max() > 1e-3  # the test is not vacuous
    err = (tangent.double() - fd).norm() / fd.norm()
    assert err < 1e-3, err
