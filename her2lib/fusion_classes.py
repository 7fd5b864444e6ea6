"""DL-US&MRI fusion for the class tasks (issue 13: ``three-class`` zero / low / positive, ``low-vs-zero``).

Science layer: pure functions on class-task prediction tables (:func:`her2lib.contract.class_prediction_columns`);
reading and writing the run's files is :func:`her2lib.stages.fusion.run_fusion`'s job. The binary task's fusion is
:mod:`her2lib.fusion`, unchanged.

The fused model is a **multinomial logistic regression** of the HER2 class on both models' log-probabilities. With
classes ``c_0, ..., c_{K-1}`` (``task.classes``; ``c_0`` = HER2-zero is the reference) and each model's
probabilities clipped to ``[eps, 1 - eps]`` and renormalised, the features of a patient are the ``K - 1``
log-ratios ``r_m,j = log(p_m,j / p_m,0)`` of each model ``m`` (DL-US, DL-MRI), and for every class ``k >= 1``::

    log P(c_k) / P(c_0) = b_k0 + sum_j b_k,US,j * r_US,j + sum_j b_k,MRI,j * r_MRI,j

that is ``2 (K - 1) + 1`` coefficients per non-reference class. For ``K = 2`` (``low-vs-zero``) the one log-ratio
is the logit of ``p_low`` and the model is the binary fusion of :func:`her2lib.fusion.fit_fusion` on log-odds.

It is fitted by maximum likelihood (statsmodels ``MNLogit``, Wald intervals). When the MLE does not exist
(separation, no convergence, a coefficient beyond 50 on the log-odds scale) a weakly L2-penalised fit is used, as
in the binary fusion (penalty ``|B|^2 / 2`` on the log-likelihood, every term: statsmodels'
``GLM.fit_regularized(alpha=1/n, L1_wt=0)`` of the binary fallback), with a warning, no intervals, and the
coefficient table's ``method`` says so.

The protocol is the binary fusion's leakage-free one (see :mod:`her2lib.fusion`), and only that one: the paper's
protocol (fit in the test cohort) is a binary-task comparison.

* The regression is fitted on the **training cohort's out-of-fold (OOF)** probabilities; no test label is read.
* The training cohort's fusion scores are **cross-fitted** over the same CV folds (the ``fold`` column): the
  regression that scores fold k never read a label of fold k (its inputs came from DL models that did train on
  fold k: the held-out property holds at the fusion level only).
* **One scale.** OOF probabilities are single-fold-model probabilities, so the regression is applied to each fold
  model pair of test probabilities (DL-US fold k with DL-MRI fold k, ``{us,mri}_test_folds.csv``) and the fused
  probabilities are averaged over fold models. Without per-fold files the fold-mean inputs are fused, and the
  result's ``protocol`` says so.

Patients are joined by ``patient_id``; a US/MRI mismatch (a patient missing, a different class, split or fold) is a
:class:`~her2lib.errors.DataError` listing every offending patient.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

from .contract import (
    MODALITIES,
    Task,
    class_prediction_columns,
    class_test_fold_columns,
    validate_class_predictions,
    validate_class_test_folds,
)
from .contract import task as _get_task
from .errors import DataError, ParameterError
from .fusion import EPS, joined_pairs
from .stats._common import as_class_labels, as_probability_matrix, check_classes, check_level
from .stats.roc import auc

__all__ = [
    "EPS",
    "log_ratios",
    "join_class_modalities",
    "ClassFusionModel",
    "fit_class_fusion",
    "cross_fit_class_oof",
    "ClassFusionResult",
    "fuse_classes",
]

_MODS = ("us", "mri")
_MLE = "multinomial logit MLE (statsmodels MNLogit)"
_PENALISED = "L2-penalised multinomial logit (separation)"
#: |coefficient| above which the MLE is taken not to exist (the rule of :func:`her2lib.fusion.fit_fusion`)
_MAX_COEF = 50.0


# ----------------------------------------------------------------------------------------------------------------
# Features and prediction tables
# ----------------------------------------------------------------------------------------------------------------
def log_ratios(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Log-ratios ``log(p_k / p_0)``, k = 1..K-1, of class probabilities clipped to ``[eps, 1 - eps]`` and
    renormalised.

    Parameters
    ----------
    p : array_like, shape (n_patients, n_classes)
        Class probabilities (column 0 is the reference class).
    eps : float
        Clipping bound, so that a probability of 0 or 1 gives a finite ratio (``log(1e-6) = -13.8``).

    Returns
    -------
    ndarray, shape (n_patients, n_classes - 1), float64
        For two classes, the logit of ``p[:, 1]`` (:func:`her2lib.fusion.logit`).
    """
    if not 0 < eps < 0.5:
        raise ParameterError(f"eps must lie in (0, 0.5); got {eps!r}.")
    q = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    q = q / q.sum(axis=1, keepdims=True)
    return np.log(q[:, 1:]) - np.log(q[:, [0]])


