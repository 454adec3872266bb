"""docker compose, killed and run again: the same `invoke compose.up` finishes the run.

The tiny recipe's job graph runs in the cpu image with docker-compose (images/compose_up.py, what
`invoke compose.up` runs). While train trains, its container is killed with SIGKILL from outside, as an
OOM killer or a lost node would. compose.up then fails (train exited 137, the later services never
start). The same command, without --fresh, must then exit 0: train resumes from its last full checkpoint
in the volume, and the jobs after it run. The submission it leaves passes verify inside the image, and
loss.jsonl holds every planned step exactly once. A third run skips every job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_RECIPE, cannot_run, docker_engine, docker_image

IMAGE = "tunebox:cpu-ms2.9"
PROJECT = "tunebox"  # images/compose_up.PROJECT
RUN_ID = "tiny"  # recipes/tiny.yaml's run_id


def compose_up(*extra: str, timeout: float = 1800) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "images.compose_up", "--config", str(TINY_RECIPE), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def volume_folder(client) -> Path:
    """Where the engine keeps the tunebox-data volume: read from this host (the test polls a file there
    every few milliseconds; a container per read would be far too slow for the tiny model's steps)."""
    folder = Path(client.volumes.get("tunebox-data").attrs["Mountpoint"])
    try:
        folder.exists()
        next(folder.iterdir(), None)
    except PermissionError:
        cannot_run(f"the volume's folder {folder} is not readable here (run as root, as CI does)")
    return folder


def loss_steps(run: Path) -> list[int]:
    path = run / "train" / "loss.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(l)["step"] for l in text.splitlines() if l.strip().endswith("}")]


def train_container(client):
    found = client.containers.list(
        filters={
            "label": [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=train"],
            "status": "running",
        }
    )
    return found[0] if found else None


@pytest.mark.docker
@pytest.mark.slow
def test_compose_after_a_killed_train_container_finishes_the_run():
    client = docker_engine()
    docker_image(client, IMAGE, "invoke image.build --stack cpu-ms2.9")
    if shutil.which("docker-compose") is None:
        cannot_run("docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)")

    first = compose_up("--fresh")
    killed_at, container, run = None, None, None
    deadline = time.time() + 1200
    while time.time() < deadline and first.poll() is None:
        container = container or train_container(client)
        if container and run is None:  # compose has made the volume by now
            run = volume_folder(client) / "runs" / RUN_ID
        steps = loss_steps(run) if container else []
        # past the first full checkpoint (the recipe's train.save_state_every: 5), well before the last step
        if container and len(steps) >= 6:
            container.kill()  # SIGKILL, from outside
            killed_at = steps[-1]
            break
        time.sleep(0.02)
    out, _ = first.communicate(timeout=600)
    assert killed_at is not None, f"train never reached 6 steps while compose ran:\n{out[-4000:]}"
    assert first.returncode != 0, f"compose.up should fail after its train container was killed:\n{out[-4000:]}"
    assert "137" in out, out[-4000:]
    stopped_at = loss_steps(run)[-1]
    index_path = run / "train" / "checkpoints" / "index.json"
    assert not index_path.exists(), "train had finished before the kill: the test did not kill it mid-training"

    second = compose_up()
    out, _ = second.communicate(timeout=1800)
    assert second.returncode == 0, f"the same compose.up after the kill exited {second.returncode}:\n{out[-6000:]}"

    summary = json.loads((run / "train" / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] <= stopped_at, (summary["resumed_from_step"], stopped_at)
    index = json.loads(index_path.read_text())
    steps = loss_steps(run)
    assert steps == list(range(1, index["total_steps"] + 1)), steps  # no step repeated, skipped or added
    verify = client.containers.run(
        IMAGE,
        command=["python", "-m", "jobs.verify", f"/data/runs/{RUN_ID}/submission"],
        detach=True,
        volumes={"tunebox-data": {"bind": "/data", "mode": "rw"}},
    )
    try:
        status = verify.wait(timeout=900)["StatusCode"]
        log = verify.logs().decode("utf-8", "replace")
    finally:
        verify.remove(force=True)
    assert status == 0, f"verify of the resumed run's submission exited {status}:\n{log[-4000:]}"

    third = compose_up()
    out, _ = third.communicate(timeout=900)
    assert third.returncode == 0, out[-4000:]
    for job in ("prep", "train", "merge", "evaluate", "bundle"):
        assert f"{job}: skipped" in out, f"{job} was not skipped on the third run:\n{out[-4000:]}"
