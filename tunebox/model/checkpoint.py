"""MindSpore .ckpt files one tensor at a time: a streaming reader, a streaming writer, and a LoRA
merge whose memory does not grow with the model (an 8B base is 16-32 GB; the merge holds one
adapted weight and a float32 buffer of its size; the peak RSS measured on Llama3-8B is in
docs/BENCHMARKS.md). `python -m jobs.checkpoint list|merge` is its command line.

The format (mindspore/train/checkpoint.proto and serialization.py, MindSpore 2.9):

    message Checkpoint { repeated Value value = 1; }
    message Value { required string tag = 1; oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

save_checkpoint serializes one `Checkpoint` holding one `Value` per record and writes the records
back to back (protobuf reads concatenated messages as one). A tensor of more than 512 MiB is cut
into 512 MiB pieces of its raw bytes (`1024 * SLICE_SIZE`), each its own record with the same tag
and the full dims; load_checkpoint joins consecutive records with the same tag. With
`crc_check=True` the file ends with b"crc_num" + a 10-byte big-endian crc32 of everything before.
Strings (append_dict) are `tensor_type "str"`, dims [0], content numpy UTF-32.

The reader parses the outer repeated field by hand (tag byte, varint length) and reads only the
small headers until a tensor is asked for; tensor bytes are read straight into the array that is
returned (os.preadv, no intermediate copy, no mmap: touched mmap pages would count in RSS).
The merge copies tensors without an adapter verbatim with copy_file_range (the bytes never enter
this process) and materializes only the adapted weights; bfloat16 ones are converted here, bit for
bit as MindSpore's numpy bfloat16 rounds, so the merge never loads MindSpore.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
from tqdm import tqdm

from tunebox.chaos import kill_point
from tunebox.io import InputError, atomic_path

log = logging.getLogger("tunebox.checkpoint")

# The names MindFormers' LoRA adapter (mindpet LoRADense) gives its two matrices: <layer>.<name>
LORA_A = "mindpet_delta_lora_a"
LORA_B = "mindpet_delta_lora_b"

# MindSpore 2.9 serialization.py: SLICE_SIZE = 512 * 1024 (KB); tensors are written in chunks of
# 1024 * SLICE_SIZE bytes. Writing the same chunks keeps our files byte-identical to its own.
RECORD_BYTES = 512 * 1024 * 1024
CRC_MAGIC = b"crc_num"
CRC_FOOTER_BYTES = len(CRC_MAGIC) + 10
# Page-cache hygiene when drop_cache is on: written data is pushed out and dropped per window.
CACHE_WINDOW = 256 * 1024 * 1024
COPY_BLOCK = 16 * 1024 * 1024
_HEADER_WINDOW = 64 * 1024
_FOLD_SLICE = 1 << 20  # elements converted at a time in fold_lora
_U64 = (1 << 64) - 1

# MindSpore's tensor_type strings (serialization.tensor_to_ms_type) -> numpy. BFloat16 is added on
# first use: MindSpore's numpy bfloat16 lives in its C extension (~350 MB of shared libraries).
_NUMPY_TYPES: dict[str, np.dtype] = {
    "Int8": np.dtype(np.int8),
    "UInt8": np.dtype(np.uint8),
    "Int16": np.dtype(np.int16),
    "UInt16": np.dtype(np.uint16),
    "Int32": np.dtype(np.int32),
    "UInt32": np.dtype(np.uint32),
    "Int64": np.dtype(np.int64),
    "UInt64": np.dtype(np.uint64),
    "Float16": np.dtype(np.float16),
    "Float32": np.dtype(np.float32),
    "Float64": np.dtype(np.float64),
    "Bool": np.dtype(np.bool_),
}
STRING_TYPE = "str"
FLOAT_TYPES = ("Float16", "BFloat16", "Float32", "Float64")


def bfloat16() -> np.dtype:
    """MindSpore's numpy bfloat16 (what Tensor.asnumpy() returns for a bfloat16 tensor)."""
    from mindspore._c_expression.np_dtypes import bfloat16 as bf16

    return np.dtype(bf16)


def numpy_dtype(tensor_type: str) -> np.dtype:
    if tensor_type == "BFloat16":
        return bfloat16()
    try:
        return _NUMPY_TYPES[tensor_type]
    except KeyError:
        raise ValueError(
            f"tensor type {tensor_type!r} is not supported "
            f"(supported: {', '.join([*_NUMPY_TYPES, 'BFloat16', STRING_TYPE])})"
        ) from None


