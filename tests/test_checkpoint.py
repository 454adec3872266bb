"""Streaming checkpoints (tunebox/model/checkpoint.py): the reader against MindSpore's own
load_checkpoint, the writer against save_checkpoint byte for byte, the streamed LoRA merge against
the in-memory one, truncated and damaged files, and the merge's memory in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benches.bench_merge import run_measured
from jobs import checkpoint as checkpoint_cli
from tunebox.io import InputError, sha256_file
from tunebox.model import checkpoint as cs
from tunebox.model import mf
from tunebox.model.lora import merge_lora_into_base
from tunebox.model.registry import get_model_shape, with_overrides
from tunebox.model.weights import random_parameters

REPO = Path(__file__).resolve().parents[1]
TINY = get_model_shape("tiny")


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ms_cwd"))
    import mindspore

    yield mindspore
    os.chdir(old)


@pytest.fixture
def small_slices(ms, monkeypatch):
    """MindSpore cuts tensors into 1024 * SLICE_SIZE-byte records (512 MiB); 1 KB here, so its own
    writer splits small tensors across records the way it splits an 8B model's embedding."""
    from mindspore.train import serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)
    return 1024


def ms_params(ms, rng) -> list[dict]:
    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return [
        {"name": "w.f32", "data": ms.Tensor(f32(3, 5))},
        {"name": "w.bf16", "data": ms.Tensor(f32(4, 7), ms.bfloat16)},
        {"name": "w.f16", "data": ms.Tensor(f32(6).astype(np.float16))},
        {"name": "w.f64", "data": ms.Tensor(rng.standard_normal((2, 2, 2)))},
        {"name": "ids.i8", "data": ms.Tensor(np.array([-3, 0, 127], dtype=np.int8))},
        {"name": "ids.u8", "data": ms.Tensor(np.array([0, 200, 255], dtype=np.uint8))},
        {"name": "ids.i32", "data": ms.Tensor(np.arange(-4, 5, dtype=np.int32).reshape(3, 3))},
        {"name": "ids.i64", "data": ms.Tensor(np.array([-(2**40), 7], dtype=np.int64))},
        {"name": "mask", "data": ms.Tensor(np.array([True, False, True]))},
        {"name": "scalar", "data": ms.Tensor(np.float32(3.5))},
        {"name": "big.f32", "data": ms.Tensor(f32(50, 41))},  # 8200 B: 9 records of 1 KB
        {"name": "big.bf16", "data": ms.Tensor(f32(33, 40), ms.bfloat16)},  # 2640 B: 3 records
    ]


