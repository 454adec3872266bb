"""The data profiler (jobs.profile) on the real contest sample and on small files made to hold
each kind of finding: families, wrong labels by line, bad lines, duplicates, token lengths, charts."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import profile as profile_cli
from tunebox.contest import mathgen
from tunebox.data import profile as prof
from tunebox.data import synthetic
from tunebox.data.tokenizer import build_byte_tokenizer

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math" / "contest-sample.jsonl"
# Real rows whose published label is wrong: a "discount" to a higher price, labelled negative.
WRONG_REAL_LABELS = {10: "-462.5", 113: "-1200.0"}


def real_lines() -> list[str]:
    return REAL.read_text("utf-8").splitlines()


def write_rows(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture(scope="module")
def real_profile():
    return prof.profile(REAL, progress=False)


# The contest's families as they read, written here independently of tunebox.contest.scoring.math_family
# (which the profiler uses): a few words of each Chinese template; English text is a competition row.
NUM = r"-?\d+(?:\.\d+)?"
FAMILY_PATTERNS = {
    "add": rf"计算 {NUM} \+ {NUM} 等于多少？",
    "sub": rf"计算 {NUM} - {NUM} 等于多少？",
    "mul": rf"计算 {NUM} \* {NUM} 等于多少？",
    "div": rf"计算 {NUM} / {NUM} 等于多少？",
    "power": rf"计算 {NUM} 的 \d+ 次方？",
    "sqrt": rf"计算 {NUM} 的平方根？",
    "average": r"求以下数据的平均值：\[.*\]",
    "linear_equation": rf"解方程 {NUM}x \+ {NUM} = 0",
    "function_value": rf"当 x = {NUM} 时，求函数 y = \d+x\^\d+ 的值",
    "discount": r"商品原价为 \d+ 元，打折后的价格为 \d+ 元，请计算打折的折扣比例。",
    "rectangle_area": r"一个长方形的长为 \d+ 厘米，宽为 \d+ 厘米，请计算其面积。",
    "sales_growth": r"去年销售额为 \d+ 万元，今年销售额增加了 \d+%，请计算今年的销售额。",
}


def family_by_hand(problem: str) -> str:
    problem = problem.strip()
    hits = [name for name, pattern in FAMILY_PATTERNS.items() if re.fullmatch(pattern, problem)]
    if not hits and not re.search(r"[\u4e00-\u9fff]", problem):
        return "english_competition"
    assert len(hits) == 1, f"{problem!r} matches {hits}"
    return hits[0]


def test_real_sample_families_and_wrong_labels(real_profile):
    expected = Counter(family_by_hand(json.loads(line)["problem"]) for line in real_lines())
    assert sum(expected.values()) == len(real_lines()) == 971 and len(expected) == 13
    assert {name: fam["count"] for name, fam in real_profile["families"].items()} == dict(expected)
    assert real_profile["rows"] == len(real_lines()) and real_profile["bad_lines"]["count"] == 0
    assert real_profile["languages"] == {
        "zh": sum(v for k, v in expected.items() if k != "english_competition"),
        "en": expected["english_competition"],
    }
    wrong = real_profile["wrong_labels"]
    assert {row["line"]: row["label"] for row in wrong["rows"]} == WRONG_REAL_LABELS
    assert wrong["count"] == len(WRONG_REAL_LABELS)
    assert all(row["kind"] == "ill_posed" and row["family"] == "discount" for row in wrong["rows"])
    assert real_profile["families"]["discount"]["wrong_labels"] == len(WRONG_REAL_LABELS)
    # every template row was checked; only competition rows may hold a non-numeric answer
    for name, fam in real_profile["families"].items():
        assert fam["computable"] == (0 if name == "english_competition" else fam["count"])
    assert {row["family"] for row in real_profile["unparsable_solutions"]["rows"]} <= {"english_competition"}
    assert real_profile["duplicates"]["exact"]["rows"] == 0


def test_a_changed_label_is_reported_with_its_line_and_the_right_answer(tmp_path):
    lines = real_lines()[:30]
    row = json.loads(lines[2])  # "计算 -3828.45 - 756.08 等于多少？"
    assert row["solution"] == "-3828.45 - 756.08 = -4584.53"
    lines[2] = json.dumps({"problem": row["problem"], "solution": "-3828.45 - 756.08 = -4584.63"}, ensure_ascii=False)
    record = prof.profile(write_rows(tmp_path / "x.jsonl", lines), progress=False)
    mismatches = [r for r in record["wrong_labels"]["rows"] if r["kind"] == "mismatch"]
    assert [(r["line"], r["expected"]) for r in mismatches] == [(3, "-3828.45 - 756.08 = -4584.53")]
    assert [r["line"] for r in record["wrong_labels"]["rows"] if r["kind"] == "ill_posed"] == [10]


def test_bad_lines_are_reported_with_line_numbers_not_crashes(tmp_path):
    good = {"problem": "计算 1.00 + 2.00 等于多少？", "solution": "1.00 + 2.00 = 3.00"}
    path = tmp_path / "bad.jsonl"
    with open(path, "wb") as fh:
        fh.write(json.dumps(good, ensure_ascii=False).encode() + b"\n")  # 1 ok
        fh.write(b'{"problem": "broken\n')  # 2 broken JSON
        fh.write(b'{"problem": "\xff\xfe", "solution": "1"}\n')  # 3 invalid UTF-8
        fh.write(b"\n")  # 4 blank: skipped
        fh.write(b'["problem", "solution"]\n')  # 5 not an object
        fh.write(b'{"problem": "x"}\n')  # 6 no solution
        fh.write(b'{"problem": "x", "solution": 5}\n')  # 7 not a string
        fh.write(json.dumps(good, ensure_ascii=False).encode() + b"\n")  # 8 ok (an exact duplicate)
    record = prof.profile(path, progress=False)
    errors = {row["line"]: row["error"] for row in record["bad_lines"]["rows"]}
    assert sorted(errors) == [2, 3, 5, 6, 7]
    assert "broken JSON" in errors[2] and "UTF-8" in errors[3] and "JSON object" in errors[5]
    assert "missing field 'solution'" in errors[6] and "must be a string" in errors[7]
    assert record["rows"] == 2
    assert record["duplicates"]["exact"]["examples"] == [{"size": 2, "rows": [{"line": 1}, {"line": 8}]}]
    # and the command line reports rather than fails
    assert profile_cli.main([str(path), "--out", str(tmp_path / "report"), "--tokenizer", "none"]) == 0
    markdown = (tmp_path / "report" / "profile.md").read_text("utf-8")
    assert "line 3: not valid UTF-8" in markdown


def test_duplicates_and_near_duplicates(tmp_path):
    long_problem = (
        "A bag holds 5 red marbles, 7 blue marbles and 9 green marbles. Two marbles are drawn one "
        "after the other without replacement. What is the probability that both are green?"
    )
    rows = [
        {"problem": "计算 12.00 * 3.00 等于多少？", "solution": "12.00 * 3.00 = 36.0000"},  # 1
        {"problem": "计算 12.00 * 3.00 等于多少？", "solution": "12.00 * 3.00 = 36.0000"},  # 2 exact dup of 1
        {"problem": "计算 12.00 * 3.00 等于多少？", "solution": "36"},  # 3 same problem, new label
        {"problem": "计算  12.00 * 3.00  等于多少?", "solution": "12.00 * 3.00 = 36.0000"},  # 4 near: spaces, ?
        {"problem": "计算 12.00 / 3.00 等于多少？", "solution": "12.00 / 3.00 = 4"},  # 5 different op
        {"problem": long_problem, "solution": "$\\boxed{\\dfrac{12}{35}}$"},  # 6
        {
            "problem": long_problem.replace("both are green", "both are of green colour"),
            "solution": "$\\boxed{\\dfrac{12}{35}}$",
        },
        # 7 near (MinHash) of 6
        {
            "problem": "Compute the number of ordered pairs of integers (a, b) with 1 <= a, b <= 50 such that "
            "a^2 + b^2 is divisible by 7.",
            "solution": "$\\boxed{49}$",
        },  # 8 unrelated
    ]
    record = prof.profile(write_rows(tmp_path / "d.jsonl", rows), progress=False)
    assert record["duplicates"]["exact"]["examples"] == [{"size": 2, "rows": [{"line": 1}, {"line": 2}]}]
    assert record["duplicates"]["same_problem_different_solution"]["examples"] == [
        {"size": 3, "rows": [{"line": 1}, {"line": 2}, {"line": 3}]}
    ]
    normalized = record["near_duplicates"]["normalized"]["examples"]
    assert len(normalized) == 1 and {"line": 4} in normalized[0]["rows"] and {"line": 5} not in normalized[0]["rows"]
    minhash = record["near_duplicates"]["minhash"]["rows"]
    assert [(r["line"], r["similar_to"]) for r in minhash] == [(7, {"line": 6})]
    assert minhash[0]["similarity"] >= prof.MINHASH_THRESHOLD
    # the wrong label on line 3 is caught too
    assert [(r["line"], r["kind"]) for r in record["wrong_labels"]["rows"]] == [(3, "mismatch")]


def test_normalisation_keeps_math_apart():
    assert prof.normalize_problem("计算 1.5 * 2 等于多少？") != prof.normalize_problem("计算 1.5 / 2 等于多少？")
    assert prof.normalize_problem("求以下数据的平均值：[1, 2]") != prof.normalize_problem("求以下数据的平均值：[12]")
    assert prof.normalize_problem("Find  X.") == prof.normalize_problem("find x")


@pytest.mark.parametrize("point_at", ["dir", "file"])
def test_token_length_percentiles_with_a_tokenizer(tmp_path, point_at):
    # The byte-level tokenizer makes one token per UTF-8 byte, so the expected figures are known.
    build_byte_tokenizer().save(tmp_path / "tok")
    spec = str(tmp_path / "tok") if point_at == "dir" else str(tmp_path / "tok" / "tokenizer.json")
    tokenizer, unit = profile_cli.tokenizer_from_arg(spec)
    assert unit.startswith("tokens")
    lines = real_lines()[:400]
    record = prof.profile(write_rows(tmp_path / "s.jsonl", lines), tokenizer, unit, progress=False)
    by_family: dict[str, list[int]] = {}
    for line in lines:
        row = json.loads(line)
        by_family.setdefault(mathgen.family_of(row["problem"]), []).append(len(row["problem"].encode("utf-8")))
    for name, lengths in by_family.items():
        stats = record["families"][name]["lengths"]["problem"]
        for q in prof.PERCENTILES:
            assert stats[f"p{q}"] == int(np.percentile(lengths, q, method="inverted_cdf")), (name, q)
        assert stats["max"] == max(lengths)


def test_character_lengths_when_no_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path / "empty-cache"))
    tokenizer, unit = profile_cli.tokenizer_from_arg(None)
    assert tokenizer is None and unit.startswith("characters") and "does not exist" in unit


def test_report_files_and_charts(tmp_path, real_profile):
    record = dict(real_profile)
    prof.write_report(record, tmp_path)
    for name in ("family_mix.png", "lengths.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 400 and image.size[1] > 100
    # what the charts show: a bar per family as long as its count, a histogram per field of its counts
    mix = prof.family_mix_figure(record)
    mix.draw_without_rendering()
    ax = mix.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(record["families"])
    assert [b.get_width() for b in ax.containers[0]] == [f["count"] for f in record["families"].values()]
    lengths = prof.lengths_figure(record)
    for ax, field in zip(lengths.axes, prof.FIELDS):
        (stairs,) = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
        hist = record["length_histogram"][field]
        assert list(stairs.get_data().values) == hist["counts"] and list(stairs.get_data().edges) == hist["edges"]
    # ...and the PNGs are those figures, pixel for pixel
    for name, fig in (("family_mix.png", mix), ("lengths.png", lengths)):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        with Image.open(tmp_path / name) as written, Image.open(buf) as drawn:
            assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(drawn.convert("RGB"))), name
    saved = json.loads((tmp_path / "profile.json").read_text("utf-8"))
    assert saved["families"] == real_profile["families"]
    markdown = (tmp_path / "profile.md").read_text("utf-8")
    assert "line 10 (discount, ill_posed)" in markdown and "line 113 (discount, ill_posed)" in markdown


def test_profile_of_a_generated_directory(tmp_path):
    record_gen = synthetic.generate(1500, tmp_path / "data", seed=2, shard_rows=600, workers=1, progress=False)
    record = prof.profile(tmp_path / "data", progress=False)
    assert record["rows"] == 1500 and len(record["input"]) == 3
    assert {name: fam["count"] for name, fam in record["families"].items()} == record_gen["families"]
    assert record["wrong_labels"]["count"] == 0 and record["bad_lines"]["count"] == 0
    assert record["unparsable_solutions"]["count"] == 0
    for group in record["duplicates"]["exact"]["examples"]:  # multi-file locations name the file
        assert all(Path(loc["file"]).name.startswith("part-") for loc in group["rows"])


def test_cli_missing_input_exits_2(tmp_path, capsys):
    assert profile_cli.main([str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    assert profile_cli.main([str(tmp_path / "emptydir"), "--out", str(tmp_path / "r")]) == 2
    assert profile_cli.main([str(REAL), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
