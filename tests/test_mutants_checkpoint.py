"""Tests written for the mutants of tunebox/model/checkpoint.py and lora.py that the group's other tests let
survive (tests/mutants.py, group "checkpoint"; docs/TESTING.md). Each names its mutants (mutmut's names,
`tunebox.model.checkpoint.` left out). Expected values are worked out by hand (record layouts counted byte by
byte in the comments) or come from an independent implementation: MindSpore's save_checkpoint and
load_checkpoint, its numpy bfloat16, zlib's crc32, numpy's own casts. All in process, fast."""

from __future__ import annotations

import errno
import logging
import os
import time
import zlib

import numpy as np
import pytest

from tunebox.io import InputError
from tunebox.model import checkpoint as cs
from tunebox.model.lora import merge_lora_into_base


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ms_cwd"))  # MindSpore may leave files in its working folder
    import mindspore

    yield mindspore
    os.chdir(old)


def ms_save(ms, path, tensors: dict, **kwargs) -> None:
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in tensors.items()], str(path), **kwargs)


# Two float32 tensors, a = [2] and b = [3], as save_checkpoint writes them. Counted by hand:
# record a: 0a 1a | 0a 01 'a' | 12 15 | 08 02 | 12 07 'Float32' | 1a 08 | 8 content bytes = 2 + 26 = 28 bytes
# record b: 0a 1e | 0a 01 'b' | 12 19 | 08 03 | 12 07 'Float32' | 1a 0c | 12 content bytes = 2 + 30 = 32 bytes
AB = {"a": np.float32([1, 2]), "b": np.float32([3, 4, 5])}
B_START, B_END, B_CONTENT = 28, 60, 48


def ab_file(ms, tmp_path, name="ab.ckpt"):
    path = tmp_path / name
    ms_save(ms, path, AB)
    data = path.read_bytes()
    assert len(data) == B_END and data[B_START : B_START + 5] == b"\x0a\x1e\x0a\x01b"  # the layout above
    return path, data


def truncated_message(path, start: int, record: str, need: int, ends: int) -> str:
    return (
        f"{path}: at byte {start:,}: truncated: {record} needs bytes up to {need:,} but the checkpoint data ends at "
        f"{ends:,}; the file is incomplete (interrupted write or copy?) — write or download it again"
    )


# ---- reading: truncated files ----------------------------------------------------------------


def test_a_record_cut_in_its_content_is_named_with_its_tag(ms, tmp_path):
    """The whole message, record index and tag included. Mutants: _Headers.truncated__mutmut_1 (message None:
    the old test's "truncated" matched its own folder name); _peek_name__mutmut_12, _13 (the tag not looked for)."""
    _, data = ab_file(ms, tmp_path)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[:B_CONTENT])
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(cut)
    assert str(err.value) == truncated_message(cut, B_START, "record 1 ('b')", B_END, B_CONTENT)
    assert err.value.offset == B_START


def test_a_record_cut_in_its_tag_is_named_by_index(ms, tmp_path):
    """Cut after the tag's field byte: the tag cannot be read, the record is named by its index alone, and the
    error is about the record, not the tag. Mutant: _peek_name__mutmut_3 (only UnicodeDecodeError suppressed:
    the tag's own truncation error escapes)."""
    _, data = ab_file(ms, tmp_path)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: B_START + 3])
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(cut)
    assert str(err.value) == truncated_message(cut, B_START, "record 1", B_END, B_START + 3)


def test_a_cut_record_whose_tag_is_not_utf8_is_named_by_index(ms, tmp_path):
    """Mutants: _peek_name__mutmut_2 (suppress(InputError, None): TypeError), _4 (UnicodeDecodeError not
    suppressed)."""
    _, data = ab_file(ms, tmp_path)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: B_START + 4] + b"\xff" + data[B_START + 5 : B_CONTENT])
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(cut)
    assert str(err.value) == truncated_message(cut, B_START, "record 1", B_END, B_CONTENT)


def test_a_long_tag_cut_while_the_file_shrinks_still_gives_the_truncation_error(ms, tmp_path):
    """A 70,000-character tag lies beyond the 64 KiB header window, so _peek_name reads it from the file; the
    file shrinks under the reader (data_end was taken at open), so that read fails with an InputError that
    _peek_name swallows. Mutant: _peek_name__mutmut_24 (what=None: `None + " (file shrank ...)"` raises
    TypeError)."""
    name = "n" * 70_000
    path = tmp_path / "long.ckpt"
    ms_save(ms, path, {name: np.float32([1, 2, 3, 4])})
    size = path.stat().st_size
    os.truncate(path, size - 8)  # inside the content: the record's end lies past the data
    with cs.CheckpointReader(path) as reader:
        os.truncate(path, 1000)  # inside the tag
        with pytest.raises(cs.CheckpointFormatError) as err:
            list(reader.entries())
    # record: 0a + 3-byte varint; the value's own fields follow, so the record ends at the old size
    assert str(err.value) == truncated_message(path, 0, "record 0", size, size - 8)


# ---- reading: _records and entries, record by record (session i24r1) ---------------------------

# A record after MindSpore's record a (bytes 0-28 of ab_file), written by hand, and what the reader says of it:
# the whole message (the file, the byte, the text). Record 1 starts at byte 28; its length varint at 29, its
# fields at 30. A's tensor (its TensorProto, 21 = 0x15 bytes): 08 02 | 12 07 'Float32' | 1a 08 | 8 content bytes.
A_TENSOR = b"\x08\x02" + b"\x12\x07Float32" + b"\x1a\x08" + b"\x00\x00\xc0\x3f\x00\x00\x00\xc0"  # 1.5, -2
INCOMPLETE = "the file is incomplete (interrupted write or copy?) — write or download it again"
CHECKPOINT_TEXT = "not a plain MindSpore checkpoint (encrypted with enc_key, safetensors, or damaged)"
MALFORMED_RECORDS = {
    # 'P' (a zip file's first byte: what torch.save writes) where the key 0a belongs
    "not-a-record": (
        b"PK\x03\x04",
        28,
        f"expected a Checkpoint.value record (0x0a), found byte 0x50: {CHECKPOINT_TEXT}",
    ),
    # the key and nothing else: the length varint would be byte 29, the file has 29 bytes
    "length-cut": (
        b"\x0a",
        28,
        "truncated: the length of record 1 needs bytes up to 30 but the checkpoint data ends at 29; " + INCOMPLETE,
    ),
    # length 10 | ten bytes with the top bit set where the first field's key belongs (byte 30)
    "field-key": (b"\x0a\x0a" + b"\xff" * 10, 30, "malformed varint in record 1"),
    # length 11 | 0a (the tag) at 30 | its length: ten bytes with the top bit set, from byte 31
    "tag-length": (b"\x0a\x0b\x0a" + b"\xff" * 10, 31, "malformed varint in record 1 tag"),
    # length 3 (ends at 33) | 0a 05 at 30-31: a 5-byte tag from byte 32, to 37
    "tag-cut": (
        b"\x0a\x03\x0a\x05x",
        28,
        "truncated: record 1 tag needs bytes up to 37 but the checkpoint data ends at 33; " + INCOMPLETE,
    ),
    # length 14 | 0a 01 'x' at 30-32 | 12 (the tensor) at 33 | its length: ten bytes with the top bit set, from 34
    "tensor-length": (b"\x0a\x0e\x0a\x01x\x12" + b"\xff" * 10, 34, "malformed varint in record 1 tensor"),
    # length 16 | 0a 01 'x' | 12 0b | 08 02 | 12 07 'Float32': a TensorProto without content, ends at 46
    "no-content": (b"\x0a\x10\x0a\x01x\x12\x0b\x08\x02\x12\x07Float32", 46, "record 1 ('x'): malformed TensorProto"),
    # 0a 01 'x' | 12 15 | a's tensor: a 26-byte value, the record says 25 (19): the tensor runs to 56, the record to 55
    "overrun": (b"\x0a\x19\x0a\x01x\x12\x15" + A_TENSOR, 28, "record 1 ('x') overruns its length 25"),
    # length 5 | 0a 01 'm' | 1a 00: Value's field 3, a MapTensorProto (empty)
    "maptensor": (
        b"\x0a\x05\x0a\x01m\x1a\x00",
        28,
        "record 1 ('m') is a MapParameter (maptensor), which tunebox does not read",
    ),
    "tag-only": (b"\x0a\x03\x0a\x01x", 28, "record 1 has no tensor"),  # length 3 | 0a 01 'x'
    "tensor-only": (b"\x0a\x17\x12\x15" + A_TENSOR, 28, "record 1 has no tag"),  # length 2 + 21 = 23 | 12 15 | tensor
    "empty": (b"\x0a\x00", 28, "record 1 has no tag"),  # a Value with no field at all
}


@pytest.mark.parametrize("case", MALFORMED_RECORDS)
def test_each_malformed_record_is_refused_with_its_file_byte_and_reason(ms, tmp_path, case):
    """Every error _records raises, on a record 1 written by hand after MindSpore's record a: the whole message
    and the offset. Mutants: _records__mutmut_24 (not-a-record: the file dropped); _31 (length-cut), _59
    (field-key), _66 (tag-length), _73 (tag-cut), _85 (tensor-length), _92 (no-content): what=None, the record not
    named; _101 (maptensor: field 27 looked for, the map skipped as an unknown field), _102 to _107 (its message,
    file or byte dropped); _120 to _125 (overrun: message, file or byte dropped); _126 (`and`: a record with a tag
    and no tensor, or the reverse, let through); _129 to _134 (has no tag/tensor: message, file or byte dropped),
    _135 to _141 (which one is missing misnamed or misspelt)."""
    record, offset, message = MALFORMED_RECORDS[case]
    _, data = ab_file(ms, tmp_path)
    path = tmp_path / f"{case}.ckpt"
    path.write_bytes(data[:B_START] + record)
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    assert str(err.value) == f"{path}: at byte {offset}: {message}"
    assert err.value.offset == offset


def test_a_record_key_beyond_the_header_window_of_a_file_that_shrank(ms, tmp_path):
    """Record 1's key lies past the 64 KiB header window the reader filled at record 0, and the file was cut at
    record 1 after the reader opened it: reading that key fails with the record named. Mutant: _records__mutmut_16
    (what=None: `None + " (file shrank ...)"` raises TypeError)."""
    path = tmp_path / "big.ckpt"
    ms_save(ms, path, {"big": np.zeros(17000, dtype=np.float32), "b": AB["b"]})
    data = path.read_bytes()
    # Counted by hand: varint 17000 = e8 84 01, 68000 content bytes = a0 93 04, the tensor 4 + 9 + 4 + 68000 = 68017
    # = b1 93 04, the value 5 + 4 + 68017 = 68026 = ba 93 04, so record big is 4 + 68026 = 68030 bytes; b's 32 follow
    head = b"\x0a\xba\x93\x04\x0a\x03big\x12\xb1\x93\x04\x08\xe8\x84\x01\x12\x07Float32\x1a\xa0\x93\x04"
    assert data[:30] == head and data[68030:68035] == b"\x0a\x1e\x0a\x01b" and len(data) == 68062
    with cs.CheckpointReader(path) as reader:
        os.truncate(path, 68030)
        with pytest.raises(cs.CheckpointFormatError) as err:
            list(reader.entries())
    assert str(err.value) == truncated_message(path, 68030, "record 1 (file shrank while reading)", 68031, 68062)


