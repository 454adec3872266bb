"""The submission bundle and its verifier on a real tiny run: a fresh bundle verifies (re-run
included), hard links share the merged checkpoints' inodes, and tampered copies (a flipped byte, a
missing checkpoint, a stray file, an edited results.json, answers that the checkpoints do not give)
fail with messages that name the problem, all problems listed at once."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, job_env, run_job

from jobs import verify as verify_mod
from jobs.bundle import link_or_copy, make_code_archive
from jobs.core import bundle_lib as bl
from jobs.core import scoring


@pytest.fixture(scope="module")
def bundled(tiny_run, tmp_path_factory) -> dict:
    """A copy of the shared tiny run (other tests read its record.jsonl), bundled through the CLI."""
    work = tmp_path_factory.mktemp("bundle")
    runs = work / "runs"
    shutil.copytree(tiny_run["run_dir"], runs / "tiny", ignore=shutil.ignore_patterns("mindformers", "submission"))
    proc = run_job("bundle", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={runs}")
    sub = runs / "tiny" / "submission"
    assert proc.stdout.strip().splitlines()[-1] == str(sub)
    return {"sub": sub, "run_dir": runs / "tiny", "cache": tiny_run["cache"], "work": work}


def verify_cli(sub: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.verify", str(sub), *args], capture_output=True, text=True,
                          cwd=sub.parent, env=job_env(cache), timeout=300)


def verify_here(sub: Path, capsys, *args: str) -> tuple[int, list[str]]:
    """Run verify's CLI in this process: (exit code, the FAIL lines)."""
    code = verify_mod.main([str(sub), *args])
    out = capsys.readouterr().out
    return code, [l.strip() for l in out.splitlines() if l.strip().startswith("FAIL")]


def tampered_copy(bundled: dict, tmp_path: Path) -> Path:
    dst = tmp_path / "submission"
    shutil.copytree(bundled["sub"], dst)  # copies data: the original's hard links are never touched
    return dst


def rewrite_sums(sub: Path) -> None:
    """What someone covering their tracks would do: list the edited files' new checksums."""
    rels = [r for r in bl.files_under(sub) if r != bl.SUMS_FILE]
    (sub / bl.SUMS_FILE).write_text(bl.format_sha256sums(bl.hash_files(sub, rels)))


# ---- a fresh bundle ----------------------------------------------------------------------------

def test_fresh_bundle_verifies_with_rerun(bundled):
    sub = bundled["sub"]
    proc = verify_cli(sub, bundled["cache"], "--rerun")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for check in ("checksums", "files", "checkpoints", "spec", "logs", "results", "environment", "code", "rerun"):
        assert f"ok    {check}" in proc.stdout, f"no passing {check} line:\n{proc.stdout}"
    # SHA256SUMS lists exactly the files in the folder, in sha256sum's format
    listed, problems = bl.parse_sha256sums((sub / bl.SUMS_FILE).read_text())
    assert not problems
    assert sorted(listed) == [r for r in bl.files_under(sub) if r != bl.SUMS_FILE]
    assert set(bl.expected_files(bl.evenly_spaced_steps(27))) <= set(listed)
    if shutil.which("sha256sum"):  # the coreutils tool reads it as its own output
        check = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", bl.SUMS_FILE], cwd=sub,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_bundle_contents_come_from_the_run(bundled):
    sub, run = bundled["sub"], bundled["run_dir"]
    results = json.loads((sub / "results.json").read_text())
    index = json.loads((run / "train" / "checkpoints" / "index.json").read_text())
    assert [r["step"] for r in results["checkpoints"]] == index["planned"]
    report = json.loads((run / "evaluate" / "report.json").read_text())
    for row, ev in zip(results["checkpoints"], report["checkpoints"]):
        assert row["accuracy_strict"] == ev["accuracy_strict"]
        assert row["score"] == pytest.approx(scoring.stage1_score(ev["accuracy_strict"], results["ratio_for_score"]))
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert results["trainable_params"] == summary["trainable_params"]
    assert results["chosen"]["model"] in {r["model"] for r in results["checkpoints"]}
    algorithm = (sub / "ALGORITHM.md").read_text()
    stats = json.loads((run / "prep" / "stats.json").read_text())
    assert f"| trained on | {stats['rows_train']} |" in algorithm
    assert f"{summary['trainable_params']:,}" in algorithm
    assert "<|im_start|>assistant" in algorithm  # the rendered prompt template
    env = json.loads((sub / "environment.json").read_text())
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert env["jobs"]["train"]["packages"]["mindspore"] == manifest["packages"]["mindspore"]
    assert env["pip_freeze"] == manifest["pip_freeze"]
    record = [json.loads(l) for l in (run / "record.jsonl").read_text().splitlines()]
    assert record[-1]["job"] == "bundle" and (run / "bundle" / "manifest.json").is_file()
    with tarfile.open(sub / "code.tar.gz") as tar:
        assert "tunebox/jobs/bundle.py" in tar.getnames()


