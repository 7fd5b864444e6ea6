"""DL-US&MRI+Clinical: the DL-US&MRI score combined with the radiologist-read BI-RADS descriptors of the paper's
Tables 2-3, age and tumour size in one logistic regression, with its nomogram (issue 14; the paper's Tables 2-3
compare these descriptors between HER2-positive and -negative patients but never model them).

Science layer: pure functions on the cohort table and prediction tables.

**Model.** ``logit P(HER2+) = b0 + b_dl * logit(p_DL-US&MRI) + sum_j b_j x_j`` where the ``x_j`` are the selected
descriptors (dummy-coded, reference = the paper's first level; levels seen in fewer than ``min_count`` training
patients are pooled into ``"other"``), age (years) and size (mm). Fitted by maximum likelihood (statsmodels
``Logit``; Wald intervals).

**Selection, on training patients only.** Each candidate is screened by a univariable likelihood-ratio test in the
fitting rows; those with P < ``alpha`` enter, the strongest first, while their coefficients (one per dummy column)
stay within ``max_terms`` (default: one coefficient per 10 HER2-positive fitting patients, minus the DL score's;
Peduzzi et al. 1996); a descriptor that would exceed it is skipped. The DL-US&MRI score always enters.

**Leakage-free, like the fusion** (:mod:`her2lib.fusion`): the model is fitted on the training cohort's DL-US&MRI
OOF scores; its training-cohort scores are cross-fitted (the whole selection and fit repeated without fold k,
applied to fold k); it is applied to each DL-US&MRI fold model's test (external) scores and the probabilities
averaged. The test and external labels are never read.

**Missing descriptors** (real cohorts) are filled with the fitting rows' most frequent level (median for age and
size); the coefficient table says how many values were filled.

**Nomogram** (:func:`nomogram_scales`): every term's contribution ``b_j x_j`` on a 0-100 points scale (100 = the
widest range of any term over the fitting rows), total points, and the probability they give. Reading the points
of a patient off the scales and converting the total gives exactly :meth:`ClinicalModel.predict`
(``tests/test_clinical.py``).

References: Iasonos A et al., How to build and interpret a nomogram for cancer prognosis, *J Clin Oncol*
2008;26:1364-1370. Peduzzi P et al., *J Clin Epidemiol* 1996;49:1373-1379 (events per variable).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as _st
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

from .contract import TEST_FOLD_COLUMNS, table_spec
from .errors import DataError, ParameterError
from .fusion import EPS, logit

__all__ = [
    "DL_TERM",
    "clinical_candidates",
    "ClinicalModel",
    "screen_candidates",
    "fit_clinical",
    "ClinicalResult",
    "fit_clinical_model",
    "apply_clinical",
    "NomogramScale",
    "nomogram_scales",
    "points_to_probability",
]

#: the DL-US&MRI score's term (its logit)
DL_TERM = "dl_us_mri"
_CONTINUOUS = {"age": "Age (years)", "mri_size_mm": "Tumour size on MRI (mm)"}


def clinical_candidates() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Candidate variables: ``{column: (label, levels)}`` for the BI-RADS descriptors of Tables 2-3 (levels in the
    paper's order, the first is the reference), then age and size (levels ``()``: continuous)."""
    out = {
        c["column"]: (c["label"], tuple(c["codes"]))
        for c in table_spec()["categorical"]
        if c["table"] in ("table2_us", "table3_mri")
    }
    return out | {col: (label, ()) for col, label in _CONTINUOUS.items()}


