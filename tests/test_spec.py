"""Run spec loading: list-valued keys, LoRA targets checked at load with the valid names listed."""
import pytest

from jobs.evaluate import parse_scales
from tunebox.spec_checks import load_checked_spec
from tunebox.io import InputError
from tunebox.model.registry import LINEAR_NAMES, lora_targets, mindformers_target_regex


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


@pytest.mark.parametrize("targets, named, peft_hint", [
    ("q_proj|v_proj", "'q_proj', 'v_proj'", "q_proj -> wq, v_proj -> wv"),
    ("q_proj|wv", "'q_proj'", "q_proj -> wq"),           # one good alternative does not hide a bad one
    ("[gate_proj, w2]", "'gate_proj'", "gate_proj -> w1"),
    ("wz", "'wz'", None),
])
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


@pytest.mark.parametrize("override, suggested", [
    ("train.max_step=3", "max_steps"),            # the old prefix rule offered 'max_grad_norm'
    ("lora.rnak=4", "rank"),
    ("data.seq_lenght=64", "seq_length"),
])
def test_unknown_key_suggests_the_closest_key(tmp_path, override, suggested):
    with pytest.raises(InputError, match=rf"did you mean '{suggested}'\?"):
        load_checked_spec(write(tmp_path, ""), [override])


def test_invoke_with_a_missing_spec_says_error_and_exits_2(tmp_path):
    """A bad spec given to an invoke task ends like a job's: one `error:` line naming it, exit 2, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "invoke", "pipeline", "--config", str(tmp_path / "nope.yaml")],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"error: {tmp_path / 'nope.yaml'}: no such run spec" in proc.stderr
