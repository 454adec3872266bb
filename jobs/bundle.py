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

import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from tunebox.submission import contents
from tunebox import layout
from tunebox.submission import selfcheck
from tunebox.chaos import kill_point
from tunebox.cli import run_job
from tunebox.config import RunSpec, dump_spec
from tunebox.io import InputError, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl
from tunebox.manifest import write_job_manifest
from tunebox.submission.algorithm import render_algorithm, render_prompt_example
from tunebox.submission.code_archive import make_code_archive

log = logging.getLogger("tunebox.bundle")

MAX_LOG_FILE_BYTES = 200 << 20     # logs/ copies evaluate's whole folder: predictions, not weights
WEIGHT_SUFFIXES = {".ckpt", ".safetensors", ".npy", ".npz", ".bin", ".gguf"}


# ---- reading the run -------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise InputError(f"{what} not found: run the job that writes it first", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc.msg}, line {exc.lineno})", path, exc.lineno) from None


def check_spec_matches_run(spec: RunSpec, manifests: dict[str, dict]) -> None:
    """Every job must have run with this spec: the submission says "these hyperparameters produced
    these checkpoints", which is only true when the four manifests agree with the spec given here."""
    mine = spec.spec_hash()
    problems = []
    for job, manifest in manifests.items():
        if manifest.get("spec_hash") == mine:
            continue
        diff = contents.spec_differences(manifest.get("spec") or {}, spec)
        if diff:
            problems.append(f"{job} ran with spec {manifest.get('spec_hash')} (this one is {mine}): "
                            + "; ".join(diff[:6]) + " (as run != given)")
        else:
            log.info("%s's spec hash differs only by keys added to the schema since, at their defaults", job)
    if problems:
        raise InputError("the run was made with a different spec than the one given to bundle; pass the same "
                         "--config and --set options as the jobs had:\n  " + "\n  ".join(problems),
                         spec.source_path)


def merged_checkpoints(spec: RunSpec, train_index: dict, merge_index: dict) -> list[dict]:
    """The planned checkpoints, each merged: [{step, train_loss, path, sha256}] in step order."""
    planned = train_index.get("planned") or []
    if len(planned) != contents.NUM_CHECKPOINTS:
        raise InputError(f"train planned {len(planned)} checkpoints; the contest asks for {contents.NUM_CHECKPOINTS} "
                         f"evenly spaced ones (train.num_checkpoints: {contents.NUM_CHECKPOINTS})",
                         spec.run_dir / layout.TRAIN_INDEX)
    merged = {e["step"]: e for e in merge_index.get("checkpoints", [])}
    missing = [s for s in planned if s not in merged]
    if missing:
        raise InputError(f"merge has no checkpoint for step(s) {missing} of the planned {planned}: "
                         f"finish train, then run merge again", spec.run_dir / layout.MERGE_INDEX)
    out = []
    for step in planned:
        e = merged[step]
        path = spec.job_dir("merge") / e["file"]
        if not path.is_file():
            raise InputError(f"merged checkpoint of step {step} is missing: run merge again", path)
        out.append({"step": step, "train_loss": e.get("train_loss"), "path": path, "sha256": e.get("sha256")})
    return out


# ---- the MindFormers files --------------------------------------------------------------------

