"""Stage 2 as a recipe: InternLM-7B in MindFormers terms (shapes, conversion, LoRA training with
biases), the multiple-choice data (all rows of the three shared files, every kind of bad row),
the loss on the answer sentence, the contest's InternLM chat format, and the recipes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, SHARED_DATA, run_job
from tunebox.config import load_spec
from tunebox.contest.scoring import extract_choice_letter, mcq_prompt
from tunebox.data.samples import IGNORE, encode_example, parse_mcq_row, read_examples, read_mindrecord
from tunebox.data.tokenizer import TextTokenizer, build_byte_tokenizer
from tunebox.io import InputError, JsonlRow
from tunebox.model import mf, weights
from tunebox.model.registry import INTERNLM_CONTEST_TOKENIZER_CONFIG, get_model_shape, with_overrides

MCQ = SHARED_DATA / "mcq"
MCQ_FILES = ["mmlu-subset.jsonl", "cmmlu-subset.jsonl", "contest-mcq-sample.jsonl"]
INTERNLM = get_model_shape("internlm-7b")
TINY = get_model_shape("tiny")
# InternLM's layout at tiny size: multi-head attention (kv heads = heads), biases on q, k, v and o.
TINY_INTERNLM = with_overrides(
    TINY, name="tiny-internlm", n_kv_heads=TINY.num_heads, qkv_has_bias=True, attn_proj_has_bias=True, rms_norm_eps=1e-6
)
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def read_rows(name: str) -> list[dict]:
    # split on "\n" only: some questions hold U+2028 or U+0085, which splitlines() would break on
    return [json.loads(line) for line in (MCQ / name).read_text(encoding="utf-8").split("\n") if line.strip()]


# ---- InternLM-7B: parameters ---------------------------------------------------------------


def test_internlm_7b_parameter_count_by_hand():
    h, f, v, layers = 4096, 11008, 103168, 32
    embedding = lm_head = v * h  # 422,576,128 each (not tied)
    attention = 4 * h * h + 4 * h  # wq wk wv wo (MHA: all h x h) + their biases
    mlp = 3 * h * f  # w1, w2, w3
    norms = 2 * h  # attention_norm, ffn_norm
    per_layer = attention + mlp + norms  # 67,125,248 + 135,266,304 + 8,192
    assert per_layer == 202_399_744
    total = embedding + lm_head + layers * per_layer + h  # + the final norm
    assert total == 7_321_948_160
    assert INTERNLM.total_params() == total
    # the contest divided by 7,321,000,000 (docs/CONTEST_RULES.md); r=8 on wq|wv: 8 * 8192 * 2 * 32
    assert INTERNLM.lora_params(8, "wq|wv") == 4_194_304


@pytest.fixture(scope="module")
def ms_cwd(tmp_path_factory):
    """`import mindformers` writes ./output/log: keep it out of the repo; PyNative for tiny nets."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mindformers_cwd"))
    import mindspore as ms

    old_mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    yield ms
    ms.set_context(mode=old_mode)
    os.chdir(old)


def built_shapes(spec, seq_length: int = 16) -> dict:
    net = mf.build_llama(spec, seq_length=seq_length)
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


def test_mindformers_llama_with_biases_builds_internlm_shapes(ms_cwd):
    # qkv_has_bias / attn_proj_has_bias are enough: no subclass needed. Checked at InternLM's real
    # widths (hidden 4096, 32 MHA heads, intermediate 11008) with one layer and a small vocabulary
    # (the per-layer shapes are what matter; the full model would not fit here in float32).
    one_layer = with_overrides(INTERNLM, name="internlm-7b-1layer", num_layers=1, vocab_size=512)
    got, want = built_shapes(one_layer), one_layer.parameter_shapes()
    assert got == want
    assert {n for n in got if n.endswith(".bias")} == {
        f"model.layers.0.attention.{w}.bias" for w in ("wq", "wk", "wv", "wo")
    }
    assert got["model.layers.0.attention.wq.bias"] == (4096,)
    assert built_shapes(TINY_INTERNLM) == TINY_INTERNLM.parameter_shapes()


