"""LiquidGen: an attention-free denoiser built from liquid time-constant blocks (the Hugging Face
repository asdf98/LiquidGen; liquid time-constant networks, Hasani et al., AAAI 2021, in the closed form
of CfC, Hasani et al., Nature Machine Intelligence 2022).

    x -> patch embed (Conv2d, stride p) + learned position embedding -> DW-conv + PW-conv + GELU
      -> LiquidBlock x depth//2  (each output saved as a long skip)
      [-> one unpaired LiquidBlock when depth is odd]
      -> LiquidBlock x depth//2  (each input gets one saved skip added, last saved first: U-Net order)
      -> GroupNorm + Conv3x3 + GELU -> ConvTranspose2d (unpatchify)

    LiquidBlock(x, c):
        s = GatedDepthwiseStimulusConv(AdaGN(x, c)) + ZigzagScan1D(AdaGN(x, c))   local + global
        x = a1 * x + (1 - a1) * s                                                  liquid blend #1
        x = a2 * x + (1 - a2) * ChannelMixMLP(AdaGN'(x, c))                        liquid blend #2

The blend is the closed-form CfC update x' = exp(-dt/tau) x + (1 - exp(-dt/tau)) h(x, u)
(Hasani et al. 2022) with a static, per-channel retention a = exp(-softplus(rho)) in (0, 1)
(LiquidTAD), which replaces the residual x + f(x) and needs no sequential ODE solve.

Kernels (model option `kernels: auto | triton | torch`): the memory-bound chain of a block - AdaGN, the gate
gelu(depthwise) * sigmoid(gate), and the blends with the `local + scan` sum folded into the first - can run as
fused Triton ops (`liquidgen.kernels`, which says when `auto` picks them: eager code on CUDA); sampling on CUDA in
bf16, `auto` also runs the channel MLP with its GELU in the first GEMM's epilogue (`ChannelMixMLP.tokenwise`). The plain
PyTorch code below is the reference; it runs on CPU, without Triton, under forward-mode AD and, by default,
under torch.compile. Both paths hold the same parameters, so checkpoints move freely between them.

Depthwise convs (model option `depthwise: auto | conv | matmul`): the 7x7 conv and the scan's 1-D conv run as
cuDNN convolutions or, on small grids on CUDA (`auto`), as one dense matrix per channel on tensor cores
(`models.toeplitz`, which also folds the snake into the matrix). Same parameters either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import check_choice, fused_ops, use_fused, use_gelu_gemm
from .base import BlockStack, GroupNorm, resize_positions, zero_extra_inputs
from .toeplitz import check_choice as check_depthwise
from .toeplitz import basis_for, dense_depthwise, use_dense

FUSED = fused_ops()  # None without Triton; then every block runs the reference path

# Sizes at the seed's setting (16-channel 32x32 latents, 27 classes): `liquidgen models`.
PRESETS: dict[str, dict] = {
    "tiny": {"width": 64, "depth": 4, "groups": 8},
    "XS": {"width": 128, "depth": 6},
    "S": {"width": 512, "depth": 12},  # 54.2M (seed: ~55M)
    "B": {"width": 768, "depth": 14},  # 140.2M (seed: ~140M)
    "L": {"width": 1024, "depth": 16},  # 282.3M (seed: ~280M)
}
NATIVE = dict.fromkeys(PRESETS, (16, 32, 27))  # channels, size, classes

# DEPTHWISE_LAYOUT: the depthwise convs take channels-last inputs. In NCHW, bf16 depthwise convs fall to
# PyTorch's generic kernels; channels-last reaches cuDNN's NHWC ones. Forward + backward at LiquidGen-S's
# size on an H200: 7x7 2.63 -> 0.58 ms, the scan's 1-D k=31 as (1, k) 2-D 1.58 -> 0.85 ms. The rest of
# the model stays NCHW (a whole channels-last model trained slower under torch.compile).


class AdaGN(nn.Module):
    """GroupNorm whose scale and shift come from the conditioning vector (zero-initialised,
    so each block starts as plain GroupNorm)."""

    def __init__(self, width: int, cond_dim: int, groups: int):
        super().__init__()
        self.norm = GroupNorm(groups, width, affine=False)
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.proj(c)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + scale) + shift

    def fused(self, x: Tensor, c: Tensor) -> Tensor:
        return FUSED.adagn(x, self.proj(c), self.norm.num_groups)[0]


class LiquidTimeConstant(nn.Module):
    """out = a * state + (1 - a) * stimulus with a = exp(-softplus(rho)), one rho per channel."""

    def __init__(self, width: int, retention: tuple[float, float] = (0.5, 0.95)):
        super().__init__()
        # Spread the initial retentions over channels, as multi-timescale recurrent models do
        # (S4/Mamba initialise their decays on a range), instead of one shared value.
        a = torch.linspace(*retention, width)
        self.rho = nn.Parameter(torch.log(torch.expm1(-torch.log(a))))  # inverse of a(rho)

    def retention(self) -> Tensor:
        return torch.exp(-F.softplus(self.rho))

    def forward(self, state: Tensor, stimulus: Tensor) -> Tensor:
        a = self.retention().to(state.dtype)[None, :, None, None]
        return a * state + (1 - a) * stimulus

    def fused(self, state: Tensor, stimulus: Tensor, stimulus2: Tensor | None = None) -> Tensor:
        """forward(state, stimulus + stimulus2) in one pass, the sum never written out."""
        return FUSED.blend(state, stimulus, stimulus2, self.retention())


class GatedDepthwiseStimulusConv(nn.Module):
    """Local spatial mixing: a depthwise k x k conv on one half of a 1x1 expansion, gated by the
    sigmoid of the other half (a GLU over space), projected back by a 1x1 conv."""

    def __init__(self, width: int, kernel: int, depthwise: str = "auto"):
        super().__init__()
        self.depthwise_path = depthwise  # models.toeplitz: conv, dense matrices, or chosen per input
        self.expand = nn.Conv2d(width, 2 * width, 1)
        self.depthwise = nn.Conv2d(width, width, kernel, padding=kernel // 2, groups=width)
        self.project = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.expand(x).chunk(2, dim=1)
        return self.project(F.gelu(self.spatial(value)) * torch.sigmoid(gate))

    def fused(self, x: Tensor) -> Tensor:
        value, gate = self.expand(x).chunk(2, dim=1)
        return self.project(FUSED.gated_gelu(self.spatial(value), gate))

    def spatial(self, value: Tensor) -> Tensor:
        if use_dense(self.depthwise_path, value):
            basis = basis_for(*value.shape[-2:], self.depthwise.kernel_size, value.device,
                              self.depthwise.weight.dtype)
            return dense_depthwise(value, self.depthwise.weight, self.depthwise.bias, basis)
        return self.depthwise(value.contiguous(memory_format=torch.channels_last))  # see DEPTHWISE_LAYOUT


def snake(x: Tensor) -> Tensor:
    """Reverse every other row of (..., h, w). Read row-major, that is a boustrophedon scan: row-major
    with every other row reversed, so consecutive sequence positions are always 4-neighbours in the
    grid (a raster scan jumps at each row end; ZigMa). Its own inverse.
    A flip and a select rather than a gather by an index list: a gather's backward is a scatter
    (PyTorch's sort-based index_put), which took 41% of LiquidGen-S's eager training step on an H200;
    a flip's backward is a flip."""
    odd_rows = torch.arange(x.shape[-2], device=x.device) % 2 == 1
    return torch.where(odd_rows[:, None], x.flip(-1), x)


class ZigzagScan1D(nn.Module):
    """Long-range mixing: lay the tokens out along a zigzag path and run a long depthwise 1-D conv
    over it. Blocks alternate row and column snakes so that the receptive field grows in both
    directions (ZigMa's alternating scans)."""

    def __init__(self, width: int, kernel: int, transpose: bool, depthwise: str = "auto"):
        super().__init__()
        self.transpose, self.depthwise_path = transpose, depthwise
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.project = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        if use_dense(self.depthwise_path, x):  # the snake folded into the dense matrices' rows and columns
            basis = basis_for(*x.shape[-2:], self.conv.kernel_size, x.device, self.conv.weight.dtype,
                              snake=self.transpose)
            return self.project(F.gelu(dense_depthwise(x, self.conv.weight, self.conv.bias, basis)))
        grid = x.transpose(-1, -2) if self.transpose else x  # a column snake is a row snake of x^T
        # The 1-D conv runs as a (1, k) 2-D conv on a channels-last (b, d, 1, h*w) view, same weights:
        # see DEPTHWISE_LAYOUT.
        seq = snake(grid).flatten(2)[:, :, None].contiguous(memory_format=torch.channels_last)
        seq = F.conv2d(seq, self.conv.weight[:, :, None], self.conv.bias, padding=(0, self.conv.padding[0]),
                       groups=self.conv.groups)
        grid = snake(seq.reshape(grid.shape))
        return self.project(F.gelu(grid.transpose(-1, -2) if self.transpose else grid))


class ChannelMixMLP(nn.Module):
    def __init__(self, width: int, ratio: float, kernels: str = "auto"):
        super().__init__()
        hidden = int(width * ratio)
        self.kernels = kernels
        self.net = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.GELU(), nn.Conv2d(hidden, width, 1))

    def forward(self, x: Tensor) -> Tensor:
        if use_gelu_gemm(self.kernels, x):
            return self.tokenwise(x)
        return self.net(x)

    def tokenwise(self, x: Tensor) -> Tensor:
        """net(x) as two GEMMs over the (B H W, C) tokens, the GELU in the first one's epilogue (cuBLASLt on
        CUDA, in GELU's tanh form there; `kernels.use_gelu_gemm` says when and what it measured)."""
        first, _, second = self.net
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(-1, c).to(dtype)
        hidden = torch._addmm_activation(first.bias.to(dtype), tokens, first.weight.flatten(1).to(dtype).t(),
                                         use_gelu=True)
        out = torch.addmm(second.bias.to(dtype), hidden, second.weight.flatten(1).to(dtype).t())
        return out.view(b, h, w, c).permute(0, 3, 1, 2)


