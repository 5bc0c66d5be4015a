"""Small-sample statistics for comparing runs, in plain Python (no scipy dependency).

The Student t distribution's CDF comes from the regularized incomplete beta function
(a continued fraction, Numerical Recipes §6.4); its quantile is found by bisection. That is
all a 95% t-interval and a paired t-test need, and it agrees with scipy.stats.t to ~1e-10
(tests/test_compare.py checks it against textbook values).
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95

# Metrics that are proportions (accuracies, F1, top-k, ECE): every value, and so the mean, lies
# in [0, 1], and their t-interval is clipped to it — five fold accuracies near 1.0 give a
# symmetric interval whose upper end is above 1. Losses and NLL are not bounded above: never clipped.
UNIT_INTERVAL = (0.0, 1.0)
_PROPORTION = re.compile(r"(^|_)(acc|f1|ece|top\d+)$")


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """(0, 1) for a metric known to be a proportion (test_acc, best_val_acc, test_macro_f1,
    test_balanced_acc, test_top5, test_ece, …), None for any other (losses, NLL, epochs)."""
    return UNIT_INTERVAL if _PROPORTION.search(metric) else None


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


def t_interval(values: list[float], confidence: float = CONFIDENCE,
               bounds: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """The ``confidence`` t-interval of the mean of ``values`` (None with fewer than 2),
    clipped to ``bounds`` (low, high) when given — the range every value can take."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


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
