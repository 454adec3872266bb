"""tunebox's front door: `invoke --list` shows every task, `invoke --help TASK` explains one.

Each task is thin: it builds a `python -m jobs.<name>` command and runs it, so what invoke does
on a laptop is exactly what a container or a Kubernetes Job runs.
"""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
import subprocess
import sys
import time

import invoke
from invoke import Collection, Task

from jobs import (
    bundle,
    chat,
    convert,
    dryrun,
    env,
    evaluate,
    export,
    fetch,
    generate,
    merge,
    plan,
    prep,
    profile,
    train,
    verify,
    weights,
)
from tunebox.cli import job_parser, spec_argv
from tunebox.io import InputError
from tunebox.layout import PIPELINE, REPO_ROOT
from tunebox.runlock import RunFolderBusy, hold_run_folder
from tunebox.spec_checks import load_checked_spec

DEFAULT_CONFIG = "recipes/local-smollm2.yaml"
# Every program in jobs/ a person runs gets a task, made from the program's own parser: its flags, help and
# defaults are declared there, once. The jobs run through tunebox.cli.run_job (tunebox.cli.job_parser + the
# job's `_args`); the tools, which need no run spec, each build theirs in `build_parser()`.
_JOB_MODULES = (bundle, chat, dryrun, evaluate, export, merge, prep, train, weights)
_TOOL_MODULES = (convert, env, fetch, generate, plan, profile, verify)
JOB_TASKS = tuple(module.__name__.removeprefix("jobs.") for module in _JOB_MODULES)
TOOL_TASKS = tuple(module.__name__.removeprefix("jobs.") for module in _TOOL_MODULES)
PY = shlex.quote(sys.executable)


def task(*args, **kwargs):
    """invoke's @task without automatic short flags: they would make -s mean --set in one task and
    --stage, --stack or --submission in others. Every task takes --config SPEC.yaml for a run spec."""
    kwargs.setdefault("auto_shortflags", False)
    return invoke.task(*args, **kwargs)


def _run_job(name: str, argv: list[str], echo=None) -> None:
    """`python -m jobs.<name> ARGV` in the foreground; its exit code becomes invoke's."""
    _run_module(f"jobs.{name}", argv, echo)


def _run_module(module: str, argv: list[str], echo=None) -> None:
    """`python -m MODULE ARGV` in the foreground, the command line printed first (to `echo`, default stdout);
    its exit code becomes invoke's."""
    cmd = [sys.executable, "-m", module, *argv]
    print(" ".join([PY] + [shlex.quote(a) for a in cmd[1:]]), file=echo or sys.stdout, flush=True)
    # Not c.run: on Ctrl-C invoke forwards the interrupt through the job's stdin and fails (exit 1) when
    # there is none. The job is in this process group and gets the same SIGINT: wait until it has
    # stopped (after the step in progress, its state resumable) and exit with its code, 130.
    proc = subprocess.Popen(cmd)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue
    if code != 0:
        raise invoke.Exit(code=code if code > 0 else 128 - code)  # killed by signal N: 128 + N, as a shell says


def _load_spec(config: str, overrides: list[str] | None):
    """The run spec, or the jobs' own answer to a bad one: `error: <file>:<line>: ...` and exit code 2."""
    try:
        return load_checked_spec(config, overrides)
    except InputError as exc:
        raise invoke.Exit(f"error: {exc}", code=2) from None


def program_parser(module) -> argparse.ArgumentParser:
    """The parser `python -m jobs.<name>` reads its arguments with: a tool's `build_parser()`; for a job,
    tunebox.cli.job_parser with the job's own `_args`."""
    if module in _TOOL_MODULES:
        return module.build_parser()
    parser = job_parser(module.__name__.removeprefix("jobs."), module.__doc__)
    getattr(module, "_args", lambda p: None)(parser)
    return parser


