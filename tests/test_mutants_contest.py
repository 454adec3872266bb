"""tunebox/contest/rules.py to the letter: the boundaries, the error messages and every field of
the retention verdict and the checkpoint choice, worked out by hand. Written against the mutants
that survived `invoke test.mutants` (docs/TESTING.md): each assert pins one of them."""
from __future__ import annotations

import pytest

from tunebox.contest import rules
from tunebox.contest.scoring import mcq_language, mcq_prompt
from tunebox.model.registry import get_model_shape


def test_param_ratio_bounds_and_messages():
    assert rules.param_ratio(0, 10) == 0.0 and rules.param_ratio(10, 10) == 1.0 and rules.param_ratio(1, 4) == 0.25
    assert rules.param_ratio(1, 1) == 1.0
    with pytest.raises(ValueError, match=r"^total parameter count must be positive, got 0$"):
        rules.param_ratio(0, 0)
    with pytest.raises(ValueError, match=r"^trainable count -1 must lie between 0 and the total 10$"):
        rules.param_ratio(-1, 10)
    with pytest.raises(ValueError, match=r"^trainable count 11 must lie between 0 and the total 10$"):
        rules.param_ratio(11, 10)


def test_contest_ratio_and_its_message():
    assert rules.contest_param_ratio(8_030_000, "llama3-8b") == 0.001
    assert rules.contest_param_ratio(7_321_000, "internlm-7b") == 0.001
    with pytest.raises(KeyError) as exc:
        rules.contest_param_ratio(1, "tiny")
    assert exc.value.args[0] == "no contest total for 'tiny'; known: llama3-8b, internlm-7b"


def test_param_figures_by_hand():
    # tiny: LoRA r=8 on wq (64x64) and wv (32x64) in 2 layers; 123,200 parameters (tests/test_bundle.py)
    trainable, total = 2 * (8 * (64 + 64) + 8 * (32 + 64)), 123_200
    assert rules.param_figures(get_model_shape("tiny"), 8, "wq|wv") == {
        "trainable_params": trainable, "total_params": total, "ratio": trainable / total,
        "contest_total_params": None, "contest_ratio": None, "ratio_for_score": trainable / total,
        "ratio_basis": "exact parameter count 123,200; the contest has no nominal total for tiny"}
    llama = rules.param_figures(get_model_shape("llama3-8b"), 8, "wq|wv")
    assert llama["trainable_params"] == 3_407_872 and llama["contest_total_params"] == 8_030_000_000
    assert llama["contest_ratio"] == llama["ratio_for_score"] == 3_407_872 / 8_030_000_000
    assert llama["ratio"] == 3_407_872 / 8_030_261_248
    assert llama["ratio_basis"] == "contest nominal total 8,030,000,000"


@pytest.mark.parametrize("score", [rules.stage1_score, rules.stage2_score])
def test_scores_take_fractions_only(score):
    score(1.0, 0.0)
    score(0.0, 0.1 if score is rules.stage2_score else 1.0)
    with pytest.raises(ValueError, match=r"^accuracy must be a fraction in \[0, 1\], got 1.5 \(pass 0.64, not 64\)$"):
        score(1.5, 0.0)
    with pytest.raises(ValueError, match=r"^accuracy must be a fraction in \[0, 1\], got -0.5 "):
        score(-0.5, 0.0)
    with pytest.raises(ValueError, match=r"^ratio must be a fraction in \[0, 1\], got 1.5 "):
        score(0.5, 1.5)


def test_stage_scores_by_hand():
    assert rules.stage1_score(0.5, 0.1) == pytest.approx(0.9 * 0.3 + 0.35, abs=1e-15)
    assert rules.stage2_score(0.5, 0.01) == pytest.approx(0.9 * 0.3 + 0.35, abs=1e-15)
    assert rules.stage_score(1, 0.5, 0.1) == pytest.approx(0.62, abs=1e-15)
    assert rules.stage_score(2, 0.5, 0.01) == pytest.approx(0.62, abs=1e-15)
    assert rules.stage_score(2, 0.5, 0.1) == pytest.approx(0.35, abs=1e-15)
    assert rules.stage_score(1, None, 0.1) is None
    with pytest.raises(ValueError, match=r"^stage must be 1 or 2, got 3$"):
        rules.stage_score(3, 0.5, 0.1)


