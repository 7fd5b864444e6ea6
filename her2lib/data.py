"""The cohort data layer (paper, Methods: *Patients* and *Image acquisition*).

One manifest (``manifest.csv``, one row per patient, paths relative to the manifest) describes a cohort;
:func:`load_cohort` validates all of it before any notebook trains, :func:`read_image` reads a PNG or NIfTI
image as ``float32`` with its spacing, and :func:`write_nifti` / :func:`write_png` write images atomically.

Manifest columns
----------------
Required: ``patient_id, split (train|test), her2 (0|1)`` and at least one modality pair
``us_image, us_mask`` or ``mri_image, mri_mask`` (empty cells = that patient lacks the modality).
Optional descriptive columns: the ``column`` names of ``tables_1_3.json`` with its ``codes``, ``age`` (years),
``mri_size_mm`` (mm), ``her2_ihc`` (``0, 1+, 2+, 3+``) and ``fish`` (``positive, negative, not_done``).
Missing optional columns or empty cells are allowed and reported (``df.attrs["missing"]``).
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import DataError
from .io import atomic_path, save_figure

__all__ = ["DataError", "CohortWarning", "MODALITIES", "PATH_COLUMNS", "REQUIRED_COLUMNS", "table_spec",
           "descriptive_columns", "read_image", "read_spacing_shape", "write_nifti", "write_png",
           "IMAGE_READER_VERSION", "load_cohort", "available_modalities", "stratified_split", "cohort_gallery"]

MODALITIES: dict[str, tuple[str, str]] = {"us": ("us_image", "us_mask"), "mri": ("mri_image", "mri_mask")}
PATH_COLUMNS: tuple[str, ...] = ("us_image", "us_mask", "mri_image", "mri_mask")
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "split", "her2")
HER2_IHC_CODES: tuple[str, ...] = ("0", "1+", "2+", "3+")
FISH_CODES: tuple[str, ...] = ("positive", "negative", "not_done")
CONTINUOUS_COLUMNS: tuple[str, ...] = ("age", "mri_size_mm")
_SPEC_PATH = Path(__file__).resolve().parent / "resources" / "tables_1_3.json"

#: Version of :func:`read_image`'s output; part of every ROI cache key (``her2lib.roi.cache_key``). Bump it
#: whenever ``read_image`` returns different values or axes for the same file.
#: read_image-2: 2-D colour images read by SimpleITK (JPEG, BMP, TIFF, MHA, NRRD) become luminance like PNGs.
IMAGE_READER_VERSION = "read_image-2"


class CohortWarning(UserWarning):
    """Something is missing from a cohort but the cohort is still usable (a column, a modality)."""


# ----------------------------------------------------------------------------------------------------------
# Tables 1-3 specification
# ----------------------------------------------------------------------------------------------------------
_EMBEDDED_SPEC: dict[str, Any] | None = None


def table_spec() -> dict[str, Any]:
    """The paper's Tables 1-3 (``tables_1_3.json``): per-split counts, column names and level codes.

    Returns
    -------
    dict
        Keys ``n`` (``{"train": 149, "test": 48}``), ``categorical`` (list of ``{column, levels, codes, train,
        test, ...}``) and ``continuous``.
    """
    global _EMBEDDED_SPEC
    if _EMBEDDED_SPEC is None:
        if not _SPEC_PATH.is_file():
            raise DataError(f"{_SPEC_PATH}: the packaged copy of tables_1_3.json is missing; reinstall her2lib.")
        _EMBEDDED_SPEC = json.loads(_SPEC_PATH.read_text(encoding="utf-8"))
    return _EMBEDDED_SPEC


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
        raise DataError(f"{path}: image file not found; check the path in the manifest (relative to the "
                        "manifest's folder) or rebuild the cohort.")
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGB", "RGBA", "P", "LA"):
                    im = im.convert("L")
                arr = np.asarray(im).astype(np.float32)
            if arr.ndim != 2:
                raise ValueError(f"PNG has shape {arr.shape}, expected a 2-D grayscale image")
            return arr, (1.0, 1.0)
        if _is_nifti(path):
            import nibabel as nib
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
        import SimpleITK as sitk
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        ncomp = img.GetNumberOfComponentsPerPixel()
        if ncomp > 1:
            if img.GetDimension() != 2 or ncomp not in (2, 3, 4):
                raise ValueError(f"{img.GetDimension()}-D image with {ncomp} components per pixel; expected "
                                 "a single-channel image (or a 2-D RGB/RGBA/grey+alpha one)")
            arr = _luminance(arr)
        return arr.astype(np.float32), tuple(float(s) for s in img.GetSpacing())[::-1]
    except DataError:
        raise
    except Exception as exc:  # any decoder failure
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); the file is corrupt or "
                        "not an image; re-export or rebuild it.") from exc


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
            import nibabel as nib
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


def write_nifti(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float],
                dtype: Any = None) -> Path:
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
    import nibabel as nib
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
    from PIL import Image
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"{path}: write_png needs a 2-D uint8 array, got {array.dtype} {array.shape}.")
    with atomic_path(path) as tmp:
        Image.fromarray(array, mode="L").save(tmp, format="PNG", optimize=False, compress_level=6)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------
def stratified_split(labels: Sequence[int] | np.ndarray, test_fraction: float = 48 / 197,
                     seed: int = 0) -> np.ndarray:
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


def _suggest(value: Any, allowed: Iterable[Any]) -> str:
    allowed = [str(a) for a in allowed]
    m = difflib.get_close_matches(str(value), allowed, n=1)
    return f" (did you mean {m[0]!r}?)" if m else ""


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
            problems.append(f"patient {pid}: {modality} {what} file {p} does not exist; fix the path in the "
                            "manifest (paths are relative to the manifest) or restore the file.")
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
        problems.append(f"patient {pid}: {modality} image {img_path} has shape {tuple(ishape)}; expected a "
                        f"{expected_ndim}-D image; {fix_rebuild}.")
    if tuple(ishape) != tuple(mshape):
        problems.append(f"patient {pid}: {modality} mask {mask_path} has shape {tuple(mshape)} but the image "
                        f"{img_path} has {tuple(ishape)}; the mask must be on the image grid; resample the "
                        "mask onto the image or re-export both.")
    elif not np.allclose(np.asarray(isp, float), np.asarray(msp, float), rtol=1e-3, atol=1e-4):
        problems.append(f"patient {pid}: {modality} mask {mask_path} spacing {tuple(np.round(msp, 4))} mm "
                        f"differs from image {img_path} spacing {tuple(np.round(isp, 4))} mm; resample the "
                        "mask onto the image grid.")
    if img is not None and not np.isfinite(img).all():
        problems.append(f"patient {pid}: {modality} image {img_path} contains NaN or infinite values; "
                        f"{fix_rebuild}.")
    if mask is not None:
        vals = np.unique(mask)
        if not (set(vals.tolist()) <= {0.0, 1.0} or set(vals.tolist()) <= {0.0, 255.0}):
            shown = ", ".join(f"{v:g}" for v in vals[:6]) + (" ..." if vals.size > 6 else "")
            problems.append(f"patient {pid}: {modality} mask {mask_path} is not binary (values {shown}); "
                            "save it with values 0/1 (or 0/255 for PNG).")
        elif not (mask > 0).any():
            problems.append(f"patient {pid}: {modality} mask {mask_path} is empty (no lesion voxel); "
                            "segment the lesion or drop this modality for the patient (empty path cells).")
    return problems


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

    Raises
    ------
    DataError
        Listing every problem found (``err.problems``): missing required columns, duplicate or empty patient
        ids, split not train/test, labels not 0/1, unknown codes, missing/corrupt files, shape or spacing
        mismatch, non-binary or empty masks, non-finite images.
    """
    if check_files not in ("full", "header", "exists"):
        raise DataError(f"check_files={check_files!r} must be 'full', 'header' or 'exists'"
                        f"{_suggest(check_files, ['full', 'header', 'exists'])}.")
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    manifest = manifest.resolve()
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found; build the cohort (notebook 00_cohort or "
                        "her2lib.synth.make_cohort) or point cohort_dir at a folder containing manifest.csv.")
    try:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{manifest}: cannot parse as CSV ({exc}); fix or regenerate the manifest.") from exc
    root = manifest.parent
    problems: list[str] = []
    missing_req = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing_req:
        raise DataError(f"{manifest}: required column(s) {missing_req} missing (found {list(df.columns)}); "
                        "add them (patient_id, split = train|test, her2 = 0|1).",
                        [f"{manifest}: missing required column {c!r}" for c in missing_req])
    modal_present = [m for m, cols in MODALITIES.items() if all(c in df.columns for c in cols)]
    for m, cols in MODALITIES.items():
        if (cols[0] in df.columns) != (cols[1] in df.columns):
            problems.append(f"{manifest}: column {cols[0]!r} and {cols[1]!r} must come together; add the "
                            "missing one (empty cells if the patient lacks the modality).")
    if not modal_present:
        problems.append(f"{manifest}: no image columns; add us_image+us_mask and/or mri_image+mri_mask.")
    if len(df) == 0:
        problems.append(f"{manifest}: the manifest has no patient rows; add one row per patient.")

    # identifiers, split, labels
    pids = df["patient_id"].astype(str).str.strip()
    df["patient_id"] = pids
    for i, pid in enumerate(pids):
        if pid == "":
            problems.append(f"{manifest}: row {i + 2} has an empty patient_id; give every row a unique id.")
    dup = pids[pids.duplicated(keep=False) & (pids != "")]
    for pid in sorted(set(dup)):
        rows = [int(r) + 2 for r in np.flatnonzero(pids.values == pid)]
        problems.append(f"patient {pid}: appears {len(rows)} times in {manifest.name} (rows {rows}); patient ids "
                        "must be unique; remove or rename the duplicates.")

    def _label(i: int) -> str:
        return pids.iloc[i] or f"row {i + 2}"

    split = df["split"].astype(str).str.strip().str.lower()
    for i, s in enumerate(split):
        if s not in ("train", "test"):
            problems.append(f"patient {_label(i)}: split {df['split'].iloc[i]!r} in {manifest.name} must be "
                            f"'train' or 'test'{_suggest(s, ['train', 'test'])}.")
    df["split"] = split
    her2 = []
    for i, v in enumerate(df["her2"]):
        code = _norm_code(v, [0, 1])
        if code is _INVALID:
            problems.append(f"patient {_label(i)}: her2 label {v!r} in {manifest.name} must be 0 (negative) or "
                            "1 (positive); map IHC 3+ or 2+/FISH+ to 1, else 0; drop patients without a label.")
            her2.append(-1)
        else:
            her2.append(code)
    df["her2"] = np.asarray(her2, dtype=np.int64)

    # descriptive columns
    spec = descriptive_columns()
    missing_cols = [c for c in spec if c not in df.columns]
    empty_counts: dict[str, int] = {}
    for col, codes in spec.items():
        if col not in df.columns:
            continue
        values = df[col].tolist()
        out: list[Any] = []
        n_empty = 0
        for i, v in enumerate(values):
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
                    problems.append(f"patient {_label(i)}: {col} = {v!r} in {manifest.name} must be a positive "
                                    "number (years / mm) or empty if unknown.")
                out.append(f)
                continue
            code = _norm_code(v, codes)
            if code is _INVALID:
                problems.append(f"patient {_label(i)}: {col} = {v!r} in {manifest.name} is not one of {codes}"
                                f"{_suggest(v, codes)}; use the codes of tables_1_3.json or leave it empty.")
                out.append(np.nan)
            else:
                out.append(code)
        if n_empty:
            empty_counts[col] = n_empty
        if codes is not None and all(isinstance(c, int) for c in codes) and n_empty == 0 and \
                not any(o is np.nan for o in out):
            df[col] = np.asarray(out, dtype=np.int64)
        else:
            df[col] = pd.Series(out, index=df.index, dtype=object if codes is not None else float)

    # files
    missing_modal: dict[str, list[str]] = {}
    for m in modal_present:
        ci, cm = MODALITIES[m]
        lacking: list[str] = []
        for col in (ci, cm):
            df[col] = df[col].astype(str).str.strip()
        for i in range(len(df)):
            pid = _label(i)
            a, b = df[ci].iloc[i], df[cm].iloc[i]
            if a == "" and b == "":
                lacking.append(pid)
                continue
            if (a == "") != (b == ""):
                which = ci if a == "" else cm
                problems.append(f"patient {pid}: {which} is empty but its partner is not in {manifest.name}; "
                                "give both the image and its mask, or leave both empty.")
                continue
            pa, pb = (root / a).resolve(), (root / b).resolve()
            df.iloc[i, df.columns.get_loc(ci)] = str(pa)
            df.iloc[i, df.columns.get_loc(cm)] = str(pb)
            if check_files == "exists":
                for p, what in ((pa, "image"), (pb, "mask")):
                    if not p.is_file():
                        problems.append(f"patient {pid}: {m} {what} file {p} does not exist; fix the path in "
                                        "the manifest (relative to the manifest) or restore the file.")
            else:
                problems.extend(_check_pair(pid, m, pa, pb, check_files))
        if lacking:
            missing_modal[m] = lacking
    for m in MODALITIES:
        if m not in modal_present:
            missing_modal[m] = list(pids)
            for col in MODALITIES[m]:
                if col not in df.columns:
                    df[col] = ""

    if problems:
        head = f"{manifest}: {len(problems)} problem(s) found:\n  - " + "\n  - ".join(problems[:50])
        if len(problems) > 50:
            head += f"\n  ... and {len(problems) - 50} more (see err.problems)"
        raise DataError(head, problems)

    notes = []
    if missing_cols:
        notes.append(f"descriptive columns absent: {missing_cols}")
    for m, lst in missing_modal.items():
        if lst:
            notes.append(f"{m}: {len(lst)}/{len(df)} patients without images")
    if notes:
        warnings.warn(f"{manifest}: " + "; ".join(notes) + " (analyses needing them will be skipped).",
                      CohortWarning, stacklevel=2)
    if df.loc[df["split"] == "train", "her2"].value_counts().reindex([0, 1], fill_value=0).min() < 2:
        warnings.warn(f"{manifest}: the train split has fewer than 2 patients of one HER2 class; "
                      "cross-validation cannot work.", CohortWarning, stacklevel=2)
    df.attrs["manifest"] = str(manifest)
    df.attrs["missing"] = {"columns": missing_cols, "modalities": missing_modal, "values": empty_counts}
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
    for m, (ci, _) in MODALITIES.items():
        if ci not in df.columns:
            continue
        has = df[ci].astype(str).str.strip() != ""
        if (has.all() if require_all else has.any()) and len(df):
            out.append(m)
    return out


