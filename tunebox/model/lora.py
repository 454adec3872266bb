"""LoRA arithmetic on plain numpy state dicts, shared by merge (which writes merged checkpoints)
and evaluate (whose scale dial merges in memory at several scales).

MindFormers' LoRA layer (mindpet LoRADense) computes y = W x + (alpha / r) * B (A x), so folding
the adapter into the weight gives W' = W + (alpha / r) * B @ A; `scale` multiplies that update
(0 = the base model, 1 = as trained).
"""
from __future__ import annotations

import numpy as np

from tunebox.model.mf import LORA_A, LORA_B


def merge_lora_into_base(base: dict[str, np.ndarray], lora: dict[str, np.ndarray], alpha: float, rank: int,
                         scale: float = 1.0) -> dict[str, np.ndarray]:
    """A new state dict: base weights with every LoRA pair folded in (float32 arithmetic).
    Tensors without an adapter are shared with `base`, not copied."""
    factor = scale * alpha / rank
    merged = dict(base)
    pairs = {k[: -len(LORA_A) - 1] for k in lora if k.endswith(LORA_A)}
    if not pairs:
        raise ValueError("no LoRA matrices found (names ending in mindpet_delta_lora_a)")
    for prefix in sorted(pairs):
        a, b = lora[f"{prefix}.{LORA_A}"], lora.get(f"{prefix}.{LORA_B}")
        if b is None:
            raise ValueError(f"{prefix}: lora_a without lora_b")
        wname = f"{prefix}.weight"
        if wname not in base:
            raise ValueError(f"LoRA targets {wname}, which the base checkpoint does not have")
        w = base[wname]
        delta = (b.astype(np.float32) @ a.astype(np.float32)) * np.float32(factor)
        if delta.shape != w.shape:
            raise ValueError(f"{wname}: LoRA delta {delta.shape} does not match weight {w.shape}")
        merged[wname] = (w.astype(np.float32) + delta).astype(w.dtype)
    return merged
