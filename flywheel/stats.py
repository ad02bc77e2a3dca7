"""Intervals for proportions: one definition for every accuracy and error rate the platform reports
(the review queue's QA batches, the evaluation suite, the loop's per-concept before/after table).

- `wilson(k, n)`: the Wilson score interval for one proportion (Wilson 1927; method 3 of Newcombe,
  "Two-sided confidence intervals for the single proportion", Stat. Med. 17, 1998). Unlike the normal
  (Wald) interval it never leaves [0, 1] and is not zero-width at k = 0 or k = n, where the counts
  that matter most here (no errors in a QA sample, a concept always right) sit.
- `newcombe_diff(k1, n1, k2, n2)`: the difference p1 - p2 with Newcombe's hybrid score interval
  (method 10 of "Interval estimation for the difference between independent proportions", Stat. Med.
  17, 1998): it combines the two Wilson intervals, so it stays inside [-1, 1] and keeps its coverage
  near 0 and 1, where the Wald difference interval overshoots (1/3 right before, 3/3 after: +66.7 pts
  [+13.3, +120.0] by Wald, [-5.9, +93.9] by this one).

Imports nothing from flywheel: every layer may use it.
"""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (z = 1.96: 95%). n = 0 says nothing: (0.0, 1.0).
    The ends are exact: 0.0 at k = 0 and 1.0 at k = n, where the formula gives them only up to rounding."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} successes out of n={n}")
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """(p1 - p2, lo, hi): the difference of two independent proportions with Newcombe's hybrid score
    interval. With l_i, u_i the Wilson limits of p_i:
        lo = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),   hi = d + sqrt((u1 - p1)^2 + (p2 - l2)^2),
    which lies within [l1 - u2, u1 - l2], so within [-1, 1]. An empty sample (n = 0) leaves its
    proportion anywhere in [0, 1]: the difference is nan and the interval [l1 - u2, u1 - l2]."""
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    if n1 == 0 or n2 == 0:
        return math.nan, l1 - u2, u1 - l2
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    # within [l1 - u2, u1 - l2] in exact arithmetic; the clamp keeps rounding from stepping past it
    return d, max(lo, l1 - u2), min(hi, u1 - l2)
