"""ROC statistics (paper, *Statistical analysis*): AUC, the paired and unpaired DeLong tests, AUC confidence
intervals, threshold metrics and Youden's threshold.

Science layer.

Conventions (the same as pROC with ``direction = "<"``):

* ``y_true`` holds 0/1 labels, 1 = HER2-positive (the "cases"); 0 = HER2-negative ("controls").
* A **higher score means more likely positive**. A case and a control with equal scores count one half.
* ``binary_metrics`` calls a patient positive when ``score >= threshold``; ``threshold = -inf`` calls everyone
  positive and ``+inf`` everyone negative (the two ends of pROC's threshold list).

References these functions were checked against (``tests/test_stats_roc.py``):

* pROC 1.18.0 (R 4.2): ``auc``, ``var(roc)``, ``ci.auc(method = "delong")`` and
  ``roc.test(method = "delong", paired = TRUE)`` with ``direction = "<"``; agreement to 1e-7 on random data
  with ties and unbalanced classes (fixtures in ``tests/fixtures/``, made by ``tests/fixtures/make_reference.R``).
* pROC 1.18.0: ``roc.test(method = "delong", paired = FALSE)`` (to 1e-10) and
  ``coords(roc, "best", best.method = "youden")`` (thresholds to 1e-12, including -Inf/Inf).
* A brute-force all-pairs DeLong implementation (the definition, O(n_pos * n_neg)).
* MedCalc's exact-binomial AUC interval as printed in the paper (AUC 464/551, 19 positive / 29 negative
  -> 0.708-0.931).

The DeLong computations use the midrank algorithm of Sun & Xu (2014), *IEEE Signal Processing Letters*
21(11):1389-1393: O(N log N) time and O(N) memory. DeLong, DeLong & Clarke-Pearson (1988), *Biometrics*
44(3):837-845. The F1 interval uses mid-P confidence distributions of the two binomial proportions (Berry &
Armitage 1995, *The Statistician* 44(4):417-423; Schweder & Hjort 2016, *Confidence, Likelihood, Probability*).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats as _st

from ..errors import DataError, ParameterError, UndefinedMetricWarning
from ..options import look_up_option
from ._common import as_binary_labels, as_scores, check_level, clopper_pearson

__all__ = [
    "auc",
    "delong_placements",
    "delong_test",
    "DeLongResult",
    "delong_test_unpaired",
    "UnpairedDeLongResult",
    "auc_ci",
    "AUCInterval",
    "binary_metrics",
    "BinaryMetrics",
    "Estimate",
    "youden_threshold",
]

AUC_CI_METHODS = ("delong", "exact-binomial", "bootstrap")


# --------------------------------------------------------------------------------------------------- helpers
def _validate(y_true, y_score, name: str = "y_score") -> tuple[np.ndarray, np.ndarray]:
    y = as_binary_labels(y_true)
    s = as_scores(y_score, y.shape[0], name)
    return y, s


def _both_classes(y: np.ndarray, what: str) -> bool:
    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"{what} is undefined with a single class (n_pos={n_pos}, n_neg={n_neg}); returning NaN. "
            "Evaluate on a set with both HER2-positive and HER2-negative patients.",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        return False
    return True


def delong_placements(y_true, y_score) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong placement values by the midrank algorithm of Sun & Xu (2014).

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive (case), 0 = HER2-negative (control).
    y_score : array-like of float, shape (n_patients,)
        Higher = more likely positive.

    Returns
    -------
    theta : float
        The AUC (ties count one half).
    v10 : ndarray, shape (n_pos,)
        For each case, the fraction of controls it outranks (ties 1/2) — pROC's ``X``.
    v01 : ndarray, shape (n_neg,)
        For each control, the fraction of cases that outrank it (ties 1/2) — pROC's ``Y``.

    Notes
    -----
    With midranks ``Z`` in the pooled sample, ``T_X`` within the cases and ``T_Y`` within the controls,
    ``v10 = (Z - T_X) / n_neg`` and ``v01 = 1 - (Z - T_Y) / n_pos``; O(N log N) (three sorts).
    """
    y, s = _validate(y_true, y_score)
    if not _both_classes(y, "The AUC"):
        return float("nan"), np.full(int(y.sum()), np.nan), np.full(int((1 - y).sum()), np.nan)
    return _placements(y.astype(bool), s)


