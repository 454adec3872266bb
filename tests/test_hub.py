"""Weights by hub id: `model.source: hf:<repo>@<revision>` (and `modelers:`), pinned, every file's sha256
recorded, converted; InternLM's SentencePiece tokenizer.model converted to tokenizer.json.

No model hub is reachable here. The HF tests run the real weights job (and the real huggingface_hub client)
against a local stand-in of the Hub's HTTP API, reached through $HF_ENDPOINT as a mirror would be.
openmind_hub cannot be installed beside this stack (it pins requests==2.32.2) and refuses any endpoint
that is not https, so the Modelers path is tested with a stand-in module in its place.

Mutants tried (each fails the test named):
  - _hf_snapshot leaves the endpoint to huggingface_hub's import-time constant  -> test_hf_endpoint_set_after_...
  - parse_hub_source accepts a source without @revision                          -> test_a_hub_source_without...
  - tokenizer_from_sentencepiece does not make <eoh>/<eoa> special                -> test_internlm_sentencepiece...
  - LlamaTokenizer(legacy=False) in tokenizer_from_sentencepiece                 -> test_internlm_sentencepiece...
  - _modelers_snapshot passes revision=None                                      -> test_modelers_source_...
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MATH_SAMPLE, REPO, TINY_RECIPE, job_env
from tunebox.data.tokenizer import TextTokenizer, build_byte_tokenizer
from tunebox.fetch import HubSource, download_hub_snapshot, parse_hub_source, split_hub_source
from tunebox.io import InputError
from tunebox.model.checkpoint import load_checkpoint_numpy
from tunebox.model.registry import get_model_shape, with_overrides
from tunebox.model.weights import convert_hf_checkpoint, hf_name_to_mindformers, make_random_hf_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.ThreadingHTTPServer):
    """The two calls huggingface_hub makes: the repo's info at a revision (GET /api/models/<repo>/revision/<rev>)
    and each file (HEAD/GET /<repo>/resolve/<commit>/<file>). One repository, one tag, one commit."""

    def __init__(self, repo: str, tag: str, files: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repo, self.tag, self.files, self.requests = repo, tag, files, []


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool):
        hub: FakeHub = self.server
        path = self.path.split("?", 1)[0]
        hub.requests.append((self.command, path))
        info = re.fullmatch(rf"/api/models/{re.escape(hub.repo)}/revision/([^/]+)", path)
        resolve = re.fullmatch(rf"/{re.escape(hub.repo)}/resolve/([^/]+)/(.+)", path)
        if info and info.group(1) in (hub.tag, COMMIT):
            siblings = [{"rfilename": p.name} for p in sorted(hub.files.iterdir())]
            data = json.dumps({"id": hub.repo, "modelId": hub.repo, "sha": COMMIT, "siblings": siblings}).encode()
            return self._send(200, data, {"Content-Type": "application/json"}, body)
        if resolve and resolve.group(1) == COMMIT and (hub.files / resolve.group(2)).is_file():
            data = (hub.files / resolve.group(2)).read_bytes()
            return self._send(
                200,
                data,
                {
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    "Content-Type": "application/octet-stream",
                },
                body,
            )
        self._send(
            404,
            b'{"error": "Repository Not Found"}',
            {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"},
            body,
        )

    def _send(self, status, data, headers, body):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def fake_hub(tmp_path):
    files = make_random_hf_checkpoint(tmp_path / "repo", get_model_shape("tiny"), seed=3, shards=2)
    build_byte_tokenizer(get_model_shape("tiny").vocab_size).save(files)
    (files / "pytorch_model.bin").write_bytes(b"not wanted")  # outside HUB_FILE_PATTERNS
    hub = FakeHub("tunebox-test/tiny-llama", "v1", files)
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    yield hub
    hub.shutdown()
    hub.server_close()


def weights_job(tmp_path, source: str, endpoint: str | None):
    env = job_env(tmp_path / "cache")
    for key in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "TUNEBOX_WEIGHTS_TOKEN", "TUNEBOX_WEIGHTS_TOKEN_FILE"):
        env.pop(key, None)
    env["HF_HOME"] = str(tmp_path / "hf-home")  # nothing from the user's own HF cache or token
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.weights",
            "--config",
            str(TINY_RECIPE),
            "--set",
            f"runs_dir={tmp_path / 'runs'}",
            "--set",
            f"model.source={source}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_hf_source_is_downloaded_at_its_pinned_commit_recorded_and_converted(tmp_path, fake_hub):
    endpoint = f"http://127.0.0.1:{fake_hub.server_address[1]}"
    proc = weights_job(tmp_path, "hf:tunebox-test/tiny-llama@v1", endpoint)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # every file fetched at the commit the tag resolved to, not at the tag
    fetched = {p for m, p in fake_hub.requests if "/resolve/" in p}
    assert fetched and all(f"/resolve/{COMMIT}/" in p for p in fetched), fetched
    assert not any(p.endswith("pytorch_model.bin") for p in fetched)

    served = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in fake_hub.files.iterdir()
        if p.name != "pytorch_model.bin"
    }
    info = json.loads((tmp_path / "cache" / "models" / "tiny" / "model.json").read_text())
    assert info["source"] == "hf:tunebox-test/tiny-llama@v1" and info["revision"] == COMMIT
    assert {k: v["sha256"] for k, v in info["source_files"].items()} == served
    manifest = json.loads((tmp_path / "runs" / "tiny" / "weights" / "manifest.json").read_text())
    assert manifest["extra"]["revision"] == COMMIT
    assert {k: v["sha256"] for k, v in manifest["extra"]["source_files"].items()} == served

    # converted: the MindFormers checkpoint holds the served tensors under MindFormers' names
    from safetensors.numpy import load_file

    ckpt = load_checkpoint_numpy(tmp_path / "cache" / "models" / "tiny" / "model.ckpt")
    for shard in sorted(fake_hub.files.glob("*.safetensors")):
        for name, array in load_file(str(shard)).items():
            np.testing.assert_array_equal(ckpt[hf_name_to_mindformers(name)], array)
    assert (tmp_path / "cache" / "models" / "tiny" / "tokenizer.json").is_file()


def test_hf_endpoint_set_after_import_is_honoured(tmp_path, fake_hub, monkeypatch):
    """huggingface_hub reads HF_ENDPOINT once, when imported; a mirror named later (a job, a notebook) must count."""
    import huggingface_hub.constants  # noqa: F401  (read before the variable is set; the package loads lazily)

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{fake_hub.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    got = download_hub_snapshot(HubSource("hf", "tunebox-test/tiny-llama", "v1"), tmp_path / "snap", progress=False)
    assert got["revision"] == COMMIT and "config.json" in got["files"]


def test_an_unknown_revision_fails_naming_the_source(tmp_path, fake_hub):
    endpoint = f"http://127.0.0.1:{fake_hub.server_address[1]}"
    proc = weights_job(tmp_path, "hf:tunebox-test/tiny-llama@v9", endpoint)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "hf:tunebox-test/tiny-llama@v9" in proc.stderr and endpoint in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_hub_source_without_a_revision_is_refused(tmp_path):
    proc = weights_job(tmp_path, "hf:tunebox-test/tiny-llama", None)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "has no revision" in proc.stderr and "@<commit sha or tag>" in proc.stderr
    assert parse_hub_source("lists/weights.yaml") is None
    assert parse_hub_source("modelers:PyTorch-NPU/internlm_7b@v1.0") == HubSource(
        "modelers", "PyTorch-NPU/internlm_7b", "v1.0"
    )
    with pytest.raises(InputError, match="not hf:<org>/<name>@<revision>"):
        parse_hub_source("hf:no-org@v1")


def test_an_unpinned_registry_source_splits_for_export_but_is_refused_for_download():
    """The registry names stage 1's base repository unpinned; `invoke export` only needs the repository for
    the adapter's base_model_name_or_path, so split_hub_source reads it (revision None), while
    parse_hub_source, for a download, still refuses it. Mutant tried: split_hub_source refusing a source
    without a revision (parse_hub_source's check moved into it) -> this test fails."""
    source = get_model_shape("llama3-8b").source
    assert split_hub_source(source) == HubSource("hf", "meta-llama/Meta-Llama-3-8B", None)
    assert split_hub_source("hf:org/name@v2") == HubSource("hf", "org/name", "v2")
    assert split_hub_source(get_model_shape("tiny").source) is None
    with pytest.raises(InputError, match="has no revision"):
        parse_hub_source(source)


def test_modelers_source_goes_through_openmind_hub_at_the_pinned_revision(tmp_path, monkeypatch):
    calls = {}

    def model_info(repo_id, revision=None, token=None, **kw):
        calls["info"] = (repo_id, revision)
        return types.SimpleNamespace(sha=COMMIT)

    def snapshot_download(repo_id, revision=None, local_dir=None, endpoint=None, **kw):
        calls["snapshot"] = (repo_id, revision, endpoint)
        make_random_hf_checkpoint(local_dir, get_model_shape("tiny"), shards=1)

    monkeypatch.setitem(
        sys.modules, "openmind_hub", types.SimpleNamespace(model_info=model_info, snapshot_download=snapshot_download)
    )
    monkeypatch.setenv("OPENMIND_HUB_ENDPOINT", "https://mirror.example")
    got = download_hub_snapshot(HubSource("modelers", "org/tiny", "v1.0"), tmp_path / "snap", progress=False)
    assert calls == {"info": ("org/tiny", "v1.0"), "snapshot": ("org/tiny", COMMIT, "https://mirror.example")}
    assert got["revision"] == COMMIT and set(got["files"]) == {"config.json", "model.safetensors"}

    monkeypatch.setitem(sys.modules, "openmind_hub", None)  # not installed
    with pytest.raises(InputError, match="needs openmind_hub"):
        download_hub_snapshot(HubSource("modelers", "org/tiny", "v1.0"), tmp_path / "snap2", progress=False)


def test_internlm_sentencepiece_tokenizer_becomes_tokenizer_json(tmp_path):
    """InternLM ships only a SentencePiece tokenizer.model. The converted tokenizer.json must cut text as
    SentencePiece itself does, keep <eoh>/<eoa> whole, and carry the contest's chat format."""
    import sentencepiece as spm

    text = [json.loads(line)["problem"] for line in MATH_SAMPLE.read_text().splitlines()[:300]]
    (tmp_path / "corpus.txt").write_text("\n".join(text) + "\n数学题：一个数的平方是多少？\n")
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=512,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=["<eoh>", "<eoa>"],
        character_coverage=0.98,
        hard_vocab_limit=False,
        minloglevel=2,
        # as LLaMA's and InternLM's tokenizer.model: no normalization
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    shape = with_overrides(
        get_model_shape("internlm-7b"),
        vocab_size=512,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        n_kv_heads=2,
        intermediate_size=64,
    )
    hf_dir = make_random_hf_checkpoint(tmp_path / "hf", shape, shards=1)
    (hf_dir / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())
    (hf_dir / "tokenizer_config.json").write_text('{"tokenizer_class": "InternLMTokenizer"}')  # HF's, not ours

    out = convert_hf_checkpoint(hf_dir, tmp_path / "model", shape, progress=False)
    tok = TextTokenizer.load(out)
    for sample in text[:40] + ["  two  spaces, tabs\tand ümlauts ∑ 数学", "x = 3.14159; y = x**2"]:
        assert tok.encode(sample) == sp.encode(sample), sample
    eoh, eoa = sp.piece_to_id("<eoh>"), sp.piece_to_id("<eoa>")
    assert tok.encode("a<eoh>") == sp.encode("a") + [eoh] and tok.encode("b<eoa>") == sp.encode("b") + [eoa]
    for special in ("<eoh>", "<eoa>"):  # special: dropped from a decoded answer
        assert tok.decode(tok.encode(f"x = 2{special}")) == "x = 2", special
    prompt = tok.chat_prompt("1+1?")
    assert prompt == "<s><|User|>:1+1?<eoh>\n<|Bot|>:"
    assert tok.encode(prompt)[0] == 1 and eoa in tok.stop_ids
    assert tok.decode(sp.encode("Solve x + 1 = 2.")) == "Solve x + 1 = 2."
    info = json.loads((out / "model.json").read_text())
    assert info["tokenizer"].startswith("tokenizer.json converted from tokenizer.model")
    assert json.loads((out / "tokenizer_config.json").read_text())["answer_suffix"] == "<eoa>\n</s>"
