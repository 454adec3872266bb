"""bench_train: tunebox's train job against the tool a user would otherwise pick (PyTorch +
Hugging Face transformers + PEFT on CPU), same model, same LoRA, same batches; appended to
docs/BENCHMARKS.md.

    python -m benches.bench_train [--config recipes/local-smollm2.yaml] [--steps 12] [--repeats 1] [--threads 2,1]

One invocation:
  1. prep: the recipe's real data into a temporary runs dir (`python -m jobs.prep`);
  2. this CPU's FP32 matmul peak: numpy and torch sgemm on n x n (n = 2048, 3072, 4096), best of 5,
     measured before and again after the sides (the better counts: other work lowers it);
  3. (a) tunebox: `python -m jobs.train --set train.max_steps=STEPS+1 --set train.shuffle=false
     --set train.packing=false` as a subprocess (MindFormers' Trainer; unpacked whatever the recipe says,
     checked in its summary.json); seconds per step from its loss.jsonl, tokens per step counted
     from the rows it read (unshuffled: step i reads prep's rows i*B .. i*B+B-1); the first step
     (graph compile + one step) is reported on its own and left out of the throughput;
     (b) the reference: `python -m benches.bench_ref_torch` as a subprocess, on those same rows, with
     MindFormers' learning rate schedule (CosineWithWarmUpLR, mindformers_lr below; checked against
     the lr the train job logged), weight decay and gradient clipping; its first step is left out the
     same way. It runs
     once per --threads value (default 2 and 1: torch's OpenMP threads spin-wait on each other when
     other work holds the cores, so on a shared machine one thread can beat two); the ratios use the
     faster.
     Peak RSS of each side is the kernel's high-water mark of the child (wait4's ru_maxrss), checked
     against psutil polling every 0.2 s (child and its children summed).
     With --repeats R the two sides alternate (a b, b a, ...) so drifting machine load hits both.
     (c) with --packed SEQxBATCH (default 256x4: as many computed positions per step as the local
     recipe's 128 x 8), tunebox again with train.packing on, its own prep at that seq_length: the same
     samples, several to a row (tunebox/data/packing.py), so fewer positions are padding. Its batches
     differ from the reference's by design; its tokens/s counts the same kind of token (non-pad ids
     of the training data), so it answers "how fast does each tool get through this data".
  4. `uptime` before and after, load averages around each side, a markdown section with the command,
     machine, date, figures and ratios, appended to docs/BENCHMARKS.md (unless --no-append).

FLOPs per optimizer step (what "fraction of peak" divides), T = batch x seq_length computed
positions (padding included: both sides compute them), S = seq_length, h = hidden size, L = layers:
    forward   2 P T                 P = weights of every matmul a token goes through
                                      (L (2h^2 + 2h kv + 3h f) + V h for the LM head; the embedding
                                      lookup is a gather, 0 FLOPs)
              + 4 L T S h           attention scores Q K^T and the weighted sum A V, full S x S
                                      (neither side skips the masked half)
    backward  2 P T                 activation gradients only: the base weights are frozen, so no
                                      weight gradients (which would be another 2 P T)
              + 8 L T S h           attention: 4 matmuls of the forward's size
    LoRA      6 R T                 R = LoRA parameters, r (in + out) per adapted projection:
                                      forward 2 R T, activation gradient 2 R T, weight gradient 2 R T
Norms, softmax, rotary, SiLU and the loss are elementwise: left out (a few percent at most).

Exit codes: 0 ok, 2 bad input (recipe, missing torch/peft), 1 failure (a side crashed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from tunebox.cli import job_command
from tunebox.config import REPO_ROOT, RunSpec, load_spec
from tunebox.data.samples import read_mindrecord
from tunebox.io import InputError, atomic_write_json, atomic_write_text
from tunebox.manifest import cpu_info
from tunebox.model.checkpoint import load_checkpoint_numpy
from tunebox.model.registry import ModelShape, get_model_shape, lora_targets
from tunebox.model.weights import load_tokenizer, mindformers_name_to_hf
from tunebox.run_checkpoints import base_checkpoint
from tunebox.training.plan import plan_steps

BENCHMARKS_FILE = REPO_ROOT / "docs" / "BENCHMARKS.md"
DEFAULT_RECIPE = "recipes/local-smollm2.yaml"
PEAK_SIZES = (2048, 3072, 4096)
GOAL_SPEEDUP = 1.3  # the goal: tunebox >= 1.3x the reference tokens/s, at no more memory
# Before any update both sides run the base model on the same batches in float32: their step-1 losses
# agree to about 1e-5 (tests/test_loss_parity.py). A larger gap means they did not do the same work.
LOSS_TOLERANCE = 1e-4


# ---- pure parts: FLOPs, tokens, throughput ------------------------------------------------


def step_flops(shape: ModelShape, batch: int, seq_length: int, lora_rank: int, target_modules: str) -> dict:
    """FLOPs of one LoRA training step (forward + backward, frozen base), by the formula in the
    module docstring; returns the parts and the total."""
    h, kv, f, L = shape.hidden_size, shape.kv_dim, shape.intermediate_size, shape.num_layers
    T, S = batch * seq_length, seq_length
    matmul_params = L * (2 * h * h + 2 * h * kv + 3 * h * f) + shape.vocab_size * h
    lora_params = shape.lora_params(lora_rank, target_modules)
    parts = {
        "forward_matmul": 2 * matmul_params * T,
        "forward_attention": 4 * L * T * S * h,
        "backward_matmul": 2 * matmul_params * T,
        "backward_attention": 8 * L * T * S * h,
        "lora": 6 * lora_params * T,
    }
    return {
        "matmul_params": matmul_params,
        "lora_params": lora_params,
        "tokens_computed": T,
        **parts,
        "total": sum(parts.values()),
    }


def count_tokens(ids: np.ndarray, pad_id: int) -> int:
    """Tokens of one step as train.py counts them: non-pad ids over the whole (batch, seq + 1) rows."""
    return int((np.asarray(ids) != pad_id).sum())


def steady_throughput(steps: list[dict], skip: int = 1) -> dict:
    """Throughput over the steps after the first `skip` (warm-up: graph compile, allocator, caches)."""
    if len(steps) <= skip:
        raise ValueError(f"{len(steps)} steps measured; need more than the {skip} warm-up step(s)")
    steady = steps[skip:]
    tokens = sum(s["tokens"] for s in steady)
    seconds = sum(s["seconds"] for s in steady)
    return {
        "steps": len(steady),
        "tokens": tokens,
        "seconds": round(seconds, 4),
        "tokens_per_s": tokens / seconds,
        "seconds_per_step": seconds / len(steady),
        "first_step_seconds": sum(s["seconds"] for s in steps[:skip]),
        "first_loss": steps[0]["loss"],
        "last_loss": steps[-1]["loss"],
    }


def step_rows(step: int, batch: int) -> np.ndarray:
    """The rows MindFormers' unshuffled MindDataset feeds step `step` (0-based, within the first epoch)."""
    return np.arange(step * batch, (step + 1) * batch)


