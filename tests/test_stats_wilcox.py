"""Tests of continuous_test against R 4.2: wilcox.test's default (exact P without ties when both groups have
< 50 values, else normal approximation with continuity and tie correction) and t.test(var.equal = TRUE)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from her2lib.errors import ParameterError
from her2lib.stats import continuous_test

FIX = Path(__file__).parent / "fixtures"
WIL = json.loads((FIX / "wilcox_reference.json").read_text())


@pytest.mark.parametrize("case", WIL["wilcox"], ids=lambda c: c["name"])
def test_matches_r_wilcox_test(case):
    # Reference: R 4.2 wilcox.test(x, y) with its defaults; W exactly, P to 1e-12 relative (JSON: 15 digits).
    r = continuous_test(case["x"], case["y"], method="mann_whitney")
    assert r.method == "mann_whitney"
    assert r.statistic == case["W"]
    assert r.pvalue == pytest.approx(case["p"], rel=1e-12, abs=1e-300)
    exact = "exact" in case["method"]
    assert ("exact P value" in r.reason) == exact
    assert ("continuity correction" in r.reason) == (not exact)


def test_scipy_default_differs_from_r_here():
    # 13 vs 16 values without ties: R's exact P 0.00125; scipy's default mannwhitneyu takes the normal
    # approximation (0.00199). The paper's P values follow R's rule.
    case = next(c for c in WIL["wilcox"] if c["name"] == "exact_13_16")
    scipy_p = st.mannwhitneyu(case["x"], case["y"], alternative="two-sided").pvalue
    assert scipy_p == pytest.approx(0.00199, abs=1e-5) and case["p"] == pytest.approx(0.00125, abs=1e-5)
    assert continuous_test(case["x"], case["y"], method="mann_whitney").pvalue == pytest.approx(case["p"], rel=1e-12)


@pytest.mark.parametrize("case", WIL["ttest"], ids=lambda c: c["name"])
def test_matches_r_t_test_pooled(case):
    # Reference: R 4.2 t.test(x, y, var.equal = TRUE); tolerance 1e-12 relative.
    r = continuous_test(case["x"], case["y"], method="student_t")
    assert r.statistic == pytest.approx(case["t"], rel=1e-12)
    assert r.dof == case["df"]
    assert r.pvalue == pytest.approx(case["p"], rel=1e-12)


def test_fixture_versions():
    assert WIL["versions"]["R"].startswith("R version 4.2")


@pytest.mark.parametrize("na, nb, seed", [(4, 5, 0), (6, 3, 1), (7, 7, 2)])
def test_exact_matches_enumeration(na, nb, seed):
    # Reference: brute force over all C(na + nb, na) assignments of ranks to group a; two-sided
    # P = min(1, 2 * min(P(W' <= W), P(W' >= W))) (R's rule, equal to its branch on W vs na nb / 2); tol 1e-15.
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, na), rng.normal(0.8, 1, nb)
    ranks = st.rankdata(np.r_[a, b])
    w_obs = ranks[:na].sum() - na * (na + 1) / 2
    ws = np.array([sum(c) - na * (na + 1) / 2 for c in itertools.combinations(range(1, na + nb + 1), na)])
    p = min(1.0, 2 * min(np.mean(ws <= w_obs), np.mean(ws >= w_obs)))
    r = continuous_test(a, b, method="mann_whitney")
    assert r.statistic == w_obs and r.pvalue == pytest.approx(p, abs=1e-15)


def test_default_rule_routes_skewed_small_groups_to_exact_mann_whitney():
    rng = np.random.default_rng(5)
    a, b = np.round(np.exp(rng.normal(0, 1.5, 20)), 4), np.round(np.exp(rng.normal(1, 1.5, 15)), 4)
    r = continuous_test(a, b)
    assert r.method == "mann_whitney" and "not both normal" in r.reason and "exact P value" in r.reason
    r50 = continuous_test(np.round(np.exp(rng.normal(0, 1.5, 50)), 4), b)
    assert "normal approximation" in r50.reason and "n >= 50" in r50.reason


def test_all_equal_values_give_nan_like_r():
    r = continuous_test([1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], method="mann_whitney")
    assert np.isnan(r.pvalue) and "P undefined" in r.reason  # R: p-value = NA


def test_method_validation():
    with pytest.raises(ParameterError, match="Did you mean 'mann_whitney'"):
        continuous_test([1.0, 2.0], [3.0, 4.0], method="mann-whitney")


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_live_against_r():
    rng = np.random.default_rng(31337)
    cases = [
        (np.round(rng.normal(0, 1, 11), 6), np.round(rng.normal(1, 1, 17), 6)),  # exact
        (np.round(rng.normal(50, 9, 30)), np.round(rng.normal(55, 9, 21))),  # ties
        (np.round(rng.normal(0, 1, 60), 6), np.round(rng.normal(0.3, 1, 12), 6)),
    ]  # n >= 50
    expr = ";".join(
        f"cat(sprintf('%.17g\\n', wilcox.test(c({','.join(map(repr, a.tolist()))}), "
        f"c({','.join(map(repr, b.tolist()))}))$p.value))"
        for a, b in cases
    )
    out = subprocess.run(
        ["Rscript", "-e", f"suppressWarnings({{{expr}}})"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for (a, b), p in zip(cases, map(float, out.split())):
        assert continuous_test(a, b, method="mann_whitney").pvalue == pytest.approx(p, rel=1e-12)
