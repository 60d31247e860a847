from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from PIL import Image

from liquidgen import plots
from liquidgen.plots import (bars_figure, curves_figure, image_grid, plot_bars, plot_curves, plot_metrics_jsonl,
                             save_grid)


def _pixels(path, color: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels exactly of `color` (the core of a line, inside its antialiased edge)."""
    a = np.asarray(Image.open(path).convert("RGB"))
    rgb = tuple(int(to_hex(color)[i : i + 2], 16) for i in (1, 3, 5))
    return np.nonzero(np.all(a == rgb, axis=-1))


def _mean_row(rows: np.ndarray, cols: np.ndarray, lo: float, hi: float) -> float:
    sel = (cols >= lo) & (cols <= hi)
    assert sel.any()
    return rows[sel].mean()


def _drawn(fig) -> list:
    """The labelled lines of the only axes: one per series (the raw curves under an EMA carry no label)."""
    return [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]


# --------------------------------------------------------------------------- grids


@pytest.mark.parametrize(
    ("n", "nrow", "padding", "scale", "expected"),
    [
        (10, 4, 2, 1, (2 + 4 * (6 + 2), 2 + 3 * (8 + 2))),
        (10, None, 2, 1, (2 + 4 * (6 + 2), 2 + 3 * (8 + 2))),  # default nrow = ceil(sqrt(10)) = 4
        (10, 4, 0, 3, (4 * 18, 3 * 24)),
        (3, 8, 1, 2, (1 + 3 * (12 + 1), 1 + 16 + 1)),  # nrow > N: a single row of N
    ],
)
def test_grid_geometry(n, nrow, padding, scale, expected):
    images = np.zeros((n, 1, 8, 6), np.uint8)  # H != W catches a transposed layout
    assert image_grid(images, nrow=nrow, padding=padding, scale=scale).size == expected


def test_grid_places_each_image_in_its_cell():
    n, nrow, pad, scale, h = 7, 3, 2, 2, 4
    images = (np.arange(n, dtype=np.uint8) * 20)[:, None, None, None].repeat(h, 2).repeat(h, 3)
    a = np.asarray(image_grid(images, nrow=nrow, padding=pad, scale=scale, pad_value=255))
    cell = h * scale
    for k in range(9):  # cells 7 and 8 of the 3x3 grid are empty
        r, q = divmod(k, nrow)
        centre = a[pad + r * (cell + pad) + cell // 2, pad + q * (cell + pad) + cell // 2]
        assert centre == (k * 20 if k < n else 255)
    assert a[0, 0] == 255 and a[pad + cell, pad] == 255  # padding rows


def test_float_images_map_minus_one_to_zero_and_one_to_255():
    values = [-3.0, -1.0, 0.0, 1.0, 3.0]
    for images in (np.array(values, np.float32).reshape(1, 1, 1, 5), torch.tensor(values).reshape(1, 1, 1, 5)):
        grid = image_grid(images, padding=0)
        assert np.asarray(grid).ravel().tolist() == [0, 0, 128, 255, 255]


def test_grid_modes_rgb_and_l():
    rgb = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = 10, 20, 30
    grid = image_grid(rgb, padding=0)
    assert grid.mode == "RGB" and grid.getpixel((1, 1)) == (10, 20, 30)
    assert image_grid(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)).mode == "L"


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError):
        image_grid(np.zeros((2, 2, 4, 4), np.uint8))  # 2 channels
    with pytest.raises(ValueError):
        image_grid(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(TypeError):
        image_grid(np.zeros((1, 1, 4, 4), np.int64))


def test_save_grid_writes_png_with_default_upscale(tmp_path):
    path = save_grid(torch.rand(6, 1, 16, 16) * 2 - 1, tmp_path / "a" / "b" / "grid.png")
    with Image.open(path) as img:
        assert img.format == "PNG"
        # scale 4 makes 64 px cells; nrow = ceil(sqrt(6)) = 3, so 3 x 2 cells.
        assert img.size == (2 + 3 * 66, 2 + 2 * 66)


def test_row_labels_add_a_white_margin_with_text(tmp_path):
    images = torch.zeros(6, 3, 16, 16, dtype=torch.uint8)
    plain = Image.open(save_grid(images, tmp_path / "plain.png", nrow=3))
    labelled = Image.open(save_grid(images, tmp_path / "labelled.png", nrow=3, row_labels=["cat", "dog"]))
    margin = labelled.width - plain.width
    assert margin > 0 and labelled.height == plain.height
    left = np.asarray(labelled.convert("L"))[:, :margin]
    assert left[:, 0].min() == 255  # white background
    assert (left < 100).sum() > 20  # dark text
    with pytest.raises(ValueError):
        save_grid(images, tmp_path / "bad.png", nrow=3, row_labels=["only one"])


# --------------------------------------------------------------------------- curves


def test_plot_curves_writes_a_png_of_the_asked_size_with_the_line_falling(tmp_path):
    x = np.arange(100)
    path = plot_curves(tmp_path / "p" / "loss.png", {"loss": (x, 100.0 - x)}, title="t", ylabel="loss",
                       size=(600, 400))
    assert path == tmp_path / "p" / "loss.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    rows, cols = _pixels(path, "C0")
    assert rows.size > 200 and cols.max() - cols.min() > 0.6 * 600  # a line across most of the width
    span = cols.max() - cols.min()
    left = _mean_row(rows, cols, cols.min(), cols.min() + 0.1 * span)
    right = _mean_row(rows, cols, cols.max() - 0.1 * span, cols.max())
    assert left < right - 0.5 * 400 * 0.6  # starts high, ends low (image rows grow downwards)
    ax = curves_figure({"loss": (x, 100.0 - x)}, title="t", ylabel="loss").axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("t", "step", "loss")


@pytest.mark.parametrize(("logx", "logy"), [(False, False), (False, True), (True, True)])
def test_log_axes_when_asked(logx, logy):
    ax = curves_figure({"a": ([1, 10, 100], [1e-3, 1e-2, 1.0])}, logx=logx, logy=logy).axes[0]
    assert ax.get_xscale() == ("log" if logx else "linear") and ax.get_yscale() == ("log" if logy else "linear")


def test_log_scale_makes_an_exponential_straight(tmp_path):
    t = np.linspace(0, 1, 200)
    series = {"loss": (t, 10 ** (-3 * t))}

    def bend(logy: bool) -> float:
        path = plot_curves(tmp_path / f"log{logy}.png", series, logy=logy)
        rows, cols = _pixels(path, "C0")
        a, b = cols.min(), cols.max()
        ends = (_mean_row(rows, cols, a, a + 3) + _mean_row(rows, cols, b - 3, b)) / 2
        return abs(_mean_row(rows, cols, (a + b) / 2 - 1, (a + b) / 2 + 1) - ends)

    assert bend(logy=True) < 3
    assert bend(logy=False) > 50


def test_log_tick_labels_are_plain_numbers(tmp_path):
    fig = curves_figure({"a": ([0, 1], [1e-3, 2.0])}, logy=True)
    fig.canvas.draw()  # tick labels are only formatted at draw time
    labels = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert {"0.001", "0.01", "0.1", "1"} <= labels


def test_smoothing_draws_the_ema_over_the_light_raw_curve():
    y = 0.5 + 0.5 * (-1.0) ** np.arange(300)  # alternates 1, 0
    fig = curves_figure({"loss": (np.arange(300), y)}, smooth=0.95)
    raw, ema = fig.axes[0].get_lines()
    assert np.array_equal(raw.get_ydata(), y) and raw.get_alpha() < 1 and raw.get_zorder() < ema.get_zorder()
    assert ema.get_label() == "loss" and ema.get_color() == raw.get_color()
    assert ema.get_linewidth() > raw.get_linewidth()
    assert np.ptp(ema.get_ydata()[150:]) < 0.2 and abs(ema.get_ydata()[-1] - 0.5) < 0.1
    assert len(fig.axes[0].get_lines()) == 1 + len(_drawn(curves_figure({"loss": (np.arange(300), y)})))


def test_several_series_get_distinct_colours_and_a_legend(tmp_path):
    x = np.arange(10)
    fig = curves_figure({"train": (x, x), "val": (x, 2 * x)}, smooth=0.5)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train", "val"]  # no entries for the raw curves
    assert len({line.get_color() for line in _drawn(fig)}) == 2
    assert curves_figure({"train": (x, x)}).axes[0].get_legend() is None  # one series needs no legend
    path = plot_curves(tmp_path / "two.png", {"train": (x, x), "val": (x, 2 * x)})
    assert all(_pixels(path, c)[0].size > 50 for c in ("C0", "C1"))


@pytest.mark.parametrize(
    ("series", "logy", "kept"),
    [
        ({"a": ([3], [1.5])}, False, [3]),  # single point
        ({"a": ([3], [1.5])}, True, [3]),
        ({"a": ([0, 1, 2], [2.0, 2.0, 2.0])}, False, [0, 1, 2]),  # constant
        ({"a": ([0, 1, 2], [0.0, 0.0, 0.0])}, False, [0, 1, 2]),
        ({"a": ([5, 5, 5], [1.0, 2.0, 3.0])}, False, [5, 5, 5]),  # constant x
        ({"a": ([0, 1, 2, 3], [1.0, math.nan, math.inf, 0.5])}, False, [0, 3]),
        ({"a": ([0, math.nan, 2], [1.0, 2.0, 3.0])}, False, [0, 2]),
        ({"a": ([0, 1, 2, 3], [-1.0, 0.0, 0.1, 1.0])}, True, [2, 3]),  # non-positive on log
        ({"a": ([0, 1], [-1.0, 0.0])}, True, []),
        ({"a": ([0, 1], [math.nan, math.nan])}, False, []),
        ({"a": ([], [])}, False, []),
        ({"a": ([], []), "b": ([], [])}, True, []),
        ({}, False, None),
    ],
)
@pytest.mark.parametrize("smooth", [0.0, 0.9])
def test_plot_curves_skips_undrawable_points(tmp_path, series, logy, kept, smooth):
    fig = curves_figure(series, logy=logy, smooth=smooth)
    lines = _drawn(fig)
    assert [line.get_xdata().tolist() for line in lines[:1]] == ([kept] if series else [])
    if kept and len(kept) == 1:
        assert lines[0].get_marker() == "o"  # a lone point has no segment to show it
    no_data = [t for t in fig.axes[0].texts if t.get_text() == "no data"]
    assert bool(no_data) == (not kept)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no "non-positive limits" complaint from an empty log axis
        path = plot_curves(tmp_path / "d.png", series, logy=logy, smooth=smooth, size=(400, 300))
    with Image.open(path) as img:
        assert img.size == (400, 300)
    if len(series) == 1:  # (with two, the legend shows C0 whatever was drawn)
        assert (_pixels(path, "C0")[0].size > 0) == bool(kept)


def test_markers_mark_every_point():
    lines = _drawn(curves_figure({"a": ([1, 2, 4], [3.0, 2.0, 1.0])}, markers=True))
    assert lines[0].get_marker() == "o"
    assert _drawn(curves_figure({"a": ([1, 2, 4], [3.0, 2.0, 1.0])}))[0].get_marker() in (None, "None", "")


def test_plot_curves_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'a': 2 x values but 1 y values"):
        plot_curves(tmp_path / "x.png", {"a": ([0, 1], [1.0])})
    with pytest.raises(ValueError, match="smooth"):
        plot_curves(tmp_path / "x.png", {"a": ([0, 1], [1.0, 2.0])}, smooth=1.0)
    assert not (tmp_path / "x.png").exists()


def test_plot_metrics_jsonl_skips_missing_keys_and_bad_lines(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1 / (s + 1), **({"lr": 1e-3} if s % 2 else {})}) for s in range(50)]
    lines += ["[1, 2]", json.dumps({"loss": 5.0}), json.dumps({"step": True, "loss": 5.0})]  # no numeric step
    metrics.write_bytes(("\n".join(lines) + '\n\n{"step": 50, "lo').encode() + b"\xe2\x82")  # cut mid-write
    out = plot_metrics_jsonl(metrics, tmp_path / "plots" / "loss.png", keys=("loss", "lr", "absent"))
    with Image.open(out) as img:
        assert img.format == "PNG"
    assert all(_pixels(out, c)[0].size > 0 for c in ("C0", "C1"))

    calls = []
    monkeypatch.setattr(plots, "plot_curves", lambda path, series, **kw: calls.append((series, kw)))
    plot_metrics_jsonl(metrics, tmp_path / "loss.png", keys=("loss", "lr", "absent"))
    series, kw = calls[0]
    assert series["loss"] == (list(range(50)), [1 / (s + 1) for s in range(50)])
    assert series["lr"][0] == list(range(1, 50, 2)) and series["absent"] == ([], [])
    assert kw["logy"] and kw["ylabel"] == ""
    assert kw["smooth"] == pytest.approx(0.6)  # 50 points: the EMA window is kept to ~5% of the curve
    plot_metrics_jsonl(metrics, tmp_path / "loss.png")
    assert calls[1][1]["ylabel"] == "loss"


# --------------------------------------------------------------------------- bars


def test_plot_bars_draws_one_bar_per_item_in_order(tmp_path):
    bars = {"dit:tiny eager": 1234.4, "dit:tiny compiled": 2345.6, "broken": math.nan}
    ax = bars_figure(bars, title="training images/s", xlabel="batch 8").axes[0]
    assert [p.get_width() for p in ax.patches] == [1234.4, 2345.6, 0.0]  # NaN drawn as 0
    assert [t.get_text() for t in ax.get_yticklabels()] == list(bars)
    assert ax.patches[0].get_y() < ax.patches[1].get_y() and ax.yaxis_inverted()  # the first item on top
    assert [t.get_text() for t in ax.texts] == ["1,234", "2,346", "0"]
    assert (ax.get_title(), ax.get_xlabel()) == ("training images/s", "batch 8")
    path = plot_bars(tmp_path / "b" / "speed.png", bars, width=640)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width == 640
        short = img.height
    with Image.open(plot_bars(tmp_path / "many.png", {str(i): i for i in range(20)}, width=640)) as img:
        assert img.height > short  # more bars, a taller image
    assert _pixels(path, "C1")[0].size > 100
    with Image.open(plot_bars(tmp_path / "none.png", {})) as img:
        assert img.width == 800


def test_charts_leave_pyplot_alone(tmp_path):
    """No pyplot means no global figure registry to leak into and no interactive backend to pick."""
    code = ("import sys; from liquidgen.plots import plot_bars, plot_curves; "
            "plot_curves(sys.argv[1] + '/a.png', {'a': ([0, 1], [1, 2])}); "
            "plot_bars(sys.argv[1] + '/b.png', {'a': 1}); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_gaps_break_a_line_where_a_point_was_not_measured():
    from liquidgen.bench.report import on_grid

    series = on_grid({"full": {1: 300.0, 2: 20.0, 4: 3.7, 50: 2.1}, "partial": {1: 300.0, 50: 2.7}})
    assert series["partial"][0] == [1, 2, 4, 50]
    assert np.allclose(series["partial"][1], [300.0, np.nan, np.nan, 2.7], equal_nan=True)
    joined = curves_figure(series, logx=True, logy=True, markers=True).axes[0].lines
    gapped = curves_figure(series, logx=True, logy=True, markers=True, gaps=True).axes[0].lines
    # without gaps the partial line runs straight from NFE 1 to 50 over the unmeasured points; with them its two
    # points stand alone (NaN between them) and the full series is unchanged
    assert len(joined[1].get_ydata()) == 2
    assert np.isnan(gapped[1].get_ydata()).sum() == 2 and list(gapped[0].get_ydata()) == [300.0, 20.0, 3.7, 2.1]
    with pytest.raises(ValueError, match="smooth and gaps"):
        curves_figure(series, smooth=0.5, gaps=True)
