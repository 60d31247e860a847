"""Few-step MNIST generation (issue 21): a teacher, its sCD student, and an sCT model trained from scratch for the
teacher's and the student's minutes together, each scored with 10,000 class-balanced samples.

    python benchmarks/few_step.py --mnist-root .carry/data --runs /tmp/runs --out $OUT teacher scd sct
    python benchmarks/few_step.py --backbone liquid ...       (a flow LiquidGen-S teacher and students)

Stages, each resumable (a run trained to its budget is reused, a scored record skipped), so they can span calls
(a call that cannot keep its machine hands the teacher on with --teacher-run):
- teacher: configs/mnist-unet-trigflow.yaml (TrigFlow UNet-28) or configs/mnist-liquid-S.yaml (flow LiquidGen-S, at
  the students' time_scale 1) for --teacher-minutes of compiled training (CUDA graphs);
- scd: `liquidgen distill`'s student of the teacher (its model, with configs/mnist-unet-scm.yaml's or
  mnist-liquid-S-scm.yaml's recipe), from the teacher's EMA, for --distill-minutes, distilling the teacher guided at
  its best scale (--teacher-cfg);
- sct: configs/mnist-unet-sct.yaml or mnist-liquid-S-sct.yaml from scratch, for --teacher-minutes +
  --distill-minutes.
Scores, in both of `bench quality`'s feature spaces (the reference networks of the MNIST head-to-head, so the
numbers compare with its table), FD with a bootstrap 95% interval:
- teacher: guidance swept at Euler 50 steps (--cfg), then Euler, Heun and DPM-Solver++(2M), each on the uniform
  and on the Karras grid, at each NFE of --nfes at the best scale: what the teacher gives without distillation;
  and the teacher sampled as a consistency model at the students' steps (its x0 jumps): where sCD starts from;
- students: consistency sampling at 1, 2 and 4 steps at each --student-cfg (1: the guidance distilled in) and
  each --student-grids (the re-noising angles of the steps after the first); with
  --trajectory K also at 1 and 2 steps at each of K checkpoints through the budget and each --student-cfg, EMA and
  raw weights (a CPU screen found sCD students swinging between checkpoints: results/2026-12-04-consistency-screen;
  an H200 student's 1-step FD drifted up over its last 6 minutes: results/2026-12-06-scd-lr-1e-4-h200), in
  trajectory.md.
Training throughput (median img/s of metrics.jsonl) is recorded with every stage: sCM's cost against the
teacher's objective. Writes few_step.jsonl, a markdown table (few_step.md), its picture (few_step.png: FD against
network evaluations) and one grid per stage. `python benchmarks/few_step.py --replot --out DIR` redraws DIR's
picture from its records.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from liquidgen.bench.budget import budgeted_config, train_to_budget, training_summary
from liquidgen.bench.records import append_record, read_records
from liquidgen.checkpoint import checkpoint_step, list_checkpoints
from liquidgen.config import load_config
from liquidgen.distill import RECIPES, student_config
from liquidgen.evaluation.evaluate import Scorer, best_point
from liquidgen.generate import Pipeline
from liquidgen.plots import plot_curves, save_grid
from liquidgen.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_NETWORKS = ROOT / "benchmarks/results/2026-12-04-mnist-head-to-head/reference-networks"
# the teacher's samplers run on both grids, so each is reported on its best: at a few steps Karras's grid spends
# them near the data (DPM-Solver++ at NFE 2 and 4 scored 451 and 92 there, against 22 and 5 for uniform Euler)
TEACHER_SAMPLERS = ("euler", "heun", "dpmpp_2m")
TEACHER_GRIDS = ("uniform", "karras")
STUDENT_STEPS = (1, 2, 4)
TRAJECTORY_STEPS = (1, 2)  # at each checkpoint: 2 steps settle early (results/2026-12-06-time-scale-1-h100), 1 later
# each stage's config per --backbone; the sCD recipe is the one `liquidgen distill` picks for that teacher
CONFIGS = {"unet": {"teacher": "mnist-unet-trigflow.yaml", "scd": RECIPES["unet"].name, "sct": "mnist-unet-sct.yaml"},
           "liquid": {"teacher": "mnist-liquid-S.yaml", "scd": RECIPES["liquid"].name,
                      "sct": "mnist-liquid-S-sct.yaml"}}


def steps_for(sampler: str, nfe: int) -> int:
    """The most steps of `sampler` within `nfe` model evaluations (Heun: 2n - 1), at least one."""
    return max([1] + [n for n in range(1, nfe + 1) if SAMPLERS[sampler].nfe(n) <= nfe])


def teacher_overrides(backbone: str) -> list[str]:
    """The teacher embeds time as its sCD preset's student does, since the student starts from its weights (the
    flagship LiquidGen-S config keeps the default 1000; its few-step presets embed at 1)."""
    scale = load_config(ROOT / "configs" / CONFIGS[backbone]["scd"]).model.options.get("time_scale")
    return [] if scale is None else [f"model.options.time_scale={scale}"]


def teacher_run(args) -> Path:
    """The teacher's run folder: --teacher-run (trained in an earlier call, its EMA weights enough), or the
    teacher stage's under --runs."""
    return Path(args.teacher_run) if args.teacher_run else Path(args.runs) / "teacher"


