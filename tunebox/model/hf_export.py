"""A run's model in the formats the serving world reads (vLLM-Ascend, MindIE, transformers):

  write_hf_model      a full MindFormers checkpoint -> a Hugging Face Llama folder: config.json,
                      generation_config.json, tokenizer files, model.safetensors (shards + index when large)
  write_peft_adapter  a LoRA-only checkpoint -> adapter_config.json + adapter_model.safetensors (PEFT)

Parameter names go back through weights.mindformers_name_to_hf, the inverse of the table `invoke convert`
uses, so there is one name table. Tensors are written as they are stored (float32, float16 or bfloat16):
MindFormers' rotate-half q/k layout is HF's, so nothing is permuted. InternLM (biases on q, k, v and o)
is written as LlamaForCausalLM with attention_bias, which plain transformers loads.

The chat template in tokenizer_config.json renders the recipe's prompt (data.template, data.system_prompt),
so `apply_chat_template` gives the model exactly the text it was tuned and judged on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tunebox.data.prompts import prompt_parts
from tunebox.data.tokenizer import CHATML_TEMPLATE, TextTokenizer
from tunebox.io import InputError, atomic_write_json, atomic_write_text
from tunebox.model.checkpoint import CheckpointReader, TensorEntry, load_checkpoint_numpy, lora_pairs
from tunebox.model.registry import PEFT_NAMES, ModelShape
from tunebox.model.weights import mindformers_name_to_hf

# Largest safetensors shard: one shard is in memory while it is written.
MAX_SHARD_BYTES = 2 << 30

_TORCH_DTYPES = {"Float32": "float32", "Float16": "float16", "BFloat16": "bfloat16"}


def hf_llama_config(mspec: ModelShape, torch_dtype: str) -> dict:
    """config.json of the HF LlamaForCausalLM with the registry's figures."""
    if mspec.qkv_has_bias != mspec.attn_proj_has_bias:
        raise InputError(f"{mspec.name}: biases on q/k/v but not on o (or the reverse) have no HF Llama equivalent")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": mspec.hidden_size,
        "intermediate_size": mspec.intermediate_size,
        "num_hidden_layers": mspec.num_layers,
        "num_attention_heads": mspec.num_heads,
        "num_key_value_heads": mspec.n_kv_heads,
        "head_dim": mspec.head_dim,
        "vocab_size": mspec.vocab_size,
        "max_position_embeddings": mspec.max_position,
        "rms_norm_eps": mspec.rms_norm_eps,
        "rope_theta": mspec.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": mspec.qkv_has_bias,
        "mlp_bias": False,
        "tie_word_embeddings": mspec.tie_word_embeddings,
        "bos_token_id": mspec.bos_token_id,
        "eos_token_id": mspec.eos_token_id,
        "pad_token_id": mspec.pad_token_id,
        "torch_dtype": torch_dtype,
    }


def recipe_chat_template(tok: TextTokenizer, data) -> str:
    """A Jinja chat template that renders the recipe's prompt around the last user message: the model's
    own template when the recipe uses it unchanged (data.template chat, no system prompt), else the
    recipe's text before and after the problem, as string literals (escaped, so any text is safe)."""

    if data.template == "chat" and not data.system_prompt:
        return tok.config.get("chat_template") or CHATML_TEMPLATE
    before, _, after = prompt_parts(tok, data.template, data.system_prompt)
    literal = lambda text: json.dumps(text, ensure_ascii=False)  # noqa: E731  Jinja reads JSON's escapes
    return f"{{{{ {literal(before)} }}}}{{{{ messages[-1]['content'] }}}}{{{{ {literal(after)} }}}}"


def write_tokenizer(out: Path, tok: TextTokenizer, chat_template: str, mspec: ModelShape) -> list[str]:
    """tokenizer.json (as the jobs use it), an HF tokenizer_config.json and generation_config.json
    (every stop token of the template as eos, so generate() stops where the jobs stop)."""
    atomic_write_text(out / "tokenizer.json", tok.tk.to_str())
    atomic_write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": tok.config.get("bos_token"),
            "eos_token": tok.config.get("eos_token"),
            "pad_token": tok.config.get("pad_token") or tok.config.get("eos_token"),
            "model_max_length": tok.config.get("model_max_length", mspec.max_position),
            "clean_up_tokenization_spaces": False,
            "chat_template": chat_template,
        },
    )
    atomic_write_json(
        out / "generation_config.json",
        {
            "bos_token_id": mspec.bos_token_id,
            "eos_token_id": list(tok.stop_ids),
            "pad_token_id": tok.pad_id,
            "do_sample": False,
        },
    )
    return ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]


