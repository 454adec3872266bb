"""tunebox/contest/mathgen.py at its edges: the English templates' guards (what they refuse, what they accept at
the boundary), the solvers on text that is not theirs, and the messages. Written against the mutants that
survived the contest group's run with tests/test_generate.py and tests/test_mutants_contest.py
(docs/TESTING.md); each test names its mutmut mutants, and every expected text is written out by hand."""

from __future__ import annotations

import random

import pytest

from tunebox.contest import mathgen


def test_solvers_return_none_for_text_that_is_not_theirs():
    """Mutants: x_solve_sqrt__mutmut_4, x_solve_rectangle_area__mutmut_4, x_solve_sales_growth__mutmut_4
    (`if m` turned into `if m or True`: an AttributeError on None), x_solve_english_word__mutmut_4."""
    assert mathgen.solve("计算 abc 的平方根？", "sqrt") is None
    assert mathgen.solve("一个长方形的长为 x 厘米，宽为 3 厘米，请计算其面积。", "rectangle_area") is None
    assert mathgen.solve("去年销售额为 x 万元，今年销售额增加了 5%，请计算今年的销售额。", "sales_growth") is None
    assert mathgen.solve("What is 2 + 2?", "english_word") is None


def test_arithmetic_solver_refuses_another_operator():
    """The "+" solver given a subtraction, or text that is no arithmetic problem: None. Mutant:
    tunebox.contest.mathgen.x__arith_solver__mutmut_3 (`not m or ...` -> `not m and ...`: the sum of a
    subtraction's operands; an AttributeError on no match). _arith_solver runs when FAMILIES is built, at
    import: mutmut cannot switch it on; `tests/mutants.py --fresh` can."""
    assert mathgen.solve("计算 1.00 - 2.00 等于多少？", "add") is None
    assert mathgen.solve("计算 1.00 - 2.00 等于多少？", "sub") == "1.00 - 2.00 = -1.00"
    assert mathgen.solve("计算 abc 等于多少？", "add") is None


def test_officers_guard():
    """An unknown group, five offices, fewer members than offices: None; exactly as many members as offices:
    3 x 2 x 1 = 6 ways. Mutants: x__en_officers__mutmut_1 (`or` -> `and` before `n < k`: a KeyError for five
    offices), _2 (`and` between the group and office tests), _5 (`n < k` -> `n <= k`)."""
    assert mathgen._en_officers("band", 10, 2) is None
    assert mathgen._en_officers("club", 10, 5) is None
    assert mathgen._en_officers("club", 2, 3) is None
    assert mathgen._en_officers("choir", 3, 3) == (
        "A choir has 3 members. In how many ways can it choose a president, a vice-president and a treasurer "
        "if no member can hold more than one office?",
        "There are 3 choices for president, then 2 for vice-president and 1 for treasurer, so there are "
        "$3 \\times 2 \\times 1 = \\boxed{6}$ ways.",
    )
    five = (
        "A club has 10 members. In how many ways can it choose a president, a vice-president, a secretary, "
        "a treasurer and a coach if no member can hold more than one office?"
    )
    assert mathgen.solve(five, "english_word") is None


def test_linear_equation_with_a_zero_constant():
    """3x + 0 = x + 4: "+ 0" on the left, "- 0" in the working (not "(0)"), x = 4/2 = 2. Mutants:
    x__linear_side__mutmut_5, _6 (`const < 0` -> `<= 0`, `< 1`: "3x - 0"), x__en_linear__mutmut_22, _23
    (`b >= 0` -> `> 0`, `>= 1`: "4 - (0)")."""
    assert mathgen._linear_side(3, 0) == "3x + 0"
    assert mathgen._en_linear(3, 0, 1, 4) == (
        "Solve for $x$: $3x + 0 = x + 4$.",
        "Moving the $x$ terms to the left and the constants to the right gives $2x = 4 - 0 = 4$, so "
        "$x = \\frac{4}{2} = \\boxed{2}$.",
    )
    assert mathgen.solve("Solve for $x$: $3x + 0 = x + 4$.", "english_word") == (
        "Moving the $x$ terms to the left and the constants to the right gives $2x = 4 - 0 = 4$, so "
        "$x = \\frac{4}{2} = \\boxed{2}$."
    )


def test_linear_equation_guard():
    """a < c (x would be -2) and a == c (no x term left): None. Mutants: x__en_linear__mutmut_1 (`or` -> `and`:
    1x + 2 = 3x + 6 solved), _2 (`a <= c` -> `a < c`: a modulo by zero for a == c)."""
    assert mathgen._en_linear(1, 2, 3, 6) is None
    assert mathgen._en_linear(2, 1, 2, 5) is None


