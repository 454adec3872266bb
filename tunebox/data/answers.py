"""Answer formats: what the model learns to write for a contest math problem (data.answer_format).

  direct      the row's solution as it is (the contest's own wording and digits; today's behaviour)
  cot         Goat-style chain of thought (Liu & Low 2023, "Goat: Fine-tuned LLaMA Outperforms GPT-4
              on Arithmetic Tasks", arXiv 2305.14201), as the 2024 stage-1 winner used it:
                mul      the multiplier split into its non-zero digits' place values, one partial
                         product each, then the partial products summed left to right;
                div      long division to 5 decimals: the dividend minus divisor x (digit x 10^k), one
                         line per non-zero quotient digit, then the quotient rounded half-up to 5 decimals;
                average  the values summed left to right, then the sum divided by the count.
              Other families have no decomposition and stay direct.
  rounded:N   "<expression> = <value rounded half-up to N decimals>" (an integral value is written
              as an integer); direct when the value is 10^16 or more, or nonzero and would round to 0.

Every number in a cot or rounded answer is computed here from the problem's operands (exact
Decimal/Fraction arithmetic), never copied from the row's solution, and the last line of a cot or
rounded answer ends in "= <number>", the number scoring.extract_answer reads. Families the
templates cannot compute (English competition problems) are always direct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Mapping, Optional, Union

from tunebox.contest import mathgen

KINDS = ("direct", "cot", "rounded")
ANY_FAMILY = "*"
COT_FAMILIES = ("mul", "div", "average")
DIV_DECIMALS = 5
_ROUNDED_LIMIT = Decimal(10) ** 16


@dataclass(frozen=True)
class AnswerFormat:
    kind: str  # direct | cot | rounded
    digits: int = 0  # decimals, for rounded

    def __str__(self) -> str:
        return f"rounded:{self.digits}" if self.kind == "rounded" else self.kind


DIRECT = AnswerFormat("direct")
FormatSetting = Union[str, Mapping[str, str]]


def parse_format(text: str) -> AnswerFormat:
    """'direct', 'cot' or 'rounded:N' (N decimals, 0..12) -> AnswerFormat; ValueError says what is allowed."""
    text = str(text).strip()
    if text in ("direct", "cot"):
        return AnswerFormat(text)
    m = re.fullmatch(r"rounded:(\d+)", text)
    if m and int(m.group(1)) <= 12:
        return AnswerFormat("rounded", int(m.group(1)))
    raise ValueError(f"answer format {text!r}: expected direct, cot or rounded:N (N decimals, 0-12)")


def check_setting(setting: FormatSetting) -> None:
    """ValueError naming the bad entry of a data.answer_format value (a format, or {family: format})."""
    if isinstance(setting, str):
        parse_format(setting)
        return
    for family, text in setting.items():
        if family != ANY_FAMILY and family not in mathgen.FAMILIES:
            raise ValueError(
                f"answer format for unknown family {family!r}; families: "
                f"{', '.join(mathgen.FAMILIES)} or {ANY_FAMILY!r} for the rest"
            )
        parse_format(text)


def format_for(setting: FormatSetting, family: str) -> AnswerFormat:
    """The format data.answer_format gives `family`: one format for all, or a mapping whose '*'
    entry (default direct) covers the families it does not name."""
    if isinstance(setting, str):
        return parse_format(setting)
    text = setting.get(family, setting.get(ANY_FAMILY))
    return parse_format(text) if text is not None else DIRECT


# ---- numbers as the answers write them ------------------------------------------------------


def plain(value: Union[Decimal, Fraction, int]) -> str:
    """A Decimal/int without exponent or trailing fractional zeros: 8E+3 -> 8000, 0.40 -> 0.4."""
    value = Decimal(value) if isinstance(value, int) else value
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def round_half_up(value: Fraction, digits: int) -> Decimal:
    """`value` rounded half away from zero to `digits` decimals, exactly (no float, no 28-digit context)."""
    scale = 10**digits
    magnitude = abs(value) * scale
    n = magnitude.numerator // magnitude.denominator
    if 2 * (magnitude - n) >= 1:
        n += 1
    out = Decimal(n).scaleb(-digits)
    return -out if value < 0 else out


def _rounded_text(value: Fraction, digits: int) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return format(round_half_up(value, digits), "f")


def _abs_text(text: str) -> str:
    return text[1:] if text.startswith("-") else text


# ---- the decompositions -------------------------------------------------------------------------


def _place_values(text: str) -> list[Decimal]:
    """The non-zero digits of a non-negative decimal string as place values: 8656.40 -> 8000, 600, 50, 6, 0.4."""
    whole, _, frac = text.partition(".")
    out = []
    for i, ch in enumerate(whole):
        if ch != "0":
            out.append(Decimal(int(ch)).scaleb(len(whole) - 1 - i))
    for i, ch in enumerate(frac):
        if ch != "0":
            out.append(Decimal(int(ch)).scaleb(-(i + 1)))
    return out


def cot_mul(a: str, b: str, result: str) -> str:
    """Partial products by each non-zero digit of b, then their sum; `result` is the final line's value."""
    lines = []
    x, y = _abs_text(a), _abs_text(b)
    if (a != x or b != y) and Decimal(x) != 0 and Decimal(y) != 0:
        lines.append(f"{a} * {b} = -({x} * {y})" if (a != x) != (b != y) else f"{a} * {b} = {x} * {y}")
    parts = _place_values(y)
    if Decimal(x) != 0 and len(parts) > 1:
        lines.append(f"{x} * {y} = {x} * ({' + '.join(plain(p) for p in parts)})")
        products = [Decimal(x) * p for p in parts]
        lines.append("= " + " + ".join(plain(p) for p in products))
        while len(products) > 1:
            products = [products[0] + products[1]] + products[2:]
            lines.append("= " + " + ".join(plain(p) for p in products))
    elif Decimal(x) != 0 and parts:
        lines.append(f"{x} * {y} = {plain(Decimal(x) * parts[0])}")
    lines.append(f"{a} * {b} = {result}")
    return "\n".join(lines)


