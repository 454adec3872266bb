"""One run at a time per run folder.

A job holds `<runs_dir>/.<run_id>.lock` while it runs (beside the run folder, not in it: the
folder's content stays what the jobs wrote). A second job on the same run folder (a
second `invoke pipeline`, two Jobs on one PVC) is refused with a message naming the holder: host,
pid, job and since when.

Liveness comes from the kernel, not from the file's content: the holder keeps an fcntl.flock on the
file, which the kernel drops when the holder dies, kill -9 included. A lock file nobody holds is
therefore a leftover: the next job takes it over and says whose it was. The holder also touches the
file every HEARTBEAT_SECONDS; when the record comes from another kernel (another boot id: another
node on a shared volume) and its heartbeat is fresh, the lock is refused even if our flock succeeded,
since a volume shared between nodes may not carry flocks across them. Containers and pods on one
machine share its kernel: for them the flock decides, whatever their hostnames (docker compose's
containers each have their own).

The processes of one run share the lock: the holder exports a token (RUN_LOCK_ENV) that its
children inherit (msrun's workers, the jobs a pipeline starts), and a process whose token is the
one in the record joins instead of being refused. The pods of a multi-node run (MindSpore's cluster
variables set: the Indexed Job or ascend-operator) are one run spread over nodes by their scheduler,
which owns them: they take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

from tunebox.io import InputError

log = logging.getLogger(__name__)

RUN_LOCK_ENV = "TUNEBOX_RUN_LOCK"
HEARTBEAT_SECONDS = 30.0
# A record from another host is trusted while its heartbeat is younger than this.
STALE_SECONDS = 4 * HEARTBEAT_SECONDS
# Set in every process of a multi-node MindSpore run (tunebox/training/launch.py's in_cluster reads the same two).
CLUSTER_VARIABLES = ("MS_WORKER_NUM", "MS_ROLE")


class RunFolderBusy(InputError):
    """Another process holds the run folder. Exit 2: wait for it, or choose another run_id."""


def lock_file(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def read_holder(run_dir: str | os.PathLike) -> Optional[dict]:
    """The record of whoever holds (or last held) the run folder; None when there is none or it is unreadable."""
    try:
        holder = json.loads(lock_file(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder: dict) -> str:
    return (
        f"{holder.get('job', 'a job')} (host {holder.get('host')}, pid {holder.get('pid')}, "
        f"since {holder.get('since')})"
    )


@contextlib.contextmanager
def hold_run_folder(run_dir: str | os.PathLike, job: str) -> Iterator[dict]:
    """Hold `run_dir` for the duration of the block; yields the holder record. Raises RunFolderBusy,
    naming the holder, while another live process holds it."""
    run_dir = Path(run_dir)
    inherited = os.environ.get(RUN_LOCK_ENV)
    holder = read_holder(run_dir)
    if inherited and holder and holder.get("token") == inherited:
        yield holder  # a child of the holder (msrun worker, a pipeline's job)
        return
    if any(name in os.environ for name in CLUSTER_VARIABLES):
        log.debug("%s: one pod of a multi-node run; its scheduler owns the run folder, no lock taken", job)
        yield {}
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = lock_file(run_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(_busy_message(read_holder(run_dir), job), path) from None
        previous = read_holder(run_dir)
        # Another kernel (another node on a shared volume) may hold it without our flock seeing it; on this
        # kernel (this host's containers and pods share it: the same boot id) the flock is the whole truth.
        if previous and previous.get("boot_id") != boot_id() and _fresh(path):
            raise RunFolderBusy(
                _busy_message(previous, job) + f" (its heartbeat is under {STALE_SECONDS:.0f} s "
                f"old; if that host is gone, delete the lock file)",
                path,
            )
        if previous:
            log.warning(
                "%s: taking over the run folder's lock left by %s, which is no longer running",
                job,
                describe_holder(previous),
            )
        holder = {
            "host": socket.gethostname(),
            "boot_id": boot_id(),
            "pid": os.getpid(),
            "job": job,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "token": uuid.uuid4().hex,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder, indent=1) + "\n").encode(), 0)
        os.fsync(fd)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(path, stop), name="run-lock-heartbeat", daemon=True)
        beat.start()
        os.environ[RUN_LOCK_ENV] = holder["token"]
        try:
            yield holder
        finally:
            stop.set()
            beat.join()
            _restore_env(inherited)
            # Emptied, not removed: removing would let a process that opened the old file lock a
            # file no one else sees. An empty record is no holder.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # drops the flock


def _busy_message(holder: Optional[dict], job: str) -> str:
    who = describe_holder(holder) if holder else "another process (its record is not written yet)"
    return (
        f"{job}: the run folder is in use by {who}. Wait for it to finish, or run with another "
        f"run_id (--set run_id=...)"
    )


def boot_id() -> str:
    """This kernel's boot id: the same in every container and pod on one machine, so it says whether a holder
    shares our kernel (and so our flocks) whatever its hostname. Empty where /proc does not have it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _fresh(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < STALE_SECONDS
    except OSError:
        return False


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        with contextlib.suppress(OSError):
            os.utime(path)


def _restore_env(previous: Optional[str]) -> None:
    if previous is None:
        os.environ.pop(RUN_LOCK_ENV, None)
    else:
        os.environ[RUN_LOCK_ENV] = previous
