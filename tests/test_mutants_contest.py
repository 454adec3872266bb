"""tunebox/contest/rules.py to the letter: the boundaries, the error messages and every field of
the retention verdict and the checkpoint choice, worked out by hand. Written against the mutants
that survived `invoke test.mutants` (docs/TESTING.md): each assert pins one of them."""

from __future__ import annotations

import pytest

from tunebox.contest import mathgen, rules, scoring
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
        "trainable_params": trainable,
        "total_params": total,
        "ratio": trainable / total,
        "contest_total_params": None,
        "contest_ratio": None,
        "ratio_for_score": trainable / total,
        "ratio_basis": "exact parameter count 123,200; the contest has no nominal total for tiny",
    }
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
        "measured": False,
        "threshold": 0.9,
        "passes": None,
        "failed": [],
        "undecided": [],
        "f1": None,
        "em": None,
        "shortfall": "",
    }
    assert rules.retention_verdict({"f1": 1, "em": 1}, None)["passes"] is None
    ok = rules.retention_verdict({"f1": 45.0, "em": 18.0}, {"f1": 50.0, "em": 20.0})
    assert ok == {
        "measured": True,
        "threshold": 0.9,
        "passes": True,
        "failed": [],
        "undecided": [],
        "f1": 0.9,
        "em": 0.9,
        "shortfall": "",
    }
    bad = rules.retention_verdict({"f1": 44.0, "em": 20.0}, {"f1": 50.0, "em": 0.0})
    assert bad == {
        "measured": True,
        "threshold": 0.9,
        "passes": False,
        "failed": ["f1"],
        "undecided": ["em"],
        "f1": 0.88,
        "em": None,
        "shortfall": "F1 44.00 vs base 50.00 = 0.880 < 0.90",
    }
    both = rules.retention_verdict({"f1": 1.0, "em": 0.0}, {"f1": 2.0, "em": 1.0})
    assert both["failed"] == ["f1", "em"] and both["undecided"] == []
    assert both["shortfall"] == "F1 1.00 vs base 2.00 = 0.500 < 0.90; EM 0.00 vs base 1.00 = 0.000 < 0.90"
    assert rules.retention_verdict({"f1": 1.0, "em": 1.0}, {"f1": 2.0, "em": 2.0}, threshold=0.5)["passes"] is True


def cand(model, step, score, acc, passes, shortfall="F1 1.00 vs base 2.00 = 0.500 < 0.90"):
    return {
        "model": model,
        "step": step,
        "score": score,
        "accuracy_strict": acc,
        "retention": {"passes": passes, "shortfall": shortfall if passes is False else ""},
    }


def test_choose_checkpoint_nothing_scored():
    assert (
        rules.choose_checkpoint([])
        == rules.choose_checkpoint([cand("a", 1, None, None, True)])
        == {
            "model": None,
            "step": None,
            "rule": None,
            "valid": None,
            "highest_score": None,
            "reason": "no checkpoint has a score",
            "verdicts": {},
        }
    )


def test_choose_checkpoint_among_retention_passes():
    got = rules.choose_checkpoint(
        [
            cand("a", 1, 0.5, 0.2, True),
            cand("b", 2, 0.6, 0.3, True),
            cand("c", 3, 0.7, 0.4, False),
            cand("d", 4, 0.6, 0.3, True),
            cand("e", 5, 0.2, 0.0, False),
        ]
    )
    assert got == {
        "model": "d",
        "step": 4,
        "rule": "score among retention passes",
        "valid": True,
        "highest_score": "c",
        "reason": "highest stage score (0.6000, strict accuracy 0.300) among the 3 of 5 checkpoints keeping >= 90% "
        "of the base model's SQuAD F1 and EM",
        "verdicts": {
            "a": "lower score: 0.5000 < 0.6000 (strict accuracy 0.200 vs 0.300)",
            "b": "same score 0.6000; ties go to the later step (4 > 2)",
            "c": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90 (its score 0.7000 is higher than "
            "the chosen one's)",
            "e": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90",
        },
    }


def test_choose_checkpoint_when_none_passes():
    got = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, False), cand("b", 2, 0.7, 0.4, False)])
    assert got == {
        "model": None,
        "step": None,
        "rule": "none passes retention",
        "valid": False,
        "highest_score": "b",
        "reason": "NO VALID CHECKPOINT: none of the 2 keeps 90% of the base model's SQuAD F1 and EM, so none is "
        "valid under the contest rule and none is chosen (highest score: b, 0.7000)",
        "verdicts": {
            "a": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90",
            "b": "failed retention: F1 1.00 vs base 2.00 = 0.500 < 0.90",
        },
    }


