"""The interface every backbone implements, and the conditioning they share.

A backbone maps (x_t, t, y, context) to a tensor shaped like x_t: `forward(x, t, y=None, context=None)` with
    x: (B, in_channels, H, W) noisy input,
    t: (B,) flow time in [0, 1] (liquidgen's convention, see `liquidgen.paths`),
    y: (B,) int64 class labels, where `num_classes` is the dedicated null class used for
       classifier-free guidance; None means unconditional (every sample gets the null class),
    context: (B, context_dim) pooled or (B, L, context_dim) token text embeddings; None means the
       learned null context (the unconditional branch of text CFG),
    concat: (B, concat_channels, H, W) extra input channels (inpainting: the known image and the mask),
       for models built with concat_channels > 0; None means nothing is known (generate everything),
    context_mask: (B, L) bool for token contexts, False at padding tokens (None: all tokens are real).
What the output means (v, x0 or eps) is the objective's business, not the backbone's.

`BlockStack` is the common shape stem -> blocks -> head of LiquidGen and DiT; the fixed-point
wrapper (`fixed_point.py`) makes the middle of any such stack implicit.
"""
from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..inpainting import concat_input
from ..kernels import forward_ad_active, use_norm_kernel


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm, computed from primitives while a JVP is compiled (`kernels.compiled_jvp`: PyTorch's
    fake-tensor rule for group_norm fails under torch.func.jvp inside torch.compile). Same parameters, same
    numbers; the native kernel everywhere else."""

    kernels = "torch"  # a backbone with a `kernels` option sets it: see `act`

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and forward_ad_active(x):
            return group_norm_primitives(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)

    def act(self, x: Tensor, scale: Tensor | None = None, silu: bool = True) -> Tensor:
        """SiLU (or nothing) of the norm of x times a per-sample, per-channel `scale` (B, C) if given: in one
        fused kernel where `kernels` picks it (`kernels.use_norm_kernel`), else as separate operations."""
        if use_norm_kernel(self.kernels, x):
            gamma = self.weight if self.affine else x.new_ones(x.shape[1])
            beta = self.bias if self.affine else x.new_zeros(x.shape[1])
            a, s = gamma.float().expand(x.shape[0], -1), beta.float().expand(x.shape[0], -1)
            if scale is not None:
                a, s = a * scale, s * scale  # (n(x) gamma + beta) k = n(x) (gamma k) + beta k
            # torch.ops, not fused_ops(): compiled code reaches the op through it (the choice loaded its module)
            return torch.ops.liquidgen.group_norm_act(x, a, s, self.num_groups, silu, self.eps)
        h = self(x)
        if scale is not None:
            h = h * scale[:, :, None, None]
        return F.silu(h) if silu else h


def group_norm_primitives(x: Tensor, groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                          eps: float = 1e-5) -> Tensor:
    """GroupNorm (Wu & He 2018) as mean, biased variance and rsqrt over each group of channels."""
    h = x.reshape(x.shape[0], groups, -1)
    mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
    h = ((h - mean) * torch.rsqrt(var + eps)).reshape(x.shape)
    if weight is None:
        return h
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return h * weight.reshape(shape) + bias.reshape(shape)


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sin/cos features of `scale * t` (DDPM/DiT; scale maps t in [0, 1] to step units)."""
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)  # at least fp32: 1000 t needs the mantissa
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = scale * t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def resize_positions(table: Tensor, h: int, w: int) -> Tensor:
    """A (1, D, h0, w0) position table at grid (h, w): itself, or resampled bicubically, which is how
    TLD runs a model at 2x or 4x its training resolution."""
    if table.shape[-2:] == (h, w):
        return table
    return F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)


class TimestepEmbedding(nn.Module):
    """Positional (sin/cos) features of `scale * t` followed by a two-layer MLP.

    `scale` sizes the features for the time range: 1000 spreads t in [0, 1] over the frequencies as
    DDPM's step index does; sCM (Lu & Song 2024, sec. 4.1) uses a small scale for stable JVPs. Consistency
    models need it: on the 8x8 digit screen, scale 1 in teacher and student took sCD students from FD 30 / 4.3 to
    4.8 / 2.8 at 1 / 2 steps and sCT from 46 to 4.8 at 2
    (benchmarks/results/2026-12-06-consistency-screen-time-scale)."""

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.freq_dim, self.scale)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.features(t).to(self.mlp[0].weight.dtype))