def mindformers_lr(step: int, total: int, warmup: int, lr: float, lr_end: float) -> float:
    """MindFormers' CosineWithWarmUpLR (core/lr/lr_schedule.py) at global step `step` (0-based), as
    the train job's rendered config sets it up (warmup_steps, lr_end, total_steps, num_cycles 0.5)."""
    if step >= total:
        return lr_end
    if warmup and step < warmup:
        return lr * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr_end + (lr - lr_end) * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


# ---- measuring -----------------------------------------------------------------------------


def numpy_matmul_peak(sizes=PEAK_SIZES, repeats: int = 5) -> dict:
    """Best FP32 GFLOP/s of numpy's BLAS on n x n matrices (2 n^3 FLOPs each)."""
    rng = np.random.default_rng(0)
    best = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        best[n] = 2 * n**3 / min(times) / 1e9
    return {"gflops_by_size": {str(k): round(v, 2) for k, v in best.items()}, "gflops": round(max(best.values()), 2)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in load_average())


def run_measured(cmd: list[str], log_path: Path, poll_s: float = 0.2, env: Optional[dict] = None) -> dict:
    """Run cmd (output to log_path), measuring wall time and peak memory: the child's own
    high-water mark (wait4 ru_maxrss) and psutil's polled RSS of the child plus its children."""
    import psutil

    started = time.perf_counter()
    load_before = load_average()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        polled = [0]
        done = threading.Event()

        def poll():
            try:
                root = psutil.Process(proc.pid)
            except psutil.NoSuchProcess:
                return
            while not done.is_set():
                try:
                    rss = root.memory_info().rss
                    for child in root.children(recursive=True):
                        try:
                            rss += child.memory_info().rss
                        except psutil.NoSuchProcess:
                            pass
                except psutil.NoSuchProcess:
                    return
                polled[0] = max(polled[0], rss)
                done.wait(poll_s)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "polled_peak_rss_bytes": polled[0],
        "load_before": load_before,
        "load_after": load_average(),
        "log": str(log_path),
    }


