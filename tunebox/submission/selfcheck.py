"""selfcheck.png: the contest's "自验结果，包含运行日志、准确率、低参比例等的截图" (the self-check
picture: logs, accuracy, parameter ratio) drawn from the run's own files, so it cannot disagree
with them: the run id and commit, the result table of results.json, the ratio computation, the
retention verdict and the last lines of the training log.

Drawn with matplotlib (Agg, headless), in its monospace font (DejaVu Sans Mono, shipped with
matplotlib), the result table as a matplotlib table. The PNG also carries, as text chunks, the run id,
the commit and the sha256 of the results.json it shows; `verify` checks them against the folder.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from pathlib import Path
from typing import Optional, Sequence

from tunebox.contest import rules
from tunebox.io import atomic_write_bytes

FILE = "selfcheck.png"
KEYS = ("tunebox.run_id", "tunebox.commit", "tunebox.results_sha256")
WIDTH = 1400
MARGIN = 24
TAIL_LINES = 25
DPI = 100
TITLE_PT, BODY_PT, SMALL_PT = 18, 12, 10
RED, GREEN = "#b00020", "#1b5e20"
MONO_ADVANCE = 0.602  # DejaVu Sans Mono's advance width per em: how many characters fit a line


def _line_px(pt: float) -> float:
    return pt * DPI / 72 * 1.45


def _char_px(pt: float) -> float:
    return MONO_ADVANCE * pt * DPI / 72


def _pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def result_table(results: dict) -> list[list[str]]:
    header = [
        "model",
        "step",
        "train loss",
        "acc strict",
        "acc tolerant",
        "SQuAD F1",
        "SQuAD EM",
        "retention F1/EM",
        "retention",
        "score",
    ]
    rows = [header]
    base = results.get("base")
    if base:
        rows.append(
            [
                "base",
                "-",
                "-",
                _pct(base.get("accuracy_strict")),
                _pct(base.get("accuracy_tolerant")),
                _num(base.get("squad_f1"), ".2f"),
                _num(base.get("squad_em"), ".2f"),
                "1 / 1",
                "",
                "-",
            ]
        )
    chosen = (results.get("chosen") or {}).get("model")
    for r in results.get("checkpoints", []):
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[r.get("passes_retention")]
        rows.append(
            [
                r["model"] + (" *" if r["model"] == chosen else ""),
                str(r["step"]),
                _num(r.get("train_loss"), ".4f"),
                _pct(r.get("accuracy_strict")),
                _pct(r.get("accuracy_tolerant")),
                _num(r.get("squad_f1"), ".2f"),
                _num(r.get("squad_em"), ".2f"),
                f"{_num(r.get('retention_f1'), '.3f')} / {_num(r.get('retention_em'), '.3f')}",
                verdict,
                _num(r.get("score"), ".4f"),
            ]
        )
    return rows


def ratio_lines(results: dict, rank: int) -> list[str]:
    lines = [
        f"trainable = LoRA r={rank} on {', '.join(results.get('lora_targets') or [])}"
        f" = {results['trainable_params']:,} parameters",
        f"exact ratio = {results['trainable_params']:,} / {results['total_params']:,} = {results['ratio']:.9f}",
    ]
    if results.get("contest_ratio") is not None:
        lines.append(
            f"contest ratio = {results['trainable_params']:,} / {results['contest_total_params']:,} "
            f"(nominal total) = {results['contest_ratio']:.9f}"
        )
    lines.append(
        f"score uses {results['ratio_for_score']:.9f} ({results.get('ratio_basis', '')}); "
        f"{results.get('score_formula', '')}"
    )
    return lines


def retention_line(results: dict) -> tuple[str, bool]:
    """(what to say about retention, whether it is a warning)."""
    verdicts = [r.get("passes_retention") for r in results.get("checkpoints", [])]
    if not verdicts or all(v is None for v in verdicts):
        return (
            "SQuAD retention NOT measured (eval.squad_file unset): validity under the contest rule is unknown",
            True,
        )
    passing = sum(v is True for v in verdicts)
    return (
        f"SQuAD retention measured: {passing} of {len(verdicts)} checkpoints pass (F1 and EM >= "
        f"{rules.RETENTION_THRESHOLD:.0%} of base)" + ("; NONE is valid under the contest rule" if not passing else ""),
        not passing,
    )


def figure(*, results: dict, rank: int, commit: Optional[str], code_note: str, log_name: str, log_tail: Sequence[str]):
    """The self-check as a matplotlib Figure: text lines top to bottom, the result table, the log tail."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    table = result_table(results)
    col_chars = [max(len(row[i]) for row in table) + 2 for i in range(len(table[0]))]
    width = max(WIDTH, int(sum(col_chars) * _char_px(BODY_PT) * 1.1) + 2 * MARGIN)

    def wrap(text: str, pt: float, indent: int = 0) -> list[str]:
        return textwrap.wrap(text, max(40, int((width - 2 * MARGIN - indent) / _char_px(pt)))) or [""]

    chosen = results.get("chosen") or {}
    ret_text, ret_warn = retention_line(results)
    tail = [line.rstrip()[:200].encode("ascii", "replace").decode() for line in log_tail][-TAIL_LINES:]
    # (kind, text or rows, point size, colour, indent); "gap" adds space, "table" the result table
    items = [("text", f"tunebox self-check: {results['run_id']}", TITLE_PT, "black", 0), ("gap", 12)]
    items += [
        ("text", line, BODY_PT, "black", 0)
        for line in wrap(
            f"commit {commit or 'not recorded'} | model {results.get('model')} | stage {results.get('stage')} | "
            f"format {results.get('format')}",
            BODY_PT,
        )
    ]
    items += [("text", line, SMALL_PT, "#444444", 0) for line in wrap(f"code.tar.gz: {code_note}", SMALL_PT)]
    items += [("gap", 16), ("table", table), ("gap", 20)]
    items += [
        ("text", line, BODY_PT, "black", 0)
        for line in wrap(f"chosen: {chosen.get('model') or 'none'} ({chosen.get('reason', '')})", BODY_PT)
    ]
    items += [("text", line, BODY_PT, RED if ret_warn else GREEN, 0) for line in wrap(ret_text, BODY_PT)]
    items += [("text", "parameter ratio:", BODY_PT, "black", 0)]
    items += [("text", w, BODY_PT, "black", 20) for line in ratio_lines(results, rank) for w in wrap(line, BODY_PT, 20)]
    items += [
        ("gap", 20),
        ("text", f"training log: {log_name} (last {len(tail)} lines)", BODY_PT, "black", 0),
        ("log", [w for line in tail for w in wrap(line, SMALL_PT)] or ["(empty)"]),
    ]

    row_px = _line_px(BODY_PT) * 1.25

    def height_of(item) -> float:
        kind = item[0]
        return {
            "gap": lambda: item[1],
            "text": lambda: _line_px(item[2]),
            "table": lambda: row_px * len(item[1]),
            "log": lambda: _line_px(SMALL_PT) * len(item[1]) + 8,
        }[kind]()

    height = int(2 * MARGIN + sum(height_of(i) for i in items))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y in pixels from the top, as the page is read
    ax.axis("off")
    y = MARGIN
    for item in items:
        h = height_of(item)
        if item[0] == "text":
            _, text, pt, colour, indent = item
            ax.text(
                MARGIN + indent, y, text, fontsize=pt, family="monospace", color=colour, va="top", parse_math=False
            )  # a log line or a path with two '$' is text, not TeX
        elif item[0] == "table":
            rows = item[1]
            tbl = ax.table(
                cellText=rows[1:],
                colLabels=rows[0],
                cellLoc="left",
                colLoc="left",
                bbox=((MARGIN - 4) / width, 1 - (y + h) / height, (width - 2 * MARGIN + 8) / width, h / height),
            )
            tbl.auto_set_font_size(False)
            tbl.set_fontsize(BODY_PT)
            for (r, c), cell in tbl.get_celld().items():
                cell.set_edgecolor("#cccccc")
                cell.set_width(col_chars[c])  # relative: the bbox scales the columns to the page
                cell.get_text().set_family("monospace")
                cell.get_text().set_parse_math(False)
                if r == 0:
                    cell.set_facecolor("#e8eef7")
                elif cell.get_text().get_text() in ("FAIL", "not measured"):
                    cell.get_text().set_color(RED)
        elif item[0] == "log":
            ax.add_patch(Rectangle((MARGIN - 4, y - 4), width - 2 * MARGIN + 8, h, color="#f4f4f4"))
            for i, line in enumerate(item[1]):
                ax.text(
                    MARGIN,
                    y + i * _line_px(SMALL_PT),
                    line,
                    fontsize=SMALL_PT,
                    family="monospace",
                    color="#222222",
                    va="top",
                    parse_math=False,
                )
        y += h
    return fig


def render(
    path: Path,
    *,
    results: dict,
    results_bytes: bytes,
    rank: int,
    commit: Optional[str],
    code_note: str,
    log_name: str,
    log_tail: Sequence[str],
) -> Path:
    """figure(...) as a PNG at `path` (atomic), with the run id, the commit and results.json's sha256 as
    PNG text chunks (KEYS)."""
    fig = figure(results=results, rank=rank, commit=commit, code_note=code_note, log_name=log_name, log_tail=log_tail)
    metadata = dict(zip(KEYS, (results["run_id"], commit or "", hashlib.sha256(results_bytes).hexdigest())))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=metadata)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def read_keys(path: Path) -> dict[str, str]:
    """The text chunks render() wrote (empty when the file is no PNG or has none)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return {k: v for k, v in getattr(im, "text", {}).items() if k in KEYS}
    except (OSError, UnidentifiedImageError):
        return {}
