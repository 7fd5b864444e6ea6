"""Tests of her2lib.stats.youden_threshold against pROC 1.18 coords(roc, "best", best.method = "youden"), brute
force, and of binary_metrics at the +-inf thresholds it can return."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from her2lib.errors import ParameterError, UndefinedMetricWarning
from her2lib.stats import auc, binary_metrics, youden_threshold

FIX = Path(__file__).parent / "fixtures"
YOU = json.loads((FIX / "proc_youden_reference.json").read_text())


def _j(y, s, t):
    """Youden's J of the rule score >= t (brute force)."""
    y, s = np.asarray(y), np.asarray(s, float)
    pred = s >= t
    return (pred & (y == 1)).sum() / (y == 1).sum() + (~pred & (y == 0)).sum() / (y == 0).sum() - 1


@pytest.mark.parametrize("case", YOU["cases"], ids=lambda c: c["name"])
def test_matches_proc_best_youden(case):
    # Reference: pROC 1.18 coords(roc(y, s, direction = "<"), "best", best.method = "youden"), all tied rows in
    # increasing threshold order; we return the first. Tolerance 1e-12 on finite thresholds, exact for +-inf.
    ref = [float(t) for t in case["thresholds"]]
    t = youden_threshold(case["y"], case["s"])
    if np.isinf(ref[0]):
        assert t == ref[0]
    else:
        assert t == pytest.approx(ref[0], abs=1e-12)
    m = binary_metrics(case["y"], case["s"], t) if np.isfinite(t) else None
    if m is not None:
        assert m.sensitivity.value == pytest.approx(case["sensitivity"][0], abs=1e-12)
        assert m.specificity.value == pytest.approx(case["specificity"][0], abs=1e-12)
    # every tied pROC threshold has the same J as ours, and that J is >= 0
    j = _j(case["y"], case["s"], t)
    assert j >= 0
    for r in ref:
        assert _j(case["y"], case["s"], r) == pytest.approx(j, abs=1e-12)


def test_fixture_versions():
    assert YOU["versions"]["pROC"] == "1.18.0"


def test_wrong_way_scores_never_give_negative_j():
    # Old behaviour: a midpoint with J < 0 (here -0.5). Brute force over -inf, all midpoints and +inf.
    y, s = [1, 1, 0, 0], [1, 2, 3, 4]
    assert auc(y, s) == 0.0
    t = youden_threshold(y, s)
    assert t == -np.inf and _j(y, s, t) == 0.0
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(6, 60))
        y = (rng.random(n) < 0.4).astype(int)
        y[:2], y[2:4] = 1, 0
        s = np.round(rng.normal(-1.5 * y, 1), 1)
        u = np.unique(s)
        best = max(_j(y, s, c) for c in np.r_[-np.inf, (u[:-1] + u[1:]) / 2, np.inf])
        t = youden_threshold(y, s)
        assert _j(y, s, t) == pytest.approx(best, abs=1e-12) and best >= 0


def test_tie_break_is_lowest_threshold():
    # -inf, 2.5 and +inf all have J = 0 (pROC returns all three); the first, -inf, is returned
    assert youden_threshold([1, 0, 1, 0], [1, 2, 3, 4]) == -np.inf
    # two interior maxima: the lower threshold (higher sensitivity)
    assert youden_threshold([0, 0, 0, 1, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8]) == pytest.approx(0.325)


def test_proc_midpoint_rounding_rule():
    # consecutive doubles: (a + b) / 2 rounds onto a, so pROC uses b; score >= b still separates them
    a = 1.0
    b = np.nextafter(a, 2.0)
    t = youden_threshold([0, 1], [a, b])
    assert t == b
    m = binary_metrics([0, 1], [a, b], t)
    assert (m.tp, m.fp) == (1, 0)
    # huge scores: a/2 + b/2 instead of an overflowing (a + b) / 2
    assert youden_threshold([0, 1], [1e308, 1.7e308]) == pytest.approx(1.35e308, rel=1e-15)


def test_binary_metrics_accepts_infinite_thresholds():
    y = [0, 0, 1, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.9]
    with pytest.warns(UndefinedMetricWarning, match="NPV"):
        lo = binary_metrics(y, s, -np.inf)
    assert (lo.tp, lo.fp, lo.tn, lo.fn) == (3, 2, 0, 0) and lo.threshold == -np.inf
    with pytest.warns(UndefinedMetricWarning, match="PPV"):
        hi = binary_metrics(y, s, np.inf)
    assert (hi.tp, hi.fp, hi.tn, hi.fn) == (0, 0, 2, 3)
    assert hi.f1.value == 0.0 and hi.sensitivity.value == 0.0 and hi.specificity.value == 1.0
    with pytest.raises(ParameterError, match="NaN"):
        binary_metrics(y, s, float("nan"))


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_live_against_proc(tmp_path):
    rng = np.random.default_rng(777)
    cases = []
    for k in range(4):
        n = int(rng.integers(20, 120))
        y = (rng.random(n) < 0.4).astype(int)
        y[:2], y[2:4] = 1, 0
        s = np.round(rng.normal((1.0 if k % 2 else -1.2) * y, 1), 1)
        cases.append((y, s))
    for i, (y, s) in enumerate(cases):
        np.savetxt(tmp_path / f"d{i}.csv", np.c_[y, s], delimiter=",", header="y,s", comments="", fmt="%.1f")
    script = (
        "suppressPackageStartupMessages(library(pROC));"
        f"for (i in 0:{len(cases) - 1}) {{ d<-read.csv(sprintf('{tmp_path}/d%d.csv', i));"
        "r<-roc(d$y,d$s,levels=c(0,1),direction='<',quiet=TRUE);"
        "b<-coords(r,'best',best.method='youden',ret='threshold',transpose=FALSE);"
        "cat(sprintf('%.17g', b$threshold[1]), '\\n') }"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=120, check=True).stdout
    for (y, s), ref in zip(cases, map(float, out.split())):
        t = youden_threshold(y, s)
        assert t == ref if np.isinf(ref) else t == pytest.approx(ref, abs=1e-12)
