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

from conftest import REPO, rendered
from jobs.merge import merge
from tunebox import layout
from tunebox.config import load_spec
from tunebox.evaluation.runners import MindFormersRunner
from tunebox.model import mf
from tunebox.model.budget import merged_weight_dtype
from tunebox.model.checkpoint import (
    CheckpointReader,
    bfloat16,
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    load_checkpoint_numpy,
    save_checkpoint_numpy,
)
from tunebox.model.mf_config import PredictRequest, dump, render_predict_config
from tunebox.model.registry import get_model_shape, lora_targets, with_overrides

ASCEND_RECIPES = ["stage1-llama3-8b.yaml", "stage1-llama3-8b-cot.yaml", "stage2-internlm-7b.yaml"]
TINY_DIMS = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "n_kv_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 384,
}


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
    cfg["model"]["arch"].pop("auto_register", None)  # registered by the import above
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

    optimizer = build_optim(
        dict(cfg["optimizer"]), default_args={"params": net.trainable_params(), "learning_rate": 1e-5}
    )
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
    from mindformers.wrapper import build_wrapper
    from mindspore.nn import DynamicLossScaleUpdateCell

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


# ---- 1.1: the predicting network loads the base and every merged checkpoint, strictly ----------


def tiny_model(spec):

    return with_overrides(get_model_shape(spec.model.name), **TINY_DIMS)


def tiny_base_and_lora(mspec, spec, folder: Path) -> tuple[Path, Path]:
    """A float32 base checkpoint (what tunebox's converter writes) and a float32 LoRA checkpoint (what
    MindFormers' trainer saves with pet_config.param_init_type float32) at tiny widths."""

    rng = np.random.default_rng(0)
    base = {
        name: (
            np.ones(shape, np.float32) + rng.normal(0, 0.1, shape).astype(np.float32)
            if "norm" in name
            else rng.normal(0, 0.05, shape).astype(np.float32)
        )
        for name, shape in mspec.parameter_shapes().items()
    }
    lora = {}
    for i in range(mspec.num_layers):
        for name in lora_targets(spec.lora.target_modules):
            out, inp = mspec.linear_shapes()[name]
            prefix = f"model.layers.{i}.attention.{name}"
            lora[f"{prefix}.mindpet_delta_lora_a"] = rng.normal(0, 0.05, (spec.lora.rank, inp)).astype(np.float32)
            lora[f"{prefix}.mindpet_delta_lora_b"] = rng.normal(0, 0.05, (out, spec.lora.rank)).astype(np.float32)
    save_checkpoint_numpy(folder / "base.ckpt", base)
    save_checkpoint_numpy(folder / "lora.ckpt", lora)
    return folder / "base.ckpt", folder / "lora.ckpt"


def merged_by_the_merge_job(spec, lora_ckpt: Path) -> Path:
    """jobs.merge on a train index naming one LoRA checkpoint: the merged model.ckpt it writes."""
    import json

    train_dir = spec.job_dir("train")
    (train_dir / "checkpoints").mkdir(parents=True)
    (spec.run_dir / layout.TRAIN_INDEX).write_text(
        json.dumps({"planned": [10], "checkpoints": [{"step": 10, "epoch": 1, "loss": 1.0, "file": str(lora_ckpt)}]})
    )
    out = merge(spec)
    return out / "step-000010" / "model.ckpt"


def runner_on_cpu(monkeypatch, mspec, ckpt: Path, spec):
    """MindFormersRunner as evaluate builds it on Ascend (the spec's dtypes, use_past, its load path),
    with only the device set to CPU: the one thing that cannot run here."""

    real_setup = mf.setup_device
    monkeypatch.setattr(mf, "setup_device", lambda device, mode, **kw: real_setup("CPU", "pynative", **kw))
    return MindFormersRunner(
        mspec,
        ckpt,
        32,
        device=spec.train.device,
        dtype=merged_weight_dtype(spec.merge, spec.train),
        batch_size=spec.eval.batch_size,
        output_dir=spec.run_dir,
    )


