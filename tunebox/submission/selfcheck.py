"""selfcheck.png: the contest's "自验结果，包含运行日志、准确率、低参比例等的截图" (the self-check
picture: logs, accuracy, parameter ratio) drawn from the run's own files, so it cannot disagree
with them: the run id and commit, the result table of results.json, the ratio computation, the
retention verdict and the last lines of the training log.

Drawn with Pillow, the library tunebox/evaluation/plots.py already uses (matplotlib is in neither the
project's dependencies nor the images' locks). The PNG also carries, as text chunks, the run id,
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


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSansMono.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def result_table(results: dict) -> list[list[str]]:
    header = ["model", "step", "train loss", "acc strict", "acc tolerant", "SQuAD F1", "SQuAD EM",
              "retention F1/EM", "retention", "score"]
    rows = [header]
    base = results.get("base")
    if base:
        rows.append(["base", "-", "-", _pct(base.get("accuracy_strict")), _pct(base.get("accuracy_tolerant")),
                     _num(base.get("squad_f1"), ".2f"), _num(base.get("squad_em"), ".2f"), "1 / 1", "", "-"])
    chosen = (results.get("chosen") or {}).get("model")
    for r in results.get("checkpoints", []):
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[r.get("passes_retention")]
        rows.append([r["model"] + (" *" if r["model"] == chosen else ""), str(r["step"]),
                     _num(r.get("train_loss"), ".4f"), _pct(r.get("accuracy_strict")),
                     _pct(r.get("accuracy_tolerant")), _num(r.get("squad_f1"), ".2f"), _num(r.get("squad_em"), ".2f"),
                     f"{_num(r.get('retention_f1'), '.3f')} / {_num(r.get('retention_em'), '.3f')}", verdict,
                     _num(r.get("score"), ".4f")])
    return rows


def ratio_lines(results: dict, rank: int) -> list[str]:
    lines = [f"trainable = LoRA r={rank} on {', '.join(results.get('lora_targets') or [])}"
             f" = {results['trainable_params']:,} parameters",
             f"exact ratio = {results['trainable_params']:,} / {results['total_params']:,} = {results['ratio']:.9f}"]
    if results.get("contest_ratio") is not None:
        lines.append(f"contest ratio = {results['trainable_params']:,} / {results['contest_total_params']:,} "
                     f"(nominal total) = {results['contest_ratio']:.9f}")
    lines.append(f"score uses {results['ratio_for_score']:.9f} ({results.get('ratio_basis', '')}); "
                 f"{results.get('score_formula', '')}")
    return lines


def retention_line(results: dict) -> tuple[str, bool]:
    """(what to say about retention, whether it is a warning)."""
    verdicts = [r.get("passes_retention") for r in results.get("checkpoints", [])]
    if not verdicts or all(v is None for v in verdicts):
        return ("SQuAD retention NOT measured (eval.squad_file unset): validity under the contest rule is unknown", True)
    passing = sum(v is True for v in verdicts)
    return (f"SQuAD retention measured: {passing} of {len(verdicts)} checkpoints pass (F1 and EM >= "
            f"{rules.RETENTION_THRESHOLD:.0%} of base)" + ("; NONE is valid under the contest rule" if not passing else ""),
            not passing)


def render(path: Path, *, results: dict, results_bytes: bytes, rank: int, commit: Optional[str], code_note: str,
           log_name: str, log_tail: Sequence[str]) -> Path:
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    title, body, small = _font(26), _font(17), _font(14)
    table = result_table(results)
    probe = ImageDraw.Draw(Image.new("RGB", (10, 10)))

    def size(text, fnt):
        box = probe.textbbox((0, 0), text, font=fnt)
        return box[2] - box[0], box[3] - box[1]

    line_h = size("Ag", body)[1] + 8
    small_h = size("Ag", small)[1] + 6
    widths = [max(size(row[i], body)[0] for row in table) + 24 for i in range(len(table[0]))]
    width = max(WIDTH, sum(widths) + 2 * MARGIN)

    def wrap(text: str, fnt, indent: int = 0) -> list[str]:
        per_char = max(1.0, size("M" * 20, fnt)[0] / 20)
        chars = max(40, int((width - 2 * MARGIN - indent) / per_char * 0.96))
        return textwrap.wrap(text, chars) or [""]

    chosen = results.get("chosen") or {}
    ret_text, ret_warn = retention_line(results)
    head = wrap(f"commit {commit or 'not recorded'} | model {results.get('model')} | stage {results.get('stage')} | "
                f"format {results.get('format')}", body)
    code_lines = wrap(f"code.tar.gz: {code_note}", small)
    chosen_lines = wrap(f"chosen: {chosen.get('model') or 'none'} ({chosen.get('reason', '')})", body)
    ratio = [w for line in ratio_lines(results, rank) for w in wrap(line, body, 20)]
    tail = [line.rstrip()[:200].encode("ascii", "replace").decode() for line in log_tail][-TAIL_LINES:]
    tail = [w for line in tail for w in wrap(line, small)] or ["(empty)"]
    height = (MARGIN * 2 + 44 + line_h * len(head) + small_h * len(code_lines) + 16 + line_h * len(table) + 20
              + line_h * (len(chosen_lines) + 2 + len(ratio)) + 20 + line_h + small_h * len(tail) + 10)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = MARGIN
    draw.text((MARGIN, y), f"tunebox self-check: {results['run_id']}", font=title, fill="black")
    y += 44
    for line in head:
        draw.text((MARGIN, y), line, font=body, fill="black")
        y += line_h
    for line in code_lines:
        draw.text((MARGIN, y), line, font=small, fill="#444444")
        y += small_h
    y += 16
    for i, row in enumerate(table):
        x = MARGIN
        if i == 0:
            draw.rectangle([MARGIN - 4, y - 4, MARGIN + sum(widths), y + line_h - 6], fill="#e8eef7")
        for cell, w in zip(row, widths):
            colour = "#b00020" if cell in ("FAIL", "not measured") else "black"
            draw.text((x, y), cell, font=body, fill=colour)
            x += w
        y += line_h
    y += 20
    for line in chosen_lines:
        draw.text((MARGIN, y), line, font=body, fill="black")
        y += line_h
    draw.text((MARGIN, y), ret_text, font=body, fill="#b00020" if ret_warn else "#1b5e20")
    y += line_h
    draw.text((MARGIN, y), "parameter ratio:", font=body, fill="black")
    y += line_h
    for line in ratio:
        draw.text((MARGIN + 20, y), line, font=body, fill="black")
        y += line_h
    y += 20
    draw.text((MARGIN, y), f"training log: {log_name} (last {len(log_tail[-TAIL_LINES:])} lines)", font=body,
              fill="black")
    y += line_h
    draw.rectangle([MARGIN - 4, y - 4, width - MARGIN, y + small_h * len(tail)], fill="#f4f4f4")
    for line in tail:
        draw.text((MARGIN, y), line, font=small, fill="#222222")
        y += small_h
    info = PngInfo()
    for key, value in zip(KEYS, (results["run_id"], commit or "", hashlib.sha256(results_bytes).hexdigest())):
        info.add_text(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, optimize=True)
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
