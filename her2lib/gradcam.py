"""Grad-CAM for DL-US and DL-MRI (paper, Results: "we use gradient-weighted class activation mapping (Grad-CAM)
to visualize the regions of greatest interest identified by each model", Figure 4).

Grad-CAM (Selvaraju et al., 2017) for one input ``x`` and one target logit ``y_c``:

* ``A`` = activation of the target layer, shape ``(K, *s)`` (``s`` = the layer's spatial size),
* ``alpha_k = mean over s of d y_c / d A_k``,
* ``cam = ReLU(sum_k alpha_k A_k)``, upsampled (bilinear 2-D, trilinear 3-D, ``align_corners=False``) to the
  input's spatial size and divided by its maximum, so the map lies in ``[0, 1]`` with 1 at the most
  HER2-positive-supporting location and 0 where the layer argues against (or is indifferent to) the class.

Implementation choices (each tested):

* batch size 1, the model in eval mode, gradients from a **tensor hook** registered on the target layer's output
  in a forward hook — no module backward hooks, which break on in-place ReLUs (MONAI's ResNet uses them);
* sign: the map is ``ReLU`` of the weighted sum, positive = evidence *for* the target class (the paper's
  HER2-positive logit, index 1). A single-logit model (output shape ``(1, 1)``) uses that logit.
* normalisation by the maximum only. MONAI's default ``CAM`` post-processing rescales min-max *after*
  upsampling with a sign convention that can invert maps; her2lib never uses it. An all-zero map (the layer
  has no positive evidence) stays all-zero and is reported via ``GradCAMResult.max_raw == 0``.

The quantitative check :func:`energy_fraction` gives the share of the map's mass inside the lesion mask; a
uniform map would give the mask's area fraction (:func:`mask_fraction`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ParameterError

__all__ = ["GradCAMResult", "grad_cam", "find_layer", "energy_fraction", "mask_fraction", "lesion_centre",
           "select_cases", "plot_gradcam_us", "plot_gradcam_mri", "TARGET_LAYERS", "cohort_cams", "energy_table",
           "energy_summary", "GradCAMRun", "run_gradcam", "available_models"]


@dataclass(frozen=True)
class GradCAMResult:
    """One Grad-CAM map.

    Attributes
    ----------
    cam : ndarray, float32, shape (H, W) or (D, H, W)
        Map at the input's spatial size, in [0, 1] (divided by its maximum; all zeros if ``max_raw == 0``).
    cam_lowres : ndarray, float32, shape of the target layer's spatial output
        ``ReLU(sum_k alpha_k A_k)`` before upsampling and normalisation (raw units).
    max_raw : float
        Maximum of the upsampled map before normalisation.
    logit : float
        The target logit for this input.
    probability : float
        Softmax probability of the target class (sigmoid for a single-logit model).
    class_index : int
        Which output was explained.
    """

    cam: np.ndarray
    cam_lowres: np.ndarray
    max_raw: float
    logit: float
    probability: float
    class_index: int


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module called ``name`` (dotted, as in ``model.named_modules()``), e.g. ``"layer4"`` or
    ``"stages.3"``.

    Raises
    ------
    ParameterError
        Unknown name; the message lists close matches.
    """
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    import difflib
    close = difflib.get_close_matches(name, list(modules), n=5)
    raise ParameterError(f"model has no layer {name!r}; close matches: {close}. See model.named_modules().")


