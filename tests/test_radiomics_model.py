"""The radiomics model (her2lib.radiomics.model): selection and penalty fitted inside the CV folds, leakage guard,
signal vs noise, the filters against scikit-learn, determinism, prediction files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score

from her2lib.contract import prediction_path, read_predictions, read_test_folds
from her2lib.errors import DataError, ParameterError
from her2lib.radiomics import model as rm
from her2lib.train.folds import assign_folds

N_FOLDS = 4
INFORMATIVE = [f"us_stat_f{j:02d}" for j in range(5)]
#: near-copies (r ~ 0.999) of the first three informative features
COPIES = {"us_stat_f05": "us_stat_f00", "us_stat_f06": "us_stat_f01", "us_stat_f07": "us_stat_f02"}


def synthetic(seed: int = 0, *, informative: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """120 training patients in 4 stratified folds, 40 test, 20 external; 60 features: 5 informative (a 1 SD
    class difference each), 3 near-copies of informative ones, 1 constant, 1 with 40% NaN, a few NaNs elsewhere,
    50 noise. ``informative=False``: every feature is noise. Features rows are shuffled (joined by patient_id)."""
    rng = np.random.default_rng(seed)
    n_train, n_test, n_ext = 120, 40, 20
    n = n_train + n_test + n_ext
    ids = np.array([f"R{i:04d}" for i in range(n)])
    split = np.array(["train"] * n_train + ["test"] * n_test + ["external"] * n_ext)
    y = (rng.random(n) < 0.4).astype(int)
    cohort = pd.DataFrame({"patient_id": ids, "split": split, "her2": y})
    cohort["fold"] = assign_folds(cohort, N_FOLDS, seed=seed)
    X = rng.normal(size=(n, 60))
    if informative:
        X[:, :5] += (y[:, None] - 0.5) * np.array([1.0, -1.0, 1.0, -1.0, 1.0])
        for c, src in ((5, 0), (6, 1), (7, 2)):
            X[:, c] = X[:, src] + 0.05 * rng.normal(size=n)
    X[:, 8] = 3.0
    X[rng.random(n) < 0.4, 9] = np.nan
    for c in (1, 10, 11):
        X[rng.random(n) < 0.05, c] = np.nan
    names = [f"us_stat_f{j:02d}" for j in range(30)] + [f"mri_morph_f{j:02d}" for j in range(30)]
    features = pd.DataFrame(X, columns=names)
    features.insert(0, "patient_id", ids)
    return features.sample(frac=1, random_state=seed).reset_index(drop=True), cohort


@pytest.fixture(scope="module")
def data():
    return synthetic(0)


@pytest.fixture(scope="module")
def result(data):
    return rm.run_radiomics_cv(*data, seed=0)


def _garbage(features: pd.DataFrame, cohort: pd.DataFrame, ids, seed: int = 1):
    """Features of ``ids`` replaced by random values (shifted, 4x the spread, with NaN and inf) and their labels
    flipped."""
    rng = np.random.default_rng(seed)
    f = features.copy()
    rows = f["patient_id"].isin(set(ids)).to_numpy()
    cols = f.columns[1:]
    junk = rng.normal(loc=2.0, scale=4.0, size=(int(rows.sum()), len(cols)))
    junk[rng.random(junk.shape) < 0.1] = np.nan
    junk[0, :3] = np.inf
    f.loc[rows, cols] = junk
    c = cohort.copy()
    flip = c["patient_id"].isin(set(ids))
    c.loc[flip, "her2"] = 1 - c.loc[flip, "her2"]
    return f, c


def _same_model(a: rm.RadiomicsFoldModel, b: rm.RadiomicsFoldModel) -> None:
    assert a.selected == b.selected
    pd.testing.assert_frame_equal(a.coefficients, b.coefficients, check_exact=True)
    assert (a.C, a.intercept, a.inner_cv_auc, a.n_train) == (b.C, b.intercept, b.inner_cv_auc, b.n_train)


# ------------------------------------------------------------------------------------------- no leakage
def test_every_fit_sees_exactly_the_other_folds_training_patients(data, monkeypatch):
    features, cohort = data
    seen: list[tuple[str, list[str]]] = []

    def spy(cls):
        original = cls.fit

        def fit(self, X, y=None, **kw):
            seen.append((cls.__name__, list(X.index)))
            return original(self, X, y, **kw)

        monkeypatch.setattr(cls, "fit", fit)

    for cls in (rm.MissingConstantFilter, rm.UnivariateAUCFilter, rm.CorrelationFilter, LogisticRegressionCV):
        spy(cls)
    rm.run_radiomics_cv(features, cohort, seed=0, Cs=5)
    assert len(seen) == 4 * N_FOLDS
    train = cohort[cohort["split"] == "train"]
    outside = set(cohort.loc[cohort["split"] != "train", "patient_id"])
    for k in range(N_FOLDS):
        expected = sorted(train.loc[train["fold"] != k, "patient_id"])
        held = set(train.loc[train["fold"] == k, "patient_id"])
        for name, ids in seen[4 * k : 4 * k + 4]:
            assert ids == expected, (k, name)
            assert not set(ids) & (held | outside)


def test_garbage_test_and_external_patients_change_no_fit(data, result):
    features, cohort = data
    ids = cohort.loc[cohort["split"] != "train", "patient_id"]
    other = rm.run_radiomics_cv(*_garbage(features, cohort, ids), seed=0)
    for a, b in zip(result.fold_models, other.fold_models):
        _same_model(a, b)
    pd.testing.assert_frame_equal(result.oof, other.oof, check_exact=True)
    pd.testing.assert_frame_equal(result.summary, other.summary, check_exact=True)
    pd.testing.assert_frame_equal(result.selected, other.selected, check_exact=True)
    assert not np.allclose(result.test["p_her2"], other.test["p_her2"])  # the garbage did reach the predictions


@pytest.mark.parametrize("k", range(N_FOLDS))
def test_garbage_in_the_held_out_fold_leaves_its_fold_model_unchanged(data, result, k):
    features, cohort = data
    ids = cohort.loc[(cohort["split"] != "train") | (cohort["fold"] == k), "patient_id"]
    other = rm.run_radiomics_cv(*_garbage(features, cohort, ids, seed=10 + k), seed=0)
    before, after = result.fold_models[k], other.fold_models[k]
    _same_model(before, after)
    held = result.oof[result.oof["fold"] == k]
    p = after.predict(features.set_index("patient_id").loc[held["patient_id"]].reset_index())
    assert np.array_equal(p, held["p_her2"].to_numpy())  # the OOF predictions of fold k, byte for byte
    test_k = result.test_folds[result.test_folds["model_fold"] == k]
    p = after.predict(features.set_index("patient_id").loc[test_k["patient_id"]].reset_index())
    assert np.array_equal(p, test_k["p_her2"].to_numpy())
    # the perturbation is strong enough to show a leak: the models that do train on fold k change
    changed = [j for j in range(N_FOLDS) if j != k and result.fold_models[j].selected != other.fold_models[j].selected]
    assert changed


def test_guard_refuses_test_and_held_out_rows(data):
    features, cohort = data
    train = cohort[(cohort["split"] == "train") & (cohort["fold"] != 0)]
    test_row = cohort[cohort["split"] == "test"].head(1)
    with pytest.raises(DataError, match="must never be used for fitting") as e:
        rm.fit_radiomics_fold(features, pd.concat([train, test_row]), fold=0)
    assert test_row["patient_id"].iloc[0] in str(e.value) and "test/external" in str(e.value)
    held_row = cohort[cohort["fold"] == 0].head(1)
    with pytest.raises(DataError, match="fold 0's held-out patients") as e:
        rm.fit_radiomics_fold(features, pd.concat([train, held_row]), fold=0)
    assert held_row["patient_id"].iloc[0] in str(e.value)
    model = rm.fit_radiomics_fold(features, train, fold=0, Cs=5)
    assert model.fold == 0 and model.n_train == len(train)


def test_missing_features_and_bad_inputs_are_named(data):
    features, cohort = data
    pid = cohort.loc[cohort["split"] == "train", "patient_id"].iloc[3]
    with pytest.raises(DataError, match="Re-run the radiomics feature extraction") as e:
        rm.run_radiomics_cv(features[features["patient_id"] != pid], cohort)
    assert pid in str(e.value)
    with pytest.raises(DataError, match="labels or cohort columns"):
        rm.run_radiomics_cv(features.assign(her2=0), cohort)
    with pytest.raises(ParameterError, match="Did you mean 'n_candidates'"):
        rm.run_radiomics_cv(features, cohort, n_candidate=10)
    with pytest.raises(ParameterError, match="corr_threshold"):
        rm.make_radiomics_pipeline(corr_threshold=1.5)
    with pytest.raises(DataError, match="fold must be"):
        rm.run_radiomics_cv(features, cohort.assign(fold=0))


# ------------------------------------------------------------------------------------------- signal and noise
def test_informative_features_are_selected_and_predict(data, result):
    assert result.oof_auc > 0.75
    assert len(result.fold_models) == N_FOLDS and list(result.summary["fold"]) == list(range(N_FOLDS))
    groups = {f: {f} | {c for c, src in COPIES.items() if src == f} for f in INFORMATIVE}
    hits = {f: sum(bool(g & set(m.selected)) for m in result.fold_models) for f, g in groups.items()}
    assert sum(n >= 3 for n in hits.values()) >= 4, hits
    for m in result.fold_models:
        assert "us_stat_f08" not in m.coefficients["feature"].tolist()  # constant
        assert "us_stat_f09" not in m.coefficients["feature"].tolist()  # 40% missing
        for copy, src in COPIES.items():  # never both of a near-copy pair
            assert not {copy, src} <= set(m.coefficients["feature"])
        assert set(m.selected) <= set(m.coefficients["feature"])
    s = result.summary
    assert (s["n_features_kept"] == 58).all() and (s["n_candidates_kept"] <= 30).all()
    assert (s["n_selected"] == [len(m.selected) for m in result.fold_models]).all()
    top = result.selected.iloc[0]
    assert top["n_folds_selected"] == N_FOLDS and top["folds"] == "0,1,2,3"


def test_pure_noise_gives_chance_oof_auc():
    res = rm.run_radiomics_cv(*synthetic(0, informative=False), seed=0)
    assert abs(res.oof_auc - 0.5) < 0.2


# ------------------------------------------------------------------------------------------- the filters
def test_univariate_aucs_equal_sklearn_and_keep_the_strongest():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(25, int), np.zeros(35, int)]
    X = np.round(rng.normal(size=(60, 12)) + 0.6 * y[:, None] * rng.normal(size=12), 1)  # ties
    f = rm.UnivariateAUCFilter(n_candidates=4).fit(X, y)
    ref = np.array([roc_auc_score(y, X[:, j]) for j in range(12)])
    np.testing.assert_allclose(f.auc_, ref, rtol=0, atol=1e-12)
    strongest = np.argsort(-np.abs(ref - 0.5), kind="stable")[:4]
    assert set(np.flatnonzero(f.support_)) == set(strongest)
    assert f.transform(X).shape == (60, 4)
    assert list(f.get_feature_names_out()) == [f"x{j}" for j in sorted(strongest)]


def test_correlation_filter_keeps_one_of_each_near_copy_pair():
    rng = np.random.default_rng(4)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    a, b, c = (rng.normal(size=60) + s * y for s in (1.0, -0.8, 0.5))
    X = pd.DataFrame(
        {"a": a, "a_copy": a + 0.01 * rng.normal(size=60), "b": b, "b_neg": -b + 0.01 * rng.normal(size=60), "c": c}
    )
    f = rm.CorrelationFilter(threshold=0.9).fit(X, y)
    kept = set(f.get_feature_names_out())
    assert len(kept & {"a", "a_copy"}) == 1 and len(kept & {"b", "b_neg"}) == 1 and "c" in kept
    strength = dict(zip(X.columns, f.strength_))
    for pair in (("a", "a_copy"), ("b", "b_neg")):
        assert max(pair, key=strength.get) in kept


def test_missing_constant_filter():
    X = np.arange(20.0)[:, None].repeat(3, axis=1)
    X[:5, 0] = np.nan  # 25% missing: dropped
    X[:4, 1] = np.nan  # 20% missing: kept
    X[:, 2] = 7.0  # constant
    X[:3, 2] = np.nan  # constant with NaN
    f = rm.MissingConstantFilter(max_missing=0.2).fit(pd.DataFrame(X, columns=["m25", "m20", "const"]))
    assert list(f.get_feature_names_out()) == ["m20"]


def test_pipeline_names_its_lasso_inputs(data, result):
    m = result.fold_models[0]
    assert list(m.pipeline[:-1].get_feature_names_out()) == list(m.pipeline.named_steps["lasso"].feature_names_in_)
    features = data[0]
    p = m.predict(features)
    assert np.array_equal(m.predict(features.iloc[::-1]), p[::-1])  # row order of the frame given
    with pytest.raises(DataError, match="lacks columns"):
        m.predict(features.drop(columns=[m.selected[0]]))


# ------------------------------------------------------------------------------------------- determinism, files
def test_deterministic_and_test_mean_of_fold_models(data, result):
    again = rm.run_radiomics_cv(*data, seed=0)
    for name in ("oof", "test", "test_folds", "external", "external_folds", "selected", "summary"):
        pd.testing.assert_frame_equal(getattr(result, name), getattr(again, name), check_exact=True)
    for split, folds in (("test", "test_folds"), ("external", "external_folds")):
        mean = getattr(result, folds).groupby("patient_id")["p_her2"].mean()
        pred = getattr(result, split).set_index("patient_id")["p_her2"]
        assert list(pred.index) == sorted(pred.index)
        np.testing.assert_allclose(pred.to_numpy(), mean.loc[pred.index].to_numpy(), rtol=0, atol=1e-15)
        assert (getattr(result, split)["fold"] == -1).all()
    assert list(result.oof["patient_id"]) == sorted(result.oof["patient_id"])
    assert len(result.test_folds) == N_FOLDS * len(result.test)


def test_prediction_files_round_trip_and_stale_external_files_go(result, tmp_path):
    paths = rm.write_radiomics_predictions(result, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"radiomics_{k}.csv" for k in ("oof", "test", "test_folds", "external", "external_folds")
    )
    for kind, split in (("oof", "train"), ("test", "test"), ("external", "external")):
        back = read_predictions(prediction_path(tmp_path, "radiomics", kind), split=split)
        pd.testing.assert_frame_equal(back, getattr(result, kind), check_exact=False, rtol=1e-15, atol=0)
        if kind != "oof":
            folds = read_test_folds(prediction_path(tmp_path, "radiomics", f"{kind}_folds"), test=back)
            pd.testing.assert_frame_equal(folds, getattr(result, f"{kind}_folds"), rtol=1e-15, atol=0)
    no_ext = dataclasses.replace(result, external=None, external_folds=None)
    assert len(rm.write_radiomics_predictions(no_ext, tmp_path)) == 3
    assert not prediction_path(tmp_path, "radiomics", "external").exists()
    assert not prediction_path(tmp_path, "radiomics", "external_folds").exists()
    with pytest.raises(ParameterError, match="paper models"):
        rm.write_radiomics_predictions(result, tmp_path, prefix="us")
