"""LiquidGen's fused Triton ops against the reference PyTorch path.

The fused tests run where the ops can: on CUDA with Triton (at LiquidGen-S size: width 512, 16x16 tokens,
batch 256), or on CPU under Triton's interpreter (TRITON_INTERPRET=1, small sizes); elsewhere they are
skipped. Errors are measured against a float64 evaluation of the same inputs: the fused bf16 result must be
about as close to it as the reference's own bf16 result. The choice tests run everywhere.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp

from liquidgen.flops import count_flops
from liquidgen.kernels import (
    INTERPRET,
    check_choice,
    forward_ad_active,
    fused_ops,
    triton_usable,
    use_fused,
    use_gelu_gemm,
)
from liquidgen.models import build_model
from liquidgen.models.liquid import ChannelMixMLP

OPS = fused_ops()
FUSED_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_fused = pytest.mark.skipif(OPS is None or not triton_usable(),
                                 reason="needs Triton with CUDA (or TRITON_INTERPRET=1)")
ON_GPU = FUSED_DEVICE == "cuda"
# (batch, width, groups, tokens): LiquidGen-S at its training batch on a GPU; small under the interpreter.
# A 14x14 grid (MNIST after patch 2) and 24 channels per group (LiquidGen-B's 768 / 32) cover masked tiles.
SHAPES = [(256, 512, 32, 16), (64, 768, 32, 14)] if ON_GPU else [(2, 64, 4, 5), (3, 48, 2, 7)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


def check_against_float64(fused, reference, inputs: list[torch.Tensor]) -> None:
    """fused(*inputs) and reference(*inputs) at the inputs' precision, both against reference in float64:
    outputs and every input gradient of the fused op within 2x the reference's error (+ float32 slack)."""
    poison_cache(inputs[0])
    g = torch.Generator(device=inputs[0].device).manual_seed(3)
    results = {}
    for name, fn, cast in (("fused", fused, None), ("torch", reference, None), ("f64", reference, torch.float64)):
        xs = leaves(*(t if cast is None else t.to(cast) for t in inputs))
        out = fn(*xs)
        if name == "fused":
            grad = torch.randn(out.shape, generator=g, device=out.device)
        out.backward(grad.to(out.dtype))
        results[name] = [out] + [x.grad for x in xs]
    for i, (f, t, exact) in enumerate(zip(results["fused"], results["torch"], results["f64"])):
        if exact is None:  # an input the op does not use
            assert f is None and t is None
            continue
        assert torch.isfinite(f).all(), "the fused op wrote NaN or left memory unwritten"
        limit = 2 * rel(t, exact) + 1e-5
        assert rel(f, exact) <= limit, f"{'output' if i == 0 else f'grad of input {i - 1}'}: " \
                                       f"fused error {rel(f, exact):.2e}, reference error {rel(t, exact):.2e}"


def poison_cache(like: torch.Tensor, blocks: int = 6) -> None:
    """Leave NaN-filled blocks of `like`'s size (at its dtype and at float32) free in the CUDA caching
    allocator, which hands them to the next allocations of that size: an output element a kernel never
    writes then shows up as NaN instead of a plausible stale value."""
    if ON_GPU:
        nan = [torch.full(like.shape, float("nan"), device="cuda", dtype=dtype)
               for dtype in (like.dtype, torch.float32) for _ in range(blocks)]
        del nan


def reference_adagn(x, ss, groups):
    scale, shift = ss[:, :, None, None].chunk(2, dim=1)
    return F.group_norm(x, groups, eps=1e-5) * (1 + scale) + shift


@needs_fused
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_adagn_matches_reference(shape, dtype):
    b, c, groups, n = shape
    x = (torch.randn(b, c, n, n, device=FUSED_DEVICE) * 2 + 0.5).to(dtype)
    ss = torch.randn(b, 2 * c, device=FUSED_DEVICE).to(dtype)
    check_against_float64(lambda x, ss: OPS.adagn(x, ss, groups)[0],
                          lambda x, ss: reference_adagn(x, ss, groups), [x, ss])


