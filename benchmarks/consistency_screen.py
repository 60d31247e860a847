"""A small, CPU-sized screen of sCD recipes (issue 21) before a GPU call is spent on one: a TrigFlow UNet teacher on
the bundled 8x8 digits, then one sCD student per recipe from its EMA, each for the same steps, scored at 1, 2 and 4
consistency steps against the teacher's 50 Euler steps (classifier FD on 2,000 class-balanced samples, in the
digits' reference network; a screen, not a result: the GPU study is few_step.py on MNIST).

    python benchmarks/consistency_screen.py --out /tmp/screen                     # the recipes in RECIPES
    python benchmarks/consistency_screen.py --out /tmp/screen --recipes base p_mean_-1
    python benchmarks/consistency_screen.py --backbone liquid ...   (a flow LiquidGen-tiny teacher and its students)

(LiquidGen-tiny at patch 1 trained at 12 img/s here, batch 16, two cores shared: a 3,000-step teacher takes hours on
this CPU, minutes on a GPU with --set train.device=cuda.)

Runs resume (a trained stage is reused), so recipes can be added to a screen already made. At 1,000 student steps
a student's seed moved its 2-step score 4x (results/2026-12-04-consistency-screen): compare recipes over several
--seed replicates, never one. `--trajectory N` keeps a student checkpoint every N steps and scores each at 2 and 1
steps with its EMA and its raw weights: whether a score reads a settled model or one point of a swinging one. `--sct`
also trains each recipe as sCT from scratch for the teacher's and the student's steps together.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from liquidgen.bench.budget import training_summary
from liquidgen.checkpoint import checkpoint_step, list_checkpoints
from liquidgen.config import load_config
from liquidgen.evaluation.evaluate import Scorer
from liquidgen.generate import Pipeline
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.preset=tiny", "data.name=digits", "data.image_size=8", "train.device=cpu", "train.sample_every=0",
         "train.ckpt_every=0", "train.log_every=100", "train.keep_checkpoints=1"]
# The config's noise density and schedule before 2026-12-06 (p_mean -1 / p_std 1.4 and a cosine since), which every
# recipe below was written against: applied first, so that the records of earlier screens stay reproducible.
PINNED = ["objective.options.p_mean=-2.0", "objective.options.p_std=1.6", "optim.schedule=constant"]
# The time embedding's scale every screen before 2026-12-06's time-scale screen ran at (the configs set 1 since):
# applied before --set, which changes it (--set model.options.time_scale=1 screens the configs as shipped).
SCREENED_AT = ["model.options.time_scale=1000"]
# Per --backbone: the teacher's and the students' configs, and what the teacher needs at the screen's size. LiquidGen:
# its flow flagship and sCD configs, at patch 1 (their patch 4 would leave 8x8 digits 2x2 tokens) and the demo's
# tiny-model rate (the S config's 2e-4 is for 54M parameters).
BACKBONES = {"unet": ("mnist-unet-trigflow.yaml", "mnist-unet-scm.yaml", [], []),
             "liquid": ("mnist-liquid-S.yaml", "mnist-liquid-S-scm.yaml", ["model.options.patch_size=1"],
                        ["optim.lr=1e-3"])}
# Each recipe: overrides of configs/mnist-unet-scm.yaml (or the backbone's sCD config, which has the same options)
# after PINNED. "base" is the recipe the screens and the first GPU student ran (the config's lr was 5e-5 until
# 2026-12-05, 2e-5 since), pinned for the same reason.
DENSITY = ["objective.options.p_mean=-1.0", "objective.options.p_std=1.4"]  # sCM's CIFAR-10 density
FAST = ["train.precision=bf16", "objective.options.fp32_tangent_only=true"]  # the GPU's fast option
# the config since 2026-12-06 (results/2026-12-06-scd-schedule-h100), and the base of the screens after it
SHIPPED = [*DENSITY, "optim.lr=2e-5", *FAST, "optim.schedule=cosine"]
RECIPES = {
    "base": ["optim.lr=5e-5"],
    "p_mean_-1": DENSITY,
    "lr_2e-4": ["optim.lr=2e-4"],
    "no_warmup": ["objective.options.tangent_warmup=0"],
    "p_mean_-1_lr_2e-4": [*DENSITY, "optim.lr=2e-4"],
    "p_mean_-1_no_warmup": [*DENSITY, "objective.options.tangent_warmup=0"],
    "p_mean_0": ["objective.options.p_mean=0.0", "objective.options.p_std=1.4"],
    "p_mean_-0.5": ["objective.options.p_mean=-0.5", "objective.options.p_std=1.4"],
    # against the swings that --trajectory showed: a smaller step, or an EMA over ~200 steps from the start
    "lr_1e-5": ["optim.lr=1e-5"],
    "lr_2e-5": ["optim.lr=2e-5"],
    "ema_0.995": ["train.ema_decay=0.995", "train.ema_warmup=false"],
    # bf16 autocast for the teacher and the student's gradient pass, fp32 for the tangent alone
    "lr_2e-5_bf16": ["optim.lr=2e-5", *FAST],
    # for sCT from scratch, which no learning rate alone helped: sCM's CIFAR-10 density at a rate between the two
    # best, and with dropout, the regulariser improved consistency training relies on (Song & Dhariwal 2023)
    "p_mean_-1_lr_1e-4": [*DENSITY, "optim.lr=1e-4"],
    "p_mean_-1_lr_1e-4_dropout": [*DENSITY, "optim.lr=1e-4", "model.options.dropout=0.2"],
    # sCM's CIFAR-10 density at the shipped rate and precision: lr 1e-4 swung, and p_mean -2 trains little where
    # one step starts (sigma 80: P(sigma > 5) is 1.2% under LogNormal(-2, 1.6), 3% under (-1, 1.4))
    "p_mean_-1_lr_2e-5_bf16": [*DENSITY, "optim.lr=2e-5", *FAST],
    "p_mean_-1_lr_2e-5_bf16_cosine": SHIPPED,
    # the decay steadied the end (results/2026-12-06-consistency-screen-density): does it allow a higher peak rate,
    # which at a constant rate swung (lr 5e-5 in the first screens)? (the later lr overrides the earlier)
    "p_mean_-1_lr_5e-5_bf16_cosine": [*SHIPPED, "optim.lr=5e-5"],
    # Adam's second moment over ~100 steps instead of ~1,000 (EDM2's beta2 0.99): the gradient's scale moves while the
    # tangent warms up and the target follows the student, which a long average tracks late
    "p_mean_-1_lr_2e-5_bf16_cosine_beta2_0.99": [*SHIPPED, "optim.betas=[0.9, 0.99]"],
    # the tangent's warm-up over 250 steps instead of 1,000: a quarter of a 4,000-step run (a fifth of a 3-minute GPU
    # run) trains toward a partial target
    "p_mean_-1_lr_2e-5_bf16_cosine_warmup_250": [*SHIPPED, "objective.options.tangent_warmup=250"],
    # and the other way: 2,000 steps, half of a 4,000-step run
    "p_mean_-1_lr_2e-5_bf16_cosine_warmup_2000": [*SHIPPED, "objective.options.tangent_warmup=2000"],
    # the plain mean of the per-sample loss instead of sCM's learned weighting by time (adaptive_loss): with the density
    # at noisier times, the learned log-variance may down-weight the low-noise times where 2-step samples end
    "p_mean_-1_lr_2e-5_bf16_cosine_unweighted": [*SHIPPED, "objective.options.adaptive_weighting=false"],
    # sCT's rate (lr 1e-4 at time_scale 1 trained it, its raw weights swinging at a constant rate) decayed as sCD's is,
    # in the shipped config's precision: the GPU's sCT recipe
    "p_mean_-1_lr_1e-4_bf16_cosine": [*SHIPPED, "optim.lr=1e-4"],
    # which of the two changes from "p_mean_-1_lr_1e-4" cost sCT at the end (its EMA 5.72 / 6.63 against 4.56 / 4.96):
    # bf16 alone, at the constant rate
    "p_mean_-1_lr_1e-4_bf16": [*DENSITY, "optim.lr=1e-4", *FAST],
    # sCT at the constant rate that recipe found best (4.54 / 4.71 at 2 steps): is a higher peak faster from scratch?
    "p_mean_-1_lr_2e-4_bf16": [*DENSITY, "optim.lr=2e-4", *FAST],
    # sCT's one step lags sCD's on MNIST (H100, 12.3 minutes: 9.09 against 5.85, results/2026-12-07-sct-constant-
    # 2e-4-h100) while two steps nearly meet: that recipe with times shifted toward noise, where one step starts
    "p_mean_-0.5_lr_2e-4_bf16": ["objective.options.p_mean=-0.5", "objective.options.p_std=1.4", "optim.lr=2e-4",
                                 *FAST],
    # sCT's one step, which no noise density helped (p_mean -0.5): a longer average of its swinging raw weights. At
    # 4,000 steps the EMA warm-up caps the decay at 0.9978 (about EDM2's power EMA at sigma_rel 0.09), so a longer
    # ema_decay changes nothing; EDM2's power EMA at sigma_rel 0.2 averages about the last third of the run
    "p_mean_-1_lr_2e-4_bf16_ema_std_0.2": [*DENSITY, "optim.lr=2e-4", *FAST, "train.ema_std=0.2"],
    # one step lags two at time_scale 1 (2.06x and 1.21x the teacher on MNIST): the shipped recipe with times shifted
    # toward noise, where a one-step sample starts (P(sigma > 5) 3% under LogNormal(-1, 1.4), 7% under (-0.5, 1.4))
    "p_mean_-0.5_lr_2e-5_bf16_cosine": [*SHIPPED, "objective.options.p_mean=-0.5"],
    # the two changes that each helped one step at time_scale 1 (lr 5e-5: 3.95 / 4.09, p_mean -0.5: 4.40 / 4.39,
    # shipped 4.81 / 4.74), together
    "p_mean_-0.5_lr_5e-5_bf16_cosine": [*SHIPPED, "objective.options.p_mean=-0.5", "optim.lr=5e-5"],
    # guidance folded into the target (sCM's guided distillation): the GPU student (lr 1e-4) scored best at cfg 1.25
    # on top of an unguided target (results/2026-12-06-scd-lr-1e-4-h200), which costs two network evaluations per
    # step; a student distilled from the teacher guided at 1.25 would need one. Compare at --cfg 1 against the
    # unguided recipe at --cfg 1 1.25
    "p_mean_-1_lr_1e-4_bf16_cosine_teacher_cfg_1.25": [*SHIPPED, "optim.lr=1e-4", "objective.options.teacher_cfg=1.25"],
    # folded at 1.25, one step (2.84 / 2.80) still lagged the unguided student guided at 1.25 (1.92 / 1.90): a stronger
    # fold, as the one-step map may need more guidance than the teacher's best scale
    "p_mean_-1_lr_1e-4_bf16_cosine_teacher_cfg_1.5": [*SHIPPED, "optim.lr=1e-4", "objective.options.teacher_cfg=1.5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run folders and screen.jsonl")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES), help="recipes to run")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="unet", help="the teacher's and students' "
                        "configs (BACKBONES); the teacher trained once per --out, so give each backbone its own")
    parser.add_argument("--teacher-steps", type=int, default=4000,
                        help="teacher steps (TrigFlow UNet or flow LiquidGen)")
    parser.add_argument("--student-steps", type=int, default=1500, help="sCD steps per recipe")
    parser.add_argument("--batch", type=int, default=128, help="batch size of teacher and students")
    parser.add_argument("--samples", type=int, default=2000, help="class-balanced samples per score")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sct", action="store_true", help="also train each recipe as sCT (mode ct, from scratch) for "
                        "the teacher's and the student's steps together: consistency training at sCD's total cost")
    parser.add_argument("--trajectory", type=int, default=0, help="students checkpoint every this many steps, each "
                        "scored at 2 and 1 steps with EMA and raw weights (0: the final checkpoint only)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override of every stage "
                        "(teacher, students, sCT), e.g. model.options.time_scale=1: a screen folder trains its teacher "
                        "once, so give each such screen its own --out")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0], help="guidance scales at which the teacher's "
                        "50 Euler steps and the students' final 1, 2 and 4 steps are scored (trajectories: cfg 1 only)")
    parser.add_argument("--seed", type=int, default=0, help="the students' train.seed (a replicate: runs and "
                        "records named -seedN; the teacher is shared)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher_config, student_config, small, teacher_small = BACKBONES[args.backbone]
    scorer = Scorer("digits", None, None, "cpu", size=8, cache_dir=out / "cache", second_classifier=False)
    records = out / "screen.jsonl"
    done = {json.loads(line)["key"] for line in records.read_text().splitlines()} if records.exists() else set()

    def stage(name: str, config_file: str, steps: int, overrides: list[str]) -> Path:
        run = out / name
        if not (run / "checkpoints").exists():
            train(load_config(ROOT / "configs" / config_file,
                              [*SMALL, *small, *SCREENED_AT, f"train.steps={steps}", f"train.batch_size={args.batch}",
                               *args.set, *overrides]), run)
        return run

    def score(name: str, run: Path, sampler: str, steps: int, ema: bool = True, ckpt: Path | None = None,
              cfg: float = 1.0) -> None:
        """Score the run's newest checkpoint, or `ckpt` (a trajectory point: its step and weights in the key), at
        guidance `cfg` (in the key unless 1, the scale of every record before --cfg)."""
        key = (f"{name}|{sampler}|{steps}" + (f"|step{checkpoint_step(ckpt)}|{'ema' if ema else 'raw'}" if ckpt else "")
               + (f"|cfg{cfg:g}" if cfg != 1 else ""))
        if key in done:
            return
        pipe = Pipeline.load(ckpt or run, ema=ema, device="cpu", compile="off")
        settings = pipe.settings.with_(sampler=sampler, steps=steps, cfg=cfg,
                                       grid="consistency" if sampler == "consistency" else "uniform")
        images, labels = pipe.generate(args.samples, seed=0, settings=settings, progress=False)
        s = scorer(images, labels)
        record = {"key": key, "stage": name, "sampler": sampler, "steps": steps, "ema": ema, "cfg": cfg,
                  **training_summary(run),
                  "classifier_fd": s["classifier_fd"], "classifier_fd_ci95": s["classifier_fd_ci95"],
                  "class_accuracy": s.get("class_accuracy")}
        with records.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{key}: FD {s['classifier_fd']:.2f} [{s['classifier_fd_ci95'][0]:.2f}, "
              f"{s['classifier_fd_ci95'][1]:.2f}]", flush=True)

    teacher = stage("teacher", teacher_config, args.teacher_steps, ["optim.warmup_steps=200", *teacher_small])
    for steps in (2, 4, 50):
        score("teacher", teacher, "euler", steps)
    for cfg in args.cfg:
        score("teacher", teacher, "euler", 50, cfg=cfg)
    for steps in (1, 2, 4):  # the students' starting point: the teacher's own x0 jumps
        score("teacher", teacher, "consistency", steps)
    for recipe in args.recipes:
        name = f"scd-{recipe}" + (f"-seed{args.seed}" if args.seed else "")
        keep = [f"train.ckpt_every={args.trajectory}", "train.keep_checkpoints=0"] if args.trajectory else []
        student = stage(name, student_config, args.student_steps,
                        [f"objective.options.teacher={teacher}", f"train.seed={args.seed}", *PINNED, *RECIPES[recipe],
                         *keep])
        for cfg in args.cfg:
            for steps in (1, 2, 4):
                score(name, student, "consistency", steps, cfg=cfg)
        runs = [(name, student)]
        if args.sct:
            sct = "sct-" + name.removeprefix("scd-")
            runs.append((sct, stage(sct, student_config, args.teacher_steps + args.student_steps,
                                    ["objective.options.mode=ct", 'objective.options.teacher=""',
                                     f"train.seed={args.seed}", *PINNED, *RECIPES[recipe], *keep])))
            for cfg in args.cfg:
                for steps in (1, 2, 4):
                    score(sct, runs[-1][1], "consistency", steps, cfg=cfg)
        for name, run in runs if args.trajectory else []:
            for ckpt in list_checkpoints(run):
                for ema in (True, False):
                    for steps in (2, 1):  # 2 first: the order of the records before 1 was added
                        score(name, run, "consistency", steps, ema, ckpt)


if __name__ == "__main__":
    main()
