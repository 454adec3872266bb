"""The judge's view of a submission: the bundled mindformers/predict.yaml, run by MindFormers itself.

From the bundled predict.yaml alone, MindFormers 1.9 builds the tokenizer (`build_tokenizer`) and the
network (`build_network` on the YAML's model section), loads the merged checkpoint with the loader its
Trainer uses for a whole checkpoint (`mindformers.trainer.utils.load_ckpt`), every parameter checked
against the file, and answers one held-out prompt greedily: the network's forward pass, argmax at the
last prompt position, a few tokens (MindFormers 1.9's generate() stops on CPU with "The kernel ArgMaxExt
unregistered"). The text must equal what tunebox's own numpy decoder answers for that prompt.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_bundle import rewrite_sums

import jobs.verify as verify_mod
from tunebox.config import load_spec
from tunebox.data.prompts import spec_prompt
from tunebox.data.tokenizer import TextTokenizer
from tunebox.evaluation.decode import NumpyLlama, greedy_generate
from tunebox.model.registry import get_model_shape
from tunebox.submission.mf_predict import greedy_answer

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def judged(tiny_bundle):
    """A bundle of the shared tiny run (conftest.tiny_bundle)."""
    return tiny_bundle


def tunebox_answer(sub, checkpoint_rel: str, prompt_ids: list[int]) -> str:
    """tunebox's numpy decoder on the same checkpoint: the expectation."""

    spec = load_spec(sub / "hyperparams.yaml")
    tok = TextTokenizer.load(sub / "tokenizer")
    model = NumpyLlama.from_checkpoint(sub / checkpoint_rel, get_model_shape(spec.model.name))
    out = greedy_generate(model, [prompt_ids], NEW_TOKENS, tok.stop_ids, tok.pad_id, progress=False)[0]
    return tok.decode(out)


def heldout_prompt(sub) -> tuple[str, list[int]]:
    """The first held-out row in the training template, as text and as tunebox's token ids."""

    spec = load_spec(sub / "hyperparams.yaml")
    tok = TextTokenizer.load(sub / "tokenizer")
    row = json.loads((sub / "logs/prep/heldout.jsonl").read_text(encoding="utf-8").splitlines()[0])
    text = spec_prompt(tok, row["prompt"], spec.data)
    return text, tok.encode(text)


def test_bundled_predict_yaml_runs_in_mindformers_and_answers_as_tunebox(judged):

    sub = judged["sub"]
    predict = yaml.safe_load((sub / "mindformers/predict.yaml").read_text(encoding="utf-8"))
    text, ids = heldout_prompt(sub)
    # the chosen checkpoint (predict.yaml's), and the first one: a barely trained model whose answer is
    # varied text, so an off-by-one position or a wrong token id cannot pass by repeating one character
    first = sorted(p.parent.name for p in (sub / "checkpoints").glob("step-*/model.ckpt"))[0]
    for checkpoint in (predict["load_checkpoint"], f"../checkpoints/{first}/model.ckpt"):
        got = greedy_answer(sub / "mindformers", text, NEW_TOKENS, checkpoint=checkpoint)
        assert got["prompt_ids"] == ids, "MindFormers' tokenizer from predict.yaml tokenizes the prompt differently"
        want = tunebox_answer(sub, checkpoint.removeprefix("../"), ids)
        assert got["text"] == want, f"{checkpoint}: MindFormers answers {got['text']!r}, tunebox {want!r}"
    assert len(set(got["text"])) > 1, f"the first checkpoint's answer {got['text']!r} cannot tell positions apart"


def test_predict_check_refuses_a_checkpoint_that_does_not_fit(judged, tmp_path):
    """Strict loading: a checkpoint with a parameter missing is an error, not a silently random weight."""
    import mindspore as ms

    sub = judged["sub"]
    predict = yaml.safe_load((sub / "mindformers/predict.yaml").read_text(encoding="utf-8"))
    params = ms.load_checkpoint(str((sub / "mindformers" / predict["load_checkpoint"]).resolve()))
    dropped = next(n for n in params if "wo.weight" in n)
    ms.save_checkpoint([{"name": n, "data": p} for n, p in params.items() if n != dropped], str(tmp_path / "cut.ckpt"))
    text, _ = heldout_prompt(sub)
    with pytest.raises(ValueError, match=dropped.replace(".", r"\.")):
        greedy_answer(sub / "mindformers", text, NEW_TOKENS, checkpoint=str(tmp_path / "cut.ckpt"))


def test_predict_check_refuses_a_checkpoint_of_another_dtype(judged, tmp_path):
    """A float16 weight where the YAML builds float32 (an Ascend checkpoint against a CPU config, or the
    reverse): MindSpore would convert it without a word when loading is not strict; here it is an error."""
    import mindspore as ms

    sub = judged["sub"]
    predict = yaml.safe_load((sub / "mindformers/predict.yaml").read_text(encoding="utf-8"))
    params = ms.load_checkpoint(str((sub / "mindformers" / predict["load_checkpoint"]).resolve()))
    halved = next(n for n in params if "w2.weight" in n)
    ms.save_checkpoint(
        [
            {"name": n, "data": ms.Tensor(p.asnumpy().astype("float16")) if n == halved else p}
            for n, p in params.items()
        ],
        str(tmp_path / "half.ckpt"),
    )
    text, _ = heldout_prompt(sub)
    with pytest.raises(ValueError, match=halved.replace(".", r"\.") + ": network Float32"):
        greedy_answer(sub / "mindformers", text, NEW_TOKENS, checkpoint=str(tmp_path / "half.ckpt"))


def test_verify_rerun_runs_predict_yaml_through_mindformers(judged, tmp_path, capsys):

    sub = tmp_path / "submission"
    shutil.copytree(judged["sub"], sub)
    assert verify_mod.main([str(sub), "--rerun"]) == 0
    out = capsys.readouterr().out
    assert "ok    predict" in out, out
    # the class tunebox wrote before: MindFormers registers no PreTrainedTokenizerFast
    predict = yaml.safe_load((sub / "mindformers/predict.yaml").read_text(encoding="utf-8"))
    predict["processor"]["tokenizer"]["type"] = "PreTrainedTokenizerFast"
    (sub / "mindformers/predict.yaml").write_text(yaml.safe_dump(predict), encoding="utf-8")
    rewrite_sums(sub)
    assert verify_mod.main([str(sub), "--rerun"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  predict" in out and "PreTrainedTokenizerFast" in out, out
