"""Tests of her2lib.stats.delong_test_unpaired against pROC 1.18 (fixtures and live R) and brute force."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from her2lib.errors import DataError, UndefinedMetricWarning
from her2lib.stats import UnpairedDeLongResult, auc_ci, delong_test_unpaired

FIX = Path(__file__).parent / "fixtures"
UNP = json.loads((FIX / "proc_unpaired_reference.json").read_text())
TOL = 1e-10


@pytest.mark.parametrize("case", UNP["cases"], ids=lambda c: c["name"])
def test_matches_proc_unpaired_fixtures(case):
    # Reference: pROC 1.18 roc.test(roc_a, roc_b, method = "delong", paired = FALSE), direction "<";
    # tolerance 1e-10 absolute (the JSON keeps 15 significant digits).
    r = delong_test_unpaired(case["y_a"], case["a"], case["y_b"], case["b"])
    assert r.auc_a == pytest.approx(case["auc_a"], abs=TOL)
    assert r.auc_b == pytest.approx(case["auc_b"], abs=TOL)
    assert r.var_a == pytest.approx(case["var_a"], abs=TOL)
    assert r.var_b == pytest.approx(case["var_b"], abs=TOL)
    assert r.statistic == pytest.approx(case["statistic"], abs=TOL)
    assert r.df == pytest.approx(case["df"], abs=TOL * max(1.0, case["df"]))
    assert r.pvalue == pytest.approx(case["p"], abs=TOL)
    assert case["has_conf_int"] is False  # pROC gives no CI for the unpaired test, so neither do we
    ya, yb = np.asarray(case["y_a"]), np.asarray(case["y_b"])
    assert (r.n_pos_a, r.n_neg_a, r.n_pos_b, r.n_neg_b) == (ya.sum(), (1 - ya).sum(), yb.sum(), (1 - yb).sum())


def test_fixture_versions():
    assert UNP["versions"]["pROC"] == "1.18.0"


def _brute_var(y, s):
    """DeLong variance by all pairs (definition)."""
    x, v = s[y == 1], s[y == 0]
    psi = (x[:, None] > v[None, :]) + 0.5 * (x[:, None] == v[None, :])
    return psi.mean(), np.var(psi.mean(axis=1), ddof=1) / x.size + np.var(psi.mean(axis=0), ddof=1) / v.size


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    # Reference: all-pairs placements and the Welch-type df/t P value written out; tolerance 1e-12.
    rng = np.random.default_rng(seed)
    na, nb = rng.integers(10, 80, 2)
    ya = (rng.random(na) < 0.4).astype(int)
    yb = (rng.random(nb) < 0.3).astype(int)
    ya[:2], ya[2:4], yb[:2], yb[2:4] = 1, 0, 1, 0
    a = rng.integers(0, 5, na) + ya
    b = np.round(rng.normal(yb, 1), 1)
    ta, va = _brute_var(ya, a.astype(float))
    tb, vb = _brute_var(yb, b)
    d = (ta - tb) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    r = delong_test_unpaired(ya, a, yb, b)
    assert (r.auc_a, r.auc_b, r.var_a, r.var_b) == pytest.approx((ta, tb, va, vb), abs=1e-12)
    assert r.statistic == pytest.approx(d, abs=1e-10) and r.df == pytest.approx(df, rel=1e-12)
    assert r.pvalue == pytest.approx(2 * st.t.sf(abs(d), df), abs=1e-12)
    # each variance is the square of the DeLong CI's standard error
    assert r.diff == pytest.approx(ta - tb, abs=1e-15)
    assert auc_ci(ya, a).ci[1] == pytest.approx(min(1, ta + st.norm.ppf(0.975) * np.sqrt(va)), abs=1e-12)


def test_swap_negates_statistic_and_result_row():
    rng = np.random.default_rng(3)
    ya, yb = (rng.random(60) < 0.5).astype(int), (rng.random(40) < 0.5).astype(int)
    a, b = rng.normal(ya, 1), rng.normal(0.3 * yb, 1)
    r, s = delong_test_unpaired(ya, a, yb, b), delong_test_unpaired(yb, b, ya, a)
    assert s.statistic == pytest.approx(-r.statistic) and s.pvalue == pytest.approx(r.pvalue)
    assert s.df == pytest.approx(r.df)
    row = r.to_row()
    assert {
        "auc_a",
        "auc_b",
        "diff",
        "statistic",
        "df",
        "pvalue",
        "n_pos_a",
        "n_neg_a",
        "n_pos_b",
        "n_neg_b",
        "method",
    } <= set(row)
    assert isinstance(r, UnpairedDeLongResult) and "paired = FALSE" in r.method


def test_zero_variance_is_nan_like_proc():
    # pROC 1.18 returns D = NaN, df = NaN, P = NaN for two perfect curves (0/0), despite warning that the
    # P value "is always 1".
    with pytest.warns(UndefinedMetricWarning, match="variances are 0"):
        r = delong_test_unpaired([0, 0, 1, 1], [1, 2, 3, 4], [0, 0, 1, 1], [1, 2, 5, 6])
    assert np.isnan(r.statistic) and np.isnan(r.df) and np.isnan(r.pvalue)


def test_validation():
    with pytest.raises(DataError, match="sample b has n_pos=1"):
        delong_test_unpaired([0, 0, 1, 1], [1, 2, 3, 4], [0, 0, 1], [1, 2, 3])
    with pytest.raises(DataError, match="score_a has 3 values"):
        delong_test_unpaired([0, 0, 1, 1], [1, 2, 3], [0, 0, 1, 1], [1, 2, 3, 4])
    with pytest.raises(DataError, match="y_true_b must hold 0/1"):
        delong_test_unpaired([0, 0, 1, 1], [1, 2, 3, 4], [0, 0, 1, 2], [1, 2, 3, 4])


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_live_against_proc(tmp_path):
    rng = np.random.default_rng(2468)
    ya = (rng.random(97) < 0.3).astype(int)
    yb = (rng.random(64) < 0.45).astype(int)
    a = np.round(rng.normal(0.9 * ya, 1), 1)
    b = np.round(rng.normal(0.4 * yb, 1), 1)
    np.savetxt(tmp_path / "a.csv", np.c_[ya, a], delimiter=",", header="y,s", comments="", fmt="%.1f")
    np.savetxt(tmp_path / "b.csv", np.c_[yb, b], delimiter=",", header="y,s", comments="", fmt="%.1f")
    script = (
        "suppressPackageStartupMessages(library(pROC));"
        f"a<-read.csv('{tmp_path / 'a.csv'}');b<-read.csv('{tmp_path / 'b.csv'}');"
        "r1<-roc(a$y,a$s,levels=c(0,1),direction='<',quiet=TRUE);"
        "r2<-roc(b$y,b$s,levels=c(0,1),direction='<',quiet=TRUE);"
        "t<-roc.test(r1,r2,method='delong',paired=FALSE);"
        "cat(sprintf('%.17g',c(auc(r1),auc(r2),t$statistic,t$parameter,t$p.value)),sep='\\n')"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=120, check=True).stdout
    ref = np.array(out.split(), float)
    r = delong_test_unpaired(ya, a, yb, b)
    np.testing.assert_allclose([r.auc_a, r.auc_b, r.statistic, r.df, r.pvalue], ref, atol=TOL, rtol=1e-13)