def grad_cam(model: nn.Module, x: torch.Tensor | np.ndarray, target_layer: nn.Module | str,
             class_index: int | None = 1) -> GradCAMResult:
    """Grad-CAM of one input for one output logit.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape ``(1, n_classes)``; it is put in eval mode (and restored after).
    x : tensor or ndarray, shape (C, H, W) or (C, D, H, W)
        One unbatched channel-first input (as ``roi.us_roi(...).image`` / ``roi.mri_roi(...).image``); the batch
        dimension of 1 is added here.
    target_layer : nn.Module or str
        Layer whose output is explained (DL-US: the last ConvNeXt stage, ``"stages.3"``; DL-MRI: ``"layer4"``).
        Its output must be channel-first ``(1, K, *spatial)``.
    class_index : int or None
        Logit to explain; default 1 = HER2-positive. ``None`` = the predicted class. For a single-logit model
        use 0 or None.

    Returns
    -------
    GradCAMResult
        ``cam`` has the input's spatial shape, values in [0, 1], large = evidence for ``class_index``.

    Raises
    ------
    ParameterError
        Wrong input shape, batch size != 1, class index out of range, or a target layer that is not used by the
        forward pass / has no spatial output.
    """
    if isinstance(target_layer, str):
        target_layer = find_layer(model, target_layer)
    xt = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if xt.ndim not in (3, 4):
        raise ParameterError(f"grad_cam needs one unbatched channel-first input, (C, H, W) for a 2-D model or "
                             f"(C, D, H, W) for a 3-D model (it adds the batch dimension of 1 itself); got shape "
                             f"{tuple(xt.shape)}.")
    xt = xt.unsqueeze(0)
    if not torch.isfinite(xt).all():
        raise ParameterError("grad_cam: the input contains NaN or infinite values.")
    param = next(model.parameters(), None)
    xt = xt.detach().to(dtype=torch.float32, device=param.device if param is not None else "cpu")
    xt = xt.clone().requires_grad_(True)  # so the activation has a graph even if every parameter is frozen

    store: dict[str, torch.Tensor] = {}

    def _fwd_hook(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not torch.is_tensor(out):
            raise ParameterError("grad_cam: the target layer's output is not a tensor.")
        store["act"] = out
        if out.requires_grad:
            out.register_hook(lambda g: store.__setitem__("grad", g))

    was_training = model.training
    model.eval()
    handle = target_layer.register_forward_hook(_fwd_hook)
    try:
        with torch.enable_grad():
            logits = model(xt)
            if logits.ndim == 1:
                logits = logits.unsqueeze(0)
            if logits.ndim != 2 or logits.shape[0] != 1:
                raise ParameterError(f"grad_cam: the model must return logits (1, n_classes); got "
                                     f"{tuple(logits.shape)}.")
            n_out = logits.shape[1]
            if class_index is None:
                class_index = 0 if n_out == 1 else int(logits.argmax(1).item())
            if not 0 <= class_index < n_out:
                raise ParameterError(f"class_index {class_index} is out of range for a model with {n_out} "
                                     "output(s); use 1 (HER2-positive) for the two-logit DL models, 0 for a "
                                     "single-logit model.")
            if "act" not in store:
                raise ParameterError("grad_cam: the target layer was not called in the forward pass; pick a "
                                     "layer the model uses (see model.named_modules()).")
            target = logits[0, class_index]
            model.zero_grad(set_to_none=True)
            target.backward()
    finally:
        handle.remove()
        model.train(was_training)
    act = store["act"].detach()
    grad = store.get("grad")
    if grad is None:
        raise ParameterError("grad_cam: no gradient reached the target layer; the target logit does not "
                             "depend on it.")
    grad = grad.detach()
    if act.ndim != xt.ndim:
        raise ParameterError(f"grad_cam: the target layer output has shape {tuple(act.shape)}; expected "
                             f"channel-first (1, K, *spatial) with {xt.ndim - 2} spatial dimension(s).")
    spatial = tuple(range(2, act.ndim))
    weights = grad.mean(dim=spatial, keepdim=True)  # alpha_k
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))  # (1, 1, *s)
    mode = "bilinear" if act.ndim == 4 else "trilinear"
    up = F.interpolate(cam, size=tuple(xt.shape[2:]), mode=mode, align_corners=False)[0, 0]
    max_raw = float(up.max())
    norm = up / max_raw if max_raw > 0 else torch.zeros_like(up)
    with torch.no_grad():
        if n_out == 1:
            prob = float(torch.sigmoid(logits[0, 0]))
        else:
            prob = float(torch.softmax(logits.detach(), dim=1)[0, class_index])
    return GradCAMResult(cam=norm.cpu().numpy().astype(np.float32),
                         cam_lowres=cam[0, 0].cpu().numpy().astype(np.float32), max_raw=max_raw,
                         logit=float(target.detach()), probability=prob, class_index=int(class_index))


