"""prep's two passes over the raw rows, bounded at 800k rows (never the whole file in memory):

  pass 1  lines are read in blocks and parsed, checked, labelled and hashed by worker processes;
          the job keeps, in source order, an 8-byte hash per kept problem (data.dedupe), a family
          code per kept row, and spools the kept rows to a file in the output folder.
  split   the held-out rows are a seeded permutation of the kept rows' ordinals (policy.split_heldout:
          exactly data.heldout_rows, the same rows as a load-everything prep would pick), then
          data.sample_rows draws the training rows per family from what is left, then data.balance.
  pass 2  the spool is read again; chunks of training rows are tokenized by the workers
          (SampleEncoder, one encode_batch a chunk) and appended in order to the MindRecord.

The output is the same whatever data.workers is: blocks and chunks are cut and written in source order.
The rules applied on the way (families, labels, split, sample, balance) are tunebox/data/policy.py's.
"""

from __future__ import annotations

import hashlib
import json
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
from tunebox.chaos import kill_point
from tunebox.contest.scoring import row_family
from tunebox.data import answers
from tunebox.data.policy import (
    BALANCED_OUT,
    HELDOUT,
    NOT_SAMPLED,
    SNIPPET,
    TRAIN,
    FamilyFilter,
    balance_training_rows,
    label_check,
    read_heldout_file,
    sample_training_rows,
    split_heldout,
)
from tunebox.data.samples import IGNORE, PARSERS, SampleEncoder, ShardedMindRecordWriter, bad_row_kind
from tunebox.data.tokenizer import TextTokenizer
from tunebox.io import InputError, decode_jsonl_line, iter_jsonl, iter_lines

SCAN_BLOCK_LINES = 4096  # lines a worker parses per task
TOKENIZE_CHUNK_ROWS = 2048  # rows a worker tokenizes per task (one encode_batch)
TASKS_IN_FLIGHT = 3  # per worker: bounds what waits in pipes (memory), keeps workers busy
POOL_MIN_BYTES = 512 * 1024  # smaller inputs run in the job's own process: a pool would only add start-up
ROWS_PER_FILE = 100_000  # MindRecord rows per file (train.mindrecord, train.mindrecord-00001, ...)
SPOOL = ".spool.jsonl"  # pass 1's kept rows, read again by pass 2, removed at the end

KEEP, REJECT, LEFT_OUT = 0, 1, 2


# ---- what runs in the workers (or in the job's process when there is no pool) -----------------

_WORKER: dict = {}


def worker_setup(
    tokenizer_json: str, seq_length: int, system: Optional[str], template: str = "chat", in_pool: bool = False
) -> None:
    if in_pool:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the job handles ^C and stops the pool
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker; the pool is the parallelism
    tok = TextTokenizer.load(Path(tokenizer_json).parent, tokenizer_json)
    _WORKER["encoder"] = SampleEncoder(tok, seq_length, system, template)


def scan_block(task: tuple) -> tuple[str, list[tuple]]:
    """Pass 1 on a block of lines -> (file, events): one event per non-blank line, in line order,
    (line, KEEP, hash, family, spool bytes, label verdict, old label), (line, REJECT, kind, reason) or
    (line, LEFT_OUT, family) for a family data.families / drop_families leaves out. The spooled answer is
    the training answer in data.answer_format; the reference stays the row's (or the fixed) label."""
    path_text, file_index, fmt, bad_labels, dedupe, families, answer_format, lines = task
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
        family = row_family(fmt, ex.prompt, ex.meta)
        if fmt == "math":
            if families.leaves_out(family):
                events.append((lineno, LEFT_OUT, family))
                continue
            if bad_labels != "keep":
                verdict, label, reason = label_check(ex.prompt, ex.reference, bad_labels)
                if verdict == "drop":
                    events.append((lineno, REJECT, "bad_label", reason))
                    continue
                if verdict == "fixed":
                    old, ex.answer, ex.reference = ex.reference, label, label
            ex.answer = answers.render_answer(ex.prompt, ex.answer, answers.format_for(answer_format, family), family)
        key = (
            int.from_bytes(hashlib.blake2b(ex.prompt.encode("utf-8"), digest_size=8).digest(), "little")
            if dedupe
            else 0
        )
        spool = encode([file_index, lineno, ex.prompt, ex.answer, ex.reference, ex.meta]) + "\n"
        events.append((lineno, KEEP, key, family, spool.encode("utf-8"), verdict, old))
    return path_text, events


