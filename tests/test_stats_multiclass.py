"""Multiclass statistics (three-class HER2): one-vs-rest AUCs against scikit-learn and the binary functions, the
macro bootstrap, per-class metrics against hand counts and scipy's exact binomial interval, and the confusion-matrix
figure."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from her2lib import stats
from her2lib.errors import DataError, ParameterError, UndefinedMetricWarning
from her2lib.figures.multiclass import class_label, plot_confusion_matrix
from her2lib.stats import confusion_matrix, multiclass_auc, multiclass_metrics

CLASSES = ("zero", "low", "positive")


def _random(seed: int, n: int = 60, k: int = 3, ties: bool = False):
    rng = np.random.default_rng(seed)
    y_idx = np.r_[np.arange(k), rng.integers(0, k, n - k)]  # every class present
    logits = rng.normal(size=(n, k)) + 1.2 * np.eye(k)[y_idx]
    if ties:  # coarse logits: many tied probabilities within each column
        logits = np.round(logits * 2) / 2
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    classes = CLASSES if k == 3 else tuple(f"c{j}" for j in range(k))
    return np.array(classes, dtype=object)[y_idx], p, classes


# ------------------------------------------------------------------ AUC
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_macro_auc_equals_sklearn_ovr_macro(seed, ties):
    y, p, classes = _random(seed, n=40 + 17 * seed, k=3 + seed % 2, ties=ties)
    res = multiclass_auc(y, p, classes=classes, n_boot=50)
    # sklearn wants sorted labels (and so columns); ("zero", "low", "positive") is not: pass class indices
    yi = np.array([classes.index(v) for v in y])
    ref = roc_auc_score(yi, p, multi_class="ovr", average="macro", labels=list(range(len(classes))))
    assert res.macro == pytest.approx(ref, abs=1e-12)
    assert res.classes == classes and res.n == len(y)


@pytest.mark.parametrize("seed", range(3))
def test_per_class_auc_and_ci_equal_the_binary_functions(seed):
    y, p, classes = _random(seed, ties=seed == 2)
    res = multiclass_auc(y, p, classes=classes, level=0.9, n_boot=50)
    for j, c in enumerate(classes):
        yb = (y == c).astype(int)
        assert res.per_class[c].auc == stats.auc(yb, p[:, j])
        ref = stats.auc_ci(yb, p[:, j], method="delong", level=0.9)
        assert res.per_class[c].ci == ref.ci
        assert (res.per_class[c].n_pos, res.per_class[c].n_neg) == (int(yb.sum()), int(len(y) - yb.sum()))
    frame = res.to_frame()
    assert list(frame["class"]) == [*classes, "macro"]
    assert frame["auc"].iloc[-1] == res.macro and frame["ci_low"].iloc[-1] == res.macro_ci[0]
    assert frame["n_pos"].iloc[:-1].tolist() == [res.per_class[c].n_pos for c in classes]
    with pytest.raises(TypeError):  # read-only mapping
        res.per_class["zero"] = None


def test_integer_labels_and_list_input():
    y, p, _ = _random(4)
    yi = np.array([CLASSES.index(v) for v in y])
    a = multiclass_auc(y, p, classes=CLASSES, n_boot=50)
    b = multiclass_auc(yi.tolist(), p.tolist(), classes=(0, 1, 2), n_boot=50)
    assert a.macro == b.macro and a.macro_ci == b.macro_ci


def test_bootstrap_reproducible_by_seed_and_sensible():
    y, p, _ = _random(1, n=80)
    a = multiclass_auc(y, p, classes=CLASSES, n_boot=400, seed=3)
    b = multiclass_auc(y, p, classes=CLASSES, n_boot=400, seed=3)
    c = multiclass_auc(y, p, classes=CLASSES, n_boot=400, seed=4)
    assert a.macro_ci == b.macro_ci and a.macro_ci != c.macro_ci
    lo, hi, lev = a.macro_ci
    assert lev == 0.95 and lo < a.macro < hi and hi - lo < 0.3
    assert "stratified bootstrap" in a.method and "400 resamples, seed 3" in a.method


def test_bootstrap_resamples_match_a_direct_computation():
    """The vectorised resample AUCs equal sklearn's macro AUC of the same resampled patients."""
    from her2lib.stats.multiclass import _bootstrap_macro

    y, p, _ = _random(2, n=30)
    yi = np.array([CLASSES.index(v) for v in y])
    got = _bootstrap_macro(yi, p, 5, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    members = [np.flatnonzero(yi == j) for j in range(3)]
    idx = np.concatenate([m[rng.integers(0, m.size, size=(5, m.size))] for m in members], axis=1)
    for b in range(5):
        ref = roc_auc_score(yi[idx[b]], p[idx[b]], multi_class="ovr", average="macro", labels=[0, 1, 2])
        assert got[b] == pytest.approx(ref, abs=1e-12)


def test_bad_input_errors():
    y, p, _ = _random(0, n=12)
    with pytest.raises(DataError, match=r"not among the classes.*'unknown'"):
        multiclass_auc(np.r_[y[:-1], ["unknown"]], p, classes=CLASSES)
    with pytest.raises(DataError, match=r"shape \(n_patients, n_classes\) = \(12, 3\)"):
        multiclass_auc(y, p[:, :2], classes=CLASSES)
    with pytest.raises(DataError, match=r"shape"):
        multiclass_auc(y[:-1], p, classes=CLASSES)
    bad = p.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match=r"non-finite.*row 3, column 1"):
        multiclass_auc(y, bad, classes=CLASSES)
    bad = p.copy()
    bad[2] = [1.5, -0.25, -0.25]
    with pytest.raises(DataError, match=r"in \[0, 1\].*row 2"):
        multiclass_auc(y, bad, classes=CLASSES)
    bad = p.copy()
    bad[5, 0] += 1e-4
    with pytest.raises(DataError, match=r"do not sum to 1.*first row 5"):
        multiclass_auc(y, bad, classes=CLASSES)
    ok = p.copy()
    ok[5, 0] += 1e-7  # within the tolerance
    multiclass_auc(y, ok, classes=CLASSES, n_boot=20)
    with pytest.raises(DataError, match=r"no patient of class\(es\) \['positive'\]"):
        keep = y != "positive"
        multiclass_auc(y[keep], p[keep], classes=CLASSES)
    with pytest.raises(DataError, match="1-D"):
        multiclass_auc(np.c_[y, y], p, classes=CLASSES)
    with pytest.raises(ParameterError, match="distinct"):
        multiclass_auc(y, p, classes=("zero", "zero", "low"))
    with pytest.raises(ParameterError, match="sequence"):
        multiclass_auc(y, p, classes="zero")
    with pytest.raises(ParameterError, match="n_boot"):
        multiclass_auc(y, p, classes=CLASSES, n_boot=5)
    with pytest.raises(ParameterError, match="level"):
        multiclass_auc(y, p, classes=CLASSES, level=95)


