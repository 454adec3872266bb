"""prep's data rules, each written once: which families are read (data.families, drop_families), which
labels stand (data.bad_labels), which rows are held out (data.heldout_rows, data.heldout_file), which are
trained on (data.sample_rows) and how often (data.balance). tunebox/data/pipeline.py applies them at scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tunebox.config import balance_rule
from tunebox.contest import mathgen
from tunebox.contest.scoring import row_family
from tunebox.data.samples import read_examples
from tunebox.io import InputError

# What became of a kept row (one byte per row, in source order).
TRAIN, HELDOUT, NOT_SAMPLED, BALANCED_OUT = 0, 1, 2, 3

SNIPPET = 80  # characters of a problem or label quoted in a reason


@dataclass(frozen=True)
class FamilyFilter:
    """data.families (kept, None for all) and data.drop_families: which math families are read at all."""

    keep: Optional[frozenset] = None
    drop: frozenset = frozenset()

    @classmethod
    def of(cls, data) -> "FamilyFilter":
        return cls(frozenset(data.families) if data.families is not None else None, frozenset(data.drop_families))

    def leaves_out(self, family: str) -> bool:
        return (self.keep is not None and family not in self.keep) or family in self.drop


def label_check(problem: str, reference: str, policy: str) -> tuple[str, Optional[str], str]:
    """data.bad_labels on one math row -> (verdict, new label, reason): verdict ok | unchecked (not
    computable) | fixed | drop."""
    family = mathgen.family_of(problem)
    expected = mathgen.solve(problem, family)
    if expected is None:
        return "unchecked", None, ""
    verdict, label = "ok", reference
    if expected != reference:
        if policy != "fix":
            return "drop", None, f"bad label: {reference[:SNIPPET]!r}, recomputed {expected[:SNIPPET]!r}"
        verdict, label = "fixed", expected
    issue = mathgen.label_sanity_issue(problem, label, family)
    if issue:
        fixable = " (recomputing gives the same value: cannot be fixed)" if policy == "fix" else ""
        return "drop", None, f"bad label: {issue}{fixable}"
    return verdict, label, ""


def split_heldout(n_rows: int, heldout: int, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded permutation, so the split depends only on the
    row count and the seed (not on tokenization or anything a user tunes)."""
    if heldout >= n_rows:
        raise InputError(f"data.heldout_rows ({heldout}) must be smaller than the number of rows ({n_rows})")
    mask = np.zeros(n_rows, dtype=bool)
    mask[np.random.RandomState(seed).permutation(n_rows)[:heldout]] = True
    return mask


def stratified_sample(families: np.ndarray, names: list[str], k: int, seed: int) -> tuple[np.ndarray, dict]:
    """Choose k of the rows, each family (code into `names`) getting its share of k: floor of
    k * rows_f / rows, the k left over going to the largest remainders (ties: family name). Within a
    family the rows are a seeded random choice. Returns (mask, {family: {available, sampled}})."""
    counts = np.bincount(families, minlength=len(names))
    quota = counts * k / counts.sum()
    take = np.floor(quota).astype(np.int64)
    order = sorted(range(len(names)), key=lambda f: (-(quota[f] - take[f]), names[f]))
    for f in order[: k - int(take.sum())]:
        take[f] += 1
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(families), dtype=bool)
    for f in sorted(range(len(names)), key=lambda f: names[f]):
        rows = np.flatnonzero(families == f)
        mask[rows[rng.permutation(len(rows))[: take[f]]]] = True
    report = {
        names[f]: {"available": int(counts[f]), "sampled": int(take[f])}
        for f in sorted(range(len(names)), key=lambda f: names[f])
        if counts[f]
    }
    return mask, report


def sample_training_rows(
    codes: np.ndarray, status: np.ndarray, names: list[str], sample_rows: Optional[int], seed: int
) -> Optional[dict]:
    """data.sample_rows on the rows not held out: the rest become NOT_SAMPLED (in place). Returns
    what stats.json records under "sampling" (None when every row is used)."""
    if sample_rows is None:
        return None
    candidates = np.flatnonzero(status == TRAIN)
    sampling = {"sample_rows": sample_rows, "available": int(len(candidates)), "seed": seed}
    if sample_rows < len(candidates):
        chosen, sampling["families"] = stratified_sample(codes[candidates], names, sample_rows, seed)
        status[candidates[~chosen]] = NOT_SAMPLED
    else:
        sampling["note"] = "sample_rows >= rows available: every row is used"
    return sampling


def balance_training_rows(
    codes: np.ndarray, status: np.ndarray, names: list[str], balance: Optional[dict], seed: int
) -> tuple[Optional[np.ndarray], dict]:
    """data.balance on the training rows: caps (a seeded choice; the rest become BALANCED_OUT, in place)
    and repeat factors. Returns (repeats per ordinal or None, {family: rule applied})."""
    if not balance:
        return None, {}
    rng = np.random.RandomState(seed + 1)
    repeats = np.ones(len(codes), dtype=np.uint16)
    applied = {}
    for code, name in sorted(enumerate(names), key=lambda t: t[1]):
        rule = balance.get(name, balance.get("*"))
        if rule is None:
            continue
        kind, n = balance_rule(rule)
        rows = np.flatnonzero((codes == code) & (status == TRAIN))
        if kind == "cap" and len(rows) > n:
            status[rows[rng.permutation(len(rows))[n:]]] = BALANCED_OUT
        elif kind == "repeat":
            repeats[rows] = n
        applied[name] = rule
    return repeats, applied


def read_heldout_file(data, path: Path, spec_path: Optional[str] = None) -> list[dict]:
    """data.heldout_file (resolved: `path`) as held-out rows {file, line, prompt, reference, meta, source: "file"}:
    parsed like training rows, data.families / drop_families applied, data.heldout_file_rows of them (seeded,
    file order). `spec_path` is the run spec, named when the file is missing."""
    if not path.is_file():
        raise InputError(f"data.heldout_file not found: {path}", spec_path)
    families = FamilyFilter.of(data)
    rows = []
    for ex in read_examples(path, data.format):
        if data.format == "math" and families.leaves_out(row_family("math", ex.prompt)):
            continue
        rows.append(
            {
                "file": str(path),
                "line": ex.line,
                "prompt": ex.prompt,
                "reference": ex.reference,
                "meta": ex.meta,
                "source": "file",
            }
        )
    if data.heldout_file_rows is not None and data.heldout_file_rows < len(rows):
        chosen = np.sort(np.random.RandomState(data.seed).permutation(len(rows))[: data.heldout_file_rows])
        rows = [rows[i] for i in chosen]
    if not rows:
        raise InputError("data.heldout_file has no row of the families data.families keeps", path)
    return rows
