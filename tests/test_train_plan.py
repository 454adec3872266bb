"""train's planning and hashing against values worked out by hand: the step plan, the evenly spaced
checkpoints, the answer capacity (packed rows included), and what a resume must match."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from conftest import TINY_RECIPE, run_job
from jobs.train import setup
from tunebox import layout
from tunebox.config import DataSection, load_spec
from tunebox.data.packing import pack_rows
from tunebox.data.samples import read_mindrecord
from tunebox.io import InputError
from tunebox.model.weights import ModelNotAvailable, base_checkpoint_file, load_tokenizer
from tunebox.training.inputs import prepare
from tunebox.training.outputs import check_resume, resume_point
from tunebox.training.plan import answer_capacity, checkpoint_steps, plan_steps, train_hash

PAD, IGNORE = 0, -100


# ---- the plan ---------------------------------------------------------------------------------


def test_plan_steps_by_hand():
    # 120 rows, batch 4, grad_accum 3: 10 optimizer steps an epoch; 2.5 epochs = 25 steps;
    # warmup 0.1 * 25 = 2.5, rounded half to even = 2; checkpoints 25*i/5 = 5, 10, 15, 20, 25
    spec = load_spec(TINY_RECIPE, ["train.batch_size=4", "train.epochs=2.5", "train.warmup_ratio=0.1"])
    spec.train.grad_accum = 3  # the spec refuses it outside semi_auto_parallel; the plan still counts it
    assert plan_steps(120, spec.train) == {
        "total_steps": 25,
        "batches_per_epoch": 10,
        "warmup_steps": 2,
        "checkpoint_steps": [5, 10, 15, 20, 25],
    }
    # 131 rows: 131 // 12 = 10 (the partial batch is dropped); max_steps wins over epochs
    capped = load_spec(TINY_RECIPE, ["train.batch_size=4", "train.max_steps=7", "train.warmup_ratio=0.3"])
    capped.train.grad_accum = 3
    assert plan_steps(131, capped.train) == {
        "total_steps": 7,
        "batches_per_epoch": 10,
        "warmup_steps": 2,
        "checkpoint_steps": [1, 3, 4, 6, 7],
    }  # 1.4, 2.8, 4.2, 5.6, 7 rounded


def test_plan_steps_refuses_too_few_rows_and_steps():
    spec = load_spec(TINY_RECIPE, ["train.batch_size=4"])
    with pytest.raises(InputError, match="fewer than one batch"):
        plan_steps(3, spec.train)
    with pytest.raises(InputError, match="fewer than train.num_checkpoints=5"):
        plan_steps(19, spec.train)  # 19 // 4 = 4 steps
    assert plan_steps(20, spec.train)["checkpoint_steps"] == [1, 2, 3, 4, 5]


def test_checkpoint_steps_are_evenly_spaced_by_hand():
    assert checkpoint_steps(10, 5) == [2, 4, 6, 8, 10]
    assert checkpoint_steps(12, 5) == [2, 5, 7, 10, 12]  # 2.4, 4.8, 7.2, 9.6, 12
    assert checkpoint_steps(1000, 4) == [250, 500, 750, 1000]
    assert checkpoint_steps(3, 1) == [3]


# ---- the answer capacity ----------------------------------------------------------------------


def row(ids: list[int], labels: list[int], width: int) -> tuple[list[int], list[int]]:
    return ids + [PAD] * (width - len(ids)), labels + [IGNORE] * (width - len(labels))


def test_answer_capacity_by_hand():
    width = 40
    # row 0: 6 tokens, labels on positions 3..5: the inputs at 2..4 predict them -> 3 counted
    # row 1: 13 tokens, labels on 4..12 -> 9 counted; rounded up to 16
    r0 = row([5, 6, 7, 8, 9, 10], [IGNORE] * 3 + [8, 9, 10], width)
    r1 = row(list(range(1, 14)), [IGNORE] * 4 + list(range(5, 14)), width)
    ids, labels = np.array([r0[0], r1[0]]), np.array([r0[1], r1[1]])
    assert answer_capacity(ids, labels, PAD) == 16
    # a labelled position whose input token is padding does not count (row 1's labels on 4..12 only)
    assert answer_capacity(ids[:1], labels[:1], PAD) == 8  # 3 counted -> one block of 8
    # never wider than the row's positions (width - 1)
    full = np.arange(1, 11)[None, :]
    assert answer_capacity(full, full.copy(), PAD) == 9  # 9 counted -> 16, capped at 10 - 1
    # no labels at all still gives one block
    assert answer_capacity(ids, np.full_like(labels, IGNORE), PAD) == 8


def test_answer_capacity_edge_cases_by_hand():
    width = 12
    # row 0: inputs 1, 2 then padding; labels at 3..11, whose inputs (2..10) are padding: nothing counts
    # row 1: 7 tokens, labels at 1..6, one of them token id 0 (a label >= 0 counts): 6 counted
    # row 2: 4 tokens, labels at 1..3: 3 counted. The most in a row is 6 -> 8 (3 + 6 = 9 would be 16)
    r0 = row([1, 2], [IGNORE, IGNORE, IGNORE] + [5] * 9, width)
    r1 = row([4, 5, 3, 6, 7, 8, 9], [IGNORE, 5, 0, 6, 7, 8, 9], width)
    r2 = row([3, 4, 5, 6], [IGNORE, 4, 5, 6], width)
    ids, labels = np.array([r0[0], r1[0], r2[0]]), np.array([r0[1], r1[1], r2[1]])
    assert answer_capacity(ids[:1], labels[:1], PAD) == 8  # 0 counted: still one block
    assert answer_capacity(ids, labels, PAD) == 8
    assert answer_capacity(ids[1:2], labels[1:2], PAD) == 8  # 6 counted, the 0 label among them
    r1b = row([4, 5, 3, 6, 7, 8, 9, 9, 9, 9], [IGNORE, 5, 0, 6, 7, 8, 9, 9, 9, 9], width)
    assert answer_capacity(np.array([r1b[0]]), np.array([r1b[1]]), PAD) == 11  # 9 -> 16, capped at 12 - 1
    empty = np.zeros((0, width), dtype=np.int32)
    assert answer_capacity(empty, empty.copy(), PAD) == 8  # no rows: one block


def test_plan_steps_accepts_exactly_one_batch():
    spec = load_spec(TINY_RECIPE, ["train.batch_size=4", "train.max_steps=5"])
    assert plan_steps(4, spec.train)["batches_per_epoch"] == 1 and plan_steps(4, spec.train)["total_steps"] == 5


def loss_positions(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> list[int]:
    """MindFormers' rule, one position at a time: input token t is not padding and label t+1 is kept."""
    return [
        sum(1 for t in range(ids.shape[1] - 1) if ids[r, t] != pad_id and labels[r, t + 1] != IGNORE)
        for r in range(ids.shape[0])
    ]


