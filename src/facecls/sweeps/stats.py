"""Small-sample statistics for comparing runs, in plain Python (no scipy dependency).

The Student t distribution's CDF comes from the regularized incomplete beta function
(a continued fraction, Numerical Recipes §6.4); its quantile is found by bisection. That is
all a 95% t-interval and a paired t-test need, and it agrees with scipy.stats.t to ~1e-10
(tests/test_compare.py checks it against textbook values).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t: t_{0.975, df} for a 95% interval."""
    target = 2.0 * (1.0 - probability)  # the two-sided tail beyond the quantile
    low, high = 0.0, 1e7
    for _ in range(200):
        mid = (low + high) / 2.0
        low, high = (mid, high) if t_two_sided_p(mid, df) > target else (low, mid)
    return (low + high) / 2.0


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The ``confidence`` t-interval of the mean of ``values`` (None with fewer than 2)."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


@dataclass
class Paired:
    """A paired comparison: ``other − reference`` over runs that share seed and fold."""

    n: int
    mean: float | None                      # mean difference
    interval: tuple[float, float] | None    # its 95% t-interval (n >= 2)
    p_value: float | None                   # two-sided paired t-test

    @property
    def verdict(self) -> str:
        if self.n == 0:
            return "no shared runs"
        if self.interval is None:
            return "too few pairs"
        low, high = self.interval
        if low <= 0.0 <= high:
            return "within noise"
        return "higher" if self.mean > 0 else "lower"


def paired(reference: list[float], other: list[float], confidence: float = CONFIDENCE) -> Paired:
    """Paired t-test of ``other[i] − reference[i]`` (lists of the same length, pair by pair)."""
    diffs = [o - r for r, o in zip(reference, other)]
    n = len(diffs)
    if n == 0:
        return Paired(0, None, None, None)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(1, mean, None, None)
    std = statistics.stdev(diffs)
    if std == 0.0:  # every pair differs by the same amount: no spread to test against
        return Paired(n, mean, (mean, mean), 1.0 if mean == 0.0 else 0.0)
    t = mean / (std / math.sqrt(n))
    return Paired(n, mean, t_interval(diffs, confidence), t_two_sided_p(t, n - 1))