@needs_fused
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_gated_gelu_matches_reference_across_layouts(shape, dtype):
    """v channels-last (the depthwise conv's output), g a channel slice of an NCHW tensor (the gate)."""
    b, c, _, n = shape
    v = torch.randn(b, c, n, n, device=FUSED_DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    expanded = torch.randn(b, 2 * c, n, n, device=FUSED_DEVICE).to(dtype)

    def run(op):
        return lambda v, e: op(v, e[:, c:])

    check_against_float64(run(OPS.gated_gelu), run(lambda v, g: F.gelu(v) * torch.sigmoid(g)), [v, expanded])
    out = OPS.gated_gelu(v, expanded[:, c:])
    dv, _ = torch.ops.liquidgen.gated_gelu_backward(torch.randn_like(out), v, expanded[:, c:])
    assert out.is_contiguous() and dv.is_contiguous(memory_format=torch.channels_last)


@needs_fused
@pytest.mark.parametrize("two", [False, True], ids=["blend2", "blend1(local+scan)"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_blend_matches_reference(shape, dtype, two):
    b, c, _, n = shape
    x, s1, s2 = (torch.randn(b, c, n, n, device=FUSED_DEVICE).to(dtype) for _ in range(3))
    s1 = s1.contiguous(memory_format=torch.channels_last)  # any layout of the stimulus is read as it is
    rho = torch.randn(c, device=FUSED_DEVICE)

    def fused(x, s1, s2, rho):
        return OPS.blend(x, s1, s2 if two else None, torch.exp(-F.softplus(rho)))

    def reference(x, s1, s2, rho):
        a = torch.exp(-F.softplus(rho)).to(x.dtype)[None, :, None, None]
        return a * x + (1 - a) * (s1 + s2 if two else s1)

    check_against_float64(fused, reference, [x, s1, s2, rho])


@needs_fused
def test_ops_pass_torch_library_opcheck():
    """Schema, fake (meta) kernels, autograd registration and AOT dispatch as torch.compile uses them."""
    d = FUSED_DEVICE
    x, ss = torch.randn(2, 8, 3, 5, device=d, requires_grad=True), torch.randn(2, 16, device=d, requires_grad=True)
    torch.library.opcheck(torch.ops.liquidgen.adagn, (x, ss, 4))
    v = torch.randn(2, 8, 3, 5, device=d).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.liquidgen.gated_gelu, (v, torch.randn(2, 8, 3, 5, device=d, requires_grad=True)))
    a = torch.rand(8, device=d, requires_grad=True)
    for s2 in (None, torch.randn(2, 8, 3, 5, device=d, requires_grad=True)):
        torch.library.opcheck(torch.ops.liquidgen.blend, (x, torch.randn_like(x, requires_grad=True), s2, a))


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised layers (AdaGN projections, the output head) get random weights, so every op matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def model_pair(preset: str, channels: int, size: int, classes: int, kernels: str = "triton"):
    """The reference model and a copy of it with kernel option `kernels`, on the fused device."""
    torch.manual_seed(0)
    reference = randomized(build_model("liquid", preset, channels, size, classes, kernels="torch"))
    fused = build_model("liquid", preset, channels, size, classes, kernels=kernels)
    fused.load_state_dict(reference.state_dict())
    return reference.to(FUSED_DEVICE), fused.to(FUSED_DEVICE)


def model_step(model, x, t, y, grad, dtype):
    """Output and (input, parameter) gradients of one forward + backward, under autocast at bf16."""
    model.zero_grad(set_to_none=True)
    x = x.detach().to(dtype).requires_grad_()
    with torch.autocast(x.device.type, torch.bfloat16, enabled=dtype != torch.float64):
        out = model(x, t, y)
    out.backward(grad.to(out.dtype))
    return out, x.grad, {n: p.grad for n, p in model.named_parameters()}


@needs_fused
def test_whole_model_forward_and_backward_agree():
    """LiquidGen-S (tiny under the interpreter), bf16 autocast: the fused model's output, input gradient and
    every parameter's gradient are as close to a float64 reference as the reference path's own bf16 run."""
    preset, (channels, size, classes), batch = ("S", (16, 32, 27), 32) if ON_GPU else ("tiny", (4, 8, 5), 2)
    reference, fused = model_pair(preset, channels, size, classes)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, channels, size, size, generator=g).to(FUSED_DEVICE)
    t = torch.rand(batch, generator=g).to(FUSED_DEVICE)
    y = torch.randint(0, classes, (batch,), generator=g).to(FUSED_DEVICE)
    grad = torch.randn(x.shape, generator=g).to(FUSED_DEVICE)
    ours = model_step(fused, x, t, y, grad, torch.float32)
    theirs = model_step(reference, x, t, y, grad, torch.float32)
    exact = model_step(reference.double(), x, t, y, grad, torch.float64)
    for name, f, r, e in (("output", ours[0], theirs[0], exact[0]), ("input grad", ours[1], theirs[1], exact[1])):
        assert rel(f, e) <= 2 * rel(r, e) + 1e-4, f"{name}: fused {rel(f, e):.2e} vs reference {rel(r, e):.2e}"
    for name, e in exact[2].items():
        f, r = ours[2][name], theirs[2][name]
        assert rel(f, e) <= 2 * rel(r, e) + 1e-3, f"grad of {name}: fused {rel(f, e):.2e} vs reference {rel(r, e):.2e}"


@needs_fused
def test_fused_model_compiles_fullgraph_and_matches_eager(no_tf32):
    _, fused = model_pair("tiny", 4, 8, 5)
    x, t, y = torch.randn(2, 4, 8, 8, device=FUSED_DEVICE), torch.rand(2, device=FUSED_DEVICE), None
    compiled = torch.compile(fused, fullgraph=True)
    assert rel(compiled(x, t, y), fused(x, t, y)) < 1e-4
    compiled(x, t, y).square().mean().backward()
    assert all(p.grad is not None for p in fused.parameters() if p.requires_grad)


@needs_fused
def test_auto_runs_the_reference_path_inside_torch_compile():
    """Compiled, `auto` leaves the chain to torch.compile's own fusion (measured faster); eager, it fuses."""
    x = torch.randn(3, device=FUSED_DEVICE)
    assert use_fused("auto", x)
    assert torch.compile(lambda x: x + use_fused("auto", x), fullgraph=True)(x).equal(x)


@pytest.fixture
def no_tf32():
    """float32 convolutions and matrix products in full precision: eager cuDNN and compiled code may pick
    different TF32 kernels, whose results differ by ~1e-3."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@needs_fused
def test_forward_mode_ad_takes_the_reference_path_under_auto():
    """sCM's torch.func.jvp through a model on the fused device: `auto` falls back, and the JVP is the
    reference model's."""
    reference, auto = model_pair("tiny", 4, 8, 5, kernels="auto")
    x, t = torch.randn(2, 4, 8, 8, device=FUSED_DEVICE), torch.rand(2, device=FUSED_DEVICE)
    tangents = (torch.randn_like(x), torch.ones_like(t))
    out, dout = jvp(lambda x, t: auto(x, t), (x, t), tangents)
    ref, dref = jvp(lambda x, t: reference(x, t), (x, t), tangents)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(dout, dref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuBLASLt's GELU epilogue runs on CUDA")
@pytest.mark.parametrize("compiled", [False, True])
def test_sampling_mlp_with_the_gelu_in_the_gemm_matches_the_reference(compiled):
    """LiquidGen-S sampling at MNIST's 7x7 tokens under bf16 autocast: `auto` takes the epilogue MLP (tanh GELU),
    and its output is as close to a float64 reference as the reference path's own bf16 output; with gradients on
    (training) it keeps the reference, the fused op having no backward."""
    torch.manual_seed(0)
    auto = randomized(build_model("liquid", "S", 1, 28, 10, patch_size=4)).cuda().eval()
    reference = build_model("liquid", "S", 1, 28, 10, patch_size=4, kernels="torch").cuda().eval()
    reference.load_state_dict(auto.state_dict())
    x, t = torch.randn(64, 1, 28, 28, device="cuda"), torch.rand(64, device="cuda")
    y = torch.arange(64, device="cuda") % 10
    with torch.no_grad():
        exact = reference.double()(x.double(), t.double(), y).float()
        reference.float()
        run = torch.compile(auto) if compiled else auto
        with torch.autocast("cuda", torch.bfloat16):
            assert use_gelu_gemm("auto", x) and not use_gelu_gemm("torch", x)
            ours, theirs = run(x, t, y).float(), reference(x, t, y).float()
    assert exact.abs().mean() > 1e-2  # a zero head would make any two paths agree
    assert rel(ours, exact) <= 2 * rel(theirs, exact) + 1e-3, f"{rel(ours, exact):.2e} vs {rel(theirs, exact):.2e}"
    with torch.autocast("cuda", torch.bfloat16):
        assert not use_gelu_gemm("auto", x)


# --- the choice of path: runs everywhere -------------------------------------------------------------


def test_tokenwise_mlp_is_the_mlp_and_counts_its_flops():
    """The sampling MLP's token GEMMs compute the 1x1 convs' result (on CPU the epilogue op's GELU is the exact
    one) and count the same FLOPs, so a sampling MFU stays comparable."""
    torch.manual_seed(0)
    mlp = ChannelMixMLP(24, 4.0)
    x = torch.randn(3, 24, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(mlp.tokenwise(x), mlp(x), rtol=1e-5, atol=1e-5)
        assert count_flops(lambda: mlp.tokenwise(x)) == count_flops(lambda: mlp(x)) == 2 * 2 * 3 * 30 * 24 * 96


def test_gelu_gemm_is_sampling_on_cuda_only():
    x = torch.randn(2, 3)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        assert not use_gelu_gemm("auto", x)  # CPU
    assert not use_gelu_gemm("auto", torch.randn(2, device="meta"))


@pytest.mark.skipif(INTERPRET, reason="the interpreter makes CPU tensors eligible for the fused ops")
def test_auto_picks_the_reference_path_on_cpu():
    assert not use_fused("auto", torch.randn(2, 3))
    torch.manual_seed(0)
    auto = build_model("liquid", "tiny", 1, 8, 3)
    forced = build_model("liquid", "tiny", 1, 8, 3, kernels="torch")
    forced.load_state_dict(auto.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    torch.testing.assert_close(auto(x, t), forced(x, t), rtol=0, atol=0)


@pytest.mark.skipif(triton_usable(), reason="Triton and CUDA (or the interpreter) are present here")
def test_forcing_triton_without_it_fails_in_one_line():
    with pytest.raises(ValueError, match="kernels=triton needs Triton and a CUDA device") as error:
        build_model("liquid", "tiny", 1, 8, 3, kernels="triton")
    assert "\n" not in str(error.value)


def test_unknown_kernel_choice_is_named():
    with pytest.raises(ValueError, match="kernels must be one of"):
        check_choice("fast")
    with pytest.raises(ValueError, match="kernels must be one of"):
        build_model("liquid", "tiny", 1, 8, 3, kernels="cuda")


def test_forward_mode_ad_is_detected():
    x = torch.randn(3)
    seen = []
    jvp(lambda x: seen.append(forward_ad_active(x)) or x * 2, (x,), (torch.ones(3),))
    assert seen == [True] and not forward_ad_active(x)
    with torch.autograd.forward_ad.dual_level():
        assert forward_ad_active(torch.autograd.forward_ad.make_dual(x, torch.ones(3)))
