"""The embedded synthetic cohort (paper, Methods: *Patients*; Tables 1-3).

No patient data can ship with her2lib, so the default input is a deterministic synthetic cohort that mirrors the
paper's: 197 patients (149 train / 48 test; HER2-positive 60/19), every categorical variable of Tables 1-3 with
the paper's per-split counts *exactly*, age and largest tumour size with the paper's per-split median and
quartiles (``numpy.quantile``, linear method) *and* the paper's train-vs-test Mann-Whitney P values (0.704 and
0.243, R's ``wilcox.test`` rule, :func:`match_mann_whitney_p`), and per patient one B-mode ultrasound image
(8-bit PNG) and one DCE post-contrast T1 MRI volume (NIfTI), each with its lesion mask.

MRI geometry
------------
A prone axial bilateral breast slab, 120 x 320 x 320 mm (z, y, x; clinical DCE-MRI has a 300-360 mm in-plane
field of view, the paper's 360 mm), by default 80 x 128 x 128 voxels of 1.5 x 2.5 x 2.5 mm: the paper's 1.5 mm
slices, in-plane voxels coarser than a scanner's ~0.7 mm so that the cohort builds fast. Both breasts lie on the
chest wall (pectoralis, ribs; lungs, heart, aorta behind), the index lesion at a random position inside the
breast named by ``location`` (patient's left = image right). Give the ROI margin in mm (35 mm = the paper's 50
voxels at 0.7 mm): the crop is then a true region of interest (~8 % of the slice; the field of view cuts it for
~2 % of the default cohort).

HER2 signal model
-----------------
Each patient has one latent score ``z ~ N(+-her2_signal / 2, 1)`` (sign = HER2 status) and one noisy copy per
modality ``s_us = z + modality_noise * e_us``, ``s_mri = z + modality_noise * e_mri`` (independent standard
normal ``e``). ``s_us`` drives the US BI-RADS columns associated with HER2 in the literature (calcifications,
posterior enhancement, not-circumscribed margin, heterogeneous echo) and, continuously, the rendered image
(internal heterogeneity, posterior acoustic enhancement, number and size of echogenic calcification foci,
echogenic halo); ``s_mri`` drives the MRI columns (heterogeneous enhancement, non-mass enhancement, multiple
lesions, irregular shape) and the rendered enhancement (rim-like profile, heterogeneity, peak intensity).
The features are blob-scale (several mm), so they survive resizing the ROI to 64x64 / 32^3.

An oracle that knows a score reaches ROC AUC ``Phi(her2_signal / sqrt(2 * v))`` with ``v = 1`` for ``z``,
``v = 1 + modality_noise**2`` for one modality and ``v = 1 + modality_noise**2 / 2`` for the mean of both
(:func:`oracle_auc_theory`); defaults (``her2_signal=2.5, modality_noise=1.0``): latent 0.96, US 0.89, MRI 0.89,
fused 0.93. Small CNNs trained from scratch on ~110 ROIs reach less (see ``data/README.md``). :func:`oracle_auc`
gives the empirical values of a built cohort.

HER2 IHC / ISH and the HER2-low signal
--------------------------------------
IHC is drawn after the Tables 1-3 columns (one uniform draw per patient, so the binary counts are untouched):
HER2-negative patients are 35 % IHC 0, 40 % IHC 1+ and 25 % IHC 2+ with negative ISH, so HER2-low (IHC 1+, or
2+/ISH-) is 65 % of HER2-negatives, inside the range of published series (HER2-low is about half to two thirds of
HER2-negative invasive breast cancers); HER2-positive patients are 75 % IHC 3+ and 25 % IHC 2+ with positive ISH
(ISH is "not_done" unless IHC is 2+). :func:`her2lib.data.her2_class` turns these into HER2-zero, HER2-low and
HER2-positive (ASCO/CAP).

By default the images carry no HER2-low information. The knob ``low_signal`` (SD units, default 0) shifts the
latent scores that drive the images (``z``, hence ``s_us`` and ``s_mri``) of HER2-low patients by ``+low_signal``,
towards the HER2-positives, *after* IHC is drawn: the Tables 1-3 columns (drawn from the unshifted scores) and
every random draw stay the same, so only the images change. The low-vs-zero signal should be weaker than the
HER2+/- one so that the three-class task is learnable but harder: the ``three_class`` profile uses ``low_signal =
1.25`` against ``her2_signal = 2.5``. Among HER2-negatives an oracle then reaches ``Phi(low_signal / sqrt(2 v))``
with the ``v`` above: latent 0.81, US 0.73, MRI 0.73, fused 0.76 (:func:`oracle_auc_theory` with ``low_signal``).
The shift also brings HER2-low closer to HER2-positive, so the HER2+ vs HER2- oracle AUCs fall from 0.96 / 0.89 /
0.89 / 0.93 to 0.86 / 0.79 / 0.79 / 0.82.

Paper-count inconsistencies (documented, unavoidable with the printed counts)
-------------------------------------------------------------------------
``luminal`` = not (``her2_nonluminal`` or ``triple_negative``) holds exactly (46 = 32 + 14 train, 14 = 11 + 3
test). ``triple_negative`` implies ``her2 = 0, hr = 0``; ``her2_nonluminal`` implies ``her2 = 1, hr = 0``.
But the paper has more HR-negative patients than non-luminal ones (train 51 vs 46, test 18 vs 14), so 5 train /
4 test luminal patients get ``hr = 0``; and more ER-positive than HR-positive patients (train 100 vs 98, test
35 vs 30), so 2 train / 5 test patients are ER-positive with ``hr = 0``. ER/PR-negative cells go first to the
non-luminal patients, so every ``hr = 1`` patient is ER- or PR-positive and every non-luminal patient is ER- and
PR-negative except one test patient (ER+ forced by the test split's 35 ER+ vs 30 HR+).

Science layer: imports core modules and :mod:`her2lib.data` (image writers) only.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from .contract import MANIFEST_HEAD, PAPER_SPLITS, table_spec
from .data import her2_classes, write_nifti, write_png
from .errors import ParameterError
from .io import write_csv, write_json
from .options import look_up_option

__all__ = [
    "SynthKnobs",
    "make_cohort",
    "make_table",
    "split_counts",
    "scale_counts",
    "place_quantiles",
    "oracle_auc",
    "oracle_auc_theory",
    "paper_count_table",
    "paper_count_agreement",
    "knobs_from",
    "render_us",
    "render_mri",
    "render_mri_mask",
    "shift_us",
    "shift_mri",
    "r_wilcox_p",
    "match_mann_whitney_p",
    "PAPER_MW_P",
]

SYNTH_VERSION = 3

#: Share of HER2-low (IHC 1+ 40 %, IHC 2+ / ISH- 25 %) among the HER2-negative patients, as drawn in
#: :func:`_split_table` (the rest, 35 %, is IHC 0).
_P_LOW = 0.65


@dataclass(frozen=True)
class SynthKnobs:
    """Knobs of the synthetic cohort (all have defaults; pass as ``make_cohort(..., **knobs)``).

    Attributes
    ----------
    us_shape : (int, int)
        US image ``(height, width)`` in px (depth x lateral). Default (448, 512).
    us_fov_mm : float
        Lateral field of view of the US image in mm (sets px/mm). Default 50.
    mri_shape : (int, int, int)
        MRI volume ``(z, y, x)`` in voxels. Default (80, 128, 128).
    mri_fov_mm : (float, float, float)
        MRI field of view ``(z, y, x)`` in mm; spacing = fov / shape. Default (120, 320, 320): a bilateral axial
        breast slab (clinical DCE-MRI: 300-360 mm in-plane; the paper's DCE: 360 mm, 1.5 mm slices) -> voxels
        1.5 x 2.5 x 2.5 mm. The in-plane voxels are coarser than a scanner's (~0.7 mm) to keep the build fast;
        the ROI margin is therefore given in mm (35 mm = the paper's 50 voxels at 0.7 mm). Changed 2025 from
        (72, 67.2, 67.2) mm, where the 50-voxel margin covered the whole slice.
    her2_signal : float
        Separation of the latent score between HER2 classes (in SDs); 0 = no signal. Default 2.5.
    modality_noise : float
        SD of the independent per-modality noise added to the latent score. Default 1.0.
    low_signal : float
        Shift (in SDs, >= 0) of the image-driving latent scores of HER2-low patients (HER2-negative with IHC 1+ or
        2+) towards the HER2-positives; 0 = the images carry no HER2-low vs HER2-zero information. Default 0.
    n_external : int
        Patients of an external validation site (``split = "external"``, ids ``EXT001...``), drawn from the test
        cohort's distribution after the training and test patients, whose tables, images and ids stay those of a
        cohort without them. Default 0.
    external_shift : float
        Strength (>= 0) of the external site's acquisition shift (:func:`shift_us`, :func:`shift_mri`: another
        scanner's intensity scaling, dynamic range / contrast, resolution and noise); 0 = the same scanner,
        1 = a clearly different one. Default 1.
    external_her2_share : float
        HER2-positive share of the external site, in (0, 1); 0 = the test cohort's share (paper: 19 of 48).
        Default 0.
    n_jobs : int
        Worker processes for rendering (results do not depend on it). Default 1.
    """

    us_shape: tuple[int, int] = (448, 512)
    us_fov_mm: float = 50.0
    mri_shape: tuple[int, int, int] = (80, 128, 128)
    mri_fov_mm: tuple[float, float, float] = (120.0, 320.0, 320.0)
    her2_signal: float = 2.5
    modality_noise: float = 1.0
    low_signal: float = 0.0
    n_external: int = 0
    external_shift: float = 1.0
    external_her2_share: float = 0.0
    n_jobs: int = 1

    @property
    def mri_spacing(self) -> tuple[float, float, float]:
        return tuple(float(f) / int(s) for f, s in zip(self.mri_fov_mm, self.mri_shape))  # type: ignore


def knobs_from(**knobs: Any) -> SynthKnobs:
    """Build :class:`SynthKnobs` from keyword arguments, validating names and values.

    Raises
    ------
    ParameterError
        Unknown knob (with a close match) or an invalid value.
    """
    names = sorted(SynthKnobs.__dataclass_fields__)
    for k in knobs:
        look_up_option(k, names, name="synthetic-cohort knob")
    kw = dict(knobs)
    for k in ("us_shape", "mri_shape"):
        if k in kw:
            kw[k] = tuple(int(v) for v in kw[k])
    if "mri_fov_mm" in kw:
        kw["mri_fov_mm"] = tuple(float(v) for v in kw["mri_fov_mm"])
    k = SynthKnobs(**kw)
    if len(k.us_shape) != 2 or min(k.us_shape) < 32:
        raise ParameterError(f"us_shape={k.us_shape} must be (height, width) with both >= 32 px.")
    if len(k.mri_shape) != 3 or min(k.mri_shape) < 8:
        raise ParameterError(f"mri_shape={k.mri_shape} must be (z, y, x) with all >= 8 voxels.")
    if len(k.mri_fov_mm) != 3 or min(k.mri_fov_mm) <= 0 or k.us_fov_mm <= 0:
        raise ParameterError("mri_fov_mm (3 values) and us_fov_mm must be positive.")
    if k.her2_signal < 0 or k.modality_noise < 0 or k.low_signal < 0:
        raise ParameterError(
            f"her2_signal={k.her2_signal}, modality_noise={k.modality_noise} and low_signal={k.low_signal} "
            "must all be >= 0."
        )
    if k.n_jobs < 1:
        raise ParameterError(f"n_jobs={k.n_jobs} must be >= 1.")
    if k.n_external < 0 or k.external_shift < 0 or not 0 <= k.external_her2_share < 1:
        raise ParameterError(
            f"n_external={k.n_external} and external_shift={k.external_shift} must be >= 0 and "
            f"external_her2_share={k.external_her2_share} in [0, 1) (0: the test cohort's share)."
        )
    if k.n_external:
        share = k.external_her2_share or 19 / 48  # 0: the paper's test cohort's share
        pos = int(round(share * k.n_external))
        if not 2 <= pos <= k.n_external - 2:
            raise ParameterError(
                f"n_external={k.n_external} with a HER2-positive share of {share:.2f} gives {pos} HER2-positive "
                "patients; the external AUC and its DeLong test need >= 2 of each class (more patients or another "
                "share)."
            )
    return k


# ----------------------------------------------------------------------------------------------------------
# Counts
# ----------------------------------------------------------------------------------------------------------
def scale_counts(counts: list[int], total: int) -> list[int]:
    """Scale ``counts`` to sum to ``total`` by largest-remainder rounding (ties -> earlier level).

    Parameters
    ----------
    counts : list of int
        Reference counts (e.g. the paper's, per level).
    total : int
        Target sum.

    Returns
    -------
    list of int
        Non-negative counts summing to ``total``; equal to ``counts`` when ``total == sum(counts)``.
    """
    ref = sum(counts)
    if ref == total:
        return list(counts)
    exact = [c * total / ref for c in counts]
    base = [int(math.floor(e)) for e in exact]
    rem = total - sum(base)
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:rem]:
        base[i] += 1
    return base


def split_counts(n_patients: int) -> dict[str, int]:
    """Train/test sizes for ``n_patients`` (paper: 149/48 of 197, largest-remainder scaling)."""
    spec = table_spec()["n"]
    tr, te = scale_counts([spec["train"], spec["test"]], n_patients)
    return {"train": tr, "test": te}


def place_quantiles(
    values: np.ndarray,
    targets: dict[float, float],
    *,
    integer: bool = True,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> np.ndarray:
    """Monotonically adjust ``values`` so that ``np.quantile(out, q) == targets[q]`` exactly.

    Parameters
    ----------
    values : np.ndarray, shape (n,)
        Draws (any order); the output keeps each value's rank.
    targets : dict
        ``{0.25: Q1, 0.5: median, 0.75: Q3}`` (any increasing quantiles).
    integer : bool
        Round to integers wherever the targets allow (ages, mm), else keep floats.
    bounds : (float, float)
        Plausible range; values outside are clipped (never the pinned quantile values).

    Returns
    -------
    np.ndarray, shape (n,)
        Adjusted values in the input order.
    """
    v = np.asarray(values, dtype=float)
    n = v.size
    order = np.argsort(v, kind="stable")
    s = v[order].copy()
    qs = sorted(targets)
    if n < 2:
        return v
    # 1) piecewise-linear monotone map of the empirical quantiles onto the targets
    emp = np.quantile(s, qs)
    tgt = np.array([targets[q] for q in qs], float)
    lo_slope = (tgt[1] - tgt[0]) / max(emp[1] - emp[0], 1e-9) if len(qs) > 1 else 1.0
    hi_slope = (tgt[-1] - tgt[-2]) / max(emp[-1] - emp[-2], 1e-9) if len(qs) > 1 else 1.0
    xs = np.concatenate([[emp[0] - 1e3], emp, [emp[-1] + 1e3]])
    lo_slope, hi_slope = float(np.clip(lo_slope, 0.25, 4.0)), float(np.clip(hi_slope, 0.25, 4.0))
    ys = np.concatenate([[tgt[0] - 1e3 * lo_slope], tgt, [tgt[-1] + 1e3 * hi_slope]])
    if np.all(np.diff(xs) > 0):
        s = np.interp(s, xs, ys)
    s = np.clip(s, min(bounds[0], tgt.min()), max(bounds[1], tgt.max()))
    if integer:
        s = np.round(s)
    # 2) pin the order statistics that define each quantile, then restore monotonicity around them
    pinned: dict[int, float] = {}
    for q in qs:
        h = (n - 1) * q
        lo, hi = int(math.floor(h)), int(math.ceil(h))
        frac = h - lo
        t = float(targets[q])
        if hi == lo or (integer and float(t).is_integer()):
            pinned[lo] = t
            pinned[hi] = t
        else:
            a = math.floor(t) if integer else s[lo]
            a = min(a, t)
            b = a + (t - a) / frac
            pinned[lo], pinned[hi] = float(a), float(b)
    for i, val in pinned.items():
        s[i] = val
    keys = sorted(pinned)
    for i in range(n):
        lo_b = max([pinned[k] for k in keys if k <= i], default=-np.inf)
        hi_b = min([pinned[k] for k in keys if k >= i], default=np.inf)
        s[i] = min(max(s[i], lo_b), hi_b)
    s = np.maximum.accumulate(s)
    out = np.empty(n)
    out[order] = s
    return out


def _parse_quartiles(text: str) -> dict[float, float]:
    num = r"\s*([-+]?\d+(?:\.\d+)?)"
    found = [re.search(key + num, text, flags=re.I) for key in ("median", "Q1", "Q3")]
    if not all(found):
        raise ParameterError(f"cannot parse 'median M (Q1 a, Q3 b)' from {text!r}")
    med, q1, q3 = (float(m.group(1)) for m in found)  # type: ignore[union-attr]
    return {0.25: q1, 0.5: med, 0.75: q3}


#: Plausible range of the continuous variables (years, mm).
_CONT_BOUNDS: dict[str, tuple[float, float]] = {"age": (25, 88), "mri_size_mm": (6, 80)}

# which level is HER2-like (first in the list = most HER2+-like) and the weight of the modality score
_ASSOC: dict[str, tuple[list[str], float, str]] = {
    "ki67": (["high", "low"], 0.6, "z"),
    "us_shape": (["irregular", "round_oval"], 0.3, "us"),
    "us_orientation": (["parallel", "not_parallel"], 0.3, "us"),
    "us_margin": (["not_circumscribed", "circumscribed"], 0.5, "us"),
    "us_echo_pattern": (["heterogeneous", "complex_cystic_solid", "hypoechoic", "isoechoic"], 0.8, "us"),
    "us_posterior": (["enhancement", "combined", "none", "shadowing"], 1.0, "us"),
    "us_calcifications": (["present", "absent"], 1.0, "us"),
    "us_vascularity": (["internal", "rim", "absent"], 0.4, "us"),
    "us_axillary_ln": (["present", "absent"], 0.3, "z"),
    "mri_shape": (["irregular", "round_oval"], 0.3, "mri"),
    "mri_margin": (["not_circumscribed", "circumscribed"], 0.4, "mri"),
    "mri_lesions": (["multiple", "single"], 0.6, "mri"),
    "mri_t2_hyper": (["present", "absent"], 0.4, "mri"),
    "mri_skin": (["present", "absent"], 0.2, "mri"),
    "mri_nipple": (["present", "absent"], 0.2, "mri"),
    "mri_enhancement": (["heterogeneous", "homogeneous"], 1.0, "mri"),
    "mri_nonmass": (["present", "absent"], 0.7, "mri"),
}


def _assign_exact(priority: np.ndarray, levels_in_order: list, counts_in_order: list[int]) -> np.ndarray:
    """Give the ``counts[0]`` highest-priority patients level 0, the next ``counts[1]`` level 1, ..."""
    order = np.argsort(-priority, kind="stable")
    out = np.empty(priority.size, dtype=object)
    start = 0
    for lev, c in zip(levels_in_order, counts_in_order):
        out[order[start : start + c]] = lev
        start += c
    return out


def _split_table(rng: np.random.Generator, split: str, n: int, k: SynthKnobs, her2_share: float = 0.0) -> pd.DataFrame:
    spec = table_spec()
    cat = {v["column"]: v for v in spec["categorical"]}

    def counts(col: str) -> dict:
        v = cat[col]
        if col == "her2" and her2_share:  # an external site's own prevalence (both classes kept)
            pos = min(max(int(round(her2_share * n)), 1), n - 1)
            return {1: pos, 0: n - pos}
        return dict(zip(v["codes"], scale_counts(v[split], n)))

    noise = lambda: rng.standard_normal(n)  # noqa: E731
    tie = lambda: rng.random(n) * 1e-3  # noqa: E731  (random tie-break)
    df = pd.DataFrame(index=range(n))
    c = counts("her2")
    df["her2"] = _assign_exact(tie(), [1, 0], [c[1], c[0]]).astype(int)
    her2 = df["her2"].to_numpy()
    z = np.where(her2 == 1, k.her2_signal / 2, -k.her2_signal / 2) + rng.standard_normal(n)
    s = {
        "z": z,
        "us": z + k.modality_noise * rng.standard_normal(n),
        "mri": z + k.modality_noise * rng.standard_normal(n),
    }
    # molecular subtypes (priorities: big integer = hard preference, tie() = random within)
    c = counts("her2_nonluminal")
    df["her2_nonluminal"] = _assign_exact(10 * her2 + tie(), [1, 0], [c[1], c[0]]).astype(int)
    nl = df["her2_nonluminal"].to_numpy()
    c = counts("triple_negative")
    df["triple_negative"] = _assign_exact(10 * (1 - her2) - 20 * nl + tie(), [1, 0], [c[1], c[0]]).astype(int)
    tn = df["triple_negative"].to_numpy()
    nonlum = (nl + tn) > 0
    c = counts("luminal")
    df["luminal"] = _assign_exact(10 * (~nonlum) + tie(), [1, 0], [c[1], c[0]]).astype(int)
    lum = df["luminal"].to_numpy()
    c = counts("hr")
    df["hr"] = _assign_exact(10 * lum + tie(), [1, 0], [c[1], c[0]]).astype(int)
    hr = df["hr"].to_numpy()
    c = counts("er")
    df["er"] = _assign_exact(10 * hr + 5 * lum + tie(), [1, 0], [c[1], c[0]]).astype(int)
    er = df["er"].to_numpy()
    c = counts("pr")
    df["pr"] = _assign_exact(10 * hr + 5 * lum + 3 * (hr * (1 - er)) + tie(), [1, 0], [c[1], c[0]]).astype(int)
    for col in ("location",):
        c = counts(col)
        df[col] = _assign_exact(tie(), list(c), list(c.values()))
    for col, (order, w, src) in _ASSOC.items():
        c = counts(col)
        df[col] = _assign_exact(w * s[src] + noise(), order, [c[o] for o in order])
    # continuous
    cont = {v["column"]: _parse_quartiles(v[split]) for v in spec["continuous"]}
    age = np.clip(rng.normal(cont["age"][0.5], (cont["age"][0.75] - cont["age"][0.25]) / 1.35, n), *_CONT_BOUNDS["age"])
    df["age"] = (
        place_quantiles(age, cont["age"], bounds=_CONT_BOUNDS["age"]).astype(int)
        if n >= 4
        else np.round(age).astype(int)
    )
    t = cont["mri_size_mm"]
    size = np.exp(rng.normal(np.log(t[0.5]), np.log(t[0.75] / t[0.25]) / 1.35, n)) + 0.3 * s["mri"]
    size = np.clip(size, *_CONT_BOUNDS["mri_size_mm"])
    size = place_quantiles(size, t, bounds=_CONT_BOUNDS["mri_size_mm"]) if n >= 4 else np.round(size)
    df["mri_size_mm"] = [int(v) if float(v).is_integer() else float(v) for v in size]
    # HER2 IHC / FISH consistent with her2
    u = rng.random(n)
    ihc = np.where(her2 == 1, np.where(u < 0.75, "3+", "2+"), np.where(u < 0.35, "0", np.where(u < 0.75, "1+", "2+")))
    df["her2_ihc"] = ihc
    df["fish"] = np.where(ihc == "2+", np.where(her2 == 1, "positive", "negative"), "not_done")
    df["split"] = split
    if k.low_signal:  # HER2-low images move towards the positives; no draw, the columns above keep the old scores
        shift = k.low_signal * ((her2 == 0) & (ihc != "0"))
        s = {key: v + shift for key, v in s.items()}
    df["_z"], df["_s_us"], df["_s_mri"] = s["z"], s["us"], s["mri"]
    return df


# ----------------------------------------------------------------------------------------------------------
# Continuous variables: the paper's Mann-Whitney P values (train vs test)
# ----------------------------------------------------------------------------------------------------------
#: P values the paper prints for the two continuous rows of Tables 1-3 (training vs test cohort, Mann-Whitney U;
#: Table 1 "Age", Table 3 "Largest tumor size"), matched by :func:`match_mann_whitney_p`.
PAPER_MW_P: dict[str, float] = {"age": 0.704, "mri_size_mm": 0.243}


def r_wilcox_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided P value of R's ``wilcox.test(a, b)`` with its defaults (``exact = NULL, correct = TRUE``).

    R computes the exact P when both groups have fewer than 50 values and there are no ties; otherwise the
    normal approximation with continuity correction and tie-corrected variance:
    ``z = (W - n_a n_b / 2 - sign(.) / 2) / sqrt(n_a n_b / 12 * (n_a + n_b + 1 - sum(t^3 - t) / ((n_a + n_b)
    (n_a + n_b - 1))))``, ``P = 2 min(Phi(z), 1 - Phi(z))``. Checked against R 4.2 ``wilcox.test``
    (``tests/fixtures/wilcox_reference.json``). A fast float twin of the exact-arithmetic
    ``her2lib.stats.continuous_test`` rule, for the search of :func:`match_mann_whitney_p`.

    Parameters
    ----------
    a, b : array-like, shape (n_a,), (n_b,)

    Returns
    -------
    float
    """
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    return _wilcox_p_sorted(a, b)


def _wilcox_p_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`r_wilcox_p` for sorted ``a`` and ``b`` (the hot path of :func:`match_mann_whitney_p`)."""
    na, nb = a.size, b.size
    x = np.concatenate([a, b])
    x.sort()
    cnt = np.diff(np.flatnonzero(np.r_[True, x[1:] != x[:-1], True]))
    if na < 50 and nb < 50 and not (cnt > 1).any():
        return float(stats.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
    w = 0.5 * float((np.searchsorted(b, a, "left") + np.searchsorted(b, a, "right")).sum())  # U of a
    n = na + nb
    sigma = math.sqrt(na * nb / 12 * ((n + 1) - float((cnt**3 - cnt).sum()) / (n * (n - 1))))
    d = w - na * nb / 2
    if sigma == 0:
        return 1.0
    z = (abs(d) - 0.5 * (d != 0)) / sigma
    return min(1.0, math.erfc(z / math.sqrt(2)))


def _pinned(n: int, qs=(0.25, 0.5, 0.75)) -> set[int]:
    """Order statistics that define ``numpy.quantile(x, qs)`` (linear method) for ``n`` values."""
    out: set[int] = set()
    for q in qs:
        h = (n - 1) * q
        out |= {int(math.floor(h)), int(math.ceil(h))}
    return out


def match_mann_whitney_p(
    a: np.ndarray,
    b: np.ndarray,
    target: float,
    rng: np.random.Generator,
    *,
    bounds: tuple[float, float] = (-np.inf, np.inf),
    tol: float = 2.5e-4,
    alpha: float = 0.05,
    max_steps: int = 5000,
) -> tuple[np.ndarray, np.ndarray]:
    """Move values of two groups by +-1 between their quartiles until R's Mann-Whitney P is ``target``.

    The order statistics that define each group's quartiles (``numpy.quantile``, linear method) are never moved,
    and every move keeps the group's sorted order, so each group's median and quartiles, and the rank of every
    value within its group, are unchanged. A random walk (greedy towards ``target``, free inside a narrow band
    around it so that the tie pattern can change) stops when ``|P - target| < tol`` and at least one group fails
    Shapiro-Wilk at ``alpha`` (so the paper's rule, Mann-Whitney unless both groups look normal, applies).

    Parameters
    ----------
    a, b : np.ndarray, shape (n_a,), (n_b,)
        Values (integers for ages and sizes in mm), any order.
    target : float
        The P value to reach (:func:`r_wilcox_p`).
    rng : np.random.Generator
    bounds : (float, float)
        Plausible range of a value.
    tol : float
        Stop when ``|P - target| < tol`` (the paper prints 3 decimals: 5e-4 would round to it).
    alpha : float
        Shapiro-Wilk level of the paper's rule.
    max_steps : int
        Proposals before giving up (the best state found is returned).

    Returns
    -------
    a, b : np.ndarray
        Adjusted values in the input order.
    """
    groups = [np.asarray(a, float), np.asarray(b, float)]
    orders = [np.argsort(g, kind="stable") for g in groups]
    s = [g[o].copy() for g, o in zip(groups, orders)]
    pinned = [_pinned(v.size) for v in s]
    free = [np.array(sorted(set(range(v.size)) - pn), dtype=np.intp) for v, pn in zip(s, pinned)]
    sizes = np.array([f.size for f in free], float)

    def ok_shapiro() -> bool:
        return min(stats.shapiro(v).pvalue for v in s if v.size >= 3) < alpha

    p = _wilcox_p_sorted(*s)
    best = (abs(p - target), [v.copy() for v in s])
    band, hit = 3e-3, None
    for step in range(max_steps):
        if abs(p - target) < tol:
            hit = step if hit is None else hit
            if ok_shapiro() or step - hit > 200:
                break
        g = int(rng.random() < sizes[1] / sizes.sum())
        if free[g].size == 0:
            continue
        v = s[g]
        i = int(free[g][rng.integers(free[g].size)])
        up = rng.random() < 0.5
        # move the last (up) / first (down) member of i's run of ties, so the group stays sorted
        i = int(np.searchsorted(v, v[i], "right")) - 1 if up else int(np.searchsorted(v, v[i], "left"))
        if i in pinned[g]:
            continue
        new = v[i] + (1.0 if up else -1.0)
        lo = v[i - 1] if i > 0 else -np.inf
        hi = v[i + 1] if i < v.size - 1 else np.inf
        if not (max(lo, bounds[0]) <= new <= min(hi, bounds[1])):
            continue
        old = v[i]
        v[i] = new
        p_new = _wilcox_p_sorted(*s)
        if abs(p_new - target) < abs(p - target) or (abs(p_new - target) < band and rng.random() < 0.5):
            p = p_new
            if abs(p - target) < best[0]:
                best = (abs(p - target), [u.copy() for u in s])
        else:
            v[i] = old
    else:
        s = best[1]
    return _in_input_order(groups[0], orders[0], s[0]), _in_input_order(groups[1], orders[1], s[1])


def _in_input_order(values: np.ndarray, order: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """``sorted_values`` (``values[order]``, adjusted) put back in the order of ``values``."""
    out = np.empty_like(values)
    out[order] = sorted_values
    return out


def _match_paper_pvalues(parts: list[pd.DataFrame], seed: int) -> None:
    """In place: age and tumour size of the train/test tables get the paper's Mann-Whitney P values."""
    tr, te = parts
    if min(len(tr), len(te)) < 4:
        return
    for j, (col, target) in enumerate(PAPER_MW_P.items()):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3, j]))
        a, b = match_mann_whitney_p(
            tr[col].to_numpy(float), te[col].to_numpy(float), target, rng, bounds=_CONT_BOUNDS[col]
        )
        for df, v in ((tr, a), (te, b)):
            df[col] = v.astype(int) if col == "age" else [int(x) if float(x).is_integer() else float(x) for x in v]


def make_table(n_patients: int = 197, seed: int = 0, **knobs: Any) -> pd.DataFrame:
    """The synthetic cohort's table (no images): manifest columns without paths, plus latent scores.

    Parameters
    ----------
    n_patients : int
        Cohort size (>= 20). 197 reproduces the paper's counts exactly; others scale them.
    seed : int
        Seed; the table depends only on ``(n_patients, seed, her2_signal, modality_noise)``, and its latent
        columns also on ``low_signal``.
    **knobs
        :class:`SynthKnobs` fields.

    Returns
    -------
    pd.DataFrame, shape (n_patients, n_columns)
        ``patient_id, split, her2``, Tables 1-3 columns, ``age, mri_size_mm, her2_ihc, fish`` and the latent
        columns ``_z, _s_us, _s_mri`` (not written to the manifest).
    """
    if int(n_patients) != n_patients or n_patients < 20:
        raise ParameterError(f"n_patients={n_patients!r} must be an integer >= 20 (both splits need both classes).")
    k = knobs_from(**knobs)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    parts = [_split_table(rng, sp, n, k) for sp, n in split_counts(int(n_patients)).items()]
    _match_paper_pvalues(parts, int(seed))
    df = pd.concat(parts, ignore_index=True)
    perm = rng.permutation(len(df))  # interleave splits so ids carry no split information
    df = df.iloc[perm].reset_index(drop=True)
    width = max(3, len(str(len(df))))
    df.insert(0, "patient_id", [f"SYN{i + 1:0{width}d}" for i in range(len(df))])
    if k.n_external:  # its own generator: the training and test patients are those of a cohort without it
        ext_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))  # key 5: used nowhere else
        ext = _split_table(ext_rng, "test", k.n_external, k, her2_share=k.external_her2_share)
        ext["split"] = "external"
        ext.insert(0, "patient_id", [f"EXT{i + 1:03d}" for i in range(len(ext))])
        df = pd.concat([df, ext], ignore_index=True)
    return df


