"""train: LoRA fine-tuning through MindFormers' own Trainer, from a MindFormers YAML rendered from the
run spec. The same file runs on CPU here and on Ascend there, and with stock MindFormers.

Steps: read prep's MindRecord, plan the steps (epochs, the evenly spaced checkpoint steps), pack the
rows into train/packed.mindrecord when train.packing is on, render runs/<id>/train/mindformers.yaml
(tunebox/model/mf_config.py), then run MindFormers' Trainer on it: in this process, or under msrun with
train.workers processes (train_worker.py), or on a cluster whose operator starts the workers.

Outputs, under runs/<run_id>/train/ (MindFormers' layout, output_dir = this folder):
  mindformers.yaml                 the MindFormers config that ran (hand it to stock MindFormers)
  checkpoint_trainable/rank_0/     the LoRA matrices at the train.num_checkpoints planned steps
  checkpoint/rank_0/               full checkpoints (weights + optimizer state) for resume_training
  checkpoints/index.json           the planned checkpoints: global step, epoch, loss, file
  log/                             MindFormers' own logs (every rank), msrun/ the workers' consoles
  loss.jsonl, loss.csv             one line per optimizer step (loss, lr, seconds)
  tensorboard/rank_0/              MindFormers' TensorBoard events: loss, learning-rate, grad-norm per step
                                   (`tensorboard --logdir runs/<run_id>/train/tensorboard`)
  summary.json, manifest.json

Killed (even with kill -9) and started again with the same command, it resumes through MindFormers'
resume_training from the last full checkpoint (every train.save_state_every steps): the optimizer
state, the step and the dataset position (MindFormers skips the batches already seen) come back,
so the loss log continues as if nothing happened (tests/test_spine.py compares with a run that was
never interrupted).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.cli import job_process_env, run_job
from tunebox.config import RunSpec
from tunebox.io import InputError, atomic_write_json, atomic_write_text, read_jsonl
from tunebox.manifest import write_job_manifest
from tunebox.model.registry import get_model_shape

log = logging.getLogger("tunebox.train")


# ---- the plan: pure functions of the spec and the row count --------------------------------------

def plan_steps(n_rows: int, spec: RunSpec) -> dict:
    """Optimizer steps, steps per epoch (MindFormers drops the last partial batch of an epoch), warmup
    and the evenly spaced checkpoint steps."""
    t = spec.train
    if n_rows < t.batch_size:
        raise InputError(f"{n_rows} training rows is fewer than one batch (train.batch_size={t.batch_size})")
    batches_per_epoch = n_rows // (t.batch_size * t.grad_accum)
    total = t.max_steps if t.max_steps is not None else int(t.epochs * batches_per_epoch)
    if total < t.num_checkpoints:
        raise InputError(f"only {total} optimizer steps: fewer than train.num_checkpoints={t.num_checkpoints}; "
                         f"raise train.epochs or lower train.batch_size / train.grad_accum")
    return {"total_steps": total, "batches_per_epoch": batches_per_epoch,
            "warmup_steps": int(round(t.warmup_ratio * total)),
            "checkpoint_steps": checkpoint_steps(total, t.num_checkpoints)}


def checkpoint_steps(total: int, k: int) -> list[int]:
    """k evenly spaced steps ending at the last one: total*i/k rounded, i = 1..k."""
    return [int(round(total * i / k)) for i in range(1, k + 1)]


def answer_capacity(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> int:
    """The most loss-counted positions in any row (MindFormers counts a position when its input token
    is not padding and its shifted label is not IGNORE), rounded up to a multiple of 8: the static size
    of the answer-only LM head (mf_extensions.TuneboxLlamaForCausalLM). Exact for this data, whatever
    order MindFormers reads it in."""
    counted = (ids[:, :-1] != pad_id) & (labels[:, 1:] >= 0)
    most = int(counted.sum(axis=1).max()) if len(counted) else 1
    return min(-(-max(most, 1) // 8) * 8, ids.shape[1] - 1)


def train_hash(spec: RunSpec) -> str:
    """What must match for a resume to be valid: model, data, LoRA and train settings (not eval)."""
    d = spec.to_dict()
    keep = {k: d[k] for k in ("model", "data", "lora")}
    keep["train"] = {k: v for k, v in d["train"].items() if k not in ("save_state_every", "master_port")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ---- the MindFormers config --------------------------------------------------------------------

def prepare(spec: RunSpec, write: bool = True) -> dict:
    """Everything the Trainer needs, from the spec and prep's output: the plan, the data files (packed
    when train.packing), the answer capacity and the rendered MindFormers config. With write=False
    nothing is written (a worker of a multi-node run)."""
    from tunebox.data.samples import mindrecord_shards, read_mindrecord
    from tunebox.model.weights import load_tokenizer
    from tunebox.model.mf_config import render_train_config
    from tunebox.run_checkpoints import base_checkpoint

    out = spec.job_dir("train")
    data_file = spec.run_dir / layout.PREP_TRAIN_RECORDS
    if not data_file.exists():
        raise InputError(f"{data_file} not found: run prep first (invoke prep --config {spec.source_path})")
    ids, labels = read_mindrecord(data_file)
    pad_id = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer)).pad_id
    files, packing = mindrecord_shards(data_file), None
    if spec.train.packing:
        from tunebox.data.packing import pack_rows, write_packed_mindrecord

        samples = len(ids)
        ids, labels, segments, packing = pack_rows(ids, labels, pad_id)
        packed = out / "packed.mindrecord"
        if write:
            out.mkdir(parents=True, exist_ok=True)
            write_packed_mindrecord(packed, ids, labels, segments)
        files = [packed]
        log.info("packing: %s samples into %s rows of %d tokens (filled %.0f%% -> %.0f%%, up to %d a row)",
                 f"{samples:,}", f"{len(ids):,}", ids.shape[1], 100 * packing["fill_before"],
                 100 * packing["fill_after"], packing["max_samples_per_row"])
    plan = plan_steps(len(ids), spec)
    plan["packing"] = packing
    capacity = answer_capacity(ids, labels, pad_id) if spec.train.lm_head_on_answers else 0
    base = base_checkpoint(spec)
    config = render_train_config(spec, data_files=files, out_dir=out, plan=plan, base_checkpoint=base,
                                 answer_capacity=capacity, seq_length=ids.shape[1] - 1)
    tokens = int((ids != pad_id).sum())
    return {"plan": plan, "config": config, "capacity": capacity, "base_checkpoint": base,
            "data_file": data_file, "rows": len(ids), "tokens_per_row": tokens / max(1, len(ids))}


def render(spec: RunSpec) -> dict:
    """prepare() and write the config to train/mindformers.yaml: what train runs, and all that
    --render-only does."""
    from tunebox.model.mf_config import dump

    prepared = prepare(spec)
    spec.job_dir("train").mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.job_dir("train") / "mindformers.yaml", dump(prepared["config"]))
    return prepared


def resume_point(out: Path, rank: int = 0) -> bool:
    """Whether MindFormers left a full checkpoint to resume from (its meta.json names the last one)."""
    return (out / "checkpoint" / f"rank_{rank}" / "meta.json").exists()


def run_mindformers(yaml_path: Path, resume: bool) -> None:
    """What MindFormers' run_mindformer.py does for run_mode finetune: MindFormerConfig(yaml),
    build_context, Trainer(args=config).train(), with tunebox's extensions found through REGISTER_PATH."""
    from tunebox.model.mf_config import EXTENSIONS_FILE

    os.environ["REGISTER_PATH"] = str(EXTENSIONS_FILE.parent)
    # auto_register copies the module into a cache folder, ./modules unless OM_MODULES_CACHE was set
    # before MindFormers was imported (it reads it once, into HubConstants): keep it in the run
    modules = str(Path(yaml_path).parent / "modules")
    os.environ["OM_MODULES_CACHE"] = modules
    from mindformers.tools.hub.hub import HubConstants

    HubConstants.OM_MODULES_CACHE = modules
    os.environ.setdefault("GLOG_v", "3")
    from tunebox.model.mf import quiet_mindformers_console

    from mindformers import MindFormerConfig
    from mindformers.core.context import build_context
    from mindformers.trainer import Trainer

    quiet_mindformers_console()
    cfg = MindFormerConfig(str(yaml_path))
    if cfg.context.device_target == "CPU" and cfg.use_parallel:
        _skip_preload_barrier_on_cpu()
    if resume:
        from tunebox.model.mf_config import resume_settings

        for key, value in resume_settings(cfg).items():
            cfg[key] = value
    build_context(cfg)
    Trainer(args=cfg).train()


