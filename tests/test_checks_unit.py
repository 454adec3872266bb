"""verify's checks (tunebox/submission/checks.py) one by one, on small folders each test writes by hand:
only the files a check reads, with the values and the exact finding text worked out by hand. No bundle,
no training, no MindSpore: mutation testing runs these for every mutant of checks.py (tests/mutants.py,
group "checks"), in well under a second.

Each test names in its docstring hand-made mutants of checks.py it fails on (each tried: the test failed
on the mutant and passed once the code was restored)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunebox.submission import checks
from tunebox.submission.checks import Findings, Submission

SUMS = "SHA256SUMS"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, rel: str, data) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    elif isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_text(json.dumps(data), encoding="utf-8")
    return p


def write_jsonl(root: Path, rel: str, rows: list) -> Path:
    return write(root, rel, "".join(json.dumps(r) + "\n" for r in rows))


def lines(f: Findings, check: str) -> list[tuple[str, str]]:
    """(kind, message) of every line under one check."""
    return [(kind, m) for kind, c, m in f.lines if c == check]


def fresh(root: Path) -> tuple[Submission, Findings]:
    f = Findings()
    return Submission(root, f), f


# ---- Findings and Submission ------------------------------------------------------------------


def test_findings_print_to_stdout_by_default(capsys):
    """Mutants: the kind padded to 3 or 5; the check padded to 10 or 12; the detail's 20-space margin
    changed; `out or sys.stdout` turned into `out and sys.stdout` (prints nowhere); a detail line printed
    as a finding; failed() keeping notes or ignoring its check."""
    f = Findings()
    f.ok("files", "all 3 present")
    f.fail("checksums", "a.json: changed")
    f.note("results", "no valid checkpoint")
    f.detail("image", "inner line")
    f.fail("logs", "two of three")
    f.print()
    assert capsys.readouterr().out == (
        "  ok    files       all 3 present\n"
        "  FAIL  checksums   a.json: changed\n"
        "  note  results     no valid checkpoint\n"
        "                    | inner line\n"
        "  FAIL  logs        two of three\n"
    )
    out = io.StringIO()
    f.print(out)
    assert out.getvalue().splitlines()[3] == " " * 20 + "| inner line"
    assert f.failed() == ["a.json: changed", "two of three"]
    assert f.failed("logs") == ["two of three"] and f.failed("results") == [] and f.failed("image") == []
    assert f.lines[2] == ("note", "results", "no valid checkpoint") and f.lines[3] == ("", "image", "inner line")


def test_submission_reads_json_and_jsonl_once_and_names_broken_lines(tmp_path):
    """Mutants: the jsonl cache key made the json one (`key = rel`), so json() then jsonl() of one file
    returns the dict; the cache dropped (the failure is reported twice); a blank line counted as broken;
    line numbers from 0; a broken file's value kept instead of None; the message's words changed."""
    write(tmp_path, "one.json", '{"a": 1}')
    write(tmp_path, "bad.json", "{not json")
    write(tmp_path, "rows.jsonl", '{"a": 1}\n\n  \nnot json\n{"b": 2}\n')
    write(tmp_path, "bytes.jsonl", b'{"a": 1}\n\xff\xfe\n')
    sub, f = fresh(tmp_path)
    assert sub.path("one.json") == tmp_path / "one.json"
    assert sub.json("one.json") == {"a": 1}
    assert sub.jsonl("one.json") == [{"a": 1}]
    assert sub.json("one.json") == {"a": 1}
    assert sub.json("missing.json") is None and sub.jsonl("missing.jsonl") is None
    assert sub.json("bad.json") is None and sub.json("bad.json") is None
    assert sub.jsonl("rows.jsonl") == [{"a": 1}, {"b": 2}] and sub.jsonl("rows.jsonl") == [{"a": 1}, {"b": 2}]
    assert sub.jsonl("bytes.jsonl") == [{"a": 1}]
    assert lines(f, "files") == [
        (
            "FAIL",
            "bad.json is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        ("FAIL", "rows.jsonl:4: not valid JSON (Expecting value)"),
        ("FAIL", "bytes.jsonl:2: not valid JSON (Expecting value)"),
    ]
    assert len(f.lines) == 3


def test_submission_json_of_a_file_that_is_not_utf8(tmp_path):
    """Mutant: UnicodeDecodeError left out of json()'s except (verify crashes on a binary results.json)."""
    write(tmp_path, "results.json", b"\xff\xfe{}")
    sub, f = fresh(tmp_path)
    assert sub.json("results.json") is None
    assert f.failed("files")[0].startswith("results.json is not valid JSON ('utf-8' codec can't decode byte 0xff")


def test_submission_json_of_a_folder_is_none(tmp_path):
    """Mutant: `is_file()` turned into `exists()` (a folder named like a file crashes the reader)."""
    (tmp_path / "results.json").mkdir()
    (tmp_path / "rows.jsonl").mkdir()
    sub, f = fresh(tmp_path)
    assert sub.json("results.json") is None and sub.jsonl("rows.jsonl") is None and f.lines == []


# ---- checksums ---------------------------------------------------------------------------------


def sums_of(entries: dict[str, bytes]) -> str:
    return "".join(f"{sha(data)}  {rel}\n" for rel, data in sorted(entries.items()))


@pytest.fixture
def listed_folder(tmp_path) -> Path:
    """Two files and a SHA256SUMS that lists both, written by hand."""
    files = {"a.txt": b"alpha\n", "logs/b.json": b"{}"}
    for rel, data in files.items():
        write(tmp_path, rel, data)
    write(tmp_path, SUMS, sums_of(files))
    return tmp_path


def test_checksums_hold(listed_folder):
    """Mutants: SHA256SUMS hashed into the returned shas; the ok line's count or words changed; the ok line
    left out."""
    sub, f = fresh(listed_folder)
    actual = checks.check_checksums(sub, f)
    assert actual == {"a.txt": sha(b"alpha\n"), "logs/b.json": sha(b"{}")}
    assert lines(f, "checksums") == [("ok", "2 files listed in SHA256SUMS, every one matches, no stray files")]


def test_checksums_missing_file(tmp_path):
    """Mutants: the early return dropped (a stray line for every file follows); the message changed; the
    shas not returned when SHA256SUMS is missing."""
    write(tmp_path, "a.txt", b"alpha\n")
    sub, f = fresh(tmp_path)
    assert checks.check_checksums(sub, f) == {"a.txt": sha(b"alpha\n")}
    assert lines(f, "checksums") == [
        ("FAIL", "SHA256SUMS is missing: no file can be checked, and strays cannot be told apart")
    ]


def test_checksums_changed_file(listed_folder):
    """Mutants: `!=` turned into `==`; the sha comparison dropped; the two shas swapped in the message."""
    write(listed_folder, "a.txt", b"ALPHA\n")
    sub, f = fresh(listed_folder)
    checks.check_checksums(sub, f)
    assert lines(f, "checksums") == [
        (
            "FAIL",
            f"a.txt: sha256 is {sha(b'ALPHA' + bytes([10]))}, SHA256SUMS says {sha(b'alpha' + bytes([10]))} "
            "(changed after bundling)",
        )
    ]


def test_checksums_listed_but_missing_and_stray(listed_folder):
    """Mutants: `rel not in actual` turned into `in`; the stray loop dropped or turned to `in listed`;
    the messages changed."""
    (listed_folder / "a.txt").unlink()
    write(listed_folder, "extra.bin", b"x")
    sub, f = fresh(listed_folder)
    assert checks.check_checksums(sub, f) == {"extra.bin": sha(b"x"), "logs/b.json": sha(b"{}")}
    assert lines(f, "checksums") == [
        ("FAIL", "a.txt is listed in SHA256SUMS but missing from the folder"),
        ("FAIL", "stray file extra.bin: not listed in SHA256SUMS (added after bundling?)"),
    ]


def test_checksums_lists_itself(listed_folder):
    """Mutant: the self-listing check dropped (SHA256SUMS, not hashed, reads as missing) or its message changed."""
    with (listed_folder / SUMS).open("a") as fh:
        fh.write(f"{'0' * 64}  {SUMS}\n")
    sub, f = fresh(listed_folder)
    checks.check_checksums(sub, f)
    assert lines(f, "checksums") == [("FAIL", "SHA256SUMS lists itself; it must list every other file")]


def test_checksums_malformed_line_is_a_problem_and_no_ok(listed_folder):
    """Mutants: the parser's problems not reported; `and not problems` dropped (an ok line under a failure)."""
    with (listed_folder / SUMS).open("a") as fh:
        fh.write("garbage\n")
    sub, f = fresh(listed_folder)
    checks.check_checksums(sub, f)
    assert lines(f, "checksums") == [("FAIL", "SHA256SUMS:3: not '<64 hex digits>  <path>': 'garbage'")]


def test_checksums_symlink(listed_folder):
    """Mutants: the symlink check dropped, or its message changed; a listed symlink hashed as missing; the count
    of failures the ok line goes by taken after the symlink check (then the FAIL was followed by "every one
    matches")."""
    (listed_folder / "link.txt").symlink_to(listed_folder / "a.txt")
    with (listed_folder / SUMS).open("a") as fh:
        fh.write(f"{sha(b'alpha' + bytes([10]))}  link.txt\n")
    sub, f = fresh(listed_folder)
    actual = checks.check_checksums(sub, f)
    assert actual["link.txt"] == sha(b"alpha\n")
    assert lines(f, "checksums") == [("FAIL", "link.txt is a symbolic link; a submission holds the files themselves")]


# ---- the plan and the expected files -------------------------------------------------------------

INDEX = "logs/train/checkpoints/index.json"
MERGE = "logs/merge/index.json"


def test_planned_steps(tmp_path):
    """Mutants: the isinstance checks dropped or inverted (`or` -> `and`: a list index crashes); the steps
    not converted to int."""
    sub, _ = fresh(tmp_path)
    assert checks.planned_steps(sub) is None
    for rel, index in (("a", []), ("b", {"total_steps": 10}), ("c", {"planned": "2,4"})):
        write(tmp_path / rel, INDEX, index)
        assert checks.planned_steps(Submission(tmp_path / rel, Findings())) is None, rel
    write(tmp_path / "d", INDEX, {"planned": ["2", 4.0, 6]})
    assert checks.planned_steps(Submission(tmp_path / "d", Findings())) == [2, 4, 6]