# ----------------------------------------------------------------------------------------------------------
# Gallery figure
# ----------------------------------------------------------------------------------------------------------
def _zoom_inset(ax, img: np.ndarray, mask: np.ndarray, spacing: Sequence[float], colour: str, aspect: float,
                window_mm: float = 60.0) -> None:
    """An inset of a ``window_mm`` square around the lesion (framed on the full slice), in the lower corner away
    from the lesion."""
    from matplotlib.patches import Rectangle

    ys, xs = np.nonzero(mask)
    half = [max(2, int(round(window_mm / 2 / s))) for s in spacing]
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    y0, y1 = max(0, cy - half[0]), min(img.shape[0], cy + half[0])
    x0, x1 = max(0, cx - half[1]), min(img.shape[1], cx + half[1])
    if (y1 - y0) * (x1 - x0) > 0.5 * img.size:  # the lesion already fills the image: no inset
        return
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=0.6))
    left = cx > img.shape[1] / 2  # lesion on the right: inset on the left
    top = cy > img.shape[0] / 2  # lesion in the lower half: inset at the top
    ins = ax.inset_axes([0.02 if left else 0.56, 0.56 if top else 0.02, 0.42, 0.42])
    ins.imshow(img[y0:y1, x0:x1], cmap="gray", aspect=aspect, vmin=float(img.min()), vmax=float(img.max()))
    ins.contour(mask[y0:y1, x0:x1], levels=[0.5], colors=[colour], linewidths=0.8)
    ins.set_xticks([])
    ins.set_yticks([])
    for side in ins.spines.values():
        side.set_edgecolor("yellow")
        side.set_linewidth(0.6)