def _skip_preload_barrier_on_cpu() -> None:
    """MindFormers' preload_ckpt (trainer/utils.py) ends with a communication barrier() whenever a
    checkpoint is loaded with use_parallel on; MindSpore has no Barrier kernel on CPU, so a
    data-parallel CPU run could neither start from the base checkpoint nor resume. The preload itself
    (MindIO, absent here) is kept; only the barrier is skipped, on CPU only: each rank reads its own
    files, and the first collective of the training step synchronizes the ranks anyway."""
    import mindformers.trainer.base_trainer as base_trainer
    from mindformers.trainer import utils

    original = utils.preload_ckpt

    def preload_without_barrier(config):
        use_parallel = config.use_parallel
        config.use_parallel = False
        try:
            return original(config)
        finally:
            config.use_parallel = use_parallel

    base_trainer.preload_ckpt = preload_without_barrier


# ---- msrun -----------------------------------------------------------------------------------

def launch_msrun(spec: RunSpec, args) -> int:
    """Re-run this job under msrun with train.workers local workers."""
    msrun = shutil.which("msrun")
    if not msrun:
        raise RuntimeError("train.workers > 1 needs msrun (installed with mindspore) on PATH")
    log_dir = spec.job_dir("train") / "msrun"
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs_dir = Path(__file__).resolve().parent
    env = job_process_env(jobs_dir)
    # msrun starts workers with the bare `python` on PATH: make it this interpreter.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [msrun, f"--worker_num={spec.train.workers}", f"--local_worker_num={spec.train.workers}",
           f"--master_port={spec.train.master_port}", f"--log_dir={log_dir}", "--join=True",
           str(jobs_dir / "train_worker.py"), "--config", args.config]
    for ov in args.overrides:
        cmd += ["--set", ov]
    log.info("launching %d workers: %s", spec.train.workers, " ".join(cmd))
    return subprocess.call(cmd, env=env)


