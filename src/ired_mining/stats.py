"""Statistics over seeds for the report: relative change of a strategy's MSE against the baseline,
with a 95 % interval, and the verdict on the study's success criterion.

Two intervals, both over seeds (the unit of replication; evaluation sets are shared by all runs):
- Welch's t on log MSE (the primary one, used by the verdict). MSE is positive and effects on it are
  multiplicative, so the difference of mean logs is the log of a ratio (of geometric means); Welch's
  t does not assume equal spread, and its t quantile widens the interval honestly when there are
  only 3–5 seeds.
- A percentile bootstrap of the ratio of arithmetic means, seeded. It makes no normality assumption,
  but with a handful of seeds a bootstrap interval is too narrow (it cannot see spread the few seeds
  did not show), so it is reported beside Welch's, never alone.

The t quantile comes from mpmath's regularised incomplete beta function (an exact special function,
already installed as a dependency of torch through sympy), because Welch's degrees of freedom are
not integers and numpy has no t distribution.

A grid compares many configurations with the same baseline, so some would look better by chance.
Two corrections, each for its own question (family: every configuration's comparison with the
baseline on one split):
- Holm's step-down adjustment of the Welch tests' two-sided p-values (H0: no change), for "which
  configurations differ from the baseline at all". It controls the family-wise error rate under any
  dependence between the tests (they share the baseline's seeds) and rejects everything Bonferroni
  rejects, and sometimes more.
- Bonferroni simultaneous intervals (each at level 1 − α/m), for the criterion, which is a statement
  about the size of a change (≥ 20 % lower), not about its existence. All m intervals cover their
  true changes together with probability ≥ 1 − α, so the interval of the configuration that looks
  best still covers after it was picked by looking at the data. Holm has no matching intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np


@dataclass(frozen=True)
class Interval:
    """A relative change (−0.25 = 25 % lower than the baseline) and its confidence interval."""

    point: float
    lo: float
    hi: float
    method: str
    df: float = math.nan  # Welch's degrees of freedom (nan for the bootstrap)

    @property
    def defined(self) -> bool:
        return all(math.isfinite(v) for v in (self.point, self.lo, self.hi))


UNDEFINED = Interval(math.nan, math.nan, math.nan, "undefined")


# ---------------------------------------------------------------- the t distribution


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with `df` degrees of freedom (df may be fractional)."""
    with mpmath.workdps(30):  # headroom so the float64 result is correctly rounded
        x = mpmath.mpf(df) / (df + mpmath.mpf(t) ** 2)
        tail = mpmath.betainc(mpmath.mpf(df) / 2, 0.5, 0, x, regularized=True) / 2
        return float(1 - tail) if t >= 0 else float(tail)


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t, by root-finding on the exact CDF."""
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:  # bracket the root; heavy tails at small df need a wide bracket
        lo, hi = hi, hi * 2
    # Bisection on the exact CDF: slow by numerical standards (~0.1 s) but cannot fail to converge.
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):  # adjacent doubles: as close as float64 gets
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


# ---------------------------------------------------------------- relative change vs the baseline


def _clean(values) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)


def welch_relative_change(treatment, baseline, level: float = 0.95) -> Interval:
    """exp(mean log treatment − mean log baseline) − 1 with Welch's t interval on the log scale.

    Needs ≥ 2 positive values per group; otherwise the interval is undefined.
    """
    a, b = _clean(treatment), _clean(baseline)
    if len(a) < 2 or len(b) < 2 or (a <= 0).any() or (b <= 0).any():
        return UNDEFINED
    la, lb = np.log(a), np.log(b)
    diff = la.mean() - lb.mean()
    va, vb = la.var(ddof=1) / len(a), lb.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # every seed gave the same number: nothing to be uncertain about
        return Interval(math.expm1(diff), math.expm1(diff), math.expm1(diff), "welch-log", math.inf)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return Interval(math.expm1(diff), math.expm1(diff - half), math.expm1(diff + half), "welch-log", df)


def welch_p_value(treatment, baseline) -> float:
    """Two-sided p-value of Welch's t test of equal mean log MSE (the test behind
    welch_relative_change's interval: p < 1 − level exactly when that interval excludes 0)."""
    a, b = _clean(treatment), _clean(baseline)
    if len(a) < 2 or len(b) < 2 or (a <= 0).any() or (b <= 0).any():
        return math.nan
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / len(a), lb.var(ddof=1) / len(b)
    diff = la.mean() - lb.mean()
    if va + vb == 0:
        return 1.0 if diff == 0 else 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return min(1.0, 2 * (1 - t_cdf(abs(diff) / math.sqrt(va + vb), df)))


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the k-th smallest of m is multiplied by
    m − k + 1, and the running maximum keeps the adjusted values in the order of the raw ones.
    A hypothesis is rejected at family-wise level α exactly when its adjusted p ≤ α. NaN (an
    undefined test) stays NaN and does not count towards m."""
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m, out, running = len(order), [math.nan] * len(p_values), 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def bonferroni_level(m: int, level: float = 0.95) -> float:
    """The level of each of m simultaneous intervals whose joint coverage is at least `level`."""
    return 1 - (1 - level) / max(m, 1)


def bootstrap_relative_change(
    treatment, baseline, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """mean(treatment) / mean(baseline) − 1 with a percentile bootstrap interval, each group
    resampled over its own seeds with replacement. Seeded, so a report is reproducible."""
    a, b = _clean(treatment), _clean(baseline)
    if len(a) < 1 or len(b) < 1 or b.mean() <= 0:
        return UNDEFINED
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, len(a), (resamples, len(a)))].mean(axis=1)
    mb = b[rng.integers(0, len(b), (resamples, len(b)))].mean(axis=1)
    ratios = ma / mb - 1
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(a.mean() / b.mean() - 1), float(lo), float(hi), "bootstrap")


# ---------------------------------------------------------------- the verdict

CLEARS, FALLS_SHORT, INCONCLUSIVE = "clears", "does not clear", "inconclusive"


def verdict(change: Interval, threshold: float = -0.20) -> str:
    """Whether a whole interval lies at or beyond the criterion (`threshold` = −0.20: ≥ 20 % lower).

    clears: even the interval's least favourable end is ≥ 20 % lower; does not clear: even its most
    favourable end is less than 20 % lower; inconclusive: the interval straddles the criterion
    (or could not be computed).
    """
    if not change.defined:
        return INCONCLUSIVE
    if change.hi <= threshold:
        return CLEARS
    if change.lo > threshold:
        return FALLS_SHORT
    return INCONCLUSIVE


def mean_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval for the mean of the finite values (seeds as independent draws):
    mean ∓ t_{(1+level)/2, n−1} · s/√n; (nan, nan) for fewer than two values."""
    v = _clean(values)
    if len(v) < 2:
        return math.nan, math.nan
    half = t_quantile(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; nan for one value) and count of the finite values."""
    v = _clean(values)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)
