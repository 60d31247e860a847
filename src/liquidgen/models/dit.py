"""DiT: a transformer over image patches (Peebles & Xie 2023), and TLD's text denoiser (Transformer Latent Diffusion,
github.com/apapiu/transformer_latent_diffusion).

    x -> Conv2d patchify (p x p, stride p) -> tokens + 2-D position embedding (sin-cos or learned)
      -> DiTBlock x depth -> final norm -> Linear to p*p*C -> unpatchify

    DiTBlock(h, c), adaLN-Zero (DiT sec. 3.2): (shift, scale, gate) x 2 = Linear(SiLU(c)), zero-init
        h = h + gate1 * SelfAttn(LN(h) * (1 + scale1) + shift1)
        h = h + CrossAttn(LN(h), context)                         (optional)
        h = h + gate2 * MLP(LN(h) * (1 + scale2) + shift2)

    TLD style (adaln=False, cross_attention=True): no modulation; time, class and pooled text enter
    through cross-attention to the context tokens [c, text tokens...], like TLD's 2-token context
    [noise embedding, pooled CLIP]. `mlp_conv` puts a 3x3 depthwise conv between the MLP's two
    linear layers (LocalViT, Li et al. 2021), TLD's fix for patch-boundary artefacts.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Attention
from .base import BlockStack, resize_positions, zero_extra_inputs

PRESETS: dict[str, dict] = {
    "tiny": dict(width=64, depth=4, heads=4),
    "S": dict(width=384, depth=12, heads=6),  # DiT-S/2: 33.0M
    "B": dict(width=768, depth=12, heads=12),  # DiT-B/2: 130.5M
    # TLD's denoiser: 12 x 768, cross-attention conditioning, learned positions, conv MLP.
    "TLD": dict(width=768, depth=12, heads=12, adaln=False, cross_attention=True, mlp_conv=True,
                pos_embed="learned", context_dim=768),
}
# DiT's setting: SD-VAE latents of 256 px ImageNet, 1000 classes; TLD's: the same latents, CLIP text.
NATIVE = {**dict.fromkeys(PRESETS, (4, 32, 1000)), "TLD": (4, 32, 0)}
POS_EMBEDS = ("sincos", "learned")


def sincos_2d(width: int, h: int, w: int) -> Tensor:
    """(1, width, h, w) fixed 2-D sin-cos table: half the channels encode the row, half the column
    (MAE / DiT), each with geometric frequencies 1 / 10000^(k / (width/4))."""
    if width % 4:
        raise ValueError(f"sin-cos position embedding needs width divisible by 4, got {width}")
    quarter = width // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def encode(n: int) -> Tensor:  # (n, width/2)
        angles = torch.arange(n, dtype=torch.float64)[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, cols = encode(h), encode(w)
    table = torch.cat([rows[:, None].expand(h, w, -1), cols[None].expand(h, w, -1)], dim=-1)
    return table.permute(2, 0, 1)[None].float()


class Cond(NamedTuple):
    c: Tensor  # (B, width) time + class (+ pooled text)
    context: Tensor | None  # (B, M, width) cross-attention tokens
    mask: Tensor | None  # (B, M) bool, False for padded text tokens (None: all real)
    grid: tuple[int, int]  # token grid (h, w)


class Mlp(nn.Module):
    def __init__(self, width: int, ratio: float, conv: bool):
        super().__init__()
        hidden = int(width * ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden) if conv else None
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        h = F.gelu(self.fc1(x), approximate="tanh")
        if self.dwconv is not None:
            b, n, d = h.shape
            spatial = h.transpose(1, 2).reshape(b, d, *grid)
            h = F.gelu(self.dwconv(spatial), approximate="tanh").reshape(b, d, n).transpose(1, 2)
        return self.fc2(h)


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, adaln: bool, cross_attention: bool,
                 mlp_conv: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not adaln, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm_cross = nn.LayerNorm(width, eps=1e-6) if cross_attention else None
        self.cross = Attention(width, heads, context_dim=width) if cross_attention else None
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not adaln, eps=1e-6)
        self.mlp = Mlp(width, mlp_ratio, mlp_conv)
        self.modulation = None
        if adaln:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
            # adaLN-Zero: every block starts as the identity map.
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)
            if self.cross is not None:
                nn.init.zeros_(self.cross.out.weight)
                nn.init.zeros_(self.cross.out.bias)

    def forward(self, h: Tensor, cond: Cond) -> Tensor:
        if self.modulation is None:
            h = h + self.attn(self.norm1(h))
            h = h + self.cross(self.norm_cross(h), cond.context, cond.mask)
            return h + self.mlp(self.norm2(h), cond.grid)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond.c)[:, None].chunk(6, dim=-1)
        h = h + gate1 * self.attn(self.norm1(h) * (1 + scale1) + shift1)
        if self.cross is not None:
            h = h + self.cross(self.norm_cross(h), cond.context, cond.mask)
        return h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2, cond.grid)


class DiT(BlockStack):
    channel_dim = -1
    long_skips = False

    def __init__(self, in_channels: int = 4, input_size: int = 32, num_classes: int = 1000,
                 width: int = 384, depth: int = 12, heads: int = 6, patch_size: int = 2, mlp_ratio: float = 4.0,
                 pos_embed: str = "sincos", adaln: bool = True, cross_attention: bool = False,
                 mlp_conv: bool = False, time_scale: float = 1000.0, context_dim: int = 0, logvar: bool = False,
                 concat_channels: int = 0, context_mlp: bool = False,
                 standardize_context: bool = False):
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}")
        if not adaln and not cross_attention:
            raise ValueError("a DiT without adaLN needs cross_attention: true, or it cannot see the time")
        super().__init__(in_channels, input_size, num_classes, cond_dim=width, time_scale=time_scale,
                         context_dim=context_dim, logvar=logvar, concat_channels=concat_channels,
                         context_mlp=context_mlp, standardize_context=standardize_context)
        self.width, self.patch_size, self.adaln = width, patch_size, adaln
        grid = input_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels + concat_channels, width, patch_size, stride=patch_size)
        zero_extra_inputs(self.patch_embed, in_channels)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, width, grid, grid))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_buffer("pos_embed", sincos_2d(width, grid, grid), persistent=False)
        self.cross_attention = cross_attention
        if cross_attention and context_dim > 0:
            self.context_proj = nn.Linear(context_dim, width)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio, adaln, cross_attention, mlp_conv)
                                    for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=not adaln, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width)) if adaln else None
        self.final = nn.Linear(width, patch_size * patch_size * self.out_channels)
        # Zero output at initialisation (DiT's final-layer init).
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        if adaln:
            nn.init.zeros_(self.final_modulation[1].weight)
            nn.init.zeros_(self.final_modulation[1].bias)

    def stem(self, x: Tensor, t: Tensor, y: Tensor | None, context: Tensor | None,
             context_mask: Tensor | None = None) -> tuple[Tensor, Cond]:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not divisible by patch size {self.patch_size}")
        h = self.patch_embed(x)
        grid = h.shape[-2:]
        h = (h + resize_positions(self.pos_embed, *grid).to(h.dtype)).flatten(2).transpose(1, 2)
        c = self.condition(t, y, context, context_mask)
        tokens = mask = None
        if self.cross_attention:
            tokens = c[:, None]
            if self.context_dim > 0:
                text = self.context_proj(self.context_tokens(context, x.shape[0]).to(c.dtype))
                tokens = torch.cat([tokens, text], dim=1)
                if context_mask is not None and context is not None and context.ndim == 3:
                    mask = torch.cat([torch.ones_like(context_mask[:, :1]), context_mask], dim=1).bool()
        return h, Cond(c, tokens, mask, tuple(grid))

    def head(self, h: Tensor, cond: Cond, x: Tensor) -> Tensor:
        h = self.final_norm(h)
        if self.final_modulation is not None:
            shift, scale = self.final_modulation(cond.c)[:, None].chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        p, (gh, gw) = self.patch_size, cond.grid
        out = self.final(h).reshape(x.shape[0], gh, gw, p, p, self.out_channels)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], self.out_channels, gh * p, gw * p)