class Backbone(nn.Module):
    """Base class: holds the input geometry and builds the conditioning vector c(t, y, context).

    Options every backbone accepts: `time_scale` (see TimestepEmbedding), `context_dim` (> 0 enables
    text conditioning; pooled context is added to c, through one linear map, or with `context_mlp` through
    Linear-SiLU-Linear like FLUX's pooled-text embedder), `standardize_context` (every context feature z-scored
    with its training data's statistics, `fit_context`, before any use), `logvar` (a head predicting the per-time
    log-variance used by the adaptive loss weighting of EDM2 / sCM), `concat_channels` (extra input
    channels concatenated to x, whose stem weights start at zero: see `zero_extra_inputs`)."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, cond_dim: int,
                 out_channels: int | None = None, time_scale: float = 1000.0, context_dim: int = 0,
                 logvar: bool = False, concat_channels: int = 0, context_mlp: bool = False,
                 standardize_context: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.concat_channels = concat_channels
        self.input_size = input_size
        self.num_classes = num_classes
        self.context_dim = context_dim
        self.time_embed = TimestepEmbedding(cond_dim, scale=time_scale)
        # One extra row: index num_classes is the learned "no label" embedding that CFG's
        # unconditional branch uses (not class 0, not a zero vector).
        self.class_embed = nn.Embedding(num_classes + 1, cond_dim) if num_classes > 0 else None
        if context_dim > 0:
            # The null context lives in the encoder's output space, so the pooled path and the token
            # path (cross-attention) see the same "no text" input.
            self.null_context = nn.Parameter(torch.zeros(context_dim))
            # context_mlp was meant to stretch apart neighbours such as "..., medium skin tone, ..." and "..., dark
            # skin tone, ..." (MiniLM cosine 0.97; random emoji captions 0.38). Its one run in the emoji screen
            # stalled like the linear map's run of the same seed.
            self.context_embed = (nn.Sequential(nn.Linear(context_dim, cond_dim), nn.SiLU(),
                                                nn.Linear(cond_dim, cond_dim))
                                  if context_mlp else nn.Linear(context_dim, cond_dim))
        # MiniLM's unit-norm caption embeddings share a large common part and vary by about 0.04 per feature, so at
        # initialisation two captions move c tens of times less than two class embeddings do. In a CPU screen
        # (benchmarks/results/2026-12-04-emoji-conditioning-screen) all four z-scored runs learned 256 emoji prompts
        # at once; one of four raw runs stalled (20% drawn against 99%). Buffers: saved with the weights.
        if standardize_context and context_dim == 0:
            raise ValueError("model option standardize_context needs a text context: train on a dataset precomputed "
                             "with --text-encoder, or leave the option out")
        self.standardize_context = standardize_context
        if standardize_context:
            self.register_buffer("context_mean", torch.zeros(context_dim))
            self.register_buffer("context_std", torch.ones(context_dim))
        # EDM2 (Karras et al. 2024, eq. 21): u(t) is a linear map of the time features.
        self.logvar_head = nn.Linear(self.time_embed.freq_dim, 1) if logvar else None

    @property
    def null_class(self) -> int:
        return self.num_classes

    def with_concat(self, x: Tensor, concat: Tensor | None) -> Tensor:
        """The stem's input: x, followed by the `concat` channels when the model has them. For an
        inpainting model, None is the all-generate input (no known pixels, mask 1), like y = None is the
        null class: plain sampling, training grids and evaluation need nothing inpainting-specific."""
        if self.concat_channels == 0:
            if concat is not None:
                raise ValueError(f"{type(self).__name__} was built without concat channels; concat must be None")
            return x
        if concat is None and self.concat_channels == x.shape[1] + 1:
            concat = concat_input(torch.zeros_like(x), torch.ones_like(x[:, :1]))
        if concat is None or concat.shape[1] != self.concat_channels or concat.shape[-2:] != x.shape[-2:]:
            got = None if concat is None else tuple(concat.shape)
            raise ValueError(f"this model needs concat of shape (B, {self.concat_channels}, "
                             f"{x.shape[-2]}, {x.shape[-1]}) (for inpainting: the known image and the mask), "
                             f"got {got}")
        return torch.cat([x, concat.to(x.dtype)], dim=1)

    def unconditional(self, y: Tensor | None, context: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """The unconditional branch of classifier-free guidance for a batch conditioned on (y, context):
        the null class and the null context, shaped like the given ones. Token contexts get L copies of
        the null token, to be paired with `null_token_mask` (only the first one real), so that they act
        exactly as the single null token while batching with the conditional half."""
        if y is not None and y.is_floating_point():  # class weights (see `condition`): the null class's row
            null_y = torch.zeros_like(y)
            null_y[:, self.null_class] = 1
        else:
            null_y = None if y is None else torch.full_like(y, self.null_class)
        null_context = None if context is None else self.null_context.to(context.dtype).expand_as(context)
        return null_y, null_context

    def context_tokens(self, context: Tensor | None, batch: int) -> Tensor:
        """Context as (B, L, context_dim) tokens, standardized if the model does; None -> one null token per
        sample."""
        if self.context_dim == 0:
            raise ValueError(f"{type(self).__name__} was built without text conditioning (context_dim=0)")
        if context is None:
            tokens = self.null_context.expand(batch, 1, -1)
        elif context.shape[-1] != self.context_dim:
            raise ValueError(f"context has {context.shape[-1]} features, the model expects {self.context_dim}")
        else:
            tokens = context[:, None] if context.ndim == 2 else context
        if not self.standardize_context:
            return tokens
        return ((tokens.float() - self.context_mean) / self.context_std).to(tokens.dtype)

    @torch.no_grad()
    def fit_context(self, context: Tensor, mask: Tensor | None = None) -> None:
        """Set the standardization of `standardize_context` from a dataset's contexts: pooled (N, D), or tokens
        (N, L, D) with their mask (the real tokens' statistics)."""
        if not self.standardize_context:
            raise ValueError(f"{type(self).__name__} was built without standardize_context")
        rows = context.reshape(-1, context.shape[-1]) if mask is None or context.ndim == 2 else context[mask.bool()]
        rows = rows.detach().cpu().double()  # statistics in float64 on the CPU (MPS has no float64)
        std = rows.std(0)
        # a feature constant over the data would divide by zero; a hundredth of the typical spread bounds it
        self.context_mean.copy_(rows.mean(0))
        self.context_std.copy_(std.clamp_min(0.01 * float(std.mean())))

    def condition(self, t: Tensor, y: Tensor | None, context: Tensor | None = None,
                  context_mask: Tensor | None = None) -> Tensor:
        c = self.time_embed(t)
        if self.class_embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.null_class, device=t.device, dtype=torch.long)
            # Integer labels pick a row of the table; float class weights (B, num_classes + 1) mix rows,
            # (1 - w) E[a] + w E[b] for a class interpolation (`interpolate.py`): one-hot rows are labels.
            c = c + (y.to(c.dtype) @ self.class_embed.weight.to(c.dtype) if y.is_floating_point()
                     else self.class_embed(y))
        if self.context_dim > 0 or context is not None:
            tokens = self.context_tokens(context, t.shape[0])
            if context_mask is not None and context is not None and context.ndim == 3:
                weights = context_mask.to(tokens.dtype)[..., None]
                pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1)  # mean of the real tokens
            else:
                pooled = tokens.mean(dim=1)
            c = c + self.context_embed(pooled.to(c.dtype))
        return c

    def logvar(self, t: Tensor) -> Tensor:
        """(B,) predicted log-variance of the loss at time t (adaptive weighting)."""
        if self.logvar_head is None:
            raise ValueError(f"{type(self).__name__} was built without a logvar head; set model option logvar: true")
        return self.logvar_head(self.time_embed.features(t).to(self.logvar_head.weight.dtype))[:, 0]

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                concat: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def null_token_mask(like: Tensor) -> Tensor:
    """(B, L) mask with only the first token real: L copies of the null token then act as one. (Not all
    real: beside other keys, such as DiT's time token, L equal keys would get L times the weight.)"""
    mask = torch.zeros(like.shape[:2], dtype=torch.bool, device=like.device)
    mask[:, 0] = True
    return mask


