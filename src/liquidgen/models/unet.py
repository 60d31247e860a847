"""A small UNet in the style of sCM-mnist (the MNIST implementation of sCM, Lu & Song, ICLR 2025) and
DDPM++ (Song et al. 2021).

    x -> Conv3x3 -> [ResBlock (+ self-attention) x blocks, Downsample] per level
      -> ResBlock, self-attention, ResBlock
      -> [ResBlock (+ self-attention) x (blocks + 1), each fed a saved skip, Upsample] per level
      -> GroupNorm, SiLU, Conv3x3 (zero-init)

Choices that consistency training needs (sCM, Lu & Song 2024, sec. 4):
- GroupNorm everywhere, never BatchNorm: batch statistics break the per-sample JVP.
- Time enters multiplicatively through AdaGN with PixelNorm, h = GN(h) * PixelNorm(1 + Linear(c)),
  which bounds the scale's magnitude whatever c does (sCM's stable time conditioning).
- A positional time embedding whose scale is an option (`time_scale`), sized for the time range.
- A `logvar` head on the time features for adaptive loss weighting (on by default here).

Model option `kernels: auto | triton | torch`: "triton" runs each GroupNorm with its scale and SiLU as one
forward-only Triton kernel while sampling (`liquidgen.kernels.group_norm`); training and "auto" run the PyTorch
operations (compiled, the kernel was slower: 32.8 against 26.6 ms a 2,000-row forward on an H100). A loaded run
takes this machine's "auto", as LiquidGen's kernels do (`spec.load_model`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import check_choice, fused_ops
from .attention import attention
from .base import Backbone, GroupNorm, zero_extra_inputs

NATIVE = {"tiny": (1, 16, 10), "28": (1, 28, 10), "32": (3, 32, 10)}
PRESETS: dict[str, dict] = {
    "tiny": dict(width=32, mults=(1, 2), blocks=1, attention_res=(8,)),
    "28": dict(width=64, mults=(1, 2, 2), blocks=2, attention_res=(7,)),  # MNIST: 28 -> 14 -> 7
    "32": dict(width=128, mults=(1, 2, 2, 2), blocks=2, attention_res=(16,)),  # CIFAR-10 (DDPM's layout)
}


def group_norm(channels: int, groups: int) -> GroupNorm:
    return GroupNorm(math.gcd(groups, channels), channels)


def pixel_norm(x: Tensor, eps: float = 1e-4) -> Tensor:
    """Scale each vector to unit root-mean-square (Karras et al. 2018)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout, groups)
        self.scale = nn.Linear(cond_dim, cout)
        nn.init.zeros_(self.scale.weight)  # start at scale PixelNorm(1) = 1
        nn.init.zeros_(self.scale.bias)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as its skip path
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(self.norm1.act(x))
        h = self.norm2.act(h, scale=pixel_norm(1 + self.scale(c)))
        return self.skip(x) + self.conv2(self.dropout(h))


class SelfAttention(nn.Module):
    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, ch, h, w = x.shape
        qkv = self.qkv(self.norm.act(x, silu=False))
        q, k, v = qkv.reshape(b, 3, self.heads, ch // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = attention(q, k, v).transpose(-1, -2).reshape(b, ch, h, w)
        return x + self.out(out)


class Level(nn.Module):
    """One resolution of the down or up path: ResBlocks, each optionally followed by attention."""

    def __init__(self, channels_in: list[int], cout: int, cond_dim: int, groups: int, dropout: float,
                 attend: bool, heads: int):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin, cout, cond_dim, groups, dropout) for cin in channels_in)
        self.attn = nn.ModuleList(SelfAttention(cout, groups, heads) if attend else nn.Identity()
                                  for _ in channels_in)


class UNet(Backbone):
    def __init__(self, in_channels: int = 1, input_size: int = 28, num_classes: int = 10, width: int = 64,
                 mults: tuple[int, ...] = (1, 2, 2), blocks: int = 2, attention_res: tuple[int, ...] = (7,),
                 heads: int = 4, groups: int = 32, dropout: float = 0.0, time_scale: float = 1000.0,
                 context_dim: int = 0, logvar: bool = True, concat_channels: int = 0, context_mlp: bool = False,
                 standardize_context: bool = False, kernels: str = "auto"):
        check_choice(kernels)
        super().__init__(in_channels, input_size, num_classes, cond_dim=4 * width, time_scale=time_scale,
                         context_dim=context_dim, logvar=logvar, concat_channels=concat_channels,
                         context_mlp=context_mlp, standardize_context=standardize_context)
        cond_dim = 4 * width
        self.stem_conv = nn.Conv2d(in_channels + concat_channels, width, 3, padding=1)
        zero_extra_inputs(self.stem_conv, in_channels)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, ch, res = [width], width, input_size
        for i, mult in enumerate(mults):
            cout = width * mult
            level = Level([ch] + [cout] * (blocks - 1), cout, cond_dim, groups, dropout, res in attention_res, heads)
            self.down.append(level)
            ch = cout
            skips += [cout] * blocks
            if i < len(mults) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res = (res + 1) // 2
        self.mid1 = ResBlock(ch, ch, cond_dim, groups, dropout)
        self.mid_attn = SelfAttention(ch, groups, heads)
        self.mid2 = ResBlock(ch, ch, cond_dim, groups, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in reversed(list(enumerate(mults))):
            cout = width * mult
            ins = []
            for _ in range(blocks + 1):
                ins.append(ch + skips.pop())
                ch = cout
            self.up.append(Level(ins, cout, cond_dim, groups, dropout, res in attention_res, heads))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
                res *= 2
        self.out_norm = group_norm(ch, groups)
        self.out_conv = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        if kernels == "triton":
            fused_ops()  # registers the op
        for m in self.modules():
            if isinstance(m, GroupNorm):
                m.kernels = kernels

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                concat: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        c = self.condition(t, y, context, context_mask)
        h = self.stem_conv(self.with_concat(x, concat))
        saved = [h]
        for i, level in enumerate(self.down):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, c))
                saved.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                saved.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, c)), c)
        for i, level in enumerate(self.up):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, saved.pop()], dim=1), c))
            if i < len(self.upsample):
                # Nearest upsampling to the skip's exact size, so odd sizes (7 -> 14 -> 28, or 5 -> 9) work.
                h = self.upsample[i](F.interpolate(h, size=saved[-1].shape[-2:], mode="nearest"))
        return self.out_conv(self.out_norm.act(h))
