"""The container images.

Without an engine: the Dockerfile is parsed per stack with that stack's build args and must keep
the rules (FROM a build arg: local, or a registry image by tag or digest; no `# syntax`, non-root
final stage, the CA only as the builder's secret); each rule is also broken on purpose to show the
check catches it; hadolint runs with .hadolint.yaml and its rules are broken on purpose too. The
build context, the CA scan and the compose graph are checked on real files. With a Docker engine (mark
`docker`): the built cpu image's labels, image.json, user and stack, and the CA scan against a deliberately leaky image.

The OCI labels say when the image was made and under which licence, the
same facts reach /etc/tunebox/image.json, no project file names a development machine's path,
and a run inside an image (no .git) still records the commit it ran: the image's revision label.
Checked without building an image: the Dockerfile is parsed per stack with its build args.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import cannot_run, docker_engine, docker_image
from images import build as image_cli
from images import buildkit, ca_scan, dockerfile, pin, stacks
from images import lint as image_lint
from images.compose_up import compose_services, profile_overrides, service_name
from tunebox.config import load_spec
from tunebox.contest.rules import CONTEST_STACK
from tunebox.deploy.k8s import host_data_root
from tunebox.images import image_tags, project_version
from tunebox.io import InputError
from tunebox.layout import PIPELINE
from tunebox.model.checkpoint import save_checkpoint_numpy
from tunebox.submission.code_archive import make_code_archive

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE_TEXT = (REPO / "Dockerfile").read_text(encoding="utf-8")
STACKS = stacks.list_stacks()


def lint(text: str, stack: str = "cpu-ms2.9", **extra_args) -> list[str]:
    args = stacks.build_args_for(stacks.load_stack(stack), "tunebox:test", revision="test")
    args.update(extra_args)
    _, problems = image_lint.lint_dockerfile(text, args)
    return [str(p) for p in problems]


# ---- stacks and the Dockerfile -------------------------------------------------------------


def test_every_stack_has_readme_lock_and_pins_its_versions():
    assert {"cpu-ms2.9", "ascend-cann9.0-ms2.9", "contest-2024"} <= set(STACKS)
    for name in STACKS:
        stack = stacks.load_stack(name)
        readme = (stack.folder / "README.md").read_text(encoding="utf-8")
        for key in ("MINDSPORE_VERSION", "MINDFORMERS_VERSION", "BASE_IMAGE"):
            assert stack.build_args[key] in readme, f"{name}/README.md does not mention {key}"
        lock = (stack.folder / "constraints.txt").read_text(encoding="utf-8").lower()
        assert f"mindspore=={stack.build_args['MINDSPORE_VERSION']}" in lock
        assert f"mindformers=={stack.build_args['MINDFORMERS_VERSION']}" in lock


def test_each_stack_that_installs_tunebox_pins_its_dependencies():
    """build-venv.sh installs pyproject's dependencies with `-c constraints.txt`: a package the lock does
    not pin would float to whatever PyPI serves on build day. Every dependency must be pinned, at a version
    its specifier allows, and so must what it requires in turn (read from the installed package's metadata
    wherever the installed version is the pinned one, so the metadata is the image's)."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    direct = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    assert "matplotlib" in {r.name for r in direct}
    for name in STACKS:
        stack = stacks.load_stack(name)
        if stack.build_args["INSTALL_TUNEBOX"] != "1":
            continue
        pins = {}
        for line in (stack.folder / "constraints.txt").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                pkg, _, pinned = line.strip().partition("==")
                pins[canonicalize_name(pkg)] = pinned
        todo, seen, unpinned = [(r, "pyproject.toml") for r in direct], set(), []
        while todo:
            req, wanted_by = todo.pop()
            key = canonicalize_name(req.name)
            if key in seen or key in {"pip", "setuptools", "wheel"}:  # pip freeze leaves the installer out
                continue
            seen.add(key)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            if key not in pins:
                unpinned.append(f"{req.name} (wanted by {wanted_by})")
                continue
            assert req.specifier.contains(pins[key], prereleases=True), (name, str(req), pins[key])
            try:
                if version(req.name) == pins[key]:
                    todo += [(Requirement(r), req.name) for r in requires(req.name) or []]
            except PackageNotFoundError:
                pass
        assert unpinned == [], f"images/{name}/constraints.txt pins none of {unpinned}"


def test_contest_stack_is_python39_on_bullseye_without_tunebox():
    args = stacks.load_stack("contest-2024").build_args
    assert (args["PYTHON"], args["BASE_IMAGE"], args["INSTALL_TUNEBOX"]) == (
        "python3.9",
        "tunebox/debian-bullseye:base",
        "0",
    )
    # the contest's versions, cited in tunebox/contest/rules.py (the winner's init_run.sh, MindFormers v1.1.0's README)

    assert (
        (args["MINDSPORE_VERSION"], args["MINDFORMERS_VERSION"], args["CANN_VERSION"])
        == (CONTEST_STACK["mindspore"], CONTEST_STACK["mindformers"], CONTEST_STACK["cann"])
        == ("2.3.0rc2", "1.1.0", "8.0.RC1")
    )
    pins = (REPO / "images/contest-2024/constraints.txt").read_text()
    assert "mindspore==2.3.0rc2" in pins and "mindformers==1.1.0" in pins and "mindpet==1.0.4" in pins


@pytest.mark.parametrize("name", STACKS)
def test_dockerfile_keeps_the_rules_for_stack(name):
    stack = stacks.load_stack(name)
    parsed, problems = image_lint.lint_stack(stack)
    assert [str(p) for p in problems] == []
    assert [s.name for s in parsed.stages] == ["runtime", "builder", "final"]
    assert parsed.stages[0].base == stack.base_image  # FROM ${BASE_IMAGE} resolved per stack
    assert [s.parent.name for s in parsed.stages[1:]] == ["runtime", "runtime"]
    labels = parsed.labels()
    assert labels["tunebox.stack"] == name
    assert labels["tunebox.mindspore"] == stack.build_args["MINDSPORE_VERSION"]
    assert labels["tunebox.mindformers"] == stack.build_args["MINDFORMERS_VERSION"]
    assert labels["tunebox.cann"] == stack.build_args["CANN_VERSION"]
    assert labels["org.opencontainers.image.version"] == project_version()
    final_user = [i for i in parsed.final.instructions if i.keyword == "USER"][-1].resolved
    assert final_user == "10001:10001"


def _final_apt_packages(name: str) -> set[str]:
    """The packages `apt-get install` puts into the final image's stages (final and what it is built on)."""
    import shlex

    parsed, _ = image_lint.lint_stack(stacks.load_stack(name))
    packages: set[str] = set()
    for stage in parsed.final.lineage():
        for ins in stage.instructions:
            if ins.keyword == "RUN" and "apt-get install" in ins.resolved:
                for command in ins.resolved.split("&&"):
                    words = shlex.split(command.replace("\\\n", " "))
                    if words[:2] == ["apt-get", "install"]:
                        packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


@pytest.mark.parametrize("name", STACKS)
def test_ascend_images_can_compile_operators_at_training_time(name):
    """CANN compiles operators while training (TBE/AscendC kernels on first use); its install guide
    lists gcc >= 7.3 (and g++) as a dependency (hiascend.com, CANN installation guide, "Installing
    Dependencies"). The compiler must be in the final image, not only the builder."""
    cann = stacks.load_stack(name).build_args.get("CANN_VERSION", "none")
    packages = _final_apt_packages(name)
    assert "libgomp1" in packages  # the parse found the runtime's install line
    if cann == "none":
        assert not {"gcc", "g++"} & packages  # the cpu image stays without compilers
    else:
        assert {"gcc", "g++"} <= packages


@pytest.mark.parametrize(
    "where, version", [("cann/aarch64-linux", "8.5.0"), ("ascend-toolkit/latest/x86_64-linux", "8.0.RC2")]
)
def test_install_cann_reads_the_toolkit_version_from_either_layout(tmp_path, where, version):
    """CANN >= 8.5 writes its install record under cann/<arch>-linux/, earlier CANN under
    ascend-toolkit/latest/<arch>-linux/ (hiascend.com, CANN 8.5.0 installation guide, "File Paths")."""
    info = tmp_path / "Ascend" / where / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text(f"package_name=Ascend-cann-toolkit\nversion={version}\narch=aarch64\n", encoding="utf-8")
    done = subprocess.run(
        ["sh", str(REPO / "images" / "install-cann.sh"), "version"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "TUNEBOX_ASCEND_ROOT": str(tmp_path / "Ascend")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version


BROKEN = {
    "syntax line": (lambda t: "# syntax=docker/dockerfile:1\n" + t, "syntax"),
    "registry FROM": (
        lambda t: t.replace("FROM ${BASE_IMAGE} AS runtime", "FROM debian:bookworm AS runtime"),
        "registry",
    ),
    "undeclared arg": (
        lambda t: t.replace("FROM ${BASE_IMAGE} AS runtime", "FROM ${NO_SUCH_ARG} AS runtime"),
        "not an ARG",
    ),
    "final on builder": (lambda t: t.replace("FROM runtime AS final", "FROM builder AS final"), "mounts the CA secret"),
    "root user": (lambda t: t.replace("USER ${TUNEBOX_UID}:${TUNEBOX_UID}", "USER root"), "non-root"),
    "no user": (lambda t: t.replace("USER ${TUNEBOX_UID}:${TUNEBOX_UID}\n", ""), "no USER"),
    "CA secret copied into a layer": (
        lambda t: t.replace(
            "    sh /build/build-venv.sh deps",
            "    cp /build/ca/ca-certificates.crt /opt/venv/ && sh /build/build-venv.sh deps",
        ),
        "names /build/ca",
    ),
    "CA secret where pip does not look": (
        lambda t: t.replace("id=ca,target=/build/ca/ca-certificates.crt", "id=ca", 1),
        "build-venv.sh reads",
    ),
    "CA secret in the final stage": (
        lambda t: t.replace(
            "RUN groupadd", "RUN --mount=type=secret,id=ca,target=/build/ca/ca-certificates.crt groupadd"
        ),
        "mounts the CA secret",
    ),
    "CA path in ENV": (
        lambda t: t.replace("    PYTHONUNBUFFERED=1 \\", "    PIP_CERT=/build/ca/ca.crt \\\n    PYTHONUNBUFFERED=1 \\"),
        "mentions",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_lint_catches_a_broken_rule(case):
    mutate, expected = BROKEN[case]
    broken = mutate(DOCKERFILE_TEXT)
    assert broken != DOCKERFILE_TEXT, "the mutation no longer applies: update the test with the Dockerfile"
    problems = lint(broken)
    assert any(expected in p for p in problems), problems


def test_hadolint_passes_the_dockerfile():
    assert [str(p) for p in image_lint.hadolint(DOCKERFILE_TEXT)] == []


INSTALL = 'apt-get install -y --no-install-recommends ${os_python:+"$os_python"} ${RUNTIME_PACKAGES}'
RUNTIME_RUN = 'RUN if command -v "${PYTHON}"'
HADOLINT_BROKEN = {
    "recommends pulled in": (lambda t: t.replace(INSTALL, INSTALL.replace("--no-install-recommends ", "")), "DL3015"),
    "ADD for a local file": (lambda t: t.replace("COPY images/entrypoint.sh", "ADD images/entrypoint.sh"), "DL3020"),
    # .hadolint.yaml refuses inline ignores: the only place a rule is switched off is that file.
    "inline ignore": (
        lambda t: t.replace(INSTALL, INSTALL.replace("--no-install-recommends ", "")).replace(
            RUNTIME_RUN, "# hadolint ignore=DL3015\n" + RUNTIME_RUN
        ),
        "DL3015",
    ),
}


@pytest.mark.parametrize("case", sorted(HADOLINT_BROKEN))
def test_hadolint_catches_a_broken_rule(case):
    mutate, code = HADOLINT_BROKEN[case]
    broken = mutate(DOCKERFILE_TEXT)
    assert broken != DOCKERFILE_TEXT, "the mutation no longer applies: update the test with the Dockerfile"
    findings = [str(p) for p in image_lint.hadolint(broken)]
    assert any(f"hadolint {code}" in f for f in findings), findings


def test_image_lint_command_runs_hadolint(tmp_path, monkeypatch, capsys):
    assert image_cli.main(["lint", "--stack", "cpu-ms2.9"]) == 0
    broken = tmp_path / "Dockerfile"
    broken.write_text(HADOLINT_BROKEN["recommends pulled in"][0](DOCKERFILE_TEXT), encoding="utf-8")
    monkeypatch.setattr(image_lint, "DOCKERFILE", broken)
    assert image_cli.main(["lint", "--stack", "cpu-ms2.9"]) == 2
    assert "hadolint DL3015" in capsys.readouterr().out


def test_lint_catches_an_unversioned_registry_base_and_unconsumed_build_args():
    """A registry base is fine when it names a release tag or a digest (the Ascend stack's official CANN
    image), not when it floats (no tag, :latest). Mutant: `_names_a_version` returning True always."""
    cann = "quay.io/ascend/cann:9.0.0-910b-ubuntu22.04-py3.11"
    assert lint(DOCKERFILE_TEXT, BASE_IMAGE=cann) == []
    assert lint(DOCKERFILE_TEXT, BASE_IMAGE=f"{cann}@sha256:{'0' * 64}") == []
    for floating in ("quay.io/ascend/cann", "quay.io/ascend/cann:latest", "localhost:5000/cann"):
        assert any("no tag or with :latest" in p for p in lint(DOCKERFILE_TEXT, BASE_IMAGE=floating)), floating
    assert any("NOT_AN_ARG" in p and "not declared" in p for p in lint(DOCKERFILE_TEXT, NOT_AN_ARG="x"))


def test_parser_joins_continuations_and_substitutes_like_the_engine():
    text = textwrap.dedent("""\
        ARG A=one
        FROM tunebox/x:${A} AS first
        ARG A
        # a comment
        ENV B=${A}-two \\
        # comment lines inside a continuation are dropped
            C=${MISSING:-fallback}
        RUN echo $B ${C:+set}
        FROM first AS second
        RUN echo [$A] $C
        """)
    parsed, problems = dockerfile.parse_dockerfile(text, {"A": "uno"})
    assert problems == []
    first, second = parsed.stages
    assert first.base == "tunebox/x:uno" and second.parent is first
    _, env, run = first.instructions
    assert (env.line, run.line) == (5, 8)
    assert run.resolved == "echo uno-two set"
    # A stage sees a global ARG only if it declares it again; ENV is inherited from the parent stage.
    assert second.instructions[0].resolved == "echo [] fallback"


def test_parser_scopes_args_and_env_like_the_engine():
    """Where dockerfile-parse's own scoping differs from the engine's, ours must follow the engine."""
    text = textwrap.dedent("""\
        ARG D=global
        FROM tunebox/x AS only
        ARG D=own
        ENV E=old
        ENV E=new F=$E
        LABEL a.b="$D and $E" c=${F}
        """)
    parsed, problems = dockerfile.parse_dockerfile(text, {})
    assert problems == []
    stage = parsed.final
    assert stage.scope["D"] == "own"  # a stage's own default beats the global one
    assert stage.env == {"E": "new", "F": "old"}  # each pair of one ENV sees the scope before it
    assert parsed.labels() == {"a.b": "own and new", "c": "old"}
    assert dockerfile.parse_dockerfile(text, {"D": "arg"})[0].final.scope["D"] == "arg"


# ---- build context and the CA scan ---------------------------------------------------------


def _fake_ca_bundle(path: Path) -> tuple[bytes, bytes]:
    """A bundle of one stock root (from certifi) and one certificate no public store has."""
    import certifi

    stock = ca_scan._PEM.search(Path(certifi.where()).read_bytes()).group(0) + b"\n"
    body = base64.b64encode(os.urandom(600))
    extra = (
        b"-----BEGIN CERTIFICATE-----\n"
        + b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        + b"\n-----END CERTIFICATE-----\n"
    )
    path.write_bytes(stock + extra)
    return stock, extra


def test_build_context_has_the_code_and_this_stack_but_no_certificate():
    context = buildkit.build_context(stacks.load_stack("cpu-ms2.9"))
    with tarfile.open(fileobj=context) as tar:
        names = set(tar.getnames())
    assert not any(n.endswith((".crt", ".pem")) for n in names)  # the CA goes as a BuildKit secret
    for needed in (
        "Dockerfile",
        "pyproject.toml",
        "tunebox/config.py",
        "images/cpu-ms2.9/stack.env",
        "images/build-venv.sh",
        "images/entrypoint.sh",
        "recipes/tiny.yaml",
    ):
        assert needed in names
    assert not any(
        n.startswith(("images/ascend-cann9.0-ms2.9", "images/contest-2024", ".git/", "tests/")) for n in names
    )


def _fake_docker(folder: Path, version: str, buildx: bool) -> Path:
    """A `docker` that answers `version --format` and `buildx version` as a real client would."""
    folder.mkdir()
    exe = folder / "docker"
    exe.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then {"echo buildx v0.20.0" if buildx else "exit 1"}; exit; fi\n'
        f'if [ "$1" = version ]; then echo {version}; exit; fi\nexit 1\n'
    )
    exe.chmod(0o755)
    return exe


def test_build_picks_a_docker_client_that_has_buildkit(tmp_path, monkeypatch):
    new_no_buildx = _fake_docker(tmp_path / "new", "28.2.2", buildx=False)  # refuses BuildKit builds
    debian = _fake_docker(tmp_path / "debian", "20.10.24+dfsg1", buildx=False)
    with_buildx = _fake_docker(tmp_path / "buildx", "28.2.2", buildx=True)

    def pick(*exes: Path) -> str:
        monkeypatch.setenv("PATH", os.pathsep.join(str(e.parent) for e in exes))
        exe, env = buildkit.buildkit_client()
        assert env["DOCKER_BUILDKIT"] == "1"
        return exe

    assert pick(new_no_buildx, debian) == str(debian)
    assert pick(with_buildx, debian) == str(with_buildx)
    with pytest.raises(InputError, match="docker.io"):
        pick(new_no_buildx)


# ---- the base image: official by digest, or the offline local base ------------------------------

CANN_REF = "quay.io/ascend/cann:9.0.0-910b-ubuntu22.04-py3.11"
# `docker buildx imagetools inspect` text output in the shape of the documented example
# (docs.docker.com/reference/cli/docker/buildx/imagetools/inspect/) for an index with two platforms and
# an attestation manifest. The digests are placeholders, NOT the real image's: this machine reaches no
# registry, so no real output could be recorded.
INDEX_DIGEST = "sha256:" + "1" * 64
IMAGETOOLS_SAMPLE = f"""\
Name:      {CANN_REF}
MediaType: application/vnd.oci.image.index.v1+json
Digest:    {INDEX_DIGEST}

Manifests:
  Name:        {CANN_REF}@sha256:{"2" * 64}
  MediaType:   application/vnd.oci.image.manifest.v1+json
  Platform:    linux/amd64

  Name:        {CANN_REF}@sha256:{"3" * 64}
  MediaType:   application/vnd.oci.image.manifest.v1+json
  Platform:    linux/arm64

  Name:        {CANN_REF}@sha256:{"4" * 64}
  MediaType:   application/vnd.oci.image.manifest.v1+json
  Platform:    unknown/unknown
  Annotations:
    vnd.docker.reference.digest: sha256:{"2" * 64}
    vnd.docker.reference.type:   attestation-manifest
"""


def _ascend_copy(tmp_path: Path, monkeypatch, lock: str = "") -> stacks.Stack:
    """The Ascend stack's folder copied under a tmp images/ (stacks.IMAGES_DIR points there)."""
    name = "ascend-cann9.0-ms2.9"
    images = tmp_path / "images"
    shutil.copytree(REPO / "images" / name, images / name, ignore=shutil.ignore_patterns("packages"))
    if lock:
        (images / name / "base.lock").write_text(lock, encoding="utf-8")
    monkeypatch.setattr(stacks, "IMAGES_DIR", images)
    return stacks.load_stack(name)


def _stand_in_docker(folder: Path, stdout: str) -> Path:
    """A `docker` that answers `buildx imagetools inspect REF` with a recorded output and logs its args."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inspect.txt").write_text(stdout, encoding="utf-8")
    exe = folder / "docker"
    exe.write_text(
        f'#!/bin/sh\necho "$@" >> {folder}/calls.txt\n'
        f'[ "$1 $2 $3" = "buildx imagetools inspect" ] || exit 1\ncat {folder}/inspect.txt\n'
    )
    exe.chmod(0o755)
    return exe


def test_pin_records_the_index_digest_and_platforms(tmp_path, monkeypatch, capsys):
    """`images.build pin` runs `docker buildx imagetools inspect REF` and writes base.lock; the build then
    uses REF@DIGEST. Mutants: the attestation's `unknown/unknown` counted as a platform; a `Digest:` taken
    from inside Manifests (the annotation's digest); inspect not given the stack's BASE_IMAGE."""
    stack = _ascend_copy(tmp_path, monkeypatch)
    assert pin.parse_imagetools_inspect(IMAGETOOLS_SAMPLE) == (INDEX_DIGEST, ("linux/amd64", "linux/arm64"))
    docker = _stand_in_docker(tmp_path / "bin", IMAGETOOLS_SAMPLE)
    monkeypatch.setenv("PATH", f"{docker.parent}{os.pathsep}{os.environ['PATH']}")
    assert image_cli.main(["pin", "--stack", stack.name]) == 0
    assert (tmp_path / "bin/calls.txt").read_text().split() == ["buildx", "imagetools", "inspect", CANN_REF]
    lock = pin.read_base_lock(stack)
    assert (lock.ref, lock.digest, lock.platforms) == (CANN_REF, INDEX_DIGEST, ("linux/amd64", "linux/arm64"))
    assert pin.resolve_base(stack) == f"{CANN_REF}@{INDEX_DIGEST}"
    assert pin.resolve_base(stack, platforms=("linux/arm64/v8", "linux/amd64")) == f"{CANN_REF}@{INDEX_DIGEST}"
    with pytest.raises(InputError, match="not linux/riscv64"):
        pin.resolve_base(stack, platforms=("linux/riscv64",))
    # An answer without an index digest (an error page, a changed format) is a failure, not an empty pin.
    _stand_in_docker(tmp_path / "bin", "Name: x\nMediaType: text/html\n")
    assert image_cli.main(["pin", "--stack", stack.name]) == 1
    assert "no `Digest: sha256:...` line" in capsys.readouterr().err
    assert pin.read_base_lock(stack).digest == INDEX_DIGEST  # the good pin is kept


def test_build_refuses_an_unpinned_registry_base_unless_told(tmp_path, monkeypatch):
    """The stack's lock rules. Mutants: resolve_base returning the tag when DIGEST is empty; read_base_lock
    not comparing its BASE_IMAGE with stack.env's; a malformed digest accepted."""
    # The cpu stack's local base needs no lock and no registry.
    assert pin.resolve_base(stacks.load_stack("cpu-ms2.9")) == "tunebox/debian-bookworm:base"
    stack = _ascend_copy(tmp_path, monkeypatch)
    assert pin.read_base_lock(stack).digest == ""  # as committed: nobody could pin it here
    with pytest.raises(InputError, match="image.pin --stack ascend-cann9.0-ms2.9"):
        pin.resolve_base(stack)
    assert pin.resolve_base(stack, allow_unpinned=True) == CANN_REF
    assert pin.resolve_base(stack, offline=True) == "tunebox/debian-bookworm:base"
    good = f"BASE_IMAGE={CANN_REF}\nDIGEST={INDEX_DIGEST}\n"
    stack = _ascend_copy(tmp_path / "stale", monkeypatch, good.replace("9.0.0-910b", "8.5.0-910b"))
    with pytest.raises(InputError, match="base.lock pins"):
        pin.resolve_base(stack)
    stack = _ascend_copy(tmp_path / "bad", monkeypatch, good.replace(INDEX_DIGEST, "sha256:abc"))
    with pytest.raises(InputError, match="not sha256:<64 hex digits>"):
        pin.resolve_base(stack)


def test_every_registry_base_has_a_base_lock_naming_it():
    for name in STACKS:
        stack = stacks.load_stack(name)
        if pin.is_local_image(stack.base_image):
            assert not (stack.folder / pin.BASE_LOCK).exists(), name
        else:
            assert pin.read_base_lock(stack) is not None, f"{name}: no base.lock (invoke image.pin --stack {name})"
        offline = stack.build_args.get("OFFLINE_BASE_IMAGE")
        assert offline is None or pin.is_local_image(offline), name


def test_build_command_carries_the_platforms_and_the_pinned_base(tmp_path, monkeypatch):
    """Mutants: build_command dropping --platform; prepare_build keeping stack.env's BASE_IMAGE tag."""
    cpu, tags, args = buildkit.prepare_build("cpu-ms2.9")
    cmd = buildkit.build_command("docker", tags, args, None, Path("iid"))
    assert cmd[:2] == ["docker", "build"] and "--platform" not in cmd  # the cpu build as before
    assert "BASE_IMAGE=tunebox/debian-bookworm:base" in cmd
    stack = _ascend_copy(
        tmp_path, monkeypatch, f"BASE_IMAGE={CANN_REF}\nDIGEST={INDEX_DIGEST}\nPLATFORMS=linux/amd64,linux/arm64\n"
    )
    platforms = ("linux/arm64", "linux/amd64")
    _, tags, args = buildkit.prepare_build(stack.name, platforms=platforms)
    cmd = buildkit.build_command("docker", tags, args, Path("ca.crt"), Path("iid"), platforms=platforms)
    assert cmd[:5] == ["docker", "buildx", "build", "--platform", "linux/arm64,linux/amd64"]
    assert f"BASE_IMAGE={CANN_REF}@{INDEX_DIGEST}" in cmd
    assert "OFFLINE_BASE_IMAGE=tunebox/debian-bookworm:base" in cmd and cmd[-1] == "-"
    _, _, args = buildkit.prepare_build(stack.name, offline=True)
    assert args["BASE_IMAGE"] == "tunebox/debian-bookworm:base"


@pytest.mark.parametrize(
    "override, code",
    [
        ({"BASE_IMAGE": f"{CANN_REF}@{INDEX_DIGEST}"}, 1),
        ({"BASE_IMAGE": "tunebox/debian-bookworm:base"}, 1),
        ({"CANN_VERSION": "8.5.0"}, 2),
    ],
    ids=["pinned", "offline", "cann"],
)
def test_build_venv_lets_the_build_choose_only_the_base(tmp_path, override, code):
    """build-venv.sh stops (exit 2) when a build arg and stack.env disagree, except BASE_IMAGE, which the
    build picks (REF@DIGEST or the offline base). Exit 1 here is the stand-in python3.11 after the check.
    Mutant: the check without `grep -vx BASE_IMAGE`."""
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    shutil.copy(REPO / "images/ascend-cann9.0-ms2.9/stack.env", stack_dir / "stack.env")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").write_text("#!/bin/sh\necho stand-in python3.11 >&2\nexit 1\n")
    (bin_dir / "python3.11").chmod(0o755)
    env = dict(
        stacks.read_env_file(stack_dir / "stack.env"),
        **override,
        PATH=f"{bin_dir}:/usr/bin:/bin",
        TUNEBOX_BUILD_STACK=str(stack_dir),
    )
    done = subprocess.run(
        ["sh", str(REPO / "images/build-venv.sh"), "stack"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == code, done.stderr
    assert ("stand-in python3.11" in done.stderr) == (code == 1)


def test_image_build_cli_runs_buildx_for_two_platforms(tmp_path, monkeypatch, capsys):
    """`images.build build --platform linux/arm64,linux/amd64` end to end, with a stand-in `docker` (it
    logs its arguments and writes the iidfile) and a stand-in engine whose image store cannot hold a
    multi-platform image: the pinned base and the platforms reach the CLI, no local base is asked for,
    and the store's refusal ends as a BuildFailed (exit 1) that names the fix. Mutants: the CLI not
    passing --platform on; build_image asking the engine for a registry base."""
    stack = _ascend_copy(tmp_path, monkeypatch, f"BASE_IMAGE={CANN_REF}\nDIGEST={INDEX_DIGEST}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1 $2" = "buildx version" ] && exit 0
        echo "$@" > {tmp_path}/build-args.txt
        cat > /dev/null
        while [ $# -gt 0 ]; do [ "$1" = --iidfile ] && echo sha256:{"5" * 64} > "$2"; shift; done
        """)
    )
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    asked = []

    class Store(_Client):
        def get(self, ref):
            asked.append(ref)
            raise LookupError(f"no such image: {ref}")

    monkeypatch.setattr(buildkit, "docker_client", lambda: Store())
    code = image_cli.main(["build", "--stack", stack.name, "--no-ca", "--platform", "linux/arm64,linux/amd64"])
    assert code == 1
    assert "containerd image store" in capsys.readouterr().err
    args = (tmp_path / "build-args.txt").read_text().split()
    assert args[:4] == ["buildx", "build", "--platform", "linux/arm64,linux/amd64"]
    assert f"BASE_IMAGE={CANN_REF}@{INDEX_DIGEST}" in args and "--secret" not in args
    assert asked == [f"sha256:{'5' * 64}"]  # the result only; the registry base is BuildKit's to pull


def test_nothing_in_the_image_build_names_an_architecture():
    """arm64 (most Ascend hosts) and x86_64 build from the same files: the architecture comes from the
    build platform (`uname -m` in install-cann.sh). Comments may name one. Mutant: install-cann.sh with
    `arch=x86_64`."""
    import re

    for rel in (
        "Dockerfile",
        "images/install-cann.sh",
        "images/build-venv.sh",
        "images/entrypoint.sh",
        "images/pipeline.sh",
    ):
        code = [ln for ln in (REPO / rel).read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")]
        named = [ln for ln in code if re.search(r"x86_64|amd64|aarch64|arm64", ln)]
        assert named == [], f"{rel}: {named}"


@pytest.mark.parametrize(
    "base_has, code, says", [("9.0.0", 0, "comes with the base image"), ("8.5.0", 2, "the base image has CANN 8.5.0")]
)
def test_install_cann_uses_the_cann_of_an_official_base(tmp_path, base_has, code, says):
    """The official CANN image brings CANN: nothing to install, but its version must be the stack's.
    Mutant: install-cann.sh without the `from_base` block (it then looks for .run files, exit 2)."""
    info = tmp_path / "Ascend/cann/aarch64-linux/ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text(f"version={base_has}\n", encoding="utf-8")
    done = subprocess.run(
        ["sh", str(REPO / "images" / "install-cann.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            "PATH": "/usr/bin:/bin",
            "CANN_VERSION": "9.0.0",
            "STACK": "ascend-cann9.0-ms2.9",
            "TUNEBOX_ASCEND_ROOT": str(tmp_path / "Ascend"),
            "TUNEBOX_STACK_ROOT": str(tmp_path / "stage"),
        },
    )
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr


def test_ca_scan_finds_copies_and_extra_certificates(tmp_path):
    import certifi

    ca = tmp_path / "bundle.pem"
    stock, extra = _fake_ca_bundle(ca)
    rewrapped = b"-----BEGIN CERTIFICATE-----\n" + re_wrap(extra, 76) + b"\n-----END CERTIFICATE-----\n"
    files = {
        "etc/ssl/certs/ca-certificates.crt": stock,  # a public root: fine
        "opt/venv/lib/certifi/cacert.pem": Path(certifi.where()).read_bytes(),
        "opt/app/renamed.bin": ca.read_bytes(),  # the bundle under another name
        "usr/local/share/ca-certificates/proxy.crt": rewrapped,  # the extra cert, re-wrapped
        "data/notes.txt": b"nothing here",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    findings = ca_scan.scan_tar_for_ca(buffer, ca)
    assert sorted(f.split(":")[0] for f in findings) == [
        "/opt/app/renamed.bin",
        "/usr/local/share/ca-certificates/proxy.crt",
    ]


def re_wrap(pem: bytes, width: int) -> bytes:
    body = b"".join(ca_scan.pem_bodies(pem))
    return b"\n".join(body[i : i + width] for i in range(0, len(body), width))


# ---- docker compose --------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["cpu", "ascend"])
def test_compose_runs_the_steps_in_order_on_one_volume(profile):
    services = compose_services()
    for i, step in enumerate(PIPELINE):
        service = services[service_name(step, profile)]
        assert service["profiles"] == [profile]
        assert service["command"][:5] == ["python", "-m", f"jobs.{step}", "--config", "/app/recipes/run.yaml"]
        expected = (
            {} if i == 0 else {service_name(PIPELINE[i - 1], profile): {"condition": "service_completed_successfully"}}
        )
        assert service.get("depends_on", {}) == expected
        volumes = {v["target"]: v for v in service["volumes"]}
        assert volumes["/data"] == {"type": "volume", "source": "tunebox-data", "target": "/data"}
        assert volumes["/app/recipes/run.yaml"]["read_only"] and volumes["/shared/data"]["read_only"]
        if profile == "ascend":
            assert {f"/dev/davinci{n}" for n in range(4)} | {
                "/dev/davinci_manager",
                "/dev/devmm_svm",
                "/dev/hisi_hdc",
            } == set(service["devices"])
            for host_path in ("/usr/local/Ascend/driver", "/usr/local/sbin/npu-smi", "/etc/ascend_install.info"):
                assert volumes[host_path]["source"] == host_path and volumes[host_path]["read_only"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert list(compose["volumes"]) == ["tunebox-data"]


def test_compose_profiles_pass_the_overlay_settings():
    assert profile_overrides("cpu") == ["runs_dir=/data/runs"]
    assert profile_overrides("ascend") == ["runs_dir=/data/runs", "train.device=Ascend", "train.workers=4"]


@pytest.mark.parametrize("profile", ["cpu", "ascend"])
def test_docker_compose_accepts_the_file(profile):
    if shutil.which("docker-compose") is None:
        cannot_run("docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run installs it)")
    out = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "--profile", profile, "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_tiny_recipe_data_maps_onto_the_shared_data_mount():
    spec = load_spec(REPO / "recipes" / "tiny.yaml")
    root = host_data_root(spec)
    assert root is not None and root.resolve() == (REPO.parent / "shared" / "data").resolve()
    assert (root / "math" / "contest-sample.jsonl").is_file()


# ---- with a Docker engine ------------------------------------------------------------------


class _Client:
    """Stands in for docker.DockerClient: what the engine answers is the test's choice."""

    def __init__(self, ping_error=None, get_error=None):
        self.ping_error, self.get_error = ping_error, get_error
        self.images = self

    def ping(self):
        if self.ping_error:
            raise self.ping_error
        return True

    def get(self, tag):
        if self.get_error:
            raise self.get_error
        return f"image {tag}"


@pytest.mark.parametrize("in_ci", [False, True], ids=["here", "CI"])
def test_docker_tests_skip_only_when_no_engine_or_image_and_fail_in_ci(monkeypatch, in_ci):
    import docker

    monkeypatch.setenv("CI", "true" if in_ci else "")
    cannot = pytest.fail.Exception if in_ci else pytest.skip.Exception

    def engine(client=None, error=None):
        def from_env(**kw):
            if error:
                raise error
            return client

        monkeypatch.setattr(docker, "from_env", from_env)
        return docker_engine()

    def outcome(call) -> BaseException | None:
        """What the call raised, skips and fails included (they would otherwise end this test)."""
        try:
            call()
        except BaseException as exc:  # noqa: B902 - pytest's skip/fail outcomes are BaseExceptions
            return exc
        return None

    no_socket = docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', "
        "FileNotFoundError(2, 'No such file or directory'))"
    )
    got = outcome(lambda: engine(error=no_socket))
    assert type(got) is cannot and "no Docker engine here" in str(got)
    server_error = docker.errors.APIError("500 Server Error: Internal Server Error")
    # an engine that answers with an error is a failure, here and in CI
    assert type(outcome(lambda: engine(_Client(ping_error=server_error)))) is docker.errors.APIError
    client = engine(_Client())
    assert docker_image(client, "tunebox:cpu-ms2.9", "build it") == "image tunebox:cpu-ms2.9"
    got = outcome(
        lambda: docker_image(
            _Client(get_error=docker.errors.ImageNotFound("No such image")), "tunebox:renamed", "build it"
        )
    )
    assert type(got) is cannot and "image tunebox:renamed is not built: build it" in str(got)
    got = outcome(lambda: docker_image(_Client(get_error=server_error), "tunebox:cpu-ms2.9", "build it"))
    assert type(got) is docker.errors.APIError


@pytest.fixture(scope="module")
def cpu_image():
    client = docker_engine()
    tag = image_tags("cpu-ms2.9")[0]
    return client, docker_image(client, tag, "invoke image.build --stack cpu-ms2.9")


def _run(client, image, command: list[str]) -> str:
    container = client.containers.run(image.id, command, detach=True)
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
        return container.logs(stdout=True, stderr=False).decode()
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_cpu_image_describes_itself(cpu_image):
    client, image = cpu_image
    labels = image.labels
    stack = stacks.load_stack("cpu-ms2.9")
    assert labels["tunebox.stack"] == "cpu-ms2.9"
    assert labels["tunebox.mindspore"] == stack.build_args["MINDSPORE_VERSION"]
    recorded = json.loads(_run(client, image, ["cat", "/etc/tunebox/image.json"]))
    assert {k: v for k, v in recorded.items() if k != "tunebox.image"} == {
        k: labels[k] for k in recorded if k != "tunebox.image"
    }
    assert image.attrs["Config"]["User"] == "10001:10001"
    out = _run(
        client,
        image,
        [
            "sh",
            "-c",
            'id -u; python -c "from importlib.metadata import version as v; '
            "print(v('mindspore'), v('mindformers'), v('tunebox'))\"",
        ],
    )
    assert out.split() == [
        "10001",
        stack.build_args["MINDSPORE_VERSION"],
        stack.build_args["MINDFORMERS_VERSION"],
        project_version(),
    ]


@pytest.mark.docker
def test_ca_scan_catches_a_leaky_image(tmp_path):
    client = docker_engine()
    docker_image(client, "tunebox/debian-bookworm:base", "invoke image.base")
    ca = tmp_path / "bundle.pem"
    _fake_ca_bundle(ca)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        # The second copy is deleted by a later layer: gone from the filesystem, still in a layer.
        dockerfile = (
            b"FROM tunebox/debian-bookworm:base\nCOPY leak.bin /opt/leak/innocent.bin\n"
            b"COPY leak.bin /tmp/deleted.bin\nRUN rm /tmp/deleted.bin\n"
        )
        for name, data in (("Dockerfile", dockerfile), ("leak.bin", ca.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = client.images.build(fileobj=context, custom_context=True, rm=True, forcerm=True)
    try:
        findings = ca_scan.find_ca_in_image(client, image.id, ca)
    finally:
        client.images.remove(image.id, force=True)
    assert sorted(f.split(":")[0] for f in findings) == ["/opt/leak/innocent.bin", "/tmp/deleted.bin"]


# ---- what the image says about itself: labels, image.json, the revision ----------------------

REVISION = "0123456789abcdef0123456789abcdef01234567"


def build_args(stack_name: str) -> dict[str, str]:
    stack = stacks.load_stack(stack_name)
    return stacks.build_args_for(stack, image_tags(stack.name)[0], revision=REVISION)


@pytest.mark.parametrize("name", STACKS)
def test_labels_say_when_and_under_which_licence(name):
    args = build_args(name)
    created = dt.datetime.fromisoformat(args["CREATED"].replace("Z", "+00:00"))
    assert created.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)
    licence = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"]
    parsed, problems = image_lint.lint_dockerfile((REPO / "Dockerfile").read_text(), args)
    assert [str(p) for p in problems] == []
    labels = parsed.labels()
    assert labels["org.opencontainers.image.created"] == args["CREATED"]
    assert labels["org.opencontainers.image.licenses"] == licence == "Apache-2.0"
    assert labels["org.opencontainers.image.revision"] == REVISION


@pytest.mark.parametrize("name", STACKS)
def test_image_json_records_the_labels(name, tmp_path):
    """Runs the Dockerfile's own image.json step (its python -c) with the stack's build args."""
    args = build_args(name)
    parsed, _ = image_lint.lint_dockerfile((REPO / "Dockerfile").read_text(), args)
    run = next(i for i in parsed.final.instructions if i.keyword == "RUN" and "/etc/tunebox/image.json" in i.value)
    argv = shlex.split(run.value)
    code = argv[argv.index("-c") + 1].replace("/etc/tunebox/image.json", str(tmp_path / "image.json"))
    env = {k: v for k, v in args.items()}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    recorded = json.loads((tmp_path / "image.json").read_text())
    labels = parsed.labels()
    assert {k: v for k, v in recorded.items() if k != "tunebox.image"} == {
        k: v for k, v in labels.items() if k in recorded
    }
    assert {
        "org.opencontainers.image.created",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.revision",
    } <= set(recorded)
    # every label but the descriptive ones reaches the file a job can read
    assert set(labels) - set(recorded) <= {"org.opencontainers.image.description"}


def test_no_project_file_names_a_development_machines_path():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        cannot_run("needs git and the git checkout (the list of project files)")
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    needles = ["/" + "work/", "/" + "root/"]  # split so this file does not match itself
    found = []
    for rel in filter(None, files.decode().split("\0")):
        path = REPO / rel
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{rel}: {n}" for n in needles if n in text]
    assert found == []


def manifest_in_an_image(tmp_path, revision: str) -> dict:
    labels = tmp_path / "image.json"
    labels.write_text(json.dumps({"org.opencontainers.image.revision": revision, "tunebox.stack": "cpu-ms2.9"}))
    # No git on PATH, as in the image.
    env = {
        "PATH": str(tmp_path / "no-bin"),
        "PYTHONPATH": str(REPO),
        "TUNEBOX_IMAGE_LABELS": str(labels),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "jobs.env", "--no-freeze"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_run_inside_an_image_records_the_image_revision_as_its_commit(tmp_path):
    clean = manifest_in_an_image(tmp_path, REVISION)
    assert clean["git"]["commit"] == REVISION and clean["git"]["dirty"] is False
    assert clean["git"]["source"] == "image label org.opencontainers.image.revision"
    dirty = manifest_in_an_image(tmp_path, REVISION + "-dirty")
    assert dirty["git"]["commit"] == REVISION and dirty["git"]["dirty"] is True
    unknown = manifest_in_an_image(tmp_path, "unknown")
    assert unknown["git"] is None


def test_code_archive_of_an_image_run_names_its_commit_without_the_warning(tmp_path):
    app = tmp_path / "app"  # what the image holds: code, no .git
    (app / "jobs").mkdir(parents=True)
    (app / "jobs" / "train.py").write_text("print('train')\n")
    (app / "pyproject.toml").write_text("[project]\nname = 'tunebox'\n")
    git = {
        "root": None,
        "commit": REVISION,
        "dirty": False,
        "branch": None,
        "source": "image label org.opencontainers.image.revision",
    }
    info = make_code_archive(git, tmp_path / "code.tar.gz", root=app)
    assert info["source"] == "image" and info["commit"] == REVISION and info["dirty"] is False
    assert "may differ" not in info["note"] and REVISION in info["note"]
    import tarfile

    with tarfile.open(tmp_path / "code.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["tunebox/jobs/train.py", "tunebox/pyproject.toml"]
    dirty = make_code_archive({**git, "dirty": True}, tmp_path / "code2.tar.gz", root=app)
    assert dirty["source"] == "working tree" and "may differ" in dirty["note"]


# ---- the contest's own stack: what it can run of ours ----------------------------------------


def fake_submission(folder: Path, names=("model.layers.0.attention.wq.weight", "model.norm_out.weight")) -> Path:
    import hashlib

    import numpy as np

    rng = np.random.default_rng(0)
    for step in (10, 20):
        path = folder / "checkpoints" / f"step-{step:06d}" / "model.ckpt"
        save_checkpoint_numpy(
            path, {name: rng.standard_normal((4, 4) if "wq" in name else (4,)).astype(np.float32) for name in names}
        )
    (folder / "results.json").write_text("{}")
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return folder


def check_submission(folder: Path, python: str = sys.executable, *extra: str):
    return subprocess.run(
        [python, str(REPO / "images" / "check_submission.py"), str(folder), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_submission_check_loads_every_checkpoint_with_this_mindspore(tmp_path):
    ok = check_submission(fake_submission(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("loaded checkpoints/step-") == 2 and "mindspore 2.9" in ok.stdout

    tampered = fake_submission(tmp_path / "tampered")
    (tampered / "results.json").write_text('{"edited": true}')
    (tampered / "stray.txt").write_text("x")
    bad = check_submission(tampered)
    assert bad.returncode == 2
    assert "results.json does not match its sha256" in bad.stdout and "stray.txt is not listed" in bad.stdout

    lora = check_submission(
        fake_submission(
            tmp_path / "lora", names=("model.layers.0.attention.wq.mindpet_delta_lora_a", "model.norm_out.weight")
        )
    )
    assert lora.returncode == 2 and "LoRA parameters left" in lora.stdout


def contest_python() -> tuple[str, dict] | None:
    """A working python3.9 and the environment it needs (pyenv's shim needs PYENV_VERSION), or None."""
    exe = shutil.which("python3.9")
    if exe is None:
        return None
    variants = [{}]
    if shutil.which("pyenv"):
        bare = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        variants += [{"PYENV_VERSION": v} for v in bare if v.startswith("3.9")]
    import os

    for extra in variants:
        env = {**os.environ, **extra}
        if (
            subprocess.run(
                [exe, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], env=env, capture_output=True
            ).returncode
            == 0
        ):
            return exe, env
    return None


def test_submission_check_runs_on_the_contest_python(tmp_path):
    found = contest_python()
    if found is None:
        cannot_run("no Python 3.9 here (the contest stack's Python; e.g. pyenv install 3.9)")
    exe, env = found
    done = subprocess.run(
        [exe, str(REPO / "images" / "check_submission.py"), str(fake_submission(tmp_path / "s")), "--no-load"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "python 3.9" in done.stdout


def test_contest_image_carries_the_submission_check():
    args = stacks.load_stack("contest-2024").build_args
    parsed, problems = image_lint.lint_dockerfile(
        (REPO / "Dockerfile").read_text(),
        stacks.build_args_for(stacks.load_stack("contest-2024"), "t", revision=REVISION),
    )
    assert problems == []
    copies = [i.resolved.split() for i in parsed.final.instructions if i.keyword == "COPY"]
    assert ["images/check_submission.py", "/usr/local/bin/tunebox-check-submission"] in copies
    assert args["INSTALL_TUNEBOX"] == "0"  # tunebox's jobs need Python 3.11; the stack is 3.9