def test_retention_by_hand():
    assert rules.retention(45.0, 50.0) == 0.9 and rules.retention(0.5, 0.5) == 1.0
    with pytest.raises(ValueError, match=r"^base score must be positive to measure retention, got 0$"):
        rules.retention(1.0, 0)


def test_retention_verdict_every_field():
    assert rules.retention_verdict(None, {"f1": 1, "em": 1}) == {
        "measured": False, "threshold": 0.9, "passes": None, "failed": [], "undecided": [], "f1": None, "em": None,
        "shortfall": ""}
    assert rules.retention_verdict({"f1": 1, "em": 1}, None)["passes"] is None
    ok = rules.retention_verdict({"f1": 45.0, "em": 18.0}, {"f1": 50.0, "em": 20.0})
    assert ok == {"measured": True, "threshold": 0.9, "passes": True, "failed": [], "undecided": [], "f1": 0.9,
                  "em": 0.9, "shortfall": ""}
    bad = rules.retention_verdict({"f1": 44.0, "em": 20.0}, {"f1": 50.0, "em": 0.0})
    assert bad == {"measured": True, "threshold": 0.9, "passes": False, "failed": ["f1"], "undecided": ["em"],
                   "f1": 0.88, "em": None, "shortfall": "F1 44.00 vs base 50.00 = 0.880 < 0.90"}
    both = rules.retention_verdict({"f1": 1.0, "em": 0.0}, {"f1": 2.0, "em": 1.0})
    assert both["failed"] == ["f1", "em"] and both["undecided"] == []
    assert both["shortfall"] == "F1 1.00 vs base 2.00 = 0.500 < 0.90; EM 0.00 vs base 1.00 = 0.000 < 0.90"
    assert rules.retention_verdict({"f1": 1.0, "em": 1.0}, {"f1": 2.0, "em": 2.0}, threshold=0.5)["passes"] is True


def cand(model, step, score, acc, passes, shortfall="F1 1.00 vs base 2.00 = 0.500 < 0.90"):
    return {"model": model, "step": step, "score": score, "accuracy_strict": acc,
            "retention": {"passes": passes, "shortfall": shortfall if passes is False else ""}}


def test_choose_checkpoint_nothing_scored():
    assert rules.choose_checkpoint([]) == rules.choose_checkpoint([cand("a", 1, None, None, True)]) == {
        "model": None, "step": None, "rule": None, "valid": None, "highest_score": None,
        "reason": "no checkpoint has a score", "verdicts": {}}


def test_choose_checkpoint_among_retention_passes():
    got = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, True), cand("b", 2, 0.6, 0.3, True),
                                   cand("c", 3, 0.7, 0.4, False), cand("d", 4, 0.6, 0.3, True),
                                   cand("e", 5, 0.2, 0.0, False)])
    assert got == {
        "model": "d", "step": 4, "rule": "score among retention passes", "valid": True, "highest_score": "c",
        "reason": "highest stage score (0.6000, strict accuracy 0.300) among the 3 of 5 checkpoints keeping >= 90% "
                  "of the base model's SQuAD F1 and EM",
        "verdicts": {"a": "lower score: 0.5000 < 0.6000 (strict accuracy 0.200 vs 0.300)",
                     "b": "same score 0.6000; ties go to the later step (4 > 2)",
                     "c": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90 (its score 0.7000 is higher than "
                          "the chosen one's)",
                     "e": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90"}}


def test_choose_checkpoint_when_none_passes():
    got = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, False), cand("b", 2, 0.7, 0.4, False)])
    assert got == {
        "model": None, "step": None, "rule": "none passes retention", "valid": False, "highest_score": "b",
        "reason": "NO VALID CHECKPOINT: none of the 2 keeps 90% of the base model's SQuAD F1 and EM, so none is "
                  "valid under the contest rule and none is chosen (highest score: b, 0.7000)",
        "verdicts": {"a": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90",
                     "b": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90"}}


def test_choose_checkpoint_when_retention_is_unknown():
    unknown = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, None), cand("b", 2, 0.4, 0.1, None)])
    assert (unknown["model"], unknown["step"], unknown["valid"], unknown["rule"]) == ("a", 1, None,
                                                                                    "score (retention not measured)")
    assert unknown["reason"] == ("highest stage score (0.5000, strict accuracy 0.200); SQuAD retention was not "
                                 "measured (eval.squad_file), so validity under the contest rule is unknown")
    mixed = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, True), cand("b", 2, 0.6, 0.3, None),
                                     cand("c", 3, 0.9, 0.3, False)])
    assert (mixed["model"], mixed["valid"], mixed["rule"]) == ("b", None, "score among checkpoints not failing "
                                                               "retention")
    assert mixed["reason"] == ("highest stage score (0.6000, strict accuracy 0.300) among the 2 of 3 checkpoints not "
                               "known to fail retention; retention is unknown for b")
    two = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, True), cand("b", 2, 0.6, 0.3, None),
                                   cand("c", 3, 0.4, 0.1, None)])
    assert two["reason"].endswith("among the 3 of 3 checkpoints not known to fail retention; retention is unknown "
                                  "for b, c")
    partly = rules.choose_checkpoint([cand("a", 1, 0.7, 0.2, True), cand("b", 2, 0.6, 0.3, None)])
    assert (partly["model"], partly["valid"]) == ("a", True)
    assert partly["reason"].endswith("retention is unknown for b")