def _program_task(module) -> Task:
    """The invoke task of a program in jobs/: one invoke option per option of `python -m jobs.<name>`, with its
    help and default, passed through as given (the program parses and checks them: a bad value exits 2).
    A required argument (a tool's FILE, convert's --model) is a required invoke argument; an optional
    positional one (fetch's URL) an option named after it (--url); a repeatable option an iterable one."""
    name = module.__name__.removeprefix("jobs.")
    tool = module in _TOOL_MODULES
    params, helps, options = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)], {}, {}
    for action in program_parser(module)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = max(action.option_strings, key=len) if action.option_strings else None  # --config, not -c
        param = flag.lstrip("-").replace("-", "_") if flag else action.dest
        kind = (
            "switch"
            if isinstance(action, argparse._StoreTrueAction)
            else "repeat"
            if isinstance(action, argparse._AppendAction)
            else "value"
        )
        if kind == "switch":
            default = False
        elif kind == "repeat":
            default = None
        elif param == "config" and action.required:
            default = DEFAULT_CONFIG
        elif action.required or (flag is None and action.nargs is None):
            default = inspect.Parameter.empty  # invoke asks for it, as the program does
        else:
            default = ""  # left out unless given: the program's own default applies
        params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=default))
        text = (action.help or "").replace("%(default)s", str(action.default))
        if action.default not in (None, False, [], "") and "default" not in text:
            text += f" (default: {action.default})"
        helps[param] = text
        options[param] = (flag, kind)
        if param == "config" and action.required:
            helps[param] = "run spec YAML, a path or a recipe name (default: the local SmolLM2 recipe)"

    def body(c, **given):
        argv = []
        for param, (flag, kind) in options.items():
            value = given.get(param)
            if kind == "repeat":
                argv += [a for v in value or [] for a in (flag, v)]
            elif kind == "switch":
                argv += [flag] if value else []
            elif value not in ("", None):
                argv += [flag, str(value)] if flag else [str(value)]
        # a tool's output is often the data (env's JSON, fetch's paths): the command line goes to stderr
        _run_job(name, argv, echo=sys.stderr if tool else sys.stdout)

    # invoke --list shows the first line: make it the doc's first sentence
    doc = (module.__doc__ or name).strip()
    cut = re.search(r"\.(\s|$)", doc)
    first, rest = (doc[: cut.start() + 1], doc[cut.end() :]) if cut else (doc, "")
    more = "Every option" if tool else "Every run spec key, with its default"
    body.__name__ = body.__qualname__ = name
    body.__doc__ = " ".join(first.split()) + "\n\n" + rest + f"\n\n{more}: python -m jobs.{name} --help"
    body.__signature__ = inspect.Signature(params)
    iterable = [param for param, (_, kind) in options.items() if kind == "repeat"]
    return Task(body, name=name, help=helps, iterable=iterable, auto_shortflags=False)


_PROGRAM_TASKS = [_program_task(module) for module in _JOB_MODULES + _TOOL_MODULES]
_SPEC_HELP = {
    "config": "run spec YAML (default: the local SmolLM2 recipe)",
    "set": "override a spec key, e.g. --set train.max_steps=10 (repeatable)",
}


@task(help=_SPEC_HELP, iterable=["set"])
def mindformers_yaml(c, config=DEFAULT_CONFIG, set=None):
    """Render runs/<id>/train/mindformers.yaml (the MindFormers finetune config train runs) without training.

    Needs prep's output (the data files and the answer-only head's size come from it). Run it with stock
    MindFormers: REGISTER_PATH=tunebox/model python run_mindformer.py --config runs/<id>/train/mindformers.yaml
    (README, "MindFormers YAML")."""
    _run_job("train", spec_argv(config, set) + ["--render-only"])


def pipeline(c, config=DEFAULT_CONFIG, set=None):
    spec = _load_spec(config, set)  # fail on a bad spec before any job starts
    started = time.time()
    try:
        # held for the whole graph, so no second pipeline slips in between two jobs; the jobs join it
        with hold_run_folder(spec.run_dir, "pipeline"):
            for name in PIPELINE:
                _run_job(name, spec_argv(config, set))
    except RunFolderBusy as exc:
        raise invoke.Exit(f"error: {exc}", code=2) from None
    report = spec.job_dir("evaluate") / "report.md"
    print("\n" + report.read_text(encoding="utf-8"))
    print(
        f"pipeline finished in {(time.time() - started) / 60:.1f} min; report: {report}; "
        f"submission: {spec.run_dir / 'submission'} (check it with: invoke verify {spec.run_dir / 'submission'})"
    )


pipeline.__doc__ = f"{' -> '.join(PIPELINE)} on one run spec (tunebox/layout.py); prints the report and where it is."
pipeline = task(help=_SPEC_HELP, iterable=["set"])(pipeline)


