"""evaluate: the contest's judgement of a run. For the base model and every merged checkpoint:
accuracy on the held-out rows (math by the contest rule; multiple choice by the letter in the
generated text and, second, by the log-probabilities of the letters), SQuAD v1.1 F1/EM and the
retention against the base model (tuned >= 90% of base on both), the parameter ratio and the
stage score; then the checkpoint the contest rule picks, and why each other one lost.

Outputs, under runs/<run_id>/evaluate/:
  <model>/predictions.jsonl        one line per held-out row: prompt, answer, reference, verdicts
  <model>/scores.json              accuracy (strict and tolerant), per family, timing
  <model>/squad_predictions.jsonl  one line per SQuAD question: generated text, answer span, F1, EM
  <model>/squad.json               SQuAD F1 and EM (percent), timing
  scale-dial/scale-<s>/...         the same for the chosen checkpoint at LoRA scale s (--scales)
  limits.json                      max new tokens per problem family, from the training answers
  report.json, report.md           every model side by side, the choice and the reasons
  plots/*.png                      accuracy and retention per checkpoint, loss curve, per family, scale dial
  manifest.json

Generation backend (eval.backend): `numpy` is tunebox's batched greedy decoder with a KV cache
(tunebox/evaluation/decode.py), used on CPU because MindFormers' generate() does not run there;
`mindformers` is MindFormers' own generate() (the path on Ascend). `auto` picks by train.device.
New tokens are capped per problem family at the longest training answer of that family plus a
margin (never above eval.max_new_tokens), and at 20 for SQuAD as the contest did.

Resumable: a model whose scores.json / squad.json match its checkpoint's sha256 and the current
settings is not evaluated again.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.contest.rules import (RETENTION_METRIC, RETENTION_THRESHOLD, SCORE_FORMULAS, choose_checkpoint,
                                   param_figures, retention_verdict, stage_score)
from tunebox.model.weights import load_tokenizer
from tunebox.evaluation.loop import (ALL_FAMILIES, MCQ_ANSWER_PREFIX, SQUAD_MAX_NEW_TOKENS, HeldoutTask, SquadTask,
                                     evaluate_model, limit_for, load_heldout, load_squad)
from tunebox.evaluation.runners import MindFormersRunner, NumpyRunner, pick_backend
from tunebox.io import InputError, atomic_write_json, atomic_write_text, read_jsonl, sha256_file
from tunebox.manifest import write_job_manifest
from tunebox.model.registry import get_model_shape
from tunebox.data.tokenizer import TextTokenizer

log = logging.getLogger("tunebox.evaluate")


# ---- contest figures and the choice ------------------------------------------------------------

def contest_figures(spec: RunSpec) -> dict:
    """The run's parameter figures (contest.param_figures), its score formula and retention threshold."""
    return {"stage": spec.stage, **param_figures(spec.model.name, spec.lora.rank, spec.lora.target_modules),
            "score_formula": f"stage {spec.stage}: {SCORE_FORMULAS[spec.stage]}, accuracy = strict",
            "retention_threshold": RETENTION_THRESHOLD}


def annotate(entry: dict, base: Optional[dict], figures: dict) -> dict:
    """Add retention, ratio and stage score to one tuned model's summary."""
    entry["retention"] = retention_verdict(entry.get("squad"), (base or {}).get("squad"), figures["retention_threshold"])
    # the same rule on MindFormers' EmF1Metric figures (the contest's metric): reported, not what the choice uses
    entry["retention_emf1"] = retention_verdict((entry.get("squad") or {}).get("emf1"),
                                                ((base or {}).get("squad") or {}).get("emf1"),
                                                figures["retention_threshold"])
    entry["ratio"] = figures["ratio_for_score"]
    entry["score"] = stage_score(figures["stage"], entry["accuracy_strict"], figures["ratio_for_score"])
    entry["score_tolerant"] = stage_score(figures["stage"], entry["accuracy_tolerant"], figures["ratio_for_score"])
    entry["score_exact_ratio"] = stage_score(figures["stage"], entry["accuracy_strict"], figures["ratio"])
    return entry


