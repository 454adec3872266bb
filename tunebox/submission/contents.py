"""What jobs/bundle.py writes and jobs/verify.py checks, in one place: the submission layout, the
SHA256SUMS format, re-scoring bundled predictions, the SQuAD figures of an evaluate report, and
results.json, whose ratio, scores, retention verdicts and choice come from tunebox/contest/rules.py.

Both sides build results.json with build_results, so "consistent" means the bundle's numbers are
what the contest's rules give from the bundled logs, not what some other copy of the rules would give.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Optional

from tqdm import tqdm

from tunebox import layout
from tunebox.config import RunSpec
from tunebox.contest import rules, scoring
from tunebox.evaluation.scorecard import contest_figures, scorecard
from tunebox.model.registry import get_model_shape, lora_targets
from tunebox.training.plan import checkpoint_steps

SUBMISSION_DIR = "submission"
NUM_CHECKPOINTS = 5  # the contest asks for five evenly spaced merged checkpoints
SUMS_FILE = "SHA256SUMS"

# Files every submission has, whatever the run (per-checkpoint files come from checkpoint_files()).
FIXED_FILES = (
    "ALGORITHM.md",
    "hyperparams.yaml",
    "code.tar.gz",
    "results.json",
    "ENVIRONMENT.md",
    "environment.json",
    "selfcheck.png",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    layout.in_logs(layout.RECORD),
    layout.in_logs(layout.manifest("prep")),
    "logs/prep/stats.json",
    "logs/prep/heldout.jsonl",
    "logs/prep/rejects.jsonl",
    layout.in_logs(layout.manifest("train")),
    "logs/train/loss.jsonl",
    "logs/train/loss.csv",
    "logs/train/summary.json",
    layout.in_logs(layout.TRAIN_INDEX),
    layout.in_logs(layout.manifest("merge")),
    layout.in_logs(layout.MERGE_INDEX),
    layout.in_logs(layout.manifest("evaluate")),
    layout.in_logs(layout.EVALUATE_REPORT),
    "logs/evaluate/report.md",
    "logs/train/mindformers.yaml",
) + (
    "mindformers/finetune.yaml",
    "mindformers/predict.yaml",
    "mindformers/predict_r1.1.yaml",
    "mindformers/mf_extensions.py",
    "mindformers/README.md",
)
# What is copied from each job's folder into logs/<job>/ (never the MindRecord, LoRA or optimizer
# state: the submission holds the merged checkpoints, and everything needed to check them).
LOG_SOURCES = {
    "prep": (layout.MANIFEST, "stats.json", "heldout.jsonl", "rejects.jsonl", "preview.txt"),
    "train": (
        layout.MANIFEST,
        "loss.jsonl",
        "loss.csv",
        "summary.json",
        "checkpoints/index.json",
        "mindformers.yaml",
        "sessions.jsonl",
        "tensorboard",
    ),  # a folder: MindFormers' TensorBoard events, every file
    "merge": (layout.MANIFEST, "index.json"),
    "evaluate": None,  # every file: predictions, scores and reports are small, and whatever evaluate adds belongs here
}
# Logs copied whole, wherever they are under a job's folder: every msrun worker's and the scheduler's
# log (train/msrun/[node-K/]worker_N.log, scheduler.log) and MindFormers' log folder under the run.
LOG_PATTERNS = {"train": ("*.log", "*.log.[0-9]*")}


def training_log_candidates(train_dir: Path) -> list[Path]:
    """The training's own log files, the first worker's first: what selfcheck.png shows the tail of."""
    found = sorted({p for pat in LOG_PATTERNS["train"] for p in train_dir.rglob(pat) if p.is_file()})

    def rank(p: Path) -> tuple:
        # msrun's console of worker 0, then MindFormers' own rank-0 info.log (error.log holds errors only)
        name = p.as_posix()
        first = "worker_0." in name or "rank_0" in name
        return (not first, "scheduler" in name, "error" in p.name, "msrun" not in name, name)

    return sorted(found, key=rank)


def model_dir_name(step: int) -> str:
    """The name merge and evaluate give a checkpoint: step-000027."""
    return f"step-{step:06d}"


def checkpoint_file(step: int) -> str:
    return f"checkpoints/{model_dir_name(step)}/model.ckpt"


def checkpoint_files(step: int) -> list[str]:
    """The files a submission holds for one checkpoint: the weights and their evaluation."""
    name = model_dir_name(step)
    return [checkpoint_file(step), f"logs/evaluate/{name}/predictions.jsonl", f"logs/evaluate/{name}/scores.json"]


def expected_files(steps: Iterable[int]) -> list[str]:
    out = list(FIXED_FILES)
    for step in steps:
        out += checkpoint_files(step)
    return sorted(out)


_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_of_dir(name: str) -> Optional[int]:
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def evenly_spaced_steps(total_steps: int, k: int = NUM_CHECKPOINTS) -> list[int]:
    """The k steps train plans (tunebox.training.plan.checkpoint_steps), the contest's five by default."""
    return checkpoint_steps(total_steps, k)


