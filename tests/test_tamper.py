"""Tampering with every file verify guards, on copies of one tiny run's bundle: each edit is tried
once leaving SHA256SUMS as it is (verify names the changed file) and once rewriting SHA256SUMS to
match (verify still names the edit, from what the file contradicts).

Set TUNEBOX_TEST_BUNDLE to a folder a previous session saved (TUNEBOX_TEST_BUNDLE_SAVE, as
tests/mutants.py does) to verify copies of that bundle instead of building one: mutation testing
runs these tests once a mutant."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, copy_submission, read_jsonl, rewrite_sums, run_job, verify_here
from tunebox.submission import contents


@pytest.fixture(scope="module")
def bundle(request, tmp_path_factory) -> dict:
    """{"sub": the submission folder, "steps": its planned steps}; never edited (tests edit copies)."""
    saved = os.environ.get("TUNEBOX_TEST_BUNDLE")
    if saved:
        work = Path(saved)
    else:
        tiny_run = request.getfixturevalue("tiny_run")
        work = tmp_path_factory.mktemp("tamper")
        shutil.copytree(
            tiny_run["run_dir"], work / "runs" / "tiny", ignore=shutil.ignore_patterns("mindformers", "submission")
        )
        run_job("bundle", TINY_RECIPE, tiny_run["cache"], work, f"runs_dir={work / 'runs'}")
        target = os.environ.get("TUNEBOX_TEST_BUNDLE_SAVE")
        if target:
            shutil.copytree(work / "runs" / "tiny" / "submission", Path(target) / "runs" / "tiny" / "submission")
            work = Path(target)
    sub = work / "runs" / "tiny" / "submission"
    steps = json.loads((sub / "logs" / "train" / "checkpoints" / "index.json").read_text())["planned"]
    return {"sub": sub, "steps": steps}


def test_fresh_bundle_verifies(bundle, tmp_path, capsys):
    code, fails = verify_here(copy_submission(bundle["sub"], tmp_path), capsys)
    assert code == 0 and not fails, fails


# ---- the edits: each returns the files it changed ----------------------------------------------


def edit_jsonl(path: Path, change) -> None:
    rows = read_jsonl(path)
    change(rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def loss_between_checkpoints(sub: Path, steps: list[int]) -> list[str]:
    """Step 2's loss (no checkpoint there) made 1.25: loss.csv, written from the same rows, still says otherwise."""
    assert 2 not in steps
    edit_jsonl(sub / "logs/train/loss.jsonl", lambda rows: rows[1].update(loss=1.25))
    return ["logs/train/loss.jsonl"]


def loss_at_a_checkpoint(sub: Path, steps: list[int]) -> list[str]:
    """The second checkpoint's loss made 1.25 in loss.jsonl and loss.csv alike: train's and merge's indexes
    recorded the loss at that step."""
    step = steps[1]
    edit_jsonl(sub / "logs/train/loss.jsonl", lambda rows: rows[step - 1].update(loss=1.25))
    csv = sub / "logs/train/loss.csv"
    lines = csv.read_text().splitlines()
    cells = lines[step].split(",")
    assert cells[0] == str(step)
    cells[2] = "1.250000"
    lines[step] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    return ["logs/train/loss.jsonl", "logs/train/loss.csv"]


def heldout_reference(sub: Path, steps: list[int]) -> list[str]:
    edit_jsonl(sub / "logs/prep/heldout.jsonl", lambda rows: rows[0].update(reference="1 + 1 = 2"))
    return ["logs/prep/heldout.jsonl"]


def environment_json(sub: Path, steps: list[int]) -> list[str]:
    edit_json(sub / "environment.json", lambda e: e["jobs"]["train"]["packages"].update(mindspore="2.10.0"))
    return ["environment.json"]


def environment_md(sub: Path, steps: list[int]) -> list[str]:
    md = sub / "ENVIRONMENT.md"
    md.write_text(md.read_text().replace("| host |", "| host (checked by hand) |", 1))
    return ["ENVIRONMENT.md"]


def code_not_an_archive(sub: Path, steps: list[int]) -> list[str]:
    (sub / "code.tar.gz").write_bytes(b"not a tar.gz archive\n")
    return ["code.tar.gz"]


def rebuild_archive(sub: Path, keep, extra: dict[str, bytes]) -> None:
    import io

    src = sub / "code.tar.gz"
    with tarfile.open(src, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers() if keep(m.name)]
    with tarfile.open(src, "w:gz") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def code_without_train(sub: Path, steps: list[int]) -> list[str]:
    rebuild_archive(sub, lambda n: not n.endswith("jobs/train.py"), {})
    return ["code.tar.gz"]


def code_escaping_its_folder(sub: Path, steps: list[int]) -> list[str]:
    rebuild_archive(sub, lambda n: True, {"../outside.py": b"print('hi')\n"})
    return ["code.tar.gz"]


def hyperparams_not_what_ran(sub: Path, steps: list[int]) -> list[str]:
    p = sub / "hyperparams.yaml"
    text = p.read_text()
    assert text.count("alpha: 16\n") == 1
    p.write_text(text.replace("alpha: 16\n", "alpha: 32\n"))
    return ["hyperparams.yaml"]


def checkpoint_evaluate_did_not_score(sub: Path, steps: list[int]) -> list[str]:
    """The second checkpoint replaced by the first one's file, merge's index edited to match: only
    evaluate's scores.json still names the file it scored."""
    import hashlib

    a, b = (sub / contents.checkpoint_file(s) for s in steps[:2])
    b.write_bytes(a.read_bytes())
    sha = hashlib.sha256(b.read_bytes()).hexdigest()
    edit_json(
        sub / "logs/merge/index.json",
        lambda m: next(e for e in m["checkpoints"] if e["step"] == steps[1]).update(sha256=sha),
    )
    return [contents.checkpoint_file(steps[1]), "logs/merge/index.json"]


