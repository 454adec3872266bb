"""invoke chat: a checkpoint's answer to a question, one-shot or one per stdin line, is the answer evaluate
recorded for the same held-out problem (predictions.jsonl, same step, same new-token cap): the recipe's
template, the checkpoint evaluate chose by default, the stop tokens, the decoder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TINY_RECIPE, job_env, read_jsonl


def chat(tiny_run, *args: str, stdin: str = "", runs: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "jobs.chat",
        "--config",
        str(TINY_RECIPE),
        "--set",
        f"runs_dir={runs or tiny_run['runs']}",
        *args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=tiny_run["work"],
        env=job_env(tiny_run["cache"]),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def predictions(run: Path, model: str) -> list[dict]:
    return read_jsonl(run / "evaluate" / model / "predictions.jsonl")


def first_step(run: Path) -> int:
    """The earliest checkpoint: its answers still depend on the prompt (later ones of the tiny run
    may answer every problem alike)."""
    return json.loads((run / "train" / "checkpoints" / "index.json").read_text())["checkpoints"][0]["step"]


def test_one_shot_is_evaluates_answer(tiny_run):
    """Mutant that fails: the bare problem as the prompt (the recipe's template dropped)."""
    run = tiny_run["run_dir"]
    step = first_step(run)
    for row in predictions(run, f"step-{step:06d}")[:3]:
        out = chat(
            tiny_run, "--step", str(step), "--max-new-tokens", str(row["max_new_tokens"]), "--prompt", row["prompt"]
        )
        assert out.stdout == row["answer"] + "\n"


def test_stdin_one_answer_per_line_until_exit(tiny_run):
    """Mutant that fails: only the first stdin line answered."""
    run = tiny_run["run_dir"]
    step = first_step(run)
    rows = [r for r in predictions(run, f"step-{step:06d}") if "\n" not in r["prompt"]][:3]
    assert len(rows) == 3 and len({r["max_new_tokens"] for r in rows}) == 1
    stdin = "".join(r["prompt"] + "\n" for r in rows) + "exit\n" + rows[0]["prompt"] + "\n"
    out = chat(tiny_run, "--step", str(step), "--max-new-tokens", str(rows[0]["max_new_tokens"]), stdin=stdin)
    assert out.stdout == "".join(r["answer"] + "\n" for r in rows)


def test_default_is_evaluates_choice_and_step_0_the_base(tiny_run):
    """Mutant that fails: the last (or first) checkpoint instead of report.json's best_checkpoint."""
    run = tiny_run["run_dir"]
    chosen = json.loads((run / "evaluate" / "report.json").read_text())["best_checkpoint"]["model"]
    for model, args in ((chosen, ()), ("base", ("--step", "0"))):
        row = predictions(run, model)[1]
        out = chat(tiny_run, *args, "--max-new-tokens", str(row["max_new_tokens"]), "--prompt", row["prompt"])
        assert out.stdout == row["answer"] + "\n", model


def test_without_merge_the_lora_is_folded_in_memory(tiny_run, tmp_path):
    """Right after train (no merge folder): the same answer. Mutant that fails: the fold at alpha, not alpha/r."""
    run = tiny_run["run_dir"]
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy, ignore=lambda d, names: ["merge"] if Path(d) == run else [])
    step = first_step(run)
    row = predictions(run, f"step-{step:06d}")[0]
    out = chat(
        tiny_run,
        "--step",
        str(step),
        "--max-new-tokens",
        str(row["max_new_tokens"]),
        "--prompt",
        row["prompt"],
        runs=tmp_path / "runs",
    )
    assert not (copy / "merge").exists() and out.stdout == row["answer"] + "\n"
