"""Region of interest (Methods: "DL model of US" / "DL model of MRI", preprocessing).

The paper's recipe, for both modalities:

1. dilate the clinician's lesion mask outward by 50 pixels (US) or 50 in-plane voxels on every slice (MRI);
2. take the bounding box of the dilated mask (clipped at the image border) and crop it;
3. z-score normalise the crop (mean and standard deviation of the cropped region);
4. resize to 256 x 256 (US) or 96 x 96 x 96 (MRI).

:func:`us_roi` and :func:`mri_roi` are pure functions on arrays. :func:`preprocess_cohort` applies them to every
patient of a cohort and keeps the results in a content-keyed on-disk cache (key = SHA-256 of the image and mask
file bytes, every preprocessing parameter, :data:`ROI_CODE_VERSION`, the image reader's version
:data:`her2lib.data.IMAGE_READER_VERSION` and the versions of the libraries that read, dilate and resample:
numpy, scipy, torch, Pillow, nibabel, SimpleITK), so a re-run never recomputes and a changed parameter or library
never reuses a stale entry. The SHA-256 of each source file is remembered in ``cache/roi/file_hashes.json``
together with the file's size, modification time, change time and inode; a later call re-hashes only files
whose stat differs, so the notebooks after 02 do not read every image again to find their cache entries. Every
result records its crop box, the source array's shape and voxel spacing, and whether the border of the image cut
the box (:class:`RoiBox`); :func:`box_table` turns them into one row per patient (box extents, the box's share of
the image/slice, clipping) and :func:`clipping_summary` summarises them. The before/after figure is
:func:`her2lib.figures.preprocess.plot_roi_examples`.

Science layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from . import data
from .contract import modality as _modality
from .errors import DataError, ParameterError
from .io import atomic_path, sha256_file, usable_cpus, write_json
from .options import look_up_option

__all__ = [
    "ROI_CODE_VERSION",
    "RoiResult",
    "RoiBox",
    "PreprocessSpec",
    "dilate_mask",
    "roi_box",
    "us_roi",
    "mri_roi",
    "cache_key",
    "library_versions",
    "preprocess_cohort",
    "box_table",
    "roi_boxes",
    "box_summary",
    "clipping_summary",
]

#: Bump whenever the preprocessing code changes its output; it is part of every cache key.
#: roi-2 (2025): cache entries also record the source shape, spacing and per-axis clipping.
ROI_CODE_VERSION = "roi-2"

#: Distributions whose version is part of every cache key: the readers used by :func:`her2lib.data.read_image`
#: (Pillow for PNG, nibabel for NIfTI, SimpleITK for the rest), scipy (dilation), torch (resizing) and numpy.
#: MONAI is not listed because no ROI step uses it.
CACHE_LIBRARIES = ("numpy", "scipy", "torch", "Pillow", "nibabel", "SimpleITK")


@dataclass(frozen=True)
class RoiResult:
    """One preprocessed region of interest.

    Attributes
    ----------
    image : np.ndarray
        float32, channel first, ``(1, H, W)`` or ``(1, D, H, W)``; z-scored within the crop.
    mask : np.ndarray
        uint8 0/1, same shape: the clinician's (undilated) lesion mask, cropped and resized (nearest).
    box : tuple of (start, stop)
        Half-open crop box in the source array's index order (``(y, x)`` or ``(z, y, x)``).
    source_shape : tuple of int
        Shape of the source image (``(H, W)`` or ``(D, H, W)``); ``()`` when unknown.
    spacing : tuple of float
        Voxel size of the source image in mm, same axis order (``(1.0, 1.0)`` for a PNG); ``()`` when unknown.
    clipped : tuple of bool
        Per axis: the dilated lesion mask reached past the image border there, so the box was cut by the field of
        view (the margin is not complete on that side). ``()`` when unknown.
    """

    image: np.ndarray
    mask: np.ndarray
    box: tuple[tuple[int, int], ...]
    source_shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    clipped: tuple[bool, ...] = ()


class RoiBox(tuple):
    """A crop box ``((start, stop), ...)`` that also carries what :func:`box_table` reports.

    It is a plain tuple to every caller (unpacking, indexing, ``==`` with a tuple); the extra attributes are
    ``source_shape``, ``spacing`` and ``clipped`` as in :class:`RoiResult`.

    Examples
    --------
    >>> b = RoiBox(((2, 9), (0, 30)), source_shape=(40, 30), spacing=(1.0, 1.0), clipped=(False, True))
    >>> b == ((2, 9), (0, 30)), b.clipped
    (True, (False, True))
    """

    source_shape: tuple[int, ...]
    spacing: tuple[float, ...]
    clipped: tuple[bool, ...]

    def __new__(cls, box, source_shape=(), spacing=(), clipped=()):
        obj = super().__new__(cls, tuple((int(a), int(b)) for a, b in box))
        obj.source_shape = tuple(int(v) for v in source_shape)
        obj.spacing = tuple(float(v) for v in spacing)
        obj.clipped = tuple(bool(v) for v in clipped)
        return obj

    def __reduce__(self):
        return (RoiBox, (tuple(self), self.source_shape, self.spacing, self.clipped))

    @classmethod
    def of(cls, res: RoiResult) -> RoiBox:
        """The box of a :class:`RoiResult`, with its shape, spacing and clipping."""
        return cls(res.box, res.source_shape, res.spacing, res.clipped)


def _size_tuple(size: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        size = (int(size),) * ndim
    size = tuple(int(s) for s in size)
    if len(size) != ndim or any(s < 1 for s in size):
        raise ParameterError(f"{name}={size!r}: need {ndim} positive integers (or one int for a square/cube).")
    return size


def dilate_mask(
    mask: np.ndarray, margin: float, *, sampling: Sequence[float] | None = None, in_plane: bool = False
) -> np.ndarray:
    """Dilate a binary mask outward by ``margin`` (Euclidean distance).

    Parameters
    ----------
    mask : np.ndarray
        Binary mask, ``(H, W)`` or ``(D, H, W)``.
    margin : float
        Dilation radius, in the units of ``sampling`` (pixels when ``sampling`` is None).
    sampling : sequence of float, optional
        Pixel/voxel spacing per axis (e.g. mm), same axis order as ``mask``.
    in_plane : bool
        For 3-D masks: dilate each slice ``mask[z]`` in its own (y, x) plane only (the paper's "per slice"
        rule); slices without lesion stay empty.

    Returns
    -------
    np.ndarray
        bool array, same shape as ``mask``.
    """
    mask = np.asarray(mask) > 0
    if margin < 0:
        raise ParameterError(f"margin={margin}: the dilation margin must be >= 0.")
    if in_plane and mask.ndim == 3:
        samp = None if sampling is None else tuple(sampling)[1:]
        out = np.zeros_like(mask)
        for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
            out[z] = dilate_mask(mask[z], margin, sampling=samp)
        return out
    if not mask.any():
        return mask.copy()
    dist = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return dist <= margin + 1e-6


def roi_box(dilated: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Half-open bounding box ``((start, stop), ...)`` of a non-empty mask (inside the array by construction)."""
    idx = np.nonzero(dilated)
    if len(idx[0]) == 0:
        raise DataError("the lesion mask is empty: nothing to crop. Fix: check the mask file of this patient.")
    return tuple((int(i.min()), int(i.max()) + 1) for i in idx)


