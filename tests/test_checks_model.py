"""verify's checks that load MindFormers or a model (tunebox/submission/checks.py: check_mindformers,
rerun_evaluation, check_predict) past their early exits, on small folders each test writes, in process: the
checks group of the mutation run (tests/mutants.py) runs them beside tests/test_checks_unit.py.

The checkpoints are built here so that their answer is known by hand: every weight zero except the token
embedding (all ones), the norms (ones) and one row of lm_head (ones). Attention and MLP then add nothing
(wo and w2 are zero), the last hidden state is all ones whatever the prompt, and the logits are 64/sqrt(1 +
1e-5) for that row's token and 0 for every other: the model says that token at every step. In the byte
tokenizer (ids 0-4 special, then the 256 byte characters sorted, "!" first) "4" is 5 + 52 - 33 = 24 and "7"
is 27. Only check_predict's MindFormers run (mf_predict.greedy_answer) is stood in for by what it returns;
tests/test_bundle.py runs the real one on a trained bundle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_checks_unit import fresh, lines, write, write_jsonl

from tunebox.data.tokenizer import build_byte_tokenizer
from tunebox.model.checkpoint import save_checkpoint_numpy
from tunebox.model.registry import get_model_shape
from tunebox.submission import checks

FOUR, SEVEN = 24, 27  # byte-tokenizer ids of "4" and "7", by hand (above)
TEMPLATE = "Q: {problem}\nA:"


def always(token: int) -> dict:
    shape = get_model_shape("tiny")
    params = {}
    for name, dims in shape.parameter_shapes().items():
        value = np.zeros(dims, dtype=np.float32)
        if name.endswith("norm.weight") or name.endswith("norm_out.weight") or "tok_embeddings" in name:
            value[...] = 1.0
        params[name] = value
    params["lm_head.weight"][token] = 1.0
    return params


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    """{"four", "seven"}: checkpoint files of the tiny shape that always answer "4" / "7"; "tokenizer": a folder."""
    root = tmp_path_factory.mktemp("weights")
    out = {}
    for key, token in (("four", FOUR), ("seven", SEVEN)):
        save_checkpoint_numpy(root / f"{key}.ckpt", always(token))
        out[key] = root / f"{key}.ckpt"
    build_byte_tokenizer(384).save(root / "tokenizer")
    out["tokenizer"] = root / "tokenizer"
    return out


def spec(limit=0, max_new_tokens=3, batch_size=2):
    return SimpleNamespace(
        model=SimpleNamespace(name="tiny"),
        eval=SimpleNamespace(limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size),
        data=SimpleNamespace(format="math", template=TEMPLATE, system_prompt=None),
    )


# ---- check_mindformers: MindFormers' own loader on the two YAMLs ---------------------------------------

FINETUNE = """\
model:
  model_config:
    type: LlamaConfig
  arch:
    type: TuneboxLlamaForCausalLM
    auto_register: mf_extensions.TuneboxLlamaForCausalLM
runner_wrapper:
  type: TuneboxWrapper
  auto_register: mf_extensions.TuneboxWrapper
callbacks:
  - type: MFLossMonitor
  - type: TuneboxCallback
    auto_register: mf_extensions.TuneboxCallback
"""
PREDICT = """\
load_checkpoint: {checkpoint}
processor:
  tokenizer:
    tokenizer_file: {tokenizer}
model:
  model_config:
    type: LlamaConfig
  arch:
    type: LlamaForCausalLM
"""
EXTENSIONS = """\
class TuneboxLlamaForCausalLM:
    class TuneboxWrapper:
        pass


class TuneboxCallback:
    pass
