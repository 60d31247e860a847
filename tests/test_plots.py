from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from liquidgen import plots
from liquidgen.plots import PALETTE, image_grid, nice_ticks, plot_curves, plot_metrics_jsonl, save_grid


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _pixels(path, color: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels exactly of `color`."""
    a = np.asarray(Image.open(path).convert("RGB"))
    return np.nonzero(np.all(a == _rgb(color), axis=-1))


def _frame(path) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the plot area: the long runs of the frame colour."""
    rows, cols = _pixels(path, plots._FRAME)
    xs, cx = np.unique(cols, return_counts=True)
    ys, cy = np.unique(rows, return_counts=True)
    xs, ys = xs[cx > cx.max() // 2], ys[cy > cy.max() // 2]
    return xs.min(), ys.min(), xs.max(), ys.max()


def _mean_row(rows: np.ndarray, cols: np.ndarray, lo: float, hi: float) -> float:
    sel = (cols >= lo) & (cols <= hi)
    assert sel.any()
    return rows[sel].mean()


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


# --------------------------------------------------------------------------- ticks


def test_nice_ticks_are_1_2_5_multiples_covering_the_range():
    rng = random.Random(0)
    cases = [(0, 1), (5, 5), (0, 0), (-3, 1234), (0.3, 0.9), (1e-7, 3e-7)]
    cases += [(a, a + rng.random() * 10 ** rng.uniform(-5, 5)) for a in (rng.uniform(-1e3, 1e3) for _ in range(2000))]
    for lo, hi in cases:
        ticks = nice_ticks(lo, hi)
        assert 4 <= len(ticks) <= 6
        exponent = math.floor(math.log10(ticks[1] - ticks[0]))
        mantissa = round((ticks[1] - ticks[0]) / 10**exponent)
        assert mantissa in (1, 2, 5, 10)
        step = mantissa * 10.0**exponent
        assert np.allclose(np.diff(ticks), step, rtol=1e-6, atol=0)
        assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)
        tol = 1e-9 * step
        assert ticks[0] <= min(lo, hi) + tol and ticks[-1] >= max(lo, hi) - tol
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1]


def test_log_axis_ticks():
    ticks, lo, hi = plots._axis(1e-3, 2.0, log=True)
    assert ticks == [1e-3, 1e-2, 1e-1, 1, 10] and (lo, hi) == (1e-3, 10)
    ticks, lo, hi = plots._axis(0.05, 0.4, log=True)  # under a decade: nice linear values
    assert ticks == [0.1, 0.2, 0.3, 0.4] and 0 < lo <= 0.05 and hi >= 0.4
    ticks, _, _ = plots._axis(1e-30, 1e30, log=True)
    assert len(ticks) <= 6 and all(math.log10(t) == round(math.log10(t)) for t in ticks)


# --------------------------------------------------------------------------- curves


def test_plot_curves_draws_a_decreasing_line_inside_the_axes(tmp_path):
    x = np.arange(100)
    path = plot_curves(tmp_path / "p" / "loss.png", {"loss": (x, 100.0 - x)}, title="t", ylabel="loss", size=(600, 400))
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    rows, cols = _pixels(path, PALETTE[0])
    x0, y0, x1, y1 = _frame(path)
    assert rows.size > 200
    assert cols.min() >= x0 - 2 and cols.max() <= x1 + 2 and rows.min() >= y0 - 2 and rows.max() <= y1 + 2
    assert cols.max() - cols.min() > 0.9 * (x1 - x0)  # spans the x range
    span = cols.max() - cols.min()
    left = _mean_row(rows, cols, cols.min(), cols.min() + 0.1 * span)
    right = _mean_row(rows, cols, cols.max() - 0.1 * span, cols.max())
    assert left < right - 0.5 * (y1 - y0)  # starts high, ends low