def _check_ran(result: dict, what: str) -> None:
    if result["returncode"] != 0:
        tail = Path(result["log"]).read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(
            f"{what} exited with {result['returncode']}; last lines of {result['log']}:\n" + "\n".join(tail)
        )


# ---- the two sides -------------------------------------------------------------------------


def bench_overrides(spec: RunSpec, runs_dir: Path, total_steps: int) -> list[str]:
    """--set overrides for prep/train: a private runs dir and a short run on prep's rows in order, unpacked:
    the rows the reference gets. train.packing is turned off whatever the recipe says (local-smollm2 packs):
    a packing train job reads packed rows, several samples each, so its batches, loss and tokens would not be
    the reference's (the packed side turns it back on). The train job wants at least num_checkpoints steps;
    checkpoint writing is outside its timed step either way."""
    sets = [f"runs_dir={runs_dir}", f"train.max_steps={total_steps}", "train.shuffle=false", "train.packing=false"]
    if spec.train.num_checkpoints > total_steps:
        sets.append(f"train.num_checkpoints={total_steps}")
    return sets


def export_reference_inputs(
    work: Path,
    spec: RunSpec,
    mspec: ModelShape,
    ids: np.ndarray,
    labels: np.ndarray,
    total_steps: int,
    pad_id: int,
    base_ckpt: Path,
) -> list[str]:
    """Write what bench_ref_torch reads (see its docstring); returns the tokens of each step."""
    from safetensors.numpy import save_file

    plan = plan_steps(len(ids), spec.train)
    if total_steps > plan["batches_per_epoch"]:
        raise InputError(
            f"--steps {total_steps} is more than one epoch of the recipe's data ({plan['batches_per_epoch']} steps)",
            spec.source_path,
        )
    rows = [step_rows(step, spec.train.batch_size) for step in range(total_steps)]
    lrs = [
        mindformers_lr(
            step, plan["total_steps"], plan["warmup_steps"], spec.train.lr, spec.train.lr * spec.train.min_lr_ratio
        )
        for step in range(total_steps)
    ]
    work.mkdir(parents=True, exist_ok=True)
    np.savez(
        work / "batches.npz",
        ids=np.stack([ids[r] for r in rows]),
        labels=np.stack([labels[r] for r in rows]),
        lr=np.asarray(lrs, dtype=np.float64),
    )
    arrays = load_checkpoint_numpy(base_ckpt)
    save_file(
        {mindformers_name_to_hf(k): np.ascontiguousarray(v) for k, v in arrays.items()},
        str(work / "weights.safetensors"),
    )
    del arrays
    atomic_write_json(work / "model.json", mspec.to_dict())
    atomic_write_json(
        work / "plan.json",
        {
            "lora_rank": spec.lora.rank,
            "lora_alpha": spec.lora.alpha,
            "lora_dropout": spec.lora.dropout,
            "lora_targets": sorted(lora_targets(spec.lora.target_modules)),
            "expected_trainable": mspec.lora_params(spec.lora.rank, spec.lora.target_modules),
            "weight_decay": spec.train.weight_decay,
            "max_grad_norm": spec.train.max_grad_norm,
            "pad_id": pad_id,
            "seed": spec.train.seed,
        },
    )
    return [count_tokens(ids[r], pad_id) for r in rows], lrs


def run_tunebox(
    recipe: str, overrides: list[str], spec: RunSpec, log_path: Path, tokens: Optional[list[int]] = None
) -> dict:
    """The train job as a subprocess; `tokens`: each step's token count (the rows it reads, unshuffled);
    None for the packed side, whose rows are counted from its packed data."""
    shutil.rmtree(spec.job_dir("train"), ignore_errors=True)  # a fresh run, never a resume
    measured = run_measured(job_command("train", recipe, overrides), log_path)
    _check_ran(measured, "the tunebox train job")
    loss_file = spec.job_dir("train") / "loss.jsonl"
    steps = [json.loads(line) for line in loss_file.read_text().splitlines() if line.strip()]
    packed = json.loads((spec.job_dir("train") / "summary.json").read_text()).get("packing") is not None
    if packed != (tokens is None):
        raise RuntimeError(
            f"the train job {'packed' if packed else 'did not pack'} its rows, but this side "
            f"{'is the padded one' if tokens is not None else 'is the packed one'} "
            f"({spec.job_dir('train') / 'summary.json'}); check bench_overrides"
        )
    if tokens is None:
        pad_id = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer)).pad_id
        ids, _ = read_mindrecord(spec.job_dir("train") / "packed.mindrecord")
        tokens = [count_tokens(ids[step_rows(i, spec.train.batch_size)], pad_id) for i in range(len(steps))]
    for step, n in zip(steps, tokens):
        step["tokens"] = n
    return {"measured": measured, "steps": steps, "steady": steady_throughput(steps)}


