"""Sample packing: several short samples share one seq_length + 1 row, none of them seeing another.

Contest math samples are short (the local sample: 54-124 tokens, mean 88), so at seq_length 256 a
padded row is two-thirds padding and two-thirds of every step's compute is spent on it. Packing puts
whole samples side by side in a row (first-fit decreasing, computed once at train start, so the
data order stays a pure function of the spec and resume keeps working), and the train job swaps
MindFormers' causal mask for a block-diagonal one built from per-token segment ids
(TuneboxLlamaForCausalLM, tunebox/model/mf_extensions.py): a token attends only to earlier tokens of its own sample.

Rotary position embedding makes this exact, not an approximation: the q.k score of two tokens
depends only on the distance between their positions, so a sample placed at offset 90 of a row
produces the same attention, hidden states and loss as at offset 0. tests/test_packing.py checks
loss and gradients of a packed batch against the same samples unpacked.

Labels need nothing special: each sample's prompt tokens carry IGNORE, so the prediction made at
the last token of one sample, whose target is the first token of the next, never counts.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def sample_lengths(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> np.ndarray:
    """Unpadded length of each prep row: up to its last non-pad id or last labelled position."""
    used = (ids != pad_id) | (labels >= 0)
    width = ids.shape[1]
    return np.where(used.any(axis=1), width - np.argmax(used[:, ::-1], axis=1), 0).astype(np.int64)


def first_fit_decreasing(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Bins of sample indices whose lengths sum to at most `width`: longest samples first, each into
    the fullest bin it fits (best fit), ties broken by index so the result is deterministic."""
    if len(lengths) and int(lengths.max()) > width:
        raise ValueError(f"a sample of {int(lengths.max())} tokens is longer than the row width {width}")
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    # open_by_room[r]: bins with exactly r tokens of room left (r >= 1), oldest first; bit r of
    # `nonempty` is set when that queue has a bin, so the best fit is one bit scan, not a loop.
    open_by_room = [deque() for _ in range(width + 1)]
    nonempty = 0
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order.tolist():
        n = max(int(lengths[i]), 1)
        fits = nonempty >> n
        if fits:
            r = n + (fits & -fits).bit_length() - 1  # the smallest room that fits: best fit
            target = open_by_room[r].popleft()
            if not open_by_room[r]:
                nonempty &= ~(1 << r)
        else:
            target = len(bins)
            bins.append([])
            room.append(width)
        bins[target].append(i)
        room[target] -= int(lengths[i])
        if room[target] > 0:
            open_by_room[room[target]].append(target)
            nonempty |= 1 << room[target]
    for b in bins:  # samples of a row in their original order
        b.sort()
    bins.sort(key=lambda b: b[0])
    return bins


def pack_rows(ids: np.ndarray, labels: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Pack prep rows ([N, W] ids and labels, pad-filled) into fewer rows of the same width.

    Returns (ids, labels, segments, stats): segments [M, W] int32 numbers the samples of each row
    1, 2, ... by token and is 0 on padding."""
    n, width = ids.shape
    lengths = sample_lengths(ids, labels, pad_id)
    bins = first_fit_decreasing(lengths, width)
    out_ids = np.full((len(bins), width), pad_id, dtype=ids.dtype)
    out_labels = np.full((len(bins), width), -100, dtype=labels.dtype)
    segments = np.zeros((len(bins), width), dtype=np.int32)
    for row, members in enumerate(bins):
        at = 0
        for k, i in enumerate(members, start=1):
            m = int(lengths[i])
            out_ids[row, at : at + m] = ids[i, :m]
            out_labels[row, at : at + m] = labels[i, :m]
            segments[row, at : at + m] = k
            at += m
    used = int(lengths.sum())
    stats = {
        "samples": n,
        "rows": len(bins),
        "width": width,
        "fill_before": round(used / max(1, n * width), 4),
        "fill_after": round(used / max(1, len(bins) * width), 4),
        "max_samples_per_row": max((len(b) for b in bins), default=0),
    }
    return out_ids, out_labels, segments, stats


def write_packed_mindrecord(path, ids: np.ndarray, labels: np.ndarray, segments: np.ndarray) -> None:
    """Packed rows as a MindRecord with three columns (input_ids, labels, segment_ids). The train job
    writes it afresh at every start (packing is deterministic), so a file a crash cut short is never
    read: MindRecord's .db index names its data file, which rules out writing under another name."""
    from mindspore.mindrecord import FileWriter

    writer = FileWriter(str(path), shard_num=1, overwrite=True)
    writer.add_schema(
        {name: {"type": "int32", "shape": [-1]} for name in ("input_ids", "labels", "segment_ids")},
        "tunebox packed samples",
    )
    for start in range(0, len(ids), 4096):
        writer.write_raw_data(
            [
                {"input_ids": a.astype(np.int32), "labels": b.astype(np.int32), "segment_ids": c.astype(np.int32)}
                for a, b, c in zip(
                    ids[start : start + 4096], labels[start : start + 4096], segments[start : start + 4096]
                )
            ]
        )
    writer.commit()
