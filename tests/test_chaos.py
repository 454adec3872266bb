"""Kill it anywhere, run the same command again (issue 29): `invoke pipeline` on the tiny recipe is
killed with SIGKILL on its whole process group at each point below (or sent Ctrl-C), then the same
command runs again and must exit 0 with the result of a run that was never interrupted: the same merged
checkpoints (bytes when training was not interrupted, else values), report.json (values) and SHA256SUMS
(the same files; the same checkpoint hashes when training was not interrupted), and no half-written
file anywhere under runs/.

A kill point is reached deterministically: the job kills its own process group when
$TUNEBOX_TEST_KILL_POINT names the point it has reached (tunebox/chaos.py). Training runs 2 epochs of 27
steps with a full checkpoint every 9 steps, so step 27 (the epoch boundary) has one, and dropout is off
so a resumed run computes the same losses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY_RECIPE, job_env, kill_session, read_jsonl, start_until_lines
from tunebox import layout
from tunebox.training.outputs import resume_point

pytestmark = pytest.mark.slow

RUN = ["lora.dropout=0.0", "train.epochs=2", "train.save_state_every=9"]
TOTAL_STEPS = 54  # 2 epochs x 27 batches of 4 (prep keeps 109 rows)

# Each scenario kills the pipeline at its points in turn (the same command started again after each
# kill, and killed again at the next point, which it must reach), then runs the command once more
# undisturbed: it must exit 0 with the uninterrupted run's result. Together they hold every point the
# issue names. "retrains": the model is trained in more than one session, so values are compared, not bytes.
SCENARIOS = {
    "in-weights-prep-train": dict(
        points=[
            "weights.building",  # inside weights: the model dir half built (a cache of its own)
            "prep.writing",  # inside prep: its outputs half written
            "train.step-3",  # train early: before the first full checkpoint
            "train.step-13",  # train mid-epoch: the rerun resumes from step 9
            "train.step-27",  # on the epoch boundary, before its checkpoint: resumes from step 18
            "train.step-29",  # past the epoch boundary: resumes from the checkpoint of step 27
            "train.before-manifest",  # after the last step, before train's manifest
        ],
        sig="KILL",
        retrains=True,
        own_cache=True,
    ),
    "between-jobs-merge-evaluate-bundle": dict(
        points=[
            "train.finished",  # between jobs: train done, merge not started
            "merge.mid-checkpoint",  # merge inside a merged checkpoint
            "evaluate.between-models",  # evaluate after the base model, before the first checkpoint
            "bundle.writing",  # bundle: the submission half written
        ],
        sig="KILL",
        retrains=False,
        own_cache=False,
    ),
    "ctrl-c-in-train": dict(points=["train.step-13"], sig="INT", retrains=True, own_cache=False),
}
HALF_WRITTEN = re.compile(r"(\.tmp$|\.partial\.|^\..*\.part)")


def pipeline_cmd(runs: Path, *extra: str) -> list[str]:
    """`invoke pipeline` on the tiny recipe in `runs`, with the file's RUN settings and `extra` as --set."""
    cmd = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "pipeline", "--config", str(TINY_RECIPE)]
    return cmd + [w for setting in [f"runs_dir={runs}", *RUN, *extra] for w in ("--set", setting)]


def pipeline(
    runs: Path, cache: Path, cwd: Path, *extra: str, kill_point: str = "", sig: str = "KILL", timeout: float = 900
) -> tuple[subprocess.CompletedProcess, float]:
    cmd = pipeline_cmd(runs, *extra)
    env = job_env(cache)
    env.pop("TUNEBOX_TEST_KILL_POINT", None)
    if kill_point:
        env.update(TUNEBOX_TEST_KILL_POINT=kill_point, TUNEBOX_TEST_KILL_SIGNAL=sig)
    started = time.time()
    # a session of its own: the job kills this whole group (invoke and the job), as kill -9 on a terminal would
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"pipeline did not end in {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, ""), time.time() - started