def paper_count_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per-split counts of every categorical variable of Tables 1-3 next to the paper's (scaled) counts.

    Parameters
    ----------
    df : pd.DataFrame
        A cohort table (e.g. :func:`her2lib.data.load_cohort` output).

    Returns
    -------
    pd.DataFrame
        Columns ``column, level, code, split, n_cohort, n_paper, n_paper_scaled``.
    """
    spec = table_spec()
    rows = []
    n_split = df["split"].value_counts().to_dict()
    for v in spec["categorical"]:
        if v["column"] not in df.columns:
            continue
        for split in PAPER_SPLITS:
            scaled = scale_counts(v[split], int(n_split.get(split, 0)))
            col = df.loc[df["split"] == split, v["column"]].astype(str)
            for lev, code, npap, nsc in zip(v["levels"], v["codes"], v[split], scaled):
                rows.append(
                    {
                        "column": v["column"],
                        "level": lev,
                        "code": code,
                        "split": split,
                        "n_cohort": int((col == str(code)).sum()),
                        "n_paper": npap,
                        "n_paper_scaled": nsc,
                    }
                )
    return pd.DataFrame(rows)


def paper_count_agreement(counts: pd.DataFrame) -> pd.Series:
    """Whether every level of each variable has the paper's (scaled) count.

    Parameters
    ----------
    counts : pd.DataFrame
        Output of :func:`paper_count_table`.

    Returns
    -------
    pd.Series of bool
        Indexed by ``column`` (sorted): True when ``n_cohort == n_paper_scaled`` for all its levels in both splits.
        All True for the synthetic cohort; for a real cohort a description, not a check.
    """
    agrees = counts["n_cohort"] == counts["n_paper_scaled"]
    return counts.assign(agrees=agrees).groupby("column")["agrees"].all()


# ----------------------------------------------------------------------------------------------------------
# Rendering helpers
# ----------------------------------------------------------------------------------------------------------
def _field(rng: np.random.Generator, shape: tuple[int, ...], corr: float | tuple) -> np.ndarray:
    """Smooth Gaussian random field (zero mean, unit SD) with correlation length ``corr`` (px per axis).

    White noise on a grid ``corr / 2`` coarser, Gaussian-filtered (sigma 2 coarse px), linearly upsampled.
    """
    corr = np.broadcast_to(np.asarray(corr, float), (len(shape),))
    f = np.maximum(1.0, corr / 2.0)
    low = tuple(int(math.ceil(s / fi)) + 1 for s, fi in zip(shape, f))
    a = rng.standard_normal(low).astype(np.float32)
    a = ndimage.gaussian_filter(a, tuple(c / fi for c, fi in zip(corr, f)), mode="wrap")
    if any(fi > 1 for fi in f):
        a = _upsample_linear(a, shape)
    a = a[tuple(slice(0, s) for s in shape)]
    if a.shape != tuple(shape):
        a = np.pad(a, [(0, s - fs) for s, fs in zip(shape, a.shape)], mode="edge")
    a = a - a.mean()
    return (a / (a.std() + 1e-6)).astype(np.float32)


def _upsample_linear(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear resampling of ``a`` onto ``shape`` (pixel-centre aligned, edge values held).

    The same values as ``scipy.ndimage.zoom(a, shape / a.shape, order=1, mode="nearest", grid_mode=True)``
    (to float32 rounding), about five times faster: two taps per axis instead of a general spline filter.
    """
    for ax, n in enumerate(shape):
        m = a.shape[ax]
        if m == n:
            continue
        pos = np.clip((np.arange(n, dtype=np.float64) + 0.5) * (m / n) - 0.5, 0, m - 1)
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, m - 1)
        w = (pos - i0).astype(np.float32).reshape([n if i == ax else 1 for i in range(a.ndim)])
        a = np.take(a, i0, axis=ax) * (1 - w) + np.take(a, i1, axis=ax) * w
    return a