def _sorted_midranks(v: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties averaged) of an already sorted 1-D array, in O(N)."""
    n = v.shape[0]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    ends = np.r_[starts[1:], n]
    return np.repeat((starts + ends + 1) / 2.0, ends - starts)


def _placements(pos: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Sun & Xu (2014) with a single sort: pooled midranks, and the within-class midranks read off the same order
    (the pooled sorted order restricted to one class is that class sorted). Placements come back in patient order.
    """
    order = np.argsort(s)
    ss, ps = s[order], pos[order]
    zs = _sorted_midranks(ss)
    m = int(ps.sum())
    n = ps.shape[0] - m
    theta = float((zs[ps].sum() - m * (m + 1) / 2.0) / (m * n))
    # scatter back to patient order: O(N), no second sort
    z = np.empty_like(zs)
    t = np.empty_like(zs)
    z[order] = zs
    t[order[ps]] = _sorted_midranks(ss[ps])
    t[order[~ps]] = _sorted_midranks(ss[~ps])
    v10 = (z[pos] - t[pos]) / n
    v01 = 1.0 - (z[~pos] - t[~pos]) / m
    return theta, v10, v01


# --------------------------------------------------------------------------------------------------- AUC
def auc(y_true, y_score) -> float:
    """Area under the ROC curve (Mann-Whitney estimate; ties count one half; higher score = positive).

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive.
    y_score : array-like of float, shape (n_patients,)
        Predicted probability (or any score) of HER2-positive.

    Returns
    -------
    float
        AUC in [0, 1]; NaN (with :class:`~her2lib.errors.UndefinedMetricWarning`) if only one class is present.
        Equals pROC's ``auc(roc(y, s, direction = "<"))``; an AUC below 0.5 is kept, never flipped.
    """
    y, s = _validate(y_true, y_score)
    if not _both_classes(y, "The AUC"):
        return float("nan")
    pos = y.astype(bool)
    m = int(pos.sum())
    n = y.shape[0] - m
    z = _st.rankdata(s, method="average")
    return float((z[pos].sum() - m * (m + 1) / 2.0) / (m * n))