def test_log_scale_makes_an_exponential_straight(tmp_path):
    t = np.linspace(0, 1, 200)
    series = {"loss": (t, 10 ** (-3 * t))}

    def bend(logy: bool) -> float:
        path = plot_curves(tmp_path / f"log{logy}.png", series, logy=logy)
        rows, cols = _pixels(path, PALETTE[0])
        a, b = cols.min(), cols.max()
        ends = (_mean_row(rows, cols, a, a + 3) + _mean_row(rows, cols, b - 3, b)) / 2
        return abs(_mean_row(rows, cols, (a + b) / 2 - 1, (a + b) / 2 + 1) - ends)

    assert bend(logy=True) < 3
    assert bend(logy=False) > 50


def test_smoothing_draws_a_steadier_line(tmp_path):
    y = 0.5 + 0.5 * (-1.0) ** np.arange(300)  # alternates 0, 1

    def spread(smooth: float) -> float:
        path = plot_curves(tmp_path / f"s{smooth}.png", {"loss": (np.arange(300), y)}, smooth=smooth)
        rows, cols = _pixels(path, PALETTE[0])
        right = cols > (cols.min() + cols.max()) / 2
        return rows[right].max() - rows[right].min()

    assert spread(0.95) < 0.2 * spread(0.0)


def test_several_series_get_distinct_colours_and_a_legend(tmp_path):
    x = np.arange(10)
    path = plot_curves(tmp_path / "two.png", {"train": (x, x), "val": (x, 2 * x)})
    x1 = _frame(path)[2]
    for color in PALETTE[:2]:
        rows, cols = _pixels(path, color)
        assert (cols < x1).sum() > 10  # the curve
        assert (cols > x1 + 2).sum() > 10  # its legend swatch, right of the axes


@pytest.mark.parametrize(
    ("series", "logy", "drawn"),
    [
        ({"a": ([3], [1.5])}, False, True),  # single point
        ({"a": ([3], [1.5])}, True, True),
        ({"a": ([0, 1, 2], [2.0, 2.0, 2.0])}, False, True),  # constant
        ({"a": ([0, 1, 2], [0.0, 0.0, 0.0])}, False, True),
        ({"a": ([5, 5, 5], [1.0, 2.0, 3.0])}, False, True),  # constant x
        ({"a": ([0, 1, 2, 3], [1.0, math.nan, math.inf, 0.5])}, False, True),
        ({"a": ([0, math.nan, 2], [1.0, 2.0, 3.0])}, False, True),
        ({"a": ([0, 1, 2, 3], [-1.0, 0.0, 0.1, 1.0])}, True, True),  # non-positive on log
        ({"a": ([0, 1], [-1.0, 0.0])}, True, False),
        ({"a": ([0, 1], [math.nan, math.nan])}, False, False),
        ({"a": ([], [])}, False, False),
        ({"a": ([], []), "b": ([], [])}, True, False),
        ({}, False, False),
    ],
)
@pytest.mark.parametrize("smooth", [0.0, 0.9])
def test_plot_curves_degenerate_inputs(tmp_path, series, logy, drawn, smooth):
    path = plot_curves(tmp_path / "d.png", series, logy=logy, smooth=smooth, size=(400, 300))
    with Image.open(path) as img:
        assert img.size == (400, 300)
    _, cols = _pixels(path, PALETTE[0])
    assert ((cols < _frame(path)[2]).sum() > 0) == drawn  # left of the legend


def test_plot_curves_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        plot_curves(tmp_path / "x.png", {"a": ([0, 1], [1.0])})
    with pytest.raises(ValueError):
        plot_curves(tmp_path / "x.png", {"a": ([0, 1], [1.0, 2.0])}, smooth=1.0)


def test_plot_metrics_jsonl_skips_missing_keys_and_a_truncated_last_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1 / (s + 1), **({"lr": 1e-3} if s % 2 else {})}) for s in range(50)]
    metrics.write_text("\n".join(lines) + '\n\n{"step": 50, "loss": 0.0')
    out = plot_metrics_jsonl(metrics, tmp_path / "plots" / "loss.png", keys=("loss", "lr"))
    with Image.open(out) as img:
        assert img.format == "PNG"
    for color in PALETTE[:2]:
        assert _pixels(out, color)[0].size > 0