def zero_extra_inputs(conv: nn.Conv2d, in_channels: int) -> None:
    """Zero a stem convolution's weights on input channels past `in_channels`. A model with extra
    concat channels then computes exactly what the model without them does, so a trained checkpoint
    can be fine-tuned into it (TLD's outpainting model widens its patchify layer this way)."""
    with torch.no_grad():
        conv.weight[:, in_channels:].zero_()


def call_block(block: nn.Module, h: Tensor, cond: Any) -> Tensor:
    """block(h, cond), recomputed in the backward where the block is marked so (`BlockStack.set_checkpointing`):
    only its input is kept, and its forward runs again when the gradient reaches it (activation
    recomputation, Chen et al. 2016: memory for about a third more compute per recomputed block)."""
    if getattr(block, "recompute", False) and torch.is_grad_enabled() and not forward_ad_active(h):
        return checkpoint(block, h, cond, use_reentrant=False)
    return block(h, cond)


@contextmanager
def model_flops_mode(model: nn.Module):
    """Run `model` as its FLOPs are counted: without its blocks' recomputation (MFU counts the work a step
    needs, not the forward passes that recomputation repeats; PaLM, Chowdhery et al. 2022, app. B) and with
    depthwise convs as convs (models.toeplitz's dense matrices do L/k times their arithmetic)."""
    switches = [(m, "recompute", False) for m in model.modules() if getattr(m, "recompute", False)]
    switches += [(m, "depthwise_path", "conv") for m in model.modules() if hasattr(m, "depthwise_path")]
    saved = [getattr(m, name) for m, name, _ in switches]
    for m, name, value in switches:
        setattr(m, name, value)
    try:
        yield
    finally:
        for (m, name, _), value in zip(switches, saved):
            setattr(m, name, value)


