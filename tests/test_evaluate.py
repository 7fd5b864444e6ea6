"""Tests for her2lib.evaluate, its figures and its stage (her2lib.stages.evaluation): hand-computed metrics,
OOF-only thresholds, tables, paper-style text, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_fusion import make_predictions

from her2lib.errors import DataError, ParameterError
from her2lib.evaluate import (
    ModelPredictions,
    calibration_summary,
    delong_table,
    load_predictions,
    performance_table,
    results_paragraph,
    roc_points,
)
from her2lib.stages import RunDirs
from her2lib.stages.evaluation import run_evaluation
from her2lib.stages.fusion import run_fusion
from her2lib.stats import brier_score, calibration_curve, decision_curve


def _write(preds: dict, tmp_path, name: str = "out") -> RunDirs:
    run = RunDirs.from_out_dir(tmp_path / name, tmp_path / "cohort")
    for k, df in preds.items():
        df.to_csv(run.predictions / f"{k}.csv", index=False)
    return run


def _mp(key, oof_y, oof_p, y, p):
    n_o, n_t = len(oof_y), len(y)
    oof = pd.DataFrame(
        {
            "patient_id": [f"T{i}" for i in range(n_o)],
            "split": "train",
            "fold": np.arange(n_o) % 4,
            "her2": oof_y,
            "p_her2": oof_p,
        }
    )
    test = pd.DataFrame(
        {"patient_id": [f"S{i}" for i in range(n_t)], "split": "test", "fold": -1, "her2": y, "p_her2": p}
    )
    return ModelPredictions(key, {"dl_us": "DL-US", "dl_mri": "DL-MRI"}.get(key, key), oof, test)


def test_brier_and_calibration_hand_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.8])
    assert brier_score(y, p) == pytest.approx((0.01 + 0.09 + 0.16 + 0.04) / 4)
    cc = calibration_curve(y, p, n_bins=2)
    assert cc["n"].tolist() == [2, 2]
    assert cc["mean_predicted"].tolist() == pytest.approx([0.2, 0.7])
    assert cc["observed"].tolist() == [0.0, 1.0]
    # Clopper-Pearson for 0/2: upper = 1 - 0.025 ** (1/2)
    assert cc["observed_ci_high"].iloc[0] == pytest.approx(1 - 0.025**0.5)
    cu = calibration_curve(y, p, n_bins=4, strategy="uniform")
    assert cu["n"].tolist() == [1, 1, 1, 1]
    s = calibration_summary(y, p)
    assert s["brier_reference"] == pytest.approx(0.25)
    assert np.isnan(s["calibration_slope"])  # perfectly separated: no MLE
    with pytest.raises(ParameterError, match="strategy"):
        calibration_curve(y, p, strategy="equal")
    with pytest.raises(DataError, match="y_prob has 3 values but y_true has 4"):
        brier_score(y, p[:3])


def test_decision_curve_hand_values():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    dc = decision_curve(y, p, thresholds=[0.25, 0.5])
    # pt = 0.25: calls 0.9, 0.4, 0.6 -> TP 2, FP 1; NB = 2/5 - 1/5 * (1/3)
    assert dc.net_benefit.iloc[0] == pytest.approx(2 / 5 - 1 / 15)
    # pt = 0.5: calls 0.9, 0.6 -> TP 1, FP 1; NB = 1/5 - 1/5
    assert dc.net_benefit.iloc[1] == pytest.approx(0.0)
    assert dc.treat_all.iloc[0] == pytest.approx(0.4 - 0.6 / 3)
    assert (dc.treat_none == 0).all()
    with pytest.raises(ParameterError, match="strictly in"):
        decision_curve(y, p, thresholds=[0.0, 0.5])


def test_roc_points():
    pts = roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert pts[["fpr", "tpr"]].values.tolist() == [[0, 0], [0, 0.5], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0]]
    with pytest.raises(DataError, match="both"):
        roc_points([1, 1], [0.2, 0.3])


def test_performance_threshold_from_oof_only():
    oof_y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    oof_p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.65, 0.35])
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.2, 0.5, 0.55, 0.9, 0.7, 0.4])
    preds = {"dl_us": _mp("dl_us", oof_y, oof_p, y, p)}
    perf = performance_table(preds)
    r = perf.iloc[0]
    from her2lib.stats import youden_threshold

    thr = youden_threshold(oof_y, oof_p)
    assert r["threshold"] == pytest.approx(thr)
    assert thr == pytest.approx(0.325)  # midpoint of 0.30 and 0.35: sensitivity 4/4, specificity 3/4
    # hand confusion at p >= thr on the test cohort
    call = p >= thr
    tp, fp = int((call & (y == 1)).sum()), int((call & (y == 0)).sum())
    tn, fn = int((~call & (y == 0)).sum()), int((~call & (y == 1)).sum())
    assert (r.tp, r.fp, r.tn, r.fn) == (tp, fp, tn, fn) == (3, 2, 1, 0)
    assert r.sensitivity == pytest.approx(tp / (tp + fn))
    assert r.specificity == pytest.approx(tn / (tn + fp))
    assert r.ppv == pytest.approx(tp / (tp + fp))
    assert r.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert r.auc == pytest.approx(6 / 9)  # 9 pos-neg pairs, 6 correctly ordered
    assert r.auc_ci_method.startswith("DeLong")  # the headline interval (issue 9.3)
    assert r.n_models == 1 and "fold-mean" in r.threshold_rule  # no per-fold file: says so
    # the threshold does not move when test labels/probabilities change
    preds2 = {"dl_us": _mp("dl_us", oof_y, oof_p, 1 - y, 1 - p)}
    assert performance_table(preds2).iloc[0]["threshold"] == r["threshold"]
    with pytest.raises(ParameterError, match="ci_method"):
        performance_table(preds, ci_method="medcalc")


def test_paper_sentence_reproduced():
    """Feeding the paper's numbers gives the paper's sentence (modulo the threshold note)."""
    perf = pd.DataFrame(
        [
            {
                "model": "dl_us",
                "label": "DL-US",
                "auc": 0.842,
                "auc_ci_low": 0.708,
                "auc_ci_high": 0.931,
                "auc_ci_level": 0.95,
                "accuracy": 0.833,
                "sensitivity": 0.895,
                "specificity": 0.793,
                "ppv": 0.739,
                "npv": 0.920,
                "f1": 0.810,
                "threshold": 0.5,
                "auc_ci_method": "exact binomial (as the paper / MedCalc)",
            }
        ]
    )
    text = results_paragraph(perf)
    assert (
        "In the test cohort, DL-US achieved an AUC of 0.842 (95% CI: 0.708\u20130.931), with an accuracy of "
        "0.833, sensitivity of 89.5%, specificity of 79.3%, PPV of 0.739, NPV of 0.920, and an F1 score of "
        "0.810"
    ) in text
    assert "exact binomial" in text and "out-of-fold" in text
    with pytest.raises(ParameterError, match="lacks columns"):
        results_paragraph(perf.drop(columns="f1"))


def test_delong_table_matches_stats():
    res = make_predictions(seed=1)
    from her2lib.stats import delong_test

    preds = {
        k: ModelPredictions(k, k, res[f"{p}_oof"], res[f"{p}_test"]) for k, p in (("dl_us", "us"), ("dl_mri", "mri"))
    }
    tab = delong_table(preds)
    assert len(tab) == 1  # only the US-vs-MRI pair is available
    t = res["us_test"]
    r = delong_test(t.her2, t.p_her2, res["mri_test"].p_her2)
    assert tab.iloc[0]["p_value"] == pytest.approx(r.pvalue)
    assert tab.iloc[0]["z"] == pytest.approx(r.z)


def test_load_predictions_mismatch(tmp_path):
    preds = make_predictions(seed=2, sep_us=0.7, sep_mri=0.5)
    run = _write(preds, tmp_path)
    run_fusion(run)
    loaded = load_predictions(run.predictions)
    assert list(loaded) == ["dl_us", "dl_mri", "dl_us_mri"]
    bad = preds["mri_test"].iloc[1:]
    bad.to_csv(run.predictions / "mri_test.csv", index=False)
    with pytest.raises(DataError, match="cover different patients"):
        load_predictions(run.predictions)
    with pytest.raises(ParameterError, match="model='dl_ct' is not supported"):
        load_predictions(run.predictions, models=("dl_ct",))


def test_run_evaluation_end_to_end(tmp_path):
    run = _write(make_predictions(seed=3, sep_us=0.7, sep_mri=0.5), tmp_path)
    run_fusion(run)
    stale = [run.tables / "class_auc.csv", run.figures / "confusion_matrices.png"]  # a class-task run's, earlier
    for p in stale:
        p.write_text("stale\n")
    res = run_evaluation(run, n_boot=200, dpi=80)
    assert not any(p.exists() for p in stale)  # index.html shows only this (binary) run's results
    perf = pd.read_csv(run.tables / "performance.csv")
    assert perf["label"].tolist() == ["DL-US", "DL-MRI", "DL-US&MRI"]
    assert (perf.auc_ci_low <= perf.auc).all() and (perf.auc <= perf.auc_ci_high).all()
    dl = pd.read_csv(run.tables / "delong.csv")
    assert dl[["model_a", "model_b"]].values.tolist() == [
        ["DL-US&MRI", "DL-US"],
        ["DL-US&MRI", "DL-MRI"],
        ["DL-US", "DL-MRI"],
    ]
    for f in ("roc.png", "roc.svg", "performance.png", "calibration.png", "decision_curve.png"):
        assert (run.figures / f).stat().st_size > 1000
        assert run.figures / f in res.files
    text = (run.tables / "results_text.md").read_text()
    assert text == res.text and "bootstrap CI" in text and "optimism" not in text
    # the written reliability table keeps each bin's own mean prediction (not the overall mean)
    cal = pd.read_csv(run.tables / "calibration.csv")
    for _, g in cal.groupby("model"):
        assert g["mean_predicted"].is_monotonic_increasing and g["mean_predicted"].nunique() == len(g)
        assert g["mean_predicted_overall"].nunique() == 1


def test_roc_svg_is_byte_identical_across_runs(tmp_path):
    svgs = []
    for k in range(2):
        run = _write(make_predictions(seed=5), tmp_path, f"out{k}")
        run_fusion(run)
        run_evaluation(run, n_boot=50, dpi=60)
        svgs.append((run.figures / "roc.svg").read_bytes())
    assert svgs[0] == svgs[1]


# ------------------------------------------------------------------ headline AUC interval (issue 9.3)
def test_headline_interval_is_delong_and_exact_binomial_kept_beside():
    """2 positives / 46 negatives at AUC 0.717 (one positive above every negative, one above 20 of 46): the
    exact-binomial interval on n = 48 (as the paper / MedCalc) is 0.569-0.838 whatever the class split, DeLong's
    (pROC ci.auc, checked in test_stats_roc) is (0.200, 1.0). The headline must be DeLong's."""
    y = np.r_[np.ones(2), np.zeros(46)].astype(int)
    neg = np.linspace(0.01, 0.99, 46)
    p = np.r_[neg[44] + 1e-4, neg[20] + 1e-4, neg]
    oof_y = np.r_[np.ones(10), np.zeros(10)].astype(int)
    oof_p = np.r_[np.linspace(0.3, 0.9, 10), np.linspace(0.1, 0.7, 10)]
    r = performance_table({"dl_us": _mp("dl_us", oof_y, oof_p, y, p)}).iloc[0]
    from her2lib.stats import auc_ci

    dl, eb = auc_ci(y, p, method="delong"), auc_ci(y, p, method="exact-binomial")
    assert r.auc == pytest.approx(66 / 92)
    assert (r.auc_ci_low, r.auc_ci_high) == (dl.ci[0], dl.ci[1])
    assert (r.auc_ci_low, r.auc_ci_high) == pytest.approx((0.200, 1.0), abs=1e-3)
    assert (r.auc_exact_binomial_ci_low, r.auc_exact_binomial_ci_high) == (eb.ci[0], eb.ci[1])
    assert (r.auc_exact_binomial_ci_low, r.auc_exact_binomial_ci_high) == pytest.approx((0.569, 0.838), abs=1e-3)
    text = results_paragraph(pd.DataFrame([r]))
    assert "(95% CI: 0.200\u20131.000; exact binomial as the paper/MedCalc: 0.569\u20130.838)" in text


