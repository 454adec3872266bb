"""export: one checkpoint of a run in the format vLLM-Ascend, MindIE and transformers read.

  --format hf    the merged checkpoint (merge/step-N/model.ckpt) as a Hugging Face Llama folder:
                 config.json, generation_config.json, tokenizer.json, tokenizer_config.json (its chat
                 template renders the recipe's prompt), model.safetensors (shards + index when large)
  --format peft  the LoRA checkpoint (train's checkpoint_trainable file) as a PEFT adapter:
                 adapter_config.json + adapter_model.safetensors, with the tokenizer files. Its
                 base_model_name_or_path is the hub id when the base came from the hub unchanged
                 (registry source hf:<repo>), else the base exported once as an HF folder (export/base-hf)

The checkpoint is evaluate's choice (evaluate/report.json) unless --step N names one (0 = the base model,
hf only). Outputs, under runs/<run_id>/export/: hf-step-{N}/, peft-step-{N}/, base-hf/, manifest.json.
Each folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Optional

from tunebox.cli import run_job
from tunebox.config import RunSpec
from tunebox.fetch import split_hub_source
from tunebox.io import InputError, atomic_dir
from tunebox.manifest import write_job_manifest
from tunebox.model.hf_export import recipe_chat_template, write_hf_model, write_peft_adapter, write_tokenizer
from tunebox.model.registry import get_model_shape
from tunebox.model.weights import load_tokenizer
from tunebox.run_checkpoints import base_checkpoint, pick_checkpoint

log = logging.getLogger("tunebox.export")

FORMATS = ("hf", "peft")


@contextlib.contextmanager
def export_dir(final: Path):
    """io.atomic_dir, readable by everyone as a plain mkdir would leave it (its mkdtemp makes 0700): the
    server that loads the folder (a vLLM or MindIE container) often runs as another user."""
    with atomic_dir(final) as tmp:
        os.chmod(tmp, 0o755)
        yield tmp


def export(spec: RunSpec, fmt: str, step: Optional[int] = None, out: Optional[Path] = None) -> Path:
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}")
    shape = get_model_shape(spec.model.name)
    tok = load_tokenizer(spec.model.name, spec.resolve(spec.model.tokenizer))
    template = recipe_chat_template(tok, spec.data)
    ck = pick_checkpoint(spec.run_dir, step, need_merged=(fmt == "hf" and step != 0))
    log.info("exporting step %d (%s) as %s", ck.step, ck.chosen_by, fmt)
    job_dir = spec.job_dir("export")
    target = Path(out) if out else job_dir / f"{fmt}-step-{ck.step:06d}"
    inputs, extra = {}, {"format": fmt, "step": ck.step, "chosen_by": ck.chosen_by, "folder": str(target)}
    if fmt == "hf":
        ckpt = base_checkpoint(spec) if ck.step == 0 else ck.merged_file
        if ck.merge_scale not in (None, 1.0):
            log.warning(
                "merge folded the LoRA in at scale %g, not as trained: the export is that model", ck.merge_scale
            )
        with export_dir(target) as tmp:
            extra.update(write_hf_model(tmp, ckpt, shape, tok, template))
        inputs["checkpoint"] = ckpt
        extra["merge_scale"] = ck.merge_scale
    else:
        if ck.step == 0:
            raise InputError("--step 0 is the base model, which has no adapter: export it with --format hf")
        hub = split_hub_source(shape.source) if spec.model.checkpoint is None else None
        if hub is not None and hub.hub == "hf":
            base_ref, revision = hub.repo, hub.revision
        else:  # tunebox built or converted these weights: the adapter needs exactly them
            base = base_checkpoint(spec)
            base_dir = job_dir / "base-hf"
            if not (base_dir / "config.json").is_file():
                with export_dir(base_dir) as tmp:
                    write_hf_model(tmp, base, shape, tok, template)
            base_ref, revision = str(base_dir.resolve()), None
            inputs["base_checkpoint"] = base
        with export_dir(target) as tmp:
            extra.update(
                write_peft_adapter(
                    tmp,
                    ck.lora_file,
                    rank=spec.lora.rank,
                    alpha=spec.lora.alpha,
                    dropout=spec.lora.dropout,
                    base_model=base_ref,
                    revision=revision,
                )
            )
            write_tokenizer(tmp, tok, template, shape)
        inputs["lora_checkpoint"] = ck.lora_file
        extra["base_model"] = base_ref
    write_job_manifest(
        job_dir,
        "export",
        spec,
        inputs=inputs,
        outputs={p.name: p for p in sorted(target.iterdir()) if p.is_file()},
        extra=extra,
    )
    print(target)
    return target


def main(spec: RunSpec, args) -> None:
    export(spec, args.format, args.step, Path(args.out) if args.out else None)


def _args(parser) -> None:
    parser.add_argument(
        "--format",
        default="hf",
        choices=FORMATS,
        help="hf: merged HF safetensors folder; peft: PEFT LoRA adapter (default hf)",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="training step of the checkpoint (default: the one evaluate chose; 0: the base model)",
    )
    parser.add_argument("--out", default="", help="folder to write (default runs/<run_id>/export/<format>-step-<N>)")


if __name__ == "__main__":
    raise SystemExit(run_job("export", __doc__, main, _args))
