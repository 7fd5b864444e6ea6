"""Cross-validation folds: the stratified four folds of the training cohort, their file, the inner selection split
of one fold's training part, and the guard that keeps test patients out of every fit.

Science layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from ..contract import REQUIRED_COLUMNS, SPLITS
from ..errors import DataError, ParameterError
from ..io import write_csv

__all__ = ["assign_folds", "write_folds", "read_folds", "inner_split", "repeat_seed"]


def _check_cohort(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: the cohort table lacks columns {missing}.")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise DataError(f"{where}: split values {bad} are not 'train', 'test' or 'external'.")
    labels = set(pd.unique(df["her2"]))
    if not labels <= {0, 1}:
        raise DataError(f"{where}: her2 must be 0/1, found {sorted(map(str, labels))}.")
    if df["patient_id"].duplicated().any():
        dup = df.loc[df["patient_id"].duplicated(), "patient_id"].tolist()[:5]
        raise DataError(f"{where}: duplicated patient_id {dup}.")


def _guard_train_only(rows: pd.DataFrame, what: str) -> None:
    if "split" not in rows.columns:
        raise DataError(f"fit_fold: {what} rows need a 'split' column (the leakage guard checks it).")
    test = rows.loc[rows["split"] != "train", "patient_id"].tolist()
    if test:
        raise DataError(
            f"fit_fold: test-cohort patients {test[:5]} reached the {what} data of a CV fold. The test "
            "cohort must never be used for fitting or model selection; pass only split == 'train' "
            "rows."
        )


def assign_folds(df: pd.DataFrame, n_folds: int = 4, seed: int = 0, *, label: str = "her2") -> pd.Series:
    """Stratified fold of every training patient; -1 for test patients.

    Parameters
    ----------
    df : pandas.DataFrame
        Cohort with ``patient_id``, ``split`` and ``her2`` columns.
    n_folds : int
        Number of folds (paper: 4).
    seed : int
        Shuffling seed.
    label : str
        The column to stratify on: ``her2`` (binary task) or ``her2_class`` (the class tasks,
        :attr:`her2lib.contract.Task.label_column`).

    Returns
    -------
    pandas.Series
        int, named ``fold``, indexed like ``df``. Stratified by ``label``; independent of the row order (patients
        are sorted by id before splitting).
    """
    _check_cohort(df, "assign_folds")
    if n_folds < 2:
        raise ParameterError(f"n_folds={n_folds}: need at least 2 folds.")
    train = df[df["split"] == "train"].sort_values("patient_id")
    if label not in train.columns or train[label].isna().any():
        raise DataError(f"assign_folds: every training patient needs a {label!r} label to stratify the folds on.")
    counts = train[label].value_counts()
    if len(counts) < 2 or counts.min() < n_folds:
        raise DataError(
            f"assign_folds: the training cohort has {label} counts {counts.to_dict()}; every class needs "
            f">= n_folds={n_folds} patients."
        )
    folds = pd.Series(-1, index=df.index, name="fold", dtype=int)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(skf.split(np.zeros(len(train)), train[label].to_numpy())):
        folds.loc[train.index[val]] = k
    return folds


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repetition ``repeat`` of a repeated cross-validation run with seed ``seed``.

    Repetition 0 is the single run (``seed`` itself, so one repetition is today's run byte for byte); repetition
    ``r >= 1`` gets the first 32-bit word of ``numpy.random.SeedSequence([seed, r])`` modulo ``2**31 - 1``, so the
    repetitions of seeds 0 and 1 do not overlap as ``seed + r`` would. The repetition's folds (:func:`assign_folds`) and its training
    (:func:`her2lib.train.run_cv`'s ``seed``) both use it: a repetition changes the data split and the seed.
    """
    if int(repeat) < 0:
        raise ParameterError(f"repeat={repeat}: repetitions are numbered from 0.")
    if int(repeat) == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0] % (2**31 - 1))


