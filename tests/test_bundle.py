"""The submission bundle and its verifier on a real tiny run: a fresh bundle verifies (re-run
included), hard links share the merged checkpoints' inodes, and tampered copies (a flipped byte, a
missing checkpoint, a stray file, an edited results.json, answers that the checkpoints do not give)
fail with messages that name the problem, all problems listed at once.

The submission as a judge sees it, on a real tiny run: selfcheck.png (run id, commit,
result table, ratio computation, retention verdict, tail of the training log) is written by bundle
and required and checked by verify; every worker's msrun log and MindFormers' log folder under the
run travel in logs/train/; and every stage recipe measures retention (the report says so loudly when
a run does not).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_tensorboard import assert_events_equal_loss_log

from conftest import (
    TINY_RECIPE,
    cannot_run,
    copy_submission,
    docker_engine,
    docker_image,
    job_env,
    keeps_90_percent,
    planned_checkpoint_steps,
    read_jsonl,
    rewrite_sums,
    run_job,
    verify_here,
)
from jobs import verify as verify_mod
from tunebox import layout
from tunebox.config import load_spec
from tunebox.contest import rules
from tunebox.submission import checks, contents, selfcheck
from tunebox.submission.algorithm import describe_rows, describe_template
from tunebox.submission.assemble import link_or_copy, training_log_tail
from tunebox.submission.code_archive import make_code_archive

# tiny, worked by hand (as in tests/test_evaluate.py): LoRA r=8 on wq (64x64) and wv (32x64) in 2 layers;
# 2 embeddings (384x64), per layer 2 norms + wq, wo (64x64) + wk, wv (32x64) + w1, w2, w3 (128x64), a final norm
TINY_TRAINABLE = 2 * (8 * (64 + 64) + 8 * (32 + 64))
TINY_TOTAL = 2 * 384 * 64 + 2 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64) + 64
TINY_RATIO = TINY_TRAINABLE / TINY_TOTAL


@pytest.fixture(scope="module")
def bundled(tiny_bundle) -> dict:
    """The shared tiny bundle (conftest.tiny_bundle) and its planned checkpoint steps."""
    return {**tiny_bundle, "steps": planned_checkpoint_steps(tiny_bundle["run_dir"])}


def verify_cli(sub: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.verify", str(sub), *args],
        capture_output=True,
        text=True,
        cwd=sub.parent,
        env=job_env(cache),
        timeout=300,
    )


def forged_and_failing(sub: Path, capsys) -> str:
    """List the edited files' new checksums (covering the tracks), run verify, which must fail (exit 1),
    and return its FAIL lines."""
    rewrite_sums(sub)
    code, fails = verify_here(sub, capsys)
    assert code == 1
    return "\n".join(fails)


# ---- a fresh bundle ----------------------------------------------------------------------------


def test_fresh_bundle_verifies_with_rerun(bundled):
    sub = bundled["sub"]
    assert bundled["stdout"].strip().splitlines()[-1] == str(sub)  # bundle prints the folder it wrote, last
    proc = verify_cli(sub, bundled["cache"], "--rerun")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for check in ("checksums", "files", "checkpoints", "spec", "logs", "results", "environment", "code", "rerun"):
        assert f"ok    {check}" in proc.stdout, f"no passing {check} line:\n{proc.stdout}"
    # SHA256SUMS lists exactly the files in the folder, in sha256sum's format
    listed, problems = contents.parse_sha256sums((sub / contents.SUMS_FILE).read_text())
    assert not problems
    assert sorted(listed) == [r for r in contents.files_under(sub) if r != contents.SUMS_FILE]
    assert set(contents.expected_files(bundled["steps"])) <= set(listed)
    if shutil.which("sha256sum"):  # the coreutils tool reads it as its own output
        check = subprocess.run(
            ["sha256sum", "--check", "--strict", "--quiet", contents.SUMS_FILE], cwd=sub, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_bundle_contents_come_from_the_run(bundled):
    sub, run = bundled["sub"], bundled["run_dir"]
    results = json.loads((sub / "results.json").read_text())
    index = json.loads((run / "train" / "checkpoints" / "index.json").read_text())
    assert [r["step"] for r in results["checkpoints"]] == index["planned"]
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert results["ratio_for_score"] == pytest.approx(TINY_RATIO, rel=1e-12)
    for row, ev in zip(results["checkpoints"], report["checkpoints"]):
        assert row["accuracy_strict"] == ev["accuracy_strict"]
        assert row["score"] == pytest.approx((1 - TINY_RATIO) * 0.3 + ev["accuracy_strict"] * 0.7, abs=1e-12)
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert results["trainable_params"] == summary["trainable_params"] == TINY_TRAINABLE
    # the rule by hand: the best (score, step) among the checkpoints keeping 90% of the base's F1 and EM
    base = results["base"]
    keep = [
        r
        for r in results["checkpoints"]
        if keeps_90_percent(r["squad_f1"], base["squad_f1"]) and keeps_90_percent(r["squad_em"], base["squad_em"])
    ]
    assert results["chosen"]["model"] == max(keep, key=lambda r: (r["accuracy_strict"], r["step"]))["model"]
    algorithm = (sub / "ALGORITHM.md").read_text()
    stats = json.loads((run / "prep" / "stats.json").read_text())
    assert f"| trained on | {stats['rows_train']} |" in algorithm
    assert f"{summary['trainable_params']:,}" in algorithm
    assert "<|im_start|>assistant" in algorithm  # the rendered prompt template
    env = json.loads((sub / "environment.json").read_text())
    manifest = json.loads((run / layout.manifest("train")).read_text())
    assert env["jobs"]["train"]["packages"]["mindspore"] == manifest["packages"]["mindspore"]
    assert env["pip_freeze"] == manifest["pip_freeze"]
    record = [json.loads(l) for l in (run / layout.RECORD).read_text().splitlines()]
    assert record[-1]["job"] == "bundle" and (run / layout.manifest("bundle")).is_file()
    with tarfile.open(sub / "code.tar.gz") as tar:
        assert "tunebox/jobs/bundle.py" in tar.getnames()


def test_checkpoints_are_hard_links_to_merge(bundled):
    for step in bundled["steps"]:
        mine = (bundled["sub"] / contents.checkpoint_file(step)).stat()
        merged = (bundled["run_dir"] / "merge" / contents.model_dir_name(step) / "model.ckpt").stat()
        assert (mine.st_dev, mine.st_ino) == (merged.st_dev, merged.st_ino)
        assert mine.st_nlink >= 2


def test_link_falls_back_to_copy_across_filesystems(tmp_path, monkeypatch, caplog):
    src = tmp_path / "a" / "model.ckpt"
    src.parent.mkdir()
    src.write_bytes(os.urandom(4096))

    def cross_device(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    with caplog.at_level(logging.WARNING, logger="tunebox.bundle"):
        assert link_or_copy(src, tmp_path / "b" / "model.ckpt") == "copy"
    dst = tmp_path / "b" / "model.ckpt"
    assert dst.read_bytes() == src.read_bytes() and dst.stat().st_ino != src.stat().st_ino
    assert "copying it instead" in caplog.text


def test_bundle_refuses_a_spec_the_run_did_not_use(bundled, tmp_path):
    runs = tmp_path / "runs"  # a copy: bundle runs in it, and the shared bundle stays as it was
    shutil.copytree(bundled["run_dir"], runs / "tiny", ignore=shutil.ignore_patterns("submission"))
    proc = run_job("bundle", TINY_RECIPE, bundled["cache"], tmp_path, f"runs_dir={runs}", "lora.alpha=32", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lora.alpha: 16 != 32" in proc.stderr


# ---- tampered copies -------------------------------------------------------------------------
# The tampered checkpoint is the plan's second, the dropped one its third (both read from the plan).


def tampered_step(steps: list[int]) -> int:
    return steps[1]


def flip_byte(sub: Path, steps: list[int]) -> None:
    ckpt = sub / contents.checkpoint_file(tampered_step(steps))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))


def drop_checkpoint(sub: Path, steps: list[int]) -> None:
    shutil.rmtree(sub / "checkpoints" / contents.model_dir_name(steps[2]))


def add_stray(sub: Path, steps: list[int]) -> None:
    (sub / "logs" / "notes.txt").write_text("added by hand\n")


def result_row(sub: Path, name: str) -> dict:
    return next(r for r in json.loads((sub / "results.json").read_text())["checkpoints"] if r["model"] == name)


def edit_results(sub: Path, steps: list[int]) -> None:
    results = json.loads((sub / "results.json").read_text())
    row = next(r for r in results["checkpoints"] if r["model"] == contents.model_dir_name(tampered_step(steps)))
    row["accuracy_strict"] = EDITED_ACCURACY if row["accuracy_strict"] != EDITED_ACCURACY else 0.125
    (sub / "results.json").write_text(json.dumps(results, indent=2))


EDITED_ACCURACY = 0.875


def edit_squad_answers(sub: Path, steps: list[int]) -> None:
    """Give one checkpoint the gold SQuAD answers: its F1/EM in results.json no longer follow."""
    f = sub / "logs" / "evaluate" / contents.model_dir_name(tampered_step(steps)) / "squad_predictions.jsonl"
    # the tiny recipe measures SQuAD (eval.squad_file): no predictions is a failure, not a case to skip
    assert f.is_file(), f"evaluate wrote no {f.name} for {f.parent.name}; the tiny recipe sets eval.squad_file"
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    f.write_text("".join(json.dumps(dict(r, answer=r["gold"][0]), ensure_ascii=False) + "\n" for r in rows))


TAMPERING = {
    "flipped byte": (flip_byte, ["{ckpt}: sha256 is", "SHA256SUMS says", "is not the file merge wrote"]),
    "missing checkpoint": (
        drop_checkpoint,
        [
            "4 checkpoints",
            "the contest asks for exactly 5",
            "missing checkpoints/{dropped}/model.ckpt",
            "checkpoints/{dropped}/model.ckpt is listed in SHA256SUMS but missing",
        ],
    ),
    "stray file": (add_stray, ["stray file logs/notes.txt: not listed in SHA256SUMS"]),
    # {acc} / {f1}: the figures the untouched bundle records for that checkpoint
    "edited results": (
        edit_results,
        [
            "results.json {name} accuracy_strict = {edited}, the bundled predictions give(s) {acc}",
            "results.json: sha256 is",
        ],
    ),
    "edited SQuAD answers": (
        edit_squad_answers,
        ["results.json {name} squad_f1 = {f1}, logs/evaluate/{name}/squad_predictions.jsonl gives 100.0"],
    ),
}


def expected_messages(messages: list[str], sub: Path, steps: list[int]) -> list[str]:
    name = contents.model_dir_name(tampered_step(steps))
    row = result_row(sub, name)
    edited = EDITED_ACCURACY if row["accuracy_strict"] != EDITED_ACCURACY else 0.125
    return [
        m.format(
            name=name,
            acc=row["accuracy_strict"],
            f1=row["squad_f1"],
            edited=edited,
            ckpt=contents.checkpoint_file(tampered_step(steps)),
            dropped=contents.model_dir_name(steps[2]),
        )
        for m in messages
    ]


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_copy_fails_with_the_right_message(bundled, tmp_path, capsys, case):
    tamper, messages = TAMPERING[case]
    sub = copy_submission(bundled["sub"], tmp_path)
    assert verify_here(sub, capsys)[0] == 0  # the copy itself is sound
    messages = expected_messages(messages, sub, bundled["steps"])
    tamper(sub, bundled["steps"])
    code, fails = verify_here(sub, capsys)
    assert code == 1
    text = "\n".join(fails)
    for message in messages:
        assert message in text, f"{case}: expected {message!r} among:\n{text}"
    if case == "stray file":
        assert len(fails) == 1, text  # a stray file is that one problem, nothing else


def test_every_problem_is_listed_not_just_the_first(bundled, tmp_path, capsys):
    sub = copy_submission(bundled["sub"], tmp_path)
    steps = bundled["steps"]
    expected = {case: expected_messages(messages, sub, steps) for case, (_, messages) in TAMPERING.items()}
    for case in expected:
        TAMPERING[case][0](sub, steps)
    code, fails = verify_here(sub, capsys)
    text = "\n".join(fails)
    assert code == 1
    for case, messages in expected.items():
        assert all(m in text for m in messages), f"{case} not reported:\n{text}"


def test_rerun_catches_answers_the_checkpoints_do_not_give(bundled, tmp_path, capsys):
    """Predictions, scores and results rewritten to agree with each other (and SHA256SUMS redone):
    every static check passes; only evaluating the checkpoints again shows the answers are not theirs."""
    sub = copy_submission(bundled["sub"], tmp_path)
    step = tampered_step(bundled["steps"])
    name = contents.model_dir_name(step)
    measured = result_row(sub, name)["accuracy_strict"]
    assert measured < 1.0, "the tiny model is not expected to answer every held-out row"
    pred_file = sub / "logs" / "evaluate" / name / "predictions.jsonl"
    rows = [json.loads(l) for l in pred_file.read_text().splitlines()]
    for r in rows:
        r.update(answer=r["reference"], strict=True, tolerant=True)
    pred_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    scores_file = sub / "logs" / "evaluate" / name / "scores.json"
    scores = json.loads(scores_file.read_text())
    scores.update(accuracy_strict=1.0, accuracy_tolerant=1.0)
    scores_file.write_text(json.dumps(scores))
    results = json.loads((sub / "results.json").read_text())
    for r in results["checkpoints"]:
        if r["model"] == name:
            r.update(
                accuracy_strict=1.0,
                accuracy_tolerant=1.0,
                score=rules.stage1_score(1.0, r["ratio"]),
                score_tolerant=rules.stage1_score(1.0, r["ratio"]),
            )
    results["chosen"].update(model=name, step=step)
    (sub / "results.json").write_text(json.dumps(results, indent=2))
    # ...and selfcheck.png redrawn from the forged results.json (verify ties the picture to that file)
    selfcheck.render(
        sub / selfcheck.FILE,
        results=results,
        results_bytes=(sub / "results.json").read_bytes(),
        rank=8,
        commit=results["code"]["commit"],
        code_note="",
        log_name="-",
        log_tail=[],
    )
    rewrite_sums(sub)

    code, fails = verify_here(sub, capsys)
    assert code == 0, fails
    code, fails = verify_here(sub, capsys, "--rerun")
    assert code == 1
    assert any(f"{name}: re-run accuracy_strict {measured:.4f}, results.json says 1.0" in l for l in fails), fails


def test_verify_bad_input_exits_2(tmp_path, capsys):
    assert verify_mod.main([str(tmp_path / "nothing-here")]) == 2
    assert "no such submission folder" in capsys.readouterr().err


# ---- a run where retention bites and the score decides ---------------------------------------
# The tiny model answers nothing right (every accuracy, F1 and EM is 0), so on its own run retention
# passes trivially and the choice is the tie-break. Here evaluate's per-model files are edited after
# the fact (as if the models had answered so), evaluate is run again (it reuses the files and redoes
# only its report step), then bundle and verify. Every expected figure is worked out below by hand.
#
# 8 held-out rows, 8 SQuAD questions; "k/8" = k answers set to the reference (math) or to the first
# gold answer (SQuAD); the other answers stay the model's own, which score 0 (checked).
#              base   1st   2nd   3rd   4th   5th checkpoint of the plan
MATH_RIGHT = [0, 2, 4, 7, 3, 1]
SQUAD_RIGHT = [5, 5, 6, 4, 5, 5]
# base SQuAD: F1 = EM = 5/8 = 62.5, the bar is 0.9 * 62.5 = 56.25. The 3rd checkpoint has 4/8 = 50.0
# (retention 50 / 62.5 = 0.8): it fails, although its accuracy 7/8 gives the highest score. The
# others keep 62.5 or 75.0 and pass; among them the 2nd has the best accuracy (4/8) and wins. Score:
# (1 - ratio) * 0.3 + accuracy * 0.7 (stage 1), ratio = TINY_RATIO.


def _rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_model_answer(ev: Path, name: str, math_right: int, squad_right: int) -> None:
    """The first math_right held-out answers become the references, the first squad_right SQuAD
    answers the gold ones; scores.json and squad.json are rewritten with the figures by hand."""
    preds = read_jsonl(ev / name / "predictions.jsonl")
    knows_nothing = not any(p["strict"] or p["tolerant"] for p in preds)
    assert len(preds) == 8 and knows_nothing, "expected a model that knows nothing"
    per_family: dict[str, list[int]] = {}
    for i, p in enumerate(preds):
        right = i < math_right
        if right:
            p.update(answer=p["reference"], strict=True, tolerant=True)
        per_family.setdefault(p["family"], []).append(int(right))
    _rewrite_jsonl(ev / name / "predictions.jsonl", preds)
    scores = json.loads((ev / name / "scores.json").read_text())
    scores.update(
        accuracy_strict=math_right / 8,
        accuracy_tolerant=math_right / 8,
        per_family={
            f: {"n": len(v), "strict": sum(v) / len(v), "tolerant": sum(v) / len(v)} for f, v in per_family.items()
        },
    )
    (ev / name / "scores.json").write_text(json.dumps(scores, indent=2))

    squad = read_jsonl(ev / name / "squad_predictions.jsonl")
    assert len(squad) == 8 and not any(r["f1"] for r in squad)
    for i, r in enumerate(squad[:squad_right]):
        r.update(answer=r["gold"][0], f1=1.0, em=True)
    _rewrite_jsonl(ev / name / "squad_predictions.jsonl", squad)
    figures = json.loads((ev / name / "squad.json").read_text())
    figures.update(f1=100 * squad_right / 8, em=100 * squad_right / 8)
    (ev / name / "squad.json").write_text(json.dumps(figures, indent=2))


def edited_run(tiny_run, work: Path, squad_right: list[int]) -> dict:
    """A copy of the tiny run whose models answer MATH_RIGHT / squad_right right, re-evaluated and bundled."""
    runs = work / "runs"
    run = runs / "tiny"
    shutil.copytree(tiny_run["run_dir"], run, ignore=shutil.ignore_patterns("mindformers", "submission"))
    steps = planned_checkpoint_steps(run)
    names = ["base"] + [contents.model_dir_name(s) for s in steps]
    ev = run / "evaluate"
    for name, m, q in zip(names, MATH_RIGHT, squad_right):
        make_model_answer(ev, name, m, q)
    edited = {f: f.read_bytes() for name in names for f in sorted((ev / name).iterdir())}
    run_job("evaluate", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={runs}")
    # evaluate reused every edited file (it generated nothing again)
    assert {f: f.read_bytes() for f in edited} == edited
    run_job("bundle", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={runs}")
    return {
        "run": run,
        "sub": run / "submission",
        "steps": steps,
        "names": names,
        "work": work,
        "cache": tiny_run["cache"],
    }


@pytest.fixture(scope="module")
def decided(tiny_run, tmp_path_factory) -> dict:
    return edited_run(tiny_run, tmp_path_factory.mktemp("decided"), SQUAD_RIGHT)


# Every checkpoint answers 4 of 8 SQuAD questions: 50.0 < 0.9 * 62.5 = 56.25, so none is valid.
SQUAD_RIGHT_NONE_PASS = [5, 4, 4, 4, 4, 4]


@pytest.fixture(scope="module")
def none_pass(tiny_run, tmp_path_factory) -> dict:
    return edited_run(tiny_run, tmp_path_factory.mktemp("nonepass"), SQUAD_RIGHT_NONE_PASS)


def _hand_score(right: int) -> float:
    return (1 - TINY_RATIO) * 0.3 + right / 8 * 0.7


def test_evaluate_report_fails_the_third_and_chooses_the_second(decided):
    names = decided["names"]
    report = json.loads((decided["run"] / "evaluate" / "report.json").read_text())
    assert report["base"]["squad"]["f1"] == report["base"]["squad"]["em"] == 62.5
    cps = {c["model"]: c for c in report["checkpoints"]}
    assert list(cps) == names[1:]
    for name, right, squad in zip(names[1:], MATH_RIGHT[1:], SQUAD_RIGHT[1:]):
        c = cps[name]
        assert c["accuracy_strict"] == right / 8
        assert c["score"] == pytest.approx(_hand_score(right), abs=1e-12)
        assert c["retention"]["f1"] == pytest.approx(squad / 5) and c["retention"]["em"] == pytest.approx(squad / 5)
        assert c["retention"]["passes"] is (squad >= 5)
    second, third = names[2], names[3]
    assert cps[third]["retention"]["failed"] == ["f1", "em"]
    assert report["best_by_accuracy"] == third
    assert report["best_checkpoint"]["model"] == second and report["best_checkpoint"]["step"] == decided["steps"][1]
    assert report["best_checkpoint"]["rule"] == "score among retention passes"
    assert "among the 4 of 5 checkpoints" in report["best_checkpoint"]["reason"]
    why = report["verdicts"]
    assert set(why) == set(names[1:]) - {second}
    assert why[third] == (
        "failed retention: F1 50.00 vs base 62.50 = 0.800 < 0.90; EM 50.00 vs base 62.50 = 0.800 "
        f"< 0.90 (its score {_hand_score(7):.4f} is higher than the chosen one's)"
    )
    for name, right in ((names[1], 2), (names[4], 3), (names[5], 1)):
        assert why[name].startswith(f"lower score: {_hand_score(right):.4f} < {_hand_score(4):.4f}")
    md = (decided["run"] / "evaluate" / "report.md").read_text()
    assert f"**Chosen: {second}**" in md and f"| {second} ✅ |" in md
    row3 = next(l for l in md.splitlines() if l.startswith(f"| {third} |"))
    assert row3.endswith("| 0.800 / 0.800 | %.4f | **fail** |" % _hand_score(7))


def test_bundle_results_follow_the_edited_run(decided):
    names = decided["names"]
    results = json.loads((decided["sub"] / "results.json").read_text())
    assert results["base"]["squad_f1"] == 62.5 and results["base"]["accuracy_strict"] == 0
    rows = {r["model"]: r for r in results["checkpoints"]}
    for name, right, squad in zip(names[1:], MATH_RIGHT[1:], SQUAD_RIGHT[1:]):
        r = rows[name]
        assert (r["accuracy_strict"], r["squad_f1"], r["squad_em"]) == (right / 8, 12.5 * squad, 12.5 * squad)
        assert r["score"] == pytest.approx(_hand_score(right), abs=1e-12)
        assert r["passes_retention"] is (squad >= 5)
    assert results["chosen"]["model"] == names[2] and results["chosen"]["step"] == decided["steps"][1]
    assert results["chosen"]["rule"] == "score among retention passes"
    assert results["evaluate_best"] == names[2]


def test_verify_accepts_the_edited_run_and_catches_a_wrong_choice(decided, tmp_path, capsys):
    names = decided["names"]
    code, fails = verify_here(decided["sub"], capsys)
    assert code == 0, fails
    sub = tmp_path / "submission"
    shutil.copytree(decided["sub"], sub)
    results = json.loads((sub / "results.json").read_text())
    # the highest score wins if retention is ignored: submit the 3rd and say it passes
    results["chosen"].update(model=names[3], step=decided["steps"][2])
    next(r for r in results["checkpoints"] if r["model"] == names[3])["passes_retention"] = True
    (sub / "results.json").write_text(json.dumps(results, indent=2))
    text = forged_and_failing(sub, capsys)
    assert (
        f"results.json {names[3]} passes_retention = True; its SQuAD F1/EM (50.00/50.00) against the base's "
        f"(62.50/62.50) give False"
    ) in text
    assert (
        f"results.json chooses {names[3]!r}; by its rule (score among retention passes) the logs choose "
        f"{names[2]!r}" in text
    )


# ---- stage 2: a multiple-choice run, bundled and verified --------------------------------------
# The tiny pipeline on 40 MMLU rows (6 held out), stage 2, no SQuAD. The last checkpoint's answers are
# then edited as below (the tiny model names no letter on its own), evaluate redoes its report, and
# bundle writes results.json with stage 2's score. Each answer's letter is read here by hand.
MMLU = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mcq" / "mmlu-subset.jsonl"
MCQ_SETS = [
    "data.format=mcq",
    f"data.train_file={MMLU}",
    "data.max_rows=40",
    "data.heldout_rows=6",
    "data.seq_length=512",
    "stage=2",
    "eval.squad_rows=0",
]
OTHER = {"A": "B", "B": "C", "C": "D", "D": "A"}
# (answer text, is it the reference letter): the contest reads the first explicit phrase
MCQ_ANSWERS = [
    ("The right option is {ref}.", True),
    ("答案是：{ref}", True),
    ("The right option is {other}.", False),
    ("({other})", False),
    ("I am not sure.", False),
    ("The answer is {other}, not {ref}", False),
]


@pytest.fixture(scope="module")
def mcq_bundled(tiny_cache, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("stage2")
    runs = work / "runs"
    sets = [f"runs_dir={runs}", *MCQ_SETS]
    for job in ("prep", "train", "merge", "evaluate"):
        run_job(job, TINY_RECIPE, tiny_cache, work, *sets)
    run = runs / "tiny"
    steps = planned_checkpoint_steps(run, TINY_RECIPE, *MCQ_SETS)
    last = contents.model_dir_name(steps[-1])
    preds = read_jsonl(run / "evaluate" / last / "predictions.jsonl")
    assert len(preds) == 6 and not any(p["strict"] for p in preds), "expected a model that names no right letter"
    for p, (text, right) in zip(preds, MCQ_ANSWERS):
        p.update(answer=text.format(ref=p["reference"], other=OTHER[p["reference"]]), strict=right, tolerant=right)
    _rewrite_jsonl(run / "evaluate" / last / "predictions.jsonl", preds)
    scores = json.loads((run / "evaluate" / last / "scores.json").read_text())
    scores.update(accuracy_strict=2 / 6, accuracy_tolerant=2 / 6)
    (run / "evaluate" / last / "scores.json").write_text(json.dumps(scores, indent=2))
    run_job("evaluate", TINY_RECIPE, tiny_cache, work, *sets)
    run_job("bundle", TINY_RECIPE, tiny_cache, work, *sets)
    return {"run": run, "sub": run / "submission", "steps": steps, "last": last}


def test_stage2_bundle_scores_by_the_stage2_rule(mcq_bundled):
    results = json.loads((mcq_bundled["sub"] / "results.json").read_text())
    assert (results["stage"], results["format"]) == (2, "mcq")
    assert results["score_formula"].startswith("stage 2: (1 - 10 * ratio) * 0.3 + accuracy * 0.7")
    assert results["ratio_for_score"] == pytest.approx(TINY_RATIO, rel=1e-12)
    rows = {r["model"]: r for r in results["checkpoints"]}
    assert list(rows) == [contents.model_dir_name(s) for s in mcq_bundled["steps"]]
    for name, r in rows.items():
        acc = 2 / 6 if name == mcq_bundled["last"] else 0.0
        assert r["accuracy_strict"] == pytest.approx(acc, abs=1e-12)
        # stage 2 by hand: the ratio weighs ten times
        assert r["score"] == pytest.approx((1 - 10 * TINY_RATIO) * 0.3 + acc * 0.7, abs=1e-12)
        assert r["passes_retention"] is None
    # no SQuAD, so retention is unknown: the best score is chosen, its validity unknown
    assert results["chosen"]["model"] == mcq_bundled["last"]
    assert results["chosen"]["rule"] == "score (retention not measured)" and results["chosen"]["valid"] is None
    report = json.loads((mcq_bundled["run"] / "evaluate" / "report.json").read_text())
    assert report["checkpoints"][-1]["score"] == pytest.approx(rows[mcq_bundled["last"]]["score"], abs=1e-12)


def test_verify_rescores_the_mcq_letters(mcq_bundled, tmp_path, capsys):
    code, fails = verify_here(mcq_bundled["sub"], capsys)
    assert code == 0, fails
    sub = tmp_path / "submission"
    shutil.copytree(mcq_bundled["sub"], sub)
    name = mcq_bundled["last"]
    f = sub / "logs" / "evaluate" / name / "predictions.jsonl"
    preds = read_jsonl(f)
    # the Chinese answer now names another letter; its recorded verdict (right) no longer holds
    preds[1]["answer"] = f"答案是：{OTHER[preds[1]['reference']]}"
    _rewrite_jsonl(f, preds)
    text = forged_and_failing(sub, capsys)
    assert (
        f"logs/evaluate/{name}/predictions.jsonl: the recorded verdict differs from the contest rule on "
        f"line(s) [{preds[1]['line']}]"
    ) in text
    assert f"logs/evaluate/{name}/scores.json accuracy_strict = {2 / 6}, its predictions give {1 / 6}" in text
    assert f"results.json {name} accuracy_strict = {2 / 6}, the bundled predictions give(s) {1 / 6}" in text


# ---- code.tar.gz -----------------------------------------------------------------------------

# ---- evaluate, bundle and verify agree on the choice -----------------------------------------
# For the same run, evaluate's report, bundle's results.json and verify's recomputation from the
# bundled logs must name the same checkpoint, rule and validity. Expected values by hand (checkpoint
# index in step order, or None), from MATH_RIGHT / SQUAD_RIGHT*, and MCQ_ANSWERS:
AGREEMENT = {
    # the 3rd keeps 50 / 62.5 = 0.8 and fails; of the rest the 2nd answers most math (4 of 8)
    "one fails": ("decided", 1, "score among retention passes", True, 2),
    # all keep 50 / 62.5: nothing is valid, nothing chosen; the 3rd (7 of 8) has the highest score
    "none passes": ("none_pass", None, "none passes retention", False, 2),
    # stage 2, no SQuAD: only the last checkpoint names right letters (2 of 6)
    "retention unknown": ("mcq_bundled", -1, "score (retention not measured)", None, -1),
}


@pytest.mark.parametrize("case", list(AGREEMENT))
def test_evaluate_bundle_and_verify_agree_on_the_choice(case, request, tmp_path, capsys):
    fixture, pick, rule, valid, top = AGREEMENT[case]
    run = request.getfixturevalue(fixture)
    checkpoints = [contents.model_dir_name(s) for s in run["steps"]]
    want = {
        "model": None if pick is None else checkpoints[pick],
        "step": None if pick is None else run["steps"][pick],
        "rule": rule,
        "valid": valid,
        "highest_score": checkpoints[top],
    }
    by_evaluate = json.loads((run["run"] / "evaluate" / "report.json").read_text())["best_checkpoint"]
    by_bundle = json.loads((run["sub"] / "results.json").read_text())["chosen"]
    assert {k: by_evaluate.get(k) for k in want} == want
    assert {k: by_bundle.get(k) for k in want} == want
    code = verify_mod.main([str(run["sub"])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"chosen {want['model'] or 'none'} ({rule}; valid: {valid})" in out
    if valid is False:
        assert "note  results     NO VALID CHECKPOINT" in out

    # verify recomputes the choice: results.json naming another checkpoint as a valid choice fails
    sub = tmp_path / "submission"
    shutil.copytree(run["sub"], sub)
    results = json.loads((sub / "results.json").read_text())
    other = checkpoints[top] if top != pick else checkpoints[0]
    results["chosen"].update(model=other, step=contents.step_of_dir(other), valid=True)
    (sub / "results.json").write_text(json.dumps(results, indent=2))
    rewrite_sums(sub)
    code, fails = verify_here(sub, capsys)
    assert (
        code == 1
        and f"results.json chooses {other!r}; by its rule ({rule}) the logs choose {want['model']!r}"
        in "\n".join(fails)
    )


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_code_archive_clean_commit_dirty_tree_and_no_git(tmp_path):
    if shutil.which("git") is None:
        cannot_run("needs git")
    repo = tmp_path / "repo"
    (repo / "jobs").mkdir(parents=True)
    (repo / "jobs" / "train.py").write_text("print('v1')\n")
    (repo / ".gitignore").write_text("/runs/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v1")
    commit = _git(repo, "rev-parse", "HEAD")
    (repo / "jobs" / "train.py").write_text("print('v2, uncommitted')\n")
    (repo / "jobs" / "new.py").write_text("# untracked\n")
    (repo / "runs").mkdir()
    (repo / "runs" / "big.ckpt").write_bytes(b"\0" * 100)

    def members(archive: Path) -> dict[str, bytes]:
        with tarfile.open(archive) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    clean = make_code_archive({"commit": commit, "dirty": False}, tmp_path / "clean.tar.gz", root=repo)
    assert clean["source"] == "git archive"
    assert members(tmp_path / "clean.tar.gz")["tunebox/jobs/train.py"] == b"print('v1')\n"  # the commit, not the tree

    dirty = make_code_archive({"commit": commit, "dirty": True}, tmp_path / "dirty.tar.gz", root=repo)
    got = members(tmp_path / "dirty.tar.gz")
    assert dirty["source"] == "working tree" and "uncommitted changes" in dirty["note"]
    assert got["tunebox/jobs/train.py"] == b"print('v2, uncommitted')\n" and "tunebox/jobs/new.py" in got
    assert not any("runs/" in n for n in got)  # ignored by .gitignore

    shutil.rmtree(repo / ".git")
    nogit = make_code_archive(None, tmp_path / "nogit.tar.gz", root=repo)
    assert nogit["source"] == "working tree" and "git was not available" in nogit["note"]
    assert "tunebox/jobs/new.py" in members(tmp_path / "nogit.tar.gz")
    assert not any("runs/" in n for n in members(tmp_path / "nogit.tar.gz"))


# ---- reading evaluate's report ------------------------------------------------------------


def test_squad_fields_read_nested_and_flat_report_entries():
    nested = contents.squad_fields(
        {"squad": {"f1": 55.0, "em": 40.0}, "retention": {"f1": 0.92, "em": 0.905, "passes": True}}
    )
    flat = contents.squad_fields(
        {"squad_f1": 55.0, "squad_em": 40.0, "retention_f1": 0.92, "retention_em": 0.905, "passes_retention": True}
    )
    assert (
        nested
        == flat
        == {"squad_f1": 55.0, "squad_em": 40.0, "retention_f1": 0.92, "retention_em": 0.905, "passes_retention": True}
    )
    assert set(contents.squad_fields({}).values()) == {None}


# ---- inside a container ----------------------------------------------------------------------

IMAGE = os.environ.get("TUNEBOX_VERIFY_IMAGE", "tunebox:cpu-ms2.9")


@pytest.mark.docker
def test_verify_inside_image(bundled, capsys):
    docker_image(docker_engine(), IMAGE, "invoke image.build --stack cpu-ms2.9")
    code = verify_mod.main([str(bundled["sub"]), "--image", IMAGE])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"ok    image       inside {IMAGE}" in out and "| ok    rerun" in out


def test_algorithm_writes_a_text_template_on_one_line_and_the_packed_fill():
    """A template with newlines stays one code span (its newlines written \\n); with train.packing the
    rows' fill is the packed one, not prep's unpacked padding."""
    from types import SimpleNamespace

    text = describe_template(SimpleNamespace(template="<|im_start|>user\n{problem}<|im_end|>\n", system_prompt=None))
    assert "\n" not in text and "`<|im_start|>user\\n{problem}<|im_end|>\\n`" in text
    assert "`Be brief.`" in describe_template(SimpleNamespace(template="chat", system_prompt="Be brief."))
    stats = {
        "tokens_per_row": {"50": 69, "90": 90, "99": 91, "100": 91},
        "answer_tokens_per_row_mean": 33.4,
        "padding_fraction": 0.711,
    }
    packed = describe_rows(
        stats,
        {
            "samples": 8000,
            "rows": 2650,
            "width": 257,
            "fill_before": 0.2886,
            "fill_after": 0.8712,
            "max_samples_per_row": 4,
        },
    )
    assert "8,000 rows into 2,650 rows of 257 tokens, 87.1% of them filled" in packed and "71.1" not in packed
    assert "padding 71.1% of the training tensor" in describe_rows(stats, None)


# ---- the submission as a judge sees it: selfcheck.png, every worker's log, retention -----------

REPO = Path(__file__).resolve().parents[1]
WORKER_LOGS = {
    "msrun/worker_0.log": "step 1 loss 2.5\nworker 0 last line\n",
    "msrun/worker_1.log": "step 1 loss 2.6\nworker 1 last line\n",
    "msrun/node-1/worker_2.log": "step 1 loss 2.7\nworker 2 (node 1) last line\n",
    "msrun/scheduler.log": "Cluster is successfully initialized\n",
    "output/log/rank_0/info.log": "[INFO] MindFormers rank 0\n",
}


@pytest.fixture(scope="module")
def bundled_with_worker_logs(tiny_run, tmp_path_factory) -> dict:
    """A copy of the shared tiny run with msrun-style worker logs and a MindFormers log folder added
    under train/ (the tiny run is single-process), bundled through the CLI."""
    work = tmp_path_factory.mktemp("clusterbundle")
    runs = work / "runs"
    shutil.copytree(tiny_run["run_dir"], runs / "tiny", ignore=shutil.ignore_patterns("mindformers", "submission"))
    for rel, text in WORKER_LOGS.items():
        path = runs / "tiny" / "train" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    run_job("bundle", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={runs}")
    return {"sub": runs / "tiny" / "submission", "run_dir": runs / "tiny", "cache": tiny_run["cache"]}


def test_selfcheck_png_shows_this_run_and_verify_accepts_it(bundled_with_worker_logs, capsys):
    sub = bundled_with_worker_logs["sub"]
    png = sub / selfcheck.FILE
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= selfcheck.WIDTH and im.height > 300
    results = json.loads((sub / "results.json").read_text())
    keys = selfcheck.read_keys(png)
    assert keys == {
        "tunebox.run_id": "tiny",
        "tunebox.commit": results["code"]["commit"] or "",
        "tunebox.results_sha256": hashlib.sha256((sub / "results.json").read_bytes()).hexdigest(),
    }
    assert selfcheck.FILE in (sub / contents.SUMS_FILE).read_text()
    code, fails = verify_here(sub, capsys)
    assert (code, fails) == (0, [])


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def expected_table(results: dict) -> list[list[str]]:
    """The self-check table as the picture should show it, written here from results.json's fields (not
    with selfcheck's code): percentages to 0.1, SQuAD to 0.01, retention ratios to 0.001, the chosen
    checkpoint starred."""
    rows = [
        [
            "model",
            "step",
            "train loss",
            "acc strict",
            "acc tolerant",
            "SQuAD F1",
            "SQuAD EM",
            "retention F1/EM",
            "retention",
            "score",
        ]
    ]
    base = results["base"]
    rows.append(
        [
            "base",
            "-",
            "-",
            _pct(base["accuracy_strict"]),
            _pct(base["accuracy_tolerant"]),
            _num(base["squad_f1"], ".2f"),
            _num(base["squad_em"], ".2f"),
            "1 / 1",
            "",
            "-",
        ]
    )
    for r in results["checkpoints"]:
        rows.append(
            [
                r["model"] + (" *" if r["model"] == results["chosen"]["model"] else ""),
                str(r["step"]),
                _num(r["train_loss"], ".4f"),
                _pct(r["accuracy_strict"]),
                _pct(r["accuracy_tolerant"]),
                _num(r["squad_f1"], ".2f"),
                _num(r["squad_em"], ".2f"),
                f"{_num(r['retention_f1'], '.3f')} / {_num(r['retention_em'], '.3f')}",
                {True: "pass", False: "FAIL", None: "not measured"}[r["passes_retention"]],
                f"{r['score']:.4f}",
            ]
        )
    return rows


def expected_ratio_lines(results: dict) -> list[str]:
    """tiny: LoRA r=8 on wq and wv; the contest has no nominal total for it."""
    return [
        f"trainable = LoRA r=8 on wq, wv = {results['trainable_params']:,} parameters",
        f"exact ratio = {results['trainable_params']:,} / {results['total_params']:,} = {results['ratio']:.9f}",
    ]


def expected_verdict(results: dict) -> tuple[str, bool]:
    passing = sum(r["passes_retention"] is True for r in results["checkpoints"])
    n = len(results["checkpoints"])
    return (
        f"SQuAD retention measured: {passing} of {n} checkpoints pass (F1 and EM >= 90% of base)"
        + ("; NONE is valid under the contest rule" if not passing else ""),
        not passing,
    )


def test_selfcheck_table_and_ratio_come_from_results(bundled_with_worker_logs):
    results = json.loads((bundled_with_worker_logs["sub"] / "results.json").read_text())
    assert selfcheck.result_table(results) == expected_table(results)
    ratio = "\n".join(selfcheck.ratio_lines(results, 8))
    for line in expected_ratio_lines(results):
        assert line in ratio


def test_selfcheck_png_shows_the_table_ratio_verdict_and_log_tail(bundled_with_worker_logs, tmp_path):
    """What the picture shows, read from the matplotlib figure selfcheck draws (the text of every line and
    table cell) against expectations written here; and the bundle's PNG is that figure, rasterized by
    matplotlib's own savefig."""
    import io

    import numpy as np
    from matplotlib.colors import to_hex

    sub = bundled_with_worker_logs["sub"]
    results = json.loads((sub / "results.json").read_text())
    name, tail = training_log_tail(bundled_with_worker_logs["run_dir"])
    assert name == "logs/train/msrun/worker_0.log"  # the first worker's msrun log (WORKER_LOGS above)
    fig = selfcheck.figure(
        results=results,
        rank=8,
        commit=results["code"]["commit"],
        code_note=results["code"]["note"],
        log_name=name,
        log_tail=tail,
    )
    ax = fig.axes[0]
    lines = [t.get_text() for t in ax.texts]
    assert lines[0] == "tunebox self-check: tiny"
    cells = ax.tables[0].get_celld()
    table = expected_table(results)
    assert [[cells[r, c].get_text().get_text() for c in range(len(table[0]))] for r in range(len(table))] == table
    joined = " ".join(lines)
    for line in expected_ratio_lines(results):  # wrapped over lines: joined, the same text
        assert line in joined
    verdict, warn = expected_verdict(results)
    shown = [t for t in ax.texts if t.get_text() and verdict.startswith(t.get_text())]
    assert shown and to_hex(shown[0].get_color()) == ("#b00020" if warn else "#1b5e20")
    assert "training log: logs/train/msrun/worker_0.log (last 2 lines)" in lines
    assert lines[-2:] == ["step 1 loss 2.5", "worker 0 last line"]
    # the bundle's PNG is this figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    with Image.open(sub / selfcheck.FILE) as a, Image.open(buf) as b:
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_verify_requires_selfcheck_png(bundled_with_worker_logs, tmp_path, capsys):
    sub = copy_submission(bundled_with_worker_logs["sub"], tmp_path)
    (sub / selfcheck.FILE).unlink()
    rewrite_sums(sub)
    code, fails = verify_here(sub, capsys)
    assert code == 1 and any("missing selfcheck.png" in f for f in fails)


