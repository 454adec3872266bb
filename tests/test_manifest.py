"""tunebox.manifest: the environment manifest and the run record, on this machine, a temporary
git repository, and a fake Ascend install tree (the one thing that cannot exist here)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tunebox.manifest as manifest_mod
from conftest import cannot_run
from jobs.env import main
from tunebox.config import RunSpec, load_spec
from tunebox.manifest import (
    ascend_info,
    container_info,
    describe_file,
    environment_manifest,
    file_stamp,
    git_state,
    parse_npu_smi,
    pip_freeze,
    write_job_manifest,
)

REPO = Path(__file__).resolve().parents[1]
MATH_SAMPLE = REPO / "../shared/data/math/contest-sample.jsonl"
SQUAD_SAMPLE = REPO / "../shared/data/squad/dev-subset.jsonl"

EXPECTED_KEYS = {
    "schema",
    "created_utc",
    "hostname",
    "user",
    "os",
    "kernel",
    "cpu",
    "memory",
    "npu",
    "ascend",
    "python",
    "packages",
    "pip_freeze",
    "container",
    "git",
    "spec_hash",
    "spec",
    "inputs",
    "seeds",
}


def test_manifest_has_every_key_and_the_right_input_hashes():
    spec = RunSpec(run_id="manifest-test")
    m = environment_manifest(spec, {"train": MATH_SAMPLE, "eval": SQUAD_SAMPLE}, {"data": 7, "train": 11})

    assert set(m) == EXPECTED_KEYS
    assert m["spec_hash"] == spec.spec_hash() and m["spec"]["run_id"] == "manifest-test"
    assert m["seeds"] == {"data": 7, "train": 11}
    for name, path in (("train", MATH_SAMPLE), ("eval", SQUAD_SAMPLE)):
        assert m["inputs"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert m["inputs"][name]["size"] == path.stat().st_size
    # This machine as it is: Python, CPU, memory and a CPU-only box without an NPU.
    assert m["python"]["executable"] == sys.executable
    assert m["cpu"]["count"] == os.cpu_count()
    assert m["memory"]["total_bytes"] > 0
    assert m["npu"] is None if shutil.which("npu-smi") is None else m["npu"] is not None
    assert m["kernel"]["release"] == os.uname().release
    json.dumps(m)  # everything serialises


def test_package_versions_agree_with_pip_freeze():
    m = environment_manifest()
    freeze = {line.split("==")[0].lower(): line.split("==")[1] for line in m["pip_freeze"] if "==" in line}
    for name in ("mindspore", "mindformers", "numpy", "tokenizers"):
        assert m["packages"][name] is not None, name
        assert freeze[name] == m["packages"][name]
    assert pip_freeze() is pip_freeze()  # one `pip freeze` per process


def test_building_a_manifest_does_not_import_mindspore():
    # In a fresh interpreter: importing mindspore takes seconds and ~1 GB just to read a version.
    probe = (
        "import sys, tunebox.manifest as m; m.environment_manifest(include_pip_freeze=False); "
        "print(sorted(k for k in ('mindspore', 'mindformers') if k in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_input_hashes_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    calls = []
    real = manifest_mod.sha256_file
    monkeypatch.setattr(manifest_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    data = tmp_path / "train.jsonl"
    data.write_bytes(MATH_SAMPLE.read_bytes())

    first = describe_file(data)["sha256"]
    assert describe_file(data)["sha256"] == first
    assert len(calls) == 1

    with open(data, "ab") as fh:
        fh.write(b'{"problem": "1+1", "solution": "2"}\n')
    changed = describe_file(data)["sha256"]
    assert len(calls) == 2
    assert changed == hashlib.sha256(data.read_bytes()).hexdigest() != first


def test_a_folder_input_lists_each_file_and_a_digest_over_them(tmp_path):
    folder = tmp_path / "mindrecord"
    folder.mkdir()
    (folder / "train.mindrecord").write_bytes(MATH_SAMPLE.read_bytes()[:5000])
    (folder / "train.mindrecord.db").write_bytes(b"index")
    d = describe_file(folder)
    assert d["files"]["train.mindrecord.db"] == hashlib.sha256(b"index").hexdigest()
    before = d["sha256"]
    (folder / "train.mindrecord.db").write_bytes(b"index2")
    assert describe_file(folder)["sha256"] != before
    assert describe_file(tmp_path / "absent")["exists"] is False


def test_a_folder_stamp_is_each_files_size_and_time_written_by_hand(tmp_path):
    """describe_file's stamp of a folder (taken on the walk that hashes it) is file_stamp's: sha256 over
    "relative path NUL size:mtime_ns" per file, sorted, worked here by hand; a file touched to another
    time changes it. Mutant: manifest._stamp_of with a fixed time for st_mtime_ns -> fails."""
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.bin").write_bytes(b"12345")
    (folder / "a.json").write_text("{}")
    os.utime(folder / "a.json", ns=(1_000_000_000, 1_000_000_000))
    os.utime(folder / "sub" / "b.bin", ns=(2_000_000_000, 2_000_000_000))
    by_hand = hashlib.sha256(b"a.json\x002:1000000000\nsub/b.bin\x005:2000000000").hexdigest()
    assert describe_file(folder)["stamp"] == file_stamp(folder) == by_hand
    os.utime(folder / "a.json", ns=(3_000_000_000, 3_000_000_000))
    assert describe_file(folder)["stamp"] == file_stamp(folder) != by_hand


def test_write_job_manifest_writes_json_and_one_record_line_per_job(tmp_path):
    spec = RunSpec(run_id="r1", runs_dir=str(tmp_path))
    run_dir = spec.run_dir
    prep_out = run_dir / "prep" / "train.mindrecord"
    prep_out.parent.mkdir(parents=True)
    prep_out.write_bytes(b"records")

    p1 = write_job_manifest(
        spec.job_dir("prep"),
        "prep",
        spec,
        {"train": MATH_SAMPLE},
        {"mindrecord": prep_out},
        {"data": 0},
        {"rows": 3},
        started=1_700_000_000.0,
    )
    p2 = write_job_manifest(
        spec.job_dir("train"),
        "train",
        spec,
        {"mindrecord": prep_out},
        {},
        {"train": 0},
        {"status": "failed", "error": "boom"},
    )

    lines = [json.loads(line) for line in (run_dir / "record.jsonl").read_text().splitlines()]
    assert [(r["job"], r["status"]) for r in lines] == [("prep", "ok"), ("train", "failed")]
    assert all(r["spec_hash"] == spec.spec_hash() for r in lines)
    assert [run_dir / r["manifest"] for r in lines] == [p1, p2]
    assert lines[0]["started"] == "2023-11-14T22:13:20+00:00" and lines[0]["finished"]

    m1 = json.loads(p1.read_text())
    assert set(EXPECTED_KEYS) <= set(m1)
    assert m1["outputs"]["mindrecord"]["sha256"] == hashlib.sha256(b"records").hexdigest()
    assert m1["extra"] == {"rows": 3} and m1["job"] == "prep"
    m2 = json.loads(p2.read_text())
    # train's input is prep's output, and the hashes say so.
    assert m2["inputs"]["mindrecord"]["sha256"] == m1["outputs"]["mindrecord"]["sha256"]
    assert m2["status"] == "failed" and m2["extra"] == {"error": "boom"}
    assert not list(spec.job_dir("prep").glob("*.part"))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_commit_and_dirty_flag_in_a_temporary_repository(tmp_path):

    if shutil.which("git") is None:
        cannot_run("needs the git binary")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("runs/\n")
    (repo / "a.py").write_text("x = 1\n")
    before_commit = git_state(repo)
    assert before_commit["commit"] is None and before_commit["dirty"] is True
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")

    clean = git_state(repo)
    assert clean == {"root": str(repo.resolve()), "commit": head, "dirty": False, "branch": "main"}

    (repo / "runs").mkdir()
    (repo / "runs" / "out.json").write_text("{}")
    assert git_state(repo)["dirty"] is False  # ignored outputs do not count
    (repo / "a.py").write_text("x = 2\n")
    assert git_state(repo)["dirty"] is True
    _git(repo, "checkout", "-q", "a.py")
    (repo / "new.py").write_text("")
    assert git_state(repo)["dirty"] is True  # an untracked source file changes what runs

    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) is None


def test_ascend_versions_are_read_from_an_install_tree(tmp_path):
    assert ascend_info(tmp_path)["driver_version"] is None
    assert ascend_info(tmp_path)["cann_version"] is None
    (tmp_path / "driver").mkdir()
    (tmp_path / "driver" / "version.info").write_text(
        "Version=24.1.rc2\nascendhal_version=7.35.19\naicpu_version=1.0\n"
    )
    arch = tmp_path / "ascend-toolkit" / "latest" / "x86_64-linux"
    arch.mkdir(parents=True)
    (arch / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=8.0.RC2\ninnerversion=V100R001C18SPC001B226\narch=x86_64\n"
    )
    info = ascend_info(tmp_path)
    assert info["driver_version"] == "24.1.rc2"
    assert info["cann_version"] == "8.0.RC2"
    assert info["cann_file"].endswith("ascend_toolkit_install.info")

    (arch / "ascend_toolkit_install.info").unlink()
    (tmp_path / "ascend-toolkit" / "latest" / "version.cfg").write_text(
        "# version: 1.0\nruntime_running_version=[8.0.RC3:8.0.RC3]\ntoolkit_installed_version=[8.0.RC3:8.0.RC3]\n"
    )
    assert ascend_info(tmp_path)["cann_version"] == "8.0.RC3"


NPU_SMI_910B = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.6                   Version: 23.0.6                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 93.1        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3397 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | Warning       | 90.4        35                0    / 0             |
| 0                         | 0000:01:00.0  | 0           0    / 0          3396 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
"""


