"""Figure of a repeated cross-validation (notebook ``06_evaluation``): each model's test AUC and each DeLong AUC
difference in every repetition, their mean and percentile interval, and the single run.

Science layer (figures): takes :class:`her2lib.evaluate_repeats.RepeatedCVResult`, draws a
:class:`matplotlib.figure.Figure` (no pyplot state), saves it atomically when given a path and returns it.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..contract import MODELS
from ..evaluate_repeats import RepeatedCVResult
from ..io import save_figure
from ._style import MODEL_COLORS, style

__all__ = ["plot_repeats"]

_KEY_OF_LABEL = {m.label: k for k, m in MODELS.items()}


def _strip(ax, i: int, values: np.ndarray, color: str, filled: np.ndarray, s: pd.Series) -> None:
    """One column: the repetitions in ``repeat`` order (seeded jitter; hollow where ``filled`` is False; repetition 0,
    the single run, as a diamond) and, to their right, the mean (bar) with the percentile interval (line)."""
    x = i - 0.1 + np.random.default_rng(i).uniform(-0.09, 0.09, len(values))
    rest, filled = slice(1, None), filled.copy()
    ax.scatter(x[rest][filled[rest]], values[rest][filled[rest]], s=22, color=color, alpha=0.75, zorder=3, lw=0)
    hollow = ~filled[rest]
    ax.scatter(x[rest][hollow], values[rest][hollow], s=22, facecolors="white", edgecolors=color, zorder=3, lw=1.1)
    ax.scatter(
        x[:1], values[:1], marker="D", s=42, color=color if filled[0] else "white", edgecolors="black", lw=1.0, zorder=4
    )
    ax.plot([i + 0.2, i + 0.2], [s["low"], s["high"]], color="0.2", lw=1.4, zorder=2)
    ax.plot([i + 0.13, i + 0.27], [s["mean"], s["mean"]], color="0.2", lw=2.4, zorder=2)


def plot_repeats(result: RepeatedCVResult, path: str | os.PathLike | None = None, *, dpi: int = 300) -> Figure:
    """Two panels: (A) test AUC of each model, (B) the paired DeLong AUC difference of each pair (hollow points:
    DeLong P >= ``result.alpha``), per repetition, with the mean, the percentile interval and the single run.

    Returns
    -------
    matplotlib.figure.Figure
    """
    summ = result.summary
    level = float(summ["level"].iloc[0])
    with style():
        fig = Figure(figsize=(10.5, 4.6), layout="constrained")
        ax_auc, ax_diff = fig.subplots(1, 2, width_ratios=[1, 1.15])
        models = list(dict.fromkeys(result.auc["model"]))
        for i, m in enumerate(models):
            g = result.auc[result.auc["model"] == m].sort_values("repeat")
            s = summ[(summ["quantity"] == "test AUC") & (summ["model"] == m)].iloc[0]
            v = g["test_auc"].to_numpy()
            _strip(ax_auc, i, v, MODEL_COLORS.get(_KEY_OF_LABEL.get(m), "0.4"), np.ones(len(v), bool), s)
        ax_auc.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax_auc.set_xticks(range(len(models)), models)
        ax_auc.set_xlim(-0.5, len(models) - 0.5)
        ax_auc.set_ylabel("Test AUC")
        ax_auc.set_title("A  Test AUC per repetition", loc="left")
        pairs = list(dict.fromkeys(zip(result.delong["model_a"], result.delong["model_b"])))
        for i, (a, b) in enumerate(pairs):
            g = result.delong[(result.delong["model_a"] == a) & (result.delong["model_b"] == b)].sort_values("repeat")
            s = summ[(summ["quantity"] == "AUC difference (DeLong)") & (summ["model"] == f"{a} - {b}")].iloc[0]
            sig = g["p_value"].to_numpy() < result.alpha
            _strip(ax_diff, i, g["diff"].to_numpy(), MODEL_COLORS.get(_KEY_OF_LABEL.get(a), "0.4"), sig, s)
        ax_diff.axhline(0.0, color="0.45", lw=0.9)
        ax_diff.set_xticks(range(len(pairs)), [f"{a}\nvs {b}" for a, b in pairs])
        ax_diff.set_xlim(-0.5, len(pairs) - 0.5)
        ax_diff.set_ylabel("AUC difference (paired DeLong)")
        ax_diff.set_title("B  AUC differences per repetition", loc="left")
        for ax in (ax_auc, ax_diff):
            ax.grid(axis="y", alpha=0.25)
        alpha = f"{result.alpha:g}"
        handles = [
            Line2D([], [], marker="o", ls="", color="0.4", label="one repetition"),
            Line2D([], [], marker="o", ls="", mfc="white", mec="0.4", label=f"DeLong P ≥ {alpha}"),
            Line2D([], [], marker="D", ls="", color="0.6", mec="black", label="repetition 0 (the single run)"),
            Line2D([], [], color="0.2", lw=2.4, label="mean"),
            Line2D([], [], color="0.2", lw=1.4, label=f"{50 * (1 - level):g}th-{50 * (1 + level):g}th percentile"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=5, frameon=False, fontsize=9)
        fig.suptitle(
            f"Repeated cross-validation: {result.n_repeats} repetitions (new folds and training seed), one test cohort"
        )
        if path is not None:
            save_figure(fig, path, dpi)
    return fig