def label(name: str, args) -> str:
    """A stage's name in run folders, records and tables: a student's carries --variant, so recipes compare
    side by side against one teacher."""
    return f"{name}-{args.variant}" if args.variant and name != "teacher" else name


def train_stage(name: str, args) -> tuple[Path, dict]:
    """Train (or resume) one stage to its minutes: (its run folder, its training summary)."""
    if name == "teacher" and args.teacher_run:
        return teacher_run(args), training_summary(teacher_run(args))
    minutes = {"teacher": args.teacher_minutes, "scd": args.distill_minutes,
               "sct": args.teacher_minutes + args.distill_minutes}[name]
    recipe = ROOT / "configs" / CONFIGS[args.backbone][name]
    trajectory = {"keep_checkpoints": 0, "ckpt_minutes": minutes / args.trajectory} if (
        args.trajectory and name != "teacher") else {}
    teacher_set = teacher_overrides(args.backbone) if name == "teacher" else []
    overrides = [f"data.root={args.mnist_root}", *teacher_set, *args.set]
    if name == "scd":  # as `liquidgen distill` builds it: the teacher's model, the recipe's training
        recipe = student_config(teacher_run(args), recipe)
        overrides.append(f"objective.options.teacher_cfg={teacher_scale(args)}")
    config = budgeted_config(recipe, minutes, args.device, overrides, compiled=args.device != "cpu", log_every=50,
                             **trajectory)
    run = Path(args.runs) / label(name, args)
    summary = train_to_budget(config, run)  # a rerun continues to the budget
    print(f"{name}: {summary['wall_s']:.0f} s to train (or resume) {minutes:g} min", flush=True)
    return run, summary


def teacher_scale(args) -> float:
    """The guidance scale distilled into the sCD student: --teacher-cfg, or with "best" the scale of the teacher's
    sweep with the lowest FD (so the student aims at the teacher's best samples)."""
    if args.teacher_cfg != "best":
        return float(args.teacher_cfg)
    sweep = [r for r in read_records(Path(args.out) / "few_step.jsonl")
             if r["stage"] == "teacher" and (r["sampler"], r["grid"]) == ("euler", "uniform")
             and r["steps"] == max(args.nfes)
             and r["cfg"] in args.cfg]
    if len(sweep) < len(args.cfg):
        raise SystemExit("--teacher-cfg best: score the teacher's sweep first (run the teacher stage)")
    return best_point(sweep)["cfg"]


def score(name: str, run: Path, trained: dict, plan: list[tuple[str, str, int, float]], scorer: Scorer, args,
          out: Path) -> list[dict]:
    """Score `plan`'s (sampler, grid, NFE, cfg) settings of one stage, skipping records already in few_step.jsonl;
    `trained` (the stage's training summary) goes into each record."""
    path = out / "few_step.jsonl"
    done = {r["key"]: r for r in read_records(path)}
    pipe, rows = None, []
    for sampler, grid, nfe, cfg in plan:
        key = f"{name}|{sampler}|{grid}|nfe{nfe}|cfg{cfg:g}"
        if key in done:
            rows.append(done[key])
            continue
        pipe = pipe or Pipeline.load(run, device=args.device)
        steps = steps_for(sampler, nfe)
        settings = pipe.settings.with_(sampler=sampler, grid=grid, steps=steps, cfg=cfg)
        t0 = time.perf_counter()
        images, labels = pipe.generate(args.samples, seed=0, settings=settings, batch_size=args.batch)
        seconds = time.perf_counter() - t0
        # the training summary first: its "steps" (training steps) kept as train_steps, the sampler's win
        record = {"key": key, "stage": name, "backbone": args.backbone, **trained, "train_steps": trained["steps"],
                  "sampler": sampler, "grid": grid, "steps": steps, "nfe": SAMPLERS[sampler].nfe(steps), "cfg": cfg,
                  "samples": args.samples, "sample_seconds": seconds, **scorer(images, labels)}
        append_record(path, record)
        rows.append(record)
        print(f"{key}: FD {record['classifier_fd']:.2f} [{record['classifier_fd_ci95'][0]:.2f}, "
              f"{record['classifier_fd_ci95'][1]:.2f}]  FD-2 {record['classifier2_fd']:.3f}  ({seconds:.1f} s)",
              flush=True)
        if (sampler, grid, steps) in (("euler", "uniform", max(args.nfes)), ("consistency", "consistency", 1),
                                      ("consistency", "consistency", 2)):
            save_grid(images[:100].float() / 127.5 - 1, out / f"grid-{name}-{sampler}-{steps}-cfg{cfg:g}.png", nrow=10)
    return rows


