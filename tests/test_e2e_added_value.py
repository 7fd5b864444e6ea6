"""End to end: the radiomics and DL-US&MRI+Clinical parts of notebooks 05 and 06 in the smoke run (the session-wide ``smoke_run`` fixture of
tests/conftest.py; no extra batch).

References: scikit-learn ``roc_auc_score`` for every AUC; :func:`her2lib.stats.delong_test` (checked against pROC
in tests/test_stats_roc.py) and :func:`her2lib.stats.reclassification` (checked against Hmisc in
tests/test_reclassification.py) recomputed from the prediction files; the combined model recomputed by hand from
its coefficient table.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from her2lib.contract import read_predictions, read_test_folds
from her2lib.stages import RunDirs
from her2lib.stages.clinical import clinical_outputs, run_clinical
from her2lib.stages.radiomics import radiomics_outputs, run_radiomics
from her2lib.stats import delong_test, reclassification

pytestmark = pytest.mark.e2e


def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def test_radiomics_predictions_follow_the_contract_and_the_folds(smoke_run):
    pred = smoke_run / "predictions"
    folds = pd.read_csv(pred / "folds.csv", dtype={"patient_id": str})
    oof = read_predictions(pred / "radiomics_oof.csv", "train")
    test = read_predictions(pred / "radiomics_test.csv", "test")
    per_fold = read_test_folds(pred / "radiomics_test_folds.csv", test)
    train = folds[folds["split"] == "train"].set_index("patient_id")
    assert set(oof["patient_id"]) == set(train.index)
    assert (oof.set_index("patient_id")["fold"] == train["fold"].loc[oof["patient_id"]]).all()
    assert set(test["patient_id"]) == set(folds.loc[folds["split"] == "test", "patient_id"])
    mean = per_fold.groupby("patient_id")["p_her2"].mean()
    np.testing.assert_allclose(test.set_index("patient_id")["p_her2"], mean.loc[test["patient_id"]], atol=1e-15)
    summary = pd.read_csv(smoke_run / "tables" / "radiomics_folds.csv")
    n_folds = train["fold"].nunique()
    assert len(summary) == n_folds
    for _, row in summary.iterrows():  # each fold model was fitted on the other folds' training patients only
        assert row["n_train"] == int((train["fold"] != row["fold"]).sum())
        held = oof[oof["fold"] == row["fold"]]
        if held["her2"].nunique() == 2:
            assert row["oof_auc"] == pytest.approx(roc_auc_score(held["her2"], held["p_her2"]), abs=1e-12)
    settings = json.loads((smoke_run / "tables" / "radiomics_settings.json").read_text())
    assert settings["extraction"]["bin_number"] == 32 and settings["extraction"]["library"].startswith("mirp ")
    assert settings["model"]["n_candidates"] == 30 and "LASSO" in settings["model"]["method"]
    cache = smoke_run / "cache" / "radiomics"
    assert (cache / "us_features.csv").is_file() and (cache / "mri_features.csv").is_file()


def test_the_combined_model_is_the_logistic_regression_of_its_coefficient_table(smoke_run):
    pred = smoke_run / "predictions"
    coef = pd.read_csv(smoke_run / "tables" / "fusion_radiomics_coefficients.csv").set_index("term")["coef"]
    assert list(coef.index) == ["intercept", "logit_p_dl_us_mri", "logit_p_radiomics"]
    dl = read_test_folds(pred / "fusion_test_folds.csv").set_index(["patient_id", "model_fold"])
    rad = read_test_folds(pred / "radiomics_test_folds.csv").set_index(["patient_id", "model_fold"])
    got = read_test_folds(pred / "fusion_radiomics_test_folds.csv").set_index(["patient_id", "model_fold"])
    eta = coef["intercept"] + coef["logit_p_dl_us_mri"] * _logit(dl.loc[got.index, "p_her2"].to_numpy())
    eta += coef["logit_p_radiomics"] * _logit(rad.loc[got.index, "p_her2"].to_numpy())
    np.testing.assert_allclose(got["p_her2"], 1 / (1 + np.exp(-eta)), rtol=1e-12)


def test_notebook_06_tables_recompute_from_the_prediction_files(smoke_run):
    pred, tables = smoke_run / "predictions", smoke_run / "tables"
    p = {
        k: read_predictions(pred / f"{prefix}_test.csv", "test").set_index("patient_id").sort_index()
        for k, prefix in (
            ("radiomics", "radiomics"),
            ("dl_us_mri", "fusion"),
            ("dl_us_mri_radiomics", "fusion_radiomics"),
        )
    }
    y = p["dl_us_mri"]["her2"].to_numpy()
    auc = pd.read_csv(tables / "radiomics_auc.csv").set_index("model")
    for k, t in p.items():
        assert auc.at[k, "auc"] == pytest.approx(roc_auc_score(y, t["p_her2"]), abs=1e-12)
    delong = pd.read_csv(tables / "radiomics_delong.csv").set_index("model")
    for k in ("radiomics", "dl_us_mri_radiomics"):
        d = delong_test(y, p[k]["p_her2"], p["dl_us_mri"]["p_her2"])
        assert delong.at[k, "diff"] == pytest.approx(d.diff, abs=1e-12)
        assert delong.at[k, "p_value"] == pytest.approx(d.pvalue, abs=1e-12)
    rec = pd.read_csv(tables / "radiomics_reclassification.csv").set_index("statistic")
    r = reclassification(y, p["dl_us_mri"]["p_her2"], p["dl_us_mri_radiomics"]["p_her2"])
    assert rec.at["nri", "estimate"] == pytest.approx(r.nri.value, abs=1e-12)
    assert rec.at["idi", "estimate"] == pytest.approx(r.idi.value, abs=1e-12)
    assert rec.at["idi", "ci_low"] == pytest.approx(r.idi.ci[0], abs=1e-12)
    text = (tables / "radiomics_text.md").read_text()
    assert f"{auc.at['radiomics', 'auc']:.3f}" in text and "NRI" in text
    assert (smoke_run / "figures" / "radiomics.png").stat().st_size > 10_000
    html = (smoke_run / "index.html").read_text()
    assert "<h3>Radiomics</h3>" in html and "figures/radiomics.png" in html
    params = json.loads((smoke_run / "params" / "05_fusion.json").read_text())
    assert params["radiomics"] is True and params["radiomics_bin_number"] == 32
    prov = json.loads((smoke_run / "provenance.json").read_text())
    assert prov["notebooks"]["05_fusion"]["radiomics_settings"]["extraction"]["bin_number"] == 32


def test_radiomics_false_and_clinical_false_remove_the_files_of_an_earlier_run(smoke_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out, ignore=shutil.ignore_patterns("models", "notebooks", "cache"))
    params = json.loads((smoke_run / "params" / "05_fusion.json").read_text())
    run = RunDirs.from_out_dir(out, params["cohort_dir"])
    written = [p for p in radiomics_outputs(run) if p.is_file()]
    assert len(written) >= 8
    assert run_radiomics(run, enabled=False) is None
    assert not any(p.exists() for p in written)
    written = [p for p in clinical_outputs(run) if p.is_file()]
    assert len(written) >= 5
    assert run_clinical(run, enabled=False) is None
    assert not any(p.exists() for p in written)


def test_dl_us_mri_clinical_files_and_tables(smoke_run):
    pred, tables = smoke_run / "predictions", smoke_run / "tables"
    dl = read_predictions(pred / "fusion_test.csv", "test").set_index("patient_id").sort_index()
    clin = read_predictions(pred / "fusion_clinical_test.csv", "test").set_index("patient_id").sort_index()
    folds = read_test_folds(pred / "fusion_clinical_test_folds.csv")
    mean = folds.groupby("patient_id")["p_her2"].mean()
    np.testing.assert_allclose(clin["p_her2"], mean.loc[clin.index], atol=1e-15)
    oof = read_predictions(pred / "fusion_clinical_oof.csv", "train")
    assert set(oof["patient_id"]) == set(read_predictions(pred / "fusion_oof.csv", "train")["patient_id"])
    coef = pd.read_csv(tables / "clinical_coefficients.csv")
    assert list(coef["term"][:2]) == ["intercept", "logit_p_dl_us_mri"]
    screen = pd.read_csv(tables / "clinical_screen.csv")
    assert {"us_axillary_ln", "mri_margin", "age", "mri_size_mm"} <= set(screen["variable"])
    y = dl["her2"].to_numpy()
    auc = pd.read_csv(tables / "clinical_auc.csv").set_index("model")
    assert auc.at["dl_us_mri_clinical", "auc"] == pytest.approx(roc_auc_score(y, clin["p_her2"]), abs=1e-12)
    rec = pd.read_csv(tables / "clinical_reclassification.csv").set_index("statistic")
    r = reclassification(y, dl["p_her2"], clin["p_her2"])
    assert rec.at["nri", "estimate"] == pytest.approx(r.nri.value, abs=1e-12)
    assert (smoke_run / "figures" / "nomogram.png").stat().st_size > 10_000
    assert (smoke_run / "figures" / "clinical.png").stat().st_size > 10_000
    assert "<h3>BI-RADS descriptors, age and size</h3>" in (smoke_run / "index.html").read_text()
