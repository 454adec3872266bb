"""Benchmarks of data preparation at contest scale, appended to docs/BENCHMARKS.md.

  python -m benches.bench_prep prep [--rows 800000]       (invoke bench.prep)
      generates ROWS contest math rows (jobs.generate), then turns them into MindRecord twice in the
      same run: a plain single-process loop (read a line, json.loads, tokenize it, collect, write
      with FileWriter.write_raw_data) and `python -m jobs.prep` with its workers; also prep with
      cleaning on (dedupe, bad_labels=drop). Each runs as its own process, timed, with the CPU
      time the kernel reports for it and its children and the peak RSS sampled (psutil) over
      its process tree. Tokenizer: SmolLM2-135M, the local recipe's seq_length and system prompt.
  python -m benches.bench_prep generate [--rows 800000]   (invoke bench.generate)
      times jobs.generate with one worker and with one per core.

Only measured figures are written; the load average before and after each run is printed with them,
since a shared machine makes wall times pessimistic (CPU seconds are much less affected).
Exit codes: 0 ok, 2 bad arguments, 1 failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from tunebox.cli import job_command
from tunebox.config import load_spec
from tunebox.data.samples import SAMPLE_SCHEMA, Example, encode_example
from tunebox.layout import REPO_ROOT
from tunebox.model.weights import ensure_model, load_tokenizer

BENCHMARKS = REPO_ROOT / "docs" / "BENCHMARKS.md"
RECIPE = REPO_ROOT / "recipes" / "local-smollm2.yaml"
HEADER = """# Benchmarks

