"""The contest's rules, each written once: the parameter ratio, the stage scores, the 90% SQuAD
retention rule and which checkpoint to submit. evaluate, bundle, verify and plan call these;
nothing else computes them. docs/CONTEST_RULES.md says where each rule comes from and how we read it.

How a single answer is judged (math numbers, SQuAD F1/EM, MCQ letters) is tunebox/contest/scoring.py.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping, Optional, Protocol

# The totals the contest divided by: the guide tells teams to divide by "llama3-8B的总参数量
# （8030 M）", and stage-2 teams divided by 7321000000 for InternLM-7B. Exact counts from the
# architectures are in tunebox/model/registry.py; docs/CONTEST_RULES.md compares the two.
CONTEST_NOMINAL_TOTAL_PARAMS = {"llama3-8b": 8_030_000_000, "internlm-7b": 7_321_000_000}

# The stack the contest ran (and judged submissions with). MindSpore: the stage-1 winner's init_run.sh
# installs `mindspore==2.3.0RC2` (mindspore-courses/competition 0ad8b8713ad666be6f2a265250da5e90a82b7062,
# 2024-ascend-innovation-contest/topic2-finetune/first-phase/debias_world1/init_run.sh, line 12; the
# "ALL IN ONE" README says the same). MindFormers r1.1: MindFormers v1.1.0's README version table
# (mindspore-lab/mindformers 598e154fc4dd2b26d7f4aabc714c8c291d13be10, README.md line 69) pairs r1.1.0
# with MindSpore 2.3.0rc2, MindPet 1.0.4 and CANN 8.0.RC1. PyPI spells the versions 2.3.0rc2 and 1.1.0;
# MindSpore 2.3.0rc2 is not on PyPI (Huawei's download site serves it).
CONTEST_STACK = {
    "mindspore": "2.3.0rc2",
    "mindformers": "1.1.0",
    "mindpet": "1.0.4",
    "cann": "8.0.RC1",
    "python": "3.9",
}

RETENTION_THRESHOLD = 0.90
# The retention rule's figures, the ones the checkpoint choice uses: the official SQuAD v1.1 definition
# (scoring.squad_scores). The contest scored with MindFormers' EmF1Metric (scoring.squad_scores_emf1);
# evaluate reports retention by both, side by side (docs/CONTEST_RULES.md says how they differ).
RETENTION_METRIC = "official SQuAD v1.1 script (scoring.squad_scores)"
# The contest's SQuAD set: SQuAD v1.1 dev, the first question of each of its 2,067 paragraphs with its first
# answer; every team's EmF1Metric log ends "total_count: 2067" (mindspore-courses/competition
# 0ad8b8713ad666be6f2a265250da5e90a82b7062, topic2-finetune/first-phase/debias_world1/README.md line 57).
CONTEST_SQUAD_ROWS = 2067
SQUAD_METRICS = ("f1", "em")
SCORE_FORMULAS = {1: "(1 - ratio) * 0.3 + accuracy * 0.7", 2: "(1 - 10 * ratio) * 0.3 + accuracy * 0.7"}


# ---- the parameter ratio ----------------------------------------------------------------------


def param_ratio(trainable: int, total: int) -> float:
    """低参比例 = trainable parameters / total parameters."""
    if total <= 0:
        raise ValueError(f"total parameter count must be positive, got {total}")
    if trainable < 0 or trainable > total:
        raise ValueError(f"trainable count {trainable} must lie between 0 and the total {total}")
    return trainable / total


def contest_param_ratio(trainable: int, model_name: str) -> float:
    """The ratio as the contest computed it, over its nominal total for `model_name`."""
    try:
        total = CONTEST_NOMINAL_TOTAL_PARAMS[model_name]
    except KeyError:
        known = ", ".join(CONTEST_NOMINAL_TOTAL_PARAMS)
        raise KeyError(f"no contest total for {model_name!r}; known: {known}") from None
    return param_ratio(trainable, total)


class CountsParams(Protocol):
    """What the ratio needs of a model: its name and its exact counts (tunebox/model/registry.py's
    ModelShape; the contest's rules do not reach up into the model registry)."""

    name: str

    def lora_params(self, rank: int, target_modules: str) -> int: ...

    def total_params(self) -> int: ...


def param_figures(shape: CountsParams, rank: int, target_modules: str) -> dict:
    """Trainable and total parameters from the model's exact shape; the exact ratio, and the
    contest's (over its nominal total) for the models the contest used. The score uses the
    contest's ratio when there is one, since that is the figure the contest ranked by."""
    model_name = shape.name
    trainable = shape.lora_params(rank, target_modules)
    total = shape.total_params()
    nominal = CONTEST_NOMINAL_TOTAL_PARAMS.get(model_name)
    contest = param_ratio(trainable, nominal) if nominal else None
    return {
        "trainable_params": trainable,
        "total_params": total,
        "ratio": param_ratio(trainable, total),
        "contest_total_params": nominal,
        "contest_ratio": contest,
        "ratio_for_score": contest if contest is not None else param_ratio(trainable, total),
        "ratio_basis": (
            f"contest nominal total {nominal:,}"
            if nominal
            else f"exact parameter count {total:,}; the contest has no nominal total for {model_name}"
        ),
    }


# ---- the stage score --------------------------------------------------------------------------


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value} (pass 0.64, not 64)")


