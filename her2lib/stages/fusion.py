"""Stage of notebook ``05_fusion``: read both models' prediction files, fit DL-US&MRI, write its files.

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

from pathlib import Path

from ..contract import (
    MODELS,
    Task,
    prediction_path,
    read_class_predictions,
    read_class_test_folds,
    read_predictions,
    read_test_folds,
)
from ..contract import task as _get_task
from ..fusion import EPS, FusionResult, apply_fusion, fuse
from ..fusion_classes import ClassFusionResult, fuse_classes
from ..io import write_csv
from ._common import RunDirs, notice, remove_stale

__all__ = ["run_fusion", "fusion_inputs", "fusion_outputs", "fusion_external_outputs"]

_US, _MRI, _FUSION = (MODELS[k].prefix for k in ("dl_us", "dl_mri", "dl_us_mri"))


def fusion_inputs(run: RunDirs) -> dict[str, Path]:
    """The prediction files the fusion needs: ``{us,mri}_{oof,test}.csv`` (key ``"us_oof"`` etc.)."""
    return {
        f"{prefix}_{kind}": prediction_path(run.predictions, prefix, kind)
        for kind in ("oof", "test")
        for prefix in (_US, _MRI)
    }


def fusion_outputs(run: RunDirs) -> tuple[Path, ...]:
    """Every file :func:`run_fusion` may write (removed when it is skipped)."""
    return (
        prediction_path(run.predictions, _FUSION, "oof"),
        prediction_path(run.predictions, _FUSION, "test"),
        prediction_path(run.predictions, _FUSION, "test_folds"),
        run.predictions / f"{_FUSION}_test_paper.csv",
        run.tables / "fusion_coefficients.csv",
        run.tables / "fusion_protocols.csv",
    )


def fusion_external_outputs(run: RunDirs) -> tuple[Path, Path]:
    """The external validation cohort's fusion files (``fusion_external.csv``, ``fusion_external_folds.csv``)."""
    return (
        prediction_path(run.predictions, _FUSION, "external"),
        prediction_path(run.predictions, _FUSION, "external_folds"),
    )


def run_fusion(
    run: RunDirs,
    *,
    task: str | Task = "binary",
    level: float = 0.95,
    eps: float = EPS,
    n_boot: int = 1000,
    seed: int = 0,
) -> FusionResult | ClassFusionResult | None:
    """Read ``{us,mri}_{oof,test,test_folds}.csv``, fuse DL-US and DL-MRI into DL-US&MRI and write its outputs
    atomically.

    Each prediction file is validated once, where it is read (:func:`her2lib.contract.read_predictions`,
    :func:`~her2lib.contract.read_test_folds`; for the class tasks :func:`~her2lib.contract.read_class_predictions`,
    :func:`~her2lib.contract.read_class_test_folds`).

    ``task="binary"`` (the paper's question): :func:`her2lib.fusion.fuse`, logistic regression on logits, both
    protocols. Writes ``predictions/fusion_oof.csv``, ``fusion_test.csv`` (leakage-free), ``fusion_test_folds.csv``
    (per fold model pair, when ``{us,mri}_test_folds.csv`` exist), ``fusion_test_paper.csv`` (paper protocol,
    labelled), ``tables/fusion_coefficients.csv`` and ``fusion_protocols.csv``.

    With the repetitions of a repeated cross-validation (notebook 02's ``n_repeats``, binary task), every repetition
    ``r >= 1`` is fused the same way in its own folders (:meth:`RunDirs.repeat`); the result returned is
    repetition 0's.

    ``task="three-class"`` or ``"low-vs-zero"``: :func:`her2lib.fusion_classes.fuse_classes`, multinomial logistic
    regression on log-probability ratios, leakage-free protocol only. Writes ``predictions/fusion_oof.csv``,
    ``fusion_test.csv``, ``fusion_test_folds.csv`` (class-task columns,
    :func:`her2lib.contract.class_prediction_columns`) and ``tables/fusion_coefficients.csv``. The paper's
    protocol (fit in the test cohort) is a binary-task comparison: ``fusion_test_paper.csv`` and
    ``tables/fusion_protocols.csv`` left by an earlier binary run in the same folders are removed, so notebook 06
    cannot read them as this task's.

    Parameters
    ----------
    run : RunDirs
        The run's folders.
    task : str or Task
        ``"binary"`` | ``"three-class"`` | ``"low-vs-zero"`` (:data:`her2lib.contract.TASKS`); the prediction files
        must come from notebooks 03/04 run with the same task.
    level, eps, n_boot, seed
        As :func:`her2lib.fusion.fuse` (``n_boot`` and ``seed`` serve the binary protocol comparison only).

    Returns
    -------
    FusionResult, ClassFusionResult or None
        None, after printing a notice, when a DL-US or DL-MRI prediction file is missing (a single-modality
        cohort: notebook 03 or 04 skipped training). Then no fusion file is written and stale fusion outputs of
        an earlier run in the same folders (every repetition's) are removed, so notebook 06 cannot evaluate them.
    """
    t = _get_task(task)
    inputs = fusion_inputs(run)
    missing = [p.name for p in inputs.values() if not p.is_file()]
    if missing:
        notice(
            f"DL-US&MRI needs both models' predictions; {', '.join(missing)} not found in {run.predictions} "
            "(the cohort lacks a modality, so notebook 03 or 04 skipped it): the fusion is skipped."
        )
        for rep in map(run.repeat, run.repeats()):
            remove_stale(*fusion_outputs(rep), *fusion_external_outputs(rep))
        return None
    if not t.is_binary:
        return _run_class_fusion(run, t, inputs, level=level, eps=eps)
    res = _run_binary_fusion(run, inputs, level=level, eps=eps, n_boot=n_boot, seed=seed)
    repeats = run.repeats()
    for rep in map(run.repeat, repeats[1:]):  # repetitions of a repeated cross-validation (notebook 02's n_repeats)
        _run_binary_fusion(rep, fusion_inputs(rep), level=level, eps=eps, n_boot=n_boot, seed=seed)
    if len(repeats) > 1:
        print(f"DL-US&MRI fitted in each of {len(repeats)} repetitions ({run.predictions / 'repeats'})")
    return res


