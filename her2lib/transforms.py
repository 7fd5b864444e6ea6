"""Training augmentation (Methods: "Various data augmentation techniques ... are applied").

The paper lists random flipping, scaling, translation ("panning"), Gaussian noise, Gaussian blur and
brightness/contrast adjustment. :func:`build_augmentation` composes the matching MONAI array transforms for 2-D
(US) or 3-D (MRI) channel-first images; :class:`BatchAugmenter` applies them to a batch tensor sample by sample.

Determinism: the transforms own a NumPy ``RandomState`` that :meth:`BatchAugmenter.reseed` resets from a seed.
The training loop reseeds from ``(seed, fold, epoch)`` at the start of every epoch, so an epoch's augmentation
depends only on those three numbers (this is what makes an interrupted run resume to identical results).

Science layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import set_track_meta
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    RandAffine,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandShiftIntensity,
)

from .errors import ParameterError

__all__ = ["AugmentSpec", "DEFAULT_AUGMENT", "build_augmentation", "BatchAugmenter"]


@dataclass(frozen=True)
class AugmentSpec:
    """Augmentation parameters (probabilities are per sample).

    Attributes
    ----------
    flip_prob : float
        Probability of a flip along each axis in ``flip_axes``.
    flip_axes : tuple of int or None
        Spatial axes to flip (0 = first spatial axis). None: the last (left-right) axis only.
    affine_prob : float
        Probability of a random scaling + translation.
    scale : float
        Relative zoom range, factor drawn from ``1 +- scale``.
    translate : float
        Translation range as a fraction of the image side.
    noise_prob, noise_std : float
        Additive Gaussian noise (images are z-scored, so the std is in units of the ROI's std).
    blur_prob : float
        Probability of a Gaussian blur.
    blur_sigma : (float, float)
        Range of the blur sigma in pixels/voxels.
    intensity_prob : float
        Probability of each of brightness (additive shift) and contrast (multiplicative) change.
    brightness, contrast : float
        Shift range ``+-brightness`` and scale range ``1 +- contrast``.
    """

    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] | None = None
    affine_prob: float = 0.5
    scale: float = 0.1
    translate: float = 0.1
    noise_prob: float = 0.2
    noise_std: float = 0.1
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.25, 1.0)
    intensity_prob: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1


#: The paper's augmentation (the default of the training functions).
DEFAULT_AUGMENT = AugmentSpec()


def _checked_geometry(spatial_dims: int, spatial_size, spec: AugmentSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``spatial_size`` as ints and the flip axes of ``spec``, or a ParameterError (both augmentation backends)."""
    if spatial_dims not in (2, 3):
        raise ParameterError(f"spatial_dims={spatial_dims}: use 2 (US) or 3 (MRI).")
    spatial_size = tuple(int(s) for s in spatial_size)
    if len(spatial_size) != spatial_dims:
        raise ParameterError(f"spatial_size={spatial_size} does not have {spatial_dims} entries.")
    axes = tuple(spec.flip_axes) if spec.flip_axes is not None else (spatial_dims - 1,)
    if any(a < 0 or a >= spatial_dims for a in axes):
        raise ParameterError(f"flip_axes={axes}: spatial axes are 0..{spatial_dims - 1}.")
    return spatial_size, axes


def build_augmentation(spatial_dims: int, spatial_size, *, spec: AugmentSpec | None = None, seed: int = 0):
    """MONAI ``Compose`` of the paper's augmentations for one channel-first sample.

    Parameters
    ----------
    spatial_dims : {2, 3}
    spatial_size : sequence of int
        ``(H, W)`` or ``(D, H, W)`` of the samples (sets the translation range in pixels).
    spec : AugmentSpec, optional
    seed : int
        Initial random state.

    Returns
    -------
    monai.transforms.Compose
        Maps a tensor ``(1, *spatial_size)`` to a tensor of the same shape.
    """
    spec = spec or AugmentSpec()
    spatial_size, axes = _checked_geometry(spatial_dims, spatial_size, spec)
    sigma = tuple(float(s) for s in spec.blur_sigma)
    blur_kw = {k: sigma for k in ("sigma_x", "sigma_y", "sigma_z")[:spatial_dims]}
    ts = [RandFlip(prob=spec.flip_prob, spatial_axis=a) for a in axes]
    ts += [
        RandAffine(
            prob=spec.affine_prob,
            scale_range=[spec.scale] * spatial_dims,
            translate_range=[spec.translate * s for s in spatial_size],
            mode="bilinear",
            padding_mode="zeros",
            cache_grid=True,
            spatial_size=spatial_size,
        ),
        RandGaussianNoise(prob=spec.noise_prob, mean=0.0, std=spec.noise_std),
        RandGaussianSmooth(prob=spec.blur_prob, **blur_kw),
        RandShiftIntensity(offsets=spec.brightness, prob=spec.intensity_prob),
        RandScaleIntensity(factors=spec.contrast, prob=spec.intensity_prob),
    ]
    comp = Compose(ts)
    comp.set_random_state(seed=int(seed) % (2**32))
    return comp


class BatchAugmenter:
    """Apply a sample-wise MONAI augmentation to every sample of a batch tensor.

    Parameters
    ----------
    spatial_dims : {2, 3}
    spatial_size : sequence of int
    spec : AugmentSpec, optional
    seed : int

    Notes
    -----
    ``__call__`` takes ``(B, 1, *spatial)`` float32 and returns a new tensor of the same shape; the input is
    not modified. MONAI meta-data tracking is switched off inside the call (plain tensors come back).
    """

    def __init__(self, spatial_dims: int, spatial_size, *, spec: AugmentSpec | None = None, seed: int = 0):
        self.spatial_dims = spatial_dims
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.transform = build_augmentation(spatial_dims, self.spatial_size, spec=spec, seed=seed)

    def reseed(self, seed: int) -> None:
        """Reset every transform's random state from ``seed``."""
        self.transform.set_random_state(seed=int(seed) % (2**32))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != self.spatial_dims + 2 or tuple(batch.shape[2:]) != self.spatial_size:
            raise ParameterError(
                f"BatchAugmenter: got batch shape {tuple(batch.shape)}, expected "
                f"(B, C, {', '.join(map(str, self.spatial_size))})."
            )
        track = get_track_meta()
        set_track_meta(False)
        try:
            out = [torch.as_tensor(self.transform(x), dtype=torch.float32) for x in batch]
        finally:
            set_track_meta(track)
        return torch.stack(out)


def _epoch_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (SeedSequence; stable across platforms)."""
    return int(np.random.SeedSequence([int(p) % (2**32) for p in parts]).generate_state(1)[0])