def _clip_flags(mask: np.ndarray, margins: Sequence[float], steps: Sequence[float]) -> tuple[bool, ...]:
    """Per axis: would the dilated mask reach past the array border (so that the crop box is cut there)?

    Along an axis, :func:`dilate_mask`'s Euclidean dilation by ``margin`` reaches exactly
    ``floor((margin + 1e-6) / step)`` voxels beyond the mask's extreme voxel (``step`` = voxel size in the
    margin's unit; margin 0 = an axis without margin).
    """
    idx = np.nonzero(mask)
    out = []
    for i, m, st, n in zip(idx, margins, steps, mask.shape):
        k = int(np.floor((m + 1e-6) / st)) if m > 0 else 0
        out.append(bool(int(i.min()) - k < 0 or int(i.max()) + 1 + k > n))
    return tuple(out)


def _crop_norm_resize(image: np.ndarray, mask: np.ndarray, box, size: tuple[int, ...]) -> RoiResult:
    sl = tuple(slice(a, b) for a, b in box)
    crop = image[sl].astype(np.float64)
    mcrop = (mask[sl] > 0).astype(np.float32)
    mean, std = crop.mean(), crop.std()
    crop = (crop - mean) / std if std > 0 else crop - mean
    t = torch.from_numpy(crop.astype(np.float32))[None, None]
    m = torch.from_numpy(mcrop)[None, None]
    if crop.ndim == 2:
        img = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    else:
        img = F.interpolate(t, size=size, mode="trilinear", align_corners=False)
    msk = F.interpolate(m, size=size, mode="nearest-exact")
    return RoiResult(image=img[0].numpy().astype(np.float32), mask=msk[0].numpy().astype(np.uint8), box=box)


