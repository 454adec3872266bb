"""Kubernetes manifests for one run, rendered from its run spec with kustomize.

The run spec is the single source. From it come: the Job's name and labels (run_id, spec hash),
the image (the stack train.device needs, tagged with this package's version), the number of pods
of a multi-node run (train.workers / cards per pod), the CPU request of a local run, and the
ConfigMap the pods read (the spec file itself, verbatim). The overlay in k8s/overlays/ decides
the shape (one CPU pod, one 4-card pod, N 4-card pods); `kubectl kustomize` does the assembly.

    python -m jobs.core.render --spec recipes/tiny.yaml --overlay local-cpu [-o out.yaml]
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

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

import yaml

from .config import REPO_ROOT, RunSpec, load_spec
from .io import InputError, atomic_write_text

K8S_DIR = REPO_ROOT / "k8s"
OVERLAYS_DIR = K8S_DIR / "overlays"
STACK_FOR_DEVICE = {"CPU": "cpu-ms2.9", "Ascend": "ascend-cann9.0-ms2.9"}
NPU_RESOURCE = "huawei.com/Ascend910"
JOB_NAME = "tunebox"                 # the Job in k8s/base/job.yaml
CONTAINER_NAME = "pipeline"
SPEC_IN_CONTAINER = PurePosixPath("/app/recipes/run.yaml")
DATA_MOUNT = PurePosixPath("/shared/data")
RUNS_MOUNT = PurePosixPath("/data")


# ---- images ----------------------------------------------------------------------------------

def project_version() -> str:
    """pyproject.toml's version (the source tree), else the installed package's."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.exists():
        import tomllib
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    try:
        return importlib.metadata.version("tunebox")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def image_tags(stack: str, version: Optional[str] = None) -> list[str]:
    """The tags `invoke image.build` gives a stack's image: versioned first, then the moving one."""
    return [f"tunebox:{version or project_version()}-{stack}", f"tunebox:{stack}"]


def image_for_spec(spec: RunSpec) -> str:
    return image_tags(STACK_FOR_DEVICE[spec.train.device])[0]


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
    for dotted, value in (("data.train_file", None if spec.data.generate else spec.data.train_file),
                          ("data.heldout_file", spec.data.heldout_file), ("eval.squad_file", spec.eval.squad_file),
                          ("model.checkpoint", spec.model.checkpoint), ("model.tokenizer", spec.model.tokenizer)):
        if not value:
            continue
        inside = (PurePosixPath(value) if value.startswith("/")
                  else _posix_resolve(SPEC_IN_CONTAINER.parent, value))
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
                spec.source_path)
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
        label = f"{label[:limit - 7].rstrip('-')}-{digest}"
    return label


