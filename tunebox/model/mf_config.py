"""The run spec in MindFormers' own words: the finetune YAML that MindFormers' Trainer runs (our
train job, or stock MindFormers on a judge's machine), and the predict YAML for a merged checkpoint.

Key names follow MindFormers' own Llama configs (research/llama3/finetune_llama3_8b_*.yaml and the
contest's run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml) where 1.9 kept them: seed, output_dir,
load_ckpt_format, run_mode, trainer, runner_config, optimizer, lr_schedule, train_dataset(+_task),
use_parallel, parallel, parallel_config, recompute_config, callbacks, context, model
(model_config with pet_config, arch), runner_wrapper; the checkpoint keys in 1.9's `checkpoint:` section
(checkpoint_section_loads says when). What is not MindFormers' own is named for tunebox and registered
through MindFormers' `auto_register` (tunebox/model/mf_extensions.py):
  - runner_wrapper TuneboxTrainOneStepCell on CPU only (MindFormers' MFTrainOneStepCell elsewhere);
  - model arch TuneboxLlamaForCausalLM when the answer-only LM head or packing is on (keys
    tunebox_answer_capacity / tunebox_packing in model_config);
  - callbacks TuneboxLoraCheckpoints (the planned LoRA checkpoints) and TuneboxLossLog (loss.jsonl).
The TensorBoard event files (loss, learning rate) are MindFormers' own: its `tensorboard` key.
To run a rendered file with stock MindFormers: REGISTER_PATH=<folder holding mf_extensions.py>.

The functions here are pure: the model's shape, the run spec's sections (or the spec, for the predict
configs) and facts measured by the caller in, a dict out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from tunebox.config import LoraSection, TrainSection
from tunebox.model.budget import RESUME_KEPT, merged_weight_dtype, resume_every
from tunebox.model.registry import (
    ModelShape,
    declared_checkpoint_types,
    get_model_shape,
    llama_config_kwargs,
    mindformers_target_regex,
)

EXTENSIONS_FILE = Path(__file__).with_name("mf_extensions.py")
EXTENSIONS_MODULE = EXTENSIONS_FILE.stem
CHECKPOINT_PREFIX = "tunebox"


def _registered(cls: str) -> dict:
    return {"type": cls, "auto_register": f"{EXTENSIONS_MODULE}.{cls}"}


@dataclass(frozen=True)
class Topology:
    """How the workers split the work: data_parallel x model_parallel x pipeline_stage = workers."""

    workers: int
    data_parallel: int
    model_parallel: int
    pipeline_stage: int
    micro_batch_num: int


def topology(train: TrainSection) -> Topology:
    """The parallel layout of the train section (validated by config.load_spec: the product equals
    train.workers)."""
    p = train.parallel
    dp = p.data_parallel or train.workers // (p.model_parallel * p.pipeline_stage)
    return Topology(train.workers, dp, p.model_parallel, p.pipeline_stage, p.micro_batch_num)


def uses_extensions(train: TrainSection) -> bool:
    """Whether the model runs tunebox's registered LlamaForCausalLM: only with pure data parallel
    (its in-graph gather has no sharding strategy for model/pipeline parallel)."""
    topo = topology(train)
    return (train.lm_head_on_answers or train.packing) and topo.model_parallel == 1 and topo.pipeline_stage == 1


def render_train_config(
    shape: ModelShape,
    train: TrainSection,
    lora: LoraSection,
    *,
    seq_length: int,
    data_files: list[Path],
    out_dir: Path,
    plan: dict,
    base_checkpoint: Optional[Path],
    answer_capacity: int = 0,
) -> dict:
    """MindFormers' finetune config for this run: the model's shape, the run spec's train and lora
    sections, and what the caller measured.

    seq_length: the rows' length (prep's data.seq_length, or the packed rows'); data_files: prep's MindRecord
    (or train's packed one); out_dir: the train job's folder (MindFormers'
    output_dir: checkpoint/, checkpoint_trainable/, log/); plan: training.plan.plan_steps (total_steps,
    batches_per_epoch, warmup_steps, checkpoint_steps); answer_capacity: the most loss-counted positions in
    any row (0: LM head on every position)."""
    t = train
    total_steps, steps_per_epoch = plan["total_steps"], plan["batches_per_epoch"]
    topo = topology(t)
    seq = seq_length
    cpu = t.device == "CPU"
    per_worker_batch = t.batch_size // topo.data_parallel
    epochs = -(-total_steps // steps_per_epoch)
    extensions = uses_extensions(t)

    model_config = {
        "type": "LlamaConfig",
        **llama_config_kwargs(shape, seq_length=seq, batch_size=per_worker_batch, dtype=t.dtype),
        "checkpoint_name_or_path": "",
        "pet_config": {
            "pet_type": "lora",
            "lora_rank": lora.rank,
            "lora_alpha": lora.alpha,
            "lora_dropout": lora.dropout,
            "target_modules": mindformers_target_regex(lora.target_modules),
            # float32 LoRA matrices in a bf16/fp16 network (mindpet's LoRADense casts
            # them to the layer's compute dtype in the forward pass): the optimizer's
            # moments are created like the parameters, so they stay float32, as the
            # contest's FP32StateAdamWeightDecay kept them. Without the key the
            # adapter inherits the layer's param_init_type (mindformers/pet/tuners/
            # lora_adapter.py get_dtype).
            "param_init_type": "float32",
        },
    }
    if cpu:
        # MindFormers turns on lazy_inline (cell reuse) outside stand-alone mode; MindSpore's CPU
        # data-parallel graph split cannot run a reused cell ("Input[0] must be a Primitive ValueNode")
        model_config["disable_lazy_inline"] = True
    if extensions:
        model_config["tunebox_answer_capacity"] = int(answer_capacity) if t.lm_head_on_answers else 0
        model_config["tunebox_packing"] = bool(t.packing)
    arch = _registered("TuneboxLlamaForCausalLM") if extensions else {"type": "LlamaForCausalLM"}

    columns = ["input_ids", "labels"] + (["segment_ids"] if t.packing and extensions else [])
    loader = {"type": "MindDataset", "shuffle": t.shuffle}
    if len(data_files) == 1:
        loader["dataset_dir"] = str(data_files[0])
    else:
        loader["dataset_files"] = [str(f) for f in data_files]
    dataset = {
        "data_loader": loader,
        "input_columns": columns,
        "num_parallel_workers": 1,
        "python_multiprocessing": False,
        "drop_remainder": True,
        "batch_size": per_worker_batch,
        "repeat": 1,
        "numa_enable": False,
        "prefetch_size": 1,
    }

    wrapper = _registered("TuneboxTrainOneStepCell") if cpu else {"type": "MFTrainOneStepCell"}
    # fp16 (stage 2) needs loss scaling against gradient underflow: the contest's stage-2 configs'
    # dynamic scale (second-phase/*/finetune_internlm_7b_lora_mmlu_64G.yaml, mindspore-courses/competition
    # 3ad8f55). bf16 has float32's exponent range: the stage-1 configs' fixed 1.0.
    scale_sense = (
        {"type": "DynamicLossScaleUpdateCell", "loss_scale_value": 16384, "scale_factor": 2, "scale_window": 1000}
        if t.dtype == "float16"
        else 1.0
    )
    wrapper.update(
        {
            "scale_sense": scale_sense,
            "use_clip_grad": t.max_grad_norm > 0,
            "max_grad_norm": float(t.max_grad_norm or 1.0),
        }
    )
    parallel_mode = 0 if topo.model_parallel == 1 and topo.pipeline_stage == 1 else 1
    parallel = {
        "parallel_mode": parallel_mode,
        "gradients_mean": parallel_mode == 0,
        "enable_parallel_optimizer": False,
        # MindFormers 1.9 deprecates full_batch for dataset_strategy, and its config template fills in
        # full_batch: True when the key is absent (tools/register/template.py MsParallelConfig), which
        # brings the warning back (trainer/base_trainer.py _set_full_batch_with_strategy): null is "not set".
        # The dataset strategy is MindFormers' default for a MindDataset, "full_batch", which the Trainer
        # applies before it reads the context (_train_dataset_preprocess), as full_batch True/False did.
        "full_batch": None,
    }
    if parallel_mode != 0:
        parallel.update(
            {
                # each rank reads the whole batch; the model's sharding splits it (semi_auto_parallel)
                "dataset_strategy": "full_batch",
                "search_mode": "sharding_propagation",
                "strategy_ckpt_save_file": str(out_dir / "strategy" / "ckpt_strategy.ckpt"),
            }
        )
    context = {
        "mode": 0 if t.mode == "graph" else 1,
        "device_target": t.device,
        "max_call_depth": 10000,
        "save_graphs": False,
    }
    if not cpu:
        context.update({"device_id": 0, "jit_config": {"jit_level": "O1"}, "memory_optimize_level": "O0"})
    else:
        # MindSpore's static memory-reuse plan for the graph: the padded SmolLM2 bench step's peak RSS 6.81 -> 5.75 GiB
        # together with mf_extensions.release_freed_heap, losses unchanged (docs/CPU_MEMORY.md, 2026-12-05)
        context["memory_optimize_level"] = "O1"

    config = {
        "seed": t.seed,
        "output_dir": str(out_dir),
        # MindFormers 1.9's checkpoint format (the `checkpoint:` section below): safetensors in, and
        # iteration_N/ folders out, resharded on load from their metadata (no strategy files)
        "load_ckpt_format": "safetensors",
        "run_mode": "finetune",
        "trainer": {"type": "CausalLanguageModelingTrainer", "model_name": shape.name},
        "runner_config": {
            "epochs": epochs,
            "batch_size": per_worker_batch,
            "sink_mode": False,
            "sink_size": 1,
            "gradient_accumulation_steps": t.grad_accum,
        },
        # MindSpore's AdamWeightDecay (no bias correction): the update rule of the contest's
        # FP32StateAdamWeightDecay, which 1.9 dropped, and of tunebox's own loop before MindFormers'
        # Trainer. Recipes' learning rates (the contest's, the winners', the local twin's) were set
        # for it; MindFormers 1.9's AdamW corrects the bias, which shrinks the first ~200 updates
        # 2-6x at the same train.lr (docs/ACCURACY.md).
        "optimizer": {
            "type": "AdamWeightDecay",
            "beta1": 0.9,
            "beta2": t.beta2,
            "eps": 1.0e-8,
            "weight_decay": t.weight_decay,
        },
        "lr_schedule": {
            "type": "CosineWithWarmUpLR",
            "learning_rate": t.lr,
            "warmup_steps": plan["warmup_steps"],
            "lr_end": t.lr * t.min_lr_ratio,
            "total_steps": total_steps,
        },
        "train_dataset": dataset,
        "train_dataset_task": {"type": "CausalLanguageModelDataset", "dataset_config": dataset},
        "do_eval": False,
        "use_parallel": topo.workers > 1,
        "parallel": parallel,
        "parallel_config": {
            "data_parallel": topo.data_parallel,
            "model_parallel": topo.model_parallel,
            "pipeline_stage": topo.pipeline_stage,
            "micro_batch_num": topo.micro_batch_num,
            "vocab_emb_dp": True,
            "gradient_aggregation_group": 4,
        },
        "micro_batch_interleave_num": 1,
        "recompute_config": {
            "recompute": t.parallel.recompute,
            "select_recompute": t.parallel.select_recompute,
            "parallel_optimizer_comm_recompute": False,
            "mp_comm_recompute": True,
            "recompute_slice_activation": True,
        },
        "callbacks": [
            {"type": "MFLossMonitor"},
            {
                **_registered("TuneboxLoraCheckpoints"),
                "directory": str(out_dir),
                "prefix": CHECKPOINT_PREFIX,
                "planned_steps": list(plan["checkpoint_steps"]),
                "steps_per_epoch": steps_per_epoch,
            },
            {
                **_registered("TuneboxLossLog"),
                "path": str(out_dir / "loss.jsonl"),
                "total_steps": total_steps,
                "steps_per_epoch": steps_per_epoch,
            },
            # full checkpoints (weights + optimizer state) to resume from, as the `checkpoint:` section
            # says. Last: a full checkpoint of step s means that step's LoRA file and loss line are
            # written (training.outputs.training_done)
            {"type": "CheckpointMonitor", "integrated_save": parallel_mode == 0},
        ],
        # MindFormers 1.9's current checkpoint keys (mindformers/trainer/utils.py convert_checkpoint_config):
        # every one set, or it falls back to a deprecated key's default and warns. The base loads from a
        # safetensors folder (model.weights.ensure_safetensors_base); a resume swaps load_path for
        # save_path and loads the optimizer too (apply_resume_settings).
        "checkpoint": {
            "load_path": str(base_checkpoint) if base_checkpoint else "",
            "no_load_optim": True,
            "load_balanced": False,
            "reshard_worker_num": 1,
            "save_path": str(out_dir / "checkpoint"),
            "save_max": RESUME_KEPT,
            "save_interleaved_steps": resume_every(total_steps, t.save_state_every),
            "no_save_optim": False,
            "save_remove_redundancy": False,
            "async_save": False,
            "prefix": CHECKPOINT_PREFIX,
        },
        # MindFormers' own TensorBoard writer (tensorboardX): MFLossMonitor writes loss, learning-rate and
        # grad-norm per step into <tensorboard_dir>/rank_<r>/events.out.tfevents.*, beside loss.jsonl.
        # Keys as in https://www.mindspore.cn/mindformers/docs/en/r1.5.0/function/monitor.html
        "tensorboard": {"tensorboard_dir": str(out_dir / "tensorboard"), "tensorboard_queue_size": 10},
        # No global-norm health check, as before. MindFormers 1.9's template gives monitor_config the
        # deprecated global_norm_spike_threshold 3.0 (tools/register/template.py MonitorConfig), for which
        # the Trainer warns (trainer/trainer.py _convert_quick_resume_training_config); null leaves it
        # unset. Its wrapper reads it only with use_skip_data_by_global_norm, which is off.
        "monitor_config": {"global_norm_spike_threshold": None},
        "context": context,
        "model": {"model_config": model_config, "arch": arch},
        "runner_wrapper": wrapper,
    }
    return config if checkpoint_section_loads(t) else legacy_checkpoint_config(config)


def checkpoint_section_loads(train: TrainSection) -> bool:
    """Whether MindFormers 1.9 loads this run in its current checkpoint format (the `checkpoint:` section): on
    one worker, or under semi_auto_parallel. Across data-parallel workers (parallel_mode 0) its loader asks
    MindSpore for the network's sharding, which only an auto-parallel compile records, and gets None
    (mindformers/checkpoint/sharded_tensor.py get_cur_sharded_tensor: a TypeError on the tiny run with two
    msrun workers), so those runs keep the legacy keys (legacy_checkpoint_config), and their base the .ckpt."""
    topo = topology(train)
    return topo.workers == 1 or topo.model_parallel > 1 or topo.pipeline_stage > 1


def apply_resume_settings(config) -> None:
    """Turn a rendered finetune config (MindFormers' MindFormerConfig of it, changed in place) into the resume
    of its own run. In the `checkpoint:` section: load the newest full checkpoint under
    save_path (MindFormers reads latest_checkpointed_iteration.txt), the optimizer state and the step
    with it. MindFormers 1.9 reshards it from the checkpoint's own metadata on any topology
    (mindformers/checkpoint/checkpoint.py load_checkpoint, ReshardLoader), so no strategy file is
    handed over; a resume keeps the topology all the same (train_hash refuses a change). In the legacy keys
    (data-parallel workers, checkpoint_section_loads): resume_training from CheckpointMonitor's
    output_dir/checkpoint/rank_N/ (its meta.json names the last one), each rank its own full copy."""
    if config.get("checkpoint"):  # attributes: convert_checkpoint_config reads the section as a MindFormerConfig
        config.checkpoint.load_path = str(config.checkpoint.save_path)
        config.checkpoint.no_load_optim = False
    else:
        config.resume_training = True
        config.load_checkpoint = str(Path(config.output_dir) / "checkpoint")


def legacy_checkpoint_config(config: dict) -> dict:
    """The rendered config in MindFormers' legacy checkpoint keys (no `checkpoint:` section, the
    CheckpointMonitor's own keys), for what the current format refuses or cannot load: only_save_strategy
    (the dry run), data-parallel workers (checkpoint_section_loads). The same saves; the base as
    `load_checkpoint` (a .ckpt, or a folder of them)."""
    cfg = copy.deepcopy(config)
    if "checkpoint" not in cfg:  # rendered in them already
        return cfg
    ckpt = cfg.pop("checkpoint")
    cfg.pop("load_ckpt_format", None)
    cfg.update(
        {
            "load_checkpoint": ckpt["load_path"],
            "src_strategy_path_or_dir": "",
            "auto_trans_ckpt": False,
            "only_save_strategy": False,
            "resume_training": False,
        }
    )
    for callback in cfg["callbacks"]:
        if callback["type"] == "CheckpointMonitor":
            callback.update(
                {
                    "prefix": ckpt["prefix"],
                    "directory": str(Path(ckpt["save_path"]).parent),
                    "save_checkpoint_steps": ckpt["save_interleaved_steps"],
                    "keep_checkpoint_max": ckpt["save_max"],
                    "async_save": ckpt["async_save"],
                }
            )
    return cfg


PAGED_BLOCK_SIZE = 16  # MindFormers' LlamaConfig default block_size


def paged_attention_blocks(batch_size: int, seq_length: int, block_size: int = PAGED_BLOCK_SIZE) -> dict:
    """The paged-attention KV cache for `batch_size` rows of up to `seq_length` tokens: seq_length rounded up
    to whole blocks (MindFormers gives a row seq_length // block_size blocks: mindformers/modules/
    block_tables.py BlockTables) and num_blocks for every row at that length. MindFormers' default (512
    blocks of 16 = 8,192 tokens) runs out for a batch of 16 past 512 tokens ("block pool is out of memory")."""
    per_row = -(-seq_length // block_size)
    return {"seq_length": per_row * block_size, "block_size": block_size, "num_blocks": batch_size * per_row}


def predict_model_kwargs(shape, dtype: str, *, seq_length: int, batch_size: int, use_past: bool = True) -> dict:
    """LlamaConfig kwargs of the network that predicts with a merged checkpoint (evaluate on Ascend, the
    bundle's predict.yaml): weights and compute in merged_weight_dtype (MindFormers' Linear multiplies with
    its weight cast to the compute dtype, so a bf16 compute dtype would round a float16/float32 merged
    update again: docs/ACCURACY.md), incremental decoding with a paged-attention cache sized for the batch
    at seq_length. dtype: merged_weight_dtype's."""
    blocks = paged_attention_blocks(batch_size, seq_length)
    kwargs = llama_config_kwargs(
        shape, seq_length=blocks["seq_length"], batch_size=batch_size, dtype=dtype, param_dtype=dtype, use_past=use_past
    )
    return {**kwargs, "block_size": blocks["block_size"], "num_blocks": blocks["num_blocks"]}


def merged_checkpoint_types(spec) -> dict[str, str]:
    """Each merged tensor's checkpoint type: the one the predicting network declares for that parameter
    (weights in merged_weight_dtype, RMSNorm weights float32), so the network loads it strictly (MindSpore
    converts dtypes only with strict_load off: mindspore/train/serialization.py _type_convert)."""
    shape = get_model_shape(spec.model.name)
    dtype = merged_weight_dtype(spec.merge, spec.train)
    return declared_checkpoint_types(shape, predict_model_kwargs(shape, dtype, seq_length=1, batch_size=1))


# The tokenizer class MindFormers 1.9 registers for each model (mindformers/models/llama/: LlamaTokenizer
# reads a sentencepiece tokenizer.model, LlamaTokenizerFast an HF tokenizer.json as `tokenizer_file`).
# tunebox keeps every model's tokenizer as tokenizer.json (SmolLM2's and the tiny byte-level one have no
# sentencepiece model), so the fast class serves them all. Not PreTrainedTokenizerFast: 1.9's
# build_tokenizer does not find it ("Can't find class type tokenizer class name PreTrainedTokenizerFast").
MF19_TOKENIZER = {
    "smollm2-135m": "LlamaTokenizerFast",
    "tiny": "LlamaTokenizerFast",
    "llama3-8b": "LlamaTokenizerFast",
    "internlm-7b": "LlamaTokenizerFast",
}
MF19_HEADER = (
    "MindFormers 1.9.0 on MindSpore 2.9.0 (the stack this run used); "
    "the contest's MindFormers r1.1 takes the *_r1.1.yaml files next to this one"
)


@dataclass(frozen=True)
class PredictRequest:
    """What a predict config is written for, whichever MindFormers reads it: the checkpoint and the folder of
    the tokenizer files as the config names them (relative to the config in a submission), the new tokens to
    generate, tokenizer_config.json's bos/eos/pad/unk token strings, the template's end-of-turn ids, and the
    sequence length (default: the spec's, at least 512)."""

    checkpoint: str
    tokenizer_dir: str
    max_new_tokens: int
    special_tokens: dict
    stop_ids: list[int]
    seq_length: Optional[int] = None


def _greedy(seq: int, max_new_tokens: int) -> dict:
    """A predict config's generation keys (model_config): greedy, up to max_new_tokens within seq tokens."""
    return {
        "checkpoint_name_or_path": "",
        "do_sample": False,
        "top_k": 1,
        "top_p": 1.0,
        "max_decode_length": seq,
        "max_new_tokens": max_new_tokens,
        "repetition_penalty": 1.0,
    }


def _predict_run(checkpoint: str, model_name: str) -> dict:
    """A predict config's first keys: one process, the checkpoint as it is (no transform)."""
    return {
        "seed": 0,
        "output_dir": "./output",
        "load_checkpoint": checkpoint,
        "auto_trans_ckpt": False,
        "run_mode": "predict",
        "use_parallel": False,
        "trainer": {"type": "CausalLanguageModelingTrainer", "model_name": model_name},
    }


def render_predict_config(spec, request: PredictRequest) -> dict:
    """MindFormers 1.9's predict config for a merged (plain LlamaForCausalLM) checkpoint, with the
    tokenizer class MindFormers registers for this model (MF19_TOKENIZER) on the bundled tokenizer.json:
    greedy, the spec's device and dtype, stopping at the template's end-of-turn ids (request.stop_ids) as
    tunebox's decoder does.

    No BOS is added by the tokenizer (add_bos_token False): the prompt text carries it where the
    model's template wants one (InternLM's), exactly as prep and evaluate encode it. Incremental
    decoding (use_past) off CPU only: MindSpore's CPU rotary kernel takes fp16/bf16 only under use_past."""
    shape = get_model_shape(spec.model.name)
    seq = request.seq_length or max(spec.data.seq_length, 512)
    t = spec.train
    model_config = {
        "type": "LlamaConfig",
        **predict_model_kwargs(
            shape, merged_weight_dtype(spec.merge, t), seq_length=seq, batch_size=1, use_past=t.device != "CPU"
        ),
        "eos_token_id": [int(i) for i in request.stop_ids],
        **_greedy(seq, request.max_new_tokens),
    }
    return {
        **_predict_run(request.checkpoint, spec.model.name),
        "context": {"mode": 0, "device_target": t.device, "max_call_depth": 10000},
        "parallel_config": {"data_parallel": 1, "model_parallel": 1, "pipeline_stage": 1},
        "model": {"model_config": model_config, "arch": {"type": "LlamaForCausalLM"}},
        "processor": {
            "return_tensors": "ms",
            "tokenizer": {
                "type": MF19_TOKENIZER[spec.model.name],
                "vocab_file": None,
                "tokenizer_file": f"{request.tokenizer_dir}/tokenizer.json",
                **{k: request.special_tokens.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")},
                "add_bos_token": False,
                "add_eos_token": False,
            },
        },
    }


def dump(cfg: dict, header: Optional[str] = None) -> str:
    """The YAML text; header: a comment for the first line (which MindFormers the file is for)."""
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return f"# {header}\n{text}" if header else text


# ---- the contest's MindFormers: r1.1 ------------------------------------------------------------
# The contest ran MindFormers r1.1 (v1.1.0) on MindSpore 2.3.0RC2 (docs/CONTEST_RULES.md). Its classes and
# config keys, read from its source at the commit in tunebox/contest/mindformers_r1.1.json, differ from
# 1.9's: no auto_register (first in v1.3.0); LlamaConfig has no attn_proj_has_bias, tie_word_embeddings or
# fused_rms_norm (unknown keys become attributes nobody reads: a bias would be dropped silently); the
# stage-2 model is research/internlm's InternLMForCausalLM, whose InternLMConfig says `has_bias` for the
# q/k/v and o projections together. The classes are those the contest's teams named in their predict
# YAMLs (mindspore-courses/competition, 2024-ascend-innovation-contest/topic2-finetune: first-phase
# "ALL IN ONE"/predict_llama3_8b_800T_A2_64G.yaml, second-phase/nju-websoft/predict_internlm_7b_mmlu.yaml,
# commit 0ad8b8713ad666be6f2a265250da5e90a82b7062).
R11_MODELS = {
    # model: (config class, network class, tokenizer class, tokenizer file key and name, how r1.1 runs it)
    "llama3-8b": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "Llama3Tokenizer",
        ("vocab_file", "tokenizer.model"),
        "research/llama3/run_llama3.py (it imports research/llama3's Llama3Tokenizer)",
    ),
    "internlm-7b": (
        "InternLMConfig",
        "InternLMForCausalLM",
        "InternLMTokenizer",
        ("vocab_file", "tokenizer.model"),
        "research/internlm/run_internlm.py (it imports research/internlm's classes)",
    ),
    "smollm2-135m": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "LlamaTokenizerFast",
        ("tokenizer_file", "tokenizer.json"),
        "run_mindformer.py",
    ),
    "tiny": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "LlamaTokenizerFast",
        ("tokenizer_file", "tokenizer.json"),
        "run_mindformer.py",
    ),
}
R11_FILE = "predict_r1.1.yaml"
# keys of llama_config_kwargs that r1.1's configs do not have (their facts are carried otherwise, or refused)
R11_DROPPED_KEYS = ("attn_proj_has_bias", "tie_word_embeddings", "fused_rms_norm")