def tokenize_chunk(spool_lines: list[bytes]) -> dict:
    """Pass 2 on a chunk of training rows (spool lines): padded ids/labels and per-row counts."""
    encoder: SampleEncoder = _WORKER["encoder"]
    rows = [json.loads(line) for line in spool_lines]
    ids, labels, lengths, answer_tokens = encoder.encode([r[2] for r in rows], [r[3] for r in rows])
    return {
        "ids": ids,
        "labels": labels,
        "lengths": lengths,
        "answer_tokens": answer_tokens,
        "where": [(r[0], r[1]) for r in rows],
        "segmented": encoder.segmented,
    }


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


# ---- pass 1 ----------------------------------------------------------------------------------


def _scan_tasks(files: list[Path], data) -> Iterator[tuple]:
    families = FamilyFilter.of(data)
    for index, path in enumerate(files):
        block: list = []
        for item in iter_lines(path):
            block.append(item)
            if len(block) >= SCAN_BLOCK_LINES:
                yield str(path), index, data.format, data.bad_labels, data.dedupe, families, data.answer_format, block
                block = []
        if block:
            yield str(path), index, data.format, data.bad_labels, data.dedupe, families, data.answer_format, block


class _Pass1:
    """Validate, clean and spool the rows (in source order), counting every removal."""

    def __init__(self, data, tmp: Path, exclude: frozenset = frozenset()):
        self.data, self.tmp = data, tmp
        self.exclude = exclude  # problems of data.heldout_file: never trained on
        self.left_out: Counter = Counter()  # rows per family that data.families / drop_families leave out
        self.removed: Counter = Counter()
        self.labels: Counter = Counter()
        self.rows_valid = self.rows_bad = 0
        self.family_codes = array("H")  # 2 bytes per kept row
        self.family_names: dict[str, int] = {}

    def run(self, files: list[Path], pool, window: int) -> None:
        d = self.data
        seen: set[int] = set()  # 8-byte hashes of the problems kept so far (data.dedupe)
        with (
            open(self.tmp / SPOOL, "wb") as spool,
            open(self.tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects,
            open(self.tmp / "fixed.jsonl", "w", encoding="utf-8") as fixed,
            tqdm(desc="read", unit=" rows", unit_scale=True, leave=False) as bar,
        ):

            def reject(path: str, line: int, kind: str, reason: str) -> None:
                rejects.write(
                    json.dumps({"file": path, "line": line, "kind": kind, "reason": reason}, ensure_ascii=False) + "\n"
                )
                self.removed[kind] += 1

            for path, events in ordered_map(pool, scan_block, _scan_tasks(files, d), window):
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
                            reject(
                                path,
                                line,
                                "duplicate",
                                f"duplicate: an earlier row has the same problem {problem[:SNIPPET]!r}",
                            )
                            continue
                        seen.add(key)
                    if self.exclude and json.loads(record)[2] in self.exclude:
                        reject(path, line, "in_heldout_file", "the same problem is in data.heldout_file (held out)")
                        continue
                    if verdict == "fixed":
                        fixed.write(
                            json.dumps(
                                {"file": path, "line": line, "old": old, "new": json.loads(record)[4]},
                                ensure_ascii=False,
                            )
                            + "\n"
                        )
                    spool.write(record)
                    self.family_codes.append(self.family_names.setdefault(family, len(self.family_names)))


# ---- pass 2 ----------------------------------------------------------------------------------


def _train_chunks(
    spool_path: Path,
    status: bytes,
    repeats: Optional[np.ndarray],
    files: list[Path],
    heldout_path: Path,
    file_rows: list[dict],
) -> Iterator[list[bytes]]:
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
                heldout.write(
                    json.dumps(
                        {
                            "file": str(files[file_index]),
                            "line": line,
                            "prompt": prompt,
                            "reference": reference,
                            "meta": meta,
                            "source": "split",
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        for row in file_rows:
            heldout.write(json.dumps(row, ensure_ascii=False) + "\n")
    if chunk:
        yield chunk


class _Pass2:
    """Tokenize the training rows in the workers, write them in order, count what was written."""

    def __init__(self, data, names: list[str], pad_id: int):
        self.data, self.names, self.pad_id = data, names, pad_id
        self.width = data.seq_length + 1
        self.lengths = array("i")
        self.kept = self.too_long = self.supervised = self.non_pad = self.cells = 0
        self.answer_max = np.zeros(len(names), dtype=np.int64)
        self.answer_rows = np.zeros(len(names), dtype=np.int64)
        self.preview_ids: list = []
        self.preview_labels: list = []
        self.segmented = True

    def run(
        self,
        chunks: Iterator,
        train_codes: np.ndarray,
        writer,
        rejects,
        removed: Counter,
        files: list[Path],
        pool,
        window: int,
    ) -> None:
        d, width, offset = self.data, self.width, 0
        with tqdm(total=len(train_codes), desc="tokenize", unit=" rows", unit_scale=True, leave=False) as bar:
            for res in ordered_map(pool, tokenize_chunk, chunks, window):
                n = len(res["lengths"])
                chunk_codes = train_codes[offset : offset + n]
                offset += n
                self.segmented &= res["segmented"]
                self.lengths.frombytes(res["lengths"].astype(np.int32).tobytes())
                over = res["lengths"] > width
                self.too_long += int(over.sum())
                keep = ~over if d.on_too_long == "skip" else np.ones(n, dtype=bool)
                if d.on_too_long == "skip":
                    for i in np.flatnonzero(over):
                        file_index, line = res["where"][i]
                        rejects.write(
                            json.dumps(
                                {
                                    "file": str(files[file_index]),
                                    "line": line,
                                    "kind": "too_long",
                                    "reason": f"too long: {int(res['lengths'][i])} tokens > seq_length + 1 = {width}",
                                },
                                ensure_ascii=False,
                            )
                            + "\n"
                        )
                        removed["too_long"] += 1
                ids, labels = res["ids"][keep], res["labels"][keep]
                writer.write(ids, labels)
                self.kept += len(ids)
                answer_tokens = res["answer_tokens"][keep]
                self.supervised += int(answer_tokens.sum())
                self.non_pad += int((ids != self.pad_id).sum())
                self.cells += ids.size
                np.maximum.at(self.answer_max, chunk_codes[keep], answer_tokens)
                self.answer_rows += np.bincount(chunk_codes[keep], minlength=len(self.names))
                if len(self.preview_ids) < 3:
                    self.preview_ids += list(ids[: 3 - len(self.preview_ids)])
                    self.preview_labels += list(labels[: 3 - len(self.preview_labels)])
                bar.update(n)


# ---- what a person reads ----------------------------------------------------------------------


def preview(tok: TextTokenizer, input_ids: np.ndarray, labels: np.ndarray, k: int = 3) -> str:
    out = []
    for a, b in zip(input_ids[:k], labels[:k]):
        prompt = tok.decode(
            [int(t) for t, l in zip(a, b) if l == IGNORE and t != tok.pad_id], skip_special_tokens=False
        )
        answer = tok.decode([int(l) for l in b if l != IGNORE], skip_special_tokens=False)
        out.append(f"--- prompt (no loss) ---\n{prompt}\n--- answer (loss) ---\n{answer}\n")
    return "\n".join(out)


def format_preview(heldout_path: Path, data) -> str:
    """One held-out row per family in every answer format (what data.answer_format would train on),
    the one in use marked."""
    if data.format != "math" or not heldout_path.exists():
        return ""
    first: dict[str, dict] = {}
    for item in iter_jsonl(heldout_path):
        if isinstance(item, InputError):
            raise item
        first.setdefault(row_family("math", item.value["prompt"]), item.value)
    out = ["", "=== answer formats (data.answer_format), one held-out row per family ==="]
    for family, row in sorted(first.items()):
        used = str(answers.format_for(data.answer_format, family))
        out.append(f"\n--- {family}: {row['prompt']}")
        for name, text in answers.examples(row["prompt"], row["reference"], family).items():
            mark = "  <- in use" if name == used else ""
            out.append(f"[{name}]{mark}\n{text}")
    return "\n".join(out) + "\n"


def _resource_use() -> dict:
    """CPU seconds and peak RSS of this process and of its finished children (the workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_seconds": round(me.ru_utime + me.ru_stime, 1),
        "cpu_seconds_children": round(children.ru_utime + children.ru_stime, 1),
        "peak_rss_mb": round(me.ru_maxrss / 1024, 1),
        "peak_rss_mb_largest_child": round(children.ru_maxrss / 1024, 1),
    }


def _by_name(names: list[str]) -> list[int]:
    return sorted(range(len(names)), key=lambda f: names[f])


# ---- the whole of it ---------------------------------------------------------------------------


def prepare(
    data,
    files: list[Path],
    tokenizer_json: Path,
    tmp: Path,
    *,
    source: Path,
    heldout_file: Optional[Path] = None,
    spec_path: Optional[str] = None,
    started: Optional[float] = None,
) -> tuple[dict, list[Path]]:
    """data (the run spec's data section) over `files` -> into folder `tmp`: the MindRecord shards,
    heldout.jsonl, rejects.jsonl, fixed.jsonl, stats.json and preview.txt. `tokenizer_json` is the model's
    tokenizer (each worker loads it), `source` what data.train_file (or data.generate) names, `heldout_file`
    data.heldout_file resolved, `spec_path` the run spec (named in errors). Returns (stats.json's content,
    the MindRecord files)."""
    started = time.time() if started is None else started
    d = data
    tok = TextTokenizer.load(tokenizer_json.parent, tokenizer_json)
    setup_args = (str(tokenizer_json), d.seq_length, d.system_prompt, d.template)
    workers = d.workers if sum(f.stat().st_size for f in files) >= POOL_MIN_BYTES else 1
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
        heldout_file_rows = read_heldout_file(d, heldout_file, spec_path) if d.heldout_file else []
        scan = _Pass1(d, tmp, frozenset(r["prompt"] for r in heldout_file_rows))
        scan.run(files, pool, window)
        kill_point("prep.writing")  # tests/test_chaos.py: the spool and rejects half way
        seconds["read_and_clean"] = time.time() - started - sum(seconds.values())
        n_kept = len(scan.family_codes)
        if n_kept == 0:
            raise InputError(
                "no usable rows (see rejects: every row was bad, a duplicate or wrongly labelled)",
                files[0] if len(files) == 1 else source,
            )

        # ---- split: held out (exactly heldout_rows), then the sample of training rows -----------
        codes = np.frombuffer(scan.family_codes, dtype=np.uint16)
        names = list(scan.family_names)
        heldout_mask = split_heldout(n_kept, d.heldout_rows, d.seed)
        status = np.where(heldout_mask, HELDOUT, TRAIN).astype(np.uint8)
        sampling = sample_training_rows(codes, status, names, d.sample_rows, d.seed)
        before_balance = np.bincount(codes[status == TRAIN], minlength=len(names))
        repeats, balanced = balance_training_rows(codes, status, names, d.balance, d.seed)
        train_mask = status == TRAIN
        train_codes = codes[train_mask] if repeats is None else np.repeat(codes[train_mask], repeats[train_mask])

        # ---- pass 2: tokenize in the workers, write in order ----------------------------------
        writer = ShardedMindRecordWriter(tmp / layout.PREP_TRAIN_RECORDS.name, ROWS_PER_FILE)
        chunks = _train_chunks(
            tmp / SPOOL, status.tobytes(), repeats, files, tmp / layout.PREP_HELDOUT.name, heldout_file_rows
        )
        written = _Pass2(d, names, tok.pad_id)
        with open(tmp / "rejects.jsonl", "a", encoding="utf-8") as rejects:
            written.run(chunks, train_codes, writer, rejects, scan.removed, files, pool, window)
        seconds["tokenize_and_write"] = time.time() - started - sum(seconds.values())
        if pool is not None:
            pool.close()  # let the workers exit on their own: their CPU time is then counted
            pool.join()
            pool = None
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if written.kept == 0:
        raise InputError(
            f"every training row is longer than data.seq_length + 1 = {written.width} tokens; raise data.seq_length",
            files[0],
        )
    shards = writer.commit()
    os.remove(tmp / SPOOL)
    seconds["commit"] = time.time() - started - sum(seconds.values())

    all_lengths = np.frombuffer(written.lengths, dtype=np.int32)
    family_rows = np.bincount(codes, minlength=len(names))
    heldout_by_family = np.bincount(codes[heldout_mask], minlength=len(names))
    train_by_family = np.bincount(train_codes, minlength=len(names))
    stats = {
        "source": str(source),
        "generate": d.generate,
        "files": [str(f) for f in files],
        "rows_read": scan.rows_valid + scan.rows_bad,
        "rows_bad": scan.rows_bad,
        "rows_kept": n_kept,
        "rows_heldout": int(heldout_mask.sum()),
        "rows_train": written.kept,
        "rows_not_sampled": int((status == NOT_SAMPLED).sum()),
        "rows_balanced_out": int((status == BALANCED_OUT).sum()),
        "rows_heldout_file": len(heldout_file_rows),
        "rows_too_long": written.too_long,
        "too_long_policy": d.on_too_long,
        "removed": dict(sorted(scan.removed.items())),
        "cleaning": {
            "on_bad_row": d.on_bad_row,
            "dedupe": d.dedupe,
            "bad_labels": d.bad_labels,
            "labels": {k: scan.labels.get(k, 0) for k in ("ok", "fixed", "dropped", "unchecked")}
            if d.bad_labels != "keep" and d.format == "math"
            else None,
        },
        "sampling": sampling,
        "split": f"held out: a seeded permutation of the {n_kept} kept rows (data.seed={d.seed}); "
        f"training rows in source order",
        "families": {names[f]: int(family_rows[f]) for f in _by_name(names)},
        "family_policy": {
            "families": d.families,
            "drop_families": d.drop_families,
            "balance": balanced or None,
            "answer_format": d.answer_format,
            "template": d.template,
            "left_out": dict(sorted(scan.left_out.items())),
            # per family: rows read and kept, held out, training rows before data.balance and after it
            # (repeats counted; rows later found too long are in rows_too_long, not subtracted here)
            "rows": {
                names[f]: {
                    "kept": int(family_rows[f]),
                    "heldout": int(heldout_by_family[f]),
                    "train_before_balance": int(before_balance[f]),
                    "train": int(train_by_family[f]),
                }
                for f in _by_name(names)
            },
            "heldout_file": (
                {
                    "file": str(heldout_file),
                    "rows": len(heldout_file_rows),
                    "families": dict(
                        sorted(Counter(row_family(d.format, r["prompt"], r["meta"]) for r in heldout_file_rows).items())
                    ),
                }
                if d.heldout_file
                else None
            ),
        },
        "seq_length": d.seq_length,
        "tokens_per_row": {p: int(np.percentile(all_lengths, p)) for p in (50, 90, 99, 100)},
        "answer_tokens_per_row_mean": written.supervised / written.kept,
        "answer_tokens_by_family": {
            names[f]: {"rows": int(written.answer_rows[f]), "max": int(written.answer_max[f])}
            for f in _by_name(names)
            if written.answer_rows[f]
        },
        "padding_fraction": 1 - written.non_pad / written.cells,
        "mindrecord_files": [{"file": path.name, "rows": rows} for path, rows in shards],
        "resources": {
            "workers": workers,
            "seconds": round(time.time() - started, 2),
            "seconds_by_phase": {k: round(v, 2) for k, v in seconds.items()},
            "prompt_encoding": "segmented" if written.segmented else "full template per row",
            **_resource_use(),
        },
    }
    (tmp / layout.PREP_STATS.name).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "preview.txt").write_text(
        preview(tok, np.array(written.preview_ids), np.array(written.preview_labels))
        + format_preview(tmp / layout.PREP_HELDOUT.name, d),
        encoding="utf-8",
    )
    return stats, [path for path, _ in shards]
