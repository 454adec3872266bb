"""SQuAD retention the way the contest measured it: MindFormers' EmF1Metric (mindformers/core/metric/
metric.py) next to the official SQuAD v1.1 script, on 2,067 questions for the Ascend recipes, and a base
EM of 0 said to be undecidable rather than passed. Expected figures are worked by hand from each
metric's definition (docs/CONTEST_RULES.md, "How the contest measured")."""

from __future__ import annotations

import pytest

from conftest import REPO
from tunebox.config import load_spec
from tunebox.contest import rules, scoring
from tunebox.evaluation.report import na, valid_cell
from tunebox.submission.contents import build_results

# (prediction, gold answers). EmF1Metric scores against the first gold only; it segments with jieba, where
# a space is a segment of its own; ASCII "." is not in its punctuation list.
CASES = [
    ("Denver Broncos.", ["Denver Broncos"]),
    # official: "." stripped, EM 1, F1 1. EmF1: [denver, ' ', broncos, '.'] vs [denver, ' ', broncos]:
    # common subsequence 3, precision 3/4, recall 1 -> F1 6/7; EM 0 (the "." stays)
    ("Broncos", ["Denver Broncos"]),
    # official: tokens {broncos} vs {denver, broncos}: precision 1, recall 1/2 -> F1 2/3; EM 0.
    # EmF1: [broncos] vs [denver, ' ', broncos]: precision 1, recall 1/3 -> F1 1/2; EM 0
    ("The Broncos", ["Denver Broncos", "The Broncos"]),
    # official: the second gold matches -> EM 1, F1 1. EmF1, first gold only: [the, ' ', broncos] vs
    # [denver, ' ', broncos]: 2 of 3 each way -> F1 2/3; EM 0
]
EMF1_F1 = 100 * (6 / 7 + 1 / 2 + 2 / 3) / 3
OFFICIAL_F1 = 100 * (1 + 2 / 3 + 1) / 3


def test_emf1_is_mindformers_metric_not_the_official_script(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_DEFAULT_PATH", str(tmp_path))
    predictions, golds = [p for p, _ in CASES], [g for _, g in CASES]
    got = scoring.squad_scores_emf1(predictions, golds)
    assert got["f1"] == pytest.approx(EMF1_F1, abs=1e-9) and got["em"] == 0.0
    official = scoring.squad_scores(predictions, golds)
    assert official["f1"] == pytest.approx(OFFICIAL_F1, abs=1e-9) and official["em"] == pytest.approx(200 / 3)
    assert predictions == [p for p, _ in CASES]  # EmF1Metric edits its input list; ours is left alone


@pytest.mark.parametrize("predictions, golds", [(["a"], [["a"], ["b"]]), ([], [])])
def test_emf1_refuses_predictions_that_do_not_pair_up(tmp_path, monkeypatch, predictions, golds):
    """One prediction for two questions, or none at all. Mutants: tunebox.contest.scoring.x_squad_scores_emf1__mutmut_1
    (`or` -> `and`: the unpaired lists scored), _4 (the message dropped)."""
    monkeypatch.setenv("LOCAL_DEFAULT_PATH", str(tmp_path))
    n, m = len(predictions), len(golds)
    with pytest.raises(ValueError) as exc:
        scoring.squad_scores_emf1(predictions, golds)
    assert str(exc.value) == f"{n} predictions for {m} questions; they must pair up, and not be none"


def test_base_em_of_zero_cannot_pass_or_fail():
    verdict = rules.retention_verdict({"f1": 30.0, "em": 0.0}, {"f1": 40.0, "em": 0.0})
    assert verdict["undecided"] == ["em"]
    assert verdict["failed"] == ["f1"]  # F1 still decides: 30 < 0.9 * 40
    decided = rules.retention_verdict({"f1": 40.0, "em": 5.0}, {"f1": 40.0, "em": 5.0})
    assert decided["undecided"] == [] and decided["passes"] is True


def test_report_says_cannot_pass_or_fail_not_na():

    verdict = rules.retention_verdict({"f1": 41.0, "em": 0.0}, {"f1": 40.0, "em": 0.0})
    assert na(verdict) == "cannot pass or fail (base 0)"
    assert "n/a" not in na(verdict)


def test_report_never_shows_a_bare_pass_that_base_zero_decided():

    assert (
        valid_cell(rules.retention_verdict({"f1": 41.0, "em": 0.0}, {"f1": 40.0, "em": 0.0}))
        == "pass on F1; EM cannot pass or fail (base 0)"
    )
    assert (
        valid_cell(rules.retention_verdict({"f1": 0.0, "em": 0.0}, {"f1": 0.0, "em": 0.0}))
        == "cannot pass or fail (base 0)"
    )
    assert valid_cell(rules.retention_verdict({"f1": 41.0, "em": 9.0}, {"f1": 40.0, "em": 10.0})) == "pass"
    assert valid_cell(rules.retention_verdict({"f1": 30.0, "em": 0.0}, {"f1": 40.0, "em": 0.0})) == "**fail**"


def test_the_checkpoint_choice_names_its_metric():
    assert rules.RETENTION_METRIC.startswith("official SQuAD v1.1")

    results = build_results(
        run_id="r",
        stage=1,
        fmt="math",
        model_name="tiny",
        rank=8,
        target_modules="wq|wv",
        report={},
        accuracies={},
        checkpoints=[],
        code={},
    )
    assert results["retention_metric"] == rules.RETENTION_METRIC


ASCEND_RECIPES = sorted(p.name for p in (REPO / "recipes").glob("*.yaml") if load_spec(p).train.device == "Ascend")


@pytest.mark.parametrize("recipe", ASCEND_RECIPES)
def test_ascend_recipes_use_the_contests_2067_questions(recipe):
    # every contest team's EmF1Metric log ends "total_count: 2067" (mindspore-courses/competition,
    # topic2-finetune/first-phase/debias_world1/README.md line 57, among others)
    assert load_spec(REPO / "recipes" / recipe).eval.squad_rows == 2067 == rules.CONTEST_SQUAD_ROWS


def test_there_are_ascend_recipes():
    assert len(ASCEND_RECIPES) >= 3
