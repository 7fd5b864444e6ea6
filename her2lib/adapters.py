"""Real-data adapters (paper, Methods: *Patients*): public data sets imported as her2lib cohorts.

Each adapter reads a public data set where it lies, never writes into it, and writes a her2lib cohort (a
``manifest.csv``, NIfTI conversions where needed, and ``import_report.csv`` listing every skipped patient with the
reason) into a NEW folder. Both supported sets are MRI-only (empty ``us_image``/``us_mask`` cells):

* MAMA-MIA (:func:`import_mama_mia`): ``clinical_and_imaging_info.xlsx`` (sheet ``dataset_info``: ``patient_id,
  her2, hr, er, pr, age, ...``), ``images/{pid}/{pid}_000k.nii.gz`` DCE phases (k = 0 pre-contrast, 1 = first
  post-contrast, used by default), ``segmentations/expert/{pid}.nii.gz``.
* Duke-Breast-Cancer-MRI (:func:`import_duke`): DICOM series per patient ``Breast_MRI_NNN/<study>/<series>/*.dcm``,
  ``Clinical_and_Other_Features.xlsx`` (3 header rows; ``Patient ID``, ``HER2``, ``ER``, ``PR``, ...) and
  ``Annotation_Boxes.xlsx`` (``Patient ID, Start Row, End Row, Start Column, End Column, Start Slice, End Slice``)
  whose boxes become box masks.

The train/test split is drawn with :func:`her2lib.data.stratified_split` (stratified by HER2, seeded; default test
fraction 48/197 as in the paper). Notebook 00 chooses between them (and the synthetic cohort) through the stage
:func:`her2lib.stages.cohort.prepare_cohort`.

Science layer: imports core modules and :mod:`her2lib.data` only.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from .contract import MANIFEST_HEAD
from .data import read_image, stratified_split, write_nifti
from .errors import DataError
from .io import atomic_path, write_csv, write_json

__all__ = ["import_mama_mia", "import_duke", "IMPORTERS"]


def _check_dirs(src: Path, out: Path) -> None:
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found; set source_dir to the data set's root folder.")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents:
        raise DataError(
            f"{out}: the output folder must be outside the source {src} (sources are never "
            "written to); choose another cohort_dir."
        )


def _binary(v: Any) -> float:
    """0/1 from 0/1, '0'/'1', 'negative'/'positive', True/False; NaN otherwise."""
    if v is None:
        return np.nan
    if isinstance(v, str):
        s = v.strip().lower()
        table = {
            "0": 0,
            "1": 1,
            "0.0": 0,
            "1.0": 1,
            "negative": 0,
            "positive": 1,
            "neg": 0,
            "pos": 1,
            "false": 0,
            "true": 1,
        }
        return float(table[s]) if s in table else np.nan
    try:
        f = float(v)
    except (TypeError, ValueError):
        return np.nan
    return f if f in (0.0, 1.0) else np.nan


def _derive_subtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Fill ``hr, luminal, her2_nonluminal, triple_negative`` from ``er, pr, her2`` where known (else blank)."""
    er = df["er"] if "er" in df else pd.Series(np.nan, index=df.index)
    pr = df["pr"] if "pr" in df else pd.Series(np.nan, index=df.index)
    if "hr" not in df or df["hr"].isna().all():
        hr = np.where((er == 1) | (pr == 1), 1.0, np.where((er == 0) & (pr == 0), 0.0, np.nan))
        df["hr"] = hr
    hr = df["hr"]
    her2 = df["her2"]
    df["luminal"] = hr.where(hr.notna())
    df["her2_nonluminal"] = np.where(hr.isna(), np.nan, ((her2 == 1) & (hr == 0)).astype(float))
    df["triple_negative"] = np.where(hr.isna(), np.nan, ((her2 == 0) & (hr == 0)).astype(float))
    return df


