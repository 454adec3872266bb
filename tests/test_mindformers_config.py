"""The MindFormers configs tunebox renders (tunebox/model/mf_config.py): every recipe's finetune YAML loads
with MindFormers' own MindFormerConfig, says what the spec says in MindFormers' keys, and builds the
model with its LoRA (at tiny dimensions where the real ones do not fit in a test); the submission
carries finetune/predict YAMLs that verify checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from test_bundle import rewrite_sums

import jobs.verify as verify_mod
from conftest import REPO, TINY_RECIPE, rendered, run_job
from tunebox.config import load_spec
from tunebox.io import InputError
from tunebox.model import budget
from tunebox.model.mf_config import PredictRequest, dump, render_predict_config, topology
from tunebox.model.registry import get_model_shape, mindformers_target_regex, with_overrides
from tunebox.submission.mindformers_files import portable_finetune_config

RECIPES = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
TINY_DIMS = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "n_kv_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 384,
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_renders_a_config_mindformers_loads(recipe, tmp_path, mf_cwd):
    from mindformers import MindFormerConfig

    spec, plan, cfg = rendered(recipe, tmp_path)
    path = tmp_path / "mindformers.yaml"
    path.write_text(dump(cfg), encoding="utf-8")
    mf = MindFormerConfig(str(path))
    topo = topology(spec.train)
    mspec = get_model_shape(spec.model.name)
    mc = mf.model.model_config
    # the spec, in MindFormers' words
    assert mf.run_mode == "finetune" and mf.context.device_target == spec.train.device
    assert (mc.hidden_size, mc.num_layers, mc.vocab_size) == (mspec.hidden_size, mspec.num_layers, mspec.vocab_size)
    assert mc.pet_config.pet_type == "lora" and mc.pet_config.lora_rank == spec.lora.rank
    assert mc.pet_config.lora_alpha == spec.lora.alpha
    assert mc.pet_config.target_modules == mindformers_target_regex(spec.lora.target_modules)
    pc = mf.parallel_config
    assert pc.data_parallel * pc.model_parallel * pc.pipeline_stage == spec.train.workers
    assert mf.runner_config.batch_size * pc.data_parallel == spec.train.batch_size
    assert mf.lr_schedule.learning_rate == spec.train.lr and mf.lr_schedule.total_steps == plan["total_steps"]
    assert mf.use_parallel == (spec.train.workers > 1)
    lora_cb = [c for c in mf.callbacks if c["type"] == "TuneboxLoraCheckpoints"][0]
    assert list(lora_cb["planned_steps"]) == plan["checkpoint_steps"]
    wrapper = mf.runner_wrapper.type
    assert wrapper == ("TuneboxTrainOneStepCell" if spec.train.device == "CPU" else "MFTrainOneStepCell")
    if topo.model_parallel > 1:  # the registered model's gather has no sharding strategy: stock model
        assert mf.model.arch.type == "LlamaForCausalLM" and mf.parallel.parallel_mode == 1


def test_stage1_recipe_states_the_contests_topology(tmp_path):
    spec, _, cfg = rendered("stage1-llama3-8b.yaml", tmp_path)
    assert spec.train.workers == 4
    assert cfg["parallel_config"]["model_parallel"] == 4 and cfg["parallel_config"]["data_parallel"] == 1
    assert cfg["runner_config"]["batch_size"] == 64 and cfg["model"]["model_config"]["compute_dtype"] == "bfloat16"
    # the data-parallel variant is one --set
    _, _, dp = rendered("stage1-llama3-8b.yaml", tmp_path, "train.parallel.model_parallel=1")
    assert dp["parallel_config"]["data_parallel"] == 4 and dp["runner_config"]["batch_size"] == 16
    assert dp["parallel"]["parallel_mode"] == 0 and dp["model"]["arch"]["type"] == "TuneboxLlamaForCausalLM"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.parallel.model_parallel=2"], "MindSpore's CPU backend runs data parallel only"),
        (
            ["train.workers=4", "train.parallel.model_parallel=3", "train.device=Ascend", "train.dtype=bfloat16"],
            "must equal train.workers",
        ),
        (["train.grad_accum=2"], "MindFormers accumulates gradients only in semi_auto_parallel"),
    ],
)
def test_impossible_topologies_are_refused_at_load(overrides, message):

    with pytest.raises(InputError, match=message):
        load_spec(TINY_RECIPE, ["train.workers=2"] + overrides if "train.workers=4" not in overrides else overrides)


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_rendered_config_builds_the_model_with_its_lora(recipe, tmp_path, mf_cwd):
    """MindFormers' registry builds the rendered arch from the rendered model_config (dimensions made
    tiny and dtypes float32 for the 7-8B models) and MindFormers' LoRA adapter wraps exactly the
    parameters the registry predicts."""
    import mindspore as ms
    from mindformers import LlamaConfig
    from mindformers.pet import LoraConfig, LoraModel
    from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

    import tunebox.model.mf_extensions  # noqa: F401  (registers the tunebox classes, as auto_register would)

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    spec, _, cfg = rendered(recipe, tmp_path)
    mc = dict(cfg["model"]["model_config"])
    pet = mc.pop("pet_config")
    mc.pop("type")
    mspec = get_model_shape(spec.model.name)
    if mspec.total_params() > 200_000_000:
        mc.update(TINY_DIMS)
        mspec = with_overrides(mspec, **TINY_DIMS)
    mc.update(
        {
            "compute_dtype": "float32",
            "param_init_type": "float32",
            "rotary_dtype": "float32",
            "use_flash_attention": False,
            "fused_rms_norm": False,
            "use_rope_slice": True,
            "seq_length": 32,
            "batch_size": 2,
            "tunebox_answer_capacity": 0,
            "tunebox_packing": False,
        }
    )
    arch = MindFormerRegister.get_cls(MindFormerModuleType.MODELS, cfg["model"]["arch"]["type"])
    net = arch(config=LlamaConfig(**mc))
    pet_type = pet.pop("pet_type")
    assert pet_type == "lora"
    net = LoraModel(LoraConfig(**pet), net)
    lora = [p for p in net.get_parameters() if "mindpet_delta_lora" in p.name]
    assert sum(int(np.prod(p.shape)) for p in lora) == mspec.lora_params(spec.lora.rank, spec.lora.target_modules)


def test_predict_config_names_the_checkpoint_and_tokenizer(tmp_path, mf_cwd):
    from mindformers import MindFormerConfig

    spec = load_spec(TINY_RECIPE)
    cfg = render_predict_config(
        spec,
        PredictRequest(
            checkpoint="../checkpoints/step-000027/model.ckpt",
            tokenizer_dir="../tokenizer",
            max_new_tokens=24,
            special_tokens={"bos_token": "<s>", "eos_token": "</s>"},
            stop_ids=[2, 4],
        ),
    )
    path = tmp_path / "predict.yaml"
    path.write_text(dump(cfg), encoding="utf-8")
    mf = MindFormerConfig(str(path))
    assert mf.run_mode == "predict" and mf.load_checkpoint.endswith("step-000027/model.ckpt")
    # the tiny recipe runs on CPU, where MindSpore's rotary kernel under use_past takes fp16/bf16 only
    assert mf.model.model_config.use_past is False and mf.model.arch.type == "LlamaForCausalLM"
    assert list(mf.model.model_config.eos_token_id) == [2, 4]
    assert mf.processor.tokenizer.tokenizer_file == "../tokenizer/tokenizer.json"


def test_submission_carries_mindformers_files_that_verify_checks(tiny_run, tmp_path, capsys):
    """The bundle's mindformers/ folder: the config train ran, its run paths made relative; a predict
    config for the chosen checkpoint; the registered classes. verify loads both with MindFormerConfig
    and fails a predict.yaml whose checkpoint is not in the submission."""

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run["run_dir"], runs / "tiny", ignore=shutil.ignore_patterns("submission"))
    run_job("bundle", TINY_RECIPE, tiny_run["cache"], tmp_path, f"runs_dir={runs}")
    sub = runs / "tiny" / "submission"
    text = (sub / "mindformers" / "finetune.yaml").read_text()
    assert str(runs) not in text and str(tiny_run["run_dir"]) not in text
    finetune, as_run = yaml.safe_load(text), yaml.safe_load((runs / "tiny" / "train" / "mindformers.yaml").read_text())
    assert finetune["model"] == as_run["model"] and finetune["parallel_config"] == as_run["parallel_config"]
    assert (finetune["checkpoint"]["load_path"], finetune["checkpoint"]["save_path"]) == (
        "../base",
        "./output/checkpoint",
    )
    assert {k: v for k, v in finetune["checkpoint"].items() if "path" not in k} == {
        k: v for k, v in as_run["checkpoint"].items() if "path" not in k
    }
    assert finetune["tensorboard"]["tensorboard_dir"] == "./output/tensorboard"  # MindFormers adds rank_<r>/
    predict = yaml.safe_load((sub / "mindformers" / "predict.yaml").read_text())
    chosen = json.loads((sub / "results.json").read_text())["chosen"]["model"]
    assert predict["load_checkpoint"] == f"../checkpoints/{chosen}/model.ckpt"
    extensions = (REPO / "tunebox/model/mf_extensions.py").read_bytes()
    assert (sub / "mindformers" / "mf_extensions.py").read_bytes() == extensions

    assert verify_mod.main([str(sub)]) == 0
    assert "mindformers" in capsys.readouterr().out

    predict["load_checkpoint"] = "../checkpoints/step-999999/model.ckpt"
    (sub / "mindformers" / "predict.yaml").write_text(dump(predict))
    rewrite_sums(sub)
    assert verify_mod.main([str(sub)]) == 1
    out = capsys.readouterr().out
    assert "predict.yaml: load_checkpoint '../checkpoints/step-999999/model.ckpt' is not a file" in out


def test_card_memory_of_the_contest_topology_worked_by_hand():
    """Llama3-8B, 4 cards model_parallel 4, 64 rows of 256 tokens, bf16, recompute on (the contest's
    setting), against figures worked here from the formula's terms."""

    m = get_model_shape("llama3-8b")
    mem = budget.card_memory(
        m,
        seq_length=256,
        global_batch=64,
        data_parallel=1,
        model_parallel=4,
        pipeline_stage=1,
        micro_batch_num=1,
        dtype="bfloat16",
        lora_trainable=3_407_872,
        recompute=True,
    )
    s, b, h = 256, 64, 4096
    assert mem.micro_batch == 64 and mem.layers_here == 32
    assert mem.weights == 8_030_261_248 * 2 / 4
    full_layer = s * b * h * (10 + 24 / 4 + 5 * 32 * 256 / (4096 * 4))  # 1.2448e9 bytes
    assert mem.activations == pytest.approx(32 * 2 * s * b * h + full_layer)
    assert mem.logits == 2 * 4 * s * b * 128256
    assert mem.lora_state == pytest.approx(3_407_872 / 4 * 12)
    # data parallel instead: each card holds the whole model and a quarter of the batch
    dp = budget.card_memory(
        m,
        seq_length=256,
        global_batch=64,
        data_parallel=4,
        model_parallel=1,
        pipeline_stage=1,
        micro_batch_num=1,
        dtype="bfloat16",
        lora_trainable=3_407_872,
        recompute=True,
    )
    assert dp.weights == 4 * mem.weights and dp.micro_batch == 16 and dp.logits == mem.logits / 4


