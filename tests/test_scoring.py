"""Scoring against the real contest samples: every reference answer parses to the number it
prints, hand-made model outputs score right and wrong as they should, SQuAD F1/EM match
hand-computed values, and every contest MCQ reference yields its letter. The ratio, scores and
retention are tests/test_contest.py."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import pytest

from tunebox.contest.scoring import (
    MATH_FAMILIES,
    answer_verdict,
    closeness,
    extract_answer,
    extract_answer_number,
    extract_choice_letter,
    math_accuracy,
    math_family,
    mcq_language,
    mcq_prompt,
    mcq_reference_output,
    numbers_equal,
    score_math,
    squad_answer_from_generation,
    squad_exact_match,
    squad_f1,
    squad_prompt,
    squad_scores,
    trim_generation,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MATH_SAMPLE = DATA / "math" / "contest-sample.jsonl"
SQUAD_SAMPLE = DATA / "squad" / "dev-subset.jsonl"
MCQ_DIR = DATA / "mcq"


def read_jsonl(path: Path) -> list[dict]:
    # split("\n"), not splitlines(): question texts contain U+2028 and other breaks JSON allows raw.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


@pytest.fixture(scope="module")
def math_rows() -> list[dict]:
    return read_jsonl(MATH_SAMPLE)


# ---------------------------------------------------------------------------------------------
# Math: the reference solutions
# ---------------------------------------------------------------------------------------------

# How each template family prints its answer, written independently of scoring.py's rules:
# a regex over the whole solution whose group 1 is the answer.
_V = r"(-?\d+(?:\.\d+)?(?:E[-+]\d+)?)"
PRINTED_ANSWER = {
    "add": rf"-?[\d.]+ \+ -?[\d.]+ = {_V}",
    "sub": rf"-?[\d.]+ - -?[\d.]+ = {_V}",
    "mul": rf"-?[\d.]+ \* -?[\d.]+ = {_V}",
    "div": rf"-?[\d.]+ / -?[\d.]+ = {_V}",
    "power": rf"-?[\d.]+\^\d+ = {_V}",
    "sqrt": rf"√[\d.]+ = {_V}",
    "linear_equation": rf"方程的解为：{_V}",
    "function_value": rf"函数的值为：{_V}",
    "rectangle_area": rf"面积为 {_V} 平方厘米",
    "average": rf"平均值为 {_V}",
    "discount": _V,
    "sales_growth": _V,
}


def boxed_content(solution: str) -> str:
    """The last \\boxed{...} of a competition solution, braces balanced (test-side parser)."""
    start = solution.rindex("\\boxed{") + len("\\boxed{")
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(solution[i], 0)
        i += 1
    return solution[start : i - 1]


def expected_competition_answer(content: str):
    """A number for the boxed forms that are plainly one number; None for anything else."""
    content = content.strip().rstrip(".")
    if m := re.fullmatch(r"(-?\d+)(?:\^\\circ)?", content):
        return Decimal(m.group(1))
    if m := re.fullmatch(r"(-?)\\d?frac\{(\d+)\}\{(\d+)\}", content):
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) else value
    return None


def test_every_family_is_found_in_the_sample(math_rows):
    families = {math_family(row["problem"]) for row in math_rows}
    assert families == set(MATH_FAMILIES) - {"other"}, "a family vanished or a problem fell into 'other'"


def test_every_reference_solution_extracts_to_the_number_it_prints(math_rows):
    failures = []
    non_numeric = []
    for line, row in enumerate(math_rows, start=1):
        family = math_family(row["problem"])
        got = extract_answer_number(row["solution"])
        if family == "english_competition":
            expected = expected_competition_answer(boxed_content(row["solution"]))
            if expected is None:
                non_numeric.append(line)
                answer = extract_answer(row["solution"])
                if answer is None or answer.value is not None or not answer.text:
                    failures.append((line, family, row["solution"][-80:], answer))
                continue
        else:
            m = re.fullmatch(PRINTED_ANSWER[family], row["solution"].strip())
            assert m, f"line {line}: the {family} solution is not in its template: {row['solution']!r}"
            expected = Decimal(m.group(1))
        if got is None or Fraction(got) != Fraction(expected):
            failures.append((line, family, row["solution"][-80:], got))
    assert failures == []
    # The sample's competition set has non-numeric answers (\sqrt{3}, a point); they exist and
    # are carried as text rather than as a wrong number.
    assert non_numeric


def test_each_reference_scores_correct_against_itself(math_rows):
    scores = [score_math(row["solution"], row["solution"]) for row in math_rows]
    assert math_accuracy(scores) == {"strict": 1.0, "tolerant": 1.0, "n": len(math_rows)}


def exact_value(problem: str, family: str):
    """The true answer of a template problem, computed with 60 significant digits."""
    nums = [Decimal(x) for x in re.findall(r"-?\d+(?:\.\d+)?", problem)]
    if family == "add":
        return nums[0] + nums[1]
    if family == "sub":
        return nums[0] - nums[1]
    if family == "mul":
        return nums[0] * nums[1]
    if family == "div":
        return nums[0] / nums[1]
    if family == "power":
        return nums[0] ** int(nums[1])
    if family == "sqrt":
        return nums[0].sqrt()
    if family == "linear_equation":
        return -nums[1] / nums[0]
    if family == "function_value":  # 当 x = v 时，求函数 y = ax^n 的值
        x, a, n = nums[0], nums[1], int(nums[2])
        return a * x**n
    if family == "rectangle_area":
        return nums[0] * nums[1]
    if family == "average":
        return sum(nums) / len(nums)
    if family == "discount":  # (原价 - 折后) / 原价, in percent
        return (nums[0] - nums[1]) / nums[0] * 100
    if family == "sales_growth":
        return nums[0] * (1 + nums[1] / 100)
    raise AssertionError(family)


def test_a_perfect_calculator_is_tolerant_correct_on_every_template_row(math_rows):
    """The tolerant reading credits the true value on every row, while strict does not (28-digit
    Decimal and float64 references are rounded): that is the case for a tolerance."""
    strict_misses = {}
    failures = []
    with localcontext() as ctx:
        ctx.prec = 60
        for line, row in enumerate(math_rows, start=1):
            family = math_family(row["problem"])
            if family == "english_competition":
                continue
            truth = exact_value(row["problem"], family)
            if not numbers_equal(truth, row["solution"], "tolerant"):
                failures.append((line, family, row["solution"], truth))
            if not numbers_equal(truth, row["solution"], "strict"):
                strict_misses[family] = strict_misses.get(family, 0) + 1
    assert failures == []
    # Sums, differences, products, powers, areas and sales figures are printed exactly ...
    for family in ("add", "sub", "mul", "power", "rectangle_area", "sales_growth"):
        assert family not in strict_misses, f"{family}: exact references should be strict-equal to the truth"
    # ... square roots and quotients are rounded, so strict rejects the true value there.
    assert strict_misses.get("sqrt") and strict_misses.get("div")


def test_float64_square_roots_pass_tolerant_but_not_strict(math_rows):
    rows = [row for row in math_rows if math_family(row["problem"]) == "sqrt"]
    assert rows
    for row in rows:
        radicand = float(re.search(r"计算 (-?[\d.]+) 的平方根", row["problem"]).group(1))
        model_output = f"√{radicand} = {math.sqrt(radicand)!r}"
        result = score_math(model_output, row["solution"])
        assert result["tolerant"], (model_output, row["solution"])
        assert not result["strict"], (model_output, row["solution"])


# ---------------------------------------------------------------------------------------------
# Math: model outputs
# ---------------------------------------------------------------------------------------------

MODEL_OUTPUTS = [
    # (model output, reference solution, strict, tolerant)
    ("-3828.45 - 756.08 = -4584.53", "-3828.45 - 756.08 = -4584.53", True, True),
    ("计算 -3828.45 - 756.08 等于多少？\n-3828.45 - 756.08 = -4584.53", "-3828.45 - 756.08 = -4584.53", True, True),
    ("-3828.45 - 756.08 = -4584.54", "-3828.45 - 756.08 = -4584.53", False, False),
    ("结果是 −4584.53。", "-3828.45 - 756.08 = -4584.53", True, True),  # unicode minus
    ("方程的解为：－１５", "方程的解为：-15.0", True, True),  # full-width
    ("解：x = -(-45)/(-3) = -15，所以方程的解为 -15。", "方程的解为：-15.0", True, True),
    ("方程的解为：-15.5", "方程的解为：-15.0", False, False),
    ("方程的解为 -15。验证：-3 × (-15) + (-45) = 0", "方程的解为：-15.0", True, True),  # marker beats a later '='
    ("The answer is 8, since 2 + 6 = 8 and 8 - 0 = 8.", "\\boxed{8}", True, True),
    ("答案：9195.58 + 8947.04 = 18142.62", "9195.58 + 8947.04 = 18142.62", True, True),
    ("面积为 348 平方厘米", "面积为 348 平方厘米", True, True),
    ("面积是348.0平方厘米。", "面积为 348 平方厘米", True, True),
    ("面积为 348.4 平方厘米", "面积为 348 平方厘米", False, False),
    ("The answer is 1,234.5 dollars.", "1234.5", True, True),  # thousands
    ("函数的值为：2.142161321654221440260136972 × 10^68", "函数的值为：2.142161321654221440260136972E+68", True, True),
    ("y ≈ 2.1421613e68", "函数的值为：2.142161321654221440260136972E+68", False, True),
    ("y ≈ 2.14e68", "函数的值为：2.142161321654221440260136972E+68", False, False),
    ("√5636.97 ≈ 75.0797576", "√5636.97 = 75.07975759151064280958687335", False, True),
    ("√5636.97 ≈ 75.08", "√5636.97 = 75.07975759151064280958687335", False, False),
    ("So the probability is $\\boxed{\\dfrac{1}{16}}$.", "... = $\\boxed{\\dfrac{1}{16}}$.", True, True),
    ("The probability is 0.0625", "... = $\\boxed{\\dfrac{1}{16}}$.", True, True),  # 1/16 exactly
    ("The probability is 1/16.", "... = $\\boxed{\\dfrac{1}{16}}$.", True, True),
    ("The probability is 0.06", "... = $\\boxed{\\dfrac{1}{16}}$.", False, False),
    ("\\boxed{180^\\circ} is the sum", "so $\\angle J + \\angle H = \\boxed{180^\\circ}$.", True, True),
    ("the minimum value is $\\boxed{\\sqrt3}$", "the minimum value is $\\boxed{\\sqrt{3}}.$", True, True),
    ("the minimum value is 1.732", "the minimum value is $\\boxed{\\sqrt{3}}.$", False, False),
    ("折扣比例为 -462.5%", "-462.5", True, True),  # written number
    ("打折比例是 25%", "0.25", False, True),  # percent reading
    ("今年的销售额为 99.5 万元", "99.5", True, True),
    ("我不知道", "99.5", False, False),
    ("", "99.5", False, False),
]


@pytest.mark.parametrize("output, reference, strict, tolerant", MODEL_OUTPUTS)
def test_model_outputs_score_as_expected(output, reference, strict, tolerant):
    result = score_math(output, reference)
    assert (result["strict"], result["tolerant"]) == (strict, tolerant), result


def test_numbers_equal_rules():
    assert numbers_equal("0.0", "0")
    assert numbers_equal("-0.0", "0")
    assert numbers_equal(Fraction(1, 4), "0.25")
    assert not numbers_equal("25%", "0.25")
    assert numbers_equal("25%", "0.25", "tolerant")
    assert numbers_equal("0.25", "\\boxed{25\\%}", "tolerant")
    # Shown precision: more digits that round to the printed reference count in tolerant mode.
    assert numbers_equal("2.44", "\\boxed{2.4}", "tolerant") and not numbers_equal("2.44", "\\boxed{2.4}")
    assert not numbers_equal("2.46", "\\boxed{2.4}", "tolerant")
    assert not numbers_equal("2.4", "\\boxed{2.44}", "tolerant")  # fewer digits than the reference
    # An integral float printed as X.0 is an exact integer, not a one-decimal rounding.
    assert not numbers_equal("135.04", "135.0", "tolerant")
    assert not numbers_equal("0.04", "方程的解为：0.0", "tolerant")
    assert not numbers_equal("1e-9", "0", "tolerant")
    assert not numbers_equal(None, "1") and not numbers_equal("no number here", "1", "tolerant")
    with pytest.raises(ValueError):
        numbers_equal("1", "1", mode="loose")


def test_number_forms():
    cases = {
        "答：１２３．５": Decimal("123.5"),
        "x = 2\\frac{1}{2}": Fraction(5, 2),
        "x = -\\frac{19}{7}": Fraction(-19, 7),
        "1{,}234{,}567": Decimal(1234567),
        "数据为 100，200，300": Decimal(300),  # a Chinese-comma list is not 100,200,300
        "about 3.0 \\times 10^{-5} m": Decimal("3.0E-5"),
        "1.5E-3": Decimal("0.0015"),
        "百分之二十五 or 百分之25": Decimal(25),
        "\\boxed{x = 5}": Decimal(5),
        "\\boxed{10 \\text{ cm}^2}": Decimal(10),
    }
    for text, expected in cases.items():
        assert Fraction(extract_answer_number(text)) == Fraction(expected), text
    assert extract_answer("百分之25").is_percent
    assert extract_answer_number("no digits at all") is None
    assert extract_answer("\\boxed{(1, 2)}").value is None


# ---------------------------------------------------------------------------------------------
# SQuAD
# ---------------------------------------------------------------------------------------------


def test_squad_normalization_and_exact_match():
    assert squad_exact_match("the Eiffel Tower", "Eiffel Tower")
    assert squad_exact_match("Denver Broncos.", "denver broncos")
    assert not squad_exact_match("Eiffel", "Eiffel Tower")
    assert squad_scores(["the Eiffel Tower"], [["Eiffel Tower"]]) == {"f1": 100.0, "em": 100.0}


def test_squad_f1_by_hand():
    # pred tokens: big red eiffel tower in paris (6); gold: eiffel tower paris (3); overlap 3
    # precision 1/2, recall 1 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert squad_f1("the big red Eiffel Tower in Paris", "Eiffel Tower, Paris") == pytest.approx(2 / 3)
    # bags, not sets: pred big big dog, gold big dog -> overlap 2, P 2/3, R 1 -> F1 0.8
    assert squad_f1("big big dog", "big dog") == pytest.approx(0.8)
    assert squad_f1("cat", "dog") == 0.0
    assert squad_f1("", "dog") == 0.0
    # max over golds, then mean over questions: q1 EM via 2nd gold; q2 F1 2/3, EM 0
    scores = squad_scores(
        ["two men", "the big red Eiffel Tower in Paris"], [["two", "two men"], ["Eiffel Tower, Paris", "Paris"]]
    )
    assert scores["em"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx((100 + 200 / 3) / 2)


def test_squad_on_the_real_dev_subset():
    rows = read_jsonl(SQUAD_SAMPLE)
    golds = [row["answers"] for row in rows]
    assert squad_scores([g[0] for g in golds], golds) == {"f1": 100.0, "em": 100.0}
    # Answering with only the first word of the first gold: every multi-word answer loses EM
    # and keeps a partial F1.
    first_words = [g[0].split()[0] for g in golds]
    partial = squad_scores(first_words, golds)
    assert 0 < partial["em"] < 100 and partial["em"] < partial["f1"] < 100
    prompt = squad_prompt(rows[0]["context"], rows[0]["question"])
    assert prompt.startswith(
        "Read the passage and answer the question below.\n\n### Instruction:\n" + rows[0]["context"]
    )
    assert prompt.endswith(f"### Input:\n{rows[0]['question']}\n\n### Response:")
    assert squad_answer_from_generation("  two men\nQuestion: next") == "two men"
    with pytest.raises(ValueError):
        squad_scores(["a"], [])
    with pytest.raises(ValueError):
        squad_scores(["a"], [[]])


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


def test_every_contest_reference_output_yields_its_letter():
    rows = read_jsonl(MCQ_DIR / "contest-mcq-sample.jsonl")
    assert len(rows) == 2000
    wrong = [
        (row["id"], row["reference_output"])
        for row in rows
        if extract_choice_letter(row["reference_output"]) != row["answer"]
    ]
    assert wrong == []


def test_contest_prompt_is_reproduced():
    rows = read_jsonl(MCQ_DIR / "contest-mcq-sample.jsonl")

    def squash(text: str) -> str:  # the sample's question/choice fields were stripped
        return "".join(text.split())

    assert [row["id"] for row in rows if squash(mcq_prompt(row, "contest")) != squash(row["prompt"])] == []
    for row in rows:
        assert mcq_reference_output(row["answer"]) == row["reference_output"]
    chinese = [row for row in rows if mcq_language(row) == "zh"]
    assert chinese and len(chinese) < len(rows)
    assert mcq_prompt(chinese[0]).startswith("以下是关于")
    assert "问题：" + chinese[0]["question"].strip() in mcq_prompt(chinese[0])


@pytest.mark.parametrize("name", ["mmlu-subset.jsonl", "cmmlu-subset.jsonl"])
def test_subset_prompts_round_trip(name):
    rows = read_jsonl(MCQ_DIR / name)
    for row in rows:
        prompt = mcq_prompt(row)
        for letter, choice in zip("ABCD", row["choices"]):
            assert f"\n{letter}.{choice}" in prompt
        assert extract_choice_letter(mcq_reference_output(row["answer"])) == row["answer"]
    expected_lang = "zh" if name.startswith("cmmlu") else "en"
    share = sum(mcq_language(row) == expected_lang for row in rows) / len(rows)
    assert share > 0.9


@pytest.mark.parametrize(
    "text, letter",
    [
        ("The right option is B.", "B"),
        ("the right option is c", "C"),
        ("答案是：C", "C"),
        ("正确答案为（Ｃ）", "C"),
        ("选项A是错的，答案是D", "D"),
        ("(D)", "D"),
        ("B. Secondary research.", "B"),
        ("b", "B"),
        ("D because the others are wrong", "D"),
        ("A couple brings their son to therapy; the correct answer is C.", "C"),
        ("A couple brings their son to therapy.", None),
        ("The correct answer is a bit unclear.", None),
        ("I would pick option C here", "C"),
        ("Both A and B are wrong", None),
        ("The right option is A because", "A"),
        ("", None),
    ],
)
def test_choice_letter_extraction(text, letter):
    assert extract_choice_letter(text) == letter


def test_trim_generation_stops_at_a_new_problem():
    runaway = (
        "计算 -3828.45 - 756.08 等于多少？\n-3828.45 - 756.08 = -4584.53\n"
        "计算 9195.58 + 8947.04 等于多少？\n9195.58 + 8947.04 = 18142.62"
    )
    assert score_math(runaway, "-3828.45 - 756.08 = -4584.53")["strict"] is False  # last '=' is the next problem
    trimmed = trim_generation(runaway)
    assert trimmed == "计算 -3828.45 - 756.08 等于多少？\n-3828.45 - 756.08 = -4584.53"
    assert score_math(trimmed, "-3828.45 - 756.08 = -4584.53")["strict"] is True
    assert trim_generation("The right option is C.<|eot_id|>The right option is A.") == "The right option is C."
    assert trim_generation("方程的解为：-15.0") == "方程的解为：-15.0"


# ---- graded closeness (issue 14) ----------------------------------------------------------------


def test_closeness_band_and_leading_digits():

    ref = "-6273.69 / -2956.06 = 2.122314837993816093042766385"
    assert closeness("2.12231", ref) == {
        "within_1pct": True,
        "leading_digits": 6,
        "relative_error": pytest.approx(2.28e-6, rel=1e-2),
    }
    assert closeness("2.2", ref)["within_1pct"] is False  # 3.7% off
    # the band's edge: 1% of 2.1223148... is 0.0212231..., so 2.1011 is in and 2.1010 out
    assert closeness("2.1011", ref)["within_1pct"] is True and closeness("2.1010", ref)["within_1pct"] is False
    assert closeness("14931.08", "= 14931.08")["leading_digits"] == 7
    assert closeness("14900", "= 14931.08")["leading_digits"] == 3
    assert closeness("9.99", "= 10.0")["leading_digits"] == 0  # another order of magnitude
    assert closeness("-5", "= 5") == {"within_1pct": False, "leading_digits": 0, "relative_error": 2.0}
    assert closeness("0.003124", "= 0.003125")["leading_digits"] == 3
    assert closeness(None, "= 5")["within_1pct"] is False
    assert closeness("0", "= 0")["within_1pct"] is True


def test_answer_verdict_carries_the_graded_measure():

    v = answer_verdict("math", "3963.85 * -5055.68 = -20039950", "3963.85 * -5055.68 = -20039957.1680")
    assert (v["strict"], v["within_1pct"], v["leading_digits"]) == (False, True, 7)
    v = answer_verdict("math", "no number here", "x = 5")
    assert (v["within_1pct"], v["leading_digits"]) == (False, 0)
