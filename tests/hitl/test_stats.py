"""The statistics of the HitL table against published values, not against this code's own output."""

from __future__ import annotations

import math

import pytest

from masquerade.hitl.results import fleiss_kappa, mean_interval, wilson_interval


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Statistics in Medicine 17:857-872,
# Table I, method 3 (Wilson score interval without continuity correction).
@pytest.mark.parametrize(
    "r,n,lo,hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]
)
def test_wilson_interval_matches_newcombe_1998(r: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(r, n)
    assert got[0] == pytest.approx(lo, abs=6e-5) and got[1] == pytest.approx(hi, abs=6e-5)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] == pytest.approx(1 - 0.1611, abs=6e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_fleiss_kappa_matches_the_textbook_example() -> None:
    # 10 subjects, 14 raters, 5 categories: the worked example of Fleiss' kappa (Wikipedia, after Fleiss 1971),
    # P-bar = 0.378, P_e = 0.213, kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_by_hand() -> None:
    # perfect agreement on two categories used equally: P-bar = 1, P_e = 0.5 -> 1
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0], [0, 3]]) == pytest.approx(1.0)
    # items with 2 raters each: P = 1 and 0; p = (3/4, 1/4), P_e = 0.625 -> (0.5 - 0.625) / 0.375 = -1/3
    assert fleiss_kappa([[2, 0], [1, 1]]) == pytest.approx(-1 / 3)
    # unequal numbers of raters: an item's agreement uses its own n; items rated once are left out
    # P = (9 - 3)/6 = 1, (1 + 1 - 2)/2 = 0; p = (4/5, 1/5); P_e = 0.68 -> (0.5 - 0.68)/0.32
    assert fleiss_kappa([[3, 0], [1, 1], [0, 1]]) == pytest.approx((0.5 - 0.68) / 0.32)
    assert math.isnan(fleiss_kappa([[1, 0], [0, 1]]))  # nobody to agree with
    assert math.isnan(fleiss_kappa([[2, 0], [3, 0]]))  # one category only: chance agreement is 1


def test_mean_interval_by_hand() -> None:
    # 1..5: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> half-width 2.776445 * 1.581139 / sqrt(5) = 1.963243
    m, lo, hi = mean_interval([1, 2, 3, 4, 5])
    assert m == 3 and lo == pytest.approx(1.036757, abs=1e-6) and hi == pytest.approx(4.963243, abs=1e-6)
    assert mean_interval([4])[0] == 4 and math.isnan(mean_interval([4])[1])