def cot_div(a: str, b: str) -> str:
    """Long division of |a| by |b| to DIV_DECIMALS decimals, one line per non-zero quotient digit,
    then the signed quotient rounded half-up."""
    x, y = _abs_text(a), _abs_text(b)
    dividend, divisor = Decimal(x), Decimal(y)
    negative = (Decimal(a) < 0) != (Decimal(b) < 0) and dividend != 0
    lines = []
    if (a != x or b != y) and dividend != 0:
        lines.append(f"{a} / {b} = -({x} / {y})" if negative else f"{a} / {b} = {x} / {y}")
    remainder = dividend
    place = 0
    while divisor.scaleb(place + 1) <= dividend:
        place += 1
    with localcontext() as ctx:
        ctx.prec = 80  # every product and difference here is exact at this precision
        while remainder != 0 and place >= -DIV_DECIMALS:
            digit = int(remainder / divisor.scaleb(place))
            if digit:
                step = Decimal(digit).scaleb(place)
                product = divisor * step
                new = remainder - product
                shown = x if remainder is dividend else plain(remainder)  # the dividend as the problem writes it
                lines.append(f"{shown} - {y} * {plain(step)} = {shown} - {plain(product)} = {plain(new)}")
                remainder = new
            place -= 1
    quotient = round_half_up(Fraction(dividend) / Fraction(divisor), DIV_DECIMALS)
    value = plain(-quotient if negative else quotient)
    lines.append(f"{a} / {b} = {value}")
    return "\n".join(lines)


def cot_average(values: list[int], result: str) -> str:
    """The values summed left to right, then the sum over the count (`result`: the label's value)."""
    lines, total = [], values[0]
    for v in values[1:]:
        lines.append(f"{total} + {v} = {total + v}")
        total += v
    lines.append(f"{total} / {len(values)} = {result}")
    return "\n".join(lines)


# ---- exact values and expressions per family ---------------------------------------------------

