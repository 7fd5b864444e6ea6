"""Tests for her2lib.fusion_classes (DL-US&MRI for the class tasks: multinomial logistic regression on OOF
log-probability ratios) and the class-task branch of her2lib.stages.fusion.run_fusion and notebook 05.

References: statsmodels ``MNLogit`` and scikit-learn ``LogisticRegression`` fitted here on a design built here, the
binary :func:`her2lib.fusion.fit_fusion` (K = 2), scipy's ``minimize`` for the penalised fallback, scikit-learn's
``roc_auc_score`` for the macro AUC. Each tolerance is stated where it is used.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from her2lib.contract import (
    class_prediction_columns,
    class_test_fold_columns,
    read_class_predictions,
    read_class_test_folds,
    validate_class_test_folds,
)
from her2lib.contract import task as get_task
from her2lib.errors import DataError, ParameterError
from her2lib.fusion import fit_fusion, logit
from her2lib.fusion_classes import (
    cross_fit_class_oof,
    fit_class_fusion,
    fuse_classes,
    join_class_modalities,
    log_ratios,
)
from her2lib.runner import notebook as her2nb
from her2lib.stages import RunDirs
from her2lib.stages.fusion import fusion_outputs, run_fusion


def simulate(
    task: str = "three-class",
    *,
    n_train: int = 240,
    n_test: int = 40,
    n_folds: int = 4,
    seed: int = 0,
    sep: dict | None = None,
    folds: bool = True,
) -> dict[str, pd.DataFrame]:
    """Class-task prediction files of a cross-validated DL-US and DL-MRI, as notebooks 03/04 write them.

    Fold model k of modality m gives patient i the softmax of ``sep_m * onehot(class_i) + N(0, 1)`` logits; a
    training patient's OOF row comes from its own fold's model, a test patient gets every fold model's row
    (``*_test_folds``) and their mean (``*_test``)."""
    t = get_task(task)
    K = t.n_classes
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, K, n)
    cls = np.array(t.classes)[y]
    ids = np.array([f"P{i:04d}" for i in range(n)])
    fold = np.arange(n_train) % n_folds
    out = {}
    for mod, a in (sep or {"us": 1.0, "mri": 0.7}).items():
        z = a * np.eye(K)[y][:, None, :] + rng.normal(size=(n, n_folds, K))
        p = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
        oof = pd.DataFrame({"patient_id": ids[:n_train], "split": "train", "fold": fold, "her2_class": cls[:n_train]})
        test = pd.DataFrame({"patient_id": ids[n_train:], "split": "test", "fold": -1, "her2_class": cls[n_train:]})
        tf = pd.DataFrame(
            {
                "patient_id": np.repeat(ids[n_train:], n_folds),
                "split": "test",
                "her2_class": np.repeat(cls[n_train:], n_folds),
                "model_fold": np.tile(np.arange(n_folds), n_test),
            }
        )
        for j, col in enumerate(t.probability_columns):
            oof[col] = p[np.arange(n_train), fold, j]
            test[col] = p[n_train:, :, j].mean(axis=1)
            tf[col] = p[n_train:, :, j].ravel()
        out[f"{mod}_oof"], out[f"{mod}_test"] = oof, test
        if folds:
            out[f"{mod}_test_folds"] = tf
    return out


def _fuse(d: dict, task: str, **kw):
    return fuse_classes(
        d["us_oof"],
        d["mri_oof"],
        d["us_test"],
        d["mri_test"],
        task=task,
        us_test_folds=d.get("us_test_folds"),
        mri_test_folds=d.get("mri_test_folds"),
        **kw,
    )


def _design(d: dict, t, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The design built independently of her2lib: [1, log(p_k/p_0) US..., log(p_k/p_0) MRI...] and class codes."""
    j = d["us_oof"].merge(d["mri_oof"], on="patient_id", suffixes=("_us", "_mri")).sort_values("patient_id")
    cols = []
    for mod in ("us", "mri"):
        p = np.clip(j[[f"{c}_{mod}" for c in t.probability_columns]].to_numpy(), eps, 1 - eps)
        cols += [np.log(p[:, k] / p[:, 0]) for k in range(1, t.n_classes)]
    y = pd.Categorical(j["her2_class_us"], categories=list(t.classes)).codes
    return np.column_stack([np.ones(len(j))] + cols), np.asarray(y)