def run_stack(h: Tensor, cond: Any, pre: Sequence[nn.Module], middle: Callable[[Tensor], Tensor],
              post: Sequence[nn.Module], long_skips: bool) -> Tensor:
    """pre blocks -> middle -> post blocks. With `long_skips`, pre block i's output is added to the
    input of post block (len - 1 - i): U-Net order, outermost pair last."""
    if long_skips and len(pre) != len(post):
        raise ValueError(f"long skips need as many blocks after the middle as before ({len(pre)} vs {len(post)})")
    skips = []
    for block in pre:
        h = call_block(block, h, cond)
        skips.append(h)
    h = middle(h)
    for block in post:
        if long_skips:
            h = h + skips.pop()
        h = call_block(block, h, cond)
    return h


class BlockStack(Backbone):
    """A backbone shaped stem -> blocks -> head. Subclasses set `blocks` (each called block(h, cond)),
    `width`, `channel_dim` (the feature axis of h: 1 for feature maps, -1 for tokens) and `long_skips`,
    and implement `stem` and `head`."""

    blocks: nn.ModuleList
    width: int
    channel_dim: int = 1
    long_skips: bool = False

    def stem(self, x: Tensor, t: Tensor, y: Tensor | None, context: Tensor | None,
             context_mask: Tensor | None = None) -> tuple[Tensor, Any]:
        raise NotImplementedError  # pragma: no cover

    def head(self, h: Tensor, cond: Any, x: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def with_blocks(self, blocks: Sequence[nn.Module]) -> BlockStack:
        """This stack with `blocks` in place of its own (wrapped ones, e.g. compiled): a shallow copy that shares
        every parameter and has its own module table, so that this stack is left as it was."""
        stack = copy.copy(self)
        stack._modules = dict(self._modules)
        stack.blocks = nn.ModuleList(blocks)
        return stack

    def set_checkpointing(self, blocks: int) -> None:
        """Recompute the activations of the first `blocks` blocks in the backward instead of keeping them
        (-1: every block; 0: none). The saved activations of all blocks coexist when the backward starts,
        so which blocks are chosen does not change the peak, only how many."""
        if not -1 <= blocks <= len(self.blocks):
            raise ValueError(f"model.checkpointing must be -1 (all blocks) or 0..{len(self.blocks)} "
                             f"(the number of blocks), got {blocks}")
        count = len(self.blocks) if blocks == -1 else blocks
        for i, block in enumerate(self.blocks):
            block.recompute = i < count

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                concat: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        h, cond = self.stem(self.with_concat(x, concat), t, y, context, context_mask)
        half = len(self.blocks) // 2
        middle = self.blocks[half:len(self.blocks) - half]  # the one unpaired block of an odd stack

        def run_middle(h: Tensor) -> Tensor:
            for block in middle:
                h = call_block(block, h, cond)
            return h

        h = run_stack(h, cond, self.blocks[:half], run_middle, self.blocks[len(self.blocks) - half:],
                      self.long_skips)
        return self.head(h, cond, x)


def build_preset(cls: type[nn.Module], presets: dict[str, dict], name: str, preset: str, in_channels: int,
                 input_size: int, num_classes: int, **options) -> nn.Module:
    """`cls` at `preset` (one of `presets`), with `options` overriding the preset's architecture keys;
    `name` is the backbone's registry name, for the errors."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for backbone {name!r}; choose from {list(presets)}")
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("in_channels", "input_size", "num_classes")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for backbone {name!r}; allowed: {', '.join(allowed)}")
    return cls(in_channels=in_channels, input_size=input_size, num_classes=num_classes,
               **{**presets[preset], **options})
