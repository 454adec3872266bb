"""The Ascend recipes' numerics, checked on CPU by MindFormers' and MindSpore's own code: the rendered
finetune YAML loaded with MindFormerConfig and built by MindFormers' build_network in the recipe's own
bf16/fp16 dtypes (tiny widths), its wrapper and loss scale built by MindFormers' registry, the
predicting network built with the recipes' dtypes and loaded strictly, and the stage-1 baseline
compared key by key with the contest's own YAML."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

from tunebox.config import load_spec
from tunebox.model.mf_config import dump, render_train_config
from jobs.train import plan_steps

ASCEND_RECIPES = ["stage1-llama3-8b.yaml", "stage1-llama3-8b-cot.yaml", "stage2-internlm-7b.yaml"]
TINY_DIMS = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "n_kv_heads": 2, "intermediate_size": 128,
             "vocab_size": 384}


@pytest.fixture(scope="module")
def mf_cwd(tmp_path_factory):
    """MindFormers writes ./output/log at import: import it from a scratch folder; PyNative on CPU."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mf"))
    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    yield ms
    os.chdir(previous)


def rendered(recipe: str, tmp_path: Path, *overrides: str):
    spec = load_spec(REPO / "recipes" / recipe, list(overrides))
    plan = plan_steps(40 * spec.train.batch_size, spec)
    cfg = render_train_config(spec, data_files=[tmp_path / "train.mindrecord"], out_dir=tmp_path / "train",
                              plan=plan, base_checkpoint=tmp_path / "base.ckpt", answer_capacity=24)
    return spec, plan, cfg


def mindformers_config(cfg: dict, tmp_path: Path):
    """The rendered dict as MindFormers reads it: written to YAML, loaded by MindFormerConfig."""
    from mindformers import MindFormerConfig

    path = tmp_path / "mindformers.yaml"
    path.write_text(dump(cfg), encoding="utf-8")
    return MindFormerConfig(str(path))


# ---- 2.1: LoRA parameters (and so AdamWeightDecay's moments) in float32 ------------------------

@pytest.mark.parametrize("recipe", ASCEND_RECIPES)
def test_lora_parameters_are_float32_in_the_ascend_dtype_network(recipe, tmp_path, mf_cwd):
    """MindFormers' build_network on the rendered model section, in the recipe's bf16/fp16 dtypes (tiny
    widths): the base weights take the recipe's dtype, the LoRA matrices float32, so the optimizer's
    moments (created like the parameters) are float32 as the contest's FP32StateAdamWeightDecay kept them."""
    from mindformers.models.build_model import build_network

    import tunebox.model.mf_extensions  # noqa: F401  (registers the tunebox classes, as auto_register would)

    spec, _, cfg = rendered(recipe, tmp_path)
    cfg["model"]["arch"].pop("auto_register", None)   # registered by the import above
    mf = mindformers_config(cfg, tmp_path)
    mf.model.model_config.update({**TINY_DIMS, "seq_length": 32, "batch_size": 2})
    net = build_network(mf.model)
    lora = {p.name: str(p.dtype) for p in net.get_parameters() if "mindpet_delta_lora" in p.name}
    base = {p.name: str(p.dtype) for p in net.get_parameters() if p.name.endswith("wq.weight")}
    assert lora and base
    declared = {"bfloat16": "BFloat16", "float16": "Float16"}[spec.train.dtype]
    assert set(base.values()) == {declared}, base
    assert set(lora.values()) == {"Float32"}, lora
    # the optimizer MindFormers builds from the rendered section keeps its moments in the parameters' dtype
    from mindformers.core.optim import build_optim

    optimizer = build_optim(dict(cfg["optimizer"]), default_args={"params": net.trainable_params(),
                                                                  "learning_rate": 1e-5})
    moments = {str(m.dtype) for m in list(optimizer.moments1) + list(optimizer.moments2)}
    assert moments == {"Float32"}, moments


# ---- 2.2: stage 2 trains in fp16 with the contest's dynamic loss scale -------------------------

@pytest.mark.parametrize("recipe", ASCEND_RECIPES)
def test_fp16_training_gets_the_contests_dynamic_loss_scale(recipe, tmp_path, mf_cwd):
    """The runner_wrapper's scale_sense as MindFormers' build_wrapper builds it: in fp16 the contest's
    stage-2 DynamicLossScaleUpdateCell (loss_scale_value 16384, scale_factor 2, scale_window 1000; the
    second-phase teams' finetune_internlm_7b_lora_mmlu_64G.yaml, mindspore-courses/competition commit
    3ad8f5571cd3be6295e48757ae673b5fff7ac819), in bf16 the stage-1 configs' fixed 1.0 (bf16 has fp32's
    exponent range: nothing to scale)."""
    from mindspore.nn import DynamicLossScaleUpdateCell
    from mindformers.wrapper import build_wrapper

    spec, _, cfg = rendered(recipe, tmp_path)
    mf = mindformers_config(cfg, tmp_path)
    sense = mf.runner_wrapper.scale_sense
    if spec.train.dtype == "float16":
        cell = build_wrapper(sense)
        assert isinstance(cell, DynamicLossScaleUpdateCell)
        assert float(cell.get_loss_scale()) == 16384.0
        assert (float(cell.scale_factor.asnumpy()), int(cell.scale_window.asnumpy())) == (2.0, 1000)
    else:
        assert sense == 1.0
