"""Data-parallel training through msrun on the CPU: 2 workers, each half of every global batch."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import TINY_RECIPE, read_jsonl, run_job


@pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (from mindspore) is not on PATH")
def test_two_msrun_workers_match_one_process(tmp_path, tiny_cache, tiny_run, monkeypatch):
    monkeypatch.setenv("TUNEBOX_LOG", "INFO")  # the workers' "finished steps" lines are INFO (CI runs at WARNING)
    runs = tmp_path / "runs"
    common = ["train.max_steps=8", "lora.dropout=0.0", f"runs_dir={runs}", "train.master_port=8391"]
    for workers in (1, 2):
        (runs / f"w{workers}").mkdir(parents=True)
        os.symlink(tiny_run["run_dir"] / "prep", runs / f"w{workers}" / "prep")
        run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *common, f"run_id=w{workers}", f"train.workers={workers}")
    logs = runs / "w2" / "train" / "msrun"
    # Both workers ran every step (which file holds which rank is msrun's business).
    text = "".join((logs / f"worker_{i}.log").read_text() for i in (0, 1))
    for rank in (0, 1):
        assert "rank %d/2 finished steps 1-8" % rank in text, text[-3000:]
    one = read_jsonl(runs / "w1" / "train" / "loss.jsonl")
    two = read_jsonl(runs / "w2" / "train" / "loss.jsonl")
    assert [r["batch_sha1"] for r in one] == [r["batch_sha1"] for r in two], "the global batches differ"
    # Each rank normalizes its loss over its own answer tokens, so the mean of two half-batch
    # losses equals the whole-batch loss only up to that weighting: close, not bit-equal.
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=2e-3)
    assert abs(two[0]["loss"] - one[0]["loss"]) < 2e-3 * one[0]["loss"]
    for run in ("w1", "w2"):
        assert len(json.loads((runs / run / "train" / "checkpoints" / "index.json").read_text())["checkpoints"]) == 5
