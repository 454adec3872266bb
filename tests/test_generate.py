"""The contest math templates (tunebox.contest.mathgen) and the generator (tunebox.data.synthetic, run by
jobs.generate), on the real contest sample: every computable real label is rebuilt byte for byte from its
problem, generated rows solve back to their own labels, and generation is deterministic per seed."""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from benches.bench_prep import time_generate
from jobs import generate as gen
from tunebox.contest import mathgen
from tunebox.contest.scoring import extract_answer_number
from tunebox.data import synthetic
from tunebox.io import InputError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math" / "contest-sample.jsonl"


def real_rows():
    with open(REAL, encoding="utf-8") as fh:
        return [(i, json.loads(line)) for i, line in enumerate(fh, start=1)]


def read_shards(out_dir: Path) -> list[str]:
    return [line for part in sorted(out_dir.glob("part-*.jsonl")) for line in part.read_text("utf-8").splitlines()]


# ---- the real sample ---------------------------------------------------------------------------
def test_every_computable_real_row_is_regenerated_exactly():
    mismatches, solved, families = [], Counter(), Counter()
    for line, row in real_rows():
        family = mathgen.family_of(row["problem"])
        families[family] += 1
        expected = mathgen.solve(row["problem"])
        if family == "english_competition":
            assert expected is None, f"line {line}: a competition problem is not computable"
            continue
        solved[family] += 1
        if expected != row["solution"]:
            mismatches.append((line, row["solution"], expected))
    assert mismatches == []
    # Every Chinese template family of the sample was exercised, and only English rows are left over.
    assert set(solved) == set(mathgen.GENERATABLE) - {"english_word"}
    assert sum(solved.values()) + families["english_competition"] == len(real_rows())
    assert families["english_competition"] > 0 and "other" not in families


def test_wrong_real_labels_follow_the_formula_and_are_flagged():
    # Lines 10 and 113: the "discounted" price is above the original; the contest still computes
    # (a - b) / a * 100 and labels them -462.5 and -1200.0. No other real row is flagged.
    flagged = {line: mathgen.label_sanity_issue(row["problem"], row["solution"]) for line, row in real_rows()}
    flagged = {line: issue for line, issue in flagged.items() if issue}
    assert sorted(flagged) == [10, 113]
    rows = dict(real_rows())
    assert rows[10]["solution"] == "-462.5" and mathgen.solve(rows[10]["problem"]) == "-462.5"
    assert rows[113]["solution"] == "-1200.0"


def test_default_mix_is_the_real_sample_mix():
    counts = Counter(mathgen.family_of(row["problem"]) for _, row in real_rows())
    counts["english_word"] = counts.pop("english_competition")  # our generatable English stand-in
    assert dict(counts) == mathgen.CONTEST_MIX


def test_rows_are_serialised_like_the_contest_files():
    for line in REAL.read_text("utf-8").splitlines():
        assert json.dumps(json.loads(line), ensure_ascii=False) == line


# ---- templates --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", mathgen.GENERATABLE)
def test_generated_rows_solve_back_to_their_own_labels(family):
    rng = random.Random(f"test:{family}")
    for _ in range(400):
        problem, solution = mathgen.make(family, rng)
        assert mathgen.family_of(problem) == family, problem
        assert mathgen.solve(problem) == solution, problem
        assert mathgen.language_of(problem) == mathgen.FAMILIES[family].lang
        # the profiler relies on this: a template label always holds a number the scorer reads
        assert extract_answer_number(solution) is not None, solution


def test_generated_operands_have_the_contest_formats():
    rng = random.Random(5)
    for _ in range(300):
        problem, _ = mathgen.make("mul", rng)
        a, b = re.fullmatch(r"计算 (\S+) \* (\S+) 等于多少？", problem).groups()
        for x in (a, b):
            assert re.fullmatch(r"-?\d+\.\d\d", x) and abs(float(x)) <= 10000
        problem, solution = mathgen.make("discount", rng)
        original, price = map(int, re.findall(r"\d+", problem))
        assert 1 <= price < original <= 100 and float(solution) > 0  # only real discounts


def test_english_word_answers_are_right_by_an_independent_computation():
    rng = random.Random(11)
    checked = Counter()
    for _ in range(700):
        problem, solution = mathgen.make("english_word", rng)
        answer = extract_answer_number(solution)
        nums = [int(n) for n in re.findall(r"-?\d+", problem)]
        if problem.startswith("What is the least common multiple"):
            truth = math.lcm(*nums)
        elif " members. In how many ways" in problem:
            offices = len(re.findall(r"\ba (president|vice-president|secretary|treasurer)\b", problem))
            truth = math.perm(nums[0], offices)
        elif problem.startswith("We flip"):
            n, k = nums
            truth = (
                Fraction(sum(1 for outcome in range(2**n) if bin(outcome).count("1") == k), 2**n)
                if n <= 16
                else Fraction(math.comb(n, k), 2**n)
            )
        elif problem.startswith("What is the sum of the arithmetic sequence"):
            a, second, _, last = nums
            truth = sum(range(a, last + 1, second - a))
        elif problem.startswith("Solve for"):
            x = int(answer)
            values = [
                int(coef or 1) * x + int(sign + const)
                for coef, sign, const in re.findall(r"(\d*)x ([-+]) (\d+)", problem)
            ]
            truth = x if len(values) == 2 and values[0] == values[1] else None
        elif problem.startswith("After a"):
            percent, price = nums
            truth = Fraction(price * 100, 100 - percent)
        elif problem.startswith("How many positive integers"):
            n, a, b = nums
            truth = sum(1 for i in range(1, n + 1) if i % a == 0 or i % b == 0)
        else:
            raise AssertionError(f"unknown english_word template: {problem}")
        checked[problem.split()[0]] += 1
        assert truth is not None and Fraction(answer) == Fraction(truth), (problem, solution)
    assert len(checked) >= 6