def _train_arrays(d: dict, t):
    j = join_class_modalities(d["us_oof"], d["mri_oof"], t)
    a = j[[f"{c}_us" for c in t.probability_columns]].to_numpy()
    b = j[[f"{c}_mri" for c in t.probability_columns]].to_numpy()
    return j, a, b, j["her2_class"].to_numpy()


@pytest.fixture(scope="module")
def three():
    return simulate("three-class")


# ------------------------------------------------------------------------------------------------ features
def test_log_ratios_clip_renormalise_and_reduce_to_the_logit():
    p = np.array([[0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    r = log_ratios(p)
    assert r.shape == (3, 2)
    np.testing.assert_allclose(r[0], np.log([0.3 / 0.2, 0.5 / 0.2]), rtol=1e-14)
    # p = 0 or 1 is clipped to [1e-6, 1 - 1e-6]: finite ratios of +-log((1 - 1e-6) / 1e-6) or 0
    big = np.log((1 - 1e-6) / 1e-6)
    np.testing.assert_allclose(r[1], [0.0, big], rtol=1e-12)
    np.testing.assert_allclose(r[2], [-big, -big], rtol=1e-12)
    q = np.array([[0.3, 0.7], [1e-9, 1 - 1e-9], [0.999, 0.001]])
    # log(p1) - log(p0) vs log(q) - log1p(-q): equal to rounding (1e-10 relative)
    np.testing.assert_allclose(log_ratios(q)[:, 0], logit(q[:, 1]), rtol=1e-10)
    with pytest.raises(ParameterError, match="eps"):
        log_ratios(p, eps=0.6)


# ------------------------------------------------------------------------------------------------ the fit
def test_fit_matches_statsmodels_and_sklearn(three):
    t = get_task("three-class")
    _, a, b, y = _train_arrays(three, t)
    m = fit_class_fusion(a, b, y, classes=t.classes)
    assert m.method.startswith("multinomial logit MLE")
    X, codes = _design(three, t)
    ref = sm.MNLogit(codes, X).fit(disp=0, method="bfgs", maxiter=5000, gtol=1e-10)  # another optimiser
    # statsmodels at its own optimum: coefficients to 1e-5 (BFGS vs Newton), SEs and P values to 1e-4 relative
    np.testing.assert_allclose(m.params, ref.params.T, atol=1e-5)
    np.testing.assert_allclose(m.bse, ref.bse.T, rtol=1e-4)
    np.testing.assert_allclose(m.pvalues, ref.pvalues.T, rtol=1e-3, atol=1e-8)
    z = stats.norm.ppf(0.975)  # Wald interval: coef +- z * se (1e-9)
    np.testing.assert_allclose(m.ci_high - m.params, z * m.bse, rtol=1e-9)
    np.testing.assert_allclose(m.params - m.ci_low, z * m.bse, rtol=1e-9)
    # scikit-learn's unpenalised (C = inf) multinomial, symmetric parametrisation: its differences to class 0,
    # to 1e-4 (lbfgs)
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100000).fit(X[:, 1:], codes)
    coef = np.column_stack([sk.intercept_, sk.coef_])
    np.testing.assert_allclose(m.params, (coef - coef[0])[1:], atol=1e-4)
    proba = m.predict(a, b)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(proba, sk.predict_proba(X[:, 1:]), atol=1e-6)
    tab = m.to_frame()
    assert len(tab) == 2 * 5 and tab["class"].tolist() == ["low"] * 5 + ["positive"] * 5
    assert tab["term"].iloc[1] == "log(p_low/p_zero) DL-US" and (tab["reference"] == "zero").all()
    assert (tab[["n_zero", "n_low", "n_positive"]].sum(axis=1) == len(y)).all()
    np.testing.assert_allclose(tab["odds_ratio"], np.exp(tab["coef"]), rtol=1e-15)


def test_two_classes_reduce_to_the_binary_fusion():
    """low-vs-zero: the multinomial fit on log(p_low / p_zero) is fit_fusion on logit(p_low) (1e-8 relative: the same
    statsmodels Newton iterations on the same design up to rounding)."""
    t = get_task("low-vs-zero")
    d = simulate("low-vs-zero", seed=3)
    _, a, b, y = _train_arrays(d, t)
    m = fit_class_fusion(a, b, y, classes=t.classes)
    ref = fit_fusion(a[:, 1], b[:, 1], (y == "low").astype(int))
    for name in ("params", "bse", "ci_low", "ci_high", "pvalues"):
        np.testing.assert_allclose(getattr(m, name)[0], getattr(ref, name), rtol=1e-8, err_msg=name)
    np.testing.assert_allclose(m.predict(a, b)[:, 1], ref.predict(a[:, 1], b[:, 1]), rtol=1e-10)
    # the separation fallback too: the same penalised objective, -loglik + |b|^2 / 2 on every term, as the binary
    # GLM.fit_regularized(alpha=1/n, L1_wt=0). Reference optimum: scipy BFGS with the analytic gradient. Ours (exact
    # Newton) matches it to 1e-7; the binary fallback's coordinate descent stops earlier (gradient ~4e-4 here), so
    # the two fallbacks agree to 1e-3.
    sep = np.where(y == "low", 0.9, 0.1)
    a2 = np.column_stack([1 - sep, sep])
    with pytest.warns(UserWarning, match="does not exist"):
        mp = fit_class_fusion(a2, b, y, classes=t.classes)
    with pytest.warns(UserWarning, match="does not exist"):
        rp = fit_fusion(a2[:, 1], b[:, 1], (y == "low").astype(int))
    assert mp.method.startswith("L2-penalised") and rp.method.startswith("L2-penalised")
    X, yy = np.column_stack([np.ones(len(y)), logit(a2[:, 1]), logit(b[:, 1])]), (y == "low").astype(float)
    ref = optimize.minimize(
        lambda v: -np.sum(yy * (X @ v) - np.logaddexp(0, X @ v)) + 0.5 * v @ v,
        np.zeros(3),
        jac=lambda v: -(X.T @ (yy - 1 / (1 + np.exp(-X @ v)))) + v,
        method="BFGS",
        options={"gtol": 1e-12},
    )
    np.testing.assert_allclose(mp.params[0], ref.x, atol=1e-7)
    np.testing.assert_allclose(mp.params[0], rp.params, atol=1e-3)


def test_separation_falls_back_to_the_penalised_fit(three):
    t = get_task("three-class")
    _, a, b, y = _train_arrays(three, t)
    codes = pd.Categorical(y, categories=list(t.classes)).codes
    perfect = np.full_like(a, 0.1)
    perfect[np.arange(len(y)), codes] = 0.8  # DL-US separates the classes perfectly
    with pytest.warns(UserWarning, match="perfect separation"):
        m = fit_class_fusion(perfect, b, y, classes=t.classes)
    assert m.method == "L2-penalised multinomial logit (separation)"
    assert np.isnan(m.bse).all() and np.isnan(m.ci_low).all() and np.isnan(m.pvalues).all()
    assert (m.to_frame()["method"] == m.method).all()
    assert (m.predict(perfect, b).argmax(axis=1) == codes).all()  # still classifies correctly
    # brute-force reference: scipy minimises -loglik + |B|^2 / 2 (BFGS, to 1e-4)
    X = m.design(perfect, b)
    Y = np.eye(3)[codes]

    def f(v):
        eta = np.column_stack([np.zeros(len(y)), X @ v.reshape(2, -1).T])
        return -np.sum(Y * eta) + np.sum(np.logaddexp.reduce(eta, axis=1)) + 0.5 * v @ v

    ref = optimize.minimize(f, np.zeros(m.params.size), method="BFGS", options={"gtol": 1e-9})
    np.testing.assert_allclose(m.params.ravel(), ref.x, atol=1e-4)


def test_fit_validates_its_inputs(three):
    t = get_task("three-class")
    _, a, b, y = _train_arrays(three, t)
    with pytest.raises(DataError, match="at least 2 patients of every class"):
        fit_class_fusion(a[:5], b[:5], np.array(["zero", "low", "low", "zero", "positive"]), classes=t.classes)
    with pytest.raises(DataError, match="not among the classes"):
        fit_class_fusion(a[:3], b[:3], ["zero", "low", "high"], classes=t.classes)
    with pytest.raises(DataError, match="shape"):
        fit_class_fusion(a, b[:, :2], y, classes=t.classes)
    with pytest.raises(ParameterError, match="level"):
        fit_class_fusion(a, b, y, classes=t.classes, level=95)


# ------------------------------------------------------------------------------------------------ cross-fitting
def test_cross_fit_never_reads_the_labels_of_the_fold_it_scores(three):
    t = get_task("three-class")
    j, a, b, y = _train_arrays(three, t)
    oof = cross_fit_class_oof(j, t)
    assert list(oof.columns) == list(class_prediction_columns(t))
    assert oof["patient_id"].tolist() == j["patient_id"].tolist()
    held = (j["fold"] == 0).to_numpy()
    m = fit_class_fusion(a[~held], b[~held], y[~held], classes=t.classes)
    np.testing.assert_allclose(oof[list(t.probability_columns)].to_numpy()[held], m.predict(a[held], b[held]))
    # permute fold 0's labels: fold 0's scores are unchanged (exactly), every other fold's scores move
    j2 = j.copy()
    j2.loc[held, "her2_class"] = j.loc[held, "her2_class"].map({"zero": "low", "low": "positive", "positive": "zero"})
    oof2 = cross_fit_class_oof(j2, t)
    p, p2 = (o[list(t.probability_columns)].to_numpy() for o in (oof, oof2))
    np.testing.assert_array_equal(p2[held], p[held])
    assert np.abs(p2[~held] - p[~held]).max() > 1e-3
    with pytest.raises(DataError, match="only training-cohort"):
        cross_fit_class_oof(j.assign(split="test"), t)


# ------------------------------------------------------------------------------------------------ fuse_classes
def test_fuse_classes_outputs(three):
    t = get_task("three-class")
    res = _fuse(three, "three-class")
    probs = list(t.probability_columns)
    assert list(res.oof.columns) == list(class_prediction_columns(t)) == list(res.test.columns)
    assert list(res.test_folds.columns) == list(class_test_fold_columns(t))
    assert (res.test["fold"] == -1).all() and (res.oof["split"] == "train").all()
    for df in (res.oof, res.test, res.test_folds):
        np.testing.assert_allclose(df[probs].sum(axis=1), 1.0, atol=1e-12)
    # test = the mean of the fused fold-model pairs, and each pair is the OOF model on DL-US fold k & DL-MRI fold k
    mean = res.test_folds.groupby("patient_id")[probs].mean().loc[res.test["patient_id"]]
    np.testing.assert_allclose(res.test[probs].to_numpy(), mean.to_numpy(), atol=1e-15)
    us_k, mri_k = (three[f"{m}_test_folds"].sort_values(["patient_id", "model_fold"]) for m in ("us", "mri"))
    np.testing.assert_allclose(
        res.test_folds[probs].to_numpy(), res.model.predict(us_k[probs].to_numpy(), mri_k[probs].to_numpy())
    )
    validate_class_test_folds(res.test_folds, t, "fusion_test_folds", test=res.test)
    assert "each fold model" in res.applied_to and "each fold model" in res.protocol
    assert (res.coefficients["protocol"] == "leakage-free (her2lib default)").all()
    row = res.protocols.iloc[0]
    y_test = pd.Categorical(res.test["her2_class"], categories=list(t.classes)).codes
    # macro AUC against scikit-learn (1e-12)
    assert row["macro_auc"] == pytest.approx(roc_auc_score(y_test, res.test[probs], multi_class="ovr"), abs=1e-12)
    y_oof = pd.Categorical(res.oof["her2_class"], categories=list(t.classes)).codes
    assert row["macro_auc_train_oof_crossfit"] == pytest.approx(
        roc_auc_score(y_oof, res.oof[probs], multi_class="ovr"), abs=1e-12
    )
    # without per-fold files the fold-mean inputs are fused, and it is recorded
    mean_only = _fuse(simulate("three-class", folds=False), "three-class")
    assert mean_only.test_folds is None and "fold-mean" in mean_only.applied_to and "fold-mean" in mean_only.protocol


def test_fuse_classes_never_reads_a_test_label(three):
    base = _fuse(three, "three-class")
    d = {k: v.copy() for k, v in three.items()}
    flip = {"zero": "positive", "low": "zero", "positive": "low"}
    for k in ("us_test", "mri_test", "us_test_folds", "mri_test_folds"):
        d[k]["her2_class"] = d[k]["her2_class"].map(flip)
    changed = _fuse(d, "three-class")
    np.testing.assert_array_equal(changed.model.params, base.model.params)
    pd.testing.assert_frame_equal(changed.oof, base.oof)
    probs = list(get_task("three-class").probability_columns)
    np.testing.assert_array_equal(changed.test[probs].to_numpy(), base.test[probs].to_numpy())
    # ...whereas a training label does change the fit (the check can fail)
    d2 = {k: v.copy() for k, v in three.items()}
    for k in ("us_oof", "mri_oof"):
        d2[k].loc[:30, "her2_class"] = d2[k].loc[:30, "her2_class"].map(flip)
    assert np.abs(_fuse(d2, "three-class").model.params - base.model.params).max() > 1e-3


def test_mismatched_modalities_name_the_patients(three):
    t = get_task("three-class")
    us, mri = three["us_oof"], three["mri_oof"]
    with pytest.raises(DataError, match=r"P0000.*in DL-US predictions but not in DL-MRI"):
        join_class_modalities(us, mri.iloc[1:], t)
    bad = mri.copy()
    bad.loc[3, "her2_class"] = "low" if bad.loc[3, "her2_class"] != "low" else "zero"
    with pytest.raises(DataError, match=r"her2_class differs .* \['P0003'\]"):
        join_class_modalities(us, bad, t)
    bad = mri.copy()
    bad.loc[2, "fold"] = (bad.loc[2, "fold"] + 1) % 4
    with pytest.raises(DataError, match=r"fold differs .* \['P0002'\]"):
        join_class_modalities(us, bad, t)
    both = pd.concat([three["us_oof"], three["us_test"]], ignore_index=True)
    both_mri = pd.concat([three["mri_oof"], three["mri_test"].assign(split="train", fold=0)], ignore_index=True)
    with pytest.raises(DataError, match=r"split differs .* \['P0240'"):
        join_class_modalities(both, both_mri, t)
    with pytest.raises(DataError, match="expected only split == 'train'"):
        fuse_classes(both, both_mri, three["us_test"], three["mri_test"], task=t)
    tf = three["mri_test_folds"].copy()
    tf.loc[0, "her2_class"] = "low" if tf.loc[0, "her2_class"] != "low" else "zero"
    with pytest.raises(DataError, match="her2_class differs from the fold-mean test file"):
        _fuse({**three, "mri_test_folds": tf}, "three-class")
    with pytest.raises(ParameterError, match="use her2lib.fusion.fuse"):
        _fuse(three, "binary")


# ------------------------------------------------------------------------------------------------ stage + notebook
def _run_with(d: dict, tmp_path) -> RunDirs:
    run = RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")
    for k, df in d.items():
        df.to_csv(run.predictions / f"{k}.csv", index=False)
    return run


@pytest.mark.parametrize("task", ["three-class", "low-vs-zero"])
def test_run_fusion_class_task_writes_its_files_and_removes_the_binary_ones(task, tmp_path):
    t = get_task(task)
    d = simulate(task, seed=1)
    run = _run_with(d, tmp_path)
    oof_p, test_p, folds_p, paper_p, coef_p, prot_p = fusion_outputs(run)
    for stale in (paper_p, prot_p):
        stale.write_text("left by a binary run\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run_fusion(run, task=task)
    assert not paper_p.exists() and not prot_p.exists()
    back = read_class_predictions(test_p, t, "test")
    np.testing.assert_allclose(back[list(t.probability_columns)], res.test[list(t.probability_columns)], rtol=1e-12)
    read_class_predictions(oof_p, t, "train")
    assert len(read_class_test_folds(folds_p, t, back)) == len(d["us_test_folds"])
    assert len(pd.read_csv(coef_p)) == (t.n_classes - 1) * (2 * (t.n_classes - 1) + 1)
    # the same as fusing the in-memory tables
    mem = _fuse(d, task)
    np.testing.assert_array_equal(res.model.params, mem.model.params)
    # a model missing: notice, nothing written, stale outputs removed
    run.predictions.joinpath("mri_oof.csv").unlink()
    assert run_fusion(run, task=task) is None
    assert not any(p.exists() for p in fusion_outputs(run))


def test_run_fusion_binary_files_are_not_read_as_a_class_task(tmp_path):
    from test_fusion import make_predictions

    run = _run_with(make_predictions(n_train=40, n_test=12), tmp_path)
    with pytest.raises(DataError, match="missing column"):
        run_fusion(run, task="three-class")
    with pytest.raises(ParameterError, match="task"):
        run_fusion(run, task="three_class")


def _run_notebook(out_dir, cohort_dir, task: str) -> dict:
    """Execute notebook 05's code cells in one namespace (the parameters cell, then papermill-style overrides);
    returns the namespace with the value of each cell's last expression under ``_cells``."""
    cells = json.loads((her2nb.NOTEBOOK_DIR / "05_fusion.ipynb").read_text(encoding="utf-8"))["cells"]
    ns: dict = {"_cells": []}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        src = "".join(cell["source"])
        if i == 0:
            exec(src, ns)
            # the fusion only: radiomics and DL-US&MRI+Clinical need the cohort's images (tests/test_e2e_added_value.py)
            ns.update(out_dir=str(out_dir), cohort_dir=str(cohort_dir), task=task, n_boot=20, radiomics=False)
            ns.update(clinical=False)
            continue
        try:
            ns["_cells"].append(eval(compile(src, "<cell>", "eval"), ns))
        except SyntaxError:
            exec(src, ns)
    return ns


@pytest.mark.parametrize("task", ["binary", "three-class"])
def test_notebook_05_runs_for_both_kinds_of_task(task, tmp_path):
    from test_fusion import make_predictions

    d = make_predictions(n_train=80, n_test=24) if task == "binary" else simulate(task, seed=2)
    run = _run_with(d, tmp_path)
    ns = _run_notebook(run.root, run.cohort_dir, task)
    assert ns["result"] is not None
    shown = [v for v in ns["_cells"] if v is not None]  # the skipped radiomics / clinical cells show nothing
    assert len(shown) == 3 and all(isinstance(v, pd.DataFrame) and len(v) for v in shown)
    params = json.loads((run.params / "05_fusion.json").read_text())
    assert params["task"] == task
    assert (run.tables / "fusion_protocols.csv").exists() == (task == "binary")
