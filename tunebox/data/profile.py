"""What is in a math JSONL file (the analysis behind `python -m jobs.profile`).

Streams FILE (or every *.jsonl in a directory, e.g. a jobs.generate output) one line at a time and
reports, per problem family (tunebox.contest.mathgen.family_of): count, share, language, and length
percentiles of problem, solution and both (tokens when a tokenizer is found, else characters);
exact duplicates, problems repeated with a different solution, near-duplicates (same problem after
normalising whitespace/case/sentence punctuation, and MinHash over character 5-grams for long
problems); solutions with no number the contest scorer can read; and label checks: every
computable row is recomputed with mathgen.solve and rows whose label differs, or whose label
follows the contest formula for a question that has no such answer, are listed by line.

Writes OUT/profile.json, OUT/profile.md, OUT/family_mix.png and OUT/lengths.png.
Memory stays small: length histograms, 32 bytes per row for duplicate hashes, a capped sketch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
import zlib
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm import tqdm

from tunebox.contest import mathgen
from tunebox.contest.scoring import extract_answer_number
from tunebox.data import answers
from tunebox.io import InputError, JsonlRow, atomic_path, atomic_write_json, atomic_write_text, iter_jsonl

log = logging.getLogger("tunebox.profile")

DEFAULT_TOKENIZER_MODEL = "smollm2-135m"
BATCH_ROWS = 2048
PERCENTILES = (50, 90, 99)
FIELDS = ("problem", "solution", "total")

# MinHash near-duplicates: 64 hash functions in 16 bands of 4 rows; rows sharing a band are
# candidates, kept when their signatures agree on >= 80% of the functions (the estimated Jaccard
# similarity of their character 5-gram sets). Only problems of >= 64 normalised characters: a
# short template row that differs in one number is a different problem, not a near-copy.
MINHASH_PERMUTATIONS = 64
MINHASH_BANDS = 16
MINHASH_THRESHOLD = 0.8
MINHASH_MIN_CHARS = 64
MINHASH_SHINGLE = 5
MINHASH_MAX_SKETCH_ROWS = 50_000  # representatives kept; about 1.5 KB each
_PRIME = (1 << 31) - 1


# ---- near-duplicate keys --------------------------------------------------------------------------
_SENTENCE_PUNCT = ",.;:!?，。；：！？、\"'“”‘’「」"
# Sentence punctuation is dropped unless it sits between digits (a decimal point, 1,000) and
# math operators are kept: "3 * 4" and "3 / 4" must stay different problems.
_DROP_PUNCT = re.compile(rf"(?<!\d)[{re.escape(_SENTENCE_PUNCT)}]|[{re.escape(_SENTENCE_PUNCT)}](?!\d)")
_SPACE = re.compile(r"\s+")


def normalize_problem(text: str) -> str:
    """The text near-duplicates share: NFKC (full-width -> ASCII), case-folded, no whitespace,
    no sentence punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _DROP_PUNCT.sub("", _SPACE.sub("", text))


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class MinHashSketch:
    """Streaming near-duplicate finder with a bounded table of representatives."""

    def __init__(self, seed: int = 1, max_rows: int = MINHASH_MAX_SKETCH_ROWS):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, size=MINHASH_PERMUTATIONS, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, size=MINHASH_PERMUTATIONS, dtype=np.uint64)
        self.rows_per_band = MINHASH_PERMUTATIONS // MINHASH_BANDS
        self.bands: list[dict[bytes, int]] = [{} for _ in range(MINHASH_BANDS)]
        self.signatures: list[np.ndarray] = []
        self.locations: list[tuple[str, int]] = []
        self.max_rows = max_rows
        self.checked = 0
        self.full = False

    def signature(self, text: str) -> np.ndarray:
        k = MINHASH_SHINGLE
        grams = {text[i : i + k] for i in range(max(len(text) - k + 1, 1))}
        h = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
        # (a*h + b) mod p with h, a, b < p = 2^31 - 1: every product stays below 2^62.
        h %= np.uint64(_PRIME)
        return ((h[:, None] * self.a[None, :] + self.b[None, :]) % np.uint64(_PRIME)).min(axis=0)

    def add(self, text: str, where: tuple[str, int]) -> Optional[tuple[tuple[str, int], float]]:
        """Check `text` against earlier representatives; return (their location, similarity) for
        the most similar candidate at or above the threshold, else keep it as a representative."""
        self.checked += 1
        sig = self.signature(text)
        keys = [sig[i * self.rows_per_band : (i + 1) * self.rows_per_band].tobytes() for i in range(MINHASH_BANDS)]
        best: Optional[tuple[int, float]] = None
        seen = set()
        for band, key in zip(self.bands, keys):
            rep = band.get(key)
            if rep is None or rep in seen:
                continue
            seen.add(rep)
            similarity = float(np.mean(self.signatures[rep] == sig))
            if similarity >= MINHASH_THRESHOLD and (best is None or similarity > best[1]):
                best = (rep, similarity)
        if best is not None:
            return self.locations[best[0]], best[1]
        if len(self.signatures) >= self.max_rows:
            self.full = True
            return None
        rep = len(self.signatures)
        self.signatures.append(sig)
        self.locations.append(where)
        for band, key in zip(self.bands, keys):
            band.setdefault(key, rep)
        return None


