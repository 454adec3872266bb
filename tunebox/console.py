"""The console tells the run's story in tunebox's own lines; what other libraries log goes to the job's log file.

setup_logging (every command): tunebox's log format on stderr, and a gate on that console handler and on every
console handler another library gives its own logger. Those handlers are made at import or at a library's first
record, often before any of our code runs again: MindFormers' stdout handler at its first warning, while it is
still being imported ("Import PyNativeDeepseekV3ForCausalLM failed"); MindSpore's at its first deprecation warning;
jieba's at its import, with its logger at DEBUG ("Building prefix dict ..."). So the gate is put on a handler as it
is added (a logger class: logging.setLoggerClass), and on the handlers there already are when a job starts.

log_to_job_folder (cli.run_job, once the spec names the job's folder) turns the gate on: from then a library's
record below TUNEBOX_LIB_CONSOLE_LEVEL (default ERROR) is written to <run>/<job>/log/libraries.log
(log/rank_N/libraries.log in an msrun worker) instead of the console. Nothing is lost; the console keeps tunebox's
records, its progress bars and any library's errors. It also points MindFormers' own log folder (LOCAL_DEFAULT_PATH,
read when its logger is made) at the job's folder, so no job writes ./output/log under the current directory, and
sends Python's warnings through logging. A command that is not a job of a run (sweep, verify) keeps libraries'
lines on its console.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

OWN_LOGGERS = ("tunebox", "jobs", "__main__")  # tunebox's own records: these loggers and their children
LIB_CONSOLE_LEVEL = "TUNEBOX_LIB_CONSOLE_LEVEL"  # the level from which a library's record is shown on the console
LIBRARIES_LOG = "libraries.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(module)s:%(lineno)d]: %(message)s"  # which line of the library


def setup_logging() -> None:
    """tunebox's console: its format on stderr at TUNEBOX_LOG (default INFO), libraries' lines gated."""
    level = os.environ.get("TUNEBOX_LOG", "INFO")
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)
    # The console handler filters too: a library that sets its own logger to DEBUG (jieba does, on import) would
    # otherwise print its DEBUG records here, since only the logger's own level is checked before propagation.
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
        _gate(handler)
    if logging.getLoggerClass() is logging.Logger:  # a library that brought its own class keeps it
        logging.setLoggerClass(_GatedLogger)


def is_own(logger_name: str) -> bool:
    return any(logger_name == own or logger_name.startswith(own + ".") for own in OWN_LOGGERS)


def lib_console_level() -> int:
    """The level from which a library's record reaches the console (TUNEBOX_LIB_CONSOLE_LEVEL, default ERROR)."""
    name = os.environ.get(LIB_CONSOLE_LEVEL, "ERROR").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.ERROR


def log_to_job_folder(job_dir: Path) -> Path:
    """From now on libraries' records below lib_console_level go to the job's log file, not the console; MindFormers
    logs under job_dir/log/rank_N/ (LOCAL_DEFAULT_PATH). Returns the job's log file (made at its first record)."""
    global _job_log
    job_dir = Path(job_dir).absolute()
    rank = os.environ.get("RANK_ID")  # msrun's workers: one file each, beside MindFormers' rank_N/ logs
    path = job_dir / "log" / (f"rank_{rank}" if rank else "") / LIBRARIES_LOG
    if _job_log is not None:
        _job_log.close()
    _job_log = _LibrariesLog(path)
    os.environ["LOCAL_DEFAULT_PATH"] = str(job_dir)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger, so through the gate
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if not is_own(logger.name):
                    _gate(handler)
    return path


class _LibrariesLog(logging.FileHandler):
    """The job's file of libraries' lines, opened (and its folder made) at the first record, so a job whose
    libraries say nothing leaves no file."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


_job_log: Optional[_LibrariesLog] = None


class _ConsoleGate(logging.Filter):
    """On a console handler: lets tunebox's records through, and a library's from lib_console_level; writes any
    other to the job's log file (once, however many console handlers the record meets on its way up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _job_log is None or is_own(record.name) or record.levelno >= lib_console_level():
            return True
        if not getattr(record, "tunebox_filed", False):
            record.tunebox_filed = True
            _job_log.handle(record)
        return False


_GATE = _ConsoleGate()


def _gate(handler: logging.Handler) -> None:
    """Put the gate on a handler that writes to the console (a file's handler is left as it is)."""
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return
    if handler.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) and _GATE not in handler.filters:
        handler.addFilter(_GATE)


class _GatedLogger(logging.Logger):
    """The class of every logger made after setup_logging: a console handler a library adds is gated as it is
    added, before the library's first record (MindFormers makes its handlers at its first record)."""

    def addHandler(self, hdlr: logging.Handler) -> None:
        if not is_own(self.name):
            _gate(hdlr)
        super().addHandler(hdlr)
