"""The one command-line shape every job shares: `python -m jobs.<name> --config SPEC [--set k=v ...]`.

Exit codes mean something: 0 ok, 2 bad input (a spec or data error naming file and line),
1 failure (a bug or the machine), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
from typing import Callable

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.config import RunSpec, describe
from tunebox.console import log_to_job_folder, setup_logging
from tunebox.io import InputError, remove_leftovers
from tunebox.manifest import finished_job, mark_job_started
from tunebox.runlock import hold_run_folder
from tunebox.spec_checks import load_checked_spec

log = logging.getLogger("tunebox")


def job_process_env(jobs_dir) -> dict:
    """The environment for a child process that runs a job program (`python -m jobs.<name>`, or msrun's
    workers): the folder holding jobs/ first on PYTHONPATH, since only the tunebox package is installed
    and the job programs run from the checkout (or the image's /app)."""
    root = str(os.path.dirname(os.path.abspath(jobs_dir)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def job_parser(name: str, summary: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m jobs.{name}",
        description=summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run spec keys (YAML sections; override any with --set section.key=value):\n"
        + describe()
        + "\n\nExit codes: 0 ok, 2 bad input (file and line named), 1 failure, 130 interrupted.",
    )
    parser.add_argument(
        "--config", "-c", required=True, metavar="SPEC.yaml", help="run spec (a path, or a recipe name from recipes/)"
    )
    add_spec_overrides(parser, "override a spec value, e.g. --set train.max_steps=10 (repeatable)")
    return parser


def add_spec_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE` (repeatable, into args.overrides): how every tool that loads a run spec overrides it."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def switch(option: str, help: str) -> Callable[[argparse.ArgumentParser], None]:
    """run_job's add_args for a job whose one option of its own is an on/off switch (train --render-only,
    weights --refresh)."""
    return lambda parser: parser.add_argument(option, action="store_true", help=help)


def spec_argv(config, overrides) -> list[str]:
    """A run spec and its overrides as a job's command line takes them back: `--config C --set KEY=VALUE ...`."""
    return ["--config", str(config)] + [a for ov in overrides or [] for a in ("--set", ov)]


def job_command(name: str, config, overrides, *extra: str) -> list[str]:
    """`python -m jobs.<name> --config C --set ... [extra]` with this interpreter."""
    return [sys.executable, "-m", f"jobs.{name}", *spec_argv(config, overrides), *extra]


def tool_parser(name: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The parser of a tool in jobs/ that takes no run spec (`python -m jobs.<name> ...`: fetch, plan, profile,
    ...): description and epilog printed with their line breaks."""
    return argparse.ArgumentParser(
        prog=f"python -m jobs.{name}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def guarded(name: str, body: Callable[[], object], known: tuple = (), on_interrupt: str = "") -> int:
    """Run `body` and turn what happened into the exit code every tunebox command uses: 0 ok (or the
    int `body` returns), 2 bad input (InputError: its message names file and line), 1 failure (an
    exception in `known` prints one line; anything else is a bug or the machine: full traceback),
    130 interrupted (with `on_interrupt`, what rerunning does)."""
    started = time.time()
    try:
        result = body()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted" + (f"; {on_interrupt}" if on_interrupt else ""), file=sys.stderr)
        return 130
    except known as exc:  # an expected failure with its own clear message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"{name}: failed after {time.time() - started:.0f} s", file=sys.stderr)
        return 1
    return 0 if result is None else int(result)


def run_job(
    name: str,
    summary: str,
    main: Callable[[RunSpec, argparse.Namespace], object],
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    argv=None,
    skip_finished: bool = True,
) -> int:
    """Parse arguments, load the spec, skip the job when it has finished already (manifest.finished_job:
    the one rule for every job), else remove what an interrupted run left half-written in the job's folder
    and run `main`; turn what happened into an exit code. skip_finished=False for a process that must not
    do either (weights checks the model cache every time; a train worker leaves both to its launcher)."""
    setup_logging()
    parser = job_parser(name, summary)
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    # the options besides the spec that differ from their defaults (bundle --out): recorded in the manifest
    started = mark_job_started(
        job_args={
            k: v
            for k, v in sorted(vars(args).items())
            if k not in ("config", "overrides") and v != parser.get_default(k)
        }
    )

    run_lock = contextlib.ExitStack()  # one job at a time per run folder (tunebox/runlock.py)

    def body() -> None:  # a job's main reports through its files; its return value is not an exit code
        spec = load_checked_spec(args.config, args.overrides)
        log_to_job_folder(spec.job_dir(name))  # libraries' lines to <run>/<job>/log/, not the console
        run_lock.enter_context(hold_run_folder(spec.run_dir, name))
        if skip_finished:
            done, why = finished_job(spec.job_dir(name), spec)
            if done:
                log.info("%s: skipped: %s", name, why)
                return
            if (spec.job_dir(name) / layout.MANIFEST).exists():
                log.info("%s: running again: %s", name, why)
            for stale in remove_leftovers(spec.job_dir(name)):
                log.info("%s: removed %s, left half-written by an interrupted run", name, stale)
        main(spec, args)

    with run_lock:
        code = guarded(name, body, on_interrupt="rerun the same command to resume")
    kill_point(f"{name}.finished")
    if code == 0:
        log.info("%s: done in %.0f s", name, time.time() - started)
    return code
