"""evaluate: the contest's judgement of a run. For the base model and every merged checkpoint:
accuracy on the held-out rows (math by the contest rule; multiple choice by the letter in the
generated text and, second, by the log-probabilities of the letters), SQuAD v1.1 F1/EM and the
retention against the base model (tuned >= 90% of base on both), the parameter ratio and the
stage score; then the checkpoint the contest rule picks, and why each other one lost.

Outputs, under runs/<run_id>/evaluate/:
  <model>/predictions.jsonl        one line per held-out row: prompt, answer, reference, verdicts
  <model>/scores.json              accuracy (strict and tolerant), per family, timing
  <model>/squad_predictions.jsonl  one line per SQuAD question: generated text, answer span, F1, EM
  <model>/squad.json               SQuAD F1 and EM (percent), timing
  scale-dial/scale-<s>/...         the same for the chosen checkpoint at LoRA scale s (--scales)
  limits.json                      max new tokens per problem family, from the training answers
  report.json, report.md           every model side by side, the choice and the reasons
  plots/*.png                      accuracy and retention per checkpoint, loss curve, per family, scale dial
  manifest.json

Generation backend (eval.backend): `numpy` is tunebox's batched greedy decoder with a KV cache
(tunebox/evaluation/decode.py), used on CPU because MindFormers' generate() does not run there;
`mindformers` is MindFormers' own generate() (the path on Ascend). `auto` picks by train.device.
New tokens are capped per problem family at the longest training answer of that family plus a
margin (never above eval.max_new_tokens), and at 20 for SQuAD as the contest did.

Resumable: a model whose scores.json / squad.json match its checkpoint's sha256 and the current
settings is not evaluated again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from tunebox import layout
from tunebox.contest import scoring
from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.contest.rules import (RETENTION_THRESHOLD, SCORE_FORMULAS, choose_checkpoint, param_figures, retention_verdict,
                           stage_score)
from tunebox.data.samples import load_tokenizer
from tunebox.io import InputError, atomic_write_json, atomic_write_text, iter_jsonl, sha256_file
from tunebox.manifest import write_job_manifest
from tunebox.model.registry import ModelSpec, get_model_spec
from tunebox.data.prompts import spec_prompt
from tunebox.data.tokenizer import TextTokenizer

log = logging.getLogger("tunebox.evaluate")

SQUAD_MAX_NEW_TOKENS = 20
"""The contest's retention runs generated at most 20 new tokens (max_new_tokens: 20 in the teams'
base-eval configs, docs/CONTEST_RULES.md)."""
ANSWER_MARGIN_TOKENS = 8
"""Added to the longest training answer of a family: room for a slightly longer number."""
MCQ_ANSWER_PREFIX = "The right option is"
"""What every MCQ training answer starts with ("The right option is C."): the log-prob method
reads the letter distribution right after it."""
ALL_FAMILIES = "*"


# ---- scoring per data format -------------------------------------------------------------

def row_family(fmt: str, row: dict) -> str:
    """math: the problem family from its wording; mcq: the subject."""
    if fmt == "math":
        return scoring.math_family(row["prompt"])
    return (row.get("meta") or {}).get("subject") or "mcq"


def score_row(fmt: str, prediction: str, row: dict) -> dict:
    """Verdicts for one answer (scoring.answer_verdict) and its family."""
    return {**scoring.answer_verdict(fmt, prediction, row["reference"]), "family": row_family(fmt, row),
            "source": row.get("source", "split")}


def _rate(rows: list[dict], key: str) -> float:
    return sum(bool(r.get(key)) for r in rows) / len(rows) if rows else 0.0


def _mean_digits(rows: list[dict]) -> Optional[float]:
    digits = [r["leading_digits"] for r in rows if r.get("leading_digits") is not None]
    return sum(digits) / len(digits) if digits else None


def _by_family(rows: list[dict], with_logprob: bool) -> dict:
    fam: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        fam[r["family"]].append(r)
    return {f: {"n": len(rs), "strict": _rate(rs, "strict"), "tolerant": _rate(rs, "tolerant"),
                "within_1pct": _rate(rs, "within_1pct"), "leading_digits": _mean_digits(rs),
                **({"logprob": _rate(rs, "logprob")} if with_logprob else {})}
            for f, rs in sorted(fam.items())}


def summarize(scored: list[dict]) -> dict:
    """Accuracy overall and per family: strict and tolerant (the contest's rule and ours), and the graded
    measure (scoring.closeness: the share within 1% of the reference, the mean count of leading significant
    digits right); per held-out source too when there are two (the split and data.heldout_file); with MCQ
    log-prob verdicts (`logprob` per row) also accuracy_logprob."""
    n = len(scored)
    with_logprob = n > 0 and all("logprob" in r for r in scored)
    out = {"n": n, "accuracy_strict": _rate(scored, "strict"), "accuracy_tolerant": _rate(scored, "tolerant"),
           "accuracy_within_1pct": _rate(scored, "within_1pct"), "leading_digits_mean": _mean_digits(scored),
           "per_family": _by_family(scored, with_logprob)}
    sources = sorted({r.get("source", "split") for r in scored})
    if len(sources) > 1:
        out["per_source"] = {}
        for src in sources:
            rows = [r for r in scored if r.get("source", "split") == src]
            out["per_source"][src] = {"n": len(rows), "accuracy_strict": _rate(rows, "strict"),
                                      "accuracy_tolerant": _rate(rows, "tolerant"),
                                      "accuracy_within_1pct": _rate(rows, "within_1pct"),
                                      "leading_digits_mean": _mean_digits(rows),
                                      "per_family": _by_family(rows, with_logprob)}
    if with_logprob:
        out["accuracy_logprob"] = _rate(scored, "logprob")
    return out


# ---- new-token limits per family, from the training answers (prep's stats or samples) ----------

def template_parts(tok: TextTokenizer, data) -> tuple[str, str]:
    """The prompt template's text before and after the problem (data.template, data.system_prompt)."""
    sentinel = "\u0000USER\u0000"
    text = spec_prompt(tok, sentinel, data)
    before, _, after = text.partition(sentinel)
    return before, after


def answer_token_limits(spec: RunSpec, tok: TextTokenizer) -> dict:
    """Max new tokens per problem family: the longest answer of that family in the training
    samples prep wrote (held-out rows are not among them), plus ANSWER_MARGIN_TOKENS, capped at
    eval.max_new_tokens. Read from prep's stats.json (answer_tokens_by_family), or counted in
    train.mindrecord when an older prep did not record it. MCQ answers share one limit (every
    answer is 'The right option is X.')."""
    suffix_tokens = len(tok.encode(tok.answer_suffix)) if tok.answer_suffix else 0
    stats_file = spec.run_dir / layout.PREP_STATS
    by_family = json.loads(stats_file.read_text()).get("answer_tokens_by_family") if stats_file.exists() else None
    if by_family:
        # prep counts the closing suffix (<|im_end|>) with the answer; generation stops at it and never counts it
        longest = {f: max(int(v["max"]) - suffix_tokens, 0) for f, v in by_family.items()}
        rows = {f: int(v["rows"]) for f, v in by_family.items()}
        source = str(stats_file)
        if spec.data.format != "math":
            longest, rows = {ALL_FAMILIES: max(longest.values())}, {ALL_FAMILIES: sum(rows.values())}
    else:
        longest, rows = longest_answers_in_samples(spec, tok, suffix_tokens)
        source = str(spec.run_dir / layout.PREP_TRAIN_RECORDS)
    cap = spec.eval.max_new_tokens
    families = {f: {"train_rows": rows[f], "longest_answer_tokens": longest[f],
                    "max_new_tokens": min(cap, longest[f] + ANSWER_MARGIN_TOKENS)} for f in sorted(longest)}
    return {"source": source, "margin": ANSWER_MARGIN_TOKENS, "cap": cap, "families": families,
            "other_families": cap}


def longest_answers_in_samples(spec: RunSpec, tok: TextTokenizer, suffix_tokens: int) -> tuple[dict, dict]:
    """({family: longest answer tokens}, {family: rows}) counted in prep's train.mindrecord, one
    sample at a time: the answer is where the labels are, the family comes from the decoded prompt."""
    import mindspore.dataset as ds

    from tunebox.data.samples import IGNORE

    record = spec.run_dir / layout.PREP_TRAIN_RECORDS
    if not record.exists():
        raise InputError(f"{record} not found: run prep first")
    before, after = template_parts(tok, spec.data)
    longest: dict[str, int] = defaultdict(int)
    rows: dict[str, int] = defaultdict(int)
    samples = ds.MindDataset(str(record), columns_list=["input_ids", "labels"], shuffle=False)
    for input_ids, label_ids in samples.create_tuple_iterator(output_numpy=True, num_epochs=1):
        answer_at = np.flatnonzero(label_ids != IGNORE)
        if answer_at.size == 0:
            continue
        answer_tokens = max(int(answer_at.size) - suffix_tokens, 0)
        if spec.data.format == "math":
            prompt = tok.decode(input_ids[:answer_at[0]].tolist(), skip_special_tokens=False)
            if prompt.startswith(before) and prompt.endswith(after):
                prompt = prompt[len(before):len(prompt) - len(after)]
            family = scoring.math_family(prompt)
        else:
            family = ALL_FAMILIES
        longest[family] = max(longest[family], answer_tokens)
        rows[family] += 1
    return dict(longest), dict(rows)


def limit_for(limits: dict, family: str) -> int:
    entry = limits["families"].get(family) or limits["families"].get(ALL_FAMILIES)
    return entry["max_new_tokens"] if entry else limits["other_families"]


# ---- the evaluation sets -------------------------------------------------------------------

@dataclass
class HeldoutTask:
    fmt: str
    rows: list[dict]
    prompts: list[list[int]]
    families: list[str]
    limits: list[int]
    limits_info: dict
    choice_plan: Optional[dict] = None     # MCQ: token ids of the letters (choice_token_plan)

    @property
    def settings_sha(self) -> str:
        """What, besides the checkpoint, decides the predictions: prompts and limits."""
        h = hashlib.sha256(json.dumps([self.prompts, self.limits, self.choice_plan], sort_keys=True).encode())
        return h.hexdigest()[:16]


@dataclass
class SquadTask:
    source: Path
    source_sha256: str
    rows: list[dict]
    prompts: list[list[int]]
    max_new_tokens: int = SQUAD_MAX_NEW_TOKENS
    min_new_tokens: int = 1
    settings: dict = field(default_factory=dict)


def load_heldout(spec: RunSpec, tok: TextTokenizer) -> HeldoutTask:
    heldout_file = spec.run_dir / layout.PREP_HELDOUT
    if not heldout_file.exists():
        raise InputError(f"{heldout_file} not found: run prep first")
    rows = [json.loads(l) for l in heldout_file.read_text(encoding="utf-8").splitlines() if l.strip()]
    if spec.eval.limit:
        rows = rows[:spec.eval.limit]
    if not rows:
        raise InputError("no held-out rows to evaluate: data.heldout_rows must be > 0", heldout_file)
    fmt = spec.data.format
    prompts = [tok.encode(spec_prompt(tok, r["prompt"], spec.data)) for r in rows]
    families = [row_family(fmt, r) for r in rows]
    limits_info = answer_token_limits(spec, tok)
    limits = [limit_for(limits_info, ALL_FAMILIES if fmt != "math" else f) for f in families]
    plan = choice_token_plan(tok) if fmt == "mcq" else None
    return HeldoutTask(fmt, rows, prompts, families, limits, limits_info, plan)


def load_squad(spec: RunSpec, tok: TextTokenizer) -> Optional[SquadTask]:
    """The first eval.squad_rows questions of eval.squad_file, as the contest prompted them (the
    plain `squad_prompt` text, no chat template); None when SQuAD is switched off."""
    if not spec.eval.squad_file or spec.eval.squad_rows <= 0:
        return None
    path = spec.resolve(spec.eval.squad_file)
    if not path.is_file():
        raise InputError(f"eval.squad_file not found: {path}", spec.source_path)
    rows = []
    for row in iter_jsonl(path):
        if isinstance(row, InputError):
            raise row
        value = row.value
        if not isinstance(value, dict):
            raise InputError("expected a JSON object {context, question, answers}", path, row.line)
        for key in ("context", "question"):
            if not isinstance(value.get(key), str) or not value[key].strip():
                raise InputError(f"field {key!r} must be a non-empty string", path, row.line)
        answers = value.get("answers")
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
            raise InputError("field 'answers' must be a non-empty list of strings (the gold answer texts)", path, row.line)
        rows.append({"line": row.line, "id": value.get("id"), "context": value["context"],
                     "question": value["question"], "answers": answers})
        if len(rows) >= spec.eval.squad_rows:
            break
    if len(rows) < spec.eval.squad_rows:
        log.warning("%s has %d questions, eval.squad_rows asks for %d: using %d", path, len(rows),
                    spec.eval.squad_rows, len(rows))
    prompts = [tok.encode(scoring.squad_prompt(r["context"], r["question"])) for r in rows]
    return SquadTask(path, sha256_file(path), rows, prompts, min_new_tokens=spec.eval.squad_min_new_tokens,
                     settings={"rows": len(rows), "max_new_tokens": SQUAD_MAX_NEW_TOKENS,
                               "min_new_tokens": spec.eval.squad_min_new_tokens})


# ---- multiple choice by letter log-probabilities ---------------------------------------------

def choice_token_plan(tok: TextTokenizer, prefix: str = MCQ_ANSWER_PREFIX,
                      letters: str = scoring.CHOICE_LETTERS) -> dict:
    """Which tokens to compare. Training answers are encoded as one string ('The right option is
    C.'), so the context is encode(prefix) plus whatever the four ' X' continuations share (a
    space token, for a byte-level tokenizer), and each letter is the one token after that."""
    base = tok.encode(prefix)
    tails = []
    for letter in letters:
        full = tok.encode(f"{prefix} {letter}")
        if full[:len(base)] != base:
            raise ValueError(f"the tokenizer encodes {prefix!r} differently when followed by ' {letter}'; "
                             f"the letter position is ambiguous")
        tails.append(full[len(base):])
    shared = tails[0][:-1]
    if any(t[:-1] != shared for t in tails) or len({t[-1] for t in tails}) != len(letters):
        raise ValueError(f"the letters {letters} do not differ in exactly their last token after {prefix!r}: {tails}")
    return {"prefix": prefix, "context_ids": base + shared, "letter_ids": [t[-1] for t in tails],
            "letter_tokens": [tok.decode([t[-1]], skip_special_tokens=False) for t in tails]}


def choice_letter_logprobs(model, prompts: Sequence[Sequence[int]], letter_ids: Sequence[int],
                           batch_size: int = 16) -> np.ndarray:
    """log p(letter token | prompt) at the position after each prompt: [N, len(letter_ids)].
    One forward pass per batch (left padding, similar lengths together), no generation."""
    out = np.empty((len(prompts), len(letter_ids)), np.float64)
    letter_ids = np.asarray(letter_ids)
    for chunk in length_groups([len(p) for p in prompts], batch_size, PREFILL_TOKEN_BUDGET):
        lengths = np.array([len(prompts[i]) for i in chunk])
        width = int(lengths.max())
        pads = width - lengths
        tokens = np.zeros((len(chunk), width), np.int64)
        for row, i in enumerate(chunk):
            tokens[row, pads[row]:] = prompts[i]
        positions = np.maximum(np.arange(width)[None, :] - pads[:, None], 0)
        key_valid = np.arange(width)[None, :] >= pads[:, None]
        logits = model.forward(tokens, positions, key_valid, last_only=True).astype(np.float64)
        top = logits.max(axis=-1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
        out[chunk] = logits[:, letter_ids] - log_norm[:, None]
    return out


# ---- generation backends -------------------------------------------------------------------

PREFILL_TOKEN_BUDGET = 8192
"""Padded prompt tokens per batch at most (rows x longest prompt): similar lengths share a batch."""


def length_groups(lengths: Sequence[int], max_rows: int, token_budget: int) -> list[list[int]]:
    """Indices grouped shortest first: at most max_rows per group, and rows x longest length
    within token_budget (a prompt longer than the budget gets a group of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_rows or (len(current) + 1) * lengths[i] > token_budget):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


class NumpyRunner:
    """tunebox's numpy decoder: batched greedy generation with a KV cache, and plain forward passes."""
    backend = "numpy"

    def __init__(self, model, batch_size: int):
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, mspec: ModelSpec, ckpt: Path, batch_size: int) -> "NumpyRunner":
        from tunebox.evaluation.decode import NumpyLlama

        return cls(NumpyLlama.from_checkpoint(ckpt, mspec), batch_size)

    def generate(self, prompts: list[list[int]], limits: Sequence[int], stop_ids: list[int], pad_id: int,
                 desc: str = "generate", min_new_tokens: int = 0) -> list[list[int]]:
        """greedy_generate over groups of similar length, each within PREFILL_TOKEN_BUDGET padded
        tokens, so one long prompt (a SQuAD passage) does not pad a whole batch to its length."""
        from tunebox.evaluation.decode import greedy_generate

        limits = list(limits)
        results: list[list[int]] = [[] for _ in prompts]
        started, produced = time.perf_counter(), 0
        with tqdm(total=len(prompts), unit="prompt", desc=desc) as bar:
            for group in length_groups([len(p) for p in prompts], self.batch_size, PREFILL_TOKEN_BUDGET):
                outputs = greedy_generate(self.model, [prompts[i] for i in group], [limits[i] for i in group],
                                          stop_ids, pad_id, batch_size=len(group), progress=False,
                                          min_new_tokens=min_new_tokens)
                for i, o in zip(group, outputs):
                    results[i] = o
                    produced += len(o)
                bar.update(len(group))
                bar.set_postfix(tok_per_s=f"{produced / max(time.perf_counter() - started, 1e-9):.1f}")
        return results

    def choice_logprobs(self, prompts: list[list[int]], letter_ids: Sequence[int]) -> Optional[np.ndarray]:
        return choice_letter_logprobs(self.model, prompts, letter_ids, self.batch_size)


class MindFormersRunner:
    """MindFormers' generate() with its incremental (KV cache) inference: the Ascend path."""
    backend = "mindformers"

    def __init__(self, mspec: ModelSpec, ckpt: Path, spec: RunSpec, seq_length: int):
        from mindformers.models.llama import LlamaConfig, LlamaForCausalLM

        from tunebox.model import mf
        from tunebox.model.registry import llama_config_kwargs

        mf.setup_device(spec.train.device, "graph", output_dir=spec.run_dir)
        kwargs = llama_config_kwargs(mspec, seq_length=seq_length, batch_size=spec.eval.batch_size,
                                     dtype=spec.train.dtype, use_past=True)
        self.net = LlamaForCausalLM(LlamaConfig(**kwargs))
        mf.load_weights(self.net, ckpt)
        self.net.set_train(False)
        self.batch_size = spec.eval.batch_size

    def generate(self, prompts, limits, stop_ids, pad_id, desc: str = "generate", min_new_tokens: int = 0):
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            chunk, chunk_limits = prompts[lo:lo + self.batch_size], list(limits[lo:lo + self.batch_size])
            # greedy: a shorter limit gives a prefix of the longer one, so cut each row afterwards
            res = self.net.generate(chunk, max_new_tokens=max(chunk_limits), do_sample=False,
                                    eos_token_id=stop_ids, pad_token_id=pad_id,
                                    min_new_tokens=min_new_tokens or None)
            for p, r, limit in zip(chunk, res, chunk_limits):
                new = list(np.asarray(r)[len(p):])
                cut = next((i for i, t in enumerate(new) if t in stop_ids), len(new))
                out.append([int(t) for t in new[:min(cut, limit)]])
        return out

    def choice_logprobs(self, prompts, letter_ids) -> Optional[np.ndarray]:
        return None   # only the generated-letter method on this backend


def pick_backend(spec: RunSpec) -> str:
    if spec.eval.backend != "auto":
        return spec.eval.backend
    return "numpy" if spec.train.device == "CPU" else "mindformers"


# ---- evaluating one model ------------------------------------------------------------------

def _previous(path: Path, expect: dict) -> Optional[dict]:
    if not path.exists():
        return None
    prev = json.loads(path.read_text())
    return prev if all(prev.get(k) == v for k, v in expect.items()) else None


def run_heldout(runner, task: HeldoutTask, tok: TextTokenizer, mdir: Path, meta: dict) -> dict:
    t0, cpu0 = time.time(), time.process_time()
    outputs = runner.generate(task.prompts, task.limits, tok.stop_ids, tok.pad_id, desc=f"{mdir.name}: held-out")
    logprobs = None
    if task.choice_plan is not None:
        context = task.choice_plan["context_ids"]
        logprobs = runner.choice_logprobs([p + context for p in task.prompts], task.choice_plan["letter_ids"])
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    scored, lines = [], []
    for i, (r, ids) in enumerate(zip(task.rows, outputs)):
        text = tok.decode(ids)
        verdict = score_row(task.fmt, text, r)
        extra = {}
        if logprobs is not None:
            letter = scoring.CHOICE_LETTERS[int(np.argmax(logprobs[i]))]
            verdict["logprob"] = letter == r["reference"]
            extra = {"logprob_letter": letter,
                     "letter_logprobs": {L: round(float(v), 4) for L, v in zip(scoring.CHOICE_LETTERS, logprobs[i])}}
        scored.append(verdict)
        lines.append(json.dumps({"line": r["line"], "prompt": r["prompt"], "answer": text, "reference": r["reference"],
                                 **verdict, **extra, "new_tokens": len(ids), "max_new_tokens": task.limits[i]},
                                ensure_ascii=False))
    atomic_write_text(mdir / "predictions.jsonl", "\n".join(lines) + "\n")
    summary = {**meta, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
               "new_tokens": sum(len(o) for o in outputs), **summarize(scored)}
    if task.choice_plan is not None and logprobs is None:
        summary["accuracy_logprob"] = None
        summary["logprob_note"] = f"not available on the {runner.backend} backend"
    atomic_write_json(mdir / "scores.json", summary)
    return summary


def run_squad(runner, squad: SquadTask, tok: TextTokenizer, mdir: Path, meta: dict) -> dict:
    t0, cpu0 = time.time(), time.process_time()
    outputs = runner.generate(squad.prompts, [squad.max_new_tokens] * len(squad.prompts), tok.stop_ids, tok.pad_id,
                              desc=f"{mdir.name}: SQuAD", min_new_tokens=squad.min_new_tokens)
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    answers, lines = [], []
    for r, ids in zip(squad.rows, outputs):
        generated = tok.decode(ids)
        answer = scoring.squad_answer_from_generation(generated)
        one = scoring.squad_scores([answer], [r["answers"]])
        answers.append(answer)
        lines.append(json.dumps({"line": r["line"], "id": r["id"], "question": r["question"], "generated": generated,
                                 "answer": answer, "gold": r["answers"], "f1": round(one["f1"], 4),
                                 "em": one["em"] == 100.0}, ensure_ascii=False))
    atomic_write_text(mdir / "squad_predictions.jsonl", "\n".join(lines) + "\n")
    totals = scoring.squad_scores(answers, [r["answers"] for r in squad.rows])
    summary = {**meta, "n": len(squad.rows), "f1": totals["f1"], "em": totals["em"], "seconds": round(seconds, 2),
               "cpu_seconds": round(cpu_seconds, 2), "new_tokens": sum(len(o) for o in outputs)}
    atomic_write_json(mdir / "squad.json", summary)
    return summary


def evaluate_model(name: str, mdir: Path, identity: dict, load: Callable[[], object], task: HeldoutTask,
                   squad: Optional[SquadTask], tok: TextTokenizer, backend: str, info: dict) -> dict:
    """scores.json (+ squad.json) for one model, reusing what matches `identity` and the settings;
    `load` builds the runner only if something has to be computed."""
    runner = None

    def get_runner():
        nonlocal runner
        if runner is None:
            runner = load()
        return runner

    expect = {**identity, "backend": backend, "n": len(task.rows), "settings_sha": task.settings_sha}
    scores = _previous(mdir / "scores.json", expect)
    if scores is None:
        log.info("%s: %d held-out rows, up to %d new tokens each, with the %s backend", name, len(task.rows),
                 max(task.limits), backend)
        scores = run_heldout(get_runner(), task, tok, mdir, {"model": name, **info, **expect})
        log.info("%s: accuracy %.3f strict, %.3f tolerant%s (%.0f s)", name, scores["accuracy_strict"],
                 scores["accuracy_tolerant"],
                 f", {scores['accuracy_logprob']:.3f} by letter log-prob" if scores.get("accuracy_logprob") is not None
                 else "", scores["seconds"])
    else:
        log.info("%s: held-out rows already evaluated (%s)", name, mdir / "scores.json")
    result = dict(scores)
    if squad is not None:
        expect_squad = {**identity, "backend": backend, "source_sha256": squad.source_sha256, **squad.settings}
        squad_res = _previous(mdir / "squad.json", expect_squad)
        if squad_res is None:
            log.info("%s: %d SQuAD questions", name, len(squad.rows))
            squad_res = run_squad(get_runner(), squad, tok, mdir, {"model": name, "source": str(squad.source),
                                                                   **expect_squad})
            log.info("%s: SQuAD F1 %.2f, EM %.2f (%.0f s)", name, squad_res["f1"], squad_res["em"], squad_res["seconds"])
        else:
            log.info("%s: SQuAD already evaluated (%s)", name, mdir / "squad.json")
        result["squad"] = {k: squad_res.get(k) for k in ("n", "f1", "em", "seconds", "cpu_seconds", "new_tokens")}
    return result


# ---- contest figures and the choice ------------------------------------------------------------

def contest_figures(spec: RunSpec) -> dict:
    """The run's parameter figures (contest.param_figures), its score formula and retention threshold."""
    return {"stage": spec.stage, **param_figures(spec.model.name, spec.lora.rank, spec.lora.target_modules),
            "score_formula": f"stage {spec.stage}: {SCORE_FORMULAS[spec.stage]}, accuracy = strict",
            "retention_threshold": RETENTION_THRESHOLD}


def annotate(entry: dict, base: Optional[dict], figures: dict) -> dict:
    """Add retention, ratio and stage score to one tuned model's summary."""
    entry["retention"] = retention_verdict(entry.get("squad"), (base or {}).get("squad"), figures["retention_threshold"])
    entry["ratio"] = figures["ratio_for_score"]
    entry["score"] = stage_score(figures["stage"], entry["accuracy_strict"], figures["ratio_for_score"])
    entry["score_tolerant"] = stage_score(figures["stage"], entry["accuracy_tolerant"], figures["ratio_for_score"])
    entry["score_exact_ratio"] = stage_score(figures["stage"], entry["accuracy_strict"], figures["ratio"])
    return entry


# ---- the job -------------------------------------------------------------------------------

def models_to_evaluate(spec: RunSpec) -> list[dict]:
    from tunebox.model.weights import ensure_model

    models = []
    if spec.eval.base:
        base = spec.resolve(spec.model.checkpoint) or ensure_model(spec.model.name) / "model.ckpt"
        models.append({"name": "base", "step": 0, "checkpoint": base, "train_loss": None})
    index_file = spec.run_dir / layout.MERGE_INDEX
    if not index_file.exists():
        raise InputError(f"{index_file} not found: run merge first")
    merged = json.loads(index_file.read_text())["checkpoints"]
    if spec.eval.checkpoints == "last":
        merged = merged[-1:]
    for e in merged:
        models.append({"name": f"step-{e['step']:06d}", "step": e["step"], "train_loss": e.get("train_loss"),
                       "checkpoint": index_file.parent / e["file"], "sha256": e.get("sha256"),
                       "lora_file": e.get("lora_file"), "merge_scale": e.get("scale", 1.0)})
    return models


def parse_scales(text) -> list[float]:
    """'0.25,0.5,1' or [0.25, 0.5, 1] -> [0.25, 0.5, 1.0]; empty/None -> []."""
    if not text:
        return []
    scales = []
    for part in (text if isinstance(text, list) else str(text).split(",")):
        part = str(part).strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"LoRA scale {part!r} is not a number; give scales like 0.25,0.5,1.0") from None
        if not np.isfinite(value):
            raise InputError(f"LoRA scale {part!r} must be finite")
        scales.append(value)
    return scales


