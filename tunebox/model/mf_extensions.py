"""tunebox's MindFormers extensions, registered the way MindFormers registers its own classes.

A rendered train YAML (runs/<id>/train/mindformers.yaml) names these classes with
`auto_register: mf_extensions.<Class>`; stock MindFormers loads them from the folder that
REGISTER_PATH points at. This file is therefore self-contained: it imports only numpy, MindSpore
and MindFormers (MindFormers refuses a module loaded this way that imports a sibling module).

  TuneboxTrainOneStepCell    MindFormers' MFTrainOneStepCell; on CPU only, the overflow check uses
                             IsFinite (the 910B path) instead of the NPU-only NPUGetFloatStatusV2.
  TuneboxLlamaForCausalLM    MindFormers' LlamaForCausalLM with three optional training paths:
                             - answer-only LM head (`tunebox_answer_capacity` > 0): the LM head and the
                               loss run only where the loss counts; same loss and gradients;
                             - packing (`tunebox_packing`): a third input column of segment ids makes a
                               block-diagonal causal mask, so packed samples never see each other;
                             - on CPU, broadcasting elementwise ops routed down MindSpore's same-shape
                               kernels (docs/CPU_MEMORY.md); same math, a fraction of the memory.
  TuneboxLoraCheckpoints     the LoRA (trainable) parameters at the planned steps (the 5 evenly
                             spaced checkpoints), in MindFormers' checkpoint_trainable/ layout.
  TuneboxLossLog             one JSON line per step (loss, lr, seconds) in a file, and a stop at
                             `total_steps` (runs whose length is not a whole number of epochs).
Two patches for MindSpore's CPU kernels, applied by tunebox's own code, not by MindFormers:
avoid_cpu_broadcast_tables (a built network) and cpu_barrier (MindFormers' barriers between ranks).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time

import mindspore as ms
import numpy as np
from mindformers.models.llama import LlamaForCausalLM
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
from mindformers.wrapper.wrapper import MFTrainOneStepCell
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.ops import functional as F
from mindspore.ops import operations as P
from mindspore.train.callback import Callback
from mindspore.train.serialization import _get_merged_param_data

try:  # the IsFinite overflow check MindSpore's 910B path uses
    from mindspore.nn.wrap.loss_scale import _ascend_grad_overflow
except ImportError:  # pragma: no cover - renamed in a future MindSpore
    _ascend_grad_overflow = None

SEGMENTS_PARAM = "tunebox_packing_segments"


def _on_cpu() -> bool:
    return ms.get_context("device_target") == "CPU"


# ---- the train-one-step wrapper ---------------------------------------------------------------


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class TuneboxTrainOneStepCell(MFTrainOneStepCell):
    """MFTrainOneStepCell that runs on CPU. MindSpore's loss-scale cell treats every device that is
    not GPU/910A/910B as 910A and calls NPUGetFloatStatusV2, which has no CPU kernel. On CPU the
    overflow status starts at zero and the gradients are checked with IsFinite, as on 910B; on any
    other device every call goes to MindFormers' own implementation."""

    def __init__(self, network, optimizer, *args, **kwargs):
        super().__init__(network, optimizer, *args, **kwargs)
        self.tunebox_cpu = _on_cpu()
        if self.tunebox_cpu and _ascend_grad_overflow is None:
            raise RuntimeError(
                "mindspore.nn.wrap.loss_scale._ascend_grad_overflow is gone: "
                "update TuneboxTrainOneStepCell for this MindSpore version"
            )

    def start_overflow_check(self, pre_cond, compute_input):
        if not self.tunebox_cpu:
            return super().start_overflow_check(pre_cond, compute_input)
        status = ops.depend(Tensor([0] * 8, mstype.int32), pre_cond)
        return status, ops.depend(compute_input, status)

    def get_overflow_status(self, status, compute_output):
        if not self.tunebox_cpu:
            return super().get_overflow_status(status, compute_output)
        return self._get_distributed_overflow_status_on_infnan_mode(_ascend_grad_overflow, compute_output)