# the files every submission has (tunebox/submission/contents.py FIXED_FILES), listed here by hand
FIXED = [
    "ALGORITHM.md",
    "hyperparams.yaml",
    "code.tar.gz",
    "results.json",
    "ENVIRONMENT.md",
    "environment.json",
    "selfcheck.png",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "logs/record.jsonl",
    "logs/prep/manifest.json",
    "logs/prep/stats.json",
    "logs/prep/heldout.jsonl",
    "logs/prep/rejects.jsonl",
    "logs/train/manifest.json",
    "logs/train/loss.jsonl",
    "logs/train/loss.csv",
    "logs/train/summary.json",
    INDEX,
    "logs/merge/manifest.json",
    MERGE,
    "logs/evaluate/manifest.json",
    "logs/evaluate/report.json",
    "logs/evaluate/report.md",
    "logs/train/mindformers.yaml",
    "mindformers/finetune.yaml",
    "mindformers/predict.yaml",
    "mindformers/predict_r1.1.yaml",
    "mindformers/mf_extensions.py",
    "mindformers/README.md",
]


def per_step(step: int) -> list[str]:
    return [
        f"checkpoints/step-{step:06d}/model.ckpt",
        f"logs/evaluate/step-{step:06d}/predictions.jsonl",
        f"logs/evaluate/step-{step:06d}/scores.json",
    ]


def test_files_all_present(tmp_path):
    """Mutants: the count in the ok line changed; the ok line given when a file is missing."""
    for rel in FIXED + per_step(2) + per_step(4):
        write(tmp_path, rel, b"")
    sub, f = fresh(tmp_path)
    checks.check_files(sub, f, [2, 4])
    assert lines(f, "files") == [("ok", "all 36 expected files are present")]


def test_files_missing_name_their_purpose(tmp_path):
    """Mutants: the purpose left out or its brackets changed; a file without a purpose given '()'; the
    missing list built from present files (`not` dropped); a folder counted as the file."""
    for rel in FIXED + per_step(2):
        if rel not in ("hyperparams.yaml", "logs/prep/stats.json", "selfcheck.png"):
            write(tmp_path, rel, b"")
    (tmp_path / "selfcheck.png").mkdir()
    sub, f = fresh(tmp_path)
    checks.check_files(sub, f, [2, 4])
    assert lines(f, "files") == [
        ("FAIL", "missing checkpoints/step-000004/model.ckpt"),
        ("FAIL", "missing hyperparams.yaml (the run spec)"),
        ("FAIL", "missing logs/evaluate/step-000004/predictions.jsonl"),
        ("FAIL", "missing logs/evaluate/step-000004/scores.json"),
        ("FAIL", "missing logs/prep/stats.json"),
        (
            "FAIL",
            "missing selfcheck.png (the self-check picture: results, ratio and training log (the contest "
            "asks for one))",
        ),
    ]


# ---- checkpoints ---------------------------------------------------------------------------------

STEPS = [2, 4, 6, 8, 10]  # five evenly spaced over 10 steps: 10*i/5, i = 1..5


def ckpt(step: int) -> str:
    return f"checkpoints/step-{step:06d}/model.ckpt"


def fake_sha(step: int) -> str:
    return f"{step:064x}"


def checkpoint_folder(root: Path, steps=STEPS, planned=STEPS, total=10) -> dict[str, str]:
    """Checkpoint folders, train's plan, merge's index and evaluate's scores, all agreeing; returns the
    shas the checks get (check_checksums' result: here made up, one per step)."""
    for s in steps:
        write(root, ckpt(s), b"w")
        write(root, f"logs/evaluate/step-{s:06d}/scores.json", {"checkpoint_sha256": fake_sha(s)})
    write(root, INDEX, {"planned": planned, "total_steps": total})
    write(root, MERGE, {"checkpoints": [{"step": s, "sha256": fake_sha(s)} for s in steps]})
    return {ckpt(s): fake_sha(s) for s in steps}


def run_checkpoints(root: Path, actual, planned="read") -> tuple[list[int], list[tuple[str, str]]]:
    sub, f = fresh(root)
    if planned == "read":
        planned = checks.planned_steps(sub)
    found = checks.check_checkpoints(sub, f, planned, actual)
    return found, lines(f, "checkpoints")


def test_checkpoints_as_planned(tmp_path):
    """Mutants: the ok line's words or step list changed; found not sorted or not returned."""
    actual = checkpoint_folder(tmp_path)
    assert run_checkpoints(tmp_path, actual) == (
        STEPS,
        [
            (
                "ok",
                "5 checkpoints at steps 2, 4, 6, 8, 10, evenly spaced as planned; each is the file merge wrote "
                "and evaluate scored",
            )
        ],
    )


def test_no_checkpoints_folder(tmp_path):
    """Mutants: the folder's absence not reported; 'none' left out of the count message; NUM_CHECKPOINTS
    compared with `==`."""
    write(tmp_path, INDEX, {"planned": STEPS, "total_steps": 10})
    assert run_checkpoints(tmp_path, {}) == (
        [],
        [
            ("FAIL", "no checkpoints/ folder"),
            ("FAIL", "0 checkpoints (none); the contest asks for exactly 5"),
            (
                "FAIL",
                "checkpoint steps [] differ from the planned steps [2, 4, 6, 8, 10] "
                "(logs/train/checkpoints/index.json)",
            ),
        ],
    )


def test_checkpoint_folder_names_and_missing_weights(tmp_path):
    """Mutants: `or` between the two folder tests turned into `and` (a file named like a step counts);
    `continue` dropped; the missing model.ckpt not reported; the messages changed."""
    actual = checkpoint_folder(tmp_path)
    (tmp_path / ckpt(6)).unlink()
    write(tmp_path, "checkpoints/latest/model.ckpt", b"w")
    write(tmp_path, "checkpoints/step-000012", b"not a folder")
    del actual[ckpt(6)]
    found, got = run_checkpoints(tmp_path, actual)
    assert found == STEPS
    assert got == [
        ("FAIL", "checkpoints/latest is not a step-NNNNNN folder"),
        ("FAIL", "checkpoints/step-000006/model.ckpt is missing"),
        ("FAIL", "checkpoints/step-000012 is not a step-NNNNNN folder"),
    ]


def test_six_checkpoints(tmp_path):
    """Mutants: `!=` on the checkpoint count turned into `<` or `>`...; the count message's list changed."""
    actual = checkpoint_folder(tmp_path, steps=STEPS + [12])
    found, got = run_checkpoints(tmp_path, actual)
    assert found == STEPS + [12]
    assert got == [
        ("FAIL", "6 checkpoints (2, 4, 6, 8, 10, 12); the contest asks for exactly 5"),
        (
            "FAIL",
            "checkpoint steps [2, 4, 6, 8, 10, 12] differ from the planned steps [2, 4, 6, 8, 10] "
            "(logs/train/checkpoints/index.json)",
        ),
    ]


def test_no_plan(tmp_path):
    """Mutants: `planned is None` turned into `is not None`; the message changed; merge's checks skipped too."""
    actual = checkpoint_folder(tmp_path)
    write(tmp_path, MERGE, {"checkpoints": [{"step": s, "sha256": fake_sha(s)} for s in STEPS[1:]]})
    assert run_checkpoints(tmp_path, actual, planned=None)[1] == [
        ("FAIL", "logs/train/checkpoints/index.json has no 'planned' steps to check the checkpoints against"),
        ("FAIL", "checkpoints/step-000002/model.ckpt: logs/merge/index.json has no entry for step 2"),
    ]


def test_plan_of_four(tmp_path):
    """Mutants: the plan's length check dropped or compared with `<`/`>`, its message changed; `elif` made `if`
    (evenly-spaced checked against four steps)."""
    actual = checkpoint_folder(tmp_path, planned=[2, 4, 6, 8])
    assert run_checkpoints(tmp_path, actual)[1] == [
        ("FAIL", "train planned 4 checkpoints, not 5"),
        (
            "FAIL",
            "checkpoint steps [2, 4, 6, 8, 10] differ from the planned steps [2, 4, 6, 8] "
            "(logs/train/checkpoints/index.json)",
        ),
    ]


def test_plan_one_step_off_even_spacing(tmp_path):
    """12 steps: 12*i/5 = 2.4, 4.8, 7.2, 9.6, 12 -> 2, 5, 7, 10, 12. A plan with 6 for 7 (one step off)
    fails; the exact plan passes. Mutants: `!=` turned into `==`; the evenly-spaced check dropped; its
    message's 'expected' list changed; total taken from another key."""
    actual = checkpoint_folder(tmp_path, steps=[2, 5, 6, 10, 12], planned=[2, 5, 6, 10, 12], total=12)
    assert run_checkpoints(tmp_path, actual)[1] == [
        ("FAIL", "planned steps [2, 5, 6, 10, 12] are not evenly spaced over 12 steps (expected [2, 5, 7, 10, 12])")
    ]
    ok = tmp_path / "ok"
    actual = checkpoint_folder(ok, steps=[2, 5, 7, 10, 12], planned=[2, 5, 7, 10, 12], total=12)
    assert run_checkpoints(ok, actual)[1][0][0] == "ok"


def test_plan_without_total_is_not_checked_for_spacing(tmp_path):
    """A plan whose index has no integer total_steps cannot be checked for spacing; it still must match
    the folders. Mutant: `isinstance(total, int)` dropped (the comparison with a None plan fails it)."""
    actual = checkpoint_folder(tmp_path, planned=[1, 4, 6, 8, 10], steps=[1, 4, 6, 8, 10], total="10")
    assert run_checkpoints(tmp_path, actual)[1][0][0] == "ok"


def test_checkpoints_not_what_merge_wrote_or_evaluate_scored(tmp_path):
    """Mutants: merge's sha compared with `==`; the scores' sha check dropped or inverted; the messages'
    shas swapped; a step whose sha is unknown (no file) checked anyway, or ending the loop (`continue` ->
    `break`)."""
    actual = checkpoint_folder(tmp_path)
    write(tmp_path, MERGE, {"checkpoints": [{"step": s, "sha256": fake_sha(s) if s != 4 else "m" * 64} for s in STEPS]})
    write(tmp_path, "logs/evaluate/step-000008/scores.json", {"checkpoint_sha256": "e" * 64})
    del actual[ckpt(2)]  # the first step's file has no sha: it is skipped, the others are still checked
    write(tmp_path, "logs/evaluate/step-000002/scores.json", {"checkpoint_sha256": "x" * 64})
    assert run_checkpoints(tmp_path, actual)[1] == [
        ("FAIL", f"checkpoints/step-000004/model.ckpt: sha256 {fake_sha(4)} is not the file merge wrote ({'m' * 64})"),
        (
            "FAIL",
            f"checkpoints/step-000008/model.ckpt: sha256 {fake_sha(8)} is not the file evaluate scored "
            f"({'e' * 64}, logs/evaluate/step-000008/scores.json)",
        ),
    ]


