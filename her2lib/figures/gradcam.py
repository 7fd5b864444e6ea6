"""Figure 4: Grad-CAM maps of DL-US and DL-MRI on the source images (the figures of ``07_gradcam``).

Science layer (figures): draws maps computed by :mod:`her2lib.gradcam`, saves through :func:`her2lib.io.save_figure`.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import ParameterError
from ..io import save_figure
from ..lesion import largest_lesion_slice, lesion_centre

__all__ = ["plot_gradcam_us", "plot_gradcam_mri"]

_OUTCOME_NAMES = {"TP": "true positive", "FP": "false positive", "TN": "true negative", "FN": "false negative"}
_CAM_LABEL = "Grad-CAM (max-normalised)"
_ENSEMBLE_NOTE = (
    "Map: mean of the fold models' max-normalised Grad-CAMs, re-normalised (not the Grad-CAM of "
    "the averaged prediction), mapped from the ROI back onto the image."
)


def _title(case: Mapping, target: str | None = None) -> str:
    """Outcome, patient, true status and predicted probability; with ``target`` (a class task, one-vs-rest) the
    patient's class (``case["true_class"]``) and ``p(target)``."""
    out = case.get("outcome", "")
    label = f"{out} ({_OUTCOME_NAMES[out]})" if out in _OUTCOME_NAMES else str(out)
    if target is not None:
        # three lines: class names are long ("HER2-positive"), two panels' one-line titles would overlap
        return f"{label}\n{case['patient_id']}: {case['true_class']}\np({target}) = {case['p_her2']:.2f}"
    sign = "+" if int(case["her2"]) == 1 else "\u2212"
    return f"{label}\n{case['patient_id']}: HER2{sign}, p(HER2+) = {case['p_her2']:.2f}"


def _check_target(cases: Sequence[Mapping], target: str | None, what: str) -> None:
    """With ``target``, every case needs ``true_class`` (its class name) for the title."""
    if target is not None and any("true_class" not in c for c in cases):
        raise ParameterError(
            f"{what}: target={target!r} (a class task) needs each case's class as 'true_class' (e.g. 'HER2-zero'); "
            "her2 / p_her2 then hold the one-vs-rest label and p(target) (gradcam.one_vs_rest)."
        )


def _target_lines(target: str | None) -> list[str]:
    """The footnote line that says what positive means in the one-vs-rest outcomes of a class task."""
    if target is None:
        return []
    return [f"Outcomes one-vs-rest: positive = {target}, negative = any other class; p = predicted p({target})."]


def _check_case(case: Mapping, ndim: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, tuple]:
    """Validate one figure case (source-geometry arrays); return image, mask, cam, box, spacing."""
    missing = [k for k in ("image", "mask", "cam", "box", "patient_id", "her2", "p_her2") if k not in case]
    if missing:
        raise ParameterError(
            f"{what}: a case lacks {missing}; each case needs image, mask, cam (source geometry, "
            "see cam_to_source), box, patient_id, her2, p_her2 and outcome."
        )
    img = np.asarray(case["image"], dtype=float)
    mask = np.asarray(case["mask"]) > 0
    cam = np.asarray(case["cam"], dtype=float)
    if img.ndim != ndim or mask.shape != img.shape or cam.shape != img.shape:
        raise ParameterError(
            f"{what}: patient {case['patient_id']}: image {img.shape}, mask {mask.shape} and cam "
            f"{cam.shape} must be the same {ndim}-D source grid; map a ROI-frame Grad-CAM back "
            "with cam_to_source(cam, box, image.shape)."
        )
    box = tuple((int(a), int(b)) for a, b in case["box"])
    if len(box) != ndim:
        raise ParameterError(f"{what}: patient {case['patient_id']}: box {box} needs {ndim} (start, stop) pairs.")
    spacing = tuple(float(s) for s in case.get("spacing", (1.0,) * ndim))
    if len(spacing) != ndim or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ParameterError(
            f"{what}: patient {case['patient_id']}: spacing {spacing} needs {ndim} positive "
            "values (mm, source axis order)."
        )
    return img, mask, cam, box, spacing


def _view_window(
    box: Sequence[tuple[int, int]], shape: Sequence[int], spacing: Sequence[float], context: float
) -> tuple[slice, ...]:
    """The box widened on every side by ``context`` x its largest physical extent, clipped to the image."""
    ext_mm = max((b - a) * s for (a, b), s in zip(box, spacing))
    out = []
    for (a, b), s, n in zip(box, spacing, shape):
        pad = int(np.ceil(context * ext_mm / s))
        out.append(slice(max(0, a - pad), min(n, b + pad)))
    return tuple(out)


