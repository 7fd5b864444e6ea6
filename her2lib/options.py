"""Checking a choice against the allowed ones, with a "did you mean" hint (after MONAI's ``look_up_option``).

Core layer: imports only :mod:`her2lib.errors`.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from .errors import ParameterError

__all__ = ["look_up_option", "close_match", "did_you_mean"]

K = TypeVar("K", bound=Hashable)
_MISSING = object()


def close_match(value: Any, options: Iterable[Any]) -> str | None:
    """The option closest to ``value`` (by :func:`difflib.get_close_matches`), as a string, or None.

    >>> close_match("delnog", ["delong", "bootstrap"])
    'delong'
    >>> close_match("xyz", ["delong", "bootstrap"]) is None
    True
    """
    matches = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return matches[0] if matches else None


def did_you_mean(value: Any, options: Iterable[Any]) -> str:
    """``" Did you mean 'x'?"`` for the option closest to ``value``, or ``""`` when none is close.

    >>> did_you_mean("smok", ["smoke", "default", "paper"])
    " Did you mean 'smoke'?"
    """
    match = close_match(value, options)
    return f" Did you mean {match!r}?" if match is not None else ""


def look_up_option(
    value: Any,
    supported: Collection[K] | Mapping[K, Any],
    *,
    name: str,
    default: Any = _MISSING,
    error: type[Exception] = ParameterError,
) -> Any:
    """Return ``value`` if it is one of ``supported`` (for a mapping: ``supported[value]``), else raise.

    Parameters
    ----------
    value : hashable
        The user's choice (a parameter value, a profile name, a manifest code).
    supported : collection or mapping
        The allowed choices, in the order the error message lists them.
    name : str
        What ``value`` is, as the user wrote it (``"ci_method"``, ``"source"``); the message starts with it.
    default : optional
        Returned when ``value`` is None (without it, None is an unsupported value like any other).
    error : exception type
        Raised on an unsupported value (:class:`~her2lib.errors.ParameterError` unless the value came from data).

    Raises
    ------
    ParameterError
        ``"<name>='x' is not supported; choose one of [...]. Did you mean 'y'?"``

    Examples
    --------
    >>> look_up_option("delong", ("delong", "bootstrap"), name="ci_method")
    'delong'
    >>> look_up_option("inner", {"inner": "inner split", "heldout": "held-out fold"}, name="selection")
    'inner split'
    >>> look_up_option("delnog", ("delong", "bootstrap"), name="ci_method")
    Traceback (most recent call last):
    ...
    her2lib.errors.ParameterError: ci_method='delnog' is not supported; choose one of ['delong', 'bootstrap']. Did you mean 'delong'?
    """
    if value is None and default is not _MISSING:
        return default
    try:
        found = value in supported
    except TypeError:  # unhashable value
        found = False
    if found:
        return supported[value] if isinstance(supported, Mapping) else value
    options = list(supported)
    raise error(f"{name}={value!r} is not supported; choose one of {options}.{did_you_mean(value, options)}")
