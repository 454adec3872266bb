"""The base image a stack builds FROM, pinned by digest: images/<stack>/base.lock records the reference
(stack.env's BASE_IMAGE) and the digest a registry gave for it, so two builds of one commit start from
the same bytes even when the registry moves the tag.

    python -m images.build pin --stack S            # on a host that reaches the registry

`pin` runs `docker buildx imagetools inspect REF` and reads its documented text output
(docs.docker.com/reference/cli/docker/buildx/imagetools/inspect/): the `Digest:` of the index (one
digest for every platform) and each manifest's `Platform:`. The build uses `REF@sha256:...`; it refuses
a registry base without a recorded digest unless told `--allow-unpinned`. Local bases (tunebox/...,
made by `invoke image.base`) have no registry digest and need no base.lock.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from images.stacks import BuildFailed, Stack, read_env_file
from tunebox.io import InputError

BASE_LOCK = "base.lock"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_local_image(ref: str) -> bool:
    """A name this machine's engine can have without a registry: tunebox/... and no registry host."""
    first = ref.split("/", 1)[0]
    has_registry = "/" in ref and ("." in first or ":" in first or first == "localhost")
    return bool(ref) and not has_registry and ref.startswith("tunebox/")


@dataclass
class BaseLock:
    """images/<stack>/base.lock: the reference, its index digest and the platforms that index offers."""

    path: Path
    ref: str
    digest: str = ""
    platforms: tuple[str, ...] = ()
    inspected: str = ""

    def pinned_ref(self) -> str:
        """REF@sha256:... (the tag stays for the reader; the engine pulls by the digest)."""
        return f"{self.ref}@{self.digest}"


def read_base_lock(stack: Stack) -> Optional[BaseLock]:
    """The stack's base.lock, checked: it must name stack.env's BASE_IMAGE and hold a well-formed digest."""
    path = stack.folder / BASE_LOCK
    if not path.exists():
        return None
    values = read_env_file(path)
    lock = BaseLock(
        path,
        values.get("BASE_IMAGE", ""),
        values.get("DIGEST", ""),
        tuple(p for p in values.get("PLATFORMS", "").split(",") if p),
        values.get("INSPECTED", ""),
    )
    if lock.ref != stack.base_image:
        raise InputError(
            f"base.lock pins {lock.ref!r} but stack.env's BASE_IMAGE is {stack.base_image!r}: "
            f"run `invoke image.pin --stack {stack.name}` to pin the new base",
            path,
        )
    if lock.digest and not _DIGEST.fullmatch(lock.digest):
        raise InputError(
            f"DIGEST={lock.digest!r} is not sha256:<64 hex digits>: run "
            f"`invoke image.pin --stack {stack.name}` on a host that reaches the registry",
            path,
        )
    return lock


def parse_imagetools_inspect(text: str) -> tuple[str, tuple[str, ...]]:
    """(index digest, platforms) from `docker buildx imagetools inspect REF`'s text output. Attestation
    manifests (Platform: unknown/unknown) are not platforms."""
    digest = ""
    platforms: list[str] = []
    in_manifests = False
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        value = value.strip()
        if not sep:
            continue
        if key == "Manifests" and not line.startswith(" "):
            in_manifests = True
        elif key == "Digest" and not in_manifests:
            digest = value
        elif key == "Platform" and in_manifests and value != "unknown/unknown" and value not in platforms:
            platforms.append(value)
    if not _DIGEST.fullmatch(digest):
        raise BuildFailed(f"no `Digest: sha256:...` line in docker buildx imagetools inspect's output:\n{text}")
    return digest, tuple(platforms)


def inspect_remote(ref: str, docker: str = "docker") -> str:
    """The text of `docker buildx imagetools inspect REF` (needs the buildx plugin and the registry)."""
    cmd = [docker, "buildx", "imagetools", "inspect", ref]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise InputError("no docker CLI on PATH: pin on a host with docker and its buildx plugin") from None
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"{' '.join(cmd)} took over 300 s: is the registry reachable?") from None
    if done.returncode != 0:
        raise BuildFailed(
            f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr.strip()} "
            f"(pin needs the buildx plugin and a host that reaches the registry)"
        )
    return done.stdout


def write_base_lock(stack: Stack, docker: str = "docker") -> Path:
    """`images.build pin`: inspect the stack's registry base and record its digest in base.lock."""
    ref = stack.base_image
    if is_local_image(ref):
        raise InputError(
            f"BASE_IMAGE={ref} is a local image made by `invoke image.base`: it has no registry digest to pin",
            stack.folder / "stack.env",
        )
    digest, platforms = parse_imagetools_inspect(inspect_remote(ref, docker))
    path = stack.folder / BASE_LOCK
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    path.write_text(
        f"# The base image of the {stack.name} stack, pinned by `invoke image.pin --stack {stack.name}`\n"
        f"# (docker buildx imagetools inspect). The build uses BASE_IMAGE@DIGEST.\n"
        f"BASE_IMAGE={ref}\nDIGEST={digest}\nPLATFORMS={','.join(platforms)}\nINSPECTED={now}\n",
        encoding="utf-8",
    )
    print(f"image.pin: {ref} -> {digest} ({', '.join(platforms) or 'single-platform manifest'})")
    return path


def _platform(name: str) -> str:
    """linux/arm64/v8 and linux/arm64 are one platform (the registry may name the variant)."""
    return name[:-3] if name.endswith("arm64/v8") else name


def resolve_base(
    stack: Stack, offline: bool = False, allow_unpinned: bool = False, platforms: tuple[str, ...] = ()
) -> str:
    """The FROM the build uses: the stack's offline base when asked, a local base as it is, a registry
    base as REF@DIGEST from base.lock; without a digest only when allow_unpinned."""
    if offline:
        ref = stack.build_args.get("OFFLINE_BASE_IMAGE", "")
        if not ref:
            raise InputError(
                "--offline: this stack has no OFFLINE_BASE_IMAGE (a local image `invoke image.base` "
                "makes): add one to stack.env",
                stack.folder / "stack.env",
            )
        return ref
    ref = stack.base_image
    if is_local_image(ref):
        return ref
    lock = read_base_lock(stack)
    if lock is None or not lock.digest:
        if allow_unpinned:
            return ref
        raise InputError(
            f"BASE_IMAGE={ref} comes from a registry and no digest is recorded: run "
            f"`invoke image.pin --stack {stack.name}` (on a host that reaches the registry) and "
            f"commit base.lock, or build with --allow-unpinned, or --offline for the local base",
            stack.folder / BASE_LOCK,
        )
    offered = {_platform(p) for p in lock.platforms}
    missing = [p for p in platforms if offered and _platform(p) not in offered]
    if missing:
        raise InputError(
            f"{ref} offers {', '.join(lock.platforms)}, not {', '.join(missing)}: build for the platforms it has",
            lock.path,
        )
    return lock.pinned_ref()