def _panel(ax, img2d, mask2d, cam2d, rect, aspect, show_cam, alpha, origin="upper"):
    """Grey image, optional Grad-CAM (inside the ROI box only), lesion outline and ROI box on one axis."""
    kw = dict(origin=origin, aspect=aspect, interpolation="nearest")
    lo, hi = np.percentile(img2d, [1, 99]) if img2d.size else (0, 1)
    ax.imshow(img2d, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, **kw)
    im = None
    if show_cam:
        (r0, r1), (c0, c1) = rect
        inside = np.zeros(cam2d.shape, bool)
        inside[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
        im = ax.imshow(np.ma.masked_where(~inside, cam2d), cmap="jet", alpha=alpha, vmin=0, vmax=1, **kw)
    if mask2d.any():  # explicit pixel-centre coordinates: contour's own `origin` shifts by half a pixel
        rows, cols = np.arange(mask2d.shape[0]), np.arange(mask2d.shape[1])
        ax.contour(cols, rows, mask2d.astype(float), levels=[0.5], colors="white", linewidths=1.1)
    (r0, r1), (c0, c1) = rect
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="yellow", lw=1.0, ls="--"))
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _footer(fig, lines: Sequence[str], fontsize: float = 8.0) -> None:
    width = int(fig.get_figwidth() * 72 / (0.55 * fontsize))  # characters per line at this font size
    text = "\n".join(textwrap.fill(s, width) for s in lines if s)
    if text:
        fig.supxlabel(text, fontsize=fontsize, color="0.3", ha="center")


def _colorbar(fig, axes, **kw):
    """Opaque colour bar of the heat map's colour scale (0-1), labelled with its units."""
    cb = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap="jet"), ax=axes, **kw)
    cb.set_label(_CAM_LABEL, fontsize=10)
    return cb


