"""Batched greedy decoding on CPU in numpy, numerically matching MindFormers' Llama.

MindFormers 1.9's generate() does not run on CPU, so evaluation decodes here instead. The model
is the MindFormers LlamaForCausalLM forward re-expressed in float32 numpy:

    h = embedding[ids]
    per layer:  h += wo(attention(rope(wq x), rope(wk x), wv x))   with x = rms_norm(h)
                h += w2(silu(w1 x) * w3 x)                          with x = rms_norm(h)
    logits = lm_head(rms_norm(h))                                   (lm_head = embedding when tied)

Details follow mindformers/models/llama/llama_transformer.py and modules/layers.py as configured
for CPU (use_rope_slice=True, no flash attention): RMSNorm is x * rsqrt(mean(x^2) + eps) * w;
rotary tables come from FreqsMgr (freqs = theta^(-2i/d), angle table concatenated twice, so the
rotation pairs dimension i with i + d/2: x*cos + concat(-x2, x1)*sin); scores are scaled after
the q.k product; kv heads are shared by consecutive query heads (head h reads kv head h // rep).

One deliberate difference: MindFormers masks every key column whose token equals pad_token_id
(LowerTriangularMaskWithDynamic). Here padding is known by position (left padding), so a prompt
that legitimately contains the pad id (SmolLM2 uses eos as pad) is attended to normally.

`greedy_generate` is the fast path (sorted-length batches, left padding, one prefill, then one
token per step against a preallocated KV cache, the next token picked by `greedy_tokens`, the LM
head's argmax without the logits). `generate_no_cache` is the slow reference (whole logits, plain
argmax) the tests and the benchmark compare it with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from tunebox.io import InputError
from tunebox.model.registry import ModelShape

# Added to the scores of masked key columns. Finite (not -inf) so that a query row with every
# column masked — the pad rows of a left-padded prompt, whose outputs are never read — yields a
# uniform softmax instead of NaN.
MASKED_SCORE = np.float32(-1e9)

# Upper bound for one block of attention scores during prefill; long prompts in a full batch
# are split into row groups so the [rows, heads, T, S] score array stays within it.
ATTENTION_SCORE_BYTES = 256 << 20

# Vocabulary columns per block of the LM head in greedy_tokens: a [batch, chunk] float32 block stays
# in cache while its argmax is taken, instead of a [batch, vocab] logits array per step.
LM_HEAD_CHUNK = 8192


@dataclass
class LayerWeights:
    """One decoder layer, ready for `x @ W` (q/k/v and w1/w3 fused into one matmul each).

    Each W is the transposed view of a C-contiguous [out, in] matrix, i.e. Fortran-ordered
    [in, out]: numpy hands it to BLAS with the transpose flag, no copy per call. It was chosen when
    decode steps ran one gemv per batch row (each output a dot product over a contiguous row); since
    hidden_states runs one 2-D gemm per weight, whether a C-ordered [in, out] copy is faster is open:
    measure it on a quiet machine (benches/bench_eval.py) before changing it.
    """

    attention_norm: np.ndarray  # [hidden]
    wqkv: np.ndarray  # [hidden, hidden + 2 * kv_dim]
    qkv_bias: Optional[np.ndarray]  # [hidden + 2 * kv_dim]
    wo: np.ndarray  # [hidden, hidden]
    wo_bias: Optional[np.ndarray]  # [hidden]
    ffn_norm: np.ndarray  # [hidden]
    w13: np.ndarray  # [hidden, 2 * intermediate]: gate (w1) then up (w3)
    w2: np.ndarray  # [intermediate, hidden]


class KVCache:
    """Keys and values of every layer: [layers][batch, kv_heads, capacity, head_dim] float32,
    allocated once per batch; column c holds the token fed at step c (pads included)."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int):
        shape = (batch, kv_heads, capacity, head_dim)
        self.keys = [np.zeros(shape, np.float32) for _ in range(num_layers)]
        self.values = [np.zeros(shape, np.float32) for _ in range(num_layers)]
        self.capacity = capacity

    def keep_rows(self, rows: np.ndarray) -> None:
        """Drop finished rows so later steps compute only the live ones."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


def rope_tables(head_dim: int, theta: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [length, head_dim] computed with the same float32 numpy ops as MindFormers'
    FreqsMgr (modules/layers.py), so angles agree bit for bit."""
    freqs_base = np.arange(0, head_dim, 2)[: (head_dim // 2)].astype(np.float32)
    freqs = 1.0 / (theta ** (freqs_base / head_dim))
    t = np.arange(0, length, 1).astype(np.float32)
    angles = np.outer(t, freqs)
    emb = np.concatenate((angles, angles), axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    scale = 1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + np.float32(eps))
    return (x * scale) * weight


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x * cos + concat(-x2, x1) * sin over the last axis (MindFormers' slice_half path)."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out


def _matmul_ready(weight_out_in: np.ndarray) -> np.ndarray:
    """[out, in] -> the [in, out] operand of `x @ W` (see LayerWeights)."""
    return np.ascontiguousarray(weight_out_in).T


def silu_gate(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up = gate / (1 + exp(-gate)) * up, computed in one new array."""
    out = np.negative(gate)
    with np.errstate(over="ignore"):  # exp(-x) -> inf for x < -88 gives the right limit, -0
        np.exp(out, out=out)
    out += np.float32(1.0)
    np.divide(gate, out, out=out)
    out *= up
    return out


class NumpyLlama:
    """A MindFormers LlamaForCausalLM in float32 numpy, built from its parameters by name."""

    def __init__(
        self, params: dict[str, np.ndarray], shape: ModelShape, *, source: str = "parameters", _consume: bool = False
    ):
        self.spec = shape
        self.num_layers = shape.num_layers
        self.hidden = shape.hidden_size
        self.num_heads = shape.num_heads
        self.kv_heads = shape.n_kv_heads
        self.head_dim = shape.head_dim
        self.kv_dim = shape.kv_dim
        self.eps = shape.rms_norm_eps
        if shape.num_heads % shape.n_kv_heads:
            raise ValueError(
                f"{shape.name}: num_heads {shape.num_heads} is not a multiple of n_kv_heads {shape.n_kv_heads}"
            )
        self.group = shape.num_heads // shape.n_kv_heads
        self._check_parameters(params, source)
        take = params.pop if _consume else params.__getitem__

        def f32(name: str) -> np.ndarray:
            return np.asarray(take(name), dtype=np.float32)

        self.embedding = np.ascontiguousarray(f32("model.tok_embeddings.embedding_weight"))
        self.layers: list[LayerWeights] = []
        for i in range(shape.num_layers):
            p = f"model.layers.{i}."
            wqkv = np.concatenate(
                [f32(p + "attention.wq.weight"), f32(p + "attention.wk.weight"), f32(p + "attention.wv.weight")], axis=0
            )
            qkv_bias = None
            if shape.qkv_has_bias:
                qkv_bias = np.concatenate(
                    [f32(p + "attention.wq.bias"), f32(p + "attention.wk.bias"), f32(p + "attention.wv.bias")]
                )
            w13 = np.concatenate([f32(p + "feed_forward.w1.weight"), f32(p + "feed_forward.w3.weight")], axis=0)
            self.layers.append(
                LayerWeights(
                    attention_norm=f32(p + "attention_norm.weight"),
                    wqkv=_matmul_ready(wqkv),
                    qkv_bias=qkv_bias,
                    wo=_matmul_ready(f32(p + "attention.wo.weight")),
                    wo_bias=f32(p + "attention.wo.bias") if shape.attn_proj_has_bias else None,
                    ffn_norm=f32(p + "ffn_norm.weight"),
                    w13=_matmul_ready(w13),
                    w2=_matmul_ready(f32(p + "feed_forward.w2.weight")),
                )
            )
        self.norm_out = f32("model.norm_out.weight")
        # Tied: the embedding itself, no second copy of the largest matrix of a small model.
        self.lm_head = self.embedding.T if shape.tie_word_embeddings else _matmul_ready(f32("lm_head.weight"))
        self._cos, self._sin = rope_tables(self.head_dim, shape.rope_theta, shape.max_position)

    def _check_parameters(self, params: dict, source: str) -> None:
        expected = self.spec.parameter_shapes()
        missing = [n for n in expected if n not in params]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(
                f"missing {len(missing)} parameter(s) of model {self.spec.name!r}: {shown}; "
                f"is this a full (merged) checkpoint of that model?",
                source,
            )
        for name, shape in expected.items():
            got = tuple(np.shape(params[name]))
            if got != shape:
                raise InputError(
                    f"parameter {name} has shape {got}, model {self.spec.name!r} expects {shape}; "
                    f"check that the checkpoint belongs to this model",
                    source,
                )

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], shape: ModelShape) -> "NumpyLlama":
        """Load the model's parameters from a MindSpore .ckpt (optimizer state and other extras
        in the file are skipped at load)."""
        import mindspore as ms

        path = Path(path)
        if not path.is_file():
            raise InputError("checkpoint not found; point the run spec at a .ckpt file", path)
        wanted = set(shape.parameter_shapes())
        loaded = ms.load_checkpoint(str(path), choice_func=lambda name: name in wanted)
        params = {}
        for name in list(loaded):
            tensor = loaded.pop(name)
            if tensor.dtype != ms.float32:
                tensor = tensor.astype(ms.float32)
            params[name] = tensor.asnumpy()
        return cls(params, shape, source=str(path), _consume=True)

    # -- forward --------------------------------------------------------------------------

    def rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin rows for an int array of positions, extending the tables if needed."""
        needed = int(positions.max()) + 1 if positions.size else 0
        if needed > len(self._cos):
            self._cos, self._sin = rope_tables(self.head_dim, self.spec.rope_theta, max(needed, 2 * len(self._cos)))
        return self._cos[positions], self._sin[positions]

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache(self.num_layers, batch, self.kv_heads, capacity, self.head_dim)

    def forward(self, *inputs, **options) -> np.ndarray:
        """Logits [B, T, vocab] (or [B, vocab] with last_only): the LM head on hidden_states(*inputs,
        **options), whose arguments these are."""
        h = self.hidden_states(*inputs, **options)
        return self._flat_matmul(rms_norm(h, self.norm_out, self.eps), self.lm_head)

    def hidden_states(
        self,
        token_ids: np.ndarray,
        positions: np.ndarray,
        key_valid: np.ndarray,
        cache: Optional[KVCache] = None,
        cache_start: int = 0,
        last_only: bool = False,
    ) -> np.ndarray:
        """The last layer's output before the final norm: [B, T, hidden], or [B, hidden] with
        last_only, for tokens [B, T] at `positions`.

        key_valid [B, S] says which key columns may be attended (False for left padding), where
        S = cache_start + T with a cache (columns before cache_start are already in it) and
        S = T without one. Causality is added here.

        Every weight matmul runs on the rows flattened to [B * T, in]: one BLAS gemm per weight.
        On a [B, T, in] operand numpy calls BLAS once per batch row instead, which at T = 1 (a
        decode step) reads each weight matrix B times.
        """
        batch, steps = token_ids.shape
        rows = batch * steps
        total = cache_start + steps
        if key_valid.shape != (batch, total):
            raise ValueError(f"key_valid has shape {key_valid.shape}, expected {(batch, total)}")
        if cache is None and cache_start:
            raise ValueError("cache_start > 0 needs a cache holding the earlier columns")
        if cache is not None and total > cache.capacity:
            raise ValueError(f"{total} columns exceed the cache capacity {cache.capacity}")
        cos, sin = self.rope(positions)  # [B, T, head_dim]
        cos_q, sin_q = cos[:, None, None], sin[:, None, None]  # against [B, kv, group, T, d]
        cos_k, sin_k = cos[:, None], sin[:, None]  # against [B, kv, T, d]
        causal = np.arange(total)[None, :] <= (cache_start + np.arange(steps))[:, None]  # [T, S]
        mask = np.where(causal[None] & key_valid[:, None, :], np.float32(0), MASKED_SCORE)  # [B, T, S]

        h = self.embedding[token_ids.reshape(rows)]  # [B * T, hidden], a copy: updated in place below
        hidden, kv_dim = self.hidden, self.kv_dim
        for index, layer in enumerate(self.layers):
            qkv = rms_norm(h, layer.attention_norm, self.eps) @ layer.wqkv
            if layer.qkv_bias is not None:
                qkv += layer.qkv_bias
            q = qkv[:, :hidden].reshape(batch, steps, self.kv_heads, self.group, self.head_dim)
            k = qkv[:, hidden : hidden + kv_dim].reshape(batch, steps, self.kv_heads, self.head_dim)
            v = qkv[:, hidden + kv_dim :].reshape(batch, steps, self.kv_heads, self.head_dim)
            q = apply_rope(q.transpose(0, 2, 3, 1, 4), cos_q, sin_q)
            k = apply_rope(k.transpose(0, 2, 1, 3), cos_k, sin_k)
            v = v.transpose(0, 2, 1, 3)
            if cache is not None:
                cache.keys[index][:, :, cache_start:total] = k
                cache.values[index][:, :, cache_start:total] = v
                k = cache.keys[index][:, :, :total]
                v = cache.values[index][:, :, :total]
            context = self._attention(q, k, v, mask)  # [B, T, hidden]
            out = context.reshape(rows, hidden) @ layer.wo
            if layer.wo_bias is not None:
                out += layer.wo_bias
            h += out
            gate_up = rms_norm(h, layer.ffn_norm, self.eps) @ layer.w13
            inter = gate_up.shape[-1] // 2
            h += silu_gate(gate_up[:, :inter], gate_up[:, inter:]) @ layer.w2
        h = h.reshape(batch, steps, hidden)
        return h[:, -1] if last_only else h

    @staticmethod
    def _flat_matmul(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """x [..., in] @ weight as one 2-D gemm (see hidden_states)."""
        return (x.reshape(-1, x.shape[-1]) @ weight).reshape(*x.shape[:-1], weight.shape[-1])

    def greedy_tokens(self, h: np.ndarray, banned: Optional[tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
        """argmax(lm_head(rms_norm(h))) per row of h [B, hidden] without the [B, vocab] logits: the LM
        head runs on LM_HEAD_CHUNK vocabulary columns at a time and keeps each row's best so far.
        Ties go to the lowest id, as np.argmax over the whole row. banned = (rows, ids): those ids
        cannot be chosen in those rows (min_new_tokens holding back the stop tokens)."""
        x = rms_norm(h, self.norm_out, self.eps)
        batch, vocab = x.shape[0], self.lm_head.shape[1]
        best = np.full(batch, -np.inf, np.float32)
        best_id = np.zeros(batch, np.int64)
        every_row = np.arange(batch)
        for lo in range(0, vocab, LM_HEAD_CHUNK):
            block = x @ self.lm_head[:, lo : lo + LM_HEAD_CHUNK]  # [B, chunk]
            if banned is not None:
                rows, ids = banned
                inside = ids[(ids >= lo) & (ids < lo + block.shape[1])] - lo
                if rows.size and inside.size:
                    block[np.ix_(rows, inside)] = -np.inf
            top = block.argmax(axis=1)
            value = block[every_row, top]
            better = value > best  # strict: an equal value in a later chunk has a higher id
            best[better] = value[better]
            best_id[better] = top[better] + lo
        return best_id

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """q [B, kv, group, T, d]; k, v [B, kv, S, d]; mask [B, T, S] additive -> [B, T, hidden]."""
        batch, _, _, steps, _ = q.shape
        total = k.shape[2]
        scale = np.float32(1.0 / np.sqrt(self.head_dim))
        per_row = self.num_heads * steps * total * 4
        rows_per_block = max(1, ATTENTION_SCORE_BYTES // max(per_row, 1))
        out = np.empty((batch, steps, self.hidden), np.float32)
        for lo in range(0, batch, rows_per_block):
            hi = min(batch, lo + rows_per_block)
            n = hi - lo
            # Query heads sharing a kv head are stacked along the row axis of one matmul.
            qb = q[lo:hi].reshape(n, self.kv_heads, self.group * steps, self.head_dim)
            scores = np.matmul(qb, k[lo:hi].swapaxes(-1, -2))
            scores = scores.reshape(n, self.kv_heads, self.group, steps, total)
            scores *= scale
            scores += mask[lo:hi, None, None]
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = np.matmul(scores.reshape(n, self.kv_heads, self.group * steps, total), v[lo:hi])
            context = context.reshape(n, self.kv_heads, self.group, steps, self.head_dim)
            out[lo:hi] = context.transpose(0, 3, 1, 2, 4).reshape(n, steps, self.hidden)
        return out

    def logits(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits [B, T, vocab] for equal-length, unpadded sequences; no cache."""
        ids = np.asarray(token_ids, dtype=np.int64)
        self.check_token_ids(ids.tolist())
        batch, steps = ids.shape
        positions = np.broadcast_to(np.arange(steps), (batch, steps))
        return self.forward(ids, positions, np.ones((batch, steps), bool))

    def check_token_ids(self, prompts: Sequence[Sequence[int]]) -> None:
        vocab = self.spec.vocab_size
        for row, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {row} is empty; every prompt needs at least one token")
            low, high = min(prompt), max(prompt)
            if low < 0 or high >= vocab:
                raise ValueError(
                    f"prompt {row} has token id {low if low < 0 else high} outside the "
                    f"vocabulary [0, {vocab}) of model {self.spec.name!r}"
                )


# -- generation ---------------------------------------------------------------------------


Prompts = Sequence[Sequence[int]]
NewTokenLimits = Union[int, Sequence[int]]
"""One limit for every prompt, or one per prompt."""


def _request(
    model: NumpyLlama, prompts: Prompts, max_new_tokens: NewTokenLimits, stop_ids: Sequence[int]
) -> tuple[list[list[int]], list[int], set[int]]:
    """The prompts as int lists (checked against the vocabulary), one limit per prompt, the stop set."""
    prompts = [list(map(int, p)) for p in prompts]
    if isinstance(max_new_tokens, (int, np.integer)):
        limits = [int(max_new_tokens)] * len(prompts)
    else:
        limits = [int(m) for m in max_new_tokens]
        if len(limits) != len(prompts):
            raise ValueError(f"max_new_tokens has {len(limits)} entries for {len(prompts)} prompts")
    if any(m < 0 for m in limits):
        raise ValueError("max_new_tokens must be >= 0")
    model.check_token_ids(prompts)
    return prompts, limits, set(int(s) for s in stop_ids)


def _generate_batch(
    model: NumpyLlama, prompts: list[list[int]], limits: list[int], stop: set[int], pad_id: int, min_new_tokens: int = 0
) -> list[list[int]]:
    """One left-padded batch: prefill once, then one token per step from the KV cache. A row cannot
    stop (its stop tokens are masked) before it has min_new_tokens tokens."""
    batch = len(prompts)
    lengths = np.array([len(p) for p in prompts])
    width = int(lengths.max())
    # The last token a row may produce is never fed back, so it needs no cache column.
    capacity = width + max(limits) - 1
    pads = width - lengths
    tokens = np.full((batch, width), pad_id, np.int64)
    for row, prompt in enumerate(prompts):
        tokens[row, pads[row] :] = prompt
    positions = np.maximum(np.arange(width)[None, :] - pads[:, None], 0)  # 0 at each row's first real token
    key_valid = np.arange(capacity)[None, :] >= pads[:, None]

    cache = model.new_cache(batch, capacity)
    h = model.hidden_states(tokens, positions, key_valid[:, :width], cache=cache, cache_start=0, last_only=True)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    live = np.arange(batch)  # original row of each cache row still decoding
    column = width
    stop_list = np.array(sorted(stop), dtype=np.int64)
    while True:
        banned = None
        if min_new_tokens > 0 and stop_list.size:
            early = np.flatnonzero([len(outputs[row]) < min_new_tokens for row in live])
            banned = (early, stop_list) if early.size else None
        next_ids = model.greedy_tokens(h, banned)
        keep = []
        for j, row in enumerate(live):
            token = int(next_ids[j])
            if token in stop:
                continue
            outputs[row].append(token)
            if len(outputs[row]) < limits[row]:
                keep.append(j)
        if not keep:
            return outputs
        if len(keep) < len(live):
            keep_idx = np.array(keep)
            cache.keep_rows(keep_idx)
            live, next_ids, key_valid = live[keep_idx], next_ids[keep_idx], key_valid[keep_idx]
        step_positions = (lengths[live] + column - width)[:, None]
        h = model.hidden_states(
            next_ids[:, None],
            step_positions,
            key_valid[:, : column + 1],
            cache=cache,
            cache_start=column,
            last_only=True,
        )
        column += 1


PREFILL_TOKEN_BUDGET = 8192
"""Padded prompt tokens per batch at most (rows x longest prompt): similar lengths share a batch."""


def length_groups(lengths: Sequence[int], max_rows: int, token_budget: int) -> list[list[int]]:
    """Indices grouped shortest first: at most max_rows per group, and rows x longest length
    within token_budget (a prompt longer than the budget gets a group of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_rows or (len(current) + 1) * lengths[i] > token_budget):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def greedy_generate(
    model: NumpyLlama,
    prompts: Prompts,
    max_new_tokens: NewTokenLimits,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 16,
    progress: bool = True,
    min_new_tokens: int = 0,
    token_budget: int = PREFILL_TOKEN_BUDGET,
    desc: str = "greedy decode",
) -> list[list[int]]:
    """Greedy continuation of each prompt: the new tokens only, the stop token excluded, in the
    caller's order. max_new_tokens is one limit for all or one per prompt; no row stops before
    min_new_tokens tokens (as MindFormers' and HF's min_new_tokens). Prompts of similar length
    share a batch of at most batch_size rows and token_budget padded prompt tokens, so one long
    prompt (a SQuAD passage) does not pad a whole batch to its length."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    prompts, limits, stop = _request(model, prompts, max_new_tokens, stop_ids)
    results: list[list[int]] = [[] for _ in prompts]
    todo = [i for i in range(len(prompts)) if limits[i] > 0]
    started, produced = time.perf_counter(), 0
    with tqdm(total=len(prompts), unit="prompt", desc=desc, disable=not progress) as bar:
        bar.update(len(prompts) - len(todo))
        for group in length_groups([len(prompts[i]) for i in todo], batch_size, token_budget):
            chunk = [todo[g] for g in group]
            outputs = _generate_batch(
                model, [prompts[i] for i in chunk], [limits[i] for i in chunk], stop, pad_id, min_new_tokens
            )
            for i, out in zip(chunk, outputs):
                results[i] = out
                produced += len(out)
            bar.update(len(chunk))
            bar.set_postfix(tok_per_s=f"{produced / max(time.perf_counter() - started, 1e-9):.1f}")
    return results


def generate_no_cache(
    model: NumpyLlama, prompts: Prompts, max_new_tokens: NewTokenLimits, stop_ids: Sequence[int], progress: bool = True
) -> list[list[int]]:
    """The reference: one prompt at a time, the whole sequence re-run for every new token."""
    prompts, limits, stop = _request(model, prompts, max_new_tokens, stop_ids)
    results = []
    for prompt, limit in tqdm(
        list(zip(prompts, limits)), unit="prompt", desc="greedy decode (no cache)", disable=not progress
    ):
        sequence, out = list(prompt), []
        while len(out) < limit:
            ids = np.asarray([sequence], dtype=np.int64)
            logits = model.forward(ids, np.arange(len(sequence))[None, :], np.ones(ids.shape, bool), last_only=True)
            token = int(logits[0].argmax())
            if token in stop:
                break
            out.append(token)
            sequence.append(token)
        results.append(out)
    return results
