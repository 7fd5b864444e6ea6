"""Tests for her2lib.fusion and its stage (her2lib.stages.fusion): leakage-free fit, cross-fitted OOF, paper
protocol, validation errors, each prediction file validated once."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from her2lib import contract
from her2lib import fusion as fusion_module
from her2lib.contract import read_predictions, validate_predictions, validate_test_folds
from her2lib.errors import DataError, ParameterError
from her2lib.fusion import cross_fit_oof, fit_fusion, fuse, join_modalities, logit
from her2lib.stages import RunDirs
from her2lib.stages import fusion as fusion_stage
from her2lib.stages.fusion import run_fusion


def make_predictions(
    n_train: int = 149, n_test: int = 48, seed: int = 0, sep_us: float = 1.2, sep_mri: float = 0.9
) -> dict[str, pd.DataFrame]:
    """Synthetic DL-US / DL-MRI prediction tables with the her2lib prediction-file columns."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = (rng.uniform(size=n) < 0.4).astype(int)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    fold = np.r_[np.arange(n_train) % 4, -np.ones(n_test, int)]
    ids = np.array([f"P{i:03d}" for i in range(n)])

    def probs(sep):
        return 1 / (1 + np.exp(-(sep * (2 * y - 1) + rng.normal(size=n))))

    out = {}
    for mod, sep in (("us", sep_us), ("mri", sep_mri)):
        p = probs(sep)
        df = pd.DataFrame({"patient_id": ids, "split": split, "fold": fold, "her2": y, "p_her2": p})
        out[f"{mod}_oof"] = df[df.split == "train"].reset_index(drop=True)
        out[f"{mod}_test"] = df[df.split == "test"].reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def preds():
    return make_predictions()


def test_logit_clips():
    v = logit(np.array([0.0, 0.5, 1.0]))
    assert v[1] == 0.0
    assert v[0] == pytest.approx(np.log(1e-6 / (1 - 1e-6)))
    assert v[2] == pytest.approx(-v[0])
    with pytest.raises(ParameterError, match="eps"):
        logit([0.5], eps=0.7)


def test_fit_matches_statsmodels_and_sklearn_unpenalised(preds):
    j = join_modalities(preds["us_oof"], preds["mri_oof"])
    m = fit_fusion(j.p_us, j.p_mri, j.her2)
    assert m.method.startswith("logit MLE")
    from sklearn.linear_model import LogisticRegression

    X = np.c_[logit(j.p_us), logit(j.p_mri)]
    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, j.her2)
    np.testing.assert_allclose(m.params, np.r_[sk.intercept_, sk.coef_[0]], rtol=1e-4, atol=1e-5)
    for i in range(3):
        assert m.ci_low[i] < m.params[i] < m.ci_high[i]
        # Wald interval: coef +- 1.96 se
        assert m.ci_high[i] - m.params[i] == pytest.approx(1.959964 * m.bse[i], rel=1e-5)
    np.testing.assert_allclose(m.predict(j.p_us, j.p_mri), sk.predict_proba(X)[:, 1], atol=1e-6)
    tab = m.to_frame()
    assert tab["term"].tolist() == ["intercept", "logit_p_us", "logit_p_mri"]
    assert (tab["n"] == len(j)).all()


def test_fit_only_uses_training_rows(preds):
    """Changing any test row (label or probability) must not change the leakage-free coefficients or the OOF."""
    base = fuse(preds["us_oof"], preds["mri_oof"], preds["us_test"], preds["mri_test"])
    us_t, mri_t = preds["us_test"].copy(), preds["mri_test"].copy()
    us_t.loc[:5, "p_her2"] = 1 - us_t.loc[:5, "p_her2"]
    us_t.loc[:5, "her2"] = 1 - us_t.loc[:5, "her2"]
    mri_t.loc[:5, "her2"] = us_t.loc[:5, "her2"]
    changed = fuse(preds["us_oof"], preds["mri_oof"], us_t, mri_t)
    assert changed.model.params == base.model.params
    pd.testing.assert_frame_equal(changed.oof, base.oof)
    # unchanged test patients keep their predictions; the paper protocol does move (it fits on test)
    np.testing.assert_array_equal(changed.test.p_her2[6:], base.test.p_her2[6:])
    assert changed.paper_model.params != base.paper_model.params


def test_cross_fit_oof_never_uses_own_fold(preds):
    j = join_modalities(preds["us_oof"], preds["mri_oof"])
    oof = cross_fit_oof(j)
    assert oof["patient_id"].tolist() == j["patient_id"].tolist()
    # fold-0 predictions equal a model fitted on folds 1-3 and do not change when fold 0's labels change
    held = j.fold == 0
    m = fit_fusion(j.p_us[~held], j.p_mri[~held], j.her2[~held])
    np.testing.assert_allclose(oof.p_her2[held], m.predict(j.p_us[held], j.p_mri[held]))
    j2 = j.copy()
    j2.loc[held, "her2"] = 1 - j2.loc[held, "her2"]
    np.testing.assert_allclose(cross_fit_oof(j2).p_her2[held], oof.p_her2[held])
    with pytest.raises(DataError, match="only training-cohort"):
        cross_fit_oof(j.assign(split="test"))