"""
OK_MINDFORMERS = (
    "ok",
    "finetune.yaml and predict.yaml load with MindFormerConfig; predict.yaml's checkpoint and tokenizer and "
    "finetune.yaml's registered classes are in the folder",
)


def mindformers_folder(root: Path, finetune=FINETUNE, extensions=EXTENSIONS, **predict) -> Path:
    write(root, "checkpoints/step-000010/model.ckpt", b"weights")
    write(root, "tokenizer/tokenizer.json", "{}")
    values = {"checkpoint": "../checkpoints/step-000010/model.ckpt", "tokenizer": "../tokenizer/tokenizer.json"}
    write(root, "mindformers/finetune.yaml", finetune)
    write(root, "mindformers/predict.yaml", PREDICT.format(**{**values, **predict}))
    if extensions is not None:
        write(root, "mindformers/mf_extensions.py", extensions)
    return root


@pytest.fixture
def mf_scratch(tmp_path, monkeypatch):
    """MindFormers writes its log under LOCAL_DEFAULT_PATH: a scratch folder, the working directory too."""
    monkeypatch.setenv("LOCAL_DEFAULT_PATH", str(tmp_path / "mflog"))
    monkeypatch.chdir(tmp_path)


def test_mindformers_folder_that_holds(tmp_path, mf_scratch):
    """Both YAMLs load, both files are there, every auto_register class (nested ones too) is defined; a
    callback without auto_register is left alone. Mutants: tunebox.submission.checks.x_check_mindformers__mutmut_3
    (another folder), _26 (another YAML name), _106 (`split(".")[-2]`), and the others that read another key."""
    sub, f = fresh(mindformers_folder(tmp_path / "sub"))
    checks.check_mindformers(sub, f)
    assert f.lines == [("ok", "mindformers", OK_MINDFORMERS[1])]


def test_mindformers_sets_its_log_folder_only_when_unset(tmp_path, monkeypatch):
    """LOCAL_DEFAULT_PATH defaults to $TMPDIR/tunebox-verify. Mutants: the variable's name, TMPDIR's name or
    the folder's name changed (x_check_mindformers__mutmut_10, _19, _20, _23, _24); the value dropped (_7, _12)."""
    monkeypatch.chdir(tmp_path)
    sub, f = fresh(mindformers_folder(tmp_path / "sub"))
    monkeypatch.delenv("LOCAL_DEFAULT_PATH", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    checks.check_mindformers(sub, f)
    assert os.environ["LOCAL_DEFAULT_PATH"] == str(tmp_path / "scratch" / "tunebox-verify")
    monkeypatch.setenv("LOCAL_DEFAULT_PATH", str(tmp_path / "mine"))
    checks.check_mindformers(sub, f)
    assert os.environ["LOCAL_DEFAULT_PATH"] == str(tmp_path / "mine")
    # no TMPDIR: /tmp (x_check_mindformers__mutmut_21, _22: another default)
    monkeypatch.delenv("LOCAL_DEFAULT_PATH")
    monkeypatch.delenv("TMPDIR")
    checks.check_mindformers(sub, f)
    assert os.environ["LOCAL_DEFAULT_PATH"] == str(Path("/tmp") / "tunebox-verify")
    assert f.lines == [("ok", "mindformers", OK_MINDFORMERS[1])] * 3


def test_mindformers_yaml_that_does_not_load(tmp_path, mf_scratch):
    """finetune.yaml not YAML, predict.yaml missing: each named with MindFormers' reason, no ok line, and
    neither YAML's later checks run on what did not load. Mutants: x_check_mindformers__mutmut_38 (the check's
    name changed), the message changed; `predict is not None` or `finetune is not None` inverted; the ok line kept."""
    root = mindformers_folder(tmp_path / "sub", finetune="model: [1\n")
    (root / "mindformers/predict.yaml").unlink()
    sub, f = fresh(root)
    checks.check_mindformers(sub, f)
    got = lines(f, "mindformers")
    assert [kind for kind, _ in got] == ["FAIL", "FAIL"]
    assert got[0][1].startswith("mindformers/finetune.yaml does not load with MindFormerConfig: YAML parse error")
    assert got[1][1] == (
        "mindformers/predict.yaml does not load with MindFormerConfig: [Errno 2] No such file or directory: "
        f"'{root / 'mindformers' / 'predict.yaml'}'"
    )


def test_predict_yaml_files_outside_the_submission(tmp_path, mf_scratch):
    """load_checkpoint names a file outside the submission, tokenizer_file a folder: both named with the key
    and the value as written. Mutants: x_check_mindformers__mutmut_64 (`or` turned into `and` before
    is_relative_to), _68 (is_relative_to inverted), _69 (made against None); the key or value in the message."""
    write(tmp_path, "outside.ckpt", b"weights")
    root = mindformers_folder(tmp_path / "sub", checkpoint="../../outside.ckpt", tokenizer="../tokenizer")
    sub, f = fresh(root)
    checks.check_mindformers(sub, f)
    assert lines(f, "mindformers") == [
        ("FAIL", "mindformers/predict.yaml: load_checkpoint '../../outside.ckpt' is not a file of this submission"),
        ("FAIL", "mindformers/predict.yaml: tokenizer_file '../tokenizer' is not a file of this submission"),
    ]


def test_predict_yaml_without_processor_or_checkpoint(tmp_path, mf_scratch):
    """No processor section and an empty load_checkpoint: both keys named with None / ''. Mutants:
    `(predict.processor or {})` or `.get("tokenizer", {})` dropped (x_check_mindformers__mutmut_52: an
    AttributeError); `not rel` inverted (_66)."""
    root = mindformers_folder(tmp_path / "sub")
    write(root, "mindformers/predict.yaml", "load_checkpoint: ''\nmodel:\n  model_config:\n    type: LlamaConfig\n")
    sub, f = fresh(root)
    checks.check_mindformers(sub, f)
    assert lines(f, "mindformers") == [
        ("FAIL", "mindformers/predict.yaml: load_checkpoint '' is not a file of this submission"),
        ("FAIL", "mindformers/predict.yaml: tokenizer_file None is not a file of this submission"),
    ]


def test_finetune_registers_classes_the_folder_does_not_define(tmp_path, mf_scratch):
    """mf_extensions.py defines only TuneboxCallback: the model's and the wrapper's classes are named; with no
    mf_extensions.py at all, all three. Mutants: x_check_mindformers__mutmut_107 (`not in defined` inverted),
    _102 (`ref and` -> `ref or`), the defined names taken from the wrong nodes; the message changed."""
    sub, f = fresh(mindformers_folder(tmp_path / "a", extensions="class TuneboxCallback:\n    pass\n"))
    checks.check_mindformers(sub, f)
    sub, g = fresh(mindformers_folder(tmp_path / "b", extensions=None))
    checks.check_mindformers(sub, g)
    message = "mindformers/finetune.yaml registers {}, which mindformers/mf_extensions.py does not define"
    model, wrapper, callback = (
        f"mf_extensions.{n}" for n in ("TuneboxLlamaForCausalLM", "TuneboxWrapper", "TuneboxCallback")
    )
    assert lines(f, "mindformers") == [("FAIL", message.format(model)), ("FAIL", message.format(wrapper))]
    assert lines(g, "mindformers") == [("FAIL", message.format(r)) for r in (model, wrapper, callback)]


def test_registered_class_named_by_its_last_part(tmp_path, mf_scratch):
    """auto_register "pkg.mf_extensions.TuneboxLlamaForCausalLM": the class is its last dotted part; a failure
    of another check before does not keep the ok line away. Mutants: x_check_mindformers__mutmut_105
    (`split(".")[-1]` -> `[+1]`: "mf_extensions"), _115 (`f.failed("mindformers")` -> `f.failed(None)`: any
    check's failure)."""
    finetune = FINETUNE.replace(
        "auto_register: mf_extensions.TuneboxLlama", "auto_register: pkg.mf_extensions.TuneboxLlama"
    )
    sub, f = fresh(mindformers_folder(tmp_path / "sub", finetune=finetune))
    f.fail("files", "an earlier finding")
    checks.check_mindformers(sub, f)
    assert lines(f, "mindformers") == [OK_MINDFORMERS]


def test_finetune_without_wrapper_or_callbacks(tmp_path, mf_scratch):
    """runner_wrapper and callbacks absent (None in MindFormerConfig): nothing to check there. Mutants:
    x_check_mindformers__mutmut_94 (the lists subtracted: a TypeError), `(node or {})` or `callbacks or []` dropped."""
    finetune = FINETUNE.split("runner_wrapper:")[0]
    sub, f = fresh(mindformers_folder(tmp_path / "sub", finetune=finetune, extensions="class Other:\n    pass\n"))
    checks.check_mindformers(sub, f)
    assert lines(f, "mindformers") == [
        (
            "FAIL",
            "mindformers/finetune.yaml registers mf_extensions.TuneboxLlamaForCausalLM, which "
            "mindformers/mf_extensions.py does not define",
        )
    ]


# ---- rerun_evaluation: each checkpoint evaluated again from the folder ----------------------------------

# references by hand against answers "4", "44", "4", "4" (limits 1, 2, 1, 1) of the always-4 checkpoint:
# right, right, wrong, wrong: 2 of 4 = 0.5, strict and tolerant alike. The always-7 one answers
# "7", "77", "7", "7": only the third row (7) is right: 1 of 4 = 0.25.
HELDOUT = [
    {"line": 1, "prompt": "2+2?", "reference": "4"},
    {"line": 2, "prompt": "40+4?", "reference": "44"},
    {"line": 3, "prompt": "3+4?", "reference": "7"},
    {"line": 4, "prompt": "4+4?", "reference": "8"},
]
LIMITS = [1, 2, 1, 1]


def rerun_folder(root: Path, weights: dict, checkpoints: dict, results=None, answers=None, backend=None) -> Path:
    """checkpoints: step -> "four" / "seven" / bytes; answers: step -> the bundled answers (default: the
    checkpoint's own)."""
    shutil.copytree(weights["tokenizer"], root / "tokenizer")
    write_jsonl(root, "logs/prep/heldout.jsonl", HELDOUT)
    own = {"four": ["4", "44", "4", "4"], "seven": ["7", "77", "7", "7"]}
    for step, what in checkpoints.items():
        name = f"step-{step:06d}"
        if isinstance(what, bytes):
            write(root, f"checkpoints/{name}/model.ckpt", what)
        else:
            (root / f"checkpoints/{name}").mkdir(parents=True)
            shutil.copy(weights[what], root / f"checkpoints/{name}/model.ckpt")
        given = (answers or {}).get(step, own.get(what, ["?"] * 4))
        write_jsonl(
            root,
            f"logs/evaluate/{name}/predictions.jsonl",
            [{**r, "answer": a, "max_new_tokens": n} for r, a, n in zip(HELDOUT, given, LIMITS)],
        )
        if backend:
            write(root, f"logs/evaluate/{name}/scores.json", {"backend": backend})
    return root


def recorded(**accuracies) -> dict:
    """results.json's checkpoints: step-000002=(strict, tolerant), ..."""
    return {
        "checkpoints": [
            {"model": name.replace("_", "-"), "accuracy_strict": s, "accuracy_tolerant": t}
            for name, (s, t) in accuracies.items()
        ]
        + ["not a dict"]
    }


def test_rerun_that_matches(tmp_path, weights, caplog, capsys):
    """Both checkpoints give what results.json records, the answers are the bundled ones: one ok line with the
    counts. Mutants: x_rerun_evaluation__mutmut_* reading another checkpoint, other rows, other limits
    (replace(task, limits=None)), another model or batch; the ok line's counts or text changed."""
    root = rerun_folder(tmp_path, weights, {2: "four", 4: "seven"})
    sub, f = fresh(root)
    caplog.set_level("INFO", logger="tunebox.verify")
    checks.rerun_evaluation(sub, f, spec(), [2, 4], recorded(step_000002=(0.5, 0.5), step_000004=(0.25, 0.25)), 0.0)
    # the log line and the progress bar's label a person watching verify --rerun reads. Mutants:
    # x_rerun_evaluation__mutmut_171-_180 (the log line), _105 (the bar's label dropped)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name == "tunebox.verify"] == [
        ("tunebox.verify", "INFO", "re-run step-000002: strict 0.5000 tolerant 0.5000"),
        ("tunebox.verify", "INFO", "re-run step-000004: strict 0.2500 tolerant 0.2500"),
    ]
    err = capsys.readouterr().err
    assert "re-run step-000002: 100%" in err and "re-run step-000004: 100%" in err
    assert f.lines == [
        (
            "ok",
            "rerun",
            "re-evaluated 2 checkpoints on 4 held-out rows from the folder alone: accuracies match results.json",
        )
    ]


