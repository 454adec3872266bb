"""plan: what a LoRA configuration would score and cost, before any training.

    python -m jobs.plan [--config SPEC.yaml] [--model NAME] [--stage 1|2]
                        [--cards N --rows R --seq S --epochs E --batch B] [--mfu M | --measured-step-s X]

Prints two tables:
  1. for LoRA ranks 1..32 on wq|wv, wq|wk|wv|wo and all linear layers: trainable parameters, the
     ratio (exact, and over the contest's nominal total), what the ratio costs in score, and the
     accuracy each needs to score as much as the contest's baseline configuration;
  2. the Ascend time model: FLOPs per token, step time and wall time for the workload, from an MFU
     calibrated on the contest's reference run (or from a measured step time).
The formulas and their assumptions are in tunebox/model/budget.py and docs/STAGE2.md.
Values not given come from --config when one is given, else from the stage's contest setting.

Exit codes: 0 ok, 2 bad arguments, 1 failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from tunebox.cli import tool_parser
from tunebox.config import LoraSection, ModelSection, RunSpec
from tunebox.io import InputError
from tunebox.model import budget
from tunebox.model.plan_report import (
    render_checkpoint_io,
    render_comparison,
    render_disk,
    render_lora_table,
    render_memory,
    render_time,
)
from tunebox.model.registry import get_model_shape
from tunebox.spec_checks import load_checked_spec


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser("plan", __doc__.split("\n\n")[0], "Exit codes: 0 ok, 2 bad arguments, 1 failure.")
    p.add_argument(
        "--config",
        "-c",
        metavar="SPEC.yaml",
        help="take model, stage, LoRA, seq_length, batch, epochs and workers from this run spec",
    )
    p.add_argument("--model", help="registry name (default: the recipe's, else the stage's contest model)")
    p.add_argument(
        "--stage", type=int, choices=(1, 2), help="which contest score (default: the recipe's, else by model)"
    )
    p.add_argument("--ranks", default=",".join(map(str, budget.CANDIDATE_RANKS)), help="candidate LoRA ranks")
    p.add_argument(
        "--baseline-accuracy",
        type=float,
        help="the baseline's accuracy, a fraction (default: the contest's: 0.20 stage 1, 0.40 stage 2)",
    )
    p.add_argument("--baseline-rank", type=int, help="the baseline's LoRA rank (default: the contest's, 8)")
    p.add_argument("--baseline-targets", help="the baseline's target modules (default: the contest's)")
    t = p.add_argument_group("time model (Ascend)")
    t.add_argument("--cards", type=int, help="NPUs (data or model parallel, all doing the same FLOPs)")
    t.add_argument("--rows", type=int, help="training rows")
    t.add_argument("--seq", type=int, help="padded sequence length")
    t.add_argument("--epochs", type=float, help="epochs")
    t.add_argument("--batch", type=int, help="global batch (samples per optimizer step, all cards)")
    t.add_argument(
        "--mfu",
        type=float,
        help="model FLOPs utilisation, a fraction (default: calibrated on the contest's reference run)",
    )
    t.add_argument(
        "--peak-tflops",
        type=float,
        default=budget.ASCEND_910B_PEAK_FP16_TFLOPS,
        help="peak dense FP16 TFLOPS per card (default: Ascend 910B, %(default)s)",
    )
    t.add_argument("--no-recompute", action="store_true", help="activations kept, not recomputed (4N not 6N)")
    t.add_argument("--measured-step-s", type=float, help="a measured step time in seconds: used instead of the model")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def resolve(args) -> dict:
    """Merge command line, recipe and stage defaults into one settings dict (with where each came from)."""
    spec = None
    if args.config:
        spec = load_checked_spec(args.config)  # its LoRA targets checked against the model, as the jobs do
    model = args.model or (spec.model.name if spec else None)
    stage = args.stage or (spec.stage if spec else None) or budget.MODEL_STAGE.get(model or "", 1)
    defaults = budget.STAGE_DEFAULTS[stage]
    model = model or defaults["model"]
    shape = get_model_shape(model)
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        raise InputError(f"--ranks must be integers separated by commas, got {args.ranks!r}") from None
    if not ranks or min(ranks) <= 0:
        raise InputError(f"--ranks must be positive integers, got {args.ranks!r}")

    baseline = budget.stage_baseline(
        stage, accuracy=args.baseline_accuracy, rank=args.baseline_rank, targets=args.baseline_targets
    )

    def pick(name: str, from_spec):
        value = getattr(args, name)
        if value is not None:
            return value, "command line"
        if spec is not None and from_spec is not None:
            return from_spec, "recipe"
        return defaults[name], f"stage {stage} contest setting"

    if spec is not None and spec.lora.rank not in ranks:
        ranks = sorted(ranks + [spec.lora.rank])  # the recipe's own rank gets its row in the table
    settings = {"model": shape, "stage": stage, "ranks": ranks, "baseline": baseline, "spec": spec}
    settings["cards"] = pick("cards", spec.train.workers if spec and spec.train.device == "Ascend" else None)
    settings["rows"] = pick("rows", spec.data.sample_rows if spec else None)
    settings["seq"] = pick("seq", spec.data.seq_length if spec else None)
    settings["epochs"] = pick("epochs", spec.train.epochs if spec else None)
    settings["batch"] = pick("batch", spec.train.batch_size * spec.train.grad_accum if spec else None)
    if spec is not None:
        settings["lora"] = (spec.lora.rank, spec.lora.target_modules, "recipe")
    else:
        settings["lora"] = (baseline.rank, baseline.target_modules, "baseline")
    return settings


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = resolve(args)
        plan = budget.plan_lora(s["model"], s["stage"], s["baseline"], s["ranks"])
        origins = {k: s[k] for k in ("cards", "rows", "seq", "epochs", "batch")}
        workload = budget.Workload(
            rows=origins["rows"][0],
            seq_length=origins["seq"][0],
            epochs=origins["epochs"][0],
            global_batch=origins["batch"][0],
            cards=origins["cards"][0],
        )
        rank, targets, _ = s["lora"]
        # the Ascend time model, as the command line sets it: the recipe's run and the baseline's alike
        time_model = budget.TimeModel(mfu=args.mfu, peak_tflops=args.peak_tflops, recompute=not args.no_recompute)
        trainable = s["model"].lora_params(rank, targets)
        est = budget.estimate_time(s["model"], workload, trainable, time_model, measured_step_s=args.measured_step_s)
        reference_mfu = budget.calibrated_mfu(args.peak_tflops)
        run = s["spec"] or RunSpec(
            model=ModelSection(name=s["model"].name), lora=LoraSection(rank=rank, target_modules=targets)
        )
        disk = budget.estimate_disk(run)
        io = budget.checkpoint_io(run, workload.steps)
        comparison = None
        if s["spec"] is not None:
            lora = (rank, targets)
            comparison = budget.compare_with_baseline(s["model"], s["stage"], s["baseline"], lora, est, time_model)
    except (InputError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: say so, exit 1
        print(f"plan failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "lora": plan.to_dict(),
                    "time": est.to_dict(),
                    "reference_mfu": reference_mfu,
                    "disk": disk.to_dict(),
                    "checkpoint_io": io.to_dict(),
                    "inputs": {k: {"value": v[0], "from": v[1]} for k, v in origins.items()},
                    "recipe_vs_baseline": comparison,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print(render_lora_table(plan, (rank, targets) if s["lora"][2] == "recipe" else None))
    print(render_time(est, origins, reference_mfu))
    if s["spec"] is not None:
        print(render_memory(s["model"], s["spec"], origins, trainable))
    print(render_disk(disk))
    print(render_checkpoint_io(io))
    if comparison is not None:
        print(render_comparison(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
