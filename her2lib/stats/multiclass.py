"""Multiclass evaluation (the three-class HER2 question: zero / low / positive): one-vs-rest AUCs with DeLong
intervals and their macro average with a bootstrap interval, the confusion matrix, and per-class sensitivity,
specificity, PPV and NPV with exact intervals.

Science layer (imports core and :mod:`her2lib.stats` only).

Conventions: ``classes`` is the ordered list of class names (e.g. :data:`her2lib.contract.HER2_CLASSES`); column ``j``
of a probability matrix is the probability of ``classes[j]``. One-vs-rest means class ``j`` against all others, so
every binary statistic of :mod:`her2lib.stats.roc` applies with ``y == classes[j]`` as the positive class and
``P[:, j]`` as its score.

Checked against scikit-learn 1.9 ``roc_auc_score(multi_class="ovr", average="macro")``, :func:`~her2lib.stats.auc`,
:func:`~her2lib.stats.auc_ci` and scipy's ``binomtest(...).proportion_ci(method="exact")``
(``tests/test_stats_multiclass.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..errors import DataError, ParameterError
from ._common import as_class_labels, as_probability_matrix, check_classes, check_level, clopper_pearson
from .roc import AUCInterval, Estimate, auc_ci, exact_proportion

__all__ = [
    "MulticlassAUC",
    "multiclass_auc",
    "confusion_matrix",
    "ClassMetrics",
    "MulticlassMetrics",
    "multiclass_metrics",
]


# --------------------------------------------------------------------------------------------------- AUC
@dataclass(frozen=True)
class MulticlassAUC:
    """One-vs-rest AUCs of a multiclass prediction and their macro average.

    Attributes
    ----------
    classes : tuple
        The classes, in the order of the probability columns.
    per_class : Mapping[class, AUCInterval]
        Read-only; for each class its one-vs-rest :class:`~her2lib.stats.AUCInterval` (``auc``,
        ``ci = (low, high, level)``, ``n_pos`` = patients of the class, ``n_neg`` = the others) with the DeLong
        interval (pROC 1.18 ``ci.auc(method = "delong")``).
    macro : float
        Unweighted mean of the per-class AUCs (scikit-learn's ``roc_auc_score(multi_class="ovr",
        average="macro")``).
    macro_ci : tuple (low, high, level)
        Percentile interval of the macro AUC over a stratified bootstrap of patients.
    method : str
        How the intervals were computed (bootstrap resamples and seed included).
    n : int
        Patients.
    """

    classes: tuple
    per_class: Mapping[object, AUCInterval]
    macro: float
    macro_ci: tuple[float, float, float]
    method: str
    n: int

    def to_frame(self) -> pd.DataFrame:
        """One row per class, then a ``macro`` row: ``class, auc, ci_low, ci_high, ci_level, n_pos, n_neg,
        method`` (``n_pos``, ``n_neg`` missing in the macro row)."""
        rows = []
        for c in self.classes:
            r = self.per_class[c].to_row()
            rows.append(
                {
                    "class": c,
                    "auc": r["auc"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "ci_level": r["ci_level"],
                    "n_pos": r["n_pos"],
                    "n_neg": r["n_neg"],
                    "method": "one-vs-rest, DeLong interval",
                }
            )
        lo, hi, lev = self.macro_ci
        rows.append(
            {
                "class": "macro",
                "auc": self.macro,
                "ci_low": lo,
                "ci_high": hi,
                "ci_level": lev,
                "n_pos": None,
                "n_neg": None,
                "method": self.method,
            }
        )
        out = pd.DataFrame(rows)
        return out.astype({"n_pos": "Int64", "n_neg": "Int64"})


def _validate(y_true, y_proba, classes) -> tuple[tuple, np.ndarray, np.ndarray]:
    classes = check_classes(classes)
    y = as_class_labels(y_true, classes)
    p = as_probability_matrix(y_proba, y.shape[0], len(classes))
    return classes, y, p


def multiclass_auc(
    y_true, y_proba, *, classes, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> MulticlassAUC:
    """One-vs-rest AUC of each class with its DeLong interval, and the macro-average AUC with a bootstrap interval.

    Parameters
    ----------
    y_true : array-like, shape (n_patients,)
        The true class of each patient, one of ``classes``.
    y_proba : array-like of float, shape (n_patients, n_classes)
        Predicted class probabilities (softmax), column ``j`` = ``classes[j]``; finite, in [0, 1], rows summing to
        1 within 1e-6.
    classes : sequence
        The classes in column order, e.g. ``("zero", "low", "positive")``; at least 2, each present in ``y_true``.
    level : float, default 0.95
    n_boot : int, default 2000
        Bootstrap resamples of the macro-AUC interval.
    seed : int, default 0
        Seed of the bootstrap (``numpy.random.default_rng(seed)``); same seed, same interval.

    Returns
    -------
    MulticlassAUC

    Raises
    ------
    DataError
        Bad labels or probabilities (see :func:`~her2lib.stats._common.as_probability_matrix`), or a class without
        patients (its one-vs-rest AUC, hence the macro average, is undefined).
    ParameterError
        Bad ``classes``, ``level`` or ``n_boot``.

    Notes
    -----
    Class ``j``'s AUC is :func:`~her2lib.stats.auc` of ``y == classes[j]`` against ``P[:, j]`` (ties count one
    half) and its interval is :func:`~her2lib.stats.auc_ci` with ``method="delong"`` (NaN, with a warning, for a
    class with a single patient). The macro average is their unweighted mean, as scikit-learn's
    ``roc_auc_score(y, P, multi_class="ovr", average="macro", labels=classes)``. Its interval is the percentile
    interval over ``n_boot`` stratified bootstrap resamples of patients (each class resampled with replacement
    within itself, so every resample keeps the class sizes and every per-class AUC stays defined); the whole
    probability row of a patient travels with the patient, so the correlation between the per-class AUCs is kept.
    """
    level = check_level(level)
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 10:
        raise ParameterError(f"n_boot must be an integer >= 10 (2000 recommended); got {n_boot!r}.")
    classes, y, p = _validate(y_true, y_proba, classes)
    counts = np.bincount(y, minlength=len(classes))
    if (counts == 0).any():
        empty = [classes[j] for j in np.flatnonzero(counts == 0)]
        raise DataError(
            f"multiclass_auc: no patient of class(es) {empty} in y_true (counts "
            f"{dict(zip(classes, counts.tolist()))}); every class needs patients for its one-vs-rest AUC. Evaluate "
            "on a set with all classes, or drop the empty class from classes (and its column from y_proba, "
            "renormalised)."
        )
    per = {c: auc_ci(y == j, p[:, j], method="delong", level=level) for j, c in enumerate(classes)}
    macro = float(np.mean([per[c].auc for c in classes]))
    boots = _bootstrap_macro(y, p, int(n_boot), np.random.default_rng(seed))
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    method = (
        f"macro average of one-vs-rest AUCs; per-class DeLong intervals (pROC 1.18 ci.auc); macro interval: "
        f"percentile, stratified bootstrap over patients (within each true class), {int(n_boot)} resamples, seed {seed}"
    )
    return MulticlassAUC(
        classes=classes,
        per_class=MappingProxyType(per),
        macro=macro,
        macro_ci=(float(lo), float(hi), level),
        method=method,
        n=int(y.shape[0]),
    )


def _bootstrap_macro(y: np.ndarray, p: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 256):
    """Macro one-vs-rest AUCs of ``n_boot`` resamples stratified by true class (vectorised in chunks).

    Each resample concatenates the resampled patients of class 0, then class 1, ...; so the labels of a resample
    are the same for all, and class ``j``'s positives are block ``j``.
    """
    k = p.shape[1]
    members = [np.flatnonzero(y == j) for j in range(k)]
    sizes = np.array([m.size for m in members])
    n = int(sizes.sum())
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    out = np.empty(n_boot)
    for first in range(0, n_boot, chunk):
        b = min(chunk, n_boot - first)
        idx = np.concatenate([m[rng.integers(0, m.size, size=(b, m.size))] for m in members], axis=1)
        total = np.zeros(b)
        for j in range(k):
            z = _st.rankdata(p[idx, j], method="average", axis=1)
            m = int(sizes[j])
            rank_sum = z[:, starts[j] : starts[j] + m].sum(axis=1)
            total += (rank_sum - m * (m + 1) / 2.0) / (m * (n - m))
        out[first : first + b] = total / k
    return out


# --------------------------------------------------------------------------------------------------- decisions
def confusion_matrix(y_true, y_pred, *, classes) -> np.ndarray:
    """Counts of true class (rows) by predicted class (columns), both in the order of ``classes``.

    Returns
    -------
    np.ndarray of int64, shape (n_classes, n_classes)
        ``cm[i, j]`` = patients of class ``classes[i]`` predicted as ``classes[j]``.
    """
    classes = check_classes(classes)
    y = as_class_labels(y_true, classes)
    yp = as_class_labels(y_pred, classes, "y_pred", n=y.shape[0])
    k = len(classes)
    return np.bincount(y * k + yp, minlength=k * k).reshape(k, k).astype(np.int64)


@dataclass(frozen=True)
class ClassMetrics:
    """One class against the rest at a fixed decision: counts and four proportions with exact intervals.

    ``sensitivity = tp / (tp + fn)``, ``specificity = tn / (tn + fp)``, ``ppv = tp / (tp + fp)``,
    ``npv = tn / (tn + fn)``, each an :class:`~her2lib.stats.Estimate` with its Clopper-Pearson interval.
    """

    cls: object
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate

    METRICS = ("sensitivity", "specificity", "ppv", "npv")

    def to_row(self) -> dict:
        """Flat dict: ``class, tp, fp, tn, fn``, then ``<metric>, <metric>_ci_low, <metric>_ci_high``, ``ci_level``."""
        row: dict = {"class": self.cls, "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}
        for name in self.METRICS:
            e: Estimate = getattr(self, name)
            row[name] = e.value
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = e.ci[0], e.ci[1]
        row["ci_level"] = self.sensitivity.ci[2]
        return row


@dataclass(frozen=True)
class MulticlassMetrics:
    """Per-class one-vs-rest metrics of a multiclass decision, the confusion matrix and the overall accuracy.

    Attributes
    ----------
    classes : tuple
    confusion : np.ndarray, shape (n_classes, n_classes)
        Rows = true class, columns = predicted class (:func:`confusion_matrix`).
    per_class : Mapping[class, ClassMetrics]
        Read-only.
    accuracy : Estimate
        Share of patients whose predicted class is the true one, with its Clopper-Pearson interval.
    method : str
    """

    classes: tuple
    confusion: np.ndarray
    per_class: Mapping[object, ClassMetrics]
    accuracy: Estimate
    method: str = "one-vs-rest per class; Clopper-Pearson (exact) intervals"

    def to_frame(self) -> pd.DataFrame:
        """One row per class (:meth:`ClassMetrics.to_row`)."""
        return pd.DataFrame([self.per_class[c].to_row() for c in self.classes])


def _proportion(name: str, cls, k: int, n: int, level: float) -> Estimate:
    return exact_proportion(k, n, level, what=f"{name} of class {cls!r}", stacklevel=4)


def multiclass_metrics(y_true, y_pred, *, classes, level: float = 0.95) -> MulticlassMetrics:
    """Sensitivity, specificity, PPV and NPV of each class (one against the rest) with exact intervals.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_patients,)
        True and predicted class of each patient, each one of ``classes``. Choose the decision rule that makes
        ``y_pred`` (e.g. argmax of the probabilities, or thresholds) on training/OOF predictions only.
    classes : sequence
        The classes, e.g. ``("zero", "low", "positive")``.
    level : float, default 0.95

    Returns
    -------
    MulticlassMetrics
        A proportion whose denominator is 0 (e.g. PPV of a class never predicted) is NaN, with
        :class:`~her2lib.errors.UndefinedMetricWarning`.

    Notes
    -----
    For class ``c``: ``tp`` = true ``c`` predicted ``c``, ``fn`` = true ``c`` predicted otherwise, ``fp`` = true
    other predicted ``c``, ``tn`` = true other predicted other (a confusion between two other classes counts as a
    true negative for ``c``). Intervals are Clopper-Pearson, equal to scipy's
    ``binomtest(k, n).proportion_ci(level, method="exact")``.
    """
    level = check_level(level)
    cm = confusion_matrix(y_true, y_pred, classes=classes)
    classes = check_classes(classes)
    n = int(cm.sum())
    per = {}
    for j, c in enumerate(classes):
        tp = int(cm[j, j])
        fn = int(cm[j].sum()) - tp
        fp = int(cm[:, j].sum()) - tp
        tn = n - tp - fn - fp
        per[c] = ClassMetrics(
            c,
            tp,
            fp,
            tn,
            fn,
            _proportion("Sensitivity", c, tp, tp + fn, level),
            _proportion("Specificity", c, tn, tn + fp, level),
            _proportion("PPV", c, tp, tp + fp, level),
            _proportion("NPV", c, tn, tn + fn, level),
        )
    correct = int(np.trace(cm))
    lo, hi = clopper_pearson(correct, n, level)
    acc = Estimate(correct / n, (lo, hi, level), "Clopper-Pearson", correct, n)
    cm.setflags(write=False)
    return MulticlassMetrics(classes, cm, MappingProxyType(per), acc)
