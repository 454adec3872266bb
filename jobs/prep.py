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

How it stays bounded at 800k rows (never the whole file in memory):
  pass 1  lines are read in blocks and parsed, checked, labelled and hashed by worker processes;
          the job keeps, in source order, an 8-byte hash per kept problem (data.dedupe), a family
          code per kept row, and spools the kept rows to a file in the temp output dir.
  split   the held-out rows are a seeded permutation of the kept rows' ordinals (split_heldout:
          exactly data.heldout_rows, the same rows as a load-everything prep would pick), then
          data.sample_rows draws the training rows per family from what is left.
  pass 2  the spool is read again; chunks of training rows are tokenized by the workers
          (SampleEncoder, one encode_batch a chunk) and appended in order to the MindRecord.
Output is the same whatever data.workers is: blocks and chunks are cut and written in source order.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import signal
import time
from array import array
from collections import Counter, deque
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from tunebox import layout
from tunebox.cli import job_process_env, run_job
from tunebox.config import RunSpec
from tunebox.config import balance_rule
from tunebox.data.samples import (IGNORE, PARSERS, SampleEncoder, ShardedMindRecordWriter, bad_row_kind, decode_jsonl_line,
                        iter_raw_lines, read_examples, train_files)
from tunebox.chaos import kill_point
from tunebox.io import InputError, atomic_dir, atomic_write_json
from tunebox.manifest import write_job_manifest
from tunebox.data.tokenizer import TextTokenizer

log = logging.getLogger("tunebox.prep")

SCAN_BLOCK_LINES = 4096       # lines a worker parses per task
TOKENIZE_CHUNK_ROWS = 2048    # rows a worker tokenizes per task (one encode_batch)
TASKS_IN_FLIGHT = 3           # per worker: bounds what waits in pipes (memory), keeps workers busy
POOL_MIN_BYTES = 512 * 1024   # smaller inputs run in the job's own process: a pool would only add start-up
ROWS_PER_FILE = 100_000       # MindRecord rows per file (train.mindrecord, train.mindrecord-00001, ...)
SNIPPET = 80                  # characters of a problem quoted in a reject reason

TRAIN, HELDOUT, NOT_SAMPLED, BALANCED_OUT = 0, 1, 2, 3
KEEP, REJECT, LEFT_OUT = 0, 1, 2