def ms_load(ms, path) -> dict:
    return {k: v if isinstance(v, str) else v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


def assert_same_tensors(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        if isinstance(w, str):
            assert g == w, name
            continue
        assert (g.dtype, g.shape) == (w.dtype, w.shape), name
        assert g.tobytes() == w.tobytes(), name


def random_lora(spec, rng, targets=("wq", "wv"), rank=8) -> dict[str, np.ndarray]:
    lora = {}
    for i in range(spec.num_layers):
        for lin in targets:
            out_dim, in_dim = spec.linear_shapes()[lin]
            prefix = f"model.layers.{i}.attention.{lin}"
            lora[f"{prefix}.{mf.LORA_A}"] = rng.standard_normal((rank, in_dim)).astype(np.float32)
            lora[f"{prefix}.{mf.LORA_B}"] = rng.standard_normal((out_dim, rank)).astype(np.float32)
    return lora


# ---- reading ---------------------------------------------------------------------------------


def test_reader_returns_what_load_checkpoint_returns(ms, small_slices, tmp_path):
    path = tmp_path / "many.ckpt"
    ms.save_checkpoint(
        ms_params(ms, np.random.default_rng(0)),
        str(path),
        append_dict={"epoch_num": 3, "step_num": 11, "note": "merged by tunebox"},
    )
    want = ms_load(ms, path)
    with cs.CheckpointReader(path) as reader:
        entries = {e.name: e for e in reader.entries()}
        got = dict(reader)
    assert_same_tensors(got, want)
    assert entries["big.f32"].records == 9 and entries["big.bf16"].records == 3
    assert entries["w.f32"].records == 1 and entries["scalar"].shape == ()
    assert got["note"] == "merged by tunebox" and got["w.bf16"].dtype.name == "bfloat16"


def test_save_checkpoint_numpy_writes_save_checkpoints_bytes_atomically(ms, tmp_path):
    source = dict(random_parameters(TINY, seed=3))
    path = tmp_path / "new" / "tiny.ckpt"
    digest = cs.save_checkpoint_numpy(path, iter(source.items()), sha256=True)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in source.items()], str(tmp_path / "ms.ckpt"))
    assert path.read_bytes() == (tmp_path / "ms.ckpt").read_bytes()
    assert digest == sha256_file(path)
    assert_same_tensors(ms_load(ms, path), source)
    assert cs.save_checkpoint_numpy(tmp_path / "plain.ckpt", {"a": np.zeros(2, np.float32)}) is None

    def failing():
        yield "a", np.zeros(3, np.float32)
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        cs.save_checkpoint_numpy(tmp_path / "broken.ckpt", failing())
    assert not (tmp_path / "broken.ckpt").exists() and not list(tmp_path.glob(".broken.ckpt.*"))


def test_writer_writes_the_bytes_save_checkpoint_writes(ms, small_slices, tmp_path):
    params = ms_params(ms, np.random.default_rng(1))
    ms.save_checkpoint(params, str(tmp_path / "ms.ckpt"), append_dict={"note": "x"})
    arrays = [(p["name"], p["data"].asnumpy()) for p in params] + [("note", "x")]
    with cs.CheckpointStreamWriter(tmp_path / "ours.ckpt", record_bytes=small_slices, sha256=True) as writer:
        for name, value in arrays:
            writer.add(name, value)
        digest = writer.close()
    assert (tmp_path / "ours.ckpt").read_bytes() == (tmp_path / "ms.ckpt").read_bytes()
    assert digest == sha256_file(tmp_path / "ours.ckpt")


def test_record_size_is_mindspores_and_streamed_blocks_split_at_it(ms, tmp_path):
    from mindspore.train import serialization

    assert cs.RECORD_BYTES == 1024 * serialization.SLICE_SIZE  # the real split point: 512 MiB
    # add_stream: blocks of any size, records cut at record_bytes, as save_checkpoint cuts them
    array = np.arange(3000, dtype=np.float32).reshape(60, 50)
    raw = array.reshape(-1).view(np.uint8)
    with cs.CheckpointStreamWriter(tmp_path / "s.ckpt", record_bytes=4096) as writer:
        writer.add_stream("t", array.shape, "Float32", (raw[i : i + 999] for i in range(0, raw.size, 999)))
        with pytest.raises(ValueError, match="needs 8"):
            writer.add_stream("short", (2,), "Float32", [b"1234"])  # rolled back: the file stays whole
        with pytest.raises(ValueError, match="more than 8"):
            writer.add_stream("long", (2,), "Float32", [b"1234", b"5678", b"9"])
        writer.add("after", np.float32([1.5]))
        writer.close()
    with cs.CheckpointReader(tmp_path / "s.ckpt") as reader:
        (entry,) = [e for e in reader.entries() if e.name == "t"]
        assert [length for _, length in entry.chunks] == [4096, 4096, 3808]
    loaded = ms_load(ms, tmp_path / "s.ckpt")
    assert list(loaded) == ["t", "after"]
    np.testing.assert_array_equal(loaded["t"], array)


