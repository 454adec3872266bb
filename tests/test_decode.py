"""The numpy decoder against MindFormers itself, and the cached batched path against the naive one."""

from __future__ import annotations

import numpy as np
import pytest

from tunebox.evaluation import decode
from tunebox.evaluation.decode import NumpyLlama, generate_no_cache, greedy_generate
from tunebox.io import InputError
from tunebox.model.registry import get_model_shape, llama_config_kwargs, with_overrides

TINY = get_model_shape("tiny")

# Variants of the registry's tiny model covering every branch of the forward.
VARIANTS = {
    "gqa-untied": TINY,
    "mha-tied-theta": with_overrides(TINY, n_kv_heads=TINY.num_heads, tie_word_embeddings=True, rope_theta=500000.0),
    "internlm-biases-tied": with_overrides(
        TINY,
        n_kv_heads=TINY.num_heads,
        qkv_has_bias=True,
        attn_proj_has_bias=True,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    ),
    "internlm-biases-untied": with_overrides(
        TINY, n_kv_heads=TINY.num_heads, qkv_has_bias=True, attn_proj_has_bias=True, tie_word_embeddings=False
    ),
}


def random_parameter(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Weights large enough that attention is far from uniform and logits are well spread
    (MindFormers' own init, std 0.01 and zero biases, would make almost any forward look right)."""
    if name.endswith("norm.weight") or name.endswith("norm_out.weight"):
        return (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(".bias"):
        return (0.3 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith("embedding_weight"):
        return (0.3 * rng.standard_normal(shape)).astype(np.float32)
    return (rng.standard_normal(shape) / np.sqrt(shape[-1]) * 1.5).astype(np.float32)


def random_parameters(spec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: random_parameter(name, shape, rng) for name, shape in spec.parameter_shapes().items()}


def build_mindformers_llama(env, spec, seq_length: int, seed: int):
    """A MindFormers LlamaForCausalLM in eval mode with random weights; returns it and its
    parameters as numpy, by MindFormers name."""
    ms, LlamaConfig, LlamaForCausalLM = env
    net = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(spec, seq_length=seq_length)))
    net.set_train(False)
    rng = np.random.default_rng(seed)
    params = {}
    for name, param in net.parameters_and_names():
        value = random_parameter(name, tuple(param.shape), rng)
        param.set_data(ms.Tensor(value))
        params[name] = value
    return net, params


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_mindformers(mindformers_env, variant, tmp_path):
    spec = VARIANTS[variant]
    ms = mindformers_env[0]
    seq_length = 24
    net, params = build_mindformers_llama(mindformers_env, spec, seq_length, seed=len(variant))
    # The registry's shapes are exactly MindFormers' parameters (tied: no lm_head.weight).
    assert {n: tuple(p.shape) for n, p in params.items()} == spec.parameter_shapes()

    # Ids avoid pad_token_id: MindFormers masks every key column holding it, the numpy model
    # masks padding by position instead (see decode.py).
    ids = np.random.default_rng(7).integers(spec.pad_token_id + 3, spec.vocab_size, size=(3, seq_length))
    expected = net(ms.Tensor(ids.astype(np.int32)))[0].asnumpy()
    got = NumpyLlama(params, spec).logits(ids.tolist())
    assert got.shape == expected.shape == (3, seq_length, spec.vocab_size)
    assert expected.std() > 0.5, "weights too small for the comparison to mean anything"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    # The same weights through a MindSpore .ckpt file.
    ckpt = tmp_path / "model.ckpt"
    ms.save_checkpoint(net, str(ckpt))
    loaded = NumpyLlama.from_checkpoint(ckpt, spec).logits(ids[:1].tolist())
    np.testing.assert_allclose(loaded, expected[:1], atol=1e-4, rtol=0)


def test_checkpoint_of_another_model_is_refused():
    params = random_parameters(TINY, seed=0)
    del params["model.layers.1.feed_forward.w2.weight"]
    with pytest.raises(InputError, match=r"model\.layers\.1\.feed_forward\.w2\.weight"):
        NumpyLlama(params, TINY)
    params = random_parameters(with_overrides(TINY, hidden_size=32), seed=0)
    with pytest.raises(InputError, match="expects"):
        NumpyLlama(params, TINY)


@pytest.mark.parametrize("variant", ["gqa-untied", "internlm-biases-tied"])
def test_cached_batches_equal_no_cache_reference(variant):
    spec = VARIANTS[variant]
    model = NumpyLlama(random_parameters(spec, seed=3), spec)
    rng = np.random.default_rng(11)
    lengths = [1, 17, 5, 30, 9, 3, 12, 21]
    # Prompts may contain the pad id: padding is masked by position, not by token.
    prompts = [rng.integers(0, spec.vocab_size, size=n).tolist() for n in lengths]
    max_new = 10

    reference = generate_no_cache(model, prompts, max_new, stop_ids=[], progress=False)
    assert all(len(out) == max_new for out in reference)
    assert len({tuple(out) for out in reference}) > 1, "all rows decode alike: the comparison proves little"
    cached = greedy_generate(
        model, prompts, max_new, stop_ids=[], pad_id=spec.pad_token_id, batch_size=3, progress=False
    )
    assert cached == reference

    # A stop token some rows produce mid-way and others never: those rows end early (stop
    # token not returned) while the rest of their batch decodes on.
    def truncated(outputs, stop):
        return [out[: out.index(stop)] if stop in out else out for out in outputs]

    stop = next(
        t
        for out in reference
        for t in out[1:]
        if any(0 < len(o) < max_new for o in truncated(reference, t))
        and any(len(o) == max_new for o in truncated(reference, t))
    )
    expected = truncated(reference, stop)
    assert generate_no_cache(model, prompts, max_new, stop_ids=[stop], progress=False) == expected
    assert (
        greedy_generate(
            model, prompts, max_new, stop_ids=[stop], pad_id=spec.pad_token_id, batch_size=4, progress=False
        )
        == expected
    )

    # Per-prompt limits, including none at all.
    limits = [0, 4, 10, 1, 7, 2, 10, 3]
    per_prompt = greedy_generate(
        model, prompts, limits, stop_ids=[], pad_id=spec.pad_token_id, batch_size=16, progress=False
    )
    assert per_prompt == [out[:m] for out, m in zip(reference, limits)]


def test_batches_keep_within_the_padded_token_budget(monkeypatch):
    """One long prompt gets a batch of its own instead of padding its neighbours to its length; the
    outputs are the same as with one big batch."""

    spec = VARIANTS["gqa-untied"]
    model = NumpyLlama(random_parameters(spec, seed=3), spec)
    rng = np.random.default_rng(7)
    lengths = [3, 40, 5, 4, 6, 2]
    prompts = [rng.integers(0, spec.vocab_size, size=n).tolist() for n in lengths]
    whole = greedy_generate(
        model, prompts, 5, stop_ids=[], pad_id=spec.pad_token_id, batch_size=16, token_budget=10_000, progress=False
    )
    seen = []
    real = decode._generate_batch
    monkeypatch.setattr(
        decode, "_generate_batch", lambda m, batch, *a: seen.append([len(p) for p in batch]) or real(m, batch, *a)
    )
    split = greedy_generate(
        model, prompts, 5, stop_ids=[], pad_id=spec.pad_token_id, batch_size=4, token_budget=24, progress=False
    )
    assert split == whole
    assert seen == [[2, 3, 4, 5], [6], [40]]


def test_bad_prompts_are_named():
    model = NumpyLlama(random_parameters(TINY, seed=0), TINY)
    with pytest.raises(ValueError, match="prompt 1 has token id 384"):
        greedy_generate(model, [[5, 6], [7, TINY.vocab_size]], 3, stop_ids=[2], pad_id=0, progress=False)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        greedy_generate(model, [[]], 3, stop_ids=[2], pad_id=0, progress=False)
    with pytest.raises(ValueError, match="2 entries for 1 prompts"):
        greedy_generate(model, [[5]], [3, 3], stop_ids=[2], pad_id=0, progress=False)


def test_min_new_tokens_holds_back_the_stop_token():
    """A row whose greedy first token is the stop token answers nothing; with min_new_tokens=1 it writes
    its best non-stop token first (the SQuAD fix, eval.squad_min_new_tokens)."""
    spec = VARIANTS["gqa-untied"]
    model = NumpyLlama(random_parameters(spec, seed=3), spec)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, spec.vocab_size, size=n).tolist() for n in (4, 9, 13)]
    free = greedy_generate(model, prompts, 6, stop_ids=[], pad_id=spec.pad_token_id, batch_size=3, progress=False)
    stop = free[1][0]  # row 1 would stop at once
    plain = greedy_generate(model, prompts, 6, stop_ids=[stop], pad_id=spec.pad_token_id, batch_size=3, progress=False)
    assert plain[1] == []
    held = greedy_generate(
        model, prompts, 6, stop_ids=[stop], pad_id=spec.pad_token_id, batch_size=3, progress=False, min_new_tokens=1
    )
    assert len(held[1]) >= 1 and held[1][0] != stop
    # rows that never met the stop token early are unchanged
    for i in (0, 2):
        if stop not in free[i][:1]:
            assert held[i] == plain[i]


