"""Cross-validation of one model: the fold models, their out-of-fold and test predictions, the prediction files,
and loading a trained fold model back.

Science layer.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..contract import (
    DL_MODELS,
    MODELS,
    PREDICTION_COLUMNS,
    SELECTION_SETS,
    SELECTIONS,
    TEST_FOLD_COLUMNS,
    Task,
    class_codes,
    class_prediction_columns,
    class_proba,
    class_test_fold_columns,
    write_prediction_files,
)
from ..contract import task as _task
from ..errors import DataError, ParameterError, UndefinedMetricWarning
from ..io import write_csv, write_json
from ..models import ModelConfig, build_model, config_from_dict, config_to_dict
from ..options import look_up_option
from ..transforms import DEFAULT_AUGMENT, AugmentSpec, _epoch_seed
from .config import TrainConfig, split_config_dict
from .executors import FoldJob, fit_job, train_folds
from .folds import _check_cohort, inner_split
from .loop import EpochHook, FoldResult, fit_fold
from .runtime import _memory_format, _use_cl, class_epoch_metrics, epoch_metrics, predict_proba, resolve_device

__all__ = [
    "SELECTIONS",
    "SELECTION_SETS",
    "CVResult",
    "run_cv",
    "run_repeated_cv",
    "load_fold_model",
    "write_predictions",
    "oof_performance",
]


@dataclass
class CVResult:
    """Predictions and logs of a cross-validated model.

    Attributes
    ----------
    oof : pandas.DataFrame
        One row per training patient: ``patient_id, split, fold, her2, p_her2`` (the fold model that did not
        train on the patient's fold); for a class task :func:`~her2lib.contract.class_prediction_columns`
        (``her2_class`` and one probability column per class).
    test : pandas.DataFrame
        One row per test patient, ``fold = -1``, ``p_her2`` = mean of the fold models (for the AUC and curves).
    history : pandas.DataFrame
        Per fold and (1-based) epoch: ``train_loss`` and the selection set's ``val_loss, val_auc, val_accuracy,
        val_recall, val_f1``, ``lr``.
    summary : pandas.DataFrame
        Per fold: the selection protocol, best epoch (1-based), its selection-set metrics, and the AUC of the
        kept model on the held-out fold (``heldout_auc``).
    test_folds : pandas.DataFrame
        Every fold model's test probabilities, :data:`~her2lib.contract.TEST_FOLD_COLUMNS` (long format,
        ``model_fold`` = fold of the model), sorted by patient then model fold.
    external, external_folds : pandas.DataFrame or None
        As ``test`` and ``test_folds`` for the external validation cohort (``split == "external"``); None when the
        cohort has none.
    selection : str
        ``"inner"`` or ``"heldout"`` (:data:`SELECTIONS`).
    task : str
        The task's key (:data:`her2lib.contract.TASKS`).
    """

    oof: pd.DataFrame
    test: pd.DataFrame
    history: pd.DataFrame
    summary: pd.DataFrame
    test_folds: pd.DataFrame | None = None
    selection: str = "inner"
    task: str = "binary"
    external: pd.DataFrame | None = None
    external_folds: pd.DataFrame | None = None


def _checked_inputs(
    cohort: pd.DataFrame, inputs, model_cfg: ModelConfig, folds: pd.Series
) -> tuple[torch.Tensor, pd.Series, np.ndarray]:
    """The inputs as a float32 tensor, the folds aligned with ``cohort`` and the training-row mask."""
    _check_cohort(cohort, "run_cv")
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    if x.shape[0] != len(cohort) or tuple(x.shape[1:]) != tuple(model_cfg.input_shape):
        raise DataError(
            f"run_cv: inputs have shape {tuple(x.shape)}; expected ({len(cohort)}, "
            f"{', '.join(map(str, model_cfg.input_shape))}). Fix: preprocess with the size of the "
            f"config (image_size={model_cfg.image_size})."
        )
    if not torch.isfinite(x).all():
        raise DataError("run_cv: inputs contain NaN/inf.")
    folds = folds.loc[cohort.index].astype(int)
    is_train = (cohort["split"] == "train").to_numpy()
    if (folds[~is_train] != -1).any() or (folds[is_train] < 0).any():
        raise DataError(
            "run_cv: folds must be -1 for test patients and >= 0 for training patients; use her2lib.train.assign_folds."
        )
    return x, folds, is_train


def _fold_sets(
    rows: pd.DataFrame,
    is_train: np.ndarray,
    fvals: np.ndarray,
    k: int,
    *,
    selection: str,
    inner_fraction: float,
    seed: int,
    label: str = "her2",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Row indices of fold ``k``'s fit set, selection set and held-out fold, and the fingerprint extra."""
    tr = np.flatnonzero(is_train & (fvals != k))
    va = np.flatnonzero(is_train & (fvals == k))
    if selection == "inner":
        inner_seed = _epoch_seed(seed, k, 10**6, 3) % (2**32 - 1)
        fit_i, sel_i = inner_split(rows.iloc[tr], inner_fraction, inner_seed, label=label)
        fit_idx, sel_idx = tr[fit_i], tr[sel_i]
    else:
        fit_idx, sel_idx = tr, va
    extra = {
        "selection": selection,
        "inner_fraction": inner_fraction if selection == "inner" else None,
        "heldout": rows.iloc[va]["patient_id"].tolist(),
        "heldout_her2": rows.iloc[va][label].tolist(),
    }
    return fit_idx, sel_idx, va, extra


