"""ROI geometry (margin, border clipping, anisotropic spacing), normalisation, resizing and the content-keyed
cache (reuse, invalidation on a changed parameter or file, corrupt entries)."""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from her2lib import roi
from her2lib.errors import DataError, ParameterError


def _disk_mask(shape, center, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.uint8)


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
    flat = roi.us_roi(np.full((40, 40), 7.0), _disk_mask((40, 40), (20, 20), 3), margin_px=5, size=16)
    assert np.all(flat.image == 0)


def test_resized_mask_is_binary_and_covers_lesion():
    img = np.random.default_rng(2).normal(size=(200, 200))
    mask = _disk_mask(img.shape, (100, 100), 20)
    res = roi.us_roi(img, mask, margin_px=50, size=60)
    assert set(np.unique(res.mask)) == {0, 1}
    frac = res.mask.mean()
    assert frac == pytest.approx(np.pi * 20**2 / (141 * 141), rel=0.1)


def test_mri_in_plane_margin_px_keeps_lesion_slices():
    mask = np.zeros((20, 100, 100), np.uint8)
    mask[8:12, 40:50, 45:55] = 1
    res = roi.mri_roi(
        np.random.default_rng(0).normal(size=mask.shape),
        mask,
        spacing=(3.0, 0.5, 0.5),
        margin=20,
        margin_unit="px",
        size=16,
    )
    assert res.box == ((8, 12), (20, 70), (25, 75))
    assert res.image.shape == (1, 16, 16, 16)


def test_mri_margin_mm_with_anisotropic_spacing():
    mask = np.zeros((10, 120, 120), np.uint8)
    mask[4:6, 60, 60] = 1
    # y spacing 0.5 mm, x spacing 1.0 mm: 10 mm = 20 voxels along y, 10 voxels along x
    res = roi.mri_roi(
        np.random.default_rng(0).normal(size=mask.shape),
        mask,
        spacing=(2.0, 0.5, 1.0),
        margin=10,
        margin_unit="mm",
        size=8,
    )
    assert res.box == ((4, 6), (40, 81), (50, 71))
    px = roi.mri_roi(
        np.random.default_rng(0).normal(size=mask.shape),
        mask,
        spacing=(2.0, 0.5, 1.0),
        margin=10,
        margin_unit="px",
        size=8,
    )
    assert px.box == ((4, 6), (50, 71), (50, 71))


def test_mri_box_clipped_at_borders():
    mask = np.zeros((6, 30, 30), np.uint8)
    mask[0:3, 0:4, 25:30] = 1
    res = roi.mri_roi(np.random.default_rng(0).normal(size=mask.shape), mask, margin=50, size=8)
    assert res.box == ((0, 3), (0, 30), (0, 30))
    assert res.clipped == (False, True, True)  # z has no margin: the lesion's slices are never "clipped"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(margin_unit="cm"), "margin_unit"),
        (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
        (dict(size=(8, 8)), "size"),
    ],
)
def test_mri_bad_parameters(kwargs, match):
    mask = np.zeros((6, 30, 30), np.uint8)
    mask[2, 10, 10] = 1
    with pytest.raises(ParameterError, match=match):
        roi.mri_roi(np.zeros(mask.shape), mask, **{"size": 8, **kwargs})


def test_empty_or_mismatched_mask_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        roi.us_roi(np.zeros((20, 20)), np.zeros((20, 20)), margin_px=5, size=8)
    with pytest.raises(DataError, match="mask shape"):
        roi.us_roi(np.zeros((20, 20)), np.ones((20, 21)), margin_px=5, size=8)
    with pytest.raises(DataError, match="NaN"):
        roi.us_roi(np.full((20, 20), np.nan), np.ones((20, 20)), margin_px=5, size=8)


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
        rows.append(
            {
                "patient_id": f"P{i}",
                "split": "train",
                "her2": i % 2,
                "us_image": str(p["us.png"]),
                "us_mask": str(p["usm.png"]),
                "mri_image": str(p["mri.nii.gz"]),
                "mri_mask": str(p["mrim.nii.gz"]),
            }
        )
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