def test_npu_smi_table_is_parsed(tmp_path, monkeypatch):
    parsed = parse_npu_smi(NPU_SMI_910B)
    assert parsed["version"] == "23.0.6" and parsed["count"] == 2
    assert parsed["devices"][0] == {
        "id": 0,
        "name": "910B3",
        "health": "OK",
        "bus_id": "0000:C1:00.0",
        "hbm_total_mb": 65536,
    }
    assert parsed["devices"][1]["health"] == "Warning"

    # A stand-in npu-smi on PATH, as on an Ascend host: npu_info runs it and keeps the raw table.
    fake = tmp_path / "bin" / "npu-smi"
    fake.parent.mkdir()
    (tmp_path / "table.txt").write_text(NPU_SMI_910B)
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'table.txt'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    info = manifest_mod.npu_info()
    assert info["count"] == 2 and info["raw"] == NPU_SMI_910B


def test_container_image_comes_from_env_and_labels_file(tmp_path, monkeypatch):
    labels = tmp_path / "image.json"
    labels.write_text(json.dumps({"org.opencontainers.image.revision": "abc123", "stack": "cpu-ms2.9"}))
    monkeypatch.setenv("TUNEBOX_IMAGE", "tunebox:cpu-ms2.9")
    monkeypatch.setenv("TUNEBOX_IMAGE_ID", "sha256:" + "1" * 64)
    info = container_info(labels)
    assert info["image"] == "tunebox:cpu-ms2.9" and info["image_id"] == "sha256:" + "1" * 64
    assert info["labels"]["stack"] == "cpu-ms2.9"
    labels.write_text("{broken")
    assert "error" in container_info(labels)["labels"]


def test_cli_prints_json_and_rejects_bad_input(tmp_path, capsys):
    assert main(["--input", f"train={MATH_SAMPLE}", "--no-freeze"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["inputs"]["train"]["sha256"] == hashlib.sha256(MATH_SAMPLE.read_bytes()).hexdigest()
    assert printed["pip_freeze"] is None
    assert main(["--input", "no-equals-sign"]) == 2
    assert main(["--input", f"x={tmp_path / 'missing'}"]) == 2
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    out = tmp_path / "env.json"
    assert main(["--out", str(out), "--no-freeze"]) == 0
    assert set(json.loads(out.read_text())) == EXPECTED_KEYS


def test_spec_hash_names_what_runs_not_where():

    here = load_spec("recipes/tiny.yaml", ["runs_dir=/tmp/a"])
    assert load_spec("recipes/tiny.yaml", ["runs_dir=/runs"]).spec_hash() == here.spec_hash()
    assert load_spec("recipes/tiny.yaml", ["runs_dir=/tmp/a", "train.lr=0.5"]).spec_hash() != here.spec_hash()
    assert load_spec("recipes/tiny.yaml", ["runs_dir=/tmp/a", "train.packing=true"]).spec_hash() != here.spec_hash()
