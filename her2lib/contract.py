"""her2lib's vocabulary: the names every layer agrees on, defined once.

Core layer (imports only :mod:`her2lib.errors`, :mod:`her2lib.options` and third-party libraries). What lives here:

* **paths**: :data:`REPO_ROOT` and :func:`resolve_path` (relative paths are relative to the repository root);
* **modalities** (``"us"``, ``"mri"``), their manifest columns and the paper's names (:data:`MODALITIES`);
* **the manifest**: required and path columns, the column order written by the importers, HER2 IHC and ISH codes;
* **models** (paper vocabulary): keys ``dl_us``, ``dl_mri``, ``dl_us_mri``, labels ``DL-US``, ``DL-MRI``,
  ``DL-US&MRI``, prediction-file prefixes ``us``, ``mri``, ``fusion`` (:data:`MODELS`), and the DeLong pairs;
* **prediction files**: their columns and their one reader/validator (:func:`read_predictions`,
  :func:`read_test_folds`);
* **tasks** (``binary``, ``three-class``, ``low-vs-zero``: :data:`TASKS`) and the prediction files of the class
  tasks (:func:`read_class_predictions`);
* **the paper's Tables 1-3** (``resources/tables_1_3.json``): their one loader, :func:`table_spec`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, ParameterError
from .io import write_csv
from .options import look_up_option

__all__ = [
    "REPO_ROOT",
    "resolve_path",
    "MODALITIES",
    "Modality",
    "modality",
    "PATH_COLUMNS",
    "REQUIRED_COLUMNS",
    "MANIFEST_HEAD",
    "SPLITS",
    "EVAL_SPLITS",
    "PREDICTION_KINDS",
    "PAPER_SPLITS",
    "SELECTIONS",
    "SELECTION_SETS",
    "HER2_IHC_CODES",
    "FISH_CODES",
    "HER2_CLASSES",
    "CONTINUOUS_COLUMNS",
    "Task",
    "TASKS",
    "task",
    "ModelKey",
    "MODELS",
    "model",
    "model_label",
    "DL_MODELS",
    "PAIRS",
    "PREDICTION_COLUMNS",
    "TEST_FOLD_COLUMNS",
    "prediction_path",
    "write_prediction_files",
    "validate_predictions",
    "read_predictions",
    "validate_test_folds",
    "read_test_folds",
    "class_prediction_columns",
    "class_test_fold_columns",
    "validate_class_predictions",
    "read_class_predictions",
    "validate_class_test_folds",
    "read_class_test_folds",
    "class_codes",
    "class_proba",
    "table_spec",
    "PAPER_TABLES",
]

# ----------------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------------
#: The repository (or source tree) root: relative paths in notebooks and profiles are relative to it.
REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | os.PathLike) -> Path:
    """Absolute path; a relative one is taken relative to :data:`REPO_ROOT`, whatever the working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


# ----------------------------------------------------------------------------------------------------------------
# Modalities and the manifest
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Modality:
    """One imaging modality: its manifest columns and the names the paper uses."""

    key: str  #: ``"us"`` or ``"mri"`` (also the prediction-file prefix of its model)
    image_column: str  #: manifest column of the image path
    mask_column: str  #: manifest column of the lesion-mask path
    name: str  #: in words (``"ultrasound"``, ``"MRI"``)
    model: str  #: its model's key (``"dl_us"``)
    label: str  #: its model's label (``"DL-US"``)
    notebook: str  #: the notebook that trains its model

    @property
    def columns(self) -> tuple[str, str]:
        """``(image_column, mask_column)``."""
        return self.image_column, self.mask_column


MODALITIES: dict[str, Modality] = {
    "us": Modality("us", "us_image", "us_mask", "ultrasound", "dl_us", "DL-US", "03_train_us"),
    "mri": Modality("mri", "mri_image", "mri_mask", "MRI", "dl_mri", "DL-MRI", "04_train_mri"),
}


