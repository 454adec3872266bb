"""train: LoRA fine-tuning of a MindFormers Llama with mindpet LoRA, GRAPH mode, AdamW with
warmup + cosine, gradient accumulation, data parallel through msrun when train.workers > 1.

Outputs, under runs/<run_id>/train/:
  checkpoints/lora-step{N}.ckpt   LoRA matrices at train.num_checkpoints evenly spaced steps
  checkpoints/index.json          those checkpoints: step, epoch, loss
  state/resume.ckpt + resume.json LoRA + optimizer state every train.save_state_every steps
  loss.jsonl, loss.csv            one line per optimizer step (loss, lr, tokens/s, batch hash)
  summary.json, manifest.json

Killed (even with kill -9) and started again with the same command, it resumes from the last
snapshot: the data order is a pure function of (seed, step), so no step is repeated or skipped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .core.cli import run_job
from .core.config import RunSpec
from .core.io import InputError, append_jsonl, atomic_write_json, atomic_write_text
from .core.manifest import write_job_manifest
from .core.models import get_model_spec

log = logging.getLogger("tunebox.train")


# ---- the schedule: pure functions of the spec, so a restart recomputes the same plan ----------

def plan_steps(n_rows: int, spec: RunSpec) -> dict:
    t = spec.train
    if n_rows < t.batch_size:
        raise InputError(f"{n_rows} training rows is fewer than one batch (train.batch_size={t.batch_size})")
    batches_per_epoch = n_rows // t.batch_size           # the last partial batch of an epoch is dropped
    total = t.max_steps if t.max_steps is not None else int(t.epochs * batches_per_epoch) // t.grad_accum
    if total < t.num_checkpoints:
        raise InputError(f"only {total} optimizer steps: fewer than train.num_checkpoints={t.num_checkpoints}; "
                         f"raise train.epochs or lower train.batch_size / train.grad_accum")
    return {"total_steps": total, "batches_per_epoch": batches_per_epoch,
            "warmup_steps": int(round(t.warmup_ratio * total)),
            "checkpoint_steps": checkpoint_steps(total, t.num_checkpoints)}


def checkpoint_steps(total: int, k: int) -> list[int]:
    """k evenly spaced steps ending at the last one: total*i/k rounded, i = 1..k."""
    return [int(round(total * i / k)) for i in range(1, k + 1)]


def lr_at(step: int, total: int, warmup: int, base: float, min_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to base*min_ratio."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def gather_capacity(counts: np.ndarray, plan: dict, spec: RunSpec, world: int) -> int:
    """The most counted (answer) positions any rank's micro-batch of this run holds, rounded up to a
    multiple of 8: the static size of the answer-only LM head (mf.answer_only_loss). The data order is
    known in advance (batch_rows), so this is exact, and the same after a resume."""
    batch, per_rank = spec.train.batch_size, spec.train.batch_size // world
    n_rows = len(counts)
    per_epoch = n_rows // batch
    micro_total = plan["total_steps"] * spec.train.grad_accum
    most = 1
    for epoch in range(-(-micro_total // per_epoch)):
        perm = epoch_order(epoch, n_rows, spec.train.seed)
        take = min(per_epoch, micro_total - epoch * per_epoch)
        per_rank_sums = counts[perm[:take * batch]].reshape(take * world, per_rank).sum(axis=1)
        most = max(most, int(per_rank_sums.max()))
    return -(-most // 8) * 8


def epoch_order(epoch: int, n_rows: int, seed: int) -> np.ndarray:
    """The order rows are read in during `epoch`: a fresh seeded permutation each epoch."""
    return np.random.RandomState(seed + epoch).permutation(n_rows)


def batch_rows(micro_index: int, n_rows: int, batch_size: int, seed: int) -> np.ndarray:
    """Row indices of global micro-batch `micro_index` (consecutive slices of epoch_order)."""
    per_epoch = n_rows // batch_size
    epoch, within = divmod(micro_index, per_epoch)
    perm = epoch_order(epoch, n_rows, seed)
    return perm[within * batch_size:(within + 1) * batch_size]


# ---- the training step ---------------------------------------------------------------------

def make_train_step(net, optimizer, grad_accum: int, max_grad_norm: float, world: int = 1):
    """Graph-compiled cells: `step(ids, labels)` runs forward + backward and either applies the update
    (grad_accum == 1) or adds the gradients to accumulators; `apply()` finishes an accumulated step."""
    import mindspore as ms
    from mindspore import nn, ops

    class LoraTrainStep(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.network = net
            self.network.set_grad()
            self.optimizer = optimizer
            self.weights = optimizer.parameters
            self.grad = ops.GradOperation(get_by_list=True)
            # Data parallel by hand: each rank's gradients are averaged with an AllReduce. (MindSpore's
            # DATA_PARALLEL auto-parallel mode fails to compile MindFormers' Llama on CPU in 2.9.)
            self.distributed = world > 1
            self.reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=world) if world > 1 else ops.identity
            self.loss_sum = ops.AllReduce() if world > 1 else ops.identity
            self.world = float(world)
            self.accumulate = grad_accum > 1
            self.accum = self.weights.clone(prefix="accum", init="zeros") if self.accumulate else None
            self.hyper_map = ops.HyperMap()

        def construct(self, *inputs):
            loss = self.network(*inputs)
            grads = self.grad(self.network, self.weights)(*inputs)
            grads = self.reducer(grads)
            if self.distributed:
                loss = self.loss_sum(loss) / self.world  # the loss of the whole global batch
            if self.accumulate:
                done = self.hyper_map(ops.assign_add, self.accum, grads)
                return ops.depend(loss, done)
            grads = ops.clip_by_global_norm(grads, max_grad_norm)
            return ops.depend(loss, self.optimizer(grads))

    step = LoraTrainStep()

    class ApplyAccumulated(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.optimizer = optimizer
            self.accum = step.accum
            self.hyper_map = ops.HyperMap()
            self.scale = ms.Tensor(1.0 / grad_accum, ms.float32)

        def construct(self):
            grads = self.hyper_map(ops.partial(ops.mul, self.scale), self.accum)
            grads = ops.clip_by_global_norm(grads, max_grad_norm)
            updated = self.optimizer(grads)
            zeroed = self.hyper_map(ops.assign, self.accum, self.hyper_map(ops.zeros_like, self.accum))
            return ops.depend(ops.depend(self.scale, updated), zeroed)

    step.set_train(True)
    return step, (ApplyAccumulated() if grad_accum > 1 else None)


# ---- ranks (msrun) ---------------------------------------------------------------------------

def _rank_world() -> tuple[int, int]:
    if "MS_WORKER_NUM" not in os.environ and "MS_ROLE" not in os.environ:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    return get_rank(), get_group_size()


def launch_msrun(spec: RunSpec, args) -> int:
    """Re-run this job under msrun with train.workers local workers (data parallel)."""
    msrun = shutil.which("msrun")
    if not msrun:
        raise RuntimeError("train.workers > 1 needs msrun (installed with mindspore) on PATH")
    log_dir = spec.job_dir("train") / "msrun"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # msrun starts workers with the bare `python` on PATH: make it this interpreter.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [msrun, f"--worker_num={spec.train.workers}", f"--local_worker_num={spec.train.workers}",
           f"--master_port={spec.train.master_port}", f"--log_dir={log_dir}", "--join=True",
           str(repo / "jobs" / "train_worker.py"), "--config", args.config]
    for ov in args.overrides:
        cmd += ["--set", ov]
    log.info("launching %d workers: %s", spec.train.workers, " ".join(cmd))
    return subprocess.call(cmd, env=env)


# ---- the job -------------------------------------------------------------------------------

def train(spec: RunSpec) -> Path:
    from .core import mf
    from .core.data import load_tokenizer, read_mindrecord

    out = spec.job_dir("train")
    prep_dir = spec.job_dir("prep")
    data_file = prep_dir / "train.mindrecord"
    if not data_file.exists():
        raise InputError(f"{data_file} not found: run prep first (invoke prep --recipe {spec.source_path})")
    mf.setup_device(spec.train.device, spec.train.mode, seed=spec.train.seed, output_dir=spec.run_dir)
    rank, world = _rank_world()
    is_main = rank == 0

    ids, labels = read_mindrecord(data_file)
    pad_id = load_tokenizer(spec).pad_id
    segments, packing = None, None
    if spec.train.packing:
        from .core.packing import pack_rows

        samples = len(ids)
        ids, labels, segments, packing = pack_rows(ids, labels, pad_id)
        log.info("packing: %s samples into %s rows of %d tokens (filled %.0f%% -> %.0f%%, up to %d a row)",
                 f"{samples:,}", f"{len(ids):,}", ids.shape[1], 100 * packing["fill_before"],
                 100 * packing["fill_after"], packing["max_samples_per_row"])
    n_rows, width = ids.shape
    plan = plan_steps(n_rows, spec)
    plan["packing"] = packing
    total, ckpt_steps = plan["total_steps"], plan["checkpoint_steps"]

    import mindspore as ms
    from mindspore import nn

    mspec = get_model_spec(spec.model.name)
    from .core.weights import ensure_model
    base_ckpt = spec.resolve(spec.model.checkpoint) or ensure_model(spec.model.name) / "model.ckpt"
    per_rank = spec.train.batch_size // world
    net = mf.build_llama(mspec, seq_length=width - 1, batch_size=per_rank, dtype=spec.train.dtype,
                         checkpoint=base_ckpt)
    net = mf.add_lora(net, spec.lora.rank, spec.lora.alpha, spec.lora.dropout, spec.lora.target_modules,
                      dtype=spec.train.dtype)
    segment_param = mf.use_segment_mask(net, per_rank, width - 1) if segments is not None else None
    trainable, base_total = mf.count_trainable(net), mf.count_total(net)
    expected = mspec.lora_params(spec.lora.rank, spec.lora.target_modules)
    if trainable != expected:
        raise RuntimeError(f"LoRA wrapped {trainable:,} trainable parameters, the registry predicts {expected:,}")
    log.info("%s: %s trainable of %s (ratio %.8f); %d steps, checkpoints at %s",
             spec.model.name, f"{trainable:,}", f"{base_total:,}", trainable / base_total, total, ckpt_steps)

    lr_param = ms.Tensor(spec.train.lr, ms.float32)
    optimizer = nn.AdamWeightDecay(net.trainable_params(), learning_rate=lr_param,
                                   weight_decay=spec.train.weight_decay, eps=1e-8)
    capacity = None
    if spec.train.lm_head_on_answers:
        counted = mf.answer_positions(ids, labels, pad_id)
        capacity = gather_capacity(counted.sum(axis=1), plan, spec, world)
        log.info("LM head and loss on the answer positions only: at most %d of %d per step on this rank",
                 capacity, per_rank * (width - 1))
        loss_cell = mf.answer_only_loss(net)
    else:
        loss_cell = net
    step_cell, apply_cell = make_train_step(loss_cell, optimizer, spec.train.grad_accum, spec.train.max_grad_norm,
                                            world)

    # ---- resume ----
    state_dir, ckpt_dir = out / "state", out / "checkpoints"
    start = 0
    resume_json = state_dir / "resume.json"
    if resume_json.exists():
        state = json.loads(resume_json.read_text())
        if state.get("spec_hash") != _train_hash(spec):
            raise InputError(f"{out} holds a run with different training settings; use a new run_id or delete it")
        ms.load_param_into_net(optimizer, ms.load_checkpoint(str(state_dir / state["file"])))
        start = state["step"]
        log.info("resuming at step %d of %d", start, total)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(exist_ok=True)
        _truncate_log(out / "loss.jsonl", start)
    index = _read_index(ckpt_dir) if is_main else []

    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not is_main, dynamic_ncols=True)
    compile_s = None
    t_run = time.time()
    for step in range(start, total):
        lr = lr_at(step, total, plan["warmup_steps"], spec.train.lr, spec.train.min_lr_ratio)
        optimizer.learning_rate.set_data(ms.Tensor(lr, ms.float32))
        t0 = time.time()
        losses, tokens, hasher = [], 0, hashlib.sha1()
        for micro in range(spec.train.grad_accum):
            rows = batch_rows(step * spec.train.grad_accum + micro, n_rows, spec.train.batch_size, spec.train.seed)
            hasher.update(rows.tobytes())
            mine = rows[rank * per_rank:(rank + 1) * per_rank]
            if segment_param is not None:
                segment_param.set_data(ms.Tensor(segments[mine, :-1]))
            inputs = [ms.Tensor(ids[mine]), ms.Tensor(labels[mine])]
            if capacity is not None:
                inputs += [ms.Tensor(x) for x in mf.gather_plan(counted[mine], capacity)]
            loss = step_cell(*inputs)
            losses.append(float(loss.asnumpy()))
            tokens += int((ids[rows] != pad_id).sum())
        if apply_cell is not None:
            apply_cell()
        dt = time.time() - t0
        if compile_s is None:
            compile_s = dt
        loss = float(np.mean(losses))
        if not math.isfinite(loss):
            raise RuntimeError(f"loss is {loss} at step {step + 1}; lower train.lr")
        done = step + 1
        if is_main:
            epoch = done * spec.train.grad_accum * spec.train.batch_size / n_rows
            append_jsonl(out / "loss.jsonl", {"step": done, "epoch": round(epoch, 4), "loss": loss, "lr": lr,
                                              "tokens": tokens, "seconds": round(dt, 4),
                                              "tokens_per_s": round(tokens / dt, 1), "batch_sha1": hasher.hexdigest()})
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / dt:.0f}")
            bar.update(1)
            if done in ckpt_steps:
                path = ckpt_dir / f"lora-step{done:06d}.ckpt"
                mf.save_arrays(path, mf.lora_state(net))
                index = [e for e in index if e["step"] != done] + [
                    {"step": done, "epoch": round(epoch, 4), "loss": loss, "file": path.name}]
                atomic_write_json(ckpt_dir / "index.json", {"checkpoints": sorted(index, key=lambda e: e["step"]),
                                                            "total_steps": total, "planned": ckpt_steps})
            if done % spec.train.save_state_every == 0 or done in ckpt_steps or done == total:
                _save_resume(state_dir, optimizer, done, spec)
    bar.close()
    log.info("rank %d/%d finished steps %d-%d", rank, world, start + 1, total)
    if not is_main:
        return out
    run_s = time.time() - t_run
    summary = _write_summary(out, spec, plan, trainable, base_total, compile_s, run_s, start)
    write_job_manifest(out, "train", spec, inputs={"train.mindrecord": data_file, "base_checkpoint": base_ckpt},
                       outputs={"checkpoints": ckpt_dir / "index.json"}, seeds={"train": spec.train.seed}, extra=summary)
    log.info("train: %d checkpoints in %s", len(index), ckpt_dir)
    return out


def _train_hash(spec: RunSpec) -> str:
    """What must match for a resume to be valid: model, data, LoRA and train settings (not eval)."""
    d = spec.to_dict()
    keep = {k: d[k] for k in ("model", "data", "lora")}
    keep["train"] = {k: v for k, v in d["train"].items() if k not in ("save_state_every", "master_port")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _save_resume(state_dir: Path, optimizer, step: int, spec: RunSpec) -> None:
    import mindspore as ms

    from .core.mf import save_params

    state_dir.mkdir(parents=True, exist_ok=True)
    # Two files, each atomic; resume.json names the step its weights belong to, so it is written
    # second: a kill between the two leaves the previous json, whose step the next snapshot repeats.
    save_params(state_dir / f"resume-{step:06d}.ckpt", [{"name": p.name, "data": p} for p in optimizer.get_parameters()])
    atomic_write_json(state_dir / "resume.json", {"step": step, "file": f"resume-{step:06d}.ckpt",
                                                  "spec_hash": _train_hash(spec),
                                                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for old in state_dir.glob("resume-*.ckpt"):
        if old.name != f"resume-{step:06d}.ckpt":
            old.unlink()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resume point (steps that will run again)."""
    if not path.exists():
        return
    kept = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and json.loads(l)["step"] <= step]
    atomic_write_text(path, "".join(l + "\n" for l in kept))