def test_rerun_that_differs_from_results(tmp_path, weights):
    """results.json says 1.0 strict for the always-4 checkpoint (it gives 0.5) and nothing for the always-7
    one: each key named with both figures. Mutants: x_rerun_evaluation__mutmut_123 (`want.get(key) is None or`
    turned into `and`), _125 (`is not None`); `abs(...)` dropped (a lower record passes); the keys' loop
    narrowed; the message changed; the ok line
    kept after a failure."""
    root = rerun_folder(tmp_path, weights, {2: "four", 4: "seven"})
    sub, f = fresh(root)
    checks.rerun_evaluation(sub, f, spec(), [2, 4], recorded(step_000002=(1.0, 0.5)), 0.0)
    assert lines(f, "rerun") == [
        ("FAIL", "step-000002: re-run accuracy_strict 0.5000, results.json says 1.0 (tolerance 0.0)"),
        ("FAIL", "step-000004: re-run accuracy_strict 0.2500, results.json says None (tolerance 0.0)"),
        ("FAIL", "step-000004: re-run accuracy_tolerant 0.2500, results.json says None (tolerance 0.0)"),
    ]


def test_rerun_tolerance_is_inclusive(tmp_path, weights):
    """0.5 against a record of 0.25 (strict) and 0.75 (tolerant), tolerance 0.25 (all exact in binary): within
    it, both ways; 0.2 is not. Mutants: x_rerun_evaluation__mutmut_128 (`>` turned into `>=`), _127 (`acc - want`
    turned into `acc + want`), _126."""
    root = rerun_folder(tmp_path, weights, {2: "four"})
    sub, f = fresh(root)
    checks.rerun_evaluation(sub, f, spec(), [2], recorded(step_000002=(0.25, 0.75)), 0.25)
    assert [kind for kind, _ in lines(f, "rerun")] == ["ok"]
    checks.rerun_evaluation(sub, f, spec(), [2], recorded(step_000002=(0.25, 0.75)), 0.2)
    assert lines(f, "rerun")[1:] == [
        ("FAIL", "step-000002: re-run accuracy_strict 0.5000, results.json says 0.25 (tolerance 0.2)"),
        ("FAIL", "step-000002: re-run accuracy_tolerant 0.5000, results.json says 0.75 (tolerance 0.2)"),
    ]


