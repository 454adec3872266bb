"""MindSpore / MindFormers glue: device set-up, the Llama network, LoRA through MindFormers' pet
adapter (mindpet LoRADense), checkpoints. Device is configuration: the same calls run on CPU
here and on Ascend there; only dtypes and fused kernels differ (models.llama_config_kwargs).

Imports of mindspore/mindformers stay inside functions: they take seconds, and jobs that do
not need them (report, bundle, scoring) should not pay for them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .models import ModelSpec, llama_config_kwargs, mindformers_target_regex

log = logging.getLogger("tunebox.mf")

LORA_A = "mindpet_delta_lora_a"
LORA_B = "mindpet_delta_lora_b"


def setup_device(device: str = "CPU", mode: str = "graph", seed: Optional[int] = None,
                 output_dir: Optional[Path] = None) -> None:
    # MindFormers writes ./output/log at import; keep it inside the run, not wherever we were started.
    if output_dir is not None:
        os.environ.setdefault("LOCAL_DEFAULT_PATH", str(Path(output_dir) / "mindformers"))
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only on the console (set GLOG_v=2 for more)
    import mindspore as ms
    from mindformers.tools.logger import get_logger

    # MindFormers logs INFO to the console by default: quiet its console handler, keep its file
    # log (under the run's folder) as it is.
    for handler in get_logger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(os.environ.get("TUNEBOX_MF_CONSOLE_LEVEL", "WARNING"))

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_device(device)
    if seed is not None:
        ms.set_seed(seed)


def build_llama(spec: ModelSpec, *, seq_length: int, batch_size: int = 1, dtype: str = "float32",
                checkpoint: Optional[Path] = None, strict: bool = True):
    """A MindFormers LlamaForCausalLM with the registry's shapes, optionally loaded from a checkpoint."""
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM

    import mindspore as ms

    config = LlamaConfig(**llama_config_kwargs(spec, seq_length=seq_length, batch_size=batch_size, dtype=dtype))
    net = LlamaForCausalLM(config)
    if ms.get_context("device_target") == "CPU":
        avoid_cpu_broadcast_tables(net)
    if checkpoint is not None:
        load_weights(net, checkpoint, strict=strict)
    return net


def avoid_cpu_broadcast_tables(net) -> int:
    """Route MindFormers Llama's broadcasting elementwise ops down MindSpore's same-shape CPU path.

    MindSpore 2.9's CPU Add/Sub/Mul/RealDiv kernels, when the operand shapes differ and neither is a
    scalar, build two index vectors of the output's size (16 bytes per output element) on first launch
    and keep them for the life of the compiled graph, then gather through them (about 3x slower than the
    same-shape loop). Llama broadcasts in RMSNorm, rotary, the attention-mask add, Softmax's backward and,
    in the loss, over batch x seq x vocab: 6.9 of the 13 GB a SmolLM2 train step held (docs/CPU_MEMORY.md).
    Broadcasting explicitly first (BroadcastTo, a pooled temporary) gives the same math without the
    tables. Returns the number of cells patched; raises if MindFormers' attribute names changed, so a
    MindFormers upgrade cannot silently drop the fix. Not used on Ascend, where the kernels differ."""
    from mindspore import nn, ops
    from mindspore.ops import operations as P

    class SameShape(nn.Cell):
        def __init__(self, op):
            super().__init__()
            self.op = op

        def construct(self, a, b):
            if a.shape == b.shape:
                return self.op(a, b)
            if a.size >= b.size:
                return self.op(a, ops.broadcast_to(b, a.shape))
            return self.op(ops.broadcast_to(a, b.shape), b)

    class SoftmaxSameShapeGrad(nn.Cell):
        """Softmax whose backward, dx = (dy - sum(dy * y)) * y, broadcasts explicitly."""
        def __init__(self):
            super().__init__()
            self.softmax = P.Softmax()

        def construct(self, x):
            return self.softmax(x)

        def bprop(self, x, out, dout):
            s = (dout * out).sum(-1, keepdims=True)
            return ((dout - ops.broadcast_to(s, out.shape)) * out,)

    class MaskedLogSoftmaxLoss(nn.Cell):
        """MindFormers' CrossEntropyLoss -- the masked mean of -log p[label] -- from LogSoftmax + GatherD.
        Labels outside the mask (IGNORE = -100) are clamped to 0 before the gather; the mask drops them."""
        def __init__(self):
            super().__init__()
            self.log_softmax = P.LogSoftmax(-1)
            self.gather = P.GatherD()

        def construct(self, logits, label, input_mask):
            logp = self.log_softmax(logits)
            safe = ops.maximum(label, 0).reshape(-1, 1)
            per_token = -self.gather(logp, 1, safe).reshape(-1)
            input_mask = input_mask.reshape(-1)
            return (per_token * input_mask).sum() / (input_mask.sum() + 1e-8)

    patches = {
        "LlamaRMSNorm": lambda c: {"mul": SameShape(P.Mul()), "mul2": SameShape(P.Mul())}
        if getattr(c, "self_define", False) else {},
        "RotaryEmbedding": lambda c: {"mul": SameShape(P.Mul()), "mul_inc": SameShape(P.Mul()),
                                      "mul_with_batch_freqs": SameShape(P.Mul())},
        "LLamaAttention": lambda c: {"add": SameShape(P.Add()), "softmax": SoftmaxSameShapeGrad()}
        if hasattr(c, "softmax") else {},
        "LlamaForCausalLM": lambda c: {"loss": MaskedLogSoftmaxLoss()},
    }
    seen = {k: 0 for k in patches}
    for _, cell in list(net.cells_and_names()):
        kind = type(cell).__name__
        if kind not in patches:
            continue
        seen[kind] += 1
        for attr, new in patches[kind](cell).items():
            if not hasattr(cell, attr):
                raise RuntimeError(f"MindFormers {kind} has no attribute {attr!r}: "
                                   "update avoid_cpu_broadcast_tables for this MindFormers version")
            setattr(cell, attr, new)
    missing = [k for k, n in seen.items() if n == 0]
    if missing:
        raise RuntimeError(f"avoid_cpu_broadcast_tables found no {missing} cells in the network")
    return sum(seen.values())


