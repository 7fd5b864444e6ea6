"""Single-modality cohorts (MRI-only imports such as MAMA-MIA and Duke, or US-only): every step that needs an
absent modality is skipped with a notice, and the rest of the pipeline runs unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from her2lib import evaluate, roi, stages, stats, synth, train
from her2lib.io import write_csv
from her2lib.runner import notebook as nb
from her2lib.runner import pipeline
from her2lib.stages import RunDirs
from her2lib.stages.cohort import cohort_tables


def _cohort(n_train: int = 24, n_test: int = 8, us: bool = False, mri: bool = True) -> pd.DataFrame:
    n = n_train + n_test
    df = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "split": ["train"] * n_train + ["test"] * n_test,
            "her2": [i % 2 for i in range(n)],
        }
    )
    for m, have in (("us", us), ("mri", mri)):
        df[f"{m}_image"] = [f"/x/{m}{i}.img" if have else "" for i in range(n)]
        df[f"{m}_mask"] = [f"/x/{m}{i}.msk" if have else "" for i in range(n)]
    return df


def _write_preds(pdir, prefix: str, cohort: pd.DataFrame, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = cohort["her2"].to_numpy()
    p = np.clip(0.3 * y + 0.7 * rng.random(len(y)), 0.01, 0.99)
    df = cohort[["patient_id", "split"]].assign(fold=-1, her2=y, p_her2=p)
    tr = df["split"] == "train"
    df.loc[tr, "fold"] = np.arange(tr.sum()) % 4
    cols = ["patient_id", "split", "fold", "her2", "p_her2"]
    write_csv(pdir / f"{prefix}_oof.csv", df.loc[tr, cols])
    write_csv(pdir / f"{prefix}_test.csv", df.loc[~tr, cols])


@pytest.fixture()
def run(tmp_path) -> RunDirs:
    return RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")


# ------------------------------------------------------------------------------------------------ nb helpers
def test_modality_present_prints_a_notice_when_absent(capsys):
    df = _cohort(us=False, mri=True)
    assert stages.modality_present(df, "mri") is True
    assert capsys.readouterr().out == ""
    assert stages.modality_present(df, "us") is False
    assert "No ultrasound images in this cohort: DL-US is skipped" in capsys.readouterr().out
    assert stages.modality_present(df, "us", quiet=True) is False
    assert capsys.readouterr().out == ""


def test_modality_present_rejects_unknown_modality():
    with pytest.raises(ValueError, match="modality='ct' is not supported; choose one of \\['us', 'mri'\\]"):
        stages.modality_present(_cohort(), "ct")


def test_get_and_show_image_tolerate_skipped_steps(tmp_path, capsys):
    assert nb.get(None, "summary") is None
    assert nb.get(pd.DataFrame({"a": [1]}), "shape") == (1, 1)
    assert nb.show_image(tmp_path / "gradcam_us.png") is None
    assert "gradcam_us.png was not made" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ training
def test_train_modality_skips_an_absent_modality_and_removes_stale_predictions(run, capsys):
    from her2lib.figures.training import plot_learning_curves
    from her2lib.stages.training import train_modality

    cohort = _cohort(us=False, mri=True)
    _write_preds(run.predictions, "us", cohort)  # left over from an earlier run in the same folder
    write_csv(run.tables / "dl_us_folds.csv", pd.DataFrame({"fold": [0]}))
    rep = run.repeat(1)  # and from a repetition of a repeated cross-validation
    (rep.predictions / "folds.csv").write_text("patient_id\n")
    _write_preds(rep.predictions, "us", cohort)
    spec = roi.PreprocessSpec(us_size=16, mri_size=8)
    out = train_modality(run, cohort, "us", spec, object(), object())
    assert out is None
    assert "No ultrasound images in this cohort" in capsys.readouterr().out
    assert not (run.predictions / "us_oof.csv").exists() and not (run.predictions / "us_test.csv").exists()
    assert not (run.tables / "dl_us_folds.csv").exists()
    assert not list(rep.predictions.glob("us_*")) and (rep.predictions / "folds.csv").exists()
    assert not (run.models / "dl_us").exists()
    assert train.oof_performance(None) is None
    assert plot_learning_curves(None) is None


def test_train_modality_rejects_unknown_modality_and_a_mismatched_config(run):
    from her2lib import models
    from her2lib.stages.training import train_modality

    with pytest.raises(ValueError, match="modality='ct' is not supported; choose one of \\['us', 'mri'\\]"):
        train_modality(run, _cohort(), "ct", None, None, None)
    with pytest.raises(ValueError, match="trains dl_mri, but the model configuration is DLUSConfig"):
        train_modality(run, _cohort(), "mri", None, models.DLUSConfig(), train.PAPER_TRAINING["dl_mri"])


# ------------------------------------------------------------------------------------------------ fusion
def test_run_fusion_skips_without_both_models(run, capsys):
    from her2lib.stages.fusion import run_fusion

    cohort = _cohort()
    _write_preds(run.predictions, "mri", cohort)
    rep = run.repeat(2)  # a repetition of an earlier repeated cross-validation
    (rep.predictions / "folds.csv").write_text("patient_id\n")
    for r in (run, rep):
        for stale in ("fusion_oof.csv", "fusion_test.csv", "fusion_external.csv"):
            (r.predictions / stale).write_text("stale")
        (r.tables / "fusion_protocols.csv").write_text("stale")
    assert run_fusion(run) is None
    assert "the fusion is skipped" in capsys.readouterr().out
    for r in (run, rep):
        assert not list(r.predictions.glob("fusion_*")) and not list(r.tables.glob("fusion_*"))


# ------------------------------------------------------------------------------------------------ evaluation
def test_models_to_evaluate_follows_the_prediction_files(run, capsys):
    from her2lib.stages.evaluation import models_to_evaluate

    cohort = _cohort()
    assert models_to_evaluate(run, quiet=True) == [] and evaluate.available_models(run.predictions) == []
    _write_preds(run.predictions, "mri", cohort)
    assert models_to_evaluate(run) == ["dl_mri"]
    out = capsys.readouterr().out
    assert "DL-US, DL-US&MRI" in out and "no DeLong comparison" in out
    _write_preds(run.predictions, "us", cohort, seed=1)
    assert models_to_evaluate(run, quiet=True) == ["dl_us", "dl_mri"]
    assert capsys.readouterr().out == ""


def test_run_evaluation_with_one_model(run):
    from her2lib.stages.evaluation import run_evaluation

    cohort = _cohort()
    _write_preds(run.predictions, "mri", cohort)
    (run.tables / "fusion_protocols.csv").write_text("stale")  # ignored without fusion predictions
    ev = run_evaluation(run, n_bins=3, n_boot=20, dpi=50)
    assert ev.performance["label"].tolist() == ["DL-MRI"]
    assert list(ev.delong.columns) == evaluate.DELONG_COLUMNS and len(ev.delong) == 0
    assert "DL-MRI achieved" in ev.text and "compared with the DeLong test" not in ev.text
    assert "Refitting" not in ev.text  # no fusion protocol sentence without fusion predictions
    assert (run.figures / "roc.png").is_file()


def test_run_evaluation_without_predictions_raises(run):
    from her2lib.stages.evaluation import run_evaluation

    with pytest.raises(ValueError, match="no prediction files"):
        run_evaluation(run)


def test_delong_only_for_pairs_that_exist(run):
    cohort = _cohort()
    _write_preds(run.predictions, "us", cohort)
    _write_preds(run.predictions, "mri", cohort, seed=1)
    preds = evaluate.load_predictions(run.predictions, ["dl_us", "dl_mri"])
    dl = evaluate.delong_table(preds)
    assert dl[["model_a", "model_b"]].values.tolist() == [["DL-US", "DL-MRI"]]


# ------------------------------------------------------------------------------------------------ Grad-CAM
def test_gradcam_available_models(run, capsys):
    from her2lib.stages.gradcam import available_models

    cohort = _cohort()
    (run.figures / "gradcam_us.png").write_bytes(b"stale")
    _write_preds(run.predictions, "mri", cohort)
    (run.models / "dl_mri").mkdir(parents=True)
    (run.models / "dl_mri" / "fold0.pt").write_bytes(b"")
    assert available_models(run, quiet=True) == ["dl_mri"]
    assert capsys.readouterr().out == "" and not (run.figures / "gradcam_us.png").exists()
    (run.figures / "gradcam_us.png").write_bytes(b"stale")
    assert available_models(run) == ["dl_mri"]
    assert "Grad-CAM for DL-US is skipped" in capsys.readouterr().out
    assert not (run.figures / "gradcam_us.png").exists()


# ------------------------------------------------------------------------------------------------ preprocessing
def test_box_table_with_one_modality():
    cohort = _cohort(n_train=2, n_test=1)
    boxes = [((0, 4), (1, 5), (2, 8))] * 3
    tab = roi.box_table(cohort, None, boxes)
    assert "us_h_px" not in tab.columns and tab["mri_w_vox"].tolist() == [6, 6, 6]
    assert list(roi.box_summary(tab).columns) == ["mri_d_vox", "mri_h_vox", "mri_w_vox"]
    assert roi.roi_boxes(cohort, {"mri": (None, None, boxes)}).equals(tab)
    with pytest.raises(ValueError, match="no boxes"):
        roi.box_table(cohort, None, None)


def test_preprocess_modalities_skips_absent(run, capsys):
    from her2lib.stages.preprocess import preprocess_modalities

    cohort = _cohort(us=False, mri=False)
    write_csv(run.tables / "roi_boxes.csv", pd.DataFrame({"patient_id": ["P000"]}))  # an earlier run's
    out = preprocess_modalities(run, cohort, roi.PreprocessSpec(), n_folds=4)
    assert out.inputs == {} and out.boxes is None
    assert (out.folds[cohort["split"] == "test"] == -1).all() and (run.predictions / "folds.csv").is_file()
    assert not (run.tables / "roi_boxes.csv").exists()
    printed = capsys.readouterr().out
    assert "No ultrasound images" in printed and "No MRI images" in printed


# ------------------------------------------------------------------------------------------------ cohort tables
def test_cohort_tables_leave_out_missing_columns(run, capsys):
    df = synth.make_table(60, seed=0)
    df = df.drop(columns=["age"])
    tables = cohort_tables(run, df)
    assert tables.absent == ["Age"] and "for 1 variable(s) of Tables 1-3" in capsys.readouterr().out
    assert "age" not in set(tables["table1_clinical"]["variable"])
    assert "age" not in set(tables["tests"]["variable"])
    assert len(tables["table3_mri"]) > 0
    assert stats.cohort_tables(df).absent == ["Age"] and capsys.readouterr().out == ""  # science prints nothing


def test_cohort_tables_with_a_whole_table_missing(run, capsys):
    df = synth.make_table(60, seed=0)
    us_cols = [v.column for v in stats.paper_variables("table2_us")]
    tables = cohort_tables(run, df.drop(columns=us_cols))
    assert tables.empty == ["table2_us", "table2_us_by_her2"]  # by split and by HER2 status
    out = capsys.readouterr().out
    assert "table2_us: none of its variables" in out and "table2_us_by_her2: none of its variables" in out
    assert len(tables["table2_us"]) == 0 and "P" in tables["table2_us"].columns
    assert pd.read_csv(run.tables / "table2_us.csv").shape == (0, len(tables["table2_us"].columns))
    assert len(tables["table3_mri"]) > 0


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.e2e
def test_mri_only_cohort_runs_end_to_end(tmp_path):
    prof = yaml.safe_load((pipeline.CONFIG_DIR / "smoke.yaml").read_text())
    knobs = prof["notebooks"]["00_cohort"]
    full = synth.make_cohort(
        tmp_path / "full",
        n_patients=knobs["n_patients"],
        seed=0,
        us_shape=knobs["us_shape"],
        mri_shape=knobs["mri_shape"],
        n_jobs=knobs["n_jobs"],
    )
    man = pd.read_csv(full, dtype=str, keep_default_na=False)
    for col in ("mri_image", "mri_mask"):
        man[col] = "../full/" + man[col]
    man["us_image"] = ""
    man["us_mask"] = ""
    (tmp_path / "mri_only").mkdir()
    write_csv(tmp_path / "mri_only" / "manifest.csv", man)
    prof["common"]["cohort_dir"] = str(tmp_path / "mri_only")
    prof["notebooks"]["00_cohort"]["source"] = "manifest"
    prof["notebooks"]["04_train_mri"].update(epochs=1, checkpoint_every=1)  # keep the test short
    prof["notebooks"]["07_gradcam"]["max_patients"] = 2
    path = tmp_path / "mri_only.yaml"
    path.write_text(yaml.safe_dump(prof))
    out = pipeline.run_pipeline(path, tmp_path / "out")
    pred = out / "predictions"
    assert (pred / "mri_oof.csv").is_file() and (pred / "mri_test.csv").is_file()
    assert not list(pred.glob("us_*.csv")) and not list(pred.glob("fusion_*.csv"))
    perf = pd.read_csv(out / "tables" / "performance.csv")
    assert perf["label"].tolist() == ["DL-MRI"]
    assert (out / "figures" / "gradcam_mri.png").is_file() and not (out / "figures" / "gradcam_us.png").exists()
    executed = (out / "notebooks" / "03_train_us.ipynb").read_text()
    assert "No ultrasound images in this cohort: DL-US" in executed
    assert "fusion is skipped" in (out / "notebooks" / "05_fusion.ipynb").read_text()


def test_cohort_hash_accepts_files_beside_the_cohort_folder(tmp_path):
    from her2lib.runner import provenance

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.nii.gz").write_bytes(b"abc")
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "manifest.csv").write_text("patient_id,mri_image\nP1,../src/a.nii.gz\n")
    rec = provenance.cohort_hash(tmp_path / "cohort")
    assert rec["n_files"] == 1 and rec["n_missing"] == 0 and len(rec["files_sha256"]) == 64
