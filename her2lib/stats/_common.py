"""Shared validation and small helpers for :mod:`her2lib.stats` (private)."""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from ..errors import DataError, ParameterError

__all__ = ["as_binary_labels", "as_scores", "check_level", "clopper_pearson"]


def as_binary_labels(y_true, name: str = "y_true") -> np.ndarray:
    """Return ``y_true`` as an int8 array of 0/1, or raise :class:`DataError` naming the bad values."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D (n_patients,), got shape {y.shape}; pass one label per patient.")
    if y.size == 0:
        raise DataError(f"{name} is empty; pass at least one patient.")
    if y.dtype == bool:
        return y.astype(np.int8)
    try:
        yf = y.astype(float)
    except (TypeError, ValueError):
        bad = sorted({str(v) for v in y.tolist()})[:5]
        raise DataError(f"{name} must hold 0/1 labels (1 = HER2-positive); saw non-numeric values {bad}. "
                        "Map the labels to 0/1 first.") from None
    ok = (yf == 0) | (yf == 1)
    if not ok.all():
        bad = sorted({str(v) for v in y[~ok].tolist()})[:5]
        raise DataError(f"{name} must hold 0/1 labels (1 = HER2-positive); saw {bad} at "
                        f"{int((~ok).sum())} position(s), first index {int(np.flatnonzero(~ok)[0])}. "
                        "Map the labels to 0/1 and drop missing ones first.")
    return yf.astype(np.int8)


def as_scores(y_score, n: int, name: str = "y_score") -> np.ndarray:
    """Return ``y_score`` as a finite float64 array of length ``n``, or raise :class:`DataError`."""
    s = np.asarray(y_score)
    if s.ndim != 1:
        raise DataError(f"{name} must be 1-D (n_patients,), got shape {s.shape}; pass one score per patient "
                        "(e.g. the probability of HER2-positive, column p_her2).")
    if s.shape[0] != n:
        raise DataError(f"{name} has {s.shape[0]} values but y_true has {n}; pass one score per patient.")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric; got dtype {s.dtype}.") from None
    bad = ~np.isfinite(s)
    if bad.any():
        raise DataError(f"{name} has {int(bad.sum())} non-finite value(s) (NaN/inf), first at index "
                        f"{int(np.flatnonzero(bad)[0])}; drop those patients or fix the predictions.")
    return s


def check_level(level: float) -> float:
    """Validate a confidence level in (0, 1)."""
    if not isinstance(level, (int, float)) or not (0.0 < float(level) < 1.0):
        raise ParameterError(f"level must be a number strictly between 0 and 1 (e.g. 0.95); got {level!r}.")
    return float(level)


def clopper_pearson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion ``k / n``.

    ``k`` may be non-integer (MedCalc's AUC interval uses ``k = AUC * n``). Returns ``(nan, nan)`` if ``n == 0``.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    a = 1.0 - level
    lo = 0.0 if k <= 0 else float(_st.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(_st.beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)
