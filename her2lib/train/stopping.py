"""The epoch-selection rule and early stopping, as pure functions (no torch).

:func:`~her2lib.train.loop.fit_fold` keeps the epoch whose :func:`selection_key` is the largest so far (selection-set
AUC, then the lower selection loss; the first such epoch on a tie) and, with ``TrainConfig.patience``, stops once
:func:`stops_early` says so. Because a stopped fold's epochs are exactly the first epochs of the unstopped fold
(same seeds per epoch), :func:`replay_early_stopping` tells from an unstopped fold's history (``metrics.csv``) which
epoch any patience would have chosen and how many epochs it would have run, without training again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ParameterError

__all__ = ["selection_key", "improves", "stops_early", "replay_early_stopping", "Replay"]


def selection_key(auc: float, val_loss: float) -> tuple[float, float]:
    """The key an epoch is ranked by: selection-set AUC (an undefined AUC counts as -1), then the lower loss."""
    return (auc if math.isfinite(auc) else -1.0, -val_loss)


def improves(key: tuple[float, float], best_key: tuple[float, float] | None) -> bool:
    """True when an epoch's ``key`` beats the best so far (strictly: on a tie the earlier epoch stays); the first
    epoch (``best_key=None``) always does."""
    return best_key is None or key > best_key


def stops_early(epoch: int, best_epoch: int, patience: int | None) -> bool:
    """True once ``patience`` epochs have passed without a better key: ``epoch`` (1-based, just finished) minus
    ``best_epoch`` (1-based) is at least ``patience``. ``patience=None``: never."""
    return patience is not None and epoch - best_epoch >= patience


@dataclass(frozen=True)
class Replay:
    """What early stopping with ``patience`` would have done to one fold: the epoch chosen and the epochs run."""

    patience: int | None
    best_epoch: int
    epochs_run: int


def replay_early_stopping(history: Iterable[Mapping], patience: int | None) -> Replay:
    """Replay the selection and early-stopping rule of :func:`~her2lib.train.loop.fit_fold` over one fold's history.

    ``history``: the fold's rows in epoch order, each with ``epoch`` (1-based), ``val_auc`` and ``val_loss`` (a fold
    model's ``history`` or its rows of ``metrics.csv``). Exact for any ``patience`` when the history was trained
    with a larger patience or none, since the stopped run's epochs are the unstopped run's first epochs.

    >>> rows = [{"epoch": e, "val_auc": a, "val_loss": 0.6} for e, a in enumerate([0.6, 0.7, 0.65, 0.68, 0.8], 1)]
    >>> replay_early_stopping(rows, 2), replay_early_stopping(rows, None).best_epoch
    (Replay(patience=2, best_epoch=2, epochs_run=4), 5)
    """
    if patience is not None and patience < 1:
        raise ParameterError(f"replay_early_stopping: patience={patience} must be >= 1 (or None: every epoch).")
    best_key, best_epoch, epoch = None, 0, 0
    for expected, row in enumerate(history, 1):
        epoch = int(row["epoch"])
        if epoch != expected:
            raise ParameterError(f"replay_early_stopping: epoch {epoch} where {expected} was expected; give one "
                                 "fold's rows in epoch order (metrics.csv has a 'fold' column to split by).")  # fmt: skip
        key = selection_key(float(row["val_auc"]), float(row["val_loss"]))
        if improves(key, best_key):
            best_key, best_epoch = key, epoch
        if stops_early(epoch, best_epoch, patience):
            break
    if epoch == 0:
        raise ParameterError("replay_early_stopping: the history has no epochs.")
    return Replay(patience, best_epoch, epoch)