def test_internlm_checkpoint_converts_loads_and_trains_with_lora(tmp_path, ms_cwd):
    ms = ms_cwd
    from mindspore import nn

    from tunebox.model.mf_extensions import TuneboxTrainOneStepCell

    hf = weights.make_random_hf_checkpoint(tmp_path / "hf", TINY_INTERNLM, seed=1, shards=2)
    weight_map = json.loads((hf / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.0.self_attn.o_proj.bias" in weight_map
    out = weights.convert_hf_checkpoint(hf, tmp_path / "mf", TINY_INTERNLM, progress=False)

    seq = 16
    net = mf.build_llama(TINY_INTERNLM, seq_length=seq, batch_size=2)
    params = ms.load_checkpoint(str(out / "model.ckpt"))
    not_loaded, unexpected = ms.load_param_into_net(net, params, strict_load=True)
    assert not_loaded == [] and unexpected == []
    biases_before = {n: params[n].asnumpy() for n in params if n.endswith(".bias")}
    assert len(biases_before) == 4 * TINY_INTERNLM.num_layers

    ids = np.random.RandomState(0).randint(3, TINY_INTERNLM.vocab_size, size=(2, seq + 1)).astype(np.int32)
    net.set_train(False)
    base_logits = net(ms.Tensor(ids[:, :seq]))[0].asnumpy()

    net = mf.add_lora(net, rank=4, alpha=8, dropout=0.0, target_modules="wq|wk|wv|wo")
    assert mf.count_trainable(net) == TINY_INTERNLM.lora_params(4, "wq|wk|wv|wo")
    assert mf.count_total(net) == TINY_INTERNLM.total_params()
    net.set_train(False)
    # LoRA B starts at zero: the wrapped network (bias included) computes what the base did
    np.testing.assert_allclose(net(ms.Tensor(ids[:, :seq]))[0].asnumpy(), base_logits, rtol=1e-5, atol=1e-5)

    by_name = {p.name: p for p in net.get_parameters()}  # the wrapper below prefixes the names
    optimizer = nn.AdamWeightDecay(net.trainable_params(), learning_rate=1e-2, weight_decay=0.0)
    # MindFormers' train-one-step cell, as the train job's rendered config builds it on CPU
    step = TuneboxTrainOneStepCell(net, optimizer, use_clip_grad=True, max_grad_norm=1.0, scale_sense=1.0)
    net.set_train(True)
    outputs = [step(ms.Tensor(ids), ms.Tensor(ids)) for _ in range(3)]
    losses = [o[0].asnumpy().item() for o in outputs]
    assert not any(bool(o[1].asnumpy()) for o in outputs), "the CPU overflow check flagged finite gradients"
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    after = {name: p.asnumpy() for name, p in by_name.items()}
    for name, value in biases_before.items():  # frozen: only the LoRA matrices move
        np.testing.assert_array_equal(after[name], value)
    assert any(np.abs(after[n]).max() > 0 for n in after if mf.LORA_B in n)


# ---- multiple-choice data --------------------------------------------------------------------


@pytest.mark.parametrize("name", MCQ_FILES)
def test_every_row_of_the_shared_mcq_files_parses(name):
    rows = read_rows(name)
    examples = list(read_examples(MCQ / name, "mcq"))
    assert len(examples) == len(rows) > 600
    for row, ex in zip(rows, examples):
        assert ex.reference == row["answer"]
        assert ex.answer == f"The right option is {row['answer']}."
        assert extract_choice_letter(ex.answer) == row["answer"]
        zh = bool(CJK.search(row["question"] + "".join(row["choices"])))
        # one template per language, both asking for the same answer sentence
        assert ex.prompt.startswith("以下是关于" if zh else "Here is a question about"), ex.prompt[:40]
        assert "'The right option is'" in ex.prompt or "“The right option is”" in ex.prompt
        for letter, choice in zip("ABCD", row["choices"]):
            assert f"\n{letter}.{choice}" in ex.prompt


def test_contest_template_reproduces_the_contest_prompts():
    rows = read_rows("contest-mcq-sample.jsonl")
    for row in rows:
        # the contest sent its English instruction for every row; the originals differ from ours
        # only in whitespace around questions and options ("Question:  What", "D. Http")
        assert "".join(mcq_prompt(row, "contest").split()) == "".join(row["prompt"].split())
    assert sum(bool(CJK.search(r["question"])) for r in rows) > 500  # both languages are present


def test_alpaca_rows_parse_to_the_same_examples(tmp_path):
    """The contest's own format {instruction, input, output}, rebuilt from the sample's original fields."""
    rows = read_rows("contest-mcq-sample.jsonl")
    path = tmp_path / "alpaca.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            instruction, inp = row["prompt"].split("\n", 1)
            fh.write(
                json.dumps(
                    {"instruction": instruction, "input": inp, "output": row["reference_output"]}, ensure_ascii=False
                )
                + "\n"
            )
    examples = list(read_examples(path, "mcq"))
    assert len(examples) == len(rows)
    for row, ex in zip(rows, examples):
        assert ex.prompt == row["prompt"]  # exactly what the contest trained on
        assert ex.reference == row["answer"]
        assert ex.answer == row["reference_output"]  # "The right option is X."


GOOD_ROWS = [
    {"question": "2 + 2 =", "choices": ["3", "4", "5", "6"], "answer": "B"},
    {
        "instruction": "Pick one.",
        "input": "Question: sky? \nA.blue\nB.red\nC.green\nD.black",
        "output": "The right option is A.",
    },
]
BAD_ROWS = [
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"question": "q", "choices": ["a", "b", "c"], "answer": "A"}', "field 'choices' must be a list of 4 strings"),
    ('{"question": "q", "choices": ["a", "b", "c", 4], "answer": "A"}', "field 'choices' must be a list of 4 strings"),
    ('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": "E"}', "field 'answer' must be one of A, B, C, D"),
    ('{"question": "  ", "choices": ["a", "b", "c", "d"], "answer": "A"}', "field 'question' is empty"),
    ('{"question": "q", "choices": ["a", "b", "c", "d"]}', "missing field 'answer'"),
    ('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 1}', "field 'answer' must be a string"),
    ('{"instruction": "i", "input": "q", "output": "no idea"}', "no answer letter A-D found in 'output'"),
    ('{"instruction": "i", "input": 3, "output": "The right option is A."}', "field 'input' must be a string"),
    ('{"instruction": "i", "input": "q"}', "missing field 'output'"),
    ('{"prompt": "q", "answer": "A"}', "expected fields question/choices/answer or instruction/input/output"),
    ('{"question": "q", ', "JSON"),
]


@pytest.mark.parametrize("bad,message", BAD_ROWS, ids=[m[:40] for _, m in BAD_ROWS])
def test_bad_mcq_rows_are_located(bad, message, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS) + bad + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        list(read_examples(path, "mcq"))
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)
    rejects: list = []
    kept = list(read_examples(path, "mcq", on_bad_row="skip", rejects=rejects))
    assert [e.reference for e in kept] == ["B", "A"]
    assert [r["line"] for r in rejects] == [3] and message in rejects[0]["reason"]