def test_crc_footer_is_read_and_checked(ms, tmp_path):
    path = tmp_path / "crc.ckpt"
    ms.save_checkpoint(ms_params(ms, np.random.default_rng(2)), str(path), crc_check=True)
    with cs.CheckpointReader(path, verify_crc=True) as reader:
        assert reader.crc is not None and reader.data_end == path.stat().st_size - cs.CRC_FOOTER_BYTES
        assert_same_tensors(dict(reader), ms_load(ms, path))
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside w.f32's content: still parses, crc does not match
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="crc32 mismatch"):
        cs.CheckpointReader(path, verify_crc=True)


def test_truncated_checkpoint_names_the_file_and_the_byte(ms, tmp_path):
    path = tmp_path / "whole.ckpt"
    ms.save_checkpoint(ms_params(ms, np.random.default_rng(3)), str(path))
    with cs.CheckpointReader(path) as reader:
        entries = list(reader.entries())
    data = path.read_bytes()
    last = entries[-1]
    cuts = {
        "inside the last tensor's bytes": (last.chunks[0][0] + 5, last.start),
        "inside a record header": (last.start + 3, last.start),
        "one byte into a record": (last.start + 1, last.start),
    }
    for what, (cut, record_start) in cuts.items():
        bad = tmp_path / f"cut-{cut}.ckpt"
        bad.write_bytes(data[:cut])
        with pytest.raises(cs.CheckpointFormatError) as err:
            cs.load_checkpoint_numpy(bad)
        message = str(err.value)
        assert str(bad) in message and "truncated" in message, what
        assert f"at byte {record_start:,}" in message, (what, message)
        assert err.value.offset == record_start
    with pytest.raises(ValueError):  # MindSpore agrees the file is bad
        ms.load_checkpoint(str(tmp_path / f"cut-{last.chunks[0][0] + 5}.ckpt"))


def test_not_a_checkpoint_is_rejected_at_byte_0(tmp_path):
    path = tmp_path / "model.safetensors.ckpt"
    path.write_bytes(b'{"__metadata__": {}}' + bytes(100))
    with pytest.raises(cs.CheckpointFormatError, match="at byte 0: expected a Checkpoint.value record"):
        list(cs.iter_checkpoint(path))
    assert checkpoint_cli.main(["list", str(path)]) == 2


# ---- merging ---------------------------------------------------------------------------------


def reference_merge(base: dict, lora: dict, alpha: float, rank: int, scale: float) -> dict:
    """W + scale * (alpha / r) * B @ A written out here, apart from checkpoint.fold_lora: float32
    product and sum, cast back with numpy's astype (MindSpore's numpy bfloat16 for bfloat16)."""
    out = dict(base)
    for key in lora:
        if key.endswith(mf.LORA_A):
            prefix = key[: -len(mf.LORA_A) - 1]
            w, b = base[f"{prefix}.weight"], lora[f"{prefix}.{mf.LORA_B}"]
            delta = (b.astype(np.float32) @ lora[key].astype(np.float32)) * np.float32(scale * alpha / rank)
            out[f"{prefix}.weight"] = (w.astype(np.float32) + delta).astype(w.dtype)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_merge_streaming_equals_the_in_memory_merge(ms, tmp_path, dtype):
    rng = np.random.default_rng(4)
    base = dict(random_parameters(TINY, seed=4))
    base = {k: v.astype(cs.bfloat16() if dtype == "bfloat16" else dtype) for k, v in base.items()}
    lora = random_lora(TINY, rng)
    cs.save_checkpoint_numpy(tmp_path / "base.ckpt", base)
    cs.save_checkpoint_numpy(tmp_path / "lora.ckpt", lora)
    in_memory = reference_merge(base, lora, alpha=16, rank=8, scale=0.7)
    assert_same_tensors(
        merge_lora_into_base(
            cs.load_checkpoint_numpy(tmp_path / "base.ckpt"),
            cs.load_checkpoint_numpy(tmp_path / "lora.ckpt"),
            alpha=16,
            rank=8,
            scale=0.7,
        ),
        in_memory,
    )
    # what a merge all in memory would write: the merged arrays through MindSpore's save_checkpoint
    ms.save_checkpoint(
        [{"name": k, "data": ms.Tensor(v)} for k, v in in_memory.items()], str(tmp_path / "in_memory.ckpt")
    )

    stats = cs.merge_streaming(
        tmp_path / "base.ckpt",
        tmp_path / "lora.ckpt",
        tmp_path / "out" / "model.ckpt",
        alpha=16,
        rank=8,
        scale=0.7,
        progress=False,
        sha256=True,
    )
    out = tmp_path / "out" / "model.ckpt"
    assert stats.merged == 2 * TINY.num_layers and stats.tensors == len(base)
    assert stats.sha256 == sha256_file(out) == sha256_file(tmp_path / "in_memory.ckpt")
    assert_same_tensors(ms_load(ms, out), in_memory)
    changed = [k for k in base if base[k].tobytes() != in_memory[k].tobytes()]
    assert len(changed) == 2 * TINY.num_layers  # the merge did something

    # without copy_file_range (another filesystem): the same file
    cs.merge_streaming(
        tmp_path / "base.ckpt",
        tmp_path / "lora.ckpt",
        tmp_path / "copied.ckpt",
        alpha=16,
        rank=8,
        scale=0.7,
        progress=False,
        copy_file_range=False,
        drop_cache=False,
    )
    assert sha256_file(tmp_path / "copied.ckpt") == stats.sha256