_SWEEP_HELP = {
    "config": "the recipe every point starts from (default: the local SmolLM2 recipe)",
    "grid": "spec keys and values, every combination a point: 'lora.rank=8,16 train.lr=5e-4,1e-3'",
    "seeds": "run each point at these train.seed values, e.g. 0,1,2 (train.seed: LoRA init, dropout, "
    "shuffle; data.seed, and so the rows and the held-out set, stays the recipe's)",
    "name": "runs/sweeps/NAME/ and the runs' id prefix (default: recipe run_id + grid keys)",
    "set": "override a spec key for every point (repeatable)",
    "collect": "run nothing: build the table from the run folders there are (e.g. copied off a cluster)",
}


def _sweep_argv(config, grid, seeds, name, set) -> list[str]:
    argv = ["--config", config] + (["--grid", grid] if grid else []) + (["--seeds", str(seeds)] if seeds != "" else [])
    return argv + (["--name", name] if name else []) + [w for o in set or [] for w in ("--set", o)]


@task(help=_SWEEP_HELP, iterable=["set"])
def sweep(c, config=DEFAULT_CONFIG, grid="", seeds="", name="", set=None, collect=False):
    """A grid of spec settings x seeds, each point an isolated run of the pipeline (skipped when finished; rerun to
    continue), then runs/sweeps/NAME/results.md, .csv and a plot (tunebox/sweep.py)."""
    _run_module("tunebox.sweep", _sweep_argv(config, grid, seeds, name, set) + (["--collect"] if collect else []))


@task(
    help={
        "compare": "two run ids, A,B (or --compare A --compare B): spec difference and results side by side",
        "runs_dir": "the folder holding the runs (default runs)",
    },
    iterable=["compare"],
)
def runs(c, compare=None, runs_dir="runs"):
    """The runs in runs/: id, recipe, what differs from it, chosen step, score, date (tunebox/runs.py)."""
    compare = [r for value in compare or [] for r in value.replace(",", " ").split()]
    if compare and len(compare) != 2:
        raise invoke.Exit("error: --compare takes two runs: invoke runs --compare A,B", code=2)
    _run_module("tunebox.runs", ["--runs-dir", runs_dir] + (["--compare", *compare] if compare else []))


@task(
    help={
        "fast": "skip the slow tests (real SmolLM2 model, whole pipelines)",
        "k": "only tests matching this pytest -k expression",
    }
)
def test(c, fast=False, k=""):
    """Lint (ruff check, config in pyproject.toml), then run the test suite (everything CI runs; --fast
    for the quick subset). A lint finding fails the task before any test runs."""
    _in_repo(c, f"{PY} -m ruff check .")
    marker = "-m 'not slow'" if fast else ""
    sel = f"-k {shlex.quote(k)}" if k else ""
    c.run(f"{PY} -m pytest {marker} {sel} -q", pty=False)


@task(
    name="mutants",
    help={
        "only": "comma-separated groups (contest, packing, checkpoint, checks, k8s, train); default all",
        "out": "work folder, one copy of the checkout a group (default .mutants/)",
        "jobs": "mutants tested at once (default 1)",
        "names": "only these mutants, comma-separated mutmut names or globs",
        "tests": "run these test files instead of the group's own, comma-separated",
        "summarize": "only print the figures of the runs already in the work folder",
        "fresh": "run each --names mutant in a fresh pytest process (code that runs at import time)",
        "timeout": "with --fresh: seconds of wall clock a mutant may run before it is stopped (default 600)",
    },
)
def test_mutants(c, only="", out="", jobs=1, names="", tests="", summarize=False, fresh=False, timeout=600):
    """Mutation testing (mutmut, the `mutants` extra): per module group, the fast tests that cover it
    against every mutant; docs/TESTING.md records the last run. Slow, so not part of `invoke test` or CI."""
    args = [f"--jobs={int(jobs)}"] + ([f"--only={only}"] if only else []) + ([f"--out={out}"] if out else [])
    args += ([f"--names={names}"] if names else []) + ([f"--tests={tests}"] if tests else [])
    args += (["--summarize"] if summarize else []) + (["--fresh", f"--timeout={float(timeout)}"] if fresh else [])
    c.run(f"{PY} tests/mutants.py " + " ".join(shlex.quote(a) for a in args), pty=False)


# ---- containers and Kubernetes: `invoke image.build`, `invoke k8s.render`, `invoke compose.up` ----
# Namespaced, so these need an explicit `ns` (end of file). The logic lives in images/build.py,
# images/compose_up.py and tunebox/deploy/k8s.py; these tasks only build the command.

_REPO_DIR = str(REPO_ROOT)


def _in_repo(c, cmd: str):
    with c.cd(_REPO_DIR):  # `python -m images.*` imports from the repository root
        return c.run(cmd, pty=False, echo=True)