def test_checkpoints_without_merge_index_or_scores(tmp_path):
    """No merge index: every step lacks its entry; scores.json that is not an object is not compared.
    Mutant: `isinstance(scores, dict)` dropped (a list crashes)."""
    actual = checkpoint_folder(tmp_path)
    (tmp_path / MERGE).unlink()
    write(tmp_path, "logs/evaluate/step-000002/scores.json", [1])
    got = run_checkpoints(tmp_path, actual)[1]
    assert got == [
        ("FAIL", f"checkpoints/step-{s:06d}/model.ckpt: logs/merge/index.json has no entry for step {s}") for s in STEPS
    ]


# ---- the workers' logs -------------------------------------------------------------------------


def spec_with(workers=1, limit=0, fmt="math", max_new_tokens=8):
    return SimpleNamespace(
        train=SimpleNamespace(workers=workers),
        eval=SimpleNamespace(limit=limit, max_new_tokens=max_new_tokens),
        data=SimpleNamespace(format=fmt),
    )


@pytest.mark.parametrize("workers", [None, 0, 1])
def test_one_worker_needs_no_msrun_log(tmp_path, workers):
    """Mutants: `workers <= 1` turned into `< 1` (a one-worker run asked for logs); `or 1` dropped."""
    sub, f = fresh(tmp_path)
    checks.check_worker_logs(sub, f, spec_with(workers))
    checks.check_worker_logs(sub, f, None)
    assert f.lines == []


def test_worker_logs(tmp_path):
    """Two workers, two logs (in a node folder): ok; one missing: named. Mutants: `<` turned into `<=`
    (exactly enough logs fail); the glob narrowed; the list of found logs or 'none' changed."""
    sub, f = fresh(tmp_path)
    write(tmp_path, "logs/train/msrun/worker_0.log", "")
    checks.check_worker_logs(sub, f, spec_with(2))
    write(tmp_path, "logs/train/msrun/node-1/worker_1.log", "")
    checks.check_worker_logs(sub, f, spec_with(2))
    assert lines(f, "logs") == [
        (
            "FAIL",
            "train ran 2 workers but logs/train/ holds 1 worker log(s) (logs/train/msrun/worker_0.log): "
            "every worker's msrun log belongs in the submission",
        ),
        ("ok", "logs/train/ holds the msrun logs of all 2 workers"),
    ]


def test_worker_logs_none_and_many(tmp_path):
    """Mutants: 'none' changed; the first four logs listed as three or five."""
    sub, f = fresh(tmp_path)
    (tmp_path / "logs/train").mkdir(parents=True)
    checks.check_worker_logs(sub, f, spec_with(2))
    for i in range(5):
        write(tmp_path, f"logs/train/msrun/worker_{i}.log", "")
    checks.check_worker_logs(sub, f, spec_with(8))
    names = ", ".join(f"logs/train/msrun/worker_{i}.log" for i in range(4))
    assert f.failed("logs") == [
        "train ran 2 workers but logs/train/ holds 0 worker log(s) (none): every worker's msrun log belongs "
        "in the submission",
        f"train ran 8 workers but logs/train/ holds 5 worker log(s) ({names}): every worker's msrun log "
        "belongs in the submission",
    ]


# ---- selfcheck.png ------------------------------------------------------------------------------


def png_with(path: Path, keys: dict[str, str]) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in keys.items():
        info.add_text(k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)


RESULTS_BYTES = b'{"run_id": "tiny", "code": {"commit": "abc123"}}'


def test_selfcheck_shows_this_run(tmp_path):
    """Mutants: the results' sha taken of another file or not at all; the ok line changed."""
    write(tmp_path, "results.json", RESULTS_BYTES)
    png_with(
        tmp_path / "selfcheck.png",
        {"tunebox.run_id": "tiny", "tunebox.commit": "abc123", "tunebox.results_sha256": sha(RESULTS_BYTES)},
    )
    sub, f = fresh(tmp_path)
    checks.check_selfcheck(sub, f, json.loads(RESULTS_BYTES))
    assert lines(f, "selfcheck") == [("ok", "selfcheck.png shows this run (tiny) and this results.json")]


def test_selfcheck_of_another_run(tmp_path):
    """Mutants: `!=` turned into `==` in the comparison; the joiner or message changed; the commit's
    `or ''` dropped (a run without a commit compares None with '')."""
    write(tmp_path, "results.json", RESULTS_BYTES)
    png_with(
        tmp_path / "selfcheck.png",
        {"tunebox.run_id": "other", "tunebox.commit": "", "tunebox.results_sha256": "f" * 64},
    )
    sub, f = fresh(tmp_path)
    checks.check_selfcheck(sub, f, {"run_id": "tiny", "code": {}})
    assert lines(f, "selfcheck") == [
        (
            "FAIL",
            f"selfcheck.png shows another run or other results: tunebox.run_id = 'other', the folder gives "
            f"'tiny'; tunebox.results_sha256 = '{'f' * 64}', the folder gives '{sha(RESULTS_BYTES)}'",
        )
    ]


def test_selfcheck_without_results(tmp_path):
    """No results.json: its sha is None. Mutant: `if results_file.is_file()` inverted (reading a missing file)."""
    png_with(tmp_path / "selfcheck.png", {"tunebox.run_id": "tiny", "tunebox.commit": ""})
    sub, f = fresh(tmp_path)
    checks.check_selfcheck(sub, f, None)
    assert lines(f, "selfcheck") == [
        ("FAIL", "selfcheck.png shows another run or other results: tunebox.run_id = 'tiny', the folder gives None")
    ]


def test_selfcheck_missing_or_not_a_png(tmp_path):
    """Mutants: the missing picture reported here (check_files names it); `not keys` inverted; the message changed."""
    sub, f = fresh(tmp_path)
    checks.check_selfcheck(sub, f, None)
    assert f.lines == []
    write(tmp_path, "selfcheck.png", b"not a png")
    checks.check_selfcheck(sub, f, None)
    assert lines(f, "selfcheck") == [
        ("FAIL", "selfcheck.png is not a PNG written by bundle (no run id, commit and results checksum in it)")
    ]


# ---- the training log ---------------------------------------------------------------------------


def loss_rows(steps, loss=lambda s: 2.0 + s / 4):
    return [{"step": s, "loss": loss(s)} for s in steps]


def log_folder(root: Path, steps, total, csv: str = None, checkpoints=(), merged=()) -> None:
    write(root, INDEX, {"total_steps": total, "checkpoints": list(checkpoints)})
    write_jsonl(root, "logs/train/loss.jsonl", loss_rows(steps))
    if csv is not None:
        write(root, "logs/train/loss.csv", csv)
    if merged:
        write(root, MERGE, {"checkpoints": list(merged)})


def run_logs(root: Path) -> list[tuple[str, str]]:
    sub, f = fresh(root)
    checks.check_logs(sub, f)
    return lines(f, "logs")


# loss 2 + s/4 at steps 1..3: 2.25, 2.5, 2.75, as train writes them to 6 decimals
CSV3 = "step,lr,loss\n1,0.001,2.250000\n2,0.001,2.500000\n3,0.001,2.750000\n"


def test_log_covers_every_step(tmp_path):
    """Mutants: `range(1, total + 1)` off by one either way; the ok lines changed; the loss values not checked."""
    log_folder(tmp_path, [1, 2, 3], 3, CSV3)
    assert run_logs(tmp_path) == [
        ("ok", "training log has one line for each of the 3 steps"),
        ("ok", "loss.jsonl's losses match loss.csv and the 0 checkpoint records"),
    ]


@pytest.mark.parametrize(
    "steps, message",
    [
        ([1, 3], "logs/train/loss.jsonl covers 2 of 3 steps; missing [2]"),
        ([0, 1, 2], "logs/train/loss.jsonl covers 3 of 3 steps; missing [3]"),
        ([1, 2, 2, 3], "logs/train/loss.jsonl covers 3 of 3 steps; 1 repeated"),
        ([1, 2, 3, 4], "logs/train/loss.jsonl covers 4 of 3 steps"),
        ([], "logs/train/loss.jsonl covers 0 of 3 steps; missing [1, 2, 3]"),
    ],
)
def test_log_with_steps_missing_shifted_repeated_or_extra(tmp_path, steps, message):
    """Mutants: the gaps or the repeats counted the other way, left out, or their words changed;
    `len(set(steps))` turned into `len(steps)`."""
    log_folder(tmp_path, steps, 3)
    assert run_logs(tmp_path)[0] == ("FAIL", message)


def test_log_gaps_are_cut_at_ten(tmp_path):
    """Mutant: the first ten gaps shown as nine or eleven."""
    log_folder(tmp_path, [1], 13)
    assert run_logs(tmp_path)[0] == (
        "FAIL",
        "logs/train/loss.jsonl covers 1 of 13 steps; missing [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]",
    )


def test_log_unchecked_without_total_or_loss(tmp_path):
    """Mutants: `or` turned into `and` (a missing total crashes or is checked); the early return dropped."""
    write(tmp_path, INDEX, {"total_steps": "3"})
    write_jsonl(tmp_path, "logs/train/loss.jsonl", loss_rows([1]))
    assert run_logs(tmp_path) == []
    write(tmp_path / "b", INDEX, {"total_steps": 3})
    assert run_logs(tmp_path / "b") == []
    assert run_logs(tmp_path / "c") == []  # no index either


def test_loss_csv_disagrees(tmp_path):
    """Step 2's loss 2.5 written to the csv as 2.600000. Mutants: the 6-decimal format changed (every step
    differs); `!=` turned into `==`; the first step or the count changed in the message."""
    log_folder(tmp_path, [1, 2, 3], 3, CSV3.replace("2.500000", "2.600000"))
    assert run_logs(tmp_path)[1] == (
        "FAIL",
        "logs/train/loss.jsonl and loss.csv disagree at 1 step(s), first step 2: loss 2.5 against '2.600000'",
    )


def test_loss_csv_columns_in_any_order_and_odd_rows(tmp_path):
    """The columns are found by name; a row with a missing cell or a non-numeric step is not a step.
    A step only in the csv disagrees (None against its value). Mutants: the column indexes swapped or fixed;
    `len(cells) == len(header)` dropped; `isdigit()` dropped; the union of steps made the jsonl's alone."""
    csv = "loss,step\n2.250000,1\n2.500000,2\n2.750000,3\n9.0\nx,total\n"
    log_folder(tmp_path, [1, 2, 3], 3, csv)
    assert run_logs(tmp_path)[1][0] == "ok"
    log_folder(tmp_path / "b", [1, 2, 3], 3, csv + "1.000000,4\n")
    assert run_logs(tmp_path / "b")[1] == (
        "FAIL",
        "logs/train/loss.jsonl and loss.csv disagree at 1 step(s), first step 4: loss None against '1.000000'",
    )