# ----------------------------------------------------------------------------------------------- recorded geometry
def test_results_record_source_shape_spacing_and_clipping():
    mask = np.zeros((10, 120, 120), np.uint8)
    mask[4:6, 60, 60] = 1
    img = np.random.default_rng(0).normal(size=mask.shape)
    res = roi.mri_roi(img, mask, spacing=(2.0, 0.5, 1.0), margin=10, margin_unit="mm", size=8)
    assert res.source_shape == (10, 120, 120) and res.spacing == (2.0, 0.5, 1.0)
    assert res.clipped == (False, False, False)
    edge = roi.mri_roi(img, mask, spacing=(2.0, 0.5, 1.0), margin=31, margin_unit="mm", size=8)
    assert edge.box == ((4, 6), (0, 120), (29, 92)) and edge.clipped == (False, True, False)
    us = roi.us_roi(
        np.ones((100, 120)) + np.arange(120), np.pad(np.ones((8, 8)), ((2, 90), (110, 2))), margin_px=50, size=(32, 48)
    )
    assert us.source_shape == (100, 120) and us.spacing == (1.0, 1.0) and us.clipped == (True, True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("unit, spacing", [("px", (1.0, 1.0, 1.0)), ("mm", (3.0, 0.7, 0.9))])
def test_clipping_flags_match_the_dilated_mask(seed, unit, spacing):
    """Brute force: dilate on a canvas padded beyond the image; clipped = the dilation reached the padding."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((5, 40, 50), bool)
    z, y, x = rng.integers(0, 5), rng.integers(0, 40), rng.integers(0, 50)
    mask[z, max(0, y - 3) : y + 3, max(0, x - 2) : x + 4] = True
    margin = float(rng.uniform(3, 15))
    res = roi.mri_roi(rng.normal(size=mask.shape), mask, spacing=spacing, margin=margin, margin_unit=unit, size=4)
    pad = 40
    big = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    dil = roi.dilate_mask(big, margin, sampling=spacing if unit == "mm" else None, in_plane=True)
    inside = np.zeros_like(dil)
    inside[:, pad:-pad, pad:-pad] = True
    outside = dil & ~inside
    assert res.clipped[0] is False
    assert res.clipped[1] == bool(outside[:, :pad].any() or outside[:, -pad:].any())
    assert res.clipped[2] == bool(outside[:, :, :pad].any() or outside[:, :, -pad:].any())
    ys, xs = np.nonzero(dil.any(axis=0))
    assert res.box[1] == (max(0, ys.min() - pad), min(40, ys.max() + 1 - pad))
    assert res.box[2] == (max(0, xs.min() - pad), min(50, xs.max() + 1 - pad))


def test_roibox_is_a_plain_tuple_with_geometry():
    import pickle

    b = roi.RoiBox(((2, 9), (0, 30)), source_shape=(40, 30), spacing=(1.0, 1.0), clipped=(False, True))
    assert b == ((2, 9), (0, 30)) and isinstance(b, tuple)
    (y0, y1), (x0, x1) = b
    assert (y0, y1, x0, x1) == (2, 9, 0, 30)
    c = pickle.loads(pickle.dumps(b))
    assert c == b and c.source_shape == (40, 30) and c.spacing == (1.0, 1.0) and c.clipped == (False, True)


def test_box_table_reports_share_clipping_and_mm(tiny_cohort, tmp_path):
    spec = roi.PreprocessSpec(us_size=16, us_margin_px=10, mri_size=8, mri_margin=4, mri_margin_unit="mm")
    inputs = {m: roi.preprocess_cohort(tiny_cohort, m, spec, tmp_path / "c", progress=False) for m in ("us", "mri")}
    again = roi.preprocess_cohort(tiny_cohort, "mri", spec, tmp_path / "c", progress=False)[2]  # from the cache
    assert [b.spacing for b in again] == [b.spacing for b in inputs["mri"][2]]
    tab = roi.roi_boxes(tiny_cohort, inputs)
    # US: disk of radius 6 at (30, 35) in 60 x 70, margin 10 -> rows 14..46, cols 19..51, not clipped
    assert tab["us_roi_share"].iloc[0] == pytest.approx(33 * 33 / (60 * 70))
    assert not tab["us_clipped"].any()
    # MRI: lesion rows/cols 10..13 in 24 x 24 at 0.8 mm; 4 mm = 5 voxels -> 5..18, not clipped; slices 3..4
    r = tab.iloc[0]
    assert (r.mri_y0, r.mri_y1, r.mri_x0, r.mri_x1, r.mri_z0, r.mri_z1) == (5, 19, 5, 19, 3, 5)
    assert r.mri_roi_share == pytest.approx(14 * 14 / (24 * 24)) and not r.mri_clipped
    assert (r.mri_d_mm, r.mri_h_mm, r.mri_w_mm) == pytest.approx((6.0, 11.2, 11.2))
    summ = roi.clipping_summary(tab)
    assert list(summ.index) == ["us", "mri"] and summ.loc["mri", "n_clipped"] == 0
    assert summ.loc["mri", "share_median"] == pytest.approx(14 * 14 / 576)
    assert {"us_roi_share", "mri_clipped", "mri_w_mm"} <= set(roi.box_summary(tab).columns)
    wide = roi.box_table(
        tiny_cohort,
        None,
        roi.preprocess_cohort(
            tiny_cohort, "mri", roi.PreprocessSpec(mri_size=8, mri_margin=50), tmp_path / "c", progress=False
        )[2],
    )
    assert wide["mri_clipped"].all() and (wide["mri_roi_share"] == 1).all()  # 50 voxels: the whole slice
    with pytest.raises(DataError, match="roi_share"):
        roi.clipping_summary(roi.box_table(tiny_cohort, None, [((0, 1), (0, 2), (0, 3))] * 3))


# ----------------------------------------------------------------------------------------------- cache key versions
@pytest.mark.parametrize("library", roi.CACHE_LIBRARIES)
def test_cache_key_changes_with_each_library_version(tiny_cohort, monkeypatch, library):
    r = tiny_cohort.iloc[0]
    k1 = roi.cache_key(r.mri_image, r.mri_mask, {"size": 8})
    real = roi._dist_version
    monkeypatch.setattr(roi, "_dist_version", lambda name: "999.0" if name == library else real(name))
    assert roi.cache_key(r.mri_image, r.mri_mask, {"size": 8}) != k1
    assert roi.library_versions()[library] == "999.0"


def test_cache_key_changes_with_reader_version_and_covers_the_readers(tiny_cohort, monkeypatch):
    from her2lib import data

    r = tiny_cohort.iloc[0]
    k1 = roi.cache_key(r.us_image, r.us_mask, {"size": 16})
    monkeypatch.setattr(data, "IMAGE_READER_VERSION", "read_image-test")
    assert roi.cache_key(r.us_image, r.us_mask, {"size": 16}) != k1
    # what read_image and the ROI code use: Pillow (PNG), nibabel (NIfTI), SimpleITK (other formats), scipy
    # (dilation), torch (resizing), numpy
    assert set(roi.CACHE_LIBRARIES) == {"numpy", "scipy", "torch", "Pillow", "nibabel", "SimpleITK"}
    assert all(v != "absent" for v in roi.library_versions().values())


def test_cache_entry_stale_after_library_upgrade(tiny_cohort, tmp_path, monkeypatch):
    spec = roi.PreprocessSpec(us_size=16, us_margin_px=10)
    roi.preprocess_cohort(tiny_cohort, "us", spec, tmp_path / "c", progress=False)
    calls = []
    real_compute, real_version = roi._compute, roi._dist_version
    monkeypatch.setattr(roi, "_compute", lambda *a: calls.append(a) or real_compute(*a))
    monkeypatch.setattr(roi, "_dist_version", lambda name: "0.0-upgraded" if name == "torch" else real_version(name))
    roi.preprocess_cohort(tiny_cohort, "us", spec, tmp_path / "c", progress=False)
    assert len(calls) == 3


def test_colour_us_image_gives_the_same_roi_as_its_grey_png(tmp_path):
    """read_image turns 2-D colour files of any format into luminance, so roi needs no colour branch."""
    from PIL import Image

    from her2lib.data import write_png

    rng = np.random.default_rng(3)
    rgb = (rng.random((60, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "us.tif")
    Image.fromarray(rgb).convert("L").save(tmp_path / "us.png")
    write_png(tmp_path / "m.png", _disk_mask((60, 70), (30, 35), 6).astype(np.uint8) * 255)
    params = roi.PreprocessSpec(us_size=16, us_margin_px=10).params_for("us")
    a = roi._compute("us", str(tmp_path / "us.tif"), str(tmp_path / "m.png"), params)
    b = roi._compute("us", str(tmp_path / "us.png"), str(tmp_path / "m.png"), params)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.box == b.box


# ----------------------------------------------------------------------------------------------- source-file digests
def test_later_passes_do_not_rehash_unchanged_source_files(tiny_cohort, tmp_path, monkeypatch):
    """The digests of the source files are kept with their stat, so notebooks 03/04/07 find their cache entries
    without reading every image again; a changed file is hashed (and preprocessed) again."""
    spec = roi.PreprocessSpec(us_size=16, us_margin_px=10)
    monkeypatch.setattr(roi._FileHashes, "RACY_NS", 200_000_000)  # a 0.2 s tick: this file system's is finer
    time.sleep(2 * roi._FileHashes.RACY_NS / 1e9)  # digests of files written just now are not trusted
    x1, _, _ = roi.preprocess_cohort(tiny_cohort, "us", spec, tmp_path / "c", progress=False)
    assert len(json.loads((tmp_path / "c" / "roi" / "file_hashes.json").read_text())) == 6
    hashed, computed = [], []
    real_sha, real_compute = roi.sha256_file, roi._compute
    monkeypatch.setattr(roi, "sha256_file", lambda p: hashed.append(p) or real_sha(p))
    monkeypatch.setattr(roi, "_compute", lambda *a: computed.append(a) or real_compute(*a))
    x2, _, _ = roi.preprocess_cohort(tiny_cohort, "us", spec, tmp_path / "c", progress=False)
    assert hashed == [] and computed == [] and np.array_equal(x1, x2)

    from her2lib.data import write_png

    write_png(tiny_cohort.loc[0, "us_image"], np.zeros((60, 70), np.uint8) + 3)
    roi.preprocess_cohort(tiny_cohort, "us", spec, tmp_path / "c", progress=False)
    assert [str(p) for p in hashed] == [str(tiny_cohort.loc[0, "us_image"])] and len(computed) == 1
    hashed.clear()
    roi.preprocess_cohort(tiny_cohort, "us", spec, tmp_path / "c", progress=False)
    assert hashed == [str(tiny_cohort.loc[0, "us_image"])]  # just rewritten: hashed again until its digest is old


def test_file_digest_index_notices_a_rewrite_within_one_clock_tick(tmp_path, monkeypatch):
    """A same-size rewrite that keeps every stat field (possible within one coarse file-system clock tick) is
    noticed because a digest taken right after a change is not trusted."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"aaaa")
    st = os.stat(f)
    hashes = roi._FileHashes(tmp_path)
    first = hashes.sha256(f)
    f.write_bytes(b"bbbb")
    monkeypatch.setattr(
        roi._FileHashes, "_stat", staticmethod(lambda path: [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    )  # the stat did not move
    assert hashes.sha256(f) != first


def test_file_digest_index_notices_a_rewrite_that_keeps_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(roi._FileHashes, "RACY_NS", 200_000_000)  # a 0.2 s tick: this file system's is finer
    f = tmp_path / "a.bin"
    f.write_bytes(b"aaaa")
    time.sleep(2 * roi._FileHashes.RACY_NS / 1e9)
    hashes = roi._FileHashes(tmp_path)
    first = hashes.sha256(f)
    hashes.save()
    st = os.stat(f)
    f.write_bytes(b"bbbb")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old modification time
    again = roi._FileHashes(tmp_path)
    assert again.sha256(f) != first  # the change time gave it away
    (tmp_path / roi._FileHashes.FILE).write_text("{not json")
    assert roi._FileHashes(tmp_path).sha256(f) == again.sha256(f)  # an unreadable index only costs a re-hash


def test_file_digest_index_distrusts_malformed_entries_and_waits_a_coarse_tick(tmp_path):
    """A hand-edited or truncated index entry only costs a re-hash; a digest is trusted only 2 s (FAT's file-time
    tick, the coarsest in use) after the file's last change."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"aaaa")
    hashes = roi._FileHashes(tmp_path)
    digest = hashes.sha256(f)
    stat = roi._FileHashes._stat(str(f))
    for bad in ([stat, digest, "soon"], [stat, None, 0], [stat], "x", None, [stat, digest, None]):
        assert not hashes._trusted(bad, stat)
    assert roi._FileHashes.RACY_NS >= 2_000_000_000
    assert not hashes._trusted([stat, digest, max(stat[1], stat[2]) + 1_999_999_999], stat)
    assert hashes._trusted([stat, digest, max(stat[1], stat[2]) + 2_000_000_000], stat)


@pytest.mark.parametrize("modality", ["us", "mri"])
def test_threaded_preprocessing_keeps_the_cohort_order_and_the_first_error(tiny_cohort, tmp_path, modality):
    """The patients are preprocessed on threads: the stacked ROIs and boxes equal ``_compute`` run one patient at a
    time in cohort order (the reference), and with two broken patients the error names the first in that order."""
    spec = roi.PreprocessSpec(us_size=16, us_margin_px=10, mri_size=8, mri_margin=4)
    x, m, boxes = roi.preprocess_cohort(tiny_cohort, modality, spec, tmp_path / "cache", progress=False)
    params = spec.params_for(modality)
    for i, r in enumerate(tiny_cohort.itertuples()):
        ref = roi._compute(modality, getattr(r, f"{modality}_image"), getattr(r, f"{modality}_mask"), params)
        assert np.array_equal(x[i], ref.image) and np.array_equal(m[i], ref.mask)
        assert boxes[i] == roi.RoiBox.of(ref)
    from her2lib.data import write_nifti, write_png

    bad = tiny_cohort.copy()
    for i in (1, 2):  # an image whose shape differs from its mask's
        path = tmp_path / (f"bad{i}.png" if modality == "us" else f"bad{i}.nii.gz")
        if modality == "us":
            write_png(path, np.zeros((10, 12), np.uint8))
        else:
            write_nifti(path, np.zeros((4, 5, 6), np.float32), (3.0, 0.8, 0.8))
        bad.loc[i, f"{modality}_image"] = str(path)
    with pytest.raises(DataError, match=r"^patient P1 "):
        roi.preprocess_cohort(bad, modality, spec, tmp_path / "cache2", progress=False)
