"""Resumable, verified downloads: model shards, tokenizers, data sets.

A download goes to `<dest>.part`, resumes from there with an HTTP Range request after a dropped
connection or a killed process, is checked against its sha256 when one is given, and only then is
renamed to `<dest>`. So a file under its final name is always complete (and verified, when a hash
was given); a half file only ever exists as `.part`.

TLS: requests reads REQUESTS_CA_BUNDLE (and proxies from HTTPS_PROXY) by itself; nothing to do here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import requests
import yaml
from tqdm import tqdm

from tunebox.io import InputError, _fsync_dir, sha256_file
from tunebox.model.registry import cache_dir

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class FetchError(Exception):
    """A download that did not succeed after all retries, or that the server refused. Exit 1."""


class ChecksumMismatch(FetchError):
    def __init__(self, url: str, expected: str, actual: str):
        self.url, self.expected, self.actual = url, expected, actual
        super().__init__(
            f"sha256 mismatch for {url}: expected {expected}, got {actual}. The partial file was "
            f"deleted; check the hash in your list (or the URL: a mirror may serve another revision)."
        )


class _Retryable(Exception):
    """An attempt that failed in a way another attempt may fix (drop, timeout, 5xx, short body)."""


@dataclass
class _RunningHash:
    """sha256 of the first `nbytes` of the .part file, kept up to date while bytes arrive so a
    fresh download is not read twice. Rebuilt from disk when the file and the hash disagree."""

    hasher: "hashlib._Hash"
    nbytes: int

    @classmethod
    def of_file_prefix(cls, path: Path, nbytes: int) -> "_RunningHash":
        h = hashlib.sha256()
        if nbytes:
            with open(path, "rb") as fh:
                remaining = nbytes
                while remaining and (block := fh.read(min(CHUNK_BYTES, remaining))):
                    h.update(block)
                    remaining -= len(block)
        return cls(h, nbytes)


def _normalise_sha256(sha256: Optional[str], url: str) -> Optional[str]:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    if not SHA256_RE.match(value):
        raise InputError(f"sha256 for {url} must be 64 hex digits, got {sha256!r}")
    return value


def _check_url(url: str) -> None:
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise InputError(f"URL must start with http:// or https:// and name a host, got {url!r}")


def _content_range_start(header: Optional[str]) -> Optional[int]:
    """`bytes 1000-1999/2000` -> 1000; None when absent or unreadable."""
    if not header:
        return None
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", header)
    return int(m.group(1)) if m else None


def _content_range_total(header: Optional[str]) -> Optional[int]:
    """`bytes */2000` or `bytes 0-9/2000` -> 2000; None when unknown."""
    if not header:
        return None
    m = re.match(r"^\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*$", header)
    return int(m.group(1)) if m else None


def fetch_file(
    url: str,
    dest: str | os.PathLike,
    sha256: Optional[str] = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30,
    progress: bool = True,
    session: Optional[requests.Session] = None,
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` if a previous attempt left one.

    retries: attempts after the first one that may fail with a dropped connection, a timeout, a 5xx
    or a body shorter than its Content-Length; attempt k waits backoff * 2**(k-1) seconds first.
    sha256: when given, an existing `dest` with that hash is returned without a request, and the
    download is verified before it gets its final name (ChecksumMismatch otherwise).
    """
    _check_url(url)
    dest = Path(dest)
    expected = _normalise_sha256(sha256, url)
    if dest.exists():
        if expected is None:
            log.info("%s already exists; not downloading again (give a sha256 to have it checked)", dest)
            return dest
        if sha256_file(dest) == expected:
            log.info("%s already present with the expected sha256", dest)
            return dest
        log.warning("%s exists but its sha256 differs from the expected one; downloading it again", dest)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    own_session = session is None
    session = session or requests.Session()
    running: Optional[_RunningHash] = None
    bar = tqdm(
        total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress, leave=True
    )
    try:
        failures = 0
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if running is None or running.nbytes != offset:
                running = _RunningHash.of_file_prefix(part, offset) if expected else None
            try:
                running = _download_attempt(session, url, part, offset, running, expected is not None, timeout, bar)
                break
            except _Retryable as exc:
                failures += 1
                if failures > retries:
                    raise FetchError(
                        f"could not download {url} after {retries + 1} attempts; last "
                        f"error: {exc}. {part} is kept: run the same command again to "
                        f"resume it."
                    ) from None
                wait = backoff * 2 ** (failures - 1)
                log.warning("download of %s interrupted (%s); retry %d/%d in %.1f s", url, exc, failures, retries, wait)
                time.sleep(wait)
    finally:
        bar.close()
        if own_session:
            session.close()

    if expected is not None:
        actual = running.hasher.hexdigest() if running and running.nbytes == part.stat().st_size else sha256_file(part)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(url, expected, actual)
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    log.info("downloaded %s -> %s (%s bytes)", url, dest, f"{dest.stat().st_size:,}")
    return dest


