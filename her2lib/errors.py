"""Error and warning classes shared by every her2lib module.

Few classes, each also a ``ValueError`` so callers that catch the builtin keep working.
Messages follow one rule: say what was seen, where (patient, file, parameter) and how to fix it.
"""

from __future__ import annotations

__all__ = ["Her2libError", "DataError", "ParameterError", "UndefinedMetricWarning"]


class Her2libError(ValueError):
    """Base class of every error her2lib raises on purpose."""


class DataError(Her2libError):
    """A problem with the cohort: manifest, labels, images or masks.

    ``problems`` lists every individual problem found (``load_cohort`` reports them all at once).
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class ParameterError(Her2libError):
    """A bad parameter: unknown notebook parameter, unknown profile key, option outside its allowed set."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the input (e.g. a single class); NaN is returned."""
