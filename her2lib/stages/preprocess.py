"""Stage of notebook 02: cross-validation folds, the ROIs of every modality the cohort has, their box table and
the before/after figure.

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..contract import MODALITIES
from ..figures.preprocess import plot_roi_examples
from ..io import write_csv
from ..roi import PreprocessSpec, preprocess_cohort, roi_boxes
from ..train import assign_folds, write_folds
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
    """

    folds: pd.Series
    inputs: dict
    boxes: pd.DataFrame | None


def preprocess_modalities(
    run: RunDirs,
    cohort: pd.DataFrame,
    spec: PreprocessSpec,
    *,
    n_folds: int = 4,
    seed: int = 0,
    n_examples: int = 3,
    progress: bool = True,
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

    Returns
    -------
    Preprocessed
        A modality the cohort lacks is skipped with a notice (and every later step of it); without any images the
        box table and figure of an earlier run are removed.
    """
    folds = assign_folds(cohort, n_folds=n_folds, seed=seed)
    write_folds(run.predictions / "folds.csv", cohort, folds)
    inputs = {}
    for m in MODALITIES:
        if modality_present(cohort, m, f"{m.upper()} preprocessing (and every later {m.upper()} step)"):
            inputs[m] = preprocess_cohort(cohort, m, spec, run.cache, progress=progress)
            print(f"{m.upper()} inputs:", inputs[m][0].shape)
    if not inputs:
        remove_stale(run.tables / "roi_boxes.csv", run.figures / "roi_examples.png")
        return Preprocessed(folds=folds, inputs=inputs, boxes=None)
    boxes = roi_boxes(cohort, inputs)
    write_csv(run.tables / "roi_boxes.csv", boxes)
    plot_roi_examples(cohort, inputs, n=n_examples, path=run.figures / "roi_examples.png", seed=seed)
    return Preprocessed(folds=folds, inputs=inputs, boxes=boxes)