def modality(key: str) -> Modality:
    """The :class:`Modality` ``key`` (``"us"`` or ``"mri"``); a ParameterError with a hint otherwise."""
    return look_up_option(key, MODALITIES, name="modality")


PATH_COLUMNS: tuple[str, ...] = ("us_image", "us_mask", "mri_image", "mri_mask")
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "split", "her2")
#: Column order of a manifest written by her2lib (descriptive columns follow).
MANIFEST_HEAD: tuple[str, ...] = REQUIRED_COLUMNS + PATH_COLUMNS
#: The manifest's ``split`` values: ``train`` (cross-validation, thresholds, fusion: everything fitted), ``test``
#: (the internal test cohort, as the paper's) and ``external`` (an external validation cohort: another site or
#: scanner, evaluated beside ``test``, never fitted on).
SPLITS: tuple[str, ...] = ("train", "test", "external")
#: The splits a model is evaluated on (:data:`SPLITS` without ``train``), in report order.
EVAL_SPLITS: tuple[str, ...] = ("test", "external")
#: The two cohorts of the paper's Tables 1-3 (an external cohort is described on its own).
PAPER_SPLITS: tuple[str, ...] = ("train", "test")
#: epoch-selection protocols of :func:`her2lib.train.run_cv` -> label written to the tables
SELECTIONS = {
    "inner": "inner validation split of the fold's training part (her2lib default)",
    "heldout": "held-out fold (paper protocol; OOF optimistic)",
}
#: the set each protocol scores epochs on, in a few words (figure titles, progress lines)
SELECTION_SETS = {"inner": "inner validation split", "heldout": "held-out fold"}
HER2_IHC_CODES: tuple[str, ...] = ("0", "1+", "2+", "3+")
FISH_CODES: tuple[str, ...] = ("positive", "negative", "not_done")
CONTINUOUS_COLUMNS: tuple[str, ...] = ("age", "mri_size_mm")
#: HER2 classes of the three-class question (ASCO/CAP): zero, low (IHC 1+, or 2+ with negative ISH), positive.
HER2_CLASSES: tuple[str, ...] = ("zero", "low", "positive")


# ----------------------------------------------------------------------------------------------------------------
# Tasks: which question the models answer
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One prediction task: its classes (label code ``j`` is ``classes[j]``) and the patients it concerns.

    Attributes
    ----------
    key : str
        ``"binary"`` (the paper's HER2-positive vs HER2-negative), ``"three-class"`` (HER2-zero, HER2-low,
        HER2-positive) or ``"low-vs-zero"`` (HER2-low vs HER2-zero among HER2-negative patients: the T-DXd question).
    classes : tuple of str
        Class names in label-code order. For ``binary`` ``("negative", "positive")`` (the ``her2`` column, 0/1);
        otherwise values of the cohort's ``her2_class`` column (:data:`HER2_CLASSES`).
    keep : tuple of str or None
        The ``her2_class`` values of the patients the task concerns (None: every patient).
    title : str
        The question in words (figure titles, notices).
    """

    key: str
    classes: tuple[str, ...]
    keep: tuple[str, ...] | None
    title: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        """True for the paper's task (``her2`` / ``p_her2`` prediction files); False for the class tasks."""
        return self.key == "binary"

    @property
    def label_column(self) -> str:
        """The cohort column the task's labels come from: ``her2`` (binary) or ``her2_class``."""
        return "her2" if self.is_binary else "her2_class"

    @property
    def probability_columns(self) -> tuple[str, ...]:
        """Prediction-file probability columns: ``("p_her2",)`` (binary) or ``p_<class>`` per class."""
        return ("p_her2",) if self.is_binary else tuple(f"p_{c}" for c in self.classes)


#: The tasks of the ``task`` notebook parameter.
TASKS: dict[str, Task] = {
    "binary": Task("binary", ("negative", "positive"), None, "HER2-positive vs HER2-negative"),
    "three-class": Task("three-class", HER2_CLASSES, None, "HER2-zero vs HER2-low vs HER2-positive"),
    "low-vs-zero": Task("low-vs-zero", ("zero", "low"), ("zero", "low"), "HER2-low vs HER2-zero (HER2-negative)"),
}


