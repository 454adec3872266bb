"""Synthetic contest math rows (what `python -m jobs.generate` writes): the family mix, the rows drawn from
tunebox.contest.mathgen's templates in independently seeded blocks, and the shards written in parallel.

Deterministic: rows are drawn in fixed blocks of BLOCK_ROWS, each block with its own generator
seeded from (seed, block index), so the same seed and mix give the same rows whatever the shard
size or the number of workers. Each shard is written atomically (temporary name, then rename);
generate.json is written last and is the marker of a complete run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from bisect import bisect
from collections import Counter
from itertools import accumulate
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from tunebox.contest import mathgen
from tunebox.io import InputError, atomic_path, atomic_write_json

log = logging.getLogger("tunebox.generate")

BLOCK_ROWS = 1000  # rows per independently seeded block (the unit of determinism)
SHARD_NAME = "part-{:05d}.jsonl"


# ---- the mix ------------------------------------------------------------------------------------
def parse_weights(text: str, what: str, known: tuple[str, ...]) -> dict[str, float]:
    """'a=0.5,b=2' -> {'a': 0.5, 'b': 2.0}; names must be in `known`, weights >= 0, sum > 0."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise InputError(f"--{what}: {item!r} is not NAME=WEIGHT (e.g. add=2,sqrt=1)")
        if name not in known:
            raise InputError(f"--{what}: unknown name {name!r}; known: {', '.join(known)}")
        try:
            weight = float(value)
        except ValueError:
            raise InputError(f"--{what}: weight {value!r} for {name!r} is not a number") from None
        if not weight >= 0 or weight == float("inf"):
            raise InputError(f"--{what}: weight for {name!r} must be a finite number >= 0, got {value!r}")
        weights[name] = weight
    if not weights or sum(weights.values()) <= 0:
        raise InputError(f"--{what}: give at least one positive weight, e.g. {known[0]}=1")
    return weights


def resolve_mix(
    mix: Optional[dict[str, float]] = None, lang_mix: Optional[dict[str, float]] = None
) -> dict[str, float]:
    """Family -> probability. `mix` defaults to the real sample's family mix; `lang_mix`, when
    given, rescales the families of each language so that language gets exactly its share."""
    weights = dict(mix if mix is not None else mathgen.CONTEST_MIX)
    weights = {name: w for name, w in weights.items() if w > 0}
    if lang_mix:
        by_lang: dict[str, float] = Counter()
        for name, w in weights.items():
            by_lang[mathgen.FAMILIES[name].lang] += w
        for lang, share in lang_mix.items():
            if share > 0 and by_lang.get(lang, 0) == 0:
                raise InputError(
                    f"--lang-mix asks for {lang}={share} but the family mix has no {lang} family "
                    f"(add one to --mix, e.g. {'english_word' if lang == mathgen.EN else 'add'}=1)"
                )
        total_share = sum(lang_mix.values())
        weights = {
            name: w / by_lang[mathgen.FAMILIES[name].lang] * lang_mix.get(mathgen.FAMILIES[name].lang, 0) / total_share
            for name, w in weights.items()
        }
        weights = {name: w for name, w in weights.items() if w > 0}
    total = sum(weights.values())
    return {name: w / total for name, w in sorted(weights.items(), key=lambda kv: -kv[1])}


# ---- rows -------------------------------------------------------------------------------------
def block_rng(seed: int, block: int) -> random.Random:
    # A string seed goes through SHA-512 in random.seed (version 2): stable across runs, platforms
    # and processes, and unrelated streams for neighbouring blocks.
    return random.Random(f"tunebox.generate:{seed}:{block}")


def generate_block(seed: int, block: int, families: list[str], cum_weights: list[float]) -> list[tuple[str, str, str]]:
    """The BLOCK_ROWS rows of one block as (family, problem, solution)."""
    rng = block_rng(seed, block)
    total = cum_weights[-1]
    makers = [mathgen.FAMILIES[name].make for name in families]
    rows = []
    for _ in range(BLOCK_ROWS):
        index = bisect(cum_weights, rng.random() * total)
        problem, solution = makers[index](rng)
        rows.append((families[index], problem, solution))
    return rows