def kustomize_text(directory: Path) -> str:
    """`kubectl kustomize DIR`: the multi-document YAML, as kustomize writes it."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise RuntimeError("kubectl is not on PATH; it renders the manifests (`kubectl kustomize`)")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise InputError(f"kubectl kustomize failed: {out.stderr.strip()}", directory)
    return out.stdout


def kustomize(directory: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(kustomize_text(directory)) if doc]


def list_overlays() -> list[str]:
    return sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))


@dataclass
class OverlayShape:
    """What an overlay runs, read from its own rendering."""
    overrides: list[str]          # the container's --set values
    npus_per_pod: int
    indexed: bool
    args: list[str]


def overlay_shape(overlay: str) -> OverlayShape:
    directory = OVERLAYS_DIR / overlay
    if not (directory / "kustomization.yaml").exists():
        raise InputError(f"unknown overlay {overlay!r}; known: {', '.join(list_overlays())}", directory)
    jobs = [d for d in kustomize(directory) if d.get("kind") == "Job"]
    if len(jobs) != 1:
        raise InputError(f"expected one Job in the overlay, found {len(jobs)}", directory)
    pod = jobs[0]["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == CONTAINER_NAME), None)
    if container is None:
        raise InputError(f"the Job has no container named {CONTAINER_NAME!r}", directory)
    args = [str(a) for a in container.get("args", [])]
    overrides = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"]
    limits = (container.get("resources") or {}).get("limits") or {}
    return OverlayShape(overrides, int(limits.get(NPU_RESOURCE, 0)),
                        jobs[0]["spec"].get("completionMode") == "Indexed", args)


@dataclass
class RenderPlan:
    spec: RunSpec
    overlay: str
    image: str
    job_name: str
    nodes: int
    workers: int
    args: list[str]


def plan_render(spec_path: str | Path, overlay: str, image: Optional[str] = None,
                overrides: Optional[list[str]] = None) -> RenderPlan:
    """Load the spec the way the pods will (overlay's --set, then ours) and derive the run's shape."""
    shape = overlay_shape(overlay)
    overrides = list(overrides or [])
    spec = load_spec(spec_path, shape.overrides + overrides)
    check_container_paths(spec)
    where = f"overlay {overlay}"
    if spec.train.device == "Ascend" and not shape.npus_per_pod:
        raise InputError(f"the spec trains on Ascend but {where} requests no {NPU_RESOURCE}: use "
                         f"--overlay ascend-4card or multi-node", spec.source_path)
    if spec.train.device == "CPU" and shape.npus_per_pod:
        raise InputError(f"{where} requests NPUs but the spec trains on CPU: set train.device: Ascend "
                         f"or use --overlay local-cpu", spec.source_path)
    workers, nodes = spec.train.workers, 1
    if shape.indexed:
        per_node = shape.npus_per_pod
        if workers % per_node or workers < 2 * per_node:
            raise InputError(f"{where} runs {per_node} workers per node, so train.workers must be nodes x "
                             f"{per_node} with at least 2 nodes ({2 * per_node}, {3 * per_node}, ...); "
                             f"the spec has {workers}. Fix: train.workers: {2 * per_node} in the spec "
                             f"(or --set train.workers={2 * per_node})", spec.source_path)
        nodes = workers // per_node
    elif shape.npus_per_pod and workers != shape.npus_per_pod:
        raise InputError(f"{where} gives the pod {shape.npus_per_pod} cards but train.workers is {workers}",
                         spec.source_path)
    args = list(shape.args)
    for ov in overrides:
        args += ["--set", ov]
    return RenderPlan(spec, overlay, image or image_for_spec(spec), f"{JOB_NAME}-{dns_label(spec.run_id)}",
                      nodes, workers, args)


def _split_image(ref: str) -> tuple[str, Optional[str]]:
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:        # no tag, or the colon was a registry port
        return ref, None
    return name, tag


def run_kustomization(plan: RenderPlan, root: Path, namespace: Optional[str] = None) -> dict:
    """The generated kustomization (in folder `root`) that puts the spec-derived parts on top of
    the overlay."""
    spec = plan.spec
    name, tag = _split_image(plan.image)
    image = {"name": "tunebox", "newName": name}
    if tag:
        image["newTag"] = tag
    container: dict = {"name": CONTAINER_NAME, "args": plan.args,
                       "env": [{"name": "TUNEBOX_IMAGE", "value": plan.image}]}
    job_spec: dict = {"template": {"spec": {"containers": [container]}}}
    if plan.nodes > 1:
        job_spec.update(completions=plan.nodes, parallelism=plan.nodes)
        container["env"].append({"name": "MS_WORKER_NUM", "value": str(plan.workers)})
    elif spec.train.device == "CPU":
        # msrun on CPU: one core per worker, and never less than the base's 2.
        container["resources"] = {"requests": {"cpu": str(max(2, plan.workers))}}
    patch = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": JOB_NAME}, "spec": job_spec}
    suffix = plan.job_name[len(JOB_NAME):]
    # Per run: the Job and its ConfigMap get the run's name and labels. The claims and the
    # headless Service are shared by every run in the namespace, so they keep theirs.
    per_run = [("Job", "metadata/name"), ("ConfigMap", "metadata/name")]
    run_labels = {"tunebox.io/run-id": spec.run_id[:63], "tunebox.io/spec-hash": spec.spec_hash()}
    label_paths = [("Job", "metadata/labels"), ("Job", "spec/template/metadata/labels"),
                   ("ConfigMap", "metadata/labels")]
    kustomization: dict = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes only relative paths to other kustomizations.
        "resources": [os.path.relpath(OVERLAYS_DIR / plan.overlay, root)],
        "transformers": [
            yaml.safe_dump({"apiVersion": "builtin", "kind": "PrefixSuffixTransformer",
                            "metadata": {"name": "run-suffix"}, "suffix": suffix,
                            "fieldSpecs": [{"kind": k, "path": p} for k, p in per_run]}, sort_keys=False),
            yaml.safe_dump({"apiVersion": "builtin", "kind": "LabelTransformer",
                            "metadata": {"name": "run-labels"}, "labels": run_labels,
                            "fieldSpecs": [{"kind": k, "path": p, "create": True} for k, p in label_paths]},
                           sort_keys=False)],
        "images": [image],
        "configMapGenerator": [{"name": "tunebox-spec", "behavior": "replace",
                                "files": [f"{SPEC_IN_CONTAINER.name}=spec.yaml"]}],
        "patches": [{"target": {"kind": "Job", "name": JOB_NAME}, "patch": yaml.safe_dump(patch, sort_keys=False)}],
    }
    if namespace:
        kustomization["namespace"] = namespace
    return kustomization


def render(spec_path: str | Path, overlay: str, image: Optional[str] = None, namespace: Optional[str] = None,
           overrides: Optional[list[str]] = None) -> tuple[str, RenderPlan]:
    """The manifests (multi-document YAML) for one run of `spec_path` on `overlay`."""
    plan = plan_render(spec_path, overlay, image, overrides)
    with tempfile.TemporaryDirectory(prefix="tunebox-render-") as tmp:
        root = Path(tmp)
        # Verbatim: the ConfigMap is the user's file, comments and all.
        shutil.copyfile(plan.spec.source_path, root / "spec.yaml")
        (root / "kustomization.yaml").write_text(
            yaml.safe_dump(run_kustomization(plan, root, namespace), sort_keys=False), encoding="utf-8")
        body = kustomize_text(root)
    header = (f"# Rendered by `python -m jobs.core.render` from {_shown(plan.spec.source_path)} "
              f"(spec hash {plan.spec.spec_hash()}) on overlay {overlay}.\n"
              f"# Job {plan.job_name}, image {plan.image}, {plan.nodes} pod(s), train.workers={plan.workers}, "
              f"train.device={plan.spec.train.device}.\n")
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.core.render", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="run spec YAML (recipes/X.yaml)")
    parser.add_argument("--overlay", default="local-cpu", help=f"one of: {', '.join(list_overlays())}")
    parser.add_argument("--image", help="image reference (default: tunebox:VERSION-STACK for the spec's device)")
    parser.add_argument("--namespace", help="put every object in this namespace")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra spec override, passed to the pods as --set too (repeatable)")
    parser.add_argument("-o", "--output", help="file to write ('-' for stdout; default build/k8s/RUN.OVERLAY.yaml)")
    parser.add_argument("--json", action="store_true", help="print the plan (job, image, pods) as JSON on stdout")
    args = parser.parse_args(argv)
    try:
        text, plan = render(args.spec, args.overlay, args.image, args.namespace, args.overrides)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output) if args.output else default_output(plan.spec, args.overlay)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
        print(f"render: {out}", file=sys.stderr)
    if args.json:
        print(json.dumps({"job": plan.job_name, "image": plan.image, "pods": plan.nodes, "workers": plan.workers,
                          "overlay": plan.overlay, "output": args.output or str(default_output(plan.spec, args.overlay))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