@pytest.mark.parametrize("csv", ["", "step,lr\n1,0.1\n", "lr,loss\n0.1,2.25\n"])
def test_loss_csv_without_columns(tmp_path, csv):
    """Mutants: `or` turned into `and` (one of the two columns is enough); an empty file crashes (`lines[0]`)."""
    log_folder(tmp_path, [1, 2, 3], 3, csv)
    assert run_logs(tmp_path)[1] == ("FAIL", "logs/train/loss.csv has no step and loss columns")


def test_loss_csv_row_with_a_loss_that_is_not_a_number(tmp_path):
    """A jsonl loss that is not a number disagrees whatever the csv says. Mutant: the isinstance test dropped
    (formatting a string with :.6f crashes)."""
    write(tmp_path, INDEX, {"total_steps": 1})
    write_jsonl(tmp_path, "logs/train/loss.jsonl", [{"step": 1, "loss": "nan"}])
    write(tmp_path, "logs/train/loss.csv", "step,loss\n1,nan\n")
    assert run_logs(tmp_path)[1] == (
        "FAIL",
        "logs/train/loss.jsonl and loss.csv disagree at 1 step(s), first step 1: loss 'nan' against 'nan'",
    )


def test_checkpoint_records_disagree_with_the_log(tmp_path):
    """Train's index records step 2's loss as 2.5 (right) and step 3's as 9.0; merge's records step 2 as 1.0.
    Mutants: `!=` turned into `==`; train's or merge's records left out (or read from the wrong key); a
    non-object entry not skipped; the message's order of values swapped; the record count changed."""
    log_folder(
        tmp_path,
        [1, 2, 3],
        3,
        checkpoints=[{"step": 2, "loss": 2.5}, {"step": 3, "loss": 9.0}, "junk"],
        merged=[{"step": 2, "train_loss": 1.0, "loss": 2.5}, 7],
    )
    assert run_logs(tmp_path)[1:] == [
        ("FAIL", "logs/train/loss.jsonl step 3 loss 2.75, logs/train/checkpoints/index.json records 9.0"),
        ("FAIL", "logs/train/loss.jsonl step 2 loss 2.5, logs/merge/index.json records 1.0"),
    ]
    log_folder(
        tmp_path / "b",
        [1, 2, 3],
        3,
        checkpoints=[{"step": 2, "loss": 2.5}, {"step": 3, "loss": 2.75}],
        merged=[{"step": 2, "train_loss": 2.5}],
    )
    assert run_logs(tmp_path / "b")[1] == ("ok", "loss.jsonl's losses match loss.csv and the 3 checkpoint records")


# ---- accuracies from the bundled predictions ----------------------------------------------------

HELDOUT = [
    {"line": 3, "prompt": "1+1?", "reference": "2"},
    {"line": 7, "prompt": "6*7?", "reference": "42"},
    {"line": 9, "prompt": "10-1?", "reference": "9"},
]


def prediction(row: dict, answer: str, strict: bool, **extra) -> dict:
    return {**row, "answer": answer, "strict": strict, "tolerant": strict, **extra}


def predictions_folder(root: Path, names=("base",), preds=None, scores=None) -> None:
    write_jsonl(root, "logs/prep/heldout.jsonl", HELDOUT)
    # two of three right: 2 and 42 are the references, 8 is not 9
    preds = preds or [
        prediction(HELDOUT[0], "2", True),
        prediction(HELDOUT[1], "42", True),
        prediction(HELDOUT[2], "8", False),
    ]
    for name in names:
        write_jsonl(root, f"logs/evaluate/{name}/predictions.jsonl", preds)
        write(
            root,
            f"logs/evaluate/{name}/scores.json",
            scores or {"accuracy_strict": 2 / 3, "accuracy_tolerant": 2 / 3, "n": 3},
        )


def run_accuracies(root: Path, names=("base",), limit=0):
    sub, f = fresh(root)
    out = checks.recompute_accuracies(sub, f, spec_with(limit=limit), list(names))
    return out, lines(f, "results")


def test_accuracies_rescored(tmp_path):
    """Mutants: the accuracies not returned by name; a name without predictions returned."""
    predictions_folder(tmp_path, names=("base", "step-000002"))
    out, got = run_accuracies(tmp_path, names=("base", "step-000002", "step-000004"))
    assert got == []
    assert sorted(out) == ["base", "step-000002"]
    assert out["base"]["n"] == 3 and out["base"]["accuracy_strict"] == pytest.approx(2 / 3)


def test_accuracies_scores_json_disagrees(tmp_path):
    """Mutants: the scores' comparison inverted or dropped; a key left out of it; `isinstance(scores, dict)`
    dropped; the message changed."""
    predictions_folder(tmp_path, scores={"accuracy_strict": 1.0, "accuracy_tolerant": 2 / 3, "n": 4})
    out, got = run_accuracies(tmp_path)
    assert got == [
        ("FAIL", f"logs/evaluate/base/scores.json accuracy_strict = 1.0, its predictions give {2 / 3}"),
        ("FAIL", "logs/evaluate/base/scores.json n = 4, its predictions give 3"),
    ]
    write(tmp_path, "logs/evaluate/base/scores.json", [])
    assert run_accuracies(tmp_path)[1] == []


def test_accuracies_recorded_verdict_differs(tmp_path):
    """Line 9's answer 8 recorded as right. Mutants: the disagreement not reported, or its message changed."""
    preds = [prediction(HELDOUT[0], "2", True), prediction(HELDOUT[1], "42", True), prediction(HELDOUT[2], "8", True)]
    predictions_folder(tmp_path, preds=preds)
    assert run_accuracies(tmp_path)[1] == [
        (
            "FAIL",
            "logs/evaluate/base/predictions.jsonl: the recorded verdict differs from the contest rule on line(s) [9]",
        )
    ]


def test_accuracies_of_rows_off_the_list(tmp_path):
    """Predictions for lines 3, 7 and 99 (99 is not held out). Mutants: the line comparison inverted or
    dropped; the message's lists changed."""
    odd = {"line": 99, "prompt": "10-1?", "reference": "9"}
    preds = [prediction(HELDOUT[0], "2", True), prediction(HELDOUT[1], "42", True), prediction(odd, "8", False)]
    predictions_folder(tmp_path, preds=preds)
    assert run_accuracies(tmp_path)[1] == [
        (
            "FAIL",
            "logs/evaluate/base/predictions.jsonl answers rows [3, 7, 99]..., the held-out rows are "
            "[3, 7, 9]... (logs/prep/heldout.jsonl)",
        )
    ]


def test_accuracies_with_a_changed_prompt_or_reference(tmp_path):
    """Line 7's reference changed to 41 (the answer 42 then wrong, recorded so), line 3's prompt changed.
    Mutants: the prompt or the reference left out of the comparison; `in held` dropped; message changed."""
    preds = [
        prediction({**HELDOUT[0], "prompt": "2+0?"}, "2", True),
        prediction({**HELDOUT[1], "reference": "41"}, "42", False),
        prediction(HELDOUT[2], "8", False),
    ]
    predictions_folder(tmp_path, preds=preds, scores={"accuracy_strict": 1 / 3, "accuracy_tolerant": 1 / 3, "n": 3})
    assert run_accuracies(tmp_path)[1] == [
        (
            "FAIL",
            "logs/evaluate/base/predictions.jsonl: the prompt or reference of line(s) [3, 7] differs from "
            "logs/prep/heldout.jsonl",
        )
    ]


def test_accuracies_limited_to_the_first_rows(tmp_path):
    """eval.limit 2: the first two held-out rows are the list. Mutants: the limit ignored, or `[:limit]` off by one."""
    preds = [prediction(HELDOUT[0], "2", True), prediction(HELDOUT[1], "42", True)]
    predictions_folder(tmp_path, preds=preds, scores={"accuracy_strict": 1.0, "accuracy_tolerant": 1.0, "n": 2})
    assert run_accuracies(tmp_path, limit=2)[1] == []
    assert run_accuracies(tmp_path, limit=0)[1][0][1].endswith(
        "answers rows [3, 7]..., the held-out rows are [3, 7, 9]... (logs/prep/heldout.jsonl)"
    )


def test_accuracies_row_without_answer(tmp_path):
    """Mutants: the KeyError not caught, or the name kept in the result; the message changed."""
    predictions_folder(tmp_path, preds=[{"line": 3, "reference": "2"}])
    out, got = run_accuracies(tmp_path)
    assert out == {}
    assert got == [
        (
            "FAIL",
            "logs/evaluate/base/predictions.jsonl: a row lacks 'answer' (answer and reference are needed to "
            "re-score it)",
        )
    ]


# ---- SQuAD -------------------------------------------------------------------------------------


def squad_rows(right: int, wrong: int) -> list[dict]:
    return [{"answer": "Paris", "gold": ["Paris"]}] * right + [{"answer": "London", "gold": ["Berlin"]}] * wrong


def run_squad(root: Path, rows: dict, base: dict, names: list[str]):
    sub, f = fresh(root)
    n = checks.check_squad(sub, f, rows, base, names)
    return n, lines(f, "results")


def test_squad_rescored_and_retention(tmp_path):
    """Base: 2 of 2 right (F1 = EM = 100); step 2: 1 of 2 (50/50, below 90% of the base: fails); step 4: 2 of 2
    (passes). Mutants: the metrics compared with `==`... inverted; the base row read as a checkpoint's;
    `got is not want` turned into `is`; the retention message's figures swapped or their format changed."""
    write_jsonl(tmp_path, "logs/evaluate/base/squad_predictions.jsonl", squad_rows(2, 0))
    write_jsonl(tmp_path, "logs/evaluate/step-000002/squad_predictions.jsonl", squad_rows(1, 1))
    write_jsonl(tmp_path, "logs/evaluate/step-000004/squad_predictions.jsonl", squad_rows(2, 0))
    base = {"squad_f1": 100.0, "squad_em": 100.0}
    rows = {
        "step-000002": {"squad_f1": 50.0, "squad_em": 50.0, "passes_retention": False},
        "step-000004": {"squad_f1": 100.0, "squad_em": 100.0, "passes_retention": True},
    }
    names = ["base", "step-000002", "step-000004"]
    assert run_squad(tmp_path, rows, base, names) == (3, [])
    rows["step-000002"]["passes_retention"] = True
    rows["step-000004"]["squad_em"] = 99.0
    base["squad_f1"] = 100.0 + 2e-9
    assert run_squad(tmp_path, rows, base, names) == (
        3,
        [
            (
                "FAIL",
                f"results.json base squad_f1 = {100.0 + 2e-9!r}, logs/evaluate/base/squad_predictions.jsonl "
                "gives 100.0",
            ),
            (
                "FAIL",
                "results.json step-000004 squad_em = 99.0, logs/evaluate/step-000004/squad_predictions.jsonl "
                "gives 100.0",
            ),
            (
                "FAIL",
                "results.json step-000002 passes_retention = True; its SQuAD F1/EM (50.00/50.00) against the "
                "base's (100.00/100.00) give False",
            ),
        ],
    )


