"""TensorBoard beside loss.jsonl: the train job renders MindFormers' own `tensorboard` key, so its
MFLossMonitor writes loss and learning rate per step into runs/<id>/train/tensorboard/rank_0/. Read
back with TensorBoard's own reader, the curves must be loss.jsonl's, step by step."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from conftest import TINY_RECIPE, cannot_run, read_jsonl, run_job


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard reads the folder (every events file in it, in order)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        cannot_run("tensorboard is not installed (pip install -e '.[test]')")
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_events_equal_loss_log(train: Path) -> None:
    logdir = train / "tensorboard" / "rank_0"
    assert sorted(p.name.split(".")[0] for p in logdir.iterdir()) == ["events"], list(logdir.iterdir())
    got = scalars(logdir)
    log = read_jsonl(train / "loss.jsonl")
    steps = [r["step"] for r in log]
    assert [s for s, _ in got["loss"]] == steps
    assert [s for s, _ in got["learning-rate"]] == steps
    # event files hold float32: loss.jsonl's float64 of the same float32 must round back exactly
    np.testing.assert_array_equal(np.float32([v for _, v in got["loss"]]), np.float32([r["loss"] for r in log]))
    np.testing.assert_array_equal(np.float32([v for _, v in got["learning-rate"]]), np.float32([r["lr"] for r in log]))


def test_tensorboard_events_are_the_loss_log(tiny_run):
    assert_events_equal_loss_log(tiny_run["run_dir"] / "train")


def test_tensorboard_steps_continue_across_epochs(tmp_path, tiny_cache, tiny_run):
    """Past the end of the first epoch (27 steps on the tiny recipe) MindFormers counts steps within
    the epoch; the events must still carry the global step loss.jsonl has."""
    runs = tmp_path / "runs"
    (runs / "tiny").mkdir(parents=True)
    os.symlink(tiny_run["run_dir"] / "prep", runs / "tiny" / "prep")
    run_job("train", TINY_RECIPE, tiny_cache, tmp_path, f"runs_dir={runs}", "train.max_steps=33")
    train = runs / "tiny" / "train"
    assert len(read_jsonl(train / "loss.jsonl")) == 33
    assert_events_equal_loss_log(train)
