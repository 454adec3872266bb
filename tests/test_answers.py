"""Answer formats (tunebox/data/answers.py): every cot step is exact arithmetic on the problem's operands,
the final lines are the right values, and the judge reads the final number of every format."""

from __future__ import annotations

import random
import re
from decimal import Decimal
from fractions import Fraction

import pytest

from tunebox.contest import mathgen, scoring
from tunebox.data import answers

ROWS_PER_FAMILY = 2000
_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")


def value_of(expression: str) -> Fraction:
    """An arithmetic expression (+ - * / parentheses, decimals) evaluated exactly with Fractions."""
    code = _NUMBER.sub(lambda m: f"F('{m.group()}')", expression.strip())
    assert re.fullmatch(r"[F()'\d.+\-*/ ]*", code), expression
    return eval(code, {"F": Fraction})  # noqa: S307 - the test's own generated text, checked above


def check_chain(text: str, inexact_last_line: bool) -> list[Fraction]:
    """Each line is 'e1 = e2 = ...' (a line starting with '=' continues the previous one); every
    expression on a line must equal the others exactly. Returns the values of the lines."""
    lines = text.split("\n")
    values, previous = [], None
    for i, line in enumerate(lines):
        parts = line.split(" = ") if not line.startswith("= ") else [previous] + line[2:].split(" = ")
        exprs = [value_of(p) for p in parts]
        if not (inexact_last_line and i == len(lines) - 1):
            assert len(set(exprs)) == 1, f"line {i + 1} is not exact: {line!r}\n{text}"
        previous = parts[-1]
        values.append(exprs[0])
    return values


def generated(family: str, n: int = ROWS_PER_FAMILY, seed: int = 14):
    rng = random.Random(seed)
    return [mathgen.make(family, rng) for _ in range(n)]


def final_number(text: str) -> str:
    last = text.split("\n")[-1]
    assert re.search(r"= -?\d+(?:\.\d+)?$", last), f"final line does not end in '= <number>': {last!r}"
    return last.rsplit("= ", 1)[1]


def test_cot_mul_is_exact_partial_products_and_the_contest_value():
    cot = answers.parse_format("cot")
    for problem, solution in generated("mul"):
        text = answers.render_answer(problem, solution, cot)
        a, b = re.findall(r"-?\d+\.\d+", problem)
        check_chain(text, inexact_last_line=False)
        assert Fraction(final_number(text)) == Fraction(a) * Fraction(b)
        # the multiplier is split into the place values of its non-zero digits, one partial product each
        parts = re.search(r"\* \(([^)]*)\)", text)
        digits = [d for d in b.lstrip("-").replace(".", "") if d != "0"]
        if len(digits) > 1:
            assert parts is not None, text
            places = [Decimal(p) for p in parts.group(1).split(" + ")]
            assert sum(places) == Decimal(b.lstrip("-"))
            assert all(len([d for d in p.as_tuple().digits if d]) == 1 for p in places)
            assert len(places) == len(digits)
        # the final line is the contest's own formatting of the product
        assert text.split("\n")[-1] == solution


def test_cot_div_is_long_division_to_five_decimals():
    cot = answers.parse_format("cot")
    for problem, solution in generated("div"):
        a, b = re.findall(r"-?\d+\.\d+", problem)
        text = answers.render_answer(problem, solution, cot)
        check_chain(text, inexact_last_line=True)
        exact = Fraction(a) / Fraction(b)
        final = Fraction(final_number(text))
        assert abs(final - exact) <= Fraction(1, 2 * 10**5), (text, float(exact))
        assert final == Fraction(answers.round_half_up(exact, 5))
        steps = [l for l in text.split("\n") if " * " in l]
        # steps: remainder - |b| * (digit x 10^k) with one non-zero digit, places strictly descending, last place 10^-5
        places = []
        for line in steps:
            q = Decimal(line.split(" * ", 1)[1].split(" = ")[0])
            digits = [d for d in q.as_tuple().digits if d]
            assert len(digits) == 1, line
            places.append(q.adjusted())
        assert places == sorted(places, reverse=True) and len(set(places)) == len(places)
        assert not places or places[-1] >= -5
        truncated = sum(Fraction(l.split(" * ", 1)[1].split(" = ")[0]) for l in steps)
        assert abs(exact) - truncated < Fraction(1, 10**5) and truncated <= abs(exact)


