"""Decision-curve analysis (Vickers & Elkin, 2006): net benefit of acting on a model's predictions.

Science layer.

References
----------
Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
*Med Decis Making* 2006;26(6):565-574.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ._common import as_binary_labels, as_probabilities

__all__ = ["decision_curve"]


def decision_curve(y_true, y_prob, thresholds: Sequence[float] | np.ndarray | None = None) -> pd.DataFrame:
    """Net benefit of treating patients with ``p >= pt`` over threshold probabilities ``pt``.

    Parameters
    ----------
    y_true : array_like of 0/1, shape (n_patients,)
    y_prob : array_like of float in [0, 1], shape (n_patients,)
    thresholds : array_like, optional
        Threshold probabilities in (0, 1); default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    DataFrame
        Columns ``threshold, net_benefit, treat_all, treat_none`` where
        ``net_benefit = TP/n - FP/n * pt/(1 - pt)``, ``treat_all = prev - (1 - prev) * pt/(1 - pt)`` and
        ``treat_none = 0``.

    Raises
    ------
    DataError
        Labels not 0/1, lengths differ, a prediction not finite or outside [0, 1].
    ParameterError
        Thresholds not strictly inside (0, 1).
    """
    y = as_binary_labels(y_true).astype(int)
    p = as_probabilities(y_prob, y.shape[0])
    pt = np.round(np.arange(1, 100) / 100, 2) if thresholds is None else np.asarray(thresholds, dtype=float)
    if pt.ndim != 1 or pt.size == 0 or not np.all((pt > 0) & (pt < 1)):
        raise ParameterError("thresholds must be a non-empty 1-D array of probabilities strictly in (0, 1).")
    n = y.size
    pos = y == 1
    call = p[None, :] >= pt[:, None]
    tp = (call & pos[None, :]).sum(1)
    fp = (call & ~pos[None, :]).sum(1)
    w = pt / (1 - pt)
    prev = pos.mean()
    return pd.DataFrame(
        {
            "threshold": pt,
            "net_benefit": tp / n - fp / n * w,
            "treat_all": prev - (1 - prev) * w,
            "treat_none": np.zeros_like(pt),
        }
    )
