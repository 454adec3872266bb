"""evaluate as the contest judges: SQuAD F1/EM and retention, ratio and stage score, the
checkpoint choice (retention first, then score), the MCQ letter log-prob method, per-family
new-token limits from the training answers, the LoRA scale dial, and the report's PNG charts.

The checkpoint choice is tested on constructed report data with hand-computed scores (including a
highest-accuracy checkpoint that fails retention and must lose) and on the tiny end-to-end run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, TINY_RECIPE, keeps_90_percent, read_jsonl, run_job, squad_v11
from tunebox.config import load_spec
from tunebox.contest import scoring
from tunebox.contest.rules import choose_checkpoint, param_figures
from tunebox.data.tokenizer import TextTokenizer
from tunebox.evaluation import plots
from tunebox.evaluation.decode import NumpyLlama, length_groups
from tunebox.evaluation.loop import choice_token_plan, load_squad, longest_answers_in_samples, score_row, summarize
from tunebox.evaluation.runners import MindFormersRunner, choice_letter_logprobs
from tunebox.evaluation.scale_dial import parse_scales
from tunebox.evaluation.scorecard import annotate, contest_figures
from tunebox.io import InputError
from tunebox.model import mf
from tunebox.model.budget import merged_weight_dtype
from tunebox.model.registry import get_model_shape, llama_config_kwargs
from tunebox.model.weights import ensure_model
from tunebox.submission.contents import build_results

SQUAD = SHARED_DATA / "squad" / "dev-subset.jsonl"
MMLU = SHARED_DATA / "mcq" / "mmlu-subset.jsonl"

# Llama3-8B, LoRA r=8 on wq|wv: 32 layers x (8*(4096+4096) + 8*(4096+1024)) trainable; the contest
# divided by its nominal 8.03e9 total (docs/CONTEST_RULES.md).
LLAMA3_CONTEST_RATIO = 32 * (8 * (4096 + 4096) + 8 * (4096 + 1024)) / 8_030_000_000


def _ckpt(step: int, acc: float, f1: float, em: float) -> dict:
    return {
        "model": f"step-{step:06d}",
        "step": step,
        "accuracy_strict": acc,
        "accuracy_tolerant": acc,
        "squad": {"f1": f1, "em": em},
    }


def _figures(spec) -> dict:
    return contest_figures(
        spec.stage, param_figures(get_model_shape(spec.model.name), spec.lora.rank, spec.lora.target_modules)
    )


@pytest.fixture
def llama3_contest():
    return _figures(load_spec(TINY_RECIPE, ["model.name=llama3-8b", "stage=1"]))


# ---- the choice, on constructed report data -------------------------------------------------------


def test_highest_accuracy_fails_retention_and_loses(llama3_contest):
    base = {"model": "base", "squad": {"f1": 60.0, "em": 45.0}}
    cps = [
        _ckpt(10, 0.50, 58.0, 44.0),  # keeps 0.967 / 0.978
        _ckpt(20, 0.62, 55.0, 41.0),  # keeps 0.917 / 0.911: valid, the winner
        _ckpt(30, 0.70, 50.0, 42.0),  # best accuracy, but F1 keeps only 0.833
        _ckpt(40, 0.66, 54.5, 40.0),  # EM keeps 0.889
        _ckpt(50, 0.55, 60.0, 45.0),
    ]
    for c in cps:
        annotate(c, base, llama3_contest)
    assert llama3_contest["ratio_for_score"] == pytest.approx(LLAMA3_CONTEST_RATIO, rel=1e-12)
    # stage 1 by hand: (1 - ratio) * 0.3 + accuracy * 0.7
    assert cps[1]["score"] == pytest.approx((1 - LLAMA3_CONTEST_RATIO) * 0.3 + 0.62 * 0.7, abs=1e-12)
    assert [c["retention"]["passes"] for c in cps] == [True, True, False, False, True]
    assert cps[2]["retention"]["failed"] == ["f1"] and cps[3]["retention"]["failed"] == ["em"]
    assert cps[2]["retention"]["f1"] == pytest.approx(50 / 60)

    choice = choose_checkpoint(cps)
    assert choice["model"] == "step-000020" and choice["step"] == 20
    assert choice["rule"] == "score among retention passes"
    why = choice["verdicts"]
    assert set(why) == {"step-000010", "step-000030", "step-000040", "step-000050"}
    assert why["step-000030"].startswith("failed retention: F1 50.00 vs base 60.00 = 0.833 < 0.90")
    assert "higher than the chosen" in why["step-000030"]
    assert why["step-000040"].startswith("failed retention: EM 40.00 vs base 45.00 = 0.889 < 0.90")
    assert why["step-000010"].startswith("lower score") and why["step-000050"].startswith("lower score")


def test_ties_go_to_the_later_step_and_no_valid_checkpoint_means_no_choice(llama3_contest):
    base = {"model": "base", "squad": {"f1": 60.0, "em": 45.0}}
    cps = [annotate(_ckpt(s, 0.5, 59.0, 44.0), base, llama3_contest) for s in (10, 20)]
    choice = choose_checkpoint(cps)
    assert choice["model"] == "step-000020" and "ties go to the later step" in choice["verdicts"]["step-000010"]

    bad = [annotate(_ckpt(s, 0.9, 30.0, 20.0), base, llama3_contest) for s in (10, 20)]
    none = choose_checkpoint(bad)
    assert none["model"] is None and "none is valid" in none["reason"]
    assert all(v.startswith("failed retention") for v in none["verdicts"].values())


def test_without_squad_the_choice_is_by_score_and_says_retention_is_unknown(llama3_contest):
    cps = [
        annotate({k: v for k, v in _ckpt(s, a, 0, 0).items() if k != "squad"}, None, llama3_contest)
        for s, a in ((10, 0.4), (20, 0.7), (30, 0.6))
    ]
    assert all(c["retention"]["passes"] is None for c in cps)
    choice = choose_checkpoint(cps)
    assert choice["model"] == "step-000020" and "not measured" in choice["reason"]


def test_results_json_carries_evaluates_scorecard(llama3_contest):
    """bundle's results.json rows (contents.build_results, which verify recomputes too) carry the scorecard
    evaluate wrote into its report: one function computes both. Mutant tried: build_results scoring at the
    exact ratio (params["ratio"]) instead of through scorecard() -> the scores differ and this fails."""

    base = {"model": "base", "squad": {"f1": 60.0, "em": 45.0}}
    tuned = [
        annotate(_ckpt(s, a, f1, em), base, llama3_contest)
        for s, a, f1, em in ((10, 0.5, 58.0, 44.0), (20, 0.7, 50.0, 42.0))
    ]
    report = {"base": base, "checkpoints": tuned, "best_checkpoint": {"model": "step-000010"}}
    accuracies = {
        t["model"]: {"n": 8, "accuracy_strict": t["accuracy_strict"], "accuracy_tolerant": t["accuracy_tolerant"]}
        for t in tuned
    }
    results = build_results(
        run_id="x",
        stage=1,
        fmt="math",
        model_name="llama3-8b",
        rank=8,
        target_modules="wq|wv",
        report=report,
        accuracies=accuracies,
        code={},
        checkpoints=[{"step": 10, "sha256": "a"}, {"step": 20, "sha256": "b"}],
    )
    for row, t in zip(results["checkpoints"], tuned):
        assert (row["score"], row["score_tolerant"], row["ratio"]) == (t["score"], t["score_tolerant"], t["ratio"])
        assert (row["retention_f1"], row["retention_em"], row["passes_retention"]) == (
            t["retention"]["f1"],
            t["retention"]["em"],
            t["retention"]["passes"],
        )
    assert results["chosen"]["model"] == choose_checkpoint(tuned)["model"] == "step-000010"


def test_stage2_score_weighs_the_ratio_ten_times():
    spec = load_spec(TINY_RECIPE, ["model.name=internlm-7b", "stage=2"])
    contest = _figures(spec)
    ratio = 32 * (8 * (4096 + 4096) * 2) / 7_321_000_000  # r=8 on wq and wv, both 4096x4096
    assert contest["contest_ratio"] == pytest.approx(ratio, rel=1e-12)
    c = annotate(_ckpt(5, 0.5, 1, 1), {"squad": {"f1": 1, "em": 1}}, contest)
    assert c["score"] == pytest.approx((1 - 10 * ratio) * 0.3 + 0.5 * 0.7, abs=1e-12)


# ---- small pieces --------------------------------------------------------------------------------------


def test_length_groups_respect_rows_and_padded_token_budget():
    lengths = [50, 10, 400, 30, 20, 2000, 60]
    groups = length_groups(lengths, max_rows=3, token_budget=200)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) <= 3
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 200
    assert [lengths[i] for i in groups[0]] == [10, 20, 30]  # shortest first
    assert [5] in groups  # too long for the budget: alone


def test_parse_scales():
    assert parse_scales("0.25, 0.5,1") == [0.25, 0.5, 1.0] and parse_scales(None) == []
    with pytest.raises(InputError, match="not a number"):
        parse_scales("0.5,half")


def test_squad_rows_are_validated_with_file_and_line(tmp_path, tiny_cache):

    tok = TextTokenizer.load(tiny_cache / "models" / "tiny")
    good = SQUAD.read_text(encoding="utf-8").splitlines()[:3]
    bad_file = tmp_path / "squad.jsonl"
    bad_file.write_text("\n".join(good[:2] + ['{"context": "c", "question": "q", "answers": []}']) + "\n")
    spec = load_spec(TINY_RECIPE, [f"eval.squad_file={bad_file}", "eval.squad_rows=5"])
    with pytest.raises(InputError) as err:
        load_squad(spec.resolve(spec.eval.squad_file), spec.eval, tok)
    assert f"{bad_file}:3:" in str(err.value) and "answers" in str(err.value)
    two = load_spec(TINY_RECIPE, [f"eval.squad_file={SQUAD}", "eval.squad_rows=2"])
    squad = load_squad(two.resolve(two.eval.squad_file), two.eval, tok)
    assert len(squad.rows) == 2 and squad.prompts[0] == tok.encode(
        scoring.squad_prompt(squad.rows[0]["context"], squad.rows[0]["question"])
    )
    assert load_squad(SQUAD, load_spec(TINY_RECIPE, ["eval.squad_rows=0"]).eval, tok) is None


# ---- MCQ: letter log-probabilities -----------------------------------------------------------------------


def _mcq_prompts(tok, n: int) -> list[list[int]]:
    rows = [json.loads(l) for l in MMLU.read_text(encoding="utf-8").splitlines()[:n]]
    return [tok.encode(tok.chat_prompt(scoring.mcq_prompt(r))) for r in rows]


def _reference_logprobs(model, prompts, letter_ids) -> np.ndarray:
    """One prompt at a time, unpadded, through NumpyLlama.logits: the plain definition."""
    out = []
    for p in prompts:
        last = model.logits([p])[0, -1].astype(np.float64)
        out.append(last[letter_ids] - (last.max() + np.log(np.exp(last - last.max()).sum())))
    return np.array(out)


def test_mcq_logprob_method_on_tiny(tiny_cache):

    model_dir = tiny_cache / "models" / "tiny"
    tok = TextTokenizer.load(model_dir)
    model = NumpyLlama.from_checkpoint(model_dir / "model.ckpt", get_model_shape("tiny"))
    plan = choice_token_plan(tok)
    # byte tokenizer: ' A' is two tokens, so the shared space joins the context
    assert tok.decode(plan["context_ids"]) == "The right option is "
    assert [tok.decode([i]) for i in plan["letter_ids"]] == list("ABCD")
    prompts = [p + plan["context_ids"] for p in _mcq_prompts(tok, 5)]
    assert len({len(p) for p in prompts}) > 1, "the test needs prompts of different lengths (left padding)"
    got = choice_letter_logprobs(model, prompts, plan["letter_ids"], batch_size=3)
    want = _reference_logprobs(model, prompts, plan["letter_ids"])
    assert got.shape == (5, 4) and (got < 0).all()
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def _letter_by_hand(text: str):
    """The option letter an answer picks, by scoring.extract_choice_letter's documented rules written out
    plainly: an explicit phrase, a parenthesized letter, a letter opening the text, 'option X', else the one
    stand-alone capital A-D (an article 'A' before a lower-case word at a sentence start does not count)."""
    text = "".join(chr(ord(ch) - 0xFEE0) if 0xFF01 <= ord(ch) <= 0xFF5E else ch for ch in text or "")
    for phrase in (
        r"(?:right|correct|best|final)\s+(?:option|answer|choice)\s*(?:is|would be|should be|:)?\s*:?\s*",
        r"(?:正确答案|正确选项|答案)\s*(?:应该是|应为|是|为)?\s*[:：]?\s*",
        r"\banswer\s*(?:is|:)\s*:?\s*",
        r"(?:应选|选择|选)\s*",
    ):
        for m in re.finditer(phrase + r"[(\[]?\s*([A-Da-d])(?![A-Za-z])", text, re.I):
            if m.group(1) == "a" and re.match(r"\s+[a-z]", text[m.end(1) :]):
                continue
            return m.group(1).upper()
    m = re.search(r"[(\[]\s*([A-D])\s*[)\]]", text)
    if m:
        return m.group(1)
    opening = re.match(
        r"\s*(?:([B-D])(?:\s*[.:、)]|\s|$)|(A)(?:\s*[.:、)]|\s*$|\s+(?![a-z]))"
        r"|([a-d])(?:\s*[.:、)]|\s*$))",
        text,
    )
    if opening:
        return next(g for g in opening.groups() if g).upper()
    m = re.search(r"\boption\s+([A-D])\b", text, re.I)
    if m:
        return m.group(1).upper()
    lone = set()
    for m in re.finditer(r"(?<![A-Za-z'])([A-D])(?![A-Za-z'])", text):
        before = text[: m.start()].rstrip(" \t\"'“‘(")
        sentence_start = not before or before[-1] in ".!?:\n。！？："
        if m.group(1) == "A" and re.match(r"\s+[a-z]", text[m.end() :]) and sentence_start:
            continue
        lone.add(m.group(1))
    return lone.pop() if len(lone) == 1 else None


def test_mcq_evaluation_reports_both_methods(tiny_run, tmp_path):
    """prep an MCQ file, reuse the tiny run's trained and merged checkpoints (the model does not
    care which data it was trained on), and evaluate: both accuracies, per row and overall."""
    runs = tmp_path / "runs"
    sets = [
        f"runs_dir={runs}",
        "data.format=mcq",
        f"data.train_file={MMLU}",
        "data.max_rows=40",
        "data.heldout_rows=6",
        "data.seq_length=512",
        "stage=2",
        "eval.squad_rows=0",
    ]
    run_job("prep", TINY_RECIPE, tiny_run["cache"], tmp_path, *sets)
    for job in ("train", "merge"):
        shutil.copytree(tiny_run["run_dir"] / job, runs / "tiny" / job)
    run_job("evaluate", TINY_RECIPE, tiny_run["cache"], tmp_path, *sets)
    ev = runs / "tiny" / "evaluate"
    report = json.loads((ev / "report.json").read_text())
    assert report["format"] == "mcq" and report["mcq_logprob"]["prefix"] == "The right option is"
    limits = json.loads((ev / "limits.json").read_text())
    # every answer is "The right option is X." (22 bytes): + 8 margin, capped at eval.max_new_tokens
    assert limits["families"]["*"]["longest_answer_tokens"] == len("The right option is A.")
    assert limits["families"]["*"]["max_new_tokens"] == min(load_spec(TINY_RECIPE).eval.max_new_tokens, 22 + 8)
    for r in [report["base"], *report["checkpoints"]]:
        preds = read_jsonl(ev / r["model"] / "predictions.jsonl")
        for p in preds:
            best = max(p["letter_logprobs"], key=p["letter_logprobs"].get)
            assert p["logprob_letter"] == best and p["logprob"] == (best == p["reference"])
        assert r["accuracy_logprob"] == sum(p["logprob"] for p in preds) / len(preds)
        # the letter each answer picks, read by hand from its text (not from the `extracted` the code wrote)
        assert r["accuracy_strict"] == sum(_letter_by_hand(p["answer"]) == p["reference"] for p in preds) / len(preds)
    assert "acc log-prob" in (ev / "report.md").read_text()


# ---- the tiny end-to-end run ---------------------------------------------------------------------------------


def test_tiny_report_has_squad_retention_ratio_score_and_choice(tiny_run):
    ev = tiny_run["run_dir"] / "evaluate"
    spec = load_spec(TINY_RECIPE)
    report = json.loads((ev / "report.json").read_text())
    # tiny: 2 layers; LoRA r=8 on wq (64x64) and wv (32x64); total = 2 embeddings (384x64), per layer
    # 2 norms + wq, wo (64x64) + wk, wv (32x64) + w1, w2, w3 (128x64), and the final norm
    trainable = 2 * (8 * (64 + 64) + 8 * (32 + 64))
    total = 2 * 384 * 64 + 2 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64) + 64
    assert (report["contest"]["trainable_params"], report["contest"]["total_params"]) == (trainable, total)
    assert report["contest"]["contest_ratio"] is None and report["contest"]["ratio_for_score"] == trainable / total

    for r in [report["base"], *report["checkpoints"]]:
        rows = read_jsonl(ev / r["model"] / "squad_predictions.jsonl")
        assert len(rows) == r["squad"]["n"] == spec.eval.squad_rows
        for row in rows:
            assert row["answer"] == scoring.squad_answer_from_generation(row["generated"])
        again = squad_v11([row["answer"] for row in rows], [row["gold"] for row in rows])
        assert (r["squad"]["f1"], r["squad"]["em"]) == pytest.approx((again["f1"], again["em"]))
    base = report["base"]
    for c in report["checkpoints"]:
        assert c["score"] == pytest.approx((1 - trainable / total) * 0.3 + c["accuracy_strict"] * 0.7)
        # the rule by hand: keep 90% of the base's F1 and EM (a base of 0 is kept by anything)
        keeps = all(keeps_90_percent(c["squad"][m], base["squad"][m]) for m in ("f1", "em"))
        assert c["retention"]["passes"] is keeps
        for m in ("f1", "em"):
            assert c["retention"][m] == (c["squad"][m] / base["squad"][m] if base["squad"][m] else None)
    # the choice by hand: the best (score, step) among those that keep it; tests/test_bundle.py's
    # decided run covers a checkpoint that fails retention and a winner that is not the last step
    keep = [c for c in report["checkpoints"] if c["retention"]["passes"]]
    chosen = max(keep, key=lambda c: (c["accuracy_strict"], c["step"]))["model"]
    assert report["best_checkpoint"]["model"] == chosen
    assert set(report["verdicts"]) == {c["model"] for c in report["checkpoints"]} - {chosen}
    md = (ev / "report.md").read_text()
    assert "| model | step |" in md and "SQuAD F1" in md and f"**Chosen: {chosen}**" in md


def test_tiny_report_has_emf1_retention_beside_the_official_one(tiny_run, tmp_path, monkeypatch):
    """The contest's metric, MindFormers' EmF1Metric run here directly on the bundled answers against each
    question's first gold answer, is in squad.json and the report; the report names the metric the
    checkpoint choice uses."""
    import contextlib
    import io

    monkeypatch.setenv("LOCAL_DEFAULT_PATH", str(tmp_path))
    from mindformers.core.metric.metric import EmF1Metric

    ev = tiny_run["run_dir"] / "evaluate"
    report = json.loads((ev / "report.json").read_text())
    figures = {}
    for r in [report["base"], *report["checkpoints"]]:
        rows = read_jsonl(ev / r["model"] / "squad_predictions.jsonl")
        metric = EmF1Metric()
        metric.clear()
        with contextlib.redirect_stdout(io.StringIO()):
            metric.update([row["answer"] for row in rows], [row["gold"][0] for row in rows])
            want = metric.eval()
        assert (r["squad"]["emf1"]["f1"], r["squad"]["emf1"]["em"]) == pytest.approx((want["F1"], want["Em"]))
        figures[r["model"]] = want
    base = figures[report["base"]["model"]]
    for c in report["checkpoints"]:
        mine = figures[c["model"]]
        assert c["retention_emf1"]["f1"] == (mine["F1"] / base["F1"] if base["F1"] else None)
        assert c["retention_emf1"]["undecided"] == [m for m, k in (("f1", "F1"), ("em", "Em")) if not base[k] > 0]
    md = (ev / "report.md").read_text()
    assert "EmF1Metric retention F1 / EM" in md
    assert "the checkpoint choice uses the official SQuAD v1.1 script" in md
    if not base["Em"] > 0 or not report["base"]["squad"]["em"] > 0:
        assert "cannot pass or fail (base 0)" in md and "n/a" not in md
    if not report["base"]["squad"]["f1"] > 0 and not report["base"]["squad"]["em"] > 0:
        # nothing decided retention: no row of the main table may read a bare "pass"
        assert not [l for l in md.splitlines() if l.startswith("| step-") and l.endswith("| pass |")]
        assert "the retention rule cannot pass or fail on it" in md


def test_new_token_limits_come_from_training_answers_only(tiny_run):
    """Recompute the per-family limits from the raw file, skipping held-out and rejected rows,
    with the tokenizer directly (evaluate reads them from prep's stats, or its token arrays)."""

    spec = load_spec(TINY_RECIPE)
    prep = tiny_run["run_dir"] / "prep"
    tok = TextTokenizer.load(tiny_run["cache"] / "models" / "tiny")
    skip = {r["line"] for r in read_jsonl(prep / "heldout.jsonl")} | {
        r["line"] for r in read_jsonl(prep / "rejects.jsonl")
    }
    longest: dict[str, int] = {}
    source = spec.resolve(spec.data.train_file)
    for line, text in enumerate(source.read_text(encoding="utf-8").splitlines()[: spec.data.max_rows], start=1):
        if line in skip:
            continue
        row = json.loads(text)
        fam = scoring.math_family(row["problem"].strip())
        longest[fam] = max(longest.get(fam, 0), len(tok.encode(row["solution"].strip())))
    limits = json.loads((tiny_run["run_dir"] / "evaluate" / "limits.json").read_text())
    assert {f: v["longest_answer_tokens"] for f, v in limits["families"].items()} == longest
    # the fallback for a prep that did not record answer_tokens_by_family: count in the samples
    run = load_spec(TINY_RECIPE, [f"runs_dir={tiny_run['runs']}"])
    counted, _ = longest_answers_in_samples(run.run_dir, run.data, tok, 1)
    assert counted == longest
    cap = spec.eval.max_new_tokens
    for f, v in limits["families"].items():
        assert v["max_new_tokens"] == min(cap, longest[f] + 8)
    for p in read_jsonl(tiny_run["run_dir"] / "evaluate" / "base" / "predictions.jsonl"):
        assert p["max_new_tokens"] == limits["families"].get(p["family"], {}).get("max_new_tokens", cap)
        assert p["new_tokens"] <= p["max_new_tokens"]


def test_report_plots_are_valid_pngs(tiny_run):
    from PIL import Image

    ev = tiny_run["run_dir"] / "evaluate"
    plots = json.loads((ev / "report.json").read_text())["plots"]
    assert {"plots/accuracy_retention.png", "plots/loss.png", "plots/per_family.png"} <= set(plots)
    for rel in plots:
        assert (ev / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(ev / rel) as im:
            im.verify()
        with Image.open(ev / rel) as im:
            assert im.format == "PNG" and im.width >= 600 and im.height >= 300
            assert len(im.convert("RGB").getcolors(1 << 16) or []) > 10, f"{rel} looks blank"


def _png_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _has_colour(rgb: np.ndarray, ax, x: float, y: float, colour: str, radius: int = 1) -> bool:
    """Whether the PNG shows `colour` (within antialiasing) within `radius` pixels of data point (x, y)."""
    from matplotlib.colors import to_rgb

    px, py = ax.transData.transform((x, y))
    row, col = int(round(rgb.shape[0] - py)), int(round(px))
    patch = rgb[row - radius : row + radius + 1, col - radius : col + radius + 1].reshape(-1, 3).astype(int)
    want = np.array([round(255 * c) for c in to_rgb(colour)])
    return bool((np.abs(patch - want).max(axis=1) <= 12).any())


def test_line_chart_shows_each_point_where_its_value_is_and_gaps_as_gaps(tmp_path):
    """The PNG line_chart writes, read back pixel by pixel: every point of every series has its
    series' colour where matplotlib's axes put that value, and a None leaves no line across it."""

    xs = [0, 1, 2, 3, 4]
    a, b = [0.1, None, 0.5, 0.4, 0.9], [0.8, 0.7, 0.6, 0.3, 0.2]
    series = [plots.Series("a", xs, a), plots.Series("b", xs, b, dashed=True)]
    kw = dict(title="t", xlabel="x", ylabel="y", hlines=[plots.HLine(0.95, "threshold")])
    rgb = _png_rgb(plots.line_chart(tmp_path / "l.png", series, **kw))
    fig = plots.line_figure(series, **kw)  # the same figure, to map data to pixels
    fig.draw_without_rendering()
    ax = fig.axes[0]
    assert rgb.shape[:2] == (round(fig.bbox.height), round(fig.bbox.width))
    colours = [plots.PALETTE[0], plots.PALETTE[1]]
    for ys, colour in zip((a, b), colours):
        for x, y in zip(xs, ys):
            if y is not None:
                assert _has_colour(rgb, ax, x, y, colour), (x, y, colour)
    assert not _has_colour(rgb, ax, 0.5, 0.2, colours[0], radius=3)  # a: no line from x=0 into the gap
    assert not _has_colour(rgb, ax, 1.0, 0.3, colours[0], radius=3)  # ...nor across it to x=2
    assert _has_colour(rgb, ax, 3.5, 0.65, colours[0])  # but between 3 and 4, a line
    assert any(_has_colour(rgb, ax, x, 0.95, "#999999") for x in np.linspace(1.5, 2.5, 11))  # the dashed threshold
    steps = (
        plots.line_figure([plots.Series("loss", list(range(1, 11)), [1.0] * 10)], title="t", xlabel="x", ylabel="y")
        .axes[0]
        .get_xticks()
    )
    assert all(float(t).is_integer() for t in steps)  # training steps: no 2.5
    with pytest.raises(ValueError, match="no data"):
        plots.line_chart(tmp_path / "d.png", [plots.Series("a", [0], [None])], title="t", xlabel="x", ylabel="y")


def test_bar_chart_draws_each_value_as_a_bar_of_that_length(tmp_path):

    cats, series = ["x", "y"], {"m1": [0.2, None], "m2": [1.0, 0.6]}
    kw = dict(title="t", xlabel="v", x_range=(0.0, 1.0))
    rgb = _png_rgb(plots.bar_chart(tmp_path / "b.png", cats, series, **kw))
    fig = plots.bar_figure(cats, series, **kw)
    fig.draw_without_rendering()
    ax = fig.axes[0]
    for i, (name, values) in enumerate(series.items()):
        bars = ax.containers[i]
        for ci, (bar, v) in enumerate(zip(bars, values)):
            y = bar.get_y() + bar.get_height() / 2
            assert bar.get_width() == (v or 0.0)
            if v:
                assert _has_colour(rgb, ax, v / 2, y, plots.PALETTE[i]), (name, cats[ci])
                assert not _has_colour(rgb, ax, v / 2, y, plots.PALETTE[1 - i]), (name, cats[ci])
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["0.2", "n/a", "1", "0.6"]
    with pytest.raises(ValueError, match="2 categories"):
        plots.bar_chart(tmp_path / "c.png", ["x", "y"], {"m": [1.0]}, title="t", xlabel="v")


def test_scale_dial_ends_are_the_base_model_and_the_merged_checkpoint(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run["run_dir"], runs / "tiny")
    bad = run_job(
        "evaluate", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}", "eval.scales=0,x", check=False
    )
    assert bad.returncode == 2 and "'x' is not a number" in bad.stderr
    run_job("evaluate", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}", "eval.scales=0,1")
    ev = runs / "tiny" / "evaluate"
    report = json.loads((ev / "report.json").read_text())
    dial = report["scale_dial"]
    chosen = report["best_checkpoint"]["model"] or report["checkpoints"][-1]["model"]
    assert dial["checkpoint"] == chosen and [p["scale"] for p in dial["points"]] == [0.0, 1.0]

    def answers(model_dir: Path, name: str, key: str) -> list:
        return [r[key] for r in read_jsonl(model_dir / name)]

    for scale, same_as in ((0, "base"), (1, chosen)):
        d = ev / "scale-dial" / f"scale-{scale}"
        assert answers(d, "predictions.jsonl", "answer") == answers(ev / same_as, "predictions.jsonl", "answer")
        assert answers(d, "squad_predictions.jsonl", "generated") == answers(
            ev / same_as, "squad_predictions.jsonl", "generated"
        )
    # the merged checkpoint really differs from the base model, so the two ends are not trivially equal
    assert answers(ev / "base", "predictions.jsonl", "answer") != answers(ev / chosen, "predictions.jsonl", "answer")
    assert "plots/scale_dial.png" in report["plots"] and "LoRA scale dial" in (ev / "report.md").read_text()


# ---- SmolLM2 (slow) ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_letters_are_single_tokens_and_logprobs_match_unpadded():

    model_dir = ensure_model("smollm2-135m")
    tok = TextTokenizer.load(model_dir)
    plan = choice_token_plan(tok)
    assert plan["context_ids"] == tok.encode("The right option is")  # nothing shared: ' A' is one token
    assert plan["letter_tokens"] == [" A", " B", " C", " D"]
    assert [tok.encode(f" {L}") for L in "ABCD"] == [[i] for i in plan["letter_ids"]]
    model = NumpyLlama.from_checkpoint(model_dir / "model.ckpt", get_model_shape("smollm2-135m"))
    prompts = [p + plan["context_ids"] for p in _mcq_prompts(tok, 3)]
    got = choice_letter_logprobs(model, prompts, plan["letter_ids"], batch_size=3)
    np.testing.assert_allclose(got, _reference_logprobs(model, prompts, plan["letter_ids"]), atol=2e-3)


# ---- the Ascend path: MindFormers' generate() behind a stub network ----------------------------------
# MindFormers 1.9's generate() does not run on CPU (docs: PLATFORM), so a stub stands in for the
# network. It answers as MindFormers' text generator does (mindformers/generation/text_generator.py):
# each row is the prompt followed by the new tokens, the end token included, rows of different lengths.


class _StubNet:
    def __init__(self, scripts: dict[tuple, list[int]]):
        self.scripts, self.calls = scripts, []

    def generate(self, input_ids, max_new_tokens, do_sample, eos_token_id, pad_token_id, min_new_tokens=None):
        self.calls.append(
            {
                "rows": len(input_ids),
                "max_new_tokens": max_new_tokens,
                "do_sample": do_sample,
                "eos_token_id": eos_token_id,
                "pad_token_id": pad_token_id,
                **({"min_new_tokens": min_new_tokens} if min_new_tokens else {}),
            }
        )
        out = []
        for prompt in input_ids:
            new = []
            for t in self.scripts[tuple(prompt)][:max_new_tokens]:
                new.append(t)
                if t in eos_token_id:
                    break
            out.append(np.array(list(prompt) + new, dtype=np.int32))
        return out


def _stub_runner(net, batch_size: int):

    runner = MindFormersRunner.__new__(MindFormersRunner)  # __init__ builds the real network
    runner.net, runner.batch_size = net, batch_size
    return runner


def test_mindformers_runner_strips_prompts_stops_and_limits_per_row():
    EOS, IM_END, PAD = 2, 7, 0
    prompts = [
        [5, 2, 6],  # a stop id inside the prompt must not cut anything
        [9, 9, 9, 9, 9],
        [4, 7],
        [8],
    ]
    scripts = {
        (5, 2, 6): [10, 11, 12, 13, 14, 15, 16],  # never stops: its limit (4) cuts it
        (9, 9, 9, 9, 9): [20, 21, IM_END, 22, 23],  # the second stop id ends it
        (4, 7): [30, EOS, 31],  # stops before its limit
        (8,): [40, 41, 42],
    }  # limit 1
    limits = [4, 10, 6, 1]
    net = _StubNet(scripts)
    got = _stub_runner(net, batch_size=2).generate(prompts, limits, [EOS, IM_END], PAD)
    assert got == [[10, 11, 12, 13], [20, 21], [30], [40]]
    # greedy, both stop ids, the pad id, one call per batch asking for the batch's longest limit
    assert net.calls == [
        {"rows": 2, "max_new_tokens": 10, "do_sample": False, "eos_token_id": [EOS, IM_END], "pad_token_id": PAD},
        {"rows": 2, "max_new_tokens": 6, "do_sample": False, "eos_token_id": [EOS, IM_END], "pad_token_id": PAD},
    ]
    assert all(isinstance(t, int) for row in got for t in row)


@pytest.mark.parametrize("dtype, ms_name", [("float16", "Float16"), ("bfloat16", "BFloat16")])
def test_mindformers_runner_builds_the_ascend_config(monkeypatch, tmp_path, dtype, ms_name):
    """train.device Ascend + a half dtype: MindFormers' LlamaConfig gets that dtype for compute,
    parameters (rotary float32 beside bf16), float32 norms and softmax, the fused kernels, and the KV cache."""
    import mindformers.models.llama as mf_llama

    built = {}

    class StubLlama:
        def __init__(self, config):
            built["config"] = config

        def set_train(self, mode):
            built["train"] = mode

    monkeypatch.setattr(mf_llama, "LlamaForCausalLM", StubLlama)
    monkeypatch.setattr(mf, "setup_device", lambda device, mode, **kw: built.update(device=device, mode=mode))
    monkeypatch.setattr(mf, "load_weights", lambda net, ckpt, **kw: built.update(ckpt=ckpt))
    spec = load_spec(
        TINY_RECIPE, [f"runs_dir={tmp_path}", "train.device=Ascend", f"train.dtype={dtype}", "eval.batch_size=3"]
    )
    runner = MindFormersRunner(
        get_model_shape("tiny"),
        tmp_path / "model.ckpt",
        96,
        device=spec.train.device,
        dtype=merged_weight_dtype(spec.merge, spec.train),
        batch_size=spec.eval.batch_size,
        output_dir=spec.run_dir,
    )
    c = built["config"]
    assert (built["device"], built["mode"], built["ckpt"], built["train"]) == (
        "Ascend",
        "graph",
        tmp_path / "model.ckpt",
        False,
    )
    assert [str(x) for x in (c.compute_dtype, c.param_init_type)] == [ms_name] * 2
    # rotary in float32 beside bf16, in fp16 beside fp16: the contest's stage-1 and stage-2 configs
    assert str(c.rotary_dtype) == {"float16": "Float16", "bfloat16": "Float32"}[dtype]
    assert [str(x) for x in (c.layernorm_compute_type, c.softmax_compute_type)] == ["Float32", "Float32"]
    assert c.use_flash_attention is True and c.fused_rms_norm is True and c.use_rope_slice is False
    assert c.use_past is True and c.seq_length == 96 and c.batch_size == 3 and runner.batch_size == 3
    # and the CPU settings, for contrast: float32 everywhere, no fused kernels, sliced rotary
    cpu = mf_llama.LlamaConfig(**llama_config_kwargs(get_model_shape("tiny"), seq_length=96))
    assert str(cpu.compute_dtype) == "Float32" and not cpu.use_flash_attention and not cpu.fused_rms_norm
    assert cpu.use_rope_slice is True


def test_summarize_reports_the_graded_measure_per_family_and_per_source():

    ref = {"prompt": "计算 3963.85 * -5055.68 等于多少？", "reference": "3963.85 * -5055.68 = -20039957.1680"}
    rows = [
        score_row("math", "3963.85 * -5055.68 = -20039957.1680", {**ref, "source": "split"}),
        score_row("math", "3963.85 * -5055.68 = -20100000", {**ref, "source": "file"}),
        score_row("math", "3963.85 * -5055.68 = -30000000", {**ref, "source": "file"}),
        score_row("math", "nothing", {**ref, "source": "file"}),
    ]
    s = summarize(rows)
    assert (s["accuracy_strict"], s["accuracy_within_1pct"]) == (0.25, 0.5)
    assert s["leading_digits_mean"] == (12 + 2 + 0 + 0) / 4
    assert s["per_family"]["mul"]["within_1pct"] == 0.5
    assert s["per_source"]["split"]["accuracy_within_1pct"] == 1.0
    assert s["per_source"]["file"]["n"] == 3 and s["per_source"]["file"]["accuracy_within_1pct"] == 1 / 3
    assert "per_source" not in summarize(rows[:1])


def test_base_model_alone_needs_no_merge(tiny_run, tmp_path):
    """eval.checkpoints=none evaluates the base model without merge having run (what bench.eval times);
    the base's verdicts are those of the tiny run, which evaluated the same base on the same rows."""
    runs = tmp_path / "runs"
    run_job("prep", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}")
    run_job("evaluate", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}", "eval.checkpoints=none")
    report = json.loads((runs / "tiny" / "evaluate" / "report.json").read_text())
    assert report["checkpoints"] == [] and report["base"]["model"] == "base"
    same = json.loads((tiny_run["run_dir"] / "evaluate" / "report.json").read_text())["base"]
    assert report["base"]["accuracy_strict"] == same["accuracy_strict"] and report["base"]["n"] == same["n"]
    assert not (runs / "tiny" / "merge").exists()
