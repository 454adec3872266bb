"""bench_eval: how fast evaluation runs on the real SmolLM2-135M, appended to docs/BENCHMARKS.md.

Two measurements, one run:
  1. the decoder: the same prompt ids through `greedy_generate` (batched, left padding, KV cache)
     and Hugging Face transformers' `generate` (greedy, left padding, the same weights, the same
     length-sorted batches), timed in the same process, alternating which goes first when repeated;
     the outputs must be identical token for token; `--no-cache` adds `generate_no_cache` (one prompt
     at a time, the whole sequence re-run per token) as a third side;
  2. the evaluate job itself, base model only: `python -m jobs.evaluate` on a run whose prep
     held out MATH_ROWS contest math rows, plus SQUAD_ROWS SQuAD questions, timed from its own
     scores.json / squad.json, and extrapolated linearly to 500 + 500 (generation cost is per
     row at a fixed batch size) when fewer rows were measured.

    python -m benches.bench_eval [--prompts 100] [--max-new 32] [--batch-size 20] [--hf-batch-size 20]
                                 [--repeats 1] [--no-cache] [--math-rows 100] [--squad-rows 100]

`uptime` is printed and recorded before and after: on a shared machine read the ratio as a direction.
The HF side needs the bench extra (torch, transformers).

Exit codes: 0 ok, 1 the decoders disagree or something failed.
"""

from __future__ import annotations

import argparse
import dataclasses
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

import numpy as np

