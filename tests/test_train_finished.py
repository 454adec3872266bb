"""Train after its last step (issue 29): killed between the last step and its manifest, the same command
writes the index and manifest without training again, whether the run ends mid-epoch (train.max_steps)
or exactly on an epoch boundary (resuming there made MindSpore refuse `epoch == initial_epoch`; resuming
mid-epoch trained a step past max_steps). And a finished train is skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, job_env, read_jsonl, run_job
from tunebox.model.mf_config import CHECKPOINT_PREFIX
from tunebox.training.launch import WORKERS_LOCK, wait_for_workers
from tunebox.training.outputs import read_loss_log, resume_point, training_done

# (overrides, steps): the tiny data has 27 batches an epoch
CASES = {"max_steps-mid-epoch": (["train.max_steps=20"], 20), "ends-on-epoch-boundary": (["train.epochs=1"], 27)}


@pytest.mark.parametrize("case", list(CASES))
def test_killed_after_the_last_step_the_rerun_trains_nothing_more(tmp_path, tiny_cache, tiny_run, case):
    overrides, steps = CASES[case]
    runs = tmp_path / "runs"
    (runs / "tiny").mkdir(parents=True)
    os.symlink(tiny_run["run_dir"] / "prep", runs / "tiny" / "prep")
    args = [f"runs_dir={runs}", "train.save_state_every=5"] + overrides
    cmd = [sys.executable, "-m", "jobs.train", "--config", str(TINY_RECIPE)] + sum((["--set", a] for a in args), [])
    env = dict(job_env(tiny_cache), TUNEBOX_TEST_KILL_POINT="train.before-manifest")
    killed = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, start_new_session=True, timeout=900
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    train = runs / "tiny" / "train"
    assert not (train / "manifest.json").exists()
    assert resume_point(train) is not None, "no resume point: the case tests nothing"

    again = run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *args)
    assert [r["step"] for r in read_jsonl(train / "loss.jsonl")] == list(range(1, steps + 1))
    assert len(read_jsonl(train / "sessions.jsonl")) == 1, "the rerun trained again"
    assert (train / "manifest.json").exists() and "Traceback" not in again.stderr

    third = run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *args)
    assert "train: skipped: finished at" in third.stderr, third.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(train / "loss.jsonl")] == list(range(1, steps + 1))


def test_a_rerun_waits_for_workers_of_a_killed_run_then_refuses(tmp_path):
    """A worker that still runs holds train/.workers.lock (shared); train waits for it and, past its
    timeout, refuses to start beside it. The worker here is a plain process holding the lock as
    jobs/train_worker.py does, not a trained one."""

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_SH); "
                "print('held', flush=True); time.sleep(60)"
            ),
            str(tmp_path / WORKERS_LOCK),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="still hold"):
            wait_for_workers(tmp_path, timeout=3)
    finally:
        holder.kill()
        holder.wait()
    wait_for_workers(tmp_path, timeout=3)  # gone: returns at once


def test_training_done_reads_the_loss_log_it_is_given_and_every_planned_lora_file(tmp_path):
    """training_done decides from the loss rows the caller read once (read_loss_log, also what finish
    writes the index from) and the planned LoRA files. Mutants that fail here: training_done reading
    loss.jsonl itself again (the empty list below is ignored), and its LoRA-file check dropped."""
    from tunebox.model.mf_extensions import lora_checkpoint_path

    plan = {"total_steps": 4, "batches_per_epoch": 3, "checkpoint_steps": [2, 4]}
    (tmp_path / "loss.jsonl").write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 5)))
    losses = read_loss_log(tmp_path)
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert training_done(tmp_path, plan, losses) is False  # no LoRA file yet
    for step in plan["checkpoint_steps"]:
        path = Path(lora_checkpoint_path(str(tmp_path), CHECKPOINT_PREFIX, step, plan["batches_per_epoch"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert training_done(tmp_path, plan, losses) is True
    assert training_done(tmp_path, plan, []) is False  # what the caller read decides
    assert training_done(tmp_path, plan, losses[:3]) is False  # a step short