def test_rerun_limit_takes_the_first_rows(tmp_path, weights):
    """eval.limit 2: the first two rows; the 4 recorded limits do not pair with 2 rows, so both get the cap (2):
    "44" twice, the second right: 0.5 (all four rows would give 0.25), and the ok line counts 2 rows. Mutants:
    x_rerun_evaluation__mutmut_29 (the limit ignored), _30, and other slices."""
    root = rerun_folder(tmp_path, weights, {2: "four"})
    sub, f = fresh(root)
    checks.rerun_evaluation(sub, f, spec(limit=2, max_new_tokens=2), [2], recorded(step_000002=(0.5, 0.5)), 0.0)
    assert f.lines == [
        ("note", "rerun", "step-000002: 1 of 2 answers differ in text from the bundled predictions"),  # "4", "44"
        (
            "ok",
            "rerun",
            "re-evaluated 1 checkpoints on 2 held-out rows from the folder alone: accuracies match results.json",
        ),
    ]


def test_rerun_without_recorded_limits_uses_the_cap(tmp_path, weights):
    """No max_new_tokens in the predictions: every row gets eval.max_new_tokens (2): "44" four times, only
    the second row right: 0.25. Mutants: x_rerun_evaluation__mutmut_79 (the cap passed as None), _78, _83."""
    root = rerun_folder(tmp_path, weights, {2: "four"})
    write_jsonl(root, "logs/evaluate/step-000002/predictions.jsonl", [{**r, "answer": "44"} for r in HELDOUT])
    sub, f = fresh(root)
    checks.rerun_evaluation(sub, f, spec(max_new_tokens=2), [2], recorded(step_000002=(0.25, 0.25)), 0.0)
    assert [line[0] for line in f.lines] == ["ok"]


