"""prep: raw contest JSONL -> chat-formatted, tokenized MindRecord (loss on the answer only) and
a deterministic held-out split for evaluation.

Outputs, under runs/<run_id>/prep/ (built in a temp dir, renamed into place when complete):
  train.mindrecord(.db)  input_ids, labels: int32[seq_length + 1], labels -100 outside the answer
  heldout.jsonl          held-out rows {line, prompt, reference, meta} for evaluate
  rejects.jsonl          rows not used, each with its line and reason (bad input, too long)
  stats.json             counts, token-length percentiles, what was dropped and why
  preview.txt            the first samples as the model sees them, answer tokens marked
  manifest.json          environment record
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .core.cli import run_job
from .core.config import RunSpec
from .core.data import IGNORE, encode_example, load_tokenizer, read_examples, write_mindrecord
from .core.io import InputError, atomic_dir
from .core.manifest import write_job_manifest
from .core.tokenizer import TextTokenizer

log = logging.getLogger("tunebox.prep")


def split_heldout(n_rows: int, heldout: int, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded permutation, so the split depends only on the
    row count and the seed (not on tokenization or anything a user tunes)."""
    if heldout >= n_rows:
        raise InputError(f"data.heldout_rows ({heldout}) must be smaller than the number of rows ({n_rows})")
    mask = np.zeros(n_rows, dtype=bool)
    mask[np.random.RandomState(seed).permutation(n_rows)[:heldout]] = True
    return mask


def preview(tok: TextTokenizer, input_ids: np.ndarray, labels: np.ndarray, k: int = 3) -> str:
    out = []
    for a, b in zip(input_ids[:k], labels[:k]):
        prompt = tok.decode([int(t) for t, l in zip(a, b) if l == IGNORE and t != tok.pad_id], skip_special_tokens=False)
        answer = tok.decode([int(l) for l in b if l != IGNORE], skip_special_tokens=False)
        out.append(f"--- prompt (no loss) ---\n{prompt}\n--- answer (loss) ---\n{answer}\n")
    return "\n".join(out)


def prep(spec: RunSpec) -> Path:
    src = spec.resolve(spec.data.train_file)
    if not src.exists():
        raise InputError(f"data.train_file not found: {src}", spec.source_path)
    tok = load_tokenizer(spec)
    rejects: list[dict] = []
    examples = list(tqdm(read_examples(src, spec.data.format, spec.data.on_bad_row, rejects, spec.data.max_rows),
                         desc="read", unit=" rows", leave=False))
    if not examples:
        raise InputError("no usable rows", src)
    heldout_mask = split_heldout(len(examples), spec.data.heldout_rows, spec.data.seed)

    width = spec.data.seq_length + 1
    train_ex = [e for e, h in zip(examples, heldout_mask) if not h]
    ids = np.empty((len(train_ex), width), dtype=np.int32)
    labels = np.empty((len(train_ex), width), dtype=np.int32)
    lengths, kept, too_long = [], 0, 0
    for ex in tqdm(train_ex, desc="tokenize", unit=" rows"):
        a, b, n = encode_example(tok, ex, spec.data.seq_length, spec.data.system_prompt)
        lengths.append(n)
        if n > width:
            too_long += 1
            if spec.data.on_too_long == "skip":
                rejects.append({"line": ex.line, "reason": f"too long: {n} tokens > seq_length + 1 = {width}"})
                continue
        ids[kept], labels[kept] = a, b
        kept += 1
    ids, labels = ids[:kept], labels[:kept]
    if kept == 0:
        raise InputError(f"every training row is longer than data.seq_length + 1 = {width} tokens; raise data.seq_length", src)

    # Training order is fixed by the train job's seed; file order here is source order.
    supervised = (labels != IGNORE).sum(axis=1)
    stats = {
        "source": str(src), "rows_read": len(examples) + len([r for r in rejects if "too long" not in r["reason"]]),
        "rows_bad": len([r for r in rejects if "too long" not in r["reason"]]),
        "rows_heldout": int(heldout_mask.sum()), "rows_train": kept,
        "rows_too_long": too_long, "too_long_policy": spec.data.on_too_long,
        "seq_length": spec.data.seq_length,
        "tokens_per_row": {p: int(np.percentile(lengths, p)) for p in (50, 90, 99, 100)},
        "answer_tokens_per_row_mean": float(supervised.mean()),
        "padding_fraction": float(1 - (ids != tok.pad_id).sum() / ids.size),
    }
    out = spec.job_dir("prep")
    with atomic_dir(out) as tmp:
        write_mindrecord(tmp / "train.mindrecord", ids, labels)
        with open(tmp / "heldout.jsonl", "w", encoding="utf-8") as fh:
            for ex, h in zip(examples, heldout_mask):
                if h:
                    fh.write(json.dumps({"line": ex.line, "prompt": ex.prompt, "reference": ex.reference,
                                         "meta": ex.meta}, ensure_ascii=False) + "\n")
        with open(tmp / "rejects.jsonl", "w", encoding="utf-8") as fh:
            for r in sorted(rejects, key=lambda r: r["line"] or 0):
                fh.write(json.dumps({"file": str(src), **r}, ensure_ascii=False) + "\n")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (tmp / "preview.txt").write_text(preview(tok, ids, labels), encoding="utf-8")
    write_job_manifest(out, "prep", spec, inputs={"train_file": src}, outputs={"train.mindrecord": out / "train.mindrecord"},
                       seeds={"split": spec.data.seed}, extra=stats)
    log.info("prep: %d train rows, %d held out, %d rejected (%d too long) -> %s",
             kept, stats["rows_heldout"], len(rejects), too_long, out)
    return out


def main(spec: RunSpec, args) -> None:
    prep(spec)


if __name__ == "__main__":
    raise SystemExit(run_job("prep", __doc__, main))