def test_checkpoints_are_hard_links_to_merge(bundled):
    for step in bl.evenly_spaced_steps(27):
        mine = (bundled["sub"] / bl.checkpoint_file(step)).stat()
        merged = (bundled["run_dir"] / "merge" / bl.model_dir_name(step) / "model.ckpt").stat()
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


def test_bundle_refuses_a_spec_the_run_did_not_use(bundled):
    proc = run_job("bundle", TINY_RECIPE, bundled["cache"], bundled["work"], f"runs_dir={bundled['run_dir'].parent}",
                   "lora.alpha=32", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lora.alpha: 16 != 32" in proc.stderr


# ---- tampered copies -------------------------------------------------------------------------

STEP = bl.evenly_spaced_steps(27)[1]  # step 11
NAME = bl.model_dir_name(STEP)


def flip_byte(sub: Path) -> None:
    ckpt = sub / bl.checkpoint_file(STEP)
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))


def drop_checkpoint(sub: Path) -> None:
    shutil.rmtree(sub / "checkpoints" / bl.model_dir_name(bl.evenly_spaced_steps(27)[2]))


def add_stray(sub: Path) -> None:
    (sub / "logs" / "notes.txt").write_text("added by hand\n")


def result_row(sub: Path, name: str = NAME) -> dict:
    return next(r for r in json.loads((sub / "results.json").read_text())["checkpoints"] if r["model"] == name)


def edit_results(sub: Path) -> None:
    results = json.loads((sub / "results.json").read_text())
    row = next(r for r in results["checkpoints"] if r["model"] == NAME)
    row["accuracy_strict"] = EDITED_ACCURACY if row["accuracy_strict"] != EDITED_ACCURACY else 0.125
    (sub / "results.json").write_text(json.dumps(results, indent=2))


EDITED_ACCURACY = 0.875


def edit_squad_answers(sub: Path) -> None:
    """Give one checkpoint the gold SQuAD answers: its F1/EM in results.json no longer follow."""
    f = sub / "logs" / "evaluate" / NAME / "squad_predictions.jsonl"
    if not f.is_file():
        pytest.skip("evaluate wrote no SQuAD predictions for this run")
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    f.write_text("".join(json.dumps(dict(r, answer=r["gold"][0]), ensure_ascii=False) + "\n" for r in rows))


TAMPERING = {
    "flipped byte": (flip_byte, [f"{bl.checkpoint_file(STEP)}: sha256 is", "SHA256SUMS says",
                                 "is not the file merge wrote"]),
    "missing checkpoint": (drop_checkpoint, ["4 checkpoints", "the contest asks for exactly 5",
                                             "missing checkpoints/step-000016/model.ckpt",
                                             "checkpoints/step-000016/model.ckpt is listed in SHA256SUMS but missing"]),
    "stray file": (add_stray, ["stray file logs/notes.txt: not listed in SHA256SUMS"]),
    # {acc} / {f1}: the figures the untouched bundle records for that checkpoint
    "edited results": (edit_results, ["results.json {name} accuracy_strict = {edited}, the bundled predictions "
                                      "give(s) {acc}", "results.json: sha256 is"]),
    "edited SQuAD answers": (edit_squad_answers, ["results.json {name} squad_f1 = {f1}, "
                                                  "logs/evaluate/{name}/squad_predictions.jsonl gives 100.0"]),
}


def expected_messages(messages: list[str], sub: Path) -> list[str]:
    row = result_row(sub)
    edited = EDITED_ACCURACY if row["accuracy_strict"] != EDITED_ACCURACY else 0.125
    return [m.format(name=NAME, acc=row["accuracy_strict"], f1=row["squad_f1"], edited=edited) for m in messages]


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_copy_fails_with_the_right_message(bundled, tmp_path, capsys, case):
    tamper, messages = TAMPERING[case]
    sub = tampered_copy(bundled, tmp_path)
    assert verify_here(sub, capsys)[0] == 0  # the copy itself is sound
    messages = expected_messages(messages, sub)
    tamper(sub)
    code, fails = verify_here(sub, capsys)
    assert code == 1
    text = "\n".join(fails)
    for message in messages:
        assert message in text, f"{case}: expected {message!r} among:\n{text}"
    if case == "stray file":
        assert len(fails) == 1, text  # a stray file is that one problem, nothing else


def test_every_problem_is_listed_not_just_the_first(bundled, tmp_path, capsys):
    sub = tampered_copy(bundled, tmp_path)
    expected = {case: expected_messages(messages, sub) for case, (_, messages) in TAMPERING.items()}
    if not (sub / "logs" / "evaluate" / NAME / "squad_predictions.jsonl").is_file():
        expected.pop("edited SQuAD answers")
    for case in expected:
        TAMPERING[case][0](sub)
    code, fails = verify_here(sub, capsys)
    text = "\n".join(fails)
    assert code == 1
    for case, messages in expected.items():
        assert all(m in text for m in messages), f"{case} not reported:\n{text}"