# Tensor a (float32 [2]) in two records of 4 content bytes each, as save_checkpoint writes a tensor over 512 MiB:
# 0a 16 | 0a 01 'a' | 12 11 | 08 02 | 12 07 'Float32' | 1a 04 | 4 bytes = 2 + 22 = 24 bytes, the content at 20
A_FIRST = b"\x0a\x16\x0a\x01a\x12\x11\x08\x02\x12\x07Float32\x1a\x04" + np.float32([1]).tobytes()
A_SECOND = b"\x0a\x16\x0a\x01a\x12\x11\x08\x02\x12\x07Float32\x1a\x04" + np.float32([2]).tobytes()


def test_a_tensor_in_two_records_is_one_entry_spanning_both(ms, tmp_path):
    """a in records 0-24 and 24-48, then MindSpore's record b (48-80): one entry for a, from the first record's
    start to the second's end, read as MindSpore's load_checkpoint joins them. Mutant: entries__mutmut_59 (the
    entry's end not moved to its last record's)."""
    _, data = ab_file(ms, tmp_path)
    path = tmp_path / "split.ckpt"
    path.write_bytes(A_FIRST + A_SECOND + data[B_START:])
    theirs = ms_load(ms, path)
    assert theirs["a"].tolist() == [1, 2] and theirs["b"].tolist() == AB["b"].tolist()
    with cs.CheckpointReader(path) as reader:
        a, b = list(reader.entries())
        assert a == cs.TensorEntry("a", (2,), "Float32", ((20, 4), (44, 4)), 0, 48)
        assert b == cs.TensorEntry("b", (3,), "Float32", ((68, 12),), 48, 80)
        assert reader.read(a).tolist() == [1, 2] and reader.read(b).tolist() == AB["b"].tolist()


def test_records_of_one_tensor_that_disagree_are_refused(tmp_path):
    """a's second record says Float16 [4] (the same 24-byte layout: 'Float16' is 7 letters, 4 one varint byte).
    Mutants: entries__mutmut_47 to _52 (message, file or byte dropped), _53 to _56 (the types and dims shown:
    the chunks for the type, None, the type's letters for the dims)."""
    second = A_SECOND.replace(b"\x08\x02\x12\x07Float32", b"\x08\x04\x12\x07Float16")
    assert len(second) == 24
    path = tmp_path / "disagree.ckpt"
    path.write_bytes(A_FIRST + second)
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    assert str(err.value) == f"{path}: at byte 24: records of 'a' disagree: Float32[2] then Float16[4]"
    assert err.value.offset == 24


def test_dims_zero_is_a_scalar_as_mindspore_reads_it(ms, tmp_path):
    """A float32 record with dims [0] and 4 content bytes (MindSpore 2.9 writes a scalar with no dims, strings and
    older files with [0]): load_checkpoint gives a scalar, and so must the reader. Mutant: entries__mutmut_4 (dims
    [0] kept: shape (0,) needs 0 bytes, the record holds 4)."""
    # 0a 16 | 0a 01 's' | 12 11 | 08 00 | 12 07 'Float32' | 1a 04 | 2.5 as float32 = 2 + 22 = 24 bytes
    path = tmp_path / "scalar.ckpt"
    path.write_bytes(b"\x0a\x16\x0a\x01s\x12\x11\x08\x00\x12\x07Float32\x1a\x04" + np.float32(2.5).tobytes())
    theirs = ms_load(ms, path)["s"]
    assert theirs.shape == () and theirs.tolist() == 2.5
    with cs.CheckpointReader(path) as reader:
        (entry,) = reader.entries()
        got = reader.read(entry)
    assert entry.shape == () and got.dtype == np.float32 and got.shape == () and got.tolist() == 2.5


# ---- reading: the crc footer -----------------------------------------------------------------


def test_verify_crc_without_a_footer_names_the_file(ms, tmp_path):
    """Mutants: CheckpointReader.verify_crc__mutmut_2 to _8 (the message or the path dropped or changed)."""
    path, _ = ab_file(ms, tmp_path)
    with pytest.raises(InputError) as err:
        cs.CheckpointReader(path, verify_crc=True)
    assert str(err.value) == f"{path}: has no crc footer (it was saved without crc_check=True)"


def test_verify_crc_reads_the_data_in_blocks(ms, tmp_path, monkeypatch):
    """COPY_BLOCK made 64 bytes: a 60-byte data part is read in one block, a longer one in several; the crc is
    carried from block to block and stops at the footer. Mutants: verify_crc__mutmut_24 (data_end + pos: the
    last block runs into the footer), _38 (crc32 of each block alone), _39 (pos = len(block): never ends)."""
    monkeypatch.setattr(cs, "COPY_BLOCK", 64)
    path = tmp_path / "crc.ckpt"
    ms_save(ms, path, {"x": np.arange(100, dtype=np.float32), **AB}, crc_check=True)
    data = path.read_bytes()
    assert data[-17:-10] == b"crc_num" and int.from_bytes(data[-10:], "big") == zlib.crc32(data[:-17])
    with cs.CheckpointReader(path, verify_crc=True) as reader:
        assert reader.crc == zlib.crc32(data[:-17])


def test_verify_crc_of_a_file_that_shrank_names_the_byte(ms, tmp_path, monkeypatch):
    """Mutants: verify_crc__mutmut_26 to _33 (the message, path or offset dropped or changed)."""
    monkeypatch.setattr(cs, "COPY_BLOCK", 64)
    path = tmp_path / "crc.ckpt"
    ms_save(ms, path, {"x": np.arange(100, dtype=np.float32)}, crc_check=True)
    with cs.CheckpointReader(path) as reader:
        os.truncate(path, 100)  # blocks 0..64 and 64..100, then nothing
        with pytest.raises(cs.CheckpointFormatError) as err:
            reader.verify_crc()
    assert str(err.value) == f"{path}: at byte 100: file shrank while checking its crc"
    assert err.value.offset == 100


def test_a_crc_mismatch_names_the_file_and_both_values(ms, tmp_path):
    """The footer changed, the data not: the message gives the footer's value and zlib's crc32 of the data.
    Mutants: verify_crc__mutmut_43, _45 (the path dropped)."""
    path = tmp_path / "crc.ckpt"
    ms_save(ms, path, AB, crc_check=True)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    said, real = int.from_bytes(data[-10:], "big"), zlib.crc32(bytes(data[:-17]))
    with pytest.raises(InputError) as err:
        cs.CheckpointReader(path, verify_crc=True)
    assert str(err.value) == (
        f"{path}: crc32 mismatch: the footer says {said:#010x}, the data gives {real:#010x}; the file is damaged"
    )


# ---- bfloat16 and float conversions ------------------------------------------------------------


def test_bfloat16_bits_come_back_as_uint16():
    """Mutant: float32_to_bfloat16_bits__mutmut_4 (astype(None): the same numbers as float64)."""
    bits = cs.float32_to_bfloat16_bits(np.float32([1.0, -2.5, np.nan]))
    assert bits.dtype == np.uint16
    assert bits.tolist() == [0x3F80, 0xC020, 0x7FC0]  # 1.0 = 0x3f800000, -2.5 = 0xc0200000, NaN -> 0x7fc0


# ---- writing: add_stream and _stream_records (session i24w) -------------------------------------


def bounded(real, limit: int, calls: list, name: str, loop: str):
    """`real`, each call's arguments appended to `calls`, failing once there are more than `limit` of them: a mutant
    whose `loop` never ends then stops its test at once instead of running until mutmut's timeout (or, writing,
    until the disk is full)."""

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) > limit:
            raise AssertionError(f"{name} called over {limit:,} times: a {loop} loop that does not end")
        return real(*args, **kwargs)

    return call


@pytest.fixture
def bounded_writes(monkeypatch):
    """CheckpointStreamWriter._write counted, failing after 1,000 calls (every test here makes far fewer): a mutant
    whose record loop never ends would otherwise spin until mutmut's timeout (an empty slice of the block written again
    and again: CheckpointStreamWriter._stream_records__mutmut_19, _20) or write until the disk is full (a header of a
    record with no bytes written again and again: _21)."""
    calls = []
    monkeypatch.setattr(
        cs.CheckpointStreamWriter, "_write", bounded(cs.CheckpointStreamWriter._write, 1000, calls, "_write", "record")
    )
    return calls


def ms_record(name: str, dims, tensor_type: str, content: bytes) -> bytes:
    """One record as MindSpore serializes it (its own checkpoint_pb2, as save_checkpoint uses it), for record sizes
    save_checkpoint cannot be made to cut."""
    from mindspore.train.checkpoint_pb2 import Checkpoint

    checkpoint = Checkpoint()
    value = checkpoint.value.add()
    value.tag = name
    value.tensor.dims.extend(dims)
    value.tensor.tensor_type = tensor_type
    value.tensor.tensor_content = content
    return checkpoint.SerializeToString()


