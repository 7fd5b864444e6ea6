"""Tests of her2lib.stats.calibration: simulation truths, statsmodels (1e-8), R glm fixtures (1e-8), edge cases."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as st
from scipy.optimize import brentq
from scipy.special import expit, logit

from her2lib.errors import DataError, ParameterError, UndefinedMetricWarning
from her2lib.stats import CalibrationResult, calibration

FIX = Path(__file__).parent / "fixtures"
CAL = json.loads((FIX / "calibration_reference.json").read_text())


def _underpredicting(seed: int, n: int = 4000):
    """True risk sigmoid(L), prediction sigmoid(2L), L ~ N(-1.2, 1.2): prevalence ~0.28, mean prediction ~0.21."""
    rng = np.random.default_rng(seed)
    lin = rng.normal(-1.2, 1.2, n)
    y = (rng.random(n) < expit(lin)).astype(int)
    return y, expit(2 * lin), expit(lin)


def _population_intercept() -> float:
    """Large-sample calibration intercept a* of the model above: E[sigmoid(L)] = E[sigmoid(a* + 2L)] (quadrature)."""
    g = np.linspace(-12, 12, 48001)
    w = st.norm.pdf(g, -1.2, 1.2)
    w /= w.sum()
    prev = np.sum(w * expit(g))
    return brentq(lambda a: np.sum(w * expit(a + 2 * g)) - prev, -5, 5)


# ----------------------------------------------------------------------------------------- simulation truths
def test_underpredicting_model_has_positive_intercept_not_joint_fit_intercept():
    # Reference: the population value a* = 0.678 (quadrature); the joint fit y ~ a + b logit(p) has a = 0, b = 0.5
    # exactly in the population (logit(true risk) = 0.5 * logit(p)). Mean over 20 data sets of n = 4000;
    # tolerance 0.035 on the mean (about 3 standard errors of a mean of 20 estimates with SE ~0.047).
    a_star = _population_intercept()
    assert a_star == pytest.approx(0.678, abs=0.001)
    res = [calibration(*_underpredicting(seed)[:2]) for seed in range(20)]
    ints = np.array([r.intercept for r in res])
    joint = np.array([r.slope_fit_intercept for r in res])
    slopes = np.array([r.slope for r in res])
    assert ints.mean() == pytest.approx(a_star, abs=0.035)
    assert joint.mean() == pytest.approx(0.0, abs=0.035)  # the number the old report printed as "intercept"
    assert slopes.mean() == pytest.approx(0.5, abs=0.02)
    r = res[0]
    assert 0.26 < r.observed_rate < 0.30 and 0.19 < r.mean_predicted < 0.23
    assert r.intercept_ci[0] > 0.4  # clearly under-predicting ...
    assert r.intercept_ci[0] > r.slope_fit_intercept + 0.3  # ... which the joint-fit intercept does not show


def test_calibrated_predictions_give_intercept_0_slope_1():
    # p = true risk: intercept 0 and slope 1 inside the 95% Wald CIs (n = 4000), and their coverage over 400
    # data sets of n = 500 within [0.92, 0.98] (binomial SE of the coverage ~0.011).
    y, _, p = _underpredicting(7)
    r = calibration(y, p)
    assert r.intercept_ci[0] < 0 < r.intercept_ci[1] and r.slope_ci[0] < 1 < r.slope_ci[1]
    cover_a = cover_b = 0
    reps = 400
    for seed in range(reps):
        y, _, p = _underpredicting(1000 + seed, 500)
        r = calibration(y, p)
        cover_a += r.intercept_ci[0] <= 0 <= r.intercept_ci[1]
        cover_b += r.slope_ci[0] <= 1 <= r.slope_ci[1]
    assert 0.92 <= cover_a / reps <= 0.98
    assert 0.92 <= cover_b / reps <= 0.98


# ----------------------------------------------------------------------------------------- statsmodels
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_statsmodels(seed):
    # Reference: statsmodels GLM(Binomial, offset = logit p) and Logit(y ~ 1 + logit p), fitted to tol 1e-14;
    # tolerance 1e-8 on estimates and standard errors.
    y, p, _ = _underpredicting(seed, 800)
    r = calibration(y, p)
    glm = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=logit(p)).fit(tol=1e-14)
    lg = sm.Logit(y, sm.add_constant(logit(p))).fit(disp=0, method="newton", tol=1e-14, maxiter=100)
    assert r.intercept == pytest.approx(glm.params[0], abs=1e-8)
    assert r.intercept_se == pytest.approx(glm.bse[0], abs=1e-8)
    assert r.slope_fit_intercept == pytest.approx(lg.params[0], abs=1e-8)
    assert r.slope == pytest.approx(lg.params[1], abs=1e-8)
    assert r.slope_se == pytest.approx(lg.bse[1], abs=1e-8)
    np.testing.assert_allclose(r.intercept_ci[:2], glm.conf_int()[0], atol=1e-8)
    np.testing.assert_allclose(r.slope_ci[:2], lg.conf_int()[1], atol=1e-8)


# ----------------------------------------------------------------------------------------- R fixtures
@pytest.mark.parametrize("case", CAL["cases"], ids=lambda c: c["name"])
def test_matches_r_glm_fixture(case):
    # Reference: R 4.2 glm(y ~ 1, offset = qlogis(p), binomial) and glm(y ~ qlogis(p), binomial) with
    # epsilon = 1e-14, confint.default (Wald). Tolerance 1e-8 (R's vcov uses the IRLS weights of the iterate
    # before the last update, which moves its SEs by up to ~1.4e-9 here; statsmodels agrees with us to 1e-15).
    r = calibration(case["y"], case["p"])
    assert r.intercept == pytest.approx(case["intercept"], abs=1e-8)
    assert r.intercept_se == pytest.approx(case["intercept_se"], abs=1e-8)
    np.testing.assert_allclose(r.intercept_ci[:2], case["intercept_ci"], atol=1e-8)
    assert r.slope == pytest.approx(case["slope"], abs=1e-8)
    assert r.slope_se == pytest.approx(case["slope_se"], abs=1e-8)
    assert r.slope_fit_intercept == pytest.approx(case["slope_fit_intercept"], abs=1e-8)
    np.testing.assert_allclose(r.slope_ci[:2], case["slope_ci"], atol=1e-8)
    assert r.brier == pytest.approx(case["brier"], abs=1e-12)


def test_fixture_versions():
    assert CAL["versions"]["R"].startswith("R version 4.2")


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_live_against_r(tmp_path):
    y, p, _ = _underpredicting(42, 300)
    p = np.round(p, 6)
    np.savetxt(tmp_path / "d.csv", np.c_[y, p], delimiter=",", header="y,p", comments="", fmt=["%d", "%.6f"])
    script = (
        f"d<-read.csv('{tmp_path / 'd.csv'}');lp<-qlogis(d$p);ctl<-glm.control(epsilon=1e-14,maxit=100);"
        "f0<-glm(d$y~1,offset=lp,family=binomial,control=ctl);f1<-glm(d$y~lp,family=binomial,control=ctl);"
        "v<-c(coef(f0),sqrt(vcov(f0)[1,1]),coef(f1),sqrt(vcov(f1)[2,2]));cat(sprintf('%.17g',v),sep='\\n')"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=120, check=True).stdout
    ref = np.array(out.split(), float)
    r = calibration(y, p)
    ours = [r.intercept, r.intercept_se, r.slope_fit_intercept, r.slope, r.slope_se]
    np.testing.assert_allclose(ours, ref, atol=1e-8, rtol=0)


# ----------------------------------------------------------------------------------------- edge cases
def test_brier_and_rates():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.2, 0.7, 0.4, 0.5, 0.9])
    r = calibration(y, p)
    assert r.brier == pytest.approx(np.mean((p - y) ** 2), abs=1e-15)
    assert r.brier_reference == pytest.approx(0.6 * 0.4) and r.observed_rate == 0.6
    assert r.mean_predicted == pytest.approx(p.mean()) and (r.n, r.n_pos) == (5, 3)
    assert isinstance(r, CalibrationResult)
    row = r.to_row()
    assert {
        "intercept",
        "intercept_ci_low",
        "intercept_ci_high",
        "slope",
        "slope_ci_low",
        "slope_ci_high",
        "ci_level",
        "brier",
        "brier_reference",
        "method",
        "n",
        "n_pos",
    } <= set(row)
    assert "Van Calster" in r.method and "Wald" in r.method and "observed information" in r.method


def test_single_class_warns_nan():
    with pytest.warns(UndefinedMetricWarning, match="single class"):
        r = calibration([1, 1, 1], [0.2, 0.5, 0.9])
    assert np.isnan(r.intercept) and np.isnan(r.slope) and np.isnan(r.intercept_ci[0])
    assert r.brier == pytest.approx(np.mean((np.array([0.2, 0.5, 0.9]) - 1) ** 2))


def test_separation_gives_nan_slope_with_warning_but_finite_intercept():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])  # complete separation
    with pytest.warns(UndefinedMetricWarning, match="separate the classes"):
        r = calibration(y, p)
    assert np.isnan(r.slope) and np.isnan(r.slope_ci[0]) and np.isnan(r.slope_fit_intercept)
    assert np.isfinite(r.intercept) and np.isfinite(r.intercept_se)
    # quasi-complete: one tie at the boundary
    with pytest.warns(UndefinedMetricWarning, match="separate"):
        assert np.isnan(calibration([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]).slope)
    # brute force: the log-likelihood keeps rising along b -> inf (cut between logit 0.3 and logit 0.6), so no
    # finite maximum exists
    x = logit(p)
    cut = (logit(0.3) + logit(0.6)) / 2
    ll = [np.sum(y * eta - np.logaddexp(0, eta)) for eta in (b * (x - cut) for b in (1, 10, 100, 1000))]
    assert np.all(np.diff(ll) > 0) and ll[-1] > -1e-6


def test_constant_predictions_nan_slope():
    with pytest.warns(UndefinedMetricWarning, match="all predictions are equal"):
        r = calibration([0, 1, 0, 1, 1], [0.3] * 5)
    assert np.isnan(r.slope)
    # intercept = logit(0.6) - logit(0.3) exactly (closed form with a constant offset)
    assert r.intercept == pytest.approx(logit(0.6) - logit(0.3), abs=1e-10)


def test_probabilities_0_and_1_are_clipped():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.0, 0.3, 0.6, 1.0, 0.55, 0.4])
    r = calibration(y, p, eps=1e-6)
    assert r.n_clipped == 2 and np.isfinite(r.intercept) and np.isfinite(r.slope)
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    lg = sm.Logit(y, sm.add_constant(logit(pc))).fit(disp=0, method="newton", tol=1e-14, maxiter=100)
    assert r.slope == pytest.approx(lg.params[1], abs=1e-8)


def test_validation():
    with pytest.raises(DataError, match="0/1 labels"):
        calibration([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match=r"in \[0, 1\]; saw 1 value"):
        calibration([0, 1], [0.1, 1.2])
    with pytest.raises(DataError, match="has 1 values but y_true has 2"):
        calibration([0, 1], [0.1])
    with pytest.raises(DataError, match="non-finite"):
        calibration([0, 1], [0.1, np.nan])
    with pytest.raises(ParameterError, match="eps"):
        calibration([0, 1], [0.1, 0.2], eps=0.7)
    with pytest.raises(ParameterError, match="level"):
        calibration([0, 1], [0.1, 0.2], level=95)