def _run_binary_fusion(
    run: RunDirs, inputs: dict[str, Path], *, level: float, eps: float, n_boot: int, seed: int
) -> FusionResult:
    """The binary branch of :func:`run_fusion` for one repetition's folders: read, fuse (:func:`fuse`), write."""
    us_test = read_predictions(inputs["us_test"], "test")
    mri_test = read_predictions(inputs["mri_test"], "test")
    res = fuse(
        read_predictions(inputs["us_oof"], "train"),
        read_predictions(inputs["mri_oof"], "train"),
        us_test,
        mri_test,
        level=level,
        eps=eps,
        us_test_folds=read_test_folds(prediction_path(run.predictions, _US, "test_folds"), us_test),
        mri_test_folds=read_test_folds(prediction_path(run.predictions, _MRI, "test_folds"), mri_test),
        n_boot=n_boot,
        seed=seed,
        check_input=False,
    )
    oof_path, test_path, folds_path, paper_path, coef_path, prot_path = fusion_outputs(run)
    write_csv(oof_path, res.oof)
    write_csv(test_path, res.test)
    if res.test_folds is not None:
        write_csv(folds_path, res.test_folds)
    else:
        remove_stale(folds_path)
    write_csv(paper_path, res.paper_test)
    write_csv(coef_path, res.coefficients)
    write_csv(prot_path, res.protocols)
    _fuse_external(run, res)
    return res


def _fuse_external(run: RunDirs, res: FusionResult) -> None:
    """The leakage-free fusion applied to the external validation cohort, when both models predicted one
    (``{us,mri}_external.csv``): ``fusion_external.csv`` and ``fusion_external_folds.csv``; removed otherwise."""
    ext_path, ext_folds_path = fusion_external_outputs(run)
    paths = {p: prediction_path(run.predictions, p, "external") for p in (_US, _MRI)}
    if not all(p.is_file() for p in paths.values()):
        remove_stale(ext_path, ext_folds_path)
        return
    ext = {p: read_predictions(path, "external") for p, path in paths.items()}
    folds = {p: read_test_folds(prediction_path(run.predictions, p, "external_folds"), ext[p]) for p in paths}
    both = set(ext[_US]["patient_id"]) & set(ext[_MRI]["patient_id"])
    if len(both) < max(len(ext[_US]), len(ext[_MRI])):
        notice(
            f"DL-US&MRI of the external cohort: {len(both)} patients have both images (DL-US predicted "
            f"{len(ext[_US])}, DL-MRI {len(ext[_MRI])}); the fusion covers those."
        )
    ext = {p: e[e["patient_id"].isin(both)].reset_index(drop=True) for p, e in ext.items()}
    folds = {
        p: f[f["patient_id"].isin(both)].reset_index(drop=True) if f is not None else None for p, f in folds.items()
    }
    pred, pred_folds = apply_fusion(res.model, ext[_US], ext[_MRI], us_folds=folds[_US], mri_folds=folds[_MRI])
    write_csv(ext_path, pred)
    if pred_folds is not None:
        write_csv(ext_folds_path, pred_folds)
    else:
        remove_stale(ext_folds_path)


def _run_class_fusion(run: RunDirs, t: Task, inputs: dict[str, Path], *, level: float, eps: float) -> ClassFusionResult:
    """The class-task branch of :func:`run_fusion`: read, fuse (:func:`fuse_classes`), write, remove the
    binary-only outputs."""
    us_test = read_class_predictions(inputs["us_test"], t, "test")
    mri_test = read_class_predictions(inputs["mri_test"], t, "test")
    res = fuse_classes(
        read_class_predictions(inputs["us_oof"], t, "train"),
        read_class_predictions(inputs["mri_oof"], t, "train"),
        us_test,
        mri_test,
        task=t,
        level=level,
        eps=eps,
        us_test_folds=read_class_test_folds(prediction_path(run.predictions, _US, "test_folds"), t, us_test),
        mri_test_folds=read_class_test_folds(prediction_path(run.predictions, _MRI, "test_folds"), t, mri_test),
        check_input=False,
    )
    oof_path, test_path, folds_path, paper_path, coef_path, prot_path = fusion_outputs(run)
    ext = fusion_external_outputs(run)
    write_csv(oof_path, res.oof)
    write_csv(test_path, res.test)
    if res.test_folds is not None:
        write_csv(folds_path, res.test_folds)
    else:
        remove_stale(folds_path)
    remove_stale(*ext)  # the class tasks are evaluated on the test cohort only (for now)
    write_csv(coef_path, res.coefficients)
    remove_stale(paper_path, prot_path)
    return res