def test_solve_rejects_off_template_and_degenerate_problems():
    assert mathgen.solve("计算 1.00 / 0.00 等于多少？") is None
    assert mathgen.solve("计算 1.00 加 2.00 等于多少？") is None
    assert mathgen.solve("What is the least common multiple of $4$ and $6$ and $8$?") is None
    assert mathgen.solve("解方程 0x + 5 = 0") is None


# ---- the generator --------------------------------------------------------------------------
def test_generation_is_deterministic_per_seed_whatever_the_sharding(tmp_path):
    one = synthetic.generate(2500, tmp_path / "a", seed=7, shard_rows=1000, workers=1, progress=False)
    two = synthetic.generate(2500, tmp_path / "b", seed=7, shard_rows=700, workers=2, progress=False)
    synthetic.generate(2500, tmp_path / "c", seed=8, shard_rows=2500, workers=1, progress=False)
    lines_a, lines_b, lines_c = (read_shards(tmp_path / d) for d in "abc")
    assert len(lines_a) == 2500 and lines_a == lines_b
    assert lines_a != lines_c
    assert one["families"] == two["families"] and len(two["shards"]) == 4
    # generate.json's counts are the files' counts
    recount = Counter(mathgen.family_of(json.loads(line)["problem"]) for line in lines_a)
    assert dict(recount) == one["families"]
    assert json.loads((tmp_path / "a" / "generate.json").read_text())["families"] == one["families"]
    for line in lines_a:
        row = json.loads(line)
        assert list(row) == ["problem", "solution"]
        assert json.dumps(row, ensure_ascii=False) == line
        assert mathgen.solve(row["problem"]) == row["solution"]


def test_a_smaller_rerun_leaves_no_stale_shards(tmp_path):
    synthetic.generate(300, tmp_path, seed=1, shard_rows=100, workers=1, progress=False)
    assert len(list(tmp_path.glob("part-*.jsonl"))) == 3
    synthetic.generate(50, tmp_path, seed=1, shard_rows=100, workers=1, progress=False)
    assert [p.name for p in tmp_path.glob("part-*.jsonl")] == ["part-00000.jsonl"]
    assert len(read_shards(tmp_path)) == 50
    assert not list(tmp_path.glob(".*part*"))  # no temporary files left behind


def test_mix_and_language_mix():
    mix = synthetic.resolve_mix(
        synthetic.parse_weights("add=3,sqrt=1,english_word=1", "mix", mathgen.GENERATABLE),
        synthetic.parse_weights("zh=0.9,en=0.1", "lang-mix", ("zh", "en")),
    )
    assert mix["add"] == pytest.approx(0.675) and mix["sqrt"] == pytest.approx(0.225)
    assert mix["english_word"] == pytest.approx(0.1)
    default = synthetic.resolve_mix()
    assert default["sub"] == pytest.approx(167 / 971)
    with pytest.raises(InputError, match="no en family"):
        synthetic.resolve_mix({"add": 1.0}, {"en": 1.0})
    with pytest.raises(InputError, match="unknown name 'english_competition'"):
        synthetic.parse_weights("english_competition=1", "mix", mathgen.GENERATABLE)
    with pytest.raises(InputError, match="not NAME=WEIGHT"):
        synthetic.parse_weights("add", "mix", mathgen.GENERATABLE)
    rows = list(synthetic.iter_rows(3, 0, 3000, synthetic.resolve_mix({"add": 1.0, "sqrt": 3.0})))
    counts = Counter(family for family, _, _ in rows)
    assert set(counts) == {"add", "sqrt"} and 0.2 < counts["add"] / 3000 < 0.3


def test_cli_exit_codes(tmp_path, capsys):
    assert gen.main(["--rows", "10", "--out", str(tmp_path / "x"), "--mix", "nosuch=1"]) == 2
    assert "unknown name 'nosuch'" in capsys.readouterr().err
    assert gen.main(["--rows", "0", "--out", str(tmp_path / "x")]) == 2
    assert (
        gen.main(
            [
                "--rows",
                "120",
                "--out",
                str(tmp_path / "ok"),
                "--seed",
                "4",
                "--shard-rows",
                "50",
                "--lang-mix",
                "zh=0.5,en=0.5",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "ok" / "generate.json").read_text())
    assert record["rows"] == 120 and record["seed"] == 4 and len(record["shards"]) == 3
    assert sum(record["families"].values()) == 120 and set(record["languages"]) == {"zh", "en"}


def test_bench_generate_reports_figures(tmp_path):

    started = time.perf_counter()
    figures = time_generate(rows=3000, workers=1, seed=5)
    wall = time.perf_counter() - started
    assert figures["rows"] == 3000 and figures["workers"] == 1 and figures["cpus"] == os.cpu_count()
    # its time lies within the call's, and the rate is rows over that time (seconds is rounded to 0.01)
    assert 0 < figures["seconds"] <= wall + 0.005
    lo, hi = 3000 / (figures["seconds"] + 0.005), 3000 / max(figures["seconds"] - 0.005, 1e-9)
    assert lo - 0.5 <= figures["rows_per_second"] <= hi + 0.5
    # the bytes: the same rows (same seed) written again here, measured on disk
    synthetic.generate(3000, tmp_path / "again", seed=5, workers=1, progress=False)
    on_disk = sum(f.stat().st_size for f in (tmp_path / "again").glob("part-*.jsonl"))
    assert figures["mb_written"] == round(on_disk / 1e6, 1) and on_disk > 100_000
    assert figures["command"] == "python -m jobs.generate --rows 3000 --out DIR --seed 5"
