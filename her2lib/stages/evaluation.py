"""Stage of notebook ``06_evaluation``: evaluate the models whose prediction files exist, write the tables, the
Results text and the figures.

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..contract import MODELS, Task, model_label
from ..contract import task as _task
from ..errors import DataError
from ..evaluate import (
    EvaluationResult,
    available_models,
    evaluate_models,
    internal_external_paragraph,
    internal_external_table,
    load_predictions,
)
from ..evaluate_added import ANALYSES, compare_added, load_added_predictions
from ..evaluate_added import REFERENCE as REFERENCE_MODEL
from ..evaluate_classes import ClassEvaluationResult, evaluate_classes, load_class_predictions
from ..evaluate_repeats import RepeatedCVResult, evaluate_repeats
from ..figures.added_value import plot_added_value
from ..figures.evaluation import (
    plot_calibration,
    plot_decision_curve,
    plot_internal_external,
    plot_performance,
    plot_roc,
)
from ..figures.multiclass import plot_confusion_matrices, plot_roc_classes, plot_roc_low_vs_zero
from ..figures.repeats import plot_repeats
from ..io import write_csv, write_text
from ._common import RunDirs, notice, remove_stale

#: what each kind of task writes (tables/, figures/); a run folder holds one task, so switching the task of a folder
#: removes the other kind's files (index.html would otherwise show them as this run's)
_BINARY_OUTPUTS = (
    "tables/performance.csv",
    "tables/performance_fold_models.csv",
    "tables/delong.csv",
    "tables/calibration.csv",
    "tables/decision_curve.csv",
    "figures/roc.png",
    "figures/roc.svg",
    "figures/performance.png",
    "figures/calibration.png",
    "figures/decision_curve.png",
)
#: what an external validation cohort adds (``split == "external"`` in the manifest)
_EXTERNAL_OUTPUTS = (
    "tables/external/performance.csv",
    "tables/external/performance_fold_models.csv",
    "tables/external/delong.csv",
    "tables/external/calibration.csv",
    "tables/external/decision_curve.csv",
    "tables/external/results_text.md",
    "tables/internal_vs_external.csv",
    "figures/external/roc.png",
    "figures/external/roc.svg",
    "figures/external/performance.png",
    "figures/external/calibration.png",
    "figures/external/decision_curve.png",
    "figures/internal_vs_external.png",
)
#: what a repeated cross-validation adds (:func:`evaluate_repetitions`)
_REPEAT_OUTPUTS = (
    "tables/repeats_auc.csv",
    "tables/repeats_delong.csv",
    "tables/repeats_summary.csv",
    "tables/repeats_text.md",
    "figures/repeats.png",
)
#: what the added-value analyses write (notebook 05's radiomics model and DL-US&MRI+Radiomics; DL-US&MRI+Clinical)
_ADDED_OUTPUTS = tuple(
    f"{d}/{a}{suffix}"
    for a in ("radiomics", "clinical")
    for d, suffix in (
        ("tables", "_auc.csv"),
        ("tables", "_delong.csv"),
        ("tables", "_reclassification.csv"),
        ("tables", "_text.md"),
        ("figures", ".png"),
    )
)
_CLASS_OUTPUTS = (
    "tables/class_auc.csv",
    "tables/class_metrics.csv",
    "tables/decision_rules.csv",
    "tables/confusion.csv",
    "tables/low_vs_zero_auc.csv",
    "tables/class_delong.csv",
    "figures/roc_classes.png",
    "figures/roc_classes.svg",
    "figures/confusion_matrices.png",
    "figures/confusion_matrices.svg",
    "figures/roc_low_vs_zero.png",
    "figures/roc_low_vs_zero.svg",
)

__all__ = ["models_to_evaluate", "run_evaluation", "evaluate_repetitions", "evaluate_added_value"]


def models_to_evaluate(run: RunDirs, *, quiet: bool = False) -> list[str]:
    """Model keys with prediction files in ``run`` (:func:`her2lib.evaluate.available_models`), in the paper's order.

    Parameters
    ----------
    run : RunDirs
        The run's folders.
    quiet : bool
        Do not print a notice for the models left out (a single-modality cohort skips DL-US or DL-MRI, and then
        the fusion) and the DeLong comparisons that cannot be made.

    Returns
    -------
    list of str
        Subset of ``["dl_us", "dl_mri", "dl_us_mri"]``.
    """
    keys = available_models(run.predictions)
    if not quiet and len(keys) < len(MODELS):
        gone = [m.label for k, m in MODELS.items() if k not in keys]
        kept = ", ".join(model_label(k) for k in keys) or "no model"
        tail = "" if len(keys) > 1 else "; no DeLong comparison is possible"
        notice(
            f"No prediction files for {', '.join(gone)} in this run (skipped by an earlier notebook): "
            f"evaluating {kept}{tail}."
        )
    return keys


def run_evaluation(
    run: RunDirs,
    *,
    task: str | Task = "binary",
    ci_method: str = "delong",
    level: float = 0.95,
    n_bins: int = 5,
    n_boot: int = 2000,
    seed: int = 0,
    dpi: int = 300,
    models: Sequence[str] | None = None,
) -> EvaluationResult | ClassEvaluationResult:
    """Compute and write everything of ``06_evaluation`` (:func:`her2lib.evaluate.evaluate_models`; for a class
    task :func:`her2lib.evaluate_classes.evaluate_classes`).

    ``models=None`` evaluates the models whose prediction files exist (:func:`models_to_evaluate`; one, two or
    three), with DeLong comparisons only for the pairs among them. The epoch-selection protocol of each model
    (``selection`` column) is read from ``models/dl_*/config.json``.

    Reads ``predictions/{us,mri,fusion}_{oof,test,test_folds}.csv`` and, when the fusion is evaluated,
    ``tables/fusion_protocols.csv``. Writes ``tables/performance.csv``, ``performance_fold_models.csv``,
    ``delong.csv``, ``calibration.csv``, ``decision_curve.csv``, ``results_text.md`` and ``figures/roc.png``
    (+ ``roc.svg``), ``performance.png``, ``calibration.png``, ``decision_curve.png``.

    A class task (``three-class``, ``low-vs-zero``) reads the same prediction files with its class columns
    (:func:`her2lib.evaluate_classes.load_class_predictions`) and writes ``tables/class_auc.csv``,
    ``class_metrics.csv``, ``decision_rules.csv``, ``confusion.csv``, ``low_vs_zero_auc.csv``, ``class_delong.csv``,
    ``results_text.md`` and ``figures/roc_classes.png`` (three-class only: for two classes it is the HER2-low vs
    HER2-zero curve), ``confusion_matrices.png``, ``roc_low_vs_zero.png`` (each + SVG); ``ci_method`` and ``n_bins``
    do not apply to it (AUC intervals are DeLong's, the macro AUC's a bootstrap).

    Parameters
    ----------
    run : RunDirs
        The run's folders.
    task : str or Task
        ``"binary"`` (the paper's; default), ``"three-class"`` or ``"low-vs-zero"``
        (:data:`her2lib.contract.TASKS`).
    ci_method, level, n_bins, n_boot, seed
        As :func:`her2lib.evaluate.evaluate_models`.
    dpi : int
        Resolution of the PNG figures.
    models : sequence of str, optional
        Model keys to evaluate.

    Returns
    -------
    EvaluationResult or ClassEvaluationResult
        The tables, with ``files`` listing what was written.

    Raises
    ------
    DataError
        No model has prediction files.
    """
    keys = models_to_evaluate(run) if models is None else list(models)
    if not keys:
        raise DataError(
            f"{run.predictions}: no prediction files (us/mri/fusion _oof.csv and _test.csv); run "
            "notebooks 03_train_us / 04_train_mri (and 05_fusion) first."
        )
    t = _task(task)
    stale = _CLASS_OUTPUTS if t.is_binary else _BINARY_OUTPUTS + _REPEAT_OUTPUTS + _EXTERNAL_OUTPUTS + _ADDED_OUTPUTS
    remove_stale(*(run.root / rel for rel in stale))
    if not t.is_binary:
        return _run_class_evaluation(run, t, keys, level=level, n_boot=n_boot, seed=seed, dpi=dpi)
    preds = load_predictions(run.predictions, keys, models_dir=run.models)
    prot_path = run.tables / "fusion_protocols.csv"
    prot = pd.read_csv(prot_path) if prot_path.is_file() and "dl_us_mri" in preds else None
    res = evaluate_models(
        preds, ci_method=ci_method, level=level, n_bins=n_bins, n_boot=n_boot, seed=seed, protocols=prot
    )
    files = _write_cohort(preds, res, run.tables, run.figures, text=res.text, n_bins=n_bins, dpi=dpi)
    kw = dict(ci_method=ci_method, level=level, n_bins=n_bins, n_boot=n_boot, seed=seed)
    files += _evaluate_external(run, preds, dpi=dpi, **kw)
    for analysis in ANALYSES:
        files += evaluate_added_value(run, analysis=analysis, level=level, dpi=dpi)
    return dataclasses.replace(res, files=tuple(files))


def evaluate_added_value(run: RunDirs, *, analysis: str = "radiomics", level: float = 0.95, dpi: int = 300) -> list:
    """What radiomics (``analysis="radiomics"``: Radiomics, DL-US&MRI+Radiomics) or the BI-RADS reading
    (``"clinical"``: DL-US&MRI+Clinical) adds to DL-US&MRI, in the test cohort and in the external one when it has
    predictions and both classes (:func:`her2lib.evaluate_added.compare_added`). Writes
    ``tables/<analysis>_auc.csv``, ``_delong.csv`` (paired DeLong against DL-US&MRI), ``_reclassification.csv`` (NRI,
    IDI), ``_text.md`` and ``figures/<analysis>.png``; without notebook 05's files for the analysis nothing is
    written and these files of an earlier run are removed."""
    outputs = [run.root / rel for rel in _ADDED_OUTPUTS if Path(rel).name.startswith(analysis)]
    test = load_added_predictions(run.predictions, analysis=analysis, cohort="test")
    if test is None:
        remove_stale(*outputs)
        return []
    n_dl = len(pd.read_csv(run.predictions / "fusion_test.csv"))
    if len(test[REFERENCE_MODEL]) < n_dl:
        notice(f"{analysis}: {len(test[REFERENCE_MODEL])} of {n_dl} test patients have every model's prediction.")
    cohorts = [(test, compare_added(test, analysis=analysis, cohort="test", level=level))]
    ext = load_added_predictions(run.predictions, analysis=analysis, cohort="external")
    if ext is not None and ext[REFERENCE_MODEL]["her2"].value_counts().reindex([0, 1], fill_value=0).min() >= 2:
        cohorts.append((ext, compare_added(ext, analysis=analysis, cohort="external", level=level)))
    elif ext is not None:
        notice(f"{analysis}: the external cohort lacks 2 patients of each class; it is not compared.")
    comps = [c for _, c in cohorts]
    t = run.tables
    files = [
        write_csv(t / f"{analysis}_auc.csv", pd.concat([c.auc for c in comps], ignore_index=True)),
        write_csv(t / f"{analysis}_delong.csv", pd.concat([c.delong for c in comps], ignore_index=True)),
        write_csv(
            t / f"{analysis}_reclassification.csv", pd.concat([c.reclassification for c in comps], ignore_index=True)
        ),
        write_text(t / f"{analysis}_text.md", "\n\n".join(c.text for c in comps) + "\n"),
    ]
    selected = pd.read_csv(t / "radiomics_features_selected.csv") if analysis == "radiomics" else None
    n_folds = len(pd.read_csv(t / "radiomics_folds.csv")) if analysis == "radiomics" else 0
    fig = run.figures / f"{analysis}.png"
    plot_added_value(cohorts, selected=selected, n_folds=n_folds, path=fig, dpi=dpi)
    return files + [fig]


def _evaluate_external(run: RunDirs, preds: dict, *, dpi: int, n_bins: int, **options) -> list:
    """The external validation cohort (``{prefix}_external.csv`` of the evaluated models): the test cohort's tables
    and figures under ``tables/external``, ``figures/external``, and the unpaired DeLong comparison of each model's
    test and external AUC (``tables/internal_vs_external.csv``, ``figures/internal_vs_external.png``). Without
    external predictions nothing is written and these files of an earlier run are removed."""
    keys = [k for k in preds if k in available_models(run.predictions, cohort="external")]
    ext = load_predictions(run.predictions, keys, models_dir=run.models, cohort="external") if keys else {}
    counts = next(iter(ext.values())).test["her2"].value_counts() if ext else pd.Series(dtype=int)
    if not keys or counts.reindex([0, 1], fill_value=0).min() < 2:
        if keys:
            notice(
                f"The external cohort has {counts.get(1, 0)} HER2-positive and {counts.get(0, 0)} HER2-negative "
                "patients; its AUCs and DeLong tests need at least 2 of each: it is not evaluated."
            )
        remove_stale(*(run.root / rel for rel in _EXTERNAL_OUTPUTS))
        return []
    res = evaluate_models(ext, cohort="external", n_bins=n_bins, **options)
    both = internal_external_table(preds, ext)
    text = res.text + "\n" + internal_external_paragraph(both)
    files = _write_cohort(
        ext,
        res,
        run.tables / "external",
        run.figures / "external",
        text=text,
        n_bins=n_bins,
        dpi=dpi,
        cohort="external",
    )
    files.append(write_csv(run.tables / "internal_vs_external.csv", both))
    plot_internal_external(preds, ext, both, path=run.figures / "internal_vs_external.png", dpi=dpi)
    return files + [run.figures / "internal_vs_external.png"]


def _write_cohort(
    preds: dict, res: EvaluationResult, tdir, fdir, *, text: str, n_bins: int, dpi: int, cohort: str = "test"
) -> list:
    """One evaluation cohort's tables (performance, fold models, DeLong, calibration, decision curve, Results
    text) in ``tdir`` and figures (ROC + SVG, performance, calibration, decision curve) in ``fdir``."""
    files = [
        write_csv(tdir / "performance.csv", res.performance),
        write_csv(tdir / "performance_fold_models.csv", res.fold_models),
        write_csv(tdir / "delong.csv", res.delong),
        write_csv(tdir / "calibration.csv", res.calibration),
        write_csv(tdir / "decision_curve.csv", res.decision),
        write_text(tdir / "results_text.md", text),
    ]
    plot_roc(preds, res.performance, fdir / "roc.png", dpi=dpi, cohort=cohort)
    plot_performance(res.performance, fdir / "performance.png", dpi=dpi, cohort=cohort)
    plot_calibration(preds, fdir / "calibration.png", n_bins=n_bins, dpi=dpi, cohort=cohort)
    plot_decision_curve(preds, fdir / "decision_curve.png", dpi=dpi, cohort=cohort)
    names = ("roc.png", "performance.png", "calibration.png", "decision_curve.png", "roc.svg")
    return files + [fdir / n for n in names]


def _run_class_evaluation(
    run: RunDirs, t: Task, keys: Sequence[str], *, level: float, n_boot: int, seed: int, dpi: int
) -> ClassEvaluationResult:
    """The class-task branch of :func:`run_evaluation`."""
    preds = load_class_predictions(run.predictions, t, keys, models_dir=run.models)
    res = evaluate_classes(preds, t, level=level, n_boot=n_boot, seed=seed)
    tdir, fdir = run.tables, run.figures
    files = [
        write_csv(tdir / "class_auc.csv", res.class_auc),
        write_csv(tdir / "class_metrics.csv", res.class_metrics),
        write_csv(tdir / "decision_rules.csv", res.decision_rules),
        write_csv(tdir / "confusion.csv", res.confusion),
        write_csv(tdir / "low_vs_zero_auc.csv", res.low_vs_zero),
        write_csv(tdir / "class_delong.csv", res.comparisons),
        write_text(tdir / "results_text.md", res.text),
    ]
    figs = []
    if t.n_classes == 2:  # low-vs-zero: its one ROC is roc_low_vs_zero.png
        remove_stale(fdir / "roc_classes.png", fdir / "roc_classes.svg")
    else:
        plot_roc_classes(preds, res.class_auc, fdir / "roc_classes.png", class_metrics=res.class_metrics, dpi=dpi)
        figs.append(fdir / "roc_classes.png")
    plot_confusion_matrices(res.confusion, classes=t.classes, path=fdir / "confusion_matrices.png", dpi=dpi)
    plot_roc_low_vs_zero(preds, res.low_vs_zero, fdir / "roc_low_vs_zero.png", class_metrics=res.class_metrics, dpi=dpi)
    figs += [fdir / "confusion_matrices.png", fdir / "roc_low_vs_zero.png"]
    files += figs + [f.with_suffix(".svg") for f in figs]
    return dataclasses.replace(res, files=tuple(files))


def evaluate_repetitions(
    run: RunDirs, *, level: float = 0.95, alpha: float = 0.05, dpi: int = 300
) -> RepeatedCVResult | None:
    """The repeated cross-validation's part of notebook 06 (:func:`her2lib.evaluate_repeats.evaluate_repeats`).

    Reads the prediction files of every repetition notebook 02 set up (:meth:`RunDirs.repeats`; repetition ``r >=
    1`` in ``predictions/repeats/r{r}``) for the models the single run has. Writes ``tables/repeats_auc.csv`` (test
    and OOF AUC per repetition and model), ``repeats_delong.csv`` (paired DeLong per repetition and pair),
    ``repeats_summary.csv`` (mean, SD, percentiles beside the single run), ``repeats_text.md`` and
    ``figures/repeats.png``.

    Parameters
    ----------
    run : RunDirs
    level : float
        Central share of the percentile interval (0.95: 2.5th-97.5th percentiles).
    alpha : float
        DeLong P values are counted below it.
    dpi : int
        PNG resolution.

    Returns
    -------
    RepeatedCVResult or None
        None for a single cross-validation (``n_repeats = 1``): nothing is written, and these files of an earlier
        repeated run in the same folder are removed.
    """
    repeats = run.repeats()
    if len(repeats) < 2:
        remove_stale(*(run.root / rel for rel in _REPEAT_OUTPUTS))
        return None
    keys = models_to_evaluate(run, quiet=True)
    per_repeat = {}
    for r in repeats:
        rep = run.repeat(r)
        missing = [k for k in keys if k not in available_models(rep.predictions)]
        if missing:
            raise DataError(
                f"{rep.predictions}: repetition {r} has no predictions of {[model_label(k) for k in missing]}; "
                "run notebooks 03-05 again (they train and fuse every repetition notebook 02 set up)."
            )
        per_repeat[r] = load_predictions(rep.predictions, keys, models_dir=rep.models)
    res = evaluate_repeats(per_repeat, level=level, alpha=alpha)
    tdir = run.tables
    write_csv(tdir / "repeats_auc.csv", res.auc)
    write_csv(tdir / "repeats_delong.csv", res.delong)
    write_csv(tdir / "repeats_summary.csv", res.summary)
    write_text(tdir / "repeats_text.md", res.text)
    plot_repeats(res, run.figures / "repeats.png", dpi=dpi)
    return res
