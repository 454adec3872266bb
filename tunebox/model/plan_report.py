"""What `python -m jobs.plan` prints: the LoRA budget table, the Ascend time model, per-card memory, disk and
checkpoint I/O, and the recipe next to the contest's baseline, each a text block rendered from
tunebox/model/budget.py's estimates."""

from __future__ import annotations

from typing import Optional

from tunebox.model import budget
from tunebox.model.mf_config import topology
from tunebox.model.registry import lora_targets


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
