"""`liquidgen bench quality`: quality per GPU-minute. Every contender (a backbone preset) trains with one
config's recipe - data, objective, optimiser, batch - for the same number of minutes of training steps
(`train.minutes`; compilation and evaluation are not counted), then its EMA weights are scored at
several numbers of function evaluations (NFE).

Each run also checkpoints every `curve_every` of the budget (`train.ckpt_minutes`); those checkpoints,
scored at `curve_nfe`, give the quality-vs-minutes curve, and the final one gets the quality-vs-NFE
sweep. Consistency models are scored with the consistency sampler at NFE 1 and 2.

Scores come from `evaluation.evaluate`: the offline reference classifier's FD and class accuracy (not
FID; see evaluation/classifier.py), plus FID when Inception weights are given. Every record is appended
to `out/quality.jsonl` as soon as it exists and finished records are skipped on a rerun, so a command
cut short by a time limit continues where it stopped (training resumes from its newest checkpoint).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..autoencoders import build_autoencoder
from ..checkpoint import list_checkpoints
from ..config import Config, ModelConfig, load_config, parse_options
from ..data import fit_images, read_manifest, stored_prompt_embeddings
from ..distributed import pick_device
from ..evaluation.evaluate import Scorer
from ..generate import Pipeline
from ..latent_space import to_float, to_uint8
from ..plots import save_grid
from .budget import budgeted_config, train_to_budget
from .records import append_record, environment, read_records
from .report import quality_metric

NFES = (1, 2, 4, 8, 16, 50)
CONSISTENCY_NFES = (1, 2)


@dataclass(frozen=True)
class Contender:
    backbone: str
    preset: str
    options: dict = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.options.items())
        return f"{self.backbone}-{self.preset}{extra}"


def parse_contender(text: str) -> Contender:
    """`backbone:preset[:key=value,key=value]`, e.g. `unet:28` or `dit:S:patch_size=1` (values read as YAML)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"contender {text!r}: expected backbone:preset[:key=value,...]")
    items = filter(None, (parts[2] if len(parts) == 3 else "").split(","))
    return Contender(parts[0], parts[1], parse_options(items, f"contender {text!r}:"))


def record_key(name: str, minutes: float, sampler: str, nfe: int, cfg: float | None = None) -> str:
    """A score's key; `cfg` None (the contender's own sample.cfg) keeps the keys of studies made before sweeps."""
    return f"{name}|{minutes:g}min|{sampler}|nfe{nfe}" + ("" if cfg is None else f"|cfg{cfg:g}")


def class_rows(images: torch.Tensor, labels: torch.Tensor | None, per_row: int = 10) -> tuple[torch.Tensor, int]:
    """Up to `per_row` samples per class, one row per class (or the first per_row^2 if unlabelled)."""
    if labels is None:
        return images[: per_row * per_row], per_row
    picks = [torch.nonzero(labels == c).flatten()[:per_row] for c in labels.unique()[:per_row]]
    return images[torch.cat(picks)], per_row


@dataclass
class QualityStudy:
    """One `bench quality` study: contenders trained on one recipe for equal minutes, then scored."""

    config: str | Path  # the shared recipe: data, objective, optimiser, batch
    contenders: list[str]  # backbone:preset[:key=value,...]
    out: str | Path  # results folder: quality.jsonl, grids, report
    minutes: float  # training budget per contender
    curve_every: float = 0.25  # checkpoint and score every this fraction of the budget
    nfes: tuple[int, ...] = NFES  # scored at the full budget
    curve_nfe: int = 16  # scored at the curve's checkpoints
    samples: int = 10000  # per score at the full budget
    curve_samples: int = 1000  # per score on the curve
    sampler: str = "euler"
    cfgs: tuple[float, ...] | None = None  # guidance scales swept at every score (None: each run's sample.cfg)
    nfe_at_best: bool = False  # sweep the scales at the top NFE only; score the rest at the best of them
    classifier: str | Path | None = None  # reference classifier, fitted first if the file is missing
    # the second, independent one (fitted there if missing); None: the built-in dataset's with the built-in first,
    # False: none (its CIFAR-10 recipe takes hours on a CPU)
    classifier2: str | Path | None | bool = None
    inception_weights: str | None = None
    reference: tuple[str, str | None] | None = None  # (dataset, root) to score against; default: the config's
    overrides: tuple[str, ...] = ()  # --set for every contender
    device: str = "auto"
    seed: int = 0  # noise seed of the scored samples
    cache_dir: str | Path = "~/.cache/liquidgen/eval"
    runs: str | Path | None = None  # the contenders' run folders (default: out/runs)
    sample_batch: int = 500  # samples per sampling call
    prompts: tuple[str, ...] | None = None  # a text model's prompt per class (prompt k meant to show class k)
    prompt_embeddings: str | Path | None = None  # a captioned precomputed dataset: the prompts' stored embeddings


