"""DL-US&MRI+Radiomics: the DL-US&MRI model combined with the radiomics model by logistic regression, fitted
leakage-free exactly as the DL-US&MRI fusion itself (:mod:`her2lib.fusion`)::

    logit P(HER2+) = b0 + b_dl * logit(p_DL-US&MRI) + b_rad * logit(p_radiomics)

Science layer: pure functions on prediction tables.

* The regression is fitted on the training cohort's out-of-fold scores: DL-US&MRI's cross-fitted OOF scores
  (``fusion_oof.csv``) and the radiomics model's OOF predictions (``radiomics_oof.csv``, whose feature selection and
  penalty were chosen inside each fold, :mod:`her2lib.radiomics.model`). The test and external cohorts choose
  nothing and their labels are never read.
* Its training-cohort scores are cross-fitted over the same folds (:func:`her2lib.fusion.cross_fit_oof`).
* One scale: it is applied to each fold model's scores (DL-US&MRI of fold-model pair k with radiomics fold model
  k, ``*_test_folds.csv``) and the fused probabilities are averaged, as the DL-US&MRI fusion is.

The comparison a reviewer asks for (paired DeLong against DL-US&MRI, NRI and IDI of the added radiomics) is
:func:`her2lib.evaluate_added.compare_added`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from ..errors import DataError
from ..fusion import EPS, FusionModel, apply_fusion, cross_fit_oof, fit_fusion, join_modalities

__all__ = ["TERMS", "CombinedResult", "fit_combined", "apply_combined"]

#: The combined model's terms (coefficient table rows).
TERMS = ("intercept", "logit_p_dl_us_mri", "logit_p_radiomics")
_DL, _RAD = "DL-US&MRI predictions", "radiomics predictions"


@dataclass(frozen=True)
class CombinedResult:
    """The fitted DL-US&MRI+Radiomics model and its predictions.

    Attributes
    ----------
    model : FusionModel
        Fitted on the training cohort's OOF scores (terms :data:`TERMS`).
    oof : DataFrame
        Cross-fitted training-cohort predictions (prediction-file columns).
    test : DataFrame
        Test-cohort predictions: per fold model, then averaged.
    test_folds : DataFrame or None
        Per fold model (:data:`~her2lib.contract.TEST_FOLD_COLUMNS`).
    coefficients : DataFrame
        :meth:`FusionModel.to_frame` of ``model``.
    """

    model: FusionModel
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: pd.DataFrame | None
    coefficients: pd.DataFrame


def _same_patients(dl: pd.DataFrame, rad: pd.DataFrame, what: str) -> None:
    a, b = set(dl["patient_id"]), set(rad["patient_id"])
    if a != b:
        raise DataError(
            f"DL-US&MRI+Radiomics ({what}): DL-US&MRI and the radiomics model predicted different patients "
            f"(only DL-US&MRI: {sorted(a - b)[:10]}; only radiomics: {sorted(b - a)[:10]}). Re-run notebook 05 "
            "after notebooks 03/04 on the same cohort and folds.",
            [*sorted(a ^ b)],
        )


def fit_combined(
    dl_oof: pd.DataFrame,
    rad_oof: pd.DataFrame,
    dl_test: pd.DataFrame,
    rad_test: pd.DataFrame,
    *,
    dl_test_folds: pd.DataFrame | None = None,
    rad_test_folds: pd.DataFrame | None = None,
    level: float = 0.95,
    eps: float = EPS,
) -> CombinedResult:
    """Fit DL-US&MRI+Radiomics on the training OOF scores and apply it to the test cohort.

    Parameters
    ----------
    dl_oof, rad_oof : DataFrame
        Validated prediction tables of the training cohort (``fusion_oof.csv``, ``radiomics_oof.csv``): same
        patients, labels and folds.
    dl_test, rad_test : DataFrame
        Fold-mean test predictions (``fusion_test.csv``, ``radiomics_test.csv``).
    dl_test_folds, rad_test_folds : DataFrame, optional
        Per-fold-model test predictions; when both are given the model is applied per fold model pair k and the
        results averaged (the scale it was fitted on).
    level, eps
        As :func:`her2lib.fusion.fit_fusion`.

    Returns
    -------
    CombinedResult
    """
    _same_patients(dl_oof, rad_oof, "training OOF")
    _same_patients(dl_test, rad_test, "test")
    train = join_modalities(dl_oof, rad_oof, us_source=_DL, mri_source=_RAD, check_input=False)
    model = replace(
        fit_fusion(train["p_us"], train["p_mri"], train["her2"], fit_on="train OOF", level=level, eps=eps), terms=TERMS
    )
    oof = cross_fit_oof(train, level=level, eps=eps)
    test, test_folds = apply_combined(model, dl_test, rad_test, dl_folds=dl_test_folds, rad_folds=rad_test_folds)
    return CombinedResult(model=model, oof=oof, test=test, test_folds=test_folds, coefficients=model.to_frame())


def apply_combined(
    model: FusionModel,
    dl: pd.DataFrame,
    rad: pd.DataFrame,
    *,
    dl_folds: pd.DataFrame | None = None,
    rad_folds: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The fitted model (nothing refitted, no label read) applied to an evaluation cohort (test or external).

    Returns
    -------
    (DataFrame, DataFrame or None)
        Fold-mean predictions (prediction-file columns) and per-fold-model ones (or None without both per-fold
        tables).
    """
    _same_patients(dl, rad, "evaluation cohort")
    if dl_folds is None or rad_folds is None:
        dl_folds = rad_folds = None
    return apply_fusion(model, dl, rad, us_folds=dl_folds, mri_folds=rad_folds)