def write_folds(path: str | os.PathLike, df: pd.DataFrame, folds: pd.Series, *, label: str = "her2") -> Path:
    """Write ``patient_id, split, her2, fold`` to ``path`` (CSV, atomic); ``label`` (the class tasks'
    ``her2_class``) is written after ``her2`` when it is another column."""
    out = df[["patient_id", "split", "her2"] + ([label] if label != "her2" else [])].copy()
    out["fold"] = folds.loc[df.index].astype(int)
    return write_csv(path, out)


def read_folds(path: str | os.PathLike, df: pd.DataFrame, *, label: str = "her2") -> pd.Series:
    """Read a folds file (from :func:`write_folds`) and align it with ``df``'s rows.

    ``label`` is the column the folds must have been stratified on (``her2``, or ``her2_class`` for the class
    tasks): a file written for another task is refused, so notebooks 03/04 never train on folds of another task.

    Raises
    ------
    DataError
        If a patient is missing, a test patient has a fold, a split/label disagrees with ``df``, or the file was
        written for another task.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; run notebooks/02_preprocess.ipynb first (same out_dir).")
    f = pd.read_csv(path, dtype={"patient_id": str})
    written_for = "her2_class" if "her2_class" in f.columns else "her2"
    if written_for != label:
        raise DataError(
            f"{path}: these folds were stratified on {written_for!r}, but this notebook's task uses {label!r}; "
            "re-run 02_preprocess with the same task as notebooks 03-07 (same out_dir)."
        )
    cols = ["patient_id", "split", "her2"] + ([label] if label != "her2" else [])
    m = df[cols].merge(f, on="patient_id", how="left", suffixes=("", "_file"))
    problems = [f"patient {p}: not in {path}" for p in m.loc[m["fold"].isna(), "patient_id"]]
    bad = m["fold"].notna() & ((m["split"] != m["split_file"]) | (m["her2"] != m["her2_file"]))
    if label != "her2":
        bad |= m["fold"].notna() & (m[label] != m[f"{label}_file"])
    problems += [f"patient {p}: split/{label} differ from {path}" for p in m.loc[bad, "patient_id"]]
    leak = m["fold"].notna() & (m["split"] != "train") & (m["fold"] != -1)
    problems += [f"patient {p}: {s} patient with a CV fold" for p, s in m.loc[leak, ["patient_id", "split"]].values]
    if problems:
        raise DataError(
            f"{path} does not match the cohort ({len(problems)} problems: {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}); re-run 02_preprocess.",
            problems,
        )
    return pd.Series(m["fold"].astype(int).to_numpy(), index=df.index, name="fold")


def inner_split(
    rows: pd.DataFrame, fraction: float, seed: int, *, label: str = "her2"
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of one fold's training part into a training set and an inner selection set.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``patient_id`` and ``label`` of the fold's training part (in any order).
    fraction : float
        Share of patients in the selection set, in (0, 0.5].
    seed : int
    label : str
        The column to stratify on (``her2``, or the class tasks' label codes).

    Returns
    -------
    (ndarray, ndarray)
        Positional indices into ``rows`` of the training set and of the selection set, each sorted. The split
        depends on the patients, labels and seed only, not on the row order. Each class keeps at least one
        patient on each side.
    """
    if not 0 < fraction <= 0.5:
        raise ParameterError(f"inner_fraction={fraction!r}: use a share in (0, 0.5] (e.g. 0.2).")
    counts = rows[label].value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise DataError(
            f"inner validation split: the fold's training part has {label} counts {counts.to_dict()}; "
            "each class needs >= 2 patients. Use selection='heldout' or a larger cohort."
        )
    order = np.argsort(rows["patient_id"].astype(str).to_numpy(), kind="stable")
    y = rows[label].to_numpy()[order]
    n_sel = max(int(round(fraction * len(rows))), 2, len(counts))
    sss = StratifiedShuffleSplit(n_splits=1, test_size=n_sel, random_state=seed)
    tr, sel = next(sss.split(np.zeros(len(y)), y))
    return np.sort(order[tr]), np.sort(order[sel])
