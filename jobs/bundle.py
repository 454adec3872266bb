"""bundle: a finished run -> the contest submission folder, runs/<run_id>/submission/ (or --out).

  ALGORITHM.md          method, LoRA settings, trainable parameters and ratio, data selection and
                        cleaning, the prompt template (one example rendered), the training schedule,
                        the five checkpoints' results and the chosen one: generated from the run
  hyperparams.yaml      the run spec as run
  code.tar.gz           `git archive` of the commit train recorded (the working tree's files when
                        that tree was dirty or git was missing, and ALGORITHM.md says so)
  checkpoints/step-N/model.ckpt   the five merged full checkpoints: hard links to merge's files
                        (a copy, logged, only when the submission is on another filesystem)
  tokenizer/            the tokenizer the run used, so the checkpoints can be evaluated from the folder alone
  mindformers/          what a judge with MindFormers needs: finetune.yaml (the config train ran, its
                        machine paths made relative), predict.yaml (the chosen merged checkpoint with
                        the tokenizer above; both for MindFormers 1.9, as run), predict_r1.1.yaml (the
                        same for the contest's MindFormers r1.1, with the classes its teams used),
                        mf_extensions.py (the classes finetune.yaml registers; REGISTER_PATH=mindformers/)
                        and README.md (the commands)
  logs/                 mirrors runs/<run_id>/: every job's manifest.json, record.jsonl, prep's stats,
                        held-out rows and rejects, train's loss.jsonl/loss.csv/summary.json, its
                        TensorBoard events (tensorboard/rank_N/) and checkpoint index, every msrun
                        worker's and MindFormers' *.log under train/, merge's index, evaluate's
                        predictions, scores and reports
  results.json          per checkpoint: step, math accuracy (strict, tolerant), SQuAD F1/EM and
                        retention when evaluate measured them, ratio, contest score; the chosen checkpoint
  ENVIRONMENT.md, environment.json   what each job ran on, from the jobs' manifests, and what the run
                        installs on top of the contest's base environment (rules.CONTEST_STACK)
  selfcheck.png         the self-check picture the contest asks for: run id, commit, the result table,
                        the ratio computation, the retention verdict, the tail of the training log
  SHA256SUMS            sha256 of every other file (`sha256sum -c SHA256SUMS` works inside the folder)

Give it the same --config and --set options the jobs ran with: it stops (exit 2) naming every key
whose value differs from a job's manifest. runs_dir may differ (a run moved, or mounted elsewhere in
a container), and keys added to the spec schema after a job ran count as equal at their defaults.
The folder is built under a temporary name and renamed into place when complete; a bundle job
record goes to runs/<run_id>/bundle/manifest.json and record.jsonl. Check it with
`python -m jobs.verify runs/<run_id>/submission [--rerun]`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.cli import run_job
from tunebox.config import RunSpec, dump_spec
from tunebox.io import atomic_dir, atomic_write_json, atomic_write_text
from tunebox.manifest import write_job_manifest
from tunebox.model.weights import load_tokenizer
from tunebox.submission import contents, selfcheck
from tunebox.submission.algorithm import render_algorithm, render_prompt_example
from tunebox.submission.assemble import (
    check_results,
    copy_logs,
    copy_tokenizer,
    place_checkpoints,
    read_finished_run,
    training_log_tail,
)
from tunebox.submission.code_archive import make_code_archive
from tunebox.submission.mindformers_files import write_mindformers_files

log = logging.getLogger("tunebox.bundle")

# ---- the job -------------------------------------------------------------------------------


def bundle(spec: RunSpec, out: Optional[Path] = None) -> Path:
    started = time.time()
    run_dir = spec.run_dir
    run = read_finished_run(spec)
    checkpoints, scores = run.checkpoints, run.scores
    out = Path(out) if out else run_dir / contents.SUBMISSION_DIR
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))

    with atomic_dir(out) as tmp:
        # checkpoints first: hashing them is the long part, and a mismatch should stop us early
        modes, hashes = place_checkpoints(tmp, checkpoints, scores)
        copy_logs(run_dir, tmp / "logs")
        kill_point("bundle.writing")
        copy_tokenizer(spec.resolve(spec.model.tokenizer), spec.model.name, tmp / "tokenizer")
        atomic_write_text(tmp / "hyperparams.yaml", dump_spec(spec))
        code = make_code_archive(run.manifests["train"].get("git"), tmp / "code.tar.gz", exclude=(run_dir, out))

        accuracies = {
            name: {k: s.get(k) for k in ("n", "accuracy_strict", "accuracy_tolerant")} for name, s in scores.items()
        }
        results = contents.build_results_for(
            spec,
            report=run.report,
            accuracies=accuracies,
            checkpoints=checkpoints,
            code=code,
        )
        check_results(results, run.summary)
        atomic_write_json(tmp / "results.json", results)
        # predict.yaml names a checkpoint even when none is valid: then the highest score, as the reason says
        chosen = (
            contents.step_of_dir(results["chosen"]["model"] or results["chosen"]["highest_score"] or "")
            or checkpoints[-1]["step"]
        )
        write_mindformers_files(spec, tmp / "mindformers", chosen, tok)
        log_name, log_tail = training_log_tail(run_dir)
        selfcheck.render(
            tmp / selfcheck.FILE,
            results=results,
            results_bytes=(tmp / "results.json").read_bytes(),
            rank=spec.lora.rank,
            commit=code.get("commit"),
            code_note=code["note"],
            log_name=log_name,
            log_tail=log_tail,
        )
        env = contents.environment_record(run.manifests, contents.direct_requirements(tmp / "code.tar.gz"))
        atomic_write_json(tmp / "environment.json", env)
        atomic_write_text(tmp / "ENVIRONMENT.md", contents.render_environment(env))
        atomic_write_text(
            tmp / "ALGORITHM.md",
            render_algorithm(
                spec,
                stats=run.stats,
                rejects=run.rejects,
                prompt_example=render_prompt_example(spec.data, tok, run.heldout[0]),
                summary=run.summary,
                train_index=run.train_index,
                merge_index=run.merge_index,
                train_manifest=run.manifests["train"],
                results=results,
            ),
        )

        rels = [r for r in contents.files_under(tmp) if r != contents.SUMS_FILE]
        hashes.update(contents.hash_files(tmp, [r for r in rels if r not in hashes], desc="hash files"))
        atomic_write_text(tmp / contents.SUMS_FILE, contents.format_sha256sums({r: hashes[r] for r in rels}))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; the submission is for others to read
    write_job_manifest(
        spec.job_dir("bundle"),
        "bundle",
        spec,
        inputs={job: spec.job_dir(job) / layout.MANIFEST for job in layout.RUN_JOBS},
        outputs={"SHA256SUMS": out / contents.SUMS_FILE},
        extra={
            "submission": str(out),
            "files": len(rels) + 1,
            "checkpoints": dict(modes),
            "chosen": results["chosen"]["model"],
            "code": code["source"],
        },
        started=started,
    )
    log.info(
        "submission: %s (%d files; chosen %s: %s)",
        out,
        len(rels) + 1,
        results["chosen"]["model"],
        results["chosen"]["reason"],
    )
    print(out)
    return out


def main(spec: RunSpec, args) -> None:
    bundle(spec, Path(args.out).expanduser().resolve() if args.out else None)


def _args(parser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the submission folder "
        "(default runs/<run_id>/submission; keep it on the run's "
        "filesystem so checkpoints are hard links, not copies)",
    )


if __name__ == "__main__":
    raise SystemExit(run_job("bundle", __doc__, main, _args))
