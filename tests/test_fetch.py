"""tunebox.fetch against a real HTTP server on 127.0.0.1 that can drop connections mid-body,
ignore Range, or answer 503: the download must still end with the right bytes, and a half file
must never appear under the final name."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tunebox.fetch as fetch_mod
from jobs.fetch import main as fetch_main
from tunebox.fetch import ChecksumMismatch, FetchError, fetch_file, fetch_manifest, read_file_list
from tunebox.io import InputError

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = random.Random(1234).randbytes(2 * 1024 * 1024 + 12345)  # ~2 MB, not a round size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FlakyFileServer:
    """Serves `files` with Range support; misbehaves on request as the test asks."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.honor_range = True
        self.drop_after_bytes = None  # cut the body after this many bytes ...
        self.drop_first_requests = 0  # ... on this many requests
        self.fail_first_requests = 0  # answer 503 to this many requests first
        self.log: list[dict] = []  # one entry per request: path, range, status, body bytes sent
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            index = len(self.log)
            entry = {"path": h.path, "range": h.headers.get("Range"), "status": None, "sent": 0}
            self.log.append(entry)
        data = self.files.get(h.path)
        if data is None:
            entry["status"] = 404
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if index < self.fail_first_requests:
            entry["status"] = 503
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        m = re.match(r"^bytes=(\d+)-$", entry["range"] or "")
        if m and self.honor_range:
            start = int(m.group(1))
            if start >= len(data):
                entry["status"] = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            entry["status"] = 206
        else:
            h.send_response(200)
            entry["status"] = 200
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes" if self.honor_range else "none")
        h.end_headers()
        if self.drop_after_bytes is not None and index < self.drop_first_requests:
            body = body[: self.drop_after_bytes]
            h.close_connection = True  # the socket closes with the body short of Content-Length
        h.wfile.write(body)
        h.wfile.flush()
        entry["sent"] = len(body)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    # A proxy in the environment must not see (or break) requests to the local test server.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    with FlakyFileServer({"/model.bin": PAYLOAD, "/a.txt": b"alpha\n" * 1000, "/b.txt": b"beta\n" * 777}) as s:
        yield s


def quick(**kw):
    return dict(backoff=0.0, progress=False, timeout=10, **kw)


def test_dropped_connections_resume_with_range_and_end_with_the_right_bytes(server, tmp_path):
    server.drop_after_bytes = 300_000
    server.drop_first_requests = 2
    dest = tmp_path / "model.bin"

    fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, **quick())

    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("model.bin.part").exists()
    assert [e["range"] for e in server.log] == [None, "bytes=300000-", "bytes=600000-"]
    assert [e["status"] for e in server.log] == [200, 206, 206]
    # Resuming re-sent nothing: the three bodies add up to the file exactly once.
    assert sum(e["sent"] for e in server.log) == len(PAYLOAD)


def test_backoff_doubles_between_retries_and_5xx_is_retried(server, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(fetch_mod, "time", types.SimpleNamespace(sleep=waits.append))
    server.fail_first_requests = 3
    dest = tmp_path / "a.txt"

    fetch_file(server.base_url + "/a.txt", dest, None, retries=5, backoff=0.5, progress=False)

    assert dest.read_bytes() == server.files["/a.txt"]
    assert waits == [0.5, 1.0, 2.0]
    assert [e["status"] for e in server.log] == [503, 503, 503, 200]


def test_wrong_sha256_raises_and_leaves_neither_final_file_nor_part(server, tmp_path):
    dest = tmp_path / "model.bin"
    wrong = hashlib.sha256(b"something else").hexdigest()
    url = server.base_url + "/model.bin"

    with pytest.raises(ChecksumMismatch) as err:
        fetch_file(url, dest, wrong, **quick())

    message = str(err.value)
    assert url in message and wrong in message and PAYLOAD_SHA in message
    assert not dest.exists()
    assert not dest.with_name("model.bin.part").exists()


def test_server_that_ignores_range_restarts_from_zero_and_ends_right(server, tmp_path):
    server.honor_range = False
    server.drop_after_bytes = 500_000
    server.drop_first_requests = 1
    dest = tmp_path / "model.bin"

    fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, **quick())

    assert dest.read_bytes() == PAYLOAD
    # The retry asked for a range, got the whole file (200) and must not have appended it.
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200), ("bytes=500000-", 200)]


def test_part_file_left_by_a_crash_is_resumed(server, tmp_path):
    dest = tmp_path / "model.bin"
    half = len(PAYLOAD) // 2
    dest.with_name("model.bin.part").write_bytes(PAYLOAD[:half])

    fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, **quick())

    assert dest.read_bytes() == PAYLOAD
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [(f"bytes={half}-", 206, len(PAYLOAD) - half)]


def test_complete_part_file_is_finished_by_a_416(server, tmp_path):
    # Killed between the last byte and the rename: the server says "nothing left" (416).
    dest = tmp_path / "model.bin"
    dest.with_name("model.bin.part").write_bytes(PAYLOAD)

    fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, **quick())

    assert dest.read_bytes() == PAYLOAD
    assert [e["status"] for e in server.log] == [416]


def test_part_file_longer_than_the_server_file_starts_over(server, tmp_path):
    dest = tmp_path / "a.txt"
    dest.with_name("a.txt.part").write_bytes(b"x" * (len(server.files["/a.txt"]) + 10))

    fetch_file(server.base_url + "/a.txt", dest, None, **quick())

    assert dest.read_bytes() == server.files["/a.txt"]
    assert [e["status"] for e in server.log] == [416, 200]


