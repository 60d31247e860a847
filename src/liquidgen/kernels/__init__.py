"""Fused Triton kernels for LiquidGen's memory-bound chain and the UNet's GroupNorms, and the choice between
them and plain PyTorch.

A model option `kernels` picks the path:
- "torch": always the reference PyTorch code (what the fused ops are tested against);
- "triton": always the fused ops; needs Triton and CUDA (or Triton's CPU interpreter, TRITON_INTERPRET=1);
- "auto" (default): the fused ops where they were measured faster - eager code on CUDA with Triton
  importable - and the reference elsewhere: on CPU; under forward-mode AD (the custom ops have no JVP
  rule, and sCM's torch.func.jvp needs one); and inside torch.compile. On an H200 (2026-12-03,
  benchmarks/results/2026-12-03-liquid-kernels) one LiquidGen-S block's forward + backward ran 26% faster
  eager with the fused ops, but the compiled LiquidGen-S training step with CUDA graphs ran 2,345 img/s
  fused against 2,923 with the reference: torch.compile fuses the reference chain itself, and opaque
  custom ops likely cost it fusions with their neighbours.

The UNet's `kernels` option picks its GroupNorms' path (`use_norm_kernel`): "triton" runs `group_norm` (norm,
per-sample affine and SiLU in one kernel, forward only) wherever no gradient is needed - sampling, compiled or
not - and the reference under autograd; "auto" keeps the reference: compiled, UNet-28's sampling forward took
32.8 ms with the kernel against 26.6 ms with Inductor's norms (H100,
benchmarks/results/2026-12-06-unet-norm-kernel-h100).

LiquidGen's channel MLP (`use_gelu_gemm`) samples, under "auto" and "triton", as two GEMMs over the tokens with the
GELU in the first one's cuBLASLt epilogue: the hidden activations (4x the width) are then written and read once
instead of twice over. Measured alone on an H100 (benchmarks/results/2026-12-08-gelu-gemm-h100, compiled sampling
forward of LiquidGen-S, 2,000 rows): 40.9 -> 39.6 ms at MNIST's patch 4, but 211.9 -> 238.5 ms at 16x32x32, where the
MLP's own kernels saved 24 ms and twelve generic strided copies of a whole activation cost 94 ms (six, 47 ms, without
it). Those copies are, by their size and count, the dense depthwise GEMM's input (`models.toeplitz`) laid out
channels-last in every block once the MLP writes token-major; `models.toeplitz.channel_gemm` now fixes that layout.
*The two together are not yet measured*: `bash benchmarks/dense_layout_device.sh` times both (`--kernels torch auto`).

The ops modules (`adagn`, `glu`, `blend`, `group_norm`; `layout` holds how they read strided operands) import Triton at
the top; `fused_ops()` loads them only where it is installed, so CPU-only installs never import it.
`depthwise` (a depthwise conv for the 7x7 and scan convs) is tested but not used by any path: on an H200 its
forward + backward took 1.1-2x cuDNN's (benchmarks/results/2026-12-03-memory-and-layout), its weight
gradient re-reading each tile once per tap; it waits for a one-pass weight gradient.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from types import SimpleNamespace

import torch
from torch import Tensor
from torch.autograd import forward_ad

CHOICES = ("auto", "triton", "torch")


# Read once at import: module constants are free for torch.compile to trace, function calls with caches not.
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's interpreter runs kernels on CPU tensors


def triton_usable() -> bool:
    return HAVE_TRITON and (torch.cuda.is_available() or INTERPRET)


def check_choice(choice: str) -> None:
    """Fail at construction, in one line, on a choice that cannot run here."""
    if choice not in CHOICES:
        raise ValueError(f"model option kernels must be one of {CHOICES}, got {choice!r}")
    if choice == "triton" and not triton_usable():
        missing = "Triton is not installed" if not HAVE_TRITON else "no CUDA device is available"
        raise ValueError(f"model option kernels=triton needs Triton and a CUDA device, but {missing}; "
                         "use kernels=auto (fused where possible) or kernels=torch")


_COMPILED_JVP = False  # True while `compiled_jvp()` runs compiled code that calls torch.func.jvp


@contextmanager
def compiled_jvp():
    """Around a call of compiled code that runs torch.func.jvp (sCM's tangent). Dynamo traces into the JVP, but
    its fake-tensor rules for group_norm and SDPA fail there (PyTorch 2.13), so while this is on,
    `forward_ad_active` is True inside compiled code and the models take their primitive paths; Dynamo guards
    on the flag, so the plain compiled forward keeps its own graph."""
    global _COMPILED_JVP
    before, _COMPILED_JVP = _COMPILED_JVP, True
    try:
        yield
    finally:
        _COMPILED_JVP = before


def forward_ad_active(x: Tensor) -> bool:
    """Inside torch.func.jvp / vmap / grad, or a forward-AD dual tensor; inside compiled code, whether
    `compiled_jvp()` is on (the functorch checks would break the graph)."""
    if torch.compiler.is_compiling():
        return _COMPILED_JVP
    return (torch._C._functorch.is_functorch_wrapped_tensor(x)
            or forward_ad.unpack_dual(x).tangent is not None)


def use_fused(choice: str, x: Tensor) -> bool:
    """Whether a block with kernel option `choice` runs its fused ops on input `x` (see the module docstring)."""
    if choice == "torch":
        return False
    if choice == "triton":
        return True
    if torch.compiler.is_compiling():
        return False
    return HAVE_TRITON and (x.is_cuda or INTERPRET) and not forward_ad_active(x)


def use_norm_kernel(choice: str, x: Tensor) -> bool:
    """Whether a UNet GroupNorm with kernel option `choice` runs the fused forward-only kernel on `x`."""
    return choice == "triton" and not torch.is_grad_enabled() and not forward_ad_active(x)


def use_gelu_gemm(choice: str, x: Tensor) -> bool:
    """Whether a channel MLP with kernel option `choice` runs its first GEMM with the GELU in cuBLASLt's epilogue
    on `x` (`torch._addmm_activation`): sampling on CUDA only, since the fused op has no backward, and only in bf16
    or fp16 (autocast on, or a half-precision input), since CUDA's epilogue is GELU's tanh form: at most 4.7e-4 from
    the exact one (at x = 2.7, where GELU is 2.69 and a bf16 value's rounding step is 0.016)."""
    if choice == "torch" or not x.is_cuda or torch.is_grad_enabled() or forward_ad_active(x):
        return False
    return torch.is_autocast_enabled("cuda") or x.dtype in (torch.bfloat16, torch.float16)


def fused_ops() -> SimpleNamespace | None:
    """The fused ops (adagn, gated_gelu, blend, group_norm_act), or None where Triton is not installed."""
    if not HAVE_TRITON:
        return None
    from .adagn import adagn
    from .blend import blend
    from .glu import gated_gelu
    from .group_norm import group_norm_act

    return SimpleNamespace(adagn=adagn, gated_gelu=gated_gelu, blend=blend, group_norm_act=group_norm_act)
