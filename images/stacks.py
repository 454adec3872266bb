"""The pinned stacks in images/<stack>/ (stack.env, constraints.txt) and the build args an image
of one is built with: what every image tool (build, lint, lock) reads first.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunebox.images import project_license, project_version
from tunebox.io import InputError
from tunebox.layout import REPO_ROOT
from tunebox.manifest import git_state

IMAGES_DIR = REPO_ROOT / "images"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CA_SECRET_ID = "ca"  # docker build --secret id=ca,src=BUNDLE
CA_SECRET_TARGET = "/build/ca/ca-certificates.crt"  # where the builder's RUNs see it (build-venv.sh)
CA_DIR = posixpath.dirname(CA_SECRET_TARGET)
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class BuildFailed(Exception):
    """The engine refused or a build step failed. Exit 1."""


@dataclass
class Stack:
    name: str
    folder: Path
    build_args: dict[str, str]

    @property
    def base_image(self) -> str:
        return self.build_args["BASE_IMAGE"]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (shell quoting allowed, # comments), as the builder's `sh` reads them."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", stripped)
        if not match:
            raise InputError(f"expected KEY=value, got {stripped!r}", path, number)
        key, raw = match.groups()
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise InputError(f'{key}: {exc} (quote values with spaces: KEY="a b")', path, number) from None
        values[key] = " ".join(words)
    return values


def list_stacks() -> list[str]:
    return sorted(p.parent.name for p in IMAGES_DIR.glob("*/stack.env"))


def load_stack(name: str) -> Stack:
    folder = IMAGES_DIR / name
    env_file = folder / "stack.env"
    if not env_file.exists():
        raise InputError(f"unknown stack {name!r}; known: {', '.join(list_stacks())}", env_file)
    args = read_env_file(env_file)
    if args.get("STACK") != name:
        raise InputError(f"STACK={args.get('STACK')!r} but the folder is {name!r}: make them equal", env_file)
    for required in ("BASE_IMAGE", "PYTHON", "MINDSPORE_VERSION", "MINDFORMERS_VERSION", "CANN_VERSION"):
        if not args.get(required):
            raise InputError(f"{required} is missing", env_file)
    if not (folder / "constraints.txt").exists():
        raise InputError(
            "constraints.txt is missing (the stack's lock file; an empty file is allowed "
            "before the first `python -m images.build lock`)",
            folder,
        )
    return Stack(name, folder, args)


def git_revision() -> str:
    """HEAD, with -dirty when the work tree differs; 'uncommitted' before the first commit."""
    state = git_state(REPO_ROOT)
    if not state or not state["commit"]:
        return "uncommitted"
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def git_source() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"file://{REPO_ROOT}"


def build_args_for(stack: Stack, image_tag: str, revision: Optional[str] = None) -> dict[str, str]:
    """stack.env plus what the image says about itself (labels, /etc/tunebox/image.json)."""
    args = dict(stack.build_args)
    args.update(
        VERSION=project_version(),
        REVISION=revision or git_revision(),
        SOURCE=git_source(),
        IMAGE_TAG=image_tag,
        LICENSES=project_license(),
        # RFC 3339, as the OCI annotation asks; late in the Dockerfile, so only the label layers rebuild.
        CREATED=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    )
    return args
