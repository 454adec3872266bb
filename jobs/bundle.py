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
                        the tokenizer above), mf_extensions.py (the classes the YAML registers;
                        REGISTER_PATH=mindformers/) and README.md (the commands)
  logs/                 mirrors runs/<run_id>/: every job's manifest.json, record.jsonl, prep's stats,
                        held-out rows and rejects, train's loss.jsonl/loss.csv/summary.json and
                        checkpoint index, every msrun worker's and MindFormers' *.log under train/,
                        merge's index, evaluate's predictions, scores and reports
  results.json          per checkpoint: step, math accuracy (strict, tolerant), SQuAD F1/EM and
                        retention when evaluate measured them, ratio, contest score; the chosen checkpoint
  ENVIRONMENT.md, environment.json   what each job ran on, from the jobs' manifests
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

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from .core import bundle_lib as bl
from .core import layout, selfcheck
from .core.cli import run_job
from .core.config import REPO_ROOT, RunSpec, dump_spec
from .core.io import InputError, atomic_dir, atomic_write_json, atomic_write_text
from .core.manifest import write_job_manifest
from .core.models import get_model_spec, mindformers_target_regex

log = logging.getLogger("tunebox.bundle")

MAX_LOG_FILE_BYTES = 200 << 20     # logs/ copies evaluate's whole folder: predictions, not weights
WEIGHT_SUFFIXES = {".ckpt", ".safetensors", ".npy", ".npz", ".bin", ".gguf"}
MAX_WORKTREE_FILE_BYTES = 20 << 20  # a working-tree archive skips bigger files (a stray checkpoint is not code)
_WALK_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", "runs", "output", "build", ".cache", "kernel_meta",
                   "node_modules", ".venv", "venv"}


