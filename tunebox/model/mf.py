"""MindSpore / MindFormers glue: device set-up, the Llama network, LoRA through MindFormers' pet
adapter (mindpet LoRADense), checkpoints loaded into a network (the .ckpt format itself, read and
written as numpy, is tunebox/model/checkpoint.py). Device is configuration: the same calls run on CPU
here and on Ascend there; only dtypes and fused kernels differ (models.llama_config_kwargs).

Imports of mindspore/mindformers stay inside functions: they take seconds, and jobs that do
not need them (report, bundle, scoring) should not pay for them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from tunebox.console import lib_console_level
from tunebox.model.checkpoint import LORA_A, LORA_B, bfloat16, convert_float_bits, numpy_dtype
from tunebox.model.mf_config import EXTENSIONS_FILE, apply_resume_settings
from tunebox.model.registry import ModelShape, llama_config_kwargs, mindformers_target_regex

log = logging.getLogger("tunebox.mf")


def setup_device(
    device: str = "CPU",
    mode: str = "graph",
    seed: Optional[int] = None,
    output_dir: Optional[Path] = None,
    log_root: Optional[Path] = None,
) -> None:
    """log_root: the folder whose log/ MindFormers writes its logs to (the train job passes its own
    folder, MindFormers' output_dir there, so the Trainer keeps the logger quieted here);
    default output_dir/mindformers."""
    # MindFormers writes ./output/log at import; keep it inside the run, not wherever we were started.
    if log_root is not None:
        os.environ["LOCAL_DEFAULT_PATH"] = str(log_root)
    elif output_dir is not None:
        os.environ.setdefault("LOCAL_DEFAULT_PATH", str(Path(output_dir) / "mindformers"))
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only on the console (set GLOG_v=2 for more)
    import mindspore as ms

    quiet_mindformers_console()
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_device(device)
    if seed is not None:
        ms.set_seed(seed)


def quiet_mindformers_console() -> None:
    """Third-party noise goes to the job's log files, not its console, so the console tells the run's story in
    tunebox's own lines. The level the consoles keep is tunebox.console.lib_console_level (default ERROR):
      - MindFormers' console handler; its file log (<run>/<job>/log/rank_N/info.log, INFO and up) keeps all;
      - the config MindFormers pprints to stdout before training (~70 lines): into that file log;
      - tensorboardX's "Summary name learning-rate vs samples is illegal" (one per logged step): that file log;
      - mindpet's "[SDK] Start to freeze model" lines: its console handlers (its own file log keeps them)."""
    from pprint import pformat

    from mindformers.tools.logger import get_logger
    from mindformers.trainer import base_trainer

    level = logging.getLevelName(lib_console_level())
    mf_logger = get_logger()
    files = [h for h in mf_logger.handlers if isinstance(h, logging.FileHandler)]
    for handler in mf_logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(level)
    tensorboardx = logging.getLogger("tensorboardX")
    tensorboardx.propagate = False  # not to the root logger's console handler (cli.setup_logging)
    for handler in files:
        if handler not in tensorboardx.handlers:
            tensorboardx.addHandler(handler)
    if not files:
        tensorboardx.addHandler(logging.NullHandler())
    # base_trainer calls pprint(config) by that module-level name; give it one that writes the file log
    base_trainer.pprint = lambda config, *args, **kwargs: mf_logger.info("MindFormers config:\n%s", pformat(config))
    try:
        from mindpet.log import log as mindpet_log
    except ImportError:
        return
    for mx_logger in mindpet_log.logger_list.values():
        mx_logger.stdout_level = level  # read when it makes its console handler, at its first record
    for handler in mindpet_log.stream_handler_list.values():
        handler.setLevel(level)


def build_llama(
    shape: ModelShape,
    *,
    seq_length: int = 0,
    batch_size: int = 1,
    dtype: str = "float32",
    checkpoint: Optional[Path] = None,
    strict: bool = True,
    config: Optional[dict] = None,
):
    """A MindFormers LlamaForCausalLM with the registry's shapes, optionally loaded from a checkpoint.
    config: the LlamaConfig kwargs of a predicting network (mf_config.predict_model_kwargs: incremental
    decoding), built as it is; without it, the training network of shape, seq_length, batch_size and
    dtype, which on CPU gets avoid_cpu_broadcast_tables (whose cells a predicting network does not have)."""
    import mindspore as ms
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM

    predicting = config is not None
    if not predicting:
        config = llama_config_kwargs(shape, seq_length=seq_length, batch_size=batch_size, dtype=dtype)
    net = LlamaForCausalLM(LlamaConfig(**config))
    if not predicting and ms.get_context("device_target") == "CPU":
        from tunebox.model.mf_extensions import avoid_cpu_broadcast_tables  # lazy: imports MindSpore + MindFormers

        avoid_cpu_broadcast_tables(net)
    if checkpoint is not None:
        load_weights(net, checkpoint, strict=strict)
    return net


def run_mindformers(yaml_path: Path, resume: bool) -> None:
    """What MindFormers' run_mindformer.py does for run_mode finetune: MindFormerConfig(yaml),
    build_context, Trainer(args=config).train(), with tunebox's extensions found through REGISTER_PATH."""
    os.environ["REGISTER_PATH"] = str(EXTENSIONS_FILE.parent)
    # auto_register copies the module into a cache folder, ./modules unless OM_MODULES_CACHE was set
    # before MindFormers was imported (it reads it once, into HubConstants): keep it in the run
    modules = str(Path(yaml_path).parent / "modules")
    os.environ["OM_MODULES_CACHE"] = modules
    from mindformers.tools.hub.hub import HubConstants

    HubConstants.OM_MODULES_CACHE = modules
    os.environ.setdefault("GLOG_v", "3")
    from mindformers import MindFormerConfig
    from mindformers.core.context import build_context
    from mindformers.trainer import Trainer

    quiet_mindformers_console()
    cfg = MindFormerConfig(str(yaml_path))
    if cfg.context.device_target == "CPU" and cfg.use_parallel:
        from tunebox.model.mf_extensions import cpu_barrier  # lazy: imports MindSpore + MindFormers

        cpu_barrier()
    if resume:
        apply_resume_settings(cfg)
    build_context(cfg)
    Trainer(args=cfg).train()


def load_weights(net, checkpoint: Path, strict: bool = True, allow_missing_lora: bool = True) -> None:
    """Load a checkpoint into `net` strictly: names and dtypes must be the network's (MindSpore converts
    dtypes only with strict_load off). One conversion is tunebox's own, and explicit: a float32 tensor
    (the converted base checkpoint) where the network declares bf16/fp16 is rounded to it, to nearest
    even as merge rounds (checkpoint.convert_float_bits). Any other dtype difference is refused by name:
    merge writes what the predicting network declares (mf_config.merged_checkpoint_types)."""
    import mindspore as ms

    declared = {p.name: p.dtype for p in net.get_parameters()}
    params = ms.load_checkpoint(str(checkpoint))
    wrong = []
    for name, param in params.items():
        want = declared.get(name)
        if want is None or param.dtype == want:
            continue
        if param.dtype == ms.float32 and want in (ms.bfloat16, ms.float16):
            to = "BFloat16" if want == ms.bfloat16 else "Float16"
            bits = convert_float_bits(param.asnumpy(), "Float32", to).reshape(param.shape)
            params[name] = ms.Parameter(
                ms.Tensor(bits.view(bfloat16() if to == "BFloat16" else numpy_dtype(to))),
                name=name,
                requires_grad=param.requires_grad,
            )
        else:
            wrong.append(f"{name} is {param.dtype}, the network declares {want}")
    if wrong:
        raise ValueError(
            f"{checkpoint}: {len(wrong)} tensors in another dtype than the network's: {wrong[:3]}"
            f"{' ...' if len(wrong) > 3 else ''}; merge it again (jobs.merge writes each tensor in "
            f"the dtype the predicting network declares)"
        )
    not_loaded, unexpected = ms.load_param_into_net(net, params, strict_load=strict)
    # the paged-attention KV caches (use_past) are state, not weights: no checkpoint holds them
    not_loaded = [n for n in not_loaded if not n.endswith(("key_cache", "value_cache"))]
    missing = [n for n in not_loaded if not (allow_missing_lora and (LORA_A in n or LORA_B in n))]
    if missing:
        raise ValueError(
            f"{checkpoint}: parameters missing from the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    if strict and unexpected:
        raise ValueError(f"{checkpoint}: unexpected parameters: {unexpected[:5]}")


def load_lora(net, checkpoint: Path) -> None:
    """Load LoRA matrices (a train checkpoint) into a LoRA-wrapped network; every one must be there."""
    import mindspore as ms

    params = ms.load_checkpoint(str(checkpoint))
    wanted = {p.name for p in net.get_parameters() if LORA_A in p.name or LORA_B in p.name}
    if wanted - set(params) or set(params) - wanted:
        raise ValueError(
            f"{checkpoint}: LoRA matrices do not match the network "
            f"(missing {sorted(wanted - set(params))[:3]}, extra {sorted(set(params) - wanted)[:3]})"
        )
    ms.load_param_into_net(net, params)


def add_lora(net, rank: int, alpha: int, dropout: float, target_modules: str, dtype: str = "float32"):
    """Wrap a Llama network with MindFormers' LoRA adapter and freeze everything but the LoRA matrices."""
    from mindformers.pet import LoraConfig, LoraModel

    config = LoraConfig(
        lora_rank=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=mindformers_target_regex(target_modules),
        param_init_type=dtype,
        compute_dtype=dtype,
    )
    model = LoraModel(config, net)
    for p in model.get_parameters():
        p.requires_grad = LORA_A in p.name or LORA_B in p.name
    return model


def lora_state(net) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy() for p in net.get_parameters() if LORA_A in p.name or LORA_B in p.name}


def count_trainable(net) -> int:
    return int(sum(np.prod(p.shape) for p in net.trainable_params()))


def count_total(net) -> int:
    """Parameters of the base model (LoRA matrices not counted), as the contest's ratio counts them."""
    return int(
        sum(
            np.prod(p.shape)
            for p in net.get_parameters()
            if LORA_A not in p.name and LORA_B not in p.name and "tunebox_" not in p.name
        )
    )
