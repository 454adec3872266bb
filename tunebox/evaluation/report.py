"""evaluate's report: report.json and report.md (every model side by side, the checkpoint the contest
rule chose and why each other one lost) and the PNG charts beside them (tunebox/evaluation/plots.py draws).
Every accuracy share carries its Wilson 95% interval and n (tunebox/evaluation/intervals.py), with one
sentence on what the held-out rows can resolve; a few right and wrong predictions per family of the
chosen checkpoint show what the figures count.

Rendering only: the figures come in computed (tunebox/evaluation/scorecard.py, tunebox/contest/rules.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from tunebox.config import DataSection
from tunebox.contest.rules import RETENTION_METRIC, RETENTION_THRESHOLD
from tunebox.evaluation import plots as charts
from tunebox.evaluation.intervals import wilson_interval
from tunebox.evaluation.loop import ALL_FAMILIES, MCQ_ANSWER_PREFIX, HeldoutTask, SquadTask, limit_for
from tunebox.io import atomic_write_json, atomic_write_text, read_jsonl

SHARES = ("accuracy_strict", "accuracy_tolerant", "accuracy_within_1pct", "accuracy_logprob")
"""A summary's accuracy shares (scores.json): each gets a Wilson 95% interval in the report."""

FAMILY_SHARES = ("strict", "tolerant", "within_1pct", "logprob")
"""The same shares inside per_family."""

EXAMPLES_PER_VERDICT = 2
"""Example predictions per family and verdict (right, wrong) in the report."""


def _f(value, fmt: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def share_interval(rate: Optional[float], n: Optional[int]) -> Optional[dict]:
    """{k, n, low, high}: the rows behind a share of n (round undoes k / n exactly) and its Wilson 95%
    interval; None when the share was not measured."""
    if rate is None or not n:
        return None
    k = int(round(rate * n))
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "low": low, "high": high}


def _with_intervals(summary: dict, keys: tuple[str, ...], n: int) -> dict:
    found = {k: share_interval(summary.get(k), n) for k in keys if summary.get(k) is not None}
    return {**summary, "intervals": found}


def with_intervals(entry: Optional[dict]) -> Optional[dict]:
    """A copy of one model's summary in which every accuracy share (overall, per family, per source)
    has its interval under `intervals`; the figures themselves are untouched."""
    if entry is None:
        return None
    out = _with_intervals(entry, SHARES, entry["n"])
    out["per_family"] = {f: _with_intervals(v, FAMILY_SHARES, v["n"]) for f, v in entry["per_family"].items()}
    if entry.get("per_source"):
        out["per_source"] = {}
        for src, ps in entry["per_source"].items():
            ps = _with_intervals(ps, SHARES, ps["n"])
            ps["per_family"] = {
                f: _with_intervals(v, FAMILY_SHARES, v["n"]) for f, v in (ps.get("per_family") or {}).items()
            }
            out["per_source"][src] = ps
    return out


def share_cell(summary: dict, key: str, fmt: str = ".3f") -> str:
    """'0.250 [0.089, 0.532]': a share and its Wilson 95% interval (with_intervals' figures)."""
    iv = (summary.get("intervals") or {}).get(key)
    if summary.get(key) is None:
        return "-"
    if iv is None:
        return format(summary[key], fmt)
    return f"{format(summary[key], fmt)} [{format(iv['low'], fmt)}, {format(iv['high'], fmt)}]"


def _overlaps(a: dict, b: dict) -> bool:
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def noise_sentence(results: list[dict], focus: Optional[str]) -> str:
    """One plain sentence on what the held-out set can resolve: how many points of accuracy one row is,
    and which models' strict-accuracy intervals overlap the `focus` model's (not distinguishable by these
    rows). `results` carry with_intervals' figures."""
    if not results:
        return ""
    n = results[0]["n"]
    head = f"With {n} held-out rows one row is {100 / n:.3g} points of accuracy"
    ref = next((r for r in results if r["model"] == focus), None)
    iv = ((ref or {}).get("intervals") or {}).get("accuracy_strict")
    if iv is None:
        return head + ", so a difference of a few rows between two models is noise."
    others = [
        r["model"]
        for r in results
        if r is not ref
        and (r.get("intervals") or {}).get("accuracy_strict")
        and _overlaps(iv, r["intervals"]["accuracy_strict"])
    ]
    span = f"{focus}'s strict accuracy lies in [{iv['low']:.3f}, {iv['high']:.3f}] (95%)"
    if not others:
        return f"{head}, and {span}; no other model's interval overlaps it."
    return (
        f"{head}, and {span}; the intervals of {', '.join(others)} overlap it, so these rows do not tell "
        f"{'that model' if len(others) == 1 else 'those models'} apart from it."
    )