def bf16_or_fp16_of(values: np.ndarray, dtype) -> np.ndarray:
    """MindSpore's own cast (its Tensor.astype), the reference for a float32 base in a narrower network."""
    import mindspore as ms

    return ms.Tensor(values).astype(dtype).astype(ms.float32).asnumpy()


@pytest.mark.parametrize(
    "recipe, overrides, want",
    [
        ("stage1-llama3-8b.yaml", ["merge.dtype=bfloat16"], "BFloat16"),
        ("stage1-llama3-8b.yaml", [], "Float16"),
        ("stage2-internlm-7b.yaml", [], "Float16"),
    ],
)
def test_evaluate_loads_the_base_and_the_merged_checkpoint_strictly(
    recipe, overrides, want, tmp_path, mf_cwd, monkeypatch
):
    """The Ascend recipes' predicting network (fp16 weights, or bf16 with merge.dtype bfloat16; float32 RMSNorm
    weights, as MindFormers declares them) built by MindFormersRunner on CPU: the float32 base checkpoint
    and the checkpoint jobs.merge writes both load through the runner's own load path, which loads
    strictly (MindSpore converts dtypes only when strict_load is off). Every merged tensor already has the
    dtype the network declares for that parameter, and every loaded value is the checkpoint's (the base's
    rounded as MindSpore casts)."""

    spec = load_spec(REPO / "recipes" / recipe, [f"runs_dir={tmp_path / 'runs'}"])
    mspec = tiny_model(spec)
    base_ckpt, lora_ckpt = tiny_base_and_lora(mspec, spec, tmp_path)
    spec = load_spec(
        REPO / "recipes" / recipe, [f"runs_dir={tmp_path / 'runs'}", f"model.checkpoint={base_ckpt}", *overrides]
    )
    merged_ckpt = merged_by_the_merge_job(spec, lora_ckpt)

    runner = runner_on_cpu(monkeypatch, mspec, merged_ckpt, spec)
    declared = {p.name: str(p.dtype) for p in runner.net.get_parameters() if "_cache" not in p.name}
    assert declared["model.layers.0.attention.wq.weight"] == want
    assert declared["model.layers.0.attention_norm.weight"] == "Float32"
    with CheckpointReader(merged_ckpt) as reader:
        written = {e.name: e.tensor_type for e in reader.entries()}
    assert written == declared
    merged = load_checkpoint_numpy(merged_ckpt)
    for p in runner.net.get_parameters():
        if p.name in merged:
            np.testing.assert_array_equal(
                p.astype("float32").asnumpy(), merged[p.name].astype(np.float32), err_msg=p.name
            )

    base_runner = runner_on_cpu(monkeypatch, mspec, base_ckpt, spec)
    base = load_checkpoint_numpy(base_ckpt)
    for p in base_runner.net.get_parameters():
        if p.name in base:
            np.testing.assert_array_equal(
                p.astype("float32").asnumpy(), bf16_or_fp16_of(base[p.name], p.dtype), err_msg=p.name
            )


def test_the_runner_refuses_a_checkpoint_whose_dtypes_disagree(tmp_path, mf_cwd, monkeypatch):
    """A merged checkpoint with its RMSNorm weights in bf16 (what merge wrote when it cast every float
    tensor to merge.dtype) is refused by name, not converted: the load is strict."""

    spec = load_spec(REPO / "recipes" / "stage1-llama3-8b.yaml", [f"runs_dir={tmp_path / 'runs'}"])
    mspec = tiny_model(spec)
    base_ckpt, lora_ckpt = tiny_base_and_lora(mspec, spec, tmp_path)
    spec = load_spec(
        REPO / "recipes" / "stage1-llama3-8b.yaml", [f"runs_dir={tmp_path / 'runs'}", f"model.checkpoint={base_ckpt}"]
    )
    tensors = load_checkpoint_numpy(merged_by_the_merge_job(spec, lora_ckpt))
    norm = "model.layers.1.ffn_norm.weight"
    tensors[norm] = bf16_as_numpy(tensors[norm])
    save_checkpoint_numpy(tmp_path / "bad.ckpt", tensors)
    with pytest.raises(ValueError, match=norm.replace(".", r"\.")):
        runner_on_cpu(monkeypatch, mspec, tmp_path / "bad.ckpt", spec)


