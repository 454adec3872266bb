"""Entry point msrun starts once per worker (msrun runs a script file, not `-m jobs.train`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.train import __doc__ as _doc, main  # noqa: E402
from jobs.core.cli import run_job  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_job("train", _doc, main))
