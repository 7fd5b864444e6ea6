"""Reclassification statistics of a new risk model over an old one: the category-free (continuous) Net
Reclassification Improvement (NRI) and the Integrated Discrimination Improvement (IDI), with standard errors, Wald
confidence intervals and two-sided normal P values (used to quantify what radiomics adds to the DL-US&MRI model).

Science layer. With ``d = p_new - p_old`` per patient, events ``y = 1`` (HER2-positive) and nonevents ``y = 0``:

* **NRI** (category-free, Pencina, D'Agostino & Steyerberg 2011): ``nri = nri_events + nri_nonevents`` with
  ``nri_events = P(d > 0 | event) - P(d < 0 | event)`` and ``nri_nonevents = P(d < 0 | nonevent) -
  P(d > 0 | nonevent)``. A patient with ``d == 0`` moves neither up nor down. Variance of each component
  ``(n_up + n_down) / n^2 - (n_up - n_down)^2 / n^3`` (McNemar-type, Pencina et al. 2008), that of ``nri`` their
  sum (events and nonevents are independent samples).
* **IDI** (Pencina et al. 2008): ``idi = mean(d | event) - mean(d | nonevent)`` = the change in discrimination
  slope; ``idi_events = mean(d | event)`` (Hmisc's ``improveSens``) and ``idi_nonevents = -mean(d | nonevent)``
  (``improveSpec``), so ``idi = idi_events + idi_nonevents``. ``se(idi) = sqrt(var(d | event) / n_events +
  var(d | nonevent) / n_nonevents)`` with sample variances (``ddof = 1``).

Intervals are Wald, ``estimate ± z_{1-(1-level)/2} * se``; P values ``2 * Phi(-|estimate / se|)``. Exactly the
computation of R's ``Hmisc::improveProb(x1 = p_old, x2 = p_new, y)`` and its ``print`` method; agreement to 1e-12
with Hmisc 4.8.0 / R 4.2.2 on six data sets with ties, unbalanced classes and n = 20 to 500, and two edge cases
(a single event; every patient reclassified correctly) (``tests/fixtures/make_reclassification_reference.R``,
``tests/test_reclassification.py``), and with a brute-force evaluation of the definitions.

References
----------
Pencina MJ, D'Agostino RB Sr, D'Agostino RB Jr, Vasan RS. Evaluating the added predictive ability of a new marker:
from area under the ROC curve to reclassification and beyond. *Stat Med* 2008;27:157-172.
Pencina MJ, D'Agostino RB Sr, Steyerberg EW. Extensions of net reclassification improvement calculations to measure
usefulness of new biomarkers. *Stat Med* 2011;30:11-21.
Harrell FE Jr. Hmisc: Harrell Miscellaneous, ``improveProb``. R package.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..errors import DataError, UndefinedMetricWarning
from ._common import as_binary_labels, as_probabilities, check_level
from .roc import Estimate

__all__ = ["reclassification", "ReclassificationResult", "RECLASSIFICATION_REFERENCE"]

#: The references of :func:`reclassification`, as stored in :attr:`ReclassificationResult.reference`.
RECLASSIFICATION_REFERENCE = (
    "Pencina MJ, D'Agostino RB Sr, D'Agostino RB Jr, Vasan RS. Stat Med 2008;27:157-172 (IDI, NRI); "
    "Pencina MJ, D'Agostino RB Sr, Steyerberg EW. Stat Med 2011;30:11-21 (category-free NRI); "
    "computed as R's Hmisc::improveProb(x1 = p_old, x2 = p_new, y)."
)


@dataclass(frozen=True)
class ReclassificationResult:
    """Category-free NRI and IDI of ``p_new`` over ``p_old``, with SEs, Wald intervals and P values (Hmisc's
    ``improveProb``).

    Attributes
    ----------
    nri : Estimate
        Category-free NRI, ``nri_events + nri_nonevents`` (range -2 to 2), with its Wald interval.
    nri_se, nri_z, nri_p_value : float
        Hmisc's ``se.nri``, ``z.nri`` and the two-sided normal P value.
    nri_events : Estimate
        ``P(up | event) - P(down | event)`` (Hmisc's ``nri.ev``).
    nri_events_se, nri_events_z, nri_events_p_value : float
        ``se.nri.ev``, ``z.nri.ev``, P value.
    nri_nonevents : Estimate
        ``P(down | nonevent) - P(up | nonevent)`` (``nri.ne``).
    nri_nonevents_se, nri_nonevents_z, nri_nonevents_p_value : float
        ``se.nri.ne``, ``z.nri.ne``, P value.
    idi : Estimate
        ``mean(p_new - p_old | event) - mean(p_new - p_old | nonevent)`` with its Wald interval.
    idi_se, idi_z, idi_p_value : float
        ``se.idi``, ``z.idi``, P value. NaN (with a warning) when a class has a single patient.
    idi_events : float
        ``mean(p_new - p_old | event)`` (Hmisc's ``improveSens``); Hmisc gives it no SE.
    idi_nonevents : float
        ``-mean(p_new - p_old | nonevent)`` (``improveSpec``); ``idi = idi_events + idi_nonevents``.
    n_events, n_nonevents : int
        HER2-positive and HER2-negative patients.
    n_up_events, n_down_events, n_up_nonevents, n_down_nonevents : int
        Patients with ``p_new > p_old`` (up) or ``p_new < p_old`` (down); ties are neither.
    level : float
        Confidence level of the intervals.
    method : str
        What was computed.
    reference : str
        Pencina et al. 2008 and 2011, Hmisc ``improveProb``.
    """

    nri: Estimate
    nri_se: float
    nri_z: float
    nri_p_value: float
    nri_events: Estimate
    nri_events_se: float
    nri_events_z: float
    nri_events_p_value: float
    nri_nonevents: Estimate
    nri_nonevents_se: float
    nri_nonevents_z: float
    nri_nonevents_p_value: float
    idi: Estimate
    idi_se: float
    idi_z: float
    idi_p_value: float
    idi_events: float
    idi_nonevents: float
    n_events: int
    n_nonevents: int
    n_up_events: int
    n_down_events: int
    n_up_nonevents: int
    n_down_nonevents: int
    level: float
    method: str
    reference: str

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per statistic (``nri``, ``nri_events``, ``nri_nonevents``, ``idi``,
        ``idi_events``, ``idi_nonevents``); columns ``statistic, estimate, se, ci_low, ci_high, ci_level, p_value,
        method``. ``idi_events`` and ``idi_nonevents`` have no SE, interval or P value (NaN), as in Hmisc."""
        nan = float("nan")
        rows = []
        for name in ("nri", "nri_events", "nri_nonevents", "idi"):
            est = getattr(self, name)
            se, p = getattr(self, f"{name}_se"), getattr(self, f"{name}_p_value")
            rows.append((name, est.value, se, est.ci[0], est.ci[1], est.ci[2], p, est.method))
        for name in ("idi_events", "idi_nonevents"):
            rows.append((name, getattr(self, name), nan, nan, nan, self.level, nan, "mean change (Hmisc), no SE"))
        cols = ["statistic", "estimate", "se", "ci_low", "ci_high", "ci_level", "p_value", "method"]
        return pd.DataFrame(rows, columns=cols)


def _wald(value: float, se: float, crit: float, level: float, method: str):
    """``(Estimate, se, z, p)`` of a Wald test as R computes it: ``z = value / se`` (``±inf`` when ``se == 0`` and
    ``value != 0``, NaN when both are 0 or ``se`` is NaN), ``p = 2 * Phi(-|z|)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = float(np.float64(value) / np.float64(se))
    p = float(2.0 * _st.norm.sf(abs(z))) if not math.isnan(z) else float("nan")
    ci = (value - crit * se, value + crit * se, level)
    return Estimate(value, ci, method), se, z, p


def _warn_undefined(tests: dict[str, tuple], na: int, nb: int) -> None:
    """One :class:`UndefinedMetricWarning` naming every NaN P value and why (Hmisc returns NaN silently)."""
    zero = [k for k, t in tests.items() if math.isnan(t[3]) and not math.isnan(t[1])]
    if zero:
        warnings.warn(
            f"The P value of the {', '.join(zero)} is undefined: estimate and standard error are both 0 (no patient "
            "reclassified); returning NaN.",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    if math.isnan(tests["IDI"][1]):
        warnings.warn(
            f"The SE of the IDI is undefined with a single event or nonevent (n_events={na}, n_nonevents={nb}): "
            "the sample variance of one value is undefined; returning NaN.",
            UndefinedMetricWarning,
            stacklevel=3,
        )


def _nri_variance(n_up: int, n_down: int, n: int) -> float:
    """Hmisc's variance of ``(n_up - n_down) / n``: ``(n_up + n_down) / n^2 - (n_up - n_down)^2 / n^3``."""
    return max((n_up + n_down) / n**2 - (n_up - n_down) ** 2 / n**3, 0.0)


def _validate(y_true, p_old, p_new, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The one check of the public boundary: labels (as a bool mask of events), both probability vectors, level."""
    level = check_level(level)
    y = as_binary_labels(y_true)
    n = y.shape[0]
    old = as_probabilities(p_old, n, "p_old")
    new = as_probabilities(p_new, n, "p_new")
    n_ev = int(y.sum())
    if n_ev == 0 or n_ev == n:
        raise DataError(
            f"NRI and IDI need at least one event (HER2-positive, y = 1) and one nonevent (y = 0); got "
            f"{n_ev} event(s) and {n - n_ev} nonevent(s). Evaluate on a set with both classes."
        )
    return y.astype(bool), old, new, level


def reclassification(y_true, p_old, p_new, *, level: float = 0.95) -> ReclassificationResult:
    """Category-free NRI and IDI of the new model (``p_new``) over the old one (``p_old``), as R's
    ``Hmisc::improveProb(x1 = p_old, x2 = p_new, y = y_true)``.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n_patients,)
        1 = HER2-positive (event).
    p_old, p_new : array-like of float in [0, 1], shape (n_patients,)
        Predicted probabilities of HER2-positive of the old and the new model, same patients in the same order.
    level : float, default 0.95
        Confidence level of the Wald intervals.

    Returns
    -------
    ReclassificationResult
        NRI (total, events, nonevents) and IDI with Hmisc's SEs, Wald intervals and two-sided normal P values; the
        IDI's event and nonevent parts (``improveSens``, ``improveSpec``) without SE. Swapping ``p_old`` and
        ``p_new`` negates every estimate; identical models give 0 (with NaN P values, as Hmisc, and a warning).

    Raises
    ------
    DataError
        Labels not 0/1, lengths differ, a probability not finite or outside [0, 1], no event or no nonevent.
    ParameterError
        ``level`` not in (0, 1).

    Warns
    -----
    UndefinedMetricWarning
        A P value is NaN: a standard error of 0 with an estimate of 0 (e.g. identical models), or the IDI's SE with
        a single event or nonevent (sample variance of one value).

    Examples
    --------
    >>> r = reclassification([1, 1, 0, 0], [0.6, 0.5, 0.4, 0.5], [0.7, 0.6, 0.3, 0.4])
    >>> r.nri.value, round(r.idi.value, 6)
    (2.0, 0.2)
    """
    y, old, new, level = _validate(y_true, p_old, p_new, level)
    d = new - old
    d_ev, d_ne = d[y], d[~y]
    na, nb = int(d_ev.size), int(d_ne.size)
    up_ev, down_ev = int(np.sum(d_ev > 0)), int(np.sum(d_ev < 0))
    up_ne, down_ne = int(np.sum(d_ne > 0)), int(np.sum(d_ne < 0))
    crit = float(_st.norm.ppf((1 + level) / 2))  # as print.improveProb
    v_ev, v_ne = _nri_variance(up_ev, down_ev, na), _nri_variance(up_ne, down_ne, nb)
    nri_m = f"category-free NRI (Pencina 2011), Wald {level:.0%} CI (Hmisc::improveProb)"
    idi_m = f"IDI (Pencina 2008), Wald {level:.0%} CI (Hmisc::improveProb)"
    nri_ev = _wald(up_ev / na - down_ev / na, math.sqrt(v_ev), crit, level, nri_m + ", events")
    nri_ne = _wald(down_ne / nb - up_ne / nb, math.sqrt(v_ne), crit, level, nri_m + ", nonevents")
    nri_value = up_ev / na - down_ev / na - (up_ne / nb - down_ne / nb)
    nri = _wald(nri_value, math.sqrt(v_ev + v_ne), crit, level, nri_m)
    nan = float("nan")
    var_ev = float(np.var(d_ev, ddof=1)) / na if na > 1 else nan  # R's var() of one value is NA
    var_ne = float(np.var(d_ne, ddof=1)) / nb if nb > 1 else nan
    idi = _wald(float(np.mean(d_ev) - np.mean(d_ne)), math.sqrt(var_ev + var_ne), crit, level, idi_m)
    _warn_undefined({"NRI": nri, "NRI of events": nri_ev, "NRI of nonevents": nri_ne, "IDI": idi}, na, nb)
    method = (
        "Category-free net reclassification improvement (up: p_new > p_old, down: p_new < p_old, ties neither; "
        "Pencina, D'Agostino & Steyerberg 2011) and integrated discrimination improvement (Pencina et al. 2008) "
        f"of p_new over p_old; standard errors of Hmisc::improveProb, Wald {level:.0%} CIs, two-sided normal P."
    )
    return ReclassificationResult(  # each Wald tuple fills (estimate, se, z, p_value), in field order
        *nri,
        *nri_ev,
        *nri_ne,
        *idi,
        idi_events=float(np.sum(d_ev) / na),
        idi_nonevents=float(-np.sum(d_ne) / nb),
        n_events=na,
        n_nonevents=nb,
        n_up_events=up_ev,
        n_down_events=down_ev,
        n_up_nonevents=up_ne,
        n_down_nonevents=down_ne,
        level=level,
        method=method,
        reference=RECLASSIFICATION_REFERENCE,
    )
