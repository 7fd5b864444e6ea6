"""What radiomics adds (paper, Discussion: "the potential additive value of radiomic features ... remains
unexplored"): the radiomics model alone, DL-US&MRI and DL-US&MRI+Radiomics in one evaluation cohort, each compared
with DL-US&MRI by the paired DeLong test, and the reclassification (NRI, IDI) of adding radiomics to DL-US&MRI.

Science layer: pure functions on prediction tables.

* AUC with DeLong's interval (:func:`her2lib.stats.auc_ci`, pROC ``ci.auc``);
* paired DeLong test against DL-US&MRI (:func:`her2lib.stats.delong_test`, pROC ``roc.test(paired = TRUE)``);
* category-free NRI and IDI of DL-US&MRI+Radiomics over DL-US&MRI with Wald intervals
  (:func:`her2lib.stats.reclassification`, Hmisc ``improveProb``; Pencina et al. 2008, 2011).

All on the fold-mean predictions of the evaluation cohort, the probabilities the models report. Nothing here is
fitted: the radiomics model and the combined model were fitted on training data only (notebook 05).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .contract import prediction_path, read_predictions
from .errors import DataError
from .evaluate import COHORT_NAMES
from .stats import auc_ci, delong_test, reclassification
from .stats.tables import format_pvalue

__all__ = ["RADIOMICS_MODELS", "REFERENCE", "RadiomicsComparison", "load_radiomics_predictions", "compare_radiomics"]

#: model key -> (label, prediction-file prefix), in the order of the tables
RADIOMICS_MODELS: dict[str, tuple[str, str]] = {
    "radiomics": ("Radiomics", "radiomics"),
    "dl_us_mri": ("DL-US&MRI", "fusion"),
    "dl_us_mri_radiomics": ("DL-US&MRI+Radiomics", "fusion_radiomics"),
}
#: the model the others are compared with
REFERENCE = "dl_us_mri"


@dataclass(frozen=True)
class RadiomicsComparison:
    """The three models in one cohort.

    Attributes
    ----------
    cohort : str
        ``"test"`` or ``"external"``.
    auc : DataFrame
        One row per model: ``cohort, model, label, n, n_pos, n_neg, auc, ci_low, ci_high, ci_level, ci_method``.
    delong : DataFrame
        One row per model compared with DL-US&MRI: ``cohort, model, reference, auc_model, auc_reference, diff,
        ci_low, ci_high, ci_level, z, p_value, method``.
    reclassification : DataFrame
        NRI (events, non-events, overall) and IDI of DL-US&MRI+Radiomics over DL-US&MRI
        (:meth:`her2lib.stats.ReclassificationResult.to_frame`, plus ``cohort, model, reference``).
    text : str
        A Results paragraph (markdown).
    """

    cohort: str
    auc: pd.DataFrame
    delong: pd.DataFrame
    reclassification: pd.DataFrame
    text: str


def load_radiomics_predictions(
    predictions_dir: str | os.PathLike, *, cohort: str = "test"
) -> dict[str, pd.DataFrame] | None:
    """The three models' fold-mean predictions of ``cohort`` on their common patients, or None when a file is
    missing (no radiomics run, or no DL-US&MRI).

    Returns
    -------
    dict or None
        ``{model key: prediction table}`` (:data:`RADIOMICS_MODELS` order), rows in ``patient_id`` order.
    """
    paths = {k: prediction_path(predictions_dir, prefix, cohort) for k, (_, prefix) in RADIOMICS_MODELS.items()}
    if not all(p.is_file() for p in paths.values()):
        return None
    tables = {k: read_predictions(p, cohort) for k, p in paths.items()}
    common = set.intersection(*(set(t["patient_id"]) for t in tables.values()))
    return {
        k: t[t["patient_id"].isin(common)].sort_values("patient_id", kind="mergesort").reset_index(drop=True)
        for k, t in tables.items()
    }


def _labels(preds: Mapping[str, pd.DataFrame]) -> np.ndarray:
    ref = preds[REFERENCE]
    for k, t in preds.items():
        if list(t["patient_id"]) != list(ref["patient_id"]) or not np.array_equal(t["her2"], ref["her2"]):
            raise DataError(
                f"compare_radiomics: {RADIOMICS_MODELS[k][0]} and DL-US&MRI predictions do not list the same patients "
                "with the same HER2 status; use load_radiomics_predictions, or re-run notebook 05."
            )
    return ref["her2"].to_numpy(dtype=int)


def compare_radiomics(
    preds: Mapping[str, pd.DataFrame], *, cohort: str = "test", level: float = 0.95
) -> RadiomicsComparison:
    """Compare Radiomics, DL-US&MRI and DL-US&MRI+Radiomics in one cohort.

    Parameters
    ----------
    preds : mapping
        :func:`load_radiomics_predictions` output: the three models' predictions of the same patients.
    cohort : {"test", "external"}
    level : float
        Confidence level of every interval.

    Returns
    -------
    RadiomicsComparison
    """
    y = _labels(preds)
    p = {k: t["p_her2"].to_numpy(dtype=float) for k, t in preds.items()}
    rows = []
    for k, (label, _) in RADIOMICS_MODELS.items():
        ci = auc_ci(y, p[k], method="delong", level=level)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        rows.append(
            dict(cohort=cohort, model=k, label=label, n=len(y), n_pos=n_pos, n_neg=n_neg, auc=ci.auc)
            | dict(ci_low=ci.ci[0], ci_high=ci.ci[1], ci_level=level, ci_method="DeLong (pROC ci.auc)")
        )
    auc_table = pd.DataFrame(rows)
    tests = []
    for k in (k for k in RADIOMICS_MODELS if k != REFERENCE):
        d = delong_test(y, p[k], p[REFERENCE], level=level)
        tests.append(
            dict(cohort=cohort, model=k, reference=REFERENCE, auc_model=d.auc_a, auc_reference=d.auc_b, diff=d.diff)
            | dict(ci_low=d.diff_ci[0], ci_high=d.diff_ci[1], ci_level=level, z=d.z, p_value=d.pvalue)
            | dict(method="paired DeLong (pROC roc.test)")
        )
    delong = pd.DataFrame(tests)
    rec = reclassification(y, p[REFERENCE], p["dl_us_mri_radiomics"], level=level)
    rec_table = rec.to_frame()
    rec_table.insert(0, "cohort", cohort)
    rec_table.insert(1, "model", "dl_us_mri_radiomics")
    rec_table.insert(2, "reference", REFERENCE)
    text = _paragraph(auc_table, delong, rec_table, cohort=cohort, level=level)
    return RadiomicsComparison(cohort=cohort, auc=auc_table, delong=delong, reclassification=rec_table, text=text)


def _p(p: float) -> str:
    s = format_pvalue(p)
    return f"P {s}" if s.startswith("<") else f"P = {s}"


def _fmt_ci(lo: float, hi: float, digits: int = 3) -> str:
    return f"{lo:.{digits}f} to {hi:.{digits}f}"


def _paragraph(auc: pd.DataFrame, delong: pd.DataFrame, rec: pd.DataFrame, *, cohort: str, level: float) -> str:
    a = auc.set_index("model")
    d = delong.set_index("model")
    r = rec.set_index("statistic")
    pct = f"{level:.0%}"
    first = a.iloc[0]
    parts = [
        f"In the {COHORT_NAMES[cohort]} (n = {first['n']}; {first['n_pos']} HER2-positive), the radiomics model "
        f"(features selected and fitted inside each training fold) reached an AUC of {a.at['radiomics', 'auc']:.3f} "
        f"({pct} CI {_fmt_ci(a.at['radiomics', 'ci_low'], a.at['radiomics', 'ci_high'])}), against "
        f"{a.at['dl_us_mri', 'auc']:.3f} ({_fmt_ci(a.at['dl_us_mri', 'ci_low'], a.at['dl_us_mri', 'ci_high'])}) "
        f"for DL-US&MRI (paired DeLong {_p(d.at['radiomics', 'p_value'])}).",
        f"Adding radiomics to DL-US&MRI (DL-US&MRI+Radiomics, AUC {a.at['dl_us_mri_radiomics', 'auc']:.3f}) changed "
        f"the AUC by {d.at['dl_us_mri_radiomics', 'diff']:+.3f} ({pct} CI "
        f"{_fmt_ci(d.at['dl_us_mri_radiomics', 'ci_low'], d.at['dl_us_mri_radiomics', 'ci_high'])}; "
        f"{_p(d.at['dl_us_mri_radiomics', 'p_value'])}),",
        f"with a category-free NRI of {r.at['nri', 'estimate']:+.3f} ({_fmt_ci(r.at['nri', 'ci_low'], r.at['nri', 'ci_high'])};"
        f" {_p(r.at['nri', 'p_value'])}) and an IDI of {r.at['idi', 'estimate']:+.3f} "
        f"({_fmt_ci(r.at['idi', 'ci_low'], r.at['idi', 'ci_high'])}; {_p(r.at['idi', 'p_value'])}).",
    ]
    return " ".join(parts)