WORKERS_LOCK = ".workers.lock"


def die_with_launcher() -> None:
    """In a worker msrun started: msrun puts each worker in a session of its own, so kill -9 on the
    pipeline's process group left the workers training, and writing the run's files, with nothing to
    watch them. Linux's parent-death signal kills this worker when msrun dies."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before the signal was armed
        os._exit(1)


def hold_workers_lock(out: Path):
    """A worker holds a shared lock on train/.workers.lock while it lives (the open file is kept by the
    caller); wait_for_workers takes it exclusively."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / WORKERS_LOCK, "a")
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


def wait_for_workers(out: Path, timeout: float = 120.0) -> None:
    """Before a run starts training in `out`: wait until no worker of an earlier, killed run is alive
    (they hold train/.workers.lock); refuse after `timeout` seconds rather than train beside them."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + timeout
    with open(out / WORKERS_LOCK, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(f"workers of an earlier run still hold {out / WORKERS_LOCK} after "
                                       f"{timeout:.0f} s; stop them (fuser -v {out / WORKERS_LOCK}) and run again")
                log.info("waiting for the workers of an earlier run to stop (%s)", out / WORKERS_LOCK)
                time.sleep(2)


def in_cluster() -> bool:
    return "MS_WORKER_NUM" in os.environ or "MS_ROLE" in os.environ


def wait_for_prep(spec: RunSpec, poll_s: float = 2.0) -> None:
    """A rank of a multi-node run may start before the first node has run weights and prep: wait for
    prep's manifest (written last) up to cluster.prep_timeout seconds (TUNEBOX_PREP_TIMEOUT overrides),
    a timeout of its own, before anything reads prep's output or joins the cluster."""
    manifest = spec.run_dir / layout.manifest("prep")
    timeout = float(os.environ.get("TUNEBOX_PREP_TIMEOUT") or spec.cluster.prep_timeout)
    started, last_said = time.monotonic(), None
    while not manifest.exists():
        waited = time.monotonic() - started
        if waited >= timeout:
            raise RuntimeError(f"prep did not finish within {timeout:g} s: no {manifest}. The first node runs weights "
                               f"and prep (see its log); raise cluster.prep_timeout or TUNEBOX_PREP_TIMEOUT when "
                               f"the base model's download takes longer")
        if last_said is None or time.monotonic() - last_said >= 60:
            print(f"train: rank waiting for prep ({manifest}), {waited:.0f} of {timeout:g} s", flush=True)
            last_said = time.monotonic()
        time.sleep(poll_s)


# ---- the job -------------------------------------------------------------------------------

def check_resume(spec: RunSpec, out: Path) -> bool:
    """True when a previous run of the same settings left a checkpoint to resume from; InputError when
    the folder holds a run with other settings."""
    state = out / "train_state.json"
    if state.exists() and json.loads(state.read_text())["train_hash"] != train_hash(spec):
        raise InputError(f"{out} holds a run with different training settings; use a new run_id or delete it")
    return resume_point(out)


