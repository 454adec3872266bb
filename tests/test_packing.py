"""Sample packing: the bin packer keeps every sample whole and once, and a packed batch trains
exactly as the same samples unpacked (same loss, same gradients) under the segment mask."""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_broadcast_patch import loss_and_grads, tiny_lora_net

from conftest import TINY_RECIPE, read_jsonl, run_job
from tunebox.data.packing import first_fit_decreasing, pack_rows, sample_lengths
from tunebox.model.registry import get_model_shape

PAD, IGNORE = 0, -100


def make_samples(rng, count: int, width: int, low: int, high: int, vocab: int, prompt: int = 3):
    ids = np.full((count, width), PAD, np.int32)
    labels = np.full((count, width), IGNORE, np.int32)
    lengths = rng.integers(low, high + 1, size=count)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, vocab, size=n)
        labels[i, prompt:n] = ids[i, prompt:n]
    return ids, labels, lengths


def test_every_sample_lands_whole_and_once():
    rng = np.random.default_rng(3)
    ids, labels, lengths = make_samples(rng, 500, 65, 4, 65, 300)
    assert sample_lengths(ids, labels, PAD).tolist() == lengths.tolist()
    pids, plabels, segs, stats = pack_rows(ids, labels, PAD)
    assert pids.shape[1] == 65 and len(pids) == stats["rows"] < 500
    assert stats["fill_after"] > stats["fill_before"]
    seen = []
    for row in range(len(pids)):
        for k in range(1, segs[row].max() + 1):
            where = np.flatnonzero(segs[row] == k)
            assert len(where) and (np.diff(where) == 1).all(), "a sample is split"
            piece = pids[row, where]
            match = [i for i in range(500) if lengths[i] == len(piece) and (ids[i, : len(piece)] == piece).all()]
            assert match, "a packed piece is no input sample"
            np.testing.assert_array_equal(plabels[row, where], labels[match[0], : len(piece)])
            seen.append(match[0])
        assert (pids[row, segs[row] == 0] == PAD).all() and (plabels[row, segs[row] == 0] == IGNORE).all()
    assert sorted(seen) == list(range(500))
    again = pack_rows(ids, labels, PAD)
    np.testing.assert_array_equal(again[0], pids)  # deterministic


def test_best_fit_is_tight_and_rejects_overlong():
    bins = first_fit_decreasing(np.array([6, 4, 5, 5, 3, 7]), 10)  # 6+4, 5+5, 7+3
    assert sorted(map(sorted, bins)) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="longer than the row width"):
        first_fit_decreasing(np.array([11]), 10)


@pytest.mark.parametrize("capacity", [0, 32])
def test_packed_batch_trains_like_the_unpacked_samples(mindformers_env, capacity):
    """MindFormers' LlamaForCausalLM on the samples one per row, against the registered
    TuneboxLlamaForCausalLM (tunebox_packing, segment ids as the third input) on the packed rows, with
    the full LM head and with the answer-only head: same loss, same gradients."""

    ms = mindformers_env[0]
    shape = get_model_shape("tiny")
    rng = np.random.default_rng(5)
    width = 33
    ids, labels, _ = make_samples(rng, 9, width, 6, 14, shape.vocab_size)
    pids, plabels, segs, stats = pack_rows(ids, labels, PAD)
    assert stats["rows"] <= 4 and stats["max_samples_per_row"] >= 2

    unpacked = tiny_lora_net(ms, shape, width - 1, len(ids), seed=1)
    loss_u, grads_u = loss_and_grads(ms, unpacked, unpacked.trainable_params(), ids, labels)
    packed = tiny_lora_net(
        ms, shape, width - 1, len(pids), seed=1, tunebox_packing=True, tunebox_answer_capacity=capacity
    )
    loss_p, grads_p = loss_and_grads(ms, packed, packed.trainable_params(), pids, plabels, segs)
    assert np.isfinite(loss_u) and loss_u > 1.0
    assert abs(loss_p - loss_u) < 1e-5 * loss_u, (loss_p, loss_u)
    assert grads_u.keys() == grads_p.keys() and len(grads_u) == 2 * 2 * shape.num_layers
    for name in grads_u:
        scale = np.abs(grads_u[name]).max()
        assert scale > 0 and np.abs(grads_p[name] - grads_u[name]).max() < 1e-4 * scale, name
    # the negative control: the same packed rows under one causal mask (every segment id 1) see each other
    leaky = tiny_lora_net(
        ms, shape, width - 1, len(pids), seed=1, tunebox_packing=True, tunebox_answer_capacity=capacity
    )
    loss_leak, _ = loss_and_grads(ms, leaky, leaky.trainable_params(), pids, plabels, (segs > 0).astype(np.int32))
    assert abs(loss_leak - loss_u) > 1e-4 * loss_u


def test_train_job_packs_in_graph_mode(tmp_path, tiny_cache):
    """The train job with train.packing on (GRAPH mode, MindFormers' Trainer, the segment ids a third
    MindRecord column): fewer rows than samples, fuller rows, a finite loss, and the rendered YAML
    feeds the third column to the registered model."""
    import json

    import yaml

    common = [f"runs_dir={tmp_path / 'runs'}", "run_id=packed", "data.seq_length=320", "train.max_steps=6"]
    run_job("prep", TINY_RECIPE, tiny_cache, tmp_path, *common)
    run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *common, "train.packing=true")
    out = tmp_path / "runs" / "packed" / "train"
    packing = json.loads((out / "summary.json").read_text())["packing"]
    assert packing["rows"] < packing["samples"] and packing["fill_after"] > 2 * packing["fill_before"]
    steps = read_jsonl(out / "loss.jsonl")
    assert [s["step"] for s in steps] == list(range(1, 7)) and all(np.isfinite(s["loss"]) for s in steps)
    cfg = yaml.safe_load((out / "mindformers.yaml").read_text())
    assert cfg["train_dataset"]["input_columns"] == ["input_ids", "labels", "segment_ids"]
    assert cfg["model"]["model_config"]["tunebox_packing"] is True
    assert cfg["model"]["arch"]["type"] == "TuneboxLlamaForCausalLM"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["packing"]["rows"] == packing["rows"]
