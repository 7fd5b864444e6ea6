"""DL-US&MRI fusion (paper, Methods: "we developed the DL-US&MRI model using logistic regression, incorporating
the predictive values of DL-US and DL-MRI ... in the test cohort").

Science layer: pure functions on prediction tables; reading and writing the run's files is
:func:`her2lib.stages.fusion.run_fusion`'s job.

The fused model is a logistic regression of HER2 status on the two models' probabilities on the logit scale::

    logit P(HER2+) = b0 + b_us * logit(p_us) + b_mri * logit(p_mri)

with probabilities clipped to ``[1e-6, 1 - 1e-6]`` before the logit.

Two protocols are implemented and always labelled:

``"leakage-free"`` (the her2lib default)
    The regression is fitted on the **training cohort's out-of-fold (OOF)** DL-US and DL-MRI probabilities and
    applied once to the test cohort. What is and is not held out:

    * The coefficients never read a test label, and the test cohort chooses nothing.
    * The training-cohort fusion scores are *cross-fitted* over the same four folds: the regression that scores
      fold k is fitted on the other three folds' OOF probabilities, so it never read a label of fold k.
    * Its inputs are not fully independent of fold k, though: the OOF probabilities of the other folds come from
      DL models that were trained on fold k. The held-out property holds at the fusion level only.

    **One scale.** OOF probabilities are single-fold-model probabilities, so the regression is applied to each
    fold model's test probabilities (``{us,mri}_test_folds.csv``: DL-US fold k with DL-MRI fold k) and the four
    fused probabilities are averaged afterwards (``fusion_test.csv``; per fold model in
    ``fusion_test_folds.csv``). Applying it to the fold-mean probabilities instead, whose spread is smaller, would
    change its slope (simulation in ``tests/test_fusion.py``). When the per-fold files are absent (prediction files
    made elsewhere) the fold-mean inputs are used and the protocol table says so.
``"paper"``
    The paper's protocol: the regression is fitted in the test cohort (on the models' test probabilities) and
    evaluated on the same patients. :func:`fuse` reports the test AUC difference paper-protocol minus
    leakage-free with a stratified bootstrap interval over test patients (the paper fit refitted in every
    resample). It is one difference on a small cohort, not a measurement of the leak alone: the two protocols also
    differ in which inputs and which patients the fit used.

Patients are joined by ``patient_id``; a US/MRI mismatch (missing patient, different label, split or fold) is a
:class:`~her2lib.errors.DataError` that lists every offending patient. Prediction tables are validated once, where
they enter (:func:`her2lib.contract.read_predictions` in the stage, or :func:`fuse` for tables built in memory);
``check_input=False`` skips the repeat for tables that were.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

from .contract import TEST_FOLD_COLUMNS, validate_predictions, validate_test_folds
from .errors import DataError, ParameterError
from .stats._common import as_binary_labels, as_probabilities, logistic_fit
from .stats.roc import auc

__all__ = [
    "EPS",
    "logit",
    "joined_pairs",
    "join_modalities",
    "FusionModel",
    "fit_fusion",
    "cross_fit_oof",
    "FusionResult",
    "protocol_difference_ci",
    "fuse",
    "apply_fusion",
]

EPS = 1e-6
_TERMS = ("intercept", "logit_p_us", "logit_p_mri")


# ----------------------------------------------------------------------------------------------------------------
# Prediction tables
# ----------------------------------------------------------------------------------------------------------------
def logit(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Logit of probabilities clipped to ``[eps, 1 - eps]``.

    Parameters
    ----------
    p : array_like, shape (n_patients,)
        Probabilities in [0, 1].
    eps : float
        Clipping bound, so that p = 0 or 1 gives a finite value (``logit(1e-6) = -13.8``).

    Returns
    -------
    ndarray, shape (n_patients,), float64
    """
    if not 0 < eps < 0.5:
        raise ParameterError(f"eps must lie in (0, 0.5); got {eps!r}.")
    q = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)