# ---- the job -------------------------------------------------------------------------------

def models_to_evaluate(spec: RunSpec) -> list[dict]:
    from tunebox.run_checkpoints import base_checkpoint

    models = []
    if spec.eval.base:
        base = base_checkpoint(spec)
        models.append({"name": "base", "step": 0, "checkpoint": base, "train_loss": None})
    if spec.eval.checkpoints == "none":
        return models
    index_file = spec.run_dir / layout.MERGE_INDEX
    if not index_file.exists():
        raise InputError(f"{index_file} not found: run merge first")
    merged = json.loads(index_file.read_text())["checkpoints"]
    if spec.eval.checkpoints == "last":
        merged = merged[-1:]
    for e in merged:
        models.append({"name": f"step-{e['step']:06d}", "step": e["step"], "train_loss": e.get("train_loss"),
                       "checkpoint": index_file.parent / e["file"], "sha256": e.get("sha256"),
                       "lora_file": e.get("lora_file"), "merge_scale": e.get("scale", 1.0)})
    return models


def parse_scales(text) -> list[float]:
    """'0.25,0.5,1' or [0.25, 0.5, 1] -> [0.25, 0.5, 1.0]; empty/None -> []."""
    if not text:
        return []
    scales = []
    for part in (text if isinstance(text, list) else str(text).split(",")):
        part = str(part).strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"LoRA scale {part!r} is not a number; give scales like 0.25,0.5,1.0") from None
        if not np.isfinite(value):
            raise InputError(f"LoRA scale {part!r} must be finite")
        scales.append(value)
    return scales


def merged_in_memory(spec: RunSpec, base_arrays: dict, lora_arrays: dict, scale: float):
    """The NumpyLlama of W + scale * (alpha / r) * B A, without writing a checkpoint."""
    from tunebox.evaluation.decode import NumpyLlama
    from tunebox.model.lora import merge_lora_into_base

    merged = merge_lora_into_base(base_arrays, lora_arrays, spec.lora.alpha, spec.lora.rank, scale)
    return NumpyLlama(merged, get_model_shape(spec.model.name), source=f"in-memory merge at scale {scale:g}")


def scale_dial(spec: RunSpec, target: dict, scales: list[float], task: HeldoutTask, squad: Optional[SquadTask],
               tok: TextTokenizer, backend: str, base: Optional[dict], contest: dict, out: Path) -> dict:
    """Evaluate `target` (a merged checkpoint's models_to_evaluate entry) at each LoRA scale,
    merging the trained LoRA into the base weights in memory."""
    from tunebox.model.checkpoint import load_checkpoint_numpy

    if backend != "numpy":
        raise InputError(f"the LoRA scale dial merges in memory for the numpy backend; eval.backend is {backend}")
    merge_index = json.loads((spec.run_dir / layout.MERGE_INDEX).read_text())
    base_ckpt = Path(merge_index["base_checkpoint"])
    if not target.get("lora_file"):
        raise InputError(f"merge/index.json names no LoRA file for {target['name']}: run merge again")
    lora_file = spec.job_dir("train") / target["lora_file"]
    lora_sha, base_sha = sha256_file(lora_file), sha256_file(base_ckpt)
    arrays: dict = {}

    def load(scale):
        def build():
            if not arrays:
                arrays["base"] = load_checkpoint_numpy(base_ckpt)
                arrays["lora"] = load_checkpoint_numpy(lora_file)
            return NumpyRunner(merged_in_memory(spec, arrays["base"], arrays["lora"], scale), spec.eval.batch_size)
        return build

    points = []
    for scale in scales:
        name = f"scale-{scale:g}"
        identity = {"checkpoint_sha256": f"lora {lora_sha} x {scale!r} + base {base_sha}"}
        info = {"step": target["step"], "train_loss": target["train_loss"], "scale": scale, "of": target["name"],
                "lora_file": str(lora_file), "checkpoint": str(base_ckpt)}
        entry = evaluate_model(name, out / "scale-dial" / name, identity, load(scale), task, squad, tok, backend, info)
        points.append(annotate(entry, base, contest))
    return {"checkpoint": target["name"], "step": target["step"], "lora_file": str(lora_file), "points": points}


