"""Training for the class tasks (issue 13): folds stratified on the task's label, models with one logit per class,
selection on the macro AUC, prediction files of the class tasks, and the binary path left as it was."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from her2lib import contract, data, models, train
from her2lib.errors import DataError, ParameterError, UndefinedMetricWarning

US = replace(train.PAPER_TRAINING["dl_us"], epochs=2, lr=1e-3, batch_size=4, mixup=True)


def _cohort(n_per_class=(8, 8, 8), n_test=(2, 2, 2), seed=0) -> pd.DataFrame:
    """Patients of three HER2 classes (``her2`` consistent with ``her2_class``), training then test rows."""
    rows = []
    for split, counts in (("train", n_per_class), ("test", n_test)):
        for cls, n in zip(contract.HER2_CLASSES, counts):
            rows += [{"split": split, "her2_class": cls, "her2": int(cls == "positive")}] * n
    df = pd.DataFrame(rows)
    df.insert(0, "patient_id", [f"P{i:03d}" for i in range(len(df))])
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)  # row order must not matter


def _inputs(df: pd.DataFrame, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(df), 1, 32, 32)).astype(np.float32)
    for j, cls in enumerate(contract.HER2_CLASSES):
        x[df.her2_class.to_numpy() == cls, :, 8:24, 8:24] += j
    return x


def test_class_epoch_metrics_match_scikit_learn():
    """Reference: scikit-learn 1.9 (macro one-vs-rest AUC, balanced accuracy, macro F1), to 1e-12."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    met = train.runtime.class_epoch_metrics(y, p)
    assert met["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert met["recall"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)), abs=1e-12)
    assert met["f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"), abs=1e-12)
    two = train.runtime.class_epoch_metrics(y % 2, np.c_[1 - p[:, 0], p[:, 0]])
    assert two["auc"] == pytest.approx(train.epoch_metrics(y % 2, p[:, 0])["auc"], abs=1e-15)
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(train.runtime.class_epoch_metrics(np.zeros(5, int), p[:5])["auc"])


def test_folds_are_stratified_on_the_task_label():
    df = _cohort((9, 13, 10), (3, 3, 3))
    f = train.assign_folds(df, n_folds=4, seed=0, label="her2_class")
    tr = df.split == "train"
    per_fold = pd.crosstab(f[tr], df.loc[tr, "her2_class"])
    assert (per_fold.max() - per_fold.min() <= 1).all()  # every class spread evenly over the folds
    binary = train.assign_folds(df, n_folds=4, seed=0)  # stratified on her2 (zero and low mixed)
    assert not f.equals(binary)
    with pytest.raises(DataError, match="her2_class counts"):
        train.assign_folds(_cohort((8, 3, 8)), n_folds=4, label="her2_class")


def test_three_class_cv_writes_class_prediction_files(tmp_path):
    df = _cohort()
    x = _inputs(df)
    folds = train.assign_folds(df, n_folds=2, seed=0, label="her2_class")
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32, num_classes=3)
    res = train.run_cv(df, x, cfg, US, folds, tmp_path / "m", progress=False, task="three-class")
    assert res.task == "three-class"
    oof = contract.validate_class_predictions(res.oof, "three-class", split="train")  # probabilities sum to 1 etc.
    test = contract.validate_class_predictions(res.test, "three-class", split="test")
    assert list(res.oof.columns) == list(contract.class_prediction_columns("three-class"))
    assert len(oof) == 24 and len(test) == 6 and set(oof.fold) == {0, 1}
    ids = df.set_index("patient_id")
    assert (oof.her2_class.to_numpy() == ids.loc[oof.patient_id, "her2_class"].to_numpy()).all()
    # the fold mean of the per-fold-model test probabilities is the test file (the contract's reader checks it)
    paths = train.write_predictions(res, tmp_path / "pred", "us")
    tf = contract.read_class_test_folds(paths[-1], "three-class", test)
    assert len(tf) == 12 and list(tf.columns) == list(contract.class_test_fold_columns("three-class"))
    # each fold model's probabilities are the softmax of its three logits
    m1 = train.load_fold_model(tmp_path / "m", 1)
    xt = torch.as_tensor(x[df.split.to_numpy() == "test"])
    ref = train.predict_proba(m1, xt, all_classes=True)
    got = tf[tf.model_fold == 1].set_index("patient_id").loc[df.loc[df.split == "test", "patient_id"]]
    np.testing.assert_allclose(got[["p_zero", "p_low", "p_positive"]].to_numpy(), ref, atol=1e-12)
    cfg_json = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg_json["task"] == "three-class" and cfg_json["config"]["num_classes"] == 3
    assert {"val_auc", "val_loss"} <= set(res.history.columns) and res.history.val_auc.notna().all()
    assert set(train.oof_performance(res)) == {"auc", "accuracy", "recall", "f1"}