# ---- the model ---------------------------------------------------------------------------------


def _one_cell(net, kind: str, *attrs: str):
    """The one cell of class `kind` in `net`, which must have `attrs`; raises when MindFormers renamed
    or restructured it, so a patch cannot silently stop applying."""
    found = [c for _, c in net.cells_and_names() if type(c).__name__ == kind]
    if len(found) != 1 or not all(hasattr(found[0], a) for a in attrs):
        raise RuntimeError(
            f"expected one MindFormers {kind} with {', '.join(attrs)} in the network, found "
            f"{len(found)}: update mf_extensions.py for this MindFormers version"
        )
    return found[0]


class _SameShape(nn.Cell):
    """A binary elementwise op whose operands are broadcast explicitly first."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, a, b):
        if a.shape == b.shape:
            return self.op(a, b)
        if a.size >= b.size:
            return self.op(a, ops.broadcast_to(b, a.shape))
        return self.op(ops.broadcast_to(a, b.shape), b)


class _SoftmaxSameShapeGrad(nn.Cell):
    """Softmax whose backward, dx = (dy - sum(dy * y)) * y, broadcasts explicitly."""

    def __init__(self):
        super().__init__()
        self.softmax = P.Softmax()

    def construct(self, x):
        return self.softmax(x)

    def bprop(self, x, out, dout):
        s = (dout * out).sum(-1, keepdims=True)
        return ((dout - ops.broadcast_to(s, out.shape)) * out,)


class _MaskedLogSoftmaxLoss(nn.Cell):
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


def avoid_cpu_broadcast_tables(net) -> int:
    """Route MindFormers Llama's broadcasting elementwise ops down MindSpore's same-shape CPU path.

    MindSpore 2.9's CPU Add/Sub/Mul/RealDiv kernels, when the operand shapes differ and neither is a
    scalar, build two index vectors of the output's size (16 bytes per output element) on first launch
    and keep them for the life of the compiled graph. Llama broadcasts in RMSNorm, rotary, the
    attention-mask add, Softmax's backward and the loss (docs/CPU_MEMORY.md). Broadcasting explicitly
    first gives the same math without the tables. Returns the number of cells patched; raises if
    MindFormers' attribute names changed. Not for Ascend, where the kernels differ."""
    patches = {
        "LlamaRMSNorm": lambda c: (
            {"mul": _SameShape(P.Mul()), "mul2": _SameShape(P.Mul())} if getattr(c, "self_define", False) else {}
        ),
        "RotaryEmbedding": lambda c: {
            "mul": _SameShape(P.Mul()),
            "mul_inc": _SameShape(P.Mul()),
            "mul_with_batch_freqs": _SameShape(P.Mul()),
        },
        "LLamaAttention": lambda c: (
            {"add": _SameShape(P.Add()), "softmax": _SoftmaxSameShapeGrad()} if hasattr(c, "softmax") else {}
        ),
        "LlamaForCausalLM": lambda c: {"loss": _MaskedLogSoftmaxLoss()},
        "TuneboxLlamaForCausalLM": lambda c: {"loss": _MaskedLogSoftmaxLoss()},
    }
    seen = {k: 0 for k in patches}
    for _, cell in list(net.cells_and_names()):
        kind = type(cell).__name__
        if kind not in patches:
            continue
        seen[kind] += 1
        for attr, new in patches[kind](cell).items():
            if not hasattr(cell, attr):
                raise RuntimeError(
                    f"MindFormers {kind} has no attribute {attr!r}: "
                    "update avoid_cpu_broadcast_tables for this MindFormers version"
                )
            setattr(cell, attr, new)
    if seen["LlamaForCausalLM"] + seen["TuneboxLlamaForCausalLM"] == 0:
        raise RuntimeError("avoid_cpu_broadcast_tables found no LlamaForCausalLM in the network")
    missing = [k for k in ("LlamaRMSNorm", "RotaryEmbedding", "LLamaAttention") if seen[k] == 0]
    if missing:
        raise RuntimeError(f"avoid_cpu_broadcast_tables found no {missing} cells in the network")
    return sum(seen.values())


