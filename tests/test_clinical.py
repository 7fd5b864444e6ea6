"""DL-US&MRI+Clinical (her2lib.clinical): screening, leakage-free fit, application per fold model, nomogram.

References: the likelihood-ratio statistic of a 2x2 table computed by hand (G = 2 sum O ln(O / E)) for the
univariable screen, to 1e-8; the model's own linear predictor for the nomogram (points read off the scales and
converted must give the predicted probability to 1e-12); label flipping for leakage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from her2lib import clinical as cl
from her2lib.clinical import (
    apply_clinical,
    fit_clinical,
    fit_clinical_model,
    nomogram_scales,
    points_to_probability,
    screen_candidates,
)
from her2lib.errors import DataError


def _cohort(n_train: int = 160, n_test: int = 50, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A cohort with two informative descriptors (axillary LN, T2 hypersignal), noise descriptors, age and size, and
    DL-US&MRI OOF / test scores."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 2, n)
    ids = [f"P{i:03d}" for i in range(n)]
    split = np.array(["train"] * n_train + ["test"] * n_test)
    ln = np.where(rng.random(n) < np.where(y == 1, 0.6, 0.2), "present", "absent")
    t2 = np.where(rng.random(n) < np.where(y == 1, 0.7, 0.35), "present", "absent")
    echo = rng.choice(
        ["hypoechoic", "heterogeneous", "complex_cystic_solid", "isoechoic"], n, p=[0.85, 0.08, 0.04, 0.03]
    )
    cohort = pd.DataFrame(
        {
            "patient_id": ids,
            "split": split,
            "her2": y,
            "us_axillary_ln": ln,
            "mri_t2_hyper": t2,
            "us_echo_pattern": echo,
            "mri_skin": rng.choice(["absent", "present"], n),
            "age": rng.normal(52, 9, n).round(),
            "mri_size_mm": rng.gamma(5, 5, n).round(),
        }
    )
    score = 1 / (1 + np.exp(-(1.2 * (y - 0.5) + rng.normal(0, 1, n))))
    fold = np.where(split == "train", np.arange(n) % 4, -1)
    preds = pd.DataFrame({"patient_id": ids, "split": split, "fold": fold, "her2": y, "p_her2": score})
    oof = preds[preds["split"] == "train"].reset_index(drop=True)
    test = preds[preds["split"] == "test"].reset_index(drop=True)
    return cohort, oof, test


def _test_folds(test: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        test[["patient_id", "split", "her2"]].assign(
            model_fold=k, p_her2=np.clip(test["p_her2"] + rng.normal(0, 0.05, len(test)), 0.01, 0.99)
        )
        for k in range(4)
    ]
    return pd.concat(rows, ignore_index=True)[["patient_id", "split", "her2", "model_fold", "p_her2"]]


def test_screen_equals_the_2x2_likelihood_ratio_statistic():
    cohort, oof, _ = _cohort()
    train = cohort[cohort["split"] == "train"].reset_index(drop=True)
    screen = screen_candidates(train, train["her2"]).set_index("variable")
    tab = pd.crosstab(train["us_axillary_ln"], train["her2"]).to_numpy(dtype=float)
    expected = tab.sum(1, keepdims=True) * tab.sum(0, keepdims=True) / tab.sum()
    g = 2 * np.sum(tab * np.log(tab / expected))
    assert screen.at["us_axillary_ln", "lr_chi2"] == pytest.approx(g, rel=1e-8)
    assert screen.at["us_axillary_ln", "df"] == 1
    # echo pattern: the three rare levels (< 10 patients each) are pooled into "other"
    assert screen.at["us_echo_pattern", "levels"].startswith("hypoechoic")
    assert "complex_cystic_solid" not in screen.at["us_echo_pattern", "levels"]


def test_the_informative_descriptors_enter_and_the_test_labels_are_never_read():
    cohort, oof, test = _cohort()
    res = fit_clinical_model(cohort, oof, test, dl_test_folds=_test_folds(test))
    terms = [t.column for t in res.model.terms]
    assert "us_axillary_ln" in terms and "mri_skin" not in terms
    n_pos = int(oof["her2"].sum())
    assert len(res.model.columns) - 2 <= max(1, n_pos // 10 - 1)  # coefficients, not variables, are limited
    one = fit_clinical(cohort[cohort["split"] == "train"], oof["p_her2"], oof["her2"], max_terms=1)
    assert len(one.columns) == 3
    flipped = cohort.copy()
    flipped.loc[flipped["split"] == "test", "her2"] = 1 - flipped.loc[flipped["split"] == "test", "her2"]
    again = fit_clinical_model(flipped, oof, test, dl_test_folds=_test_folds(test))
    np.testing.assert_array_equal(again.model.params, res.model.params)
    pd.testing.assert_frame_equal(again.test, res.test)
    pd.testing.assert_frame_equal(again.oof, res.oof)


def test_the_training_scores_are_cross_fitted(monkeypatch):
    cohort, oof, test = _cohort()
    seen: list[set] = []
    real = cl.fit_clinical

    def spy(frame, p_dl, y, **kw):
        seen.append(set(frame["patient_id"]))
        return real(frame, p_dl, y, **kw)

    monkeypatch.setattr(cl, "fit_clinical", spy)
    fit_clinical_model(cohort, oof, test)
    train_ids = set(oof["patient_id"])
    assert seen[0] == train_ids  # the model applied to the test cohort: all training patients
    for k, ids in enumerate(seen[1:]):
        assert ids == set(oof.loc[oof["fold"] != k, "patient_id"])  # fold k never in its own fit
    assert len(seen) == 5 and not any(ids & set(test["patient_id"]) for ids in seen)


def test_per_fold_application_is_averaged():
    cohort, oof, test = _cohort()
    folds = _test_folds(test)
    res = fit_clinical_model(cohort, oof, test, dl_test_folds=folds)
    mean = res.test_folds.groupby("patient_id")["p_her2"].mean()
    np.testing.assert_allclose(res.test.set_index("patient_id")["p_her2"], mean.loc[res.test["patient_id"]], rtol=1e-15)
    direct, none = apply_clinical(res.model, cohort, test)
    assert none is None
    rows = cohort.set_index("patient_id").loc[test["patient_id"]].reset_index()
    np.testing.assert_allclose(direct["p_her2"], res.model.predict(rows, test["p_her2"]), rtol=1e-15)


def _points(scale, value) -> float:
    if scale.label == "DL-US&MRI probability":
        xs = np.log(np.array([float(t) for t in scale.ticks]) / (1 - np.array([float(t) for t in scale.ticks])))
        x = np.log(value / (1 - value))
    elif all(t.replace(".", "").lstrip("-").isdigit() for t in scale.ticks):
        xs, x = np.array([float(t) for t in scale.ticks]), float(value)
    else:
        return next(p for t, p in zip(scale.ticks, scale.points) if value in t.split("/"))  # rare: in the reference
    slope = (scale.points[-1] - scale.points[0]) / (xs[-1] - xs[0])
    return scale.points[0] + (x - xs[0]) * slope  # points are linear in the term's variable


def test_the_nomogram_gives_the_model_probability():
    cohort, oof, test = _cohort()
    train = cohort[cohort["split"] == "train"].reset_index(drop=True)
    model = fit_clinical(train, oof["p_her2"], oof["her2"], max_terms=3)
    assert len(model.terms) >= 2
    scales, offset, scale = nomogram_scales(model)
    assert max(max(s.points) for s in scales) == pytest.approx(100) and min(min(s.points) for s in scales) >= -1e-9
    total = np.zeros(len(train))
    for i, row in train.iterrows():
        total[i] = _points(scales[0], oof.at[i, "p_her2"]) + sum(
            _points(s, row[t.column]) for s, t in zip(scales[1:], model.terms)
        )
    np.testing.assert_allclose(
        points_to_probability(total, offset, scale), model.predict(train, oof["p_her2"]), rtol=1e-10
    )


def test_missing_descriptors_are_filled_and_a_class_too_small_is_refused():
    cohort, oof, test = _cohort()
    train = cohort[cohort["split"] == "train"].reset_index(drop=True)
    model = fit_clinical(train, oof["p_her2"], oof["her2"])
    gap = train.copy()
    gap.loc[0, "us_axillary_ln"] = np.nan
    p = model.predict(gap.iloc[:1], oof["p_her2"].iloc[:1])
    filled = train.iloc[:1].assign(us_axillary_ln=train["us_axillary_ln"].mode()[0])
    np.testing.assert_allclose(p, model.predict(filled, oof["p_her2"].iloc[:1]))
    with pytest.raises(DataError, match="needs 2 patients of each class"):
        fit_clinical(train.iloc[:10], oof["p_her2"].iloc[:10], np.r_[1, np.zeros(9)])
