"""Figures of the added-value analyses (notebook ``06_evaluation``): ROC curves of an analysis's models (radiomics:
Radiomics, DL-US&MRI, DL-US&MRI+Radiomics; clinical: DL-US&MRI, DL-US&MRI+Clinical) per evaluation cohort, with
the paired DeLong P against DL-US&MRI and the NRI/IDI of the combined model, and (radiomics) the features the LASSO
kept across the training folds.

Science layer (figures): takes :mod:`her2lib.evaluate_added` results, draws a Figure, saves it atomically when
given a path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..evaluate import COHORT_NAMES, roc_points
from ..evaluate_added import ANALYSES, REFERENCE, AddedValueComparison, p_text
from ..io import save_figure
from ._style import MODEL_COLORS, style

__all__ = ["ADDED_COLORS", "plot_added_value"]

#: DL-US&MRI keeps its colour; radiomics (Okabe-Ito purple), the combined models (sky blue, orange)
ADDED_COLORS = {
    "radiomics": "#CC79A7",
    REFERENCE: MODEL_COLORS[REFERENCE],
    "dl_us_mri_radiomics": "#56B4E9",
    "dl_us_mri_clinical": "#E69F00",
}
_MODALITY_COLORS = {"us": MODEL_COLORS["dl_us"], "mri": MODEL_COLORS["dl_mri"]}


def _roc_panel(ax, preds: Mapping[str, pd.DataFrame], comp: AddedValueComparison) -> None:
    models, _, added = ANALYSES[comp.analysis]
    a = comp.auc.set_index("model")
    d = comp.delong.set_index("model")
    ax.plot([0, 1], [0, 1], ls=":", color="0.55", lw=1)
    for key, (label, _) in models.items():
        t = preds[key]
        pts = roc_points(t["her2"], t["p_her2"])
        r = a.loc[key]
        vs = "" if key == REFERENCE else f"; vs DL-US&MRI {p_text(d.at[key, 'p_value'])}"
        ax.plot(
            pts.fpr,
            pts.tpr,
            color=ADDED_COLORS[key],
            lw=2.2 if key == REFERENCE else 1.8,
            ls="-" if key != "radiomics" else "--",
            zorder=4 if key == "radiomics" else 3,  # dashed on top: visible where the curves coincide
            label=f"{label}: {r['auc']:.3f} ({r['ci_low']:.3f}\u2013{r['ci_high']:.3f}){vs}",
        )
    rec = comp.reclassification.set_index("statistic")
    pct = f"{float(a['ci_level'].iloc[0]):.0%}"
    ax.text(
        0.98,
        0.04,
        f"adding {'radiomics' if comp.analysis == 'radiomics' else 'BI-RADS, age, size'} to DL-US&MRI:\n"
        f"NRI {rec.at['nri', 'estimate']:+.2f} ({pct} CI {rec.at['nri', 'ci_low']:+.2f} to {rec.at['nri', 'ci_high']:+.2f})\n"
        f"  HER2+ {rec.at['nri_events', 'estimate']:+.2f}, HER2\u2212 {rec.at['nri_nonevents', 'estimate']:+.2f}\n"
        f"IDI {rec.at['idi', 'estimate']:+.3f} ({rec.at['idi', 'ci_low']:+.3f} to {rec.at['idi', 'ci_high']:+.3f})",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8.5,
        color="0.25",
    )
    first = a.iloc[0]
    ax.set_title(f"{COHORT_NAMES[comp.cohort].capitalize()} (n = {first['n']}; {first['n_pos']} HER2+)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 \u2212 Specificity")
    ax.set_ylabel("Sensitivity")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        title=f"AUC ({pct} CI, DeLong)",
        title_fontsize=8.5,
        fontsize=8,
        frameon=False,
    )
    ax.grid(alpha=0.25)


def _features_panel(ax, selected: pd.DataFrame, n_folds: int, top: int) -> None:
    sel = selected.sort_values(["n_folds_selected", "feature"], ascending=[False, True]).head(top).iloc[::-1]
    names = [re.sub(r"_fb[ns]_[nw][\d.]+$", "", f).replace("_", " ", 1) for f in sel["feature"]]
    colors = [_MODALITY_COLORS.get(f.split("_", 1)[0], "0.5") for f in sel["feature"]]
    y = np.arange(len(sel))
    ax.barh(y, sel["n_folds_selected"], color=colors, height=0.7)
    ax.set_yticks(y, names, fontsize=7.5)
    ax.set_xlim(0, n_folds + 0.2)
    ax.set_xticks(range(n_folds + 1))
    ax.set_xlabel(f"training folds selecting it (of {n_folds})")
    ax.set_title(f"Features in the radiomics model\n(top {len(sel)} of {len(selected)} ever selected; IBSI tags)")
    for m, c in _MODALITY_COLORS.items():
        ax.bar(0, 0, color=c, label={"us": "ultrasound", "mri": "MRI"}[m])
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.25)


def plot_added_value(
    cohorts: Sequence[tuple[Mapping[str, pd.DataFrame], AddedValueComparison]],
    *,
    selected: pd.DataFrame | None = None,
    n_folds: int = 4,
    path: str | os.PathLike | None = None,
    dpi: int = 300,
    top: int = 15,
) -> Figure:
    """One ROC panel per evaluation cohort (the analysis's models) and, with ``selected``, one panel of the radiomic
    features selected.

    Parameters
    ----------
    cohorts : sequence of (predictions, AddedValueComparison)
        Per cohort (test, then external when there is one): :func:`her2lib.evaluate_added.load_added_predictions`
        output and its :func:`~her2lib.evaluate_added.compare_added` result.
    selected : DataFrame, optional
        ``tables/radiomics_features_selected.csv`` (``feature, n_folds_selected, ...``): the radiomics analysis.
    n_folds : int
        Number of training folds (the features panel).
    path, dpi
        Where to save the PNG, and its resolution.
    top : int
        Features shown.

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = len(cohorts) + (selected is not None)
    with style():
        fig = Figure(figsize=(5.0 * n, 5.4), layout="constrained")
        ratios = [1.15] * len(cohorts) + ([1.0] if selected is not None else [])
        axes = np.atleast_1d(fig.subplots(1, n, gridspec_kw={"width_ratios": ratios}))
        for ax, (preds, comp) in zip(axes, cohorts):
            _roc_panel(ax, preds, comp)
        if selected is not None and len(selected):
            _features_panel(axes[-1], selected, n_folds, top)
        elif selected is not None:
            axes[-1].text(0.5, 0.5, "no feature selected", ha="center", va="center")
            axes[-1].set_axis_off()
        if path is not None:
            save_figure(fig, path, dpi)
    return fig
