"""DL-US&MRI+Radiomics (her2lib.radiomics.combined): fitted on training OOF scores only, cross-fitted, applied per
fold model. References: statsmodels ``Logit`` fitted directly on the logits (coefficients, 1e-10); label flipping
for leakage; the fold-mean identity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from her2lib.errors import DataError
from her2lib.radiomics.combined import TERMS, apply_combined, fit_combined


def _tables(seed: int = 0, n_train: int = 120, n_test: int = 40):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_train + n_test)
    ids = [f"P{i:03d}" for i in range(len(y))]

    def table(shift: float, noise: float) -> pd.DataFrame:
        p = 1 / (1 + np.exp(-(shift * (y - 0.5) + rng.normal(0, noise, len(y)))))
        split = np.array(["train"] * n_train + ["test"] * n_test)
        fold = np.where(split == "train", np.arange(len(y)) % 4, -1)
        return pd.DataFrame({"patient_id": ids, "split": split, "fold": fold, "her2": y, "p_her2": p})

    def folds(t: pd.DataFrame) -> pd.DataFrame:
        test = t[t["split"] == "test"]
        parts = [
            test[["patient_id", "split", "her2"]].assign(
                model_fold=k, p_her2=np.clip(test["p_her2"] + rng.normal(0, 0.03, len(test)), 0.01, 0.99)
            )
            for k in range(4)
        ]
        return pd.concat(parts, ignore_index=True)

    dl, rad = table(2.0, 1.0), table(1.5, 1.2)
    split = {k: t[t["split"] == "train"].reset_index(drop=True) for k, t in (("dl", dl), ("rad", rad))}
    tests = {k: t[t["split"] == "test"].reset_index(drop=True) for k, t in (("dl", dl), ("rad", rad))}
    f = {"dl": folds(dl), "rad": folds(rad)}
    for k in ("dl", "rad"):  # the fold-mean tables are the means of the per-fold tables, as the writers make them
        mean = f[k].groupby("patient_id")["p_her2"].mean()
        tests[k]["p_her2"] = mean.loc[tests[k]["patient_id"]].to_numpy()
    return split, tests, f


def test_the_fit_is_the_logistic_regression_of_the_oof_logits():
    train, test, folds = _tables()
    res = fit_combined(train["dl"], train["rad"], test["dl"], test["rad"])
    assert res.model.terms == TERMS
    lg = lambda p: np.log(p / (1 - p))  # noqa: E731
    X = np.column_stack([np.ones(len(train["dl"])), lg(train["dl"]["p_her2"]), lg(train["rad"]["p_her2"])])
    ref = sm.Logit(train["dl"]["her2"].to_numpy(float), X).fit(disp=0)
    np.testing.assert_allclose(res.model.params, ref.params, rtol=1e-10)
    assert list(res.coefficients["term"]) == list(TERMS)


def test_test_labels_are_never_read_and_the_training_scores_are_cross_fitted():
    train, test, folds = _tables()
    res = fit_combined(
        train["dl"], train["rad"], test["dl"], test["rad"], dl_test_folds=folds["dl"], rad_test_folds=folds["rad"]
    )
    flip = {k: t.assign(her2=1 - t["her2"]) for k, t in test.items()}
    flip_folds = {k: t.assign(her2=1 - t["her2"]) for k, t in folds.items()}
    again = fit_combined(
        train["dl"],
        train["rad"],
        flip["dl"],
        flip["rad"],
        dl_test_folds=flip_folds["dl"],
        rad_test_folds=flip_folds["rad"],
    )
    np.testing.assert_array_equal(again.model.params, res.model.params)
    np.testing.assert_array_equal(again.test["p_her2"], res.test["p_her2"])
    # flipping fold 0's labels leaves fold 0's cross-fitted scores unchanged (its regression never saw them)
    f0 = {k: t.assign(her2=np.where(t["fold"] == 0, 1 - t["her2"], t["her2"])) for k, t in train.items()}
    cross = fit_combined(f0["dl"], f0["rad"], test["dl"], test["rad"])
    held = res.oof["fold"] == 0
    np.testing.assert_array_equal(cross.oof.loc[held, "p_her2"], res.oof.loc[held, "p_her2"])
    assert not np.array_equal(cross.oof.loc[~held, "p_her2"], res.oof.loc[~held, "p_her2"])


def test_per_fold_application_and_mismatched_patients():
    train, test, folds = _tables()
    res = fit_combined(
        train["dl"], train["rad"], test["dl"], test["rad"], dl_test_folds=folds["dl"], rad_test_folds=folds["rad"]
    )
    mean = res.test_folds.groupby("patient_id")["p_her2"].mean()
    np.testing.assert_allclose(res.test["p_her2"], mean.loc[res.test["patient_id"]], rtol=1e-15)
    pred, per_fold = apply_combined(res.model, test["dl"], test["rad"])  # no per-fold tables: fold-mean inputs
    assert per_fold is None and len(pred) == len(test["dl"])
    with pytest.raises(DataError, match=r"only radiomics: \['P999'\]"):
        extra = pd.concat([test["rad"], test["rad"].iloc[:1].assign(patient_id="P999")], ignore_index=True)
        apply_combined(res.model, test["dl"], extra)
