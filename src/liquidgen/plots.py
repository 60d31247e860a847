"""Image grids and line plots, drawn with Pillow alone (no matplotlib dependency)."""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["image_grid", "save_grid", "plot_curves", "plot_metrics_jsonl", "nice_ticks"]

# matplotlib's "tab10": distinct hues that stay readable on white.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
_INK = "#222222"
_FRAME = "#444444"
_GRID = "#e6e6e6"

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


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
    font = _font(min(20, max(10, cell // 4)))
    gap = 6
    margin = max(_text_wh(s, font)[0] for s in labels) + 2 * gap
    out = Image.new(grid.mode, (grid.width + margin, grid.height), "white")
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    for r, label in enumerate(labels):
        _put_text(draw, margin - gap, padding + r * (cell + padding) + cell / 2, label, font, "r", "m")
    return out


# --------------------------------------------------------------------------- text


@functools.cache
def _font(size: int) -> Font:
    """Pillow's built-in font at `size` px, or its fixed-size bitmap font before Pillow 10.1."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _text_wh(text: str, font: Font) -> tuple[int, int]:
    # Height comes from a reference string so that all labels share one baseline.
    left, _, right, _ = font.getbbox(text)
    _, top, _, bottom = font.getbbox("Ag")
    return right - left, bottom - top


def _put_text(
    draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: Font,
    ha: str = "l", va: str = "t", fill: str = _INK,
) -> None:
    """Draw `text` with its box aligned to (x, y): `ha` in l/m/r, `va` in t/m/b.
    Done by hand because bitmap fonts reject Pillow's `anchor`."""
    left, _, right, _ = font.getbbox(text)
    _, top, _, bottom = font.getbbox("Ag")
    x -= left + {"l": 0, "m": (right - left) / 2, "r": right - left}[ha]
    y -= top + {"t": 0, "m": (bottom - top) / 2, "b": bottom - top}[va]
    draw.text((round(x), round(y)), text, font=font, fill=fill)


def _put_vertical_text(img: Image.Image, cx: float, cy: float, text: str, font: Font) -> None:
    """Draw `text` rotated 90 degrees (reading bottom-up), centred on (cx, cy)."""
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=255)
    mask = mask.rotate(90, expand=True)
    img.paste(_INK, (round(cx - mask.width / 2), round(cy - mask.height / 2)), mask)


# --------------------------------------------------------------------------- ticks


def nice_ticks(lo: float, hi: float) -> list[float]:
    """4-6 evenly spaced ticks covering [lo, hi], with a step of 1, 2 or 5 x 10^k: the smallest
    such step giving at most 6 ticks. A zero-width range is widened by 20% (or 1) each way."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"non-finite range [{lo}, {hi}]")
    lo, hi = min(lo, hi), max(lo, hi)
    if lo == hi:
        half = abs(lo) * 0.2 or 1.0
        lo, hi = lo - half, hi + half
    k0 = math.floor(math.log10((hi - lo) / 6))  # a step of 10^k0 gives more than 6 ticks
    for j in itertools.count():
        k, m = k0 + j // 3, (1, 2, 5)[j % 3]
        step = m * 10.0**k
        # The tolerance keeps float noise (0.3 / 0.1 = 2.999...) from adding a tick.
        i0, i1 = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if i1 - i0 <= 5:
            break
    if i1 - i0 < 3:  # only 3 ticks, yet the next smaller step gives 7+: add one on the tighter side
        if lo - i0 * step < i1 * step - hi:
            i0 -= 1
        else:
            i1 += 1
    # Dividing by 10^-k (exact) rather than multiplying by 10^k gives 0.3, not 0.30000000000000004.
    return [i * m * 10**k if k >= 0 else i * m / 10**-k for i in range(i0, i1 + 1)]


def _axis(lo: float, hi: float, log: bool) -> tuple[list[float], float, float]:
    """Ticks and axis limits for data in [lo, hi] (both > 0 when `log`)."""
    if not log:
        ticks = nice_ticks(lo, hi)
        return ticks, ticks[0], ticks[-1]
    if math.log10(hi / lo) < 1:  # under a decade there are too few powers of ten to label
        ticks = nice_ticks(lo, hi)
        positive = [t for t in ticks if t > 0]
        return positive, (ticks[0] if ticks[0] > 0 else lo), ticks[-1]
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    stride = 1
    while -(-e1 // stride) - e0 // stride > 5:  # at most 6 labelled decades
        stride += 1
    e0, e1 = e0 // stride * stride, -(-e1 // stride) * stride
    ticks = [10.0**e for e in range(e0, e1 + 1, stride)]
    return ticks, ticks[0], ticks[-1]


def _fmt(v: float) -> str:
    return f"{v:.12g}"  # ticks are exact decimals, so this prints "0.3", "1e-05", "2000"


# --------------------------------------------------------------------------- curves


def _clean(name: str, x: Sequence[float], y: Sequence[float], logy: bool, logx: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """Drop points that cannot be drawn: non-finite, or non-positive on a log axis."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series {name!r}: {x.size} x values but {y.size} y values")
    keep = np.isfinite(x) & np.isfinite(y)
    if logy:
        keep &= y > 0
    if logx:
        keep &= x > 0
    return x[keep], y[keep]


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    out, acc = np.empty_like(y), y[0]
    for i, v in enumerate(y):
        acc = alpha * acc + (1 - alpha) * v
        out[i] = acc
    return out


def _tint(color: str, amount: float) -> tuple[int, int, int]:
    """`color` mixed with white; `amount` is the share of the colour."""
    rgb = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return tuple(round(255 - amount * (255 - c)) for c in rgb)  # type: ignore[return-value]


def _draw_series(draw: ImageDraw.ImageDraw, px: np.ndarray, py: np.ndarray, color: Any, width: int) -> None:
    if px.size == 1:  # a lone point has no segment to draw: mark it with a dot
        r = width + 1
        draw.ellipse([px[0] - r, py[0] - r, px[0] + r, py[0] + r], fill=color)
    elif px.size:
        draw.line(list(zip(px.tolist(), py.tolist())), fill=color, width=width, joint="curve")


def plot_curves(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "",
    logy: bool = False,
    smooth: float = 0.0,
    size: tuple[int, int] = (800, 500),
    logx: bool = False,
    markers: bool = False,
) -> Path:
    """Draw `series` ({name: (x, y)}) as a line plot PNG at `path`.

    `smooth` in [0, 1) is an EMA factor: the EMA is drawn thick over the raw curve drawn thin
    and light. NaN/inf points, and non-positive ones on a log axis, are skipped; with nothing
    left the empty axes say "no data". `markers` draws a dot at every point (sparse series)."""
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    width, height = size
    curves = [(name, *_clean(name, x, y, logy, logx)) for name, (x, y) in series.items()]
    xs = np.concatenate([x for _, x, _ in curves] + [np.empty(0)])
    ys = np.concatenate([y for _, _, y in curves] + [np.empty(0)])
    has_data = xs.size > 0
    xticks, xlo, xhi = _axis(xs.min(), xs.max(), logx) if has_data else _axis(0.1, 1, logx)
    yticks, ylo, yhi = _axis(ys.min(), ys.max(), logy) if has_data else _axis(0.1, 1, logy)

    # Layout: margins sized from the text that goes in them.
    fs = max(10, min(width, height) // 36)
    font, title_font = _font(fs), _font(round(fs * 1.3))
    pad, gap, tick = fs, 4, 5
    lh = _text_wh("Ag", font)[1]
    ylabels, xlabels = [_fmt(v) for v in yticks], [_fmt(v) for v in xticks]
    legend = len(curves) > 1
    swatch = 2 * fs
    legend_w = swatch + gap + max(_text_wh(name, font)[0] for name, *_ in curves) if legend else 0
    left = pad + (lh + 2 * gap if ylabel else 0) + max(_text_wh(s, font)[0] for s in ylabels) + gap + tick
    right = max(pad + _text_wh(xlabels[-1], font)[0] // 2, legend_w + 2 * pad if legend else 0)
    top = pad + (_text_wh(title, title_font)[1] + 2 * gap if title else 0)
    bottom = pad + (lh + 2 * gap if xlabel else 0) + lh + gap + tick
    x0, y0, x1, y1 = left, top, width - right, height - bottom
    if x1 - x0 < 20 or y1 - y0 < 20:
        raise ValueError(f"size {size} is too small for the labels")

    ty = np.log10 if logy else np.asarray
    tx = np.log10 if logx else np.asarray

    def to_px(x: np.ndarray) -> np.ndarray:
        return x0 + (tx(x) - tx(xlo)) / (tx(xhi) - tx(xlo)) * (x1 - x0)

    def to_py(y: np.ndarray) -> np.ndarray:
        return y1 - (ty(y) - ty(ylo)) / (ty(yhi) - ty(ylo)) * (y1 - y0)

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for v, s in zip(xticks, xlabels):
        x = round(float(to_px(v)))
        draw.line([(x, y0), (x, y1)], fill=_GRID)
        draw.line([(x, y1), (x, y1 + tick)], fill=_FRAME)
        _put_text(draw, x, y1 + tick + gap, s, font, "m", "t")
    for v, s in zip(yticks, ylabels):
        y = round(float(to_py(v)))
        draw.line([(x0, y), (x1, y)], fill=_GRID)
        draw.line([(x0 - tick, y), (x0, y)], fill=_FRAME)
        _put_text(draw, x0 - tick - gap, y, s, font, "r", "m")
    draw.rectangle([x0, y0, x1, y1], outline=_FRAME)

    colors = [PALETTE[i % len(PALETTE)] for i in range(len(curves))]
    if smooth:  # raw curves first, so that no light raw line covers another series' EMA
        for (_, x, y), color in zip(curves, colors):
            _draw_series(draw, to_px(x), to_py(y), _tint(color, 0.35), 1)
    for (_, x, y), color in zip(curves, colors):
        if smooth and y.size:
            y = _ema(y, smooth)
        _draw_series(draw, to_px(x), to_py(y), color, 3 if smooth else 2)
        if markers:
            for px, py in zip(to_px(x).tolist(), to_py(y).tolist()):
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
    if not has_data:
        _put_text(draw, (x0 + x1) / 2, (y0 + y1) / 2, "no data", title_font, "m", "m", fill="#888888")

    if title:
        _put_text(draw, width / 2, pad, title, title_font, "m", "t")
    if xlabel:
        _put_text(draw, (x0 + x1) / 2, height - pad, xlabel, font, "m", "b")
    if ylabel:
        _put_vertical_text(img, pad + lh / 2, (y0 + y1) / 2, ylabel, font)
    if legend:
        for i, ((name, *_), color) in enumerate(zip(curves, colors)):
            y = y0 + gap + lh / 2 + i * (lh + 2 * gap)
            draw.line([(x1 + pad, y), (x1 + pad + swatch, y)], fill=color, width=3)
            _put_text(draw, x1 + pad + swatch + gap, y, name, font, "l", "m")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_metrics_jsonl(
    metrics_path: str | Path,
    out_path: str | Path,
    keys: Sequence[str] = ("loss",),
    logy: bool = True,
    smooth: float = 0.9,
) -> Path:
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


def plot_bars(
    path: str | Path,
    bars: Mapping[str, float],
    title: str = "",
    xlabel: str = "",
    width: int = 800,
) -> Path:
    """Horizontal bars, one per `bars` item ({label: value >= 0}), with the value printed at the bar's end."""
    fs = max(10, width // 60)
    font, title_font = _font(fs), _font(round(fs * 1.3))
    pad, gap, bar_h = fs, 4, round(fs * 1.6)
    labels = list(bars)
    values = [float(bars[k]) if math.isfinite(float(bars[k])) else 0.0 for k in labels]
    label_w = max((_text_wh(s, font)[0] for s in labels), default=0)
    value_w = max((_text_wh(f"{v:,.0f}", font)[0] for v in values), default=0)
    top = pad + (_text_wh(title, title_font)[1] + 2 * gap if title else 0)
    height = top + len(labels) * (bar_h + gap) + pad + (_text_wh(xlabel, font)[1] + gap if xlabel else 0)
    x0, x1 = pad + label_w + gap, width - pad - value_w - gap
    if x1 - x0 < 20:
        raise ValueError(f"width {width} is too small for the labels")
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    scale = (x1 - x0) / max(max(values, default=0.0), 1e-12)
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * (bar_h + gap)
        draw.rectangle([x0, y, x0 + max(1, round(v * scale)), y + bar_h], fill=PALETTE[i % len(PALETTE)])
        _put_text(draw, x0 - gap, y + bar_h / 2, label, font, "r", "m")
        _put_text(draw, x0 + v * scale + gap, y + bar_h / 2, f"{v:,.0f}", font, "l", "m")
    if title:
        _put_text(draw, width / 2, pad, title, title_font, "m", "t")
    if xlabel:
        _put_text(draw, (x0 + x1) / 2, height - pad, xlabel, font, "m", "b")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