def _check_pair(image: np.ndarray, mask: np.ndarray, ndim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != ndim:
        raise DataError(f"{what}: image has shape {image.shape}; expected {ndim} dimensions.")
    if mask.shape != image.shape:
        raise DataError(
            f"{what}: mask shape {mask.shape} differs from image shape {image.shape}; "
            "fix: export the mask on the image's grid."
        )
    if not np.isfinite(image).all():
        raise DataError(f"{what}: image contains NaN or infinite values.")
    if not (mask > 0).any():
        raise DataError(f"{what}: the lesion mask is empty; fix: delineate the lesion or drop the patient.")
    return image, mask


def us_roi(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    margin_px: float = 50,
    size: int | Sequence[int] = (256, 256),
    spacing: Sequence[float] = (1.0, 1.0),
) -> RoiResult:
    """Ultrasound ROI: dilate by ``margin_px`` pixels, crop the bounding box, z-score, resize.

    Parameters
    ----------
    image : np.ndarray
        Grey-level image ``(H, W)``.
    mask : np.ndarray
        Lesion mask ``(H, W)``, non-zero inside the lesion.
    margin_px : float
        Outward margin in pixels (paper: 50).
    size : int or (int, int)
        Output ``(H, W)`` (paper: 256 x 256).
    spacing : (float, float)
        Pixel size ``(y, x)`` recorded in the result (not used for the margin, which is in pixels).

    Returns
    -------
    RoiResult
        ``image`` float32 ``(1, H, W)``, ``mask`` uint8 ``(1, H, W)``, ``box`` ``((y0, y1), (x0, x1))``, the source
        shape and spacing, and ``clipped`` per axis.
    """
    image, mask = _check_pair(image, mask, 2, "us_roi")
    size = _size_tuple(size, 2, "size")
    box = roi_box(dilate_mask(mask, margin_px))
    res = _crop_norm_resize(image, mask, box, size)
    return RoiResult(
        res.image,
        res.mask,
        box,
        tuple(image.shape),
        tuple(float(s) for s in spacing),
        _clip_flags(mask > 0, (margin_px, margin_px), (1.0, 1.0)),
    )


def mri_roi(
    volume: np.ndarray,
    mask: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    margin: float = 50,
    margin_unit: str = "px",
    size: int | Sequence[int] = (96, 96, 96),
) -> RoiResult:
    """MRI ROI: dilate every slice in-plane by ``margin``, crop the bounding box, z-score, resize.

    Parameters
    ----------
    volume : np.ndarray
        ``(D, H, W)`` = ``(z, y, x)``.
    mask : np.ndarray
        Lesion mask, same shape.
    spacing : (float, float, float)
        Voxel spacing in mm, ``(z, y, x)``; used when ``margin_unit="mm"``.
    margin : float
        Outward in-plane margin (paper: 50 voxels). The z extent is the lesion's own slice range.
    margin_unit : {"px", "mm"}
        ``"px"``: ``margin`` voxels along y and x; ``"mm"``: ``margin`` millimetres (anisotropic in-plane
        spacing gives different voxel margins along y and x).
    size : int or (int, int, int)
        Output ``(D, H, W)`` (paper: 96 x 96 x 96).

    Returns
    -------
    RoiResult
        ``image`` float32 ``(1, D, H, W)``, ``mask`` uint8 ``(1, D, H, W)``, ``box`` ``((z0,z1),(y0,y1),(x0,x1))``,
        the source shape and spacing, and ``clipped`` per axis (z is never clipped: it has no margin).
    """
    volume, mask = _check_pair(volume, mask, 3, "mri_roi")
    size = _size_tuple(size, 3, "size")
    look_up_option(margin_unit, ("px", "mm"), name="margin_unit")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ParameterError(f"spacing={spacing}: need three positive voxel sizes in mm, (z, y, x).")
    sampling = spacing if margin_unit == "mm" else None
    box = roi_box(dilate_mask(mask, margin, sampling=sampling, in_plane=True))
    res = _crop_norm_resize(volume, mask, box, size)
    steps = (1.0, spacing[1], spacing[2]) if margin_unit == "mm" else (1.0, 1.0, 1.0)
    clipped = _clip_flags(mask > 0, (0.0, margin, margin), steps)
    return RoiResult(res.image, res.mask, box, tuple(volume.shape), spacing, clipped)


# ----------------------------------------------------------------------------------------------- cohort + cache


@dataclass(frozen=True)
class PreprocessSpec:
    """Every preprocessing parameter (part of the cache key). Defaults = the paper.

    Attributes
    ----------
    us_size : int
        Output side of the square US ROI in pixels (paper 256).
    us_margin_px : float
        US dilation margin in pixels (paper 50).
    mri_size : int
        Output side of the cubic MRI ROI in voxels (paper 96).
    mri_margin : float
        MRI in-plane dilation margin (paper 50 voxels).
    mri_margin_unit : str
        ``"px"`` or ``"mm"``.
    """

    us_size: int = 256
    us_margin_px: float = 50
    mri_size: int = 96
    mri_margin: float = 50
    mri_margin_unit: str = "px"

    @classmethod
    def from_params(cls, params: dict[str, Any] | str | os.PathLike) -> PreprocessSpec:
        """Build from a dict (extra keys ignored) or from a JSON file such as ``params/02_preprocess.json``."""
        if not isinstance(params, dict):
            path = Path(params)
            if not path.exists():
                raise ParameterError(
                    f"{path} does not exist; run notebooks/02_preprocess.ipynb first (with the same out_dir)."
                )
            params = json.loads(path.read_text(encoding="utf-8"))
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: params[k] for k in names if k in params})

    def params_for(self, modality: str) -> dict[str, Any]:
        """The parameters that shape one modality's arrays."""
        _modality(modality)
        if modality == "us":
            return {"modality": "us", "size": int(self.us_size), "margin_px": float(self.us_margin_px)}
        return {
            "modality": "mri",
            "size": int(self.mri_size),
            "margin": float(self.mri_margin),
            "margin_unit": self.mri_margin_unit,
        }