# ---- lengths --------------------------------------------------------------------------------------
class LengthHistogram:
    """Exact percentiles of integer lengths in bounded memory (a count per length)."""

    def __init__(self):
        self.counts = np.zeros(256, dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        if lengths.size == 0:
            return
        top = int(lengths.max())
        if top >= self.counts.size:
            grown = np.zeros(max(top + 1, 2 * self.counts.size), dtype=np.int64)
            grown[: self.counts.size] = self.counts
            self.counts = grown
        self.counts += np.bincount(lengths, minlength=self.counts.size)

    def merge(self, other: "LengthHistogram") -> None:
        if other.counts.size > self.counts.size:
            self.counts, other_counts = other.counts.copy(), self.counts
        else:
            other_counts = other.counts
        self.counts[: other_counts.size] += other_counts

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def percentile(self, q: float) -> int:
        """The smallest length L with at least q% of rows <= L (numpy's 'inverted_cdf')."""
        cumulative = np.cumsum(self.counts)
        return int(np.searchsorted(cumulative, q / 100 * cumulative[-1]))

    def summary(self) -> dict:
        if self.n == 0:
            return {}
        nonzero = np.nonzero(self.counts)[0]
        out = {f"p{q}": self.percentile(q) for q in PERCENTILES}
        out["max"] = int(nonzero[-1])
        out["min"] = int(nonzero[0])
        out["mean"] = round(float((self.counts * np.arange(self.counts.size)).sum() / self.n), 2)
        return out


# ---- the profile ------------------------------------------------------------------------------------
@dataclass
class FamilyStats:
    count: int = 0
    languages: Counter = field(default_factory=Counter)
    lengths: dict = field(default_factory=lambda: {f: LengthHistogram() for f in FIELDS})
    computable: int = 0
    wrong_labels: int = 0
    unparsable: int = 0
    near_duplicates: int = 0


class Findings:
    """A list of located examples capped at `limit`, with the full count."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        self.count += 1
        if len(self.rows) < self.limit:
            self.rows.append(row)

    def to_dict(self) -> dict:
        return {"count": self.count, "rows": self.rows, "listed": len(self.rows)}


def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise InputError("directory holds no *.jsonl file", path)
        return files
    if not path.exists():
        raise InputError("no such file (give a JSONL file or a directory of them)", path)
    return [path]


def count_lines(path: Path) -> int:
    lines = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _iter_located(files: list[Path]) -> Iterator[tuple[int, Path, JsonlRow | InputError]]:
    for index, path in enumerate(files):
        for item in iter_jsonl(path):
            yield index, path, item


def _row_text(value) -> tuple[Optional[str], Optional[str], str]:
    """(problem, solution, error): error is '' when the row has the contest's shape."""
    if not isinstance(value, dict):
        return None, None, f'expected a JSON object {{"problem", "solution"}}, got {type(value).__name__}'
    for key in ("problem", "solution"):
        if key not in value:
            return None, None, f"missing field {key!r} (fields present: {', '.join(map(str, value)) or 'none'})"
        if not isinstance(value[key], str):
            return None, None, f"field {key!r} must be a string, got {type(value[key]).__name__}"
    return value["problem"], value["solution"], ""


def profile(
    path: str | os.PathLike,
    tokenizer=None,
    length_unit: str = "characters",
    max_examples: int = 50,
    progress: bool = True,
) -> dict:
    """Profile a JSONL file (or a directory of them); return the profile.json record."""
    files = input_files(Path(path))
    multi = len(files) > 1
    families: dict[str, FamilyStats] = defaultdict(FamilyStats)
    bad_lines = Findings(max_examples)
    wrong_labels = Findings(max_examples)
    off_template = Findings(max_examples)
    unparsable = Findings(max_examples)
    near_minhash = Findings(max_examples)
    sketch = MinHashSketch()
    pair_hashes, problem_hashes, norm_hashes, where_keys = array("Q"), array("Q"), array("Q"), array("Q")
    files_by_index = [str(f) for f in files]
    rows = 0
    batch: list[tuple[str, int, str, str, str]] = []

    first_rows: dict[str, tuple[str, str]] = {}  # per family: its first row, shown in every answer format

    def location(file_index: int, line: int) -> dict:
        return {"file": files_by_index[file_index], "line": line} if multi else {"line": line}

    def flush() -> None:
        if not batch:
            return
        problems = [b[3] for b in batch]
        solutions = [b[4] for b in batch]
        if tokenizer is not None:
            p_len = np.fromiter(map(len, tokenizer.encode_batch(problems)), dtype=np.int64, count=len(batch))
            s_len = np.fromiter(map(len, tokenizer.encode_batch(solutions)), dtype=np.int64, count=len(batch))
        else:
            p_len = np.fromiter(map(len, problems), dtype=np.int64, count=len(batch))
            s_len = np.fromiter(map(len, solutions), dtype=np.int64, count=len(batch))
        names = np.array([b[0] for b in batch])
        for name in np.unique(names):
            mask = names == name
            stats = families[str(name)]
            stats.lengths["problem"].add(p_len[mask])
            stats.lengths["solution"].add(s_len[mask])
            stats.lengths["total"].add(p_len[mask] + s_len[mask])
        batch.clear()

    total_lines = sum(count_lines(f) for f in files)
    bar = tqdm(total=total_lines, unit="line", unit_scale=True, desc="profile", disable=not progress)
    last_line = {}
    for file_index, file_path, item in _iter_located(files):
        bar.update(item.line - last_line.get(file_index, 0))
        last_line[file_index] = item.line
        if isinstance(item, InputError):
            bad_lines.add(**location(file_index, item.line), error=item.message)
            continue
        problem, solution, error = _row_text(item.value)
        if error:
            bad_lines.add(**location(file_index, item.line), error=error)
            continue
        rows += 1
        name = mathgen.family_of(problem)
        first_rows.setdefault(name, (problem, solution))
        stats = families[name]
        stats.count += 1
        stats.languages[mathgen.language_of(problem)] += 1
        where = location(file_index, item.line)

        # labels
        expected = mathgen.solve(problem, name)
        if expected is not None:
            stats.computable += 1
            if expected != solution.strip():
                stats.wrong_labels += 1
                wrong_labels.add(
                    **where, family=name, kind="mismatch", problem=problem, label=solution, expected=expected
                )
            else:
                issue = mathgen.label_sanity_issue(problem, solution, name)
                if issue:
                    stats.wrong_labels += 1
                    wrong_labels.add(
                        **where, family=name, kind="ill_posed", problem=problem, label=solution, reason=issue
                    )
        elif mathgen.FAMILIES.get(name) is not None and mathgen.FAMILIES[name].solve is not None:
            off_template.add(**where, family=name, problem=problem[:200])
        # A label equal to mathgen's output is in a template format whose answers the scorer is
        # known to read (tests/test_generate.py checks every family); only other labels cost a parse.
        if (expected is None or expected != solution.strip()) and extract_answer_number(solution) is None:
            stats.unparsable += 1
            unparsable.add(**where, family=name, solution=solution[:200])

        # duplicates: hashes now, grouped after the pass
        norm = normalize_problem(problem)
        pair_hashes.append(hash64(problem + "\x00" + solution))
        problem_hashes.append(hash64(problem))
        norm_hashes.append(hash64(norm))
        where_keys.append((file_index << 40) | item.line)
        if len(norm) >= MINHASH_MIN_CHARS:
            match = sketch.add(norm, (files_by_index[file_index], item.line))
            if match is not None:
                (first_file, first_line), similarity = match
                stats.near_duplicates += 1
                first = {"file": first_file, "line": first_line} if multi else {"line": first_line}
                near_minhash.add(**where, family=name, similar_to=first, similarity=round(similarity, 3))

        batch.append((name, file_index, item.line, problem, solution))
        if len(batch) >= BATCH_ROWS:
            flush()
    flush()
    bar.close()

    groups = _duplicate_groups(pair_hashes, where_keys, files_by_index, multi, max_examples)
    problem_groups = _duplicate_groups(
        problem_hashes, where_keys, files_by_index, multi, max_examples, exclude=pair_hashes
    )
    normalized_groups = _duplicate_groups(
        norm_hashes, where_keys, files_by_index, multi, max_examples, exclude=problem_hashes
    )

    overall = {f: LengthHistogram() for f in FIELDS}
    for stats in families.values():
        for f in FIELDS:
            overall[f].merge(stats.lengths[f])
    languages: Counter = Counter()
    for stats in families.values():
        languages.update(stats.languages)
    order = sorted(families, key=lambda n: -families[n].count)
    return {
        "input": files_by_index,
        "rows": rows,
        "length_unit": length_unit,
        "languages": dict(languages.most_common()),
        "families": {
            name: {
                "count": families[name].count,
                "share": round(families[name].count / rows, 6) if rows else 0.0,
                "languages": dict(families[name].languages),
                "lengths": {f: families[name].lengths[f].summary() for f in FIELDS},
                "computable": families[name].computable,
                "wrong_labels": families[name].wrong_labels,
                "unparsable_solutions": families[name].unparsable,
                "near_duplicates_minhash": families[name].near_duplicates,
            }
            for name in order
        },
        "lengths": {f: overall[f].summary() for f in FIELDS},
        "answer_formats": answer_format_examples(first_rows, order, tokenizer),
        "length_histogram": {f: _coarse_histogram(overall[f]) for f in FIELDS},
        "wrong_labels": wrong_labels.to_dict(),
        "off_template": off_template.to_dict(),
        "unparsable_solutions": unparsable.to_dict(),
        "bad_lines": bad_lines.to_dict(),
        "duplicates": {
            "exact": groups,
            "same_problem_different_solution": problem_groups,
        },
        "near_duplicates": {
            "normalized": normalized_groups,
            "minhash": {
                **near_minhash.to_dict(),
                "checked_rows": sketch.checked,
                "representatives": len(sketch.signatures),
                "sketch_full": sketch.full,
                "permutations": MINHASH_PERMUTATIONS,
                "bands": MINHASH_BANDS,
                "threshold": MINHASH_THRESHOLD,
                "shingle_chars": MINHASH_SHINGLE,
                "min_chars": MINHASH_MIN_CHARS,
            },
        },
    }


def _duplicate_groups(
    hashes: array, where_keys: array, files: list[str], multi: bool, limit: int, exclude: Optional[array] = None
) -> dict:
    """Rows sharing a hash, as groups of locations (first occurrence first). With `exclude`, a group
    counts only if its rows differ in that other hash (e.g. same problem, different solution)."""
    if not hashes:
        return {"rows": 0, "groups": 0, "examples": []}
    h = np.frombuffer(hashes, dtype=np.uint64)
    keys = np.frombuffer(where_keys, dtype=np.uint64)
    other = np.frombuffer(exclude, dtype=np.uint64) if exclude is not None else None
    order = np.lexsort((keys, h))
    sorted_h = h[order]
    starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
    sizes = np.diff(np.r_[starts, sorted_h.size])
    dup_rows = 0
    n_groups = 0
    examples = []
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        members = order[start : start + size]
        if other is not None and np.unique(other[members]).size < 2:
            continue
        n_groups += 1
        dup_rows += int(size) - 1
        if len(examples) < limit:
            locs = []
            for k in keys[members][:10]:
                k = int(k)
                line, file_index = k & ((1 << 40) - 1), k >> 40
                locs.append({"file": files[file_index], "line": line} if multi else {"line": line})
            examples.append({"size": int(size), "rows": locs})
    examples.sort(key=lambda g: (g["rows"][0].get("file", ""), g["rows"][0]["line"]))
    return {"rows": dup_rows, "groups": n_groups, "examples": examples}


def _coarse_histogram(hist: LengthHistogram, bins: int = 40) -> dict:
    """Counts in up to `bins` equal bins from the shortest length to a little past p99, plus the
    rows beyond (`overflow`): a few 1000-token outliers must not squash the chart of the rest."""
    if hist.n == 0:
        return {"edges": [], "counts": [], "overflow": 0}
    nonzero = np.nonzero(hist.counts)[0]
    lo, top = int(nonzero[0]), int(nonzero[-1]) + 1
    hi = min(top, max(int(hist.percentile(99) * 1.25) + 1, lo + 1))
    edges = np.unique(np.linspace(lo, hi, bins + 1).round().astype(int))
    counts = [int(hist.counts[a:b].sum()) for a, b in zip(edges[:-1], edges[1:])]
    return {"edges": edges.tolist(), "counts": counts, "overflow": int(hist.counts[hi:].sum())}


# ---- report: markdown and charts -----------------------------------------------------------------
def answer_format_examples(first_rows: dict, order: list[str], tokenizer=None) -> dict:
    """Each family's first row in every data.answer_format (tunebox/data/answers.py), with its length
    (tokens with a tokenizer, else characters): what a format costs before choosing it."""
    out = {}
    for name in order:
        if name not in first_rows:
            continue
        problem, solution = first_rows[name]
        formats = answers.examples(problem, solution, name)
        lengths = {k: len(tokenizer.encode(v)) if tokenizer is not None else len(v) for k, v in formats.items()}
        out[name] = {"problem": problem, "formats": formats, "lengths": lengths}
    return out


def render_markdown(record: dict) -> str:
    unit = record["length_unit"]
    short_unit = "tokens" if unit.startswith("tokens") else "chars"
    out = [
        f"# Profile of {', '.join(record['input']) if len(record['input']) < 4 else record['input'][0] + ' ...'}",
        "",
        f"{record['rows']:,} rows; lengths in {unit}.",
        f"Languages: {', '.join(f'{k} {v:,}' for k, v in record['languages'].items())}.",
        "",
        "![family mix](family_mix.png)",
        "![lengths](lengths.png)",
        "",
        f"| family | rows | share | lang | problem p50/p90/p99/max ({short_unit}) | solution p50/p90/p99/max "
        f"| checked | wrong labels | no number | near-dup |",
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for name, fam in record["families"].items():
        lens = fam["lengths"]

        def pct(f):
            s = lens[f]
            return f"{s['p50']}/{s['p90']}/{s['p99']}/{s['max']}" if s else "-"

        out.append(
            f"| {name} | {fam['count']:,} | {100 * fam['share']:.2f}% | "
            f"{', '.join(fam['languages'])} | {pct('problem')} | {pct('solution')} | {fam['computable']:,} | "
            f"{fam['wrong_labels']:,} | {fam['unparsable_solutions']:,} | {fam['near_duplicates_minhash']:,} |"
        )

    def where(row):
        return f"{row['file']}:{row['line']}" if "file" in row else f"line {row['line']}"

    def snippet(text, limit=100):
        text = " ".join(str(text).split()).replace("`", "'")
        return text if len(text) <= limit else text[:limit] + "..."

    wl = record["wrong_labels"]
    out += ["", f"## Wrong labels: {wl['count']:,}", ""]
    for row in wl["rows"]:
        detail = f"expected `{row['expected']}`" if row["kind"] == "mismatch" else row["reason"]
        out.append(
            f"- {where(row)} ({row['family']}, {row['kind']}): `{snippet(row['problem'])}` -> "
            f"`{snippet(row['label'])}`; {detail}"
        )
    if wl["count"] > len(wl["rows"]):
        out.append(f"- ... {wl['count'] - len(wl['rows']):,} more in profile.json's count (examples capped)")
    sections = [
        (
            "Off-template rows of a computable family (not checked)",
            record["off_template"],
            lambda r: f"- {where(r)} ({r['family']}): `{snippet(r['problem'])}`",
        ),
        (
            "Solutions whose answer is not one number (the scorer compares them as text)",
            record["unparsable_solutions"],
            lambda r: f"- {where(r)} ({r['family']}): `{snippet(r['solution'])}`",
        ),
        ("Bad lines (skipped)", record["bad_lines"], lambda r: f"- {where(r)}: {r['error']}"),
    ]
    for title, findings, fmt in sections:
        out += ["", f"## {title}: {findings['count']:,}", ""]
        out += [fmt(r) for r in findings["rows"]]
    dup = record["duplicates"]
    near = record["near_duplicates"]
    out += [
        "",
        "## Duplicates",
        "",
        f"- exact (same problem and solution): {dup['exact']['rows']:,} extra rows in "
        f"{dup['exact']['groups']:,} groups",
        f"- same problem, different solution: {dup['same_problem_different_solution']['rows']:,} extra rows in "
        f"{dup['same_problem_different_solution']['groups']:,} groups",
        f"- near (same after normalising whitespace, case, sentence punctuation): "
        f"{near['normalized']['rows']:,} extra rows in {near['normalized']['groups']:,} groups",
        f"- near (MinHash, estimated Jaccard >= {near['minhash']['threshold']} on character "
        f"{near['minhash']['shingle_chars']}-grams, problems of >= {near['minhash']['min_chars']} chars; "
        f"{near['minhash']['checked_rows']:,} rows checked): {near['minhash']['count']:,} rows"
        + (" (sketch full: later rows were checked but not kept)" if near["minhash"]["sketch_full"] else ""),
    ]
    for title, groups in (
        ("exact", dup["exact"]),
        ("same problem, different solution", dup["same_problem_different_solution"]),
        ("normalised", near["normalized"]),
    ):
        for g in groups["examples"][:10]:
            out.append(f"  - {title}: " + ", ".join(where(r) for r in g["rows"]))
    for r in near["minhash"]["rows"][:10]:
        out.append(f"  - MinHash: {where(r)} ~ {where(r['similar_to'])} ({r['similarity']})")
    formats = record.get("answer_formats") or {}
    if formats:
        out += ["", f"## Answer formats (data.answer_format): each family's first row, length in {short_unit}", ""]
        for name, ex in formats.items():
            out += [f"### {name}: `{snippet(ex['problem'])}`", ""]
            for fmt, text in ex["formats"].items():
                out += [f"{fmt} ({ex['lengths'][fmt]} {short_unit}):", "```", text, "```"]
            out.append("")
    return "\n".join(out) + "\n"


def family_mix_figure(record: dict):
    """Horizontal bar chart (matplotlib): one bar per family, labelled with its count and share."""
    from matplotlib.figure import Figure

    fams = list(record["families"].items())
    fig = Figure(figsize=(9, 0.9 + 0.26 * max(len(fams), 1)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(
        [name for name, _ in fams],
        [fam["count"] for _, fam in fams],
        color=["#E69F00" if "english" in name else "#0072B2" for name, _ in fams],
    )
    ax.bar_label(
        bars, labels=[f"{fam['count']:,} ({100 * fam['share']:.1f}%)" for _, fam in fams], padding=4, fontsize="small"
    )
    ax.invert_yaxis()  # the first family on top
    ax.margins(x=0.18)  # room for the labels past the longest bar
    ax.set(title=f"Family mix: {record['rows']:,} rows", xlabel="rows")
    ax.tick_params(axis="y", labelsize="small")
    return fig


def lengths_figure(record: dict):
    """Histograms (matplotlib) of problem, solution and total lengths, with p50/p90/p99 marked."""
    from matplotlib.figure import Figure

    unit = "tokens" if record["length_unit"].startswith("tokens") else "characters"
    fig = Figure(figsize=(4.2 * len(FIELDS), 3.4), dpi=100, layout="constrained")
    for ax, f in zip(fig.subplots(1, len(FIELDS)), FIELDS):
        hist, stats = record["length_histogram"][f], record["lengths"][f]
        ax.set_title(f"{f} length ({unit})", fontsize="medium")
        if not hist["counts"]:
            continue
        ax.stairs(hist["counts"], hist["edges"], fill=True, color="#0072B2")
        for q, colour in (("p50", "#009E73"), ("p90", "#E69F00"), ("p99", "#D55E00")):
            ax.axvline(
                min(max(stats[q], hist["edges"][0]), hist["edges"][-1]),
                color=colour,
                linewidth=1,
                label=f"{q} {stats[q]}",
            )
        ax.legend(fontsize="x-small")
        ax.set_xlabel(
            f"max {stats['max']}" + (f"; {hist['overflow']:,} longer rows not shown" if hist["overflow"] else ""),
            fontsize="small",
        )
        ax.set_ylabel("rows", fontsize="small")
    return fig


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def draw_family_mix(record: dict, path: Path) -> None:
    _save_png(family_mix_figure(record), path)


def draw_lengths(record: dict, path: Path) -> None:
    _save_png(lengths_figure(record), path)


def write_report(record: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    record["charts"] = ["family_mix.png", "lengths.png"]
    draw_family_mix(record, out_dir / "family_mix.png")
    draw_lengths(record, out_dir / "lengths.png")
    atomic_write_text(out_dir / "profile.md", render_markdown(record))
    atomic_write_json(out_dir / "profile.json", record)