# ----------------------------------------------------------------------------------------------------------------
# Quantitative check
# ----------------------------------------------------------------------------------------------------------------
def _check_cam_mask(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = np.asarray(cam, dtype=float)
    mask = np.asarray(mask)
    if cam.shape != mask.shape:
        raise ParameterError(f"cam {cam.shape} and mask {mask.shape} must have the same shape; resample the "
                             "mask to the ROI (roi.us_roi / roi.mri_roi return both).")
    if not np.all(np.isfinite(cam)) or (cam < 0).any():
        raise ParameterError("cam must be finite and non-negative (a Grad-CAM map after ReLU).")
    return cam, mask > 0


def energy_fraction(cam: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the map's mass inside the lesion: ``sum(cam * mask) / sum(cam)``.

    Parameters
    ----------
    cam : ndarray, shape (H, W) or (D, H, W)
        Non-negative map (e.g. ``GradCAMResult.cam``).
    mask : ndarray, same shape
        Lesion mask (non-zero = lesion).

    Returns
    -------
    float
        In [0, 1]; NaN (with a warning) for an all-zero map. A uniform map gives :func:`mask_fraction`.
    """
    cam, m = _check_cam_mask(cam, mask)
    total = cam.sum()
    if total <= 0:
        warnings.warn("energy_fraction: the map is all zero (no positive evidence); returning NaN.",
                      RuntimeWarning, stacklevel=2)
        return float("nan")
    return float(cam[m].sum() / total)


def mask_fraction(mask: np.ndarray) -> float:
    """Share of pixels/voxels inside the lesion mask (the energy fraction of a uniform map)."""
    m = np.asarray(mask) > 0
    if m.size == 0:
        raise ParameterError("mask is empty.")
    return float(m.mean())


def lesion_centre(mask: np.ndarray) -> tuple[int, ...]:
    """Integer centre of mass of the lesion mask (array index order); the array centre if the mask is empty."""
    m = np.asarray(mask) > 0
    if not m.any():
        return tuple(int(s // 2) for s in m.shape)
    idx = np.argwhere(m)
    return tuple(int(round(v)) for v in idx.mean(axis=0))


def select_cases(test: "pd.DataFrame", threshold: float) -> "pd.DataFrame":
    """Pick one representative test patient per outcome (TP, FP, TN, FN) at a fixed threshold.

    Parameters
    ----------
    test : DataFrame
        Test predictions with ``patient_id, her2, p_her2``.
    threshold : float
        Probability threshold (from the training OOF predictions, never from the test cohort); a patient is
        called positive when ``p_her2 >= threshold``.

    Returns
    -------
    DataFrame
        Columns ``outcome, patient_id, her2, p_her2``; one row per outcome that occurs (TP, FP, TN, FN order).
        Within an outcome the patient whose probability is closest to the outcome's median is chosen (ties:
        smallest patient_id), i.e. a typical rather than the most extreme case.
    """
    import pandas as pd

    if not np.isfinite(threshold):
        raise ParameterError(f"threshold must be finite; got {threshold!r}.")
    df = test[["patient_id", "her2", "p_her2"]].copy()
    pred = (df["p_her2"] >= threshold).astype(int)
    df["outcome"] = np.select([(pred == 1) & (df["her2"] == 1), (pred == 1) & (df["her2"] == 0),
                               (pred == 0) & (df["her2"] == 0), (pred == 0) & (df["her2"] == 1)],
                              ["TP", "FP", "TN", "FN"], default="?")
    rows = []
    for outcome in ("TP", "FP", "TN", "FN"):
        sub = df[df["outcome"] == outcome].copy()
        if sub.empty:
            continue
        sub["dist"] = (sub["p_her2"] - sub["p_her2"].median()).abs()
        sub = sub.sort_values(["dist", "patient_id"], kind="mergesort")
        rows.append(sub.iloc[0][["outcome", "patient_id", "her2", "p_her2"]])
    return pd.DataFrame(rows).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Figure 4
# ----------------------------------------------------------------------------------------------------------------
_OUTCOME_NAMES = {"TP": "true positive", "FP": "false positive", "TN": "true negative", "FN": "false negative"}


def _title(case: Mapping) -> str:
    out = case.get("outcome", "")
    return (f"{out} ({_OUTCOME_NAMES.get(out, '')})\n{case['patient_id']}: HER2{'+' if case['her2'] else '-'}, "
            f"p = {case['p_her2']:.2f}")


def _contour(ax, mask2d: np.ndarray) -> None:
    if np.asarray(mask2d).any():
        ax.contour(np.asarray(mask2d) > 0, levels=[0.5], colors="white", linewidths=1.0, linestyles="--")


def plot_gradcam_us(cases: Sequence[Mapping], path: str | os.PathLike | None = None, alpha: float = 0.45,
                    dpi: int = 200, note: str | None = None):
    """Figure 4 (US): for each case, the ROI image and the image with the Grad-CAM overlay.

    Parameters
    ----------
    cases : sequence of mappings
        Each with ``image`` (H, W) float, ``cam`` (H, W) in [0, 1], ``mask`` (H, W), ``patient_id``, ``her2``,
        ``p_her2`` and ``outcome`` (TP/FP/TN/FN).
    path : path or None
        Where to save (PNG; an SVG with the same stem is not written). The figure is returned either way.
    alpha : float
        Opacity of the heat map.
    note : str or None
        Footnote (e.g. how the cases were chosen).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not cases:
        raise ParameterError("plot_gradcam_us: no cases to plot.")
    n = len(cases)
    fig, axes = plt.subplots(2, n, figsize=(3.0 * n + 0.8, 6.4), squeeze=False, layout="constrained")
    im = None
    for j, case in enumerate(cases):
        img = np.asarray(case["image"], dtype=float)
        axes[0, j].imshow(img, cmap="gray")
        _contour(axes[0, j], case["mask"])
        axes[0, j].set_title(_title(case), fontsize=10)
        axes[1, j].imshow(img, cmap="gray")
        im = axes[1, j].imshow(np.asarray(case["cam"]), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        _contour(axes[1, j], case["mask"])
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("US ROI", fontsize=11)
    axes[1, 0].set_ylabel("Grad-CAM (HER2+ logit)", fontsize=11)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.45, pad=0.01, anchor=(0.0, 0.1))
    cb.set_label("Grad-CAM (normalised)", fontsize=10)
    fig.suptitle("DL-US Grad-CAM, test cohort (dashed: lesion mask)", fontsize=12)
    if note:
        fig.supxlabel(note, fontsize=8.5, color="0.35")
    if path is not None:
        _save(fig, path, dpi)
    return fig


def plot_gradcam_mri(cases: Sequence[Mapping], path: str | os.PathLike | None = None, alpha: float = 0.45,
                     dpi: int = 200, note: str | None = None):
    """Figure 4 (MRI): for each case, axial, coronal and sagittal slices through the lesion centre with the
    Grad-CAM overlay.

    Parameters
    ----------
    cases : sequence of mappings
        Each with ``image`` (D, H, W), ``cam`` (D, H, W) in [0, 1], ``mask`` (D, H, W), ``patient_id``,
        ``her2``, ``p_her2``, ``outcome``. Axis 0 is taken as the slice (z) axis.
    path : path or None
        Where to save the PNG.
    alpha : float
        Opacity of the heat map.
    note : str or None
        Footnote (e.g. how the cases were chosen).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not cases:
        raise ParameterError("plot_gradcam_mri: no cases to plot.")
    n = len(cases)
    fig, axes = plt.subplots(n, 3, figsize=(9.6, 3.1 * n + 0.6), squeeze=False, layout="constrained")
    im = None
    views = ("axial (z)", "coronal (y)", "sagittal (x)")
    for i, case in enumerate(cases):
        vol = np.asarray(case["image"], dtype=float)
        cam = np.asarray(case["cam"], dtype=float)
        mask = np.asarray(case["mask"])
        cz, cy, cx = lesion_centre(mask)
        slices = [(vol[cz], cam[cz], mask[cz]), (vol[:, cy, :], cam[:, cy, :], mask[:, cy, :]),
                  (vol[:, :, cx], cam[:, :, cx], mask[:, :, cx])]
        for j, (v, c, m) in enumerate(slices):
            ax = axes[i, j]
            origin = "upper" if j == 0 else "lower"
            ax.imshow(v, cmap="gray", origin=origin)
            im = ax.imshow(c, cmap="jet", alpha=alpha, vmin=0, vmax=1, origin=origin)
            if m.any():
                ax.contour(m > 0, levels=[0.5], colors="white", linewidths=1.0, linestyles="--", origin=origin)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(views[j], fontsize=11)
        axes[i, 0].set_ylabel(_title(case).replace("\n", "\n"), fontsize=9.5)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, pad=0.01)
    cb.set_label("Grad-CAM (normalised)", fontsize=10)
    fig.suptitle("DL-MRI Grad-CAM through the lesion centre, test cohort (dashed: lesion mask)", fontsize=12)
    if note:
        fig.supxlabel(note, fontsize=8.5, color="0.35")
    if path is not None:
        _save(fig, path, dpi)
    return fig


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    from .io import save_figure

    save_figure(fig, path, dpi)


# ----------------------------------------------------------------------------------------------------------------
# Cohort level (07_gradcam)
# ----------------------------------------------------------------------------------------------------------------
#: Grad-CAM target layer per model: the last ConvNeXt stage (DL-US) and MONAI ResNet ``layer4`` (DL-MRI).
TARGET_LAYERS = {"dl_us": "stages.3", "dl_mri": "layer4"}
_MODALITY = {"dl_us": ("us", "DL-US"), "dl_mri": ("mri", "DL-MRI")}


def cohort_cams(models: Sequence[nn.Module], images: np.ndarray, target_layer: str, class_index: int = 1,
                progress: bool = True, desc: str = "Grad-CAM") -> np.ndarray:
    """Grad-CAM of every image, averaged over an ensemble (the four fold models).

    Parameters
    ----------
    models : sequence of nn.Module
        The fold models (the test prediction is their mean probability, so the map is their mean map).
    images : ndarray, shape (n_patients, C, H, W) or (n_patients, C, D, H, W)
        ROI inputs exactly as the models saw them.
    target_layer : str
        Layer name in every model (:data:`TARGET_LAYERS`).
    class_index : int
        Explained logit (1 = HER2-positive).

    Returns
    -------
    ndarray, float32, shape (n_patients, H, W) or (n_patients, D, H, W)
        Per patient: mean of the models' max-normalised maps, divided again by its maximum (so in [0, 1]);
        all zeros if no model finds positive evidence.
    """
    from tqdm.auto import tqdm

    if not models:
        raise ParameterError("cohort_cams: no models given.")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (4, 5):
        raise ParameterError(f"cohort_cams: images must be (n, C, H, W) or (n, C, D, H, W); got {images.shape}.")
    out = np.zeros((images.shape[0],) + images.shape[2:], np.float32)
    for i in tqdm(range(images.shape[0]), desc=desc, disable=not progress, leave=False):
        acc = np.zeros(images.shape[2:], np.float64)
        for m in models:
            acc += grad_cam(m, images[i], target_layer, class_index=class_index).cam
        mx = acc.max()
        out[i] = (acc / mx) if mx > 0 else acc
    return out


def energy_table(patient_ids: Sequence[str], cams: np.ndarray, masks: np.ndarray, model: str) -> "pd.DataFrame":
    """Per-patient share of Grad-CAM energy inside the lesion and the lesion's area (volume) fraction.

    Parameters
    ----------
    patient_ids : sequence of str, length n_patients
    cams : ndarray, shape (n_patients, *spatial)
    masks : ndarray, shape (n_patients, *spatial) or (n_patients, 1, *spatial)
    model : str
        ``"dl_us"`` or ``"dl_mri"`` (stored in the ``model`` column).

    Returns
    -------
    DataFrame
        Columns ``model, patient_id, energy_in_lesion, lesion_fraction, enrichment`` where
        ``enrichment = energy_in_lesion / lesion_fraction`` (1 = no better than a uniform map).
    """
    import pandas as pd

    masks = np.asarray(masks)
    if masks.ndim == np.asarray(cams).ndim + 1:
        masks = masks[:, 0]
    if len(patient_ids) != len(cams) or len(cams) != len(masks):
        raise ParameterError(f"energy_table: {len(patient_ids)} ids, {len(cams)} maps and {len(masks)} masks.")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for pid, c, m in zip(patient_ids, cams, masks):
            e, a = energy_fraction(c, m), mask_fraction(m)
            rows.append({"model": model, "patient_id": str(pid), "energy_in_lesion": e, "lesion_fraction": a,
                         "enrichment": e / a if a > 0 else float("nan")})
    return pd.DataFrame(rows)


def energy_summary(energy: "pd.DataFrame") -> "pd.DataFrame":
    """Per model: median (IQR) energy in the lesion vs the lesion's area fraction, and the Wilcoxon signed-rank
    test of ``energy_in_lesion - lesion_fraction`` (H0: the map is no more lesion-focused than a uniform map).

    Returns
    -------
    DataFrame
        Columns ``model, n`` (patients with a non-zero map), ``n_zero_maps`` (no positive evidence anywhere:
        energy undefined), ``energy_median, energy_q1, energy_q3, lesion_fraction_median`` (all patients),
        ``enrichment_median, n_above_uniform, wilcoxon_p``.
    """
    import pandas as pd
    from scipy.stats import wilcoxon

    rows = []
    for model, g_all in energy.groupby("model", sort=False):
        g = g_all.dropna(subset=["energy_in_lesion"])
        d = (g["energy_in_lesion"] - g["lesion_fraction"]).to_numpy()
        p = float("nan")
        if np.count_nonzero(d) >= 2:
            p = float(wilcoxon(d).pvalue)
        q1, med, q3 = (np.quantile(g["energy_in_lesion"], [0.25, 0.5, 0.75]) if len(g) else (np.nan,) * 3)
        rows.append({"model": model, "n": int(len(g)), "n_zero_maps": int(len(g_all) - len(g)),
                     "energy_median": float(med), "energy_q1": float(q1), "energy_q3": float(q3),
                     "lesion_fraction_median": float(g_all["lesion_fraction"].median()),
                     "enrichment_median": float(g["enrichment"].median()), "n_above_uniform": int((d > 0).sum()),
                     "wilcoxon_p": p})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class GradCAMRun:
    """Outputs of :func:`run_gradcam`: per-patient energy, its summary, the selected cases, written files."""

    energy: "pd.DataFrame"
    summary: "pd.DataFrame"
    cases: "pd.DataFrame"
    files: tuple[Path, ...]


def available_models(run, quiet: bool = False) -> list[str]:
    """The models of ``run`` that Grad-CAM can explain: fold checkpoints and both prediction files present.

    Parameters
    ----------
    run : her2lib.nb.RunDirs
    quiet : bool
        Do not print a notice for a model left out (its modality is absent from the cohort, so its training
        notebook skipped it).

    Returns
    -------
    list of str
        Subset of ``["dl_us", "dl_mri"]``.
    """
    out = []
    for key, (mod, label) in _MODALITY.items():
        ok = (any((run.models / key).glob("fold*.pt")) and (run.predictions / f"{mod}_oof.csv").is_file()
              and (run.predictions / f"{mod}_test.csv").is_file())
        if ok:
            out.append(key)
        else:
            (run.figures / f"gradcam_{mod}.png").unlink(missing_ok=True)  # stale figure of an earlier run
            if not quiet:
                from .nb import notice
                notice(f"No {label} model or predictions in this run (its modality is absent from the cohort): "
                       f"Grad-CAM for {label} is skipped.")
    return out


def run_gradcam(run, models: Sequence[str] | None = None, folds: int | Sequence[int] | None = None,
                max_patients: int | None = None, progress: bool = True, dpi: int = 200,
                target_layers: dict[str, str] | None = None) -> GradCAMRun:
    """Everything of ``07_gradcam``: maps for the test cohort, Figure 4 and the energy table.

    Parameters
    ----------
    run : her2lib.nb.RunDirs
        Reads ``run.manifest``, ``run.params/02_preprocess.json`` (ROI settings; ROIs come from ``run.cache``),
        ``run.models/<model>/fold{k}.pt`` and ``run.predictions/{us,mri}_{oof,test}.csv``.
    models : sequence of {"dl_us", "dl_mri"}, optional
        None: the models that exist (:func:`available_models`, with a notice for a skipped one).
    folds : int, sequence of int or None
        Fold models whose maps are averaged: None or 0 = every ``fold{k}.pt`` present, an int n = the first n of
        them, a sequence = those folds.
    max_patients : int or None
        Limit the energy analysis to the first n test patients (by patient_id) plus the four Figure-4 cases
        (for quick runs); None or 0 = the whole test cohort.
    progress : bool
    dpi : int
    target_layers : dict or None
        Layer per model, overriding :data:`TARGET_LAYERS` (the paper's: last ConvNeXt stage, ``layer4``). At
        CPU-profile ROI sizes ``layer4`` of the 3D ResNet18 is 1 or 2 voxels wide (32x downsampling), so such
        profiles explain an earlier stage (e.g. ``layer2``) and say so in the figure title.

    Returns
    -------
    GradCAMRun
        Writes ``tables/gradcam_energy.csv`` (per patient), ``tables/gradcam_energy_summary.csv``,
        ``tables/gradcam_cases.csv`` and ``figures/gradcam_us.png`` / ``figures/gradcam_mri.png``.

    Notes
    -----
    Figure-4 cases are chosen per model at that model's Youden threshold on its **training OOF** predictions
    (:func:`select_cases`).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from .data import load_cohort
    from .fusion import read_predictions
    from .io import write_csv
    from .roi import PreprocessSpec, preprocess_cohort
    from .stats import youden_threshold
    from .train import load_fold_model

    layers = {**TARGET_LAYERS, **(target_layers or {})}
    if models is None:
        models = available_models(run)
        if not models:
            raise ParameterError(f"run_gradcam: no trained model in {run.models}; run 03_train_us or "
                                 "04_train_mri first.")
    unknown = [m for m in models if m not in _MODALITY]
    if unknown:
        raise ParameterError(f"run_gradcam: unknown model(s) {unknown}; use 'dl_us' and/or 'dl_mri'.")
    cohort = load_cohort(run.manifest, check_files="exists")
    spec = PreprocessSpec.from_params(run.params / "02_preprocess.json")
    files: list[Path] = []
    energies, case_tabs = [], []
    for key in models:
        mod, label = _MODALITY[key]
        mdir = run.models / key
        present = sorted(int(p.stem[4:]) for p in mdir.glob("fold*.pt") if p.stem[4:].isdigit())
        if folds is None or isinstance(folds, (int, np.integer)):
            ks = present[:folds] if folds else present
        else:
            ks = [int(k) for k in folds]
        if not ks:
            raise ParameterError(f"run_gradcam: no fold checkpoints in {mdir}; run the training notebook "
                                 f"({'03_train_us' if key == 'dl_us' else '04_train_mri'}) first.")
        nets = [load_fold_model(mdir, k) for k in ks]
        test = read_predictions(run.predictions / f"{mod}_test.csv", "test")
        oof = read_predictions(run.predictions / f"{mod}_oof.csv", "train")
        thr = youden_threshold(oof["her2"], oof["p_her2"])
        cases = select_cases(test, thr).assign(model=key, threshold=thr)
        case_tabs.append(cases)
        ids = sorted(test["patient_id"])
        if max_patients:
            ids = sorted(set(ids[:max_patients]) | set(cases["patient_id"]))
        missing = [p for p in ids if p not in set(cohort["patient_id"])]
        if missing:
            raise ParameterError(f"run_gradcam: test patients {missing[:10]} of {mod}_test.csv are not in "
                                 f"{run.manifest}; run the notebooks on one cohort.")
        sub = cohort.set_index("patient_id").loc[ids].reset_index()
        images, masks, _ = preprocess_cohort(sub, mod, spec, run.cache, progress=progress)
        cams = cohort_cams(nets, images, layers[key], progress=progress, desc=f"Grad-CAM {label}")
        energies.append(energy_table(ids, cams, masks, key))
        pos = {p: i for i, p in enumerate(ids)}
        pred = test.set_index("patient_id")
        fig_cases = []
        for _, c in cases.iterrows():
            i = pos[c["patient_id"]]
            fig_cases.append(dict(image=images[i, 0], cam=cams[i], mask=masks[i, 0], patient_id=c["patient_id"],
                                  her2=int(pred.loc[c["patient_id"], "her2"]), p_her2=float(c["p_her2"]),
                                  outcome=c["outcome"]))
        plot = plot_gradcam_us if key == "dl_us" else plot_gradcam_mri
        path = run.figures / f"gradcam_{mod}.png"
        fig = plot(fig_cases, None, note=f"Cases chosen at {label}'s training-OOF Youden threshold {thr:.3f}; "
                   f"map = mean of {len(nets)} fold models' Grad-CAMs of layer '{layers[key]}'.")
        _save(fig, path, dpi)
        plt.close(fig)
        files.append(path)
    energy = pd.concat(energies, ignore_index=True)
    summary = energy_summary(energy)
    cases_all = pd.concat(case_tabs, ignore_index=True)
    files += [write_csv(run.tables / "gradcam_energy.csv", energy),
              write_csv(run.tables / "gradcam_energy_summary.csv", summary),
              write_csv(run.tables / "gradcam_cases.csv", cases_all)]
    return GradCAMRun(energy=energy, summary=summary, cases=cases_all, files=tuple(files))