def score_trajectory(name: str, run: Path, scorer: Scorer, args, out: Path) -> None:
    """A student's FD at 1 and 2 steps at each of its checkpoints and each --student-cfg, with its EMA and its raw
    weights (records keyed ...|stepN|ema or raw|nfeK|cfgC in few_step.jsonl): whether its final score reads a
    settled model, whether one step still improves where two have settled, and whether an earlier checkpoint would
    have been the better student at its best scale."""
    path = out / "few_step.jsonl"
    done = {r["key"] for r in read_records(path)}
    for ckpt in list_checkpoints(run):
        step = checkpoint_step(ckpt)
        for ema in (True, False):
            pipe = None
            for cfg in args.student_cfg:
                for nfe in TRAJECTORY_STEPS:
                    key = f"{name}|trajectory|step{step}|{'ema' if ema else 'raw'}|nfe{nfe}|cfg{cfg:g}"
                    if key in done:
                        continue
                    pipe = pipe or Pipeline.load(ckpt, ema=ema, device=args.device)
                    settings = pipe.settings.with_(sampler="consistency", grid="consistency", steps=nfe, cfg=cfg)
                    images, labels = pipe.generate(args.samples, seed=0, settings=settings, batch_size=args.batch)
                    append_record(path, {"key": key, "stage": name, "train_steps": step, "ema": ema, "nfe": nfe,
                                         "cfg": cfg, **scorer(images, labels)})


def trajectory_table(rows: list[dict]) -> str:
    """Markdown: one row per training step and guidance scale, the classifier FD of the EMA and of the raw weights
    at each of TRAJECTORY_STEPS (records from before the scale was swept were at cfg 1)."""
    def point(r: dict) -> tuple:
        return r["stage"], r["train_steps"], r.get("cfg", 1.0)

    columns = [(nfe, ema) for nfe in TRAJECTORY_STEPS for ema in (True, False)]
    lines = ["| stage | step | cfg | " + " | ".join(f"{'EMA' if e else 'raw'} {n} step{'s' * (n > 1)} FD [95%]"
                                                  for n, e in columns) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(columns)]
    for stage, step, cfg in dict.fromkeys(point(r) for r in rows):
        cells = {(r["nfe"], r["ema"]): r for r in rows if point(r) == (stage, step, cfg)}
        lines.append(f"| {stage} | {step:,} | {cfg:g} | " + " | ".join(
            f"{cells[c]['classifier_fd']:.2f} [{cells[c]['classifier_fd_ci95'][0]:.2f}, "
            f"{cells[c]['classifier_fd_ci95'][1]:.2f}]" if c in cells else "-" for c in columns) + " |")
    return "\n".join(lines)


