"""Radiomic features (her2lib.radiomics.features).

References:

* the IBSI 1 digital phantom (Zwanenburg et al., IBSI reference manual, chapter 5; CC BY 4.0, copied from MIRP's
  test data into ``tests/fixtures/ibsi_digital_phantom/``) and its published reference values with their IBSI
  tolerances (``reference_values.csv``, MIRP's ``ibsi_1_dig_phantom.csv``): every 3-D feature her2lib computes
  must lie within tolerance, compared as MIRP's own IBSI test compares them (3 significant digits);
* MIRP's own Moran's I / Geary's C code (both its code paths) for the vectorised replacement, to 1e-10;
* hand-made masks (pixel counts, bounding boxes) for the 2-D shape features.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from her2lib.data import read_image, write_nifti, write_png
from her2lib.errors import DataError, ParameterError
from her2lib.radiomics import features as rf
from her2lib.radiomics.features import (
    RadiomicsSettings,
    extract_cohort_features,
    extract_lesion_features,
    shape_2d,
    spatial_autocorrelation,
)

PHANTOM = Path(__file__).parent / "fixtures" / "ibsi_digital_phantom"


def _ibsi_tag(name: str) -> str:
    """her2lib's ``mri_<MIRP tag>`` -> the reference table's IBSI tag (3-D aggregation names)."""
    t = re.sub(r"_fbn_n6$", "", name.removeprefix("mri_"))
    t = re.sub(r"(_d1)?(_a0\.0)?_3d_v_mrg$", "_3D_comb", t)
    t = re.sub(r"(_d1)?(_a0\.0)?_3d_avg$", "_3D_avg", t)
    return re.sub(r"(_d1)?(_a0\.0)?_3d$", "_3D", t)


def _within(x: float, ref: float, tol: float) -> bool:
    """MIRP's IBSI comparison: round to 3 significant digits, then |x - ref| <= tolerance."""
    if x != 0:
        x = round(x, 3 - int(math.floor(math.log10(abs(x)))) - 1)
    return abs(x - ref) - tol <= 1e-12


def test_every_mri_feature_matches_the_ibsi_digital_phantom():
    image, spacing = read_image(PHANTOM / "phantom.nii.gz")
    mask, _ = read_image(PHANTOM / "mask.nii.gz")
    assert image.shape == (4, 4, 5) and spacing == (2.0, 2.0, 2.0) and int((mask > 0).sum()) == 74
    # 6 bins of the phantom's range 1..6 keep its grey levels (IBSI: no discretisation for the phantom)
    feats = extract_lesion_features(image, mask, spacing, modality="mri", settings=RadiomicsSettings(bin_number=6))
    ref = pd.read_csv(PHANTOM / "reference_values.csv", sep=";").set_index("tag")
    compared, wrong, unknown = 0, [], []
    for name, value in feats.items():
        tag = _ibsi_tag(name)
        if tag not in ref.index:
            unknown.append(name)
            continue
        compared += 1
        if not _within(value, ref.at[tag, "reference value"], ref.at[tag, "tolerance"]):
            wrong.append((tag, value, ref.at[tag, "reference value"]))
    assert not wrong
    assert not unknown  # every feature her2lib computes has an IBSI reference value
    assert compared == len(feats) >= 150
    assert feats["mri_morph_moran_i"] == pytest.approx(0.0397, abs=3e-4)  # the vectorised replacement, in the run


def _ibsi_tag_2d(name: str) -> str:
    """MIRP's in-plane (``by_slice``) tag -> the reference table's 2-D IBSI tag."""
    t = re.sub(r"_fbn_n6$", "", name)
    t = re.sub(r"(_d1)?(_a0\.0)?_2d_s_mrg$", "_2D_comb", t)
    t = re.sub(r"(_d1)?(_a0\.0)?_2d_avg$", "_2D_avg", t)
    return re.sub(r"(_d1)?(_a0\.0)?_2d$", "_2D", t)


def test_every_us_feature_family_matches_the_ibsi_digital_phantom_in_plane():
    """The US settings (in-plane texture, ``by_slice``) on the phantom's slices against IBSI's 2-D reference values:
    the MIRP options her2lib passes for US, through the same MIRP input objects."""
    import mirp
    from mirp._data_import.numpy_file import ImageNumpyFile, MaskNumpyFile

    image, spacing = read_image(PHANTOM / "phantom.nii.gz")
    mask, _ = read_image(PHANTOM / "mask.nii.gz")
    options = RadiomicsSettings(bin_number=6).mirp_options("us")
    assert options["by_slice"] and "morphology" not in options["base_feature_families"]
    with rf._exact_spatial_autocorrelation():
        table = mirp.extract_features(
            image=rf._mirp_input(ImageNumpyFile, image.astype(float), spacing, "phantom", None),
            mask=rf._mirp_input(MaskNumpyFile, (mask > 0).astype(np.uint8), spacing, "phantom", None),
            export_features=True,
            **options,
        )[0]
    ref = pd.read_csv(PHANTOM / "reference_values.csv", sep=";").set_index("tag")
    feats = {k: float(v) for k, v in table.iloc[0].items() if rf._is_feature(k)}
    tags = {k: _ibsi_tag_2d(k) for k in feats}
    assert all(t in ref.index for t in tags.values())
    wrong = [
        (k, v)
        for k, v in feats.items()
        if not _within(v, ref.at[tags[k], "reference value"], ref.at[tags[k], "tolerance"])
    ]
    assert not wrong and len(feats) >= 130


