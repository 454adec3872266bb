"""The two CPU memory settings of the train job (docs/CPU_MEMORY.md, 2026-12-05): MindSpore's
memory_optimize_level O1 on CPU (in the rendered mindformers.yaml) and giving glibc's free heap pages back after the
checkpoint load and after the first (compiling) step (mf_extensions.release_freed_heap, called by
TuneboxLossLog). Neither changes a number; the train job's losses are covered by the spine tests.

Mutants tried: render_train_config without its CPU memory_optimize_level -> test_cpu_memory_optimize_level
fails;
release_freed_heap returning True without calling malloc_trim -> test_release_freed_heap_lowers_rss fails;
TuneboxLossLog.on_train_step_end without its release_freed_heap call -> test_loss_log_trims_after_load_and_compile
fails."""

from __future__ import annotations

import types

import numpy as np

from conftest import cannot_run, rendered


def test_cpu_memory_optimize_level(tmp_path):
    """The CPU recipes render O1; the Ascend ones keep O0 (the contest's setting)."""
    for recipe in ("tiny.yaml", "local-smollm2.yaml"):
        assert rendered(recipe, tmp_path)[2]["context"]["memory_optimize_level"] == "O1", recipe
    assert rendered("stage1-llama3-8b.yaml", tmp_path)[2]["context"]["memory_optimize_level"] == "O0"


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_release_freed_heap_lowers_rss():
    from tunebox.model import mf_extensions as ext

    # 160 MiB in 64 KiB blocks (below glibc's mmap threshold: they come from the heap), each followed by a
    # 1 KiB block (malloc's too: above pymalloc's 512 bytes) that stays, so the freed ones are holes glibc
    # keeps rather than a top it trims by itself
    blocks, keep = [], []
    for _ in range(2560):
        blocks.append(bytearray(64 * 1024))
        keep.append(bytearray(1024))
    del blocks
    before = _rss()
    if not ext.release_freed_heap():
        cannot_run("not glibc: no malloc_trim")
    after = _rss()
    assert before - after > 64 * 2**20, f"malloc_trim gave back under 64 MiB of 160 MiB freed: {before} -> {after}"
    del keep


def test_loss_log_trims_after_load_and_compile(tmp_path, monkeypatch):
    from mindspore import Tensor

    from tunebox.model import mf_extensions as ext

    calls = []
    monkeypatch.setattr(ext, "release_freed_heap", lambda: calls.append(1) or True)
    step = [0]
    optimizer = types.SimpleNamespace(global_step=types.SimpleNamespace(asnumpy=lambda: np.array([step[0]])))
    cb = types.SimpleNamespace(optimizer=optimizer, net_outputs=(Tensor(np.float32(1.5)),), cur_epoch_num=1)
    ctx = types.SimpleNamespace(original_args=lambda: cb, request_stop=lambda: None)
    log = ext.TuneboxLossLog(path=str(tmp_path / "loss.jsonl"), total_steps=3, steps_per_epoch=3, progress=False)
    log.on_train_begin(ctx)
    assert len(calls) == 1  # after the checkpoint load
    for step[0] in (1, 2, 3):
        log.on_train_step_begin(ctx)
        log.on_train_step_end(ctx)
    log.on_train_end(ctx)
    assert len(calls) == 2  # and once after the first step (the graph compile), not after every step
    assert len((tmp_path / "loss.jsonl").read_text().splitlines()) == 3