@task(
    name="base",
    help={
        "suite": "Debian suite: bookworm (cpu and Ascend stacks) or bullseye (contest-2024)",
        "mirror": "Debian mirror (default: the host's, from /etc/apt/sources*)",
    },
)
def image_base(c, suite="bookworm", mirror=""):
    """debootstrap --variant=minbase SUITE + docker import -> tunebox/debian-SUITE:base (no registry needed)."""
    _in_repo(
        c,
        f"{PY} -m images.build base --suite {shlex.quote(suite)}"
        + (f" --mirror {shlex.quote(mirror)}" if mirror else ""),
    )


@task(
    name="build",
    help={
        "stack": "images/<stack>/: cpu-ms2.9, ascend-cann9.0-ms2.9, contest-2024",
        "ca_bundle": "CA bundle pip trusts in the builder (default /etc/ssl/certs/ca-certificates.crt)",
        "no_ca": "build without a CA bundle",
        "no_cache": "ignore the layer cache",
        "tag": "image tag (default tunebox:VERSION-STACK and tunebox:STACK)",
        "platform": "e.g. linux/arm64,linux/amd64 (docker buildx; default: the engine's own)",
        "offline": "air-gapped: FROM the stack's local OFFLINE_BASE_IMAGE, CANN from packages/*.run",
        "allow_unpinned": "build FROM a registry base that base.lock has no digest for",
    },
)
def image_build(
    c,
    stack="cpu-ms2.9",
    ca_bundle="",
    no_ca=False,
    no_cache=False,
    tag="",
    platform="",
    offline=False,
    allow_unpinned=False,
):
    """Build one stack's image (docker CLI with BuildKit, the CA as a build secret), print its id, check no layer
    holds the CA."""
    cmd = f"{PY} -m images.build build --stack {shlex.quote(stack)}"
    cmd += " --no-ca" if no_ca else (f" --ca-bundle {shlex.quote(ca_bundle)}" if ca_bundle else "")
    cmd += " --no-cache" if no_cache else ""
    cmd += f" --tag {shlex.quote(tag)}" if tag else ""
    cmd += f" --platform {shlex.quote(platform)}" if platform else ""
    cmd += " --offline" if offline else ""
    cmd += " --allow-unpinned" if allow_unpinned else ""
    _in_repo(c, cmd)


@task(name="pin", help={"stack": "the stack whose registry base is pinned (on a host that reaches the registry)"})
def image_pin(c, stack="ascend-cann9.0-ms2.9"):
    """docker buildx imagetools inspect the stack's BASE_IMAGE -> its digest in images/<stack>/base.lock."""
    _in_repo(c, f"{PY} -m images.build pin --stack {shlex.quote(stack)}")


@task(name="lint", help={"stack": "only this stack (default: all)"})
def image_lint(c, stack=""):
    """Check the Dockerfile's rules for every stack (FROM a build arg, no # syntax, non-root, no CA in the final
    stage), then hadolint."""
    _in_repo(c, f"{PY} -m images.build lint" + (f" --stack {shlex.quote(stack)}" if stack else ""))


@task(name="lock", help={"stack": "the stack whose built image is frozen"})
def image_lock(c, stack="cpu-ms2.9"):
    """pip freeze of the stack's built image -> images/<stack>/constraints.txt."""
    _in_repo(c, f"{PY} -m images.build lock --stack {shlex.quote(stack)}")


_K8S_HELP = {
    "config": "run spec YAML (the single source: run_id, device, workers)",
    "overlay": "local-cpu, ascend-4card, multi-node (Indexed Job) or ascend-job (Huawei's AscendJob)",
    "image": "image reference (default tunebox:VERSION-STACK for the spec's device)",
    "namespace": "Kubernetes namespace",
    "set": "extra spec override, also passed to the pods (repeatable)",
    "out": "output file (default build/k8s/RUN_ID.OVERLAY.yaml)",
}


def _render_cmd(config, overlay, image, namespace, set, out):
    cmd = f"{PY} -m jobs.k8s --config {shlex.quote(config)} --overlay {shlex.quote(overlay)}"
    cmd += f" --image {shlex.quote(image)}" if image else ""
    cmd += f" --namespace {shlex.quote(namespace)}" if namespace else ""
    cmd += "".join(f" --set {shlex.quote(o)}" for o in set or [])
    return cmd + (f" -o {shlex.quote(out)}" if out else "")


