"""What rebuilds a trained backbone besides its weights (a checkpoint's model.json, as a typed record),
and the backbone rebuilt from a checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import check_fits, check_kind, read_files, resolve
from .config import Config, from_dict
from .latent_space import LatentSpace
from .models import Backbone, build_model
from .models.base import TimestepEmbedding


@dataclass
class ModelSpec:
    name: str  # backbone (models.BACKBONES)
    preset: str
    options: dict[str, Any]  # architecture keys over the preset, text and inpainting inputs included
    in_channels: int  # of the data space: pixels or latents
    input_size: int
    class_names: list[str] = field(default_factory=list)  # [] for an unconditional or text-only model
    space: dict | None = None  # `LatentSpace.state()` of the data; None: pixels
    text_encoder: dict | None = None  # spec of the encoder whose embeddings condition the model
    text_tokens: int = 0  # 0: one pooled embedding per caption; L: L token features

    @classmethod
    def for_run(cls, config: Config, in_channels: int, input_size: int, class_names: list[str],
                context_dim: int = 0, space: LatentSpace | None = None, text_encoder: dict | None = None,
                text_tokens: int = 0) -> ModelSpec:
        """The spec of a run's model: the config's backbone at the data's geometry, with a text input of
        `context_dim` features and the inpainting channels (the known image and the mask) where asked."""
        options = dict(config.model.options)
        if context_dim:
            options["context_dim"] = context_dim
        if config.model.inpainting:
            options["concat_channels"] = in_channels + 1
        return cls(config.model.name, config.model.preset, options, in_channels, input_size, list(class_names),
                   None if space is None else space.state(), text_encoder, text_tokens)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One sample in the model's data space (C, H, W)."""
        return self.in_channels, self.input_size, self.input_size

    def build(self) -> Backbone:
        return build_model(self.name, self.preset, in_channels=self.in_channels, input_size=self.input_size,
                           num_classes=self.num_classes, **self.options)

    def latent_space(self) -> LatentSpace:
        return LatentSpace.from_state(self.space, self.input_size)

    def to_json(self) -> dict:
        # num_classes is redundant with class_names but kept: model.json is read by people and other tools.
        return {**dataclasses.asdict(self), "num_classes": self.num_classes}

    @classmethod
    def from_json(cls, data: dict) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in data.items() if k in known})
        if data.get("num_classes", spec.num_classes) != spec.num_classes:
            raise ValueError(f"model.json: num_classes {data['num_classes']} but {spec.num_classes} class names")
        return spec


def portable_spec(model_json: dict) -> ModelSpec:
    """A checkpoint's model.json as a spec to build here: which kernels run (LiquidGen's fused Triton ops or plain
    PyTorch, its depthwise convs as convs or dense matrices) is this machine's choice, not the weights', so a run
    trained with kernels=triton loads on a CPU too."""
    spec = ModelSpec.from_json(model_json)
    for machine_choice in ("kernels", "depthwise"):
        spec.options.pop(machine_choice, None)
    return spec


# What an autoencoder run is for, said where a command that generates is given one.
ENCODE_INSTEAD = ("an autoencoder encodes and decodes images but does not generate them: encode a dataset with it "
                  "(liquidgen precompute SOURCE --autoencoder own --ae-option path=RUN --size SIZE --out DIR), train a "
                  "generator on those latents (liquidgen train CONFIG --set data.name=precomputed data.root=DIR), and "
                  "use that run here")


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu"
               ) -> tuple[Backbone, Config, ModelSpec]:
    """Rebuild a checkpoint's backbone (EMA weights by default) in eval mode: (model, config, spec)."""
    ckpt = resolve(path)
    weights = "ema.safetensors" if ema else "model.safetensors"
    files = read_files(ckpt, ("config.json", "model.json", weights))
    check_kind(ckpt, files["model.json"], "generator", ENCODE_INSTEAD)
    config, spec = from_dict(Config, files["config.json"]), portable_spec(files["model.json"])
    model = spec.build()
    check_fits(model, files[weights], f"{ckpt / weights} (made by another liquidgen version?)")
    model.load_state_dict(files[weights])
    return model.to(device).eval(), config, spec


def embedded_time_scale(model_json: dict, default: float | None = None) -> float | None:
    """The `time_scale` a checkpoint's backbone embeds time at (`default` for one without a time embedding), read
    off the backbone rebuilt without memory (meta tensors): a preset's or a signature's default counts as well as an
    option written in model.json."""
    with torch.device("meta"):
        return time_scale_of(portable_spec(model_json).build(), default)


def time_scale_of(model: nn.Module, default: float | None = None) -> float | None:
    """The scale of `model`'s time embedding, wherever it sits (a fixed-point wrapper's is its inner stack's)."""
    return next((m.scale for m in model.modules() if isinstance(m, TimestepEmbedding)), default)


def check_time_scale(model: nn.Module, model_json: dict, ckpt: Path) -> None:
    """`time_scale` changes what the weights compute without changing a shape, so check_fits cannot see it: a
    student started from a teacher embedded at another scale would read every time wrongly, and train from a
    broken start without an error."""
    own = time_scale_of(model)
    if own is None:
        return
    theirs = embedded_time_scale(model_json, own)
    if float(theirs) != float(own):
        raise ValueError(f"train.init_from: {ckpt} embeds time at time_scale {theirs:g}, this model at {own:g}; set "
                         f"model.options.time_scale={theirs:g} to start from it")


def init_weights(model: nn.Module, path: str | Path, ema: bool = True) -> None:
    """Start `model` from another run's weights (fine-tuning; a consistency student from its
    teacher). The architectures must match exactly, except that a model with extra concat input
    channels (inpainting) may start from one without: those channels keep their zero weights; and a model
    with a logvar head (a consistency student's adaptive weighting) may start from one without (a flow or
    diffusion teacher): the head keeps its fresh weights."""
    ckpt = resolve(path)
    file = "ema.safetensors" if ema else "model.safetensors"
    files = read_files(ckpt, ("model.json", file))
    check_kind(ckpt, files["model.json"], "generator", "train.init_from starts a generator from another generator's "
               "weights")
    check_time_scale(model, files["model.json"], ckpt)
    weights = files[file]
    own = model.state_dict()
    extra = getattr(model, "concat_channels", 0)
    for name, w in weights.items():
        target = own.get(name)
        if extra and target is not None and w.ndim == 4 and target.shape[1] == w.shape[1] + extra \
                and target.shape[0] == w.shape[0] and target.shape[2:] == w.shape[2:]:
            weights[name] = torch.cat([w.to(target.dtype), target[:, w.shape[1]:]], dim=1)
    fresh = {k: v for k, v in own.items() if "logvar_head" in k.split(".")[:-1]}  # a wrapper's: inner.logvar_head
    if not any(k in weights for k in fresh):
        weights |= fresh
    check_fits(model, weights, f"train.init_from: {ckpt / file} (architectures differ)")
    model.load_state_dict(weights)
