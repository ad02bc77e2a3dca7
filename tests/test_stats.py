"""flywheel.stats against the published values of Newcombe's two 1998 papers (Stat. Med. 17: 857-872,
single proportion, method 3; 873-890, difference of proportions, method 10), and at the boundaries."""

from __future__ import annotations

import math

import pytest

from flywheel.stats import newcombe_diff, wilson


@pytest.mark.parametrize("k, n, lo, hi", [
    (81, 263, 0.2553, 0.3662),  # Newcombe's single-proportion examples, method 3 (Wilson, no correction)
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombes_table(k, n, lo, hi):
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_is_exact_at_the_ends_and_says_nothing_without_samples():
    for n in (1, 7, 20, 263, 10_000):
        lo0, hi0 = wilson(0, n)
        lon, hin = wilson(n, n)
        assert lo0 == 0.0 and hin == 1.0  # exactly, not 1e-17 or 0.9999999999999999
        assert 0.0 < hi0 < 1.0 and 0.0 < lon < 1.0
        assert lon == pytest.approx(1 - hi0)  # symmetric: k successes as n - k failures
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(21, 20)


@pytest.mark.parametrize("k1, n1, k2, n2, d, lo, hi", [
    (56, 70, 48, 80, 0.2000, 0.0524, 0.3339),  # Newcombe (1998), difference examples (a), (b), (d), (f), (h)
    (9, 10, 3, 10, 0.6000, 0.1705, 0.8090),
    (5, 56, 0, 29, 0.0893, -0.0381, 0.1926),
    (0, 10, 0, 10, 0.0, -0.2775, 0.2775),
    (10, 10, 0, 10, 1.0, 0.6075, 1.0),
])
def test_newcombe_diff_matches_the_published_examples(k1, n1, k2, n2, d, lo, hi):
    assert newcombe_diff(k1, n1, k2, n2) == pytest.approx((d, lo, hi), abs=6e-5)


def test_newcombe_diff_stays_within_minus_one_one():
    """The Wald difference interval reports 10/10 vs 0/10 as +100 pts [+100, +100] and 2/3 vs 0/3 past
    +100; the hybrid score interval never leaves [-1, 1], and swapping the groups mirrors it."""
    d, lo, hi = newcombe_diff(10, 10, 0, 10)
    assert d == 1.0 and hi == 1.0 and 0 < lo < 1
    assert newcombe_diff(0, 10, 10, 10) == pytest.approx((-1.0, -1.0, -lo))
    for k1, n1, k2, n2 in [(2, 3, 0, 3), (3, 3, 0, 1), (0, 1, 1, 1), (1, 2, 1, 2), (0, 5, 5, 5)]:
        d, lo, hi = newcombe_diff(k1, n1, k2, n2)
        assert -1.0 <= lo <= d <= hi <= 1.0, (k1, n1, k2, n2, lo, hi)
    d, lo, hi = newcombe_diff(2, 3, 0, 0)  # one side unmeasured: its proportion may be anything
    assert math.isnan(d) and (lo, hi) == pytest.approx((wilson(2, 3)[0] - 1.0, wilson(2, 3)[1]))