# ---- the MCQ prompt (scoring.py), to the byte ---------------------------------------------------

EN_ROW = {"id": "q1", "question": " What is 2+2? ", "choices": ["3", "4", "5", "6"], "subject": "high_school_math"}
EN_PROMPT = ("Here is a question about high school math, the correct answer is one of the options A/B/C/D. "
             "Please select the correct option and answer the question with 'The right option is'.\n"
             "Question: What is 2+2? \nA.3\nB.4\nC.5\nD.6")


def test_mcq_prompt_to_the_byte():

    assert mcq_prompt(EN_ROW) == mcq_prompt(EN_ROW, "en") == mcq_prompt(EN_ROW, "contest") == EN_PROMPT
    no_subject = {k: v for k, v in EN_ROW.items() if k != "subject"}
    assert mcq_prompt(no_subject).startswith("Here is a question about general knowledge, the correct")
    zh = {"question": "一加一等于几？", "choices": ["1", "2", "3", "4"], "subject": "math"}
    assert mcq_prompt(zh) == ("以下是关于math的单项选择题，正确答案是 A/B/C/D 中的一个。"
                              "请选出正确选项，并以“The right option is”作答。\n"
                              "问题：一加一等于几？ \nA.1\nB.2\nC.3\nD.4")
    assert mcq_prompt(zh, "contest").startswith("Here is a question about math,")  # what the contest sent
    assert mcq_prompt(EN_ROW, "zh").startswith("以下是关于high school math的单项选择题")


def test_mcq_prompt_refusals():

    with pytest.raises(ValueError) as exc:
        mcq_prompt({**EN_ROW, "choices": ["a", "b", "c"]})
    assert str(exc.value) == "row q1: 'choices' must hold 4 options, got ['a', 'b', 'c']"
    with pytest.raises(ValueError) as exc:
        mcq_prompt({"question": "x", "choices": "abcd"})
    assert str(exc.value) == "row ?: 'choices' must hold 4 options, got 'abcd'"
    with pytest.raises(ValueError) as exc:
        mcq_prompt(EN_ROW, "fr")
    assert str(exc.value) == "lang must be auto, contest or one of en, zh; got 'fr'"


def test_mcq_language_by_hand():

    assert mcq_language(EN_ROW) == "en"
    assert mcq_language({"question": "Which?", "choices": ["a", "b", "中", "d"]}) == "zh"   # a choice decides too
    assert mcq_language({"choices": ["\u3400"]}) == "zh" and mcq_language({"question": "\u9fff"}) == "zh"
    assert mcq_language({"question": "\u4dbf"}) == "zh"
    assert mcq_language({"question": "\u3042 (hiragana)", "choices": []}) == "en"   # not CJK ideographs
    assert mcq_language({}) == "en"