def test_standardisation_makes_features_invariant_to_the_scanner_units():
    rng = np.random.default_rng(3)
    image = rng.normal(100, 15, size=(10, 16, 16))
    image[3:8, 4:12, 5:11] += 30
    mask = np.zeros_like(image)
    mask[3:8, 4:12, 5:11] = 1
    z = RadiomicsSettings(normalisation="standardisation")
    a = extract_lesion_features(image, mask, (2.0, 1.0, 1.0), modality="mri", settings=z)
    b = extract_lesion_features(3.5 * image + 400, mask, (2.0, 1.0, 1.0), modality="mri", settings=z)
    assert a.keys() == b.keys()
    np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-7, atol=1e-9)
    raw = extract_lesion_features(image, mask, (2.0, 1.0, 1.0), modality="mri")
    assert raw["mri_stat_mean"] == pytest.approx(image[mask > 0].mean())


def _mirp_spatial(pos: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    from mirp._features.morph_3d_data import Data3DSpatial

    obj = Data3DSpatial()
    obj.spacing = np.array([1.0, 1.0, 1.0])
    data = pd.DataFrame({"z": pos[:, 0], "y": pos[:, 1], "x": pos[:, 2], "g": g})
    return Data3DSpatial._spatial_distribution(obj, data)  # MIRP's own code (not patched outside the extraction)


@pytest.mark.parametrize("n", [150, 2050])  # MIRP's all-pairs path (< 2000 voxels) and its row loop
def test_spatial_autocorrelation_equals_mirp(n):
    rng = np.random.default_rng(n)
    pos = rng.choice(40 * 40 * 40, size=n, replace=False)
    pos = np.column_stack(np.unravel_index(pos, (40, 40, 40))).astype(float)
    g = rng.normal(size=n) + pos[:, 0] / 10
    moran, geary = spatial_autocorrelation(pos, g)
    ref_moran, ref_geary = _mirp_spatial(pos, g)
    assert moran == pytest.approx(ref_moran, rel=1e-10)
    assert geary == pytest.approx(ref_geary, rel=1e-10)
    assert spatial_autocorrelation(pos, np.ones(n)) == (1.0, 1.0)


def test_the_patch_is_undone_after_extraction():
    from mirp._features.morph_3d_data import Data3DSpatial

    before = Data3DSpatial._spatial_distribution
    with rf._exact_spatial_autocorrelation():
        assert Data3DSpatial._spatial_distribution is rf._mirp_spatial_distribution
    assert Data3DSpatial._spatial_distribution is before


def test_mri_spacing_is_used_in_mm():
    """An anisotropic box: MIRP's voxel-count volume must be n_voxels x voxel volume (the spacing reached MIRP)."""
    image = np.random.default_rng(0).normal(100, 10, size=(12, 14, 16))
    mask = np.zeros_like(image)
    mask[3:9, 4:10, 5:12] = 1
    feats = extract_lesion_features(image, mask, (1.5, 2.5, 0.7), modality="mri")
    assert feats["mri_morph_vol_approx"] == pytest.approx(6 * 6 * 7 * 1.5 * 2.5 * 0.7, rel=1e-12)
    assert feats["mri_stat_mean"] == pytest.approx(image[mask > 0].mean(), rel=1e-12)


def test_shape_2d_on_hand_made_masks():
    rect = np.zeros((40, 60))
    rect[5:35, 10:20] = 1  # 30 tall, 10 wide: taller than wide
    s = shape_2d(rect)
    assert s["shape2d_area"] == 300
    assert s["shape2d_height_width_ratio"] == 3.0
    assert s["shape2d_solidity"] == 1.0 and s["shape2d_extent"] == 1.0
    yy, xx = np.mgrid[:101, :101]
    disc = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 40**2).astype(float)
    d = shape_2d(disc, (0.5, 0.5))
    assert d["shape2d_area"] == pytest.approx(disc.sum() * 0.25)
    assert d["shape2d_circularity"] == pytest.approx(1.0, abs=0.1)
    assert d["shape2d_major_axis"] == pytest.approx(40.0, rel=0.02)  # 2 x 40 px x 0.5 mm
    two = rect.copy()
    two[36:38, 40:42] = 1  # a speck: the largest component is measured
    assert shape_2d(two)["shape2d_area"] == 300
    with pytest.raises(DataError, match="non-empty 2-D mask"):
        shape_2d(np.zeros((5, 5)))


