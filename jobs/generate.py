"""generate: synthetic contest math rows, every label computed exactly as the contest formats it.

    python -m jobs.generate --rows N --out DIR

Writes DIR/part-00000.jsonl, part-00001.jsonl, ... ({"problem", "solution"} a line, serialised
exactly like the contest's files) and DIR/generate.json (seed, arguments, rows per family and
language, each shard's sha256). Every row comes from a template in tunebox.contest.mathgen, whose
formatter reproduces the real contest labels byte for byte.

Deterministic (tunebox/data/synthetic.py): rows are drawn in fixed blocks of BLOCK_ROWS, each block
with its own generator seeded from (seed, block index), so the same --seed and --mix give the same rows whatever
--shard-rows or --workers are. Shards are written in parallel (one process per core), each
atomically (temporary name, then rename); generate.json is written last and is the marker of a
complete run.

Exit codes: 0 ok, 2 bad arguments, 1 failure.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tunebox.cli import guarded, setup_logging, tool_parser
from tunebox.contest import mathgen
from tunebox.data.synthetic import generate, parse_weights, resolve_mix

log = logging.getLogger("tunebox.generate")


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "generate",
        __doc__.split("\n\n")[0],
        "Families: "
        + ", ".join(mathgen.GENERATABLE)
        + "\nDefault mix (the real sample's): "
        + ",".join(f"{k}={v}" for k, v in mathgen.CONTEST_MIX.items())
        + "\n\nExit codes: 0 ok, 2 bad arguments, 1 failure.",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="number of rows to write (default 100000)")
    parser.add_argument(
        "--out",
        default="runs/data/generated",
        metavar="DIR",
        help="output directory (part-*.jsonl + generate.json; default runs/data/generated)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--mix",
        default=None,
        metavar="FAMILY=WEIGHT,...",
        help="family weights (only the families listed are generated); default: the real sample's mix",
    )
    parser.add_argument(
        "--lang-mix",
        default=None,
        metavar="zh=W,en=W",
        help="rescale the mix so each language gets this share, e.g. zh=0.97,en=0.03",
    )
    parser.add_argument("--shard-rows", type=int, default=100_000, help="rows per part file (default 100000)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    return parser


def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    record = {}

    def body() -> None:
        mix = parse_weights(args.mix, "mix", mathgen.GENERATABLE) if args.mix else None
        lang_mix = parse_weights(args.lang_mix, "lang-mix", (mathgen.ZH, mathgen.EN)) if args.lang_mix else None
        record.update(
            generate(
                args.rows,
                args.out,
                seed=args.seed,
                mix=resolve_mix(mix, lang_mix),
                shard_rows=args.shard_rows,
                workers=args.workers,
                args=vars(args),
            )
        )

    code = guarded("generate", body, on_interrupt="rerun the same command (it rewrites every shard)")
    if code:
        return code
    log.info(
        "wrote %s rows in %d shards to %s in %.1f s: %s",
        f"{record['rows']:,}",
        len(record["shards"]),
        args.out,
        record["seconds"],
        ", ".join(f"{k} {v}" for k, v in record["families"].items()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
