"""The LoRA scale dial: one merged checkpoint's trained LoRA evaluated at W + s * (alpha / r) * B A for
several scales s, each merged into the base weights in memory (the numpy backend), nothing written
but each scale's predictions and scores under evaluate/scale-dial/scale-<s>/."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from tunebox.config import LoraSection
from tunebox.data.tokenizer import TextTokenizer
from tunebox.evaluation.decode import NumpyLlama
from tunebox.evaluation.loop import HeldoutTask, SquadTask, evaluate_model
from tunebox.evaluation.runners import NumpyRunner
from tunebox.evaluation.scorecard import annotate
from tunebox.io import InputError, sha256_file
from tunebox.model.checkpoint import load_checkpoint_numpy
from tunebox.model.lora import merge_lora_into_base
from tunebox.model.registry import ModelShape

log = logging.getLogger("tunebox.evaluate")


def parse_scales(text) -> list[float]:
    """'0.25,0.5,1' or [0.25, 0.5, 1] -> [0.25, 0.5, 1.0]; empty/None -> []."""
    if not text:
        return []
    scales = []
    for part in text if isinstance(text, list) else str(text).split(","):
        part = str(part).strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"LoRA scale {part!r} is not a number; give scales like 0.25,0.5,1.0") from None
        if not np.isfinite(value):
            raise InputError(f"LoRA scale {part!r} must be finite")
        scales.append(value)
    return scales


def merged_in_memory(
    shape: ModelShape, lora: LoraSection, base_arrays: dict, lora_arrays: dict, scale: float
) -> NumpyLlama:
    """The NumpyLlama of W + scale * (alpha / r) * B A, without writing a checkpoint."""
    merged = merge_lora_into_base(base_arrays, lora_arrays, lora.alpha, lora.rank, scale)
    return NumpyLlama(merged, shape, source=f"in-memory merge at scale {scale:g}")


def dial_target(models: list[dict], tuned: list[dict], choice: dict) -> dict:
    """The checkpoint the dial turns: the contest's choice, else the last tuned one (models_to_evaluate's entry)."""
    name = choice["model"] or (tuned[-1]["model"] if tuned else None)
    if name is None:
        raise InputError("the scale dial needs a merged checkpoint: run merge first")
    return next(m for m in models if m["name"] == name)


def scale_dial(
    target: dict,
    scales: list[float],
    *,
    merge_index_file: Path,
    train_dir: Path,
    shape: ModelShape,
    lora: LoraSection,
    batch_size: int,
    task: HeldoutTask,
    squad: Optional[SquadTask],
    tok: TextTokenizer,
    backend: str,
    base: Optional[dict],
    contest: dict,
    out: Path,
) -> dict:
    """Evaluate `target` (dial_target's: a merged checkpoint's models_to_evaluate entry) at each LoRA scale,
    merging the trained LoRA into the base weights in memory."""
    log.info("scale dial on %s at scales %s", target["name"], ", ".join(f"{s:g}" for s in scales))
    if backend != "numpy":
        raise InputError(f"the LoRA scale dial merges in memory for the numpy backend; eval.backend is {backend}")
    merge_index = json.loads(merge_index_file.read_text())
    base_ckpt = Path(merge_index["base_checkpoint"])
    if not target.get("lora_file"):
        raise InputError(f"merge/index.json names no LoRA file for {target['name']}: run merge again")
    lora_file = train_dir / target["lora_file"]

    def load(scale):  # the runner of one scale, built only when that scale has something to compute
        return lambda: NumpyRunner(merged_in_memory(shape, lora, *arrays(), scale), batch_size)

    @functools.cache
    def arrays() -> tuple[dict, dict]:  # read once, on the first scale that has something to compute
        return load_checkpoint_numpy(base_ckpt), load_checkpoint_numpy(lora_file)

    lora_sha, base_sha = sha256_file(lora_file), sha256_file(base_ckpt)
    points = []
    for scale in scales:
        name = f"scale-{scale:g}"
        identity = {"checkpoint_sha256": f"lora {lora_sha} x {scale!r} + base {base_sha}"}
        info = {
            "step": target["step"],
            "train_loss": target["train_loss"],
            "scale": scale,
            "of": target["name"],
            "lora_file": str(lora_file),
            "checkpoint": str(base_ckpt),
        }
        entry = evaluate_model(name, out / "scale-dial" / name, identity, load(scale), task, squad, tok, backend, info)
        points.append(annotate(entry, base, contest))
    return {"checkpoint": target["name"], "step": target["step"], "lora_file": str(lora_file), "points": points}