def task(key: str | Task) -> Task:
    """The :class:`Task` ``key`` (a :class:`Task` is returned as it is); a ParameterError with a hint otherwise."""
    return key if isinstance(key, Task) else look_up_option(key, TASKS, name="task")


# ----------------------------------------------------------------------------------------------------------------
# Models (the paper's names)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelKey:
    """One model of the paper: key, label and prediction-file prefix (``<prefix>_oof.csv``, ``<prefix>_test.csv``)."""

    key: str
    label: str
    prefix: str
    modalities: tuple[str, ...]


#: The paper's three models, in its order.
MODELS: dict[str, ModelKey] = {
    "dl_us": ModelKey("dl_us", "DL-US", "us", ("us",)),
    "dl_mri": ModelKey("dl_mri", "DL-MRI", "mri", ("mri",)),
    "dl_us_mri": ModelKey("dl_us_mri", "DL-US&MRI", "fusion", ("us", "mri")),
}
#: The two deep-learning models (one per modality); the third is their fusion.
DL_MODELS: tuple[str, ...] = ("dl_us", "dl_mri")
#: DeLong pairs in the paper's order (fusion vs US, fusion vs MRI, US vs MRI).
PAIRS: tuple[tuple[str, str], ...] = (("dl_us_mri", "dl_us"), ("dl_us_mri", "dl_mri"), ("dl_us", "dl_mri"))


def model(key: str) -> ModelKey:
    """The :class:`ModelKey` ``key``; a ParameterError with a hint otherwise."""
    return look_up_option(key, MODELS, name="model")


def model_label(key: str) -> str:
    """The paper's label of model ``key`` (``"dl_us"`` -> ``"DL-US"``); unknown keys are returned unchanged."""
    return MODELS[key].label if key in MODELS else key


# ----------------------------------------------------------------------------------------------------------------
# Prediction files
# ----------------------------------------------------------------------------------------------------------------
#: ``{prefix}_oof.csv`` / ``{prefix}_test.csv``: one row per patient.
PREDICTION_COLUMNS: tuple[str, ...] = ("patient_id", "split", "fold", "her2", "p_her2")
#: per-fold-model test predictions (``{us,mri,fusion}_test_folds.csv``), one row per test patient and fold model
TEST_FOLD_COLUMNS: tuple[str, ...] = ("patient_id", "split", "her2", "model_fold", "p_her2")


#: the kinds of prediction file (:func:`prediction_path`): training OOF, then per evaluation split the fold-model mean
#: and the per-fold-model table
PREDICTION_KINDS: tuple[str, ...] = ("oof", "test", "test_folds", "external", "external_folds")


def prediction_path(predictions_dir: str | os.PathLike, prefix: str, kind: str) -> Path:
    """``predictions_dir / f"{prefix}_{kind}.csv"`` with ``kind`` one of :data:`PREDICTION_KINDS` (``oof``,
    ``test``, ``test_folds``, ``external``, ``external_folds``)."""
    look_up_option(kind, PREDICTION_KINDS, name="kind")
    return Path(predictions_dir) / f"{prefix}_{kind}.csv"


def write_prediction_files(
    predictions_dir: str | os.PathLike,
    prefix: str,
    *,
    oof: pd.DataFrame,
    test: pd.DataFrame,
    test_folds: pd.DataFrame | None = None,
    external: pd.DataFrame | None = None,
    external_folds: pd.DataFrame | None = None,
) -> list[Path]:
    """Write one model's prediction files atomically (:func:`prediction_path` names): ``oof``, ``test``, and
    ``test_folds`` / ``external`` / ``external_folds`` when given. A table that is None removes the file an earlier
    run left in the folder (it is not this run's; without ``external`` both external files go). Returns the paths
    written."""
    tables = {"oof": oof, "test": test, "test_folds": test_folds, "external": external}
    tables["external_folds"] = external_folds if external is not None else None
    out = []
    for kind, table in tables.items():
        path = prediction_path(predictions_dir, prefix, kind)
        if table is not None:
            out.append(write_csv(path, table))
        else:
            path.unlink(missing_ok=True)
    return out


