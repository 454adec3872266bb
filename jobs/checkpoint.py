"""checkpoint: MindSpore .ckpt files one tensor at a time: list a file's tensors, or merge one LoRA checkpoint
into a base checkpoint with memory that does not grow with the model (tunebox/model/checkpoint.py).

    python -m jobs.checkpoint list FILE.ckpt [--verify-crc]
    python -m jobs.checkpoint merge BASE.ckpt LORA.ckpt OUT.ckpt --alpha A --rank R
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from tunebox.cli import setup_logging
from tunebox.io import InputError
from tunebox.model.checkpoint import CheckpointReader, merge_streaming

log = logging.getLogger("tunebox.checkpoint")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.checkpoint",
        description="MindSpore checkpoints one tensor at a time: list a file's tensors, or merge a LoRA "
        "checkpoint into a base checkpoint with memory that does not grow with the model.",
        epilog="Exit codes: 0 ok, 2 bad input (file and byte offset named), 1 failure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="name, dtype, shape, records and offset of every tensor")
    ls.add_argument("ckpt", type=Path)
    ls.add_argument("--verify-crc", action="store_true", help="check the crc32 footer (crc_check=True files)")
    mg = sub.add_parser("merge", help="BASE + LORA -> OUT, W + scale * alpha/r * B A; prints stats as JSON")
    mg.add_argument("base", type=Path)
    mg.add_argument("lora", type=Path)
    mg.add_argument("out", type=Path)
    mg.add_argument("--alpha", type=float, required=True)
    mg.add_argument("--rank", type=int, required=True)
    mg.add_argument("--scale", type=float, default=1.0)
    mg.add_argument("--sha256", action="store_true", help="hash the output while writing it")
    mg.add_argument(
        "--keep-page-cache",
        action="store_true",
        help="do not drop the files' pages from the page cache as they are done",
    )
    mg.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.command == "list":
            with CheckpointReader(args.ckpt, verify_crc=args.verify_crc) as reader:
                for e in reader.entries():
                    print(f"{e.name}\t{e.tensor_type}\t{list(e.shape)}\t{e.records} record(s)\t@{e.start}")
        else:
            stats = merge_streaming(
                args.base,
                args.lora,
                args.out,
                args.alpha,
                args.rank,
                args.scale,
                progress=not args.no_progress,
                sha256=args.sha256,
                drop_cache=not args.keep_page_cache,
            )
            print(json.dumps(stats.to_dict()))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `list ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        log.exception("failed")
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
