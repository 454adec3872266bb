"""The job graph end to end on the tiny model: prep input checks, the 5 checkpoints, kill -9 and
resume, merge equality, the evaluation report."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    MATH_SAMPLE,
    REPO,
    TINY_RECIPE,
    job_env,
    kill_session,
    planned_checkpoint_steps,
    read_jsonl,
    run_job,
    start_until_lines,
    strict_by_hand,
)
from tunebox import layout
from tunebox.config import load_spec
from tunebox.data.policy import split_heldout
from tunebox.data.samples import read_mindrecord
from tunebox.model.lora import merge_lora_into_base
from tunebox.model.registry import get_model_shape
from tunebox.training.outputs import resume_point
from tunebox.training.plan import checkpoint_steps, plan_steps

# ---- prep: bad input is named by file and line, or skipped into rejects ------------------------

BAD_ROWS = {
    "broken JSON": b'{"problem": "1+1", "solution": "2"\n',
    "missing field 'solution'": b'{"problem": "1+1"}\n',
    "must be a string": b'{"problem": 5, "solution": "5"}\n',
    "is empty": b'{"problem": "   ", "solution": "2"}\n',
    "not valid UTF-8": b'{"problem": "\xff\xfe", "solution": "2"}\n',
    "expected a JSON object": b"[1, 2]\n",
}


def _write_data(path: Path, bad: bytes, good_rows: int = 40) -> int:
    good = MATH_SAMPLE.read_bytes().splitlines(keepends=True)[:good_rows]
    bad_line = 11
    path.write_bytes(b"".join(good[: bad_line - 1]) + bad + b"".join(good[bad_line - 1 :]))
    return bad_line


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_prep_bad_row_names_file_and_line(tmp_path, tiny_cache, reason):
    data = tmp_path / "data.jsonl"
    line = _write_data(data, BAD_ROWS[reason])
    proc = run_job(
        "prep",
        TINY_RECIPE,
        tiny_cache,
        tmp_path,
        f"data.train_file={data}",
        "data.max_rows=null",
        "data.heldout_rows=4",
        f"runs_dir={tmp_path / 'runs'}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{data}:{line}:" in proc.stderr and reason in proc.stderr
    assert not (tmp_path / "runs" / "tiny" / "prep").exists(), "a failed prep must not leave an output dir"


def test_prep_skip_writes_rejects_with_reasons(tmp_path, tiny_cache):
    data = tmp_path / "data.jsonl"
    good = MATH_SAMPLE.read_bytes().splitlines(keepends=True)[:40]
    data.write_bytes(b"".join(good[:5]) + b"".join(BAD_ROWS.values()) + b"".join(good[5:]))
    run_job(
        "prep",
        TINY_RECIPE,
        tiny_cache,
        tmp_path,
        f"data.train_file={data}",
        "data.max_rows=null",
        "data.heldout_rows=4",
        "data.on_bad_row=skip",
        f"runs_dir={tmp_path / 'runs'}",
    )
    out = tmp_path / "runs" / "tiny" / "prep"
    rejects = read_jsonl(out / "rejects.jsonl")
    bad = [r for r in rejects if not r["reason"].startswith("too long")]
    assert [r["line"] for r in bad] == list(range(6, 6 + len(BAD_ROWS)))
    for r, reason in zip(bad, BAD_ROWS):
        assert reason in r["reason"]
    stats = json.loads((out / "stats.json").read_text())
    # nothing dropped silently: every good row is trained, held out, or rejected as too long
    assert stats["rows_train"] + stats["rows_heldout"] + stats["rows_too_long"] == 40
    assert stats["rows_bad"] == len(BAD_ROWS)


def test_prep_split_is_deterministic_and_answer_only_loss(tiny_run):
    prep = tiny_run["run_dir"] / "prep"
    heldout = read_jsonl(prep / "heldout.jsonl")
    spec = load_spec(TINY_RECIPE)
    assert len(heldout) == spec.data.heldout_rows
    a, b = split_heldout(100, 8, 0), split_heldout(100, 8, 0)
    assert (a == b).all() and a.sum() == 8 and not (a == split_heldout(100, 8, 1)).all()
    ids, labels = read_mindrecord(prep / "train.mindrecord")
    assert ids.shape[1] == spec.data.seq_length + 1 and ids.dtype == np.int32
    # the loss covers the answer only: labels equal ids there, -100 on the prompt and padding
    sup = labels != -100
    assert sup.any(axis=1).all()
    assert (labels[sup] == ids[sup]).all()
    first = int(np.argmax(sup[0]))
    assert first > 10 and not sup[0, :first].any()
    preview = (prep / "preview.txt").read_text(encoding="utf-8")
    assert "<|im_start|>assistant" in preview and "<|im_end|>" in preview


# ---- train: schedule, checkpoints, resume ---------------------------------------------------


def test_schedule_pure_functions():
    assert checkpoint_steps(27, 5) == [5, 11, 16, 22, 27]
    assert checkpoint_steps(100, 5) == [20, 40, 60, 80, 100]
    assert checkpoint_steps(7, 5) == [1, 3, 4, 6, 7]
    spec = load_spec(TINY_RECIPE, ["train.batch_size=4", "train.epochs=2"])
    plan = plan_steps(109, spec.train)  # MindFormers drops the last partial batch of each epoch: 109 // 4 = 27
    assert plan["batches_per_epoch"] == 27 and plan["total_steps"] == 54
    assert plan["checkpoint_steps"] == [11, 22, 32, 43, 54]
    assert plan_steps(109, load_spec(TINY_RECIPE, ["train.max_steps=13"]).train)["total_steps"] == 13
    with pytest.raises(Exception, match="fewer than one batch"):
        plan_steps(3, spec.train)


def test_train_writes_five_evenly_spaced_checkpoints(tiny_run):
    train = tiny_run["run_dir"] / "train"
    index = json.loads((train / "checkpoints" / "index.json").read_text())
    steps = [c["step"] for c in index["checkpoints"]]
    assert steps == index["planned"] == checkpoint_steps(index["total_steps"], 5)
    for c in index["checkpoints"]:  # MindFormers' layout: checkpoint_trainable/rank_0/...
        assert c["file"].startswith("checkpoint_trainable/rank_0/") and (train / c["file"]).stat().st_size > 0
    log = read_jsonl(train / "loss.jsonl")
    assert [r["step"] for r in log] == list(range(1, index["total_steps"] + 1))
    assert all(np.isfinite(r["loss"]) for r in log)
    assert (train / "loss.csv").read_text().startswith("step,epoch,loss")
    summary = json.loads((train / "summary.json").read_text())
    assert summary["trainable_params"] == get_model_shape("tiny").lora_params(8, "wq|wv")
    manifest = json.loads((train / layout.MANIFEST).read_text())
    assert manifest["job"] == "train" and manifest["spec_hash"]
    # the session's tiny run also serves export and chat tests, which add their own lines after these
    record = read_jsonl(tiny_run["run_dir"] / layout.RECORD)[:4]
    assert [r["job"] for r in record] == ["prep", "train", "merge", "evaluate"]
    # every job's line says when it began and ended, in order (run_job marks the start)
    times = [(dt.datetime.fromisoformat(r["started"]), dt.datetime.fromisoformat(r["finished"])) for r in record]
    assert all(start <= end for start, end in times)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(times, times[1:]))


def _lora_arrays(path: Path) -> dict:
    code = (
        "import sys, json, numpy as np, mindspore as ms; d = ms.load_checkpoint(sys.argv[1]);"
        "np.savez(sys.argv[2], **{k: v.asnumpy() for k, v in d.items()})"
    )
    out = path.with_suffix(".npz")
    subprocess.run([sys.executable, "-c", code, str(path), str(out)], check=True, capture_output=True)
    return dict(np.load(out))


def test_kill9_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_cache, tiny_run):
    """Kill the train job with SIGKILL mid-run (past an epoch boundary: 27 steps an epoch), start it
    again: MindFormers' resume_training restores weights, optimizer state, step and dataset position,
    so no step is repeated or skipped and (dropout off) every loss and the final LoRA weights equal a
    run that was never interrupted. A changed data order or a lost optimizer state would show in the
    losses after the resume point."""
    prep = tiny_run["run_dir"] / "prep"
    common = ["train.max_steps=120", "lora.dropout=0.0", "train.save_state_every=3"]

    def setup(run_id):
        runs = tmp_path / "runs"
        (runs / run_id).mkdir(parents=True)
        os.symlink(prep, runs / run_id / "prep")
        return [f"runs_dir={runs}", f"run_id={run_id}"] + common

    ref_args = setup("ref")
    run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *ref_args)

    args = setup("killed")
    cmd = [sys.executable, "-m", "jobs.train", "--config", str(TINY_RECIPE)] + sum((["--set", a] for a in args), [])
    log = tmp_path / "runs" / "killed" / "train" / "loss.jsonl"
    proc = start_until_lines(cmd, tmp_path, job_env(tiny_cache), log, 40, timeout=300, poll=0.02)
    assert proc.poll() is None, "train finished before it could be killed; raise max_steps"
    kill_session(proc)
    killed_at = len(read_jsonl(log))
    assert killed_at < 120
    point = resume_point(tmp_path / "runs" / "killed" / "train")  # MindFormers 1.9's checkpoint format
    assert point is not None and sorted(p.suffix for p in point.iterdir()) == [".json", ".safetensors", ".safetensors"]

    run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *args)
    ref = read_jsonl(tmp_path / "runs" / "ref" / "train" / "loss.jsonl")
    got = read_jsonl(log)
    assert [r["step"] for r in got] == list(range(1, 121)), "a step was repeated or skipped"
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-4, atol=1e-5)
    summary = json.loads((tmp_path / "runs" / "killed" / "train" / "summary.json").read_text())
    resumed = summary["resumed_from_step"]
    assert 0 < resumed <= killed_at and resumed % 3 == 0, (resumed, killed_at)  # a save_state_every multiple

    def index(run):
        return json.loads((tmp_path / "runs" / run / "train" / "checkpoints" / "index.json").read_text())

    def last(run):
        return tmp_path / "runs" / run / "train" / index(run)["checkpoints"][-1]["file"]

    a = _lora_arrays(last("ref"))
    b = _lora_arrays(last("killed"))
    assert a.keys() == b.keys() and len(a) == 2 * 2 * 2
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_resume_refuses_changed_settings(tmp_path, tiny_cache, tiny_run):
    runs = tmp_path / "runs"
    (runs / "tiny").mkdir(parents=True)
    os.symlink(tiny_run["run_dir"] / "prep", runs / "tiny" / "prep")
    run_job("train", TINY_RECIPE, tiny_cache, tmp_path, f"runs_dir={runs}", "train.max_steps=6")
    proc = run_job(
        "train", TINY_RECIPE, tiny_cache, tmp_path, f"runs_dir={runs}", "train.max_steps=6", "lora.rank=4", check=False
    )
    assert proc.returncode == 2 and "different training settings" in proc.stderr


# ---- merge ----------------------------------------------------------------------------------

MERGE_CHECK = r"""
import sys, json, numpy as np, mindspore as ms
from tunebox.model import mf
from tunebox.model.registry import get_model_shape
ms.set_context(mode=ms.PYNATIVE_MODE); ms.set_device("CPU")
base_ckpt, lora_ckpt, merged_ckpt = sys.argv[1:4]
spec = get_model_shape("tiny")
ids = ms.Tensor(np.random.RandomState(0).randint(5, 300, (2, 24)).astype(np.int32))
lora_net = mf.add_lora(mf.build_llama(spec, seq_length=24, batch_size=2, checkpoint=base_ckpt), 8, 16, 0.0, "wq|wv")
mf.load_lora(lora_net, lora_ckpt)
lora_net.set_train(False)
plain = mf.build_llama(spec, seq_length=24, batch_size=2, checkpoint=merged_ckpt)
plain.set_train(False)
base = mf.build_llama(spec, seq_length=24, batch_size=2, checkpoint=base_ckpt)
base.set_train(False)
a, b, c = (n(ids)[0].asnumpy() for n in (lora_net, plain, base))
print(json.dumps({"lora_vs_merged": float(np.abs(a - b).max()), "lora_vs_base": float(np.abs(a - c).max())}))
"""


def test_merged_logits_equal_lora_logits(tiny_run, tmp_path):
    run = tiny_run["run_dir"]
    index = json.loads((run / "merge" / "index.json").read_text())
    last = index["checkpoints"][-1]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            MERGE_CHECK,
            index["base_checkpoint"],
            str(run / "train" / last["lora_file"]),
            str(run / "merge" / last["file"]),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=job_env(tiny_run["cache"]),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert diffs["lora_vs_merged"] < 1e-4
    assert diffs["lora_vs_base"] > 1e-3, "LoRA training changed nothing: the equality above would be vacuous"


def test_merge_math_on_arrays():
    rng = np.random.RandomState(0)
    w = rng.randn(6, 5).astype(np.float32)
    a, b = rng.randn(2, 5).astype(np.float32), rng.randn(6, 2).astype(np.float32)
    out = merge_lora_into_base(
        {"x.wq.weight": w, "n.weight": np.ones(3, np.float32)},
        {"x.wq.mindpet_delta_lora_a": a, "x.wq.mindpet_delta_lora_b": b},
        alpha=16,
        rank=2,
        scale=0.5,
    )
    np.testing.assert_allclose(out["x.wq.weight"], w + 0.5 * 8 * b @ a, rtol=1e-6)
    assert (out["n.weight"] == 1).all()
    with pytest.raises(ValueError, match="does not match"):
        merge_lora_into_base(
            {"x.wq.weight": w[:3]}, {"x.wq.mindpet_delta_lora_a": a, "x.wq.mindpet_delta_lora_b": b}, 16, 2
        )


def test_merge_is_resumable(tiny_run):
    run = tiny_run["run_dir"]
    before = json.loads((run / "merge" / "index.json").read_text())
    assert len(before["checkpoints"]) == 5
    proc = run_job("merge", TINY_RECIPE, tiny_run["cache"], tiny_run["work"], f"runs_dir={tiny_run['runs']}")
    assert "merged step" not in proc.stderr  # all five were already there
    assert json.loads((run / "merge" / "index.json").read_text())["checkpoints"] == before["checkpoints"]


# ---- evaluate -------------------------------------------------------------------------------


def test_evaluate_report_has_base_and_every_checkpoint(tiny_run):
    ev = tiny_run["run_dir"] / "evaluate"
    report = json.loads((ev / "report.json").read_text())
    assert report["base"]["model"] == "base"
    planned = planned_checkpoint_steps(tiny_run["run_dir"])
    assert [c["step"] for c in report["checkpoints"]] == planned
    n = load_spec(TINY_RECIPE).data.heldout_rows
    for r in [report["base"], *report["checkpoints"]]:
        preds = read_jsonl(ev / r["model"] / "predictions.jsonl")
        assert len(preds) == n == r["n"]
        assert r["accuracy_strict"] == sum(strict_by_hand(p["answer"], p["reference"]) for p in preds) / n
    md = (ev / "report.md").read_text()
    assert "| base |" in md and all(f"\n| step-{s:06d} " in md for s in planned)


def test_job_help_and_bad_spec(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jobs.train", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "lora.rank" in out.stdout and "Exit codes" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_id: x\ntrain:\n  batch_size: 8\n  lr: fast\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.prep", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=job_env(tmp_path),
    )
    assert proc.returncode == 2 and f"{bad}:4:" in proc.stderr and "train.lr" in proc.stderr
    bad.write_text("run_id: x\nlora:\n  rnak: 8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.prep", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=job_env(tmp_path),
    )
    assert proc.returncode == 2 and f"{bad}:3:" in proc.stderr and "rank" in proc.stderr