def _fold_problems(out: pd.DataFrame, source: str, problems: list[str]) -> pd.Series:
    """The ``fold`` column as numbers; appends to ``problems`` a non-integer fold, a test patient with a fold other
    than -1 and a training patient with a negative one."""
    fold = pd.to_numeric(out["fold"], errors="coerce")
    bad_fold = out.loc[fold.isna() | (fold != np.round(fold)), "patient_id"].tolist()
    if bad_fold:
        problems.append(f"{source}: fold must be an integer (patients {bad_fold[:10]}).")
    else:
        bad_test = out.loc[(out["split"] != "train") & (fold != -1), "patient_id"].tolist()
        bad_train = out.loc[(out["split"] == "train") & (fold < 0), "patient_id"].tolist()
        if bad_test:
            problems.append(f"{source}: test and external patients must have fold == -1 (patients {bad_test[:10]}).")
        if bad_train:
            problems.append(f"{source}: training patients need a fold >= 0 (patients {bad_train[:10]}).")
    return fold


def validate_predictions(df: pd.DataFrame, source: str = "predictions", split: str | None = None) -> pd.DataFrame:
    """Check one prediction table and return a clean copy.

    Parameters
    ----------
    df : DataFrame
        Columns ``patient_id, split, fold, her2, p_her2`` (extra columns are kept), one row per patient.
    source : str
        Name used in error messages (usually the file path).
    split : {"train", "test", "external"} or None
        If given, every row must belong to this split.

    Returns
    -------
    DataFrame
        Copy with ``patient_id`` as str, ``fold``/``her2`` as int, ``p_her2`` as float.

    Raises
    ------
    DataError
        Listing every problem (missing columns, duplicate patients, labels not 0/1, probabilities outside [0, 1],
        test rows with fold != -1, ...).
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; a prediction file needs the columns "
            f"{list(PREDICTION_COLUMNS)} (written by the 03/04/05 notebooks)."
        )
    out = df.copy()
    out["patient_id"] = out["patient_id"].astype(str)
    problems: list[str] = []
    dup = out.loc[out["patient_id"].duplicated(), "patient_id"].tolist()
    if dup:
        problems.append(f"{source}: duplicate patient_id {sorted(set(dup))[:10]}; one row per patient expected.")
    bad_split = out.loc[~out["split"].isin(SPLITS), "patient_id"].tolist()
    if bad_split:
        problems.append(f"{source}: split must be 'train', 'test' or 'external' (patients {bad_split[:10]}).")
    if split is not None:
        other = out.loc[out["split"] != split, "patient_id"].tolist()
        if other:
            problems.append(
                f"{source}: expected only split == {split!r} rows, but patients {other[:10]} are not; "
                "OOF files hold training patients, test files test patients."
            )
    her2 = pd.to_numeric(out["her2"], errors="coerce")
    bad_y = out.loc[~her2.isin([0, 1]), "patient_id"].tolist()
    if bad_y:
        problems.append(f"{source}: her2 must be 0 or 1 (patients {bad_y[:10]}).")
    p = pd.to_numeric(out["p_her2"], errors="coerce")
    bad_p = out.loc[~(np.isfinite(p) & (p >= 0) & (p <= 1)), "patient_id"].tolist()
    if bad_p:
        problems.append(f"{source}: p_her2 must be a finite probability in [0, 1] (patients {bad_p[:10]}).")
    fold = _fold_problems(out, source, problems)
    if len(out) == 0:
        problems.append(f"{source}: no rows.")
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {source}: " + " ".join(problems), problems)
    out["her2"] = her2.astype(int)
    out["p_her2"] = p.astype(float)
    out["fold"] = fold.astype(int)
    return out.reset_index(drop=True)


def read_predictions(path: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """Read and validate a prediction CSV (see :func:`validate_predictions`).

    Raises
    ------
    DataError
        If the file does not exist (names the notebook that writes it) or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"prediction file {path} not found; run the notebook that writes it first "
            "(03_train_us -> us_*.csv, 04_train_mri -> mri_*.csv, 05_fusion -> fusion_*.csv)."
        )
    df = pd.read_csv(path, dtype={"patient_id": str})
    return validate_predictions(df, source=str(path), split=split)