@pytest.mark.parametrize("tensor_type", ["Float32", "Float16", "BFloat16", "Int64"])
def test_blocks_of_every_kind_and_size_make_the_records_save_checkpoint_writes(
    ms, tmp_path, monkeypatch, bounded_writes, tensor_type
):
    """A 2,640-byte tensor streamed in blocks of every kind add_stream takes: an array of the tensor's own type
    (MindSpore's numpy bfloat16 has no buffer format, so it cannot go through memoryview), an empty bytes, bytes across
    the first record boundary (1,024), a uint8 array in Fortran order (not C-contiguous) across the second (2,048), a
    2-d uint8 array, a memoryview. MindSpore's SLICE_SIZE made 1 (1 KiB records) and the writer's record_bytes 1,024:
    the file is save_checkpoint's (records of 1,024, 1,024 and 592 bytes) and load_checkpoint gives the tensor back.
    Mutants: CheckpointStreamWriter._stream_records__mutmut_6 (every block through numpy: b"" becomes one byte), _7
    (every block through memoryview: the Fortran-order block is refused), _12 (the two ways swapped), _15
    (reshape(None): a 2-d block sliced by rows), _19, _20 (no record ever opened: bounded_writes stops them)."""
    from mindspore.train import serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)
    rng = np.random.default_rng(24)
    itemsize = 8 if tensor_type == "Int64" else 4 if tensor_type == "Float32" else 2
    values = rng.standard_normal((2640 // (33 * itemsize), 33)).astype(np.float32)
    typed = {
        "Float32": values,
        "Float16": values.astype(np.float16),
        "BFloat16": ms.Tensor(values, ms.bfloat16).asnumpy(),
        "Int64": (values * 1e6).astype(np.int64),
    }[tensor_type]
    raw = typed.reshape(-1).view(np.uint8)
    assert raw.size == 2640 and typed.dtype.itemsize == itemsize
    blocks = [
        typed.reshape(-1)[: 1016 // itemsize],  # bytes 0-1016
        b"",
        bytes(raw[1016:1030]),
        np.asfortranarray(raw[1030:1630].reshape(20, 30)),
        raw[1630:2630].reshape(10, 100),
        memoryview(bytearray(raw[2630:])),  # the last 10 bytes
    ]
    assert not blocks[3].flags.c_contiguous
    assert b"".join(np.ascontiguousarray(b).tobytes() if isinstance(b, np.ndarray) else bytes(b) for b in blocks) == (
        raw.tobytes()
    )
    ours = tmp_path / "ours.ckpt"
    with cs.CheckpointStreamWriter(ours, record_bytes=1024) as writer:
        writer.add_stream("t", typed.shape, tensor_type, blocks)
        writer.add("after", AB["a"])
        writer.close()
    ms_save(ms, tmp_path / "theirs.ckpt", {"t": typed, "after": AB["a"]})
    assert ours.read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()
    back = ms.load_checkpoint(str(ours))
    assert str(back["t"].dtype) == tensor_type and back["t"].shape == typed.shape
    assert back["t"].asnumpy().tobytes() == raw.tobytes()


def test_a_tensor_with_no_elements_is_one_record_with_no_content(ms, tmp_path, bounded_writes):
    """A Float32 [2, 0] tensor from no blocks, then a: save_checkpoint writes no record for it (the tensor is lost), the
    writer one whose content is empty. Counted by hand:
    0a 14 | 0a 01 'e' | 12 0f | 08 02 08 00 | 12 07 'Float32' | 1a 00 = 2 + 20 = 22 bytes;
    a's record is save_checkpoint's. load_checkpoint gives e back as a float32 [2, 0]. Mutants:
    CheckpointStreamWriter._stream_records__mutmut_51 (the record written for one-byte tensors instead), _52 to _61 (its
    header None, or its name, dims, type or content size dropped or wrong)."""
    ours = tmp_path / "ours.ckpt"
    with cs.CheckpointStreamWriter(ours) as writer:
        writer.add_stream("e", (2, 0), "Float32", [])
        writer.add("a", AB["a"])
        writer.close()
    ms_save(ms, tmp_path / "a.ckpt", {"a": AB["a"]})
    e = b"\x0a\x14\x0a\x01e\x12\x0f\x08\x02\x08\x00\x12\x07Float32\x1a\x00"
    assert ours.read_bytes() == e + (tmp_path / "a.ckpt").read_bytes()
    back = ms_load(ms, ours)
    assert list(back) == ["e", "a"]
    assert back["e"].dtype == np.float32 and back["e"].shape == (2, 0)
    assert back["a"].tolist() == [1, 2]


def test_a_stream_that_ends_short_is_refused_in_full_and_undone(ms, tmp_path, bounded_writes):
    """x is a float32 [4] (16 bytes) in records of 8. No blocks at all, then 8 bytes (a whole record, nothing owed to
    it): both refused with the whole message, the file cut back to a's record; x then written whole under the same name.
    Expected: MindSpore's serializer for each record, load_checkpoint for the values. Mutants:
    CheckpointStreamWriter._stream_records__mutmut_46 (`and in_record`: a stream ending on a record boundary passes for
    whole), CheckpointStreamWriter.add_stream__mutmut_24 (the failed name left as seen: the retry is refused as written
    twice)."""
    path = tmp_path / "out.ckpt"
    x = np.float32([1.5, -2, 3.25, 4])
    raw = x.view(np.uint8)
    with cs.CheckpointStreamWriter(path, record_bytes=8) as writer:
        writer.add("a", AB["a"])
        for blocks, got in (([], 0), ([raw[:8]], 8)):
            with pytest.raises(ValueError) as err:
                writer.add_stream("x", (4,), "Float32", blocks)
            assert str(err.value) == f"x: got {got:,} bytes for Float32[4], which needs 16"
            assert writer.bytes_written == 28 and os.fstat(writer.fd).st_size == 28  # a's record (counted above)
            assert writer.names == ["a"]
        writer.add_stream("x", (4,), "Float32", [raw[:8], raw[8:]])
        writer.close()
    a = ms_record("a", [2], "Float32", AB["a"].tobytes())
    x_records = ms_record("x", [4], "Float32", raw[:8].tobytes()) + ms_record("x", [4], "Float32", raw[8:].tobytes())
    assert path.read_bytes() == a + x_records
    assert ms_load(ms, path)["x"].tolist() == x.tolist()


def test_a_stream_with_bytes_to_spare_is_refused_in_full_and_undone(ms, tmp_path, bounded_writes):
    """y is a float32 [2] (8 bytes) in records of 4. One byte more, in a block of its own (after a record was filled:
    nothing owed) or at the end of the last block: refused with the whole message, the file cut back to empty; then y
    whole from blocks of 3, 2 and 3 bytes (the first two records straddled). Expected: MindSpore's serializer for the
    two records, load_checkpoint for the values. Mutants: CheckpointStreamWriter._stream_records__mutmut_21 (`written >
    nbytes`: an endless run of headers for records of no bytes; bounded_writes stops it), _19, _20."""
    path = tmp_path / "out.ckpt"
    y = np.float32([1.5, -2])
    raw = y.view(np.uint8)
    with cs.CheckpointStreamWriter(path, record_bytes=4) as writer:
        for blocks in ([raw[:2], raw[2:5], raw[5:], b"\x00"], [raw[:3], raw[3:].tobytes() + b"\x00"]):
            with pytest.raises(ValueError) as err:
                writer.add_stream("y", (2,), "Float32", blocks)
            assert str(err.value) == "y: more than 8 bytes for Float32[2]"
            assert writer.bytes_written == 0 and os.fstat(writer.fd).st_size == 0
        writer.add_stream("y", (2,), "Float32", [raw[:3], raw[3:5], raw[5:]])
        writer.close()
    assert path.read_bytes() == ms_record("y", [2], "Float32", raw[:4].tobytes()) + ms_record(
        "y", [2], "Float32", raw[4:].tobytes()
    )
    assert ms_load(ms, path)["y"].tolist() == y.tolist()


def test_a_failed_stream_leaves_a_hashing_writer_writing_but_without_a_digest(ms, tmp_path, bounded_writes):
    """sha256=True, a, then x fails after its first block was hashed: b is still written (unhashed), and close() refuses
    a digest with the whole message. The file is save_checkpoint's for a and b. Mutants:
    CheckpointStreamWriter.add_stream__mutmut_26 (the hash set to "": writing b calls "".update), _27 (no reason kept:
    close() returns None as if no digest had been asked for)."""
    path = tmp_path / "out.ckpt"
    writer = cs.CheckpointStreamWriter(path, sha256=True)
    with writer:
        writer.add("a", AB["a"])
        with pytest.raises(ValueError, match="needs 16"):
            writer.add_stream("x", (4,), "Float32", [b"12345678"])
        writer.add("b", AB["b"])
        with pytest.raises(RuntimeError) as err:
            writer.close()
    assert str(err.value) == f"{path}: no sha256: add_stream('x') failed after hashing part of it"
    ms_save(ms, tmp_path / "theirs.ckpt", AB)
    assert path.read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()


def test_a_failed_stream_under_drop_cache_moves_the_window_back(ms, tmp_path, monkeypatch, bounded_writes):
    """drop_cache, CACHE_WINDOW made 20 bytes: a (20-byte header, 8 bytes), x (20-byte header, 8 of its 16 bytes, then
    refused), b (20-byte header, 12 bytes). Worked out by hand: at 20 the window [0, 20) is due; at 48 (x's header) the
    pending [0, 20) again, then [20, 48); x fails, the file is cut back to 28, the next window starts there and nothing
    is pending; at 48 (b's header) [28, 48) alone; close: (0, 0). The file is save_checkpoint's. Mutant:
    CheckpointStreamWriter.add_stream__mutmut_39 (the window start set to None: the next write fails on None)."""
    calls = []
    monkeypatch.setattr(cs, "CACHE_WINDOW", 20)
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: calls.append((offset, length)))
    path = tmp_path / "out.ckpt"
    with cs.CheckpointStreamWriter(path, drop_cache=True) as writer:
        writer.add("a", AB["a"])
        with pytest.raises(ValueError, match="needs 16"):
            writer.add_stream("x", (4,), "Float32", [b"12345678"])
        writer.add("b", AB["b"])
        writer.close()
    assert calls == [(0, 20), (0, 20), (20, 28), (28, 20), (0, 0)]
    ms_save(ms, tmp_path / "theirs.ckpt", AB)
    assert path.read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()


# ---- the writer's verbatim copy ----------------------------------------------------------------


@pytest.fixture
def bounded_io(monkeypatch):
    """os.copy_file_range and os.preadv, counted, failing after 1,000 calls: a mutant whose copy loop never
    ends (pos = n) would otherwise fill the disk before mutmut's timeout (one did: 48 GB in a minute)."""
    calls = {"copy_file_range": [], "preadv": []}
    for name in calls:
        monkeypatch.setattr(os, name, bounded(getattr(os, name), 1000, calls[name], f"os.{name}", "copy"))
    return calls


@pytest.mark.parametrize("copy_file_range", [True, False])
def test_copied_records_are_the_source_bytes(ms, tmp_path, monkeypatch, bounded_io, copy_file_range):
    """Records a (bytes 0-28) and b (28-60) copied verbatim, through copy_file_range or, in 20-byte blocks,
    through memory: the same 60 bytes, and bytes_written counts them. Mutants: CheckpointStreamWriter.copy__mutmut_9,
    _10 (copy_file_range's arguments garbled: it fails and the copy falls back to memory), _22 (pos = n: never
    ends), _24, _25 (bytes_written = n, -= n), _57 (end + pos: a block reads into the next record), _67 (pos = n)."""
    monkeypatch.setattr(cs, "COPY_BLOCK", 20)
    path, data = ab_file(ms, tmp_path)
    with cs.CheckpointReader(path) as reader:
        entries = list(reader.entries())
        assert [(e.start, e.end) for e in entries] == [(0, B_START), (B_START, B_END)]
        with cs.CheckpointStreamWriter(tmp_path / "out.ckpt", copy_file_range=copy_file_range) as writer:
            for entry in entries:
                writer.copy(reader, entry)
            assert writer.bytes_written == B_END
            assert writer.use_copy_file_range is copy_file_range  # it did not fall back
            writer.close()
    assert (tmp_path / "out.ckpt").read_bytes() == data
    assert len(bounded_io["copy_file_range" if copy_file_range else "preadv"]) > 0


def test_a_copy_through_memory_takes_a_last_block_of_one_byte(ms, tmp_path, monkeypatch, bounded_io):
    """Record b is 32 bytes: blocks of 31 and 1. Mutant: copy__mutmut_59 (n <= 1 taken for the end of file)."""
    monkeypatch.setattr(cs, "COPY_BLOCK", 31)
    path, data = ab_file(ms, tmp_path)
    with cs.CheckpointReader(path) as reader:
        b = list(reader.entries())[1]
        with cs.CheckpointStreamWriter(tmp_path / "out.ckpt", copy_file_range=False) as writer:
            writer.copy(reader, b)
            writer.close()
    assert (tmp_path / "out.ckpt").read_bytes() == data[B_START:]


@pytest.mark.parametrize("copy_file_range", [True, False])
def test_a_copy_from_a_file_cut_after_its_scan_names_the_tensor_and_byte(ms, tmp_path, bounded_io, copy_file_range):
    """The base is cut at byte 48 (inside b's content) after its headers were read: the copy stops there with the
    tensor's name and the byte. Mutants: copy__mutmut_15 (n == 1: copy_file_range's 0 at the end is not seen, the
    loop never ends), _16 to _21, _58 (n < 0: preadv's 0 is not seen), _60 to _65 (message, path or byte
    dropped)."""
    path, _ = ab_file(ms, tmp_path)
    with cs.CheckpointReader(path) as reader:
        b = list(reader.entries())[1]
        os.truncate(path, B_CONTENT)
        with cs.CheckpointStreamWriter(tmp_path / "out.ckpt", copy_file_range=copy_file_range) as writer:
            with pytest.raises(cs.CheckpointFormatError) as err:
                writer.copy(reader, b)
    assert str(err.value) == f"{path}: at byte {B_CONTENT}: truncated: tensor 'b' ends early"
    assert err.value.offset == B_CONTENT


def test_copy_falls_back_to_memory_once_and_says_why(ms, tmp_path, monkeypatch, caplog):
    """copy_file_range refused (another filesystem: EXDEV): the first copy logs why and goes through memory, and
    so does every later one without asking again. Mutants: copy__mutmut_26 to _31 (the log line), _33 (the
    fallback not remembered: copy_file_range tried again for every tensor)."""
    tried = []

    def refuse(*args):
        tried.append(args)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    path, data = ab_file(ms, tmp_path)
    with caplog.at_level(logging.INFO, logger="tunebox.checkpoint"), cs.CheckpointReader(path) as reader:
        with cs.CheckpointStreamWriter(tmp_path / "out.ckpt") as writer:
            for entry in reader.entries():
                writer.copy(reader, entry)
            writer.close()
    assert (tmp_path / "out.ckpt").read_bytes() == data
    assert len(tried) == 1
    assert [r.getMessage() for r in caplog.records if r.name == "tunebox.checkpoint"] == [
        "copy_file_range unavailable ([Errno 18] Invalid cross-device link); copying through memory"
    ]


# ---- the merge -------------------------------------------------------------------------------

LA, LB = "l.mindpet_delta_lora_a", "l.mindpet_delta_lora_b"
# W + (alpha / r) * B @ A with alpha 2, r 1, by hand: B @ A = [[1, 0], [2, 0]], so W' = [[3, 2], [7, 4]]
W = np.float32([[1, 2], [3, 4]])
LORA = {LA: np.float32([[1, 0]]), LB: np.float32([[1], [2]])}
MERGED = np.float32([[3, 2], [7, 4]])
BASE = {
    "emb": np.arange(300, dtype=np.float32),  # 1,200 bytes: the bar's total passes 1,000 and is scaled
    "l.weight": W,
    "norm": np.float32([0.5, 0.25]),
    "step": np.int32([7]),
}


def merge_files(ms, tmp_path, base=None, lora=None):
    ms_save(ms, tmp_path / "base.ckpt", BASE if base is None else base)
    ms_save(ms, tmp_path / "lora.ckpt", LORA if lora is None else lora)
    return tmp_path / "base.ckpt", tmp_path / "lora.ckpt"


def test_merge_with_its_defaults(ms, tmp_path, monkeypatch, capsys, caplog):
    """merge_streaming with only its required arguments: scale 1, a progress bar over the base's bytes, no
    sha256, pages dropped, tensors copied with copy_file_range; the kill point once, after the middle tensor; the
    stats and the log line. Mutants: merge_streaming__mutmut_1 to _5 (the defaults), _24, _26, _92, _96 (the
    reader's or the writer's drop_cache lost), _93 (copy_file_range=None), _67, _69, _71 to _73, _75 to _79, _81 to
    _85, _87, _170, _171 (the bar: total, unit, scaling, label, shown, advanced), _172, _174 to _177 (the kill
    point: where and its name), _181, _184 to _186, _195, _197 to _201 (the stats), _202 to _217 (the log line);
    _drop_pages__mutmut_1, _5, _6 (posix_fadvise never called); MergeStats.to_dict__mutmut_1."""
    base, lora = merge_files(ms, tmp_path)
    fadvise, copies, kills = [], [], []
    real_copy = os.copy_file_range

    def copy_file_range(*args):
        copies.append(args)
        return real_copy(*args)

    def kill_point(name):  # what the part file holds when the kill point is reached
        (part,) = tmp_path.glob(".out.ckpt.*")
        with cs.CheckpointReader(part) as partial:
            kills.append((name, [e.name for e in partial.entries()]))

    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: fadvise.append((offset, length)))
    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    monkeypatch.setattr(cs, "kill_point", kill_point)
    out = tmp_path / "out.ckpt"
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="tunebox.checkpoint"):
        stats = cs.merge_streaming(base, lora, out, 2, 1)
    elapsed = time.perf_counter() - started

    got = ms_load(ms, out)
    np.testing.assert_array_equal(got["l.weight"], MERGED)
    for name in ("emb", "norm", "step"):
        assert got[name].tobytes() == BASE[name].tobytes() and got[name].dtype == BASE[name].dtype
    size = base.stat().st_size
    assert stats.to_dict() == {
        "out": str(out),
        "tensors": 4,
        "merged": 1,
        "bytes_read": size,  # the base has no crc footer: every byte is a record
        "bytes_written": out.stat().st_size,
        "seconds": stats.seconds,
        "sha256": None,
    }
    # rounded to the millisecond: up to 0.0005 s over the time measured around the call (0.0038 s gave 0.004)
    assert isinstance(stats.seconds, float) and 0 <= stats.seconds <= elapsed + 0.0005
    assert stats.seconds == round(stats.seconds, 3)
    assert out.stat().st_size == size  # float32 in, float32 out: the same record sizes
    assert kills == [("merge.mid-checkpoint", ["emb", "l.weight", "norm"])]  # entries[4 // 2] is "norm"
    assert copies  # emb, norm and step went through copy_file_range
    # the reader drops each tensor's records once read or copied (their lengths add up to the file), the writer
    # its whole file at close
    assert sorted(fadvise)[0] == (0, 0) and sum(length for _, length in fadvise) == size and len(fadvise) == 5
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    # tqdm: "merge base.ckpt: 100%|...| 1.30k/1.30k [00:00<00:00, 251kB/s]", bytes in units of 1,024
    assert bar.startswith("merge base.ckpt: 100%") and f"| {size / 1024:.2f}k/{size / 1024:.2f}k [" in bar, bar
    assert bar.endswith("B/s]"), bar
    assert [r.getMessage() for r in caplog.records if r.name == "tunebox.checkpoint"] == [
        f"merged 1 of 4 tensors into {out}: 0.00 GB in {stats.seconds:.1f} s"
    ]


