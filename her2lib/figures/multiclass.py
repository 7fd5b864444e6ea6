"""Figures of the class tasks (HER2-zero / HER2-low / HER2-positive; HER2-low vs HER2-zero): the confusion matrix
(one, or one per model side by side), one-vs-rest ROC curves per class, and the HER2-low vs HER2-zero ROC curves.

Science layer (figures): draws a :class:`matplotlib.figure.Figure` (no pyplot state, no backend switch), saves it
atomically through :func:`her2lib.io.save_figure` when given a path and returns it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..contract import HER2_CLASSES, class_proba
from ..errors import DataError, ParameterError
from ..evaluate import roc_points
from ..evaluate_classes import ClassPredictions, low_vs_zero_score
from ..io import save_figure
from ..options import look_up_option
from ..stats import confusion_matrix
from ._style import MODEL_COLORS, style

__all__ = [
    "NORMALIZE",
    "class_label",
    "plot_confusion_matrix",
    "plot_confusion_matrices",
    "plot_roc_classes",
    "plot_roc_low_vs_zero",
]

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
    k = len(classes)
    with style():
        fig = Figure(figsize=(1.3 * k + 2.6, 1.15 * k + 1.5), layout="constrained")
        ax = fig.subplots()
        im = _draw_matrix(ax, cm, names, normalize)
        cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.03)
        cb.set_label("% of true class (row)" if normalize == "true" else "Patients")
        cb.outline.set_visible(False)
        if title:
            ax.set_title(f"{title} (n = {int(cm.sum())})")
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig


def _draw_matrix(ax, cm: np.ndarray, names: Sequence[str], normalize: str, *, ylabel: bool = True, vmax=None):
    """Draw one confusion matrix (counts, possibly fractional means) on ``ax``; returns the image (for a colorbar)."""
    k = cm.shape[0]
    row = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row > 0, 100.0 * cm / np.where(row > 0, row, 1), np.nan)
    value = share if normalize == "true" else cm.astype(float)
    if vmax is None:
        vmax = 100.0 if normalize == "true" else max(1.0, float(cm.max()))
    cmap = colormaps[_CMAP]
    norm = Normalize(0.0, vmax)
    im = ax.imshow(np.nan_to_num(value), cmap=cmap, norm=norm, aspect="equal")
    for i in range(k):
        for j in range(k):
            _annotate(ax, i, j, cm[i, j], share[i, j], cmap(norm(np.nan_to_num(value[i, j]))))
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), [f"{nm}\n(n = {_count(r)})" for nm, r in zip(names, row[:, 0])])
    ax.set_xlabel("Predicted class")
    if ylabel:
        ax.set_ylabel("True class")
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    return im


def _count(v) -> str:
    """A count as an integer, or with up to two decimals when it is a mean over fold models (4 folds: quarters)."""
    v = float(v)
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-9 else f"{v:.2f}".rstrip("0").rstrip(".")


def _annotate(ax, i: int, j: int, count: int, pct: float, rgba) -> None:
    """Count (bold) over the row percentage, in black or white, whichever contrasts with the cell."""
    r, g, b = rgba[:3]
    dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5
    color = "white" if dark else "black"
    ax.text(j, i - 0.1, _count(count), ha="center", va="center", color=color, fontsize=13, fontweight="bold")
    pct_txt = "" if np.isnan(pct) else f"{int(np.floor(pct + 0.5))}%"  # half up: 12.5 -> 13
    ax.text(j, i + 0.22, pct_txt, ha="center", va="center", color=color, fontsize=10)


def plot_confusion_matrices(
    confusion: pd.DataFrame,
    *,
    classes: Sequence,
    path: str | os.PathLike | None = None,
    normalize: str = "true",
    dpi: int = 300,
    svg: bool = True,
) -> Figure:
    """Confusion matrices of several models side by side, at each model's OOF decision rule (test cohort).

    Parameters
    ----------
    confusion : DataFrame
        Long format (:attr:`her2lib.evaluate_classes.ClassEvaluationResult.confusion`): ``model, label, true_class,
        predicted_class, count`` (a mean over fold models may be fractional), optionally ``n_models``.
    classes : sequence
        Classes in display order.
    path : path-like, optional
        Save there (PNG, plus an SVG twin when ``svg``).
    normalize : {"true", "none"}
        Cell colour: row percentage (default) or count; one colour scale for all panels.
    dpi : int, default 300
    svg : bool, default True

    Returns
    -------
    matplotlib.figure.Figure
        One panel per model, in the table's order; each cell shows the count (mean over the fold models, one
        decimals when fractional) over its row percentage.
    """
    normalize = look_up_option(normalize, NORMALIZE, name="normalize")
    classes = tuple(classes)
    need = {"model", "label", "true_class", "predicted_class", "count"}
    if not need <= set(confusion.columns) or confusion.empty:
        raise DataError(f"confusion table needs the columns {sorted(need)} and rows; use evaluate_classes.")
    keys = list(dict.fromkeys(confusion["model"]))
    mats = []
    for key in keys:
        sub = confusion[confusion["model"] == key]
        wide = sub.pivot(index="true_class", columns="predicted_class", values="count")
        mats.append(wide.reindex(index=classes, columns=classes).fillna(0.0).to_numpy(dtype=float))
    labels = [str(confusion.loc[confusion["model"] == k, "label"].iloc[0]) for k in keys]
    names = [class_label(c) for c in classes]
    vmax = 100.0 if normalize == "true" else max(1.0, max(float(m.max()) for m in mats))
    k = len(classes)
    with style():
        fig = Figure(figsize=((1.25 * k + 1.4) * len(keys) + 1.6, 1.15 * k + 1.9), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(keys), sharey=True))
        for j, (ax, cm, lab) in enumerate(zip(axes, mats, labels)):
            im = _draw_matrix(ax, cm, names, normalize, ylabel=j == 0, vmax=vmax)
            ax.set_title(lab, fontweight="bold")
            if j:
                ax.tick_params(labelleft=False)
        cb = fig.colorbar(im, ax=list(axes), shrink=0.8, pad=0.02)
        cb.set_label("% of true class (row)" if normalize == "true" else "Patients")
        cb.outline.set_visible(False)
        n_test = int(round(mats[0].sum()))
        several = "n_models" in confusion and int(confusion["n_models"].max()) > 1
        fig.suptitle(
            f"Confusion matrices, test cohort (n = {n_test}); decision rule chosen on training OOF predictions"
            + ("\ncounts: mean over the fold models" if several else "")
        )
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig


#: a legend drawn over ROC curves stays readable: a white, nearly opaque box without an edge
_LEGEND_BOX = {"frameon": True, "framealpha": 0.9, "facecolor": "white", "edgecolor": "none"}


def _auc_legend(row) -> str:
    return f"{row['label']}: {row['auc']:.3f} ({row['ci_low']:.3f}\u2013{row['ci_high']:.3f})"


def _roc_axes(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1, label="Chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 \u2212 Specificity (false-positive rate)")
    ax.set_title(title)
    ax.grid(alpha=0.25)


def plot_roc_classes(
    preds: Mapping[str, ClassPredictions],
    class_auc: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    class_metrics: pd.DataFrame | None = None,
    dpi: int = 300,
    svg: bool = True,
) -> Figure:
    """One-vs-rest ROC curves on the test cohort: one panel per class, one curve per model.

    Parameters
    ----------
    preds : mapping
        ``key -> ClassPredictions`` (:func:`her2lib.evaluate_classes.load_class_predictions`); curves from the
        reported (fold-mean) test probabilities.
    class_auc : DataFrame
        :attr:`~her2lib.evaluate_classes.ClassEvaluationResult.class_auc` (legend: AUC with its DeLong CI).
    path : path-like, optional
        Save there (PNG, plus an SVG twin when ``svg``).
    class_metrics : DataFrame, optional
        If given, each model's operating point at its OOF decision rule (1 - specificity, sensitivity) is a dot.
    dpi : int, default 300
    svg : bool, default True

    Returns
    -------
    matplotlib.figure.Figure
    """
    first = next(iter(preds.values()))
    t = first.task
    y = first.test["her2_class"].to_numpy(dtype=object)
    auc_at = class_auc.set_index(["model", "class"])
    met_at = class_metrics.set_index(["model", "class"]) if class_metrics is not None else None
    with style():
        fig = Figure(figsize=(4.6 * t.n_classes + 0.4, 5.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, t.n_classes, sharey=True))
        for j, (ax, c) in enumerate(zip(axes, t.classes)):
            pos = y == c
            _roc_axes(ax, f"{class_label(c)} vs rest ({int(pos.sum())} vs {int((~pos).sum())})")
            for key, mp in preds.items():
                pts = roc_points(pos.astype(int), class_proba(mp.test, t)[:, j])
                color = MODEL_COLORS.get(key)
                ax.plot(pts.fpr, pts.tpr, color=color, lw=2, label=_auc_legend(auc_at.loc[(key, c)].to_dict()))
                if met_at is not None and (key, c) in met_at.index:
                    m = met_at.loc[(key, c)]
                    ax.plot(1 - m["specificity"], m["sensitivity"], "o", color=color, ms=7, mec="white", mew=1.2)
            ax.legend(loc="lower right", title="AUC (95% CI, DeLong)", title_fontsize=9.5, fontsize=9, **_LEGEND_BOX)
        axes[0].set_ylabel("Sensitivity (true-positive rate)")
        note = "; \u25cf operating point at the OOF decision rule" if met_at is not None else ""
        fig.suptitle(f"One-vs-rest ROC curves, test cohort (n = {len(y)}){note}")
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig


def plot_roc_low_vs_zero(
    preds: Mapping[str, ClassPredictions],
    low_vs_zero: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    class_metrics: pd.DataFrame | None = None,
    dpi: int = 300,
    svg: bool = True,
) -> Figure:
    """HER2-low vs HER2-zero ROC curves among the HER2-negative test patients (the T-DXd question).

    Parameters
    ----------
    preds : mapping
        ``key -> ClassPredictions``; the score is :func:`her2lib.evaluate_classes.low_vs_zero_score` of the
        fold-mean test probabilities.
    low_vs_zero : DataFrame
        :attr:`~her2lib.evaluate_classes.ClassEvaluationResult.low_vs_zero` (legend: AUC with its DeLong CI).
    path : path-like, optional
    class_metrics : DataFrame, optional
        For the low-vs-zero task only (where the decision rule is a HER2-low vs HER2-zero cut): each model's operating
        point at its OOF rule (HER2-low row) is a dot. Ignored for three classes.
    dpi : int, default 300
    svg : bool, default True

    Returns
    -------
    matplotlib.figure.Figure
    """
    first = next(iter(preds.values()))
    t = first.task
    y = first.test["her2_class"].to_numpy(dtype=object)
    neg = np.isin(y, ["zero", "low"])
    yl = (y[neg] == "low").astype(int)
    rows = low_vs_zero.set_index("model")
    dots = None
    if class_metrics is not None and t.n_classes == 2:
        dots = class_metrics[class_metrics["class"] == "low"].set_index("model")
    with style():
        fig = Figure(figsize=(5.6, 5.5), layout="constrained")
        ax = fig.subplots()
        n_low = int(yl.sum())
        title = (
            f"HER2-low vs HER2-zero, HER2-negative test patients\n(n = {yl.size}: {n_low} low, {yl.size - n_low} zero)"
        )
        _roc_axes(ax, title)
        for key, mp in preds.items():
            score = low_vs_zero_score(class_proba(mp.test, t)[neg], t)
            pts = roc_points(yl, score)
            ax.plot(pts.fpr, pts.tpr, color=MODEL_COLORS.get(key), lw=2, label=_auc_legend(rows.loc[key].to_dict()))
            if dots is not None and key in dots.index:
                m = dots.loc[key]
                ax.plot(1 - m["specificity"], m["sensitivity"], "o", color=MODEL_COLORS.get(key), ms=7, mec="white")
        ax.set_ylabel("Sensitivity for HER2-low (true-positive rate)")
        ax.set_xlabel("1 \u2212 Specificity (HER2-zero called low)")
        score_txt = "P(low)" if t.n_classes == 2 else "P(low) / (P(low) + P(zero))"
        ax.legend(
            loc="lower right", title=f"AUC (95% CI, DeLong)\nscore: {score_txt}", title_fontsize=9.5, **_LEGEND_BOX
        )
        if dots is not None:
            note = "\u25cf operating point at the\nOOF decision rule"
            ax.text(0.99, 0.40, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5, color="0.35")
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig
