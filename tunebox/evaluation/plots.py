"""The report's PNG charts, drawn with matplotlib (Agg, headless; no pyplot state): line charts for
curves over steps or scales, horizontal grouped bars for per-category figures.

Each chart has a `*_figure` function (the matplotlib Figure, so a test can map data to pixels) and a
`*_chart` function that writes it to one PNG atomically. `None` values are gaps. One colour per series
from the colour-blind-safe Okabe-Ito palette (no greys, which thresholds and raw curves use); the
legend sits right of the plot.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tunebox.io import atomic_write_bytes

DPI = 100
# Okabe & Ito, "Color Universal Design" (2008), https://jfly.uni-koeln.de/color/
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


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


def _nan(values: Sequence[Optional[float]]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _new_axes(size: tuple[int, int]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_prop_cycle(color=PALETTE)
    ax.grid(True, color="#DDDDDD")
    ax.set_axisbelow(True)
    return fig, ax


def save(fig, path: Path) -> Path:
    """The figure as a PNG at `path` (atomic)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def line_figure(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str, hlines: Sequence[HLine] = (),
                y_range: Optional[tuple[float, float]] = None, x_ticks: Optional[Sequence[float]] = None,
                size: tuple[int, int] = (980, 480)):
    """Lines (with point markers) over a shared x axis; y range from the data unless given."""
    from matplotlib.ticker import MaxNLocator

    xs = [x for s in series for x, y in zip(s.xs, s.ys) if y is not None]
    ys = [y for s in series for y in s.ys if y is not None]
    if not xs:
        raise ValueError(f"{title}: no data points to draw")
    fig, ax = _new_axes(size)
    for h in hlines:
        ax.axhline(h.y, color=h.color, linestyle="--", linewidth=1.5, label=h.label)
    for i, s in enumerate(series):
        ax.plot(list(s.xs), _nan(s.ys), label=s.label, color=s.color or PALETTE[i % len(PALETTE)],
                linestyle=("--" if s.dashed else "-") if s.lines else "none",
                marker="o" if s.markers else None, markersize=5, linewidth=2)
    if y_range:
        ax.set_ylim(*y_range)
    elif min(ys + [h.y for h in hlines]) >= 0:
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.0))   # accuracies and losses keep their axis at or above 0
    if x_ticks is not None:
        ax.set_xticks(list(x_ticks))
    elif all(float(x).is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # training steps: no 2.5
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def line_chart(path: Path, series: Sequence[Series], **kwargs) -> Path:
    """line_figure(series, **kwargs) written to `path`."""
    return save(line_figure(series, **kwargs), path)


def bar_figure(categories: Sequence[str], series: dict[str, Sequence[Optional[float]]], *, title: str, xlabel: str,
               x_range: Optional[tuple[float, float]] = None, width: int = 860):
    """Horizontal grouped bars: one group per category (labels on the left, the first on top), one bar
    per series, the value printed at the end of each bar ("n/a" for None). Height grows with the bars."""
    names = list(series)
    if not categories or not names:
        raise ValueError(f"{title}: nothing to draw")
    for name in names:
        if len(series[name]) != len(categories):
            raise ValueError(f"{title}: series {name!r} has {len(series[name])} values for {len(categories)} "
                             "categories")
    bar_h = 0.8 / len(names)
    height = max(110 + (14 * len(names) + 12) * len(categories), 80 + 20 * len(names))   # the legend fits too
    fig, ax = _new_axes((width, height))
    ax.grid(False, axis="y")
    for i, name in enumerate(names):
        ys = [c - 0.4 + bar_h * (i + 0.5) for c in range(len(categories))]
        values = series[name]
        bars = ax.barh(ys, [0.0 if v is None else v for v in values], height=bar_h * 0.9, label=name,
                       color=PALETTE[i % len(PALETTE)])
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3g}" for v in values], padding=3, fontsize="small")
    ax.set_yticks(range(len(categories)), list(categories))
    ax.invert_yaxis()                                   # the first category on top
    if x_range:
        lo, hi = x_range
        ax.set_xlim(lo, hi + 0.06 * (hi - lo))          # room for the value printed past a full bar
    ax.set(title=title, xlabel=xlabel)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def bar_chart(path: Path, categories: Sequence[str], series: dict[str, Sequence[Optional[float]]], **kwargs) -> Path:
    """bar_figure(categories, series, **kwargs) written to `path`."""
    return save(bar_figure(categories, series, **kwargs), path)
