"""Which checkpoint of a run a person means: `--step N`, or by default the one evaluate chose
(report.json's best_checkpoint, the contest rule in contest/rules.py). export and chat read it here,
from the files train, merge and evaluate left (tunebox/layout.py), so the two cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunebox import layout
from tunebox.io import InputError
from tunebox.model.weights import base_checkpoint_file, ensure_model


def base_checkpoint(spec) -> Path:
    """The run's base model: model.checkpoint, or the registry model's converted checkpoint in the cache
    (built or converted first when it is not there yet)."""
    own = spec.resolve(spec.model.checkpoint)
    if not own:
        ensure_model(spec.model.name)
    return base_checkpoint_file(spec.model.name, own)


@dataclass(frozen=True)
class RunCheckpoint:
    step: int  # 0 = the base model (no LoRA)
    lora_file: Optional[Path]  # train's LoRA-only checkpoint (None for the base model)
    merged_file: Optional[Path]  # merge's full checkpoint (None when merge has not written it)
    merge_scale: Optional[float]  # the LoRA scale merge folded in (1.0 = as trained)
    chosen_by: str  # why this one: "--step N" or evaluate's reason


def _read_json(path: Path, missing: str) -> dict:
    if not path.is_file():
        raise InputError(f"{path} not found: {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"not JSON ({exc}); run the job that writes it again", path) from None


def chosen_step(run_dir: Path) -> tuple[int, str]:
    """The step evaluate's report chose, and its reason; an InputError when it chose none."""
    report_file = run_dir / layout.EVALUATE_REPORT
    report = _read_json(report_file, "run evaluate first, or name a checkpoint with --step N")
    best = report.get("best_checkpoint") or {}
    if best.get("step") is None:
        raise InputError(
            f"evaluate chose no checkpoint ({best.get('reason', 'no reason given')}); name one with --step N",
            report_file,
        )
    return int(best["step"]), f"evaluate's choice: {best.get('reason', '')}".rstrip(": ")


def pick_checkpoint(run_dir: Path, step: Optional[int] = None, need_merged: bool = False) -> RunCheckpoint:
    """The run's checkpoint at `step` (default: evaluate's choice; 0: the base model), with its LoRA
    file from train/checkpoints/index.json and its merged file from merge/index.json."""
    run_dir = Path(run_dir)
    if step == 0:
        return RunCheckpoint(0, None, None, None, "--step 0 (the base model)")
    if step is None:
        step, why = chosen_step(run_dir)
    else:
        why = f"--step {step}"
    train_index_file = run_dir / layout.TRAIN_INDEX
    train_index = _read_json(train_index_file, "run train first")
    by_step = {int(e["step"]): e for e in train_index.get("checkpoints", [])}
    if step not in by_step:
        raise InputError(
            f"no LoRA checkpoint at step {step}; the run has steps "
            f"{', '.join(map(str, sorted(by_step))) or 'none'} (and 0, the base model)",
            train_index_file,
        )
    lora_file = (run_dir / layout.TRAIN_INDEX).parents[1] / by_step[step]["file"]
    merged_file, scale = None, None
    merge_index_file = run_dir / layout.MERGE_INDEX
    if merge_index_file.is_file():
        merged = {int(e["step"]): e for e in _read_json(merge_index_file, "")["checkpoints"]}
        if step in merged:
            merged_file = merge_index_file.parent / merged[step]["file"]
            scale = float(merged[step].get("scale", 1.0))
    if need_merged and (merged_file is None or not merged_file.is_file()):
        raise InputError(f"no merged checkpoint for step {step}: run merge first", merge_index_file)
    return RunCheckpoint(step, lora_file, merged_file, scale, why)
