"""External validation (issue 14): the ``external`` split, the synthetic external site, leakage guards, the fusion
applied to the external cohort, and the internal-vs-external comparison.

References:

* leakage: the external patients' labels are flipped and nothing fitted changes (fold models compared as bytes, OOF
  and test predictions exactly), and the smoke profile with an external site gives the smoke run's own training,
  test and Tables 1-3 files byte for byte;
* the unpaired DeLong comparison: :func:`her2lib.stats.delong_test_unpaired` (checked against pROC's
  ``roc.test(paired = FALSE)`` in tests/test_stats_unpaired.py) and scikit-learn's ``roc_auc_score`` for the AUCs;
* the synthetic site: a cohort without it (tables equal), and the shift's definition (strength 0 = identity).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from test_executors import CFG, TRAINING, _cohort
from test_interrupt import ENV, RUNNER

from her2lib import synth, train
from her2lib.contract import REPO_ROOT, validate_predictions
from her2lib.errors import DataError, ParameterError
from her2lib.evaluate import ModelPredictions, internal_external_table
from her2lib.fusion import apply_fusion, fit_fusion
from her2lib.stats import delong_test_unpaired

# ---------------------------------------------------------------------------------------------------------------
# the synthetic external site
# ---------------------------------------------------------------------------------------------------------------


def test_external_site_leaves_the_training_and_test_patients_as_they_were():
    base = synth.make_table(48, seed=3)
    ext = synth.make_table(48, seed=3, n_external=30, external_her2_share=0.2)
    pd.testing.assert_frame_equal(ext.iloc[:48], base)
    site = ext.iloc[48:]
    assert (site["split"] == "external").all() and site["patient_id"].tolist()[:2] == ["EXT001", "EXT002"]
    assert int(site["her2"].sum()) == 6  # round(0.2 * 30)
    same_share = synth.make_table(48, seed=3, n_external=48).iloc[48:]
    assert same_share["her2"].sum() == 19  # the paper's test cohort's share, 19 of 48
    assert "n_external" not in synth.synth_params(48, 3)  # cohorts built before the knob keep their record
    assert synth.synth_params(48, 3, n_external=30)["external_shift"] == 1.0
    for bad in ({"n_external": 2}, {"n_external": 10, "external_her2_share": 1.0}, {"external_shift": -1}):
        with pytest.raises(ParameterError):
            synth.knobs_from(**bad)


def test_scanner_shift_is_the_identity_at_strength_0_and_changes_contrast_and_resolution():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(64, 80)).astype(np.uint8)
    vol = rng.integers(0, 1500, size=(8, 32, 32)).astype(np.int16)
    assert synth.shift_us(img, rng, 0.0) is img and synth.shift_mri(vol, rng, 0.0) is vol
    us = synth.shift_us(img, np.random.default_rng(1), 1.0)
    mri = synth.shift_mri(vol, np.random.default_rng(1), 1.0)
    assert us.dtype == np.uint8 and us.shape == img.shape and mri.dtype == np.int16 and mri.shape == vol.shape
    flat = synth.shift_us(np.full((64, 80), 128, np.uint8), np.random.default_rng(2), 1.0)
    assert flat.mean() == pytest.approx(255 * 1.2 * (128 / 255) ** 1.35, abs=0.5)  # gain and dynamic range
    flat = synth.shift_mri(np.full((8, 32, 32), 600, np.int16), np.random.default_rng(2), 1.0)
    assert flat.mean() == pytest.approx(750 * 1.5 * (600 / 750) ** 1.3, abs=1.0)  # units and contrast
    assert np.abs(np.diff(us.astype(float), axis=1)).mean() < 0.6 * np.abs(np.diff(img.astype(float), axis=1)).mean()
    assert np.abs(np.diff(mri.astype(float), axis=2)).mean() < np.abs(np.diff(vol.astype(float), axis=2)).mean()
    again = synth.shift_us(img, np.random.default_rng(1), 1.0)
    assert np.array_equal(us, again)  # seeded


def test_predictions_of_external_patients_are_validated_like_test_patients():
    df = pd.DataFrame({"patient_id": ["E1", "E2"], "split": "external", "fold": -1, "her2": [0, 1], "p_her2": 0.5})
    assert len(validate_predictions(df, split="external")) == 2
    with pytest.raises(DataError, match="fold == -1"):
        validate_predictions(df.assign(fold=[0, -1]))
    with pytest.raises(DataError, match="'external'"):
        validate_predictions(df.assign(split="validation"))


# ---------------------------------------------------------------------------------------------------------------
# no fit ever sees an external patient
# ---------------------------------------------------------------------------------------------------------------


def _with_external(flip: bool = False):
    df, x, folds = _cohort(n_train=16, n_test=6)
    rng = np.random.default_rng(5)
    ext = pd.DataFrame({"patient_id": [f"E{i:02d}" for i in range(6)], "split": "external", "her2": [0, 1] * 3})
    if flip:
        ext["her2"] = 1 - ext["her2"]
    xe = rng.normal(size=(6, *x.shape[1:])).astype(np.float32)
    cohort = pd.concat([df, ext], ignore_index=True)
    return cohort, np.concatenate([x, xe]), train.assign_folds(cohort, n_folds=2, seed=0)


def test_external_patients_reach_no_fit_and_their_labels_change_nothing(tmp_path, monkeypatch):
    fitted = []
    real = train.executors.fit_fold
    monkeypatch.setattr(train.executors, "fit_fold", lambda *a, **kw: fitted.append(a) or real(*a, **kw))
    results = {}
    for flip in (False, True):
        cohort, x, folds = _with_external(flip)
        assert (folds[cohort["split"] == "external"] == -1).all()
        out = tmp_path / str(flip)
        results[flip] = train.run_cv(cohort, x, CFG, TRAINING, folds, out, progress=False, checkpoint_every=1)
    assert len(fitted) == 4
    for args in fitted:  # (model_cfg, training, x_fit, rows_fit, x_sel, rows_sel)
        assert (args[3]["split"] == "train").all() and (args[5]["split"] == "train").all()
    a, b = results[False], results[True]
    for k in (0, 1):
        assert (tmp_path / "False" / f"fold{k}.pt").read_bytes() == (tmp_path / "True" / f"fold{k}.pt").read_bytes()
    pd.testing.assert_frame_equal(a.oof, b.oof)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert a.external["patient_id"].str.startswith("E").all() and len(a.external) == 6
    assert (a.external["split"] == "external").all() and (a.external["fold"] == -1).all()
    np.testing.assert_array_equal(a.external["p_her2"], b.external["p_her2"])  # labels are never read
    mean = a.external_folds.groupby("patient_id")["p_her2"].mean()
    np.testing.assert_allclose(mean.loc[a.external["patient_id"]], a.external["p_her2"], rtol=0, atol=1e-12)
    files = train.write_predictions(a, tmp_path / "pred", "us")
    assert {p.name for p in files} >= {"us_external.csv", "us_external_folds.csv"}
    train.write_predictions(results[False].__class__(**{**a.__dict__, "external": None}), tmp_path / "pred", "us")
    assert not (tmp_path / "pred" / "us_external.csv").exists()  # a cohort without one removes the old file


def test_fusion_on_the_external_cohort_is_the_training_fit_applied():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    model = fit_fusion(rng.random(60), rng.random(60), y, fit_on="train OOF")
    ext = lambda p: pd.DataFrame(  # noqa: E731
        {"patient_id": [f"E{i}" for i in range(10)], "split": "external", "fold": -1, "her2": [0, 1] * 5, "p_her2": p}
    )
    pu, pm = rng.uniform(0.05, 0.95, 10), rng.uniform(0.05, 0.95, 10)
    pred, folds = apply_fusion(model, ext(pu), ext(pm))
    assert folds is None and (pred["split"] == "external").all()
    np.testing.assert_allclose(pred["p_her2"], model.predict(pu, pm), rtol=0, atol=1e-15)
    flipped, _ = apply_fusion(model, ext(pu).assign(her2=[1, 0] * 5), ext(pm).assign(her2=[1, 0] * 5))
    np.testing.assert_array_equal(flipped["p_her2"], pred["p_her2"])


def test_internal_external_table_is_the_unpaired_delong_test():
    rng = np.random.default_rng(1)

    def mp(n, shift, split):
        y = np.r_[np.ones(n // 3, int), np.zeros(n - n // 3, int)]
        p = 1 / (1 + np.exp(-(shift * (2 * y - 1) + rng.normal(size=n))))
        t = pd.DataFrame({"patient_id": [f"{split}{i}" for i in range(n)], "split": split, "fold": -1, "her2": y})
        return ModelPredictions("dl_us", "DL-US", t.iloc[:0], t.assign(p_her2=p))

    test, ext = {"dl_us": mp(48, 1.2, "T")}, {"dl_us": mp(90, 0.6, "E")}
    tab = internal_external_table(test, ext)
    a, b = test["dl_us"].test, ext["dl_us"].test
    ref = delong_test_unpaired(a["her2"], a["p_her2"], b["her2"], b["p_her2"])
    row = tab.iloc[0]
    assert row["auc_test"] == pytest.approx(roc_auc_score(a["her2"], a["p_her2"]), abs=1e-12)
    assert row["auc_external"] == pytest.approx(roc_auc_score(b["her2"], b["p_her2"]), abs=1e-12)
    assert (row["p_value"], row["statistic"], row["df"]) == (ref.pvalue, ref.statistic, ref.df)
    assert (row["n_pos_test"], row["n_neg_external"]) == (16, 60)
    assert internal_external_table(test, {}).empty


# ---------------------------------------------------------------------------------------------------------------
# the smoke profile with an external site
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_smoke_profile_with_an_external_site(smoke_run, tmp_path):
    """Notebooks 00-06 of the smoke profile with 16 external patients: the training, test and Tables 1-3 files are
    the smoke run's byte for byte (the external site changes nothing fitted), and notebook 06 writes the external
    cohort's evaluation and the internal-vs-external comparison."""
    prof = yaml.safe_load(Path(json.loads((smoke_run / "provenance.json").read_text())["profile"]["file"]).read_text())
    prof["common"]["cohort_dir"] = str(tmp_path / "cohort")
    prof["notebooks"]["00_cohort"] |= {"n_external": 16, "external_her2_share": 0.25}
    path = tmp_path / "smoke_external.yaml"
    path.write_text(yaml.safe_dump(prof))
    run = tmp_path / "run"
    cmd = [*RUNNER, "--profile", str(path), "--out", str(run), "--only", "00", "01", "02", "03", "04", "05", "06"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]
    same = [
        Path("predictions") / f"{m}_{k}.csv" for m in ("us", "mri", "fusion") for k in ("oof", "test", "test_folds")
    ]
    same += [Path("models/dl_us/fold0.pt"), Path("models/dl_mri/fold3.pt")]
    same += [Path("tables") / f"table{i}.csv" for i in ("1_clinical", "2_us", "3_mri")]
    same += [Path("tables") / n for n in ("performance.csv", "delong.csv", "fusion_coefficients.csv")]
    differ = [str(p) for p in same if (smoke_run / p).read_bytes() != (run / p).read_bytes()]
    assert not differ, differ
    folds = pd.read_csv(run / "predictions" / "folds.csv")
    ext_rows = folds["split"] == "external"
    assert ext_rows.sum() == 16 and (folds.loc[ext_rows, "fold"] == -1).all()
    pd.testing.assert_frame_equal(
        folds[~ext_rows].reset_index(drop=True), pd.read_csv(smoke_run / "predictions" / "folds.csv")
    )  # the training folds are the smoke run's
    for m in ("us", "mri", "fusion"):
        ext = pd.read_csv(run / "predictions" / f"{m}_external.csv")
        assert len(ext) == 16 and (ext["split"] == "external").all() and ext["her2"].sum() == 4
    fe, fef = (pd.read_csv(run / "predictions" / f"fusion_{k}.csv") for k in ("external", "external_folds"))
    assert (fef["split"] == "external").all() and fef["model_fold"].nunique() == 4  # fused per fold-model pair
    mean = fef.groupby("patient_id")["p_her2"].mean().loc[fe["patient_id"]].to_numpy()
    np.testing.assert_allclose(mean, fe["p_her2"], rtol=0, atol=1e-12)
    tab = pd.read_csv(run / "tables" / "internal_vs_external.csv")
    assert tab["label"].tolist() == ["DL-US", "DL-MRI", "DL-US&MRI"]
    for _, r in tab.iterrows():
        prefix = {"dl_us": "us", "dl_mri": "mri", "dl_us_mri": "fusion"}[r["model"]]
        e = pd.read_csv(run / "predictions" / f"{prefix}_external.csv")
        assert r["auc_external"] == pytest.approx(roc_auc_score(e["her2"], e["p_her2"]), abs=1e-12)
    perf = pd.read_csv(run / "tables" / "external" / "performance.csv")
    assert len(perf) == 3 and (perf["n_pos"] + perf["n_neg"] == 16).all()
    assert "external validation cohort" in (run / "tables" / "external" / "results_text.md").read_text()
    for f in ("external/roc.png", "external/calibration.png", "internal_vs_external.png"):
        assert (run / "figures" / f).stat().st_size > 20_000, f
    assert "External validation" in (run / "index.html").read_text()


def test_a_run_without_an_external_cohort_removes_the_external_outputs(tmp_path):
    """Stale files: an earlier run's external predictions, tables and figures go when this cohort has none."""
    from her2lib.stages import RunDirs
    from her2lib.stages.evaluation import _EXTERNAL_OUTPUTS, _evaluate_external
    from her2lib.stages.fusion import _fuse_external, fusion_external_outputs

    run = RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")
    stale = [run.root / rel for rel in _EXTERNAL_OUTPUTS] + list(fusion_external_outputs(run))
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("stale")
    assert _evaluate_external(run, {}, dpi=72, ci_method="delong", level=0.95, n_bins=3, n_boot=10, seed=0) == []
    _fuse_external(run, None)  # no {us,mri}_external.csv: nothing to fuse
    assert not [str(p) for p in stale if p.exists()]