def prepare_scorer(study: QualityStudy, base: Config, device: torch.device) -> Scorer:
    """The scorer against the reference dataset (its classifier fitted if missing), after recording the
    real-image floor at each sample count: what n real images score, below which no model can be told apart."""
    name, root = study.reference or (base.data.name, base.data.root)
    if name == "precomputed":
        raise ValueError("latent (precomputed) data: name the pixel dataset to score against with --reference")
    size = None if study.reference else base.data.image_size  # the size the models are trained at
    scorer = Scorer(name, root, study.classifier, device, size, inception_weights=study.inception_weights,
                    cache_dir=study.cache_dir, second_classifier=study.classifier2)
    path = Path(study.out) / "quality.jsonl"
    done = {r["key"] for r in read_records(path)}
    for n in sorted({study.samples, study.curve_samples}):
        if f"floor|{n}" not in done:
            append_record(path, {"key": f"floor|{n}", **scorer.floor(n, study.seed), **environment(device)})
    if base.data.name == "precomputed" and f"floor-autoencoder|{study.samples}" not in done:
        if trip := autoencoder_round_trip(base.data.root, device):
            name, through = trip
            append_record(path, {"key": f"floor-autoencoder|{study.samples}", "floor_autoencoder": name,
                                 **scorer.floor(study.samples, study.seed, through), **environment(device)})
    return scorer


def autoencoder_round_trip(root: str, device: torch.device, batch_size: int = 256
                           ) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """A latent dataset's autoencoder, as (its name, uint8 images -> uint8 images as that space returns them:
    resized to the dataset's image size as precompute resized them, encoded, stored as float16 as precompute
    stores latents, decoded). Real images through it score what a perfect model of these latents would: the
    floor under a latent model's FD. None for a pixel dataset."""
    request = read_manifest(Path(root).expanduser())["request"]
    spec = request.get("autoencoder") or {"name": "identity"}
    if spec["name"] == "identity":
        return None
    ae = build_autoencoder(**spec).to(device)
    name = "-".join(str(v) for k, v in spec.items() if k in ("name", "variant", "model"))

    @torch.no_grad()
    def through(images: torch.Tensor) -> torch.Tensor:
        x = fit_images(images, request["image_size"])
        return torch.cat([to_uint8(ae.decode(ae.encode(to_float(b.to(device))).half().float())).cpu()
                          for b in x.split(batch_size)])
    return name, through


def check_prompts(study: QualityStudy, base: Config) -> torch.Tensor | None:
    """A text-conditioned recipe is scored on class-balanced samples of --prompts (prompt k meant to show class
    k, so class accuracy is prompt following): without them every sample, and every guidance scale, would be
    unconditional. Returns the prompts' stored embeddings when --prompt-embeddings names a dataset, else None
    (the model's text encoder encodes them)."""
    text = base.data.name == "precomputed" and read_manifest(Path(base.data.root).expanduser())["request"].get(
        "text_encoder")
    if text and not study.prompts:
        raise ValueError(f"{base.data.root} conditions on text: give --prompts, one per class in label order "
                         f"(e.g. 'a handwritten zero' ... 'a handwritten nine'), so that samples are conditioned")
    if study.prompt_embeddings and not study.prompts:
        raise ValueError("--prompt-embeddings: give the --prompts whose stored embeddings to use")
    if study.prompts and not text:
        raise ValueError("--prompts: this recipe is not text-conditioned (its data stores no text embeddings)")
    if study.prompt_embeddings:
        return stored_prompt_embeddings(study.prompt_embeddings, list(study.prompts))
    return None


