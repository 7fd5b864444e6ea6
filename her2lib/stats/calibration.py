"""Calibration of predicted probabilities (paper, *Statistical analysis*: calibration curves of the models).

Science layer. :func:`brier_score` and :func:`calibration_curve` (the reliability curve) are the descriptive
measures; :func:`calibration` returns the two logistic calibration measures of Van Calster et al. (2016) and Steyerberg
(*Clinical Prediction Models*, 2nd ed., 2019, ch. 15), plus the Brier score:

* **calibration intercept** (calibration-in-the-large): ``a`` in ``logit P(y = 1) = a + offset(logit p)``, the
  slope fixed at 1. ``a > 0``: the model under-predicts on average; ``a < 0``: it over-predicts. Target 0.
* **calibration slope**: ``b`` in ``logit P(y = 1) = a' + b logit p`` (logistic recalibration). ``b < 1``:
  predictions too extreme (over-fitting); ``b > 1``: too moderate. Target 1.

The intercept ``a'`` of the joint (slope) fit is *not* the calibration intercept: for a model whose predictions
are ``sigmoid(2 L)`` when the true risk is ``sigmoid(L)``, ``a' = 0`` and ``b = 0.5`` although the model
under-predicts everywhere below 0.5 (calibration intercept about 0.68 in ``tests/test_stats_calibration.py``).
It is returned as ``slope_fit_intercept`` only for completeness.

Both fits are maximum likelihood by our own Newton-Raphson iteration (numpy); the confidence intervals are Wald
intervals from the observed information (equal to the expected information for the logit link). Checked against
statsmodels ``GLM(Binomial, offset = logit p)`` and ``Logit`` (1e-8) and R 4.2 ``glm(..., family = binomial)``
with ``confint.default`` (fixture ``tests/fixtures/calibration_reference.json``).

References
----------
Van Calster B, Nieboer D, Vergouwe Y, De Cock B, Pencina MJ, Steyerberg EW. A calibration hierarchy for risk
models was defined: from utopia to empirical data. *J Clin Epidemiol* 2016;74:167-176.
Steyerberg EW. *Clinical Prediction Models*, 2nd ed. Springer, 2019.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..errors import ParameterError, UndefinedMetricWarning
from ..options import look_up_option
from ._common import as_binary_labels, as_probabilities, check_level, clopper_pearson, logistic_fit

__all__ = ["calibration", "CalibrationResult", "brier_score", "calibration_curve", "CALIBRATION_BINS"]

#: Binning strategies of :func:`calibration_curve`.
CALIBRATION_BINS = ("quantile", "uniform")


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration intercept and slope with Wald intervals, Brier score and observed vs predicted rates.

    Attributes
    ----------
    intercept : float
        Calibration intercept (calibration-in-the-large): ``a`` of ``logit P(y=1) = a + offset(logit p)``.
        Target 0; positive = under-prediction. NaN if undefined (single class).
    intercept_se : float
        Its standard error (inverse observed information).
    intercept_ci : tuple (low, high, level)
        Wald interval ``intercept ± z * intercept_se``.
    slope : float
        Calibration slope: ``b`` of ``logit P(y=1) = a' + b logit p``. Target 1. NaN if the maximum likelihood
        estimate does not exist (separation, constant predictions, single class).
    slope_se : float
    slope_ci : tuple (low, high, level)
        Wald interval ``slope ± z * slope_se``.
    slope_fit_intercept : float
        ``a'`` of the slope fit. Not the calibration intercept (module docstring); for completeness only.
    brier : float
        Mean squared error ``mean((p - y)^2)`` of the unclipped predictions.
    brier_reference : float
        Brier score of the prevalence-only forecast, ``prev * (1 - prev)``.
    mean_predicted, observed_rate : float
        ``mean(p)`` and ``mean(y)``.
    n, n_pos : int
        Patients and HER2-positive patients.
    n_clipped : int
        Predictions clipped to ``[eps, 1 - eps]`` before ``logit``.
    method : str
        What was computed and the references.
    """

    intercept: float
    intercept_se: float
    intercept_ci: tuple[float, float, float]
    slope: float
    slope_se: float
    slope_ci: tuple[float, float, float]
    slope_fit_intercept: float
    brier: float
    brier_reference: float
    mean_predicted: float
    observed_rate: float
    n: int
    n_pos: int
    n_clipped: int
    method: str

    def to_row(self) -> dict:
        """Flat dict; each CI split into ``<name>_ci_low``, ``<name>_ci_high`` and one ``ci_level``."""
        row = {}
        for k in (
            "intercept",
            "intercept_se",
            "slope",
            "slope_se",
            "slope_fit_intercept",
            "brier",
            "brier_reference",
            "mean_predicted",
            "observed_rate",
            "n",
            "n_pos",
            "n_clipped",
        ):
            row[k] = getattr(self, k)
        row["intercept_ci_low"], row["intercept_ci_high"] = self.intercept_ci[0], self.intercept_ci[1]
        row["slope_ci_low"], row["slope_ci_high"] = self.slope_ci[0], self.slope_ci[1]
        row["ci_level"] = self.intercept_ci[2]
        row["method"] = self.method
        return row


