"""What a run ran on: the environment manifest every job writes next to its outputs.

`environment_manifest()` gathers the machine (OS, kernel, CPU, memory, NPUs, Ascend driver and
CANN), the Python stack (key package versions and the full `pip freeze`), the container image, the
git commit of this repo, the run spec's hash, the sha256 of every input and the seeds. Anything that
cannot be found is null rather than an error: a manifest must never be the reason a job fails.

`write_job_manifest()` writes `<run>/<job>/manifest.json` and appends one line per job to
`<run>/record.jsonl`, the run's history at a glance.

    python -m jobs.env [--config recipes/x.yaml] [--input name=path ...]
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tunebox import layout
from tunebox.io import append_jsonl, atomic_write_json, sha256_file

MANIFEST_SCHEMA = 1
ASCEND_ROOT = Path("/usr/local/Ascend")
IMAGE_LABELS_FILE = Path("/etc/tunebox/image.json")
REVISION_LABEL = "org.opencontainers.image.revision"
KEY_PACKAGES = ("mindspore", "mindformers", "mindpet", "numpy", "tokenizers", "safetensors", "gguf")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


_JOB_STARTED: Optional[float] = None
"""When this process's job began (set by tunebox.cli.run_job): the default `started` of its record line."""


_JOB_ARGS: dict = {}
"""The job's own command-line options besides the spec (export --step, bundle --out): set by run_job,
recorded in the manifest, and part of what makes a finished job the same job (finished_job)."""


def mark_job_started(when: Optional[float] = None, job_args: Optional[dict] = None) -> float:
    """Remember when the job in this process began (and its options besides the spec); write_job_manifest
    uses them unless told otherwise."""
    global _JOB_STARTED, _JOB_ARGS
    _JOB_STARTED = time.time() if when is None else when
    _JOB_ARGS = dict(job_args or {})
    return _JOB_STARTED


def _as_utc_iso(value: Any) -> Optional[str]:
    """Accept a datetime, an epoch float or an ISO string; return ISO 8601 in UTC."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive means local time
        return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    return str(value)


def _run(cmd: list[str], cwd: Optional[Path] = None, timeout: float = 30) -> Optional[str]:
    """stdout of a command, or None when it is missing, fails or hangs."""
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _key_values(text: Optional[str]) -> dict[str, str]:
    """`KEY=value` / `key: value` lines (os-release, version.info, install.info) as a dict."""
    result = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*[=:]\s*(.*)$", line)
        if m:
            result[m.group(1)] = m.group(2).strip().strip('"').strip("'")
    return result


# ---- machine -------------------------------------------------------------------------------


def os_info() -> dict:
    release = _key_values(_read_text(Path("/etc/os-release")))
    return {
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "name": release.get("PRETTY_NAME") or release.get("NAME"),
        "id": release.get("ID"),
        "version_id": release.get("VERSION_ID"),
    }


def kernel_info() -> dict:
    return {"release": platform.release(), "version": platform.version()}


def cpu_info() -> dict:
    model = None
    for line in (_read_text(Path("/proc/cpuinfo")) or "").splitlines():
        if line.startswith("model name") or line.startswith("Model name"):
            model = line.split(":", 1)[1].strip()
            break
    if model is None:
        model = platform.processor() or None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {"model": model, "count": os.cpu_count(), "usable": usable}


def _cgroup_memory_limit() -> Optional[int]:
    """The container's memory limit in bytes (cgroup v2 or v1); None when unlimited or unknown."""
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        text = (_read_text(path) or "").strip()
        if text.isdigit():
            value = int(text)
            # v1 reports "unlimited" as a huge page-aligned number near 2**63.
            return value if value < 1 << 60 else None
    return None


def memory_info() -> dict:
    meminfo = {}
    for line in (_read_text(Path("/proc/meminfo")) or "").splitlines():
        m = re.match(r"^(\w+):\s+(\d+)\s*kB", line)
        if m:
            meminfo[m.group(1)] = int(m.group(2)) * 1024
    return {
        "total_bytes": meminfo.get("MemTotal"),
        "available_bytes": meminfo.get("MemAvailable"),
        "cgroup_limit_bytes": _cgroup_memory_limit(),
    }


