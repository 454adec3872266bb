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

from tunebox import layout
from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.contest.rules import param_figures
from tunebox.evaluation.loop import evaluate_models, load_questions, longest_sequence, models_to_evaluate
from tunebox.evaluation.report import write_plots, write_report
from tunebox.evaluation.runners import pick_backend, runner_loader
from tunebox.evaluation.scale_dial import dial_target, parse_scales, scale_dial
from tunebox.evaluation.scorecard import contest_figures, judge
from tunebox.manifest import write_job_manifest
from tunebox.model.budget import merged_weight_dtype
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer
from tunebox.run_checkpoints import base_checkpoint

log = logging.getLogger("tunebox.evaluate")


def evaluate(spec: RunSpec, scales: Optional[list[float]] = None) -> Path:
    """The whole job; `scales` (or eval.scales) adds the LoRA scale dial."""
    scales = parse_scales(spec.eval.scales) if scales is None else scales
    # setup: what this job reads from the run spec, once; below it works with these values
    ev, data, lora = spec.eval, spec.data, spec.lora
    run_dir, out = spec.run_dir, spec.job_dir("evaluate")
    merge_index = run_dir / layout.MERGE_INDEX
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
    params = param_figures(shape, lora.rank, lora.target_modules)
    contest = contest_figures(spec.stage, params)

    # 1. the questions every model answers
    task, squad = load_questions(run_dir, data, ev, tok, squad_file, spec.source_path, out)
    # 2. the base model and the merged checkpoints answer them
    models = models_to_evaluate(ev, merge_index, base_ckpt)
    seq_length = longest_sequence(task, squad)  # MindFormers' static sequence
    loader = runner_loader(backend, shape, seq_length, **runner_settings)
    results = evaluate_models(models, loader, task, squad, tok, backend, out)
    # 3. the contest's scorecards and choice; the LoRA scale dial on the chosen checkpoint
    base, tuned, choice = judge(results, contest)
    dial = None
    if scales:
        target = dial_target(models, tuned, choice)
        dial = scale_dial(
            target,
            scales,
            merge_index_file=merge_index,
            train_dir=spec.job_dir("train"),
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
    # 4. the report: what the charts and the tables both show
    shown = {"run_id": spec.run_id, "data": data, "base": base, "tuned": tuned, "choice": choice, "dial": dial}
    plots = write_plots(out, loss_file=run_dir / layout.TRAIN_LOSS, **shown)
    report_file = run_dir / layout.EVALUATE_REPORT
    report = write_report(
        out, report_file, model_name=spec.model.name, contest=contest, task=task, squad=squad, plots=plots, **shown
    )
    # 5. the manifest
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