# ---- the loss on the answer sentence ---------------------------------------------------------


def supervised_text(tok: TextTokenizer, labels: np.ndarray) -> str:
    return tok.decode([int(t) for t in labels if t != IGNORE], skip_special_tokens=False)


def test_loss_is_on_the_answer_sentence_only():
    tok = build_byte_tokenizer()
    ex = next(iter(read_examples(MCQ / "mmlu-subset.jsonl", "mcq")))
    ids, labels, n = encode_example(tok, ex, seq_length=512)
    assert n < 512
    assert supervised_text(tok, labels) == f"The right option is {ex.reference}.<|im_end|>"
    prompt_len = len(tok.encode(tok.chat_prompt(ex.prompt)))
    assert (labels[:prompt_len] == IGNORE).all() and (labels[n:] == IGNORE).all()


def test_internlm_contest_chat_format():
    """The text a training sample holds equals the contest's preprocessing output
    (research/internlm/alpaca_data_preprocess.py):
    <s><|User|>:{instruction}\\n{input}<eoh>\\n<|Bot|>:{output}<eoa>\\n</s>,
    loss on what follows <|Bot|>: (checked on the text with the byte tokenizer; InternLM's own
    tokenizer is not available here)."""
    byte_tk = build_byte_tokenizer().tk
    byte_tk.add_special_tokens(["<unk>", "<eoh>", "<eoa>"])  # single tokens, as in InternLM's vocabulary
    tok = TextTokenizer(byte_tk, INTERNLM_CONTEST_TOKENIZER_CONFIG)
    assert tok.stop_ids == [tok.token_id("</s>"), tok.token_id("<eoa>")]
    assert tok.pad_id == tok.token_id("<unk>") != tok.eos_id  # </s> ends every sample: never the pad
    row = read_rows("contest-mcq-sample.jsonl")[3]
    instruction, inp = row["prompt"].split("\n", 1)
    contest_text = f"<s><|User|>:{instruction}\n{inp}<eoh>\n<|Bot|>:{row['reference_output']}<eoa>\n</s>"
    alpaca = {"instruction": instruction, "input": inp, "output": row["reference_output"]}
    ex = parse_mcq_row(JsonlRow(1, alpaca), Path("x.jsonl"))
    ids, labels, n = encode_example(tok, ex, seq_length=2048)
    assert tok.decode([int(t) for t in ids[:n]], skip_special_tokens=False) == contest_text
    assert supervised_text(tok, labels) == f"{row['reference_output']}<eoa>\n</s>"


