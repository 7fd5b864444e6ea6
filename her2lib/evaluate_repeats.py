"""Repeated cross-validation: how much each model's test AUC, and each DeLong comparison, moves with the data split
and the seed (paper, *Statistical analysis*, asked for by any reviewer of a 48-patient test cohort).

Science layer. Each repetition ``r`` of a repeated cross-validation has its own folds and training seed
(:func:`her2lib.train.repeat_seed`) and the same test cohort; repetition 0 is the single run that the rest of the
evaluation reports. For every repetition this computes what the single run reports (test AUC, OOF AUC, the paired
DeLong tests of :data:`her2lib.contract.PAIRS`) with the same functions, then summarises each quantity over the
repetitions (:func:`her2lib.stats.repeat_distribution`: mean, SD, 2.5/97.5 percentiles) beside its single-run value.
The spread is that of the training procedure on this cohort (split and seed), not a confidence interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .contract import PAIRS, model_label
from .errors import DataError
from .evaluate import ModelPredictions
from .stats import auc, delong_test, repeat_distribution
from .stats.repeats import REPEAT_METHOD

__all__ = ["RepeatedCVResult", "evaluate_repeats", "REPEAT_AUC_COLUMNS", "REPEAT_DELONG_COLUMNS"]

REPEAT_AUC_COLUMNS = ("repeat", "model", "test_auc", "oof_auc", "n_pos", "n_neg")
REPEAT_DELONG_COLUMNS = ("repeat", "model_a", "model_b", "auc_a", "auc_b", "diff", "p_value")
SUMMARY_COLUMNS = (
    "quantity",
    "model",
    "single_run",
    "n_repeats",
    "mean",
    "sd",
    "low",
    "high",
    "level",
    "minimum",
    "maximum",
    "share_p_below_alpha",
    "method",
)


@dataclass(frozen=True)
class RepeatedCVResult:
    """Every repetition's statistics and their across-repetition summary.

    Attributes
    ----------
    auc : DataFrame
        :data:`REPEAT_AUC_COLUMNS`: per repetition and model, the test AUC (fold-model mean probability, as the
        single run's), the training cohort's OOF AUC and the test cohort's class counts.
    delong : DataFrame
        :data:`REPEAT_DELONG_COLUMNS`: per repetition, the paired DeLong test of each pair (``diff = auc_a -
        auc_b``).
    summary : DataFrame
        One row per quantity (``test AUC``, ``OOF AUC`` per model; ``AUC difference`` per pair, model ``"A - B"``):
        ``single_run`` (repetition 0), the :class:`~her2lib.stats.RepeatDistribution` fields and, for the
        differences, ``share_p_below_alpha`` (share of the repetitions with a DeLong P, below ``alpha``; every
        repetition tests the same test cohort, so this is not a replication rate).
    text : str
        A results paragraph.
    n_repeats : int
    alpha : float
        The level DeLong P values are counted below.
    method : str
    """

    auc: pd.DataFrame
    delong: pd.DataFrame
    summary: pd.DataFrame
    text: str
    n_repeats: int
    alpha: float = 0.05
    method: str = REPEAT_METHOD


def _check_repeats(per_repeat: Mapping[int, Mapping[str, ModelPredictions]]) -> list[str]:
    """The models every repetition has (in the paper's order); DataError unless repetition 0 is there and all
    repetitions share the test patients and labels."""
    if 0 not in per_repeat or len(per_repeat) < 2:
        raise DataError(
            f"evaluate_repeats: repetitions {sorted(per_repeat)}; need repetition 0 (the single run) and at least "
            "one more (notebook 02's n_repeats >= 2)."
        )
    keys = [k for k in per_repeat[0] if all(k in p for p in per_repeat.values())]
    if not keys:
        raise DataError("evaluate_repeats: no model has predictions in every repetition.")
    ref = per_repeat[0][keys[0]].test[["patient_id", "her2"]].reset_index(drop=True)
    for r, preds in per_repeat.items():
        for k in keys:
            t = preds[k].test[["patient_id", "her2"]].reset_index(drop=True)
            if not t.equals(ref):
                raise DataError(
                    f"evaluate_repeats: repetition {r}'s {model_label(k)} test predictions are not those of the "
                    "single run's test patients (same ids and HER2 in the same order); re-run notebooks 02-05."
                )
    return keys


def _repeat_rows(r: int, preds: Mapping[str, ModelPredictions], keys: list[str]) -> tuple[list, list]:
    aucs, tests = [], []
    for k in keys:
        p = preds[k]
        y = p.test["her2"].to_numpy()
        aucs.append(
            {
                "repeat": r,
                "model": p.label,
                "test_auc": auc(y, p.test["p_her2"].to_numpy()),
                "oof_auc": auc(p.oof["her2"].to_numpy(), p.oof["p_her2"].to_numpy()),
                "n_pos": int((y == 1).sum()),
                "n_neg": int((y == 0).sum()),
            }
        )
    for a, b in PAIRS:
        if a in keys and b in keys:
            ta, tb = preds[a].test, preds[b].test
            d = delong_test(ta["her2"].to_numpy(), ta["p_her2"].to_numpy(), tb["p_her2"].to_numpy())
            row = {"repeat": r, "model_a": preds[a].label, "model_b": preds[b].label, "auc_a": d.auc_a}
            tests.append(row | {"auc_b": d.auc_b, "diff": d.diff, "p_value": d.pvalue})
    return aucs, tests


def _summary_row(
    quantity: str, name: str, values: pd.Series, single: float, level: float, p=None, alpha: float = 0.05
) -> dict:
    dist = repeat_distribution(values.to_numpy(), level=level).to_row()
    pv = p.dropna().to_numpy() if p is not None else np.zeros(0)
    share = float(np.mean(pv < alpha)) if len(pv) else float("nan")
    return (
        {"quantity": quantity, "model": name, "single_run": single, "n_repeats": dist.pop("n")}
        | dist
        | {"share_p_below_alpha": share}
    )


def evaluate_repeats(
    per_repeat: Mapping[int, Mapping[str, ModelPredictions]], *, level: float = 0.95, alpha: float = 0.05
) -> RepeatedCVResult:
    """Test AUCs and DeLong comparisons of every repetition, and their spread over the repetitions.

    Parameters
    ----------
    per_repeat : mapping
        ``repeat -> {model key -> ModelPredictions}`` (:func:`her2lib.evaluate.load_predictions` of each
        repetition's folder); repetition 0 is the single run. Models missing from a repetition are left out.
    level : float, default 0.95
        Central share of the percentile interval. With fewer than about 40 repetitions its ends interpolate between
        the extreme values (R's type 7), so the summary gives the minimum and maximum too.
    alpha : float, default 0.05
        DeLong P values are counted below it (``share_p_below_alpha``).

    Returns
    -------
    RepeatedCVResult

    Raises
    ------
    DataError
        Fewer than two repetitions, no repetition 0, no model common to all, or test cohorts that differ.
    """
    keys = _check_repeats(per_repeat)
    aucs, tests = [], []
    for r in sorted(per_repeat):
        a, t = _repeat_rows(r, per_repeat[r], keys)
        aucs += a
        tests += t
    auc_t = pd.DataFrame(aucs, columns=REPEAT_AUC_COLUMNS)
    delong_t = pd.DataFrame(tests, columns=REPEAT_DELONG_COLUMNS)
    rows = []
    for col, quantity in (("test_auc", "test AUC"), ("oof_auc", "OOF AUC")):
        for name, g in auc_t.groupby("model", sort=False):
            rows.append(_summary_row(quantity, name, g[col], float(g.loc[g["repeat"] == 0, col].iloc[0]), level))
    for (a, b), g in delong_t.groupby(["model_a", "model_b"], sort=False):
        single = float(g.loc[g["repeat"] == 0, "diff"].iloc[0])
        rows.append(
            _summary_row("AUC difference (DeLong)", f"{a} - {b}", g["diff"], single, level, g["p_value"], alpha)
        )
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    text = repeats_paragraph(summary, level=level, alpha=alpha)
    return RepeatedCVResult(auc_t, delong_t, summary, text, len(per_repeat), alpha)


def repeats_paragraph(summary: pd.DataFrame, *, level: float = 0.95, alpha: float = 0.05) -> str:
    """A results paragraph from :attr:`RepeatedCVResult.summary`."""
    pct = f"{50 * (1 - level):g}th-{50 * (1 + level):g}th percentiles"
    n = int(summary["n_repeats"].max())
    parts = []
    for _, s in summary[summary["quantity"] == "test AUC"].iterrows():
        parts.append(
            f"{s['model']} {s['mean']:.3f} ± {s['sd']:.3f} (range {s['minimum']:.3f}-{s['maximum']:.3f}, {pct} "
            f"{s['low']:.3f}-{s['high']:.3f}; single run {s['single_run']:.3f})"
        )
    text = (
        f"Across {n} repetitions of the cross-validation (new folds and training seed each, the same test cohort), "
        f"the test AUC (mean ± SD) was {'; '.join(parts)}."
    )
    diffs = summary[summary["quantity"] == "AUC difference (DeLong)"]
    if len(diffs):
        text += " Paired DeLong AUC differences: " + "; ".join(
            f"{s['model']} {s['mean']:+.3f} ± {s['sd']:.3f} (range {s['minimum']:+.3f} to {s['maximum']:+.3f}), "
            f"P < {alpha:g} in {s['share_p_below_alpha']:.0%} of the repetitions"
            for _, s in diffs.iterrows()
        )
        text += "."
    return (
        text + " The spread is that of the data split and the seed on this cohort, not a confidence interval, and "
        "the repetitions test the same patients, so the share of P values below the level is not a replication "
        "rate.\n"
    )