def test_merge_without_copy_file_range_or_a_bar(ms, tmp_path, monkeypatch, capsys):
    """Mutants: merge_streaming__mutmut_97 (the writer built without copy_file_range=: its default, True), _82
    (the bar without disable=: shown with progress=False)."""

    def refuse(*args):
        raise AssertionError("copy_file_range called")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    base, lora = merge_files(ms, tmp_path)
    capsys.readouterr()
    cs.merge_streaming(base, lora, tmp_path / "out.ckpt", 2, 1, progress=False, copy_file_range=False)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(ms_load(ms, tmp_path / "out.ckpt")["l.weight"], MERGED)


def test_merge_writes_a_tensor_in_the_type_out_types_names(ms, tmp_path):
    """out_types names emb only: emb comes out as MindSpore's bfloat16 of its values, the rest as they were.
    Mutant: merge_streaming__mutmut_99 (out_types looked up under None)."""
    base, lora = merge_files(ms, tmp_path)
    cs.merge_streaming(base, lora, tmp_path / "out.ckpt", 2, 1, progress=False, out_types={"emb": "BFloat16"})
    got = ms_load(ms, tmp_path / "out.ckpt")
    assert got["emb"].tobytes() == BASE["emb"].astype(cs.bfloat16()).tobytes()
    assert got["norm"].dtype == np.float32 and got["l.weight"].dtype == np.float32


def merge_error(ms, tmp_path, base=None, lora=None) -> str:
    base_path, lora_path = merge_files(ms, tmp_path, base, lora)
    with pytest.raises(InputError) as err:
        cs.merge_streaming(base_path, lora_path, tmp_path / "out.ckpt", 2, 1, progress=False)
    assert not (tmp_path / "out.ckpt").exists()
    return str(err.value)


def test_merge_refusals_name_the_file(ms, tmp_path):
    """Each refusal's whole text, the file it is about first. Mutants: merge_streaming__mutmut_20 (lora_pairs told
    no file), _38, _40 (a weight the base lacks: no file), _43 to _46 (an integer weight), _49 (`and` for `or`: a
    3-d A passes), _61, _63 (the shape refusal: no file)."""
    base, lora = tmp_path / "base.ckpt", tmp_path / "lora.ckpt"
    assert merge_error(ms, tmp_path, lora={LA: LORA[LA]}) == f"{lora}: {LA} has no matching {LB}"
    other = {"m.mindpet_delta_lora_a": LORA[LA], "m.mindpet_delta_lora_b": LORA[LB]}
    assert merge_error(ms, tmp_path, lora=other) == (
        f"{base}: {lora} adapts m.weight, which this base checkpoint does not have (LoRA trained on another model?)"
    )
    assert merge_error(ms, tmp_path, base={**BASE, "l.weight": np.int32([[1, 2], [3, 4]])}) == (
        f"{base}: l.weight is Int32; LoRA merges need a float weight"
    )
    three_d = {LA: np.float32([[[1], [0]]]), LB: LORA[LB]}  # A [1, 2, 1]: a[1] = 2 and b[1] = a[0] = 1 all the same
    assert merge_error(ms, tmp_path, lora=three_d) == (
        f"{lora}: l.weight is [2, 2] but its LoRA B[2, 1] @ A[1, 2, 1] does not make that shape"
    )


