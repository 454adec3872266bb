"""crd_schema: derive the JSON schema of a custom resource from its CRD, or check a rendered file offline
against k8s/schemas/ and the Kubernetes schema (tunebox/deploy/crd_schema.py).

    python -m jobs.crd_schema derive CRD.yaml --version v1 -o k8s/schemas/KIND.json
    python -m jobs.crd_schema check build/k8s/RUN.OVERLAY.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import yaml

from tunebox.deploy.crd_schema import derive, validate


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.crd_schema", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("derive", help="CRD YAML -> JSON schema of one version")
    d.add_argument("crd")
    d.add_argument("--version", required=True)
    d.add_argument("-o", "--output", required=True)
    c = sub.add_parser("check", help="validate every document of a rendered file")
    c.add_argument("manifests")
    args = parser.parse_args(argv)
    if args.cmd == "derive":
        docs = [x for x in yaml.safe_load_all(Path(args.crd).read_text(encoding="utf-8")) if x]
        crds = [x for x in docs if x.get("kind") == "CustomResourceDefinition"]
        if len(crds) != 1:
            print(f"error: {args.crd}: expected one CustomResourceDefinition, found {len(crds)}", file=sys.stderr)
            return 2
        Path(args.output).write_text(
            json.dumps(derive(crds[0], args.version), indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        return 0
    bad = 0
    for doc in yaml.safe_load_all(Path(args.manifests).read_text(encoding="utf-8")):
        if not doc:
            continue
        try:
            validate(doc)
            print(f"ok    {doc['kind']} {doc['metadata'].get('name')}")
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the exit code says it
            bad += 1
            print(f"FAIL  {doc.get('kind')} {doc.get('metadata', {}).get('name')}: {str(exc).splitlines()[0]}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
