"""`invoke dryrun` (issue 22, 4): MindSpore's DryRun cannot run here (MindSpore refuses it on a CPU
device; its Ascend plugin needs CANN's libraries), so these tests check what the job builds (one
simulated rank per pipeline stage, its environment, the config the ranks run) and how it reads a
recorded log.

The recorded log: the four memory lines are MindFormers' documented DryRun output, verbatim
("DryRun Memory Evaluation Tools", https://www.mindspore.cn/mindformers/docs/en/r1.5.0/advanced_development/
performance_optimization.html), which MindSpore prints as one INFO record from
AscendDynamicMemAdapter::DevMemStatistics (mindspore/ccsrc/plugin/device/ascend/hal/device/
ascend_dynamic_mem_adapter.cc, as in mindspore-ai/mindspore_test at 3c4161bbb214dd0a143184040e5009220d997e69:
"\\nDevice MOC memory size: ...M" and so on). The record's prefix follows MindSpore's log format
(level, module, pid, time, [file:line] function); its exact values are made up.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO, rendered
from jobs.dryrun import RANK_PROGRAM, rank_commands
from tunebox.config import load_spec
from tunebox.model.dryrun import dryrun_config, parse_size_mb

STAGE1 = REPO / "recipes" / "stage1-llama3-8b.yaml"
PIPELINE = ["train.parallel.model_parallel=2", "train.parallel.pipeline_stage=2", "train.parallel.micro_batch_num=2"]


def record(used: int, actual: int, ms: int = 59392, device: str = "MOC") -> str:
    return (
        "[WARNING] ME(3051:281473223573536,MainProcess):2026-12-01-10:31:02.118.000 [mindformers/trainer/"
        "base_trainer.py:1212] some earlier warning\n"
        "[INFO] DEVICE(3051,ffff8a1c3120,python):2026-12-01-10:41:07.123.456 [mindspore/ccsrc/plugin/device/"
        "ascend/hal/device/ascend_memory_adapter.cc:171] DeInitialize] Memory statistics:\n"
        f"Device {device} memory size: 62432M\n"
        f"MindSpore Used memory size: {ms}M\n"
        "MindSpore memory base address: 0\n"
        f"Used peak memory usage (without fragments): {used}M\n"
        f"Actual peak memory usage (with fragments): {actual}M\n"
    )


@pytest.mark.parametrize(
    "sets, ranks",
    [
        ([], [0]),
        (PIPELINE, [0, 2]),
        (
            [
                "train.workers=8",
                "train.batch_size=64",
                "train.parallel.model_parallel=2",
                "train.parallel.pipeline_stage=4",
                "train.parallel.micro_batch_num=4",
            ],
            [0, 2, 4, 6],
        ),
    ],
)
def test_one_simulated_rank_per_pipeline_stage_with_mindformers_variables(tmp_path, sets, ranks):
    spec = load_spec(STAGE1, sets)
    base = {"PATH": "/usr/bin", "MS_WORKER_NUM": "8", "MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "x", "KEEP": "1"}
    commands = rank_commands(spec, tmp_path / "mindformers.yaml", tmp_path / "output", base)
    assert [c[0] for c in commands] == ranks
    for stage, (rank, stage_of, argv, env) in enumerate(commands):
        assert stage_of == stage
        assert argv == [sys.executable, "-c", RANK_PROGRAM, str(tmp_path / "mindformers.yaml")]
        assert (env["MS_SIMULATION_LEVEL"], env["RANK_SIZE"], env["RANK_ID"], env["DEVICE_ID"], env["GLOG_v"]) == (
            "1",
            str(spec.train.workers),
            str(rank),
            str(stage),
            "1",
        )
        assert env["KEEP"] == "1" and not {"MS_WORKER_NUM", "MS_ROLE", "MS_SCHED_HOST"} & set(env)
        assert env["LOCAL_DEFAULT_PATH"] == str(tmp_path / "output")  # where build_context puts the strategy
    assert "from tunebox.model.mf import run_mindformers" in RANK_PROGRAM and "resume=False" in RANK_PROGRAM


@pytest.mark.parametrize("strategy_only", [False, True])
def test_the_ranks_run_the_runs_own_config_writing_only_under_dryrun(tmp_path, strategy_only):
    train_dir, out = tmp_path / "run" / "train", tmp_path / "run" / "dryrun" / "output"
    spec, _, cfg = rendered(STAGE1, tmp_path, *PIPELINE, out_dir=train_dir)
    dry = dryrun_config(cfg, out, strategy_only)
    assert str(train_dir) not in yaml.safe_dump(dry)  # nothing lands in the run's train folder
    assert dry["output_dir"] == str(out)
    assert dry["parallel"]["strategy_ckpt_save_file"] == str(out / "strategy" / "ckpt_strategy.ckpt")
    assert dry["only_save_strategy"] is strategy_only
    assert (dry["load_checkpoint"], dry["auto_trans_ckpt"], dry["resume_training"]) == ("", False, False)
    assert [c["total_steps"] for c in dry["callbacks"] if "total_steps" in c] == [2]
    # the topology and the model are the run's own
    for key in ("parallel_config", "model", "runner_config", "recompute_config", "context"):
        assert dry[key] == cfg[key]
    assert cfg["output_dir"] == str(train_dir)  # the rendered config is left as it was


def test_max_device_memory_is_read_as_mindspore_does():
    assert parse_size_mb("58GB") == 59392 and parse_size_mb("54GB") == 55296
    assert parse_size_mb("59392MB") == 59392 and parse_size_mb("") is None and parse_size_mb("lots") is None


def run_on_logs(tmp_path, logs: dict[int, str], max_device_memory=None):
    runs = tmp_path / "runs"
    logdir = tmp_path / "recorded"
    logdir.mkdir()
    for rank, text in logs.items():
        (logdir / f"rank_{rank}.log").write_text(text, encoding="utf-8")
    if max_device_memory:
        dry = runs / "stage1-llama3-8b" / "dryrun"
        dry.mkdir(parents=True)
        (dry / "mindformers.yaml").write_text(yaml.safe_dump({"context": {"max_device_memory": max_device_memory}}))
    cmd = [
        sys.executable,
        "-m",
        "jobs.dryrun",
        "--config",
        str(STAGE1),
        "--set",
        f"runs_dir={runs}",
        "--logs",
        str(logdir),
    ]
    for ov in PIPELINE:
        cmd += ["--set", ov]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_a_recorded_dryrun_that_fits(tmp_path):
    done = run_on_logs(tmp_path, {0: record(48874, 48874), 2: record(41000, 43210)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("rank    0 (stage 0): peak 48,874 MB") and "vs max_device_memory 59,392 MB" in lines[0]
    assert "fits, headroom 10,518 MB" in lines[0]
    assert lines[1].startswith("rank    2 (stage 1): peak 43,210 MB") and "headroom 16,182 MB" in lines[1]
    assert lines[2].startswith("VERDICT: FITS") and "10,518 MB" in lines[2]
    import json

    report = json.loads((tmp_path / "runs" / "stage1-llama3-8b" / "dryrun" / "report.json").read_text())
    assert report["ok"] is True and [r["rank"] for r in report["ranks"]] == [0, 2]
    assert report["ranks"][1] == {
        "rank": 2,
        "stage": 1,
        "peak_mb": 43210,
        "limit_mb": 59392,
        "fits": True,
        "limit_from": "what MindSpore took: its default",
        "device_mb": 62432,
        "mindspore_mb": 59392,
        "used_peak_mb": 41000,
        "actual_peak_mb": 43210,
    }


def test_a_recorded_dryrun_over_the_limit_is_refused_on_the_worse_peak(tmp_path):
    # used (no fragments) within the limit, actual (with fragments) over it: does not fit
    done = run_on_logs(tmp_path, {0: record(48874, 48874), 2: record(55000, 60000)})
    assert done.returncode == 1
    assert "rank    2 (stage 1): peak 60,000 MB" in done.stdout and "DOES NOT FIT, over by 608 MB" in done.stdout
    assert "VERDICT: DOES NOT FIT on rank(s) 2" in done.stdout


def test_the_configs_max_device_memory_is_the_limit(tmp_path):
    done = run_on_logs(tmp_path, {0: record(48874, 48874), 2: record(55000, 56000)}, max_device_memory="54GB")
    assert done.returncode == 1
    assert "vs max_device_memory 55,296 MB (context.max_device_memory)" in done.stdout
    assert "rank    0 (stage 0): peak 48,874 MB" in done.stdout and "DOES NOT FIT, over by 704 MB" in done.stdout


def test_an_older_hbm_log_reads_too_and_a_log_without_report_fails(tmp_path):
    done = run_on_logs(tmp_path, {0: record(30000, 31000, device="HBM"), 2: "[ERROR] compile failed\n"})
    assert done.returncode == 1
    assert "rank    0 (stage 0): peak 31,000 MB" in done.stdout
    assert "rank    2 (stage 1): NO MEMORY REPORT" in done.stdout


def test_dryrun_refuses_a_cpu_spec():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.dryrun",
            "--config",
            str(REPO / "recipes" / "tiny.yaml"),
            "--logs",
            "/nonexistent",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "train.device: Ascend" in done.stderr


def test_strategy_only_checks_each_stages_strategy_file(tmp_path):
    runs = tmp_path / "runs"
    strategy = runs / "stage1-llama3-8b" / "dryrun" / "output" / "strategy"
    strategy.mkdir(parents=True)
    (strategy / "ckpt_strategy_rank_0.ckpt").write_bytes(b"s")
    cmd = [
        sys.executable,
        "-m",
        "jobs.dryrun",
        "--config",
        str(STAGE1),
        "--set",
        f"runs_dir={runs}",
        "--strategy-only",
        "--logs",
        str(tmp_path),
    ]
    for ov in PIPELINE:
        cmd += ["--set", ov]
    missing = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "rank    2 (stage 1): strategy file MISSING" in missing.stdout
    (strategy / "ckpt_strategy_rank_2.ckpt").write_bytes(b"s")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "VERDICT: the topology compiles" in done.stdout
