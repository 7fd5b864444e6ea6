"""Evaluation of the class tasks on the test cohort: the three-class question (HER2-zero, HER2-low, HER2-positive)
and HER2-low vs HER2-zero among HER2-negative patients (the T-DXd question; issue 13).

Science layer: the tables and the Results text (:func:`evaluate_classes`); the figures are in
:mod:`her2lib.figures.multiclass`, reading and writing the run's files in :mod:`her2lib.stages.evaluation`. The
binary task (the paper's) is :mod:`her2lib.evaluate`; this module mirrors its choices.

What is computed, and how (every table names its method):

* **One-vs-rest AUC per class** with its DeLong interval, and the **macro AUC** (their unweighted mean, equal to
  scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``) with a stratified bootstrap interval
  (:func:`her2lib.stats.multiclass_auc`), from the reported (fold-model mean) test probabilities, as the binary AUC.
* **Decision rule** (:func:`fit_decision_rule`), the class counterpart of the binary Youden threshold, chosen on the
  **training cohort's out-of-fold (OOF) predictions only**: predict ``argmax_k w_k p_k`` with class weights
  ``w`` (``w_0 = 1``) maximising the OOF balanced accuracy (mean per-class recall). For two classes it is a
  threshold on ``p_1`` and reaches the balanced accuracy of Youden's threshold (``(J + 1) / 2``).
* **Per-class metrics** at that rule: sensitivity, specificity, PPV and NPV of each class against the rest with
  Clopper-Pearson intervals, accuracy (Clopper-Pearson) and balanced accuracy (point estimate). As the binary
  threshold, an OOF probability is a single fold model's, so the rule is applied to **each fold model's test
  probabilities** (``*_test_folds.csv``) and the confusion counts are **averaged over the fold models** (they may
  be fractional); the proportions are ratios of the averaged counts with intervals on the averaged count out of
  the number of test patients of the denominator (:func:`her2lib.evaluate.operating_point_metrics` does the same
  for the binary task). Without per-fold files the rule is applied to the fold-mean probabilities and the tables
  say so (:data:`RULE_APPLICATIONS`).
* **HER2-low vs HER2-zero** among the HER2-negative test patients: AUC with DeLong interval of the score
  ``P(low) / (P(low) + P(zero))`` (three-class; the model's probability of HER2-low given HER2-negative) or
  ``P(low)`` (low-vs-zero).
* **Paired DeLong tests** (:func:`her2lib.stats.delong_test`) between the models for each class's one-vs-rest AUC
  (three classes or more) and for the HER2-low vs HER2-zero AUC, in the paper's pair order.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from .contract import (
    MODELS,
    PAIRS,
    Task,
    class_proba,
    model,
    model_label,
    prediction_path,
    read_class_predictions,
    read_class_test_folds,
)
from .contract import task as _task
from .errors import DataError, ParameterError
from .evaluate import DELONG_COLUMNS, _check_same_patients, _selection_label
from .stats import auc_ci, delong_test, multiclass_auc
from .stats._common import as_class_labels, as_probability_matrix, check_classes, check_level, clopper_pearson

__all__ = [
    "RULE_APPLICATIONS",
    "DecisionRule",
    "fit_decision_rule",
    "ClassPredictions",
    "load_class_predictions",
    "averaged_confusion",
    "confusion_metrics",
    "low_vs_zero_score",
    "ClassEvaluationResult",
    "evaluate_classes",
    "class_results_paragraph",
    "COMPARISON_COLUMNS",
]

#: How the OOF decision rule reaches the test cohort (``applied_to`` column of the tables).
RULE_APPLICATIONS = {
    "per-fold": "each fold model's test probabilities (confusion counts averaged over the fold models)",
    "fold-mean": "the fold-mean test probabilities (no per-fold-model file)",
}
#: Columns of the ``comparisons`` table: which AUC is compared, then :data:`her2lib.evaluate.DELONG_COLUMNS`.
COMPARISON_COLUMNS = ["comparison", "class"] + DELONG_COLUMNS
_LOW_VS_ZERO = "HER2-low vs HER2-zero (HER2-negative)"


def _class_name(c: str) -> str:
    return f"HER2-{c}"


# ----------------------------------------------------------------------------------------------------------------
# The decision rule
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionRule:
    """A class decision rule fitted on OOF predictions: predict ``argmax_k weights[k] * p_k``.

    Attributes
    ----------
    classes : tuple of str
        The classes, in probability-column order.
    weights : tuple of float
        One per class, ``weights[0] == 1``; all ones is the plain argmax.
    oof_balanced_accuracy : float
        Mean per-class recall of the rule on the OOF predictions it was chosen on.
    method : str
        The rule, the grid searched and the tie-break.
    n_oof : int
        OOF patients it was chosen on.
    """

    classes: tuple
    weights: tuple[float, ...]
    oof_balanced_accuracy: float
    method: str
    n_oof: int = 0

    @property
    def log_weights(self) -> np.ndarray:
        """``log(weights)``, shape (n_classes,)."""
        return np.log(np.asarray(self.weights, dtype=float))

    def predict_codes(self, P) -> np.ndarray:
        """Class codes (``j`` = ``classes[j]``), shape (n_patients,), of probabilities ``P`` (n_patients,
        n_classes); a tie goes to the lower code."""
        p = np.asarray(P)
        p = as_probability_matrix(p, p.shape[0] if p.ndim else 0, len(self.classes), name="P", against="P")
        return np.argmax(_log_p(p) + self.log_weights[None, :], axis=1)

    def predict(self, P) -> np.ndarray:
        """Predicted classes (names, object array of shape (n_patients,)) of probabilities ``P`` (n_patients,
        n_classes)."""
        return np.asarray(self.classes, dtype=object)[self.predict_codes(P)]


def _log_p(p: np.ndarray) -> np.ndarray:
    """``log p`` with 0 mapped to log of the smallest normal float (so comparisons stay finite)."""
    return np.log(np.clip(p, np.finfo(float).tiny, None))


def _axis_grid(log_range: float, step: float) -> np.ndarray:
    n = int(round(log_range / step))
    return np.round(np.arange(-n, n + 1) * step, 12)


def _binary_cuts(lp: np.ndarray) -> np.ndarray:
    """For two classes: log-weights ``g`` of class 1 that realise every cut of the OOF log-ratios
    ``r = log p_1 - log p_0`` (class 1 when ``r + g > 0``): minus the midpoints between consecutive distinct ``r``
    and one beyond each end."""
    u = np.unique(lp[:, 1] - lp[:, 0])
    cuts = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2.0, u[-1] + 1.0]
    return -cuts


def _candidates(lp: np.ndarray, log_range: float, step: float) -> np.ndarray:
    """Candidate log-weight vectors, shape (n_candidates, n_classes), first column 0, in a fixed order."""
    k = lp.shape[1]
    axis = _axis_grid(log_range, step)
    if k == 2:
        axis = np.unique(np.r_[axis, _binary_cuts(lp)])
    n_cand = axis.size ** (k - 1)
    if n_cand > 2_000_000:
        raise ParameterError(
            f"the decision-rule grid has {n_cand} candidates ({axis.size} log-weights per class, {k} classes); "
            "use a larger step or a smaller log_range."
        )
    grid = np.array(list(itertools.product(axis, repeat=k - 1)), dtype=float).reshape(-1, k - 1)
    return np.hstack([np.zeros((grid.shape[0], 1)), grid])


def _balanced_scores(lp: np.ndarray, y: np.ndarray, G: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Exact integer score ``sum_j correct_j * (L / n_j)`` (L = lcm of the class sizes) of each candidate; the
    balanced accuracy is ``score / (K * L)``. Integers, so equal balanced accuracies compare equal."""
    k = lp.shape[1]
    sizes = np.bincount(y, minlength=k)
    lcm = math.lcm(*map(int, sizes))
    mult = np.array([lcm // int(s) for s in sizes], dtype=np.int64)
    out = np.empty(G.shape[0], dtype=np.int64)
    for start in range(0, G.shape[0], chunk):
        g = G[start : start + chunk]
        pred = np.argmax(lp[None, :, :] + g[:, None, :], axis=2)  # (c, n)
        correct = pred == y[None, :]
        per_class = np.stack([correct[:, y == j].sum(axis=1) for j in range(k)], axis=1).astype(np.int64)
        out[start : start + chunk] = per_class @ mult
    return out


def fit_decision_rule(y_oof, P_oof, *, classes: Sequence, log_range: float = 3.0, step: float = 0.05) -> DecisionRule:
    """The class decision rule chosen on OOF predictions only: ``argmax_k w_k p_k`` maximising OOF balanced accuracy.

    Parameters
    ----------
    y_oof : array-like, shape (n_patients,)
        True class of each training patient (one of ``classes``).
    P_oof : array-like of float, shape (n_patients, n_classes)
        Their out-of-fold class probabilities, column ``j`` = ``classes[j]``.
    classes : sequence
        The classes in column order; each needs at least one OOF patient.
    log_range, step : float
        The grid: ``log w_k`` for ``k >= 1`` runs over ``-log_range, -log_range + step, ..., log_range``
        (default -3..3 in steps of 0.05: weights 0.05 to 20), every combination; ``w_0 = 1``. For two classes the
        grid also holds every cut between consecutive OOF log-ratios ``log(p_1 / p_0)``, so the search is exact.

    Returns
    -------
    DecisionRule
        The weights with the highest OOF balanced accuracy (mean per-class recall); ties go to the weights closest
        to all ones (smallest sum of squared log-weights), then to the first in grid order.

    Raises
    ------
    DataError
        Bad labels or probabilities, or a class without OOF patients.
    ParameterError
        A non-positive ``log_range`` / ``step`` or a grid of more than 2 million candidates.

    Notes
    -----
    For two classes the rule is ``p_1 / p_0 > 1 / w_1``, a threshold on ``p_1`` when the rows sum to 1: its OOF
    balanced accuracy is ``(J + 1) / 2`` at the Youden threshold (:func:`her2lib.stats.youden_threshold`).
    Balanced accuracies are compared exactly (as integers over the least common multiple of the class sizes).
    """
    classes = check_classes(classes)
    if not (np.isfinite(log_range) and np.isfinite(step) and log_range > 0 and step > 0):
        raise ParameterError(f"log_range and step must be positive numbers; got {log_range!r}, {step!r}.")
    y = as_class_labels(y_oof, classes, "y_oof")
    p = as_probability_matrix(P_oof, y.shape[0], len(classes), name="P_oof", against="y_oof")
    counts = np.bincount(y, minlength=len(classes))
    if (counts == 0).any():
        raise DataError(
            f"fit_decision_rule: no OOF patient of class(es) {[classes[j] for j in np.flatnonzero(counts == 0)]}; "
            "the training cohort needs every class of the task to choose a decision rule."
        )
    lp = _log_p(p)
    G = _candidates(lp, float(log_range), float(step))
    score = _balanced_scores(lp, y, G)
    best = np.flatnonzero(score == score.max())
    pick = best[np.argmin(np.round((G[best] ** 2).sum(axis=1), 12))]  # first in grid order among equals
    k = len(classes)
    method = (
        f"argmax_k w_k p_k; w_0 = 1, log w_k (k >= 1) on the grid -{log_range:g}..{log_range:g} step {step:g}"
        + (" plus every cut between OOF log-ratios (exact for two classes)" if k == 2 else "")
        + "; chosen to maximise balanced accuracy on the training OOF predictions; ties: weights closest to all ones"
    )
    ba = float(score[pick]) / (k * math.lcm(*map(int, counts)))
    return DecisionRule(classes, tuple(float(v) for v in np.exp(G[pick])), ba, method, int(y.shape[0]))


# ----------------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassPredictions:
    """One model's class-task predictions (the class counterpart of :class:`her2lib.evaluate.ModelPredictions`).

    Attributes
    ----------
    key, label : str
        ``"dl_us"`` / ``"DL-US"`` etc.
    task : Task
    oof : DataFrame
        Training-cohort OOF predictions (:func:`her2lib.contract.class_prediction_columns`), for the rule only.
    test : DataFrame
        Test predictions (fold-model mean), sorted by ``patient_id``.
    test_folds : DataFrame or None
        Each fold model's test predictions (:func:`her2lib.contract.class_test_fold_columns`), or None.
    selection : str
        How the epochs were chosen, ``""`` if unknown.
    """

    key: str
    label: str
    task: Task
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: pd.DataFrame | None = None
    selection: str = ""

    @property
    def applied_to(self) -> str:
        """:data:`RULE_APPLICATIONS` entry of this model."""
        return RULE_APPLICATIONS["per-fold" if self.test_folds is not None else "fold-mean"]

    def test_models(self) -> np.ndarray:
        """Test probabilities of each fold model, shape (n_fold_models, n_test, n_classes) in ``test`` row order;
        one model (the fold mean) without a per-fold file."""
        if self.test_folds is None:
            return class_proba(self.test, self.task)[None]
        out = []
        for _, g in self.test_folds.groupby("model_fold", sort=True):
            g = g.set_index("patient_id").loc[self.test["patient_id"]]
            out.append(g[list(self.task.probability_columns)].to_numpy(dtype=float))
        return np.stack(out)


def load_class_predictions(
    predictions_dir: str | os.PathLike,
    task: str | Task,
    models: Sequence[str] = tuple(MODELS),
    *,
    models_dir: str | os.PathLike | None = None,
) -> dict[str, ClassPredictions]:
    """Read a class task's ``{us,mri,fusion}_{oof,test}.csv`` (and ``_test_folds.csv`` where present).

    Parameters
    ----------
    predictions_dir : path
        The run's ``predictions`` folder.
    task : str or Task
        ``"three-class"`` or ``"low-vs-zero"``.
    models : sequence of str
        Model keys (:data:`her2lib.contract.MODELS`).
    models_dir : path, optional
        The run's ``models`` folder (epoch-selection protocol from ``dl_*/config.json``).

    Returns
    -------
    dict
        ``key -> ClassPredictions`` in the given order.

    Raises
    ------
    DataError
        Missing or invalid files, or models describing different patients or classes.
    """
    t = _task(task)
    out = {}
    for key in models:
        prefix = model(key).prefix
        oof = read_class_predictions(prediction_path(predictions_dir, prefix, "oof"), t, "train")
        test = read_class_predictions(prediction_path(predictions_dir, prefix, "test"), t, "test")
        test = test.sort_values("patient_id").reset_index(drop=True)
        folds = read_class_test_folds(prediction_path(predictions_dir, prefix, "test_folds"), t, test)
        if (
            folds is not None
            and (
                folds.groupby("patient_id")["her2_class"].first().loc[test["patient_id"]].to_numpy()
                != test["her2_class"].to_numpy()
            ).any()
        ):
            raise DataError(
                f"{prediction_path(predictions_dir, prefix, 'test_folds')}: classes differ from the test file."
            )
        sel = _selection_label(Path(models_dir) if models_dir else None, key)
        oof = oof.sort_values("patient_id").reset_index(drop=True)
        out[key] = ClassPredictions(key, model_label(key), t, oof, test, folds, sel)
    _check_same_patients(out, label="her2_class")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Metrics at the rule
# ----------------------------------------------------------------------------------------------------------------
def averaged_confusion(y, P_models, rule: DecisionRule) -> np.ndarray:
    """Confusion counts of the rule applied to each fold model, averaged over the fold models.

    Parameters
    ----------
    y : array-like, shape (n_patients,)
        True classes (names of ``rule.classes``).
    P_models : array-like of float, shape (n_models, n_patients, n_classes) or (n_patients, n_classes)
        Each fold model's test probabilities.
    rule : DecisionRule

    Returns
    -------
    np.ndarray of float, shape (n_classes, n_classes)
        Rows = true class, columns = predicted class; mean over the models (fractional with several).
    """
    P = np.asarray(P_models, dtype=float)
    P = P[None] if P.ndim == 2 else P
    yc = as_class_labels(y, tuple(rule.classes))
    if P.ndim != 3 or P.shape[1:] != (yc.size, len(rule.classes)) or P.shape[0] < 1:
        raise ParameterError(
            f"P_models must have shape (n_models, {yc.size}, {len(rule.classes)}); got {np.shape(P_models)}."
        )
    k = len(rule.classes)
    cms = [np.bincount(yc * k + rule.predict_codes(p), minlength=k * k).reshape(k, k) for p in P]
    return np.mean(cms, axis=0)


def confusion_metrics(cm, classes: Sequence, *, level: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """Per-class one-vs-rest metrics and the overall accuracy of a (possibly averaged) confusion matrix.

    Parameters
    ----------
    cm : array-like of float, shape (n_classes, n_classes)
        Rows = true class, columns = predicted class (:func:`averaged_confusion`).
    classes : sequence
    level : float

    Returns
    -------
    per_class : DataFrame
        One row per class: ``class, n_class, tp, fp, tn, fn`` then ``sensitivity, specificity, ppv, npv`` each with
        ``_ci_low/_ci_high`` (Clopper-Pearson on the count out of its denominator, both possibly fractional; NaN
        where the denominator is 0), ``ci_level``. With integer counts these equal
        :func:`her2lib.stats.multiclass_metrics`.
    overall : dict
        ``accuracy, accuracy_ci_low, accuracy_ci_high`` (Clopper-Pearson) and ``balanced_accuracy`` (mean
        sensitivity; no interval: not a binomial proportion).
    """
    level = check_level(level)
    classes = check_classes(classes)
    cm = np.asarray(cm, dtype=float)
    n = float(cm.sum())
    rows = []
    for j, c in enumerate(classes):
        tp = cm[j, j]
        fn, fp = cm[j].sum() - tp, cm[:, j].sum() - tp
        tn = n - tp - fn - fp
        row = {"class": c, "n_class": cm[j].sum(), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        props = (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp), ("ppv", tp, tp + fp), ("npv", tn, tn + fn))
        for name, k, d in props:
            lo, hi = clopper_pearson(k, d, level)
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (k / d if d > 0 else np.nan), lo, hi
        row["ci_level"] = level
        rows.append(row)
    per = pd.DataFrame(rows)
    lo, hi = clopper_pearson(float(np.trace(cm)), n, level)
    overall = {
        "accuracy": float(np.trace(cm)) / n if n > 0 else np.nan,
        "accuracy_ci_low": lo,
        "accuracy_ci_high": hi,
        "balanced_accuracy": float(per["sensitivity"].mean()),
    }
    return per, overall


def low_vs_zero_score(P, task: str | Task) -> np.ndarray:
    """The HER2-low vs HER2-zero score of class probabilities, shape (n_patients,).

    ``P(low) / (P(low) + P(zero))`` for the three-class task (the probability of HER2-low given HER2-negative;
    0.5 where both are 0), ``P(low)`` for low-vs-zero. ``P`` has shape (n_patients, n_classes) in the task's class
    order.
    """
    t = _task(task)
    if t.is_binary or not {"zero", "low"} <= set(t.classes):
        raise ParameterError(f"the HER2-low vs HER2-zero score needs a task with both classes; got {t.key!r}.")
    P = np.asarray(P, dtype=float)
    low, zero = P[:, t.classes.index("low")], P[:, t.classes.index("zero")]
    if t.n_classes == 2:
        return low.copy()
    den = low + zero
    return np.divide(low, den, out=np.full_like(low, 0.5), where=den > 0)


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassEvaluationResult:
    """The tables of :func:`evaluate_classes`; ``files`` lists what :func:`her2lib.stages.evaluation.run_evaluation`
    wrote (empty when nothing was).

    Attributes
    ----------
    task : Task
    class_auc : DataFrame
        Per model: one-vs-rest AUC per class (DeLong CI) and the macro row (bootstrap CI); with two classes
        (low-vs-zero) one row, the AUC of the second class (HER2-low) with its DeLong CI.
    class_metrics : DataFrame
        Per model and class: sensitivity, specificity, PPV, NPV (exact CIs) at the OOF rule, with the model's
        accuracy and balanced accuracy repeated on each of its rows.
    decision_rules : DataFrame
        Per model: the OOF rule's weights and OOF balanced accuracy.
    confusion : DataFrame
        Long format: ``model, label, true_class, predicted_class, count`` (mean over fold models), ``share_of_true``.
    low_vs_zero : DataFrame
        Per model: HER2-low vs HER2-zero AUC (DeLong CI) among the HER2-negative test patients.
    comparisons : DataFrame
        Paired DeLong tests (:data:`COMPARISON_COLUMNS`).
    text : str
        The Results paragraph (:func:`class_results_paragraph`).
    rules : Mapping[str, DecisionRule]
    """

    task: Task
    class_auc: pd.DataFrame
    class_metrics: pd.DataFrame
    decision_rules: pd.DataFrame
    confusion: pd.DataFrame
    low_vs_zero: pd.DataFrame
    comparisons: pd.DataFrame
    text: str
    rules: Mapping[str, DecisionRule] = field(default_factory=dict)
    files: tuple[Path, ...] = ()


def _rule_row(mp: ClassPredictions, rule: DecisionRule) -> dict:
    row = {"model": mp.key, "label": mp.label, "classes": " | ".join(rule.classes)}
    for c, w in zip(rule.classes, rule.weights):
        row[f"w_{c}"] = w
    row.update(
        oof_balanced_accuracy=rule.oof_balanced_accuracy,
        n_oof=rule.n_oof,
        applied_to=mp.applied_to,
        method=rule.method,
    )
    return row


def _model_tables(mp: ClassPredictions, rule: DecisionRule, *, level: float, n_boot: int, seed: int):
    """class_auc, class_metrics, confusion and low_vs_zero rows of one model."""
    t = mp.task
    y, P = mp.test["her2_class"].to_numpy(dtype=object), class_proba(mp.test, t)
    head = {"model": mp.key, "label": mp.label}
    ma = multiclass_auc(y, P, classes=t.classes, level=level, n_boot=n_boot, seed=seed)
    auc_rows = ma.to_frame().assign(**head, n_test=ma.n)
    if t.n_classes == 2:  # both one-vs-rest rows and the macro row are one AUC: keep the positive class's (DeLong)
        auc_rows = auc_rows[auc_rows["class"] == t.classes[1]].reset_index(drop=True)
    cm = averaged_confusion(y, mp.test_models(), rule)
    per, overall = confusion_metrics(cm, t.classes, level=level)
    n_models = mp.test_folds["model_fold"].nunique() if mp.test_folds is not None else 1
    metrics = per.assign(**head, **overall, n_models=n_models, applied_to=mp.applied_to)
    conf = pd.DataFrame(
        [
            {**head, "true_class": a, "predicted_class": b, "count": cm[i, j], "n_true": cm[i].sum()}
            for i, a in enumerate(t.classes)
            for j, b in enumerate(t.classes)
        ]
    )
    conf["share_of_true"] = conf["count"] / conf["n_true"].where(conf["n_true"] > 0)
    conf = conf.assign(n_models=n_models, applied_to=mp.applied_to)
    neg = np.isin(y, ["zero", "low"])
    yn = (y[neg] == "low").astype(int)
    r = auc_ci(yn, low_vs_zero_score(P[neg], t), method="delong", level=level)
    lvz = {
        **head,
        "n_negative": int(neg.sum()),
        "n_low": int(yn.sum()),
        "n_zero": int(yn.size - yn.sum()),
        "auc": r.auc,
        "ci_low": r.ci[0],
        "ci_high": r.ci[1],
        "ci_level": level,
        "ci_method": "DeLong (pROC ci.auc)",
        "score": "P(low)" if t.n_classes == 2 else "P(low) / (P(low) + P(zero))",
    }
    return auc_rows, metrics, conf, lvz


def _comparisons(preds: Mapping[str, ClassPredictions], *, level: float) -> pd.DataFrame:
    """Paired DeLong tests between the models for each class's one-vs-rest AUC (3+ classes) and HER2-low vs
    HER2-zero; a pair that cannot be tested (fewer than 2 patients on a side) gets NaN and says why."""
    rows = []
    first = next(iter(preds.values()))
    t = first.task
    y = first.test["her2_class"].to_numpy(dtype=object)
    neg = np.isin(y, ["zero", "low"])
    scores = []
    if t.n_classes > 2:
        for j, c in enumerate(t.classes):
            scores.append((f"{_class_name(c)} vs rest", c, (y == c).astype(int), None, j))
    scores.append((_LOW_VS_ZERO, "low_vs_zero", (y[neg] == "low").astype(int), neg, None))
    for (a, b), (what, cls, yy, mask, j) in itertools.product(PAIRS, scores):
        if a not in preds or b not in preds:
            continue
        if preds[a].test.patient_id.tolist() != preds[b].test.patient_id.tolist():
            raise DataError(f"{preds[a].label} and {preds[b].label} test predictions are not aligned by patient.")
        sa, sb = (
            class_proba(preds[m].test, t)[:, j]
            if mask is None
            else low_vs_zero_score(class_proba(preds[m].test, t)[mask], t)
            for m in (a, b)
        )
        row = {"comparison": what, "class": cls, "model_a": preds[a].label, "model_b": preds[b].label}
        try:
            rows.append({**row, **delong_test(yy, sa, sb, level=level).to_row()})
        except DataError as exc:
            rows.append({**row, "method": f"not tested: {exc}"})
        for k in ("var_a", "var_b", "cov_ab", "sd_diff"):
            rows[-1].pop(k, None)
        rows[-1]["p_value"] = rows[-1].pop("pvalue", np.nan)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def evaluate_classes(
    preds: Mapping[str, ClassPredictions],
    task: str | Task,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> ClassEvaluationResult:
    """Every table of ``06_evaluation`` for a class task, and its Results text.

    Parameters
    ----------
    preds : mapping
        ``key -> ClassPredictions`` (:func:`load_class_predictions`), all of ``task``.
    task : str or Task
        ``"three-class"`` or ``"low-vs-zero"``.
    level : float
        Confidence level of every interval.
    n_boot, seed : int
        Bootstrap resamples and seed of the macro-AUC interval.

    Returns
    -------
    ClassEvaluationResult

    Raises
    ------
    ParameterError
        The binary task (use :func:`her2lib.evaluate.evaluate_models`), or predictions of another task.
    DataError
        A class missing from the training OOF or the test predictions.
    """
    t = _task(task)
    if t.is_binary:
        raise ParameterError("evaluate_classes is for the class tasks; evaluate the binary task with evaluate_models.")
    if not preds:
        raise ParameterError("no models to evaluate.")
    other = [mp.label for mp in preds.values() if mp.task.key != t.key]
    if other:
        raise ParameterError(f"predictions of {other} are not of task {t.key!r}; load them with this task.")
    level = check_level(level)
    rules, parts = {}, []
    for key, mp in preds.items():
        rules[key] = fit_decision_rule(
            mp.oof["her2_class"].to_numpy(dtype=object), class_proba(mp.oof, t), classes=t.classes
        )
        parts.append(_model_tables(mp, rules[key], level=level, n_boot=n_boot, seed=seed))
    lead = ["model", "label"]
    class_auc = pd.concat([p[0] for p in parts], ignore_index=True)
    class_metrics = pd.concat([p[1] for p in parts], ignore_index=True)
    class_auc = class_auc[lead + [c for c in class_auc.columns if c not in lead]]
    class_metrics = class_metrics[lead + [c for c in class_metrics.columns if c not in lead]]
    rules_tab = pd.DataFrame([_rule_row(preds[k], rules[k]) for k in preds])
    confusion = pd.concat([p[2] for p in parts], ignore_index=True)
    lvz = pd.DataFrame([p[3] for p in parts])
    comparisons = _comparisons(preds, level=level)
    text = class_results_paragraph(t, class_auc, class_metrics, low_vs_zero=lvz, comparisons=comparisons)
    return ClassEvaluationResult(
        task=t,
        class_auc=class_auc,
        class_metrics=class_metrics,
        decision_rules=rules_tab,
        confusion=confusion,
        low_vs_zero=lvz,
        comparisons=comparisons,
        text=text,
        rules=MappingProxyType(rules),
    )


# ----------------------------------------------------------------------------------------------------------------
# Results text
# ----------------------------------------------------------------------------------------------------------------
def _f3(v) -> str:
    return "NA" if v is None or not np.isfinite(float(v)) else f"{float(v):.3f}"


def _pct(v) -> str:
    return "NA" if v is None or not np.isfinite(float(v)) else f"{100 * float(v):.1f}%"


def _ci(lo, hi) -> str:
    return f"{_f3(lo)}\u2013{_f3(hi)}"


def _fmt_p(p) -> str:
    if p is None or not np.isfinite(float(p)):
        return "P = NA"
    return "P < 0.0001" if p < 1e-4 else f"P = {p:.4f}"


def _model_sentence(t: Task, auc_rows: pd.DataFrame, met: pd.DataFrame, lvl: int) -> str:
    label = auc_rows["label"].iloc[0]
    by = auc_rows.set_index("class")
    sens = ", ".join(
        f"{_class_name(r['class'])} {_pct(r['sensitivity'])} (specificity {_pct(r['specificity'])})"
        for _, r in met.iterrows()
    )
    m0 = met.iloc[0]
    if t.n_classes > 2:
        ovr = ", ".join(
            f"{_class_name(c)} {_f3(by.loc[c, 'auc'])} ({_ci(by.loc[c, 'ci_low'], by.loc[c, 'ci_high'])})"
            for c in t.classes
        )
        head = (
            f"In the test cohort, {label} distinguished {', '.join(map(_class_name, t.classes[:-1]))} and "
            f"{_class_name(t.classes[-1])} with a macro-average one-vs-rest AUC of {_f3(by.loc['macro', 'auc'])} "
            f"({lvl}% CI: {_ci(by.loc['macro', 'ci_low'], by.loc['macro', 'ci_high'])}); one-vs-rest AUCs: {ovr}."
        )
    else:
        c = t.classes[1]
        head = (
            f"In the test cohort, {label} separated {_class_name(c)} from {_class_name(t.classes[0])} with an AUC "
            f"of {_f3(by.loc[c, 'auc'])} ({lvl}% CI: {_ci(by.loc[c, 'ci_low'], by.loc[c, 'ci_high'])})."
        )
    return (
        f"{head} At the decision rule chosen on the training OOF predictions, the accuracy was "
        f"{_f3(m0['accuracy'])} ({lvl}% CI: {_ci(m0['accuracy_ci_low'], m0['accuracy_ci_high'])}) and the balanced "
        f"accuracy {_f3(m0['balanced_accuracy'])}; sensitivity: {sens}."
    )


def class_results_paragraph(
    task: str | Task,
    class_auc: pd.DataFrame,
    class_metrics: pd.DataFrame,
    *,
    low_vs_zero: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
) -> str:
    """The Results text of a class task in the paper's style (as :func:`her2lib.evaluate.results_paragraph`).

    Returns
    -------
    str
        Markdown: one paragraph per model, the HER2-low vs HER2-zero paragraph (three-class), the DeLong
        comparisons and the method statement.
    """
    t = _task(task)
    lvl = int(round(100 * float(class_auc["ci_level"].iloc[0])))
    parts = [
        _model_sentence(t, class_auc[class_auc.model == k], class_metrics[class_metrics.model == k], lvl)
        for k in dict.fromkeys(class_auc["model"])
    ]
    if low_vs_zero is not None and len(low_vs_zero) and t.n_classes > 2:
        r0 = low_vs_zero.iloc[0]
        each = "; ".join(
            f"{_f3(r['auc'])} ({lvl}% CI: {_ci(r['ci_low'], r['ci_high'])}) for {r['label']}"
            for _, r in low_vs_zero.iterrows()
        )
        parts.append(
            f"Among the {int(r0['n_negative'])} HER2-negative test patients ({int(r0['n_low'])} HER2-low, "
            f"{int(r0['n_zero'])} HER2-zero), the probability of HER2-low given HER2-negative, "
            f"P(low) / (P(low) + P(zero)), separated HER2-low from HER2-zero with an AUC of {each} (DeLong intervals)."
        )
    if comparisons is not None and len(comparisons):
        cmp = []
        for _, d in comparisons.iterrows():
            if not np.isfinite(d["p_value"]):
                cmp.append(f"{d['comparison']}, {d['model_a']} vs {d['model_b']}: {d['method']}")
                continue
            sig = "significant" if d["p_value"] < 0.05 else "not statistically significant"
            cmp.append(
                f"{d['comparison']}, {d['model_a']} vs {d['model_b']}: AUC {_f3(d['auc_a'])} vs {_f3(d['auc_b'])} "
                f"(difference {d['diff']:+.3f}, {lvl}% CI {d['diff_ci_low']:+.3f} to {d['diff_ci_high']:+.3f}, "
                f"{_fmt_p(d['p_value'])}; {sig})"
            )
        parts.append(
            "AUCs were compared with the paired DeLong test (P values not adjusted for multiple comparisons): "
            + "; ".join(cmp)
            + "."
        )
    applied = " / ".join(dict.fromkeys(map(str, class_metrics["applied_to"])))
    aucs = (
        "One-vs-rest AUCs have DeLong intervals; the macro average (the mean of the one-vs-rest AUCs) has a "
        "stratified bootstrap interval."
        if t.n_classes > 2
        else "AUCs have DeLong intervals."
    )
    parts.append(
        f"{aucs} The decision rule (predict the class with the largest weighted probability, "
        "weights chosen to maximise the balanced accuracy on the training cohort's out-of-fold predictions, never "
        f"on the test cohort) was applied to {applied}. Proportions have exact Clopper-Pearson intervals."
    )
    return "\n\n".join(parts) + "\n"
