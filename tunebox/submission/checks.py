"""What verify checks in a submission folder, one function a check (files, checksums, checkpoints,
spec, logs, MindFormers files, results, SQuAD, environment, code, self-check picture), and the re-run of
the evaluation from the folder alone; `python -m jobs.verify` runs them all and prints the findings."""

from __future__ import annotations

import json
import logging
import sys
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

from tunebox import layout
from tunebox.config import load_spec
from tunebox.contest import rules
from tunebox.data.prompts import spec_prompt
from tunebox.data.tokenizer import TextTokenizer
from tunebox.evaluation.decode import NumpyLlama, greedy_generate
from tunebox.evaluation.loop import answer_heldout, heldout_task, summarize
from tunebox.evaluation.runners import NumpyRunner
from tunebox.io import InputError
from tunebox.model.registry import get_model_shape
from tunebox.submission import contents, selfcheck
from tunebox.submission.mf_predict import greedy_answer, mindformers_importable

log = logging.getLogger("tunebox.verify")

# The run's hand-over files, as a submission keeps them (tunebox/layout.py)
TRAIN_INDEX = layout.in_logs(layout.TRAIN_INDEX)
MERGE_INDEX = layout.in_logs(layout.MERGE_INDEX)
EVALUATE_REPORT = layout.in_logs(layout.EVALUATE_REPORT)

FILE_PURPOSE = {
    "ALGORITHM.md": "the method report",
    "hyperparams.yaml": "the run spec",
    "code.tar.gz": "the code",
    "results.json": "the results",
    "ENVIRONMENT.md": "the environment report",
    "environment.json": "the environment record",
    "tokenizer/tokenizer.json": "the tokenizer",
    "logs/prep/heldout.jsonl": "the held-out rows",
    TRAIN_INDEX: "train's checkpoint plan",
    "selfcheck.png": "the self-check picture: results, ratio and training log (the contest asks for one)",
}


class Findings:
    """What the checks found: problems (each one a failure), passes and notes, in order."""

    def __init__(self):
        self.lines: list[tuple[str, str, str]] = []

    def fail(self, check: str, message: str) -> None:
        self.lines.append(("FAIL", check, message))

    def ok(self, check: str, message: str) -> None:
        self.lines.append(("ok", check, message))

    def note(self, check: str, message: str) -> None:
        self.lines.append(("note", check, message))

    def detail(self, check: str, message: str) -> None:
        """A line of supporting output under the check (e.g. the run inside an image)."""
        self.lines.append(("", check, message))

    def failed(self, check: Optional[str] = None) -> list[str]:
        return [m for kind, c, m in self.lines if kind == "FAIL" and (check is None or c == check)]

    def print(self, out=None) -> None:
        out = out or sys.stdout  # looked up now: a test (or caller) may have replaced sys.stdout
        for kind, check, message in self.lines:
            if kind:
                print(f"  {kind:<4}  {check:<11} {message}", file=out)
            else:
                print(f"{'':20}| {message}", file=out)


