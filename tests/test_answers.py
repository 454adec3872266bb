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


# ---- exact texts worked out by hand (the mutmut survivors of issue 24's run 16) -------------------


def test_a_single_format_setting_is_accepted_and_a_star_entry_covers_the_rest():
    """Kills tunebox.data.answers.x_check_setting__mutmut_1 (a plain format string checked as None, so every
    one is refused) and x_format_for__mutmut_4, _6, _7 (the '*' entry not read: the family falls to direct)."""
    assert answers.check_setting("rounded:2") is None
    assert answers.check_setting("cot") is None
    assert str(answers.format_for({"*": "cot"}, "add")) == "cot"
    assert str(answers.format_for({"mul": "direct", "*": "rounded:4"}, "div")) == "rounded:4"


def test_an_unknown_family_is_named_with_the_families_there_are():
    """Kills x_check_setting__mutmut_5 (no message) and _7 (the families joined by 'XX, XX')."""
    with pytest.raises(ValueError, match=r"unknown family 'mull'; families: add, sub, mul, div, power, sqrt, "):
        answers.check_setting({"mull": "cot"})


def test_a_small_rounded_value_is_written_without_an_exponent():
    """0.01 / 20000 = 0.0000005 to 7 decimals, not '5E-7'. Kills x__rounded_text__mutmut_7 (`format(v, )`)."""
    fmt = answers.parse_format("rounded:7")
    problem = "计算 0.01 / 20000.00 等于多少？"
    assert answers.render_answer(problem, "unused", fmt, "div") == "0.01 / 20000.00 = 0.0000005"


def test_cot_mul_texts_by_hand():
    """Signs, an integer multiplier, a multiplier of 1. Kills x__place_values__mutmut_3 (`rpartition`: the
    digits of '34' read as 0.3 and 0.04) and x_cot_mul__mutmut_5-_9, _11, _12, _14, _15 (the sign line's
    condition: added for two positive operands, dropped for one negative one, or for an operand equal to 1)."""
    assert answers.cot_mul("12", "34", "408") == "\n".join(
        ["12 * 34 = 12 * (30 + 4)", "= 360 + 48", "= 408", "12 * 34 = 408"]
    )
    assert answers.cot_mul("1.5", "2.5", "3.75") == "\n".join(
        ["1.5 * 2.5 = 1.5 * (2 + 0.5)", "= 3 + 0.75", "= 3.75", "1.5 * 2.5 = 3.75"]
    )
    assert answers.cot_mul("-1.5", "2.5", "-3.75") == "\n".join(
        ["-1.5 * 2.5 = -(1.5 * 2.5)", "1.5 * 2.5 = 1.5 * (2 + 0.5)", "= 3 + 0.75", "= 3.75", "-1.5 * 2.5 = -3.75"]
    )
    assert answers.cot_mul("1.5", "-2.5", "-3.75").split("\n")[0] == "1.5 * -2.5 = -(1.5 * 2.5)"
    assert answers.cot_mul("-1.5", "-2.5", "3.75").split("\n")[0] == "-1.5 * -2.5 = 1.5 * 2.5"
    assert answers.cot_mul("-1.00", "2.50", "-2.5") == "\n".join(
        ["-1.00 * 2.50 = -(1.00 * 2.50)", "1.00 * 2.50 = 1.00 * (2 + 0.5)", "= 2 + 0.5", "= 2.5", "-1.00 * 2.50 = -2.5"]
    )
    assert answers.cot_mul("2.5", "-1.00", "-2.5") == "\n".join(
        ["2.5 * -1.00 = -(2.5 * 1.00)", "2.5 * 1.00 = 2.5", "2.5 * -1.00 = -2.5"]
    )