# ----------------------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Term:
    """One variable as the fitting rows encode it: its levels (reference first; ``()`` for continuous), the fill
    value for a missing entry, and the range over the fitting rows (nomogram)."""

    column: str
    label: str
    levels: tuple[str, ...]
    fill: object
    low: float = 0.0
    high: float = 0.0
    merged: tuple[str, ...] = ()  #: levels too rare even pooled: counted as the reference level

    @property
    def tick_labels(self) -> list[str]:
        """Level names for the nomogram; the reference names the rare levels it absorbed."""
        return ["/".join((self.levels[0], *self.merged)), *self.levels[1:]]

    @property
    def columns(self) -> list[str]:
        return [self.column] if not self.levels else [f"{self.column}={lv}" for lv in self.levels[1:]]

    def encode(self, values: pd.Series) -> np.ndarray:
        v = values.where(values.notna() & (values.astype(str) != ""), self.fill)
        if not self.levels:
            return pd.to_numeric(v).to_numpy(dtype=float)[:, None]
        v = v.astype(str)
        v = v.where(v.isin(self.levels), "other" if "other" in self.levels else self.levels[0])
        cols = [(v == lv).to_numpy(dtype=float) for lv in self.levels[1:]]
        return np.column_stack(cols) if cols else np.zeros((len(v), 0))


def _make_term(column: str, label: str, levels: tuple[str, ...], values: pd.Series, min_count: int) -> _Term:
    present = values[values.notna() & (values.astype(str) != "")]
    if not levels:
        num = pd.to_numeric(present)
        return _Term(column, label, (), float(num.median()), float(num.min()), float(num.max()))
    counts = present.astype(str).value_counts()
    kept = tuple(lv for lv in levels if counts.get(lv, 0) >= min_count)
    pooled = int(len(present) - sum(counts.get(lv, 0) for lv in kept))  # rare levels and unknown codes
    kept += ("other",) if pooled >= min_count else ()
    mode = str(counts.idxmax()) if len(counts) else levels[0]
    # too rare even pooled: those patients count as the reference level (kept[0])
    merged = tuple(lv for lv in levels if lv not in kept) if kept and "other" not in kept else ()
    return _Term(column, label, kept, mode if mode in kept else (kept[0] if kept else levels[0]), merged=merged)


def _design(frame: pd.DataFrame, p_dl: np.ndarray, terms: list[_Term], eps: float) -> np.ndarray:
    cols = [np.ones(len(frame)), logit(np.asarray(p_dl, dtype=float), eps)]
    cols += [c for t in terms for c in t.encode(frame[t.column]).T]
    return np.column_stack(cols)


def _logit_fit(X: np.ndarray, y: np.ndarray):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(y, X).fit(disp=0, method="newton", maxiter=100)
        except np.linalg.LinAlgError:
            return None
    bad = any(issubclass(w.category, (PerfectSeparationWarning, ConvergenceWarning)) for w in caught)
    if bad or not res.mle_retvals.get("converged", False) or not np.all(np.isfinite(res.bse)):
        return None
    return res


# ----------------------------------------------------------------------------------------------------------------
# Screening and fit
# ----------------------------------------------------------------------------------------------------------------
def screen_candidates(
    frame: pd.DataFrame, y: np.ndarray, *, candidates: dict | None = None, min_count: int = 10
) -> pd.DataFrame:
    """Univariable likelihood-ratio test of every candidate in ``frame``'s rows (the fitting rows only).

    Returns
    -------
    DataFrame
        ``variable, label, levels, df, lr_chi2, p_value`` sorted by P (NaN P: a variable with one level here).
    """
    y = np.asarray(y, dtype=float)
    null = sm.Logit(y, np.ones((len(y), 1))).fit(disp=0).llf
    rows = []
    for col, (label, levels) in (candidates or clinical_candidates()).items():
        if col not in frame.columns:
            continue
        term = _make_term(col, label, levels, frame[col], min_count)
        X = term.encode(frame[col])
        if X.shape[1] == 0 or np.ptp(X, axis=0).min() == 0:
            rows.append(
                dict(variable=col, label=label, levels="|".join(term.levels), df=0, lr_chi2=np.nan, p_value=np.nan)
            )
            continue
        res = _logit_fit(np.column_stack([np.ones(len(y)), X]), y)
        chi2 = 2 * (res.llf - null) if res is not None else np.nan
        p = float(_st.chi2.sf(chi2, X.shape[1])) if res is not None else np.nan
        rows.append(
            dict(variable=col, label=label, levels="|".join(term.levels), df=X.shape[1], lr_chi2=chi2, p_value=p)
        )
    return pd.DataFrame(rows).sort_values("p_value", kind="mergesort", na_position="last").reset_index(drop=True)