def training_done(out: Path, plan: dict) -> bool:
    """Whether an earlier session already ran every planned step: loss.jsonl reaches total_steps and
    every planned LoRA checkpoint is there (the callbacks write a step's LoRA file, then its loss line,
    then the full checkpoint). Checked before looking for a resume point: resuming from the final
    step would train past it (a step past max_steps) or fail (MindSpore refuses initial_epoch == epoch
    when the final step ends an epoch)."""
    log_file = out / "loss.jsonl"
    if not log_file.exists():
        return False
    steps = [r["step"] for r in read_jsonl(log_file)]
    return bool(steps) and steps[-1] >= plan["total_steps"] and len(lora_files(out, plan)) == len(plan["checkpoint_steps"])


def train(spec: RunSpec, args=None) -> Path:
    from tunebox.model.mf import setup_device

    out = spec.job_dir("train")
    wait_for_workers(out)
    setup_device(spec.train.device, spec.train.mode, seed=spec.train.seed, log_root=out)
    resume = check_resume(spec, out)
    prepared = render(spec)
    plan = prepared["plan"]
    if (out / "train_state.json").exists() and training_done(out, plan):
        log.info("train: all %d steps ran and their LoRA checkpoints are written; writing the index, summary "
                 "and manifest only", plan["total_steps"])
        return finish(spec, prepared, 0.0)
    if not resume:
        # a run that died before its first checkpoint; old event files would join the new curves
        for stale in ("loss.jsonl", "sessions.jsonl", "checkpoints", "tensorboard"):
            p = out / stale
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    atomic_write_json(out / "train_state.json", {"train_hash": train_hash(spec)})
    trainable, total_params = _param_counts(spec)
    log.info("%s: %s trainable of %s (ratio %.8f); %d steps of %d rows, checkpoints at %s%s",
             spec.model.name, f"{trainable:,}", f"{total_params:,}", trainable / total_params,
             plan["total_steps"], spec.train.batch_size, plan["checkpoint_steps"],
             f"; resuming from {out / 'checkpoint'}" if resume else "")
    started = time.time()
    if spec.train.workers > 1 and not in_cluster():
        code = launch_msrun(spec, args)
        if code != 0:
            raise RuntimeError(f"msrun exited with {code}; worker logs in {out / 'msrun'} and {out / 'log'}")
        if not (spec.run_dir / layout.TRAIN_INDEX).exists():
            raise RuntimeError(f"the workers ended without writing {spec.run_dir / layout.TRAIN_INDEX}; "
                               f"see {out / 'msrun'}")
        return out  # rank 0 wrote the index, summary and manifest
    run_mindformers(out / "mindformers.yaml", resume)
    return finish(spec, prepared, time.time() - started)


def _session_start(out: Path) -> int:
    """The step this session started from (TuneboxLossLog's sessions.jsonl): 0, or where MindFormers'
    resume_training restored the run."""
    path = out / "sessions.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    return rows[-1]["start_step"] if rows else 0


def lora_files(out: Path, plan: dict, rank: int = 0) -> dict[int, Path]:
    """The planned LoRA checkpoint of each step that exists, by global step, in MindFormers' layout
    (named by the callback that writes them)."""
    from tunebox.model.mf_config import CHECKPOINT_PREFIX
    from tunebox.model.mf_extensions import lora_checkpoint_path

    paths = {step: Path(lora_checkpoint_path(str(out), CHECKPOINT_PREFIX, step, plan["batches_per_epoch"], rank))
             for step in plan["checkpoint_steps"]}
    return {step: f for step, f in paths.items() if f.exists()}


def _param_counts(spec: RunSpec) -> tuple[int, int]:
    """(LoRA trainable, base total) parameters, from the registry."""
    mspec = get_model_shape(spec.model.name)
    return mspec.lora_params(spec.lora.rank, spec.lora.target_modules), mspec.total_params()


