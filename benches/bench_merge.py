"""bench.merge: does the streamed LoRA merge (tunebox/model/checkpoint.py merge_streaming) keep its
memory flat and run at disk speed on a Llama3-8B-sized checkpoint?

    python -m benches.bench_merge [--dir DIR] [--sizes quarter,half,full] [--budget-gb 40]   (invoke bench.merge)

1. Measures the disk holding DIR: sequential write (fsync'd), cold read (pages dropped with
   posix_fadvise DONTNEED) and cold copy with copy_file_range, on a --disk-test-gb file.
2. For each size (the Llama3-8B registry shapes; `half`/`quarter` keep every tensor shape and
   take the number of decoder layers that gives about half/a quarter of the parameters): writes
   a synthetic base checkpoint in pieces (values from a reused random pool: the content does not
   change the I/O), a random LoRA (r=8 on wq|wv, float32, as train writes it), then merges them in
   a child process (`python -m jobs.checkpoint merge`) whose peak RSS is the kernel's
   (wait4 ru_maxrss), also sampled from /proc every 0.1 s. Checks a few merged tensors exactly.
3. Prints a table, writes DIR/results.json and appends a section to docs/BENCHMARKS.md.

Storage dtype: float32 when the full base and its merge fit the disk budget, else bfloat16 (what
Ascend checkpoints use; 2 x 16 GB for 8B). Every big file is deleted at the end.
Exit codes: 0 ok, 2 not enough disk / bad arguments, 1 failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm import tqdm

from tunebox.io import sha256_file
from tunebox.layout import REPO_ROOT
from tunebox.model.checkpoint import RECORD_BYTES, CheckpointReader, CheckpointStreamWriter, float32_to_bfloat16_bits
from tunebox.model.lora import merge_lora_into_base
from tunebox.model.mf import LORA_A, LORA_B
from tunebox.model.registry import get_model_shape, with_overrides

GB = 1e9
MiB = 1 << 20
SIZES = {"quarter": 0.25, "half": 0.5, "full": 1.0}
LORA_RANK, LORA_ALPHA, LORA_TARGETS = 8, 16, ("wq", "wv")


# ---- measuring a child process ----------------------------------------------------------------


@dataclass
class Measured:
    returncode: int
    seconds: float
    max_rss: int  # bytes: the child's own peak (VmHWM of its process image)
    sampled_max_rss: int  # bytes: the largest VmRSS seen while sampling every 0.1 s
    wait4_max_rss: int  # bytes: wait4's ru_maxrss, which also counts the forked parent (see below)
    stdout: str
    stderr: str
    samples: list = field(default_factory=list)  # (seconds since start, rss bytes)


# Linux keeps the largest RSS a process ever had across exec, including the copy of the parent it
# was forked from: ru_maxrss of a child started from a 450 MB pytest is >= 450 MB whatever it
# does. VmHWM belongs to the process image, which exec replaces; the child writes it at exit.
_PEAK_WRAPPER = r"""
import atexit, os, sys
def _write_peak():
    with open("/proc/self/status") as fh:
        hwm = next(line for line in fh if line.startswith("VmHWM:"))
    with open(os.environ["TUNEBOX_PEAK_RSS_FILE"], "w") as out:
        out.write(str(int(hwm.split()[1]) * 1024))
atexit.register(_write_peak)
mode, target, *rest = sys.argv[1:]
if mode == "-m":
    import runpy
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def _rss(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_measured(python_args: list[str], env: Optional[dict] = None, cwd=None, sample_every: float = 0.1) -> Measured:
    """Run `python -m MODULE ARGS...` or `python -c CODE ARGS...` (python_args starts with -m or -c)
    in a child process and measure its peak RSS."""
    if not python_args or python_args[0] not in ("-m", "-c"):
        raise ValueError("python_args must start with -m MODULE or -c CODE")
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".peak") as peak,
    ):
        env = dict(os.environ if env is None else env, TUNEBOX_PEAK_RSS_FILE=peak.name)
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _PEAK_WRAPPER, *python_args], stdout=out, stderr=err, env=env, cwd=cwd
        )
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss = _rss(proc.pid)
                if rss:
                    samples.append((round(time.perf_counter() - started, 2), rss))
                done.wait(sample_every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        reported = peak.read().strip()
        return Measured(
            proc.returncode,
            seconds,
            int(reported) if reported else -1,
            max((r for _, r in samples), default=0),
            usage.ru_maxrss * 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            samples,
        )


# ---- the machine and its disk -----------------------------------------------------------------


def machine_info(directory: Path) -> dict:
    cpu = platform.processor() or "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            mem[key] = int(value.split()[0]) * 1024
    usage = shutil.disk_usage(directory)
    device, fstype = "?", "?"
    best = ""
    with open("/proc/mounts") as fh:  # the longest mount point that contains directory
        for line in fh:
            dev, mount, fs = line.split()[:3]
            if str(directory.resolve()).startswith(mount.rstrip("/") + "/") or str(directory.resolve()) == mount:
                if len(mount) > len(best):
                    best, device, fstype = mount, dev, fs
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_total": mem.get("MemTotal"),
        "ram_available": mem.get("MemAvailable"),
        "disk_device": device,
        "disk_fs": fstype,
        "disk_mount": best,
        "disk_size": usage.total,
        "disk_free": usage.free,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_start": os.getloadavg(),
    }