def test_packed_rows_fit_the_recorded_answer_capacity(tmp_path, tiny_cache, monkeypatch):
    """With train.packing the answer-only head must hold every loss position of a packed row, which
    carries several samples' answers: the capacity comes from the packed rows, not prep's."""

    common = [f"runs_dir={tmp_path / 'runs'}", "run_id=cap", "data.seq_length=320"]
    run_job("prep", TINY_RECIPE, tiny_cache, tmp_path, *common)
    monkeypatch.setenv("TUNEBOX_CACHE", str(tiny_cache))
    spec = load_spec(TINY_RECIPE, common + ["train.packing=true"])
    prepared = prepare(
        **setup(spec, starting=False)[0], own_checkpoint=spec.resolve(spec.model.checkpoint), write=False
    )
    ids, labels = read_mindrecord(spec.run_dir / layout.PREP_TRAIN_RECORDS)
    pad = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer)).pad_id
    packed_ids, packed_labels, _, _ = pack_rows(ids, labels, pad)
    need = loss_positions(packed_ids, packed_labels, pad)
    assert prepared["rows"] == len(packed_ids)
    assert max(need) > max(loss_positions(ids, labels, pad)), "the packed rows must need more than one sample's"
    short = [r for r, n in enumerate(need) if n > prepared["capacity"]]
    assert not short, (
        f"capacity {prepared['capacity']} < loss positions {[need[r] for r in short][:5]} in rows {short[:5]}"
    )