def test_bfloat16_rounding_is_mindspores_bit_for_bit(ms):
    """The merge rounds float32 -> bfloat16 itself (no MindSpore import); it must round as
    MindSpore's numpy bfloat16 does: random bit patterns plus ties, infinities, NaNs, subnormals."""
    rng = np.random.default_rng(7)
    bits = np.concatenate(
        [
            rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32),
            np.array(
                [
                    0,
                    0x80000000,
                    0x7F800000,
                    0xFF800000,
                    0x7FC00000,
                    0x7F800001,
                    0xFFC00001,
                    0x7F7FFFFF,
                    0x7F7F8000,
                    0x00000001,
                    0x007FFFFF,
                    0x3F808000,
                    0x3F818000,
                    0x3F80FFFF,
                    0x80008000,
                ],
                dtype=np.uint32,
            ),
        ]
    )
    values = bits.view(np.float32)
    with np.errstate(invalid="ignore"):
        theirs = values.astype(cs.bfloat16()).view(np.uint16)
    np.testing.assert_array_equal(cs.float32_to_bfloat16_bits(values), theirs)
    back = rng.integers(0, 2**16, 100_000, dtype=np.uint32).astype(np.uint16)
    np.testing.assert_array_equal(
        cs.bfloat16_bits_to_float32(back).view(np.uint32), back.view(cs.bfloat16()).astype(np.float32).view(np.uint32)
    )


