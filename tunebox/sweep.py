"""Sweeps: a grid of run-spec settings times seeds, each point an isolated run, and one results table.

    python -m tunebox.sweep --config R --grid 'lora.rank=8,16 train.lr=5e-4,1e-3' [--seeds 0,1] [--name N]
        [--set k=v ...] [--collect] [--render OVERLAY [--image I] [--namespace NS] [-o FILE]]

Each point (one value of every grid key, and one seed) is a run of its own: the recipe with `--set`, the
point's values, `train.seed` and its own `run_id` (`<name>-<key><value>...-s<seed>`), so it has its own
folder runs/<run_id>/, manifests and record.jsonl, and runs the same job graph as `invoke pipeline`
(tunebox/layout.py PIPELINE, one `python -m jobs.<job>` after the other). Locally the points run one after
another; a point whose jobs have all finished (manifest.finished_job, the rule every job uses) is skipped,
so after a crash or kill -9 the same command continues where it stopped. Every point's spec is loaded
before anything runs: a grid key that is not a spec key fails at once, with the message --set gives.

`--seeds` sets train.seed: the LoRA initialisation, dropout and the order rows are shuffled in. data.seed is
left alone, so every seed trains on the same rows and is judged on the same held-out rows, and the spread
between seeds is the training's own noise.

The table (runs/sweeps/<name>/results.md, results.csv, runs.csv, results.png) has one row per grid point,
its seeds aggregated, built from each run's evaluate/report.json (tunebox/runs.py reads it). `--collect`
builds it from the run folders alone, e.g. after a cluster sweep (`--render`, tunebox/deploy/k8s.py
render_sweep) once the run folders are copied off the claim.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import logging
import shlex
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from tunebox import layout
from tunebox.cli import add_spec_overrides, guarded, job_command, job_process_env, setup_logging
from tunebox.config import REPO_ROOT, RunSpec, load_spec
from tunebox.deploy.k8s import render_sweep
from tunebox.evaluation.intervals import wilson_interval
from tunebox.evaluation.plots import PALETTE, save
from tunebox.io import InputError, atomic_write_json, atomic_write_text
from tunebox.manifest import finished_job
from tunebox.runs import RunResult, fmt, read_run

log = logging.getLogger("tunebox.sweep")

SEED_KEY = "train.seed"
"""The spec key --seeds sets (see the module docstring for why not data.seed)."""
RESERVED_KEYS = ("run_id", "runs_dir")
"""Keys a grid may not vary: the sweep names each point's run, and all its runs share one runs folder."""
SWEEPS_DIR = "sweeps"  # runs/sweeps/<name>/: the plan and the table


# ---- the plan --------------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """'8,16' -> ['8', '16']; commas inside [...] or {...} stay ('[wq,wv],[wq,wk,wv]' -> two lists)."""
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current)
    return values


def parse_grid(text: str) -> list[tuple[str, list[str]]]:
    """'lora.rank=8,16 train.lr=5e-4,1e-3' -> [('lora.rank', ['8', '16']), ('train.lr', ['5e-4', '1e-3'])].
    Values are YAML, as with --set."""
    grid: list[tuple[str, list[str]]] = []
    for token in shlex.split(text or ""):
        key, sep, raw = token.partition("=")
        values = [v.strip() for v in split_values(raw)] if sep else []
        if not key or not sep or not values or any(v == "" for v in values):
            raise InputError(
                f"grid entry {token!r} must look like section.key=value1,value2 "
                f"(e.g. --grid 'lora.rank=8,16 train.lr=5e-4,1e-3')"
            )
        if key in RESERVED_KEYS:
            raise InputError(f"grid key {key!r}: the sweep sets it for every point; vary what the run computes")
        if key in (k for k, _ in grid):
            raise InputError(f"grid key {key!r} is given twice; list its values once: {key}=a,b,c")
        if len(set(values)) != len(values):
            raise InputError(f"grid key {key!r} repeats a value: {raw}")
        grid.append((key, values))
    return grid


