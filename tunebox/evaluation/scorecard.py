"""A checkpoint's scorecard, written once: the SQuAD retention verdict against the base model, the
parameter ratio and the stage score. evaluate writes it into its report; bundle's results.json and
verify's re-derivation compute it from the same function (tunebox/submission/contents.build_results).
"""

from __future__ import annotations

from typing import Mapping, Optional

from tunebox.contest.rules import RETENTION_THRESHOLD, SCORE_FORMULAS, choose_checkpoint, retention_verdict, stage_score


def contest_figures(stage: int, params: Mapping) -> dict:
    """The run's parameter figures (rules.param_figures' `params`), its score formula and retention threshold."""
    return {
        "stage": stage,
        **params,
        "score_formula": f"stage {stage}: {SCORE_FORMULAS[stage]}, accuracy = strict",
        "retention_threshold": RETENTION_THRESHOLD,
    }


def scorecard(
    figures: Mapping,
    accuracy_strict: Optional[float],
    accuracy_tolerant: Optional[float],
    squad: Optional[Mapping],
    base_squad: Optional[Mapping],
) -> dict:
    """{retention, ratio, score, score_tolerant} of one checkpoint: `squad` and `base_squad` are its and the
    base model's SQuAD {f1, em} (None when not measured); `figures` is contest_figures'."""
    ratio = figures["ratio_for_score"]
    return {
        "retention": retention_verdict(squad, base_squad, figures["retention_threshold"]),
        "ratio": ratio,
        "score": stage_score(figures["stage"], accuracy_strict, ratio),
        "score_tolerant": stage_score(figures["stage"], accuracy_tolerant, ratio),
    }


def annotate(entry: dict, base: Optional[dict], figures: Mapping) -> dict:
    """Add the scorecard to one tuned model's summary in evaluate's report, with the retention by
    MindFormers' EmF1Metric beside it and the score at the exact ratio."""
    base_squad = (base or {}).get("squad")
    card = scorecard(figures, entry["accuracy_strict"], entry["accuracy_tolerant"], entry.get("squad"), base_squad)
    entry["retention"] = card.pop("retention")
    # the same rule on MindFormers' EmF1Metric figures (the contest's metric): reported, not what the choice uses
    entry["retention_emf1"] = retention_verdict(
        (entry.get("squad") or {}).get("emf1"), (base_squad or {}).get("emf1"), figures["retention_threshold"]
    )
    entry.update(card)
    entry["score_exact_ratio"] = stage_score(figures["stage"], entry["accuracy_strict"], figures["ratio"])
    return entry


def judge(results: list[dict], figures: Mapping) -> tuple[Optional[dict], list[dict], dict]:
    """(the base model's summary, every tuned model's with its scorecard, the contest's choice among them)."""
    base = next((r for r in results if r["model"] == "base"), None)
    tuned = [annotate(r, base, figures) for r in results if r["model"] != "base"]
    return base, tuned, choose_checkpoint(tuned)