def test_verify_refuses_a_selfcheck_of_other_results(bundled_with_worker_logs, tmp_path, capsys):
    sub = copy_submission(bundled_with_worker_logs["sub"], tmp_path)
    other = tmp_path / "other.png"
    Image.new("RGB", (50, 50), "white").save(other)
    shutil.copyfile(other, sub / selfcheck.FILE)  # a picture, but not bundle's
    rewrite_sums(sub)
    code, fails = verify_here(sub, capsys)
    assert code == 1 and any("not a PNG written by bundle" in f for f in fails)

    sub2 = copy_submission(bundled_with_worker_logs["sub"], tmp_path / "b")
    results = json.loads((sub2 / "results.json").read_text())
    shutil.copyfile(sub2 / selfcheck.FILE, tmp_path / "keep.png")
    results["run_id"] = "someone-else"
    (sub2 / "results.json").write_text(json.dumps(results))
    rewrite_sums(sub2)
    code, fails = verify_here(sub2, capsys)
    assert code == 1 and any("shows another run or other results" in f for f in fails)


def test_every_worker_log_and_mindformers_log_folder_is_in_the_bundle(bundled_with_worker_logs):
    logs = bundled_with_worker_logs["sub"] / "logs" / "train"
    for rel, text in WORKER_LOGS.items():
        assert (logs / rel).read_text() == text
    name, tail = training_log_tail(bundled_with_worker_logs["run_dir"])
    assert name == "logs/train/msrun/worker_0.log" and tail[-1] == "worker 0 last line"


