"""Radiomic features of the lesion, from each modality's image and lesion mask (paper, Discussion: "the potential
additive value of radiomic features ... remains unexplored within our DL framework").

Science layer: pure functions on arrays and the cohort table; the run's cache file is passed in by
:func:`her2lib.stages.radiomics.run_radiomics`.

**Library.** The features are computed by MIRP 2.7 (Zwanenburg & Löck, *J. Open Source Softw.* 2024, 9(99):6413),
which implements the Image Biomarker Standardisation Initiative definitions (Zwanenburg et al., *Radiology* 2020,
295:328-338) and is itself checked against the IBSI reference values. Feature names are MIRP's IBSI-derived tags
(``stat_mean``, ``morph_volume``, ``cm_contrast_d1_3d_v_mrg``, ...) prefixed with the modality
(``us_``, ``mri_``). pyradiomics does not install from wheels on Python 3.11 (no cp311 wheels; the source build
fails), so it is not used.

**What is computed** (:class:`RadiomicsSettings`, recorded in provenance and in the cache key):

* **MRI (3-D)**: morphology (IBSI 3-D shape: volume, surface area, sphericity, diameters, ...), intensity
  statistics, intensity histogram, and the texture matrices GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM (3-D, merged
  over directions). Voxel spacing is the image's (mm); ``mri_spacing_mm > 0`` resamples to isotropic voxels first
  (MIRP's interpolation, IBSI section 2.4), which IBSI recommends before 3-D texture when voxels are anisotropic.
* **US (2-D)**: the same intensity and texture families computed in-plane (``by_slice``), plus 2-D shape features
  of the mask (:func:`shape_2d`, prefix ``shape2d_``: area, perimeter, axes, circularity, solidity, the
  height/width ratio of BI-RADS "orientation"). IBSI morphology is defined for 3-D volumes; a one-slice volume has
  no meaningful surface, so MIRP's morphology is not computed for US. A PNG has no pixel size: US lengths are in
  pixels unless the image format carries a spacing.
* **Discretisation**: a fixed bin number (``bin_number``, IBSI's recommendation for images in arbitrary units such
  as MRI and US), or a fixed bin width (``bin_width``) when given.
* **Normalisation**: ``"none"`` (default; the texture matrices are invariant to linear intensity rescaling under a
  fixed bin number) or ``"standardisation"`` (z-score inside MIRP's tissue mask).

**Exact spatial autocorrelation.** MIRP estimates Moran's I and Geary's C by a Monte Carlo loop for masks of 1000
voxels or more, and computes them exactly with a per-pair Python ``lambda`` below 2000: on a 2-core machine either
takes 5-20 s per lesion. :func:`extract_lesion_features` asks MIRP for the exact values (``no_approximation``) and,
while it runs, replaces MIRP's ``_spatial_distribution`` by :func:`spatial_autocorrelation`: the same formula,
vectorised in blocks (``tests/test_radiomics_features.py`` checks it equals MIRP's own computation to 1e-10).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import threading
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..contract import modality as _modality
from ..data import read_image
from ..errors import DataError, ParameterError
from ..io import sha256_file, write_csv
from ..options import look_up_option

__all__ = [
    "US_FAMILIES",
    "MRI_FAMILIES",
    "NORMALISATIONS",
    "RadiomicsSettings",
    "spatial_autocorrelation",
    "shape_2d",
    "extract_lesion_features",
    "extract_cohort_features",
    "feature_columns",
    "FEATURES_VERSION",
]

#: Feature families computed in-plane on the 2-D US image (MIRP family names).
US_FAMILIES: tuple[str, ...] = (
    "statistics",
    "intensity_histogram",
    "glcm",
    "glrlm",
    "glszm",
    "gldzm",
    "ngtdm",
    "ngldm",
)
#: Feature families computed on the 3-D MRI volume: IBSI morphology, then the US families.
MRI_FAMILIES: tuple[str, ...] = ("morphology", *US_FAMILIES)
NORMALISATIONS: tuple[str, ...] = ("none", "standardisation")
#: Voxels kept around the mask's bounding box before MIRP runs (interpolation support; texture reads masked voxels).
_CROP_MARGIN = 4
#: Largest block (rows x voxels) of :func:`spatial_autocorrelation`'s distance matrix: about 160 MB of float64.
_BLOCK_CELLS = 20_000_000
#: Version of her2lib's own feature code (cropping, 2-D shape, normalisation): part of the cache key. Raise it when
#: that code changes what it computes.
FEATURES_VERSION = 2
_ID_COLUMNS = ("patient_id", "cache_key")
_PATCH_LOCK = threading.RLock()


@dataclass(frozen=True)
class RadiomicsSettings:
    """Feature-extraction settings; every field enters the cache key and the run's provenance.

    Attributes
    ----------
    bin_number : int or None
        Fixed bin number discretisation (IBSI FBN) for the histogram and texture families; default 32. None or 0:
        not used.
    bin_width : float or None
        Fixed bin width (IBSI FBS) instead, in units of the normalised intensity; give one of the two (None or 0:
        not used). Needs ``normalisation="standardisation"``: one width cannot suit US grey levels and MRI's
        arbitrary units at once.
    mri_spacing_mm : float
        Isotropic voxel size (mm) the MRI volume is resampled to before extraction; 0 keeps the native spacing.
    normalisation : {"none", "standardisation"}
        ``"standardisation"``: each image z-scored over all its voxels (the whole image, before the lesion is
        cropped, so the values do not depend on the crop) before any feature; ``"none"``: raw intensities (the
        texture families are invariant to a linear rescaling under a fixed bin number; first-order ``stat_*``
        features then carry the scanner's units).
    us_families, mri_families : tuple of str
        MIRP feature families per modality (defaults :data:`US_FAMILIES`, :data:`MRI_FAMILIES`).
    """

    bin_number: int | None = 32
    bin_width: float | None = None
    mri_spacing_mm: float = 0.0
    normalisation: str = "none"
    us_families: tuple[str, ...] = field(default=US_FAMILIES)
    mri_families: tuple[str, ...] = field(default=MRI_FAMILIES)

    def __post_init__(self) -> None:
        for name in ("bin_number", "bin_width"):  # 0 means "not used" (a notebook parameter cannot be None-typed)
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)
        if (self.bin_number is None) == (self.bin_width is None):
            raise ParameterError(
                f"RadiomicsSettings: give exactly one of bin_number and bin_width; got bin_number={self.bin_number!r}, "
                f"bin_width={self.bin_width!r}."
            )
        if self.bin_number is not None and (int(self.bin_number) != self.bin_number or self.bin_number < 2):
            raise ParameterError(f"RadiomicsSettings: bin_number must be an integer >= 2; got {self.bin_number!r}.")
        if self.bin_width is not None and not self.bin_width > 0:
            raise ParameterError(f"RadiomicsSettings: bin_width must be > 0; got {self.bin_width!r}.")
        if self.bin_width is not None and self.normalisation != "standardisation":
            raise ParameterError(
                "RadiomicsSettings: a fixed bin_width needs normalisation='standardisation' (US grey levels and MRI "
                "units differ); use bin_number, or set the normalisation."
            )
        if not self.mri_spacing_mm >= 0:
            raise ParameterError(
                f"RadiomicsSettings: mri_spacing_mm must be >= 0 (0 = native); got {self.mri_spacing_mm!r}."
            )
        look_up_option(self.normalisation, NORMALISATIONS, name="normalisation")
        object.__setattr__(self, "us_families", tuple(self.us_families))
        object.__setattr__(self, "mri_families", tuple(self.mri_families))

    def to_dict(self) -> dict[str, Any]:
        """The settings plus the code and library versions that compute them (JSON-ready)."""
        libs = ", ".join(f"{lib} {version(lib)}" for lib in ("mirp", "scikit-image", "numpy"))
        return {**asdict(self), "library": libs, "her2lib_features": FEATURES_VERSION}

    def key(self, modality: str | None = None) -> str:
        """SHA-256 of :meth:`to_dict` (part of every cached row's key); with ``modality``, of the fields that
        modality's features depend on only (the US cache survives a change of ``mri_spacing_mm``)."""
        d = self.to_dict()
        if modality is not None:
            other = "mri" if _modality(modality).key == "us" else "us"
            d = {k: v for k, v in d.items() if not k.startswith(other)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def mirp_options(self, modality: str) -> dict[str, Any]:
        """Keyword arguments of ``mirp.extract_features`` for ``modality`` (``"us"`` or ``"mri"``)."""
        opts: dict[str, Any] = {
            "base_feature_families": list(self.us_families if modality == "us" else self.mri_families),
            "by_slice": modality == "us",
            "no_approximation": True,
            "intensity_normalisation": "none",  # standardisation is done on the whole image (extract_lesion_features)
        }
        if self.bin_number is not None:
            opts |= {
                "base_discretisation_method": "fixed_bin_number",
                "base_discretisation_n_bins": int(self.bin_number),
            }
        else:
            opts |= {
                "base_discretisation_method": "fixed_bin_size",
                "base_discretisation_bin_width": float(self.bin_width),
            }
        if modality == "mri" and self.mri_spacing_mm > 0:
            opts["new_spacing"] = float(self.mri_spacing_mm)
        return opts


# ----------------------------------------------------------------------------------------------------------------
# Spatial autocorrelation (Moran's I, Geary's C), exact and vectorised
# ----------------------------------------------------------------------------------------------------------------
def spatial_autocorrelation(positions: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Moran's I and Geary's C of the intensities in a mask, with inverse-distance weights (IBSI 3.1.16-17).

    Parameters
    ----------
    positions : np.ndarray, shape (n_voxels, n_dims)
        Voxel centres in mm.
    values : np.ndarray, shape (n_voxels,)
        Intensities.

    Returns
    -------
    (float, float)
        Moran's I and Geary's C over all pairs ``i < j`` with weight ``1 / ||x_i - x_j||``; both 1.0 when all
        intensities are equal (MIRP's convention).
    """
    pos = np.asarray(positions, dtype=float)
    g = np.asarray(values, dtype=float)
    n = g.size
    dev = g - g.mean()
    moran_nom = geary_nom = w_sum = 0.0
    cols = np.arange(n)
    block = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, n, block):
        stop = min(start + block, n)
        d = np.sqrt(((pos[start:stop, None, :] - pos[None, :, :]) ** 2).sum(axis=-1))
        upper = cols[None, :] > np.arange(start, stop)[:, None]
        w = np.zeros_like(d)
        w[upper] = 1.0 / d[upper]
        moran_nom += float(np.sum(w * dev[start:stop, None] * dev[None, :]))
        geary_nom += float(np.sum(w * (dev[start:stop, None] - dev[None, :]) ** 2))
        w_sum += float(w.sum())
    gl_denom = float(np.sum(dev**2))
    if gl_denom <= 0.0:
        return 1.0, 1.0
    return n * moran_nom / (w_sum * gl_denom), (n - 1.0) * geary_nom / (2.0 * w_sum * gl_denom)


def _mirp_spatial_distribution(self, data: pd.DataFrame) -> tuple[float, float]:
    """Drop-in for MIRP's ``Data3DSpatial._spatial_distribution`` (same inputs: voxel table with ``z, y, x, g``)."""
    pos = np.multiply(data[["z", "y", "x"]].to_numpy(dtype=float), self.spacing)
    return spatial_autocorrelation(pos, data["g"].to_numpy(dtype=float))


@contextmanager
def _exact_spatial_autocorrelation():
    """Within the block, MIRP computes Moran's I and Geary's C by :func:`spatial_autocorrelation`. The patch is
    process-wide: a lock serialises extractions in threads (her2lib's own workers are processes)."""
    from mirp._features.morph_3d_data import Data3DSpatial  # lazy: mirp is imported only when features are computed

    with _PATCH_LOCK:
        original = Data3DSpatial._spatial_distribution
        Data3DSpatial._spatial_distribution = _mirp_spatial_distribution
        try:
            yield
        finally:
            Data3DSpatial._spatial_distribution = original


# ----------------------------------------------------------------------------------------------------------------
# 2-D shape (US)
# ----------------------------------------------------------------------------------------------------------------
def shape_2d(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, float]:
    """2-D shape features of a lesion mask (the largest connected component), in the image's units.

    Parameters
    ----------
    mask : np.ndarray, shape (y, x)
        Lesion mask (non-zero = lesion).
    spacing : (float, float)
        Pixel size (y, x); a PNG's is (1, 1): lengths in pixels.

    Returns
    -------
    dict
        ``shape2d_area``, ``_perimeter``, ``_major_axis``, ``_minor_axis``, ``_elongation`` (minor / major),
        ``_eccentricity``, ``_circularity`` (4 pi area / perimeter², 1 for a disc), ``_solidity`` (area / convex
        area), ``_extent`` (area / bounding-box area), ``_height_width_ratio`` (bounding-box height / width:
        above 1 is BI-RADS "not parallel", taller than wide), ``_max_diameter``.
    """
    from skimage import measure  # lazy: scikit-image comes with the radiomics extra (MIRP)

    m = np.asarray(mask) > 0
    if m.ndim != 2 or not m.any():
        raise DataError(f"shape_2d: needs a non-empty 2-D mask; got shape {m.shape} with {int(m.sum())} pixels.")
    sy, sx = (float(s) for s in spacing)
    if sy != sx:  # regionprops assumes square pixels: resample lengths is out of scope; say so
        raise DataError(f"shape_2d: pixels must be square; got spacing {tuple(spacing)}.")
    labels = measure.label(m, connectivity=2)
    props = max(measure.regionprops(labels), key=lambda p: p.area)
    y0, x0, y1, x1 = props.bbox
    perimeter = float(props.perimeter) * sy
    area = float(props.area) * sy * sx
    major, minor = float(props.axis_major_length) * sy, float(props.axis_minor_length) * sy
    return {
        "shape2d_area": area,
        "shape2d_perimeter": perimeter,
        "shape2d_major_axis": major,
        "shape2d_minor_axis": minor,
        "shape2d_elongation": minor / major if major > 0 else 1.0,
        "shape2d_eccentricity": float(props.eccentricity),
        "shape2d_circularity": 4.0 * np.pi * area / perimeter**2 if perimeter > 0 else 1.0,
        "shape2d_solidity": float(props.solidity),
        "shape2d_extent": float(props.extent),
        "shape2d_height_width_ratio": (y1 - y0) / (x1 - x0),
        "shape2d_max_diameter": float(props.feret_diameter_max) * sy,
    }


# ----------------------------------------------------------------------------------------------------------------
# One lesion
# ----------------------------------------------------------------------------------------------------------------
def _crop(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(mask)
    box = tuple(slice(max(int(i.min()) - _CROP_MARGIN, 0), int(i.max()) + _CROP_MARGIN + 1) for i in idx)
    return np.ascontiguousarray(image[box], dtype=float), np.ascontiguousarray(mask[box], dtype=np.uint8)


def _mirp_input(cls, array: np.ndarray, spacing: Sequence[float], name: str, modality: str | None):
    """A MIRP image/mask object around an in-memory array with its voxel spacing (z, y, x), built as MIRP's own
    ``numpy.ndarray`` import builds one (that import has no spacing argument, and a spacing is needed for mm)."""
    obj = cls(
        image_data=array,
        image_spacing=tuple(float(s) for s in spacing),
        image_origin=(0.0,) * array.ndim,
        sample_name=name,
        image_modality=modality,
    )
    obj.image_metadata = array
    obj.complete()
    obj.update_image_data()
    return obj


def extract_lesion_features(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    *,
    modality: str,
    settings: RadiomicsSettings | None = None,
    name: str = "lesion",
) -> dict[str, float]:
    """Radiomic features of one lesion.

    Parameters
    ----------
    image : np.ndarray, shape (y, x) for US or (z, y, x) for MRI
        The image, in its own intensity units.
    mask : np.ndarray, same shape
        Lesion mask (non-zero = lesion).
    spacing : sequence of float
        Pixel / voxel size in the array's axis order (mm; (1, 1) for a PNG).
    modality : {"us", "mri"}
    settings : RadiomicsSettings, optional
    name : str
        Used in error messages (the patient id).

    Returns
    -------
    dict
        ``{"<modality>_<feature>": value}``, features in MIRP's order then (US) :func:`shape_2d`'s.
    """
    import mirp  # lazy: MIRP (and ITK under it) load in seconds; only notebook 05's radiomics step needs them
    from mirp._data_import.numpy_file import ImageNumpyFile, MaskNumpyFile  # lazy: as above

    mod = _modality(modality).key
    settings = settings or RadiomicsSettings()
    img, msk = np.asarray(image), np.asarray(mask) > 0
    want = 2 if mod == "us" else 3
    if img.shape != msk.shape or img.ndim != want or not msk.any():
        raise DataError(
            f"{name} ({mod}): radiomics needs a {want}-D image and a non-empty mask of the same shape; got image "
            f"{img.shape}, mask {msk.shape} with {int(msk.sum())} voxels. Check the manifest's {mod}_image and {mod}_mask."
        )
    if settings.normalisation == "standardisation":  # over the whole image, before the crop
        sd = float(img.std())
        img = (img - img.mean()) / (sd if sd > 0 else 1.0)
    img_c, msk_c = _crop(img, msk)
    sp = tuple(spacing) if mod == "mri" else (1.0, *tuple(spacing))
    if mod == "us":
        img_c, msk_c = img_c[None], msk_c[None]
    with _exact_spatial_autocorrelation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.INFO)
        try:
            tables = mirp.extract_features(
                image=_mirp_input(ImageNumpyFile, img_c, sp, name, "mr" if mod == "mri" else None),
                mask=_mirp_input(MaskNumpyFile, msk_c, sp, name, None),
                export_features=True,
                **settings.mirp_options(mod),
            )
        finally:
            logging.disable(level)
    row = tables[0].iloc[0]
    feats = {f"{mod}_{k}": float(v) for k, v in row.items() if _is_feature(k)}
    if mod == "us":
        feats |= {f"us_{k}": v for k, v in shape_2d(msk, spacing).items()}
    return feats


def _is_feature(column: str) -> bool:
    return not column.startswith(("image_", "sample_name"))


# ----------------------------------------------------------------------------------------------------------------
# The cohort, with a content-keyed cache
# ----------------------------------------------------------------------------------------------------------------
def _row_key(image_path: str, mask_path: str, settings_key: str) -> str:
    h = hashlib.sha256()
    for part in (sha256_file(image_path), sha256_file(mask_path), settings_key):
        h.update(part.encode())
    return h.hexdigest()


def _extract_one(job: tuple[str, str, str, str, RadiomicsSettings]) -> dict[str, Any]:
    pid, mod, image_path, mask_path, settings = job
    try:
        image, spacing = read_image(image_path)
        mask, mask_spacing = read_image(mask_path)
        if not np.allclose(spacing, mask_spacing):
            raise DataError(f"image spacing {spacing} differs from the mask's {mask_spacing}")
        return {
            "patient_id": pid,
            **extract_lesion_features(image, mask, spacing, modality=mod, settings=settings, name=pid),
        }
    except Exception as exc:  # name the patient and the files: the message must lead to the fix
        raise DataError(
            f"radiomics: patient {pid} ({mod}): {type(exc).__name__}: {exc} (image {image_path}, mask {mask_path}). "
            "Fix or remove the patient's files in the manifest, then re-run notebook 05."
        ) from exc


def _read_cache(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(_ID_COLUMNS))
    try:
        return pd.read_csv(path, dtype={"patient_id": str, "cache_key": str})
    except Exception as exc:  # a corrupt cache is recomputed, not trusted
        warnings.warn(f"radiomics cache {path} is unreadable ({exc}); recomputing it.", UserWarning, stacklevel=3)
        return pd.DataFrame(columns=list(_ID_COLUMNS))


def extract_cohort_features(
    cohort: pd.DataFrame,
    modality: str,
    *,
    settings: RadiomicsSettings | None = None,
    cache_file: str | Path | None = None,
    n_jobs: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Radiomic features of one modality for every patient that has it, reusing a content-keyed cache.

    Parameters
    ----------
    cohort : DataFrame
        :func:`her2lib.data.load_cohort` output (absolute ``<modality>_image`` / ``_mask`` paths; ``""`` where a
        patient lacks the modality, who is left out).
    modality : {"us", "mri"}
    settings : RadiomicsSettings, optional
    cache_file : path, optional
        CSV of earlier results (``patient_id, cache_key, features...``). A row is reused when its key, the SHA-256 of
        the image's and the mask's bytes and of ``settings`` (with the MIRP version), still matches; the file is
        rewritten atomically with the current cohort's rows.
    n_jobs : int
        Worker processes for the lesions that are not cached.
    progress : bool
        tqdm progress bar over the lesions computed.

    Returns
    -------
    DataFrame, shape (n_patients_with_modality, 1 + n_features)
        ``patient_id`` then the features (:func:`extract_lesion_features`), in cohort order.
    """
    mod = _modality(modality)
    settings = settings or RadiomicsSettings()
    skey = settings.key(mod.key)
    have = cohort[cohort[mod.image_column].astype(str) != ""]
    jobs, keys = [], {}
    for pid, img, msk in zip(have["patient_id"], have[mod.image_column], have[mod.mask_column]):
        keys[pid] = _row_key(img, msk, skey)
        jobs.append((pid, mod.key, img, msk, settings))
    cache = _read_cache(Path(cache_file)) if cache_file is not None else pd.DataFrame(columns=list(_ID_COLUMNS))
    cached = cache[cache["cache_key"] == cache["patient_id"].map(keys)]
    todo = [j for j in jobs if j[0] not in set(cached["patient_id"])]
    rows = _run_jobs(todo, n_jobs=n_jobs, progress=progress, desc=f"radiomics {mod.key}")
    new = pd.DataFrame([{"patient_id": r["patient_id"], "cache_key": keys[r["patient_id"]], **r} for r in rows])
    table = pd.concat([cached, new], ignore_index=True) if len(cached) else new
    table = table.set_index("patient_id").loc[list(keys)].copy().reset_index()  # copy: one block, no fragments
    if cache_file is not None and len(new):
        write_csv(cache_file, table, index=False)
    return table.drop(columns="cache_key").reset_index(drop=True)


def _run_jobs(jobs: list, *, n_jobs: int, progress: bool, desc: str) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm  # lazy: only when there is something to compute

    if not jobs:
        return []
    if n_jobs > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(min(n_jobs, len(jobs))) as pool:
            it: Iterable = pool.imap(_extract_one, jobs, chunksize=2)
            return list(tqdm(it, total=len(jobs), desc=desc, disable=not progress))
    return [_extract_one(j) for j in tqdm(jobs, desc=desc, disable=not progress)]


def feature_columns(features: pd.DataFrame) -> list[str]:
    """The feature columns of a features table (every column but ``patient_id``)."""
    return [c for c in features.columns if c not in _ID_COLUMNS]