def test_bfloat16_merge_does_not_load_mindspore(tmp_path):
    rng = np.random.default_rng(8)
    with cs.CheckpointStreamWriter(tmp_path / "base.ckpt") as writer:
        for name, array in random_parameters(TINY, seed=8):
            writer.add_stream(name, array.shape, "BFloat16", [cs.float32_to_bfloat16_bits(array)])
        writer.close()
    with cs.CheckpointStreamWriter(tmp_path / "lora.ckpt") as writer:
        for name, array in random_lora(TINY, rng).items():
            writer.add(name, array)
        writer.close()
    code = (
        "import sys; from tunebox.model.checkpoint import merge_streaming;"
        "merge_streaming('base.ckpt', 'lora.ckpt', 'out.ckpt', 16, 8, progress=False);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mindspore'))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    with cs.CheckpointReader(tmp_path / "out.ckpt") as out:
        assert {e.tensor_type for e in out.entries()} == {"BFloat16"}


def test_merge_writes_bfloat16_from_a_float32_base(ms, tmp_path):
    """merge.dtype bfloat16 (a Llama3-8B submission: 5 x 16 GB instead of 5 x 32 GB): every float tensor,
    merged or only copied, comes out as MindSpore's bfloat16 of the float32 merge, as load_checkpoint
    reads it; the merge itself stays float32."""
    rng = np.random.default_rng(9)
    base = dict(random_parameters(TINY, seed=9))
    cs.save_checkpoint_numpy(tmp_path / "base.ckpt", base)
    cs.save_checkpoint_numpy(tmp_path / "lora.ckpt", random_lora(TINY, rng))
    for out_type, name in ((None, "f32.ckpt"), ("BFloat16", "bf16.ckpt")):
        cs.merge_streaming(
            tmp_path / "base.ckpt",
            tmp_path / "lora.ckpt",
            tmp_path / name,
            alpha=16,
            rank=8,
            progress=False,
            out_type=out_type,
        )
    with cs.CheckpointReader(tmp_path / "bf16.ckpt") as out:
        assert {e.tensor_type for e in out.entries()} == {"BFloat16"}
    f32, bf16 = ms_load(ms, tmp_path / "f32.ckpt"), ms_load(ms, tmp_path / "bf16.ckpt")
    assert f32.keys() == bf16.keys() == base.keys()
    for k in f32:
        np.testing.assert_array_equal(
            bf16[k].astype(np.float32), f32[k].astype(cs.bfloat16()).astype(np.float32), err_msg=k
        )
    assert (tmp_path / "bf16.ckpt").stat().st_size < 0.6 * (tmp_path / "f32.ckpt").stat().st_size
    with pytest.raises(ValueError, match="out_type"):
        cs.merge_streaming(tmp_path / "base.ckpt", tmp_path / "lora.ckpt", tmp_path / "x.ckpt", 16, 8, out_type="Int8")


def test_merge_rejects_a_lora_that_does_not_fit_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(5)
    cs.save_checkpoint_numpy(tmp_path / "base.ckpt", dict(random_parameters(TINY, seed=5)))
    cs.save_checkpoint_numpy(
        tmp_path / "wrong-model.ckpt", random_lora(with_overrides(TINY, hidden_size=32, num_heads=2), rng)
    )
    cs.save_checkpoint_numpy(tmp_path / "deep.ckpt", random_lora(with_overrides(TINY, num_layers=3), rng))
    half = random_lora(TINY, rng)
    del half[f"model.layers.1.attention.wv.{mf.LORA_B}"]
    cs.save_checkpoint_numpy(tmp_path / "half.ckpt", half)
    out = tmp_path / "out.ckpt"
    for lora, match in (
        ("wrong-model.ckpt", "does not make that shape"),
        ("deep.ckpt", "model.layers.2.attention.wq.weight, which this base"),
        ("half.ckpt", "has no matching"),
    ):
        with pytest.raises(InputError, match=match):
            cs.merge_streaming(tmp_path / "base.ckpt", tmp_path / lora, out, 16, 8, progress=False)
        assert not out.exists() and not list(tmp_path.glob(".out.ckpt.*"))


def test_merge_memory_does_not_grow_with_the_checkpoint(tmp_path):
    """A ~300 MB float32 base merged in a child process: its peak RSS stays far below the file,
    while a child that loads the same file whole peaks above it (the measure can tell)."""

    rng = np.random.default_rng(6)
    hidden, layers = 1024, 4
    base = tmp_path / "base.ckpt"
    block = rng.standard_normal(1 << 20).astype(np.float32)  # 4 MB of values, reused
    with cs.CheckpointStreamWriter(base) as writer:
        writer.add_stream("model.tok_embeddings.embedding_weight", (16384, hidden), "Float32", [block] * 16)
        for i in range(layers):
            for lin in ("wq", "wk", "wv", "wo"):
                writer.add(
                    f"model.layers.{i}.attention.{lin}.weight", rng.standard_normal((hidden, hidden), dtype=np.float32)
                )
            for lin in ("w1", "w2", "w3"):
                writer.add_stream(f"model.layers.{i}.feed_forward.{lin}.weight", (4096, hidden), "Float32", [block] * 4)
        writer.close()
    size = base.stat().st_size
    assert size > 280e6
    lora = {}
    for i in range(layers):
        for lin in ("wq", "wv"):
            lora[f"model.layers.{i}.attention.{lin}.{mf.LORA_A}"] = rng.standard_normal((8, hidden), dtype=np.float32)
            lora[f"model.layers.{i}.attention.{lin}.{mf.LORA_B}"] = rng.standard_normal((hidden, 8), dtype=np.float32)
    with cs.CheckpointStreamWriter(tmp_path / "lora.ckpt") as writer:
        for name, value in lora.items():
            writer.add(name, value)
        writer.close()

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    streamed = run_measured(
        [
            "-m",
            "jobs.checkpoint",
            "merge",
            str(base),
            str(tmp_path / "lora.ckpt"),
            str(tmp_path / "out.ckpt"),
            "--alpha",
            "16",
            "--rank",
            "8",
            "--no-progress",
        ],
        env=env,
        cwd=tmp_path,
    )
    assert streamed.returncode == 0, streamed.stderr
    whole = run_measured(
        [
            "-c",
            "import sys; from tunebox.model.checkpoint import load_checkpoint_numpy;"
            " load_checkpoint_numpy(sys.argv[1])",
            str(base),
        ],
        env=env,
        cwd=tmp_path,
    )
    assert whole.returncode == 0, whole.stderr
    assert whole.max_rss > size, (whole.max_rss, size)
    assert 0 < streamed.max_rss < size / 3, (streamed.max_rss, size)

    with cs.CheckpointReader(tmp_path / "out.ckpt") as out, cs.CheckpointReader(base) as src:
        out_entries, src_entries = list(out.entries()), {e.name: e for e in src.entries()}
        assert [e.name for e in out_entries] == list(src_entries)
        for entry in out_entries:
            if ".wq." in entry.name or ".wv." in entry.name:
                prefix = entry.name[: -len(".weight")]
                a, b = lora[f"{prefix}.{mf.LORA_A}"], lora[f"{prefix}.{mf.LORA_B}"]
                np.testing.assert_array_equal(out.read(entry), src.read(src_entries[entry.name]) + (b @ a) * 2.0)
        emb = "model.tok_embeddings.embedding_weight"
        assert sha256_of(out, next(e for e in out_entries if e.name == emb)) == sha256_of(src, src_entries[emb])
    for big in (base, tmp_path / "out.ckpt"):  # pytest keeps the last runs' tmp dirs
        big.unlink()


def sha256_of(reader: cs.CheckpointReader, entry: cs.TensorEntry) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(reader.read(entry)).tobytes()).hexdigest()


