"""Evaluation of DL-US, DL-MRI and DL-US&MRI on the test cohort (paper, Results and Figure 3; *Statistical
analysis*: ROC analysis and the DeLong test), plus calibration and decision curves.

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
  offset), calibration slope, Brier score; reliability curve (quantile bins, observed fraction with
  Clopper-Pearson CI); **decision curve**: net benefit ``TP/n - FP/n * pt / (1 - pt)`` against treat-all and
  treat-none (Vickers & Elkin, 2006). These use the reported probability (the fold-model mean) as it is.
* A results paragraph in the paper's words, generated from the numbers.

Model keys follow the paper's vocabulary: ``dl_us``, ``dl_mri``, ``dl_us_mri``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import DataError, ParameterError
from .stats._common import clopper_pearson
from .fusion import read_predictions, read_test_folds
from .io import save_figure, write_csv, write_text

__all__ = ["MODELS", "ModelPredictions", "load_predictions", "operating_point_metrics", "fold_model_table",
           "THRESHOLD_RULES", "brier_score", "calibration_curve",
           "calibration_summary", "decision_curve", "roc_points", "performance_table", "delong_table",
           "results_paragraph", "plot_roc", "plot_performance", "plot_calibration", "plot_decision_curve",
           "EvaluationResult", "run_evaluation", "available_models", "DELONG_COLUMNS"]

#: (key, label, prediction-file prefix) in the paper's order.
MODELS: tuple[tuple[str, str, str], ...] = (("dl_us", "DL-US", "us"), ("dl_mri", "DL-MRI", "mri"),
                                            ("dl_us_mri", "DL-US&MRI", "fusion"))
#: DeLong pairs in the paper's order (fusion vs US, fusion vs MRI, US vs MRI).
PAIRS: tuple[tuple[str, str], ...] = (("dl_us_mri", "dl_us"), ("dl_us_mri", "dl_mri"), ("dl_us", "dl_mri"))
# Okabe-Ito colours (colour-blind safe)
COLORS = {"dl_us": "#0072B2", "dl_mri": "#D55E00", "dl_us_mri": "#009E73"}
CI_METHODS = ("delong", "exact-binomial", "bootstrap")
DELONG_COLUMNS = ["model_a", "model_b", "auc_a", "auc_b", "diff", "diff_ci_low", "diff_ci_high", "diff_ci_level",
                  "z", "p_value", "n_pos", "n_neg", "method"]
_CI_NAMES = {"exact-binomial": "exact binomial (as the paper / MedCalc)", "delong": "DeLong (pROC ci.auc)",
             "bootstrap": "stratified bootstrap"}
THRESHOLD_RULES = {
    "per-fold": "Youden's J on training-cohort OOF predictions, applied to each fold model's test predictions "
                "(confusion counts averaged over the fold models); HER2+ if p >= threshold",
    "fold-mean": "Youden's J on training-cohort OOF predictions, applied to the fold-mean test predictions (no "
                 "per-fold-model file; a less spread scale than the OOF predictions); HER2+ if p >= threshold"}


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


def _label(key: str) -> str:
    return {k: lab for k, lab, _ in MODELS}.get(key, key)


def available_models(predictions_dir: str | os.PathLike, quiet: bool = False) -> list[str]:
    """Model keys whose ``<prefix>_oof.csv`` and ``<prefix>_test.csv`` both exist, in the paper's order.

    Parameters
    ----------
    predictions_dir : path
        ``run.predictions``.
    quiet : bool
        Do not print a notice for the models left out (a single-modality cohort skips DL-US or DL-MRI, and
        then the fusion) and the DeLong comparisons that cannot be made.

    Returns
    -------
    list of str
        Subset of ``["dl_us", "dl_mri", "dl_us_mri"]``.
    """
    pdir = Path(predictions_dir)
    keys = [k for k, _, p in MODELS if (pdir / f"{p}_oof.csv").is_file() and (pdir / f"{p}_test.csv").is_file()]
    if not quiet and len(keys) < len(MODELS):
        from .stages import notice
        gone = [lab for k, lab, _ in MODELS if k not in keys]
        kept = ", ".join(_label(k) for k in keys) or "no model"
        tail = "" if len(keys) > 1 else "; no DeLong comparison is possible"
        notice(f"No prediction files for {', '.join(gone)} in this run (skipped by an earlier notebook): "
               f"evaluating {kept}{tail}.")
    return keys


def _selection_label(models_dir: Path | None, key: str) -> str:
    import json

    if models_dir is None:
        return ""
    dirs = {"dl_us": ["dl_us"], "dl_mri": ["dl_mri"], "dl_us_mri": ["dl_us", "dl_mri"]}[key]
    labels = []
    for d in dirs:
        f = Path(models_dir) / d / "config.json"
        if f.is_file():
            labels.append(json.loads(f.read_text(encoding="utf-8")).get("selection_label", ""))
    labels = sorted(set(lab for lab in labels if lab))
    return labels[0] if len(labels) == 1 else "; ".join(labels)


def load_predictions(predictions_dir: str | os.PathLike,
                     models: Sequence[str] = ("dl_us", "dl_mri", "dl_us_mri"),
                     models_dir: str | os.PathLike | None = None) -> dict[str, ModelPredictions]:
    """Read ``{us,mri,fusion}_{oof,test}.csv`` (and ``_test_folds.csv`` where present) and check the models
    describe the same test patients.

    Parameters
    ----------
    predictions_dir : path
        ``run.predictions``.
    models : sequence of str
        Model keys (``dl_us``, ``dl_mri``, ``dl_us_mri``).
    models_dir : path, optional
        ``run.models``: the epoch-selection protocol is read from ``dl_*/config.json``.

    Returns
    -------
    dict
        ``key -> ModelPredictions`` in the given order.

    Raises
    ------
    DataError
        Missing files, invalid rows, or test (or OOF) sets with different patients / labels across models.
    """
    prefixes = {k: p for k, _, p in MODELS}
    unknown = [m for m in models if m not in prefixes]
    if unknown:
        raise ParameterError(f"unknown model key(s) {unknown}; choose from {list(prefixes)}.")
    pdir = Path(predictions_dir)
    out = {}
    for key in models:
        oof = read_predictions(pdir / f"{prefixes[key]}_oof.csv", "train")
        test = read_predictions(pdir / f"{prefixes[key]}_test.csv", "test")
        folds = read_test_folds(pdir / f"{prefixes[key]}_test_folds.csv", test)
        out[key] = ModelPredictions(key, _label(key), oof.sort_values("patient_id").reset_index(drop=True),
                                    test.sort_values("patient_id").reset_index(drop=True), folds,
                                    _selection_label(Path(models_dir) if models_dir else None, key))
    _check_same_patients(out)
    return out


def _check_same_patients(preds: Mapping[str, ModelPredictions]) -> None:
    keys = list(preds)
    if not keys:
        raise ParameterError("no models to evaluate.")
    ref = preds[keys[0]]
    for key in keys[1:]:
        for part in ("oof", "test"):
            a, b = getattr(ref, part), getattr(preds[key], part)
            ids_a, ids_b = set(a.patient_id), set(b.patient_id)
            if ids_a != ids_b:
                raise DataError(f"{ref.label} and {preds[key].label} {part} predictions cover different patients: "
                                f"only in {ref.label}: {sorted(ids_a - ids_b)[:10]}, only in {preds[key].label}: "
                                f"{sorted(ids_b - ids_a)[:10]}. Re-run the notebooks on one cohort.")
            diff = a.merge(b, on="patient_id").query("her2_x != her2_y").patient_id.tolist()
            if diff:
                raise DataError(f"{ref.label} and {preds[key].label} {part} predictions disagree on HER2 status "
                                f"for patients {diff[:10]}.")


def _as_yp(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ParameterError(f"y and p must have the same length; got {y.size} and {p.size}.")
    if y.size == 0:
        raise ParameterError("y and p are empty.")
    if not np.isin(y, [0, 1]).all():
        raise ParameterError("y must be 0/1 (1 = HER2-positive).")
    if not np.all(np.isfinite(p) & (p >= 0) & (p <= 1)):
        raise ParameterError("p must hold finite probabilities in [0, 1].")
    return y.astype(int), p


# ----------------------------------------------------------------------------------------------------------------
# Calibration and decision curve
# ----------------------------------------------------------------------------------------------------------------
def brier_score(y, p) -> float:
    """Brier score ``mean((p - y)^2)`` (0 = perfect; a constant prevalence forecast gives ``prev * (1 - prev)``).

    Parameters
    ----------
    y : array_like of 0/1, shape (n_patients,)
    p : array_like of float in [0, 1], shape (n_patients,)
    """
    y, p = _as_yp(y, p)
    return float(np.mean((p - y) ** 2))


def calibration_curve(y, p, n_bins: int = 5, strategy: str = "quantile", level: float = 0.95) -> pd.DataFrame:
    """Reliability curve: mean predicted probability vs observed HER2-positive fraction per bin.

    Parameters
    ----------
    y : array_like of 0/1, shape (n_patients,)
    p : array_like of float in [0, 1], shape (n_patients,)
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
    y, p = _as_yp(y, p)
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ParameterError(f"n_bins must be a positive integer; got {n_bins!r}.")
    if strategy == "quantile":
        order = np.argsort(p, kind="stable")
        groups = [g for g in np.array_split(order, min(n_bins, y.size)) if g.size]
    elif strategy == "uniform":
        idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(n_bins)]
        groups = [g for g in groups if g.size]
    else:
        raise ParameterError(f"strategy must be 'quantile' or 'uniform'; got {strategy!r}.")
    rows = []
    for b, g in enumerate(groups):
        k, n = int(y[g].sum()), int(g.size)
        lo, hi = clopper_pearson(k, n, level)
        rows.append({"bin": b, "n": n, "p_low": float(p[g].min()), "p_high": float(p[g].max()),
                     "mean_predicted": float(p[g].mean()), "observed": k / n, "observed_ci_low": lo,
                     "observed_ci_high": hi})
    return pd.DataFrame(rows)


