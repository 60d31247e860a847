"""The benchmark scripts run on the GPU machine, where a broken import would cost a device call: each must
import the installed package only (no private copies, no path tricks) and at least start."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
SCRIPTS = sorted([*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("peers/*.py")])


def load_script(name: str):
    """benchmarks/NAME.py as a module, for testing its functions (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_the_script_starts(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_the_script_imports_only_the_package(script):
    tree = ast.parse(script.read_text())
    scripts = {p.stem for p in SCRIPTS}
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and not n.level}
    assert not imported & scripts, "benchmark scripts share code through the package, not through each other"
    path_edits = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and ast.unparse(n.func) in ("sys.path.insert", "sys.path.append")]
    # Only a fetched peer's own folder may be put on the path (its code is read, never copied).
    assert all("args." in call for call in path_edits), path_edits


def test_kernel_curves_are_compared_on_the_steps_both_reached():
    """A reference run cut short at step 80 (as a device call's timeout did on 2026-12-05) must not be compared
    with the fused run's losses at step 2,000."""
    kernels = load_script("liquid_kernels")
    fused = [{"step": s, "loss": 2.0 / s} for s in range(20, 2001, 20)]
    cut = [{"step": s, "loss": 2.0 / s * 1.01} for s in range(20, 81, 20)]
    record = kernels.compare_curves({"triton": fused, "torch": cut})
    assert record["compared_steps"] == [80, 80]
    assert record["tail_spread"] == pytest.approx(0.01)
    with pytest.raises(SystemExit, match="share no logged step"):
        kernels.compare_curves({"triton": fused, "torch": [{"step": 7, "loss": 1.0}]})


def test_few_step_plans_each_setting_once():
    """The device's few-step run scores what issue 21's table needs and nothing twice: the teacher's sweep first,
    then each sampler and grid at each NFE at the best scale (Heun's NFE targets that give the same steps once); a
    student's extra re-noising grids only where they re-noise (2 steps and more)."""
    import argparse
    few_step = load_script("few_step")
    args = argparse.Namespace(cfg=[1.0, 1.5], nfes=[1, 2, 4, 8, 50], student_cfg=[1.0],
                              teacher_samplers=list(few_step.TEACHER_SAMPLERS),
                              student_grids=["consistency", "consistency:theta_mid=0.9"])
    assert few_step.stage_plan("teacher", args, []) == [("euler", "uniform", 50, 1.0), ("euler", "uniform", 50, 1.5)]
    sweep = [{"sampler": "euler", "grid": "uniform", "nfe": 50, "cfg": c, "classifier_fd": fd}
             for c, fd in ((1.0, 3.0), (1.5, 2.0))]
    plan = few_step.stage_plan("teacher", args, sweep)
    assert len(plan) == len(set(plan)) and all(cfg == 1.5 for *_, cfg in plan[2:])  # the sweep's best scale
    heun = sorted(few_step.steps_for("heun", nfe) for s, g, nfe, _ in plan if (s, g) == ("heun", "uniform"))
    assert heun == [1, 2, 4, 25]  # NFE 1 and 2 both give Heun 1 step (NFE 1): scored once
    assert {(s, g, n) for s, g, n, _ in plan if s == "dpmpp_2m"} == {
        ("dpmpp_2m", g, n) for g in ("uniform", "karras") for n in (1, 2, 4, 8, 50)}
    student = few_step.stage_plan("scd", args, [])
    assert [(g, n) for _, g, n, _ in student] == [("consistency", 1), ("consistency", 2), ("consistency", 4),
                                                  ("consistency:theta_mid=0.9", 2), ("consistency:theta_mid=0.9", 4)]
    # the trajectory: one row per checkpoint and scale, a column per (steps, weights); a score not yet made shows as
    # "-"; records from before the scale was swept (no "cfg") read as cfg 1
    rows = [{"stage": "scd", "train_steps": step, "nfe": nfe, "ema": ema, "classifier_fd": fd,
             "classifier_fd_ci95": [fd - 1, fd + 1], **({} if cfg is None else {"cfg": cfg})}
            for step, nfe, ema, fd, cfg in ((100, 1, True, 9.0, None), (100, 1, False, 8.0, None),
                                            (100, 2, True, 4.0, 1.0), (100, 2, False, 3.0, 1.0),
                                            (100, 1, True, 5.0, 1.25), (200, 2, True, 2.0, 1.0))]
    table = few_step.trajectory_table(rows).splitlines()
    assert table[0] == ("| stage | step | cfg | EMA 1 step FD [95%] | raw 1 step FD [95%] | EMA 2 steps FD [95%] | "
                        "raw 2 steps FD [95%] |")
    assert table[2] == ("| scd | 100 | 1 | 9.00 [8.00, 10.00] | 8.00 [7.00, 9.00] | 4.00 [3.00, 5.00] | "
                        "3.00 [2.00, 4.00] |")
    assert table[3] == "| scd | 100 | 1.25 | 5.00 [4.00, 6.00] | - | - | - |"
    assert table[4] == "| scd | 200 | 1 | - | - | 2.00 [1.00, 3.00] | - |"


