"""Image grids and GIFs drawn with Pillow; line and bar charts drawn with matplotlib (Agg, no pyplot)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # matplotlib is imported where a chart is drawn: it costs every CLI call 0.2 s otherwise
    from matplotlib.figure import Figure

__all__ = ["image_grid", "save_grid", "save_gif", "plot_curves", "curves_figure", "plot_metrics_jsonl",
           "plot_bars", "bars_figure"]

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]  # {name: (x, y)}
_DPI = 100  # charts are sized in pixels: figsize = pixels / _DPI


# --------------------------------------------------------------------------- grids


def _as_uint8_nhwc(images: Any) -> np.ndarray:
    """(N, C, H, W) uint8 or [-1, 1] float tensor/array -> (N, H, W, C) uint8 array."""
    if hasattr(images, "detach"):  # torch.Tensor, without importing torch here
        images = images.detach().cpu()
        if images.is_floating_point():
            images = images.float()  # numpy has no bfloat16
        images = images.numpy()
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, C, H, W) with C in {{1, 3}}, got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.rint((np.nan_to_num(arr) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 or float images, got dtype {arr.dtype}")
    return arr.transpose(0, 2, 3, 1)


def image_grid(
    images: Any, nrow: int | None = None, padding: int = 2, scale: int = 1, pad_value: int = 0
) -> Image.Image:
    """Tile a batch into one image: `nrow` images per row (default ceil(sqrt(N))), `padding` px
    of `pad_value` around every cell, each pixel upsampled `scale` times (nearest)."""
    arr = _as_uint8_nhwc(images)
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError("no images to tile")
    if scale < 1 or (nrow is not None and nrow < 1):
        raise ValueError("nrow and scale must be >= 1")
    ncol = min(nrow or math.ceil(math.sqrt(n)), n)
    nrows = math.ceil(n / ncol)
    arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour upsampling
    ch, cw = h * scale, w * scale
    grid = np.full((padding + nrows * (ch + padding), padding + ncol * (cw + padding), c), pad_value, np.uint8)
    for k, img in enumerate(arr):
        r, q = divmod(k, ncol)
        y, x = padding + r * (ch + padding), padding + q * (cw + padding)
        grid[y : y + ch, x : x + cw] = img
    return Image.fromarray(grid[..., 0] if c == 1 else grid)  # mode "L" or "RGB"


def save_grid(
    images: Any,
    path: str | Path,
    nrow: int | None = None,
    padding: int = 2,
    scale: int | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write `image_grid(images)` as a PNG. `scale=None` upsamples so cells are >= ~64 px;
    `row_labels` (one per row) adds a white left margin naming each row."""
    cell = int(images.shape[-2])
    scale = scale or max(1, math.ceil(64 / cell))
    cell *= scale
    grid = image_grid(images, nrow, padding, scale)
    if row_labels is not None:
        nrows = (grid.height - padding) // (cell + padding)
        if len(row_labels) != nrows:
            raise ValueError(f"got {len(row_labels)} row labels for {nrows} rows")
        grid = _label_rows(grid, row_labels, cell, padding)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path


def save_gif(frames: Sequence[Any], path: str | Path, nrow: int | None = None, duration_ms: int = 80,
             pingpong: bool = False, scale: int | None = None) -> Path:
    """An animated GIF, one `image_grid` per frame (each a batch in [-1, 1] or uint8), looping forever;
    `pingpong` plays forward then back. Palette per frame, without dithering (which would flicker)."""
    if not frames:
        raise ValueError("no frames for the GIF")
    cell = int(frames[0].shape[-2])
    scale = scale or max(1, math.ceil(64 / cell))
    images = [image_grid(f, nrow, scale=scale).convert("RGB") for f in frames]
    if pingpong and len(images) > 2:
        images = images + images[-2:0:-1]
    images = [im.quantize(256, dither=Image.Dither.NONE) for im in images]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
                   disposal=1)
    return path