class Submission:
    """Read access to a submission folder; a file that is missing or broken yields None (the
    checks that need it report why) rather than an exception."""

    def __init__(self, root: Path, findings: Findings):
        self.root = root
        self.findings = findings
        self._cache: dict[str, object] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def json(self, rel: str):
        if rel not in self._cache:
            value = None
            p = self.path(rel)
            if p.is_file():
                try:
                    value = json.loads(p.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    self.findings.fail("files", f"{rel} is not valid JSON ({exc})")
            self._cache[rel] = value
        return self._cache[rel]

    def jsonl(self, rel: str) -> Optional[list[dict]]:
        key = rel + "#lines"
        if key not in self._cache:
            value = None
            p = self.path(rel)
            if p.is_file():
                value = []
                for lineno, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        value.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        self.findings.fail("files", f"{rel}:{lineno}: not valid JSON ({exc.msg})")
            self._cache[key] = value
        return self._cache[key]


# ---- the checks ------------------------------------------------------------------------------


def check_checksums(sub: Submission, f: Findings) -> dict[str, str]:
    """SHA256SUMS against the folder: every listed file present and matching, nothing unlisted.
    Returns the actual sha256 of every file on disk (reused by the other checks)."""
    on_disk = [r for r in contents.files_under(sub.root) if r != contents.SUMS_FILE]
    before = len(f.failed("checksums"))
    for rel in on_disk:
        if sub.path(rel).is_symlink():
            f.fail("checksums", f"{rel} is a symbolic link; a submission holds the files themselves")
    actual = contents.hash_files(sub.root, [r for r in on_disk if sub.path(r).is_file()], desc="verify sha256")
    sums_file = sub.path(contents.SUMS_FILE)
    if not sums_file.is_file():
        f.fail("checksums", f"{contents.SUMS_FILE} is missing: no file can be checked, and strays cannot be told apart")
        return actual
    listed, problems = contents.parse_sha256sums(sums_file.read_text(encoding="utf-8", errors="replace"))
    for p in problems:
        f.fail("checksums", p)
    for rel, sha in listed.items():
        if rel == contents.SUMS_FILE:
            f.fail("checksums", f"{contents.SUMS_FILE} lists itself; it must list every other file")
        elif rel not in actual:
            f.fail("checksums", f"{rel} is listed in {contents.SUMS_FILE} but missing from the folder")
        elif actual[rel] != sha:
            f.fail(
                "checksums", f"{rel}: sha256 is {actual[rel]}, {contents.SUMS_FILE} says {sha} (changed after bundling)"
            )
    for rel in on_disk:
        if rel not in listed:
            f.fail("checksums", f"stray file {rel}: not listed in {contents.SUMS_FILE} (added after bundling?)")
    if len(f.failed("checksums")) == before and not problems:
        f.ok("checksums", f"{len(listed)} files listed in {contents.SUMS_FILE}, every one matches, no stray files")
    return actual


def planned_steps(sub: Submission) -> Optional[list[int]]:
    """The checkpoint steps train planned (logs/train/checkpoints/index.json), or None."""
    index = sub.json(TRAIN_INDEX)
    if not isinstance(index, dict) or not isinstance(index.get("planned"), list):
        return None
    return [int(s) for s in index["planned"]]


def check_files(sub: Submission, f: Findings, steps: list[int]) -> None:
    missing = [rel for rel in contents.expected_files(steps) if not sub.path(rel).is_file()]
    for rel in missing:
        purpose = FILE_PURPOSE.get(rel, "")
        f.fail("files", f"missing {rel}" + (f" ({purpose})" if purpose else ""))
    if not missing:
        f.ok("files", f"all {len(contents.expected_files(steps))} expected files are present")


def check_checkpoints(sub: Submission, f: Findings, planned: Optional[list[int]], actual: dict[str, str]) -> list[int]:
    """Returns the steps of the checkpoint folders found."""
    ckpt_root = sub.path("checkpoints")
    found: list[int] = []
    before = len(f.failed("checkpoints"))
    if not ckpt_root.is_dir():
        f.fail("checkpoints", "no checkpoints/ folder")
    else:
        for child in sorted(ckpt_root.iterdir()):
            step = contents.step_of_dir(child.name)
            if step is None or not child.is_dir():
                f.fail("checkpoints", f"checkpoints/{child.name} is not a step-NNNNNN folder")
                continue
            found.append(step)
            if not (child / "model.ckpt").is_file():
                f.fail("checkpoints", f"checkpoints/{child.name}/model.ckpt is missing")
    found.sort()
    if len(found) != contents.NUM_CHECKPOINTS:
        f.fail(
            "checkpoints",
            f"{len(found)} checkpoints ({', '.join(map(str, found)) or 'none'}); the contest asks "
            f"for exactly {contents.NUM_CHECKPOINTS}",
        )
    index = sub.json(TRAIN_INDEX)
    if planned is None:
        f.fail("checkpoints", f"{TRAIN_INDEX} has no 'planned' steps to check the checkpoints against")
    else:
        total = index.get("total_steps") if isinstance(index, dict) else None
        if len(planned) != contents.NUM_CHECKPOINTS:
            f.fail("checkpoints", f"train planned {len(planned)} checkpoints, not {contents.NUM_CHECKPOINTS}")
        elif isinstance(total, int) and planned != contents.evenly_spaced_steps(total, len(planned)):
            f.fail(
                "checkpoints",
                f"planned steps {planned} are not evenly spaced over {total} steps "
                f"(expected {contents.evenly_spaced_steps(total, len(planned))})",
            )
        if found != planned:
            f.fail("checkpoints", f"checkpoint steps {found} differ from the planned steps {planned} ({TRAIN_INDEX})")
    merged = {e.get("step"): e for e in (sub.json(MERGE_INDEX) or {}).get("checkpoints", [])}
    for step in found:
        rel = contents.checkpoint_file(step)
        name = contents.model_dir_name(step)
        sha = actual.get(rel)
        if sha is None:
            continue
        m = merged.get(step)
        if m is None:
            f.fail("checkpoints", f"{rel}: {MERGE_INDEX} has no entry for step {step}")
        elif m.get("sha256") != sha:
            f.fail("checkpoints", f"{rel}: sha256 {sha} is not the file merge wrote ({m.get('sha256')})")
        scores = sub.json(f"logs/evaluate/{name}/scores.json")
        if isinstance(scores, dict) and scores.get("checkpoint_sha256") != sha:
            f.fail(
                "checkpoints",
                f"{rel}: sha256 {sha} is not the file evaluate scored "
                f"({scores.get('checkpoint_sha256')}, logs/evaluate/{name}/scores.json)",
            )
    if len(f.failed("checkpoints")) == before:
        f.ok(
            "checkpoints",
            f"{len(found)} checkpoints at steps {', '.join(map(str, found))}, evenly spaced as "
            "planned; "
            f"each is the file merge wrote and evaluate scored",
        )
    return found


def load_bundled_spec(sub: Submission, f: Findings):
    p = sub.path("hyperparams.yaml")
    if not p.is_file():
        return None
    try:
        spec = load_spec(p)
    except InputError as exc:
        f.fail("spec", f"hyperparams.yaml does not load as a run spec: {exc}")
        return None
    except (KeyError, ValueError) as exc:
        f.fail("spec", f"hyperparams.yaml: {exc}")
        return None
    mine = spec.spec_hash()
    before = len(f.failed("spec"))
    for job in layout.RUN_JOBS:
        m = sub.json(f"logs/{job}/manifest.json")
        if isinstance(m, dict) and m.get("spec_hash") != mine:
            diff = contents.spec_differences(m.get("spec") or {}, spec)
            if diff:
                f.fail(
                    "spec",
                    f"hyperparams.yaml (spec {mine}) is not the spec {job} ran with "
                    f"({m.get('spec_hash')}): " + "; ".join(diff[:5]) + " (manifest != hyperparams.yaml)",
                )
    if len(f.failed("spec")) == before:
        f.ok(
            "spec",
            f"hyperparams.yaml is the spec every job recorded (hash {mine}; keys added to the schema "
            f"since a job ran count when at their defaults)",
        )
    return spec


def check_mindformers(sub: Submission, f: Findings) -> None:
    """mindformers/: both YAMLs load with MindFormers' own MindFormerConfig; predict.yaml's checkpoint and
    tokenizer are files of this submission; every class finetune.yaml registers is in mf_extensions.py."""
    import ast
    import os

    folder = sub.path("mindformers")
    if not folder.is_dir():
        return  # check_files names the missing files
    os.environ.setdefault("LOCAL_DEFAULT_PATH", str(Path(os.environ.get("TMPDIR", "/tmp")) / "tunebox-verify"))
    from mindformers import MindFormerConfig

    configs = {}
    for name in ("finetune.yaml", "predict.yaml"):
        try:
            configs[name] = MindFormerConfig(str(folder / name))
        except Exception as exc:  # MindFormers' own loader is the judge here, whatever it raises
            f.fail("mindformers", f"mindformers/{name} does not load with MindFormerConfig: {exc}")
    predict = configs.get("predict.yaml")
    if predict is not None:
        needed = {
            "load_checkpoint": predict.load_checkpoint,
            "tokenizer_file": (predict.processor or {}).get("tokenizer", {}).get("tokenizer_file"),
        }
        for key, rel in needed.items():
            target = (folder / rel).resolve() if rel else None
            if not rel or not target.is_file() or not target.is_relative_to(sub.root.resolve()):
                f.fail("mindformers", f"mindformers/predict.yaml: {key} {rel!r} is not a file of this submission")
    finetune = configs.get("finetune.yaml")
    if finetune is not None:
        module = folder / "mf_extensions.py"
        defined = (
            {n.name for n in ast.walk(ast.parse(module.read_text(encoding="utf-8"))) if isinstance(n, ast.ClassDef)}
            if module.is_file()
            else set()
        )
        nodes = [finetune.model.arch, finetune.runner_wrapper] + list(finetune.callbacks or [])
        for node in nodes:
            ref = (node or {}).get("auto_register")
            if ref and ref.split(".")[-1] not in defined:
                f.fail(
                    "mindformers",
                    f"mindformers/finetune.yaml registers {ref}, which mindformers/mf_extensions.py does not define",
                )
    if not f.failed("mindformers"):
        f.ok(
            "mindformers",
            "finetune.yaml and predict.yaml load with MindFormerConfig; predict.yaml's checkpoint and "
            "tokenizer and finetune.yaml's registered classes are in the folder",
        )


def check_worker_logs(sub: Submission, f: Findings, spec) -> None:
    """A data-parallel run leaves one msrun log per worker; the submission must hold every one."""
    workers = getattr(getattr(spec, "train", None), "workers", 1) or 1
    if workers <= 1:
        return
    found = sorted(p.relative_to(sub.root).as_posix() for p in sub.path("logs/train").rglob("worker_*.log"))
    if len(found) < workers:
        f.fail(
            "logs",
            f"train ran {workers} workers but logs/train/ holds {len(found)} worker log(s) "
            f"({', '.join(found[:4]) or 'none'}): every worker's msrun log belongs in the submission",
        )
    else:
        f.ok("logs", f"logs/train/ holds the msrun logs of all {workers} workers")


def check_selfcheck(sub: Submission, f: Findings, results: Optional[dict]) -> None:
    import hashlib

    path = sub.path(selfcheck.FILE)
    if not path.is_file():
        return  # check_files names it
    keys = selfcheck.read_keys(path)
    if not keys:
        f.fail(
            "selfcheck",
            f"{selfcheck.FILE} is not a PNG written by bundle (no run id, commit and results checksum in it)",
        )
        return
    results_file = sub.path("results.json")
    want = {
        "tunebox.run_id": (results or {}).get("run_id"),
        "tunebox.commit": ((results or {}).get("code") or {}).get("commit") or "",
        "tunebox.results_sha256": hashlib.sha256(results_file.read_bytes()).hexdigest()
        if results_file.is_file()
        else None,
    }
    bad = [f"{k} = {keys.get(k)!r}, the folder gives {v!r}" for k, v in want.items() if keys.get(k) != v]
    if bad:
        f.fail("selfcheck", f"{selfcheck.FILE} shows another run or other results: " + "; ".join(bad))
    else:
        f.ok("selfcheck", f"{selfcheck.FILE} shows this run ({want['tunebox.run_id']}) and this results.json")


def check_logs(sub: Submission, f: Findings) -> None:
    index = sub.json(TRAIN_INDEX) or {}
    loss = sub.jsonl("logs/train/loss.jsonl")
    total = index.get("total_steps")
    if loss is None or not isinstance(total, int):
        return
    steps = [r.get("step") for r in loss]
    if steps != list(range(1, total + 1)):
        gaps = sorted(set(range(1, total + 1)) - set(steps))
        extra = len(steps) - len(set(steps))
        f.fail(
            "logs",
            f"logs/train/loss.jsonl covers {len(set(steps))} of {total} steps"
            + (f"; missing {gaps[:10]}" if gaps else "")
            + (f"; {extra} repeated" if extra else ""),
        )
    else:
        f.ok("logs", f"training log has one line for each of the {total} steps")
    check_loss_values(sub, f, loss, index)


def check_loss_values(sub: Submission, f: Findings, loss: list[dict], index: dict) -> None:
    """The losses in loss.jsonl are the ones train wrote: loss.csv (train writes both from the same rows,
    the loss to 6 decimals) and, at each checkpoint step, train's index and merge's index (copied there
    from loss.jsonl) must agree with them."""
    before = len(f.failed("logs"))
    at = {r.get("step"): r.get("loss") for r in loss}
    csv_path = sub.path("logs/train/loss.csv")
    if csv_path.is_file():
        lines = csv_path.read_text(encoding="utf-8", errors="replace").splitlines()
        header = lines[0].split(",") if lines else []
        if "step" not in header or "loss" not in header:
            f.fail("logs", "logs/train/loss.csv has no step and loss columns")
        else:
            s_col, l_col = header.index("step"), header.index("loss")
            csv_loss = {}
            for line in lines[1:]:
                cells = line.split(",")
                if len(cells) == len(header) and cells[s_col].isdigit():
                    csv_loss[int(cells[s_col])] = cells[l_col]
            differ = [
                s
                for s in sorted(set(at) | set(csv_loss))
                if not isinstance(at.get(s), (int, float)) or f"{at[s]:.6f}" != csv_loss.get(s)
            ]
            if differ:
                s = differ[0]
                f.fail(
                    "logs",
                    f"logs/train/loss.jsonl and loss.csv disagree at {len(differ)} step(s), first step {s}: "
                    f"loss {at.get(s)!r} against {csv_loss.get(s)!r}",
                )
    recorded = [
        ("logs/train/checkpoints/index.json", e.get("step"), e.get("loss"))
        for e in index.get("checkpoints") or []
        if isinstance(e, dict)
    ]
    recorded += [
        (MERGE_INDEX, e.get("step"), e.get("train_loss"))
        for e in (sub.json(MERGE_INDEX) or {}).get("checkpoints") or []
        if isinstance(e, dict)
    ]
    for where, step, value in recorded:
        if at.get(step) != value:
            f.fail("logs", f"logs/train/loss.jsonl step {step} loss {at.get(step)!r}, {where} records {value!r}")
    if len(f.failed("logs")) == before:
        f.ok("logs", f"loss.jsonl's losses match loss.csv and the {len(recorded)} checkpoint records")


def recompute_accuracies(sub: Submission, f: Findings, spec, names: list[str]) -> dict[str, dict]:
    heldout = sub.jsonl("logs/prep/heldout.jsonl") or []
    limit = spec.eval.limit
    expected_lines = [r.get("line") for r in (heldout[:limit] if limit else heldout)]
    out = {}
    for name in names:
        rel = f"logs/evaluate/{name}/predictions.jsonl"
        rows = sub.jsonl(rel)
        if rows is None:
            continue
        try:
            acc = contents.accuracy_from_predictions(rows, spec.data.format)
        except (KeyError, TypeError) as exc:
            f.fail("results", f"{rel}: a row lacks {exc} (answer and reference are needed to re-score it)")
            continue
        out[name] = acc
        if [r.get("line") for r in rows] != expected_lines:
            f.fail(
                "results",
                f"{rel} answers rows {[r.get('line') for r in rows][:8]}..., the held-out rows are "
                f"{expected_lines[:8]}... (logs/prep/heldout.jsonl)",
            )
        held = {r.get("line"): r for r in heldout}
        changed = [
            r.get("line")
            for r in rows
            if r.get("line") in held
            and (r.get("prompt"), r.get("reference"))
            != (held[r.get("line")].get("prompt"), held[r.get("line")].get("reference"))
        ]
        if changed:
            f.fail(
                "results",
                f"{rel}: the prompt or reference of line(s) {changed[:10]} differs from logs/prep/heldout.jsonl",
            )
        if acc["disagree"]:
            f.fail(
                "results",
                f"{rel}: the recorded verdict differs from the contest rule on line(s) {acc['disagree'][:10]}",
            )
        scores = sub.json(f"logs/evaluate/{name}/scores.json")
        if isinstance(scores, dict):
            for key in ("accuracy_strict", "accuracy_tolerant", "n"):
                if not contents.same_number(scores.get(key), acc[key]):
                    f.fail(
                        "results",
                        f"logs/evaluate/{name}/scores.json {key} = {scores.get(key)}, its predictions give {acc[key]}",
                    )
    return out


def check_results(sub: Submission, f: Findings, spec, steps: list[int], actual: dict[str, str]) -> Optional[dict]:
    results = sub.json("results.json")
    report = sub.json(EVALUATE_REPORT)
    if not isinstance(results, dict) or spec is None or not isinstance(report, dict):
        if sub.path("results.json").is_file() and spec is None:
            f.fail("results", "results.json cannot be checked without a loadable hyperparams.yaml")
        return results if isinstance(results, dict) else None
    before = len(f.failed("results"))
    names = ["base"] + [contents.model_dir_name(s) for s in steps]
    names = [n for n in names if sub.path(f"logs/evaluate/{n}/predictions.jsonl").is_file()]
    accuracies = recompute_accuracies(sub, f, spec, names)
    merged = {e.get("step"): e for e in (sub.json(MERGE_INDEX) or {}).get("checkpoints", [])}
    checkpoints = [
        {
            "step": s,
            "train_loss": (merged.get(s) or {}).get("train_loss"),
            "sha256": actual.get(contents.checkpoint_file(s)),
        }
        for s in steps
    ]
    try:
        expected = contents.build_results_for(
            spec,
            report=report,
            accuracies=accuracies,
            checkpoints=checkpoints,
            code=results.get("code") or {},
        )
    except (KeyError, ValueError) as exc:
        f.fail("results", f"cannot recompute the results from hyperparams.yaml and the logs: {exc}")
        return results

    sources = {
        "accuracy_strict": "the bundled predictions",
        "accuracy_tolerant": "the bundled predictions",
        "n": "the bundled predictions",
        "ratio": "hyperparams.yaml",
        "score": "accuracy and ratio",
        "score_tolerant": "accuracy and ratio",
        "sha256": "the checkpoint file",
        "train_loss": MERGE_INDEX,
        "checkpoint": "the layout",
        "step": "the checkpoint folders",
    }
    for key in (
        "run_id",
        "stage",
        "format",
        "model",
        "trainable_params",
        "total_params",
        "ratio",
        "contest_total_params",
        "contest_ratio",
        "ratio_for_score",
    ):
        if not _same(results.get(key), expected[key]):
            f.fail("results", f"results.json {key} = {results.get(key)!r}, hyperparams.yaml gives {expected[key]!r}")
    got_rows = {r.get("model"): r for r in results.get("checkpoints") or [] if isinstance(r, dict)}
    if sorted(got_rows) != sorted(r["model"] for r in expected["checkpoints"]):
        f.fail(
            "results",
            f"results.json lists checkpoints {sorted(got_rows)}, the folder has "
            f"{[r['model'] for r in expected['checkpoints']]}",
        )
    for row in expected["checkpoints"]:
        got = got_rows.get(row["model"])
        if got is None:
            continue
        for key, want in row.items():
            if not _same(got.get(key), want):
                src = sources.get(
                    key, EVALUATE_REPORT if key.startswith(("squad", "retention", "passes")) else "the logs"
                )
                f.fail("results", f"results.json {row['model']} {key} = {got.get(key)!r}, {src} give(s) {want!r}")
    if expected["base"] is not None:
        got_base = results.get("base") or {}
        for key, want in expected["base"].items():
            if not _same(got_base.get(key), want):
                f.fail("results", f"results.json base {key} = {got_base.get(key)!r}, the logs give {want!r}")
    squad_files = check_squad(sub, f, got_rows, results.get("base") or {}, names)
    chosen = results.get("chosen") or {}
    if chosen.get("model") != expected["chosen"]["model"]:
        f.fail(
            "results",
            f"results.json chooses {chosen.get('model')!r}; by its rule "
            f"({expected['chosen'].get('rule')}) "
            f"the logs choose {expected['chosen']['model']!r}",
        )
    elif (chosen.get("rule"), chosen.get("valid")) != (expected["chosen"]["rule"], expected["chosen"]["valid"]):
        f.fail(
            "results",
            f"results.json's choice says rule {chosen.get('rule')!r}, valid {chosen.get('valid')!r}; "
            f"the logs give rule {expected['chosen']['rule']!r}, valid {expected['chosen']['valid']!r}",
        )
    if len(f.failed("results")) == before:
        c = expected["chosen"]
        f.ok(
            "results",
            f"results.json matches the logs (accuracies re-scored from {len(accuracies)} prediction "
            f"files, SQuAD from {squad_files}, ratio {expected['ratio_for_score']:.8g} from "
            f"hyperparams.yaml); chosen {c['model'] or 'none'} ({c['rule']}; valid: {c['valid']})",
        )
        if c["valid"] is False:
            f.note("results", c["reason"])
    return results


def check_squad(sub: Submission, f: Findings, rows: dict[str, dict], base_row: dict, names: list[str]) -> int:
    """SQuAD F1/EM in results.json re-scored from the bundled squad_predictions.jsonl, and the
    retention verdict re-derived from them, wherever evaluate measured SQuAD."""
    measured = {}
    for name in names:
        rel = f"logs/evaluate/{name}/squad_predictions.jsonl"
        preds = sub.jsonl(rel)
        if not preds:
            continue
        try:
            measured[name] = contents.squad_from_predictions(preds)
        except (KeyError, TypeError, ValueError) as exc:
            f.fail("results", f"{rel}: cannot re-score SQuAD ({exc})")
            continue
        row = base_row if name == "base" else rows.get(name) or {}
        for metric in ("f1", "em"):
            got = row.get(f"squad_{metric}")
            if not contents.same_number(got, measured[name][metric], 1e-9):
                f.fail(
                    "results", f"results.json {name} squad_{metric} = {got!r}, {rel} gives {measured[name][metric]!r}"
                )
    if "base" not in measured:
        return len(measured)
    for name, tuned in measured.items():
        if name == "base":
            continue
        want = rules.retention_verdict(tuned, measured["base"])["passes"]
        got = (rows.get(name) or {}).get("passes_retention")
        if got is not want:
            f.fail(
                "results",
                f"results.json {name} passes_retention = {got!r}; its SQuAD F1/EM "
                f"({tuned['f1']:.2f}/{tuned['em']:.2f}) against the base's ({measured['base']['f1']:.2f}/"
                f"{measured['base']['em']:.2f}) give {want}",
            )
    return len(measured)


def _same(a, b) -> bool:
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return contents.same_number(a, b)
    return a == b


def check_environment(sub: Submission, f: Findings) -> None:
    manifests = {job: sub.json(f"logs/{job}/manifest.json") for job in layout.RUN_JOBS}
    if not all(isinstance(m, dict) for m in manifests.values()):
        return
    expected = contents.environment_record(manifests, contents.direct_requirements(sub.path("code.tar.gz")))
    got = sub.json("environment.json")
    before = len(f.failed("environment"))
    if got is not None and got != json.loads(json.dumps(expected)):
        diff = (
            contents.dict_differences(got, json.loads(json.dumps(expected)))
            if isinstance(got, dict)
            else ["not an object"]
        )
        f.fail("environment", "environment.json is not what the bundled manifests give: " + "; ".join(diff[:5]))
    md = sub.path("ENVIRONMENT.md")
    if md.is_file() and md.read_text(encoding="utf-8") != contents.render_environment(expected):
        f.fail("environment", "ENVIRONMENT.md is not what the bundled manifests give (edited by hand?)")
    if len(f.failed("environment")) == before:
        f.ok("environment", "environment.json and ENVIRONMENT.md are generated from the jobs' manifests")


def check_code(sub: Submission, f: Findings, results: Optional[dict]) -> None:
    p = sub.path("code.tar.gz")
    if not p.is_file():
        return
    try:
        with tarfile.open(p, "r:gz") as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError, EOFError) as exc:
        f.fail("code", f"code.tar.gz is not a readable tar.gz archive ({exc})")
        return
    unsafe = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
    if unsafe:
        f.fail("code", f"code.tar.gz has paths outside its folder: {unsafe[:5]}")
    if not any(n.endswith("jobs/train.py") for n in names):
        f.fail("code", f"code.tar.gz has no jobs/train.py ({len(names)} entries): not tunebox's sources")
    code = (results or {}).get("code") or {}
    if not f.failed("code"):
        f.ok("code", f"code.tar.gz holds {len(names)} entries; {code.get('note', 'source not recorded')}")


