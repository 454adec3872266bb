"""Shared fixtures: a session cache for the tiny model, and one tiny end-to-end run of the job
graph (prep -> train -> merge -> evaluate) through the same CLI users run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import verify
from tunebox.config import load_spec
from tunebox.images import NoDockerEngine, docker_client
from tunebox.model.mf_config import render_train_config
from tunebox.model.registry import get_model_shape
from tunebox.submission import contents
from tunebox.training.plan import plan_steps

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
    """A Docker client whose engine answered a ping (tunebox.images.docker_client). Only "no engine
    here" (no SDK, no socket, refused, no permission) skips; an engine that answers with an error
    (docker.errors.APIError) is a failure."""
    try:
        return docker_client()
    except NoDockerEngine as exc:
        cannot_run(f"no Docker engine here: {exc} (docs/CONTAINERS.md)")


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


def run_job(
    name: str, recipe: Path, cache: Path, cwd: Path, *overrides: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
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
    subprocess.run(
        [sys.executable, "-c", "from tunebox.model.weights import ensure_model; ensure_model('tiny')"],
        check=True,
        env=env,
        cwd=tmp_path_factory.mktemp("w"),
        capture_output=True,
    )
    return cache


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_cache) -> dict:
    """prep -> train -> merge -> evaluate on the tiny recipe, once per test session; consoles: each job's
    stdout + stderr, and in_cwd: what they left in their working folder besides runs/ (test_console reads both)."""
    work = tmp_path_factory.mktemp("tinyrun")
    runs = work / "runs"
    consoles = {}
    for job in ("prep", "train", "merge", "evaluate"):
        proc = run_job(job, TINY_RECIPE, tiny_cache, work, f"runs_dir={runs}")
        consoles[job] = proc.stdout + proc.stderr
    in_cwd = sorted(p.name for p in work.iterdir() if p != runs)
    return {
        "run_dir": runs / "tiny",
        "cache": tiny_cache,
        "work": work,
        "runs": runs,
        "consoles": consoles,
        "in_cwd": in_cwd,
    }


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> dict:
    """The shared tiny run, copied and bundled through the CLI once per session: {sub, work, run_dir,
    cache, stdout (bundle's)}. Read-only for its users: a test that changes the submission or runs a job
    in the run folder copies it first (copy_submission)."""
    work = tmp_path_factory.mktemp("tinybundle")
    runs = work / "runs"
    shutil.copytree(tiny_run["run_dir"], runs / "tiny", ignore=shutil.ignore_patterns("submission", "mindformers"))
    proc = run_job("bundle", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={runs}")
    return {
        "sub": runs / "tiny" / "submission",
        "work": work,
        "run_dir": runs / "tiny",
        "cache": tiny_run["cache"],
        "stdout": proc.stdout,
    }


def copy_submission(sub: Path, tmp_path: Path) -> Path:
    """A copy of a submission folder to edit: copies data, so the original's hard links are never touched."""
    dst = tmp_path / "submission"
    shutil.copytree(sub, dst)
    return dst


def rewrite_sums(sub: Path) -> None:
    """What someone covering their tracks does: list the edited files' new checksums in SHA256SUMS."""
    rels = [r for r in contents.files_under(sub) if r != contents.SUMS_FILE]
    (sub / contents.SUMS_FILE).write_text(contents.format_sha256sums(contents.hash_files(sub, rels)))


def verify_here(sub: Path, capsys, *args: str) -> tuple[int, list[str]]:
    """Run verify's CLI in this process: (exit code, its FAIL lines)."""
    code = verify.main([str(sub), *args])
    out = capsys.readouterr().out
    return code, [line.strip() for line in out.splitlines() if line.strip().startswith("FAIL")]


@pytest.fixture(scope="module")
def mf_cwd(tmp_path_factory):
    """MindFormers writes ./output/log at import: import it from a scratch folder."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mf"))
    yield
    os.chdir(previous)


def start_until_lines(
    cmd: list[str], cwd: Path, env: dict, watched: Path, lines: int, timeout: float, poll: float = 0.1
) -> subprocess.Popen:
    """Start `cmd` in a session of its own (kill_session kills it and every process it started, as kill -9
    on a terminal would) and return once `watched` holds `lines` lines, the process ended, or `timeout`
    passed; the caller asserts which."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if watched.exists() and len(watched.read_text().splitlines()) >= lines:
            break
        time.sleep(poll)
    return proc


def kill_session(proc: subprocess.Popen) -> None:
    """kill -9 the process's whole session (start_until_lines started it in one) and reap it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def planned_checkpoint_steps(run_dir: Path, recipe: Path = TINY_RECIPE, *overrides: str) -> list[int]:
    """The checkpoint steps train plans for this run, from prep's row count (tunebox.training.plan.plan_steps),
    so no test copies a step number from an earlier run."""

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


@pytest.fixture(scope="module")
def mindformers_env(tmp_path_factory):
    """MindSpore on CPU in PyNative mode, imported from a scratch dir (mindformers writes ./output/log).
    Module-scoped: test_decode, test_packing and test_cpu_broadcast_patch each get their own."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mindformers"))
    try:
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE)
        ms.set_device("CPU")
        from mindformers import LlamaConfig, LlamaForCausalLM

        yield ms, LlamaConfig, LlamaForCausalLM
    finally:
        os.chdir(previous)


def rendered(recipe, tmp_path: Path, *overrides: str, out_dir: Path | None = None) -> tuple[object, dict, dict]:
    """(spec, plan, MindFormers train config) of a recipe (a name in recipes/ or a path) as train renders it, for
    40 batches of rows, an answer-only head of 24 and stand-in data and base checkpoint paths under tmp_path."""
    spec = load_spec(REPO / "recipes" / recipe, list(overrides))
    plan = plan_steps(40 * spec.train.batch_size, spec.train)
    cfg = render_train_config(
        get_model_shape(spec.model.name),
        spec.train,
        spec.lora,
        seq_length=spec.data.seq_length,
        data_files=[tmp_path / "train.mindrecord"],
        out_dir=out_dir or tmp_path / "train",
        plan=plan,
        base_checkpoint=tmp_path / "base",  # stands in for the safetensors folder train makes of the .ckpt
        answer_capacity=24,
    )
    return spec, plan, cfg