def _dist_version(name: str) -> str:
    """Installed version of distribution ``name`` (``"absent"`` when it is not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def library_versions() -> dict[str, str]:
    """What the ROI arrays depend on besides the files and parameters: code and library versions.

    Returns
    -------
    dict
        ``{"roi": ROI_CODE_VERSION, "read_image": her2lib.data.IMAGE_READER_VERSION, "numpy": ..., "scipy": ...,
        "torch": ..., "Pillow": ..., "nibabel": ..., "SimpleITK": ...}`` (see :data:`CACHE_LIBRARIES`).
    """
    return {
        "roi": ROI_CODE_VERSION,
        "read_image": str(data.IMAGE_READER_VERSION),
        **{name: _dist_version(name) for name in CACHE_LIBRARIES},
    }


def _key_from_digests(image_sha: str, mask_sha: str, params: dict[str, Any], versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(ROI_CODE_VERSION.encode())
    h.update(image_sha.encode())
    h.update(mask_sha.encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()


def cache_key(
    image_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    params: dict[str, Any],
    *,
    versions: dict[str, str] | None = None,
) -> str:
    """SHA-256 over the image and mask file bytes, the parameters and the code/library versions (sorted JSON).

    Parameters
    ----------
    image_path, mask_path : path-like
    params : dict
        :meth:`PreprocessSpec.params_for` of the modality.
    versions : dict, optional
        :func:`library_versions` (computed when omitted; pass it when keying many files).
    """
    versions = library_versions() if versions is None else versions
    return _key_from_digests(sha256_file(image_path), sha256_file(mask_path), params, versions)


class _FileHashes:
    """SHA-256 of source files, remembered in ``cache_dir/roi/file_hashes.json`` with each file's stat.

    A remembered digest is used only while the file's size, modification time, change time and inode are those
    recorded; any difference re-hashes the file. The change time cannot be set by a user, so a rewrite that
    restores the old modification time is noticed too. As in git's "racily clean" rule, a digest taken less than
    :attr:`RACY_NS` after the file's last change is not trusted (file times tick coarsely, so a same-size rewrite
    within one tick would keep every stat field); such a file is hashed again until its digest is old enough.
    """

    FILE = "file_hashes.json"
    RACY_NS = 2_000_000_000  # 2 s: the coarsest file-time tick in use (FAT/exFAT; ext3, HFS+, many NFS/SMB: 1 s)

    def __init__(self, folder: Path):
        self.path = folder / self.FILE
        self.entries: dict[str, list] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}  # unreadable index: every file is hashed again

    @staticmethod
    def _stat(path: str) -> list[int]:
        st = os.stat(path)
        return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]

    def _trusted(self, known: Any, stat: list[int]) -> bool:
        """Whether a remembered entry ``[stat, digest, hashed_at_ns]`` still describes the file (a malformed
        entry does not)."""
        try:
            return (
                known[0] == stat and isinstance(known[1], str) and int(known[2]) - max(stat[1], stat[2]) >= self.RACY_NS
            )
        except (TypeError, ValueError, IndexError, KeyError):
            return False

    def sha256(self, path: str | os.PathLike) -> str:
        name = os.path.abspath(os.fspath(path))
        stat = self._stat(name)
        if self._trusted(self.entries.get(name), stat):
            return str(self.entries[name][1])
        hashed_at = time.time_ns()
        digest = sha256_file(name)
        self.entries[name] = [stat, digest, hashed_at]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            write_json(self.path, self.entries)
            self.dirty = False


def _compute(modality: str, image_path: str, mask_path: str, params: dict[str, Any]) -> RoiResult:
    img, spacing = data.read_image(image_path)  # 2-D colour images arrive as luminance
    msk, _ = data.read_image(mask_path)
    if modality == "us":
        return us_roi(img, msk, margin_px=params["margin_px"], size=params["size"], spacing=spacing)
    return mri_roi(
        img, msk, spacing=spacing, margin=params["margin"], margin_unit=params["margin_unit"], size=params["size"]
    )


def _load_entry(path: Path) -> RoiResult:
    with np.load(path, allow_pickle=False) as z:
        box = tuple((int(a), int(b)) for a, b in z["box"])
        return RoiResult(
            image=z["image"].astype(np.float32),
            mask=z["mask"].astype(np.uint8),
            box=box,
            source_shape=tuple(int(v) for v in z["source_shape"]),
            spacing=tuple(float(v) for v in z["spacing"]),
            clipped=tuple(bool(v) for v in z["clipped"]),
        )


def _save_entry(path: Path, res: RoiResult) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                image=res.image,
                mask=res.mask,
                box=np.asarray(res.box, dtype=np.int64),
                source_shape=np.asarray(res.source_shape, dtype=np.int64),
                spacing=np.asarray(res.spacing, dtype=np.float64),
                clipped=np.asarray(res.clipped, dtype=bool),
            )


def _check_columns(cohort, modality: str) -> tuple[str, str]:
    """The modality's image and mask columns; a DataError when they are missing or some patients lack files."""
    cols = _modality(modality).columns
    missing = [c for c in ("patient_id",) + cols if c not in cohort.columns]
    if missing:
        raise DataError(
            f"preprocess_cohort: the cohort table lacks columns {missing}; load it with her2lib.data.load_cohort."
        )
    blank = cohort.loc[
        (cohort[cols[0]].astype(str).str.strip() == "")
        | (cohort[cols[1]].astype(str).str.strip() == "")
        | cohort[cols[0]].isna()
        | cohort[cols[1]].isna(),
        "patient_id",
    ].tolist()
    if blank:
        raise DataError(
            f"preprocess_cohort: {len(blank)} patient(s) have no {modality.upper()} image or mask "
            f"({', '.join(map(str, blank[:10]))}{' ...' if len(blank) > 10 else ''}) while others do. "
            f"her2lib trains a modality on complete cohorts only: add the missing files to the manifest, "
            f"or drop those patients (or the whole {modality.upper()} columns) from a copy of it."
        )
    return cols


