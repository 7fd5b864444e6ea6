"""The radiomics model: a LASSO logistic-regression signature on hand-crafted lesion features, fitted inside the
cross-validation folds of the deep-learning models.

An addition to the paper, whose Methods compare DL-US, DL-MRI and DL-US&MRI only: a radiomics signature is the
classic baseline such models are measured against. Science layer: pure functions and result objects on a features
table (one row per patient, ``patient_id`` plus numeric feature columns, from :mod:`her2lib.radiomics.features`)
and the cohort's fold assignment (``patient_id, split, fold, her2``: the folds of the DL models,
:func:`her2lib.train.folds.assign_folds`).

The signature (:func:`make_radiomics_pipeline`) is the usual radiomics recipe as one scikit-learn pipeline:

1. drop features that are constant or more than 20% missing (:class:`MissingConstantFilter`);
2. median imputation, then standardisation (z-score);
3. keep the ``n_candidates`` features with the largest ``|AUC - 0.5|`` against HER2 status (Mann-Whitney AUC,
   :class:`UnivariateAUCFilter`);
4. walking those in order of that strength, drop any feature whose ``|Pearson r|`` with one already kept exceeds
   ``corr_threshold`` (:class:`CorrelationFilter`);
5. an L1-penalised (LASSO) logistic regression whose penalty ``C`` is chosen by an inner stratified K-fold CV (AUC)
   of the same rows (scikit-learn ``LogisticRegressionCV``, liblinear solver).

**No leakage.** Every step, the feature selection and the choice of the penalty included, is fitted by
:func:`fit_radiomics_fold` on fold k's training part only (the training patients of the other folds): fold k's
held-out patients, the test cohort and the external cohort are never seen by a fit, and :func:`fit_radiomics_fold`
refuses them (:class:`~her2lib.errors.DataError`). Selecting features on the whole training cohort before the CV,
the common mistake, makes the OOF AUC optimistic; here the OOF prediction of a fold-k patient comes from a model
that never read a fold-k row. :func:`run_radiomics_cv` fits the K fold models, predicts each fold's held-out
patients (OOF) and every test and external patient with every fold model (averaged, as the DL models' test
predictions); :func:`write_radiomics_predictions` writes the prediction files (``radiomics_oof.csv``, ...).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from ..contract import (
    MODELS,
    PREDICTION_COLUMNS,
    SPLITS,
    TEST_FOLD_COLUMNS,
    validate_predictions,
    validate_test_folds,
    write_prediction_files,
)
from ..errors import DataError, ParameterError
from ..options import look_up_option
from ..stats._common import as_binary_labels
from ..stats.roc import auc

__all__ = [
    "C_RANGE",
    "MAX_ITER",
    "univariate_auc",
    "MissingConstantFilter",
    "UnivariateAUCFilter",
    "CorrelationFilter",
    "make_radiomics_pipeline",
    "RadiomicsFoldModel",
    "fit_radiomics_fold",
    "RadiomicsCVResult",
    "run_radiomics_cv",
    "write_radiomics_predictions",
]

METHOD = (
    "radiomics signature: drop constant / >max_missing missing features, median imputation, z-score, top "
    "n_candidates by |AUC - 0.5|, correlation filter |r| > corr_threshold, LASSO logistic regression (liblinear, "
    "C by inner stratified CV AUC); every step fitted on each CV fold's training part only"
)
#: range of the log grid of inverse penalties C tried by the inner CV when ``Cs`` is a number
C_RANGE: tuple[float, float] = (1e-3, 1e2)
#: liblinear iterations per LASSO fit: well-posed fits converge in a few dozen; more only lengthens the fits that
#: never converge (separable or badly scaled data at the weakest penalties), which are counted and reported instead
MAX_ITER = 1000
#: columns a features table must not hold: labels and cohort bookkeeping would leak into the model as "features"
_NOT_FEATURES = frozenset({"her2", "her2_class", "split", "fold", "model_fold", "p_her2"})
#: the paper models' prediction-file prefixes, which the radiomics files must not overwrite
_DL_PREFIXES = frozenset(m.prefix for m in MODELS.values())
_FIX_FEATURES = "Re-run the radiomics feature extraction (her2lib.radiomics.features) on this cohort."


# ----------------------------------------------------------------------------------------------------------------
# Univariate AUC and the three feature filters (scikit-learn transformers)
# ----------------------------------------------------------------------------------------------------------------
def univariate_auc(X, y) -> np.ndarray:
    """Mann-Whitney AUC of every feature against HER2 status (:func:`her2lib.stats.roc.auc`; ties count one half).

    Parameters
    ----------
    X : array_like, shape (n_patients, n_features)
        Finite feature values.
    y : array_like of 0/1, shape (n_patients,)
        HER2 status, 1 = positive (both classes needed).

    Returns
    -------
    ndarray, shape (n_features,), float64
        AUC of each column (higher value = HER2-positive); 0.5 for a constant column.
    """
    X = np.asarray(X, dtype=float)
    y = as_binary_labels(y, "her2")
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise DataError(f"X must have shape (n_patients, n_features) = ({y.shape[0]}, ...); got {X.shape}.")
    if y.min() == y.max():
        raise DataError("univariate AUC: the fitting rows hold one HER2 class only; both classes are needed.")
    return np.array([auc(y, X[:, j]) for j in range(X.shape[1])], dtype=float)


def _abs_corr(X: np.ndarray) -> np.ndarray:
    """``|Pearson r|`` between the columns of ``X``, shape (n_features, n_features); 0 for a constant column."""
    Z = X - X.mean(axis=0)
    norm = np.sqrt((Z**2).sum(axis=0))
    Z = np.divide(Z, norm, out=np.zeros_like(Z), where=norm > 0)
    return np.abs(Z.T @ Z)


def _strength_order(strength: np.ndarray) -> np.ndarray:
    """Column indices by decreasing strength; ties keep the column order (deterministic)."""
    return np.argsort(-strength, kind="stable")


class _SupportSelector(TransformerMixin, BaseEstimator):
    """A column selector: ``fit`` sets the boolean mask ``support_`` (n_features_in_,); ``transform`` keeps those
    columns in their input order; ``get_feature_names_out`` names them."""

    _allow_nan = False

    def transform(self, X):
        check_is_fitted(self, "support_")
        X = validate_data(self, X, reset=False, dtype=float, ensure_all_finite="allow-nan" if self._allow_nan else True)
        return X[:, self.support_]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "support_")
        if input_features is None:
            names = getattr(self, "feature_names_in_", None)
            if names is None:
                names = [f"x{i}" for i in range(self.n_features_in_)]
        else:
            names = list(input_features)
            if len(names) != self.n_features_in_:
                raise ParameterError(
                    f"input_features has {len(names)} names; {type(self).__name__} was fitted on "
                    f"{self.n_features_in_} features."
                )
        return np.asarray(names, dtype=object)[self.support_]


class MissingConstantFilter(_SupportSelector):
    """Drop the features that are constant or more than ``max_missing`` missing on the fitting rows.

    Parameters
    ----------
    max_missing : float
        Largest share of missing (NaN) values a kept feature may have on the fitting rows (default 0.2).

    Attributes
    ----------
    support_ : ndarray of bool, shape (n_features_in_,)
        Kept features.
    missing_fraction_ : ndarray, shape (n_features_in_,)
        Share of NaN per feature on the fitting rows.
    constant_ : ndarray of bool, shape (n_features_in_,)
        Features with at most one distinct non-missing value on the fitting rows.
    """

    _allow_nan = True

    def __init__(self, max_missing: float = 0.2):
        self.max_missing = max_missing

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=float, ensure_all_finite="allow-nan")
        nan = np.isnan(X)
        self.missing_fraction_ = nan.mean(axis=0)
        lo = np.where(nan, np.inf, X).min(axis=0)
        hi = np.where(nan, -np.inf, X).max(axis=0)
        self.constant_ = ~(hi > lo)
        self.support_ = (self.missing_fraction_ <= self.max_missing) & ~self.constant_
        if not self.support_.any():
            raise DataError(
                f"radiomics: all {X.shape[1]} features are constant or more than {self.max_missing:.0%} missing on "
                f"the {X.shape[0]} fitting patients; check the feature extraction (masks, images). {_FIX_FEATURES}"
            )
        return self


class UnivariateAUCFilter(_SupportSelector):
    """Keep the ``n_candidates`` features with the largest ``|AUC - 0.5|`` against the label on the fitting rows.

    Parameters
    ----------
    n_candidates : int
        Features kept (all of them when fewer). Ties are broken by column order.

    Attributes
    ----------
    auc_ : ndarray, shape (n_features_in_,)
        Mann-Whitney AUC of each feature (:func:`univariate_auc`).
    strength_ : ndarray, shape (n_features_in_,)
        ``|auc_ - 0.5|``.
    support_ : ndarray of bool, shape (n_features_in_,)
        Kept features (output in input column order).
    """

    def __init__(self, n_candidates: int = 30):
        self.n_candidates = n_candidates

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=float)
        self.auc_ = univariate_auc(X, y)
        self.strength_ = np.abs(self.auc_ - 0.5)
        keep = _strength_order(self.strength_)[: int(self.n_candidates)]
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[keep] = True
        return self


class CorrelationFilter(_SupportSelector):
    """Redundancy filter: walking the features by decreasing ``|AUC - 0.5|`` on the fitting rows, drop any whose
    ``|Pearson r|`` with an already kept feature exceeds ``threshold``.

    Parameters
    ----------
    threshold : float
        Largest ``|r|`` allowed between two kept features (default 0.9).

    Attributes
    ----------
    support_ : ndarray of bool, shape (n_features_in_,)
        Kept features (output in input column order).
    strength_ : ndarray, shape (n_features_in_,)
        ``|AUC - 0.5|`` of each feature.
    dropped_for_ : dict
        Dropped feature index -> index of the kept feature it correlates with.
    """

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=float)
        self.strength_ = np.abs(univariate_auc(X, y) - 0.5)
        r = _abs_corr(X)
        kept: list[int] = []
        self.dropped_for_ = {}
        for j in _strength_order(self.strength_):
            close = [k for k in kept if r[j, k] > self.threshold]
            if close:
                self.dropped_for_[int(j)] = int(close[0])
            else:
                kept.append(int(j))
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[kept] = True
        return self


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------
def _check_options(corr_threshold, n_candidates, inner_folds, Cs, max_missing) -> list[float] | int:
    """Validate the pipeline options (a ParameterError naming the option); returns ``Cs`` as an int or a list."""
    if not (isinstance(corr_threshold, (int, float)) and 0 < corr_threshold <= 1):
        raise ParameterError(f"corr_threshold={corr_threshold!r}: use an |r| bound in (0, 1], e.g. 0.9.")
    if not (isinstance(max_missing, (int, float)) and 0 <= max_missing < 1):
        raise ParameterError(f"max_missing={max_missing!r}: use a share in [0, 1), e.g. 0.2.")
    for name, value, low in (("n_candidates", n_candidates, 1), ("inner_folds", inner_folds, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ParameterError(f"{name}={value!r}: use an integer >= {low}.")
    if isinstance(Cs, (int, np.integer)) and not isinstance(Cs, bool):
        if Cs < 1:
            raise ParameterError(f"Cs={Cs!r}: use the number of penalties to try (>= 1) or a list of C values.")
        return int(Cs)
    values = (
        np.asarray(Cs, dtype=float).ravel()
        if isinstance(Cs, Sequence | np.ndarray) and not isinstance(Cs, str)
        else np.array([np.nan])
    )
    if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ParameterError(f"Cs={Cs!r}: use an integer >= 1 or a non-empty list of positive, finite C values.")
    return values.tolist()


def make_radiomics_pipeline(
    *,
    seed: int = 0,
    corr_threshold: float = 0.9,
    n_candidates: int = 30,
    inner_folds: int = 5,
    Cs: int | Sequence[float] = 20,
    max_missing: float = 0.2,
) -> Pipeline:
    """The radiomics signature as an unfitted scikit-learn pipeline; ``fit(X, y)`` fits every step on ``X``'s rows.

    Steps (names in brackets): drop constant and mostly-missing features (``drop``, :class:`MissingConstantFilter`),
    median imputation (``impute``), z-score (``scale``), the ``n_candidates`` strongest features by
    ``|AUC - 0.5|`` (``univariate``, :class:`UnivariateAUCFilter`), the correlation redundancy filter
    (``decorrelate``, :class:`CorrelationFilter`), and the LASSO logistic regression with its penalty chosen by an
    inner CV of the fitting rows (``lasso``). Outputs are pandas frames (``set_output(transform="pandas")``) so
    feature names and patient ids travel through the steps.

    Parameters
    ----------
    seed : int
        Seed of the inner CV's shuffling and of the solver: same rows + seed -> identical model.
    corr_threshold : float
        Largest ``|Pearson r|`` between two kept candidates.
    n_candidates : int
        Features kept by the univariate filter.
    inner_folds : int
        Folds of the inner stratified CV that chooses the penalty (scored by AUC). Each class needs at least this
        many patients among the fitting rows.
    Cs : int or sequence of float
        Inverse penalties tried: the values themselves, or a number of values on a log grid over :data:`C_RANGE`
        (1e-3 to 1e2; not scikit-learn's 1e-4 to 1e4, see Notes).
    max_missing : float
        Largest share of missing values of a kept feature.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``fit(X, y)`` with ``X`` of shape (n_patients, n_features) (a DataFrame: feature names are kept) and ``y``
        0/1 of shape (n_patients,); ``predict_proba(X)[:, 1]`` is P(HER2-positive).

    Notes
    -----
    On standardised features the LASSO keeps no feature below C of about ``1 / (n_patients * max |cov(x, y)|)``
    (about 0.03 for 150 patients) and is practically unpenalised above C = 100. scikit-learn's default grid (1e-4
    to 1e4) spends half its values outside that range, and at C >= 1e3 liblinear does not converge on the (often
    separable) small-cohort data: minutes of iterations and a ConvergenceWarning per fit. Hence :data:`C_RANGE`.
    """
    Cs = _check_options(corr_threshold, n_candidates, inner_folds, Cs, max_missing)
    if isinstance(Cs, int):
        Cs = np.logspace(np.log10(C_RANGE[0]), np.log10(C_RANGE[1]), Cs).tolist()
    lasso = LogisticRegressionCV(
        Cs=Cs,
        l1_ratios=(1.0,),  # the L1 (LASSO) penalty; scikit-learn 1.8 deprecated penalty="l1"
        solver="liblinear",
        cv=StratifiedKFold(n_splits=int(inner_folds), shuffle=True, random_state=int(seed)),
        scoring="roc_auc",
        random_state=int(seed),
        max_iter=MAX_ITER,
        class_weight=None,
        use_legacy_attributes=False,
    )
    steps = [
        ("drop", MissingConstantFilter(max_missing=max_missing)),
        ("impute", SimpleImputer(strategy="median")),
        ("scale", StandardScaler()),
        ("univariate", UnivariateAUCFilter(n_candidates=int(n_candidates))),
        ("decorrelate", CorrelationFilter(threshold=float(corr_threshold))),
        ("lasso", lasso),
    ]
    return Pipeline(steps).set_output(transform="pandas")


def _resolve_options(options: dict) -> dict:
    """The pipeline options with defaults filled in (from :func:`make_radiomics_pipeline`'s signature), checked
    once: an unknown name is a ParameterError with a close match, a bad value the pipeline's own ParameterError."""
    params = inspect.signature(make_radiomics_pipeline).parameters
    allowed = [name for name in params if name != "seed"]
    for key in options:
        look_up_option(key, allowed, name="radiomics pipeline option")
    out = {name: params[name].default for name in allowed} | dict(options)
    _check_options(**out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Input tables
# ----------------------------------------------------------------------------------------------------------------
def _feature_table(features: pd.DataFrame, source: str = "features") -> pd.DataFrame:
    """The features as a float frame indexed by ``patient_id`` (str), ``inf`` read as missing; a DataError naming
    what is wrong (no ``patient_id``, duplicates, label columns, non-numeric columns)."""
    if not isinstance(features, pd.DataFrame) or "patient_id" not in features.columns:
        raise DataError(f"{source}: expected a DataFrame with a patient_id column and one column per feature.")
    ids = features["patient_id"].astype(str)
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise DataError(f"{source}: duplicate patient_id {dup[:10]}; one row of features per patient expected.")
    labels = sorted(set(map(str, features.columns)) & _NOT_FEATURES)
    if labels:
        raise DataError(
            f"{source}: columns {labels} are labels or cohort columns, not image features; drop them from the "
            "features table (a label among the features leaks into the model)."
        )
    cols = [c for c in features.columns if c != "patient_id"]
    odd = [c for c in cols if not pd.api.types.is_numeric_dtype(features[c])]
    if not cols or odd:
        raise DataError(
            f"{source}: needs numeric feature columns besides patient_id; "
            + (f"columns {odd[:10]} are not numeric. " if odd else "found none. ")
            + _FIX_FEATURES
        )
    X = features[cols].astype(float).replace([np.inf, -np.inf], np.nan)
    X.columns = [str(c) for c in cols]
    X.index = pd.Index(ids.to_numpy(), name="patient_id")
    return X


def _rows_matrix(table: pd.DataFrame, ids, what: str) -> pd.DataFrame:
    """The rows of ``table`` for patients ``ids``, in that order; a DataError naming the patients without one."""
    ids = pd.Index(pd.Series(ids).astype(str).to_numpy(), name="patient_id")
    missing = sorted(set(ids) - set(table.index))
    if missing:
        raise DataError(
            f"{len(missing)} patient(s) of {what} have no row in the features table: {missing[:10]}. {_FIX_FEATURES}",
            [f"patient {p}: no features" for p in missing],
        )
    return table.loc[ids]


def _clean_cohort(cohort: pd.DataFrame) -> pd.DataFrame:
    """``patient_id, split, fold, her2`` of the cohort, typed and sorted by patient; a DataError listing every
    problem (missing columns, unknown split, labels not 0/1, bad folds, duplicates)."""
    need = ["patient_id", "split", "fold", "her2"]
    missing = [c for c in need if c not in cohort.columns]
    if missing:
        raise DataError(
            f"cohort: missing column(s) {missing}; pass patient_id, split, fold, her2 (the folds of the DL models: "
            "her2lib.train.folds.read_folds / assign_folds)."
        )
    out = cohort[need].copy()
    out["patient_id"] = out["patient_id"].astype(str)
    problems = []
    if out["patient_id"].duplicated().any():
        problems.append(
            f"duplicate patient_id {sorted(set(out.loc[out['patient_id'].duplicated(), 'patient_id']))[:10]}."
        )
    if not out["split"].isin(SPLITS).all():
        problems.append(
            f"split must be one of {list(SPLITS)} (patients {out.loc[~out['split'].isin(SPLITS), 'patient_id'].tolist()[:10]})."
        )
    her2 = pd.to_numeric(out["her2"], errors="coerce")
    if not her2.isin([0, 1]).all():
        problems.append(f"her2 must be 0/1 (patients {out.loc[~her2.isin([0, 1]), 'patient_id'].tolist()[:10]}).")
    fold = pd.to_numeric(out["fold"], errors="coerce")
    train = out["split"] == "train"
    bad = (fold.isna() | (fold != np.round(fold))) | (train & (fold < 0)) | (~train & (fold != -1))
    if bad.any():
        problems.append(
            f"fold must be the CV fold (>= 0) of a training patient and -1 otherwise (patients "
            f"{out.loc[bad, 'patient_id'].tolist()[:10]})."
        )
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the cohort: " + " ".join(problems), problems)
    out["her2"], out["fold"] = her2.astype(int), fold.astype(int)
    return out.sort_values("patient_id", kind="mergesort").reset_index(drop=True)


def _guard_fitting_rows(rows: pd.DataFrame, fold: int) -> None:
    """The leakage guard: a DataError naming every test/external patient and every patient of the held-out fold
    ``fold`` among the rows a fold model is fitted on."""
    missing = [c for c in ("patient_id", "split", "fold", "her2") if c not in rows.columns]
    if missing:
        raise DataError(f"fit_radiomics_fold: the fitting rows lack {missing} (the leakage guard checks split/fold).")
    other = rows.loc[rows["split"] != "train", "patient_id"].astype(str).tolist()
    held = rows.loc[(rows["split"] == "train") & (rows["fold"] == fold), "patient_id"].astype(str).tolist()
    if other or held:
        found = ([f"test/external patients {other[:10]} (n={len(other)})"] if other else []) + (
            [f"fold {fold}'s held-out patients {held[:10]} (n={len(held)})"] if held else []
        )
        raise DataError(
            f"fit_radiomics_fold (fold {fold}): {' and '.join(found)} reached the fitting rows. The test and external "
            f"cohorts and fold {fold}'s held-out patients must never be used for fitting, feature selection or "
            f"choosing the penalty; pass only split == 'train' rows with fold != {fold}.",
            found,
        )


# ----------------------------------------------------------------------------------------------------------------
# One fold model
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RadiomicsFoldModel:
    """The radiomics signature of one CV fold, fitted on that fold's training part only.

    Attributes
    ----------
    fold : int
        The held-out fold k: the model was fitted on the training patients of the other folds.
    pipeline : sklearn.pipeline.Pipeline
        The fitted :func:`make_radiomics_pipeline`.
    selected : tuple of str
        Features with a non-zero LASSO coefficient, by decreasing ``|coef|``.
    coefficients : DataFrame
        ``feature, coef``: every candidate that entered the LASSO (zeros included), coefficient per standard
        deviation of the feature on the fitting rows (standardised scale), by decreasing ``|coef|``.
    C : float
        Inverse penalty chosen by the inner CV.
    n_train, n_pos : int
        Fitting patients and HER2-positive ones among them.
    intercept : float
        The LASSO's intercept (log-odds).
    inner_cv_auc : float
        Mean inner-CV AUC (fitting rows only) at the chosen ``C``.
    n_features_kept, n_candidates_kept : int
        Features left after the constant/missing filter, and candidates entering the LASSO (after the univariate
        and correlation filters).
    n_not_converged : int
        LASSO fits (inner CV and refit) that stopped at :data:`MAX_ITER` iterations without converging.
    """

    fold: int
    pipeline: Pipeline
    selected: tuple[str, ...]
    coefficients: pd.DataFrame
    C: float
    n_train: int
    n_pos: int = 0
    intercept: float = float("nan")
    inner_cv_auc: float = float("nan")
    n_features_kept: int = 0
    n_candidates_kept: int = 0
    n_not_converged: int = 0

    @property
    def features_in(self) -> tuple[str, ...]:
        """The feature columns the model reads (those of the features table it was fitted on)."""
        return tuple(map(str, self.pipeline.feature_names_in_))

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """P(HER2-positive) of every row of ``features``.

        Parameters
        ----------
        features : DataFrame
            ``patient_id`` and (at least) the columns of :attr:`features_in`; missing values are imputed with the
            fitting rows' medians.

        Returns
        -------
        ndarray, shape (n_rows,), float64
            In the row order of ``features``.
        """
        return self._predict_table(_feature_table(features))

    def _predict_table(self, table: pd.DataFrame) -> np.ndarray:
        cols = list(self.features_in)
        absent = [c for c in cols if c not in table.columns]
        if absent:
            raise DataError(
                f"radiomics fold {self.fold} model: the features table lacks columns {absent[:10]} "
                f"(n={len(absent)}) that the model was fitted on. {_FIX_FEATURES}"
            )
        return np.asarray(self.pipeline.predict_proba(table[cols])[:, 1], dtype=float)


def _fold_model(pipe: Pipeline, *, fold: int, n_train: int, n_pos: int, n_not_converged: int) -> RadiomicsFoldModel:
    """Read the fitted pipeline's selection, coefficients, penalty and inner-CV AUC into a fold model."""
    lasso = pipe.named_steps["lasso"]
    coef = pd.DataFrame({"feature": np.asarray(lasso.feature_names_in_, dtype=str), "coef": lasso.coef_.ravel()})
    coef = coef.iloc[np.argsort(-coef["coef"].abs().to_numpy(), kind="stable")].reset_index(drop=True)
    inner = np.asarray(lasso.scores_, dtype=float).mean(axis=0).reshape(-1)  # mean over inner folds, per C
    return RadiomicsFoldModel(
        fold=int(fold),
        pipeline=pipe,
        selected=tuple(coef.loc[coef["coef"] != 0, "feature"]),
        coefficients=coef,
        C=float(lasso.C_),
        n_train=int(n_train),
        n_pos=int(n_pos),
        intercept=float(lasso.intercept_[0]),
        inner_cv_auc=float(inner[np.argmax(inner)]),
        n_features_kept=int(pipe.named_steps["drop"].support_.sum()),
        n_candidates_kept=int(coef.shape[0]),
        n_not_converged=int(n_not_converged),
    )


def _fit_fold(table: pd.DataFrame, rows: pd.DataFrame, *, fold: int, seed: int, options: dict) -> RadiomicsFoldModel:
    """:func:`fit_radiomics_fold` on a checked features table and resolved options (the guard always runs)."""
    _guard_fitting_rows(rows, fold)
    rows = rows.assign(patient_id=rows["patient_id"].astype(str)).sort_values("patient_id", kind="mergesort")
    y = as_binary_labels(rows["her2"].to_numpy(), "her2")
    n_pos = int(y.sum())
    if min(n_pos, y.size - n_pos) < options["inner_folds"]:
        raise DataError(
            f"radiomics fold {fold}: the fitting rows hold {n_pos} HER2-positive and {y.size - n_pos} HER2-negative "
            f"patients; the inner {options['inner_folds']}-fold CV needs at least {options['inner_folds']} of each. "
            "Use fewer inner_folds or a larger cohort."
        )
    X = _rows_matrix(table, rows["patient_id"], f"fold {fold}'s training part")
    pipe, n_not_converged = _fit_counting(make_radiomics_pipeline(seed=seed, **options), X, y, fold=fold)
    return _fold_model(pipe, fold=fold, n_train=y.size, n_pos=n_pos, n_not_converged=n_not_converged)


def _fit_counting(pipe: Pipeline, X: pd.DataFrame, y: np.ndarray, *, fold: int) -> tuple[Pipeline, int]:
    """Fit ``pipe``; liblinear's ConvergenceWarnings (one per fit that hit :data:`MAX_ITER`) are counted and
    reported as one warning for the fold; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.fit(X, y)
    n = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if n:
        lasso = pipe.named_steps["lasso"]
        warnings.warn(
            f"radiomics fold {fold}: {n} of {len(lasso.Cs_) * lasso.cv.get_n_splits() + 1} LASSO fits stopped at "
            f"max_iter={MAX_ITER} without converging (liblinear; usually the weakest penalties on separable or "
            f"badly scaled features), so their inner-CV scores are approximate; chosen C = {float(lasso.C_):.4g}.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return pipe, n


def fit_radiomics_fold(
    features: pd.DataFrame, rows: pd.DataFrame, *, fold: int, seed: int = 0, **pipeline_options
) -> RadiomicsFoldModel:
    """Fit the radiomics signature of CV fold ``fold`` on that fold's training part.

    Feature selection (constant/missing filter, univariate filter, correlation filter), imputation medians,
    standardisation and the LASSO penalty (inner CV) are all chosen on ``rows`` only: no test-set leakage.

    Parameters
    ----------
    features : DataFrame
        ``patient_id`` and numeric feature columns, one row per patient (n_patients, 1 + n_features); ``inf`` is
        read as missing.
    rows : DataFrame
        The cohort rows to fit on (``patient_id, split, fold, her2``): training patients of the folds other than
        ``fold``.
    fold : int
        The held-out fold k.
    seed : int
        Seed of the inner CV and the solver.
    **pipeline_options
        ``corr_threshold, n_candidates, inner_folds, Cs, max_missing`` of :func:`make_radiomics_pipeline`.

    Returns
    -------
    RadiomicsFoldModel

    Raises
    ------
    DataError
        The leakage guard: a row with ``split != "train"`` or ``fold == fold`` (every such patient is named: the
        test/external cohorts and fold k's held-out patients must never be used for fitting). Also a patient of
        ``rows`` without features (re-run the feature extraction), or too few patients of a class for the inner CV.
    ParameterError
        An unknown or invalid pipeline option.
    """
    options = _resolve_options(pipeline_options)
    _guard_fitting_rows(rows, fold)
    return _fit_fold(_feature_table(features), rows, fold=fold, seed=seed, options=options)


# ----------------------------------------------------------------------------------------------------------------
# The cross-validated model
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RadiomicsCVResult:
    """Everything :func:`run_radiomics_cv` computes. Rows of every table are in ``patient_id`` order.

    Attributes
    ----------
    oof : DataFrame
        :data:`~her2lib.contract.PREDICTION_COLUMNS`, one row per training patient (``fold`` = its fold), ``p_her2``
        from the fold model that never saw the patient's fold.
    test : DataFrame
        :data:`~her2lib.contract.PREDICTION_COLUMNS`, one row per test patient (``fold = -1``), ``p_her2`` = mean
        over the fold models.
    test_folds : DataFrame
        :data:`~her2lib.contract.TEST_FOLD_COLUMNS`, one row per test patient and fold model.
    external, external_folds : DataFrame or None
        As ``test`` and ``test_folds`` for the external cohort; None when the cohort has no external patients.
    fold_models : list of RadiomicsFoldModel
        One per fold, in fold order.
    selected : DataFrame
        ``feature, n_folds_selected, mean_coef, folds``: every feature with a non-zero coefficient in some fold
        model; ``mean_coef`` is the mean over the folds that selected it, ``folds`` those folds (``"0,2,3"``).
        Sorted by ``n_folds_selected`` (descending), then ``|mean_coef|`` (descending), then name.
    summary : DataFrame
        One row per fold: ``fold, n_train, n_pos, n_features_kept, n_candidates_kept, n_selected, C,
        inner_cv_auc, oof_auc, n_not_converged`` (``oof_auc``: the fold model's AUC on its held-out fold).
    options : dict
        The pipeline options used (defaults filled in) and ``seed``.
    method : str
        The recipe in words.
    """

    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: pd.DataFrame
    fold_models: list[RadiomicsFoldModel]
    selected: pd.DataFrame
    summary: pd.DataFrame
    external: pd.DataFrame | None = None
    external_folds: pd.DataFrame | None = None
    options: dict = field(default_factory=dict)
    method: str = METHOD

    @property
    def oof_auc(self) -> float:
        """AUC of the pooled OOF predictions of the training cohort."""
        return auc(self.oof["her2"].to_numpy(), self.oof["p_her2"].to_numpy())


def _prediction_frame(rows: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    out = rows[["patient_id", "split", "fold", "her2"]].reset_index(drop=True).copy()
    out["p_her2"] = np.asarray(p, dtype=float)
    return out[list(PREDICTION_COLUMNS)]


def _evaluate(
    models: list[RadiomicsFoldModel], table: pd.DataFrame, cohort: pd.DataFrame, split: str
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Every fold model's predictions of the ``split`` cohort (long table) and their mean; ``(None, None)`` when the
    cohort has no such patients. Nothing is fitted here: the cohort's labels are only copied into the tables."""
    rows = cohort[cohort["split"] == split].reset_index(drop=True)
    if rows.empty:
        return None, None
    X = _rows_matrix(table, rows["patient_id"], f"the {split} cohort")
    P = np.stack([m._predict_table(X) for m in models])  # (n_folds, n_patients)
    mean = validate_predictions(_prediction_frame(rows, P.mean(axis=0)), f"radiomics {split}", split=split)
    folds = pd.DataFrame(
        {
            "patient_id": np.repeat(rows["patient_id"].to_numpy(), len(models)),
            "split": split,
            "her2": np.repeat(rows["her2"].to_numpy(), len(models)),
            "model_fold": np.tile([m.fold for m in models], len(rows)),
            "p_her2": P.T.ravel(),
        }
    )[list(TEST_FOLD_COLUMNS)]
    return mean, validate_test_folds(folds, f"radiomics {split}_folds", test=mean)


def _selection_table(models: list[RadiomicsFoldModel]) -> pd.DataFrame:
    """``feature, n_folds_selected, mean_coef, folds`` over the fold models (see :class:`RadiomicsCVResult`)."""
    cols = ["feature", "n_folds_selected", "mean_coef", "folds"]
    rows = [(f, m.fold, c) for m in models for f, c in zip(m.coefficients["feature"], m.coefficients["coef"]) if c]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "mean_coef" else object) for c in cols})
    df = pd.DataFrame(rows, columns=["feature", "fold", "coef"])
    g = df.groupby("feature", sort=True)
    out = pd.DataFrame(
        {
            "n_folds_selected": g.size().astype(int),
            "mean_coef": g["coef"].mean(),
            "folds": g["fold"].agg(lambda s: ",".join(map(str, sorted(s)))),
        }
    ).reset_index()
    out["_abs"] = out["mean_coef"].abs()
    out = out.sort_values(["n_folds_selected", "_abs", "feature"], ascending=[False, False, True], kind="mergesort")
    return out[cols].reset_index(drop=True)


def _summary(models: list[RadiomicsFoldModel], oof: pd.DataFrame) -> pd.DataFrame:
    """One row per fold model (see :class:`RadiomicsCVResult`)."""
    rows = []
    for m in models:
        held = oof[oof["fold"] == m.fold]
        rows.append(
            {
                "fold": m.fold,
                "n_train": m.n_train,
                "n_pos": m.n_pos,
                "n_features_kept": m.n_features_kept,
                "n_candidates_kept": m.n_candidates_kept,
                "n_selected": len(m.selected),
                "C": m.C,
                "inner_cv_auc": m.inner_cv_auc,
                "oof_auc": auc(held["her2"].to_numpy(), held["p_her2"].to_numpy()),
                "n_not_converged": m.n_not_converged,
            }
        )
    return pd.DataFrame(rows)


def run_radiomics_cv(
    features: pd.DataFrame, cohort: pd.DataFrame, *, seed: int = 0, **pipeline_options
) -> RadiomicsCVResult:
    """Cross-validate the radiomics signature on the DL models' folds.

    For each fold k, :func:`fit_radiomics_fold` fits the whole signature (feature selection and the LASSO penalty
    included) on the training patients of the other folds only, then predicts fold k's patients (OOF) and every
    test and external patient. No test-set leakage: the test and external cohorts and fold k's held-out patients
    never enter fold k's fit.

    Parameters
    ----------
    features : DataFrame
        ``patient_id`` and numeric feature columns, shape (n_patients, 1 + n_features); NaN (and ``inf``) are
        missing values. Every cohort patient needs a row; extra rows are ignored.
    cohort : DataFrame
        ``patient_id, split, fold, her2``: ``split`` in ``train/test/external``, ``fold`` the CV fold (0..K-1) of a
        training patient and -1 otherwise, ``her2`` 0/1.
    seed : int
        Seed of every fold's inner CV and solver (same inputs + seed -> identical result).
    **pipeline_options
        ``corr_threshold, n_candidates, inner_folds, Cs, max_missing`` of :func:`make_radiomics_pipeline`.

    Returns
    -------
    RadiomicsCVResult
        Tables validated with :func:`her2lib.contract.validate_predictions` / :func:`~her2lib.contract.validate_test_folds`.

    Raises
    ------
    DataError
        Cohort problems (all listed at once), patients without features, fewer than 2 folds, no test patients.
    ParameterError
        An unknown or invalid pipeline option.
    """
    options = _resolve_options(pipeline_options)
    table = _feature_table(features)
    cohort = _clean_cohort(cohort)
    _rows_matrix(table, cohort["patient_id"], "the cohort")
    train = cohort[cohort["split"] == "train"]
    folds = sorted(map(int, train["fold"].unique()))
    if len(folds) < 2 or not (cohort["split"] == "test").any():
        raise DataError(
            f"radiomics CV: the cohort has training folds {folds} and {int((cohort['split'] == 'test').sum())} test "
            "patients; at least 2 folds and a test cohort are needed (run 02_preprocess to assign the folds)."
        )
    models, oof_parts = [], []
    for k in folds:
        model = _fit_fold(table, train[train["fold"] != k], fold=k, seed=seed, options=options)
        held = train[train["fold"] == k]
        oof_parts.append(_prediction_frame(held, model._predict_table(_rows_matrix(table, held["patient_id"], "OOF"))))
        models.append(model)
    oof = pd.concat(oof_parts, ignore_index=True).sort_values("patient_id", kind="mergesort")
    oof = validate_predictions(oof, "radiomics OOF", split="train")
    test, test_folds = _evaluate(models, table, cohort, "test")
    external, external_folds = _evaluate(models, table, cohort, "external")
    return RadiomicsCVResult(
        oof=oof,
        test=test,
        test_folds=test_folds,
        fold_models=models,
        selected=_selection_table(models),
        summary=_summary(models, oof),
        external=external,
        external_folds=external_folds,
        options={**options, "seed": seed},
    )


def write_radiomics_predictions(
    result: RadiomicsCVResult, predictions_dir: str | os.PathLike, prefix: str = "radiomics"
) -> list[Path]:
    """Write ``{prefix}_oof.csv``, ``{prefix}_test.csv`` (:data:`~her2lib.contract.PREDICTION_COLUMNS`; test = mean
    of the fold models) and ``{prefix}_test_folds.csv`` (:data:`~her2lib.contract.TEST_FOLD_COLUMNS`), and for a
    cohort with an external validation split ``{prefix}_external.csv`` and ``{prefix}_external_folds.csv`` in the
    same formats (removed when it has none: an earlier run's files are not this cohort's). Atomic writes
    (:func:`her2lib.io.write_csv`); the files read back with :func:`her2lib.contract.read_predictions` and
    :func:`~her2lib.contract.read_test_folds`. ``prefix`` may not be a paper model's (``us``, ``mri``, ``fusion``).
    """
    if not isinstance(prefix, str) or not prefix or any(ch in prefix for ch in "/\\") or prefix in _DL_PREFIXES:
        raise ParameterError(
            f"prefix={prefix!r}: use a plain file-name prefix other than the paper models' {sorted(_DL_PREFIXES)} "
            "(default 'radiomics'), so the DL predictions are never overwritten."
        )
    return write_prediction_files(
        predictions_dir,
        prefix,
        oof=result.oof,
        test=result.test,
        test_folds=result.test_folds,
        external=result.external,
        external_folds=result.external_folds,
    )