def test_settings_are_validated():
    with pytest.raises(ParameterError, match="exactly one of bin_number and bin_width"):
        RadiomicsSettings(bin_number=32, bin_width=25.0)
    with pytest.raises(ParameterError, match="bin_number must be an integer >= 2"):
        RadiomicsSettings(bin_number=1)
    with pytest.raises(ParameterError, match="normalisation"):
        RadiomicsSettings(normalisation="zscore")
    with pytest.raises(ParameterError, match="fixed bin_width needs normalisation='standardisation'"):
        RadiomicsSettings(bin_number=0, bin_width=0.25)
    assert RadiomicsSettings(bin_number=0, bin_width=0.25, normalisation="standardisation").bin_number is None
    # each modality's cache key depends on its own options only
    iso = RadiomicsSettings(mri_spacing_mm=1.0)
    assert iso.key("us") == RadiomicsSettings().key("us") and iso.key("mri") != RadiomicsSettings().key("mri")
    a, b = RadiomicsSettings(), RadiomicsSettings(bin_number=16)
    assert a.key() != b.key() and a.key() == RadiomicsSettings().key()
    assert "mirp" in a.to_dict()["library"]


def _cohort(tmp_path: Path, n: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        pid = f"P{i}"
        us = rng.integers(0, 255, size=(40, 50)).astype(np.uint8)
        us_mask = np.zeros((40, 50), np.uint8)
        us_mask[10 : 25 + i, 12:30] = 255
        mri = rng.normal(100, 20, size=(10, 20, 20)).astype(np.float32)
        mri_mask = np.zeros((10, 20, 20), np.uint8)
        mri_mask[3:7, 5 : 12 + i, 6:14] = 1
        paths = {
            "us_image": write_png(tmp_path / f"{pid}.png", us),
            "us_mask": write_png(tmp_path / f"{pid}_mask.png", us_mask),
            "mri_image": write_nifti(tmp_path / f"{pid}.nii.gz", mri, (2.0, 1.0, 1.0)),
            "mri_mask": write_nifti(tmp_path / f"{pid}_mask.nii.gz", mri_mask, (2.0, 1.0, 1.0)),
        }
        rows.append({"patient_id": pid, **{k: str(v) for k, v in paths.items()}})
    return pd.DataFrame(rows)


def test_cohort_features_are_cached_by_content(tmp_path, monkeypatch):
    cohort = _cohort(tmp_path)
    cache = tmp_path / "cache" / "us_features.csv"
    first = extract_cohort_features(cohort, "us", cache_file=cache)
    assert list(first["patient_id"]) == ["P0", "P1", "P2"] and cache.is_file()
    assert first.loc[1, "us_shape2d_area"] == 16 * 18
    computed: list[str] = []
    real = rf._extract_one

    def spy(job):
        computed.append(job[0])
        return real(job)

    monkeypatch.setattr(rf, "_extract_one", spy)
    again = extract_cohort_features(cohort, "us", cache_file=cache)
    assert computed == []  # everything from the cache
    pd.testing.assert_frame_equal(again, first, check_exact=False, rtol=1e-12)
    mask = np.zeros((40, 50), np.uint8)
    mask[5:30, 5:40] = 255
    write_png(cohort.loc[2, "us_mask"], mask)  # one patient's mask changes
    third = extract_cohort_features(cohort, "us", cache_file=cache)
    assert computed == ["P2"] and third.loc[2, "us_shape2d_area"] == 25 * 35
    extract_cohort_features(cohort, "us", cache_file=cache, settings=RadiomicsSettings(bin_number=8))
    assert computed == ["P2", "P0", "P1", "P2"]  # other settings: everything again


def test_parallel_equals_serial_and_mri_works(tmp_path):
    cohort = _cohort(tmp_path)
    serial = extract_cohort_features(cohort, "mri")
    parallel = extract_cohort_features(cohort, "mri", n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial.loc[0, "mri_morph_vol_approx"] == pytest.approx(4 * 7 * 8 * 2.0)


def test_a_bad_lesion_names_the_patient_and_files(tmp_path):
    cohort = _cohort(tmp_path)
    write_png(cohort.loc[1, "us_mask"], np.zeros((40, 50), np.uint8))
    with pytest.raises(DataError, match=r"patient P1 \(us\).*non-empty mask.*P1_mask\.png.*re-run notebook 05"):
        extract_cohort_features(cohort, "us")
