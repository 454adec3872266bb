"""The contest scores with the strict rule; our tolerant reading is reported beside it and never
decides. A constructed run where one checkpoint is right only under the tolerant rule and another is
strictly right on half the rows, carried through evaluate (score, choice), bundle and verify."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import TINY_RECIPE, keeps_90_percent, read_jsonl, run_job, squad_v11, strict_by_hand
from jobs import verify as verify_mod
from tunebox.submission import contents

# tiny, worked by hand (as in tests/test_bundle.py): LoRA r=8 on wq (64x64) and wv (32x64) in 2 layers
TINY_TRAINABLE = 2 * (8 * (64 + 64) + 8 * (32 + 64))
TINY_TOTAL = 2 * 384 * 64 + 2 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64) + 64
TINY_RATIO = TINY_TRAINABLE / TINY_TOTAL
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_number(reference: str) -> str:
    """The number a contest reference ends with, as written ("a + b = 18142.62" -> "18142.62",
    "方程的解为：-0.6470588235294118" -> "-0.6470588235294118")."""
    assert NUMBER.search(reference.rstrip()[-1:]), reference
    text = NUMBER.findall(reference)[-1]
    assert float(text) != 0, reference
    return text


def tolerant_only(number: str) -> str:
    """Digits past the reference's last that round back to it: the reference to its shown precision
    (tolerant), not its value (strict): 18142.62 -> 18142.620001, 12 -> 12.0001."""
    return number + ("0001" if "." in number else ".0001")


def rewrite_model(mdir, answers: list[str], strict: list[bool], tolerant: list[bool]) -> None:
    """predictions.jsonl with these answers and verdicts (worked out by hand), and scores.json with the
    accuracies they give; evaluate reuses scores.json (same checkpoint, settings and backend)."""
    rows = read_jsonl(mdir / "predictions.jsonl")
    for r, a, s, t in zip(rows, answers, strict, tolerant, strict=True):
        r.update(answer=a, extracted=a, strict=s, tolerant=t)
    (mdir / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    scores = json.loads((mdir / "scores.json").read_text())
    scores.update(accuracy_strict=sum(strict) / len(rows), accuracy_tolerant=sum(tolerant) / len(rows))
    (mdir / "scores.json").write_text(json.dumps(scores, indent=2))


def test_a_checkpoint_right_only_under_the_tolerant_rule_is_not_chosen(tiny_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = runs / "tiny"
    shutil.copytree(tiny_run["run_dir"], run, ignore=shutil.ignore_patterns("mindformers", "submission"))
    steps = json.loads((run / "train/checkpoints/index.json").read_text())["planned"]
    report = json.loads((run / "evaluate/report.json").read_text())
    # the tiny model (random weights, 27 steps) gets nothing right and keeps SQuAD: every checkpoint ties
    assert all(c["accuracy_tolerant"] == 0 for c in report["checkpoints"])
    heldout = read_jsonl(run / "prep/heldout.jsonl")
    n = len(heldout)
    assert n == 8  # the tiny recipe's data.heldout_rows
    numbers = [final_number(r["reference"]) for r in heldout]

    loose, half = contents.model_dir_name(steps[3]), contents.model_dir_name(steps[1])
    # steps[3]: every row right only under the tolerant rule: strict 0, tolerant 1
    rewrite_model(run / "evaluate" / loose, [tolerant_only(x) for x in numbers], [False] * n, [True] * n)
    # steps[1]: the first half exactly right, the rest far off: strict 0.5, tolerant 0.5
    exact = [x if i < n // 2 else "7" for i, x in enumerate(numbers)]
    rewrite_model(run / "evaluate" / half, exact, [i < n // 2 for i in range(n)], [i < n // 2 for i in range(n)])

    run_job("evaluate", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}")
    report = json.loads((run / "evaluate/report.json").read_text())
    by_model = {c["model"]: c for c in report["checkpoints"]}
    floor = 0.3 * (1 - TINY_RATIO)  # stage 1: 0.3 * (1 - ratio) + 0.7 * accuracy
    assert by_model[loose]["score"] == pytest.approx(floor, abs=1e-12)
    assert by_model[loose]["score_tolerant"] == pytest.approx(floor + 0.7, abs=1e-12)
    assert by_model[half]["score"] == pytest.approx(floor + 0.35, abs=1e-12)
    assert report["best_checkpoint"]["model"] == half

    run_job("bundle", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}")
    results = json.loads((run / "submission/results.json").read_text())
    rows = {r["model"]: r for r in results["checkpoints"]}
    assert (rows[loose]["accuracy_strict"], rows[loose]["accuracy_tolerant"]) == (0.0, 1.0)
    assert rows[loose]["score"] == pytest.approx(floor, abs=1e-12)
    assert rows[half]["score"] == pytest.approx(floor + 0.35, abs=1e-12)
    assert results["chosen"]["model"] == half

    code = verify_mod.main([str(run / "submission")])
    out = capsys.readouterr().out
    assert code == 0, out


def test_the_tests_retention_bar_is_the_contest_rule_by_hand():
    """conftest.keeps_90_percent, which the report tests use instead of 0.9 * base in floats."""

    assert keeps_90_percent(11.7, 13)  # exactly 90%; in floats 11.7 < 0.9 * 13
    assert keeps_90_percent(8.1, 9)  # exactly 90%; in floats 8.1 / 9 < 0.9
    assert keeps_90_percent(56.25, 62.5) and not keeps_90_percent(56.24, 62.5)
    assert keeps_90_percent(0.0, 0.0) and keeps_90_percent(3.0, 0.0)
    assert not keeps_90_percent(0.0, 0.01)


def test_the_tests_own_scorers_by_hand():
    """conftest.squad_v11 and strict_by_hand, which the report tests use instead of re-scoring with
    tunebox.contest.scoring."""

    # "the Eiffel Tower!" == "Eiffel tower" once normalized; "a b c" -> "b c" against "b c d": P 1, R 2/3, F1 0.8
    assert squad_v11(["the Eiffel Tower!", "a b c"], [["Eiffel tower"], ["b c d", "x"]]) == {"f1": 90.0, "em": 50.0}
    assert squad_v11(["nothing"], [["else"]]) == {"f1": 0.0, "em": 0.0}
    assert strict_by_hand("18142.620", "9195.58 + 8947.04 = 18142.62")
    assert strict_by_hand("-0.5 then 3", "方程的解为：-0.50")
    assert not strict_by_hand("18142.63", "= 18142.62") and not strict_by_hand("no number", "= 1")
