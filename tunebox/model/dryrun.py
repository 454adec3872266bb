"""MindSpore's DryRun of a run's MindFormers config: before booking cards, compile the run's topology
on a host with CANN (a card is optional) and read each simulated rank's peak device memory.

How MindFormers documents it ("DryRun Memory Evaluation Tools", MindSpore Transformers docs,
https://www.mindspore.cn/mindformers/docs/en/r1.5.0/advanced_development/performance_optimization.html):
`MS_SIMULATION_LEVEL=1`, `RANK_SIZE` = the cards simulated, and one process per pipeline stage with
`RANK_ID` = stage x (RANK_SIZE / stages) and `DEVICE_ID` = stage (the ranks of one stage use the
same memory), each running the finetune YAML; the end of each log then reads

    Device MOC memory size: 62432M
    MindSpore Used memory size: 59392M
    Used peak memory usage (without fragments): 48874M
    Actual peak memory usage (with fragments): 48874M

(MindSpore's AscendDynamicMemAdapter::DevMemStatistics, one MS_LOG(INFO) record, hence GLOG_v=1 as
MindSpore's DryRun tutorial says: https://www.mindspore.cn/tutorials/en/r2.9.0/debug/dryrun.html;
older adapters print "Device HBM memory size"). The limit a rank must fit in is the config's
`context.max_device_memory` when it sets one, else what MindSpore took for itself ("MindSpore Used
memory size", its default). `only_save_strategy: True` compiles, writes each rank's strategy file
and stops (MindFormers' transform_and_load_checkpoint).

Pure functions: the caller (jobs/dryrun.py) runs the processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunebox.model.mf_config import legacy_checkpoint_config

# The cluster variables of a real run: a simulated rank must not try to join a cluster.
CLUSTER_VARIABLES = (
    "MS_WORKER_NUM",
    "MS_SCHED_HOST",
    "MS_SCHED_PORT",
    "MS_ROLE",
    "MS_NODE_RANK",
    "MS_LOCAL_WORKER",
    "MS_SERVER_NUM",
    "RANK_TABLE_FILE",
    "MINDSPORE_HCCL_CONFIG_PATH",
)
DRYRUN_STEPS = 2  # MindFormers' docs: "just run through a few steps"

_MEMORY = {
    "device_mb": re.compile(r"Device (?:MOC|HBM) memory size: (\d+)M"),
    "mindspore_mb": re.compile(r"MindSpore Used memory size: (\d+)M"),
    "used_peak_mb": re.compile(r"Used peak memory usage \(without fragments\): (\d+)M"),
    "actual_peak_mb": re.compile(r"Actual peak memory usage \(with fragments\): (\d+)M"),
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(GB|MB|G|M)\s*$", re.IGNORECASE)


def simulated_ranks(workers: int, pipeline_stage: int) -> list[int]:
    """One rank per pipeline stage, the first of each: stage s is ranks s*W/P .. (s+1)*W/P - 1."""
    gap = workers // pipeline_stage
    return [stage * gap for stage in range(pipeline_stage)]


def rank_env(base: dict, rank: int, stage: int, workers: int) -> dict:
    """The environment of one simulated rank, as MindFormers' dry_run.sh sets it."""
    env = {k: v for k, v in base.items() if k not in CLUSTER_VARIABLES}
    env.update(
        {
            "MS_SIMULATION_LEVEL": "1",
            "RANK_SIZE": str(workers),
            "RANK_ID": str(rank),
            "DEVICE_ID": str(stage),
            "GLOG_v": "1",
        }
    )
    return env


def _moved(value, old: str, new: str):
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    return value


def dryrun_config(train_config: dict, out_dir: Path, strategy_only: bool) -> dict:
    """The run's finetune config for the DryRun: every output under `out_dir` (the run's train folder
    stays untouched), no base checkpoint (weights are initialised instead: same memory, and nothing
    to read or slice), a few steps, and with `strategy_only` MindFormers' only_save_strategy."""
    cfg = legacy_checkpoint_config(_moved(train_config, str(train_config["output_dir"]), str(out_dir)))
    cfg.update({"load_checkpoint": "", "only_save_strategy": bool(strategy_only)})
    for callback in cfg.get("callbacks", []):
        if "total_steps" in callback:  # TuneboxLossLog stops the run there
            callback["total_steps"] = DRYRUN_STEPS
    return cfg


def parse_size_mb(text) -> Optional[int]:
    """A max_device_memory value ("58GB", "59392MB") in MB (MindSpore's 1 GB = 1024 MB)."""
    m = _SIZE.match(str(text or ""))
    if not m:
        return None
    number, unit = float(m.group(1)), m.group(2).upper()
    return int(round(number * 1024)) if unit.startswith("G") else int(round(number))


def parse_memory(log_text: str) -> dict[str, int]:
    """The last memory report in a rank's log: device, MindSpore's, used and actual peak, in MB."""
    found = {}
    for key, pattern in _MEMORY.items():
        values = pattern.findall(log_text)
        if values:
            found[key] = int(values[-1])
    return found


@dataclass
class RankMemory:
    rank: int
    stage: int
    peak_mb: Optional[int]  # the larger of the used and actual peaks
    limit_mb: Optional[int]
    limit_from: str
    memory: dict

    @property
    def fits(self) -> bool:
        return self.peak_mb is not None and self.limit_mb is not None and self.peak_mb <= self.limit_mb

    def line(self) -> str:
        head = f"rank {self.rank:>4} (stage {self.stage})"
        if self.peak_mb is None:
            return f"{head}: NO MEMORY REPORT in its log (compile failed, or GLOG_v was not 1)"
        peaks = (
            f"peak {self.peak_mb:,} MB (used {self.memory.get('used_peak_mb', '?'):,} / actual "
            f"{self.memory.get('actual_peak_mb', '?'):,})"
        )
        if self.limit_mb is None:
            return f"{head}: {peaks}; no limit known"
        margin = self.limit_mb - self.peak_mb
        word = "fits" if margin >= 0 else "DOES NOT FIT"
        return (
            f"{head}: {peaks} vs max_device_memory {self.limit_mb:,} MB ({self.limit_from}): {word}, "
            f"{'headroom' if margin >= 0 else 'over by'} {abs(margin):,} MB"
        )


def rank_memory(rank: int, stage: int, log_text: str, max_device_memory=None) -> RankMemory:
    memory = parse_memory(log_text)
    peaks = [memory[k] for k in ("used_peak_mb", "actual_peak_mb") if k in memory]
    limit, source = parse_size_mb(max_device_memory), "context.max_device_memory"
    if limit is None:
        limit, source = memory.get("mindspore_mb"), "what MindSpore took: its default"
    return RankMemory(rank, stage, max(peaks) if peaks else None, limit, source, memory)


def verdict(ranks: list[RankMemory]) -> tuple[bool, str]:
    """(every simulated rank fits, the sentence to print)."""
    bad = [r for r in ranks if not r.fits]
    if not ranks:
        return False, "VERDICT: nothing was simulated"
    if not bad:
        return True, (
            f"VERDICT: FITS. Every pipeline stage's peak is within max_device_memory "
            f"(smallest headroom {min(r.limit_mb - r.peak_mb for r in ranks):,} MB): book the cards."
        )
    return False, (
        f"VERDICT: DOES NOT FIT on rank(s) {', '.join(str(r.rank) for r in bad)}: lower the per-card "
        f"batch or seq_length, turn on recompute, or split the model further, then run the DryRun again."
    )
