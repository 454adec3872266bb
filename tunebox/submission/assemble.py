"""What bundle reads from a finished run and how it puts the run's files into the submission folder:
the jobs' JSON records, the check that every job ran with the spec given, the planned checkpoints each
merged, hard links for the weights, logs/ mirroring the run, the training log's tail, the tokenizer files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunebox import layout
from tunebox.config import RunSpec
from tunebox.io import InputError, read_jsonl
from tunebox.model.weights import tokenizer_file
from tunebox.submission import contents

log = logging.getLogger("tunebox.bundle")

MAX_LOG_FILE_BYTES = 200 << 20  # logs/ copies evaluate's whole folder: predictions, not weights
WEIGHT_SUFFIXES = {".ckpt", ".safetensors", ".npy", ".npz", ".bin", ".gguf"}


# ---- reading the run -------------------------------------------------------------------------


def read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise InputError(f"{what} not found: run the job that writes it first", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc.msg}, line {exc.lineno})", path, exc.lineno) from None


def check_spec_matches_run(spec: RunSpec, manifests: dict[str, dict]) -> None:
    """Every job must have run with this spec: the submission says "these hyperparameters produced
    these checkpoints", which is only true when the four manifests agree with the spec given here."""
    mine = spec.spec_hash()
    problems = []
    for job, manifest in manifests.items():
        if manifest.get("spec_hash") == mine:
            continue
        diff = contents.spec_differences(manifest.get("spec") or {}, spec)
        if diff:
            problems.append(
                f"{job} ran with spec {manifest.get('spec_hash')} (this one is {mine}): "
                + "; ".join(diff[:6])
                + " (as run != given)"
            )
        else:
            log.info("%s's spec hash differs only by keys added to the schema since, at their defaults", job)
    if problems:
        raise InputError(
            "the run was made with a different spec than the one given to bundle; pass the same "
            "--config and --set options as the jobs had:\n  " + "\n  ".join(problems),
            spec.source_path,
        )


def merged_checkpoints(run_dir: Path, train_index: dict, merge_index: dict) -> list[dict]:
    """The planned checkpoints, each merged: [{step, train_loss, path, sha256}] in step order."""
    planned = train_index.get("planned") or []
    if len(planned) != contents.NUM_CHECKPOINTS:
        raise InputError(
            f"train planned {len(planned)} checkpoints; the contest asks for {contents.NUM_CHECKPOINTS} "
            f"evenly spaced ones (train.num_checkpoints: {contents.NUM_CHECKPOINTS})",
            run_dir / layout.TRAIN_INDEX,
        )
    merged = {e["step"]: e for e in merge_index.get("checkpoints", [])}
    missing = [s for s in planned if s not in merged]
    if missing:
        raise InputError(
            f"merge has no checkpoint for step(s) {missing} of the planned {planned}: "
            f"finish train, then run merge again",
            run_dir / layout.MERGE_INDEX,
        )
    out = []
    for step in planned:
        e = merged[step]
        path = run_dir / "merge" / e["file"]
        if not path.is_file():
            raise InputError(f"merged checkpoint of step {step} is missing: run merge again", path)
        out.append({"step": step, "train_loss": e.get("train_loss"), "path": path, "sha256": e.get("sha256")})
    return out


@dataclass
class FinishedRun:
    """What bundle reads from a finished run: every job's record, the five merged checkpoints and their scores."""

    manifests: dict[str, dict]  # job -> its manifest.json
    train_index: dict
    merge_index: dict
    report: dict  # evaluate's
    summary: dict  # train's
    stats: dict  # prep's
    checkpoints: list[dict]  # merged_checkpoints
    scores: dict[str, dict]  # "base" and each checkpoint's model dir -> evaluate's scores.json
    heldout: list[dict]  # prep's held-out rows
    rejects: list[dict]  # prep's rejected rows (none when it kept no file)


