"""Cohort tables (paper, *Statistical analysis* and Tables 1-3): group comparisons with the paper's test rule.

The paper says "chi-squared test or Fisher's exact test, as appropriate". Its 25 categorical P values
(Tables 1-3) are all reproduced, from their counts, by this rule (:func:`categorical_test` with ``method=None``):

1. 2x2 table, every expected count >= 5  -> Pearson chi-square with Yates' continuity correction;
2. 2x2 table, some expected count < 5     -> Fisher's exact test (two-sided);
3. more than two levels                   -> exact Fisher-Freeman-Halton test;
4. where the chosen test gives P = 1 exactly, the paper printed the uncorrected Pearson chi-square instead
   (HER2 status, Table 1: Yates P = 1 -> printed 0.933; No. of lesions, Table 3: Fisher P = 1 -> printed 0.791).

Continuous variables: Shapiro-Wilk in each group; both normal (alpha 0.05) -> Student's t-test (pooled variance)
and "mean ± SD", otherwise Mann-Whitney U and "median (Q1, Q3)", with R's ``wilcox.test`` default P value: exact
when there are no ties and both groups have fewer than 50 values, otherwise the normal approximation with
continuity correction and tie-corrected variance. P values of a table are Bonferroni-adjusted across
its variables (statsmodels ``multipletests``).

The exact Fisher test is our own enumeration (scipy's ``fisher_exact`` on tables larger than 2x2 is a Monte Carlo
estimate); it was checked against R 4.2 ``fisher.test`` to 1e-7 (``tests/fixtures/``). The continuous tests were
checked against R 4.2 ``wilcox.test`` and ``t.test(var.equal = TRUE)`` to 1e-12.

Science layer: pure functions and result objects (no files written, nothing printed; the stage
:func:`her2lib.stages.cohort.cohort_tables` writes the tables and prints the notices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as _st
from scipy.special import gammaln
from statsmodels.stats.multitest import multipletests

from ..contract import PAPER_TABLES, table_spec
from ..errors import DataError, ParameterError
from ..options import close_match, look_up_option

__all__ = [
    "TestResult",
    "categorical_test",
    "fisher_exact_rx2",
    "continuous_test",
    "Variable",
    "paper_variables",
    "PAPER_PVALUES",
    "table_tests",
    "cohort_table",
    "compare_with_paper",
    "format_pvalue",
    "CohortTables",
    "cohort_tables",
]

CATEGORICAL_METHODS = ("chi2", "chi2_yates", "fisher")

METHOD_LABELS = {
    "chi2": "Pearson chi-square",
    "chi2_yates": "Chi-square with Yates' correction",
    "fisher": "Fisher's exact test",
    "fisher_freeman_halton": "Fisher-Freeman-Halton exact test",
    "student_t": "Student's t-test",
    "mann_whitney": "Mann-Whitney U test",
}

#: P values printed in the paper's Tables 1-3, keyed by manifest column (27 in all: 25 categorical and the two
#: continuous rows age and mri_size_mm, which cannot be recomputed from the printed medians and quartiles).
PAPER_PVALUES: dict[str, float] = {
    "age": 0.704,
    "location": 0.761,
    "ki67": 0.823,
    "er": 0.566,
    "pr": 0.554,
    "her2": 0.933,
    "hr": 0.811,
    "luminal": 0.966,
    "her2_nonluminal": 0.993,
    "triple_negative": 0.768,
    "us_shape": 0.684,
    "us_orientation": 0.991,
    "us_margin": 0.502,
    "us_echo_pattern": 0.177,
    "us_posterior": 0.478,
    "us_calcifications": 0.658,
    "us_vascularity": 0.633,
    "us_axillary_ln": 0.534,
    "mri_shape": 0.835,
    "mri_margin": 0.836,
    "mri_size_mm": 0.243,
    "mri_lesions": 0.791,
    "mri_t2_hyper": 0.146,
    "mri_skin": 0.132,
    "mri_nipple": 0.568,
    "mri_enhancement": 0.536,
    "mri_nonmass": 0.392,
}

# Largest number of tables the exact enumeration will visit before refusing (memory/time guard).
MAX_TABLES = 5_000_000


# --------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TestResult:
    """Result of a two-group comparison.

    Attributes
    ----------
    method : str
        ``"chi2"``, ``"chi2_yates"``, ``"fisher"``, ``"fisher_freeman_halton"``, ``"student_t"`` or
        ``"mann_whitney"`` (human-readable name: :attr:`label`).
    statistic : float or None
        Chi-square, t or U statistic; None for the exact Fisher tests.
    pvalue : float
        Two-sided P value.
    dof : float or None
        Degrees of freedom (chi-square, t-test).
    reason : str
        Why this test was chosen (the rule that fired).
    n : tuple of int
        Patients per group.
    min_expected : float or None
        Smallest expected count (categorical tests).
    """

    __test__ = False  # not a pytest test class

    method: str
    statistic: float | None
    pvalue: float
    dof: float | None = None
    reason: str = ""
    n: tuple[int, ...] = ()
    min_expected: float | None = None

    @property
    def label(self) -> str:
        """Human-readable test name, e.g. ``"Fisher's exact test"``."""
        return METHOD_LABELS.get(self.method, self.method)

    def to_row(self) -> dict:
        """Flat dict: ``method, label, statistic, pvalue, dof, reason, n, min_expected``."""
        d = asdict(self)
        d["n"] = "/".join(str(v) for v in self.n)
        d["label"] = self.label
        return d


# --------------------------------------------------------------------------------------------------- categorical
def _as_counts(counts) -> np.ndarray:
    t = np.asarray(counts)
    if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] < 2:
        raise DataError(
            f"counts must be a levels x groups table of shape (r, 2) with r >= 2; got shape {t.shape}. "
            "Pass one row per level and one column per group (e.g. [[78, 27], [71, 21]])."
        )
    try:
        tf = t.astype(float)
    except (TypeError, ValueError):
        raise DataError(f"counts must be non-negative integers; got dtype {t.dtype}.") from None
    if not np.all(np.isfinite(tf)) or np.any(tf < 0) or np.any(tf != np.round(tf)):
        raise DataError(f"counts must be non-negative integers; got {t.tolist()}.")
    return tf.astype(np.int64)


def _log_hyper(x: np.ndarray, rows: np.ndarray, n1: int, total: int) -> np.ndarray:
    """log P of r x 2 tables with first-column counts ``x`` (..., r) under fixed margins."""
    lc = gammaln(rows + 1) - gammaln(x + 1) - gammaln(rows - x + 1)
    return lc.sum(axis=-1) - (gammaln(total + 1) - gammaln(n1 + 1) - gammaln(total - n1 + 1))


def fisher_exact_rx2(counts) -> float:
    """Exact two-sided Fisher (Fisher-Freeman-Halton) P value of an r x 2 table, by full enumeration.

    Parameters
    ----------
    counts : array-like of int, shape (r, 2)
        Levels x groups.

    Returns
    -------
    float
        Sum of the probabilities of all tables with the observed margins whose probability is
        ``<= p_observed * (1 + 1e-7)`` (R's ``fisher.test`` tolerance), clipped to 1.

    Notes
    -----
    Tables with the same margins are indexed by the first-column counts ``x_i`` (``0 <= x_i <= R_i``,
    ``sum x_i = n_1``); the largest row is implied by the others, which are enumerated level by level with
    numpy, pruning partial sums that cannot reach ``n_1``. Refuses (``ParameterError``) tables needing more than
    ``MAX_TABLES`` tables; use ``method="chi2"`` for such large tables.
    """
    t = _as_counts(counts)
    t = t[t.sum(axis=1) > 0]
    if t.shape[0] < 2 or np.any(t.sum(axis=0) == 0):
        return 1.0
    rows = t.sum(axis=1)
    n1 = int(t[:, 0].sum())
    total = int(rows.sum())
    # enumerate all rows but the largest, which is determined
    order = np.argsort(rows, kind="stable")
    free, last = order[:-1], order[-1]
    r_last = int(rows[last])
    n_tables = float(np.prod(rows[free] + 1.0))
    if n_tables > MAX_TABLES:
        raise ParameterError(
            f"Exact Fisher test on row totals {rows.tolist()} would enumerate ~{n_tables:.3g} "
            f"tables (limit {MAX_TABLES}); use method='chi2' for a table this large."
        )
    # partial sums of the free rows; prune those that leave an impossible remainder for the last row
    lp_obs = _log_hyper(t[:, 0].astype(float), rows.astype(float), n1, total)
    sums = np.zeros(1, dtype=np.int64)
    logp = np.zeros(1)
    const = gammaln(total + 1) - gammaln(n1 + 1) - gammaln(total - n1 + 1)
    remaining = int(rows[free].sum())
    for i in free:
        ri = int(rows[i])
        remaining -= ri
        xi = np.arange(ri + 1)
        lci = gammaln(ri + 1) - gammaln(xi + 1) - gammaln(ri - xi + 1)
        s_new = (sums[:, None] + xi[None, :]).ravel()
        lp_new = (logp[:, None] + lci[None, :]).ravel()
        # feasible: n1 - s_new must be reachable by the remaining free rows plus the last row
        keep = (s_new <= n1) & (n1 - s_new <= remaining + r_last)
        sums, logp = s_new[keep], lp_new[keep]
    x_last = n1 - sums
    ok = (x_last >= 0) & (x_last <= r_last)
    x_last, logp = x_last[ok], logp[ok]
    logp = logp + gammaln(r_last + 1) - gammaln(x_last + 1) - gammaln(r_last - x_last + 1) - const
    p_all = np.exp(logp)
    p_obs = math.exp(lp_obs)
    pval = float(np.sum(p_all[p_all <= p_obs * (1 + 1e-7)]))
    return min(pval, 1.0)


def categorical_test(counts, method: Literal["chi2", "chi2_yates", "fisher"] | None = None) -> TestResult:
    """Compare the distribution of a categorical variable between two groups.

    Parameters
    ----------
    counts : array-like of int, shape (r, 2)
        Levels x groups, e.g. Location ``[[78, 27], [71, 21]]`` (Left/Right x train/test). Levels empty in both
        groups are dropped before testing.
    method : {None, "chi2", "chi2_yates", "fisher"}
        ``None`` applies the paper's rule (module docstring): Yates chi-square for a 2x2 table with every
        expected count >= 5, Fisher's exact test for a 2x2 table otherwise, the exact Fisher-Freeman-Halton test
        for r > 2 levels, and the uncorrected chi-square where the chosen test gives P = 1 (P >= 1 - 1e-9, to absorb
        the round-off of summing the exact test's table probabilities).
        ``"chi2"`` = Pearson chi-square without correction; ``"chi2_yates"`` = with Yates' correction (2x2 only;
        larger tables get no correction, as scipy and R); ``"fisher"`` = exact test for any r x 2 table.

    Returns
    -------
    TestResult
        ``method`` names the test actually run; ``reason`` says why.

    Examples
    --------
    >>> round(categorical_test([[78, 27], [71, 21]]).pvalue, 3)   # Location, Table 1
    0.761
    >>> round(categorical_test([[135, 45], [14, 3]]).pvalue, 3)   # Triple negative (Fisher)
    0.768
    >>> round(categorical_test([[134, 38], [7, 5], [5, 3], [3, 2]]).pvalue, 3)   # US echo pattern
    0.177
    """
    if method is not None:
        look_up_option(method, CATEGORICAL_METHODS, name="categorical_test method")
    t = _as_counts(counts)
    dropped = int(np.sum(t.sum(axis=1) == 0))
    t = t[t.sum(axis=1) > 0]
    ngroup = tuple(int(v) for v in t.sum(axis=0))
    note = f" ({dropped} empty level(s) dropped)" if dropped else ""
    if t.shape[0] < 2 or min(ngroup) == 0:
        return TestResult(
            method or "chi2",
            None,
            float("nan"),
            None,
            "undefined: fewer than two non-empty levels or an empty group" + note,
            ngroup,
            None,
        )
    expected = np.outer(t.sum(axis=1), t.sum(axis=0)) / t.sum()
    min_exp = float(expected.min())
    is2x2 = t.shape[0] == 2

    def chi2(correction: bool, reason: str) -> TestResult:
        stat, p, dof, _ = _st.chi2_contingency(t, correction=correction)
        name = "chi2_yates" if (correction and is2x2) else "chi2"
        return TestResult(name, float(stat), float(p), float(dof), reason + note, ngroup, min_exp)

    def fisher(reason: str) -> TestResult:
        name = "fisher" if is2x2 else "fisher_freeman_halton"
        return TestResult(name, None, fisher_exact_rx2(t), None, reason + note, ngroup, min_exp)

    if method == "chi2":
        return chi2(False, "requested")
    if method == "chi2_yates":
        return chi2(True, "requested")
    if method == "fisher":
        return fisher("requested")
    if is2x2 and min_exp >= 5:
        res = chi2(True, f"2x2, all expected counts >= 5 (min {min_exp:.2f})")
    elif is2x2:
        res = fisher(f"2x2, an expected count < 5 (min {min_exp:.2f})")
    else:
        res = fisher(f"{t.shape[0]} levels")
    if res.pvalue >= 1.0 - 1e-9:
        return chi2(False, f"{res.reason}; {res.label} gave P = 1, uncorrected chi-square reported (paper's rule)")
    return res


# --------------------------------------------------------------------------------------------------- continuous
def _clean(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise DataError(f"{name} must be 1-D (n_patients,), got shape {a.shape}.")
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric; got dtype {a.dtype}.") from None
    bad = ~np.isfinite(a)
    if bad.any():
        raise DataError(
            f"{name} has {int(bad.sum())} missing/non-finite value(s), first at index "
            f"{int(np.flatnonzero(bad)[0])}; drop them first (cohort_table drops missing values "
            "itself and reports how many)."
        )
    if a.size < 2:
        raise DataError(f"{name} has {a.size} value(s); a two-group test needs at least 2 per group.")
    return a


def _shapiro_normal(a: np.ndarray, alpha: float) -> tuple[bool, str]:
    if a.size < 3:
        return False, f"n={a.size} < 3, normality not testable"
    if np.ptp(a) == 0:
        return False, "constant values"
    p = float(_st.shapiro(a).pvalue)
    return p >= alpha, f"Shapiro-Wilk P={p:.3g}"


@lru_cache(maxsize=256)
def _wilcox_counts(m: int, n: int) -> tuple[int, ...]:
    """Number of arrangements giving each rank-sum statistic ``W = 0 .. m*n`` (no ties), as exact integers.

    The generating function of ``W`` is the Gaussian binomial ``prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i)``:
    multiply out the numerator, then divide by each ``(1 - q^i)`` (a running sum with lag ``i``).
    """
    size = m * n + 1  # only the coefficients of q^0 .. q^(m n) are needed: truncated power series
    poly = [0] * size
    poly[0] = 1
    for i in range(1, m + 1):  # multiply by (1 - q^(n+i))
        k = n + i
        for d in range(size - 1, k - 1, -1):
            poly[d] -= poly[d - k]
    for i in range(1, m + 1):  # divide by (1 - q^i): b[d] = a[d] + b[d - i]
        for d in range(i, size):
            poly[d] += poly[d - i]
    return tuple(poly[:size])


def _pwilcox(w: int, m: int, n: int) -> Fraction:
    """``P(W <= w)`` of the Wilcoxon rank-sum statistic without ties (R's ``pwilcox``), exactly."""
    counts = _wilcox_counts(m, n)
    if w < 0:
        return Fraction(0)
    w = min(w, m * n)
    return Fraction(sum(counts[: w + 1]), sum(counts))


def _mann_whitney_r(a, b) -> tuple[float, float, str]:
    """Two-sided Wilcoxon rank-sum / Mann-Whitney test exactly as R 4.2's ``wilcox.test(a, b)`` default.

    Parameters
    ----------
    a, b : ndarray of float, shapes (n_a,), (n_b,)
        Finite values (validated by the caller).

    Returns
    -------
    W : float
        ``sum(rank(a)) - n_a (n_a + 1) / 2`` (R's ``W``, scipy's ``U`` of the first sample).
    pvalue : float
        NaN when every value is equal (R gives NA).
    variant : str
        ``"exact P value (no ties, both n < 50)"`` or ``"normal approximation with continuity correction (...)"``
        saying why (ties, or a group with 50 or more values).

    Notes
    -----
    * No ties and both groups with fewer than 50 values: exact P,
      ``min(1, 2 * P(W' >= W))`` if ``W > n_a n_b / 2`` else ``min(1, 2 * P(W' <= W))`` from the exact null
      distribution (R's ``pwilcox``; here exact integer counts).
    * Otherwise: ``z = (W - n_a n_b / 2 - sign(.) / 2) / sigma`` with
      ``sigma^2 = n_a n_b / 12 * ((N + 1) - sum(t^3 - t) / (N (N - 1)))`` (``t`` = sizes of tied groups),
      ``P = 2 * min(Phi(z), 1 - Phi(z))``.
    """
    na, nb = int(a.size), int(b.size)
    r = _st.rankdata(np.concatenate([a, b]), method="average")
    w = float(r[:na].sum() - na * (na + 1) / 2.0)
    _, tcounts = np.unique(r, return_counts=True)
    ties = tcounts.size != r.size
    if na < 50 and nb < 50 and not ties:
        wi = int(round(w))
        if w > na * nb / 2.0:
            p1 = 1 - _pwilcox(wi - 1, na, nb)
        else:
            p1 = _pwilcox(wi, na, nb)
        return w, float(min(2 * p1, Fraction(1))), "exact P value (no ties, both n < 50)"
    why = "ties" if ties else "a group with n >= 50"
    variant = f"normal approximation with continuity correction ({why}; tie-corrected variance)"
    z = w - na * nb / 2.0
    ntot = na + nb
    sigma = math.sqrt(
        (na * nb / 12.0) * ((ntot + 1) - float(np.sum(tcounts.astype(float) ** 3 - tcounts)) / (ntot * (ntot - 1)))
    )
    if sigma == 0:
        return w, float("nan"), variant + "; all values equal, P undefined"
    z = (z - np.sign(z) * 0.5) / sigma
    p = 2.0 * min(_st.norm.cdf(z), _st.norm.sf(z))
    return w, float(p), variant


CONTINUOUS_METHODS = ("student_t", "mann_whitney")


def continuous_test(
    a, b, *, alpha: float = 0.05, method: Literal["student_t", "mann_whitney"] | None = None
) -> TestResult:
    """Compare a continuous variable between two groups with the paper's rule.

    Parameters
    ----------
    a, b : array-like of float, shape (n_a,), (n_b,)
        Values of the two groups (no missing values; at least 2 each).
    alpha : float, default 0.05
        Shapiro-Wilk significance level for "normal".
    method : {None, "student_t", "mann_whitney"}
        ``None`` applies the paper's rule (Shapiro-Wilk in both groups); a name forces that test (the Shapiro-Wilk
        P values are still reported in ``reason``).

    Returns
    -------
    TestResult
        ``method="student_t"`` (two-sided, pooled variance: R's ``t.test(a, b, var.equal = TRUE)``) when both
        groups pass Shapiro-Wilk (P >= alpha), otherwise ``method="mann_whitney"`` with R's
        ``wilcox.test(a, b)`` default (statistic ``W`` = U of group ``a``):

        * no ties and both groups with fewer than 50 values -> exact P value;
        * otherwise -> normal approximation with continuity correction and the tie-corrected variance.

        ``reason`` gives both Shapiro-Wilk P values and, for Mann-Whitney, which P value was computed.
        All values equal -> P is NaN (R: NA).

    Notes
    -----
    scipy's ``mannwhitneyu`` default differs from R (it takes the normal approximation for most sample sizes
    without ties, e.g. 13 vs 16 values); the paper's software printed R-style P values. Checked against R 4.2
    ``wilcox.test`` and ``t.test(var.equal = TRUE)`` to 1e-12 (``tests/test_stats_wilcox.py``).
    """
    if not (0 < alpha < 1):
        raise ParameterError(f"alpha must be in (0, 1); got {alpha!r}.")
    if method is not None:
        look_up_option(method, CONTINUOUS_METHODS, name="continuous_test method")
    xa, xb = _clean(a, "a"), _clean(b, "b")
    na, ra = _shapiro_normal(xa, alpha)
    nb_, rb = _shapiro_normal(xb, alpha)
    why = f"group 1: {ra}; group 2: {rb}"
    if method is not None:
        why = f"requested ({why})"
    elif na and nb_:
        why = f"both groups normal ({why})"
    else:
        why = f"not both normal ({why})"
    n = (int(xa.size), int(xb.size))
    if method == "student_t" or (method is None and na and nb_):
        r = _st.ttest_ind(xa, xb, equal_var=True)
        return TestResult(
            "student_t",
            float(r.statistic),
            float(r.pvalue),
            float(xa.size + xb.size - 2),
            f"{why}; pooled-variance t-test",
            n,
        )
    w, p, variant = _mann_whitney_r(xa, xb)
    return TestResult("mann_whitney", w, p, None, f"{why}; {variant}; R wilcox.test default", n)


# --------------------------------------------------------------------------------------------------- variables
@dataclass(frozen=True)
class Variable:
    """One row block of a cohort table.

    Attributes
    ----------
    column : str
        Manifest column.
    label : str
        Display label (e.g. ``"Location"``).
    kind : {"categorical", "continuous"}
    levels : tuple of str
        Display names of the levels (categorical).
    codes : tuple
        Values in the column for each level, same order as ``levels``.
    table : str
        Which paper table (``"table1_clinical"``, ``"table2_us"``, ``"table3_mri"``).
    unit : str
        Unit for continuous variables (e.g. ``"years"``, ``"mm"``).
    """

    column: str
    label: str
    kind: Literal["categorical", "continuous"] = "categorical"
    levels: tuple[str, ...] = ()
    codes: tuple[Any, ...] = ()
    table: str = ""
    unit: str = ""


def paper_variables(table: str | None = None) -> list[Variable]:
    """Variables of the paper's Tables 1-3, in the paper's row order (from ``her2lib/resources/tables_1_3.json``).

    Parameters
    ----------
    table : {None, "table1_clinical", "table2_us", "table3_mri"}
        Only this table's variables; None = all.

    Returns
    -------
    list of Variable
        Continuous variables (age, largest tumour size) are placed where the paper prints them.
    """
    meta = table_spec()
    if table is not None:
        look_up_option(table, PAPER_TABLES, name="table")
    out: list[Variable] = []
    cont = {c["column"]: c for c in meta["continuous"]}
    for c in meta["categorical"]:
        out.append(Variable(c["column"], c["label"], "categorical", tuple(c["levels"]), tuple(c["codes"]), c["table"]))
    units = {"age": "years", "mri_size_mm": "mm"}
    labels = {"age": "Age", "mri_size_mm": "Largest tumor size"}
    # paper order: age first in Table 1; tumour size after MRI margins in Table 3
    age = cont.get("age")
    if age:
        out.insert(0, Variable("age", labels["age"], "continuous", table=age["table"], unit=units["age"]))
    size = cont.get("mri_size_mm")
    if size:
        pos = next(i for i, v in enumerate(out) if v.column == "mri_margin") + 1
        out.insert(
            pos,
            Variable(
                "mri_size_mm", labels["mri_size_mm"], "continuous", table=size["table"], unit=units["mri_size_mm"]
            ),
        )
    return [v for v in out if table is None or v.table == table]


def _as_variables(df: pd.DataFrame, variables, by: str | None = None) -> list[Variable]:
    if isinstance(variables, str):
        variables = paper_variables(variables)
    out = []
    for v in variables:
        if isinstance(v, str):
            if v not in df.columns:
                v = Variable(v, v)  # reported as missing below
            elif (
                pd.api.types.is_numeric_dtype(df[v]) and not pd.api.types.is_bool_dtype(df[v]) and df[v].nunique() > 10
            ):
                v = Variable(v, v, "continuous")
            else:
                codes = tuple(sorted(df[v].dropna().unique().tolist(), key=str))
                v = Variable(v, v, "categorical", tuple(str(c) for c in codes), codes)
        out.append(v)
    if by is not None:
        out = [v for v in out if v.column != by]  # the grouping column itself is not compared
    missing = [v.column for v in out if v.column not in df.columns]
    if missing:
        hints = {m: close_match(m, df.columns) for m in missing}
        hint = "; ".join(f"{m!r} (did you mean {h!r}?)" if h else repr(m) for m, h in hints.items())
        raise DataError(
            f"cohort has no column(s) {hint}; the manifest must carry the columns of tables_1_3.json.",
            problems=[f"missing column {m}" for m in missing],
        )
    return out


# --------------------------------------------------------------------------------------------------- tables
def format_pvalue(p: float, digits: int = 3) -> str:
    """Format a P value as the paper does: ``"0.761"``; below ``10**-digits``: ``"<0.001"``; NaN: ``""``."""
    if p is None or not np.isfinite(p):
        return ""
    if p < 10**-digits:
        return f"<{10**-digits:.{digits}f}"
    return f"{p:.{digits}f}"


def _pct(k: int, n: int, digits: int) -> str:
    """``k/n`` as a percentage rounded half-to-even on the exact fraction (the paper prints 30/48 as 62)."""
    if n == 0:
        return "-"
    q = round(Fraction(100 * k, n), digits)
    return f"{float(q):.{digits}f}"


def _groups(df: pd.DataFrame, by: str, groups: Sequence | None) -> list:
    if by not in df.columns:
        raise DataError(f"cohort has no column {by!r} to group by; use e.g. by='split' or by='her2'.")
    present = df[by].dropna().unique().tolist()
    if groups is None:
        order = {"train": 0, "test": 1}
        groups = sorted(present, key=lambda g: (order.get(g, 2), -g if isinstance(g, (int, np.integer)) else 0, str(g)))
    groups = list(groups)
    if len(groups) != 2:
        raise DataError(
            f"cohort_table compares exactly two groups; column {by!r} has {len(groups)} "
            f"({groups}); pass groups=[g1, g2]."
        )
    return groups


def table_tests(
    df: pd.DataFrame,
    by: str,
    variables: str | Sequence[Variable | str],
    *,
    groups: Sequence | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Numeric test results for each variable of a cohort table (the machine-readable half of :func:`cohort_table`).

    Parameters
    ----------
    df : DataFrame, one row per patient
    by : str
        Grouping column, e.g. ``"split"`` (train vs test) or ``"her2"`` (1 = positive vs 0 = negative).
    variables : str or sequence of Variable or str
        A paper table name (``"table1_clinical"``, ``"table2_us"``, ``"table3_mri"``), or variables (a bare column
        name is treated as continuous when numeric with more than 10 distinct values, otherwise categorical with
        its sorted values).
    groups : sequence of two group values, optional
        Column order; default ``["train", "test"]`` for ``split`` and ``[1, 0]`` (positive first) for ``her2``.
    alpha : float
        Shapiro-Wilk level for continuous variables.

    Returns
    -------
    DataFrame
        One row per variable: ``variable, label, kind, method, test, statistic, pvalue, p_bonferroni, reason,
        n_missing``; ``p_bonferroni`` is adjusted over the variables with a P value (statsmodels
        ``multipletests(method="bonferroni")``).
    """
    groups = _groups(df, by, groups)
    vars_ = _as_variables(df, variables, by)
    rows = []
    for v in vars_:
        sub = df[list(dict.fromkeys([v.column, by]))].dropna()
        n_missing = int(df[by].isin(groups).sum() - sub[by].isin(groups).sum())
        if v.kind == "continuous":
            a = sub.loc[sub[by] == groups[0], v.column].to_numpy(float)
            b = sub.loc[sub[by] == groups[1], v.column].to_numpy(float)
            res = continuous_test(a, b, alpha=alpha)
        else:
            counts = _level_counts(sub, v, by, groups)
            res = categorical_test(counts)
        rows.append(
            dict(
                variable=v.column,
                label=v.label,
                kind=v.kind,
                method=res.method,
                test=res.label,
                statistic=res.statistic,
                pvalue=res.pvalue,
                reason=res.reason,
                n_missing=n_missing,
            )
        )
    out = pd.DataFrame(rows)
    p = out["pvalue"].to_numpy(float)
    adj = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        adj[ok] = multipletests(p[ok], method="bonferroni")[1]
    out.insert(out.columns.get_loc("pvalue") + 1, "p_bonferroni", adj)
    return out


def _level_counts(sub: pd.DataFrame, v: Variable, by: str, groups: list) -> np.ndarray:
    col = sub[v.column]
    codes = list(v.codes) if v.codes else sorted(col.unique().tolist(), key=str)
    # compare as strings so 0/1 codes match "0"/"1" read from CSV and vice versa
    col_s = col.map(_code_str)
    code_s = [_code_str(c) for c in codes]
    unknown = sorted(set(col_s.unique()) - set(code_s))
    if unknown:
        raise DataError(
            f"column {v.column!r} has value(s) {unknown} outside its codes {code_s}; fix the "
            "manifest or the variable's codes.",
            problems=[f"{v.column}: unexpected {u}" for u in unknown],
        )
    grp = sub[by]
    return np.array([[int(((col_s == c) & (grp == g)).sum()) for g in groups] for c in code_s])


def _code_str(c) -> str:
    if isinstance(c, (bool, np.bool_)):
        return str(int(c))
    if isinstance(c, (float, np.floating)) and float(c).is_integer():
        return str(int(c))
    return str(c)


def _group_header(by: str, g, n: int) -> str:
    if by == "split":
        name = str(g).capitalize()
    elif by == "her2":
        name = "HER2-positive" if _code_str(g) == "1" else "HER2-negative"
    else:
        name = f"{by}={g}"
    return f"{name} (n = {n})"


def _fmt_num(x: float, digits: int) -> str:
    s = f"{x:.{digits}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def cohort_table(
    df: pd.DataFrame,
    by: str,
    variables: str | Sequence[Variable | str],
    *,
    groups: Sequence | None = None,
    alpha: float = 0.05,
    pct_digits: int = 0,
    num_digits: int = 2,
) -> pd.DataFrame:
    """A cohort table formatted like the paper's Tables 1-3.

    Parameters
    ----------
    df : DataFrame, one row per patient (e.g. ``her2lib.data.load_cohort(manifest)``)
    by : str
        Grouping column: ``"split"`` (Train vs Test, as the paper) or ``"her2"`` (HER2-positive vs negative).
    variables : str or sequence of Variable or str
        A paper table name (``"table1_clinical"``, ``"table2_us"``, ``"table3_mri"``) or explicit variables.
    groups : two group values, optional
        Column order (default train/test, or HER2-positive/negative). The grouping column itself is never a row
        (e.g. the HER2 row is left out of Table 1 by HER2 status).
    alpha : float
        Shapiro-Wilk level.
    pct_digits : int, default 0
        Decimals of the percentages (the paper: 0; rounded half-to-even on the exact fraction, as the paper).
    num_digits : int, default 2
        Maximum decimals of medians, quartiles, means and SDs (trailing zeros dropped: ``23``, ``16.75``).

    Returns
    -------
    DataFrame
        Columns ``variable, level, Variables, <group 1> (n = ..), <group 2> (n = ..), P, Test, P (Bonferroni)``.
        A categorical variable gets a header row (``"Location, n (%)"``, with the P value) then one row per
        level with ``"n (%)"`` (percent of the group's patients with a known value); a continuous variable is one
        row, ``"mean ± SD"`` when both groups are normal, else ``"median (Q1, Q3)"`` (quartiles by numpy's
        linear interpolation). ``variable`` and ``level`` hold the column name and level code for programmatic
        use. Missing values are excluded per variable and counted in the header text.
    """
    groups = _groups(df, by, groups)
    vars_ = _as_variables(df, variables, by)
    tests = table_tests(df, by, vars_, groups=groups, alpha=alpha)
    return _format_table(df, by, vars_, groups, tests, pct_digits=pct_digits, num_digits=num_digits)


def _format_table(
    df: pd.DataFrame,
    by: str,
    vars_: list[Variable],
    groups: list,
    tests: pd.DataFrame,
    *,
    pct_digits: int = 0,
    num_digits: int = 2,
) -> pd.DataFrame:
    """:func:`cohort_table` from the test results :func:`table_tests` gave for the same variables and groups."""
    tests = tests.set_index("variable")
    n_g = [int((df[by] == g).sum()) for g in groups]
    heads = [_group_header(by, g, n) for g, n in zip(groups, n_g)]
    rows = []
    for v in vars_:
        t = tests.loc[v.column]
        p, padj, test = format_pvalue(t["pvalue"]), format_pvalue(t["p_bonferroni"]), t["test"]
        miss = f" [{int(t['n_missing'])} missing]" if t["n_missing"] else ""
        sub = df[list(dict.fromkeys([v.column, by]))].dropna()
        if v.kind == "continuous":
            unit = f", {v.unit}" if v.unit else ""
            vals = [sub.loc[sub[by] == g, v.column].to_numpy(float) for g in groups]
            if t["method"] == "student_t":
                cells = [f"{_fmt_num(x.mean(), num_digits)} ± {_fmt_num(x.std(ddof=1), num_digits)}" for x in vals]
                what = "mean ± SD"
            else:
                cells = []
                for x in vals:
                    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
                    cells.append(
                        f"{_fmt_num(med, num_digits)} ({_fmt_num(q1, num_digits)}, {_fmt_num(q3, num_digits)})"
                    )
                what = "median (Q1, Q3)"
            rows.append(
                {
                    "variable": v.column,
                    "level": "",
                    "Variables": f"{v.label}{unit}, {what}{miss}",
                    heads[0]: cells[0],
                    heads[1]: cells[1],
                    "P": p,
                    "Test": test,
                    "P (Bonferroni)": padj,
                }
            )
            continue
        counts = _level_counts(sub, v, by, groups)
        tot = counts.sum(axis=0)
        rows.append(
            {
                "variable": v.column,
                "level": "",
                "Variables": f"{v.label}, n (%){miss}",
                heads[0]: "",
                heads[1]: "",
                "P": p,
                "Test": test,
                "P (Bonferroni)": padj,
            }
        )
        names = v.levels if v.levels else tuple(str(c) for c in v.codes)
        for i, name in enumerate(names):
            cells = [f"{counts[i, j]} ({_pct(int(counts[i, j]), int(tot[j]), pct_digits)})" for j in range(2)]
            code = v.codes[i] if v.codes else name
            rows.append(
                {
                    "variable": v.column,
                    "level": _code_str(code),
                    "Variables": f"  {name}",
                    heads[0]: cells[0],
                    heads[1]: cells[1],
                    "P": "",
                    "Test": "",
                    "P (Bonferroni)": "",
                }
            )
    return pd.DataFrame(rows, columns=_table_columns(heads))


def _table_columns(heads: list[str]) -> list[str]:
    return ["variable", "level", "Variables", *heads, "P", "Test", "P (Bonferroni)"]


def compare_with_paper(tests: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Set our P values (from :func:`table_tests` with ``by="split"``) beside the paper's printed ones.

    Parameters
    ----------
    tests : DataFrame
        Output of :func:`table_tests` (any subset of the paper's variables).
    digits : int
        Printed precision of the paper's P values.

    Returns
    -------
    DataFrame
        ``variable, label, test, p_ours, p_ours_rounded, p_paper, match`` where ``match`` says whether our P
        rounds to the printed value. Only meaningful when the cohort's counts equal the paper's (the synthetic
        cohort is built to match them). Continuous rows depend on the individual values, which the paper does not
        print (only median (Q1, Q3)): the synthetic cohort places its values within the printed quartiles so that
        R's ``wilcox.test`` reproduces the printed P (:func:`her2lib.synth.match_mann_whitney_p`); a real cohort's
        may differ.
    """
    out = tests.loc[tests["variable"].isin(list(PAPER_PVALUES)), ["variable", "label", "test", "pvalue"]].copy()
    out = out.rename(columns={"pvalue": "p_ours"})
    out["p_ours_rounded"] = out["p_ours"].round(digits)
    out["p_paper"] = out["variable"].map(PAPER_PVALUES)
    out["match"] = np.isclose(out["p_ours_rounded"], out["p_paper"], atol=10 ** -(digits + 2))
    cont = out["variable"].isin(["age", "mri_size_mm"])
    out["note"] = np.where(
        cont,
        "continuous: depends on individual values (the paper prints median (Q1, Q3)); the "
        "synthetic cohort places them to reproduce the printed P",
        "categorical: reproducible from the counts of Tables 1-3",
    )
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class CohortTables:
    """All cohort tables of notebook 01 (:func:`cohort_tables`) and what the cohort could not fill.

    Attributes
    ----------
    tables : dict of str to DataFrame
        ``"table1_clinical"``, ``"table2_us"``, ``"table3_mri"`` (Train vs Test, as the paper);
        ``"table1_clinical_by_her2"``, ``"table2_us_by_her2"``, ``"table3_mri_by_her2"`` (HER2-positive vs
        HER2-negative; the HER2 row itself omitted); ``"tests"`` (numeric results of every table, with columns
        ``table`` and ``by``); ``"pvalues_vs_paper"`` (:func:`compare_with_paper` for the train/test tables).
    absent : list of str
        Labels of the variables of Tables 1-3 whose column the cohort lacks (left out of the tables).
    empty : list of str
        Names (keys of ``tables``) of the tables left with no variable; such a table is empty, with its header
        columns.
    """

    tables: dict[str, pd.DataFrame]
    absent: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]


def cohort_tables(df: pd.DataFrame, *, alpha: float = 0.05) -> CohortTables:
    """All cohort tables of notebook 01: the paper's Tables 1-3 by split and by HER2 status, tests, paper check.

    Each variable's test is computed once (per grouping) and serves both its table row and ``tests``.

    Parameters
    ----------
    df : DataFrame, one row per patient (``her2lib.data.load_cohort``), with the columns of tables_1_3.json
    alpha : float
        Shapiro-Wilk level for continuous variables.

    Returns
    -------
    CohortTables
        The tables (``result.tables``, also ``result[name]``) and the variables and tables the cohort could not
        fill (``absent``, ``empty``), for the caller to report.
    """
    out: dict[str, pd.DataFrame] = {}
    tests = []
    empty: list[str] = []
    present = {name: [v for v in paper_variables(name) if v.column in df.columns] for name in PAPER_TABLES}
    absent = [v.label for name in PAPER_TABLES for v in paper_variables(name) if v.column not in df.columns]
    for by, suffix in (("split", ""), ("her2", "_by_her2")):
        for name in PAPER_TABLES:
            vars_ = [v for v in present[name] if v.column != by]
            groups = _groups(df, by, None)
            if not vars_:
                empty.append(name + suffix)
                heads = [_group_header(by, g, int((df[by] == g).sum())) for g in groups]
                out[name + suffix] = pd.DataFrame(columns=_table_columns(heads))
                continue
            res = table_tests(df, by, vars_, groups=groups, alpha=alpha)
            out[name + suffix] = _format_table(df, by, vars_, groups, res)
            tests.append(res.assign(table=name, by=by))
    allt = pd.concat(tests, ignore_index=True)
    out["tests"] = allt[["table", "by", *[c for c in allt.columns if c not in ("table", "by")]]]
    out["pvalues_vs_paper"] = compare_with_paper(allt[allt["by"] == "split"])
    return CohortTables(out, absent, empty)