def validate_test_folds(
    df: pd.DataFrame, source: str = "test_folds", test: pd.DataFrame | None = None, *, atol: float = 1e-9
) -> pd.DataFrame:
    """Check a per-fold-model test prediction table and return a clean copy sorted by patient and model fold.

    Parameters
    ----------
    df : DataFrame
        Columns ``patient_id, split, her2, model_fold, p_her2`` (:data:`TEST_FOLD_COLUMNS`): one row per test
        patient and fold model.
    source : str
        Name used in error messages (usually the file path).
    test : DataFrame, optional
        The matching fold-mean prediction table (``{prefix}_test.csv``); if given, the patients and labels must
        agree and ``p_her2`` must be the mean over the fold models (to ``atol``), so mismatched files are caught.

    Raises
    ------
    DataError
        Listing every problem.
    """
    missing = [c for c in TEST_FOLD_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; a per-fold test file needs the columns "
            f"{list(TEST_FOLD_COLUMNS)} (written by the 03/04/05 notebooks)."
        )
    out = df.copy()
    out["patient_id"] = out["patient_id"].astype(str)
    problems: list[str] = []
    if len(out) == 0:
        problems.append(f"{source}: no rows.")
    first = out["split"].iloc[0] if len(out) else "test"
    odd = ~out["split"].isin(EVAL_SPLITS) | (out["split"] != first)
    if odd.any():
        problems.append(
            f"{source}: only test patients, or only external patients, belong here (patients "
            f"{out.loc[odd, 'patient_id'].tolist()[:10]})."
        )
    her2 = pd.to_numeric(out["her2"], errors="coerce")
    p = pd.to_numeric(out["p_her2"], errors="coerce")
    mf = pd.to_numeric(out["model_fold"], errors="coerce")
    if not her2.isin([0, 1]).all():
        problems.append(
            f"{source}: her2 must be 0 or 1 (patients {out.loc[~her2.isin([0, 1]), 'patient_id'].tolist()[:10]})."
        )
    bad_p = ~(np.isfinite(p) & (p >= 0) & (p <= 1))
    if bad_p.any():
        problems.append(
            f"{source}: p_her2 must be a finite probability in [0, 1] (patients "
            f"{out.loc[bad_p, 'patient_id'].tolist()[:10]})."
        )
    if mf.isna().any() or (mf < 0).any() or (mf != np.round(mf)).any():
        problems.append(f"{source}: model_fold must be an integer >= 0.")
    if not problems:
        out["her2"], out["p_her2"], out["model_fold"] = her2.astype(int), p.astype(float), mf.astype(int)
        dup = out.duplicated(["patient_id", "model_fold"])
        if dup.any():
            problems.append(
                f"{source}: patients {sorted(set(out.loc[dup, 'patient_id']))[:10]} appear twice for one model fold."
            )
        sets = out.groupby("patient_id")["model_fold"].apply(frozenset)
        if sets.nunique() > 1:
            ref = sets.mode().iloc[0]
            odd = sets[sets != ref].index.tolist()
            problems.append(
                f"{source}: patients {odd[:10]} lack predictions of some fold models (expected folds {sorted(ref)})."
            )
        if out.groupby("patient_id")["her2"].nunique().max() > 1:
            problems.append(f"{source}: a patient has different her2 labels across fold models.")
    if not problems and test is not None:
        mean = out.groupby("patient_id").agg(her2=("her2", "first"), p=("p_her2", "mean"))
        t = test.set_index("patient_id")
        if set(mean.index) != set(t.index):
            problems.append(
                f"{source}: patients differ from the fold-mean test file (only here: "
                f"{sorted(set(mean.index) - set(t.index))[:10]}, only there: "
                f"{sorted(set(t.index) - set(mean.index))[:10]})."
            )
        else:
            t = t.loc[mean.index]
            if (t["her2"].to_numpy() != mean["her2"].to_numpy()).any():
                problems.append(f"{source}: her2 labels differ from the fold-mean test file.")
            off = np.abs(t["p_her2"].to_numpy() - mean["p"].to_numpy()) > atol
            if off.any():
                problems.append(
                    f"{source}: the mean over fold models differs from p_her2 of the fold-mean test file "
                    f"for patients {mean.index[off].tolist()[:10]}; the files come from different runs. "
                    "Re-run the training notebook."
                )
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {source}: " + " ".join(problems), problems)
    return out.sort_values(["patient_id", "model_fold"], kind="mergesort").reset_index(drop=True)[
        list(TEST_FOLD_COLUMNS)
    ]


