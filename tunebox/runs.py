"""What a finished run says about itself, read back from its folder: the spec it ran (its manifests),
the contest figures of the checkpoint evaluate chose (evaluate/report.json), the training cost
(train/summary.json, train/loss.jsonl) and when it finished (record.jsonl). `invoke runs` lists the
runs under runs/ with these; `invoke runs --compare A B` puts two side by side; tunebox/sweep.py builds
its results table from the same reading, so a figure is read one way everywhere.

    python -m tunebox.runs [--runs-dir runs] [--compare A B]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tunebox import layout
from tunebox.config import RECIPES_DIR, RunSpec, load_spec
from tunebox.evaluation.intervals import wilson_interval
from tunebox.io import InputError

# Keys that say where a run writes, not what it computes: left out of every spec difference.
WHERE_KEYS = ("run_id", "runs_dir")


@dataclass
class RunResult:
    """One run's figures: the chosen checkpoint's (or, when none is valid, the highest-scoring one's)."""

    run_id: str
    run_dir: Path
    spec: Optional[dict]  # the spec the last job ran, from its manifest
    finished: Optional[str]  # the last record line's time
    evaluated: bool  # evaluate/report.json exists
    model: Optional[str] = None  # the checkpoint the figures are of (step-000250)
    chosen: bool = False  # evaluate chose it (False: no checkpoint kept retention)
    chosen_step: Optional[int] = None
    n: Optional[int] = None  # held-out rows
    strict_k: Optional[int] = None  # rows right by the contest rule
    within_k: Optional[int] = None  # rows within 1% (math)
    squad_f1: Optional[float] = None
    retention: Optional[bool] = None  # True pass, False fail, None not measured
    score: Optional[float] = None  # the stage score of the chosen checkpoint; None when none is valid
    ratio: Optional[float] = None  # trainable / total parameters (exact)
    train_minutes: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    per_source: Optional[dict] = None  # {source: {n, strict_k, within_k}} when two held-out sets

    @property
    def strict(self) -> Optional[float]:
        return None if self.n is None else self.strict_k / self.n

    @property
    def within(self) -> Optional[float]:
        return None if self.n is None or self.within_k is None else self.within_k / self.n


def _count(rate: Optional[float], n: int) -> Optional[int]:
    """Rows behind a rate the report gives as k / n (exact: round undoes the division)."""
    return None if rate is None else int(round(rate * n))


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_spec_dict(run_dir: Path) -> Optional[dict]:
    """The spec the run's latest job ran, from its manifest (every job records the whole spec)."""
    for job in reversed(layout.PIPELINE):
        manifest = read_json(run_dir / job / layout.MANIFEST)
        if manifest and manifest.get("spec"):
            return manifest["spec"]
    return None


def last_finished(run_dir: Path) -> Optional[str]:
    try:
        lines = [l for l in (run_dir / layout.RECORD).read_text(encoding="utf-8").splitlines() if l.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line).get("finished")
        except ValueError:
            continue
    return None


def training_cost(run_dir: Path) -> tuple[Optional[float], Optional[float]]:
    """(training minutes, peak RSS MB): the minutes are the sum of every optimizer step's time in
    train/loss.jsonl (each step once, also across a resumed training; the first includes the graph
    compile; start-up before it is not counted); the peak RSS is train/summary.json's (the train
    process and its workers, in the session that finished the training)."""
    minutes = None
    try:
        rows = [
            json.loads(l) for l in (run_dir / layout.TRAIN_LOSS).read_text(encoding="utf-8").splitlines() if l.strip()
        ]
        minutes = sum(float(r["seconds"]) for r in rows) / 60 if rows else None
    except (OSError, ValueError, KeyError):
        pass
    summary = read_json(run_dir / layout.TRAIN_SUMMARY) or {}
    return minutes, summary.get("peak_rss_mb")


def read_run(run_dir: Path) -> RunResult:
    """A run folder's figures; those it has not produced yet are None."""
    run_dir = Path(run_dir)
    result = RunResult(run_dir.name, run_dir, run_spec_dict(run_dir), last_finished(run_dir), False)
    result.train_minutes, result.peak_rss_mb = training_cost(run_dir)
    report = read_json(run_dir / layout.EVALUATE_REPORT)
    if not report:
        return result
    result.evaluated = True
    result.ratio = (report.get("contest") or {}).get("ratio")
    best = report.get("best_checkpoint") or {}
    name = best.get("model") or best.get("highest_score")
    entry = next((c for c in report.get("checkpoints") or [] if c["model"] == name), None)
    if entry is None:
        return result
    result.model, result.chosen = name, best.get("model") is not None
    result.chosen_step = best.get("step")
    result.n = entry["n"]
    result.strict_k = _count(entry["accuracy_strict"], entry["n"])
    result.within_k = _count(entry.get("accuracy_within_1pct"), entry["n"])
    result.squad_f1 = (entry.get("squad") or {}).get("f1")
    result.retention = False if not result.chosen else (entry.get("retention") or {}).get("passes")
    result.score = entry.get("score") if result.chosen else None
    if entry.get("per_source"):
        result.per_source = {
            src: {
                "n": ps["n"],
                "strict_k": _count(ps["accuracy_strict"], ps["n"]),
                "within_k": _count(ps.get("accuracy_within_1pct"), ps["n"]),
            }
            for src, ps in entry["per_source"].items()
        }
    return result


# ---- spec differences ------------------------------------------------------------------------


def flatten(d: dict, cls=RunSpec, prefix: str = "") -> dict[str, Any]:
    """{"lora": {"rank": 8}} -> {"lora.rank": 8}: the spec's sections opened, values (a dict-valued
    data.balance too) kept whole."""
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in d.items():
        tp = hints.get(k)
        if tp is not None and dataclasses.is_dataclass(tp) and isinstance(v, dict):
            out.update(flatten(v, tp, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def spec_difference(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (a's value, b's value) where two specs differ; where a run writes is left out."""
    fa, fb = flatten(a), flatten(b)
    return {
        k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if k not in WHERE_KEYS and fa.get(k) != fb.get(k)
    }


def nearest_recipe(spec: dict, recipes_dir: Path = RECIPES_DIR) -> tuple[Optional[str], dict]:
    """The recipe in recipes/ the run's spec differs from least (a manifest records the spec, not the
    file it came from), and the difference."""
    best: tuple[Optional[str], Optional[dict]] = (None, None)
    for path in sorted(recipes_dir.glob("*.yaml")):
        try:
            recipe = load_spec(path).to_dict()
        except InputError:
            continue
        diff = spec_difference(recipe, spec)
        if best[1] is None or len(diff) < len(best[1]):
            best = (path.name, diff)
    return best[0], best[1] or {}


def list_runs(runs_dir: Path) -> list[RunResult]:
    """Every run folder under runs_dir (one with a record.jsonl), oldest first; sweeps/ is not a run."""
    found = (
        [read_run(d) for d in sorted(Path(runs_dir).iterdir()) if (d / layout.RECORD).is_file()]
        if Path(runs_dir).is_dir()
        else []
    )
    return sorted(found, key=lambda r: (r.finished or "", r.run_id))


# ---- printing --------------------------------------------------------------------------------


def fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def short_value(v) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def runs_table(runs: list[RunResult], recipes_dir: Path = RECIPES_DIR) -> str:
    lines = [
        "| run | recipe (nearest) | differs from the recipe | chosen step | score | finished |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in runs:
        recipe, diff = nearest_recipe(r.spec, recipes_dir) if r.spec else (None, {})
        differs = ", ".join(f"{k}={short_value(b)}" for k, (_, b) in diff.items()) or "-"
        step = r.chosen_step if r.chosen else ("none valid" if r.evaluated else "-")
        lines.append(
            f"| {r.run_id} | {recipe or '-'} | {differs} | {step} | {fmt(r.score, '.4f')} | {r.finished or '-'} |"
        )
    return "\n".join(lines)


def proportion_cell(k: Optional[int], n: Optional[int]) -> str:
    """'0.250 (3/12; 95% CI 0.089-0.532)': the rate, its counts and Wilson interval."""
    if k is None or not n:
        return "-"
    low, high = wilson_interval(k, n)
    return f"{k / n:.3f} ({k}/{n}; 95% CI {low:.3f}-{high:.3f})"


def compare(a: RunResult, b: RunResult) -> str:
    """Two runs' spec difference and their figures side by side (markdown)."""
    lines = [f"## Spec: {a.run_id} vs {b.run_id}", "", f"| key | {a.run_id} | {b.run_id} |", "|---|---|---|"]
    diff = spec_difference(a.spec or {}, b.spec or {})
    lines += [f"| {k} | {short_value(x)} | {short_value(y)} |" for k, (x, y) in diff.items()] or ["| (none) | | |"]
    rows = [
        ("checkpoint", lambda r: r.model or "-"),
        ("chosen (keeps retention)", lambda r: {True: "yes", False: "no"}[r.chosen] if r.evaluated else "-"),
        ("strict accuracy", lambda r: proportion_cell(r.strict_k, r.n)),
        ("within 1%", lambda r: proportion_cell(r.within_k, r.n)),
        ("SQuAD F1", lambda r: fmt(r.squad_f1, ".2f")),
        ("retention", lambda r: {True: "pass", False: "fail", None: "not measured"}[r.retention]),
        ("stage score", lambda r: fmt(r.score, ".4f")),
        ("trainable ratio", lambda r: fmt(r.ratio, ".6f")),
        ("training minutes", lambda r: fmt(r.train_minutes, ".1f")),
        ("peak RSS (MB)", lambda r: fmt(r.peak_rss_mb, ".0f")),
        ("finished", lambda r: r.finished or "-"),
    ]
    lines += ["", f"## Results: {a.run_id} vs {b.run_id}", "", f"| | {a.run_id} | {b.run_id} |", "|---|---|---|"]
    lines += [f"| {label} | {get(a)} | {get(b)} |" for label, get in rows]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunebox.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default="runs", help="the folder holding the run folders (default runs)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two run ids (or run folders) side by side")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    if args.compare:
        found = []
        for name in args.compare:
            d = Path(name) if Path(name).is_dir() and (Path(name) / layout.RECORD).exists() else runs_dir / name
            if not (d / layout.RECORD).is_file():
                print(f"error: {d}: no such run (no record.jsonl); `invoke runs` lists them", file=sys.stderr)
                return 2
            found.append(read_run(d))
        print(compare(*found))
        return 0
    runs = list_runs(runs_dir)
    if not runs:
        print(f"no runs under {runs_dir}", file=sys.stderr)
        return 0
    print(runs_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
