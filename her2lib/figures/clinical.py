"""The nomogram of DL-US&MRI+Clinical (notebook ``05_fusion``): one axis per term with the points each value
earns, total points, and the probability of HER2-positive they give (:func:`her2lib.clinical.nomogram_scales`).

Science layer (figures): draws a Figure, saves it atomically when given a path.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from ..clinical import ClinicalModel, nomogram_scales
from ..io import save_figure
from ._style import style

__all__ = ["plot_nomogram"]


def _axis(ax, y: float, label: str, xs, labels, *, color: str = "0.15") -> None:
    xs = np.asarray(xs, dtype=float)
    ax.plot([xs.min(), xs.max()], [y, y], color=color, lw=1.2)
    for x, t in zip(xs, labels):
        ax.plot([x, x], [y, y + 0.12], color=color, lw=1)
        ax.text(x, y + 0.17, t, ha="center", va="bottom", fontsize=7.5, color=color)
    ax.text(-4, y, label, ha="right", va="center", fontsize=9)


def plot_nomogram(model: ClinicalModel, *, path: str | os.PathLike | None = None, dpi: int = 300) -> Figure:
    """Points axis (0-100), one axis per term, total points and probability of HER2-positive.

    Categorical levels that earn the same points are stacked on one tick. Read it as: for each term find the
    patient's value, read its points on the top axis, add them up, and read the probability under the total.

    Returns
    -------
    matplotlib.figure.Figure
    """
    scales, offset, scale = nomogram_scales(model)
    max_total = sum(max(s.points) for s in scales)
    rows = len(scales) + 3
    with style():
        fig = Figure(figsize=(9.0, 0.62 * rows + 1.0), layout="constrained")
        ax = fig.subplots()
        y = rows - 1
        _axis(ax, y, "Points", np.arange(0, 101, 10), [str(v) for v in range(0, 101, 10)])
        for s in scales:
            y -= 1
            merged: dict[float, list[str]] = {}
            for t, p in zip(s.ticks, s.points):
                merged.setdefault(round(p, 6), []).append(t.replace("_", " "))
            _axis(ax, y, s.label, list(merged), ["/".join(v) for v in merged.values()], color="#0072B2")
        y -= 1
        step = 20 if max_total > 150 else 10
        totals = np.arange(0, max_total + step, step)
        width = 100 / totals.max()  # the total-points axis is drawn on the points axis' 0-100 width
        _axis(ax, y, "Total points", totals * width, [f"{v:g}" for v in totals])
        y -= 1
        probs = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
        pts = (np.log(probs / (1 - probs)) - offset) / scale
        keep = (pts >= 0) & (pts <= totals.max())
        _axis(ax, y, "P(HER2-positive)", pts[keep] * width, [f"{p:g}" for p in probs[keep]], color="#D55E00")
        ax.set_xlim(-45, 106)
        ax.set_ylim(-0.6, rows - 0.3)
        ax.set_axis_off()
        ax.set_title(
            f"Nomogram of DL-US&MRI+Clinical (fitted on the training cohort's OOF scores, n = {model.n}, "
            f"{model.n_pos} HER2+)",
            fontsize=10.5,
        )
        if path is not None:
            save_figure(fig, path, dpi)
    return fig