def _cached_roi(entry: Path, pid, modality: str, ipath: str, mpath: str, params: dict[str, Any]) -> RoiResult:
    """The cache entry's ROI, or the ROI computed afresh (and cached) when the entry is absent or corrupt."""
    if entry.exists():
        try:
            return _load_entry(entry)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(
                f"patient {pid}: corrupt cache entry {entry} ({exc.__class__.__name__}); recomputing it.",
                RuntimeWarning,
                stacklevel=2,  # on preprocess_cohort's threads: a deeper level would point into concurrent.futures
            )
    try:
        res = _compute(modality, ipath, mpath, params)
    except DataError as exc:
        raise DataError(f"patient {pid} ({ipath}, {mpath}): {exc}") from exc
    _save_entry(entry, res)
    return res


def preprocess_cohort(
    cohort, modality: str, spec: PreprocessSpec, cache_dir: str | os.PathLike, *, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, list]:
    """Preprocess one modality for every patient of ``cohort``, through the on-disk cache.

    Parameters
    ----------
    cohort : pandas.DataFrame
        As returned by :func:`her2lib.data.load_cohort` (absolute paths in ``us_image``/``us_mask`` or
        ``mri_image``/``mri_mask``).
    modality : {"us", "mri"}
    spec : PreprocessSpec
    cache_dir : path
        Cache folder (``run.cache``); entries live in ``cache_dir/roi/<modality>/<key>.npz``, the source files'
        digests in ``cache_dir/roi/file_hashes.json``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    images : np.ndarray
        float32 ``(n_patients, 1, H, W)`` or ``(n_patients, 1, D, H, W)``, in ``cohort`` row order.
    masks : np.ndarray
        uint8, same shape (lesion masks).
    boxes : list of RoiBox
        Crop box per patient (a plain ``((start, stop), ...)`` tuple that also carries the source shape, spacing
        and clipping; see :class:`RoiBox`).
    """
    params = spec.params_for(modality)
    folder = Path(cache_dir) / "roi" / modality
    folder.mkdir(parents=True, exist_ok=True)
    cols = _check_columns(cohort, modality)
    images, masks, boxes = [], [], []
    rows = list(cohort[["patient_id", *cols]].itertuples(index=False))
    versions = library_versions()
    hashes = _FileHashes(folder.parent)

    def roi_of(row) -> RoiResult:
        pid, ipath, mpath = row
        key = _key_from_digests(hashes.sha256(ipath), hashes.sha256(mpath), params, versions)
        return _cached_roi(folder / f"{key}.npz", pid, modality, ipath, mpath, params)

    try:  # patients on a few threads (reading, decompressing, hashing and resizing release the GIL), in order
        with ThreadPoolExecutor(max_workers=min(4, usable_cpus())) as pool:
            results = pool.map(roi_of, rows)
            for res in tqdm(results, total=len(rows), desc=f"ROI {modality}", disable=not progress, leave=False):
                images.append(res.image)
                masks.append(res.mask)
                boxes.append(RoiBox.of(res))
    finally:
        hashes.save()
    if not images:
        raise DataError("preprocess_cohort: the cohort table has no rows.")
    return np.stack(images), np.stack(masks), boxes