def test_a_class_of_one_patient_has_an_auc_but_no_delong_interval():
    y, p, _ = _random(0, n=20)
    y = np.where(y == "zero", "low", y)
    y[0] = "zero"
    with pytest.warns(UndefinedMetricWarning, match="at least 2 patients per class"):
        res = multiclass_auc(y, p, classes=CLASSES, n_boot=50)
    assert np.isfinite(res.per_class["zero"].auc) and np.isnan(res.per_class["zero"].ci[0])
    assert np.isfinite(res.macro_ci[0])


# ------------------------------------------------------------------ decisions
def test_confusion_matrix_and_metrics_by_hand():
    y = ["zero"] * 4 + ["low"] * 5 + ["positive"] * 6
    yp = ["zero", "zero", "zero", "low"] + ["low", "low", "low", "zero", "positive"] + ["positive"] * 4 + ["low"] * 2
    cm = confusion_matrix(y, yp, classes=CLASSES)
    np.testing.assert_array_equal(cm, [[3, 1, 0], [1, 3, 1], [0, 2, 4]])
    res = multiclass_metrics(y, yp, classes=CLASSES, level=0.9)
    np.testing.assert_array_equal(res.confusion, cm)
    hand = {  # tp, fp, tn, fn of each class against the rest
        "zero": (3, 1, 10, 1),
        "low": (3, 3, 7, 2),
        "positive": (4, 1, 8, 2),
    }
    for c, (tp, fp, tn, fn) in hand.items():
        m = res.per_class[c]
        assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
        pairs = ((m.sensitivity, tp, tp + fn), (m.specificity, tn, tn + fp), (m.ppv, tp, tp + fp), (m.npv, tn, tn + fn))
        for est, k, n in pairs:
            ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
            assert est.value == k / n
            assert est.ci[0] == pytest.approx(ci.low, abs=1e-12) and est.ci[1] == pytest.approx(ci.high, abs=1e-12)
            assert est.ci[2] == 0.9 and (est.numerator, est.denominator) == (k, n)
    assert res.accuracy.value == 10 / 15
    ci = binomtest(10, 15).proportion_ci(confidence_level=0.9, method="exact")
    assert res.accuracy.ci[:2] == pytest.approx((ci.low, ci.high), abs=1e-12)
    frame = res.to_frame()
    assert list(frame["class"]) == list(CLASSES) and frame.loc[1, "ppv"] == 0.5
    with pytest.raises(ValueError):
        res.confusion[0, 0] = 9


