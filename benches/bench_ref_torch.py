"""bench_ref_torch: the reference side of `invoke bench.train` — the same LoRA fine-tuning step in
PyTorch + Hugging Face transformers + PEFT on CPU, which is what a user would pick instead of
tunebox. bench_train runs it as a subprocess so its memory is measured alone (it imports no
MindSpore: the weights and batches arrive as files that bench_train wrote).

    python -m benches.bench_ref_torch --work DIR [--threads 2]       # train on DIR's inputs
    python -m benches.bench_ref_torch --matmul-peak [--threads 2]    # this CPU's FP32 sgemm peak

DIR holds (from bench_train.export_reference_inputs):
  model.json          the ModelShape (registry shapes, possibly with overrides)
  weights.safetensors the base checkpoint with Hugging Face parameter names
  batches.npz         ids, labels: int32 (steps, batch, seq_length + 1), exactly the rows tunebox
                      trains on at those steps; lr: float (steps,), the learning rate per step
  plan.json           LoRA (rank, alpha, dropout, target projections), weight decay, grad clip,
                      pad id, seed
and gets result.json: per step loss, tokens, seconds; versions and thread count.

Alignment with MindFormers (LlamaForCausalLM.construct in training mode): inputs are ids[:, :-1],
targets are labels[:, 1:], and a position counts in the loss when its target is not -100 *and*
its input is not the pad id; the loss is the mean over counted positions. The same is computed
here from the logits of ids[:, :-1] (Hugging Face's own shift would drop the last position).

Exit codes: 0 ok, 2 bad input (a missing or inconsistent file), 1 failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

IGNORE = -100

# MindFormers projection names -> the Hugging Face Llama module names PEFT targets.
HF_PROJECTION = {
    "wq": "q_proj",
    "wk": "k_proj",
    "wv": "v_proj",
    "wo": "o_proj",
    "w1": "gate_proj",
    "w2": "down_proj",
    "w3": "up_proj",
}


def hf_llama_config(spec: dict):
    """transformers LlamaConfig with the registry's shapes (a ModelShape as a dict)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=spec["vocab_size"],
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"],
        num_key_value_heads=spec["n_kv_heads"],
        max_position_embeddings=spec["max_position"],
        rms_norm_eps=spec["rms_norm_eps"],
        rope_theta=spec["rope_theta"],
        tie_word_embeddings=spec["tie_word_embeddings"],
        attention_bias=spec["qkv_has_bias"],
        hidden_act="silu",
        bos_token_id=spec["bos_token_id"],
        eos_token_id=spec["eos_token_id"],
        pad_token_id=spec["pad_token_id"],
    )


def masked_targets(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> np.ndarray:
    """Targets for the logits of ids[:, :-1], -100 where MindFormers' loss mask is 0
    (target ignored, or the input position is padding)."""
    targets = labels[:, 1:].astype(np.int64).copy()
    targets[ids[:, :-1] == pad_id] = IGNORE
    return targets


def batch_tensors(ids: np.ndarray, labels: np.ndarray, pad_id: int):
    """One step's (inputs, targets) as torch int64 tensors: ids[:, :-1] and masked_targets."""
    import torch

    return torch.from_numpy(ids[:, :-1].astype(np.int64)), torch.from_numpy(masked_targets(ids, labels, pad_id))


def batch_loss(model, inputs, targets):
    """The training loss: cross-entropy of the logits of `inputs`, the mean over the targets that are
    not IGNORE (MindFormers' masked mean over counted positions)."""
    import torch

    logits = model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE
    )


def build_model(work: Path, plan: dict, spec: dict):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    config = hf_llama_config(spec)
    torch.manual_seed(plan["seed"])
    model = LlamaForCausalLM(config)
    state = load_file(str(work / "weights.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # With tied embeddings the checkpoint has no lm_head.weight: it is the embedding matrix.
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(
            f"{work / 'weights.safetensors'} does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    del state
    lora = LoraConfig(
        r=plan["lora_rank"],
        lora_alpha=plan["lora_alpha"],
        lora_dropout=plan["lora_dropout"],
        target_modules=[HF_PROJECTION[p] for p in plan["lora_targets"]],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable != plan["expected_trainable"]:
        raise RuntimeError(
            f"PEFT made {trainable:,} parameters trainable, the registry predicts {plan['expected_trainable']:,}"
        )
    return model, trainable


def train_reference(work: Path, threads: int) -> dict:
    import peft
    import torch
    import transformers

    torch.set_num_threads(threads)
    try:
        plan = json.loads((work / "plan.json").read_text())
        spec = json.loads((work / "model.json").read_text())
        batches = np.load(work / "batches.npz")
    except (OSError, ValueError) as exc:
        print(f"error: {work}: {exc}; run bench_train to write the reference inputs", file=sys.stderr)
        raise SystemExit(2)
    ids_all, labels_all, lrs = batches["ids"], batches["labels"], batches["lr"]
    t0 = time.perf_counter()
    model, trainable = build_model(work, plan, spec)
    load_s = time.perf_counter() - t0
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=float(lrs[0]),
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=plan["weight_decay"],
    )
    pad_id = plan["pad_id"]
    steps = []
    for step, (ids, labels, lr) in enumerate(zip(ids_all, labels_all, lrs)):
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        inputs, targets = batch_tensors(ids, labels, pad_id)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], plan["max_grad_norm"])
        optimizer.step()
        value = float(loss.detach())
        seconds = time.perf_counter() - started
        tokens = int((ids != pad_id).sum())  # as train.py counts: non-pad ids of the whole row
        steps.append({"step": step + 1, "loss": value, "tokens": tokens, "seconds": round(seconds, 4)})
        print(
            f"reference step {step + 1}/{len(lrs)}: loss {value:.4f}, {seconds:.2f} s, {tokens / seconds:.0f} tokens/s",
            file=sys.stderr,
            flush=True,
        )
        if not np.isfinite(value):
            raise RuntimeError(f"reference loss is {value} at step {step + 1}")
    return {
        "steps": steps,
        "load_seconds": round(load_s, 3),
        "trainable_params": trainable,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "attn_implementation": model.config._attn_implementation,
    }


def torch_matmul_peak(threads: int, sizes=(2048, 3072, 4096), repeats: int = 5) -> dict:
    """Best FP32 GFLOP/s of torch.mm on n x n matrices (2 n^3 FLOPs each)."""
    import torch

    torch.set_num_threads(threads)
    best = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up: thread pool, page faults
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - started)
        best[n] = 2 * n**3 / min(times) / 1e9
    return {
        "gflops_by_size": {str(k): round(v, 2) for k, v in best.items()},
        "gflops": round(max(best.values()), 2),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.bench_ref_torch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--work", type=Path, help="folder with the inputs bench_train wrote; result.json goes there")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads (default 2: this machine's cores)"
    )
    parser.add_argument(
        "--matmul-peak", action="store_true", help="print this CPU's FP32 torch.mm peak as JSON and exit"
    )
    parser.add_argument("--peak-sizes", default="2048,3072,4096", help="matrix sizes for --matmul-peak")
    args = parser.parse_args(argv)
    if args.matmul_peak:
        print(json.dumps(torch_matmul_peak(args.threads, tuple(int(x) for x in args.peak_sizes.split(",")))))
        return 0
    if args.work is None:
        parser.error("--work DIR is needed (or --matmul-peak)")
    result = train_reference(args.work, args.threads)
    (args.work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