def test_prep_writes_answer_only_labels_for_mcq(tiny_cache, tmp_path):
    recipe = tmp_path / "mcq.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "run_id": "mcq",
                "stage": 2,
                "model": {"name": "tiny"},
                "data": {
                    "train_file": str(MCQ / "contest-mcq-sample.jsonl"),
                    "format": "mcq",
                    "max_rows": 60,
                    "heldout_rows": 10,
                    "seq_length": 1024,
                    "on_too_long": "skip",
                },
            }
        )
    )
    run_job("prep", recipe, tiny_cache, tmp_path, f"runs_dir={tmp_path / 'runs'}")
    prep = tmp_path / "runs" / "mcq" / "prep"
    ids, labels = read_mindrecord(prep / "train.mindrecord")
    tok = TextTokenizer.load(Path(tiny_cache) / "models" / "tiny")
    rows = read_rows("contest-mcq-sample.jsonl")[:60]
    heldout = [json.loads(l) for l in (prep / "heldout.jsonl").read_text(encoding="utf-8").split("\n") if l]
    assert len(heldout) == 10 and all(h["reference"] == rows[h["line"] - 1]["answer"] for h in heldout)
    rejected = {json.loads(l)["line"] for l in (prep / "rejects.jsonl").read_text(encoding="utf-8").split("\n") if l}
    left_out = rejected | {h["line"] for h in heldout}
    train_answers = [row["answer"] for line, row in enumerate(rows, start=1) if line not in left_out]
    stats = json.loads((prep / "stats.json").read_text())
    assert stats["rows_train"] == len(ids) == len(train_answers) and stats["rows_too_long"] == len(rejected)
    texts = [supervised_text(tok, row) for row in labels]
    assert all(re.fullmatch(r"The right option is [ABCD]\.<\|im_end\|>", t) for t in texts), texts[:3]
    assert [t[len("The right option is ")] for t in texts] == train_answers  # in source order


def test_prep_stops_at_a_bad_mcq_row_with_its_line(tiny_cache, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS * 3) + BAD_ROWS[3][0] + "\n", encoding="utf-8")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "run_id": "bad",
                "model": {"name": "tiny"},
                "data": {"train_file": str(data), "format": "mcq", "heldout_rows": 1},
            }
        )
    )
    proc = run_job("prep", recipe, tiny_cache, tmp_path, f"runs_dir={tmp_path / 'runs'}", check=False)
    assert proc.returncode == 2
    assert f"{data}:7: field 'answer' must be one of A, B, C, D" in proc.stderr


# ---- the recipes -----------------------------------------------------------------------------


def test_stage2_recipe_is_the_contest_setting_on_ascend():
    spec = load_spec(REPO / "recipes" / "stage2-internlm-7b.yaml")
    assert (spec.stage, spec.model.name, spec.data.format) == (2, "internlm-7b", "mcq")
    assert (spec.train.device, spec.train.dtype, spec.train.workers) == ("Ascend", "float16", 4)
    assert spec.data.seq_length == 2048 and spec.train.batch_size == 16 and spec.train.epochs == 10
    assert (spec.lora.rank, spec.lora.alpha, spec.lora.dropout) == (8, 16, 0.1)
    assert INTERNLM.lora_params(spec.lora.rank, spec.lora.target_modules) == 8 * 8192 * 4 * 32
    assert spec.resolve(spec.data.train_file).is_file()


def test_stage1_recipe_is_the_contest_baseline():
    spec = load_spec(REPO / "recipes" / "stage1-llama3-8b.yaml")
    assert (spec.stage, spec.model.name, spec.data.format) == (1, "llama3-8b", "math")
    assert (spec.lora.rank, spec.lora.alpha, spec.lora.dropout, spec.lora.target_modules) == (8, 16, 0.05, "wq|wv")
    assert (spec.data.seq_length, spec.train.batch_size, spec.train.epochs, spec.train.workers) == (256, 64, 5, 4)
    assert spec.train.device == "Ascend"
    assert get_model_shape("llama3-8b").lora_params(spec.lora.rank, spec.lora.target_modules) == 3_407_872


def test_local_mcq_recipe_runs_here():
    spec = load_spec(REPO / "recipes" / "local-smollm2-mcq.yaml")
    assert (spec.stage, spec.data.format, spec.train.device, spec.train.dtype) == (2, "mcq", "CPU", "float32")
    assert spec.resolve(spec.data.train_file) == (MCQ / "contest-mcq-sample.jsonl").resolve()
    assert spec.data.heldout_rows < spec.data.max_rows
