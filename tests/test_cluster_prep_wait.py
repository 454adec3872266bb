"""Multi-node (issue 22, 1.3): the ranks on nodes other than the first start msrun at once, while the
first node still runs weights and prep. Every rank must wait for prep's manifest before train's
prepare() reads the MindRecord, with its own timeout (cluster.prep_timeout, TUNEBOX_PREP_TIMEOUT),
longer than and separate from HCCL's and the cluster's.

The pipeline entry (images/pipeline.sh) runs under the Indexed Job's and under Huawei's operator's
variables; `msrun` is a stand-in that starts the real jobs/train_worker.py as msrun would (one
worker), stopped right after prepare() returns (no cluster forms here). prep really runs meanwhile.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_RECIPE, cannot_run, job_env, run_job
from tunebox.config import load_spec
from tunebox.deploy.k8s import find_kubectl, render
from tunebox.io import InputError

# The stand-in: drops msrun's options, then runs the script it was given (the image's /app path
# mapped to this checkout) in a Python whose jobs.train.prepare says when it returned, and stops there.
MSRUN = """#!/bin/sh
echo "msrun $*" >> "$SHIM_LOG"
while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done
script=$(echo "$1" | sed "s|^/app/|$REPO/|"); shift
exec "$PYTHON" - "$script" "$@" <<'PY'
import os, runpy, sys
import jobs.train as train
real = train.prepare
def prepare(*args, **kwargs):
    found = real(*args, **kwargs)
    print(f"PREPARED rows={found['rows']} workers={kwargs['train'].workers}", flush=True)
    os._exit(0)
train.prepare = prepare
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
PY
"""

# Rank 1 of 2 nodes: what the Indexed Job sets (k8s/overlays/multi-node) and what ascend-operator
# sets (pkg/controllers/v1/env.go, setMindSporeEnv).
ENVIRONMENTS = {
    "indexed": {
        "MS_WORKER_NUM": "8",
        "MS_SCHED_HOST": "localhost",
        "MS_SCHED_PORT": "8118",
        "JOB_COMPLETION_INDEX": "1",
        "TUNEBOX_LOCAL_WORKERS": "4",
    },
    "operator": {
        "MS_ROLE": "MS_WORKER",
        "MS_NODE_RANK": "1",
        "MS_SCHED_HOST": "localhost",
        "MS_SCHED_PORT": "2222",
        "MS_WORKER_NUM": "8",
        "MS_LOCAL_WORKER": "4",
        "MS_SERVER_NUM": "0",
    },
}


def start_pipeline(tmp_path: Path, cache: Path, cluster: dict, runs: Path, extra_env=None) -> subprocess.Popen:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "msrun"
    shim.write_text(MSRUN, encoding="utf-8")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {
        **job_env(cache),
        **cluster,
        "TUNEBOX_STEPS": "train",
        "SHIM_LOG": str(tmp_path / "calls.log"),
        "REPO": str(REPO),
        "PYTHON": sys.executable,
        "TUNEBOX_CLUSTER_TIMEOUT": "5",
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [
            "sh",
            str(REPO / "images" / "pipeline.sh"),
            "--config",
            str(TINY_RECIPE),
            "--set",
            f"runs_dir={runs}",
            "--set",
            "train.batch_size=8",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("where", sorted(ENVIRONMENTS))
def test_a_rank_on_another_node_waits_for_prep_then_prepares(tmp_path, tiny_cache, where):
    runs = tmp_path / "runs"
    # The cluster timeout (5 s) runs out long before prep is done: the wait must not be bound by it.
    worker = start_pipeline(tmp_path, tiny_cache, ENVIRONMENTS[where], runs)
    seen = []
    try:
        # Until the rank has started train_worker.py and reached prep's output: it either says it waits,
        # or (without the wait) it has already failed in prepare() and ended.
        for line in worker.stdout:
            seen.append(line)
            if "waiting for prep" in line:
                break
        assert worker.poll() is None, "the rank ended before prep ran:\n" + "".join(seen)
        assert str(runs / "tiny" / "prep" / "manifest.json") in seen[-1]
        assert not (runs / "tiny" / "prep").exists()
        time.sleep(6)  # beyond TUNEBOX_CLUSTER_TIMEOUT: still waiting
        assert worker.poll() is None, "".join(seen)
        # prep runs now (the first node's step), while the rank waits
        run_job("prep", TINY_RECIPE, tiny_cache, tmp_path, f"runs_dir={runs}")
        out, _ = worker.communicate(timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
    out = "".join(seen) + out
    assert worker.returncode == 0, out
    assert "PREPARED rows=" in out and "workers=8" in out
    calls = (tmp_path / "calls.log").read_text(encoding="utf-8")
    assert "--node_rank=1" in calls


def test_the_wait_has_its_own_timeout_and_says_what_it_waited_for(tmp_path, tiny_cache):
    runs = tmp_path / "runs"
    worker = start_pipeline(tmp_path, tiny_cache, ENVIRONMENTS["indexed"], runs, {"TUNEBOX_PREP_TIMEOUT": "3"})
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode != 0
    assert "PREPARED" not in out
    assert "prep did not finish within 3 s" in out and "TUNEBOX_PREP_TIMEOUT" in out


def test_prep_timeout_must_outlast_the_hccl_timeout():

    spec = load_spec(TINY_RECIPE)
    assert spec.cluster.prep_timeout > spec.cluster.hccl_connect_timeout
    with pytest.raises(InputError, match="cluster.prep_timeout"):
        load_spec(TINY_RECIPE, ["cluster.prep_timeout=600", "cluster.hccl_connect_timeout=1200"])


@pytest.mark.parametrize(
    "overlay, sets",
    [
        ("multi-node", ["train.workers=8", "train.batch_size=8"]),
        ("ascend-job", ["train.workers=16", "train.batch_size=16"]),
    ],
)
def test_render_refuses_a_prep_wait_shorter_than_the_cluster_timeout(overlay, sets):
    """The overlays give msrun TUNEBOX_CLUSTER_TIMEOUT=3600 s; the prep wait must outlast it."""

    if find_kubectl() is None:
        cannot_run("kubectl is not installed: it renders the manifests (pip install -e '.[test]')")

    render(TINY_RECIPE, overlay, overrides=sets)  # the default, 10800 s, renders
    with pytest.raises(InputError, match=r"cluster\.prep_timeout \(3000 s\) must be longer than .*3600 s"):
        render(TINY_RECIPE, overlay, overrides=sets + ["cluster.prep_timeout=3000"])