def _separated(x: np.ndarray, y: np.ndarray) -> bool:
    """True if one cut on ``x`` separates the classes (completely or quasi-completely).

    For a logistic model with an intercept and one covariate this is exactly when the maximum likelihood estimate
    does not exist (Albert & Anderson 1984).
    """
    x1, x0 = x[y == 1], x[y == 0]
    return bool(x1.min() >= x0.max() or x1.max() <= x0.min())


def _undefined(what: str, why: str, stacklevel: int) -> None:
    warnings.warn(
        f"The calibration {what} is undefined: {why}; returning NaN.", UndefinedMetricWarning, stacklevel=stacklevel
    )


def _intercept_fit(
    lp: np.ndarray, yf: np.ndarray, crit: float, level: float
) -> tuple[float, float, tuple[float, float, float]]:
    """Calibration intercept ``a`` of ``logit P(y=1) = a + offset(logit p)``, its SE and Wald interval."""
    nan = float("nan")
    fit = logistic_fit(np.ones((lp.shape[0], 1)), yf, lp)
    if fit is None:
        _undefined("intercept", "the intercept-only fit with offset logit(p) did not converge", stacklevel=4)
        return nan, nan, (nan, nan, level)
    a, a_se = float(fit[0][0]), float(np.sqrt(fit[1][0, 0]))
    return a, a_se, (a - crit * a_se, a + crit * a_se, level)


def _slope_fit(
    lp: np.ndarray, y: np.ndarray, yf: np.ndarray, crit: float, level: float
) -> tuple[float, float, tuple[float, float, float], float]:
    """Calibration slope ``b`` of ``logit P(y=1) = a' + b logit p``, its SE, Wald interval, and ``a'``."""
    nan = float("nan")
    undefined = (nan, nan, (nan, nan, level), nan)
    if np.ptp(lp) == 0:
        _undefined("slope", "all predictions are equal, so logit(p) has no spread", stacklevel=4)
        return undefined
    if _separated(lp, y):
        _undefined(
            "slope",
            "the predictions separate the classes (every HER2-positive patient's p is >= every "
            "HER2-negative patient's, or <=), so the maximum likelihood slope is infinite",
            stacklevel=4,
        )
        return undefined
    n = lp.shape[0]
    fit = logistic_fit(np.column_stack([np.ones(n), lp]), yf, np.zeros(n))
    if fit is None:
        _undefined("slope", "the fit of y on logit(p) did not converge", stacklevel=4)
        return undefined
    a2, b = float(fit[0][0]), float(fit[0][1])
    b_se = float(np.sqrt(fit[1][1, 1]))
    return b, b_se, (b - crit * b_se, b + crit * b_se, level), a2


