"""evaluate: greedy answers for the held-out rows, scored by the contest rule, for the base model
and every merged checkpoint.

Outputs, under runs/<run_id>/evaluate/:
  <model>/predictions.jsonl   one line per held-out row: prompt, answer, reference, verdicts
  <model>/scores.json         accuracy (strict and tolerant), per family, timing
  report.json, report.md      base vs each checkpoint, side by side
  manifest.json

Generation backend (eval.backend): `numpy` is tunebox's batched greedy decoder with a KV cache
(jobs/core/decode.py), used on CPU because MindFormers' generate() does not run there;
`mindformers` is MindFormers' own generate() (the path on Ascend). `auto` picks by train.device.
Resumable: a model whose scores.json matches its checkpoint's sha256 is not evaluated again.
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

from .core.cli import run_job
from .core.config import RunSpec
from .core.data import load_tokenizer
from .core.io import InputError, atomic_write_json, atomic_write_text, sha256_file
from .core.manifest import write_job_manifest
from .core.models import ModelSpec, get_model_spec

log = logging.getLogger("tunebox.evaluate")


# ---- scoring per data format -------------------------------------------------------------

def score_row(fmt: str, prediction: str, row: dict) -> dict:
    """Verdicts for one answer. math: the contest rule (strict) and the documented tolerance;
    mcq: the extracted letter equals the reference letter (both verdicts the same)."""
    from .core import scoring

    if fmt == "math":
        # the base model does not stop where a tuned one does: score the answer, not what follows it
        s = scoring.score_math(scoring.trim_generation(prediction), row["reference"])
        return {"strict": bool(s["strict"]), "tolerant": bool(s["tolerant"]), "extracted": s.get("pred"),
                "family": scoring.math_family(row["prompt"])}
    letter = scoring.extract_choice_letter(prediction)
    ok = letter == row["reference"]
    return {"strict": ok, "tolerant": ok, "extracted": letter, "family": (row.get("meta") or {}).get("subject") or "mcq"}


def summarize(scored: list[dict]) -> dict:
    n = len(scored)
    fam: dict[str, list[dict]] = defaultdict(list)
    for r in scored:
        fam[r["family"]].append(r)
    return {"n": n,
            "accuracy_strict": sum(r["strict"] for r in scored) / n if n else 0.0,
            "accuracy_tolerant": sum(r["tolerant"] for r in scored) / n if n else 0.0,
            "per_family": {f: {"n": len(rs), "strict": sum(r["strict"] for r in rs) / len(rs),
                               "tolerant": sum(r["tolerant"] for r in rs) / len(rs)} for f, rs in sorted(fam.items())}}


# ---- generation backends -------------------------------------------------------------------

def numpy_generator(mspec: ModelSpec, ckpt: Path, batch_size: int) -> Callable:
    from .core.decode import NumpyLlama, greedy_generate

    model = NumpyLlama.from_checkpoint(ckpt, mspec)

    def generate(prompts: list[list[int]], max_new: int, stop_ids: list[int], pad_id: int) -> list[list[int]]:
        return greedy_generate(model, prompts, max_new, stop_ids, pad_id, batch_size=batch_size)
    return generate


def mindformers_generator(mspec: ModelSpec, ckpt: Path, spec: RunSpec) -> Callable:
    """MindFormers' generate() with its incremental (KV cache) inference: the Ascend path."""
    import numpy as np
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM

    from .core import mf
    from .core.models import llama_config_kwargs

    mf.setup_device(spec.train.device, "graph", output_dir=spec.run_dir)
    kwargs = llama_config_kwargs(mspec, seq_length=spec.data.seq_length + spec.eval.max_new_tokens,
                                 batch_size=spec.eval.batch_size, dtype=spec.train.dtype, use_past=True)
    net = LlamaForCausalLM(LlamaConfig(**kwargs))
    mf.load_weights(net, ckpt)
    net.set_train(False)

    def generate(prompts, max_new, stop_ids, pad_id):
        out = []
        for lo in range(0, len(prompts), spec.eval.batch_size):
            chunk = prompts[lo:lo + spec.eval.batch_size]
            res = net.generate(chunk, max_new_tokens=max_new, do_sample=False, eos_token_id=stop_ids,
                               pad_token_id=pad_id)
            for p, r in zip(chunk, res):
                new = list(np.asarray(r)[len(p):])
                cut = next((i for i, t in enumerate(new) if t in stop_ids), len(new))
                out.append([int(t) for t in new[:cut]])
        return out
    return generate


def pick_backend(spec: RunSpec) -> str:
    if spec.eval.backend != "auto":
        return spec.eval.backend
    return "numpy" if spec.train.device == "CPU" else "mindformers"


# ---- the job -------------------------------------------------------------------------------

def models_to_evaluate(spec: RunSpec) -> list[dict]:
    from .core.weights import ensure_model

    models = []
    if spec.eval.base:
        base = spec.resolve(spec.model.checkpoint) or ensure_model(spec.model.name) / "model.ckpt"
        models.append({"name": "base", "step": 0, "checkpoint": base, "train_loss": None})
    index_file = spec.job_dir("merge") / "index.json"
    if not index_file.exists():
        raise InputError(f"{index_file} not found: run merge first")
    merged = json.loads(index_file.read_text())["checkpoints"]
    if spec.eval.checkpoints == "last":
        merged = merged[-1:]
    for e in merged:
        models.append({"name": f"step-{e['step']:06d}", "step": e["step"], "train_loss": e.get("train_loss"),
                       "checkpoint": index_file.parent / e["file"], "sha256": e.get("sha256")})
    return models


