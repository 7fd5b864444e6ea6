"""Figures of notebook ``06_evaluation``: Figure 3A (ROC curves), Figure 3B (diagnostic performance), reliability
curves and decision curves of the test cohort.

Science layer (figures): each function takes the tables of :mod:`her2lib.evaluate`, draws a
:class:`matplotlib.figure.Figure` (no pyplot state, no backend switch), saves it atomically when given a path and
returns it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..evaluate import COHORT_NAMES, THRESHOLD_RULES, ModelPredictions, roc_points
from ..io import save_figure
from ..stats import brier_score, calibration_curve, decision_curve
from ._style import MODEL_COLORS, style

__all__ = ["plot_roc", "plot_performance", "plot_calibration", "plot_decision_curve", "plot_internal_external"]


def plot_roc(
    preds: Mapping[str, ModelPredictions],
    performance: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    dpi: int = 300,
    svg: bool = True,
    cohort: str = "test",
) -> Figure:
    """Figure 3A: test-cohort ROC curves, legend with AUC and its 95% CI (method named in the legend title);
    ``cohort="external"``: the same for the external validation cohort (:func:`her2lib.evaluate.load_predictions`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    perf = performance.set_index("model")
    with style():
        fig = Figure(figsize=(5.6, 5.4), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1, label="Chance")
        for key, mp in preds.items():
            pts = roc_points(mp.test["her2"], mp.test["p_her2"])
            r = perf.loc[key]
            ax.plot(
                pts.fpr,
                pts.tpr,
                color=MODEL_COLORS.get(key),
                lw=2,
                drawstyle="default",
                label=f"{mp.label}: AUC {r['auc']:.3f} ({r['auc_ci_low']:.3f}\u2013{r['auc_ci_high']:.3f})",
            )
            # operating point at the OOF Youden threshold (averaged over the fold models when per-fold files exist)
            ax.plot(
                1 - r["specificity"], r["sensitivity"], "o", color=MODEL_COLORS.get(key), ms=7, mec="white", mew=1.2
            )
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("1 \u2212 Specificity (false-positive rate)")
        ax.set_ylabel("Sensitivity (true-positive rate)")
        n_pos, n_neg = int(perf["n_pos"].iloc[0]), int(perf["n_neg"].iloc[0])
        ax.set_title(f"ROC curves, {COHORT_NAMES[cohort]} (n = {n_pos + n_neg}; {n_pos} HER2+)")
        method = str(perf["auc_ci_method"].iloc[0]).split(" (")[0]
        ax.legend(loc="lower right", title=f"AUC (95% CI, {method})", title_fontsize=9.5, frameon=False)
        per_fold = "threshold_rule" in perf and str(perf["threshold_rule"].iloc[0]) == THRESHOLD_RULES["per-fold"]
        note = (
            "\u25cf operating point at the training-OOF\nYouden threshold (mean of the fold models)"
            if per_fold
            else "\u25cf operating point at the\ntraining-OOF Youden threshold"
        )
        ax.text(0.99, 0.36, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5, color="0.35")
        ax.grid(alpha=0.25)
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig


_METRIC_LABELS = (
    ("auc", "AUC"),
    ("accuracy", "Accuracy"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("f1", "F1"),
)


def plot_performance(
    performance: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    dpi: int = 300,
    svg: bool = False,
    cohort: str = "test",
) -> Figure:
    """Figure 3B: grouped bars of AUC, accuracy, sensitivity, specificity, PPV, NPV and F1 per model, with 95% CI
    error bars and the value printed above each bar.

    Returns
    -------
    matplotlib.figure.Figure
    """
    with style():
        n_models = len(performance)
        fig = Figure(figsize=(10.5, 4.8), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(_METRIC_LABELS))
        width = 0.8 / max(n_models, 1)
        for i, (_, r) in enumerate(performance.iterrows()):
            vals = np.array([r[m] for m, _ in _METRIC_LABELS], dtype=float)
            lo = np.array([r[f"{m}_ci_low"] for m, _ in _METRIC_LABELS], dtype=float)
            hi = np.array([r[f"{m}_ci_high"] for m, _ in _METRIC_LABELS], dtype=float)
            err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(
                pos,
                np.nan_to_num(vals),
                width * 0.92,
                color=MODEL_COLORS.get(r["model"]),
                label=f"{r['label']} (threshold {r['threshold']:.2f})",
                yerr=np.nan_to_num(err),
                error_kw=dict(elinewidth=0.9, capsize=2, ecolor="0.25"),
            )
            for xp, v in zip(pos, vals):
                dark = not np.isfinite(v) or v < 0.15  # short bar: print above it in dark ink
                ax.text(
                    xp,
                    (np.nan_to_num(v) + 0.02) if dark else 0.02,
                    "NA" if not np.isfinite(v) else f"{v:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                    rotation=90,
                    color="0.15" if dark else "white",
                    fontweight="bold",
                )
        ax.set_xticks(x, [lab for _, lab in _METRIC_LABELS])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Value (95% CI)")
        method = str(performance["auc_ci_method"].iloc[0]).split(" (")[0] if len(performance) else ""
        per_fold = (
            "threshold_rule" in performance
            and len(performance)
            and str(performance["threshold_rule"].iloc[0]) == THRESHOLD_RULES["per-fold"]
        )
        ax.set_title(
            f"Diagnostic performance, {COHORT_NAMES[cohort]} (thresholds: Youden on training OOF"
            + ("; metrics: mean of the fold models)" if per_fold else ")")
        )
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=n_models, frameon=False)
        ax.text(
            1.0,
            -0.2,
            f"AUC CI: {method}; proportions: Clopper-Pearson; F1: see performance.csv",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8.5,
            color="0.35",
        )
        ax.grid(axis="y", alpha=0.25)
        if path is not None:
            save_figure(fig, path, dpi, svg=svg)
    return fig


def plot_calibration(
    preds: Mapping[str, ModelPredictions],
    path: str | os.PathLike | None = None,
    *,
    n_bins: int = 5,
    dpi: int = 300,
    cohort: str = "test",
) -> Figure:
    """Reliability curves (quantile bins, observed fraction with 95% CI) of each model on the test cohort, with
    the Brier score in the legend and the distribution of predictions underneath.

    Returns
    -------
    matplotlib.figure.Figure
    """
    with style():
        fig = Figure(figsize=(5.6, 6.4), layout="constrained")
        ax, axh = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1, label="Perfect calibration")
        bins = np.linspace(0, 1, 21)
        for j, (key, mp) in enumerate(preds.items()):
            y, p = mp.test["her2"].to_numpy(), mp.test["p_her2"].to_numpy()
            cc = calibration_curve(y, p, n_bins=n_bins)
            off = (j - (len(preds) - 1) / 2) * 0.008
            ax.errorbar(
                cc.mean_predicted + off,
                cc.observed,
                yerr=[cc.observed - cc.observed_ci_low, cc.observed_ci_high - cc.observed],
                fmt="o-",
                color=MODEL_COLORS.get(key),
                lw=1.6,
                ms=5,
                capsize=2,
                elinewidth=0.8,
                label=f"{mp.label} (Brier {brier_score(y, p):.3f})",
            )
            axh.hist(p, bins=bins, histtype="step", lw=1.5, color=MODEL_COLORS.get(key))
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("Observed HER2-positive fraction")
        ax.set_title(f"Calibration, {COHORT_NAMES[cohort]} ({n_bins} quantile bins)")
        ax.legend(loc="upper left", frameon=False)
        ax.grid(alpha=0.25)
        axh.set_xlabel("Predicted probability of HER2-positive")
        axh.set_ylabel("Patients")
        if path is not None:
            save_figure(fig, path, dpi)
    return fig


