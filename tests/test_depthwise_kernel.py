"""The Triton depthwise conv (kernels.depthwise) against F.conv2d(groups=C).

Like tests/test_liquid_kernels.py: on CUDA with Triton at LiquidGen-S size (batch 256, 512 channels, 16x16 for
the 7x7 conv, 1x256 for the scan's 1x31), or on CPU under Triton's interpreter (TRITON_INTERPRET=1) at small
sizes; skipped elsewhere. Output and the input, weight and bias gradients must be about as close to a float64
evaluation as F.conv2d's own result at the inputs' precision.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_liquid_kernels import FUSED_DEVICE, ON_GPU, check_against_float64, rel

from liquidgen.kernels import HAVE_TRITON, triton_usable

if HAVE_TRITON:  # the ops module imports Triton at the top
    from liquidgen.kernels.depthwise import depthwise_conv

needs_fused = pytest.mark.skipif(not HAVE_TRITON or not triton_usable(),
                                 reason="needs Triton with CUDA (or TRITON_INTERPRET=1)")

# (batch, channels, height, width, kernel). On a GPU: LiquidGen-S's two convs, then -B's width on MNIST's 14x14
# grid (196 positions, a partial tile) and 200 channels (a partial channel block). Under the interpreter: a
# partial tile of positions and of channels each, and a batch whose weight gradient spans two chunks.
SHAPES = ([(256, 512, 16, 16, (7, 7)), (256, 512, 1, 256, (1, 31)), (64, 768, 14, 14, (7, 7)),
           (64, 768, 1, 196, (1, 31)), (8, 200, 14, 14, (7, 7))] if ON_GPU else
          [(2, 48, 5, 7, (7, 7)), (3, 40, 1, 37, (1, 31)), (4, 16, 9, 9, (7, 7)), (2, 72, 4, 6, (3, 5))])


def inputs(shape, dtype, channels_last: bool = True):
    b, c, h, w, (kh, kw) = shape
    x = torch.randn(b, c, h, w, device=FUSED_DEVICE).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(c, 1, kh, kw, device=FUSED_DEVICE) / (kh * kw) ** 0.5).to(dtype)
    bias = torch.randn(c, device=FUSED_DEVICE).to(dtype)
    return x, weight, bias, (kh // 2, kw // 2)


@needs_fused
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-k{s[4][0]}x{s[4][1]}")
def test_matches_conv2d_in_float64(shape, dtype, with_bias):
    """Output and the gradients of x, weight and bias (when there is one)."""
    x, weight, bias, padding = inputs(shape, dtype)
    groups = x.shape[1]
    if with_bias:
        check_against_float64(lambda x, w, b: depthwise_conv(x, w, b, padding),
                              lambda x, w, b: F.conv2d(x, w, b, padding=padding, groups=groups), [x, weight, bias])
    else:
        check_against_float64(lambda x, w: depthwise_conv(x, w, None, padding),
                              lambda x, w: F.conv2d(x, w, None, padding=padding, groups=groups), [x, weight])


@needs_fused
def test_layouts_and_dtypes():
    """An NCHW input is read as channels-last; the output and dx are channels-last in x's dtype; fp32 weights
    with a bf16 input (as under autocast) get fp32 gradients."""
    x, weight, bias, padding = inputs(SHAPES[0], torch.bfloat16, channels_last=False)
    x.requires_grad_()
    weight, bias = weight.float().requires_grad_(), bias.float().requires_grad_()
    y = depthwise_conv(x, weight, bias, padding)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    ref = F.conv2d(x.float(), weight, bias, padding=padding, groups=x.shape[1])
    assert rel(y, ref) < 1e-2
    dx, dw, db = torch.autograd.grad(y, (x, weight, bias), torch.randn_like(y))  # as the op returns them
    assert dx.dtype == torch.bfloat16 and dx.is_contiguous(memory_format=torch.channels_last)
    assert dw.dtype == db.dtype == torch.float32


@needs_fused
def test_weight_gradient_is_deterministic():
    """Partial sums added by torch, no atomics: two runs agree bit for bit."""
    x, weight, _, _ = inputs(SHAPES[0], torch.bfloat16)
    dy = torch.randn_like(x)
    first = torch.ops.liquidgen.depthwise_conv_weight_grad(dy, x, list(weight.shape[2:]))
    second = torch.ops.liquidgen.depthwise_conv_weight_grad(dy, x, list(weight.shape[2:]))
    assert all(a.equal(b) for a, b in zip(first, second))


@needs_fused
def test_rejects_what_it_does_not_compute():
    x = torch.randn(2, 8, 5, 5, device=FUSED_DEVICE)
    with pytest.raises(ValueError, match="odd kernels with 'same' padding"):
        depthwise_conv(x, torch.randn(8, 1, 4, 4, device=FUSED_DEVICE), None, (2, 2))
    with pytest.raises(ValueError, match="odd kernels with 'same' padding"):
        depthwise_conv(x, torch.randn(8, 1, 3, 3, device=FUSED_DEVICE), None, (0, 0))
    with pytest.raises(ValueError, match=r"weight \(C, 1, kh, kw\)"):
        depthwise_conv(x, torch.randn(4, 1, 3, 3, device=FUSED_DEVICE), None, (1, 1))


@needs_fused
@pytest.mark.parametrize("kernel", [(7, 7), (1, 31)])
def test_passes_torch_library_opcheck(kernel):
    """Schema, fake (meta) kernels, autograd registration and AOT dispatch as torch.compile uses them."""
    d = FUSED_DEVICE
    kh, kw = kernel
    h, w = (5, 6) if kh > 1 else (1, 33)
    x = torch.randn(2, 8, h, w, device=d).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(8, 1, kh, kw, device=d, requires_grad=True)
    for bias in (torch.randn(8, device=d, requires_grad=True), None):
        torch.library.opcheck(torch.ops.liquidgen.depthwise_conv, (x, weight, bias, [kh // 2, kw // 2]))
    torch.library.opcheck(torch.ops.liquidgen.depthwise_conv_weight_grad, (torch.randn_like(x), x.detach(), [kh, kw]))


@needs_fused
def test_compiles_fullgraph_and_matches_eager():
    x, weight, bias, padding = inputs(SHAPES[0], torch.float32)

    def step(x, weight, bias):
        return F.gelu(depthwise_conv(x * 2, weight, bias, padding)).square().mean()

    results = []
    for fn in (step, torch.compile(step, fullgraph=True)):
        xs = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        loss = fn(*xs)
        loss.backward()
        results.append([loss] + [t.grad for t in xs])
    for eager, compiled in zip(*results):
        assert rel(compiled, eager) < 1e-5