# ---- reading the run -------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise InputError(f"{what} not found: run the job that writes it first", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc.msg}, line {exc.lineno})", path, exc.lineno) from None


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def check_spec_matches_run(spec: RunSpec, manifests: dict[str, dict]) -> None:
    """Every job must have run with this spec: the submission says "these hyperparameters produced
    these checkpoints", which is only true when the four manifests agree with the spec given here."""
    mine = spec.spec_hash()
    problems = []
    for job, manifest in manifests.items():
        if manifest.get("spec_hash") == mine:
            continue
        diff = bl.spec_differences(manifest.get("spec") or {}, spec)
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
    if len(planned) != bl.NUM_CHECKPOINTS:
        raise InputError(f"train planned {len(planned)} checkpoints; the contest asks for {bl.NUM_CHECKPOINTS} "
                         f"evenly spaced ones (train.num_checkpoints: {bl.NUM_CHECKPOINTS})",
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

finetune.yaml is the MindFormers config the training ran (runs/<id>/train/mindformers.yaml), with
its machine paths made relative to this folder's parent: point `load_checkpoint` at the base model's
MindFormers checkpoint and `train_dataset.data_loader.dataset_dir` at the MindRecord before running it.
The classes it names with `auto_register` are in mf_extensions.py, found through REGISTER_PATH.

    cd mindformers
    REGISTER_PATH=$PWD python /path/to/mindformers/run_mindformer.py --config finetune.yaml --run_mode finetune
    python /path/to/mindformers/run_mindformer.py --config predict.yaml --run_mode predict \\
        --predict_data "1 + 1 = ?"

predict.yaml loads {checkpoint} (the chosen checkpoint) with ../tokenizer/tokenizer.json;
set `load_checkpoint` to another checkpoints/step-N/model.ckpt to try the others.
"""


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
    strategy = cfg.get("parallel", {}).get("strategy_ckpt_save_file")
    if strategy:
        cfg["parallel"]["strategy_ckpt_save_file"] = "./output/strategy/ckpt_strategy.ckpt"
    text = json.dumps(cfg)
    if str(run_dir) in text:
        raise RuntimeError(f"the portable MindFormers config still names {run_dir}: update portable_finetune_config")
    return cfg


def write_mindformers_files(spec: RunSpec, folder: Path, chosen_step: int) -> None:
    import yaml

    from .core.mf_config import EXTENSIONS_FILE, dump, render_predict_config

    folder.mkdir()
    as_run = yaml.safe_load((spec.job_dir("train") / "mindformers.yaml").read_text(encoding="utf-8"))
    atomic_write_text(folder / "finetune.yaml", dump(portable_finetune_config(as_run, spec.run_dir)))
    checkpoint = f"../{bl.checkpoint_file(chosen_step)}"
    atomic_write_text(folder / "predict.yaml", dump(render_predict_config(
        spec, checkpoint=checkpoint, tokenizer_dir="../tokenizer", max_new_tokens=spec.eval.max_new_tokens)))
    shutil.copy2(EXTENSIONS_FILE, folder / EXTENSIONS_FILE.name)
    atomic_write_text(folder / "README.md", MF_README.format(checkpoint=checkpoint))


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
    for job, names in bl.LOG_SOURCES.items():
        job_dir = run_dir / job
        if names is None:
            for rel in bl.files_under(job_dir):
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
    for job, patterns in bl.LOG_PATTERNS.items():
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
    candidates = bl.training_log_candidates(train_dir) if train_dir.is_dir() else []
    source = candidates[0] if candidates else train_dir / "loss.jsonl"
    if not source.is_file():
        return "none", []
    with open(source, "rb") as fh:
        fh.seek(max(0, source.stat().st_size - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return f"logs/train/{source.relative_to(train_dir).as_posix()}", text.splitlines()[-lines:]


def tokenizer_files(spec: RunSpec) -> tuple[Path, Path]:
    """The tokenizer.json and tokenizer_config.json the jobs loaded (jobs.core.data.load_tokenizer)."""
    from .core.weights import ensure_model

    tj = spec.resolve(spec.model.tokenizer) or ensure_model(spec.model.name) / "tokenizer.json"
    cfg = tj.with_name("tokenizer_config.json")
    for f in (tj, cfg):
        if not f.is_file():
            raise InputError("tokenizer file not found (convert the model again: invoke convert --model "
                             f"{spec.model.name})", f)
    return tj, cfg


# ---- code.tar.gz -----------------------------------------------------------------------------

def _git(root: Path, *args: str) -> Optional[subprocess.CompletedProcess]:
    if shutil.which("git") is None:
        return None
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True)


def working_tree_files(root: Path, exclude: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """(files to archive, files skipped as too big): git's tracked and untracked-but-not-ignored
    files when root is a repository (an untracked source file is part of what ran), else a walk that
    leaves out caches, runs and outputs."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is not None and listed.returncode == 0:
        names = sorted({n for n in listed.stdout.decode("utf-8", "replace").split("\0") if n})
    else:
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _WALK_SKIP_DIRS and not d.endswith(".egg-info")
                                 and not d.startswith("rank_"))
            for f in filenames:
                if not f.endswith(".pyc"):
                    names.append((Path(dirpath) / f).relative_to(root).as_posix())
        names.sort()
    keep, too_big = [], []
    excluded = [e.resolve() for e in exclude]
    for rel in names:
        path = root / rel
        if not path.is_file() or any(path.resolve().is_relative_to(e) for e in excluded):
            continue
        (too_big if path.stat().st_size > MAX_WORKTREE_FILE_BYTES else keep).append(rel)
    return keep, too_big


def write_worktree_archive(root: Path, files: list[str], dest: Path, prefix: str = "tunebox/") -> None:
    # gzip with mtime 0 and sorted names: the same files give the same archive bytes.
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=prefix + rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)


