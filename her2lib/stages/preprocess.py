"""Stage of notebook 02: cross-validation folds, the ROIs of every modality the cohort has, their box table and
the before/after figure.

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..contract import MODALITIES, Task
from ..contract import task as _task
from ..data import task_cohort
from ..errors import ParameterError
from ..figures.preprocess import plot_roi_examples
from ..io import write_csv
from ..roi import PreprocessSpec, preprocess_cohort, roi_boxes
from ..train import assign_folds, repeat_seed, write_folds
from ._common import RunDirs, modality_present, remove_stale

__all__ = ["Preprocessed", "preprocess_modalities"]


@dataclass
class Preprocessed:
    """What notebook 02 made.

    Attributes
    ----------
    folds : pandas.Series
        Fold of every patient (-1: test), indexed like the cohort (``predictions/folds.csv``).
    inputs : dict
        ``{modality: (images, masks, boxes)}`` (:func:`her2lib.roi.preprocess_cohort`) for the modalities the
        cohort has, in cohort row order.
    boxes : pandas.DataFrame or None
        :func:`her2lib.roi.box_table` (``tables/roi_boxes.csv``); None when the cohort has no images at all.
    cohort : pandas.DataFrame or None
        The patients of the task (:func:`her2lib.data.task_cohort`; the whole cohort for the binary task).
    label : str
        The task's label column (``her2`` or ``her2_class``): the folds are stratified on it.
    repeat_folds : list of pandas.Series
        The folds of repetitions 1, 2, ... of a repeated cross-validation (``n_repeats - 1`` of them;
        ``predictions/repeats/r{r}/folds.csv``); empty for a single run.
    """

    folds: pd.Series
    inputs: dict
    boxes: pd.DataFrame | None
    cohort: pd.DataFrame | None = None
    label: str = "her2"
    repeat_folds: list = field(default_factory=list)


def preprocess_modalities(
    run: RunDirs,
    cohort: pd.DataFrame,
    spec: PreprocessSpec,
    *,
    n_folds: int = 4,
    seed: int = 0,
    n_examples: int = 3,
    progress: bool = True,
    task: str | Task = "binary",
    n_repeats: int = 1,
) -> Preprocessed:
    """Everything of notebook 02: folds, ROIs (through the cache), box table and the before/after figure.

    Parameters
    ----------
    run : RunDirs
        Writes ``run.predictions/folds.csv``, ``run.tables/roi_boxes.csv``, ``run.figures/roi_examples.png`` and
        the ROI cache under ``run.cache``.
    cohort : pandas.DataFrame
        From :func:`her2lib.data.load_cohort`.
    spec : PreprocessSpec
    n_folds : int
        Stratified cross-validation folds on the training cohort (:func:`her2lib.train.assign_folds`).
    seed : int
        Folds and the patients of the figure.
    n_examples : int
        Patients shown in the figure.
    progress : bool
        tqdm bars.
    task : str or Task
        ``"binary"``, ``"three-class"`` or ``"low-vs-zero"``: the patients (:func:`her2lib.data.task_cohort`) whose
        ROIs are made and the label the folds are stratified on (:attr:`her2lib.contract.Task.label_column`).
    n_repeats : int
        Repetitions of the cross-validation (binary task). 1 (default): the single run. More: repetition ``r >= 1``
        gets its own folds, seeded by :func:`her2lib.train.repeat_seed` ``(seed, r)``, in
        ``predictions/repeats/r{r}/folds.csv``; notebooks 03-06 then train, fuse and evaluate every repetition. The
        prediction, table and figure folders of repetitions an earlier run had beyond ``n_repeats`` are removed.

    Returns
    -------
    Preprocessed
        A modality the cohort lacks is skipped with a notice (and every later step of it); without any images the
        box table and figure of an earlier run are removed.
    """
    t = _task(task)
    if int(n_repeats) < 1 or (int(n_repeats) > 1 and not t.is_binary):
        raise ParameterError(
            f"n_repeats={n_repeats}: give 1 (a single cross-validation) or more repetitions of the binary task "
            f"(task={t.key!r} supports n_repeats=1 only)."
        )
    cohort = task_cohort(cohort, t)
    folds = assign_folds(cohort, n_folds=n_folds, seed=seed, label=t.label_column)
    write_folds(run.predictions / "folds.csv", cohort, folds, label=t.label_column)
    repeat_folds = _write_repeat_folds(run, cohort, n_folds=n_folds, seed=seed, n_repeats=int(n_repeats))
    inputs = {}
    for m in MODALITIES:
        if modality_present(cohort, m, f"{m.upper()} preprocessing (and every later {m.upper()} step)"):
            inputs[m] = preprocess_cohort(cohort, m, spec, run.cache, progress=progress)
            print(f"{m.upper()} inputs:", inputs[m][0].shape)
    if not inputs:
        remove_stale(run.tables / "roi_boxes.csv", run.figures / "roi_examples.png")
        return Preprocessed(folds, inputs, None, cohort, t.label_column, repeat_folds)
    boxes = roi_boxes(cohort, inputs)
    write_csv(run.tables / "roi_boxes.csv", boxes)
    plot_roi_examples(cohort, inputs, n=n_examples, path=run.figures / "roi_examples.png", seed=seed)
    return Preprocessed(folds, inputs, boxes, cohort, t.label_column, repeat_folds)


def _write_repeat_folds(run: RunDirs, cohort: pd.DataFrame, *, n_folds: int, seed: int, n_repeats: int) -> list:
    """Folds of repetitions ``1 .. n_repeats - 1`` (written to their folders); stale repetitions removed."""
    run.remove_repeats(keep=n_repeats)
    out = []
    for r in range(1, n_repeats):
        folds = assign_folds(cohort, n_folds=n_folds, seed=repeat_seed(seed, r))
        write_folds(run.repeat(r).predictions / "folds.csv", cohort, folds)
        out.append(folds)
    if n_repeats > 1:
        print(
            f"{n_repeats} repetitions of the {n_folds}-fold cross-validation (folds of repetition r >= 1 in "
            f"{run.predictions / 'repeats'})"
        )
    return out