def test_rerun_missing_broken_and_unlimited_checkpoints(tmp_path, weights):
    """step 2 has no checkpoint file, step 4's does not load, step 6's predictions record a limit of 9 > the cap
    3: each named once, the others still evaluated (step 8, recorded 1.0 strict, gives 0.5). Mutants:
    x_rerun_evaluation__mutmut_86 and the other `continue`s turned into `break`; the file test inverted; the load
    error's message changed; a None limit list evaluated."""
    root = rerun_folder(tmp_path, weights, {4: b"not a checkpoint", 6: "four", 8: "four"})
    (root / "logs/evaluate/step-000002").mkdir(parents=True)
    write_jsonl(
        root,
        "logs/evaluate/step-000006/predictions.jsonl",
        [{**r, "answer": "4", "max_new_tokens": 9} for r in HELDOUT],
    )
    sub, f = fresh(root)
    checks.rerun_evaluation(sub, f, spec(), [2, 4, 6, 8], recorded(step_000008=(1.0, 0.5)), 0.0)
    got = lines(f, "rerun")
    assert got[0] == ("FAIL", "step-000002: no checkpoint to evaluate")
    assert got[1][0] == "FAIL" and got[1][1].startswith("step-000004: the checkpoint does not load as tiny: ")
    assert got[2:] == [
        (
            "FAIL",
            "step-000006: predictions.jsonl records max_new_tokens outside 1..eval.max_new_tokens (3) on "
            "line(s) [1, 2, 3, 4]",
        ),
        ("FAIL", "step-000008: re-run accuracy_strict 0.5000, results.json says 1.0 (tolerance 0.0)"),
    ]