def _finish(
    out: Path,
    rows: list[dict],
    skipped: list[dict],
    test_fraction: float,
    seed: int,
    params: dict,
    *,
    external: list[str] | None = None,
) -> Path:
    if not rows:
        write_csv(out / "import_report.csv", pd.DataFrame(skipped, columns=["patient_id", "reason"]))
        raise DataError(
            f"{out}: no patient could be imported ({len(skipped)} skipped; reasons in "
            f"{out / 'import_report.csv'}); check source_dir and the data set layout."
        )
    df = pd.DataFrame(rows)
    df = df.sort_values("patient_id", kind="stable").reset_index(drop=True)
    df["her2"] = df["her2"].astype(int)
    if external:  # these sites are the external validation cohort; train/test are drawn from the others
        is_ext = df["site"].isin(external).to_numpy()
        if is_ext.all() or not is_ext.any():
            raise DataError(
                f"{out}: external_datasets={external} mark {int(is_ext.sum())} of {len(df)} imported patients as "
                f"external; name one or more of the sites {sorted(set(df['site']))}, not all of them."
            )
        df["split"] = "external"
        df.loc[~is_ext, "split"] = stratified_split(
            df.loc[~is_ext, "her2"].to_numpy(), test_fraction=test_fraction, seed=seed
        )
    else:
        df["split"] = stratified_split(df["her2"].to_numpy(), test_fraction=test_fraction, seed=seed)
    for c in ("us_image", "us_mask"):
        df[c] = ""
    for c in df.columns:  # binary columns as integers, blanks where unknown
        if c not in MANIFEST_HEAD and df[c].dtype.kind == "f" and c != "age":
            vals = df[c]
            if vals.dropna().isin([0.0, 1.0]).all():
                df[c] = vals.map(lambda v: "" if pd.isna(v) else str(int(v)))
    df = df[list(MANIFEST_HEAD) + [c for c in df.columns if c not in MANIFEST_HEAD]]
    write_csv(out / "import_report.csv", pd.DataFrame(skipped, columns=["patient_id", "reason"]))
    write_json(out / "import_params.json", params)
    manifest = out / "manifest.csv"
    write_csv(manifest, df)
    return manifest


def _find_ci(folder: Path, name: str) -> Path | None:
    """``folder/name`` trying the name as given, lower- and upper-case."""
    for cand in (name, name.lower(), name.upper()):
        p = folder / cand
        if p.exists():
            return p
    return None


# ----------------------------------------------------------------------------------------------------------
# MAMA-MIA
# ----------------------------------------------------------------------------------------------------------
def _read_mama_mia_clinical(xlsx: Path, datasets: list[str] | None) -> pd.DataFrame:
    """Sheet ``dataset_info`` with lower-case column names, checked, restricted to ``datasets`` if given."""
    if not xlsx.is_file():
        raise DataError(f"{xlsx}: MAMA-MIA clinical table not found; source_dir must be the MAMA-MIA root.")
    try:
        clin = pd.read_excel(xlsx, sheet_name="dataset_info")
    except Exception as exc:
        raise DataError(f"{xlsx}: cannot read sheet 'dataset_info' ({exc}).") from exc
    clin.columns = [str(c).strip().lower() for c in clin.columns]
    if "patient_id" not in clin or "her2" not in clin:
        raise DataError(f"{xlsx}: sheet dataset_info needs columns patient_id and her2 (found {list(clin.columns)}).")
    if datasets is not None and "dataset" in clin:
        clin = clin[clin["dataset"].astype(str).isin(datasets)]
    return clin