def test_a_base_holding_a_tensor_twice_is_refused(ms, tmp_path):
    """Records a, b, a (the two layouts counted above, a written again at byte 60). Mutants: merge_streaming__
    mutmut_31 to _34 (the message or the file dropped)."""
    _, data = ab_file(ms, tmp_path)
    base = tmp_path / "twice.ckpt"
    base.write_bytes(data + data[:B_START])
    ms_save(ms, tmp_path / "lora.ckpt", LORA)
    with pytest.raises(InputError) as err:
        cs.merge_streaming(base, tmp_path / "lora.ckpt", tmp_path / "out.ckpt", 2, 1, progress=False)
    assert str(err.value) == f"{base}: tensor 'a' appears twice (bytes 0 and 60)"


def test_lora_pairs_refusals(tmp_path):
    """Mutants: lora_pairs__mutmut_11, _13 (A without B: no file), _18 (a B without its A not looked for), _22 to
    _26 (B without A: message or file), _28 to _31 (no pairs at all)."""
    where = tmp_path / "lora.ckpt"
    cases = [
        ({LA: 1}, f"{LA} has no matching {LB}"),
        ({**LORA, "m.mindpet_delta_lora_b": 1}, "m.mindpet_delta_lora_b has no matching m.mindpet_delta_lora_a"),
        ({"l.weight": 1}, "no LoRA matrices (names ending in mindpet_delta_lora_a / mindpet_delta_lora_b)"),
    ]
    for lora, message in cases:
        with pytest.raises(InputError) as err:
            cs.lora_pairs(lora, where)
        assert str(err.value) == f"{where}: {message}"
    assert cs.lora_pairs(LORA, where) == {"l.weight": (LA, LB)}


def test_a_bfloat16_merge_never_asks_for_mindspores_bfloat16(ms, tmp_path, monkeypatch):
    """fold_lora converts bfloat16 itself (the merge must not load MindSpore: test_checkpoint's subprocess test,
    which mutmut cannot run). Expected: MindSpore's bfloat16 of the float32 sum, W and B @ A exact in bfloat16.
    Mutants: fold_lora__mutmut_26, _28 to _30 (bf16 not recognized: numpy_dtype("BFloat16") loads MindSpore)."""
    bf16 = cs.bfloat16()
    w_bits = W.astype(bf16).view(np.uint16)
    monkeypatch.setattr(cs, "bfloat16", lambda: (_ for _ in ()).throw(AssertionError("MindSpore's bfloat16 asked")))
    out = cs.fold_lora(w_bits.reshape(-1).view(np.uint8), "BFloat16", (2, 2), LORA[LA], LORA[LB], 2.0)
    assert out.dtype == np.uint16 and out.shape == (2, 2)
    assert out.tobytes() == MERGED.astype(bf16).tobytes()


def test_fold_lora_in_float16_over_several_slices(monkeypatch):
    """_FOLD_SLICE made 3: a 2 x 4 float16 weight is folded in slices of 3, 3 and 2. Expected: numpy's float16 of
    W + 2 * B @ A, worked out above (W' for the first two columns, the last two unchanged). Mutants:
    fold_lora__mutmut_44, _45 (the slices start at flat.size, or stop after one slice's worth)."""
    monkeypatch.setattr(cs, "_FOLD_SLICE", 3)
    w = np.float16([[1, 2, 9, 10], [3, 4, 11, 12]])
    a = np.float32([[1, 0, 0, 0]])
    out = cs.fold_lora(w.reshape(-1).view(np.uint8), "Float16", (2, 4), a, LORA[LB], 2.0)
    assert out.dtype == np.float16
    assert out.tolist() == [[3, 2, 9, 10], [7, 4, 11, 12]]


def test_in_memory_merge_by_hand():
    """merge_lora_into_base: the default scale is 1; its refusals' whole text. Mutants: lora.merge_lora_into_base__
    mutmut_1 (scale 2), _8 (message), _10, _11 (B[2, 1] with A[2, 2] taken for a match), _12 (a 3-d A taken),
    _23 to _26 (message)."""
    merged = merge_lora_into_base({"l.weight": W, "norm": BASE["norm"]}, LORA, alpha=2, rank=1)
    np.testing.assert_array_equal(merged["l.weight"], MERGED)
    assert merged["norm"] is BASE["norm"]
    with pytest.raises(ValueError) as err:
        merge_lora_into_base({"norm": BASE["norm"]}, LORA, 2, 1)
    assert str(err.value) == "LoRA targets l.weight, which the base checkpoint does not have"
    for a, shape in ((np.float32([[1, 0], [0, 1]]), "[2, 2]"), (np.float32([[[1], [0]]]), "[1, 2, 1]")):
        with pytest.raises(ValueError) as err:
            merge_lora_into_base({"l.weight": W}, {LA: a, LB: LORA[LB]}, 2, 1)
        assert str(err.value) == f"l.weight: LoRA B[2, 1] @ A{shape} does not match weight [2, 2]"


def ms_load(ms, path) -> dict:
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


def test_convert_float_bits_between_every_pair_of_float_types():
    """BFloat16 bits in and out (uint16), float16 and float32 through numpy's casts; expected: MindSpore's numpy
    bfloat16 and numpy's astype. Mutants: convert_float_bits__mutmut_6, _9 to _11 (BFloat16 input not read as
    bits), _19, _24 (the output array's type), _35, _37, _39 to _41 (BFloat16 input not widened), _46 (every
    output rounded to bfloat16)."""
    bf16 = cs.bfloat16()
    values = np.float32([1.0, -2.5, 3.140625, 60000.0, 1e-3, -0.0])
    kinds = {
        "Float32": values,
        "Float16": values.astype(np.float16),
        "BFloat16": values.astype(bf16),
    }
    for src, array in kinds.items():
        raw = array.reshape(-1).view(np.uint8)
        for dst, dtype in (("Float32", np.float32), ("Float16", np.float16), ("BFloat16", bf16)):
            got = cs.convert_float_bits(raw, src, dst)
            want = array.astype(np.float32).astype(dtype)  # bfloat16 and float16 widen to float32 exactly
            assert got.dtype == (np.uint16 if dst == "BFloat16" else dtype), (src, dst)
            assert got.tobytes() == want.tobytes(), (src, dst)


# ---- unknown protobuf fields -------------------------------------------------------------------


def test_unknown_fields_of_every_wire_type_are_skipped_as_protobuf_skips_them(ms, tmp_path):
    """A record written by hand with fields MindSpore's proto does not define, of each wire type (varint, 64-bit,
    length-delimited, 32-bit), in the Value and in the TensorProto: protobuf (MindSpore's load_checkpoint) skips
    them, and so must the reader. A start-group field (wire type 3) is refused with its byte. Mutants:
    _Headers.skip_field__mutmut_1 to _29 (no test before: nothing wrote unknown fields); _4 and _20 (what=None)
    by an unknown field whose varint, or whose length, runs on for 10 bytes."""
    tensor = (
        b"\x08\x02"  # dims: 2
        + b"\x20\x96\x01"  # field 4, varint 150
        + b"\x12\x07Float32"
        + b"\x29\x00\x01\x02\x03\x04\x05\x06\x07"  # field 5, 64-bit
        + b"\x35\x01\x02\x03\x04"  # field 6, 32-bit
        + b"\x3a\x03abc"  # field 7, length-delimited
        + b"\x1a\x08\x00\x00\xc0\x3f\x00\x00\x00\xc0"  # content: float32 1.5 and -2, little-endian
    )
    value = (
        b"\x0a\x01x"
        + b"\x48\x96\x01"  # field 9, varint
        + b"\x51\x00\x00\x00\x00\x00\x00\x00\x00"  # field 10, 64-bit
        + b"\x5d\x00\x00\x00\x00"  # field 11, 32-bit
        + b"\x62\x02hi"  # field 12, length-delimited
        + bytes([0x12, len(tensor)])
        + tensor
    )
    path = tmp_path / "unknown.ckpt"
    path.write_bytes(b"\x0a" + bytes([len(value)]) + value)
    theirs = ms.load_checkpoint(str(path))["x"].asnumpy()
    ours = cs.load_checkpoint_numpy(path)["x"]
    assert theirs.tolist() == [1.5, -2.0]
    assert ours.dtype == np.float32 and ours.tolist() == [1.5, -2.0]

    group = b"\x0a\x01x\x6b" + b"\x12" + bytes([len(tensor)]) + tensor  # field 13, wire type 3: its key is byte 5
    bad = tmp_path / "group.ckpt"
    bad.write_bytes(b"\x0a" + bytes([len(group)]) + group)
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(bad)
    assert str(err.value) == f"{bad}: at byte 6: unexpected protobuf wire type 3 in record 0"
    assert err.value.offset == 6
    for key in (b"\x48", b"\x62"):  # field 9 as a varint, field 12 length-delimited: 10 bytes with the top bit set
        endless = b"\x0a\x01x" + key + b"\xff" * 10 + bytes([0x12, len(tensor)]) + tensor
        bad.write_bytes(b"\x0a" + bytes([len(endless)]) + endless)
        with pytest.raises(cs.CheckpointFormatError) as err:
            cs.load_checkpoint_numpy(bad)
        assert str(err.value) == f"{bad}: at byte 6: malformed varint in record 0", key


# ---- safetensors -----------------------------------------------------------------------------


