"""File helpers every job shares: atomic writes, checksums, located JSONL reading.

Atomic means: write to a temporary name in the same directory, fsync, then rename. A crash leaves
either the old file or the new one under the final name, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


class InputError(Exception):
    """Bad input from the user: a file, a line and what to do about it. Jobs exit 2 on it."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.message = message
        where = ""
        if self.path:
            where = f"{self.path}:{line}: " if line else f"{self.path}: "
        super().__init__(where + message)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success rename it over `final`.

    Use for writers that want a file name (mindspore.save_checkpoint, numpy.save). `suffix` ends
    the temporary name, for writers that insist on one (save_checkpoint appends .ckpt otherwise).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part" + suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file should look like any other
    try:
        yield tmp
        with contextlib.suppress(OSError):
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when complete.

    An interrupted job leaves `.name.part-*` behind (removed by the next attempt), never a
    directory under the final name that looks complete but is not.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.part-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.part-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete what a killed writer left half-written anywhere under `folder`: atomic_path's
    `.<name>.<random>.part*` files, atomic_dir's `.<name>.part-*` folders, the train callbacks'
    `*.partial.ckpt` and `*.tmp`, and MindSpore's `*.tmp` checkpoints. A job calls it (tunebox.cli.run_job)
    before it works in its folder again, so no half file survives a kill and a rerun."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.rglob("*")
        if (p.name.startswith(".") and ".part" in p.name) or p.name.endswith((".partial.ckpt", ".tmp"))
    ]
    removed = []
    for p in sorted(found, key=lambda q: len(q.parts)):
        if not p.exists() and not p.is_symlink():
            continue  # inside a folder removed before it
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        removed.append(p)
    return removed


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one line and flush it to disk: logs that survive a kill -9 up to the last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class JsonlRow:
    line: int  # 1-based line number in the file
    value: Any  # the decoded JSON value (not checked for shape here)


MAX_LINE_BYTES = 1 << 20


def iter_lines(path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | int]]:
    """(line number, raw bytes) for every line; a line over `max_line_bytes` (newline included)
    comes as its length instead, and is never held in memory whole."""
    with open(path, "rb") as fh:
        lineno = 0
        while raw := fh.readline(max_line_bytes + 1):
            lineno += 1
            if len(raw) <= max_line_bytes:
                yield lineno, raw
                continue
            size = len(raw)
            while not raw.endswith(b"\n"):
                raw = fh.readline(1 << 20)
                if not raw:
                    break
                size += len(raw)
            yield lineno, size


def decode_jsonl_line(
    raw: bytes | int, path: str | os.PathLike, lineno: int, max_line_bytes: int = MAX_LINE_BYTES
) -> JsonlRow | InputError | None:
    """One line of a JSONL file: a JsonlRow, an InputError (file:line) for a line that is not valid
    UTF-8 JSON, or None for a blank line. `raw` may be the length of an over-long line (iter_lines)."""
    if isinstance(raw, int) or len(raw) > max_line_bytes:
        size = raw if isinstance(raw, int) else len(raw)
        return InputError(f"line is {size:,} bytes, over the {max_line_bytes:,}-byte limit", path, lineno)
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputError(f"not valid UTF-8 at byte {exc.start} ({exc.reason})", path, lineno)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return InputError(f"broken JSON: {exc.msg} at column {exc.colno}", path, lineno)
    return JsonlRow(lineno, value)


def iter_jsonl(path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[JsonlRow | InputError]:
    """Stream a JSONL file, yielding a JsonlRow per line or an InputError for a line that is not
    valid UTF-8 JSON (the caller decides: raise it, or write it to a rejects file). Blank lines
    are skipped. Never reads the whole file, nor a whole over-long line, into memory.
    """
    path = Path(path)
    for lineno, raw in iter_lines(path, max_line_bytes):
        item = decode_jsonl_line(raw, path, lineno, max_line_bytes)
        if item is not None:
            yield item


def read_jsonl(path: str | os.PathLike) -> list:
    """Every value of a JSONL file a job wrote (blank lines skipped); a bad line raises its InputError
    (file:line)."""
    values = []
    for item in iter_jsonl(path):
        if isinstance(item, InputError):
            raise item
        values.append(item.value)
    return values