def run_reference(work: Path, threads: int, log_path: Path) -> dict:
    cmd = [sys.executable, "-m", "benches.bench_ref_torch", "--work", str(work), "--threads", str(threads)]
    (work / "result.json").unlink(missing_ok=True)
    measured = run_measured(cmd, log_path)
    _check_ran(measured, "the PyTorch reference")
    result = json.loads((work / "result.json").read_text())
    return {
        "measured": measured,
        "steps": result["steps"],
        "steady": steady_throughput(result["steps"]),
        "info": {k: v for k, v in result.items() if k != "steps"},
    }


def torch_matmul_peak(threads: int, sizes) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benches.bench_ref_torch",
        "--matmul-peak",
        "--threads",
        str(threads),
        "--peak-sizes",
        ",".join(map(str, sizes)),
    ]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"torch matmul peak failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_peak(threads: int, sizes) -> dict:
    print("FP32 matmul peak (numpy, torch)...", flush=True)
    peak = {"numpy": numpy_matmul_peak(sizes), "torch": torch_matmul_peak(threads, sizes)}
    print(f"  numpy {peak['numpy']['gflops']} GFLOP/s, torch {peak['torch']['gflops']} GFLOP/s", flush=True)
    return peak


def _combine(runs: list[dict]) -> dict:
    """One side's figures over all repeats: measured steps pooled, worst peak memory."""
    tokens = sum(r["steady"]["tokens"] for r in runs)
    seconds = sum(r["steady"]["seconds"] for r in runs)
    steps = sum(r["steady"]["steps"] for r in runs)
    return {
        "tokens_per_s": tokens / seconds,
        "seconds_per_step": seconds / steps,
        "measured_steps": steps,
        "tokens_per_step": tokens / steps,
        "tokens_per_s_each": [round(r["steady"]["tokens_per_s"], 2) for r in runs],
        "first_step_seconds": [round(r["steady"]["first_step_seconds"], 2) for r in runs],
        "first_loss": runs[0]["steady"]["first_loss"],
        "last_loss": runs[0]["steady"]["last_loss"],
        "peak_rss_bytes": max(r["measured"]["peak_rss_bytes"] for r in runs),
        "polled_peak_rss_bytes": max(r["measured"]["polled_peak_rss_bytes"] for r in runs),
        "load_during": [r["measured"]["load_after"][0] for r in runs],
    }


def summarize(
    tunebox: dict,
    references: dict[int, dict],
    flops: dict,
    peak: dict,
    packed: Optional[dict] = None,
    packed_flops: Optional[dict] = None,
) -> dict:
    """Both sides against the FLOP model and the CPU's peak. The reference may have run with several
    thread counts; the ratios use the fastest one (the reference as well tuned as it gets here)."""
    peak_gflops = max(peak["numpy"]["gflops"], peak.get("torch", {}).get("gflops", 0.0))
    sides = {}
    for name, side in [("tunebox", tunebox)] + [(f"reference-{n}t", ref) for n, ref in references.items()]:
        achieved = flops["total"] / side["seconds_per_step"] / 1e9
        sides[name] = dict(side, achieved_gflops=round(achieved, 2), fraction_of_peak=achieved / peak_gflops)
    best_threads = max(references, key=lambda n: references[n]["tokens_per_s"])
    best = references[best_threads]
    extra = {}
    if packed is not None:
        achieved = packed_flops["total"] / packed["seconds_per_step"] / 1e9
        sides["tunebox-packed"] = dict(
            packed, achieved_gflops=round(achieved, 2), fraction_of_peak=achieved / peak_gflops
        )
        extra = {
            "packed_speedup": packed["tokens_per_s"] / best["tokens_per_s"],
            "packed_memory_ratio": packed["peak_rss_bytes"] / best["peak_rss_bytes"],
        }
    return {
        **extra,
        "sides": sides,
        "peak_gflops": peak_gflops,
        "best_reference": f"reference-{best_threads}t",
        "speedup": tunebox["tokens_per_s"] / best["tokens_per_s"],
        "speedup_by_threads": {str(n): tunebox["tokens_per_s"] / ref["tokens_per_s"] for n, ref in references.items()},
        "memory_ratio": tunebox["peak_rss_bytes"] / best["peak_rss_bytes"],
        "first_loss_difference": abs(tunebox["first_loss"] - best["first_loss"]),
    }


