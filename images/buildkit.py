"""Build one stack's image with BuildKit: the base resolved (a local image, or a registry image by the
digest in base.lock), lint, the CA bundle as the secret `ca` (a RUN sees it while it runs, no layer
keeps it), the log streamed, then every layer scanned for the CA.

    python -m images.build build --stack cpu-ms2.9 [--ca-bundle FILE | --no-ca] [--tag T] [--no-cache]
        [--platform linux/arm64,linux/amd64] [--offline] [--allow-unpinned]
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from images.ca_scan import find_ca_in_image
from images.lint import lint_dockerfile
from images.pin import is_local_image, resolve_base
from images.stacks import (
    CA_SECRET_ID,
    DEFAULT_CA_BUNDLE,
    DOCKERFILE,
    BuildFailed,
    Stack,
    build_args_for,
    list_stacks,
    load_stack,
)
from tunebox.images import docker_client, image_tags
from tunebox.io import InputError
from tunebox.layout import REPO_ROOT


def build_context(stack: Stack) -> tempfile.SpooledTemporaryFile:
    """The repository as the engine should see it: .dockerignore applied and other stacks' folders
    (Ascend .run files are GBs) left out. The CA bundle is never in it: it goes as a secret."""
    from docker.utils import build as docker_build

    patterns = []
    ignore = REPO_ROOT / ".dockerignore"
    if ignore.exists():
        patterns = [
            ln.strip()
            for ln in ignore.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.strip().startswith("#")
        ]
    patterns += [f"images/{other}" for other in list_stacks() if other != stack.name]
    # gzip: the CLI takes stdin for a context only when it sees an archive's magic bytes, and the
    # pax header Python's tarfile starts with is not one it recognises.
    context = docker_build.tar(str(REPO_ROOT), exclude=patterns, dockerfile=("Dockerfile", None), gzip=True)
    context.seek(0)
    return context


def buildkit_client(need_buildx: bool = False) -> tuple[str, dict[str, str]]:
    """A docker CLI that builds with BuildKit, and its environment. The docker SDK cannot: BuildKit
    secrets need the CLI's session (docker/docker-py#2230, open since 2019). A CLI with the buildx
    plugin does it; without buildx, a client older than 23.0 does with DOCKER_BUILDKIT=1 (Debian's
    docker.io 20.10); a newer client without buildx refuses, so the next `docker` on PATH is tried.
    need_buildx: only a client with buildx (a multi-platform build, `--platform a,b`)."""
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    seen = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = os.path.realpath(os.path.join(folder or ".", "docker"))
        if exe in seen or not os.access(exe, os.X_OK):
            continue
        seen.append(exe)

        def run(*args: str) -> Optional[str]:
            try:
                out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, env=env)
            except (OSError, subprocess.TimeoutExpired):
                return None
            return out.stdout.strip() if out.returncode == 0 else None

        if run("buildx", "version") is not None:
            return exe, env
        version = run("version", "--format", "{{.Client.Version}}") or ""
        major = re.match(r"(\d+)\.", version)
        if major and not need_buildx and int(major.group(1)) < 23:
            return exe, env
    if need_buildx:
        raise InputError(
            f"--platform needs the docker buildx plugin (tried: {', '.join(seen) or 'none on PATH'}): "
            "install docker-buildx (Docker's apt repository) or docker-buildx-plugin"
        )
    raise InputError(
        f"no docker client here builds with BuildKit (tried: {', '.join(seen) or 'none on PATH'}): "
        "install the buildx plugin, or Debian's docker.io (20.10, BuildKit built in): "
        "apt-get install -y docker.io"
    )


def build_command(
    docker: str,
    tags: list[str],
    args: dict[str, str],
    ca_bundle: Optional[Path],
    iidfile: Path,
    nocache: bool = False,
    platforms: tuple[str, ...] = (),
) -> list[str]:
    """The CLI command: `docker build` with our tar on stdin (its Dockerfile), `docker buildx build
    --platform a,b` for named platforms (arm64 Ascend hosts, x86_64 ones)."""
    cmd = [docker, "buildx", "build", "--platform", ",".join(platforms)] if platforms else [docker, "build"]
    cmd += ["--progress=plain", "--iidfile", str(iidfile)]
    for name in tags:
        cmd += ["--tag", name]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if ca_bundle is not None:
        cmd += ["--secret", f"id={CA_SECRET_ID},src={ca_bundle.resolve()}"]
    if nocache:
        cmd.append("--no-cache")
    cmd.append("-")  # the context: our tar on stdin
    return cmd


def prepare_build(
    stack_name: str,
    tag: Optional[str] = None,
    offline: bool = False,
    allow_unpinned: bool = False,
    platforms: tuple[str, ...] = (),
) -> tuple[Stack, list[str], dict[str, str]]:
    """The stack, its tags and its build args with BASE_IMAGE resolved (pinned, offline or local), linted."""
    stack = load_stack(stack_name)
    tags = [tag] if tag else image_tags(stack.name)
    args = build_args_for(stack, tags[0])
    args["BASE_IMAGE"] = resolve_base(stack, offline, allow_unpinned, platforms)
    _, problems = lint_dockerfile(DOCKERFILE.read_text(encoding="utf-8"), args)
    if problems:
        raise InputError("the Dockerfile breaks the image rules:\n  " + "\n  ".join(map(str, problems)), DOCKERFILE)
    return stack, tags, args


def build_image(
    stack_name: str,
    tag: Optional[str] = None,
    ca_bundle: Optional[Path] = DEFAULT_CA_BUNDLE,
    nocache: bool = False,
    verify: bool = True,
    platforms: tuple[str, ...] = (),
    offline: bool = False,
    allow_unpinned: bool = False,
) -> str:
    """Resolve the base, lint, build with BuildKit (the CA bundle as the secret `ca`, log streamed), tag,
    and check no layer of the image holds the CA."""
    stack, tags, args = prepare_build(stack_name, tag, offline, allow_unpinned, platforms)
    base = args["BASE_IMAGE"]
    if ca_bundle is not None and not ca_bundle.exists():
        raise InputError(
            "CA bundle not found: pass --ca-bundle FILE, or --no-ca where TLS is not intercepted", ca_bundle
        )
    client = docker_client()
    if is_local_image(base):  # a registry base is pulled by BuildKit; a local one must be here already
        try:
            client.images.get(base)
        except Exception:
            suite = base.split("debian-")[-1].split(":")[0]
            raise InputError(
                f"base image {base} is not in the engine: run `invoke image.base --suite {suite}`",
                stack.folder / "stack.env",
            ) from None
    docker, env = buildkit_client(need_buildx=bool(platforms))

    print(
        f"image.build: {stack.name} -> {', '.join(tags)} FROM {base} (BuildKit, {docker}; "
        f"{'platforms ' + ','.join(platforms) + '; ' if platforms else ''}CA bundle: {ca_bundle or 'none'})",
        flush=True,
    )
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tunebox-build-") as tmp:
        iidfile = Path(tmp) / "image-id"
        cmd = build_command(docker, tags, args, ca_bundle, iidfile, nocache, platforms)
        code = subprocess.run(cmd, stdin=build_context(stack), env=env).returncode
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    if code != 0 or not image_id:
        raise BuildFailed(f"build of {stack.name} failed: {docker} build exited with {code} (log above)")
    try:
        image = client.images.get(image_id)
    except Exception as exc:  # docker.errors.ImageNotFound: the SDK is imported lazily
        if len(platforms) < 2:
            raise
        raise BuildFailed(
            f"built {', '.join(platforms)} as {image_id}, but the engine's image store does not "
            f"hold it ({exc}): a multi-platform image needs the containerd image store, or build "
            f"one --platform at a time (docs/CONTAINERS.md)"
        ) from None
    seconds = time.time() - started
    print(
        f"image.build: {image.id} {', '.join(tags)} size {image.attrs['Size'] / 1e9:.2f} GB, built in {seconds:.0f} s",
        flush=True,
    )
    if verify and ca_bundle is not None:
        findings = find_ca_in_image(client, image.id, ca_bundle)
        if findings:
            for name in tags:  # an image that leaks the CA must not be usable by its tags
                client.images.remove(name, noprune=True)
            raise BuildFailed(
                f"the CA bundle leaked into the final image {image.id} (tags removed):\n  " + "\n  ".join(findings)
            )
        print(
            "image.build: verified: no layer of the final image holds the build's CA bundle or its extra certificates",
            flush=True,
        )
    return image.id