def _restart_bar(bar: tqdm, total: Optional[int], resumed_at: int) -> None:
    """Show the resumed bytes as already done without counting them in the transfer rate."""
    bar.reset(total=total)
    bar.initial = bar.n = bar.last_print_n = resumed_at
    if resumed_at:
        bar.set_postfix_str(f"resumed at {resumed_at / 2**20:.1f} MiB", refresh=False)
    bar.refresh()


def _download_attempt(
    session: requests.Session,
    url: str,
    part: Path,
    offset: int,
    running: Optional[_RunningHash],
    hashing: bool,
    timeout: float,
    bar: tqdm,
) -> Optional[_RunningHash]:
    """One GET; appends to (or restarts) `part`. Returns the running hash of the whole .part.
    Raises _Retryable for failures worth another attempt and FetchError for the others."""
    # identity: with gzip, Content-Length and Range count compressed bytes, not the file's.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
    # Let a short body end normally instead of raising: urllib3's own check throws away the
    # bytes of the chunk it was reading, which are the very bytes a resume wants to keep. The
    # length is checked below instead.
    resp.raw.enforce_content_length = False
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            total = _content_range_total(resp.headers.get("Content-Range"))
            if total == offset:
                # The .part already holds every byte (we were killed between the last byte and
                # the rename): nothing left to fetch.
                _restart_bar(bar, total, offset)
                return running
            log.warning(
                "server says %s is %s bytes but %s has %s; starting over",
                url,
                total if total is not None else "an unknown number of",
                part,
                f"{offset:,}",
            )
            part.unlink(missing_ok=True)
            raise _Retryable("the partial file did not match the server's file")
        if status >= 500 or status in (408, 429):
            raise _Retryable(f"HTTP {status} {resp.reason}")
        if status >= 400:
            raise FetchError(f"{url}: HTTP {status} {resp.reason}; check the URL (and a token if the file is gated)")
        if status not in (200, 206):
            raise FetchError(f"{url}: unexpected HTTP {status} {resp.reason}")

        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server answered the range request from byte {start}, not {offset}")
            mode, resumed_at = "ab", offset
        else:
            if offset:
                log.warning("server ignored the Range request for %s; downloading from byte 0", url)
            mode, resumed_at = "wb", 0
            running = _RunningHash(hashlib.sha256(), 0) if hashing else None
        _restart_bar(bar, resumed_at + length if length is not None else None, resumed_at)

        received = 0
        with open(part, mode) as fh:
            try:
                for block in resp.iter_content(chunk_size=CHUNK_BYTES):
                    fh.write(block)
                    received += len(block)
                    if running is not None:
                        running.hasher.update(block)
                        running.nbytes += len(block)
                    bar.update(len(block))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                raise _Retryable(f"connection lost after {received:,} bytes ({type(exc).__name__})") from None
            finally:
                fh.flush()
        if length is not None and received < length:
            raise _Retryable(f"body ended after {received:,} of {length:,} bytes")
        return running


# ---- many files ----------------------------------------------------------------------------


@dataclass
class FileEntry:
    url: str
    path: str
    sha256: Optional[str]
    line: Optional[int]


