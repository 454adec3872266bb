"""bench_eval: how fast evaluation runs on the real SmolLM2-135M, appended to docs/BENCHMARKS.md.

Two measurements, one run:
  1. the decoder: the same prompts through `greedy_generate` (batched, left padding, KV cache)
     and `generate_no_cache` (one prompt at a time, the whole sequence re-run per token); the
     outputs must be identical token for token, and the section gives both times and the ratio;
  2. the evaluate job itself, base model only: `python -m jobs.evaluate` on a run whose prep
     held out MATH_ROWS contest math rows, plus SQUAD_ROWS SQuAD questions, timed from its own
     scores.json / squad.json, and extrapolated linearly to 500 + 500 (generation cost is per
     row at a fixed batch size) when fewer rows were measured.

    python -m benches.bench_eval [--prompts 40] [--max-new 32] [--math-rows 100] [--squad-rows 100]

Exit codes: 0 ok, 1 the two decoders disagree or something failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from tunebox.config import REPO_ROOT, load_spec
from tunebox.evaluation.decode import NumpyLlama, generate_no_cache, greedy_generate
from tunebox.manifest import cpu_info
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import ensure_model, load_tokenizer

BENCHMARKS_FILE = REPO_ROOT / "docs" / "BENCHMARKS.md"
BENCHMARKS_HEADER = (
    "# Benchmarks\n\nEvery figure here was measured by the command shown with it, on the machine it "
    "names, and is appended by that command (`invoke bench.<name>`).\n"
)
RECIPE = REPO_ROOT / "recipes" / "local-smollm2.yaml"
MODEL = "smollm2-135m"
EXTRAPOLATE_TO = 500


def machine() -> dict:

    cpu = cpu_info()
    return {
        "cpu": cpu["model"],
        "cores": cpu["usable"] or cpu["count"],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def math_prompts(n: int) -> tuple[list[str], str]:
    """The first n contest math problems in the local recipe's chat format."""
    spec = load_spec(RECIPE)
    source = spec.resolve(spec.data.train_file)
    rows = []
    with open(source, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line)["problem"])
            if len(rows) >= n:
                break
    return rows, spec.data.system_prompt


def decoder_comparison(prompts: int, max_new: int, batch_size: int) -> dict:
    """greedy_generate vs generate_no_cache on the same prompts: times, ratio, identical outputs."""

    model_dir = ensure_model(MODEL)
    tok = load_tokenizer(MODEL)
    model = NumpyLlama.from_checkpoint(model_dir / "model.ckpt", get_model_shape(MODEL))
    problems, system = math_prompts(prompts)
    ids = [tok.encode(tok.chat_prompt(p, system)) for p in problems]
    t0, c0 = time.perf_counter(), time.process_time()
    cached = greedy_generate(model, ids, max_new, tok.stop_ids, tok.pad_id, batch_size=batch_size)
    t_cached, c_cached = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    reference = generate_no_cache(model, ids, max_new, tok.stop_ids)
    t_reference, c_reference = time.perf_counter() - t0, time.process_time() - c0
    differ = [i for i, (a, b) in enumerate(zip(cached, reference)) if a != b]
    return {
        "prompts": len(ids),
        "prompt_tokens": sum(map(len, ids)),
        "max_new_tokens": max_new,
        "batch_size": batch_size,
        "new_tokens": sum(map(len, cached)),
        "seconds_cached_batched": round(t_cached, 2),
        "seconds_no_cache": round(t_reference, 2),
        "cpu_seconds_cached_batched": round(c_cached, 2),
        "cpu_seconds_no_cache": round(c_reference, 2),
        "speedup": round(t_reference / t_cached, 2) if t_cached else None,
        "speedup_cpu": round(c_reference / c_cached, 2) if c_cached else None,
        "identical": not differ,
        "differing_prompts": differ,
    }