def parse_npu_smi(text: str) -> dict:
    """The parts of `npu-smi info` worth comparing across runs: tool version and, per NPU, its
    name, health and HBM size. The raw table is kept alongside for anything else."""
    version = None
    m = re.search(r"Version:\s*([\w.\-]+)", text)
    if m:
        version = m.group(1)
    devices: list[dict] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        head = re.match(r"^(\d+)\s+(\S.*)$", cells[0])
        if head and not re.match(r"^[\d\s/.]+$", cells[1]):
            # "| 0     910B1   | OK   | 96.3  37  0 / 0 |": the NPU row (id, name, health).
            devices.append({"id": int(head.group(1)), "name": head.group(2).strip(), "health": cells[1]})
            continue
        if devices and re.match(r"^\d+$", cells[0]) and re.match(r"^[0-9A-Fa-f:.]+$", cells[1]):
            # "| 0    | 0000:C1:00.0 | 0  0 / 0  3381 / 65536 |": the chip row under it.
            devices[-1]["bus_id"] = cells[1]
            usage = re.findall(r"(\d+)\s*/\s*(\d+)", cells[2])
            if usage:
                devices[-1]["hbm_total_mb"] = int(usage[-1][1])
    return {"version": version, "count": len(devices), "devices": devices}


def npu_info() -> Optional[dict]:
    exe = shutil.which("npu-smi")
    if exe is None:
        return None
    text = _run([exe, "info"], timeout=30)
    if text is None:
        return {"error": "npu-smi info failed or timed out", "raw": None}
    return {**parse_npu_smi(text), "raw": text}


def ascend_info(root: Path = ASCEND_ROOT) -> dict:
    """Driver version (driver/version.info), CANN version (toolkit install info or version.cfg) and
    the set_env.sh the entrypoint sources; null for whatever is not installed (every field on a CPU
    machine). CANN >= 8.5 installs under cann/ (hiascend.com, CANN 8.5.0 installation guide, "File
    Paths": cann/<arch>-linux/ascend_toolkit_install.info); earlier versions under ascend-toolkit/latest/."""
    driver_file = root / "driver" / "version.info"
    driver = _key_values(_read_text(driver_file)) if driver_file.exists() else {}
    cann_version, cann_file = None, None
    candidates = []
    for home in (root / "cann", root / "ascend-toolkit" / "latest"):
        candidates += (
            sorted(glob.glob(str(home / "*" / "ascend_toolkit_install.info")))
            + [str(home / "version.cfg")]
            + sorted(glob.glob(str(home / "*" / "version.cfg")))
        )
    for candidate in candidates:
        values = _key_values(_read_text(Path(candidate)))
        # install.info says version=8.0.RC2; version.cfg has toolkit_installed_version=[...:8.0.RC2]
        found = values.get("version") or values.get("Version")
        if not found:
            for key, value in values.items():
                if "version" in key.lower():
                    m = re.search(r"(\d+\.\d+[\w.\-]*)\]?\s*$", value)
                    if m:
                        found = m.group(1)
                        break
        if found:
            cann_version, cann_file = found, candidate
            break
    return {
        "driver_version": driver.get("Version") or driver.get("version"),
        "driver_file": str(driver_file) if driver else None,
        "cann_version": cann_version,
        "cann_file": cann_file,
        "set_env": next(
            (str(f) for f in (root / "cann" / "set_env.sh", root / "ascend-toolkit" / "set_env.sh") if f.exists()), None
        ),
        "toolkit_home": os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH"),
    }


# ---- software ------------------------------------------------------------------------------


