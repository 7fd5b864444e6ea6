"""Tests of the synthetic cohort: exact paper counts, quantiles and P values, subtype logic, determinism, HER2 signal,
MRI geometry (the ROI is a true crop)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from her2lib import roi, synth
from her2lib.contract import table_spec
from her2lib.data import load_cohort, read_image
from her2lib.errors import ParameterError
from her2lib.stages.cohort import prepare_cohort

FIX = Path(__file__).parent / "fixtures"

TINY = dict(n_patients=24, seed=3, us_shape=(96, 112), mri_shape=(16, 32, 32))


@pytest.fixture(scope="module")
def table197() -> pd.DataFrame:
    return synth.make_table(197, seed=0)


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Path:
    return synth.make_cohort(tmp_path_factory.mktemp("tiny") / "cohort", **TINY)


def test_split_and_her2_counts_197(table197):
    assert (table197["split"] == "train").sum() == 149
    assert (table197["split"] == "test").sum() == 48
    assert table197.groupby("split")["her2"].sum().to_dict() == {"train": 60, "test": 19}
    assert table197["patient_id"].is_unique


def test_every_categorical_count_matches_paper_197(table197):
    for var in table_spec()["categorical"]:
        for split in ("train", "test"):
            col = table197.loc[table197["split"] == split, var["column"]]
            got = [int((col.astype(str) == str(code)).sum()) for code in var["codes"]]
            assert got == var[split], (var["column"], split, got, var[split])


def test_paper_count_agreement(table197):
    agrees = synth.paper_count_agreement(synth.paper_count_table(table197))
    assert agrees.all() and set(agrees.index) == {v["column"] for v in table_spec()["categorical"]}
    off = table197.copy()
    i = off.index[off["split"] == "train"][0]
    off.loc[i, "location"] = "left" if off.loc[i, "location"] == "right" else "right"
    agrees = synth.paper_count_agreement(synth.paper_count_table(off))
    assert not agrees["location"] and agrees.drop("location").all()


def test_continuous_quantiles_197(table197):
    expect = {
        "train": {"age": [46, 51, 58], "mri_size_mm": [17, 23, 29]},
        "test": {"age": [46, 50, 57], "mri_size_mm": [16.75, 21, 26]},
    }
    for split, cols in expect.items():
        sub = table197[table197["split"] == split]
        for col, q in cols.items():
            np.testing.assert_allclose(np.quantile(sub[col].astype(float), [0.25, 0.5, 0.75]), q)
            assert (sub[col].astype(float) > 0).all()


def test_subtype_logic(table197):
    t = table197
    tn, nl = t["triple_negative"] == 1, t["her2_nonluminal"] == 1
    assert ((t["her2"] == 0) & (t["hr"] == 0))[tn].all()
    assert ((t["her2"] == 1) & (t["hr"] == 0))[nl].all()
    assert (t["luminal"] == 1 - (tn | nl).astype(int)).all()
    # HR-positive patients are ER- or PR-positive
    assert ((t["er"] == 1) | (t["pr"] == 1))[t["hr"] == 1].all()
    # documented, count-forced exceptions: luminal with hr=0 (train 5, test 4)
    forced = t[(t["luminal"] == 1) & (t["hr"] == 0)].groupby("split").size().to_dict()
    assert forced == {"train": 5, "test": 4}
    # IHC / FISH consistent with HER2
    pos = t["her2"] == 1
    assert t.loc[pos, "her2_ihc"].isin(["2+", "3+"]).all()
    assert t.loc[~pos, "her2_ihc"].isin(["0", "1+", "2+"]).all()
    eq = t["her2_ihc"] == "2+"
    assert (t.loc[eq & pos, "fish"] == "positive").all() and (t.loc[eq & ~pos, "fish"] == "negative").all()
    assert (t.loc[~eq, "fish"] == "not_done").all()


@pytest.mark.parametrize("n", [20, 48, 100, 400])
def test_other_sizes_scale_counts(n):
    t = synth.make_table(n, seed=1)
    sizes = synth.split_counts(n)
    assert len(t) == n and sum(sizes.values()) == n
    for var in table_spec()["categorical"]:
        for split in ("train", "test"):
            col = t.loc[t["split"] == split, var["column"]].astype(str)
            got = [int((col == str(c)).sum()) for c in var["codes"]]
            assert got == synth.scale_counts(var[split], sizes[split])


def test_scale_counts_largest_remainder():
    assert synth.scale_counts([149, 48], 197) == [149, 48]
    assert synth.scale_counts([149, 48], 48) == [36, 12]
    assert synth.scale_counts([1, 1, 1], 2) == [1, 1, 0]
    assert sum(synth.scale_counts([134, 7, 5, 3], 37)) == 37


@pytest.mark.parametrize("n", [5, 12, 36, 48, 149])
@pytest.mark.parametrize("integer", [True, False])
def test_place_quantiles_exact(n, integer):
    rng = np.random.default_rng(n)
    target = {0.25: 16.75, 0.5: 21.0, 0.75: 26.0}
    out = synth.place_quantiles(rng.lognormal(3, 0.4, n), target, integer=integer)
    np.testing.assert_allclose(np.quantile(out, [0.25, 0.5, 0.75]), [16.75, 21, 26], atol=1e-9)


def test_unknown_knob_and_bad_values():
    with pytest.raises(ParameterError, match="Did you mean 'her2_signal'"):
        synth.make_table(40, her2_signa=1.0)
    with pytest.raises(ParameterError, match="n_patients"):
        synth.make_table(10)
    with pytest.raises(ParameterError, match="us_shape"):
        synth.knobs_from(us_shape=(8, 8))


def test_rebuild_is_byte_identical(tiny_cohort, tmp_path):
    again = synth.make_cohort(tmp_path / "again", n_jobs=2, **TINY)
    a, b = tiny_cohort.parent, again.parent
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert names_a == names_b and len(names_a) == 4 * TINY["n_patients"] + 3
    for rel in names_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_different_seed_differs(tiny_cohort, tmp_path):
    other = synth.make_table(TINY["n_patients"], seed=4)
    assert not other.equals(synth.make_table(TINY["n_patients"], seed=3))


def test_built_cohort_validates_and_records_knobs(tiny_cohort):
    df = load_cohort(tiny_cohort)
    assert len(df) == TINY["n_patients"]
    params = json.loads((tiny_cohort.parent / "synth_params.json").read_text())
    assert params == synth.synth_params(**TINY)
    img, sp = read_image(df["mri_image"].iloc[0])
    assert img.shape == (16, 32, 32)
    np.testing.assert_allclose(sp, (120 / 16, 320 / 32, 320 / 32))
    us, sp2 = read_image(df["us_image"].iloc[0])
    assert us.shape == (96, 112) and sp2 == (1.0, 1.0)
    assert list(df.columns[:7]) == ["patient_id", "split", "her2", "us_image", "us_mask", "mri_image", "mri_mask"]
    assert "_z" not in df.columns


def test_oracle_auc_theory_and_empirical(tiny_cohort):
    th = synth.oracle_auc_theory()
    assert th["latent"] > th["fused"] > th["us"] == th["mri"] > 0.5
    assert synth.oracle_auc_theory(0.0, 1.0)["us"] == pytest.approx(0.5)
    emp = synth.oracle_auc(tiny_cohort.parent)
    assert set(emp) == {"latent", "us", "mri", "fused"} and all(0 <= v <= 1 for v in emp.values())
    big = synth.make_table(400, seed=0)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(big["her2"], big["_s_us"]) == pytest.approx(th["us"], abs=0.05)


def _row(**kw):
    base = dict(
        mri_size_mm=22,
        us_orientation="parallel",
        us_shape="round_oval",
        us_margin="circumscribed",
        us_echo_pattern="hypoechoic",
        us_posterior="none",
        us_calcifications="absent",
        _s_us=0.0,
        mri_shape="round_oval",
        mri_margin="circumscribed",
        mri_enhancement="homogeneous",
        mri_lesions="single",
        mri_nonmass="absent",
        mri_skin="absent",
        mri_nipple="absent",
        _s_mri=0.0,
    )
    base.update(kw)
    return base


def _below_lesion_mean(img, mask):
    ys, xs = np.nonzero(mask)
    return img[ys.max() + 5 : ys.max() + 40, xs.min() : xs.max()].mean()


def test_us_image_follows_columns():
    k = synth.knobs_from(us_shape=(256, 288))
    rend = lambda **kw: synth.render_us(_row(**kw), np.random.default_rng(0), k)  # noqa: E731
    enh, m = rend(us_posterior="enhancement")
    sha, _ = rend(us_posterior="shadowing")
    assert _below_lesion_mean(enh, m) > _below_lesion_mean(sha, m) + 20
    calc, m2 = rend(us_calcifications="present", _s_us=2.0)
    none, _ = rend(us_calcifications="absent", _s_us=2.0)
    assert (calc[m2 > 0] > 200).sum() > (none[m2 > 0] > 200).sum()
    par, mp = rend(us_orientation="parallel")
    npar, mn = rend(us_orientation="not_parallel")
    extent = lambda mm: np.ptp(np.nonzero(mm)[0]) / np.ptp(np.nonzero(mm)[1])  # noqa: E731
    assert extent(mp) < 1 < extent(mn)
    assert set(np.unique(m).tolist()) == {0, 255}


def test_mri_enhancement_follows_her2_score():
    k = synth.knobs_from()
    rend = lambda **kw: synth.render_mri(_row(**kw), np.random.default_rng(0), k)  # noqa: E731
    lo, m = rend(_s_mri=-3.0)
    hi, _ = rend(_s_mri=3.0)
    from scipy import ndimage

    core = ndimage.binary_erosion(m, iterations=2)
    rim = m.astype(bool) & ~core
    assert hi[rim].mean() > lo[rim].mean()  # stronger enhancement
    assert hi[core].mean() / hi[rim].mean() < lo[core].mean() / lo[rim].mean()  # more rim-like
    assert lo.dtype == np.int16 and m.dtype == np.uint8 and m.any()


# ------------------------------------------------------------------ Mann-Whitney P values of Tables 1 and 3
def test_r_wilcox_p_matches_r_reference():
    """R 4.2 wilcox.test (exact, normal approximation, ties) from tests/fixtures/wilcox_reference.json."""
    cases = json.loads((FIX / "wilcox_reference.json").read_text())["wilcox"]
    assert {"exact" in c["method"] for c in cases} == {True, False}
    for c in cases:
        assert synth.r_wilcox_p(c["x"], c["y"]) == pytest.approx(c["p"], rel=1e-9, abs=1e-12), c["name"]


def test_continuous_p_values_match_paper_197(table197):
    """Age (Table 1) and tumour size (Table 3): the paper's printed train-vs-test P to its 3 decimals, with the test
    the paper's rule picks (Mann-Whitney: not both groups normal by Shapiro-Wilk) and R's wilcox.test P value."""
    from her2lib.stats.tables import PAPER_PVALUES, continuous_test

    assert (
        synth.PAPER_MW_P
        == {c: PAPER_PVALUES[c] for c in ("age", "mri_size_mm")}
        == {"age": 0.704, "mri_size_mm": 0.243}
    )
    tr, te = table197[table197["split"] == "train"], table197[table197["split"] == "test"]
    for col, printed in synth.PAPER_MW_P.items():
        a, b = tr[col].to_numpy(float), te[col].to_numpy(float)
        res = continuous_test(a, b)
        assert res.method == "mann_whitney", (col, res.reason)
        assert abs(res.pvalue - printed) < 5e-4, (col, res.pvalue)
        assert abs(synth.r_wilcox_p(a, b) - printed) < 5e-4
        assert (a == np.round(a)).all() and (b == np.round(b)).all()  # whole years / mm, as printed
        assert 25 <= a.min() and max(a.max(), b.max()) <= 88 if col == "age" else 6 <= min(a.min(), b.min())


@pytest.mark.parametrize("target", [0.05, 0.5, 0.95])
def test_match_mann_whitney_p_keeps_quartiles_and_ranks(target):
    rng = np.random.default_rng(7)
    a, b = np.round(rng.normal(50, 8, 120)), np.round(rng.normal(51, 8, 40))
    a2, b2 = synth.match_mann_whitney_p(a, b, target, np.random.default_rng(0), bounds=(25, 88))
    assert abs(synth.r_wilcox_p(a2, b2) - target) < 5e-4  # three printed decimals
    for old, new in ((a, a2), (b, b2)):
        np.testing.assert_array_equal(np.quantile(new, [0.25, 0.5, 0.75]), np.quantile(old, [0.25, 0.5, 0.75]))
        order = np.argsort(old, kind="stable")
        assert (np.diff(new[order]) >= 0).all()  # every value keeps its rank within its group
        assert new.min() >= 25 and new.max() <= 88 and (new == np.round(new)).all()


# ------------------------------------------------------------------ MRI geometry: the ROI is a region of interest
def _roi_geometry(n_patients: int, mri_shape: tuple) -> pd.DataFrame:
    """Lesion masks exactly as make_cohort renders them (same generators) and their 35 mm ROI boxes."""
    t = synth.make_table(n_patients, seed=0)
    k = synth.knobs_from(mri_shape=mri_shape)
    rows = []
    for i, r in enumerate(t.to_dict("records")):
        m = synth.render_mri_mask(r, np.random.default_rng(np.random.SeedSequence([0, 2, i])), k)
        res = roi.mri_roi(m.astype(np.float32), m, spacing=k.mri_spacing, margin=35, margin_unit="mm", size=4)
        (_, _), (y0, y1), (x0, x1) = res.box
        z, y, x = (np.nonzero(m)[j].mean() * k.mri_spacing[j] for j in range(3))
        rows.append(
            {
                "location": r["location"],
                "clipped": any(res.clipped),
                "cx_mm": x,
                "cy_mm": y,
                "share": (y1 - y0) * (x1 - x0) / (mri_shape[1] * mri_shape[2]),
                "lesion_frac": (np.ptp(np.nonzero(m)[2]) + 1) / (x1 - x0),
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_patients, mri_shape", [(197, (80, 128, 128)), (48, (24, 64, 64))], ids=["default", "smoke"])
def test_mri_roi_is_a_crop_not_the_field_of_view(n_patients, mri_shape):
    """Default and smoke profiles (cohort size, MRI shape, 35 mm margin): the box covers a small part of the slice
    and the field of view cuts it for at most 10 % of patients (before: the whole slice, every patient)."""
    g = _roi_geometry(n_patients, mri_shape)
    assert g["clipped"].mean() <= 0.10
    assert 0.04 < g["share"].median() < 0.15 and g["share"].max() < 0.35
    assert g["lesion_frac"].median() > 0.2  # the lesion still spans a fifth of the ROI's width
    # lesions at varied places, in the breast of the recorded side (patient's left = image right)
    assert g["cx_mm"].std() > 40 and g["cy_mm"].std() > 8
    left = g["location"] == "left"
    assert (g.loc[left, "cx_mm"] > 160).all() and (g.loc[~left, "cx_mm"] < 160).all()


def test_render_mri_mask_is_render_mri_mask():
    k = synth.knobs_from(mri_shape=(24, 64, 64))
    row = synth.make_table(20, seed=0).to_dict("records")[3]
    vol, mask = synth.render_mri(row, np.random.default_rng(5), k)
    np.testing.assert_array_equal(mask, synth.render_mri_mask(row, np.random.default_rng(5), k))
    les = synth._mri_lesion(row, np.random.default_rng(5), k)
    an, (_, cy, cx) = les["anatomy"], les["center_mm"]
    assert cy < float(synth._chest_surface(an, np.array([cx]))[0])  # anterior of the chest wall: in the breast
    assert vol[mask > 0].mean() > 1.5 * vol[(mask == 0) & (vol > 50)].mean()  # an enhancing lesion


@pytest.mark.parametrize("mri_shape", [(8, 16, 16), (12, 32, 32)])
def test_coarse_mri_still_has_a_lesion(mri_shape):
    k = synth.knobs_from(mri_shape=mri_shape)
    for i, row in enumerate(synth.make_table(20, seed=0).to_dict("records")[:6]):
        vol, mask = synth.render_mri(row, np.random.default_rng(i), k)
        assert vol.shape == mask.shape == mri_shape and mask.any()


# ------------------------------------------------------------------ HER2-low signal (issue 13)
LOW_FIX = FIX / "synth_table_n24_seed3.csv"  # make_table(24, seed=3) written before the low_signal knob existed


def _low(t: pd.DataFrame) -> np.ndarray:
    return ((t["her2"] == 0) & t["her2_ihc"].isin(["1+", "2+"])).to_numpy()


def test_low_signal_zero_is_todays_cohort():
    """low_signal = 0 reproduces the table written before the knob existed (every column, the latent ones to
    rtol 1e-12 so that another CPU's last-bit libm rounding cannot fail it; on one machine they are equal) and
    records the same synth_params.json (no low_signal key)."""
    before = pd.read_csv(LOW_FIX, dtype=str)
    for knobs in ({}, {"low_signal": 0.0}, {"low_signal": 0}):
        now = synth.make_table(24, seed=3, **knobs)
        assert list(now.columns) == list(before.columns)
        latent = ["_z", "_s_us", "_s_mri"]
        as_str = now.drop(columns=latent).astype(str)
        pd.testing.assert_frame_equal(as_str, before.drop(columns=latent), check_dtype=False)
        np.testing.assert_allclose(now[latent].to_numpy(), before[latent].astype(float).to_numpy(), rtol=1e-12)
        assert now.equals(synth.make_table(24, seed=3))  # bit-for-bit equal to the default
    old_params = {
        "synth_version": 3,
        "n_patients": 24,
        "seed": 3,
        "us_shape": [448, 512],
        "us_fov_mm": 50.0,
        "mri_shape": [80, 128, 128],
        "mri_fov_mm": [120.0, 320.0, 320.0],
        "her2_signal": 2.5,
        "modality_noise": 1.0,
    }
    for p in (synth.synth_params(24, 3), synth.synth_params(24, 3, low_signal=0.0)):
        assert p == old_params and json.dumps(p) == json.dumps(old_params)  # same keys in the same order
    assert synth.synth_params(24, 3, low_signal=1.25)["low_signal"] == 1.25


def test_low_signal_moves_exactly_the_her2_low_latent_scores():
    base = synth.make_table(60, seed=2)
    moved = synth.make_table(60, seed=2, low_signal=1.25)
    low = _low(base)
    assert 5 < low.sum() < (base["her2"] == 0).sum()  # both HER2-low and HER2-zero present
    latent = ["_z", "_s_us", "_s_mri"]
    pd.testing.assert_frame_equal(moved.drop(columns=latent), base.drop(columns=latent))  # Tables 1-3, IHC, ISH
    for col in latent:
        np.testing.assert_array_equal(moved.loc[low, col], base.loc[low, col] + 1.25)  # same float arithmetic
        np.testing.assert_array_equal(moved.loc[~low, col], base.loc[~low, col])
        # and, as a difference, exactly the shift up to the rounding of one addition
        np.testing.assert_allclose(moved.loc[low, col] - base.loc[low, col], 1.25, rtol=0, atol=1e-14)


def test_low_signal_validation_and_files(tmp_path):
    with pytest.raises(ParameterError, match="low_signal=-0.5"):
        synth.knobs_from(low_signal=-0.5)
    with pytest.raises(ParameterError, match="low_signal"):
        synth.oracle_auc_theory(low_signal=-1.0)
    small = dict(n_patients=24, seed=3, us_shape=(64, 64), mri_shape=(8, 16, 16))
    plain = synth.make_cohort(tmp_path / "plain", **small).parent
    assert "her2_class" not in pd.read_csv(plain / "synth_latent.csv").columns
    assert set(synth.oracle_auc(plain)) == {"latent", "us", "mri", "fused"}
    # notebook 00's prepare_cohort: low_signal = 0 reuses the cohort built without the knob, > 0 rebuilds it
    stamp = (plain / "manifest.csv").stat().st_mtime_ns
    assert prepare_cohort(plain, progress=False, low_signal=0.0, **small) == plain / "manifest.csv"
    assert (plain / "manifest.csv").stat().st_mtime_ns == stamp
    built = prepare_cohort(tmp_path / "low", progress=False, low_signal=1.25, **small).parent
    lat = pd.read_csv(built / "synth_latent.csv")
    man = load_cohort(built / "manifest.csv")
    assert lat["her2_class"].tolist() == man["her2_class"].tolist()
    assert json.loads((built / "synth_params.json").read_text())["low_signal"] == 1.25
    # US images of HER2-low patients change, all others stay byte-identical
    low = set(man.loc[man["her2_class"] == "low", "patient_id"])
    for pid in man["patient_id"]:
        same = (plain / "us" / f"{pid}.png").read_bytes() == (built / "us" / f"{pid}.png").read_bytes()
        assert same != (pid in low), pid


def test_low_vs_zero_oracle_auc_theory_and_empirical(tmp_path):
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    th = synth.oracle_auc_theory(2.5, 1.0, low_signal=1.25)
    old = synth.oracle_auc_theory(2.5, 1.0)
    assert synth.oracle_auc_theory(2.5, 1.0, low_signal=0.0) == old | dict.fromkeys(
        ["low_vs_zero_latent", "low_vs_zero_us", "low_vs_zero_mri", "low_vs_zero_fused"], 0.5
    )
    assert th["low_vs_zero_latent"] == pytest.approx(norm.cdf(1.25 / np.sqrt(2)), rel=1e-12)
    assert th["low_vs_zero_us"] == pytest.approx(norm.cdf(1.25 / 2), rel=1e-12)
    assert th["low_vs_zero_latent"] < old["latent"]  # weaker than HER2+/- (the three-class task is harder)
    # large-sample check against scikit-learn on drawn scores (SE of an AUC at n ~ 2600 negatives: < 0.01)
    big = synth.make_table(4000, seed=0, low_signal=1.25)
    neg = big[big["her2"] == 0]
    y_low = _low(neg)
    for key, col in (("latent", "_z"), ("us", "_s_us"), ("mri", "_s_mri")):
        assert roc_auc_score(y_low, neg[col]) == pytest.approx(th[f"low_vs_zero_{key}"], abs=0.02), key
        assert roc_auc_score(big["her2"], big[col]) == pytest.approx(th[key], abs=0.02), key
    assert roc_auc_score(y_low, neg["_s_us"] + neg["_s_mri"]) == pytest.approx(th["low_vs_zero_fused"], abs=0.02)
    # the empirical oracle of a built cohort: the latent file's her2_class, checked against scikit-learn
    small = dict(n_patients=40, seed=1, us_shape=(64, 64), mri_shape=(8, 16, 16))
    cdir = synth.make_cohort(tmp_path / "c", low_signal=1.25, **small).parent
    emp = synth.oracle_auc(cdir, split="train")
    lat = pd.read_csv(cdir / "synth_latent.csv")
    tr = lat[(lat["split"] == "train") & (lat["her2"] == 0)]
    assert emp["low_vs_zero_mri"] == roc_auc_score(tr["her2_class"] == "low", tr["score_mri"])
    assert emp["us"] == roc_auc_score(
        lat.loc[lat["split"] == "train", "her2"], lat.loc[lat["split"] == "train", "score_us"]
    )