class LiquidBlock(nn.Module):
    def __init__(self, width: int, cond_dim: int, groups: int, mlp_ratio: float, stim_kernel: int,
                 scan_kernel: int, transpose_scan: bool, kernels: str = "auto", depthwise: str = "auto"):
        super().__init__()
        self.kernels = kernels
        self.norm1 = AdaGN(width, cond_dim, groups)
        self.local = GatedDepthwiseStimulusConv(width, stim_kernel, depthwise)
        self.scan = ZigzagScan1D(width, scan_kernel, transpose_scan, depthwise)
        self.blend1 = LiquidTimeConstant(width)
        self.norm2 = AdaGN(width, cond_dim, groups)
        self.mlp = ChannelMixMLP(width, mlp_ratio, kernels)
        self.blend2 = LiquidTimeConstant(width)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if use_fused(self.kernels, x):
            return self.fused(x, c)
        h = self.norm1(x, c)
        x = self.blend1(x, self.local(h) + self.scan(h))
        return self.blend2(x, self.mlp(self.norm2(x, c)))

    def fused(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.norm1.fused(x, c)
        x = self.blend1.fused(x, self.local.fused(h), self.scan(h))
        return self.blend2.fused(x, self.mlp(self.norm2.fused(x, c)))


class LiquidGen(BlockStack):
    channel_dim = 1
    long_skips = True

    def __init__(self, in_channels: int = 16, input_size: int = 32, num_classes: int = 27,
                 width: int = 512, depth: int = 12, patch_size: int = 2, mlp_ratio: float = 4.0,
                 stim_kernel: int = 7, scan_kernel: int = 31, groups: int = 32, time_scale: float = 1000.0,
                 context_dim: int = 0, logvar: bool = False, context_mlp: bool = False,
                 standardize_context: bool = False,
                 concat_channels: int = 0, kernels: str = "auto", depthwise: str = "auto"):
        check_choice(kernels)
        check_depthwise(depthwise)
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        super().__init__(in_channels, input_size, num_classes, cond_dim=width, time_scale=time_scale,
                         context_dim=context_dim, logvar=logvar, concat_channels=concat_channels,
                         context_mlp=context_mlp, standardize_context=standardize_context)
        self.width, self.patch_size = width, patch_size
        tokens = input_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels + concat_channels, width, patch_size, stride=patch_size)
        zero_extra_inputs(self.patch_embed, in_channels)
        self.pos_embed = nn.Parameter(torch.zeros(1, width, tokens, tokens))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.input_proj = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width), nn.Conv2d(width, width, 1), nn.GELU())
        self.blocks = nn.ModuleList(
            LiquidBlock(width, width, groups, mlp_ratio, stim_kernel, scan_kernel, transpose_scan=i % 2 == 1,
                        kernels=kernels, depthwise=depthwise)
            for i in range(depth))
        self.head_conv = nn.Sequential(GroupNorm(groups, width), nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.unpatchify = nn.ConvTranspose2d(width, self.out_channels, patch_size, stride=patch_size)
        # Zero output at initialisation: the first loss is the target's variance, and early steps
        # do not fight a random prediction (DiT zero-initialises its final layer likewise).
        nn.init.zeros_(self.unpatchify.weight)
        nn.init.zeros_(self.unpatchify.bias)

    def stem(self, x: Tensor, t: Tensor, y: Tensor | None, context: Tensor | None,
             context_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not divisible by patch size {self.patch_size}")
        h = self.patch_embed(x)
        h = self.input_proj(h + resize_positions(self.pos_embed, *h.shape[-2:]).to(h.dtype))
        return h, self.condition(t, y, context, context_mask)

    def head(self, h: Tensor, c: Tensor, x: Tensor) -> Tensor:
        return self.unpatchify(self.head_conv(h))