def parse_seeds(text) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; '' -> [] (the recipe's own train.seed, one run per point)."""
    if text in (None, ""):
        return []
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r}: give integers separated by commas, e.g. --seeds 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r} repeats a seed")
    return seeds


def _clean(text: str) -> str:
    """A value as run_id characters (letters, digits, '-', '_', '.')."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return out.strip("_") or "x"


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each key's last part (lora.rank -> rank), or the whole key where two last parts collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k.replace(".", "_")) for k, s in zip(keys, last)}


@dataclass(frozen=True)
class Point:
    values: tuple[tuple[str, str], ...]  # (key, value) in grid order, values as given
    seed: Optional[int]
    run_id: str

    def overrides(self) -> list[str]:
        """This point's --set values (after the sweep's own --set)."""
        return (
            [f"{k}={v}" for k, v in self.values]
            + ([f"{SEED_KEY}={self.seed}"] if self.seed is not None else [])
            + [f"run_id={self.run_id}"]
        )

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values) or "the recipe"


@dataclass
class Sweep:
    config: str
    name: str
    grid: list[tuple[str, list[str]]]
    seeds: list[int]
    overrides: list[str]  # --set, applied to every point before its own values
    recipe: RunSpec  # the recipe with --set: runs_dir, the recipe's run_id and seed
    points: list[Point] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.grid]

    @property
    def out_dir(self) -> Path:
        return Path(self.recipe.runs_dir).expanduser().resolve() / SWEEPS_DIR / self.name

    def run_dir(self, point: Point) -> Path:
        return Path(self.recipe.runs_dir).expanduser().resolve() / point.run_id

    def point_spec(self, point: Point) -> RunSpec:
        return load_spec(self.config, self.overrides + point.overrides())

    def command(self) -> str:
        """The invoke command that makes (or continues) this sweep: written next to its table."""
        cmd = f"invoke sweep --config {shlex.quote(self.config)}"
        if self.grid:
            cmd += " --grid " + shlex.quote(" ".join(f"{k}={','.join(v)}" for k, v in self.grid))
        if self.seeds:
            cmd += f" --seeds {','.join(map(str, self.seeds))}"
        cmd += "".join(f" --set {shlex.quote(o)}" for o in self.overrides)
        return cmd + f" --name {shlex.quote(self.name)}"


def plan_sweep(
    config: str, grid_text: str, seeds_text="", name: str = "", overrides: Optional[list[str]] = None
) -> Sweep:
    """Every point of the grid x seeds, each point's spec loaded (and so checked) before anything runs."""
    overrides = list(overrides or [])
    recipe = load_spec(config, overrides)
    grid, seeds = parse_grid(grid_text), parse_seeds(seeds_text)
    if not grid and not seeds:
        raise InputError("a sweep needs --grid, --seeds or both (e.g. --grid 'lora.rank=8,16' --seeds 0,1)")
    set_keys = {o.partition("=")[0] for o in overrides}
    for key in [k for k, _ in grid] + ([SEED_KEY] if seeds else []):
        if key in set_keys:
            raise InputError(f"{key} is given both in --set and in the sweep (--grid or --seeds); give it once")
    if seeds and SEED_KEY in (k for k, _ in grid):
        raise InputError(f"{SEED_KEY} is in --grid and --seeds sets it too; use one of them")
    shorts = short_keys([k for k, _ in grid])
    name = name or f"{recipe.run_id}-" + ("-".join(shorts.values()) if grid else "seeds")
    if _clean(name) != name:
        raise InputError(f"sweep name {name!r} may use letters, digits, '-', '_' and '.' only")
    sweep = Sweep(config, name, grid, seeds, overrides, recipe)
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in grid]))
    ids: dict[str, tuple] = {}
    for combo in combos:
        for seed in seeds or [None]:
            slug = "-".join(f"{shorts[k]}{_clean(v)}" for k, v in combo) + ("" if seed is None else f"-s{seed}")
            run_id = f"{name}-{slug.lstrip('-')}"
            if run_id in ids and ids[run_id] != (combo, seed):  # two values that clean to the same text
                run_id += "-" + hashlib.sha256(repr((combo, seed)).encode()).hexdigest()[:6]
            ids[run_id] = (combo, seed)
            sweep.points.append(Point(tuple(combo), seed, run_id))
    for point in sweep.points:
        sweep.point_spec(point)  # a bad key or value: InputError with --set's own message, before any job
    return sweep