Every figure here was measured by the command shown with it, on the machine it names, and is
appended by that command (`invoke bench.<name>`). Ratios compare against a reference measured in
the same run. Where the machine was shared with other work while measuring, the section says so
(load average printed): such figures are pessimistic, and are kept as measured.
"""
GOAL_SECONDS = 180


# ---- the machine ------------------------------------------------------------------------------


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "unknown"
    )
    import psutil

    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def machine_line(m: dict, loads: list[float]) -> str:
    """A section's `- machine:` line: what `machine()` found, today's date, and the load while measuring."""
    return (
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {dt.date.today().isoformat()}; "
        + load_note(min(loads), max(loads), m["cores"])
    )


def load_note(before: float, after: float, cores: int) -> str:
    note = f"load average {before:.1f} before, {after:.1f} after (its own processes included), on {cores} cores"
    # Before the run only other work counts; after it the benchmark's own processes (about one per
    # core) are in the 1-minute figure, so only clearly more than that means others shared the cores.
    if before > 0.5 * cores or after > cores + 0.5:
        note += " - the machine was shared with other work while measuring; wall times are pessimistic"
    return note


# ---- running one measured process -------------------------------------------------------------


def measure(cmd: list[str], cwd: Path, env: Optional[dict] = None) -> dict:
    """Run cmd; wall seconds, CPU seconds (it and its children, from wait4) and peak RSS: of the
    largest single process and of the whole tree at once (psutil, sampled every 0.2 s; shared
    library pages are counted once per process, so the tree figure is an upper bound)."""
    import psutil

    load_before = load_average()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"process": 0, "tree": 0}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak["process"] = max(peak["process"], max(rss, default=0))
                peak["tree"] = max(peak["tree"], sum(rss))
            except psutil.Error:
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}")
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(peak["process"] / 2**20),
        "peak_rss_tree_mb": round(peak["tree"] / 2**20),
        "load_before": load_before,
        "load_after": load_average(),
        "output": output,
    }


# ---- the plain loop (run as its own process by `prep`) -----------------------------------------


def plain_loop(data_dir: Path, out: Path, seq_length: int, system: Optional[str]) -> dict:
    """What a first prep script does: every line in turn, json.loads, the chat template and the
    tokenizer on that row alone, the samples collected in memory, then FileWriter.write_raw_data."""
    import numpy as np
    from mindspore.mindrecord import FileWriter

    tok = load_tokenizer("smollm2-135m")
    width = seq_length + 1
    ids, labels, rows_in = [], [], 0
    for path in sorted(data_dir.glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                row = json.loads(line)
                rows_in += 1
                problem, solution = row["problem"].strip(), row["solution"].strip()
                a, b, n = encode_example(tok, Example(line_no, problem, solution, solution, {}), seq_length, system)
                if n <= width:
                    ids.append(a)
                    labels.append(b)
    writer = FileWriter(str(out), shard_num=1, overwrite=True)
    writer.add_schema(SAMPLE_SCHEMA, "plain loop")
    for start in range(0, len(ids), 4096):
        writer.write_raw_data(
            [{"input_ids": a, "labels": b} for a, b in zip(ids[start : start + 4096], labels[start : start + 4096])]
        )
    writer.commit()
    return {
        "rows_in": rows_in,
        "rows_written": len(ids),
        "checksum": int(np.sum([a.sum() for a in ids], dtype=np.int64)),
    }


# ---- the benchmarks ---------------------------------------------------------------------------


def bench_prep(rows: int, workers: int, keep: Optional[Path] = None) -> dict:
    spec = load_spec(RECIPE)
    ensure_model(spec.model.name)  # converted once; not part of any timing
    work = Path(tempfile.mkdtemp(prefix="tunebox-bench-prep-", dir=keep))
    env = dict(
        os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TUNEBOX_LOG="INFO"
    )
    try:
        data = work / "data"
        record = run_generate(rows, data, seed=0)
        generate_seconds = record["seconds"]
        input_mb = sum(s["bytes"] for s in record["shards"]) / 1e6

        print(f"bench: plain loop over {rows:,} rows ...", file=sys.stderr, flush=True)
        plain = measure(
            [
                sys.executable,
                "-m",
                "benches.bench_prep",
                "plain",
                "--data",
                str(data),
                "--out",
                str(work / "plain.mindrecord"),
                "--seq-length",
                str(spec.data.seq_length),
            ]
            + (["--system", spec.data.system_prompt] if spec.data.system_prompt else []),
            work,
            env,
        )
        plain.update(json.loads(plain.pop("output").strip().splitlines()[-1]))

        runs = {}
        for name, extra in (("prep", []), ("prep_cleaning", ["data.dedupe=true", "data.bad_labels=drop"])):
            print(f"bench: {name} over {rows:,} rows ...", file=sys.stderr, flush=True)
            sets = [f"data.train_file={data}", f"runs_dir={work / name}", f"data.workers={workers}"] + extra
            cmd = job_command("prep", RECIPE, sets)
            result = measure(cmd, work, env)
            result.pop("output")
            stats = json.loads((work / name / spec.run_id / "prep" / "stats.json").read_text())
            result.update(
                {
                    "rows_in": stats["rows_read"],
                    "rows_written": stats["rows_train"],
                    "removed": stats["removed"],
                    "seconds_by_phase": stats["resources"]["seconds_by_phase"],
                    "in_job_cpu_seconds": stats["resources"]["cpu_seconds"],
                    "in_job_cpu_seconds_workers": stats["resources"]["cpu_seconds_children"],
                }
            )
            runs[name] = result
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "rows": rows,
        "workers": workers,
        "generate_seconds": round(generate_seconds, 1),
        "input_mb": round(input_mb, 1),
        "shards": len(record["shards"]),
        "seq_length": spec.data.seq_length,
        "plain": plain,
        **runs,
    }


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds else "-"


def prep_section(result: dict, command: str) -> str:
    m = machine()
    rows = result["rows"]
    loads = [
        r[k] for r in (result["plain"], result["prep"], result["prep_cleaning"]) for k in ("load_before", "load_after")
    ]
    lines = [
        f"## prep: {rows:,} contest rows -> MindRecord",
        "",
        f"- command: `{command}`",
        machine_line(m, loads),
        f"- data: {rows:,} rows from `python -m jobs.generate --rows {rows} --seed 0` ({result['shards']} shards, "
        f"{result['input_mb']} MB, generated in {result['generate_seconds']} s); SmolLM2-135M tokenizer, "
        f"seq_length {result['seq_length']}, the local recipe's system prompt; rows longer than seq_length + 1 skipped",
        "",
        "| run | rows written | wall s | rows/s (in) | CPU s (all processes) | peak RSS, largest process | peak RSS, "
        "all processes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    named = (
        ("plain loop, 1 process (json.loads + tokenize a row at a time, FileWriter.write_raw_data)", result["plain"]),
        (f"`jobs.prep`, {result['workers']} workers", result["prep"]),
        (f"`jobs.prep`, {result['workers']} workers, dedupe + bad_labels=drop", result["prep_cleaning"]),
    )
    for name, r in named:
        lines.append(
            f"| {name} | {r['rows_written']:,} | {r['seconds']} | {_rate(rows, r['seconds'])} | "
            f"{r['cpu_seconds']} | "
            f"{r['peak_rss_mb']:,} MB | {r['peak_rss_tree_mb']:,} MB |"
        )
    plain, fast, clean = result["plain"], result["prep"], result["prep_cleaning"]
    met = "met" if fast["seconds"] <= GOAL_SECONDS else "missed"
    lines += [
        "",
        f"- speedup, wall time: plain / prep = **{plain['seconds'] / fast['seconds']:.2f}x** "
        f"(with cleaning: {plain['seconds'] / clean['seconds']:.2f}x); CPU time: plain / prep = "
        f"{plain['cpu_seconds'] / fast['cpu_seconds']:.2f}x",
        f"- goal <= {GOAL_SECONDS} s for {rows:,} rows: **{met}** ({fast['seconds']} s wall; "
        f"{fast['cpu_seconds']} CPU s over {m['cores']} cores is at least {fast['cpu_seconds'] / m['cores']:.0f} s "
        f"on this machine unshared)",
        f"- prep phases, wall s: {', '.join(f'{k} {v}' for k, v in fast['seconds_by_phase'].items())}; CPU s in the "
        "job's "
        f"process {fast['in_job_cpu_seconds']}, in its workers {fast['in_job_cpu_seconds_workers']} "
        "(the workers' share is tokenization: SmolLM2's tokenizer on the prompt and the answer of every row)",
        f"- cleaning removed: {', '.join(f'{k} {v:,}' for k, v in clean['removed'].items()) or 'nothing'}",
        "",
    ]
    return "\n".join(lines)


def run_generate(rows: int, out: Path, seed: int = 0, workers: Optional[int] = None) -> dict:
    """`python -m jobs.generate` (default mix) as its own process, as a person runs it; its generate.json
    record. The record's `seconds` is the job's own time for the rows, without the interpreter's start."""
    cmd = [sys.executable, "-m", "jobs.generate", "--rows", str(rows), "--out", str(out), "--seed", str(seed)]
    cmd += ["--workers", str(workers)] if workers else []
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((out / "generate.json").read_text(encoding="utf-8"))


