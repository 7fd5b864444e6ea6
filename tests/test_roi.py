"""ROI geometry (margin, border clipping, anisotropic spacing), normalisation, resizing and the content-keyed
cache (reuse, invalidation on a changed parameter or file, corrupt entries)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from her2lib import roi
from her2lib.errors import DataError, ParameterError


def _disk_mask(shape, center, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2).astype(np.uint8)


def test_us_box_is_mask_box_plus_margin():
    mask = np.zeros((300, 400), np.uint8)
    mask[120:141, 150:181] = 1  # rows 120..140, cols 150..180
    res = roi.us_roi(np.random.default_rng(0).normal(size=mask.shape), mask, margin_px=50, size=64)
    assert res.box == ((70, 191), (100, 231))
    assert res.image.shape == (1, 64, 64) and res.image.dtype == np.float32
    assert res.mask.shape == (1, 64, 64) and res.mask.dtype == np.uint8


def test_us_box_clipped_at_borders():
    mask = np.zeros((100, 120), np.uint8)
    mask[2:10, 110:118] = 1
    res = roi.us_roi(np.ones(mask.shape) + np.arange(120), mask, margin_px=50, size=(32, 48))
    assert res.box == ((0, 60), (60, 120))
    assert res.image.shape == (1, 32, 48)


def test_dilation_is_euclidean_not_square():
    mask = np.zeros((61, 61), bool)
    mask[30, 30] = True
    d = roi.dilate_mask(mask, 10)
    assert d[30, 40] and d[40, 30] and not d[30, 41]
    assert not d[38, 38]  # corner of the square would be included by a square structuring element
    assert d.sum() == pytest.approx(np.pi * 100, rel=0.05)


def test_zscore_within_roi_and_constant_image():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 20, size=(80, 80))
    mask = _disk_mask(img.shape, (40, 40), 5)
    res = roi.us_roi(img, mask, margin_px=10, size=(21, 21))  # 21 = box side -> no interpolation change
    assert res.box == ((25, 56), (25, 56))
    big = roi.us_roi(img, mask, margin_px=10, size=(31, 31)).image
    assert abs(big.mean()) < 1e-4 and abs(big.std() - 1) < 1e-3
    flat = roi.us_roi(np.full((40, 40), 7.0), _disk_mask((40, 40), (20, 20), 3), 5, size=16)
    assert np.all(flat.image == 0)


def test_resized_mask_is_binary_and_covers_lesion():
    img = np.random.default_rng(2).normal(size=(200, 200))
    mask = _disk_mask(img.shape, (100, 100), 20)
    res = roi.us_roi(img, mask, margin_px=50, size=60)
    assert set(np.unique(res.mask)) == {0, 1}
    frac = res.mask.mean()
    assert frac == pytest.approx(np.pi * 20 ** 2 / (141 * 141), rel=0.1)


def test_mri_in_plane_margin_px_keeps_lesion_slices():
    mask = np.zeros((20, 100, 100), np.uint8)
    mask[8:12, 40:50, 45:55] = 1
    res = roi.mri_roi(np.random.default_rng(0).normal(size=mask.shape), mask, spacing=(3.0, 0.5, 0.5),
                      margin=20, margin_unit="px", size=16)
    assert res.box == ((8, 12), (20, 70), (25, 75))
    assert res.image.shape == (1, 16, 16, 16)


def test_mri_margin_mm_with_anisotropic_spacing():
    mask = np.zeros((10, 120, 120), np.uint8)
    mask[4:6, 60, 60] = 1
    # y spacing 0.5 mm, x spacing 1.0 mm: 10 mm = 20 voxels along y, 10 voxels along x
    res = roi.mri_roi(np.random.default_rng(0).normal(size=mask.shape), mask, spacing=(2.0, 0.5, 1.0),
                      margin=10, margin_unit="mm", size=8)
    assert res.box == ((4, 6), (40, 81), (50, 71))
    px = roi.mri_roi(np.random.default_rng(0).normal(size=mask.shape), mask, spacing=(2.0, 0.5, 1.0),
                     margin=10, margin_unit="px", size=8)
    assert px.box == ((4, 6), (50, 71), (50, 71))


def test_mri_box_clipped_at_borders():
    mask = np.zeros((6, 30, 30), np.uint8)
    mask[0:3, 0:4, 25:30] = 1
    res = roi.mri_roi(np.random.default_rng(0).normal(size=mask.shape), mask, margin=50, size=8)
    assert res.box == ((0, 3), (0, 30), (0, 30))


@pytest.mark.parametrize("kwargs, match", [
    (dict(margin_unit="cm"), "margin_unit"),
    (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
    (dict(size=(8, 8)), "size"),
])
def test_mri_bad_parameters(kwargs, match):
    mask = np.zeros((6, 30, 30), np.uint8)
    mask[2, 10, 10] = 1
    with pytest.raises(ParameterError, match=match):
        roi.mri_roi(np.zeros(mask.shape), mask, **{"size": 8, **kwargs})


def test_empty_or_mismatched_mask_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        roi.us_roi(np.zeros((20, 20)), np.zeros((20, 20)), 5, 8)
    with pytest.raises(DataError, match="mask shape"):
        roi.us_roi(np.zeros((20, 20)), np.ones((20, 21)), 5, 8)
    with pytest.raises(DataError, match="NaN"):
        roi.us_roi(np.full((20, 20), np.nan), np.ones((20, 20)), 5, 8)


# ----------------------------------------------------------------------------------------------- cache


@pytest.fixture()
def tiny_cohort(tmp_path):
    from her2lib.data import write_nifti, write_png

    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        us = (rng.random((60, 70)) * 255).astype(np.uint8)
        um = _disk_mask(us.shape, (30, 35), 6).astype(np.uint8) * 255
        vol = rng.normal(size=(8, 24, 24)).astype(np.float32)
        vm = np.zeros(vol.shape, np.uint8)
        vm[3:5, 10:14, 10:14] = 1
        p = {k: tmp_path / f"P{i}_{k}" for k in ("us.png", "usm.png", "mri.nii.gz", "mrim.nii.gz")}
        write_png(p["us.png"], us)
        write_png(p["usm.png"], um)
        write_nifti(p["mri.nii.gz"], vol, (3.0, 0.8, 0.8))
        write_nifti(p["mrim.nii.gz"], vm, (3.0, 0.8, 0.8))
        rows.append({"patient_id": f"P{i}", "split": "train", "her2": i % 2, "us_image": str(p["us.png"]),
                     "us_mask": str(p["usm.png"]), "mri_image": str(p["mri.nii.gz"]),
                     "mri_mask": str(p["mrim.nii.gz"])})
    return pd.DataFrame(rows)


def test_cache_reuses_and_invalidates(tiny_cohort, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec = roi.PreprocessSpec(us_size=16, us_margin_px=10, mri_size=8, mri_margin=4)
    x1, m1, b1 = roi.preprocess_cohort(tiny_cohort, "us", spec, cache, progress=False)
    assert x1.shape == (3, 1, 16, 16) and m1.shape == x1.shape
    files = sorted((cache / "roi" / "us").glob("*.npz"))
    assert len(files) == 3

    calls = []
    real = roi._compute
    monkeypatch.setattr(roi, "_compute", lambda *a: calls.append(a) or real(*a))
    x2, _, b2 = roi.preprocess_cohort(tiny_cohort, "us", spec, cache, progress=False)
    assert calls == [] and np.array_equal(x1, x2) and b1 == b2  # second pass: all from the cache

    # a changed parameter never reuses a stale entry
    spec2 = roi.PreprocessSpec(us_size=16, us_margin_px=11, mri_size=8, mri_margin=4)
    x3, _, b3 = roi.preprocess_cohort(tiny_cohort, "us", spec2, cache, progress=False)
    assert len(calls) == 3 and b3 != b1 and not np.array_equal(x1, x3)

    # a changed source file never reuses a stale entry
    from her2lib.data import write_png
    write_png(tiny_cohort.loc[0, "us_image"], np.zeros((60, 70), np.uint8) + 3)
    calls.clear()
    roi.preprocess_cohort(tiny_cohort, "us", spec, cache, progress=False)
    assert len(calls) == 1


def test_cache_key_depends_on_code_version(tiny_cohort, monkeypatch):
    r = tiny_cohort.iloc[0]
    k1 = roi.cache_key(r.us_image, r.us_mask, {"size": 16})
    assert k1 != roi.cache_key(r.us_image, r.us_mask, {"size": 17})
    monkeypatch.setattr(roi, "ROI_CODE_VERSION", "roi-test")
    assert k1 != roi.cache_key(r.us_image, r.us_mask, {"size": 16})


def test_corrupt_cache_entry_warns_and_recomputes(tiny_cohort, tmp_path):
    cache = tmp_path / "cache"
    spec = roi.PreprocessSpec(us_size=16, us_margin_px=10, mri_size=8, mri_margin=4)
    x1, _, _ = roi.preprocess_cohort(tiny_cohort, "mri", spec, cache, progress=False)
    assert x1.shape == (3, 1, 8, 8, 8)
    entry = sorted((cache / "roi" / "mri").glob("*.npz"))[0]
    entry.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="corrupt cache entry"):
        x2, _, _ = roi.preprocess_cohort(tiny_cohort, "mri", spec, cache, progress=False)
    assert np.array_equal(x1, x2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roi.preprocess_cohort(tiny_cohort, "mri", spec, cache, progress=False)  # repaired


def test_preprocess_names_patient_on_bad_mask(tiny_cohort, tmp_path):
    from her2lib.data import write_png
    write_png(tiny_cohort.loc[1, "us_mask"], np.zeros((60, 70), np.uint8))
    with pytest.raises(DataError, match="patient P1"):
        roi.preprocess_cohort(tiny_cohort, "us", roi.PreprocessSpec(us_size=8), tmp_path / "c", progress=False)


def test_spec_from_params_json(tmp_path):
    from her2lib.io import write_json
    write_json(tmp_path / "p.json", {"us_size": 64, "mri_size": 24, "seed": 3, "mri_margin_unit": "mm"})
    spec = roi.PreprocessSpec.from_params(tmp_path / "p.json")
    assert spec == roi.PreprocessSpec(us_size=64, mri_size=24, mri_margin_unit="mm")
    with pytest.raises(ParameterError, match="02_preprocess"):
        roi.PreprocessSpec.from_params(tmp_path / "missing.json")


def test_partial_modality_names_the_patients_without_images(tiny_cohort, tmp_path):
    cohort = tiny_cohort.copy()
    cohort.loc[2, ["mri_image", "mri_mask"]] = ""
    with pytest.raises(DataError, match=r"1 patient\(s\) have no MRI image or mask \(P2\)"):
        roi.preprocess_cohort(cohort, "mri", roi.PreprocessSpec(mri_size=8), tmp_path / "c", progress=False)