def box_table(cohort, us_boxes: Sequence | None, mri_boxes: Sequence | None) -> pd.DataFrame:
    """One row per patient: the crop box of each modality, its share of the image and whether it was clipped.

    Parameters
    ----------
    cohort : pandas.DataFrame
        Rows in the order of the boxes (``patient_id``, ``split``, ``her2`` are copied).
    us_boxes, mri_boxes : sequence or None
        None for a modality the cohort lacks (its columns are left out). From :func:`preprocess_cohort`
        (:class:`RoiBox`: ``((y0, y1), (x0, x1))`` and ``((z0, z1), (y0, y1), (x0, x1))``); plain tuples give the
        extents only.

    Returns
    -------
    pandas.DataFrame
        ``patient_id, split, her2``; for US ``us_y0, us_y1, us_x0, us_x1, us_h_px, us_w_px`` and, from
        :class:`RoiBox`, ``us_roi_share`` (box area / image area) and ``us_clipped`` (the image border cut the
        box); for MRI ``mri_z0 ... mri_x1, mri_d_vox, mri_h_vox, mri_w_vox`` and ``mri_d_mm, mri_h_mm, mri_w_mm``,
        ``mri_roi_share`` (in-plane box area / slice area) and ``mri_clipped`` (the field of view cut the
        in-plane margin).
    """
    if us_boxes is None and mri_boxes is None:
        raise DataError("box_table: no boxes of either modality; preprocess at least one.")
    for name, b in (("US", us_boxes), ("MRI", mri_boxes)):
        if b is not None and len(b) != len(cohort):
            raise DataError(f"box_table: {len(cohort)} patients but {len(b)} {name} boxes.")
    rows = []
    for i, (_, r) in enumerate(cohort.iterrows()):
        row = {"patient_id": r["patient_id"], "split": r["split"], "her2": r["her2"]}
        if us_boxes is not None:
            b = us_boxes[i]
            (uy0, uy1), (ux0, ux1) = b
            row.update(
                {"us_y0": uy0, "us_y1": uy1, "us_x0": ux0, "us_x1": ux1, "us_h_px": uy1 - uy0, "us_w_px": ux1 - ux0}
            )
            shape = getattr(b, "source_shape", ())
            if len(shape) == 2:
                row.update(
                    {
                        "us_roi_share": (uy1 - uy0) * (ux1 - ux0) / (shape[0] * shape[1]),
                        "us_clipped": any(getattr(b, "clipped", ())),
                    }
                )
        if mri_boxes is not None:
            b = mri_boxes[i]
            (mz0, mz1), (my0, my1), (mx0, mx1) = b
            row.update(
                {
                    "mri_z0": mz0,
                    "mri_z1": mz1,
                    "mri_y0": my0,
                    "mri_y1": my1,
                    "mri_x0": mx0,
                    "mri_x1": mx1,
                    "mri_d_vox": mz1 - mz0,
                    "mri_h_vox": my1 - my0,
                    "mri_w_vox": mx1 - mx0,
                }
            )
            shape, sp = getattr(b, "source_shape", ()), getattr(b, "spacing", ())
            if len(sp) == 3:
                row.update(
                    {"mri_d_mm": (mz1 - mz0) * sp[0], "mri_h_mm": (my1 - my0) * sp[1], "mri_w_mm": (mx1 - mx0) * sp[2]}
                )
            if len(shape) == 3:
                row.update(
                    {
                        "mri_roi_share": (my1 - my0) * (mx1 - mx0) / (shape[1] * shape[2]),
                        "mri_clipped": any(getattr(b, "clipped", ())),
                    }
                )
        rows.append(row)
    return pd.DataFrame(rows)


