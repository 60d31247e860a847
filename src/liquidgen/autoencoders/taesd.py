"""TAESD: the tiny autoencoders of Ollin Boer Bohan (github.com/madebyollin/taesd, MIT), distilled to
share the latent space of the big VAEs (SD1/2, SDXL, SD3, FLUX.1, FLUX.2) at ~1% of their cost.

Written here from the architecture description; only the layer layout (and so the state-dict keys
"0.weight", "1.conv.0.weight", ... of a plain nn.Sequential) follows the published weight files, which
load unchanged. Both networks are ~1.2M-parameter stacks of 64-channel residual conv blocks:

    encoder  [0, 1] image -> conv, Block, 3 x (stride-2 conv, 3 Blocks), conv -> latent (8x smaller)
    decoder  latent -> Clamp, conv, ReLU, 3 x (3 Blocks, 2x nearest upsample, conv), Block, conv -> [0, 1]

taef2 (FLUX.2) adds a GroupNorm "pool" branch to the three lowest-resolution blocks of each network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_weight_file, state_dict_problems
from .base import Autoencoder, parse_dtype

# variant -> latent channels of the VAE it mimics (taesd: SD1/2, taesdxl: SDXL, taesd3: SD3,
# taef1: FLUX.1, taef2: FLUX.2).
VARIANTS = {"taesd": 4, "taesdxl": 4, "taesd3": 16, "taef1": 16, "taef2": 32}
WIDTH = 64  # every hidden layer of every variant
DOWNSCALE = 8  # three stride-2 stages
SOURCE = "https://github.com/madebyollin/taesd"
ENV_VAR = "LIQUIDGEN_TAESD"
DEFAULT_DIR = Path("~/.cache/liquidgen/taesd")


def conv(c_in: int, c_out: int, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the decoder's input to (-3, 3): tolerates out-of-range latents from a generator
    (e.g. a few over-shooting sampling steps) instead of amplifying them."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """relu(conv(x) + x) with conv = Conv3x3-ReLU-Conv3x3-ReLU-Conv3x3; with `pool`, first x + pool(x),
    a 1x1 bottleneck widened 4x with GroupNorm (taef2's low-resolution blocks; the normalisation
    mixes information across each whole feature map, which plain 3x3 convs cannot)."""

    def __init__(self, channels: int = WIDTH, pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(conv(channels, channels), nn.ReLU(), conv(channels, channels), nn.ReLU(),
                                  conv(channels, channels))
        self.pool = nn.Sequential(
            nn.Conv2d(channels, 4 * channels, 1, bias=False), nn.GroupNorm(4, 4 * channels), nn.ReLU(),
            nn.Conv2d(4 * channels, channels, 1, bias=False)) if pool else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


def make_encoder(latent_channels: int, pool: bool) -> nn.Sequential:
    """Indices 0..14; `pool` puts the branch into the last three blocks (11, 12, 13: lowest resolution)."""
    layers: list[nn.Module] = [conv(3, WIDTH), Block()]
    for stage in range(3):
        low = pool and stage == 2
        layers += [conv(WIDTH, WIDTH, stride=2, bias=False), Block(pool=low), Block(pool=low), Block(pool=low)]
    return nn.Sequential(*layers, conv(WIDTH, latent_channels))


def make_decoder(latent_channels: int, pool: bool) -> nn.Sequential:
    """Indices 0..19, upsampling at 6, 11, 16; `pool` puts the branch into the first three blocks (3, 4, 5)."""
    layers: list[nn.Module] = [Clamp(), conv(latent_channels, WIDTH), nn.ReLU()]
    for stage in range(3):
        low = pool and stage == 0
        layers += [Block(pool=low), Block(pool=low), Block(pool=low), nn.Upsample(scale_factor=2, mode="nearest"),
                   conv(WIDTH, WIDTH, bias=False)]
    return nn.Sequential(*layers, Block(), conv(WIDTH, 3))


def weight_folders(weights: str | os.PathLike | None) -> list[Path]:
    """Where to look: the `weights` option alone, else $LIQUIDGEN_TAESD then ~/.cache/liquidgen/taesd."""
    if weights is not None:
        folder = Path(weights).expanduser()
        if folder.is_file():
            raise ValueError(f"TAESD weights={str(weights)!r} is a file; pass the folder holding "
                             f"<variant>_encoder and <variant>_decoder (.safetensors or .pth)")
        return [folder]
    env = os.environ.get(ENV_VAR)
    return ([Path(env).expanduser()] if env else []) + [DEFAULT_DIR.expanduser()]


def find_weights(variant: str, folders: list[Path]) -> tuple[Path, Path]:
    """(encoder, decoder) files of `variant` from the first folder holding both; .safetensors wins over .pth."""
    tried: list[Path] = []
    for folder in folders:
        found = []
        for part in ("encoder", "decoder"):
            candidates = [folder / f"{variant}_{part}{ext}" for ext in (".safetensors", ".pth")]
            tried += candidates
            found.append(next((c for c in candidates if c.is_file()), None))
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    raise FileNotFoundError(
        f"TAESD weights for variant {variant!r} not found; tried {', '.join(str(p) for p in tried)}. "
        f"Download {variant}_encoder.pth and {variant}_decoder.pth (or .safetensors) from {SOURCE} into a folder "
        f"and pass it as the `weights` option, set ${ENV_VAR}, or put them in {DEFAULT_DIR}.")


def read_state_dict(path: Path, variant: str) -> dict[str, Tensor]:
    return read_weight_file(path, f"expected a {variant} state dict from {SOURCE} (is this a {variant} file?)")


def load_into(module: nn.Module, path: Path, variant: str) -> None:
    """Copy the file's tensors into `module` (casting to its dtype), after checking names and shapes."""
    state = read_state_dict(path, variant)
    own = module.state_dict()
    problems = state_dict_problems(own, state)
    if problems:
        raise ValueError(f"{path} does not match the {variant} architecture: {problems}. "
                         f"Is this a {variant} file? Variants: {', '.join(VARIANTS)}")
    module.load_state_dict(state)


class TAESD(Autoencoder):
    """A TAESD-family autoencoder with pretrained weights (see `find_weights` for where they are looked for).
    Its networks work on [0, 1] images; the conversion from and to liquidgen's [-1, 1] happens here."""

    name = "taesd"

    def __init__(self, variant: str = "taef2", weights: str | None = None, dtype: str = "float32"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown TAESD variant {variant!r}; choose from {', '.join(VARIANTS)}")
        torch_dtype = parse_dtype(dtype, "taesd autoencoder")
        self.variant, self.dtype_name = variant, dtype
        self.latent_channels, self.downscale, self.image_channels = VARIANTS[variant], DOWNSCALE, 3
        encoder_file, decoder_file = find_weights(variant, weight_folders(weights))
        # Recorded in spec() as the folder actually used, so that rebuilding does not depend on the environment.
        self.weights = str(encoder_file.parent.resolve())
        pool = variant == "taef2"
        self.encoder = make_encoder(self.latent_channels, pool)
        self.decoder = make_decoder(self.latent_channels, pool)
        load_into(self.encoder, encoder_file, variant)
        load_into(self.decoder, decoder_file, variant)
        self.to(torch_dtype)  # the published weights are float16; compute in the requested dtype

    def _encode(self, images: Tensor) -> Tensor:
        return self.encoder((images + 1) / 2)

    def _decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents) * 2 - 1

    def options(self) -> dict[str, Any]:
        return {"variant": self.variant, "weights": self.weights, "dtype": self.dtype_name}
