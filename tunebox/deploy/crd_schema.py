"""Offline validation of rendered manifests: built-in kinds against the Kubernetes schema
(kubernetes-validate), custom resources against JSON schemas derived from their public CRDs and
stored in k8s/schemas/ (k8s/schemas/README.md says where each CRD came from).

    python -m jobs.crd_schema derive CRD.yaml --version v1 -o k8s/schemas/KIND.json
    python -m jobs.crd_schema check build/k8s/RUN.OVERLAY.yaml

The derivation turns the CRD's openAPIV3Schema into JSON Schema the way the API server reads it:
`x-kubernetes-int-or-string` accepts an integer or a string, `x-kubernetes-preserve-unknown-fields`
keeps any field; every other object refuses fields it does not declare (the server would drop
them silently, so a misspelt field would do nothing on the cluster: here it is an error).
Descriptions are dropped to keep the files small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunebox.config import REPO_ROOT

SCHEMAS_DIR = REPO_ROOT / "k8s" / "schemas"
K8S_VERSIONS = ("1.28", "1.33")
_DROP = {
    "description",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-validations",
}


def openapi_to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    for key, value in node.items():
        if key in _DROP or key in ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"):
            continue
        if key == "properties":
            out[key] = {k: openapi_to_jsonschema(v) for k, v in value.items()}
        else:
            out[key] = openapi_to_jsonschema(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.get("type") == "object" and "format" in out:
        out.pop("format")
    return out


def derive(crd: dict, version: str) -> dict:
    """The JSON schema of one version of a CustomResourceDefinition, with apiVersion and kind pinned."""
    spec = crd["spec"]
    for v in spec["versions"]:
        if v["name"] == version:
            schema = openapi_to_jsonschema(v["schema"]["openAPIV3Schema"])
            break
    else:
        raise ValueError(f"CRD {crd['metadata']['name']} has no version {version!r}")
    schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version}"}
    schema["properties"]["kind"] = {"const": spec["names"]["kind"]}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema


def schema_file(api_version: str, kind: str) -> Path:
    group_version = api_version.replace("/", "_")
    return SCHEMAS_DIR / f"{kind.lower()}-{group_version}.json"


def is_builtin(api_version: str) -> bool:
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


def validate(doc: dict, versions=K8S_VERSIONS) -> None:
    """Raise if `doc` does not match its schema (ValueError when there is no schema for its kind)."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if is_builtin(api_version):
        import kubernetes_validate

        for version in versions:
            kubernetes_validate.validate(doc, version, strict=True)
        return
    path = schema_file(api_version, kind)
    if not path.exists():
        raise ValueError(
            f"no schema for {api_version} {kind} (expected {path}); derive it from the CRD: "
            f"python -m jobs.crd_schema derive CRD.yaml --version V -o {path}"
        )
    import jsonschema

    jsonschema.validate(doc, json.loads(path.read_text(encoding="utf-8")))