# ---- re-running the evaluation ---------------------------------------------------------------


def rerun_evaluation(
    sub: Submission, f: Findings, spec, steps: list[int], results: Optional[dict], tolerance: float
) -> None:
    """Evaluate every bundled checkpoint again from the folder alone and compare accuracies."""
    if spec is None or not sub.path("tokenizer/tokenizer.json").is_file():
        f.fail("rerun", "cannot re-run: hyperparams.yaml or tokenizer/ is missing or broken")
        return
    heldout = sub.jsonl("logs/prep/heldout.jsonl")
    if not heldout:
        f.fail("rerun", "cannot re-run: logs/prep/heldout.jsonl is missing or empty")
        return
    rows = heldout[: spec.eval.limit] if spec.eval.limit else heldout
    tok = TextTokenizer.load(sub.path("tokenizer"))
    # the limits come per checkpoint from its bundled predictions (new_token_limits), no log-probs
    task = heldout_task(rows, spec.data, tok, {"families": {}, "other_families": spec.eval.max_new_tokens})
    shape = get_model_shape(spec.model.name)
    recorded = {r.get("model"): r for r in (results or {}).get("checkpoints") or [] if isinstance(r, dict)}
    before = len(f.failed("rerun"))
    for step in steps:
        name = contents.model_dir_name(step)
        ckpt = sub.path(contents.checkpoint_file(step))
        if not ckpt.is_file():
            f.fail("rerun", f"{name}: no checkpoint to evaluate")
            continue
        limits = new_token_limits(sub, f, name, len(rows), spec.eval.max_new_tokens)
        if limits is None:
            continue
        try:
            runner = NumpyRunner.from_checkpoint(shape, ckpt, spec.eval.batch_size)
        except (InputError, RuntimeError, ValueError) as exc:
            f.fail("rerun", f"{name}: the checkpoint does not load as {spec.model.name}: {exc}")
            continue
        # evaluate's own loop: the same runner, batching and verdicts
        _, answers, verdicts, _ = answer_heldout(runner, replace(task, limits=limits), tok, desc=f"re-run {name}")
        del runner
        acc = summarize(verdicts)
        want = recorded.get(name) or {}
        for key in ("accuracy_strict", "accuracy_tolerant"):
            if want.get(key) is None or abs(acc[key] - want[key]) > tolerance:
                f.fail(
                    "rerun",
                    f"{name}: re-run {key} {acc[key]:.4f}, results.json says {want.get(key)} (tolerance {tolerance})",
                )
        bundled = sub.jsonl(f"logs/evaluate/{name}/predictions.jsonl") or []
        differ = sum(1 for a, b in zip(answers, bundled) if a != b.get("answer"))
        scores = sub.json(f"logs/evaluate/{name}/scores.json") or {}
        if differ:
            backend = scores.get("backend")
            f.note(
                "rerun",
                f"{name}: {differ} of {len(rows)} answers differ in text from the bundled predictions"
                + (
                    f" (evaluate used the {backend} backend, the re-run the numpy decoder)"
                    if backend and backend != "numpy"
                    else ""
                ),
            )
        log.info("re-run %s: strict %.4f tolerant %.4f", name, acc["accuracy_strict"], acc["accuracy_tolerant"])
    if len(f.failed("rerun")) == before:
        f.ok(
            "rerun",
            f"re-evaluated {len(steps)} checkpoints on {len(rows)} held-out rows from the folder alone: "
            f"accuracies match results.json",
        )