def joined_pairs(
    us: pd.DataFrame, mri: pd.DataFrame, *, label: str, us_source: str, mri_source: str, fix: str
) -> pd.DataFrame:
    """The inner join of two validated prediction tables on ``patient_id`` (columns suffixed ``_us`` / ``_mri``);
    a DataError listing every patient in one table only or whose ``label``, ``split`` or ``fold`` differ, ending in
    "Re-run 03_train_us and 04_train_mri ``fix``." Shared by the binary and the class-task fusion."""
    m = us.merge(mri, on="patient_id", how="outer", suffixes=("_us", "_mri"), indicator=True)
    problems: list[str] = []
    for side, here, there in (("left_only", us_source, mri_source), ("right_only", mri_source, us_source)):
        only = sorted(m.loc[m["_merge"] == side, "patient_id"])
        if only:
            problems.append(f"patients {only[:10]} (n={len(only)}) are in {here} but not in {there}.")
    both = m[m["_merge"] == "both"]
    for col in (label, "split", "fold"):
        diff = sorted(both.loc[both[f"{col}_us"] != both[f"{col}_mri"], "patient_id"])
        if diff:
            problems.append(
                f"{col} differs between {us_source} and {mri_source} for patients {diff[:10]} (n={len(diff)})."
            )
    if problems:
        raise DataError(
            "DL-US and DL-MRI predictions do not describe the same patients: "
            + " ".join(problems)
            + f" Re-run 03_train_us and 04_train_mri {fix}.",
            problems,
        )
    return both


