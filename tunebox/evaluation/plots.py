"""Small PNG charts drawn with Pillow (matplotlib is not installed; Pillow comes with MindSpore):
line charts for curves over steps or scales, horizontal grouped bars for per-category figures.

Each function takes plain numbers and writes one PNG atomically; `None` values are gaps.
The look is deliberately plain: white background, grey grid, one colour per series, a legend.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tunebox.io import atomic_write_bytes

# Colour-blind-safe (Okabe-Ito), in the order series are drawn.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
GRID = "#DDDDDD"
AXIS = "#444444"


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[Optional[float]]
    dashed: bool = False
    markers: bool = True
    lines: bool = True
    color: Optional[str] = None


@dataclass
class HLine:
    y: float
    label: str
    color: str = "#999999"


@dataclass
class _Frame:
    left: int
    top: int
    right: int
    bottom: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def px(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        fx = (x - x0) / (x1 - x0) if x1 != x0 else 0.5
        fy = (y - y0) / (y1 - y0) if y1 != y0 else 0.5
        return self.left + fx * (self.right - self.left), self.bottom - fy * (self.bottom - self.top)


def font(size: int = 14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)   # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]; with
    `integer`, whole numbers only (training steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got {lo}..{hi}")
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in multiples if m * power >= raw)
    if integer:
        step = max(1, int(round(step)))
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi - step * 1e-9:
        ticks.append(round(t, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.6g}" if v != int(v) else str(int(v))


def _text_size(draw, text: str, fnt) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=fnt)
    return box[2] - box[0], box[3] - box[1]


def _save(image, path: Path) -> Path:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _legend_size(draw, labels: Sequence[str], fnt) -> tuple[int, int]:
    line_h = _text_size(draw, "Ag", fnt)[1] + 8
    return max(_text_size(draw, label, fnt)[0] for label in labels) + 46, line_h * len(labels) + 8


def _legend(draw, entries: list[tuple[str, str, str]], x_left: int, y_top: int, fnt) -> None:
    """Legend box with its top-left corner at (x_left, y_top); each entry is (label, colour,
    kind) with kind 'line', 'dashed', 'marker' or 'box'."""
    if not entries:
        return
    box_w, box_h = _legend_size(draw, [e[0] for e in entries], fnt)
    line_h = (box_h - 8) // len(entries)
    draw.rectangle([x_left, y_top, x_left + box_w, y_top + box_h], fill="white", outline=GRID)
    for i, (label, color, kind) in enumerate(entries):
        y = y_top + 6 + i * line_h + line_h // 2 - 2
        x = x_left + 8
        if kind == "dashed":
            for sx in range(x, x + 26, 8):
                draw.line([sx, y, sx + 4, y], fill=color, width=3)
        elif kind == "marker":
            draw.ellipse([x + 9, y - 4, x + 17, y + 4], fill=color)
        elif kind == "box":
            draw.rectangle([x + 4, y - 6, x + 22, y + 6], fill=color)
        else:
            draw.line([x, y, x + 26, y], fill=color, width=3)
        draw.text((x_left + 40, y), label, fill=AXIS, font=fnt, anchor="lm")


def line_chart(path: Path, series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
               hlines: Sequence[HLine] = (), y_range: Optional[tuple[float, float]] = None,
               x_ticks: Optional[Sequence[float]] = None, size: tuple[int, int] = (980, 480)) -> Path:
    """Lines (with point markers) over a shared x axis; y range from the data unless given."""
    from PIL import Image, ImageDraw

    xs = [x for s in series for x, y in zip(s.xs, s.ys) if y is not None]
    ys = [y for s in series for y in s.ys if y is not None] + [h.y for h in hlines]
    if not xs:
        raise ValueError(f"{title}: no data points to draw")
    lo_y, hi_y = y_range if y_range else (min(ys), max(ys))
    if not y_range:
        pad = (hi_y - lo_y) * 0.05 or abs(hi_y) * 0.05 or 0.05
        # non-negative data (accuracies, losses) keeps its axis at or above 0
        lo_y, hi_y = (max(lo_y - pad, 0.0) if lo_y >= 0 else lo_y - pad), hi_y + pad
    yt = nice_ticks(lo_y, hi_y)
    xt = (list(x_ticks) if x_ticks is not None
          else nice_ticks(min(xs), max(xs), integer=all(float(x).is_integer() for x in xs)))
    x_lo, x_hi = min(min(xt), min(xs)), max(max(xt), max(xs))
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    f_title, f_axis, f_tick = font(18), font(14), font(12)
    tick_w = max(_text_size(draw, _fmt(t), f_tick)[0] for t in yt)
    labels = [h.label for h in hlines] + [s.label for s in series]
    legend_w, _ = _legend_size(draw, labels, f_tick)
    frame = _Frame(left=tick_w + 48, top=46, right=width - legend_w - 24, bottom=height - 62,
                   x_range=(x_lo, x_hi), y_range=(yt[0], yt[-1]))
    draw.text((width // 2, 14), title, fill="black", font=f_title, anchor="mt")
    for t in yt:
        _, py = frame.px(x_lo, t)
        draw.line([frame.left, py, frame.right, py], fill=GRID)
        draw.text((frame.left - 6, py), _fmt(t), fill=AXIS, font=f_tick, anchor="rm")
    for t in xt:
        px, _ = frame.px(t, yt[0])
        draw.line([px, frame.bottom, px, frame.bottom + 5], fill=AXIS)
        draw.text((px, frame.bottom + 8), _fmt(t), fill=AXIS, font=f_tick, anchor="mt")
    draw.rectangle([frame.left, frame.top, frame.right, frame.bottom], outline=AXIS)
    draw.text(((frame.left + frame.right) // 2, height - 10), xlabel, fill=AXIS, font=f_axis, anchor="mb")
    draw.text((8, frame.top - 24), ylabel, fill=AXIS, font=f_axis, anchor="lt")

    legend = []
    for h in hlines:
        _, py = frame.px(x_lo, h.y)
        for sx in range(frame.left, frame.right, 12):
            draw.line([sx, py, min(sx + 6, frame.right), py], fill=h.color, width=2)
        legend.append((h.label, h.color, "dashed"))
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        points = [frame.px(x, y) if y is not None else None for x, y in zip(s.xs, s.ys)]
        for a, b in zip(points, points[1:]):
            if a is None or b is None or not s.lines:
                continue
            if s.dashed:
                _dashed_line(draw, a, b, color)
            else:
                draw.line([a, b], fill=color, width=3)
        if s.markers:
            for p in points:
                if p is not None:
                    draw.ellipse([p[0] - 4, p[1] - 4, p[0] + 4, p[1] + 4], fill=color)
        legend.append((s.label, color, "marker" if not s.lines else "dashed" if s.dashed else "line"))
    _legend(draw, legend, frame.right + 12, frame.top, f_tick)
    return _save(image, path)


def _dashed_line(draw, a, b, color, dash: float = 8.0) -> None:
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length == 0:
        return
    steps = int(length // dash)
    for k in range(0, steps + 1, 2):
        t0, t1 = k * dash / length, min((k + 1) * dash / length, 1.0)
        draw.line([a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0,
                   a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1], fill=color, width=3)


def bar_chart(path: Path, categories: Sequence[str], series: dict[str, Sequence[Optional[float]]], *,
              title: str, xlabel: str, x_range: Optional[tuple[float, float]] = None,
              width: int = 860) -> Path:
    """Horizontal grouped bars: one group per category (labels on the left), one bar per series,
    the value printed at the end of each bar. Height grows with the number of bars."""
    from PIL import Image, ImageDraw

    names = list(series)
    if not categories or not names:
        raise ValueError(f"{title}: nothing to draw")
    for name in names:
        if len(series[name]) != len(categories):
            raise ValueError(f"{title}: series {name!r} has {len(series[name])} values for {len(categories)} categories")
    values = [v for name in names for v in series[name] if v is not None]
    lo, hi = x_range if x_range else (min(0.0, min(values, default=0.0)), max(values, default=1.0) or 1.0)
    ticks = nice_ticks(lo, hi)
    bar_h, gap = 14, 12
    group_h = bar_h * len(names) + gap
    probe = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    f_title, f_axis, f_tick = font(18), font(14), font(12)
    label_w = max(_text_size(probe, c, f_tick)[0] for c in categories)
    legend_h = (_text_size(probe, "Ag", f_tick)[1] + 8) * len(names) + 12
    top = 46 + legend_h
    height = top + group_h * len(categories) + 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    frame = _Frame(left=label_w + 20, top=top, right=width - 60, bottom=height - 50,
                   x_range=(ticks[0], ticks[-1]), y_range=(0, 1))
    draw.text((width // 2, 14), title, fill="black", font=f_title, anchor="mt")
    for t in ticks:
        px, _ = frame.px(t, 0)
        draw.line([px, frame.top, px, frame.bottom], fill=GRID)
        draw.text((px, frame.bottom + 6), _fmt(t), fill=AXIS, font=f_tick, anchor="mt")
    draw.text(((frame.left + frame.right) // 2, height - 8), xlabel, fill=AXIS, font=f_axis, anchor="mb")
    zero_x, _ = frame.px(max(ticks[0], 0.0), 0)
    for ci, cat in enumerate(categories):
        y0 = frame.top + ci * group_h + gap // 2
        draw.text((frame.left - 8, y0 + bar_h * len(names) / 2), cat, fill=AXIS, font=f_tick, anchor="rm")
        for si, name in enumerate(names):
            v = series[name][ci]
            y = y0 + si * bar_h
            if v is None:
                draw.text((zero_x + 4, y + bar_h / 2), "n/a", fill="#999999", font=f_tick, anchor="lm")
                continue
            px, _ = frame.px(v, 0)
            draw.rectangle([min(zero_x, px), y + 1, max(zero_x, px), y + bar_h - 2], fill=PALETTE[si % len(PALETTE)])
            draw.text((max(zero_x, px) + 4, y + bar_h / 2), _fmt(round(v, 3)), fill=AXIS, font=f_tick, anchor="lm")
    draw.rectangle([frame.left, frame.top, frame.right, frame.bottom], outline=AXIS)
    legend_w, _ = _legend_size(draw, names, f_tick)
    _legend(draw, [(n, PALETTE[i % len(PALETTE)], "box") for i, n in enumerate(names)], frame.right - legend_w, 40, f_tick)
    return _save(image, path)