def test_choose_checkpoint_when_retention_is_unknown():
    unknown = rules.choose_checkpoint([cand("a", 1, 0.5, 0.2, None), cand("b", 2, 0.4, 0.1, None)])
    assert (unknown["model"], unknown["step"], unknown["valid"], unknown["rule"]) == (
        "a",
        1,
        None,
        "score (retention not measured)",
    )
    assert unknown["reason"] == (
        "highest stage score (0.5000, strict accuracy 0.200); SQuAD retention was not "
        "measured (eval.squad_file), so validity under the contest rule is unknown"
    )
    mixed = rules.choose_checkpoint(
        [cand("a", 1, 0.5, 0.2, True), cand("b", 2, 0.6, 0.3, None), cand("c", 3, 0.9, 0.3, False)]
    )
    assert (mixed["model"], mixed["valid"], mixed["rule"]) == (
        "b",
        None,
        "score among checkpoints not failing retention",
    )
    assert mixed["reason"] == (
        "highest stage score (0.6000, strict accuracy 0.300) among the 2 of 3 checkpoints not "
        "known to fail retention; retention is unknown for b"
    )
    two = rules.choose_checkpoint(
        [cand("a", 1, 0.5, 0.2, True), cand("b", 2, 0.6, 0.3, None), cand("c", 3, 0.4, 0.1, None)]
    )
    assert two["reason"].endswith(
        "among the 3 of 3 checkpoints not known to fail retention; retention is unknown for b, c"
    )
    partly = rules.choose_checkpoint([cand("a", 1, 0.7, 0.2, True), cand("b", 2, 0.6, 0.3, None)])
    assert (partly["model"], partly["valid"]) == ("a", True)
    assert partly["reason"].endswith("retention is unknown for b")


# ---- the MCQ prompt (scoring.py), to the byte ---------------------------------------------------

EN_ROW = {"id": "q1", "question": " What is 2+2? ", "choices": ["3", "4", "5", "6"], "subject": "high_school_math"}
EN_PROMPT = (
    "Here is a question about high school math, the correct answer is one of the options A/B/C/D. "
    "Please select the correct option and answer the question with 'The right option is'.\n"
    "Question: What is 2+2? \nA.3\nB.4\nC.5\nD.6"
)


def test_mcq_prompt_to_the_byte():

    assert mcq_prompt(EN_ROW) == mcq_prompt(EN_ROW, "en") == mcq_prompt(EN_ROW, "contest") == EN_PROMPT
    no_subject = {k: v for k, v in EN_ROW.items() if k != "subject"}
    assert mcq_prompt(no_subject).startswith("Here is a question about general knowledge, the correct")
    zh = {"question": "一加一等于几？", "choices": ["1", "2", "3", "4"], "subject": "math"}
    assert mcq_prompt(zh) == (
        "以下是关于math的单项选择题，正确答案是 A/B/C/D 中的一个。"
        "请选出正确选项，并以“The right option is”作答。\n"
        "问题：一加一等于几？ \nA.1\nB.2\nC.3\nD.4"
    )
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
    assert mcq_language({"question": "Which?", "choices": ["a", "b", "中", "d"]}) == "zh"  # a choice decides too
    assert mcq_language({"choices": ["\u3400"]}) == "zh" and mcq_language({"question": "\u9fff"}) == "zh"
    assert mcq_language({"question": "\u4dbf"}) == "zh"
    assert mcq_language({"question": "\u3042 (hiragana)", "choices": []}) == "en"  # not CJK ideographs
    assert mcq_language({}) == "en"


# ---- tunebox/contest/mathgen.py: each maker's draws and text, with a scripted random source ----------------
# A generated row's wording and ranges are the contest's (mathgen's docstring); random-seed tests cannot see a
# range that is one wider or a draw that is swapped, so here every draw is scripted and its bounds recorded.


class ScriptedRng:
    """Stands in for random.Random: returns the scripted values in order, records each call's bounds."""

    def __init__(self, *values):
        self.values, self.calls = list(values), []

    def randint(self, lo, hi):
        self.calls.append(("randint", lo, hi))
        value = self.values.pop(0)
        assert lo <= value <= hi, (value, lo, hi)
        return value

    def choice(self, seq):
        self.calls.append(("choice", tuple(seq)))
        value = self.values.pop(0)
        assert value in seq
        return value

    def randrange(self, n):
        self.calls.append(("randrange", n))
        return self.values.pop(0)


CENTS = ("randint", -1_000_000, 1_000_000)


@pytest.mark.parametrize(
    "family, op, want",
    [
        # 12.50 and -3.25, by hand: the sum keeps two decimals, the product four, the quotient 50/13 to 28 digits
        ("add", "+", "9.25"),
        ("sub", "-", "15.75"),
        ("mul", "*", "-40.6250"),
        ("div", "/", "-3.846153846153846153846153846"),
    ],
)
def test_arithmetic_maker_draws_and_writes(family, op, want):
    """Mutants: _arith_maker's bounds (+-1,000,000 cents), its wording, the operand order."""
    rng = ScriptedRng(1250, -325)
    assert mathgen.make(family, rng) == (f"计算 12.50 {op} -3.25 等于多少？", f"12.50 {op} -3.25 = {want}")
    assert rng.calls == [CENTS, CENTS] and not rng.values


def test_division_by_zero_is_drawn_again():
    """Mutant: _arith_solution's zero-divisor guard dropped or inverted (a 0.00 divisor must be redrawn)."""
    rng = ScriptedRng(100, 0, 100, 400)
    assert mathgen.make("div", rng) == ("计算 1.00 / 4.00 等于多少？", "1.00 / 4.00 = 0.25")
    assert rng.calls == [CENTS] * 4
    assert mathgen.make("add", ScriptedRng(100, 0)) == ("计算 1.00 + 0.00 等于多少？", "1.00 + 0.00 = 1.00")


