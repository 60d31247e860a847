"""A few-step student of any trained generator, in one command (`liquidgen distill TEACHER`): sCD
(objectives/consistency.py) with a recipe preset's objective, optimiser, training length and sampler, and the
teacher's own model, data and hardware settings, so that a run on one's own images distils without a config written
to mirror its architecture.

What comes from where:
- the recipe (default: the sCD preset measured for the teacher's backbone in benchmarks/RESULTS.md's few-step
  section, `RECIPES`): `objective`, `optim`, `train` and the sampler of `sample` (sampler, grid, steps);
- the teacher's checkpoint (its `config.json`): `model` (plus sCM's `logvar` head for adaptive weighting; its time
  embedding must be the teacher's, since the student starts from the teacher's weights), `data`, the rest of
  `sample` (labels per row, grid size) and `train`'s device, precision and compilation (what its hardware ran);
- guidance: the teacher's own sampling scale is distilled in (`objective.options.teacher_cfg`, sCM's guided
  teacher), so the student samples at cfg 1, one network evaluation per step.
`--set` overrides anything after that.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .checkpoint import resolve
from .config import Config, from_dict, load_config
from .spec import embedded_time_scale

# found through this file, not the working folder, so that `liquidgen distill` runs from anywhere in a checkout or an
# editable install (the presets live in the repository's configs/, beside src/)
PRESETS = Path(__file__).resolve().parents[2] / "configs"
# The sCD preset measured for each teacher backbone; any other backbone takes the UNet's. The two differ in their
# length (the steps each ran in its measured minutes), so the cosine ends where it did in the measurement.
RECIPES = {"unet": PRESETS / "mnist-unet-scm.yaml", "liquid": PRESETS / "mnist-liquid-S-scm.yaml"}
# What the teacher's hardware ran, kept for its student: a preset's defaults (eager, on whatever device) would
# train a GPU user's student several times slower than its teacher (sCD eager ran at 570 img/s, compiled 4,489).
HARDWARE = ("device", "precision", "compile", "compile_mode", "compile_tuning")


def student_config(teacher: str | Path, recipe: str | Path | None = None) -> Config:
    """The sCD student's config of the checkpoint or run folder `teacher`, by `recipe` (default: its backbone's in
    RECIPES; see the module docstring)."""
    ckpt = resolve(teacher)
    taught = from_dict(Config, json.loads((ckpt / "config.json").read_text()))
    if taught.objective.name == "consistency":
        raise ValueError(f"{teacher} is a consistency model already ({ckpt}); distil a model trained with another "
                         "objective (flow, diffusion, trigflow)")
    plan = load_config(recipe or RECIPES.get(taught.model.name, RECIPES["unet"]))
    if plan.objective.name != "consistency" or plan.objective.options.get("mode") != "cd":
        raise ValueError(f"--recipe {recipe} is not an sCD config (objective consistency, mode cd); "
                         "e.g. configs/mnist-unet-scm.yaml")
    objective = dataclasses.replace(plan.objective, options={**plan.objective.options, "teacher": str(teacher),
                                                             "teacher_cfg": taught.sample.cfg})
    train = dataclasses.replace(plan.train, init_from="",  # sCD starts from its teacher (train.start_run)
                                **{key: getattr(taught.train, key) for key in HARDWARE})
    sample = dataclasses.replace(taught.sample, sampler=plan.sample.sampler, grid=plan.sample.grid,
                                 steps=plan.sample.steps, cfg=1.0, cfg_interval=None)
    model = dataclasses.replace(taught.model, options={**taught.model.options, "logvar": True})
    return dataclasses.replace(plan, model=model, data=taught.data, objective=objective, train=train, sample=sample)


def default_out(teacher: str | Path) -> Path:
    """runs/<the teacher's run name>-scd (a checkpoint folder names its run: run/checkpoints/step-N)."""
    teacher = Path(teacher)
    run = teacher.parents[1] if resolve(teacher) == teacher else teacher
    return Path("runs") / f"{run.resolve().name}-scd"


def advice(teacher: str | Path) -> list[str]:
    """What to know before spending a GPU on this student."""
    scale = embedded_time_scale(json.loads((resolve(teacher) / "model.json").read_text()))
    if scale is None or float(scale) == 1.0:
        return []
    # sCM (sec. 4.1): the tangent is a JVP along time, which sin/cos features of 1000 t swamp
    return [f"note: {teacher} embeds time at time_scale {scale:g}; sCD did far better from a teacher trained at 1 "
            "(UNet-28 on MNIST, 2-step FD 10.72 at 1000 against 3.75 at 1: configs/mnist-unet-scm.yaml). Train the "
            "teacher with --set model.options.time_scale=1 where you can."]