def import_mama_mia(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    test_fraction: float = 48 / 197,
    seed: int = 0,
    phase: int = 1,
    segmentation: str = "expert",
    copy_images: bool = False,
    datasets: list[str] | None = None,
    external_datasets: list[str] | None = None,
) -> Path:
    """Import MAMA-MIA (DCE-MRI, expert segmentations) as an MRI-only her2lib cohort.

    Parameters
    ----------
    src : path-like
        MAMA-MIA root containing ``clinical_and_imaging_info.xlsx``, ``images/`` and ``segmentations/``.
    out_dir : path-like
        New cohort folder (outside ``src``); receives ``manifest.csv``, ``import_report.csv``,
        ``import_params.json`` and, with ``copy_images``, ``mri/``.
    test_fraction : float
        Fraction of each HER2 class in the test split (default 48/197, as in the paper).
    seed : int
        Seed of the split.
    phase : int
        DCE phase file ``{pid}_{phase:04d}.nii.gz`` (0 = pre-contrast, 1 = first post-contrast).
    segmentation : str
        Sub-folder of ``segmentations/`` (``"expert"``).
    copy_images : bool
        Copy the NIfTI files (and rewrite masks as binary uint8) into ``out_dir/mri``; default False: the
        manifest references the source files by relative path.
    datasets : list of str, optional
        Keep only these values of the ``dataset`` column (e.g. ``["ISPY2"]``).
    external_datasets : list of str, optional
        MAMA-MIA pools several centres' collections (``dataset``: DUKE, ISPY1, ISPY2, NACT): the patients of these
        collections become the external validation cohort (``split = external``, never fitted on), the others are
        split into training and test as usual, and the manifest gets a ``site`` column (the collection).

    Returns
    -------
    pathlib.Path
        The manifest. Patients without a 0/1 HER2 label, image or segmentation are skipped and listed in
        ``import_report.csv``.
    """
    src, out = Path(src), Path(out_dir)
    _check_dirs(src, out)
    clin = _read_mama_mia_clinical(src / "clinical_and_imaging_info.xlsx", datasets)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for _, r in clin.iterrows():
        pid = str(r["patient_id"]).strip()
        her2 = _binary(r["her2"])
        if np.isnan(her2):
            skipped.append({"patient_id": pid, "reason": f"her2 = {r['her2']!r} is not 0/1"})
            continue
        folder = _find_ci(src / "images", pid)
        img = _find_ci(folder, f"{pid}_{phase:04d}.nii.gz") if folder else None
        seg = _find_ci(src / "segmentations" / segmentation, f"{pid}.nii.gz")
        if img is None or seg is None:
            skipped.append(
                {
                    "patient_id": pid,
                    "reason": "missing "
                    + " and ".join(
                        w
                        for w, p in ((f"image phase {phase}", img), (f"{segmentation} segmentation", seg))
                        if p is None
                    ),
                }
            )
            continue
        if copy_images:
            dst_img, dst_seg = out / "mri" / f"{pid}.nii.gz", out / "mri" / f"{pid}_mask.nii.gz"
            with atomic_path(dst_img) as tmp:
                shutil.copyfile(img, tmp)
            mask, sp = read_image(seg)
            write_nifti(dst_seg, (mask > 0).astype(np.uint8), sp)
            mi, mm = f"mri/{pid}.nii.gz", f"mri/{pid}_mask.nii.gz"
        else:
            mi, mm = os.path.relpath(img.resolve(), out.resolve()), os.path.relpath(seg.resolve(), out.resolve())
        row: dict[str, Any] = {"patient_id": pid, "her2": int(her2), "mri_image": mi, "mri_mask": mm}
        if external_datasets:
            row["site"] = str(r.get("dataset", ""))
        for c in ("er", "pr", "hr"):
            if c in clin:
                row[c] = _binary(r[c])
        if "age" in clin:
            a = pd.to_numeric(r["age"], errors="coerce")
            row["age"] = float(a) if pd.notna(a) and a > 0 else np.nan
        rows.append(row)
    if rows:
        df = _derive_subtypes(pd.DataFrame(rows))
        rows = df.to_dict("records")
    params = {
        "source": "mama-mia",
        "source_dir": str(src.resolve()),
        "test_fraction": test_fraction,
        "seed": seed,
        "phase": phase,
        "segmentation": segmentation,
        "copy_images": copy_images,
        "datasets": datasets,
        **({"external_datasets": list(external_datasets)} if external_datasets else {}),
    }
    return _finish(out, rows, skipped, test_fraction, seed, params, external=external_datasets)


# ----------------------------------------------------------------------------------------------------------
# Duke-Breast-Cancer-MRI
# ----------------------------------------------------------------------------------------------------------
_DUKE_ID = re.compile(r"^Breast_MRI_\d+$", re.I)


def _read_duke_clinical(path: Path) -> pd.DataFrame:
    raw = pd.read_excel(path, header=None, dtype=object)
    head_row = None
    for i in range(min(6, len(raw))):
        if any(str(v).strip().lower() == "patient id" for v in raw.iloc[i].tolist()):
            head_row = i
            break
    if head_row is None:
        raise DataError(
            f"{path}: no 'Patient ID' header cell in the first rows; expected the Duke "
            "Clinical_and_Other_Features.xlsx layout (3 header rows)."
        )
    names = [str(v).strip() if pd.notna(v) else f"col{j}" for j, v in enumerate(raw.iloc[head_row])]
    body = raw.iloc[head_row + 1 :].copy()
    body.columns = names
    idcol = names[[n.lower() for n in names].index("patient id")]
    body = body[body[idcol].astype(str).str.strip().str.match(_DUKE_ID)]
    body = body.rename(columns={idcol: "Patient ID"})
    return body.reset_index(drop=True)


