"""Evaluation of DL-US, DL-MRI and DL-US&MRI on the test cohort (paper, Results and Figure 3; *Statistical
analysis*: ROC analysis and the DeLong test), plus calibration and decision curves.

Science layer: the tables and the Results text (:func:`evaluate_models`); the figures are in
:mod:`her2lib.figures.evaluation`, reading and writing the run's files in :mod:`her2lib.stages.evaluation`.

What is computed, and how (every table names its method):

* **AUC with 95% CI.** The headline interval is DeLong's (``ci_method="delong"``, pROC's ``ci.auc``), which
  accounts for the split into HER2-positive and HER2-negative patients. The paper used MedCalc, whose default is
  the *exact binomial* interval (Clopper-Pearson on ``k = AUC * n`` with ``n`` the whole cohort); it ignores the
  class split (2 positives / 46 negatives at AUC 0.717 give 0.569-0.838 against DeLong's 0.282-1.0) and is kept,
  named "as the paper / MedCalc", in its own columns (``auc_exact_binomial_ci_low/high``) for comparison with the
  paper's printed intervals.
* **Threshold metrics** (accuracy, sensitivity, specificity, PPV, NPV, F1) at the threshold maximising Youden's J
  on the **training cohort's out-of-fold (OOF) predictions** (never the test cohort); a patient is called
  HER2-positive when ``p_her2 >= threshold``. An OOF probability is a single fold model's, so the threshold is
  applied to **each fold model's test probabilities** (``*_test_folds.csv``) and the confusion counts are
  averaged over the fold models: the metrics are those of one fold model at its training-OOF operating point,
  averaged over the four. Proportions get Clopper-Pearson intervals on the averaged counts out of the number of
  test patients; F1 gets the interval of :func:`her2lib.stats.binary_metrics`. Without per-fold files (prediction
  files made elsewhere) the threshold is applied to the fold-mean probabilities and the table says so.
* **DeLong** paired tests of the three pairs, in the paper's order.
* **Calibration** (:func:`her2lib.stats.calibration`): calibration-in-the-large (intercept with ``logit(p)`` as an
  offset), calibration slope, Brier score; reliability curve (:func:`her2lib.stats.calibration_curve`: quantile
  bins, observed fraction with Clopper-Pearson CI); **decision curve** (:func:`her2lib.stats.decision_curve`): net
  benefit ``TP/n - FP/n * pt / (1 - pt)`` against treat-all and treat-none (Vickers & Elkin, 2006). These use the
  reported probability (the fold-model mean) as it is.
* A results paragraph in the paper's words, generated from the numbers.

Model keys, labels and prediction-file prefixes are :data:`her2lib.contract.MODELS` (``dl_us``, ``dl_mri``,
``dl_us_mri``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import (
    EVAL_SPLITS,
    MODELS,
    PAIRS,
    modality,
    model,
    model_label,
    prediction_path,
    read_predictions,
    read_test_folds,
)
from .errors import DataError, ParameterError
from .options import look_up_option
from .stats import (
    auc,
    auc_ci,
    binary_metrics,
    brier_score,
    calibration,
    calibration_curve,
    decision_curve,
    delong_test,
    youden_threshold,
)
from .stats import roc as _roc
from .stats._common import as_binary_labels, as_probabilities, clopper_pearson
from .stats.roc import AUC_CI_METHODS

__all__ = [
    "ModelPredictions",
    "available_models",
    "load_predictions",
    "operating_point_metrics",
    "fold_model_table",
    "THRESHOLD_RULES",
    "calibration_summary",
    "roc_points",
    "performance_table",
    "delong_table",
    "results_paragraph",
    "DELONG_COLUMNS",
    "EvaluationResult",
    "evaluate_models",
    "COHORT_NAMES",
    "INTERNAL_EXTERNAL_COLUMNS",
    "internal_external_table",
    "internal_external_paragraph",
]

DELONG_COLUMNS = [
    "model_a",
    "model_b",
    "auc_a",
    "auc_b",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "diff_ci_level",
    "z",
    "p_value",
    "n_pos",
    "n_neg",
    "method",
]
_CI_NAMES = {
    "exact-binomial": "exact binomial (as the paper / MedCalc)",
    "delong": "DeLong (pROC ci.auc)",
    "bootstrap": "stratified bootstrap",
}
THRESHOLD_RULES = {
    "per-fold": "Youden's J on training-cohort OOF predictions, applied to each fold model's test predictions "
    "(confusion counts averaged over the fold models); HER2+ if p >= threshold",
    "fold-mean": "Youden's J on training-cohort OOF predictions, applied to the fold-mean test predictions (no "
    "per-fold-model file; a less spread scale than the OOF predictions); HER2+ if p >= threshold",
}


@dataclass(frozen=True)
class ModelPredictions:
    """One model's predictions.

    Attributes
    ----------
    key, label : str
        ``"dl_us"`` / ``"DL-US"`` etc.
    oof : DataFrame
        Training-cohort out-of-fold predictions (prediction-file columns), used for the threshold only.
    test : DataFrame
        Test-cohort predictions (the fold-model mean), sorted by ``patient_id``.
    test_folds : DataFrame or None
        Each fold model's test predictions (``patient_id, split, her2, model_fold, p_her2``), or None when the
        run has no per-fold file.
    selection : str
        How the model's epochs were chosen (``her2lib.train.SELECTIONS`` label), or ``""`` if unknown.
    """

    key: str
    label: str
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: pd.DataFrame | None = None
    selection: str = ""

    def test_matrix(self) -> np.ndarray:
        """Test probabilities, shape ``(n_test, n_fold_models)`` in ``test`` row order; one column (the fold mean)
        when there is no per-fold file."""
        if self.test_folds is None:
            return self.test["p_her2"].to_numpy()[:, None]
        wide = self.test_folds.pivot(index="patient_id", columns="model_fold", values="p_her2")
        return wide.loc[self.test["patient_id"]].to_numpy()


def available_models(predictions_dir: str | os.PathLike, *, cohort: str = "test") -> list[str]:
    """Model keys whose ``<prefix>_oof.csv`` and ``<prefix>_<cohort>.csv`` both exist, in the paper's order.

    Parameters
    ----------
    predictions_dir : path
        The run's ``predictions`` folder.
    cohort : {"test", "external"}
        The evaluation cohort.

    Returns
    -------
    list of str
        Subset of ``["dl_us", "dl_mri", "dl_us_mri"]`` (a single-modality cohort skips DL-US or DL-MRI, and then
        the fusion).
    """
    return [
        k
        for k, m in MODELS.items()
        if prediction_path(predictions_dir, m.prefix, "oof").is_file()
        and prediction_path(predictions_dir, m.prefix, cohort).is_file()
    ]


def _selection_label(models_dir: Path | None, key: str) -> str:
    if models_dir is None:
        return ""
    dirs = [modality(m).model for m in model(key).modalities]  # the fusion: both DL models' folders
    labels = []
    for d in dirs:
        f = Path(models_dir) / d / "config.json"
        if f.is_file():
            labels.append(json.loads(f.read_text(encoding="utf-8")).get("selection_label", ""))
    labels = sorted(set(lab for lab in labels if lab))
    return labels[0] if len(labels) == 1 else "; ".join(labels)


def load_predictions(
    predictions_dir: str | os.PathLike,
    models: Sequence[str] = tuple(MODELS),
    *,
    models_dir: str | os.PathLike | None = None,
    cohort: str = "test",
) -> dict[str, ModelPredictions]:
    """Read ``{us,mri,fusion}_{oof,test}.csv`` (and ``_test_folds.csv`` where present) and check the models
    describe the same test patients.

    Parameters
    ----------
    predictions_dir : path
        The run's ``predictions`` folder.
    models : sequence of str
        Model keys (:data:`her2lib.contract.MODELS`: ``dl_us``, ``dl_mri``, ``dl_us_mri``).
    models_dir : path, optional
        The run's ``models`` folder: the epoch-selection protocol is read from ``dl_*/config.json``.
    cohort : {"test", "external"}
        The evaluation cohort read into :attr:`ModelPredictions.test`: the internal test cohort
        (``{prefix}_test.csv``, ``_test_folds.csv``) or the external validation cohort (``{prefix}_external.csv``,
        ``_external_folds.csv``); the OOF predictions are the training cohort's either way.

    Returns
    -------
    dict
        ``key -> ModelPredictions`` in the given order.

    Raises
    ------
    DataError
        Missing files, invalid rows, or test (or OOF) sets with different patients / labels across models.
    ParameterError
        An unknown model key.
    """
    look_up_option(cohort, EVAL_SPLITS, name="cohort")
    prefixes = {key: model(key).prefix for key in models}
    out = {}
    for key in models:
        oof = read_predictions(prediction_path(predictions_dir, prefixes[key], "oof"), "train")
        test = read_predictions(prediction_path(predictions_dir, prefixes[key], cohort), cohort)
        folds = read_test_folds(prediction_path(predictions_dir, prefixes[key], f"{cohort}_folds"), test)
        out[key] = ModelPredictions(
            key,
            model_label(key),
            oof.sort_values("patient_id").reset_index(drop=True),
            test.sort_values("patient_id").reset_index(drop=True),
            folds,
            _selection_label(Path(models_dir) if models_dir else None, key),
        )
    _check_same_patients(out)
    return out


def _check_same_patients(preds: Mapping[str, ModelPredictions], label: str = "her2") -> None:
    """Every model's OOF and test tables hold the same patients with the same ``label`` (``her2``; the class tasks'
    ``her2_class``); a DataError naming the patients otherwise."""
    keys = list(preds)
    if not keys:
        raise ParameterError("no models to evaluate.")
    ref = preds[keys[0]]
    for key in keys[1:]:
        for part in ("oof", "test"):
            a, b = getattr(ref, part), getattr(preds[key], part)
            ids_a, ids_b = set(a.patient_id), set(b.patient_id)
            if ids_a != ids_b:
                raise DataError(
                    f"{ref.label} and {preds[key].label} {part} predictions cover different patients: "
                    f"only in {ref.label}: {sorted(ids_a - ids_b)[:10]}, only in {preds[key].label}: "
                    f"{sorted(ids_b - ids_a)[:10]}. Re-run the notebooks on one cohort."
                )
            both = a.merge(b, on="patient_id")
            diff = both.loc[both[f"{label}_x"] != both[f"{label}_y"], "patient_id"].tolist()
            if diff:
                what = "HER2 status" if label == "her2" else "the HER2 class"
                raise DataError(
                    f"{ref.label} and {preds[key].label} {part} predictions disagree on {what} "
                    f"for patients {diff[:10]}."
                )


# ----------------------------------------------------------------------------------------------------------------
# Calibration and the ROC curve
# ----------------------------------------------------------------------------------------------------------------
def calibration_summary(y_true, y_prob, *, level: float = 0.95) -> dict:
    """Calibration-in-the-large, calibration slope (each with its CI) and Brier score of one model
    (:func:`her2lib.stats.calibration`), as the flat columns of ``calibration.csv``.

    Returns
    -------
    dict
        ``n_patients, brier, brier_reference`` (the prevalence forecast ``prev * (1 - prev)``),
        ``mean_predicted_overall, observed_rate``, ``calibration_intercept`` (logistic ``y ~ 1 + offset(logit p)``:
        0 = on average right, > 0 = predictions too low) with ``_ci_low/_ci_high``, ``calibration_slope``
        (logistic ``y ~ a + b logit p``: 1 = right spread, < 1 = too extreme) with ``_ci_low/_ci_high``,
        ``calibration_ci_level`` and ``calibration_method``. NaN where a fit does not exist (one class, separation).
    """
    r = calibration(y_true, y_prob, level=level)
    return {
        "n_patients": r.n,
        "brier": r.brier,
        "brier_reference": r.brier_reference,
        "mean_predicted_overall": r.mean_predicted,
        "observed_rate": r.observed_rate,
        "calibration_intercept": r.intercept,
        "calibration_intercept_ci_low": r.intercept_ci[0],
        "calibration_intercept_ci_high": r.intercept_ci[1],
        "calibration_slope": r.slope,
        "calibration_slope_ci_low": r.slope_ci[0],
        "calibration_slope_ci_high": r.slope_ci[1],
        "calibration_ci_level": r.intercept_ci[2],
        "calibration_method": r.method,
    }


def roc_points(y_true, y_prob) -> pd.DataFrame:
    """Empirical ROC curve (all distinct thresholds, rule ``p >= threshold``).

    Returns
    -------
    DataFrame
        Columns ``threshold, fpr, tpr`` from (0, 0) to (1, 1).
    """
    y = as_binary_labels(y_true).astype(int)
    p = as_probabilities(y_prob, y.shape[0])
    if y.min() == y.max():
        raise DataError("an ROC curve needs both HER2-positive and HER2-negative patients.")
    thr = np.r_[np.inf, np.unique(p)[::-1]]
    call = p[None, :] >= thr[:, None]
    tpr = (call & (y == 1)).sum(1) / (y == 1).sum()
    fpr = (call & (y == 0)).sum(1) / (y == 0).sum()
    return pd.DataFrame({"threshold": thr, "fpr": fpr, "tpr": tpr})


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
def operating_point_metrics(
    y, p_models, threshold: float, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Threshold metrics of fold models at one threshold, averaged over the fold models.

    Parameters
    ----------
    y : array_like of 0/1, shape (n_patients,)
    p_models : array_like of float, shape (n_patients, n_models) or (n_patients,)
        Each fold model's probability of HER2-positive (one column = one model).
    threshold : float
        HER2-positive when ``p >= threshold`` (chosen on training OOF predictions; may be +-inf).
    level, n_boot, seed
        As :func:`her2lib.stats.binary_metrics`.

    Returns
    -------
    dict
        The keys of ``BinaryMetrics.to_row()`` plus ``n_models``. With one model it is exactly
        :func:`her2lib.stats.binary_metrics`. With several, ``tp, fp, tn, fn`` are the confusion counts averaged
        over the models (so they may be fractional); accuracy, sensitivity, specificity, PPV and NPV are the
        pooled ratios of those counts with Clopper-Pearson intervals on the averaged count out of the number of
        patients (not patients x models: the models see the same patients); F1 gets the interval method of
        :func:`her2lib.stats.binary_metrics`, applied to the averaged counts.
    """
    P = np.asarray(p_models, dtype=float)
    if P.ndim == 1:
        P = P[:, None]
    y = as_binary_labels(y, "y").astype(int)
    if P.ndim != 2 or P.shape[0] != y.size or P.shape[1] < 1:
        raise ParameterError(
            f"p_models must have shape (n_patients, n_models) with n_patients = {y.size}; got {P.shape}."
        )
    if P.shape[1] == 1:
        return {**binary_metrics(y, P[:, 0], threshold, level=level, n_boot=n_boot, seed=seed).to_row(), "n_models": 1}
    pos = y == 1
    calls = P >= float(threshold)
    m, n = int(pos.sum()), int((~pos).sum())
    tp = float(calls[pos].sum(axis=0).mean())
    fp = float(calls[~pos].sum(axis=0).mean())
    fn, tn = m - tp, n - fp
    row: dict = dict(threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn, n_pos=m, n_neg=n)

    def prop(name, k, d):
        if d <= 0:
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (float("nan"),) * 3
            return
        lo, hi = clopper_pearson(k, d, level)
        row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = k / d, lo, hi

    prop("accuracy", tp + tn, m + n)
    prop("sensitivity", tp, m)
    prop("specificity", tn, n)
    prop("ppv", tp, tp + fp)
    prop("npv", tn, tn + fn)
    f1, f1_lo, f1_hi = _f1_interval(tp, fp, tn, fn, level=level, n_boot=n_boot, seed=seed)
    row.update(f1=f1, f1_ci_low=f1_lo, f1_ci_high=f1_hi, ci_level=level, n_models=int(P.shape[1]))
    return row