MF_README = """# Running this submission with MindFormers

Which MindFormers each file is for (each file says so on its first line):

| file | MindFormers | MindSpore |
|---|---|---|
| finetune.yaml | 1.9.0 (the run's own stack) | 2.9.0 |
| predict.yaml | 1.9.0 | 2.9.0 |
| predict_r1.1.yaml | r1.1 (v1.1.0), the contest's | 2.3.0rc2 |

finetune.yaml is the MindFormers config the training ran (runs/<id>/train/mindformers.yaml), with
its machine paths made relative to this folder's parent: point `load_checkpoint` at the base model's
MindFormers checkpoint and `train_dataset.data_loader.dataset_dir` at the MindRecord before running it.
The classes it names with `auto_register` are in mf_extensions.py, found through REGISTER_PATH
(MindFormers 1.9; r1.1 has no auto_register).

Below, MF is a MindFormers checkout (run_mindformer.py and scripts/ are there; the wheel does not ship
them). The YAMLs' relative paths (../checkpoints, ../tokenizer, ../base, ../data) are relative to this
folder, and MindFormers reads them from its working directory: run from here. One card:

    cd <submission>/mindformers
    REGISTER_PATH=$PWD python $MF/run_mindformer.py --config finetune.yaml --run_mode finetune

Four cards, model parallel (the contest's layout): in finetune.yaml set `use_parallel: True`,
`parallel.parallel_mode: 1` and `parallel_config: {{data_parallel: 1, model_parallel: 4, pipeline_stage: 1}}`
(the Ascend recipes render it so: {topology}), then launch with MindFormers' msrun launcher:

    REGISTER_PATH=$PWD bash $MF/scripts/msrun_launcher.sh \\
        "$MF/run_mindformer.py --config finetune.yaml --run_mode finetune" 4

Predict with the prompt the model was trained on (the training template, here the first held-out
problem; $'...' keeps the newlines):

    python $MF/run_mindformer.py --config predict.yaml --run_mode predict \\
        --predict_data {prompt}

predict.yaml loads {checkpoint} (the chosen checkpoint) with ../tokenizer/tokenizer.json; set
`load_checkpoint` to another checkpoints/step-N/model.ckpt to try the others. On the contest's r1.1 use
predict_r1.1.yaml the same way, through {r11_runner}.
"""


def ansi_c_quoted(text: str) -> str:
    """text as a bash $'...' word: the prompt's newlines survive a copy into a shell."""
    return "$'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def portable_finetune_config(config: dict, run_dir: Path) -> dict:
    """The as-run MindFormers config with every path under the run folder made relative to the
    submission's mindformers/ folder (../run/...), the base checkpoint and data named by role."""
    cfg = json.loads(json.dumps(config))
    cfg["output_dir"] = "./output"
    cfg["load_checkpoint"] = "../base/model.ckpt"
    loader = cfg["train_dataset"]["data_loader"]
    loader.pop("dataset_files", None)
    loader["dataset_dir"] = "../data/train.mindrecord"
    cfg["train_dataset_task"]["dataset_config"] = cfg["train_dataset"]
    for cb in cfg.get("callbacks", []):
        if "directory" in cb:
            cb["directory"] = "./output"
        if "path" in cb:
            cb["path"] = "./output/loss.jsonl"
    if cfg.get("tensorboard", {}).get("tensorboard_dir"):
        cfg["tensorboard"]["tensorboard_dir"] = "./output/tensorboard"
    strategy = cfg.get("parallel", {}).get("strategy_ckpt_save_file")
    if strategy:
        cfg["parallel"]["strategy_ckpt_save_file"] = "./output/strategy/ckpt_strategy.ckpt"
    text = json.dumps(cfg)
    if str(run_dir) in text:
        raise RuntimeError(f"the portable MindFormers config still names {run_dir}: update portable_finetune_config")
    return cfg


