"""The run's layout, declared once: the jobs in the order they run, and the files one job leaves
for the next, as paths relative to the run folder (runs/<run_id>/). A submission keeps the same
relative paths under logs/, so verify reads them there.

tasks.py, images/compose_up.py, bundle and verify read these names; tests/test_layout.py checks
docker-compose.yml, images/pipeline.sh and what the jobs actually write against them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

# The source tree (recipes/, k8s/, images/, pyproject.toml): what a checkout, and the image's /app, hold.
REPO_ROOT = Path(__file__).resolve().parents[1]

# The pipeline: weights fills the model cache (skipped when present), then each job reads what the
# one before it wrote. invoke pipeline, compose and the Kubernetes Job run exactly these, in order.
PIPELINE = ("weights", "prep", "train", "merge", "evaluate", "bundle")
# The jobs whose folders hold a run's results: bundle copies their logs and manifests into the
# submission (weights writes only to the cache; bundle writes the submission itself).
RUN_JOBS = ("prep", "train", "merge", "evaluate")

# What one job hands the next (relative to the run folder).
PREP_HELDOUT = PurePosixPath("prep/heldout.jsonl")  # prep -> evaluate, bundle
PREP_TRAIN_RECORDS = PurePosixPath("prep/train.mindrecord")  # prep -> train
PREP_STATS = PurePosixPath("prep/stats.json")  # prep -> evaluate (answer lengths), bundle
TRAIN_INDEX = PurePosixPath("train/checkpoints/index.json")  # train -> merge, bundle: the LoRA checkpoints
TRAIN_LOSS = PurePosixPath("train/loss.jsonl")  # train -> evaluate (the loss plot), bundle
TRAIN_SUMMARY = PurePosixPath("train/summary.json")  # train -> bundle
MERGE_INDEX = PurePosixPath("merge/index.json")  # merge -> evaluate, bundle: the merged checkpoints
EVALUATE_REPORT = PurePosixPath("evaluate/report.json")  # evaluate -> bundle: figures and the choice
MANIFEST = "manifest.json"  # every job's record, written last
RECORD = PurePosixPath("record.jsonl")  # one line per finished job: the run's history


def manifest(job: str) -> PurePosixPath:
    """A job's manifest, relative to the run folder."""
    if job not in PIPELINE:
        raise ValueError(f"unknown job {job!r}; the pipeline is {', '.join(PIPELINE)}")
    return PurePosixPath(job) / MANIFEST


def in_logs(path: PurePosixPath) -> str:
    """Where a run file sits in a submission: logs/<the same relative path>."""
    return f"logs/{path}"
