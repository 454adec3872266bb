"""Issue 14's data features in prep: answer formats in the training samples, family keep/drop lists,
per-family caps and oversampling with stats before and after, a second held-out file never trained on,
and the prompt template that prep and evaluate share."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import jobs.prep
from conftest import MATH_SAMPLE, REPO, TINY_RECIPE
from tunebox.cli import run_job as run_job_inprocess
from tunebox.contest.scoring import math_family
from tunebox.data import answers, prompts
from tunebox.data.samples import IGNORE, read_mindrecord
from tunebox.data.tokenizer import build_byte_tokenizer
from tunebox.evaluation.loop import load_heldout
from tunebox.io import InputError
from tunebox.spec_checks import load_checked_spec as load_spec  # with the checks across subjects


def prep_here(tmp_path: Path, cache: Path, monkeypatch, capsys, *overrides: str) -> tuple[int, str, Path]:
    monkeypatch.setenv("TUNEBOX_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    args = [
        "--config",
        str(TINY_RECIPE),
        "--set",
        f"runs_dir={tmp_path / 'runs'}",
        "--set",
        "data.max_rows=400",
        "--set",
        "data.seq_length=600",
        "--set",
        "data.heldout_rows=20",
    ]
    for ov in overrides:
        args += ["--set", ov]
    capsys.readouterr()
    code = run_job_inprocess("prep", jobs.prep.__doc__, jobs.prep.main, argv=args)
    return code, capsys.readouterr().err, tmp_path / "runs" / "tiny" / "prep"


def trained_samples(out: Path) -> list[tuple[str, str]]:
    """(prompt text, answer text) of every training sample, decoded with the tiny byte tokenizer."""
    tok = build_byte_tokenizer()
    ids, labels = read_mindrecord(out / "train.mindrecord")
    rows = []
    for a, b in zip(ids, labels):
        at = np.flatnonzero(b != IGNORE)
        rows.append(
            (
                tok.decode(a[: at[0]].tolist(), skip_special_tokens=False),
                tok.decode(b[at].tolist(), skip_special_tokens=False),
            )
        )
    return rows


def test_cot_alpaca_and_family_policy_reach_the_training_samples(tmp_path, tiny_cache, monkeypatch, capsys):
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        "data.answer_format={mul: cot, div: cot}",
        "data.template=alpaca",
        "data.families=[add, sub, mul, div, power]",
        "data.drop_families=[power]",
        'data.balance={add: 5, div: "x2"}',
    )
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    policy = stats["family_policy"]
    rows = policy["rows"]
    assert set(rows) == {"add", "sub", "mul", "div"}
    assert policy["left_out"]["power"] > 0 and "sqrt" in policy["left_out"] and "power" not in rows
    assert rows["add"]["train"] == 5 < rows["add"]["train_before_balance"]
    assert rows["div"]["train"] == 2 * rows["div"]["train_before_balance"]
    assert rows["mul"]["train"] == rows["mul"]["train_before_balance"]
    samples = trained_samples(out)
    assert len(samples) == stats["rows_train"] == sum(r["train"] for r in rows.values()) - stats["rows_too_long"]
    by_family = Counter()
    source = {
        json.loads(l)["problem"].strip(): json.loads(l)["solution"].strip()
        for l in MATH_SAMPLE.read_text(encoding="utf-8").splitlines()
        if l.strip()
    }
    for prompt, answer in samples:
        assert prompt.endswith("\n\n### Response:") and "<|im_start|>" not in prompt
        problem = prompt[: -len("\n\n### Response:")]
        family = math_family(problem)
        by_family[family] += 1
        answer = answer.removesuffix("<|im_end|>")
        fmt = answers.parse_format("cot" if family in ("mul", "div") else "direct")
        assert answer == answers.render_answer(problem, source[problem], fmt, family)
        if family in ("mul", "div"):
            assert "\n" in answer  # a chain, not the one-line label
    assert by_family["div"] == rows["div"]["train"] and by_family["add"] == 5
    heldout = [json.loads(l) for l in (out / "heldout.jsonl").read_text().splitlines()]
    assert {math_family(r["prompt"]) for r in heldout} <= {"add", "sub", "mul", "div"}
    preview = (out / "preview.txt").read_text()
    assert "[cot]  <- in use" in preview and "[rounded:2]" in preview
    # evaluate prompts the held-out rows with the same template
    spec = load_spec(TINY_RECIPE, [f"runs_dir={tmp_path / 'runs'}", "data.template=alpaca"])
    task = load_heldout(spec.run_dir, spec.data, spec.eval, build_byte_tokenizer())
    tok = build_byte_tokenizer()
    assert [tok.decode(p, skip_special_tokens=False) for p in task.prompts] == [
        r["prompt"] + "\n\n### Response:" for r in heldout
    ]
    # new-token limits follow the longest cot answer of the family (longer than any direct label)
    assert task.limits_info["families"]["mul"]["longest_answer_tokens"] > 60


def test_heldout_file_rows_are_evaluated_and_never_trained_on(tmp_path, tiny_cache, monkeypatch, capsys):
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        f"data.heldout_file={MATH_SAMPLE}",
        "data.heldout_file_rows=30",
        "data.families=[add, sub]",
    )
    assert code == 0, err
    heldout = [json.loads(l) for l in (out / "heldout.jsonl").read_text().splitlines()]
    from_file = [r for r in heldout if r["source"] == "file"]
    assert len(from_file) == 30 and all(math_family(r["prompt"]) in ("add", "sub") for r in from_file)
    assert [r["line"] for r in from_file] == sorted(r["line"] for r in from_file)
    trained = {p.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0] for p, _ in trained_samples(out)}
    assert not trained & {r["prompt"] for r in from_file}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["removed"]["in_heldout_file"] > 0
    assert stats["family_policy"]["heldout_file"]["rows"] == 30


def test_prompt_templates_and_spec_errors(tmp_path):
    tok = build_byte_tokenizer()
    assert prompts.render_prompt(tok, "1 + 1", "alpaca") == "1 + 1\n\n### Response:"
    assert prompts.render_prompt(tok, "\\frac{1}{2}", "Q: {problem}\nA:") == "Q: \\frac{1}{2}\nA:"
    assert prompts.render_prompt(tok, "1 + 1", "chat", "sys") == tok.chat_prompt("1 + 1", "sys")
    with pytest.raises(ValueError, match="problem"):
        prompts.check_template("no placeholder")
    for override, words in (
        ("data.template=plain", "data.template"),
        ("data.answer_format=cots", "answer_format"),
        ("data.families=[add, pow]", "unknown family 'pow'"),
        ('data.balance={add: "3x"}', "repeat factor"),
        ("data.families=[add]", None),
    ):
        if words is None:
            with pytest.raises(InputError, match="no family"):
                load_spec(TINY_RECIPE, [override, "data.drop_families=[add]"])
            continue
        with pytest.raises(InputError, match=words):
            load_spec(TINY_RECIPE, [override])
    spec = load_spec(TINY_RECIPE, ["data.answer_format={mul: cot, '*': rounded:2}", 'data.balance={"*": x3}'])
    assert spec.data.answer_format == {"mul": "cot", "*": "rounded:2"}


def test_data_generate_writes_the_rows_once_under_the_run(tmp_path, tiny_cache, monkeypatch, capsys):
    gen = "--rows 300 --mix add=1,mul=1 --seed 5 --workers 1"
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        f"data.generate={gen}",
        "data.max_rows=null",
        f"data.heldout_file={MATH_SAMPLE}",
        "data.families=[add, mul]",
    )
    assert code == 0, err
    generated = tmp_path / "runs" / "tiny" / "generated"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["source"] == str(generated) and stats["rows_kept"] == 300
    assert set(stats["families"]) == {"add", "mul"}
    stamp = (generated / "generate.json").stat().st_mtime_ns
    code, err, out = prep_here(
        tmp_path,
        tiny_cache,
        monkeypatch,
        capsys,
        f"data.generate={gen}",
        "data.max_rows=null",
        f"data.heldout_file={MATH_SAMPLE}",
        "data.families=[add, mul]",
    )
    assert code == 0 and (generated / "generate.json").stat().st_mtime_ns == stamp  # not generated again


def test_help_shows_each_new_key_with_its_docstring():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "jobs.prep", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    ).stdout
    for key, words in (
        ("data.answer_format", "Goat-style"),
        ("data.template", "alpaca"),
        ("data.balance", "oversampling"),
        ("data.heldout_file", "reported separately"),
        ("data.generate", "jobs.generate"),
        ("eval.squad_min_new_tokens", "min_new_tokens"),
    ):
        block = re.split(r"\n  (?=\S)", out.split(f"  {key} ", 1)[1], maxsplit=1)[0]
        assert words in " ".join(block.split()), (key, block)


def test_a_tokenizer_that_pads_with_another_id_than_the_model_is_refused(tmp_path, tiny_cache, monkeypatch, capsys):
    """prep pads the rows with the tokenizer's pad; train packs them and MindFormers masks them by the model's
    pad_token_id (the tiny registry model's is 0). A model.tokenizer whose tokenizer_config.json names another
    pad token stops prep before it writes a row, naming that file. The tiny tokenizer's own copy passes.
    Mutants: prep without check_pad_id; check_pad_id comparing with `==` (refuses the good one)."""
    own = tmp_path / "own-tokenizer"
    own.mkdir()
    (own / "tokenizer.json").write_bytes((tiny_cache / "models" / "tiny" / "tokenizer.json").read_bytes())
    config = dict(build_byte_tokenizer().config)
    assert config["pad_token"] == "<pad>"  # the byte tokenizer's first special token: id 0, the model's pad
    (own / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    code, err, out = prep_here(tmp_path, tiny_cache, monkeypatch, capsys, f"model.tokenizer={own / 'tokenizer.json'}")
    assert code == 0, err
    config["pad_token"] = config["eos_token"]  # a common choice, and not the model's pad
    (own / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    code, err, _ = prep_here(
        tmp_path, tiny_cache, monkeypatch, capsys, f"model.tokenizer={own / 'tokenizer.json'}", "run_id=other"
    )
    assert code == 2, err
    assert str(own / "tokenizer_config.json") in err and "pad_token_id is 0" in err
    assert not (tmp_path / "runs" / "other" / "prep").exists()