def _one_cell(net, kind: str, *attrs: str):
    """The one cell of type `kind` (by class name) in the network, which must have `attrs`; raises
    when MindFormers renamed or restructured it, so a patch cannot silently stop applying."""
    found = [c for _, c in net.cells_and_names() if type(c).__name__ == kind]
    if len(found) != 1 or not all(hasattr(found[0], a) for a in attrs):
        raise RuntimeError(f"expected one MindFormers {kind} with {', '.join(attrs)} in the network, found "
                           f"{len(found)}: update jobs/core/mf.py for this MindFormers version")
    return found[0]


SEGMENTS_PARAM = "tunebox_packing_segments"


def use_segment_mask(net, batch_size: int, seq_length: int):
    """Swap MindFormers' causal mask for a block-diagonal one (sample packing, jobs/core/packing.py).

    The mask is built in the graph from a non-trainable [batch, seq_length] int32 Parameter of
    segment ids (0 = padding), which the caller sets before each step with `.set_data`: token i may
    attend to token j when j <= i, both carry the same segment id and j is not padding. Returns that
    Parameter. It is not a model weight: count_total and the checkpoints leave it out by name."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops

    model = _one_cell(net, "LlamaModel", "casual_mask")
    flash = bool(getattr(model, "use_flash_attention", False))
    dtype = getattr(model, "dtype", ms.float32)

    class SegmentCausalMask(nn.Cell):
        def __init__(self):
            super().__init__()
            # MindSpore names a cell's Parameter after the attribute holding it: keep the two equal.
            setattr(self, SEGMENTS_PARAM, Parameter(Tensor(np.zeros((batch_size, seq_length), np.int32)),
                                                    name=SEGMENTS_PARAM, requires_grad=False))
            self.lower = Tensor(np.tril(np.ones((seq_length, seq_length), np.float32)))
            self.shape3 = (batch_size, seq_length, seq_length)

        def construct(self, tokens=None, masks=None, seq_chunk=None):
            seg = getattr(self, SEGMENTS_PARAM)
            rows = ops.broadcast_to(seg.reshape(batch_size, seq_length, 1), self.shape3)
            cols = ops.broadcast_to(seg.reshape(batch_size, 1, seq_length), self.shape3)
            allowed = ops.logical_and(ops.equal(rows, cols), ops.gt(cols, 0))
            allowed = ops.cast(allowed, ms.float32) * ops.broadcast_to(self.lower, self.shape3)
            masked = (1.0 - allowed).reshape(batch_size, 1, seq_length, seq_length)
            if flash:  # flash attention takes 1 = masked as uint8
                return ops.cast(masked, ms.uint8)
            return ops.cast(masked * -10000.0, dtype)  # added to the scores, as MindFormers' own mask

    cell = SegmentCausalMask()
    model.casual_mask = cell
    param = getattr(cell, SEGMENTS_PARAM)
    assert SEGMENTS_PARAM in param.name, param.name
    return param


def answer_positions(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> np.ndarray:
    """[rows, seq_length] bool: the positions whose prediction counts in the loss, as MindFormers
    counts them (the input token is not padding and the shifted label is not IGNORE)."""
    return (ids[:, :-1] != pad_id) & (labels[:, 1:] >= 0)


def gather_plan(counted: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the counted positions of a batch, padded to `capacity` with index 0 at
    weight 0: (indices int32 [capacity], weights float32 [capacity])."""
    flat = np.flatnonzero(counted.reshape(-1))
    if len(flat) > capacity:
        raise ValueError(f"{len(flat)} counted positions exceed the planned capacity {capacity}")
    index = np.zeros(capacity, np.int32)
    weight = np.zeros(capacity, np.float32)
    index[:len(flat)] = flat
    weight[:len(flat)] = 1.0
    return index, weight


