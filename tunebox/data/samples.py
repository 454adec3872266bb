"""Turning raw rows into training samples: validation with located errors, the chat format,
loss on the answer only, and fixed-length (seq_length + 1) id arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from tunebox.contest.scoring import extract_choice_letter, mcq_prompt
from tunebox.data.prompts import prompt_parts, render_prompt
from tunebox.data.tokenizer import TextTokenizer
from tunebox.io import InputError, JsonlRow, iter_jsonl

IGNORE = -100


@dataclass
class Example:
    line: int  # 1-based line in the source file
    prompt: str  # what the user asks (before the chat template)
    answer: str  # the reference answer text the model learns to write
    reference: str  # what evaluation compares against (the solution / the letter)
    meta: dict


def _require_text(value: dict, key: str, path: Path, line: int) -> str:
    if key not in value:
        raise InputError(f"missing field {key!r} (fields present: {', '.join(map(str, value)) or 'none'})", path, line)
    text = value[key]
    if not isinstance(text, str):
        raise InputError(f"field {key!r} must be a string, got {type(text).__name__}", path, line)
    if not text.strip():
        raise InputError(f"field {key!r} is empty", path, line)
    return text


def parse_math_row(row: JsonlRow, path: Path) -> Example:
    value = row.value
    if not isinstance(value, dict):
        raise InputError(
            f'expected a JSON object {{"problem", "solution"}}, got {type(value).__name__}', path, row.line
        )
    problem = _require_text(value, "problem", path, row.line)
    solution = _require_text(value, "solution", path, row.line)
    return Example(row.line, problem.strip(), solution.strip(), solution.strip(), {})


def parse_mcq_row(row: JsonlRow, path: Path) -> Example:
    """MMLU/CMMLU rows {question, choices[4], answer} or the contest's alpaca rows {instruction, input, output}."""
    value = row.value
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", path, row.line)
    if "question" in value:
        _require_text(value, "question", path, row.line)
        choices = value.get("choices")
        if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
            raise InputError("field 'choices' must be a list of 4 strings", path, row.line)
        answer = _require_text(value, "answer", path, row.line).strip().upper()
        if answer not in ("A", "B", "C", "D"):
            raise InputError(f"field 'answer' must be one of A, B, C, D, got {value['answer']!r}", path, row.line)
        prompt = mcq_prompt(value)
    elif "instruction" in value:
        instruction = _require_text(value, "instruction", path, row.line)
        inp = value.get("input", "")
        if not isinstance(inp, str):
            raise InputError("field 'input' must be a string", path, row.line)
        output = _require_text(value, "output", path, row.line)
        answer = extract_choice_letter(output)
        if answer is None:
            raise InputError(f"no answer letter A-D found in 'output': {output[:80]!r}", path, row.line)
        prompt = instruction + ("\n" + inp if inp else "")
    else:
        raise InputError("expected fields question/choices/answer or instruction/input/output", path, row.line)
    text = f"The right option is {answer}."
    return Example(row.line, prompt, text, answer, {"subject": value.get("subject")})


PARSERS = {"math": parse_math_row, "mcq": parse_mcq_row}


def read_examples(
    path: Path, fmt: str, on_bad_row: str = "error", rejects: Optional[list] = None, max_rows: Optional[int] = None
) -> Iterator[Example]:
    """Stream examples from a JSONL file. A bad row raises InputError (file:line), or with
    on_bad_row='skip' is appended to `rejects` as {line, reason} and reading goes on."""
    parse = PARSERS[fmt]
    n = 0
    for row in iter_jsonl(path):
        try:
            if isinstance(row, InputError):
                raise row
            example = parse(row, path)
        except InputError as err:
            if on_bad_row != "skip":
                raise
            if rejects is not None:
                rejects.append({"line": err.line, "reason": err.message})
            continue
        yield example
        n += 1
        if max_rows is not None and n >= max_rows:
            return


