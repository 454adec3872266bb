"""tunebox's registered MindFormers model (tunebox/model/mf_extensions.py) changes how MindFormers' Llama
computes, never what: the CPU broadcast patch and the answer-only LM head give the stock network's loss
and every gradient, with prompt/pad labels (-100) in the batch."""

from __future__ import annotations

import numpy as np
import pytest
from test_decode import random_parameter

from tunebox.model import mf
from tunebox.model.registry import get_model_shape, llama_config_kwargs, with_overrides
from tunebox.training.plan import answer_capacity

TINY = get_model_shape("tiny")
VARIANTS = {
    "gqa-untied": TINY,
    "internlm-biases-tied": with_overrides(
        TINY, n_kv_heads=TINY.num_heads, qkv_has_bias=True, attn_proj_has_bias=True, tie_word_embeddings=True
    ),
}


def loss_and_grads(ms, cell, params, *arrays):
    """cell(*arrays) and its gradients with respect to `params`, as numpy, by parameter name."""
    loss, grads = ms.value_and_grad(lambda *xs: cell(*xs), None, params)(*[ms.Tensor(a) for a in arrays])
    return float(loss.asnumpy().reshape(-1)[0]), {p.name: g.asnumpy() for p, g in zip(params, grads)}


def tiny_lora_net(ms, spec, seq: int, batch: int, seed: int, **tunebox):
    """A Llama with random weights and LoRA r4 on wq|wv whose B is non-zero too (at init it is zero, and
    a zero path checks nothing), in training mode. Without `tunebox` keys: MindFormers' own
    LlamaForCausalLM (build_llama, CPU patch applied); with them (tunebox_answer_capacity=K,
    tunebox_packing=True): the registered TuneboxLlamaForCausalLM the train job runs."""

    if tunebox:
        from mindformers import LlamaConfig

        from tunebox.model.mf_extensions import TuneboxLlamaForCausalLM

        net = TuneboxLlamaForCausalLM(
            LlamaConfig(**llama_config_kwargs(spec, seq_length=seq, batch_size=batch), **tunebox)
        )
    else:
        net = mf.build_llama(spec, seq_length=seq, batch_size=batch)
    weights = np.random.default_rng(seed)
    for name, param in net.parameters_and_names():
        if "tunebox_" in name:  # the packing segment ids: an input, not a weight
            continue
        param.set_data(ms.Tensor(random_parameter(name, tuple(param.shape), weights)))
    net = mf.add_lora(net, 4, 8, 0.0, "wq|wv")
    for param in net.trainable_params():
        param.set_data(ms.Tensor(random_parameter(param.name, tuple(param.shape), weights) * 0.3))
    net.set_train(True)
    return net


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_patched_network_has_the_same_loss_and_gradients(mindformers_env, variant):
    from tunebox.model.mf_extensions import avoid_cpu_broadcast_tables

    ms, LlamaConfig, LlamaForCausalLM = mindformers_env
    spec = VARIANTS[variant]
    seq, batch = 16, 3
    rng = np.random.default_rng(7)
    ids = rng.integers(1, spec.vocab_size, size=(batch, seq + 1)).astype(np.int32)
    ids[0, 12:] = 0  # padding (pad id 0)
    labels = ids.copy()
    labels[:, :5] = -100  # prompt tokens: no loss
    labels[0, 12:] = -100
    results = []
    for patch in (False, True):
        net = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(spec, seq_length=seq, batch_size=batch)))
        weights = np.random.default_rng(1)
        for name, param in net.parameters_and_names():
            param.set_data(ms.Tensor(random_parameter(name, tuple(param.shape), weights)))
        if patch:
            assert avoid_cpu_broadcast_tables(net) >= 2 * spec.num_layers + 2
        net.set_train(True)
        results.append(loss_and_grads(ms, net, net.trainable_params(), ids, labels))
    (loss0, grads0), (loss1, grads1) = results
    assert np.isfinite(loss0) and loss0 > 1.0
    assert abs(loss1 - loss0) < 1e-5 * loss0
    assert grads0.keys() == grads1.keys() and len(grads0) > 0
    for name in grads0:
        scale = np.abs(grads0[name]).max() + 1e-12
        assert np.abs(grads1[name] - grads0[name]).max() < 1e-4 * scale, name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_answer_only_loss_equals_the_full_forward(mindformers_env, variant):
    """TuneboxLlamaForCausalLM with tunebox_answer_capacity runs the LM head on the counted positions
    only: same loss, same gradients as MindFormers' forward over every position, LoRA included (its B
    set non-zero). A capacity below the most counted positions of a row must change the loss: that is
    what the train job's answer_capacity guards against."""

    ms = mindformers_env[0]
    spec = VARIANTS[variant]
    seq, batch = 16, 3
    rng = np.random.default_rng(11)
    ids = rng.integers(1, spec.vocab_size, size=(batch, seq + 1)).astype(np.int32)
    ids[1, 10:] = 0
    labels = ids.copy()
    labels[:, :6] = -100
    labels[1, 10:] = -100
    labels[2, 8] = -100  # a hole inside an answer: not counted
    counted = ((ids[:, :-1] != 0) & (labels[:, 1:] >= 0)).sum(axis=1)
    assert answer_capacity(ids, labels, 0) == min(-(-int(counted.max()) // 8) * 8, seq)
    results = {}
    for name, keys in (
        ("stock", {}),
        ("answer_only", {"tunebox_answer_capacity": int(counted.max()) + 2}),
        ("full_head", {"tunebox_answer_capacity": 0}),
        ("too_small", {"tunebox_answer_capacity": int(counted.max()) - 2}),
    ):
        net = tiny_lora_net(ms, spec, seq, batch, seed=2, **keys)
        results[name] = loss_and_grads(ms, net, net.trainable_params(), ids, labels)
    loss0, grads0 = results["stock"]
    assert np.isfinite(loss0) and loss0 > 1.0
    for name in ("answer_only", "full_head"):
        loss1, grads1 = results[name]
        assert abs(loss1 - loss0) < 1e-5 * loss0, (name, loss1, loss0)
        assert grads1.keys() == grads0.keys()
        for key in grads0:
            scale = np.abs(grads0[key]).max()
            assert scale > 0 and np.abs(grads1[key] - grads0[key]).max() < 1e-4 * scale, (name, key)
    assert abs(results["too_small"][0] - loss0) > 1e-4 * loss0  # the negative control