def test_fuse_outputs_and_protocol_difference(preds):
    res = fuse(preds["us_oof"], preds["mri_oof"], preds["us_test"], preds["mri_test"], n_boot=200)
    from her2lib.stats import auc

    assert list(res.test.columns) == ["patient_id", "split", "fold", "her2", "p_her2"]
    assert (res.test.fold == -1).all() and (res.test.split == "test").all()
    assert (res.oof.split == "train").all() and set(res.oof.fold) == {0, 1, 2, 3}
    p = res.protocols.set_index("fit_on")
    assert p.loc["train OOF", "auc"] == pytest.approx(auc(res.test.her2, res.test.p_her2))
    assert p.loc["test (fold-mean predictions)", "auc"] == pytest.approx(
        auc(res.paper_test.her2, res.paper_test.p_her2)
    )
    d = p.loc["test (fold-mean predictions)", "auc_diff_vs_leakage_free"]
    assert d == pytest.approx(p.loc["test (fold-mean predictions)", "auc"] - p.loc["train OOF", "auc"])
    # one difference on 48 patients comes with a bootstrap interval, and the method is named
    lo, hi = p.loc["test (fold-mean predictions)", ["auc_diff_ci_low", "auc_diff_ci_high"]]
    assert np.isfinite(lo) and np.isfinite(hi) and lo < hi
    assert "stratified bootstrap" in p.loc["test (fold-mean predictions)", "ci_method"]
    assert "fold-mean" in p.loc["train OOF", "applied_to"]  # no per-fold files given: says so
    again = fuse(preds["us_oof"], preds["mri_oof"], preds["us_test"], preds["mri_test"], n_boot=200)
    pd.testing.assert_frame_equal(again.protocols, res.protocols)  # seeded
    assert set(res.coefficients.protocol) == {"leakage-free (her2lib default)", "paper (fit in the test cohort)"}


def test_mismatch_errors(preds):
    us, mri = preds["us_oof"], preds["mri_oof"]
    with pytest.raises(DataError, match=r"P000.*in DL-US predictions but not in DL-MRI"):
        join_modalities(us, mri.iloc[1:])
    bad = mri.copy()
    bad.loc[3, "her2"] = 1 - bad.loc[3, "her2"]
    with pytest.raises(DataError, match=r"her2 differs .* \['P003'\]"):
        join_modalities(us, bad)
    bad = mri.copy()
    bad.loc[2, "fold"] = (bad.loc[2, "fold"] + 1) % 4
    with pytest.raises(DataError, match=r"fold differs .* \['P002'\]"):
        join_modalities(us, bad)
    # a test patient in the OOF file: split mismatch against the expected split
    with pytest.raises(DataError, match="expected only split == 'train'"):
        fuse(pd.concat([us, preds["us_test"].iloc[:1]]), mri, preds["us_test"], preds["mri_test"])


def test_validate_predictions_problems(tmp_path):
    df = pd.DataFrame(
        {
            "patient_id": ["A", "A", "B"],
            "split": ["train", "train", "test"],
            "fold": [0, 0, 1],
            "her2": [0, 2, 1],
            "p_her2": [0.1, 1.5, np.nan],
        }
    )
    with pytest.raises(DataError) as e:
        validate_predictions(df, "x.csv")
    msgs = " ".join(e.value.problems)
    for frag in ("duplicate patient_id", "her2 must be 0 or 1", "p_her2 must be", "fold == -1"):
        assert frag in msgs
    with pytest.raises(DataError, match="missing column"):
        validate_predictions(df.drop(columns="fold"), "x.csv")
    with pytest.raises(DataError, match="not found; run the notebook"):
        read_predictions(tmp_path / "us_oof.csv")


def test_separation_falls_back_with_warning():
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    p_us = np.r_[np.linspace(0.05, 0.3, 10), np.linspace(0.7, 0.95, 10)]
    p_mri = np.linspace(0.2, 0.8, 20)
    with pytest.warns(UserWarning, match="perfect separation"):
        m = fit_fusion(p_us, p_mri, y)
    assert m.method.startswith("L2-penalised")
    assert np.isnan(m.ci_low).all()
    p = m.predict(p_us, p_mri)
    assert p[y == 1].min() > p[y == 0].max()  # still ranks correctly
    with pytest.raises(DataError, match="at least 2 HER2-positive"):
        fit_fusion([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0, 0, 1])
    with pytest.raises(DataError, match="p_mri has 1 values but y_true has 2"):
        fit_fusion([0.1, 0.2], [0.1], [0, 1])


def _run_with(preds: dict, tmp_path) -> RunDirs:
    run = RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")
    for k, df in preds.items():
        df.to_csv(run.predictions / f"{k}.csv", index=False)
    return run