def test_safetensors_file_byte_by_byte(ms, tmp_path, capsys):
    """a [2] and b [3] float32 as safetensors, written out by hand: 8 bytes of header length (144, little-endian),
    the header in compact JSON with MindSpore's {"format": "ms"} metadata, padded with 5 spaces to a multiple of 8,
    then the 20 data bytes; no bar unless asked, then one counting tensors. Mutants: write_safetensors__mutmut_1
    (progress on by default), _8 to _11 (the metadata), _35, _37 (JSON with spaces), _66 to _68, _70 to _77 (the
    bar)."""
    path, _ = ab_file(ms, tmp_path)
    header = (
        b'{"__metadata__":{"format":"ms"},'
        b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}     '
    )
    data = AB["a"].tobytes() + AB["b"].tobytes()
    capsys.readouterr()
    assert cs.write_safetensors(path, tmp_path / "ab.safetensors") == 2
    assert capsys.readouterr().err == ""
    assert (tmp_path / "ab.safetensors").read_bytes() == (144).to_bytes(8, "little") + header + data
    cs.write_safetensors(path, tmp_path / "ab2.safetensors", progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert bar.startswith("base as safetensors: 100%") and "| 2/2 [" in bar and bar.endswith("tensor/s]"), bar


def test_a_string_entry_is_refused_with_the_file_named(ms, tmp_path):
    """Mutants: write_safetensors__mutmut_18, _20 (the file dropped from the message)."""
    ckpt = tmp_path / "with_str.ckpt"
    ms.save_checkpoint([{"name": "a", "data": ms.Tensor(AB["a"])}], str(ckpt), append_dict={"note": "x"})
    with pytest.raises(InputError) as err:
        cs.write_safetensors(ckpt, tmp_path / "out.safetensors")
    assert str(err.value) == f"{ckpt}: tensor 'note' is str, which safetensors cannot hold"


# ---- tensor types and dims (runs 40 on) ------------------------------------------------------


def test_an_unknown_tensor_type_is_refused_with_every_supported_one(tmp_path):
    """The whole message, the supported types in _NUMPY_TYPES' order then BFloat16 and str. Mutants:
    numpy_dtype__mutmut_5 to _10 (the message None, the list None, joined by "XX, XX", BFloat16 misspelt)."""
    with pytest.raises(ValueError) as err:
        cs.numpy_dtype("Complex64")
    assert str(err.value) == (
        "tensor type 'Complex64' is not supported (supported: Int8, UInt8, Int16, UInt16, Int32, UInt32, Int64, "
        "UInt64, Float16, Float32, Float64, Bool, BFloat16, str)"
    )


@pytest.mark.parametrize(
    "varint, dim",
    [
        (b"\xff" * 9 + b"\x01", -1),  # 2^64 - 1: all 64 bits set
        (b"\x80" * 9 + b"\x01", -(1 << 63)),  # 2^63: only the top bit
        (b"\xff" * 8 + b"\x7f", (1 << 63) - 1),  # 63 bits set: the largest positive int64
    ],
)
def test_a_dim_is_read_as_a_signed_64_bit_integer(tmp_path, varint, dim):
    """TensorProto's dims are int64 (MindSpore's checkpoint.proto): a varint of 2^63 or more is negative. One
    float32 record, its dim written by hand, and no shape fits its 4 bytes: the error shows the dim as read.
    Expected: int64 by hand (2^64 - 1 is -1, 2^63 is -2^63) and the bytes it needs, dim * 4, in Python ints.
    Mutants: _signed64__mutmut_1 to _10 (never or always made negative, by + or by 2^65, from > or from 2^64)."""
    tensor = b"\x08" + varint + b"\x12\x07Float32" + b"\x1a\x04\x00\x00\x80\x3f"  # content: float32 1.0
    value = b"\x0a\x01x" + b"\x12" + bytes([len(tensor)]) + tensor
    path = tmp_path / "dim.ckpt"
    path.write_bytes(b"\x0a" + bytes([len(value)]) + value)
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    assert str(err.value) == f"{path}: at byte 0: tensor 'x' Float32[{dim}] needs {dim * 4:,} bytes, its records hold 4"


# ---- closing, and the writer's page-cache windows -----------------------------------------------


def test_a_reader_closed_twice_stays_closed(ms, tmp_path):
    """close() then close() again, and the `with` block's own close after an explicit one: no error, and the
    descriptor is marked closed (negative). Mutants: CheckpointReader.close__mutmut_4 (fd None: the second close
    compares None with 0), _5 (fd +1: a later close would close the process's stdout)."""
    path, _ = ab_file(ms, tmp_path)
    with cs.CheckpointReader(path) as reader:
        assert [e.name for e in reader.entries()] == ["a", "b"]
        reader.close()
        assert reader.fd < 0
        reader.close()
        assert reader.fd < 0
    assert reader.fd < 0


def test_the_writer_hands_its_pages_to_the_kernel_window_by_window(ms, tmp_path, monkeypatch):
    """drop_cache with CACHE_WINDOW made 20 bytes, tensors a and b added: the writer writes a's 20-byte record
    header (layout above), a's 8 content bytes, b's 20-byte header, b's 12 bytes. Worked out by hand: after 20
    bytes a window [0, 20) is due: DONTNEED on it (writeback starts); at 48 the next, [20, 48): the pending [0, 20)
    again (now clean, dropped), then [20, 48); the last 12 bytes stay under a window; close: (0, 0), the whole
    file; every call on the writer's descriptor. The file is save_checkpoint's. Mutants:
    CheckpointStreamWriter._cache_hygiene__mutmut_4 (a window due only past 20 bytes), _5 to _7, _10 to _12 (the
    calls' arguments: no descriptor, or none at all), _9 (the window's length counted from 0), _13."""
    calls = []
    monkeypatch.setattr(cs, "CACHE_WINDOW", 20)
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: calls.append(args))
    out = tmp_path / "out.ckpt"
    with cs.CheckpointStreamWriter(out, drop_cache=True) as writer:
        writer.add("a", AB["a"])
        writer.add("b", AB["b"])
        fd = writer.fd
        writer.close()
    dontneed = os.POSIX_FADV_DONTNEED
    assert calls == [(fd, 0, 20, dontneed), (fd, 0, 20, dontneed), (fd, 20, 28, dontneed), (fd, 0, 0, dontneed)]
    ms_save(ms, tmp_path / "theirs.ckpt", AB)
    assert out.read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()


def test_a_writer_left_by_an_exception_closes_its_file(tmp_path):
    """A `with` block ended by an error, close() never called: __exit__ closes the descriptor (fstat on it then
    fails with EBADF) and marks it closed. Mutants: CheckpointStreamWriter.__exit____mutmut_3 (os.close(None)),
    _4 (fd None), _5 (fd +1: a later close() would fsync and close stdout)."""
    with pytest.raises(RuntimeError, match="stop"):
        with cs.CheckpointStreamWriter(tmp_path / "out.ckpt") as writer:
            writer.add("a", AB["a"])
            fd = writer.fd
            raise RuntimeError("stop")
    assert writer.fd < 0
    with pytest.raises(OSError) as err:
        os.fstat(fd)
    assert err.value.errno == errno.EBADF


def test_a_tensor_added_twice_is_refused_and_the_names_kept(tmp_path):
    """An array or a str value (as append_dict's strings are saved) under a name already written is refused; the
    names are kept in order. Mutants: CheckpointStreamWriter._begin__mutmut_2 (message None), _3 (None recorded as
    seen: a repeated name passes), _4 (None listed in place of the name); CheckpointStreamWriter.add__mutmut_3 (a
    str value registered as None)."""
    path = tmp_path / "out.ckpt"
    with cs.CheckpointStreamWriter(path) as writer:
        writer.add("a", AB["a"])
        writer.add("b", AB["b"])
        writer.add("note", "x")
        for name, value in (("a", AB["b"]), ("note", "y"), ("b", "z")):
            with pytest.raises(ValueError) as err:
                writer.add(name, value)
            assert str(err.value) == f"{path}: tensor {name} written twice"
        assert writer.names == ["a", "b", "note"]


def test_bfloat16_itemsize_without_mindspore(monkeypatch):
    """itemsize knows BFloat16 is 2 bytes without MindSpore's numpy bfloat16 (a merge must not load MindSpore).
    Mutants: itemsize__mutmut_1, _5 to _7 (BFloat16 not recognized: numpy_dtype asks for MindSpore's type)."""
    monkeypatch.setattr(cs, "bfloat16", lambda: (_ for _ in ()).throw(AssertionError("MindSpore's bfloat16 asked")))
    assert cs.itemsize("BFloat16") == 2
    assert cs.itemsize("Float16") == 2 and cs.itemsize("Float64") == 8


# ---- reading a tensor's bytes ------------------------------------------------------------------


def test_a_tensor_whose_file_shrank_after_the_scan_names_the_tensor_and_byte(ms, tmp_path, bounded_io):
    """The file cut at byte 52, 4 bytes into b's 12 content bytes (48-60), after the scan: the read gets those 4,
    then nothing, and stops with the tensor's name and byte 52. Mutants: CheckpointReader.read_into__mutmut_16
    (n < 0: preadv's 0 not seen, the loop never ends: bounded_io stops it), _15 (the second read at 48 - 4),
    _18 to _24 (message, path or byte dropped or wrong)."""
    path, _ = ab_file(ms, tmp_path)
    with cs.CheckpointReader(path) as reader:
        b = list(reader.entries())[1]
        assert b.chunks == ((B_CONTENT, 12),)
        os.truncate(path, B_CONTENT + 4)
        with pytest.raises(cs.CheckpointFormatError) as err:
            reader.read(b)
    assert str(err.value) == f"{path}: at byte {B_CONTENT + 4}: truncated: tensor 'b' ends early (file shrank)"
    assert err.value.offset == B_CONTENT + 4


def test_short_reads_over_several_records_and_a_one_byte_tensor(ms, tmp_path, monkeypatch):
    """A float32 [5] tensor in records of 8, 8 and 4 content bytes, read with os.preadv giving at most 3 bytes a
    call (reads may return short), and a uint8 [1] tensor (a read of 1 byte). Expected: MindSpore's
    load_checkpoint of the same file. Mutants: CheckpointReader.read_into__mutmut_13 (the buffer slice from
    pos - done: wrong once a later record's read comes back short), _17 (n <= 1 taken for the end of file), _25,
    _26 (done = n, -= n: a short read makes the loop endless, stopped after 1,000 reads)."""
    path = tmp_path / "slices.ckpt"
    values = np.float32([1.5, -2, 3.25, 4, -5.5])
    with cs.CheckpointStreamWriter(path, record_bytes=8) as writer:
        writer.add("v", values)
        writer.add("u", np.uint8([7]))
        writer.close()
    theirs = ms_load(ms, path)
    assert theirs["v"].tolist() == values.tolist() and theirs["u"].tolist() == [7]
    real = os.preadv
    sizes = []

    def short_preadv(fd, buffers, offset):
        (buf,) = buffers
        sizes.append(len(buf))
        if len(sizes) > 1000:
            raise AssertionError("os.preadv called over 1,000 times: a read loop that does not end")
        return real(fd, [buf[:3]], offset)

    monkeypatch.setattr(os, "preadv", short_preadv)
    with cs.CheckpointReader(path) as reader:
        v, u = list(reader.entries())
        assert [n for _, n in v.chunks] == [8, 8, 4]
        got_v, got_u = reader.read(v), reader.read(u)
    assert got_v.dtype == np.float32 and got_v.tolist() == values.tolist()
    assert got_u.dtype == np.uint8 and got_u.tolist() == [7]
    assert sizes == [8, 5, 2, 8, 5, 2, 4, 1, 1]  # each record's bytes in calls of 3, 3, 2 (4: 3, 1); u's one byte


