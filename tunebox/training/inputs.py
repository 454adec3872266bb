"""What MindFormers' Trainer is handed for a run: prep's rows (packed into train/packed.mindrecord when
train.packing), the plan, the answer-only LM head's size and the rendered MindFormers config (the train
job writes it to train/mindformers.yaml, TRAIN_YAML)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from tunebox.config import LoraSection, TrainSection
from tunebox.data.packing import pack_rows, write_packed_mindrecord
from tunebox.data.samples import mindrecord_shards, read_mindrecord
from tunebox.model.mf_config import checkpoint_section_loads, dump, render_train_config
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import base_checkpoint_file, ensure_safetensors_base, safetensors_base_dir
from tunebox.training.outputs import TRAIN_STATE, read_loss_log, training_done
from tunebox.training.plan import answer_capacity, plan_steps

log = logging.getLogger("tunebox.train")

TRAIN_YAML = "mindformers.yaml"  # under train/: the MindFormers config that runs (stock MindFormers runs it too)
PACKED_RECORDS = "packed.mindrecord"


def prepare(
    data_file: Path,
    out: Path,
    model: str,
    own_checkpoint: Optional[Path],
    train: TrainSection,
    lora: LoraSection,
    write: bool = True,
) -> dict:
    """Everything the Trainer needs, from prep's rows (`data_file`) and the run's settings: the plan (and
    whether an earlier session already ran all of it), the data files (packed into `out` when train.packing),
    the answer capacity and the rendered MindFormers config (`yaml`, its text), which starts from the base
    checkpoint: `own_checkpoint` (model.checkpoint, resolved) or the registry model `model` prep made ready.
    MindFormers 1.9 loads it from a safetensors copy in the cache, made here once. Rows are packed with the
    model's pad_token_id, the id MindFormers masks (prep checked that the tokenizer pads with it). With
    write=False nothing under `out` is written (a worker of a multi-node run)."""
    shape = get_model_shape(model)
    pad_id = shape.pad_token_id  # what prep padded with (prep checks the tokenizer's) and MindFormers masks
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
    # an earlier session's loss log, and whether it already ran every planned step (then train only writes
    # the index, summary and manifest again)
    losses = read_loss_log(out) if (out / TRAIN_STATE).exists() else []
    done = training_done(out, plan, losses)
    trainable, total_params = shape.lora_params(lora.rank, lora.target_modules), shape.total_params()
    base, section = base_checkpoint_file(model, own_checkpoint), checkpoint_section_loads(train)
    config = render_train_config(
        shape,
        train,
        lora,
        seq_length=ids.shape[1] - 1,
        data_files=files,
        out_dir=out,
        plan=plan,
        # what MindFormers 1.9's checkpoint.load_path loads (a safetensors copy in the cache), or the legacy
        # load_checkpoint (the .ckpt)
        base_checkpoint=safetensors_base_dir(base) if section else base,
        answer_capacity=capacity,
    )
    if section:
        ensure_safetensors_base(base)  # the folder the config names, written once
    tokens = int((ids != pad_id).sum())
    return {
        "plan": plan,
        "losses": losses,
        "done": done,
        "yaml": dump(config),  # the rendered config, the file stock MindFormers runs too (written as TRAIN_YAML)
        "capacity": capacity,
        "base_checkpoint": base,
        "data_file": data_file,
        "rows": len(ids),
        "tokens_per_row": tokens / max(1, len(ids)),
        "trainable_params": trainable,
        "total_params": total_params,
    }