def _sig(x: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _lesion_level(
    coords: list[np.ndarray],
    center: list[float],
    radii: list[float],
    rng: np.random.Generator,
    shape: tuple,
    irregular: bool,
    circumscribed: bool,
    spacing: tuple[float, ...],
) -> np.ndarray:
    """Normalised radius minus boundary perturbation: lesion = level < 1 (coords/radii in units of spacing)."""
    rho = np.sqrt(sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, center, radii)))
    rmin = min(radii)
    sp = np.asarray(spacing, float)
    amp_low = rng.uniform(0.18, 0.3) if irregular else rng.uniform(0.02, 0.05)
    pert = amp_low * _field(rng, shape, rmin * 0.7 / sp)
    if not circumscribed:
        pert += rng.uniform(0.08, 0.14) * _field(rng, shape, np.maximum(1.5, rmin / 6 / sp))
    return (rho - pert).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Ultrasound
# ----------------------------------------------------------------------------------------------------------
def _us_layers(rng: np.random.Generator, H: int, W: int, ppm: float, yy: np.ndarray) -> np.ndarray:
    """Echogenicity of the tissue layers (skin, fat lobules, glandular tissue, striated muscle) with wavy
    boundaries: the first draws of a patient's US generator."""
    xs = np.arange(W, dtype=np.float32)
    wave = lambda amp, per: amp * np.sin(2 * np.pi * xs / per + rng.uniform(0, 2 * np.pi))  # noqa: E731
    skin_end = 0.035 * H + wave(0.006 * H, W * rng.uniform(0.8, 1.6))
    fat_end = rng.uniform(0.16, 0.24) * H + wave(0.03 * H, W * rng.uniform(0.5, 1.2))
    gland_end = rng.uniform(0.78, 0.86) * H + wave(0.03 * H, W * rng.uniform(0.5, 1.2))
    tex = _field(rng, (H, W), (6 * ppm / 10, 14 * ppm / 10))
    E = np.empty((H, W), np.float32)
    skin, fat, gland = yy < skin_end, (yy >= skin_end) & (yy < fat_end), (yy >= fat_end) & (yy < gland_end)
    muscle = yy >= gland_end
    E[skin] = 0.9
    lob = _field(rng, (H, W), 3 * ppm)
    E[fat] = (0.28 + 0.12 * np.clip(np.abs(lob) < 0.25, 0, 1) * 2.0)[fat]  # fat lobules with echogenic septa
    E[gland] = np.clip(0.62 + 0.16 * tex, 0.3, 1.0)[gland]
    stria = 0.45 + 0.15 * np.sin(yy / (0.9 * ppm) + 2 * tex)
    E[muscle] = stria[muscle]
    return E


