"""Tests of the data layer: image IO, every load_cohort validation error on broken copies, splits, gallery."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from her2lib import data, synth
from her2lib.contract import PATH_COLUMNS
from her2lib.data import CohortWarning, DataError, load_cohort, read_image, write_nifti, write_png
from her2lib.figures.cohort import cohort_gallery

TINY = dict(n_patients=20, seed=5, us_shape=(64, 80), mri_shape=(12, 24, 24))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth.make_cohort(tmp_path_factory.mktemp("data") / "cohort", **TINY).parent


@pytest.fixture()
def broken(cohort, tmp_path):
    """A fresh copy of the tiny cohort and its manifest table (edit, save, then load)."""
    dst = tmp_path / "copy"
    shutil.copytree(cohort, dst)
    man = pd.read_csv(dst / "manifest.csv", dtype=str, keep_default_na=False)
    return dst, man


def _save(dst: Path, man: pd.DataFrame) -> Path:
    man.to_csv(dst / "manifest.csv", index=False)
    return dst / "manifest.csv"


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------ IO
def test_read_write_roundtrip(tmp_path):
    vol = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    write_nifti(tmp_path / "v.nii.gz", vol, (1.5, 0.7, 0.6))
    arr, sp = read_image(tmp_path / "v.nii.gz")
    assert arr.dtype == np.float32 and arr.shape == (2, 3, 4)
    np.testing.assert_array_equal(arr, vol)
    np.testing.assert_allclose(sp, (1.5, 0.7, 0.6), rtol=1e-6)
    assert data.read_spacing_shape(tmp_path / "v.nii.gz")[0] == (2, 3, 4)
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_png(tmp_path / "i.png", img)
    arr2, sp2 = read_image(tmp_path / "i.png")
    np.testing.assert_array_equal(arr2, img)
    assert sp2 == (1.0, 1.0)
    write_nifti(tmp_path / "two.nii.gz", img, (0.5, 0.25))
    arr3, sp3 = read_image(tmp_path / "two.nii.gz")
    assert arr3.shape == (3, 4) and sp3 == pytest.approx((0.5, 0.25))


@pytest.mark.parametrize("ext", ["jpg", "bmp", "tif", "mha", "nrrd"])
def test_colour_images_of_every_format_read_as_luminance(tmp_path, ext):
    """PNG colour images were converted by Pillow; SimpleITK formats returned (H, W, 3) before read_image-2."""
    import SimpleITK as sitk
    from PIL import Image

    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    grey, _ = read_image(tmp_path / "c.png")
    if ext in ("mha", "nrrd"):
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / f"c.{ext}"))
    else:
        Image.fromarray(rgb).save(tmp_path / f"c.{ext}", quality=100) if ext == "jpg" else Image.fromarray(rgb).save(
            tmp_path / f"c.{ext}"
        )
    arr, sp = read_image(tmp_path / f"c.{ext}")
    assert arr.shape == (20, 30) and arr.dtype == np.float32 and sp == (1.0, 1.0)
    if ext == "jpg":  # lossy, and ITK's JPEG decoder is not Pillow's: the same picture, not the same bytes
        assert abs(arr.mean() - grey.mean()) < 2 and np.corrcoef(arr.ravel(), grey.ravel())[0, 1] > 0.9
    else:
        np.testing.assert_array_equal(arr, grey)
    assert data.read_spacing_shape(tmp_path / f"c.{ext}")[0] == (20, 30)
    vec3d = sitk.GetImageFromArray(np.zeros((2, 4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(vec3d, str(tmp_path / "v.mha"))
    with pytest.raises(DataError, match="components per pixel"):
        read_image(tmp_path / "v.mha")


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: cannot read image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((3, 3), np.float32))


# ------------------------------------------------------------------ valid cohort
def test_load_valid_cohort(cohort):
    before = _snapshot(cohort)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CohortWarning)
        df = load_cohort(cohort / "manifest.csv")
    assert _snapshot(cohort) == before  # loading never writes into the cohort folder
    assert len(df) == TINY["n_patients"] and df["her2"].dtype == np.int64
    for col in PATH_COLUMNS:
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in df[col])
    assert df.attrs["missing"] == {"columns": [], "modalities": {}, "values": {}}
    assert data.available_modalities(df) == ["us", "mri"]
    assert df["er"].dtype == np.int64 and set(df["us_margin"]) <= {"circumscribed", "not_circumscribed"}
    # folder works as well as the file, and the header-only mode agrees
    assert load_cohort(cohort, check_files="header").equals(df)


def test_bad_check_files_option(cohort):
    with pytest.raises(DataError, match="check_files='headers' is not supported.*Did you mean 'header'"):
        load_cohort(cohort, check_files="headers")


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        load_cohort(tmp_path)


# ------------------------------------------------------------------ table errors
def test_missing_required_column(broken):
    dst, man = broken
    with pytest.raises(DataError, match=r"required column\(s\) \['her2'\] missing"):
        load_cohort(_save(dst, man.drop(columns=["her2"])))


def test_duplicate_patient_id(broken):
    dst, man = broken
    man.loc[1, "patient_id"] = man.loc[0, "patient_id"]
    with pytest.raises(DataError, match=rf"patient {man.loc[0, 'patient_id']}: appears 2 times .*unique"):
        load_cohort(_save(dst, man))


def test_bad_split_and_label_and_code_all_reported(broken):
    dst, man = broken
    pid = [man.loc[i, "patient_id"] for i in range(4)]
    man.loc[0, "split"] = "tset"
    man.loc[1, "her2"] = "2"
    man.loc[2, "her2"] = ""
    man.loc[3, "us_margin"] = "circumscribd"
    with pytest.raises(DataError) as ei:
        load_cohort(_save(dst, man))
    msg = str(ei.value)
    assert f"patient {pid[0]}: split 'tset'" in msg and "Did you mean 'test'" in msg
    assert f"patient {pid[1]}: her2 label '2'" in msg and f"patient {pid[2]}: her2 label ''" in msg
    assert f"patient {pid[3]}: us_margin = 'circumscribd'" in msg and "Did you mean 'circumscribed'" in msg
    assert len(ei.value.problems) == 4


def test_bad_continuous_value(broken):
    dst, man = broken
    man.loc[0, "age"] = "-3"
    with pytest.raises(DataError, match="age = '-3'.*positive number"):
        load_cohort(_save(dst, man))


def test_partner_path_missing(broken):
    dst, man = broken
    man.loc[0, "mri_mask"] = ""
    with pytest.raises(DataError, match="mri_mask is empty but its partner is not"):
        load_cohort(_save(dst, man))


# ------------------------------------------------------------------ file errors
def test_missing_file(broken):
    dst, man = broken
    (dst / man.loc[0, "us_mask"]).unlink()
    with pytest.raises(DataError, match=rf"patient {man.loc[0, 'patient_id']}: us mask file .* does not exist"):
        load_cohort(dst)
    with pytest.raises(DataError, match="does not exist"):
        load_cohort(dst, check_files="exists")


def test_corrupt_png_and_nifti(broken):
    dst, man = broken
    (dst / man.loc[0, "us_image"]).write_bytes(b"\x89PNG garbage")
    p = dst / man.loc[1, "mri_image"]
    p.write_bytes(p.read_bytes()[:200])  # truncated gzip
    with pytest.raises(DataError) as ei:
        load_cohort(dst)
    msg = str(ei.value)
    assert f"patient {man.loc[0, 'patient_id']}: us image unreadable" in msg
    assert f"patient {man.loc[1, 'patient_id']}: mri image unreadable" in msg and "re-export" in msg


def test_shape_mismatch(broken):
    dst, man = broken
    write_png(dst / man.loc[0, "us_mask"], np.full((10, 10), 255, np.uint8))
    write_nifti(dst / man.loc[1, "mri_mask"], np.ones((12, 24, 20), np.uint8), (6.0, 2.8, 2.8))
    with pytest.raises(DataError) as ei:
        load_cohort(dst)
    assert len(ei.value.problems) == 2
    assert "mask must be on the image grid" in str(ei.value)
    with pytest.raises(DataError, match="has shape"):
        load_cohort(dst, check_files="header")


def test_spacing_mismatch(broken):
    dst, man = broken
    mask, _ = read_image(dst / man.loc[0, "mri_mask"])
    write_nifti(dst / man.loc[0, "mri_mask"], mask.astype(np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match=r"spacing .* differs from image .*resample"):
        load_cohort(dst)


def test_non_binary_and_empty_masks(broken):
    dst, man = broken
    m, sp = read_image(dst / man.loc[0, "mri_mask"])
    write_nifti(dst / man.loc[0, "mri_mask"], (m * 2 + (m == 0) * 0).astype(np.uint8) + (m > 0) * 1, sp)
    write_png(dst / man.loc[1, "us_mask"], np.zeros(read_image(dst / man.loc[1, "us_mask"])[0].shape, np.uint8))
    with pytest.raises(DataError) as ei:
        load_cohort(dst)
    msg = str(ei.value)
    assert f"patient {man.loc[0, 'patient_id']}: mri mask" in msg and "is not binary (values 0, 3)" in msg
    assert f"patient {man.loc[1, 'patient_id']}: us mask" in msg and "is empty" in msg


def test_non_finite_image(broken):
    dst, man = broken
    v, sp = read_image(dst / man.loc[0, "mri_image"])
    v[0, 0, 0] = np.nan
    write_nifti(dst / man.loc[0, "mri_image"], v.astype(np.float32), sp)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_cohort(dst)


def test_wrong_dimensionality(broken):
    dst, man = broken
    man.loc[0, "mri_image"], man.loc[0, "mri_mask"] = man.loc[0, "us_image"], man.loc[0, "us_mask"]
    with pytest.raises(DataError, match="expected a 3-D image"):
        load_cohort(_save(dst, man))


# ------------------------------------------------------------------ partial cohorts
def test_missing_modality_and_columns(broken):
    dst, man = broken
    man = man.drop(columns=["us_image", "us_mask", "ki67", "age"])
    man.loc[0, "mri_image"] = man.loc[0, "mri_mask"] = ""
    man.loc[1, "er"] = ""
    with pytest.warns(CohortWarning, match="descriptive columns absent"):
        df = load_cohort(_save(dst, man))
    miss = df.attrs["missing"]
    assert miss["columns"] == ["ki67", "age"]
    assert miss["modalities"]["us"] == list(df["patient_id"])
    assert miss["modalities"]["mri"] == [df["patient_id"].iloc[0]]
    assert miss["values"] == {"er": 1}
    assert data.available_modalities(df) == []
    assert data.available_modalities(df, require_all=False) == ["mri"]
    assert (df["us_image"] == "").all() and df.loc[0, "mri_image"] == ""


# ------------------------------------------------------------------ split + gallery
def test_stratified_split():
    y = np.array([0] * 118 + [1] * 79)
    s = data.stratified_split(y, seed=0)
    assert (s == "test").sum() == round(118 * 48 / 197) + round(79 * 48 / 197)
    assert np.array_equal(s, data.stratified_split(y, seed=0))
    assert not np.array_equal(s, data.stratified_split(y, seed=1))
    with pytest.raises(DataError, match="test_fraction"):
        data.stratified_split(y, test_fraction=1.5)


def test_gallery(cohort, tmp_path):
    df = load_cohort(cohort)
    fig = cohort_gallery(df, tmp_path / "g.png", n_per_class=2)
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert len(fig.axes) == 2 * 4
    assert fig.canvas.manager is None  # not a pyplot figure: a notebook shows the saved file, once


def test_file_problems_are_listed_in_manifest_order(broken):
    """The decoding checks run on threads; the problems still come in the serial order: by modality, then by
    manifest row, a missing partner (found without decoding) in its place between them. Reference: the same
    checks one pair at a time (``_check_pair``) in that order."""
    from her2lib import data

    dst, man = broken
    for i in (3, 7, 12):
        (dst / man.loc[i, "us_image"]).write_bytes(b"\x89PNG garbage")
    for i in (1, 9):
        p = dst / man.loc[i, "mri_image"]
        p.write_bytes(p.read_bytes()[:200])
    man.loc[5, "us_mask"] = ""
    with pytest.raises(DataError) as ei:
        load_cohort(_save(dst, man))
    lines = [ln.strip(" -") for ln in str(ei.value).splitlines() if ln.strip(" -").startswith("patient ")]
    pid = man["patient_id"]
    serial = []
    for m in ("us", "mri"):
        for i in range(len(man)):
            if m == "us" and i == 5:
                serial.append(f"patient {pid[i]}: us_mask is empty")
                continue
            img, msk = (dst / man.loc[i, f"{m}_image"]).resolve(), (dst / man.loc[i, f"{m}_mask"]).resolve()
            serial += data._check_pair(pid[i], m, img, msk, "full")
    assert len(lines) == len(serial) == 6
    assert all(ln.startswith(ref[:40]) for ln, ref in zip(lines, serial)), (lines, serial)
