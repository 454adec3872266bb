"""profile: what is in a math JSONL file (families, lengths, duplicates, wrong labels), analysed by
tunebox/data/profile.py.

    python -m jobs.profile FILE [--tokenizer DIR] [--out DIR]

Writes OUT/profile.json, OUT/profile.md, OUT/family_mix.png and OUT/lengths.png.
Exit codes: 0 ok (findings are reported, not failures), 2 bad input (no such file), 1 failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from tunebox.cli import guarded, setup_logging, tool_parser
from tunebox.data.profile import DEFAULT_TOKENIZER_MODEL, profile, write_report
from tunebox.data.tokenizer import TextTokenizer
from tunebox.io import InputError
from tunebox.model.registry import model_dir

log = logging.getLogger("tunebox.profile")


def tokenizer_from_arg(arg: Optional[str]) -> tuple[Optional[TextTokenizer], str]:
    """--tokenizer -> (TextTokenizer or None, the length unit): a model dir, a tokenizer.json, 'none', or None
    for the default model's tokenizer when it has been fetched (never built here: characters otherwise)."""
    if arg and arg.lower() == "none":
        return None, "characters (--tokenizer none)"
    if arg:
        path = Path(arg)
        if path.is_file():
            return TextTokenizer.load(path.parent, path), f"tokens ({path})"
        if not (path / "tokenizer.json").exists():
            raise InputError("no tokenizer.json here; give a model directory or a tokenizer.json file", path)
        return TextTokenizer.load(path), f"tokens ({path / 'tokenizer.json'})"
    default = model_dir(DEFAULT_TOKENIZER_MODEL)
    if (default / "tokenizer.json").exists():
        return TextTokenizer.load(default), f"tokens ({default / 'tokenizer.json'})"
    return None, (
        f"characters (no tokenizer given and {default / 'tokenizer.json'} does not exist; "
        f"fetch the model or pass --tokenizer)"
    )


# ---- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "profile",
        __doc__.split("\n\n")[0],
        "Exit codes: 0 ok (findings are reported, not failures), 2 bad input, 1 failure.",
    )
    parser.add_argument("file", metavar="FILE", help="a JSONL file of {problem, solution} rows, or a directory of them")
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR_OR_TOKENIZER_JSON",
        help=f"count tokens with this tokenizer (default: the {DEFAULT_TOKENIZER_MODEL} model's "
        "tokenizer if fetched, else characters; 'none' for characters)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="report directory (default: runs/profile/<file name>)"
    )
    parser.add_argument("--max-examples", type=int, default=50, help="located examples listed per finding (default 50)")
    return parser


def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    started = time.time()
    record = {}
    out_dir = Path(args.out) if args.out else Path("runs") / "profile" / Path(args.file).name.removesuffix(".jsonl")

    def body() -> None:
        tokenizer, unit = tokenizer_from_arg(args.tokenizer)
        record.update(profile(args.file, tokenizer, unit, max_examples=args.max_examples))
        record["seconds"] = round(time.time() - started, 2)
        write_report(record, out_dir)

    code = guarded("profile", body)
    if code:
        return code
    log.info(
        "%s rows, %d families, %d wrong labels, %d bad lines, %d exact duplicates; lengths in %s; report: %s",
        f"{record['rows']:,}",
        len(record["families"]),
        record["wrong_labels"]["count"],
        record["bad_lines"]["count"],
        record["duplicates"]["exact"]["rows"],
        record["length_unit"],
        out_dir / "profile.md",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
