"""How much of the LoRA update survives folding it into a half-precision weight: for each adapted weight,
||d(W + dW) - (W + dW)|| / ||dW|| with d the merged checkpoint's dtype (bfloat16, float16, float32),
dW = (alpha / r) B @ A, and W on the bfloat16 grid (Llama3-8B and InternLM-7B ship bf16 weights; a base
that is not, like SmolLM2 dequantized from Q4_1, is put on it first, so the figure is the update's loss
only). 0 means the update is kept exactly, 1 means an error as large as the update itself. Also: the share
of dW that the stored weight moves by (||d(W + dW) - W|| / ||dW||) and the share of entries whose stored
weight does not move at all.

    python -m benches.bench_merge_rounding --base B.ckpt --lora L.ckpt [--alpha 16 --rank 8]
    python -m benches.bench_merge_rounding --synthetic [--seed 0]

The fold is tunebox's own (checkpoint.fold_lora, what merge writes); the exact sum is float64.
--synthetic: Llama3-8B's wq (4096 x 4096) and wv (1024 x 4096), W ~ N(0, 0.02) on the bf16 grid, A ~ N(0, 0.01)
(mindpet's `normal` init of lora_a), r 8, alpha 16, and B with the entry size an lr of 1e-5 gives it after
the stage-1 plan's 7,030 AdamWeightDecay steps (each moves an entry by about lr): lr x sqrt(7,030) if the
steps' signs are random (a random walk), up to lr x 7,030 / 2 if they agree (the cosine schedule's mean lr
is half the peak), and lr x 500 between.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from tunebox.model.checkpoint import (
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    fold_lora,
    load_checkpoint_numpy,
    lora_pairs,
)

TYPES = ("BFloat16", "Float16", "Float32")


def on_bf16_grid(w: np.ndarray) -> np.ndarray:
    return bfloat16_bits_to_float32(float32_to_bfloat16_bits(np.ascontiguousarray(w, np.float32))).reshape(w.shape)


def stored(w: np.ndarray, a: np.ndarray, b: np.ndarray, factor: float, tensor_type: str) -> np.ndarray:
    """What merge stores for W + factor B A in `tensor_type`, as float64 values."""
    if tensor_type == "BFloat16":
        raw = float32_to_bfloat16_bits(np.ascontiguousarray(w, np.float32)).reshape(-1).view(np.uint8)
        return bfloat16_bits_to_float32(fold_lora(raw, "BFloat16", w.shape, a, b, factor)).astype(np.float64)
    dtype = np.float16 if tensor_type == "Float16" else np.float32
    raw = np.ascontiguousarray(w.astype(dtype)).reshape(-1).view(np.uint8)
    return fold_lora(raw, tensor_type, w.shape, a, b, factor).astype(np.float64)


def measure(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], factor: float) -> dict:
    """Aggregated over all adapted weights (sums of squares, then the square root)."""
    sums = {t: {"err": 0.0, "moved": 0.0, "unmoved": 0} for t in TYPES}
    update_sq, entries, w_sq = 0.0, 0, 0.0
    for w, a, b in pairs:
        w = on_bf16_grid(w)
        dw = factor * (b.astype(np.float64) @ a.astype(np.float64))
        exact = w.astype(np.float64) + dw
        update_sq += float((dw**2).sum())
        w_sq += float((w.astype(np.float64) ** 2).sum())
        entries += w.size
        for t in TYPES:
            got = stored(w, a, b, factor, t)
            sums[t]["err"] += float(((got - exact) ** 2).sum())
            sums[t]["moved"] += float(((got - w) ** 2).sum())
            sums[t]["unmoved"] += int((got == w).sum())
    norm = update_sq**0.5
    return {
        "weights": len(pairs),
        "entries": entries,
        "update_rms": (update_sq / entries) ** 0.5,
        "weight_rms": (w_sq / entries) ** 0.5,
        "by_type": {
            t: {
                "error_over_update": s["err"] ** 0.5 / norm,
                "moved_over_update": s["moved"] ** 0.5 / norm,
                "entries_unmoved": s["unmoved"] / entries,
            }
            for t, s in sums.items()
        },
    }


def from_checkpoints(base_path: str, lora_path: str, alpha: float, rank: int) -> dict:
    base, lora = load_checkpoint_numpy(base_path), load_checkpoint_numpy(lora_path)
    pairs = [(base[w], lora[a], lora[b]) for w, (a, b) in lora_pairs(lora, lora_path).items()]
    return {
        "source": {"base": base_path, "lora": lora_path, "alpha": alpha, "rank": rank},
        **measure(pairs, alpha / rank),
    }


def synthetic(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    lr, steps, rank, alpha = 1e-5, 7030, 8, 16
    w = {
        "wq": rng.normal(0, 0.02, (4096, 4096)).astype(np.float32),
        "wv": rng.normal(0, 0.02, (1024, 4096)).astype(np.float32),
    }
    a = {k: rng.normal(0, 0.01, (rank, 4096)).astype(np.float32) for k in w}
    out = []
    for label, b_rms in (
        ("random walk: lr x sqrt(steps)", lr * steps**0.5),
        ("lr x 500", lr * 500),
        ("agreeing signs: lr x steps / 2", lr * steps / 2),
    ):
        pairs = [(w[k], a[k], rng.normal(0, b_rms, (w[k].shape[0], rank)).astype(np.float32)) for k in w]
        out.append({"case": label, "b_rms": b_rms, **measure(pairs, alpha / rank)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benches.bench_merge_rounding", description=__doc__.split("\n\n")[0])
    p.add_argument("--base")
    p.add_argument("--lora")
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.synthetic:
        result = synthetic(args.seed)
    elif args.base and args.lora:
        result = from_checkpoints(args.base, args.lora, args.alpha, args.rank)
    else:
        p.error("give --base and --lora, or --synthetic")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
