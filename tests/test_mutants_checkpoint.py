"""Tests written for the mutants of tunebox/model/checkpoint.py and lora.py that the group's other tests let
survive (tests/mutants.py, group "checkpoint"; docs/TESTING.md). Each names its mutants (mutmut's names,
`tunebox.model.checkpoint.` left out). Expected values are worked out by hand (record layouts counted byte by
byte in the comments) or come from an independent implementation: MindSpore's save_checkpoint and
load_checkpoint, its numpy bfloat16, zlib's crc32, numpy's own casts. All in process, fast."""

from __future__ import annotations

import errno
import logging
import os
import zlib

import numpy as np
import pytest

from tunebox.io import InputError
from tunebox.model import checkpoint as cs


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


# ---- the writer's verbatim copy ----------------------------------------------------------------


@pytest.fixture
def bounded_io(monkeypatch):
    """os.copy_file_range and os.preadv, counted, failing after 1,000 calls: a mutant whose copy loop never
    ends (pos = n) would otherwise fill the disk before mutmut's timeout (one did: 48 GB in a minute)."""
    calls = {"copy_file_range": 0, "preadv": 0}

    def bounded(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            if calls[name] > 1000:
                raise AssertionError(f"os.{name} called over 1,000 times: a copy loop that does not end")
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(os, "copy_file_range", bounded("copy_file_range", os.copy_file_range))
    monkeypatch.setattr(os, "preadv", bounded("preadv", os.preadv))
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
    assert bounded_io["copy_file_range" if copy_file_range else "preadv"] > 0


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