def merged_in_memory(spec: RunSpec, base_arrays: dict, lora_arrays: dict, scale: float):
    """The NumpyLlama of W + scale * (alpha / r) * B A, without writing a checkpoint."""
    from tunebox.evaluation.decode import NumpyLlama
    from tunebox.model.lora import merge_lora_into_base

    merged = merge_lora_into_base(base_arrays, lora_arrays, spec.lora.alpha, spec.lora.rank, scale)
    return NumpyLlama(merged, get_model_spec(spec.model.name), source=f"in-memory merge at scale {scale:g}")


def scale_dial(spec: RunSpec, target: dict, scales: list[float], task: HeldoutTask, squad: Optional[SquadTask],
               tok: TextTokenizer, backend: str, base: Optional[dict], contest: dict, out: Path) -> dict:
    """Evaluate `target` (a merged checkpoint's models_to_evaluate entry) at each LoRA scale,
    merging the trained LoRA into the base weights in memory."""
    from tunebox.model import mf

    if backend != "numpy":
        raise InputError(f"the LoRA scale dial merges in memory for the numpy backend; eval.backend is {backend}")
    merge_index = json.loads((spec.run_dir / layout.MERGE_INDEX).read_text())
    base_ckpt = Path(merge_index["base_checkpoint"])
    if not target.get("lora_file"):
        raise InputError(f"merge/index.json names no LoRA file for {target['name']}: run merge again")
    lora_file = spec.job_dir("train") / target["lora_file"]
    lora_sha, base_sha = sha256_file(lora_file), sha256_file(base_ckpt)
    arrays: dict = {}

    def load(scale):
        def build():
            if not arrays:
                arrays["base"] = mf.load_arrays(base_ckpt)
                arrays["lora"] = mf.load_arrays(lora_file)
            return NumpyRunner(merged_in_memory(spec, arrays["base"], arrays["lora"], scale), spec.eval.batch_size)
        return build

    points = []
    for scale in scales:
        name = f"scale-{scale:g}"
        identity = {"checkpoint_sha256": f"lora {lora_sha} x {scale!r} + base {base_sha}"}
        info = {"step": target["step"], "train_loss": target["train_loss"], "scale": scale, "of": target["name"],
                "lora_file": str(lora_file), "checkpoint": str(base_ckpt)}
        entry = evaluate_model(name, out / "scale-dial" / name, identity, load(scale), task, squad, tok, backend, info)
        points.append(annotate(entry, base, contest))
    return {"checkpoint": target["name"], "step": target["step"], "lora_file": str(lora_file), "points": points}


