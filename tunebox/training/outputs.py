"""What a training run leaves in train/, read back and summed up: whether it can resume, whether it
already ran every planned step, and the checkpoint index, loss.csv and summary written after it."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path
from typing import Optional

from tunebox import layout
from tunebox.config import TrainSection
from tunebox.io import InputError, atomic_write_json, atomic_write_text, read_jsonl
from tunebox.model.mf_config import CHECKPOINT_PREFIX

TRAIN_STATE = "train_state.json"  # {"train_hash": ...} of the settings that wrote this folder


def read_jsonl_rows(path: Path) -> list[dict]:
    """Every row of one of the callbacks' JSONL files (loss.jsonl, sessions.jsonl); [] when there is none."""
    return read_jsonl(path) if path.exists() else []


def read_loss_log(out: Path) -> list[dict]:
    """loss.jsonl: one row per optimizer step (step, epoch, loss, lr, seconds), written by TuneboxLossLog."""
    return read_jsonl_rows(out / "loss.jsonl")


def session_start(out: Path) -> int:
    """The step this session started from (TuneboxLossLog's sessions.jsonl): 0, or where MindFormers'
    resume_training restored the run."""
    rows = read_jsonl_rows(out / "sessions.jsonl")
    return rows[-1]["start_step"] if rows else 0


# What MindFormers 1.9's checkpoint format leaves under checkpoint.save_path (mindformers/checkpoint/utils.py):
# one iteration_%08d/ folder per save (every rank's files, common.json), and a tracker naming the newest
# whole one, written after its files
TRACKER = "latest_checkpointed_iteration.txt"


def resume_point(out: Path) -> Optional[Path]:
    """The full checkpoint MindFormers resumes from: the iteration folder its tracker names, when both
    are there; in the legacy keys (data-parallel workers), rank 0's folder when its meta.json names the
    last save (None: nothing to resume from)."""
    legacy = out / "checkpoint" / "rank_0"
    if (legacy / "meta.json").is_file():
        return legacy
    tracker = out / "checkpoint" / TRACKER
    try:
        iteration = int(tracker.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    folder = out / "checkpoint" / f"iteration_{iteration:08d}"
    return folder if (folder / "common.json").is_file() else None


def check_resume(out: Path, settings_hash: str) -> bool:
    """True when a previous run of the same settings (plan.train_hash) left a checkpoint to resume from;
    InputError when the folder holds a run with other settings. Before a resume, the other iteration
    folders go: MindFormers rotates (save_max) only the saves of its own session, and a folder a kill
    cut short is never the tracker's."""
    state = out / TRAIN_STATE
    if state.exists() and json.loads(state.read_text())["train_hash"] != settings_hash:
        raise InputError(f"{out} holds a run with different training settings; use a new run_id or delete it")
    point = resume_point(out)
    if point is None:
        return False
    for stale in point.parent.glob("iteration_*"):
        if stale != point:
            shutil.rmtree(stale, ignore_errors=True)
    return True


def lora_files(out: Path, plan: dict, rank: int = 0) -> dict[int, Path]:
    """The planned LoRA checkpoint of each step that exists, by global step, in MindFormers' layout
    (named by the callback that writes them)."""
    from tunebox.model.mf_extensions import lora_checkpoint_path

    paths = {
        step: Path(lora_checkpoint_path(str(out), CHECKPOINT_PREFIX, step, plan["batches_per_epoch"], rank))
        for step in plan["checkpoint_steps"]
    }
    return {step: f for step, f in paths.items() if f.exists()}


def training_done(out: Path, plan: dict, losses: list[dict]) -> bool:
    """Whether an earlier session already ran every planned step: its loss log (`losses`, read_loss_log)
    reaches total_steps and every planned LoRA checkpoint is there (the callbacks write a step's LoRA file,
    then its loss line, then the full checkpoint). Checked before looking for a resume point: resuming
    from the final step would train past it (a step past max_steps) or fail (MindSpore refuses
    initial_epoch == epoch when the final step ends an epoch)."""
    return (
        bool(losses)
        and losses[-1]["step"] >= plan["total_steps"]
        and len(lora_files(out, plan)) == len(plan["checkpoint_steps"])
    )


def write_outputs(
    run_dir: Path,
    prepared: dict,
    losses: list[dict],
    train: TrainSection,
    run_s: float,
) -> dict:
    """After the Trainer: the checkpoint index, loss.csv and summary (rank 0's files) from the loss log
    (`losses`, read_loss_log) and what inputs.prepare() found (`prepared`); returns the summary."""
    out = run_dir / "train"
    plan = prepared["plan"]
    found, start_step = lora_files(out, plan), session_start(out)
    if not losses or losses[-1]["step"] < plan["total_steps"]:
        raise RuntimeError(
            f"MindFormers stopped at step {losses[-1]['step'] if losses else 0} of "
            f"{plan['total_steps']}; see {out / 'log'}"
        )
    loss_at = {r["step"]: r for r in losses}
    missing = [s for s in plan["checkpoint_steps"] if s not in found]
    if missing:
        raise RuntimeError(f"the LoRA checkpoints of steps {missing} are missing under {out / 'checkpoint_trainable'}")
    index = [
        {
            "step": s,
            "epoch": round(s / plan["batches_per_epoch"], 4),
            "loss": loss_at[s]["loss"],
            "file": str(found[s].relative_to(out)),
        }
        for s in plan["checkpoint_steps"]
    ]
    atomic_write_json(
        run_dir / layout.TRAIN_INDEX,
        {
            "checkpoints": index,
            "total_steps": plan["total_steps"],
            "planned": plan["checkpoint_steps"],
            "files_relative_to": "train",
        },
    )
    csv = "step,epoch,loss,lr,seconds\n" + "".join(
        f"{r['step']},{r['epoch']},{r['loss']:.6f},{(r['lr'] or 0):.6e},{r['seconds']}\n" for r in losses
    )
    atomic_write_text(out / "loss.csv", csv)
    steady = [r for r in losses if r["step"] > start_step + 1] or losses
    seconds = sum(r["seconds"] for r in steady)
    tokens = prepared["tokens_per_row"] * train.batch_size * len(steady)
    trainable, total_params = prepared["trainable_params"], prepared["total_params"]
    summary = {
        "steps": plan["total_steps"],
        "checkpoint_steps": plan["checkpoint_steps"],
        "trainable_params": trainable,
        "total_params": total_params,
        "ratio": trainable / total_params,
        "first_loss": losses[0]["loss"],
        "last_loss": losses[-1]["loss"],
        "first_step_seconds_incl_compile": losses[0]["seconds"] if start_step == 0 else None,
        "this_session_seconds": run_s,
        "resumed_from_step": start_step,
        "packing": plan.get("packing"),
        "answer_capacity": prepared["capacity"],
        "tokens_per_s_steady": tokens / max(1e-9, seconds),
        # this session's peak resident memory: the train process or its largest msrun worker (Linux: KiB)
        "peak_rss_mb": round(
            max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024, 1
        ),
        "trainer": "mindformers.Trainer",
        "mindformers_yaml": "mindformers.yaml",
    }
    atomic_write_json(run_dir / layout.TRAIN_SUMMARY, summary)
    return summary