def _us_lesion_geometry(
    row: dict, rng: np.random.Generator, H: int, W: int, ppm: float, yy: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Lesion size, aspect (orientation), position and boundary: ``(level, a, cx)``; lesion = ``level < 1``,
    ``a`` its lateral half-axis (px), ``cx`` its centre column."""
    size_px = min(float(row["mri_size_mm"]) * rng.uniform(0.85, 1.0) * ppm, 0.62 * W)
    a = size_px / 2
    aspect = rng.uniform(0.55, 0.8) if row["us_orientation"] == "parallel" else rng.uniform(1.1, 1.35)
    b = a * aspect
    if b > 0.3 * H:
        a, b = a * 0.3 * H / b, 0.3 * H
    cx = W / 2 + rng.uniform(-0.08, 0.08) * W
    cy = float(np.clip(0.48 * H + rng.uniform(-0.06, 0.06) * H, b + 0.1 * H, H - b - 0.14 * H))
    level = _lesion_level(
        [yy, xx],
        [cy, cx],
        [b, a],
        rng,
        (H, W),
        row["us_shape"] == "irregular",
        row["us_margin"] == "circumscribed",
        (1.0, 1.0),
    )
    return level, a, cx


def _us_lesion_echo(
    E: np.ndarray, row: dict, rng: np.random.Generator, level: np.ndarray, w_in: np.ndarray, a: float, t: float
) -> np.ndarray:
    """The lesion interior (echo pattern; heterogeneity grows with ``t``) and, for a not-circumscribed margin,
    the echogenic halo, blended into ``E``."""
    H, W = E.shape
    # lesion interior echo; heterogeneity grows with t (blob scale ~ a/4, survives downsampling)
    echo = {"hypoechoic": 0.2, "isoechoic": 0.55, "heterogeneous": 0.3, "complex_cystic_solid": 0.28}[
        row["us_echo_pattern"]
    ]
    blob = _field(rng, (H, W), max(2.0, a / 4))
    het = 0.03 + 0.22 * t + (0.15 if row["us_echo_pattern"] == "heterogeneous" else 0.0)
    L = np.clip(echo * (1 + het * 2.2 * blob), 0.03, 1.0)
    if row["us_echo_pattern"] == "complex_cystic_solid":
        cyst = _field(rng, (H, W), max(2.0, a / 3)) > 0.4
        L = np.where(cyst, 0.03, L)
    if row["us_margin"] != "circumscribed":  # echogenic halo
        halo = np.exp(-(((level - 1.08) / 0.07) ** 2)) * (0.25 + 0.2 * rng.random())
        E = E + halo.astype(np.float32)
    return E * (1 - w_in) + L * w_in


def _us_posterior(
    E: np.ndarray,
    row: dict,
    mask: np.ndarray,
    w_in: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    a: float,
    cx: float,
    t: float,
) -> np.ndarray:
    """Posterior acoustic features in the column below the lesion (enhancement grows with ``t``); no draws."""
    H = E.shape[0]
    cols = mask.any(axis=0)
    if not cols.any():
        return E
    bottom = np.where(cols, H - 1 - np.argmax(mask[::-1], axis=0), 0).astype(np.float32)
    colw = ndimage.gaussian_filter1d(cols.astype(np.float32), max(1.0, a / 8))
    below = np.clip((yy - bottom[None, :]) / (0.03 * H), 0, 1) * np.exp(
        -np.clip(yy - bottom[None, :], 0, None) / (0.45 * H)
    )
    below = below * colw[None, :]
    post = row["us_posterior"]
    enh = 0.45 + 0.9 * t
    gain_map = {"enhancement": enh, "none": 0.25 * (t - 0.5), "shadowing": -0.6 + 0.3 * t}
    if post == "combined":
        side = (xx < cx).astype(np.float32)
        gain = side * enh + (1 - side) * (-0.55)
    else:
        gain = gain_map[post]
    return E * (1 + gain * below * (1 - w_in))


def _us_calcifications(
    E: np.ndarray,
    row: dict,
    rng: np.random.Generator,
    level: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    a: float,
    t: float,
) -> np.ndarray:
    """Echogenic foci inside the lesion when ``us_calcifications`` is present; number and size grow with ``t``."""
    if row["us_calcifications"] != "present":
        return E
    inner = np.argwhere(level < 0.8)
    if inner.size:
        n_c = int(2 + round(10 * t) + rng.integers(0, 3))
        r_c = max(1.0, a / 30 * (0.8 + 0.8 * t))
        cluster = inner[rng.integers(0, len(inner))]
        for _ in range(n_c):
            p = inner[rng.integers(0, len(inner))] if rng.random() < 0.5 else cluster + rng.normal(0, a / 4, 2)
            d2 = (yy - p[0]) ** 2 + (xx - p[1]) ** 2
            E = E + 1.3 * np.exp(-d2 / (2 * r_c**2)).astype(np.float32) * (level < 1.0)
    return E


def _us_acquire(E: np.ndarray, rng: np.random.Generator, ppm: float, yy: np.ndarray) -> np.ndarray:
    """Speckle (smoothed complex Gaussian -> Rayleigh amplitude), depth attenuation and log compression to an
    8-bit B-mode image: the last draws of a patient's US generator."""
    H, W = E.shape
    sy, sx = max(0.6, 0.08 * ppm), max(0.8, 0.18 * ppm)
    re_ = ndimage.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), (sy, sx))
    im = ndimage.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), (sy, sx))
    speckle = np.sqrt(re_**2 + im**2)
    speckle /= speckle.mean() + 1e-6
    atten = np.exp(-0.6 * yy / H) * (1 + 0.35 * yy / H)  # attenuation partly compensated by TGC
    I = np.clip(E, 0, None) * speckle * atten  # noqa: E741
    img = np.log1p(6.0 * I) / np.log1p(6.0 * 2.2)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def render_us(row: dict, rng: np.random.Generator, k: SynthKnobs) -> tuple[np.ndarray, np.ndarray]:
    """Render one B-mode ultrasound image and lesion mask.

    The generator is drawn in a fixed order (tissue layers, lesion geometry, lesion echo and halo, calcifications,
    speckle), so equal arguments give identical images.

    Parameters
    ----------
    row : dict
        One cohort row (BI-RADS US columns, ``mri_size_mm`` and latent ``_s_us``).
    rng : np.random.Generator
        The patient's generator.
    k : SynthKnobs
        Image size knobs.

    Returns
    -------
    image : np.ndarray, uint8, shape (H, W)
    mask : np.ndarray, uint8, shape (H, W), values 0/255
    """
    H, W = k.us_shape
    ppm = W / k.us_fov_mm
    t = float(_sig(row["_s_us"]))  # HER2-likeness of the US appearance, 0..1
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    E = _us_layers(rng, H, W, ppm, yy)
    level, a, cx = _us_lesion_geometry(row, rng, H, W, ppm, yy, xx)
    mask = level < 1.0
    edge = (0.8 if row["us_margin"] == "circumscribed" else 2.5 + 0.04 * a) / a
    w_in = _sig((1.0 - level) / edge).astype(np.float32)
    E = _us_lesion_echo(E, row, rng, level, w_in, a, t)
    E = _us_posterior(E, row, mask, w_in, yy, xx, a, cx, t)
    E = _us_calcifications(E, row, rng, level, yy, xx, a, t)
    img = _us_acquire(E, rng, ppm, yy)
    return img, (mask.astype(np.uint8) * 255)


