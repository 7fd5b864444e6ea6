"""Figures of the three-class HER2 question (zero / low / positive): the confusion matrix.

Science layer (figures): draws a :class:`matplotlib.figure.Figure` (no pyplot state, no backend switch), saves it
atomically through :func:`her2lib.io.save_figure` when given a path and returns it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..contract import HER2_CLASSES
from ..errors import ParameterError
from ..io import save_figure
from ..options import look_up_option
from ..stats import confusion_matrix
from ._style import style

__all__ = ["NORMALIZE", "class_label", "plot_confusion_matrix"]

#: ``normalize`` options of :func:`plot_confusion_matrix`: what the cell colour shows.
NORMALIZE = ("true", "none")

#: Sequential, single-hue map: ordered by lightness, so it reads the same with any colour-vision deficiency and in
#: greyscale.
_CMAP = "Blues"


def class_label(cls) -> str:
    """How figures name a class: ``"zero"`` -> ``"HER2-zero"`` (the :data:`~her2lib.contract.HER2_CLASSES`), else
    ``str(cls)``."""
    return f"HER2-{cls}" if cls in HER2_CLASSES else str(cls)


def plot_confusion_matrix(
    y_true,
    y_pred,
    *,
    classes: Sequence,
    path: str | os.PathLike | None = None,
    title: str | None = "Confusion matrix",
    normalize: str = "true",
    labels: Sequence[str] | None = None,
    dpi: int = 300,
    svg: bool = True,
) -> Figure:
    """Confusion matrix: true class (rows) by predicted class (columns), each cell with its count and row percentage.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_patients,)
        True and predicted class of each patient, each one of ``classes``.
    classes : sequence
        Classes in display order (e.g. :data:`her2lib.contract.HER2_CLASSES`).
    path : path-like, optional
        Save there (PNG, plus an SVG twin when ``svg``).
    title : str or None
    normalize : {"true", "none"}
        Cell colour: ``"true"`` = share of the true class (row percentage, 0-100 %, comparable across classes of
        different sizes); ``"none"`` = the count.
    labels : sequence of str, optional
        Display names of the classes (default ``HER2-zero``, ``HER2-low``, ``HER2-positive`` for the HER2 classes).
    dpi : int, default 300
    svg : bool, default True

    Returns
    -------
    matplotlib.figure.Figure
        Rows with no patient show ``0`` and an empty percentage.
    """
    normalize = look_up_option(normalize, NORMALIZE, name="normalize")
    cm = confusion_matrix(y_true, y_pred, classes=classes)
    classes = tuple(classes)
    names = [class_label(c) for c in classes] if labels is None else [str(s) for s in labels]
    if len(names) != len(classes):
        raise ParameterError(f"labels has {len(names)} names for {len(classes)} classes; give one per class.")
    row = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row > 0, 100.0 * cm / np.maximum(row, 1), np.nan)
    value = share if normalize == "true" else cm.astype(float)
    vmax = 100.0 if normalize == "true" else max(1.0, float(cm.max()))
    k = len(classes)
    with style():
        fig = Figure(figsize=(1.3 * k + 2.6, 1.15 * k + 1.5), layout="constrained")
        ax = fig.subplots()
        cmap = colormaps[_CMAP]
        norm = Normalize(0.0, vmax)
        im = ax.imshow(np.nan_to_num(value), cmap=cmap, norm=norm, aspect="equal")
        for i in range(k):
            for j in range(k):
                _annotate(ax, i, j, cm[i, j], share[i, j], cmap(norm(np.nan_to_num(value[i, j]))))
        ax.set_xticks(range(k), names)
        ax.set_yticks(range(k), [f"{nm}\n(n = {int(r)})" for nm, r in zip(names, row[:, 0])])
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", lw=2)
        ax.tick_params(which="minor", length=0)
        cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.03)
        cb.set_label("% of true class (row)" if normalize == "true" else "Patients")
        cb.outline.set_visible(False)
        if title:
            ax.set_title(f"{title} (n = {int(cm.sum())})")
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig


def _annotate(ax, i: int, j: int, count: int, pct: float, rgba) -> None:
    """Count (bold) over the row percentage, in black or white, whichever contrasts with the cell."""
    r, g, b = rgba[:3]
    dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5
    color = "white" if dark else "black"
    ax.text(j, i - 0.1, f"{count}", ha="center", va="center", color=color, fontsize=13, fontweight="bold")
    pct_txt = "" if np.isnan(pct) else f"{int(np.floor(pct + 0.5))}%"  # half up: 12.5 -> 13
    ax.text(j, i + 0.22, pct_txt, ha="center", va="center", color=color, fontsize=10)
