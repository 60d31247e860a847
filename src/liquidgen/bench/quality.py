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
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import list_checkpoints
from ..config import ModelConfig, load_config
from ..data import load_dataset, load_split
from ..distributed import pick_device
from ..evaluation.classifier import fit_classifier, save_classifier
from ..evaluation.evaluate import evaluate, generate, load_reference
from ..plots import save_grid
from ..train import train
from .records import append_record, environment, read_records

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
    import yaml

    parts = text.split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"contender {text!r}: expected backbone:preset[:key=value,...]")
    options = {}
    for item in filter(None, (parts[2] if len(parts) == 3 else "").split(",")):
        if "=" not in item:
            raise ValueError(f"contender {text!r}: option {item!r} is not key=value")
        key, value = item.split("=", 1)
        options[key] = yaml.safe_load(value)
    return Contender(parts[0], parts[1], options)


def record_key(name: str, minutes: float, sampler: str, nfe: int) -> str:
    return f"{name}|{minutes:g}min|{sampler}|nfe{nfe}"


def _training_summary(run: Path) -> dict:
    log = [r for r in read_records(run / "metrics.jsonl") if "loss" in r]
    steady = log[2:] or log  # the first windows include compilation and warm-up
    return {"steps": log[-1]["step"], "train_seconds": log[-1].get("train_seconds"),
            "train_img_s": statistics.median(r["images_per_s"] for r in steady), "loss": log[-1]["loss"],
            "peak_gb": max((r.get("max_memory_gb", 0.0) for r in log), default=0.0)}


def class_rows(images: torch.Tensor, labels: torch.Tensor | None, per_row: int = 10) -> tuple[torch.Tensor, int]:
    """Up to `per_row` samples per class, one row per class (or the first per_row^2 if unlabelled)."""
    if labels is None:
        return images[: per_row * per_row], per_row
    picks = [torch.nonzero(labels == c).flatten()[:per_row] for c in labels.unique()[:per_row]]
    return images[torch.cat(picks)], per_row


def run_quality(config_path: str | Path, contenders: list[str], out: str | Path, minutes: float,
                curve_every: float = 0.25, nfes: tuple[int, ...] = NFES, curve_nfe: int = 16,
                samples: int = 2000, curve_samples: int = 1000, sampler: str = "euler",
                classifier: str | Path | None = None, inception_weights: str | None = None,
                reference: tuple[str, str | None] | None = None, overrides: tuple[str, ...] = (),
                device: str = "auto", seed: int = 0, cache_dir: str | Path = "~/.cache/liquidgen/eval",
                runs: str | Path | None = None) -> list[dict]:
    """Train and score every contender; returns all records of `out/quality.jsonl`. `reference` is the
    (dataset, root) to score against (default: the config's data; needed for precomputed latents).
    Run folders go to `runs` (default: out/runs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quality.jsonl"
    done = {r["key"] for r in read_records(path)}
    dev = pick_device(device)
    base = load_config(config_path, overrides)
    if base.optim.schedule != "constant":
        raise ValueError("bench quality stops runs by time, so optim.schedule must be constant (a cosine "
                         "schedule needs its length in steps): add --set optim.schedule=constant")
    ref_name, ref_root = reference or (base.data.name, base.data.root)
    if ref_name == "precomputed":
        raise ValueError("latent (precomputed) data: name the pixel dataset to score against with --reference")
    size = None if reference else base.data.image_size  # the size the model is trained at
    ref = load_reference(ref_name, ref_root, "test", size, None)
    ref_id = f"{ref_name}-{ref.size}px-{len(ref)}"
    if classifier is not None and not Path(classifier).expanduser().is_file():
        print(f"fitting the reference classifier {classifier} on {ref_name} (fixed recipe)", flush=True)
        # No test split (e.g. a folder): fit_classifier holds out the last training images instead.
        net, info = fit_classifier(load_dataset(ref_name, ref_root, size, split="train"),
                                   load_split(ref_name, ref_root, size, "test", None), dev)
        info.update(dataset=ref_name, root=str(ref_root))
        save_classifier(net, info, Path(classifier).expanduser())
    for n in sorted({samples, curve_samples}):
        if f"floor|{n}" not in done:  # what n real images score: no model can be told apart below it
            real = load_dataset(ref_name, ref_root, size, split="train")
            pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
            scores = evaluate(real.images[pick], real.labels[pick], ref, ref_id, classifier=classifier,
                              inception_weights=inception_weights, cache_dir=cache_dir, device=dev)
            append_record(path, {"key": f"floor|{n}", "floor": True, "samples": n, **scores, **environment(dev)})
    settings = ([("consistency", n) for n in CONSISTENCY_NFES] if base.objective.name == "consistency"
                else [(sampler, n) for n in nfes])
    marks = [round(minutes * curve_every * i, 6) for i in range(1, round(1 / curve_every) + 1)]

    for text in contenders:
        contender = parse_contender(text)
        wanted = {m: settings if m == marks[-1] else [(s, n) for s, n in settings if n == curve_nfe] or settings[-1:]
                  for m in marks}
        if all(record_key(contender.name, m, s, n) in done for m, todo in wanted.items() for s, n in todo):
            print(f"{contender.name}: scored before, skipped", flush=True)
            continue
        config = load_config(config_path, [
            *overrides, f"train.minutes={minutes}", f"train.ckpt_minutes={minutes * curve_every}",
            "train.steps=1000000000", "train.sample_every=0", "train.eval_every=0", "train.ckpt_every=0",
            "train.keep_checkpoints=0", "train.log_every=100", f"train.device={dev}"])
        config.model = ModelConfig(contender.backbone, contender.preset, dict(contender.options),
                                   base.model.inpainting)
        run = Path(runs or out / "runs") / contender.name
        t0 = time.perf_counter()
        train(config, run, resume=True)
        summary = {**_training_summary(run), "wall_s": time.perf_counter() - t0}
        # The time checkpoints in order; a run that reached its budget between two marks has one less.
        ckpts = list_checkpoints(run)[-len(marks):]
        for mark, ckpt in zip(marks[-len(ckpts):], ckpts):
            state = json.loads((ckpt / "state.json").read_text())
            for sampler_name, nfe in wanted[mark]:
                key = record_key(contender.name, mark, sampler_name, nfe)
                if key in done:
                    continue
                n = samples if mark == marks[-1] else curve_samples
                t0 = time.perf_counter()
                images, labels = generate(ckpt, n, seed=seed, steps=nfe, sampler=sampler_name, device=dev,
                                          progress=False)
                sample_seconds = time.perf_counter() - t0
                scores = evaluate(images, labels, ref, ref_id, classifier=classifier,
                                  inception_weights=inception_weights, cache_dir=cache_dir, device=dev)
                record = {"key": key, "name": contender.name, "backbone": contender.backbone,
                          "preset": contender.preset, "options": contender.options, "config": str(config_path),
                          "minutes": mark, "checkpoint_step": state["step"],
                          "checkpoint_train_seconds": state.get("train_seconds"), "sampler": sampler_name,
                          "nfe": nfe, "cfg": config.sample.cfg, "samples": n, "sample_seconds": sample_seconds,
                          **summary, **scores, **environment(dev)}
                append_record(path, record)
                print(json.dumps(record), flush=True)
                if mark == marks[-1] and nfe == max(n for _, n in settings):
                    grid, nrow = class_rows(images, labels)
                    save_grid(grid, out / f"samples-{re.sub(r'[^A-Za-z0-9_.-]', '_', contender.name)}.png", nrow=nrow)
    return read_records(path)