def stage1_score(accuracy: float, ratio: float) -> float:
    """Stage 1 (Llama3-8B, math): (1 - ratio) * 0.3 + accuracy * 0.7."""
    _check_unit_interval("accuracy", accuracy)
    _check_unit_interval("ratio", ratio)
    return (1.0 - ratio) * 0.3 + accuracy * 0.7


def stage2_score(accuracy: float, ratio: float) -> float:
    """Stage 2 (InternLM-7B, multiple choice): (1 - 10 * ratio) * 0.3 + accuracy * 0.7."""
    _check_unit_interval("accuracy", accuracy)
    _check_unit_interval("ratio", ratio)
    return (1.0 - 10.0 * ratio) * 0.3 + accuracy * 0.7


def stage_score(stage: int, accuracy: Optional[float], ratio: float) -> Optional[float]:
    """The score of `stage` (1 or 2) from the strict accuracy; None when there is no accuracy."""
    if stage not in SCORE_FORMULAS:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    if accuracy is None:
        return None
    return stage1_score(accuracy, ratio) if stage == 1 else stage2_score(accuracy, ratio)


# ---- retention --------------------------------------------------------------------------------


def retention(tuned: float, base: float) -> float:
    """How much of the base model's score the tuned model keeps: tuned / base."""
    if base <= 0:
        raise ValueError(f"base score must be positive to measure retention, got {base}")
    return tuned / base


def _keeps(tuned: float, base: float, threshold: float) -> bool:
    # tuned >= threshold * base on the figures as written (report.json's shortest repr), in exact
    # decimal arithmetic. In floats the rule depends on how it is spelled: 8.1 / 9 < 0.9 while
    # 8.1 >= 0.9 * 9, and 11.7 < 0.9 * 13 although 11.7 is exactly 90% of 13.
    def exact(x: float) -> Fraction:
        return Fraction(repr(float(x)))

    return exact(tuned) >= exact(threshold) * exact(base)


def retention_verdict(
    tuned: Optional[Mapping], base: Optional[Mapping], threshold: float = RETENTION_THRESHOLD
) -> dict:
    """The contest's validity rule: tuned F1 >= threshold * base F1 and tuned EM >= threshold * base EM.

    Returns {measured, threshold, passes, failed: [metrics below], undecided: [metrics whose base
    scored 0: tuned >= 0.9 x 0 holds whatever the checkpoint does, so that metric cannot pass or fail],
    f1, em: tuned/base (None when the base scored 0), shortfall: what fell short, in words}.
    passes is None when either side was not measured; it follows the rule's arithmetic otherwise, and
    `undecided` says which half of it decided nothing."""
    if tuned is None or base is None:
        return {
            "measured": False,
            "threshold": threshold,
            "passes": None,
            "failed": [],
            "undecided": [],
            "f1": None,
            "em": None,
            "shortfall": "",
        }
    ratios = {m: (retention(tuned[m], base[m]) if base[m] > 0 else None) for m in SQUAD_METRICS}
    failed = [m for m in SQUAD_METRICS if not _keeps(tuned[m], base[m], threshold)]
    shortfall = "; ".join(
        f"{m.upper()} {tuned[m]:.2f} vs base {base[m]:.2f}"
        + (f" = {ratios[m]:.3f}" if ratios[m] is not None else "")
        + f" < {threshold:.2f}"
        for m in failed
    )
    return {
        "measured": True,
        "threshold": threshold,
        "passes": not failed,
        "failed": failed,
        "undecided": [m for m in SQUAD_METRICS if not base[m] > 0],
        **ratios,
        "shortfall": shortfall,
    }