def join_modalities(
    us: pd.DataFrame,
    mri: pd.DataFrame,
    *,
    us_source: str = "DL-US predictions",
    mri_source: str = "DL-MRI predictions",
    check_input: bool = True,
) -> pd.DataFrame:
    """Join DL-US and DL-MRI predictions patient by patient.

    Parameters
    ----------
    us, mri : DataFrame
        Prediction tables (columns ``patient_id, split, fold, her2, p_her2``) of the same patients.
    us_source, mri_source : str
        Names (file paths) used in error messages.
    check_input : bool
        Validate both tables (:func:`her2lib.contract.validate_predictions`); False for tables that already were.

    Returns
    -------
    DataFrame
        Columns ``patient_id, split, fold, her2, p_us, p_mri``, sorted by ``patient_id``.

    Raises
    ------
    DataError
        If a patient is in one table only, or its ``her2``, ``split`` or ``fold`` differ between the tables
        (every offending patient is listed).
    """
    if check_input:
        us = validate_predictions(us, us_source)
        mri = validate_predictions(mri, mri_source)
    both = joined_pairs(
        us, mri, label="her2", us_source=us_source, mri_source=mri_source, fix="on the same cohort and fold assignment"
    )
    out = pd.DataFrame(
        {
            "patient_id": both["patient_id"],
            "split": both["split_us"],
            "fold": both["fold_us"].astype(int),
            "her2": both["her2_us"].astype(int),
            "p_us": both["p_her2_us"].astype(float),
            "p_mri": both["p_her2_mri"].astype(float),
        }
    )
    return out.sort_values("patient_id", kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# The logistic regression
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionModel:
    """A fitted DL-US&MRI logistic regression.

    Attributes
    ----------
    params, bse, ci_low, ci_high, pvalues : tuple of float
        Per term (``intercept, logit_p_us, logit_p_mri``): coefficient (log-odds per unit logit), standard error,
        Wald CI bounds at ``level`` and Wald P value. NaN when ``method`` is the penalised fallback.
    level : float
        Confidence level of the CIs.
    fit_on : str
        Which patients the model was fitted on (e.g. ``"train OOF"``, ``"test (paper protocol)"``).
    n, n_pos, n_neg : int
        Patients used in the fit.
    method : str
        ``"logit MLE (statsmodels)"``, or ``"L2-penalised logit (separation)"`` when the MLE does not exist
        (perfect separation, non-convergence); the penalised fit still ranks patients but has no CIs.
    eps : float
        Probability clipping bound used before the logit.
    """

    params: tuple[float, float, float]
    bse: tuple[float, float, float]
    ci_low: tuple[float, float, float]
    ci_high: tuple[float, float, float]
    pvalues: tuple[float, float, float]
    level: float
    fit_on: str
    n: int
    n_pos: int
    n_neg: int
    method: str
    eps: float = EPS
    terms: tuple[str, str, str] = field(default=_TERMS)

    def linear_predictor(self, p_us: np.ndarray, p_mri: np.ndarray) -> np.ndarray:
        """Fused log-odds, shape (n_patients,)."""
        p_us, p_mri = _check_pair(p_us, p_mri)
        b0, b1, b2 = self.params
        return b0 + b1 * logit(p_us, self.eps) + b2 * logit(p_mri, self.eps)

    def predict(self, p_us: np.ndarray, p_mri: np.ndarray) -> np.ndarray:
        """Fused probability of HER2-positive, shape (n_patients,), from the two models' probabilities."""
        eta = self.linear_predictor(p_us, p_mri)
        return 1.0 / (1.0 + np.exp(-eta))

    def to_frame(self) -> pd.DataFrame:
        """Coefficient table: one row per term with coefficient, SE, CI, odds ratio per unit logit and P."""
        rows = []
        for i, term in enumerate(self.terms):
            rows.append(
                {
                    "fit_on": self.fit_on,
                    "term": term,
                    "coef": self.params[i],
                    "se": self.bse[i],
                    "ci_low": self.ci_low[i],
                    "ci_high": self.ci_high[i],
                    "ci_level": self.level,
                    "odds_ratio": float(np.exp(self.params[i])),
                    "p_value": self.pvalues[i],
                    "n": self.n,
                    "n_pos": self.n_pos,
                    "n_neg": self.n_neg,
                    "method": self.method,
                }
            )
        return pd.DataFrame(rows)


def _check_pair(p_us, p_mri) -> tuple[np.ndarray, np.ndarray]:
    """Both models' probabilities as float arrays of one length (the validator of :mod:`her2lib.stats`)."""
    a = as_probabilities(p_us, np.shape(p_us)[0] if np.ndim(p_us) else 0, "p_us", against="p_us")
    return a, as_probabilities(p_mri, a.shape[0], "p_mri", against="p_us")


def fit_fusion(
    p_us: np.ndarray,
    p_mri: np.ndarray,
    y_true: np.ndarray,
    *,
    fit_on: str = "train OOF",
    level: float = 0.95,
    eps: float = EPS,
) -> FusionModel:
    """Fit the DL-US&MRI logistic regression by maximum likelihood (statsmodels ``Logit``).

    Parameters
    ----------
    p_us, p_mri : array_like, shape (n_patients,)
        DL-US and DL-MRI probabilities of HER2-positive.
    y_true : array_like, shape (n_patients,)
        HER2 status, 1 = positive.
    fit_on : str
        Label stored in the result (which patients these are).
    level : float
        Confidence level of the Wald CIs.
    eps : float
        Probability clipping bound before the logit.

    Returns
    -------
    FusionModel

    Raises
    ------
    DataError
        Labels not 0/1, lengths differ, a probability not finite or outside [0, 1], fewer than 2 patients of a
        class.

    Notes
    -----
    If the MLE does not exist (perfect separation, |coefficient| > 50) or does not converge, a weak L2 penalty
    on all three terms (``alpha = 1 / n``, statsmodels ``GLM.fit_regularized``) is used instead, a warning is
    issued and the CIs/P values are NaN.
    """
    y = as_binary_labels(y_true).astype(float)
    p_us = as_probabilities(p_us, y.shape[0], "p_us")
    p_mri = as_probabilities(p_mri, y.shape[0], "p_mri")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos < 2 or n_neg < 2:
        raise DataError(
            f"fusion fit on {fit_on}: needs at least 2 HER2-positive and 2 HER2-negative patients; "
            f"got {n_pos} and {n_neg}. Use a larger cohort (profile) for fusion."
        )
    if not 0 < level < 1:
        raise ParameterError(f"level must lie in (0, 1); got {level!r}.")
    X = np.column_stack([np.ones_like(p_us), logit(p_us, eps), logit(p_mri, eps)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(y, X).fit(disp=0, method="newton", maxiter=100)
            ok = bool(res.mle_retvals.get("converged", False))
        except np.linalg.LinAlgError:
            res, ok = None, False
    ok = ok and not any(issubclass(w.category, (PerfectSeparationWarning, ConvergenceWarning)) for w in caught)
    if ok:
        params = np.asarray(res.params, dtype=float)
        ok = bool(np.all(np.isfinite(res.bse))) and float(np.max(np.abs(params))) < 50
    if ok:
        ci = np.asarray(res.conf_int(alpha=1 - level), dtype=float)
        return FusionModel(
            params=tuple(map(float, res.params)),
            bse=tuple(map(float, res.bse)),
            ci_low=tuple(map(float, ci[:, 0])),
            ci_high=tuple(map(float, ci[:, 1])),
            pvalues=tuple(map(float, res.pvalues)),
            level=level,
            fit_on=fit_on,
            n=int(y.size),
            n_pos=n_pos,
            n_neg=n_neg,
            method="logit MLE (statsmodels)",
            eps=eps,
        )
    return _penalised_fit(X, y, fit_on=fit_on, level=level, n_pos=n_pos, n_neg=n_neg, eps=eps)


def _penalised_fit(
    X: np.ndarray, y: np.ndarray, *, fit_on: str, level: float, n_pos: int, n_neg: int, eps: float
) -> FusionModel:
    """The fallback of :func:`fit_fusion` when the MLE does not exist: weak L2 penalty, no CIs, a warning."""
    warnings.warn(
        f"fusion fit on {fit_on}: the maximum-likelihood logistic regression does not exist "
        "(perfect separation or no convergence); using a weakly L2-penalised fit without CIs.",
        UserWarning,
        stacklevel=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pen = sm.GLM(y, X, family=sm.families.Binomial()).fit_regularized(alpha=1.0 / y.size, L1_wt=0.0)
    nan3 = (float("nan"),) * 3
    return FusionModel(
        params=tuple(map(float, pen.params)),
        bse=nan3,
        ci_low=nan3,
        ci_high=nan3,
        pvalues=nan3,
        level=level,
        fit_on=fit_on,
        n=int(y.size),
        n_pos=n_pos,
        n_neg=n_neg,
        method="L2-penalised logit (separation)",
        eps=eps,
    )


def cross_fit_oof(train: pd.DataFrame, *, level: float = 0.95, eps: float = EPS) -> pd.DataFrame:
    """Cross-fitted out-of-fold fusion predictions for the training cohort.

    For each fold k the regression is fitted on the other folds' OOF predictions and applied to fold k, so no
    training patient's fusion score depends on its own label.

    Parameters
    ----------
    train : DataFrame
        Output of :func:`join_modalities` restricted to training patients (``fold >= 0``).

    Returns
    -------
    DataFrame
        Columns ``patient_id, split, fold, her2, p_her2`` in the order of ``train``.
    """
    if (train["split"] != "train").any():
        raise DataError(
            "cross_fit_oof: only training-cohort (OOF) rows may be used; found test rows "
            f"{train.loc[train['split'] != 'train', 'patient_id'].tolist()[:10]}."
        )
    folds = sorted(train["fold"].unique())
    if len(folds) < 2:
        raise DataError(f"cross_fit_oof: needs at least 2 folds in the OOF predictions; found {folds}.")
    p = np.full(len(train), np.nan)
    for k in folds:
        held = (train["fold"] == k).to_numpy()
        fit = fit_fusion(
            train.loc[~held, "p_us"],
            train.loc[~held, "p_mri"],
            train.loc[~held, "her2"],
            fit_on=f"train OOF folds != {k}",
            level=level,
            eps=eps,
        )
        p[held] = fit.predict(train.loc[held, "p_us"], train.loc[held, "p_mri"])
    return pd.DataFrame(
        {
            "patient_id": train["patient_id"].to_numpy(),
            "split": "train",
            "fold": train["fold"].to_numpy(),
            "her2": train["her2"].to_numpy(),
            "p_her2": p,
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# Both protocols
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionResult:
    """Everything :func:`fuse` computes.

    Attributes
    ----------
    model : FusionModel
        Leakage-free fit (training OOF predictions).
    paper_model : FusionModel
        The paper's protocol (fitted in the test cohort).
    oof : DataFrame
        Cross-fitted OOF fusion predictions of the training cohort (prediction-file columns).
    test : DataFrame
        Leakage-free fusion predictions of the test cohort (``fold = -1``): the mean over fold models of the
        fused per-fold-model probabilities (or, without per-fold inputs, the fusion of the fold-mean inputs).
    test_folds : DataFrame or None
        Fused probability of each fold model pair (:data:`TEST_FOLD_COLUMNS`); None without per-fold inputs.
    paper_test : DataFrame
        Paper-protocol (in-sample) fusion predictions of the test cohort.
    protocols : DataFrame
        One row per protocol: fitted on, applied to, evaluated on, test AUC, and the AUC difference paper minus
        leakage-free with its bootstrap interval.
    coefficients : DataFrame
        Both fits' coefficient tables stacked (``FusionModel.to_frame``), column ``protocol`` added.
    """

    model: FusionModel
    paper_model: FusionModel
    oof: pd.DataFrame
    test: pd.DataFrame
    paper_test: pd.DataFrame
    protocols: pd.DataFrame
    coefficients: pd.DataFrame
    test_folds: pd.DataFrame | None = None


def _pred_frame(df: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": df["patient_id"].to_numpy(),
            "split": df["split"].to_numpy(),
            "fold": df["fold"].to_numpy(),
            "her2": df["her2"].to_numpy(),
            "p_her2": p,
        }
    )


def _join_test_folds(us: pd.DataFrame, mri: pd.DataFrame) -> pd.DataFrame:
    """Pair DL-US fold k with DL-MRI fold k for every test patient."""
    m = us.merge(mri, on=["patient_id", "model_fold"], how="outer", suffixes=("_us", "_mri"), indicator=True)
    bad = m.loc[m["_merge"] != "both", ["patient_id", "model_fold"]]
    if len(bad):
        raise DataError(
            "us_test_folds and mri_test_folds do not hold the same (patient, fold model) pairs: "
            f"{bad.head(10).to_records(index=False).tolist()}. Train DL-US and DL-MRI with the same folds "
            "(notebooks 03 and 04 on one folds.csv)."
        )
    if (m["her2_us"] != m["her2_mri"]).any():
        raise DataError(
            "us_test_folds and mri_test_folds disagree on HER2 status for patients "
            f"{sorted(set(m.loc[m['her2_us'] != m['her2_mri'], 'patient_id']))[:10]}."
        )
    return m.sort_values(["patient_id", "model_fold"], kind="mergesort").reset_index(drop=True)


def _refit(X: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray | None:
    """Logistic refit for the bootstrap (:func:`her2lib.stats._common.logistic_fit`), optionally with an L2 penalty
    ``ridge / 2 * |b|^2`` on the non-intercept terms; None when it does not converge or a coefficient exceeds 50
    (separation), the rule of :func:`fit_fusion`."""
    fit = logistic_fit(X, y, penalty=np.r_[0.0, np.full(X.shape[1] - 1, float(ridge))] if ridge else None)
    if fit is None or not np.all(np.isfinite(fit[0])) or np.max(np.abs(fit[0])) > 50:
        return None
    return fit[0]


def protocol_difference_ci(
    y: np.ndarray,
    p_free: np.ndarray,
    x_paper: tuple[np.ndarray, np.ndarray],
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    eps: float = EPS,
) -> tuple[float, float, int]:
    """Stratified bootstrap interval of ``AUC(paper protocol) - AUC(leakage-free)`` on the test cohort.

    Each resample draws HER2-positive and HER2-negative test patients with replacement (sizes kept), refits the
    paper-protocol regression on the resample's inputs ``x_paper = (p_us, p_mri)`` and takes the difference of the
    two AUCs on the resample (the leakage-free predictions ``p_free`` are fixed: they were fitted on OOF data).
    A resample whose maximum-likelihood fit does not exist (separation, frequent on small cohorts) is refitted with
    a weak L2 penalty (1 / n_patients on each slope), as :func:`fit_fusion` does, so no resample is dropped for
    being too easy.

    Returns
    -------
    (low, high, n_penalised)
        Percentile interval at ``level`` and the number of resamples that needed the penalised fit.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y).astype(int)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    X = np.column_stack([np.ones(y.size), logit(x_paper[0], eps), logit(x_paper[1], eps)])
    diffs, penalised = [], 0
    for _ in range(int(n_boot)):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        beta = _refit(X[idx], y[idx].astype(float))
        if beta is None:
            penalised += 1
            beta = _refit(X[idx], y[idx].astype(float), ridge=1.0 / y.size)
        if beta is None:
            continue
        diffs.append(auc(y[idx], X[idx] @ beta) - auc(y[idx], p_free[idx]))
    if len(diffs) < 10:
        return float("nan"), float("nan"), penalised
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi), penalised


def fuse(
    us_oof: pd.DataFrame,
    mri_oof: pd.DataFrame,
    us_test: pd.DataFrame,
    mri_test: pd.DataFrame,
    *,
    level: float = 0.95,
    eps: float = EPS,
    us_test_folds: pd.DataFrame | None = None,
    mri_test_folds: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    check_input: bool = True,
) -> FusionResult:
    """Run the leakage-free fusion and the paper's protocol.

    Parameters
    ----------
    us_oof, mri_oof : DataFrame
        Training-cohort OOF predictions of DL-US and DL-MRI (``split == "train"``).
    us_test, mri_test : DataFrame
        Test-cohort predictions (``split == "test"``, ``fold == -1``): the mean of the fold models.
    level : float
        Confidence level of the coefficient CIs and of the protocol-difference interval.
    eps : float
        Probability clipping bound before the logit.
    us_test_folds, mri_test_folds : DataFrame, optional
        Each fold model's test predictions (:data:`~her2lib.contract.TEST_FOLD_COLUMNS`). When both are given (the
        default output of notebooks 03/04), the OOF-fitted regression is applied to each fold model pair and the
        fused probabilities are averaged: fitted and applied on the same scale. Otherwise it is applied to the
        fold-mean inputs, and the protocol table says so.
    n_boot, seed : int
        Bootstrap resamples and seed of the protocol-difference interval.
    check_input : bool
        Validate the tables (:func:`her2lib.contract.validate_predictions` with the expected split,
        :func:`~her2lib.contract.validate_test_folds` against the fold-mean tables). False when they were validated
        where they were read (:func:`her2lib.contract.read_predictions` with ``split``,
        :func:`~her2lib.contract.read_test_folds` with ``test``), so each table is checked once.

    Returns
    -------
    FusionResult
        The test predictions of the leakage-free model depend only on the training rows' labels (the coefficient
        fit never reads a test label).
    """
    if check_input:
        us_oof = validate_predictions(us_oof, "us_oof", split="train")
        mri_oof = validate_predictions(mri_oof, "mri_oof", split="train")
        us_test = validate_predictions(us_test, "us_test", split="test")
        mri_test = validate_predictions(mri_test, "mri_test", split="test")
    train = join_modalities(us_oof, mri_oof, us_source="us_oof", mri_source="mri_oof", check_input=False)
    test = join_modalities(us_test, mri_test, us_source="us_test", mri_source="mri_test", check_input=False)
    overlap = sorted(set(train["patient_id"]) & set(test["patient_id"]))
    if overlap:
        raise DataError(f"patients {overlap[:10]} appear in both the OOF (train) and the test predictions.")
    if check_input and us_test_folds is not None and mri_test_folds is not None:
        us_test_folds = validate_test_folds(
            us_test_folds, "us_test_folds", test=test.rename(columns={"p_us": "p_her2"})
        )
        mri_test_folds = validate_test_folds(
            mri_test_folds, "mri_test_folds", test=test.rename(columns={"p_mri": "p_her2"})
        )

    model = fit_fusion(train["p_us"], train["p_mri"], train["her2"], fit_on="train OOF", level=level, eps=eps)
    oof = cross_fit_oof(train, level=level, eps=eps)
    test_pred, test_folds, applied_to = _apply_leakage_free(model, test, us_test_folds, mri_test_folds)
    paper_model = fit_fusion(
        test["p_us"], test["p_mri"], test["her2"], fit_on="test (paper protocol)", level=level, eps=eps
    )
    paper_pred = _pred_frame(test, paper_model.predict(test["p_us"], test["p_mri"]))
    protocols = _protocol_table(
        model,
        paper_model,
        test,
        oof,
        test_pred,
        paper_pred,
        applied_to=applied_to,
        level=level,
        n_boot=n_boot,
        seed=seed,
        eps=eps,
    )
    coefs = pd.concat(
        [
            model.to_frame().assign(protocol="leakage-free (her2lib default)"),
            paper_model.to_frame().assign(protocol="paper (fit in the test cohort)"),
        ],
        ignore_index=True,
    )
    coefs = coefs[["protocol"] + [c for c in coefs.columns if c != "protocol"]]
    return FusionResult(
        model=model,
        paper_model=paper_model,
        oof=oof,
        test=test_pred,
        paper_test=paper_pred,
        protocols=protocols,
        coefficients=coefs,
        test_folds=test_folds,
    )


def apply_fusion(
    model: FusionModel,
    us: pd.DataFrame,
    mri: pd.DataFrame,
    *,
    us_folds: pd.DataFrame | None = None,
    mri_folds: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The leakage-free fusion model (fitted on the training OOF predictions by :func:`fuse`) applied to another
    evaluation cohort, e.g. the external validation cohort, exactly as :func:`fuse` applies it to the test cohort.

    Parameters
    ----------
    model : FusionModel
        :attr:`FusionResult.model`. Nothing is refitted: the cohort's labels are never read.
    us, mri : DataFrame
        Both models' fold-mean predictions of the cohort (prediction-file columns, ``fold == -1``), validated.
    us_folds, mri_folds : DataFrame, optional
        Each fold model's predictions of the cohort (:data:`~her2lib.contract.TEST_FOLD_COLUMNS`), validated against
        ``us`` / ``mri``: when both are given the model is applied per fold model pair and the results averaged.

    Returns
    -------
    (DataFrame, DataFrame or None)
        The fused fold-mean predictions (prediction-file columns) and the per-fold-pair ones (or None).
    """
    joined = join_modalities(us, mri, us_source="DL-US", mri_source="DL-MRI", check_input=False)
    pred, folds, _ = _apply_leakage_free(model, joined, us_folds, mri_folds)
    return pred, folds


def _apply_leakage_free(
    model: FusionModel, test: pd.DataFrame, us_test_folds: pd.DataFrame | None, mri_test_folds: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """The leakage-free model on the test cohort: per fold model pair then averaged when both per-fold tables
    exist, else on the fold-mean inputs. Returns ``(test predictions, per-fold predictions or None, applied_to)``."""
    if us_test_folds is None or mri_test_folds is None:
        return (
            _pred_frame(test, model.predict(test["p_us"], test["p_mri"])),
            None,
            "fold-mean test predictions (no per-fold files; scale differs from OOF)",
        )
    tf = _join_test_folds(us_test_folds, mri_test_folds)
    fused = model.predict(tf["p_her2_us"].to_numpy(), tf["p_her2_mri"].to_numpy())
    test_folds = pd.DataFrame(
        {
            "patient_id": tf["patient_id"],
            "split": tf["split_us"],
            "her2": tf["her2_us"],
            "model_fold": tf["model_fold"],
            "p_her2": fused,
        }
    )[list(TEST_FOLD_COLUMNS)]
    mean = test_folds.groupby("patient_id")["p_her2"].mean()
    return (
        _pred_frame(test, mean.loc[test["patient_id"]].to_numpy()),
        test_folds,
        "each fold model's test predictions, fused then averaged",
    )


def _protocol_table(
    model: FusionModel,
    paper_model: FusionModel,
    test: pd.DataFrame,
    oof: pd.DataFrame,
    test_pred: pd.DataFrame,
    paper_pred: pd.DataFrame,
    *,
    applied_to: str,
    level: float,
    n_boot: int,
    seed: int,
    eps: float,
) -> pd.DataFrame:
    """One row per protocol: fitted on, applied to, evaluated on, test AUC, and the AUC difference paper minus
    leakage-free with its bootstrap interval."""
    y_test = test["her2"].to_numpy()
    auc_free = float(auc(y_test, test_pred["p_her2"].to_numpy()))
    auc_paper = float(auc(y_test, paper_pred["p_her2"].to_numpy()))
    auc_oof = float(auc(oof["her2"].to_numpy(), oof["p_her2"].to_numpy()))
    lo, hi, n_pen = protocol_difference_ci(
        y_test,
        test_pred["p_her2"].to_numpy(),
        (test["p_us"].to_numpy(), test["p_mri"].to_numpy()),
        level=level,
        n_boot=n_boot,
        seed=seed,
        eps=eps,
    )
    boot = (
        f"percentile, stratified bootstrap of test patients ({n_boot} resamples, seed {seed}), paper fit refitted "
        f"per resample ({n_pen} with a weak L2 penalty: no MLE)"
    )
    nan = float("nan")
    return pd.DataFrame(
        [
            {
                "protocol": "leakage-free (her2lib default)",
                "fit_on": "train OOF",
                "n_fit": model.n,
                "applied_to": applied_to,
                "evaluated_on": "test",
                "n_eval": len(test),
                "auc": auc_free,
                "auc_diff_vs_leakage_free": 0.0,
                "auc_diff_ci_low": nan,
                "auc_diff_ci_high": nan,
                "ci_level": level,
                "ci_method": "",
                "auc_train_oof_crossfit": auc_oof,
                "method": model.method,
            },
            {
                "protocol": "paper (fit in the test cohort)",
                "fit_on": "test (fold-mean predictions)",
                "n_fit": paper_model.n,
                "applied_to": "the same test patients",
                "evaluated_on": "test (same patients)",
                "n_eval": len(test),
                "auc": auc_paper,
                "auc_diff_vs_leakage_free": auc_paper - auc_free,
                "auc_diff_ci_low": lo,
                "auc_diff_ci_high": hi,
                "ci_level": level,
                "ci_method": boot,
                "auc_train_oof_crossfit": nan,
                "method": paper_model.method,
            },
        ]
    )
