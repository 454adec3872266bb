"""Tokenizers as files: an HF `tokenizer.json` (read with the `tokenizers` library) plus
`tokenizer_config.json` holding the special tokens and the chat template (Jinja, as in HF).

A model directory in the cache holds both next to `model.ckpt`; prep, train and evaluate load
them through `TextTokenizer.load(model_dir)` so that every job formats prompts the same way.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Optional

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tunebox.io import atomic_write_json, atomic_write_text

# ChatML, the template SmolLM2-Instruct ships (and the one the tiny test model uses).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TextTokenizer:
    """What the jobs need from a tokenizer: ids in and out, and the chat format."""

    def __init__(self, tokenizer: Tokenizer, config: dict):
        self.tk = tokenizer
        self.config = config
        self._template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
            config.get("chat_template") or CHATML_TEMPLATE
        )

    @classmethod
    def load(cls, model_dir: str | Path, tokenizer_json: Optional[str | Path] = None) -> "TextTokenizer":
        model_dir = Path(model_dir)
        tj = Path(tokenizer_json) if tokenizer_json else model_dir / "tokenizer.json"
        cfg_path = tj.with_name("tokenizer_config.json")
        if not tj.exists():
            raise FileNotFoundError(f"{tj}: no tokenizer.json (convert or fetch the model first)")
        config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
        return cls(Tokenizer.from_file(str(tj)), config)

    def save(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        atomic_write_text(model_dir / "tokenizer.json", self.tk.to_str())
        atomic_write_json(model_dir / "tokenizer_config.json", self.config)

    # ---- ids ------------------------------------------------------------------------------
    def token_id(self, token: str) -> Optional[int]:
        return self.tk.token_to_id(token)

    @cached_property
    def eos_id(self) -> int:
        return self.token_id(self.config["eos_token"])

    @cached_property
    def pad_id(self) -> int:
        tok = self.config.get("pad_token") or self.config["eos_token"]
        return self.token_id(tok)

    @cached_property
    def stop_ids(self) -> list[int]:
        """Tokens that end an assistant turn: the template's end-of-turn marker and EOS."""
        ids = [self.eos_id]
        for t in self.config.get("stop_tokens", ["<|im_end|>"]):
            i = self.token_id(t)
            if i is not None and i not in ids:
                ids.append(i)
        return ids

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tk.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- chat format ----------------------------------------------------------------------
    def chat_prompt(self, user: str, system: Optional[str] = None) -> str:
        """The text the model sees before its answer (generation prompt included)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self._template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=self.config.get("bos_token", ""),
            eos_token=self.config.get("eos_token", ""),
        )

    @property
    def answer_suffix(self) -> str:
        """What closes an assistant answer in training samples (e.g. '<|im_end|>')."""
        return self.config.get("answer_suffix", "<|im_end|>")


def build_byte_tokenizer(vocab_size: int = 384) -> TextTokenizer:
    """A byte-level tokenizer with no merges: every UTF-8 byte is one token. Self-contained (no
    download), so the tiny test model needs nothing from outside. Ids 0-4 are special."""
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"byte tokenizer needs {len(vocab)} ids, vocab_size is {vocab_size}")
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "chat_template": CHATML_TEMPLATE,
        "stop_tokens": ["<|im_end|>"],
        "answer_suffix": "<|im_end|>",
    }
    return TextTokenizer(tk, config)