def evaluate(spec: RunSpec, scales: Optional[list[float]] = None) -> Path:
    """The whole job; `scales` (or eval.scales) adds the LoRA scale dial."""
    scales = parse_scales(spec.eval.scales) if scales is None else scales
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    task = load_heldout(spec, tok)
    squad = load_squad(spec, tok)
    shape = get_model_shape(spec.model.name)
    backend = pick_backend(spec)
    contest = contest_figures(spec)
    out = spec.job_dir("evaluate")
    atomic_write_json(out / "limits.json", task.limits_info)
    log.info("max new tokens per family: %s", ", ".join(f"{f} {v['max_new_tokens']}"
                                                       for f, v in task.limits_info["families"].items()))
    longest_prompt = max(len(p) for p in task.prompts + (squad.prompts if squad else []))
    seq_for_mf = longest_prompt + max(task.limits + [SQUAD_MAX_NEW_TOKENS])

    def loader(ckpt: Path):
        if backend == "numpy":
            return lambda: NumpyRunner.from_checkpoint(shape, ckpt, spec.eval.batch_size)
        return lambda: MindFormersRunner(shape, ckpt, spec, seq_for_mf)

    models = models_to_evaluate(spec)
    results = []
    for m in models:
        sha = m.get("sha256") or sha256_file(m["checkpoint"])
        info = {"step": m["step"], "train_loss": m["train_loss"], "checkpoint": str(m["checkpoint"])}
        results.append(evaluate_model(m["name"], out / m["name"], {"checkpoint_sha256": sha}, loader(m["checkpoint"]),
                                      task, squad, tok, backend, info))
        kill_point("evaluate.between-models")
    base = next((r for r in results if r["model"] == "base"), None)
    tuned = [annotate(r, base, contest) for r in results if r["model"] != "base"]
    choice = choose_checkpoint(tuned)
    dial = None
    if scales:
        target_name = choice["model"] or (tuned[-1]["model"] if tuned else None)
        if target_name is None:
            raise InputError("the scale dial needs a merged checkpoint: run merge first")
        target = next(m for m in models if m["name"] == target_name)
        log.info("scale dial on %s at scales %s", target_name, ", ".join(f"{s:g}" for s in scales))
        dial = scale_dial(spec, target, scales, task, squad, tok, backend, base, contest, out)
    plots = write_plots(spec, out, base, tuned, choice, dial)
    report = write_report(spec, out, base, tuned, choice, contest, task, squad, dial, plots)
    inputs = {"heldout": spec.run_dir / layout.PREP_HELDOUT, "train_samples": spec.run_dir / layout.PREP_TRAIN_RECORDS}
    if squad:
        inputs["squad"] = squad.source
    # every model's folder too (predictions, scores): an edited or deleted one makes a rerun evaluate again
    outputs = {"report": spec.run_dir / layout.EVALUATE_REPORT, **{r["model"]: out / r["model"] for r in results}}
    write_job_manifest(out, "evaluate", spec, inputs=inputs, outputs=outputs,
                       extra={"backend": backend, "rows": len(task.rows), "squad_rows": len(squad.rows) if squad else 0,
                              "chosen": choice["model"], "scales": scales})
    (log.warning if choice["valid"] is False else log.info)("chosen: %s (%s)", choice["model"], choice["reason"])
    log.info("report: %s", out / "report.md")
    return report


# ---- report ----------------------------------------------------------------------------------

