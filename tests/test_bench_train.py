"""bench.train: the FLOP formula, token counting, loss alignment and report of benches/bench_train.py,
and (slow) a whole tiny-model run of both sides when torch + peft are installed (the bench extra)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from benches.bench_ref_torch import IGNORE, masked_targets
from benches.bench_train import (
    GOAL_SPEEDUP,
    LOSS_TOLERANCE,
    bench_overrides,
    count_tokens,
    render_section,
    steady_throughput,
    step_flops,
    summarize,
)
from conftest import TINY_RECIPE, cannot_run, job_env
from tunebox.config import load_spec
from tunebox.model.registry import get_model_shape, with_overrides

# ---- FLOPs -----------------------------------------------------------------------------------


def test_matmul_weights_are_all_parameters_but_the_embedding_lookup_and_norms():
    # llama3-8b (untied): every parameter is a matmul weight except the embedding table (a gather)
    # and the norm vectors; the registry's total (8,030,261,248) counts them all.
    shape = get_model_shape("llama3-8b")
    norms = (2 * shape.num_layers + 1) * shape.hidden_size
    flops = step_flops(shape, batch=1, seq_length=1, lora_rank=8, target_modules="wq|wv")
    assert flops["matmul_params"] == shape.total_params() - shape.vocab_size * shape.hidden_size - norms
    # LoRA r=8 on wq|wv of llama3-8b: 3,407,872 trainable (README); 6 FLOPs per parameter per token.
    assert flops["lora_params"] == 3_407_872 and flops["lora"] == 6 * 3_407_872


def test_tied_head_still_costs_a_matmul_and_the_parts_add_up():
    shape = get_model_shape("smollm2-135m")  # tied: no lm_head.weight parameter, but the same matmul
    batch, seq = 8, 128
    flops = step_flops(shape, batch, seq, 8, "wq|wv")
    T = batch * seq
    per_token_forward = (
        sum(2 * o * i for o, i in shape.linear_shapes().values()) * shape.num_layers
        + 2 * shape.vocab_size * shape.hidden_size
    )
    assert flops["forward_matmul"] == per_token_forward * T
    assert flops["backward_matmul"] == flops["forward_matmul"]  # activation gradients only
    assert flops["backward_attention"] == 2 * flops["forward_attention"] == 8 * shape.num_layers * T * seq * 576
    assert flops["total"] == sum(
        flops[k] for k in ("forward_matmul", "forward_attention", "backward_matmul", "backward_attention", "lora")
    )
    # Doubling the layers doubles everything but the head.
    twice = step_flops(with_overrides(shape, num_layers=60), batch, seq, 8, "wq|wv")
    head = 4 * shape.vocab_size * shape.hidden_size * T
    assert twice["total"] - head == 2 * (flops["total"] - head)


# ---- tokens and alignment ---------------------------------------------------------------------


def _rows():
    """Two (seq_length + 1)-wide rows as prep writes them: prompt, answer, end token, pad (id 0)."""
    ids = np.array([[1, 11, 12, 13, 21, 22, 2, 0, 0], [1, 14, 15, 23, 24, 25, 26, 27, 2]], dtype=np.int32)
    labels = np.full_like(ids, IGNORE)
    labels[0, 4:7] = ids[0, 4:7]
    labels[1, 3:9] = ids[1, 3:9]
    return ids, labels


def test_tokens_are_the_non_pad_ids_of_the_whole_rows():
    ids, _ = _rows()
    assert count_tokens(ids, pad_id=0) == 7 + 9
    assert count_tokens(ids, pad_id=2) == 18 - 2  # the pad id is whatever the tokenizer says


def test_reference_targets_match_mindformers_loss_mask():
    ids, labels = _rows()
    targets = masked_targets(ids, labels, pad_id=0)
    assert targets.shape == (2, 8)  # the logits of ids[:, :-1]
    # MindFormers: input_mask = (tokens != pad) * (labels[:, 1:] != -100), tokens = ids[:, :-1]
    mindformers_mask = (ids[:, :-1] != 0) & (labels[:, 1:] != IGNORE)
    np.testing.assert_array_equal(targets != IGNORE, mindformers_mask)
    np.testing.assert_array_equal(targets[mindformers_mask], labels[:, 1:][mindformers_mask])
    # Position 3 of row 0 (token 13) predicts the first answer token 21.
    assert targets[0, 3] == 21 and targets[0, 2] == IGNORE


def test_padded_side_reads_prep_rows_even_when_the_recipe_packs(tmp_path):
    # local-smollm2 sets train.packing; the padded side must train on the rows the reference gets (issue 28:
    # step-1 loss 1.4111 packed vs 1.3452). Mutant: bench_overrides without train.packing=false -> fails.
    packs = ["train.packing=true"]
    overrides = packs + bench_overrides(load_spec(TINY_RECIPE, packs), tmp_path / "runs", 13)
    spec = load_spec(TINY_RECIPE, overrides)
    assert not spec.train.packing and not spec.train.shuffle and spec.train.max_steps == 13
    assert load_spec(TINY_RECIPE, overrides + ["train.packing=true"]).train.packing  # the packed side's


def test_steady_throughput_leaves_out_the_warm_up_step():
    steps = [
        {"loss": 3.0, "tokens": 100, "seconds": 30.0},
        {"loss": 2.5, "tokens": 200, "seconds": 2.0},
        {"loss": 2.0, "tokens": 100, "seconds": 1.0},
    ]
    st = steady_throughput(steps)
    assert st["tokens_per_s"] == pytest.approx(100.0) and st["steps"] == 2
    assert st["first_step_seconds"] == 30.0 and st["first_loss"] == 3.0 and st["last_loss"] == 2.0
    with pytest.raises(ValueError, match="warm-up"):
        steady_throughput(steps[:1])


# ---- the report ------------------------------------------------------------------------------


def _side(tokens_per_s, rss_gib, first_loss):
    return {
        "tokens_per_s": tokens_per_s,
        "seconds_per_step": 600 / tokens_per_s,
        "measured_steps": 12,
        "tokens_per_step": 600.0,
        "tokens_per_s_each": [tokens_per_s],
        "first_step_seconds": [40.0],
        "first_loss": first_loss,
        "last_loss": first_loss - 0.5,
        "peak_rss_bytes": rss_gib * 2**30,
        "polled_peak_rss_bytes": rss_gib * 2**30,
        "load_during": [1.5],
    }


def _result(tunebox, references, load):
    shape = get_model_shape("smollm2-135m")
    flops = step_flops(shape, 8, 128, 8, "wq|wv")
    peak = {"numpy": {"gflops": 100.0, "gflops_by_size": {"2048": 95.0, "4096": 100.0}}, "torch": {"gflops": 120.0}}
    return {
        "date": "2026-01-01",
        "command": "python -m benches.bench_train --steps 12",
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 24.0},
        "uptime_before": "load average: 1.00",
        "uptime_after": "load average: 1.00",
        "load_seen": load,
        "workload": {
            "model": "smollm2-135m",
            "lora_rank": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.05,
            "targets": "wq|wv",
            "batch": 8,
            "seq_length": 128,
            "steps": 12,
            "total_steps": 13,
            "repeats": 1,
            "data": "../shared/data/math/contest-sample.jsonl",
        },
        "versions": {
            "mindspore": "2.9.0",
            "mindformers": "1.9.0",
            "torch": "2.13.0",
            "transformers": "4.57.1",
            "peft": "0.21.2",
            "torch_threads": list(references),
            "attn_implementation": "sdpa",
        },
        "flops": flops,
        "peak": peak,
        "summary": summarize(tunebox, references, flops, peak),
    }


def test_report_gives_both_ratios_against_the_goals():
    section = render_section(_result(_side(200.0, 3.0, 1.25), {2: _side(100.0, 4.0, 1.25002)}, [1.0, 1.2]))
    assert (
        "**tokens/s ratio tunebox / reference: 2.00x** against the faster reference (2 thread(s)); "
        "goal >= 1.3x: met." in section
    )
    assert "**peak RSS ratio tunebox / reference: 0.75x**; goal <= 1: met." in section
    assert "| tokens/s (steady) | 200.0 | 100.0 |" in section and "reference, 2 threads |" in section
    assert "| peak RSS (child's high-water mark) | 3.00 GiB | 4.00 GiB |" in section
    assert "shared with other work" not in section  # load stayed under the 2 cores
    assert "tunebox 1.2500, reference 1.2500 (difference 2.0e-05, within 1e-04)." in section
    # Achieved FLOP/s = FLOPs per step / seconds per step, against the better of numpy and torch.
    s = _result(_side(200.0, 3.0, 1.25), {2: _side(100.0, 4.0, 1.2501)}, [1.0])["summary"]["sides"]["tunebox"]
    assert s["fraction_of_peak"] == pytest.approx(s["achieved_gflops"] / 120.0, rel=1e-3)


def test_report_says_when_goals_are_missed_and_the_machine_was_busy():
    # Two thread counts: the ratios use the faster reference (1 thread here, as on a busy machine).
    section = render_section(
        _result(_side(110.0, 13.0, 1.4111), {2: _side(40.0, 3.5, 1.3452), 1: _side(100.0, 3.0, 1.3452)}, [1.0, 8.2])
    )
    assert f"goal >= {GOAL_SPEEDUP}x: not met" in section and "goal <= 1: not met" in section
    assert "**tokens/s ratio tunebox / reference: 1.10x** against the faster reference (1 thread(s))" in section
    assert "(by thread count: 2: 2.75x, 1: 1.10x)" in section
    assert "**peak RSS ratio tunebox / reference: 4.33x**" in section
    assert "| tokens/s (steady) | 110.0 | 40.0 | 100.0 |" in section
    assert "shared with other work" in section
    assert (
        f"(difference 6.6e-02). **More than {LOSS_TOLERANCE:.0e} apart: the two sides did not compute the same "
        "batches, so the ratios above are not like for like.**" in section
    )


def test_report_adds_the_packed_side_with_its_own_flops():
    result = _result(_side(100.0, 6.0, 1.25), {2: _side(120.0, 4.0, 1.25)}, [1.0])
    shape = get_model_shape("smollm2-135m")
    packed_flops = step_flops(shape, 4, 256, 8, "wq|wv")
    packed = _side(180.0, 6.5, 1.1)
    result["summary"] = summarize(
        _side(100.0, 6.0, 1.25), {2: _side(120.0, 4.0, 1.25)}, result["flops"], result["peak"], packed, packed_flops
    )
    result["workload"]["packed"] = {
        "seq_length": 256,
        "batch": 4,
        "flops": packed_flops["total"],
        "samples": 896,
        "rows": 321,
        "fill_before": 0.34,
        "fill_after": 0.95,
    }
    section = render_section(result)
    assert "tunebox, packed (256 x 4, train.packing) |" in section
    assert "| tokens/s (steady) | 100.0 | 180.0 | 120.0 |" in section
    assert "same data at 1.50x the reference's tokens/s** (goal >= 1.3x: met), peak RSS 1.62x" in section
    assert "filled rows 34% -> 95% (896 samples in 321 rows)" in section
    sides = result["summary"]["sides"]
    assert sides["tunebox-packed"]["achieved_gflops"] == pytest.approx(
        packed_flops["total"] / (600 / 180.0) / 1e9, rel=1e-3
    )
    assert packed_flops["total"] > result["flops"]["total"]  # longer rows: more attention FLOPs


# ---- a whole run, both sides, on the tiny model -------------------------------------------------

HAVE_BENCH_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("torch", "peft", "transformers", "psutil"))


@pytest.mark.slow
def test_tiny_bench_runs_both_sides_on_the_same_batches(tmp_path, tiny_cache):
    if not HAVE_BENCH_EXTRA:
        cannot_run("needs the bench extra (torch, peft, transformers, psutil): pip install -e '.[bench]'")
    keep = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benches.bench_train",
            "--config",
            str(TINY_RECIPE),
            "--steps",
            "3",
            "--peak-sizes",
            "256,512",
            "--threads",
            "1",
            "--no-append",
            "--keep",
            str(keep),
        ],
        cwd=tmp_path,
        env=job_env(tiny_cache),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((keep / "bench_train.json").read_text())
    tunebox, reference = result["runs"]["tunebox"][0], result["runs"]["reference-1t"][0]
    assert len(tunebox["steps"]) == len(reference["steps"]) == 4
    # Same rows (bench_train checked the batch sha1s), counted the same way ...
    assert [s["tokens"] for s in tunebox["steps"]] == [s["tokens"] for s in reference["steps"]]
    batches = np.load(keep / "reference" / "batches.npz")
    assert [count_tokens(ids, 0) for ids in batches["ids"]] == [s["tokens"] for s in tunebox["steps"]]
    # ... and the same loss before any update (LoRA B starts at zero on both sides).
    assert abs(tunebox["steps"][0]["loss"] - reference["steps"][0]["loss"]) < LOSS_TOLERANCE
    summary = result["summary"]
    assert summary["speedup"] > 0 and summary["sides"]["tunebox"]["peak_rss_bytes"] > 100 * 2**20
    assert "tokens/s ratio tunebox / reference" in proc.stdout