def cohort_gallery(df: pd.DataFrame, path: str | os.PathLike | None = None, n_per_class: int = 3,
                   seed: int = 0):
    """Gallery of cases by HER2 status: US image and the MRI slice through the lesion (with a zoomed inset of a
    60 mm window around the lesion), mask contours.

    Parameters
    ----------
    df : pd.DataFrame
        Output of :func:`load_cohort`.
    path : path-like, optional
        Where to save the figure (PNG, written atomically).
    n_per_class : int
        Patients shown per HER2 class (drawn with ``seed`` from the train split, else from all).
    seed : int
        Seed of the draw.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    mods = available_modalities(df, require_all=False)
    if not mods:
        raise DataError("cohort_gallery: the cohort has no images to show.")
    rng = np.random.default_rng(seed)
    picks: list[tuple[int, pd.Series]] = []
    for cls in (0, 1):
        sub = df[df["her2"] == cls]
        if len(sub) == 0:
            continue
        idx = rng.choice(len(sub), size=min(n_per_class, len(sub)), replace=False)
        picks += [(cls, sub.iloc[int(j)]) for j in sorted(idx)]
    ncol = len(picks)
    fig, axes = plt.subplots(len(mods), ncol, figsize=(2.2 * ncol, 2.3 * len(mods)), squeeze=False)
    for j, (cls, row) in enumerate(picks):
        for i, m in enumerate(mods):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ci, cm = MODALITIES[m]
            if not row[ci]:
                ax.set_title(f"{row['patient_id']}\n(no {m})", fontsize=7)
                continue
            img, sp = read_image(row[ci])
            mask, _ = read_image(row[cm])
            aspect = 1.0
            colour = "tab:red" if cls else "tab:cyan"
            if img.ndim == 3:
                z = int(np.argmax((mask > 0).sum(axis=(1, 2))))
                img, mask = img[z], mask[z]
                aspect = sp[1] / sp[2]
            ax.imshow(img, cmap="gray", aspect=aspect)
            ax.contour(mask > 0, levels=[0.5], colors=[colour], linewidths=0.8)
            if m == "mri" and (mask > 0).any():
                _zoom_inset(ax, img, mask > 0, sp[-2:], colour, aspect)
            ax.set_title(f"{row['patient_id']} {m.upper()}\nHER2{'+' if cls else '-'}", fontsize=7)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