def train_contender(study: QualityStudy, contender: Contender, base: Config, device: torch.device
                    ) -> tuple[Config, Path, dict]:
    """Train (or resume) one contender to the budget; (its config, run folder, training summary)."""
    config = budgeted_config(study.config, study.minutes, device, study.overrides, keep_checkpoints=0,
                             ckpt_minutes=study.minutes * study.curve_every)
    config.model = ModelConfig(contender.backbone, contender.preset, dict(contender.options),
                               checkpointing=base.model.checkpointing, inpainting=base.model.inpainting)
    run = Path(study.runs or Path(study.out) / "runs") / contender.name
    return config, run, train_to_budget(config, run)  # a rerun continues each contender to the (new) budget


def run_quality(study: QualityStudy) -> list[dict]:
    """Train and score every contender; returns all records of `out/quality.jsonl`."""
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quality.jsonl"
    device = pick_device(study.device)
    base = load_config(study.config, study.overrides)
    if base.optim.schedule != "constant":
        raise ValueError("bench quality reads each shorter budget from a checkpoint of the longest run, so "
                         "optim.schedule must be constant (a cosine over the longest budget would be read "
                         "mid-decay): add --set optim.schedule=constant")
    prompt_context = check_prompts(study, base)  # before any training: a text model needs its prompts
    scorer = prepare_scorer(study, base, device)
    steps = ([("consistency", n) for n in CONSISTENCY_NFES] if base.objective.name == "consistency"
             else [(study.sampler, n) for n in study.nfes])
    marks = [round(study.minutes * study.curve_every * i, 6) for i in range(1, round(1 / study.curve_every) + 1)]
    for text in study.contenders:
        contender = parse_contender(text)
        records = read_records(path)
        plan = score_plan(study, contender.name, marks, steps, records)
        done = {r["key"] for r in records}
        if plan is not None and all(record_key(contender.name, m, *setting) in done
                                    for m, todo in plan.items() for setting in todo):
            print(f"{contender.name}: scored before, skipped", flush=True)
            continue
        config, run, summary = train_contender(study, contender, base, device)
        # The time checkpoints in order; a run that reached its budget between two marks has one less.
        ckpts = list_checkpoints(run)[-len(marks):]
        at = dict(zip(marks[-len(ckpts):], ckpts))
        grid_nfe = max(n for _, n in steps)
        score_in_order(study, contender.name, marks, steps, at, lambda mark, todo: score_checkpoint(
            study, scorer, contender, at[mark], mark, mark == marks[-1], todo, summary, grid_nfe, prompt_context))
    return read_records(path)


def score_in_order(study: QualityStudy, name: str, marks: list[float], steps: list[tuple[str, int]],
                   available, score: Callable[[float, list[tuple[str, int, float | None]]], None]) -> None:
    """Score one contender as `score_plan` says, skipping what `out/quality.jsonl` holds: with `nfe_at_best`
    the sweep first, then each mark in `available` from the full budget down (a run cut short keeps its main
    scores). `score(mark, todo)` scores the (sampler, NFE, cfg) of `todo` at one mark and appends the records."""
    path = Path(study.out) / "quality.jsonl"
    done = {r["key"] for r in read_records(path)}
    plan = score_plan(study, name, marks, steps, read_records(path))
    if plan is None:  # the sweep at the top NFE decides the scale of every other score
        top = max(n for _, n in steps)
        score(marks[-1], [(s, n, c) for s, n in steps if n == top for c in study.cfgs
                          if record_key(name, marks[-1], s, n, c) not in done])
        records = read_records(path)
        plan, done = score_plan(study, name, marks, steps, records), {r["key"] for r in records}
    for mark in sorted(available, reverse=True):
        todo = [setting for setting in plan[mark] if record_key(name, mark, *setting) not in done]
        if todo:
            score(mark, todo)


