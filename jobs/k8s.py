"""k8s: render one run's Kubernetes manifests from its run spec (`invoke k8s.render`); how, and what comes
from the spec, is in tunebox/deploy/k8s.py.

    python -m jobs.k8s --config recipes/tiny.yaml --overlay local-cpu [-o out.yaml]
        [--image registry.example.com/tunebox:0.1.0-cpu-ms2.9] [--namespace NS] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

from tunebox.cli import add_spec_overrides
from tunebox.deploy.k8s import default_output, list_overlays, render
from tunebox.io import InputError, atomic_write_text


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.k8s",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True, metavar="SPEC.yaml", help="run spec YAML (recipes/X.yaml)")
    parser.add_argument("--overlay", default="local-cpu", help=f"one of: {', '.join(list_overlays())}")
    parser.add_argument("--image", help="image reference (default: tunebox:VERSION-STACK for the spec's device)")
    parser.add_argument("--namespace", help="put every object in this namespace")
    add_spec_overrides(parser, "extra spec override, passed to the pods as --set too (repeatable)")
    parser.add_argument("-o", "--output", help="file to write ('-' for stdout; default build/k8s/RUN.OVERLAY.yaml)")
    parser.add_argument("--json", action="store_true", help="print the plan (job, image, pods) as JSON on stdout")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KIND",
        help="keep only objects of this kind, e.g. PersistentVolumeClaim to create the claims "
        "before the job (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        text, plan = render(args.config, args.overlay, args.image, args.namespace, args.overrides)
        if args.only:
            docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") in args.only]
            if not docs:
                raise InputError(f"the render has no object of kind {', '.join(args.only)}")
            text = text.split("\n", 2)[0] + "\n" + yaml.safe_dump_all(docs, sort_keys=False)
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
        print(
            json.dumps(
                {
                    "job": plan.job_name,
                    "image": plan.image,
                    "pods": plan.nodes,
                    "workers": plan.workers,
                    "overlay": plan.overlay,
                    "output": args.output or str(default_output(plan.spec, args.overlay)),
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