def write_mindformers_files(spec: RunSpec, folder: Path, chosen_step: int, tok) -> None:
    import yaml

    from tunebox.model.mf_config import (EXTENSIONS_FILE, MF19_HEADER, R11_FILE, dump, r11_header,
                                         render_contest_predict_config, render_predict_config)

    folder.mkdir()
    as_run = yaml.safe_load((spec.job_dir("train") / "mindformers.yaml").read_text(encoding="utf-8"))
    atomic_write_text(folder / "finetune.yaml", dump(portable_finetune_config(as_run, spec.run_dir), MF19_HEADER))
    checkpoint = f"../{contents.checkpoint_file(chosen_step)}"
    atomic_write_text(folder / "predict.yaml", dump(render_predict_config(
        spec, checkpoint=checkpoint, tokenizer_dir="../tokenizer", max_new_tokens=spec.eval.max_new_tokens,
        special_tokens=tok.config, stop_ids=tok.stop_ids), MF19_HEADER))
    atomic_write_text(folder / R11_FILE, dump(render_contest_predict_config(
        spec, checkpoint=checkpoint, tokenizer_dir="../tokenizer", max_new_tokens=spec.eval.max_new_tokens,
        special_tokens=tok.config, stop_ids=tok.stop_ids), r11_header(spec.model.name)))
    shutil.copy2(EXTENSIONS_FILE, folder / EXTENSIONS_FILE.name)
    from tunebox.data.prompts import spec_prompt
    from tunebox.model.mf_config import R11_MODELS, topology

    topo = topology(spec)
    heldout = read_jsonl(spec.run_dir / layout.PREP_HELDOUT)
    atomic_write_text(folder / "README.md", MF_README.format(
        checkpoint=checkpoint, prompt=ansi_c_quoted(spec_prompt(tok, heldout[0]["prompt"], spec.data)),
        topology=f"this run: {topo.workers} worker(s), data {topo.data_parallel} x model {topo.model_parallel} "
                 f"x pipeline {topo.pipeline_stage}",
        r11_runner=R11_MODELS[spec.model.name][4]))


# ---- putting files in place ------------------------------------------------------------------

def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link src at dst ('link'); across filesystems (or where links are refused) copy it
    ('copy') and say so in the log. Never both."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return "link"
    except OSError as exc:
        log.warning("cannot hard-link %s -> %s (%s); copying it instead (%.1f MB)", src, dst, exc.strerror or exc,
                    src.stat().st_size / 1e6)
        shutil.copy2(src, dst)
        return "copy"


def copy_logs(run_dir: Path, logs: Path) -> list[str]:
    """Copy the run's small files into logs/, mirroring runs/<run_id>/. Returns what was copied."""
    copied = []

    def put(src: Path, rel: str) -> None:
        dst = logs / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied.append(rel)

    put(run_dir / "record.jsonl", "record.jsonl")
    for job, names in contents.LOG_SOURCES.items():
        job_dir = run_dir / job
        if names is None:
            for rel in contents.files_under(job_dir):
                path = job_dir / rel
                if Path(rel).name.startswith("."):
                    continue
                if path.suffix in WEIGHT_SUFFIXES or path.stat().st_size > MAX_LOG_FILE_BYTES:
                    log.warning("logs/: left out %s/%s (%.1f MB; weights are not logs)", job, rel,
                                path.stat().st_size / 1e6)
                    continue
                put(path, f"{job}/{rel}")
            continue
        for name in names:
            if (job_dir / name).is_file():
                put(job_dir / name, f"{job}/{name}")
            elif (job_dir / name).is_dir():
                for rel in contents.files_under(job_dir / name):
                    put(job_dir / name / rel, f"{job}/{name}/{rel}")
    for job, patterns in contents.LOG_PATTERNS.items():
        job_dir = run_dir / job
        for path in sorted({p for pat in patterns for p in job_dir.rglob(pat) if p.is_file()} if job_dir.is_dir() else []):
            rel = f"{job}/{path.relative_to(job_dir).as_posix()}"
            if rel not in copied:
                put(path, rel)
    return copied