# --------------------------------------------------------------------------------------------------- DeLong
@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong test of two correlated AUCs (pROC ``roc.test(method = "delong", paired = TRUE)``).

    Attributes
    ----------
    auc_a, auc_b : float
        AUCs of the two scores.
    diff : float
        ``auc_a - auc_b``.
    diff_ci : tuple (low, high, level)
        Wald interval ``diff ± z_{1-(1-level)/2} * sd_diff`` (pROC's ``conf.int``).
    z, pvalue : float
        ``z = diff / sd_diff``; two-sided ``P = 2 * Phi(-|z|)``. ``z = 0, P = 1`` when ``diff`` and ``sd_diff``
        are both 0 (e.g. identical scores); ``|z| = inf, P = 0`` when only ``sd_diff`` is 0.
    var_a, var_b, cov_ab, sd_diff : float
        DeLong variances of the AUCs, their covariance and the SD of the difference.
    n_pos, n_neg : int
        Number of cases (HER2-positive) and controls.
    method : str
        Description of the test.
    """

    auc_a: float
    auc_b: float
    diff: float
    diff_ci: tuple[float, float, float]
    z: float
    pvalue: float
    var_a: float
    var_b: float
    cov_ab: float
    sd_diff: float
    n_pos: int
    n_neg: int
    method: str = "DeLong's test for two correlated ROC curves (paired; pROC 1.18 roc.test, direction '<')"

    def to_row(self) -> dict:
        """Flat dict for a results table (``diff_ci`` split into ``diff_ci_low/high/level``)."""
        d = asdict(self)
        lo, hi, lev = d.pop("diff_ci")
        d.update(diff_ci_low=lo, diff_ci_high=hi, diff_ci_level=lev)
        return d


def delong_test(y_true, score_a, score_b, *, level: float = 0.95) -> DeLongResult:
    """Paired DeLong test comparing the AUCs of two scores on the same patients.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive.
    score_a, score_b : array-like of float, shape (n_patients,)
        Two models' scores for the same patients, in the same order. Higher = more likely positive.
    level : float, default 0.95
        Confidence level of the interval for ``auc_a - auc_b``.

    Returns
    -------
    DeLongResult

    Raises
    ------
    DataError
        If labels are not 0/1, lengths differ, a score is not finite, or a class has fewer than 2 patients
        (DeLong's variance divides by ``n_pos - 1`` and ``n_neg - 1``).

    Notes
    -----
    Reproduces pROC 1.18 ``roc.test(roc(y, a, direction = "<"), roc(y, b, direction = "<"),
    method = "delong", paired = TRUE)``: ``S = S10 / n_pos + S01 / n_neg`` with ``S10``, ``S01`` the sample
    covariance matrices (denominator ``n - 1``) of the placement values, ``sd_diff = sqrt(S11 + S22 - 2 S12)``.
    Placements by the O(N log N) midrank algorithm of Sun & Xu (2014). A tiny negative variance from floating
    point rounding is treated as 0.
    """
    level = check_level(level)
    y = as_binary_labels(y_true)
    a = as_scores(score_a, y.shape[0], "score_a")
    b = as_scores(score_b, y.shape[0], "score_b")
    pos = y.astype(bool)
    m = int(pos.sum())
    n = y.shape[0] - m
    if m < 2 or n < 2:
        raise DataError(
            f"The DeLong test needs at least 2 HER2-positive and 2 HER2-negative patients; got "
            f"n_pos={m}, n_neg={n}. Use a larger evaluation set."
        )
    ta, xa, ya = _placements(pos, a)
    tb, xb, yb = _placements(pos, b)
    dxa, dxb = xa - ta, xb - tb
    dya, dyb = ya - ta, yb - tb
    # Same formula and order of operations as pROC's delong.paired.calculations.
    s11 = np.sum(dxa * dxa) / (m - 1) / m + np.sum(dya * dya) / (n - 1) / n
    s22 = np.sum(dxb * dxb) / (m - 1) / m + np.sum(dyb * dyb) / (n - 1) / n
    s12 = np.sum(dxa * dxb) / (m - 1) / m + np.sum(dya * dyb) / (n - 1) / n
    var_d = s11 + s22 - 2.0 * s12
    sig = float(np.sqrt(var_d)) if var_d > 0 else 0.0
    d = ta - tb
    if sig == 0.0:
        z = 0.0 if d == 0 else float(np.copysign(np.inf, d))
    else:
        z = d / sig
    p = float(2.0 * _st.norm.sf(abs(z)))
    crit = float(_st.norm.ppf(1 - (1 - level) / 2))
    return DeLongResult(
        auc_a=ta,
        auc_b=tb,
        diff=d,
        diff_ci=(d - crit * sig, d + crit * sig, level),
        z=float(z),
        pvalue=p,
        var_a=float(s11),
        var_b=float(s22),
        cov_ab=float(s12),
        sd_diff=sig,
        n_pos=m,
        n_neg=n,
    )


@dataclass(frozen=True)
class UnpairedDeLongResult:
    """DeLong test of two AUCs from independent samples (pROC ``roc.test(method = "delong", paired = FALSE)``).

    Attributes
    ----------
    auc_a, auc_b : float
        AUCs of the two samples.
    diff : float
        ``auc_a - auc_b``.
    statistic : float
        ``D = diff / sqrt(var_a + var_b)`` (pROC's ``D``).
    df : float
        Welch-Satterthwaite-type degrees of freedom as pROC computes them:
        ``(var_a + var_b)^2 / (var_a^2 / (N_a - 1) + var_b^2 / (N_b - 1))`` with ``N`` the patients of a sample.
    pvalue : float
        Two-sided ``2 * P(T_df <= -|D|)``.
    var_a, var_b : float
        DeLong variances of the two AUCs (pROC ``var(roc)``).
    n_pos_a, n_neg_a, n_pos_b, n_neg_b : int
        Cases (HER2-positive) and controls of each sample.
    method : str

    Notes
    -----
    pROC 1.18 gives no confidence interval for the unpaired test, so none is reported here.
    """

    auc_a: float
    auc_b: float
    diff: float
    statistic: float
    df: float
    pvalue: float
    var_a: float
    var_b: float
    n_pos_a: int
    n_neg_a: int
    n_pos_b: int
    n_neg_b: int
    method: str = (
        "DeLong's test for two unpaired ROC curves: D = diff / sqrt(V_a + V_b), t distribution with "
        "Welch-type df (pROC 1.18 roc.test, paired = FALSE, direction '<')"
    )

    def to_row(self) -> dict:
        """Flat dict of all fields."""
        return asdict(self)


def _delong_var(pos: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """AUC and DeLong variance in pROC's order of operations (``delong.unpaired.test``)."""
    m = int(pos.sum())
    n = pos.shape[0] - m
    theta, x, yv = _placements(pos, s)
    sx = np.sum((x - theta) * (x - theta)) / (m - 1)
    sy = np.sum((yv - theta) * (yv - theta)) / (n - 1)
    return theta, sx / m + sy / n


def delong_test_unpaired(y_true_a, score_a, y_true_b, score_b) -> UnpairedDeLongResult:
    """DeLong test comparing the AUCs of two independent samples (different patients).

    Parameters
    ----------
    y_true_a : array-like of 0/1, shape (n_patients_a,)
        Labels of sample a, 1 = HER2-positive.
    score_a : array-like of float, shape (n_patients_a,)
        Scores of sample a; higher = more likely positive.
    y_true_b : array-like of 0/1, shape (n_patients_b,)
    score_b : array-like of float, shape (n_patients_b,)

    Returns
    -------
    UnpairedDeLongResult
        ``statistic = (AUC_a - AUC_b) / sqrt(V_a + V_b)``, ``df`` and the two-sided t P value as pROC.
        If ``V_a + V_b = 0`` (e.g. both AUCs 0 or 1) the statistic is ``0/0 = NaN`` or ``±inf``, and ``df`` and
        ``pvalue`` are NaN, as pROC returns; an :class:`~her2lib.errors.UndefinedMetricWarning` says so.

    Raises
    ------
    DataError
        Labels not 0/1, lengths differ, a score not finite, or a sample with fewer than 2 patients in a class.

    Notes
    -----
    Reproduces pROC 1.18 ``roc.test(roc(y_a, a, direction = "<"), roc(y_b, b, direction = "<"),
    method = "delong", paired = FALSE)`` (``delong.unpaired.test``): per sample ``V = S10 / m + S01 / n`` with
    ``S10``, ``S01`` the variances (denominator ``m - 1``, ``n - 1``) of the placement values (Sun & Xu midranks);
    ``df = (V_a + V_b)^2 / (V_a^2 / (N_a - 1) + V_b^2 / (N_b - 1))`` with ``N`` the sample's patients (not its
    cases or controls); ``P = 2 * pt(-|D|, df)``. pROC computes no confidence interval for this test.
    Checked against pROC fixtures to 1e-10 (``tests/test_stats_unpaired.py``).
    """
    ya = as_binary_labels(y_true_a, "y_true_a")
    a = as_scores(score_a, ya.shape[0], "score_a")
    yb = as_binary_labels(y_true_b, "y_true_b")
    b = as_scores(score_b, yb.shape[0], "score_b")
    counts = []
    for name, y in (("a", ya), ("b", yb)):
        m = int(y.sum())
        n = int(y.shape[0] - m)
        if m < 2 or n < 2:
            raise DataError(
                f"The unpaired DeLong test needs at least 2 HER2-positive and 2 HER2-negative patients "
                f"in each sample; sample {name} has n_pos={m}, n_neg={n}. Use a larger sample."
            )
        counts += [m, n]
    ta, va = _delong_var(ya.astype(bool), a)
    tb, vb = _delong_var(yb.astype(bool), b)
    v = va + vb
    d = ta - tb
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = float(np.float64(d) / np.sqrt(np.float64(v)))
        df = float(np.float64(v) ** 2 / (va**2 / (ya.shape[0] - 1) + vb**2 / (yb.shape[0] - 1)))
    if v > 0:
        p = float(2.0 * _st.t.cdf(-abs(stat), df))
    else:
        warnings.warn(
            f"Both DeLong variances are 0 (AUC_a = {ta:.6g}, AUC_b = {tb:.6g}); the unpaired test's "
            "statistic, df and P value are undefined (NaN, as pROC returns).",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        p = float("nan")
    return UnpairedDeLongResult(
        auc_a=ta,
        auc_b=tb,
        diff=d,
        statistic=stat,
        df=df,
        pvalue=p,
        var_a=float(va),
        var_b=float(vb),
        n_pos_a=counts[0],
        n_neg_a=counts[1],
        n_pos_b=counts[2],
        n_neg_b=counts[3],
    )


# --------------------------------------------------------------------------------------------------- AUC CI
@dataclass(frozen=True)
class AUCInterval:
    """An AUC with its confidence interval.

    Attributes
    ----------
    auc : float
    ci : tuple (low, high, level)
    method : str
        ``"delong"``, ``"exact-binomial"`` or ``"bootstrap"``.
    n_pos, n_neg : int
    detail : str
        What exactly was computed (reference implementation, resamples, seed).
    """

    auc: float
    ci: tuple[float, float, float]
    method: str
    n_pos: int
    n_neg: int
    detail: str = ""

    def to_row(self) -> dict:
        """Flat dict: ``auc, ci_low, ci_high, ci_level, method, n_pos, n_neg, detail``."""
        lo, hi, lev = self.ci
        return dict(
            auc=self.auc,
            ci_low=lo,
            ci_high=hi,
            ci_level=lev,
            method=self.method,
            n_pos=self.n_pos,
            n_neg=self.n_neg,
            detail=self.detail,
        )


def auc_ci(
    y_true,
    y_score,
    *,
    method: Literal["delong", "exact-binomial", "bootstrap"] = "delong",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> AUCInterval:
    """AUC with a confidence interval by one of three explicitly named methods.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive.
    y_score : array-like of float, shape (n_patients,)
        Higher = more likely positive.
    method : {"delong", "exact-binomial", "bootstrap"}
        * ``"delong"``: pROC 1.18 ``ci.auc(method = "delong")`` — normal interval around the AUC with DeLong's
          variance, clipped to [0, 1].
        * ``"exact-binomial"``: MedCalc's default (the paper's software): Clopper-Pearson on the non-integer
          count ``k = AUC * n`` with ``n = n_pos + n_neg`` the whole cohort; lower
          ``beta.ppf(a/2, k, n - k + 1)``, upper ``beta.ppf(1 - a/2, k + 1, n - k)``.
        * ``"bootstrap"``: stratified (positives and negatives resampled separately, as pROC's
          ``boot.stratified = TRUE``) percentile interval from ``n_boot`` resamples drawn with
          ``numpy.random.default_rng(seed)``.
    level : float, default 0.95
    n_boot : int, default 2000
        Bootstrap resamples (``"bootstrap"`` only).
    seed : int, default 0
        Bootstrap seed (``"bootstrap"`` only); same seed, same interval.

    Returns
    -------
    AUCInterval
        NaN interval (with :class:`~her2lib.errors.UndefinedMetricWarning`) when a class is missing, or for
        ``"delong"`` when a class has a single patient (as pROC).
    """
    look_up_option(method, AUC_CI_METHODS, name="method")
    level = check_level(level)
    y, s = _validate(y_true, y_score)
    pos = y.astype(bool)
    m = int(pos.sum())
    n = y.shape[0] - m
    nan = float("nan")
    if not _both_classes(y, "The AUC interval"):
        return AUCInterval(nan, (nan, nan, level), method, m, n, "single class")
    theta, v10, v01 = _placements(pos, s)
    if method == "delong":
        if m < 2 or n < 2:
            warnings.warn(
                f"DeLong's AUC variance needs at least 2 patients per class (n_pos={m}, n_neg={n}); interval is NaN.",
                UndefinedMetricWarning,
                stacklevel=2,
            )
            return AUCInterval(theta, (nan, nan, level), method, m, n, "too few patients per class")
        var = np.sum((v10 - theta) ** 2) / (m - 1) / m + np.sum((v01 - theta) ** 2) / (n - 1) / n
        if var > 0:
            lo, hi = _st.norm.ppf([(1 - level) / 2, 1 - (1 - level) / 2], loc=theta, scale=np.sqrt(var))
        else:  # zero variance (e.g. perfect separation): pROC's qnorm(sd = 0) returns the AUC itself
            lo = hi = theta
        lo, hi = float(min(max(lo, 0.0), 1.0)), float(min(max(hi, 0.0), 1.0))
        return AUCInterval(
            theta, (lo, hi, level), method, m, n, f"DeLong variance {float(var):.6g}; pROC 1.18 ci.auc(method='delong')"
        )
    if method == "exact-binomial":
        tot = m + n
        lo, hi = clopper_pearson(theta * tot, tot, level)
        return AUCInterval(
            theta,
            (lo, hi, level),
            method,
            m,
            n,
            f"MedCalc: Clopper-Pearson with k = AUC*n = {theta * tot:.4f}, n = {tot}",
        )
    # bootstrap
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ParameterError(f"n_boot must be an integer >= 10 (2000 recommended); got {n_boot!r}.")
    aucs = _bootstrap_aucs(s[pos], s[~pos], int(n_boot), np.random.default_rng(seed))
    aucs = aucs[np.isfinite(aucs)]
    lo, hi = np.quantile(aucs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return AUCInterval(
        theta,
        (float(lo), float(hi), level),
        method,
        m,
        n,
        f"stratified percentile bootstrap, {n_boot} resamples, seed {seed}",
    )


def _bootstrap_aucs(
    x: np.ndarray, yv: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 256
) -> np.ndarray:
    """AUCs of ``n_boot`` stratified resamples (vectorised in chunks, midranks per row)."""
    m, n = x.shape[0], yv.shape[0]
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        xi = rng.integers(0, m, size=(k, m))
        yi = rng.integers(0, n, size=(k, n))
        pooled = np.concatenate([x[xi], yv[yi]], axis=1)
        z = _st.rankdata(pooled, method="average", axis=1)
        out[start : start + k] = (z[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    return out


# --------------------------------------------------------------------------------------------------- threshold metrics
@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval ``ci = (low, high, level)`` and how it was computed."""

    value: float
    ci: tuple[float, float, float]
    method: str
    numerator: float | None = None
    denominator: float | None = None


def exact_proportion(k: int, n: int, level: float, *, what: str, stacklevel: int = 3) -> Estimate:
    """``k / n`` with its Clopper-Pearson (exact) interval; NaN with an :class:`UndefinedMetricWarning` naming
    ``what`` when ``n`` is 0 (``stacklevel`` points the warning at the caller's caller)."""
    if n == 0:
        warnings.warn(
            f"{what} is undefined (denominator 0); returning NaN.", UndefinedMetricWarning, stacklevel=stacklevel
        )
        return Estimate(float("nan"), (float("nan"), float("nan"), level), "Clopper-Pearson", k, n)
    lo, hi = clopper_pearson(k, n, level)
    return Estimate(k / n, (lo, hi, level), "Clopper-Pearson", k, n)


@dataclass(frozen=True)
class BinaryMetrics:
    """Classification metrics at one threshold (positive when ``score >= threshold``).

    Attributes
    ----------
    threshold : float
        May be ``-inf`` (everyone positive) or ``+inf`` (everyone negative).
    tp, fp, tn, fn : int
        Confusion counts (positive class = HER2-positive).
    accuracy, sensitivity, specificity, ppv, npv, f1 : Estimate
        Proportions with exact Clopper-Pearson intervals; F1 (not a binomial proportion) with a seeded mid-P
        confidence-distribution interval (:func:`binary_metrics`).
    n_pos, n_neg : int
    method : str
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: Estimate
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate
    f1: Estimate
    n_pos: int
    n_neg: int
    method: str = (
        "score >= threshold is positive; Clopper-Pearson CIs; F1 CI from mid-P confidence distributions "
        "of sensitivity and false-positive rate"
    )

    METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")

    def to_row(self) -> dict:
        """Flat dict: counts, then ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high`` for each metric."""
        row: dict = dict(
            threshold=self.threshold, tp=self.tp, fp=self.fp, tn=self.tn, fn=self.fn, n_pos=self.n_pos, n_neg=self.n_neg
        )
        for name in self.METRICS:
            e: Estimate = getattr(self, name)
            row[name] = e.value
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = e.ci[0], e.ci[1]
        row["ci_level"] = self.accuracy.ci[2]
        return row


def _midp_draws(k: int, size: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Draws from the mid-P confidence distribution of a binomial proportion ``k / size``.

    The mid-P P-value function ``P(X > k) + P(X = k) / 2`` is the CDF of the equal mixture of ``Beta(k, size-k+1)``
    (``P(X >= k)``) and ``Beta(k+1, size-k)`` (``P(X >= k+1)``); ``Beta(0, .)`` is a point mass at 0 and
    ``Beta(., 0)`` one at 1.
    """
    upper = rng.random(n_draws) < 0.5
    a = np.where(upper, k + 1, k).astype(float)
    b = np.where(upper, size - k, size - k + 1).astype(float)
    out = np.empty(n_draws)
    zero, one = a == 0, b == 0
    ok = ~(zero | one)
    out[zero] = 0.0
    out[one] = 1.0
    out[ok] = rng.beta(a[ok], b[ok])
    return out


def _f1_interval(tp: int, fp: int, m: int, n: int, level: float, n_draws: int, seed) -> tuple[float, float]:
    """Percentile interval of F1 under independent mid-P confidence distributions of sensitivity and FPR."""
    rng = np.random.default_rng(seed)
    sens = _midp_draws(tp, m, n_draws, rng)
    fpr = _midp_draws(fp, n, n_draws, rng)
    num = 2.0 * m * sens
    den = num + n * fpr + m * (1.0 - sens)
    ok = den > 0
    f1 = num[ok] / den[ok]
    if f1.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(f1, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def binary_metrics(
    y_true, y_score, threshold: float, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> BinaryMetrics:
    """Accuracy, sensitivity, specificity, PPV, NPV and F1 at a fixed threshold, with confidence intervals.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive.
    y_score : array-like of float, shape (n_patients,)
        Higher = more likely positive.
    threshold : float
        A patient is called positive when ``score >= threshold`` (choose it on training/OOF data only, e.g.
        with :func:`youden_threshold`). ``-inf`` calls everyone positive, ``+inf`` everyone negative (both can
        come from :func:`youden_threshold`); NaN is refused.
    level : float, default 0.95
    n_boot : int, default 2000
        Monte Carlo draws of the F1 interval (the name is kept from the earlier bootstrap interval).
    seed : int, default 0
        Seed of those draws (``numpy.random.default_rng(seed)``); same seed, same interval.

    Returns
    -------
    BinaryMetrics
        A metric whose denominator is 0 (e.g. PPV with no predicted positive) is NaN, with
        :class:`~her2lib.errors.UndefinedMetricWarning`.

    Notes
    -----
    Proportions get exact Clopper-Pearson intervals. F1 = 2TP / (2TP + FP + FN) is a function of sensitivity
    ``s`` and false-positive rate ``f`` given the ``m`` positives and ``n`` negatives:
    ``F1 = 2 m s / (2 m s + n f + m (1 - s))``. Its interval is the ``(1-level)/2`` and ``1-(1-level)/2``
    percentiles of F1 over ``n_boot`` independent draws of ``s`` and ``f`` from their mid-P confidence
    distributions (equal mixtures of ``Beta(k, N-k+1)`` and ``Beta(k+1, N-k)``, whose CDF is the mid-P P-value
    function; Berry & Armitage 1995). Unlike a bootstrap at the fixed threshold (or the binomial redraw of TP and
    FP used before), it keeps a non-zero width when FP = 0 and sensitivity = 1 (upper limit 1). Coverage, computed
    exactly over all (TP, FP) outcomes for sensitivity/specificity from 0.5 to 1 and 5/8 to 150/300 patients:
    0.92-0.99 for a nominal 0.95 (``tests/test_stats_f1.py``). A Jeffreys version (``Beta(k+1/2, N-k+1/2)``) was
    rejected: coverage 0.83 at sensitivity 0.99, specificity 1, and 0 when both are 1.
    """
    level = check_level(level)
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or np.isnan(threshold):
        raise ParameterError(f"threshold must be a number (-inf and inf allowed; NaN is not); got {threshold!r}.")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ParameterError(f"n_boot (F1 interval draws) must be an integer >= 10 (2000 recommended); got {n_boot!r}.")
    y, s = _validate(y_true, y_score)
    pred = s >= float(threshold)
    pos = y.astype(bool)
    tp = int(np.sum(pred & pos))
    fn = int(np.sum(~pred & pos))
    fp = int(np.sum(pred & ~pos))
    tn = int(np.sum(~pred & ~pos))

    def prop(name: str, k: int, n: int) -> Estimate:
        return exact_proportion(k, n, level, what=f"{name} at threshold {threshold}", stacklevel=4)

    acc = prop("Accuracy", tp + tn, tp + tn + fp + fn)
    sen = prop("Sensitivity", tp, tp + fn)
    spe = prop("Specificity", tn, tn + fp)
    ppv = prop("PPV", tp, tp + fp)
    npv = prop("NPV", tn, tn + fn)
    den = 2 * tp + fp + fn
    f1_method = (
        f"percentiles of F1 over {n_boot} draws of sensitivity and false-positive rate from their mid-P "
        f"binomial confidence distributions (seed {seed})"
    )
    if den == 0:
        warnings.warn(
            "F1 is undefined (no positive patient and no positive call); returning NaN.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        f1 = Estimate(float("nan"), (float("nan"),) * 2 + (level,), f1_method, 2 * tp, den)
    else:
        lo, hi = _f1_interval(tp, fp, tp + fn, tn + fp, level, int(n_boot), seed)
        f1 = Estimate(2 * tp / den, (lo, hi, level), f1_method, 2 * tp, den)
    return BinaryMetrics(float(threshold), tp, fp, tn, fn, acc, sen, spe, ppv, npv, f1, tp + fn, tn + fp)


def _proc_thresholds(u: np.ndarray) -> np.ndarray:
    """pROC 1.18's thresholds (``roc.utils.thresholds``, direction ``"<"``) for sorted distinct scores ``u``.

    ``-inf``, the midpoints of consecutive scores, ``+inf``. A midpoint is ``(a + b) / 2``, or ``a/2 + b/2`` where
    that exceeds 1e100 in magnitude; a midpoint that rounds onto the lower score ``a`` is replaced by ``b``
    (so ``score >= threshold`` still separates the two).
    """
    lo, hi = u[:-1], u[1:]
    with np.errstate(over="ignore"):
        mid = (lo + hi) / 2.0
    mid = np.where(np.abs(mid) > 1e100, lo / 2.0 + hi / 2.0, mid)
    mid = np.where(mid == lo, hi, mid)
    return np.r_[-np.inf, mid, np.inf]


def youden_threshold(y_true, y_score) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (rule ``score >= threshold``).

    Choose it on training or out-of-fold predictions only, never on the test set.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
    y_score : array-like of float, shape (n_patients,)

    Returns
    -------
    float
        The threshold of pROC 1.18's ``coords(roc(y, s, direction = "<"), "best", best.method = "youden")``.
        Candidates are pROC's thresholds: ``-inf`` (everyone positive, J = 0), the midpoints between consecutive
        distinct scores (so the threshold never sits on a training patient's score) and ``+inf`` (everyone
        negative, J = 0). So J at the returned threshold is never below 0: for wrong-way scores (AUC < 0.5) with
        no cut of positive J, the result is ``-inf``. NaN (with a warning) if a class is missing.

    Notes
    -----
    Ties: pROC returns every threshold of maximal J, in increasing order; we return the first, i.e. the lowest
    threshold (highest sensitivity). When only the two ends tie (J = 0 everywhere else or below) that is
    ``-inf``: call everyone positive. J is compared exactly, as the integer ``TP * n_neg + TN * n_pos``
    (pROC compares the floating-point sums ``se + sp``; the two can differ only for J values equal up to rounding).
    Callers must accept ``±inf`` (:func:`binary_metrics` does).
    """
    y, s = _validate(y_true, y_score)
    if not _both_classes(y, "Youden's threshold"):
        return float("nan")
    cand = _proc_thresholds(np.unique(s))
    pos = y.astype(bool)
    m = int(pos.sum())
    n = int(y.shape[0] - m)
    # count of positives / negatives with score >= candidate, via sorting: O(N log N)
    xs, ys = np.sort(s[pos]), np.sort(s[~pos])
    tp = m - np.searchsorted(xs, cand, side="left")
    tn = np.searchsorted(ys, cand, side="left")
    j = tp.astype(np.int64) * n + tn.astype(np.int64) * m  # (J + 1) * m * n, exact
    return float(cand[int(np.argmax(j))])