def calibration_summary(y, p, level: float = 0.95) -> dict:
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
    from .stats import calibration

    y, p = _as_yp(y, p)
    r = calibration(y, p, level=level)
    return {"n_patients": r.n, "brier": r.brier, "brier_reference": r.brier_reference,
            "mean_predicted_overall": r.mean_predicted, "observed_rate": r.observed_rate,
            "calibration_intercept": r.intercept, "calibration_intercept_ci_low": r.intercept_ci[0],
            "calibration_intercept_ci_high": r.intercept_ci[1], "calibration_slope": r.slope,
            "calibration_slope_ci_low": r.slope_ci[0], "calibration_slope_ci_high": r.slope_ci[1],
            "calibration_ci_level": r.intercept_ci[2], "calibration_method": r.method}


def decision_curve(y, p, thresholds: Sequence[float] | np.ndarray | None = None) -> pd.DataFrame:
    """Net benefit of treating patients with ``p >= pt`` over threshold probabilities ``pt``.

    Parameters
    ----------
    y : array_like of 0/1, shape (n_patients,)
    p : array_like of float in [0, 1], shape (n_patients,)
    thresholds : array_like, optional
        Threshold probabilities in (0, 1); default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    DataFrame
        Columns ``threshold, net_benefit, treat_all, treat_none`` where
        ``net_benefit = TP/n - FP/n * pt/(1 - pt)``, ``treat_all = prev - (1 - prev) * pt/(1 - pt)`` and
        ``treat_none = 0``.
    """
    y, p = _as_yp(y, p)
    pt = np.round(np.arange(1, 100) / 100, 2) if thresholds is None else np.asarray(thresholds, dtype=float)
    if pt.ndim != 1 or pt.size == 0 or not np.all((pt > 0) & (pt < 1)):
        raise ParameterError("thresholds must be a non-empty 1-D array of probabilities strictly in (0, 1).")
    n = y.size
    pos = y == 1
    call = p[None, :] >= pt[:, None]
    tp = (call & pos[None, :]).sum(1)
    fp = (call & ~pos[None, :]).sum(1)
    w = pt / (1 - pt)
    prev = pos.mean()
    return pd.DataFrame({"threshold": pt, "net_benefit": tp / n - fp / n * w,
                         "treat_all": prev - (1 - prev) * w, "treat_none": np.zeros_like(pt)})


