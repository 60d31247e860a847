"""Few-step MNIST generation (issue 21): a TrigFlow UNet-28 teacher, its sCD student, and an sCT model trained from
scratch for the teacher's and the student's minutes together, each scored with 10,000 class-balanced samples.

    python benchmarks/few_step.py --mnist-root .carry/data --runs /tmp/runs --out $OUT teacher scd sct

Stages, each resumable (a run trained to its budget is reused, a scored record skipped), so they can span calls:
- teacher: configs/mnist-unet-trigflow.yaml for --teacher-minutes of compiled training (CUDA graphs);
- scd: configs/mnist-unet-scm.yaml, from the teacher's EMA, for --distill-minutes, distilling the teacher guided at
  its best scale (--teacher-cfg);
- sct: the same config in `ct` mode from scratch, for --teacher-minutes + --distill-minutes.
Scores, in both of `bench quality`'s feature spaces (the reference networks of the MNIST head-to-head, so the
numbers compare with its table), FD with a bootstrap 95% interval:
- teacher: guidance swept at Euler 50 steps (--cfg), then Euler, Heun (uniform grid) and DPM-Solver++(2M) (Karras
  grid) at each NFE of --nfes at the best scale: what the teacher gives without distillation;
- students: consistency sampling at 1, 2 and 4 steps at each --student-cfg (1: the guidance distilled in).
Training throughput (median img/s of metrics.jsonl) is recorded with every stage: sCM's cost against the
teacher's objective. Writes few_step.jsonl, a markdown table (few_step.md) and one grid per stage.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from liquidgen.bench.records import append_record, read_records
from liquidgen.checkpoint import list_checkpoints
from liquidgen.config import load_config
from liquidgen.evaluation.evaluate import Scorer, best_point
from liquidgen.generate import Pipeline
from liquidgen.plots import save_grid
from liquidgen.samplers import SAMPLERS
from liquidgen.train import train

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_NETWORKS = ROOT / "benchmarks/results/2026-12-04-mnist-head-to-head/reference-networks"
GRID = {"euler": "uniform", "heun": "uniform", "dpmpp_2m": "karras", "consistency": "consistency"}
STUDENT_STEPS = (1, 2, 4)


def steps_for(sampler: str, nfe: int) -> int:
    """The most steps of `sampler` within `nfe` model evaluations (Heun: 2n - 1), at least one."""
    return max([1] + [n for n in range(1, nfe + 1) if SAMPLERS[sampler].nfe(n) <= nfe])


def train_stage(name: str, args, runs: Path) -> Path:
    """Train (or resume) one stage to its minutes; its run folder."""
    minutes = {"teacher": args.teacher_minutes, "scd": args.distill_minutes,
               "sct": args.teacher_minutes + args.distill_minutes}[name]
    cuda = args.device != "cpu"
    overrides = [f"data.root={args.mnist_root}", "train.steps=1000000000", f"train.minutes={minutes}",
                 "train.sample_every=0", "train.ckpt_every=0", "train.eval_every=0", "train.log_every=50",
                 "train.keep_checkpoints=1", f"train.device={args.device}", f"train.compile={cuda}",
                 *(["train.compile_mode=reduce-overhead"] if cuda else []), *args.set]
    file = "mnist-unet-trigflow.yaml" if name == "teacher" else "mnist-unet-scm.yaml"
    config = load_config(ROOT / "configs" / file, overrides)
    teacher = runs / "teacher"
    if name == "scd":
        config.train.init_from = str(teacher)
        config.objective.options = {**config.objective.options, "teacher": str(teacher),
                                    "teacher_cfg": teacher_scale(args)}
    elif name == "sct":  # from scratch, the path's own tangent: no teacher anywhere
        config.train.init_from = ""
        config.objective.options = {k: v for k, v in config.objective.options.items()
                                    if k not in ("teacher", "teacher_cfg")} | {"mode": "ct"}
    run = runs / name
    t0 = time.perf_counter()
    train(config, run, resume=run.exists())  # a rerun continues to the budget
    print(f"{name}: {time.perf_counter() - t0:.0f} s to train (or resume) {minutes:g} min", flush=True)
    return run


def teacher_scale(args) -> float:
    """The guidance scale distilled into the sCD student: --teacher-cfg, or with "best" the scale of the teacher's
    sweep with the lowest FD (so the student aims at the teacher's best samples)."""
    if args.teacher_cfg != "best":
        return float(args.teacher_cfg)
    sweep = [r for r in read_records(Path(args.out) / "few_step.jsonl")
             if r["stage"] == "teacher" and r["sampler"] == "euler" and r["steps"] == max(args.nfes)
             and r["cfg"] in args.cfg]
    if len(sweep) < len(args.cfg):
        raise SystemExit("--teacher-cfg best: score the teacher's sweep first (run the teacher stage)")
    return best_point(sweep)["cfg"]


def throughput(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]  # the first interval holds compilation
    state = json.loads((list_checkpoints(run)[-1] / "state.json").read_text())
    return {"train_img_s": statistics.median(speeds) if speeds else None, "train_steps": state.get("step"),
            "train_seconds": state.get("train_seconds")}


def score(name: str, run: Path, plan: list[tuple[str, int, float]], scorer: Scorer, args, out: Path) -> list[dict]:
    """Score `plan`'s (sampler, NFE, cfg) settings of one stage, skipping records already in few_step.jsonl."""
    path = out / "few_step.jsonl"
    done = {r["key"]: r for r in read_records(path)}
    pipe, trained, rows = None, throughput(run), []
    for sampler, nfe, cfg in plan:
        key = f"{name}|{sampler}|nfe{nfe}|cfg{cfg:g}"
        if key in done:
            rows.append(done[key])
            continue
        pipe = pipe or Pipeline.load(run, device=args.device)
        steps = steps_for(sampler, nfe)
        settings = pipe.settings.with_(sampler=sampler, grid=GRID[sampler], steps=steps, cfg=cfg)
        t0 = time.perf_counter()
        images, labels = pipe.generate(args.samples, seed=0, settings=settings, batch_size=args.batch)
        seconds = time.perf_counter() - t0
        record = {"key": key, "stage": name, "sampler": sampler, "steps": steps, "nfe": SAMPLERS[sampler].nfe(steps),
                  "cfg": cfg, "samples": args.samples, "sample_seconds": seconds, **trained,
                  **scorer(images, labels)}
        append_record(path, record)
        rows.append(record)
        print(f"{key}: FD {record['classifier_fd']:.2f} [{record['classifier_fd_ci95'][0]:.2f}, "
              f"{record['classifier_fd_ci95'][1]:.2f}]  FD-2 {record['classifier2_fd']:.3f}  ({seconds:.1f} s)",
              flush=True)
        if (sampler, steps) in (("euler", max(args.nfes)), ("consistency", 1), ("consistency", 2)):
            save_grid(images[:100].float() / 127.5 - 1, out / f"grid-{name}-{sampler}-{steps}-cfg{cfg:g}.png", nrow=10)
    return rows


def stage_plan(name: str, args, rows: list[dict]) -> list[tuple[str, int, float]]:
    """The settings still to decide for a stage, given its scored `rows`: the teacher's sweep first, then its
    samplers at the sweep's best scale; the students' consistency steps."""
    if name != "teacher":
        return [("consistency", n, c) for n in STUDENT_STEPS for c in args.student_cfg]
    sweep = [("euler", max(args.nfes), c) for c in args.cfg]
    scored = [r for r in rows if (r["sampler"], r["nfe"], r["cfg"]) in sweep]
    if len(scored) < len(sweep):
        return sweep
    best = best_point(scored)["cfg"]
    # NFE targets that give a sampler the same steps (Heun: 2n - 1) are one setting, scored once
    chosen: dict[tuple[str, int], tuple[str, int, float]] = {}
    for s in ("euler", "heun", "dpmpp_2m"):
        for n in sorted(args.nfes):
            chosen.setdefault((s, steps_for(s, n)), (s, n, best))
    return sweep + [x for x in chosen.values() if x not in sweep]


def table(rows: list[dict], samples: int) -> str:
    """Markdown: one row per (stage, sampler, cfg), classifier FD [95%] per NFE, then FD-2 and img/s."""
    nfes = sorted({r["nfe"] for r in rows})
    lines = ["| stage | sampler | cfg | train img/s | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---" * (4 + len(nfes)) + "|"]
    for stage, sampler, cfg in dict.fromkeys((r["stage"], r["sampler"], r["cfg"]) for r in rows):
        cells = {r["nfe"]: f"{r['classifier_fd']:.2f} [{r['classifier_fd_ci95'][0]:.2f}, "
                           f"{r['classifier_fd_ci95'][1]:.2f}] / {r['classifier2_fd']:.3f}"
                 for r in rows if (r["stage"], r["sampler"], r["cfg"]) == (stage, sampler, cfg)}
        speed = next(r["train_img_s"] for r in rows if r["stage"] == stage)
        lines.append(f"| {stage} | {sampler} | {cfg:g} | {'-' if speed is None else f'{speed:,.0f}'} | "
                     + " | ".join(cells.get(n, "-") for n in nfes) + " |")
    return "\n".join(lines) + f"\n\nCells: classifier FD [bootstrap 95%] / classifier-2 FD, {samples:,} samples each."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=["teacher", "scd", "sct"], help="stages to run, in order")
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--out", required=True, help="records, table and grids")
    parser.add_argument("--runs", default="runs/few-step", help="run folders (resumed to their budget)")
    parser.add_argument("--teacher-minutes", type=float, default=3.3333, help="teacher training minutes")
    parser.add_argument("--distill-minutes", type=float, default=5.0, help="sCD minutes (sCT: teacher + these)")
    parser.add_argument("--samples", type=int, default=10_000, help="class-balanced samples per score")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0], help="teacher's scales")
    parser.add_argument("--student-cfg", type=float, nargs="+", default=[1.0],
                        help="students' scales (1: only the guidance distilled in)")
    parser.add_argument("--nfes", type=int, nargs="+", default=[1, 2, 4, 8, 50], help="teacher's NFE points")
    parser.add_argument("--teacher-cfg", default="best", help="guidance distilled into the sCD student: a scale, or "
                        "'best' for the teacher's best by FD in its sweep")
    parser.add_argument("--batch", type=int, default=2000, help="sampling batch")
    parser.add_argument("--cache", default="/tmp/liquidgen-eval-cache",
                        help="eval cache; the head-to-head's reference networks are copied there")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every stage (smoke tests)")
    args = parser.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    for file in REFERENCE_NETWORKS.glob("*.safetensors"):
        if not (Path(args.cache) / file.name).exists():
            shutil.copy(file, args.cache)
    print("torch", torch.__version__, torch.cuda.get_device_name() if args.device != "cpu" else "cpu", flush=True)
    scorer = Scorer("mnist", args.mnist_root, None, args.device, cache_dir=args.cache)
    rows: list[dict] = []
    for name in args.stages:
        run, stage_rows = train_stage(name, args, runs), []
        while True:  # the teacher's plan grows once its sweep is scored
            plan = stage_plan(name, args, stage_rows)
            stage_rows = score(name, run, plan, scorer, args, out)
            if len(stage_rows) == len(stage_plan(name, args, stage_rows)):
                break
        rows += stage_rows
        (out / "few_step.md").write_text(table(rows, args.samples) + "\n")
    print(table(rows, args.samples))


if __name__ == "__main__":
    main()
