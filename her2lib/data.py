"""The cohort data layer (paper, Methods: *Patients* and *Image acquisition*).

One manifest (``manifest.csv``, one row per patient, paths relative to the manifest) describes a cohort;
:func:`load_cohort` validates all of it before any notebook trains, :func:`read_image` reads a PNG or NIfTI
image as ``float32`` with its spacing, and :func:`write_nifti` / :func:`write_png` write images atomically.

Manifest columns
----------------
Required: ``patient_id, split (train|test|external), her2 (0|1)`` and at least one modality pair
``us_image, us_mask`` or ``mri_image, mri_mask`` (empty cells = that patient lacks the modality).
Optional descriptive columns: the ``column`` names of ``tables_1_3.json`` with its ``codes``, ``age`` (years),
``mri_size_mm`` (mm), ``her2_ihc`` (``0, 1+, 2+, 3+``) and ``fish`` (``positive, negative, not_done``).
Missing optional columns or empty cells are allowed and reported (``df.attrs["missing"]``).

Three-class HER2 label
----------------------
:func:`her2_class` is the ASCO/CAP 2018/2023 rule (HER2-zero, HER2-low, HER2-positive) from IHC and ISH;
:func:`her2_classes` applies it to a cohort table; :func:`load_cohort` adds it as the ``her2_class`` column, rejects
a binary ``her2`` label that contradicts IHC/ISH and reports the class counts per split.

Science layer: imports core modules only (the vocabulary comes from :mod:`her2lib.contract`). The cohort gallery
figure is :func:`her2lib.figures.cohort.cohort_gallery`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image

from .contract import (
    CONTINUOUS_COLUMNS,
    FISH_CODES,
    HER2_CLASSES,
    HER2_IHC_CODES,
    MODALITIES,
    PAPER_SPLITS,
    REQUIRED_COLUMNS,
    SPLITS,
    Task,
    table_spec,
)
from .contract import task as _task
from .errors import DataError
from .io import atomic_path, usable_cpus
from .options import did_you_mean, look_up_option

__all__ = [
    "DataError",
    "CohortWarning",
    "descriptive_columns",
    "read_image",
    "read_spacing_shape",
    "write_nifti",
    "write_png",
    "IMAGE_READER_VERSION",
    "CHECK_FILES",
    "load_cohort",
    "available_modalities",
    "stratified_split",
    "HER2_CLASSES",
    "her2_class",
    "her2_classes",
    "task_cohort",
]

#: The ``check_files`` levels of :func:`load_cohort`.
CHECK_FILES: tuple[str, ...] = ("full", "header", "exists")

#: Version of :func:`read_image`'s output; part of every ROI cache key (``her2lib.roi.cache_key``). Bump it
#: whenever ``read_image`` returns different values or axes for the same file.
#: read_image-2: 2-D colour images read by SimpleITK (JPEG, BMP, TIFF, MHA, NRRD) become luminance like PNGs.
IMAGE_READER_VERSION = "read_image-2"


class CohortWarning(UserWarning):
    """Something is missing from a cohort but the cohort is still usable (a column, a modality)."""


# ----------------------------------------------------------------------------------------------------------
# Descriptive columns (Tables 1-3: :func:`her2lib.contract.table_spec`)
# ----------------------------------------------------------------------------------------------------------
def descriptive_columns() -> dict[str, list]:
    """Descriptive manifest columns and their allowed codes (``her2`` excluded; it is required).

    Returns
    -------
    dict
        ``{column: [codes...]}`` for every categorical column of Tables 1-3 plus ``her2_ihc`` and ``fish``;
        the continuous columns ``age`` and ``mri_size_mm`` map to ``None``.
    """
    cols: dict[str, list | None] = {}
    for var in table_spec()["categorical"]:
        if var["column"] != "her2":
            cols[var["column"]] = list(var["codes"])
    cols["her2_ihc"] = list(HER2_IHC_CODES)
    cols["fish"] = list(FISH_CODES)
    for c in CONTINUOUS_COLUMNS:
        cols[c] = None
    return cols


# ----------------------------------------------------------------------------------------------------------
# The three-class HER2 label (ASCO/CAP 2018 testing rule; HER2-low as in the 2023 update / DESTINY-Breast04)
# ----------------------------------------------------------------------------------------------------------
# HER2_CLASSES (contract): the three classes in order (index = the class's integer label of a three-class model)

_IHC_ALIASES: dict[str, str] = {"0": "0", "1": "1+", "1+": "1+", "2": "2+", "2+": "2+", "3": "3+", "3+": "3+"}
_ISH_ALIASES: dict[str, str | None] = {
    "positive": "positive",
    "pos": "positive",
    "1": "positive",
    "negative": "negative",
    "neg": "negative",
    "0": "negative",
    "not_done": None,
    "": None,
}


def _norm_ihc(v: Any) -> str | None:
    """``"0" | "1+" | "2+" | "3+"``, None when missing, or raise ``ValueError`` for an unknown value."""
    if _blank(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        raise ValueError
    if isinstance(v, (int, np.integer, float, np.floating)):
        if not float(v).is_integer():
            raise ValueError
        v = str(int(v))
    s = str(v).strip()
    if s.endswith(".0"):  # "2.0" read back from a numeric column
        s = s[:-2]
    if s not in _IHC_ALIASES:
        raise ValueError
    return _IHC_ALIASES[s]


def _norm_ish(v: Any) -> str | None:
    """``"positive" | "negative"``, None when missing or not done, or raise ``ValueError``."""
    if _blank(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return "positive" if v else "negative"
    if isinstance(v, (int, np.integer, float, np.floating)):
        if float(v) not in (0.0, 1.0):
            raise ValueError
        v = str(int(v))
    s = str(v).strip().lower()
    if s.endswith(".0"):
        s = s[:-2]
    if s not in _ISH_ALIASES:
        raise ValueError
    return _ISH_ALIASES[s]


def _classify(her2_ihc: Any, fish: Any) -> tuple[str | None, str]:
    """``(class, "")`` or ``(None, why it is undefined)``; raises ``DataError`` for an unknown IHC or ISH value."""
    try:
        ihc = _norm_ihc(her2_ihc)
    except ValueError:
        raise DataError(
            f"her2_ihc = {her2_ihc!r} is not an IHC score; use 0, 1, 2, 3 or the manifest codes "
            f"{list(HER2_IHC_CODES)} (empty if unknown).{did_you_mean(str(her2_ihc), HER2_IHC_CODES)}"
        ) from None
    try:
        ish = _norm_ish(fish)
    except ValueError:
        raise DataError(
            f"fish = {fish!r} is not an ISH result; use 0/1, 'negative'/'positive', or leave it empty / "
            f"'not_done' when ISH was not done.{did_you_mean(str(fish), FISH_CODES)}"
        ) from None
    if ihc is None:
        return None, "IHC score missing; record her2_ihc (0, 1+, 2+, 3+) to classify the patient"
    if ihc == "3+" or ish == "positive":
        return "positive", ""
    if ihc == "2+" and ish is None:
        return None, "IHC 2+ without an ISH result (equivocal); record fish = positive or negative"
    return ("zero" if ihc == "0" else "low"), ""


def her2_class(her2_ihc: Any, fish: Any = None) -> str:
    """The three-class HER2 status of one tumour by the ASCO/CAP rule.

    Parameters
    ----------
    her2_ihc : int or str
        IHC score: 0, 1, 2, 3 or the manifest codes ``"0", "1+", "2+", "3+"``.
    fish : int, str or None
        ISH (FISH) result: 1 / ``"positive"`` (amplified), 0 / ``"negative"``, or missing (None, NaN, ``""``,
        ``"not_done"``).

    Returns
    -------
    str
        ``"zero"`` (IHC 0), ``"low"`` (IHC 1+, or IHC 2+ with ISH negative) or ``"positive"`` (IHC 3+, or
        IHC 2+ with ISH positive); one of :data:`HER2_CLASSES`.

    Raises
    ------
    DataError
        IHC missing, IHC 2+ without ISH (equivocal: undefined), or a value that is not an IHC score / ISH result.

    Notes
    -----
    ASCO/CAP 2018 (Wolff et al., *J Clin Oncol* 36:2105) calls a tumour HER2-positive when IHC is 3+ or ISH is
    positive; HER2-low (ASCO/CAP 2023 update, Wolff et al., *J Clin Oncol* 41:3867; DESTINY-Breast04) is IHC 1+ or
    IHC 2+ with negative ISH, HER2-zero is IHC 0, both among HER2-negative tumours. So an ISH-positive tumour is
    HER2-positive whatever its IHC score (IHC 0 or 1+ with positive ISH, rare and usually retested, is
    ``"positive"``), and an ISH result does not change IHC 0, 1+ (negative ISH) or 3+.
    """
    cls, why = _classify(her2_ihc, fish)
    if cls is None:
        raise DataError(
            f"HER2 class undefined for her2_ihc = {her2_ihc!r}, fish = {fish!r}: {why}; or leave the patient out "
            "of the three-class analysis."
        )
    return cls


def her2_classes(df: pd.DataFrame) -> pd.Series:
    """:func:`her2_class` of every patient of a cohort table, None where undefined.

    Parameters
    ----------
    df : pd.DataFrame
        With a ``her2_ihc`` column and optionally ``fish`` (e.g. :func:`load_cohort` output, or a raw manifest).

    Returns
    -------
    pd.Series of object, named ``her2_class``, indexed like ``df``
        ``"zero"``, ``"low"``, ``"positive"``, or None where IHC is missing or IHC 2+ has no ISH result (all
        None when ``df`` has no ``her2_ihc`` column).

    Raises
    ------
    DataError
        An IHC or ISH value that is not a known code, naming every such patient (``err.problems``).
    """
    out = pd.Series([None] * len(df), index=df.index, dtype=object, name="her2_class")
    if "her2_ihc" not in df.columns:
        return out
    pids = df["patient_id"].astype(str) if "patient_id" in df.columns else pd.Series(df.index.astype(str))
    fish = df["fish"] if "fish" in df.columns else pd.Series([None] * len(df), index=df.index)
    problems = []
    for i, (ihc, ish) in enumerate(zip(df["her2_ihc"].tolist(), fish.tolist())):
        try:
            out.iloc[i] = _classify(ihc, ish)[0]
        except DataError as exc:
            problems.append(f"patient {pids.iloc[i]}: {exc}")
    if problems:
        raise DataError(
            f"{len(problems)} patient(s) with an unknown IHC/ISH value:\n  - " + "\n  - ".join(problems), problems
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# Image IO
# ----------------------------------------------------------------------------------------------------------
def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a 2-D or 3-D image as ``float32``.

    Parameters
    ----------
    path : path-like
        ``.png`` (8- or 16-bit grayscale), ``.nii``/``.nii.gz``, or any format SimpleITK reads (``.mha``,
        ``.nrrd``, ``.jpg``, ``.tif``, ...). A 2-D colour image (RGB/RGBA, grey + alpha) becomes one luminance
        channel, ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's ``convert("L")``, also for SimpleITK formats), so a
        2-D image is always returned as ``(y, x)``.

    Returns
    -------
    array : np.ndarray, float32
        ``(y, x)`` for 2-D or ``(z, y, x)`` for 3-D images (NIfTI's ``(i, j, k)`` storage order reversed).
    spacing : tuple of float
        Voxel size in mm in the same axis order as ``array``; PNG has no spacing and gives ``(1.0, 1.0)``.

    Raises
    ------
    DataError
        The file is missing or cannot be decoded (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: image file not found; check the path in the manifest (relative to the "
            "manifest's folder) or rebuild the cohort."
        )
    try:
        if path.suffix.lower() == ".png":
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGB", "RGBA", "P", "LA"):
                    im = im.convert("L")
                arr = np.asarray(im).astype(np.float32)
            if arr.ndim != 2:
                raise ValueError(f"PNG has shape {arr.shape}, expected a 2-D grayscale image")
            return arr, (1.0, 1.0)
        if _is_nifti(path):
            img = nib.load(str(path))
            arr = np.asarray(img.dataobj, dtype=np.float32)
            zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
            while arr.ndim > 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
                zooms = zooms[:-1]
            if arr.ndim not in (2, 3):
                raise ValueError(f"NIfTI has shape {arr.shape}; expected a 2-D or 3-D image")
            arr = np.ascontiguousarray(arr.transpose(tuple(range(arr.ndim))[::-1]))
            return arr, tuple(zooms[: arr.ndim][::-1])
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        ncomp = img.GetNumberOfComponentsPerPixel()
        if ncomp > 1:
            if img.GetDimension() != 2 or ncomp not in (2, 3, 4):
                raise ValueError(
                    f"{img.GetDimension()}-D image with {ncomp} components per pixel; expected "
                    "a single-channel image (or a 2-D RGB/RGBA/grey+alpha one)"
                )
            arr = _luminance(arr)
        return arr.astype(np.float32), tuple(float(s) for s in img.GetSpacing())[::-1]
    except DataError:
        raise
    except Exception as exc:  # any decoder failure
        raise DataError(
            f"{path}: cannot read image ({type(exc).__name__}: {exc}); the file is corrupt or "
            "not an image; re-export or rebuild it."
        ) from exc


def _luminance(arr: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` colour -> ``(H, W)`` luminance as Pillow's ``convert("L")`` (ITU-R 601-2 weights; integer
    images rounded the way Pillow does, so a JPEG/TIFF/MHA and a PNG of the same pixels read the same)."""
    if arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0]
    rgb = arr[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
        return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return rgb.astype(np.float64) @ np.array([19595, 38470, 7471]) / 65536.0


def read_spacing_shape(path: str | os.PathLike) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and spacing of an image without decoding its voxels where the format allows (NIfTI header).

    Returns
    -------
    shape, spacing : tuple
        In ``(y, x)`` / ``(z, y, x)`` order, as :func:`read_image` would return them.
    """
    path = Path(path)
    if _is_nifti(path) and path.is_file():
        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            zooms = tuple(float(z) for z in img.header.get_zooms()[: len(shape)])
            while len(shape) > 3 and shape[-1] == 1:
                shape, zooms = shape[:-1], zooms[:-1]
            return shape[::-1], zooms[::-1]
        except Exception as exc:
            raise DataError(f"{path}: cannot read NIfTI header ({exc}); re-export the file.") from exc
    arr, sp = read_image(path)
    return arr.shape, sp


def write_nifti(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float], *, dtype: Any = None) -> Path:
    """Atomically write a ``(z, y, x)`` (or ``(y, x)``) array as NIfTI with a diagonal affine.

    Parameters
    ----------
    path : path-like
        Target ``.nii.gz`` (or ``.nii``) file.
    array : np.ndarray
        ``(z, y, x)`` or ``(y, x)``; stored in NIfTI ``(i, j, k) = (x, y, z)`` order so that
        :func:`read_image` returns the same array.
    spacing : sequence of float
        Voxel size in mm, same axis order as ``array``.
    dtype : numpy dtype, optional
        On-disk type (default: the array's; bool -> uint8, int64 -> int32, float64 -> float32).
    """
    array = np.asarray(array)
    if dtype is not None:
        array = array.astype(dtype)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    if len(spacing) != array.ndim:
        raise DataError(f"{path}: spacing {tuple(spacing)} does not match array dimensions {array.shape}.")
    data = np.ascontiguousarray(array.transpose(tuple(range(array.ndim))[::-1]))
    sp = [float(s) for s in spacing][::-1]
    affine = np.diag(sp + [1.0] * (4 - len(sp)))
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(tuple(sp))
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write a ``(y, x)`` ``uint8`` array as a grayscale PNG (deterministic bytes)."""
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"{path}: write_png needs a 2-D uint8 array, got {array.dtype} {array.shape}.")
    with atomic_path(path) as tmp:
        Image.fromarray(array, mode="L").save(tmp, format="PNG", optimize=False, compress_level=6)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------
def stratified_split(labels: Sequence[int] | np.ndarray, test_fraction: float = 48 / 197, seed: int = 0) -> np.ndarray:
    """Seeded train/test split stratified by label.

    Parameters
    ----------
    labels : array-like, shape (n_patients,)
        Class labels (e.g. HER2 0/1).
    test_fraction : float
        Fraction of each class sent to the test split (rounded per class); default 48/197 as in the paper.
    seed : int
        Seed of the permutation.

    Returns
    -------
    np.ndarray of str, shape (n_patients,)
        ``"train"`` or ``"test"`` per patient.
    """
    if not 0.0 <= float(test_fraction) < 1.0:
        raise DataError(f"test_fraction={test_fraction!r} must be in [0, 1).")
    y = np.asarray(labels)
    out = np.full(y.shape[0], "train", dtype=object)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    for cls in sorted(set(y.tolist())):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        n_test = int(np.floor(idx.size * float(test_fraction) + 0.5))
        out[idx[:n_test]] = "test"
    return out.astype(str)


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------
def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def _norm_code(v: Any, codes: list) -> Any:
    """Map a cell to its code (numbers as int when the codes are ints), or return a sentinel if invalid."""
    if all(isinstance(c, (int, np.integer)) for c in codes):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return _INVALID
        return int(f) if f.is_integer() and int(f) in codes else _INVALID
    s = str(v).strip()
    if s.endswith(".0") and s[:-2] in codes:  # "0.0" read back for her2_ihc "0"
        s = s[:-2]
    return s if s in [str(c) for c in codes] else _INVALID


_INVALID = object()


def _check_pair(pid: str, modality: str, img_path: Path, mask_path: Path, check: str) -> list[str]:
    """Validate one image/mask pair; returns a list of problem strings."""
    problems: list[str] = []
    fix_rebuild = "re-export the file or rebuild the cohort"
    for p, what in ((img_path, "image"), (mask_path, "mask")):
        if not p.is_file():
            problems.append(
                f"patient {pid}: {modality} {what} file {p} does not exist; fix the path in the "
                "manifest (paths are relative to the manifest) or restore the file."
            )
    if problems:
        return problems
    expected_ndim = 2 if modality == "us" else 3
    if check == "header":
        try:
            ishape, isp = read_spacing_shape(img_path)
            mshape, msp = read_spacing_shape(mask_path)
        except DataError as exc:
            return [f"patient {pid}: {exc}"]
        img = mask = None
    else:
        try:
            img, isp = read_image(img_path)
        except DataError as exc:
            problems.append(f"patient {pid}: {modality} image unreadable: {exc}")
            img = None
        try:
            mask, msp = read_image(mask_path)
        except DataError as exc:
            problems.append(f"patient {pid}: {modality} mask unreadable: {exc}")
            mask = None
        if img is None or mask is None:
            return problems
        ishape, mshape = img.shape, mask.shape
    if len(ishape) != expected_ndim:
        problems.append(
            f"patient {pid}: {modality} image {img_path} has shape {tuple(ishape)}; expected a "
            f"{expected_ndim}-D image; {fix_rebuild}."
        )
    if tuple(ishape) != tuple(mshape):
        problems.append(
            f"patient {pid}: {modality} mask {mask_path} has shape {tuple(mshape)} but the image "
            f"{img_path} has {tuple(ishape)}; the mask must be on the image grid; resample the "
            "mask onto the image or re-export both."
        )
    elif not np.allclose(np.asarray(isp, float), np.asarray(msp, float), rtol=1e-3, atol=1e-4):
        problems.append(
            f"patient {pid}: {modality} mask {mask_path} spacing {tuple(np.round(msp, 4))} mm "
            f"differs from image {img_path} spacing {tuple(np.round(isp, 4))} mm; resample the "
            "mask onto the image grid."
        )
    if img is not None and not np.isfinite(img).all():
        problems.append(f"patient {pid}: {modality} image {img_path} contains NaN or infinite values; {fix_rebuild}.")
    if mask is not None:
        vals = np.unique(mask)
        if not (set(vals.tolist()) <= {0.0, 1.0} or set(vals.tolist()) <= {0.0, 255.0}):
            shown = ", ".join(f"{v:g}" for v in vals[:6]) + (" ..." if vals.size > 6 else "")
            problems.append(
                f"patient {pid}: {modality} mask {mask_path} is not binary (values {shown}); "
                "save it with values 0/1 (or 0/255 for PNG)."
            )
        elif not (mask > 0).any():
            problems.append(
                f"patient {pid}: {modality} mask {mask_path} is empty (no lesion voxel); "
                "segment the lesion or drop this modality for the patient (empty path cells)."
            )
    return problems


def _read_manifest(manifest: str | os.PathLike) -> tuple[Path, pd.DataFrame]:
    """The absolute manifest path (a folder means its ``manifest.csv``) and its table, every cell a string."""
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    manifest = manifest.resolve()
    if not manifest.is_file():
        raise DataError(
            f"{manifest}: manifest not found; build the cohort (notebook 00_cohort or "
            "her2lib.synth.make_cohort) or point cohort_dir at a folder containing manifest.csv."
        )
    try:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{manifest}: cannot parse as CSV ({exc}); fix or regenerate the manifest.") from exc
    return manifest, df


def _check_columns(df: pd.DataFrame, manifest: Path, problems: list[str]) -> list[str]:
    """Required and image columns; returns the modalities whose two columns are present."""
    missing_req = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing_req:
        raise DataError(
            f"{manifest}: required column(s) {missing_req} missing (found {list(df.columns)}); "
            "add them (patient_id, split = train|test, her2 = 0|1).",
            [f"{manifest}: missing required column {c!r}" for c in missing_req],
        )
    modal_present = [m for m, mod in MODALITIES.items() if all(c in df.columns for c in mod.columns)]
    for mod in MODALITIES.values():
        ci, cm = mod.columns
        if (ci in df.columns) != (cm in df.columns):
            problems.append(
                f"{manifest}: column {ci!r} and {cm!r} must come together; add the "
                "missing one (empty cells if the patient lacks the modality)."
            )
    if not modal_present:
        problems.append(f"{manifest}: no image columns; add us_image+us_mask and/or mri_image+mri_mask.")
    if len(df) == 0:
        problems.append(f"{manifest}: the manifest has no patient rows; add one row per patient.")
    return modal_present


def _row_label(pids: pd.Series, i: int) -> str:
    """How messages name row ``i``: its patient id, or ``row N`` (the CSV line) when the id is empty."""
    return pids.iloc[i] or f"row {i + 2}"


def _check_ids_split_labels(df: pd.DataFrame, manifest: Path, problems: list[str]) -> pd.Series:
    """In place: strip patient ids, normalise ``split`` and make ``her2`` int64; returns the patient ids."""
    pids = df["patient_id"].astype(str).str.strip()
    df["patient_id"] = pids
    for i, pid in enumerate(pids):
        if pid == "":
            problems.append(f"{manifest}: row {i + 2} has an empty patient_id; give every row a unique id.")
    dup = pids[pids.duplicated(keep=False) & (pids != "")]
    for pid in sorted(set(dup)):
        rows = [int(r) + 2 for r in np.flatnonzero(pids.values == pid)]
        problems.append(
            f"patient {pid}: appears {len(rows)} times in {manifest.name} (rows {rows}); patient ids "
            "must be unique; remove or rename the duplicates."
        )
    split = df["split"].astype(str).str.strip().str.lower()
    for i, s in enumerate(split):
        if s not in SPLITS:
            problems.append(
                f"patient {_row_label(pids, i)}: split {df['split'].iloc[i]!r} in {manifest.name} "
                f"must be 'train', 'test' or 'external'.{did_you_mean(s, SPLITS)}"
            )
    df["split"] = split
    her2 = []
    for i, v in enumerate(df["her2"]):
        code = _norm_code(v, [0, 1])
        if code is _INVALID:
            problems.append(
                f"patient {_row_label(pids, i)}: her2 label {v!r} in {manifest.name} must be 0 "
                "(negative) or 1 (positive); map IHC 3+ or 2+/FISH+ to 1, else 0; drop patients "
                "without a label."
            )
            her2.append(-1)
        else:
            her2.append(code)
    df["her2"] = np.asarray(her2, dtype=np.int64)
    return pids


def _check_descriptive(
    df: pd.DataFrame, pids: pd.Series, manifest: Path, problems: list[str]
) -> tuple[list[str], dict[str, int]]:
    """In place: normalise the descriptive columns; returns the absent columns and the empty cells per column."""
    spec = descriptive_columns()
    missing_cols = [c for c in spec if c not in df.columns]
    empty_counts: dict[str, int] = {}
    for col, codes in spec.items():
        if col not in df.columns:
            continue
        out: list[Any] = []
        n_empty = 0
        for i, v in enumerate(df[col].tolist()):
            if _blank(v):
                n_empty += 1
                out.append(np.nan)
                continue
            if codes is None:
                try:
                    f = float(v)
                except ValueError:
                    f = np.nan
                if not np.isfinite(f) or f <= 0:
                    problems.append(
                        f"patient {_row_label(pids, i)}: {col} = {v!r} in {manifest.name} must be a "
                        "positive number (years / mm) or empty if unknown."
                    )
                out.append(f)
                continue
            code = _norm_code(v, codes)
            if code is _INVALID:
                problems.append(
                    f"patient {_row_label(pids, i)}: {col} = {v!r} in {manifest.name} is not one of "
                    f"{codes}; use the codes of tables_1_3.json or leave it empty."
                    f"{did_you_mean(v, codes)}"
                )
                out.append(np.nan)
            else:
                out.append(code)
        if n_empty:
            empty_counts[col] = n_empty
        if (
            codes is not None
            and all(isinstance(c, int) for c in codes)
            and n_empty == 0
            and not any(o is np.nan for o in out)
        ):
            df[col] = np.asarray(out, dtype=np.int64)
        else:
            df[col] = pd.Series(out, index=df.index, dtype=object if codes is not None else float)
    return missing_cols, empty_counts


def _check_her2_class(df: pd.DataFrame, pids: pd.Series, manifest: Path, problems: list[str]) -> dict[str, Any]:
    """In place: add ``her2_class`` (:func:`her2_class`, None where undefined) and report every patient whose
    binary ``her2`` contradicts it; returns the attrs ``her2_class_counts`` and ``her2_class_undefined``."""
    has_ihc = "her2_ihc" in df.columns
    fish = df["fish"].tolist() if "fish" in df.columns else [None] * len(df)
    classes: list[str | None] = []
    undefined: dict[str, str] = {}
    for i in range(len(df)):
        pid = _row_label(pids, i)
        if not has_ihc:
            cls, why = None, "no her2_ihc column in the manifest"
        else:  # codes were normalised (unknown ones reported, now NaN) by _check_descriptive
            ihc, ish = df["her2_ihc"].iloc[i], fish[i]
            cls, why = _classify(ihc, ish)
            label = int(df["her2"].iloc[i])
            if cls is not None and label in (0, 1) and (cls == "positive") != (label == 1):
                problems.append(
                    f"patient {pid}: her2 = {label} in {manifest.name} contradicts her2_ihc = {ihc!r}, "
                    f"fish = {ish if not _blank(ish) else 'missing'!r}, which make the tumour HER2-{cls} by the "
                    "ASCO/CAP rule (HER2-positive = IHC 3+ or ISH positive; IHC 0, 1+ and 2+ with negative ISH "
                    "are HER2-negative); correct the her2 label or the IHC/ISH cells."
                )
        classes.append(cls)
        if cls is None:
            undefined[pid] = why
    df["her2_class"] = pd.Series(classes, index=df.index, dtype=object)
    present = [sp for sp in SPLITS if sp in PAPER_SPLITS or (df["split"] == sp).any()]  # external only when there
    counts = {
        split: {c: int(sum(k == c for k, s in zip(classes, df["split"]) if s == split)) for c in HER2_CLASSES}
        for split in present
    }
    for split in present:
        counts[split]["undefined"] = int(sum(k is None for k, s in zip(classes, df["split"]) if s == split))
    return {"her2_class_counts": counts, "her2_class_undefined": undefined}


def _run_pair_checks(pending: list[tuple[int, tuple]], problems: list[str]) -> None:
    """In place: :func:`_check_pair` of every pending pair, on a few threads (decompression and decoding release
    the GIL: 8.6 -> 5.0 s for the default cohort on machine C), each pair's problems inserted where the serial
    loop would have put them."""
    if not pending:
        return
    with ThreadPoolExecutor(max_workers=min(4, usable_cpus())) as pool:
        found = list(pool.map(lambda args: _check_pair(*args), [args for _, args in pending]))
    for k in reversed(range(len(pending))):  # from the end, so the earlier positions still hold
        pos = pending[k][0]
        problems[pos:pos] = found[k]


def _check_files(
    df: pd.DataFrame, pids: pd.Series, manifest: Path, modal_present: list[str], check_files: str, problems: list[str]
) -> dict[str, list[str]]:
    """In place: make the image paths absolute (``""`` where a patient lacks the modality) and check the files;
    returns ``{modality: [patients without it]}``."""
    root = manifest.parent
    missing_modal: dict[str, list[str]] = {}
    pending: list[tuple[int, tuple]] = []  # header/decoding checks, run on threads below: (where in problems, args)
    for m in modal_present:
        ci, cm = MODALITIES[m].columns
        lacking: list[str] = []
        for col in (ci, cm):
            df[col] = df[col].astype(str).str.strip()
        for i in range(len(df)):
            pid = _row_label(pids, i)
            a, b = df[ci].iloc[i], df[cm].iloc[i]
            if a == "" and b == "":
                lacking.append(pid)
                continue
            if (a == "") != (b == ""):
                which = ci if a == "" else cm
                problems.append(
                    f"patient {pid}: {which} is empty but its partner is not in {manifest.name}; "
                    "give both the image and its mask, or leave both empty."
                )
                continue
            pa, pb = (root / a).resolve(), (root / b).resolve()
            df.iloc[i, df.columns.get_loc(ci)] = str(pa)
            df.iloc[i, df.columns.get_loc(cm)] = str(pb)
            if check_files == "exists":
                for p, what in ((pa, "image"), (pb, "mask")):
                    if not p.is_file():
                        problems.append(
                            f"patient {pid}: {m} {what} file {p} does not exist; fix the path in "
                            "the manifest (relative to the manifest) or restore the file."
                        )
            else:
                pending.append((len(problems), (pid, m, pa, pb, check_files)))
        if lacking:
            missing_modal[m] = lacking
    _run_pair_checks(pending, problems)
    for m, mod in MODALITIES.items():
        if m not in modal_present:
            missing_modal[m] = list(pids)
            for col in mod.columns:
                if col not in df.columns:
                    df[col] = ""
    return missing_modal


def _warn_missing(
    df: pd.DataFrame, manifest: Path, missing_cols: list[str], missing_modal: dict[str, list[str]]
) -> None:
    """CohortWarnings (pointing at :func:`load_cohort`'s caller) for what is absent but does not stop a run."""
    notes = []
    if missing_cols:
        notes.append(f"descriptive columns absent: {missing_cols}")
    for m, lst in missing_modal.items():
        if lst:
            notes.append(f"{m}: {len(lst)}/{len(df)} patients without images")
    if notes:
        warnings.warn(
            f"{manifest}: " + "; ".join(notes) + " (analyses needing them will be skipped).",
            CohortWarning,
            stacklevel=3,
        )
    if df.loc[df["split"] == "train", "her2"].value_counts().reindex([0, 1], fill_value=0).min() < 2:
        warnings.warn(
            f"{manifest}: the train split has fewer than 2 patients of one HER2 class; cross-validation cannot work.",
            CohortWarning,
            stacklevel=3,
        )


def load_cohort(manifest: str | os.PathLike, check_files: str = "full") -> pd.DataFrame:
    """Read and validate a cohort manifest; never writes anything.

    Parameters
    ----------
    manifest : path-like
        ``manifest.csv`` (or the folder containing it).
    check_files : {"full", "header", "exists"}
        ``"full"`` decodes every image and mask (finite values, binary non-empty masks, shapes and spacings);
        ``"header"`` checks existence, shapes and spacings from headers only (fast on large real data);
        ``"exists"`` only checks that files exist.

    Returns
    -------
    pd.DataFrame, shape (n_patients, n_columns)
        One row per patient, ``her2`` as int 0/1, path columns as absolute path strings (``""`` where the
        patient lacks that modality), categorical codes normalised (binary columns as int).
        ``df.attrs["missing"]`` = ``{"columns": [...], "modalities": {modality: [patient ids lacking it]},
        "values": {column: n_empty_cells}}``; ``df.attrs["manifest"]`` = the absolute manifest path.
        The last column, ``her2_class``, is the three-class label (:func:`her2_class`: ``"zero"``, ``"low"``,
        ``"positive"``), None where undefined (no ``her2_ihc`` column or cell, or IHC 2+ without ISH; the binary
        task still uses these patients). ``df.attrs["her2_class_counts"]`` = ``{split: {class: n, ...,
        "undefined": n}}``; ``df.attrs["her2_class_undefined"]`` = ``{patient_id: why}``.

    Raises
    ------
    DataError
        Listing every problem found (``err.problems``): missing required columns, duplicate or empty patient
        ids, split not train/test, labels not 0/1, unknown codes, a ``her2`` label contradicting ``her2_ihc`` /
        ``fish`` (``her2 = 1`` with IHC 0, 1+ or 2+ and negative ISH; ``her2 = 0`` with IHC 3+ or positive ISH),
        missing/corrupt files, shape or spacing mismatch, non-binary or empty masks, non-finite images.

    Warns
    -----
    CohortWarning
        Descriptive columns or a modality absent (for some or all patients), or a training split with fewer
        than two patients of one HER2 class.
    """
    look_up_option(check_files, CHECK_FILES, name="check_files", error=DataError)
    manifest, df = _read_manifest(manifest)
    problems: list[str] = []
    modal_present = _check_columns(df, manifest, problems)
    pids = _check_ids_split_labels(df, manifest, problems)
    missing_cols, empty_counts = _check_descriptive(df, pids, manifest, problems)
    class_attrs = _check_her2_class(df, pids, manifest, problems)
    missing_modal = _check_files(df, pids, manifest, modal_present, check_files, problems)
    if problems:
        head = f"{manifest}: {len(problems)} problem(s) found:\n  - " + "\n  - ".join(problems[:50])
        if len(problems) > 50:
            head += f"\n  ... and {len(problems) - 50} more (see err.problems)"
        raise DataError(head, problems)
    _warn_missing(df, manifest, missing_cols, missing_modal)
    df.attrs["manifest"] = str(manifest)
    df.attrs["missing"] = {"columns": missing_cols, "modalities": missing_modal, "values": empty_counts}
    df.attrs.update(class_attrs)
    return df


def available_modalities(df: pd.DataFrame, require_all: bool = True) -> list[str]:
    """Modalities with image files in a cohort loaded by :func:`load_cohort`.

    Parameters
    ----------
    df : pd.DataFrame
        Output of :func:`load_cohort`.
    require_all : bool
        If True, a modality counts only if every patient has it; else if at least one patient has it.

    Returns
    -------
    list of str
        Subset of ``["us", "mri"]`` in that order.
    """
    out = []
    for m, mod in MODALITIES.items():
        ci = mod.image_column
        if ci not in df.columns:
            continue
        has = df[ci].astype(str).str.strip() != ""
        if (has.all() if require_all else has.any()) and len(df):
            out.append(m)
    return out


def task_cohort(df: pd.DataFrame, task: str | Task) -> pd.DataFrame:
    """The patients a task concerns, with their labels checked.

    Parameters
    ----------
    df : pd.DataFrame
        Output of :func:`load_cohort` (with its ``her2_class`` column).
    task : str or Task
        ``"binary"`` (``df`` is returned as it is: every patient, labels ``her2``), ``"three-class"`` or
        ``"low-vs-zero"`` (:data:`her2lib.contract.TASKS`).

    Returns
    -------
    pd.DataFrame
        For a class task: the rows whose ``her2_class`` is one of the task's (``low-vs-zero``: the HER2-negative
        patients), in the input order, with ``attrs`` kept and ``attrs["task"]`` / ``attrs["task_excluded"]``
        (``{patient_id: why}`` of the patients left out because their class is undefined) added. Patients of other
        classes (HER2-positive for ``low-vs-zero``) are left out without being listed.

    Raises
    ------
    DataError
        A class task on a cohort without IHC scores, or with too few patients of a class in a split to train and
        test on (fewer than 4 per class in the training cohort, none in the test cohort).
    """
    t = _task(task)
    if t.is_binary:
        return df
    if "her2_class" not in df.columns or df["her2_class"].isna().all():
        raise DataError(
            f"task={t.key!r} needs the HER2 class of every patient (IHC score her2_ihc, and ISH for IHC 2+), but "
            f"the cohort {df.attrs.get('manifest', '')} has none; record her2_ihc / fish in the manifest, or use "
            "task='binary'."
        )
    undefined = df["her2_class"].isna()
    if t.keep is not None and "positive" not in t.keep:  # HER2-positive patients are not the task's anyway
        undefined &= df["her2"] != 1
    why = df.attrs.get("her2_class_undefined", {})
    excluded = {str(p): why.get(str(p), "HER2 class undefined") for p in df.loc[undefined, "patient_id"]}
    if excluded:
        warnings.warn(
            f"task={t.key!r}: {len(excluded)} patient(s) without a defined HER2 class are left out "
            f"({', '.join(list(excluded)[:10])}{' ...' if len(excluded) > 10 else ''}).",
            CohortWarning,
            stacklevel=2,
        )
    keep = df["her2_class"].isin(t.keep or t.classes)
    out = df.loc[keep].copy()
    counts = out.groupby(["split", "her2_class"]).size()
    short = [
        f"{split}/{cls}: {int(counts.get((split, cls), 0))}"
        for split, need in (("train", 4), ("test", 1))
        for cls in t.classes
        if counts.get((split, cls), 0) < need
    ]
    if short:
        raise DataError(
            f"task={t.key!r}: too few patients per class ({', '.join(short)}); each class needs >= 4 training "
            "patients (one per cross-validation fold) and >= 1 test patient. Use a larger cohort or another task."
        )
    out.attrs = {**df.attrs, "task": t.key, "task_excluded": excluded}
    return out
