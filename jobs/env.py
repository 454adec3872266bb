"""env: this machine's environment manifest as JSON, what every job records in runs/<run>/<job>/manifest.json.
`invoke env` runs it; it is also the image's default command.

    python -m jobs.env [--config recipes/x.yaml] [--input name=path ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunebox.config import load_spec
from tunebox.io import InputError, atomic_write_json
from tunebox.manifest import environment_manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.env",
        description="Print this machine's environment manifest as JSON (what every job records "
        "in runs/<run>/<job>/manifest.json).",
        epilog="exit codes: 0 ok, 2 bad input, 1 failure",
    )
    parser.add_argument(
        "--config", "-c", metavar="SPEC.yaml", help="a run spec (recipes/*.yaml) whose hash and content to include"
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a file or folder to hash into the manifest (repeatable)",
    )
    parser.add_argument("--no-freeze", action="store_true", help="leave out the full pip freeze")
    parser.add_argument("--out", help="write the JSON here (atomically) instead of printing it")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = None
        if args.config:
            spec = load_spec(args.config)
        inputs = {}
        for item in args.input:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise InputError(f"--input {item!r} must look like NAME=PATH")
            if not Path(path).exists():
                raise InputError(f"--input {name}: no such file or folder", path)
            inputs[name] = Path(path)
        manifest = environment_manifest(spec, inputs, include_pip_freeze=not args.no_freeze)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_json(args.out, manifest)
        print(args.out)
    else:
        print(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
