"""Interpolation between two samples' inputs: noises (spherical), class embeddings and prompts (linear).

A deterministic ODE sampler maps each noise to one image, so walking between two noises, or between two
conditions at a fixed noise, walks between two images (`liquidgen interpolate`).
"""
from __future__ import annotations

import torch
from torch import Tensor


def weights(frames: int) -> Tensor:
    """`frames` evenly spaced interpolation weights from 0 to 1, both included."""
    if frames < 2:
        raise ValueError(f"an interpolation needs at least 2 frames (--frames), got {frames}")
    return torch.linspace(0.0, 1.0, frames)


def slerp(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985) between two noise tensors of one shape, at each weight of
    `w` (F,): (F, *a.shape). In high dimension two Gaussian noises are nearly orthogonal with nearly equal
    norms, so the straight line between them passes through vectors of norm ~0.71 sqrt(d) at w = 0.5,
    noise the sampler never saw in training; the great circle keeps the norm (White 2016, "Sampling
    generative networks"). Nearly parallel inputs fall back to the straight line."""
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-30)
    omega = torch.arccos(cos.clamp(-1, 1))
    w = w.double()[:, None]
    if torch.sin(omega) < 1e-6:
        out = (1 - w) * a64 + w * b64
    else:
        out = (torch.sin((1 - w) * omega) * a64 + torch.sin(w * omega) * b64) / torch.sin(omega)
    return out.view(len(w), *a.shape).to(a.dtype)


def lerp(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    """(1 - w) a + w b at each weight of `w` (F,): (F, *a.shape). For conditions, whose embeddings the
    model reads linearly at its first layer (class embeddings, text features)."""
    w = w.to(a.dtype).view(-1, *[1] * a.ndim)
    return (1 - w) * a + w * b


def class_weights(a: int, b: int, w: Tensor, num_classes: int) -> Tensor:
    """Rows of class weights (F, num_classes + 1), (1 - w) on class a and w on class b: what a backbone
    embeds as (1 - w) E[a] + w E[b] (`Backbone.condition`). The last column is the null class."""
    for label in (a, b):
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} out of range: this model has {num_classes} classes")
    eye = torch.eye(num_classes + 1)
    return lerp(eye[a], eye[b], w)


def blend_contexts(context: Tensor, mask: Tensor | None, w: Tensor) -> tuple[Tensor, Tensor | None]:
    """Two prompts' text contexts, pooled (2, dim) or tokens (2, L, token_dim) with their mask (2, L), blended
    linearly at each weight of `w` (F,): the contexts (F, ...) and masks (F, L) or None.

    Pooled vectors are mixed as they are: the conditioning vector reads them through one linear map
    (`Backbone.condition`), so there the blend is exactly the blend of what the model sees. Token features
    are mixed position by position, as prompt interpolation does with the fixed-length CLIP features of
    Stable Diffusion; but here padding is zeros that the mask hides, so a
    position real in one prompt only is real in between (its features fading in from zero) and keeps the
    mask of the frame's own prompt at the ends: the first and last frames are exactly the two prompts'."""
    blend = lerp(context[0], context[1], w.to(context.device))
    if mask is None:
        return blend, None
    w = w.to(mask.device)[:, None]
    return blend, (mask[0] & (w < 1)) | (mask[1] & (w > 0))