# ---- which checkpoint to submit ---------------------------------------------------------------


def choose_checkpoint(candidates: list[Mapping]) -> dict:
    """The contest's choice: the highest stage score among the checkpoints that do not fail
    retention; ties go to the later step. A checkpoint that fails retention is invalid, so when
    every one fails none is chosen (model None, valid False) and the reason says so.

    Each candidate: {model, step, score, accuracy_strict, retention: retention_verdict(...)}.
    Returns {model, step, rule, valid, reason, highest_score, verdicts: {model: why it lost}};
    valid is True (the choice keeps retention), False (nothing valid) or None (not measured)."""
    scored = [c for c in candidates if c.get("score") is not None]
    if not scored:
        return {
            "model": None,
            "step": None,
            "rule": None,
            "valid": None,
            "highest_score": None,
            "reason": "no checkpoint has a score",
            "verdicts": {},
        }

    def key(c):
        return (c["score"], c["step"])

    passes = {c["model"]: (c.get("retention") or {}).get("passes") for c in scored}
    top = max(scored, key=key)
    eligible = [c for c in scored if passes[c["model"]] is not False]
    threshold = f"{RETENTION_THRESHOLD:.0%}"
    if not eligible:
        return {
            "model": None,
            "step": None,
            "rule": "none passes retention",
            "valid": False,
            "highest_score": top["model"],
            "reason": f"NO VALID CHECKPOINT: none of the {len(scored)} keeps {threshold} of the base model's SQuAD "
            f"F1 and EM, so none is valid under the contest rule and none is chosen (highest score: "
            f"{top['model']}, {top['score']:.4f})",
            "verdicts": {c["model"]: f"failed retention: {c['retention']['shortfall']}" for c in scored},
        }
    best = max(eligible, key=key)
    unknown = [c for c in eligible if passes[c["model"]] is None]
    verdicts = {}
    for c in scored:
        if c is best:
            continue
        if passes[c["model"]] is False:
            lost = f"failed retention: {c['retention']['shortfall']}"
            if key(c) > key(best):
                lost += f" (its score {c['score']:.4f} is higher than the chosen one's)"
        elif c["score"] < best["score"]:
            lost = (
                f"lower score: {c['score']:.4f} < {best['score']:.4f} (strict accuracy "
                f"{c['accuracy_strict']:.3f} vs {best['accuracy_strict']:.3f})"
            )
        else:
            lost = f"same score {c['score']:.4f}; ties go to the later step ({best['step']} > {c['step']})"
        verdicts[c["model"]] = lost
    head = f"highest stage score ({best['score']:.4f}, strict accuracy {best['accuracy_strict']:.3f})"
    if not unknown:
        rule = "score among retention passes"
        reason = (
            f"{head} among the {len(eligible)} of {len(scored)} checkpoints keeping >= {threshold} of the base "
            f"model's SQuAD F1 and EM"
        )
    elif len(unknown) == len(scored):
        rule = "score (retention not measured)"
        reason = (
            f"{head}; SQuAD retention was not measured (eval.squad_file), so validity under the contest rule is unknown"
        )
    else:
        rule = "score among checkpoints not failing retention"
        reason = (
            f"{head} among the {len(eligible)} of {len(scored)} checkpoints not known to fail retention; "
            f"retention is unknown for {', '.join(c['model'] for c in unknown)}"
        )
    return {
        "model": best["model"],
        "step": best["step"],
        "rule": rule,
        "valid": passes[best["model"]],
        "highest_score": top["model"],
        "reason": reason,
        "verdicts": verdicts,
    }