def _f1_interval(
    tp: float, fp: float, tn: float, fn: float, *, level: float, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """F1 and its interval from (possibly averaged) confusion counts, by the method of
    :func:`her2lib.stats.binary_metrics`."""
    den = 2 * tp + fp + fn
    if den <= 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = _roc._f1_interval(tp, fp, tp + fn, tn + fp, level, int(n_boot), seed)
    return 2 * tp / den, lo, hi


def performance_table(
    preds: Mapping[str, ModelPredictions],
    *,
    ci_method: str = "delong",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Figure 3B / Table: one row per model with the test-cohort AUC (95% CI) and threshold metrics.

    Parameters
    ----------
    preds : mapping
        ``key -> ModelPredictions`` (:func:`load_predictions`).
    ci_method : {"delong", "exact-binomial", "bootstrap"}
        Method of the headline AUC interval (``auc_ci_low/high``); default DeLong. The exact-binomial interval
        (as the paper / MedCalc) is always added as ``auc_exact_binomial_ci_low/high`` and DeLong's as
        ``auc_delong_ci_low/high``.
    level : float
        Confidence level.
    n_boot, seed : int
        Bootstrap settings (bootstrap AUC interval and the F1 interval).

    Returns
    -------
    DataFrame
        Columns ``model, label, selection, n_test, n_pos, n_neg, auc, auc_ci_low, auc_ci_high, auc_ci_level,
        auc_ci_method, auc_delong_ci_low/high, auc_exact_binomial_ci_low/high, threshold, threshold_rule,
        n_models`` then ``accuracy, sensitivity, specificity, ppv, npv, f1`` (each with ``_ci_low/_ci_high``),
        ``tp, fp, tn, fn`` (averaged over the fold models), ``auc_train_oof, brier``.
    """
    look_up_option(ci_method, AUC_CI_METHODS, name="ci_method")
    rows = []
    for key, mp in preds.items():
        y, p = mp.test["her2"].to_numpy(), mp.test["p_her2"].to_numpy()
        yo, po = mp.oof["her2"].to_numpy(), mp.oof["p_her2"].to_numpy()
        thr = youden_threshold(yo, po)
        if np.isnan(thr):
            raise DataError(
                f"{mp.label}: Youden's threshold is undefined on the training OOF predictions (a "
                "single class); the training cohort needs both HER2 classes."
            )
        head = auc_ci(y, p, method=ci_method, level=level, n_boot=n_boot, seed=seed)
        dl = auc_ci(y, p, method="delong", level=level)
        eb = auc_ci(y, p, method="exact-binomial", level=level)
        bm = operating_point_metrics(y, mp.test_matrix(), thr, level=level, n_boot=n_boot, seed=seed)
        row = {
            "model": key,
            "label": mp.label,
            "selection": mp.selection,
            "n_test": int(y.size),
            "n_pos": int(y.sum()),
            "n_neg": int(y.size - y.sum()),
            "auc": head.auc,
            "auc_ci_low": head.ci[0],
            "auc_ci_high": head.ci[1],
            "auc_ci_level": level,
            "auc_ci_method": _CI_NAMES[ci_method],
            "auc_delong_ci_low": dl.ci[0],
            "auc_delong_ci_high": dl.ci[1],
            "auc_exact_binomial_ci_low": eb.ci[0],
            "auc_exact_binomial_ci_high": eb.ci[1],
            "threshold": thr,
            "threshold_rule": THRESHOLD_RULES["per-fold" if mp.test_folds is not None else "fold-mean"],
            "n_models": bm["n_models"],
        }
        for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"):
            row[name] = bm[name]
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bm[f"{name}_ci_low"], bm[f"{name}_ci_high"]
        row.update(
            tp=bm["tp"], fp=bm["fp"], tn=bm["tn"], fn=bm["fn"], auc_train_oof=auc(yo, po), brier=brier_score(y, p)
        )
        rows.append(row)
    return pd.DataFrame(rows)


def fold_model_table(preds: Mapping[str, ModelPredictions]) -> pd.DataFrame:
    """Each fold model on the test cohort: AUC and (sensitivity, specificity) at the model's training-OOF Youden
    threshold, one row per model and fold model (empty without per-fold files).

    Returns
    -------
    DataFrame
        Columns ``model, label, model_fold, auc, threshold, sensitivity, specificity``.
    """
    rows = []
    for key, mp in preds.items():
        if mp.test_folds is None:
            continue
        thr = youden_threshold(mp.oof["her2"].to_numpy(), mp.oof["p_her2"].to_numpy())
        y = mp.test["her2"].to_numpy()
        P = mp.test_matrix()
        for j, k in enumerate(sorted(mp.test_folds["model_fold"].unique())):
            call = P[:, j] >= thr
            rows.append(
                {
                    "model": key,
                    "label": mp.label,
                    "model_fold": int(k),
                    "auc": auc(y, P[:, j]),
                    "threshold": thr,
                    "sensitivity": float(call[y == 1].mean()) if (y == 1).any() else np.nan,
                    "specificity": float((~call[y == 0]).mean()) if (y == 0).any() else np.nan,
                }
            )
    return pd.DataFrame(
        rows, columns=["model", "label", "model_fold", "auc", "threshold", "sensitivity", "specificity"]
    )


def delong_table(
    preds: Mapping[str, ModelPredictions], *, level: float = 0.95, pairs: Sequence[tuple[str, str]] = PAIRS
) -> pd.DataFrame:
    """Paired DeLong tests on the test cohort (paper: fusion vs US, fusion vs MRI, US vs MRI).

    Returns
    -------
    DataFrame
        Columns ``model_a, model_b, auc_a, auc_b, diff, diff_ci_low, diff_ci_high, diff_ci_level, z, p_value,
        n_pos, n_neg, method`` (``diff = auc_a - auc_b``).
    """
    rows = []
    for a, b in pairs:
        if a not in preds or b not in preds:
            continue
        ta, tb = preds[a].test, preds[b].test
        if ta.patient_id.tolist() != tb.patient_id.tolist():
            raise DataError(f"{preds[a].label} and {preds[b].label} test predictions are not aligned by patient.")
        r = delong_test(ta["her2"].to_numpy(), ta["p_her2"].to_numpy(), tb["p_her2"].to_numpy(), level=level)
        rows.append(
            {
                "model_a": preds[a].label,
                "model_b": preds[b].label,
                "auc_a": r.auc_a,
                "auc_b": r.auc_b,
                "diff": r.diff,
                "diff_ci_low": r.diff_ci[0],
                "diff_ci_high": r.diff_ci[1],
                "diff_ci_level": r.diff_ci[2],
                "z": r.z,
                "p_value": r.pvalue,
                "n_pos": r.n_pos,
                "n_neg": r.n_neg,
                "method": r.method,
            }
        )
    return pd.DataFrame(rows, columns=DELONG_COLUMNS)


def _pct(v: float) -> str:
    return "NA" if not np.isfinite(v) else f"{100 * v:.1f}%"


def _f3(v: float) -> str:
    return "NA" if not np.isfinite(v) else f"{v:.3f}"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "P = NA"
    return "P < 0.0001" if p < 1e-4 else f"P = {p:.4f}"


#: how the Results text names each evaluation cohort
COHORT_NAMES = {"test": "test cohort", "external": "external validation cohort"}


def results_paragraph(
    performance: pd.DataFrame,
    delong: pd.DataFrame | None = None,
    protocols: pd.DataFrame | None = None,
    *,
    cohort: str = "test",
) -> str:
    """The Results text in the paper's style, generated from :func:`performance_table` (and
    :func:`delong_table`, the fusion protocol table of :func:`her2lib.fusion.fuse`).

    Example sentence: "In the test cohort, DL-US achieved an AUC of 0.842 (95% CI: 0.708-0.931), with an accuracy
    of 0.833, sensitivity of 89.5%, specificity of 79.3%, PPV of 0.739, NPV of 0.920, and an F1 score of 0.810."

    Returns
    -------
    str
        Markdown text (one paragraph per model, then the comparisons and the method statement).
    """
    need = {
        "label",
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "accuracy",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "threshold",
    }
    missing = need - set(performance.columns)
    if missing:
        raise ParameterError(f"performance table lacks columns {sorted(missing)}; use evaluate.performance_table.")
    parts = []
    for _, r in performance.iterrows():
        lvl = int(round(100 * float(r.get("auc_ci_level", 0.95))))
        eb = ""
        if "auc_exact_binomial_ci_low" in r and not str(r.get("auc_ci_method", "")).startswith("exact"):
            eb = (
                f"; exact binomial as the paper/MedCalc: {_f3(r['auc_exact_binomial_ci_low'])}\u2013"
                f"{_f3(r['auc_exact_binomial_ci_high'])}"
            )
        parts.append(
            f"In the {COHORT_NAMES[cohort]}, {r['label']} achieved an AUC of {_f3(r['auc'])} ({lvl}% CI: "
            f"{_f3(r['auc_ci_low'])}\u2013{_f3(r['auc_ci_high'])}{eb}), with an accuracy of "
            f"{_f3(r['accuracy'])}, "
            f"sensitivity of {_pct(r['sensitivity'])}, specificity of {_pct(r['specificity'])}, PPV of "
            f"{_f3(r['ppv'])}, NPV of {_f3(r['npv'])}, and an F1 score of {_f3(r['f1'])} "
            f"(threshold {r['threshold']:.3f})."
        )
    if delong is not None and len(delong):
        cmp = []
        for _, d in delong.iterrows():
            sig = "significant" if d["p_value"] < 0.05 else "not statistically significant"
            better = "higher" if d["diff"] > 0 else "lower" if d["diff"] < 0 else "the same"
            cmp.append(
                f"{d['model_a']} vs {d['model_b']}: AUC {_f3(d['auc_a'])} vs {_f3(d['auc_b'])} "
                f"({better}; difference {d['diff']:+.3f}, 95% CI {d['diff_ci_low']:+.3f} to "
                f"{d['diff_ci_high']:+.3f}, Z = {d['z']:.2f}, {_fmt_p(d['p_value'])}; {sig})"
            )
        parts.append("Model performance was compared with the DeLong test: " + "; ".join(cmp) + ".")
    if protocols is not None and len(protocols) == 2 and "auc_diff_vs_leakage_free" in protocols:
        free = protocols.iloc[0]
        paper = protocols.iloc[1]
        lvl = int(round(100 * float(paper.get("ci_level", 0.95))))
        parts.append(
            f"DL-US&MRI was fitted on the training cohort's out-of-fold predictions and applied to the "
            f"test cohort ({free.get('applied_to', '')}). Refitting it in the test cohort, as the paper did, "
            f"gives a test AUC of {_f3(paper['auc'])} instead of {_f3(free['auc'])} (difference "
            f"{paper['auc_diff_vs_leakage_free']:+.3f}, {lvl}% bootstrap CI "
            f"{paper['auc_diff_ci_low']:+.3f} to {paper['auc_diff_ci_high']:+.3f})."
        )
    method = str(performance["auc_ci_method"].iloc[0]) if "auc_ci_method" in performance else "see table"
    rule = str(performance["threshold_rule"].iloc[0]) if "threshold_rule" in performance else ""
    per_fold = rule == THRESHOLD_RULES["per-fold"]
    how = (
        "it was applied to each of the fold models' test predictions, and the metrics are those of one fold "
        "model averaged over the fold models (the kind of prediction the threshold was chosen on)"
        if per_fold
        else "it was applied to the fold-mean test predictions"
    )
    sel = ""
    if "selection" in performance and str(performance["selection"].iloc[0]):
        sel = f" Training epochs were chosen on: {'; '.join(sorted(set(map(str, performance['selection']))))}."
    parts.append(
        f"AUC confidence intervals: {method}; the exact binomial intervals (as the paper / MedCalc) are "
        "given beside them in performance.csv. Thresholds were chosen by Youden's J on the training "
        f"cohort's out-of-fold predictions (never on the {COHORT_NAMES[cohort]}); {how}. A patient was called "
        f"HER2-positive when the predicted probability was at or above the threshold.{sel}"
    )
    return "\n\n".join(parts) + "\n"


INTERNAL_EXTERNAL_COLUMNS = (
    "model",
    "label",
    "auc_test",
    "auc_external",
    "diff",
    "statistic",
    "df",
    "p_value",
    "n_pos_test",
    "n_neg_test",
    "n_pos_external",
    "n_neg_external",
    "method",
)


def internal_external_table(
    test: Mapping[str, ModelPredictions], external: Mapping[str, ModelPredictions]
) -> pd.DataFrame:
    """Each model's test-cohort AUC against its external-cohort AUC: the unpaired DeLong test (the two cohorts are
    different patients; pROC ``roc.test(paired = FALSE)``), for the models in both.

    Returns
    -------
    DataFrame
        :data:`INTERNAL_EXTERNAL_COLUMNS` (``diff = auc_test - auc_external``; ``statistic`` is pROC's D with
        ``df`` degrees of freedom).
    """
    rows = []
    for key in [k for k in test if k in external]:
        a, b = test[key].test, external[key].test
        r = _roc.delong_test_unpaired(a["her2"], a["p_her2"], b["her2"], b["p_her2"])
        rows.append(
            {
                "model": key,
                "label": test[key].label,
                "auc_test": r.auc_a,
                "auc_external": r.auc_b,
                "diff": r.diff,
                "statistic": r.statistic,
                "df": r.df,
                "p_value": r.pvalue,
                "n_pos_test": r.n_pos_a,
                "n_neg_test": r.n_neg_a,
                "n_pos_external": r.n_pos_b,
                "n_neg_external": r.n_neg_b,
                "method": r.method,
            }
        )
    return pd.DataFrame(rows, columns=INTERNAL_EXTERNAL_COLUMNS)


def internal_external_paragraph(table: pd.DataFrame) -> str:
    """One sentence per model from :func:`internal_external_table`."""
    parts = [
        f"{r['label']}: AUC {_f3(r['auc_test'])} in the test cohort vs {_f3(r['auc_external'])} in the external "
        f"validation cohort (difference {r['diff']:+.3f}, unpaired DeLong D = {r['statistic']:.2f}, "
        f"{_fmt_p(r['p_value'])})"
        for _, r in table.iterrows()
    ]
    return "Internal vs external validation (unpaired DeLong test): " + "; ".join(parts) + ".\n"


# ----------------------------------------------------------------------------------------------------------------
# Everything of notebook 06
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationResult:
    """The tables of :func:`evaluate_models`; ``files`` lists what :func:`her2lib.stages.evaluation.run_evaluation`
    wrote (empty when nothing was)."""

    performance: pd.DataFrame
    delong: pd.DataFrame
    calibration: pd.DataFrame
    decision: pd.DataFrame
    text: str
    fold_models: pd.DataFrame
    files: tuple[Path, ...] = ()


def evaluate_models(
    preds: Mapping[str, ModelPredictions],
    *,
    ci_method: str = "delong",
    level: float = 0.95,
    n_bins: int = 5,
    n_boot: int = 2000,
    seed: int = 0,
    protocols: pd.DataFrame | None = None,
    cohort: str = "test",
) -> EvaluationResult:
    """Every table of ``06_evaluation`` and the Results text, for the models in ``preds``.

    Parameters
    ----------
    preds : mapping
        ``key -> ModelPredictions`` (:func:`load_predictions`); DeLong comparisons are made for the pairs among
        them.
    ci_method, level, n_boot, seed
        As :func:`performance_table`.
    n_bins : int
        Quantile bins of the reliability curve (:func:`her2lib.stats.calibration_curve`).
    protocols : DataFrame, optional
        The fusion protocol table (``fusion_protocols.csv``) for the Results text.
    cohort : {"test", "external"}
        Which cohort ``preds`` hold (:func:`load_predictions`'s ``cohort``): names it in the Results text.

    Returns
    -------
    EvaluationResult
        ``performance`` (:func:`performance_table`), ``fold_models`` (:func:`fold_model_table`), ``delong``
        (:func:`delong_table`), ``calibration`` (reliability curve per model with :func:`calibration_summary`'s
        columns), ``decision`` (decision curve per model) and ``text`` (:func:`results_paragraph`).
    """
    perf = performance_table(preds, ci_method=ci_method, level=level, n_boot=n_boot, seed=seed)
    fold_tab = fold_model_table(preds)
    dl = delong_table(preds, level=level)
    cal_rows, dec_rows = [], []
    for key, mp in preds.items():
        y, p = mp.test["her2"].to_numpy(), mp.test["p_her2"].to_numpy()
        cal_rows.append(
            calibration_curve(y, p, n_bins=n_bins).assign(model=key, **calibration_summary(y, p, level=level))
        )
        dec_rows.append(decision_curve(y, p).assign(model=key))
    cal = pd.concat(cal_rows, ignore_index=True)
    dec = pd.concat(dec_rows, ignore_index=True)
    return EvaluationResult(
        performance=perf,
        delong=dl,
        calibration=cal,
        decision=dec,
        text=results_paragraph(perf, dl, protocols, cohort=cohort),
        fold_models=fold_tab,
    )