@pytest.mark.slow
def test_tensor_over_512_mib_is_split_like_mindspore_splits_it(ms, tmp_path):
    """The real split point, with MindSpore loading the result (1-2 GB of RAM for a few seconds)."""
    path = tmp_path / "huge.ckpt"
    block = np.arange(1 << 20, dtype=np.uint8)  # 1 MiB pattern
    n_blocks = cs.RECORD_BYTES // block.size + 1
    with cs.CheckpointStreamWriter(path) as writer:
        writer.add_stream("huge", (n_blocks, block.size), "UInt8", [block] * n_blocks)
        writer.add("after", np.float32([1, 2]))
        writer.close()
    with cs.CheckpointReader(path) as reader:
        entries = list(reader.entries())
        assert [e.records for e in entries] == [2, 1]
        assert [length for _, length in entries[0].chunks] == [cs.RECORD_BYTES, block.size]
        ours = reader.read(entries[0])
    loaded = ms.load_checkpoint(str(path))
    theirs = loaded.pop("huge").asnumpy()
    assert theirs.shape == ours.shape and np.array_equal(theirs, ours) and np.array_equal(ours[-1], block)
    np.testing.assert_array_equal(loaded["after"].asnumpy(), [1, 2])
    path.unlink()


def test_safetensors_copy_is_what_mindspore_loads_from_the_ckpt(ms, small_slices, tmp_path):
    """write_safetensors: MindSpore's own safetensors loader gives back every tensor of the .ckpt (records
    joined, every dtype, bfloat16 included) bit for bit, and MindFormers 1.9's metadata reader (what
    checkpoint.load_path goes through) sees each name, shape and dtype; the data starts 8-byte aligned, as
    the safetensors library writes it. Mutants: data offsets not advanced; BF16 written as F16; no padding."""
    ckpt, out = tmp_path / "base.ckpt", tmp_path / "st" / "tunebox-base.safetensors"
    ms.save_checkpoint(ms_params(ms, np.random.default_rng(3)), str(ckpt))
    assert cs.write_safetensors(ckpt, out) == len(ms_params(ms, np.random.default_rng(3)))
    assert int.from_bytes(out.read_bytes()[:8], "little") % 8 == 0
    got = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(out), format="safetensors").items()}
    want = ms_load(ms, ckpt)
    assert sorted(got) == sorted(want)
    assert_same_tensors({k: got[k] for k in want}, want)
    from mindformers.checkpoint.metadata import generate_default_metadata_from_checkpoint

    metas, _ = generate_default_metadata_from_checkpoint(str(out.parent))
    assert {name: tuple(m[0].global_shape) for name, m in metas.items()} == {k: v.shape for k, v in want.items()}


