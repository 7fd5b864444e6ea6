"""Figure of notebooks 03/04: learning curves of the cross-validated fold models.

Science layer (figures).
"""

from __future__ import annotations

import os

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..contract import SELECTION_SETS
from ..io import save_figure
from ..options import look_up_option
from ..train.stopping import replay_early_stopping

__all__ = ["plot_learning_curves"]


def plot_learning_curves(
    history: pd.DataFrame | None,
    *,
    path: str | os.PathLike | None = None,
    title: str = "",
    selection: str = "inner",
    auc_label: str = "AUC",
    epochs: int | None = None,
) -> Figure | None:
    """Learning curves: training/selection-set loss and selection-set AUC per epoch, one line per fold.

    ``history=None`` (training skipped) draws nothing and returns None.

    Parameters
    ----------
    history : pandas.DataFrame
        ``CVResult.history`` (:func:`her2lib.train.run_cv`).
    path : path, optional
        PNG written atomically.
    title : str
    selection : {"inner", "heldout"}
        Which set the solid lines and the chosen epoch refer to (:data:`her2lib.contract.SELECTIONS`).
    auc_label : str
        Name of the selection metric (``"macro AUC"`` for the three-class task).
    epochs : int, optional
        The epochs each fold was given (``TrainConfig.epochs``); when a fold's curve ends before, the title says
        that early stopping ended it.

    Returns
    -------
    matplotlib.figure.Figure
        Not registered with pyplot (a notebook shows the saved PNG).
    """
    if history is None:
        return None
    where = look_up_option(selection, SELECTION_SETS, name="selection")
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for k, h in history.groupby("fold"):
        ep = h["epoch"]  # 1-based
        (line,) = axes[0].plot(ep, h["train_loss"], ls="--", lw=1)
        axes[0].plot(ep, h["val_loss"], color=line.get_color(), lw=1.2, label=f"fold {k}")
        axes[1].plot(ep, h["val_auc"], color=line.get_color(), lw=1.2, label=f"fold {k}")
        # the epoch training kept: the best selection key (AUC, then the lower loss), as the loop ranks them
        best = h.set_index("epoch").loc[
            replay_early_stopping(h.sort_values("epoch").to_dict("records"), None).best_epoch
        ]
        axes[1].plot(best.name, best["val_auc"], "o", color=line.get_color(), ms=4)
    axes[0].set(xlabel="epoch", ylabel="loss", title=f"loss (dashed: training, solid: {where})")
    axes[1].set(xlabel="epoch", ylabel=auc_label, title=f"{where} {auc_label} (dot: chosen epoch)", ylim=(0, 1))
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes[1].legend(fontsize=8)
    if epochs is not None and len(history) and bool((history.groupby("fold")["epoch"].max() < epochs).any()):
        title = f"{title}: " if title else ""
        title += f"a curve that ends before epoch {epochs} is a fold ended by early stopping"
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
