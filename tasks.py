"""tunebox's front door: `invoke --list` shows every task, `invoke --help TASK` explains one.

Each task is thin: it builds a `python -m jobs.<name>` command and runs it, so what invoke does
on a laptop is exactly what a container or a Kubernetes Job runs.
"""
from __future__ import annotations

import shlex
import sys

from invoke import Collection, task

DEFAULT_RECIPE = "recipes/local-smollm2.yaml"
PY = shlex.quote(sys.executable)


def _job(c, name: str, recipe: str, overrides: list[str] | None = None, extra: str = ""):
    cmd = f"{PY} -m jobs.{name} --config {shlex.quote(recipe)}"
    for ov in overrides or []:
        cmd += f" --set {shlex.quote(ov)}"
    if extra:
        cmd += " " + extra
    return c.run(cmd, pty=False, echo=True)


_SET_HELP = {"recipe": "run spec YAML (default: the local SmolLM2 recipe)",
             "set": "override a spec key, e.g. --set train.max_steps=10 (repeatable)"}


@task(help=_SET_HELP, iterable=["set"])
def prep(c, recipe=DEFAULT_RECIPE, set=None):
    """Raw contest JSONL -> validated, tokenized MindRecord train/held-out split."""
    _job(c, "prep", recipe, set)


@task(help=_SET_HELP, iterable=["set"])
def train(c, recipe=DEFAULT_RECIPE, set=None):
    """LoRA training with MindFormers (resumes from its last checkpoint); 5 evenly spaced checkpoints."""
    _job(c, "train", recipe, set)


@task(help=_SET_HELP, iterable=["set"])
def merge(c, recipe=DEFAULT_RECIPE, set=None):
    """Each LoRA checkpoint -> a full merged MindFormers checkpoint (W + alpha/r * B A)."""
    _job(c, "merge", recipe, set)


@task(name="eval", help=_SET_HELP, iterable=["set"])
def evaluate(c, recipe=DEFAULT_RECIPE, set=None):
    """Greedy generation on the held-out rows; contest accuracy for the base model and every checkpoint."""
    _job(c, "evaluate", recipe, set)


@task(help=_SET_HELP, iterable=["set"])
def pipeline(c, recipe=DEFAULT_RECIPE, set=None):
    """prep -> train -> merge -> evaluate on one run spec; prints where the report is."""
    import time
    from jobs.core.config import load_spec

    spec = load_spec(recipe, set)  # fail on a bad spec before any job starts
    started = time.time()
    for name in ("prep", "train", "merge", "evaluate"):
        _job(c, name, recipe, set)
    report = spec.job_dir("evaluate") / "report.md"
    print("\n" + report.read_text(encoding="utf-8"))
    print(f"pipeline finished in {(time.time() - started) / 60:.1f} min; report: {report}")


@task(help={"url": "the file to download (http/https)", "out": "where to put it (with --url)",
            "sha256": "expected sha256, checked before the file gets its final name",
            "files": "a YAML/JSON list of {url, path, sha256} to fetch into the cache instead",
            "root": "folder for the list's relative paths (default: $TUNEBOX_CACHE or ~/.cache/tunebox)"})
def fetch(c, url="", out="", sha256="", files="", root=""):
    """Resumable, sha256-verified download of one file (--url --out) or a list (--files)."""
    args = [url] if url else []
    for flag, value in (("--out", out), ("--sha256", sha256), ("--list", files), ("--root", root)):
        if value:
            args += [flag, value]
    c.run(f"{PY} -m jobs.fetch " + " ".join(shlex.quote(a) for a in args), pty=False)


@task(help={"model": "registry name: tiny, smollm2-135m, llama3-8b, internlm-7b",
            "hf_dir": "a downloaded Hugging Face checkpoint folder to convert (needed for llama3-8b, internlm-7b)",
            "out": "with --hf-dir: where to write (default: the model's cache dir)"})
def convert(c, model, hf_dir="", out=""):
    """Make a model's cache dir (model.ckpt + tokenizer + model.json): build tiny/SmolLM2, or convert HF safetensors."""
    cmd = f"{PY} -m jobs.core.weights --model {shlex.quote(model)}"
    if hf_dir:
        cmd += f" --hf-dir {shlex.quote(hf_dir)}"
    if out:
        cmd += f" --out {shlex.quote(out)}"
    c.run(cmd, pty=False, echo=True)


@task(help={"recipe": "also record this run spec's hash and content",
            "out": "write the JSON to this file instead of printing it"})
def env(c, recipe="", out=""):
    """This machine's environment manifest as JSON: OS, CPU, NPUs, driver/CANN, packages, git, image."""
    cmd = f"{PY} -m jobs.core.manifest"
    if recipe:
        cmd += f" --spec {shlex.quote(recipe)}"
    if out:
        cmd += f" --out {shlex.quote(out)}"
    c.run(cmd, pty=False)


@task(help={"slow": "also run the slow tests (real SmolLM2, whole pipeline)",
            "k": "only tests matching this pytest -k expression"})
def test(c, slow=False, k=""):
    """Run the test suite (fast tests by default)."""
    marker = "" if slow else "-m 'not slow'"
    sel = f"-k {shlex.quote(k)}" if k else ""
    c.run(f"{PY} -m pytest {marker} {sel} -q", pty=False)