def test_a_string_entry_has_no_safetensors_dtype(ms, tmp_path):
    ckpt = tmp_path / "with_str.ckpt"
    ms.save_checkpoint(ms_params(ms, np.random.default_rng(0))[:1], str(ckpt), append_dict={"note": "x"})
    with pytest.raises(InputError, match="'note' is str, which safetensors cannot hold"):
        cs.write_safetensors(ckpt, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_the_base_folder_is_made_once_and_not_taken_for_a_hugging_face_one(ms, tmp_path, monkeypatch):
    """ensure_safetensors_base: one folder a checkpoint (path, size, mtime), written once; a replaced file
    gets a new one; its file is not named model.safetensors, which MindFormers would load as Hugging
    Face weights (is_hf_checkpoint). Mutants: the key without mtime; BASE_SAFETENSORS = model.safetensors."""
    from mindformers.checkpoint.utils import is_hf_checkpoint

    from tunebox.model.weights import BASE_SAFETENSORS, ensure_safetensors_base

    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "model.ckpt"
    ms.save_checkpoint(ms_params(ms, np.random.default_rng(0)), str(ckpt))
    first = ensure_safetensors_base(ckpt, progress=False)
    written = (first / BASE_SAFETENSORS).stat().st_mtime_ns
    assert ensure_safetensors_base(ckpt, progress=False) == first
    assert (first / BASE_SAFETENSORS).stat().st_mtime_ns == written
    assert not is_hf_checkpoint(str(first))
    ms.save_checkpoint(ms_params(ms, np.random.default_rng(1)), str(ckpt))
    os.utime(ckpt, ns=(written + 10**9, written + 10**9))
    second = ensure_safetensors_base(ckpt, progress=False)
    assert second != first and sorted(p.name for p in second.iterdir()) == [BASE_SAFETENSORS]
    got = ms.load_checkpoint(str(second / BASE_SAFETENSORS), format="safetensors")["w.f32"].asnumpy()
    assert got.tobytes() == ms_load(ms, ckpt)["w.f32"].tobytes()
