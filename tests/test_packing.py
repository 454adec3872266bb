"""Sample packing: the bin packer keeps every sample whole and once, and a packed batch trains
exactly as the same samples unpacked (same loss, same gradients) under the segment mask."""
from __future__ import annotations

import numpy as np
import pytest

from jobs.core.packing import first_fit_decreasing, pack_rows, sample_lengths
from test_cpu_broadcast_patch import loss_and_grads, tiny_lora_net
from test_decode import mindformers_env  # noqa: F401  (fixture)

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
            match = [i for i in range(500) if lengths[i] == len(piece) and (ids[i, :len(piece)] == piece).all()]
            assert match, "a packed piece is no input sample"
            np.testing.assert_array_equal(plabels[row, where], labels[match[0], :len(piece)])
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


def test_packed_batch_trains_like_the_unpacked_samples(mindformers_env):
    from jobs.core import mf
    from jobs.core.models import get_model_spec

    ms = mindformers_env[0]
    spec = get_model_spec("tiny")
    rng = np.random.default_rng(5)
    width = 33
    ids, labels, _ = make_samples(rng, 9, width, 6, 14, spec.vocab_size)
    pids, plabels, segs, stats = pack_rows(ids, labels, PAD)
    assert stats["rows"] <= 4 and stats["max_samples_per_row"] >= 2

    def run(batch_ids, batch_labels, segments):
        net = tiny_lora_net(ms, spec, width - 1, len(batch_ids), seed=1)
        if segments is not None:
            mf.use_segment_mask(net, len(batch_ids), width - 1).set_data(ms.Tensor(segments[:, :-1]))
        assert mf.count_total(net) == spec.total_params()
        return loss_and_grads(ms, net, net.trainable_params(), batch_ids, batch_labels)

    loss_u, grads_u = run(ids, labels, None)
    loss_p, grads_p = run(pids, plabels, segs)
    assert np.isfinite(loss_u) and loss_u > 1.0
    assert abs(loss_p - loss_u) < 1e-5 * loss_u, (loss_p, loss_u)
    assert grads_u.keys() == grads_p.keys() and len(grads_u) == 2 * 2 * spec.num_layers
    for name in grads_u:
        scale = np.abs(grads_u[name]).max()
        assert scale > 0 and np.abs(grads_p[name] - grads_u[name]).max() < 1e-4 * scale, name


def test_train_job_packs_in_graph_mode(tmp_path, tiny_cache):
    """The train job with train.packing on (GRAPH mode, the segment mask compiled into the step):
    fewer rows than samples, fuller rows, more real tokens per step, a finite falling loss."""
    import json

    from conftest import TINY_RECIPE, read_jsonl, run_job

    common = [f"runs_dir={tmp_path / 'runs'}", "run_id=packed", "data.seq_length=320", "train.max_steps=6"]
    run_job("prep", TINY_RECIPE, tiny_cache, tmp_path, *common)
    run_job("train", TINY_RECIPE, tiny_cache, tmp_path, *common, "train.packing=true")
    out = tmp_path / "runs" / "packed" / "train"
    packing = json.loads((out / "summary.json").read_text())["packing"]
    assert packing["rows"] < packing["samples"] and packing["fill_after"] > 2 * packing["fill_before"]
    steps = read_jsonl(out / "loss.jsonl")
    assert len(steps) == 6 and all(np.isfinite(s["loss"]) for s in steps)
    # 4 packed rows of 321 ids hold more answer-and-prompt tokens than 4 padded samples could
    assert min(s["tokens"] for s in steps) > 4 * 321 * packing["fill_before"] * 1.5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["packing"]["rows"] == packing["rows"]


def test_gather_capacity_is_the_largest_planned_micro_batch():
    from jobs.core.config import load_spec
    from jobs.train import batch_rows, gather_capacity

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=37)
    for world, accum, steps in ((1, 1, 9), (2, 2, 7), (1, 3, 25)):
        spec = load_spec("recipes/tiny.yaml", [f"train.grad_accum={accum}", "train.batch_size=4", "train.seed=3"])
        plan = {"total_steps": steps}
        most = 0
        for micro in range(steps * accum):
            rows = batch_rows(micro, len(counts), 4, 3)
            for r in range(world):
                most = max(most, int(counts[rows[r * (4 // world):(r + 1) * (4 // world)]].sum()))
        assert gather_capacity(counts, plan, spec, world) == -(-most // 8) * 8
