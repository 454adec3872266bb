"""Build tunebox's images with BuildKit (a docker CLI that has it) and check the Dockerfile's rules.

    python -m images.build base   [--suite bookworm] [--mirror URL]    # local Debian base image
    python -m images.build build  --stack cpu-ms2.9 [--ca-bundle FILE | --no-ca] [--tag T]
                                  [--platform linux/arm64,linux/amd64] [--offline] [--allow-unpinned]
    python -m images.build pin    --stack S                            # base.lock: the base's digest
    python -m images.build lint   [--stack S ...]                      # the rules per stack + hadolint
    python -m images.build verify --stack S [--image T]                # the CA is nowhere in the image
    python -m images.build lock   --stack S                            # freeze the image into constraints.txt

Why each piece exists (docs/CONTAINERS.md has the measurements and the platform facts):
- Every FROM is the build arg BASE_IMAGE. Where a registry is reachable (the Ascend stack's default)
  it names an official image, used by the digest `pin` records in images/<stack>/base.lock. Where
  none is (this machine, air-gapped sites: the cpu stack, `--offline`), it is a local image: `base`
  makes one from the host's own Debian mirror with debootstrap and `docker import`.
- Outbound TLS may go through a proxy with its own CA (here it does), so pip in the builder stage needs the host's
  CA bundle. It goes as the BuildKit secret `ca`, which a RUN sees while it runs and no layer keeps;
  the docker SDK cannot pass secrets, hence the CLI. `verify` scans every layer of the image for it.
- The lint reads the Dockerfile with dockerfile-parse and resolves each stage's ARG/ENV scope the
  way the engine does, so the rules are checked for stacks that cannot be built here (Ascend).

One module per tool: images/base_image.py, buildkit.py, lint.py (with dockerfile.py), ca_scan.py,
lock.py, pin.py; images/stacks.py reads the stacks. This file is their command line.

Exit codes: 0 ok, 2 bad input (unknown stack, lint problem, missing file), 1 build or engine failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from images.base_image import make_base_image
from images.buildkit import build_image
from images.ca_scan import find_ca_in_image
from images.lint import lint_stacks
from images.lock import write_lock
from images.pin import write_base_lock
from images.stacks import DEFAULT_CA_BUNDLE, BuildFailed, list_stacks, load_stack
from tunebox.cli import guarded
from tunebox.images import NoDockerEngine, docker_client, image_tags


def verify_image(stack_name: str, image: Optional[str], ca_bundle: Path) -> int:
    """`images.build verify`: 1 when the CA bundle is found in any layer of the image."""
    image = image or image_tags(load_stack(stack_name).name)[0]
    findings = find_ca_in_image(docker_client(), image, ca_bundle)
    for finding in findings:
        print(f"verify: {finding}")
    print(f"verify: {image}: {'CA FOUND' if findings else 'no trace of ' + str(ca_bundle)}")
    return 1 if findings else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m images.build",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("base", help="debootstrap a Debian suite into a local image")
    p.add_argument("--suite", default="bookworm", help="bookworm (cpu, Ascend stacks) or bullseye (contest-2024)")
    p.add_argument("--tag", help="default: tunebox/debian-SUITE:base")
    p.add_argument("--mirror", help="default: the host's apt mirror")
    p = sub.add_parser("build", help="build one stack's image")
    p.add_argument("--stack", default="cpu-ms2.9", help=f"one of: {', '.join(list_stacks())}")
    p.add_argument("--tag", help="default: tunebox:VERSION-STACK and tunebox:STACK")
    p.add_argument("--ca-bundle", type=Path, default=DEFAULT_CA_BUNDLE, help="the CA bundle pip trusts in the builder")
    p.add_argument("--no-ca", action="store_true", help="build without a CA bundle")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument(
        "--platform",
        default="",
        help="comma-separated, e.g. linux/arm64,linux/amd64 (docker buildx; default: the engine's own)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="build FROM the stack's OFFLINE_BASE_IMAGE (a local "
        "image) with CANN from packages/*.run: air-gapped sites",
    )
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="build FROM a registry base that base.lock has no digest for (by its tag)",
    )
    p = sub.add_parser("pin", help="record the registry base's digest in images/STACK/base.lock")
    p.add_argument("--stack", default="ascend-cann9.0-ms2.9")
    p = sub.add_parser("lint", help="check the Dockerfile's rules for each stack, then hadolint (no engine needed)")
    p.add_argument("--stack", action="append", help="default: every stack")
    p = sub.add_parser("verify", help="scan an image for the CA bundle's certificates")
    p.add_argument("--stack", default="cpu-ms2.9")
    p.add_argument("--image", help="default: the stack's versioned tag")
    p.add_argument("--ca-bundle", type=Path, default=DEFAULT_CA_BUNDLE)
    p = sub.add_parser("lock", help="write images/STACK/constraints.txt from the built image")
    p.add_argument("--stack", default="cpu-ms2.9")
    p.add_argument("--image")
    args = parser.parse_args(argv)

    def body() -> Optional[int]:
        if args.command == "base":
            make_base_image(args.suite, args.tag, args.mirror)
        elif args.command == "build":
            platforms = tuple(p.strip() for p in args.platform.split(",") if p.strip())
            build_image(
                args.stack,
                args.tag,
                None if args.no_ca else args.ca_bundle,
                nocache=args.no_cache,
                platforms=platforms,
                offline=args.offline,
                allow_unpinned=args.allow_unpinned,
            )
        elif args.command == "pin":
            write_base_lock(load_stack(args.stack))
        elif args.command == "lint":
            return lint_stacks(args.stack or [])
        elif args.command == "verify":
            return verify_image(args.stack, args.image, args.ca_bundle)
        elif args.command == "lock":
            write_lock(args.stack, args.image)
        return 0

    return guarded(f"image.{args.command}", body, known=(BuildFailed, NoDockerEngine))


if __name__ == "__main__":
    raise SystemExit(main())
