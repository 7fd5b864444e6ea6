"""``python -m her2lib.runner --profile paper --dry-run``, reduced for the CPU: the paper's input sizes (256 x 256,
96^3, first-conv stride 1), models (ConvNeXt V2 tiny, 3D ResNet18) and Grad-CAM layers (``stages.3``, ``layer4``),
with batch 2 instead of 16 (a 96^3 batch of 16 needs ~15 GB on a CPU), 2 folds, a small cohort and random weights
(CI is offline: ``pretrained`` off). Training stops after 2 batches of each of 2 epochs (:data:`DRY_RUN`)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from her2lib import contract
from her2lib.runner import pipeline
from her2lib.train import load_fold_model


def test_dry_run_profile_overrides_only_the_run_length():
    prof = pipeline.load_profile("paper")
    dry = pipeline.dry_run_profile(prof)
    assert dry["name"] == "paper-dry-run" and dry["common"]["profile"] == "paper-dry-run"
    for stem, section in prof["notebooks"].items():
        changed = {k for k, v in dry["notebooks"][stem].items() if section.get(k) != v}
        assert changed <= set(pipeline.DRY_RUN.get(stem, {})), (stem, changed)
    assert dry["notebooks"]["03_train_us"]["lr"] == 2e-5 and dry["notebooks"]["04_train_mri"]["conv1_t_stride"] == 1
    assert prof["notebooks"]["03_train_us"]["epochs"] == 300  # the profile itself is untouched


@pytest.fixture(scope="module")
def paper_dry_run(module_tmp_path):
    root = module_tmp_path
    prof = yaml.safe_load((pipeline.CONFIG_DIR / "paper.yaml").read_text())
    prof["common"]["cohort_dir"] = str(root / "cohort")
    nb = prof["notebooks"]
    nb["00_cohort"].update(n_patients=48, us_shape=[160, 192], mri_shape=[24, 64, 64], check_files="header")
    nb["02_preprocess"]["n_folds"] = 2
    nb["03_train_us"].update(batch_size=2, pretrained=False)
    nb["04_train_mri"].update(batch_size=2)
    path = root / "paper.yaml"
    path.write_text(yaml.safe_dump(prof))
    return pipeline.run_pipeline(path, root / "out", dry_run=True)


def test_paper_dry_run_runs_every_notebook_at_paper_sizes(paper_dry_run):
    out = paper_dry_run
    prov = json.loads((out / "provenance.json").read_text())
    assert [n["status"] for n in prov["notebooks"].values()] == ["ok"] * 8
    for key, size, shape in (("dl_us", 256, (1, 1, 256, 256)), ("dl_mri", 96, (1, 1, 96, 96, 96))):
        cfg = json.loads((out / "models" / key / "config.json").read_text())
        assert cfg["config"]["image_size"] == size and cfg["training"]["max_steps"] == 2
        assert cfg["training"]["epochs"] == 2 and cfg["training"]["batch_size"] == 2
        model = load_fold_model(out / "models" / key, 0)
        with torch.no_grad():
            assert model(torch.zeros(shape)).shape == (1, 2)
        history = pd.read_csv(out / "models" / key / "metrics.csv")
        assert sorted(set(history.epoch)) == [1, 2] and set(history.fold) == {0, 1}
    assert json.loads((out / "models" / "dl_mri" / "config.json").read_text())["config"]["conv1_t_stride"] == 1
    for prefix in ("us", "mri", "fusion"):
        contract.read_predictions(out / "predictions" / f"{prefix}_test.csv", "test")
    energy = pd.read_csv(out / "tables" / "gradcam_energy.csv")
    assert energy["patient_id"].nunique() >= 2
    params = json.loads((out / "params" / "07_gradcam.json").read_text())
    assert params["mri_target_layer"] == "layer4" and params["us_target_layer"] == "stages.3"  # paper-size layers
    for fig in ("roc.png", "gradcam_us.png", "gradcam_mri.png"):
        assert (out / "figures" / fig).stat().st_size > 10_000