# ---- the report ----------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def render_section(r: dict) -> str:
    """The markdown section appended to docs/BENCHMARKS.md, from bench_train's result dict."""
    s, w, v, f = r["summary"], r["workload"], r["versions"], r["flops"]
    refs = sorted((k for k in s["sides"] if k.startswith("reference-")), key=lambda k: -int(k[10:-1]))
    names = ["tunebox"] + (["tunebox-packed"] if "tunebox-packed" in s["sides"] else []) + refs
    sides = [s["sides"][k] for k in names]
    t = s["sides"]["tunebox"]

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(x) for x in sides) + " |"

    header = (
        f"| | tunebox (MindFormers {v['mindformers']} Trainer, MindSpore {v['mindspore']}, GRAPH mode) | "
        + (
            ""
            if "tunebox-packed" not in names
            else f"tunebox, packed ({w['packed']['seq_length']} x {w['packed']['batch']}, train.packing) | "
        )
        + " | ".join(f"reference, {k[10:-1]} thread{'s' if k[10:-1] != '1' else ''}" for k in refs)
        + " |"
    )
    # The 1-minute load includes the benchmark's own threads (about the core count while a side runs),
    # so only load clearly above that means other work shared the cores.
    busy = max(r["load_seen"]) > r["machine"]["cores"] + 0.5
    packed_lines = (
        []
        if "packed_speedup" not in s
        else [
            f"- **Packed: tunebox with train.packing at {w['packed']['seq_length']} x {w['packed']['batch']} gets "
            f"through the same data at {s['packed_speedup']:.2f}x the reference's tokens/s** (goal >= {GOAL_SPEEDUP}x: "
            f"{'met' if s['packed_speedup'] >= GOAL_SPEEDUP else 'not met'}), peak RSS {s['packed_memory_ratio']:.2f}x "
            f"the reference's. Packing filled rows {w['packed']['fill_before']:.0%} -> {w['packed']['fill_after']:.0%} "
            f"({w['packed']['samples']:,} samples in {w['packed']['rows']:,} rows); a packed step computes "
            f"{w['packed']['flops'] / 1e9:.1f} GFLOP by the formula below, and its batches are its own (not the "
            "reference's), so its first-step loss differs."
        ]
    )
    lines = [
        f"## bench.train: tunebox vs PyTorch + PEFT, LoRA training on CPU ({r.get('started', r['date'])})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['memory_gib']} GiB. "
        f"`uptime` before: `{r['uptime_before']}`; after: `{r['uptime_after']}`."
        + (
            " The machine was shared with other work while measuring (load above the core count): the "
            "figures are pessimistic, for the reference's multi-threaded runs most of all (its OpenMP threads "
            "wait on each other when the cores are taken)."
            if busy
            else f" Load averages seen during the run: {', '.join(f'{x:.2f}' for x in r['load_seen'])} (the "
            "benchmark's own threads included): no other work shared the cores."
        ),
        "",
        f"Workload: {w['model']}, LoRA r={w['lora_rank']} alpha={w['lora_alpha']} dropout {w['lora_dropout']} on "
        f"{w['targets']}, batch {w['batch']} x {w['seq_length']} tokens (+1 for the shifted labels), the same "
        f"{w['total_steps']} batches of `{w['data']}` on both sides (prep's rows in order, unshuffled), AdamW with "
        f"MindFormers' CosineWithWarmUpLR as the train job logged it; tunebox runs MindFormers' Trainer; {w['steps']} "
        f"measured steps after 1 warm-up step, {w['repeats']} repeat(s)"
        + (" alternating the order" if w["repeats"] > 1 else "")
        + ". Reference: torch "
        f"{v['torch']}, transformers {v['transformers']} (attention: {v['attn_implementation']}), peft {v['peft']}, "
        "eager, float32.",
        "",
        header,
        "|---" * (len(names) + 1) + "|",
        row("tokens/s (steady)", lambda x: f"{x['tokens_per_s']:.1f}"),
        row("seconds per step", lambda x: f"{x['seconds_per_step']:.2f}"),
        row("first step, s (tunebox: graph compile + 1 step)", lambda x: ", ".join(map(str, x["first_step_seconds"]))),
        row("peak RSS (child's high-water mark)", lambda x: _gib(x["peak_rss_bytes"])),
        row("achieved GFLOP/s", lambda x: f"{x['achieved_gflops']:.1f}"),
        row("fraction of FP32 matmul peak", lambda x: f"{x['fraction_of_peak']:.1%}"),
        row(f"loss at step 1 / step {w['total_steps']}", lambda x: f"{x['first_loss']:.4f} / {x['last_loss']:.4f}"),
        row("load average (1 min) after the run", lambda x: ", ".join(map(str, x["load_during"]))),
        "",
        f"- **tokens/s ratio tunebox / reference: {s['speedup']:.2f}x** against the faster reference "
        f"({s['best_reference'][10:-1]} thread(s)); goal >= {GOAL_SPEEDUP}x: "
        f"{'met' if s['speedup'] >= GOAL_SPEEDUP else 'not met'}"
        + (
            ""
            if len(s["speedup_by_threads"]) < 2
            else " (by thread count: "
            + ", ".join(f"{n}: {x:.2f}x" for n, x in sorted(s["speedup_by_threads"].items(), reverse=True))
            + ")"
        )
        + ".",
        f"- **peak RSS ratio tunebox / reference: {s['memory_ratio']:.2f}x**; goal <= 1: "
        f"{'met' if s['memory_ratio'] <= 1.0 else 'not met'}.",
        *packed_lines,
        f"- Loss at step 1 (before any update: LoRA's B starts at zero, so both sides run the base model): "
        f"tunebox {t['first_loss']:.4f}, reference {s['sides'][s['best_reference']]['first_loss']:.4f} "
        f"(difference {s['first_loss_difference']:.1e}"
        + (
            f", within {LOSS_TOLERANCE:.0e}). "
            if s["first_loss_difference"] <= LOSS_TOLERANCE
            else f"). **More than {LOSS_TOLERANCE:.0e} apart: the two sides did not compute the same batches, so the "
            "ratios above are not like for like.** "
        )
        + "Later losses differ by the LoRA initialisation and dropout draws of each framework.",
        f"- FP32 matmul peak of this CPU: {s['peak_gflops']:.1f} GFLOP/s (numpy {r['peak']['numpy']['gflops']}, "
        f"torch {r['peak'].get('torch', {}).get('gflops', 'n/a')}; n x n sgemm, n = "
        f"{', '.join(r['peak']['numpy']['gflops_by_size'])}, best of 5, before and after the runs)"
        + (
            ". A fraction above 100% means other work held the cores while the peak was measured: read the "
            "fractions as relative to each other only."
            if max(x["fraction_of_peak"] for x in sides) > 1
            else ""
        )
        + ".",
        f"- FLOPs per step: 4 P T + 12 L T S h + 6 R T = {f['total'] / 1e9:.1f} GFLOP (P = {f['matmul_params']:,} "
        f"matmul weights incl. the LM head, T = {f['tokens_computed']} computed positions, R = {f['lora_params']:,} "
        f"LoRA parameters; see benches/bench_train.py). Tokens are counted as the train job counts them: "
        f"non-pad ids, {t['tokens_per_step']:.0f} per step on average.",
        "",
    ]
    return "\n".join(lines) + "\n"