def finish(spec: RunSpec, prepared: dict, run_s: float) -> Path:
    """After the Trainer: the checkpoint index, loss.csv, summary and manifest (rank 0's files)."""
    out = spec.job_dir("train")
    trainable, total_params = _param_counts(spec)
    start_step = _session_start(out)
    plan = prepared["plan"]
    rows = read_jsonl(spec.run_dir / layout.TRAIN_LOSS)
    if not rows or rows[-1]["step"] < plan["total_steps"]:
        raise RuntimeError(f"MindFormers stopped at step {rows[-1]['step'] if rows else 0} of {plan['total_steps']}; "
                           f"see {out / 'log'}")
    loss_at = {r["step"]: r for r in rows}
    found = lora_files(out, plan)
    missing = [s for s in plan["checkpoint_steps"] if s not in found]
    if missing:
        raise RuntimeError(f"the LoRA checkpoints of steps {missing} are missing under {out / 'checkpoint_trainable'}")
    index = [{"step": s, "epoch": round(s / plan["batches_per_epoch"], 4), "loss": loss_at[s]["loss"],
              "file": str(found[s].relative_to(out))} for s in plan["checkpoint_steps"]]
    atomic_write_json(spec.run_dir / layout.TRAIN_INDEX, {"checkpoints": index, "total_steps": plan["total_steps"],
                                                           "planned": plan["checkpoint_steps"],
                                                           "files_relative_to": "train"})
    csv = "step,epoch,loss,lr,seconds\n" + "".join(
        f"{r['step']},{r['epoch']},{r['loss']:.6f},{(r['lr'] or 0):.6e},{r['seconds']}\n" for r in rows)
    atomic_write_text(out / "loss.csv", csv)
    steady = [r for r in rows if r["step"] > start_step + 1] or rows
    seconds = sum(r["seconds"] for r in steady)
    tokens = prepared["tokens_per_row"] * spec.train.batch_size * len(steady)
    summary = {"steps": plan["total_steps"], "checkpoint_steps": plan["checkpoint_steps"],
               "trainable_params": trainable, "total_params": total_params, "ratio": trainable / total_params,
               "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
               "first_step_seconds_incl_compile": rows[0]["seconds"] if start_step == 0 else None,
               "this_session_seconds": run_s, "resumed_from_step": start_step,
               "packing": plan.get("packing"), "answer_capacity": prepared["capacity"],
               "tokens_per_s_steady": tokens / max(1e-9, seconds),
               # this session's peak resident memory: the train process or its largest msrun worker (Linux: KiB)
               "peak_rss_mb": round(max(resource.getrusage(who).ru_maxrss
                                        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024, 1),
               "trainer": "mindformers.Trainer", "mindformers_yaml": "mindformers.yaml"}
    atomic_write_json(spec.run_dir / layout.TRAIN_SUMMARY, summary)
    kill_point("train.before-manifest")
    write_job_manifest(out, "train", spec, inputs={"train.mindrecord": prepared["data_file"],
                                                   "base_checkpoint": prepared["base_checkpoint"]},
                       outputs={"checkpoints": spec.run_dir / layout.TRAIN_INDEX,
                                "mindformers_yaml": out / "mindformers.yaml"},
                       seeds={"train": spec.train.seed}, extra=summary)
    log.info("train: %d LoRA checkpoints in %s", len(index), out / "checkpoint_trainable")
    return out


def worker_main(spec: RunSpec, args) -> None:
    """One worker of a multi-process run. Every rank takes the same resume decision (rank 0's
    checkpoint folder) and renders the same config; rank 0 writes the run's index and summary."""
    from tunebox.model.mf import setup_device

    out = spec.job_dir("train")
    wait_for_prep(spec)
    lock = hold_workers_lock(out)  # noqa: F841 (held until the process ends)
    setup_device(spec.train.device, spec.train.mode, seed=spec.train.seed, log_root=out)
    prepared = prepare(spec, write=False)
    if spec.train.packing and not (out / "packed.mindrecord").exists():
        raise InputError(f"{out / 'packed.mindrecord'} is missing: with train.packing, render the run first "
                         f"(python -m jobs.train --config {spec.source_path} --render-only)")
    resume = check_resume(spec, out)
    started = time.time()
    import tempfile

    from tunebox.model.mf_config import dump

    with tempfile.TemporaryDirectory(prefix="tunebox-worker-") as tmp:  # this rank's copy of the config
        path = Path(tmp) / "mindformers.yaml"
        path.write_text(dump(prepared["config"]), encoding="utf-8")
        run_mindformers(path, resume)
    from mindspore.communication import get_rank

    if get_rank() == 0:
        finish(spec, prepared, time.time() - started)


def main(spec: RunSpec, args) -> None:
    if args.render_only:
        render(spec)
        print(spec.job_dir("train") / "mindformers.yaml")
        return
    train(spec, args)


def _args(parser) -> None:
    parser.add_argument("--render-only", action="store_true",
                        help="write train/mindformers.yaml (and the packed data with train.packing) and stop: "
                             "the file stock MindFormers runs; needs prep's output")


if __name__ == "__main__":
    raise SystemExit(run_job("train", __doc__, main, _args))