def cpu_barrier() -> None:
    """MindSpore 2.9 has no Barrier kernel on CPU, and MindFormers synchronizes its ranks with
    mindspore.communication.comm_func.barrier: after preload_ckpt (trainer/utils.py) whenever a checkpoint is
    loaded with use_parallel on, and in barrier_world (utils/parallel_utils.py), which a data-parallel resume
    takes in get_resume_checkpoint_by_meta (rank 0 reads the meta.json files and records the checkpoint, the
    others read the record after the barrier) and its saves and loads take too. On CPU each of them becomes an
    AllReduce of one number (AllReduce has a CPU kernel: data-parallel training sums its gradients with it),
    which, as a barrier, returns on no rank before every rank of the group has called it."""
    import mindformers.core.callback.callback as callback
    import mindformers.trainer.utils as trainer_utils
    import mindformers.utils.load_checkpoint_utils as load_checkpoint_utils
    import mindformers.version_control as version_control
    import mindspore as ms
    from mindspore.communication import GlobalComm, comm_func

    def barrier(group=None):  # the world group as init() named it (on CPU mccl_world_group), read at the call
        group = group or GlobalComm.WORLD_COMM_GROUP
        ms.ops.AllReduce(group=group)(ms.Tensor([1.0], ms.float32)).asnumpy()  # asnumpy: wait for the sum

    comm_func.barrier = barrier  # barrier_world calls it through the module
    for module in (trainer_utils, callback, load_checkpoint_utils, version_control):  # imported by name there
        module.barrier = barrier


