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
* class tasks (``three-class``, ``low-vs-zero``; :data:`her2lib.contract.TASKS`): the explained logit is the
  target class's index in ``task.classes`` (:func:`explained_class`; default HER2-positive, HER2-low for
  ``low-vs-zero``), and Figure-4 cases are chosen on the one-vs-rest view of the predictions
  (:func:`one_vs_rest`: label = the target class or not, score = its probability), so :func:`select_cases`
  and the Youden threshold on the training OOF predictions work unchanged.
* normalisation by the maximum only. MONAI's default ``CAM`` post-processing rescales min-max *after*
  upsampling with a sign convention that can invert maps; her2lib never uses it. An all-zero map (the layer
  has no positive evidence) stays all-zero and is reported via ``GradCAMResult.max_raw == 0``.

Quantitative check. :func:`energy_fraction` is the share of a map's mass inside the lesion mask. The ROI is the
bounding box of the dilated lesion mask, so the lesion always sits near the ROI's centre, and comparing with a
uniform map (the mask's area fraction, :func:`mask_fraction`) credits any centre-weighted map -- even an
image-blind one -- with "finding the lesion". :func:`localisation_test` keeps that centre prior: each map's
energy in its own lesion mask against the same map scored with the other patients' masks in the same ROI frame
(a mask-permutation test).

The fold-ensemble map (:func:`cohort_cams`) is the mean of the fold models' max-normalised maps, not the
Grad-CAM of the averaged prediction. :func:`cam_to_source` maps a ROI-frame map back onto the source image (the
inverse of the ROI crop and resize), so Figure 4 is drawn in the source image's geometry (the figures themselves
are drawn by :mod:`her2lib.figures.gradcam`, the cohort run by :mod:`her2lib.stages.gradcam`).

Science layer: pure functions and result objects; imports science and core modules only.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .contract import DL_MODELS, Task, class_codes
from .contract import task as _task
from .errors import ParameterError
from .lesion import largest_lesion_slice, lesion_centre
from .options import did_you_mean, look_up_option

__all__ = [
    "GradCAMResult",
    "grad_cam",
    "find_layer",
    "energy_fraction",
    "mask_fraction",
    "energy_matrix",
    "LocalisationTestResult",
    "localisation_test",
    "lesion_centre",
    "largest_lesion_slice",
    "cam_to_source",
    "select_cases",
    "DEFAULT_TARGET_CLASS",
    "explained_class",
    "one_vs_rest",
    "TARGET_LAYERS",
    "cohort_cams",
    "grad_cams",
    "ENERGY_COLUMNS",
    "energy_table",
    "energy_summary",
]


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
        Unknown name; the message names the closest layer and the layers at that level (the children of the
        deepest existing parent, e.g. ``stages.0`` ... ``stages.3`` for ``"stages.9"``).
    """
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    parent = name.rpartition(".")[0]
    while parent and parent not in modules:
        parent = parent.rpartition(".")[0]
    prefix = f"{parent}." if parent else ""
    level = [n for n in modules if n.startswith(prefix) and n and "." not in n[len(prefix) :]]
    raise ParameterError(
        f"model has no layer {name!r}.{did_you_mean(name, modules)} Layers at that level: "
        f"{level}; see model.named_modules()."
    )


def grad_cam(
    model: nn.Module, x: torch.Tensor | np.ndarray, target_layer: nn.Module | str, *, class_index: int | None = 1
) -> GradCAMResult:
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
    class_index : int or None, keyword-only
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
    xt = _batch_of_one(model, x)
    logits, target, class_index, store = _backward_through(model, xt, target_layer, class_index)
    return _cam_from(store, xt, logits, target, class_index)


def _batch_of_one(model: nn.Module, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The input as a float32 batch of one on the model's device, a leaf that requires grad."""
    xt = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if xt.ndim not in (3, 4):
        raise ParameterError(
            f"grad_cam needs one unbatched channel-first input, (C, H, W) for a 2-D model or "
            f"(C, D, H, W) for a 3-D model (it adds the batch dimension of 1 itself); got shape "
            f"{tuple(xt.shape)}."
        )
    xt = xt.unsqueeze(0)
    if not torch.isfinite(xt).all():
        raise ParameterError("grad_cam: the input contains NaN or infinite values.")
    param = next(model.parameters(), None)
    xt = xt.detach().to(dtype=torch.float32, device=param.device if param is not None else "cpu")
    return xt.clone().requires_grad_(True)  # so the activation has a graph even if every parameter is frozen