def _shards(entries: list[TensorEntry], max_bytes: int) -> list[list[TensorEntry]]:
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


def write_hf_model(
    out: Path,
    ckpt: Path,
    mspec: ModelShape,
    tok: TextTokenizer,
    chat_template: str,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> dict:
    """A full MindFormers checkpoint -> an HF Llama folder in `out`, an empty folder the caller renames
    into place when complete (io.atomic_dir)."""
    from safetensors.numpy import save_file

    expected = mspec.parameter_shapes()
    with CheckpointReader(ckpt) as reader:
        entries = [e for e in reader.entries() if e.name in expected]
        missing = [n for n in expected if n not in {e.name for e in entries}]
        if missing:
            raise InputError(
                f"missing {len(missing)} parameter(s) of {mspec.name}, e.g. {missing[0]}; "
                f"is this a full (merged) checkpoint?",
                ckpt,
            )
        for e in entries:
            if tuple(e.shape) != tuple(expected[e.name]):
                raise InputError(f"{e.name} has shape {list(e.shape)}, {mspec.name} has {list(expected[e.name])}", ckpt)
        types = {e.tensor_type for e in entries}
        if len(types) != 1 or next(iter(types)) not in _TORCH_DTYPES:
            raise InputError(f"tensor types {sorted(types)}: expected one of {', '.join(_TORCH_DTYPES)}", ckpt)
        torch_dtype = _TORCH_DTYPES[types.pop()]
        shards = _shards(entries, max_shard_bytes)
        weight_map = {}
        for k, shard in enumerate(shards, start=1):
            fname = "model.safetensors" if len(shards) == 1 else f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            tensors = {mindformers_name_to_hf(e.name): np.ascontiguousarray(reader.read(e)) for e in shard}
            save_file(tensors, str(out / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in tensors})
    if len(shards) > 1:
        atomic_write_json(
            out / "model.safetensors.index.json",
            {"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": weight_map},
        )
    atomic_write_json(out / "config.json", hf_llama_config(mspec, torch_dtype))
    write_tokenizer(out, tok, chat_template, mspec)
    return {"torch_dtype": torch_dtype, "tensors": len(entries), "shards": len(shards)}


def peft_module(mf_weight_name: str) -> str:
    """'model.layers.3.attention.wq.weight' -> 'q_proj' (PEFT's target module name)."""
    hf = mindformers_name_to_hf(mf_weight_name)
    module = hf.rsplit(".", 2)[-2]
    if module not in PEFT_NAMES:
        raise InputError(f"LoRA on {mf_weight_name} ({hf}) is not on a Llama projection")
    return module


def write_peft_adapter(
    out: Path, lora_ckpt: Path, *, rank: int, alpha: float, dropout: float, base_model: str, revision: str | None = None
) -> dict:
    """A LoRA-only MindFormers checkpoint -> adapter_model.safetensors + adapter_config.json in `out`.
    mindpet's LoRADense computes W x + (alpha / r) B (A x) with A [r, in] and B [out, r], which is
    PEFT's LoRA with lora_A.weight = A, lora_B.weight = B and scaling lora_alpha / r."""
    from safetensors.numpy import save_file

    lora = load_checkpoint_numpy(lora_ckpt)
    pairs = lora_pairs(lora, lora_ckpt)
    tensors, modules = {}, set()
    for weight, (a_key, b_key) in pairs.items():
        a, b = lora[a_key], lora[b_key]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise InputError(f"{a_key} is rank {a.shape[0]}, the spec says lora.rank {rank}", lora_ckpt)
        stem = "base_model.model." + mindformers_name_to_hf(weight).removesuffix(".weight")
        tensors[f"{stem}.lora_A.weight"] = np.ascontiguousarray(a)
        tensors[f"{stem}.lora_B.weight"] = np.ascontiguousarray(b)
        modules.add(peft_module(weight))
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "revision": revision,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(modules, key=list(PEFT_NAMES).index),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
    }
    atomic_write_json(out / "adapter_config.json", config)
    return {"tensors": len(tensors), "target_modules": config["target_modules"]}
