"""prep: raw contest JSONL -> chat-formatted, tokenized MindRecord (loss on the answer only) and
a deterministic held-out split for evaluation, with optional cleaning, at any size.

Outputs, under runs/<run_id>/prep/ (built in a temp dir, renamed into place when complete):
  train.mindrecord(.db)  input_ids, labels: int32[seq_length + 1], labels -100 outside the answer
  heldout.jsonl          held-out rows {file, line, prompt, reference, meta} for evaluate
  rejects.jsonl          rows not used, each with file, line, kind and reason (bad input, bad
                         label, duplicate, too long); rows left out by data.sample_rows are only counted
  fixed.jsonl            rows whose label data.bad_labels=fix replaced {file, line, old, new}
  stats.json             counts, what was removed and why, token-length percentiles, families
  preview.txt            the first samples as the model sees them, answer tokens marked
  manifest.json          environment record

The rules (families, labels, held-out split, sampling, balance) are tunebox/data/policy.py's; the two
passes that apply them at 800k rows in bounded memory, with data.workers processes and the same output
whatever their number, are tunebox/data/pipeline.py's.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from tunebox.cli import job_process_env, run_job
from tunebox.config import RunSpec
from tunebox.data.pipeline import prepare
from tunebox.data.samples import train_files
from tunebox.io import InputError, atomic_dir, atomic_write_json
from tunebox.manifest import write_job_manifest
from tunebox.model.weights import check_pad_id, tokenizer_file

log = logging.getLogger("tunebox.prep")


def generate_rows(arguments: str, out: Path, spec_path: Optional[str]) -> Path:
    """data.generate (`arguments`): run jobs.generate (its own process: a job does not import another) into
    `out` (runs/<run_id>/generated/), unless a finished set with the same arguments is there already."""
    marker = out / "generate.json"
    args = shlex.split(arguments)
    if marker.exists() and json.loads(marker.read_text()).get("argv") == args:
        log.info("generated rows already in %s", out)
        return out
    log.info("generating the training rows: python -m jobs.generate %s --out %s", arguments, out)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.generate", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=job_process_env(Path(__file__).parent),
    )
    if proc.returncode != 0:
        raise InputError(
            f"data.generate: jobs.generate failed (exit {proc.returncode}): "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no message'}",
            spec_path,
        )
    record = json.loads(marker.read_text())
    record["argv"] = args
    atomic_write_json(marker, record)
    return out


def prep(spec: RunSpec) -> Path:
    started = time.time()
    d = spec.data
    source, out = spec.training_source(), spec.job_dir("prep")
    heldout_file, own_tokenizer = spec.resolve(d.heldout_file), spec.resolve(spec.model.tokenizer)
    tokenizer_json = tokenizer_file(spec.model.name, own_tokenizer)
    check_pad_id(spec.model.name, tokenizer_json)  # train packs, and MindFormers masks, by the model's pad id
    if d.generate:
        generate_rows(d.generate, source, spec.source_path)
    files = train_files(source, spec.source_path)
    with atomic_dir(out) as tmp:
        stats, shards = prepare(
            d,
            files,
            tokenizer_json,
            tmp,
            source=source,
            heldout_file=heldout_file,
            spec_path=spec.source_path,
            started=started,
        )
    # the input as named: the folder (generated rows, a directory) or the file, else each file of a glob
    inputs = (
        {"train_file": source if source.is_dir() else files[0]}
        if source.is_dir() or len(files) == 1
        else {f"train_file[{i}]": f for i, f in enumerate(files)}
    )
    write_job_manifest(
        out,
        "prep",
        spec,
        inputs=inputs,
        outputs={path.name: out / path.name for path in shards},
        seeds={"split": d.seed},
        extra=stats,
    )
    log.info(
        "prep: %d train rows, %d held out, %d not sampled, removed %s -> %s in %.1f s (%d workers)",
        stats["rows_train"],
        stats["rows_heldout"],
        stats["rows_not_sampled"],
        ", ".join(f"{k} {v}" for k, v in stats["removed"].items()) or "nothing",
        out,
        time.time() - started,
        stats["resources"]["workers"],
    )
    return out


def main(spec: RunSpec, args) -> None:
    prep(spec)


if __name__ == "__main__":
    raise SystemExit(run_job("prep", __doc__, main))