# ---- SHA256SUMS -------------------------------------------------------------------------------


def sha256_with_progress(path: Path, bar: Optional[tqdm] = None, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            if bar is not None:
                bar.update(len(block))
    return h.hexdigest()


def hash_files(root: Path, rel_paths: list[str], desc: str = "sha256") -> dict[str, str]:
    """sha256 of each file, with one byte-counting progress bar (checkpoints can be tens of GB)."""
    total = sum((root / rel).stat().st_size for rel in rel_paths)
    out = {}
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, disable=total < (64 << 20)) as bar:
        for rel in rel_paths:
            out[rel] = sha256_with_progress(root / rel, bar)
    return out


def files_under(root: Path) -> list[str]:
    """Every regular file below root as a sorted relative POSIX path (symlinks count as files)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def format_sha256sums(hashes: Mapping[str, str]) -> str:
    """`sha256sum` output: '<hex>  <path>' per line, sorted by path, so `sha256sum -c SHA256SUMS`
    run inside the folder checks it too."""
    for rel in hashes:
        if "\n" in rel or "\\" in rel:
            raise ValueError(f"{rel!r}: a path with a newline or backslash cannot be listed in {SUMS_FILE}")
    return "".join(f"{hashes[rel]}  {rel}\n" for rel in sorted(hashes))


_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def parse_sha256sums(text: str) -> tuple[dict[str, str], list[str]]:
    """(path -> sha256, problems): each malformed line, absolute or '..' path and duplicate is a problem."""
    entries: dict[str, str] = {}
    problems = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _SUM_LINE.match(line)
        if not m:
            problems.append(f"{SUMS_FILE}:{lineno}: not '<64 hex digits>  <path>': {line[:100]!r}")
            continue
        sha, rel = m.groups()
        if rel.startswith("/") or ".." in Path(rel).parts:
            problems.append(f"{SUMS_FILE}:{lineno}: path {rel!r} must be relative and stay inside the submission")
            continue
        if rel in entries:
            problems.append(f"{SUMS_FILE}:{lineno}: {rel} is listed twice")
            continue
        entries[rel] = sha
    return entries, problems


# ---- accuracy from predictions ---------------------------------------------------------------


def rescore(fmt: str, answer: str, reference: str) -> tuple[bool, bool]:
    """(strict, tolerant) for one generated answer, by evaluate's rule (scoring.answer_verdict)."""
    v = scoring.answer_verdict(fmt, answer, reference)
    return v["strict"], v["tolerant"]