def test_squad_within_tolerance_and_without_base(tmp_path):
    """A difference of 1e-10 is the same number (tolerance 1e-9); without the base's SQuAD no retention
    verdict is derived, and a name without SQuAD predictions is skipped. Mutants: the tolerance tightened to
    same_number's default...; `"base" not in measured` inverted; an empty file counted."""
    write_jsonl(tmp_path, "logs/evaluate/step-000002/squad_predictions.jsonl", squad_rows(1, 1))
    write(tmp_path, "logs/evaluate/step-000004/squad_predictions.jsonl", "")
    rows = {"step-000002": {"squad_f1": 50.0 + 1e-10, "squad_em": 50.0, "passes_retention": True}}
    assert run_squad(tmp_path, rows, {}, ["base", "step-000002", "step-000004"]) == (1, [])


def test_squad_row_without_gold(tmp_path):
    """Mutants: the KeyError not caught; `continue` dropped; the message changed."""
    write_jsonl(tmp_path, "logs/evaluate/base/squad_predictions.jsonl", [{"answer": "Paris"}])
    assert run_squad(tmp_path, {}, {}, ["base"]) == (
        0,
        [("FAIL", "logs/evaluate/base/squad_predictions.jsonl: cannot re-score SQuAD ('gold')")],
    )


def test_squad_checkpoint_row_missing(tmp_path):
    """A checkpoint measured but absent from results.json: its figures are None. Mutant: `or {}` dropped."""
    write_jsonl(tmp_path, "logs/evaluate/step-000002/squad_predictions.jsonl", squad_rows(2, 0))
    assert run_squad(tmp_path, {}, {}, ["step-000002"])[1] == [
        (
            "FAIL",
            "results.json step-000002 squad_f1 = None, logs/evaluate/step-000002/squad_predictions.jsonl gives 100.0",
        ),
        (
            "FAIL",
            "results.json step-000002 squad_em = None, logs/evaluate/step-000002/squad_predictions.jsonl gives 100.0",
        ),
    ]


def test_same():
    """Mutants: a bool let through to the numeric comparison (True, 1 then differ); `and` turned into `or`."""
    assert checks._same(0.1 + 0.2, 0.3) and checks._same(3, 3.0) and not checks._same(1, 1.001)
    assert checks._same(True, 1) and checks._same(1, True) and not checks._same(True, False)
    assert checks._same("a", "a") and not checks._same("1", 1) and checks._same(None, None)
    assert not checks._same(1, None) and not checks._same(None, 0)


# ---- results.json's early exits -----------------------------------------------------------------


def test_results_without_a_spec(tmp_path):
    """Mutants: the message changed; results returned as None; a results.json that is not an object returned."""
    write(tmp_path, "results.json", {"run_id": "tiny"})
    sub, f = fresh(tmp_path)
    assert checks.check_results(sub, f, None, [], {}) == {"run_id": "tiny"}
    assert lines(f, "results") == [("FAIL", "results.json cannot be checked without a loadable hyperparams.yaml")]
    write(tmp_path / "b", "results.json", [1])
    sub, f = fresh(tmp_path / "b")
    assert checks.check_results(sub, f, spec_with(), [], {}) is None and f.lines == []
    sub, f = fresh(tmp_path / "c")
    assert checks.check_results(sub, f, None, [], {}) is None and f.lines == []


# ---- environment --------------------------------------------------------------------------------


def manifests_folder(root: Path) -> None:
    for job in ("prep", "train", "merge", "evaluate"):
        write(root, f"logs/{job}/manifest.json", {"hostname": "h", "pip_freeze": ["numpy==1.26.4"]})


def test_environment_unchecked_without_every_manifest(tmp_path):
    """Mutant: `all` turned into `any` (three manifests of four are compared)."""
    manifests_folder(tmp_path)
    (tmp_path / "logs/merge/manifest.json").unlink()
    write(tmp_path, "environment.json", [])
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    assert f.lines == []


def test_environment_files_absent_is_ok_here(tmp_path):
    """Neither file present (check_files names them): nothing contradicts the manifests. Mutant: the ok line
    changed or given under a failure."""
    manifests_folder(tmp_path)
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    assert lines(f, "environment") == [
        ("ok", "environment.json and ENVIRONMENT.md are generated from the jobs' manifests")
    ]


def test_environment_json_edited(tmp_path):
    """environment.json that is not an object, and one with a single made-up key: its diff lists 8 keys
    (the 7 the record has, and the made-up one), the first five shown. Mutants: the first five shown as
    four or six; the 'not an object' branch swapped; the messages changed; `!=` turned into `==`."""
    manifests_folder(tmp_path)
    write(tmp_path, "environment.json", [])
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    assert f.failed("environment") == ["environment.json is not what the bundled manifests give: not an object"]
    write(tmp_path, "environment.json", {"x": 1})
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    (message,) = f.failed("environment")
    head = "environment.json is not what the bundled manifests give: contest_base: None != {"
    assert message.startswith(head) and message.count("; ") == 4 and "generated_from: None != [" in message


def test_environment_md_edited(tmp_path):
    """Mutants: the comparison inverted; the md's message changed; an absent md compared."""
    manifests_folder(tmp_path)
    write(tmp_path, "ENVIRONMENT.md", "# Environment\n\nwritten by hand\n")
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    assert lines(f, "environment") == [
        ("FAIL", "ENVIRONMENT.md is not what the bundled manifests give (edited by hand?)")
    ]


# ---- code.tar.gz --------------------------------------------------------------------------------


def archive(path: Path, names: list[str], mode: str = "w:gz") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for n in names:
            info = tarfile.TarInfo(n)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))


def run_code(root: Path, results=None) -> list[tuple[str, str]]:
    sub, f = fresh(root)
    checks.check_code(sub, f, results)
    return lines(f, "code")


def test_code_archive_ok(tmp_path):
    """Mutants: the entry count or the note changed; 'source not recorded' changed; `endswith` turned into
    `startswith`."""
    archive(tmp_path / "code.tar.gz", ["tunebox/jobs/train.py", "tunebox/pyproject.toml"])
    assert run_code(tmp_path, {"code": {"note": "git abc123, clean"}}) == [
        ("ok", "code.tar.gz holds 2 entries; git abc123, clean")
    ]
    assert run_code(tmp_path, None) == [("ok", "code.tar.gz holds 2 entries; source not recorded")]
    assert run_code(tmp_path / "none") == []


def test_code_archive_unreadable_or_not_gzip(tmp_path):
    """A plain (uncompressed) tar is not a tar.gz. Mutants: the mode 'r:gz' loosened to 'r' or 'r:*'; the
    except clause narrowed; the message changed; the early return dropped."""
    write(tmp_path, "code.tar.gz", b"not an archive")
    ((kind, message),) = run_code(tmp_path)
    assert kind == "FAIL" and message.startswith("code.tar.gz is not a readable tar.gz archive (")
    archive(tmp_path / "plain" / "code.tar.gz", ["jobs/train.py"], mode="w")
    ((kind, message),) = run_code(tmp_path / "plain")
    assert kind == "FAIL" and message.startswith("code.tar.gz is not a readable tar.gz archive (")


def test_code_archive_escaping_or_without_train(tmp_path):
    """Mutants: `or` turned into `and` in the unsafe test; the absolute or '..' test dropped; the first five
    unsafe paths shown as four; the jobs/train.py test inverted; the messages changed."""
    names = ["/abs.py", "../up.py", "a/../../b.py", "ok/x..y.py", "/2", "/3", "/4"]
    archive(tmp_path / "code.tar.gz", names)
    assert run_code(tmp_path) == [
        ("FAIL", "code.tar.gz has paths outside its folder: ['/abs.py', '../up.py', 'a/../../b.py', '/2', '/3']"),
        ("FAIL", "code.tar.gz has no jobs/train.py (7 entries): not tunebox's sources"),
    ]


# ---- the re-run's inputs and early exits ---------------------------------------------------------


def test_rerun_needs_spec_tokenizer_and_heldout(tmp_path):
    """Mutants: `or` turned into `and` (a missing tokenizer let through); the messages changed; an empty
    held-out file let through (`not heldout` turned into `heldout is None`)."""
    sub, f = fresh(tmp_path)
    checks.rerun_evaluation(sub, f, None, [2], None, 0.0)
    checks.rerun_evaluation(sub, f, spec_with(), [2], None, 0.0)
    write(tmp_path, "tokenizer/tokenizer.json", "{}")
    checks.rerun_evaluation(sub, f, spec_with(), [2], None, 0.0)
    write(tmp_path / "b", "tokenizer/tokenizer.json", "{}")
    write(tmp_path / "b", "logs/prep/heldout.jsonl", "")
    sub, g = fresh(tmp_path / "b")
    checks.rerun_evaluation(sub, g, spec_with(), [2], None, 0.0)
    assert f.failed("rerun") + g.failed("rerun") == [
        "cannot re-run: hyperparams.yaml or tokenizer/ is missing or broken",
        "cannot re-run: hyperparams.yaml or tokenizer/ is missing or broken",
        "cannot re-run: logs/prep/heldout.jsonl is missing or empty",
        "cannot re-run: logs/prep/heldout.jsonl is missing or empty",
    ]


def limits_folder(root: Path, limits) -> Submission:
    write_jsonl(
        root,
        "logs/evaluate/step-000002/predictions.jsonl",
        [{"line": 10 + i, "max_new_tokens": v} for i, v in enumerate(limits)],
    )
    return Submission(root, Findings())


