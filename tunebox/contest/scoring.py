"""Contest scoring, exactly: math answers, SQuAD F1/EM, multiple-choice letters. Pure Python (no
MindSpore), so evaluate, bundle and the tests all share one implementation. The ratio, the stage
scores, retention and the checkpoint choice are tunebox/contest/rules.py. docs/CONTEST_RULES.md
explains the rules as we read them.

Math answers are compared as exact numbers (Decimal for written decimals, Fraction for
fractions), never as floats, so "0.0" equals "0" and a 28-digit reference keeps all its digits.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Iterable, Mapping, Optional, Sequence, Union

Number = Union[Decimal, Fraction]

# --------------------------------------------------------------------------------------------
# Text normalization shared by the math and multiple-choice extractors
# --------------------------------------------------------------------------------------------

_SUPERSCRIPTS = {
    "⁰": "0",
    "¹": "1",
    "²": "2",
    "³": "3",
    "⁴": "4",
    "⁵": "5",
    "⁶": "6",
    "⁷": "7",
    "⁸": "8",
    "⁹": "9",
    "⁻": "-",
    "⁺": "+",
}
_SUPERSCRIPT_RUN = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\ufe63": "-", "\u2796": "-", "\u2010": "-", "\u2011": "-"})


def _fullwidth_to_ascii(text: str) -> str:
    """Full-width forms (U+FF01..U+FF5E) -> ASCII, ideographic space -> space. The full-width
    comma becomes ", " (comma + space) so Chinese-punctuated lists like 100，200，300 never
    read as a thousands-separated 100,200,300."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\uff0c":
            out.append(", ")
        elif 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        elif ch == "\u3000":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def normalize_math_text(text: str) -> str:
    """The text the math extractor reads. Each step and why:

    - full-width digits/signs/punctuation -> ASCII (models trained on Chinese text emit them);
    - Unicode minus signs (U+2212 and friends) -> "-";
    - superscript runs -> "^digits" (x² -> x^2; 10⁻⁵ -> 10^-5), so an exponent never glues onto
      the digits before it;
    - LaTeX spacing/markup that is not part of the value: $, \\$, \\left, \\right, \\!, "{,}"
      and "\\," between digit groups (LaTeX thousands separators) -> plain ",";
    - \\dfrac, \\tfrac -> \\frac; \\% -> %; "百分之N" -> "N%";
    - \\text{..}, \\mbox{..}, \\mathrm{..}, \\textbf{..} -> their content (units and words);
    - degree marks (^\\circ, ^{\\circ}, °) removed: 180^\\circ is the number 180.
    """
    text = _fullwidth_to_ascii(text).translate(_MINUS_SIGNS)
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^" + "".join(_SUPERSCRIPTS[c] for c in m.group()), text)
    text = re.sub(r"(?<=\d)\{,\}(?=\d{3})", ",", text)
    text = re.sub(r"(?<=\d)\\[,!](?=\d{3})", ",", text)
    text = re.sub(r"\\(?:text|mbox|mathrm|textbf|textrm|operatorname)\s*\{([^{}]*)\}", r" \1 ", text)
    text = re.sub(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|°|\\circ", "", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = text.replace("\\%", "%").replace("\\$", " ").replace("$", " ")
    text = re.sub(r"\\left\b|\\right\b|\\!|\\[,;: ]|~", " ", text)
    text = re.sub(r"百分之\s*(-?\d+(?:\.\d+)?)", r"\1%", text)
    return text


# --------------------------------------------------------------------------------------------
# Numbers in text
# --------------------------------------------------------------------------------------------

# One regex, tried left to right; alternatives are ordered so the most specific form wins.
# The sign must touch the digits: in "3 - 5" the minus is an operator, in "- -2728.62" the
# second one is a sign. (?<![\w.]) is ASCII-only on purpose: Chinese text glued to a number
# ("答案是5") must not hide it, but "x2" or "CO2" is not a number.
_NUMBER = re.compile(
    r"""
    (?<![A-Za-z0-9_.])
    (?:
        (?P<msign>-?)(?P<mint>\d+)\s*\\frac\s*\{\s*(?P<mnum>\d+)\s*\}\s*\{\s*(?P<mden>\d+)\s*\}   # 2\frac{1}{2}
      | (?P<fsign>-?)\s*\\frac\s*(?:\{\s*(?P<fnum>[-+]?\d+(?:\.\d+)?)\s*\}|(?P<fnum1>\d))
                            \s*(?:\{\s*(?P<fden>[-+]?\d+(?:\.\d+)?)\s*\}|(?P<fden1>\d))   # \frac{a}{b}, \frac12
      | (?P<ssign>-?)(?P<snum>\d+)/(?P<sden>\d+)(?!\d|[.,]\d|/)                            # 3/4
      | (?P<sign>[-+]?)
        (?P<body>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+\.\d*|\.\d+|\d+)                  # 1,234.5  12.5  .5  12
        (?P<exp>[eE][-+]?\d+(?!\d|\.\d))?                                                 # 2.1E+68
        (?:\s*(?:\\times|\\cdot|×|\*|·)\s*10\s*\^\s*\{?\s*(?P<exp10>[-+]?\d+)\s*\}?)?    # 1.2 \times 10^{5}
        (?P<pct>\s*%)?
    )
""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class NumberToken:
    value: Number
    start: int
    end: int
    text: str  # the text as matched (after normalize_math_text)
    is_percent: bool  # written with a % sign; value is the written number (25% -> 25)

    @property
    def shown_exponent(self) -> Optional[int]:
        """The decimal exponent of the last digit written (135.25 -> -2, 2.1E+68 -> 67), None for
        fractions. A single trailing ".0" counts as an integer (-15.0 -> 0): in the contest data
        that is how Python prints an integral float, not a statement of one-decimal precision."""
        if not isinstance(self.value, Decimal):
            return None
        exponent = self.value.as_tuple().exponent
        body = self.text.rstrip("% ")
        if re.search(r"\d\.0$", body):
            exponent = 0
        return int(exponent)


def _decimal(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _token_from_match(m: re.Match) -> Optional[NumberToken]:
    g = m.groupdict()
    try:
        if g["mint"] is not None:
            value: Number = Fraction(int(g["mint"])) + Fraction(int(g["mnum"]), int(g["mden"]))
            if g["msign"] == "-":
                value = -value
        elif g["fnum"] is not None or g["fnum1"] is not None:
            num = Fraction(_decimal(g["fnum"] or g["fnum1"]))
            den = Fraction(_decimal(g["fden"] or g["fden1"]))
            if den == 0:
                return None
            value = num / den
            if g["fsign"] == "-":
                value = -value
        elif g["snum"] is not None:
            den = int(g["sden"])
            if den == 0:
                return None
            value = Fraction(int(g["snum"]), den)
            if g["ssign"] == "-":
                value = -value
        else:
            body = g["body"].replace(",", "")
            if body.endswith("."):
                body = body[:-1]
            exp = int(g["exp"][1:]) if g["exp"] else 0
            exp += int(g["exp10"]) if g["exp10"] else 0
            # Built from text, not scaled: Decimal arithmetic would round to the context's
            # 28 digits, a literal keeps every digit written.
            value = Decimal(f"{g['sign']}{body}E{exp}") if exp else Decimal(g["sign"] + body)
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    return NumberToken(value=value, start=m.start(), end=m.end(), text=m.group().strip(), is_percent=bool(g.get("pct")))


def find_numbers(text: str, normalized: bool = False) -> list[NumberToken]:
    """Every number written in `text`, left to right (see normalize_math_text for what is
    normalized first; pass normalized=True when it already is)."""
    if not normalized:
        text = normalize_math_text(text)
    tokens = []
    for m in _NUMBER.finditer(text):
        token = _token_from_match(m)
        if token is not None:
            tokens.append(token)
    return tokens


# --------------------------------------------------------------------------------------------
# Finding the answer in a solution or a model's output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedAnswer:
    value: Optional[Number]  # None when the answer is not a single number (\boxed{\sqrt{3}}, a tuple)
    text: str  # the number as written, or the normalized non-numeric answer
    rule: str  # which rule found it: boxed | marker | equals | last_number
    is_percent: bool = False
    shown_exponent: Optional[int] = None

    @classmethod
    def from_token(cls, token: NumberToken, rule: str) -> "ExtractedAnswer":
        return cls(
            value=token.value,
            text=token.text,
            rule=rule,
            is_percent=token.is_percent,
            shown_exponent=token.shown_exponent,
        )


# Words after which the answer follows. Longest first so 方程的解为 wins over 解为.
_ANSWER_MARKERS = re.compile(
    r"方程的解为|函数的值为|平均值为|面积为|最终答案|答案是|答案为|正确答案|答案|结果是|结果为|解为|值为|等于|答"
    r"|final answer(?: is)?|the answer is|answer is|answer\s*:|result is",
    re.IGNORECASE,
)
# Where a statement ends: a newline, a Chinese full stop or semicolon, or ". " (a decimal point
# is never followed by a space).
_SENTENCE_END = re.compile(r"\n|。|;|\.\s|\.$")
# After a number, these mean it is the start of an expression, not the value: 2 \cdot 5, 17x.
_CONTINUES_EXPRESSION = re.compile(r"\s*(?:[-+*/×÷^]|\\times|\\cdot|\\div)\s*[\d(\\.]|[A-Za-z](?![A-Za-z])")


def _balanced_braces(text: str, open_at: int) -> Optional[str]:
    """Content of the {...} group whose '{' is at text[open_at], or None if it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def _last_boxed(text: str) -> Optional[str]:
    found = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        content = _balanced_braces(text, m.end() - 1)
        if content is not None:
            found = content
    return found


def normalize_latex_answer(text: str) -> str:
    """Canonical text of a non-numeric answer, for string comparison: no spaces, no \\left/\\right,
    \\sqrt3 -> \\sqrt{3}, no trailing punctuation."""
    text = normalize_math_text(text)
    text = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", text)
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".,;:")


def _answer_in_fragment(fragment: str) -> Optional[NumberToken]:
    """The single number a boxed answer holds, or None when it holds anything else.
    'x = 5' -> 5; '10 cm^2' -> 10 (a unit's exponent is not a second number)."""
    if "=" in fragment:
        fragment = fragment.rsplit("=", 1)[1]
    fragment = re.sub(r"(?<=[A-Za-z])\s*\^\s*\{?\d+\}?", "", fragment)
    tokens = find_numbers(fragment, normalized=True)
    if len(tokens) != 1:
        return None
    rest = (fragment[: tokens[0].start] + fragment[tokens[0].end :]).strip()
    # What is left may be units or words, never another operator or LaTeX command.
    if re.search(r"[\\^_{}()\[\]=<>|]|[-+*/]", rest):
        return None
    return tokens[0]


def _value_after(segment: str, require_clean_end: bool) -> Optional[NumberToken]:
    """The number a segment starts with (after a marker or '='). With require_clean_end the
    number must not continue into an expression (= 2 \\cdot 5 is not the value 2)."""
    tokens = find_numbers(segment, normalized=True)
    if not tokens:
        return None
    first = tokens[0]
    if require_clean_end:
        if segment[: first.start].strip():
            return None
        if _CONTINUES_EXPRESSION.match(segment, first.end):
            return None
    return first


def _segment_after(text: str, pos: int) -> str:
    end = _SENTENCE_END.search(text, pos)
    return text[pos : end.start() if end else len(text)]


def extract_answer(text: str) -> Optional[ExtractedAnswer]:
    """The answer a solution or a model output gives, by these rules, first that applies:

    1. boxed: the last \\boxed{...} (or \\fbox). If it holds one number (units and words
       around it allowed; 'x = 5' gives 5) that number is the answer; otherwise the answer is
       non-numeric (\\sqrt{3}, a tuple) and is returned with value=None and its normalized text.
       A boxed answer is never overridden by a later stray number.
    2. marker: the value after the last answer marker that is followed by one
       (方程的解为：, 函数的值为：, 平均值为, 面积为, 答案是/为, 答案, 答：, 结果是, 等于,
       'the answer is', 'answer:' ...), within that sentence. If the sentence has '= v', v wins
       (答案：3963.85 * -5055.68 = -20039957.168 gives the product, not 3963.85).
    3. equals: the value after the last '=' (or '≈') that is followed by a plain number, not an
       expression (a + b = 5 + 3 = 8 gives 8; ... = 2 \\cdot 5 is skipped; y = 17x^16 is skipped).
    4. last_number: the last number written anywhere.

    Numbers (see find_numbers): integers, decimals, 1,234.5 (thousands separators, also LaTeX
    1{,}234), 2.1E+68 / 1.2 \\times 10^{5} (scientific), \\frac{a}{b} / \\dfrac / a/b (exact
    fractions), 2\\frac{1}{2} (mixed), -, − and full-width signs and digits, 25% (value 25,
    is_percent=True). Trailing units and words are ignored. Returns None when no number exists.
    """
    if not text or not text.strip():
        return None
    norm = normalize_math_text(text)

    boxed = _last_boxed(norm)
    if boxed is not None:
        token = _answer_in_fragment(boxed)
        if token is not None:
            return ExtractedAnswer.from_token(token, "boxed")
        return ExtractedAnswer(value=None, text=normalize_latex_answer(boxed), rule="boxed")

    for m in reversed(list(_ANSWER_MARKERS.finditer(norm))):
        segment = _segment_after(norm, m.end()).lstrip(" :：是为")
        if "=" in segment:
            token = _value_after(segment.rsplit("=", 1)[1], require_clean_end=True)
            if token is not None:
                return ExtractedAnswer.from_token(token, "marker")
        token = _value_after(segment, require_clean_end=False)
        if token is not None:
            return ExtractedAnswer.from_token(token, "marker")

    for m in reversed(list(re.finditer(r"=|≈", norm))):
        token = _value_after(_segment_after(norm, m.end()), require_clean_end=True)
        if token is not None:
            return ExtractedAnswer.from_token(token, "equals")

    tokens = find_numbers(norm, normalized=True)
    if tokens:
        return ExtractedAnswer.from_token(tokens[-1], "last_number")
    return None


def extract_answer_number(text: str) -> Optional[Number]:
    """The number that is the answer in `text` (Decimal as written, or Fraction), or None.
    Rules: see extract_answer; the percent flag lives on extract_answer's result."""
    answer = extract_answer(text)
    return answer.value if answer is not None else None


# --------------------------------------------------------------------------------------------
# Comparing numbers
# --------------------------------------------------------------------------------------------

RELATIVE_TOLERANCE = Fraction(1, 10**6)
_Comparable = Union[str, int, float, Decimal, Fraction, ExtractedAnswer, None]


def _as_answer(x: _Comparable) -> Optional[ExtractedAnswer]:
    if x is None or isinstance(x, ExtractedAnswer):
        return x
    if isinstance(x, str):
        return extract_answer(x)
    if isinstance(x, bool):
        raise TypeError("a bool is not a number to compare")
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            raise ValueError(f"{x} is not a finite number")
        x = Decimal(repr(x))  # the shortest repr, which is what a person reads
    if isinstance(x, int):
        x = Decimal(x)
    if isinstance(x, Decimal):
        exponent = x.as_tuple().exponent
        return ExtractedAnswer(
            value=x, text=str(x), rule="value", shown_exponent=int(exponent) if isinstance(exponent, int) else None
        )
    if isinstance(x, Fraction):
        return ExtractedAnswer(value=x, text=str(x), rule="value")
    raise TypeError(f"cannot compare a {type(x).__name__} as a number")


def _readings(answer: ExtractedAnswer) -> list[Fraction]:
    """The values a written number may mean: 25% is 25 (as written) or 0.25."""
    value = Fraction(answer.value)
    return [value, value / 100] if answer.is_percent else [value]


def _within_shown_precision(pred: ExtractedAnswer, ref: ExtractedAnswer) -> bool:
    """The prediction carries more digits than the reference prints, and rounding it to the
    reference's last printed decimal gives the reference. Only for references that print a
    fractional part (2.4, 9603.20; not 348 or 135.0) — an integer answer stays exact."""
    if ref.shown_exponent is None or ref.shown_exponent >= 0:
        return False
    finer = pred.shown_exponent is None or pred.shown_exponent < ref.shown_exponent
    if not finer:
        return False
    half_unit = Fraction(1, 2) * Fraction(10) ** ref.shown_exponent
    return abs(Fraction(pred.value) - Fraction(ref.value)) <= half_unit


def numbers_equal(pred: _Comparable, ref: _Comparable, mode: str = "strict") -> bool:
    """Whether a predicted number equals the reference number.

    Arguments may be text (parsed with extract_answer), Decimal, Fraction, int, float, or an
    ExtractedAnswer. A side with no number, or a non-numeric answer, is never equal.

    strict: exact equality of the written values (Decimal/Fraction, no floats): "0.0" == "0",
      "0.0625" == "\\frac{1}{16}", "25%" == "25" (the written number), "25%" != "0.25".
    tolerant: strict, or any of
      - relative error |pred - ref| <= 1e-6 * |ref| (ref 0 needs pred 0);
      - the prediction agrees with the reference to the reference's shown precision (it prints
        more decimals than the reference and rounds to it; see _within_shown_precision);
      - a percentage read either way: "25%" matches 0.25 and 25; a reference written with %
        matches its value over 100.
    docs/CONTEST_RULES.md says why tolerant is the right reading of the contest rule.
    """
    if mode not in ("strict", "tolerant"):
        raise ValueError(f"mode must be 'strict' or 'tolerant', not {mode!r}")
    p, r = _as_answer(pred), _as_answer(ref)
    if p is None or r is None or p.value is None or r.value is None:
        return False
    if Fraction(p.value) == Fraction(r.value):
        return True
    if mode == "strict":
        return False
    for pv in _readings(p):
        for rv in _readings(r):
            if pv == rv:
                return True
            if rv != 0 and abs(pv - rv) <= RELATIVE_TOLERANCE * abs(rv):
                return True
    return _within_shown_precision(p, r)


_END_MARKERS = re.compile(r"<\|eot_id\|>|<\|end_of_text\|>|<\|im_end\|>|<\|endoftext\|>|</s>|<eoa>")
_NEW_PROBLEM_LINE = re.compile(
    r"^\s*(?:计算\s*-?\d|解方程|当\s*x\s*=|一个长方形|求以下数据|商品原价|去年销售额"
    r"|Question:|问题：|Problem:|### (?:Instruction|Input))"
)


def trim_generation(text: str) -> str:
    """The part of a generated continuation that answers the question asked: up to an
    end-of-turn token, and up to the first line that starts a new problem after the answer
    began (a model without a learned stop writes "a + b = v" and then "计算 c * d 等于多少？..."
    and the rule "last = v" would read the wrong line). A leading echo of the problem is kept."""
    end = _END_MARKERS.search(text)
    if end:
        text = text[: end.start()]
    lines = text.split("\n")
    seen_answer = False
    for i, line in enumerate(lines):
        if _NEW_PROBLEM_LINE.match(line):
            if seen_answer:
                return "\n".join(lines[:i]).rstrip()
        elif line.strip():
            seen_answer = True
    return text.rstrip()


def score_math(prediction_text: str, reference_solution: str) -> dict:
    """Score one model output against one reference solution.

    Returns {"strict": bool, "tolerant": bool, "pred": str, "ref": str}; pred/ref are the
    answers as written ("" when none was found). When the reference's answer is not a single
    number (\\boxed{\\sqrt{3}}, a tuple), both modes compare the normalized LaTeX text.
    """
    ref = extract_answer(reference_solution)
    if ref is None:
        raise ValueError(f"reference solution has no answer to compare with: {reference_solution[:120]!r}")
    pred = extract_answer(prediction_text or "")
    pred_text = pred.text if pred is not None else ""
    if ref.value is None:
        same = pred is not None and pred.value is None and pred.text == ref.text
        return {"strict": same, "tolerant": same, "pred": pred_text, "ref": ref.text}
    return {
        "strict": numbers_equal(pred, ref, "strict"),
        "tolerant": numbers_equal(pred, ref, "tolerant"),
        "pred": pred_text,
        "ref": ref.text,
    }


GRADED_RELATIVE_ERROR = Fraction(1, 100)
"""The graded measure's band: an answer within 1% of the reference (relative error) counts as close."""


def _significant_digits(value: Fraction, count: int) -> tuple[int, str]:
    """(decimal exponent, the first `count` significant digits) of a non-zero |value|, exactly (no rounding)."""
    value = abs(value)
    exponent = len(str(value.numerator // value.denominator)) - 1 if value >= 1 else 0
    if value < 1:
        while value * Fraction(10) ** (-exponent) < 1:
            exponent -= 1
    scaled = value * Fraction(10) ** (count - 1 - exponent)
    return exponent, str(scaled.numerator // scaled.denominator).zfill(count)[:count]


def closeness(pred: _Comparable, ref: _Comparable) -> dict:
    """The graded measure of one answer, which moves before exact answers do:
    within_1pct: |pred - ref| <= 1% of |ref| (ref 0 needs pred 0);
    leading_digits: how many leading significant digits of the reference the prediction gets right
    (same sign, same order of magnitude, then digit by digit; a shorter prediction reads as padded
    with zeros), at most the reference's own significant digits;
    relative_error: |pred - ref| / |ref| as a float (None without a number or when ref is 0).
    No number, or a non-numeric answer: not close, 0 digits."""
    p, r = _as_answer(pred), _as_answer(ref)
    if p is None or r is None or p.value is None or r.value is None:
        return {"within_1pct": False, "leading_digits": 0, "relative_error": None}
    pv, rv = Fraction(p.value), Fraction(r.value)
    if rv == 0:
        return {"within_1pct": pv == 0, "leading_digits": int(pv == 0), "relative_error": None}
    error = abs(pv - rv) / abs(rv)
    digits = 0
    if pv != 0 and (pv < 0) == (rv < 0):
        ref_digits = (
            len(str(r.value).lstrip("-").replace(".", "").lstrip("0").split("E")[0].split("e")[0])
            if isinstance(r.value, Decimal)
            else 17
        )
        ref_digits = max(ref_digits, 1)
        pe, ps = _significant_digits(pv, ref_digits)
        re_, rs = _significant_digits(rv, ref_digits)
        if pe == re_:
            while digits < ref_digits and ps[digits] == rs[digits]:
                digits += 1
    return {"within_1pct": error <= GRADED_RELATIVE_ERROR, "leading_digits": digits, "relative_error": float(error)}


def math_accuracy(scores: Iterable[Mapping]) -> dict:
    """Fraction correct under each mode, from score_math results: {"strict", "tolerant", "n"}."""
    scores = list(scores)
    if not scores:
        raise ValueError("no scored answers: accuracy of an empty set is undefined")
    n = len(scores)
    return {
        "strict": sum(bool(s["strict"]) for s in scores) / n,
        "tolerant": sum(bool(s["tolerant"]) for s in scores) / n,
        "n": n,
    }


# --------------------------------------------------------------------------------------------
# Math problem families (from the wording of the contest's template problems)
# --------------------------------------------------------------------------------------------

_N = r"-?\d+(?:\.\d+)?"
_OPERATORS = {"add": r"\+", "sub": "-", "mul": "[*×]", "div": "[/÷]"}
_FAMILY_PATTERNS: list[tuple[str, re.Pattern]] = [
    *((name, re.compile(rf"计算\s*{_N}\s*{op}\s*{_N}\s*等于多少")) for name, op in _OPERATORS.items()),
    ("power", re.compile(rf"计算\s*{_N}\s*的\s*\d+\s*次方")),
    ("sqrt", re.compile(rf"计算\s*{_N}\s*的平方根")),
    ("linear_equation", re.compile(rf"解方程\s*{_N}\s*x\s*\+\s*{_N}\s*=\s*0")),
    ("function_value", re.compile(rf"当\s*x\s*=\s*{_N}\s*时，\s*求函数\s*y\s*=\s*{_N}\s*x\^\d+\s*的值")),
    ("rectangle_area", re.compile(rf"长方形的长为\s*{_N}\s*厘米，\s*宽为\s*{_N}\s*厘米，\s*请计算其面积")),
    ("average", re.compile(r"求以下数据的平均值")),
    ("discount", re.compile(rf"商品原价为\s*{_N}\s*元，\s*打折后的价格为\s*{_N}\s*元，\s*请计算打折的折扣比例")),
    ("sales_growth", re.compile(rf"去年销售额为\s*{_N}\s*万元，\s*今年销售额增加了\s*{_N}\s*%，\s*请计算今年的销售额")),
]
MATH_FAMILIES = tuple(name for name, _ in _FAMILY_PATTERNS) + ("english_competition", "other")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def math_family(problem: str) -> str:
    """Which family a contest math problem belongs to, from its wording:
    add/sub/mul/div ("计算 a op b 等于多少？"), power ("计算 a 的 n 次方？"), sqrt ("计算 a 的平方根？"),
    linear_equation ("解方程 ax + b = 0"), function_value ("当 x = v 时，求函数 y = ax^n 的值"),
    rectangle_area, average ("求以下数据的平均值：[...]"), discount, sales_growth;
    english_competition for problems with no Chinese characters (the LaTeX competition set);
    other for Chinese wording that fits no template."""
    text = problem.strip()
    for name, pattern in _FAMILY_PATTERNS:
        if pattern.search(text):
            return name
    return "other" if _CJK.search(text) else "english_competition"


def row_family(fmt: str, prompt: str, meta: Optional[Mapping] = None) -> str:
    """A row's family, the one name prep, evaluate and the reports group by: math, the problem's
    (math_family); mcq, its subject (meta["subject"]), else "mcq"."""
    if fmt == "math":
        return math_family(prompt)
    return str((meta or {}).get("subject") or "mcq")


# --------------------------------------------------------------------------------------------
# SQuAD v1.1 F1 / EM (the published definition: Rajpurkar et al. 2016, evaluate-v1.1)
# --------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_squad_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, gold: str) -> bool:
    return normalize_squad_answer(prediction) == normalize_squad_answer(gold)


def squad_f1(prediction: str, gold: str) -> float:
    """Token-bag F1 of the normalized texts (0 when they share no token)."""
    pred_tokens = normalize_squad_answer(prediction).split()
    gold_tokens = normalize_squad_answer(gold).split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict:
    """{"f1": .., "em": ..} in percent: per question the best score over its gold answers,
    averaged over questions."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions; they must pair up")
    if not predictions:
        raise ValueError("no predictions: SQuAD scores of an empty set are undefined")
    f1_total = em_total = 0.0
    for i, (prediction, answers) in enumerate(zip(predictions, golds)):
        if isinstance(answers, str) or not answers:
            raise ValueError(f"question {i}: gold answers must be a non-empty list of strings, got {answers!r}")
        f1_total += max(squad_f1(prediction, gold) for gold in answers)
        em_total += max(float(squad_exact_match(prediction, gold)) for gold in answers)
    n = len(predictions)
    return {"f1": 100.0 * f1_total / n, "em": 100.0 * em_total / n}


def squad_scores_emf1(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict:
    """{"f1": .., "em": ..} in percent by MindFormers' own EmF1Metric (mindformers/core/metric/metric.py),
    the metric the contest scored SQuAD with, against each question's first gold answer (the contest's
    squad_data_process.py keeps answers[0]). Its prints go nowhere."""
    import contextlib
    import io

    from mindformers.core.metric.metric import EmF1Metric

    if len(predictions) != len(golds) or not predictions:
        raise ValueError(
            f"{len(predictions)} predictions for {len(golds)} questions; they must pair up, and not be none"
        )
    metric = EmF1Metric()
    metric.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        metric.update(list(predictions), [answers[0] for answers in golds])  # it edits the list it is given
        result = metric.eval()
    return {"f1": float(result["F1"]), "em": float(result["Em"])}


SQUAD_PROMPT = (
    "Read the passage and answer the question below.\n\n### Instruction:\n{context}\n\n"
    "### Input:\n{question}\n\n### Response:"
)


def squad_prompt(context: str, question: str) -> str:
    """The prompt the contest's SQuAD evaluation used (MindFormers' squad_data_process.py)."""
    return SQUAD_PROMPT.format(context=context, question=question)


def squad_answer_from_generation(generated: str) -> str:
    """The answer span taken from generated text: stripped, first line only (as MindFormers'
    EmF1Metric cuts it before scoring)."""
    return generated.strip().split("\n", 1)[0].strip()


# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------

MCQ_TEMPLATES = {
    # Byte-for-byte the contest's instruction (contest-mcq-sample.jsonl `prompt`), note the space
    # before the newline after the question.
    "en": (
        "Here is a question about {subject}, the correct answer is one of the options A/B/C/D. "
        "Please select the correct option and answer the question with 'The right option is'.\n"
        "Question: {question} \n{options}"
    ),
    # The same request in Chinese; the answer format stays "The right option is X." so one
    # training target and one extractor serve both languages.
    "zh": (
        "以下是关于{subject}的单项选择题，正确答案是 A/B/C/D 中的一个。"
        "请选出正确选项，并以“The right option is”作答。\n"
        "问题：{question} \n{options}"
    ),
}
CHOICE_LETTERS = "ABCD"


def mcq_language(row: Mapping) -> str:
    """'zh' when the question or a choice has CJK characters, else 'en'."""
    text = str(row.get("question", "")) + "".join(map(str, row.get("choices", [])))
    return "zh" if _CJK.search(text) else "en"


def mcq_prompt(row: Mapping, lang: str = "auto") -> str:
    """Prompt for a {question, choices[4], subject?} row. lang: 'auto' (Chinese template when the
    row has CJK characters), 'en', 'zh', or 'contest' (the English template for every row, which
    is what the contest sent, Chinese questions included)."""
    choices = row.get("choices")
    if not isinstance(choices, (list, tuple)) or len(choices) != len(CHOICE_LETTERS):
        raise ValueError(
            f"row {row.get('id', '?')}: 'choices' must hold {len(CHOICE_LETTERS)} options, got {choices!r}"
        )
    if lang == "auto":
        lang = mcq_language(row)
    elif lang == "contest":
        lang = "en"
    if lang not in MCQ_TEMPLATES:
        raise ValueError(f"lang must be auto, contest or one of {', '.join(MCQ_TEMPLATES)}; got {lang!r}")
    subject = str(row.get("subject") or "general knowledge").replace("_", " ")
    options = "\n".join(f"{letter}.{choice}" for letter, choice in zip(CHOICE_LETTERS, choices))
    return MCQ_TEMPLATES[lang].format(subject=subject, question=str(row["question"]).strip(), options=options)


def mcq_reference_output(answer: str) -> str:
    """The contest's target text for an answer letter: 'The right option is C.'"""
    letter = answer.strip().upper()
    if letter not in CHOICE_LETTERS or len(letter) != 1:
        raise ValueError(f"answer must be one of A/B/C/D, got {answer!r}")
    return f"The right option is {letter}."


_L = r"[\(\[]?\s*([A-Da-d])(?![A-Za-z])"
# In priority order: the first phrase that names a letter decides ("选项A是错的，答案是C" is C).
_EXPLICIT_CHOICE = [
    re.compile(
        r"(?:right|correct|best|final)\s+(?:option|answer|choice)\s*(?:is|would be|should be|:)?\s*:?\s*" + _L, re.I
    ),
    re.compile(r"(?:正确答案|正确选项|答案)\s*(?:应该是|应为|是|为)?\s*[:：]?\s*" + _L),
    re.compile(r"\banswer\s*(?:is|:)\s*:?\s*" + _L, re.I),
    re.compile(r"(?:应选|选择|选)\s*" + _L),
]
_PARENTHESIZED = re.compile(r"[\(\[]\s*([A-D])\s*[\)\]]")
_LEADING = re.compile(
    r"^\s*(?:([B-D])(?:\s*[.:、)]|\s|$)|(A)(?:\s*[.:、)]|\s*$|\s+(?![a-z]))"
    r"|([a-d])(?:\s*[.:、)]|\s*$))"
)
_OPTION_WORD = re.compile(r"\boption\s+([A-D])\b", re.I)
_LONE_LETTER = re.compile(r"(?<![A-Za-z'])([A-D])(?![A-Za-z'])")


def _is_article(text: str, letter_end: int, letter: str) -> bool:
    """'a'/'A' used as the English article: followed by a space and a lower-case word, and for
    a capital 'A' also opening a sentence ('Both A and B' names option A; 'A couple' does not)."""
    if letter not in "aA" or re.match(r"\s+[a-z]", text[letter_end:]) is None:
        return False
    if letter == "a":
        return True
    before = text[: letter_end - 1].rstrip(" \t\"'“‘(")
    return before == "" or before[-1] in ".!?:\n。！？："


def extract_choice_letter(text: str) -> Optional[str]:
    """The option letter (A-D) a free-text answer picks, or None. In order:

    1. explicit phrases, in this order, the first that names a letter decides: 'The right
       option is B' / 'correct answer: (c)', '答案是：C' / '正确选项为B', 'answer is D', '选C'
       (a lower-case 'a' there must not be the article: 'the answer is a bit unclear' picks
       nothing);
    2. a parenthesized capital letter: '(D)', '[B]';
    3. a letter opening the text: 'B. xxx', 'C)', 'd', 'B because' — but 'A couple ...' is the
       article, not option A (an opening 'A' followed by a lower-case word is skipped, and a
       lower-case opening letter counts only when punctuation or the end follows it);
    4. 'option C';
    5. exactly one distinct stand-alone capital letter A-D anywhere (an article 'A' excluded).
    Full-width letters and punctuation are read as ASCII."""
    if not text:
        return None
    text = _fullwidth_to_ascii(text)
    for pattern in _EXPLICIT_CHOICE:
        for m in pattern.finditer(text):
            letter = m.group(1)
            if letter == "a" and _is_article(text, m.end(1), letter):
                continue
            return letter.upper()
    m = _PARENTHESIZED.search(text)
    if m:
        return m.group(1)
    m = _LEADING.match(text)
    if m:
        return next(g for g in m.groups() if g).upper()
    m = _OPTION_WORD.search(text)
    if m:
        return m.group(1).upper()
    letters = {m.group(1) for m in _LONE_LETTER.finditer(text) if not _is_article(text, m.end(1), m.group(1))}
    if len(letters) == 1:
        return letters.pop()
    return None


def answer_verdict(fmt: str, answer: str, reference: str) -> dict:
    """The one rule every place that scores a generated answer applies (evaluate, bundle, verify):
    math: the answer trimmed to its first answer (a base model does not stop where a tuned one does),
    then the contest rule (strict) and the documented tolerance; mcq: the extracted letter equals the
    reference letter (both verdicts the same). Returns {strict, tolerant, extracted, within_1pct,
    leading_digits}: the last two are `closeness`, the graded measure (mcq: the letter verdict, None)."""
    if fmt == "math":
        trimmed = trim_generation(answer)
        s = score_math(trimmed, reference)
        graded = closeness(trimmed, reference) if s["pred"] else closeness(None, reference)
        return {
            "strict": bool(s["strict"]),
            "tolerant": bool(s["tolerant"]),
            "extracted": s.get("pred"),
            "within_1pct": graded["within_1pct"],
            "leading_digits": graded["leading_digits"],
        }
    letter = extract_choice_letter(answer)
    return {
        "strict": letter == reference,
        "tolerant": letter == reference,
        "extracted": letter,
        "within_1pct": letter == reference,
        "leading_digits": None,
    }
