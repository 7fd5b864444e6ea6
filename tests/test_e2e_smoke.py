"""End to end: the smoke profile through every numbered notebook, from one command, in a temporary folder
(the session-wide ``smoke_run`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from her2lib.runner import pipeline

pytestmark = pytest.mark.e2e  # smoke_run: the session fixture in conftest.py

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


def test_training_progress_is_logged_per_epoch_and_lands_in_the_notebooks(smoke_run):
    """The runner shows training live from logs/progress.jsonl: one event per fold and epoch of each model (the
    profile's work, folds x epochs), and the same lines are in the executed notebooks."""
    out = smoke_run
    prof = yaml.safe_load((pipeline.CONFIG_DIR / "smoke.yaml").read_text())["notebooks"]
    events = [json.loads(x) for x in (out / "logs" / "progress.jsonl").read_text().splitlines()]
    for stem, label in (("03_train_us", "DL-US"), ("04_train_mri", "DL-MRI")):
        mine = [e for e in events if e.get("model") == label]
        epochs = prof[stem]["epochs"]
        assert [e["event"] for e in mine] == ["start"] + ["epoch"] * (4 * epochs) + ["end"], label
        assert mine[0]["total"] == 4 * epochs
        assert {(e["fold"], e["epoch"]) for e in mine[1:-1]} == {
            (k, ep) for k in range(4) for ep in range(1, epochs + 1)
        }
        cells = json.loads((out / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
        for e in mine[1:-1]:
            assert e["line"] in text, e["line"]