def test_a_transposed_array_is_written_in_c_order(ms, tmp_path):
    """A 2 x 3 float32 array's transpose (not C-contiguous) added to the writer: the file is the one MindSpore's
    save_checkpoint writes for the same array. Mutant: CheckpointStreamWriter.add__mutmut_21 (copied with order
    "XXCXX": numpy refuses it)."""
    t = np.arange(6, dtype=np.float32).reshape(2, 3).T
    assert not t.flags.c_contiguous
    with cs.CheckpointStreamWriter(tmp_path / "ours.ckpt") as writer:
        writer.add("t", t)
        writer.close()
    ms_save(ms, tmp_path / "theirs.ckpt", {"t": t})
    assert (tmp_path / "ours.ckpt").read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()


# ---- reading: TensorProto fields, varints, the header window (session i24r2) ----------------------


@pytest.fixture
def bounded_varints(monkeypatch):
    """_Headers.varint counted, failing after 10,000 calls: a mutant that walks back over fields it has read
    parses them again for ever, from the header window, without a system call to bound (a few hundred varints
    are read here at most)."""
    monkeypatch.setattr(cs._Headers, "varint", bounded(cs._Headers.varint, 10_000, [], "_Headers.varint", "header"))


def x_record(tensor: bytes) -> bytes:
    """One record by hand: 0a L | 0a 01 'x' (the tag) | 12 M | the TensorProto's bytes, which start at byte 7
    (L and M one byte each: both under 128)."""
    value = b"\x0a\x01x" + b"\x12" + bytes([len(tensor)]) + tensor
    assert len(value) < 128
    return b"\x0a" + bytes([len(value)]) + value


def test_a_missing_checkpoint_is_named(tmp_path):
    """Mutants: CheckpointReader.__init____mutmut_6 to _11 (the message or the file dropped or changed)."""
    path = tmp_path / "missing.ckpt"
    with pytest.raises(InputError) as err:
        cs.CheckpointReader(path)
    assert str(err.value) == f"{path}: no such checkpoint file"


def test_a_crc_footer_alone_is_an_empty_checkpoint(ms, tmp_path, bounded_varints):
    """save_checkpoint of no tensors with crc_check writes the 17-byte footer and nothing else: b"crc_num" and the
    crc32 of no bytes (0, zlib's), 10 bytes big-endian. A file of exactly the footer's size is a footer. 16 bytes
    (shorter than a footer) and 17 bytes whose magic differs ("crc_nul") are data, refused at their first byte
    (0x63, "c"). Mutant: CheckpointReader.__init____mutmut_22 (a footer only in files longer than 17 bytes)."""
    path = tmp_path / "empty.ckpt"
    ms.save_checkpoint([], str(path), crc_check=True)
    assert path.read_bytes() == b"crc_num" + bytes(10) and zlib.crc32(b"") == 0
    with cs.CheckpointReader(path, verify_crc=True) as reader:
        assert (reader.crc, reader.data_end) == (0, 0)
        assert list(reader.entries()) == []
    for data in (b"crc_num" + bytes(9), b"crc_nul" + bytes(10)):
        path.write_bytes(data)
        with cs.CheckpointReader(path) as reader:
            assert (reader.crc, reader.data_end) == (None, len(data))
            with pytest.raises(cs.CheckpointFormatError) as err:
                list(reader.entries())
        expected = f"{path}: at byte 0: expected a Checkpoint.value record (0x0a), found byte 0x63"
        assert str(err.value).startswith(expected)


def test_packed_dims_are_read_as_protobuf_reads_them(ms, tmp_path, bounded_varints):
    """TensorProto.dims packed (field 1 as one length-delimited field, 0x0a, as proto3 writers and other tools
    write it; MindSpore writes one 0x08 varint per dim): dims [3, 130], 130 a two-byte varint. A uint8 [3, 130]
    record by hand, counted:
        0a 9e 03 (record: 414 = 1 + 2 + 411 bytes)  | 0a 01 'x' | 12 95 03 (tensor: 405 bytes)
        0a 03 03 82 01 (dims packed: 3 bytes, 3 and 130 = 0x82 0x01) | 12 05 'UInt8' | 1a 86 03 (390 bytes) | content
    (411 = 0x19b: 9b 03; 405 = 0x195: 95 03; 390 = 0x186: 86 03). Expected: MindSpore's load_checkpoint. Mutants:
    CheckpointReader._tensor__mutmut_18 (packed dims not recognized: skipped, the shape lost), _19, _20, _22, _23
    (the length not read), _24, _25 (where the packed dims stop), _26 (one varint past them, the next key taken for
    a dim), _27, _28, _30 to _33 (a dim not read or not kept)."""
    content = (np.arange(390) % 256).astype(np.uint8).tobytes()
    tensor = b"\x0a\x03\x03\x82\x01" + b"\x12\x05UInt8" + b"\x1a\x86\x03" + content
    value = b"\x0a\x01x" + b"\x12\x95\x03" + tensor
    assert (len(tensor), len(value)) == (405, 411)
    path = tmp_path / "packed.ckpt"
    path.write_bytes(b"\x0a\x9b\x03" + value)
    theirs = ms.load_checkpoint(str(path))["x"].asnumpy()
    assert theirs.shape == (3, 130) and theirs.dtype == np.uint8
    with cs.CheckpointReader(path) as reader:
        (entry,) = reader.entries()
        assert (entry.name, entry.shape, entry.tensor_type, entry.chunks) == ("x", (3, 130), "UInt8", ((24, 390),))
        ours = reader.read(entry)
    assert ours.dtype == np.uint8 and ours.tobytes() == theirs.tobytes() == content


def test_a_record_length_a_varint_ending_early_would_loop_on(ms, tmp_path, bounded_varints):
    """Float32 [33] as save_checkpoint writes it: 0a 98 01 (152) | 0a 01 'v' | 12 92 01 (146) | 08 21 | 12 07
    'Float32' | 1a 84 01 (132) | content, 155 bytes. The record's length is a two-byte varint divisible by 8: a
    varint that ended 2 bytes early would be read again as a field key of wire type 0 (152 = field 19 << 3),
    skipped as a varint to where it started, for ever (bounded_varints stops it). Expected: MindSpore's
    load_checkpoint. Mutant: _Headers.varint__mutmut_26 (pos + i - 1)."""
    path = tmp_path / "v.ckpt"
    ms_save(ms, path, {"v": np.arange(33, dtype=np.float32)})
    data = path.read_bytes()
    assert len(data) == 155 and data[:10] == bytes.fromhex("0a 98 01 0a 01 76 12 92 01 08")
    assert ms_load(ms, path)["v"].tolist() == list(range(33))
    got = cs.load_checkpoint_numpy(path)["v"]
    assert got.dtype == np.float32 and got.tolist() == list(range(33))


def test_a_type_name_as_long_as_the_dims_before_it(ms, tmp_path, bounded_varints):
    """Int8 [2] as save_checkpoint writes it: 0a 11 | 0a 01 'i' | 12 0c | 08 02 | 12 04 'Int8' | 1a 02 | 01 fe. A
    reader that stepped back the type's 4 bytes after it would land on the dims' 08 and read the dims and the
    type again, for ever (bounded_varints stops it). Expected: MindSpore's load_checkpoint. Mutant:
    CheckpointReader._tensor__mutmut_52 (pos -= n after the tensor_type)."""
    path = tmp_path / "i8.ckpt"
    ms_save(ms, path, {"i": np.int8([1, -2])})
    assert path.read_bytes() == bytes.fromhex("0a 11 0a 01 69 12 0c 08 02 12 04 49 6e 74 38 1a 02 01 fe")
    assert ms_load(ms, path)["i"].tolist() == [1, -2]
    got = cs.load_checkpoint_numpy(path)["i"]
    assert got.dtype == np.int8 and got.tolist() == [1, -2]


# The varints of a TensorProto, each made malformed (10 bytes with the top bit set) in turn: the bytes before the
# bad varint (the TensorProto starts at byte 7 of x_record), and the mutant that loses the record's name there.
MALFORMED_VARINTS = [
    (b"", "_tensor__mutmut_5"),  # a field's key
    (b"\x08", "_tensor__mutmut_12"),  # a dim
    (b"\x0a", "_tensor__mutmut_21"),  # the packed dims' length
    (b"\x0a\x0a", "_tensor__mutmut_29"),  # a packed dim (10 bytes of them)
    (b"\x12", "_tensor__mutmut_38"),  # tensor_type's length
    (b"\x1a", "_tensor__mutmut_57"),  # tensor_content's length
    (b"\x20", "_tensor__mutmut_67"),  # an unknown varint field (4), skipped by skip_field
]


@pytest.mark.parametrize("before, mutant", MALFORMED_VARINTS, ids=[m for _, m in MALFORMED_VARINTS])
def test_a_malformed_varint_in_a_tensor_names_the_record_and_byte(tmp_path, bounded_varints, before, mutant):
    """The whole message: the file, the varint's first byte (7 + the bytes before it) and the record with its
    tag. Mutants: CheckpointReader._tensor__mutmut_5, _12, _21, _29, _38, _57, _67 (what=None: "in None")."""
    path = tmp_path / "bad.ckpt"
    path.write_bytes(x_record(before + b"\xff" * 10))
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    at = 7 + len(before)
    assert str(err.value) == f"{path}: at byte {at}: malformed varint in record 0 ('x')", mutant
    assert err.value.offset == at


def test_a_start_group_field_in_a_tensor_names_the_record(tmp_path, bounded_varints):
    """Field 4 with wire type 3 (0x23) in the TensorProto: refused at the byte after its key, 8. Mutant:
    CheckpointReader._tensor__mutmut_67 (skip_field told what=None)."""
    path = tmp_path / "group.ckpt"
    path.write_bytes(x_record(b"\x23\x00"))
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    assert str(err.value) == f"{path}: at byte 8: unexpected protobuf wire type 3 in record 0 ('x')"


