"""Generation backends for evaluation: tunebox's numpy decoder (CPU) and MindFormers' generate() (Ascend),
one interface: generate(prompts, limits, stop_ids, pad_id) and choice_logprobs(prompts, letter_ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from tunebox.evaluation.decode import PREFILL_TOKEN_BUDGET, NumpyLlama, greedy_generate, length_groups
from tunebox.model import mf
from tunebox.model.mf_config import predict_model_kwargs
from tunebox.model.registry import ModelShape


def choice_letter_logprobs(
    model, prompts: Sequence[Sequence[int]], letter_ids: Sequence[int], batch_size: int = 16
) -> np.ndarray:
    """log p(letter token | prompt) at the position after each prompt: [N, len(letter_ids)].
    One forward pass per batch (left padding, similar lengths together), no generation."""
    out = np.empty((len(prompts), len(letter_ids)), np.float64)
    letter_ids = np.asarray(letter_ids)
    for chunk in length_groups([len(p) for p in prompts], batch_size, PREFILL_TOKEN_BUDGET):
        lengths = np.array([len(prompts[i]) for i in chunk])
        width = int(lengths.max())
        pads = width - lengths
        tokens = np.zeros((len(chunk), width), np.int64)
        for row, i in enumerate(chunk):
            tokens[row, pads[row] :] = prompts[i]
        positions = np.maximum(np.arange(width)[None, :] - pads[:, None], 0)
        key_valid = np.arange(width)[None, :] >= pads[:, None]
        logits = model.forward(tokens, positions, key_valid, last_only=True).astype(np.float64)
        top = logits.max(axis=-1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
        out[chunk] = logits[:, letter_ids] - log_norm[:, None]
    return out


class NumpyRunner:
    """tunebox's numpy decoder: batched greedy generation with a KV cache, and plain forward passes."""

    backend = "numpy"

    def __init__(self, model, batch_size: int, progress: bool = True):
        self.model = model
        self.batch_size = batch_size
        self.progress = progress

    @classmethod
    def from_checkpoint(cls, shape: ModelShape, ckpt: Path, batch_size: int) -> "NumpyRunner":
        return cls(NumpyLlama.from_checkpoint(ckpt, shape), batch_size)

    def generate(
        self,
        prompts: list[list[int]],
        limits: Sequence[int],
        stop_ids: list[int],
        pad_id: int,
        desc: str = "generate",
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        return greedy_generate(
            self.model,
            prompts,
            list(limits),
            stop_ids,
            pad_id,
            batch_size=self.batch_size,
            min_new_tokens=min_new_tokens,
            desc=desc,
            progress=self.progress,
        )

    def choice_logprobs(self, prompts: list[list[int]], letter_ids: Sequence[int]) -> Optional[np.ndarray]:
        return choice_letter_logprobs(self.model, prompts, letter_ids, self.batch_size)


class MindFormersRunner:
    """MindFormers' generate() with its incremental (KV cache) inference: the Ascend path."""

    backend = "mindformers"

    def __init__(
        self,
        shape: ModelShape,
        ckpt: Path,
        seq_length: int,
        *,
        device: str,
        dtype: str,
        batch_size: int,
        output_dir: Path,
    ):
        """dtype: the merged checkpoints' (budget.merged_weight_dtype); output_dir: the run's folder, where
        MindFormers' logs go."""
        mf.setup_device(device, "graph", output_dir=output_dir)
        # the network merge wrote its checkpoints for (mf_config.merged_checkpoint_types): strict loads
        kwargs = predict_model_kwargs(shape, dtype, seq_length=seq_length, batch_size=batch_size)
        self.net = mf.build_llama(shape, config=kwargs, checkpoint=ckpt)
        self.net.set_train(False)
        self.batch_size = batch_size

    def generate(self, prompts, limits, stop_ids, pad_id, desc: str = "generate", min_new_tokens: int = 0):
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            chunk, chunk_limits = prompts[lo : lo + self.batch_size], list(limits[lo : lo + self.batch_size])
            # greedy: a shorter limit gives a prefix of the longer one, so cut each row afterwards
            res = self.net.generate(
                chunk,
                max_new_tokens=max(chunk_limits),
                do_sample=False,
                eos_token_id=stop_ids,
                pad_token_id=pad_id,
                min_new_tokens=min_new_tokens or None,
            )
            for p, r, limit in zip(chunk, res, chunk_limits):
                new = list(np.asarray(r)[len(p) :])
                cut = next((i for i, t in enumerate(new) if t in stop_ids), len(new))
                out.append([int(t) for t in new[: min(cut, limit)]])
        return out

    def choice_logprobs(self, prompts, letter_ids) -> Optional[np.ndarray]:
        return None  # only the generated-letter method on this backend


def pick_backend(backend: str, device: str) -> str:
    """eval.backend, or for `auto` the one that runs on train.device."""
    if backend != "auto":
        return backend
    return "numpy" if device == "CPU" else "mindformers"


def runner_loader(
    backend: str, shape: ModelShape, seq_length: int, *, device: str, dtype: str, batch_size: int, output_dir: Path
) -> Callable[[Path], Callable[[], object]]:
    """For a checkpoint, what builds its runner on `backend` (pick_backend's), called only when a model has
    something to compute (loop.evaluate_model). seq_length: MindFormers' static sequence (the longest prompt
    plus the most new tokens); the rest as MindFormersRunner takes them."""

    def loader(ckpt: Path) -> Callable[[], object]:
        if backend == "numpy":
            return lambda: NumpyRunner.from_checkpoint(shape, ckpt, batch_size)
        return lambda: MindFormersRunner(
            shape, ckpt, seq_length, device=device, dtype=dtype, batch_size=batch_size, output_dir=output_dir
        )

    return loader
