"""The one validator of labels, scores and probabilities (raising :class:`~her2lib.errors.DataError`: bad input is
bad data), and small helpers shared by :mod:`her2lib.stats`, :mod:`her2lib.evaluate` and :mod:`her2lib.fusion`.

Science layer (imports core only).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st
from scipy.special import expit as _expit

from ..errors import DataError, ParameterError

__all__ = [
    "as_binary_labels",
    "as_scores",
    "as_probabilities",
    "check_classes",
    "as_class_labels",
    "as_probability_matrix",
    "check_level",
    "clopper_pearson",
    "logistic_fit",
]


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
        raise DataError(
            f"{name} must hold 0/1 labels (1 = HER2-positive); saw non-numeric values {bad}. "
            "Map the labels to 0/1 first."
        ) from None
    ok = (yf == 0) | (yf == 1)
    if not ok.all():
        bad = sorted({str(v) for v in y[~ok].tolist()})[:5]
        raise DataError(
            f"{name} must hold 0/1 labels (1 = HER2-positive); saw {bad} at "
            f"{int((~ok).sum())} position(s), first index {int(np.flatnonzero(~ok)[0])}. "
            "Map the labels to 0/1 and drop missing ones first."
        )
    return yf.astype(np.int8)


def as_scores(y_score, n: int, name: str = "y_score", *, against: str = "y_true") -> np.ndarray:
    """Return ``y_score`` as a finite float64 array of length ``n`` (the length of ``against``), or raise
    :class:`DataError`."""
    s = np.asarray(y_score)
    if s.ndim != 1:
        raise DataError(
            f"{name} must be 1-D (n_patients,), got shape {s.shape}; pass one score per patient "
            "(e.g. the probability of HER2-positive, column p_her2)."
        )
    if s.shape[0] != n:
        raise DataError(f"{name} has {s.shape[0]} values but {against} has {n}; pass one score per patient.")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric; got dtype {s.dtype}.") from None
    bad = ~np.isfinite(s)
    if bad.any():
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN/inf), first at index "
            f"{int(np.flatnonzero(bad)[0])}; drop those patients or fix the predictions."
        )
    return s


def as_probabilities(y_prob, n: int, name: str = "y_prob", *, against: str = "y_true") -> np.ndarray:
    """Return ``y_prob`` as a float64 array of ``n`` finite probabilities in [0, 1], or raise :class:`DataError`
    (the checks of :func:`as_scores`, then the range)."""
    p = as_scores(y_prob, n, name, against=against)
    out = (p < 0) | (p > 1)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataError(
            f"{name} must hold probabilities in [0, 1]; saw {int(out.sum())} value(s) outside, first "
            f"{p[i]!r} at index {i}. Pass probabilities (e.g. sigmoid of a logit), not raw scores."
        )
    return p


def check_classes(classes) -> tuple:
    """Validate the class list of a multiclass analysis: at least two distinct classes, in the caller's order."""
    if classes is None or isinstance(classes, (str, bytes)):
        raise ParameterError(
            f"classes must be a sequence of at least 2 class names, e.g. ('zero', 'low', 'positive'); got {classes!r}."
        )
    out = tuple(classes)
    if len(out) < 2 or len(set(out)) != len(out):
        raise ParameterError(f"classes must hold at least 2 distinct class names; got {out!r}.")
    return out


def as_class_labels(
    y, classes: tuple, name: str = "y_true", *, n: int | None = None, against: str = "y_true"
) -> np.ndarray:
    """Return ``y`` as int64 indices into ``classes`` (validated by :func:`check_classes`), or raise
    :class:`DataError` naming the labels not in ``classes``; with ``n``, also check the length."""
    y = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D (n_patients,), got shape {y.shape}; pass one class label per patient.")
    if y.size == 0:
        raise DataError(f"{name} is empty; pass at least one patient.")
    if n is not None and y.shape[0] != n:
        raise DataError(f"{name} has {y.shape[0]} labels but {against} has {n}; pass one label per patient.")
    lookup = {c: i for i, c in enumerate(classes)}
    idx = np.fromiter((lookup.get(v, -1) if _hashable(v) else -1 for v in y.tolist()), dtype=np.int64, count=y.size)
    bad = idx < 0
    if bad.any():
        shown = sorted({repr(v) for v in y[bad].tolist()})[:5]
        raise DataError(
            f"{name} holds {int(bad.sum())} label(s) not among the classes {list(classes)}: {shown}, first at index "
            f"{int(np.flatnonzero(bad)[0])}. Map the labels to those classes and drop patients without one."
        )
    return idx