def make_code_archive(git: Optional[dict], dest: Path, root: Path = REPO_ROOT,
                      exclude: tuple[Path, ...] = ()) -> dict:
    """code.tar.gz: `git archive` of the commit train recorded when its tree was clean; otherwise
    the working tree's files now, with the reason (results.json and ALGORITHM.md repeat it)."""
    commit = (git or {}).get("commit")
    from_image = str((git or {}).get("source", "")).startswith("image label")
    if from_image and commit and git.get("dirty") is False and not (root / ".git").exists():
        # Inside the image: its code was built from that clean commit (the revision label), so its
        # files are what ran, though there is no .git to `git archive` from.
        files, too_big = working_tree_files(root, exclude)
        if not files:
            raise RuntimeError(f"no source files found under {root} for code.tar.gz")
        write_worktree_archive(root, files, dest)
        return {"source": "image", "commit": commit, "dirty": False,
                "note": f"the image's copy of the code ({len(files)} files under {root.name or root}/), built from "
                        f"commit {commit} with a clean tree (the image's {git['source'].split()[-1]} label)"}
    if git and commit and git.get("dirty") is False:
        proc = _git(root, "archive", "--format=tar.gz", "--prefix=tunebox/", "-o", str(dest), commit)
        if proc is not None and proc.returncode == 0:
            return {"source": "git archive", "commit": commit, "dirty": False,
                    "note": f"`git archive` of commit {commit}, the commit the train job recorded (clean tree)"}
        reason = ("git is not installed where bundle runs" if proc is None else
                  f"`git archive {commit}` failed ({proc.stderr.decode(errors='replace').strip()[:200]})")
    elif not git:
        reason = "git was not available when train ran, so no commit was recorded"
    elif not commit:
        reason = "the repository had no commit when train ran"
    else:
        reason = f"the work tree had uncommitted changes against commit {commit} when train ran"
    files, too_big = working_tree_files(root, exclude)
    if not files:
        raise RuntimeError(f"no source files found under {root} for code.tar.gz")
    write_worktree_archive(root, files, dest)
    for rel in too_big:
        log.warning("code.tar.gz: left out %s (%.0f MB, over %d MB)", rel, (root / rel).stat().st_size / 1e6,
                    MAX_WORKTREE_FILE_BYTES >> 20)
    note = (f"{reason}: code.tar.gz holds the working tree's files as they were when bundle ran "
            f"({len(files)} files: git's tracked and untracked-but-not-ignored files), which may differ from "
            f"what ran" + (f"; left out as too big: {', '.join(too_big)}" if too_big else ""))
    log.warning("code.tar.gz: %s", note)
    return {"source": "working tree", "commit": commit, "dirty": (git or {}).get("dirty"), "note": note}


# ---- ALGORITHM.md ----------------------------------------------------------------------------

def _cell(text: str) -> str:
    """Text for a markdown table cell: a bare | would end the cell."""
    return str(text).replace("|", "\\|")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def reject_reasons(rejects: list[dict], top: int = 10) -> list[tuple[str, int, Optional[int]]]:
    """(reason with numbers as N, count, first line) for the most common reasons."""
    counts: Counter = Counter()
    first: dict[str, Optional[int]] = {}
    for r in rejects:
        key = re.sub(r"\d+", "N", str(r.get("reason", "?")))[:120]
        counts[key] += 1
        first.setdefault(key, r.get("line"))
    return [(k, n, first[k]) for k, n in counts.most_common(top)]


def render_prompt_example(spec: RunSpec, tok, row: dict) -> tuple[str, int, int]:
    """One held-out row formatted as a training sample is (prompt through the chat template, then
    the answer and the end-of-turn marker): (text, prompt tokens, answer tokens)."""
    from .core import answers
    from .core.data import Example, encode_example
    from .core.prompts import spec_prompt
    from .core.scoring import math_family, mcq_reference_output

    if spec.data.format == "math":
        family = math_family(row["prompt"])
        answer = answers.render_answer(row["prompt"], row["reference"],
                                       answers.format_for(spec.data.answer_format, family), family)
    else:
        answer = mcq_reference_output(row["reference"])
    example = Example(row.get("line") or 0, row["prompt"], answer, row["reference"], row.get("meta") or {})
    _, _, n_tokens = encode_example(tok, example, spec.data.seq_length, spec.data.system_prompt, spec.data.template)
    prompt_text = spec_prompt(tok, row["prompt"], spec.data)
    n_prompt = len(tok.encode(prompt_text))
    return prompt_text + answer + tok.answer_suffix, n_prompt, n_tokens - n_prompt


