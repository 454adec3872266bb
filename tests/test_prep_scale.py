"""prep at scale: every kind of bad row (stop with file:line, or skip into rejects with a reason),
cleaning (dedupe, bad labels dropped or fixed, stratified sampling) on the real sample, sharded
input from the generator, the same output with 1 or 2 workers, kill -9 leaves nothing that looks
complete, and the fast MindRecord writer writes exactly what MindSpore's own writer writes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jobs.prep
from conftest import MATH_SAMPLE, TINY_RECIPE, job_env, read_jsonl, run_job
from tunebox.cli import run_job as run_job_inprocess
from tunebox.contest import mathgen
from tunebox.data.samples import (
    SAMPLE_SCHEMA,
    MindRecordWriter,
    SampleEncoder,
    ShardedMindRecordWriter,
    encode_example,
    mindrecord_shards,
    parse_math_row,
    read_mindrecord,
)
from tunebox.data.synthetic import generate
from tunebox.data.tokenizer import TextTokenizer
from tunebox.io import InputError, JsonlRow, decode_jsonl_line, iter_lines  # conftest's read_jsonl is the tests' own
from tunebox.io import read_jsonl as io_read_jsonl
from tunebox.model.registry import model_dir

SAMPLE_LINES = MATH_SAMPLE.read_bytes().splitlines(keepends=True)
ONE_MB = 1 << 20

# Each kind of bad row: the bytes, the kind prep counts it as, and what the message says.
BAD_ROWS = {
    "broken_json": (b'{"problem": "1+1", "solution": "2"\n', "broken JSON"),
    "missing_field": (b'{"problem": "1+1"}\n', "missing field 'solution'"),
    "not_a_string": (b'{"problem": 5, "solution": "5"}\n', "must be a string"),
    "empty_field": (b'{"problem": "   ", "solution": "2"}\n', "is empty"),
    "invalid_utf8": (b'{"problem": "\xff\xfe", "solution": "2"}\n', "not valid UTF-8"),
    "line_too_long": (b'{"problem": "' + b"9" * ONE_MB + b'", "solution": "2"}\n', "over the 1,048,576-byte limit"),
    "not_an_object": (b"[1, 2]\n", "expected a JSON object"),
}


def prep_here(tmp_path: Path, cache: Path, monkeypatch, capsys, *overrides: str) -> tuple[int, str, Path]:
    """The prep command line, run in this process (no interpreter start-up per case): exit code,
    stderr, output folder."""
    monkeypatch.setenv("TUNEBOX_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(TINY_RECIPE), "--set", f"runs_dir={tmp_path / 'runs'}", "--set", "data.max_rows=null"]
    for ov in overrides:
        args += ["--set", ov]
    capsys.readouterr()
    code = run_job_inprocess("prep", jobs.prep.__doc__, jobs.prep.main, argv=args)
    return code, capsys.readouterr().err, tmp_path / "runs" / "tiny" / "prep"


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text(encoding="utf-8"))


# ---- bad rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_a_bad_row_stops_prep_naming_file_and_line(tmp_path, tiny_cache, monkeypatch, capsys, kind):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(SAMPLE_LINES[:12]) + BAD_ROWS[kind][0] + b"".join(SAMPLE_LINES[12:30]))
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, f"data.train_file={data}")
    assert code == 2, err
    assert f"{data}:13: " in err and BAD_ROWS[kind][1] in err
    assert not out.exists() and not list(out.parent.glob(".prep.part-*")), "a failed prep leaves no output"


def test_skip_puts_every_kind_of_bad_row_in_rejects_with_its_reason(tmp_path, tiny_cache, monkeypatch, capsys):
    data = tmp_path / "data.jsonl"
    good = SAMPLE_LINES[:40]
    data.write_bytes(b"".join(good[:5]) + b"".join(row for row, _ in BAD_ROWS.values()) + b"\n" + b"".join(good[5:]))
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        f"data.train_file={data}",
        "data.on_bad_row=skip",
        "data.heldout_rows=4",
    )
    assert code == 0, err
    bad = [r for r in read_jsonl(out / "rejects.jsonl") if r["kind"] != "too_long"]
    assert [r["line"] for r in bad] == list(range(6, 6 + len(BAD_ROWS)))  # the blank line after them is no row
    for r, (kind, (_, message)) in zip(bad, BAD_ROWS.items()):
        assert r["kind"] == kind and message in r["reason"] and r["file"] == str(data)
    stats = stats_of(out)
    assert stats["rows_bad"] == len(BAD_ROWS) and stats["rows_read"] == 40 + len(BAD_ROWS)
    assert {k: stats["removed"][k] for k in BAD_ROWS} == dict.fromkeys(BAD_ROWS, 1)
    assert stats["rows_train"] + stats["rows_heldout"] + stats["rows_too_long"] == 40


# ---- cleaning on the real sample --------------------------------------------------------------


def _corrupt_label(line: bytes) -> tuple[bytes, str]:
    row = json.loads(line)
    good = row["solution"]
    row["solution"] = good[:-1] + ("1" if good[-1] != "1" else "2")
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"), good


def test_bad_labels_drop_and_fix_on_the_real_sample(tmp_path, tiny_cache, monkeypatch, capsys):
    # The sample's own wrong labels: two "discounts" to a higher price (lines 10 and 113), labelled
    # by the contest's formula with a negative discount. Add one plainly wrong label at line 5.
    lines = list(SAMPLE_LINES)
    row = json.loads(lines[4])
    assert mathgen.solve(row["problem"]) == row["solution"], "line 5: a computable row with its right label"
    lines[4], right = _corrupt_label(lines[4])
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(lines))
    common = (f"data.train_file={data}", "data.heldout_rows=20", "data.seq_length=256")

    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, *common, "data.bad_labels=drop")
    assert code == 0, err
    dropped = [r for r in read_jsonl(out / "rejects.jsonl") if r["kind"] == "bad_label"]
    assert [r["line"] for r in dropped] == [5, 10, 113]
    assert right in dropped[0]["reason"] and "not a discount" in dropped[1]["reason"]
    stats = stats_of(out)
    assert stats["removed"]["bad_label"] == 3 and stats["cleaning"]["labels"]["dropped"] == 3
    assert stats["rows_kept"] == len(lines) - 3

    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, *common, "data.bad_labels=fix")
    assert code == 0, err
    assert [r["line"] for r in read_jsonl(out / "rejects.jsonl") if r["kind"] == "bad_label"] == [10, 113]
    fixed = read_jsonl(out / "fixed.jsonl")
    assert [(f["line"], f["new"]) for f in fixed] == [(5, right)]
    stats = stats_of(out)
    assert stats["cleaning"]["labels"]["fixed"] == 1 and stats["rows_kept"] == len(lines) - 2
    # the fixed label is what the model is trained on (or evaluated against, if the row is held out)
    tok = TextTokenizer.load(tiny_cache / "models" / "tiny")
    ids, labels = read_mindrecord(out / "train.mindrecord")
    answers = {tok.decode([int(t) for t in row if t != -100], skip_special_tokens=True) for row in labels}
    answers |= {r["reference"] for r in read_jsonl(out / "heldout.jsonl")}
    assert right in answers and json.loads(lines[4])["solution"] not in answers

    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, *common)
    assert code == 0 and "bad_label" not in stats_of(out)["removed"] and stats_of(out)["cleaning"]["labels"] is None


def test_dedupe_keeps_the_first_and_lists_the_rest(tmp_path, tiny_cache, monkeypatch, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(SAMPLE_LINES))
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, f"data.train_file={data}", "data.dedupe=true")
    assert code == 0, err
    assert "duplicate" not in stats_of(out)["removed"], "the real sample has no repeated problem"
    # repeat 30 rows, one of them with its problem padded by spaces (prep strips them)
    repeats = SAMPLE_LINES[100:130]
    padded = json.loads(repeats[0])
    padded["problem"] = "  " + padded["problem"] + " "
    data.write_bytes(
        b"".join(SAMPLE_LINES) + json.dumps(padded, ensure_ascii=False).encode() + b"\n" + b"".join(repeats[1:])
    )
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, f"data.train_file={data}", "data.dedupe=true")
    assert code == 0, err
    dupes = [r for r in read_jsonl(out / "rejects.jsonl") if r["kind"] == "duplicate"]
    assert [r["line"] for r in dupes] == list(range(len(SAMPLE_LINES) + 1, len(SAMPLE_LINES) + 31))
    stats = stats_of(out)
    assert stats["removed"]["duplicate"] == 30 and stats["rows_kept"] == len(SAMPLE_LINES)
    heldout = {(r["line"]) for r in read_jsonl(out / "heldout.jsonl")}
    assert max(heldout) <= len(SAMPLE_LINES)


def test_stratified_sampling_keeps_the_family_mix_and_not_the_heldout(tmp_path, tiny_cache, monkeypatch, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(SAMPLE_LINES))
    base = (f"data.train_file={data}", "data.seq_length=512", "data.heldout_rows=30")
    code, err, full = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, *base)
    full_heldout = (full / "heldout.jsonl").read_bytes()
    runs = {}
    for name in ("a", "b"):
        code, err, out = prep_here(
            tmp_path, tiny_cache, monkeypatch, capsys, *base, "data.sample_rows=200", "data.seed=0"
        )
        assert code == 0, err
        stats = stats_of(out)
        stats.pop("resources")
        runs[name] = (stats, (out / "heldout.jsonl").read_bytes(), (out / "preview.txt").read_text())
    stats, heldout, _ = runs["a"]
    assert heldout == full_heldout, "the held-out rows do not depend on sample_rows"
    assert stats["rows_train"] + stats["rows_too_long"] == 200
    assert stats["rows_not_sampled"] == len(SAMPLE_LINES) - 30 - 200
    families = stats["sampling"]["families"]
    available = sum(f["available"] for f in families.values())
    assert available == len(SAMPLE_LINES) - 30 and sum(f["sampled"] for f in families.values()) == 200
    for name, f in families.items():
        share = 200 * f["available"] / available
        assert f["sampled"] in (math.floor(share), math.ceil(share)), name
    assert runs["a"] == runs["b"], "same seed, same sample"
    # another seed draws other rows (and another held-out set)
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, *base, "data.sample_rows=200", "data.seed=1")
    assert (out / "preview.txt").read_text() != runs["a"][2]


# ---- sharded input, workers, kill -9 ------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:

    out = tmp_path_factory.mktemp("gen") / "data"
    generate(6000, out, seed=3, shard_rows=2000, workers=1, progress=False)  # 660 KB: prep starts its pool
    return out


def test_sharded_input_as_directory_and_glob(tmp_path, tiny_cache, monkeypatch, capsys, generated):
    assert sorted(p.name for p in generated.glob("*.jsonl")) == [
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    ]
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        f"data.train_file={generated}",
        "data.workers=1",
        "data.seq_length=256",
    )
    assert code == 0, err
    stats = stats_of(out)
    assert stats["rows_read"] == 6000 and len(stats["files"]) == 3
    assert {r["file"] for r in read_jsonl(out / "heldout.jsonl")} <= {str(p) for p in generated.glob("*.jsonl")}
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        f"data.train_file={generated}/part-0000[12].jsonl",
        "data.workers=1",
        "data.seq_length=256",
        "data.max_rows=3000",
    )
    assert code == 0, err
    assert stats_of(out)["rows_read"] == 3000 and stats_of(out)["files"][0].endswith("part-00001.jsonl")
    # a bad row in the second shard is named by that shard's path and line
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in generated.glob("*.jsonl"):
        lines = p.read_bytes().splitlines(keepends=True)
        if p.name == "part-00001.jsonl":
            lines[6] = b'{"problem": "x"}\n'
        (broken / p.name).write_bytes(b"".join(lines))
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, f"data.train_file={broken}", "data.workers=1")
    assert code == 2 and f"{broken / 'part-00001.jsonl'}:7: missing field 'solution'" in err
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, f"data.train_file={tmp_path}/none-*.jsonl")
    assert code == 2 and "no file matches" in err


def test_one_or_two_workers_write_the_same_dataset(tmp_path, tiny_cache, generated):
    common = [
        f"data.train_file={generated}",
        "data.seq_length=200",
        "data.dedupe=true",
        "data.bad_labels=fix",
        "data.sample_rows=4500",
        "data.heldout_rows=50",
        "data.max_rows=null",
    ]
    outs = {}
    for workers in (1, 2):
        runs = tmp_path / f"w{workers}"
        run_job("prep", TINY_RECIPE, tiny_cache, tmp_path, *common, f"data.workers={workers}", f"runs_dir={runs}")
        outs[workers] = runs / "tiny" / "prep"
    assert stats_of(outs[2])["resources"]["workers"] == 2 and stats_of(outs[1])["resources"]["workers"] == 1
    one, two = read_mindrecord(outs[1] / "train.mindrecord"), read_mindrecord(outs[2] / "train.mindrecord")
    assert one[0].shape[0] > 4000 and (one[0] == two[0]).all() and (one[1] == two[1]).all()
    for name in ("heldout.jsonl", "rejects.jsonl", "fixed.jsonl", "preview.txt"):
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
    s1, s2 = stats_of(outs[1]), stats_of(outs[2])
    s1.pop("resources"), s2.pop("resources")
    assert s1 == s2 and s1["removed"].get("duplicate", 0) > 0


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_kill9_mid_prep_leaves_the_old_output_or_none_and_a_rerun_succeeds(tmp_path, tiny_cache, generated):
    runs = tmp_path / "runs"
    out = runs / "tiny" / "prep"
    args = [
        f"data.train_file={generated}",
        "data.seq_length=200",
        "data.workers=2",
        "data.max_rows=null",
        f"runs_dir={runs}",
    ]
    cmd = [sys.executable, "-m", "jobs.prep", "--config", str(TINY_RECIPE)] + sum((["--set", a] for a in args), [])

    def start_and_kill(kill_group: bool, *extra: str) -> None:
        proc = subprocess.Popen(
            cmd + sum((["--set", a] for a in extra), []),
            cwd=tmp_path,
            env=job_env(tiny_cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # mid-way: the temporary output exists and the spool (pass 1) is being written
        _wait_for(lambda: any(p.stat().st_size > 0 for p in out.parent.glob(".prep.part-*/.spool.jsonl")), 60, "pass 1")
        workers = _children(proc.pid)
        assert len(workers) >= 2, "prep runs its pool on this input"
        os.killpg(proc.pid, signal.SIGKILL) if kill_group else os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # workers of a job killed alone notice and exit (they would otherwise wait on the pipe forever)
        _wait_for(lambda: not any(_alive(w) for w in workers), 10, "orphaned workers to exit")

    start_and_kill(kill_group=True)
    assert not out.exists(), "a killed first prep leaves no prep/ that looks complete"
    run_job("prep", TINY_RECIPE, tiny_cache, tmp_path, *args)
    assert json.loads((out / "stats.json").read_text())["rows_read"] == 6000
    complete = {p.name: p.read_bytes() for p in out.iterdir()}
    assert not list(out.parent.glob(".prep.part-*")), "the rerun removed the killed run's leftovers"

    # the same spec would be skipped now (its manifest matches): a spec that prep's output does not
    # depend on makes it run again, over a complete output
    start_and_kill(False, "eval.batch_size=4")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == complete, (
        "a killed rerun leaves the previous complete output untouched"
    )


# ---- the pieces ---------------------------------------------------------------------------------


def test_fast_mindrecord_writer_writes_what_filewriter_writes(tmp_path, monkeypatch):
    from mindspore.mindrecord import FileWriter

    rng = np.random.RandomState(0)
    ids = rng.randint(0, 50_000, (700, 33)).astype(np.int32)
    labels = np.where(rng.rand(700, 33) < 0.5, -100, ids).astype(np.int32)
    monkeypatch.chdir(tmp_path)
    fast = MindRecordWriter(Path("samples.mindrecord"))
    fast.write(ids[:300], labels[:300])
    fast.write(ids[300:], labels[300:])
    fast.commit()
    fast_bytes = Path("samples.mindrecord").read_bytes()
    plain = FileWriter("samples.mindrecord", shard_num=1, overwrite=True)
    plain.add_schema(SAMPLE_SCHEMA, "tunebox sft samples")
    plain.write_raw_data([{"input_ids": a, "labels": b} for a, b in zip(ids, labels)])
    plain.commit()
    assert Path("samples.mindrecord").read_bytes() == fast_bytes

    sharded = ShardedMindRecordWriter(tmp_path / "train.mindrecord", rows_per_file=250)
    for start in range(0, 700, 90):
        sharded.write(ids[start : start + 90], labels[start : start + 90])
    files = sharded.commit()
    assert [(p.name, n) for p, n in files] == [
        ("train.mindrecord", 250),
        ("train.mindrecord-00001", 250),
        ("train.mindrecord-00002", 200),
    ]
    assert mindrecord_shards(tmp_path / "train.mindrecord") == [p for p, _ in files]
    got_ids, got_labels = read_mindrecord(tmp_path / "train.mindrecord")
    assert (got_ids == ids).all() and (got_labels == labels).all()


def test_batched_encoder_matches_encode_example_on_the_real_sample(tiny_cache):

    examples = [parse_math_row(JsonlRow(i, json.loads(line)), MATH_SAMPLE) for i, line in enumerate(SAMPLE_LINES, 1)]
    tokenizers = [(TextTokenizer.load(tiny_cache / "models" / "tiny"), None)]
    if (model_dir("smollm2-135m") / "tokenizer.json").exists():  # the real BPE tokenizer, when converted here
        tokenizers.append((TextTokenizer.load(model_dir("smollm2-135m")), "You are a careful math assistant."))
    for tok, system in tokenizers:
        encoder = SampleEncoder(tok, 128, system)
        assert encoder.segmented
        ids, labels, lengths, answer_tokens = encoder.encode([e.prompt for e in examples], [e.answer for e in examples])
        assert encoder.segmented, "no row needed the plain path"
        for i, ex in enumerate(examples):
            a, b, n = encode_example(tok, ex, 128, system)
            assert (ids[i] == a).all() and (labels[i] == b).all() and lengths[i] == n, (i, ex.prompt)
        assert (answer_tokens == (labels != -100).sum(axis=1)).all()


def test_a_huge_line_is_measured_without_being_read_whole(tmp_path):

    path = tmp_path / "big.jsonl"
    path.write_bytes(SAMPLE_LINES[0] + b'{"problem": "' + b"1" * (3 * ONE_MB) + b'"}\n' + SAMPLE_LINES[1])
    items = list(iter_lines(path))
    assert [line for line, _ in items] == [1, 2, 3]
    assert items[1][1] == 3 * ONE_MB + len(b'{"problem": ""}\n')
    err = decode_jsonl_line(items[1][1], path, 2)
    assert f"{path}:2: line is {3 * ONE_MB + 16:,} bytes" in str(err)
    assert decode_jsonl_line(items[2][1], path, 3).value == json.loads(SAMPLE_LINES[1])


def test_read_jsonl_stops_at_a_bad_line_naming_file_and_line(tmp_path):
    """The jobs read each other's JSONL files with io.read_jsonl: every value in order, blank lines skipped, and
    a broken line raises with file:line. Mutant tried: read_jsonl skipping an InputError item (`continue` for
    `raise item`) -> this test fails."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(SAMPLE_LINES[0] + b"\n" + SAMPLE_LINES[1])
    assert io_read_jsonl(path) == [json.loads(SAMPLE_LINES[0]), json.loads(SAMPLE_LINES[1])]
    path.write_bytes(SAMPLE_LINES[0] + b"\n" + b'{"problem": \n' + SAMPLE_LINES[1])
    with pytest.raises(InputError) as err:
        io_read_jsonl(path)
    assert str(err.value).startswith(f"{path}:3: broken JSON")