def test_run_fusion_writes_files(preds, tmp_path):
    run = _run_with(preds, tmp_path)
    pdir, tdir = run.predictions, run.tables
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run_fusion(run)
    for f in ("fusion_oof.csv", "fusion_test.csv", "fusion_test_paper.csv"):
        assert (pdir / f).is_file()
    back = read_predictions(pdir / "fusion_test.csv", "test")
    np.testing.assert_allclose(back.p_her2, res.test.p_her2)
    assert len(pd.read_csv(tdir / "fusion_coefficients.csv")) == 6
    assert len(pd.read_csv(tdir / "fusion_protocols.csv")) == 2
    # deterministic
    res2 = run_fusion(run)
    pd.testing.assert_frame_equal(res2.coefficients, res.coefficients)


def test_run_fusion_validates_each_prediction_file_once(tmp_path, monkeypatch):
    """Notebook 05 used to validate every prediction file three times (read, fuse, join); now once, where it is
    read, and the result is the same as fusing the in-memory tables (validated by fuse itself)."""
    from conftest import simulate_fold_models

    d = simulate_fold_models(n_train=160, n_test=48, seed=4)
    run = _run_with(d, tmp_path)
    calls = {"validate_predictions": [], "validate_test_folds": []}
    for name in calls:
        real = getattr(contract, name)

        def counted(df, source="?", *args, _real=real, _name=name, **kwargs):
            calls[_name].append(str(source))
            return _real(df, source, *args, **kwargs)

        for module in (contract, fusion_stage, fusion_module):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted)
    res = run_fusion(run, n_boot=10)
    assert sorted(map(lambda s: s.rsplit("/", 1)[-1], calls["validate_predictions"])) == [
        "mri_oof.csv",
        "mri_test.csv",
        "us_oof.csv",
        "us_test.csv",
    ]
    assert sorted(map(lambda s: s.rsplit("/", 1)[-1], calls["validate_test_folds"])) == [
        "mri_test_folds.csv",
        "us_test_folds.csv",
    ]
    monkeypatch.undo()
    mem = fuse(
        d["us_oof"],
        d["mri_oof"],
        d["us_test"],
        d["mri_test"],
        us_test_folds=d["us_test_folds"],
        mri_test_folds=d["mri_test_folds"],
        n_boot=10,
    )
    pd.testing.assert_frame_equal(res.protocols, mem.protocols)
    np.testing.assert_array_equal(res.test.p_her2, mem.test.p_her2)


# ------------------------------------------------------------------------------- one scale (issue 9.4)
def _calibration_slope(y, p):
    import statsmodels.api as sm

    return float(sm.Logit(np.asarray(y, float), sm.add_constant(logit(np.asarray(p)))).fit(disp=0).params[1])


def test_fusion_fitted_and_applied_on_one_scale(fold_model_sim):
    """Simulation (tests/conftest.py): fitted on single-fold-model OOF probabilities, the regression applied to each
    fold model's test probabilities stays calibrated (recalibration slope 1 +- 0.1 on 4 x 20000 predictions; seeds 0-2 gave 0.996-1.058);
    applied to the less spread fold-mean probabilities (her2lib 0.1) it is not (slope > 1.25; seeds 0-2: 1.59-1.71)."""
    d = fold_model_sim
    res = fuse(
        d["us_oof"],
        d["mri_oof"],
        d["us_test"],
        d["mri_test"],
        us_test_folds=d["us_test_folds"],
        mri_test_folds=d["mri_test_folds"],
        n_boot=10,
    )
    tf = res.test_folds
    assert len(tf) == 4 * 20000 and set(tf.model_fold) == {0, 1, 2, 3}
    assert _calibration_slope(tf.her2, tf.p_her2) == pytest.approx(1.0, abs=0.1)
    # the same regression on the same patients' fold-mean inputs: too flat
    old = res.model.predict(d["us_test"].p_her2, d["mri_test"].p_her2)
    assert _calibration_slope(d["us_test"].her2, old) > 1.25
    # what is written: the mean of the four fused probabilities per patient
    mean = tf.groupby("patient_id").p_her2.mean()
    np.testing.assert_allclose(res.test.p_her2, mean.loc[res.test.patient_id].to_numpy(), atol=1e-15)
    assert "each fold model" in res.protocols.applied_to.iloc[0]


def test_test_folds_validation(preds):
    d = make_predictions(n_train=40, n_test=8)
    tf = pd.DataFrame(
        {
            "patient_id": np.repeat(d["us_test"].patient_id, 2),
            "split": "test",
            "her2": np.repeat(d["us_test"].her2, 2),
            "model_fold": np.tile([0, 1], 8),
            "p_her2": np.repeat(d["us_test"].p_her2, 2),
        }
    )
    assert len(validate_test_folds(tf, "t.csv", test=d["us_test"])) == 16
    bad = tf.copy()
    bad.loc[bad.index[0], "p_her2"] = 0.999  # no longer the mean of the fold-mean file
    with pytest.raises(DataError, match="different runs"):
        validate_test_folds(bad, "t.csv", test=d["us_test"])
    with pytest.raises(DataError, match="lack predictions of some fold models"):
        validate_test_folds(tf.iloc[1:], "t.csv")
    with pytest.raises(DataError, match="only test patients"):
        validate_test_folds(tf.assign(split="train"), "t.csv")
