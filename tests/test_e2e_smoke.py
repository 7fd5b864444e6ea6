"""End to end: the smoke profile through every numbered notebook, from one command, in a temporary folder
(the session-wide ``smoke_run`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from her2lib.runner import pipeline

pytestmark = pytest.mark.e2e

EXPECTED = [
    "tables/table1_clinical.csv",
    "tables/table2_us.csv",
    "tables/table3_mri.csv",
    "tables/performance.csv",
    "tables/delong.csv",
    "figures/roc.png",
    "figures/performance.png",
    "figures/gradcam_us.png",
    "figures/gradcam_mri.png",
    "predictions/us_oof.csv",
    "predictions/us_test.csv",
    "predictions/mri_oof.csv",
    "predictions/mri_test.csv",
    "predictions/fusion_test.csv",
    "provenance.json",
    "index.html",
]


def test_smoke_profile_writes_every_paper_output(smoke_run):
    out = smoke_run
    missing = [p for p in EXPECTED if not (out / p).is_file()]
    assert not missing, f"missing outputs: {missing}"
    for nb in pipeline.list_notebooks():
        assert (out / "notebooks" / nb.name).is_file(), nb.name
    prov = json.loads((out / "provenance.json").read_text())
    assert all(rec["status"] == "ok" for rec in prov["notebooks"].values())
    assert prov["cohort"]["n_files"] > 0


def test_smoke_predictions_follow_the_contract(smoke_run):
    out = smoke_run
    manifest = pd.read_csv(json.loads((out / "provenance.json").read_text())["cohort"]["manifest"])
    train_ids = set(manifest.loc[manifest.split == "train", "patient_id"])
    test_ids = set(manifest.loc[manifest.split == "test", "patient_id"])
    for model in ("us", "mri"):
        oof = pd.read_csv(out / "predictions" / f"{model}_oof.csv")
        test = pd.read_csv(out / "predictions" / f"{model}_test.csv")
        assert list(oof.columns) == ["patient_id", "split", "fold", "her2", "p_her2"]
        assert set(oof.patient_id) == train_ids and set(test.patient_id) == test_ids
        assert set(oof.fold) <= {0, 1, 2, 3} and set(test.fold) == {-1}
        assert oof.p_her2.between(0, 1).all() and test.p_her2.between(0, 1).all()
    fusion = pd.read_csv(out / "predictions" / "fusion_test.csv")
    assert set(fusion.patient_id) == test_ids
    perf = pd.read_csv(out / "tables" / "performance.csv")
    assert len(perf) == 3