def test_rerun_counts_only_its_own_failures(tmp_path, weights):
    """A failure from an earlier check under "rerun" does not keep the ok line away. Mutants:
    x_rerun_evaluation__mutmut_185 (`==` turned
    into `!=`), `before` taken as 0."""
    root = rerun_folder(tmp_path, weights, {2: "four"})
    sub, f = fresh(root)
    f.fail("rerun", "earlier")
    checks.rerun_evaluation(sub, f, spec(), [2], recorded(step_000002=(0.5, 0.5)), 0.0)
    assert [line[0] for line in f.lines] == ["FAIL", "ok"]


MINDSPORE_TAIL = " (evaluate used the mindspore backend, the re-run the numpy decoder)"


@pytest.mark.parametrize(
    "backend, tail",
    [(None, ""), ("numpy", ""), ("mindspore", MINDSPORE_TAIL)],
)
def test_rerun_notes_answers_that_differ_in_text(tmp_path, weights, backend, tail):
    """The bundled answers of rows 1 and 3 differ from the re-run's ("4.0", "5"): a note with the count and, for
    a backend other than numpy, which; the accuracies still match. Mutants: x_rerun_evaluation__mutmut_146 (`a !=
    b.get("answer")` inverted), _141 (each difference counted twice), _148; the backend test inverted or its text."""
    root = rerun_folder(tmp_path, weights, {2: "four"}, answers={2: ["4.0", "44", "5", "4"]}, backend=backend)
    sub, f = fresh(root)
    checks.rerun_evaluation(sub, f, spec(), [2], recorded(step_000002=(0.5, 0.5)), 0.0)
    assert lines(f, "rerun")[0] == (
        "note",
        f"step-000002: 2 of 4 answers differ in text from the bundled predictions{tail}",
    )
    assert [line[0] for line in f.lines] == ["note", "ok"]