def r11_header(model_name: str) -> str:
    runner = R11_MODELS[model_name][4]
    text = (
        f"MindFormers r1.1 (v1.1.0) on MindSpore 2.3.0RC2, the contest's stack: run with {runner} "
        f"--config {R11_FILE} --run_mode predict; predict.yaml is the MindFormers 1.9 one"
    )
    if get_model_shape(model_name).tie_word_embeddings:
        text += (
            "\n# r1.1's LlamaForCausalLM has no tied LM head: save the embedding as lm_head.weight in the "
            "checkpoint before loading it"
        )
    return text


def render_contest_predict_config(spec, request: PredictRequest) -> dict:
    """A predict config for the contest's MindFormers r1.1, with the classes the contest's teams used
    (R11_MODELS). Refuses what r1.1 would silently get wrong: a bias on the attention output under
    LlamaConfig, InternLM projections with and without bias mixed. A tied LM head (SmolLM2) has no r1.1
    key either; r11_header says so for such a model."""
    shape = get_model_shape(spec.model.name)
    config_cls, arch, tokenizer_cls, (file_key, file_name), _ = R11_MODELS[spec.model.name]
    seq = request.seq_length or max(spec.data.seq_length, 512)
    # the contest's stack is Ascend (CANN 8.0.RC1): incremental decoding on, whatever device this run used
    # weights in the merged checkpoints' dtypes, so r1.1 loads them as they are
    kwargs = predict_model_kwargs(
        shape, merged_weight_dtype(spec.merge, spec.train), seq_length=seq, batch_size=1, use_past=True
    )
    if config_cls == "InternLMConfig":
        if shape.qkv_has_bias != shape.attn_proj_has_bias:
            raise ValueError(
                f"{shape.name}: InternLMConfig's has_bias covers q/k/v and o together; this model has "
                f"qkv bias {shape.qkv_has_bias}, o bias {shape.attn_proj_has_bias}"
            )
        kwargs["has_bias"] = kwargs.pop("qkv_has_bias")
    elif shape.attn_proj_has_bias:
        raise ValueError(f"{shape.name}: r1.1's LlamaConfig has no attn_proj_has_bias; every wo.bias would be dropped")
    for key in R11_DROPPED_KEYS:
        kwargs.pop(key, None)
    # r1.1's generate compares each new token with one id (text_generator.py: target == eos_token_id):
    # the template's end-of-turn marker, the last of the stop ids
    model_config = {
        "type": config_cls,
        **kwargs,
        "eos_token_id": int(request.stop_ids[-1]),
        **_greedy(seq, request.max_new_tokens),
    }
    special_tokens = request.special_tokens
    tokenizer = {
        "type": tokenizer_cls,
        file_key: f"{request.tokenizer_dir}/{file_name}",
        **{k: special_tokens[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if special_tokens.get(k)},
        "add_bos_token": False,
        "add_eos_token": False,
    }
    return {
        **_predict_run(request.checkpoint, spec.model.name),
        "context": {"mode": 0, "device_target": "Ascend", "max_call_depth": 10000, "device_id": 0},
        "parallel_config": {"data_parallel": 1, "model_parallel": 1, "pipeline_stage": 1},
        "model": {"model_config": model_config, "arch": {"type": arch}},
        "processor": {"return_tensors": "ms", "tokenizer": tokenizer, "type": "LlamaProcessor"},
    }