def _short(text, limit: int) -> str:
    """One line of at most ~limit characters, its middle cut (a math prompt's question is at its end)."""
    one = " ".join(str(text).split())
    if len(one) > limit:
        half = (limit - 3) // 2
        one = one[:half] + " … " + one[-half:]
    return one


def _cell(value) -> str:
    """A value inside a markdown table cell: one line, its pipes escaped, '-' for None."""
    return "-" if value is None else " ".join(str(value).split()).replace("|", "\\|")


def example_predictions(predictions_file: Path, per_verdict: int = EXAMPLES_PER_VERDICT) -> dict[str, list[dict]]:
    """{family: rows}: the first `per_verdict` right and first `per_verdict` wrong predictions (the contest's
    strict verdict) of each family in predictions.jsonl, in file order."""
    by_family: dict[str, list[dict]] = {}
    for row in read_jsonl(predictions_file):
        fam = by_family.setdefault(str(row.get("family")), [])
        if sum(1 for r in fam if r["strict"] == bool(row.get("strict"))) < per_verdict:
            fam.append(
                {
                    "line": row.get("line"),
                    "prompt": _short(row.get("prompt", ""), 90),
                    "reference": row.get("reference"),
                    "answer": row.get("answer"),
                    "extracted": row.get("extracted"),
                    "strict": bool(row.get("strict")),
                }
            )
    return dict(sorted(by_family.items()))


def valid_cell(retention: dict) -> str:
    """The report's verdict: pass / **fail** / ?, and never a bare pass where a base score of 0 decided
    nothing (tuned >= 0.9 x 0 holds whatever the checkpoint does)."""
    passes = retention.get("passes")
    if passes is not True:
        return {False: "**fail**", None: "?"}[passes]
    undecided = retention.get("undecided") or []
    decided = [m.upper() for m in ("f1", "em") if m not in undecided]
    if not undecided:
        return "pass"
    if not decided:
        return "cannot pass or fail (base 0)"
    return f"pass on {' and '.join(decided)}; {' and '.join(m.upper() for m in undecided)} cannot pass or fail (base 0)"


def na(retention: dict) -> str:
    """How a missing retention ratio reads: when SQuAD was measured but the base scored 0, that
    metric cannot pass or fail (tuned >= 0.9 x 0 always holds); '-' when it was not measured."""
    return "cannot pass or fail (base 0)" if retention.get("measured") else "-"


def family_table(
    title: str, results: list[dict], families: list[str], share: str, caps: Optional[dict] = None
) -> list[str]:
    """report.md's table of one share (a per_family key) by family and model, under `## title`; `caps` (the
    max new tokens by family) adds that column."""
    cap_head, cap_rule = (" max new |", "---:|") if caps is not None else ("", "")
    lines = [
        "",
        f"## {title}",
        "",
        f"| family | n |{cap_head} " + " | ".join(r["model"] for r in results) + " |",
        "|---|---:|" + cap_rule + "---:|" * len(results),
    ]
    for f in families:
        n = next(r["per_family"][f]["n"] for r in results if f in r["per_family"])
        cells = [share_cell(r["per_family"][f], share, ".2f") if f in r["per_family"] else "-" for r in results]
        cap = f" {caps[f]} |" if caps is not None else ""
        lines.append(f"| {f} | {n} |{cap} " + " | ".join(cells) + " |")
    return lines