def test_new_token_limits_recorded_per_row(tmp_path):
    """1 and the cap (8) are inside 1..8. Mutants: `0 < v` turned into `0 <= v` or `1 < v`; `v <= cap` into
    `v < cap`; the recorded limits not returned."""
    sub = limits_folder(tmp_path, [1, 8, 5])
    assert checks.new_token_limits(sub, sub.findings, "step-000002", 3, 8) == [1, 8, 5]
    assert sub.findings.lines == []


@pytest.mark.parametrize("limits, n_rows", [([4, 4], 3), ([4, None, 4], 3), ([], 2)])
def test_new_token_limits_fall_back_to_the_cap(tmp_path, limits, n_rows):
    """Too few recorded, one missing, or no predictions: every row gets eval.max_new_tokens. Mutants:
    `!=` turned into `==`; `any` into `all`; `or` into `and`."""
    sub = limits_folder(tmp_path, limits)
    assert checks.new_token_limits(sub, sub.findings, "step-000002", n_rows, 8) == [8] * n_rows
    assert checks.new_token_limits(sub, sub.findings, "step-000004", 2, 8) == [8, 8]
    assert sub.findings.lines == []


def test_new_token_limits_out_of_range(tmp_path):
    """0, 9 (above the cap 8) and "4" (not an int) on lines 10, 12, 13. Mutants: the range check's bounds
    moved; `not isinstance` dropped; the lines shown from the wrong rows; the message changed."""
    sub = limits_folder(tmp_path, [0, 8, 9, "4"])
    assert checks.new_token_limits(sub, sub.findings, "step-000002", 4, 8) is None
    assert lines(sub.findings, "rerun") == [
        (
            "FAIL",
            "step-000002: predictions.jsonl records max_new_tokens outside 1..eval.max_new_tokens (8) on "
            "line(s) [10, 12, 13]",
        )
    ]


# ---- MindFormers-dependent checks, where they stop without MindFormers' work ---------------------


def test_mindformers_check_without_folder(tmp_path):
    """Mutant: the early return dropped (MindFormers loaded for a folder that is not there)."""
    sub, f = fresh(tmp_path)
    checks.check_mindformers(sub, f)
    assert f.lines == []


def test_predict_cannot_run_without_its_inputs(tmp_path, monkeypatch):
    """Mutants: an `or` of the input tests turned into `and`; the message changed. (MindFormers' presence is
    what mindformers_importable reports; here it is said to be there, and to be missing.)"""
    monkeypatch.setattr(checks, "mindformers_importable", lambda: True)
    write_jsonl(tmp_path, "logs/prep/heldout.jsonl", HELDOUT)
    write(tmp_path, "tokenizer/tokenizer.json", "{}")
    sub, f = fresh(tmp_path)
    checks.check_predict(sub, f, None)  # no spec
    checks.check_predict(sub, f, spec_with())  # no predict.yaml
    message = (
        "cannot run mindformers/predict.yaml: hyperparams.yaml, the held-out rows, the tokenizer or "
        "predict.yaml is missing or broken"
    )
    assert lines(f, "predict") == [("FAIL", message), ("FAIL", message)]
    monkeypatch.setattr(checks, "mindformers_importable", lambda: False)
    checks.check_predict(sub, f, spec_with())
    assert lines(f, "predict")[-1] == (
        "note",
        "MindFormers is not installed here: mindformers/predict.yaml was not run",
    )


def test_squad_retention_verdict_must_be_a_bool(tmp_path):
    """passes_retention 1 is not the verdict True (results.json holds a JSON boolean). Mutant: `got is not want`
    turned into `got != want` (1 == True)."""
    write_jsonl(tmp_path, "logs/evaluate/base/squad_predictions.jsonl", squad_rows(2, 0))
    write_jsonl(tmp_path, "logs/evaluate/step-000004/squad_predictions.jsonl", squad_rows(2, 0))
    rows = {"step-000004": {"squad_f1": 100.0, "squad_em": 100.0, "passes_retention": 1}}
    assert run_squad(tmp_path, rows, {"squad_f1": 100.0, "squad_em": 100.0}, ["base", "step-000004"])[1] == [
        (
            "FAIL",
            "results.json step-000004 passes_retention = 1; its SQuAD F1/EM (100.00/100.00) against the "
            "base's (100.00/100.00) give True",
        )
    ]


# ---- results.json against the logs --------------------------------------------------------------

# The "tiny" model (tunebox/model/registry.py: vocab 384, dim 64, 2 layers, 4 heads, 2 KV heads, ffn 128) with
# LoRA rank 2 on wq and wv, worked out by hand:
#   trainable: per layer wq 2*64 + 64*2 = 256, wv (out 2 KV heads * 16 = 32) 2*64 + 32*2 = 192; 2 layers: 896
#   total: embedding and output 384*64 each = 49152; per layer wq 4096 + wk 2048 + wv 2048 + wo 4096
#          + w1, w2, w3 3*8192 + two norms 128 = 36992, two layers 73984; final norm 64: 123200
#   ratio 896/123200 = 0.00727272...; stage 1 score (1 - ratio) * 0.3 + accuracy * 0.7
RATIO = 896 / 123200
TINY_SPEC = SimpleNamespace(
    run_id="tiny",
    stage=1,
    data=SimpleNamespace(format="math"),
    model=SimpleNamespace(name="tiny"),
    lora=SimpleNamespace(rank=2, target_modules="wq|wv"),
    eval=SimpleNamespace(limit=0),
)


def hand_row(step: int, strict: float, loss: float) -> dict:
    return {
        "model": f"step-{step:06d}",
        "step": step,
        "checkpoint": ckpt(step),
        "sha256": fake_sha(step),
        "train_loss": loss,
        "n": 3,
        "accuracy_strict": strict,
        "accuracy_tolerant": strict,
        "squad_f1": None,
        "squad_em": None,
        "retention_f1": None,
        "retention_em": None,
        "passes_retention": None,
        "ratio": RATIO,
        "score": (1 - RATIO) * 0.3 + strict * 0.7,
        "score_tolerant": (1 - RATIO) * 0.3 + strict * 0.7,
    }


def results_folder(root: Path) -> dict:
    """Base 1 of 3 right, step 2 two of 3, step 4 all three; no SQuAD. The choice: the highest score (step 4),
    retention not measured. Returns results.json as written (to edit)."""
    write_jsonl(root, "logs/prep/heldout.jsonl", HELDOUT)
    answers = {"base": ["2", "41", "8"], "step-000002": ["2", "42", "8"], "step-000004": ["2", "42", "9"]}
    for name, said in answers.items():
        write_jsonl(
            root,
            f"logs/evaluate/{name}/predictions.jsonl",
            [{**row, "answer": a} for row, a in zip(HELDOUT, said)],
        )
    write(root, "logs/evaluate/report.json", {})
    write(root, MERGE, {"checkpoints": [{"step": 2, "train_loss": 2.5}, {"step": 4, "train_loss": 3.0}]})
    results = {
        "run_id": "tiny",
        "stage": 1,
        "format": "math",
        "model": "tiny",
        "trainable_params": 896,
        "total_params": 123200,
        "ratio": RATIO,
        "contest_total_params": None,
        "contest_ratio": None,
        "ratio_for_score": RATIO,
        "base": {
            "model": "base",
            "n": 3,
            "accuracy_strict": 1 / 3,
            "accuracy_tolerant": 1 / 3,
            "squad_f1": None,
            "squad_em": None,
            "retention_f1": None,
            "retention_em": None,
            "passes_retention": None,
        },
        "checkpoints": [hand_row(2, 2 / 3, 2.5), hand_row(4, 1.0, 3.0)],
        "chosen": {"model": "step-000004", "rule": "score (retention not measured)", "valid": None},
        "code": {},
    }
    write(root, "results.json", results)
    return results


def run_results(root: Path, spec=TINY_SPEC, steps=(2, 4)):
    sub, f = fresh(root)
    actual = {ckpt(s): fake_sha(s) for s in steps}
    got = checks.check_results(sub, f, spec, list(steps), actual)
    return got, lines(f, "results")


def test_results_match_the_logs(tmp_path):
    """Mutants: the ok line's figures (prediction files, SQuAD files, ratio, choice) or words changed; the
    results not returned; the ok line given under a failure."""
    results = results_folder(tmp_path)
    got, found = run_results(tmp_path)
    assert got == results
    assert found == [
        (
            "ok",
            "results.json matches the logs (accuracies re-scored from 3 prediction files, SQuAD from 0, ratio "
            "0.0072727273 from hyperparams.yaml); chosen step-000004 (score (retention not measured); valid: None)",
        )
    ]


@pytest.mark.parametrize(
    "key, was",
    [
        ("run_id", "'tiny'"),
        ("stage", "1"),
        ("format", "'math'"),
        ("model", "'tiny'"),
        ("trainable_params", "896"),
        ("total_params", "123200"),
        ("ratio", repr(RATIO)),
        ("contest_total_params", "None"),
        ("contest_ratio", "None"),
        ("ratio_for_score", repr(RATIO)),
    ],
)
def test_results_run_figures_edited(tmp_path, key, was):
    """Each figure of the run set to 7. Mutants: a key left out of (or misspelt in) the list compared; the
    comparison inverted; the message changed."""
    results = results_folder(tmp_path)
    results[key] = 7
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1] == [("FAIL", f"results.json {key} = 7, hyperparams.yaml gives {was}")]


ROW_SOURCES = {
    "accuracy_strict": "the bundled predictions",
    "accuracy_tolerant": "the bundled predictions",
    "n": "the bundled predictions",
    "ratio": "hyperparams.yaml",
    "score": "accuracy and ratio",
    "score_tolerant": "accuracy and ratio",
    "sha256": "the checkpoint file",
    "train_loss": "logs/merge/index.json",
    "checkpoint": "the layout",
    "step": "the checkpoint folders",
    "squad_f1": "logs/evaluate/report.json",
    "squad_em": "logs/evaluate/report.json",
    "retention_f1": "logs/evaluate/report.json",
    "retention_em": "logs/evaluate/report.json",
    "passes_retention": "logs/evaluate/report.json",
}


@pytest.mark.parametrize("key", list(ROW_SOURCES))
def test_results_checkpoint_row_edited(tmp_path, key):
    """Each figure of step 2's row set to 'x'; the message names where the right figure comes from. Mutants:
    a source's name changed; the squad/retention/passes prefixes of the report's figures changed; the
    comparison inverted."""
    results = results_folder(tmp_path)
    want = results["checkpoints"][0][key]
    results["checkpoints"][0][key] = "x"
    write(tmp_path, "results.json", results)
    message = f"results.json step-000002 {key} = 'x', {ROW_SOURCES[key]} give(s) {want!r}"
    assert run_results(tmp_path)[1] == [("FAIL", message)]