def append_section(text: str, path: Path = BENCHMARKS_FILE) -> None:
    existing = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    atomic_write_text(path, existing.rstrip("\n") + "\n\n" + text)


# ---- the benchmark -------------------------------------------------------------------------


def bench_train(
    recipe: str = DEFAULT_RECIPE,
    steps: int = 12,
    repeats: int = 1,
    threads=(2, 1),
    peak_sizes=PEAK_SIZES,
    out: Optional[Path] = BENCHMARKS_FILE,
    keep: Optional[Path] = None,
    command: Optional[str] = None,
    packed: Optional[tuple[int, int]] = (256, 4),
) -> dict:
    from importlib import metadata

    try:
        import peft  # noqa: F401  (the reference needs them; fail before minutes of work)
        import psutil  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise InputError(f"bench.train needs the bench extra: pip install -e '.[bench]' ({exc})") from None
    if steps < 1 or repeats < 1 or not threads or min(threads) < 1:
        raise InputError("--steps, --repeats and every --threads value must be at least 1")
    total_steps = steps + 1  # + 1 warm-up step (graph compile on the tunebox side)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    runs_dir = work / "runs"
    base_spec = load_spec(recipe)
    overrides = bench_overrides(base_spec, runs_dir, total_steps)
    spec = load_spec(recipe, overrides)
    if spec.train.grad_accum != 1 or spec.train.workers != 1:
        raise InputError(
            "bench.train compares single-process steps of one micro-batch: the recipe needs "
            "train.grad_accum 1 and train.workers 1",
            spec.source_path,
        )
    mspec = get_model_shape(spec.model.name)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    uptime_before = uptime_line()
    print(f"uptime before: {uptime_before}", flush=True)
    loads = [load_average()[0]]
    try:
        print("prep: the recipe's data into", runs_dir, flush=True)
        prep = run_measured(job_command("prep", recipe, overrides), work / "prep.log")
        _check_ran(prep, "prep")

        ids, labels = read_mindrecord(spec.job_dir("prep") / "train.mindrecord")
        pad_id = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer)).pad_id
        base_ckpt = base_checkpoint(spec)
        ref_dir = work / "reference"
        expected_tokens, expected_lrs = export_reference_inputs(
            ref_dir, spec, mspec, ids, labels, total_steps, pad_id, base_ckpt
        )
        del ids, labels

        peaks = [measure_peak(max(threads), peak_sizes)]

        packed_spec = packed_overrides = None
        if packed:
            seq, batch = packed
            packed_overrides = overrides + [
                "run_id=packed",
                f"data.seq_length={seq}",
                f"train.batch_size={batch}",
                "train.packing=true",
            ]
            packed_spec = load_spec(recipe, packed_overrides)
            print(f"prep: the recipe's data at seq_length {seq} for the packed side", flush=True)
            _check_ran(run_measured(job_command("prep", recipe, packed_overrides), work / "prep-packed.log"), "prep")

        tunebox_runs, reference_runs, packed_runs = [], {n: [] for n in threads}, []
        sides = (
            ["tunebox"] + (["tunebox, packed"] if packed else []) + [f"reference with {n} thread(s)" for n in threads]
        )
        for rep in range(repeats):
            for side in sides if rep % 2 == 0 else sides[::-1]:  # alternate, so drifting load hits all sides
                print(f"[{rep + 1}/{repeats}] {side}: {total_steps} steps...", flush=True)
                if side == "tunebox":
                    run = run_tunebox(recipe, overrides, spec, work / f"tunebox-{rep}.log", expected_tokens)
                    logged = [s["lr"] for s in run["steps"]]
                    if not np.allclose(logged, expected_lrs, rtol=1e-5, atol=1e-12):
                        raise RuntimeError(
                            "the train job's learning rates differ from the ones the reference was "
                            f"given ({logged[:3]} vs {expected_lrs[:3]}); mindformers_lr is out of date"
                        )
                    tunebox_runs.append(run)
                elif side == "tunebox, packed":
                    run = run_tunebox(recipe, packed_overrides, packed_spec, work / f"tunebox-packed-{rep}.log")
                    run["packing"] = json.loads((packed_spec.job_dir("train") / "summary.json").read_text())["packing"]
                    packed_runs.append(run)
                else:
                    n = int(side.split()[2])
                    run = run_reference(ref_dir, n, work / f"reference-{n}t-{rep}.log")
                    reference_runs[n].append(run)
                st = run["steady"]
                loads.append(run["measured"]["load_after"][0])
                print(
                    f"  {st['tokens_per_s']:.1f} tokens/s, {st['seconds_per_step']:.2f} s/step, first step "
                    f"{st['first_step_seconds']:.1f} s, peak RSS {_gib(run['measured']['peak_rss_bytes'])}, "
                    f"loss {st['first_loss']:.4f} -> {st['last_loss']:.4f}",
                    flush=True,
                )
        peaks.append(measure_peak(max(threads), peak_sizes))  # again: other work may have held the cores before
        peak = {lib: max((p[lib] for p in peaks), key=lambda x: x["gflops"]) for lib in ("numpy", "torch")}
        for r_run in (r for runs in reference_runs.values() for r in runs):
            if [s["tokens"] for s in tunebox_runs[0]["steps"]] != [s["tokens"] for s in r_run["steps"]]:
                raise RuntimeError("the two sides counted different tokens per step")
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    uptime_after = uptime_line()
    print(f"uptime after: {uptime_after}", flush=True)

    flops = step_flops(mspec, spec.train.batch_size, spec.data.seq_length, spec.lora.rank, spec.lora.target_modules)
    tunebox, references = _combine(tunebox_runs), {n: _combine(runs) for n, runs in reference_runs.items()}
    packed_info = packed_flops = packed_side = None
    if packed_runs:
        packed_flops = step_flops(
            mspec, packed_spec.train.batch_size, packed_spec.data.seq_length, spec.lora.rank, spec.lora.target_modules
        )
        packed_side = _combine(packed_runs)
        stats = packed_runs[0]["packing"]
        packed_info = {
            "seq_length": packed_spec.data.seq_length,
            "batch": packed_spec.train.batch_size,
            "flops": packed_flops["total"],
            **stats,
        }
    info = reference_runs[threads[0]][0]["info"]
    cpu = cpu_info()
    result = {
        "date": dt.date.today().isoformat(),
        "started": started,
        "command": command or f"python -m benches.bench_train --config {recipe} --steps {steps} --repeats {repeats}",
        "machine": {
            "cpu": cpu["model"],
            "cores": cpu["usable"] or cpu["count"],
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "load_seen": loads + [load_average()[0]],
        "workload": {
            "model": mspec.name,
            "lora_rank": spec.lora.rank,
            "lora_alpha": spec.lora.alpha,
            "lora_dropout": spec.lora.dropout,
            "targets": spec.lora.target_modules,
            "batch": spec.train.batch_size,
            "seq_length": spec.data.seq_length,
            "steps": steps,
            "total_steps": total_steps,
            "repeats": repeats,
            "data": os.path.relpath(spec.resolve(spec.data.train_file), REPO_ROOT),
            "packed": packed_info,
        },
        "versions": {
            "mindspore": metadata.version("mindspore"),
            "mindformers": metadata.version("mindformers"),
            "torch": info["torch"],
            "transformers": info["transformers"],
            "peft": info["peft"],
            "torch_threads": list(threads),
            "attn_implementation": info["attn_implementation"],
        },
        "flops": flops,
        "peak": peak,
        "summary": summarize(tunebox, references, flops, peak, packed_side, packed_flops),
        "runs": {
            "tunebox": [{k: r[k] for k in ("measured", "steps")} for r in tunebox_runs],
            "tunebox-packed": [{k: r[k] for k in ("measured", "steps")} for r in packed_runs],
            **{
                f"reference-{n}t": [{k: r[k] for k in ("measured", "steps")} for r in runs]
                for n, runs in reference_runs.items()
            },
        },
    }
    section = render_section(result)
    print("\n" + section)
    if out is not None:
        append_section(section, out)
        print(f"appended to {out}")
    if keep is not None:
        atomic_write_json(Path(keep) / "bench_train.json", result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.bench_train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="SPEC.yaml",
        default=DEFAULT_RECIPE,
        help="run spec both sides train (default: %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=12, help="measured steps per side, after 1 warm-up step")
    parser.add_argument("--repeats", type=int, default=1, help="run both sides this many times, alternating the order")
    parser.add_argument(
        "--threads",
        default="2,1",
        help="torch thread counts to run the reference with, each a run of its own; the ratios "
        "use the fastest (default: %(default)s: both cores, and one, which wins when other "
        "work keeps the cores busy)",
    )
    parser.add_argument(
        "--peak-sizes",
        default=",".join(map(str, PEAK_SIZES)),
        help="matrix sizes for the FP32 peak (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=BENCHMARKS_FILE, help="markdown file to append to")
    parser.add_argument("--no-append", action="store_true", help="print the section only")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, bench_train.json)")
    parser.add_argument(
        "--packed",
        default="256x4",
        metavar="SEQxBATCH",
        help="also run tunebox with train.packing at this shape (default: %(default)s); 'no' skips it",
    )
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m benches.bench_train " + " ".join(shlex.quote(a) for a in given)
    try:
        packed = None
        if args.packed != "no":
            try:
                seq, batch = (int(x) for x in args.packed.lower().split("x"))
            except ValueError:
                raise InputError(f"--packed {args.packed!r}: expected SEQxBATCH such as 256x4, or no") from None
            packed = (seq, batch)
        bench_train(
            args.config,
            args.steps,
            args.repeats,
            tuple(int(x) for x in args.threads.split(",")),
            tuple(int(x) for x in args.peak_sizes.split(",")),
            None if args.no_append else args.out,
            args.keep,
            command.strip(),
            packed,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"bench_train: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
