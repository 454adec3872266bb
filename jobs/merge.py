"""merge: every LoRA checkpoint of the train job -> a full MindFormers checkpoint,
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

import numpy as np
from tqdm import tqdm

from .core.cli import run_job
from .core.config import RunSpec
from .core.io import InputError, atomic_write_json, sha256_file
from .core.manifest import write_job_manifest
from .core.mf import LORA_A, LORA_B

log = logging.getLogger("tunebox.merge")


def merge_lora_into_base(base: dict[str, np.ndarray], lora: dict[str, np.ndarray], alpha: float, rank: int,
                         scale: float = 1.0) -> dict[str, np.ndarray]:
    """A new state dict: base weights with every LoRA pair folded in (float32 arithmetic)."""
    factor = scale * alpha / rank
    merged = dict(base)
    pairs = {k[: -len(LORA_A) - 1] for k in lora if k.endswith(LORA_A)}
    if not pairs:
        raise ValueError("no LoRA matrices found (names ending in mindpet_delta_lora_a)")
    for prefix in sorted(pairs):
        a, b = lora[f"{prefix}.{LORA_A}"], lora.get(f"{prefix}.{LORA_B}")
        if b is None:
            raise ValueError(f"{prefix}: lora_a without lora_b")
        wname = f"{prefix}.weight"
        if wname not in base:
            raise ValueError(f"LoRA targets {wname}, which the base checkpoint does not have")
        w = base[wname]
        delta = (b.astype(np.float32) @ a.astype(np.float32)) * np.float32(factor)
        if delta.shape != w.shape:
            raise ValueError(f"{wname}: LoRA delta {delta.shape} does not match weight {w.shape}")
        merged[wname] = (w.astype(np.float32) + delta).astype(w.dtype)
    return merged


def merge(spec: RunSpec, scale: float = 1.0) -> Path:
    from .core import mf
    from .core.weights import ensure_model

    ckpt_dir = spec.job_dir("train") / "checkpoints"
    index_file = ckpt_dir / "index.json"
    if not index_file.exists():
        raise InputError(f"{index_file} not found: run train first")
    train_index = json.loads(index_file.read_text())
    if len(train_index["checkpoints"]) < len(train_index["planned"]):
        log.warning("train has %d of %d planned checkpoints (still running, or stopped early)",
                    len(train_index["checkpoints"]), len(train_index["planned"]))
    base_ckpt = spec.resolve(spec.model.checkpoint) or ensure_model(spec.model.name) / "model.ckpt"
    out = spec.job_dir("merge")
    out.mkdir(parents=True, exist_ok=True)
    out_index_file = out / "index.json"
    done = {e["step"]: e for e in json.loads(out_index_file.read_text())["checkpoints"]} if out_index_file.exists() else {}

    base = None
    entries = []
    for entry in tqdm(train_index["checkpoints"], desc="merge", unit="ckpt"):
        step = entry["step"]
        target = out / f"step-{step:06d}" / "model.ckpt"
        prev = done.get(step)
        if prev and target.exists() and prev.get("scale") == scale and sha256_file(target) == prev["sha256"]:
            entries.append(prev)
            continue
        if base is None:
            base = mf.load_arrays(base_ckpt)
        lora = mf.load_arrays(ckpt_dir / entry["file"])
        merged = merge_lora_into_base(base, lora, spec.lora.alpha, spec.lora.rank, scale)
        mf.save_arrays(target, merged)
        entries.append({"step": step, "epoch": entry["epoch"], "train_loss": entry["loss"], "scale": scale,
                        "file": str(target.relative_to(out)), "lora_file": entry["file"],
                        "sha256": sha256_file(target), "bytes": target.stat().st_size})
        atomic_write_json(out_index_file, {"base_checkpoint": str(base_ckpt), "checkpoints": entries})
        log.info("merged step %d -> %s", step, target)
    atomic_write_json(out_index_file, {"base_checkpoint": str(base_ckpt), "checkpoints": entries})
    write_job_manifest(out, "merge", spec, inputs={"base_checkpoint": base_ckpt, "train_index": index_file},
                       outputs={"index": out_index_file}, extra={"merged": len(entries), "scale": scale})
    return out


def main(spec: RunSpec, args) -> None:
    merge(spec, args.scale)


def _args(parser) -> None:
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the LoRA update by this factor (1.0 = as trained)")


if __name__ == "__main__":
    raise SystemExit(run_job("merge", __doc__, main, _args))