def test_power_maker_and_its_zero_to_the_zero():
    """Mutants: make_power's bounds (+-100,000 cents, exponent 0..5) and its 0^0 guard."""
    rng = ScriptedRng(-150, 3)
    assert mathgen.make("power", rng) == ("计算 -1.50 的 3 次方？", "-1.50^3 = -3.375000")
    assert rng.calls == [("randint", -100_000, 100_000), ("randint", 0, 5)]
    assert mathgen.make("power", ScriptedRng(0, 0)) == ("计算 0.01 的 0 次方？", "0.01^0 = 1")
    assert mathgen.make("power", ScriptedRng(0, 2))[0] == "计算 0.00 的 2 次方？"
    assert mathgen.make("power", ScriptedRng(200, 0)) == ("计算 2.00 的 0 次方？", "2.00^0 = 1")
    assert mathgen.solve("计算 0.00 的 0 次方？") is None
    assert mathgen.solve("计算 0.00 的 2 次方？") is not None
    assert mathgen.solve("计算 2.00 的 0 次方？") == "2.00^0 = 1"


def test_sqrt_linear_and_function_makers():
    """Mutants: the bounds and wording of make_sqrt, make_linear_equation, make_function_value."""
    rng = ScriptedRng(400)
    assert mathgen.make("sqrt", rng) == ("计算 4.00 的平方根？", "√4.00 = 2.0")
    assert rng.calls == [("randint", 1, 1_000_000)]
    rng = ScriptedRng(-1, 4, 6)
    assert mathgen.make("linear_equation", rng) == ("解方程 -4x + 6 = 0", "方程的解为：1.5")
    assert rng.calls == [("choice", (-1, 1)), ("randint", 1, 100), ("randint", -100, 100)]
    # (7 - 1) / 2, c on the right kept
    assert mathgen.solve("解方程 2x + 1 = 7", "linear_equation") == "方程的解为：3.0"
    rng = ScriptedRng(150, 2, 3)
    assert mathgen.make("function_value", rng) == ("当 x = 1.50 时，求函数 y = 2x^3 的值", "函数的值为：6.750000")
    assert rng.calls == [("randint", 1, 1000), ("randint", 1, 100), ("randint", 1, 100)]
    assert mathgen.solve("当 x = 0.00 时，求函数 y = 2x^0 的值") is None
    assert mathgen.solve("当 x = 0.00 时，求函数 y = 2x^1 的值") == "函数的值为：0"
    assert mathgen.solve("当 x = 3 时，求函数 y = 2x^0 的值") == "函数的值为：2"


def test_word_problem_makers():
    """Mutants: the bounds and wording of the rectangle, sales, discount and average makers."""
    rng = ScriptedRng(7, 8)
    assert mathgen.make("rectangle_area", rng) == (
        "一个长方形的长为 7 厘米，宽为 8 厘米，请计算其面积。",
        "面积为 56 平方厘米",
    )
    assert rng.calls == [("randint", 1, 100)] * 2
    rng = ScriptedRng(80, 25)
    assert mathgen.make("sales_growth", rng) == (
        "去年销售额为 80 万元，今年销售额增加了 25%，请计算今年的销售额。",
        "100.0",
    )
    assert rng.calls == [("randint", 1, 100)] * 2
    rng = ScriptedRng(80, 60)
    assert mathgen.make("discount", rng) == ("商品原价为 80 元，打折后的价格为 60 元，请计算打折的折扣比例。", "25.0")
    assert rng.calls == [("randint", 2, 100), ("randint", 1, 79)]
    assert mathgen.solve("商品原价为 0 元，打折后的价格为 5 元，请计算打折的折扣比例。") is None
    assert mathgen.solve("商品原价为 8 元，打折后的价格为 6 元，请计算打折的折扣比例。") == "25.0"
    rng = ScriptedRng(3, 1, 2, 4)
    assert mathgen.make("average", rng) == ("求以下数据的平均值：[1, 2, 4]", "平均值为 2.3333333333333335")
    assert rng.calls == [("randint", 3, 10)] + [("randint", 1, 100)] * 3