def write_plots(
    out: Path,
    *,
    run_id: str,
    data: DataSection,
    loss_file: Path,
    base: Optional[dict],
    tuned: list[dict],
    choice: dict,
    dial: Optional[dict],
) -> list[str]:
    """The report's charts under out/plots/; returns their paths relative to `out`."""
    made = []
    pdir = out / "plots"
    models = ([base] if base else []) + tuned
    if models:
        steps = [m["step"] for m in models]
        strict_iv = [share_interval(m["accuracy_strict"], m["n"]) for m in models]
        series = [
            charts.Series(
                "accuracy (strict)",
                steps,
                [m["accuracy_strict"] for m in models],
                intervals=[iv and (iv["low"], iv["high"]) for iv in strict_iv],
            ),
            charts.Series("accuracy (tolerant)", steps, [m["accuracy_tolerant"] for m in models], dashed=True),
        ]
        if data.format == "math":
            series.append(charts.Series("within 1% (graded)", steps, [m.get("accuracy_within_1pct") for m in models]))
        if any(m.get("accuracy_logprob") is not None for m in models):
            series.append(
                charts.Series("accuracy (letter log-prob)", steps, [m.get("accuracy_logprob") for m in models])
            )
        panels = [charts.Panel(series, f"share of the {models[0]['n']} held-out rows right")]
        if any(m.get("retention", {}).get("measured") for m in tuned):
            ret = {k: [1.0 if m is base else m["retention"][k] for m in models] for k in ("f1", "em")}
            # a ratio to the base model, not a share of rows: its own axis below the accuracy
            panels.append(
                charts.Panel(
                    [
                        charts.Series("SQuAD F1 retention", steps, ret["f1"]),
                        charts.Series("SQuAD EM retention", steps, ret["em"], dashed=True),
                    ],
                    "SQuAD tuned / base",
                    hlines=[charts.HLine(RETENTION_THRESHOLD, f"retention threshold {RETENTION_THRESHOLD:.2f}")],
                )
            )
        charts.panels_chart(
            pdir / "accuracy_retention.png",
            panels,
            title=f"{run_id}: accuracy and SQuAD retention per checkpoint"
            + (f" (chosen: {choice['model']})" if choice.get("model") else ""),
            xlabel="training step (0 = base model)",
            x_ticks=steps,
        )
        made.append("plots/accuracy_retention.png")
        families = sorted({f for m in models for f in m["per_family"]})
        if families:
            counts = {f: next(m["per_family"][f]["n"] for m in models if f in m["per_family"]) for f in families}
            # (file, share, title, x label): strict accuracy, and for math the graded share within 1% too
            bars = [("per_family.png", "strict", "strict accuracy per family", "strict accuracy")]
            if data.format == "math":
                bars.append(
                    (
                        "per_family_graded.png",
                        "within_1pct",
                        "share within 1% of the reference, per family (graded)",
                        "share within 1%",
                    )
                )
            for name, share, title, xlabel in bars:
                charts.bar_chart(
                    pdir / name,
                    [f"{f} (n={counts[f]})" for f in families],
                    {m["model"]: [m["per_family"].get(f, {}).get(share) for f in families] for m in models},
                    title=title,
                    xlabel=xlabel,
                    x_range=(0.0, 1.0),
                )
                made.append(f"plots/{name}")
    if loss_file.exists():
        rows = read_jsonl(loss_file)
        if rows:
            steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
            window = max(1, len(rows) // 10)
            smooth = [float(np.mean(losses[max(0, i - window + 1) : i + 1])) for i in range(len(losses))]
            ck = {m["step"]: m for m in tuned}
            series = [charts.Series("loss per step", steps, losses, markers=False, color="#BBBBBB")]
            if window > 1:
                series.append(charts.Series(f"mean of last {window} steps", steps, smooth, markers=False))
            series.append(
                charts.Series(
                    "checkpoints", steps, [s if st in ck else None for st, s in zip(steps, smooth)], lines=False
                )
            )
            charts.line_chart(
                pdir / "loss.png",
                series,
                title=f"{run_id}: training loss",
                xlabel="optimizer step",
                ylabel="loss (answer tokens)",
            )
            made.append("plots/loss.png")
    if dial and dial["points"]:
        pts = sorted(dial["points"], key=lambda p: p["scale"])
        xs = [p["scale"] for p in pts]
        series = [
            charts.Series(
                "accuracy (strict)",
                xs,
                [p["accuracy_strict"] for p in pts],
                intervals=[
                    iv and (iv["low"], iv["high"]) for iv in (share_interval(p["accuracy_strict"], p["n"]) for p in pts)
                ],
            ),
            charts.Series("accuracy (tolerant)", xs, [p["accuracy_tolerant"] for p in pts], dashed=True),
        ]
        panels = [charts.Panel(series, f"share of the {pts[0]['n']} held-out rows right")]
        if any(p["retention"]["measured"] for p in pts):
            panels.append(
                charts.Panel(
                    [
                        charts.Series("SQuAD F1 retention", xs, [p["retention"]["f1"] for p in pts]),
                        charts.Series("SQuAD EM retention", xs, [p["retention"]["em"] for p in pts], dashed=True),
                    ],
                    "SQuAD tuned / base",
                    hlines=[charts.HLine(RETENTION_THRESHOLD, f"retention threshold {RETENTION_THRESHOLD:.2f}")],
                )
            )
        charts.panels_chart(
            pdir / "scale_dial.png",
            panels,
            x_ticks=xs,
            title=f"LoRA scale dial on {dial['checkpoint']}: W + s*(alpha/r)*BA",
            xlabel="LoRA scale s",
        )
        made.append("plots/scale_dial.png")
    return made


def write_report(
    out: Path,
    report_file: Path,
    *,
    run_id: str,
    model_name: str,
    data: DataSection,
    base: Optional[dict],
    tuned: list[dict],
    choice: dict,
    contest: dict,
    task: HeldoutTask,
    squad: Optional[SquadTask],
    dial: Optional[dict],
    plots: list[str],
) -> Path:
    """report_file (JSON: every model's scorecard, the choice, the settings) and out/report.md (the same as
    tables a person reads); returns report_file."""
    best_acc = max(tuned, key=lambda r: (r["accuracy_strict"], r["step"])) if tuned else None
    base = with_intervals(base)
    tuned = [with_intervals(r) for r in tuned]
    if dial:
        dial = {**dial, "points": [with_intervals(p) for p in dial["points"]]}
    results = ([base] if base else []) + tuned
    mcq = task.fmt == "mcq"
    # the examples come from the chosen checkpoint; with none chosen, the most accurate, else the base model
    shown = choice["model"] or (best_acc["model"] if best_acc else base["model"] if base else None)
    examples_file = out / shown / "predictions.jsonl" if shown else None
    examples = example_predictions(examples_file) if examples_file and examples_file.is_file() else {}
    noise = noise_sentence(results, shown)
    report = {
        "run_id": run_id,
        "model": model_name,
        "format": data.format,
        "stage": contest["stage"],
        "heldout_rows": len(task.rows),
        "base": base,
        "checkpoints": tuned,
        "intervals": {"method": "Wilson score, 95% (tunebox/evaluation/intervals.py)", "note": noise},
        "examples": {
            "model": shown,
            "predictions": f"{shown}/predictions.jsonl" if examples else None,
            "verdict": "strict",
            "by_family": examples,
        },
        "best_by_accuracy": best_acc["model"] if best_acc else None,
        "best_checkpoint": {k: choice[k] for k in ("model", "step", "rule", "valid", "reason", "highest_score")},
        "verdicts": choice["verdicts"],
        "contest": contest,
        "squad": (
            {
                "source": str(squad.source),
                "sha256": squad.source_sha256,
                "rows": len(squad.rows),
                "max_new_tokens": squad.max_new_tokens,
                "prompt": "scoring.squad_prompt, no chat template",
            }
            if squad
            else None
        ),
        "max_new_tokens": {
            "cap": task.limits_info["cap"],
            "margin": task.limits_info["margin"],
            "by_family": {f: v["max_new_tokens"] for f, v in task.limits_info["families"].items()},
        },
        "mcq_logprob": (
            {k: task.choice_plan[k] for k in ("prefix", "letter_ids", "letter_tokens")} if task.choice_plan else None
        ),
        "scale_dial": dial,
        "plots": plots,
    }
    atomic_write_json(report_file, report)

    ratio_line = (
        f"Ratio {contest['ratio']:.8f} exact "
        f"({contest['trainable_params']:,} / {contest['total_params']:,})"
        + (
            f", {contest['contest_ratio']:.9f} as the contest computed it (/ {contest['contest_total_params']:,})"
            if contest["contest_ratio"] is not None
            else "; the contest has no nominal total for this model"
        )
        + f". Score = {contest['score_formula']} (ratio {contest['ratio_for_score']:.8g})."
    )
    squad_line = (
        f"SQuAD: first {len(squad.rows)} questions of `{squad.source.name}`, contest prompt, greedy, "
        f"<= {squad.max_new_tokens} new tokens; retention = tuned / base, valid when F1 and EM both >= "
        f"{RETENTION_THRESHOLD:.2f}; the checkpoint choice uses the {RETENTION_METRIC}, MindFormers' "
        f"EmF1Metric (the contest's metric) is shown beside it. A base score of 0 cannot pass or fail."
        if squad
        else "SQuAD retention not measured (eval.squad_file unset)."
    )
    lines = [
        f"# Evaluation report: {run_id}",
        "",
        f"Model `{model_name}`, stage {contest['stage']}, {len(task.rows)} held-out rows ("
        + ", ".join(
            f"{sum(1 for r in task.rows if r.get('source', 'split') == src)} "
            + (
                "of the generated rows"
                if src == "split" and data.generate
                else f"of `{data.train_file}`"
                if src == "split"
                else f"of `{data.heldout_file}`"
            )
            for src in sorted({r.get("source", "split") for r in task.rows})
        )
        + "), "
        f"greedy, new tokens per family = longest training answer + {task.limits_info['margin']} "
        f"(cap {task.limits_info['cap']}). "
        + (
            f"Accuracy = the letter in the generated text (the contest's way; strict = tolerant); log-prob = the "
            f"letter whose token is most likely right after '{MCQ_ANSWER_PREFIX}' (one forward pass, reported "
            f"only). "
            if mcq
            else "Strict = the contest rule; tolerant = docs/CONTEST_RULES.md; within 1% and "
            "digits (the mean count of the reference's leading significant digits right) "
            "= the graded measure, scoring.closeness. "
        )
        + squad_line,
        ratio_line,
        "",
        f"Brackets are Wilson 95% intervals over the n rows. {noise}",
        "",
        "| model | step | loss | n | acc strict | acc tolerant |"
        + (" acc log-prob |" if mcq else " within 1% | digits |")
        + " SQuAD F1 | SQuAD EM | retention F1 / EM | score | valid |",
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if mcq else "---:|---:|") + "---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        sq = r.get("squad") or {}
        ret = r.get("retention") or {}
        valid = valid_cell(ret) if r is not base else ""
        mark = " ✅" if r["model"] == choice["model"] else ""
        lines.append(
            f"| {r['model']}{mark} | {r['step']} | {_f(r.get('train_loss'), '.4f')} | {r['n']} | "
            f"{share_cell(r, 'accuracy_strict')} | {share_cell(r, 'accuracy_tolerant')} |"
            + (
                f" {share_cell(r, 'accuracy_logprob')} |"
                if mcq
                else f" {share_cell(r, 'accuracy_within_1pct')} | {_f(r.get('leading_digits_mean'), '.2f')} |"
            )
            + f" {_f(sq.get('f1'), '.2f')} | {_f(sq.get('em'), '.2f')} | "
            + (
                f"{_f(ret.get('f1'), none=na(ret))} / {_f(ret.get('em'), none=na(ret))}"
                if r is not base
                else "1 / 1"
                if sq
                else "-"
            )
            + f" | {_f(r.get('score'), '.4f')} | {valid} |"
        )
    if any((r.get("squad") or {}).get("emf1") for r in results):
        lines += [
            "",
            "SQuAD by MindFormers' EmF1Metric (the contest's metric; the same answers, each question's "
            "first gold answer; reported, not what the choice uses):",
            "",
            "| model | EmF1Metric F1 | EmF1Metric EM | EmF1Metric retention F1 / EM | verdict by EmF1Metric |",
            "|---|---:|---:|---:|:---:|",
        ]
        for r in results:
            e, rr = (r.get("squad") or {}).get("emf1") or {}, r.get("retention_emf1") or {}
            lines.append(
                f"| {r['model']} | {_f(e.get('f1'), '.2f')} | {_f(e.get('em'), '.2f')} | "
                + (
                    f"{_f(rr.get('f1'), none=na(rr))} / {_f(rr.get('em'), none=na(rr))} | {valid_cell(rr)} |"
                    if r is not base
                    else "1 / 1 | |"
                )
            )
    lines += ["", f"**Chosen: {choice['model'] or 'none'}**: {choice['reason']}."]
    zero = [m.upper() for m in ("f1", "em") if base and (base.get("squad") or {}).get(m) == 0]
    if zero:
        lines.append(
            f"The base model scores 0 on SQuAD {' and '.join(zero)}: the retention rule cannot pass or fail "
            f"on it (any checkpoint keeps 90% of 0), so it decided nothing there."
        )
    for name, why in choice["verdicts"].items():
        lines.append(f"- {name}: {why}")
    if dial:
        lines += [
            "",
            f"## LoRA scale dial on {dial['checkpoint']} (W + s·(alpha/r)·BA)",
            "",
            "| s | acc strict | acc tolerant | SQuAD F1 | SQuAD EM | retention F1 / EM | score | valid |",
            "|---:|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for p in sorted(dial["points"], key=lambda p: p["scale"]):
            sq, ret = p.get("squad") or {}, p["retention"]
            lines.append(
                f"| {p['scale']:g} | {share_cell(p, 'accuracy_strict')} | "
                f"{share_cell(p, 'accuracy_tolerant')} | "
                f"{_f(sq.get('f1'), '.2f')} | {_f(sq.get('em'), '.2f')} | "
                f"{_f(ret['f1'], none=na(ret))} / {_f(ret['em'], none=na(ret))} | "
                f"{p['score']:.4f} | {({True: 'pass', False: 'fail', None: '?'})[ret['passes']]} |"
            )
    sources = sorted({src for r in results for src in (r.get("per_source") or {})})

    def source_rows(src: str) -> int:
        return next(r["per_source"][src]["n"] for r in results if src in (r.get("per_source") or {}))

    if sources:
        lines += [
            "",
            "## Per held-out source (strict / within 1% / mean leading digits right)",
            "",
            "split: rows held out of data.train_file; file: data.heldout_file rows. Not tuned on either.",
            "",
            "| model | " + " | ".join(f"{src} (n={source_rows(src)})" for src in sources) + " |",
            "|---|" + "---:|" * len(sources),
        ]
        for r in results:
            cells = []
            for src in sources:
                ps = (r.get("per_source") or {}).get(src)
                cells.append(
                    f"{share_cell(ps, 'accuracy_strict')} / {share_cell(ps, 'accuracy_within_1pct')} / "
                    f"{_f(ps['leading_digits_mean'], '.2f')}"
                    if ps
                    else "-"
                )
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    families = sorted({f for r in results for f in r["per_family"]})
    if not mcq:
        lines += family_table("Per family (graded: share within 1% of the reference)", results, families, "within_1pct")
    caps = {f: limit_for(task.limits_info, f if task.fmt == "math" else ALL_FAMILIES) for f in families}
    lines += family_table("Per family (strict accuracy)", results, families, "strict", caps)
    if examples:
        lines += [
            "",
            f"## Example predictions of {shown} (from `{shown}/predictions.jsonl`)",
            "",
            f"Per family the first {EXAMPLES_PER_VERDICT} right and first {EXAMPLES_PER_VERDICT} wrong rows by "
            "the contest's strict rule; the prompt is shortened in the middle.",
            "",
            "| family | line | prompt | reference | answer | extracted | strict |",
            "|---|---:|---|---|---|---|:---:|",
        ]
        for f, rows in examples.items():
            for e in rows:
                lines.append(
                    f"| {_cell(f)} | {e['line']} | {_cell(e['prompt'])} | {_cell(e['reference'])} | "
                    f"{_cell(_short(e['answer'], 60))} | {_cell(e['extracted'])} | "
                    f"{'right' if e['strict'] else '**wrong**'} |"
                )
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{Path(p).stem}]({p})" for p in plots)]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return report_file
