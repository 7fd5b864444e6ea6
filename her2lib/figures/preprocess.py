"""Figure of notebook 02: source images with the lesion outline and ROI box beside the model inputs.

Science layer (figures).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..data import read_image
from ..errors import DataError
from ..io import save_figure

__all__ = ["plot_roi_examples"]


def _pick(cohort: pd.DataFrame, n: int, seed: int) -> list[int]:
    """Row positions of ``n`` patients, HER2-positive and -negative alternating (seeded)."""
    rng = np.random.default_rng(seed)
    order = []
    for label in (1, 0):
        ids = np.flatnonzero(cohort["her2"].to_numpy() == label)
        order.append(list(rng.permutation(ids)))
    return [int(i) for pair in zip(*order) for i in pair][:n] or list(range(min(n, len(cohort))))


def _us_pair(ax: Axes, ax_roi: Axes, row: pd.Series, roi_img: np.ndarray, roi_mask: np.ndarray, box) -> None:
    img, _ = read_image(row["us_image"])
    msk, _ = read_image(row["us_mask"])
    (y0, y1), (x0, x1) = box
    ax.imshow(img, cmap="gray")
    ax.contour(msk > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.2))
    ax.set_title(f"{row['patient_id']} US (HER2 {'+' if row['her2'] == 1 else '-'})", fontsize=9)
    ax_roi.imshow(roi_img[0], cmap="gray")
    ax_roi.contour(roi_mask[0] > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    ax_roi.set_title(f"US ROI {roi_img.shape[-1]}x{roi_img.shape[-2]}, z-scored", fontsize=9)


def _mri_pair(
    ax: Axes, ax_roi: Axes, row: pd.Series, roi_img: np.ndarray, roi_mask: np.ndarray, box, first: bool
) -> None:
    vol, _ = read_image(row["mri_image"])
    vm, _ = read_image(row["mri_mask"])
    (z0, z1), (y0, y1), (x0, x1) = box
    zc = (z0 + z1) // 2
    ax.imshow(vol[zc], cmap="gray")
    if (vm[zc] > 0).any():
        ax.contour(vm[zc] > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.2))
    ax.set_title(f"{row['patient_id'] + ' ' if first else ''}MRI slice z={zc}, ROI box", fontsize=9)
    d = roi_img.shape[1] // 2
    ax_roi.imshow(roi_img[0, d], cmap="gray")
    if (roi_mask[0, d] > 0).any():
        ax_roi.contour(roi_mask[0, d] > 0, levels=[0.5], colors="yellow", linewidths=0.8)
    ax_roi.set_title(f"MRI ROI {roi_img.shape[1]}^3 (centre slice)", fontsize=9)


def plot_roi_examples(
    cohort: pd.DataFrame, inputs: dict, *, n: int = 3, path: str | os.PathLike | None = None, seed: int = 0
) -> Figure:
    """Figure: for ``n`` patients (HER2-positive and -negative mixed), the source US image and the MRI slice
    through the lesion centre with the lesion outline and ROI box, and the preprocessed ROIs beside them.

    Parameters
    ----------
    cohort : pandas.DataFrame
        From :func:`her2lib.data.load_cohort`.
    inputs : dict
        ``{modality: (images, masks, boxes)}`` from :func:`her2lib.roi.preprocess_cohort` for the modalities the
        cohort has, in ``cohort`` row order (the preprocess stage's ``inputs``); nothing is read from the cache.
    n : int
        Number of patients (rows of the figure).
    path : path, optional
        Where to save the PNG (atomically).
    seed : int
        Chooses the patients.

    Returns
    -------
    matplotlib.figure.Figure
        Not registered with pyplot (a notebook shows the saved PNG).
    """
    mods = [m for m in ("us", "mri") if m in inputs]
    if not mods:
        raise DataError("plot_roi_examples: no modality with images for every shown patient.")
    pick = _pick(cohort, n, seed)
    sub = cohort.iloc[pick]
    fig = Figure(figsize=(6 * len(mods), 3 * len(sub)))
    axes = fig.subplots(len(sub), 2 * len(mods), squeeze=False)
    for r, (i, (_, row)) in enumerate(zip(pick, sub.iterrows())):
        c = 0
        if "us" in inputs:
            x, m, b = inputs["us"]
            _us_pair(axes[r, c], axes[r, c + 1], row, x[i], m[i], b[i])
            c += 2
        if "mri" in inputs:
            x, m, b = inputs["mri"]
            _mri_pair(axes[r, c], axes[r, c + 1], row, x[i], m[i], b[i], first=c == 0)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Lesion outline (yellow), dilated-mask bounding box (red) and the model inputs", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