def test_english_makers_by_hand():
    """Mutants: the English makers' bounds, the lcm's 'two different numbers' shift, each template's text."""
    rng = ScriptedRng(0, 6, 4)
    problem, solution = mathgen.make("english_word", rng)
    assert problem == "What is the least common multiple of $6$ and $4$?"
    assert solution == (
        "Since $\\gcd(6, 4) = 2$, we have $\\operatorname{lcm}(6, 4) = \\frac{6 \\cdot 4}{2} = \\boxed{12}$."
    )
    assert rng.calls == [("randrange", 7), ("randint", 2, 200), ("randint", 2, 199)]
    # b drawn equal to or above a moves up one, so the two numbers differ
    assert mathgen.make("english_word", ScriptedRng(0, 4, 4))[0] == "What is the least common multiple of $4$ and $5$?"
    assert mathgen.make("english_word", ScriptedRng(0, 4, 3))[0] == "What is the least common multiple of $4$ and $3$?"

    rng = ScriptedRng(1, "chess club", 5, 3)
    problem, solution = mathgen.make("english_word", rng)
    assert problem == (
        "A chess club has 5 members. In how many ways can it choose a president, a vice-president and "
        "a treasurer if no member can hold more than one office?"
    )
    assert solution == (
        "There are 5 choices for president, then 4 for vice-president and 3 for treasurer, so there "
        "are $5 \\times 4 \\times 3 = \\boxed{60}$ ways."
    )
    assert rng.calls[1:] == [("choice", mathgen._GROUPS), ("randint", 5, 300), ("randint", 2, 4)]
    assert mathgen.solve(problem) == solution
    problem, solution = mathgen.make("english_word", ScriptedRng(1, "club", 6, 2))
    assert problem == (
        "A club has 6 members. In how many ways can it choose a president and a secretary if no "
        "member can hold more than one office?"
    )
    assert solution == (
        "There are 6 choices for president, then 5 for secretary, so there are $6 \\times 5 = \\boxed{30}$ ways."
    )
    problem, solution = mathgen.make("english_word", ScriptedRng(1, "choir", 7, 4))
    assert solution == (
        "There are 7 choices for president, then 6 for vice-president, 5 for secretary and 4 for "
        "treasurer, so there are $7 \\times 6 \\times 5 \\times 4 = \\boxed{840}$ ways."
    )
    assert "choose a president, a vice-president, a secretary and a treasurer if" in problem

    rng = ScriptedRng(2, 3, 2)
    problem, solution = mathgen.make("english_word", rng)
    assert problem == (
        "We flip 3 fair coins. What is the probability that exactly 2 of them come up heads? "
        "Express your answer as a common fraction."
    )
    assert solution == (
        "There are $2^{3} = 8$ equally likely outcomes, and $\\binom{3}{2} = 3$ of them have exactly "
        "2 heads, so the probability is $\\frac{3}{8} = \\boxed{\\dfrac{3}{8}}$."
    )
    assert rng.calls[1:] == [("randint", 2, 30), ("randint", 1, 3)]

    rng = ScriptedRng(3, 2, 3, 5)
    problem, solution = mathgen.make("english_word", rng)
    assert problem == "What is the sum of the arithmetic sequence $2, 5, 8, \\ldots, 14$?"
    assert solution == (
        "The common difference is $3$, so the sequence has $\\frac{14 - 2}{3} + 1 = 5$ terms. "
        "Its sum is $\\frac{5 \\cdot (2 + 14)}{2} = \\boxed{40}$."
    )
    assert rng.calls[1:] == [("randint", 1, 100), ("randint", 2, 15), ("randint", 5, 60)]
    assert mathgen.solve(problem) == solution

    # c=2, a=5, x=3, b=0 redrawn, then b=-4: d = (5 - 2) * 3 - 4 = 5
    rng = ScriptedRng(4, 2, 5, 3, 0, -4)
    problem, solution = mathgen.make("english_word", rng)
    assert problem == "Solve for $x$: $5x - 4 = 2x + 5$."
    assert solution == (
        "Moving the $x$ terms to the left and the constants to the right gives "
        "$3x = 5 - (-4) = 9$, so $x = \\frac{9}{3} = \\boxed{3}$."
    )
    assert rng.calls[1:] == [
        ("randint", 1, 14),
        ("randint", 3, 15),
        ("randint", -20, 20),
        ("randint", -50, 50),
        ("randint", -50, 50),
    ]
    assert mathgen.solve(problem) == solution
    # d = 0 is redrawn too: c=1, a=2, x=1, b=-1 gives d = 0; then b=2 gives d = 3; 'x' alone when a - c = 1
    problem, solution = mathgen.make("english_word", ScriptedRng(4, 1, 2, 1, -1, 2))
    assert problem == "Solve for $x$: $2x + 2 = x + 3$."
    assert solution == (
        "Moving the $x$ terms to the left and the constants to the right gives "
        "$x = 3 - 2 = 1$, so $x = \\frac{1}{1} = \\boxed{1}$."
    )
    assert mathgen.solve(problem) == solution

    rng = ScriptedRng(5, 5, 2, "tent")
    problem, solution = mathgen.make("english_word", rng)
    # 25% off 40 dollars: 40 * 75 // 100 = 30
    assert problem == "After a $25\\%$ discount, a tent costs $\\$30$. What was its original price, in dollars?"
    assert solution == (
        "If the original price is $x$ dollars, then $\\frac{75}{100}x = 30$, so "
        "$x = \\frac{100 \\cdot 30}{75} = \\boxed{40}$."
    )
    assert rng.calls[1:] == [("randint", 1, 12), ("randint", 1, 100), ("choice", mathgen._ITEMS)]
    assert mathgen.solve(problem) == solution

    rng = ScriptedRng(6, 2, 50, 3)
    problem, solution = mathgen.make("english_word", rng)
    assert problem == "How many positive integers less than or equal to $50$ are divisible by $2$ or $3$?"
    assert solution == (
        "There are $\\lfloor 50/2 \\rfloor = 25$ multiples of $2$ and $\\lfloor 50/3 \\rfloor = 16$ "
        "multiples of $3$. The numbers divisible by both are the multiples of "
        "$\\operatorname{lcm}(2, 3) = 6$, and there are $\\lfloor 50/6 \\rfloor = 8$ of them. "
        "By inclusion-exclusion the count is $25 + 16 - 8 = \\boxed{33}$."
    )
    assert rng.calls[1:] == [("randint", 2, 11), ("randint", 50, 5000), ("randint", 3, 12)]
    assert mathgen.solve(problem) == solution


