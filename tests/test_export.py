"""invoke export: the exported folders, loaded by transformers and PEFT (the independent reference), are
the model tunebox trained and judged. For the tiny run: the prompt ids, every position's logits (the
numpy decoder's forward on the merged checkpoint, to 1e-4 where the LoRA moves them by ~1) and the greedy
answers evaluate wrote; for SmolLM2 (slow): a short real run's adapter answers contest prompts as the
numpy decoder does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY_RECIPE, cannot_run, job_env, read_jsonl, run_job
from tunebox.config import load_spec
from tunebox.data.prompts import spec_prompt
from tunebox.evaluation.decode import NumpyLlama
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer

LOCAL = REPO / "recipes" / "local-smollm2.yaml"


def hf_stack():
    """torch, transformers, peft (the test extra has them)."""
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        cannot_run(f"{exc}: pip install -e '.[test]' brings torch (CPU), transformers and peft")
    return torch, transformers, peft


def export(recipe: Path, cache: Path, cwd: Path, *args: str, overrides=(), check=True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.export", "--config", str(recipe), *args]
    for ov in overrides:
        cmd += ["--set", ov]
    proc = subprocess.run(cmd, cwd=cwd, env=job_env(cache), capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def load_hf(folder: Path):
    torch, transformers, peft = hf_stack()
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base), str(folder))
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    return model.eval(), transformers.AutoTokenizer.from_pretrained(str(folder))


def hf_answers(folder: Path, problems: list[str], max_new_tokens: list[int]) -> tuple[list[list[int]], list[str]]:
    """Prompt ids (the exported chat template) and greedy answers (generation_config's stop tokens)."""
    torch, _, _ = hf_stack()
    model, tok = load_hf(folder)
    ids, answers = [], []
    for problem, limit in zip(problems, max_new_tokens):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": problem}], add_generation_prompt=True, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=limit, do_sample=False
            )
        ids.append(prompt[0].tolist())
        answers.append(tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True))
    return ids, answers


def tunebox_prompt_ids(spec, problems: list[str]) -> list[list[int]]:

    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    return [tok.encode(spec_prompt(tok, p, spec.data)) for p in problems]


@pytest.fixture(scope="module")
def tiny_exports(tiny_run):
    run = tiny_run["run_dir"]
    args = (f"runs_dir={tiny_run['runs']}",)
    chosen = json.loads((run / "evaluate" / "report.json").read_text())["best_checkpoint"]["step"]
    for fmt in ("hf", "peft"):
        export(TINY_RECIPE, tiny_run["cache"], tiny_run["work"], "--format", fmt, overrides=args)
    return {
        "run": run,
        "step": chosen,
        "args": args,
        "hf": run / "export" / f"hf-step-{chosen:06d}",
        "peft": run / "export" / f"peft-step-{chosen:06d}",
    }


@pytest.mark.parametrize("fmt", ["hf", "peft"])
def test_tiny_export_is_the_judged_model(tiny_exports, fmt):
    """Mutants that fail here: lora_alpha written as r (scaling 1 instead of alpha/r; peft); lora_A holding
    B transposed (peft); gate_proj/up_proj swapped on the way to HF names (hf)."""

    torch, _, _ = hf_stack()
    run, step = tiny_exports["run"], tiny_exports["step"]
    spec = load_spec(TINY_RECIPE, list(tiny_exports["args"]))
    preds = read_jsonl(run / "evaluate" / f"step-{step:06d}" / "predictions.jsonl")
    problems = [p["prompt"] for p in preds]
    ids, answers = hf_answers(tiny_exports[fmt], problems, [p["max_new_tokens"] for p in preds])
    assert ids == tunebox_prompt_ids(spec, problems)
    assert answers == [p["answer"] for p in preds]

    model, _ = load_hf(tiny_exports[fmt])
    merged = NumpyLlama.from_checkpoint(run / "merge" / f"step-{step:06d}" / "model.ckpt", get_model_shape("tiny"))
    for seq in ids[:3]:
        tokens = np.asarray([seq])
        with torch.no_grad():
            hf_logits = model(input_ids=torch.from_numpy(tokens)).logits[0].numpy()
        ours = merged.forward(tokens, np.arange(len(seq))[None], np.ones(tokens.shape, bool))[0]
        assert np.abs(hf_logits - ours).max() < 1e-4