from benches.bench_ref_torch import hf_llama_config
from tunebox.cli import job_command
from tunebox.config import REPO_ROOT, load_spec
from tunebox.evaluation.decode import (
    PREFILL_TOKEN_BUDGET,
    NumpyLlama,
    generate_no_cache,
    greedy_generate,
    length_groups,
)
from tunebox.manifest import cpu_info
from tunebox.model.checkpoint import load_checkpoint_numpy
from tunebox.model.registry import ModelShape, get_model_shape
from tunebox.model.weights import ensure_model, load_tokenizer, mindformers_name_to_hf

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


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def hf_model_of(params: dict, shape: ModelShape, source: str = "parameters"):
    """transformers' LlamaForCausalLM with these MindFormers-named parameters (mapped to HF's names), eval
    mode, float32: the same model the numpy decoder runs. Entries that are not arrays are skipped."""
    import torch
    from transformers import LlamaForCausalLM

    config = hf_llama_config(dataclasses.asdict(shape))
    model = LlamaForCausalLM(config)
    state = {
        mindformers_name_to_hf(k): torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in params.items()
        if isinstance(v, np.ndarray)
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(
            f"{source} does not fit transformers' Llama: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    return model.eval()  # tied: lm_head.weight is embed_tokens.weight itself, loaded with it


def hf_generate(
    model, prompts: list[list[int]], max_new: int, stop_ids: list[int], pad_id: int, batch_size: int
) -> list[list[int]]:
    """transformers' greedy generate on the same length-sorted batches as greedy_generate (left padding with an
    attention mask); each row's new tokens up to its first stop token, which is dropped (as greedy_generate)."""
    import torch

    out: list[list[int]] = [[] for _ in prompts]
    for group in length_groups([len(p) for p in prompts], batch_size, PREFILL_TOKEN_BUDGET):
        width = max(len(prompts[i]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        with torch.inference_mode():
            res = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                eos_token_id=list(stop_ids),
                pad_token_id=pad_id,
            )
        for row, i in enumerate(group):
            new = res[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
            out[i] = new[:cut]
    return out


def timed(fn):
    """(fn(), wall s, CPU s of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


def decoder_comparison(
    prompts: int, max_new: int, batch_size: int, hf_batch_size: int = 20, repeats: int = 1, no_cache: bool = False
) -> dict:
    """greedy_generate vs transformers' generate (and generate_no_cache) on the same prompt ids, in this process,
    alternating which side goes first: times per repeat, their best and the ratio, identical outputs."""
    import torch

    model_dir = ensure_model(MODEL)
    tok = load_tokenizer(MODEL)
    shape = get_model_shape(MODEL)
    model = NumpyLlama.from_checkpoint(model_dir / "model.ckpt", shape)
    hf = hf_model_of(load_checkpoint_numpy(model_dir / "model.ckpt"), shape, str(model_dir / "model.ckpt"))
    problems, system = math_prompts(prompts)
    ids = [tok.encode(tok.chat_prompt(p, system)) for p in problems]
    sides = {
        "tunebox": lambda: greedy_generate(
            model, ids, max_new, tok.stop_ids, tok.pad_id, batch_size=batch_size, progress=False
        ),
        "hf": lambda: hf_generate(hf, ids, max_new, tok.stop_ids, tok.pad_id, hf_batch_size),
    }
    times: dict[str, list] = {name: [] for name in sides}
    outputs: dict[str, list] = {}
    before = uptime()
    print(f"uptime before: {before}", flush=True)
    for r in range(repeats):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            outputs[name], wall, cpu = timed(sides[name])
            times[name].append({"wall": round(wall, 2), "cpu": round(cpu, 2)})
            print(f"repeat {r + 1}/{repeats} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    if no_cache:
        outputs["no_cache"], wall, cpu = timed(lambda: generate_no_cache(model, ids, max_new, tok.stop_ids))
        times["no_cache"] = [{"wall": round(wall, 2), "cpu": round(cpu, 2)}]
    after = uptime()
    print(f"uptime after: {after}", flush=True)
    best = {name: min(t["wall"] for t in runs) for name, runs in times.items()}
    best_cpu = {name: min(t["cpu"] for t in runs) for name, runs in times.items()}
    differ = {
        name: [i for i, (a, b) in enumerate(zip(outputs["tunebox"], outputs[name])) if a != b]
        for name in outputs
        if name != "tunebox"
    }
    return {
        "prompts": len(ids),
        "prompt_tokens": sum(map(len, ids)),
        "max_new_tokens": max_new,
        "batch_size": batch_size,
        "hf_batch_size": hf_batch_size,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "new_tokens": sum(map(len, outputs["tunebox"])),
        "uptime_before": before,
        "uptime_after": after,
        "times": times,
        "best_wall": best,
        "best_cpu": best_cpu,
        "speedup_vs_hf": round(best["hf"] / best["tunebox"], 2) if best["tunebox"] else None,
        "speedup_vs_hf_cpu": round(best_cpu["hf"] / best_cpu["tunebox"], 2) if best_cpu["tunebox"] else None,
        "speedup_vs_no_cache": round(best["no_cache"] / best["tunebox"], 2) if no_cache and best["tunebox"] else None,
        "identical": not any(differ.values()),
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
        cmd = job_command(name, RECIPE, overrides)
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
    labels = {
        "tunebox": f"tunebox `greedy_generate` (batch {d['batch_size']}, left padding, KV cache, numpy)",
        "hf": f"transformers `generate` (batch {d['hf_batch_size']}, left padding, greedy, torch "
        f"{d['torch_threads']} threads)",
        "no_cache": "`generate_no_cache` (one prompt at a time, full re-run per token)",
    }
    lines = [
        f"## Evaluation speed on SmolLM2-135M ({started[:10]})",
        "",
        f"- command: `{command}`",
        f"- machine: {info['cpu']}, {info['cores']} cores; `uptime` before: `{d['uptime_before']}`; after: "
        f"`{d['uptime_after']}`"
        + (
            " (load above the core count: other work shared the cores, read the ratios as a direction only)"
            if info["load_average_1m"] > info["cores"]
            else ""
        ),
        f"- date: {started}",
        "",
        f"**Decoder** ({d['prompts']} contest math prompts, {d['prompt_tokens']} prompt tokens, the same ids on "
        f"every side, at most {d['max_new_tokens']} new tokens, {d['new_tokens']} generated; {d['repeats']} "
        "repeat(s) alternating which side goes first, best of them):",
        "",
        "| decoder | wall s (best) | CPU s (best) | every repeat, wall s |",
        "|---|---:|---:|---|",
    ]
    for name, runs in d["times"].items():
        lines.append(
            f"| {labels[name]} | {d['best_wall'][name]:.1f} | {d['best_cpu'][name]:.1f} | "
            + ", ".join(f"{t['wall']:.1f}" for t in runs)
            + " |"
        )
    verdict = (
        "identical token for token on every prompt."
        if d["identical"]
        else "DIFFER: " + "; ".join(f"{k} on prompts {v}" for k, v in d["differing_prompts"].items() if v) + "."
    )
    lines += [
        "",
        f"Ratio: tunebox is **{d['speedup_vs_hf']:.2f}x** transformers' generate by wall clock "
        f"({d['speedup_vs_hf_cpu']:.2f}x by CPU time)"
        + (f", {d['speedup_vs_no_cache']:.1f}x the no-cache decoder" if d.get("speedup_vs_no_cache") else "")
        + f"; outputs {verdict}",
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
    prompts: int = 100,
    max_new: int = 32,
    batch_size: int = 20,
    hf_batch_size: int = 20,
    repeats: int = 1,
    no_cache: bool = False,
    math_rows: int = 100,
    squad_rows: int = 100,
    out: Path = BENCHMARKS_FILE,
    command: Optional[str] = None,
) -> dict:
    """Run both measurements, append the section to `out`, return the figures."""
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    info = machine()
    decoder = decoder_comparison(prompts, max_new, batch_size, hf_batch_size, repeats, no_cache)
    print(
        f"decoder: best wall s {decoder['best_wall']}, tunebox x{decoder['speedup_vs_hf']} of transformers' "
        f"generate, identical={decoder['identical']}",
        flush=True,
    )
    job = None
    if math_rows > 0:
        with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
            job = evaluate_job_timing(math_rows, squad_rows, Path(tmp))
        print(f"evaluate (its own batch, eval.batch_size = {job['batch_size']}): {job}", flush=True)
    command = command or ("python -m benches.bench_eval " + shlex.join(sys.argv[1:])).strip()
    append_section(render_section(command, info, decoder, job, started), out)
    return {"machine": info, "decoder": decoder, "evaluate": job}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.bench_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=100, help="contest prompts for the decoder comparison")
    parser.add_argument(
        "--max-new",
        type=int,
        default=32,
        help="new tokens per prompt in that comparison (default "
        "32: the evaluate job caps math answers at 14-64 per family, 40 on average)",
    )
    parser.add_argument("--batch-size", type=int, default=20, help="tunebox's batch (greedy_generate)")
    parser.add_argument("--hf-batch-size", type=int, default=20, help="transformers generate's batch")
    parser.add_argument("--repeats", type=int, default=1, help="decoder runs per side, alternating the order")
    parser.add_argument("--no-cache", action="store_true", help="also time generate_no_cache (slow)")
    parser.add_argument(
        "--math-rows", type=int, default=100, help="held-out math rows for the evaluate timing (0: skip that timing)"
    )
    parser.add_argument("--squad-rows", type=int, default=100, help="SQuAD questions for the evaluate timing")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_FILE, help="the markdown file to append to")
    args = parser.parse_args(argv)
    figures = bench_eval(
        args.prompts,
        args.max_new,
        args.batch_size,
        args.hf_batch_size,
        args.repeats,
        args.no_cache,
        args.math_rows,
        args.squad_rows,
        args.out,
    )
    return 0 if figures["decoder"]["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
