"""Adapters on tiny fixture trees in the exact MAMA-MIA and Duke layouts (created here), and the prepare_cohort
stage of notebook 00."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from her2lib import adapters
from her2lib.data import CohortWarning, DataError, load_cohort, read_image, write_nifti
from her2lib.errors import ParameterError
from her2lib.stages.cohort import SOURCES, prepare_cohort


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------ MAMA-MIA
@pytest.fixture()
def mama_tree(tmp_path) -> Path:
    src = tmp_path / "MAMA-MIA"
    rng = np.random.default_rng(0)
    ids = [f"DUKE_{i:03d}" for i in range(1, 9)] + ["ISPY1_1001", "NACT_01"]
    her2 = [0, 1, 0, 1, 0, 1, 0, 1, None, 1]
    rows = []
    for pid, h in zip(ids, her2):
        rows.append(
            {
                "patient_id": pid,
                "dataset": pid.split("_")[0],
                "age": 40 + len(rows),
                "er": len(rows) % 2,
                "pr": 0,
                "her2": h,
                "hr": np.nan,
            }
        )
        if pid == "NACT_01":
            continue  # no images: must be skipped and reported
        vol = rng.integers(0, 500, size=(6, 10, 12)).astype(np.int16)
        for k in range(3):
            write_nifti(src / "images" / pid.lower() / f"{pid.lower()}_{k:04d}.nii.gz", vol + 100 * k, (2.0, 0.8, 0.8))
        m = np.zeros((6, 10, 12), np.uint8)
        m[2:4, 3:6, 4:8] = 1
        write_nifti(src / "segmentations" / "expert" / f"{pid.lower()}.nii.gz", m, (2.0, 0.8, 0.8))
    with pd.ExcelWriter(src / "clinical_and_imaging_info.xlsx") as xw:
        pd.DataFrame(rows).to_excel(xw, sheet_name="dataset_info", index=False)
        pd.DataFrame({"x": [1]}).to_excel(xw, sheet_name="other", index=False)
    return src


@pytest.mark.parametrize("copy_images", [False, True])
def test_import_mama_mia(mama_tree, tmp_path, copy_images):
    before = _snapshot(mama_tree)
    man = adapters.import_mama_mia(mama_tree, tmp_path / "cohort", seed=0, copy_images=copy_images, test_fraction=0.25)
    assert _snapshot(mama_tree) == before  # the source is never touched
    with pytest.warns(CohortWarning, match="us: 8/8 patients without images"):
        df = load_cohort(man)
    assert list(df["patient_id"]) == sorted(f"DUKE_{i:03d}" for i in range(1, 9))
    assert df["her2"].tolist() == [0, 1] * 4
    assert set(df["split"]) == {"train", "test"} and (df["split"] == "test").sum() == 2
    img, sp = read_image(df["mri_image"].iloc[0])
    assert img.shape == (6, 10, 12) and sp == pytest.approx((2.0, 0.8, 0.8))
    assert img.min() >= 100  # phase 1 = first post-contrast (+100 in the fixture)
    assert df["hr"].tolist() == df["er"].tolist()  # hr derived from er/pr
    assert (df["triple_negative"] == ((df["her2"] == 0) & (df["hr"] == 0)).astype(int)).all()
    rep = pd.read_csv(man.parent / "import_report.csv")
    assert set(rep["patient_id"]) == {"ISPY1_1001", "NACT_01"}
    assert rep.set_index("patient_id").loc["NACT_01", "reason"].startswith("missing image")
    if copy_images:
        assert Path(df["mri_image"].iloc[0]).parent == man.parent.resolve() / "mri"


def test_mama_mia_errors(mama_tree, tmp_path):
    with pytest.raises(DataError, match="outside the source"):
        adapters.import_mama_mia(mama_tree, mama_tree / "out")
    with pytest.raises(DataError, match="clinical table not found"):
        adapters.import_mama_mia(tmp_path, tmp_path.parent / "elsewhere_out")
    with pytest.raises(DataError, match="source folder not found"):
        adapters.import_mama_mia(tmp_path / "missing", tmp_path / "o")


# ------------------------------------------------------------------ Duke
def _write_dicom(path: Path, arr: np.ndarray, pid: str, desc: str, series_no: int, inst: int, z: float) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesDescription = "MR", pid, desc
    ds.SeriesNumber, ds.InstanceNumber = series_no, inst
    ds.ImagePositionPatient, ds.PixelSpacing, ds.SliceThickness = [0.0, 0.0, z], [0.7, 0.6], 1.5
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture()
def duke_tree(tmp_path) -> Path:
    import openpyxl

    src = tmp_path / "duke"
    pids = [f"Breast_MRI_{i:03d}" for i in range(1, 7)]
    her2 = [0, 1, 0, 1, 1, "NA"]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Patient Information", None, "Tumor Characteristics", None, None])
    ws.append(["Patient ID", "Date of Birth (Days)", "ER", "PR", "HER2"])
    ws.append([None, "(days before MRI)", "{0 = neg, 1 = pos}", "{0 = neg, 1 = pos}", "{0 = neg, 1 = pos}"])
    for i, (pid, h) in enumerate(zip(pids, her2)):
        ws.append([pid, -365.25 * (40 + i), i % 2, 0, h])
    wb.save(src.mkdir(parents=True) or src / "Clinical_and_Other_Features.xlsx")
    wb2 = openpyxl.Workbook()
    ws2 = wb2.active
    ws2.append(["Patient ID", "Start Row", "End Row", "Start Column", "End Column", "Start Slice", "End Slice"])
    for pid in pids[:5]:  # patient 6 has no label anyway
        ws2.append([pid, 3, 6, 2, 5, 2, 3])
    wb2.save(src / "Annotation_Boxes.xlsx")
    rng = np.random.default_rng(1)
    for pid in pids[:5]:
        study = src / "Duke-Breast-Cancer-MRI" / pid / "01-01-1990-NA-MRI BREAST-12345"
        for sno, desc, off in ((2, "ax dyn pre", 0), (3, "ax dyn 1st pass", 1000)):
            if pid == "Breast_MRI_005" and sno == 3:
                continue  # no post-contrast series: skipped
            for k in range(4):  # write slices in reverse order to test the sorting
                arr = rng.integers(0, 50, size=(8, 9)) + off + 10 * k
                _write_dicom(
                    study / f"{sno}.000000-{desc}-{sno}1" / f"1-{4 - k:02d}.dcm", arr, pid, desc, sno, k + 1, 1.5 * k
                )
    return src


def test_import_duke(duke_tree, tmp_path):
    before = _snapshot(duke_tree)
    man = adapters.import_duke(duke_tree, tmp_path / "duke_cohort", test_fraction=0.25, seed=1)
    assert _snapshot(duke_tree) == before
    with pytest.warns(CohortWarning):
        df = load_cohort(man)
    assert list(df["patient_id"]) == [f"Breast_MRI_{i:03d}" for i in range(1, 5)]
    assert df["her2"].tolist() == [0, 1, 0, 1]
    vol, sp = read_image(df["mri_image"].iloc[0])
    assert vol.shape == (4, 8, 9) and sp == pytest.approx((1.5, 0.7, 0.6))
    assert vol.min() >= 1000  # the 1st-pass series was chosen
    assert np.all(np.diff(vol.mean(axis=(1, 2))) > 0)  # slices sorted by InstanceNumber
    mask, _ = read_image(df["mri_mask"].iloc[0])
    assert mask.sum() == 2 * 4 * 4 and mask[1:3, 2:6, 1:5].all()  # 1-based inclusive box
    assert df["age"].tolist() == [40.0, 41.0, 42.0, 43.0]
    rep = pd.read_csv(man.parent / "import_report.csv").set_index("patient_id")["reason"]
    assert "no series matches" in rep["Breast_MRI_005"] and "is not 0/1" in rep["Breast_MRI_006"]


def test_duke_missing_tables(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match="Duke table not found"):
        adapters.import_duke(tmp_path / "src", tmp_path / "out")


# ------------------------------------------------------------------ prepare_cohort
def test_prepare_cohort_synthetic_reuses_and_rebuilds(tmp_path):
    knobs = dict(us_shape=(64, 64), mri_shape=(8, 16, 16))
    man = prepare_cohort(tmp_path / "c", source="synthetic", n_patients=20, seed=0, progress=False, **knobs)
    stamp = man.stat().st_mtime_ns
    assert (
        prepare_cohort(tmp_path / "c", source="synthetic", n_patients=20, seed=0, progress=False, **knobs)
        .stat()
        .st_mtime_ns
        == stamp
    )  # reused
    prepare_cohort(
        tmp_path / "c", source="synthetic", n_patients=20, seed=0, progress=False, **{**knobs, "her2_signal": 1.0}
    )
    assert json.loads((tmp_path / "c" / "synth_params.json").read_text())["her2_signal"] == 1.0
    assert prepare_cohort(tmp_path / "c", source="manifest") == man


def test_prepare_cohort_errors(tmp_path):
    assert SOURCES == ("synthetic", "manifest", "mama-mia", "duke")
    with pytest.raises(ParameterError, match="source='mama_mia' is not supported.*Did you mean 'mama-mia'"):
        prepare_cohort(tmp_path, source="mama_mia")
    with pytest.raises(ParameterError, match="needs source_dir"):
        prepare_cohort(tmp_path, source="duke")
    with pytest.raises(DataError, match="must hold manifest.csv"):
        prepare_cohort(tmp_path, source="manifest")


def test_prepare_cohort_reuses_a_current_import(mama_tree, tmp_path):
    man = prepare_cohort(tmp_path / "c", source="mama-mia", source_dir=mama_tree, seed=0)
    stamp = man.stat().st_mtime_ns
    assert prepare_cohort(tmp_path / "c", source="mama-mia", source_dir=mama_tree, seed=0).stat().st_mtime_ns == stamp
    prepare_cohort(tmp_path / "c", source="mama-mia", source_dir=mama_tree, seed=1)
    assert json.loads((tmp_path / "c" / "import_params.json").read_text())["seed"] == 1


def test_mama_mia_collections_as_the_external_cohort(mama_tree, tmp_path):
    xlsx = mama_tree / "clinical_and_imaging_info.xlsx"
    clin = pd.read_excel(xlsx, sheet_name="dataset_info")
    clin.loc[clin["patient_id"].isin([f"DUKE_{i:03d}" for i in range(5, 9)]), "dataset"] = "ISPY2"
    with pd.ExcelWriter(xlsx) as xw:
        clin.to_excel(xw, sheet_name="dataset_info", index=False)
    man = adapters.import_mama_mia(mama_tree, tmp_path / "cohort", test_fraction=0.25, external_datasets=["ISPY2"])
    with pytest.warns(CohortWarning):
        df = load_cohort(man)
    ext = df[df["split"] == "external"]
    assert sorted(ext["patient_id"]) == [f"DUKE_{i:03d}" for i in range(5, 9)] and set(ext["site"]) == {"ISPY2"}
    rest = df[df["split"] != "external"]
    assert (rest["site"] == "DUKE").all() and set(rest["split"]) == {"train", "test"}
    assert json.loads((man.parent / "import_params.json").read_text())["external_datasets"] == ["ISPY2"]
    with pytest.raises(DataError, match="not all of them"):
        adapters.import_mama_mia(mama_tree, tmp_path / "c2", external_datasets=["ISPY2", "DUKE"])
    with pytest.raises(ParameterError, match="external_datasets"):
        prepare_cohort(tmp_path / "c3", source="synthetic", external_datasets=["DUKE"])
