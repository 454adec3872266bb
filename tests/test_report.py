"""evaluate's report shows its uncertainty: every accuracy share with its Wilson 95% interval and n, one
sentence on what the held-out rows can resolve, example predictions of the chosen checkpoint per family
(right and wrong), and the SQuAD retention on its own axis below the accuracy.

The report is written from a small hand-made evaluation: 12 held-out rows in two families (arith: 8,
pct: 4), a base model that gets none right, step-000010 half and step-000020 three quarters. The
intervals expected below were worked out by hand, not with tunebox's wilson_interval: the Wilson
interval's ends are the roots x of n (k/n - x)^2 = z^2 x (1 - x), z = 1.959964; for k = 0 that is
[0, z^2 / (n + z^2)], for k = n/2 it is 1/2 -+ z / (2 sqrt(n + z^2)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import TINY_RECIPE
from tunebox.config import load_spec
from tunebox.contest.rules import choose_checkpoint, param_figures
from tunebox.evaluation import plots as charts
from tunebox.evaluation.loop import HeldoutTask, SquadTask, summarize
from tunebox.evaluation.report import write_plots, write_report
from tunebox.evaluation.scorecard import annotate, contest_figures
from tunebox.model.registry import get_model_shape

Z2 = 1.959964**2
FAMILIES = ["arith"] * 8 + ["pct"] * 4
# rows right (strict) per model, by row index: base none, step-10 half of each family, step-20 6/8 and 3/4
RIGHT = {"base": set(), "step-000010": {0, 1, 2, 3, 8, 9}, "step-000020": {0, 1, 2, 3, 4, 5, 8, 9, 10}}
TOLERANT_EXTRA = {"step-000020": {6}}  # step-20: one more row right by the tolerant rule
SQUAD = {"base": (80.0, 70.0), "step-000010": (80.0, 70.0), "step-000020": (76.0, 66.5)}  # retention .95: passes


def _prompt(i: int) -> str:
    return (
        f"Row {i}: a long word problem about | pipes and stock prices that goes on and on for a while "
        f"before it asks: what is {i} + {i}?"
    )


def _predictions(model: str) -> list[dict]:
    rows = []
    for i, fam in enumerate(FAMILIES):
        right = i in RIGHT[model]
        extracted = str(2 * i) if right else str(2 * i + 1)
        rows.append(
            {
                "line": i + 1,
                "prompt": _prompt(i),
                "answer": f"{model} answers {extracted}",
                "reference": str(2 * i),
                "strict": right,
                "tolerant": right or i in TOLERANT_EXTRA.get(model, ()),
                "extracted": extracted,
                "within_1pct": right,
                "leading_digits": 1 if right else 0,
                "family": fam,
                "source": "split",
                "new_tokens": 4,
                "max_new_tokens": 16,
            }
        )
    return rows


@pytest.fixture
def hand_report(tmp_path: Path) -> dict:
    """write_plots + write_report on the hand-made evaluation; {out, json, md, figures (by PNG name)}."""
    spec = load_spec(TINY_RECIPE)
    contest = contest_figures(
        spec.stage, param_figures(get_model_shape(spec.model.name), spec.lora.rank, spec.lora.target_modules)
    )
    out = tmp_path / "evaluate"
    entries = {}
    for step, model in enumerate(RIGHT):
        preds = _predictions(model)
        (out / model).mkdir(parents=True)
        (out / model / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        f1, em = SQUAD[model]
        entries[model] = {
            "model": model,
            "step": step * 10,
            "train_loss": None if step == 0 else 1.0 / step,
            **summarize(preds),
            "squad": {"n": 5, "f1": f1, "em": em},
        }
    base = entries.pop("base")
    tuned = [annotate(e, base, contest) for e in entries.values()]
    choice = choose_checkpoint(tuned)
    assert choice["model"] == "step-000020"
    task = HeldoutTask(
        "math",
        [{"line": i + 1, "prompt": _prompt(i), "source": "split"} for i in range(12)],
        [],
        FAMILIES,
        [16] * 12,
        {
            "cap": 32,
            "margin": 8,
            "other_families": 32,
            "families": {"arith": {"max_new_tokens": 16}, "pct": {"max_new_tokens": 12}},
        },
    )
    squad = SquadTask(tmp_path / "squad.jsonl", "0" * 64, [{}] * 5, [])
    figures = {}
    real_save = charts.save

    def keep(fig, path):
        figures[Path(path).name] = fig
        return real_save(fig, path)

    charts.save, saved = keep, charts.save
    try:
        plots = write_plots(
            out,
            run_id="hand",
            data=spec.data,
            loss_file=tmp_path / "no-loss.jsonl",
            base=base,
            tuned=tuned,
            choice=choice,
            dial=None,
        )
    finally:
        charts.save = saved
    report_file = write_report(
        out,
        out / "report.json",
        run_id="hand",
        model_name=spec.model.name,
        data=spec.data,
        base=base,
        tuned=tuned,
        choice=choice,
        contest=contest,
        task=task,
        squad=squad,
        dial=None,
        plots=plots,
    )
    return {
        "out": out,
        "json": json.loads(report_file.read_text()),
        "md": (out / "report.md").read_text(),
        "figures": figures,
    }


def _k0(n: int) -> tuple[float, float]:
    return 0.0, Z2 / (n + Z2)


def _half(n: int) -> tuple[float, float]:
    half = 1.959964 / (2 * math.sqrt(n + Z2))
    return 0.5 - half, 0.5 + half


# by hand: the roots of the quadratic above (k, n) -> (low, high)
BY_HAND = {
    (0, 12): (0.0, 0.242494),
    (0, 8): (0.0, 0.324408),
    (0, 4): (0.0, 0.489891),
    (6, 12): (0.253782, 0.746218),
    (9, 12): (0.467695, 0.911058),
    (10, 12): (0.551969, 0.953035),
    (6, 8): (0.409275, 0.928521),
    (3, 4): (0.300642, 0.954413),
}


def test_closed_forms_agree_with_the_table_of_hand_values():
    for n in (12, 8, 4):
        assert BY_HAND[(0, n)] == pytest.approx(_k0(n), abs=1e-6)
    assert BY_HAND[(6, 12)] == pytest.approx(_half(12), abs=1e-6)
    assert _half(8) == pytest.approx((0.215216, 0.784784), abs=1e-6)  # step-10's arith, 4/8


def test_every_share_in_report_json_has_its_wilson_interval_and_n(hand_report):
    """Mutants: share_interval with the normal approximation p -+ z sqrt(p(1-p)/n) (fails: 0/12 gives [0, 0],
    9/12 gives [0.505, 0.995]); with_intervals leaving per_family without intervals (KeyError)."""
    rep = hand_report["json"]
    models = {m["model"]: m for m in [rep["base"], *rep["checkpoints"]]}
    expect = {
        ("base", "accuracy_strict"): (0, 12),
        ("base", "accuracy_tolerant"): (0, 12),
        ("step-000010", "accuracy_strict"): (6, 12),
        ("step-000020", "accuracy_strict"): (9, 12),
        ("step-000020", "accuracy_tolerant"): (10, 12),
        ("step-000020", "accuracy_within_1pct"): (9, 12),
    }
    for (model, key), (k, n) in expect.items():
        iv = models[model]["intervals"][key]
        assert (iv["k"], iv["n"]) == (k, n), (model, key)
        assert (iv["low"], iv["high"]) == pytest.approx(BY_HAND[(k, n)], abs=2e-6), (model, key)
    fam = {
        ("base", "arith"): (0, 8),
        ("base", "pct"): (0, 4),
        ("step-000020", "arith"): (6, 8),
        ("step-000020", "pct"): (3, 4),
    }
    for (model, f), (k, n) in fam.items():
        iv = models[model]["per_family"][f]["intervals"]["strict"]
        assert (iv["k"], iv["n"]) == (k, n)
        assert (iv["low"], iv["high"]) == pytest.approx(BY_HAND[(k, n)], abs=2e-6), (model, f)
    assert models["step-000020"]["accuracy_strict"] == 0.75  # the figures themselves are untouched
    assert "per_source" not in models["step-000020"]


def test_report_md_prints_the_intervals_n_and_what_one_row_is_worth(hand_report):
    """Mutants: the main table without intervals (the old f'{acc:.3f}' cells); _overlaps keeping only
    `b.low <= a.high` (then base's [0, 0.242] 'overlaps' step-20's [0.468, 0.911] and is named)."""
    md = hand_report["md"]
    row20 = next(line for line in md.splitlines() if line.startswith("| step-000020 ✅ |"))
    assert "| 12 | 0.750 [0.468, 0.911] | 0.833 [0.552, 0.953] | 0.750 [0.468, 0.911] |" in row20
    base_row = next(line for line in md.splitlines() if line.startswith("| base |"))
    assert "| 12 | 0.000 [0.000, 0.242] |" in base_row
    arith = next(line for line in md.splitlines() if line.startswith("| arith | 8 | 16 |"))  # strict per family
    assert arith.endswith("| 0.00 [0.00, 0.32] | 0.50 [0.22, 0.78] | 0.75 [0.41, 0.93] |")
    note = hand_report["json"]["intervals"]["note"]
    assert note in md
    assert "one row is 8.33 points of accuracy" in note
    assert "step-000020's strict accuracy lies in [0.468, 0.911]" in note
    assert "the intervals of step-000010 overlap it" in note and "base" not in note


def test_examples_show_right_and_wrong_rows_of_the_chosen_checkpoint_per_family(hand_report):
    """Mutants: example_predictions keeping only right rows (`if row['strict']`); examples read from the
    base model's predictions instead of the chosen checkpoint's (every row wrong, answers say 'base')."""
    ex = hand_report["json"]["examples"]
    assert ex["model"] == "step-000020" and ex["predictions"] == "step-000020/predictions.jsonl"
    assert set(ex["by_family"]) == {"arith", "pct"}
    for fam, rows in ex["by_family"].items():
        assert {r["strict"] for r in rows} == {True, False}, fam
        for r in rows:
            assert r["answer"] == f"step-000020 answers {r['extracted']}"
            assert (r["extracted"] == r["reference"]) is r["strict"]
            assert len(r["prompt"]) <= 90 and r["prompt"].endswith(f"what is {r['line'] - 1} + {r['line'] - 1}?")
    assert [r["line"] for r in ex["by_family"]["arith"]] == [1, 2, 7, 8]  # first 2 right, first 2 wrong
    assert [r["line"] for r in ex["by_family"]["pct"]] == [9, 10, 12]
    md = hand_report["md"]
    table = [
        line
        for line in md.split("## Example predictions of step-000020")[1].splitlines()
        if line.startswith(("| arith |", "| pct |"))
    ]
    assert len(table) == 7
    assert any(line.endswith("| right |") for line in table if line.startswith("| pct |"))
    assert any(line.endswith("| **wrong** |") for line in table if line.startswith("| pct |"))
    assert all("\\|" in line for line in table)  # the prompt's pipe cannot break the table


def test_retention_has_its_own_axis_below_the_accuracy(hand_report, tmp_path):
    """Mutant: write_plots putting the retention series and threshold into the accuracy panel (one axes,
    as before)."""
    fig = hand_report["figures"]["accuracy_retention.png"]
    assert (hand_report["out"] / "plots" / "accuracy_retention.png").read_bytes()[:4] == b"\x89PNG"
    assert len(fig.axes) == 2
    acc, ret = fig.axes
    assert {line.get_label() for line in ret.get_lines()} >= {"SQuAD F1 retention", "SQuAD EM retention"}
    assert not any("retention" in line.get_label() for line in acc.get_lines())
    assert any(line.get_label().startswith("retention threshold") for line in ret.get_lines())
    assert acc.get_ylabel() != ret.get_ylabel()
    assert acc.get_shared_x_axes().joined(acc, ret)
    # the strict accuracy's 95% intervals are drawn on the accuracy axes, base model's from 0 to 0.242
    bands = [c for c in acc.collections if c.get_label().endswith("95% interval")]
    assert len(bands) == 1
    segments = bands[0].get_segments()
    assert segments[0][:, 1] == pytest.approx(BY_HAND[(0, 12)], abs=2e-6)
    single = charts.line_figure([charts.Series("a", [0, 1], [0.1, 0.2])], title="t", xlabel="x", ylabel="y")
    assert len(single.axes) == 1