def accuracy_from_predictions(rows: list[dict], fmt: str) -> dict:
    """Re-score every prediction: {n, accuracy_strict, accuracy_tolerant, disagree} where
    disagree lists the lines whose recorded verdict differs from the re-scored one."""
    strict = tolerant = 0
    disagree = []
    for r in rows:
        s, t = rescore(fmt, r["answer"], r["reference"])
        strict += s
        tolerant += t
        if "strict" in r and (bool(r["strict"]), bool(r.get("tolerant", r["strict"]))) != (s, t):
            disagree.append(r.get("line"))
    n = len(rows)
    return {
        "n": n,
        "accuracy_strict": strict / n if n else None,
        "accuracy_tolerant": tolerant / n if n else None,
        "disagree": disagree,
    }


# ---- SQuAD / retention, read from an evaluate report entry -----------------------------------


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def squad_fields(entry: Optional[Mapping]) -> dict:
    """SQuAD F1/EM, their retention ratios and the pass verdict of one model in evaluate's report,
    or nulls. Accepts {"squad": {"f1", "em"}, "retention": {"f1", "em", "passes"}} and the flat
    squad_f1 / squad_em / retention_f1 / retention_em / passes_retention spellings."""
    entry = entry or {}
    squad = entry.get("squad") if isinstance(entry.get("squad"), Mapping) else {}
    ret = entry.get("retention") if isinstance(entry.get("retention"), Mapping) else {}
    passes = ret.get("passes", entry.get("passes_retention"))
    return {
        "squad_f1": _number(squad.get("f1", entry.get("squad_f1"))),
        "squad_em": _number(squad.get("em", entry.get("squad_em"))),
        "retention_f1": _number(ret.get("f1", entry.get("retention_f1"))),
        "retention_em": _number(ret.get("em", entry.get("retention_em"))),
        "passes_retention": passes if isinstance(passes, bool) else None,
    }


def squad_from_predictions(rows: list[dict]) -> dict:
    """SQuAD F1/EM (percent) re-scored from evaluate's squad_predictions.jsonl rows
    ({answer, gold: [..]}), with scoring.squad_scores."""
    scores = scoring.squad_scores([r["answer"] for r in rows], [r["gold"] for r in rows])
    return {"n": len(rows), **scores}


def evaluate_best(report: Mapping) -> Optional[str]:
    """The checkpoint evaluate's report chose (its best_checkpoint), None when it chose none."""
    best = report.get("best_checkpoint")
    return best.get("model") if isinstance(best, Mapping) else None


# ---- results -------------------------------------------------------------------------------


def build_results_for(
    spec, *, report: Mapping, accuracies: Mapping[str, Mapping], checkpoints: list[dict], code: Mapping
) -> dict:
    """build_results with the run's own settings read from its spec: what bundle writes and what verify recomputes
    from the bundled hyperparams.yaml, so that the two cannot read different keys."""
    return build_results(
        run_id=spec.run_id,
        stage=spec.stage,
        fmt=spec.data.format,
        model_name=spec.model.name,
        rank=spec.lora.rank,
        target_modules=spec.lora.target_modules,
        report=report,
        accuracies=accuracies,
        checkpoints=checkpoints,
        code=code,
    )