def _read_index(ckpt_dir: Path) -> list[dict]:
    f = ckpt_dir / "index.json"
    return json.loads(f.read_text())["checkpoints"] if f.exists() else []


def _write_summary(out: Path, spec: RunSpec, plan: dict, trainable: int, total: int, compile_s, run_s, start) -> dict:
    rows = [json.loads(l) for l in (out / "loss.jsonl").read_text().splitlines() if l.strip()]
    csv = "step,epoch,loss,lr,tokens_per_s\n" + "".join(
        f"{r['step']},{r['epoch']},{r['loss']:.6f},{r['lr']:.6e},{r['tokens_per_s']}\n" for r in rows)
    atomic_write_text(out / "loss.csv", csv)
    steady = [r for r in rows[1:] if r["step"] > start + 1] or rows
    summary = {"steps": plan["total_steps"], "checkpoint_steps": plan["checkpoint_steps"],
               "trainable_params": trainable, "total_params": total, "ratio": trainable / total,
               "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
               "first_step_seconds_incl_compile": compile_s, "this_session_seconds": run_s,
               "resumed_from_step": start,
               "packing": plan.get("packing"),
               "tokens_per_s_steady": sum(r["tokens"] for r in steady) / max(1e-9, sum(r["seconds"] for r in steady))}
    atomic_write_json(out / "summary.json", summary)
    return summary


def main(spec: RunSpec, args) -> None:
    if spec.train.workers > 1 and "MS_WORKER_NUM" not in os.environ and "MS_ROLE" not in os.environ:
        code = launch_msrun(spec, args)
        if code != 0:
            raise RuntimeError(f"msrun exited with {code}; worker logs in {spec.job_dir('train') / 'msrun'}")
        return
    train(spec)


if __name__ == "__main__":
    raise SystemExit(run_job("train", __doc__, main))