def _fold_model(model_cfg: ModelConfig, training: TrainConfig, res: FoldResult, dev: torch.device) -> nn.Module:
    model = build_model(model_cfg)
    model.load_state_dict(res.state_dict)
    model = model.to(dev)
    if _use_cl(training, dev):
        model = model.to(memory_format=_memory_format(model_cfg.spatial_dims))
    return model


def _summary_row(k: int, res: FoldResult, selection: str, n: tuple[int, int, int], part: pd.DataFrame, t: Task) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if t.is_binary:
            heldout_auc = epoch_metrics(part["her2"].to_numpy(), part["p_her2"].to_numpy())["auc"]
        else:
            heldout_auc = class_epoch_metrics(class_codes(part, t), class_proba(part, t))["auc"]
    return {
        "fold": k,
        "selection": SELECTIONS[selection],
        "best_epoch": res.best_epoch,
        "n_train": n[0],
        "n_select": n[1],
        "n_heldout": n[2],
        **{
            c.replace("val_", "select_"): res.best_metrics.get(c)
            for c in ("val_auc", "val_accuracy", "val_recall", "val_f1", "val_loss")
        },
        "heldout_auc": heldout_auc,
    }


def _set_proba(frame: pd.DataFrame, t: Task, p: np.ndarray) -> None:
    """In place: the probability column(s) of task ``t`` from ``p`` (``(n,)`` binary, ``(n, K)`` otherwise)."""
    if t.is_binary:
        frame["p_her2"] = p
    else:
        for j, col in enumerate(t.probability_columns):
            frame[col] = p[:, j] if len(p) else np.zeros(0)


def _oof_table(oof_parts: list, t: Task) -> pd.DataFrame:
    """The OOF table, sorted by patient."""
    cols = list(PREDICTION_COLUMNS) if t.is_binary else list(class_prediction_columns(t))
    return pd.concat(oof_parts).sort_values("patient_id").reset_index(drop=True)[cols]


