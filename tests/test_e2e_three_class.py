"""End to end, the three-class task (issue 13): notebooks 02-07 of the smoke profile with ``task: three-class`` on the
smoke run's cohort, through the same runner and the same notebooks as the binary task."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from her2lib import contract
from her2lib.runner import pipeline

TASK_NOTEBOOKS = ("02_preprocess", "03_train_us", "04_train_mri", "05_fusion", "06_evaluation", "07_gradcam")
CLASS_TABLES = ("class_auc", "class_metrics", "decision_rules", "confusion", "low_vs_zero_auc", "class_delong")
CLASS_FIGURES = ("roc_classes", "confusion_matrices", "roc_low_vs_zero", "learning_curve_us", "learning_curve_mri")


@pytest.fixture(scope="module")
def three_class_run(smoke_run, module_tmp_path):
    """Notebooks 02-07 with ``task: three-class`` on the smoke run's cohort (built by notebook 00 of the smoke run)."""
    root = module_tmp_path
    prof = yaml.safe_load((smoke_run.parent / "smoke.yaml").read_text())
    prof["common"]["profile"] = "three_class_smoke"
    for stem in TASK_NOTEBOOKS:
        prof["notebooks"][stem]["task"] = "three-class"
    path = root / "three_class_smoke.yaml"
    path.write_text(yaml.safe_dump(prof))
    return pipeline.run_pipeline(path, root / "out", only=[s[:2] for s in TASK_NOTEBOOKS])


def test_three_class_predictions_follow_the_class_contract(three_class_run):
    pred = three_class_run / "predictions"
    folds = pd.read_csv(pred / "folds.csv", dtype={"patient_id": str})
    assert "her2_class" in folds.columns
    train = folds[folds.split == "train"]
    per_fold = pd.crosstab(train.fold, train.her2_class)  # stratified on the three classes
    assert list(per_fold.columns) == sorted(contract.HER2_CLASSES) and (per_fold.max() - per_fold.min() <= 1).all()
    ids = None
    for prefix in ("us", "mri", "fusion"):
        oof = contract.read_class_predictions(pred / f"{prefix}_oof.csv", "three-class", split="train")
        test = contract.read_class_predictions(pred / f"{prefix}_test.csv", "three-class", split="test")
        tf = contract.read_class_test_folds(pred / f"{prefix}_test_folds.csv", "three-class", test)
        assert tf is not None and set(tf.model_fold) == {0, 1, 2, 3}
        assert (oof.set_index("patient_id").fold == folds.set_index("patient_id").loc[oof.patient_id].fold).all()
        got = (tuple(oof.patient_id), tuple(test.patient_id))
        assert ids is None or got == ids  # the same patients for every model
        ids = got
        p = contract.class_proba(oof, "three-class")
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    for key in ("dl_us", "dl_mri"):
        cfg = json.loads((three_class_run / "models" / key / "config.json").read_text())
        assert cfg["task"] == "three-class" and cfg["config"]["num_classes"] == 3


def test_three_class_tables_and_figures_are_written(three_class_run):
    tables, figures = three_class_run / "tables", three_class_run / "figures"
    for name in CLASS_TABLES:
        assert (tables / f"{name}.csv").is_file(), name
    for name in CLASS_FIGURES:
        assert (figures / f"{name}.png").stat().st_size > 10_000, name
    auc = pd.read_csv(tables / "class_auc.csv")
    assert auc.to_string().count("macro") >= 3  # a macro AUC per model (DL-US, DL-MRI, DL-US&MRI)
    # the binary task's outputs are not made in a class-task run
    assert not (tables / "performance.csv").exists() and not (figures / "roc.png").exists()
    text = (three_class_run / "index.html").read_text(encoding="utf-8")
    assert "confusion_matrices.png" in text and "class_auc.csv" in text