def read_finished_run(spec: RunSpec) -> FinishedRun:
    """Every record bundle needs, each checked: the jobs ran with this spec, each checkpoint was merged and
    evaluated, prep held rows out. A missing or broken one stops it (InputError naming the file and the fix)."""
    run_dir = spec.run_dir
    manifests = {job: read_json(spec.job_dir(job) / layout.MANIFEST, f"{job}'s manifest") for job in layout.RUN_JOBS}
    check_spec_matches_run(spec, manifests)
    if not (run_dir / layout.RECORD).is_file():
        raise InputError(f"{layout.RECORD} not found: is this a run folder?", run_dir / layout.RECORD)
    train_index = read_json(run_dir / layout.TRAIN_INDEX, "train's checkpoint index")
    merge_index = read_json(run_dir / layout.MERGE_INDEX, "merge's index")
    report = read_json(run_dir / layout.EVALUATE_REPORT, "evaluate's report")
    summary = read_json(run_dir / layout.TRAIN_SUMMARY, "train's summary")
    stats = read_json(run_dir / layout.PREP_STATS, "prep's stats")
    checkpoints = merged_checkpoints(run_dir, train_index, merge_index)

    scores = {}
    for name in ["base"] + [contents.model_dir_name(c["step"]) for c in checkpoints]:
        f = spec.job_dir("evaluate") / name / "scores.json"
        if f.exists():
            scores[name] = read_json(f, f"evaluate's scores of {name}")
        elif name != "base":
            raise InputError(f"{name} was not evaluated: run evaluate with eval.checkpoints: all", f)

    heldout = read_jsonl(run_dir / layout.PREP_HELDOUT)
    if not heldout:
        raise InputError("no held-out rows: data.heldout_rows must be > 0 to evaluate", run_dir / layout.PREP_HELDOUT)
    rejects_file = spec.job_dir("prep") / "rejects.jsonl"
    rejects = read_jsonl(rejects_file) if rejects_file.exists() else []
    return FinishedRun(
        manifests, train_index, merge_index, report, summary, stats, checkpoints, scores, heldout, rejects
    )


def check_results(results: dict, summary: dict) -> None:
    """results.json against the run: train's count of trainable parameters must be the registry's (else stop);
    evaluate's recommendation should be the contest rule's choice, and the choice valid (else say so)."""
    if summary.get("trainable_params") not in (None, results["trainable_params"]):
        raise RuntimeError(
            f"train counted {summary['trainable_params']:,} trainable parameters, the registry "
            f"gives {results['trainable_params']:,} for this spec"
        )
    if results["evaluate_best"] != results["chosen"]["model"]:
        log.warning(
            "evaluate's report recommends %s, the contest rule chooses %s from the same figures (%s): "
            "the report is older than this code; run evaluate again",
            results["evaluate_best"],
            results["chosen"]["model"],
            results["chosen"]["reason"],
        )
    if results["chosen"]["valid"] is False:
        log.warning(
            "%s; the submission is bundled for inspection, and predict.yaml names the highest score",
            results["chosen"]["reason"],
        )


# ---- putting files in place ------------------------------------------------------------------


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link src at dst ('link'); across filesystems (or where links are refused) copy it
    ('copy') and say so in the log. Never both."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return "link"
    except OSError as exc:
        log.warning(
            "cannot hard-link %s -> %s (%s); copying it instead (%.1f MB)",
            src,
            dst,
            exc.strerror or exc,
            src.stat().st_size / 1e6,
        )
        shutil.copy2(src, dst)
        return "copy"


def place_checkpoints(folder: Path, checkpoints: list[dict], scores: dict[str, dict]) -> tuple[Counter, dict]:
    """Each merged checkpoint at checkpoints/step-N/model.ckpt under `folder` (hard links, else copies), hashed
    and checked against the sha256 merge and evaluate recorded (a mismatch stops it: the file changed after
    those jobs ran); each checkpoint's "sha256" becomes the hash of the file placed. Returns (how many were
    linked and copied, {relative path: sha256})."""
    modes = Counter()
    for c in checkpoints:
        modes[link_or_copy(c["path"], folder / contents.checkpoint_file(c["step"]))] += 1
    hashes = contents.hash_files(
        folder, [contents.checkpoint_file(c["step"]) for c in checkpoints], desc="hash checkpoints"
    )
    for c in checkpoints:
        name = contents.model_dir_name(c["step"])
        actual = hashes[contents.checkpoint_file(c["step"])]
        recorded = {
            "merge/index.json": c["sha256"],
            f"evaluate/{name}/scores.json": scores[name].get("checkpoint_sha256"),
        }
        for where, sha in recorded.items():
            if sha and sha != actual:
                raise RuntimeError(
                    f"{c['path']} has sha256 {actual}, {where} recorded {sha}: the checkpoint "
                    f"changed after that job ran; run merge and evaluate again"
                )
        c["sha256"] = actual
    log.info("checkpoints: %s", ", ".join(f"{n} {m}ed" for m, n in modes.items()))
    return modes, hashes