def test_cot_div_texts_by_hand():
    """Kills x_cot_div__mutmut_11 (`a < 1`: 0.50 / 2.00 turned negative), _15 (`b < 1`), _17 and _24 (a dividend
    of 1 never negative / without its sign line), _19-_23 (the sign line's condition), _42 (the division stops at
    a remainder of 1) and _57 (the dividend shown as 3 instead of 3.00, the way the problem writes it)."""
    assert answers.cot_div("3.00", "2.00") == "\n".join(
        ["3.00 - 2.00 * 1 = 3.00 - 2 = 1", "1 - 2.00 * 0.5 = 1 - 1 = 0", "3.00 / 2.00 = 1.5"]
    )
    assert answers.cot_div("0.50", "2.00") == "\n".join(
        ["0.50 - 2.00 * 0.2 = 0.50 - 0.4 = 0.1", "0.1 - 2.00 * 0.05 = 0.1 - 0.1 = 0", "0.50 / 2.00 = 0.25"]
    )
    assert answers.cot_div("1.00", "0.50") == "\n".join(["1.00 - 0.50 * 2 = 1.00 - 1 = 0", "1.00 / 0.50 = 2"])
    assert answers.cot_div("-1.00", "4.00") == "\n".join(
        [
            "-1.00 / 4.00 = -(1.00 / 4.00)",
            "1.00 - 4.00 * 0.2 = 1.00 - 0.8 = 0.2",
            "0.2 - 4.00 * 0.05 = 0.2 - 0.2 = 0",
            "-1.00 / 4.00 = -0.25",
        ]
    )
    assert answers.cot_div("-1.00", "-4.00").split("\n")[0] == "-1.00 / -4.00 = 1.00 / 4.00"
    assert answers.cot_div("1.00", "-0.50").split("\n")[-1] == "1.00 / -0.50 = -2"


def test_exact_values_that_have_none():
    """x / 0 and 0^0 have no value. Kills x_exact_value__mutmut_32 (("1.00 / 0.00", None) returned) and _44-_46
    (0^0 let through: Fraction(0) ** 0 is 1)."""
    assert answers.exact_value("计算 1.00 / 0.00 等于多少？", "div") is None
    assert answers.exact_value("计算 0.00 的 0 次方？", "power") is None
    assert answers.exact_value("计算 0 的 0 次方？", "power") is None
    assert answers.exact_value("计算 1.00 的 0 次方？", "power") == ("1.00^0", 1)
    assert answers.exact_value("计算 0.00 的 1 次方？", "power") == ("0.00^1", 0)


@pytest.mark.parametrize("n", [3, 5, 10, 7])
def test_a_square_root_is_rounded_to_60_significant_digits(n):
    """The value has 60 significant digits (59 decimals for a root in [1, 10)) and lies within half a unit of
    the 60th digit of the root, checked in integers. Kills x_exact_value__mutmut_53 (61 digits)."""
    expression, value = answers.exact_value(f"计算 {n} 的平方根？", "sqrt")
    assert expression == f"√{n}"
    assert (value * 10**59).denominator == 1
    half = Fraction(1, 2 * 10**59)
    assert (value - half) ** 2 <= n <= (value + half) ** 2


def test_rounded_texts_of_the_worded_families_by_hand():
    """Kills x_exact_value__mutmut_86, _87 ('x' renamed), _102, _103 ('y' renamed), _110 ('14 * 14' for the
    rectangle) and _132 (41 * (101 + 4) / 100 = 43.05)."""
    fmt = answers.parse_format("rounded:2")
    assert answers.render_answer("解方程 -90x + 14 = 0", "unused", fmt) == "x = 0.16"  # 14 / 90 = 0.1555...
    assert answers.render_answer("当 x = 2 时，求函数 y = 3x^2 的值", "unused", fmt) == "y = 12"
    rectangle = "一个长方形的长为 76 厘米，宽为 14 厘米，请计算其面积。"
    assert answers.render_answer(rectangle, "unused", fmt) == "76 * 14 = 1064"
    sales = "去年销售额为 41 万元，今年销售额增加了 4%，请计算今年的销售额。"
    assert answers.render_answer(sales, "unused", fmt) == "41 * (100 + 4) / 100 = 42.64"


