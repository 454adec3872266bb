"""Wilson intervals against values published elsewhere, not recomputed with the same formula.

Reference values: Newcombe (1998), "Two-sided confidence intervals for the single proportion:
comparison of seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (score method
without continuity correction): 81/263 -> 0.2553-0.3662, 15/148 -> 0.0624-0.1605, 0/20 -> 0-0.1611,
1/29 -> 0.0061-0.1718. Mutants this kills: centre without the z^2/2n shift, half-width without the
z^2/4n^2 term, no clamp to [0, 1], z of 2 instead of 1.96.
"""

import pytest

from tunebox.evaluation.intervals import wilson_interval


@pytest.mark.parametrize(
    "k,n,low,high",
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_table(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=6e-5) and hi == pytest.approx(high, abs=6e-5)


def test_all_successes_and_empty_and_bad_counts():
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.1611, abs=6e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
