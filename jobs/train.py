"""train: LoRA fine-tuning through MindFormers' own Trainer, from a MindFormers YAML rendered from the
run spec. The same file runs on CPU here and on Ascend there, and with stock MindFormers.

Steps: read prep's MindRecord, plan the steps (epochs, the evenly spaced checkpoint steps), pack the
rows into train/packed.mindrecord when train.packing is on, render runs/<id>/train/mindformers.yaml
(tunebox/model/mf_config.py), then run MindFormers' Trainer on it: in this process, or under msrun with
train.workers processes (train_worker.py), or on a cluster whose operator starts the workers.

Outputs, under runs/<run_id>/train/ (MindFormers' layout, output_dir = this folder):
  mindformers.yaml                 the MindFormers config that ran (hand it to stock MindFormers)
  checkpoint_trainable/rank_0/     the LoRA matrices at the train.num_checkpoints planned steps
  checkpoint/iteration_*/          full checkpoints (weights + optimizer state) to resume from
  checkpoints/index.json           the planned checkpoints: global step, epoch, loss, file
  log/                             MindFormers' own logs (every rank), msrun/ the workers' consoles
  loss.jsonl, loss.csv             one line per optimizer step (loss, lr, seconds)
  tensorboard/rank_0/              MindFormers' TensorBoard events: loss, learning-rate, grad-norm per step
                                   (`tensorboard --logdir runs/<run_id>/train/tensorboard`)
  summary.json, manifest.json

Killed (even with kill -9) and started again with the same command, it resumes through MindFormers'
checkpoint section from the last full checkpoint (every train.save_state_every steps): the optimizer
state, the step and the dataset position (MindFormers skips the batches already seen) come back,
so the loss log continues as if nothing happened (tests/test_spine.py compares with a run that was
never interrupted).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from tunebox import layout
from tunebox.cli import run_job, spec_argv, switch
from tunebox.config import RunSpec
from tunebox.io import InputError, atomic_write_json, atomic_write_text
from tunebox.model.mf import run_mindformers, setup_device
from tunebox.training.finish import finish
from tunebox.training.inputs import PACKED_RECORDS, TRAIN_YAML, prepare
from tunebox.training.launch import hold_workers_lock, in_cluster, run_workers, wait_for_prep, wait_for_workers
from tunebox.training.outputs import TRAIN_STATE, check_resume, read_loss_log
from tunebox.training.plan import train_hash

log = logging.getLogger("tunebox.train")

WORKER_PROGRAM = Path(__file__).resolve().with_name("train_worker.py")  # what msrun starts, once per worker


def setup(spec: RunSpec, starting: bool) -> tuple[dict, str, bool]:
    """What train reads from the run spec, once: where prep's rows are, the model's name and the train and
    LoRA sections (prepare()'s arguments, with the base checkpoint model.checkpoint names); the settings'
    hash, and whether it resumes. `starting` (a run that trains in this process, not --render-only nor a
    worker) first waits until no worker of a killed run is alive and checks that train/ holds this run."""
    out = spec.job_dir("train")
    settings, resume = train_hash(spec.model, spec.data, spec.lora, spec.train), False
    if starting:
        wait_for_workers(out)
        resume = check_resume(out, settings)
    data_file = spec.run_dir / layout.PREP_TRAIN_RECORDS
    if not data_file.exists():
        raise InputError(f"{data_file} not found: run prep first (invoke prep --config {spec.source_path})")
    inputs = {"data_file": data_file, "out": out, "model": spec.model.name}
    return {**inputs, "train": spec.train, "lora": spec.lora}, settings, resume


def main(spec: RunSpec, args) -> Path:
    """The job: prepare the run (with --render-only, write its MindFormers config and stop), train through
    MindFormers (here, or under msrun with train.workers), then write the index, summary and manifest."""
    inputs, settings, resume = setup(spec, starting=not args.render_only)
    out = inputs["out"]
    prepared = prepare(**inputs, own_checkpoint=spec.resolve(spec.model.checkpoint))
    atomic_write_text(out / TRAIN_YAML, prepared["yaml"])  # after everything it names is there
    if args.render_only:  # the config (and the packed data) that train would run, and stop
        print(out / TRAIN_YAML)
        return out
    plan, losses = prepared["plan"], prepared["losses"]
    if prepared["done"]:
        log.info(
            "train: all %d steps ran and their LoRA checkpoints are written; writing the index, summary "
            "and manifest only",
            plan["total_steps"],
        )
        run_s = 0.0
    else:
        if not resume:
            # a run that died before its first checkpoint; old event files would join the new curves
            for stale in ("loss.jsonl", "sessions.jsonl", "checkpoints", "tensorboard"):
                p = out / stale
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        atomic_write_json(out / TRAIN_STATE, {"train_hash": settings})
        log.info(
            "%s: %s trainable of %s (ratio %.8f); %d steps of %d rows, checkpoints at %s%s",
            spec.model.name,
            f"{prepared['trainable_params']:,}",
            f"{prepared['total_params']:,}",
            prepared["trainable_params"] / prepared["total_params"],
            plan["total_steps"],
            spec.train.batch_size,
            plan["checkpoint_steps"],
            f"; resuming from {out / 'checkpoint'}" if resume else "",
        )
        started = time.time()
        if spec.train.workers <= 1 or in_cluster():  # this process trains
            setup_device(spec.train.device, spec.train.mode, seed=spec.train.seed, log_root=out)
            run_mindformers(out / TRAIN_YAML, resume)
        else:  # msrun's workers train, and rank 0 writes the index, summary and manifest
            argv = spec_argv(args.config, args.overrides)
            run_workers(spec.train, WORKER_PROGRAM, argv, out, spec.run_dir / layout.TRAIN_INDEX)
            return out
        run_s, losses = time.time() - started, read_loss_log(out)
    return finish(spec, prepared, run_s, losses)


def worker_main(spec: RunSpec, args) -> None:
    """One worker of a multi-process run. Every rank takes the same resume decision (rank 0's
    checkpoint folder) and renders the same config; rank 0 writes the run's index and summary."""
    out = spec.job_dir("train")
    wait_for_prep(spec.run_dir / layout.manifest("prep"), spec.cluster.prep_timeout)
    lock = hold_workers_lock(out)  # noqa: F841 (held until the process ends)
    setup_device(spec.train.device, spec.train.mode, seed=spec.train.seed, log_root=out)
    inputs, settings, _ = setup(spec, starting=False)
    prepared = prepare(**inputs, own_checkpoint=spec.resolve(spec.model.checkpoint), write=False)
    if spec.train.packing and not (out / PACKED_RECORDS).exists():
        raise InputError(
            f"{out / PACKED_RECORDS} is missing: with train.packing, render the run first "
            f"(python -m jobs.train --config {spec.source_path} --render-only)"
        )
    resume = check_resume(out, settings)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tunebox-worker-") as tmp:  # this rank's copy of the config
        path = Path(tmp) / TRAIN_YAML
        path.write_text(prepared["yaml"], encoding="utf-8")
        run_mindformers(path, resume)
    from mindspore.communication import get_rank

    if get_rank() == 0:
        finish(spec, prepared, time.time() - started, read_loss_log(out))


RENDER_ONLY = (
    "write train/mindformers.yaml (and the packed data with train.packing) and stop: the file stock MindFormers "
    "runs; needs prep's output"
)
_args = switch("--render-only", RENDER_ONLY)  # also what tasks.py makes the invoke task from

if __name__ == "__main__":
    raise SystemExit(run_job("train", __doc__, main, _args))
