"""Run docker-compose.yml's job graph for one run spec and report every service's exit code.

    python -m images.compose_up [--config recipes/tiny.yaml] [--profile cpu|ascend] [--until STEP]
                                [--image TAG]

Why this wrapper: `docker-compose up --abort-on-container-exit` (or --exit-code-from) stops the
whole graph as soon as the first job exits, even with 0, so the later jobs never run; and plain
`up` returns 0 whatever the jobs did. So: plain `up`, then each service's container is inspected.

Before `up` it checks what would otherwise fail inside a container: the spec loads with the
profile's --set values (exit 2 naming the file and line), its data files lie under the folder
mounted at /shared/data, the image exists. It sets TUNEBOX_RECIPE, TUNEBOX_DATA, TUNEBOX_IMAGE,
TUNEBOX_IMAGE_ID and TUNEBOX_CA_BUNDLE for the compose file.

Exit codes: 0 every step exited 0; 2 bad input (here, or a job's own exit 2); 1 anything else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from tunebox.cli import guarded
from tunebox.config import load_spec
from tunebox.deploy.k8s import host_data_root
from tunebox.images import STACK_FOR_DEVICE, NoDockerEngine, docker_client, image_for_device
from tunebox.io import InputError
from tunebox.layout import PIPELINE, REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROJECT = "tunebox"
DEFAULT_RECIPE = "recipes/tiny.yaml"


def service_name(step: str, profile: str) -> str:
    return step if profile == "cpu" else f"{step}-{profile}"


def compose_services(compose_file: Path = COMPOSE_FILE) -> dict:
    """The services as compose sees them (PyYAML resolves the anchors and << merges)."""
    return yaml.safe_load(compose_file.read_text(encoding="utf-8"))["services"]


def profile_overrides(profile: str, compose_file: Path = COMPOSE_FILE) -> list[str]:
    """The --set values the profile's train service passes: the spec is checked with them."""
    services = compose_services(compose_file)
    name = service_name("train", profile)
    if name not in services:
        known = sorted({p for s in services.values() for p in s.get("profiles", [])})
        raise InputError(f"no service {name!r} (profile {profile!r}); profiles: {', '.join(known)}", compose_file)
    command = [str(c) for c in services[name]["command"]]
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == "--set"]