def test_the_rendered_optimizer_updates_as_the_contests_adam_weight_decay(tmp_path, mf_cwd):
    """The optimizer MindFormers builds from the rendered YAML applies the contest's update rule
    (FP32StateAdamWeightDecay = MindSpore's AdamWeightDecay: m / (sqrt(v) + eps), no bias correction),
    for which the recipes' learning rates were set. Worked by hand for three steps of given gradients:
    the first update is lr * 0.1 g / (sqrt(0.001) |g|) = 3.16 lr per element, where a bias-corrected
    AdamW moves lr."""
    import mindspore as ms
    from mindformers.core.optim import build_optim
    from mindspore import Parameter, Tensor

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    _, _, cfg = rendered("local-smollm2.yaml", tmp_path)
    opt_cfg = dict(cfg["optimizer"])
    lr = 1e-3
    w0 = np.array([0.5, -0.25, 1.0, 0.0], np.float32)
    grads = [
        np.array([0.2, -0.4, 1e-3, 3.0], np.float32),
        np.array([-0.1, -0.4, 2e-3, 1.0], np.float32),
        np.array([0.3, 0.1, -1e-3, -2.0], np.float32),
    ]
    param = Parameter(Tensor(w0), name="lora_a")
    optimizer = build_optim(opt_cfg, default_args={"params": [param], "learning_rate": lr})

    b1, b2, eps = 0.9, 0.999, 1e-8  # the contest's rule, by hand (weight_decay 0 in the recipe)
    w, m, v = w0.astype(np.float64), np.zeros(4), np.zeros(4)
    for step, g in enumerate(grads, 1):
        optimizer((Tensor(g),))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g.astype(np.float64) ** 2
        w = w - lr * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(param.asnumpy(), w, rtol=1e-5, atol=1e-7, err_msg=f"step {step}")
        if step == 1:  # the size the contest's rule gives the first step: 0.1 / sqrt(0.001) = 3.16 x lr
            np.testing.assert_allclose(np.abs(param.asnumpy() - w0), lr * 0.1 / np.sqrt(0.001), rtol=1e-3)


@pytest.mark.parametrize("overrides, base", [((), "../base"), (("train.workers=2",), "../base/model.ckpt")])
def test_the_portable_finetune_config_names_the_base_in_the_keys_it_was_rendered_in(tmp_path, overrides, base):
    """finetune.yaml's base, by role: the safetensors folder in MindFormers 1.9's checkpoint section, the .ckpt
    in the legacy keys a data-parallel run keeps; no path of the run is left. Mutants: the section's
    load_path kept; load_checkpoint written for the section; save_path kept (the run's folder)."""
    run_dir = tmp_path / "runs" / "tiny"
    _, _, cfg = rendered("tiny.yaml", tmp_path, *overrides, out_dir=run_dir / "train")
    portable = portable_finetune_config(cfg, run_dir)
    got = portable["checkpoint"]["load_path"] if "checkpoint" in portable else portable["load_checkpoint"]
    assert got == base and str(tmp_path) not in json.dumps(portable)
    assert ("load_checkpoint" in portable) is ("checkpoint" not in portable)
