"""merge: every LoRA checkpoint of the train job (MindFormers' checkpoint_trainable/rank_0/ files,
listed in train/checkpoints/index.json) -> a full MindFormers checkpoint,
W' = W + scale * (alpha / r) * B @ A for each adapted projection; other tensors copied.

Outputs, under runs/<run_id>/merge/:
  step-{N}/model.ckpt   a plain LlamaForCausalLM checkpoint (base parameter names, no LoRA)
  index.json            step, file, sha256 of each merged checkpoint
  manifest.json

Resumable: a checkpoint already merged (listed in index.json with a matching sha256) is skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from tunebox import layout
from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.io import InputError, atomic_write_json, sha256_file
from tunebox.manifest import write_job_manifest
from tunebox.model.checkpoint import merge_streaming
from tunebox.model.mf_config import merged_checkpoint_types, merged_weight_dtype
from tunebox.run_checkpoints import base_checkpoint

log = logging.getLogger("tunebox.merge")


def merge(spec: RunSpec, scale: float = 1.0) -> Path:

    train_dir = spec.job_dir("train")
    index_file = spec.run_dir / layout.TRAIN_INDEX
    if not index_file.exists():
        raise InputError(f"{index_file} not found: run train first")
    train_index = json.loads(index_file.read_text())
    if len(train_index["checkpoints"]) < len(train_index["planned"]):
        log.warning(
            "train has %d of %d planned checkpoints (still running, or stopped early)",
            len(train_index["checkpoints"]),
            len(train_index["planned"]),
        )
    base_ckpt = base_checkpoint(spec)
    out = spec.job_dir("merge")
    out.mkdir(parents=True, exist_ok=True)
    out_index_file = spec.run_dir / layout.MERGE_INDEX
    done = (
        {e["step"]: e for e in json.loads(out_index_file.read_text())["checkpoints"]} if out_index_file.exists() else {}
    )

    # each tensor in the dtype the predicting network declares for it (weights in merge.dtype, else the
    # training dtype; RMSNorm weights float32): evaluate and stock MindFormers load it strictly
    out_types = merged_checkpoint_types(spec)
    dtype = merged_weight_dtype(spec.merge, spec.train)
    entries = []
    for entry in tqdm(train_index["checkpoints"], desc="merge", unit="ckpt"):
        step = entry["step"]
        target = out / f"step-{step:06d}" / "model.ckpt"
        prev = done.get(step)
        if (
            prev
            and target.exists()
            and prev.get("scale") == scale
            and prev.get("dtype") == dtype
            and sha256_file(target) == prev["sha256"]
        ):
            entries.append(prev)
            continue
        # tensor by tensor: memory stays flat whatever the model size (docs/BENCHMARKS.md, bench.merge)
        stats = merge_streaming(
            base_ckpt,
            train_dir / entry["file"],
            target,
            spec.lora.alpha,
            spec.lora.rank,
            scale,
            progress=False,
            sha256=True,
            out_types=out_types,
        )
        entries.append(
            {
                "step": step,
                "epoch": entry["epoch"],
                "train_loss": entry["loss"],
                "scale": scale,
                "dtype": dtype,
                "file": str(target.relative_to(out)),
                "lora_file": entry["file"],
                "sha256": stats.sha256,
                "bytes": stats.bytes_written,
            }
        )
        atomic_write_json(out_index_file, {"base_checkpoint": str(base_ckpt), "checkpoints": entries})
        log.info("merged step %d -> %s", step, target)
    atomic_write_json(out_index_file, {"base_checkpoint": str(base_ckpt), "checkpoints": entries})
    write_job_manifest(
        out,
        "merge",
        spec,
        inputs={"base_checkpoint": base_ckpt, "train_index": index_file},
        outputs={"index": out_index_file},
        extra={"merged": len(entries), "scale": scale},
    )
    return out


def main(spec: RunSpec, args) -> None:
    merge(spec, spec.merge.scale)


if __name__ == "__main__":
    raise SystemExit(run_job("merge", __doc__, main))