@task(
    name="render",
    help=dict(
        _K8S_HELP,
        sweep="render a sweep instead, one Job per point: its grid, as `invoke sweep --grid`",
        seeds="with --sweep: as `invoke sweep`",
        name="with --sweep: as `invoke sweep`",
    ),
    iterable=["set"],
)
def k8s_render(
    c, config=DEFAULT_CONFIG, overlay="local-cpu", image="", namespace="", set=None, out="", sweep="", seeds="", name=""
):
    """Render the run's Kubernetes manifests from its spec with kubectl kustomize (k8s/overlays/OVERLAY)."""
    if sweep or seeds != "":
        _in_repo(
            c,
            f"{PY} -m tunebox.sweep {shlex.join(_sweep_argv(config, sweep, seeds, name, set))} --render "
            f"{shlex.quote(overlay)}"
            + (f" --image {shlex.quote(image)}" if image else "")
            + (f" --namespace {shlex.quote(namespace)}" if namespace else "")
            + (f" -o {shlex.quote(out)}" if out else ""),
        )
        return
    _in_repo(c, _render_cmd(config, overlay, image, namespace, set, out))


@task(
    name="apply",
    help=dict(_K8S_HELP, dry_run="kubectl apply --dry-run=server (the cluster checks, nothing runs)"),
    iterable=["set"],
)
def k8s_apply(c, config=DEFAULT_CONFIG, overlay="local-cpu", image="", namespace="", set=None, out="", dry_run=False):
    """Render, then kubectl apply the run's manifests (the claims, the spec ConfigMap, the Job)."""
    import json as _json

    plan = _json.loads(
        _in_repo(c, _render_cmd(config, overlay, image, namespace, set, out) + " --json")
        .stdout.strip()
        .splitlines()[-1]
    )
    ns_flag = f" -n {shlex.quote(namespace)}" if namespace else ""
    c.run(
        f"kubectl apply{ns_flag} -f {shlex.quote(plan['output'])}" + (" --dry-run=server" if dry_run else ""),
        pty=False,
        echo=True,
    )
    if not dry_run:
        print(
            f"follow: kubectl{ns_flag} logs -f job/{plan['job']}    "
            f"wait: kubectl{ns_flag} wait --for=condition=complete --timeout=24h job/{plan['job']}"
        )


@task(
    name="up",
    help={
        "config": "run spec YAML (default recipes/tiny.yaml)",
        "profile": "cpu or ascend",
        "until": "last step to run (prep, train, merge, evaluate, bundle)",
        "image": "image tag (default tunebox:VERSION-STACK for the spec's device)",
        "fresh": "delete this run's folder in the data volume first (default: resume what is there)",
    },
)
def compose_up(c, config="recipes/tiny.yaml", profile="cpu", until="bundle", image="", fresh=False):
    """docker-compose up the job graph for one spec, then report every service's exit code (exit 0 only if all 0)."""
    _in_repo(
        c,
        f"{PY} -m images.compose_up --config {shlex.quote(config)} --profile {shlex.quote(profile)}"
        f" --until {shlex.quote(until)}"
        + (f" --image {shlex.quote(image)}" if image else "")
        + (" --fresh" if fresh else ""),
    )


@task(
    name="merge",
    help={
        "dir": "where the synthetic checkpoints go: the disk measured (default runs/bench-merge)",
        "sizes": "comma list of quarter, half, full (Llama3-8B shapes)",
        "budget_gb": "most disk used at once (default 40)",
        "no_doc": "do not append to docs/BENCHMARKS.md",
    },
)
def bench_merge(c, dir="", sizes="", budget_gb="", no_doc=False):
    """Streamed LoRA merge on Llama3-8B-shaped checkpoints: peak RSS and GB/s vs the disk's own speed."""
    cmd = f"{PY} -m benches.bench_merge" + (f" --dir {shlex.quote(dir)}" if dir else "")
    cmd += (f" --sizes {shlex.quote(sizes)}" if sizes else "") + (
        f" --budget-gb {float(budget_gb)}" if budget_gb else ""
    )
    _in_repo(c, cmd + (" --no-doc" if no_doc else ""))