def test_cot_average_sums_then_divides_and_ends_in_the_contest_value():
    cot = answers.parse_format("cot")
    for problem, solution in generated("average"):
        values = [int(v) for v in re.search(r"\[(.*)\]", problem).group(1).split(", ")]
        text = answers.render_answer(problem, solution, cot)
        sums = check_chain(text, inexact_last_line=True)
        assert len(text.split("\n")) == len(values)
        assert sums[-1] == Fraction(sum(values), len(values))
        assert final_number(text) == repr(sum(values) / len(values)) == solution.split(" ")[-1]


@pytest.mark.parametrize("family", [f for f in mathgen.GENERATABLE if f != "english_word"])
def test_rounded_is_the_exact_value_rounded_half_up(family):
    fmt = answers.parse_format("rounded:2")
    for problem, solution in generated(family, 500):
        text = answers.render_answer(problem, solution, fmt)
        exact = answers.exact_value(problem, family)
        assert exact is not None, problem
        value = exact[1]
        if abs(value) >= 10**16 or (value != 0 and answers.round_half_up(value, 2) == 0):
            assert text == solution  # the documented fallbacks: huge values, values that round to 0
            continue
        assert text.startswith(exact[0] + " = ")
        final = Fraction(final_number(text))
        assert abs(final - value) <= Fraction(1, 200), (problem, text)
        assert final == value or Decimal(final_number(text)).as_tuple().exponent == -2


def test_cot_keeps_families_without_a_decomposition_direct():
    cot = answers.parse_format("cot")
    for family in ("add", "sub", "power", "sqrt", "linear_equation", "english_word"):
        for problem, solution in generated(family, 50):
            assert answers.render_answer(problem, solution, cot) == solution


@pytest.mark.parametrize(
    "family",
    [
        "add",
        "sub",
        "mul",
        "div",
        "average",
        "sqrt",
        "power",
        "linear_equation",
        "function_value",
        "discount",
        "sales_growth",
        "rectangle_area",
    ],
)
def test_the_judge_reads_the_final_number_of_every_format(family):
    """scoring.extract_answer (the one judge) reads, in every format, the number the answer ends with;
    and the answer is never further from the truth than its format allows."""
    for problem, solution in generated(family, 300, seed=3):
        for name, text in answers.examples(problem, solution).items():
            got = scoring.extract_answer(text)
            if name == "direct" or text == solution:
                assert got.value == scoring.extract_answer(solution).value
                continue
            assert got is not None and got.value == Decimal(final_number(text)), (name, text)
            verdict = scoring.answer_verdict("math", text, solution)
            if (name == "cot" and family in ("mul", "average")) or family in ("add", "sub"):
                assert verdict["strict"], (name, text, solution)
            reference = abs(scoring.extract_answer(solution).value)
            if name == "cot" or reference >= Decimal("0.5"):  # 2 decimals are within 1% from 0.5 up
                assert verdict["within_1pct"], (name, text, solution)


def test_format_settings_per_family_and_errors():
    setting = {"mul": "cot", "div": "rounded:3", "*": "direct"}
    answers.check_setting(setting)
    assert str(answers.format_for(setting, "mul")) == "cot"
    assert str(answers.format_for(setting, "div")) == "rounded:3"
    assert str(answers.format_for(setting, "sqrt")) == "direct"
    assert str(answers.format_for({"mul": "cot"}, "add")) == "direct"
    assert str(answers.format_for("rounded:0", "add")) == "rounded:0"
    for bad in ("cots", "rounded:x", "rounded:13", {"mull": "cot"}, {"mul": "chain"}):
        with pytest.raises(ValueError):
            answers.check_setting(bad)
