"""Stage of notebooks 03/04: cross-validate one modality's model, write its predictions, fold table and
learning curves, or skip it (with a notice) when the cohort lacks the modality.

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

import pandas as pd

from ..contract import PREDICTION_KINDS, Task, prediction_path
from ..contract import modality as _modality
from ..contract import model as _model
from ..contract import task as _task
from ..data import task_cohort
from ..errors import ParameterError
from ..figures.training import plot_learning_curves
from ..io import write_csv
from ..models import ModelConfig
from ..roi import PreprocessSpec, preprocess_cohort
from ..train import (
    SELECTION_SETS,
    CVResult,
    EpochHook,
    TrainConfig,
    read_folds,
    repeat_seed,
    run_repeated_cv,
    write_predictions,
)
from ..transforms import DEFAULT_AUGMENT, AugmentSpec
from ._common import RunDirs, log_progress, modality_present, notice, remove_stale

__all__ = ["train_modality"]


def train_modality(
    run: RunDirs,
    cohort: pd.DataFrame,
    modality: str,
    spec: PreprocessSpec,
    model_cfg: ModelConfig,
    training: TrainConfig,
    *,
    seed: int = 0,
    device: str = "auto",
    augment: AugmentSpec | None = DEFAULT_AUGMENT,
    resume: bool = True,
    checkpoint_every: int = 1,
    progress: bool = True,
    selection: str = "inner",
    inner_fraction: float = 0.2,
    task: str | Task = "binary",
    executor: str = "local",
    ray_address: str | None = None,
    workers: int = 0,
) -> CVResult | None:
    """Everything of notebooks 03/04 for one modality, or nothing when the cohort lacks that modality.

    Parameters
    ----------
    run : RunDirs
        Reads ``run.cache`` (ROIs of notebook 02) and ``run.predictions/folds.csv``; writes the fold models
        under ``run.models/dl_<modality>``, ``run.predictions/<modality>_{oof,test,test_folds}.csv``,
        ``run.tables/dl_<modality>_folds.csv`` and ``run.figures/learning_curve_<modality>.png``. With the
        repetitions notebook 02 set up (its ``n_repeats``; :meth:`RunDirs.repeats`), every repetition ``r >= 1``
        gets the same files in its folders (:meth:`RunDirs.repeat`), trained with seed
        :func:`her2lib.train.repeat_seed` ``(seed, r)``; all repetitions' fold jobs go to the executor together.
    cohort : pandas.DataFrame
        From :func:`her2lib.data.load_cohort`.
    modality : {"us", "mri"}
    spec : her2lib.roi.PreprocessSpec
        The ROI settings of notebook 02.
    model_cfg : DLUSConfig or DLMRIConfig
        The architecture (its kind must be the modality's model).
    training : TrainConfig
        How it is trained.
    seed, device, augment, resume, checkpoint_every, progress, selection, inner_fraction, executor, ray_address, workers
        As :func:`her2lib.train.run_cv`.
    task : str or Task
        ``"binary"``, ``"three-class"`` or ``"low-vs-zero"``: the patients trained and predicted
        (:func:`her2lib.data.task_cohort`), the classes (``model_cfg.num_classes`` must be their number) and the
        prediction files' columns (:func:`her2lib.contract.class_prediction_columns` for the class tasks).

    Returns
    -------
    CVResult or None
        Repetition 0's (the single run's) result, or None (after printing a notice and removing the files an
        earlier run in the same folder wrote for this modality, in every repetition's folders, so later notebooks
        cannot use them) when no patient has an image of ``modality``.
    """
    mod = _modality(modality)
    prefix = _model(mod.model).prefix
    outputs = []
    for rep in map(run.repeat, run.repeats()):
        outputs += [prediction_path(rep.predictions, prefix, kind) for kind in PREDICTION_KINDS]
        outputs += [rep.tables / f"{mod.model}_folds.csv", rep.figures / f"learning_curve_{modality}.png"]
    if not modality_present(cohort, modality, quiet=True):
        notice(
            f"No {mod.name} images in this cohort: {mod.label} is skipped (nothing is trained, no predictions "
            f"are written; the fusion and the later {mod.label} steps are skipped too)."
        )
        remove_stale(*outputs)
        return None
    if getattr(model_cfg, "kind", None) != mod.model:
        raise ParameterError(
            f"train_modality: modality={modality!r} trains {mod.model}, but the model "
            f"configuration is {type(model_cfg).__name__}."
        )
    t = _task(task)
    cohort = task_cohort(cohort, t)
    x, _, _ = preprocess_cohort(cohort, modality, spec, run.cache, progress=progress)
    repeats = run.repeats() if t.is_binary else [0]
    runs = [run.repeat(r) for r in repeats]
    folds = [read_folds(r.predictions / "folds.csv", cohort, label=t.label_column) for r in runs]
    print("inputs:", x.shape)
    if len(repeats) > 1:
        print(f"{len(repeats)} repetitions of the cross-validation (notebook 02's folds), seeds from seed={seed}")
    n_folds = int(folds[0][folds[0] >= 0].nunique())
    log_progress(run, "start", model=mod.label, total=len(repeats) * n_folds * training.epochs)
    hooks = [
        _epoch_reporter(run, mod.label, n_folds, training.epochs, selection, auc=_auc_name(t), repeat=(r, len(repeats)))
        for r in repeats
    ]
    results = run_repeated_cv(
        cohort,
        x,
        model_cfg,
        training,
        folds,
        [r.models / mod.model for r in runs],
        seeds=[repeat_seed(seed, r) for r in repeats],
        repeats=repeats,
        epoch_hooks=hooks,
        device=device,
        augment=augment,
        resume=resume,
        checkpoint_every=checkpoint_every,
        progress=progress,
        selection=selection,
        inner_fraction=inner_fraction,
        task=t,
        executor=executor,
        ray_address=ray_address or None,
        workers=workers,
    )
    log_progress(run, "end", model=mod.label)
    for r, result in zip(runs, results):
        _write_outputs(r, result, modality, t, selection=selection, epochs=training.epochs)
    return results[0]


def _write_outputs(run: RunDirs, result: CVResult, modality: str, t: Task, *, selection: str, epochs: int) -> None:
    """One repetition's prediction files, fold table and learning curves (in that repetition's folders)."""
    mod = _modality(modality)
    write_predictions(result, run.predictions, _model(mod.model).prefix)
    write_csv(run.tables / f"{mod.model}_folds.csv", result.summary)
    title = mod.label if t.is_binary else f"{mod.label}, {t.title}"
    plot_learning_curves(
        result.history,
        path=run.figures / f"learning_curve_{modality}.png",
        title=title,
        selection=selection,
        auc_label=_auc_name(t),
        epochs=epochs,
    )


def _auc_name(t: Task) -> str:
    """What the selection AUC is called: ``AUC``, or ``macro AUC`` (three classes)."""
    return "AUC" if t.n_classes == 2 else "macro AUC"


def _epoch_reporter(
    run: RunDirs,
    label: str,
    n_folds: int,
    epochs: int,
    selection: str,
    *,
    auc: str = "AUC",
    repeat: tuple[int, int] = (0, 1),
) -> EpochHook:
    """An epoch hook printing one line per epoch into the notebook and logging it for the batch runner;
    ``repeat = (r, n_repeats)`` names repetition ``r`` in the line when there are several."""
    where = SELECTION_SETS[selection]
    rep = f" repeat {repeat[0]}" if repeat[1] > 1 else ""

    def report(fold: int, epoch: int, row: dict) -> None:
        line = (
            f"{label}{rep} fold {fold} ({fold + 1}/{n_folds}) epoch {row['epoch']}/{epochs}: train loss "
            f"{row['train_loss']:.3f}, {where} loss {row['val_loss']:.3f}, {auc} {row['val_auc']:.3f}"
        )
        print(line, flush=True)
        log_progress(
            run,
            "epoch",
            model=label,
            fold=int(fold),
            n_folds=n_folds,
            epoch=int(row["epoch"]),
            epochs=epochs,
            train_loss=float(row["train_loss"]),
            val_loss=float(row["val_loss"]),
            val_auc=float(row["val_auc"]),
            auc_name=auc,
            line=line,
            **({"repeat": repeat[0], "n_repeats": repeat[1]} if repeat[1] > 1 else {}),
        )

    return report