# ----------------------------------------------------------------------------------------------------------
# MRI
# ----------------------------------------------------------------------------------------------------------
def _mri_anatomy(rng: np.random.Generator, k: SynthKnobs, row: dict) -> dict:
    """Random bilateral-breast anatomy of one patient: sizes and positions in mm (axes z, y, x).

    Prone axial DCE slab: y runs anterior (the breasts hang towards y = 0) to posterior, x from the patient's
    right (x = 0, radiological convention) to her left. The thorax is an elliptic cylinder along z whose anterior
    boundary is the chest wall; each breast is a half-ellipsoid of height ``depth`` mm on the chest wall.
    """
    fz, fy, fx = (float(v) for v in k.mri_fov_mm)
    cx = fx / 2 + rng.uniform(-0.02, 0.02) * fx
    ax = rng.uniform(0.44, 0.49) * fx  # thorax half-width (fx 320 mm: 141-157 mm)
    ay = rng.uniform(110.0, 130.0)  # thorax half-depth, mm
    front = fy * rng.uniform(0.40, 0.45)  # most anterior point of the thorax (presternal skin), mm
    d_max = float(row["mri_size_mm"])
    breasts = []
    for side in (-1, 1):  # -1: patient's right (image left), +1: patient's left (image right)
        breasts.append(
            {
                "side": side,
                "x": cx + side * rng.uniform(0.215, 0.245) * fx,
                "z": fz / 2 + rng.uniform(-0.04, 0.04) * fz,
                "w": rng.uniform(58.0, 72.0),  # half-width along x, mm
                "hz": rng.uniform(60.0, 80.0),  # half-extent along z, mm
                "depth": max(rng.uniform(60.0, 110.0), 1.25 * d_max + 15.0),  # nipple to chest wall, mm
            }
        )
    return {
        "cx": cx,
        "cy": front + ay,
        "ax": ax,
        "ay": ay,
        "breasts": breasts,
        "fat_mm": rng.uniform(6.0, 12.0),
        "muscle_mm": rng.uniform(10.0, 16.0),
        "density": rng.uniform(0.0, 0.9),
        "heart": (
            fz / 2 + rng.uniform(-0.06, 0.06) * fz,
            front + rng.uniform(55.0, 70.0),
            cx + rng.uniform(0.03, 0.08) * fx,
        ),
    }