class _SegmentCausalMask(nn.Cell):
    """MindFormers' causal mask made block-diagonal from a [batch, seq] int32 Parameter of segment ids
    (0 = padding): token i may attend to token j when j <= i, both carry the same segment id and j is
    not padding. The model assigns the step's segment ids to the Parameter before the forward."""

    def __init__(self, batch_size: int, seq_length: int, flash: bool, dtype):
        super().__init__()
        # MindSpore names a cell's Parameter after the attribute holding it: keep the two equal.
        setattr(
            self,
            SEGMENTS_PARAM,
            Parameter(Tensor(np.zeros((batch_size, seq_length), np.int32)), name=SEGMENTS_PARAM, requires_grad=False),
        )
        self.lower = Tensor(np.tril(np.ones((seq_length, seq_length), np.float32)))
        self.shape3 = (batch_size, seq_length, seq_length)
        self.batch_size, self.seq_length = batch_size, seq_length
        self.flash, self.mask_dtype = flash, dtype

    def construct(self, tokens=None, masks=None, seq_chunk=None):
        seg = getattr(self, SEGMENTS_PARAM)
        b, s = self.batch_size, self.seq_length
        rows = ops.broadcast_to(seg.reshape(b, s, 1), self.shape3)
        cols = ops.broadcast_to(seg.reshape(b, 1, s), self.shape3)
        allowed = ops.logical_and(ops.equal(rows, cols), ops.gt(cols, 0))
        allowed = ops.cast(allowed, ms.float32) * ops.broadcast_to(self.lower, self.shape3)
        masked = (1.0 - allowed).reshape(b, 1, s, s)
        if self.flash:  # flash attention takes 1 = masked as uint8
            return ops.cast(masked, ms.uint8)
        return ops.cast(masked * -10000.0, self.mask_dtype)  # added to the scores, as MindFormers' own mask


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class TuneboxLlamaForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM (same parameters, same checkpoints) with tunebox's training forward: construct
    takes (input_ids, labels[, segment_ids]) and returns the loss, as the Trainer calls it in training.
    Inference (predict.yaml, evaluate) uses MindFormers' own LlamaForCausalLM on the same checkpoints.

    model_config keys read here (both optional):
      tunebox_answer_capacity: 0 (default) runs the LM head on every position, as MindFormers does;
        K > 0 runs the LM head and the loss on at most K positions per row:
        the positions the loss counts, found in the graph (a top-k over a position score, so shapes
        stay static); K is the most counted positions any training row has (the train job measures it
        from the data). Loss and gradients equal MindFormers' forward.
      tunebox_packing: true makes the network take a third input, segment ids [batch, seq+1], and
        attend block-diagonally (sample packing).
    On CPU the broadcast patch (avoid_cpu_broadcast_tables) is applied when the network is built."""

    def __init__(self, config=None):
        # by keyword: MindFormers' lazy_inline decorator reads config.disable_lazy_inline from kwargs
        super().__init__(config=config)
        self.tunebox_capacity = int(getattr(config, "tunebox_answer_capacity", 0) or 0)
        self.tunebox_packing = bool(getattr(config, "tunebox_packing", False))
        if _on_cpu():
            avoid_cpu_broadcast_tables(self)
        self.tunebox_segments = None
        if self.tunebox_packing:
            model = self.model
            mask = _SegmentCausalMask(
                config.batch_size,
                config.seq_length,
                bool(getattr(model, "use_flash_attention", False)),
                getattr(model, "dtype", ms.float32),
            )
            model.casual_mask = mask
            self.tunebox_segments = getattr(mask, SEGMENTS_PARAM)
        seq, bsz = config.seq_length, config.batch_size
        # counted positions score seq..1 by position (others 0): a top-k picks the first K of each row
        self.tunebox_position_score = Tensor(np.arange(seq, 0, -1, dtype=np.float32).reshape(1, seq))
        self.tunebox_row_offset = Tensor((np.arange(bsz, dtype=np.int32) * seq).reshape(bsz, 1))
        # primitive instances, as MindFormers' own cells hold them
        self.tunebox_topk = P.TopK(sorted=True)
        self.tunebox_gather = P.Gather()
        self.tunebox_cast = P.Cast()
        self.tunebox_not_equal = P.NotEqual()
        self.tunebox_and = P.LogicalAnd()
        self.tunebox_greater = P.Greater()
        self.tunebox_assign = P.Assign()
        self.tunebox_reshape = P.Reshape()

    def construct(self, input_ids, labels=None, segment_ids=None):
        """Training forward: input_ids and labels [B, S+1] (and segment ids [B, S+1] with packing)."""
        bsz, width = input_ids.shape
        seq = width - 1
        tokens = self.slice(input_ids, (0, 0), (bsz, seq), (1, 1))
        if self.tunebox_packing:
            seg = self.slice(segment_ids, (0, 0), (bsz, seq), (1, 1))
            tokens = F.depend(tokens, self.tunebox_assign(self.tunebox_segments, seg))
        target = self.slice(labels, (0, 1), (bsz, width), (1, 1))
        counted = self.tunebox_cast(
            self.tunebox_and(
                self.tunebox_not_equal(tokens, self.pad_token_id), self.tunebox_not_equal(target, self.ignore_token_id)
            ),
            mstype.float32,
        )
        hidden = self.model(tokens)  # [B, S, H], final norm applied
        hidden = self.tunebox_reshape(hidden, (bsz * seq, -1))
        if self.tunebox_capacity == 0:
            logits = self.tunebox_cast(self.lm_head(hidden), mstype.float32)
            return self.loss(logits, self.tunebox_reshape(target, (-1,)), self.tunebox_reshape(counted, (-1,)))
        score = F.stop_gradient(counted * self.tunebox_position_score)  # indices only: no gradient path
        picked_score, index = self.tunebox_topk(score, self.tunebox_capacity)  # [B, K]
        weight = self.tunebox_cast(self.tunebox_greater(picked_score, 0.0), mstype.float32)
        flat = self.tunebox_reshape(index + self.tunebox_row_offset, (-1,))
        picked = self.tunebox_gather(hidden, flat, 0)  # [B*K, H]
        logits = self.tunebox_cast(self.lm_head(picked), mstype.float32)  # [B*K, V]
        picked_target = self.tunebox_gather(self.tunebox_reshape(target, (-1,)), flat, 0)
        return self.loss(logits, picked_target, self.tunebox_reshape(weight, (-1,)))


# ---- callbacks ---------------------------------------------------------------------------------


def _test_kill_point(name: str) -> None:
    """tests/test_chaos.py's hook, a copy of tunebox.chaos.kill_point (this module is loaded on its own):
    when $TUNEBOX_TEST_KILL_POINT names this point, signal this process group (SIGKILL, or
    $TUNEBOX_TEST_KILL_SIGNAL) as a crash or Ctrl-C would. Never set outside the tests."""
    if os.environ.get("TUNEBOX_TEST_KILL_POINT") == name:
        os.killpg(os.getpgrp(), getattr(signal, "SIG" + os.environ.get("TUNEBOX_TEST_KILL_SIGNAL", "KILL")))


def _global_step(cb) -> int:
    """Optimizer updates done so far, resume included. MindFormers restores the optimizer's global_step
    from the checkpoint but restarts cb_params.cur_step_num at 0 in a resumed session."""
    optimizer = cb.optimizer if getattr(cb, "optimizer", None) is not None else cb.train_network.optimizer
    return int(np.asarray(optimizer.global_step.asnumpy()).reshape(-1)[0])


def lora_checkpoint_path(directory: str, prefix: str, step: int, steps_per_epoch: int, rank: int = 0) -> str:
    """Where the LoRA file of global step `step` goes, named as MindFormers' CheckpointMonitor names its
    trainable-parameter files (epoch 1-based, step within the epoch)."""
    epoch, within = divmod(step - 1, max(1, int(steps_per_epoch)))
    return os.path.join(
        directory,
        "checkpoint_trainable",
        f"rank_{rank}",
        f"{prefix}_rank_{rank}-trainable_params-{epoch + 1}_{within + 1}.ckpt",
    )


def release_freed_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim(0)); False where there is no
    glibc. Reading the base checkpoint frees about 0.4 GiB and the graph compile about 0.3 GiB that glibc
    keeps, never reused by the steps (MindSpore's pool takes its blocks elsewhere): 0.3 GiB of the
    train job's peak RSS (docs/CPU_MEMORY.md, 2026-12-05). Changes no number: it only unmaps free pages."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    trim(0)
    return True


def _rank() -> int:
    try:
        from mindspore.communication import get_rank

        return int(get_rank())
    except Exception:  # not initialised: a single process
        return 0


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class TuneboxLoraCheckpoints(Callback):
    """Save the trainable (LoRA) parameters at `planned_steps` (global optimizer steps), in MindFormers'
    layout: <directory>/checkpoint_trainable/rank_<r>/<prefix>_rank_<r>-trainable_params-<epoch>_<step>.ckpt
    (epoch 1-based, step within the epoch, as MindFormers' CheckpointMonitor names them). With model
    parallel the slices are gathered first, so every file holds whole LoRA matrices that merge can fold
    into the base without a strategy file (not run here: this CPU has no model parallel). Written to a
    temporary name and renamed, so a file that exists is whole. MindFormers' own CheckpointMonitor keeps
    the full checkpoints to resume from; it rotates them, and these must never be rotated away."""

    def __init__(self, directory: str, planned_steps=(), steps_per_epoch: int = 1, prefix: str = "tunebox"):
        super().__init__()
        self.directory, self.prefix = directory, prefix
        self.planned_steps = {int(s) for s in planned_steps}
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        step = _global_step(cb)
        if step not in self.planned_steps:
            return
        network = cb.train_network.network if hasattr(cb.train_network, "network") else cb.train_network
        layout = getattr(cb.train_network, "parameter_layout_dict", None) or {}
        params = []
        for p in network.trainable_params():
            data = Tensor(p.data.asnumpy())
            if p.name in layout:  # model parallel: gather the slices into the whole tensor, as MindFormers'
                # CheckpointMonitor does with integrated_save (every rank then writes the whole LoRA)
                data = _get_merged_param_data(cb.train_network, layout, p.name, data, True)
            params.append({"name": p.name, "data": data})
        path = lora_checkpoint_path(self.directory, self.prefix, step, self.steps_per_epoch, _rank())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path[: -len(".ckpt")] + ".partial.ckpt"
        ms.save_checkpoint(params, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class TuneboxLossLog(Callback):
    """One JSON line per optimizer step in `path` (global step, epoch, loss, lr, seconds), appended and
    flushed as the step ends, so a crash loses nothing logged; at the start of a resumed run the lines
    past the restored step are dropped (those steps run again), and sessions.jsonl beside it gets the
    step each session started from. Stops the run after `total_steps`
    (0: MindFormers' own end), for runs whose length is not a whole number of epochs."""

    def __init__(self, path: str = "loss.jsonl", total_steps: int = 0, steps_per_epoch: int = 0, progress: bool = True):
        super().__init__()
        self.path, self.total_steps, self.steps_per_epoch = path, int(total_steps), int(steps_per_epoch)
        self.progress, self.bar, self.t0 = progress, None, None

    def on_train_begin(self, run_context):
        self.is_main = _rank() == 0
        self.trim_after_step = True  # the first step compiles the graph: trim its leftovers after it
        release_freed_heap()  # what loading the checkpoint freed
        # Ctrl-C: MindSpore's runtime holds SIGINT while a step runs and answers it with SIGTERM to
        # itself, so Python never saw a KeyboardInterrupt. Both signals are noted here instead; the
        # step in progress ends, its line is written, then the run stops with KeyboardInterrupt (exit
        # 130, tunebox.cli.guarded) and the same command resumes from the last full checkpoint.
        self.interrupted = None
        self.previous_handlers = {
            sig: signal.signal(sig, self._note_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        start = _global_step(run_context.original_args())
        if self.is_main and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start]
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
        if self.is_main and self.progress:  # MindFormers' own per-step lines go to its log files
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total_steps or None, initial=start, desc="train", unit="step", dynamic_ncols=True
            )
        if self.is_main:  # one line per session: where it started (0, or the step resume_training restored)
            with open(os.path.join(os.path.dirname(self.path) or ".", "sessions.jsonl"), "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {
                            "start_step": start,
                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "pid": os.getpid(),
                        }
                    )
                    + "\n"
                )

    def on_train_step_begin(self, run_context):
        self.t0 = time.time()

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        step = _global_step(cb)
        outputs = cb.net_outputs
        loss = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        loss = float(np.mean(loss.asnumpy()))
        lr = outputs[3] if isinstance(outputs, (tuple, list)) and len(outputs) > 3 else None
        lr = float(np.mean(lr.asnumpy())) if lr is not None else None
        dt = time.time() - (self.t0 or time.time())
        if self.is_main:
            epoch = step / self.steps_per_epoch if self.steps_per_epoch else float(cb.cur_epoch_num)
            line = {"step": step, "epoch": round(epoch, 4), "loss": loss, "lr": lr, "seconds": round(dt, 4)}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr or 0:.2e}", s_step=f"{dt:.1f}")
                self.bar.update(step - self.bar.n)
        if self.trim_after_step:
            self.trim_after_step = False
            release_freed_heap()  # what the graph compile freed
        if not np.isfinite(loss):
            raise RuntimeError(f"loss is {loss} at step {step}; lower train.lr")
        _test_kill_point(f"train.step-{step}")
        if self.interrupted:
            if self.bar is not None:
                self.bar.close()
            raise KeyboardInterrupt(f"{self.interrupted} after step {step}")
        if self.total_steps and step >= self.total_steps:
            run_context.request_stop()

    def _note_interrupt(self, signum, frame):
        self.interrupted = signal.Signals(signum).name

    def on_train_end(self, run_context):
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if self.bar is not None:
            self.bar.close()