def test_rerun_catches_answers_the_checkpoints_do_not_give(bundled, tmp_path, capsys):
    """Predictions, scores and results rewritten to agree with each other (and SHA256SUMS redone):
    every static check passes; only evaluating the checkpoints again shows the answers are not theirs."""
    sub = tampered_copy(bundled, tmp_path)
    measured = result_row(sub)["accuracy_strict"]
    assert measured < 1.0, "the tiny model is not expected to answer every held-out row"
    pred_file = sub / "logs" / "evaluate" / NAME / "predictions.jsonl"
    rows = [json.loads(l) for l in pred_file.read_text().splitlines()]
    for r in rows:
        r.update(answer=r["reference"], strict=True, tolerant=True)
    pred_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    scores_file = sub / "logs" / "evaluate" / NAME / "scores.json"
    scores = json.loads(scores_file.read_text())
    scores.update(accuracy_strict=1.0, accuracy_tolerant=1.0)
    scores_file.write_text(json.dumps(scores))
    results = json.loads((sub / "results.json").read_text())
    for r in results["checkpoints"]:
        if r["model"] == NAME:
            r.update(accuracy_strict=1.0, accuracy_tolerant=1.0,
                     score=scoring.stage1_score(1.0, r["ratio"]), score_tolerant=scoring.stage1_score(1.0, r["ratio"]))
    results["chosen"].update(model=NAME, step=STEP)
    (sub / "results.json").write_text(json.dumps(results, indent=2))
    # ...and selfcheck.png redrawn from the forged results.json (verify ties the picture to that file)
    from jobs.core import selfcheck
    selfcheck.render(sub / selfcheck.FILE, results=results, results_bytes=(sub / "results.json").read_bytes(),
                     rank=8, commit=results["code"]["commit"], code_note="", log_name="-", log_tail=[])
    rewrite_sums(sub)

    code, fails = verify_here(sub, capsys)
    assert code == 0, fails
    code, fails = verify_here(sub, capsys, "--rerun")
    assert code == 1
    assert any(f"{NAME}: re-run accuracy_strict {measured:.4f}, results.json says 1.0" in l for l in fails), fails


def test_verify_bad_input_exits_2(tmp_path, capsys):
    assert verify_mod.main([str(tmp_path / "nothing-here")]) == 2
    assert "no such submission folder" in capsys.readouterr().err


# ---- code.tar.gz -----------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_archive_clean_commit_dirty_tree_and_no_git(tmp_path):
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


# ---- the rules results.json follows ---------------------------------------------------------

def _row(model, step, acc, score, passes):
    return {"model": model, "step": step, "accuracy_strict": acc, "score": score, "passes_retention": passes}


def test_choice_prefers_retention_passes_then_falls_back_to_accuracy():
    rows = [_row("a", 1, 0.9, 0.9, False), _row("b", 2, 0.6, 0.6, True), _row("c", 3, 0.5, 0.5, True)]
    assert bl.choose_checkpoint(rows)["model"] == "b"  # the best score fails retention
    unknown = [dict(r, passes_retention=None) for r in rows]
    choice = bl.choose_checkpoint(unknown)
    assert choice["model"] == "a" and "not measured" in choice["reason"]
    assert bl.choose_checkpoint([_row("x", 1, 0.5, 0.5, None), _row("y", 2, 0.5, 0.5, None)])["model"] == "y"


def test_squad_fields_read_nested_and_flat_report_entries():
    nested = bl.squad_fields({"squad": {"f1": 55.0, "em": 40.0}, "retention": {"f1": 0.92, "em": 0.905, "passes": True}})
    flat = bl.squad_fields({"squad_f1": 55.0, "squad_em": 40.0, "retention_f1": 0.92, "retention_em": 0.905,
                            "passes_retention": True})
    assert nested == flat == {"squad_f1": 55.0, "squad_em": 40.0, "retention_f1": 0.92, "retention_em": 0.905,
                              "passes_retention": True}
    assert set(bl.squad_fields({}).values()) == {None}


# ---- inside a container ----------------------------------------------------------------------

IMAGE = os.environ.get("TUNEBOX_VERIFY_IMAGE", "tunebox:cpu-ms2.9")


@pytest.mark.docker
def test_verify_inside_image(bundled, capsys):
    client, why_not = verify_mod.docker_client()
    if client is None:
        pytest.skip(why_not)
    try:
        client.images.get(IMAGE)
    except Exception:
        pytest.skip(f"image {IMAGE} not built (invoke image.build)")
    code = verify_mod.main([str(bundled["sub"]), "--image", IMAGE])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"ok    image       inside {IMAGE}" in out and "| ok    rerun" in out