def _backward_through(model: nn.Module, xt: torch.Tensor, target_layer: nn.Module, class_index: int | None):
    """Forward ``xt`` (a batch of ``n``) in eval mode with a hook on ``target_layer``, backpropagate the sum of the
    inputs' target logits (in eval mode every input's logit depends on its own activations only, so each input's
    slice of the gradient is its own Grad-CAM gradient).

    Returns the logits ``(n, n_out)``, the summed target logit (input 0's own for ``n = 1``), the class index used
    and the store holding the layer's activation (``"act"``) and its gradient (``"grad"``, absent when none reached
    it).
    """
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
            if logits.ndim != 2 or logits.shape[0] != xt.shape[0]:
                raise ParameterError(
                    f"grad_cam: the model must return logits (batch, n_classes) = ({xt.shape[0]}, n_classes); got "
                    f"{tuple(logits.shape)}."
                )
            n_out = logits.shape[1]
            if class_index is None:
                class_index = 0 if n_out == 1 else int(logits.argmax(1).item())
            if not 0 <= class_index < n_out:
                raise ParameterError(
                    f"class_index {class_index} is out of range for a model with {n_out} "
                    "output(s); use 1 (HER2-positive) for the two-logit DL models, 0 for a "
                    "single-logit model. A class task's model has one logit per class of the task "
                    "(task.classes order): explain it with the task it was trained for."
                )
            if "act" not in store:
                raise ParameterError(
                    "grad_cam: the target layer was not called in the forward pass; pick a "
                    "layer the model uses (see model.named_modules())."
                )
            target = logits[:, class_index].sum()
            model.zero_grad(set_to_none=True)
            target.backward()
    finally:
        handle.remove()
        model.train(was_training)
    return logits, target, class_index, store


def _cam_from(
    store: dict, xt: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, class_index: int
) -> GradCAMResult:
    """``ReLU(sum_k alpha_k A_k)``, upsampled to the input and max-normalised, with the target's probability."""
    act = store["act"].detach()
    grad = store.get("grad")
    if grad is None:
        raise ParameterError("grad_cam: no gradient reached the target layer; the target logit does not depend on it.")
    grad = grad.detach()
    if act.ndim != xt.ndim:
        raise ParameterError(
            f"grad_cam: the target layer output has shape {tuple(act.shape)}; expected "
            f"channel-first (1, K, *spatial) with {xt.ndim - 2} spatial dimension(s)."
        )
    spatial = tuple(range(2, act.ndim))
    weights = grad.mean(dim=spatial, keepdim=True)  # alpha_k
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))  # (1, 1, *s)
    mode = "bilinear" if act.ndim == 4 else "trilinear"
    up = F.interpolate(cam, size=tuple(xt.shape[2:]), mode=mode, align_corners=False)[0, 0]
    max_raw = float(up.max())
    norm = up / max_raw if max_raw > 0 else torch.zeros_like(up)
    with torch.no_grad():
        if logits.shape[1] == 1:
            prob = float(torch.sigmoid(logits[0, 0]))
        else:
            prob = float(torch.softmax(logits.detach(), dim=1)[0, class_index])
    return GradCAMResult(
        cam=norm.cpu().numpy().astype(np.float32),
        cam_lowres=cam[0, 0].cpu().numpy().astype(np.float32),
        max_raw=max_raw,
        logit=float(target.detach()),
        probability=prob,
        class_index=int(class_index),
    )