def _drop(fd: int) -> None:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def cold_copy_seconds(src: Path, dst: Path) -> float:
    """Seconds to copy src to dst with copy_file_range (what the merge does for tensors without an
    adapter) and fsync, src dropped from the page cache first; dst's pages dropped after."""
    fd = os.open(src, os.O_RDONLY)
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _drop(fd)
        nbytes = os.fstat(fd).st_size
        t = time.perf_counter()
        pos = 0
        while pos < nbytes:
            pos += os.copy_file_range(fd, out, nbytes - pos, pos)
        os.fsync(out)
        seconds = time.perf_counter() - t
        _drop(out)
        _drop(fd)
        return seconds
    finally:
        os.close(out)
        os.close(fd)


def disk_speed(directory: Path, nbytes: int, block: int = 64 * MiB) -> dict:
    """Sequential write (with fsync), cold read and cold copy_file_range of an nbytes file."""
    src, dst = directory / ".disk-test.bin", directory / ".disk-test.copy"
    data = np.random.default_rng(0).integers(0, 256, block, dtype=np.uint8).tobytes()  # incompressible
    nbytes = max(block, nbytes // block * block)
    try:
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        t = time.perf_counter()
        for _ in range(nbytes // block):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
        write_s = time.perf_counter() - t
        _drop(fd)
        os.close(fd)

        fd = os.open(src, os.O_RDONLY)
        _drop(fd)
        buf = bytearray(block)
        t = time.perf_counter()
        while os.readv(fd, [buf]):
            pass
        read_s = time.perf_counter() - t
        _drop(fd)
        os.close(fd)

        copy_s = cold_copy_seconds(src, dst)
    finally:
        for path in (src, dst):
            path.unlink(missing_ok=True)
    return {
        "bytes": nbytes,
        "write_gbps": nbytes / write_s / GB,
        "read_gbps": nbytes / read_s / GB,
        "copy_gbps": nbytes / copy_s / GB,
        "write_s": write_s,
        "read_s": read_s,
        "copy_s": copy_s,
    }


# ---- synthetic checkpoints --------------------------------------------------------------------


def layers_for(fraction: float, spec) -> int:
    """Decoder layers whose model has about `fraction` of the full model's parameters."""
    full = spec.total_params()
    return min(
        range(1, spec.num_layers + 1),
        key=lambda n: abs(with_overrides(spec, num_layers=n).total_params() - fraction * full),
    )


def checkpoint_bytes(spec, itemsize: int) -> int:
    """The .ckpt size: tensor bytes plus each record's header (name, dims, type: < 200 B)."""
    total = 0
    for shape in spec.parameter_shapes().values():
        nbytes = int(np.prod(shape)) * itemsize
        total += nbytes + 200 * max(1, -(-nbytes // RECORD_BYTES))
    return total


def value_pool(tensor_type: str, nbytes: int = 256 * MiB, seed: int = 0) -> np.ndarray:
    """normal(0, 0.02) values to cut tensors from (drawing 8 billion values would take minutes);
    BFloat16 as its uint16 bit patterns."""
    rng = np.random.default_rng(seed)
    bf16 = tensor_type == "BFloat16"
    count = nbytes // (2 if bf16 else 4)
    pool = np.empty(count, dtype=np.uint16 if bf16 else np.float32)
    step = 8 * MiB
    for i in range(0, count, step):
        values = rng.standard_normal(min(step, count - i), dtype=np.float32) * np.float32(0.02)
        pool[i : i + step] = float32_to_bfloat16_bits(values) if bf16 else values
    return pool


def pool_blocks(pool: np.ndarray, count: int, rng, block: int = 32 * MiB) -> Iterator[np.ndarray]:
    """`count` elements as slices of the pool, starting at a random place and wrapping around."""
    per = block // pool.itemsize
    pos = int(rng.integers(0, pool.size))
    while count > 0:
        take = min(per, count, pool.size - pos)
        yield pool[pos : pos + take]
        count -= take
        pos = (pos + take) % pool.size


def write_synthetic_base(path: Path, spec, pool: np.ndarray, ttype: str, seed: int, progress: bool) -> int:
    rng = np.random.default_rng(seed)
    shapes = spec.parameter_shapes()
    with (
        CheckpointStreamWriter(path, drop_cache=True) as writer,
        tqdm(
            total=sum(int(np.prod(s)) for s in shapes.values()) * pool.itemsize,
            unit="B",
            unit_scale=True,
            desc=f"write {path.name}",
            disable=not progress,
        ) as bar,
    ):
        for name, shape in shapes.items():
            count = int(np.prod(shape))
            writer.add_stream(name, shape, ttype, pool_blocks(pool, count, rng))
            bar.update(count * pool.itemsize)
        writer.close()
    return path.stat().st_size


def write_random_lora(path: Path, spec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lora = {}
    for i in range(spec.num_layers):
        for lin in LORA_TARGETS:
            out_dim, in_dim = spec.linear_shapes()[lin]
            prefix = f"model.layers.{i}.attention.{lin}"
            lora[f"{prefix}.{LORA_A}"] = rng.standard_normal((LORA_RANK, in_dim), dtype=np.float32) * 0.01
            lora[f"{prefix}.{LORA_B}"] = rng.standard_normal((out_dim, LORA_RANK), dtype=np.float32) * 0.01
    with CheckpointStreamWriter(path) as writer:
        for name, value in lora.items():
            writer.add(name, value)
        writer.close()
    return lora


def check_merged(base: Path, out: Path, lora: dict, spec) -> list[str]:
    """Exact checks of the first and last adapted weights and one copied tensor, by recomputing."""
    last = spec.num_layers - 1
    checked = []
    with CheckpointReader(base, drop_cache=True) as src, CheckpointReader(out, drop_cache=True) as dst:
        src_entries = {e.name: e for e in src.entries()}
        dst_entries = {e.name: e for e in dst.entries()}
        if [(e.name, e.shape, e.tensor_type) for e in src_entries.values()] != [
            (e.name, e.shape, e.tensor_type) for e in dst_entries.values()
        ]:
            raise AssertionError(f"{out}: tensors differ from {base}")
        for prefix in (
            f"model.layers.0.attention.{LORA_TARGETS[0]}",
            f"model.layers.{last}.attention.{LORA_TARGETS[-1]}",
        ):
            name = prefix + ".weight"
            pair = {k: lora[k] for k in (f"{prefix}.{LORA_A}", f"{prefix}.{LORA_B}")}
            want = merge_lora_into_base({name: src.read(src_entries[name])}, pair, LORA_ALPHA, LORA_RANK)[name]
            if dst.read(dst_entries[name]).tobytes() != want.tobytes():
                raise AssertionError(f"{out}: {name} is not base + (alpha/r) B A")
            checked.append(name)
        name = f"model.layers.{last}.feed_forward.w2.weight"
        if dst.read(dst_entries[name]).tobytes() != src.read(src_entries[name]).tobytes():
            raise AssertionError(f"{out}: {name} (no adapter) is not a copy of the base's")
        checked.append(name)
    return checked


# ---- the bench --------------------------------------------------------------------------------


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("GLOG_v", "3")
    return env


def merge_in_child(base: Path, lora: Path, out: Path, sha256: bool = False) -> tuple[Measured, dict]:
    cmd = [
        "-m",
        "jobs.checkpoint",
        "merge",
        str(base),
        str(lora),
        str(out),
        "--alpha",
        str(LORA_ALPHA),
        "--rank",
        str(LORA_RANK),
        "--no-progress",
    ] + (["--sha256"] if sha256 else [])
    measured = run_measured(cmd, env=child_env(), cwd=base.parent)
    if measured.returncode != 0:
        raise RuntimeError(f"merge exited {measured.returncode}:\n{measured.stderr[-3000:]}")
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


def baseline_rss() -> int:
    """Peak RSS of a child that imports what the merge imports and does nothing: the part of the
    merge's RSS that is not data."""
    code = "import jobs.checkpoint"
    measured = run_measured(["-c", code], env=child_env(), cwd=REPO_ROOT)
    if measured.returncode != 0:
        raise RuntimeError(measured.stderr[-2000:])
    return measured.max_rss


def plan(args, spec, free: int) -> tuple[str, dict[str, int], int]:
    """(dtype, size name -> layers, bytes the largest size needs) within the disk budget."""
    budget = min(args.budget_gb * GB, free - args.keep_free_gb * GB)
    sizes = {name: layers_for(SIZES[name], spec) for name in args.sizes}

    def need(layers, itemsize):
        return 2 * checkpoint_bytes(with_overrides(spec, num_layers=layers), itemsize) + 64 * MiB

    biggest = max(sizes.values())
    dtype = args.dtype
    if dtype == "auto":
        dtype = "float32" if need(biggest, 4) <= budget else "bfloat16"
    itemsize = 4 if dtype == "float32" else 2
    if need(biggest, itemsize) > budget:
        fits = [n for n in range(1, biggest + 1) if need(n, itemsize) <= budget]
        if not fits:
            raise SystemExit(
                _fail(
                    2,
                    f"not enough disk in {args.dir}: {free / GB:.1f} GB free, budget "
                    f"{budget / GB:.1f} GB (--budget-gb {args.budget_gb}, --keep-free-gb "
                    f"{args.keep_free_gb}); one layer needs {need(1, itemsize) / GB:.1f} GB",
                )
            )
        print(f"only {max(fits)} of {biggest} layers fit the {budget / GB:.1f} GB budget; the largest run is cut")
        sizes = {name: min(layers, max(fits)) for name, layers in sizes.items()}
    return dtype, sizes, need(max(sizes.values()), itemsize)


def _fail(code: int, message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run_bench(args) -> dict:

    shape = get_model_shape("llama3-8b")
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    machine = machine_info(directory)
    dtype_name, sizes, need = plan(args, shape, machine["disk_free"])
    print(
        f"{machine['cpu']}, {machine['cores']} cores, {machine['ram_total'] / GB:.1f} GB RAM "
        f"({machine['ram_available'] / GB:.1f} available), {machine['disk_device']} {machine['disk_fs']} "
        f"{machine['disk_free'] / GB:.0f} GB free; load average {machine['loadavg_start']}"
    )
    print(f"plan: {dtype_name}, {sizes} layers; up to {need / GB:.1f} GB on disk at once in {directory}")

    disk = disk_speed(directory, int(args.disk_test_gb * GB))
    print(
        f"disk: write {disk['write_gbps']:.2f} GB/s, cold read {disk['read_gbps']:.2f} GB/s, "
        f"cold copy {disk['copy_gbps']:.2f} GB/s ({disk['bytes'] / GB:.1f} GB file)"
    )
    baseline = baseline_rss()
    print(f"baseline RSS (imports only): {baseline / MiB:.0f} MiB")

    ttype = "BFloat16" if dtype_name == "bfloat16" else "Float32"
    pool = value_pool(ttype)
    runs = []
    for name, layers in sorted(sizes.items(), key=lambda kv: kv[1]):
        model = with_overrides(shape, num_layers=layers)
        base, lora_path = directory / f"base-{name}.ckpt", directory / f"lora-{name}.ckpt"
        out = directory / f"merged-{name}.ckpt"
        try:
            t = time.perf_counter()
            base_bytes = write_synthetic_base(base, model, pool, ttype, seed=layers, progress=not args.no_progress)
            gen_s = time.perf_counter() - t
            lora = write_random_lora(lora_path, model, seed=layers)
            measured, stats = merge_in_child(base, lora_path, out)
            checked = check_merged(base, out, lora, model)
            out.unlink()
            copy_s = cold_copy_seconds(base, out)  # the same bytes through the disk, right after
            run = {
                "size": name,
                "layers": layers,
                "params": model.total_params(),
                "base_bytes": base_bytes,
                "generate_s": gen_s,
                "merge_wall_s": measured.seconds,
                "merge_s": stats["seconds"],
                "bytes_read": stats["bytes_read"],
                "bytes_written": stats["bytes_written"],
                "merged_tensors": stats["merged"],
                "tensors": stats["tensors"],
                "plain_copy_s": copy_s,
                "peak_rss": measured.max_rss,
                "sampled_peak_rss": measured.sampled_max_rss,
                "rss_samples": len(measured.samples),
                "checked": checked,
            }
            if name == args.sha256_size:
                out.unlink()
                hashed, hstats = merge_in_child(base, lora_path, out, sha256=True)
                run.update({"sha256_merge_s": hstats["seconds"], "sha256_peak_rss": hashed.max_rss})
                fd = os.open(out, os.O_RDONLY)
                _drop(fd)
                os.close(fd)
                t = time.perf_counter()
                if sha256_file(out, chunk=16 * MiB) != hstats["sha256"]:
                    raise AssertionError(f"{out}: sha256 while writing differs from sha256 of the file")
                run["sha256_file_s"] = time.perf_counter() - t
            run["loadavg"] = os.getloadavg()
            runs.append(run)
            print(
                f"{name}: {layers} layers, {base_bytes / GB:.2f} GB; merge {stats['seconds']:.1f} s "
                f"({(stats['bytes_read'] + stats['bytes_written']) / stats['seconds'] / GB:.2f} GB/s read+written; "
                f"plain copy of the file {copy_s:.1f} s), "
                f"peak RSS {measured.max_rss / MiB:.0f} MiB; load {run['loadavg'][0]:.1f}"
            )
        finally:
            if not args.keep:
                for path in (base, lora_path, out):
                    path.unlink(missing_ok=True)
    machine["loadavg_end"] = os.getloadavg()
    command = " ".join(["python -m benches.bench_merge", *args.argv])
    return {
        "command": command if args.argv else "invoke bench.merge  (= python -m benches.bench_merge)",
        "machine": machine,
        "dtype": dtype_name,
        "disk": disk,
        "baseline_rss": baseline,
        "runs": runs,
        "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA, "targets": "|".join(LORA_TARGETS), "dtype": "float32"},
    }


def markdown(result: dict) -> str:
    m, d = result["machine"], result["disk"]
    lines = [
        f"## LoRA merge, streamed: memory and throughput on Llama3-8B shapes ({m['date']})",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_total'] / GB:.1f} GB RAM "
        f"({m['ram_available'] / GB:.1f} GB available at the start), disk {m['disk_device']} ({m['disk_fs']}, "
        f"{m['disk_size'] / GB:.0f} GB, {m['disk_free'] / GB:.0f} GB free), Linux {m['kernel']}, Python {m['python']}, "
        f"numpy {m['numpy']}. "
        + (
            "The machine was shared with other work during the run: "
            if m["loadavg_start"][0] > 0.5 * m["cores"]
            else "The machine was quiet at the start: "
        )
        + "load average "
        f"{' / '.join(f'{x:.1f}' for x in m['loadavg_start'])} (1/5/15 min) at the start, "
        f"{' / '.join(f'{x:.1f}' for x in m['loadavg_end'])} at the end, on {m['cores']} cores.",
        "",
        f"Disk ({d['bytes'] / GB:.1f} GB file, page cache dropped between steps): sequential write with fsync "
        f"**{d['write_gbps']:.2f} GB/s**, cold read **{d['read_gbps']:.2f} GB/s**, cold copy (copy_file_range + "
        f"fsync) **{d['copy_gbps']:.2f} GB/s** of file copied.",
        "",
        f"Base checkpoints: the registry's llama3-8b tensor shapes in {result['dtype']} (synthetic values), fewer "
        f"decoder layers for half/quarter; LoRA r={result['lora']['rank']} alpha={result['lora']['alpha']} on "
        f"{result['lora']['targets']} ({result['lora']['dtype']}). The merge runs in a child process "
        f"(`python -m jobs.checkpoint merge`); peak RSS is the child's own high-water mark (VmHWM, written "
        f"at exit; wait4's ru_maxrss would also count the parent it was forked from), and RSS was sampled every "
        f"0.1 s as well. A child that only imports the merge's modules peaks at "
        f"{result['baseline_rss'] / MiB:.0f} MiB. Merge time is the merge's own (reading the LoRA, checking every "
        f"header, the final fsync included; not the interpreter's start). The plain copy is the base file copied "
        f"with copy_file_range + fsync from a cold cache right after its merge: the same bytes through the same "
        f"disk a minute apart, the reference the merge is held to (the disk's speed drifts with the other work).",
        "",
        "| model | layers | parameters | base .ckpt | merge | read + written | plain copy of the base, right after | "
        "merge speed / copy speed | peak RSS (sampled) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        traffic = (r["bytes_read"] + r["bytes_written"]) / r["merge_s"] / GB
        copy_rate = r["base_bytes"] / r["plain_copy_s"] / GB
        lines.append(
            f"| {r['size']} | {r['layers']} | {r['params'] / 1e9:.2f} B | {r['base_bytes'] / GB:.2f} GB | "
            f"{r['merge_s']:.1f} s | {traffic:.2f} GB/s | {r['plain_copy_s']:.1f} s ({copy_rate:.2f} GB/s "
            f"copied) | {r['plain_copy_s'] / r['merge_s']:.2f} | "
            f"{r['peak_rss'] / MiB:.0f} MiB ({r['sampled_peak_rss'] / MiB:.0f}) |"
        )
    lines.append("")
    if any(r["plain_copy_s"] > r["merge_s"] for r in result["runs"]):
        lines.append(
            "A ratio above 1 means the merge finished sooner than the plain copy of the same file. Both end "
            "with fsync; the likely difference is that the merge hands each 256 MiB it has written to "
            "writeback at once (posix_fadvise DONTNEED), while the plain copy leaves its dirty pages to the "
            "kernel until the final fsync."
        )
        lines.append("")
    for r in result["runs"]:
        if "sha256_merge_s" in r:
            lines.append(
                f"With `--sha256` (hash while writing: every byte passes through the process instead of "
                f"copy_file_range), the {r['size']} merge took {r['sha256_merge_s']:.1f} s vs "
                f"{r['merge_s']:.1f} s (peak RSS {r['sha256_peak_rss'] / MiB:.0f} MiB); hashing the "
                f"finished file afterwards (cold) took {r['sha256_file_s']:.1f} s."
            )
            lines.append("")
    rss = [r["peak_rss"] for r in result["runs"]]
    sizes = [r["base_bytes"] for r in result["runs"]]
    if len(rss) > 1:
        lines.append(
            f"Peak RSS across sizes: {min(rss) / MiB:.0f}-{max(rss) / MiB:.0f} MiB while the base grew "
            f"{max(sizes) / min(sizes):.1f}x ({min(sizes) / GB:.1f} to {max(sizes) / GB:.1f} GB)."
        )
        lines.append("")
    return "\n".join(lines) + "\n"


def append_to_benchmarks(doc: Path, section: str) -> None:
    if not doc.exists():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(
            "# Benchmarks\n\nMeasured figures only, each with the command that produced it and the "
            "machine it ran on.\n\n",
            encoding="utf-8",
        )
    with open(doc, "a", encoding="utf-8") as fh:
        fh.write(("" if doc.read_text(encoding="utf-8").endswith("\n\n") else "\n") + section)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.bench_merge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir",
        default=str(REPO_ROOT / "runs" / "bench-merge"),
        help="where the checkpoints go (default runs/bench-merge; the disk being measured)",
    )
    parser.add_argument("--sizes", default="quarter,half,full", help="comma list of quarter, half, full")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="storage dtype of the base (auto: float32 if it fits the budget)",
    )
    parser.add_argument("--budget-gb", type=float, default=40.0, help="most disk the bench may use at once")
    parser.add_argument("--keep-free-gb", type=float, default=10.0, help="leave at least this much free")
    parser.add_argument("--disk-test-gb", type=float, default=3.0, help="size of the dd-like disk test file")
    parser.add_argument(
        "--sha256-size", default="quarter", help="also time a --sha256 merge at this size ('none': skip)"
    )
    parser.add_argument("--doc", default=str(REPO_ROOT / "docs" / "BENCHMARKS.md"), help="append the section here")
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not append it")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints (default: deleted)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown or not args.sizes:
        return _fail(2, f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    try:
        result = run_bench(args)
    except KeyboardInterrupt:
        print("bench.merge: interrupted (big files in --dir are removed)", file=sys.stderr)
        return 130
    directory = Path(args.dir)
    (directory / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    section = markdown(result)
    print("\n" + section)
    if not args.no_doc:
        append_to_benchmarks(Path(args.doc), section)
        print(f"appended to {args.doc}; raw figures in {directory / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