def bf16_as_numpy(values: np.ndarray) -> np.ndarray:

    return values.astype(np.float32).astype(bfloat16())


@pytest.mark.parametrize("recipe", ["stage1-llama3-8b.yaml", "stage2-internlm-7b.yaml"])
def test_the_bundles_predict_yaml_loads_the_merged_checkpoint_strictly(recipe, tmp_path, mf_cwd):
    """The submission's predict.yaml, read by MindFormerConfig and built by MindFormers' build_network
    (tiny widths, the recipe's dtypes): MindSpore's strict load_param_into_net takes the merged checkpoint
    as merge wrote it."""
    import mindspore as ms
    from mindformers.models.build_model import build_network

    spec = load_spec(REPO / "recipes" / recipe, [f"runs_dir={tmp_path / 'runs'}"])
    base_ckpt, lora_ckpt = tiny_base_and_lora(tiny_model(spec), spec, tmp_path)
    spec = load_spec(REPO / "recipes" / recipe, [f"runs_dir={tmp_path / 'runs'}", f"model.checkpoint={base_ckpt}"])
    merged_ckpt = merged_by_the_merge_job(spec, lora_ckpt)
    request = PredictRequest(str(merged_ckpt), tokenizer_dir="tok", max_new_tokens=8, special_tokens={}, stop_ids=[2])
    cfg = render_predict_config(spec, request)
    mf = mindformers_config(cfg, tmp_path)
    mf.model.model_config.update({**TINY_DIMS, "seq_length": 32})
    net = build_network(mf.model)
    not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(str(merged_ckpt)), strict_load=True)
    assert all(n.endswith(("key_cache", "value_cache")) for n in not_loaded), not_loaded


# ---- 1.6: paged-attention blocks for the whole batch at the longest sequence -------------------


@pytest.mark.parametrize("seq_length", [200, 600, 2100])
def test_paged_attention_blocks_hold_the_batch_at_the_longest_sequence(seq_length, tmp_path, mf_cwd, monkeypatch):
    """MindFormersRunner's network (stage 1's eval batch of 16) and MindFormers' own block manager, as its
    generate() sets it up (text_generator._set_block_mgr -> BlockTables.init_cache_engine): room for every
    row of the batch at the runner's sequence length. MindFormers' defaults (512 blocks of 16 = 8,192
    tokens) refuse a batch of 16 past 512 tokens."""
    spec = load_spec(REPO / "recipes" / "stage1-llama3-8b.yaml", [f"runs_dir={tmp_path / 'runs'}"])
    mspec = tiny_model(spec)
    base_ckpt, _ = tiny_base_and_lora(mspec, spec, tmp_path)

    real_setup = mf.setup_device
    monkeypatch.setattr(mf, "setup_device", lambda device, mode, **kw: real_setup("CPU", "pynative", **kw))
    runner = MindFormersRunner(
        mspec,
        base_ckpt,
        seq_length,
        device=spec.train.device,
        dtype=merged_weight_dtype(spec.merge, spec.train),
        batch_size=spec.eval.batch_size,
        output_dir=spec.run_dir,
    )
    net = runner.net
    assert runner.batch_size == 16
    net._set_block_mgr(runner.batch_size, net.config.seq_length)
    # every row of the batch at the longest sequence the runner was built for: MindFormers' own
    # allocation (its pool raises when it runs out) and a cache slot for every one of those tokens
    lengths = np.full(16, seq_length, np.int32)
    tables, slots = net.block_mgr.assemble_pa_full_inputs(seq_length, lengths, [False] * 16)
    assert tables.shape == (16, net.block_mgr.max_num_blocks_per_seq)  # the width MindFormers declares
    assert (slots.reshape(16, seq_length) >= 0).all()
    assert len(set(slots.tolist())) == 16 * seq_length  # no two tokens share a slot
    cache = next(p for p in net.get_parameters() if p.name.endswith("key_cache"))
    assert cache.shape[0] == net.config.num_blocks and cache.shape[1] == net.config.block_size