def encode_example(
    tok: TextTokenizer, ex: Example, seq_length: int, system: Optional[str] = None, template: str = "chat"
):
    """ids and labels of length seq_length + 1 (pad-filled), labels IGNORE on prompt and padding.
    Returns (input_ids, labels, n_tokens) where n_tokens is the unpadded length (may exceed the limit)."""
    prompt_ids = tok.encode(render_prompt(tok, ex.prompt, template, system))
    answer_ids = tok.encode(ex.answer + tok.answer_suffix)
    ids = prompt_ids + answer_ids
    n = len(ids)
    width = seq_length + 1
    input_ids = np.full(width, tok.pad_id, dtype=np.int32)
    labels = np.full(width, IGNORE, dtype=np.int32)
    ids = ids[:width]
    input_ids[: len(ids)] = ids
    start = min(len(prompt_ids), width)
    labels[start : len(ids)] = ids[start:]
    return input_ids, labels, n


def mindrecord_shards(path: Path) -> list[Path]:
    """The files of a sample set prep wrote: `path` itself, then `path`-00001, -00002, ... when prep
    split a large set (each file has its own .db index; MindSpore builds an index in memory, so
    prep bounds the rows per file)."""
    path = Path(path)
    return [path] + sorted(path.parent.glob(path.name + "-[0-9][0-9][0-9][0-9][0-9]"))


