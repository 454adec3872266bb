"""Shared fixtures: a session cache for the tiny model, and one tiny end-to-end run of the job
graph (prep -> train -> merge -> evaluate) through the same CLI users run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
MATH_SAMPLE = SHARED_DATA / "math" / "contest-sample.jsonl"
TINY_RECIPE = REPO / "recipes" / "tiny.yaml"


def cannot_run(why: str) -> None:
    """Skip a test this machine cannot run (pytest's summary lists the reason). CI (.ci/run, CI=true)
    runs every test: there a test that cannot run fails instead."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true, and this test cannot run: {why}", pytrace=False)
    pytest.skip(why)


def docker_engine():
    """A Docker client whose engine answered a ping. Only "no engine here" (no socket, refused, no
    permission: docker.errors.DockerException that is not an APIError) skips; an engine that answers
    with an error (APIError) is a failure."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.APIError:
        raise
    except docker.errors.DockerException as exc:
        cannot_run(f"no Docker engine here ({str(exc)[:200]}); start dockerd (docs/CONTAINERS.md)")
    return client


def docker_image(client, tag: str, how: str):
    """The local image `tag`; a missing one skips (fails under CI=true) and says how to build it.
    Any other Docker error propagates."""
    import docker

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        cannot_run(f"image {tag} is not built: {how}")


def job_env(cache: Path) -> dict:
    env = dict(os.environ)
    env["TUNEBOX_CACHE"] = str(cache)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # INFO whatever the caller's level: tests read the jobs' console ("train: skipped: finished at ...");
    # .ci/run's TUNEBOX_LOG=WARNING is for its own console, and a job's output here is captured anyway
    env["TUNEBOX_LOG"] = "INFO"
    return env


def run_job(name: str, recipe: Path, cache: Path, cwd: Path, *overrides: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"jobs.{name}", "--config", str(recipe)]
    for ov in overrides:
        cmd += ["--set", ov]
    proc = subprocess.run(cmd, cwd=cwd, env=job_env(cache), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A model cache with the tiny model built in it (random weights, byte tokenizer)."""
    cache = tmp_path_factory.mktemp("cache")
    env = job_env(cache)
    subprocess.run([sys.executable, "-c", "from tunebox.model.weights import ensure_model; ensure_model('tiny')"],
                   check=True, env=env, cwd=tmp_path_factory.mktemp("w"), capture_output=True)
    return cache


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_cache) -> dict:
    """prep -> train -> merge -> evaluate on the tiny recipe, once per test session."""
    work = tmp_path_factory.mktemp("tinyrun")
    runs = work / "runs"
    for job in ("prep", "train", "merge", "evaluate"):
        run_job(job, TINY_RECIPE, tiny_cache, work, f"runs_dir={runs}")
    return {"run_dir": runs / "tiny", "cache": tiny_cache, "work": work, "runs": runs}


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> dict:
    """The shared tiny run, copied and bundled through the CLI once per session: {sub, work}. Read-only for
    its users (a test that changes the submission copies it first)."""
    import shutil

    work = tmp_path_factory.mktemp("tinybundle")
    runs = work / "runs"
    shutil.copytree(tiny_run["run_dir"], runs / "tiny", ignore=shutil.ignore_patterns("submission", "mindformers"))
    run_job("bundle", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={runs}")
    return {"sub": runs / "tiny" / "submission", "work": work}


def planned_checkpoint_steps(run_dir: Path, recipe: Path = TINY_RECIPE, *overrides: str) -> list[int]:
    """The checkpoint steps train plans for this run, from prep's row count (tunebox.training.plan.plan_steps),
    so no test copies a step number from an earlier run."""
    from tunebox.config import load_spec
    from tunebox.training.plan import plan_steps

    stats = json.loads((Path(run_dir) / "prep" / "stats.json").read_text())
    return plan_steps(stats["rows_train"], load_spec(recipe, list(overrides)).train)["checkpoint_steps"]


def keeps_90_percent(tuned: float, base: float) -> bool:
    """The contest's retention bar worked independently of tunebox.contest.rules: tuned >= 90% of base on
    the figures as report.json writes them (shortest repr), in decimal integers: 10 * tuned >= 9 * base.
    Floats get it wrong both ways (11.7 < 0.9 * 13 although 11.7 is 90% of 13)."""
    from decimal import Decimal

    return Decimal(repr(float(tuned))) * 10 >= Decimal(repr(float(base))) * 9


def strict_by_hand(answer: str, reference: str) -> bool:
    """The strict math rule, written independently of tunebox.contest.scoring for plain numeric answers:
    the answer's first number equals the reference's last one as decimals ("0.50" == "0.5")."""
    import re
    from decimal import Decimal

    number = r"-?\d+(?:\.\d+)?"
    got, want = re.findall(number, answer), re.findall(number, reference)
    return bool(got and want) and Decimal(got[0]) == Decimal(want[-1])


def squad_v11(predictions: list[str], golds: list[list[str]]) -> dict:
    """SQuAD v1.1's official evaluate script (normalize: lower-case, drop punctuation, drop a/an/the,
    collapse whitespace; token-bag F1 and exact match, best over the gold answers, x 100), written out
    again here so the tests do not score SQuAD with the code they test."""
    import re
    import string
    from collections import Counter

    def normalize(s: str) -> str:
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def f1(p: str, g: str) -> float:
        pt, gt = normalize(p).split(), normalize(g).split()
        same = sum((Counter(pt) & Counter(gt)).values())
        return 0.0 if same == 0 else 2 * (same / len(pt)) * (same / len(gt)) / (same / len(pt) + same / len(gt))

    f1s = [max(f1(p, g) for g in gs) for p, gs in zip(predictions, golds)]
    ems = [max(float(normalize(p) == normalize(g)) for g in gs) for p, gs in zip(predictions, golds)]
    return {"f1": 100.0 * sum(f1s) / len(f1s), "em": 100.0 * sum(ems) / len(ems)}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text(encoding="utf-8").split("\n") if l.strip()]
