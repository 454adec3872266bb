"""A bundled mindformers/predict.yaml run the way a judge with MindFormers runs it: MindFormers' own
MindFormerConfig, `build_tokenizer` and `build_network` on the file as written, the merged checkpoint
loaded by the loader MindFormers' Trainer uses for a whole checkpoint (`trainer.utils.load_ckpt`),
then checked strictly (MindFormers' loader only logs what it did not load), and a greedy answer.

The answer is the network's forward pass and an argmax at the last prompt position, token by token
(no KV cache): MindFormers 1.9's generate() does not run on CPU ("The kernel ArgMaxExt unregistered",
with or without use_past). It stops at the ids MindFormers' generate() would stop at (the network's
generation_config.eos_token_id, from the YAML's model_config.eos_token_id).

Paths in the YAML are relative to the mindformers/ folder (its README runs MindFormers from there);
they are resolved against that folder here, so nothing is written into the submission.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

PATH_KEYS = ("tokenizer_file", "vocab_file")


def mindformers_importable() -> bool:
    """Whether MindFormers can be imported here (verify runs the check only then)."""
    import importlib.util

    return importlib.util.find_spec("mindformers") is not None


def _import_mindformers():
    os.environ.setdefault("LOCAL_DEFAULT_PATH", str(Path(os.environ.get("TMPDIR", "/tmp")) / "tunebox-verify"))
    os.environ.setdefault("GLOG_v", "3")
    import mindformers  # noqa: F401  (registers MindFormers' classes)


def load_strictly(config, network, checkpoint: Path) -> None:
    """MindFormers' own loader, then the strict part it leaves out: the network's parameters and the
    file's must be the same names, shapes and dtypes, and every value must have arrived."""
    import mindspore as ms
    from mindformers import MindFormerConfig
    from mindformers.trainer.utils import load_ckpt

    config.checkpoint = MindFormerConfig(load_path=str(checkpoint))
    config.load_ckpt_format = "ckpt"
    load_ckpt(config, network)
    stored = ms.load_checkpoint(str(checkpoint))
    have = {p.name: p for p in network.get_parameters()}
    missing = sorted(set(have) - set(stored))
    extra = sorted(set(stored) - set(have))
    if missing or extra:
        raise ValueError(
            f"{checkpoint} does not fit the network predict.yaml builds: missing from the file "
            f"{missing[:5]}, not in the network {extra[:5]}"
        )
    wrong = []
    for name, param in have.items():
        value = stored[name]
        if tuple(param.shape) != tuple(value.shape) or param.dtype != value.dtype:
            wrong.append(f"{name}: network {param.dtype} {tuple(param.shape)}, file {value.dtype} {tuple(value.shape)}")
        elif not np.array_equal(param.asnumpy(), value.asnumpy()):
            wrong.append(f"{name}: not loaded")
    if wrong:
        raise ValueError(
            f"{checkpoint}: {len(wrong)} parameter(s) differ from the network predict.yaml builds: "
            + "; ".join(wrong[:5])
        )


def greedy_answer(mf_dir: Path, prompt: str, max_new_tokens: int, checkpoint: Optional[str] = None) -> dict:
    """Answer `prompt` (text in the training template) with MindFormers from mf_dir/predict.yaml.
    checkpoint: another checkpoint than the YAML's load_checkpoint (relative to mf_dir, or absolute).
    Returns {prompt_ids, new_ids, text, checkpoint}."""
    _import_mindformers()
    import mindspore as ms
    from mindformers import MindFormerConfig
    from mindformers.models.build_model import build_network
    from mindformers.models.build_tokenizer import build_tokenizer

    mf_dir = Path(mf_dir)
    config = MindFormerConfig(str(mf_dir / "predict.yaml"))
    tok_cfg = config.processor.tokenizer
    for key in PATH_KEYS:
        if tok_cfg.get(key):
            tok_cfg[key] = str((mf_dir / tok_cfg[key]).resolve())
    tokenizer = build_tokenizer(tok_cfg)

    ms.set_context(mode=config.context.mode)
    ms.set_device(config.context.device_target)
    network = build_network(config.model)
    ckpt = Path(checkpoint or config.load_checkpoint)
    ckpt = ckpt if ckpt.is_absolute() else (mf_dir / ckpt).resolve()
    load_strictly(config, network, ckpt)
    network.set_train(False)

    prompt_ids = [int(i) for i in tokenizer(prompt)["input_ids"]]
    seq = int(config.model.model_config.seq_length)
    pad = int(config.model.model_config.pad_token_id or 0)
    stop = network.generation_config.eos_token_id
    stop = {int(s) for s in (stop if isinstance(stop, (list, tuple)) else [stop]) if s is not None}
    ids = list(prompt_ids)
    new = []
    while len(new) < max_new_tokens and len(ids) < seq:
        row = np.full((1, seq), pad, np.int32)
        row[0, : len(ids)] = ids
        logits = network(ms.Tensor(row))
        logits = (logits[0] if isinstance(logits, tuple) else logits).asnumpy()
        logits = logits.reshape(-1, seq, logits.shape[-1]) if logits.ndim == 2 else logits
        token = int(np.argmax(logits[0, len(ids) - 1]))
        if token in stop:
            break
        new.append(token)
        ids.append(token)
    return {
        "prompt_ids": prompt_ids,
        "new_ids": new,
        "checkpoint": str(ckpt),
        "text": tokenizer.decode(new, skip_special_tokens=True),
    }
