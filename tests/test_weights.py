"""Model weights: the tiny random model, HF safetensors -> MindFormers conversion (checked
against a numpy Llama forward), and the real SmolLM2 from its GGUF (slow)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jobs import convert
from tunebox.model import weights
from tunebox.io import InputError, sha256_file
from tunebox.model.checkpoint import bfloat16_bits_to_float32, load_checkpoint_numpy
from tunebox.model.registry import get_model_shape, llama_config_kwargs, with_overrides
from tunebox.data.tokenizer import TextTokenizer

TINY = get_model_shape("tiny")
# InternLM's layout (MHA, biases on q/k/v/o) at tiny size.
TINY_INTERNLM = with_overrides(TINY, name="tiny-internlm", n_kv_heads=TINY.num_heads,
                               qkv_has_bias=True, attn_proj_has_bias=True, rms_norm_eps=1e-6)


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
        b = rng.normal(size=rows)    # 1-D (bias) rows permute the same way
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
    with pytest.raises(InputError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight.*shape \[64, 64\], "
                                         r"expected \[32, 64\]"):
        weights.convert_hf_checkpoint(hf_dir, out, TINY, progress=False)
    assert not out.exists()

    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf2", TINY, seed=0, shards=1)
    _rewrite_shard(hf_dir, "model.layers.0.mlp.up_proj.weight", None)
    with pytest.raises(InputError, match=r"missing tensors: model\.layers\.0\.feed_forward\.w3\.weight"):
        weights.convert_hf_checkpoint(hf_dir, out, TINY, progress=False)

    # An InternLM checkpoint (biases) given with the plain Llama spec: the bias is named.
    hf_dir = weights.make_random_hf_checkpoint(tmp_path / "hf3", TINY_INTERNLM, seed=0, shards=2)
    (hf_dir / "config.json").unlink()      # else the head-count check stops it first
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
    np.testing.assert_array_equal(bfloat16_bits_to_float32(bits),
                                  np.array([1.0, -2.0, 0.333984375, np.inf, 0.0], dtype=np.float32))


# ---- SmolLM2 (slow: ~100 MB download on first run, then cached) --------------------------------

@pytest.fixture(scope="session")
def smollm2_dir():
    """Converted once and kept in the real cache ($TUNEBOX_CACHE or ~/.cache/tunebox), so later
    runs and other test files reuse it."""
    started = time.perf_counter()
    d = weights.ensure_model("smollm2-135m", progress=False)
    print(f"\nsmollm2-135m ready in {time.perf_counter() - started:.1f}s "
          f"(conversion recorded: {weights.read_model_info(d)['conversion_seconds']}s)")
    return d


@pytest.mark.slow
def test_smollm2_converts_with_spec_shapes(smollm2_dir):
    shape = get_model_shape("smollm2-135m")
    info = weights.read_model_info(smollm2_dir)
    assert info["source"] == shape.source and len(info["source_sha256"]) == 64
    arrays = load_checkpoint_numpy(smollm2_dir / "model.ckpt")
    assert {n: a.shape for n, a in arrays.items()} == shape.parameter_shapes()
    assert "lm_head.weight" not in arrays     # tied to the embedding
    assert all(np.isfinite(a).all() for a in arrays.values())
    assert sha256_file(smollm2_dir / "model.ckpt") == info["files"]["model.ckpt"]["sha256"]


@pytest.mark.slow
def test_smollm2_tokenizer_round_trips(smollm2_dir):
    shape = get_model_shape("smollm2-135m")
    tok = TextTokenizer.load(smollm2_dir)
    assert tok.vocab_size == shape.vocab_size
    assert tok.config["bos_token"] == "<|im_start|>" and tok.eos_id == shape.eos_token_id
    assert tok.stop_ids == [shape.eos_token_id]          # <|im_end|> is the EOS
    for text in ("The quick brown fox jumps over the lazy dog.\n  Indented line, tabs\tand émoji 🎉",
                 "机器学习是人工智能的一个分支。你好，世界！",
                 "def f(x):\n    return x ** 2  # 3.14159"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert len(ids) < len(text.encode("utf-8"))     # merges are used, not bytes alone
    pieces = [tok.tk.id_to_token(i) for i in tok.encode("Hello world 2024")]
    assert pieces == ["Hello", "Ġworld", "Ġ", "2", "0", "2", "4"]     # digits split one by one
    prompt = tok.chat_prompt("What is the capital of France?")
    ids = tok.encode(prompt)
    assert ids.count(tok.token_id("<|im_start|>")) == 3 and ids.count(tok.eos_id) == 2   # system, user
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
        buf[0, :len(ids)] = ids
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
    net = build_llama(shape, 64, "graph")      # one compile, then ~0.6 s per step on 2 cores
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(smollm2_dir / "model.ckpt")))
    assert not_loaded == [] and unused == []
    answer = greedy_answer(net, tok, tok.chat_prompt("What is the capital of France?"), 64, 12)
    print(f"\ngreedy answer: {answer!r}")
    assert "Paris" in answer


# ---- the training loss, checked without torch --------------------------------------------------

def reference_loss(hf: dict[str, np.ndarray], spec, ids: np.ndarray, labels: np.ndarray, shift: int = 1,
                   counted: str = "labels") -> float:
    """Cross-entropy in float64 over reference_logits: row r's token t predicts labels[r, t + shift];
    the mean over the positions whose label is not -100 (counted="all": every position, -100 read
    as token 0; a negative control)."""
    losses = []
    for row_ids, row_labels in zip(ids, labels):
        tokens = [int(t) for t in row_ids[:-1]]
        logits = reference_logits(hf, spec, tokens)
        logp = logits - (logits.max(-1, keepdims=True)
                         + np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)))
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

    from tunebox.model import mf
    from tunebox.data.samples import read_mindrecord

    ids, labels = read_mindrecord(tiny_run["run_dir"] / "prep" / "train.mindrecord")
    ids, labels = ids[:3], labels[:3]
    assert ((labels == -100).sum(axis=1) > 10).all() and ((labels != -100).sum(axis=1) > 5).all()
    assert (ids == TINY.pad_token_id).any(), "the rows should end in padding"
    counted = labels != -100
    assert (labels[counted] == ids[counted]).all()     # answer-only labels: the ids, the prompt masked

    merged = json.loads((tiny_run["run_dir"] / "merge" / "index.json").read_text())["checkpoints"][-1]
    ckpt = tiny_run["run_dir"] / "merge" / merged["file"]
    hf = {weights.mindformers_name_to_hf(n): a for n, a in load_checkpoint_numpy(ckpt).items()}

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    net = mf.build_llama(TINY, seq_length=ids.shape[1] - 1, batch_size=len(ids), checkpoint=ckpt)
    net.set_train(True)
    got = float(net(ms.Tensor(ids.astype(np.int32)), ms.Tensor(labels.astype(np.int32))).asnumpy())
    want = reference_loss(hf, TINY, ids, labels)
    assert abs(got - want) < 2e-6 * want, (got, want)     # float32 against float64
    # negative controls: the check sees a one-token shift and a loss over every position
    for wrong in (reference_loss(hf, TINY, ids, labels, shift=0), reference_loss(hf, TINY, ids, labels, counted="all")):
        assert abs(wrong - want) > 100 * abs(got - want) + 1e-3, (wrong, want)