def test_greedy_tokens_is_the_argmax_of_the_logits_chunk_by_chunk(monkeypatch):
    """The fused LM-head argmax picks what np.argmax over the whole logits row picks: ties between chunks go
    to the lower id, banned ids are never chosen in banned rows only.
    Mutants: `value >= best` when merging chunks (a tie goes to the later chunk); banned ids not offset by the
    chunk start (`- lo` dropped); the ban applied to every row."""
    spec = VARIANTS["gqa-untied"]
    model = NumpyLlama(random_parameters(spec, seed=3), spec)
    chunk = 50
    monkeypatch.setattr(decode, "LM_HEAD_CHUNK", chunk)
    rng = np.random.default_rng(2)
    h = rng.standard_normal((6, spec.hidden_size)).astype(np.float32)
    logits = decode.rms_norm(h, model.norm_out, model.eps) @ model.lm_head
    np.testing.assert_array_equal(model.greedy_tokens(h), logits.argmax(axis=1))

    # Exact ties across chunks: ids 60 and 160 (chunks 1 and 3) hold the same column v, ids 75 and 120 the
    # same column w; rows 0-2 point along v, rows 3-5 along w, so each row's maximum appears twice.
    head = np.array(model.lm_head)
    v, w = (rng.standard_normal(spec.hidden_size).astype(np.float32) * 4 for _ in range(2))
    head[:, [60, 160]] = v[:, None]
    head[:, [75, 120]] = w[:, None]
    model.lm_head = head
    h = np.concatenate([np.tile(v / model.norm_out, (3, 1)), np.tile(w / model.norm_out, (3, 1))])
    h += 0.01 * rng.standard_normal(h.shape).astype(np.float32)
    tied = decode.rms_norm(h, model.norm_out, model.eps) @ head
    expected = tied.argmax(axis=1)
    assert expected.tolist() == [60, 60, 60, 75, 75, 75], "the ties are not each row's maximum"
    assert np.all(tied[:3, 60] == tied[:3, 160]) and np.all(tied[3:, 75] == tied[3:, 120])
    np.testing.assert_array_equal(model.greedy_tokens(h), expected)

    # Banned: rows 1 and 4 may not pick 60, 160, 75, 120; the other rows still may.
    banned_ids = np.array([60, 75, 120, 160])
    masked = tied.copy()
    masked[np.ix_([1, 4], banned_ids)] = -np.inf
    got = model.greedy_tokens(h, (np.array([1, 4]), banned_ids))
    np.testing.assert_array_equal(got, masked.argmax(axis=1))
    assert got[0] == 60 and got[3] == 75 and got[1] not in banned_ids and got[4] not in banned_ids


def test_silu_gate_is_silu_times_up_without_overflow_warnings():
    """silu(g) * up, also where exp(-g) overflows (g < -88: the limit -0, no warning, no NaN).
    Mutants: the errstate guard removed (a RuntimeWarning, an error here); `+ 1` before the exp."""
    gate = np.array([[-100.0, -3.0, -0.5, 0.0, 0.5, 3.0, 100.0]], np.float32)
    up = np.array([[2.0, -1.5, 0.25, 7.0, 3.0, -2.0, 0.5]], np.float32)
    expected = gate.astype(np.float64) / (1.0 + np.exp(-gate.astype(np.float64))) * up
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = decode.silu_gate(gate, up)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
