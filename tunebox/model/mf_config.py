"""The run spec in MindFormers' own words: the finetune YAML that MindFormers' Trainer runs (our
train job, or stock MindFormers on a judge's machine), and the predict YAML for a merged checkpoint.

Key names follow MindFormers' own Llama configs (research/llama3/finetune_llama3_8b_*.yaml and the
contest's run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml): seed, output_dir, load_checkpoint,
resume_training, run_mode, trainer, runner_config, optimizer, lr_schedule, train_dataset(+_task),
use_parallel, parallel, parallel_config, recompute_config, callbacks, context, model
(model_config with pet_config, arch), runner_wrapper. What is not MindFormers' own is named for
tunebox and registered through MindFormers' `auto_register` (tunebox/model/mf_extensions.py):
  - runner_wrapper TuneboxTrainOneStepCell on CPU only (MindFormers' MFTrainOneStepCell elsewhere);
  - model arch TuneboxLlamaForCausalLM when the answer-only LM head or packing is on (keys
    tunebox_answer_capacity / tunebox_packing in model_config);
  - callbacks TuneboxLoraCheckpoints (the planned LoRA checkpoints) and TuneboxLossLog (loss.jsonl).
The TensorBoard event files (loss, learning rate) are MindFormers' own: its `tensorboard` key.
To run a rendered file with stock MindFormers: REGISTER_PATH=<folder holding mf_extensions.py>.

The functions here are pure: the spec and facts measured by the caller in, a dict out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from tunebox.model.registry import get_model_spec, llama_config_kwargs, mindformers_target_regex

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


def topology(spec) -> Topology:
    """The parallel layout of a spec (validated by config.load_spec: the product equals train.workers)."""
    p = spec.train.parallel
    dp = p.data_parallel or spec.train.workers // (p.model_parallel * p.pipeline_stage)
    return Topology(spec.train.workers, dp, p.model_parallel, p.pipeline_stage, p.micro_batch_num)


def uses_extensions(spec) -> bool:
    """Whether the model runs tunebox's registered LlamaForCausalLM: only with pure data parallel
    (its in-graph gather has no sharding strategy for model/pipeline parallel)."""
    topo = topology(spec)
    return (spec.train.lm_head_on_answers or spec.train.packing) and topo.model_parallel == 1 \
        and topo.pipeline_stage == 1


def render_train_config(spec, *, data_files: list[Path], out_dir: Path, plan: dict,
                        base_checkpoint: Optional[Path], answer_capacity: int = 0,
                        seq_length: Optional[int] = None) -> dict:
    """MindFormers' finetune config for this run.

    data_files: prep's MindRecord (or train's packed one); out_dir: the train job's folder (MindFormers'
    output_dir: checkpoint/, checkpoint_trainable/, log/); plan: train.plan_steps (total_steps,
    batches_per_epoch, warmup_steps, checkpoint_steps); answer_capacity: the most loss-counted positions in
    any row (0: LM head on every position)."""
    t, lora = spec.train, spec.lora
    total_steps, steps_per_epoch = plan["total_steps"], plan["batches_per_epoch"]
    mspec = get_model_spec(spec.model.name)
    topo = topology(spec)
    seq = seq_length or spec.data.seq_length
    cpu = t.device == "CPU"
    per_worker_batch = t.batch_size // topo.data_parallel
    epochs = -(-total_steps // steps_per_epoch)
    extensions = uses_extensions(spec)

    model_config = {"type": "LlamaConfig",
                    **llama_config_kwargs(mspec, seq_length=seq, batch_size=per_worker_batch, dtype=t.dtype),
                    "checkpoint_name_or_path": "",
                    "pet_config": {"pet_type": "lora", "lora_rank": lora.rank, "lora_alpha": lora.alpha,
                                   "lora_dropout": lora.dropout,
                                   "target_modules": mindformers_target_regex(lora.target_modules)}}
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
    dataset = {"data_loader": loader, "input_columns": columns, "num_parallel_workers": 1,
               "python_multiprocessing": False, "drop_remainder": True, "batch_size": per_worker_batch,
               "repeat": 1, "numa_enable": False, "prefetch_size": 1}

    wrapper = _registered("TuneboxTrainOneStepCell") if cpu else {"type": "MFTrainOneStepCell"}
    wrapper.update({"scale_sense": 1.0, "use_clip_grad": t.max_grad_norm > 0,
                    "max_grad_norm": float(t.max_grad_norm or 1.0)})
    parallel_mode = 0 if topo.model_parallel == 1 and topo.pipeline_stage == 1 else 1
    parallel = {"parallel_mode": parallel_mode, "gradients_mean": parallel_mode == 0,
                "enable_parallel_optimizer": False, "full_batch": parallel_mode != 0}
    if parallel_mode != 0:
        parallel.update({"search_mode": "sharding_propagation",
                         "strategy_ckpt_save_file": str(out_dir / "strategy" / "ckpt_strategy.ckpt")})
    context = {"mode": 0 if t.mode == "graph" else 1, "device_target": t.device, "max_call_depth": 10000,
               "save_graphs": False}
    if not cpu:
        context.update({"device_id": 0, "jit_config": {"jit_level": "O1"}, "memory_optimize_level": "O0"})

    return {
        "seed": t.seed,
        "output_dir": str(out_dir),
        "load_checkpoint": str(base_checkpoint) if base_checkpoint else "",
        "src_strategy_path_or_dir": "",
        "auto_trans_ckpt": topo.workers > 1 and parallel_mode != 0,
        "only_save_strategy": False,
        "resume_training": False,
        "run_mode": "finetune",
        "trainer": {"type": "CausalLanguageModelingTrainer", "model_name": spec.model.name},
        "runner_config": {"epochs": epochs, "batch_size": per_worker_batch, "sink_mode": False, "sink_size": 1,
                          "gradient_accumulation_steps": t.grad_accum},
        # MindSpore's AdamWeightDecay (no bias correction): the update rule of the contest's
        # FP32StateAdamWeightDecay, which 1.9 dropped, and of tunebox's own loop before MindFormers'
        # Trainer. Recipes' learning rates (the contest's, the winners', the local twin's) were set
        # for it; MindFormers 1.9's AdamW corrects the bias, which shrinks the first ~200 updates
        # 2-6x at the same train.lr (docs/ACCURACY.md).
        "optimizer": {"type": "AdamWeightDecay", "beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8,
                      "weight_decay": t.weight_decay},
        "lr_schedule": {"type": "CosineWithWarmUpLR", "learning_rate": t.lr, "warmup_steps": plan["warmup_steps"],
                        "lr_end": t.lr * t.min_lr_ratio, "total_steps": total_steps},
        "train_dataset": dataset,
        "train_dataset_task": {"type": "CausalLanguageModelDataset", "dataset_config": dataset},
        "do_eval": False,
        "use_parallel": topo.workers > 1,
        "parallel": parallel,
        "parallel_config": {"data_parallel": topo.data_parallel, "model_parallel": topo.model_parallel,
                            "pipeline_stage": topo.pipeline_stage, "micro_batch_num": topo.micro_batch_num,
                            "vocab_emb_dp": True, "gradient_aggregation_group": 4},
        "micro_batch_interleave_num": 1,
        "recompute_config": {"recompute": t.parallel.recompute, "select_recompute": t.parallel.select_recompute,
                             "parallel_optimizer_comm_recompute": False, "mp_comm_recompute": True,
                             "recompute_slice_activation": True},
        "callbacks": [
            {"type": "MFLossMonitor"},
            {**_registered("TuneboxLoraCheckpoints"), "directory": str(out_dir), "prefix": CHECKPOINT_PREFIX,
             "planned_steps": list(plan["checkpoint_steps"]), "steps_per_epoch": steps_per_epoch},
            {**_registered("TuneboxLossLog"), "path": str(out_dir / "loss.jsonl"), "total_steps": total_steps,
             "steps_per_epoch": steps_per_epoch},
            # full checkpoints (weights + optimizer state) for resume_training, rotated. Last: a full
            # checkpoint of step s means that step's LoRA file and loss line are written (train.training_done)
            {"type": "CheckpointMonitor", "prefix": CHECKPOINT_PREFIX, "directory": str(out_dir),
             "save_checkpoint_steps": t.save_state_every, "keep_checkpoint_max": 2,
             "integrated_save": parallel_mode == 0, "async_save": False},
        ],
        # MindFormers' own TensorBoard writer (tensorboardX): MFLossMonitor writes loss, learning-rate and
        # grad-norm per step into <tensorboard_dir>/rank_<r>/events.out.tfevents.*, beside loss.jsonl.
        # Keys as in https://www.mindspore.cn/mindformers/docs/en/r1.5.0/function/monitor.html
        "tensorboard": {"tensorboard_dir": str(out_dir / "tensorboard"), "tensorboard_queue_size": 10},
        "context": context,
        "model": {"model_config": model_config, "arch": arch},
        "runner_wrapper": wrapper,
    }


def render_predict_config(spec, *, checkpoint: str, tokenizer_dir: str, max_new_tokens: int,
                          seq_length: Optional[int] = None) -> dict:
    """MindFormers' predict config for a merged (plain LlamaForCausalLM) checkpoint, with the
    tokenizer files stock MindFormers loads for this model: incremental decoding (use_past), greedy,
    the spec's device and dtype."""
    mspec = get_model_spec(spec.model.name)
    seq = seq_length or max(spec.data.seq_length, 512)
    t = spec.train
    model_config = {"type": "LlamaConfig",
                    **llama_config_kwargs(mspec, seq_length=seq, batch_size=1, dtype=t.dtype, use_past=True),
                    "checkpoint_name_or_path": "", "do_sample": False, "top_k": 1, "top_p": 1.0,
                    "max_decode_length": seq, "max_new_tokens": max_new_tokens,
                    "repetition_penalty": 1.0}
    return {
        "seed": 0, "output_dir": "./output", "load_checkpoint": checkpoint, "auto_trans_ckpt": False,
        "run_mode": "predict", "use_parallel": False,
        "trainer": {"type": "CausalLanguageModelingTrainer", "model_name": spec.model.name},
        "context": {"mode": 0, "device_target": t.device, "max_call_depth": 10000},
        "parallel_config": {"data_parallel": 1, "model_parallel": 1, "pipeline_stage": 1},
        "model": {"model_config": model_config, "arch": {"type": "LlamaForCausalLM"}},
        "processor": {"return_tensors": "ms",
                      "tokenizer": {"type": "PreTrainedTokenizerFast", "tokenizer_file": f"{tokenizer_dir}/tokenizer.json",
                                    "unk_token": None, "pad_token": None}},
    }


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=None)