def test_results_checkpoint_rows_missing_or_extra(tmp_path):
    """Mutants: the rows' names compared unsorted or not at all; non-object rows kept; a missing row checked."""
    results = results_folder(tmp_path)
    results["checkpoints"] = [results["checkpoints"][1], "junk"]
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1] == [
        ("FAIL", "results.json lists checkpoints ['step-000004'], the folder has ['step-000002', 'step-000004']")
    ]
    results["checkpoints"] = [hand_row(4, 1.0, 3.0), hand_row(2, 2 / 3, 2.5)]
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1][0][0] == "ok"


def test_results_base_edited(tmp_path):
    """Mutants: the base not compared, compared inverted, or `or {}` dropped (a missing base crashes)."""
    results = results_folder(tmp_path)
    results["base"]["accuracy_strict"] = 0.5
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1] == [("FAIL", f"results.json base accuracy_strict = 0.5, the logs give {1 / 3!r}")]
    results["base"] = None
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1][0] == ("FAIL", "results.json base model = None, the logs give 'base'")


def test_results_choice_edited(tmp_path):
    """Mutants: the chosen model compared inverted or not at all; `elif` made `if`; the rule/valid pair
    compared partly; the messages changed."""
    results = results_folder(tmp_path)
    results["chosen"]["model"] = "step-000002"
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1] == [
        (
            "FAIL",
            "results.json chooses 'step-000002'; by its rule (score (retention not measured)) the logs choose "
            "'step-000004'",
        )
    ]
    results["chosen"]["rule"] = "best"  # a wrong model is the one finding, whatever its rule says
    write(tmp_path, "results.json", results)
    assert [m for _, m in run_results(tmp_path)[1]] == [
        "results.json chooses 'step-000002'; by its rule (score (retention not measured)) the logs choose 'step-000004'"
    ]
    for key, value in (("rule", "best"), ("valid", True)):
        results = results_folder(tmp_path)
        results["chosen"][key] = value
        write(tmp_path, "results.json", results)
        rule, valid = ("'best'", "None") if key == "rule" else ("'score (retention not measured)'", "True")
        assert run_results(tmp_path)[1] == [
            (
                "FAIL",
                f"results.json's choice says rule {rule}, valid {valid}; the logs give rule "
                "'score (retention not measured)', valid None",
            )
        ]


def test_results_cannot_be_recomputed(tmp_path):
    """A spec whose model the registry does not know. Mutants: the error not caught, the message changed, or
    the results not returned."""
    results = results_folder(tmp_path)
    spec = SimpleNamespace(**{**vars(TINY_SPEC), "model": SimpleNamespace(name="no-such-model")})
    got, found = run_results(tmp_path, spec=spec)
    assert got == results and len(found) == 1
    assert found[0][1].startswith("cannot recompute the results from hyperparams.yaml and the logs: ")
    assert "no-such-model" in found[0][1]


def test_results_without_report_or_predictions(tmp_path):
    """No evaluate report: nothing is compared. A checkpoint without predictions is not re-scored (its
    accuracy is then None). Mutants: the report's isinstance test dropped; the names' file test inverted."""
    results = results_folder(tmp_path)
    (tmp_path / "logs/evaluate/report.json").unlink()
    assert run_results(tmp_path) == (results, [])
    results_folder(tmp_path)
    (tmp_path / "logs/evaluate/step-000002/predictions.jsonl").unlink()
    found = run_results(tmp_path)[1]
    assert ("FAIL", "results.json step-000002 n = 3, the bundled predictions give(s) None") in found
    assert found[-1][0] == "FAIL"


# ---- hyperparams.yaml against the jobs' manifests ------------------------------------------------

HYPERPARAMS = "run_id: tiny\nmodel:\n  name: tiny\n"


def spec_folder(root: Path, recorded: dict, spec_hash: str = "0" * 16) -> None:
    """hyperparams.yaml, and every job's manifest recording `recorded` under a hash that is not the file's
    (so that the recorded spec itself is compared)."""
    write(root, "hyperparams.yaml", HYPERPARAMS)
    for job in ("prep", "train", "merge", "evaluate"):
        write(root, f"logs/{job}/manifest.json", {"spec_hash": spec_hash, "spec": recorded})


def run_spec(root: Path):
    sub, f = fresh(root)
    spec = checks.load_bundled_spec(sub, f)
    return spec, lines(f, "spec")


def test_spec_every_job_recorded(tmp_path):
    """The manifests record only what hyperparams.yaml sets (keys at their defaults count as the same) and
    another runs_dir (where a run lives is not what it is). Mutants: the spec not returned; the ok line's
    hash or words changed; the differences' emptiness test inverted."""
    spec_folder(tmp_path, {"run_id": "tiny", "runs_dir": "/elsewhere", "model": {"name": "tiny"}})
    spec, found = run_spec(tmp_path)
    assert spec.run_id == "tiny" and spec.model.name == "tiny"
    ((kind, message),) = found
    head = "hyperparams.yaml is the spec every job recorded (hash "
    tail = "; keys added to the schema since a job ran count when at their defaults)"
    hash_ = message[len(head) : -len(tail)]
    assert kind == "ok" and message.startswith(head) and message.endswith(tail)
    assert len(hash_) == 16 and all(c in "0123456789abcdef" for c in hash_) and hash_ != "0" * 16


def test_spec_not_what_a_job_ran(tmp_path):
    """train recorded lora.alpha 99 (the file leaves it at its default, 16), and six differences for merge.
    Mutants: the hash comparison inverted; the differences cut at four or six; the message changed."""
    spec_folder(tmp_path, {"run_id": "tiny", "model": {"name": "tiny"}})
    write(
        tmp_path,
        "logs/train/manifest.json",
        {"spec_hash": "1" * 16, "spec": {"run_id": "tiny", "model": {"name": "tiny"}, "lora": {"alpha": 99}}},
    )
    six = {"run_id": "a", "stage": 9, "model": {"name": "b"}, "lora": {"alpha": 1, "rank": 1, "dropout": 0.5}}
    write(tmp_path, "logs/merge/manifest.json", {"spec_hash": "2" * 16, "spec": six})
    _, found = run_spec(tmp_path)
    mine = found[0][1].split("(spec ")[1][:16]
    assert found[0] == (
        "FAIL",
        f"hyperparams.yaml (spec {mine}) is not the spec train ran with ({'1' * 16}): lora.alpha: 99 != 16 "
        "(manifest != hyperparams.yaml)",
    )
    assert found[1] == (
        "FAIL",
        f"hyperparams.yaml (spec {mine}) is not the spec merge ran with ({'2' * 16}): lora.alpha: 1 != 16; "
        "lora.dropout: 0.5 != 0.05; lora.rank: 1 != 8; model.name: 'b' != 'tiny'; run_id: 'a' != 'tiny' "
        "(manifest != hyperparams.yaml)",
    )
    assert len(found) == 2


def test_spec_with_the_files_hash_is_not_compared(tmp_path):
    """A manifest whose hash is the file's is not compared further; a manifest that is not an object is
    skipped. Mutant: `!=` turned into `==` on the hash; the isinstance test dropped."""
    write(tmp_path, "hyperparams.yaml", HYPERPARAMS)
    sub, f = fresh(tmp_path)
    mine = checks.load_bundled_spec(sub, f).spec_hash()
    spec_folder(tmp_path, {"run_id": "other"}, spec_hash=mine)
    write(tmp_path, "logs/prep/manifest.json", [1])
    assert run_spec(tmp_path)[1][0][0] == "ok"


def test_spec_missing_or_broken(tmp_path, monkeypatch):
    """Mutants: the missing file reported here (check_files names it); the messages changed; None not returned."""
    assert run_spec(tmp_path) == (None, [])
    write(tmp_path, "hyperparams.yaml", "run_id: tiny\nlora:\n  rank: -1\n")
    assert run_spec(tmp_path) == (
        None,
        [
            (
                "FAIL",
                f"hyperparams.yaml does not load as a run spec: {tmp_path / 'hyperparams.yaml'}:3: "
                "lora.rank must be > 0",
            )
        ],
    )

    def broken(path):
        raise ValueError("bad value")

    monkeypatch.setattr(checks, "load_spec", broken)
    assert run_spec(tmp_path) == (None, [("FAIL", "hyperparams.yaml: bad value")])


# ---- survivors of the first mutmut pass (2026-12-05), each a test --------------------------------


def test_bytes_that_are_not_utf8_are_read_as_replacement_characters(listed_folder):
    """SHA256SUMS and loss.csv with a byte that is not UTF-8: a finding, not a crash. Mutants (mutmut
    x_check_checksums_33, _35, _38, _39; x_check_loss_values_15, _17, _20, _21): `errors="replace"` dropped,
    made None or an unknown handler's name."""
    with (listed_folder / SUMS).open("ab") as fh:
        fh.write(b"\xff\n")
    sub, f = fresh(listed_folder)
    checks.check_checksums(sub, f)
    assert f.failed("checksums") == ["SHA256SUMS:3: not '<64 hex digits>  <path>': '\ufffd'"]
    root = listed_folder / "log"
    log_folder(root, [1, 2, 3], 3, CSV3)
    (root / "logs/train/loss.csv").write_bytes(CSV3.encode() + b"\xff,1\n")
    assert run_logs(root)[1][0] == "ok"


def test_a_skipped_name_does_not_end_the_loop(tmp_path):
    """The first name has no predictions (or a row without its answer, or SQuAD rows without gold); the
    next is still checked. Mutants (x_recompute_accuracies_18, _30; x_check_squad_15): `continue` -> `break`."""
    predictions_folder(tmp_path, names=("step-000004",), scores={"accuracy_strict": 1.0})
    out, got = run_accuracies(tmp_path, names=("base", "step-000004"))
    assert list(out) == ["step-000004"] and got[0][1].startswith("logs/evaluate/step-000004/scores.json")
    write_jsonl(tmp_path, "logs/evaluate/base/predictions.jsonl", [{"line": 3}])
    out, got = run_accuracies(tmp_path, names=("base", "step-000004"))
    assert list(out) == ["step-000004"] and len(got) == 4
    write_jsonl(tmp_path, "logs/evaluate/base/squad_predictions.jsonl", [{"answer": "Paris"}])
    write_jsonl(tmp_path, "logs/evaluate/step-000004/squad_predictions.jsonl", squad_rows(1, 0))
    n, got = run_squad(tmp_path, {}, {}, ["base", "step-000004"])
    assert n == 1 and len(got) == 3


