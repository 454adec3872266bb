"""Data-parallel training through msrun on the CPU: 2 workers, MindFormers' Trainer in each, the
dataset sharded by rank, the gradients averaged across ranks."""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import yaml

from conftest import TINY_RECIPE, cannot_run, read_jsonl, run_job


def _lora(path) -> dict:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


def msrun_beside_python() -> str:
    """The msrun mindspore installed next to this interpreter (venv/bin/msrun, not necessarily on PATH
    when pytest runs as venv/bin/python -m pytest), else the first on PATH."""
    mine = Path(sysconfig.get_path("scripts")) / "msrun"
    return str(mine) if mine.is_file() and os.access(mine, os.X_OK) else shutil.which("msrun")


def test_two_msrun_workers_train_one_model(tmp_path, tiny_cache, tiny_run, monkeypatch):
    """Each rank reads its own half of the data (MindFormers shards MindDataset by rank), so the ranks'
    step losses differ; the gradients are averaged, so the LoRA weights of the two ranks are bitwise
    equal at every planned checkpoint, and they moved. Without the gradient all-reduce each rank
    would follow its own half and the weights would part after the first step."""
    msrun = msrun_beside_python()
    if msrun is None:
        cannot_run("no msrun next to this interpreter or on PATH (mindspore installs it)")
    # train finds msrun on PATH, and msrun starts its workers with the bare `python` on PATH
    monkeypatch.setenv("PATH", str(Path(msrun).parent) + os.pathsep + os.environ.get("PATH", ""))
    runs = tmp_path / "runs"
    (runs / "w2").mkdir(parents=True)
    os.symlink(tiny_run["run_dir"] / "prep", runs / "w2" / "prep")
    run_job(
        "train",
        TINY_RECIPE,
        tiny_cache,
        tmp_path,
        "train.max_steps=8",
        "lora.dropout=0.0",
        f"runs_dir={runs}",
        "run_id=w2",
        "train.workers=2",
        "train.master_port=8391",
    )
    out = runs / "w2" / "train"
    cfg = yaml.safe_load((out / "mindformers.yaml").read_text())
    assert cfg["use_parallel"] is True and cfg["parallel_config"]["data_parallel"] == 2
    assert cfg["runner_config"]["batch_size"] == 2  # the tiny recipe's 4 rows a step, 2 per rank
    index = json.loads((out / "checkpoints" / "index.json").read_text())
    assert [c["step"] for c in index["checkpoints"]] == index["planned"] == [2, 3, 5, 6, 8]
    base = None
    for c in index["checkpoints"]:
        rank0 = out / c["file"]
        rank1 = out / c["file"].replace("rank_0", "rank_1")
        a, b = _lora(rank0), _lora(rank1)
        assert a.keys() == b.keys() and len(a) == 2 * 2 * 2
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"ranks differ at step {c['step']}: {k}")
        base = base or a
    last = _lora(out / index["checkpoints"][-1]["file"])
    moved = max(float(np.abs(last[k] - base[k]).max()) for k in last if "lora_b" in k)
    assert moved > 0, "the LoRA weights never changed"
    # both workers logged every step to MindFormers' own per-rank logs
    for rank in (0, 1):
        assert (out / "log" / f"rank_{rank}" / "info.log").exists()
    steps = read_jsonl(out / "loss.jsonl")
    assert [s["step"] for s in steps] == list(range(1, 9)) and all(np.isfinite(s["loss"]) for s in steps)
