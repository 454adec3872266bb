"""A console that tells the run's story: the tiny run's prep, train, merge and evaluate print tunebox's own lines,
and the third-party lines (tensorboardX's "Summary name ... is illegal" per step, MindFormers' config dump and its
import warnings, MindSpore's deprecation warning, jieba's "Building prefix dict", mindpet's "[SDK]" lines) land in
the job's log files under the run (tunebox/console.py), none under the current directory.

Mutants tried (each fails test_the_tiny_run_console_is_tunebox_own_lines):
  - console.setup_logging without logging.setLoggerClass(_GatedLogger): MindFormers' import warnings, MindSpore's
    deprecation warning and jieba's four lines are back on the console
  - cli.run_job without log_to_job_folder: the same, and evaluate writes ./output/log in its working folder
  - log_to_job_folder without LOCAL_DEFAULT_PATH: evaluate writes ./output/log in its working folder
  - quiet_mindformers_console does not replace base_trainer.pprint (the config dump comes back)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# tunebox's own: its log lines (console.setup_logging's format), its tqdm bars ("tokenize: 100%|...| 112/112
# [00:06<00:00"; a bar redraws with \r, so one console line however many redraws), its error lines
TUNEBOX_LINE = re.compile(
    r"^(\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) tunebox\b|[\w .-]+: "
    r".*\[\d\d:\d\d[<,\]]|error: )"
)
# the third-party lines a fresh pipeline printed before (counted on a tiny and a SmolLM2 console)
KNOWN_THIRD_PARTY = re.compile(
    r" - mindformers| - WARNING - |\[WARNING\] ME\(|is deprecated|Building prefix dict|Loading model (from|cost)"
    r"|Prefix dict has been built|is illegal|\[SDK\]|MindFormers config:"
)


def test_the_tiny_run_console_is_tunebox_own_lines(tiny_run):
    lines = [line for text in tiny_run["consoles"].values() for line in text.splitlines() if line.strip()]
    foreign = [line for line in lines if not TUNEBOX_LINE.match(line)]
    assert not [line for line in lines if KNOWN_THIRD_PARTY.search(line)], "\n".join(foreign[:40])
    assert foreign == [], "\n".join(foreign[:40])
    assert len(lines) - len(foreign) >= len(lines) / 2
    # a job writes under its run folder only: MindFormers' ./output/log (evaluate imports it for EmF1Metric)
    assert tiny_run["in_cwd"] == []


def test_the_noise_is_in_the_jobs_log_files(tiny_run):
    train = tiny_run["run_dir"] / "train" / "log"
    info = (train / "rank_0" / "info.log").read_text(encoding="utf-8")
    assert "Summary name learning-rate vs samples is illegal" in info
    assert "MindFormers config:" in info and "'runner_config'" in info
    evaluate = tiny_run["run_dir"] / "evaluate" / "log"
    libraries = (evaluate / "libraries.log").read_text(encoding="utf-8")
    assert re.search(r"DEBUG jieba \[__init__:\d+\]: Building prefix dict", libraries), libraries
    assert (evaluate / "rank_0" / "info.log").is_file()  # MindFormers' own log, beside train's


def _run(program: str, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNEBOX_LOG": "INFO", **env}
    proc = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_library_logger_at_debug_does_not_reach_the_console():
    """jieba sets its logger to DEBUG on import, and its records propagated to our console handler (found counting a
    fresh tiny pipeline's console). Mutant: setup_logging without the handler's level -> 'noise' is printed."""
    program = (
        "import logging\nfrom tunebox.console import setup_logging\nsetup_logging()\n"
        "lib = logging.getLogger('somelib')\nlib.setLevel(logging.DEBUG)\nlib.debug('noise')\nlib.info('kept')\n"
    )
    proc = _run(program)
    assert "kept" in proc.stderr and "noise" not in proc.stderr, proc.stderr


def test_a_library_console_handler_made_later_is_gated_into_the_job_log(tmp_path):
    """A library that gives its logger its own stdout handler after the job started (MindFormers does, at its first
    record) prints only its errors; its other records are in the job's libraries.log, once each although they
    also propagate to the root's console handler. Mutants: no dedupe mark in _ConsoleGate -> 'noise' twice in
    the file; TUNEBOX_LIB_CONSOLE_LEVEL ignored -> the WARNING case prints."""

    def program(job_dir) -> str:
        return (
            "import logging, sys\nfrom tunebox.console import log_to_job_folder, setup_logging\nsetup_logging()\n"
            f"path = log_to_job_folder({str(job_dir)!r})\n"
            "lib = logging.getLogger('somelib')\nlib.addHandler(logging.StreamHandler(sys.stdout))\n"
            "lib.warning('noise')\nlib.error('shown')\nlogging.getLogger('tunebox.x').info('story')\n"
            "import warnings\nwarnings.warn('old api')\nprint(path)\n"
        )

    proc = _run(program(tmp_path / "run" / "evaluate"))
    console = proc.stdout + proc.stderr
    assert "story" in console and "shown" in console and "noise" not in console and "old api" not in console
    log = tmp_path / "run" / "evaluate" / "log" / "libraries.log"
    assert proc.stdout.strip().endswith(str(log))
    text = log.read_text(encoding="utf-8")
    assert text.count("WARNING somelib [<string>:7]: noise") == 1 and "old api" in text and "story" not in text, text
    shown = _run(program(tmp_path / "other" / "evaluate"), TUNEBOX_LIB_CONSOLE_LEVEL="WARNING")
    assert "noise" in shown.stdout + shown.stderr
