"""dryrun: MindSpore's DryRun of the run's MindFormers config before anyone books the cards: one simulated
rank per pipeline stage compiles the recipe's topology, and each rank's peak device memory is printed next
to max_device_memory with a verdict (how, and the sources: tunebox/model/dryrun.py).

    python -m jobs.dryrun --config recipes/stage1-llama3-8b.yaml [--strategy-only] [--logs DIR]

Needs the Ascend image, or any host with CANN and MindSpore's Ascend plugin (a card is optional; MindSpore
refuses DryRun on a CPU device, so it cannot run without CANN), prep's output (the config is rendered from
it: `python -m jobs.train --render-only` runs first) and the base model in the cache (its shape: the
weights are not loaded). --strategy-only sets MindFormers' only_save_strategy: compile, write each
rank's strategy file, stop. --logs DIR reads rank_<R>.log files already written (no run).

Writes runs/<run_id>/dryrun/: mindformers.yaml (what the ranks ran), rank_<R>.log, report.json, output/
(MindFormers' output_dir: strategy/ with --strategy-only). The run's train/ folder is not touched beyond
the --render-only step train runs anyway. Exit 0: every stage fits (or, with --strategy-only, every
strategy file was written); 1: a stage does not fit, or its log has no memory report; 2: bad input.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import yaml

from tunebox.cli import job_command, job_process_env, run_job
from tunebox.config import RunSpec
from tunebox.io import InputError, atomic_write_json, atomic_write_text
from tunebox.model.dryrun import dryrun_config, rank_env, rank_memory, simulated_ranks, verdict
from tunebox.model.mf_config import dump, topology

log = logging.getLogger("tunebox.dryrun")
JOBS_DIR = Path(__file__).resolve().parent
# Each simulated rank runs the rendered YAML through train's own MindFormers entry (tunebox/model/mf.py,
# run_mindformers: REGISTER_PATH for tunebox's registered classes, MindFormerConfig, build_context, Trainer).
RANK_PROGRAM = (
    "import sys; from pathlib import Path; from tunebox.model.mf import run_mindformers; "
    "run_mindformers(Path(sys.argv[1]), resume=False)"
)


def rank_commands(
    spec: RunSpec, yaml_path: Path, output_dir: Path, base_env: dict
) -> list[tuple[int, int, list[str], dict]]:
    """(rank, stage, argv, env) of each simulated rank: the first rank of every pipeline stage.
    LOCAL_DEFAULT_PATH is the config's output_dir: MindFormers' build_context puts the strategy files
    and its logs under that variable's folder before the Trainer reads output_dir (the train job sets
    it the same way, tunebox.model.mf.setup_device)."""
    topo = topology(spec.train)
    commands = []
    for stage, rank in enumerate(simulated_ranks(topo.workers, topo.pipeline_stage)):
        env = rank_env(base_env, rank, stage, topo.workers)
        env["LOCAL_DEFAULT_PATH"] = str(output_dir)
        commands.append((rank, stage, [sys.executable, "-c", RANK_PROGRAM, str(yaml_path)], env))
    return commands


def render_train_yaml(spec: RunSpec, args) -> dict:
    cmd = job_command("train", args.config, args.overrides, "--render-only")
    done = subprocess.run(cmd, env=job_process_env(JOBS_DIR), capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(
            f"rendering the MindFormers config failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}",
            spec.source_path,
        )
    return yaml.safe_load((spec.job_dir("train") / "mindformers.yaml").read_text(encoding="utf-8"))


def main(spec: RunSpec, args) -> None:
    if spec.train.device != "Ascend":
        raise InputError(
            "dryrun simulates Ascend cards: set train.device: Ascend (MindSpore refuses DryRun on a CPU device)",
            spec.source_path,
        )
    out = spec.run_dir / "dryrun"
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(args.logs) if args.logs else out
    yaml_path = out / "mindformers.yaml"
    if args.logs:
        cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) if yaml_path.exists() else {}
    else:
        cfg = dryrun_config(render_train_yaml(spec, args), out / "output", args.strategy_only)
        atomic_write_text(yaml_path, dump(cfg))
    commands = rank_commands(spec, yaml_path, out / "output", job_process_env(JOBS_DIR))
    if not args.logs:
        running = []
        for rank, stage, argv, env in commands:
            handle = open(out / f"rank_{rank}.log", "w", encoding="utf-8")
            log.info(
                "rank %d (stage %d): MS_SIMULATION_LEVEL=1 RANK_SIZE=%s RANK_ID=%d, log %s",
                rank,
                stage,
                env["RANK_SIZE"],
                rank,
                handle.name,
            )
            running.append(
                (rank, subprocess.Popen(argv, env=env, cwd=out, stdout=handle, stderr=subprocess.STDOUT), handle)
            )
        for rank, proc, handle in running:
            code = proc.wait()
            handle.close()
            log.info("rank %d ended with exit code %d", rank, code)
    report: dict = {"strategy_only": bool(args.strategy_only), "ranks": []}
    if args.strategy_only:
        strategy = out / "output" / "strategy"
        missing = [r for r, *_ in commands if not (strategy / f"ckpt_strategy_rank_{r}.ckpt").exists()]
        for rank, stage, *_ in commands:
            print(
                f"rank {rank:>4} (stage {stage}): strategy file "
                f"{'MISSING' if rank in missing else strategy / f'ckpt_strategy_rank_{rank}.ckpt'}"
            )
        report.update(ok=not missing, missing=missing)
        atomic_write_json(out / "report.json", report)
        if missing:
            raise RuntimeError(f"no strategy file for rank(s) {missing}: see {logs}/rank_<R>.log")
        print("VERDICT: the topology compiles; strategy files written.")
        return
    max_memory = ((cfg or {}).get("context") or {}).get("max_device_memory")
    ranks = [
        rank_memory(rank, stage, (logs / f"rank_{rank}.log").read_text(encoding="utf-8", errors="replace"), max_memory)
        for rank, stage, *_ in commands
    ]
    for r in ranks:
        print(r.line())
    ok, sentence = verdict(ranks)
    print(sentence)
    report.update(
        ok=ok,
        verdict=sentence,
        ranks=[
            {
                "rank": r.rank,
                "stage": r.stage,
                "peak_mb": r.peak_mb,
                "limit_mb": r.limit_mb,
                "limit_from": r.limit_from,
                "fits": r.fits,
                **r.memory,
            }
            for r in ranks
        ],
    )
    atomic_write_json(out / "report.json", report)
    if not ok:
        raise RuntimeError(sentence)


def _args(parser) -> None:
    parser.add_argument(
        "--strategy-only",
        action="store_true",
        help="MindFormers' only_save_strategy: compile, write each rank's strategy file, stop",
    )
    parser.add_argument(
        "--logs",
        default="",
        metavar="DIR",
        help="read rank_<R>.log files from DIR (a recorded DryRun) instead of running",
    )


if __name__ == "__main__":
    raise SystemExit(run_job("dryrun", __doc__, main, _args))