# ---- check_predict: MindFormers' answer against tunebox's decoder ---------------------------------------


# "Q: 2+2?\nA:" in the byte tokenizer, no BOS: printable ASCII c is 5 + ord(c) - 33 (Q 53, : 30, 2 22, + 15,
# ? 35, A 37); the bytes below "!" come after the 94 + 12 + 82 printable characters, at 193 + byte (space 225,
# newline 203)
PROMPT = "Q: 2+2?\nA:"
PROMPT_IDS = [53, 30, 225, 22, 15, 22, 35, 203, 37, 30]


def predict_folder(root: Path, weights: dict) -> Path:
    shutil.copytree(weights["tokenizer"], root / "tokenizer")
    write_jsonl(root, "logs/prep/heldout.jsonl", HELDOUT)
    write(root, "mindformers/predict.yaml", "load_checkpoint: x\n")
    return root


def mindformers_says(monkeypatch, weights, text="444444", ids=None, error=None) -> list:
    """greedy_answer stood in for: MindFormers' answer (text) from the always-4 checkpoint; ids: the prompt ids
    its tokenizer gave (default: the byte tokenizer's, by hand). Returns the calls it got."""
    calls = []

    def greedy_answer(mf_dir, prompt, max_new_tokens):
        calls.append((mf_dir, prompt, max_new_tokens))
        if error:
            raise error
        return {"prompt_ids": PROMPT_IDS if ids is None else ids, "checkpoint": str(weights["four"]), "text": text}

    monkeypatch.setattr(checks, "mindformers_importable", lambda: True)
    monkeypatch.setattr(checks, "greedy_answer", greedy_answer)
    return calls


def test_predict_not_run_without_mindformers(tmp_path, monkeypatch):
    """Mutants: tunebox.submission.checks.x_check_predict__mutmut_1 (the importable test inverted); the note's text."""
    monkeypatch.setattr(checks, "mindformers_importable", lambda: False)
    sub, f = fresh(tmp_path)
    checks.check_predict(sub, f, spec())
    assert f.lines == [("note", "predict", "MindFormers is not installed here: mindformers/predict.yaml was not run")]


def test_predict_that_agrees(tmp_path, monkeypatch, weights, capsys):
    """MindFormers encodes the first held-out prompt in the training template as tunebox does and answers
    "444444", as tunebox's decoder does from the same checkpoint (6 tokens of "4"). Mutants:
    x_check_predict__mutmut_* passing another folder, prompt or token count to MindFormers, decoding another
    number of tokens, another row, or changing the ok line: _58 (no token count), _62 (another folder), _54, _94."""
    calls = mindformers_says(monkeypatch, weights)
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, spec())
    assert capsys.readouterr().err == ""  # no progress bar for six tokens (mutants _108, _109: progress shown)
    assert calls == [(tmp_path / "mindformers", PROMPT, 6)]
    assert f.lines == [
        (
            "ok",
            "predict",
            f"MindFormers built predict.yaml's tokenizer and model, loaded {weights['four'].parent.name} strictly "
            "and answered the first held-out prompt as tunebox does (6 greedy tokens: '444444')",
        )
    ]