def plot_gradcam_us(
    cases: Sequence[Mapping],
    path: str | os.PathLike | None = None,
    *,
    alpha: float = 0.45,
    dpi: int = 200,
    note: str | None = None,
    layer: str | None = None,
    context: float = 0.15,
    target: str | None = None,
):
    """Figure 4 (US): each case's ultrasound image with the lesion outline, and with its Grad-CAM, in the
    source image's geometry.

    Parameters
    ----------
    cases : sequence of mappings
        One column per case (the paper's layout: representative HER2-positive and HER2-negative cases, chosen
        by :func:`~her2lib.gradcam.select_cases`). Each mapping has ``image`` (H, W) the **source** US image,
        ``mask`` (H, W) its lesion mask, ``cam`` (H, W) the Grad-CAM on the source grid in [0, 1]
        (:func:`~her2lib.gradcam.cam_to_source`; 0 outside the ROI box), ``box`` ``((y0, y1), (x0, x1))`` the
        ROI crop box (``RoiResult.box``), ``patient_id``, ``her2`` (1 = positive), ``p_her2`` and ``outcome``
        (TP/FP/TN/FN); optional ``spacing`` ``(dy, dx)`` in mm (default 1, 1) for the pixel aspect.
    path : path or None
        Where to save the PNG. The figure is returned either way.
    alpha : float, keyword-only
        Opacity of the heat map.
    dpi : int, keyword-only
        Resolution of the saved PNG.
    note : str or None, keyword-only
        Extra footnote line (e.g. how the cases were chosen).
    layer : str or None, keyword-only
        Explained layer, named in the title.
    context : float, keyword-only
        Image shown around the ROI box, as a fraction of the box's largest extent per side (clipped to the
        image).
    target : str or None, keyword-only
        Class task: the explained class as the figure names it (e.g. ``"HER2-low"``), in the title and the case
        titles; each case then has ``true_class`` (its class name) and ``her2`` / ``p_her2`` hold the
        one-vs-rest label and ``p(target)`` (:func:`~her2lib.gradcam.one_vs_rest`). None: the paper's
        HER2-positive logit.

    Returns
    -------
    matplotlib.figure.Figure
        Top row: image, lesion outline (white) and ROI box (dashed yellow). Bottom row: the same with the
        Grad-CAM (shown inside the ROI box, where it is defined). Footnote: what the map is.
    """
    if not cases:
        raise ParameterError("plot_gradcam_us: no cases to plot.")
    checked = [_check_case(c, 2, "plot_gradcam_us") for c in cases]
    _check_target(cases, target, "plot_gradcam_us")
    n = len(cases)
    fig = Figure(figsize=(3.3 * n + 1.2, 7.2), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for j, (case, (img, mask, cam, box, sp)) in enumerate(zip(cases, checked)):
        win = _view_window(box, img.shape, sp, context)
        rect = tuple((a - w.start, b - w.start) for (a, b), w in zip(box, win))
        aspect = sp[0] / sp[1]
        _panel(axes[0, j], img[win], mask[win], None, rect, aspect, False, alpha)
        _panel(axes[1, j], img[win], mask[win], cam[win], rect, aspect, True, alpha)
        axes[0, j].set_title(_title(case, target), fontsize=10)
    axes[0, 0].set_ylabel("US image", fontsize=11)
    axes[1, 0].set_ylabel("Grad-CAM overlay", fontsize=11)
    _colorbar(fig, axes.ravel().tolist(), shrink=0.45, pad=0.02, anchor=(0.0, 0.1))
    lay = f", layer '{layer}'" if layer else ""
    fig.suptitle(f"DL-US Grad-CAM for the {target or 'HER2-positive'} logit{lay}, test cohort", fontsize=12)
    _footer(
        fig,
        [
            "White: lesion outline; dashed yellow: ROI box (dilated-mask bounding box) the model saw.",
            _ENSEMBLE_NOTE,
            *_target_lines(target),
            note or "",
        ],
    )
    if path is not None:
        save_figure(fig, path, dpi)
    return fig


def plot_gradcam_mri(
    cases: Sequence[Mapping],
    path: str | os.PathLike | None = None,
    *,
    alpha: float = 0.45,
    dpi: int = 200,
    note: str | None = None,
    layer: str | None = None,
    context: float = 0.15,
    target: str | None = None,
):
    """Figure 4 (MRI): each case's axial source slice through the lesion (largest lesion area), alone and with
    its Grad-CAM, and a coronal reformat with the Grad-CAM, in the source volume's geometry.

    Parameters
    ----------
    cases : sequence of mappings
        One row per case. Each mapping has ``image`` (D, H, W) the **source** volume ``(z, y, x)``, ``mask``
        (D, H, W) its lesion mask, ``cam`` (D, H, W) the Grad-CAM on the source grid in [0, 1]
        (:func:`~her2lib.gradcam.cam_to_source`; 0 outside the ROI box), ``box`` ``((z0, z1), (y0, y1), (x0, x1))``,
        ``spacing`` ``(dz, dy, dx)`` in mm (default 1, 1, 1; sets the displayed aspect so the reformat is
        true to scale), ``patient_id``, ``her2``, ``p_her2`` and ``outcome``.
    path : path or None
        Where to save the PNG.
    alpha : float, keyword-only
        Opacity of the heat map.
    dpi : int, keyword-only
        Resolution of the saved PNG.
    note : str or None, keyword-only
        Extra footnote line.
    layer : str or None, keyword-only
        Explained layer, named in the title.
    context : float, keyword-only
        Image shown around the ROI box, as a fraction of the box's largest physical extent per side.
    target : str or None, keyword-only
        Class task: the explained class's name (as :func:`plot_gradcam_us`). None: HER2-positive.

    Returns
    -------
    matplotlib.figure.Figure
        Columns: axial slice with lesion outline and ROI box; the same with the Grad-CAM; coronal reformat
        (z upwards, through the lesion's centre row) with the Grad-CAM. The axial slice is the one with the
        largest lesion area (:func:`~her2lib.lesion.largest_lesion_slice`).
    """
    if not cases:
        raise ParameterError("plot_gradcam_mri: no cases to plot.")
    checked = [_check_case(c, 3, "plot_gradcam_mri") for c in cases]
    _check_target(cases, target, "plot_gradcam_mri")
    n = len(cases)
    fig = Figure(figsize=(10.5, 3.2 * n + 1.3), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i, (case, (vol, mask, cam, box, sp)) in enumerate(zip(cases, checked)):
        win = _view_window(box, vol.shape, sp, context)
        z = largest_lesion_slice(mask)
        cy = lesion_centre(mask[z])[0]
        (z0, z1), (y0, y1), (x0, x1) = box
        wz, wy, wx = win
        rect_ax = ((y0 - wy.start, y1 - wy.start), (x0 - wx.start, x1 - wx.start))
        img_ax, mask_ax, cam_ax = vol[z][wy, wx], mask[z][wy, wx], cam[z][wy, wx]
        _panel(axes[i, 0], img_ax, mask_ax, None, rect_ax, sp[1] / sp[2], False, alpha)
        _panel(axes[i, 1], img_ax, mask_ax, cam_ax, rect_ax, sp[1] / sp[2], True, alpha)
        # coronal reformat: rows = z (drawn upwards), columns = x
        rect_co = ((z0 - wz.start, z1 - wz.start), (x0 - wx.start, x1 - wx.start))
        _panel(
            axes[i, 2],
            vol[wz, cy, wx],
            mask[wz, cy, wx],
            cam[wz, cy, wx],
            rect_co,
            sp[0] / sp[2],
            True,
            alpha,
            origin="lower",
        )
        axes[i, 0].set_ylabel(_title(case, target), fontsize=9.5)
        axes[i, 0].set_title(f"axial z = {z} (largest lesion area)", fontsize=9)
        axes[i, 1].set_title(f"axial z = {z}, Grad-CAM", fontsize=9)
        axes[i, 2].set_title(f"coronal y = {cy}, Grad-CAM (z up)", fontsize=9)
    _colorbar(fig, axes.ravel().tolist(), shrink=min(0.6, 2.0 / n), pad=0.02)
    lay = f", layer '{layer}'" if layer else ""
    fig.suptitle(f"DL-MRI Grad-CAM for the {target or 'HER2-positive'} logit{lay}, test cohort", fontsize=12)
    _footer(
        fig,
        [
            "White: lesion outline; dashed yellow: ROI box (dilated-mask bounding box; z = the lesion's "
            "slices). Pixels drawn to scale from the voxel spacing.",
            _ENSEMBLE_NOTE,
            *_target_lines(target),
            note or "",
        ],
    )
    if path is not None:
        save_figure(fig, path, dpi)
    return fig
