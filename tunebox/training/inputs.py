"""What MindFormers' Trainer is handed for a run: prep's rows (packed into train/packed.mindrecord when
train.packing), the plan, the answer-only LM head's size and the rendered MindFormers config."""

from __future__ import annotations

import logging

from tunebox import layout
from tunebox.config import RunSpec
from tunebox.data.packing import pack_rows, write_packed_mindrecord
from tunebox.data.samples import mindrecord_shards, read_mindrecord
from tunebox.io import InputError, atomic_write_text
from tunebox.model.mf_config import dump, render_train_config
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer
from tunebox.run_checkpoints import base_checkpoint
from tunebox.training.plan import answer_capacity, plan_steps

log = logging.getLogger("tunebox.train")

TRAIN_YAML = "mindformers.yaml"  # under train/: the MindFormers config that runs (stock MindFormers runs it too)
PACKED_RECORDS = "packed.mindrecord"


def prepare(spec: RunSpec, write: bool = True) -> dict:
    """Everything the Trainer needs, from the spec and prep's output: the plan, the data files (packed
    when train.packing), the answer capacity and the rendered MindFormers config. With write=False
    nothing is written (a worker of a multi-node run)."""
    out = spec.job_dir("train")
    data_file = spec.run_dir / layout.PREP_TRAIN_RECORDS
    if not data_file.exists():
        raise InputError(f"{data_file} not found: run prep first (invoke prep --config {spec.source_path})")
    base = base_checkpoint(spec)
    pad_id = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer)).pad_id
    ids, labels = read_mindrecord(data_file)
    files, packing = mindrecord_shards(data_file), None
    if spec.train.packing:
        samples = len(ids)
        ids, labels, segments, packing = pack_rows(ids, labels, pad_id)
        packed = out / PACKED_RECORDS
        if write:
            out.mkdir(parents=True, exist_ok=True)
            write_packed_mindrecord(packed, ids, labels, segments)
        files = [packed]
        log.info(
            "packing: %s samples into %s rows of %d tokens (filled %.0f%% -> %.0f%%, up to %d a row)",
            f"{samples:,}",
            f"{len(ids):,}",
            ids.shape[1],
            100 * packing["fill_before"],
            100 * packing["fill_after"],
            packing["max_samples_per_row"],
        )
    plan = plan_steps(len(ids), spec.train)
    plan["packing"] = packing
    capacity = answer_capacity(ids, labels, pad_id) if spec.train.lm_head_on_answers else 0
    config = render_train_config(
        get_model_shape(spec.model.name),
        spec.train,
        spec.lora,
        seq_length=ids.shape[1] - 1,
        data_files=files,
        out_dir=out,
        plan=plan,
        base_checkpoint=base,
        answer_capacity=capacity,
    )
    tokens = int((ids != pad_id).sum())
    return {
        "plan": plan,
        "config": config,
        "capacity": capacity,
        "base_checkpoint": base,
        "data_file": data_file,
        "rows": len(ids),
        "tokens_per_row": tokens / max(1, len(ids)),
    }


def render(spec: RunSpec) -> dict:
    """prepare() and write the config to train/mindformers.yaml: what train runs, and all that
    --render-only does."""
    prepared = prepare(spec)
    text = dump(prepared["config"])
    out = spec.job_dir("train")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / TRAIN_YAML, text)
    return prepared