# ------------------------------------------------------------------ operating point on one scale (issue 9.4)
def test_operating_point_transfers_from_oof_to_test(fold_model_sim):
    """Simulation (tests/conftest.py, 20000 OOF / 20000 test patients, 4 fold models): at the OOF Youden threshold,
    (sensitivity, specificity) of single fold models on the test cohort match the OOF ones to 0.015; applied to the
    fold-mean probabilities (her2lib 0.1) sensitivity and specificity move by more than 0.06 together."""
    from her2lib.stats import youden_threshold

    d = fold_model_sim
    mp = ModelPredictions("dl_us", "DL-US", d["us_oof"], d["us_test"], d["us_test_folds"])
    yo, po = d["us_oof"].her2.to_numpy(), d["us_oof"].p_her2.to_numpy()
    thr = youden_threshold(yo, po)
    sens_oof, spec_oof = (po[yo == 1] >= thr).mean(), (po[yo == 0] < thr).mean()
    r = performance_table({"dl_us": mp}, n_boot=200).iloc[0]
    assert r.n_models == 4 and "each fold model" in r.threshold_rule
    assert r.sensitivity == pytest.approx(sens_oof, abs=0.015)
    assert r.specificity == pytest.approx(spec_oof, abs=0.015)
    y, pm = d["us_test"].her2.to_numpy(), d["us_test"].p_her2.to_numpy()
    # the old design (threshold on the fold mean) lands at a different operating point: seeds 0-2 moved
    # |d sens| + |d spec| by 0.073-0.10 (per fold model: < 0.03)
    moved = abs((pm[y == 1] >= thr).mean() - sens_oof) + abs((pm[y == 0] < thr).mean() - spec_oof)
    assert moved > 0.06
    assert abs(r.sensitivity - sens_oof) + abs(r.specificity - spec_oof) < 0.03
    # pooled counts are the mean over fold models, and the CIs are on n patients, not n x 4
    P = mp.test_matrix()
    assert r.tp == pytest.approx(np.mean([(P[y == 1, k] >= thr).sum() for k in range(4)]))
    from her2lib.stats._common import clopper_pearson

    assert (r.sensitivity_ci_low, r.sensitivity_ci_high) == pytest.approx(clopper_pearson(r.tp, (y == 1).sum()))