def build_results(
    *,
    run_id: str,
    stage: int,
    fmt: str,
    model_name: str,
    rank: int,
    target_modules: str,
    report: Mapping,
    accuracies: Mapping[str, Mapping],
    checkpoints: list[dict],
    code: Mapping,
) -> dict:
    """results.json. `accuracies` maps model name (base, step-N) -> {accuracy_strict,
    accuracy_tolerant, n}; `checkpoints` is [{step, train_loss, sha256}] in step order. SQuAD F1/EM
    come from evaluate's report; ratio, score and retention are evaluate's scorecard, the choice rules.py's."""
    params = rules.param_figures(get_model_shape(model_name), rank, target_modules)
    figures = contest_figures(stage, params)
    by_name = {e.get("model"): e for e in report.get("checkpoints") or []}
    base_squad = squad_fields(report.get("base"))
    rows, candidates = [], []
    for ck in checkpoints:
        name = model_dir_name(ck["step"])
        acc = accuracies.get(name, {})
        strict, tolerant = acc.get("accuracy_strict"), acc.get("accuracy_tolerant")
        squad = squad_fields(by_name.get(name))
        card = scorecard(figures, strict, tolerant, _squad_pair(squad), _squad_pair(base_squad))
        verdict = card["retention"]
        row = {
            "model": name,
            "step": ck["step"],
            "checkpoint": checkpoint_file(ck["step"]),
            "sha256": ck["sha256"],
            "train_loss": ck.get("train_loss"),
            "n": acc.get("n"),
            "accuracy_strict": strict,
            "accuracy_tolerant": tolerant,
            "squad_f1": squad["squad_f1"],
            "squad_em": squad["squad_em"],
            "retention_f1": verdict["f1"],
            "retention_em": verdict["em"],
            "passes_retention": verdict["passes"],
            "ratio": card["ratio"],
            "score": card["score"],
            "score_tolerant": card["score_tolerant"],
        }
        rows.append(row)
        candidates.append({**row, "retention": verdict})
    base = None
    if "base" in accuracies:
        base = {
            "model": "base",
            **{k: accuracies["base"].get(k) for k in ("n", "accuracy_strict", "accuracy_tolerant")},
            **base_squad,
        }
    return {
        "run_id": run_id,
        "stage": stage,
        "format": fmt,
        "model": model_name,
        "score_formula": f"stage {stage}: {rules.SCORE_FORMULAS[stage]}, accuracy = strict (the contest rule)",
        **params,
        "lora_targets": sorted(lora_targets(target_modules)),
        "base": base,
        "checkpoints": rows,
        "chosen": rules.choose_checkpoint(candidates),
        "retention_metric": rules.RETENTION_METRIC,
        "evaluate_best": evaluate_best(report),
        "code": dict(code),
    }


def _squad_pair(fields: Mapping) -> Optional[dict]:
    """{"f1", "em"} from squad_fields' output, or None when SQuAD was not measured."""
    if fields["squad_f1"] is None or fields["squad_em"] is None:
        return None
    return {"f1": fields["squad_f1"], "em": fields["squad_em"]}


def fence(text: str) -> str:
    """A fenced markdown block that survives backticks inside the text."""
    marker = "~~~~" if "```" in text else "```"
    return f"{marker}text\n{text}\n{marker}"


def same_number(a, b, tol: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=tol)


LOCATION_KEYS = ("runs_dir",)


def spec_differences(recorded: Mapping, spec) -> list[str]:
    """How a job's recorded spec (its manifest's "spec") differs from `spec`, a RunSpec. runs_dir
    is where a run lives, not what it is (a run moved to another disk, or mounted at /data/runs in a
    container, is the same run). A key the recorded spec lacks because the schema gained it later is
    no difference while it holds its default: the job ran with that behaviour."""

    defaults = RunSpec().to_dict()
    current = {k: v for k, v in spec.to_dict().items() if k not in LOCATION_KEYS}
    recorded = {k: v for k, v in (recorded or {}).items() if k not in LOCATION_KEYS}

    def fill(rec, cur, dflt):
        out = dict(rec)
        for key, value in cur.items():
            if key not in rec and isinstance(dflt, Mapping) and key in dflt and dflt[key] == value:
                out[key] = value
            elif isinstance(value, Mapping) and isinstance(rec.get(key), Mapping):
                out[key] = fill(rec[key], value, dflt.get(key) if isinstance(dflt, Mapping) else None)
        return out

    return dict_differences(fill(recorded, current, defaults), current)


def dict_differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts ('key: A != B')."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        dotted = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += dict_differences(va, vb, dotted + ".")
        elif va != vb:
            out.append(f"{dotted}: {va!r} != {vb!r}")
    return out