def grad_cams(
    model: nn.Module,
    images: np.ndarray,
    target_layer: nn.Module | str,
    *,
    class_index: int = 1,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM of many inputs, ``batch_size`` at a time: the maps of :func:`grad_cam` (``.cam``, max-normalised
    per input) with one forward and one backward pass per batch instead of per input.

    In eval mode (BatchNorm on its running statistics, LayerNorm per input) an input's logit does not depend on the
    other inputs of its batch, so the gradient of the summed target logits is, slice by slice, each input's own.
    The maps equal :func:`grad_cam`'s up to float rounding of the batched kernels (``tests/test_gradcam.py``).

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits ``(n, n_classes)``.
    images : ndarray, shape (n, C, H, W) or (n, C, D, H, W)
        Channel-first inputs.
    target_layer : nn.Module or str
        As :func:`grad_cam`.
    class_index : int
        Explained logit (1 = HER2-positive).
    batch_size : int
        Inputs per pass.

    Returns
    -------
    ndarray, float32, shape (n, H, W) or (n, D, H, W)
        Each input's map in [0, 1] (all zeros without positive evidence).
    """
    if isinstance(target_layer, str):
        target_layer = find_layer(model, target_layer)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (4, 5) or not np.isfinite(images).all():
        raise ParameterError(f"grad_cams: needs finite (n, C, H, W) or (n, C, D, H, W) inputs; got {images.shape}.")
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    out = np.zeros((images.shape[0],) + images.shape[2:], np.float32)
    for start in range(0, images.shape[0], max(1, int(batch_size))):
        xt = torch.as_tensor(images[start : start + batch_size], device=device).requires_grad_(True)
        _, _, _, store = _backward_through(model, xt, target_layer, class_index)
        if "grad" not in store:
            raise ParameterError("grad_cams: no gradient reached the target layer.")
        act, grad = store["act"].detach(), store["grad"].detach()
        cam = F.relu((grad.mean(dim=tuple(range(2, act.ndim)), keepdim=True) * act).sum(dim=1, keepdim=True))
        mode = "bilinear" if act.ndim == 4 else "trilinear"
        up = F.interpolate(cam, size=tuple(xt.shape[2:]), mode=mode, align_corners=False)[:, 0]
        peak = up.flatten(1).max(dim=1).values.view(-1, *([1] * (up.ndim - 1)))
        up = torch.where(peak > 0, up / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(up))
        out[start : start + len(xt)] = up.cpu().numpy()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Quantitative check: energy in the lesion, against the centre prior
# ----------------------------------------------------------------------------------------------------------------
def _check_cam_mask(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = np.asarray(cam, dtype=float)
    mask = np.asarray(mask)
    if cam.shape != mask.shape:
        raise ParameterError(
            f"cam {cam.shape} and mask {mask.shape} must have the same shape; resample the "
            "mask to the ROI (roi.us_roi / roi.mri_roi return both)."
        )
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
        warnings.warn(
            "energy_fraction: the map is all zero (no positive evidence); returning NaN.", RuntimeWarning, stacklevel=2
        )
        return float("nan")
    return float(cam[m].sum() / total)


def mask_fraction(mask: np.ndarray) -> float:
    """Share of pixels/voxels inside the lesion mask (the energy fraction of a uniform map)."""
    m = np.asarray(mask) > 0
    if m.size == 0:
        raise ParameterError("mask is empty.")
    return float(m.mean())


def _check_stack(cams: np.ndarray, masks: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(n, *s)`` maps and ``(n, *s)`` or ``(n, 1, *s)`` masks; return float32 maps, bool masks."""
    cams = np.asarray(cams, dtype=np.float32)
    masks = np.asarray(masks)
    if masks.ndim == cams.ndim + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if cams.ndim not in (3, 4):
        raise ParameterError(
            f"{what}: cams must be (n_patients, H, W) or (n_patients, D, H, W); got shape {cams.shape}."
        )
    if cams.shape != masks.shape:
        raise ParameterError(
            f"{what}: cams {cams.shape} and masks {masks.shape} differ; pass the ROI-frame "
            "masks that preprocess_cohort returns with the ROI images (one per map)."
        )
    if len(cams) == 0:
        raise ParameterError(f"{what}: no maps (n_patients = 0).")
    if not np.isfinite(cams).all() or (cams < 0).any():
        raise ParameterError(f"{what}: cams must be finite and non-negative (Grad-CAM maps after ReLU).")
    masks = masks > 0
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    if empty.size:
        raise ParameterError(
            f"{what}: the lesion masks at positions {empty[:10].tolist()} are empty; every "
            "patient needs a lesion mask in the ROI frame."
        )
    return cams, masks


def _energy_matrix(cams: np.ndarray, masks: np.ndarray, chunk: int = 16) -> np.ndarray:
    """``E[i, j]`` = share of map ``i``'s energy inside mask ``j`` (float64; NaN rows for all-zero maps)."""
    n = len(cams)
    size = int(np.prod(cams.shape[1:]))
    c = cams.reshape(n, size)
    m = masks.reshape(n, size)
    total = c.sum(axis=1, dtype=np.float64)
    out = np.empty((n, n), np.float64)
    for a in range(0, n, chunk):
        ca = c[a : a + chunk].astype(np.float64)
        for b in range(0, n, chunk):
            out[a : a + chunk, b : b + chunk] = ca @ m[b : b + chunk].astype(np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        out /= total[:, None]
    out[total <= 0] = np.nan
    return out


def energy_matrix(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Energy of every map in every patient's lesion mask, all in the common ROI frame.

    Parameters
    ----------
    cams : ndarray, shape (n_patients, H, W) or (n_patients, D, H, W)
        Non-negative maps in the ROI frame (e.g. :func:`cohort_cams`).
    masks : ndarray, shape (n_patients, *spatial) or (n_patients, 1, *spatial)
        ROI-frame lesion masks in the same patient order (non-zero = lesion).

    Returns
    -------
    ndarray, float64, shape (n_patients, n_patients)
        ``E[i, j] = sum(cams[i] * masks[j]) / sum(cams[i])``: the diagonal is each map's energy in its own lesion,
        off-diagonal entries score the map with other patients' lesions (the centre-prior reference of
        :func:`localisation_test`). Rows of all-zero maps are NaN.
    """
    cams, masks = _check_stack(cams, masks, "energy_matrix")
    return _energy_matrix(cams, masks)


def _own_and_others(cams: np.ndarray, masks: np.ndarray):
    """Maps with positive energy (bool per patient), their energy matrix, own-mask and mean other-mask energy."""
    nonzero = cams.reshape(len(cams), -1).max(axis=1, initial=0.0) > 0
    e = _energy_matrix(cams[nonzero], masks[nonzero])
    n = len(e)
    own = np.diag(e).copy()
    others = (e.sum(axis=1) - own) / (n - 1) if n >= 2 else np.full(n, np.nan)
    return nonzero, e, own, others


_LOCALISATION_METHOD = (
    "mask-permutation test against the centre prior: statistic = mean over patients of the "
    "share of each map's energy inside its own lesion mask; null = the same maps scored with "
    "randomly re-assigned lesion masks of the same patients, all in the common ROI frame "
    "(uniform random permutations of the patient-mask assignment, or all n! when n! <= B); "
    "one-sided P = (1 + #{null >= observed}) / (1 + B) (exact: #{null >= observed} / n!)"
)


@dataclass(frozen=True)
class LocalisationTestResult:
    """Outcome of :func:`localisation_test`.

    Attributes
    ----------
    statistic : float
        Observed mean, over the ``n_patients`` maps, of the energy fraction inside the patient's own lesion mask.
    others_mean : float
        Mean, over the same maps, of their mean energy fraction inside the *other* patients' masks: what a map
        that knows where lesions usually sit in the ROI (the centre prior) but not this lesion would score.
    enrichment : float
        ``statistic / others_mean``: enrichment over the centre prior (1 = no better than the centre prior).
    pvalue : float
        One-sided permutation P value; NaN for fewer than 3 maps.
    n_patients : int
        Maps tested (all-zero maps are left out: their energy is undefined).
    n_zero_maps : int
        Maps left out because they are all zero.
    n_permutations : int
        Permutations in the null: B random ones, or all ``n_patients!`` when ``exact``.
    exact : bool
        True when every permutation was enumerated (``n_patients! <= B``).
    seed : int or None
        Integer seed of the random permutations (None when a Generator was passed).
    energy_own, energy_others : ndarray, shape (n_patients,)
        Per tested patient: energy in its own mask, and mean energy in the other tested patients' masks.
    alternative : str
        ``"greater"``: the maps put more energy in their own lesion than in other patients' lesions.
    method : str
        The test, in words.
    """

    statistic: float
    others_mean: float
    enrichment: float
    pvalue: float
    n_patients: int
    n_zero_maps: int
    n_permutations: int
    exact: bool
    seed: int | None
    energy_own: np.ndarray = field(repr=False, compare=False)
    energy_others: np.ndarray = field(repr=False, compare=False)
    alternative: str = "greater"
    method: str = _LOCALISATION_METHOD

    def to_row(self) -> dict:
        """Flat dict for a results table: ``mean_energy_own, mean_energy_others, enrichment_over_centre_prior,
        permutation_p, n_patients, n_zero_maps, n_permutations, exact, seed, alternative, method``."""
        return dict(
            mean_energy_own=self.statistic,
            mean_energy_others=self.others_mean,
            enrichment_over_centre_prior=self.enrichment,
            permutation_p=self.pvalue,
            n_patients=self.n_patients,
            n_zero_maps=self.n_zero_maps,
            n_permutations=self.n_permutations,
            exact=self.exact,
            seed=self.seed,
            alternative=self.alternative,
            method=self.method,
        )


def localisation_test(
    cams: np.ndarray, masks: np.ndarray, *, n_permutations: int = 9999, seed: int | np.random.Generator | None = 0
) -> LocalisationTestResult:
    """Do the maps find *their own* lesion, beyond the ROI's centre prior? A mask-permutation test.

    The ROI is the bounding box of the dilated lesion mask, so the lesion always sits near the ROI's centre and
    any centre-weighted map -- even one that never looks at the image -- puts far more energy on the lesion
    than a uniform map would. Comparing with a uniform map (energy fraction vs the lesion's area fraction)
    therefore confounds "finds the lesion" with "likes the centre". This test keeps the centre prior: each map
    is scored with its own lesion mask and with the other patients' masks in the same ROI frame, which share
    the centring, the typical size and the ROI geometry but not this patient's lesion.

    * statistic ``T = mean_i E[i, i]`` with ``E[i, j]`` = share of map ``i``'s energy inside mask ``j``
      (:func:`energy_matrix`);
    * null: ``T_pi = mean_i E[i, pi(i)]`` over permutations ``pi`` of the patient-mask assignment. Under H0
      (the maps do not depend on which lesion is in the image beyond what all lesions share, e.g. the centring)
      the assignment is exchangeable;
    * ``P = (1 + #{T_pi >= T}) / (1 + B)`` for ``B`` uniform random permutations (Phipson & Smyth 2010), or
      ``#{T_pi >= T} / n!`` over all ``n!`` permutations when ``n! <= B`` (small cohorts). One-sided; ties
      (e.g. identical maps) count against the maps, with a relative tolerance of 1e-9. Permutations are drawn
      from the whole group (fixed points allowed), so the identity assignment is one of them and the P value
      is valid for any ``n``; derangements alone would not be (with 6 patients there are only 265).

    Parameters
    ----------
    cams : ndarray, shape (n_patients, H, W) or (n_patients, D, H, W)
        Non-negative maps in the ROI frame, in [0, 1] or any scale (each is normalised by its own sum).
    masks : ndarray, shape (n_patients, *spatial) or (n_patients, 1, *spatial)
        ROI-frame lesion masks, same patient order (as :func:`her2lib.roi.preprocess_cohort` returns them).
    n_permutations : int, keyword-only
        Number B of random permutations (>= 1).
    seed : int, Generator or None, keyword-only
        Seed of the permutations; the result is deterministic for an int.

    Returns
    -------
    LocalisationTestResult
        ``statistic`` (mean energy in the own mask), ``others_mean`` (mean energy in other patients' masks),
        ``enrichment = statistic / others_mean`` (enrichment over the centre prior), ``pvalue``, and the
        per-patient ``energy_own`` / ``energy_others``. All-zero maps are left out (``n_zero_maps``); with fewer
        than 3 maps the P value is NaN.

    Raises
    ------
    ParameterError
        Shapes that differ or are not ``(n, *spatial)``, negative or non-finite maps, an empty lesion mask,
        ``n_permutations < 1``.

    References
    ----------
    Phipson B, Smyth GK. Permutation P-values should never be zero. Stat Appl Genet Mol Biol 2010;9:39.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> masks = np.zeros((10, 16, 16), bool)
    >>> for i in range(10):
    ...     y, x = rng.integers(5, 11, size=2)
    ...     masks[i, y - 2:y + 2, x - 2:x + 2] = True
    >>> localisation_test(masks.astype(float), masks, n_permutations=999).pvalue < 0.01  # follows the lesion
    True
    >>> blind = np.broadcast_to(masks.mean(0), masks.shape)  # the average lesion, for every patient
    >>> localisation_test(blind, masks, n_permutations=999).pvalue
    1.0
    """
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ParameterError(
            f"localisation_test: n_permutations must be a positive integer; got "
            f"{n_permutations!r} (9999 is the default)."
        )
    cams, masks = _check_stack(cams, masks, "localisation_test")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    seed_val = int(seed) if isinstance(seed, (int, np.integer)) else None
    nonzero, e, own, others = _own_and_others(cams, masks)
    n = len(e)
    stat = float(own.mean()) if n else float("nan")
    others_mean = float(others.mean()) if n else float("nan")
    p, exact, n_used = float("nan"), False, int(n_permutations)
    if n >= 3:
        tol = 1e-9 * abs(stat)
        if math.factorial(n) <= n_permutations:
            perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
            null = e[np.arange(n)[None, :], perms].mean(axis=1)
            p, exact, n_used = float(np.count_nonzero(null >= stat - tol) / len(null)), True, len(perms)
        else:
            perms = rng.permuted(np.tile(np.arange(n), (int(n_permutations), 1)), axis=1)
            null = e[np.arange(n)[None, :], perms].mean(axis=1)
            p = float((1 + np.count_nonzero(null >= stat - tol)) / (1 + len(null)))
    enrich = stat / others_mean if n and others_mean > 0 else float("nan")
    return LocalisationTestResult(
        statistic=stat,
        others_mean=others_mean,
        enrichment=float(enrich),
        pvalue=p,
        n_patients=int(n),
        n_zero_maps=int((~nonzero).sum()),
        n_permutations=n_used,
        exact=exact,
        seed=seed_val,
        energy_own=own,
        energy_others=others,
    )


# ----------------------------------------------------------------------------------------------------------------
# Back to the source image
# ----------------------------------------------------------------------------------------------------------------
def cam_to_source(cam: np.ndarray, box: Sequence[Sequence[int]], source_shape: Sequence[int]) -> np.ndarray:
    """Map a ROI-frame map back onto the source image grid (the inverse of the ROI crop and resize).

    :func:`her2lib.roi.us_roi` / :func:`her2lib.roi.mri_roi` crop the half-open ``box`` (source index
    coordinates) and resize the crop to the ROI size with ``align_corners=False``, i.e. ROI index ``r`` along an
    axis of ROI size ``S`` samples crop position ``(r + 0.5) * L / S - 0.5`` (``L`` = box length). The inverse
    resizes the map from ``S`` to ``L`` with the same convention (bilinear 2-D, trilinear 3-D), which samples
    source pixel ``box_start + j`` at ROI position ``(j + 0.5) * S / L - 0.5``, and pastes it into the box.

    Parameters
    ----------
    cam : ndarray, shape (H, W) or (D, H, W)
        Map in the ROI frame (e.g. ``GradCAMResult.cam`` or a row of :func:`cohort_cams`).
    box : sequence of (start, stop)
        Half-open crop box per axis in source index order (``RoiResult.box``; ``((y0, y1), (x0, x1))`` or
        ``((z0, z1), (y0, y1), (x0, x1))``). A box that reaches past the image border (a padded crop) is
        clipped: only the part inside the image is returned.
    source_shape : sequence of int
        Shape of the source image, same axis order.

    Returns
    -------
    ndarray, float32, shape ``source_shape``
        The map on the source grid; 0 outside the box. Values stay in the map's range (interpolation only).

    Raises
    ------
    ParameterError
        Dimensions that disagree, an empty box, a box that does not overlap the image, a non-finite map.

    Examples
    --------
    >>> cam = np.zeros((4, 4), np.float32); cam[1:3, 1:3] = 1
    >>> cam_to_source(cam, ((2, 6), (10, 14)), (8, 16))[2:6, 10:14].tolist() == cam.tolist()  # same size: paste
    True
    """
    cam = np.asarray(cam, dtype=np.float32)
    shape = tuple(int(s) for s in source_shape)
    try:
        box = tuple((int(a), int(b)) for a, b in box)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"cam_to_source: box must be ((start, stop), ...) per axis; got {box!r}.") from exc
    if cam.ndim not in (2, 3) or len(box) != cam.ndim or len(shape) != cam.ndim:
        raise ParameterError(
            f"cam_to_source: map {cam.shape}, box {box} and source shape {shape} must have the "
            "same number of axes (2 for US, 3 for MRI; the box is RoiResult.box)."
        )
    if not np.isfinite(cam).all():
        raise ParameterError("cam_to_source: the map contains NaN or infinite values.")
    lengths = tuple(b - a for a, b in box)
    if any(n < 1 for n in lengths):
        raise ParameterError(f"cam_to_source: box {box} is empty along an axis (stop <= start).")
    if any(b <= 0 or a >= s for (a, b), s in zip(box, shape)):
        raise ParameterError(
            f"cam_to_source: box {box} does not overlap the source image of shape {shape}; "
            "the box and the image must come from the same patient and modality."
        )
    t = torch.from_numpy(np.ascontiguousarray(cam))[None, None]
    if lengths == cam.shape:
        up = cam
    elif cam.ndim == 2:
        antialias = any(n < s for n, s in zip(lengths, cam.shape))
        up = F.interpolate(t, size=lengths, mode="bilinear", align_corners=False, antialias=antialias)[0, 0].numpy()
    else:
        up = F.interpolate(t, size=lengths, mode="trilinear", align_corners=False)[0, 0].numpy()
    out = np.zeros(shape, np.float32)
    dst = tuple(slice(max(a, 0), min(b, s)) for (a, b), s in zip(box, shape))
    src = tuple(slice(d.start - a, d.stop - a) for d, (a, _) in zip(dst, box))
    out[dst] = up[src]
    return out


def select_cases(test: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Pick one representative test patient per outcome (TP, FP, TN, FN) at a fixed threshold.

    Parameters
    ----------
    test : DataFrame
        Test predictions with ``patient_id, her2, p_her2`` (:func:`her2lib.stages.gradcam.run_gradcam` passes the
        fold-model mean, the probability the figure prints; the evaluation's operating point is per fold model, so
        a borderline case's outcome here may differ from the majority of the fold models). For a class task,
        the one-vs-rest view of the target class (:func:`one_vs_rest`): positive = that class.
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
    if threshold is None or np.isnan(threshold):
        raise ParameterError(
            f"threshold must be a number (+-inf allowed: Youden's J may pick everyone positive or "
            f"negative); got {threshold!r}."
        )
    df = test[["patient_id", "her2", "p_her2"]].copy()
    pred = (df["p_her2"] >= threshold).astype(int)
    df["outcome"] = np.select(
        [
            (pred == 1) & (df["her2"] == 1),
            (pred == 1) & (df["her2"] == 0),
            (pred == 0) & (df["her2"] == 0),
            (pred == 0) & (df["her2"] == 1),
        ],
        ["TP", "FP", "TN", "FN"],
        default="?",
    )
    rows = []
    for outcome in ("TP", "FP", "TN", "FN"):
        sub = df[df["outcome"] == outcome].copy()
        if sub.empty:
            continue
        sub["dist"] = (sub["p_her2"] - sub["p_her2"].median()).abs()
        sub = sub.sort_values(["dist", "patient_id"], kind="mergesort")
        rows.append(sub.iloc[0][["outcome", "patient_id", "her2", "p_her2"]])
    return pd.DataFrame(rows).reset_index(drop=True)


#: The class whose logit Grad-CAM explains when ``target_class`` is empty, per task key: HER2-positive, except
#: HER2-low for ``low-vs-zero`` (the T-DXd question: what makes a tumour HER2-low rather than HER2-zero).
DEFAULT_TARGET_CLASS: dict[str, str] = {"binary": "positive", "three-class": "positive", "low-vs-zero": "low"}


def explained_class(task: str | Task, target_class: str = "") -> tuple[str, int]:
    """The class whose logit Grad-CAM explains, and its logit index.

    Parameters
    ----------
    task : str or Task
        ``"binary"``, ``"three-class"`` or ``"low-vs-zero"`` (:data:`her2lib.contract.TASKS`).
    target_class : str
        One of ``task.classes`` (binary: ``negative, positive``; three-class: ``zero, low, positive``;
        low-vs-zero: ``zero, low``); empty = :data:`DEFAULT_TARGET_CLASS`.

    Returns
    -------
    (str, int)
        The class name and its index in ``task.classes`` (= the model's logit index).

    Raises
    ------
    ParameterError
        A class the task does not have; the message lists the task's classes.

    Examples
    --------
    >>> explained_class("binary")
    ('positive', 1)
    >>> explained_class("low-vs-zero")
    ('low', 1)
    >>> explained_class("three-class", "zero")
    ('zero', 0)
    """
    t = _task(task)
    default = DEFAULT_TARGET_CLASS.get(t.key, t.classes[-1])
    try:
        name = look_up_option(target_class or default, t.classes, name="target_class")
    except ParameterError as exc:
        raise ParameterError(f"{exc} (the classes of task={t.key!r}; empty = {default!r})") from None
    return name, t.classes.index(name)


def one_vs_rest(predictions: pd.DataFrame, task: str | Task, target_class: str = "") -> pd.DataFrame:
    """The one-vs-rest view of a prediction table for one class, in the binary columns :func:`select_cases` reads.

    Parameters
    ----------
    predictions : DataFrame
        Binary task: ``patient_id, her2, p_her2`` (:func:`her2lib.contract.read_predictions`); class task:
        ``patient_id, her2_class, p_<class>...`` (:func:`her2lib.contract.read_class_predictions`).
    task : str or Task
    target_class : str
        The class (:func:`explained_class`; empty = the task's default).

    Returns
    -------
    DataFrame, one row per input row, same order
        ``patient_id``; ``her2`` = 1 if the patient's class is the target class, else 0; ``p_her2`` = the
        predicted probability of the target class; ``her2_class`` = the patient's class name. For the binary
        task with the target ``positive`` ``her2`` and ``p_her2`` are the input's columns unchanged.
    """
    t = _task(task)
    target, j = explained_class(t, target_class)
    if t.is_binary:
        y = predictions["her2"].to_numpy().astype(int)
        p = predictions["p_her2"].to_numpy(dtype=float)
        is_target, score = (y, p) if j == 1 else (1 - y, 1.0 - p)
        true = np.asarray(t.classes, dtype=object)[y]
    else:
        codes = class_codes(predictions, t)
        is_target, score = (codes == j).astype(int), predictions[f"p_{target}"].to_numpy(dtype=float)
        true = np.asarray(t.classes, dtype=object)[codes]
    return pd.DataFrame(
        {"patient_id": predictions["patient_id"].to_numpy(), "her2": is_target, "p_her2": score, "her2_class": true}
    )


# ----------------------------------------------------------------------------------------------------------------
# Cohort level (07_gradcam)
# ----------------------------------------------------------------------------------------------------------------
#: Grad-CAM target layer per deep-learning model (keys: :data:`her2lib.contract.DL_MODELS`): the last ConvNeXt
#: stage (DL-US) and MONAI ResNet ``layer4`` (DL-MRI).
TARGET_LAYERS: dict[str, str] = dict(zip(DL_MODELS, ("stages.3", "layer4")))


def cohort_cams(
    models: Sequence[nn.Module],
    images: np.ndarray,
    target_layer: str,
    *,
    class_index: int = 1,
    progress: bool = True,
    desc: str = "Grad-CAM",
) -> np.ndarray:
    """Fold-ensemble Grad-CAM of every image: the mean of the fold models' max-normalised maps.

    This is **not** the Grad-CAM of the ensemble's averaged prediction (the fold models have separate target
    layers, so that map is not defined without further choices). Each fold model's map is computed for its own
    ``class_index`` logit (HER2-positive by default) and divided by its own maximum, so every fold counts equally whatever its gradient scale;
    the mean is divided again by its maximum. A fold with no positive evidence (all-zero map) contributes zeros.

    Parameters
    ----------
    models : sequence of nn.Module
        The fold models (the test prediction is their mean probability).
    images : ndarray, shape (n_patients, C, H, W) or (n_patients, C, D, H, W)
        ROI inputs exactly as the models saw them.
    target_layer : str
        Layer name in every model (:data:`TARGET_LAYERS`).
    class_index : int, keyword-only
        Explained logit: 1 = HER2-positive for the binary models; for a class task the target class's index in
        ``task.classes`` (:func:`explained_class`).
    progress : bool, keyword-only
        Show a progress bar.
    desc : str, keyword-only
        Its label.

    Returns
    -------
    ndarray, float32, shape (n_patients, H, W) or (n_patients, D, H, W)
        Per patient, in the ROI frame: mean of the models' max-normalised maps, divided again by its maximum (so
        in [0, 1]); all zeros if no model finds positive evidence. :func:`cam_to_source` maps a row back onto
        the source image.
    """
    if not models:
        raise ParameterError("cohort_cams: no models given.")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (4, 5):
        raise ParameterError(f"cohort_cams: images must be (n, C, H, W) or (n, C, D, H, W); got {images.shape}.")
    acc = np.zeros((images.shape[0],) + images.shape[2:], np.float64)
    for m in tqdm(models, desc=desc, disable=not progress, leave=False):  # one batched pass per fold model
        acc += grad_cams(m, images, target_layer, class_index=class_index)
    peak = acc.reshape(len(acc), -1).max(axis=1).reshape(-1, *([1] * (acc.ndim - 1)))
    return np.where(peak > 0, acc / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


#: Columns of :func:`energy_table` (``tables/gradcam_energy.csv``).
ENERGY_COLUMNS = (
    "model",
    "patient_id",
    "energy_own_mask",
    "energy_other_masks_mean",
    "enrichment_over_centre_prior",
    "lesion_fraction",
    "naive_enrichment_vs_uniform",
)


def energy_table(patient_ids: Sequence[str], cams: np.ndarray, masks: np.ndarray, *, model: str) -> pd.DataFrame:
    """Per patient: the map's energy in its own lesion mask against the centre prior (other patients' masks).

    Parameters
    ----------
    patient_ids : sequence of str, length n_patients
    cams : ndarray, shape (n_patients, *spatial)
        ROI-frame maps (:func:`cohort_cams`).
    masks : ndarray, shape (n_patients, *spatial) or (n_patients, 1, *spatial)
        ROI-frame lesion masks, same order.
    model : str, keyword-only
        ``"dl_us"`` or ``"dl_mri"`` (stored in the ``model`` column).

    Returns
    -------
    DataFrame
        Columns :data:`ENERGY_COLUMNS`:

        * ``energy_own_mask``: share of the map's energy inside this patient's lesion mask;
        * ``energy_other_masks_mean``: mean share inside each *other* patient's mask (all in the common ROI frame;
          other patients with an all-zero map excluded, as in :func:`localisation_test`): what the map would
          score if it only knew where lesions usually sit in the ROI (the centre prior);
        * ``enrichment_over_centre_prior`` = own / others (1 = no better than the centre prior). For one patient
          it also reflects the lesion's size relative to the other lesions (a large lesion collects more of any
          map); the cohort-level inference is :func:`localisation_test`;
        * ``lesion_fraction``: the lesion's area (volume) share of the ROI, and ``naive_enrichment_vs_uniform``
          = energy_own_mask / lesion_fraction, the **naive** comparison with a uniform map, kept for reference
          only: the ROI is centred on the lesion, so any centre-weighted map scores > 1 on it.

        Energies are NaN for a patient whose map is all zero (no positive evidence).
    """
    cams, masks = _check_stack(cams, masks, "energy_table")
    if len(patient_ids) != len(cams):
        raise ParameterError(f"energy_table: {len(patient_ids)} patient ids for {len(cams)} maps.")
    nonzero, _, own_nz, others_nz = _own_and_others(cams, masks)
    own = np.full(len(cams), np.nan)
    others = np.full(len(cams), np.nan)
    own[nonzero], others[nonzero] = own_nz, others_nz
    frac = masks.reshape(len(masks), -1).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        enrich = np.where(others > 0, own / others, np.nan)
    return pd.DataFrame(
        {
            "model": model,
            "patient_id": [str(p) for p in patient_ids],
            "energy_own_mask": own,
            "energy_other_masks_mean": others,
            "enrichment_over_centre_prior": enrich,
            "lesion_fraction": frac,
            "naive_enrichment_vs_uniform": own / frac,
        },
        columns=list(ENERGY_COLUMNS),
    )


def energy_summary(energy: pd.DataFrame, tests: Mapping[str, LocalisationTestResult] | None = None) -> pd.DataFrame:
    """Per model: the energy in the own lesion against the centre prior, and the mask-permutation test.

    Parameters
    ----------
    energy : DataFrame
        :func:`energy_table` output (one or more models).
    tests : mapping model -> LocalisationTestResult, optional
        :func:`localisation_test` of each model's maps (same patients); its columns are NaN for a model without.

    Returns
    -------
    DataFrame
        One row per model: ``model, n`` (patients with a non-zero map), ``n_zero_maps``,
        ``energy_own_median, energy_own_q1, energy_own_q3, energy_others_median``,
        ``enrichment_over_centre_prior_median`` (per-patient own / others), ``n_own_above_others``, then the
        test (:meth:`LocalisationTestResult.to_row`): ``mean_energy_own, mean_energy_others,
        enrichment_over_centre_prior, permutation_p, n_permutations, exact, seed, alternative, method``, and last the
        naive reference ``lesion_fraction_median, naive_enrichment_vs_uniform_median`` (a uniform map's
        expectation; not a valid null, as the ROI is centred on the lesion).
    """
    missing = [c for c in ENERGY_COLUMNS if c not in energy.columns]
    if missing:
        raise ParameterError(f"energy_summary: the energy table lacks {missing}; build it with energy_table.")
    tests = dict(tests or {})
    blank = {
        k: v
        for k, v in LocalisationTestResult(
            np.nan, np.nan, np.nan, np.nan, 0, 0, 0, False, None, np.empty(0), np.empty(0)
        )
        .to_row()
        .items()
        if k not in ("n_patients", "n_zero_maps")
    }
    rows = []
    for model, g_all in energy.groupby("model", sort=False):
        g = g_all.dropna(subset=["energy_own_mask"])
        q1, med, q3 = np.quantile(g["energy_own_mask"], [0.25, 0.5, 0.75]) if len(g) else (np.nan,) * 3
        row = {
            "model": model,
            "n": int(len(g)),
            "n_zero_maps": int(len(g_all) - len(g)),
            "energy_own_median": float(med),
            "energy_own_q1": float(q1),
            "energy_own_q3": float(q3),
            "energy_others_median": float(g["energy_other_masks_mean"].median()),
            "enrichment_over_centre_prior_median": float(g["enrichment_over_centre_prior"].median()),
            "n_own_above_others": int((g["energy_own_mask"] > g["energy_other_masks_mean"]).sum()),
        }
        test = tests.get(model)
        if test is not None and test.n_patients != len(g):
            raise ParameterError(
                f"energy_summary: the {model} test covers {test.n_patients} maps but the "
                f"energy table has {len(g)} non-zero maps for it; run both on the same maps."
            )
        t = test.to_row() if test is not None else dict(blank)
        t.pop("n_patients", None)
        t.pop("n_zero_maps", None)
        row.update(t)
        row.update(
            {
                "lesion_fraction_median": float(g_all["lesion_fraction"].median()),
                "naive_enrichment_vs_uniform_median": float(g["naive_enrichment_vs_uniform"].median()),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)