def evaluate(spec: RunSpec) -> Path:
    heldout_file = spec.job_dir("prep") / "heldout.jsonl"
    if not heldout_file.exists():
        raise InputError(f"{heldout_file} not found: run prep first")
    rows = [json.loads(l) for l in heldout_file.read_text(encoding="utf-8").splitlines() if l.strip()]
    if spec.eval.limit:
        rows = rows[:spec.eval.limit]
    tok = load_tokenizer(spec)
    prompts = [tok.encode(tok.chat_prompt(r["prompt"], spec.data.system_prompt)) for r in rows]
    mspec = get_model_spec(spec.model.name)
    backend = pick_backend(spec)
    out = spec.job_dir("evaluate")
    results = []
    for m in models_to_evaluate(spec):
        mdir = out / m["name"]
        scores_file = mdir / "scores.json"
        sha = m.get("sha256") or sha256_file(m["checkpoint"])
        if scores_file.exists():
            prev = json.loads(scores_file.read_text())
            if prev.get("checkpoint_sha256") == sha and prev.get("n") == len(rows) and prev.get("backend") == backend:
                log.info("%s: already evaluated (%s)", m["name"], scores_file)
                results.append(prev)
                continue
        log.info("%s: generating %d answers with the %s backend", m["name"], len(rows), backend)
        t0 = time.time()
        gen = (numpy_generator(mspec, m["checkpoint"], spec.eval.batch_size) if backend == "numpy"
               else mindformers_generator(mspec, m["checkpoint"], spec))
        outputs = gen(prompts, spec.eval.max_new_tokens, tok.stop_ids, tok.pad_id)
        seconds = time.time() - t0
        scored, lines = [], []
        for r, ids in zip(rows, outputs):
            text = tok.decode(ids)
            verdict = score_row(spec.data.format, text, r)
            scored.append(verdict)
            lines.append(json.dumps({"line": r["line"], "prompt": r["prompt"], "answer": text,
                                     "reference": r["reference"], **verdict, "new_tokens": len(ids)},
                                    ensure_ascii=False))
        atomic_write_text(mdir / "predictions.jsonl", "\n".join(lines) + "\n")
        summary = {"model": m["name"], "step": m["step"], "train_loss": m["train_loss"],
                   "checkpoint": str(m["checkpoint"]), "checkpoint_sha256": sha, "backend": backend,
                   "seconds": round(seconds, 2), "new_tokens": sum(len(o) for o in outputs), **summarize(scored)}
        atomic_write_json(scores_file, summary)
        log.info("%s: accuracy %.3f strict, %.3f tolerant (%d rows, %.0f s)", m["name"],
                 summary["accuracy_strict"], summary["accuracy_tolerant"], len(rows), seconds)
        results.append(summary)
    report = write_report(spec, out, results)
    write_job_manifest(out, "evaluate", spec, inputs={"heldout": heldout_file},
                       outputs={"report": out / "report.json"}, extra={"backend": backend, "rows": len(rows)})
    log.info("report: %s", out / "report.md")
    return report


def write_report(spec: RunSpec, out: Path, results: list[dict]) -> Path:
    base = next((r for r in results if r["model"] == "base"), None)
    tuned = [r for r in results if r["model"] != "base"]
    best = max(tuned, key=lambda r: (r["accuracy_strict"], r["step"])) if tuned else None
    report = {"run_id": spec.run_id, "model": spec.model.name, "format": spec.data.format,
              "heldout_rows": results[0]["n"] if results else 0, "base": base, "checkpoints": tuned,
              "best_by_accuracy": best["model"] if best else None}
    atomic_write_json(out / "report.json", report)
    lines = [f"# Evaluation report: {spec.run_id}", "",
             f"Model `{spec.model.name}`, {report['heldout_rows']} held-out rows of `{spec.data.train_file}`, "
             f"greedy decoding, at most {spec.eval.max_new_tokens} new tokens. Strict = the contest rule (the number "
             "in the answer equals the reference number); tolerant = the documented tolerance (docs/CONTEST_RULES.md).", "",
             "| model | step | train loss | accuracy (strict) | accuracy (tolerant) | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        loss = f"{r['train_loss']:.4f}" if r.get("train_loss") is not None else "-"
        lines.append(f"| {r['model']} | {r['step']} | {loss} | {r['accuracy_strict']:.3f} | "
                     f"{r['accuracy_tolerant']:.3f} | {r['seconds']:.0f} |")
    families = sorted({f for r in results for f in r["per_family"]})
    lines += ["", "## Per family (strict accuracy, n rows)", "",
              "| family | n | " + " | ".join(r["model"] for r in results) + " |",
              "|---|---:|" + "---:|" * len(results)]
    for f in families:
        n = next(r["per_family"][f]["n"] for r in results if f in r["per_family"])
        cells = [f"{r['per_family'][f]['strict']:.2f}" if f in r["per_family"] else "-" for r in results]
        lines.append(f"| {f} | {n} | " + " | ".join(cells) + " |")
    if best:
        lines += ["", f"Best checkpoint by strict accuracy: **{best['model']}** ({best['accuracy_strict']:.3f})"
                  + (f" vs base {base['accuracy_strict']:.3f}." if base else ".")]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.json"


def main(spec: RunSpec, args) -> None:
    evaluate(spec)


if __name__ == "__main__":
    raise SystemExit(run_job("evaluate", __doc__, main))