def _prob_columns(t: Task, mod: str) -> list[str]:
    """Columns of modality ``mod``'s probabilities in a joined table (``p_zero_us``, ...)."""
    return [f"{c}_{mod}" for c in t.probability_columns]


def join_class_modalities(
    us: pd.DataFrame,
    mri: pd.DataFrame,
    task: str | Task,
    *,
    us_source: str = "DL-US predictions",
    mri_source: str = "DL-MRI predictions",
    check_input: bool = True,
) -> pd.DataFrame:
    """Join DL-US and DL-MRI class-task predictions patient by patient.

    Parameters
    ----------
    us, mri : DataFrame
        Class-task prediction tables (:func:`her2lib.contract.class_prediction_columns`) of the same patients.
    task : str or Task
        ``"three-class"`` or ``"low-vs-zero"``.
    us_source, mri_source : str
        Names (file paths) used in error messages.
    check_input : bool
        Validate both tables (:func:`her2lib.contract.validate_class_predictions`); False for tables that were.

    Returns
    -------
    DataFrame
        Columns ``patient_id, split, fold, her2_class``, then ``p_<class>_us`` and ``p_<class>_mri`` per class,
        sorted by ``patient_id``.

    Raises
    ------
    DataError
        If a patient is in one table only, or its ``her2_class``, ``split`` or ``fold`` differ between the tables
        (every offending patient is listed).
    """
    t = _get_task(task)
    if check_input:
        us = validate_class_predictions(us, t, us_source)
        mri = validate_class_predictions(mri, t, mri_source)
    both = joined_pairs(
        us,
        mri,
        label="her2_class",
        us_source=us_source,
        mri_source=mri_source,
        fix=f"with task={t.key!r} on the same cohort and fold assignment",
    )
    out = pd.DataFrame(
        {
            "patient_id": both["patient_id"],
            "split": both["split_us"],
            "fold": both["fold_us"].astype(int),
            "her2_class": both["her2_class_us"],
        }
    )
    for mod in _MODS:
        for c, col in zip(t.probability_columns, _prob_columns(t, mod)):
            out[col] = both[f"{c}_{mod}"].astype(float)
    return out.sort_values("patient_id", kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# The multinomial logistic regression
# ----------------------------------------------------------------------------------------------------------------
def _terms(classes: tuple[str, ...]) -> tuple[str, ...]:
    """``intercept``, then ``log(p_<c>/p_<ref>) DL-US`` for each non-reference class, then the same for DL-MRI."""
    ref = classes[0]
    return ("intercept",) + tuple(f"log(p_{c}/p_{ref}) {MODALITIES[mod].label}" for mod in _MODS for c in classes[1:])


@dataclass(frozen=True, eq=False)
class ClassFusionModel:
    """A fitted DL-US&MRI multinomial logistic regression.

    Attributes
    ----------
    classes : tuple of str
        The task's classes; ``classes[0]`` is the reference of every equation.
    terms : tuple of str
        The ``2 (K - 1) + 1`` terms of each equation (``intercept``, then the DL-US log-ratios, then DL-MRI's).
    params, bse, ci_low, ci_high, pvalues : ndarray, shape (n_classes - 1, n_terms)
        Row ``k - 1`` is the equation of ``log P(classes[k]) / P(classes[0])``: coefficient (log-odds against the
        reference per unit log-ratio), standard error, Wald CI bounds at ``level`` and Wald P value. NaN (except
        ``params``) when ``method`` is the penalised fallback.
    level : float
        Confidence level of the CIs.
    fit_on : str
        Which patients the model was fitted on (e.g. ``"train OOF"``).
    counts : tuple of int
        Patients of each class in the fit (in the order of ``classes``).
    method : str
        ``"multinomial logit MLE (statsmodels MNLogit)"``, or ``"L2-penalised multinomial logit (separation)"``
        when the MLE does not exist: the penalised fit still ranks patients but has no CIs.
    eps : float
        Probability clipping bound before the log-ratios.
    """

    classes: tuple[str, ...]
    terms: tuple[str, ...]
    params: np.ndarray
    bse: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    pvalues: np.ndarray
    level: float
    fit_on: str
    counts: tuple[int, ...]
    method: str
    eps: float = EPS

    @property
    def n(self) -> int:
        """Patients in the fit."""
        return int(sum(self.counts))

    def design(self, p_us: np.ndarray, p_mri: np.ndarray) -> np.ndarray:
        """Design matrix ``[1, log-ratios of DL-US, log-ratios of DL-MRI]``, shape (n_patients, n_terms), from
        both models' ``(n_patients, n_classes)`` probabilities."""
        k = len(self.classes)
        a = as_probability_matrix(p_us, np.shape(p_us)[0] if np.ndim(p_us) else 0, k, name="p_us", against="p_us")
        b = as_probability_matrix(p_mri, a.shape[0], k, name="p_mri", against="p_us")
        return np.column_stack([np.ones(a.shape[0]), log_ratios(a, self.eps), log_ratios(b, self.eps)])

    def linear_predictor(self, p_us: np.ndarray, p_mri: np.ndarray) -> np.ndarray:
        """Fused log-odds of each class against the reference, shape (n_patients, n_classes); column 0 is 0."""
        eta = self.design(p_us, p_mri) @ self.params.T
        return np.column_stack([np.zeros(eta.shape[0]), eta])

    def predict(self, p_us: np.ndarray, p_mri: np.ndarray) -> np.ndarray:
        """Fused class probabilities, shape (n_patients, n_classes) (rows sum to 1), from the two models'
        ``(n_patients, n_classes)`` probabilities."""
        return _softmax(self.linear_predictor(p_us, p_mri))

    def to_frame(self) -> pd.DataFrame:
        """Coefficient table: one row per non-reference class and term, with coefficient, SE, Wald CI, odds ratio
        against the reference class per unit log-ratio (``exp(coef)``), P value, patients per class and method."""
        rows = []
        counts = {f"n_{c}": n for c, n in zip(self.classes, self.counts)}
        for k, c in enumerate(self.classes[1:]):
            for i, term in enumerate(self.terms):
                rows.append(
                    {
                        "fit_on": self.fit_on,
                        "class": c,
                        "reference": self.classes[0],
                        "term": term,
                        "coef": float(self.params[k, i]),
                        "se": float(self.bse[k, i]),
                        "ci_low": float(self.ci_low[k, i]),
                        "ci_high": float(self.ci_high[k, i]),
                        "ci_level": self.level,
                        "odds_ratio": float(np.exp(self.params[k, i])),
                        "p_value": float(self.pvalues[k, i]),
                        "n": self.n,
                        **counts,
                        "method": self.method,
                    }
                )
        return pd.DataFrame(rows)


def _softmax(eta: np.ndarray) -> np.ndarray:
    z = np.exp(eta - eta.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_class_fusion(
    p_us: np.ndarray,
    p_mri: np.ndarray,
    y_true: np.ndarray,
    *,
    classes: tuple[str, ...],
    fit_on: str = "train OOF",
    level: float = 0.95,
    eps: float = EPS,
) -> ClassFusionModel:
    """Fit the DL-US&MRI multinomial logistic regression by maximum likelihood (statsmodels ``MNLogit``).

    Parameters
    ----------
    p_us, p_mri : array_like, shape (n_patients, n_classes)
        DL-US and DL-MRI class probabilities (columns in the order of ``classes``, rows summing to 1).
    y_true : array_like, shape (n_patients,)
        Class of each patient, a value of ``classes``.
    classes : sequence of str
        The task's classes (``task.classes``); the first is the reference.
    fit_on : str
        Label stored in the result (which patients these are).
    level : float
        Confidence level of the Wald CIs.
    eps : float
        Probability clipping bound before the log-ratios.

    Returns
    -------
    ClassFusionModel

    Raises
    ------
    DataError
        A label outside ``classes``, shapes that differ, a probability not finite or outside [0, 1] or rows not
        summing to 1, fewer than 2 patients of a class.

    Notes
    -----
    If the MLE does not exist (perfect separation, |coefficient| > 50, a singular information matrix) or does not
    converge, the weakly L2-penalised fit (``|B|^2 / 2``, every term) is used instead, a warning is issued and the
    CIs/P values are NaN.
    """
    classes = check_classes(classes)
    level = check_level(level)
    y = as_class_labels(y_true, classes)
    k = len(classes)
    a = as_probability_matrix(p_us, y.shape[0], k, name="p_us")
    b = as_probability_matrix(p_mri, y.shape[0], k, name="p_mri")
    counts = tuple(int(v) for v in np.bincount(y, minlength=k))
    if min(counts) < 2:
        raise DataError(
            f"fusion fit on {fit_on}: needs at least 2 patients of every class {list(classes)}; got {list(counts)}. "
            "Use a larger cohort (profile) for fusion."
        )
    X = np.column_stack([np.ones(y.size), log_ratios(a, eps), log_ratios(b, eps)])
    common = dict(classes=classes, terms=_terms(classes), level=level, fit_on=fit_on, counts=counts, eps=eps)
    res = _mnlogit(X, y)
    if res is not None:
        ci = np.asarray(res.conf_int(alpha=1 - level), dtype=float)  # (K-1, n_terms, 2)
        return ClassFusionModel(
            params=np.asarray(res.params, dtype=float).T,
            bse=np.asarray(res.bse, dtype=float).T,
            ci_low=ci[:, :, 0],
            ci_high=ci[:, :, 1],
            pvalues=np.asarray(res.pvalues, dtype=float).T,
            method=_MLE,
            **common,
        )
    warnings.warn(
        f"fusion fit on {fit_on}: the maximum-likelihood multinomial logistic regression does not exist "
        "(perfect separation or no convergence); using a weakly L2-penalised fit without CIs.",
        UserWarning,
        stacklevel=2,
    )
    nan = np.full((k - 1, X.shape[1]), np.nan)
    return ClassFusionModel(
        params=_penalised_multinomial(X, y, k),
        bse=nan,
        ci_low=nan,
        ci_high=nan,
        pvalues=nan,
        method=_PENALISED,
        **common,
    )


def _mnlogit(X: np.ndarray, y: np.ndarray):
    """statsmodels ``MNLogit`` fitted by Newton's method, or None when the MLE does not exist: no convergence, a
    separation or convergence warning, a non-finite standard error or a coefficient beyond :data:`_MAX_COEF`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.MNLogit(y, X).fit(disp=0, method="newton", maxiter=100)
            ok = bool(res.mle_retvals.get("converged", False))
        except (np.linalg.LinAlgError, ValueError):
            return None
    ok = ok and not any(issubclass(w.category, (PerfectSeparationWarning, ConvergenceWarning)) for w in caught)
    params = np.asarray(res.params, dtype=float)
    if not ok or not np.all(np.isfinite(np.asarray(res.bse, dtype=float))) or np.max(np.abs(params)) > _MAX_COEF:
        return None
    return res


def _penalised_multinomial(X: np.ndarray, y: np.ndarray, k: int, *, max_iter: int = 200) -> np.ndarray:
    """Maximise ``loglik(B) - |B|^2 / 2`` of the multinomial logit (reference class 0) by Newton's method with step
    halving; strictly concave, so it converges. Returns ``B``, shape (k - 1, n_terms)."""
    n, d = X.shape
    Y = np.eye(k)[y][:, 1:]  # (n, k-1) one-hot of the non-reference classes
    B = np.zeros((k - 1, d))

    def objective(b: np.ndarray) -> float:
        eta = np.column_stack([np.zeros(n), X @ b.T])
        return float(np.sum(Y * eta[:, 1:]) - np.sum(np.logaddexp.reduce(eta, axis=1)) - 0.5 * np.sum(b * b))

    f = objective(B)
    for _ in range(max_iter):
        P = _softmax(np.column_stack([np.zeros(n), X @ B.T]))[:, 1:]
        grad = ((Y - P).T @ X - B).ravel()
        H = np.eye((k - 1) * d)
        for i in range(k - 1):
            for j in range(k - 1):
                w = P[:, i] * ((i == j) - P[:, j])
                H[i * d : (i + 1) * d, j * d : (j + 1) * d] += X.T @ (X * w[:, None])
        step = np.linalg.solve(H, grad).reshape(k - 1, d)
        t = 1.0
        while objective(B + t * step) < f - 1e-12 and t > 1e-8:
            t /= 2
        B = B + t * step
        f = objective(B)
        if np.max(np.abs(t * step)) < 1e-10:
            break
    return B


def cross_fit_class_oof(
    train: pd.DataFrame, task: str | Task, *, level: float = 0.95, eps: float = EPS
) -> pd.DataFrame:
    """Cross-fitted out-of-fold fusion predictions for the training cohort.

    For each fold k the regression is fitted on the other folds' OOF predictions and applied to fold k, so no
    training patient's fusion score depends on its own label (or on any label of its fold).

    Parameters
    ----------
    train : DataFrame
        Output of :func:`join_class_modalities` for training patients (``split == "train"``, ``fold >= 0``).
    task : str or Task
        The class task.
    level, eps
        As :func:`fit_class_fusion`.

    Returns
    -------
    DataFrame
        Columns :func:`her2lib.contract.class_prediction_columns` in the order of ``train``.
    """
    t = _get_task(task)
    if (train["split"] != "train").any():
        raise DataError(
            "cross_fit_class_oof: only training-cohort (OOF) rows may be used; found test rows "
            f"{train.loc[train['split'] != 'train', 'patient_id'].tolist()[:10]}."
        )
    folds = sorted(train["fold"].unique())
    if len(folds) < 2:
        raise DataError(f"cross_fit_class_oof: needs at least 2 folds in the OOF predictions; found {folds}.")
    p = np.full((len(train), t.n_classes), np.nan)
    a, b = train[_prob_columns(t, "us")].to_numpy(), train[_prob_columns(t, "mri")].to_numpy()
    y = train["her2_class"].to_numpy()
    for k in folds:
        held = (train["fold"] == k).to_numpy()
        fit = fit_class_fusion(
            a[~held], b[~held], y[~held], classes=t.classes, fit_on=f"train OOF folds != {k}", level=level, eps=eps
        )
        p[held] = fit.predict(a[held], b[held])
    return _pred_frame(train, p, t)


def _pred_frame(df: pd.DataFrame, p: np.ndarray, t: Task) -> pd.DataFrame:
    """A class-task prediction table (:func:`class_prediction_columns`) of ``df``'s patients with probabilities
    ``p``, shape (n_patients, n_classes)."""
    out = pd.DataFrame(
        {
            "patient_id": df["patient_id"].to_numpy(),
            "split": df["split"].to_numpy(),
            "fold": df["fold"].to_numpy(),
            "her2_class": df["her2_class"].to_numpy(),
        }
    )
    for j, col in enumerate(t.probability_columns):
        out[col] = p[:, j]
    return out[list(class_prediction_columns(t))]


# ----------------------------------------------------------------------------------------------------------------
# The fusion of a run
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassFusionResult:
    """Everything :func:`fuse_classes` computes (the leakage-free protocol; no paper protocol for class tasks).

    Attributes
    ----------
    task : Task
        The class task.
    model : ClassFusionModel
        The regression fitted on all training-cohort OOF predictions.
    oof : DataFrame
        Cross-fitted OOF fusion predictions of the training cohort (:func:`class_prediction_columns`).
    test : DataFrame
        Fusion predictions of the test cohort (``fold = -1``): the mean over fold models of the fused per-fold-model
        probabilities (or, without per-fold inputs, the fusion of the fold-mean inputs).
    test_folds : DataFrame or None
        Fused probabilities of each fold model pair (:func:`class_test_fold_columns`); None without per-fold inputs.
    coefficients : DataFrame
        ``model.to_frame()`` with the column ``protocol`` first.
    applied_to : str
        Which test predictions the regression was applied to.
    protocol : str
        The protocol in words: fitted on, cross-fitting, applied to, fitting method.
    method : str
        The fitting method (``model.method``).
    """

    task: Task
    model: ClassFusionModel
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: pd.DataFrame | None
    coefficients: pd.DataFrame
    applied_to: str
    protocol: str
    method: str

    @property
    def protocols(self) -> pd.DataFrame:
        """One row (the leakage-free protocol, as :attr:`her2lib.fusion.FusionResult.protocols` has one per
        protocol): ``protocol, fit_on, n_fit, applied_to, evaluated_on, n_eval, macro_auc,
        macro_auc_train_oof_crossfit, method``. The macro AUCs are one-vs-rest means (scikit-learn's
        ``roc_auc_score(multi_class="ovr", average="macro")``); intervals are notebook 06's."""
        return pd.DataFrame(
            [
                {
                    "protocol": "leakage-free (her2lib default)",
                    "fit_on": "train OOF",
                    "n_fit": self.model.n,
                    "applied_to": self.applied_to,
                    "evaluated_on": "test",
                    "n_eval": len(self.test),
                    "macro_auc": _macro_auc(self.test, self.task),
                    "macro_auc_train_oof_crossfit": _macro_auc(self.oof, self.task),
                    "method": self.method,
                }
            ]
        )


def _macro_auc(df: pd.DataFrame, t: Task) -> float:
    """Mean of the one-vs-rest AUCs (NaN when a class is absent or is every patient)."""
    y = df["her2_class"].to_numpy()
    aucs = []
    for c in t.classes:
        pos = y == c
        if pos.all() or not pos.any():
            return float("nan")
        aucs.append(auc(pos.astype(int), df[f"p_{c}"].to_numpy()))
    return float(np.mean(aucs))


def _join_class_test_folds(us: pd.DataFrame, mri: pd.DataFrame, t: Task) -> pd.DataFrame:
    """Pair DL-US fold model k with DL-MRI fold model k for every test patient (columns ``p_<class>_us``, ...)."""
    m = us.merge(mri, on=["patient_id", "model_fold"], how="outer", suffixes=("_us", "_mri"), indicator=True)
    bad = m.loc[m["_merge"] != "both", ["patient_id", "model_fold"]]
    if len(bad):
        raise DataError(
            "us_test_folds and mri_test_folds do not hold the same (patient, fold model) pairs: "
            f"{bad.head(10).to_records(index=False).tolist()}. Train DL-US and DL-MRI with the same folds and task "
            "(notebooks 03 and 04 on one folds.csv)."
        )
    diff = m["her2_class_us"] != m["her2_class_mri"]
    if diff.any():
        raise DataError(
            "us_test_folds and mri_test_folds disagree on the HER2 class of patients "
            f"{sorted(set(m.loc[diff, 'patient_id']))[:10]}. Re-run notebooks 03 and 04 on the same cohort."
        )
    return m.sort_values(["patient_id", "model_fold"], kind="mergesort").reset_index(drop=True)


def _apply(
    model: ClassFusionModel, test: pd.DataFrame, t: Task, us_folds: pd.DataFrame | None, mri_folds: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """The OOF-fitted regression on the test cohort: per fold model pair then averaged when both per-fold tables
    exist, else on the fold-mean inputs. Returns ``(test predictions, per-fold predictions or None, applied_to)``."""
    if us_folds is None or mri_folds is None:
        p = model.predict(test[_prob_columns(t, "us")].to_numpy(), test[_prob_columns(t, "mri")].to_numpy())
        return _pred_frame(test, p, t), None, "fold-mean test predictions (no per-fold files; scale differs from OOF)"
    tf = _join_class_test_folds(us_folds, mri_folds, t)
    fused = model.predict(tf[_prob_columns(t, "us")].to_numpy(), tf[_prob_columns(t, "mri")].to_numpy())
    folds = pd.DataFrame(
        {
            "patient_id": tf["patient_id"],
            "split": "test",
            "her2_class": tf["her2_class_us"],
            "model_fold": tf["model_fold"],
        }
    )
    for j, col in enumerate(t.probability_columns):
        folds[col] = fused[:, j]
    folds = folds[list(class_test_fold_columns(t))]
    mean = folds.groupby("patient_id")[list(t.probability_columns)].mean().loc[test["patient_id"]].to_numpy()
    return _pred_frame(test, mean, t), folds, "each fold model's test predictions, fused then averaged"


def fuse_classes(
    us_oof: pd.DataFrame,
    mri_oof: pd.DataFrame,
    us_test: pd.DataFrame,
    mri_test: pd.DataFrame,
    *,
    task: str | Task,
    level: float = 0.95,
    eps: float = EPS,
    us_test_folds: pd.DataFrame | None = None,
    mri_test_folds: pd.DataFrame | None = None,
    check_input: bool = True,
) -> ClassFusionResult:
    """Fit DL-US&MRI for a class task on training OOF predictions and apply it to the test cohort.

    Parameters
    ----------
    us_oof, mri_oof : DataFrame
        Training-cohort OOF predictions of DL-US and DL-MRI (:func:`class_prediction_columns`, ``split == "train"``).
    us_test, mri_test : DataFrame
        Test-cohort predictions (``split == "test"``, ``fold == -1``): the mean of the fold models.
    task : str or Task
        ``"three-class"`` or ``"low-vs-zero"``.
    level : float
        Confidence level of the coefficient CIs (Wald).
    eps : float
        Probability clipping bound before the log-ratios.
    us_test_folds, mri_test_folds : DataFrame, optional
        Each fold model's test predictions (:func:`class_test_fold_columns`). When both are given (the default
        output of notebooks 03/04) the regression is applied to each fold model pair and the fused probabilities are
        averaged; otherwise to the fold-mean inputs, and ``protocol`` says so.
    check_input : bool
        Validate the tables (:func:`her2lib.contract.validate_class_predictions` with the expected split,
        :func:`~her2lib.contract.validate_class_test_folds` against the fold-mean tables). False when they were
        validated where they were read (:func:`her2lib.contract.read_class_predictions`,
        :func:`~her2lib.contract.read_class_test_folds`).

    Returns
    -------
    ClassFusionResult
        Its test predictions depend on the training rows' labels only (no test label is read).
    """
    t = _get_task(task)
    if t.is_binary:
        raise ParameterError("fuse_classes is the fusion of the class tasks; use her2lib.fusion.fuse for 'binary'.")
    if check_input:
        us_oof, mri_oof = (
            validate_class_predictions(d, t, s, split="train") for d, s in ((us_oof, "us_oof"), (mri_oof, "mri_oof"))
        )
        us_test, mri_test = (
            validate_class_predictions(d, t, s, split="test") for d, s in ((us_test, "us_test"), (mri_test, "mri_test"))
        )
        if us_test_folds is not None and mri_test_folds is not None:
            us_test_folds = validate_class_test_folds(us_test_folds, t, "us_test_folds", test=us_test)
            mri_test_folds = validate_class_test_folds(mri_test_folds, t, "mri_test_folds", test=mri_test)
    train = join_class_modalities(us_oof, mri_oof, t, us_source="us_oof", mri_source="mri_oof", check_input=False)
    test = join_class_modalities(us_test, mri_test, t, us_source="us_test", mri_source="mri_test", check_input=False)
    overlap = sorted(set(train["patient_id"]) & set(test["patient_id"]))
    if overlap:
        raise DataError(f"patients {overlap[:10]} appear in both the OOF (train) and the test predictions.")
    a, b = train[_prob_columns(t, "us")].to_numpy(), train[_prob_columns(t, "mri")].to_numpy()
    model = fit_class_fusion(a, b, train["her2_class"].to_numpy(), classes=t.classes, level=level, eps=eps)
    oof = cross_fit_class_oof(train, t, level=level, eps=eps)
    test_pred, test_folds, applied_to = _apply(model, test, t, us_test_folds, mri_test_folds)
    coefs = model.to_frame()
    coefs.insert(0, "protocol", "leakage-free (her2lib default)")
    counts = ", ".join(f"{c} {n}" for c, n in zip(t.classes, model.counts))
    folds = sorted(int(f) for f in train["fold"].unique())
    protocol = (
        f"DL-US&MRI ({t.title}): multinomial logistic regression on both models' log-probability ratios against "
        f"{t.classes[0]!r}, fitted on the training cohort's OOF predictions (n = {model.n}; {counts}) by "
        f"{model.method}; training-cohort scores cross-fitted over folds {folds}; applied to {applied_to}. "
        "No test label is read."
    )
    return ClassFusionResult(
        task=t,
        model=model,
        oof=oof,
        test=test_pred,
        test_folds=test_folds,
        coefficients=coefs,
        applied_to=applied_to,
        protocol=protocol,
        method=model.method,
    )