def test_long_lists_are_cut(tmp_path):
    """Twelve held-out rows, every prediction for other lines, every verdict recorded wrong, every prompt
    changed: the messages show the first 8 lines (rows) and the first 10 (prompts, verdicts, limits).
    Mutants (x_recompute_accuracies_45, _46, _85, _96; x_new_token_limits_33): the cuts moved by one."""
    held = [{"line": i, "prompt": f"{i}+0?", "reference": str(i)} for i in range(12)]
    write_jsonl(tmp_path, "logs/prep/heldout.jsonl", held)
    preds = [{"line": i, "prompt": "?", "reference": str(i), "answer": str(i), "strict": False} for i in range(1, 13)]
    write_jsonl(tmp_path, "logs/evaluate/base/predictions.jsonl", preds)
    got = [m for _, m in run_accuracies(tmp_path)[1]]
    assert got == [
        "logs/evaluate/base/predictions.jsonl answers rows [1, 2, 3, 4, 5, 6, 7, 8]..., the held-out rows are "
        "[0, 1, 2, 3, 4, 5, 6, 7]... (logs/prep/heldout.jsonl)",
        "logs/evaluate/base/predictions.jsonl: the prompt or reference of line(s) [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] "
        "differs from logs/prep/heldout.jsonl",
        "logs/evaluate/base/predictions.jsonl: the recorded verdict differs from the contest rule on line(s) "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]",
    ]
    sub = limits_folder(tmp_path / "limits", [0] * 12)
    assert checks.new_token_limits(sub, sub.findings, "step-000002", 12, 8) is None
    assert sub.findings.failed("rerun")[0].endswith("on line(s) [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]")


def test_plan_given_without_an_index(tmp_path):
    """planned given, no index file: the total is None, not read from None. Mutant (x_check_checkpoints_67):
    `isinstance(index, dict) or True`."""
    actual = checkpoint_folder(tmp_path)
    (tmp_path / INDEX).unlink()
    assert run_checkpoints(tmp_path, actual, planned=STEPS)[1][0][0] == "ok"


def test_code_ok_under_another_checks_failure(tmp_path):
    """Mutant (x_check_code_51): the code check's ok line withheld for another check's failure."""
    archive(tmp_path / "code.tar.gz", ["jobs/train.py"])
    sub, f = fresh(tmp_path)
    f.fail("files", "missing ALGORITHM.md")
    checks.check_code(sub, f, None)
    assert lines(f, "code") == [("ok", "code.tar.gz holds 1 entries; source not recorded")]


def test_environment_generated_from_the_manifests_and_the_code(tmp_path):
    """environment.json and ENVIRONMENT.md as bundle writes them (the input made with contents.py's
    environment_record and render_environment, from manifests and a code.tar.gz whose pyproject.toml depends
    on pyyaml): ok; the separator of the differences is '; '. Mutants (x_check_environment_7, _9, _12, _13,
    _23, _45): code.tar.gz's requirements dropped or read from another file; the comparison made with None;
    the joiner changed."""
    from tunebox.submission import contents

    manifests_folder(tmp_path)
    pyproject = b'[project]\nname = "tunebox"\ndependencies = ["pyyaml>=6"]\n'
    with tarfile.open(tmp_path / "code.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("tunebox/pyproject.toml")
        info.size = len(pyproject)
        tar.addfile(info, io.BytesIO(pyproject))
    manifests = {j: json.loads((tmp_path / f"logs/{j}/manifest.json").read_text()) for j in checks.layout.RUN_JOBS}
    record = contents.environment_record(manifests, ["pyyaml"])
    write(tmp_path, "environment.json", record)
    write(tmp_path, "ENVIRONMENT.md", contents.render_environment(record))
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    assert lines(f, "environment") == [
        ("ok", "environment.json and ENVIRONMENT.md are generated from the jobs' manifests")
    ]
    write(tmp_path, "environment.json", {"x": 1})
    sub, f = fresh(tmp_path)
    checks.check_environment(sub, f)
    assert "}; generated_from: None != [" in f.failed("environment")[0]


# ---- survivors of the second checks run (2026-12-05/06, with test_checks_model), each a test -------------


def test_results_not_checked_without_results_json(tmp_path):
    """A report and a spec but no results.json: nothing to check, None returned. Mutant:
    tunebox.submission.checks.x_check_results__mutmut_8 (the first `or` turned into `and`: results.get on
    None)."""
    write(tmp_path, "logs/evaluate/report.json", {})
    sub, f = fresh(tmp_path)
    assert checks.check_results(sub, f, TINY_SPEC, [2], {}) is None and f.lines == []


def test_results_carry_the_accuracy_findings(tmp_path):
    """base's scores.json says 1.0 strict, its predictions give 1/3: the finding comes through check_results.
    Mutant: x_check_results__mutmut_37 (recompute_accuracies given None for the findings: a crash)."""
    results_folder(tmp_path)
    write(tmp_path, "logs/evaluate/base/scores.json", {"accuracy_strict": 1.0, "accuracy_tolerant": 1 / 3, "n": 3})
    assert run_results(tmp_path)[1] == [
        ("FAIL", f"logs/evaluate/base/scores.json accuracy_strict = 1.0, its predictions give {1 / 3}")
    ]


def test_results_with_a_merge_index_without_checkpoints(tmp_path):
    """merge's index holds no "checkpoints" list: every train_loss is then None, and results.json's 2.5 and 3.0
    are named. Mutants: x_check_results__mutmut_49, _51 (`.get("checkpoints", [])` without the default: a
    TypeError)."""
    results_folder(tmp_path)
    write(tmp_path, MERGE, {})
    assert run_results(tmp_path)[1] == [
        ("FAIL", "results.json step-000002 train_loss = 2.5, logs/merge/index.json give(s) None"),
        ("FAIL", "results.json step-000004 train_loss = 3.0, logs/merge/index.json give(s) None"),
    ]


def test_results_code_that_is_not_an_object(tmp_path):
    """results.json's "code" is a string: the results cannot be rebuilt (dict() of it fails), which is said.
    Mutants: x_check_results__mutmut_81 (`or {}` -> `and {}`), _82, _83, _84 (another key read: {} used)."""
    results = results_folder(tmp_path)
    results["code"] = "abc"
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1] == [
        (
            "FAIL",
            "cannot recompute the results from hyperparams.yaml and the logs: dictionary update sequence element "
            "#0 has length 1; 2 is required",
        )
    ]


def test_results_rows_checked_after_a_missing_one(tmp_path):
    """results.json lacks step 2's row and has step 4's with a wrong accuracy: both are named (the missing row
    does not end the loop). Mutant: x_check_results__mutmut_196 (`continue` -> `break`)."""
    results = results_folder(tmp_path)
    results["checkpoints"] = [hand_row(4, 0.5, 3.0)]
    write(tmp_path, "results.json", results)
    found = run_results(tmp_path)[1]
    assert found[0] == (
        "FAIL",
        "results.json lists checkpoints ['step-000004'], the folder has ['step-000002', 'step-000004']",
    )
    assert ("FAIL", "results.json step-000004 accuracy_strict = 0.5, the bundled predictions give(s) 1.0") in found


SQUAD_RIGHT = [{"answer": "Denver", "gold": ["Denver"]}, {"answer": "Paris", "gold": ["Paris"]}]
SQUAD_HALF = [{"answer": "Denver", "gold": ["Denver"]}, {"answer": "Rome", "gold": ["Paris"]}]


def squad_results_folder(root: Path) -> dict:
    """results_folder with SQuAD measured: the base answers both questions (F1 = EM = 100), steps 2 and 4 one of
    two (50, 50): each keeps 50/100 = 0.5 < 0.9 of the base, so neither is valid and none is chosen."""
    results = results_folder(root)
    for name, rows in (("base", SQUAD_RIGHT), ("step-000002", SQUAD_HALF), ("step-000004", SQUAD_HALF)):
        write_jsonl(root, f"logs/evaluate/{name}/squad_predictions.jsonl", rows)
    half = {"squad": {"f1": 50.0, "em": 50.0}}
    write(
        root,
        "logs/evaluate/report.json",
        {"base": {"squad": {"f1": 100.0, "em": 100.0}}, "checkpoints": [{"model": m, **half} for m in STEPS_2_4]},
    )
    results["base"].update(squad_f1=100.0, squad_em=100.0)
    for row in results["checkpoints"]:
        row.update(squad_f1=50.0, squad_em=50.0, retention_f1=0.5, retention_em=0.5, passes_retention=False)
    results["chosen"] = {"model": None, "rule": "none passes retention", "valid": False}
    write(root, "results.json", results)
    return results


STEPS_2_4 = ("step-000002", "step-000004")
# step 4's score: (1 - 896/123200) * 0.3 + 1.0 * 0.7 = 0.99781818...
NO_VALID = (
    "NO VALID CHECKPOINT: none of the 2 keeps 90% of the base model's SQuAD F1 and EM, so none is valid under the "
    "contest rule and none is chosen (highest score: step-000004, 0.9978)"
)


def test_results_with_squad_and_no_valid_checkpoint(tmp_path):
    """SQuAD re-scored from 3 files; no checkpoint keeps retention: the ok line says "chosen none" and a note gives
    the reason. Mutants: x_check_results__mutmut_254, _255 (check_squad given None rows or base row: a crash),
    _262-_265 (the base row read as {}: its SQuAD figures named as missing), _347, _348 ('none' written
    otherwise), _356 (`valid is False` -> `is True`), _357-_364 (the note's check or text changed)."""
    squad_results_folder(tmp_path)
    assert run_results(tmp_path)[1] == [
        (
            "ok",
            "results.json matches the logs (accuracies re-scored from 3 prediction files, SQuAD from 3, ratio "
            "0.0072727273 from hyperparams.yaml); chosen none (none passes retention; valid: False)",
        ),
        ("note", NO_VALID),
    ]


def test_results_carry_the_squad_findings(tmp_path):
    """results.json's base SQuAD F1 edited to 90: named by check_results (against the report) and by check_squad
    (against the bundled predictions). Mutant: x_check_results__mutmut_253 (check_squad given None for the
    findings: a crash)."""
    results = squad_results_folder(tmp_path)
    results["base"]["squad_f1"] = 90.0
    write(tmp_path, "results.json", results)
    assert run_results(tmp_path)[1] == [
        ("FAIL", "results.json base squad_f1 = 90.0, the logs give 100.0"),
        ("FAIL", "results.json base squad_f1 = 90.0, logs/evaluate/base/squad_predictions.jsonl gives 100.0"),
    ]
