"""tunebox's container images: what each is called, and the Docker engine that holds them.

One home for the names that images/ (build, lock, compose), tunebox/deploy/k8s.py and the tests
share: the stack a device needs, the tags `invoke image.build` gives it, the version and license
its labels carry, and a client of the local engine.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from typing import Optional

from tunebox.layout import REPO_ROOT

STACK_FOR_DEVICE = {"CPU": "cpu-ms2.9", "Ascend": "ascend-cann9.0-ms2.9"}
START_DOCKERD = "start the engine: dockerd > /tmp/dockerd.log 2>&1 &  (then `docker info`)"


class NoDockerEngine(Exception):
    """The docker SDK is missing, or no engine answers here (no socket, refused, no permission)."""


def _pyproject() -> Optional[dict]:
    """pyproject.toml's [project] table, or None outside a source tree (an installed package)."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if not pyproject.exists():
        return None
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]


def project_version() -> str:
    """pyproject.toml's version (the source tree), else the installed package's."""
    project = _pyproject()
    if project is not None:
        return project["version"]
    try:
        return importlib.metadata.version("tunebox")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def project_license() -> str:
    """pyproject.toml's license (an SPDX expression), for the org.opencontainers.image.licenses label."""
    lic = (_pyproject() or {}).get("license")
    return (lic.get("text") if isinstance(lic, dict) else lic) or "NOASSERTION"


def image_tags(stack: str, version: Optional[str] = None) -> list[str]:
    """The tags `invoke image.build` gives a stack's image: versioned first, then the moving one."""
    return [f"tunebox:{version or project_version()}-{stack}", f"tunebox:{stack}"]


def image_for_device(device: str) -> str:
    """The versioned tag of the stack a train.device runs on."""
    return image_tags(STACK_FOR_DEVICE[device])[0]


def docker_client(timeout: int = 600):
    """A docker SDK client whose engine answered a ping. NoDockerEngine when the SDK is missing or
    no engine answers; an engine that answers with an error (docker.errors.APIError) propagates."""
    try:
        import docker  # the SDK; imported here so what needs no engine (lint, k8s) works without it
    except ImportError:
        raise NoDockerEngine("the docker Python package is not installed (pip install docker)") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.APIError:
        raise
    except Exception as exc:  # docker.errors.DockerException and socket errors alike
        raise NoDockerEngine(f"no Docker engine answers ({exc.__class__.__name__}: {exc}); {START_DOCKERD}") from None
    return client