def read_mindrecord(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All samples as two int32 arrays (N, seq_length + 1), in file order (shards in order)."""
    import mindspore.dataset as ds

    data = ds.MindDataset(
        [str(p) for p in mindrecord_shards(path)], columns_list=["input_ids", "labels"], shuffle=False
    )
    ids, labels = [], []
    for row in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        ids.append(row[0])
        labels.append(row[1])
    return np.stack(ids), np.stack(labels)


# ---- prep at scale: input sets, batched encoding, streaming MindRecord ---

SAMPLE_SCHEMA = {"input_ids": {"type": "int32", "shape": [-1]}, "labels": {"type": "int32", "shape": [-1]}}


def train_files(target: Path, spec_path: Optional[str] = None) -> list[Path]:
    """The training rows' files (data.train_file, or the generated folder) as a sorted list: one file, a
    directory's *.jsonl (the generator's part-*.jsonl), or a glob such as data/part-*.jsonl. `spec_path`
    is the run spec the target came from, named in the error when nothing is found."""
    import glob

    if glob.has_magic(str(target)):
        files = sorted(Path(p) for p in glob.glob(str(target)) if Path(p).is_file())
        if not files:
            raise InputError(f"data.train_file: no file matches the pattern {target}", spec_path)
        return files
    if target.is_dir():
        files = sorted(p for p in target.glob("*.jsonl") if p.is_file())
        if not files:
            raise InputError("data.train_file is a directory with no *.jsonl file in it", target)
        return files
    if not target.exists():
        raise InputError(f"data.train_file not found: {target}", spec_path)
    return [target]


# What each bad-row message means, as a short name for counting (stats.json "removed").
_BAD_ROW_KINDS = (
    ("over the", "line_too_long"),
    ("not valid UTF-8", "invalid_utf8"),
    ("broken JSON", "broken_json"),
    ("missing field", "missing_field"),
    ("must be a string", "not_a_string"),
    ("is empty", "empty_field"),
    ("expected a JSON object", "not_an_object"),
)


def bad_row_kind(message: str) -> str:
    return next((kind for marker, kind in _BAD_ROW_KINDS if marker in message), "invalid_row")


class SampleEncoder:
    """encode_example for a batch of rows, with the same ids and labels, at a fraction of the cost.

    Two things make it fast: the chat template is rendered once (it inserts the user message
    verbatim, checked on probes; otherwise every row is rendered), and the text around the message
    is split at special tokens, which a tokenizer cuts out before anything else, so only the
    segment holding the message is tokenized per row (one encode_batch call per chunk). Every
    batch's first rows are also encoded the plain way and compared; on any difference the encoder
    switches to the plain way for good, so the output never depends on the shortcut.
    """

    PROBES = (
        "1 + 1",
        "  leading and trailing spaces  ",
        "\nnew\nlines\n",
        "计算 3 的平方根？",
        "<|im_end|> in text",
        "{{ x }}",
    )
    CHECK_ROWS = 2

    def __init__(self, tok: TextTokenizer, seq_length: int, system: Optional[str] = None, template: str = "chat"):
        self.tok, self.system, self.template, self.seq_length = tok, system, template, seq_length
        self.width = seq_length + 1
        before, found, after = prompt_parts(tok, template, system)
        self.segmented = found and all(self.prompt(p) == before + p + after for p in self.PROBES)
        specials = [t.content for t in tok.tk.get_added_tokens_decoder().values() if t.special and t.content]
        head, self.user_lead = self._split_after_last_special(before, specials)
        self.user_tail, tail = self._split_before_first_special(after, specials)
        self.head_ids, self.tail_ids = tok.encode(head), tok.encode(tail)
        self.answer_lead, suffix_tail = self._split_before_first_special(tok.answer_suffix, specials)
        self.suffix_ids = tok.encode(suffix_tail)

    def prompt(self, problem: str) -> str:
        return render_prompt(self.tok, problem, self.template, self.system)

    @staticmethod
    def _split_after_last_special(text: str, specials: list[str]) -> tuple[str, str]:
        cut = max((text.rfind(s) + len(s) for s in specials if s in text), default=0)
        return text[:cut], text[cut:]

    @staticmethod
    def _split_before_first_special(text: str, specials: list[str]) -> tuple[str, str]:
        cut = min((text.find(s) for s in specials if s in text), default=len(text))
        return text[:cut], text[cut:]

    def _token_lists(self, prompts: list[str], answers: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        tok = self.tok
        if not self.segmented:
            return (
                tok.encode_batch([self.prompt(p) for p in prompts]),
                tok.encode_batch([a + tok.answer_suffix for a in answers]),
            )
        lead, tail = self.user_lead, self.user_tail
        middles = tok.encode_batch([lead + p + tail for p in prompts])
        answer_parts = tok.encode_batch([a + self.answer_lead for a in answers])
        return ([self.head_ids + m + self.tail_ids for m in middles], [a + self.suffix_ids for a in answer_parts])

    def encode(self, prompts: list[str], answers: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, labels) int32 [n, seq_length + 1] as encode_example makes them, the unpadded
        token count of each row (may exceed the width), and its answer-token count after truncation."""
        prompt_ids, answer_ids = self._token_lists(prompts, answers)
        if self.segmented:
            for i in range(min(self.CHECK_ROWS, len(prompts))):
                if prompt_ids[i] + answer_ids[i] != (
                    self.tok.encode(self.prompt(prompts[i])) + self.tok.encode(answers[i] + self.tok.answer_suffix)
                ):
                    self.segmented = False
                    return self.encode(prompts, answers)
        n, width = len(prompts), self.width
        input_ids = np.full((n, width), self.tok.pad_id, dtype=np.int32)
        labels = np.full((n, width), IGNORE, dtype=np.int32)
        lengths = np.empty(n, dtype=np.int32)
        answer_tokens = np.empty(n, dtype=np.int32)
        for i, (p, a) in enumerate(zip(prompt_ids, answer_ids)):
            ids = p + a
            lengths[i] = len(ids)
            ids = ids[:width]
            input_ids[i, : len(ids)] = ids
            start = min(len(p), width)
            labels[i, start : len(ids)] = ids[start:]
            answer_tokens[i] = len(ids) - start
        return input_ids, labels, lengths, answer_tokens