def test_low_vs_zero_trains_on_her2_negatives_only(tmp_path):
    df = _cohort((8, 8, 8), (2, 2, 2))
    df["her2_ihc"] = df.her2_class.map({"zero": "0", "low": "1+", "positive": "3+"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no patient is left out for an undefined class
        neg = data.task_cohort(df, "low-vs-zero")
    assert set(neg.her2_class) == {"zero", "low"} and (neg.her2 == 0).all()
    folds = train.assign_folds(neg, n_folds=2, seed=0, label="her2_class")
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    res = train.run_cv(neg, _inputs(neg), cfg, US, folds, tmp_path / "m", progress=False, task="low-vs-zero")
    assert list(res.oof.columns) == list(contract.class_prediction_columns("low-vs-zero"))
    assert set(res.oof.her2_class) == {"zero", "low"} and len(res.oof) == 16


def test_the_model_must_have_one_logit_per_class(tmp_path):
    df = _cohort()
    folds = train.assign_folds(df, n_folds=2, seed=0, label="her2_class")
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)  # two logits
    with pytest.raises(ParameterError, match="num_classes=3"):
        train.run_cv(df, _inputs(df), cfg, US, folds, tmp_path / "m", progress=False, task="three-class")
    with pytest.raises(ParameterError, match="2 logits"):
        models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", image_size=32, num_classes=4))


def test_task_cohort_rejects_what_it_cannot_train():
    df = _cohort()
    with pytest.raises(DataError, match="needs the HER2 class"):
        data.task_cohort(df.drop(columns="her2_class"), "three-class")
    few = _cohort((8, 2, 8))
    with pytest.raises(DataError, match="train/low: 2"):
        data.task_cohort(few, "three-class")
    undefined = _cohort()
    undefined.loc[0, "her2_class"] = None
    with pytest.warns(data.CohortWarning, match=undefined.patient_id[0]):
        out = data.task_cohort(undefined, "three-class")
    assert undefined.patient_id[0] in out.attrs["task_excluded"] and len(out) == len(undefined) - 1
    assert data.task_cohort(df, "binary") is df


def test_binary_cv_without_test_patients_gives_an_empty_test_table(tmp_path):
    df = _cohort((6, 6, 6), (0, 0, 0))
    folds = train.assign_folds(df, n_folds=2, seed=0)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    res = train.run_cv(df, _inputs(df), cfg, replace(US, epochs=1), folds, tmp_path / "m", progress=False)
    assert len(res.test) == 0 and list(res.test.columns) == list(contract.PREDICTION_COLUMNS)


def test_training_refuses_folds_of_another_task(tmp_path):
    df = _cohort()
    binary = train.assign_folds(df, n_folds=2, seed=0)
    train.write_folds(tmp_path / "binary.csv", df, binary)
    with pytest.raises(DataError, match="stratified on 'her2'.*re-run 02_preprocess with the same task"):
        train.read_folds(tmp_path / "binary.csv", df, label="her2_class")
    classes = train.assign_folds(df, n_folds=2, seed=0, label="her2_class")
    train.write_folds(tmp_path / "classes.csv", df, classes, label="her2_class")
    assert train.read_folds(tmp_path / "classes.csv", df, label="her2_class").equals(classes)
    with pytest.raises(DataError, match="stratified on 'her2_class'"):
        train.read_folds(tmp_path / "classes.csv", df)
    relabelled = df.assign(her2_class=df.her2_class.replace({"zero": "low", "low": "zero"}))
    with pytest.raises(DataError, match="split/her2_class differ"):
        train.read_folds(tmp_path / "classes.csv", relabelled, label="her2_class")
