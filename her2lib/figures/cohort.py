"""Figures of notebook 00 (the cohort): the gallery of cases by HER2 status.

Science layer: draws with matplotlib's object API (no pyplot state, never ``matplotlib.use``) and saves through
:func:`her2lib.io.save_figure`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..contract import MODALITIES
from ..data import available_modalities, read_image
from ..errors import DataError
from ..io import save_figure

__all__ = ["cohort_gallery"]


def _zoom_inset(
    ax, img: np.ndarray, mask: np.ndarray, spacing: Sequence[float], colour: str, aspect: float, window_mm: float = 60.0
) -> None:
    """An inset of a ``window_mm`` square around the lesion (framed on the full slice), in the lower corner away
    from the lesion."""
    ys, xs = np.nonzero(mask)
    half = [max(2, int(round(window_mm / 2 / s))) for s in spacing]
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    y0, y1 = max(0, cy - half[0]), min(img.shape[0], cy + half[0])
    x0, x1 = max(0, cx - half[1]), min(img.shape[1], cx + half[1])
    if (y1 - y0) * (x1 - x0) > 0.5 * img.size:  # the lesion already fills the image: no inset
        return
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=0.6))
    left = cx > img.shape[1] / 2  # lesion on the right: inset on the left
    top = cy > img.shape[0] / 2  # lesion in the lower half: inset at the top
    ins = ax.inset_axes([0.02 if left else 0.56, 0.56 if top else 0.02, 0.42, 0.42])
    ins.imshow(img[y0:y1, x0:x1], cmap="gray", aspect=aspect, vmin=float(img.min()), vmax=float(img.max()))
    ins.contour(mask[y0:y1, x0:x1], levels=[0.5], colors=[colour], linewidths=0.8)
    ins.set_xticks([])
    ins.set_yticks([])
    for side in ins.spines.values():
        side.set_edgecolor("yellow")
        side.set_linewidth(0.6)


def _gallery_picks(df: pd.DataFrame, n_per_class: int, seed: int) -> list[tuple[int, pd.Series]]:
    """``(her2, row)`` of up to ``n_per_class`` patients per HER2 class, drawn with ``seed``, negatives first."""
    rng = np.random.default_rng(seed)
    picks: list[tuple[int, pd.Series]] = []
    for cls in (0, 1):
        sub = df[df["her2"] == cls]
        if len(sub) == 0:
            continue
        idx = rng.choice(len(sub), size=min(n_per_class, len(sub)), replace=False)
        picks += [(cls, sub.iloc[int(j)]) for j in sorted(idx)]
    return picks


def _gallery_panel(ax, row: pd.Series, cls: int, m: str) -> None:
    """One patient's image of modality ``m`` (the MRI slice through the largest lesion cross-section) with its
    mask contour."""
    ax.set_xticks([])
    ax.set_yticks([])
    ci, cm = MODALITIES[m].columns
    if not row[ci]:
        ax.set_title(f"{row['patient_id']}\n(no {m})", fontsize=7)
        return
    img, sp = read_image(row[ci])
    mask, _ = read_image(row[cm])
    aspect = 1.0
    colour = "tab:red" if cls else "tab:cyan"
    if img.ndim == 3:
        z = int(np.argmax((mask > 0).sum(axis=(1, 2))))
        img, mask = img[z], mask[z]
        aspect = sp[1] / sp[2]
    ax.imshow(img, cmap="gray", aspect=aspect)
    ax.contour(mask > 0, levels=[0.5], colors=[colour], linewidths=0.8)
    if m == "mri" and (mask > 0).any():
        _zoom_inset(ax, img, mask > 0, sp[-2:], colour, aspect)
    ax.set_title(f"{row['patient_id']} {m.upper()}\nHER2{'+' if cls else '-'}", fontsize=7)


def cohort_gallery(
    df: pd.DataFrame, path: str | os.PathLike | None = None, *, n_per_class: int = 3, seed: int = 0
) -> Figure:
    """Gallery of cases by HER2 status: US image and the MRI slice through the lesion (with a zoomed inset of a
    60 mm window around the lesion), mask contours.

    Parameters
    ----------
    df : pd.DataFrame
        Output of :func:`her2lib.data.load_cohort`.
    path : path-like, optional
        Where to save the figure (PNG, written atomically).
    n_per_class : int
        Patients shown per HER2 class (drawn with ``seed`` from all patients of the class).
    seed : int
        Seed of the draw.

    Returns
    -------
    matplotlib.figure.Figure
        Not registered with pyplot (show the saved file, e.g. ``her2lib.runner.notebook.show_image``).
    """
    mods = available_modalities(df, require_all=False)
    if not mods:
        raise DataError("cohort_gallery: the cohort has no images to show.")
    picks = _gallery_picks(df, n_per_class, seed)
    ncol = len(picks)
    fig = Figure(figsize=(2.2 * ncol, 2.3 * len(mods)))
    axes = fig.subplots(len(mods), ncol, squeeze=False)
    for j, (cls, row) in enumerate(picks):
        for i, m in enumerate(mods):
            _gallery_panel(axes[i, j], row, cls, m)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