# ---- 2.5: the merged update survives in the weight the predicting network multiplies with -------


def test_a_small_lora_update_survives_in_the_stage1_predicting_network(tmp_path, mf_cwd, monkeypatch):
    """Stage 1 at lr 1e-5: a LoRA update of ~5e-5 per entry (B after a 7,030-step random walk of lr-sized
    Adam steps, docs/ACCURACY.md) on bf16-grid weights of size 0.02. jobs.merge folds it in and
    MindFormersRunner loads the result; MindFormers' Linear multiplies with its weight cast to the compute
    dtype (mindformers/modules/layers.py Linear.construct), so that cast weight, taken with MindSpore's own
    cast, is what the network computes with. Its distance from the exact W + dW stays under 15% of dW
    (bf16 storage or a bf16 compute dtype leave ~55%: half the entries do not move)."""
    import mindspore as ms

    spec = load_spec(REPO / "recipes" / "stage1-llama3-8b.yaml", [f"runs_dir={tmp_path / 'runs'}"])
    mspec = tiny_model(spec)
    rng = np.random.default_rng(1)

    def grid(x):
        return bfloat16_bits_to_float32(float32_to_bfloat16_bits(x.astype(np.float32))).reshape(x.shape)

    base = {
        name: grid(np.ones(shape) if "norm" in name else rng.normal(0, 0.02, shape))
        for name, shape in mspec.parameter_shapes().items()
    }
    lora, exact, update = {}, {}, {}
    factor = spec.lora.alpha / spec.lora.rank
    for i in range(mspec.num_layers):
        for name in ("wq", "wv"):
            out, inp = mspec.linear_shapes()[name]
            prefix = f"model.layers.{i}.attention.{name}"
            a = rng.normal(0, 0.01, (spec.lora.rank, inp)).astype(np.float32)
            b = rng.normal(0, 1e-5 * 7030**0.5, (out, spec.lora.rank)).astype(np.float32)
            lora[f"{prefix}.mindpet_delta_lora_a"], lora[f"{prefix}.mindpet_delta_lora_b"] = a, b
            update[prefix] = factor * (b.astype(np.float64) @ a.astype(np.float64))
            exact[prefix] = base[f"{prefix}.weight"].astype(np.float64) + update[prefix]
    save_checkpoint_numpy(tmp_path / "base.ckpt", base)
    save_checkpoint_numpy(tmp_path / "lora.ckpt", lora)
    spec = load_spec(
        REPO / "recipes" / "stage1-llama3-8b.yaml",
        [f"runs_dir={tmp_path / 'runs'}", f"model.checkpoint={tmp_path / 'base.ckpt'}"],
    )
    runner = runner_on_cpu(monkeypatch, mspec, merged_by_the_merge_job(spec, tmp_path / "lora.ckpt"), spec)
    cells = dict(runner.net.cells_and_names())
    err_sq = upd_sq = 0.0
    for prefix, want in exact.items():
        cell = cells[prefix]
        used = ms.ops.cast(cell.weight, cell.dtype).astype(ms.float32).asnumpy().astype(np.float64)
        err_sq += float(((used - want) ** 2).sum())
        upd_sq += float((update[prefix] ** 2).sum())
    assert (err_sq / upd_sq) ** 0.5 < 0.15, (err_sq / upd_sq) ** 0.5