def answer_only_loss(net):
    """A training forward that runs the LM head and the loss only where the loss counts.

    MindFormers' LlamaForCausalLM computes logits for every position (batch x seq x vocab) and masks
    the loss afterwards; with the loss on answers only, most of those logits are thrown away, and the
    LM head is the largest matmul of a small model (SmolLM2: 28M of 135M weights). This cell runs the
    decoder stack as MindFormers does (net.model, LoRA layers included), gathers the hidden states of
    the counted positions (mf.answer_positions; fixed capacity K so the graph is static, padded
    entries weigh 0), and applies lm_head and the network's own loss (a masked mean) there only: the
    same loss and gradients (tests/test_cpu_broadcast_patch.py), a fraction of the LM-head work.
    Call: cell(input_ids [B, S+1], labels [B, S+1], index [K] int32, weight [K] float32) -> loss."""
    import mindspore as ms
    from mindspore import nn, ops

    llama = _one_cell(net, "LlamaForCausalLM", "model", "lm_head", "loss")

    class AnswerOnlyLoss(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.llama = llama

        def construct(self, input_ids, labels, index, weight):
            bsz, width = input_ids.shape
            tokens = input_ids[:, :width - 1]
            hidden = self.llama.model(tokens)                          # [B, S, H], final norm applied
            hidden = hidden.reshape(bsz * (width - 1), -1)
            picked = ops.gather(hidden, index, 0)                      # [K, H]
            logits = ops.cast(self.llama.lm_head(picked), ms.float32)  # [K, V]
            target = ops.gather(labels[:, 1:].reshape(-1), index, 0)
            # the network's own loss (masked mean; on CPU the patched one): padded entries weigh 0
            return self.llama.loss(logits, target, weight)

    return AnswerOnlyLoss()


def load_weights(net, checkpoint: Path, strict: bool = True, allow_missing_lora: bool = True) -> None:
    import mindspore as ms

    params = ms.load_checkpoint(str(checkpoint))
    not_loaded, unexpected = ms.load_param_into_net(net, params, strict_load=strict)
    missing = [n for n in not_loaded if not (allow_missing_lora and (LORA_A in n or LORA_B in n))]
    if missing:
        raise ValueError(f"{checkpoint}: parameters missing from the checkpoint: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    if strict and unexpected:
        raise ValueError(f"{checkpoint}: unexpected parameters: {unexpected[:5]}")


def load_lora(net, checkpoint: Path) -> None:
    """Load LoRA matrices (a train checkpoint) into a LoRA-wrapped network; every one must be there."""
    import mindspore as ms

    params = ms.load_checkpoint(str(checkpoint))
    wanted = {p.name for p in net.get_parameters() if LORA_A in p.name or LORA_B in p.name}
    if wanted - set(params) or set(params) - wanted:
        raise ValueError(f"{checkpoint}: LoRA matrices do not match the network "
                         f"(missing {sorted(wanted - set(params))[:3]}, extra {sorted(set(params) - wanted)[:3]})")
    ms.load_param_into_net(net, params)


def add_lora(net, rank: int, alpha: int, dropout: float, target_modules: str, dtype: str = "float32"):
    """Wrap a Llama network with MindFormers' LoRA adapter and freeze everything but the LoRA matrices."""
    from mindformers.pet import LoraConfig, LoraModel

    config = LoraConfig(lora_rank=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=mindformers_target_regex(target_modules),
                        param_init_type=dtype, compute_dtype=dtype)
    model = LoraModel(config, net)
    for p in model.get_parameters():
        p.requires_grad = LORA_A in p.name or LORA_B in p.name
    return model


def lora_state(net) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy() for p in net.get_parameters() if LORA_A in p.name or LORA_B in p.name}


def count_trainable(net) -> int:
    return int(sum(np.prod(p.shape) for p in net.trainable_params()))


def count_total(net) -> int:
    """Parameters of the base model (LoRA matrices not counted), as the contest's ratio counts them."""
    return int(sum(np.prod(p.shape) for p in net.get_parameters()
                   if LORA_A not in p.name and LORA_B not in p.name and SEGMENTS_PARAM not in p.name))


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MindSpore checkpoint from numpy arrays, written atomically."""
    import mindspore as ms

    save_params(path, [{"name": k, "data": ms.Tensor(v)} for k, v in arrays.items()])


def save_params(path: Path, params) -> None:
    """mindspore.save_checkpoint, atomically (it appends .ckpt to other names, and writes mode 0400)."""
    import mindspore as ms
    from .io import atomic_path

    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint(params, str(tmp))
        os.chmod(tmp, 0o644)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}
