"""Radiomics (paper, Discussion: the additive value of radiomic features, unexplored there).

* :mod:`her2lib.radiomics.features` — IBSI-named features of each lesion (MIRP), with a content-keyed cache;
* :mod:`her2lib.radiomics.model` — the radiomics model (filters + LASSO logistic regression) fitted inside each
  cross-validation fold, with OOF and test predictions in the DL models' format;
* :mod:`her2lib.radiomics.combined` — DL-US&MRI+Radiomics, fitted leakage-free like the DL-US&MRI fusion.

Science layer.
"""

from .combined import CombinedResult, apply_combined, fit_combined
from .features import RadiomicsSettings, extract_cohort_features, extract_lesion_features, shape_2d
from .model import RadiomicsCVResult, run_radiomics_cv, write_radiomics_predictions

__all__ = [
    "RadiomicsSettings",
    "extract_lesion_features",
    "extract_cohort_features",
    "shape_2d",
    "RadiomicsCVResult",
    "run_radiomics_cv",
    "write_radiomics_predictions",
    "CombinedResult",
    "fit_combined",
    "apply_combined",
]