def test_train_reads_the_base_model_prep_made_and_never_builds_it(tmp_path, monkeypatch):
    """train's base checkpoint (base_checkpoint_file): model.checkpoint as given, else the registry model prep
    left in the cache. A cache without it is an InputError that says to run prep, and nothing is built there
    (building belongs to prep and the weights job; in a cluster, to no training rank).
    Mutants: ensure_model(name) in place of the check (builds the folder); the check left out (returns a
    path that does not exist)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TUNEBOX_CACHE", str(cache))
    own = tmp_path / "mine.ckpt"
    assert base_checkpoint_file("tiny", own) == own
    with pytest.raises(ModelNotAvailable, match="run prep first"):
        base_checkpoint_file("tiny")
    assert not (cache / "models" / "tiny").exists()


# ---- resume: what the saved train_hash must match --------------------------------------------

# a different, valid value for every data.* key: a new key fails the coverage assert below until it is added
DATA_CHANGES = {
    "train_file": "../../shared/data/math/other.jsonl",
    "format": "mcq",
    "heldout_rows": 9,
    "seq_length": 192,
    "seed": 1,
    "on_bad_row": "skip",
    "on_too_long": "truncate",
    "max_rows": 121,
    "system_prompt": "Be brief.",
    "dedupe": True,
    "bad_labels": "drop",
    "sample_rows": 50,
    "workers": 1,
    "template": "alpaca",
    "answer_format": "cot",
    "families": ["add"],
    "drop_families": ["power"],
    "balance": {"add": 10},
    "generate": "--rows 100",
    "heldout_file": "held.jsonl",
    "heldout_file_rows": 5,
}
# other inputs that shape the batches (or what they train)
OTHER_CHANGES = [
    ("train", "epochs", 2.0),
    ("train", "batch_size", 2),
    ("train", "grad_accum", 2),
    ("train", "packing", True),
    ("train", "max_steps", 11),
    ("train", "seed", 1),
    ("train", "shuffle", False),
    ("train", "workers", 2),
    ("model", "name", "smollm2-135m"),
    ("model", "tokenizer", "other-tokenizer"),
    ("lora", "rank", 4),
]


def changed(spec, section: str, key: str, value):
    other = copy.deepcopy(spec)
    assert getattr(getattr(other, section), key) != value, f"{section}.{key} already is {value!r}"
    setattr(getattr(other, section), key, value)
    return other


def settings_hash(spec) -> str:
    return train_hash(spec.model, spec.data, spec.lora, spec.train)


@pytest.mark.parametrize("overrides", [[], ["train.parallel.data_parallel=2", "train.workers=2"]])
def test_train_hash_is_the_one_runs_saved(overrides):
    """The hash of the sections is the one train_state.json holds since it was taken of spec.to_dict():
    a run started before keeps resuming. Mutant: json.dumps's default=str for the nested train.parallel."""
    d = load_spec(TINY_RECIPE, overrides).to_dict()
    keep = {k: d[k] for k in ("model", "data", "lora")}
    keep["train"] = {k: v for k, v in d["train"].items() if k not in ("save_state_every", "master_port")}
    expected = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
    assert settings_hash(load_spec(TINY_RECIPE, overrides)) == expected


def saved_run(tmp_path, spec):
    out = tmp_path / "train"
    out.mkdir()
    (out / "train_state.json").write_text(json.dumps({"train_hash": settings_hash(spec)}))
    return out


def test_every_data_key_is_in_the_resume_check():
    assert set(DATA_CHANGES) == {f.name for f in dataclasses.fields(DataSection)}