def test_giving_up_keeps_the_part_and_no_final_file(server, tmp_path):
    server.drop_after_bytes = 100_000
    server.drop_first_requests = 100
    dest = tmp_path / "model.bin"

    with pytest.raises(FetchError, match="after 3 attempts"):
        fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, retries=2, **quick())

    assert not dest.exists()
    part = dest.with_name("model.bin.part")
    assert part.read_bytes() == PAYLOAD[:300_000]  # three short bodies, appended in order

    # The next run (server healthy again) picks up at byte 300000.
    server.drop_first_requests = 0
    fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, **quick())
    assert dest.read_bytes() == PAYLOAD
    assert server.log[-1]["range"] == "bytes=300000-"


def test_404_fails_at_once_without_retrying(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_file(server.base_url + "/missing.bin", tmp_path / "missing.bin", None, **quick())
    assert len(server.log) == 1
    assert not (tmp_path / "missing.bin").exists()


def test_existing_file_with_matching_sha_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(PAYLOAD)
    fetch_file(server.base_url + "/model.bin", dest, PAYLOAD_SHA, **quick())
    assert server.log == []


def test_fetch_manifest_fetches_every_entry_under_the_root(server, tmp_path):
    a, b = server.files["/a.txt"], server.files["/b.txt"]
    listing = tmp_path / "files.yaml"
    listing.write_text(
        f"files:\n"
        f"  - url: {server.base_url}/a.txt\n"
        f"    path: shards/a.txt\n"
        f"    sha256: {hashlib.sha256(a).hexdigest()}\n"
        f"  - url: {server.base_url}/b.txt\n"
        f"    path: shards/b.txt\n"
    )
    root = tmp_path / "cache"

    paths = fetch_manifest(listing, root=root, **quick())

    assert paths == [root / "shards/a.txt", root / "shards/b.txt"]
    assert (root / "shards/a.txt").read_bytes() == a and (root / "shards/b.txt").read_bytes() == b


def test_fetch_manifest_defaults_to_the_cache_dir_and_reads_json(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path / "tbcache"))
    listing = tmp_path / "files.json"
    listing.write_text(json.dumps([{"url": server.base_url + "/b.txt", "path": "x/b.txt"}]))
    fetch_manifest(listing, **quick())
    assert (tmp_path / "tbcache/x/b.txt").read_bytes() == server.files["/b.txt"]


@pytest.mark.parametrize(
    "body, line, words",
    [
        (
            "- url: http://127.0.0.1:1/a\n  path: a\n- url: http://127.0.0.1:1/b\n  path: b\n  sha256: beef\n",
            3,
            "64 hex",
        ),
        ("- url: http://127.0.0.1:1/a\n  path: ../../etc/passwd\n", 1, "climbs out"),
        ("- url: ftp://127.0.0.1/a\n  path: a\n", 1, "http"),
        ("- url: http://127.0.0.1:1/a\n", 1, "missing 'path'"),
        ("- url: http://127.0.0.1:1/a\n  path: a\n  sha: x\n", 1, "unknown key"),
        ("url: http://127.0.0.1:1/a\n", 1, "must be a list"),
    ],
)
def test_bad_file_lists_name_the_line(tmp_path, body, line, words):
    listing = tmp_path / "files.yaml"
    listing.write_text(body)
    with pytest.raises(InputError) as err:
        fetch_manifest(listing, root=tmp_path / "cache", **quick())
    assert err.value.line == line and err.value.path == str(listing)
    assert words in str(err.value)


def test_read_file_list_accepts_sha256_prefix_and_uppercase(tmp_path):
    listing = tmp_path / "files.yaml"
    listing.write_text(f"- url: http://127.0.0.1:1/a\n  path: a\n  sha256: sha256:{PAYLOAD_SHA.upper()}\n")
    assert read_file_list(listing)[0].sha256 == PAYLOAD_SHA


def test_cli_exit_codes(server, tmp_path, capsys):
    url = server.base_url + "/a.txt"
    out = tmp_path / "a.txt"
    good = hashlib.sha256(server.files["/a.txt"]).hexdigest()
    assert fetch_main([url, "--out", str(out), "--sha256", good, "--no-progress", "--backoff", "0"]) == 0
    assert out.read_bytes() == server.files["/a.txt"]
    assert fetch_main([url]) == 2  # no --out
    assert fetch_main([url, "--out", str(tmp_path / "c"), "--sha256", "nothex"]) == 2
    assert fetch_main(["--list", str(tmp_path / "nope.yaml")]) == 2
    assert fetch_main([server.base_url + "/missing", "--out", str(tmp_path / "m"), "--no-progress"]) == 1
    assert fetch_main([url, "--out", str(tmp_path / "d"), "--sha256", "0" * 64, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "needs --out" in err and "sha256 mismatch" in err


def test_cli_runs_as_a_module(server, tmp_path):
    listing = tmp_path / "files.yaml"
    listing.write_text(f"- url: {server.base_url}/b.txt\n  path: b.txt\n")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.fetch", "--list", str(listing), "--root", str(tmp_path / "root"), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_PROXY": "127.0.0.1"},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "root/b.txt").read_bytes() == server.files["/b.txt"]
    assert done.stdout.strip() == str(tmp_path / "root/b.txt")
