"""Mutation testing with mutmut (`invoke test.mutants`): for each group of product modules, mutmut
mutates a copy of the checkout and runs only the fast tests that cover that group; a surviving
mutant is a change to the code that no test notices. docs/TESTING.md records the last run.

Each group runs in its own copy (OUT/<group>/tree, mutmut's mutants/ inside it), so a run never
touches the checkout and groups can run one after another or side by side. No PYTHONPATH is needed:
mutmut puts its mutants/ folder first on sys.path, and the tests import jobs/ from it (pytest's
pythonpath = ["."]).

    python tests/mutants.py [--only contest,packing] [--out .mutants] [--jobs 1] [--summarize]

--summarize prints the figures of the runs already in OUT (finished or not) without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# group -> the files mutmut mutates, the fast tests that cover them, and (optionally) the functions
# to mutate in a file that holds more than the group is about.
GROUPS: dict[str, dict] = {
    "contest": {
        "mutate": ["tunebox/contest/*.py"],
        "tests": [
            "tests/test_contest.py",
            "tests/test_scoring.py",
            "tests/test_answers.py",
            "tests/test_generate.py",
            "tests/test_mutants_contest.py",
            "tests/test_mutants_mathgen.py",
            "tests/test_mindformers_names.py",
            # squad_scores_emf1: MindFormers' EmF1Metric, in process
            "tests/test_retention_metrics.py",
        ],
    },
    "packing": {
        "mutate": ["tunebox/data/packing.py", "tunebox/data/answers.py"],
        "tests": ["tests/test_packing.py", "tests/test_answers.py", "tests/test_mutants_packing.py"],
        # test_packing's graph-mode training run takes ~20 s a mutant; the other tests cover packing.py
        "deselect": ["tests/test_packing.py::test_train_job_packs_in_graph_mode"],
    },
    "checkpoint": {
        "mutate": ["tunebox/model/checkpoint.py", "tunebox/model/lora.py"],
        "tests": ["tests/test_checkpoint.py", "tests/test_weights.py", "tests/test_mutants_checkpoint.py"],
        # A test that runs tunebox in a subprocess fails under mutmut's first pass: the child inherits
        # MUTANT_UNDER_TEST=stats and has no mutmut config in its working directory. Such tests count nothing
        # for mutmut anyway (it sees only calls in its own process); they stay in the ordinary suite.
        "deselect": [
            # the module imported in a child (the import check; the peak RSS of a merge)
            "tests/test_checkpoint.py::test_bfloat16_merge_does_not_load_mindspore",
            "tests/test_checkpoint.py::test_merge_memory_does_not_grow_with_the_checkpoint",
            # the weights/prep jobs run as `python -m jobs.<name>` (the `hub` fixture, run_job)
            "tests/test_weights.py::test_fetches_converts_then_skips_when_present",
            "tests/test_weights.py::test_credential_from_a_mounted_file_and_refusal_without_one",
            "tests/test_weights.py::test_a_model_with_no_source_and_no_cache_stops_with_the_fix",
            "tests/test_weights.py::test_token_in_the_environment_is_in_no_file_the_run_writes",
            "tests/test_weights.py::test_a_flipped_byte_in_the_cached_model_stops_the_run_and_refresh_rebuilds_it",
            # the tiny_run fixture: prep, train, merge and evaluate in subprocesses (~45 s)
            "tests/test_weights.py::test_mindformers_loss_is_cross_entropy_on_the_answer_tokens",
        ],
        # merge_streaming__mutmut_175 calls kill_point(None), which matches an unset TUNEBOX_TEST_KILL_POINT and
        # SIGKILLs the process group: mutmut itself. A value no kill point has keeps the group alive (the mutant is
        # killed by test_mutants_checkpoint's recorder). A copy loop that never ends (copy__mutmut_22) wrote 48 GB
        # in a minute: no file of the run may pass 2 GB (the process gets SIGXFSZ, the test fails).
        "env": {"TUNEBOX_TEST_KILL_POINT": "mutmut-no-such-point"},
        "max_file_bytes": 2 << 30,
        # Forked from mutmut's main process, which ran MindSpore during its first pass, a mutant whose tests run a
        # MindSpore network (test_weights' forward) waits for ever on a lock of a runtime thread the fork did not
        # copy (futex, no CPU, so mutmut's CPU-time limit never fires). mutmut's fork server forks each mutant from
        # a process that has imported the tests but run nothing.
        "isolation": "forkserver",
    },
    "checks": {
        "mutate": ["tunebox/submission/checks.py"],
        # each check on small folders written by hand, in process (~3 s for all); test_tamper, which verifies
        # copies of a trained tiny run's bundle, took ~50 s a mutant and is left to the ordinary suite
        # test_checks_model: check_mindformers (MindFormers' loader), rerun_evaluation and check_predict on
        # checkpoints built in the test, in process (~10 s for all)
        "tests": ["tests/test_checks_unit.py", "tests/test_checks_model.py"],
    },
    "k8s": {
        "mutate": ["tunebox/deploy/k8s.py"],
        # test_sweep: render_sweep's one test (kubectl kustomize, in process); its CLI test runs jobs.sweep in a
        # subprocess, which mutmut cannot follow
        "tests": ["tests/test_k8s.py", "tests/test_sweep.py"],
        "deselect": ["tests/test_sweep.py::test_bad_grid_key_fails_at_once_with_the_set_message"],
    },
    "train": {
        "mutate": ["tunebox/training/plan.py", "tunebox/training/outputs.py"],
        "tests": ["tests/test_train_plan.py"],
        # prep in a subprocess, ~30 s a mutant; answer_capacity's own hand-worked test covers the rule
        "deselect": ["tests/test_train_plan.py::test_packed_rows_fit_the_recorded_answer_capacity"],
        # train's planning, hashing and resume check; the rest launches MindFormers (test_spine, slow)
        "functions": [
            "tunebox.training.plan.x_plan_steps*",
            "tunebox.training.plan.x_checkpoint_steps*",
            "tunebox.training.plan.x_answer_capacity*",
            "tunebox.training.plan.x_train_hash*",
            "tunebox.training.outputs.x_check_resume*",
            "tunebox.training.outputs.x_resume_point*",
        ],
    },
}

SKIP_COPY = {
    ".git",
    ".mutants",
    "mutants",
    "runs",
    "output",
    "build",
    ".pytest_cache",
    "__pycache__",
    "kernel_meta",
    "modules",
    ".cache",
}


def copy_tree(dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(
        REPO,
        dst,
        ignore=lambda d, names: [n for n in names if n in SKIP_COPY or n.endswith(".egg-info")],
        symlinks=True,
    )
    shared = REPO.parent / "shared"
    # tests read ../shared/data relative to the checkout; from mutants/ that is tree/shared
    if shared.is_dir():
        os.symlink(shared, dst / "shared")


def mutmut_config(group: dict) -> str:
    tests = [t for t in group["tests"] if (REPO / t).is_file()]
    deselect = [a for d in group.get("deselect", []) for a in ("--deselect", d)]
    top = [
        p.name
        for p in REPO.iterdir()
        if p.name not in SKIP_COPY and p.name not in ("tunebox", "jobs", "tests") and not p.name.endswith(".egg-info")
    ]
    lines = [
        "",
        "[tool.mutmut]",
        'source_paths = ["tunebox", "jobs"]',
        f"only_mutate = {json.dumps(group['mutate'])}",
        f"also_copy = {json.dumps(sorted(top))}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests + deselect)}",
        'pytest_add_cli_args = ["-m", "not slow and not docker", "-p", "no:cacheprovider"]',
        "use_git_change_detection = false",
        "timeout_multiplier = 5.0",
        "timeout_constant = 20.0",
        f'process_isolation = "{group.get("isolation", "fork")}"',
        "",
    ]
    return "\n".join(lines)


def summarize(tree: Path, functions: list[str]) -> dict:
    """Counts by status from `mutmut results --all true` (one `name: status` line a mutant)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=tree,
        capture_output=True,
        text=True,
        env=_env(),
    )
    statuses: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if ":" in line:
            name, status = line.strip().rsplit(":", 1)
            statuses[name.strip()] = status.strip()
    if functions:
        import fnmatch

        statuses = {n: s for n, s in statuses.items() if any(fnmatch.fnmatch(n, f) for f in functions)}
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = sorted(n for n, s in statuses.items() if s == "survived")
    by_function: dict[str, int] = {}
    for n in survivors:
        f = n.rsplit("__mutmut_", 1)[0]
        by_function[f] = by_function.get(f, 0) + 1
    tested = sum(v for k, v in counts.items() if k in ("killed", "timeout", "survived"))
    return {
        "counts": counts,
        "mutants": len(statuses),
        "tested": tested,
        "survived": survivors,
        "survivors_by_function": dict(sorted(by_function.items(), key=lambda kv: -kv[1])),
        "killed": counts.get("killed", 0) + counts.get("timeout", 0),
    }


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the checkout must not shadow mutants/
    env.setdefault("TUNEBOX_LOG", "WARNING")
    return env


