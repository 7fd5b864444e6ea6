"""Tests of her2lib.stats.reclassification: R's Hmisc::improveProb (1e-12), brute force from the definitions,
antisymmetry, identical models, bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from her2lib.errors import DataError, ParameterError, UndefinedMetricWarning
from her2lib.stats import Estimate, ReclassificationResult, reclassification

FIX = Path(__file__).parent / "fixtures"
REF = json.loads((FIX / "reclassification_reference.json").read_text())
CASES = REF["cases"]
TOL = 1e-12  # absolute, against Hmisc::improveProb (R 4.2.2, Hmisc 4.8.0; inputs stored with %.17g)


def _close(got: float, want: float, what: str) -> None:
    """Equal within TOL (absolute), or both NaN, or the same infinity; P values also within 1e-9 relative."""
    if math.isnan(want) or math.isinf(want):
        assert (math.isnan(got) and math.isnan(want)) or got == want, f"{what}: {got!r} != {want!r}"
    else:
        assert got == pytest.approx(want, abs=TOL), f"{what}: {got!r} != {want!r}"


def _run(case) -> ReclassificationResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return reclassification(case["y"], case["p_old"], case["p_new"])


# ------------------------------------------------------------------------------------------------- the fixture
def test_fixture_covers_sizes_ties_and_unbalanced_classes():
    # The fixture must exercise what the brief asks for, so a regenerated fixture cannot silently drop a case.
    assert REF["versions"]["Hmisc"] and REF["versions"]["R"].startswith("R version")
    sizes = {len(c["y"]) for c in CASES}
    assert {20, 48, 150, 500} <= sizes
    assert any(c["n_ties"] > 0 for c in CASES)
    assert any(min(c["na"], c["nb"]) / c["n"] < 0.15 for c in CASES)
    for c in CASES:
        assert all(0 < p < 1 for p in c["p_old"] + c["p_new"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_agrees_with_hmisc_improveprob(case):
    # Reference: Hmisc::improveProb(x1 = p_old, x2 = p_new, y) and the Z / 2P / 95% limits of its print method
    # (tests/fixtures/make_reclassification_reference.R). Tolerance 1e-12 absolute.
    r = _run(case)
    assert (r.n_events, r.n_nonevents) == (case["na"], case["nb"])
    assert r.n_up_events / r.n_events == case["pup.ev"] and r.n_down_events / r.n_events == case["pdown.ev"]
    assert r.n_up_nonevents / r.n_nonevents == case["pup.ne"]
    assert r.n_down_nonevents / r.n_nonevents == case["pdown.ne"]
    pairs = {
        "nri": "nri",
        "nri_events": "nri.ev",
        "nri_nonevents": "nri.ne",
        "idi": "idi",
    }
    for ours, theirs in pairs.items():
        est = getattr(r, ours)
        printed = case["print_0.95"][theirs]
        _close(est.value, case[theirs], ours)
        _close(getattr(r, f"{ours}_se"), case[f"se.{theirs}"], f"{ours}_se")
        _close(getattr(r, f"{ours}_z"), case[f"z.{theirs}"], f"{ours}_z")
        _close(getattr(r, f"{ours}_p_value"), printed["p2"], f"{ours}_p_value")
        if math.isfinite(printed["p2"]) and printed["p2"] > 0:
            assert getattr(r, f"{ours}_p_value") == pytest.approx(printed["p2"], rel=1e-9), ours
        _close(est.ci[0], printed["lower"], f"{ours} ci_low")
        _close(est.ci[1], printed["upper"], f"{ours} ci_high")
        assert est.ci[2] == 0.95
    _close(r.idi_events, case["improveSens"], "idi_events")
    _close(r.idi_nonevents, case["improveSpec"], "idi_nonevents")


def test_single_event_gives_nan_idi_se_with_a_warning():
    case = next(c for c in CASES if c["name"] == "edge_single_event")
    with pytest.warns(UndefinedMetricWarning, match="single event or nonevent"):
        r = reclassification(case["y"], case["p_old"], case["p_new"])
    assert math.isnan(r.idi_se) and math.isnan(r.idi_p_value) and math.isnan(r.idi.ci[0])
    assert math.isfinite(r.idi.value) and math.isfinite(r.nri_se)


# ---------------------------------------------------------------------------------------------- brute force
def test_point_estimates_match_the_definitions():
    rng = np.random.default_rng(7)
    n = 37
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    p_old = rng.random(n)
    p_new = np.clip(p_old + rng.normal(0, 0.2, n), 0.0, 1.0)
    p_new[[3, 8, 20]] = p_old[[3, 8, 20]]  # ties: neither up nor down
    r = reclassification(y, p_old, p_new)
    ev = [i for i in range(n) if y[i] == 1]
    ne = [i for i in range(n) if y[i] == 0]
    up = lambda idx: sum(1 for i in idx if p_new[i] > p_old[i]) / len(idx)  # noqa: E731
    down = lambda idx: sum(1 for i in idx if p_new[i] < p_old[i]) / len(idx)  # noqa: E731
    assert r.nri_events.value == pytest.approx(up(ev) - down(ev), abs=1e-15)
    assert r.nri_nonevents.value == pytest.approx(down(ne) - up(ne), abs=1e-15)
    assert r.nri.value == pytest.approx(up(ev) - down(ev) + down(ne) - up(ne), abs=1e-15)
    # IDI = change in the discrimination slope (mean p in events - mean p in nonevents)
    slope = lambda p: sum(p[i] for i in ev) / len(ev) - sum(p[i] for i in ne) / len(ne)  # noqa: E731
    assert r.idi.value == pytest.approx(slope(p_new) - slope(p_old), abs=1e-14)
    assert r.idi_events + r.idi_nonevents == pytest.approx(r.idi.value, abs=1e-14)
    # SEs: McNemar-type variance of each NRI component, sample variances for the IDI; Wald interval and P
    d = p_new - p_old
    se_idi = math.sqrt(np.var(d[ev], ddof=1) / len(ev) + np.var(d[ne], ddof=1) / len(ne))
    assert r.idi_se == pytest.approx(se_idi, rel=1e-12)
    u, w, m = up(ev) * len(ev), down(ev) * len(ev), len(ev)
    assert r.nri_events_se == pytest.approx(math.sqrt((u + w) / m**2 - (u - w) ** 2 / m**3), rel=1e-12)
    z = st.norm.ppf(0.975)
    assert r.nri.ci[:2] == pytest.approx((r.nri.value - z * r.nri_se, r.nri.value + z * r.nri_se), abs=1e-14)
    assert r.idi_p_value == pytest.approx(2 * st.norm.sf(abs(r.idi.value / r.idi_se)), rel=1e-12)
    assert (r.n_up_events + r.n_down_events + r.n_up_nonevents + r.n_down_nonevents) == n - 3


def test_level_changes_the_interval_only():
    case = CASES[3]
    r95, r80 = _run(case), reclassification(case["y"], case["p_old"], case["p_new"], level=0.8)
    assert r80.nri.value == r95.nri.value and r80.nri_p_value == r95.nri_p_value
    assert r95.nri.ci[0] < r80.nri.ci[0] < r80.nri.value < r80.nri.ci[1] < r95.nri.ci[1]
    assert r80.idi.ci[2] == 0.8 and r80.level == 0.8


# ------------------------------------------------------------------------------------------ sign, identity
@pytest.mark.parametrize("case", CASES[:6], ids=[c["name"] for c in CASES[:6]])
def test_swapping_old_and_new_negates_nri_and_idi(case):
    a = _run(case)
    b = reclassification(case["y"], case["p_new"], case["p_old"])
    for name in ("nri", "nri_events", "nri_nonevents", "idi"):
        assert getattr(b, name).value == pytest.approx(-getattr(a, name).value, abs=1e-15), name
        assert getattr(b, f"{name}_se") == pytest.approx(getattr(a, f"{name}_se"), rel=1e-12), name
        assert getattr(b, f"{name}_p_value") == pytest.approx(getattr(a, f"{name}_p_value"), rel=1e-9), name
    assert b.idi_events == pytest.approx(-a.idi_events, abs=1e-15)
    assert b.idi_nonevents == pytest.approx(-a.idi_nonevents, abs=1e-15)
    assert (b.n_up_events, b.n_down_events) == (a.n_down_events, a.n_up_events)


def test_identical_models_give_zero_with_undefined_p():
    case = CASES[1]
    with pytest.warns(
        UndefinedMetricWarning, match="P value of the NRI, NRI of events, NRI of nonevents, IDI is undefined"
    ):
        r = reclassification(case["y"], case["p_old"], case["p_old"])
    for name in ("nri", "nri_events", "nri_nonevents", "idi"):
        assert getattr(r, name).value == 0.0 and getattr(r, f"{name}_se") == 0.0, name
        assert math.isnan(getattr(r, f"{name}_p_value")), name  # Hmisc: z = 0 / 0 = NaN
    assert r.idi_events == 0.0 and r.idi_nonevents == 0.0
    assert r.n_up_events == r.n_down_events == r.n_up_nonevents == r.n_down_nonevents == 0


# -------------------------------------------------------------------------------------------- result object
def test_result_object_and_frame():
    case = CASES[1]
    r = _run(case)
    assert isinstance(r.nri, Estimate) and "Pencina" in r.reference and "improveProb" in r.reference
    assert "net reclassification" in r.method.lower() and "integrated discrimination" in r.method.lower()
    with pytest.raises(AttributeError):
        r.nri = r.idi  # frozen
    f = r.to_frame()
    assert list(f.columns) == ["statistic", "estimate", "se", "ci_low", "ci_high", "ci_level", "p_value", "method"]
    assert list(f["statistic"]) == ["nri", "nri_events", "nri_nonevents", "idi", "idi_events", "idi_nonevents"]
    row = f.set_index("statistic").loc["idi"]
    assert (row["estimate"], row["se"], row["p_value"]) == (r.idi.value, r.idi_se, r.idi_p_value)
    assert (row["ci_low"], row["ci_high"], row["ci_level"]) == r.idi.ci
    assert f.set_index("statistic").loc["idi_events", "estimate"] == r.idi_events
    assert math.isnan(f.set_index("statistic").loc["idi_nonevents", "se"])


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_raises():
    y, old, new = [1, 0, 1, 0], [0.2, 0.3, 0.4, 0.5], [0.3, 0.2, 0.5, 0.4]
    with pytest.raises(DataError, match="p_new has 3 values but y_true has 4"):
        reclassification(y, old, new[:3])
    with pytest.raises(DataError, match="p_old has 5 values but y_true has 4"):
        reclassification(y, [*old, 0.1], new)
    with pytest.raises(DataError, match=r"at least one event .* got 0 event\(s\) and 4 nonevent"):
        reclassification([0, 0, 0, 0], old, new)
    with pytest.raises(DataError, match=r"got 4 event\(s\) and 0 nonevent"):
        reclassification([1, 1, 1, 1], old, new)
    with pytest.raises(DataError, match=r"p_new must hold probabilities in \[0, 1\].*1.2"):
        reclassification(y, old, [0.3, 0.2, 1.2, 0.4])
    with pytest.raises(DataError, match=r"p_old must hold probabilities in \[0, 1\].*-0.1"):
        reclassification(y, [-0.1, 0.3, 0.4, 0.5], new)
    with pytest.raises(DataError, match="non-finite"):
        reclassification(y, old, [0.3, float("nan"), 0.5, 0.4])
    with pytest.raises(DataError, match="0/1 labels"):
        reclassification([1, 0, 2, 0], old, new)
    with pytest.raises(ParameterError, match="level must be a number strictly between 0 and 1.*1.5"):
        reclassification(y, old, new, level=1.5)
    with pytest.raises(ParameterError, match="level"):
        reclassification(y, old, new, level=0.0)
    with pytest.raises(TypeError):
        reclassification(y, old, new, 0.9)  # level is keyword-only