@pytest.mark.parametrize(
    "section,key,value",
    [("data", k, v) for k, v in DATA_CHANGES.items()] + OTHER_CHANGES,
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_resume_refused_after_a_change_that_shapes_the_batches(tmp_path, section, key, value):
    spec = load_spec(TINY_RECIPE)
    out = saved_run(tmp_path, spec)
    # same settings, no MindFormers checkpoint yet: a fresh start
    assert check_resume(out, settings_hash(spec)) is False
    with pytest.raises(InputError, match="different training settings"):
        check_resume(out, settings_hash(changed(spec, section, key, value)))


@pytest.mark.parametrize(
    "section,key,value",
    [("train", "save_state_every", 7), ("train", "master_port", 9000), ("eval", "limit", 3), ("runs_dir", None, None)],
)
def test_resume_accepted_when_only_bookkeeping_changes(tmp_path, section, key, value):
    spec = load_spec(TINY_RECIPE)
    out = saved_run(tmp_path, spec)
    other = copy.deepcopy(spec)
    if key is None:
        other.runs_dir = str(tmp_path / "elsewhere")
    else:
        setattr(getattr(other, section), key, value)
    save(out, 10)
    assert check_resume(out, settings_hash(other)) is True


def save(out, iteration: int, tracked: bool = True) -> None:
    """What one save of MindFormers 1.9's checkpoint format leaves (mindformers/checkpoint/checkpoint.py
    save_checkpoint): iteration_%08d/ with the rank's files and common.json, then the tracker."""
    folder = out / "checkpoint" / f"iteration_{iteration:08d}"
    folder.mkdir(parents=True)
    (folder / "tunebox-model-0000000-0000001.safetensors").write_bytes(b"x")
    (folder / "common.json").write_text(json.dumps({"global_step": iteration}))
    if tracked:
        (out / "checkpoint" / "latest_checkpointed_iteration.txt").write_text(str(iteration))


def test_resume_point_is_the_trackers_whole_folder(tmp_path):
    """The tracker names the folder; a folder without common.json, or a tracker naming none, is no resume
    point. Mutants: the tracker not read (newest folder taken), common.json not required, the folder
    named without the 8-digit padding."""
    out = tmp_path / "train"
    assert resume_point(out) is None
    save(out, 5)
    save(out, 10, tracked=False)  # a save a kill cut short: its files, no tracker update
    assert resume_point(out) == out / "checkpoint" / "iteration_00000005"
    (out / "checkpoint" / "iteration_00000005" / "common.json").unlink()
    assert resume_point(out) is None
    (out / "checkpoint" / "latest_checkpointed_iteration.txt").write_text("12\n")
    assert resume_point(out) is None


def test_data_parallel_workers_resume_from_the_legacy_folder(tmp_path):
    """Data-parallel workers keep MindFormers' legacy keys (mf_config.checkpoint_section_loads): their resume
    point is rank 0's CheckpointMonitor folder once its meta.json names a save, ahead of any tracker.
    Mutants (mutmut x_resume_point 4-10): the folder's or the file's name changed."""
    out = tmp_path / "train"
    legacy = out / "checkpoint" / "rank_0"
    legacy.mkdir(parents=True)
    (legacy / "tunebox_rank_0-1_3.ckpt").write_bytes(b"x")
    assert resume_point(out) is None  # no meta.json yet: the first save is not done
    (legacy / "meta.json").write_text(json.dumps({"last_ckpt_file": "tunebox_rank_0-1_3.ckpt"}))
    assert resume_point(out) == legacy


def test_a_resume_keeps_only_the_folder_it_resumes_from(tmp_path):
    """MindFormers rotates (save_max) only its own session's saves: before a resume every other iteration
    folder goes, the cut-short one included. Mutants: no pruning; the resumed folder pruned too."""
    spec = load_spec(TINY_RECIPE)
    out = saved_run(tmp_path, spec)
    for it in (5, 10):
        save(out, it)
    save(out, 15, tracked=False)
    assert check_resume(out, settings_hash(spec)) is True
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "iteration_00000010",
        "latest_checkpointed_iteration.txt",
    ]
