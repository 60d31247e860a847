"""Markdown tables and plots from `liquidgen bench` records (speed.jsonl, quality.jsonl) in one folder:
report.md, speed.png, quality_vs_minutes.png, quality_vs_nfe.png. Rerunnable at any time: the
records are the truth, the report is derived."""
from __future__ import annotations

import math
from pathlib import Path

from ..evaluation.evaluate import rank_agreement
from ..plots import plot_bars, plot_curves
from .records import read_records
from .speed import mode_label


def case_name(r: dict) -> str:
    """backbone:preset[:options] of a speed record."""
    return (f"{r['backbone']}:{r['preset']}" + (f":{r['options']}" if r.get("options") else "")
            + (f" ({r['objective']})" if r.get("objective", "flow") != "flow" else ""))


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _time_split(r: dict) -> str:
    """Shares of a training step's wall time: tensor-core matmuls / attention / other kernels / GPU idle."""
    if "gpu_busy" not in r:
        return "-"
    shares = (r["matmul_share"], r["attention_share"], r["other_share"], max(0.0, 1 - r["gpu_busy"]))
    return " / ".join(f"{v:.0%}" for v in shares)


def speed_table(records: list[dict]) -> str:
    head = ("| preset | input | params | mode | batch | train img/s | train GFLOP/img | TFLOP/s | MFU | peak GB "
            "| step: matmul / attention / other / idle | sample img x NFE/s | sample MFU | warm-up s |\n"
            + "|---" * 14 + "|\n")
    rows = []
    for r in records:
        if "error" in r:
            rows.append(f"| {case_name(r)} | | | {mode_label(r['compile'])} "
                        f"| {r['batch']} | {r['error']} | | | | | | | | |")
            continue
        rows.append(
            f"| {case_name(r)} | {r['input']} | {r['params_M']:.1f}M "
            f"| {mode_label(r['compile'])} | {r['batch']} | {r['train_img_s']:,.0f} "
            f"| {r['train_gflops_per_img']:.2f} | {r['train_tflops']:.1f} | {_num(r['mfu'], '.1%')} "
            f"| {_num(r.get('train_peak_gb'), '.2f')} | {_time_split(r)} | {_num(r.get('sample_img_nfe_s'), ',.0f')} "
            f"| {_num(r.get('sample_mfu'), '.1%')} | {r['warmup_s']:.0f} |")
    first = next((r for r in records if "device" in r), {})
    return (f"Device: {first.get('device', '?')}, torch {first.get('torch', '?')}, {first.get('date', '?')}. "
            "MFU: counted FLOPs x throughput / dense bf16 peak.\n\n" + head + "\n".join(rows) + "\n")


def quality_metric(records: list[dict]) -> tuple[str, str]:
    if any("fid" in r for r in records):
        return "fid", "FID (Inception)"
    return "classifier_fd", "classifier FD (reference classifier, not FID)"


def _names(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["name"] for r in records))


def _at_budget(records: list[dict]) -> tuple[list[str], dict[str, float], list[dict], list[int]]:
    """The contenders, each one's full budget (its longest minutes), the records at it, and their NFEs."""
    names = _names(records)
    budget = {name: max(r["minutes"] for r in records if r["name"] == name) for name in names}
    final = [r for r in records if r["minutes"] == budget[r["name"]]]
    return names, budget, final, sorted({r["nfe"] for r in final})


def best_scales(records: list[dict]) -> list[dict]:
    """One record per (contender, minutes, NFE): of a guidance sweep, the scale with the lowest FD."""
    key, _ = quality_metric(records)
    best: dict[tuple, dict] = {}
    for r in records:
        at = (r["name"], r["minutes"], r["nfe"])
        if at not in best or r[key] < best[at][key]:
            best[at] = r
    return list(best.values())