def _chest_surface(an: dict, x: np.ndarray) -> np.ndarray:
    """Anterior thorax boundary y(x) in mm (inf where x is lateral of the thorax)."""
    u = (x - an["cx"]) / an["ax"]
    return np.where(np.abs(u) < 1, an["cy"] - an["ay"] * np.sqrt(np.clip(1 - u**2, 0, None)), np.inf)


def _breast_height(b: dict, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Height of one breast above the chest wall (mm) on the (z, x) grid; 0 outside it."""
    r2 = ((x - b["x"]) / b["w"]) ** 2 + ((z - b["z"]) / b["hz"]) ** 2
    return b["depth"] * np.clip(1 - r2, 0, None) ** 0.6


def _mri_lesion(row: dict, rng: np.random.Generator, k: SynthKnobs) -> dict:
    """Anatomy, index-lesion placement and lesion shape: the first draws of a patient's MRI generator.

    The lesion sits in the breast named by ``row["location"]``: lateral and cranio-caudal offsets from the breast
    centre ~ N(0, 0.28) of its half-width / half-extent (clipped at 0.55), depth 20-75 % of the local breast
    height from the chest wall, kept at least 3 mm under the skin.
    """
    Z, Y, X = k.mri_shape
    sz, sy, sx = k.mri_spacing
    fz, fy, fx = Z * sz, Y * sy, X * sx
    an = _mri_anatomy(rng, k, row)
    side = 1 if str(row.get("location", "right")) == "left" else -1  # patient's left = image right
    lb = next(b for b in an["breasts"] if b["side"] == side)
    d = min(float(row["mri_size_mm"]), 0.7 * min(fy, fx), 0.85 * fz * 2)
    a = d / 2
    radii = [a * rng.uniform(0.6, 0.9), a * rng.uniform(0.7, 1.0), a]
    radii[0] = min(radii[0], 0.42 * fz)
    ux, uz = np.clip(rng.normal(0, 0.28, 2), -0.55, 0.55)
    f = rng.uniform(0.2, 0.75)
    for _ in range(12):  # pull the lesion towards the breast centre until it lies inside the breast
        cxl = float(np.clip(lb["x"] + ux * lb["w"], an["cx"] - 0.9 * an["ax"], an["cx"] + 0.9 * an["ax"]))
        czl = lb["z"] + uz * lb["hz"]
        cw = float(_chest_surface(an, np.array([cxl]))[0])
        hl = float(_breast_height(lb, np.array(czl), np.array(cxl)))
        lo, hi = cw - hl + radii[1] + 3.0, cw - 0.5 * radii[1]  # anterior / posterior limits of the centre
        cyl = float(np.clip(cw - f * hl, lo, hi)) if lo <= hi else (lo + hi) / 2
        px = np.array([cxl - radii[2] - 3.0, cxl + radii[2] + 3.0, cxl, cxl])
        pz = np.array([czl, czl, czl - radii[0] - 3.0, czl + radii[0] + 3.0])
        skin = _chest_surface(an, px) - _breast_height(lb, pz, px)  # skin y beside / above / below the lesion
        if np.all(skin <= cyl):
            break
        ux, uz = 0.8 * ux, 0.8 * uz
    c = [float(np.clip(czl, radii[0], fz - radii[0])), cyl, float(cxl)]
    # the lesion, its satellites and non-mass enhancement live in a sub-box around the lesion
    reach = 1.35 * a + 30.0
    sub = tuple(
        slice(max(0, int(math.floor((ci - reach) / s))), min(n, int(math.ceil((ci + reach) / s)) + 1))
        for ci, s, n in zip(c, (sz, sy, sx), (Z, Y, X))
    )
    zz, yy, xx = np.meshgrid(
        *(np.arange(n, dtype=np.float32)[sl] * s for n, sl, s in zip((Z, Y, X), sub, (sz, sy, sx))), indexing="ij"
    )
    ang = rng.uniform(0, np.pi)
    ry = (yy - c[1]) * np.cos(ang) - (xx - c[2]) * np.sin(ang) + c[1]
    rx = (yy - c[1]) * np.sin(ang) + (xx - c[2]) * np.cos(ang) + c[2]
    level = _lesion_level(
        [zz, ry, rx],
        c,
        radii,
        rng,
        zz.shape,
        row["mri_shape"] == "irregular",
        row["mri_margin"] == "circumscribed",
        (sz, sy, sx),
    )
    mask = np.zeros((Z, Y, X), bool)
    mask[sub] = level < 1.0
    if not mask.any():  # lesion smaller than a voxel: keep the voxel at its centre
        mask[tuple(min(n - 1, int(round(ci / s))) for ci, s, n in zip(c, (sz, sy, sx), (Z, Y, X)))] = True
    return {
        "anatomy": an,
        "breast": lb,
        "side": side,
        "a": a,
        "center_mm": c,
        "sub": sub,
        "grid": (zz, yy, xx),
        "level": level,
        "mask": mask,
    }


def render_mri_mask(row: dict, rng: np.random.Generator, k: SynthKnobs) -> np.ndarray:
    """The index-lesion mask :func:`render_mri` would return for the same generator state, without the volume.

    Fast (the lesion is drawn first, in a sub-box): for geometry checks over a whole cohort.

    Returns
    -------
    np.ndarray, uint8, shape (Z, Y, X), values 0/1
    """
    return _mri_lesion(row, rng, k)["mask"].astype(np.uint8)


def _corr(mm: float, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """A correlation length of ``mm`` millimetres in voxels per axis."""
    sz, sy, sx = spacing
    return (mm / sz, mm / sy, mm / sx)


def _mri_thorax(an: dict, z1: np.ndarray, y1: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """The thorax (an elliptic cylinder along z; layers by depth under its boundary on the (y, x) grid) and the
    enhancing heart, as a ``(Z, Y, X)`` float32 volume; no draws."""
    Z, Y, X = z1.size, y1.size, x1.size
    rho = np.sqrt(((x1[None, :] - an["cx"]) / an["ax"]) ** 2 + ((y1[:, None] - an["cy"]) / an["ay"]) ** 2)
    depth_in = (1 - rho) * an["ay"]  # ~ distance inside the thorax boundary, mm
    thorax = np.full((Y, X), 0.02, np.float32)  # air
    thorax[depth_in >= 0] = 0.12  # subcutaneous / retromammary fat (fat-suppressed)
    fm = an["fat_mm"]
    ant = np.clip((an["cy"] - y1[:, None]) / an["ay"], 0, 1)  # 1 at the front of the thorax, 0 from its middle
    muscle = an["muscle_mm"] * (0.5 + 0.8 * ant)  # pectoralis: thick under the breasts, thin at the sides
    thorax[depth_in >= fm] = 0.28  # pectoralis and chest-wall muscle
    ribs = depth_in >= fm + muscle
    theta = np.arctan2(y1[:, None] - an["cy"], x1[None, :] - an["cx"])
    thorax[ribs] = np.where(np.cos(theta * 22) > 0.2, 0.16, 0.24)[ribs]  # rib cross-sections, intercostals
    inner = depth_in >= fm + muscle + 12
    thorax[inner] = 0.03  # lungs
    hz, hy, hx = an["heart"]
    dx, dy = x1[None, :] - an["cx"], y1[:, None] - hy
    thorax[inner & ((dx / 32) ** 2 + ((dy + 5) / 60) ** 2 < 1)] = 0.2  # mediastinum
    thorax[inner & ((dx - 22) ** 2 + (dy - 75) ** 2 < 12**2)] = 0.8  # descending aorta
    thorax[inner & (dx**2 + ((dy - 112) / 0.8) ** 2 < 22**2)] = 0.2  # vertebral body
    thorax[(depth_in >= 0) & (depth_in < 1.8)] = 0.35  # skin
    V = np.broadcast_to(thorax, (Z, Y, X)).copy()
    heart = (
        ((z1[:, None, None] - hz) / 55) ** 2
        + ((y1[None, :, None] - hy) / 42) ** 2
        + ((x1[None, None, :] - hx) / 55) ** 2
    ) < 1
    V[heart & inner[None]] = 0.7
    return V


def _mri_breasts(
    V: np.ndarray,
    les: dict,
    row: dict,
    rng: np.random.Generator,
    z1: np.ndarray,
    y1: np.ndarray,
    x1: np.ndarray,
    spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Both breasts (fat, fibroglandular tissue of random density, skin, nipples) on the chest wall: ``(V,
    breast)`` with ``breast`` the boolean breast volume."""
    an, lb, side = les["anatomy"], les["breast"], les["side"]
    sz, sy, sx = spacing
    Z, X = z1.size, x1.size
    surf = _chest_surface(an, x1)[None, :]  # (1, X)
    h = np.zeros((Z, X), np.float32)
    for b in an["breasts"]:
        h = np.maximum(h, _breast_height(b, z1[:, None], x1[None, :]))
    h *= 1 + 0.04 * _field(rng, (Z, X), (25 / sz, 25 / sx))
    skin_y = surf - h  # (Z, X); = chest surface where there is no breast
    yb = y1[None, :, None]
    breast = (yb >= skin_y[:, None, :]) & (yb < surf[:, None, :]) & (h[:, None, :] > 0)
    fgt = _field(rng, V.shape, _corr(6, spacing)) + 0.8 * _field(rng, V.shape, _corr(20, spacing)) > an["density"]
    V = np.where(breast, np.where(fgt, np.float32(0.32), np.float32(0.12)), V)
    les_half = (x1 * side > an["cx"] * side)[None, None, :]  # the lesion's half of the body
    skin_th = np.where(les_half, 2.0 * (1 + 1.5 * (row["mri_skin"] == "present")), 2.0)
    skin_val = np.where(les_half, 0.35 + 0.25 * (row["mri_skin"] == "present"), 0.35).astype(np.float32)
    V = np.where(breast & (yb < skin_y[:, None, :] + skin_th), skin_val, V)
    for b in an["breasts"]:
        apex = float(_chest_surface(an, np.array([b["x"]]))[0]) - b["depth"]
        d2 = (x1[None, None, :] - b["x"]) ** 2 + (z1[:, None, None] - b["z"]) ** 2
        V[(d2 < 25) & (yb >= apex - 6) & (yb < apex + 1)] = 0.4  # nipple
        if b is lb and row["mri_nipple"] == "present":  # retroareolar enhancement
            V[(d2 < 36) & (yb >= apex) & (yb < apex + 12)] = 0.6
    return V, breast


def _mri_lesion_signal(
    V: np.ndarray,
    les: dict,
    row: dict,
    rng: np.random.Generator,
    breast: np.ndarray,
    t: float,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """In place: the index lesion (drawn by :func:`_mri_lesion`; rim-like, heterogeneous enhancement growing with
    ``t``), satellites and non-mass enhancement, in the lesion's sub-box; returns ``V``."""
    a, c, sub = les["a"], les["center_mm"], les["sub"]
    vox_mm = min(spacing[1], spacing[2])
    zz, yy, xx = les["grid"]
    level = les["level"]
    edge = (0.6 * vox_mm if row["mri_margin"] == "circumscribed" else 1.5 + 0.05 * a) / a
    w_in = _sig((1.0 - level) / edge).astype(np.float32)
    peak = 0.75 + 0.45 * t
    rim = 0.1 + 0.6 * t  # rim-like profile: the centre enhances less
    het = 0.06 + 0.25 * t + (0.18 if row["mri_enhancement"] == "heterogeneous" else 0.0)
    prof = 1.0 - rim * np.clip(1.0 - level, 0, 1) ** 1.5
    blob = _field(rng, level.shape, _corr(max(2.0, a / 3), spacing))
    L = np.clip(peak * prof * (1 + het * 1.2 * blob), 0.05, 1.6)
    Vs = V[sub] * (1 - w_in) + L * w_in
    in_breast = breast[sub]
    if row["mri_lesions"] == "multiple":
        for _ in range(int(rng.integers(1, 3))):
            dirv = rng.normal(size=3)
            dirv /= np.linalg.norm(dirv)
            dist = a + rng.uniform(5, 12)
            p = [c[i] + dirv[i] * dist for i in range(3)]
            r = rng.uniform(2.5, 4.5)
            d2 = (zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2
            sat = (peak * 0.9 * _sig((r - np.sqrt(d2)) / 0.6)).astype(np.float32)
            Vs = np.where(in_breast, np.maximum(Vs, sat), Vs)
    if row["mri_nonmass"] == "present":
        dirv = np.array([rng.uniform(-0.3, 0.3), -1.0, rng.uniform(-0.6, 0.6)])  # towards the nipple
        dirv /= np.linalg.norm(dirv)
        rel = np.stack([zz - c[0], yy - c[1], xx - c[2]])
        along = np.tensordot(dirv, rel, axes=1)
        perp = np.sqrt(np.clip((rel**2).sum(0) - along**2, 0, None))
        seg = (along > 0) & (along < a + rng.uniform(12, 22)) & (perp < rng.uniform(3, 6))
        clumps = _field(rng, level.shape, _corr(2.0, spacing)) > 0.2
        Vs = np.where(seg & clumps & in_breast, np.maximum(Vs, 0.55 + 0.2 * t), Vs)
    V[sub] = Vs
    return V


def _mri_acquire(V: np.ndarray, rng: np.random.Generator, spacing: tuple[float, float, float]) -> np.ndarray:
    """Bias field, partial-volume blur and Rician-like noise, scaled to int16: the last draws of a patient's MRI
    generator."""
    bias = 1.0 + 0.08 * _field(rng, V.shape, _corr(40, spacing))
    V = ndimage.gaussian_filter(V * bias, (0.35, 0.5, 0.5))
    n1 = rng.standard_normal(V.shape, dtype=np.float32) * 0.025
    n2 = rng.standard_normal(V.shape, dtype=np.float32) * 0.025
    V = np.sqrt((V + n1) ** 2 + n2**2)
    return np.clip(np.round(V * 750.0), 0, 32767).astype(np.int16)


def render_mri(row: dict, rng: np.random.Generator, k: SynthKnobs) -> tuple[np.ndarray, np.ndarray]:
    """Render one fat-suppressed DCE post-contrast T1 volume (prone axial, both breasts) and its lesion mask.

    Anatomy: air, both breasts (fat, fibroglandular tissue of random density, skin, nipples) on the chest wall
    (retromammary fat, pectoralis, ribs), lungs, mediastinum, the enhancing heart and aorta, a vertebral body.
    The index lesion lies inside the breast named by ``row["location"]`` (patient's left = image right) at a
    random position (:func:`_mri_lesion`), so its place in the field of view varies. The generator is drawn in a
    fixed order (anatomy and lesion, breasts, lesion signal, acquisition), so equal arguments give identical
    volumes.

    Parameters
    ----------
    row : dict
        One cohort row (MRI columns, ``location``, ``mri_size_mm``, latent ``_s_mri``).
    rng : np.random.Generator
        The patient's generator.
    k : SynthKnobs
        ``mri_shape`` (z, y, x) and ``mri_fov_mm``.

    Returns
    -------
    volume : np.ndarray, int16, shape (Z, Y, X)
        Signal in arbitrary units (0..~1200); axis y runs anterior (y=0) to posterior, axis x from the patient's
        right to her left.
    mask : np.ndarray, uint8, shape (Z, Y, X), values 0/1
        The index lesion only (satellites and non-mass enhancement are not in the mask); never empty (a lesion
        smaller than a voxel keeps the voxel at its centre). Equal to :func:`render_mri_mask`.
    """
    Z, Y, X = k.mri_shape
    spacing = k.mri_spacing
    sz, sy, sx = spacing
    t = float(_sig(row["_s_mri"]))
    les = _mri_lesion(row, rng, k)
    z1 = np.arange(Z, dtype=np.float32) * sz
    y1 = np.arange(Y, dtype=np.float32) * sy
    x1 = np.arange(X, dtype=np.float32) * sx
    V = _mri_thorax(les["anatomy"], z1, y1, x1)
    V, breast = _mri_breasts(V, les, row, rng, z1, y1, x1, spacing)
    V = _mri_lesion_signal(V, les, row, rng, breast, t, spacing)
    vol = _mri_acquire(V, rng, spacing)
    return vol, les["mask"].astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Cohort
# ----------------------------------------------------------------------------------------------------------
def shift_us(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Another ultrasound scanner's B-mode image of the same tissue: a different dynamic range (log-compression
    exponent ``1 + 0.35 s``), gain (``x (1 + 0.2 s)``), coarser lateral resolution (Gaussian blur, SD ``0.8 s`` px
    across, ``0.4 s`` px in depth) and more electronic noise (SD ``0.03 s`` of full scale), ``s = strength``.

    Parameters
    ----------
    img : np.ndarray, uint8, shape (H, W)
        A B-mode image of :func:`render_us`.
    rng : numpy.random.Generator
    strength : float
        0 returns the image unchanged.

    Returns
    -------
    np.ndarray, uint8, shape (H, W)
    """
    if not strength:
        return img
    x = img.astype(np.float32) / 255.0
    x = (x ** (1.0 + 0.35 * strength)) * (1.0 + 0.2 * strength)
    x = ndimage.gaussian_filter(x, (0.4 * strength, 0.8 * strength))
    x = x + 0.03 * strength * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def shift_mri(vol: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Another MRI scanner's volume of the same tissue: other signal units (``x (1 + 0.5 s)``), another contrast
    (power law ``1 + 0.3 s`` on the normalised signal, as a field strength / sequence change), coarser in-plane
    resolution (Gaussian blur, SD ``0.8 s`` voxels in-plane, ``0.3 s`` across slices) and more noise (SD
    ``0.03 s`` of the normalised signal), ``s = strength``.

    Parameters
    ----------
    vol : np.ndarray, int16, shape (z, y, x)
        A volume of :func:`render_mri` (signal x 750).
    rng : numpy.random.Generator
    strength : float
        0 returns the volume unchanged.

    Returns
    -------
    np.ndarray, int16, shape (z, y, x)
    """
    if not strength:
        return vol
    v = vol.astype(np.float32) / 750.0
    v = np.clip(v, 0, None) ** (1.0 + 0.3 * strength)
    v = ndimage.gaussian_filter(v, (0.3 * strength, 0.8 * strength, 0.8 * strength))
    v = np.abs(v + 0.03 * strength * rng.standard_normal(v.shape, dtype=np.float32)) * (1.0 + 0.5 * strength)
    return np.clip(np.round(v * 750.0), 0, 32767).astype(np.int16)


def _render_patient(args: tuple) -> dict:
    row, index, seed, knobs_dict, out_dir = args
    k = SynthKnobs(**knobs_dict)
    pid = row["patient_id"]
    rng_us = np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(index)]))
    rng_mri = np.random.default_rng(np.random.SeedSequence([int(seed), 2, int(index)]))
    out = Path(out_dir)
    img, mask = render_us(row, rng_us, k)
    vol, vmask = render_mri(row, rng_mri, k)
    if row["split"] == "external" and k.external_shift:  # the external site's scanner (own generator)
        rng_site = np.random.default_rng(np.random.SeedSequence([int(seed), 4, int(index)]))
        img, vol = shift_us(img, rng_site, k.external_shift), shift_mri(vol, rng_site, k.external_shift)
    write_png(out / "us" / f"{pid}.png", img)
    write_png(out / "us" / f"{pid}_mask.png", mask)
    write_nifti(out / "mri" / f"{pid}.nii.gz", vol, k.mri_spacing)
    write_nifti(out / "mri" / f"{pid}_mask.nii.gz", vmask, k.mri_spacing)
    return {
        "patient_id": pid,
        "us_image": f"us/{pid}.png",
        "us_mask": f"us/{pid}_mask.png",
        "mri_image": f"mri/{pid}.nii.gz",
        "mri_mask": f"mri/{pid}_mask.nii.gz",
    }