def read_file_list(list_file: str | os.PathLike) -> list[FileEntry]:
    """Read a YAML or JSON list of {url, path, sha256}; a top-level {files: [...]} works too.
    Errors name the list file and the line of the entry."""
    list_file = Path(list_file)
    if not list_file.exists():
        raise InputError("no such file list", list_file)
    text = list_file.read_text(encoding="utf-8")
    try:
        # JSON is YAML as far as PyYAML is concerned, and composing keeps each entry's line.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"not valid YAML/JSON: {getattr(exc, 'problem', exc)}", list_file, mark.line + 1 if mark else None
        ) from None
    if isinstance(data, dict) and "files" in data:
        data = data["files"]
        root = next(v for k, v in root.value if k.value == "files")
    if not isinstance(data, list):
        raise InputError("must be a list of {url, path, sha256} entries (or a mapping with 'files:')", list_file, 1)
    nodes = root.value
    entries = []
    for item, node in zip(data, nodes):
        line = node.start_mark.line + 1
        if not isinstance(item, dict):
            raise InputError("each entry must be a mapping with url, path and sha256", list_file, line)
        unknown = set(item) - {"url", "path", "sha256"}
        if unknown:
            raise InputError(f"unknown key(s) {sorted(unknown)}; an entry has url, path, sha256", list_file, line)
        for key in ("url", "path"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise InputError(f"entry is missing '{key}'", list_file, line)
        try:
            _check_url(item["url"])
            sha = _normalise_sha256(item.get("sha256"), item["url"])
        except InputError as exc:
            raise InputError(exc.message, list_file, line) from None
        entries.append(FileEntry(item["url"], item["path"], sha, line))
    return entries


def fetch_manifest(
    list_file: str | os.PathLike,
    root: Optional[str | os.PathLike] = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30,
    progress: bool = True,
    session: Optional[requests.Session] = None,
) -> list[Path]:
    """Fetch every file of a list into `root` (default: tunebox.model.registry.cache_dir()).

    Relative `path`s land under root and may not climb out of it; absolute paths are used as they
    are. One session is reused so keep-alive spares a TLS handshake per shard.
    """
    list_file = Path(list_file)
    entries = read_file_list(list_file)
    root = Path(root).expanduser() if root is not None else cache_dir()
    targets = []
    for entry in entries:
        target = Path(entry.path).expanduser()
        if not target.is_absolute():
            target = (root / target).resolve()
            if not target.is_relative_to(root.resolve()):
                raise InputError(f"path {entry.path!r} climbs out of the cache folder {root}", list_file, entry.line)
        targets.append(target)
    own_session = session is None
    session = session or requests.Session()
    options = {"retries": retries, "backoff": backoff, "timeout": timeout, "progress": progress, "session": session}
    try:
        done = []
        for i, (entry, target) in enumerate(zip(entries, targets), start=1):
            log.info("[%d/%d] %s -> %s", i, len(entries), entry.url, target)
            done.append(fetch_file(entry.url, target, entry.sha256, **options))
        return done
    finally:
        if own_session:
            session.close()


# ---- a model hub's repository at a pinned revision ---------------------------------------------

HUBS = {
    "hf": "Hugging Face (huggingface_hub; $HF_ENDPOINT names a mirror)",
    "modelers": "Modelers (openmind_hub; $OPENMIND_HUB_ENDPOINT names another endpoint)",
}
# What a conversion reads: config, weights (and their index), tokenizer files. Not *.bin, *.gguf, *.onnx.
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]
_HUB_SOURCE_RE = re.compile(r"^(?P<hub>[a-z]+):(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


@dataclass(frozen=True)
class HubSource:
    """`hf:<repo>@<revision>` or `modelers:<repo>@<revision>` from a spec's model.source (the revision is
    None only from split_hub_source, for a registry entry that names the repository unpinned)."""

    hub: str
    repo: str
    revision: Optional[str]

    def __str__(self) -> str:
        return f"{self.hub}:{self.repo}@{self.revision}"


def split_hub_source(source: str, where: Optional[str | os.PathLike] = None) -> Optional[HubSource]:
    """A HubSource for `hf:`/`modelers:` sources, its revision None when the source has none; None for
    anything else (a file list). A malformed hub source is an InputError."""
    prefix = source.split(":", 1)[0]
    if prefix not in HUBS or ":" not in source:
        return None
    m = _HUB_SOURCE_RE.match(source.strip())
    if not m:
        raise InputError(f"model.source {source!r} is not {prefix}:<org>/<name>@<revision>", where)
    return HubSource(m["hub"], m["repo"], m["revision"])


def parse_hub_source(source: str, where: Optional[str | os.PathLike] = None) -> Optional[HubSource]:
    """split_hub_source for a source to download: a hub source without its revision is an InputError too,
    since the revision is what makes the run repeatable."""
    hub = split_hub_source(source, where)
    if hub is not None and not hub.revision:
        raise InputError(
            f"model.source {source!r} has no revision: pin one, e.g. {source}@<commit sha or tag> "
            f"(a branch such as @main is resolved to its commit, which the manifest records)",
            where,
        )
    return hub


def hub_token() -> Optional[str]:
    """A hub token from the environment only (HF_TOKEN for Hugging Face); never a token file in $HOME."""
    return os.environ.get("HF_TOKEN") or None


def download_hub_snapshot(
    source: HubSource, dest: str | os.PathLike, token: Optional[str] = None, progress: bool = True
) -> dict:
    """Download the repository's conversion files (HUB_FILE_PATTERNS) at `source.revision` into `dest`.
    Returns {"source", "revision" (the commit the revision resolved to), "dir", "files": {name: {bytes, sha256}}}.
    Files already in `dest` at the same revision are not downloaded again (the hub clients check them)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if source.hub == "hf":
        commit = _hf_snapshot(source, dest, token, progress)
    else:
        commit = _modelers_snapshot(source, dest, token, progress)
    files = {}
    for path in sorted(p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.relative_to(dest).parts):
        files[path.relative_to(dest).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if not files:
        raise FetchError(f"{source}: the repository has no {', '.join(HUB_FILE_PATTERNS)} at that revision")
    log.info("%s: %d files at commit %s in %s", source, len(files), commit, dest)
    return {"source": str(source), "revision": commit, "dir": str(dest), "files": files}


def _hf_snapshot(source: HubSource, dest: Path, token: Optional[str], progress: bool) -> str:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, disable_progress_bars, enable_progress_bars

    # huggingface_hub reads HF_ENDPOINT once, at import; read it here so a mirror set later counts too
    endpoint = os.environ.get("HF_ENDPOINT") or None
    token = token or hub_token() or False  # False: not the token file in ~/.cache/huggingface
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        commit = HfApi(endpoint=endpoint, token=token).model_info(source.repo, revision=source.revision).sha
        snapshot_download(
            source.repo,
            revision=commit,
            local_dir=dest,
            allow_patterns=HUB_FILE_PATTERNS,
            token=token,
            endpoint=endpoint,
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        said = f"{source} from {endpoint or 'huggingface.co'}: {str(exc).splitlines()[0]}"
        if status in (401, 403, 404):  # the spec names a repository or revision we cannot have
            raise InputError(
                f"{said}; check model.source's repository and revision (a gated repository needs "
                f"$TUNEBOX_WEIGHTS_TOKEN or $HF_TOKEN)"
            ) from None
        raise FetchError(f"{said}; check the network, the proxy or $HF_ENDPOINT (a mirror)") from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise FetchError(
            f"{source} from {endpoint or 'huggingface.co'}: {exc}; check the network, the proxy "
            f"or $HF_ENDPOINT (a mirror)"
        ) from None
    return commit


def _modelers_snapshot(source: HubSource, dest: Path, token: Optional[str], progress: bool) -> str:
    try:
        import openmind_hub
    except ImportError:
        raise InputError(
            f"model.source {source} needs openmind_hub, which is not installed: `pip install "
            f"openmind_hub==1.3.0` (it pins requests==2.32.2, so install it in its own "
            f"environment or accept that pin); or download the repository yourself and "
            f"`invoke convert --model <name> --hf-dir <folder>`"
        ) from None
    endpoint = os.environ.get("OPENMIND_HUB_ENDPOINT") or None
    commit = getattr(openmind_hub.model_info(source.repo, revision=source.revision, token=token), "sha", None)
    openmind_hub.snapshot_download(
        source.repo,
        revision=commit or source.revision,
        local_dir=str(dest),
        local_dir_use_symlinks=False,
        allow_patterns=HUB_FILE_PATTERNS,
        token=token,
        endpoint=endpoint,
    )
    return commit or source.revision