def python_info() -> dict:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def package_versions(names=KEY_PACKAGES) -> dict[str, Optional[str]]:
    """Installed distribution versions, read from metadata so mindspore is never imported."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def pip_freeze() -> Optional[tuple[str, ...]]:
    """`python -m pip freeze` for this interpreter, once per process (it takes about a second)."""
    text = _run([sys.executable, "-m", "pip", "freeze", "--disable-pip-version-check"], timeout=120)
    if text is None:
        return None
    return tuple(line for line in text.splitlines() if line.strip())


def image_labels_file() -> Path:
    """/etc/tunebox/image.json, or $TUNEBOX_IMAGE_LABELS (the entrypoint reads the same variable)."""
    return Path(os.environ.get("TUNEBOX_IMAGE_LABELS") or IMAGE_LABELS_FILE)


def code_revision(git: Optional[dict], labels: Optional[dict]) -> Optional[dict]:
    """The commit that ran: git's when this is a checkout; else the image's revision label (an image
    holds no .git, but `invoke image.build` records HEAD, with -dirty when the tree differed)."""
    if git and git.get("commit"):
        return {**git, "source": "git"}
    revision = (labels or {}).get(REVISION_LABEL) if isinstance(labels, dict) else None
    if not revision or revision in ("unknown", "uncommitted", "lint"):
        return git
    commit, dirty = (revision[: -len("-dirty")], True) if revision.endswith("-dirty") else (revision, False)
    return {"root": None, "commit": commit, "dirty": dirty, "branch": None, "source": f"image label {REVISION_LABEL}"}


def container_info(labels_file: Optional[Path] = None) -> Optional[dict]:
    """Which container runtime we are in (docker, podman, kubernetes...) and the image, as the
    Dockerfile records it in TUNEBOX_IMAGE / TUNEBOX_IMAGE_ID and /etc/tunebox/image.json."""
    markers = []
    if Path("/.dockerenv").exists():
        markers.append("docker")
    if Path("/run/.containerenv").exists():
        markers.append("podman")
    cgroup = _read_text(Path("/proc/1/cgroup")) or ""
    for word in ("kubepods", "docker", "containerd", "lxc", "crio"):
        if word in cgroup and word not in markers:
            markers.append(word)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and "kubernetes" not in markers:
        markers.append("kubernetes")
    labels = None
    labels_file = labels_file or image_labels_file()
    if labels_file.exists():
        try:
            labels = json.loads(labels_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            labels = {"error": f"{labels_file}: {exc}"}
    image, image_id = os.environ.get("TUNEBOX_IMAGE"), os.environ.get("TUNEBOX_IMAGE_ID")
    if not markers and not (image or image_id or labels):
        return None
    return {
        "runtime": markers,
        "image": image,
        "image_id": image_id,
        "labels": labels,
        "pod": os.environ.get("HOSTNAME") if "kubernetes" in markers or "kubepods" in markers else None,
    }


def git_state(root: Path = layout.REPO_ROOT) -> Optional[dict]:
    """HEAD commit and whether the work tree differs from it (untracked, not ignored, files
    count: a new source file changes what runs). None when git or the repository is absent."""
    if shutil.which("git") is None:
        return None
    inside = _run(["git", "-C", str(root), "rev-parse", "--show-toplevel"])
    if inside is None:
        return None
    commit = _run(["git", "-C", str(root), "rev-parse", "HEAD"])  # None before the first commit
    status = _run(["git", "-C", str(root), "status", "--porcelain"])
    return {
        "root": inside.strip(),
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
        # symbolic-ref also answers before the first commit; None on a detached HEAD.
        "branch": (_run(["git", "-C", str(root), "symbolic-ref", "--short", "-q", "HEAD"]) or "").strip() or None,
    }


# ---- inputs --------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    """sha256_file, remembered per (path, size, mtime) so a multi-GB checkpoint that several
    manifests of one process name is read once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def _stamp_of(st: os.stat_result) -> str:
    """One file's line of a stamp: its size and modification time."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _folder_files(path: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative path, path, stat) of every file under a folder, sorted: one walk, one stat each."""
    return [(p.relative_to(path).as_posix(), p, p.stat()) for p in sorted(q for q in path.rglob("*") if q.is_file())]