def training_log_tail(run_dir: Path, lines: int = 40) -> tuple[str, list[str]]:
    """(name, last lines) of the training's log: the first worker's MindSpore/MindFormers log when
    there is one, else tunebox's own loss.jsonl (a single-process run logs to the console only)."""
    train_dir = run_dir / "train"
    candidates = contents.training_log_candidates(train_dir) if train_dir.is_dir() else []
    source = candidates[0] if candidates else run_dir / layout.TRAIN_LOSS
    if not source.is_file():
        return "none", []
    with open(source, "rb") as fh:
        fh.seek(max(0, source.stat().st_size - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return f"logs/train/{source.relative_to(train_dir).as_posix()}", text.splitlines()[-lines:]


def tokenizer_files(spec: RunSpec) -> tuple[Path, Path]:
    """The tokenizer.json and tokenizer_config.json the jobs loaded (tunebox.model.weights.load_tokenizer)."""
    from tunebox.model.weights import tokenizer_file

    tj = tokenizer_file(spec.model.name, spec.resolve(spec.model.tokenizer))
    cfg = tj.with_name("tokenizer_config.json")
    for f in (tj, cfg):
        if not f.is_file():
            raise InputError("tokenizer file not found (convert the model again: invoke convert --model "
                             f"{spec.model.name})", f)
    return tj, cfg


# ---- the job -------------------------------------------------------------------------------

def bundle(spec: RunSpec, out: Optional[Path] = None) -> Path:
    from tunebox.model.weights import load_tokenizer

    started = time.time()
    run_dir = spec.run_dir
    manifests = {job: _read_json(spec.job_dir(job) / "manifest.json", f"{job}'s manifest") for job in contents.JOBS}
    check_spec_matches_run(spec, manifests)
    if not (run_dir / "record.jsonl").is_file():
        raise InputError("record.jsonl not found: is this a run folder?", run_dir / "record.jsonl")
    train_index = _read_json(spec.run_dir / layout.TRAIN_INDEX, "train's checkpoint index")
    merge_index = _read_json(spec.run_dir / layout.MERGE_INDEX, "merge's index")
    report = _read_json(spec.run_dir / layout.EVALUATE_REPORT, "evaluate's report")
    summary = _read_json(spec.run_dir / layout.TRAIN_SUMMARY, "train's summary")
    stats = _read_json(spec.run_dir / layout.PREP_STATS, "prep's stats")
    checkpoints = merged_checkpoints(spec, train_index, merge_index)

    scores = {}
    for name in ["base"] + [contents.model_dir_name(c["step"]) for c in checkpoints]:
        f = spec.job_dir("evaluate") / name / "scores.json"
        if f.exists():
            scores[name] = _read_json(f, f"evaluate's scores of {name}")
        elif name != "base":
            raise InputError(f"{name} was not evaluated: run evaluate with eval.checkpoints: all", f)

    out = Path(out) if out else run_dir / contents.SUBMISSION_DIR
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    heldout = read_jsonl(spec.run_dir / layout.PREP_HELDOUT)
    if not heldout:
        raise InputError("no held-out rows: data.heldout_rows must be > 0 to evaluate",
                         spec.run_dir / layout.PREP_HELDOUT)
    rejects_file = spec.job_dir("prep") / "rejects.jsonl"
    rejects = read_jsonl(rejects_file) if rejects_file.exists() else []

    with atomic_dir(out) as tmp:
        # checkpoints first: hashing them is the long part, and a mismatch should stop us early
        modes = Counter()
        for c in checkpoints:
            modes[link_or_copy(c["path"], tmp / contents.checkpoint_file(c["step"]))] += 1
        hashes = contents.hash_files(tmp, [contents.checkpoint_file(c["step"]) for c in checkpoints], desc="hash checkpoints")
        for c in checkpoints:
            name = contents.model_dir_name(c["step"])
            actual = hashes[contents.checkpoint_file(c["step"])]
            recorded = {"merge/index.json": c["sha256"], f"evaluate/{name}/scores.json": scores[name].get("checkpoint_sha256")}
            for where, sha in recorded.items():
                if sha and sha != actual:
                    raise RuntimeError(f"{c['path']} has sha256 {actual}, {where} recorded {sha}: the checkpoint changed "
                                       f"after that job ran; run merge and evaluate again")
            c["sha256"] = actual
        log.info("checkpoints: %s", ", ".join(f"{n} {m}ed" for m, n in modes.items()))

        copy_logs(run_dir, tmp / "logs")
        kill_point("bundle.writing")
        tj, cfg = tokenizer_files(spec)
        (tmp / "tokenizer").mkdir()
        shutil.copy2(tj, tmp / "tokenizer" / "tokenizer.json")
        shutil.copy2(cfg, tmp / "tokenizer" / "tokenizer_config.json")
        if tj.with_name("tokenizer.model").is_file():  # the sentencepiece/tiktoken file r1.1's tokenizers read
            shutil.copy2(tj.with_name("tokenizer.model"), tmp / "tokenizer" / "tokenizer.model")
        atomic_write_text(tmp / "hyperparams.yaml", dump_spec(spec))
        code = make_code_archive(manifests["train"].get("git"), tmp / "code.tar.gz", exclude=(run_dir, out))

        accuracies = {name: {k: s.get(k) for k in ("n", "accuracy_strict", "accuracy_tolerant")}
                      for name, s in scores.items()}
        results = contents.build_results(run_id=spec.run_id, stage=spec.stage, fmt=spec.data.format,
                                   model_name=spec.model.name, rank=spec.lora.rank,
                                   target_modules=spec.lora.target_modules, report=report, accuracies=accuracies,
                                   checkpoints=checkpoints, code=code)
        if summary.get("trainable_params") not in (None, results["trainable_params"]):
            raise RuntimeError(f"train counted {summary['trainable_params']:,} trainable parameters, the registry "
                               f"gives {results['trainable_params']:,} for this spec")
        if results["evaluate_best"] != results["chosen"]["model"]:
            log.warning("evaluate's report recommends %s, the contest rule chooses %s from the same figures (%s): "
                        "the report is older than this code; run evaluate again", results["evaluate_best"],
                        results["chosen"]["model"], results["chosen"]["reason"])
        if results["chosen"]["valid"] is False:
            log.warning("%s; the submission is bundled for inspection, and predict.yaml names the highest score",
                        results["chosen"]["reason"])
        atomic_write_json(tmp / "results.json", results)
        # predict.yaml names a checkpoint even when none is valid: then the highest score, as the reason says
        chosen = contents.step_of_dir(results["chosen"]["model"] or results["chosen"]["highest_score"] or "") \
            or checkpoints[-1]["step"]
        write_mindformers_files(spec, tmp / "mindformers", chosen, tok)
        log_name, log_tail = training_log_tail(run_dir)
        selfcheck.render(tmp / selfcheck.FILE, results=results, results_bytes=(tmp / "results.json").read_bytes(),
                         rank=spec.lora.rank, commit=code.get("commit"), code_note=code["note"],
                         log_name=log_name, log_tail=log_tail)
        env = contents.environment_record(manifests, contents.direct_requirements(tmp / "code.tar.gz"))
        atomic_write_json(tmp / "environment.json", env)
        atomic_write_text(tmp / "ENVIRONMENT.md", contents.render_environment(env))
        atomic_write_text(tmp / "ALGORITHM.md", render_algorithm(
            spec, stats=stats, rejects=rejects,
            prompt_example=render_prompt_example(spec, tok, heldout[0]), summary=summary, train_index=train_index,
            merge_index=merge_index, train_manifest=manifests["train"], results=results))

        rels = [r for r in contents.files_under(tmp) if r != contents.SUMS_FILE]
        hashes.update(contents.hash_files(tmp, [r for r in rels if r not in hashes], desc="hash files"))
        atomic_write_text(tmp / contents.SUMS_FILE, contents.format_sha256sums({r: hashes[r] for r in rels}))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; the submission is for others to read
    write_job_manifest(spec.job_dir("bundle"), "bundle", spec,
                       inputs={job: spec.job_dir(job) / "manifest.json" for job in contents.JOBS},
                       outputs={"SHA256SUMS": out / contents.SUMS_FILE},
                       extra={"submission": str(out), "files": len(rels) + 1, "checkpoints": dict(modes),
                              "chosen": results["chosen"]["model"], "code": code["source"]}, started=started)
    log.info("submission: %s (%d files; chosen %s: %s)", out, len(rels) + 1, results["chosen"]["model"],
             results["chosen"]["reason"])
    print(out)
    return out


def main(spec: RunSpec, args) -> None:
    bundle(spec, Path(args.out).expanduser().resolve() if args.out else None)


def _args(parser) -> None:
    parser.add_argument("--out", metavar="DIR", help="where to write the submission folder "
                                                     "(default runs/<run_id>/submission; keep it on the run's "
                                                     "filesystem so checkpoints are hard links, not copies)")


if __name__ == "__main__":
    raise SystemExit(run_job("bundle", __doc__, main, _args))