def test_bundle_carries_the_tensorboard_events_of_the_loss_log(bundled_with_worker_logs):
    """logs/train/tensorboard/ holds train's event files: TensorBoard pointed at the submission shows the
    curves logs/train/loss.jsonl lists."""

    train, logs = bundled_with_worker_logs["run_dir"] / "train", bundled_with_worker_logs["sub"] / "logs" / "train"
    events = contents.files_under(train / "tensorboard")
    assert events and contents.files_under(logs / "tensorboard") == events
    assert all((logs / "tensorboard" / e).read_bytes() == (train / "tensorboard" / e).read_bytes() for e in events)
    assert_events_equal_loss_log(logs)
    listed = (bundled_with_worker_logs["sub"] / contents.SUMS_FILE).read_text()
    assert all(f"logs/train/tensorboard/{e}" in listed for e in events)


def test_verify_wants_one_log_per_worker(bundled_with_worker_logs, tmp_path):
    sub = copy_submission(bundled_with_worker_logs["sub"], tmp_path)
    spec = load_spec(TINY_RECIPE, ["train.workers=3", "train.batch_size=3"])
    f = checks.Findings()
    checks.check_worker_logs(checks.Submission(sub, f), f, spec)
    assert f.failed("logs") == []
    (sub / "logs" / "train" / "msrun" / "worker_1.log").unlink()
    f = checks.Findings()
    checks.check_worker_logs(checks.Submission(sub, f), f, spec)
    assert any("holds 2 worker log" in m for m in f.failed("logs"))