# ---- tunebox/contest/scoring.py: what `invoke test.mutants` found unpinned ------------------------------------


def test_answer_verdict_every_field_by_hand():
    """Mutants: answer_verdict's keys renamed, strict/tolerant/extracted replaced by None, the mcq letter compared
    with != or never extracted."""
    # the tuned model's first answer is 7; the next problem it starts writing is cut off (trim_generation)
    assert scoring.answer_verdict("math", "3 + 4 = 7\n计算 1 + 1 等于多少？ 2", "7") == {
        "strict": True,
        "tolerant": True,
        "extracted": "7",
        "within_1pct": True,
        "leading_digits": 1,
    }
    # 7.0000001 vs 7: off by 1e-7 / 7 < 1e-6, so tolerant only; 7 has one significant digit, and it is right
    assert scoring.answer_verdict("math", "7.0000001", "7") == {
        "strict": False,
        "tolerant": True,
        "extracted": "7.0000001",
        "within_1pct": True,
        "leading_digits": 1,
    }
    assert scoring.answer_verdict("math", "no idea", "7") == {
        "strict": False,
        "tolerant": False,
        "extracted": "",
        "within_1pct": False,
        "leading_digits": 0,
    }
    assert scoring.answer_verdict("mcq", "The right option is C.", "C") == {
        "strict": True,
        "tolerant": True,
        "extracted": "C",
        "within_1pct": True,
        "leading_digits": None,
    }
    assert scoring.answer_verdict("mcq", "The right option is B.", "C") == {
        "strict": False,
        "tolerant": False,
        "extracted": "B",
        "within_1pct": False,
        "leading_digits": None,
    }


def test_trim_generation_keeps_leading_space_and_drops_trailing():
    """Mutants: trim_generation's rstrip -> lstrip, at the cut before a new problem and at the end."""
    assert scoring.trim_generation(" 3 + 4 = 7  \n计算 2 + 2 等于多少？") == " 3 + 4 = 7"
    assert scoring.trim_generation(" 7 \n") == " 7"


def test_closeness_reads_the_order_of_magnitude():
    """Mutants: _significant_digits' exponent of a value >= 1 forced to 0 (`and False`) or one short (`- 2`):
    a prediction ten times too small shares no leading digit with the reference."""
    assert scoring.closeness("123.4", "1234")["leading_digits"] == 0
    assert scoring.closeness("0.5", "5")["leading_digits"] == 0
    assert scoring.closeness("1235", "1234")["leading_digits"] == 3


def test_closeness_below_one():
    """Mutants: _significant_digits' search for the exponent of a value below 1: 10 -> 11 (0.091 x 11 >= 1),
    `< 1` -> `<= 1` (0.1 read as 0.01), and `value / 10**-e` or `10**+e` (the loop never ends: a timeout)."""
    assert scoring.closeness("0.0909", "0.091")["leading_digits"] == 1
    assert scoring.closeness("0.1", "0.15")["leading_digits"] == 1
    assert scoring.closeness("0.05", "0.5")["leading_digits"] == 0
    assert scoring.closeness("0.124", "0.123")["leading_digits"] == 2


def test_article_a_after_a_sentence_end_and_quotes():
    """Mutants: _is_article's `or` -> `and` (B before a lower-case word read as an article), its rstrip of quotes
    dropped (rstrip(None), lstrip), extra characters stripped or counted as a sentence end ('XX...XX'), and the
    character before the letter read at [+1] or [-2]."""
    assert scoring.extract_choice_letter("Hmm. B is correct") == "B"
    # 'A lot' opens a quoted sentence: the article; C is the one option named
    assert scoring.extract_choice_letter('Note. "A lot of it fits C') == "C"
    # after 'X' (no sentence end) 'A' is a letter too: A and C, so no single answer
    assert scoring.extract_choice_letter("Done.X A lot fits C") is None


def test_closeness_edges_every_field():
    """Mutants: closeness' no-number guard with `and` for `or`, its keys renamed, a zero reference's digit count
    (`pv != 0`, `pv == 1`), `pv != 0` -> `pv != 1` before the digit count, a Fraction reference counted as a
    written decimal (`or True`) or given 18 digits instead of 17."""
    none = {"within_1pct": False, "leading_digits": 0, "relative_error": None}
    assert scoring.closeness("5", "\\boxed{\\sqrt{3}}") == none
    assert scoring.closeness("\\boxed{\\sqrt{3}}", "5") == none
    assert scoring.closeness("no number", "5") == none
    assert scoring.closeness("0", "0") == {"within_1pct": True, "leading_digits": 1, "relative_error": None}
    assert scoring.closeness("1", "0") == {"within_1pct": False, "leading_digits": 0, "relative_error": None}
    assert scoring.closeness("1", "1.5")["leading_digits"] == 1  # 1.0 against 1.5: the 1
    # 1/3 is exact, so it has 17 digits to get right: six 3s get six, twenty 3s get all 17
    assert scoring.closeness("0.333333", "\\frac{1}{3}")["leading_digits"] == 6
    assert scoring.closeness("0." + "3" * 20, "\\frac{1}{3}")["leading_digits"] == 17
    assert scoring.closeness("7", "7")["leading_digits"] == 1