def merged_arrays(run_dir: Path, cache: Path) -> dict:
    """Every merged checkpoint's tensors, read by MindSpore's own loader (not tunebox's writer)."""
    index = json.loads((run_dir / "merge" / "index.json").read_text())
    files = {c["step"]: str(run_dir / "merge" / c["file"]) for c in index["checkpoints"]}
    out = run_dir.parent / f"{run_dir.name}-merged.npz"
    code = (
        "import sys, json, numpy as np, mindspore as ms\n"
        "files = json.loads(sys.argv[1]); arrays = {}\n"
        "for step, f in files.items():\n"
        "    for k, v in ms.load_checkpoint(f).items(): arrays[f'{step}/{k}'] = v.asnumpy()\n"
        "np.savez(sys.argv[2], **arrays)"
    )
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(files), str(out)], check=True, capture_output=True, env=job_env(cache)
    )
    return dict(np.load(out))


VOLATILE = {"seconds", "cpu_seconds", "checkpoint", "plots"}


def report_values(run_dir: Path) -> dict:
    """report.json without timings and paths (they differ between any two runs)."""

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, str):
            return v.replace(str(run_dir), "RUN")
        return v

    return clean(json.loads((run_dir / "evaluate" / "report.json").read_text()))


def assert_close(a, b, where="report"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


def sums(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / "submission" / "SHA256SUMS").read_text().splitlines()
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines if line.strip()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_cache) -> dict:
    """One uninterrupted run, shared by every kill point; then the same command again, which must skip
    every job and take seconds."""
    work = tmp_path_factory.mktemp("chaos-ref")
    proc, _ = pipeline(work / "runs", tiny_cache, work)
    assert proc.returncode == 0, proc.stdout[-6000:]
    run_dir = work / "runs" / "tiny"
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and "weights" not in p.parts}
    again, seconds = pipeline(work / "runs", tiny_cache, work)
    assert again.returncode == 0, again.stdout[-6000:]
    return {
        "run_dir": run_dir,
        "rerun": again,
        "rerun_seconds": seconds,
        "before": before,
        "merged": merged_arrays(run_dir, tiny_cache),
    }


def test_rerun_of_a_finished_pipeline_skips_every_job(reference):
    out = reference["rerun"].stdout
    for job in ("prep", "train", "merge", "evaluate", "bundle"):
        assert re.search(rf"{job}: skipped: finished at ", out), f"{job} was not skipped:\n{out[-4000:]}"
    # how long the skipping takes is a figure for a quiet machine (docs/BENCHMARKS.md), not a test bound
    print(f"rerun of the finished tiny pipeline: {reference['rerun_seconds']:.1f} s")
    run_dir = reference["run_dir"]
    changed = [
        str(p)
        for p, t in reference["before"].items()
        if not p.exists() or p.stat().st_mtime_ns != t and p.name != layout.RECORD.name
    ]
    assert not changed, f"the rerun rewrote {changed}"
    assert [r["step"] for r in read_jsonl(run_dir / "train" / "loss.jsonl")] == list(range(1, TOTAL_STEPS + 1))