def predictions_off_the_list(sub: Path, steps: list[int]) -> list[str]:
    rel = f"logs/evaluate/{contents.model_dir_name(steps[1])}/predictions.jsonl"
    edit_jsonl(sub / rel, lambda rows: rows[0].update(line=99999))
    return [rel]


def uneven_plan(sub: Path, steps: list[int]) -> list[str]:
    edit_json(sub / "logs/train/checkpoints/index.json", lambda i: i["planned"].__setitem__(1, i["planned"][1] - 1))
    return ["logs/train/checkpoints/index.json"]


def ckpt(step: int) -> str:
    return contents.checkpoint_file(step)


# what verify must say once SHA256SUMS is rewritten to match; {s0}, {s1}: the first two planned steps,
# {m1}: the second checkpoint's folder name, {plan}: the plan as bundled, {total}: its total steps
TAMPERING = {
    "loss between checkpoints": (
        loss_between_checkpoints,
        ["logs/train/loss.jsonl and loss.csv disagree at 1 step(s), first step 2: loss 1.25 against '{csv2}'"],
    ),
    "loss at a checkpoint": (
        loss_at_a_checkpoint,
        [
            "logs/train/loss.jsonl step {s1} loss 1.25, logs/train/checkpoints/index.json records {loss1!r}",
            "logs/train/loss.jsonl step {s1} loss 1.25, logs/merge/index.json records {loss1!r}",
        ],
    ),
    "held-out reference": (
        heldout_reference,
        [
            "logs/evaluate/base/predictions.jsonl: the prompt or reference of line(s) [{line0}] differs from "
            "logs/prep/heldout.jsonl",
            "logs/evaluate/{m1}/predictions.jsonl: the prompt or reference of line(s) [{line0}] differs",
        ],
    ),
    "environment.json": (environment_json, ["environment.json is not what the bundled manifests give"]),
    "ENVIRONMENT.md": (environment_md, ["ENVIRONMENT.md is not what the bundled manifests give (edited by hand?)"]),
    "code.tar.gz not an archive": (code_not_an_archive, ["code.tar.gz is not a readable tar.gz archive"]),
    "code.tar.gz without jobs/train.py": (code_without_train, ["code.tar.gz has no jobs/train.py"]),
    "code.tar.gz escaping its folder": (
        code_escaping_its_folder,
        ["code.tar.gz has paths outside its folder: ['../outside.py']"],
    ),
    "hyperparams.yaml": (
        hyperparams_not_what_ran,
        ["is not the spec train ran with", "lora.alpha", "(manifest != hyperparams.yaml)"],
    ),
    "checkpoint evaluate did not score": (
        checkpoint_evaluate_did_not_score,
        ["{ckpt1}: sha256 {sha0} is not the file evaluate scored ({sha1}, logs/evaluate/{m1}/scores.json)"],
    ),
    "predictions off prep's list": (
        predictions_off_the_list,
        ["logs/evaluate/{m1}/predictions.jsonl answers rows [99999, ", "the held-out rows are [{line0}, "],
    ),
    "unevenly spaced plan": (
        uneven_plan,
        [
            "planned steps {uneven} are not evenly spaced over {total} steps (expected {plan})",
            "checkpoint steps {plan} differ from the planned steps {uneven}",
        ],
    ),
}


def figures(sub: Path, steps: list[int]) -> dict:
    """The untouched bundle's own figures the messages quote (read before the edit)."""
    import hashlib

    loss = read_jsonl(sub / "logs/train/loss.jsonl")
    index = json.loads((sub / "logs/train/checkpoints/index.json").read_text())
    uneven = list(steps)
    uneven[1] -= 1
    return {
        "s0": steps[0],
        "s1": steps[1],
        "m1": contents.model_dir_name(steps[1]),
        "plan": steps,
        "uneven": uneven,
        "total": index["total_steps"],
        "loss1": loss[steps[1] - 1]["loss"],
        "csv2": (sub / "logs/train/loss.csv").read_text().splitlines()[2].split(",")[2],
        "line0": read_jsonl(sub / "logs/prep/heldout.jsonl")[0]["line"],
        "ckpt1": ckpt(steps[1]),
        "sha0": hashlib.sha256((sub / ckpt(steps[0])).read_bytes()).hexdigest(),
        "sha1": hashlib.sha256((sub / ckpt(steps[1])).read_bytes()).hexdigest(),
    }


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_with_sha256sums_left_as_is_names_the_changed_files(bundle, tmp_path, capsys, case):
    sub = copy_submission(bundle["sub"], tmp_path)
    changed = TAMPERING[case][0](sub, bundle["steps"])
    code, fails = verify_here(sub, capsys)
    fails = "\n".join(fails)
    assert code == 1
    for rel in changed:
        named = f"{rel}: sha256 is " in fails and "(changed after bundling)" in fails
        assert named, f"{case}: {rel} not named:\n{fails}"


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_with_sha256sums_rewritten_is_still_caught(bundle, tmp_path, capsys, case):
    sub = copy_submission(bundle["sub"], tmp_path)
    tamper, messages = TAMPERING[case]
    known = figures(sub, bundle["steps"])
    tamper(sub, bundle["steps"])
    rewrite_sums(sub)
    code, fails = verify_here(sub, capsys)
    fails = "\n".join(fails)
    assert code == 1
    assert "SHA256SUMS says" not in fails  # the checksums hold: what catches it is the edit itself
    for message in messages:
        assert message.format(**known) in fails, f"{case}: expected {message.format(**known)!r} among:\n{fails}"
