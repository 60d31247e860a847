"""The Python API, shaped like diffusers' pipelines: `liquidgen.load(run)` gives a callable that turns labels or
prompts into images, and `liquidgen.train(config, out=...)` trains a run (see `train.run`).

    pipe = liquidgen.load("runs/mnist").to("cuda")
    images = pipe(labels=[3, 7], steps=20, cfg=1.5, seed=0)          # a list of PIL images
    tensors = pipe(prompt=["a seven"], output="pt")                   # (N, C, H, W) in [0, 1]

Every image comes from `generate.Pipeline` (`LiquidPipeline.pipeline`), as from the command line.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .config import SEED
from .distributed import check_device_name, unavailable
from .generate import Pipeline
from .plots import image_grid
from .train import run as train

__all__ = ["load", "train", "LiquidPipeline", "parse_labels", "OUTPUTS"]

OUTPUTS = ("pil", "pt")  # a list of PIL images, or one float tensor (N, C, H, W) in [0, 1] on the CPU


def parse_labels(values: Sequence[int | str] | None, class_names: list[str]) -> list[int] | None:
    """Labels given as indices (ints, or strings of digits) or class names; a ValueError names a label the
    model does not have."""
    if not values:
        return None
    if not class_names:
        raise ValueError("this model has no classes, so labels do not apply")
    labels = []
    for v in values:
        if (index := _index(v)) is not None:
            labels.append(index)
        elif isinstance(v, str) and v.lstrip("-").isdigit():
            labels.append(int(v))
        elif v in class_names:
            labels.append(class_names.index(v))
        else:
            raise ValueError(f"label {v!r} is neither an index nor one of {class_names}")
    bad = [label for label in labels if not 0 <= label < len(class_names)]
    if bad:
        raise ValueError(f"label {bad[0]} out of range: this model has {len(class_names)} classes "
                         f"(0..{len(class_names) - 1})")
    return labels


def _index(value) -> int | None:
    """`value` as a class index if it is an integer of any kind: Python's, numpy's or a one-element integer tensor
    (what a notebook has at hand); None otherwise (bools are not indices)."""
    if isinstance(value, bool) or getattr(value, "dtype", None) in (bool, torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _as_list(value) -> list | None:
    """One label or prompt, or several (a list, an array, a tensor); None and [] are none."""
    if value is None:
        return None
    if isinstance(value, str) or getattr(value, "ndim", 1) == 0 or not isinstance(value, Iterable):
        return [value]
    return list(value) or None


def _device(device: str | torch.device) -> torch.device:
    """`device` as a torch device, or a ValueError saying why this machine cannot run on it."""
    name = check_device_name(str(device))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = unavailable(torch.device(name))
    if problem:
        raise ValueError(f"device {name}: {problem}")
    return torch.device(name)


class LiquidPipeline:
    """A trained model as a callable: `pipe(labels=...)` or `pipe(prompt=...)` -> images."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @property
    def class_names(self) -> list[str]:
        """What `labels` may name (their index works too); [] for an unconditional or text-only model."""
        return self.pipeline.spec.class_names

    @property
    def text(self) -> bool:
        """Whether the model takes prompts."""
        return bool(self.pipeline.spec.text_encoder)

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def to(self, device: str | torch.device) -> LiquidPipeline:
        """Move the model to `device` (cpu, cuda, cuda:N, mps); returns the pipeline, as torch's `to` does."""
        self.pipeline.model.to(_device(device))
        return self

    def __call__(self, labels: int | str | Sequence[int | str] | None = None,
                 prompt: str | Sequence[str] | None = None, *, num_images: int = 1, steps: int | None = None,
                 cfg: float | None = None, sampler: str | None = None, grid: str | None = None,
                 cfg_interval: tuple[float, float] | None = None, seed: int = 0, output: str = "pil",
                 batch_size: int = 500, progress: bool = False,
                 callback: Callable[[Tensor, Tensor], None] | None = None) -> list[Image.Image] | Tensor:
        """`num_images` images per label (indices or class names) or per prompt, one after the other, in
        the order given; with neither, per class (a class model) or in all (an unconditional one, or a text
        model from its null context). Sampling
        settings left None keep the run's (`pipe.pipeline.settings`); `sampler` is one of
        `liquidgen.samplers.SAMPLERS`. The same seed gives the same images. `output`: "pil" (a list of
        images) or "pt" (a float tensor (N, C, H, W) in [0, 1] on the CPU). `callback(t, x0)` sees, after each
        step, the model-space estimate of the clean images, all rows at once (the denoising trajectory;
        `batch_size` then does not apply)."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        for name, count in (("num_images", num_images), ("batch_size", batch_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not SEED.admits(seed):
            raise ValueError(f"seed must be an integer {SEED}, got {seed!r}")
        prompts = _as_list(prompt)
        if prompts and not self.text:
            classes = len(self.class_names)
            hint = f"give labels= (0..{classes - 1} or class names)" if classes else "call it without prompt="
            raise ValueError(f"this model is not text-conditioned, so prompts do not apply; {hint}")
        pipe = self.pipeline
        settings = pipe.settings.with_(steps=steps, cfg=cfg, sampler=sampler, grid=grid, cfg_interval=cfg_interval)
        wanted = parse_labels(_as_list(labels), self.class_names)
        expanded = None if wanted is None else [label for label in wanted for _ in range(num_images)]
        y, cond, n, _ = pipe.conditions(num_images * len(prompts or wanted or self.class_names or [None]),
                                        expanded, prompts)
        x = pipe.decode(pipe.sample(pipe.noise(n, seed), y, settings, batch_size=None if callback else batch_size,
                                    progress=progress, callback=callback, seed=seed, **cond)).clamp(-1, 1).cpu()
        if output == "pt":
            return (x + 1) / 2
        return [image_grid(image[None], padding=0) for image in x]


def load(path: str | Path, device: str | torch.device = "auto", ema: bool = True, compile: str = "auto"
         ) -> LiquidPipeline:
    """The model of a run folder (its newest checkpoint) or of a checkpoint folder, on `device` (auto: a GPU
    when there is one), with the EMA weights unless `ema` is False. `compile` as `Pipeline.compile`."""
    return LiquidPipeline(Pipeline.load(path, ema=ema, device=_device(device), compile=compile))