@task(
    name="eval",
    help={
        "prompts": "contest prompts for the decoder comparison, tunebox vs transformers generate (default 100)",
        "max_new": "new tokens per prompt in that comparison (default 32)",
        "batch_size": "tunebox's decoder batch in that comparison (default 20; transformers' stays 20)",
        "repeats": "decoder runs per side, alternating which goes first (default 1)",
        "math_rows": "held-out math rows for the evaluate-job timing (default 100; 0 skips it)",
        "squad_rows": "SQuAD questions for the evaluate-job timing (default 100)",
        "out": "markdown file to append the section to (default docs/BENCHMARKS.md)",
    },
)
def bench_eval(c, prompts=100, max_new=32, batch_size=20, repeats=1, math_rows=100, squad_rows=100, out=""):
    """SmolLM2 evaluation speed: tunebox's numpy decoder vs transformers' generate (same ids, identical outputs),
    and the evaluate job on math + SQuAD at its own batch."""
    cmd = (
        f"{PY} -m benches.bench_eval --prompts {int(prompts)} --max-new {int(max_new)} --batch-size {int(batch_size)}"
        f" --repeats {int(repeats)} --math-rows {int(math_rows)} --squad-rows {int(squad_rows)}"
        + (f" --out {shlex.quote(out)}" if out else "")
    )
    _in_repo(c, cmd)


@task(
    name="prep",
    help={
        "rows": "generated contest rows to prepare (default 800000)",
        "workers": "prep's workers (default 2)",
        "keep": "keep the data and outputs under this directory",
        "no_doc": "do not append to docs/BENCHMARKS.md",
    },
)
def bench_prep(c, rows=800_000, workers=2, keep="", no_doc=False):
    """Prep at contest scale: generated rows -> MindRecord, a plain single-process loop vs jobs.prep (time, CPU,
    peak RSS)."""
    cmd = f"{PY} -m benches.bench_prep prep --rows {int(rows)} --workers {int(workers)}"
    _in_repo(c, cmd + (f" --keep {shlex.quote(keep)}" if keep else "") + (" --no-doc" if no_doc else ""))


@task(
    name="generate", help={"rows": "rows to generate (default 800000)", "no_doc": "do not append to docs/BENCHMARKS.md"}
)
def bench_generate(c, rows=800_000, no_doc=False):
    """jobs.generate speed at contest scale, with one worker and with one per core."""
    _in_repo(c, f"{PY} -m benches.bench_prep generate --rows {int(rows)}" + (" --no-doc" if no_doc else ""))


@task(
    name="train",
    help={
        "config": "run spec both sides train (default: the local SmolLM2 recipe)",
        "steps": "measured steps per side, after 1 warm-up step (default 12)",
        "repeats": "run both sides this many times, alternating the order (default 1)",
        "keep": "work in this folder and keep it (logs, bench_train.json)",
        "packed": "also run tunebox with train.packing at SEQxBATCH (default 256x4; 'no' skips it)",
        "no_doc": "do not append to docs/BENCHMARKS.md",
    },
)
def bench_train(c, config=DEFAULT_CONFIG, steps=12, repeats=1, keep="", packed="256x4", no_doc=False):
    """LoRA training speed and memory: tunebox's train job vs PyTorch + transformers + PEFT on the same batches."""
    cmd = (
        f"{PY} -m benches.bench_train --config {shlex.quote(config)} --steps {int(steps)} --repeats {int(repeats)}"
        f" --packed {shlex.quote(packed)}"
    )
    _in_repo(c, cmd + (f" --keep {shlex.quote(keep)}" if keep else "") + (" --no-append" if no_doc else ""))


# An explicit namespace replaces invoke's automatic one, so it takes every top-level task defined
# above (whoever added it) plus the collections. Keep this block at the end of the file.
_NAMESPACED = {
    id(t)
    for t in (
        image_base,
        image_build,
        image_lint,
        image_lock,
        image_pin,
        k8s_render,
        k8s_apply,
        compose_up,
        bench_merge,
        bench_eval,
        bench_prep,
        bench_generate,
        bench_train,
        test,
        test_mutants,
    )
}
ns = Collection(
    *_PROGRAM_TASKS,
    *[t for t in list(globals().values()) if isinstance(t, Task) and id(t) not in _NAMESPACED],
    Collection("image", image_base, image_build, image_lint, image_lock, image_pin),
    Collection("k8s", k8s_render, k8s_apply),
    Collection("compose", compose_up),
    Collection("bench", bench_merge, bench_eval, bench_prep, bench_generate, bench_train),
)
# `invoke test` runs the collection's default task (the suite); `invoke test.mutants` the mutation run
_test_ns = Collection("test")
_test_ns.add_task(test, default=True)
_test_ns.add_task(test_mutants)
ns.add_collection(_test_ns)