# float32 [1.5, -2], little-endian
CONTENT_2F = b"\x00\x00\xc0\x3f\x00\x00\x00\xc0"
MALFORMED_TENSORS = [
    # no content: 08 02 | 12 07 'Float32' (bytes 7-17): the fields end at 18
    (x_record(b"\x08\x02\x12\x07Float32"), 18),
    # no tensor_type: 08 02 | 1a 08 | 8 bytes (7-18): they end at 19
    (x_record(b"\x08\x02\x1a\x08" + CONTENT_2F), 19),
    # the content runs past the TensorProto: 21 bytes of fields (7-27) under a length of 20 (12 14), so its end is
    # byte 27 and the content ends at 28; the record (0a 1a: 26 bytes) holds all 21
    (b"\x0a\x1a\x0a\x01x\x12\x14" + b"\x08\x02\x12\x07Float32\x1a\x08" + CONTENT_2F, 28),
]


@pytest.mark.parametrize("data, at", MALFORMED_TENSORS, ids=["no-content", "no-type", "overrun"])
def test_a_malformed_tensor_proto_names_the_record_and_byte(tmp_path, bounded_varints, data, at):
    """Where the TensorProto's fields stopped. Mutants: CheckpointReader._tensor__mutmut_74 (a TensorProto without
    content, or without a type, taken), _75 (one without a type, or whose fields overrun its length, taken), _79
    to _84 (the message, file or byte dropped: None, or a call that fails)."""
    path = tmp_path / "bad.ckpt"
    path.write_bytes(data)
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    assert str(err.value) == f"{path}: at byte {at}: record 0 ('x'): malformed TensorProto"
    assert err.value.offset == at


def test_a_tensor_type_cut_by_the_end_of_the_file(tmp_path, bounded_varints):
    """0a 0a | 0a 01 'x' | 12 05 | 12 07 'Flo': 12 bytes, the record complete by its length, but the type's 7
    bytes start at byte 9 and would end at 16. Mutants: CheckpointReader._tensor__mutmut_45 (the read told
    what=None); _Headers.read__mutmut_1 (pos - n: the end not checked, the short read then taken for a file that
    shrank), _5 (what=None), _9 (needs bytes up to 9 - 7)."""
    path = tmp_path / "cut.ckpt"
    path.write_bytes(b"\x0a\x0a\x0a\x01x\x12\x05\x12\x07Flo")
    with pytest.raises(cs.CheckpointFormatError) as err:
        cs.load_checkpoint_numpy(path)
    assert str(err.value) == truncated_message(path, 0, "record 0 ('x')", 16, 12)


def test_a_file_ending_in_a_record_key_or_inside_a_length(ms, tmp_path, bounded_varints):
    """Records a and b (bytes 0-60, counted at the top) and then a third record's key, 0a, alone (61 bytes): its
    length's varint, at 61, needs byte 61. Then 0a ff ff (63 bytes): the varint's two bytes both say "more", so
    it needs byte 63 too. Either way the record at 60 is named. Mutants: _Headers.varint__mutmut_4 (what=None),
    _15 (2 bytes asked for at the end: up to 63); _Headers.read__mutmut_1, _5, _9 (as above); _Headers.varint__
    mutmut_35 to _39 (the cut varint's error: needs None, what None, or a call that fails), _40 to _42 (needs bytes
    up to 62, 60 or 65)."""
    _, data = ab_file(ms, tmp_path)
    path = tmp_path / "cut.ckpt"
    for tail, need in ((b"\x0a", 62), (b"\x0a\xff\xff", 64)):
        path.write_bytes(data + tail)
        with pytest.raises(cs.CheckpointFormatError) as err:
            cs.load_checkpoint_numpy(path)
        assert str(err.value) == truncated_message(path, B_END, "the length of record 2", need, B_END + len(tail))
        assert err.value.offset == B_END


# a: float32 [20000] (80,000 bytes), b: float32 [1], as save_checkpoint writes them; counted by hand:
# record a: 0a 98 f1 04 (80,024) | 0a 01 'a' | 12 91 f1 04 (80,017) | 08 a0 9c 01 (20,000) | 12 07 'Float32' |
#           1a 80 f1 04 (80,000) | content at 28: 28 + 80,000 = 80,028 bytes
# record b: 0a 16 | 0a 01 'b' | 12 11 | 08 01 | 12 07 'Float32' | 1a 04 (the 04 at 80,047) | content 80,048-80,052
BIG = {"a": np.arange(20000, dtype=np.float32), "b": np.float32([7])}
BIG_B, BIG_END = 80_028, 80_052


def big_file(ms, tmp_path, **kwargs):
    path = tmp_path / "big.ckpt"
    ms_save(ms, path, BIG, **kwargs)
    data = path.read_bytes()
    assert data[:4] == b"\x0a\x98\xf1\x04" and data[BIG_B : BIG_B + 5] == b"\x0a\x16\x0a\x01b"
    assert data[BIG_END - 6 : BIG_END - 4] == b"\x1a\x04"
    return path


def test_the_scan_reads_headers_in_windows_that_stop_at_the_data(ms, tmp_path, monkeypatch, bounded_varints):
    """A checkpoint with a crc footer: a's headers lie in the first 64 KiB window (one pread of 65,536 at 0), a's
    content is never read, b's 24 bytes are one window of its own (80,028 up to the data's end, not into the
    footer), read once: the last varint (b's content length, 5 bytes to the end) is served from it. Before
    them __init__ reads the 17-byte footer. Mutants: _Headers.read__mutmut_14 (a read ending at the window's end
    read again), _15 (every read a miss), _32 (a window of end + pos: past the data into the footer)."""
    path = big_file(ms, tmp_path, crc_check=True)
    assert path.stat().st_size == BIG_END + 17
    calls, real = [], os.pread

    def pread(fd, n, offset):
        calls.append((n, offset))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    with cs.CheckpointReader(path) as reader:
        a, b = reader.entries()
    assert (a.chunks, a.start, a.end) == (((28, 80_000),), 0, BIG_B)
    assert (b.chunks, b.start, b.end) == (((BIG_END - 4, 4),), BIG_B, BIG_END)
    assert calls == [(17, BIG_END), (65_536, 0), (24, BIG_B)]


def test_a_file_that_shrinks_during_the_scan_names_the_record(ms, tmp_path, bounded_varints):
    """The file cut at 80,028 (b's start) after the reader opened it (the data's end was taken then, 80,052): a's
    headers come from the first window, b's key is past it and the read finds nothing. Mutants:
    _Headers.read__mutmut_36 (what=None), _40 (needs bytes up to 80,028 - 1), _42, _43 (the text changed)."""
    path = big_file(ms, tmp_path)
    with cs.CheckpointReader(path) as reader:
        os.truncate(path, BIG_B)
        with pytest.raises(cs.CheckpointFormatError) as err:
            list(reader.entries())
    assert str(err.value) == truncated_message(path, BIG_B, "record 1 (file shrank while reading)", BIG_B + 1, BIG_END)
    assert err.value.offset == BIG_B


def test_a_tag_longer_than_the_header_window(ms, tmp_path, bounded_varints):
    """A 70,000-character tag starts at byte 8 and ends past the first 64 KiB window: it is read on its own, a
    read of exactly its 70,000 bytes. Expected: the name and values given to MindSpore's save_checkpoint (its
    load_checkpoint refuses names of 1,024 characters or more). Mutant: _Headers.read__mutmut_33 (a read that
    gets exactly the bytes asked for taken for a file that shrank)."""
    name = "n" * 70_000
    path = tmp_path / "long.ckpt"
    ms_save(ms, path, {name: np.float32([1.5, -2])})
    assert path.read_bytes()[4:8] == b"\x0a\xf0\xa2\x04"  # the tag's key and its length 70,000 = 0x11170
    ours = cs.load_checkpoint_numpy(path)
    assert list(ours) == [name]
    assert ours[name].dtype == np.float32 and ours[name].tolist() == [1.5, -2.0]


# ---- sizes a checkpoint cannot hold (found by add_stream's mutants, session i24w) --------------------------------


def test_a_1d_tensor_with_no_elements_is_refused_before_anything_is_written(ms, tmp_path):
    """A 1-d tensor of no elements has dims [0], which load_checkpoint reads as a scalar (and our reader then refuses
    as a scalar of 0 bytes); save_checkpoint drops such a tensor without a word. The writer refuses it, naming it, and
    the file holds what came before. Broken variant: the code before the fix wrote the record (no error here)."""
    path = tmp_path / "w.ckpt"
    with cs.CheckpointStreamWriter(path) as writer:
        writer.add("a", AB["a"])
        for call in (lambda: writer.add("e", np.zeros(0, np.float32)), lambda: writer.add_stream("e", [0], "Int8", [])):
            with pytest.raises(ValueError) as err:
                call()
            assert str(err.value) == "e: a checkpoint cannot hold a 1-d tensor with no elements (dims [0] is a scalar)"
        writer.add("b", AB["b"])
    loaded = ms.load_checkpoint(str(path))
    assert sorted(loaded) == ["a", "b"] and path.stat().st_size == B_END  # records a and b only, as counted above
    with cs.CheckpointReader(path) as reader:  # and our own reader reads the file through
        assert [e.name for e in reader.entries()] == ["a", "b"]


def test_a_shape_whose_size_leaves_int64_is_refused_by_the_writer_and_the_reader(ms, tmp_path):
    """[2**32, 2**32] Float32 is 2**66 bytes, 0 in int64 arithmetic: the writer took it with no block and wrote an
    empty record, which the reader took back as a tensor of 2**64 elements. Both now count in Python integers.
    Broken variants: `np.prod(shape, dtype=np.int64)` in add_stream (no error, an empty record) or in entries (the
    hand-made record accepted)."""
    path = tmp_path / "w.ckpt"
    with cs.CheckpointStreamWriter(path) as writer:
        # 2**63 bytes exactly: the first size past int64 (run 46's `add_stream__mutmut_16`, `_18`, `_19`: `>` for `>=`,
        # 2 << 63, 1 << 64)
        cases = [([2**32, 2**32], "73,786,976,294,838,206,464"), ([-1, 4], "-16")]
        cases.append(([2**61], "9,223,372,036,854,775,808"))
        for shape, need in cases:
            with pytest.raises(ValueError) as err:
                writer.add_stream("z", shape, "Float32", [])
            assert str(err.value) == f"z: Float32{shape} needs {need} bytes: a checkpoint's sizes are int64"
        assert writer.names == []
    assert path.stat().st_size == 0
    # The same record made by MindSpore's own protobuf classes: dims 2**32 and 2**32, Float32, no content.
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(ms_record("z", [2**32, 2**32], "Float32", b""))
    with cs.CheckpointReader(bad) as reader, pytest.raises(cs.CheckpointFormatError) as err:
        list(reader.entries())
    assert str(err.value) == (
        f"{bad}: at byte 0: tensor 'z' Float32[4294967296, 4294967296] needs 73,786,976,294,838,206,464 bytes, "
        "its records hold 0"
    )