def stage_plan(name: str, args, rows: list[dict]) -> list[tuple[str, str, int, float]]:
    """The settings still to decide for a stage, given its scored `rows`: the teacher's sweep first, then its
    samplers on each grid at the sweep's best scale; the students' consistency steps."""
    if name != "teacher":  # one step never re-noises, so other re-noising angles start at two
        return [("consistency", g, n, c) for g in args.student_grids for n in STUDENT_STEPS for c in args.student_cfg
                if n > 1 or g == args.student_grids[0]]
    sweep = [("euler", "uniform", max(args.nfes), c) for c in args.cfg]
    scored = [r for r in rows if (r["sampler"], r["grid"], r["nfe"], r["cfg"]) in sweep]
    if len(scored) < len(sweep):
        return sweep
    best = best_point(scored)["cfg"]
    # NFE targets that give a sampler the same steps (Heun: 2n - 1) are one setting, scored once
    chosen: dict[tuple[str, str, int], tuple[str, str, int, float]] = {}
    for s in args.teacher_samplers:
        for g in TEACHER_GRIDS:
            for n in sorted(args.nfes):
                chosen.setdefault((s, g, steps_for(s, n)), (s, g, n, best))
    for n in STUDENT_STEPS:  # distillation's starting point: the teacher itself sampled as a consistency model
        chosen.setdefault(("consistency", "consistency", n), ("consistency", "consistency", n, best))
    return sweep + [x for x in chosen.values() if x not in sweep]


def table(rows: list[dict], samples: int) -> str:
    """Markdown: one row per (stage, sampler, grid, cfg), classifier FD [95%] / classifier-2 FD per NFE."""
    nfes = sorted({r["nfe"] for r in rows})
    lines = ["| stage | sampler | grid | cfg | train img/s | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---" * (5 + len(nfes)) + "|"]
    for stage, sampler, grid, cfg in dict.fromkeys((r["stage"], r["sampler"], r["grid"], r["cfg"]) for r in rows):
        cells = {r["nfe"]: f"{r['classifier_fd']:.2f} [{r['classifier_fd_ci95'][0]:.2f}, "
                           f"{r['classifier_fd_ci95'][1]:.2f}] / {r['classifier2_fd']:.3f}"
                 for r in rows if (r["stage"], r["sampler"], r["grid"], r["cfg"]) == (stage, sampler, grid, cfg)}
        speed = next(r["train_img_s"] for r in rows if r["stage"] == stage)
        lines.append(f"| {stage} | {sampler} | {grid} | {cfg:g} | {'-' if speed is None else f'{speed:,.0f}'} | "
                     + " | ".join(cells.get(n, "-") for n in nfes) + " |")
    return "\n".join(lines) + (f"\n\nCells: classifier FD [bootstrap 95%] / classifier-2 FD, {samples:,} samples each. "
                               "NFE leaves out guidance's doubling: at cfg != 1 each evaluation is two network calls "
                               "(conditional and unconditional).")


