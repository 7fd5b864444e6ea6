"""Tests for her2lib.evaluate_classes, its figures and the class-task branch of the evaluation stage (issue 13):
the OOF decision rule against Youden and brute force, metrics against scikit-learn / statsmodels / the existing
DeLong function, no test-set leakage, and the stage on fabricated class-task run folders."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from statsmodels.stats.proportion import proportion_confint

from her2lib.contract import class_proba
from her2lib.contract import task as get_task
from her2lib.errors import DataError, ParameterError
from her2lib.evaluate_classes import (
    RULE_APPLICATIONS,
    averaged_confusion,
    confusion_metrics,
    evaluate_classes,
    fit_decision_rule,
    load_class_predictions,
    low_vs_zero_score,
)
from her2lib.figures.multiclass import plot_confusion_matrices, plot_roc_classes, plot_roc_low_vs_zero
from her2lib.runner import notebook as her2nb
from her2lib.runner.report import EXTRA_CAPTIONS
from her2lib.stages import RunDirs
from her2lib.stages.evaluation import run_evaluation
from her2lib.stats import delong_test, multiclass_metrics, youden_threshold

THREE = ("zero", "low", "positive")
PREFIXES = (("us", 1.5), ("mri", 1.0), ("fusion", 1.8))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_class_predictions(
    task: str = "three-class", n_train: int = 149, n_test: int = 48, seed: int = 0, n_folds: int = 4, folds: bool = True
) -> dict[str, pd.DataFrame]:
    """Class-task prediction tables (``{us,mri,fusion}_{oof,test,test_folds}``) with the her2lib columns: softmax of
    a class signal plus noise; each fold model's test probabilities differ, the test file is their mean."""
    t = get_task(task)
    rng = np.random.default_rng(seed)
    k, n = t.n_classes, n_train + n_test
    prior = np.array([{"zero": 0.25, "low": 0.35, "positive": 0.4}[c] for c in t.classes])
    y = rng.choice(k, size=n, p=prior / prior.sum())
    y[:k], y[n_train : n_train + k] = np.arange(k), np.arange(k)  # every class in both splits
    ids = np.array([f"P{i:03d}" for i in range(n)])
    names = np.array(t.classes, dtype=object)[y]
    cols = list(t.probability_columns)
    out = {}
    for prefix, sep in PREFIXES:
        base = sep * np.eye(k)[y] + rng.normal(size=(n, k))
        oof = pd.DataFrame(
            {
                "patient_id": ids[:n_train],
                "split": "train",
                "fold": np.arange(n_train) % n_folds,
                "her2_class": names[:n_train],
            }
        )
        oof[cols] = _softmax(base[:n_train] + 0.3 * rng.normal(size=(n_train, k)))
        per_fold = np.stack([_softmax(base[n_train:] + 0.3 * rng.normal(size=(n_test, k))) for _ in range(n_folds)])
        test = pd.DataFrame({"patient_id": ids[n_train:], "split": "test", "fold": -1, "her2_class": names[n_train:]})
        test[cols] = per_fold.mean(axis=0)
        out[f"{prefix}_oof"], out[f"{prefix}_test"] = oof, test
        if folds:
            parts = []
            for f in range(n_folds):
                d = pd.DataFrame(
                    {"patient_id": ids[n_train:], "split": "test", "her2_class": names[n_train:], "model_fold": f}
                )
                d[cols] = per_fold[f]
                parts.append(d)
            out[f"{prefix}_test_folds"] = pd.concat(parts, ignore_index=True)
    return out


def _write(tables: dict, tmp_path, name: str = "out") -> RunDirs:
    run = RunDirs.from_out_dir(tmp_path / name, tmp_path / "cohort")
    for k, df in tables.items():
        df.to_csv(run.predictions / f"{k}.csv", index=False)
    return run


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    run = _write(make_class_predictions("three-class"), tmp_path_factory.mktemp("three"))
    preds = load_class_predictions(run.predictions, "three-class")
    return preds, evaluate_classes(preds, "three-class", n_boot=200)


