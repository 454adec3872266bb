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
  scale-dial/scale-<s>/...         the same for the chosen checkpoint at LoRA scale s (eval.scales)
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

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.contest.rules import choose_checkpoint, param_figures
from tunebox.evaluation.loop import SQUAD_MAX_NEW_TOKENS, evaluate_model, load_heldout, load_squad, models_to_evaluate
from tunebox.evaluation.report import write_plots, write_report
from tunebox.evaluation.runners import pick_backend, runner_loader
from tunebox.evaluation.scale_dial import scale_dial
from tunebox.evaluation.scorecard import annotate, contest_figures
from tunebox.io import InputError, atomic_write_json, sha256_file
from tunebox.manifest import write_job_manifest
from tunebox.model.budget import merged_weight_dtype
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer
from tunebox.run_checkpoints import base_checkpoint

log = logging.getLogger("tunebox.evaluate")


def parse_scales(text) -> list[float]:
    """'0.25,0.5,1' or [0.25, 0.5, 1] -> [0.25, 0.5, 1.0]; empty/None -> []."""
    if not text:
        return []
    scales = []
    for part in text if isinstance(text, list) else str(text).split(","):
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


def evaluate(spec: RunSpec, scales: Optional[list[float]] = None) -> Path:
    """The whole job; `scales` (or eval.scales) adds the LoRA scale dial."""
    scales = parse_scales(spec.eval.scales) if scales is None else scales
    # setup: what this job reads from the run spec, once; below it works with these values
    ev, data, lora, run_dir, out = spec.eval, spec.data, spec.lora, spec.run_dir, spec.job_dir("evaluate")
    backend = pick_backend(ev.backend, spec.train.device)
    base_ckpt = base_checkpoint(spec) if ev.base else None
    shape = get_model_shape(spec.model.name)
    runner_settings = {
        "device": spec.train.device,
        "dtype": merged_weight_dtype(spec.merge, spec.train),
        "batch_size": ev.batch_size,
        "output_dir": run_dir,
    }
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    squad_file = spec.resolve(ev.squad_file) if ev.squad_file else None
    merge_index, train_dir, source = run_dir / layout.MERGE_INDEX, spec.job_dir("train"), spec.source_path
    run_id, model_name, stage = spec.run_id, spec.model.name, spec.stage

    task = load_heldout(run_dir, data, ev, tok)
    squad = load_squad(squad_file, ev, tok, source)
    atomic_write_json(out / "limits.json", task.limits_info)
    log.info(
        "max new tokens per family: %s",
        ", ".join(f"{f} {v['max_new_tokens']}" for f, v in task.limits_info["families"].items()),
    )
    models = models_to_evaluate(ev, merge_index, base_ckpt)
    longest_prompt = max(len(p) for p in task.prompts + (squad.prompts if squad else []))
    seq_for_mf = longest_prompt + max(task.limits + [SQUAD_MAX_NEW_TOKENS])
    loader = runner_loader(backend, shape, seq_for_mf, **runner_settings)

    results = []
    for m in models:
        sha = m.get("sha256") or sha256_file(m["checkpoint"])
        info = {"step": m["step"], "train_loss": m["train_loss"], "checkpoint": str(m["checkpoint"])}
        results.append(
            evaluate_model(
                m["name"],
                out / m["name"],
                {"checkpoint_sha256": sha},
                loader(m["checkpoint"]),
                task,
                squad,
                tok,
                backend,
                info,
            )
        )
        kill_point("evaluate.between-models")
    base = next((r for r in results if r["model"] == "base"), None)
    params = param_figures(shape, lora.rank, lora.target_modules)
    contest = contest_figures(stage, params)
    tuned = [annotate(r, base, contest) for r in results if r["model"] != "base"]
    choice = choose_checkpoint(tuned)
    dial = None
    if scales:
        target_name = choice["model"] or (tuned[-1]["model"] if tuned else None)
        if target_name is None:
            raise InputError("the scale dial needs a merged checkpoint: run merge first")
        target = next(m for m in models if m["name"] == target_name)
        log.info("scale dial on %s at scales %s", target_name, ", ".join(f"{s:g}" for s in scales))
        dial = scale_dial(
            target,
            scales,
            merge_index_file=merge_index,
            train_dir=train_dir,
            shape=shape,
            lora=lora,
            batch_size=ev.batch_size,
            task=task,
            squad=squad,
            tok=tok,
            backend=backend,
            base=base,
            contest=contest,
            out=out,
        )
    # what the charts and the report both show
    shown = {"run_id": run_id, "data": data, "base": base, "tuned": tuned, "choice": choice, "dial": dial}
    plots = write_plots(out, loss_file=run_dir / layout.TRAIN_LOSS, **shown)
    report_file = run_dir / layout.EVALUATE_REPORT
    report = write_report(
        out, report_file, model_name=model_name, contest=contest, task=task, squad=squad, plots=plots, **shown
    )
    inputs = {"heldout": run_dir / layout.PREP_HELDOUT, "train_samples": run_dir / layout.PREP_TRAIN_RECORDS}
    if squad:
        inputs["squad"] = squad.source
    # every model's folder too (predictions, scores): an edited or deleted one makes a rerun evaluate again
    outputs = {"report": report, **{r["model"]: out / r["model"] for r in results}}
    write_job_manifest(
        out,
        "evaluate",
        spec,
        inputs=inputs,
        outputs=outputs,
        extra={
            "backend": backend,
            "rows": len(task.rows),
            "squad_rows": len(squad.rows) if squad else 0,
            "chosen": choice["model"],
            "scales": scales,
        },
    )
    (log.warning if choice["valid"] is False else log.info)("chosen: %s (%s)", choice["model"], choice["reason"])
    log.info("report: %s", out / "report.md")
    return report


def main(spec: RunSpec, args) -> None:
    evaluate(spec)  # the LoRA scale dial, when eval.scales is set


if __name__ == "__main__":
    raise SystemExit(run_job("evaluate", __doc__, main))