def test_sale_guard():
    """Refused: a 30% discount to $10 (100 x 10 = 1000 is not a multiple of 70), an unknown item, 100% off
    (nothing kept), 0% off (no discount). Accepted at the edge: 99% off to $3, kept 1%: $300. Mutants:
    x__en_sale__mutmut_4 (`or` -> `and` before the divisibility test), _5 (`and` after the item test), _8
    (`0 < kept` -> `1 < kept`), _9 (`0 <= kept`: a modulo by zero), _10, _11 (`kept < 100` -> `<= 100`,
    `< 101`)."""
    assert mathgen._en_sale(30, "lamp", 10) is None
    assert mathgen._en_sale(20, "spaceship", 80) is None
    assert mathgen._en_sale(100, "lamp", 5) is None
    assert mathgen._en_sale(0, "lamp", 5) is None
    assert mathgen._en_sale(99, "tent", 3) == (
        "After a $99\\%$ discount, a tent costs $\\$3$. What was its original price, in dollars?",
        "If the original price is $x$ dollars, then $\\frac{1}{100}x = 3$, so "
        "$x = \\frac{100 \\cdot 3}{1} = \\boxed{300}$.",
    )


def test_series_guard():
    """Refused: 1, 3, 6 (differences 2 then 3), a falling 5, 3, 1, ..., -1, a constant 4, 4, 4, ..., 4.
    Accepted: a difference of 1, 1 + 2 + ... + 5 = 15. Mutants: x__en_series_checked__mutmut_3 (`or` -> `and`
    before the divisibility test), _4 (`and` after `d <= 0`), _5 (`d < 0`: a modulo by zero), _6 (`d <= 1`)."""
    assert mathgen._en_series_checked(1, 3, 6, 9) is None
    assert mathgen._en_series_checked(5, 3, 1, -1) is None
    assert mathgen._en_series_checked(4, 4, 4, 4) is None
    assert mathgen._en_series_checked(1, 2, 3, 5) == (
        "What is the sum of the arithmetic sequence $1, 2, 3, \\ldots, 5$?",
        "The common difference is $1$, so the sequence has $\\frac{5 - 1}{1} + 1 = 5$ terms. "
        "Its sum is $\\frac{5 \\cdot (1 + 5)}{2} = \\boxed{15}$.",
    )


def test_english_word_only_in_our_exact_wording():
    """A coin problem that asks about tails matches the template's pattern (its tail is `.*`) but is not our
    text: None, and its family stays english_competition. Mutants: x__match_english_word__mutmut_15 (`row if
    ... or True`), _16 (`row and row[0] == problem` -> `or`)."""
    tails = "We flip 5 fair coins. What is the probability that exactly 2 of them come up tails?"
    assert mathgen._match_english_word(tails) is None
    assert mathgen.family_of(tails) == "english_competition"


def test_discount_sanity_message_and_boundary():
    """16 -> 90 yuan is named with both prices; an unchanged price (50 -> 50) is not a rise. Mutants:
    x_label_sanity_issue__mutmut_13 (`>` -> `>=`), _18 (the first price shown as the second)."""
    rise = "商品原价为 16 元，打折后的价格为 90 元，请计算打折的折扣比例。"
    assert mathgen.label_sanity_issue(rise, "-462.5") == (
        "price rises from 16 to 90 yuan: not a discount, yet labelled as one (-462.5)"
    )
    assert mathgen.label_sanity_issue("商品原价为 50 元，打折后的价格为 50 元，请计算打折的折扣比例。", "0.0") is None


def test_make_names_the_generatable_families():
    """Mutants: x_make__mutmut_3, _4, _5 (the message dropped, or its list joined otherwise)."""
    with pytest.raises(ValueError) as exc:
        mathgen.make("english_competition", random.Random(0))
    assert str(exc.value) == (
        "family 'english_competition' cannot be generated; generatable: add, sub, mul, div, power, sqrt, "
        "linear_equation, function_value, rectangle_area, sales_growth, discount, average, english_word"
    )


def test_row_family_by_format():
    """math: the problem's family from its wording; mcq: meta's subject, else "mcq" (no meta, no subject, an
    empty one). Mutants: tunebox.contest.scoring.x_row_family__mutmut_1-_12 (no fast test called it before; all
    12 killed in run 13 of docs/TESTING.md)."""
    from tunebox.contest.scoring import row_family

    assert row_family("math", "计算 1.00 + 2.00 等于多少？") == "add"
    assert row_family("math", "计算 4.00 的平方根？", {"subject": "algebra"}) == "sqrt"
    assert row_family("mcq", "Which?", {"subject": "biology"}) == "biology"
    assert row_family("mcq", "Which?", {"subject": 7}) == "7"
    assert row_family("mcq", "Which?") == "mcq"
    assert row_family("mcq", "Which?", {"subject": ""}) == "mcq"
    assert row_family("mcq", "Which?", {"topic": "x"}) == "mcq"
