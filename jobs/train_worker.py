"""The process msrun (or a cluster operator's pod) starts once per worker: it renders the same
MindFormers config as the train job (jobs/train.py) and runs MindFormers' Trainer on it. Rank 0
writes the checkpoint index, summary and manifest when the run ends. msrun runs a script file, not
`-m jobs.train`; the job puts the folder holding jobs/ on PYTHONPATH (tunebox.cli.job_process_env;
the image sets PYTHONPATH=/app)."""

from jobs.train import __doc__ as _doc
from jobs.train import worker_main
from tunebox.cli import run_job
from tunebox.training.launch import die_with_launcher

if __name__ == "__main__":
    die_with_launcher()  # msrun gives each worker a session of its own: a killed launcher must take it along
    raise SystemExit(run_job("train", _doc, worker_main, skip_finished=False))