def write_plan(sweep: Sweep) -> Path:
    """runs/sweeps/<name>/sweep.json: the command and every point's run_id and --set values."""
    return atomic_write_json(
        sweep.out_dir / "sweep.json",
        {
            "name": sweep.name,
            "config": sweep.config,
            "command": sweep.command(),
            "grid": dict(sweep.grid),
            "seeds": sweep.seeds,
            "seed_key": SEED_KEY,
            "set": sweep.overrides,
            "points": [
                {"run_id": p.run_id, "values": dict(p.values), "seed": p.seed, "set": p.overrides()}
                for p in sweep.points
            ],
        },
    )


# ---- running ---------------------------------------------------------------------------------


def point_finished(spec: RunSpec) -> tuple[bool, str]:
    """Whether every job of the point's pipeline has finished (weights fills the shared cache and is
    checked by the first job that needs it): the same rule the jobs skip themselves by."""
    for job in layout.PIPELINE:
        if job == "weights":
            continue
        done, why = finished_job(spec.job_dir(job), spec, job_args={})
        if not done:
            return False, f"{job}: {why}"
    return True, "every job finished"


def run_job_process(job: str, config: str, overrides: list[str]) -> int:
    """`python -m jobs.<job> --config C --set ...` in this process group (Ctrl-C reaches it too); its exit code."""
    cmd = job_command(job, config, overrides)
    log.info("%s", " ".join(shlex.quote(c) for c in cmd))
    proc = subprocess.Popen(cmd, env=job_process_env(REPO_ROOT / "jobs"))
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the job got the same SIGINT: wait for it to stop resumably
            continue


def run_sweep(sweep: Sweep) -> int:
    """Run every point not finished yet, one after another, then build the table. 0 when every point
    finished, 130 on Ctrl-C, else 1 (the failed points are named; the others still ran)."""
    write_plan(sweep)
    failed = []
    started = time.time()
    for i, point in enumerate(sweep.points, 1):
        spec = sweep.point_spec(point)
        done, why = point_finished(spec)
        head = f"point {i}/{len(sweep.points)} {point.run_id} ({point.label()}" + (
            f", {SEED_KEY}={point.seed})" if point.seed is not None else ")"
        )
        if done:
            log.info("%s: skipped: %s", head, why)
            continue
        log.info("%s: running (%s)", head, why)
        for job in layout.PIPELINE:
            code = run_job_process(job, sweep.config, sweep.overrides + point.overrides())
            if code == 130 or code == -signal.SIGINT:
                log.warning("sweep interrupted in %s of %s; the same command continues it", job, point.run_id)
                return 130
            if code != 0:
                log.error("%s: %s failed (exit %d); going on with the next point", head, job, code)
                failed.append(f"{point.run_id} ({job}, exit {code})")
                break
    table = collect(sweep)
    log.info(
        "sweep %s: %d points in %.1f min; table: %s", sweep.name, len(sweep.points), (time.time() - started) / 60, table
    )
    if failed:
        log.error("failed points (rerun the same command after fixing them): %s", "; ".join(failed))
        return 1
    return 0


# ---- the table -------------------------------------------------------------------------------


def _spread(values: list[Optional[float]]) -> Optional[tuple[float, float, float]]:
    """(mean, min, max) of the values that exist."""
    got = [v for v in values if v is not None]
    return (statistics.fmean(got), min(got), max(got)) if got else None


