"""tunebox/data/packing.py against hand-worked rows and an independent best-fit packer: the lengths,
the bins (best fit, ties to the bin that reached its room first), the packed rows, segment ids and
stats, and the MindRecord round trip."""

from __future__ import annotations

import numpy as np
import pytest

from tunebox.data.packing import first_fit_decreasing, pack_rows, sample_lengths, write_packed_mindrecord

PAD, IGNORE = 0, -100


def test_sample_lengths_by_hand():
    ids = np.array([[5, 6, 7, 0, 0], [0, 0, 0, 0, 0], [4, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    labels = np.array([[IGNORE, 6, 7, IGNORE, IGNORE], [IGNORE] * 5, [IGNORE, IGNORE, 0, IGNORE, IGNORE], [IGNORE] * 5])
    # row 2: its last id is at 0, but a label (0 counts: >= 0) at position 2 -> length 3
    assert sample_lengths(ids, labels, PAD).tolist() == [3, 0, 3, 5]


def test_sample_lengths_are_int64():
    """Mutant: tunebox.data.packing.x_sample_lengths__mutmut_8 (`.astype(np.int64)` -> `.astype(None)`: float64
    lengths)."""
    got = sample_lengths(np.array([[5, 0]]), np.array([[IGNORE, IGNORE]]), PAD)
    assert got.dtype == np.int64 and got.tolist() == [1]


def reference_best_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Best fit decreasing, written plainly: longest first (ties by index); each sample into the open bin
    with the least room that still fits (ties: the bin that came to that room first), else a new bin.
    A bin with no room left closes; a sample of length 0 needs room 1."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins, room, since = [], [], []
    clock = 0
    for i in order:
        need = max(lengths[i], 1)
        fitting = [b for b in range(len(bins)) if room[b] >= need and room[b] > 0]
        if fitting:
            b = min(fitting, key=lambda b: (room[b], since[b]))
        else:
            b = len(bins)
            bins.append([])
            room.append(width)
            since.append(clock)
        bins[b].append(i)
        room[b] -= lengths[i]
        clock += 1
        since[b] = clock
    return sorted((sorted(b) for b in bins), key=lambda b: b[0])


def test_best_fit_by_hand():
    assert first_fit_decreasing(np.array([], dtype=np.int64), 8) == []
    # 5, 5 and 4 open three bins (room 3, 3, 4); the 1 goes to the least room, the older of the two
    assert first_fit_decreasing(np.array([5, 5, 4, 1]), 8) == [[0, 3], [1], [2]]
    # a sample of length 0 needs a bin with room: here a new one (the 5 filled the first)
    assert first_fit_decreasing(np.array([0, 5]), 5) == [[0], [1]]
    # exactly full rows
    assert first_fit_decreasing(np.array([3, 3, 3, 3]), 6) == [[0, 1], [2, 3]]
    assert first_fit_decreasing(np.array([10]), 10) == [[0]]
    with pytest.raises(ValueError, match=r"^a sample of 11 tokens is longer than the row width 10$"):
        first_fit_decreasing(np.array([3, 11]), 10)


@pytest.mark.parametrize("seed", range(6))
def test_best_fit_matches_a_plain_implementation(seed):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(8, 40))
    lengths = rng.integers(0, width + 1, size=int(rng.integers(1, 60)))
    assert first_fit_decreasing(lengths, width) == reference_best_fit(lengths.tolist(), width)


def test_pack_rows_by_hand():
    # three samples of 3, 2 and 4 tokens in rows of 5: the 4 opens a bin (room 1), the 3 another (room 2),
    # the 2 fits only the second; rows in order of their first sample: [0, 1] full, [2] + one pad
    ids = np.array([[7, 8, 9, 0, 0], [5, 6, 0, 0, 0], [1, 2, 3, 4, 0]], dtype=np.int32)
    labels = np.array(
        [[IGNORE, 8, 9, IGNORE, IGNORE], [IGNORE, 6, IGNORE, IGNORE, IGNORE], [IGNORE, IGNORE, 3, 4, IGNORE]],
        dtype=np.int32,
    )
    pids, plabels, segs, stats = pack_rows(ids, labels, PAD)
    assert pids.tolist() == [[7, 8, 9, 5, 6], [1, 2, 3, 4, 0]]
    assert plabels.tolist() == [[IGNORE, 8, 9, IGNORE, 6], [IGNORE, IGNORE, 3, 4, IGNORE]]
    assert segs.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    assert pids.dtype == np.int32 and plabels.dtype == np.int32 and segs.dtype == np.int32
    assert stats == {
        "samples": 3,
        "rows": 2,
        "width": 5,
        "fill_before": 0.6,
        "fill_after": 0.9,
        "max_samples_per_row": 2,
    }


def test_pack_rows_keeps_the_pad_id_and_rounds_the_fill():
    ids = np.array([[3, 3, 9, 9, 9, 9, 9], [4, 9, 9, 9, 9, 9, 9], [5, 5, 5, 9, 9, 9, 9]], dtype=np.int64)
    labels = np.full_like(ids, IGNORE)
    pids, plabels, segs, stats = pack_rows(ids, labels, 9)  # pad id 9; lengths 2, 1, 3 -> one row of 6 + pad
    assert pids.tolist() == [[3, 3, 4, 5, 5, 5, 9]] and pids.dtype == np.int64
    assert (plabels == IGNORE).all() and segs.tolist() == [[1, 1, 2, 3, 3, 3, 0]]
    assert stats["fill_before"] == round(6 / 21, 4) == 0.2857 and stats["fill_after"] == round(6 / 7, 4) == 0.8571
    assert stats["max_samples_per_row"] == 3


def test_pack_rows_one_token_and_no_rows():
    """One row one token wide, holding one token: 1 of 1 position used before and after (1.0, not 0.5); no
    rows at all: no row out, max_samples_per_row 0. Mutants: tunebox.data.packing.x_pack_rows__mutmut_73, _87
    (`max(1, ...)` -> `max(2, ...)` in fill_before / fill_after), _93 (`default=0` -> `default=None`), _95
    (the default dropped: max() of nothing raises)."""
    _, _, segs, stats = pack_rows(np.array([[7]], dtype=np.int32), np.array([[IGNORE]], dtype=np.int32), PAD)
    assert segs.tolist() == [[1]]
    assert stats == {
        "samples": 1,
        "rows": 1,
        "width": 1,
        "fill_before": 1.0,
        "fill_after": 1.0,
        "max_samples_per_row": 1,
    }
    empty = np.zeros((0, 4), dtype=np.int32)
    pids, _, _, stats = pack_rows(empty, empty, PAD)
    assert pids.shape == (0, 4)
    assert stats == {
        "samples": 0,
        "rows": 0,
        "width": 4,
        "fill_before": 0.0,
        "fill_after": 0.0,
        "max_samples_per_row": 0,
    }


def test_packed_mindrecord_round_trip(tmp_path):
    from mindspore.mindrecord import FileReader

    pids = np.array([[7, 8, 9, 5, 6], [1, 2, 3, 4, 0]], dtype=np.int64)
    plabels = np.array([[IGNORE, 8, 9, IGNORE, 6], [IGNORE, IGNORE, 3, 4, IGNORE]])
    segs = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]])
    path = tmp_path / "packed.mindrecord"
    write_packed_mindrecord(path, pids, plabels, segs)
    write_packed_mindrecord(path, pids, plabels, segs)  # written afresh at every start: overwrite
    reader = FileReader(str(path))
    rows = list(reader.get_next())
    reader.close()
    assert len(rows) == 2
    for row, a, b, c in zip(rows, pids, plabels, segs):
        assert sorted(row) == ["input_ids", "labels", "segment_ids"]
        assert row["input_ids"].dtype == np.int32 and row["input_ids"].tolist() == a.tolist()
        assert row["labels"].tolist() == b.tolist() and row["segment_ids"].tolist() == c.tolist()
