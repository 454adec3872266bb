"""Run spec loading: list-valued keys, LoRA targets checked at load with the valid names listed."""

from pathlib import Path

import pytest

from tunebox.cli import job_command, job_parser, run_job, spec_argv
from tunebox.config import load_spec
from tunebox.evaluation.scale_dial import parse_scales
from tunebox.io import InputError
from tunebox.model.registry import LINEAR_NAMES, lora_targets, mindformers_target_regex
from tunebox.spec_checks import load_checked_spec

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"


def write(tmp_path, body: str):
    path = tmp_path / "spec.yaml"
    path.write_text("run_id: x\nmodel:\n  name: tiny\n" + body)
    return path


def test_target_modules_as_a_list_is_the_same_as_the_regex(tmp_path):
    as_list = load_checked_spec(write(tmp_path, "lora:\n  target_modules: [wq, wk, wv, wo]\n"))
    assert as_list.lora.target_modules == "wq|wk|wv|wo"
    assert lora_targets(as_list.lora.target_modules) == {"wq", "wk", "wv", "wo"}
    as_set = load_checked_spec(write(tmp_path, ""), ["lora.target_modules=[w1, w3]"])
    assert mindformers_target_regex(as_set.lora.target_modules) == ".*w1|.*w3"


@pytest.mark.parametrize(
    "targets, named, peft_hint",
    [
        ("q_proj|v_proj", "'q_proj', 'v_proj'", "q_proj -> wq, v_proj -> wv"),
        ("q_proj|wv", "'q_proj'", "q_proj -> wq"),  # one good alternative does not hide a bad one
        ("[gate_proj, w2]", "'gate_proj'", "gate_proj -> w1"),
        ("wz", "'wz'", None),
    ],
)
def test_bad_targets_fail_at_load_naming_line_and_layers(tmp_path, targets, named, peft_hint):
    path = write(tmp_path, "lora:\n  rank: 8\n  target_modules: " + targets + "\n")
    with pytest.raises(InputError) as err:
        load_checked_spec(path)
    text = str(err.value)
    assert f"{path}:6:" in text and "lora.target_modules" in text and named in text
    assert ", ".join(LINEAR_NAMES) in text
    assert (peft_hint in text) if peft_hint else ("PEFT" not in text)


def test_target_regex_that_does_not_compile_is_a_spec_error(tmp_path):
    with pytest.raises(InputError, match=r"lora.target_modules: 'wq\(' is not a regex"):
        load_checked_spec(write(tmp_path, "lora:\n  target_modules: wq(\n"))


def test_eval_scales_accept_a_list_or_the_comma_text(tmp_path):
    spec = load_checked_spec(write(tmp_path, ""), ["eval.scales=[0.5, 1.0]"])
    assert parse_scales(spec.eval.scales) == [0.5, 1.0]
    spec = load_checked_spec(write(tmp_path, "eval:\n  scales: '0.25,1'\n"))
    assert parse_scales(spec.eval.scales) == [0.25, 1.0]
    with pytest.raises(InputError, match="must be str or list"):
        load_checked_spec(write(tmp_path, ""), ["eval.scales={a: 1}"])


@pytest.mark.parametrize(
    "override, suggested",
    [
        ("train.max_step=3", "max_steps"),  # the old prefix rule offered 'max_grad_norm'
        ("lora.rnak=4", "rank"),
        ("data.seq_lenght=64", "seq_length"),
    ],
)
def test_unknown_key_suggests_the_closest_key(tmp_path, override, suggested):
    with pytest.raises(InputError, match=rf"did you mean '{suggested}'\?"):
        load_checked_spec(write(tmp_path, ""), [override])


def test_invoke_with_a_missing_spec_says_error_and_exits_2(tmp_path):
    """A bad spec given to an invoke task ends like a job's: one `error:` line naming it, exit 2, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "pipeline", "--config", str(tmp_path / "nope.yaml")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"error: {tmp_path / 'nope.yaml'}: no such run spec" in proc.stderr


@pytest.mark.parametrize(
    "override, says",
    [
        ("train.lr=[", "--set train.lr=[: '[' is not a YAML value"),
        ("data.families={add", "--set data.families={add: '{add' is not a YAML value"),
        ("train.lr.x=1", "--set train.lr.x=1: 'train.lr' is a value, not a section"),
    ],
)
def test_a_set_value_that_is_not_yaml_says_error_and_exits_2(override, says, capsys):
    """A bad --set ends as a bad spec does: one `error:` line, exit 2, no traceback. Tried with
    config._apply_override's YAMLError catch removed (a traceback, exit 1): the first two fail; the third
    is the descent into a value (AttributeError before the check)."""

    code = run_job(
        "probe",
        "a job that does nothing",
        lambda spec, args: None,
        skip_finished=False,
        argv=["--config", str(TINY), "--set", override],
    )
    err = capsys.readouterr().err
    assert code == 2 and f"error: {says}" in err and "Traceback" not in err


def test_merge_scale_is_a_spec_key_hashed_only_when_set():
    """merge.scale (once merge's --scale) goes through --set like every run setting. Runs recorded before it
    existed keep their spec hash: the reference below is the hash rule as it was, on a dict without the key.
    Tried with merge.scale's hashed_when_set mark removed: this fails."""
    import hashlib
    import json

    spec = load_checked_spec(TINY)
    assert spec.merge.scale == 1.0 and load_checked_spec(TINY, ["merge.scale=0.5"]).merge.scale == 0.5
    before = {k: v for k, v in spec.to_dict().items() if k not in ("runs_dir", "cluster")}
    before["model"].pop("source")
    before["merge"].pop("scale")
    assert spec.spec_hash() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert load_checked_spec(TINY, ["merge.scale=0.5"]).spec_hash() != spec.spec_hash()


def test_config_alone_leaves_the_checks_across_subjects_to_spec_checks(tmp_path):
    """tunebox.config.load_spec reads the schema and each section's own checks; the model's layer names are
    spec_checks' to know (tried with check_across not calling check_lora_targets: the second half fails)."""

    path = write(tmp_path, "lora:\n  target_modules: q_proj\n")
    assert load_spec(path).lora.target_modules == "q_proj"
    with pytest.raises(InputError, match=rf"^{path}:5: lora.target_modules: "):
        load_checked_spec(path)


def test_spec_argv_is_what_a_jobs_parser_reads_back():
    """msrun's workers, the sweep's points, dryrun's render and the benches start jobs with spec_argv /
    job_command. Mutants: the overrides dropped; --set's words swapped; the config left out."""
    overrides = ["train.max_steps=3", "runs_dir=runs/a b"]
    args = job_parser("train", "").parse_args(spec_argv("recipes/tiny.yaml", overrides))
    assert (args.config, args.overrides) == ("recipes/tiny.yaml", overrides)
    cmd = job_command("train", "recipes/tiny.yaml", overrides, "--render-only")
    assert cmd[1:3] == ["-m", "jobs.train"] and cmd[-1] == "--render-only"
    assert job_parser("train", "").parse_known_args(cmd[3:])[0].overrides == overrides