def time_generate(rows: int, workers: Optional[int] = None, seed: int = 0) -> dict:
    """Time a default-mix generation of `rows` rows into a temporary directory (removed after)."""
    tmp = Path(tempfile.mkdtemp(prefix="tunebox-bench-generate-"))
    try:
        record = run_generate(rows, tmp, seed=seed, workers=workers)
        seconds = record["seconds"]
        total_bytes = sum(s["bytes"] for s in record["shards"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "mb_written": round(total_bytes / 1e6, 1),
        "workers": record["workers"],
        "cpus": os.cpu_count(),
        "command": f"python -m jobs.generate --rows {rows} --out DIR --seed {seed}",
    }


def bench_generate(rows: int) -> dict:
    out = {}
    for workers in (1, os.cpu_count() or 1):
        before = load_average()
        out[workers] = time_generate(rows, workers=workers)
        out[workers].update(load_before=before, load_after=load_average())
    return out


def generate_section(result: dict, rows: int) -> str:
    m = machine()
    one, many = result[1], result[max(result)]
    loads = [r[k] for r in result.values() for k in ("load_before", "load_after")]
    lines = [
        f"## generate: {rows:,} contest math rows",
        "",
        f"- command: `{one['command']}` (with `--workers 1` and `--workers {max(result)}`)",
        machine_line(m, loads),
        "",
        "| workers | wall s | rows/s | MB written |",
        "|---:|---:|---:|---:|",
    ]
    for workers in sorted(result):
        r = result[workers]
        lines.append(f"| {workers} | {r['seconds']} | {r['rows_per_second']:,} | {r['mb_written']} |")
    lines += ["", f"- speedup {max(result)} workers / 1: **{one['seconds'] / many['seconds']:.2f}x**", ""]
    return "\n".join(lines)


def append_section(text: str, path: Path = BENCHMARKS) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n" + text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.bench_prep",
        description=__doc__.split("\n\n")[0],
        epilog="Exit codes: 0 ok, 2 bad arguments, 1 failure.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prep", help="plain loop vs jobs.prep on generated rows")
    p.add_argument("--rows", type=int, default=800_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="keep the data and outputs under this directory")
    p.add_argument("--no-doc", action="store_true", help="print the section, do not append it to docs/BENCHMARKS.md")
    g = sub.add_parser("generate", help="jobs.generate with 1 worker and one per core")
    g.add_argument("--rows", type=int, default=800_000)
    g.add_argument("--no-doc", action="store_true")
    plain = sub.add_parser("plain", help=argparse.SUPPRESS)
    plain.add_argument("--data", type=Path, required=True)
    plain.add_argument("--out", type=Path, required=True)
    plain.add_argument("--seq-length", type=int, required=True)
    plain.add_argument("--system", default=None)
    args = parser.parse_args(argv)
    if getattr(args, "rows", 1) < 1:
        print("error: --rows must be >= 1", file=sys.stderr)
        return 2
    if args.what == "plain":
        print(json.dumps(plain_loop(args.data, args.out, args.seq_length, args.system)))
        return 0
    if args.what == "prep":
        result = bench_prep(args.rows, args.workers, args.keep)
        text = prep_section(result, f"python -m benches.bench_prep prep --rows {args.rows} --workers {args.workers}")
    else:
        result = bench_generate(args.rows)
        text = generate_section(result, args.rows)
    print(text)
    print(json.dumps(result, indent=2, default=str), file=sys.stderr)
    if not args.no_doc:
        append_section(text)
        print(f"appended to {BENCHMARKS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
