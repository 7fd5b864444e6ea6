"""Tests of the F1 interval of her2lib.stats.binary_metrics (mid-P confidence distributions of sensitivity and
false-positive rate): no collapse at FP = 0 / sensitivity = 1, exact and simulated coverage, determinism."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy import stats as st

from her2lib.stats import binary_metrics
from her2lib.stats.roc import _midp_draws


def _data(tp: int, fn: int, fp: int, tn: int):
    """Labels and scores giving exactly these counts at threshold 0.5."""
    y = np.r_[np.ones(tp + fn), np.zeros(fp + tn)]
    s = np.r_[np.full(tp, 0.9), np.full(fn, 0.1), np.full(fp, 0.9), np.full(tn, 0.1)]
    return y, s


@cache
def _f1_ci(tp: int, fp: int, m: int, n: int) -> tuple[float, float]:
    """The public function's F1 interval for these counts (seed 0, 2000 draws), cached per (TP, FP)."""
    y, s = _data(tp, m - tp, fp, n - fp)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return binary_metrics(y, s, 0.5).f1.ci[:2]


def _f1(sens, fpr, m, n):
    return 2 * m * sens / (2 * m * sens + n * fpr + m * (1 - sens))


def test_no_collapse_when_perfect():
    # FP = 0 and sensitivity = 1 (F1 = 1): the old binomial redraw (and a patient bootstrap at the fixed
    # threshold) gives the zero-width interval (1, 1).
    m = binary_metrics(*_data(19, 0, 0, 29), 0.5)
    assert m.f1.value == 1.0
    lo, hi, lev = m.f1.ci
    assert hi == 1.0 and lo < 0.97 and lev == 0.95


@pytest.mark.parametrize("counts", [(17, 2, 0, 29), (19, 0, 6, 23), (3, 0, 0, 5)])
def test_nonzero_width_at_fp0_or_sens1(counts):
    m = binary_metrics(*_data(*counts), 0.5)
    lo, hi, _ = m.f1.ci
    assert hi - lo > 0.02 and lo <= m.f1.value <= hi
    assert "mid-P" in m.f1.method and "seed 0" in m.f1.method


def test_seeded_and_deterministic():
    y, s = _data(15, 4, 5, 24)
    a = binary_metrics(y, s, 0.5, seed=3).f1
    b = binary_metrics(y, s, 0.5, seed=3).f1
    c = binary_metrics(y, s, 0.5, seed=4).f1
    assert a == b and a.ci != c.ci
    assert abs(a.ci[0] - c.ci[0]) < 0.02 and abs(a.ci[1] - c.ci[1]) < 0.02  # Monte Carlo error only


def test_midp_draws_follow_the_midp_pvalue_function():
    # Reference: the mid-P P-value function P(X > k) + P(X = k) / 2 (scipy binom) is the CDF of the draws;
    # tolerance 0.005 on the empirical CDF of 200 000 draws (its SE is <= 0.0012).
    rng = np.random.default_rng(0)
    for k, size in [(3, 10), (0, 12), (19, 19)]:
        d = _midp_draws(k, size, 200_000, rng)
        for p0 in (0.05, 0.2, 0.5, 0.9, 0.97):
            ref = st.binom.sf(k, size, p0) + 0.5 * st.binom.pmf(k, size, p0)
            assert np.mean(d <= p0) == pytest.approx(ref, abs=0.005)


SETTINGS = [
    (0.84, 0.79, 19, 29),  # the paper's DL-US on its test set
    (0.99, 0.99, 19, 29),  # near perfect: the old interval covered 38%
    (1.00, 0.97, 19, 29),
    (0.95, 1.00, 19, 29),
    (0.80, 0.90, 50, 99),
    (0.99, 1.00, 5, 8),
]


@pytest.mark.parametrize("sens, spec, m, n", SETTINGS)
def test_exact_coverage(sens, spec, m, n):
    # Reference: exact coverage = sum over all (TP, FP) of Binomial(m, sens) x Binomial(n, 1 - spec) probability
    # times [true F1 in the interval]; outcomes of probability < 1e-9 skipped. Band: [0.92, 0.99] for 95%
    # (over a grid of 80 settings, 5/8 to 150/300 patients, sens/spec 0.5-1: 0.92-0.99, mean 0.958).
    true = _f1(sens, 1 - spec, m, n)
    ptp = st.binom.pmf(np.arange(m + 1), m, sens)
    pfp = st.binom.pmf(np.arange(n + 1), n, 1 - spec)
    cover = 0.0
    for tp in range(m + 1):
        for fp in range(n + 1):
            w = ptp[tp] * pfp[fp]
            if w < 1e-9:
                continue
            lo, hi = _f1_ci(tp, fp, m, n)
            cover += w * (lo <= true <= hi)
    assert 0.92 <= cover <= 0.99


@pytest.mark.parametrize("sens, spec", [(0.84, 0.79), (0.99, 0.99)])
def test_simulated_coverage(sens, spec):
    # 1000 simulated test sets of 19 positives / 29 negatives (seeded); coverage in [0.92, 0.98]
    # (binomial SE of a simulated coverage of 0.95 with 1000 replicates: 0.007).
    m, n = 19, 29
    rng = np.random.default_rng(2025)
    tps = rng.binomial(m, sens, 1000)
    fps = rng.binomial(n, 1 - spec, 1000)
    true = _f1(sens, 1 - spec, m, n)
    hits = [(lambda ci: ci[0] <= true <= ci[1])(_f1_ci(int(tp), int(fp), m, n)) for tp, fp in zip(tps, fps)]
    assert 0.92 <= np.mean(hits) <= 0.98