def evaluate(spec: RunSpec, scales: Optional[list[float]] = None) -> Path:
    """The whole job; `scales` (or eval.scales) adds the LoRA scale dial."""
    scales = parse_scales(spec.eval.scales) if scales is None else scales
    tok = load_tokenizer(spec)
    task = load_heldout(spec, tok)
    squad = load_squad(spec, tok)
    mspec = get_model_spec(spec.model.name)
    backend = pick_backend(spec)
    contest = contest_figures(spec)
    out = spec.job_dir("evaluate")
    atomic_write_json(out / "limits.json", task.limits_info)
    log.info("max new tokens per family: %s", ", ".join(f"{f} {v['max_new_tokens']}"
                                                       for f, v in task.limits_info["families"].items()))
    longest_prompt = max(len(p) for p in task.prompts + (squad.prompts if squad else []))
    seq_for_mf = longest_prompt + max(task.limits + [SQUAD_MAX_NEW_TOKENS])

    def loader(ckpt: Path):
        if backend == "numpy":
            return lambda: NumpyRunner.from_checkpoint(mspec, ckpt, spec.eval.batch_size)
        return lambda: MindFormersRunner(mspec, ckpt, spec, seq_for_mf)

    models = models_to_evaluate(spec)
    results = []
    for m in models:
        sha = m.get("sha256") or sha256_file(m["checkpoint"])
        info = {"step": m["step"], "train_loss": m["train_loss"], "checkpoint": str(m["checkpoint"])}
        results.append(evaluate_model(m["name"], out / m["name"], {"checkpoint_sha256": sha}, loader(m["checkpoint"]),
                                      task, squad, tok, backend, info))
    base = next((r for r in results if r["model"] == "base"), None)
    tuned = [annotate(r, base, contest) for r in results if r["model"] != "base"]
    choice = choose_checkpoint(tuned)
    dial = None
    if scales:
        target_name = choice["model"] or (tuned[-1]["model"] if tuned else None)
        if target_name is None:
            raise InputError("the scale dial needs a merged checkpoint: run merge first")
        target = next(m for m in models if m["name"] == target_name)
        log.info("scale dial on %s at scales %s", target_name, ", ".join(f"{s:g}" for s in scales))
        dial = scale_dial(spec, target, scales, task, squad, tok, backend, base, contest, out)
    plots = write_plots(spec, out, base, tuned, choice, dial)
    report = write_report(spec, out, base, tuned, choice, contest, task, squad, dial, plots)
    inputs = {"heldout": spec.run_dir / layout.PREP_HELDOUT, "train_samples": spec.run_dir / layout.PREP_TRAIN_RECORDS}
    if squad:
        inputs["squad"] = squad.source
    write_job_manifest(out, "evaluate", spec, inputs=inputs, outputs={"report": spec.run_dir / layout.EVALUATE_REPORT},
                       extra={"backend": backend, "rows": len(task.rows), "squad_rows": len(squad.rows) if squad else 0,
                              "chosen": choice["model"], "scales": scales})
    (log.warning if choice["valid"] is False else log.info)("chosen: %s (%s)", choice["model"], choice["reason"])
    log.info("report: %s", out / "report.md")
    return report


