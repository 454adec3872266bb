"""The plan of a training run: pure functions of the train settings and the data, decided before
MindFormers starts (the optimizer steps, the evenly spaced checkpoint steps, the answer-only LM head's
size) and what a resumed run must share with the one it resumes."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from tunebox.config import DataSection, LoraSection, ModelSection, TrainSection
from tunebox.io import InputError


def plan_steps(n_rows: int, train: TrainSection) -> dict:
    """Optimizer steps, steps per epoch (MindFormers drops the last partial batch of an epoch), warmup
    and the evenly spaced checkpoint steps."""
    if n_rows < train.batch_size:
        raise InputError(f"{n_rows} training rows is fewer than one batch (train.batch_size={train.batch_size})")
    batches_per_epoch = n_rows // (train.batch_size * train.grad_accum)
    total = train.max_steps if train.max_steps is not None else int(train.epochs * batches_per_epoch)
    if total < train.num_checkpoints:
        raise InputError(
            f"only {total} optimizer steps: fewer than train.num_checkpoints={train.num_checkpoints}; "
            f"raise train.epochs or lower train.batch_size / train.grad_accum"
        )
    return {
        "total_steps": total,
        "batches_per_epoch": batches_per_epoch,
        "warmup_steps": int(round(train.warmup_ratio * total)),
        "checkpoint_steps": checkpoint_steps(total, train.num_checkpoints),
    }


def checkpoint_steps(total: int, k: int) -> list[int]:
    """k evenly spaced steps ending at the last one: total*i/k rounded, i = 1..k."""
    return [int(round(total * i / k)) for i in range(1, k + 1)]


def answer_capacity(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> int:
    """The most loss-counted positions in any row (MindFormers counts a position when its input token
    is not padding and its shifted label is not IGNORE), rounded up to a multiple of 8: the static size
    of the answer-only LM head (mf_extensions.TuneboxLlamaForCausalLM). Exact for this data, whatever
    order MindFormers reads it in."""
    counted = (ids[:, :-1] != pad_id) & (labels[:, 1:] >= 0)
    most = int(counted.sum(axis=1).max()) if len(counted) else 1
    return min(-(-max(most, 1) // 8) * 8, ids.shape[1] - 1)


def _settings(section) -> dict:
    """A section's settings by name; a nested section (train.parallel) goes through json.dumps's default."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}


def train_hash(model: ModelSection, data: DataSection, lora: LoraSection, train: TrainSection) -> str:
    """What must match for a resume to be valid: model, data, LoRA and train settings (not eval)."""
    keep = {"model": _settings(model), "data": _settings(data), "lora": _settings(lora)}
    keep["train"] = {k: v for k, v in _settings(train).items() if k not in ("save_state_every", "master_port")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=_settings).encode()).hexdigest()[:16]
