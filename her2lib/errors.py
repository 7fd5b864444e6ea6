"""Error and warning classes shared by every her2lib module.

Few classes, each also a ``ValueError`` so callers that catch the builtin keep working.
Messages follow one rule: say what was seen, where (patient, file, parameter) and how to fix it.
"""

from __future__ import annotations

__all__ = ["Her2libError", "DataError", "ParameterError", "OutputError", "UndefinedMetricWarning"]


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


class OutputError(Her2libError, OSError):
    """An output could not be written (read-only or full disk, no permission); names the path, the cause and the
    fix. Also an ``OSError``, with ``errno`` and ``filename`` set, so callers that catch the builtin keep working."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno n] ..." built from errno and filename
        return str(self.args[0]) if self.args else ""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the input (e.g. a single class); NaN is returned."""
