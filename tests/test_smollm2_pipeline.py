"""The real embedded model through the whole job graph, shortened: the same code paths as
`invoke pipeline`, on the real contest rows, in a few minutes."""
from __future__ import annotations

import json
import os

import pytest

from conftest import REPO, read_jsonl, run_job

LOCAL = REPO / "recipes" / "local-smollm2.yaml"


@pytest.mark.slow
def test_smollm2_short_pipeline(tmp_path):
    cache = os.environ.get("TUNEBOX_CACHE") or os.path.expanduser("~/.cache/tunebox")  # convert once, reuse
    runs = tmp_path / "runs"
    args = [f"runs_dir={runs}", "train.max_steps=10", "data.heldout_rows=12", "eval.limit=12", "eval.squad_rows=8"]
    for job in ("prep", "train", "merge", "evaluate"):
        run_job(job, LOCAL, cache, tmp_path, *args, timeout=1800)
    run = runs / "local-smollm2"
    log = read_jsonl(run / "train" / "loss.jsonl")
    assert len(log) == 10 and log[-1]["loss"] < log[0]["loss"] * 1.5
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert report["base"]["n"] == 12 and len(report["checkpoints"]) == 5
    preds = read_jsonl(run / "evaluate" / "base" / "predictions.jsonl")
    # the real model answers in words and numbers, not byte soup
    assert sum(any(ch.isdigit() for ch in p["answer"]) for p in preds) >= 6
