"""What radiomics and the radiologist's BI-RADS reading add to DL-US&MRI (paper, Discussion: "the potential additive
value of radiomic features ... remains unexplored"; Tables 2-3 compare the descriptors but never model them).

Two analyses (:data:`ANALYSES`), each in one evaluation cohort:

* ``"radiomics"``: the radiomics model alone, DL-US&MRI and DL-US&MRI+Radiomics;
* ``"clinical"``: DL-US&MRI and DL-US&MRI+Clinical (BI-RADS descriptors, age and size).

Every model is compared with DL-US&MRI by the paired DeLong test, and the combined model's reclassification over
DL-US&MRI is given by the NRI and the IDI.

Science layer: pure functions on prediction tables.

* AUC with DeLong's interval (:func:`her2lib.stats.auc_ci`, pROC ``ci.auc``);
* paired DeLong test against DL-US&MRI (:func:`her2lib.stats.delong_test`, pROC ``roc.test(paired = TRUE)``);
* category-free NRI and IDI of the combined model over DL-US&MRI with Wald intervals
  (:func:`her2lib.stats.reclassification`, Hmisc ``improveProb``; Pencina et al. 2008, 2011).

All on the fold-mean predictions of the evaluation cohort, the probabilities the models report. Nothing here is
fitted: every model was fitted on training data only (notebook 05).
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
from .options import look_up_option
from .stats import auc_ci, delong_test, reclassification
from .stats.tables import format_pvalue

__all__ = [
    "RADIOMICS_MODELS",
    "CLINICAL_MODELS",
    "ANALYSES",
    "REFERENCE",
    "AddedValueComparison",
    "load_added_predictions",
    "compare_added",
    "p_text",
]

#: model key -> (label, prediction-file prefix), in the order of the tables
RADIOMICS_MODELS: dict[str, tuple[str, str]] = {
    "radiomics": ("Radiomics", "radiomics"),
    "dl_us_mri": ("DL-US&MRI", "fusion"),
    "dl_us_mri_radiomics": ("DL-US&MRI+Radiomics", "fusion_radiomics"),
}
#: DL-US&MRI and DL-US&MRI+Clinical
CLINICAL_MODELS: dict[str, tuple[str, str]] = {
    "dl_us_mri": ("DL-US&MRI", "fusion"),
    "dl_us_mri_clinical": ("DL-US&MRI+Clinical", "fusion_clinical"),
}
#: analysis -> (its models, the combined model whose NRI/IDI over DL-US&MRI is reported, what is added)
ANALYSES: dict[str, tuple[dict[str, tuple[str, str]], str, str]] = {
    "radiomics": (RADIOMICS_MODELS, "dl_us_mri_radiomics", "radiomics"),
    "clinical": (CLINICAL_MODELS, "dl_us_mri_clinical", "the BI-RADS descriptors, age and size"),
}
#: the model the others are compared with
REFERENCE = "dl_us_mri"


@dataclass(frozen=True)
class AddedValueComparison:
    """One analysis's models in one cohort.

    Attributes
    ----------
    analysis : str
        ``"radiomics"`` or ``"clinical"`` (:data:`ANALYSES`).
    cohort : str
        ``"test"`` or ``"external"``.
    auc : DataFrame
        One row per model: ``cohort, model, label, n, n_pos, n_neg, auc, ci_low, ci_high, ci_level, ci_method``.
    delong : DataFrame
        One row per model compared with DL-US&MRI: ``cohort, model, reference, auc_model, auc_reference, diff,
        ci_low, ci_high, ci_level, z, p_value, method``.
    reclassification : DataFrame
        NRI (events, non-events, overall) and IDI of the combined model over DL-US&MRI
        (:meth:`her2lib.stats.ReclassificationResult.to_frame`, plus ``cohort, model, reference``).
    text : str
        A Results paragraph (markdown).
    """

    analysis: str
    cohort: str
    auc: pd.DataFrame
    delong: pd.DataFrame
    reclassification: pd.DataFrame
    text: str


def load_added_predictions(
    predictions_dir: str | os.PathLike, *, analysis: str = "radiomics", cohort: str = "test"
) -> dict[str, pd.DataFrame] | None:
    """An analysis's models' fold-mean predictions of ``cohort`` on their common patients, or None when a file is
    missing (the analysis was not run, or there is no DL-US&MRI).

    Returns
    -------
    dict or None
        ``{model key: prediction table}`` (the analysis's model order), rows in ``patient_id`` order.
    """
    models = look_up_option(analysis, ANALYSES, name="analysis")[0]
    paths = {k: prediction_path(predictions_dir, prefix, cohort) for k, (_, prefix) in models.items()}
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
                f"compare_added: the {k} and DL-US&MRI predictions do not list the same patients with the same HER2 "
                "status; use load_added_predictions, or re-run notebook 05."
            )
    return ref["her2"].to_numpy(dtype=int)


def compare_added(
    preds: Mapping[str, pd.DataFrame], *, analysis: str = "radiomics", cohort: str = "test", level: float = 0.95
) -> AddedValueComparison:
    """Compare an analysis's models with DL-US&MRI in one cohort.

    Parameters
    ----------
    preds : mapping
        :func:`load_added_predictions` output: the analysis's models' predictions of the same patients.
    analysis : {"radiomics", "clinical"}
    cohort : {"test", "external"}
    level : float
        Confidence level of every interval.

    Returns
    -------
    AddedValueComparison
    """
    models, combined, _ = look_up_option(analysis, ANALYSES, name="analysis")
    y = _labels(preds)
    p = {k: t["p_her2"].to_numpy(dtype=float) for k, t in preds.items()}
    rows = []
    for k, (label, _) in models.items():
        ci = auc_ci(y, p[k], method="delong", level=level)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        rows.append(
            dict(cohort=cohort, model=k, label=label, n=len(y), n_pos=n_pos, n_neg=n_neg, auc=ci.auc)
            | dict(ci_low=ci.ci[0], ci_high=ci.ci[1], ci_level=level, ci_method="DeLong (pROC ci.auc)")
        )
    auc_table = pd.DataFrame(rows)
    tests = []
    for k in (k for k in models if k != REFERENCE):
        d = delong_test(y, p[k], p[REFERENCE], level=level)
        tests.append(
            dict(cohort=cohort, model=k, reference=REFERENCE, auc_model=d.auc_a, auc_reference=d.auc_b, diff=d.diff)
            | dict(ci_low=d.diff_ci[0], ci_high=d.diff_ci[1], ci_level=level, z=d.z, p_value=d.pvalue)
            | dict(method="paired DeLong (pROC roc.test)")
        )
    delong = pd.DataFrame(tests)
    rec = reclassification(y, p[REFERENCE], p[combined], level=level)
    rec_table = rec.to_frame()
    rec_table.insert(0, "cohort", cohort)
    rec_table.insert(1, "model", combined)
    rec_table.insert(2, "reference", REFERENCE)
    auc_table.insert(0, "analysis", analysis)
    delong.insert(0, "analysis", analysis)
    rec_table.insert(0, "analysis", analysis)
    writer = _radiomics_paragraph if analysis == "radiomics" else _clinical_paragraph
    text = writer(auc_table, delong, rec_table, cohort=cohort, level=level)
    return AddedValueComparison(
        analysis=analysis, cohort=cohort, auc=auc_table, delong=delong, reclassification=rec_table, text=text
    )


def p_text(p: float) -> str:
    """``"P = 0.253"`` or ``"P <0.001"`` (three decimals, :func:`her2lib.stats.tables.format_pvalue`)."""
    s = format_pvalue(p)
    return f"P {s}" if s.startswith("<") else f"P = {s}"


def _fmt_ci(lo: float, hi: float, digits: int = 3) -> str:
    return f"{lo:.{digits}f} to {hi:.{digits}f}"


def _radiomics_paragraph(
    auc: pd.DataFrame, delong: pd.DataFrame, rec: pd.DataFrame, *, cohort: str, level: float
) -> str:
    a = auc.set_index("model")
    d = delong.set_index("model")
    r = rec.set_index("statistic")
    pct = f"{level:.0%}"
    first = a.iloc[0]
    key = "dl_us_mri_radiomics"
    return (
        f"In the {COHORT_NAMES[cohort]} (n = {first['n']}; {first['n_pos']} HER2-positive), the radiomics model "
        f"(features selected and fitted inside each training fold) reached an AUC of {a.at['radiomics', 'auc']:.3f} "
        f"({pct} CI {_fmt_ci(a.at['radiomics', 'ci_low'], a.at['radiomics', 'ci_high'])}), against "
        f"{a.at['dl_us_mri', 'auc']:.3f} ({_fmt_ci(a.at['dl_us_mri', 'ci_low'], a.at['dl_us_mri', 'ci_high'])}) "
        f"for DL-US&MRI (difference {d.at['radiomics', 'diff']:+.3f}, {pct} CI "
        f"{_fmt_ci(d.at['radiomics', 'ci_low'], d.at['radiomics', 'ci_high'])}; paired DeLong "
        f"{p_text(d.at['radiomics', 'p_value'])}). Adding radiomics to DL-US&MRI "
        f"(DL-US&MRI+Radiomics, AUC {a.at[key, 'auc']:.3f}) " + _improvement(d, r, key, pct)
    )


def _improvement(d: pd.DataFrame, r: pd.DataFrame, key: str, pct: str) -> str:
    return (
        f"changed the AUC by {d.at[key, 'diff']:+.3f} ({pct} CI {_fmt_ci(d.at[key, 'ci_low'], d.at[key, 'ci_high'])}; "
        f"paired DeLong {p_text(d.at[key, 'p_value'])}). Its category-free NRI was {r.at['nri', 'estimate']:+.3f} "
        f"({pct} CI {_fmt_ci(r.at['nri', 'ci_low'], r.at['nri', 'ci_high'])}; {p_text(r.at['nri', 'p_value'])}): "
        f"{r.at['nri_events', 'estimate']:+.3f} among HER2-positive and {r.at['nri_nonevents', 'estimate']:+.3f} among "
        f"HER2-negative patients (net shares moved in the right direction; the sum is not a proportion). The IDI was "
        f"{r.at['idi', 'estimate']:+.3f} ({_fmt_ci(r.at['idi', 'ci_low'], r.at['idi', 'ci_high'])}; "
        f"{p_text(r.at['idi', 'p_value'])}). NRI and IDI intervals are Wald intervals (Hmisc improveProb), which can be "
        "too narrow in small cohorts (Kerr et al. 2011); the DeLong comparison is the primary test."
    )


def _clinical_paragraph(
    auc: pd.DataFrame, delong: pd.DataFrame, rec: pd.DataFrame, *, cohort: str, level: float
) -> str:
    a, d, r = auc.set_index("model"), delong.set_index("model"), rec.set_index("statistic")
    first, key, pct = a.iloc[0], "dl_us_mri_clinical", f"{level:.0%}"
    return (
        f"In the {COHORT_NAMES[cohort]} (n = {first['n']}; {first['n_pos']} HER2-positive), adding the BI-RADS "
        "descriptors, age and size selected on the training cohort to DL-US&MRI (DL-US&MRI+Clinical, AUC "
        f"{a.at[key, 'auc']:.3f}, {pct} CI {_fmt_ci(a.at[key, 'ci_low'], a.at[key, 'ci_high'])}; DL-US&MRI "
        f"{a.at['dl_us_mri', 'auc']:.3f}) " + _improvement(d, r, key, pct)
    )