def read_test_folds(path: str | os.PathLike, test: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Read and validate ``{prefix}_test_folds.csv`` (:func:`validate_test_folds`); None when the file is absent
    (prediction files made elsewhere, or by her2lib 0.1)."""
    path = Path(path)
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"patient_id": str})
    return validate_test_folds(df, source=str(path), test=test)


# ----------------------------------------------------------------------------------------------------------------
# Prediction files of the class tasks (three-class, low-vs-zero)
# ----------------------------------------------------------------------------------------------------------------
#: rows of a class-task probability matrix must sum to 1 within this tolerance
PROBABILITY_SUM_ATOL = 1e-6


def class_prediction_columns(task_: str | Task) -> tuple[str, ...]:
    """``patient_id, split, fold, her2_class, p_<class>...`` of a class task's ``{prefix}_{oof,test}.csv``.

    >>> class_prediction_columns("three-class")
    ('patient_id', 'split', 'fold', 'her2_class', 'p_zero', 'p_low', 'p_positive')
    """
    t = _class_task(task_)
    return ("patient_id", "split", "fold", "her2_class") + t.probability_columns


def class_test_fold_columns(task_: str | Task) -> tuple[str, ...]:
    """``patient_id, split, her2_class, model_fold, p_<class>...`` of a class task's ``{prefix}_test_folds.csv``."""
    t = _class_task(task_)
    return ("patient_id", "split", "her2_class", "model_fold") + t.probability_columns


def _class_task(task_: str | Task) -> Task:
    t = task(task_)
    if t.is_binary:
        raise ParameterError(
            "the binary task's prediction files have the columns her2 / p_her2: use read_predictions / "
            "validate_predictions for them."
        )
    return t


def _class_problems(out: pd.DataFrame, t: Task, source: str, cols: tuple[str, ...]) -> list[str]:
    """Missing columns, an empty table, labels outside the task's classes, probabilities that are not a
    probability vector (finite, in [0, 1], summing to 1)."""
    missing = [c for c in cols if c not in out.columns]
    if missing:
        return [
            f"{source}: missing column(s) {missing}; a {t.key} prediction file needs the columns {list(cols)} "
            "(written by the 03/04/05 notebooks with the same task)."
        ]
    problems = [f"{source}: no rows."] if len(out) == 0 else []
    bad_y = out.loc[~out["her2_class"].isin(t.classes), "patient_id"].tolist()
    if bad_y:
        problems.append(f"{source}: her2_class must be one of {list(t.classes)} (patients {bad_y[:10]}).")
    p = out[list(t.probability_columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad_p = ~(np.isfinite(p) & (p >= 0) & (p <= 1)).all(axis=1)
    bad_p |= np.abs(np.nan_to_num(p).sum(axis=1) - 1.0) > PROBABILITY_SUM_ATOL
    if bad_p.any():
        problems.append(
            f"{source}: {', '.join(t.probability_columns)} must be probabilities in [0, 1] summing to 1 "
            f"(patients {out.loc[bad_p, 'patient_id'].tolist()[:10]})."
        )
    return problems


def validate_class_predictions(
    df: pd.DataFrame, task_: str | Task, source: str = "predictions", *, split: str | None = None
) -> pd.DataFrame:
    """Check one class-task prediction table (:func:`class_prediction_columns`) and return a clean copy.

    Parameters
    ----------
    df : DataFrame
        One row per patient; extra columns are kept.
    task_ : str or Task
        ``"three-class"`` or ``"low-vs-zero"``.
    source : str
        Name used in error messages (usually the file path).
    split : {"train", "test", "external"} or None
        If given, every row must belong to this split.

    Raises
    ------
    DataError
        Listing every problem: missing columns, duplicate patients, a class outside the task's, probabilities that
        are not a probability vector, fold rules as :func:`validate_predictions`.
    """
    t = _class_task(task_)
    out = df.copy()
    problems = _class_problems(out, t, source, class_prediction_columns(t))
    if problems and "missing column" in problems[0]:
        raise DataError(problems[0], problems)
    out["patient_id"] = out["patient_id"].astype(str)
    dup = out.loc[out["patient_id"].duplicated(), "patient_id"].tolist()
    if dup:
        problems.append(f"{source}: duplicate patient_id {sorted(set(dup))[:10]}; one row per patient expected.")
    bad_split = out.loc[~out["split"].isin(SPLITS), "patient_id"].tolist()
    if bad_split:
        problems.append(f"{source}: split must be 'train', 'test' or 'external' (patients {bad_split[:10]}).")
    if split is not None and (out["split"] != split).any():
        problems.append(
            f"{source}: expected only split == {split!r} rows, but patients "
            f"{out.loc[out['split'] != split, 'patient_id'].tolist()[:10]} are not."
        )
    fold = _fold_problems(out, source, problems)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {source}: " + " ".join(problems), problems)
    out["fold"] = fold.astype(int)
    out[list(t.probability_columns)] = out[list(t.probability_columns)].astype(float)
    return out.reset_index(drop=True)


def read_class_predictions(path: str | os.PathLike, task_: str | Task, split: str | None = None) -> pd.DataFrame:
    """Read and validate a class-task prediction CSV (:func:`validate_class_predictions`); a DataError naming the
    notebook that writes it when the file is absent."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"prediction file {path} not found; run the notebook that writes it first (03_train_us, 04_train_mri, "
            "05_fusion, with the same task)."
        )
    return validate_class_predictions(pd.read_csv(path, dtype={"patient_id": str}), task_, str(path), split=split)


def validate_class_test_folds(
    df: pd.DataFrame,
    task_: str | Task,
    source: str = "test_folds",
    *,
    test: pd.DataFrame | None = None,
    atol: float = 1e-9,
) -> pd.DataFrame:
    """Check a class task's per-fold-model test table (:func:`class_test_fold_columns`) and return a clean copy
    sorted by patient and model fold.

    Parameters
    ----------
    df : DataFrame
        One row per test patient and fold model.
    task_ : str or Task
        ``"three-class"`` or ``"low-vs-zero"``.
    source : str
        Name used in error messages (usually the file path).
    test : DataFrame, optional
        The matching fold-mean table (``{prefix}_test.csv``): if given, the patients must agree and each probability
        column must be the mean over the fold models (to ``atol``).

    Raises
    ------
    DataError
        Listing every problem.
    """
    t = _class_task(task_)
    out = df.copy()
    problems = _class_problems(out, t, source, class_test_fold_columns(t))
    if not problems:
        out["patient_id"] = out["patient_id"].astype(str)
        mf = pd.to_numeric(out["model_fold"], errors="coerce")
        if mf.isna().any() or (mf < 0).any() or (mf != np.round(mf)).any():
            problems.append(f"{source}: model_fold must be an integer >= 0.")
    mixed = (~out["split"].isin(EVAL_SPLITS)).any() or out["split"].nunique() > 1
    if not problems and (mixed or out.duplicated(["patient_id", "model_fold"]).any()):
        problems.append(f"{source}: only test patients, one row per patient and fold model, belong here.")
    if not problems and test is not None:
        mean = out.groupby("patient_id")[list(t.probability_columns)].mean()
        ref = test.set_index("patient_id")
        if set(mean.index) != set(ref.index):
            problems.append(f"{source}: patients differ from the fold-mean test file.")
        else:
            labels = out.groupby("patient_id")["her2_class"].agg(frozenset)
            odd = [p for p in mean.index if labels[p] != {ref.loc[p, "her2_class"]}]
            if odd:
                problems.append(
                    f"{source}: her2_class differs from the fold-mean test file (or across fold models) for patients "
                    f"{odd[:10]}; the files come from different runs. Re-run the training notebook."
                )
            elif (np.abs(mean.to_numpy() - ref.loc[mean.index, list(t.probability_columns)].to_numpy()) > atol).any():
                problems.append(
                    f"{source}: the mean over fold models differs from the fold-mean test file; the files come from "
                    "different runs. Re-run the training notebook."
                )
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {source}: " + " ".join(problems), problems)
    out["model_fold"] = out["model_fold"].astype(int)
    cols = list(class_test_fold_columns(t))
    return out.sort_values(["patient_id", "model_fold"], kind="mergesort").reset_index(drop=True)[cols]


def read_class_test_folds(
    path: str | os.PathLike, task_: str | Task, test: pd.DataFrame | None = None, *, atol: float = 1e-9
) -> pd.DataFrame | None:
    """Read and check a class task's ``{prefix}_test_folds.csv`` (:func:`validate_class_test_folds`); None when
    absent.

    With ``test`` (the fold-mean file), the patients and classes must agree and each probability column must be the
    mean over the fold models (to ``atol``). Returns the table sorted by patient and model fold.
    """
    path = Path(path)
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"patient_id": str})
    return validate_class_test_folds(df, task_, str(path), test=test, atol=atol)


def class_codes(df: pd.DataFrame, task_: str | Task) -> np.ndarray:
    """Label codes (int, ``j`` = ``task.classes[j]``) of a class-task table's ``her2_class`` column."""
    t = _class_task(task_)
    bad = ~df["her2_class"].isin(t.classes)
    if bad.any():
        raise DataError(
            f"her2_class values outside {list(t.classes)}: {sorted(map(str, set(df.loc[bad, 'her2_class'])))} "
            f"(patients {df.loc[bad, 'patient_id'].astype(str).tolist()[:10] if 'patient_id' in df else '?'}); keep "
            "the task's patients only (her2lib.data.task_cohort) and predictions of the same task."
        )
    return pd.Categorical(df["her2_class"], categories=list(t.classes)).codes.astype(np.int64)


def class_proba(df: pd.DataFrame, task_: str | Task) -> np.ndarray:
    """The ``(n_patients, n_classes)`` float64 probability matrix of a class-task table (columns in class order)."""
    return df[list(_class_task(task_).probability_columns)].to_numpy(dtype=float)


# ----------------------------------------------------------------------------------------------------------------
# The paper's Tables 1-3
# ----------------------------------------------------------------------------------------------------------------
PAPER_TABLES: tuple[str, ...] = ("table1_clinical", "table2_us", "table3_mri")


@lru_cache(maxsize=1)
def _load_table_spec() -> dict[str, Any]:
    res = resources.files("her2lib").joinpath("resources/tables_1_3.json")
    if not res.is_file():
        raise DataError(
            "her2lib/resources/tables_1_3.json: the packaged copy of the paper's Tables 1-3 is missing; "
            "reinstall her2lib (make install)."
        )
    return json.loads(res.read_text(encoding="utf-8"))


def table_spec() -> dict[str, Any]:
    """The paper's Tables 1-3 (``resources/tables_1_3.json``): per-split counts, column names and level codes.

    The one loader of that file. The returned dict is shared: do not modify it.

    Returns
    -------
    dict
        Keys ``n`` (``{"train": 149, "test": 48}``), ``categorical`` (list of ``{column, label, levels, codes,
        table, train, test, ...}``) and ``continuous``.
    """
    return _load_table_spec()