def test_shown_precision_boundaries():
    """Mutants: _within_shown_precision's `pred.shown_exponent is None` -> `is not None` (a fraction prediction),
    the half unit of 10**e -> 11**e, `<=` -> `<` at exactly half a unit."""
    # 0.33 prints two decimals: anything within 0.005 that prints more agrees with it
    assert scoring.numbers_equal("0.335", "0.33", "tolerant")  # exactly half a unit
    assert scoring.numbers_equal("0.3349", "0.33", "tolerant")
    assert not scoring.numbers_equal("0.3351", "0.33", "tolerant")
    assert scoring.numbers_equal("\\frac{1}{3}", "0.33", "tolerant")  # 1/3 - 0.33 = 0.00333...
    assert not scoring.numbers_equal("\\frac{1}{3}", "0.33", "strict")


def test_mcq_reference_output_refuses_two_letters():
    """Mutants: mcq_reference_output's `or` -> `and` ('AB' is in 'ABCD'), its message replaced by None."""
    assert scoring.mcq_reference_output(" c ") == "The right option is C."
    for bad in ("AB", "", "E"):
        with pytest.raises(ValueError, match=rf"^answer must be one of A/B/C/D, got {bad!r}$"):
            scoring.mcq_reference_output(bad)


def test_choice_letter_rules_in_order():
    """Mutants: extract_choice_letter's article check with `or` for `and` (a lone 'a' answer skipped), `continue`
    -> `break` (an article 'a' ends the phrase rule), the parenthesized and 'option X' rules removed (m = None);
    squad_answer_from_generation's split -> rsplit (the last line, not the first)."""
    assert scoring.extract_choice_letter("the answer is a.") == "A"
    assert scoring.extract_choice_letter("the answer is a bit unclear, the answer is b") == "B"
    assert scoring.extract_choice_letter("I pick (D) over B") == "D"
    assert scoring.extract_choice_letter("I think option c") == "C"
    assert scoring.squad_answer_from_generation("  Paris \nThe end\nmore") == "Paris"


def test_squad_scores_refusals_and_percent_readings():
    """Mutants: squad_scores' three messages replaced or re-cased, its gold-list check with `and` for `or` (a bare
    string accepted); _readings reading a number without % also as over 100 (`or True`)."""
    with pytest.raises(ValueError, match=r"^1 predictions for 2 questions; they must pair up$"):
        scoring.squad_scores(["x"], [["x"], ["y"]])
    with pytest.raises(ValueError, match=r"^no predictions: SQuAD scores of an empty set are undefined$"):
        scoring.squad_scores([], [])
    with pytest.raises(ValueError, match=r"^question 0: gold answers must be a non-empty list of strings, got 'x'$"):
        scoring.squad_scores(["x"], ["x"])
    with pytest.raises(ValueError, match=r"^question 1: gold answers must be a non-empty list of strings, got \[\]$"):
        scoring.squad_scores(["x", "y"], [["x"], []])
    assert not scoring.numbers_equal("25", "0.25", "tolerant")  # no % sign: 25 is only 25
    assert scoring.numbers_equal("25%", "0.25", "tolerant")


def test_score_math_non_numeric_and_refusals():
    """Mutants: score_math's non-numeric comparison with `or` (any boxed text equal, or no answer crashing), its
    empty pred text 'XXXX', its message cut at 121 characters or replaced; math_accuracy's message."""
    assert scoring.score_math("", "\\boxed{\\sqrt{3}}") == {
        "strict": False,
        "tolerant": False,
        "pred": "",
        "ref": "\\sqrt{3}",
    }
    assert scoring.score_math("so \\boxed{\\sqrt{2}}", "\\boxed{\\sqrt{3}}")["strict"] is False
    assert scoring.score_math("so \\boxed{\\sqrt 3}", "\\boxed{\\sqrt{3}}")["strict"] is True
    assert scoring.score_math("no idea", "7") == {"strict": False, "tolerant": False, "pred": "", "ref": "7"}
    with pytest.raises(ValueError) as exc:
        scoring.score_math("7", "x" * 130)
    assert str(exc.value) == "reference solution has no answer to compare with: '" + "x" * 120 + "'"
    with pytest.raises(ValueError, match=r"^no scored answers: accuracy of an empty set is undefined$"):
        scoring.math_accuracy([])


def test_latex_answer_text_and_other_family():
    """Mutants: normalize_latex_answer's space removal ('XX\\s+XX', spaces -> 'XXXX') and trailing punctuation
    (rstrip(None)); math_family's 'other' renamed or never given (`and False`)."""
    assert scoring.normalize_latex_answer("\\left( 1, 2 \\right).") == "(1,2)"
    assert scoring.normalize_latex_answer("\\sqrt 3;") == "\\sqrt{3}"
    assert scoring.math_family("请解释一下这个问题") == "other"
    assert scoring.math_family("Explain why.") == "english_competition"


