"""The one way from a trained model to images.

A `Pipeline` holds what turns noise into pictures: the backbone, what it predicts (for the samplers'
converters), the run's sampling settings, its data space (pixels, or latents and their autoencoder), its
text encoder and precision. Everything that draws samples goes through it: `liquidgen sample`,
`interpolate` and `eval`, `bench quality`, the training grids and in-training evaluation, and the
benchmark scripts.

    pipe = Pipeline.load("runs/mnist", device="cuda")
    x = pipe.sample(pipe.noise(16, seed=0), labels=torch.tensor([3] * 16))   # model space
    images, labels = pipe.generate(10_000, seed=0)                           # uint8, class-balanced
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .aot import AOTForward
from .checkpoint import resolve
from .config import SampleConfig
from .distributed import Dist, pick_device
from .data import chw, read_image
from .inpainting import concat_input, load_mask, to_latent_grid
from .latent_space import LatentSpace, to_float, to_uint8
from .models import Backbone, BlockStack
from .objectives import objective_from
from .runtime import autocast
from .samplers import check_rows, sample
from .spec import ModelSpec, load_model
from .text import encode_prompts


@dataclass
class Pipeline:
    model: Backbone
    spec: ModelSpec
    prediction: str  # what the model outputs: x0, eps, v, v_vp or trigflow (`paths.PREDICTIONS`)
    settings: SampleConfig = field(default_factory=SampleConfig)  # defaults of every call
    precision: str = "auto"  # train.precision: bf16 autocast on CUDA unless fp32
    dist: Dist = field(default_factory=Dist)  # under a launcher, rows are split over the processes
    # The samplers call the backbone through torch.compile (`CompiledForward`): on | off | auto (on CUDA, for
    # backbones without a per-batch solver state, and calls of COMPILE_WORK or more); or through AOTInductor
    # packages in `aot_folder` (`aot.AOTForward`): aot. Batches are then cut into equal chunks (see `sample`).
    compile: str = "auto"
    aot_folder: Path | None = None  # where compile=aot keeps its packages: `load` puts them in the checkpoint

    def __post_init__(self):
        if self.compile not in COMPILE:
            raise ValueError(f"compile must be one of {', '.join(COMPILE)}, got {self.compile!r}")
        if self.compile == "aot" and self.aot_folder is None:
            raise ValueError("compile=aot keeps its packages beside a checkpoint: load the pipeline from one "
                             "(Pipeline.load) or give aot_folder")
        self.space: LatentSpace = self.spec.latent_space()
        self._compiled: CompiledForward | AOTForward | None = None
        self._compiled_shapes: set[tuple] = set()  # `network`'s shape keys of calls that ran compiled

    @classmethod
    def load(cls, path: str | Path, ema: bool = True, device: str | torch.device = "auto",
             dist: Dist | None = None, compile: str = "auto") -> Pipeline:
        """A checkpoint folder, or a run folder (its newest checkpoint); EMA weights unless `ema` is False."""
        model, config, spec = load_model(path, ema=ema, device=pick_device(str(device)))
        aot = resolve(path) / "aot" / ("ema" if ema else "model") if compile == "aot" else None
        return cls(model, spec, objective_from(config.objective).prediction, config.sample,
                   config.train.precision, dist or Dist(), compile, aot)

    def compiles(self, work: int) -> bool:
        """Whether a call drawing `work` = samples x steps runs the compiled network."""
        if self.compile != "auto":
            return self.compile in ("on", "aot")
        stateless = not hasattr(self.model, "sampling_state")  # a solver state is Python, not graph, input
        return self.device.type == "cuda" and stateless and work >= COMPILE_WORK

    def network(self, work: int, shapes: tuple = ()) -> Backbone | CompiledForward:
        """What the samplers call for `work` = samples x steps: the backbone, or its compiled forward (built
        once, on first use). `shapes` keys the input shapes a call gives the network: under `auto`, a call too
        small to pay for compiling still runs compiled when an earlier call compiled the same shapes, as the
        compiled code (and a CUDA graph) for them already exists."""
        reuse = self.compile == "auto" and shapes in self._compiled_shapes
        if not (self.compiles(work) or reuse):
            return self.model
        if self._compiled is None:
            self._compiled = (AOTForward(self.model, self.aot_folder, self.precision) if self.compile == "aot"
                              else CompiledForward(self.model))
        self._compiled_shapes.add(shapes)
        return self._compiled

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def noise(self, n: int, seed: int = 0) -> Tensor:
        """n standard-normal inputs on the CPU: sample i's noise depends on (seed, i) alone, whatever the
        batch size, the number of processes or n."""
        # torch's CPU sampler turns uniforms into normals 16 at a time and, when the count is not a multiple of
        # 16, redraws the last 16: the last sample's noise would then depend on n. A few rows more, dropped, make
        # the count a multiple of 16; shapes of a multiple of 16 values (most) draw exactly as before.
        rows = n + -n % (16 // math.gcd(math.prod(self.spec.shape), 16))
        return torch.randn(rows, *self.spec.shape, generator=torch.Generator().manual_seed(seed))[:n]

    def step_noise(self, seed: int, step: int, rows: slice) -> Tensor:
        """The fresh noise of `rows` at step `step` of a stochastic sampler (consistency sampling's re-noising,
        DDIM with eta > 0), on the CPU. Like `noise`, row r's depends on (seed, step, r) alone: it is drawn in
        blocks of NOISE_BLOCK rows, each from a generator of its own (seed, step, block), so that a batch
        draws only the blocks it overlaps."""
        first, last = rows.start // NOISE_BLOCK, (rows.stop - 1) // NOISE_BLOCK
        blocks = [torch.randn(NOISE_BLOCK, *self.spec.shape,
                              generator=torch.Generator().manual_seed(_mix(seed, step, block)))
                  for block in range(first, last + 1)]
        offset = first * NOISE_BLOCK
        return torch.cat(blocks)[rows.start - offset:rows.stop - offset]

    def encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor | None]:
        """(context, token mask or None) of `prompts` through the model's own text encoder."""
        return encode_prompts(prompts, self.spec.text_encoder, self.spec.text_tokens, self.device)

    @torch.no_grad()
    def sample(self, noise: Tensor, labels: Tensor | None = None, settings: SampleConfig | None = None, *,
               batch_size: int | None = None, state=None, callback: Callable[[Tensor, Tensor], None] | None = None,
               progress: bool = False, seed: int | None = None, **cond: Tensor) -> Tensor:
        """Model-space samples from `noise`, row i conditioned on labels[i] (class indices, or class weights
        (B, classes + 1) to blend embeddings) and on row i of each `cond` tensor (context, context_mask,
        concat). `batch_size` None draws each process's rows in one call (a fixed-point `state` and a
        trajectory `callback` then see them all); otherwise a progress bar counts batches. A compiled
        network gets every batch padded to `batch_size` rows, so that one CUDA graph serves them all.
        `seed`: the one `noise` was drawn with (`noise(n, seed)`); the noise stochastic samplers draw on the way
        then comes from `step_noise`, so that their samples too are reproducible and independent of the batch
        size (None: from torch's global generator)."""
        s = settings or self.settings
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        # Rows before batching, whose slices would cut extra ones off; the rest `sample` checks in each batch
        check_rows(len(noise), labels, **cond)
        # a batch's rows (doubled under guidance), and which conditions it carries, fix the network's shapes
        net = self.network(len(noise) * s.steps, (batch_size or len(noise), s.cfg != 1, s.cfg_interval is not None,
                                                  labels is None, *sorted(cond)))

        def draw(rows: slice) -> Tensor:
            step = batch_size or max(rows.stop - rows.start, 1)
            starts = range(rows.start, rows.stop, step)
            bar = progress and batch_size is not None and self.dist.main
            out = []
            for start in tqdm(starts, desc="generate", disable=None if bar else True):
                b = slice(start, min(start + step, rows.stop))
                pad = step - (b.stop - b.start) if net is not self.model else 0

                def rows_of(v: Tensor) -> Tensor:
                    return _pad(v[b], pad).to(self.device)

                def fresh(i: int, x: Tensor) -> Tensor:
                    return _pad(self.step_noise(seed, i, b), pad).to(x.device, x.dtype)
                with autocast(self.device, self.precision):
                    x = sample(net, self.prediction, rows_of(noise), None if labels is None else rows_of(labels),
                               s.steps, s.cfg, s.sampler, progress=progress and not bar and self.dist.main,
                               state=state, grid=s.grid or None, cfg_interval=s.cfg_interval, callback=callback,
                               fresh=None if seed is None else fresh, **{k: rows_of(v) for k, v in cond.items()})
                out.append(x[:step - pad].float())
            return torch.cat(out) if out else noise[:0].to(self.device)

        return self.dist.map_rows(draw, len(noise))

    def conditions(self, n: int | None = None, labels: list[int] | None = None, prompts: list[str] | None = None
                   ) -> tuple[Tensor | None, dict[str, Tensor], int, int | None]:
        """What a picture of samples is conditioned on: (labels, {context, context_mask} or {}, number of
        samples, samples per row or None). With `prompts`, a row per prompt (labels, if given, cycled over the
        samples); with `labels`, n samples (default 8 per label) cycling through them; otherwise a class
        grid of about n samples, a row per class, or n samples (default 64) of an unconditional model."""
        classes = self.model.num_classes
        if labels and not classes:
            raise ValueError("this model is unconditional; labels do not apply")
        if n is not None and n < 1:
            raise ValueError(f"the number of samples must be >= 1, got {n}")
        if prompts:
            per_prompt = max(1, (n or 8 * len(prompts)) // len(prompts))
            context, mask = self.encode_prompts(prompts)
            rows = torch.arange(len(prompts)).repeat_interleave(per_prompt)
            cond = {"context": context.cpu()[rows]}
            if mask is not None:
                cond["context_mask"] = mask.cpu()[rows]
            return cycle(labels, len(rows)), cond, len(rows), per_prompt
        if labels:
            return cycle(labels, n or 8 * len(labels)), {}, n or 8 * len(labels), None
        if not classes:
            n = n or 64
            return None, {}, n, grid_labels(0, 0, n)[1]
        y, per_class = grid_labels(classes, max(1, (n or 8 * classes) // classes), 0)
        return y, {}, len(y), per_class

    def inpainting(self, init: str | Path, mask: str | Path, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """For an inpainting model: (the image to complete in [-1, 1], its pixel mask with 1 = generate,
        the model's concat input for n samples), read from an image file and a mask image file."""
        if not self.model.concat_channels:
            raise ValueError("--init/--mask need an inpainting model (trained with model.inpainting: true)")
        size = self.space.image_size
        channels = 1 if self.space.pixels and self.model.in_channels == 1 else 3
        image = to_float(torch.from_numpy(chw(read_image(init, size, channels)).copy())[None]).to(self.device)
        pixel_mask = load_mask(mask, size).to(self.device)
        known = self.space.encode(image)
        concat = concat_input(known, to_latent_grid(pixel_mask, known.shape[-1]))
        return image, pixel_mask, concat.expand(n, -1, -1, -1)

    def decode(self, x: Tensor) -> Tensor:
        """Model space -> images in [-1, 1]."""
        return self.space.decode(x)

    def generate(self, n: int, seed: int = 0, labels: list[int] | None = None, prompts: list[str] | None = None,
                 settings: SampleConfig | None = None, batch_size: int = 500, progress: bool = True,
                 prompt_context: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """n decoded uint8 images (N, C, H, W) and their labels, reproducible from `seed`. Class-conditional
        models draw labels cyclically from `labels` (default: every class, so the set is class-balanced).
        A text model with `prompts` draws sample i from prompt i % len(prompts), whose index is its label:
        prompt k is meant to show class k, so class accuracy measures prompt following. `prompt_context`, the
        prompts' pooled embeddings (e.g. `data.stored_prompt_embeddings`), stands in for the text model."""
        if n < 1:
            raise ValueError(f"the number of samples must be >= 1, got {n}")
        if prompt_context is not None and (not prompts or len(prompt_context) != len(prompts)
                                           or self.spec.text_tokens):
            raise ValueError("prompt_context: one pooled embedding per prompt, for a model of pooled text")
        y = cond_rows = None
        cond: dict[str, Tensor] = {}
        if prompts:
            context, mask = self.encode_prompts(prompts) if prompt_context is None else (prompt_context, None)
            cond_rows = torch.arange(n) % len(prompts)
            cond["context"] = context.cpu()[cond_rows]
            if mask is not None:
                cond["context_mask"] = mask.cpu()[cond_rows]
        if self.model.num_classes:
            y = cycle(labels or list(range(self.model.num_classes)), n)
        x = self.sample(self.noise(n, seed), y, settings, batch_size=batch_size, progress=progress, seed=seed,
                        **cond)
        images = torch.cat([to_uint8(self.decode(b)).cpu() for b in x.split(batch_size)])
        return images, cond_rows if prompts else y


NOISE_BLOCK = 256  # rows per generator of `Pipeline.step_noise`


def _mix(seed: int, step: int, block: int) -> int:
    """One generator seed per (seed, step, block), distinct from `noise`'s (seed) and from each other."""
    return (((seed * 1_000_003 + step + 1) * 1_000_003 + block) * 2_654_435_761 + 0x9E3779B97F4A7C15) % 2**63


COMPILE = ("auto", "on", "off", "aot")
# Samples x steps from which `compile: auto` compiles. Compilation costs about 25-30 s on an H200 from a
# cold cache and pays back from about 2,000 (LiquidGen-S) to 10,000 (UNet-28) MNIST samples at 50 steps
# with guidance (benchmarks/results/2026-12-03-host-and-sampling); a training grid of 80 runs eager.
COMPILE_WORK = 200_000


class CompiledForward:
    """A backbone whose forward runs compiled; every other attribute is the backbone's.

    A block stack (LiquidGen, DiT) compiles one block and reuses it for all of them (regional compilation):
    the blocks share code and shapes, so Dynamo traces one graph instead of the whole stack. For LiquidGen-S
    that takes 10,000 MNIST samples (50 steps, cfg 2) from 63.7 s to 47.4 s end to end from an empty cache on
    an H200 (benchmarks/results/2026-12-04-sampling-compile); compiled whole, its forward is 9% faster (39.5 against
    43.4 ms per 2,000 rows, H100, results/2026-12-07-precompile-h100), yet end to end in one call on an H100 its
    warm calls were no faster (42.9 / 44.4 s against 44.3 / 40.5) and its first call 29 s slower (85.1 against
    56.4; results/2026-12-07-e2e-whole-h100). No CUDA graphs there: a sampling batch of thousands keeps the GPU
    busy between launches. Any other backbone (the UNet) compiles whole with CUDA graphs (mode reduce-overhead:
    one replay per call for a fixed input shape); its output is copied out of the graph's memory, which the next
    replay overwrites (Heun, for one, still holds the previous velocity then). The backbone itself is left as it
    was: its eager calls stay eager."""

    def __init__(self, model: Backbone):
        self.model = model
        if isinstance(model, BlockStack):
            blocks = [torch.compile(block, dynamic=False) for block in model.blocks]
            self.forward, self.copy_out = model.with_blocks(blocks), False
        else:
            self.forward, self.copy_out = torch.compile(model, mode="reduce-overhead", dynamic=False), True

    def __call__(self, *args, **kwargs) -> Tensor:
        out = self.forward(*args, **kwargs)
        return out.clone() if self.copy_out else out

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def _pad(rows: Tensor, n: int) -> Tensor:
    """`rows` with its last row repeated n more times."""
    return torch.cat([rows, rows[-1:].expand(n, *rows.shape[1:])]) if n else rows


def cycle(labels: list[int] | None, n: int) -> Tensor | None:
    """n labels going round `labels` (None stays None)."""
    return None if not labels else torch.tensor(labels)[torch.arange(n) % len(labels)]


def grid_labels(num_classes: int, per_class: int, n: int) -> tuple[Tensor | None, int]:
    """Labels of a class grid, one row of `per_class` per class, and the row length; an unconditional
    model's grid is n samples in a square."""
    if num_classes == 0:
        return None, int(math.ceil(math.sqrt(n)))
    return torch.arange(num_classes).repeat_interleave(per_class), per_class