def iter_rows(seed: int, start: int, stop: int, mix: dict[str, float]):
    """Rows start..stop-1 of the stream for (seed, mix), as (family, problem, solution)."""
    families = list(mix)
    cum_weights = list(accumulate(mix.values()))
    for block in range(start // BLOCK_ROWS, (stop + BLOCK_ROWS - 1) // BLOCK_ROWS):
        rows = generate_block(seed, block, families, cum_weights)
        first = block * BLOCK_ROWS
        lo, hi = max(start - first, 0), min(stop - first, BLOCK_ROWS)
        yield from rows[lo:hi]


def _write_shard(task: tuple) -> dict:
    """Worker: generate rows [start, stop) and write them to one shard file atomically."""
    out_dir, index, seed, start, stop, mix = task
    encode = json.JSONEncoder(ensure_ascii=False).encode  # the contest files' exact serialisation
    counts: Counter = Counter()
    lines = []
    for family, problem, solution in iter_rows(seed, start, stop, mix):
        counts[family] += 1
        lines.append(encode({"problem": problem, "solution": solution}))
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    path = Path(out_dir) / SHARD_NAME.format(index)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {
        "file": path.name,
        "rows": stop - start,
        "first_row": start,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "families": dict(counts),
    }


def generate(
    rows: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    mix: Optional[dict[str, float]] = None,
    shard_rows: int = 100_000,
    workers: Optional[int] = None,
    args: Optional[dict] = None,
    progress: bool = True,
) -> dict:
    """Write `rows` rows as shards under `out_dir`; return (and write) the generate.json record."""
    if rows < 1:
        raise InputError(f"--rows must be >= 1, got {rows}")
    if shard_rows < 1:
        raise InputError(f"--shard-rows must be >= 1, got {shard_rows}")
    mix = mix or resolve_mix()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out must be a directory, and this is a file", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tasks = [
        (str(out_dir), i, seed, start, min(start + shard_rows, rows), mix)
        for i, start in enumerate(range(0, rows, shard_rows))
    ]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    shards = []
    with tqdm(total=rows, unit="row", unit_scale=True, desc="generate", disable=not progress) as bar:
        if workers == 1:
            results = map(_write_shard, tasks)
            pool = None
        else:
            # fork would copy whatever the parent imported; spawn keeps workers lean and identical.
            pool = get_context("spawn").Pool(workers)
            results = pool.imap(_write_shard, tasks)
        try:
            for shard in results:
                shards.append(shard)
                bar.update(shard["rows"])
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    written = {s["file"] for s in shards}
    for stale in out_dir.glob("part-*.jsonl"):  # shards of an earlier, larger run
        if stale.name not in written:
            stale.unlink()
    families: Counter = Counter()
    for shard in shards:
        families.update(shard["families"])
    languages: Counter = Counter()
    for name, n in families.items():
        languages[mathgen.FAMILIES[name].lang] += n
    record = {
        "rows": rows,
        "seed": seed,
        "block_rows": BLOCK_ROWS,
        "shard_rows": shard_rows,
        "workers": workers,
        "mix": mix,
        "families": dict(families.most_common()),
        "languages": dict(languages.most_common()),
        "shards": shards,
        "seconds": round(time.time() - started, 3),
        "args": args or {},
    }
    # Families whose template has few distinct problems repeat rows; say so before anyone trains.
    saturated = {
        name: {"rows": n, "distinct_problems": mathgen.FAMILIES[name].distinct}
        for name, n in families.items()
        if mathgen.FAMILIES[name].distinct and n > mathgen.FAMILIES[name].distinct // 10
    }
    for name, info in saturated.items():
        log.warning(
            "%s: %s rows from only %s distinct problems; expect repeated rows (the contest's ranges allow no more)",
            name,
            f"{info['rows']:,}",
            f"{info['distinct_problems']:,}",
        )
    record["small_families"] = saturated
    atomic_write_json(out_dir / "generate.json", record)
    return record
