"""What a training run leaves once MindFormers' Trainer has ended (rank 0's files): the checkpoint
index, loss.csv and summary (outputs.write_outputs), then the train job's manifest. The train job
calls it after an in-process run, and rank 0 of msrun's workers after theirs."""

from __future__ import annotations

import logging
from pathlib import Path

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.config import RunSpec
from tunebox.manifest import write_job_manifest
from tunebox.training.inputs import TRAIN_YAML
from tunebox.training.outputs import write_outputs

log = logging.getLogger("tunebox.train")


def finish(spec: RunSpec, prepared: dict, run_s: float, losses: list[dict]) -> Path:
    """After the Trainer: the checkpoint index, loss.csv, summary and manifest (rank 0's files).
    `prepared` is what inputs.prepare() found, `losses` the loss log (outputs.read_loss_log) and
    `run_s` this session's training seconds. The whole run spec goes into the manifest."""
    out = spec.job_dir("train")
    summary = write_outputs(spec.run_dir, prepared, losses, spec.train, run_s)
    kill_point("train.before-manifest")
    write_job_manifest(
        out,
        "train",
        spec,
        inputs={"train.mindrecord": prepared["data_file"], "base_checkpoint": prepared["base_checkpoint"]},
        outputs={"checkpoints": spec.run_dir / layout.TRAIN_INDEX, "mindformers_yaml": out / TRAIN_YAML},
        seeds={"train": spec.train.seed},
        extra=summary,
    )
    log.info("train: %d LoRA checkpoints in %s", len(summary["checkpoint_steps"]), out / "checkpoint_trainable")
    return out
