"""Tests of her2lib.stats.roc against pROC 1.18 (fixtures and live R), brute force, MedCalc and invariances."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from her2lib.errors import DataError, ParameterError, UndefinedMetricWarning
from her2lib.stats import DeLongResult, auc, auc_ci, binary_metrics, delong_placements, delong_test, youden_threshold

FIX = Path(__file__).parent / "fixtures"
PROC = json.loads((FIX / "proc_reference.json").read_text())
TOL = 1e-7


# ----------------------------------------------------------------------------------------- pROC fixtures
@pytest.mark.parametrize("case", PROC["cases"], ids=lambda c: c["name"])
def test_matches_proc_fixtures(case):
    y, a, b = (np.asarray(case[k], float) for k in ("y", "a", "b"))
    r = delong_test(y, a, b)
    assert r.auc_a == pytest.approx(case["auc_a"], abs=TOL)
    assert r.auc_b == pytest.approx(case["auc_b"], abs=TOL)
    assert auc(y, a) == pytest.approx(case["auc_a"], abs=TOL)
    assert r.var_a == pytest.approx(case["var_a"], abs=TOL)
    assert r.var_b == pytest.approx(case["var_b"], abs=TOL)
    assert r.cov_ab == pytest.approx(case["cov_ab"], abs=TOL)
    assert r.z == pytest.approx(case["z"], abs=TOL)
    assert r.pvalue == pytest.approx(case["p"], abs=TOL)
    np.testing.assert_allclose(r.diff_ci[:2], case["diff_ci"], atol=TOL)
    np.testing.assert_allclose(auc_ci(y, a).ci[:2], case["ci_a"], atol=TOL)
    np.testing.assert_allclose(auc_ci(y, b).ci[:2], case["ci_b"], atol=TOL)


def test_fixture_versions():
    assert PROC["versions"]["pROC"] == "1.18.0"


def test_identical_scores_give_z0_p1():
    case = next(c for c in PROC["cases"] if c["name"] == "identical_scores")
    r = delong_test(case["y"], case["a"], case["a"])
    assert r.z == 0.0 and r.pvalue == 1.0 and r.sd_diff == 0.0 and r.diff_ci[:2] == (0.0, 0.0)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_live_against_proc(tmp_path):
    rng = np.random.default_rng(98765)
    n = 157
    y = (rng.random(n) < 0.27).astype(int)
    a = np.round(rng.normal(0.8 * y, 1.0), 1)  # ties
    b = np.round(0.5 * a + rng.normal(0.5 * y, 1.0), 1)
    np.savetxt(tmp_path / "d.csv", np.c_[y, a, b], delimiter=",", header="y,a,b", comments="", fmt="%.1f")
    script = (
        "suppressPackageStartupMessages(library(pROC));"
        f"d<-read.csv('{tmp_path / 'd.csv'}');"
        "r1<-roc(d$y,d$a,levels=c(0,1),direction='<',quiet=TRUE);r2<-roc(d$y,d$b,levels=c(0,1),direction='<',quiet=TRUE);"
        "t<-roc.test(r1,r2,method='delong',paired=TRUE);"
        "v<-c(auc(r1),auc(r2),var(r1),var(r2),cov(r1,r2),t$statistic,t$p.value,t$conf.int,ci.auc(r1,method='delong')[c(1,3)]);"
        "cat(sprintf('%.17g',v),sep='\\n')"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=120, check=True).stdout
    ref = np.array(out.split(), float)
    r = delong_test(y, a, b)
    ours = np.array([r.auc_a, r.auc_b, r.var_a, r.var_b, r.cov_ab, r.z, r.pvalue, *r.diff_ci[:2], *auc_ci(y, a).ci[:2]])
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------------------- brute force
def _brute(y, s):
    x, v = s[y == 1], s[y == 0]
    psi = (x[:, None] > v[None, :]) + 0.5 * (x[:, None] == v[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def _brute_delong(y, a, b):
    ta, xa, ya = _brute(y, a)
    tb, xb, yb = _brute(y, b)
    s10 = np.cov(np.vstack([xa, xb]))
    s01 = np.cov(np.vstack([ya, yb]))
    S = s10 / len(xa) + s01 / len(ya)
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    z = (ta - tb) / np.sqrt(var)
    return ta, tb, S, z, 2 * st.norm.sf(abs(z))


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_all_pairs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 60))
    y = (rng.random(n) < rng.uniform(0.15, 0.6)).astype(int)
    y[:2], y[2:4] = 1, 0
    a = rng.integers(0, 6, n) + y  # heavy ties
    b = np.round(rng.normal(0.5 * y, 1), 1)
    ta, tb, S, z, p = _brute_delong(y, a.astype(float), b)
    r = delong_test(y, a, b)
    assert (r.auc_a, r.auc_b) == pytest.approx((ta, tb), abs=1e-12)
    assert (r.var_a, r.var_b, r.cov_ab) == pytest.approx((S[0, 0], S[1, 1], S[0, 1]), abs=1e-12)
    assert r.z == pytest.approx(z, abs=1e-9) and r.pvalue == pytest.approx(p, abs=1e-12)
    theta, v10, v01 = delong_placements(y, a)
    _, bx, by = _brute(y, a.astype(float))
    np.testing.assert_allclose(v10, bx, atol=1e-12)
    np.testing.assert_allclose(v01, by, atol=1e-12)


# ----------------------------------------------------------------------------------------- invariances
def _data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    a = np.round(rng.normal(y, 1), 1)
    b = np.round(rng.normal(0.6 * y, 1), 1)
    return y, a, b


def test_invariant_to_monotone_transform_and_permutation():
    y, a, b = _data()
    r = delong_test(y, a, b)
    r2 = delong_test(y, np.exp(a) * 3 + 1, st.norm.cdf(b))
    assert r2.z == pytest.approx(r.z, abs=1e-12) and r2.var_a == pytest.approx(r.var_a, abs=1e-15)
    perm = np.random.default_rng(1).permutation(len(y))
    r3 = delong_test(y[perm], a[perm], b[perm])
    assert r3.pvalue == pytest.approx(r.pvalue, abs=1e-12)


def test_swap_scores_negates_z_and_label_flip():
    y, a, b = _data(2)
    r, s = delong_test(y, a, b), delong_test(y, b, a)
    assert s.z == pytest.approx(-r.z) and s.pvalue == pytest.approx(r.pvalue)
    assert s.diff_ci[0] == pytest.approx(-r.diff_ci[1])
    assert auc(1 - y, -a) == pytest.approx(auc(y, a), abs=1e-12)
    assert auc(y, -a) == pytest.approx(1 - auc(y, a), abs=1e-12)  # never flipped


def test_delong_result_to_row():
    y, a, b = _data(3)
    row = delong_test(y, a, b).to_row()
    assert {
        "auc_a",
        "auc_b",
        "diff",
        "diff_ci_low",
        "diff_ci_high",
        "diff_ci_level",
        "z",
        "pvalue",
        "method",
        "n_pos",
        "n_neg",
    } <= set(row)
    assert isinstance(delong_test(y, a, b), DeLongResult)


def test_delong_scales_to_1e5_quickly():
    rng = np.random.default_rng(0)
    n = 100_000
    y = (rng.random(n) < 0.3).astype(int)
    a, b = rng.normal(y, 1), rng.normal(0.8 * y, 1)
    r = delong_test(y, a, b)
    assert 0.7 < r.auc_a < 0.8 and r.pvalue < 1e-10


# ----------------------------------------------------------------------------------------- validation
def test_validation_messages():
    with pytest.raises(DataError, match="0/1 labels"):
        auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="has 2 values but y_true has 3"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="non-finite"):
        auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(DataError, match="at least 2 HER2-positive"):
        delong_test([0, 0, 1], [1, 2, 3], [3, 2, 1])
    with pytest.raises(ParameterError, match="Did you mean 'exact-binomial'"):
        auc_ci([0, 1], [0, 1], method="exact_binomial")
    with pytest.raises(ParameterError, match="level"):
        auc_ci([0, 1], [0, 1], level=95)


def test_single_class_warns_and_returns_nan():
    with pytest.warns(UndefinedMetricWarning, match="single class"):
        assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(auc_ci([0, 0], [0.1, 0.2]).ci[0])


# ----------------------------------------------------------------------------------------- AUC intervals
def _scores_with_auc(n_pos: int, n_neg: int, k: int):
    """Scores whose AUC is exactly k / (n_pos * n_neg): positive i outranks c_i controls, sum c_i = k."""
    c = np.full(n_pos, k // n_pos)
    c[: k % n_pos] += 1
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    return y, np.r_[c - 0.5, np.arange(n_neg, dtype=float)]


@pytest.mark.parametrize("k, printed", [(464, (0.708, 0.931)), (441, (0.660, 0.902)), (495, (0.777, 0.967))])
def test_exact_binomial_reproduces_paper(k, printed):
    # paper, test cohort 19 positive / 29 negative: DL-US 0.842 (0.708-0.931), DL-MRI 0.800 (0.660-0.902),
    # DL-MRI&US 0.898 (0.777-0.967) (MedCalc)
    y, s = _scores_with_auc(19, 29, k)
    r = auc_ci(y, s, method="exact-binomial")
    assert r.auc == pytest.approx(k / 551, abs=1e-12)
    assert (round(r.ci[0], 3), round(r.ci[1], 3)) == printed
    assert r.to_row()["method"] == "exact-binomial"


def test_exact_binomial_edges():
    r = auc_ci([0, 0, 1, 1], [0, 1, 2, 3], method="exact-binomial")
    assert r.auc == 1.0 and r.ci[1] == 1.0 and 0 < r.ci[0] < 1


def test_bootstrap_seeded_and_reasonable():
    y, a, _ = _data(5, 150)
    r1 = auc_ci(y, a, method="bootstrap", seed=7)
    r2 = auc_ci(y, a, method="bootstrap", seed=7)
    d = auc_ci(y, a, method="delong")
    assert r1 == r2
    assert r1.ci[0] < r1.auc < r1.ci[1]
    assert r1.ci[0] == pytest.approx(d.ci[0], abs=0.03) and r1.ci[1] == pytest.approx(d.ci[1], abs=0.03)
    assert auc_ci(y, a, method="bootstrap", seed=8).ci != r1.ci


def test_delong_ci_perfect_separation():
    r = auc_ci([0, 0, 0, 1, 1], [1, 2, 3, 4, 5])
    assert r.auc == 1.0 and r.ci[:2] == (1.0, 1.0)


# ----------------------------------------------------------------------------------------- threshold metrics
def test_binary_metrics_counts_and_exact_cis():
    # paper-like: 19 positive, 29 negative; 17 TP, 6 FP
    y = np.r_[np.ones(19), np.zeros(29)]
    s = np.r_[np.full(17, 0.9), np.full(2, 0.1), np.full(6, 0.8), np.full(23, 0.2)]
    m = binary_metrics(y, s, threshold=0.5)
    assert (m.tp, m.fn, m.fp, m.tn) == (17, 2, 6, 23)
    assert m.sensitivity.value == pytest.approx(17 / 19)
    assert m.specificity.value == pytest.approx(23 / 29)
    assert m.ppv.value == pytest.approx(17 / 23) and m.npv.value == pytest.approx(23 / 25)
    assert m.accuracy.value == pytest.approx(40 / 48)
    assert m.f1.value == pytest.approx(34 / 42)
    lo, hi = st.binomtest(17, 19).proportion_ci(method="exact")
    assert m.sensitivity.ci[:2] == pytest.approx((lo, hi), abs=1e-10)
    assert m.f1.ci[0] < m.f1.value < m.f1.ci[1]
    row = m.to_row()
    assert row["ppv"] == pytest.approx(17 / 23) and "f1_ci_low" in row


def test_binary_metrics_threshold_rule_is_inclusive():
    with pytest.warns(UndefinedMetricWarning, match="NPV"):  # nobody is called negative
        m = binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert (m.tp, m.fp) == (1, 1)


def test_binary_metrics_undefined_ppv_warns():
    with pytest.warns(UndefinedMetricWarning, match="PPV"):
        m = binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert np.isnan(m.ppv.value) and m.npv.value == pytest.approx(1 / 3)


def test_youden_threshold():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8])
    t = youden_threshold(y, s)
    # best J = 0.75 at s>=0.35 (sens 1, spec 0.75) or s>=0.6 (sens .75, spec 1): tie -> higher sensitivity
    assert t == pytest.approx(0.325)
    m = binary_metrics(y, s, t)
    assert m.sensitivity.value + m.specificity.value - 1 == pytest.approx(0.75)
    # brute force over all candidate cut points
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(int)
    s = np.round(rng.normal(y, 1), 1)
    t = youden_threshold(y, s)
    u = np.unique(s)
    js = [
        ((s >= c) & (y == 1)).sum() / y.sum() + ((s < c) & (y == 0)).sum() / (1 - y).sum() - 1
        for c in np.r_[-np.inf, (u[:-1] + u[1:]) / 2, np.inf]
    ]
    pred = s >= t
    assert (pred & (y == 1)).sum() / y.sum() + (~pred & (y == 0)).sum() / (1 - y).sum() - 1 == pytest.approx(max(js))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # all scores equal: only -inf and +inf (J = 0) are candidates, as pROC; the first (-inf) is returned
        # (was 0.3 before pROC's +-inf candidates were added; same calls, since everyone is positive either way)
        assert youden_threshold([0, 1], [0.3, 0.3]) == -np.inf