@dataclass(frozen=True)
class ClinicalModel:
    """A fitted DL-US&MRI+Clinical logistic regression.

    Attributes
    ----------
    terms : tuple
        The selected variables, as the fitting rows encoded them.
    params, bse : np.ndarray
        Coefficients (intercept, DL-US&MRI logit, then each term's columns) and standard errors.
    columns : tuple of str
        Names of ``params``.
    screen : DataFrame
        :func:`screen_candidates` of the fitting rows.
    level, eps, fit_on, n, n_pos, method
        Wald level, logit clipping, which rows, their number and HER2-positives, how it was fitted.
    dl_range : (float, float)
        Range of the DL-US&MRI logit over the fitting rows (nomogram).
    """

    terms: tuple[_Term, ...]
    params: np.ndarray
    bse: np.ndarray
    columns: tuple[str, ...]
    screen: pd.DataFrame
    level: float
    eps: float
    fit_on: str
    n: int
    n_pos: int
    method: str
    dl_range: tuple[float, float] = field(default=(0.0, 0.0))

    def linear_predictor(self, frame: pd.DataFrame, p_dl: np.ndarray) -> np.ndarray:
        """Log-odds, shape (n_patients,), from the cohort rows (descriptor columns) and their DL-US&MRI scores."""
        return _design(frame, p_dl, list(self.terms), self.eps) @ self.params

    def predict(self, frame: pd.DataFrame, p_dl: np.ndarray) -> np.ndarray:
        """P(HER2-positive), shape (n_patients,)."""
        return 1.0 / (1.0 + np.exp(-self.linear_predictor(frame, p_dl)))

    def to_frame(self) -> pd.DataFrame:
        """Coefficients: term, coefficient, SE, Wald CI, odds ratio (with CI), P, and the fit's description."""
        z = _st.norm.ppf(0.5 + self.level / 2)
        p = 2 * _st.norm.sf(np.abs(self.params / self.bse))
        return pd.DataFrame(
            {
                "fit_on": self.fit_on,
                "term": self.columns,
                "coef": self.params,
                "se": self.bse,
                "ci_low": self.params - z * self.bse,
                "ci_high": self.params + z * self.bse,
                "ci_level": self.level,
                "odds_ratio": np.exp(self.params),
                "or_ci_low": np.exp(self.params - z * self.bse),
                "or_ci_high": np.exp(self.params + z * self.bse),
                "p_value": p,
                "n": self.n,
                "n_pos": self.n_pos,
                "method": self.method,
            }
        )


