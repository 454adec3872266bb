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

from tunebox.config import LoraSection, ModelSection, RunSpec
from tunebox.io import InputError
from tunebox.model import budget
from tunebox.model.mf_config import topology
from tunebox.model.registry import get_model_shape, lora_targets
from tunebox.spec_checks import load_checked_spec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.plan",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 2 bad arguments, 1 failure.",
    )
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


def render_lora_table(plan: budget.LoraPlan, recipe_lora: Optional[tuple[int, str]] = None) -> str:
    b = plan.baseline
    contest_total = f"{plan.total_contest:,}" if plan.total_contest else "none (exact total used)"
    lines = [
        f"{plan.model}, stage {plan.stage}: {plan.total_exact:,} parameters exactly; "
        f"contest's nominal total {contest_total}",
        f"score = 0.3 * (1 - {budget.RATIO_WEIGHT[plan.stage]:g} * ratio) + 0.7 * accuracy",
        f"baseline: LoRA r={b.rank} on {b.target_modules} = {plan.baseline_trainable:,} trainable, ratio "
        f"{plan.baseline_ratio:.9f}"
        + (
            f", accuracy {b.accuracy:.0%} -> score {plan.baseline_score:.6f}"
            if b.accuracy is not None
            else ", accuracy unknown"
        ),
        f"  ({b.source})",
        "",
    ]
    need = "margin over baseline acc." if plan.break_even_is_margin else "accuracy to tie baseline"
    header = (
        f"{'targets':<13} {'rank':>4} {'trainable':>13} {'ratio (exact)':>14} {'ratio (contest)':>16} "
        f"{'ratio cost':>11} {need:>26}"
    )
    lines += [header, "-" * len(header)]
    recipe_targets = lora_targets(recipe_lora[1]) if recipe_lora else None
    for o in plan.options:
        mark = []
        if o.is_baseline:
            mark.append("baseline")
        if recipe_lora and o.rank == recipe_lora[0] and lora_targets(o.target_modules) == recipe_targets:
            mark.append("recipe")
        contest = f"{o.ratio_contest:.9f}" if o.ratio_contest is not None else "-"
        need_text = f"{o.break_even * 100:+.4f} pts" if plan.break_even_is_margin else f"{o.break_even:.4%}"
        lines.append(
            f"{o.targets:<13} {o.rank:>4} {o.trainable:>13,} {o.ratio_exact:>14.9f} {contest:>16} "
            f"{o.ratio_penalty:>11.6f} {need_text:>26}" + (f"   <- {', '.join(mark)}" if mark else "")
        )
    return "\n".join(lines)


def render_time(est: budget.TimeEstimate, origins: dict, reference_mfu: float) -> str:
    w = est.workload
    src = ", ".join(f"{k} {v[0]} ({v[1]})" for k, v in origins.items())
    lines = [
        "",
        f"Ascend time model for {est.model}: {src}",
        f"  steps {w.steps:,} (= {w.rows:,} // {w.global_batch} x {w.epochs:g} epochs), "
        f"{w.tokens:,} padded tokens, LoRA {est.lora_trainable:,} trainable",
        f"  FLOPs per token {est.flops_per_token / 1e9:.2f} G "
        f"({'with' if est.recompute else 'without'} recompute), per step {est.step_flops / 1e15:.3f} PFLOP, "
        f"total {est.total_flops / 1e18:.3f} EFLOP",
    ]
    if est.source == "measured":
        lines.append(
            f"  measured step {est.step_seconds:.3f} s -> wall {budget.format_duration(est.wall_seconds)}; "
            f"implied MFU {est.mfu:.1%} of {est.peak_tflops:g} TFLOPS x {w.cards} cards "
            f"(the contest's reference run implies {reference_mfu:.1%})"
        )
    else:
        how = "calibrated on the contest's reference run" if abs(est.mfu - reference_mfu) < 1e-12 else "given"
        lines.append(
            f"  MFU {est.mfu:.1%} ({how}) of {est.peak_tflops:g} TFLOPS x {w.cards} cards -> "
            f"step {est.step_seconds:.2f} s, wall {budget.format_duration(est.wall_seconds)}"
        )
    lines.append(
        "  (compute only: data loading, compile and checkpoint time are inside the calibrated MFU; "
        "use --measured-step-s once a real step time is known)"
    )
    if est.model == budget.STAGE2_TEAM_REFERENCE.model and est.source == "model":
        ref = budget.STAGE2_TEAM_REFERENCE
        team_mfu = budget.calibrated_mfu(est.peak_tflops, ref)
        lines.append(
            f"  cross-check: a stage-2 team reported ~{ref.hours:g} h for {ref.workload.epochs:g} epochs on "
            f"{ref.workload.cards} cards (seq {ref.workload.seq_length}, batch {ref.workload.global_batch}), "
            f"which implies MFU >= {team_mfu:.1%}; with it this run would take "
            f"{budget.format_duration(est.wall_seconds * est.mfu / team_mfu)} (--mfu {team_mfu:.3f})"
        )
    return "\n".join(lines)


