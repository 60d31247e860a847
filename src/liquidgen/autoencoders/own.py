"""Your own autoencoder: a small convolutional KL-VAE or VQ-VAE, trained by `liquidgen train-autoencoder`
and loaded by path (`build_autoencoder("own", path=RUN)`) wherever an autoencoder is named: precompute,
latent training, sampling.

The networks follow Stable Diffusion's autoencoder (Rombach et al. 2022, appendix G) scaled down: a
convolutional encoder of residual blocks halving the resolution at each level but the last, a
bottleneck, and a mirrored decoder; no attention, which small images do not need.
- KL: the encoder predicts a diagonal Gaussian (mean, log-variance) per latent element; training
  samples from it and pays `kl_weight` x KL(q || N(0, I)); `encode` returns the mean, so encoding is
  deterministic.
- VQ: the encoder's vectors are snapped to an EMA codebook (`quantize.py`); `encode` returns the codes'
  vectors, which the decoder reads as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import check_fits, check_kind, read_files, resolve
from .base import Autoencoder
from .quantize import VectorQuantizer

KINDS = ("kl", "vq")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                   _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.block(x)


class Encoder(nn.Module):
    def __init__(self, image_channels: int, channels: int, mult: tuple[int, ...], blocks: int, out_channels: int):
        super().__init__()
        widths = [channels * m for m in mult]
        layers: list[nn.Module] = [nn.Conv2d(image_channels, widths[0], 3, padding=1)]
        cin = widths[0]
        for level, width in enumerate(widths):
            for _ in range(blocks):
                layers.append(ResBlock(cin, width))
                cin = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(cin, cin, 3, stride=2, padding=1))
        layers += [ResBlock(cin, cin), _norm(cin), nn.SiLU(), nn.Conv2d(cin, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, image_channels: int, channels: int, mult: tuple[int, ...], blocks: int, in_channels: int):
        super().__init__()
        widths = [channels * m for m in reversed(mult)]
        cin = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, cin, 3, padding=1), ResBlock(cin, cin)]
        for level, width in enumerate(widths):
            for _ in range(blocks):
                layers.append(ResBlock(cin, width))
                cin = width
            if level < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(cin, cin, 3, padding=1)]
        layers += [_norm(cin), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.out = nn.Conv2d(cin, image_channels, 3, padding=1)  # the "last layer" of the adaptive GAN weight

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.net(z))


class ConvAutoencoder(nn.Module):
    """The trainable network. `forward(x)` returns (reconstruction, bottleneck loss, stats) where the
    bottleneck loss is the weighted KL term (kl) or the commitment loss (vq)."""

    def __init__(self, kind: str = "kl", image_channels: int = 3, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), blocks: int = 1, latent_channels: int = 4,
                 kl_weight: float = 1e-6, codebook_size: int = 512, codebook_decay: float = 0.99,
                 commitment: float = 0.25, restart_threshold: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {kind!r}")
        if image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {image_channels}")
        self.kind, self.image_channels, self.latent_channels = kind, image_channels, latent_channels
        self.downscale = 2 ** (len(channel_mult) - 1)
        self.kl_weight = kl_weight
        self.encoder = Encoder(image_channels, channels, tuple(channel_mult), blocks,
                               2 * latent_channels if kind == "kl" else latent_channels)
        self.decoder = Decoder(image_channels, channels, tuple(channel_mult), blocks, latent_channels)
        self.quantizer = VectorQuantizer(codebook_size, latent_channels, codebook_decay, commitment,
                                         restart_threshold) if kind == "vq" else None

    def encode(self, x: Tensor) -> Tensor:
        """Deterministic latents: the posterior mean (kl) or the nearest codes (vq)."""
        h = self.encoder(x)
        if self.kind == "kl":
            return h[:, :self.latent_channels]
        return self.quantizer.quantize(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        h = self.encoder(x)
        if self.kind == "kl":
            mean, logvar = h.float().chunk(2, dim=1)
            logvar = logvar.clamp(-30, 20)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # reparameterisation (Kingma & Welling)
            # KL(N(m, s^2) || N(0, 1)) summed over latent elements per image, divided by the image's element
            # count as the reconstruction loss is a per-element mean: kl_weight then means what SD's does.
            kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).flatten(1).sum(1) / x[0].numel()
            stats = {"kl": kl.mean().detach(), "latent_std": mean.std().detach()}
            return self.decoder(z), self.kl_weight * kl.mean(), stats
        z, commitment, stats = self.quantizer(h)
        return self.decoder(z), commitment, stats


def load_trained(path: str | Path, ema: bool = True) -> tuple[ConvAutoencoder, dict]:
    """A `train-autoencoder` run or checkpoint folder -> (network in eval mode, its spec)."""
    ckpt = resolve(path)
    weights = "ema.safetensors" if ema else "model.safetensors"
    files = read_files(ckpt, ("model.json", weights))
    spec = files["model.json"]
    check_kind(ckpt, spec, "autoencoder", "the own autoencoder's path= takes the folder of a `liquidgen "
               "train-autoencoder` run or one of its checkpoints")
    try:
        net = ConvAutoencoder(**spec["options"])
    except (KeyError, TypeError, ValueError) as e:  # a model.json edited by hand, or from another version
        raise ValueError(f"{ckpt}/model.json does not describe an autoencoder this version builds "
                         f"({type(e).__name__}: {e}); train it again with `liquidgen train-autoencoder`") from None
    check_fits(net, files[weights], f"{ckpt}/{weights}")
    net.load_state_dict(files[weights])
    return net.eval(), spec


class OwnAutoencoder(Autoencoder):
    """A trained `ConvAutoencoder`, by the path of its run (newest checkpoint) or of one checkpoint."""

    name = "own"

    def __init__(self, path: str):
        super().__init__()
        # The spec names the checkpoint itself (absolute), not the run: latents encoded with step N must be
        # decoded with step N, whatever the run's newest checkpoint becomes.
        try:
            self.path = str(resolve(Path(path).expanduser()).resolve())
        except FileNotFoundError as e:
            raise FileNotFoundError(f"own autoencoder path={str(path)!r}: {e}; pass the folder of a "
                                    f"`liquidgen train-autoencoder` run or one of its checkpoints") from None
        self.net, _ = load_trained(self.path)
        self.latent_channels, self.downscale = self.net.latent_channels, self.net.downscale
        self.image_channels = self.net.image_channels

    def _encode(self, images: Tensor) -> Tensor:
        return self.net.encode(images)

    def _decode(self, latents: Tensor) -> Tensor:
        return self.net.decode(latents)

    def options(self) -> dict[str, Any]:
        return {"path": self.path}


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1], measured on [0, 1] pixels."""
    mse = F.mse_loss((x.float().clamp(-1, 1) + 1) / 2, (y.float() + 1) / 2, reduction="none").flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))
