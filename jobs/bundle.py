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
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from tunebox import layout
from tunebox.chaos import kill_point
from tunebox.cli import run_job
from tunebox.config import RunSpec, dump_spec
from tunebox.io import InputError, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl
from tunebox.manifest import write_job_manifest
from tunebox.model.weights import load_tokenizer
from tunebox.submission import contents, selfcheck
from tunebox.submission.algorithm import render_algorithm, render_prompt_example
from tunebox.submission.assemble import (
    check_spec_matches_run,
    copy_logs,
    link_or_copy,
    merged_checkpoints,
    read_json,
    tokenizer_files,
    training_log_tail,
)
from tunebox.submission.code_archive import make_code_archive
from tunebox.submission.mindformers_files import write_mindformers_files

log = logging.getLogger("tunebox.bundle")

# ---- the job -------------------------------------------------------------------------------


def bundle(spec: RunSpec, out: Optional[Path] = None) -> Path:
    started = time.time()
    run_dir = spec.run_dir
    manifests = {job: read_json(spec.job_dir(job) / layout.MANIFEST, f"{job}'s manifest") for job in layout.RUN_JOBS}
    check_spec_matches_run(spec, manifests)
    if not (run_dir / layout.RECORD).is_file():
        raise InputError(f"{layout.RECORD} not found: is this a run folder?", run_dir / layout.RECORD)
    train_index = read_json(spec.run_dir / layout.TRAIN_INDEX, "train's checkpoint index")
    merge_index = read_json(spec.run_dir / layout.MERGE_INDEX, "merge's index")
    report = read_json(spec.run_dir / layout.EVALUATE_REPORT, "evaluate's report")
    summary = read_json(spec.run_dir / layout.TRAIN_SUMMARY, "train's summary")
    stats = read_json(spec.run_dir / layout.PREP_STATS, "prep's stats")
    checkpoints = merged_checkpoints(run_dir, train_index, merge_index)

    scores = {}
    for name in ["base"] + [contents.model_dir_name(c["step"]) for c in checkpoints]:
        f = spec.job_dir("evaluate") / name / "scores.json"
        if f.exists():
            scores[name] = read_json(f, f"evaluate's scores of {name}")
        elif name != "base":
            raise InputError(f"{name} was not evaluated: run evaluate with eval.checkpoints: all", f)

    out = Path(out) if out else run_dir / contents.SUBMISSION_DIR
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    heldout = read_jsonl(spec.run_dir / layout.PREP_HELDOUT)
    if not heldout:
        raise InputError(
            "no held-out rows: data.heldout_rows must be > 0 to evaluate", spec.run_dir / layout.PREP_HELDOUT
        )
    rejects_file = spec.job_dir("prep") / "rejects.jsonl"
    rejects = read_jsonl(rejects_file) if rejects_file.exists() else []

    with atomic_dir(out) as tmp:
        # checkpoints first: hashing them is the long part, and a mismatch should stop us early
        modes = Counter()
        for c in checkpoints:
            modes[link_or_copy(c["path"], tmp / contents.checkpoint_file(c["step"]))] += 1
        hashes = contents.hash_files(
            tmp, [contents.checkpoint_file(c["step"]) for c in checkpoints], desc="hash checkpoints"
        )
        for c in checkpoints:
            name = contents.model_dir_name(c["step"])
            actual = hashes[contents.checkpoint_file(c["step"])]
            recorded = {
                "merge/index.json": c["sha256"],
                f"evaluate/{name}/scores.json": scores[name].get("checkpoint_sha256"),
            }
            for where, sha in recorded.items():
                if sha and sha != actual:
                    raise RuntimeError(
                        f"{c['path']} has sha256 {actual}, {where} recorded {sha}: the checkpoint "
                        f"changed after that job ran; run merge and evaluate again"
                    )
            c["sha256"] = actual
        log.info("checkpoints: %s", ", ".join(f"{n} {m}ed" for m, n in modes.items()))

        copy_logs(run_dir, tmp / "logs")
        kill_point("bundle.writing")
        tj, cfg = tokenizer_files(spec.resolve(spec.model.tokenizer), spec.model.name)
        (tmp / "tokenizer").mkdir()
        shutil.copy2(tj, tmp / "tokenizer" / "tokenizer.json")
        shutil.copy2(cfg, tmp / "tokenizer" / "tokenizer_config.json")
        if tj.with_name("tokenizer.model").is_file():  # the sentencepiece/tiktoken file r1.1's tokenizers read
            shutil.copy2(tj.with_name("tokenizer.model"), tmp / "tokenizer" / "tokenizer.model")
        atomic_write_text(tmp / "hyperparams.yaml", dump_spec(spec))
        code = make_code_archive(manifests["train"].get("git"), tmp / "code.tar.gz", exclude=(run_dir, out))

        accuracies = {
            name: {k: s.get(k) for k in ("n", "accuracy_strict", "accuracy_tolerant")} for name, s in scores.items()
        }
        results = contents.build_results_for(
            spec,
            report=report,
            accuracies=accuracies,
            checkpoints=checkpoints,
            code=code,
        )
        if summary.get("trainable_params") not in (None, results["trainable_params"]):
            raise RuntimeError(
                f"train counted {summary['trainable_params']:,} trainable parameters, the registry "
                f"gives {results['trainable_params']:,} for this spec"
            )
        if results["evaluate_best"] != results["chosen"]["model"]:
            log.warning(
                "evaluate's report recommends %s, the contest rule chooses %s from the same figures (%s): "
                "the report is older than this code; run evaluate again",
                results["evaluate_best"],
                results["chosen"]["model"],
                results["chosen"]["reason"],
            )
        if results["chosen"]["valid"] is False:
            log.warning(
                "%s; the submission is bundled for inspection, and predict.yaml names the highest score",
                results["chosen"]["reason"],
            )
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
        env = contents.environment_record(manifests, contents.direct_requirements(tmp / "code.tar.gz"))
        atomic_write_json(tmp / "environment.json", env)
        atomic_write_text(tmp / "ENVIRONMENT.md", contents.render_environment(env))
        atomic_write_text(
            tmp / "ALGORITHM.md",
            render_algorithm(
                spec,
                stats=stats,
                rejects=rejects,
                prompt_example=render_prompt_example(spec.data, tok, heldout[0]),
                summary=summary,
                train_index=train_index,
                merge_index=merge_index,
                train_manifest=manifests["train"],
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