def host_ca_bundle() -> str:
    """The CA bundle mounted for downloads from a job (requests/pip in the venv use their own
    certifi otherwise, which does not know an intercepting proxy's CA)."""
    for candidate in (
        os.environ.get("TUNEBOX_CA_BUNDLE"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    import certifi  # requests' own store: correct wherever TLS is not intercepted

    return certifi.where()


def compose_env(recipe: str, profile: str, image: Optional[str], client) -> tuple[dict, object]:
    overrides = profile_overrides(profile)
    spec = load_spec(recipe, overrides)
    data_root = host_data_root(spec)
    if data_root is not None and not data_root.is_dir():
        raise InputError(f"the spec's data would be mounted from {data_root}, which does not exist", spec.source_path)
    image = image or image_for_device(spec.train.device)
    try:
        found = client.images.get(image)
    except Exception:
        raise InputError(
            f"image {image} is not in the engine: build it with "
            f"`invoke image.build --stack {STACK_FOR_DEVICE[spec.train.device]}`"
        ) from None
    env = dict(os.environ)
    env.update(
        TUNEBOX_RECIPE=str(Path(spec.source_path).resolve()),
        TUNEBOX_IMAGE=image,
        TUNEBOX_IMAGE_ID=found.id,
        TUNEBOX_CA_BUNDLE=host_ca_bundle(),
    )
    if data_root is not None:
        env["TUNEBOX_DATA"] = str(data_root)
    return env, spec


def _seconds(state: dict) -> Optional[float]:
    try:
        start = dt.datetime.fromisoformat(state["StartedAt"][:26].rstrip("Z"))
        end = dt.datetime.fromisoformat(state["FinishedAt"][:26].rstrip("Z"))
    except (KeyError, ValueError):
        return None
    return max(0.0, (end - start).total_seconds()) if end >= start else None


def service_results(client, services: list[str]) -> list[tuple[str, str, Optional[int], Optional[float]]]:
    """(service, status, exit code, seconds) of each service's container in this project."""
    results = []
    for service in services:
        containers = client.containers.list(
            all=True,
            filters={"label": [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]},
        )
        if not containers:
            results.append((service, "not started", None, None))
            continue
        state = containers[0].attrs["State"]
        status = state.get("Status", "?")
        code = state.get("ExitCode") if status == "exited" else None
        results.append((service, status, code, _seconds(state) if status == "exited" else None))
    return results


def compose_up(
    recipe: str = DEFAULT_RECIPE,
    profile: str = "cpu",
    until: str = "bundle",
    image: Optional[str] = None,
    fresh: bool = False,
) -> int:
    if until not in PIPELINE:
        raise InputError(f"--until must be one of {', '.join(PIPELINE)}, got {until!r}")
    compose = shutil.which("docker-compose")
    if not compose:
        raise InputError("docker-compose is not installed: apt-get install -y docker-compose")
    client = docker_client()
    env, spec = compose_env(recipe, profile, image, client)
    steps = PIPELINE[: PIPELINE.index(until) + 1]
    services = [service_name(s, profile) for s in steps]
    base = [compose, "-f", str(COMPOSE_FILE), "-p", PROJECT, "--profile", profile]
    print(
        f"compose.up: run {spec.run_id} ({env['TUNEBOX_RECIPE']}), image {env['TUNEBOX_IMAGE']}, "
        f"steps {' -> '.join(steps)}",
        flush=True,
    )
    # Containers of an earlier run would be restarted, not recreated, and their old exit codes
    # could be read back: remove them first.
    subprocess.run(
        base + ["rm", "--force", "--stop", *services],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if fresh:  # a clean run: this run's folder in the data volume goes first (the model cache stays)
        print(f"compose.up: --fresh: removing /data/runs/{spec.run_id} from the volume tunebox-data", flush=True)
        client.containers.run(
            env["TUNEBOX_IMAGE"],
            entrypoint=["rm", "-rf", f"/data/runs/{spec.run_id}"],
            volumes={"tunebox-data": {"bind": "/data", "mode": "rw"}},
            remove=True,
        )
    started = time.time()
    # Every step named, so every step's log is attached; depends_on orders them.
    up = subprocess.run(base + ["up", "--no-color", "--no-build", *services], env=env, cwd=REPO_ROOT)
    elapsed = time.time() - started

    results = service_results(client, services)
    print(f"\ncompose.up: {spec.run_id}, {elapsed:.0f} s in all (docker-compose up exited {up.returncode})")
    print(f"  {'service':<18} {'status':<12} {'exit':>4} {'seconds':>8}")
    for service, status, code, seconds in results:
        print(
            f"  {service:<18} {status:<12} {'-' if code is None else code:>4} "
            f"{'-' if seconds is None else f'{seconds:.0f}':>8}"
        )
    failed = [(s, c) for s, st, c, _ in results if c != 0]
    try:
        mount = client.volumes.get("tunebox-data").attrs["Mountpoint"]
        print(f"  outputs: volume tunebox-data, /data/runs/{spec.run_id}/ (on this host: {mount}/runs/{spec.run_id}/)")
    except Exception:
        pass
    if not failed:
        return 0
    first, code = failed[0]
    print(
        f"compose.up: {first} {'did not run' if code is None else f'exited {code}'}; "
        f"its log: docker-compose -p {PROJECT} --profile {profile} logs {first}",
        file=sys.stderr,
    )
    return 2 if code == 2 else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.compose_up", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        "-c",
        metavar="SPEC.yaml",
        default=os.environ.get("TUNEBOX_RECIPE", DEFAULT_RECIPE),
        help="run spec YAML",
    )
    parser.add_argument("--profile", default="cpu", choices=["cpu", "ascend"])
    parser.add_argument("--until", default="bundle", choices=PIPELINE, help="last step to run (default: bundle)")
    parser.add_argument("--image", help="image tag (default: tunebox:VERSION-STACK for the spec's device)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete this run's folder in the data volume first (default: resume what is there)",
    )
    args = parser.parse_args(argv)
    return guarded(
        "compose.up",
        lambda: compose_up(args.config, args.profile, args.until, args.image, args.fresh),
        known=(NoDockerEngine,),
        on_interrupt="containers already started keep running; see `docker compose ps`",
    )


if __name__ == "__main__":
    raise SystemExit(main())