def evaluate_job_timing(math_rows: int, squad_rows: int, workdir: Path) -> dict:
    """The evaluate job on the base model: prep holds out `math_rows` rows, evaluate runs as users run
    it with eval.checkpoints=none (the base model alone, no merge needed)."""
    runs = workdir / "runs"
    overrides = [
        f"runs_dir={runs}",
        "run_id=bench-eval",
        f"data.heldout_rows={math_rows}",
        f"eval.squad_rows={squad_rows}",
        "eval.scales=null",
        "eval.checkpoints=none",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def job(name: str) -> float:
        cmd = [sys.executable, "-m", f"jobs.{name}", "--config", str(RECIPE)] + [
            a for o in overrides for a in ("--set", o)
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return time.perf_counter() - t0

    job("prep")
    spec = load_spec(RECIPE, overrides)
    wall = job("evaluate")
    base = spec.job_dir("evaluate") / "base"
    scores = json.loads((base / "scores.json").read_text())
    squad = json.loads((base / "squad.json").read_text()) if squad_rows else None
    limits = json.loads((spec.job_dir("evaluate") / "limits.json").read_text())
    preds = [json.loads(l) for l in (base / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    cut = [p for p in preds if p["new_tokens"] >= p["max_new_tokens"]]
    out = {
        "math_rows": scores["n"],
        "math_seconds": scores["seconds"],
        "math_new_tokens": scores["new_tokens"],
        "math_cpu_seconds": scores.get("cpu_seconds"),
        "squad_cpu_seconds": squad.get("cpu_seconds") if squad else 0.0,
        "math_limits": {f: v["max_new_tokens"] for f, v in limits["families"].items()},
        "squad_rows": squad["n"] if squad else 0,
        "squad_seconds": squad["seconds"] if squad else 0.0,
        "squad_new_tokens": squad["new_tokens"] if squad else 0,
        "job_wall_seconds": round(wall, 1),
        "batch_size": spec.eval.batch_size,
        "math_cap": spec.eval.max_new_tokens,
        "math_rows_at_family_limit": len(cut),
        "math_tokens_saved_by_family_limits": sum(spec.eval.max_new_tokens - p["max_new_tokens"] for p in cut),
    }
    for part in ("math", "squad"):
        rows = out[f"{part}_rows"]
        for kind in ("seconds", "cpu_seconds"):
            value = out[f"{part}_{kind}"]
            out[f"{part}_{kind}_500"] = round(value / rows * EXTRAPOLATE_TO, 1) if rows and value is not None else None
    return out


def render_section(command: str, info: dict, decoder: dict, job: Optional[dict], started: str) -> str:
    d = decoder
    # The 1-minute figure decays slowly: a benchmark that ended a minute ago still shows ~1 on 2 cores.
    busy = info["load_average_1m"] > info["cores"]
    lines = [
        f"## Evaluation speed on SmolLM2-135M ({started[:10]})",
        "",
        f"- command: `{command}`",
        f"- machine: {info['cpu']}, {info['cores']} cores; load average {info['load_average_1m']} at the start"
        + (
            " (other work shared the cores: wall-clock figures are pessimistic; CPU seconds, all threads of "
            "this process, are the steadier measure)"
            if busy
            else ""
        ),
        f"- date: {started}",
        "",
        f"**Decoder** ({d['prompts']} contest math prompts, {d['prompt_tokens']} prompt tokens, at most "
        f"{d['max_new_tokens']} new tokens, {d['new_tokens']} generated):",
        "",
        "| decoder | wall s | CPU s |",
        "|---|---:|---:|",
        f"| `greedy_generate` (batch {d['batch_size']}, left padding, KV cache) | "
        f"{d['seconds_cached_batched']:.1f} | "
        f"{d['cpu_seconds_cached_batched']:.1f} |",
        f"| `generate_no_cache` (one prompt at a time, full re-run per token) | {d['seconds_no_cache']:.1f} | "
        f"{d['cpu_seconds_no_cache']:.1f} |",
        "",
        f"Ratio: the cached batched decoder is **{d['speedup']:.1f}x** faster by wall clock "
        f"({d['speedup_cpu']:.1f}x by CPU time); outputs "
        + (
            "identical token for token on every prompt."
            if d["identical"]
            else f"DIFFER on prompts {d['differing_prompts']}."
        ),
    ]
    if job:
        j = job

        def cell(v):
            return "-" if v is None else f"{v:.0f}"

        measured_all = j["math_rows"] >= EXTRAPOLATE_TO and j["squad_rows"] >= EXTRAPOLATE_TO
        lines += [
            "",
            f"**The evaluate job, base model** (batch {j['batch_size']}; math: new tokens capped per family "
            "at "
            f"the longest training answer + margin: "
            + ", ".join(f"{f} {v}" for f, v in j["math_limits"].items())
            + "; SQuAD: contest prompt, 20 new tokens):",
            "",
            "| set | rows | new tokens | wall s | CPU s | wall s per 500 rows | CPU s per 500 rows |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| contest math (held out) | {j['math_rows']} | {j['math_new_tokens']} | {j['math_seconds']:.1f} | "
            f"{cell(j['math_cpu_seconds'])} | {cell(j['math_seconds_500'])} | {cell(j['math_cpu_seconds_500'])} "
            "|",
            f"| SQuAD v1.1 dev subset | {j['squad_rows']} | {j['squad_new_tokens']} | {j['squad_seconds']:.1f} | "
            f"{cell(j['squad_cpu_seconds'])} | {cell(j['squad_seconds_500'])} | "
            f"{cell(j['squad_cpu_seconds_500'])} |",
            "",
            (
                "500 + 500 rows measured directly."
                if measured_all
                else "The per-500-rows columns are the measured figure per row x 500 (linear: the cost is per row at "
                "a fixed batch size), not a measurement."
            )
            + f" On an idle machine the wall time lies between CPU s / {info['cores']} (every core busy) and "
            "CPU s." + f" {j['math_rows_at_family_limit']} of {j['math_rows']} math answers stopped at their family's "
            "limit;"
            f" with the single cap of {j['math_cap']} they would have run on for up to"
            f" {j['math_tokens_saved_by_family_limits']} more tokens."
            + f" Whole job, including loading the model and tokenizing: {j['job_wall_seconds']:.0f} s wall.",
            "",
            local_recipe_estimate(j, info["cores"]),
        ]
    return "\n".join(lines) + "\n"


def local_recipe_estimate(job: dict, cores: int) -> str:
    """What these per-row CPU figures mean for `invoke pipeline`'s evaluate (base + every checkpoint)."""
    spec = load_spec(RECIPE)
    models = (1 if spec.eval.base else 0) + (spec.train.num_checkpoints if spec.eval.checkpoints == "all" else 1)
    math_rows = spec.eval.limit or spec.data.heldout_rows
    squad_rows = spec.eval.squad_rows if spec.eval.squad_file else 0
    per_model = math_rows * job["math_cpu_seconds"] / job["math_rows"] + (
        squad_rows * job["squad_cpu_seconds"] / job["squad_rows"] if job["squad_rows"] else 0.0
    )
    total = per_model * models
    return (
        f"For recipes/local-smollm2.yaml ({models} models x ({math_rows} math + {squad_rows} SQuAD rows)) that is "
        f"about {total / 60:.1f} CPU minutes, {total / cores / 60:.1f}-{total / 60:.1f} min wall on an idle "
        "machine "
        "(an upper estimate: tuned checkpoints stop after their short answer, the base model writes on to the "
        "limit)."
    )


def append_section(text: str, path: Path = BENCHMARKS_FILE) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCHMARKS_HEADER, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as fh:  # append only: other benchmarks write here too
        fh.write("\n" + text)


def bench_eval(
    prompts: int = 40,
    max_new: int = 32,
    batch_size: int = 20,
    math_rows: int = 100,
    squad_rows: int = 100,
    out: Path = BENCHMARKS_FILE,
    command: Optional[str] = None,
) -> dict:
    """Run both measurements, append the section to `out`, return the figures."""
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    info = machine()
    decoder = decoder_comparison(prompts, max_new, batch_size)
    print(
        f"decoder: cached {decoder['seconds_cached_batched']} s, no cache {decoder['seconds_no_cache']} s, "
        f"x{decoder['speedup']}, identical={decoder['identical']}",
        flush=True,
    )
    job = None
    if math_rows > 0:
        with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
            job = evaluate_job_timing(math_rows, squad_rows, Path(tmp))
        print(f"evaluate: {job}", flush=True)
    command = command or ("python -m benches.bench_eval " + shlex.join(sys.argv[1:])).strip()
    append_section(render_section(command, info, decoder, job, started), out)
    return {"machine": info, "decoder": decoder, "evaluate": job}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.bench_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=40, help="prompts for the cached vs no-cache comparison")
    parser.add_argument(
        "--max-new",
        type=int,
        default=32,
        help="new tokens per prompt in that comparison (default "
        "32: the evaluate job caps math answers at 14-64 per family, 40 on average)",
    )
    parser.add_argument("--batch-size", type=int, default=20, help="batch of the cached decoder")
    parser.add_argument(
        "--math-rows", type=int, default=100, help="held-out math rows for the evaluate timing (0: skip that timing)"
    )
    parser.add_argument("--squad-rows", type=int, default=100, help="SQuAD questions for the evaluate timing")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_FILE, help="the markdown file to append to")
    args = parser.parse_args(argv)
    figures = bench_eval(args.prompts, args.max_new, args.batch_size, args.math_rows, args.squad_rows, args.out)
    return 0 if figures["decoder"]["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
