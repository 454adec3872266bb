"""chat: ask one checkpoint of a run a question, to spot-check it in seconds.

    python -m jobs.chat --config SPEC [--step N] --prompt "12 + 30 = ?"   one answer on stdout
    python -m jobs.chat --config SPEC [--step N]                           one answer per stdin line

The problem is put in the recipe's prompt (data.template, data.system_prompt: the text the model was
tuned and judged on), and the answer is greedy, up to --max-new-tokens (default eval.max_new_tokens),
ending at the template's stop token: what evaluate would have answered. The checkpoint is evaluate's
choice unless --step N names one (0 = the base model). Generation as evaluate does it (eval.backend):
tunebox's numpy decoder on CPU (the merged checkpoint, or the LoRA folded into the base in memory when
merge has not run), MindFormers' generate() on Ascend (the merged checkpoint).

Only answers go to stdout (logs go to stderr); an empty line, `exit`, `quit` or end of input stops.
Writes nothing.
"""

from __future__ import annotations

import logging
import sys

from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.data.prompts import spec_prompt
from tunebox.data.tokenizer import TextTokenizer
from tunebox.evaluation.decode import NumpyLlama
from tunebox.evaluation.runners import MindFormersRunner, NumpyRunner, pick_backend
from tunebox.io import InputError
from tunebox.model.budget import merged_weight_dtype
from tunebox.model.checkpoint import load_checkpoint_numpy
from tunebox.model.lora import merge_lora_into_base
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer
from tunebox.run_checkpoints import RunCheckpoint, base_checkpoint, pick_checkpoint

log = logging.getLogger("tunebox.chat")

STOP_WORDS = ("", "exit", "quit")


def numpy_model(spec: RunSpec, ck: RunCheckpoint):
    """NumpyLlama of the checkpoint, read without MindSpore (load_checkpoint_numpy)."""

    shape = get_model_shape(spec.model.name)
    wanted = shape.parameter_shapes()
    if ck.step == 0 or ck.merged_file is not None:
        path = base_checkpoint(spec) if ck.step == 0 else ck.merged_file
        params = {k: v for k, v in load_checkpoint_numpy(path).items() if k in wanted}
        return NumpyLlama(params, shape, source=str(path), _consume=True)
    base = {k: v for k, v in load_checkpoint_numpy(base_checkpoint(spec)).items() if k in wanted}
    merged = merge_lora_into_base(base, load_checkpoint_numpy(ck.lora_file), spec.lora.alpha, spec.lora.rank)
    return NumpyLlama(merged, shape, source=f"{ck.lora_file} folded into the base in memory", _consume=True)


def load_runner(spec: RunSpec, ck: RunCheckpoint, max_new_tokens: int):
    backend = pick_backend(spec.eval.backend, spec.train.device)
    if backend == "numpy":
        return NumpyRunner(numpy_model(spec, ck), batch_size=1, progress=False)
    if ck.step != 0 and ck.merged_file is None:
        raise InputError(f"the {backend} backend loads a merged checkpoint: run merge first")
    ckpt = base_checkpoint(spec) if ck.step == 0 else ck.merged_file
    return MindFormersRunner(
        get_model_shape(spec.model.name),
        ckpt,
        spec.data.seq_length + max_new_tokens,
        device=spec.train.device,
        dtype=merged_weight_dtype(spec.merge, spec.train),
        batch_size=spec.eval.batch_size,
        output_dir=spec.run_dir,
    )


def answer(runner, tok: TextTokenizer, spec: RunSpec, problem: str, max_new_tokens: int) -> str:
    ids = tok.encode(spec_prompt(tok, problem, spec.data))
    out = runner.generate([ids], [max_new_tokens], tok.stop_ids, tok.pad_id, desc="chat")[0]
    return tok.decode(out)


def chat(spec: RunSpec, step, prompt, max_new_tokens) -> None:
    max_new = max_new_tokens or spec.eval.max_new_tokens
    if max_new < 1:
        raise InputError(f"--max-new-tokens must be >= 1, not {max_new}")
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    ck = pick_checkpoint(spec.run_dir, step)
    runner = load_runner(spec, ck, max_new)
    log.info("step %d (%s), %s backend, up to %d new tokens", ck.step, ck.chosen_by, runner.backend, max_new)
    if prompt is not None:
        print(answer(runner, tok, spec, prompt, max_new), flush=True)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        print("One question per line; an empty line, exit or quit ends.", file=sys.stderr)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and not line:
            break
        problem = line.rstrip("\r\n")
        if problem.strip() in STOP_WORDS:
            break
        print(answer(runner, tok, spec, problem, max_new), flush=True)


def main(spec: RunSpec, args) -> None:
    chat(spec, args.step, args.prompt, args.max_new_tokens)


def _args(parser) -> None:
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="training step of the checkpoint (default: the one evaluate chose; 0: the base model)",
    )
    parser.add_argument("--prompt", default=None, help="one question: print its answer and exit (default: read stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="answer length cap (default eval.max_new_tokens)")


if __name__ == "__main__":
    raise SystemExit(run_job("chat", __doc__, main, _args))
