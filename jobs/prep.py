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

from tunebox.cli import job_process_env, run_job
from tunebox.config import RunSpec
from tunebox.data.pipeline import prepare
from tunebox.data.samples import train_files
from tunebox.io import InputError, atomic_dir, atomic_write_json
from tunebox.manifest import write_job_manifest
from tunebox.model.weights import tokenizer_file

log = logging.getLogger("tunebox.prep")


def generate_rows(spec: RunSpec) -> Path:
    """data.generate: run jobs.generate (its own process: a job does not import another) into
    runs/<run_id>/generated/, unless a finished set with the same arguments is there already."""
    out = spec.training_source()
    marker = out / "generate.json"
    args = shlex.split(spec.data.generate)
    if marker.exists() and json.loads(marker.read_text()).get("argv") == args:
        log.info("generated rows already in %s", out)
        return out
    log.info("generating the training rows: python -m jobs.generate %s --out %s", spec.data.generate, out)
    proc = subprocess.run([sys.executable, "-m", "jobs.generate", *args, "--out", str(out)],
                          capture_output=True, text=True, env=job_process_env(Path(__file__).parent))
    if proc.returncode != 0:
        raise InputError(f"data.generate: jobs.generate failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no message'}",
                         spec.source_path)
    record = json.loads(marker.read_text())
    record["argv"] = args
    atomic_write_json(marker, record)
    return out


def _inputs_for_manifest(spec: RunSpec, files: list[Path]) -> dict:
    target = spec.training_source()
    if target.is_dir() or len(files) == 1:
        return {"train_file": target if target.is_dir() else files[0]}
    return {f"train_file[{i}]": f for i, f in enumerate(files)}


def prep(spec: RunSpec) -> Path:
    started = time.time()
    d = spec.data
    if d.generate:
        generate_rows(spec)
    source = spec.training_source()
    files = train_files(source, spec.source_path)
    tokenizer_json = tokenizer_file(spec.model.name, spec.resolve(spec.model.tokenizer))
    out = spec.job_dir("prep")
    with atomic_dir(out) as tmp:
        stats, shards = prepare(d, files, tokenizer_json, tmp, source=source,
                                heldout_file=spec.resolve(d.heldout_file), spec_path=spec.source_path,
                                started=started)
    write_job_manifest(out, "prep", spec, inputs=_inputs_for_manifest(spec, files),
                       outputs={path.name: out / path.name for path in shards}, seeds={"split": d.seed}, extra=stats)
    log.info("prep: %d train rows, %d held out, %d not sampled, removed %s -> %s in %.1f s (%d workers)",
             stats["rows_train"], stats["rows_heldout"], stats["rows_not_sampled"],
             ", ".join(f"{k} {v}" for k, v in stats["removed"].items()) or "nothing", out, time.time() - started,
             stats["resources"]["workers"])
    return out


def main(spec: RunSpec, args) -> None:
    prep(spec)


if __name__ == "__main__":
    raise SystemExit(run_job("prep", __doc__, main))