def _assemble(
    rows: pd.DataFrame, test_idx: np.ndarray, test_probs: list, test_fold_parts: list, t: Task
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold-mean table and per-fold-model table of one evaluation split (test or external), sorted by patient."""
    cols = list(PREDICTION_COLUMNS) if t.is_binary else list(class_prediction_columns(t))
    fold_cols = list(TEST_FOLD_COLUMNS) if t.is_binary else list(class_test_fold_columns(t))
    test = rows.iloc[test_idx].copy()
    test["fold"] = -1
    empty = np.zeros(0) if t.is_binary else np.zeros((0, t.n_classes))  # a cohort without test patients
    _set_proba(test, t, np.mean(test_probs, axis=0) if test_probs else empty)
    test = test.sort_values("patient_id").reset_index(drop=True)[cols]
    test_folds = (
        pd.concat(test_fold_parts).sort_values(["patient_id", "model_fold"]).reset_index(drop=True)[fold_cols]
        if test_fold_parts
        else pd.DataFrame(columns=fold_cols)
    )
    return test, test_folds


def _label_rows(cohort: pd.DataFrame, t: Task, model_cfg: ModelConfig) -> tuple[pd.DataFrame, str]:
    """``patient_id, split`` and the task's label column(s) of every patient, and the column of label codes
    (``her2``; for a class task ``her2_class`` and its codes ``y``)."""
    if int(model_cfg.num_classes) != t.n_classes:
        raise ParameterError(
            f"run_cv: task={t.key!r} has {t.n_classes} classes {list(t.classes)} but the model has "
            f"num_classes={model_cfg.num_classes}; build the config with num_classes={t.n_classes}."
        )
    if t.is_binary:
        return cohort[["patient_id", "split", "her2"]].reset_index(drop=True), "her2"
    rows = cohort[["patient_id", "split", "her2_class"]].reset_index(drop=True)
    rows["y"] = class_codes(rows, t)
    return rows, "y"


def run_cv(
    cohort: pd.DataFrame,
    inputs,
    model_cfg: ModelConfig,
    training: TrainConfig,
    folds: pd.Series,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    device: str = "auto",
    augment: AugmentSpec | None = DEFAULT_AUGMENT,
    resume: bool = True,
    checkpoint_every: int = 1,
    progress: bool = True,
    epoch_hook: EpochHook | None = None,
    selection: str = "inner",
    inner_fraction: float = 0.2,
    task: str | Task = "binary",
    executor: str = "local",
    ray_address: str | None = None,
    workers: int = 0,
) -> CVResult:
    """Cross-validate one model on the training cohort and predict the test cohort.

    Parameters
    ----------
    cohort : pandas.DataFrame
        ``patient_id, split, her2`` (others ignored), one row per patient.
    inputs : np.ndarray or torch.Tensor
        float32 ``(n_patients, *model_cfg.input_shape)`` in ``cohort`` row order (from
        :func:`her2lib.roi.preprocess_cohort`).
    model_cfg : DLUSConfig or DLMRIConfig
    training : TrainConfig
    folds : pandas.Series
        From :func:`her2lib.train.assign_folds` / :func:`her2lib.train.read_folds`, indexed like ``cohort``.
    out_dir : path
        Model folder (``run.models / "dl_us"`` or ``"dl_mri"``): ``config.json`` (model and training
        configuration, seed, folds, augmentation, selection), ``fold{k}.pt``, ``metrics.csv``.
    seed, device, augment, resume, checkpoint_every, progress, epoch_hook
        See :func:`fit_fold`.
    selection : {"inner", "heldout"}
        Where each fold's epoch is chosen: ``"inner"`` (default) on a stratified inner validation split of the
        fold's training part (:func:`inner_split`, ``inner_fraction`` of it, seed ``(seed, fold)``), so the
        held-out fold's OOF probabilities are honest; ``"heldout"`` on the held-out fold itself (the paper's
        protocol; optimistic OOF).
    inner_fraction : float
        Share of the fold's training part used as the inner selection set (``selection="inner"`` only).
    task : str or Task
        ``"binary"`` (labels ``her2``), or a class task (labels ``her2_class``, every patient of ``cohort`` must have
        one of the task's classes: :func:`her2lib.data.task_cohort`); ``model_cfg.num_classes`` must be its number
        of classes. Folds, inner split and epoch selection (macro AUC for three classes) use the task's labels.
    executor : {"local", "processes", "ray"}
        Where the fold models train (:mod:`her2lib.train.executors`): one after another in this process, side by
        side in worker processes (the local executor's outputs at the workers' thread count), or as Ray tasks first
        (same outputs, byte for byte); ``jobs.json`` in ``out_dir`` records the executor, the resources and each
        fold's host, device, threads and wall time.
    ray_address : str, optional
        ``executor="ray"``: None/"" starts a local Ray for this call; "auto" or "host:port" joins a cluster.
    workers : int
        ``executor="processes"``: worker processes, 0 = one per core (:func:`her2lib.train.executors.resolve_workers`).

    Returns
    -------
    CVResult
    """
    plan = _plan_cv(
        cohort,
        inputs,
        model_cfg,
        training,
        folds,
        out_dir,
        seed=seed,
        device=device,
        augment=augment,
        resume=resume,
        checkpoint_every=checkpoint_every,
        progress=progress,
        epoch_hook=epoch_hook,
        selection=selection,
        inner_fraction=inner_fraction,
        task=task,
    )
    record = train_folds(plan.jobs, executor=executor, ray_address=ray_address, workers=workers, progress=progress)
    return _finish_cv(plan, record)


def run_repeated_cv(
    cohort: pd.DataFrame,
    inputs,
    model_cfg: ModelConfig,
    training: TrainConfig,
    folds: Sequence[pd.Series],
    out_dirs: Sequence[str | os.PathLike],
    *,
    seeds: Sequence[int],
    repeats: Sequence[int] | None = None,
    epoch_hooks: Sequence[EpochHook | None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    workers: int = 0,
    progress: bool = True,
    **options,
) -> list[CVResult]:
    """Repeated cross-validation: :func:`run_cv` once per repetition, with every repetition's fold jobs sent to the
    executor together (a Ray cluster runs all repetitions x folds side by side).

    Parameters
    ----------
    cohort, inputs, model_cfg, training
        As :func:`run_cv`, shared by the repetitions.
    folds : sequence of pandas.Series
        One fold assignment per repetition (:func:`her2lib.train.assign_folds` with
        :func:`her2lib.train.repeat_seed`).
    out_dirs : sequence of path
        One model folder per repetition (each gets :func:`run_cv`'s files).
    seeds : sequence of int
        One training seed per repetition.
    repeats : sequence of int, optional
        The repetitions' numbers (default ``0 .. n - 1``), recorded with each job (``jobs.json``).
    epoch_hooks : sequence of EpochHook or None, optional
        One per repetition (e.g. progress lines naming the repetition).
    executor, ray_address, workers, progress
        As :func:`run_cv`; all repetitions' jobs form one submission (Ray, or the worker processes).
    **options
        The other keywords of :func:`run_cv` (``device``, ``augment``, ``resume``, ``checkpoint_every``,
        ``selection``, ``inner_fraction``, ``task``).

    Returns
    -------
    list of CVResult
        In the order of ``folds``; each repetition's result is what :func:`run_cv` with its folds, seed and folder
        returns (one repetition is :func:`run_cv` itself).
    """
    n = len(folds)
    hooks = list(epoch_hooks) if epoch_hooks is not None else [None] * n
    ids = [int(r) for r in repeats] if repeats is not None else list(range(n))
    if not n or {len(out_dirs), len(seeds), len(hooks), len(ids)} != {n} or len(set(ids)) != n:
        raise ParameterError(
            f"run_repeated_cv: {n} fold assignments, {len(out_dirs)} folders, {len(seeds)} seeds, {len(hooks)} "
            f"epoch hooks and repetitions {ids}; give one of each per repetition (at least one), distinct numbers."
        )
    plans = [
        _plan_cv(
            cohort, inputs, model_cfg, training, f, o, seed=s, progress=progress, epoch_hook=h, repeat=r, **options
        )
        for r, f, o, s, h in zip(ids, folds, out_dirs, seeds, hooks)
    ]
    jobs = [job for plan in plans for job in plan.jobs]
    record = train_folds(jobs, executor=executor, ray_address=ray_address, workers=workers, progress=progress)
    return [
        _finish_cv(plan, {**record, "jobs": [j for j in record["jobs"] if j.get("repeat", 0) == plan.repeat]})
        for plan in plans
    ]


@dataclass
class _CVPlan:
    """One repetition's cross-validation before training: its fold jobs and what the merge needs."""

    repeat: int
    jobs: list[FoldJob]
    sets: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    rows: pd.DataFrame
    x: torch.Tensor
    test_idx: np.ndarray
    ext_idx: np.ndarray
    task: Task
    model_cfg: ModelConfig
    training: TrainConfig
    device: torch.device
    selection: str
    out_dir: Path


def _plan_cv(
    cohort: pd.DataFrame,
    inputs,
    model_cfg: ModelConfig,
    training: TrainConfig,
    folds: pd.Series,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    device: str = "auto",
    augment: AugmentSpec | None = DEFAULT_AUGMENT,
    resume: bool = True,
    checkpoint_every: int = 1,
    progress: bool = True,
    epoch_hook: EpochHook | None = None,
    selection: str = "inner",
    inner_fraction: float = 0.2,
    task: str | Task = "binary",
    repeat: int = 0,
) -> _CVPlan:
    """Validate, write ``config.json`` and build the fold jobs of one cross-validation (see :func:`run_cv`)."""
    look_up_option(selection, SELECTIONS, name="selection")
    t = _task(task)
    x, folds, is_train = _checked_inputs(cohort, inputs, model_cfg, folds)
    fold_ids = [int(k) for k in sorted(folds[is_train].unique())]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, label = _label_rows(cohort, t, model_cfg)
    record = {
        "config": config_to_dict(model_cfg),
        "training": training.to_dict(),
        "seed": seed,
        "folds": fold_ids,
        "augment": asdict(augment) if augment else None,
        "selection": selection,
        "selection_label": SELECTIONS[selection],
        "inner_fraction": inner_fraction if selection == "inner" else None,
    }
    write_json(out_dir / "config.json", record if t.is_binary else {**record, "task": t.key, "classes": t.classes})
    dev = resolve_device(device)
    fvals = folds.to_numpy()
    sets, jobs = {}, []
    for k in fold_ids:
        fit_idx, sel_idx, va, extra = _fold_sets(
            rows, is_train, fvals, k, selection=selection, inner_fraction=inner_fraction, seed=seed, label=label
        )
        if not t.is_binary:  # the class tasks' labels are codes of their classes (the binary fingerprint is 0.1's)
            extra["task"] = t.key
        sets[k] = (fit_idx, sel_idx, va)
        options = {"out_dir": out_dir, "seed": seed, "device": dev, "augment": augment, "resume": resume}
        options |= {"checkpoint_every": checkpoint_every, "progress": progress, "epoch_hook": epoch_hook}
        options |= {"fingerprint_extra": extra, "label": label}
        jobs.append(FoldJob(k, (model_cfg, training, x, rows), options, repeat=repeat, index=(fit_idx, sel_idx)))
    test_idx = np.flatnonzero((rows["split"] == "test").to_numpy())
    ext_idx = np.flatnonzero((rows["split"] == "external").to_numpy())
    return _CVPlan(repeat, jobs, sets, rows, x, test_idx, ext_idx, t, model_cfg, training, dev, selection, out_dir)


def _finish_cv(plan: _CVPlan, record: dict) -> CVResult:
    """Train what the executor left (the local loop), predict, assemble and write ``metrics.csv`` and ``jobs.json``.

    ``record`` is :func:`train_folds`'s record of this plan's jobs: a fold it holds was trained by a Ray task and is
    found here by its fingerprint.
    """
    t, dev, training, rows, x = plan.task, plan.device, plan.training, plan.rows, plan.x
    record = {**record, "jobs": list(record["jobs"])}
    ray_done = {j["fold"] for j in record["jobs"]}
    oof_parts, hist, summ = [], [], []
    evals = {"test": (plan.test_idx, [], []), "external": (plan.ext_idx, [], [])}  # rows, probabilities, fold tables
    multi = not t.is_binary
    for job in plan.jobs:
        k = job.fold
        fit_idx, sel_idx, va = plan.sets[k]
        if k in ray_done:  # trained by a Ray task or a worker process: this call finds fold{k}.pt by its fingerprint
            res = fit_fold(*job.fit_args(), fold=k, **{**job.options, "resume": True})
        else:
            res, rec = fit_job(job, num_threads=torch.get_num_threads())
            record["jobs"].append(rec)
        model = _fold_model(plan.model_cfg, training, res, dev)
        part = rows.iloc[va].copy()
        part["fold"] = k
        _set_proba(part, t, predict_proba(model, x[va], training=training, device=dev, all_classes=multi))
        oof_parts.append(part)
        for idx, probs, fold_parts in evals.values():
            if len(idx):
                pt = predict_proba(model, x[idx], training=training, device=dev, all_classes=multi)
                probs.append(pt)
                tf = rows.iloc[idx][["patient_id", "split", t.label_column]].copy()
                tf["model_fold"] = k
                _set_proba(tf, t, pt)
                fold_parts.append(tf)
        hist.extend(res.history)
        summ.append(_summary_row(k, res, plan.selection, (len(fit_idx), len(sel_idx), len(va)), part, t))
    test, test_folds = _assemble(rows, *evals["test"], t)
    external, external_folds = _assemble(rows, *evals["external"], t) if len(plan.ext_idx) else (None, None)
    history = pd.DataFrame(hist)
    write_csv(plan.out_dir / "metrics.csv", history)
    write_json(plan.out_dir / "jobs.json", record)
    return CVResult(
        oof=_oof_table(oof_parts, t),
        test=test,
        history=history,
        summary=pd.DataFrame(summ),
        test_folds=test_folds,
        selection=plan.selection,
        task=t.key,
        external=external,
        external_folds=external_folds,
    )


def load_fold_model(models_dir: str | os.PathLike, fold: int, device: str = "cpu") -> nn.Module:
    """The best model of one fold, in eval mode (for prediction and Grad-CAM).

    Parameters
    ----------
    models_dir : path
        A model folder written by :func:`run_cv` (``run.models / "dl_us"`` or ``"dl_mri"``), holding
        ``config.json`` and ``fold{k}.pt``.
    fold : int
    device : str

    Returns
    -------
    torch.nn.Module
    """
    models_dir = Path(models_dir)
    cfg_path, ck_path = models_dir / "config.json", models_dir / f"fold{fold}.pt"
    for p in (cfg_path, ck_path):
        if not p.exists():
            raise ParameterError(
                f"{p} does not exist; train the model first (notebooks 03/04) or check models_dir / fold."
            )
    try:  # split_config_dict: an earlier run's config.json also held the training settings
        cfg = config_from_dict(split_config_dict(json.loads(cfg_path.read_text(encoding="utf-8"))["config"])[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterError(
            f"{cfg_path}: not a model configuration her2lib can read ({exc}); re-run the training notebook "
            "(03_train_us / 04_train_mri) to rewrite this model folder."
        ) from exc
    cfg.checkpoint = None  # the fold file holds all weights
    model = build_model(cfg)
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    if not ck.get("complete"):
        raise ParameterError(f"{ck_path}: fold {fold} did not finish training; re-run the training notebook.")
    model.load_state_dict(ck["model"])
    return model.to(resolve_device(device)).eval()


def write_predictions(result: CVResult, predictions_dir: str | os.PathLike, prefix: str) -> list[Path]:
    """Write ``{prefix}_oof.csv``, ``{prefix}_test.csv`` (:data:`~her2lib.contract.PREDICTION_COLUMNS`; test =
    mean of the fold models) and ``{prefix}_test_folds.csv`` (:data:`~her2lib.contract.TEST_FOLD_COLUMNS`, each
    fold model's test probability), and for a cohort with an external validation split ``{prefix}_external.csv`` and
    ``{prefix}_external_folds.csv`` in the same formats (removed when it has none). ``prefix`` is a deep-learning
    model's prefix, ``"us"`` or ``"mri"``."""
    look_up_option(prefix, [MODELS[k].prefix for k in DL_MODELS], name="prefix")
    return write_prediction_files(
        predictions_dir,
        prefix,
        oof=result.oof,
        test=result.test,
        test_folds=result.test_folds,
        external=result.external,
        external_folds=result.external_folds,
    )


def oof_performance(result: CVResult | None, threshold: float = 0.5) -> dict[str, float] | None:
    """:func:`epoch_metrics` of the out-of-fold predictions of ``result`` (None when training was skipped); for a
    class task :func:`class_epoch_metrics` (macro AUC, accuracy, macro recall and F1 of the most probable class)."""
    if result is None:
        return None
    if result.task != "binary":
        t = _task(result.task)
        return class_epoch_metrics(class_codes(result.oof, t), class_proba(result.oof, t))
    return epoch_metrics(result.oof["her2"].to_numpy(), result.oof["p_her2"].to_numpy(), threshold)
