"""The real embedded model through the whole job graph, shortened: the same code paths as
`invoke pipeline`, on the real contest rows, in a few minutes. The one run where the base model
answers SQuAD questions, so retention can bite: its verdicts and the choice are re-derived by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, keeps_90_percent, read_jsonl, run_job
from tunebox.config import load_spec
from tunebox.data.prompts import spec_prompt
from tunebox.data.tokenizer import TextTokenizer
from tunebox.evaluation.decode import NumpyLlama
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import ensure_model

LOCAL = REPO / "recipes" / "local-smollm2.yaml"
# SmolLM2-135M by hand: 30 layers of width 576, 9 heads of 64, 3 KV heads (192), MLP 1536, 49,152
# tokens, tied embeddings. LoRA r=8 on wq (576x576) and wv (192x576); the contest has no nominal total.
SMOLLM2_TRAINABLE = 30 * (8 * (576 + 576) + 8 * (576 + 192))
SMOLLM2_TOTAL = 49152 * 576 + 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 576 * 1536 + 2 * 576) + 576


def heldout_answer_loss(ckpt: Path, spec, tok, rows: list[dict]) -> float:
    """Mean cross-entropy of the reference answers (and the end token) of the held-out rows, given
    prompts (the spec's template, as prep and evaluate render it): a plain float64 log-softmax over
    NumpyLlama's logits, one row at a time."""

    model = NumpyLlama.from_checkpoint(ckpt, get_model_shape(spec.model.name))
    nll = []
    for row in rows:
        prompt = tok.encode(spec_prompt(tok, row["prompt"], spec.data))
        seq = prompt + tok.encode(row["reference"] + tok.answer_suffix)
        logits = model.logits([seq[:-1]])[0].astype(np.float64)
        top = logits.max(-1, keepdims=True)
        logp = logits - (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))
        nll += [-logp[t, seq[t + 1]] for t in range(len(prompt) - 1, len(seq) - 1)]
    return float(np.mean(nll))


def check_training_lowers_the_heldout_loss(run: Path, spec) -> None:
    """On rows training never saw (the same rows for every model, so no batch-to-batch noise): the
    first and the last merged checkpoint are below the base model, and the last below the first."""

    tok = TextTokenizer.load(ensure_model(spec.model.name))
    rows = read_jsonl(run / "prep" / "heldout.jsonl")[: spec.eval.limit]
    index = json.loads((run / "merge" / "index.json").read_text())
    base = heldout_answer_loss(Path(index["base_checkpoint"]), spec, tok, rows)
    first, last = (
        heldout_answer_loss(run / "merge" / e["file"], spec, tok, rows)
        for e in (index["checkpoints"][0], index["checkpoints"][-1])
    )
    assert last < first < base and last < 0.95 * base, (base, first, last)


def check_retention_and_choice(report: dict) -> None:
    """The contest rule worked here from the report's SQuAD and accuracy figures: a checkpoint is
    valid when its F1 and EM are both >= 0.9 x the base model's; the best (score, step) among the
    valid ones is chosen; each other checkpoint lost for the reason its verdict gives."""
    ratio = SMOLLM2_TRAINABLE / SMOLLM2_TOTAL
    assert report["contest"]["ratio_for_score"] == pytest.approx(ratio, rel=1e-12)
    base = report["base"]["squad"]
    assert base["f1"] > 0, "the real model answers some SQuAD questions: retention can bite"
    cps = report["checkpoints"]
    valid = {}
    for c in cps:
        assert c["score"] == pytest.approx((1 - ratio) * 0.3 + c["accuracy_strict"] * 0.7, abs=1e-12)
        valid[c["model"]] = all(keeps_90_percent(c["squad"][m], base[m]) for m in ("f1", "em"))
        assert c["retention"]["passes"] is valid[c["model"]], c["model"]
        assert c["retention"]["f1"] == pytest.approx(c["squad"]["f1"] / base["f1"])
        assert c["retention"]["em"] == (pytest.approx(c["squad"]["em"] / base["em"]) if base["em"] else None)
    keep = [c for c in cps if valid[c["model"]]]
    chosen = max(keep, key=lambda c: (c["score"], c["step"]))["model"] if keep else None
    assert report["best_checkpoint"]["model"] == chosen
    for c in cps:
        if c["model"] == chosen:
            continue
        why = report["verdicts"][c["model"]]
        assert why.startswith("failed retention" if not valid[c["model"]] else ("lower score", "same score")), why


@pytest.mark.slow
def test_smollm2_short_pipeline(tmp_path):
    cache = os.environ.get("TUNEBOX_CACHE") or os.path.expanduser("~/.cache/tunebox")  # convert once, reuse
    runs = tmp_path / "runs"
    args = [f"runs_dir={runs}", "train.max_steps=10", "data.heldout_rows=12", "eval.limit=12", "eval.squad_rows=8"]
    for job in ("prep", "train", "merge", "evaluate"):
        run_job(job, LOCAL, cache, tmp_path, *args, timeout=1800)
    run = runs / "local-smollm2"
    log = read_jsonl(run / "train" / "loss.jsonl")
    assert [r["step"] for r in log] == list(range(1, 11)) and all(np.isfinite(r["loss"]) for r in log)
    check_training_lowers_the_heldout_loss(run, load_spec(LOCAL, args))
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert report["base"]["n"] == 12 and len(report["checkpoints"]) == 5
    check_retention_and_choice(report)
    preds = read_jsonl(run / "evaluate" / "base" / "predictions.jsonl")
    # the real model answers in words and numbers, not byte soup
    assert sum(any(ch.isdigit() for ch in p["answer"]) for p in preds) >= 6