def _folder_stamp(files: list[tuple[str, Path, os.stat_result]]) -> str:
    return hashlib.sha256("\n".join(f"{rel}\0{_stamp_of(st)}" for rel, _, st in files).encode()).hexdigest()


def file_stamp(path: str | os.PathLike) -> Optional[str]:
    """Size and modification time of a file, or of every file of a folder, as one string: when it is
    unchanged since a manifest recorded it, the content is taken as unchanged too (finished_job), so a
    rerun does not hash a multi-GB checkpoint again. None when the path is absent."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        return _stamp_of(path.stat())
    return _folder_stamp(_folder_files(path))


def describe_file(path: str | os.PathLike) -> dict:
    """{path, size, sha256, stamp} of a file; for a folder (a MindRecord set, a model dir) every file's
    hash plus one digest over the sorted (relative path, hash) list, from one walk of the folder."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        return {"path": str(path), "exists": False, "size": None, "sha256": None}
    if path.is_file():
        return {
            "path": str(path),
            "exists": True,
            "size": path.stat().st_size,
            "sha256": cached_sha256(path),
            "stamp": file_stamp(path),
        }
    walked = _folder_files(path)
    files = {rel: cached_sha256(child) for rel, child, _ in walked}
    total = sum(st.st_size for _, _, st in walked)
    digest = hashlib.sha256("".join(f"{rel}\0{sha}\n" for rel, sha in files.items()).encode()).hexdigest()
    return {
        "path": str(path),
        "exists": True,
        "size": total,
        "sha256": digest,
        "files": files,
        "stamp": _folder_stamp(walked),
    }


# ---- the manifest --------------------------------------------------------------------------


def environment_manifest(
    spec=None,
    inputs: Optional[dict[str, str | os.PathLike]] = None,
    seeds: Optional[dict] = None,
    *,
    include_pip_freeze: bool = True,
) -> dict:
    """Everything needed to say what ran where. `spec` is a RunSpec (or None)."""
    inputs = inputs or {}
    container = container_info()
    ascend = ascend_info()
    labels = (container or {}).get("labels") or {}
    if isinstance(labels, dict) and labels.get("tunebox.cann") not in (None, "none") and not ascend["set_env"]:
        # An Ascend image whose CANN environment was not found: say it where the run is recorded.
        ascend["problem"] = (
            f"this image was built with CANN {labels['tunebox.cann']} but no set_env.sh was found "
            f"(cann/ or ascend-toolkit/ under {ASCEND_ROOT}); Ascend jobs will fail"
        )
        logging.getLogger("tunebox.manifest").warning("%s", ascend["problem"])
    return {
        "schema": MANIFEST_SCHEMA,
        "created_utc": utc_now(),
        "hostname": socket.gethostname(),
        "user": _user(),
        "os": os_info(),
        "kernel": kernel_info(),
        "cpu": cpu_info(),
        "memory": memory_info(),
        "npu": npu_info(),
        "ascend": ascend,
        "python": python_info(),
        "packages": package_versions(),
        "pip_freeze": (list(pip_freeze() or []) or None) if include_pip_freeze else None,
        "container": container,
        "git": code_revision(git_state(), (container or {}).get("labels")),
        "spec_hash": spec.spec_hash() if spec is not None else None,
        "spec": spec.to_dict() if spec is not None else None,
        "inputs": {name: describe_file(path) for name, path in inputs.items()},
        "seeds": dict(seeds or {}),
    }


def _user() -> Optional[str]:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a UID without a passwd entry, as in many k8s pods
        return str(os.getuid()) if hasattr(os, "getuid") else None


