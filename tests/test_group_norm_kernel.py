"""The fused GroupNorm + affine + SiLU sampling kernel (kernels.group_norm) and the UNet's `kernels` option.

Like tests/test_liquid_kernels.py: on CUDA with Triton at UNet-28's sampling sizes, or on CPU under Triton's
interpreter (TRITON_INTERPRET=1) at small ones; skipped elsewhere. The kernel is forward-only, so training
must keep the reference path whatever the option says.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_liquid_kernels import FUSED_DEVICE, ON_GPU, rel

from liquidgen.kernels import HAVE_TRITON, triton_usable
from liquidgen.models.base import group_norm_primitives
from liquidgen.models.unet import UNet

if HAVE_TRITON:  # the ops module imports Triton at the top
    from liquidgen.kernels.group_norm import group_norm_act

needs_fused = pytest.mark.skipif(not HAVE_TRITON or not triton_usable(),
                                 reason="needs Triton with CUDA (or TRITON_INTERPRET=1)")

# (batch, channels, height, width, groups). On a GPU: UNet-28's norms at 28x28, 14x14 and 7x7 (192 and 256: the up
# path's concatenated skips) for a guided 2,000-row batch. Under the interpreter: powers of two (groups folded by a
# reshape), a partial tile of positions, channels that are no power of two and a group size of 3 (folded by the
# membership mask).
SHAPES = ([(4000, 64, 28, 28, 32), (4000, 192, 28, 28, 32), (4000, 256, 14, 14, 32), (4000, 128, 7, 7, 32)]
          if ON_GPU else
          [(3, 64, 7, 7, 32), (2, 256, 3, 3, 32), (2, 12, 5, 3, 4), (2, 96, 9, 9, 32), (2, 6, 4, 4, 2)])


def reference(x, a, s, groups, silu, eps=1e-5):
    y = group_norm_primitives(x.double(), groups, eps=eps) * a.double()[:, :, None, None] + s.double()[:, :, None, None]
    return F.silu(y) if silu else y


@needs_fused
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_act_matches_float64(shape, channels_last, dtype):
    """Against float64: as close as the input's own rounding allows (bf16 output: its rounding, 2^-8), and y
    keeps x's layout so that a compiled graph needs no copy around the op."""
    b, c, h, w, groups = shape
    g = torch.Generator(device=FUSED_DEVICE).manual_seed(0)
    x = (torch.randn(b, c, h, w, device=FUSED_DEVICE, generator=g) * 3 + 1).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a = torch.randn(b, c, device=FUSED_DEVICE, generator=g)
    s = torch.randn(b, c, device=FUSED_DEVICE, generator=g)
    for silu in (True, False):
        y = group_norm_act(x, a, s, groups, silu, 1e-5)
        assert y.dtype == dtype and y.stride() == x.stride()
        assert rel(y, reference(x, a, s, groups, silu)) < (1e-6 if dtype == torch.float32 else 8e-3)


@needs_fused
def test_group_norm_act_rejects_mismatched_scales():
    x = torch.randn(2, 8, 3, 3, device=FUSED_DEVICE)
    with pytest.raises(ValueError, match="group_norm_act"):
        group_norm_act(x, torch.ones(2, 4, device=FUSED_DEVICE), torch.zeros(2, 4, device=FUSED_DEVICE), 4, True, 1e-5)


def tiny_unet(kernels: str) -> UNet:
    torch.manual_seed(0)
    model = UNet(1, 12, 10, width=16, mults=(1, 2), blocks=1, attention_res=(6,), groups=8, kernels=kernels)
    for p in model.parameters():  # away from the zero-initialised start, so every norm's output matters
        torch.nn.init.normal_(p, std=0.2)
    return model.to(FUSED_DEVICE)


@needs_fused
def test_unet_samples_with_the_fused_norms_and_trains_with_the_reference():
    """kernels=triton: sampling (no grad) takes the fused path - the same output as kernels=torch, and the op
    is called - while a forward under autograd takes the reference and backpropagates."""
    fused, plain = tiny_unet("triton"), tiny_unet("torch")
    x, t, y = torch.randn(4, 1, 12, 12, device=FUSED_DEVICE), torch.rand(4, device=FUSED_DEVICE), torch.arange(4)
    y = y.to(FUSED_DEVICE)
    calls = []
    op = torch.ops.liquidgen.group_norm_act.default
    # fp32 convolutions on CUDA: cuDNN's TF32 (10-bit mantissa) rounds the two paths' last-bit differences apart
    # (relative 1.7e-4 on an H100 with it on, results/2026-12-06-unet-norm-kernel-h100)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        expected = plain(x, t, y)
        with CountCalls(op, calls):
            got = fused(x, t, y)
    assert len(calls) == sum(isinstance(m, torch.nn.GroupNorm) for m in fused.modules())
    assert rel(got, expected) < 1e-5
    calls.clear()
    with CountCalls(op, calls):
        loss = fused(x, t, y).square().mean()
    loss.backward()
    assert calls == [] and all(p.grad is not None for p in fused.out_conv.parameters())


class CountCalls(torch.utils._python_dispatch.TorchDispatchMode):
    """Records each dispatch of `op` inside the block."""

    def __init__(self, op, calls: list):
        super().__init__()
        self.op, self.calls = op, calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is self.op:
            self.calls.append(func)
        return func(*args, **(kwargs or {}))


def test_unet_kernels_option_is_checked_and_defaults_to_the_reference():
    """A bad choice fails at construction; the default (auto) runs the PyTorch norms even without a gradient,
    as the kernel was measured slower (compiled, H100)."""
    with pytest.raises(ValueError, match="kernels"):
        UNet(1, 12, 10, width=16, mults=(1, 2), blocks=1, attention_res=(), groups=8, kernels="fast")
    model = UNet(1, 12, 10, width=16, mults=(1, 2), blocks=1, attention_res=(), groups=8)
    assert {m.kernels for m in model.modules() if isinstance(m, torch.nn.GroupNorm)} == {"auto"}
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        out = model(x, torch.rand(2), torch.arange(2))
    assert out.shape == x.shape and torch.isfinite(out).all()