def synth_params(n_patients: int = 197, seed: int = 0, **knobs: Any) -> dict:
    """The parameters that fully determine a synthetic cohort (recorded in ``synth_params.json``)."""
    k = knobs_from(**knobs)
    d = asdict(k)
    d.pop("n_jobs")  # does not change the output
    if not d["n_external"]:  # no external site: the record of cohorts built before these knobs existed
        for key in ("n_external", "external_shift", "external_her2_share"):
            d.pop(key)
    if not d["low_signal"]:
        # low_signal = 0 builds today's cohort: leaving the key out keeps the synth_params.json of cohorts built
        # before the knob existed equal to this record, so prepare_cohort reuses them instead of rebuilding
        d.pop("low_signal")
    return {
        "synth_version": SYNTH_VERSION,
        "n_patients": int(n_patients),
        "seed": int(seed),
        **{kk: list(v) if isinstance(v, tuple) else v for kk, v in d.items()},
    }


def make_cohort(
    out_dir: str | os.PathLike, *, n_patients: int = 197, seed: int = 0, progress: bool = False, **knobs: Any
) -> Path:
    """Build the synthetic cohort (images, masks, manifest) in ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Cohort folder; created if needed. Files are written atomically; the manifest is written last, so its
        presence means the build completed.
    n_patients : int
        Number of patients (>= 20); 197 reproduces the paper's per-split counts exactly.
    seed : int
        Master seed; per-patient generators derive from ``SeedSequence([seed, modality, patient_index])``,
        so the result is byte-identical for equal arguments whatever ``n_jobs``.
    progress : bool
        Show a tqdm progress bar.
    **knobs
        :class:`SynthKnobs` fields: ``us_shape, us_fov_mm, mri_shape, mri_fov_mm, her2_signal,
        modality_noise, low_signal, n_jobs``.

    Returns
    -------
    pathlib.Path
        ``out_dir / "manifest.csv"``. Also written: ``synth_params.json`` (the knobs) and ``synth_latent.csv``
        (latent scores, for :func:`oracle_auc`; no model may read it; with ``low_signal > 0`` it also has the
        ``her2_class`` column, so that :func:`oracle_auc` adds the HER2-low vs HER2-zero AUCs).
    """
    k = knobs_from(**knobs)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    table = make_table(n_patients, seed, **knobs)
    kd = asdict(k)
    rows = table.to_dict("records")
    jobs = [(r, i, seed, kd, str(out)) for i, r in enumerate(rows)]
    it: Any
    if k.n_jobs > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(k.n_jobs) as pool:
            it = pool.imap(_render_patient, jobs, chunksize=4)
            if progress:
                it = tqdm(it, total=len(jobs), desc="synthetic cohort")
            paths = list(it)
    else:
        it = jobs
        if progress:
            it = tqdm(jobs, desc="synthetic cohort")
        paths = [_render_patient(j) for j in it]
    pdf = pd.DataFrame(paths)
    man = table.merge(pdf, on="patient_id", how="left")
    latent = man[["patient_id", "split", "her2", "_z", "_s_us", "_s_mri"]].rename(
        columns={"_z": "latent", "_s_us": "score_us", "_s_mri": "score_mri"}
    )
    if k.low_signal:  # only then: the latent file of a low_signal = 0 cohort stays byte-identical to before
        latent.insert(3, "her2_class", her2_classes(man).to_numpy())
    desc = [c for c in man.columns if c not in MANIFEST_HEAD and not c.startswith("_")]
    man = man[list(MANIFEST_HEAD) + desc]
    write_csv(out / "synth_latent.csv", latent.round(6))
    write_json(out / "synth_params.json", synth_params(n_patients, seed, **knobs))
    manifest = out / "manifest.csv"
    write_csv(manifest, man)
    return manifest