# ---------------------------------------------------------------------------------------------- the decision rule
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_two_class_rule_reaches_youden_balanced_accuracy(seed):
    """K = 2: the rule is a threshold on p_1 with the balanced accuracy (J + 1) / 2 of the Youden threshold
    (tolerance 1e-12). Scores rounded to 2 decimals, so there are ties."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=120) < 0.4).astype(int)
    p1 = np.round(1 / (1 + np.exp(-(0.9 * (2 * y - 1) + rng.normal(size=120)))), 2)
    P = np.c_[1 - p1, p1]
    names = np.array(["zero", "low"], dtype=object)[y]
    rule = fit_decision_rule(names, P, classes=("zero", "low"))
    thr = youden_threshold(y, p1)
    call = p1 >= thr
    ba_youden = (call[y == 1].mean() + (~call[y == 0]).mean()) / 2
    assert rule.oof_balanced_accuracy == pytest.approx(ba_youden, abs=1e-12)
    pred = rule.predict(P)
    assert balanced_accuracy_score(names, pred) == pytest.approx(rule.oof_balanced_accuracy, abs=1e-12)
    # it is a threshold on p_1: every patient called "low" has a higher p_1 than every patient called "zero"
    assert p1[pred == "low"].min() > p1[pred == "zero"].max()
    assert rule.weights[0] == 1.0


def _brute_rule(y, P, axis):
    """Brute force with scikit-learn: every weight combination of the grid, ties to the smallest sum of squared
    log-weights, then the first in grid order."""
    best = None
    for g in itertools.product(axis, repeat=P.shape[1] - 1):
        lw = np.r_[0.0, g]
        pred = np.argmax(np.log(P) + lw, axis=1)
        key = (-balanced_accuracy_score(y, pred), round(float(np.sum(lw**2)), 12))
        if best is None or key < best[0]:
            best = (key, np.exp(lw))
    return -best[0][0], best[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_three_class_rule_equals_brute_force_on_its_grid(seed):
    """K = 3 on a small grid (log w in -1..1 step 0.1): same balanced accuracy (1e-12) and weights (1e-12) as a
    brute force scored by scikit-learn's balanced_accuracy_score."""
    o = make_class_predictions(seed=seed, n_train=90)["mri_oof"]
    y, P = o["her2_class"].to_numpy(dtype=object), class_proba(o, "three-class")
    rule = fit_decision_rule(y, P, classes=THREE, log_range=1.0, step=0.1)
    yc = np.array([THREE.index(v) for v in y])
    ba, w = _brute_rule(yc, P, np.round(np.arange(-10, 11) * 0.1, 12))
    assert rule.oof_balanced_accuracy == pytest.approx(ba, abs=1e-12)
    np.testing.assert_allclose(rule.weights, w, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 2])
def test_three_class_rule_reaches_a_five_times_finer_grid(seed):
    """The default grid (log w step 0.05 over -3..3) reaches the best OOF balanced accuracy of a brute force over
    the 0.01 grid (multiplicative weights, numpy), to 1e-12, on these data; a missed narrow optimum would fail."""
    o = make_class_predictions(seed=seed, n_train=60)["us_oof"]
    y, P = o["her2_class"].to_numpy(dtype=object), class_proba(o, "three-class")
    rule = fit_decision_rule(y, P, classes=THREE)
    yc = np.array([THREE.index(v) for v in y])
    W = np.exp(np.round(np.arange(-300, 301) * 0.01, 12))
    best = 0.0
    for w1 in W:
        weights = np.stack([np.ones_like(W), np.full_like(W, w1), W], axis=1)  # (601, 3)
        pred = np.argmax(P[None] * weights[:, None, :], axis=2)
        ba = np.mean([(pred[:, yc == j] == j).mean(axis=1) for j in range(3)], axis=0)
        best = max(best, float(ba.max()))
    assert rule.oof_balanced_accuracy == pytest.approx(best, abs=1e-12)


