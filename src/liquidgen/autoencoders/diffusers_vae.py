"""A diffusers `AutoencoderKL` (the SD / SDXL / SD3 / FLUX.1 VAEs) behind liquidgen's interface.

Latents are returned raw: the model's `scaling_factor` / `shift_factor` are NOT applied, because
liquidgen normalises latents with per-channel statistics measured at precompute time (which also
covers VAEs whose config factors are off for a given dataset)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from .base import Autoencoder, parse_dtype
from .safe_loading import DIFFUSERS_SAFE, first_line, require_safetensors


def looks_like_path(model: str) -> bool:
    """True for strings that can only be local paths; hub ids are "name" or "owner/name"."""
    return (os.path.isabs(model) or model.startswith((".", "~")) or "\\" in model or model.count("/") > 1
            or Path(model).expanduser().exists())


def load_vae(autoencoder_kl: type, model: str, subfolder: str | None, torch_dtype):
    """`AutoencoderKL.from_pretrained` from safetensors only; every failure one ValueError naming `model`,
    including weights that would leave part of the network at its random initialisation."""
    where = f"{model}/{subfolder}" if subfolder else model
    try:
        vae, info = autoencoder_kl.from_pretrained(model, subfolder=subfolder, torch_dtype=torch_dtype,
                                                   output_loading_info=True, **DIFFUSERS_SAFE)
    except Exception as e:  # the library's own errors, about a folder or hub id it cannot use
        raise ValueError(f"diffusers autoencoder {where} could not be loaded ({first_line(e)}); expected a folder "
                         f"written by AutoencoderKL.save_pretrained (config.json and "
                         f"diffusion_pytorch_model.safetensors) or a hub id") from e
    missing = sorted(info["missing_keys"])
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(f"diffusers autoencoder {where}: its weights lack {', '.join(missing[:3])}{more}, which "
                         f"would stay random; are config.json and the weights of the same model?")
    return vae


class DiffusersVAE(Autoencoder):
    """`diffusers.AutoencoderKL.from_pretrained(model, subfolder=subfolder)`: a local folder, or a hub id
    (downloaded by diffusers when online), from safetensors only. encode returns the posterior mean, or a
    sample with `sample`."""

    name = "diffusers"

    def __init__(self, model: str, subfolder: str | None = None, sample: bool = False, dtype: str = "float32"):
        super().__init__()
        torch_dtype = parse_dtype(dtype, "diffusers autoencoder")
        try:
            from diffusers import AutoencoderKL
        except ImportError as e:
            raise ImportError("the 'diffusers' autoencoder needs the diffusers package: "
                              "pip install 'liquidgen[latent]'") from e
        model = str(model)
        if looks_like_path(model):
            folder = Path(model).expanduser() / (subfolder or "")
            if not folder.is_dir():
                raise FileNotFoundError(f"diffusers autoencoder: model folder {folder} not found "
                                        f"(expected a folder written by AutoencoderKL.save_pretrained, or a hub id)")
            require_safetensors(folder, "diffusers autoencoder")
            model = str(Path(model).expanduser())
        self.model, self.subfolder, self.sample, self.dtype_name = model, subfolder, bool(sample), dtype
        self.vae = load_vae(AutoencoderKL, model, subfolder, torch_dtype)
        config = self.vae.config
        self.latent_channels = int(config.latent_channels)
        self.downscale = 2 ** (len(config.block_out_channels) - 1)  # one 2x down-sampling per stage but the last
        self.image_channels = int(config.out_channels)
        if config.in_channels != config.out_channels:
            raise ValueError(f"diffusers autoencoder {model}: in_channels {config.in_channels} != out_channels "
                             f"{config.out_channels} is not supported")

    def _encode(self, images: Tensor) -> Tensor:
        posterior = self.vae.encode(images).latent_dist
        return posterior.sample() if self.sample else posterior.mode()

    def _decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents).sample

    def options(self) -> dict[str, Any]:
        return {"model": self.model, "subfolder": self.subfolder, "sample": self.sample, "dtype": self.dtype_name}