def prebuild_bundle(out: Path) -> Path:
    """One tiny run, bundled, for the tamper tests (TUNEBOX_TEST_BUNDLE): each mutant verifies copies of it."""
    target = out / "prebuilt"
    if (target / "runs" / "tiny" / "submission" / "SHA256SUMS").is_file():
        return target
    env = _env()
    env["PYTHONPATH"] = str(REPO)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "tests/test_tamper.py::test_fresh_bundle_verifies",
            f"--basetemp={out / 'prebuild-tmp'}",
        ],
        cwd=REPO,
        env={**env, "TUNEBOX_TEST_BUNDLE_SAVE": str(target)},
        check=True,
    )
    return target


def run_group(name: str, out: Path, jobs: int, names: list[str], tests: list[str] = ()) -> dict:
    group = dict(GROUPS[name])
    if tests:  # a narrower (or other) test selection than the group's
        group["tests"] = list(tests)
    if names:  # only these mutants (mutmut's names, globs allowed: tunebox.contest.rules*)
        group["functions"] = names
    tree = out / name / "tree"
    copy_tree(tree)
    with (tree / "pyproject.toml").open("a") as fh:
        fh.write(mutmut_config(group))
    env = {**_env(), **group.get("env", {})}
    if group.get("prebuilt_bundle"):
        env["TUNEBOX_TEST_BUNDLE"] = str(prebuild_bundle(out))
    started = time.time()
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *group.get("functions", [])]
    with (out / name / "mutmut.log").open("w") as log:
        proc = subprocess.run(
            cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_file_size_limit(group)
        )
    result = summarize(tree, group.get("functions", []))
    result.update(
        group=name,
        exit_code=proc.returncode,
        minutes=round((time.time() - started) / 60, 1),
        mutate=group["mutate"],
        tests=group["tests"],
    )
    (out / name / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _file_size_limit(group: dict):
    """preexec_fn: RLIMIT_FSIZE for the group's mutmut (and every child), when the group sets max_file_bytes."""
    limit = group.get("max_file_bytes")
    if not limit:
        return None

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run_fresh(name: str, out: Path, names: list[str], tests: list[str] = (), timeout: float = 600) -> dict:
    """Each of `names` (exact mutmut names) in a pytest process of its own, MUTANT_UNDER_TEST set before
    the import. For mutants of code that runs at import time (a factory such as mathgen's _arith_maker, called
    when the module builds its FAMILIES table): mutmut forks every mutant from a process that imported the
    module already, so such a mutant is never active and mutmut reports it as survived. Uses the tree of the
    group's last run (OUT/<group>/tree/mutants); writes OUT/<group>/fresh.json, {name: killed|survived|timeout}.
    A mutant still running after `timeout` seconds of wall clock (a loop that never ends, or a wait that never
    returns) is stopped with its process group and reported as "timeout": for the reader to look at, since a wait
    on a lock is no test failing."""
    group = GROUPS[name]
    tree = out / name / "tree" / "mutants"
    if not tree.is_dir():
        raise SystemExit(f"no mutmut tree in {tree}: run the group first (without --fresh)")
    selection = list(tests) or [t for t in group["tests"] if (tree / t).is_file()]
    deselect = [a for d in group.get("deselect", []) for a in ("--deselect", d)]
    result = {}
    for mutant in names:
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow and not docker"]
        proc = subprocess.Popen(
            cmd + selection + deselect,
            cwd=tree,
            env={**_env(), **group.get("env", {}), "MUTANT_UNDER_TEST": mutant},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_file_size_limit(group),
        )
        try:
            code = proc.wait(timeout=timeout)
            result[mutant] = "survived" if code == 0 else "killed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            result[mutant] = "timeout"
        print(f"{mutant}: {result[mutant]}", flush=True)
    (out / name / "fresh.json").write_text(json.dumps(result, indent=1))
    return result


def line(name: str, r: dict) -> str:
    c, tested = r["counts"], r["tested"]
    share = f"{100 * r['killed'] / tested:.1f}%" if tested else "-"
    return (
        f"{name}: {r['mutants']} mutants, {tested} tested: {r['killed']} killed ({share}), "
        f"{len(r['survived'])} survived; {c.get('no tests', 0)} no covering test, "
        f"{c.get('not checked', 0)} not yet run"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help=f"comma-separated groups (default all: {', '.join(GROUPS)})")
    ap.add_argument("--out", default=str(REPO / ".mutants"), help="work folder (one copy of the checkout a group)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once (mutmut --max-children)")
    ap.add_argument(
        "--names",
        default="",
        help="only these mutants, comma-separated mutmut names or globs (e.g. 'tunebox.contest.rules*')",
    )
    ap.add_argument(
        "--tests",
        default="",
        help="only these test files, comma-separated, instead of the group's "
        "(e.g. 'tests/test_scoring.py,tests/test_strict_rule.py')",
    )
    ap.add_argument("--summarize", action="store_true", help="only print the figures of the runs already in --out")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="run each --names mutant (exact names) in a fresh pytest process, in the group's last tree: for "
        "code that runs at import time, which mutmut cannot switch on",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=600,
        help="with --fresh: seconds of wall clock a mutant may run before it is stopped (reported as timeout)",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; the groups are {list(GROUPS)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if args.fresh:
            names_ = [n for n in args.names.split(",") if n]
            r = run_fresh(name, out, names_, [t for t in args.tests.split(",") if t], args.timeout)
            n = {k: sum(v == k for v in r.values()) for k in ("killed", "survived", "timeout")}
            print(
                f"{name}: {len(r)} mutants in fresh processes, {n['killed']} killed, {n['survived']} survived, "
                f"{n['timeout']} stopped after --timeout seconds"
            )
            continue
        if args.summarize:
            tree = out / name / "tree"
            if tree.is_dir():
                names = [n for n in args.names.split(",") if n] or GROUPS[name].get("functions", [])
                r = summarize(tree, names)
                print(line(name, r))
                for f, k in r["survivors_by_function"].items():
                    print(f"    {k:4d} survived in {f}")
            continue
        r = run_group(
            name, out, args.jobs, [n for n in args.names.split(",") if n], [t for t in args.tests.split(",") if t]
        )
        print(line(name, r) + f" in {r['minutes']} min (mutmut exit {r['exit_code']}; {out / name / 'summary.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