def test_rule_ties_go_to_all_ones_and_bad_input():
    # perfectly separated by the plain argmax: every weight near 1 is optimal; the tie goes to exactly all ones
    P = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 3)
    y = np.array(THREE * 3, dtype=object)
    rule = fit_decision_rule(y, P, classes=THREE)
    assert rule.weights == (1.0, 1.0, 1.0) and rule.oof_balanced_accuracy == 1.0
    assert list(rule.predict(P)) == list(y)
    assert "balanced accuracy" in rule.method and rule.n_oof == 9
    with pytest.raises(DataError, match="no OOF patient of class"):
        fit_decision_rule(np.array(["zero", "low"] * 3, dtype=object), P[:6], classes=THREE)
    with pytest.raises(ParameterError, match="log_range and step"):
        fit_decision_rule(y, P, classes=THREE, step=0)
    with pytest.raises(ParameterError, match="grid has"):
        fit_decision_rule(y, P, classes=THREE, log_range=10, step=0.001)
    with pytest.raises(DataError, match="shape"):
        rule.predict(P[:, :2])


# ---------------------------------------------------------------------------------------------- metrics
def test_confusion_metrics_single_model_equal_multiclass_metrics():
    """With one model (integer counts) the per-class table equals stats.multiclass_metrics (1e-12)."""
    rng = np.random.default_rng(4)
    y = rng.choice(THREE, size=60)
    yp = np.where(rng.uniform(size=60) < 0.6, y, rng.choice(THREE, size=60))
    cm = sk_confusion_matrix(y, yp, labels=list(THREE))
    per, overall = confusion_metrics(cm, THREE)
    ref = multiclass_metrics(y, yp, classes=THREE).to_frame()
    for col in ("tp", "fp", "tn", "fn", "sensitivity", "specificity_ci_low", "ppv_ci_high", "npv"):
        np.testing.assert_allclose(per[col].to_numpy(float), ref[col].to_numpy(float), atol=1e-12)
    assert overall["accuracy"] == pytest.approx(np.mean(y == yp), abs=1e-12)
    assert overall["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, yp), abs=1e-12)


def test_rule_applied_to_each_fold_model_and_counts_averaged(three):
    """The class_metrics / confusion tables hold the confusion counts of the OOF rule applied to each fold model,
    averaged (scikit-learn confusion_matrix per fold, 1e-12); intervals are Clopper-Pearson on the averaged
    counts (statsmodels proportion_confint(method="beta"), which accepts fractional counts, 1e-10)."""
    preds, res = three
    mp = preds["dl_mri"]
    rule = res.rules["dl_mri"]
    y = mp.test["her2_class"].to_numpy(dtype=object)
    ref = np.mean(
        [
            sk_confusion_matrix(
                y,
                rule.predict(
                    g.set_index("patient_id").loc[mp.test.patient_id][list(mp.task.probability_columns)].to_numpy()
                ),
                labels=list(THREE),
            )
            for _, g in mp.test_folds.groupby("model_fold")
        ],
        axis=0,
    )
    np.testing.assert_allclose(averaged_confusion(y, mp.test_models(), rule), ref, atol=1e-12)
    assert (ref != np.round(ref)).any(), "fixture should give fractional averaged counts"
    conf = res.confusion[res.confusion.model == "dl_mri"].pivot(
        index="true_class", columns="predicted_class", values="count"
    )
    np.testing.assert_allclose(conf.loc[list(THREE), list(THREE)].to_numpy(), ref, atol=1e-12)
    met = res.class_metrics[res.class_metrics.model == "dl_mri"].set_index("class")
    for j, c in enumerate(THREE):
        tp, fn, fp = ref[j, j], ref[j].sum() - ref[j, j], ref[:, j].sum() - ref[j, j]
        lo, hi = proportion_confint(tp, tp + fp, alpha=0.05, method="beta")
        assert met.loc[c, "ppv"] == pytest.approx(tp / (tp + fp), abs=1e-12)
        assert (met.loc[c, "ppv_ci_low"], met.loc[c, "ppv_ci_high"]) == pytest.approx((lo, hi), abs=1e-10)
        assert met.loc[c, "sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert met["balanced_accuracy"].iloc[0] == pytest.approx(np.mean(np.diag(ref) / ref.sum(axis=1)), abs=1e-12)
    assert (met["n_models"] == 4).all() and (met["applied_to"] == RULE_APPLICATIONS["per-fold"]).all()


def test_without_per_fold_files_the_rule_meets_the_fold_mean(tmp_path):
    tables = make_class_predictions("three-class", folds=False)
    run = _write(tables, tmp_path)
    preds = load_class_predictions(run.predictions, "three-class")
    res = evaluate_classes(preds, "three-class", n_boot=50)
    mp = preds["dl_us"]
    y = mp.test["her2_class"].to_numpy(dtype=object)
    ref = sk_confusion_matrix(y, res.rules["dl_us"].predict(class_proba(mp.test, "three-class")), labels=list(THREE))
    conf = res.confusion[res.confusion.model == "dl_us"].pivot(
        index="true_class", columns="predicted_class", values="count"
    )
    np.testing.assert_array_equal(conf.loc[list(THREE), list(THREE)].to_numpy(), ref)
    assert (res.class_metrics["applied_to"] == RULE_APPLICATIONS["fold-mean"]).all()
    assert "fold-mean" in res.text


def test_macro_and_per_class_auc_equal_sklearn(three):
    preds, res = three
    for key, mp in preds.items():
        y, P = mp.test["her2_class"].to_numpy(dtype=object), class_proba(mp.test, "three-class")
        tab = res.class_auc[res.class_auc.model == key].set_index("class")
        codes = np.array([THREE.index(v) for v in y])  # scikit-learn wants sorted labels: codes 0, 1, 2
        macro = roc_auc_score(codes, P, multi_class="ovr", average="macro")
        assert tab.loc["macro", "auc"] == pytest.approx(macro, abs=1e-12)
        for j, c in enumerate(THREE):
            assert tab.loc[c, "auc"] == pytest.approx(roc_auc_score(y == c, P[:, j]), abs=1e-12)
            assert tab.loc[c, "ci_low"] < tab.loc[c, "auc"] < tab.loc[c, "ci_high"]


@pytest.mark.parametrize("task", ["three-class", "low-vs-zero"])
def test_low_vs_zero_auc_equals_sklearn_on_the_her2_negative_subset(task, tmp_path):
    run = _write(make_class_predictions(task, seed=5), tmp_path)
    preds = load_class_predictions(run.predictions, task)
    res = evaluate_classes(preds, task, n_boot=50)
    for key, mp in preds.items():
        y, P = mp.test["her2_class"].to_numpy(dtype=object), class_proba(mp.test, task)
        neg = y != "positive"
        t = get_task(task)
        low, zero = P[neg, t.classes.index("low")], P[neg, t.classes.index("zero")]
        score = low / (low + zero) if task == "three-class" else low
        row = res.low_vs_zero.set_index("model").loc[key]
        assert row["auc"] == pytest.approx(roc_auc_score(y[neg] == "low", score), abs=1e-12)
        assert row["n_low"] + row["n_zero"] == neg.sum() == row["n_negative"]
    np.testing.assert_allclose(
        low_vs_zero_score(np.array([[0.2, 0.2, 0.6], [0.0, 0.0, 1.0]]), "three-class"), [0.5, 0.5]
    )
    with pytest.raises(ParameterError):
        low_vs_zero_score(np.ones((2, 2)) / 2, "binary")


def test_comparisons_equal_the_paired_delong_test(three):
    """class_delong rows equal stats.delong_test on the one-vs-rest labels / the HER2-negative subset (1e-12)."""
    preds, res = three
    cmp = res.comparisons
    assert len(cmp) == 3 * 4  # 3 pairs x (3 classes + low vs zero)
    a, b = preds["dl_us_mri"].test, preds["dl_mri"].test
    y = a["her2_class"].to_numpy(dtype=object)
    for j, c in enumerate(THREE):
        ref = delong_test(y == c, class_proba(a, "three-class")[:, j], class_proba(b, "three-class")[:, j])
        row = cmp[(cmp["class"] == c) & (cmp.model_a == "DL-US&MRI") & (cmp.model_b == "DL-MRI")].iloc[0]
        assert (row["diff"], row["z"], row["p_value"]) == pytest.approx((ref.diff, ref.z, ref.pvalue), abs=1e-12)
    neg = y != "positive"
    sa = low_vs_zero_score(class_proba(a, "three-class")[neg], "three-class")
    sb = low_vs_zero_score(class_proba(b, "three-class")[neg], "three-class")
    ref = delong_test(y[neg] == "low", sa, sb)
    row = cmp[(cmp["class"] == "low_vs_zero") & (cmp.model_a == "DL-US&MRI") & (cmp.model_b == "DL-MRI")].iloc[0]
    assert (row["diff_ci_low"], row["p_value"]) == pytest.approx((ref.diff_ci[0], ref.pvalue), abs=1e-12)


def test_the_rule_never_sees_test_rows(tmp_path):
    """Leakage guard: shuffling the test labels and probabilities leaves every decision rule unchanged; changing
    the OOF predictions changes one (so the check can fail)."""
    tables = make_class_predictions("three-class", seed=3)
    base = evaluate_classes(
        load_class_predictions(_write(tables, tmp_path, "a").predictions, "three-class"), "three-class", n_boot=50
    )
    rng = np.random.default_rng(0)
    shuffled = {k: v.copy() for k, v in tables.items()}
    for prefix, _ in PREFIXES:
        perm = rng.permutation(len(shuffled[f"{prefix}_test"]))
        labels = shuffled[f"{prefix}_test"]["her2_class"].to_numpy()[perm]
        shuffled[f"{prefix}_test"]["her2_class"] = labels
        m = dict(zip(shuffled[f"{prefix}_test"].patient_id, labels))
        shuffled[f"{prefix}_test_folds"]["her2_class"] = shuffled[f"{prefix}_test_folds"].patient_id.map(m)
    # the same shuffled labels for every model (the models must agree on the test patients' classes)
    ref_labels = shuffled["us_test"].set_index("patient_id")["her2_class"]
    for prefix, _ in PREFIXES:
        for part in ("test", "test_folds"):
            shuffled[f"{prefix}_{part}"]["her2_class"] = shuffled[f"{prefix}_{part}"].patient_id.map(ref_labels)
    moved = evaluate_classes(
        load_class_predictions(_write(shuffled, tmp_path, "b").predictions, "three-class"), "three-class", n_boot=50
    )
    pd.testing.assert_frame_equal(base.decision_rules, moved.decision_rules)
    assert not base.class_metrics[["tp", "fp"]].equals(moved.class_metrics[["tp", "fp"]])
    changed = {k: v.copy() for k, v in tables.items()}
    cols = ["p_zero", "p_low", "p_positive"]
    changed["us_oof"][cols] = np.roll(changed["us_oof"][cols].to_numpy(), 7, axis=0)  # other OOF predictions
    other = evaluate_classes(
        load_class_predictions(_write(changed, tmp_path, "c").predictions, "three-class"), "three-class", n_boot=50
    )
    assert not base.decision_rules.equals(other.decision_rules)


def test_evaluate_classes_refuses_the_binary_task_and_mixed_input(three):
    preds, _ = three
    with pytest.raises(ParameterError, match="evaluate_models"):
        evaluate_classes(preds, "binary")
    with pytest.raises(ParameterError, match="not of task"):
        evaluate_classes(preds, "low-vs-zero")
    with pytest.raises(ParameterError, match="no models"):
        evaluate_classes({}, "three-class")


# ---------------------------------------------------------------------------------------------- text and figures
def test_results_text_states_the_numbers(three):
    _, res = three
    auc = res.class_auc.set_index(["model", "class"]).loc[("dl_us", "macro"), "auc"]
    assert f"macro-average one-vs-rest AUC of {auc:.3f}" in res.text
    assert "HER2-low from HER2-zero" in res.text and "never on the test cohort" in res.text
    assert res.text.count("In the test cohort,") == 3


def test_figures(three, tmp_path):
    preds, res = three
    fig = plot_roc_classes(preds, res.class_auc, tmp_path / "roc.png", class_metrics=res.class_metrics, dpi=60)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    lab = res.class_auc.set_index(["model", "class"]).loc[("dl_us", "low")]
    assert f"DL-US: {lab['auc']:.3f} ({lab['ci_low']:.3f}\u2013{lab['ci_high']:.3f})" in texts
    assert fig.axes[0].get_xlabel().startswith("1 \u2212 Specificity")
    fig = plot_confusion_matrices(res.confusion, classes=THREE, path=tmp_path / "cm.png", dpi=60)
    assert [a.get_title() for a in fig.axes[:3]] == ["DL-US", "DL-MRI", "DL-US&MRI"]
    cells = {t.get_text() for t in fig.axes[0].texts}
    dl_us = res.confusion[res.confusion.model == "dl_us"]
    assert {f"{v:.2f}".rstrip("0").rstrip(".") for v in dl_us["count"]} <= cells
    fig = plot_roc_low_vs_zero(preds, res.low_vs_zero, tmp_path / "lvz.png", dpi=60)
    assert "HER2-negative" in fig.axes[0].get_title()
    for name in ("roc", "cm", "lvz"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.svg").is_file()
    with pytest.raises(DataError, match="confusion table"):
        plot_confusion_matrices(res.confusion.drop(columns="count"), classes=THREE)


# ---------------------------------------------------------------------------------------------- the stage
CLASS_TABLES = ("class_auc", "class_metrics", "decision_rules", "confusion", "low_vs_zero_auc", "class_delong")


@pytest.mark.parametrize("task", ["three-class", "low-vs-zero"])
def test_stage_writes_the_class_task_outputs(task, tmp_path):
    run = _write(make_class_predictions(task, seed=1), tmp_path)
    (run.tables / "performance.csv").write_text("stale binary output\n")  # a folder holding an old binary run
    res = run_evaluation(run, task=task, n_boot=50, dpi=50)
    for name in CLASS_TABLES:
        assert len(pd.read_csv(run.tables / f"{name}.csv")) > 0
    assert (run.tables / "results_text.md").read_text(encoding="utf-8") == res.text
    figs = ["confusion_matrices", "roc_low_vs_zero"] + (["roc_classes"] if task == "three-class" else [])
    for name in figs:
        assert (run.figures / f"{name}.png").stat().st_size > 0
    assert (run.figures / "roc_classes.png").is_file() == (task == "three-class")
    assert not (run.figures / "roc.png").exists() and not (run.tables / "delong.csv").exists()
    assert not (run.tables / "performance.csv").exists()  # the old binary run's table is not shown as this run's
    per_model = res.class_auc.groupby("model").size()
    assert (per_model == (4 if task == "three-class" else 1)).all()  # low-vs-zero: one AUC, not three copies of it
    assert set(res.files) == {p for p in res.files if p.is_file()}
    # every table and figure the stage writes has a caption in the report
    for p in res.files:
        if p.suffix in (".png", ".csv"):
            assert f"{p.parent.name}/{p.name}" in EXTRA_CAPTIONS, p.name
    back = pd.read_csv(run.tables / "class_auc.csv")
    np.testing.assert_allclose(back["auc"], res.class_auc["auc"], atol=1e-12)


def test_stage_with_two_models_and_bad_files(tmp_path):
    tables = {k: v for k, v in make_class_predictions("three-class").items() if not k.startswith("fusion")}
    run = _write(tables, tmp_path)
    res = run_evaluation(run, task="three-class", n_boot=50, dpi=50)
    assert set(res.class_auc["model"]) == {"dl_us", "dl_mri"}
    assert len(res.comparisons) == 4  # one pair x (3 classes + low vs zero)
    bad = dict(tables)
    bad["mri_test"] = bad["mri_test"].assign(her2_class=np.roll(bad["mri_test"]["her2_class"].to_numpy(), 1))
    bad.pop("mri_test_folds")
    with pytest.raises(DataError, match="disagree on the HER2 class"):
        run_evaluation(_write(bad, tmp_path, "bad"), task="three-class", n_boot=50, dpi=50)
    with pytest.raises(DataError, match="her2 / p_her2|missing column|her2_class"):
        run_evaluation(run, task="binary")  # class files read as binary ones: a clear error, not a crash later


def test_notebook_declares_the_task_parameter():
    names = her2nb.parameter_names("06_evaluation")
    assert names[names.index("cohort_dir") + 1] == "task"
    line = [ln for ln in her2nb.parameters_cell("06_evaluation").splitlines() if ln.startswith("task:")][0]
    assert (
        line
        == 'task: str = "binary"  # binary | three-class (zero, low, positive) | low-vs-zero (HER2-negative patients only)'
    )