def oracle_auc_theory(
    her2_signal: float = 2.5, modality_noise: float = 1.0, *, low_signal: float | None = None
) -> dict[str, float]:
    """ROC AUC of an oracle that knows the latent score (infinite-sample, binormal model).

    Parameters
    ----------
    her2_signal, modality_noise : float
        The knobs of :class:`SynthKnobs` (SD units).
    low_signal : float, optional
        The HER2-low shift (SD units); when given, the HER2-low vs HER2-zero AUCs among HER2-negative patients
        are added.

    Returns
    -------
    dict
        ``{"latent", "us", "mri", "fused"}`` (HER2-positive vs HER2-negative): ``Phi(her2_signal / sqrt(2 v))``
        with ``v = 1``, ``1 + modality_noise**2`` (each modality) and ``1 + modality_noise**2 / 2`` (mean of both).
        With ``low_signal > 0`` the HER2-low share ``p = 0.65`` of the negatives is closer to the positives, so
        these become ``(1 - p) Phi(her2_signal / sqrt(2 v)) + p Phi((her2_signal - low_signal) / sqrt(2 v))``.
        With ``low_signal`` given also ``{"low_vs_zero_latent", "low_vs_zero_us", "low_vs_zero_mri",
        "low_vs_zero_fused"}`` (HER2-low vs HER2-zero among HER2-negatives): ``Phi(low_signal / sqrt(2 v))``.
    """
    f = lambda d, v: float(stats.norm.cdf(d / math.sqrt(2 * v)))  # noqa: E731
    vs = {"latent": 1.0, "us": 1 + modality_noise**2, "mri": 1 + modality_noise**2, "fused": 1 + modality_noise**2 / 2}
    out = {key: f(her2_signal, v) for key, v in vs.items()}
    if low_signal is None:
        return out
    if low_signal < 0:
        raise ParameterError(f"low_signal={low_signal} must be >= 0.")
    if low_signal:  # HER2-negatives are a mixture; the AUC is linear in the negatives' distribution
        out = {key: (1 - _P_LOW) * f(her2_signal, v) + _P_LOW * f(her2_signal - low_signal, v) for key, v in vs.items()}
    return out | {f"low_vs_zero_{key}": f(low_signal, v) for key, v in vs.items()}


def _latent_aucs(lat: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """ROC AUCs of the latent, US, MRI and fused (sum of both modality) scores of the rows of ``lat``."""
    return {
        "latent": float(roc_auc_score(y, lat["latent"])),
        "us": float(roc_auc_score(y, lat["score_us"])),
        "mri": float(roc_auc_score(y, lat["score_mri"])),
        "fused": float(roc_auc_score(y, lat["score_us"] + lat["score_mri"])),
    }


def oracle_auc(cohort_dir: str | os.PathLike, split: str | None = None) -> dict[str, float]:
    """Empirical ROC AUC of the latent scores of a built cohort (``synth_latent.csv``).

    Parameters
    ----------
    cohort_dir : path-like
        Folder of a cohort built by :func:`make_cohort`.
    split : {"train", "test"}, optional
        Restrict to one split (default: all patients).

    Returns
    -------
    dict
        ``{"latent", "us", "mri", "fused"}`` AUCs of HER2-positive vs HER2-negative (fused = mean of the two
        modality scores). When the latent file has the ``her2_class`` column (cohorts built with
        ``low_signal > 0``) also ``low_vs_zero_latent, low_vs_zero_us, low_vs_zero_mri, low_vs_zero_fused``:
        HER2-low vs HER2-zero among HER2-negative patients (NaN when a class is absent).
    """
    lat = pd.read_csv(Path(cohort_dir) / "synth_latent.csv")
    if split is not None:
        lat = lat[lat["split"] == split]
    out = _latent_aucs(lat, lat["her2"].to_numpy())
    if "her2_class" in lat.columns:
        neg = lat[lat["her2_class"].isin(["zero", "low"])]
        y = (neg["her2_class"] == "low").to_numpy()
        low = _latent_aucs(neg, y) if 0 < y.sum() < y.size else dict.fromkeys(out, float("nan"))
        out |= {f"low_vs_zero_{key}": v for key, v in low.items()}
    return out