def fit_clinical(
    frame: pd.DataFrame,
    p_dl: np.ndarray,
    y: np.ndarray,
    *,
    candidates: dict | None = None,
    alpha: float = 0.05,
    max_terms: int | None = None,
    min_count: int = 10,
    level: float = 0.95,
    eps: float = EPS,
    fit_on: str = "train OOF",
) -> ClinicalModel:
    """Screen, select and fit DL-US&MRI+Clinical on the fitting rows (module docstring).

    Parameters
    ----------
    frame : DataFrame
        The fitting rows' descriptor columns (manifest columns of :func:`clinical_candidates`).
    p_dl : array_like, shape (n_patients,)
        Their DL-US&MRI OOF probabilities.
    y : array_like, shape (n_patients,)
        HER2 status (1 = positive).
    candidates : dict, optional
        ``{column: (label, levels)}``; default :func:`clinical_candidates`.
    alpha : float
        Screening level (univariable likelihood-ratio P).
    max_terms : int, optional
        Most coefficients besides the intercept and the DL score (a descriptor with k levels takes k - 1); default
        ``max(1, n_pos // 10 - 1)``.
    min_count : int
        Levels seen in fewer fitting patients are pooled into ``"other"`` (or dropped if still rare).
    level, eps, fit_on
        Wald level, logit clipping, label of the fitting rows.

    Returns
    -------
    ClinicalModel
    """
    if not 0 < alpha < 1:
        raise ParameterError(f"alpha must lie in (0, 1); got {alpha!r}.")
    y = np.asarray(y, dtype=float)
    n_pos = int(y.sum())
    if n_pos < 2 or len(y) - n_pos < 2:
        raise DataError(f"DL-US&MRI+Clinical fit on {fit_on}: needs 2 patients of each class; got {n_pos} positive.")
    cands = candidates or clinical_candidates()
    screen = screen_candidates(frame, y, candidates=cands, min_count=min_count)
    limit = max(1, n_pos // 10 - 1) if max_terms is None else int(max_terms)
    chosen, used = [], 0
    for var, df in screen.loc[screen["p_value"] < alpha, ["variable", "df"]].itertuples(index=False):
        if used + int(df) <= limit:  # the limit counts coefficients (a 3-level descriptor takes 2)
            chosen.append(var)
            used += int(df)
    while True:  # a term that makes the fit separate or singular is dropped (the weakest first)
        terms = [_make_term(c, cands[c][0], cands[c][1], frame[c], min_count) for c in chosen]
        X = _design(frame, p_dl, terms, eps)
        res = _logit_fit(X, y)
        if res is not None or not chosen:
            break
        chosen = chosen[:-1]
    if res is None:
        raise DataError(
            f"DL-US&MRI+Clinical fit on {fit_on}: the logistic regression on the DL score alone does not converge."
        )
    columns = ("intercept", "logit_p_dl_us_mri", *(c for t in terms for c in t.columns))
    dl = logit(np.asarray(p_dl, dtype=float), eps)
    return ClinicalModel(
        terms=tuple(terms),
        params=np.asarray(res.params, dtype=float),
        bse=np.asarray(res.bse, dtype=float),
        columns=columns,
        screen=screen,
        level=level,
        eps=eps,
        fit_on=fit_on,
        n=len(y),
        n_pos=n_pos,
        method=f"logit MLE (statsmodels); univariable LR screen P < {alpha}, at most {limit} coefficients besides the DL score",
        dl_range=(float(dl.min()), float(dl.max())),
    )


# ----------------------------------------------------------------------------------------------------------------
# Leakage-free protocol
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClinicalResult:
    """DL-US&MRI+Clinical: the model fitted on all training OOF scores, its cross-fitted training predictions, its
    test predictions (per fold model, then averaged) and tables."""

    model: ClinicalModel
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: pd.DataFrame | None
    coefficients: pd.DataFrame
    screen: pd.DataFrame


def _rows(cohort: pd.DataFrame, preds: pd.DataFrame, what: str) -> pd.DataFrame:
    ids = preds["patient_id"]
    missing = sorted(set(ids) - set(cohort["patient_id"]))
    if missing:
        raise DataError(f"DL-US&MRI+Clinical ({what}): patients {missing[:10]} are not in the cohort manifest.")
    return cohort.set_index("patient_id").loc[ids].reset_index()


def fit_clinical_model(
    cohort: pd.DataFrame,
    dl_oof: pd.DataFrame,
    dl_test: pd.DataFrame,
    *,
    dl_test_folds: pd.DataFrame | None = None,
    level: float = 0.95,
    eps: float = EPS,
    **options,
) -> ClinicalResult:
    """Fit DL-US&MRI+Clinical on the training OOF scores (cross-fitted for the training cohort) and apply it to the
    test cohort.

    Parameters
    ----------
    cohort : DataFrame
        :func:`her2lib.data.load_cohort` output (descriptor columns).
    dl_oof, dl_test : DataFrame
        Validated DL-US&MRI predictions (``fusion_oof.csv``, ``fusion_test.csv``).
    dl_test_folds : DataFrame, optional
        ``fusion_test_folds.csv``: the model is applied per fold model pair and averaged.
    level, eps, **options
        As :func:`fit_clinical`.

    Returns
    -------
    ClinicalResult
    """
    train = _rows(cohort, dl_oof, "training OOF")
    y = dl_oof["her2"].to_numpy(dtype=float)
    model = fit_clinical(train, dl_oof["p_her2"], y, level=level, eps=eps, **options)
    p = np.full(len(train), np.nan)
    for k in sorted(dl_oof["fold"].unique()):  # cross-fitted: selection and fit without fold k, applied to fold k
        held = (dl_oof["fold"] == k).to_numpy()
        m = fit_clinical(
            train[~held], dl_oof.loc[~held, "p_her2"], y[~held], level=level, eps=eps, fit_on=f"folds != {k}", **options
        )
        p[held] = m.predict(train[held], dl_oof.loc[held, "p_her2"].to_numpy())
    oof = dl_oof[["patient_id", "split", "fold", "her2"]].assign(p_her2=p)
    test, test_folds = apply_clinical(model, cohort, dl_test, dl_folds=dl_test_folds)
    return ClinicalResult(model, oof.reset_index(drop=True), test, test_folds, model.to_frame(), model.screen)


def apply_clinical(
    model: ClinicalModel, cohort: pd.DataFrame, dl: pd.DataFrame, *, dl_folds: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The fitted model (nothing refitted, no label read) on an evaluation cohort: per DL-US&MRI fold model and
    averaged when ``dl_folds`` is given, else on the fold-mean scores. Returns (predictions, per-fold or None)."""
    rows = _rows(cohort, dl, "evaluation cohort")
    if dl_folds is None:
        return dl[["patient_id", "split", "fold", "her2"]].assign(p_her2=model.predict(rows, dl["p_her2"])), None
    f_rows = _rows(cohort, dl_folds, "evaluation cohort, per fold model")
    folds = dl_folds.assign(p_her2=model.predict(f_rows, dl_folds["p_her2"].to_numpy()))[list(TEST_FOLD_COLUMNS)]
    mean = folds.groupby("patient_id")["p_her2"].mean()
    pred = dl[["patient_id", "split", "fold", "her2"]].assign(p_her2=mean.loc[dl["patient_id"]].to_numpy())
    return pred.reset_index(drop=True), folds.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Nomogram
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NomogramScale:
    """One nomogram axis: a variable's tick labels and the points each earns (0-100 scale)."""

    label: str
    ticks: tuple[str, ...]
    points: tuple[float, ...]


def _contributions(model: ClinicalModel) -> list[tuple[str, list[str], np.ndarray]]:
    """Per term: its label, tick labels and linear-predictor contributions ``b * x`` at the ticks."""
    b = dict(zip(model.columns, model.params))
    lo, hi = model.dl_range
    probs = [p for p in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99) if lo <= np.log(p / (1 - p)) <= hi]
    out = [("DL-US&MRI probability", [f"{p:g}" for p in probs], b["logit_p_dl_us_mri"] * logit(np.array(probs)))]
    for t in model.terms:
        if not t.levels:
            ticks = np.unique(np.round(np.linspace(t.low, t.high, 6)))
            out.append((t.label, [f"{v:g}" for v in ticks], b[t.column] * ticks))
        else:
            out.append((t.label, t.tick_labels, np.array([0.0] + [b[c] for c in t.columns])))
    return out


def nomogram_scales(model: ClinicalModel) -> tuple[list[NomogramScale], float, float]:
    """The nomogram's axes: per term the points of its ticks (the term with the widest contribution range spans 0 to
    100), and the conversion of total points to the linear predictor: ``lp = offset + total * scale``.

    Returns
    -------
    (scales, offset, scale)
    """
    contrib = _contributions(model)
    widest = max(float(np.ptp(c)) for _, _, c in contrib) or 1.0
    scales, offset = [], float(model.params[0])
    for label, ticks, c in contrib:
        offset += float(c.min())
        scales.append(NomogramScale(label, tuple(ticks), tuple(float(v) for v in (c - c.min()) * 100 / widest)))
    return scales, offset, widest / 100


def points_to_probability(total: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Total nomogram points -> P(HER2-positive)."""
    return 1.0 / (1.0 + np.exp(-(offset + np.asarray(total, dtype=float) * scale)))