_ARITH = re.compile(r"计算 (-?\d+(?:\.\d+)?) ([-+*/]) (-?\d+(?:\.\d+)?) 等于多少？")
_NUMS = re.compile(r"-?\d+(?:\.\d+)?")


def exact_value(problem: str, family: str) -> Optional[tuple[str, Fraction]]:
    """(expression, exact value) of a computable Chinese template problem, or None. sqrt is the
    one irrational family: its value is the square root to 60 significant digits."""
    p = problem.strip()
    nums = _NUMS.findall(p)
    try:
        if family in ("add", "sub", "mul", "div"):
            m = _ARITH.fullmatch(p)
            if not m:
                return None
            a, op, b = m.groups()
            fa, fb = Fraction(a), Fraction(b)
            value = {"+": fa + fb, "-": fa - fb, "*": fa * fb, "/": fa / fb if fb else None}[op]
            return (f"{a} {op} {b}", value) if value is not None else None
        if family == "power":
            a, n = nums[0], int(nums[1])
            if Fraction(a) == 0 and n == 0:
                return None
            return f"{a}^{n}", Fraction(a) ** n
        if family == "sqrt":
            with localcontext() as ctx:
                ctx.prec = 60
                return f"√{nums[0]}", Fraction(Decimal(nums[0]).sqrt())
        if family == "average":
            values = [int(v) for v in re.search(r"\[(.*)\]", p).group(1).split(", ")]
            return f"{sum(values)} / {len(values)}", Fraction(sum(values), len(values))
        if family == "linear_equation":
            a, b, c = (int(v) for v in nums[:3])
            return ("x", Fraction(c - b, a)) if a else None
        if family == "function_value":
            x, a, n = nums[0], int(nums[1]), int(nums[2])
            return "y", a * Fraction(x) ** n
        if family == "rectangle_area":
            return f"{nums[0]} * {nums[1]}", Fraction(int(nums[0]) * int(nums[1]))
        if family == "sales_growth":
            a, b = int(nums[0]), int(nums[1])
            return f"{a} * (100 + {b}) / 100", Fraction(a * (100 + b), 100)
        if family == "discount":
            a, b = int(nums[0]), int(nums[1])
            return (f"({a} - {b}) / {a} * 100", Fraction((a - b) * 100, a)) if a else None
    except (IndexError, AttributeError, ValueError, ZeroDivisionError):
        return None
    return None


def render_answer(problem: str, solution: str, fmt: AnswerFormat, family: Optional[str] = None) -> str:
    """The training answer for one row in `fmt`. direct returns `solution`; so do cot for a family
    with no decomposition and any format for a problem the templates cannot compute."""
    if fmt.kind == "direct":
        return solution
    problem = problem.strip()
    family = family or mathgen.family_of(problem)
    if fmt.kind == "cot":
        if family not in COT_FAMILIES:
            return solution
        contest = mathgen.solve(problem, family)  # the contest's own formatting of the exact result
        if contest is None:
            return solution
        if family == "average":
            values = [int(v) for v in re.search(r"\[(.*)\]", problem).group(1).split(", ")]
            return cot_average(values, contest.rsplit(" ", 1)[1])
        a, op, b = _ARITH.fullmatch(problem).groups()
        if family == "mul":
            return cot_mul(a, b, contest.rsplit(" = ", 1)[1])
        return cot_div(a, b)
    found = exact_value(problem, family)
    if found is None:
        return solution
    expression, value = found
    if abs(value) >= _ROUNDED_LIMIT or (value != 0 and round_half_up(value, fmt.digits) == 0):
        return solution
    return f"{expression} = {_rounded_text(value, fmt.digits)}"


def examples(problem: str, solution: str, family: Optional[str] = None) -> dict[str, str]:
    """One row in each format (direct, cot, rounded:2), for previews."""
    return {
        str(f): render_answer(problem, solution, f, family)
        for f in (DIRECT, AnswerFormat("cot"), AnswerFormat("rounded", 2))
    }