def roi_boxes(cohort, inputs: dict) -> pd.DataFrame:
    """:func:`box_table` from ``{modality: preprocess_cohort(...)}`` for the modalities the cohort has (as the
    preprocess stage returns them); columns of absent modalities are left out."""
    return box_table(cohort, inputs["us"][2] if "us" in inputs else None, inputs["mri"][2] if "mri" in inputs else None)


def box_summary(boxes: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max of the ROI columns of :func:`box_table`, present columns only.

    Extents in pixels / voxels (and mm for MRI), the box's share of the image / slice, and the clipping flags
    (as 0/1: their mean is the fraction of patients whose box the image border cut).
    """
    cols = [
        c
        for c in (
            "us_h_px",
            "us_w_px",
            "us_roi_share",
            "us_clipped",
            "mri_d_vox",
            "mri_h_vox",
            "mri_w_vox",
            "mri_d_mm",
            "mri_h_mm",
            "mri_w_mm",
            "mri_roi_share",
            "mri_clipped",
        )
        if c in boxes.columns
    ]
    return boxes[cols].astype(float).describe().loc[["mean", "min", "max"]]


def clipping_summary(boxes: pd.DataFrame) -> pd.DataFrame:
    """Per modality: how much of the image the ROI box covers and how often the image border cut it.

    Parameters
    ----------
    boxes : pandas.DataFrame
        :func:`box_table` output with ``<m>_roi_share`` and ``<m>_clipped`` columns (boxes from
        :func:`preprocess_cohort`).

    Returns
    -------
    pandas.DataFrame
        Index ``us`` / ``mri`` (present modalities); columns ``n_patients, n_clipped, pct_clipped`` and
        ``share_median, share_q1, share_q3, share_min, share_max`` (box area / image area; in-plane for MRI).
    """
    rows = {}
    for m in ("us", "mri"):
        if f"{m}_roi_share" not in boxes.columns:
            continue
        sh, cl = boxes[f"{m}_roi_share"].astype(float), boxes[f"{m}_clipped"].astype(bool)
        rows[m] = {
            "n_patients": len(sh),
            "n_clipped": int(cl.sum()),
            "pct_clipped": 100.0 * float(cl.mean()),
            "share_median": float(sh.median()),
            "share_q1": float(sh.quantile(0.25)),
            "share_q3": float(sh.quantile(0.75)),
            "share_min": float(sh.min()),
            "share_max": float(sh.max()),
        }
    if not rows:
        raise DataError(
            "clipping_summary: the box table has no roi_share/clipped columns; build it from "
            "preprocess_cohort boxes (roi.roi_boxes(cohort, inputs))."
        )
    return pd.DataFrame.from_dict(rows, orient="index")
