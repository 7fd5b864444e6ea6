"""Stage of notebook ``05_fusion``, second part: radiomic features of every lesion, the radiomics model fitted inside
notebook 02's cross-validation folds, and DL-US&MRI+Radiomics (paper, Discussion: the additive value of radiomic
features, left unexplored there).

Stages layer: imports science and core modules only.

Reads the cohort, ``predictions/folds.csv`` (notebook 02) and the DL-US&MRI files (``fusion_*.csv``, written by the
fusion just before). Writes

* ``cache/radiomics/{us,mri}_features.csv``: the features, content-keyed (:func:`extract_cohort_features`);
* ``predictions/radiomics_{oof,test,test_folds}.csv`` (and ``_external``, ``_external_folds`` with an external
  cohort), in the DL models' format;
* ``predictions/fusion_radiomics_*.csv``: DL-US&MRI+Radiomics, same kinds;
* ``tables/radiomics_features_selected.csv``, ``radiomics_folds.csv``, ``radiomics_settings.json``,
  ``fusion_radiomics_coefficients.csv``.

Notebook 06 compares the three models (:func:`her2lib.stages.evaluation.run_evaluation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..contract import PREDICTION_KINDS, prediction_path, read_predictions, read_test_folds, write_prediction_files
from ..contract import task as _get_task
from ..data import available_modalities, load_cohort
from ..fusion import EPS
from ..io import write_csv, write_json
from ..radiomics.combined import CombinedResult, apply_combined, fit_combined
from ..radiomics.features import RadiomicsSettings, extract_cohort_features, feature_columns
from ..radiomics.model import RadiomicsCVResult, run_radiomics_cv, write_radiomics_predictions
from ..train import read_folds
from ._common import RunDirs, notice, remove_stale

__all__ = ["RADIOMICS", "COMBINED", "run_radiomics", "radiomics_outputs", "RadiomicsStageResult"]

#: Prediction-file prefixes: the radiomics model and DL-US&MRI+Radiomics.
RADIOMICS, COMBINED = "radiomics", "fusion_radiomics"


@dataclass(frozen=True)
class RadiomicsStageResult:
    """What notebook 05 shows: the features, the cross-validated radiomics model and the combined model (None
    without DL-US&MRI)."""

    features: pd.DataFrame
    cv: RadiomicsCVResult
    combined: CombinedResult | None
    settings: RadiomicsSettings

    @property
    def folds(self) -> pd.DataFrame:
        """Per training fold: patients, candidates kept, features selected, LASSO penalty, inner-CV and OOF AUC."""
        return self.cv.summary

    @property
    def selected(self) -> pd.DataFrame:
        """The features the LASSO kept, with the number of folds that kept each and their mean coefficient."""
        return self.cv.selected

    @property
    def coefficients(self) -> pd.DataFrame | None:
        """DL-US&MRI+Radiomics coefficients (None without DL-US&MRI)."""
        return None if self.combined is None else self.combined.coefficients

    @property
    def test(self) -> pd.DataFrame:
        """The radiomics model's test-cohort predictions (mean of the fold models)."""
        return self.cv.test


def radiomics_outputs(run: RunDirs) -> tuple[Path, ...]:
    """Every file :func:`run_radiomics` may write in the run folder (removed when it is skipped)."""
    preds = tuple(prediction_path(run.predictions, p, k) for p in (RADIOMICS, COMBINED) for k in PREDICTION_KINDS)
    tables = ("radiomics_features_selected.csv", "radiomics_folds.csv", "radiomics_settings.json")
    return preds + tuple(run.tables / t for t in (*tables, "fusion_radiomics_coefficients.csv"))