def split_heldout(n_rows: int, heldout: int, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded permutation, so the split depends only on the
    row count and the seed (not on tokenization or anything a user tunes)."""
    if heldout >= n_rows:
        raise InputError(f"data.heldout_rows ({heldout}) must be smaller than the number of rows ({n_rows})")
    mask = np.zeros(n_rows, dtype=bool)
    mask[np.random.RandomState(seed).permutation(n_rows)[:heldout]] = True
    return mask


def stratified_sample(families: np.ndarray, names: list[str], k: int, seed: int) -> tuple[np.ndarray, dict]:
    """Choose k of the rows, each family (code into `names`) getting its share of k: floor of
    k * rows_f / rows, the k left over going to the largest remainders (ties: family name). Within a
    family the rows are a seeded random choice. Returns (mask, {family: {available, sampled}})."""
    counts = np.bincount(families, minlength=len(names))
    quota = counts * k / counts.sum()
    take = np.floor(quota).astype(np.int64)
    order = sorted(range(len(names)), key=lambda f: (-(quota[f] - take[f]), names[f]))
    for f in order[:k - int(take.sum())]:
        take[f] += 1
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(families), dtype=bool)
    for f in sorted(range(len(names)), key=lambda f: names[f]):
        rows = np.flatnonzero(families == f)
        mask[rows[rng.permutation(len(rows))[:take[f]]]] = True
    report = {names[f]: {"available": int(counts[f]), "sampled": int(take[f])}
              for f in sorted(range(len(names)), key=lambda f: names[f]) if counts[f]}
    return mask, report


def preview(tok: TextTokenizer, input_ids: np.ndarray, labels: np.ndarray, k: int = 3) -> str:
    out = []
    for a, b in zip(input_ids[:k], labels[:k]):
        prompt = tok.decode([int(t) for t, l in zip(a, b) if l == IGNORE and t != tok.pad_id], skip_special_tokens=False)
        answer = tok.decode([int(l) for l in b if l != IGNORE], skip_special_tokens=False)
        out.append(f"--- prompt (no loss) ---\n{prompt}\n--- answer (loss) ---\n{answer}\n")
    return "\n".join(out)


def row_family_name(fmt: str, row: dict) -> str:
    from tunebox.contest.scoring import math_family

    return math_family(row["prompt"]) if fmt == "math" else str((row.get("meta") or {}).get("subject") or "mcq")


def format_preview(heldout_path: Path, spec: RunSpec) -> str:
    """One held-out row per family in every answer format (what data.answer_format would train on),
    the one in use marked."""
    from tunebox.data import answers

    if spec.data.format != "math" or not heldout_path.exists():
        return ""
    first: dict[str, dict] = {}
    for line in heldout_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        first.setdefault(row_family_name("math", row), row)
    out = ["", "=== answer formats (data.answer_format), one held-out row per family ==="]
    for family, row in sorted(first.items()):
        used = str(answers.format_for(spec.data.answer_format, family))
        out.append(f"\n--- {family}: {row['prompt']}")
        for name, text in answers.examples(row["prompt"], row["reference"], family).items():
            mark = "  <- in use" if name == used else ""
            out.append(f"[{name}]{mark}\n{text}")
    return "\n".join(out) + "\n"


# ---- what runs in the workers (or in the job's process when there is no pool) -----------------

_WORKER: dict = {}


def worker_setup(model_dir: str, tokenizer_json: Optional[str], seq_length: int, system: Optional[str],
                 template: str = "chat", in_pool: bool = False) -> None:
    if in_pool:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the job handles ^C and stops the pool
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker; the pool is the parallelism
    tok = TextTokenizer.load(model_dir, tokenizer_json)
    _WORKER["encoder"] = SampleEncoder(tok, seq_length, system, template)


def _label_check(problem: str, reference: str, policy: str) -> tuple[str, Optional[str], str]:
    """(verdict, new label, reason): verdict ok | unchecked (not computable) | fixed | drop."""
    from tunebox.contest import mathgen

    family = mathgen.family_of(problem)
    expected = mathgen.solve(problem, family)
    if expected is None:
        return "unchecked", None, ""
    verdict, label = "ok", reference
    if expected != reference:
        if policy != "fix":
            return "drop", None, f"bad label: {reference[:SNIPPET]!r}, recomputed {expected[:SNIPPET]!r}"
        verdict, label = "fixed", expected
    issue = mathgen.label_sanity_issue(problem, label, family)
    if issue:
        fixable = " (recomputing gives the same value: cannot be fixed)" if policy == "fix" else ""
        return "drop", None, f"bad label: {issue}{fixable}"
    return verdict, label, ""


def scan_block(task: tuple) -> tuple[str, list[tuple]]:
    """Pass 1 on a block of lines -> (file, events): one event per non-blank line, in line order,
    (line, KEEP, hash, family, spool bytes, label verdict, old label), (line, REJECT, kind, reason) or
    (line, LEFT_OUT, family) for a family data.families / drop_families leaves out. The spooled answer is
    the training answer in data.answer_format; the reference stays the row's (or the fixed) label."""
    from tunebox.data import answers
    from tunebox.contest.scoring import math_family

    path_text, file_index, fmt, bad_labels, dedupe, policy, lines = task
    keep, drop, answer_format = policy
    path, parse, events = Path(path_text), PARSERS[fmt], []
    encode = json.JSONEncoder(ensure_ascii=False).encode
    for lineno, raw in lines:
        item = decode_jsonl_line(raw, path, lineno)
        if item is None:
            continue
        try:
            if isinstance(item, InputError):
                raise item
            ex = parse(item, path)
        except InputError as err:
            events.append((lineno, REJECT, bad_row_kind(err.message), err.message))
            continue
        verdict, old = "", None
        if fmt == "math":
            family = math_family(ex.prompt)
            if (keep is not None and family not in keep) or family in drop:
                events.append((lineno, LEFT_OUT, family))
                continue
            if bad_labels != "keep":
                verdict, label, reason = _label_check(ex.prompt, ex.reference, bad_labels)
                if verdict == "drop":
                    events.append((lineno, REJECT, "bad_label", reason))
                    continue
                if verdict == "fixed":
                    old, ex.answer, ex.reference = ex.reference, label, label
            ex.answer = answers.render_answer(ex.prompt, ex.answer, answers.format_for(answer_format, family), family)
        else:
            family = str(ex.meta.get("subject") or "mcq")
        key = int.from_bytes(hashlib.blake2b(ex.prompt.encode("utf-8"), digest_size=8).digest(), "little") if dedupe else 0
        spool = encode([file_index, lineno, ex.prompt, ex.answer, ex.reference, ex.meta]) + "\n"
        events.append((lineno, KEEP, key, family, spool.encode("utf-8"), verdict, old))
    return path_text, events


def tokenize_chunk(spool_lines: list[bytes]) -> dict:
    """Pass 2 on a chunk of training rows (spool lines): padded ids/labels and per-row counts."""
    encoder: SampleEncoder = _WORKER["encoder"]
    rows = [json.loads(line) for line in spool_lines]
    ids, labels, lengths, answer_tokens = encoder.encode([r[2] for r in rows], [r[3] for r in rows])
    return {"ids": ids, "labels": labels, "lengths": lengths, "answer_tokens": answer_tokens,
            "where": [(r[0], r[1]) for r in rows], "segmented": encoder.segmented}


def ordered_map(pool, fn, tasks: Iterable, window: int) -> Iterator:
    """fn over tasks, results in task order: in the pool with at most `window` tasks submitted and
    not yet taken (Pool.imap reads every task ahead, i.e. the whole input), or in this process."""
    if pool is None:
        yield from map(fn, tasks)
        return
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ---- the job ----------------------------------------------------------------------------------

def family_policy(spec: RunSpec) -> tuple:
    """(families kept or None for all, families dropped, data.answer_format) as the workers take them."""
    d = spec.data
    return (frozenset(d.families) if d.families is not None else None, frozenset(d.drop_families), d.answer_format)


def _scan_tasks(files: list[Path], spec: RunSpec) -> Iterator[tuple]:
    d = spec.data
    policy = family_policy(spec)
    for index, path in enumerate(files):
        block: list = []
        for item in iter_raw_lines(path):
            block.append(item)
            if len(block) >= SCAN_BLOCK_LINES:
                yield str(path), index, d.format, d.bad_labels, d.dedupe, policy, block
                block = []
        if block:
            yield str(path), index, d.format, d.bad_labels, d.dedupe, policy, block


class _Pass1:
    """Validate, clean and spool the rows (in source order), counting every removal."""

    def __init__(self, spec: RunSpec, tmp: Path, exclude: frozenset = frozenset()):
        self.spec, self.tmp = spec, tmp
        self.exclude = exclude                  # problems of data.heldout_file: never trained on
        self.left_out: Counter = Counter()      # rows per family that data.families / drop_families leave out
        self.removed: Counter = Counter()
        self.labels: Counter = Counter()
        self.rows_valid = self.rows_bad = 0
        self.family_codes = array("H")         # 2 bytes per kept row
        self.family_names: dict[str, int] = {}

    def run(self, files: list[Path], pool, window: int) -> None:
        d = self.spec.data
        seen: set[int] = set()                  # 8-byte hashes of the problems kept so far (data.dedupe)
        with open(self.tmp / ".spool.jsonl", "wb") as spool, \
                open(self.tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects, \
                open(self.tmp / "fixed.jsonl", "w", encoding="utf-8") as fixed, \
                tqdm(desc="read", unit=" rows", unit_scale=True, leave=False) as bar:
            def reject(path: str, line: int, kind: str, reason: str) -> None:
                rejects.write(json.dumps({"file": path, "line": line, "kind": kind, "reason": reason},
                                         ensure_ascii=False) + "\n")
                self.removed[kind] += 1

            for path, events in ordered_map(pool, scan_block, _scan_tasks(files, self.spec), window):
                bar.update(len(events))
                for event in events:
                    line, what = event[0], event[1]
                    if what == LEFT_OUT:
                        if d.max_rows is not None and self.rows_valid >= d.max_rows:
                            return
                        self.rows_valid += 1
                        self.left_out[event[2]] += 1
                        continue
                    if what == REJECT and event[2] != "bad_label":
                        if d.on_bad_row != "skip":
                            raise InputError(event[3], path, line)
                        self.rows_bad += 1
                        reject(path, line, event[2], event[3])
                        continue
                    if d.max_rows is not None and self.rows_valid >= d.max_rows:
                        return
                    self.rows_valid += 1
                    if what == REJECT:
                        self.labels["dropped"] += 1
                        reject(path, line, "bad_label", event[3])
                        continue
                    _, _, key, family, record, verdict, old = event
                    if verdict:
                        self.labels[verdict] += 1
                    if d.dedupe:
                        if key in seen:
                            problem = json.loads(record)[2]
                            reject(path, line, "duplicate",
                                   f"duplicate: an earlier row has the same problem {problem[:SNIPPET]!r}")
                            continue
                        seen.add(key)
                    if self.exclude and json.loads(record)[2] in self.exclude:
                        reject(path, line, "in_heldout_file", "the same problem is in data.heldout_file (held out)")
                        continue
                    if verdict == "fixed":
                        fixed.write(json.dumps({"file": path, "line": line, "old": old, "new": json.loads(record)[4]},
                                               ensure_ascii=False) + "\n")
                    spool.write(record)
                    self.family_codes.append(self.family_names.setdefault(family, len(self.family_names)))


def _train_chunks(spool_path: Path, status: bytes, repeats: Optional[np.ndarray], files: list[Path],
                  heldout_path: Path, file_rows: list[dict]) -> Iterator[list[bytes]]:
    """Training rows of the spool in chunks (a row data.balance oversamples comes `repeats` times in a
    row); held-out rows go to heldout.jsonl on the way ("split"), then the data.heldout_file rows ("file")."""
    chunk: list[bytes] = []
    with open(spool_path, "rb") as spool, open(heldout_path, "w", encoding="utf-8") as heldout:
        for ordinal, record in enumerate(spool):
            state = status[ordinal]
            if state == TRAIN:
                chunk.extend([record] * (int(repeats[ordinal]) if repeats is not None else 1))
                if len(chunk) >= TOKENIZE_CHUNK_ROWS:
                    yield chunk
                    chunk = []
            elif state == HELDOUT:
                file_index, line, prompt, _, reference, meta = json.loads(record)
                heldout.write(json.dumps({"file": str(files[file_index]), "line": line, "prompt": prompt,
                                          "reference": reference, "meta": meta, "source": "split"},
                                         ensure_ascii=False) + "\n")
        for row in file_rows:
            heldout.write(json.dumps(row, ensure_ascii=False) + "\n")
    if chunk:
        yield chunk


def read_heldout_file(spec: RunSpec) -> list[dict]:
    """data.heldout_file as held-out rows {file, line, prompt, reference, meta, source: "file"}: parsed like
    training rows, data.families / drop_families applied, data.heldout_file_rows of them (seeded, file order)."""
    from tunebox.contest.scoring import math_family

    d = spec.data
    path = spec.resolve(d.heldout_file)
    if not path.is_file():
        raise InputError(f"data.heldout_file not found: {path}", spec.source_path)
    keep, drop, _ = family_policy(spec)
    rows = []
    for ex in read_examples(path, d.format):
        family = math_family(ex.prompt) if d.format == "math" else None
        if family is not None and ((keep is not None and family not in keep) or family in drop):
            continue
        rows.append({"file": str(path), "line": ex.line, "prompt": ex.prompt, "reference": ex.reference,
                     "meta": ex.meta, "source": "file"})
    if d.heldout_file_rows is not None and d.heldout_file_rows < len(rows):
        chosen = np.sort(np.random.RandomState(d.seed).permutation(len(rows))[:d.heldout_file_rows])
        rows = [rows[i] for i in chosen]
    if not rows:
        raise InputError("data.heldout_file has no row of the families data.families keeps", path)
    return rows


def balance_training_rows(codes: np.ndarray, status: np.ndarray, names: list[str], balance: Optional[dict],
                          seed: int) -> tuple[Optional[np.ndarray], dict]:
    """data.balance on the training rows: caps (a seeded choice; the rest become BALANCED_OUT, in place)
    and repeat factors. Returns (repeats per ordinal or None, {family: rule applied})."""
    if not balance:
        return None, {}
    rng = np.random.RandomState(seed + 1)
    repeats = np.ones(len(codes), dtype=np.uint16)
    applied = {}
    for code, name in sorted(enumerate(names), key=lambda t: t[1]):
        rule = balance.get(name, balance.get("*"))
        if rule is None:
            continue
        kind, n = balance_rule(rule)
        rows = np.flatnonzero((codes == code) & (status == TRAIN))
        if kind == "cap" and len(rows) > n:
            status[rows[rng.permutation(len(rows))[n:]]] = BALANCED_OUT
        elif kind == "repeat":
            repeats[rows] = n
        applied[name] = rule
    return repeats, applied


def generate_rows(spec: RunSpec) -> Path:
    """data.generate: run jobs.generate (its own process: a job does not import another) into
    runs/<run_id>/generated/, unless a finished set with the same arguments is there already."""
    import shlex
    import subprocess
    import sys

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


def _resource_use() -> dict:
    """CPU seconds and peak RSS of this process and of its finished children (the workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_seconds": round(me.ru_utime + me.ru_stime, 1),
            "cpu_seconds_children": round(children.ru_utime + children.ru_stime, 1),
            "peak_rss_mb": round(me.ru_maxrss / 1024, 1),
            "peak_rss_mb_largest_child": round(children.ru_maxrss / 1024, 1)}


def _inputs_for_manifest(spec: RunSpec, files: list[Path]) -> dict:
    target = spec.training_source()
    if target.is_dir() or len(files) == 1:
        return {"train_file": target if target.is_dir() else files[0]}
    return {f"train_file[{i}]": f for i, f in enumerate(files)}


def prep(spec: RunSpec) -> Path:
    from tunebox.model.weights import ensure_model

    started = time.time()
    d = spec.data
    if d.generate:
        generate_rows(spec)
    files = train_files(spec)
    model_dir = ensure_model(spec.model.name)
    tokenizer_json = spec.resolve(spec.model.tokenizer)
    tok = TextTokenizer.load(model_dir, tokenizer_json)
    setup_args = (str(model_dir), str(tokenizer_json) if tokenizer_json else None, d.seq_length, d.system_prompt,
                  d.template)
    total_bytes = sum(f.stat().st_size for f in files)
    workers = d.workers if total_bytes >= POOL_MIN_BYTES else 1
    width = d.seq_length + 1
    out = spec.job_dir("prep")

    with atomic_dir(out) as tmp:
        pool = None
        try:
            if workers > 1:
                # spawn, not fork: the job's process has tokenizers (threads) and MindSpore loaded.
                pool = get_context("spawn").Pool(workers, initializer=worker_setup, initargs=setup_args + (True,))
            else:
                worker_setup(*setup_args)
            window = TASKS_IN_FLIGHT * workers
            seconds = {"setup": time.time() - started}

            # ---- pass 1: validate, clean, spool --------------------------------------------------
            file_rows = read_heldout_file(spec) if d.heldout_file else []
            scan = _Pass1(spec, tmp, frozenset(r["prompt"] for r in file_rows))
            scan.run(files, pool, window)
            kill_point("prep.writing")   # tests/test_chaos.py: the spool and rejects half way
            seconds["read_and_clean"] = time.time() - started - sum(seconds.values())
            n_kept = len(scan.family_codes)
            if n_kept == 0:
                raise InputError("no usable rows (see rejects: every row was bad, a duplicate or wrongly labelled)",
                                 files[0] if len(files) == 1 else spec.training_source())

            # ---- split: held out (exactly heldout_rows), then the sample of training rows -----------
            codes = np.frombuffer(scan.family_codes, dtype=np.uint16)
            names = list(scan.family_names)
            heldout_mask = split_heldout(n_kept, d.heldout_rows, d.seed)
            status = np.where(heldout_mask, HELDOUT, TRAIN).astype(np.uint8)
            candidates = np.flatnonzero(~heldout_mask)
            sampling = None
            if d.sample_rows is not None:
                sampling = {"sample_rows": d.sample_rows, "available": int(len(candidates)), "seed": d.seed}
                if d.sample_rows < len(candidates):
                    chosen, sampling["families"] = stratified_sample(codes[candidates], names, d.sample_rows, d.seed)
                    status[candidates[~chosen]] = NOT_SAMPLED
                else:
                    sampling["note"] = "sample_rows >= rows available: every row is used"
            before_balance = np.bincount(codes[status == TRAIN], minlength=len(names))
            repeats, balanced = balance_training_rows(codes, status, names, d.balance, d.seed)
            train_mask = status == TRAIN
            train_codes = codes[train_mask] if repeats is None else np.repeat(codes[train_mask], repeats[train_mask])

            # ---- pass 2: tokenize in the workers, write in order ----------------------------------
            writer = ShardedMindRecordWriter(tmp / layout.PREP_TRAIN_RECORDS.name, ROWS_PER_FILE)
            lengths = array("i")
            kept = too_long = supervised = non_pad = cells = 0
            answer_max = np.zeros(len(names), dtype=np.int64)
            answer_rows = np.zeros(len(names), dtype=np.int64)
            preview_ids, preview_labels = [], []
            segmented = True
            offset = 0
            chunks = _train_chunks(tmp / ".spool.jsonl", status.tobytes(), repeats, files, tmp / layout.PREP_HELDOUT.name,
                                   file_rows)
            with open(tmp / "rejects.jsonl", "a", encoding="utf-8") as rejects, \
                    tqdm(total=len(train_codes), desc="tokenize", unit=" rows", unit_scale=True, leave=False) as bar:
                for res in ordered_map(pool, tokenize_chunk, chunks, window):
                    n = len(res["lengths"])
                    chunk_codes = train_codes[offset:offset + n]
                    offset += n
                    segmented &= res["segmented"]
                    lengths.frombytes(res["lengths"].astype(np.int32).tobytes())
                    over = res["lengths"] > width
                    too_long += int(over.sum())
                    keep = ~over if d.on_too_long == "skip" else np.ones(n, dtype=bool)
                    if d.on_too_long == "skip":
                        for i in np.flatnonzero(over):
                            file_index, line = res["where"][i]
                            rejects.write(json.dumps({
                                "file": str(files[file_index]), "line": line, "kind": "too_long",
                                "reason": f"too long: {int(res['lengths'][i])} tokens > seq_length + 1 = {width}"},
                                ensure_ascii=False) + "\n")
                            scan.removed["too_long"] += 1
                    ids, labels = res["ids"][keep], res["labels"][keep]
                    writer.write(ids, labels)
                    kept += len(ids)
                    answers = res["answer_tokens"][keep]
                    supervised += int(answers.sum())
                    non_pad += int((ids != tok.pad_id).sum())
                    cells += ids.size
                    np.maximum.at(answer_max, chunk_codes[keep], answers)
                    answer_rows += np.bincount(chunk_codes[keep], minlength=len(names))
                    if len(preview_ids) < 3:
                        preview_ids += list(ids[:3 - len(preview_ids)])
                        preview_labels += list(labels[:3 - len(preview_labels)])
                    bar.update(n)
            seconds["tokenize_and_write"] = time.time() - started - sum(seconds.values())
            if pool is not None:
                pool.close()    # let the workers exit on their own: their CPU time is then counted
                pool.join()
                pool = None
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        if kept == 0:
            raise InputError(f"every training row is longer than data.seq_length + 1 = {width} tokens; "
                             f"raise data.seq_length", files[0])
        shards = writer.commit()
        os.remove(tmp / ".spool.jsonl")
        seconds["commit"] = time.time() - started - sum(seconds.values())

        all_lengths = np.frombuffer(lengths, dtype=np.int32)
        family_rows = np.bincount(codes, minlength=len(names))
        heldout_by_family = np.bincount(codes[heldout_mask], minlength=len(names))
        train_by_family = np.bincount(train_codes, minlength=len(names))
        stats = {
            "source": str(spec.training_source()), "generate": d.generate, "files": [str(f) for f in files],
            "rows_read": scan.rows_valid + scan.rows_bad, "rows_bad": scan.rows_bad,
            "rows_kept": n_kept, "rows_heldout": int(heldout_mask.sum()), "rows_train": kept,
            "rows_not_sampled": int((status == NOT_SAMPLED).sum()),
            "rows_balanced_out": int((status == BALANCED_OUT).sum()),
            "rows_heldout_file": len(file_rows),
            "rows_too_long": too_long, "too_long_policy": d.on_too_long,
            "removed": dict(sorted(scan.removed.items())),
            "cleaning": {"on_bad_row": d.on_bad_row, "dedupe": d.dedupe, "bad_labels": d.bad_labels,
                         "labels": {k: scan.labels.get(k, 0) for k in ("ok", "fixed", "dropped", "unchecked")}
                         if d.bad_labels != "keep" and d.format == "math" else None},
            "sampling": sampling,
            "split": f"held out: a seeded permutation of the {n_kept} kept rows (data.seed={d.seed}); "
                     f"training rows in source order",
            "families": {names[f]: int(family_rows[f]) for f in sorted(range(len(names)), key=lambda f: names[f])},
            "family_policy": {
                "families": d.families, "drop_families": d.drop_families, "balance": balanced or None,
                "answer_format": d.answer_format, "template": d.template,
                "left_out": dict(sorted(scan.left_out.items())),
                # per family: rows read and kept, held out, training rows before data.balance and after it
                # (repeats counted; rows later found too long are in rows_too_long, not subtracted here)
                "rows": {names[f]: {"kept": int(family_rows[f]), "heldout": int(heldout_by_family[f]),
                                    "train_before_balance": int(before_balance[f]), "train": int(train_by_family[f])}
                         for f in sorted(range(len(names)), key=lambda f: names[f])},
                "heldout_file": ({"file": str(spec.resolve(d.heldout_file)), "rows": len(file_rows),
                                  "families": dict(sorted(Counter(
                                      row_family_name(d.format, r) for r in file_rows).items()))}
                                 if d.heldout_file else None),
            },
            "seq_length": d.seq_length,
            "tokens_per_row": {p: int(np.percentile(all_lengths, p)) for p in (50, 90, 99, 100)},
            "answer_tokens_per_row_mean": supervised / kept,
            "answer_tokens_by_family": {names[f]: {"rows": int(answer_rows[f]), "max": int(answer_max[f])}
                                        for f in sorted(range(len(names)), key=lambda f: names[f]) if answer_rows[f]},
            "padding_fraction": 1 - non_pad / cells,
            "mindrecord_files": [{"file": path.name, "rows": rows} for path, rows in shards],
            "resources": {
                "workers": workers, "seconds": round(time.time() - started, 2),
                "seconds_by_phase": {k: round(v, 2) for k, v in seconds.items()},
                "prompt_encoding": "segmented" if segmented else "full template per row",
                **_resource_use(),
            },
        }
        (tmp / layout.PREP_STATS.name).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "preview.txt").write_text(preview(tok, np.array(preview_ids), np.array(preview_labels))
                                         + format_preview(tmp / layout.PREP_HELDOUT.name, spec), encoding="utf-8")
    write_job_manifest(out, "prep", spec, inputs=_inputs_for_manifest(spec, files),
                       outputs={path.name: out / path.name for path, _ in shards}, seeds={"split": d.seed}, extra=stats)
    log.info("prep: %d train rows, %d held out, %d not sampled, removed %s -> %s in %.1f s (%d workers)",
             kept, stats["rows_heldout"], stats["rows_not_sampled"],
             ", ".join(f"{k} {v}" for k, v in stats["removed"].items()) or "nothing", out, time.time() - started, workers)
    return out


def main(spec: RunSpec, args) -> None:
    prep(spec)


if __name__ == "__main__":
    raise SystemExit(run_job("prep", __doc__, main))