def pooled(ks: list[Optional[int]], ns: list[Optional[int]]) -> Optional[dict]:
    """Seeds pooled: successes and rows summed over the seeds' runs, and the Wilson 95% interval of that
    proportion. Every seed answers the same held-out rows, so the interval shows how precisely these k*n
    answers pin the recipe's mean accuracy on these rows, not how a fresh set of rows would score; the
    min-max beside it is the seed noise."""
    pairs = [(k, n) for k, n in zip(ks, ns) if k is not None and n]
    if not pairs:
        return None
    k, n = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n, "low": low, "high": high}


@dataclass
class Row:
    """One grid point: its values and its seeds' runs, aggregated."""

    values: tuple[tuple[str, str], ...]
    runs: list[RunResult]
    missing: list[str]  # run ids without a report yet

    def figures(self) -> dict[str, Any]:
        done = self.runs
        scores = [r.score if r.score is not None else 0.0 for r in done]  # no valid checkpoint: scored 0
        return {
            "strict": _spread([r.strict for r in done]),
            "within": _spread([r.within for r in done]),
            "strict_pooled": pooled([r.strict_k for r in done], [r.n for r in done]),
            "within_pooled": pooled([r.within_k for r in done], [r.n for r in done]),
            "squad_f1": _spread([r.squad_f1 for r in done]),
            "retention_pass": sum(1 for r in done if r.retention is True),
            "retention_fail": sum(1 for r in done if r.retention is False),
            "steps": [r.chosen_step if r.chosen else None for r in done],
            "score": _spread(scores) if done else None,
            "invalid": sum(1 for r in done if not r.chosen),
            "ratio": _spread([r.ratio for r in done]),
            "minutes": _spread([r.train_minutes for r in done]),
            "rss": max((r.peak_rss_mb for r in done if r.peak_rss_mb is not None), default=None),
        }

    def sort_key(self):
        f = self.figures()
        return (-(f["score"][0] if f["score"] else -1.0), -(f["strict"][0] if f["strict"] else -1.0))


def table_rows(sweep: Sweep, runs: dict[str, RunResult]) -> list[Row]:
    """One Row per grid point, best first by the contest's score (the mean over seeds of the chosen
    checkpoint's stage score; a run whose checkpoints all fail retention counts 0, as the contest scores it)."""
    by_values: dict[tuple, Row] = {}
    for point in sweep.points:
        row = by_values.setdefault(point.values, Row(point.values, [], []))
        result = runs.get(point.run_id)
        if result is not None and result.evaluated:
            row.runs.append(result)
        else:
            row.missing.append(point.run_id)
    return sorted(by_values.values(), key=Row.sort_key)


def _spread_cell(s, spec=".3f") -> str:
    if s is None:
        return "-"
    mean, low, high = s
    return format(mean, spec) if low == high else f"{mean:{spec}} ({low:{spec}}-{high:{spec}})"


def _pooled_cell(p) -> str:
    return "-" if p is None else f"{p['low']:.3f}-{p['high']:.3f} ({p['k']}/{p['n']})"


def _retention_cell(f, runs: int) -> str:
    if not runs:
        return "-"
    measured = f["retention_pass"] + f["retention_fail"]
    if not measured:
        return "not measured"
    return f"pass {f['retention_pass']}/{runs}" if not f["retention_fail"] else f"**fail** {f['retention_fail']}/{runs}"