def _label_rows(grid: Image.Image, labels: Sequence[str], cell: int, padding: int) -> Image.Image:
    try:  # Pillow's built-in font at a size, or its fixed-size bitmap font before Pillow 10.1
        font = ImageFont.load_default(size=min(20, max(10, cell // 4)))
    except TypeError:
        font = ImageFont.load_default()
    gap = 6
    _, top, _, bottom = font.getbbox("Ag")  # one reference height, so that all labels share a baseline
    rights = [font.getbbox(s)[2] for s in labels]
    margin = max(right - font.getbbox(s)[0] for s, right in zip(labels, rights)) + 2 * gap
    out = Image.new(grid.mode, (grid.width + margin, grid.height), "white")
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    for r, (label, right) in enumerate(zip(labels, rights)):
        # Right-aligned and centred on the row by hand, because bitmap fonts reject Pillow's `anchor`.
        y = padding + r * (cell + padding) + cell / 2 - top - (bottom - top) / 2
        draw.text((round(margin - gap - right), round(y)), label, font=font, fill="#222222")
    return out


# --------------------------------------------------------------------------- charts


def _save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG. A Figure made without pyplot is in no global registry (freed with its last
    reference), and savefig picks the Agg canvas for PNG itself, so no backend is ever switched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white")
    return path


def _clean(name: str, x: Sequence[float], y: Sequence[float], logy: bool, logx: bool, gaps: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """Drop points that cannot be drawn: non-finite, or non-positive on a log axis. Dropped rather than
    left as NaN gaps, so that the line stays joined and the EMA stays finite; with `gaps`, a point without a
    drawable y stays as NaN, which breaks the line there (a measurement that was not made is not joined over)."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series {name!r}: {x.size} x values but {y.size} y values")
    drawable_x = np.isfinite(x) & ((x > 0) | (not logx))
    keep = drawable_x & np.isfinite(y) & ((y > 0) | (not logy))
    if gaps:
        return x[drawable_x], np.where(keep, y, np.nan)[drawable_x]
    return x[keep], y[keep]


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    out, acc = np.empty_like(y), y[0]
    for i, v in enumerate(y):
        acc = alpha * acc + (1 - alpha) * v
        out[i] = acc
    return out


@functools.cache
def _log_labels() -> type:
    """A LogFormatter (made on first use, as matplotlib is imported then) keeping matplotlib's choice of which log
    ticks to label (minor ones only on short ranges), printed as plain numbers ("60", "0.001", "1e-06"): easier to
    read off than its default "6x10^1" and "10^-3"."""
    from matplotlib.ticker import LogFormatter

    class LogLabels(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.6g}" if super().__call__(x, pos) else ""
    return LogLabels


def curves_figure(series: Series, title: str = "", xlabel: str = "step", ylabel: str = "", logy: bool = False,
                  smooth: float = 0.0, size: tuple[int, int] = (800, 500), logx: bool = False,
                  markers: bool = False, gaps: bool = False) -> Figure:
    """The Figure that `plot_curves` saves (see there)."""
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if smooth and gaps:
        raise ValueError("smooth and gaps do not go together: the EMA runs over joined points")
    from matplotlib.figure import Figure

    curves = [(name, *_clean(name, x, y, logy, logx, gaps)) for name, (x, y) in series.items()]
    fig = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xscale="log" if logx else "linear",
           yscale="log" if logy else "linear")
    for axis, log in ((ax.xaxis, logx), (ax.yaxis, logy)):
        if log:
            axis.set_major_formatter(_log_labels()())
            axis.set_minor_formatter(_log_labels()(labelOnlyBase=False))
    ax.grid(True, color="#e6e6e6")
    ax.set_axisbelow(True)
    for i, (name, x, y) in enumerate(curves):
        if smooth and y.size:
            # Raw curves lie under every EMA (zorder), so that no light raw line hides another series' EMA.
            ax.plot(x, y, color=f"C{i}", alpha=0.35, linewidth=1, zorder=1.5)
            y = _ema(y, smooth)
        ax.plot(x, y, color=f"C{i}", label=name, linewidth=2.5 if smooth else 2, zorder=2, markersize=4,
                marker="o" if markers or x.size == 1 else None)  # a lone point has no segment: mark it
    if not any(x.size for _, x, _ in curves):
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")
    if len(curves) > 1:
        ax.legend()
    return fig


def plot_curves(path: str | Path, series: Series, title: str = "", xlabel: str = "step", ylabel: str = "",
                logy: bool = False, smooth: float = 0.0, size: tuple[int, int] = (800, 500), logx: bool = False,
                markers: bool = False, gaps: bool = False) -> Path:
    """Draw `series` ({name: (x, y)}) as a line plot PNG of `size` pixels at `path`.

    `smooth` in [0, 1) is an EMA factor: the EMA is drawn thick over the raw curve drawn thin
    and light. NaN/inf points, and non-positive ones on a log axis, are skipped; with nothing
    left the empty axes say "no data"; with `gaps` a NaN y breaks the line instead. `markers` draws a dot at
    every point (sparse series)."""
    return _save(curves_figure(series, title, xlabel, ylabel, logy, smooth, size, logx, markers, gaps), path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_metrics_jsonl(metrics_path: str | Path, out_path: str | Path, keys: Sequence[str] = ("loss",),
                       logy: bool = True, smooth: float = 0.9) -> Path:
    """Plot `keys` against "step" from a JSON-lines log, one series per key. Lines that are not
    complete JSON objects (e.g. a last line cut off mid-write) and missing keys are skipped."""
    points: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in keys}
    # errors="replace": a line cut inside a multi-byte character must not abort the read.
    with open(metrics_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or not _is_number(record.get("step")):
                continue
            for key, (xs, ys) in points.items():
                if _is_number(record.get(key)):
                    xs.append(record["step"])
                    ys.append(record[key])
    ylabel = keys[0] if len(keys) == 1 else ""
    # An EMA of factor s averages ~1/(1-s) points: keep that window to ~5% of the curve, so a short
    # log (a few dozen points) is drawn as it is rather than as a lagging smear.
    n = max((len(xs) for xs, _ in points.values()), default=0)
    smooth = min(smooth, max(0.0, 1.0 - 20.0 / n)) if n else 0.0
    return plot_curves(out_path, points, ylabel=ylabel, logy=logy, smooth=smooth)


def bars_figure(bars: Mapping[str, float], title: str = "", xlabel: str = "", width: int = 800) -> Figure:
    """The Figure that `plot_bars` saves (see there)."""
    from matplotlib.figure import Figure

    labels = list(bars)
    values = [v if math.isfinite(v := float(bars[k])) else 0.0 for k in labels]
    height = 1.0 + 0.35 * max(len(labels), 1) + 0.3 * bool(title) + 0.3 * bool(xlabel)  # inches, grows with bars
    fig = Figure(figsize=(width / _DPI, height), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    bar = ax.barh(range(len(labels)), values, color=[f"C{i % 10}" for i in range(len(labels))], tick_label=labels)
    ax.bar_label(bar, fmt="{:,.0f}", padding=3)
    ax.invert_yaxis()  # first item on top, as in the table beside it
    ax.margins(x=0.15)  # room for the value printed past the longest bar
    return fig


def plot_bars(path: str | Path, bars: Mapping[str, float], title: str = "", xlabel: str = "",
              width: int = 800) -> Path:
    """Horizontal bars, one per `bars` item ({label: value >= 0}), with the value printed at the bar's end,
    in a PNG `width` pixels wide. A non-finite value is drawn as 0."""
    return _save(bars_figure(bars, title, xlabel, width), path)