def _f(value, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def valid_cell(retention: dict) -> str:
    """The report's verdict: pass / **fail** / ?, and never a bare pass where a base score of 0 decided
    nothing (tuned >= 0.9 x 0 holds whatever the checkpoint does)."""
    passes = retention.get("passes")
    if passes is not True:
        return {False: "**fail**", None: "?"}[passes]
    undecided = retention.get("undecided") or []
    decided = [m.upper() for m in ("f1", "em") if m not in undecided]
    if not undecided:
        return "pass"
    if not decided:
        return "cannot pass or fail (base 0)"
    return f"pass on {' and '.join(decided)}; {' and '.join(m.upper() for m in undecided)} cannot pass or fail (base 0)"


def na(retention: dict) -> str:
    """How a missing retention ratio reads: when SQuAD was measured but the base scored 0, that
    metric cannot pass or fail (tuned >= 0.9 x 0 always holds); '-' when it was not measured."""
    return "cannot pass or fail (base 0)" if retention.get("measured") else "-"


def write_plots(spec: RunSpec, out: Path, base: Optional[dict], tuned: list[dict], choice: dict,
                dial: Optional[dict]) -> list[str]:
    """The report's charts; returns their paths relative to `out`."""
    from tunebox.evaluation import plots

    made = []
    pdir = out / "plots"
    models = ([base] if base else []) + tuned
    if models:
        steps = [m["step"] for m in models]
        series = [plots.Series("accuracy (strict)", steps, [m["accuracy_strict"] for m in models]),
                  plots.Series("accuracy (tolerant)", steps, [m["accuracy_tolerant"] for m in models], dashed=True)]
        if spec.data.format == "math":
            series.append(plots.Series("within 1% (graded)", steps, [m.get("accuracy_within_1pct") for m in models]))
        if any(m.get("accuracy_logprob") is not None for m in models):
            series.append(plots.Series("accuracy (letter log-prob)", steps, [m.get("accuracy_logprob") for m in models]))
        hlines = []
        if any(m.get("retention", {}).get("measured") for m in tuned):
            ret = [1.0 if m is base else m["retention"]["f1"] for m in models]
            series.append(plots.Series("SQuAD F1 retention", steps, ret))
            series.append(plots.Series("SQuAD EM retention", steps,
                                       [1.0 if m is base else m["retention"]["em"] for m in models], dashed=True))
            hlines.append(plots.HLine(RETENTION_THRESHOLD, f"retention threshold {RETENTION_THRESHOLD:.2f}"))
        plots.line_chart(pdir / "accuracy_retention.png", series, hlines=hlines,
                         title=f"{spec.run_id}: accuracy and SQuAD retention per checkpoint"
                               + (f" (chosen: {choice['model']})" if choice.get("model") else ""),
                         xlabel="training step (0 = base model)", ylabel="fraction", x_ticks=steps)
        made.append("plots/accuracy_retention.png")
        families = sorted({f for m in models for f in m["per_family"]})
        if families:
            counts = {f: next(m["per_family"][f]["n"] for m in models if f in m["per_family"]) for f in families}
            plots.bar_chart(pdir / "per_family.png", [f"{f} (n={counts[f]})" for f in families],
                            {m["model"]: [m["per_family"].get(f, {}).get("strict") for f in families] for m in models},
                            title="strict accuracy per family", xlabel="strict accuracy", x_range=(0.0, 1.0))
            made.append("plots/per_family.png")
            if spec.data.format == "math":
                plots.bar_chart(pdir / "per_family_graded.png", [f"{f} (n={counts[f]})" for f in families],
                                {m["model"]: [m["per_family"].get(f, {}).get("within_1pct") for f in families]
                                 for m in models},
                                title="share within 1% of the reference, per family (graded)",
                                xlabel="share within 1%", x_range=(0.0, 1.0))
                made.append("plots/per_family_graded.png")
    loss_file = spec.run_dir / layout.TRAIN_LOSS
    if loss_file.exists():
        rows = read_jsonl(loss_file)
        if rows:
            steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
            window = max(1, len(rows) // 10)
            smooth = [float(np.mean(losses[max(0, i - window + 1):i + 1])) for i in range(len(losses))]
            ck = {m["step"]: m for m in tuned}
            series = [plots.Series("loss per step", steps, losses, markers=False, color="#BBBBBB")]
            if window > 1:
                series.append(plots.Series(f"mean of last {window} steps", steps, smooth, markers=False))
            series.append(plots.Series("checkpoints", steps, [s if st in ck else None for st, s in zip(steps, smooth)],
                                       lines=False))
            plots.line_chart(pdir / "loss.png", series, title=f"{spec.run_id}: training loss",
                             xlabel="optimizer step", ylabel="loss (answer tokens)")
            made.append("plots/loss.png")
    if dial and dial["points"]:
        pts = sorted(dial["points"], key=lambda p: p["scale"])
        xs = [p["scale"] for p in pts]
        series = [plots.Series("accuracy (strict)", xs, [p["accuracy_strict"] for p in pts]),
                  plots.Series("accuracy (tolerant)", xs, [p["accuracy_tolerant"] for p in pts], dashed=True)]
        hlines = []
        if any(p["retention"]["measured"] for p in pts):
            series += [plots.Series("SQuAD F1 retention", xs, [p["retention"]["f1"] for p in pts]),
                       plots.Series("SQuAD EM retention", xs, [p["retention"]["em"] for p in pts], dashed=True)]
            hlines.append(plots.HLine(RETENTION_THRESHOLD, f"retention threshold {RETENTION_THRESHOLD:.2f}"))
        plots.line_chart(pdir / "scale_dial.png", series, hlines=hlines, x_ticks=xs,
                         title=f"LoRA scale dial on {dial['checkpoint']}: W + s*(alpha/r)*BA",
                         xlabel="LoRA scale s", ylabel="fraction")
        made.append("plots/scale_dial.png")
    return made


def write_report(spec: RunSpec, out: Path, base: Optional[dict], tuned: list[dict], choice: dict, contest: dict,
                 task: HeldoutTask, squad: Optional[SquadTask], dial: Optional[dict], plots: list[str]) -> Path:
    best_acc = max(tuned, key=lambda r: (r["accuracy_strict"], r["step"])) if tuned else None
    results = ([base] if base else []) + tuned
    mcq = task.fmt == "mcq"
    report = {"run_id": spec.run_id, "model": spec.model.name, "format": spec.data.format, "stage": spec.stage,
              "heldout_rows": len(task.rows), "base": base, "checkpoints": tuned,
              "best_by_accuracy": best_acc["model"] if best_acc else None,
              "best_checkpoint": {k: choice[k] for k in ("model", "step", "rule", "valid", "reason", "highest_score")},
              "verdicts": choice["verdicts"], "contest": contest,
              "squad": ({"source": str(squad.source), "sha256": squad.source_sha256, "rows": len(squad.rows),
                         "max_new_tokens": squad.max_new_tokens, "prompt": "scoring.squad_prompt, no chat template"}
                        if squad else None),
              "max_new_tokens": {"cap": task.limits_info["cap"], "margin": task.limits_info["margin"],
                                 "by_family": {f: v["max_new_tokens"] for f, v in task.limits_info["families"].items()}},
              "mcq_logprob": ({k: task.choice_plan[k] for k in ("prefix", "letter_ids", "letter_tokens")}
                              if task.choice_plan else None),
              "scale_dial": dial, "plots": plots}
    atomic_write_json(spec.run_dir / layout.EVALUATE_REPORT, report)

    ratio_line = (f"Ratio {contest['ratio']:.8f} exact ({contest['trainable_params']:,} / {contest['total_params']:,})"
                  + (f", {contest['contest_ratio']:.9f} as the contest computed it (/ {contest['contest_total_params']:,})"
                     if contest["contest_ratio"] is not None else "; the contest has no nominal total for this model")
                  + f". Score = {contest['score_formula']} (ratio {contest['ratio_for_score']:.8g}).")
    squad_line = (f"SQuAD: first {len(squad.rows)} questions of `{squad.source.name}`, contest prompt, greedy, "
                  f"<= {squad.max_new_tokens} new tokens; retention = tuned / base, valid when F1 and EM both >= "
                  f"{RETENTION_THRESHOLD:.2f}; the checkpoint choice uses the {RETENTION_METRIC}, MindFormers' "
                  f"EmF1Metric (the contest's metric) is shown beside it. A base score of 0 cannot pass or fail."
                  if squad else "SQuAD retention not measured (eval.squad_file unset).")
    lines = [f"# Evaluation report: {spec.run_id}", "",
             f"Model `{spec.model.name}`, stage {spec.stage}, {len(task.rows)} held-out rows ("
             + ", ".join(f"{sum(1 for r in task.rows if r.get('source', 'split') == src)} "
                         + ("of the generated rows" if src == "split" and spec.data.generate
                            else f"of `{spec.data.train_file}`" if src == "split" else f"of `{spec.data.heldout_file}`")
                         for src in sorted({r.get("source", "split") for r in task.rows}))
             + "), "
             f"greedy, new tokens per family = longest training answer + {task.limits_info['margin']} "
             f"(cap {task.limits_info['cap']}). " + (
                 f"Accuracy = the letter in the generated text (the contest's way; strict = tolerant); log-prob = the "
                 f"letter whose token is most likely right after '{MCQ_ANSWER_PREFIX}' (one forward pass, reported "
                 f"only). " if mcq else "Strict = the contest rule; tolerant = docs/CONTEST_RULES.md; within 1% and digits (the mean "
                                   "count of the reference's leading significant digits right) = the graded measure, "
                                   "scoring.closeness. ")
             + squad_line, ratio_line, "",
             "| model | step | loss | acc strict | acc tolerant |" + (" acc log-prob |" if mcq else " within 1% | digits |")
             + " SQuAD F1 | SQuAD EM | retention F1 / EM | score | valid |",
             "|---|---:|---:|---:|---:|" + ("---:|" if mcq else "---:|---:|") + "---:|---:|---:|---:|:---:|"]
    for r in results:
        sq = r.get("squad") or {}
        ret = r.get("retention") or {}
        valid = valid_cell(ret) if r is not base else ""
        mark = " ✅" if r["model"] == choice["model"] else ""
        lines.append(f"| {r['model']}{mark} | {r['step']} | {_f(r.get('train_loss'), '.4f')} | {r['accuracy_strict']:.3f} | "
                     f"{r['accuracy_tolerant']:.3f} |" + (f" {_f(r.get('accuracy_logprob'))} |" if mcq else
                                                          f" {_f(r.get('accuracy_within_1pct'))} |"
                                                          f" {_f(r.get('leading_digits_mean'), '.2f')} |")
                     + f" {_f(sq.get('f1'), '.2f')} | {_f(sq.get('em'), '.2f')} | "
                     + (f"{_f(ret.get('f1'), none=na(ret))} / {_f(ret.get('em'), none=na(ret))}" if r is not base
                        else "1 / 1" if sq else "-")
                     + f" | {_f(r.get('score'), '.4f')} | {valid} |")
    if any((r.get("squad") or {}).get("emf1") for r in results):
        lines += ["", "SQuAD by MindFormers' EmF1Metric (the contest's metric; the same answers, each question's "
                      "first gold answer; reported, not what the choice uses):", "",
                  "| model | EmF1Metric F1 | EmF1Metric EM | EmF1Metric retention F1 / EM | verdict by EmF1Metric |",
                  "|---|---:|---:|---:|:---:|"]
        for r in results:
            e, rr = (r.get("squad") or {}).get("emf1") or {}, r.get("retention_emf1") or {}
            lines.append(f"| {r['model']} | {_f(e.get('f1'), '.2f')} | {_f(e.get('em'), '.2f')} | "
                         + (f"{_f(rr.get('f1'), none=na(rr))} / {_f(rr.get('em'), none=na(rr))} | "
                            f"{valid_cell(rr)} |" if r is not base
                            else "1 / 1 | |"))
    lines += ["", f"**Chosen: {choice['model'] or 'none'}**: {choice['reason']}."]
    zero = [m.upper() for m in ("f1", "em") if base and (base.get("squad") or {}).get(m) == 0]
    if zero:
        lines.append(f"The base model scores 0 on SQuAD {' and '.join(zero)}: the retention rule cannot pass or fail "
                     f"on it (any checkpoint keeps 90% of 0), so it decided nothing there.")
    for name, why in choice["verdicts"].items():
        lines.append(f"- {name}: {why}")
    if dial:
        lines += ["", f"## LoRA scale dial on {dial['checkpoint']} (W + s·(alpha/r)·BA)", "",
                  "| s | acc strict | acc tolerant | SQuAD F1 | SQuAD EM | retention F1 / EM | score | valid |",
                  "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for p in sorted(dial["points"], key=lambda p: p["scale"]):
            sq, ret = p.get("squad") or {}, p["retention"]
            lines.append(f"| {p['scale']:g} | {p['accuracy_strict']:.3f} | {p['accuracy_tolerant']:.3f} | "
                         f"{_f(sq.get('f1'), '.2f')} | {_f(sq.get('em'), '.2f')} | "
                         f"{_f(ret['f1'], none=na(ret))} / {_f(ret['em'], none=na(ret))} | "
                         f"{p['score']:.4f} | {({True: 'pass', False: 'fail', None: '?'})[ret['passes']]} |")
    sources = sorted({src for r in results for src in (r.get("per_source") or {})})
    if sources:
        lines += ["", "## Per held-out source (strict / within 1% / mean leading digits right)", "",
                  "split: rows held out of data.train_file; file: data.heldout_file rows. Not tuned on either.", "",
                  "| model | " + " | ".join(f"{src} (n={next(r['per_source'][src]['n'] for r in results if src in (r.get('per_source') or {}))})"
                                          for src in sources) + " |",
                  "|---|" + "---:|" * len(sources)]
        for r in results:
            cells = []
            for src in sources:
                ps = (r.get("per_source") or {}).get(src)
                cells.append(f"{ps['accuracy_strict']:.3f} / {ps['accuracy_within_1pct']:.3f} / "
                             f"{_f(ps['leading_digits_mean'], '.2f')}" if ps else "-")
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    families = sorted({f for r in results for f in r["per_family"]})
    if not mcq:
        lines += ["", "## Per family (graded: share within 1% of the reference)", "",
                  "| family | n | " + " | ".join(r["model"] for r in results) + " |",
                  "|---|---:|" + "---:|" * len(results)]
        for f in families:
            n = next(r["per_family"][f]["n"] for r in results if f in r["per_family"])
            cells = [_f(r["per_family"][f].get("within_1pct"), ".2f") if f in r["per_family"] else "-" for r in results]
            lines.append(f"| {f} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Per family (strict accuracy)", "",
              "| family | n | max new | " + " | ".join(r["model"] for r in results) + " |",
              "|---|---:|---:|" + "---:|" * len(results)]
    for f in families:
        n = next(r["per_family"][f]["n"] for r in results if f in r["per_family"])
        cells = [f"{r['per_family'][f]['strict']:.2f}" if f in r["per_family"] else "-" for r in results]
        cap = limit_for(task.limits_info, f if task.fmt == "math" else ALL_FAMILIES)
        lines.append(f"| {f} | {n} | {cap} | " + " | ".join(cells) + " |")
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{Path(p).stem}]({p})" for p in plots)]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return spec.run_dir / layout.EVALUATE_REPORT


def main(spec: RunSpec, args) -> None:
    evaluate(spec, parse_scales(args.scales) if args.scales else None)


def _args(parser) -> None:
    parser.add_argument("--scales", metavar="S1,S2,...",
                        help="LoRA scale dial: also evaluate the chosen checkpoint (or the last) at "
                             "W + s*(alpha/r)*BA for each s, merged in memory (overrides eval.scales)")


if __name__ == "__main__":
    raise SystemExit(run_job("evaluate", __doc__, main, _args))