def sweep_table(records: list[dict]) -> str:
    """FD [95% interval] of every guidance scale at the full budget, one row per (contender, scale); empty
    without a sweep."""
    if len({r.get("cfg") for r in records}) < 2:
        return ""
    names, _, final, nfes = _at_budget(records)
    key, label = quality_metric(records)
    lines = [f"Guidance sweep at the full budget: {label} [bootstrap 95% interval].\n",
             "| contender | cfg | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (2 + len(nfes)) + "|"]
    for name in names:
        for cfg in sorted({r["cfg"] for r in final if r["name"] == name}):
            got = {r["nfe"]: r for r in final if r["name"] == name and r["cfg"] == cfg}
            cells = [f"{got[n][key]:.2f}" + (f" [{got[n][key + '_ci95'][0]:.2f}, {got[n][key + '_ci95'][1]:.2f}]"
                                              if key + "_ci95" in got[n] else "") if n in got else "-" for n in nfes]
            lines.append(f"| {name} | {cfg:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def quality_tables(records: list[dict]) -> str:
    """The contenders at each NFE and against minutes; of a guidance sweep, each cell's best scale."""
    swept = len({r.get("cfg") for r in records}) > 1
    records = best_scales(records)
    names, budget, final, nfes = _at_budget(records)
    key, label = quality_metric(records)
    lines = [f"Cells: {label}, lower is better; in brackets the class accuracy of the samples.\n",
             "| contender | minutes | steps | train img/s | loss | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---" * (5 + len(nfes)) + "|"]
    for name in names:
        rows = {r["nfe"]: r for r in final if r["name"] == name}
        any_row = next(iter(rows.values()))
        cells = []
        for n in nfes:
            r = rows.get(n)
            acc = "" if r is None or "class_accuracy" not in r else f" ({r['class_accuracy']:.3f})"
            at = f" @cfg {r['cfg']:g}" if swept and r is not None else ""
            cells.append("-" if r is None else f"{r[key]:.2f}{acc}{at}")
        lines.append(f"| {name} | {budget[name]:g} | {_num(any_row.get('steps'), ',')} "
                     f"| {_num(any_row.get('train_img_s'), ',.0f')} | {_num(any_row.get('loss'), '.4f')} | "
                     + " | ".join(cells) + " |")
    marks = sorted({r["minutes"] for r in records})
    curve = _curve_points(records)
    if len(marks) > 1 and curve:
        lines += ["", f"{label} against training minutes (NFE {curve[0]}):", "",
                  "| contender | " + " | ".join(f"{m:g} min" for m in marks) + " |", "|---" * (1 + len(marks)) + "|"]
        for name in names:
            got = {r["minutes"]: r[key] for r in records if r["name"] == name and r["nfe"] == curve[0]}
            lines.append(f"| {name} | " + " | ".join(_num(got.get(m), ".2f") for m in marks) + " |")
    at_most = [r for r in final if r["nfe"] == nfes[-1]]  # the contenders at their budget and the largest NFE
    agreement = rank_agreement(at_most, [r["name"] for r in at_most])
    if agreement:
        lines += ["", f"Do the feature spaces rank the contenders alike (NFE {nfes[-1]}, each at its best scale by "
                  f"{label})?", "", agreement]
    return "\n".join(lines) + "\n"


def on_grid(points: dict[str, dict[float, float]]) -> dict[str, tuple[list[float], list[float]]]:
    """Each contender's {x: y} on the x values of all contenders, NaN where it was not measured: drawn with gaps,
    a line does not join its neighbours over a point that another contender has and it lacks."""
    xs = sorted({x for p in points.values() for x in p})
    return {name: (xs, [p.get(x, math.nan) for x in xs]) for name, p in points.items() if p}


def _curve_points(records: list[dict]) -> tuple[int, ...]:
    """The NFE scored at every mark (the curve's), if there is one."""
    marks = {r["minutes"] for r in records}
    common = [n for n in sorted({r["nfe"] for r in records})
              if {r["minutes"] for r in records if r["nfe"] == n} == marks]
    return tuple(common[-1:])


def floor_line(floors: list[dict], key: str) -> str:
    """The score of real images against the reference: the noise floor at each sample count."""
    if not floors:
        return ""
    def cells(rows: list[dict]) -> str:
        return ", ".join(f"{r[key]:.2f} at {r['samples']:,} images" for r in sorted(rows, key=lambda r: r["samples"]))
    real = [r for r in floors if not r.get("floor_autoencoder")]
    against = (" against the other half of the training set (the dataset has no held-out split, so the samples'"
               " reference is the training set itself)" if any(r.get("floor_split_half") for r in floors) else "")
    line = f"Real training images score {cells(real)}{against}: differences of this size are noise.\n" if real else ""
    for name in dict.fromkeys(r["floor_autoencoder"] for r in floors if r.get("floor_autoencoder")):
        line += (f"\nThe same real images through the {name} autoencoder (encoded, stored, decoded) score "
                 f"{cells([r for r in floors if r.get('floor_autoencoder') == name])}: what a perfect model of its "
                 f"latents would score, the floor of a latent model's score.\n")
    return line


def write_report(folder: str | Path) -> Path:
    folder = Path(folder)
    speed = read_records(folder / "speed.jsonl")
    records = read_records(folder / "quality.jsonl")
    quality = [r for r in records if not r.get("floor")]
    parts = ["# liquidgen bench\n"]
    if speed:
        parts += ["## Speed\n", speed_table(speed), "![training images/s](speed.png)\n"]
        ok = [r for r in speed if "error" not in r]
        plot_bars(folder / "speed.png", {f"{case_name(r)} {mode_label(r['compile'])}":
                                         r["train_img_s"] for r in ok},
                  title="training images/s", xlabel=f"batch {ok[0]['batch']}" if ok else "")
    if quality:
        key, label = quality_metric(quality)
        parts += ["## Quality per GPU-minute\n", quality_tables(quality), sweep_table(quality),
                  floor_line([r for r in records if r.get("floor") and key in r], key)]
        quality = best_scales(quality)  # the plots show each point's best guidance scale
        curve = _curve_points(quality)
        if curve and len({r["minutes"] for r in quality}) > 1:
            plot_curves(folder / "quality_vs_minutes.png",
                        on_grid({name: {r["minutes"]: r[key] for r in quality
                                        if r["name"] == name and r["nfe"] == curve[0]} for name in _names(quality)}),
                        xlabel="training minutes", ylabel=label.split(" (")[0], markers=True, logy=True,
                        title=f"quality vs training time (NFE {curve[0]})", gaps=True)
            parts.append("![quality vs minutes](quality_vs_minutes.png)\n")
        by_nfe = {}
        for name in _names(quality):
            budget = max(r["minutes"] for r in quality if r["name"] == name)
            by_nfe[name] = {r["nfe"]: r[key] for r in quality if r["name"] == name and r["minutes"] == budget}
        if any(len(points) > 1 for points in by_nfe.values()):  # one NFE each (a guidance sweep): no curve to draw
            plot_curves(folder / "quality_vs_nfe.png", on_grid(by_nfe), xlabel="function evaluations (NFE)",
                        logx=True, logy=True, ylabel=label.split(" (")[0], markers=True,
                        title="quality vs NFE at the full budget", gaps=True)
            parts.append("![quality vs NFE](quality_vs_nfe.png)\n")
    path = folder / "report.md"
    path.write_text("\n".join(parts))
    return path