def roc_points(y, p) -> pd.DataFrame:
    """Empirical ROC curve (all distinct thresholds, rule ``p >= threshold``).

    Returns
    -------
    DataFrame
        Columns ``threshold, fpr, tpr`` from (0, 0) to (1, 1).
    """
    y, p = _as_yp(y, p)
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
def operating_point_metrics(y, p_models, threshold: float, *, level: float = 0.95, n_boot: int = 2000,
                            seed: int = 0) -> dict:
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
    from .stats import binary_metrics

    P = np.asarray(p_models, dtype=float)
    if P.ndim == 1:
        P = P[:, None]
    y = np.asarray(y).astype(int).ravel()
    if P.ndim != 2 or P.shape[0] != y.size or P.shape[1] < 1:
        raise ParameterError(f"p_models must have shape (n_patients, n_models) with n_patients = {y.size}; got "
                             f"{P.shape}.")
    if P.shape[1] == 1:
        return {**binary_metrics(y, P[:, 0], threshold, level=level, n_boot=n_boot, seed=seed).to_row(),
                "n_models": 1}
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


def _f1_interval(tp: float, fp: float, tn: float, fn: float, *, level: float, n_boot: int,
                 seed: int) -> tuple[float, float, float]:
    """F1 and its interval from (possibly averaged) confusion counts, by the method of
    :func:`her2lib.stats.binary_metrics`."""
    from .stats import roc as _roc

    den = 2 * tp + fp + fn
    if den <= 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = _roc._f1_interval(tp, fp, tp + fn, tn + fp, level, int(n_boot), seed)
    return 2 * tp / den, lo, hi


