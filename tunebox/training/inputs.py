"""What MindFormers' Trainer is handed for a run: prep's rows (packed into train/packed.mindrecord when
train.packing), the plan, the answer-only LM head's size and the rendered MindFormers config (the train
job writes it to train/mindformers.yaml, TRAIN_YAML)."""

from __future__ import annotations

import logging
from pathlib import Path

from tunebox.config import LoraSection, TrainSection
from tunebox.data.packing import pack_rows, write_packed_mindrecord
from tunebox.data.samples import mindrecord_shards, read_mindrecord
from tunebox.model.mf_config import checkpoint_section_loads, render_train_config
from tunebox.model.registry import ModelShape
from tunebox.model.weights import ensure_safetensors_base
from tunebox.training.plan import answer_capacity, plan_steps

log = logging.getLogger("tunebox.train")

TRAIN_YAML = "mindformers.yaml"  # under train/: the MindFormers config that runs (stock MindFormers runs it too)
PACKED_RECORDS = "packed.mindrecord"


def prepare(
    data_file: Path,
    out: Path,
    shape: ModelShape,
    pad_id: int,
    base: Path,
    train: TrainSection,
    lora: LoraSection,
    write: bool = True,
) -> dict:
    """Everything the Trainer needs, from prep's rows (`data_file`) and the run's settings: the plan, the
    data files (packed into `out` when train.packing), the answer capacity and the rendered MindFormers
    config, which starts from the base checkpoint `base` (a .ckpt; MindFormers loads it from a safetensors
    copy in the cache, made once). With write=False nothing under `out` is written (a worker of a multi-node
    run)."""
    ids, labels = read_mindrecord(data_file)
    files, packing = mindrecord_shards(data_file), None
    if train.packing:
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
    plan = plan_steps(len(ids), train)
    plan["packing"] = packing
    capacity = answer_capacity(ids, labels, pad_id) if train.lm_head_on_answers else 0
    trainable, total_params = shape.lora_params(lora.rank, lora.target_modules), shape.total_params()
    config = render_train_config(
        shape,
        train,
        lora,
        seq_length=ids.shape[1] - 1,
        data_files=files,
        out_dir=out,
        plan=plan,
        # what MindFormers 1.9's checkpoint.load_path loads, or the legacy load_checkpoint
        base_checkpoint=ensure_safetensors_base(base) if checkpoint_section_loads(train) else base,
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
        "trainable_params": trainable,
        "total_params": total_params,
    }