def score_plan(study: QualityStudy, name: str, marks: list[float], steps: list[tuple[str, int]],
               records: list[dict]) -> dict[float, list[tuple[str, int, float | None]]] | None:
    """What to score at each budget mark: (sampler, NFE, cfg). With `nfe_at_best`, every scale at the top NFE
    and the other NFE and the curve at the scale that scored best there; None until that sweep is scored."""
    cfgs = study.cfgs or (None,)
    if study.nfe_at_best and len(cfgs) > 1:
        grid_nfe = max(n for _, n in steps)
        sweep = [r for r in records if r.get("name") == name and r.get("minutes") == marks[-1]
                 and r.get("nfe") == grid_nfe and r.get("cfg") in cfgs]
        if len({r["cfg"] for r in sweep}) < len(cfgs):
            return None
        key, _ = quality_metric(sweep)
        cfgs = (min(sweep, key=lambda r: r[key])["cfg"],)
        full = [(s, n, c) for s, n in steps for c in (study.cfgs if n == grid_nfe else cfgs)]
    else:
        full = [(s, n, c) for s, n in steps for c in cfgs]
    curve = ([x for x in full if x[1] == study.curve_nfe and x[2] in cfgs]
             or [x for x in full if x[1] == steps[-1][1] and x[2] in cfgs])
    return {m: full if m == marks[-1] else curve for m in marks}


def score_checkpoint(study: QualityStudy, scorer: Scorer, contender: Contender, ckpt: Path, mark: float,
                     final: bool, todo: list[tuple[str, int, float | None]], summary: dict, grid_nfe: int,
                     prompt_context: torch.Tensor | None = None) -> None:
    """Score one checkpoint at each (sampler, NFE, cfg) of `todo` (cfg None: the run's); records are appended
    as they are made."""
    pipe = Pipeline.load(ckpt, device=scorer.device)
    state = json.loads((ckpt / "state.json").read_text())
    for sampler, nfe, cfg in todo:
        n = study.samples if final else study.curve_samples
        settings = pipe.settings.with_(steps=nfe, sampler=sampler, cfg=cfg)
        t0 = time.perf_counter()
        images, labels = pipe.generate(n, seed=study.seed, settings=settings, batch_size=study.sample_batch,
                                       progress=False, prompts=list(study.prompts or []) or None,
                                       prompt_context=prompt_context)
        sample_seconds = time.perf_counter() - t0
        record = {"key": record_key(contender.name, mark, sampler, nfe, cfg), "name": contender.name,
                  "backbone": contender.backbone, "preset": contender.preset, "options": contender.options,
                  "config": str(study.config), "minutes": mark, "checkpoint_step": state["step"],
                  "checkpoint_train_seconds": state.get("train_seconds"), "sampler": sampler, "nfe": nfe,
                  "cfg": settings.cfg, "samples": n, "sample_seconds": sample_seconds, **summary,
                  **scorer(images, labels), **environment(scorer.device)}
        append_record(Path(study.out) / "quality.jsonl", record)
        print(json.dumps(record), flush=True)
        if final and nfe == grid_nfe:  # of a sweep, one grid per scale: the eye's pick may differ from FD's
            sweep = study.cfgs is not None and len(study.cfgs) > 1
            grid, nrow = class_rows(images, labels)
            name = re.sub(r'[^A-Za-z0-9_.-]', '_', contender.name) + (f"-cfg{settings.cfg:g}" if sweep else "")
            save_grid(grid, Path(study.out) / f"samples-{name}.png", nrow=nrow)
