"""Starting a training run's workers and keeping them in step: msrun with train.workers local workers,
the workers' lock (a rerun never trains beside the workers of a killed run), and a cluster rank's
wait for prep's output."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tunebox.cli import job_process_env
from tunebox.config import TrainSection

log = logging.getLogger("tunebox.train")

WORKERS_LOCK = ".workers.lock"


def launch_msrun(train: TrainSection, worker: Path, job_args: list[str], log_dir: Path) -> int:
    """Run the worker program `worker` (jobs/train_worker.py) under msrun with train.workers local
    workers, each given `job_args` (--config and --set of the job); msrun's logs go to `log_dir`."""
    msrun = shutil.which("msrun")
    if not msrun:
        raise RuntimeError("train.workers > 1 needs msrun (installed with mindspore) on PATH")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = job_process_env(worker.parent)
    # msrun starts workers with the bare `python` on PATH: make it this interpreter.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [
        msrun,
        f"--worker_num={train.workers}",
        f"--local_worker_num={train.workers}",
        f"--master_port={train.master_port}",
        f"--log_dir={log_dir}",
        "--join=True",
        str(worker),
        *job_args,
    ]
    log.info("launching %d workers: %s", train.workers, " ".join(cmd))
    return subprocess.call(cmd, env=env)


def run_workers(train: TrainSection, worker: Path, job_args: list[str], out: Path, index_file: Path) -> None:
    """Train under msrun with train.workers local workers (launch_msrun, its logs in out/msrun); rank 0
    writes the run's index (`index_file`), summary and manifest, and a run that ends without the index
    is an error."""
    code = launch_msrun(train, worker, job_args, out / "msrun")
    if code != 0:
        raise RuntimeError(f"msrun exited with {code}; worker logs in {out / 'msrun'} and {out / 'log'}")
    if not index_file.exists():
        raise RuntimeError(f"the workers ended without writing {index_file}; see {out / 'msrun'}")


def in_cluster() -> bool:
    """Whether a cluster operator started this process as one rank (it sets MindSpore's MS_* variables)."""
    return "MS_WORKER_NUM" in os.environ or "MS_ROLE" in os.environ


def die_with_launcher() -> None:
    """In a worker msrun started: msrun puts each worker in a session of its own, so kill -9 on the
    pipeline's process group left the workers training, and writing the run's files, with nothing to
    watch them. Linux's parent-death signal kills this worker when msrun dies."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before the signal was armed
        os._exit(1)


def hold_workers_lock(out: Path):
    """A worker holds a shared lock on train/.workers.lock while it lives (the open file is kept by the
    caller); wait_for_workers takes it exclusively."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / WORKERS_LOCK, "a")
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


def wait_for_workers(out: Path, timeout: float = 120.0) -> None:
    """Before a run starts training in `out`: wait until no worker of an earlier, killed run is alive
    (they hold train/.workers.lock); refuse after `timeout` seconds rather than train beside them."""
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + timeout
    with open(out / WORKERS_LOCK, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"workers of an earlier run still hold {out / WORKERS_LOCK} after "
                        f"{timeout:.0f} s; stop them (fuser -v {out / WORKERS_LOCK}) and run again"
                    )
                log.info("waiting for the workers of an earlier run to stop (%s)", out / WORKERS_LOCK)
                time.sleep(2)


def wait_for_prep(manifest: Path, timeout: float, poll_s: float = 2.0) -> None:
    """A rank of a multi-node run may start before the first node has run weights and prep: wait for
    prep's manifest (written last) up to `timeout` seconds (cluster.prep_timeout; TUNEBOX_PREP_TIMEOUT
    overrides), a timeout of its own, before anything reads prep's output or joins the cluster."""
    timeout = float(os.environ.get("TUNEBOX_PREP_TIMEOUT") or timeout)
    started, last_said = time.monotonic(), None
    while not manifest.exists():
        waited = time.monotonic() - started
        if waited >= timeout:
            raise RuntimeError(
                f"prep did not finish within {timeout:g} s: no {manifest}. The first node runs weights "
                f"and prep (see its log); raise cluster.prep_timeout or TUNEBOX_PREP_TIMEOUT when "
                f"the base model's download takes longer"
            )
        if last_said is None or time.monotonic() - last_said >= 60:
            print(f"train: rank waiting for prep ({manifest}), {waited:.0f} of {timeout:g} s", flush=True)
            last_said = time.monotonic()
        time.sleep(poll_s)