@pytest.mark.parametrize(
    "scenario", list(SCENARIOS), ids=[f"{k}:{'>'.join(v['points'])}:{v['sig']}" for k, v in SCENARIOS.items()]
)
def test_kill_anywhere_then_the_same_command_finishes_the_same_run(tmp_path, tiny_cache, reference, scenario):
    points, sig, retrains = SCENARIOS[scenario]["points"], SCENARIOS[scenario]["sig"], SCENARIOS[scenario]["retrains"]
    # weights is killed while it builds the model: that needs a cache without one
    cache = tmp_path / "cache" if SCENARIOS[scenario]["own_cache"] else tiny_cache
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"
    for point in points:
        killed, _ = pipeline(runs, cache, tmp_path, kill_point=point, sig=sig)
        if sig == "KILL":
            assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stdout[-4000:])
        else:  # Ctrl-C: train stops within a step or two with 130, and invoke passes it on
            assert killed.returncode == 130, (killed.returncode, killed.stdout[-4000:])
            steps = [r["step"] for r in read_jsonl(run_dir / "train" / "loss.jsonl")]
            assert 13 <= steps[-1] <= 15, steps[-1]
        assert not (run_dir / layout.manifest("bundle")).exists(), f"{point} was never reached"

    again, _ = pipeline(runs, cache, tmp_path)
    assert again.returncode == 0, again.stdout[-6000:]

    half = [str(p) for p in runs.rglob("*") if HALF_WRITTEN.search(p.name)]
    assert not half, f"half-written files survived: {half}"
    steps = [r["step"] for r in read_jsonl(run_dir / "train" / "loss.jsonl")]
    assert steps == list(range(1, TOTAL_STEPS + 1)), "a step was repeated, skipped or trained past the end"

    ref = reference["run_dir"]
    ref_sums, got_sums = sums(ref), sums(run_dir)
    events = re.compile(r"^logs/train/tensorboard/rank_0/events\.out\.tfevents\.")  # named by time: one a session
    assert any(events.match(k) for k in got_sums)

    def names(d):
        return {k for k in d if not events.match(k)}

    assert names(got_sums) == names(ref_sums), sorted(names(got_sums) ^ names(ref_sums))
    ckpts = sorted(k for k in ref_sums if k.endswith(".ckpt"))
    assert len(ckpts) == 5
    if not retrains:  # the same training: the same bytes
        assert [got_sums[k] for k in ckpts] == [ref_sums[k] for k in ckpts]
        assert report_values(run_dir) == report_values(ref)
    else:  # a resumed training: the same values
        got = merged_arrays(run_dir, cache)
        assert got.keys() == reference["merged"].keys()
        for k, v in reference["merged"].items():
            np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
        a, b = report_values(ref), report_values(run_dir)
        for r in [a["base"], *a["checkpoints"], b["base"], *b["checkpoints"]]:
            r.pop("checkpoint_sha256")
        assert_close(a, b)


def _processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that mention `text` (read from /proc, not from tunebox)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((l for l in (proc / "status").read_text().splitlines() if l.startswith("State:")), "")
            except OSError:
                continue
            if text in cmd and "zombie" not in state:
                found.append(f"{proc.name}: {cmd[:200]}")
    return found


def test_a_killed_launcher_takes_its_msrun_workers_along(tmp_path, tiny_cache):
    """train.workers=2: msrun gives each worker a session of its own. kill -9 on the pipeline's process
    group must stop the workers too (they trained on and wrote train's manifest with nothing watching),
    and the same command then finishes the run. The kill waits for a checkpoint to resume from, so the rerun
    always resumes the data-parallel workers through MindFormers' get_resume_checkpoint_by_meta, whose barrier
    has no MindSpore kernel on CPU. Broken variant: the code before mf_extensions.cpu_barrier, which skipped only
    preload_ckpt's barrier (the rerun's workers fail with "Unsupported op [Barrier] on CPU")."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = tmp_path / "runs"
    extra = ["train.workers=2", f"train.master_port={port}"]
    cmd = pipeline_cmd(runs, *extra)
    loss = runs / "tiny" / "train" / "loss.jsonl"
    proc = start_until_lines(cmd, tmp_path, job_env(tiny_cache), loss, 5, timeout=900)
    deadline = time.time() + 300
    while resume_point(runs / "tiny" / "train") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert resume_point(runs / "tiny" / "train") is not None, "no checkpoint to resume from before the kill"
    assert proc.poll() is None, "the pipeline ended before it could be killed"
    assert _processes_naming("train_worker.py"), "no msrun worker was running"
    kill_session(proc)
    time.sleep(5)
    assert not _processes_naming(str(runs)), "a worker outlived the killed launcher"
    steps_after_kill = len(loss.read_text().splitlines())
    time.sleep(5)
    assert len(loss.read_text().splitlines()) == steps_after_kill, "the workers went on training"
    assert not (runs / "tiny" / layout.manifest("train")).exists()

    again, _ = pipeline(runs, tiny_cache, tmp_path, *extra)
    assert again.returncode == 0, again.stdout[-6000:]
    steps = [r["step"] for r in read_jsonl(loss)]
    index = json.loads((runs / "tiny" / "train" / "checkpoints" / "index.json").read_text())
    assert steps == list(range(1, index["total_steps"] + 1)), "a step was repeated, skipped or trained past the end"
    assert not [str(p) for p in runs.rglob("*") if HALF_WRITTEN.search(p.name)]