def run_radiomics(
    run: RunDirs,
    *,
    enabled: bool = True,
    settings: RadiomicsSettings | None = None,
    task: str = "binary",
    seed: int = 0,
    n_jobs: int = 1,
    level: float = 0.95,
    eps: float = EPS,
    progress: bool = True,
) -> RadiomicsStageResult | None:
    """Extract the features, fit the radiomics model in notebook 02's folds, fit DL-US&MRI+Radiomics.

    Parameters
    ----------
    run : RunDirs
        The run's folders.
    enabled : bool
        False skips the analysis (notebook 05's ``radiomics: false``) and removes its files of an earlier run.
    settings : RadiomicsSettings, optional
        Extraction settings (bin number or width, MRI resampling, normalisation, families).
    task : str
        Binary task only (the class tasks are skipped with a notice).
    seed : int
        Seed of the inner cross-validation that chooses the LASSO penalty.
    n_jobs : int
        Worker processes for the feature extraction.
    level, eps
        As :func:`her2lib.fusion.fit_fusion` (combined model).
    progress : bool
        Progress bars.

    Returns
    -------
    RadiomicsStageResult or None
        None (after a notice, with earlier radiomics outputs removed) when disabled or for a class task.
    """
    settings = settings or RadiomicsSettings()
    if not enabled or not _get_task(task).is_binary:
        why = "radiomics: false" if not enabled else f"task {task!r} (radiomics answers the binary question)"
        notice(f"Radiomics skipped ({why}); no radiomics files are written.")
        remove_stale(*radiomics_outputs(run))
        return None
    cohort = load_cohort(run.manifest, check_files="exists")
    table = cohort[["patient_id", "split", "her2"]].copy()
    table["fold"] = read_folds(run.predictions / "folds.csv", cohort).to_numpy()
    features = None
    for mod in available_modalities(cohort, require_all=False):
        lacking = int((cohort[f"{mod}_image"].astype(str) == "").sum())
        if lacking:
            notice(
                f"Radiomics: {lacking} of {len(cohort)} patients have no {mod.upper()} image; the model imputes their "
                f"{mod.upper()} features with each fold's training median (a feature missing in more than 20% of a "
                "fold's training patients is dropped there)."
            )
        f = extract_cohort_features(
            cohort,
            mod,
            settings=settings,
            cache_file=run.cache / "radiomics" / f"{mod}_features.csv",
            n_jobs=n_jobs,
            progress=progress,
        )
        features = f if features is None else features.merge(f, on="patient_id", how="outer")
    print(f"radiomic features: {len(feature_columns(features))} per patient, {len(features)} patients")
    cv = run_radiomics_cv(features, table, seed=seed)
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cv.options.items()}
    write_json(
        run.tables / "radiomics_settings.json",
        {"extraction": settings.to_dict(), "model": {"method": cv.method, "seed": seed, **model}},
    )
    write_radiomics_predictions(cv, run.predictions, prefix=RADIOMICS)
    write_csv(run.tables / "radiomics_features_selected.csv", cv.selected)
    write_csv(run.tables / "radiomics_folds.csv", cv.summary)
    combined = _combine(run, level=level, eps=eps)
    return RadiomicsStageResult(features=features, cv=cv, combined=combined, settings=settings)


def _read(run: RunDirs, prefix: str, kind: str) -> pd.DataFrame | None:
    path = prediction_path(run.predictions, prefix, kind)
    if not path.is_file():
        return None
    return read_predictions(path, {"oof": "train"}.get(kind, kind))


def _dl_and_radiomics(run: RunDirs, cohort: str) -> tuple | None:
    """DL-US&MRI's and the radiomics model's predictions of ``cohort`` (``"test"`` or ``"external"``) with their
    per-fold-model tables, the radiomics ones restricted to the patients DL-US&MRI covers (those with both images;
    the radiomics model also predicts those with one, from imputed features); None when either lacks the cohort."""
    dl, rad = _read(run, "fusion", cohort), _read(run, RADIOMICS, cohort)
    if dl is None or rad is None:
        return None
    kind = f"{cohort}_folds"
    dl_folds = read_test_folds(prediction_path(run.predictions, "fusion", kind), dl)
    rad_folds = read_test_folds(prediction_path(run.predictions, RADIOMICS, kind), rad)
    covered = rad["patient_id"].isin(dl["patient_id"])
    if rad_folds is not None:
        rad_folds = rad_folds[rad_folds["patient_id"].isin(dl["patient_id"])]
    return dl, rad[covered].reset_index(drop=True), dl_folds, rad_folds


def _combine(run: RunDirs, *, level: float, eps: float) -> CombinedResult | None:
    """DL-US&MRI+Radiomics from ``fusion_*.csv`` and ``radiomics_*.csv``; its files removed when DL-US&MRI is
    missing (a single-modality cohort)."""
    coef_path = run.tables / "fusion_radiomics_coefficients.csv"
    dl_oof, test = _read(run, "fusion", "oof"), _dl_and_radiomics(run, "test")
    if dl_oof is None or test is None:
        notice("DL-US&MRI+Radiomics needs DL-US&MRI (fusion_oof.csv, fusion_test.csv), which this run lacks: skipped.")
        remove_stale(*(prediction_path(run.predictions, COMBINED, k) for k in PREDICTION_KINDS), coef_path)
        return None
    rad_oof = _read(run, RADIOMICS, "oof")
    rad_oof = rad_oof[rad_oof["patient_id"].isin(dl_oof["patient_id"])].reset_index(drop=True)
    dl_test, rad_test, dl_folds, rad_folds = test
    res = fit_combined(
        dl_oof, rad_oof, dl_test, rad_test, dl_test_folds=dl_folds, rad_test_folds=rad_folds, level=level, eps=eps
    )
    ext = _dl_and_radiomics(run, "external")
    external, external_folds = (
        apply_combined(res.model, ext[0], ext[1], dl_folds=ext[2], rad_folds=ext[3]) if ext else (None, None)
    )
    write_prediction_files(
        run.predictions,
        COMBINED,
        oof=res.oof,
        test=res.test,
        test_folds=res.test_folds,
        external=external,
        external_folds=external_folds,
    )
    write_csv(coef_path, res.coefficients)
    return res