def test_export_base_and_a_text_template(tiny_run, tmp_path):
    """--step 0 exports the base model; a text template with quotes, Jinja's own braces, a backslash,
    newlines and non-ASCII comes back from transformers' apply_chat_template exactly as tunebox renders it.
    Mutants that fail: the text after the problem dropped; the recipe's text pasted into the Jinja
    template unescaped; the folder left 0700 (mkdtemp's mode). (repr() for the literals instead of JSON
    passes: Jinja reads both alike.)"""

    _, transformers, _ = hf_stack()
    template = 'Q "1" {{x}} {% \\ 数学 🙂:\n{problem}\n\nA:'
    args = (
        f"runs_dir={tiny_run['runs']}",
        f"data.template={json.dumps(template, ensure_ascii=False)}",
    )  # --set reads YAML
    out = tmp_path / "base"
    export(
        TINY_RECIPE,
        tiny_run["cache"],
        tiny_run["work"],
        "--format",
        "hf",
        "--step",
        "0",
        "--out",
        str(out),
        overrides=args,
    )
    spec = load_spec(TINY_RECIPE, list(args))
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    problem = "What is {a} + 'b'?\n第二行"
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=False
    )
    ours = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    assert rendered == spec_prompt(ours, problem, spec.data)
    assert out.stat().st_mode & 0o777 == 0o755  # a server running as another user can read it
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 2


def test_export_refuses_what_is_not_there(tiny_run):
    args = (f"runs_dir={tiny_run['runs']}",)
    bad = export(
        TINY_RECIPE, tiny_run["cache"], tiny_run["work"], "--format", "hf", "--step", "999", overrides=args, check=False
    )
    assert bad.returncode == 2 and "no LoRA checkpoint at step 999" in bad.stderr and "index.json" in bad.stderr
    base = export(
        TINY_RECIPE, tiny_run["cache"], tiny_run["work"], "--format", "peft", "--step", "0", overrides=args, check=False
    )
    assert base.returncode == 2 and "--format hf" in base.stderr


@pytest.mark.slow
def test_smollm2_adapter_answers_as_the_decoder(tmp_path):
    """A 5-step SmolLM2 run; its PEFT adapter on transformers gives the greedy answers tunebox's numpy decoder
    gives (through `jobs.chat`, the LoRA folded into the base in memory) on a handful of contest prompts.
    Mutant that fails: lora_alpha written as r."""
    hf_stack()
    cache = Path(os.environ.get("TUNEBOX_CACHE") or os.path.expanduser("~/.cache/tunebox"))
    runs = tmp_path / "runs"
    args = [
        f"runs_dir={runs}",
        "data.generate=--rows 600 --mix add=1,sub=1,mul=1,div=1 --seed 14",
        "data.sample_rows=400",
        "data.heldout_rows=8",
        "data.heldout_file_rows=8",
        "train.max_steps=5",
        "train.lr=2.0e-3",
    ]
    for job in ("prep", "train"):
        run_job(job, LOCAL, cache, tmp_path, *args, timeout=1800)
    index = runs / "local-smollm2" / "train" / "checkpoints" / "index.json"
    step = json.loads(index.read_text())["checkpoints"][-1]["step"]
    export(LOCAL, cache, tmp_path, "--format", "peft", "--step", str(step), overrides=args)
    rows = read_jsonl(REPO.parent / "shared" / "data" / "math" / "contest-sample.jsonl")[:6]
    problems = [" ".join(r["problem"].split()) for r in rows]  # one line each, for chat's stdin
    _, answers = hf_answers(runs / "local-smollm2" / "export" / f"peft-step-{step:06d}", problems, [24] * len(problems))
    chat = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.chat",
            "--config",
            str(LOCAL),
            "--step",
            str(step),
            "--max-new-tokens",
            "24",
            *sum((["--set", a] for a in args), []),
        ],
        input="".join(p + "\n" for p in problems),
        cwd=tmp_path,
        env=job_env(cache),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert chat.stdout == "".join(a + "\n" for a in answers)
