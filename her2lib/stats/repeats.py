"""How a statistic varies across the repetitions of a repeated cross-validation (each repetition: new folds and a
new training seed, the same test cohort): mean, standard deviation and empirical percentile interval.

Science layer (imports core only).

This describes the spread that the data split and the seed cause; it is not a confidence interval for a population
AUC (the repetitions share every patient, so they are not independent samples). Percentiles are R's default
``quantile(type = 7)`` (linear interpolation between order statistics, numpy's default); the SD has denominator
``n - 1`` (R's ``sd``). Checked against Python's ``statistics.quantiles(method="inclusive")`` and
``statistics.stdev`` (``tests/test_repeats.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import DataError
from ._common import check_level

__all__ = ["RepeatDistribution", "repeat_distribution", "REPEAT_METHOD"]

REPEAT_METHOD = "across-repetition distribution: mean, SD (n - 1), empirical percentiles (R quantile type 7)"


@dataclass(frozen=True)
class RepeatDistribution:
    """A statistic's values over the repetitions, summarised.

    Attributes
    ----------
    n : int
        Repetitions with a finite value.
    mean, sd : float
        Mean and standard deviation (denominator ``n - 1``; NaN for one value).
    low, high : float
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (type 7).
    level : float
        Share of the distribution between ``low`` and ``high`` (0.95: the 2.5th and 97.5th percentiles).
    minimum, maximum : float
    method : str
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    level: float
    minimum: float
    maximum: float
    method: str = REPEAT_METHOD

    def to_row(self) -> dict:
        """Flat dict for a table."""
        return asdict(self)


def repeat_distribution(values, *, level: float = 0.95) -> RepeatDistribution:
    """Summarise one statistic over the repetitions of a repeated cross-validation.

    Parameters
    ----------
    values : array-like of float, shape (n_repeats,)
        The statistic of each repetition (e.g. a model's test AUC, or a DeLong AUC difference). NaN values (a
        repetition where it is undefined) are left out and ``n`` counts the others.
    level : float, default 0.95
        Central share of the empirical percentile interval.

    Returns
    -------
    RepeatDistribution

    Raises
    ------
    DataError
        If no value is finite.
    """
    check_level(level)
    v = np.asarray(values, dtype=float).ravel()
    if np.isinf(v).any():
        raise DataError("repeat_distribution: values must be finite or NaN (undefined), got inf.")
    v = v[~np.isnan(v)]
    if not len(v):
        raise DataError("repeat_distribution: no repetition has a finite value.")
    low, high = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return RepeatDistribution(
        n=len(v),
        mean=float(v.mean()),
        sd=float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
        low=float(low),
        high=float(high),
        level=float(level),
        minimum=float(v.min()),
        maximum=float(v.max()),
    )
