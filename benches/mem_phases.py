"""mem_phases: the train job's resident memory by phase, for docs/CPU_MEMORY.md.

    python -m benches.mem_phases --out phases.json -- --config recipes/local-smollm2.yaml --set ...   # the job
    python -m benches.mem_phases --out phases.json --yaml runs/<id>/train/mindformers.yaml             # Trainer only

Runs the train job (jobs.train's main, in this process) or MindFormers' Trainer on a rendered config (a variant
edited by hand: num_layers, callbacks), with a thread that reads /proc/self/status (VmRSS, VmHWM) every
--every seconds, and marks at the phases by wrapping MindSpore/MindFormers functions (measurement only: the
wrappers call the original and return its result): the imports, building the network, the dataset, the
optimizer, loading the checkpoint, each graph compile, every training step (a callback added to Model.train)
and every checkpoint save. Each mark records VmRSS now, VmHWM (the peak so far) and the highest sampled RSS
since the previous mark. Writes them as JSON to --out and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import json
import runpy
import sys
import threading
import time
from pathlib import Path

GIB = 2**30


def status_kib() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


class Probe:
    def __init__(self, every: float, trim: bool = False):
        self.trim = trim
        self.t0 = time.perf_counter()
        self.marks: list[dict] = []
        self.window_max = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.every = every
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.done.is_set():
            rss = status_kib()["VmRSS"]
            with self.lock:
                self.window_max = max(self.window_max, rss)
            self.done.wait(self.every)

    def mark(self, label: str, **extra) -> None:
        s = status_kib()
        with self.lock:
            window, self.window_max = max(self.window_max, s["VmRSS"]), s["VmRSS"]
        self.marks.append(
            {
                "label": label,
                "t": round(time.perf_counter() - self.t0, 2),
                "rss": s["VmRSS"],
                "hwm": s["VmHWM"],
                "anon": s.get("RssAnon", 0),
                "file": s.get("RssFile", 0),
                "window_max": window,
                **extra,
            }
        )
        if self.trim:  # glibc's free() keeps freed heap pages: how much of the RSS is that?
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.marks[-1]["rss_after_trim"] = status_kib()["VmRSS"]
        print(
            f"[mem] {self.marks[-1]['t']:8.1f}s {label:38s} rss {s['VmRSS'] / GIB:6.3f} "
            f"hwm {s['VmHWM'] / GIB:6.3f} window-max {window / GIB:6.3f} GiB"
            + (f" after malloc_trim {self.marks[-1]['rss_after_trim'] / GIB:6.3f}" if self.trim else ""),
            file=sys.stderr,
            flush=True,
        )


def wrap(probe: Probe, owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        probe.mark(f"{label}: before")
        result = original(*args, **kwargs)
        probe.mark(f"{label}: after")
        return result

    setattr(owner, name, wrapped)


def install(probe: Probe) -> None:
    import mindspore as ms

    probe.mark("import mindspore")
    import mindformers
    from mindformers.trainer import base_trainer
    from mindformers.trainer import utils as trainer_utils
    from mindspore.common import api
    from mindspore.train import Model
    from mindspore.train.callback import Callback

    probe.mark("import mindformers")
    del mindformers
    wrap(probe, base_trainer.BaseTrainer, "create_network", "build network")
    wrap(probe, base_trainer.BaseTrainer, "create_network_without_param_init", "build network (no init)")
    wrap(probe, base_trainer.BaseTrainer, "create_train_dataset", "build dataset")
    wrap(probe, base_trainer.BaseTrainer, "create_optimizer_scheduler", "build optimizer")
    wrap(probe, base_trainer, "transform_and_load_checkpoint", "load checkpoint (transform_and_load)")
    wrap(probe, base_trainer, "load_checkpoint", "load checkpoint (1.9's checkpoint section)")
    wrap(probe, base_trainer.BaseTrainer, "create_optimizer_scheduler_without_param_init", "build optimizer (no init)")
    wrap(probe, trainer_utils, "load_checkpoint", "ms.load_checkpoint (file -> dict)")
    wrap(probe, trainer_utils, "load_param_into_net", "load_param_into_net")
    wrap(probe, api._CellGraphExecutor, "compile", "graph compile")
    wrap(probe, ms, "save_checkpoint", "save_checkpoint")

    class Marks(Callback):
        def on_train_begin(self, run_context):
            probe.mark("train begin")

        def on_train_step_begin(self, run_context):
            step = run_context.original_args().cur_step_num
            if step <= 3:
                probe.mark(f"step {step} begin")

        def on_train_step_end(self, run_context):
            extra = {}
            try:
                extra["ms_memory_stats"] = ms.runtime.memory_stats()
            except Exception as exc:  # noqa: BLE001 (CPU may not support it)
                extra["ms_memory_stats"] = repr(exc)[:200]
            probe.mark(f"step {run_context.original_args().cur_step_num} end", **extra)

    train = Model.train

    @functools.wraps(train)
    def train_with_marks(self, epoch, train_dataset, callbacks=None, *args, **kwargs):
        if callbacks is None:
            callbacks = []
        elif not isinstance(callbacks, list):
            callbacks = [callbacks]
        return train(self, epoch, train_dataset, [Marks()] + list(callbacks), *args, **kwargs)

    Model.train = train_with_marks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.mem_phases", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the marks")
    parser.add_argument("--yaml", type=Path, help="run MindFormers' Trainer on this rendered config only")
    parser.add_argument("--every", type=float, default=0.05, help="sampling period, seconds")
    parser.add_argument("--trim", action="store_true", help="call malloc_trim(0) at each mark, record the RSS after")
    parser.add_argument("job_args", nargs="*", help="jobs.train's arguments (after --)")
    args = parser.parse_args(argv)
    probe = Probe(args.every, args.trim)
    probe.mark("start (python + argparse)")
    install(probe)
    code = 0
    try:
        if args.yaml:
            from tunebox.model.mf import run_mindformers

            run_mindformers(args.yaml, False)
        else:
            sys.argv = ["jobs.train"] + args.job_args
            try:
                runpy.run_module("jobs.train", run_name="__main__")
            except SystemExit as exc:
                code = exc.code or 0
    finally:
        probe.mark("end")
        probe.done.set()
        args.out.write_text(json.dumps({"argv": sys.argv, "marks": probe.marks}, indent=1))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
