"""Stage of notebook ``05_fusion``, last part: DL-US&MRI+Clinical, the DL-US&MRI score with the BI-RADS descriptors
of Tables 2-3, age and tumour size (:mod:`her2lib.clinical`), and its nomogram.

Stages layer: imports science and core modules only.

Reads the cohort manifest (descriptor columns) and ``predictions/fusion_{oof,test,test_folds}.csv`` (and
``_external``). Writes ``predictions/fusion_clinical_{oof,test,test_folds}.csv`` (and ``_external``,
``_external_folds``), ``tables/clinical_screen.csv`` (univariable screen of the training cohort),
``tables/clinical_coefficients.csv`` and ``figures/nomogram.png``. Notebook 06 compares it with DL-US&MRI.
"""

from __future__ import annotations

from pathlib import Path

from ..clinical import ClinicalResult, apply_clinical, fit_clinical_model
from ..contract import PREDICTION_KINDS, prediction_path, read_predictions, read_test_folds, write_prediction_files
from ..contract import task as _get_task
from ..data import load_cohort
from ..figures.clinical import plot_nomogram
from ..fusion import EPS
from ..io import write_csv
from ._common import RunDirs, notice, remove_stale

__all__ = ["CLINICAL", "run_clinical", "clinical_outputs"]

#: prediction-file prefix of DL-US&MRI+Clinical
CLINICAL = "fusion_clinical"


def clinical_outputs(run: RunDirs) -> tuple[Path, ...]:
    """Every file :func:`run_clinical` may write (removed when it is skipped)."""
    preds = tuple(prediction_path(run.predictions, CLINICAL, k) for k in PREDICTION_KINDS)
    return preds + (
        run.tables / "clinical_screen.csv",
        run.tables / "clinical_coefficients.csv",
        run.figures / "nomogram.png",
    )


def run_clinical(
    run: RunDirs,
    *,
    enabled: bool = True,
    task: str = "binary",
    alpha: float = 0.05,
    max_terms: int = 0,
    level: float = 0.95,
    eps: float = EPS,
    dpi: int = 300,
) -> ClinicalResult | None:
    """Fit DL-US&MRI+Clinical leakage-free on the training OOF scores, apply it to the test (and external) cohort,
    draw its nomogram.

    Parameters
    ----------
    run : RunDirs
        The run's folders.
    enabled : bool
        False skips it (notebook 05's ``clinical: false``) and removes its files of an earlier run.
    task : str
        Binary task only.
    alpha : float
        Univariable screening level.
    max_terms : int
        Most coefficients besides the DL score's (a k-level descriptor takes k - 1); 0: one per 10 HER2-positive
        training patients, minus one.
    level, eps
        Wald level and logit clipping.
    dpi : int
        Nomogram resolution.

    Returns
    -------
    ClinicalResult or None
        None (after a notice, earlier files removed) when disabled, for a class task, or without DL-US&MRI.
    """
    dl_paths = {k: prediction_path(run.predictions, "fusion", k) for k in ("oof", "test")}
    why = (
        "clinical: false"
        if not enabled
        else f"task {task!r}: binary question only"
        if not _get_task(task).is_binary
        else "no DL-US&MRI predictions (fusion_oof.csv, fusion_test.csv)"
        if not all(p.is_file() for p in dl_paths.values())
        else None
    )
    if why:
        notice(f"DL-US&MRI+Clinical skipped ({why}); its files are not written.")
        remove_stale(*clinical_outputs(run))
        return None
    cohort = load_cohort(run.manifest, check_files="exists")
    dl_test = read_predictions(dl_paths["test"], "test")
    res = fit_clinical_model(
        cohort,
        read_predictions(dl_paths["oof"], "train"),
        dl_test,
        dl_test_folds=read_test_folds(prediction_path(run.predictions, "fusion", "test_folds"), dl_test),
        alpha=alpha,
        max_terms=max_terms or None,
        level=level,
        eps=eps,
    )
    ext_path = prediction_path(run.predictions, "fusion", "external")
    external = external_folds = None
    if ext_path.is_file():
        dl_ext = read_predictions(ext_path, "external")
        folds = read_test_folds(prediction_path(run.predictions, "fusion", "external_folds"), dl_ext)
        external, external_folds = apply_clinical(res.model, cohort, dl_ext, dl_folds=folds)
    write_prediction_files(
        run.predictions,
        CLINICAL,
        oof=res.oof,
        test=res.test,
        test_folds=res.test_folds,
        external=external,
        external_folds=external_folds,
    )
    write_csv(run.tables / "clinical_screen.csv", res.screen)
    write_csv(run.tables / "clinical_coefficients.csv", res.coefficients)
    plot_nomogram(res.model, path=run.figures / "nomogram.png", dpi=dpi)
    return res