def figure_series(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """FD against network evaluations per sample, one series per (stage, sampler, grid, cfg) scored at two NFEs or
    more. Guidance counts twice (conditional and unconditional calls), unlike the table's NFE columns."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in sorted(rows, key=lambda r: r["nfe"]):
        name = f"{r['stage']}, {r['sampler']}" + (f" ({r['grid']})" if r["grid"] not in ("uniform", r["sampler"])
                                                   else "") + (f", cfg {r['cfg']:g}" if r["cfg"] != 1 else "")
        xs, ys = series.setdefault(name, ([], []))
        xs.append(r["nfe"] * (2 if r["cfg"] != 1 else 1))
        ys.append(r["classifier_fd"])
    return {k: v for k, v in series.items() if len(v[0]) > 1}


def figure(rows: list[dict], path: Path) -> Path:
    """`figure_series` drawn log-log: what distillation buys at a given cost."""
    return plot_curves(path, figure_series(rows), title=f"MNIST, {rows[0]['samples']:,} samples per point",
                       xlabel="network evaluations per sample", ylabel="classifier FD", logx=True, logy=True,
                       markers=True)


def scored_rows(out: Path, samples: int) -> list[dict]:
    """Every sampler record of `samples` samples in out/few_step.jsonl: stages scored by earlier calls (a teacher
    trained in one device call, its students in the next) share one table and picture."""
    return [r for r in read_records(out / "few_step.jsonl") if "sampler" in r and r["samples"] == samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # (no argparse choices: with nargs="*" they refuse the empty list that --replot takes)
    parser.add_argument("stages", nargs="*", help="stages to run, in order: teacher, scd, sct")
    parser.add_argument("--mnist-root", help="folder holding MNIST/raw (for the stages)")
    parser.add_argument("--replot", action="store_true", help="only redraw --out's few_step.png from its records")
    parser.add_argument("--backbone", choices=sorted(CONFIGS), default="unet",
                        help="unet: TrigFlow UNet-28 teacher; liquid: flow LiquidGen-S teacher (give each its --out)")
    parser.add_argument("--out", required=True, help="records, table and grids")
    parser.add_argument("--runs", default="runs/few-step", help="run folders (resumed to their budget)")
    parser.add_argument("--teacher-run", default="", help="a trained teacher's run folder (e.g. from an earlier "
                        "device call; its EMA weights and metrics.jsonl suffice): the teacher stage scores it "
                        "instead of training one, and sCD distils it")
    parser.add_argument("--teacher-minutes", type=float, default=3.3333, help="teacher training minutes")
    # 4: sCT then trains 7.3 minutes, which with compilation and its scores still fits one 10-minute device call
    parser.add_argument("--distill-minutes", type=float, default=4.0, help="sCD minutes (sCT: teacher + these)")
    parser.add_argument("--samples", type=int, default=10_000, help="class-balanced samples per score")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0], help="teacher's scales")
    parser.add_argument("--student-cfg", type=float, nargs="+", default=[1.0],
                        help="students' scales (1: only the guidance distilled in)")
    parser.add_argument("--student-grids", nargs="+", default=["consistency"], help="grid specs of the students' "
                        "steps, each scored (e.g. consistency consistency:theta_mid=0.9: sCM's 2-step re-noising "
                        "angle is 1.1 for CIFAR-10, not tuned for MNIST); the first also at 1 step")
    parser.add_argument("--nfes", type=int, nargs="+", default=[1, 2, 4, 8, 50], help="teacher's NFE points")
    parser.add_argument("--teacher-samplers", nargs="+", choices=TEACHER_SAMPLERS, default=list(TEACHER_SAMPLERS),
                        help="the teacher's samplers, each on both grids at each --nfes (a call short of device time "
                        "scores euler first, the rest later)")
    parser.add_argument("--teacher-cfg", default="best", help="guidance distilled into the sCD student: a scale, or "
                        "'best' for the teacher's best by FD in its sweep")
    parser.add_argument("--batch", type=int, default=2000, help="sampling batch")
    parser.add_argument("--cache", default="/tmp/liquidgen-eval-cache",
                        help="eval cache; the head-to-head's reference networks are copied there")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--trajectory", type=int, default=0, help="students: also score 1 and 2 steps (EMA and raw "
                        "weights, each --student-cfg) at this many checkpoints through their budget (0: the final one "
                        "only)")
    # one KEY=VALUE per flag: a list flag would swallow the stages written after it
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for "
                        "every stage trained in this call, repeated for more (a student recipe with --variant, e.g. "
                        "--set optim.lr=1e-4 --set objective.options.p_mean=-1.0)")
    parser.add_argument("--variant", default="", help="name of the students' recipe: their runs and records become "
                        "scd-NAME / sct-NAME, beside others against the same teacher")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        rows = scored_rows(out, args.samples)
        if not rows:
            raise SystemExit(f"no records of {args.samples:,} samples in {out / 'few_step.jsonl'} (see --samples)")
        print(figure(rows, out / "few_step.png"))
        return
    if not (args.stages and args.mnist_root) or set(args.stages) - {"teacher", "scd", "sct"}:
        parser.error("give the stages to run (teacher, scd, sct) and --mnist-root (or --replot)")
    out.mkdir(parents=True, exist_ok=True)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    for file in REFERENCE_NETWORKS.glob("*.safetensors"):
        if not (Path(args.cache) / file.name).exists():
            shutil.copy(file, args.cache)
    print("torch", torch.__version__, torch.cuda.get_device_name() if args.device != "cpu" else "cpu", flush=True)
    scorer = Scorer("mnist", args.mnist_root, None, args.device, cache_dir=args.cache)
    for name in args.stages:
        (run, trained), stage_rows = train_stage(name, args), []
        while True:  # the teacher's plan grows once its sweep is scored
            plan = stage_plan(name, args, stage_rows)
            stage_rows = score(label(name, args), run, trained, plan, scorer, args, out)
            if len(stage_rows) == len(stage_plan(name, args, stage_rows)):
                break
        rows = scored_rows(out, args.samples)
        (out / "few_step.md").write_text(table(rows, args.samples) + "\n")
        figure(rows, out / "few_step.png")
        if args.trajectory and name != "teacher":
            score_trajectory(label(name, args), run, scorer, args, out)
            points = [r for r in read_records(out / "few_step.jsonl")
                      if "|trajectory|" in r["key"] and r["samples"] == args.samples]
            (out / "trajectory.md").write_text(trajectory_table(points) + "\n")
    print(table(rows, args.samples))


if __name__ == "__main__":
    main()
