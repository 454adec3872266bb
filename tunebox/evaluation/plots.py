"""The report's PNG charts, drawn with matplotlib (Agg, headless; no pyplot state): line charts for
curves over steps or scales (stacked panels with their own y axes when quantities differ, e.g. accuracy
above SQuAD retention), horizontal grouped bars for per-category figures.

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
    intervals: Optional[Sequence[Optional[tuple[float, float]]]] = None  # (low, high) per point, drawn as a band


@dataclass
class HLine:
    y: float
    label: str
    color: str = "#999999"


def _nan(values: Sequence[Optional[float]]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _new_axes(size: tuple[int, int], rows: int = 1):
    """A figure and its `rows` axes (a list, stacked, sharing x)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0].tolist()
    for ax in axes:
        ax.set_prop_cycle(color=PALETTE)
        ax.grid(True, color="#DDDDDD")
        ax.set_axisbelow(True)
    return fig, axes


def save(fig, path: Path) -> Path:
    """The figure as a PNG at `path` (atomic)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


@dataclass
class Panel:
    """One axes of a stacked chart: its series, thresholds, y label and (optional) y range."""

    series: Sequence[Series]
    ylabel: str
    hlines: Sequence[HLine] = ()
    y_range: Optional[tuple[float, float]] = None


def _draw_lines(ax, panel: Panel, x_ticks: Optional[Sequence[float]], first_colour: int = 0) -> None:
    from matplotlib.ticker import MaxNLocator

    xs = [x for s in panel.series for x, y in zip(s.xs, s.ys) if y is not None]
    ys = [y for s in panel.series for y in s.ys if y is not None]
    for h in panel.hlines:
        ax.axhline(h.y, color=h.color, linestyle="--", linewidth=1.5, label=h.label)
    for i, s in enumerate(panel.series, start=first_colour):
        colour = s.color or PALETTE[i % len(PALETTE)]
        ax.plot(
            list(s.xs),
            _nan(s.ys),
            label=s.label,
            color=colour,
            linestyle=("--" if s.dashed else "-") if s.lines else "none",
            marker="o" if s.markers else None,
            markersize=5,
            linewidth=2,
        )
        if s.intervals is not None:
            spans = [(x, iv) for x, iv in zip(s.xs, s.intervals) if iv is not None]
            if spans:
                ax.vlines(
                    [x for x, _ in spans],
                    [iv[0] for _, iv in spans],
                    [iv[1] for _, iv in spans],
                    color=colour,
                    linewidth=6,
                    alpha=0.25,
                    label=f"{s.label}: 95% interval",
                )
    if panel.y_range:
        ax.set_ylim(*panel.y_range)
    elif ys and min(ys + [h.y for h in panel.hlines]) >= 0:
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.0))  # accuracies and losses keep their axis at or above 0
    if x_ticks is not None:
        ax.set_xticks(list(x_ticks))
    elif xs and all(float(x).is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # training steps: no 2.5
    ax.set_ylabel(panel.ylabel)


def line_figure(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: Sequence[HLine] = (),
    y_range: Optional[tuple[float, float]] = None,
    x_ticks: Optional[Sequence[float]] = None,
    size: tuple[int, int] = (980, 480),
):
    """Lines (with point markers) over a shared x axis; y range from the data unless given."""
    return panels_figure(
        [Panel(series, ylabel, hlines, y_range)], title=title, xlabel=xlabel, x_ticks=x_ticks, size=size
    )


def panels_figure(
    panels: Sequence[Panel],
    *,
    title: str,
    xlabel: str,
    x_ticks: Optional[Sequence[float]] = None,
    size: Optional[tuple[int, int]] = None,
):
    """One line chart per panel, stacked and sharing the x axis, each with its own y axis (a fraction of
    rows right and a ratio to the base model are different quantities); colours run on across panels."""
    if not any(y is not None for p in panels for s in p.series for y in s.ys):
        raise ValueError(f"{title}: no data points to draw")
    fig, axes = _new_axes(size or (980, 480 if len(panels) == 1 else 300 + 240 * len(panels)), rows=len(panels))
    colour = 0
    for ax, panel in zip(axes, panels):
        _draw_lines(ax, panel, x_ticks, colour)
        colour += len(panel.series)
    axes[-1].set_xlabel(xlabel)
    if len(axes) == 1:
        axes[0].set_title(title)
        fig.legend(loc="outside right upper", fontsize="small")
    else:
        fig.suptitle(title)
        for ax in axes:  # each panel's legend beside it
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def panels_chart(path: Path, panels: Sequence[Panel], **kwargs) -> Path:
    """panels_figure(panels, **kwargs) written to `path`."""
    return save(panels_figure(panels, **kwargs), path)


def line_chart(path: Path, series: Sequence[Series], **kwargs) -> Path:
    """line_figure(series, **kwargs) written to `path`."""
    return save(line_figure(series, **kwargs), path)


def bar_figure(
    categories: Sequence[str],
    series: dict[str, Sequence[Optional[float]]],
    *,
    title: str,
    xlabel: str,
    x_range: Optional[tuple[float, float]] = None,
    width: int = 860,
):
    """Horizontal grouped bars: one group per category (labels on the left, the first on top), one bar
    per series, the value printed at the end of each bar ("n/a" for None). Height grows with the bars."""
    names = list(series)
    if not categories or not names:
        raise ValueError(f"{title}: nothing to draw")
    for name in names:
        if len(series[name]) != len(categories):
            raise ValueError(
                f"{title}: series {name!r} has {len(series[name])} values for {len(categories)} categories"
            )
    bar_h = 0.8 / len(names)
    height = max(110 + (14 * len(names) + 12) * len(categories), 80 + 20 * len(names))  # the legend fits too
    fig, (ax,) = _new_axes((width, height))
    ax.grid(False, axis="y")
    for i, name in enumerate(names):
        ys = [c - 0.4 + bar_h * (i + 0.5) for c in range(len(categories))]
        values = series[name]
        bars = ax.barh(
            ys,
            [0.0 if v is None else v for v in values],
            height=bar_h * 0.9,
            label=name,
            color=PALETTE[i % len(PALETTE)],
        )
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3g}" for v in values], padding=3, fontsize="small")
    ax.set_yticks(range(len(categories)), list(categories))
    ax.invert_yaxis()  # the first category on top
    if x_range:
        lo, hi = x_range
        ax.set_xlim(lo, hi + 0.06 * (hi - lo))  # room for the value printed past a full bar
    ax.set(title=title, xlabel=xlabel)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def bar_chart(path: Path, categories: Sequence[str], series: dict[str, Sequence[Optional[float]]], **kwargs) -> Path:
    """bar_figure(categories, series, **kwargs) written to `path`."""
    return save(bar_figure(categories, series, **kwargs), path)