def new_token_limits(sub: Submission, f: Findings, name: str, n_rows: int, cap: int) -> Optional[list[int]]:
    """The new-token limit of each held-out row: what evaluate recorded per prediction (it sizes
    them per problem family, logs/evaluate/limits.json), else eval.max_new_tokens for every row."""
    preds = sub.jsonl(f"logs/evaluate/{name}/predictions.jsonl") or []
    recorded = [r.get("max_new_tokens") for r in preds]
    if len(recorded) != n_rows or any(v is None for v in recorded):
        return [cap] * n_rows
    bad = [r.get("line") for r, v in zip(preds, recorded) if not isinstance(v, int) or not 0 < v <= cap]
    if bad:
        f.fail(
            "rerun",
            f"{name}: predictions.jsonl records max_new_tokens outside 1..eval.max_new_tokens ({cap}) "
            f"on line(s) {bad[:10]}",
        )
        return None
    return recorded


# ---- predict.yaml, run by MindFormers ----------------------------------------------------------

PREDICT_NEW_TOKENS = 6  # a few greedy tokens: enough to show the same network, cheap without a KV cache


def check_predict(sub: Submission, f: Findings, spec) -> None:
    """The judge's view: mindformers/predict.yaml built by MindFormers' own builders, its checkpoint loaded
    strictly, answers the first held-out prompt as tunebox's decoder does (tunebox/submission/mf_predict.py).
    Only where MindFormers is installed; a note says so elsewhere."""
    if not mindformers_importable():
        f.note("predict", "MindFormers is not installed here: mindformers/predict.yaml was not run")
        return

    heldout = sub.jsonl("logs/prep/heldout.jsonl")
    if (
        spec is None
        or not heldout
        or not sub.path("mindformers/predict.yaml").is_file()
        or not sub.path("tokenizer/tokenizer.json").is_file()
    ):
        f.fail(
            "predict",
            "cannot run mindformers/predict.yaml: hyperparams.yaml, the held-out rows, the tokenizer "
            "or predict.yaml is missing or broken",
        )
        return
    tok = TextTokenizer.load(sub.path("tokenizer"))
    text = spec_prompt(tok, heldout[0]["prompt"], spec.data)
    ids = tok.encode(text)
    try:
        got = greedy_answer(sub.path("mindformers"), text, PREDICT_NEW_TOKENS)
    except Exception as exc:  # MindFormers is the judge here, whatever it raises
        f.fail(
            "predict", f"mindformers/predict.yaml does not run in MindFormers: {type(exc).__name__}: {str(exc)[:400]}"
        )
        return
    if got["prompt_ids"] != ids:
        f.fail(
            "predict",
            f"mindformers/predict.yaml's tokenizer encodes the first held-out prompt as "
            f"{got['prompt_ids'][:12]}..., tunebox as {ids[:12]}... (the training ids)",
        )
        return
    model = NumpyLlama.from_checkpoint(got["checkpoint"], get_model_shape(spec.model.name))
    want = tok.decode(greedy_generate(model, [ids], PREDICT_NEW_TOKENS, tok.stop_ids, tok.pad_id, progress=False)[0])
    if got["text"] != want:
        f.fail(
            "predict",
            f"MindFormers answers the first held-out prompt {got['text']!r} from predict.yaml, "
            f"tunebox's decoder {want!r}",
        )
        return
    f.ok(
        "predict",
        f"MindFormers built predict.yaml's tokenizer and model, loaded "
        f"{Path(got['checkpoint']).parent.name} "
        f"strictly and answered the first held-out prompt as tunebox does ({PREDICT_NEW_TOKENS} greedy "
        f"tokens: {got['text']!r})",
    )