def plot_decision_curve(
    preds: Mapping[str, ModelPredictions],
    path: str | os.PathLike | None = None,
    *,
    dpi: int = 300,
    max_threshold: float = 0.9,
    cohort: str = "test",
) -> Figure:
    """Decision curves (net benefit vs threshold probability) of each model on the test cohort, with
    treat-all and treat-none.

    Returns
    -------
    matplotlib.figure.Figure
    """
    pt = np.round(np.arange(1, int(round(max_threshold * 100)) + 1) / 100, 2)
    with style():
        fig = Figure(figsize=(6.4, 4.8), layout="constrained")
        ax = fig.subplots()
        first = next(iter(preds.values()))
        ref = decision_curve(first.test["her2"], first.test["p_her2"], pt)
        ax.plot(ref.threshold, ref.treat_all, color="0.45", lw=1.3, label="Treat all as HER2+")
        ax.axhline(0, color="0.15", lw=1.3, label="Treat none")
        top = float(first.test["her2"].mean())
        for key, mp in preds.items():
            dc = decision_curve(mp.test["her2"], mp.test["p_her2"], pt)
            ax.plot(dc.threshold, dc.net_benefit, color=MODEL_COLORS.get(key), lw=2, label=mp.label)
        ax.set_ylim(-0.05, top + 0.05)
        ax.set_xlim(0, max_threshold)
        ax.set_xlabel("Threshold probability")
        ax.set_ylabel("Net benefit")
        ax.set_title(f"Decision curve, {COHORT_NAMES[cohort]}")
        ax.legend(loc="upper right", frameon=False)
        ax.grid(alpha=0.25)
        if path is not None:
            save_figure(fig, path, dpi)
    return fig


def plot_internal_external(
    test: Mapping[str, ModelPredictions],
    external: Mapping[str, ModelPredictions],
    table: pd.DataFrame,
    *,
    path: str | os.PathLike | None = None,
    dpi: int = 300,
) -> Figure:
    """One panel per model: its ROC curve in the test cohort (solid) and in the external validation cohort (dashed),
    with both AUCs and the unpaired DeLong P (:func:`her2lib.evaluate.internal_external_table`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    tab = table.set_index("model")
    keys = [k for k in test if k in external and k in tab.index]
    with style():
        fig = Figure(figsize=(4.2 * max(len(keys), 1), 4.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, max(len(keys), 1), sharey=True))
        for ax, key in zip(axes, keys):
            r, color = tab.loc[key], MODEL_COLORS.get(key)
            ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1)
            for preds, ls, name, a in (
                (test, "-", "test", r["auc_test"]),
                (external, "--", "external", r["auc_external"]),
            ):
                mp = preds[key]
                pts = roc_points(mp.test["her2"], mp.test["p_her2"])
                n, n_pos = len(mp.test), int(mp.test["her2"].sum())
                ax.plot(pts.fpr, pts.tpr, ls=ls, color=color, lw=2, label=f"{name} (n = {n}, {n_pos} HER2+): {a:.3f}")
            p = r["p_value"]
            ax.set_title(
                f"{test[key].label}: test vs external\nunpaired DeLong P {'< 0.001' if p < 0.001 else f'= {p:.3f}'}"
            )
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.set_xlabel("1 \u2212 Specificity")
            ax.legend(loc="lower right", title="cohort: AUC", title_fontsize=9, fontsize=8.5, frameon=False)
            ax.grid(alpha=0.25)
        axes[0].set_ylabel("Sensitivity")
        if path is not None:
            save_figure(fig, path, dpi)
    return fig
