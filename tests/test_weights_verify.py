"""The weights job checks the cached base model against model.json before a run uses it (issue 29):
a flipped byte stops the run with a message naming the file, and --refresh makes the model again."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

from conftest import TINY_RECIPE, job_env, run_job


def test_a_flipped_byte_in_the_cached_model_stops_the_run_and_refresh_rebuilds_it(tmp_path, tiny_cache):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache / "models" / "tiny", cache / "models" / "tiny")
    ckpt = cache / "models" / "tiny" / "model.ckpt"
    original = ckpt.read_bytes()
    recorded = json.loads((ckpt.parent / "model.json").read_text())["files"]["model.ckpt"]["sha256"]
    assert hashlib.sha256(original).hexdigest() == recorded
    args = (f"runs_dir={tmp_path / 'runs'}",)

    first = run_job("weights", TINY_RECIPE, cache, tmp_path, *args)
    assert "hashed model.ckpt" in first.stderr, first.stderr[-2000:]
    second = run_job("weights", TINY_RECIPE, cache, tmp_path, *args)
    assert "unchanged since last verified" in second.stderr, second.stderr[-2000:]

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01  # one bit, same size
    ckpt.write_bytes(bytes(flipped))
    bad = run_job("weights", TINY_RECIPE, cache, tmp_path, *args, check=False)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert f"{ckpt}: sha256 " in bad.stderr and "--refresh" in bad.stderr, bad.stderr[-2000:]
    again = run_job("weights", TINY_RECIPE, cache, tmp_path, *args, check=False)
    assert again.returncode == 2, "a damaged file must stay damaged for the next run too"

    refreshed = subprocess.run([sys.executable, "-m", "jobs.weights", "--config", str(TINY_RECIPE), "--set", args[0],
                                "--refresh"], cwd=tmp_path, env=job_env(cache), capture_output=True, text=True)
    assert refreshed.returncode == 0, refreshed.stderr[-2000:]
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == recorded
    assert ckpt.read_bytes() == original
    assert run_job("weights", TINY_RECIPE, cache, tmp_path, *args).returncode == 0