def test_operating_point_metrics_one_model_is_binary_metrics():
    from her2lib.evaluate import operating_point_metrics
    from her2lib.stats import binary_metrics

    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.4).astype(int)
    p = np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1)
    a = operating_point_metrics(y, p, 0.5, n_boot=100)
    b = binary_metrics(y, p, 0.5, n_boot=100).to_row()
    assert a.pop("n_models") == 1 and a == b
    # identical fold models: pooled metrics equal the single model's
    c = operating_point_metrics(y, np.c_[p, p, p], 0.5, n_boot=100)
    for k in ("tp", "fp", "sensitivity", "sensitivity_ci_low", "ppv", "npv_ci_high", "f1"):
        assert c[k] == pytest.approx(b[k]), k


def test_run_evaluation_with_per_fold_files(tmp_path):
    from conftest import simulate_fold_models

    d = simulate_fold_models(n_train=160, n_test=48, seed=4)
    run = _write(d, tmp_path)
    run_fusion(run, n_boot=50)
    assert (run.predictions / "fusion_test_folds.csv").is_file()
    run_evaluation(run, n_boot=100, dpi=60)
    perf = pd.read_csv(run.tables / "performance.csv")
    assert (perf.n_models == 4).all()
    folds = pd.read_csv(run.tables / "performance_fold_models.csv")
    assert len(folds) == 12 and set(folds.model_fold) == {0, 1, 2, 3}
    for _, r in perf.iterrows():
        f = folds[folds.model == r.model]
        assert r.sensitivity == pytest.approx(f.sensitivity.mean())  # averaged over the fold models


# ------------------------------------------------------------------ calibration intercept (issue 9.1)
def test_calibration_table_reports_calibration_in_the_large():
    """An under-predicting model (true risk sigmoid(L), prediction sigmoid(2L), n = 4000) must not read as
    perfectly calibrated: calibration-in-the-large is ~0.68 (population value by quadrature in
    test_stats_calibration), while the joint-fit intercept her2lib 0.1 printed is ~0."""
    from scipy.special import expit

    rng = np.random.default_rng(0)
    lin = rng.normal(-1.2, 1.2, 4000)
    y = (rng.random(4000) < expit(lin)).astype(int)
    s = calibration_summary(y, expit(2 * lin))
    assert s["calibration_intercept"] == pytest.approx(0.678, abs=0.12)
    assert s["calibration_intercept_ci_low"] > 0.3  # clearly not 0
    assert s["calibration_slope"] == pytest.approx(0.5, abs=0.05)
    import statsmodels.api as sm

    joint = sm.Logit(y, sm.add_constant(2 * lin)).fit(disp=0).params[0]
    assert abs(joint) < 0.12 and abs(s["calibration_intercept"] - joint) > 0.4