def test_predict_answer_that_differs(tmp_path, monkeypatch, weights):
    """MindFormers says "7": named with both answers. Mutants: x_check_predict__mutmut_113 (`!=` inverted); the
    message changed; the return after it dropped (an ok line too)."""
    mindformers_says(monkeypatch, weights, text="7")
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, spec())
    assert f.lines == [
        (
            "FAIL",
            "predict",
            "MindFormers answers the first held-out prompt '7' from predict.yaml, tunebox's decoder '444444'",
        )
    ]


def test_predict_prompt_ids_that_differ(tmp_path, monkeypatch, weights):
    """MindFormers' tokenizer puts a BOS (1) first: named with the first 12 ids of each. Mutants:
    x_check_predict__mutmut_76 (the comparison inverted); the return dropped."""
    mindformers_says(monkeypatch, weights, ids=[1] + PROMPT_IDS)
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, spec())
    assert f.lines == [
        (
            "FAIL",
            "predict",
            "mindformers/predict.yaml's tokenizer encodes the first held-out prompt as "
            "[1, 53, 30, 225, 22, 15, 22, 35, 203, 37, 30]..., tunebox as "
            "[53, 30, 225, 22, 15, 22, 35, 203, 37, 30]... (the training ids)",
        )
    ]


def test_predict_that_mindformers_cannot_run(tmp_path, monkeypatch, weights):
    """Whatever MindFormers raises is named with its type and the first 400 characters. Mutants:
    x_check_predict__mutmut_73 (401 characters); the type name changed; the return dropped."""
    mindformers_says(monkeypatch, weights, error=KeyError("x" * 500))
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, spec())
    message = "mindformers/predict.yaml does not run in MindFormers: KeyError: '" + "x" * 399
    assert f.lines == [("FAIL", "predict", message)]


def test_predict_needs_a_spec(tmp_path, monkeypatch, weights):
    """Every input there but hyperparams.yaml: it cannot run. Mutant: x_check_predict__mutmut_17 (`spec is None
    or not heldout` -> `and`: spec.data read from None)."""
    calls = mindformers_says(monkeypatch, weights)
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, None)
    assert calls == [] and f.lines == [
        (
            "FAIL",
            "predict",
            "cannot run mindformers/predict.yaml: hyperparams.yaml, the held-out rows, the tokenizer or predict.yaml "
            "is missing or broken",
        )
    ]


def test_predict_prompt_in_the_chat_template(tmp_path, monkeypatch, weights):
    """data.template "chat": the prompt given to MindFormers is the byte tokenizer's ChatML turn (its
    tokenizer_config's template, no system prompt), written out here. Mutant: x_check_predict__mutmut_44
    (spec_prompt given None for the tokenizer: only a chat template reads it)."""
    calls = mindformers_says(monkeypatch, weights)
    chat = spec()
    chat.data.template = "chat"
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, chat)
    assert calls == [(tmp_path / "mindformers", "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", 6)]


# "Question: 2+2?\nAnswer:" by hand as above (u 89, e 73, s 87, t 88, i 77, o 83, n 82, w 91, r 86): 22 ids
LONG_TEMPLATE = "Question: {problem}\nAnswer:"
LONG_IDS = [53, 89, 73, 87, 88, 77, 83, 82, 30, 225, 22, 15, 22, 35, 203, 37, 82, 87, 91, 73, 86, 30]


def test_predict_prompt_ids_shown_twelve_each(tmp_path, monkeypatch, weights):
    """A 22-id prompt and MindFormers' 23 ids (a BOS first): twelve of each shown. Mutants:
    x_check_predict__mutmut_85, _86 (thirteen shown)."""
    mindformers_says(monkeypatch, weights, ids=[1] + LONG_IDS)
    long = spec()
    long.data.template = LONG_TEMPLATE
    sub, f = fresh(predict_folder(tmp_path, weights))
    checks.check_predict(sub, f, long)
    assert f.failed("predict") == [
        "mindformers/predict.yaml's tokenizer encodes the first held-out prompt as "
        f"{[1] + LONG_IDS[:11]}..., tunebox as {LONG_IDS[:12]}... (the training ids)"
    ]
