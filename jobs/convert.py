"""convert: a model folder in the cache (model.ckpt, tokenizer, model.json): build tiny or SmolLM2-135M, or
convert a Hugging Face safetensors checkpoint (llama3-8b, internlm-7b). `invoke convert` runs it.

    python -m jobs.convert --model NAME [--hf-dir DIR [--out DIR]]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from tunebox.cli import setup_logging
from tunebox.io import InputError
from tunebox.model.registry import get_model_shape, model_dir
from tunebox.model.weights import convert_hf_checkpoint, ensure_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.convert",
        description="Make a model directory (model.ckpt, tokenizer, model.json) in the cache. Without "
        "--hf-dir: build tiny or smollm2-135m (downloaded once). With --hf-dir: convert a "
        "Hugging Face safetensors checkpoint for the model (llama3-8b, internlm-7b).",
    )
    parser.add_argument("--model", required=True, help="registry name (tunebox/model/registry.py)")
    parser.add_argument("--hf-dir", type=Path, help="folder with config.json and model*.safetensors")
    parser.add_argument("--out", type=Path, help="where to write (default: the model's cache dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """python -m jobs.convert --model NAME [--hf-dir DIR [--out DIR]]"""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        shape = get_model_shape(args.model)
        if args.hf_dir:
            path = convert_hf_checkpoint(
                args.hf_dir, args.out or model_dir(shape.name), shape, progress=not args.no_progress
            )
        elif args.out:
            raise InputError("--out goes with --hf-dir; registry models always live in the cache")
        else:
            path = ensure_model(shape.name, progress=not args.no_progress)
    except (InputError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # network, disk: not the user's input
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
