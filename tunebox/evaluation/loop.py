"""The evaluation loop, once for evaluate and verify: the held-out and SQuAD sets as token prompts with
per-family new-token limits, one model's answers generated and scored (the contest's strict rule, the
tolerant one and the graded closeness, per family and per source), and the files that record them
(predictions.jsonl, scores.json, squad_predictions.jsonl, squad.json), reused when nothing changed.
evaluate's first two phases are load_questions and, over models_to_evaluate, evaluate_models."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.config import DataSection, EvalSection
from tunebox.contest import scoring
from tunebox.data.prompts import prompt_parts, spec_prompt
from tunebox.data.samples import IGNORE
from tunebox.data.tokenizer import TextTokenizer
from tunebox.io import InputError, atomic_write_json, atomic_write_text, iter_jsonl, read_jsonl, sha256_file

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


def score_row(fmt: str, prediction: str, row: dict) -> dict:
    """Verdicts for one answer (scoring.answer_verdict) and its family."""
    return {
        **scoring.answer_verdict(fmt, prediction, row["reference"]),
        "family": scoring.row_family(fmt, row["prompt"], row.get("meta")),
        "source": row.get("source", "split"),
    }


def _rate(rows: list[dict], key: str) -> float:
    return sum(bool(r.get(key)) for r in rows) / len(rows) if rows else 0.0


def _mean_digits(rows: list[dict]) -> Optional[float]:
    digits = [r["leading_digits"] for r in rows if r.get("leading_digits") is not None]
    return sum(digits) / len(digits) if digits else None


def _by_family(rows: list[dict], with_logprob: bool) -> dict:
    fam: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        fam[r["family"]].append(r)
    return {
        f: {
            "n": len(rs),
            "strict": _rate(rs, "strict"),
            "tolerant": _rate(rs, "tolerant"),
            "within_1pct": _rate(rs, "within_1pct"),
            "leading_digits": _mean_digits(rs),
            **({"logprob": _rate(rs, "logprob")} if with_logprob else {}),
        }
        for f, rs in sorted(fam.items())
    }


def summarize(scored: list[dict]) -> dict:
    """Accuracy overall and per family: strict and tolerant (the contest's rule and ours), and the graded
    measure (scoring.closeness: the share within 1% of the reference, the mean count of leading significant
    digits right); per held-out source too when there are two (the split and data.heldout_file); with MCQ
    log-prob verdicts (`logprob` per row) also accuracy_logprob."""
    n = len(scored)
    with_logprob = n > 0 and all("logprob" in r for r in scored)
    out = {
        "n": n,
        "accuracy_strict": _rate(scored, "strict"),
        "accuracy_tolerant": _rate(scored, "tolerant"),
        "accuracy_within_1pct": _rate(scored, "within_1pct"),
        "leading_digits_mean": _mean_digits(scored),
        "per_family": _by_family(scored, with_logprob),
    }
    sources = sorted({r.get("source", "split") for r in scored})
    if len(sources) > 1:
        out["per_source"] = {}
        for src in sources:
            rows = [r for r in scored if r.get("source", "split") == src]
            out["per_source"][src] = {
                "n": len(rows),
                "accuracy_strict": _rate(rows, "strict"),
                "accuracy_tolerant": _rate(rows, "tolerant"),
                "accuracy_within_1pct": _rate(rows, "within_1pct"),
                "leading_digits_mean": _mean_digits(rows),
                "per_family": _by_family(rows, with_logprob),
            }
    if with_logprob:
        out["accuracy_logprob"] = _rate(scored, "logprob")
    return out


def answer_token_limits(run_dir: Path, data: DataSection, cap: int, tok: TextTokenizer) -> dict:
    """Max new tokens per problem family: the longest answer of that family in the training
    samples prep wrote (held-out rows are not among them), plus ANSWER_MARGIN_TOKENS, capped at
    `cap` (eval.max_new_tokens). Read from prep's stats.json (answer_tokens_by_family), or counted in
    train.mindrecord when an older prep did not record it. MCQ answers share one limit (every
    answer is 'The right option is X.')."""
    suffix_tokens = len(tok.encode(tok.answer_suffix)) if tok.answer_suffix else 0
    stats_file = run_dir / layout.PREP_STATS
    by_family = json.loads(stats_file.read_text()).get("answer_tokens_by_family") if stats_file.exists() else None
    if by_family:
        # prep counts the closing suffix (<|im_end|>) with the answer; generation stops at it and never counts it
        longest = {f: max(int(v["max"]) - suffix_tokens, 0) for f, v in by_family.items()}
        rows = {f: int(v["rows"]) for f, v in by_family.items()}
        source = str(stats_file)
        if data.format != "math":
            longest, rows = {ALL_FAMILIES: max(longest.values())}, {ALL_FAMILIES: sum(rows.values())}
    else:
        longest, rows = longest_answers_in_samples(run_dir, data, tok, suffix_tokens)
        source = str(run_dir / layout.PREP_TRAIN_RECORDS)
    families = {
        f: {
            "train_rows": rows[f],
            "longest_answer_tokens": longest[f],
            "max_new_tokens": min(cap, longest[f] + ANSWER_MARGIN_TOKENS),
        }
        for f in sorted(longest)
    }
    return {"source": source, "margin": ANSWER_MARGIN_TOKENS, "cap": cap, "families": families, "other_families": cap}


def longest_answers_in_samples(
    run_dir: Path, data: DataSection, tok: TextTokenizer, suffix_tokens: int
) -> tuple[dict, dict]:
    """({family: longest answer tokens}, {family: rows}) counted in prep's train.mindrecord, one
    sample at a time: the answer is where the labels are, the family comes from the decoded prompt."""
    import mindspore.dataset as ds

    record = run_dir / layout.PREP_TRAIN_RECORDS
    if not record.exists():
        raise InputError(f"{record} not found: run prep first")
    before, _, after = prompt_parts(tok, data.template, data.system_prompt)
    longest: dict[str, int] = defaultdict(int)
    rows: dict[str, int] = defaultdict(int)
    samples = ds.MindDataset(str(record), columns_list=["input_ids", "labels"], shuffle=False)
    for input_ids, label_ids in samples.create_tuple_iterator(output_numpy=True, num_epochs=1):
        answer_at = np.flatnonzero(label_ids != IGNORE)
        if answer_at.size == 0:
            continue
        answer_tokens = max(int(answer_at.size) - suffix_tokens, 0)
        if data.format == "math":
            prompt = tok.decode(input_ids[: answer_at[0]].tolist(), skip_special_tokens=False)
            if prompt.startswith(before) and prompt.endswith(after):
                prompt = prompt[len(before) : len(prompt) - len(after)]
            family = scoring.math_family(prompt)
        else:
            family = ALL_FAMILIES
        longest[family] = max(longest[family], answer_tokens)
        rows[family] += 1
    return dict(longest), dict(rows)


def limit_for(limits: dict, family: str) -> int:
    entry = limits["families"].get(family) or limits["families"].get(ALL_FAMILIES)
    return entry["max_new_tokens"] if entry else limits["other_families"]


@dataclass
class HeldoutTask:
    fmt: str
    rows: list[dict]
    prompts: list[list[int]]
    families: list[str]
    limits: list[int]
    limits_info: dict
    choice_plan: Optional[dict] = None  # MCQ: token ids of the letters (choice_token_plan)

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


def load_heldout(run_dir: Path, data: DataSection, eval_section: EvalSection, tok: TextTokenizer) -> HeldoutTask:
    """prep's held-out rows (the first eval.limit), prompted as in training, with new-token limits per family."""
    heldout_file = run_dir / layout.PREP_HELDOUT
    if not heldout_file.exists():
        raise InputError(f"{heldout_file} not found: run prep first")
    rows = read_jsonl(heldout_file)
    if eval_section.limit:
        rows = rows[: eval_section.limit]
    if not rows:
        raise InputError("no held-out rows to evaluate: data.heldout_rows must be > 0", heldout_file)
    plan = choice_token_plan(tok) if data.format == "mcq" else None
    return heldout_task(rows, data, tok, answer_token_limits(run_dir, data, eval_section.max_new_tokens, tok), plan)


def heldout_task(
    rows: list[dict], data: DataSection, tok: TextTokenizer, limits_info: dict, choice_plan: Optional[dict] = None
) -> HeldoutTask:
    """The held-out rows as token prompts in the training template, each with its family's new-token limit."""
    fmt = data.format
    prompts = [tok.encode(spec_prompt(tok, r["prompt"], data)) for r in rows]
    families = [scoring.row_family(fmt, r["prompt"], r.get("meta")) for r in rows]
    limits = [limit_for(limits_info, ALL_FAMILIES if fmt != "math" else f) for f in families]
    return HeldoutTask(fmt, rows, prompts, families, limits, limits_info, choice_plan)


def load_squad(
    path: Optional[Path], eval_section: EvalSection, tok: TextTokenizer, spec_file: Optional[str] = None
) -> Optional[SquadTask]:
    """The first eval.squad_rows questions of eval.squad_file (`path`, resolved), as the contest prompted
    them (the plain `squad_prompt` text, no chat template); None when SQuAD is switched off. A missing
    file is blamed on `spec_file`, the run spec that names it."""
    if path is None or eval_section.squad_rows <= 0:
        return None
    if not path.is_file():
        raise InputError(f"eval.squad_file not found: {path}", spec_file)
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
            raise InputError(
                "field 'answers' must be a non-empty list of strings (the gold answer texts)", path, row.line
            )
        rows.append(
            {
                "line": row.line,
                "id": value.get("id"),
                "context": value["context"],
                "question": value["question"],
                "answers": answers,
            }
        )
        if len(rows) >= eval_section.squad_rows:
            break
    if len(rows) < eval_section.squad_rows:
        log.warning(
            "%s has %d questions, eval.squad_rows asks for %d: using %d",
            path,
            len(rows),
            eval_section.squad_rows,
            len(rows),
        )
    prompts = [tok.encode(scoring.squad_prompt(r["context"], r["question"])) for r in rows]
    return SquadTask(
        path,
        sha256_file(path),
        rows,
        prompts,
        min_new_tokens=eval_section.squad_min_new_tokens,
        settings={
            "rows": len(rows),
            "max_new_tokens": SQUAD_MAX_NEW_TOKENS,
            "min_new_tokens": eval_section.squad_min_new_tokens,
        },
    )


def load_questions(
    run_dir: Path,
    data: DataSection,
    eval_section: EvalSection,
    tok: TextTokenizer,
    squad_file: Optional[Path],
    spec_file: Optional[str],
    out: Path,
) -> tuple[HeldoutTask, Optional[SquadTask]]:
    """What every model answers: the held-out rows (load_heldout) and the SQuAD questions (load_squad), with
    the new-token limits per family written to out/limits.json."""
    task = load_heldout(run_dir, data, eval_section, tok)
    squad = load_squad(squad_file, eval_section, tok, spec_file)
    atomic_write_json(out / "limits.json", task.limits_info)
    log.info(
        "max new tokens per family: %s",
        ", ".join(f"{f} {v['max_new_tokens']}" for f, v in task.limits_info["families"].items()),
    )
    return task, squad


def longest_sequence(task: HeldoutTask, squad: Optional[SquadTask]) -> int:
    """The longest prompt plus the most new tokens: MindFormers' static sequence length for these questions."""
    longest_prompt = max(len(p) for p in task.prompts + (squad.prompts if squad else []))
    return longest_prompt + max(task.limits + [SQUAD_MAX_NEW_TOKENS])


def choice_token_plan(
    tok: TextTokenizer, prefix: str = MCQ_ANSWER_PREFIX, letters: str = scoring.CHOICE_LETTERS
) -> dict:
    """Which tokens to compare. Training answers are encoded as one string ('The right option is
    C.'), so the context is encode(prefix) plus whatever the four ' X' continuations share (a
    space token, for a byte-level tokenizer), and each letter is the one token after that."""
    base = tok.encode(prefix)
    tails = []
    for letter in letters:
        full = tok.encode(f"{prefix} {letter}")
        if full[: len(base)] != base:
            raise ValueError(
                f"the tokenizer encodes {prefix!r} differently when followed by ' {letter}'; "
                f"the letter position is ambiguous"
            )
        tails.append(full[len(base) :])
    shared = tails[0][:-1]
    if any(t[:-1] != shared for t in tails) or len({t[-1] for t in tails}) != len(letters):
        raise ValueError(f"the letters {letters} do not differ in exactly their last token after {prefix!r}: {tails}")
    return {
        "prefix": prefix,
        "context_ids": base + shared,
        "letter_ids": [t[-1] for t in tails],
        "letter_tokens": [tok.decode([t[-1]], skip_special_tokens=False) for t in tails],
    }


def _previous(path: Path, expect: dict) -> Optional[dict]:
    if not path.exists():
        return None
    prev = json.loads(path.read_text())
    return prev if all(prev.get(k) == v for k, v in expect.items()) else None


def answer_heldout(
    runner, task: HeldoutTask, tok: TextTokenizer, desc: str
) -> tuple[list, list[str], list[dict], Optional[np.ndarray]]:
    """Every held-out row answered greedily and scored: (generated ids, answers, verdicts, and for MCQ
    the letters' log-probabilities when the runner gives them, else None). evaluate and verify's re-run."""
    outputs = runner.generate(task.prompts, task.limits, tok.stop_ids, tok.pad_id, desc=desc)
    logprobs = None
    if task.choice_plan is not None:
        context = task.choice_plan["context_ids"]
        logprobs = runner.choice_logprobs([p + context for p in task.prompts], task.choice_plan["letter_ids"])
    answers = [tok.decode(ids) for ids in outputs]
    return outputs, answers, [score_row(task.fmt, a, r) for a, r in zip(answers, task.rows)], logprobs


def run_heldout(runner, task: HeldoutTask, tok: TextTokenizer, mdir: Path, meta: dict) -> dict:
    t0, cpu0 = time.time(), time.process_time()
    outputs, answers, verdicts, logprobs = answer_heldout(runner, task, tok, desc=f"{mdir.name}: held-out")
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    scored, lines = [], []
    for i, (r, ids, text, verdict) in enumerate(zip(task.rows, outputs, answers, verdicts)):
        extra = {}
        if logprobs is not None:
            letter = scoring.CHOICE_LETTERS[int(np.argmax(logprobs[i]))]
            verdict["logprob"] = letter == r["reference"]
            extra = {
                "logprob_letter": letter,
                "letter_logprobs": {L: round(float(v), 4) for L, v in zip(scoring.CHOICE_LETTERS, logprobs[i])},
            }
        scored.append(verdict)
        lines.append(
            json.dumps(
                {
                    "line": r["line"],
                    "prompt": r["prompt"],
                    "answer": text,
                    "reference": r["reference"],
                    **verdict,
                    **extra,
                    "new_tokens": len(ids),
                    "max_new_tokens": task.limits[i],
                },
                ensure_ascii=False,
            )
        )
    atomic_write_text(mdir / "predictions.jsonl", "\n".join(lines) + "\n")
    summary = {
        **meta,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "new_tokens": sum(len(o) for o in outputs),
        **summarize(scored),
    }
    if task.choice_plan is not None and logprobs is None:
        summary["accuracy_logprob"] = None
        summary["logprob_note"] = f"not available on the {runner.backend} backend"
    atomic_write_json(mdir / "scores.json", summary)
    return summary


def run_squad(runner, squad: SquadTask, tok: TextTokenizer, mdir: Path, meta: dict) -> dict:
    t0, cpu0 = time.time(), time.process_time()
    outputs = runner.generate(
        squad.prompts,
        [squad.max_new_tokens] * len(squad.prompts),
        tok.stop_ids,
        tok.pad_id,
        desc=f"{mdir.name}: SQuAD",
        min_new_tokens=squad.min_new_tokens,
    )
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    answers, lines = [], []
    for r, ids in zip(squad.rows, outputs):
        generated = tok.decode(ids)
        answer = scoring.squad_answer_from_generation(generated)
        one = scoring.squad_scores([answer], [r["answers"]])
        answers.append(answer)
        lines.append(
            json.dumps(
                {
                    "line": r["line"],
                    "id": r["id"],
                    "question": r["question"],
                    "generated": generated,
                    "answer": answer,
                    "gold": r["answers"],
                    "f1": round(one["f1"], 4),
                    "em": one["em"] == 100.0,
                },
                ensure_ascii=False,
            )
        )
    atomic_write_text(mdir / "squad_predictions.jsonl", "\n".join(lines) + "\n")
    totals = scoring.squad_scores(answers, [r["answers"] for r in squad.rows])
    # the contest's metric on the same answers, reported beside the official one (rules.RETENTION_METRIC decides)
    emf1 = scoring.squad_scores_emf1(answers, [r["answers"] for r in squad.rows])
    summary = {
        **meta,
        "n": len(squad.rows),
        "f1": totals["f1"],
        "em": totals["em"],
        "emf1": emf1,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "new_tokens": sum(len(o) for o in outputs),
    }
    atomic_write_json(mdir / "squad.json", summary)
    return summary


def evaluate_model(
    name: str,
    mdir: Path,
    identity: dict,
    load: Callable[[], object],
    task: HeldoutTask,
    squad: Optional[SquadTask],
    tok: TextTokenizer,
    backend: str,
    info: dict,
) -> dict:
    """scores.json (+ squad.json) for one model, reusing what matches `identity` and the settings;
    `load` builds the runner only if something has to be computed."""
    runner = None

    def get_runner():
        nonlocal runner
        if runner is None:
            runner = load()
        return runner

    # what this model's folder already holds for these settings
    expect = {**identity, "backend": backend, "n": len(task.rows), "settings_sha": task.settings_sha}
    scores = _previous(mdir / "scores.json", expect)
    if squad is not None:
        expect_squad = {**identity, "backend": backend, "source_sha256": squad.source_sha256, **squad.settings}
        squad_res = _previous(mdir / "squad.json", expect_squad)
    if scores is None:
        log.info(
            "%s: %d held-out rows, up to %d new tokens each, with the %s backend",
            name,
            len(task.rows),
            max(task.limits),
            backend,
        )
        scores = run_heldout(get_runner(), task, tok, mdir, {"model": name, **info, **expect})
        log.info(
            "%s: accuracy %.3f strict, %.3f tolerant%s (%.0f s)",
            name,
            scores["accuracy_strict"],
            scores["accuracy_tolerant"],
            f", {scores['accuracy_logprob']:.3f} by letter log-prob"
            if scores.get("accuracy_logprob") is not None
            else "",
            scores["seconds"],
        )
    else:
        log.info("%s: held-out rows already evaluated (%s)", name, mdir / "scores.json")
    result = dict(scores)
    if squad is not None:
        if squad_res is None:
            log.info("%s: %d SQuAD questions", name, len(squad.rows))
            squad_res = run_squad(
                get_runner(), squad, tok, mdir, {"model": name, "source": str(squad.source), **expect_squad}
            )
            log.info(
                "%s: SQuAD F1 %.2f, EM %.2f (%.0f s)", name, squad_res["f1"], squad_res["em"], squad_res["seconds"]
            )
        else:
            log.info("%s: SQuAD already evaluated (%s)", name, mdir / "squad.json")
            if "emf1" not in squad_res:  # evaluated before EmF1Metric was reported: score the same answers
                rows = read_jsonl(mdir / "squad_predictions.jsonl")
                squad_res["emf1"] = scoring.squad_scores_emf1([r["answer"] for r in rows], [r["gold"] for r in rows])
                atomic_write_json(mdir / "squad.json", squad_res)
        result["squad"] = {
            k: squad_res.get(k) for k in ("n", "f1", "em", "emf1", "seconds", "cpu_seconds", "new_tokens")
        }
    return result


def models_to_evaluate(
    eval_section: EvalSection, merge_index_file: Path, base_checkpoint: Optional[Path]
) -> list[dict]:
    """The base model (when eval.base; `base_checkpoint` is its file) and the merged checkpoints
    eval.checkpoints asks for (all, last or none), from merge's index; each with its file's sha256 (merge's
    index has the merged ones'), what a model's earlier scores must match to be reused."""
    models = []
    if eval_section.base:
        models.append({"name": "base", "step": 0, "checkpoint": base_checkpoint, "train_loss": None})
    if eval_section.checkpoints != "none":
        if not merge_index_file.exists():
            raise InputError(f"{merge_index_file} not found: run merge first")
        merged = json.loads(merge_index_file.read_text())["checkpoints"]
        if eval_section.checkpoints == "last":
            merged = merged[-1:]
        for e in merged:
            models.append(
                {
                    "name": f"step-{e['step']:06d}",
                    "step": e["step"],
                    "train_loss": e.get("train_loss"),
                    "checkpoint": merge_index_file.parent / e["file"],
                    "sha256": e.get("sha256"),
                    "lora_file": e.get("lora_file"),
                    "merge_scale": e.get("scale", 1.0),
                }
            )
    for m in models:
        m["sha256"] = m.get("sha256") or sha256_file(m["checkpoint"])
    return models


def evaluate_models(
    models: list[dict],
    load: Callable[[Path], Callable[[], object]],
    task: HeldoutTask,
    squad: Optional[SquadTask],
    tok: TextTokenizer,
    backend: str,
    out: Path,
) -> list[dict]:
    """Every model of models_to_evaluate in turn, each into out/<name>/ (evaluate_model); `load` is
    runners.runner_loader's. What one model wrote stays valid when the job is stopped before the next."""
    results = []
    for m in models:
        identity = {"checkpoint_sha256": m["sha256"]}
        info = {"step": m["step"], "train_loss": m["train_loss"], "checkpoint": str(m["checkpoint"])}
        results.append(
            evaluate_model(m["name"], out / m["name"], identity, load(m["checkpoint"]), task, squad, tok, backend, info)
        )
        kill_point("evaluate.between-models")
    return results
