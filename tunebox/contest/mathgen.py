"""The 2024 Ascend contest's stage-1 math problems, as templates that can be both generated and solved.

Every Chinese family below was reverse-engineered from the 971 real rows in
../shared/data/math/contest-sample.jsonl, and `solve(problem)` reproduces each computable real
row's solution string byte for byte. What the contest's own generator evidently did:

  add/sub/mul/div  operands a "%.2f" in [-10000, 10000]; the result is Python's
      `decimal` at its default precision (28 significant digits, ROUND_HALF_EVEN): sums keep two
      decimals ("9603.20"), products four ("-20039957.1680"), quotients 28 digits
      ("0.8746954463782105330487925430"), tiny quotients in E notation.
  power           base "%.2f" in [-1000, 1000], exponent 0..5, Decimal ** int: exact, trailing zeros
                  kept ("888057908.928000"), x^0 = "1". The label writes "-456.58^4 = 4345..."
                  meaning (-456.58)^4.
  sqrt            radicand "%.2f" in (0, 10000], Decimal.sqrt(): 28 digits, trailing zeros kept.
  linear_equation "解方程 ax + b = 0", a, b integers in [-100, 100]; the label is the Python float
                  (0 - b) / a printed with repr ("-15.0", "2.6666666666666665").
  function_value  y = a x^n at x "%.2f" in (0, 10], a in 1..100, n in 1..100:
                  Decimal(a) * Decimal(x) ** n, each step rounded to 28 digits (so the 28th digit
                  can differ from the exactly rounded value), E notation for large/small values.
  rectangle_area  integer sides 1..100: "面积为 {a*b} 平方厘米".
  sales_growth    a * (100 + b) / 100 as a Python float ("99.5", "135.0"). The sample cannot tell
                  this from round(a * (1 + b/100), 2) (they agree everywhere), but it rules out the
                  bare a * (1 + b/100): that prints float noise for 28% of inputs and none of the
                  real labels has any.
  discount        (a - b) / a * 100 as a Python float, the share taken off in percent. Only this
                  operation order reproduces every real label (line 189: 11.267605633802818).
  average         3..10 integers in 1..100: sum / len as a Python float.

The real sample also holds ~2% English competition problems (MATH-style, LaTeX, answers in
\\boxed{}); those are not computable from templates and `solve` returns None for them. The
`english_word` family is ours: a few English templates with worked solutions and computed
\\boxed{} answers, in the same register, so a generated mix can keep an English share.

Labels that are wrong although they follow the contest's formula: `label_sanity_issue` finds them
(discount rows whose "discounted" price is above the original price, which the contest labels
with a negative discount, e.g. line 10: 16 -> 90 yuan labelled -462.5).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from typing import Callable, Optional

from tunebox.contest.scoring import math_family

# The contest used the decimal module's default context; name it so worker processes and callers
# that changed their own thread's context still format identically.
CONTEST_DECIMAL = Context(prec=28, rounding=ROUND_HALF_EVEN)

ZH, EN = "zh", "en"


@dataclass(frozen=True)
class Family:
    name: str
    lang: str
    make: Optional[Callable[[random.Random], tuple[str, str]]]  # None: cannot be generated
    solve: Optional[Callable[[str], Optional[str]]]  # None: not computable
    # How many different problems `make` can write, when few enough to matter: the contest's
    # ranges give rectangle_area 100 x 100 problems, so 14,000 generated rows must repeat some.
    distinct: Optional[int] = None


# ---- number formats ---------------------------------------------------------------------------
def _cents(rng: random.Random, lo: int, hi: int) -> str:
    """A "%.2f" string for a uniform multiple of 0.01 in [lo/100, hi/100] (exact: n/100 as a float
    is within half an ulp of the decimal, and "%.2f" rounds correctly)."""
    return "%.2f" % (rng.randint(lo, hi) / 100)


# ---- arithmetic: 计算 a OP b 等于多少？ ---------------------------------------------------------
_ARITH_RE = re.compile(r"计算 (-?\d+(?:\.\d+)?) ([-+*/]) (-?\d+(?:\.\d+)?) 等于多少？")
_ARITH_OPS = {
    "+": CONTEST_DECIMAL.add,
    "-": CONTEST_DECIMAL.subtract,
    "*": CONTEST_DECIMAL.multiply,
    "/": CONTEST_DECIMAL.divide,
}


def _arith_solution(a: str, op: str, b: str) -> Optional[str]:
    if op == "/" and Decimal(b) == 0:
        return None
    return f"{a} {op} {b} = {_ARITH_OPS[op](Decimal(a), Decimal(b))}"


def _arith_maker(op: str):
    def make(rng: random.Random) -> tuple[str, str]:
        while True:
            a, b = _cents(rng, -1_000_000, 1_000_000), _cents(rng, -1_000_000, 1_000_000)
            solution = _arith_solution(a, op, b)
            if solution is not None:
                return f"计算 {a} {op} {b} 等于多少？", solution

    return make


def _arith_solver(op: str):
    def solve(problem: str) -> Optional[str]:
        m = _ARITH_RE.fullmatch(problem)
        if not m or m.group(2) != op:
            return None
        return _arith_solution(m.group(1), op, m.group(3))

    return solve


# ---- power: 计算 a 的 n 次方？ ------------------------------------------------------------------
_POWER_RE = re.compile(r"计算 (-?\d+(?:\.\d+)?) 的 (\d+) 次方？")


def _power_solution(a: str, n: str) -> str:
    return f"{a}^{n} = {CONTEST_DECIMAL.power(Decimal(a), int(n))}"


def make_power(rng: random.Random) -> tuple[str, str]:
    a, n = _cents(rng, -100_000, 100_000), str(rng.randint(0, 5))
    if n == "0" and a == "0.00":  # 0^0 has no value
        a = "0.01"
    return f"计算 {a} 的 {n} 次方？", _power_solution(a, n)


def solve_power(problem: str) -> Optional[str]:
    m = _POWER_RE.fullmatch(problem)
    if not m or (Decimal(m.group(1)) == 0 and int(m.group(2)) == 0):  # 0^0 is undefined in decimal
        return None
    return _power_solution(m.group(1), m.group(2))


# ---- sqrt: 计算 a 的平方根？ ---------------------------------------------------------------------
_SQRT_RE = re.compile(r"计算 (\d+(?:\.\d+)?) 的平方根？")


def _sqrt_solution(a: str) -> str:
    return f"√{a} = {CONTEST_DECIMAL.sqrt(Decimal(a))}"


def make_sqrt(rng: random.Random) -> tuple[str, str]:
    a = _cents(rng, 1, 1_000_000)
    return f"计算 {a} 的平方根？", _sqrt_solution(a)


def solve_sqrt(problem: str) -> Optional[str]:
    m = _SQRT_RE.fullmatch(problem)
    return _sqrt_solution(m.group(1)) if m else None


# ---- linear equation: 解方程 ax + b = c -----------------------------------------------------------
_LINEAR_RE = re.compile(r"解方程 (-?\d+)x \+ (-?\d+) = (-?\d+)")


def _linear_solution(a: int, b: int, c: int) -> str:
    return f"方程的解为：{(c - b) / a!r}"


def make_linear_equation(rng: random.Random) -> tuple[str, str]:
    a = rng.choice((-1, 1)) * rng.randint(1, 100)
    b = rng.randint(-100, 100)
    return f"解方程 {a}x + {b} = 0", _linear_solution(a, b, 0)


def solve_linear_equation(problem: str) -> Optional[str]:
    m = _LINEAR_RE.fullmatch(problem)
    if not m or int(m.group(1)) == 0:
        return None
    return _linear_solution(int(m.group(1)), int(m.group(2)), int(m.group(3)))


# ---- function value: 当 x = X 时，求函数 y = ax^n 的值 -------------------------------------------
_FUNCTION_RE = re.compile(r"当 x = (-?\d+(?:\.\d+)?) 时，求函数 y = (-?\d+)x\^(\d+) 的值")


def _function_solution(x: str, a: str, n: str) -> str:
    ctx = CONTEST_DECIMAL
    return f"函数的值为：{ctx.multiply(Decimal(a), ctx.power(Decimal(x), int(n)))}"


def make_function_value(rng: random.Random) -> tuple[str, str]:
    x, a, n = _cents(rng, 1, 1000), str(rng.randint(1, 100)), str(rng.randint(1, 100))
    return f"当 x = {x} 时，求函数 y = {a}x^{n} 的值", _function_solution(x, a, n)


def solve_function_value(problem: str) -> Optional[str]:
    m = _FUNCTION_RE.fullmatch(problem)
    if not m or (Decimal(m.group(1)) == 0 and int(m.group(3)) == 0):
        return None
    return _function_solution(m.group(1), m.group(2), m.group(3))


# ---- rectangle area -------------------------------------------------------------------------------
_AREA_RE = re.compile(r"一个长方形的长为 (\d+) 厘米，宽为 (\d+) 厘米，请计算其面积。")


def make_rectangle_area(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 100), rng.randint(1, 100)
    return f"一个长方形的长为 {a} 厘米，宽为 {b} 厘米，请计算其面积。", f"面积为 {a * b} 平方厘米"


def solve_rectangle_area(problem: str) -> Optional[str]:
    m = _AREA_RE.fullmatch(problem)
    return f"面积为 {int(m.group(1)) * int(m.group(2))} 平方厘米" if m else None


# ---- sales growth ---------------------------------------------------------------------------------
_SALES_RE = re.compile(r"去年销售额为 (\d+) 万元，今年销售额增加了 (\d+)%，请计算今年的销售额。")


def make_sales_growth(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 100), rng.randint(1, 100)
    return f"去年销售额为 {a} 万元，今年销售额增加了 {b}%，请计算今年的销售额。", repr(a * (100 + b) / 100)


def solve_sales_growth(problem: str) -> Optional[str]:
    m = _SALES_RE.fullmatch(problem)
    return repr(int(m.group(1)) * (100 + int(m.group(2))) / 100) if m else None


# ---- discount -------------------------------------------------------------------------------------
_DISCOUNT_RE = re.compile(r"商品原价为 (\d+) 元，打折后的价格为 (\d+) 元，请计算打折的折扣比例。")


def make_discount(rng: random.Random) -> tuple[str, str]:
    # The contest drew both prices independently, so a fifth of its rows "discount" to a higher
    # price and carry a negative label. We only generate real discounts: a model should not learn
    # that answer to a question that has none.
    a = rng.randint(2, 100)
    b = rng.randint(1, a - 1)
    return f"商品原价为 {a} 元，打折后的价格为 {b} 元，请计算打折的折扣比例。", repr((a - b) / a * 100)


def solve_discount(problem: str) -> Optional[str]:
    m = _DISCOUNT_RE.fullmatch(problem)
    if not m or int(m.group(1)) == 0:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    return repr((a - b) / a * 100)


# ---- average --------------------------------------------------------------------------------------
_AVERAGE_RE = re.compile(r"求以下数据的平均值：\[(-?\d+(?:, -?\d+)*)\]")


def make_average(rng: random.Random) -> tuple[str, str]:
    values = [rng.randint(1, 100) for _ in range(rng.randint(3, 10))]
    return f"求以下数据的平均值：{values}", f"平均值为 {sum(values) / len(values)!r}"


def solve_average(problem: str) -> Optional[str]:
    m = _AVERAGE_RE.fullmatch(problem)
    if not m:
        return None
    values = [int(v) for v in m.group(1).split(", ")]
    return f"平均值为 {sum(values) / len(values)!r}"


# ---- english_word: our own English templates with worked solutions ---------------------------------
def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _en_lcm(a: int, b: int) -> tuple[str, str]:
    g = math.gcd(a, b)
    return (
        f"What is the least common multiple of ${a}$ and ${b}$?",
        f"Since $\\gcd({a}, {b}) = {g}$, we have $\\operatorname{{lcm}}({a}, {b}) = "
        f"\\frac{{{a} \\cdot {b}}}{{{g}}} = \\boxed{{{_lcm(a, b)}}}$.",
    )


_GROUPS = ("club", "chess club", "book club", "student council", "robotics team", "choir")
_OFFICES = {
    2: ("president", "secretary"),
    3: ("president", "vice-president", "treasurer"),
    4: ("president", "vice-president", "secretary", "treasurer"),
}


_TIMES = " \\times "


def _spoken_list(items) -> str:
    items = [f"a {item}" for item in items]
    return " and ".join(items) if len(items) == 2 else ", ".join(items[:-1]) + " and " + items[-1]


def _en_officers(group: str, n: int, k: int) -> Optional[tuple[str, str]]:
    if group not in _GROUPS or k not in _OFFICES or n < k:
        return None
    offices = _OFFICES[k]
    factors = list(range(n, n - k, -1))
    rest = [f"{f} for {office}" for f, office in zip(factors[1:], offices[1:])]
    choices = rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + " and " + rest[-1]
    return (
        f"A {group} has {n} members. In how many ways can it choose {_spoken_list(offices)} if no member "
        f"can hold more than one office?",
        f"There are {n} choices for {offices[0]}, then {choices}, so there are "
        f"${_TIMES.join(map(str, factors))} = \\boxed{{{math.prod(factors)}}}$ ways.",
    )


def _en_coins(n: int, k: int) -> tuple[str, str]:
    ways, outcomes = math.comb(n, k), 2**n
    p = Fraction(ways, outcomes)
    return (
        f"We flip {n} fair coins. What is the probability that exactly {k} of them come up heads? "
        f"Express your answer as a common fraction.",
        f"There are $2^{{{n}}} = {outcomes}$ equally likely outcomes, and $\\binom{{{n}}}{{{k}}} = {ways}$ of "
        f"them have exactly {k} heads, so the probability is "
        f"$\\frac{{{ways}}}{{{outcomes}}} = \\boxed{{\\dfrac{{{p.numerator}}}{{{p.denominator}}}}}$.",
    )


def _en_series(a: int, d: int, n: int) -> tuple[str, str]:
    last = a + (n - 1) * d
    return (
        f"What is the sum of the arithmetic sequence ${a}, {a + d}, {a + 2 * d}, \\ldots, {last}$?",
        f"The common difference is ${d}$, so the sequence has $\\frac{{{last} - {a}}}{{{d}}} + 1 = {n}$ terms. "
        f"Its sum is $\\frac{{{n} \\cdot ({a} + {last})}}{{2}} = \\boxed{{{n * (a + last) // 2}}}$.",
    )


def _times_x(coef: int) -> str:
    return "x" if coef == 1 else f"{coef}x"


def _linear_side(coef: int, const: int) -> str:
    return f"{_times_x(coef)} {'-' if const < 0 else '+'} {abs(const)}"


def _en_linear(a: int, b: int, c: int, d: int) -> Optional[tuple[str, str]]:
    if a <= c or (d - b) % (a - c):
        return None
    x = (d - b) // (a - c)
    return (
        f"Solve for $x$: ${_linear_side(a, b)} = {_linear_side(c, d)}$.",
        f"Moving the $x$ terms to the left and the constants to the right gives "
        f"${_times_x(a - c)} = {d} - {b if b >= 0 else f'({b})'} = {d - b}$, so $x = \\frac{{{d - b}}}{{{a - c}}} "
        f"= \\boxed{{{x}}}$.",
    )


_ITEMS = ("jacket", "bicycle", "lamp", "backpack", "pair of shoes", "tent")


def _en_sale(percent: int, item: str, price: int) -> Optional[tuple[str, str]]:
    kept = 100 - percent
    if item not in _ITEMS or not 0 < kept < 100 or (100 * price) % kept:
        return None
    return (
        f"After a ${percent}\\%$ discount, a {item} costs $\\${price}$. What was its original price, in dollars?",
        f"If the original price is $x$ dollars, then $\\frac{{{kept}}}{{100}}x = {price}$, so "
        f"$x = \\frac{{100 \\cdot {price}}}{{{kept}}} = \\boxed{{{100 * price // kept}}}$.",
    )


def _en_multiples(n: int, a: int, b: int) -> tuple[str, str]:
    lcm = _lcm(a, b)
    na, nb, both = n // a, n // b, n // lcm
    return (
        f"How many positive integers less than or equal to ${n}$ are divisible by ${a}$ or ${b}$?",
        f"There are $\\lfloor {n}/{a} \\rfloor = {na}$ multiples of ${a}$ and $\\lfloor {n}/{b} \\rfloor = {nb}$ "
        f"multiples of ${b}$. The numbers divisible by both are the multiples of "
        f"$\\operatorname{{lcm}}({a}, {b}) = {lcm}$, and there are $\\lfloor {n}/{lcm} \\rfloor = {both}$ of them. "
        f"By inclusion-exclusion the count is ${na} + {nb} - {both} = \\boxed{{{na + nb - both}}}$.",
    )


def _make_en_linear(rng: random.Random) -> tuple[str, str]:
    c = rng.randint(1, 14)
    a = rng.randint(c + 1, 15)
    x = rng.randint(-20, 20)
    while True:
        b = rng.randint(-50, 50)
        d = (a - c) * x + b
        if b and d:
            return _en_linear(a, b, c, d)


def _make_en_sale(rng: random.Random) -> tuple[str, str]:
    percent = 5 * rng.randint(1, 12)
    original = 20 * rng.randint(1, 100)  # a multiple of 20: every 5% step leaves whole dollars
    return _en_sale(percent, rng.choice(_ITEMS), original * (100 - percent) // 100)


def _make_en_lcm(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(2, 200)
    b = rng.randint(2, 199)
    return _en_lcm(a, b + (b >= a))  # two different numbers


def _make_en_multiples(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(2, 11)
    return _en_multiples(rng.randint(50, 5000), a, rng.randint(a + 1, 12))


_EN_MAKERS = (
    _make_en_lcm,
    lambda rng: _en_officers(rng.choice(_GROUPS), rng.randint(5, 300), rng.randint(2, 4)),
    lambda rng: (lambda n: _en_coins(n, rng.randint(1, n)))(rng.randint(2, 30)),
    lambda rng: _en_series(rng.randint(1, 100), rng.randint(2, 15), rng.randint(5, 60)),
    _make_en_linear,
    _make_en_sale,
    _make_en_multiples,
)

_EN_SOLVERS: tuple[tuple[re.Pattern, Callable[..., Optional[tuple[str, str]]]], ...] = (
    (re.compile(r"What is the least common multiple of \$(\d+)\$ and \$(\d+)\$\?"), _en_lcm),
    (
        re.compile(
            r"A ([a-z ]+) has (\d+) members\. In how many ways can it choose (.*) if no member can hold more "
            r"than one office\?"
        ),
        lambda group, n, offices: _en_officers(group, n, offices.count(" a ") + 1),
    ),
    (re.compile(r"We flip (\d+) fair coins\. What is the probability that exactly (\d+) of them .*"), _en_coins),
    (
        re.compile(r"What is the sum of the arithmetic sequence \$(-?\d+), (-?\d+), (-?\d+), \\ldots, (-?\d+)\$\?"),
        lambda a, second, third, last: _en_series_checked(a, second, third, last),
    ),
    (
        re.compile(r"Solve for \$x\$: \$(\d*)x ([-+]) (\d+) = (\d*)x ([-+]) (\d+)\$\."),
        lambda a, sb, b, c, sd, d: _en_linear(
            int(a or 1), int(b) * (-1 if sb == "-" else 1), int(c or 1), int(d) * (-1 if sd == "-" else 1)
        ),
    ),
    (re.compile(r"After a \$(\d+)\\%\$ discount, a ([a-z ]+) costs \$\\\$(\d+)\$\. .*"), _en_sale),
    (
        re.compile(
            r"How many positive integers less than or equal to \$(\d+)\$ are divisible by \$(\d+)\$ or "
            r"\$(\d+)\$\?"
        ),
        _en_multiples,
    ),
)


def _en_series_checked(a: int, second: int, third: int, last: int) -> Optional[tuple[str, str]]:
    d = second - a
    if d <= 0 or third - second != d or (last - a) % d:
        return None
    return _en_series(a, d, (last - a) // d + 1)


def make_english_word(rng: random.Random) -> tuple[str, str]:
    return _EN_MAKERS[rng.randrange(len(_EN_MAKERS))](rng)


def _match_english_word(problem: str) -> Optional[tuple[str, str]]:
    for pattern, build in _EN_SOLVERS:
        m = pattern.fullmatch(problem)
        if m:
            args = [int(g) if g and re.fullmatch(r"-?\d+", g) else g for g in m.groups()]
            try:
                row = build(*args)
            except (ValueError, ZeroDivisionError):
                return None
            return row if row and row[0] == problem else None  # only our exact wording
    return None


def solve_english_word(problem: str) -> Optional[str]:
    row = _match_english_word(problem)
    return row[1] if row else None


# ---- the registry ---------------------------------------------------------------------------------
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("add", ZH, _arith_maker("+"), _arith_solver("+")),
        Family("sub", ZH, _arith_maker("-"), _arith_solver("-")),
        Family("mul", ZH, _arith_maker("*"), _arith_solver("*")),
        Family("div", ZH, _arith_maker("/"), _arith_solver("/")),
        Family("power", ZH, make_power, solve_power, distinct=200_001 * 6 - 1),
        Family("sqrt", ZH, make_sqrt, solve_sqrt, distinct=1_000_000),
        Family("linear_equation", ZH, make_linear_equation, solve_linear_equation, distinct=200 * 201),
        Family("function_value", ZH, make_function_value, solve_function_value),
        Family("rectangle_area", ZH, make_rectangle_area, solve_rectangle_area, distinct=100 * 100),
        Family("sales_growth", ZH, make_sales_growth, solve_sales_growth, distinct=100 * 100),
        Family("discount", ZH, make_discount, solve_discount, distinct=99 * 100 // 2),
        Family("average", ZH, make_average, solve_average),
        Family("english_word", EN, make_english_word, solve_english_word),
        # The real English rows (MATH-style competition problems): recognised, not generated or solved.
        Family("english_competition", EN, None, None),
        Family("other", ZH, None, None),
    )
}

GENERATABLE = tuple(name for name, f in FAMILIES.items() if f.make is not None)

# The family mix of the 971 real rows (tests check it against the profiler's counts on the sample).
# The sample's English competition share goes to english_word, our generatable English family.
CONTEST_MIX: dict[str, int] = {
    "sub": 167,
    "add": 161,
    "div": 151,
    "mul": 149,
    "power": 80,
    "sqrt": 70,
    "linear_equation": 60,
    "function_value": 38,
    "average": 34,
    "rectangle_area": 17,
    "sales_growth": 12,
    "discount": 10,
    "english_word": 22,
}

_CJK_RE = re.compile(r"[\u3400-\u9fff\uff00-\uffef]")


def language_of(text: str) -> str:
    return ZH if _CJK_RE.search(text) else EN


def family_of(problem: str) -> str:
    """The family of a problem: scoring.math_family (the one classifier of the contest's
    families), refined by one name of ours: English text in one of our english_word templates is
    'english_word' rather than 'english_competition'."""
    name = math_family(problem)
    if name == "english_competition" and _match_english_word(problem.strip()):
        return "english_word"
    return name


def solve(problem: str, family: Optional[str] = None) -> Optional[str]:
    """The solution string the contest's formatter writes for `problem`, or None if the problem is
    not one of the computable templates (or is degenerate, e.g. a division by zero)."""
    problem = problem.strip()
    name = family or family_of(problem)
    fam = FAMILIES.get(name)
    if fam is None or fam.solve is None:
        return None
    return fam.solve(problem)


def label_sanity_issue(problem: str, solution: str, family: Optional[str] = None) -> Optional[str]:
    """Why a label is wrong even though it follows the contest's formula, or None.

    The one case in the real data: a "discount" to a higher price. The contest labels it with a
    negative percentage (line 10 of the sample: 16 -> 90 yuan, -462.5); there is no discount.
    """
    name = family or family_of(problem)
    if name == "discount":
        m = _DISCOUNT_RE.fullmatch(problem.strip())
        if m and int(m.group(2)) > int(m.group(1)):
            return (
                f"price rises from {m.group(1)} to {m.group(2)} yuan: not a discount, yet labelled as one ({solution})"
            )
    return None


def make(family: str, rng: random.Random) -> tuple[str, str]:
    fam = FAMILIES[family]
    if fam.make is None:
        raise ValueError(f"family {family!r} cannot be generated; generatable: {', '.join(GENERATABLE)}")
    return fam.make(rng)