def test_metrics_undefined_and_bad_input():
    y = ["zero", "low", "positive", "low"]
    with pytest.warns(UndefinedMetricWarning, match="PPV of class 'positive'"):
        res = multiclass_metrics(y, ["zero", "low", "low", "low"], classes=CLASSES)
    assert np.isnan(res.per_class["positive"].ppv.value) and res.per_class["positive"].sensitivity.value == 0
    with pytest.raises(DataError, match="y_pred holds 1 label"):
        multiclass_metrics(y, ["zero", "low", "high", "low"], classes=CLASSES)
    with pytest.raises(DataError, match="y_pred has 3 labels but y_true has 4"):
        multiclass_metrics(y, ["zero", "low", "low"], classes=CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        multiclass_metrics(y, y, classes=CLASSES)


# ------------------------------------------------------------------ figure
def test_confusion_matrix_figure(tmp_path):
    y = ["zero"] * 4 + ["low"] * 5 + ["positive"] * 6
    yp = ["zero", "zero", "zero", "low"] + ["low", "low", "low", "zero", "positive"] + ["positive"] * 4 + ["low"] * 2
    fig = plot_confusion_matrix(y, yp, classes=CLASSES, path=tmp_path / "cm.png", title="Test")
    assert (tmp_path / "cm.png").stat().st_size > 10_000 and (tmp_path / "cm.svg").is_file()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:2] == ["3", "75%"] and texts[-4:] == ["2", "33%", "4", "67%"]  # row shares, rounded
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "HER2-zero\n(n = 4)"
    assert class_label("low") == "HER2-low" and class_label(2) == "2"
    fig2 = plot_confusion_matrix(y, yp, classes=CLASSES, normalize="none", title=None, labels=["0", "low", "pos"])
    assert fig2.axes[0].get_title() == ""
    with pytest.raises(ParameterError, match="normalize"):
        plot_confusion_matrix(y, yp, classes=CLASSES, normalize="row")
    with pytest.raises(ParameterError, match="labels"):
        plot_confusion_matrix(y, yp, classes=CLASSES, labels=["a"])


def test_undefined_proportions_warn_at_the_callers_line():
    """A zero denominator gives NaN and a warning that points at the user's call (not at her2lib's internals), for
    the multiclass metrics and the binary ones that share the exact-proportion helper."""
    import warnings

    from her2lib.stats import binary_metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = multiclass_metrics(["a", "b", "a", "b"], ["a", "a", "a", "a"], classes=["a", "b"])
        binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]), 0.9)
    assert np.isnan(m.per_class["b"].ppv.value)
    assert {w.filename for w in caught} == {__file__}
    assert any("PPV of class 'b' is undefined" in str(w.message) for w in caught)
    assert any("PPV at threshold 0.9 is undefined" in str(w.message) for w in caught)
