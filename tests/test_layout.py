"""The run layout (tunebox/layout.py) is what everything else does: the job order in
docker-compose.yml, images/pipeline.sh and the Kubernetes manifests, and the hand-over files the
real jobs write on the tiny run (a job writing one of them under another name fails
test_the_jobs_write_the_declared_hand_over_files: tried with prep's stats.json renamed)."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

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


@pytest.mark.parametrize("profile", ["cpu", "ascend"])
def test_compose_runs_the_declared_pipeline(profile):
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    order = compose_order(services, profile)
    assert [services[name]["command"][2] for name in order] == [f"jobs.{job}" for job in layout.PIPELINE]


def steps_values() -> dict[str, str]:
    """Every place that lists the steps for images/pipeline.sh: its default and each manifest's TUNEBOX_STEPS."""
    found = {}
    script = (REPO / "images" / "pipeline.sh").read_text(encoding="utf-8")
    found["images/pipeline.sh default"] = re.search(r"^steps=\$\{TUNEBOX_STEPS:-([^}]*)\}$", script, re.M).group(1)
    for path in sorted((REPO / "k8s").rglob("*.yaml")):
        for i, m in enumerate(re.finditer(r"- name: TUNEBOX_STEPS\n\s+value: (.*)", path.read_text(encoding="utf-8"))):
            found[f"{path.relative_to(REPO)} #{i + 1}"] = m.group(1).strip()
    return found


def test_pipeline_script_and_k8s_manifests_run_the_declared_pipeline():
    values = steps_values()
    assert len(values) >= 4     # pipeline.sh, k8s/base/job.yaml, the AscendJob's Scheduler and Worker
    assert values == {where: " ".join(layout.PIPELINE) for where in values}


def test_the_jobs_write_the_declared_hand_over_files(tiny_run):
    run = tiny_run["run_dir"]
    handed_over = [v for v in vars(layout).values() if isinstance(v, PurePosixPath) and not v.is_absolute()]
    assert len(handed_over) >= 8
    files = handed_over + [layout.manifest(job) for job in layout.RUN_JOBS]
    missing = [str(f) for f in files if not (run / f).is_file()]
    assert not missing, f"the tiny run has no {missing}"
    with pytest.raises(ValueError):
        layout.manifest("train_worker")