def write_job_manifest(
    job_dir: str | os.PathLike,
    job: str,
    spec=None,
    inputs: Optional[dict[str, str | os.PathLike]] = None,
    outputs: Optional[dict[str, str | os.PathLike]] = None,
    seeds: Optional[dict] = None,
    extra: Optional[dict] = None,
    *,
    status: Optional[str] = None,
    started: Any = None,
    finished: Any = None,
) -> Path:
    """Write `job_dir/manifest.json` and append the job's line to `<run_dir>/record.jsonl`.

    status/started/finished may come as keywords or inside `extra` (keywords win); started and
    finished take a datetime, an epoch float or an ISO string. started defaults to when run_job began
    this process's job (mark_job_started), finished to now.
    """
    job_dir = Path(job_dir)
    extra = dict(extra or {})
    from_extra = {key: extra.pop(key, None) for key in ("status", "started", "finished")}
    status = status or from_extra["status"] or "ok"
    started = started if started is not None else from_extra["started"]
    started = _as_utc_iso(started if started is not None else _JOB_STARTED)
    finished = _as_utc_iso(finished if finished is not None else from_extra["finished"]) or utc_now()

    manifest = environment_manifest(spec, inputs, seeds)
    manifest.update(
        {
            "job": job,
            "status": status,
            "started": started,
            "finished": finished,
            "job_args": _JOB_ARGS,
            "run_dir": str(job_dir.parent.absolute()),  # finished_job reads a moved or copied run's own files
            "outputs": {name: describe_file(path) for name, path in (outputs or {}).items()},
            "extra": extra,
        }
    )
    manifest_path = atomic_write_json(job_dir / layout.MANIFEST, manifest)

    run_dir = job_dir.parent
    try:
        shown = manifest_path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        shown = str(manifest_path.resolve())
    append_jsonl(
        run_dir / layout.RECORD,
        {
            "job": job,
            "status": status,
            "started": started,
            "finished": finished,
            "manifest": shown,
            "spec_hash": manifest["spec_hash"],
        },
    )
    return manifest_path


# ---- has this job finished? ---------------------------------------------------------------


def _still_the_same(recorded: dict, path: Path) -> bool:
    """Whether a file (or folder) a manifest described, now at `path`, is still there with the same
    content: the same size and modification time (file_stamp), or else the same sha256."""
    if not recorded.get("exists"):
        return not path.exists()
    if not path.exists():
        return False
    if recorded.get("stamp") is not None and file_stamp(path) == recorded["stamp"]:
        return True
    return describe_file(path)["sha256"] == recorded.get("sha256")


def finished_job(job_dir: str | os.PathLike, spec, job_args: Optional[dict] = None) -> tuple[bool, str]:
    """The one rule, for every job, that says a job has already done this work and can be skipped:
    its manifest.json (written last) exists with status ok, was written for a spec with the same hash
    and the same job options, and every input and output it describes is still there, unchanged.
    Returns (finished, why) where `why` is the line a person reads either way."""
    path = Path(job_dir) / layout.MANIFEST
    if not path.is_file():
        return False, f"no {path.name} yet"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, f"{path} cannot be read ({exc})"
    if manifest.get("status") != "ok":
        return False, f"{path} says status {manifest.get('status')!r}"
    if manifest.get("spec_hash") != spec.spec_hash():
        return False, f"{path} is for spec {manifest.get('spec_hash')}, this one is {spec.spec_hash()}"
    if (manifest.get("job_args") or {}) != dict(job_args if job_args is not None else _JOB_ARGS):
        return False, f"{path} is for options {manifest.get('job_args')}"
    # a path inside the run folder the manifest was written in is read inside this one (a run moved,
    # copied, or mounted elsewhere); any other path (data, the base model) as recorded
    written_in, run_dir = manifest.get("run_dir"), Path(job_dir).absolute().parent
    for kind in ("inputs", "outputs"):
        for name, recorded in (manifest.get(kind) or {}).items():
            where = Path(recorded["path"])
            if written_in and where.is_relative_to(written_in):
                where = run_dir / where.relative_to(written_in)
            if not _still_the_same(recorded, where):
                return False, f"{kind[:-1]} {name} ({where}) changed since {path} was written"
    shown = ", ".join(manifest.get("outputs") or {}) or "none"
    return True, f"finished at {manifest.get('finished')} ({path}; outputs unchanged: {shown})"


# ---- CLI (invoke env) ----------------------------------------------------------------------