def calibration(y_true, y_prob, *, level: float = 0.95, eps: float = 1e-6) -> CalibrationResult:
    """Calibration intercept and slope (logistic, with Wald CIs), Brier score and observed vs predicted rates.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive.
    y_prob : array-like of float in [0, 1], shape (n_patients,)
        Predicted probability of HER2-positive (column ``p_her2``).
    level : float, default 0.95
        Confidence level of the Wald intervals.
    eps : float, default 1e-6
        Predictions are clipped to ``[eps, 1 - eps]`` before ``logit`` (a prediction of exactly 0 or 1 has an
        infinite logit). The Brier score uses the unclipped predictions.

    Returns
    -------
    CalibrationResult
        * ``intercept``: ``a`` of ``glm(y ~ 1, offset = logit(p), family = binomial)`` (slope fixed at 1);
        * ``slope``: ``b`` of ``glm(y ~ logit(p), family = binomial)``;
        * Wald intervals ``estimate ± z_{1-(1-level)/2} * se``, ``se`` from the inverse observed information
          (R's ``confint.default``, not the profile-likelihood ``confint``).

        Undefined fits give NaN with :class:`~her2lib.errors.UndefinedMetricWarning`: a single class (intercept
        and slope), all predictions equal or the classes separated by ``p`` (slope: no finite maximum
        likelihood estimate), or a fit that does not converge.

    Raises
    ------
    DataError
        Labels not 0/1, lengths differ, a prediction not finite or outside [0, 1].
    ParameterError
        ``level`` not in (0, 1) or ``eps`` not in (0, 0.5).

    Notes
    -----
    Van Calster et al. (2016), *J Clin Epidemiol* 74:167-176 (calibration-in-the-large and weak calibration);
    Steyerberg (2019), *Clinical Prediction Models*, ch. 15. Newton-Raphson with step halving, stopped when every
    coefficient moves less than 1e-10. Agrees with statsmodels and R ``glm`` to 1e-8
    (``tests/test_stats_calibration.py``).
    """
    level = check_level(level)
    if not isinstance(eps, (int, float)) or not (0.0 < float(eps) < 0.5):
        raise ParameterError(f"eps must be a number in (0, 0.5) (default 1e-6); got {eps!r}.")
    y = as_binary_labels(y_true)
    p = as_probabilities(y_prob, y.shape[0], "y_prob")
    n = int(y.shape[0])
    n_pos = int(y.sum())
    prev = n_pos / n
    brier = float(np.mean((p - y) ** 2))
    pc = np.clip(p, eps, 1.0 - eps)
    n_clipped = int(np.sum(pc != p))
    lp = np.log(pc) - np.log1p(-pc)
    yf = y.astype(float)
    crit = float(_st.norm.ppf(1 - (1 - level) / 2))
    nan = float("nan")
    if n_pos == 0 or n_pos == n:
        _undefined(
            "intercept and slope",
            f"a single class (n_pos={n_pos}, n_neg={n - n_pos}). Evaluate on a set "
            "with both HER2-positive and HER2-negative patients",
            stacklevel=3,
        )
        a = a_se = b = b_se = a2 = nan
        a_ci = b_ci = (nan, nan, level)
    else:
        a, a_se, a_ci = _intercept_fit(lp, yf, crit, level)
        b, b_se, b_ci, a2 = _slope_fit(lp, y, yf, crit, level)
    method = (
        "Calibration intercept: logistic y ~ 1 + offset(logit p) (calibration-in-the-large); calibration "
        "slope: logistic y ~ a + b logit p (Van Calster et al. 2016; Steyerberg 2019). Maximum likelihood "
        f"(Newton-Raphson); Wald {level:.0%} CIs from the observed information; p clipped to "
        f"[{eps:g}, 1 - {eps:g}] before logit ({n_clipped} clipped). Brier score on unclipped p."
    )
    return CalibrationResult(
        intercept=a,
        intercept_se=a_se,
        intercept_ci=a_ci,
        slope=b,
        slope_se=b_se,
        slope_ci=b_ci,
        slope_fit_intercept=a2,
        brier=brier,
        brier_reference=prev * (1 - prev),
        mean_predicted=float(p.mean()),
        observed_rate=prev,
        n=n,
        n_pos=n_pos,
        n_clipped=n_clipped,
        method=method,
    )


def brier_score(y_true, y_prob) -> float:
    """Brier score ``mean((p - y)^2)`` (0 = perfect; a constant prevalence forecast gives ``prev * (1 - prev)``).

    Parameters
    ----------
    y_true : array_like of 0/1, shape (n_patients,)
    y_prob : array_like of float in [0, 1], shape (n_patients,)

    Raises
    ------
    DataError
        Labels not 0/1, lengths differ, a prediction not finite or outside [0, 1].
    """
    y = as_binary_labels(y_true).astype(int)
    p = as_probabilities(y_prob, y.shape[0])
    return float(np.mean((p - y) ** 2))


def calibration_curve(
    y_true, y_prob, *, n_bins: int = 5, strategy: str = "quantile", level: float = 0.95
) -> pd.DataFrame:
    """Reliability curve: mean predicted probability vs observed HER2-positive fraction per bin.

    Parameters
    ----------
    y_true : array_like of 0/1, shape (n_patients,)
    y_prob : array_like of float in [0, 1], shape (n_patients,)
    n_bins : int
        Number of bins (5 suits a test cohort of ~50 patients).
    strategy : {"quantile", "uniform"}
        ``"quantile"``: bins with (nearly) equal numbers of patients (ranks split by ``np.array_split`` after a
        stable sort), ``"uniform"``: equal-width bins on [0, 1] (empty bins dropped).
    level : float
        Level of the Clopper-Pearson interval of the observed fraction.

    Returns
    -------
    DataFrame
        Columns ``bin, n, p_low, p_high, mean_predicted, observed, observed_ci_low, observed_ci_high``.
    """
    y = as_binary_labels(y_true).astype(int)
    p = as_probabilities(y_prob, y.shape[0])
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ParameterError(f"n_bins must be a positive integer; got {n_bins!r}.")
    look_up_option(strategy, CALIBRATION_BINS, name="strategy")
    if strategy == "quantile":
        order = np.argsort(p, kind="stable")
        groups = [g for g in np.array_split(order, min(n_bins, y.size)) if g.size]
    else:
        idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(n_bins)]
        groups = [g for g in groups if g.size]
    rows = []
    for b, g in enumerate(groups):
        k, n = int(y[g].sum()), int(g.size)
        lo, hi = clopper_pearson(k, n, level)
        rows.append(
            {
                "bin": b,
                "n": n,
                "p_low": float(p[g].min()),
                "p_high": float(p[g].max()),
                "mean_predicted": float(p[g].mean()),
                "observed": k / n,
                "observed_ci_low": lo,
                "observed_ci_high": hi,
            }
        )
    return pd.DataFrame(rows)