def performance_table(preds: Mapping[str, ModelPredictions], ci_method: str = "delong",
                      level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
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
    from .stats import auc, auc_ci, youden_threshold

    if ci_method not in CI_METHODS:
        raise ParameterError(f"ci_method must be one of {CI_METHODS}; got {ci_method!r}.")
    rows = []
    for key, mp in preds.items():
        y, p = mp.test["her2"].to_numpy(), mp.test["p_her2"].to_numpy()
        yo, po = mp.oof["her2"].to_numpy(), mp.oof["p_her2"].to_numpy()
        thr = youden_threshold(yo, po)
        if np.isnan(thr):
            raise DataError(f"{mp.label}: Youden's threshold is undefined on the training OOF predictions (a "
                            "single class); the training cohort needs both HER2 classes.")
        head = auc_ci(y, p, method=ci_method, level=level, n_boot=n_boot, seed=seed)
        dl = auc_ci(y, p, method="delong", level=level)
        eb = auc_ci(y, p, method="exact-binomial", level=level)
        bm = operating_point_metrics(y, mp.test_matrix(), thr, level=level, n_boot=n_boot, seed=seed)
        row = {"model": key, "label": mp.label, "selection": mp.selection, "n_test": int(y.size),
               "n_pos": int(y.sum()), "n_neg": int(y.size - y.sum()), "auc": head.auc, "auc_ci_low": head.ci[0],
               "auc_ci_high": head.ci[1], "auc_ci_level": level, "auc_ci_method": _CI_NAMES[ci_method],
               "auc_delong_ci_low": dl.ci[0], "auc_delong_ci_high": dl.ci[1],
               "auc_exact_binomial_ci_low": eb.ci[0], "auc_exact_binomial_ci_high": eb.ci[1], "threshold": thr,
               "threshold_rule": THRESHOLD_RULES["per-fold" if mp.test_folds is not None else "fold-mean"],
               "n_models": bm["n_models"]}
        for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"):
            row[name] = bm[name]
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bm[f"{name}_ci_low"], bm[f"{name}_ci_high"]
        row.update(tp=bm["tp"], fp=bm["fp"], tn=bm["tn"], fn=bm["fn"], auc_train_oof=auc(yo, po),
                   brier=brier_score(y, p))
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
    from .stats import auc, youden_threshold

    rows = []
    for key, mp in preds.items():
        if mp.test_folds is None:
            continue
        thr = youden_threshold(mp.oof["her2"].to_numpy(), mp.oof["p_her2"].to_numpy())
        y = mp.test["her2"].to_numpy()
        P = mp.test_matrix()
        for j, k in enumerate(sorted(mp.test_folds["model_fold"].unique())):
            call = P[:, j] >= thr
            rows.append({"model": key, "label": mp.label, "model_fold": int(k), "auc": auc(y, P[:, j]),
                         "threshold": thr, "sensitivity": float(call[y == 1].mean()) if (y == 1).any() else np.nan,
                         "specificity": float((~call[y == 0]).mean()) if (y == 0).any() else np.nan})
    return pd.DataFrame(rows, columns=["model", "label", "model_fold", "auc", "threshold", "sensitivity",
                                       "specificity"])


def delong_table(preds: Mapping[str, ModelPredictions], level: float = 0.95,
                 pairs: Sequence[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """Paired DeLong tests on the test cohort (paper: fusion vs US, fusion vs MRI, US vs MRI).

    Returns
    -------
    DataFrame
        Columns ``model_a, model_b, auc_a, auc_b, diff, diff_ci_low, diff_ci_high, diff_ci_level, z, p_value,
        n_pos, n_neg, method`` (``diff = auc_a - auc_b``).
    """
    from .stats import delong_test

    rows = []
    for a, b in pairs:
        if a not in preds or b not in preds:
            continue
        ta, tb = preds[a].test, preds[b].test
        if ta.patient_id.tolist() != tb.patient_id.tolist():
            raise DataError(f"{preds[a].label} and {preds[b].label} test predictions are not aligned by patient.")
        r = delong_test(ta["her2"].to_numpy(), ta["p_her2"].to_numpy(), tb["p_her2"].to_numpy(), level=level)
        rows.append({"model_a": preds[a].label, "model_b": preds[b].label, "auc_a": r.auc_a, "auc_b": r.auc_b,
                     "diff": r.diff, "diff_ci_low": r.diff_ci[0], "diff_ci_high": r.diff_ci[1],
                     "diff_ci_level": r.diff_ci[2], "z": r.z, "p_value": r.pvalue, "n_pos": r.n_pos,
                     "n_neg": r.n_neg, "method": r.method})
    return pd.DataFrame(rows, columns=DELONG_COLUMNS)


def _pct(v: float) -> str:
    return "NA" if not np.isfinite(v) else f"{100 * v:.1f}%"


def _f3(v: float) -> str:
    return "NA" if not np.isfinite(v) else f"{v:.3f}"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "P = NA"
    return "P < 0.0001" if p < 1e-4 else f"P = {p:.4f}"


def results_paragraph(performance: pd.DataFrame, delong: pd.DataFrame | None = None,
                      protocols: pd.DataFrame | None = None) -> str:
    """The Results text in the paper's style, generated from :func:`performance_table` (and
    :func:`delong_table`, the fusion protocol table of :func:`her2lib.fusion.fuse`).

    Example sentence: "In the test cohort, DL-US achieved an AUC of 0.842 (95% CI: 0.708-0.931), with an accuracy
    of 0.833, sensitivity of 89.5%, specificity of 79.3%, PPV of 0.739, NPV of 0.920, and an F1 score of 0.810."

    Returns
    -------
    str
        Markdown text (one paragraph per model, then the comparisons and the method statement).
    """
    need = {"label", "auc", "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity", "specificity", "ppv", "npv",
            "f1", "threshold"}
    missing = need - set(performance.columns)
    if missing:
        raise ParameterError(f"performance table lacks columns {sorted(missing)}; use evaluate.performance_table.")
    parts = []
    for _, r in performance.iterrows():
        lvl = int(round(100 * float(r.get("auc_ci_level", 0.95))))
        eb = ""
        if "auc_exact_binomial_ci_low" in r and not str(r.get("auc_ci_method", "")).startswith("exact"):
            eb = (f"; exact binomial as the paper/MedCalc: {_f3(r['auc_exact_binomial_ci_low'])}\u2013"
                  f"{_f3(r['auc_exact_binomial_ci_high'])}")
        parts.append(f"In the test cohort, {r['label']} achieved an AUC of {_f3(r['auc'])} ({lvl}% CI: "
                     f"{_f3(r['auc_ci_low'])}\u2013{_f3(r['auc_ci_high'])}{eb}), with an accuracy of {_f3(r['accuracy'])}, "
                     f"sensitivity of {_pct(r['sensitivity'])}, specificity of {_pct(r['specificity'])}, PPV of "
                     f"{_f3(r['ppv'])}, NPV of {_f3(r['npv'])}, and an F1 score of {_f3(r['f1'])} "
                     f"(threshold {r['threshold']:.3f}).")
    if delong is not None and len(delong):
        cmp = []
        for _, d in delong.iterrows():
            sig = "significant" if d["p_value"] < 0.05 else "not statistically significant"
            better = "higher" if d["diff"] > 0 else "lower" if d["diff"] < 0 else "the same"
            cmp.append(f"{d['model_a']} vs {d['model_b']}: AUC {_f3(d['auc_a'])} vs {_f3(d['auc_b'])} "
                       f"({better}; difference {d['diff']:+.3f}, 95% CI {d['diff_ci_low']:+.3f} to "
                       f"{d['diff_ci_high']:+.3f}, Z = {d['z']:.2f}, {_fmt_p(d['p_value'])}; {sig})")
        parts.append("Model performance was compared with the DeLong test: " + "; ".join(cmp) + ".")
    if protocols is not None and len(protocols) == 2 and "auc_diff_vs_leakage_free" in protocols:
        free = protocols.iloc[0]
        paper = protocols.iloc[1]
        lvl = int(round(100 * float(paper.get("ci_level", 0.95))))
        parts.append(f"DL-US&MRI was fitted on the training cohort's out-of-fold predictions and applied to the "
                     f"test cohort ({free.get('applied_to', '')}). Refitting it in the test cohort, as the paper did, "
                     f"gives a test AUC of {_f3(paper['auc'])} instead of {_f3(free['auc'])} (difference "
                     f"{paper['auc_diff_vs_leakage_free']:+.3f}, {lvl}% bootstrap CI "
                     f"{paper['auc_diff_ci_low']:+.3f} to {paper['auc_diff_ci_high']:+.3f}).")
    method = str(performance["auc_ci_method"].iloc[0]) if "auc_ci_method" in performance else "see table"
    rule = str(performance["threshold_rule"].iloc[0]) if "threshold_rule" in performance else ""
    per_fold = rule == THRESHOLD_RULES["per-fold"]
    how = ("it was applied to each of the fold models' test predictions, and the metrics are those of one fold "
           "model averaged over the fold models (the kind of prediction the threshold was chosen on)" if per_fold
           else "it was applied to the fold-mean test predictions")
    sel = ""
    if "selection" in performance and str(performance["selection"].iloc[0]):
        sel = f" Training epochs were chosen on: {'; '.join(sorted(set(map(str, performance['selection']))))}."
    parts.append(f"AUC confidence intervals: {method}; the exact binomial intervals (as the paper / MedCalc) are "
                 "given beside them in performance.csv. Thresholds were chosen by Youden's J on the training "
                 f"cohort's out-of-fold predictions (never on the test cohort); {how}. A patient was called "
                 f"HER2-positive when the predicted probability was at or above the threshold.{sel}")
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------
def _style():
    import matplotlib as mpl

    return mpl.rc_context({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 12, "legend.fontsize": 10,
                           "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False,
                           "axes.spines.right": False, "savefig.bbox": "tight"})


def _save(fig, path: str | os.PathLike, dpi: int, svg: bool = False) -> None:
    save_figure(fig, path, dpi, svg=svg)


def plot_roc(preds: Mapping[str, ModelPredictions], performance: pd.DataFrame,
             path: str | os.PathLike | None = None, dpi: int = 300, svg: bool = True):
    """Figure 3A: test-cohort ROC curves, legend with AUC and its 95% CI (method named in the legend title).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    perf = performance.set_index("model")
    with _style():
        fig, ax = plt.subplots(figsize=(5.6, 5.4), layout="constrained")
        ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1, label="Chance")
        for key, mp in preds.items():
            pts = roc_points(mp.test["her2"], mp.test["p_her2"])
            r = perf.loc[key]
            ax.plot(pts.fpr, pts.tpr, color=COLORS.get(key), lw=2, drawstyle="default",
                    label=f"{mp.label}: AUC {r['auc']:.3f} ({r['auc_ci_low']:.3f}\u2013{r['auc_ci_high']:.3f})")
            # operating point at the OOF Youden threshold (averaged over the fold models when per-fold files exist)
            ax.plot(1 - r["specificity"], r["sensitivity"], "o", color=COLORS.get(key), ms=7, mec="white", mew=1.2)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("1 \u2212 Specificity (false-positive rate)")
        ax.set_ylabel("Sensitivity (true-positive rate)")
        n_pos, n_neg = int(perf["n_pos"].iloc[0]), int(perf["n_neg"].iloc[0])
        ax.set_title(f"ROC curves, test cohort (n = {n_pos + n_neg}; {n_pos} HER2+)")
        method = str(perf["auc_ci_method"].iloc[0]).split(" (")[0]
        ax.legend(loc="lower right", title=f"AUC (95% CI, {method})", title_fontsize=9.5, frameon=False)
        per_fold = "threshold_rule" in perf and str(perf["threshold_rule"].iloc[0]) == THRESHOLD_RULES["per-fold"]
        note = ("\u25cf operating point at the training-OOF\nYouden threshold (mean of the fold models)" if per_fold
                else "\u25cf operating point at the\ntraining-OOF Youden threshold")
        ax.text(0.99, 0.36, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5, color="0.35")
        ax.grid(alpha=0.25)
        if path is not None:
            _save(fig, path, dpi, svg=svg)
    return fig


_METRIC_LABELS = (("auc", "AUC"), ("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"),
                  ("specificity", "Specificity"), ("ppv", "PPV"), ("npv", "NPV"), ("f1", "F1"))


def plot_performance(performance: pd.DataFrame, path: str | os.PathLike | None = None, dpi: int = 300,
                     svg: bool = False):
    """Figure 3B: grouped bars of AUC, accuracy, sensitivity, specificity, PPV, NPV and F1 per model, with 95% CI
    error bars and the value printed above each bar.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    with _style():
        n_models = len(performance)
        fig, ax = plt.subplots(figsize=(10.5, 4.8), layout="constrained")
        x = np.arange(len(_METRIC_LABELS))
        width = 0.8 / max(n_models, 1)
        for i, (_, r) in enumerate(performance.iterrows()):
            vals = np.array([r[m] for m, _ in _METRIC_LABELS], dtype=float)
            lo = np.array([r[f"{m}_ci_low"] for m, _ in _METRIC_LABELS], dtype=float)
            hi = np.array([r[f"{m}_ci_high"] for m, _ in _METRIC_LABELS], dtype=float)
            err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, np.nan_to_num(vals), width * 0.92, color=COLORS.get(r["model"]),
                   label=f"{r['label']} (threshold {r['threshold']:.2f})", yerr=np.nan_to_num(err),
                   error_kw=dict(elinewidth=0.9, capsize=2, ecolor="0.25"))
            for xp, v in zip(pos, vals):
                dark = not np.isfinite(v) or v < 0.15  # short bar: print above it in dark ink
                ax.text(xp, (np.nan_to_num(v) + 0.02) if dark else 0.02,
                        "NA" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="bottom", fontsize=7.5,
                        rotation=90, color="0.15" if dark else "white", fontweight="bold")
        ax.set_xticks(x, [lab for _, lab in _METRIC_LABELS])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Value (95% CI)")
        method = str(performance["auc_ci_method"].iloc[0]).split(" (")[0] if len(performance) else ""
        per_fold = ("threshold_rule" in performance and len(performance)
                    and str(performance["threshold_rule"].iloc[0]) == THRESHOLD_RULES["per-fold"])
        ax.set_title("Diagnostic performance, test cohort (thresholds: Youden on training OOF"
                     + ("; metrics: mean of the fold models)" if per_fold else ")"))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=n_models, frameon=False)
        ax.text(1.0, -0.2, f"AUC CI: {method}; proportions: Clopper-Pearson; F1: see performance.csv",
                transform=ax.transAxes, ha="right", va="top", fontsize=8.5, color="0.35")
        ax.grid(axis="y", alpha=0.25)
        if path is not None:
            _save(fig, path, dpi, svg=svg)
    return fig


def plot_calibration(preds: Mapping[str, ModelPredictions], path: str | os.PathLike | None = None,
                     n_bins: int = 5, dpi: int = 300):
    """Reliability curves (quantile bins, observed fraction with 95% CI) of each model on the test cohort, with
    the Brier score in the legend and the distribution of predictions underneath.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    with _style():
        fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.6, 6.4), height_ratios=[3, 1], sharex=True,
                                      layout="constrained")
        ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1, label="Perfect calibration")
        bins = np.linspace(0, 1, 21)
        for j, (key, mp) in enumerate(preds.items()):
            y, p = mp.test["her2"].to_numpy(), mp.test["p_her2"].to_numpy()
            cc = calibration_curve(y, p, n_bins=n_bins)
            off = (j - (len(preds) - 1) / 2) * 0.008
            ax.errorbar(cc.mean_predicted + off, cc.observed,
                        yerr=[cc.observed - cc.observed_ci_low, cc.observed_ci_high - cc.observed],
                        fmt="o-", color=COLORS.get(key), lw=1.6, ms=5, capsize=2, elinewidth=0.8,
                        label=f"{mp.label} (Brier {brier_score(y, p):.3f})")
            axh.hist(p, bins=bins, histtype="step", lw=1.5, color=COLORS.get(key))
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("Observed HER2-positive fraction")
        ax.set_title(f"Calibration, test cohort ({n_bins} quantile bins)")
        ax.legend(loc="upper left", frameon=False)
        ax.grid(alpha=0.25)
        axh.set_xlabel("Predicted probability of HER2-positive")
        axh.set_ylabel("Patients")
        if path is not None:
            _save(fig, path, dpi)
    return fig


def plot_decision_curve(preds: Mapping[str, ModelPredictions], path: str | os.PathLike | None = None,
                        dpi: int = 300, max_threshold: float = 0.9):
    """Decision curves (net benefit vs threshold probability) of each model on the test cohort, with
    treat-all and treat-none.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    pt = np.round(np.arange(1, int(round(max_threshold * 100)) + 1) / 100, 2)
    with _style():
        fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
        first = next(iter(preds.values()))
        ref = decision_curve(first.test["her2"], first.test["p_her2"], pt)
        ax.plot(ref.threshold, ref.treat_all, color="0.45", lw=1.3, label="Treat all as HER2+")
        ax.axhline(0, color="0.15", lw=1.3, label="Treat none")
        top = float(first.test["her2"].mean())
        for key, mp in preds.items():
            dc = decision_curve(mp.test["her2"], mp.test["p_her2"], pt)
            ax.plot(dc.threshold, dc.net_benefit, color=COLORS.get(key), lw=2, label=mp.label)
        ax.set_ylim(-0.05, top + 0.05)
        ax.set_xlim(0, max_threshold)
        ax.set_xlabel("Threshold probability")
        ax.set_ylabel("Net benefit")
        ax.set_title("Decision curve, test cohort")
        ax.legend(loc="upper right", frameon=False)
        ax.grid(alpha=0.25)
        if path is not None:
            _save(fig, path, dpi)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# One call for the notebook
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationResult:
    """Tables of :func:`run_evaluation` (the figures are on disk)."""

    performance: pd.DataFrame
    delong: pd.DataFrame
    calibration: pd.DataFrame
    decision: pd.DataFrame
    text: str
    files: tuple[Path, ...]


def run_evaluation(predictions_dir: str | os.PathLike, tables_dir: str | os.PathLike,
                   figures_dir: str | os.PathLike, ci_method: str = "delong", level: float = 0.95,
                   n_bins: int = 5, n_boot: int = 2000, seed: int = 0, dpi: int = 300,
                   models: Sequence[str] | None = None,
                   models_dir: str | os.PathLike | None = None) -> EvaluationResult:
    """Compute and write everything of ``06_evaluation``.

    ``models=None`` evaluates the models whose prediction files exist (:func:`available_models`; one, two or
    three), with DeLong comparisons only for the pairs among them.

    ``models_dir`` (``run.models``) is read for the epoch-selection protocol of each model (``selection`` column).

    Writes ``tables/performance.csv``, ``performance_fold_models.csv``, ``delong.csv``, ``calibration.csv``,
    ``decision_curve.csv``, ``results_text.md`` and ``figures/roc.png`` (+ ``roc.svg``), ``performance.png``, ``calibration.png``,
    ``decision_curve.png``. Reads ``predictions/{us,mri,fusion}_{oof,test,test_folds}.csv`` and, if present,
    ``tables/fusion_protocols.csv``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tdir, fdir = Path(tables_dir), Path(figures_dir)
    keys = available_models(predictions_dir) if models is None else list(models)
    if not keys:
        raise DataError(f"{predictions_dir}: no prediction files (us/mri/fusion _oof.csv and _test.csv); run "
                        "notebooks 03_train_us / 04_train_mri (and 05_fusion) first.")
    preds = load_predictions(predictions_dir, keys, models_dir=models_dir)
    perf = performance_table(preds, ci_method=ci_method, level=level, n_boot=n_boot, seed=seed)
    fold_tab = fold_model_table(preds)
    dl = delong_table(preds, level=level)
    cal_rows, dec_rows = [], []
    for key, mp in preds.items():
        y, p = mp.test["her2"].to_numpy(), mp.test["p_her2"].to_numpy()
        cal_rows.append(calibration_curve(y, p, n_bins=n_bins).assign(model=key, **calibration_summary(y, p, level)))
        dec_rows.append(decision_curve(y, p).assign(model=key))
    cal = pd.concat(cal_rows, ignore_index=True)
    dec = pd.concat(dec_rows, ignore_index=True)
    prot_path = tdir / "fusion_protocols.csv"
    prot = pd.read_csv(prot_path) if prot_path.is_file() and "dl_us_mri" in preds else None
    text = results_paragraph(perf, dl, prot)
    files = [write_csv(tdir / "performance.csv", perf), write_csv(tdir / "performance_fold_models.csv", fold_tab),
             write_csv(tdir / "delong.csv", dl),
             write_csv(tdir / "calibration.csv", cal), write_csv(tdir / "decision_curve.csv", dec),
             write_text(tdir / "results_text.md", text)]
    for name, fig in (("roc.png", plot_roc(preds, perf, fdir / "roc.png", dpi=dpi)),
                      ("performance.png", plot_performance(perf, fdir / "performance.png", dpi=dpi)),
                      ("calibration.png", plot_calibration(preds, fdir / "calibration.png", n_bins=n_bins, dpi=dpi)),
                      ("decision_curve.png", plot_decision_curve(preds, fdir / "decision_curve.png", dpi=dpi))):
        plt.close(fig)
        files.append(fdir / name)
    files.append(fdir / "roc.svg")
    return EvaluationResult(perf, dl, cal, dec, text, tuple(files))