def _read_dicom_series(files: list[Path]) -> tuple[np.ndarray, tuple[float, float, float]]:
    dss = [pydicom.dcmread(str(f)) for f in files]

    def key(d):
        if "InstanceNumber" in d and d.InstanceNumber is not None:
            return float(d.InstanceNumber)
        return float(d.ImagePositionPatient[2])

    dss.sort(key=key)
    arr = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1) or 1)
            + float(getattr(d, "RescaleIntercept", 0) or 0)
            for d in dss
        ]
    )
    dy, dx = (float(v) for v in dss[0].PixelSpacing)
    if len(dss) > 1 and "ImagePositionPatient" in dss[0]:
        p0, p1 = (np.asarray(d.ImagePositionPatient, float) for d in dss[:2])
        dz = float(np.linalg.norm(p1 - p0)) or float(getattr(dss[0], "SliceThickness", 1.0))
    else:
        dz = float(getattr(dss[0], "SpacingBetweenSlices", getattr(dss[0], "SliceThickness", 1.0)))
    return arr, (dz, dy, dx)


_DUKE_BOX_COLUMNS = ["Patient ID", "Start Row", "End Row", "Start Column", "End Column", "Start Slice", "End Slice"]


def _read_duke_tables(src: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Duke clinical table and the annotation boxes (indexed by patient id), checked."""
    clin_path, box_path = src / "Clinical_and_Other_Features.xlsx", src / "Annotation_Boxes.xlsx"
    for p in (clin_path, box_path):
        if not p.is_file():
            raise DataError(
                f"{p}: Duke table not found; source_dir must hold Clinical_and_Other_Features.xlsx "
                "and Annotation_Boxes.xlsx next to the patient folders."
            )
    clin = _read_duke_clinical(clin_path)
    if "HER2" not in clin.columns:
        raise DataError(f"{clin_path}: no 'HER2' column in the header row (found {list(clin.columns)[:12]}...).")
    boxes = pd.read_excel(box_path)
    boxes.columns = [str(c).strip() for c in boxes.columns]
    if any(c not in boxes.columns for c in _DUKE_BOX_COLUMNS):
        raise DataError(f"{box_path}: needs columns {_DUKE_BOX_COLUMNS} (found {list(boxes.columns)}).")
    boxes = boxes.set_index(boxes["Patient ID"].astype(str).str.strip())
    return clin, boxes


def _duke_series(pdir: Path, pat: re.Pattern, series_pattern: str) -> tuple[list[Path] | None, str]:
    """DICOM files of the first post-contrast series of one patient folder (lowest ``SeriesNumber`` among the
    series whose description or folder name matches), or ``(None, reason)``."""
    series: dict[Path, list[Path]] = {}
    for f in sorted(pdir.rglob("*.dcm")):
        series.setdefault(f.parent, []).append(f)
    cands = []
    descs = []
    for folder, files in series.items():
        h = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
        desc = str(getattr(h, "SeriesDescription", folder.name))
        descs.append(desc)
        if pat.search(desc) or pat.search(folder.name):
            cands.append((int(getattr(h, "SeriesNumber", 0) or 0), str(folder), files))
    if not cands:
        return None, f"no series matches {series_pattern!r} (found {descs})"
    return sorted(cands)[0][2], ""


def _duke_box_mask(b: pd.Series | pd.DataFrame, shape: tuple[int, ...], box_index_base: int) -> np.ndarray:
    """The annotation box of one patient as a ``uint8`` mask on the ``(z, y, x)`` grid (inclusive bounds)."""
    if isinstance(b, pd.DataFrame):
        b = b.iloc[0]
    o = int(box_index_base)
    zs, ze = int(b["Start Slice"]) - o, int(b["End Slice"]) - o
    ys, ye = int(b["Start Row"]) - o, int(b["End Row"]) - o
    xs, xe = int(b["Start Column"]) - o, int(b["End Column"]) - o
    mask = np.zeros(shape, np.uint8)
    mask[max(zs, 0) : ze + 1, max(ys, 0) : ye + 1, max(xs, 0) : xe + 1] = 1
    return mask


def _duke_descriptors(r: pd.Series, clin: pd.DataFrame) -> dict[str, Any]:
    """ER, PR (0/1) and age (years, from the day count of the "Date of Birth" column) of one clinical row."""
    row: dict[str, Any] = {}
    for c_src, c in (("ER", "er"), ("PR", "pr")):
        if c_src in clin.columns:
            row[c] = _binary(r[c_src])
    dob = next((c for c in clin.columns if c.lower().startswith("date of birth")), None)
    if dob is not None:
        d = pd.to_numeric(r[dob], errors="coerce")
        row["age"] = round(abs(float(d)) / 365.25, 1) if pd.notna(d) and d != 0 else np.nan
    return row


def _duke_patient(
    pid: str,
    pdir: Path,
    box: pd.Series | pd.DataFrame,
    out: Path,
    pat: re.Pattern,
    series_pattern: str,
    box_index_base: int,
) -> tuple[Path, Path] | str:
    """Convert one patient's series and box to NIfTI under ``out/mri``; returns the two files or why not."""
    files, why = _duke_series(pdir, pat, series_pattern)
    if files is None:
        return why
    try:
        vol, sp = _read_dicom_series(files)
    except Exception as exc:
        return f"DICOM read failed: {exc}"
    mask = _duke_box_mask(box, vol.shape, box_index_base)
    if not mask.any():
        return f"annotation box outside the volume {vol.shape}"
    integral = np.array_equal(vol, np.round(vol)) and vol.min() >= -32768 and vol.max() <= 32767
    img_path, mask_path = out / "mri" / f"{pid}.nii.gz", out / "mri" / f"{pid}_mask.nii.gz"
    write_nifti(img_path, vol.astype(np.int16 if integral else np.float32), sp)
    write_nifti(mask_path, mask, sp)
    return img_path, mask_path


def import_duke(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    test_fraction: float = 48 / 197,
    seed: int = 0,
    series_pattern: str = r"1st|ph1|post.?1|pass.?1",
    box_index_base: int = 1,
    progress: bool = False,
) -> Path:
    """Import Duke-Breast-Cancer-MRI (DICOM) as an MRI-only her2lib cohort with bounding-box masks.

    Parameters
    ----------
    src : path-like
        Folder holding ``Clinical_and_Other_Features.xlsx``, ``Annotation_Boxes.xlsx`` and the patient folders
        ``Breast_MRI_NNN`` (directly or one level down, e.g. ``Duke-Breast-Cancer-MRI/Breast_MRI_001``).
    out_dir : path-like
        New cohort folder (outside ``src``): ``mri/{pid}.nii.gz`` (first post-contrast series, ``(z, y, x)``
        with z in InstanceNumber order, y = DICOM rows, x = columns), ``mri/{pid}_mask.nii.gz`` (box mask),
        ``manifest.csv``, ``import_report.csv``, ``import_params.json``.
    test_fraction, seed
        Stratified split, as in :func:`import_mama_mia`.
    series_pattern : str
        Case-insensitive regex on ``SeriesDescription`` picking the first post-contrast series (lowest
        ``SeriesNumber`` among matches).
    box_index_base : int
        Index base of the rows/columns/slices in ``Annotation_Boxes.xlsx`` (1: inclusive 1-based, as documented
        for the Duke set; 0: 0-based inclusive).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pathlib.Path
        The manifest.
    """
    src, out = Path(src), Path(out_dir)
    _check_dirs(src, out)
    clin, boxes = _read_duke_tables(src)
    pdirs = {p.name: p for p in list(src.glob("Breast_MRI_*")) + list(src.glob("*/Breast_MRI_*")) if p.is_dir()}
    pat = re.compile(series_pattern, re.I)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    it: Any = clin.iterrows()
    if progress:
        it = tqdm(list(it), desc="Duke import")
    for _, r in it:
        pid = str(r["Patient ID"]).strip()
        her2 = _binary(r["HER2"])
        if np.isnan(her2):
            skipped.append({"patient_id": pid, "reason": f"HER2 = {r['HER2']!r} is not 0/1"})
            continue
        why = "no DICOM folder" if pid not in pdirs else "no annotation box" if pid not in boxes.index else None
        done = why or _duke_patient(pid, pdirs[pid], boxes.loc[pid], out, pat, series_pattern, box_index_base)
        if isinstance(done, str):
            skipped.append({"patient_id": pid, "reason": done})
            continue
        rows.append(
            {
                "patient_id": pid,
                "her2": int(her2),
                "mri_image": f"mri/{pid}.nii.gz",
                "mri_mask": f"mri/{pid}_mask.nii.gz",
                **_duke_descriptors(r, clin),
            }
        )
    if rows:
        rows = _derive_subtypes(pd.DataFrame(rows)).to_dict("records")
    params = {
        "source": "duke",
        "source_dir": str(src.resolve()),
        "test_fraction": test_fraction,
        "seed": seed,
        "series_pattern": series_pattern,
        "box_index_base": box_index_base,
    }
    return _finish(out, rows, skipped, test_fraction, seed, params)


#: The real-data importers by ``source`` name (notebook 00's ``source`` parameter).
IMPORTERS: dict[str, Callable[..., Path]] = {"mama-mia": import_mama_mia, "duke": import_duke}