def copy_logs(run_dir: Path, logs: Path) -> list[str]:
    """Copy the run's small files into logs/, mirroring runs/<run_id>/. Returns what was copied."""
    copied = []

    def put(src: Path, rel: str) -> None:
        dst = logs / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied.append(rel)

    put(run_dir / layout.RECORD, str(layout.RECORD))
    for job, names in contents.LOG_SOURCES.items():
        job_dir = run_dir / job
        if names is None:
            for rel in contents.files_under(job_dir):
                path = job_dir / rel
                if Path(rel).name.startswith("."):
                    continue
                if path.suffix in WEIGHT_SUFFIXES or path.stat().st_size > MAX_LOG_FILE_BYTES:
                    log.warning(
                        "logs/: left out %s/%s (%.1f MB; weights are not logs)", job, rel, path.stat().st_size / 1e6
                    )
                    continue
                put(path, f"{job}/{rel}")
            continue
        for name in names:
            if (job_dir / name).is_file():
                put(job_dir / name, f"{job}/{name}")
            elif (job_dir / name).is_dir():
                for rel in contents.files_under(job_dir / name):
                    put(job_dir / name / rel, f"{job}/{name}/{rel}")
    for job, patterns in contents.LOG_PATTERNS.items():
        job_dir = run_dir / job
        found = {p for pat in patterns for p in job_dir.rglob(pat) if p.is_file()} if job_dir.is_dir() else set()
        for path in sorted(found):
            rel = f"{job}/{path.relative_to(job_dir).as_posix()}"
            if rel not in copied:
                put(path, rel)
    return copied


def training_log_tail(run_dir: Path, lines: int = 40) -> tuple[str, list[str]]:
    """(name, last lines) of the training's log: the first worker's MindSpore/MindFormers log when
    there is one, else tunebox's own loss.jsonl (a single-process run logs to the console only)."""
    train_dir = run_dir / "train"
    candidates = contents.training_log_candidates(train_dir) if train_dir.is_dir() else []
    source = candidates[0] if candidates else run_dir / layout.TRAIN_LOSS
    if not source.is_file():
        return "none", []
    with open(source, "rb") as fh:
        fh.seek(max(0, source.stat().st_size - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return f"logs/train/{source.relative_to(train_dir).as_posix()}", text.splitlines()[-lines:]


def tokenizer_files(tokenizer: Optional[Path], model_name: str) -> tuple[Path, Path]:
    """The tokenizer.json and tokenizer_config.json the jobs loaded (tunebox.model.weights.load_tokenizer):
    model.tokenizer (`tokenizer`, resolved) when set, else the converted model's."""
    tj = tokenizer_file(model_name, tokenizer)
    cfg = tj.with_name("tokenizer_config.json")
    for f in (tj, cfg):
        if not f.is_file():
            raise InputError(
                f"tokenizer file not found (convert the model again: invoke convert --model {model_name})", f
            )
    return tj, cfg


def copy_tokenizer(tokenizer: Optional[Path], model_name: str, folder: Path) -> None:
    """The tokenizer the jobs loaded (tokenizer_files) into `folder`: tokenizer.json, tokenizer_config.json and,
    when there is one, the sentencepiece/tiktoken tokenizer.model r1.1's tokenizers read."""
    tj, cfg = tokenizer_files(tokenizer, model_name)
    folder.mkdir()
    shutil.copy2(tj, folder / "tokenizer.json")
    shutil.copy2(cfg, folder / "tokenizer_config.json")
    if tj.with_name("tokenizer.model").is_file():
        shutil.copy2(tj.with_name("tokenizer.model"), folder / "tokenizer.model")