def test_examples_keys_and_the_family_given():
    """Kills x_examples__mutmut_1 (every key 'None'), _17, _18, _19 (the rounded key and digits) and _5, _9 (the
    family given dropped: a row given as 'add' gets no cot, whatever its text looks like)."""
    problem, solution = "计算 1.5 * 2.5 等于多少？", "1.5 * 2.5 = 3.75"
    got = answers.examples(problem, solution)
    assert got == {
        "direct": solution,
        "cot": "1.5 * 2.5 = 1.5 * (2 + 0.5)\n= 3 + 0.75\n= 3.75\n1.5 * 2.5 = 3.75",
        "rounded:2": "1.5 * 2.5 = 3.75",
    }
    assert answers.examples("计算 1.25 * 1.00 等于多少？", "x", "mul")["rounded:2"] == "1.25 * 1.00 = 1.25"
    assert answers.examples(problem, solution, "add")["cot"] == solution


def test_cot_mul_single_digit_multipliers_and_a_zero_multiplicand():
    """Kills x_cot_mul__mutmut_24, _57, _59 (0 x ... decomposed or given a partial product), _60 (1.00 x 5 left
    without its partial product) and _63 (1.5 / 0.2 for 1.5 x 0.2)."""
    assert answers.cot_mul("0.00", "1.25", "0") == "0.00 * 1.25 = 0"
    assert answers.cot_mul("0.00", "5", "0") == "0.00 * 5 = 0"
    assert answers.cot_mul("1.00", "5", "5") == "1.00 * 5 = 5\n1.00 * 5 = 5"
    assert answers.cot_mul("1.5", "0.2", "0.3") == "1.5 * 0.2 = 0.3\n1.5 * 0.2 = 0.3"


def test_parse_format_bounds_and_message():
    """Kills x_parse_format__mutmut_20 (rounded:12 refused) and _31 (no message)."""
    assert answers.parse_format("rounded:12") == answers.AnswerFormat("rounded", 12)
    with pytest.raises(ValueError, match=r"answer format 'rounded:13': expected direct, cot or rounded:N"):
        answers.parse_format("rounded:13")


def test_plain_numbers():
    """Kills x_plain__mutmut_2, _4 (an int not made a Decimal) and _7 (zero written 'XX0XX')."""
    assert answers.plain(8000) == "8000"
    assert answers.plain(-12) == "-12"
    assert answers.plain(Decimal("8E+3")) == "8000"
    assert answers.plain(Decimal("0.40")) == "0.4"
    assert answers.plain(Decimal("0.00")) == "0"


def test_round_half_up_at_exactly_one_half():
    """0.125 -> 0.13 and -0.125 -> -0.13 (half away from zero). Kills x_round_half_up__mutmut_12 (`>`)."""
    assert str(answers.round_half_up(Fraction(1, 8), 2)) == "0.13"
    assert str(answers.round_half_up(Fraction(-1, 8), 2)) == "-0.13"
    assert str(answers.round_half_up(Fraction(3, 8), 2)) == "0.38"


def test_rounded_limits_exactly_at_the_edges():
    """10^16 exactly is left direct, 0 exactly is written. Kills x_render_answer__mutmut_76 (`> 10^16`) and _79
    (`value != 1`: a value of 0 left direct)."""
    fmt = answers.parse_format("rounded:2")
    huge = "一个长方形的长为 100000000 厘米，宽为 100000000 厘米，请计算其面积。"
    assert answers.render_answer(huge, "S", fmt, "rectangle_area") == "S"
    below = "一个长方形的长为 99999999 厘米，宽为 100000000 厘米，请计算其面积。"
    assert answers.render_answer(below, "S", fmt, "rectangle_area") == "99999999 * 100000000 = 9999999900000000"
    assert answers.render_answer("计算 1.50 - 1.50 等于多少？", "S", fmt, "sub") == "1.50 - 1.50 = 0"


def test_cot_uses_the_family_given():
    """A multiplication given as 'div' has no contest solution as a division: its answer stays. Kills
    x_render_answer__mutmut_14, _16 (the contest's solution looked up by the text's own family)."""
    cot = answers.parse_format("cot")
    assert answers.render_answer("计算 1.5 * 2.5 等于多少？", "S", cot, "div") == "S"