def markdown(sweep: Sweep, rows: list[Row], plot: Optional[str]) -> str:
    keys = sweep.keys
    seeds = (
        f"{len(sweep.seeds)} seeds ({SEED_KEY} = {', '.join(map(str, sweep.seeds))})"
        if sweep.seeds
        else f"one run per point ({SEED_KEY} = {sweep.recipe.train.seed}, the recipe's)"
    )
    lines = [
        f"# Sweep {sweep.name}",
        "",
        "```bash",
        sweep.command(),
        "```",
        "",
        f"Recipe `{sweep.config}`; {len(rows)} grid point(s) x {seeds}; each run's figures are those of the "
        f"checkpoint its evaluate chose (evaluate/report.json). Rows sorted by the contest's stage score "
        f"(mean over seeds; a run with no checkpoint keeping retention scores 0). mean (min-max) over seeds; "
        f"95% CI: Wilson score interval of the seeds pooled (successes and held-out rows summed over the "
        f"seeds; every seed answers the same rows, so it shows how precisely these answers fix the mean, and "
        f"the min-max shows the seed noise). Training minutes: the optimizer steps' own time "
        f"(train/loss.jsonl); peak RSS: the train job's (train/summary.json), the largest over seeds.",
        "",
        "| " + " | ".join(keys) + (" | " if keys else "") + "runs | strict acc | 95% CI (k/n) | within 1% | "
        "95% CI (k/n) | SQuAD F1 | retention | chosen step | stage score | trainable ratio | train min | "
        "peak RSS MB |",
        "|" + "---|" * len(keys) + "---:|---:|---|---:|---|---:|:---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        f = row.figures()
        values = dict(row.values)
        steps = ", ".join("none" if s is None else str(s) for s in f["steps"]) or "-"
        score = _spread_cell(f["score"], ".4f") + (
            f" ({f['invalid']} without a valid checkpoint)" if f["invalid"] else ""
        )
        lines.append(
            "| "
            + " | ".join(str(values[k]).replace("|", "\\|") for k in keys)
            + (" | " if keys else "")
            + f"{len(row.runs)}"
            + (f" of {len(row.runs) + len(row.missing)}" if row.missing else "")
            + f" | {_spread_cell(f['strict'])} | {_pooled_cell(f['strict_pooled'])} | "
            f"{_spread_cell(f['within'])} | {_pooled_cell(f['within_pooled'])} | "
            f"{_spread_cell(f['squad_f1'], '.2f')} | {_retention_cell(f, len(row.runs))} | {steps} | "
            f"{score} | {_spread_cell(f['ratio'], '.6f')} | {_spread_cell(f['minutes'], '.1f')} | "
            f"{fmt(f['rss'], '.0f')} |"
        )
    sources = sorted({s for row in rows for r in row.runs for s in (r.per_source or {})})
    if sources:
        lines += [
            "",
            "Per held-out source (split: held out of the training rows; file: data.heldout_file), "
            "within 1%, mean (min-max) over seeds and the pooled 95% CI:",
            "",
            "| " + " | ".join(keys) + (" | " if keys else "") + " | ".join(sources) + " |",
            "|" + "---|" * len(keys) + "---|" * len(sources),
        ]
        for row in rows:
            cells = []
            for s in sources:
                got = [r.per_source[s] for r in row.runs if s in (r.per_source or {})]
                rates = _spread([g["within_k"] / g["n"] for g in got if g["within_k"] is not None and g["n"]])
                both = pooled([g["within_k"] for g in got], [g["n"] for g in got])
                cells.append(f"{_spread_cell(rates)}; {_pooled_cell(both)}")
            lines.append(
                "| "
                + " | ".join(str(dict(row.values)[k]).replace("|", "\\|") for k in keys)
                + (" | " if keys else "")
                + " | ".join(cells)
                + " |"
            )
    missing = [m for row in rows for m in row.missing]
    if missing:
        lines += ["", f"Not finished (no evaluate/report.json yet): {', '.join(missing)}."]
    lines += ["", "Runs: [runs.csv](runs.csv) (one line per run); this table: [results.csv](results.csv)."]
    if plot:
        lines += ["", f"![strict accuracy and within 1% per point]({plot})"]
    return "\n".join(lines) + "\n"


RESULT_COLUMNS = [
    "runs",
    "missing",
    "strict_mean",
    "strict_min",
    "strict_max",
    "strict_k",
    "strict_n",
    "strict_ci_low",
    "strict_ci_high",
    "within_1pct_mean",
    "within_1pct_min",
    "within_1pct_max",
    "within_1pct_k",
    "within_1pct_n",
    "within_1pct_ci_low",
    "within_1pct_ci_high",
    "squad_f1_mean",
    "squad_f1_min",
    "squad_f1_max",
    "retention_pass",
    "retention_fail",
    "chosen_steps",
    "score_mean",
    "score_min",
    "score_max",
    "no_valid_checkpoint",
    "trainable_ratio",
    "train_minutes_mean",
    "train_minutes_min",
    "train_minutes_max",
    "peak_rss_mb_max",
    "run_ids",
]


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def results_csv(sweep: Sweep, rows: list[Row]) -> str:
    out = []
    for row in rows:
        f = row.figures()

        def s3(x):
            return list(x) if x else [None, None, None]

        def pk(p):
            return [p["k"], p["n"], p["low"], p["high"]] if p else [None] * 4

        out.append(
            [dict(row.values)[k] for k in sweep.keys]
            + [len(row.runs), len(row.missing)]
            + s3(f["strict"])
            + pk(f["strict_pooled"])
            + s3(f["within"])
            + pk(f["within_pooled"])
            + s3(f["squad_f1"])
            + [f["retention_pass"], f["retention_fail"], " ".join("none" if s is None else str(s) for s in f["steps"])]
            + s3(f["score"])
            + [f["invalid"], f["ratio"][0] if f["ratio"] else None]
            + s3(f["minutes"])
            + [f["rss"], " ".join(r.run_id for r in row.runs)]
        )
    return _csv_text(sweep.keys + RESULT_COLUMNS, out)


def runs_csv(sweep: Sweep, runs: dict[str, RunResult]) -> str:
    out = []
    for point in sweep.points:
        r = runs.get(point.run_id)
        if r is None or not r.evaluated:
            continue
        out.append(
            [point.run_id]
            + [v for _, v in point.values]
            + [
                point.seed,
                r.model,
                r.chosen,
                r.chosen_step,
                r.n,
                r.strict_k,
                r.within_k,
                r.squad_f1,
                r.retention,
                r.score,
                r.ratio,
                r.train_minutes,
                r.peak_rss_mb,
                r.finished,
            ]
        )
    return _csv_text(
        ["run_id"]
        + sweep.keys
        + [
            "seed",
            "checkpoint",
            "chosen",
            "chosen_step",
            "n",
            "strict_k",
            "within_1pct_k",
            "squad_f1",
            "retention_pass",
            "score",
            "ratio",
            "train_minutes",
            "peak_rss_mb",
            "finished",
        ],
        out,
    )


def plot(sweep: Sweep, rows: list[Row], path: Path) -> Optional[Path]:
    """Per point (best first): each seed's strict accuracy and share within 1% as dots, the pooled
    proportion with its Wilson 95% interval as a bar."""
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.runs]
    if not shown:
        return None
    fig = Figure(figsize=(max(6.0, 1.2 * len(shown) + 3), 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, axis="y", color="#DDDDDD")
    ax.set_axisbelow(True)
    for j, (what, pooled_key, attr) in enumerate(
        (("strict accuracy", "strict_pooled", "strict"), ("within 1%", "within_pooled", "within"))
    ):
        offset = -0.15 if j == 0 else 0.15
        for i, row in enumerate(shown):
            p = row.figures()[pooled_key]
            x = i + offset
            ys = [getattr(r, attr) for r in row.runs if getattr(r, attr) is not None]
            ax.scatter([x] * len(ys), ys, s=14, color=PALETTE[j], alpha=0.6)
            if p:
                ax.errorbar(
                    [x],
                    [p["rate"]],
                    yerr=[[p["rate"] - p["low"]], [p["high"] - p["rate"]]],
                    fmt="o",
                    color=PALETTE[j],
                    capsize=4,
                    label=f"{what}: pooled, Wilson 95%" if i == 0 else None,
                )
    ax.set_xticks(
        range(len(shown)), ["\n".join(f"{k}={v}" for k, v in row.values) or "recipe" for row in shown], fontsize=8
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of held-out rows")
    ax.set_title(f"sweep {sweep.name}: dots = seeds, bars = pooled Wilson 95% (best score left)")
    ax.legend(loc="upper right", fontsize=8)
    return save(fig, path)


def collect(sweep: Sweep) -> Path:
    """results.md, results.csv, runs.csv and results.png under runs/sweeps/<name>/, from the run folders."""
    runs = {p.run_id: read_run(sweep.run_dir(p)) for p in sweep.points}
    rows = table_rows(sweep, runs)
    out = sweep.out_dir
    png = plot(sweep, rows, out / "results.png")
    atomic_write_text(out / "results.csv", results_csv(sweep, rows))
    atomic_write_text(out / "runs.csv", runs_csv(sweep, runs))
    md = atomic_write_text(out / "results.md", markdown(sweep, rows, png.name if png else None))
    if not (out / "sweep.json").exists():
        write_plan(sweep)
    return md


# ---- the command -------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tunebox.sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--config", "-c", required=True, metavar="SPEC.yaml", help="the recipe every point starts from")
    parser.add_argument(
        "--grid",
        default="",
        metavar="'KEY=V1,V2 KEY=V1,V2'",
        help="spec keys and their values; every combination is a point",
    )
    parser.add_argument(
        "--seeds",
        default="",
        metavar="S1,S2",
        help=f"run every point at each of these {SEED_KEY} values (not data.seed: the rows and the "
        f"held-out set stay the same); default: the recipe's {SEED_KEY}, once",
    )
    parser.add_argument(
        "--name",
        default="",
        help="the sweep's name: runs/sweeps/NAME/ and its runs' id prefix "
        "(default: the recipe's run_id and the grid keys)",
    )
    add_spec_overrides(parser, "override a spec value for every point (repeatable)")
    parser.add_argument(
        "--collect", action="store_true", help="run nothing: build the table from the run folders there are"
    )
    parser.add_argument("--render", metavar="OVERLAY", help="run nothing: render one Kubernetes Job per point")
    parser.add_argument("--image", help="with --render: image reference")
    parser.add_argument("--namespace", help="with --render: Kubernetes namespace")
    parser.add_argument(
        "-o", "--output", help="with --render: file to write (default build/k8s/sweep-NAME.OVERLAY.yaml)"
    )
    args = parser.parse_args(argv)
    setup_logging()

    def body() -> int:
        sweep = plan_sweep(args.config, args.grid, args.seeds, args.name, args.overrides)
        if args.render:
            return render(sweep, args.render, args.image, args.namespace, args.output)
        if args.collect:
            table = collect(sweep)
            print(table.read_text(encoding="utf-8"))
            log.info("table: %s", table)
            return 0
        code = run_sweep(sweep)
        if code != 130:
            print((sweep.out_dir / "results.md").read_text(encoding="utf-8"))
        return code

    return guarded("sweep", body, known=(RuntimeError,), on_interrupt="rerun the same command to continue the sweep")


def render(sweep: Sweep, overlay: str, image: Optional[str], namespace: Optional[str], output: Optional[str]) -> int:

    text, plans = render_sweep(
        sweep.config, overlay, [p.overrides() for p in sweep.points], sweep.name, image, namespace, sweep.overrides
    )
    out = Path(output) if output else REPO_ROOT / "build" / "k8s" / f"sweep-{sweep.name}.{overlay}.yaml"
    atomic_write_text(out, text)
    write_plan(sweep)
    jobs = " ".join(p.job_name for p in plans)
    print(
        f"render: {out} ({len(plans)} Jobs: {jobs})\napply: kubectl apply -f {out}\n"
        f"then copy the run folders off the claim (k8s/helpers/runs-reader.yaml) into "
        f"{sweep.recipe.runs_dir}/ and build the table: {sweep.command()} --collect"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
