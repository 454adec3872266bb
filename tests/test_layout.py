"""The run layout (tunebox/layout.py) is what everything else does: the job order in
docker-compose.yml, images/pipeline.sh, the Kubernetes manifests and tasks.py, and the hand-over files the
real jobs write on the tiny run (a job writing one of them under another name fails
test_the_jobs_write_the_declared_hand_over_files: tried with prep's stats.json renamed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

import tasks
from tunebox import layout

REPO = Path(__file__).resolve().parents[1]


def compose_order(services: dict, profile: str) -> list[str]:
    """The profile's services in the order their depends_on chain runs them."""
    mine = {name: s for name, s in services.items() if s.get("profiles") == [profile]}
    after = {next(iter(s["depends_on"])): name for name, s in mine.items() if s.get("depends_on")}
    first = [name for name, s in mine.items() if not s.get("depends_on")]
    assert len(first) == 1, f"profile {profile}: one service must start the chain, found {first}"
    order = first
    while order[-1] in after:
        order.append(after[order[-1]])
    assert len(order) == len(mine), f"profile {profile}: {sorted(set(mine) - set(order))} are off the chain"
    return order


def steps_values() -> dict[str, str]:
    """Every place that lists the steps for images/pipeline.sh: its default and each manifest's TUNEBOX_STEPS."""
    found = {}
    script = (REPO / "images" / "pipeline.sh").read_text(encoding="utf-8")
    found["images/pipeline.sh default"] = re.search(r"^steps=\$\{TUNEBOX_STEPS:-([^}]*)\}$", script, re.M).group(1)
    for path in sorted((REPO / "k8s").rglob("*.yaml")):
        for i, m in enumerate(re.finditer(r"- name: TUNEBOX_STEPS\n\s+value: (.*)", path.read_text(encoding="utf-8"))):
            found[f"{path.relative_to(REPO)} #{i + 1}"] = m.group(1).strip()
    return found


def test_every_copy_of_the_job_order_is_the_declared_one():
    """The job order is declared once, layout.PIPELINE. tasks.py and images/compose_up.py read it; the files
    that cannot import it (docker-compose.yml's depends_on chains, images/pipeline.sh's default and each
    Kubernetes manifest's TUNEBOX_STEPS) are held against it here. Tried with the cpu profile's evaluate
    service running jobs.bundle: this fails."""

    services = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    found = {
        f"docker-compose.yml profile {profile}": " ".join(
            services[name]["command"][2].removeprefix("jobs.") for name in compose_order(services, profile)
        )
        for profile in ("cpu", "ascend")
    }
    found.update(steps_values())
    assert len(found) >= 6  # compose x 2, pipeline.sh, k8s/base/job.yaml, the AscendJob's Scheduler and Worker
    assert found == {where: " ".join(layout.PIPELINE) for where in found}
    assert set(layout.PIPELINE) <= set(tasks.JOB_TASKS), "every pipeline job has its invoke task"


def test_config_is_a_leaf():
    """tunebox/config.py (the schema) imports no other subject of the project, not even inside a function, only
    the two leaves under every subject (io: errors and files; layout: the repo's and a run's paths): the checks
    across subjects are tunebox/spec_checks.py's. Tried with config's old lazy import of tunebox.model.registry
    put back into _validate: this fails."""
    tree = ast.parse((REPO / "tunebox" / "config.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert {m for m in imported if m.split(".")[0] == "tunebox"} <= {"tunebox.io", "tunebox.layout"}
    for leaf in ("io.py", "layout.py"):  # and those two import nothing of the project
        leaf_tree = ast.parse((REPO / "tunebox" / leaf).read_text(encoding="utf-8"))
        assert not [
            n.module
            for n in ast.walk(leaf_tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("tunebox")
        ], leaf


def test_the_jobs_write_the_declared_hand_over_files(tiny_run):
    run = tiny_run["run_dir"]
    handed_over = [v for v in vars(layout).values() if isinstance(v, PurePosixPath) and not v.is_absolute()]
    assert len(handed_over) >= 8
    files = handed_over + [layout.manifest(job) for job in layout.RUN_JOBS]
    missing = [str(f) for f in files if not (run / f).is_file()]
    assert not missing, f"the tiny run has no {missing}"
    with pytest.raises(ValueError):
        layout.manifest("train_worker")
