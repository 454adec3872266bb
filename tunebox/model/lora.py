"""LoRA folded into a numpy state dict in memory, for evaluate's scale dial (which merges at several
scales) and the benches. The fold itself is checkpoint.fold_lora, which the streamed merge of
.ckpt files (checkpoint.merge_streaming) uses too, so the arithmetic is written once.

MindFormers' LoRA layer (mindpet LoRADense) computes y = W x + (alpha / r) * B (A x), so folding
the adapter into the weight gives W' = W + (alpha / r) * B @ A; `scale` multiplies that update
(0 = the base model, 1 = as trained).
"""

from __future__ import annotations

import numpy as np

from tunebox.model.checkpoint import fold_lora, lora_pairs, tensor_type_of


def merge_lora_into_base(
    base: dict[str, np.ndarray], lora: dict[str, np.ndarray], alpha: float, rank: int, scale: float = 1.0
) -> dict[str, np.ndarray]:
    """A new state dict: base weights with every LoRA pair folded in (float32 arithmetic, cast back to
    each weight's dtype). Tensors without an adapter are shared with `base`, not copied."""
    merged = dict(base)
    for wname, (a_key, b_key) in lora_pairs(lora, None).items():
        if wname not in base:
            raise ValueError(f"LoRA targets {wname}, which the base checkpoint does not have")
        w, a, b = base[wname], lora[a_key], lora[b_key]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != w.shape:
            raise ValueError(f"{wname}: LoRA B{list(b.shape)} @ A{list(a.shape)} does not match weight {list(w.shape)}")
        raw = np.ascontiguousarray(w).reshape(-1).view(np.uint8)
        merged[wname] = fold_lora(raw, tensor_type_of(w.dtype), w.shape, a, b, scale * alpha / rank).view(w.dtype)
    return merged