def _hashable(v) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def as_probability_matrix(
    y_proba, n: int, n_classes: int, *, name: str = "y_proba", against: str = "y_true"
) -> np.ndarray:
    """Return ``y_proba`` as a float64 ``(n, n_classes)`` matrix of finite probabilities in [0, 1] whose rows sum to
    1 within 1e-6, or raise :class:`DataError` saying which check failed and where."""
    p = np.asarray(y_proba)
    if p.ndim != 2 or p.shape != (n, n_classes):
        raise DataError(
            f"{name} must have shape (n_patients, n_classes) = ({n}, {n_classes}) (one row per patient of {against}, "
            f"one column per class, in the order of classes); got shape {p.shape}."
        )
    try:
        p = p.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric; got dtype {p.dtype}.") from None
    bad = ~np.isfinite(p)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN/inf), first at row {r}, column {c}; drop those "
            "patients or fix the predictions."
        )
    out = (p < 0) | (p > 1)
    if out.any():
        r, c = np.argwhere(out)[0]
        raise DataError(
            f"{name} must hold probabilities in [0, 1]; saw {int(out.sum())} value(s) outside, first {p[r, c]!r} at "
            f"row {r}, column {c}. Pass class probabilities (softmax of the logits), not raw scores."
        )
    dev = np.abs(p.sum(axis=1) - 1.0)
    off = dev > 1e-6
    if off.any():
        r = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{name}: {int(off.sum())} row(s) do not sum to 1 (within 1e-6), first row {r} sums to "
            f"{p[r].sum()!r}. Pass the probabilities of all {n_classes} classes (softmax), one column per class."
        )
    return p


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


def logistic_fit(
    X: np.ndarray,
    y: np.ndarray,
    offset: np.ndarray | None = None,
    *,
    penalty: np.ndarray | None = None,
    max_iter: int = 100,
    step_tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Logistic regression ``logit P(y=1) = offset + X beta`` by Newton-Raphson (maximum likelihood, or with an
    L2 penalty ``sum(penalty * beta**2) / 2`` when ``penalty`` is given, one weight per column of ``X``).

    Step halving keeps the (penalised) log-likelihood from decreasing. Returns ``(beta, cov)`` with ``cov`` the
    inverse of the (penalised) information matrix at ``beta``, or None if the information is singular or the
    iteration does not converge (``max |step| < step_tol`` within ``max_iter`` iterations), as under separation
    without a penalty. Used by :func:`her2lib.stats.calibration` and the fusion bootstrap.
    """
    n, k = X.shape
    off = np.zeros(n) if offset is None else offset
    pen = np.zeros(k) if penalty is None else np.asarray(penalty, dtype=float)
    beta = np.zeros(k)

    def loglik(b: np.ndarray) -> float:
        eta = off + X @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)) - 0.5 * np.sum(pen * b * b))

    def information(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = _expit(off + X @ b)
        return X.T @ (X * (mu * (1.0 - mu))[:, None]) + np.diag(pen), X.T @ (y - mu) - pen * b

    ll = loglik(beta)
    for _ in range(max_iter):
        info, grad = information(beta)
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        t = 1.0
        while True:
            cand = beta + t * step
            ll_c = loglik(cand)
            if ll_c >= ll - 1e-12 * (1.0 + abs(ll)) or t < 1e-8:
                break
            t /= 2.0
        beta, ll = cand, ll_c
        if np.max(np.abs(t * step)) < step_tol:
            try:
                cov = np.linalg.inv(information(beta)[0])
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
                return None
            return beta, cov
    return None