# ---- ENVIRONMENT.md / environment.json -------------------------------------------------------


def environment_of(manifest: dict) -> dict:
    """The parts of a job manifest that say what it ran on."""
    npu = manifest.get("npu") or None
    container = manifest.get("container") or None
    return {
        "hostname": manifest.get("hostname"),
        "finished": manifest.get("finished"),
        "os": (manifest.get("os") or {}).get("name"),
        "platform": (manifest.get("os") or {}).get("platform"),
        "kernel": (manifest.get("kernel") or {}).get("release"),
        "cpu": manifest.get("cpu"),
        "memory_total_bytes": (manifest.get("memory") or {}).get("total_bytes"),
        "npu": {k: v for k, v in npu.items() if k != "raw"} if isinstance(npu, dict) else None,
        "driver_version": (manifest.get("ascend") or {}).get("driver_version"),
        "cann_version": (manifest.get("ascend") or {}).get("cann_version"),
        "python": (manifest.get("python") or {}).get("version"),
        "packages": manifest.get("packages") or {},
        "container": (
            {k: container.get(k) for k in ("runtime", "image", "image_id", "pod")}
            | ({"labels": container["labels"]} if container.get("labels") else {})
        )
        if container
        else None,
        "git": manifest.get("git"),
    }


def direct_requirements(code_archive: Path) -> list[str]:
    """The package names tunebox's pyproject.toml (inside the bundled code.tar.gz) depends on directly."""
    import tarfile
    import tomllib

    try:
        with tarfile.open(code_archive) as tar:
            member = next(
                (m for m in tar.getmembers() if m.name.split("/")[-1] == "pyproject.toml" and m.name.count("/") <= 1),
                None,
            )
            data = tomllib.loads(tar.extractfile(member).read().decode("utf-8")) if member else {}
    except (OSError, tarfile.TarError, tomllib.TOMLDecodeError):
        return []
    return [
        re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].strip().lower()
        for d in data.get("project", {}).get("dependencies", [])
    ]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def on_top_of_contest_base(freeze: list[str], requirements: list[str]) -> list[dict]:
    """What this run installs on top of the contest's base environment (rules.CONTEST_STACK): the contest's
    MindSpore/MindFormers/MindPet against this run's, then tunebox's other direct dependencies, with the
    versions the train job's pip freeze recorded."""
    installed = {}
    for line in freeze:
        if "==" in line:
            name, version = line.split("==", 1)
            installed[_canonical(name)] = version.strip()
    rows = [
        {"package": p, "contest_base": rules.CONTEST_STACK[p], "this_run": installed.get(p)}
        for p in ("mindspore", "mindformers", "mindpet")
    ]
    rows += [
        {"package": p, "contest_base": None, "this_run": installed.get(_canonical(p))}
        for p in requirements
        if _canonical(p) not in ("mindspore", "mindformers", "mindpet")
    ]
    return rows


def environment_record(manifests: dict[str, dict], requirements: Optional[list[str]] = None) -> dict:
    jobs = {job: environment_of(m) for job, m in manifests.items()}
    freeze = manifests["train"].get("pip_freeze") or []
    differs = {}
    for job, m in manifests.items():
        other = m.get("pip_freeze") or []
        if job != "train" and other and set(other) != set(freeze):
            differs[job] = {
                "only_here": sorted(set(other) - set(freeze)),
                "only_in_train": sorted(set(freeze) - set(other)),
            }
    return {
        "generated_from": [layout.in_logs(layout.manifest(job)) for job in manifests] + ["code.tar.gz: pyproject.toml"],
        "jobs": jobs,
        "contest_base": dict(rules.CONTEST_STACK),
        "on_top_of_contest_base": on_top_of_contest_base(freeze, requirements or []),
        "pip_freeze": freeze,
        "pip_freeze_source": "logs/train/manifest.json",
        "pip_freeze_differs": differs,
    }