def itemsize(tensor_type: str) -> int:
    """Bytes per element, without importing MindSpore for BFloat16."""
    return 2 if tensor_type == "BFloat16" else numpy_dtype(tensor_type).itemsize


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16): round to nearest even, every NaN to 0x7fc0 — what
    MindSpore's numpy bfloat16 cast does (checked bit for bit in the tests), without its C extension."""
    bits = values.view(np.uint32)
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: bfloat16 is the top half of a float32, so the 16
    bits shift up (exact, no rounding)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def tensor_type_of(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return "BFloat16"
    for name, np_type in _NUMPY_TYPES.items():
        if np_type == dtype:
            return name
    raise ValueError(f"numpy dtype {dtype} has no MindSpore checkpoint type")


class CheckpointFormatError(InputError):
    """The file is not a (complete) plain MindSpore checkpoint; names the file and the byte offset."""

    def __init__(self, message: str, path, offset: int):
        self.offset = offset
        super().__init__(f"at byte {offset:,}: {message}", path)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in a checkpoint: its records' content ranges, and the byte range of
    the records themselves (start..end) for verbatim copies."""

    name: str
    shape: tuple[int, ...]
    tensor_type: str
    chunks: tuple[tuple[int, int], ...]  # (offset, length) of each record's tensor_content
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.chunks)

    @property
    def records(self) -> int:
        return len(self.chunks)


# ---- protobuf wire format --------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    value &= _U64  # int64 fields encode negatives as their 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def record_header(name: str, dims: Iterable[int], tensor_type: str, content_bytes: int) -> bytes:
    """The bytes of one serialized `Checkpoint{value: [Value{tag, tensor{dims, tensor_type,
    tensor_content}}]}` up to the content, in protobuf's field order (what SerializeToString writes)."""
    tag, ttype = name.encode("utf-8"), tensor_type.encode("utf-8")
    tensor_head = (
        b"".join(b"\x08" + encode_varint(d) for d in dims)
        + b"\x12"
        + encode_varint(len(ttype))
        + ttype
        + b"\x1a"
        + encode_varint(content_bytes)
    )
    value_head = (
        b"\x0a"
        + encode_varint(len(tag))
        + tag
        + b"\x12"
        + encode_varint(len(tensor_head) + content_bytes)
        + tensor_head
    )
    return b"\x0a" + encode_varint(len(value_head) + content_bytes) + value_head


class _Headers:
    """Exact reads of small header fields at absolute offsets, through a small cache window."""

    def __init__(self, fd: int, path: Path, end: int):
        self.fd, self.path, self.end = fd, path, end
        self._base, self._buf = 0, b""
        self.record_start = 0

    def truncated(self, pos: int, need_end: int, what: str) -> CheckpointFormatError:
        # Reported at the start of the record being read: that is where a good copy differs.
        return CheckpointFormatError(
            f"truncated: {what} needs bytes up to {need_end:,} but the checkpoint data ends at {self.end:,}; "
            f"the file is incomplete (interrupted write or copy?) — write or download it again",
            self.path,
            self.record_start,
        )

    def read(self, pos: int, n: int, what: str) -> bytes:
        if pos + n > self.end:
            raise self.truncated(pos, pos + n, what)
        if not (self._base <= pos and pos + n <= self._base + len(self._buf)):
            self._base = pos
            self._buf = os.pread(self.fd, max(n, min(_HEADER_WINDOW, self.end - pos)), pos)
            if len(self._buf) < n:
                raise self.truncated(pos, pos + n, what + " (file shrank while reading)")
        i = pos - self._base
        return self._buf[i : i + n]

    def varint(self, pos: int, what: str) -> tuple[int, int]:
        """(value, position after it)."""
        raw = self.read(pos, min(10, self.end - pos) or 1, what)
        value = shift = 0
        for i, byte in enumerate(raw):
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + i + 1
            shift += 7
        if len(raw) < 10:
            raise self.truncated(pos, pos + len(raw) + 1, what)
        raise CheckpointFormatError(f"malformed varint in {what}", self.path, pos)

    def skip_field(self, pos: int, wire_type: int, limit: int, what: str) -> int:
        if wire_type == 0:
            return self.varint(pos, what)[1]
        if wire_type == 1:
            return pos + 8
        if wire_type == 5:
            return pos + 4
        if wire_type == 2:
            length, pos = self.varint(pos, what)
            return pos + length
        raise CheckpointFormatError(f"unexpected protobuf wire type {wire_type} in {what}", self.path, pos)


def _drop_pages(fd: int, offset: int, length: int) -> None:
    """Tell the kernel these pages are done with (writeback starts for dirty ones); no-op off Linux."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ---- reading --------------------------------------------------------------------------------


class CheckpointReader:
    """A MindSpore checkpoint as a sequence of tensors, read one at a time.

    `entries()` scans the record headers (a few bytes each; tensor bytes are skipped) and yields
    one TensorEntry per tensor, consecutive records with the same tag joined as load_checkpoint
    joins them; `read(entry)` returns its array. Iterating the reader yields (name, array).
    """

    def __init__(self, path: str | os.PathLike, *, verify_crc: bool = False, drop_cache: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such checkpoint file", self.path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.drop_cache = drop_cache
        self.crc: Optional[int] = None
        self.data_end = self.size
        if self.size >= CRC_FOOTER_BYTES:
            tail = os.pread(self.fd, CRC_FOOTER_BYTES, self.size - CRC_FOOTER_BYTES)
            if tail[: len(CRC_MAGIC)] == CRC_MAGIC:  # the test load_checkpoint makes, too
                self.data_end = self.size - CRC_FOOTER_BYTES
                self.crc = int.from_bytes(tail[len(CRC_MAGIC) :], "big")
        if verify_crc:
            self.verify_crc()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def verify_crc(self) -> None:
        """Check the crc32 footer save_checkpoint(crc_check=True) writes (one pass over the file)."""
        if self.crc is None:
            raise InputError("has no crc footer (it was saved without crc_check=True)", self.path)
        crc, pos = 0, 0
        while pos < self.data_end:
            block = os.pread(self.fd, min(COPY_BLOCK, self.data_end - pos), pos)
            if not block:
                raise CheckpointFormatError("file shrank while checking its crc", self.path, pos)
            crc = zlib.crc32(block, crc)
            pos += len(block)
        if crc != self.crc:
            raise InputError(
                f"crc32 mismatch: the footer says {self.crc:#010x}, the data gives {crc:#010x}; the file is damaged",
                self.path,
            )

    def _records(self) -> Iterator[tuple[str, tuple[int, ...], str, int, int, int, int]]:
        """(name, dims, tensor_type, content offset, content length, record start, record end)."""
        headers = _Headers(self.fd, self.path, self.data_end)
        pos, index = 0, 0
        while pos < self.data_end:
            start = headers.record_start = pos
            (key,) = headers.read(pos, 1, f"record {index}")
            if key != 0x0A:
                raise CheckpointFormatError(
                    f"expected a Checkpoint.value record (0x0a), found byte {key:#04x}: not a plain MindSpore "
                    f"checkpoint (encrypted with enc_key, safetensors, or damaged)",
                    self.path,
                    pos,
                )
            length, pos = headers.varint(pos + 1, f"the length of record {index}")
            end = pos + length
            if end > self.data_end:
                name = self._peek_name(headers, pos, end)
                raise headers.truncated(start, end, f"record {index}{f' ({name!r})' if name else ''}")
            name, dims, ttype, content = None, [], None, None
            while pos < end:
                field, pos = headers.varint(pos, f"record {index}")
                if field == 0x0A:  # tag
                    n, pos = headers.varint(pos, f"record {index} tag")
                    name = headers.read(pos, n, f"record {index} tag").decode("utf-8")
                    pos += n
                elif field == 0x12:  # tensor
                    n, pos = headers.varint(pos, f"record {index} tensor")
                    dims, ttype, content = self._tensor(headers, pos, pos + n, f"record {index} ({name!r})")
                    pos += n
                elif field == 0x1A:
                    raise CheckpointFormatError(
                        f"record {index} ({name!r}) is a MapParameter (maptensor), which tunebox does not read",
                        self.path,
                        start,
                    )
                else:
                    pos = headers.skip_field(pos, field & 7, end, f"record {index}")
            if pos != end:
                raise CheckpointFormatError(f"record {index} ({name!r}) overruns its length {length}", self.path, start)
            if name is None or ttype is None:
                raise CheckpointFormatError(
                    f"record {index} has no {'tag' if name is None else 'tensor'}", self.path, start
                )
            yield name, tuple(dims), ttype, content[0], content[1], start, end
            pos, index = end, index + 1

    def _peek_name(self, headers: _Headers, pos: int, end: int) -> Optional[str]:
        with contextlib.suppress(InputError, UnicodeDecodeError):
            field, p = headers.varint(pos, "tag")
            if field == 0x0A:
                n, p = headers.varint(p, "tag")
                return headers.read(p, n, "tag").decode("utf-8")
        return None

    def _tensor(self, headers: _Headers, pos: int, end: int, what: str):
        dims, ttype, content = [], None, None
        while pos < end:
            field, pos = headers.varint(pos, what)
            if field == 0x08:  # dims, one varint each (proto2)
                d, pos = headers.varint(pos, what)
                dims.append(_signed64(d))
            elif field == 0x0A:  # dims, packed (other writers)
                n, pos = headers.varint(pos, what)
                stop = pos + n
                while pos < stop:
                    d, pos = headers.varint(pos, what)
                    dims.append(_signed64(d))
            elif field == 0x12:  # tensor_type
                n, pos = headers.varint(pos, what)
                ttype = headers.read(pos, n, what).decode("utf-8")
                pos += n
            elif field == 0x1A:  # tensor_content: skipped here
                n, pos = headers.varint(pos, what)
                content = (pos, n)
                pos += n
            else:
                pos = headers.skip_field(pos, field & 7, end, what)
        if pos != end or ttype is None or content is None:
            raise CheckpointFormatError(f"{what}: malformed TensorProto", self.path, pos)
        return dims, ttype, content

    def entries(self) -> Iterator[TensorEntry]:
        """One TensorEntry per tensor, in file order (headers only; no tensor bytes are read)."""
        group: Optional[list] = None

        def finish(g) -> TensorEntry:
            name, dims, ttype, chunks, start, end = g
            shape = () if list(dims) == [0] else dims  # load_checkpoint: dims [0] means a scalar
            entry = TensorEntry(name, shape, ttype, tuple(chunks), start, end)
            if ttype != STRING_TYPE:
                want = math.prod(shape) * itemsize(ttype)  # exact: dims whose product leaves int64 never match
                if entry.nbytes != want:
                    raise CheckpointFormatError(
                        f"tensor {name!r} {ttype}{list(shape)} needs {want:,} bytes, its records hold {entry.nbytes:,}",
                        self.path,
                        start,
                    )
            return entry

        for name, dims, ttype, offset, length, start, end in self._records():
            if group is not None and group[0] == name:
                if (group[1], group[2]) != (dims, ttype):
                    raise CheckpointFormatError(
                        f"records of {name!r} disagree: {group[2]}{list(group[1])} then {ttype}{list(dims)}",
                        self.path,
                        start,
                    )
                group[3].append((offset, length))
                group[5] = end
                continue
            if group is not None:
                yield finish(group)
            group = [name, dims, ttype, [(offset, length)], start, end]
        if group is not None:
            yield finish(group)

    def read_into(self, entry: TensorEntry, buffer: memoryview) -> None:
        pos = 0
        for offset, length in entry.chunks:
            done = 0
            while done < length:
                n = os.preadv(self.fd, [buffer[pos + done : pos + length]], offset + done)
                if n <= 0:
                    raise CheckpointFormatError(
                        f"truncated: tensor {entry.name!r} ends early (file shrank)", self.path, offset + done
                    )
                done += n
            pos += length

    def read_raw(self, entry: TensorEntry) -> np.ndarray:
        """The tensor's bytes (C order) as a flat uint8 array."""
        raw = np.empty(entry.nbytes, dtype=np.uint8)
        self.read_into(entry, memoryview(raw))
        self.release(entry)
        return raw

    def read(self, entry: TensorEntry) -> Union[np.ndarray, str]:
        """The tensor as numpy (what load_checkpoint(...)[name].asnumpy() gives), or a str value."""
        raw = self.read_raw(entry)
        if entry.tensor_type == STRING_TYPE:
            return str(raw.view(f"U{entry.nbytes // 4}")[0]) if entry.nbytes else ""
        return raw.view(numpy_dtype(entry.tensor_type)).reshape(entry.shape)

    def release(self, entry: TensorEntry) -> None:
        """Done with this entry's bytes: drop them from the page cache when asked to."""
        if self.drop_cache:
            _drop_pages(self.fd, entry.start, entry.end - entry.start)

    def __iter__(self) -> Iterator[tuple[str, Union[np.ndarray, str]]]:
        for entry in self.entries():
            yield entry.name, self.read(entry)


def iter_checkpoint(path: str | os.PathLike) -> Iterator[tuple[str, Union[np.ndarray, str]]]:
    """(name, array) for each tensor of a MindSpore checkpoint, one in memory at a time."""
    with CheckpointReader(path) as reader:
        yield from reader


def load_checkpoint_numpy(path: str | os.PathLike) -> dict[str, Union[np.ndarray, str]]:
    """The whole checkpoint as name -> array, without importing MindSpore (small files: LoRA)."""
    return dict(iter_checkpoint(path))


# ---- writing --------------------------------------------------------------------------------


class CheckpointStreamWriter:
    """Write a MindSpore checkpoint tensor by tensor, in the records save_checkpoint writes (the
    same bytes for the same tensors). Tensors can come whole (`add`), as a stream of byte blocks
    (`add_stream`, for data generated in pieces), or as a verbatim copy from a reader (`copy`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        sha256: bool = False,
        drop_cache: bool = False,
        record_bytes: int = RECORD_BYTES,
        copy_file_range: bool = True,
    ):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.hash = hashlib.sha256() if sha256 else None
        self.drop_cache = drop_cache
        self.record_bytes = record_bytes
        self.use_copy_file_range = copy_file_range and hasattr(os, "copy_file_range") and not sha256
        self.bytes_written = 0
        self.names: list[str] = []
        self._seen: set[str] = set()
        self._window_start = 0  # first byte not yet handed to writeback (drop_cache)
        self._pending_drop: Optional[tuple[int, int]] = None
        self._broken: Optional[str] = None

    # -- plumbing
    def _write(self, data) -> None:
        view = memoryview(data)
        if self.hash is not None:
            self.hash.update(view)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.bytes_written += n
        self._cache_hygiene()

    def _cache_hygiene(self) -> None:
        # DONTNEED on dirty pages starts their writeback without waiting; a window later they are
        # clean and the same call drops them. Without this a 16 GB merge fills the page cache of a
        # machine that is running other work.
        if not self.drop_cache or self.bytes_written - self._window_start < CACHE_WINDOW:
            return
        if self._pending_drop:
            _drop_pages(self.fd, *self._pending_drop)
        window = (self._window_start, self.bytes_written - self._window_start)
        _drop_pages(self.fd, *window)
        self._pending_drop, self._window_start = window, self.bytes_written

    def _begin(self, name: str) -> None:
        if name in self._seen:
            raise ValueError(f"{self.path}: tensor {name} written twice")
        self._seen.add(name)
        self.names.append(name)

    # -- tensors
    def add(self, name: str, value: Union[np.ndarray, str]) -> None:
        """One tensor (or a str value, as append_dict strings are saved)."""
        if isinstance(value, str):
            raw = np.array(value)
            self._begin(name)
            content = raw.tobytes()
            self._write(record_header(name, [0], STRING_TYPE, len(content)))
            self._write(content)
            return
        array = np.asarray(value)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # (np.ascontiguousarray would make a scalar 1-d)
        raw = array.reshape(-1).view(np.uint8)
        self.add_stream(name, array.shape, tensor_type_of(array.dtype), [raw])

    def add_stream(self, name: str, shape: Iterable[int], tensor_type: str, blocks: Iterable) -> None:
        """A tensor whose bytes (C order) arrive as blocks; the total must match shape and type."""
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * itemsize(tensor_type)  # Python ints: a count past int64 is refused, not wrapped
        if min(shape, default=0) < 0 or nbytes >= 1 << 63:
            raise ValueError(
                f"{name}: {tensor_type}{list(shape)} needs {nbytes:,} bytes: a checkpoint's sizes are int64"
            )
        if shape == (0,):  # load_checkpoint reads dims [0] as a scalar; save_checkpoint drops an empty tensor
            raise ValueError(f"{name}: a checkpoint cannot hold a 1-d tensor with no elements (dims [0] is a scalar)")
        self._begin(name)
        start = self.bytes_written
        try:
            self._stream_records(name, shape, tensor_type, nbytes, blocks)
        except BaseException:
            # Leave the file as it was before this tensor (its records so far would make it unreadable).
            self._seen.discard(name)
            self.names.pop()
            if self.hash is not None:
                self.hash = None
                self._broken = f"add_stream({name!r}) failed after hashing part of it"
            os.ftruncate(self.fd, start)
            os.lseek(self.fd, start, os.SEEK_SET)
            self.bytes_written = start
            self._window_start = min(self._window_start, start)
            self._pending_drop = None
            raise

    def _stream_records(self, name: str, shape: tuple[int, ...], tensor_type: str, nbytes: int, blocks) -> None:
        in_record = 0  # content bytes still owed to the current record
        written = 0
        for block in blocks:
            view = (
                memoryview(block).cast("B")
                if not isinstance(block, np.ndarray)
                else memoryview(np.ascontiguousarray(block).reshape(-1).view(np.uint8))
            )
            while view:
                if in_record == 0:
                    if written >= nbytes:
                        raise ValueError(f"{name}: more than {nbytes:,} bytes for {tensor_type}{list(shape)}")
                    in_record = min(self.record_bytes, nbytes - written)
                    self._write(record_header(name, shape, tensor_type, in_record))
                take = view[:in_record]
                self._write(take)
                view = view[len(take) :]
                in_record -= len(take)
                written += len(take)
        if written != nbytes or in_record:
            raise ValueError(f"{name}: got {written:,} bytes for {tensor_type}{list(shape)}, which needs {nbytes:,}")
        if nbytes == 0:  # save_checkpoint writes no record at all then, and the tensor is lost
            self._write(record_header(name, shape, tensor_type, 0))

    def copy(self, reader: CheckpointReader, entry: TensorEntry) -> None:
        """The entry's records, byte for byte (copy_file_range when possible: no copy in this process)."""
        self._begin(entry.name)
        pos, end = entry.start, entry.end
        if self.use_copy_file_range:
            try:
                while pos < end:
                    n = os.copy_file_range(reader.fd, self.fd, end - pos, pos)
                    if n == 0:
                        raise CheckpointFormatError(f"truncated: tensor {entry.name!r} ends early", reader.path, pos)
                    pos += n
                    self.bytes_written += n
                    self._cache_hygiene()
                return
            except OSError as exc:  # another filesystem, or a kernel without it: copy by hand
                log.info("copy_file_range unavailable (%s); copying through memory", exc)
                self.use_copy_file_range = False
        buffer = bytearray(min(COPY_BLOCK, end - pos) or 1)
        view = memoryview(buffer)
        while pos < end:
            n = os.preadv(reader.fd, [view[: min(len(view), end - pos)]], pos)
            if n <= 0:
                raise CheckpointFormatError(f"truncated: tensor {entry.name!r} ends early", reader.path, pos)
            self._write(view[:n])
            pos += n

    def close(self) -> Optional[str]:
        """fsync and close; returns the sha256 of the file when the writer was asked to hash."""
        if self._broken:
            raise RuntimeError(f"{self.path}: no sha256: {self._broken}")
        if self.fd >= 0:
            os.fsync(self.fd)
            if self.drop_cache:
                _drop_pages(self.fd, 0, 0)
            os.close(self.fd)
            self.fd = -1
        return self.hash.hexdigest() if self.hash is not None else None

    def __enter__(self) -> "CheckpointStreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# MindSpore's tensor_type -> safetensors' dtype (the safetensors format, safetensors/src/tensor.rs Dtype)
SAFETENSORS_DTYPES = {
    "Bool": "BOOL",
    "UInt8": "U8",
    "Int8": "I8",
    "Int16": "I16",
    "UInt16": "U16",
    "Float16": "F16",
    "BFloat16": "BF16",
    "Int32": "I32",
    "UInt32": "U32",
    "Float32": "F32",
    "Float64": "F64",
    "Int64": "I64",
    "UInt64": "U64",
}


def write_safetensors(ckpt: str | os.PathLike, out_file: str | os.PathLike, progress: bool = False) -> int:
    """A MindSpore .ckpt -> one .safetensors file with the same names, shapes, dtypes and bytes, one tensor
    at a time (the memory of the largest tensor, not of the model). The header carries MindSpore's
    `{"format": "ms"}` metadata, as mindspore.save_checkpoint(format="safetensors") writes it. String
    entries have no safetensors dtype and are refused. Returns the number of tensors."""
    with CheckpointReader(ckpt) as reader:
        entries = list(reader.entries())
        header: dict = {"__metadata__": {"format": "ms"}}
        offset = 0
        for e in entries:
            dtype = SAFETENSORS_DTYPES.get(e.tensor_type)
            if dtype is None:
                raise InputError(f"tensor {e.name!r} is {e.tensor_type}, which safetensors cannot hold", ckpt)
            header[e.name] = {"dtype": dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
            offset += e.nbytes
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with atomic_path(out_file) as tmp, open(tmp, "wb") as fh:
            fh.write(len(text).to_bytes(8, "little") + text)
            for e in tqdm(entries, desc="base as safetensors", unit="tensor", disable=not progress):
                fh.write(memoryview(reader.read_raw(e)))
    return len(entries)


def save_checkpoint_numpy(
    path: str | os.PathLike,
    tensors: Union[dict[str, Union[np.ndarray, str]], Iterable[tuple[str, Union[np.ndarray, str]]]],
    *,
    sha256: bool = False,
) -> Optional[str]:
    """Write name -> array (or str) pairs as a checkpoint, atomically, one tensor in memory at a time
    when `tensors` is an iterator: the bytes mindspore.save_checkpoint writes for the same tensors,
    without MindSpore. Returns the file's sha256 when asked."""
    items = tensors.items() if isinstance(tensors, dict) else tensors
    with atomic_path(path) as tmp, CheckpointStreamWriter(tmp, sha256=sha256) as writer:
        for name, value in items:
            writer.add(name, value)
        return writer.close()


# ---- the merge ------------------------------------------------------------------------------


@dataclass
class MergeStats:
    out: str
    tensors: int
    merged: int
    bytes_read: int  # base tensor records read or copied
    bytes_written: int
    seconds: float
    sha256: Optional[str]

    def to_dict(self) -> dict:
        return asdict(self)


def fold_lora(
    weight: np.ndarray, tensor_type: str, shape: tuple[int, ...], a: np.ndarray, b: np.ndarray, factor: float
) -> np.ndarray:
    """W + factor * B @ A from W's raw bytes (flat uint8), returned in W's type (BFloat16 as its
    uint16 bits): float32 product, scaled, added to W in float32, cast back, done in place so W and
    one float32 buffer are all it holds. The one place the fold is computed: merge_streaming and
    lora.merge_lora_into_base (the in-memory merge) both call it."""
    update = b.astype(np.float32, copy=False) @ a.astype(np.float32, copy=False)
    update *= np.float32(factor)
    flat = update.reshape(-1)
    if tensor_type == "Float32":
        flat += weight.view(np.float32)
        return update
    # Other types convert in slices: the temporaries stay small next to W and the float32 update.
    bf16 = tensor_type == "BFloat16"  # converted here, without MindSpore's C extension
    w = weight.view(np.uint16 if bf16 else numpy_dtype(tensor_type))
    merged = np.empty(flat.size, dtype=w.dtype)
    for i in range(0, flat.size, _FOLD_SLICE):
        part = flat[i : i + _FOLD_SLICE]
        part += bfloat16_bits_to_float32(w[i : i + _FOLD_SLICE]) if bf16 else w[i : i + _FOLD_SLICE].astype(np.float32)
        merged[i : i + _FOLD_SLICE] = float32_to_bfloat16_bits(part) if bf16 else part.astype(w.dtype)
    return merged.reshape(shape)


def convert_float_bits(values: np.ndarray, from_type: str, to_type: str) -> np.ndarray:
    """A float tensor's values (raw bytes, or the array fold_lora returns) in another checkpoint float
    type, BFloat16 as uint16 bits (round to nearest even, as MindSpore casts), in slices."""
    src = values.reshape(-1).view(np.uint16 if from_type == "BFloat16" else numpy_dtype(from_type))
    out = np.empty(src.size, dtype=np.uint16 if to_type == "BFloat16" else numpy_dtype(to_type))
    for i in range(0, src.size, _FOLD_SLICE):
        part = src[i : i + _FOLD_SLICE]
        part = bfloat16_bits_to_float32(part) if from_type == "BFloat16" else part.astype(np.float32)
        out[i : i + _FOLD_SLICE] = float32_to_bfloat16_bits(part) if to_type == "BFloat16" else part.astype(out.dtype)
    return out


def lora_pairs(lora: dict, where) -> dict[str, tuple[str, str]]:
    """base weight name -> (lora_a key, lora_b key), every pair complete."""
    pairs = {}
    for key in lora:
        if key.endswith("." + LORA_A):
            prefix = key[: -len(LORA_A) - 1]
            if f"{prefix}.{LORA_B}" not in lora:
                raise InputError(f"{key} has no matching {prefix}.{LORA_B}", where)
            pairs[f"{prefix}.weight"] = (key, f"{prefix}.{LORA_B}")
        elif key.endswith("." + LORA_B) and key[: -len(LORA_B)] + LORA_A not in lora:
            raise InputError(f"{key} has no matching {key[: -len(LORA_B)]}{LORA_A}", where)
    if not pairs:
        raise InputError(f"no LoRA matrices (names ending in {LORA_A} / {LORA_B})", where)
    return pairs


def merge_streaming(
    base_ckpt: str | os.PathLike,
    lora_ckpt: str | os.PathLike,
    out_ckpt: str | os.PathLike,
    alpha: float,
    rank: int,
    scale: float = 1.0,
    progress: bool = True,
    *,
    sha256: bool = False,
    drop_cache: bool = True,
    copy_file_range: bool = True,
    out_type: Optional[str] = None,
    out_types: Optional[dict[str, str]] = None,
) -> MergeStats:
    """out = base with W + scale * (alpha / r) * B @ A folded into every adapted weight, written
    tensor by tensor (atomically: the final name appears only when the file is complete).

    The fold is fold_lora's; the file has the bytes save_checkpoint writes for the merged arrays
    (tests/test_checkpoint.py checks both against a reference). Tensors without an adapter are copied
    verbatim; only one adapted weight and its merged copy are in memory at a time. The LoRA file
    is read whole (r * (in + out) per weight: MBs). `sha256=True` hashes the output while writing
    (then every byte passes through this process: slower than copy_file_range). `out_type` ("BFloat16",
    "Float16", "Float32"): write every float tensor in that type (a Llama3-8B merged checkpoint is 16 GB
    in bfloat16, 32 GB in float32); the merge itself is done in float32 either way. `out_types`: a type
    per tensor name instead (what the predicting network declares for each parameter, jobs/merge.py);
    a float tensor it does not name keeps out_type, or its own type.
    """
    for t in [out_type, *(out_types or {}).values()]:
        if t is not None and t not in FLOAT_TYPES:
            raise ValueError(f"out_type must be one of {FLOAT_TYPES}, not {t!r}")
    base_ckpt, lora_ckpt, out_ckpt = Path(base_ckpt), Path(lora_ckpt), Path(out_ckpt)
    started = time.perf_counter()
    lora = load_checkpoint_numpy(lora_ckpt)
    pairs = lora_pairs(lora, lora_ckpt)
    with CheckpointReader(base_ckpt, drop_cache=drop_cache) as reader:
        entries = list(reader.entries())  # headers only: checks everything before writing
        by_name: dict[str, TensorEntry] = {}
        for entry in entries:
            if entry.name in by_name:
                raise InputError(
                    f"tensor {entry.name!r} appears twice (bytes {by_name[entry.name].start:,} and {entry.start:,})",
                    base_ckpt,
                )
            by_name[entry.name] = entry
        for wname, (a_key, b_key) in pairs.items():
            if wname not in by_name:
                raise InputError(
                    f"{lora_ckpt} adapts {wname}, which this base checkpoint does not have "
                    f"(LoRA trained on another model?)",
                    base_ckpt,
                )
            entry, a, b = by_name[wname], lora[a_key], lora[b_key]
            if entry.tensor_type not in FLOAT_TYPES:
                raise InputError(f"{wname} is {entry.tensor_type}; LoRA merges need a float weight", base_ckpt)
            if a.ndim != 2 or b.ndim != 2 or (b.shape[0], a.shape[1]) != entry.shape or b.shape[1] != a.shape[0]:
                raise InputError(
                    f"{wname} is {list(entry.shape)} but its LoRA B{list(b.shape)} @ A{list(a.shape)} "
                    f"does not make that shape",
                    lora_ckpt,
                )
        total = sum(e.end - e.start for e in entries)
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"merge {base_ckpt.name}",
            disable=not progress,
        )
        with atomic_path(out_ckpt) as tmp, bar:
            writer = CheckpointStreamWriter(tmp, sha256=sha256, drop_cache=drop_cache, copy_file_range=copy_file_range)
            with writer:
                for entry in entries:
                    wanted = (out_types or {}).get(entry.name, out_type)
                    target = wanted if wanted and entry.tensor_type in FLOAT_TYPES else entry.tensor_type
                    if entry.name in pairs:
                        a_key, b_key = pairs[entry.name]
                        merged = fold_lora(
                            reader.read_raw(entry),
                            entry.tensor_type,
                            entry.shape,
                            lora[a_key],
                            lora[b_key],
                            scale * alpha / rank,
                        )
                        if target != entry.tensor_type:
                            merged = convert_float_bits(merged, entry.tensor_type, target)
                        writer.add_stream(entry.name, entry.shape, target, [merged.reshape(-1).view(np.uint8)])
                        del merged
                    elif target != entry.tensor_type:
                        converted = convert_float_bits(reader.read_raw(entry), entry.tensor_type, target)
                        writer.add_stream(entry.name, entry.shape, target, [converted.view(np.uint8)])
                        del converted
                    else:
                        writer.copy(reader, entry)
                        reader.release(entry)
                    bar.update(entry.end - entry.start)
                    if entry is entries[len(entries) // 2]:
                        kill_point("merge.mid-checkpoint")
                digest = writer.close()
                written = writer.bytes_written
    stats = MergeStats(
        out=str(out_ckpt),
        tensors=len(entries),
        merged=len(pairs),
        bytes_read=total,
        bytes_written=written,
        seconds=round(time.perf_counter() - started, 3),
        sha256=digest,
    )
    log.info(
        "merged %d of %d tensors into %s: %.2f GB in %.1f s",
        stats.merged,
        stats.tensors,
        out_ckpt,
        written / 1e9,
        stats.seconds,
    )
    return stats


# ---- command line ----------------------------------------------------------------------------