def render_memory(shape, spec, origins: dict, lora_trainable: int) -> str:
    """Per-card memory of the recipe's topology (train.parallel), by part."""
    topo = topology(spec.train)
    mem = budget.topology_card_memory(
        shape,
        topo,
        spec.train,
        seq_length=origins["seq"][0],
        global_batch=origins["batch"][0],
        lora_trainable=lora_trainable,
    )

    def gib(x):
        return f"{x / 2**30:.1f} GiB"

    return "\n".join(
        [
            "",
            f"Per-card memory, {spec.train.workers} workers = data_parallel {topo.data_parallel} x model_parallel "
            f"{topo.model_parallel} x pipeline_stage {topo.pipeline_stage}, micro-batch {mem.micro_batch}, "
            f"{spec.train.dtype}, recompute {'on' if spec.train.parallel.recompute else 'off'}:",
            f"  weights {gib(mem.weights)} + LoRA and AdamW state {gib(mem.lora_state)} + activations "
            f"{gib(mem.activations)} + logits {gib(mem.logits)} = {gib(mem.total)} "
            f"(estimate: budget.card_memory; framework workspace comes on top)",
        ]
    )


def render_disk(disk: budget.DiskEstimate) -> str:
    gb = lambda n: f"{n / 1e9:,.1f} GB"  # noqa: E731
    lines = [
        f"Disk on the runs volume: {disk.gib} GiB (the k8s render sizes the tunebox-runs claim with it; "
        f"cluster.disk_gib overrides)"
    ]
    lines += [f"  {name.replace('_', ' '):<28} {gb(size):>12}" for name, size in disk.items.items()]
    lines.append(f"  {'+ headroom':<28} {int(disk.headroom * 100):>11}%")
    return "\n".join(lines)


def render_checkpoint_io(io: budget.CheckpointIO) -> str:
    gb = lambda n: f"{n / 1e9:,.1f} GB"  # noqa: E731
    return "\n".join(
        [
            f"Checkpoint I/O over {io.total_steps:,} steps:",
            f"  resume snapshots: every {io.resume_every_steps:,} steps, {io.resume_snapshots} in the run x "
            f"{gb(io.resume_snapshot_bytes)} = {gb(io.resume_snapshots * io.resume_snapshot_bytes)} written, "
            f"{io.resume_kept} kept (train.save_state_every)",
            f"  LoRA checkpoints: {io.lora_checkpoints} x {io.lora_checkpoint_bytes / 1e6:,.1f} MB",
            f"  merged checkpoints: {io.merged_checkpoints} x {gb(io.merged_checkpoint_bytes)} ({io.merged_dtype})",
            f"  in all {gb(io.written_bytes)} written",
        ]
    )


def render_comparison(cmp: dict) -> str:
    lines = [
        "",
        f"Recipe next to the stage-{cmp['stage']} baseline ({cmp['model']}; ratio over the contest's total):",
        f"  {'':<9} {'LoRA':<22} {'trainable':>12} {'ratio':>12} {'score cost':>11} {'rows':>7} {'seq':>5} "
        f"{'epochs':>6} {'batch':>5} {'cards':>5} {'Ascend time':>12}",
    ]
    for r in cmp["rows"]:
        lora = f"r{r['rank']} on {r['target_modules']}"
        lines.append(
            f"  {r['name']:<9} {lora:<22} {r['trainable']:>12,} {r['ratio']:>12.8f} {r['ratio_cost']:>11.6f} "
            f"{r['rows']:>7,} {r['seq_length']:>5} {r['epochs']:>6g} {r['global_batch']:>5} {r['cards']:>5} "
            f"{budget.format_duration(r['wall_hours'] * 3600):>12}"
        )
    return "\n".join(lines)


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
        est = budget.estimate_time(
            s["model"],
            workload,
            s["model"].lora_params(rank, targets),
            mfu=args.mfu,
            peak_tflops=args.peak_tflops,
            recompute=not args.no_recompute,
            measured_step_s=args.measured_step_s,
        )
        reference_mfu = budget.calibrated_mfu(args.peak_tflops)
        run = s["spec"] or RunSpec(
            model=ModelSection(name=s["model"].name), lora=LoraSection(rank=rank, target_modules=targets)
        )
        disk = budget.estimate_disk(run)
        io = budget.checkpoint_io(run, workload.steps)
        comparison = (
            None
            if s["spec"] is None
            else budget.compare_with_baseline(
                s["model"],
                s["stage"],
                s["baseline"],
                (rank, targets),
                est,
                mfu=args.mfu,
                peak_tflops=args.peak_tflops,
                recompute=not args.no_recompute,
            )
        )
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
        print(render_memory(s["model"], s["spec"], origins, s["model"].lora_params(rank, targets)))
    print(render_disk(disk))
    print(render_checkpoint_io(io))
    if comparison is not None:
        print(render_comparison(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