def test_single_process_run_shows_mindformers_own_log(tiny_run):
    name, tail = training_log_tail(tiny_run["run_dir"])
    assert name == "logs/train/log/rank_0/info.log" and any("Training Over" in line for line in tail)


def test_report_says_loudly_when_retention_was_not_measured():
    rows = [{"model": "step-000010", "step": 10, "passes_retention": None}]
    text, warn = selfcheck.retention_line({"checkpoints": rows})
    assert warn and "NOT measured" in text
    text, warn = selfcheck.retention_line({"checkpoints": [{**rows[0], "passes_retention": True}]})
    assert not warn and "1 of 1 checkpoints pass" in text


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_every_recipe_measures_retention(recipe):
    spec = load_spec(REPO / "recipes" / recipe)
    assert spec.eval.squad_file, f"{recipe} sets no eval.squad_file: its checkpoint choice would skip retention"
    assert spec.resolve(spec.eval.squad_file).is_file() and spec.eval.squad_rows > 0
    assert yaml.safe_load((REPO / "recipes" / recipe).read_text())["eval"]["squad_file"] == spec.eval.squad_file


def test_algorithm_md_states_the_retention_verdict(bundled_with_worker_logs):
    text = (bundled_with_worker_logs["sub"] / "ALGORITHM.md").read_text()
    results = json.loads((bundled_with_worker_logs["sub"] / "results.json").read_text())
    line, unknown = selfcheck.retention_line(results)
    assert not unknown and f"{line}." in text.splitlines()