# ---- report ----------------------------------------------------------------------------------

def _f(value, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def na(retention: dict) -> str:
    """How a missing retention ratio reads: n/a when SQuAD was measured but the base scored 0."""
    return "n/a" if retention.get("measured") else "-"


def write_plots(spec: RunSpec, out: Path, base: Optional[dict], tuned: list[dict], choice: dict,
                dial: Optional[dict]) -> list[str]:
    """The report's charts; returns their paths relative to `out`."""
    from tunebox.evaluation import plots

    made = []
    pdir = out / "plots"
    models = ([base] if base else []) + tuned
    if models:
        steps = [m["step"] for m in models]
        series = [plots.Series("accuracy (strict)", steps, [m["accuracy_strict"] for m in models]),
                  plots.Series("accuracy (tolerant)", steps, [m["accuracy_tolerant"] for m in models], dashed=True)]
        if spec.data.format == "math":
            series.append(plots.Series("within 1% (graded)", steps, [m.get("accuracy_within_1pct") for m in models]))
        if any(m.get("accuracy_logprob") is not None for m in models):
            series.append(plots.Series("accuracy (letter log-prob)", steps, [m.get("accuracy_logprob") for m in models]))
        hlines = []
        if any(m.get("retention", {}).get("measured") for m in tuned):
            ret = [1.0 if m is base else m["retention"]["f1"] for m in models]
            series.append(plots.Series("SQuAD F1 retention", steps, ret))
            series.append(plots.Series("SQuAD EM retention", steps,
                                       [1.0 if m is base else m["retention"]["em"] for m in models], dashed=True))
            hlines.append(plots.HLine(RETENTION_THRESHOLD, f"retention threshold {RETENTION_THRESHOLD:.2f}"))
        plots.line_chart(pdir / "accuracy_retention.png", series, hlines=hlines,
                         title=f"{spec.run_id}: accuracy and SQuAD retention per checkpoint"
                               + (f" (chosen: {choice['model']})" if choice.get("model") else ""),
                         xlabel="training step (0 = base model)", ylabel="fraction", x_ticks=steps)
        made.append("plots/accuracy_retention.png")
        families = sorted({f for m in models for f in m["per_family"]})
        if families:
            counts = {f: next(m["per_family"][f]["n"] for m in models if f in m["per_family"]) for f in families}
            plots.bar_chart(pdir / "per_family.png", [f"{f} (n={counts[f]})" for f in families],
                            {m["model"]: [m["per_family"].get(f, {}).get("strict") for f in families] for m in models},
                            title="strict accuracy per family", xlabel="strict accuracy", x_range=(0.0, 1.0))
            made.append("plots/per_family.png")
            if spec.data.format == "math":
                plots.bar_chart(pdir / "per_family_graded.png", [f"{f} (n={counts[f]})" for f in families],
                                {m["model"]: [m["per_family"].get(f, {}).get("within_1pct") for f in families]
                                 for m in models},
                                title="share within 1% of the reference, per family (graded)",
                                xlabel="share within 1%", x_range=(0.0, 1.0))
                made.append("plots/per_family_graded.png")
    loss_file = spec.run_dir / layout.TRAIN_LOSS
    if loss_file.exists():
        rows = [json.loads(l) for l in loss_file.read_text().splitlines() if l.strip()]
        if rows:
            steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
            window = max(1, len(rows) // 10)
            smooth = [float(np.mean(losses[max(0, i - window + 1):i + 1])) for i in range(len(losses))]
            ck = {m["step"]: m for m in tuned}
            series = [plots.Series("loss per step", steps, losses, markers=False, color="#BBBBBB")]
            if window > 1:
                series.append(plots.Series(f"mean of last {window} steps", steps, smooth, markers=False))
            series.append(plots.Series("checkpoints", steps, [s if st in ck else None for st, s in zip(steps, smooth)],
                                       lines=False))
            plots.line_chart(pdir / "loss.png", series, title=f"{spec.run_id}: training loss",
                             xlabel="optimizer step", ylabel="loss (answer tokens)")
            made.append("plots/loss.png")
    if dial and dial["points"]:
        pts = sorted(dial["points"], key=lambda p: p["scale"])
        xs = [p["scale"] for p in pts]
        series = [plots.Series("accuracy (strict)", xs, [p["accuracy_strict"] for p in pts]),
                  plots.Series("accuracy (tolerant)", xs, [p["accuracy_tolerant"] for p in pts], dashed=True)]
        hlines = []
        if any(p["retention"]["measured"] for p in pts):
            series += [plots.Series("SQuAD F1 retention", xs, [p["retention"]["f1"] for p in pts]),
                       plots.Series("SQuAD EM retention", xs, [p["retention"]["em"] for p in pts], dashed=True)]
            hlines.append(plots.HLine(RETENTION_THRESHOLD, f"retention threshold {RETENTION_THRESHOLD:.2f}"))
        plots.line_chart(pdir / "scale_dial.png", series, hlines=hlines, x_ticks=xs,
                         title=f"LoRA scale dial on {dial['checkpoint']}: W + s*(alpha/r)*BA",
                         xlabel="LoRA scale s", ylabel="fraction")
        made.append("plots/scale_dial.png")
    return made


def write_report(spec: RunSpec, out: Path, base: Optional[dict], tuned: list[dict], choice: dict, contest: dict,
                 task: HeldoutTask, squad: Optional[SquadTask], dial: Optional[dict], plots: list[str]) -> Path:
    best_acc = max(tuned, key=lambda r: (r["accuracy_strict"], r["step"])) if tuned else None
    results = ([base] if base else []) + tuned
    mcq = task.fmt == "mcq"
    report = {"run_id": spec.run_id, "model": spec.model.name, "format": spec.data.format, "stage": spec.stage,
              "heldout_rows": len(task.rows), "base": base, "checkpoints": tuned,
              "best_by_accuracy": best_acc["model"] if best_acc else None,
              "best_checkpoint": {k: choice[k] for k in ("model", "step", "rule", "valid", "reason", "highest_score")},
              "verdicts": choice["verdicts"], "contest": contest,
              "squad": ({"source": str(squad.source), "sha256": squad.source_sha256, "rows": len(squad.rows),
                         "max_new_tokens": squad.max_new_tokens, "prompt": "scoring.squad_prompt, no chat template"}
                        if squad else None),
              "max_new_tokens": {"cap": task.limits_info["cap"], "margin": task.limits_info["margin"],
                                 "by_family": {f: v["max_new_tokens"] for f, v in task.limits_info["families"].items()}},
              "mcq_logprob": ({k: task.choice_plan[k] for k in ("prefix", "letter_ids", "letter_tokens")}
                              if task.choice_plan else None),
              "scale_dial": dial, "plots": plots}
    atomic_write_json(spec.run_dir / layout.EVALUATE_REPORT, report)

    ratio_line = (f"Ratio {contest['ratio']:.8f} exact ({contest['trainable_params']:,} / {contest['total_params']:,})"
                  + (f", {contest['contest_ratio']:.9f} as the contest computed it (/ {contest['contest_total_params']:,})"
                     if contest["contest_ratio"] is not None else "; the contest has no nominal total for this model")
                  + f". Score = {contest['score_formula']} (ratio {contest['ratio_for_score']:.8g}).")
    squad_line = (f"SQuAD: first {len(squad.rows)} questions of `{squad.source.name}`, contest prompt, greedy, "
                  f"<= {squad.max_new_tokens} new tokens; retention = tuned / base, valid when F1 and EM both >= "
                  f"{RETENTION_THRESHOLD:.2f}." if squad else "SQuAD retention not measured (eval.squad_file unset).")
    lines = [f"# Evaluation report: {spec.run_id}", "",
             f"Model `{spec.model.name}`, stage {spec.stage}, {len(task.rows)} held-out rows ("
             + ", ".join(f"{sum(1 for r in task.rows if r.get('source', 'split') == src)} "
                         + ("of the generated rows" if src == "split" and spec.data.generate
                            else f"of `{spec.data.train_file}`" if src == "split" else f"of `{spec.data.heldout_file}`")
                         for src in sorted({r.get("source", "split") for r in task.rows}))
             + "), "
             f"greedy, new tokens per family = longest training answer + {task.limits_info['margin']} "
             f"(cap {task.limits_info['cap']}). " + (
                 f"Accuracy = the letter in the generated text (the contest's way; strict = tolerant); log-prob = the "
                 f"letter whose token is most likely right after '{MCQ_ANSWER_PREFIX}' (one forward pass, reported "
                 f"only). " if mcq else "Strict = the contest rule; tolerant = docs/CONTEST_RULES.md; within 1% and digits (the mean "
                                   "count of the reference's leading significant digits right) = the graded measure, "
                                   "scoring.closeness. ")
             + squad_line, ratio_line, "",
             "| model | step | loss | acc strict | acc tolerant |" + (" acc log-prob |" if mcq else " within 1% | digits |")
             + " SQuAD F1 | SQuAD EM | retention F1 / EM | score | valid |",
             "|---|---:|---:|---:|---:|" + ("---:|" if mcq else "---:|---:|") + "---:|---:|---:|---:|:---:|"]
    for r in results:
        sq = r.get("squad") or {}
        ret = r.get("retention") or {}
        valid = {True: "pass", False: "**fail**", None: "?"}[ret.get("passes")] if r is not base else ""
        mark = " ✅" if r["model"] == choice["model"] else ""
        lines.append(f"| {r['model']}{mark} | {r['step']} | {_f(r.get('train_loss'), '.4f')} | {r['accuracy_strict']:.3f} | "
                     f"{r['accuracy_tolerant']:.3f} |" + (f" {_f(r.get('accuracy_logprob'))} |" if mcq else
                                                          f" {_f(r.get('accuracy_within_1pct'))} |"
                                                          f" {_f(r.get('leading_digits_mean'), '.2f')} |")
                     + f" {_f(sq.get('f1'), '.2f')} | {_f(sq.get('em'), '.2f')} | "
                     + (f"{_f(ret.get('f1'), none=na(ret))} / {_f(ret.get('em'), none=na(ret))}" if r is not base
                        else "1 / 1" if sq else "-")
                     + f" | {_f(r.get('score'), '.4f')} | {valid} |")
    lines += ["", f"**Chosen: {choice['model'] or 'none'}**: {choice['reason']}."]
    for name, why in choice["verdicts"].items():
        lines.append(f"- {name}: {why}")
    if dial:
        lines += ["", f"## LoRA scale dial on {dial['checkpoint']} (W + s·(alpha/r)·BA)", "",
                  "| s | acc strict | acc tolerant | SQuAD F1 | SQuAD EM | retention F1 / EM | score | valid |",
                  "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for p in sorted(dial["points"], key=lambda p: p["scale"]):
            sq, ret = p.get("squad") or {}, p["retention"]
            lines.append(f"| {p['scale']:g} | {p['accuracy_strict']:.3f} | {p['accuracy_tolerant']:.3f} | "
                         f"{_f(sq.get('f1'), '.2f')} | {_f(sq.get('em'), '.2f')} | "
                         f"{_f(ret['f1'], none=na(ret))} / {_f(ret['em'], none=na(ret))} | "
                         f"{p['score']:.4f} | {({True: 'pass', False: 'fail', None: '?'})[ret['passes']]} |")
    sources = sorted({src for r in results for src in (r.get("per_source") or {})})
    if sources:
        lines += ["", "## Per held-out source (strict / within 1% / mean leading digits right)", "",
                  "split: rows held out of data.train_file; file: data.heldout_file rows. Not tuned on either.", "",
                  "| model | " + " | ".join(f"{src} (n={next(r['per_source'][src]['n'] for r in results if src in (r.get('per_source') or {}))})"
                                          for src in sources) + " |",
                  "|---|" + "---:|" * len(sources)]
        for r in results:
            cells = []
            for src in sources:
                ps = (r.get("per_source") or {}).get(src)
                cells.append(f"{ps['accuracy_strict']:.3f} / {ps['accuracy_within_1pct']:.3f} / "
                             f"{_f(ps['leading_digits_mean'], '.2f')}" if ps else "-")
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    families = sorted({f for r in results for f in r["per_family"]})
    if not mcq:
        lines += ["", "## Per family (graded: share within 1% of the reference)", "",
                  "| family | n | " + " | ".join(r["model"] for r in results) + " |",
                  "|---|---:|" + "---:|" * len(results)]
        for f in families:
            n = next(r["per_family"][f]["n"] for r in results if f in r["per_family"])
            cells = [_f(r["per_family"][f].get("within_1pct"), ".2f") if f in r["per_family"] else "-" for r in results]
            lines.append(f"| {f} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Per family (strict accuracy)", "",
              "| family | n | max new | " + " | ".join(r["model"] for r in results) + " |",
              "|---|---:|---:|" + "---:|" * len(results)]
    for f in families:
        n = next(r["per_family"][f]["n"] for r in results if f in r["per_family"])
        cells = [f"{r['per_family'][f]['strict']:.2f}" if f in r["per_family"] else "-" for r in results]
        cap = limit_for(task.limits_info, f if task.fmt == "math" else ALL_FAMILIES)
        lines.append(f"| {f} | {n} | {cap} | " + " | ".join(cells) + " |")
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{Path(p).stem}]({p})" for p in plots)]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return spec.run_dir / layout.EVALUATE_REPORT


def main(spec: RunSpec, args) -> None:
    evaluate(spec, parse_scales(args.scales) if args.scales else None)


def _args(parser) -> None:
    parser.add_argument("--scales", metavar="S1,S2,...",
                        help="LoRA scale dial: also evaluate the chosen checkpoint (or the last) at "
                             "W + s*(alpha/r)*BA for each s, merged in memory (overrides eval.scales)")


if __name__ == "__main__":
    raise SystemExit(run_job("evaluate", __doc__, main, _args))
