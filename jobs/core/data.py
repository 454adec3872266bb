"""Turning raw rows into training samples: validation with located errors, the chat format,
loss on the answer only, and fixed-length (seq_length + 1) id arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from .io import InputError, JsonlRow, iter_jsonl
from .tokenizer import TextTokenizer

if TYPE_CHECKING:
    from .config import RunSpec

IGNORE = -100


@dataclass
class Example:
    line: int              # 1-based line in the source file
    prompt: str            # what the user asks (before the chat template)
    answer: str            # the reference answer text the model learns to write
    reference: str         # what evaluation compares against (the solution / the letter)
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
        raise InputError(f"expected a JSON object {{\"problem\", \"solution\"}}, got {type(value).__name__}", path, row.line)
    problem = _require_text(value, "problem", path, row.line)
    solution = _require_text(value, "solution", path, row.line)
    return Example(row.line, problem.strip(), solution.strip(), solution.strip(), {})


def parse_mcq_row(row: JsonlRow, path: Path) -> Example:
    """MMLU/CMMLU rows {question, choices[4], answer} or the contest's alpaca rows {instruction, input, output}."""
    from .scoring import extract_choice_letter, mcq_prompt  # pure Python, no model imports

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


def read_examples(path: Path, fmt: str, on_bad_row: str = "error", rejects: Optional[list] = None,
                  max_rows: Optional[int] = None) -> Iterator[Example]:
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


def encode_example(tok: TextTokenizer, ex: Example, seq_length: int, system: Optional[str] = None):
    """ids and labels of length seq_length + 1 (pad-filled), labels IGNORE on prompt and padding.
    Returns (input_ids, labels, n_tokens) where n_tokens is the unpadded length (may exceed the limit)."""
    prompt_ids = tok.encode(tok.chat_prompt(ex.prompt, system))
    answer_ids = tok.encode(ex.answer + tok.answer_suffix)
    ids = prompt_ids + answer_ids
    n = len(ids)
    width = seq_length + 1
    input_ids = np.full(width, tok.pad_id, dtype=np.int32)
    labels = np.full(width, IGNORE, dtype=np.int32)
    ids = ids[:width]
    input_ids[:len(ids)] = ids
    start = min(len(prompt_ids), width)
    labels[start:len(ids)] = ids[start:]
    return input_ids, labels, n


def load_tokenizer(spec: "RunSpec") -> TextTokenizer:
    from .weights import ensure_model

    model_dir = ensure_model(spec.model.name)
    return TextTokenizer.load(model_dir, spec.resolve(spec.model.tokenizer))


def write_mindrecord(path: Path, input_ids: np.ndarray, labels: np.ndarray, chunk: int = 4096) -> None:
    from mindspore.mindrecord import FileWriter

    writer = FileWriter(str(path), shard_num=1, overwrite=True)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]},
                       "labels": {"type": "int32", "shape": [-1]}}, "tunebox sft samples")
    for start in range(0, len(input_ids), chunk):
        writer.write_raw_data([{"input_ids": a, "labels": b}
                               for a, b in zip(input_ids[start:start + chunk], labels[start:start + chunk])])
    writer.commit()


def read_mindrecord(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All samples as two int32 arrays (N, seq_length + 1), in file order."""
    import mindspore.dataset as ds

    data = ds.MindDataset(str(path), columns_list=["input_ids", "labels"], shuffle=False)
    ids, labels = [], []
    for row in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        ids.append(row[0])
        labels.append(row[1])
    return np.stack(ids), np.stack(labels)