class MindRecordWriter:
    """Append (input_ids, labels) batches to one MindRecord file, then commit (data + .db index).

    FileWriter.write_raw_data spends most of its time in Python per row (it asks the C++ header
    for the schema several times a row: ~100 us/row, minutes at 800k rows). This writer hands the
    same bytes to the same C++ writer a batch at a time: every field is a blob field, and a row's
    blob is, per field in the header's order, an 8-byte big-endian length then the array's bytes
    (mindspore/mindrecord/core/shardwriter.py, _merge_blob). tests/test_prep_scale.py checks that
    the file is byte for byte what write_raw_data writes. If the internals are not there (another
    MindSpore), it falls back to write_raw_data.
    """

    def __init__(self, path: Path, description: str = "tunebox sft samples"):
        from mindspore.mindrecord import FileWriter

        self.path = Path(path)
        self.writer = FileWriter(str(self.path), shard_num=1, overwrite=True)
        self.writer.add_schema(SAMPLE_SCHEMA, description)
        self.rows = 0
        self._c_writer = None
        self._blob_fields: list[str] = []
        self._fast = True

    def _open_fast(self) -> bool:
        try:
            shard = self.writer._writer
            if not shard.is_open:
                shard.open(self.writer._paths, self.writer._overwrite)
            if not shard.get_shard_header():
                shard.set_shard_header(self.writer._header)
            self._blob_fields = list(self.writer._header.blob_fields)
            self._c_writer = shard._writer
            self.writer._parallel_writer = False
        except AttributeError:
            return False
        return sorted(self._blob_fields) == sorted(SAMPLE_SCHEMA)

    def write(self, input_ids: np.ndarray, labels: np.ndarray) -> None:
        n = len(input_ids)
        if n == 0:
            return
        if self._fast and self._c_writer is None:
            self._fast = self._open_fast()
        if not self._fast:
            self.writer.write_raw_data(
                [
                    {
                        "input_ids": np.ascontiguousarray(a, dtype=np.int32),
                        "labels": np.ascontiguousarray(b, dtype=np.int32),
                    }
                    for a, b in zip(input_ids, labels)
                ]
            )
            self.rows += n
            return
        columns = {"input_ids": np.asarray(input_ids, dtype=np.int32), "labels": np.asarray(labels, dtype=np.int32)}
        layout = []
        for i, name in enumerate(self._blob_fields):
            layout += [(f"n{i}", ">u8"), (f"v{i}", np.int32, (columns[name].shape[1],))]
        packed = np.empty(n, dtype=np.dtype(layout))
        for i, name in enumerate(self._blob_fields):
            packed[f"n{i}"] = columns[name].shape[1] * 4
            packed[f"v{i}"] = columns[name]
        buf, size = packed.tobytes(), packed.dtype.itemsize
        blobs = [buf[k * size : (k + 1) * size] for k in range(n)]
        from mindspore import _c_mindrecord as ms_c  # the status enum the Python wrapper checks too

        if self._c_writer.write_raw_data({}, blobs, True, False) != ms_c.MSRStatus.SUCCESS:
            raise RuntimeError(f"{self.path}: MindRecord write failed (see the MindSpore log above)")
        self.rows += n

    def commit(self) -> None:
        self.writer.commit()


class ShardedMindRecordWriter:
    """MindRecordWriter over several files of at most `rows_per_file` rows, named as
    mindrecord_shards() finds them. Each file is committed (data + .db) as soon as it is full:
    MindSpore's index build holds ~1.5 KB a row in memory, so this bounds the job's peak."""

    def __init__(self, path: Path, rows_per_file: int = 100_000):
        self.path, self.rows_per_file = Path(path), rows_per_file
        self.files: list[tuple[Path, int]] = []  # committed: (file, rows)
        self.current: Optional[MindRecordWriter] = None
        self.rows = 0

    def _shard_path(self, index: int) -> Path:
        return self.path if index == 0 else self.path.with_name(f"{self.path.name}-{index:05d}")

    def write(self, input_ids: np.ndarray, labels: np.ndarray) -> None:
        start = 0
        while start < len(input_ids):
            if self.current is None:
                self.current = MindRecordWriter(self._shard_path(len(self.files)))
            take = min(len(input_ids) - start, self.rows_per_file - self.current.rows)
            self.current.write(input_ids[start : start + take], labels[start : start + take])
            start += take
            self.rows += take
            if self.current.rows >= self.rows_per_file:
                self._close_current()

    def _close_current(self) -> None:
        self.current.commit()
        self.files.append((self.current.path, self.current.rows))
        self.current = None

    def commit(self) -> list[tuple[Path, int]]:
        if self.current is not None or not self.files:
            if self.current is None:
                self.current = MindRecordWriter(self._shard_path(0))
            self._close_current()
        return self.files