def render_algorithm(spec: RunSpec, *, stats: dict, profile: Optional[dict], rejects: list[dict],
                     prompt_example: tuple[str, int, int], summary: dict, train_index: dict,
                     merge_index: dict, train_manifest: dict, results: dict) -> str:
    mspec = get_model_spec(spec.model.name)
    lora, t, d = spec.lora, spec.train, spec.data
    steps = summary.get("steps") or train_index.get("total_steps")
    warmup = int(round(t.warmup_ratio * steps)) if steps else None
    scales = sorted({float(e.get("scale", 1.0)) for e in merge_index.get("checkpoints", [])}) or [1.0]
    merge_rule = ("W' = W + (alpha/r)·B·A" if scales == [1.0] else
                  f"W' = W + s·(alpha/r)·B·A with s = {', '.join(f'{x:g}' for x in scales)} (`merge --scale`)")
    L = [f"# Algorithm: {spec.run_id}", "",
         f"Generated by `python -m jobs.bundle` from the run's spec, logs and manifests; every figure below is "
         f"read from `logs/` or computed from `hyperparams.yaml`.", "",
         "## Method", "",
         f"LoRA fine-tuning of `{spec.model.name}` ({mspec.num_layers} layers, hidden {mspec.hidden_size}, "
         f"{mspec.num_heads} heads / {mspec.n_kv_heads} KV heads, vocabulary {mspec.vocab_size:,}) as a MindFormers "
         f"`LlamaForCausalLM`, wrapped with MindFormers' LoRA adapter (`mindformers.pet.LoraModel`, the mindpet "
         f"LoRA layers the contest's `pet_config` selects). Every base weight is frozen; each targeted projection "
         f"W (out × in) gains trainable A (r × in) and B (out × r), B initialised to zero, and computes "
         f"W·x + (alpha/r)·B·A·dropout(x).", "",
         "| setting | value |", "|---|---|",
         f"| target modules | `{_cell(lora.target_modules)}` (MindFormers regex "
         f"`{_cell(mindformers_target_regex(lora.target_modules))}`: {', '.join(results['lora_targets'])} in every layer) |",
         f"| rank r | {lora.rank} |", f"| alpha | {lora.alpha} (scale alpha/r = {lora.alpha / lora.rank:g}) |",
         f"| dropout | {lora.dropout} |",
         f"| merge | {merge_rule} per checkpoint, written as a full MindFormers checkpoint |", "",
         "## Trainable parameters", "",
         "| figure | value |", "|---|---|",
         f"| trainable (LoRA A and B) | {results['trainable_params']:,} |",
         f"| total (base model, exact from the architecture) | {results['total_params']:,} |",
         f"| ratio, exact (`contest.param_ratio`) | {results['ratio']:.8f} |",
         f"| ratio, contest's nominal total (`contest.contest_param_ratio`) | "
         + (f"{results['contest_ratio']:.8f} (over {results['contest_total_params']:,})" if results["contest_ratio"]
            is not None else f"- (no contest total for {spec.model.name})") + " |",
         f"| ratio used in the score | {results['ratio_for_score']:.8f} ({results['ratio_basis']}) |",
         f"| counted by train in the network | {summary.get('trainable_params', '-'):,} trainable of "
         f"{summary.get('total_params', '-'):,} |" if isinstance(summary.get("trainable_params"), int) else
         "| counted by train in the network | - |", ""]

    # ---- data ----
    L += ["## Data: selection and cleaning", "",
          (f"Source: rows generated by `python -m jobs.generate {d.generate}` (`data.generate`)" if d.generate
           else f"Source: `{d.train_file}` ({d.format} rows)")
          + (f"; also held out: {stats.get('rows_heldout_file')} rows of `{d.heldout_file}` (`data.heldout_file`)"
             if d.heldout_file else "")
          + (f", the first {d.max_rows:,} rows only (`data.max_rows`)"
                                                           if d.max_rows else "") + ".", "",
          "| rows | count | |", "|---|---:|---|",
          f"| read | {stats.get('rows_read', '-')} | |",
          f"| bad (unreadable or missing fields) | {stats.get('rows_bad', '-')} | policy `data.on_bad_row: {d.on_bad_row}` |",
          f"| held out for evaluation | {stats.get('rows_heldout', '-')} | seeded split, `data.seed: {d.seed}` |",
          f"| longer than seq_length + 1 = {d.seq_length + 1} tokens | {stats.get('rows_too_long', '-')} | "
          f"policy `data.on_too_long: {stats.get('too_long_policy', d.on_too_long)}` |",
          f"| trained on | {stats.get('rows_train', '-')} | |", ""]
    reasons = reject_reasons(rejects)
    if reasons:
        L += ["Rejected rows by reason (numbers shown as N; `logs/prep/rejects.jsonl` lists every one):", "",
              "| reason | rows | first line |", "|---|---:|---:|"]
        L += [f"| {k.replace('|', '/')} | {n} | {line if line is not None else '-'} |" for k, n, line in reasons]
        L.append("")
    tpr = stats.get("tokens_per_row") or {}
    if tpr:
        L += [f"Tokens per training row (prompt + answer): median {tpr.get('50')}, p90 {tpr.get('90')}, "
              f"p99 {tpr.get('99')}, max {tpr.get('100')}; answer tokens per row (the supervised part) "
              f"{_fmt(stats.get('answer_tokens_per_row_mean'), 1)} on average; padding "
              f"{_fmt((stats.get('padding_fraction') or 0) * 100, 1)}% of the training tensor.", ""]
    if profile:
        fams = profile.get("families") or {}
        L += [f"Data profile (`logs/prep/profile.json`): {profile.get('rows', '-'):,} rows profiled; "
              f"exact duplicates {((profile.get('duplicates') or {}).get('exact') or {}).get('rows', '-')}, "
              f"wrong labels {(profile.get('wrong_labels') or {}).get('count', '-')}, "
              f"unparsable solutions {(profile.get('unparsable_solutions') or {}).get('count', '-')}.", ""]
        if fams:
            L += ["| family | rows | share |", "|---|---:|---:|"]
            L += [f"| {name} | {f.get('count', '-')} | {_fmt(f.get('share'), 3)} |" for name, f in fams.items()]
            L.append("")

    # ---- prompt ----
    text, n_prompt, n_answer = prompt_example
    template = (f"The model's chat template (`jobs.core.tokenizer`), system prompt "
                f"{'`' + d.system_prompt + '`' if d.system_prompt else 'the template default'}" if d.template == "chat"
                else f"data.template `{d.template}` (`jobs.core.prompts`)")
    L += ["## Prompt template", "",
          f"{template}; training answers in data.answer_format `{d.answer_format}` (`jobs.core.answers`). "
          f"One held-out row as a "
          f"training sample: the first {n_prompt} tokens (through the assistant header) carry no loss; the "
          f"{n_answer} answer tokens after it, end-of-turn marker included, are the only ones trained on. "
          f"Evaluation sends the same prompt and decodes greedily.", "", bl.fence(text), ""]

    # ---- schedule ----
    planned = train_index.get("planned") or summary.get("checkpoint_steps") or []
    L += ["## Training schedule", "",
          "| setting | value |", "|---|---|",
          f"| device | {t.device} ({t.mode} mode, {t.dtype}), {t.workers} worker(s) |",
          f"| epochs | {t.epochs:g}" + (f" (capped at train.max_steps = {t.max_steps})" if t.max_steps else "") + " |",
          f"| optimizer steps | {steps} |",
          f"| batch | {t.batch_size} samples per micro-step × grad accumulation {t.grad_accum} = "
          f"{t.batch_size * t.grad_accum} per optimizer step |",
          f"| sequence length | {d.seq_length} (+1 for the shifted labels) |",
          f"| optimizer | AdamWeightDecay (MindSpore's, no bias correction; weight decay {t.weight_decay:g}), "
          f"gradient norm clipped at {t.max_grad_norm:g} |",
          f"| learning rate | {t.lr:g}, linear warmup over {warmup} steps (warmup_ratio {t.warmup_ratio:g}), "
          f"then cosine to {t.lr * t.min_lr_ratio:g} (min_lr_ratio {t.min_lr_ratio:g}) |",
          f"| checkpoints | steps {', '.join(map(str, planned))} ({len(planned)} evenly spaced) |",
          f"| seed | {t.seed} (data order is a function of seed and step) |",
          f"| loss | first {_fmt(summary.get('first_loss'))}, last {_fmt(summary.get('last_loss'))} "
          f"(`logs/train/loss.jsonl`, one line per step) |",
          ""]

    # ---- results ----
    L += ["## Checkpoints and results", "",
          f"Held-out accuracy on {results['checkpoints'][0]['n'] if results['checkpoints'] else '-'} rows; "
          f"score = {results['score_formula']}.", "",
          "| checkpoint | step | train loss | accuracy (strict) | accuracy (tolerant) | SQuAD F1 | SQuAD EM | "
          "retention passes | score |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    if results.get("base"):
        b = results["base"]
        L.append(f"| base | 0 | - | {_fmt(b['accuracy_strict'])} | {_fmt(b['accuracy_tolerant'])} | "
                 f"{_fmt(b['squad_f1'], 2)} | {_fmt(b['squad_em'], 2)} | - | - |")
    for r in results["checkpoints"]:
        passes = {True: "yes", False: "no", None: "-"}[r["passes_retention"]]
        L.append(f"| {r['model']} | {r['step']} | {_fmt(r['train_loss'])} | {_fmt(r['accuracy_strict'])} | "
                 f"{_fmt(r['accuracy_tolerant'])} | {_fmt(r['squad_f1'], 2)} | {_fmt(r['squad_em'], 2)} | {passes} | "
                 f"{_fmt(r['score'], 6)} |")
    chosen = results["chosen"]
    L += ["", f"**Chosen checkpoint: {chosen['model'] or 'none'}** — {chosen['reason']}.", ""]
    retention, unknown = selfcheck.retention_line(results)
    L += [f"**{retention}.**" if unknown else f"{retention}.", ""]
    if results.get("evaluate_best") != chosen["model"]:
        L += [f"Evaluate's report chose {results['evaluate_best'] or 'none'} instead: it is older than the rule "
              f"above (`logs/evaluate/report.md`); run evaluate again.", ""]

    # ---- code ----
    code = results["code"]
    git = train_manifest.get("git") or {}
    L += ["## Code", "", f"`code.tar.gz`: {code['note']}.",
          f"Train ran on branch `{git.get('branch') or '-'}`, commit `{git.get('commit') or '-'}`"
          f"{' with uncommitted changes' if git.get('dirty') else ''}.", ""]
    return "\n".join(L)


# ---- the job -------------------------------------------------------------------------------

def bundle(spec: RunSpec, out: Optional[Path] = None) -> Path:
    from .core.data import load_tokenizer

    started = time.time()
    run_dir = spec.run_dir
    manifests = {job: _read_json(spec.job_dir(job) / "manifest.json", f"{job}'s manifest") for job in bl.JOBS}
    check_spec_matches_run(spec, manifests)
    if not (run_dir / "record.jsonl").is_file():
        raise InputError("record.jsonl not found: is this a run folder?", run_dir / "record.jsonl")
    train_index = _read_json(spec.run_dir / layout.TRAIN_INDEX, "train's checkpoint index")
    merge_index = _read_json(spec.run_dir / layout.MERGE_INDEX, "merge's index")
    report = _read_json(spec.run_dir / layout.EVALUATE_REPORT, "evaluate's report")
    summary = _read_json(spec.job_dir("train") / "summary.json", "train's summary")
    stats = _read_json(spec.job_dir("prep") / "stats.json", "prep's stats")
    profile_file = spec.job_dir("prep") / "profile.json"
    profile = _read_json(profile_file, "prep's data profile") if profile_file.exists() else None
    checkpoints = merged_checkpoints(spec, train_index, merge_index)

    scores = {}
    for name in ["base"] + [bl.model_dir_name(c["step"]) for c in checkpoints]:
        f = spec.job_dir("evaluate") / name / "scores.json"
        if f.exists():
            scores[name] = _read_json(f, f"evaluate's scores of {name}")
        elif name != "base":
            raise InputError(f"{name} was not evaluated: run evaluate with eval.checkpoints: all", f)

    out = Path(out) if out else run_dir / bl.SUBMISSION_DIR
    tok = load_tokenizer(spec)
    heldout = _read_jsonl(spec.job_dir("prep") / "heldout.jsonl")
    if not heldout:
        raise InputError("no held-out rows: data.heldout_rows must be > 0 to evaluate",
                         spec.job_dir("prep") / "heldout.jsonl")
    rejects_file = spec.job_dir("prep") / "rejects.jsonl"
    rejects = _read_jsonl(rejects_file) if rejects_file.exists() else []

    with atomic_dir(out) as tmp:
        # checkpoints first: hashing them is the long part, and a mismatch should stop us early
        modes = Counter()
        for c in checkpoints:
            modes[link_or_copy(c["path"], tmp / bl.checkpoint_file(c["step"]))] += 1
        hashes = bl.hash_files(tmp, [bl.checkpoint_file(c["step"]) for c in checkpoints], desc="hash checkpoints")
        for c in checkpoints:
            name = bl.model_dir_name(c["step"])
            actual = hashes[bl.checkpoint_file(c["step"])]
            recorded = {"merge/index.json": c["sha256"], f"evaluate/{name}/scores.json": scores[name].get("checkpoint_sha256")}
            for where, sha in recorded.items():
                if sha and sha != actual:
                    raise RuntimeError(f"{c['path']} has sha256 {actual}, {where} recorded {sha}: the checkpoint changed "
                                       f"after that job ran; run merge and evaluate again")
            c["sha256"] = actual
        log.info("checkpoints: %s", ", ".join(f"{n} {m}ed" for m, n in modes.items()))

        copy_logs(run_dir, tmp / "logs")
        tj, cfg = tokenizer_files(spec)
        (tmp / "tokenizer").mkdir()
        shutil.copy2(tj, tmp / "tokenizer" / "tokenizer.json")
        shutil.copy2(cfg, tmp / "tokenizer" / "tokenizer_config.json")
        atomic_write_text(tmp / "hyperparams.yaml", dump_spec(spec))
        code = make_code_archive(manifests["train"].get("git"), tmp / "code.tar.gz", exclude=(run_dir, out))

        accuracies = {name: {k: s.get(k) for k in ("n", "accuracy_strict", "accuracy_tolerant")}
                      for name, s in scores.items()}
        results = bl.build_results(run_id=spec.run_id, stage=spec.stage, fmt=spec.data.format,
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
        chosen = bl.step_of_dir(results["chosen"]["model"] or results["chosen"]["highest_score"] or "") \
            or checkpoints[-1]["step"]
        write_mindformers_files(spec, tmp / "mindformers", chosen)
        log_name, log_tail = training_log_tail(run_dir)
        selfcheck.render(tmp / selfcheck.FILE, results=results, results_bytes=(tmp / "results.json").read_bytes(),
                         rank=spec.lora.rank, commit=code.get("commit"), code_note=code["note"],
                         log_name=log_name, log_tail=log_tail)
        env = bl.environment_record(manifests)
        atomic_write_json(tmp / "environment.json", env)
        atomic_write_text(tmp / "ENVIRONMENT.md", bl.render_environment(env))
        atomic_write_text(tmp / "ALGORITHM.md", render_algorithm(
            spec, stats=stats, profile=profile, rejects=rejects,
            prompt_example=render_prompt_example(spec, tok, heldout[0]), summary=summary, train_index=train_index,
            merge_index=merge_index, train_manifest=manifests["train"], results=results))

        rels = [r for r in bl.files_under(tmp) if r != bl.SUMS_FILE]
        hashes.update(bl.hash_files(tmp, [r for r in rels if r not in hashes], desc="hash files"))
        atomic_write_text(tmp / bl.SUMS_FILE, bl.format_sha256sums({r: hashes[r] for r in rels}))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; the submission is for others to read
    write_job_manifest(spec.job_dir("bundle"), "bundle", spec,
                       inputs={job: spec.job_dir(job) / "manifest.json" for job in bl.JOBS},
                       outputs={"SHA256SUMS": out / bl.SUMS_FILE},
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