def render_environment(env: dict) -> str:
    jobs = env["jobs"]
    names = list(jobs)

    def row(label: str, get) -> str:
        return (
            f"| {label} | "
            + " | ".join(
                str(get(jobs[j]) if get(jobs[j]) not in (None, "", {}) else "-").replace("|", "/") for j in names
            )
            + " |"
        )

    def npu(e):
        n = e["npu"]
        if not n:
            return "none found (no npu-smi)"
        return (
            f"{n.get('count')} × "
            + ", ".join(sorted({d.get("name", "?") for d in n.get("devices", [])}))
            + (f" (npu-smi {n['version']})" if n.get("version") else "")
        )

    def image(e):
        c = e["container"]
        if not c:
            return "not in a container"
        name = " ".join(x for x in (c.get("image"), c.get("image_id")) if x) or "unnamed image"
        return f"{name} ({', '.join(c.get('runtime') or []) or 'container'})"

    def mem(e):
        b = e["memory_total_bytes"]
        return f"{b / 2**30:.1f} GiB" if b else None

    L = [
        "# Environment",
        "",
        "Generated by `python -m jobs.bundle` from each job's `manifest.json` (`logs/<job>/manifest.json`); "
        "`environment.json` holds the same record.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        row("host", lambda e: e["hostname"]),
        row("finished (UTC)", lambda e: e["finished"]),
        row("OS", lambda e: e["os"]),
        row("kernel", lambda e: e["kernel"]),
        row(
            "CPU",
            lambda e: (
                f"{e['cpu'].get('model')} ({e['cpu'].get('usable')} of {e['cpu'].get('count')} usable)"
                if e["cpu"]
                else None
            ),
        ),
        row("memory", mem),
        row("NPU", npu),
        row("Ascend driver", lambda e: e["driver_version"]),
        row("CANN", lambda e: e["cann_version"]),
        row("Python", lambda e: e["python"]),
    ]
    packages = sorted({p for e in jobs.values() for p in e["packages"]})
    L += [row(p, lambda e, p=p: e["packages"].get(p)) for p in packages]
    L += [
        row("image", image),
        row(
            "git commit",
            lambda e: (
                ((e["git"] or {}).get("commit") or "")[:12] + (" (dirty)" if (e["git"] or {}).get("dirty") else "")
            ),
        ),
        "",
    ]
    base = env.get("contest_base") or {}
    L += [
        "## Installed on top of the contest's base environment",
        "",
        f"The contest's base environment: Python {base.get('python')}, CANN {base.get('cann')}, MindSpore "
        f"{base.get('mindspore')}, MindFormers {base.get('mindformers')} (r1.1) with MindPet {base.get('mindpet')} "
        f"(tunebox/contest/rules.py, CONTEST_STACK, with its sources). On top of it this run needs the packages "
        f"below: the first rows replace the contest's own, the others are tunebox's direct dependencies "
        f"(pyproject.toml in code.tar.gz), at the versions the train job ran with.",
        "",
        "| package | contest base | this run |",
        "|---|---|---|",
    ]
    L += [
        f"| {r['package']} | {r['contest_base'] or '-'} | {r['this_run'] or 'not installed'} |"
        for r in env.get("on_top_of_contest_base") or []
    ]
    L += [""]
    freeze = env["pip_freeze"]
    L += [f"## pip freeze (train job, {len(freeze)} packages)", ""]
    if env["pip_freeze_differs"]:
        for job, d in env["pip_freeze_differs"].items():
            L.append(
                f"- {job} ran with a different set: only there {', '.join(d['only_here']) or '-'}; "
                f"only in train {', '.join(d['only_in_train']) or '-'}"
            )
        L.append("")
    else:
        L += ["Every job's manifest lists the same packages." if freeze else "No pip freeze was recorded.", ""]
    if freeze:
        L += [fence("\n".join(freeze)), ""]
    return "\n".join(L)
