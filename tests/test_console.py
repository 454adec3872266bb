"""A console that tells the run's story: the tiny run's prep and train print tunebox's own lines, and the
third-party noise (tensorboardX's "Summary name ... is illegal" per step, MindFormers' config dump and
warnings, mindpet's "[SDK]" lines) lands in the job's log file instead.

Mutants tried (each fails test_train_console_is_tunebox_own_lines):
  - quiet_mindformers_console leaves tensorboardX propagating to the root console handler
  - quiet_mindformers_console does not replace base_trainer.pprint (the config dump comes back)
  - TUNEBOX_MF_CONSOLE_LEVEL default back to WARNING (MindFormers' 35 warnings come back)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import TINY_RECIPE, run_job

# tunebox's own: its log lines (cli.setup_logging's format), its tqdm bars ("tokenize: 100%|...| 112/112 [00:06<00:00"),
# its error lines
TUNEBOX_LINE = re.compile(
    r"^(\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) tunebox\b|[\w .-]+: "
    r".*\[\d\d:\d\d[<,\]]|error: )"
)


@pytest.fixture(scope="module")
def consoles(tmp_path_factory, tiny_cache) -> dict:
    work = tmp_path_factory.mktemp("console")
    out = {}
    for job in ("prep", "train"):
        proc = run_job(job, TINY_RECIPE, tiny_cache, work, f"runs_dir={work / 'runs'}")
        # a progress bar redraws with \r: one console line however many redraws
        out[job] = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    out["run_dir"] = work / "runs" / "tiny"
    return out


def test_train_console_is_tunebox_own_lines(consoles):
    lines = consoles["prep"] + consoles["train"]
    foreign = [line for line in lines if not TUNEBOX_LINE.match(line)]
    # two warnings MindFormers prints while it is imported, before any of its loggers can be quieted
    assert len(foreign) <= 2, "\n".join(foreign[:40])
    assert len(lines) - len(foreign) >= len(lines) / 2
    assert not any("is illegal" in line or "is deprecated" in line or "[SDK]" in line for line in lines)


def test_the_noise_is_in_the_jobs_log_file(consoles):
    info = (consoles["run_dir"] / "train" / "log" / "rank_0" / "info.log").read_text(encoding="utf-8")
    assert "Summary name learning-rate vs samples is illegal" in info
    assert "MindFormers config:" in info and "'runner_config'" in info


def test_a_library_logger_at_debug_does_not_reach_the_console():
    """jieba sets its logger to DEBUG on import, and its records propagated to our console handler (found counting a
    fresh tiny pipeline's console). Mutant: setup_logging without the handler's level -> 'noise' is printed."""
    program = (
        "import logging\nfrom tunebox.cli import setup_logging\nsetup_logging()\n"
        "lib = logging.getLogger('somelib')\nlib.setLevel(logging.DEBUG)\nlib.debug('noise')\nlib.info('kept')\n"
    )
    env = {**os.environ, "TUNEBOX_LOG": "INFO"}
    proc = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "kept" in proc.stderr and "noise" not in proc.stderr, proc.stderr
