"""Images (issue 17): the OCI labels say when the image was made and under which licence, the
same facts reach /etc/tunebox/image.json, no project file names a development machine's path,
and a run inside an image (no .git) still records the commit it ran: the image's revision label.
Checked without building an image: the Dockerfile is parsed per stack with its build args.
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import images.build as ib
from conftest import cannot_run
from tunebox.submission.code_archive import make_code_archive

REPO = Path(__file__).resolve().parents[1]
STACKS = sorted(p.parent.name for p in (REPO / "images").glob("*/stack.env"))
REVISION = "0123456789abcdef0123456789abcdef01234567"


def build_args(stack_name: str) -> dict[str, str]:
    stack = ib.load_stack(stack_name)
    return ib.build_args_for(stack, ib.image_tags(stack.name)[0], revision=REVISION)


@pytest.mark.parametrize("name", STACKS)
def test_labels_say_when_and_under_which_licence(name):
    args = build_args(name)
    created = dt.datetime.fromisoformat(args["CREATED"].replace("Z", "+00:00"))
    assert created.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)
    licence = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"]
    parsed, problems = ib.lint_dockerfile((REPO / "Dockerfile").read_text(), args)
    assert [str(p) for p in problems] == []
    labels = parsed.labels()
    assert labels["org.opencontainers.image.created"] == args["CREATED"]
    assert labels["org.opencontainers.image.licenses"] == licence == "Apache-2.0"
    assert labels["org.opencontainers.image.revision"] == REVISION


@pytest.mark.parametrize("name", STACKS)
def test_image_json_records_the_labels(name, tmp_path):
    """Runs the Dockerfile's own image.json step (its python -c) with the stack's build args."""
    args = build_args(name)
    parsed, _ = ib.lint_dockerfile((REPO / "Dockerfile").read_text(), args)
    run = next(i for i in parsed.final.instructions if i.keyword == "RUN" and "/etc/tunebox/image.json" in i.value)
    argv = shlex.split(run.value)
    code = argv[argv.index("-c") + 1].replace("/etc/tunebox/image.json", str(tmp_path / "image.json"))
    env = {k: v for k, v in args.items()}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    recorded = json.loads((tmp_path / "image.json").read_text())
    labels = parsed.labels()
    assert {k: v for k, v in recorded.items() if k != "tunebox.image"} == {
        k: v for k, v in labels.items() if k in recorded}
    assert {"org.opencontainers.image.created", "org.opencontainers.image.licenses",
            "org.opencontainers.image.revision"} <= set(recorded)
    # every label but the descriptive ones reaches the file a job can read
    assert set(labels) - set(recorded) <= {"org.opencontainers.image.description"}


def test_no_project_file_names_a_development_machines_path():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        cannot_run("needs git and the git checkout (the list of project files)")
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    needles = ["/" + "work/", "/" + "root/"]          # split so this file does not match itself
    found = []
    for rel in filter(None, files.decode().split("\0")):
        path = REPO / rel
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{rel}: {n}" for n in needles if n in text]
    assert found == []


def manifest_in_an_image(tmp_path, revision: str) -> dict:
    labels = tmp_path / "image.json"
    labels.write_text(json.dumps({"org.opencontainers.image.revision": revision, "tunebox.stack": "cpu-ms2.9"}))
    # No git on PATH, as in the image.
    env = {"PATH": str(tmp_path / "no-bin"), "PYTHONPATH": str(REPO), "TUNEBOX_IMAGE_LABELS": str(labels),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "jobs.env", "--no-freeze"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_run_inside_an_image_records_the_image_revision_as_its_commit(tmp_path):
    clean = manifest_in_an_image(tmp_path, REVISION)
    assert clean["git"]["commit"] == REVISION and clean["git"]["dirty"] is False
    assert clean["git"]["source"] == "image label org.opencontainers.image.revision"
    dirty = manifest_in_an_image(tmp_path, REVISION + "-dirty")
    assert dirty["git"]["commit"] == REVISION and dirty["git"]["dirty"] is True
    unknown = manifest_in_an_image(tmp_path, "unknown")
    assert unknown["git"] is None


def test_code_archive_of_an_image_run_names_its_commit_without_the_warning(tmp_path):
    app = tmp_path / "app"                     # what the image holds: code, no .git
    (app / "jobs").mkdir(parents=True)
    (app / "jobs" / "train.py").write_text("print('train')\n")
    (app / "pyproject.toml").write_text("[project]\nname = 'tunebox'\n")
    git = {"root": None, "commit": REVISION, "dirty": False, "branch": None,
           "source": "image label org.opencontainers.image.revision"}
    info = make_code_archive(git, tmp_path / "code.tar.gz", root=app)
    assert info["source"] == "image" and info["commit"] == REVISION and info["dirty"] is False
    assert "may differ" not in info["note"] and REVISION in info["note"]
    import tarfile
    with tarfile.open(tmp_path / "code.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["tunebox/jobs/train.py", "tunebox/pyproject.toml"]
    dirty = make_code_archive({**git, "dirty": True}, tmp_path / "code2.tar.gz", root=app)
    assert dirty["source"] == "working tree" and "may differ" in dirty["note"]


# ---- the contest's own stack: what it can run of ours ----------------------------------------

def fake_submission(folder: Path, names=("model.layers.0.attention.wq.weight", "model.norm_out.weight")) -> Path:
    import hashlib

    import numpy as np

    from tunebox.model.checkpoint import save_checkpoint_numpy
    rng = np.random.default_rng(0)
    for step in (10, 20):
        path = folder / "checkpoints" / f"step-{step:06d}" / "model.ckpt"
        save_checkpoint_numpy(path, {name: rng.standard_normal((4, 4) if "wq" in name else (4,)).astype(np.float32)
                                     for name in names})
    (folder / "results.json").write_text("{}")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return folder


def check_submission(folder: Path, python: str = sys.executable, *extra: str):
    return subprocess.run([python, str(REPO / "images" / "check_submission.py"), str(folder), *extra],
                          capture_output=True, text=True, timeout=300)


def test_submission_check_loads_every_checkpoint_with_this_mindspore(tmp_path):
    ok = check_submission(fake_submission(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("loaded checkpoints/step-") == 2 and "mindspore 2.9" in ok.stdout

    tampered = fake_submission(tmp_path / "tampered")
    (tampered / "results.json").write_text('{"edited": true}')
    (tampered / "stray.txt").write_text("x")
    bad = check_submission(tampered)
    assert bad.returncode == 2
    assert "results.json does not match its sha256" in bad.stdout and "stray.txt is not listed" in bad.stdout

    lora = check_submission(fake_submission(tmp_path / "lora", names=(
        "model.layers.0.attention.wq.mindpet_delta_lora_a", "model.norm_out.weight")))
    assert lora.returncode == 2 and "LoRA parameters left" in lora.stdout


def contest_python() -> tuple[str, dict] | None:
    """A working python3.9 and the environment it needs (pyenv's shim needs PYENV_VERSION), or None."""
    exe = shutil.which("python3.9")
    if exe is None:
        return None
    variants = [{}]
    if shutil.which("pyenv"):
        bare = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        variants += [{"PYENV_VERSION": v} for v in bare if v.startswith("3.9")]
    import os
    for extra in variants:
        env = {**os.environ, **extra}
        if subprocess.run([exe, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], env=env,
                          capture_output=True).returncode == 0:
            return exe, env
    return None


def test_submission_check_runs_on_the_contest_python(tmp_path):
    found = contest_python()
    if found is None:
        cannot_run("no Python 3.9 here (the contest stack's Python; e.g. pyenv install 3.9)")
    exe, env = found
    done = subprocess.run([exe, str(REPO / "images" / "check_submission.py"), str(fake_submission(tmp_path / "s")),
                           "--no-load"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "python 3.9" in done.stdout


def test_contest_image_carries_the_submission_check():
    args = ib.load_stack("contest-2024").build_args
    parsed, problems = ib.lint_dockerfile((REPO / "Dockerfile").read_text(),
                                          ib.build_args_for(ib.load_stack("contest-2024"), "t", revision=REVISION))
    assert problems == []
    copies = [i.resolved.split() for i in parsed.final.instructions if i.keyword == "COPY"]
    assert ["images/check_submission.py", "/usr/local/bin/tunebox-check-submission"] in copies
    assert args["INSTALL_TUNEBOX"] == "0"      # tunebox's jobs need Python 3.11; the stack is 3.9