def test_few_step_pairs_each_backbone_with_its_own_sct_and_scd_presets():
    """The sct stage trains from scratch: its preset must be sCT (no teacher anywhere) on the backbone its sCD
    stage distils, or the pair the issue compares is not a pair."""
    from liquidgen.config import load_config

    few_step = load_script("few_step")
    for backbone, stages in few_step.CONFIGS.items():
        sct, scd = (load_config(few_step.ROOT / "configs" / stages[s]) for s in ("sct", "scd"))
        assert sct.objective.options["mode"] == "ct", backbone
        assert not {"teacher", "teacher_cfg"} & set(sct.objective.options), backbone
        assert scd.objective.options["mode"] == "cd", backbone
        assert (sct.model.name, sct.model.preset) == (scd.model.name, scd.model.preset), backbone


def test_few_step_teacher_embeds_time_as_its_students_presets_do():
    """A student starts from its teacher's weights, which mean something only at the teacher's time_scale: the
    harness's teacher must match the sCD preset a user trains by hand (and sCT, the pair it is compared with)."""
    import torch

    from liquidgen.config import load_config
    from liquidgen.models import build_model
    from liquidgen.spec import time_scale_of

    few_step = load_script("few_step")

    def scale(config):
        m = config.model
        with torch.device("meta"):  # the scale is an attribute: no weights needed
            return time_scale_of(build_model(m.name, m.preset, 1, 28, 10, **m.options))

    for backbone, stages in few_step.CONFIGS.items():
        teacher = load_config(few_step.ROOT / "configs" / stages["teacher"], few_step.teacher_overrides(backbone))
        scales = {s: scale(load_config(few_step.ROOT / "configs" / stages[s])) for s in ("scd", "sct")}
        assert scales == {"scd": scale(teacher), "sct": scale(teacher)}, backbone


def test_each_kernel_case_compiles_with_its_own_inductor_settings(monkeypatch):
    """liquid_kernels.py times tunings one after the other in one process: each case hands its settings to its own
    compile, as `train` does with its compile_tuning, so none carries over to the next case (aggressive fusion left
    on in Inductor's global config would be credited to the next case's defaults)."""
    import torch

    kernels = load_script("liquid_kernels")
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(kwargs))
    for tuning in ("aggressive", "default"):
        record = kernels.measure("tiny", (1, 8, 10), "torch", "reduce-overhead", 2, 1, torch.device("cpu"),
                                 tuning=tuning)
        assert "error" not in record and record["train_img_s"] > 0, record
    assert seen == [{"options": {"triton.cudagraphs": True, "aggressive_fusion": True}, "dynamic": False},
                    {"mode": "reduce-overhead", "dynamic": False}]


def test_few_step_picture_counts_guided_evaluations_twice_and_draws_lines_only():
    """The few-step picture's x is network evaluations: a guided step is two (the table's NFE is not), and a setting
    scored at one NFE only (the teacher's guidance sweep) is no line."""
    few_step = load_script("few_step")
    row = {"stage": "scd", "sampler": "consistency", "grid": "consistency", "samples": 10}
    rows = [{**row, "nfe": n, "cfg": c, "classifier_fd": 10.0 / n} for n in (4, 1, 2) for c in (1.0, 1.25)]
    rows.append({**row, "stage": "teacher", "sampler": "euler", "grid": "uniform", "nfe": 50, "cfg": 1.5,
                 "classifier_fd": 3.0})
    series = few_step.figure_series(rows)
    assert series == {"scd, consistency": ([1, 2, 4], [10.0, 5.0, 2.5]),
                      "scd, consistency, cfg 1.25": ([2, 4, 8], [10.0, 5.0, 2.5])}