def test_boxed_fragment_takes_the_last_equals_and_unit_powers():
    """Mutants: _answer_in_fragment's rsplit('=', 1)[1] as rsplit(None, 1), rsplit('='), split('=', 1) or
    rsplit('=', 2); its unit-exponent strip lower-case only ('[a-za-z]')."""
    from decimal import Decimal

    assert scoring.extract_answer("so \\boxed{a=b=5 cm}").value == Decimal(5)
    assert scoring.extract_answer("so \\boxed{10 M^2}").value == Decimal(10)


def test_numbers_equal_non_numeric_sides_and_mode_message():
    """Mutants: numbers_equal's no-number guard with `and` for `or` (a non-numeric side reaching Fraction(None)),
    its mode message replaced by None."""
    assert not scoring.numbers_equal("\\boxed{\\sqrt{3}}", "5", "tolerant")
    assert not scoring.numbers_equal("5", "\\boxed{\\sqrt 3}", "tolerant")
    with pytest.raises(ValueError, match=r"^mode must be 'strict' or 'tolerant', not 'loose'$"):
        scoring.numbers_equal("5", "5", "loose")


def test_numbers_given_as_values():
    """Mutants: _as_answer's bool and non-finite refusals (messages, `or` -> `and`, `==`, `not in`, the inf
    literals), a float read as Decimal(None) or its binary expansion instead of its repr, an int lost, and the
    shown exponent of a given Decimal dropped (2.43 then no longer agrees with 2.4 to its shown precision)."""
    from decimal import Decimal
    from fractions import Fraction

    with pytest.raises(TypeError, match=r"^a bool is not a number to compare$"):
        scoring.numbers_equal(True, "1")
    for bad, text in ((float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")):
        with pytest.raises(ValueError, match=rf"^{text} is not a finite number$"):
            scoring.numbers_equal(bad, "1")
    assert scoring.numbers_equal(0.1, "0.1") and scoring.numbers_equal(2.5, "2.5")
    assert scoring.numbers_equal(2, "2.0") and not scoring.numbers_equal(2, "3")
    assert scoring.numbers_equal(Fraction(1, 4), "0.25")
    assert scoring.numbers_equal("2.43", Decimal("2.4"), "tolerant")  # within 0.05 of what 2.4 shows
    assert scoring.numbers_equal("2.43", 2.4, "tolerant")
    assert not scoring.numbers_equal("2.43", Decimal("2.4"), "strict")
    with pytest.raises(TypeError, match=r"^cannot compare a list as a number$"):
        scoring.numbers_equal([1], "1")


def test_extract_answer_names_its_rule():
    """Mutants: ExtractedAnswer.from_token's rule=None; _segment_after searching for the sentence end from the
    start of the text (a marker on a second line finds an empty segment); _CONTINUES_EXPRESSION matched at the
    segment's start instead of after the number ('x = 5 + 1' then reads 5)."""
    from decimal import Decimal

    assert scoring.extract_answer("so \\boxed{5}").rule == "boxed"
    answer = scoring.extract_answer("First line.\nThe answer is 7")
    assert (answer.value, answer.rule) == (Decimal(7), "marker")
    assert scoring.extract_answer("so x = 5").rule == "equals"
    answer = scoring.extract_answer("x = 5 + 1")  # 5 + 1 is an expression: the last number
    assert (answer.value, answer.rule) == (Decimal(1), "last_number")


def test_normalize_math_text_superscripts_latex_thousands_and_text():
    """Mutants: normalize_math_text's superscript run replaced by None / 'XX^XX' / joined with 'XXXX'; the LaTeX
    thousands separator '\\,' never matched or replaced by 'XX,XX'; \\text{..}'s content wrapped in 'XX'."""
    assert scoring.normalize_math_text("x² = 10⁻⁵") == "x^2 = 10^-5"
    from decimal import Decimal

    assert scoring.extract_answer("so \\boxed{1\\,234}").value == Decimal(1234)
    assert scoring.extract_answer("so \\boxed{1\\!234}").value == Decimal(1234)
    assert scoring.normalize_math_text("5\\text{ cm}") == "5  cm "


def test_normalize_math_text_degrees_and_dollars():
    """Mutants: normalize_math_text's degree marks replaced by 'XXXX' instead of removed; '\\$' and '$' replaced by
    'XX XX' or never."""
    assert scoring.normalize_math_text("180°") == "180"
    assert scoring.normalize_math_text("90^{\\circ}") == "90"
    assert scoring.normalize_math_text("\\$5") == " 5"
    assert scoring.normalize_math_text("$5$") == " 5 "


def test_negative_mixed_number():
    """Mutants: _token_from_match's mixed-number sign ('XX-XX', value None, +value)."""
    from fractions import Fraction

    assert scoring.extract_answer("so \\boxed{-2\\frac{1}{2}}").value == Fraction(-5, 2)
    assert scoring.extract_answer("so \\boxed{2\\frac{1}{2}}").value == Fraction(5, 2)


def test_short_and_whole_fractions():
    """Mutants: _token_from_match's one-digit \\frac12 groups renamed (fnum1, fden1), `den == 0` -> `den == 1`."""
    from fractions import Fraction

    assert scoring.extract_answer("so \\boxed{\\frac12}").value == Fraction(1, 2)
    assert scoring.extract_answer("so \\boxed{\\frac{3}{1}}").value == 3
    assert scoring.extract_answer("so \\boxed{\\frac{3}{0}}").value is None


def test_slash_fractions_and_a_trailing_point():
    """Mutants: _token_from_match's a/b form `den == 0` -> `den == 1`, its sign ('XX-XX', None, +value); a number
    written '12.' losing its body (None)."""
    from fractions import Fraction

    assert scoring.extract_answer("so -3/4").value == Fraction(-3, 4)
    assert scoring.extract_answer("so 3/1").value == 3
    assert scoring.extract_answer("it is 12. ").value == 12


def test_tolerance_boundaries_and_a_trailing_x():
    """Mutants: numbers_equal's relative tolerance `rv != 0` -> `rv != 1` and `<=` -> `<` (exactly 1e-6 of the
    reference); closeness' 1% band `<=` -> `<` (exactly 1%); normalize_latex_answer stripping 'X' too."""
    assert scoring.numbers_equal("1.000001", "1", "tolerant")  # off by exactly 1e-6 x 1
    assert not scoring.numbers_equal("1.0000011", "1", "tolerant")
    assert scoring.closeness("101", "100")["within_1pct"] is True  # off by exactly 1%
    assert scoring.closeness("101.1", "100")["within_1pct"] is False
    assert scoring.normalize_latex_answer("X") == "X"


# ---- survivors of the i24m contest runs (2026-12-05/06), scoring.py's answer rules -------------------------


def test_extract_answer_edges():
    """Each value by the rules in extract_answer's docstring. Mutants:
    tunebox.contest.scoring.x_extract_answer__mutmut_1 (None text: `or` -> `and` reads None.strip()), _19, _24,
    _25 (a non-numeric boxed answer's rule), _36 ("X" added to the stripped marker punctuation: "X5" is no number,
    the lookbehind refuses a letter before a digit), _41 (require_clean_end=None: "= 7 \\cdot 1" taken as 7), _44
    (split on spaces: "apples" after "= 5"), _47, _48, _50 (the first or middle "=" of "a = 1 + 1 = 2")."""
    from decimal import Decimal

    assert scoring.extract_answer(None) is None
    boxed = scoring.extract_answer(r"\boxed{\sqrt{3}}")
    assert (boxed.value, boxed.rule) == (None, "boxed")
    assert scoring.extract_answer("The answer is X5") is None
    # '= v' wins only when v is a plain value: 7 \cdot 1 is not, so the marker's first number
    third = scoring.extract_answer(r"答案：3 + 4 = 7 \cdot 1")
    assert (third.value, third.rule) == (Decimal(3), "marker")
    assert scoring.extract_answer("答案：2 + 3 = 5 apples").value == Decimal(5)
    last = scoring.extract_answer("答案：a = 1 + 1 = 2")
    assert (last.value, last.rule) == (Decimal(2), "marker")


def test_find_numbers_normalizes_unless_told():
    """U+2212 minus is a sign once normalized. Mutants: x_find_numbers__mutmut_1 (normalized=True by default),
    _2 (`not normalized` inverted), _3, _4 (the text dropped)."""
    from decimal import Decimal

    assert [t.value for t in scoring.find_numbers("\u22125")] == [Decimal(-5)]
    assert [t.value for t in scoring.find_numbers("\u22125", normalized=True)] == [Decimal(5)]


def test_a_decimal_infinity_given_directly():
    """An infinite Decimal has no shown exponent (its exponent is 'F', not an int). Mutant:
    x__as_answer__mutmut_35 (`isinstance(exponent, int) or True`: int('F') raises)."""
    from decimal import Decimal

    got = scoring._as_answer(Decimal("Infinity"))
    assert (got.value, got.rule, got.shown_exponent) == (Decimal("Infinity"), "value", None)


def test_fullwidth_forms_at_the_ends_of_the_block():
    """U+FF01 (！) and U+FF5E (～), the first and last full-width forms, become "!" and "~"; U+FF5F (｟), just past
    the block, stays; the ideographic space becomes one space; the full-width comma ", ". Mutants:
    tunebox.contest.scoring.x__fullwidth_to_ascii__mutmut_9, _10 (the block starting at U+FF02), _11, _12 (ending
    at U+FF5D or U+FF5F), _18, _19, _20 (the ideographic space)."""
    assert scoring._fullwidth_to_ascii("\uff01\uff5e\uff5f\u3000\uff0c") == "!~\uff5f , "


def test_a_marker_value_after_words():
    """ "答案是 about 5": after a marker the first number counts even with words before it (rule "marker", not
    "last_number"). Mutant: x_extract_answer__mutmut_65 (require_clean_end=True there)."""
    got = scoring.extract_answer("答案是 about 5")
    assert (str(got.value), got.rule) == ("5", "marker")
