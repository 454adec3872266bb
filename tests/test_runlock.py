"""One run at a time per run folder (tunebox/runlock.py): a second job is refused naming the holder, a
lock left by kill -9 is taken over, the holder's children join, another host's fresh record is honoured.

Mutants tried (each fails the test named):
  - hold_run_folder ignores BlockingIOError from flock            -> test_a_second_job_is_refused_naming_the_holder
  - any leftover record is treated as busy (no takeover)          -> test_a_lock_left_by_kill_9_is_taken_over
  - the token check for the holder's children removed             -> test_the_holders_children_join_its_lock
  - the fresh-heartbeat check for another host's record removed   -> test_another_hosts_fresh_record_is_refused
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY_RECIPE
from tunebox.runlock import RUN_LOCK_ENV, RunFolderBusy, boot_id, hold_run_folder, lock_file, read_holder

HOLDER = """
import sys, time
from tunebox.runlock import hold_run_folder
with hold_run_folder(sys.argv[1], "pipeline"):
    print("held", flush=True)
    time.sleep(600)
"""


def start_holder(run_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(RUN_LOCK_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def holder(tmp_path):
    proc = start_holder(tmp_path / "runs" / "tiny")
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_second_job_is_refused_naming_the_holder(tmp_path, holder):
    """The real job command, on a run folder another process holds: exit 2, one `error:` line naming the
    holder's host, pid and since-when, and the job does not start."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNEBOX_CACHE": str(tmp_path / "cache")}
    env.pop(RUN_LOCK_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.weights", "--config", str(TINY_RECIPE), "--set", f"runs_dir={tmp_path / 'runs'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    record = read_holder(tmp_path / "runs" / "tiny")
    assert record["pid"] == holder.pid
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, proc.stderr[-3000:]
    assert f"pid {holder.pid}" in error[0] and f"host {socket.gethostname()}" in error[0]
    assert f"since {record['since']}" in error[0] and "in use by pipeline" in error[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "tiny" / "weights").exists()


def test_a_lock_left_by_kill_9_is_taken_over(tmp_path, holder, caplog):
    run_dir = tmp_path / "runs" / "tiny"
    with pytest.raises(RunFolderBusy):
        with hold_run_folder(run_dir, "train"):
            pass
    dead = holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert read_holder(run_dir)["pid"] == dead  # the record is still there
    with caplog.at_level("WARNING", logger="tunebox.runlock"):
        with hold_run_folder(run_dir, "train") as record:
            assert record["pid"] == os.getpid()
            assert read_holder(run_dir)["pid"] == os.getpid()
    assert f"pid {dead}" in caplog.text and "no longer running" in caplog.text
    assert read_holder(run_dir) is None  # released: no holder left
    assert RUN_LOCK_ENV not in os.environ


def test_the_holders_children_join_its_lock(tmp_path):
    """msrun's workers and a pipeline's jobs inherit the holder's token and run; a stranger is refused."""
    run_dir = tmp_path / "runs" / "tiny"
    probe = (
        "import sys\nfrom tunebox.runlock import hold_run_folder\n"
        "with hold_run_folder(sys.argv[1], 'train'):\n    print('joined')\n"
    )
    with hold_run_folder(run_dir, "pipeline"):
        child = subprocess.run(
            [sys.executable, "-c", probe, str(run_dir)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        stranger_env = {k: v for k, v in os.environ.items() if k != RUN_LOCK_ENV}
        stranger = subprocess.run(
            [sys.executable, "-c", probe, str(run_dir)],
            env={**stranger_env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert child.returncode == 0 and "joined" in child.stdout, child.stderr[-2000:]
    assert stranger.returncode != 0 and "RunFolderBusy" in stranger.stderr, stranger.stderr[-2000:]


def test_another_hosts_fresh_record_is_refused(tmp_path):
    """A volume shared by two nodes may not carry flocks across them: a record from another host with a fresh
    heartbeat refuses; once its heartbeat is stale, it is taken over."""
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.parent.mkdir(parents=True)
    path = lock_file(run_dir)
    path.write_text(
        json.dumps({"host": "other-node", "pid": 1, "job": "train", "since": "2026-01-01T00:00:00", "token": "x"})
    )
    with pytest.raises(RunFolderBusy, match="host other-node, pid 1"):
        with hold_run_folder(run_dir, "train"):
            pass
    old = time.time() - 3600
    os.utime(path, (old, old))
    with hold_run_folder(run_dir, "train") as record:
        assert record["host"] == socket.gethostname()


def test_a_second_pipeline_is_refused_before_any_job_starts(tmp_path, holder):
    """`invoke pipeline` holds the run folder for the whole graph, not job by job, so a second pipeline cannot
    slip in between two jobs of the first. Mutant: the pipeline task without its own lock (only the jobs
    take one) -> the refused pipeline has already started its first job (its command line is printed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNEBOX_CACHE": str(tmp_path / "cache")}
    env.pop(RUN_LOCK_ENV, None)
    proc = subprocess.run(
        ["invoke", "pipeline", "--config", str(TINY_RECIPE), "--set", f"runs_dir={tmp_path / 'runs'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"pid {holder.pid}" in proc.stderr and "in use by pipeline" in proc.stderr
    assert "-m jobs." not in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_killed_containers_fresh_record_on_this_machine_is_taken_over(tmp_path):
    """docker compose gives each container its own hostname, on one kernel: a train container killed a second
    ago leaves a record with another hostname and a fresh heartbeat, and the rerun's first container must take it
    over (nobody holds the flock), not wait two minutes. Found by test_compose_rerun. Mutant: the cross-host rule
    keyed on the hostname instead of the boot id -> refused here."""
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.parent.mkdir(parents=True)
    path = lock_file(run_dir)
    record = {
        "host": "a1b2c3d4e5f6",
        "boot_id": boot_id(),
        "pid": 1,
        "job": "train",
        "since": "2026-01-01T00:00:00",
        "token": "x",
    }
    path.write_text(json.dumps(record))
    assert boot_id(), "this test needs /proc/sys/kernel/random/boot_id"
    with hold_run_folder(run_dir, "weights") as held:
        assert held["host"] == socket.gethostname() and held["boot_id"] == boot_id()
