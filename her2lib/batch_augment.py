"""The paper's training augmentation as batched torch operations on the training device.

:mod:`her2lib.transforms` applies MONAI's array transforms sample by sample on the CPU. At the paper's sizes that
feeds a 2-core CPU's model step, not a GPU's: a 96^3 volume costs milliseconds per transform, and a GPU step of the
3D ResNet18 takes milliseconds for a whole batch of 16. Here the same augmentations (same :class:`AugmentSpec`,
same order, same distributions as the MONAI path) run on a whole batch at once, on whatever device holds it:

1. flip along each axis of ``flip_axes`` (probability ``flip_prob`` per axis);
2. scaling + translation (``affine_prob``): zoom factor ``1 + U(-scale, scale)`` per axis and shift
   ``U(-translate, translate) * side`` voxels per axis, about the image centre, bilinear, zeros outside;
3. additive Gaussian noise (``noise_prob``) with a per-sample SD drawn from ``U(0, noise_std)`` (MONAI's
   ``sample_std``);
4. Gaussian blur (``blur_prob``), one SD per axis from ``blur_sigma``, MONAI's kernel (the Gaussian integrated over
   each voxel, ``approx="erf"``, truncated at 4 SD), zeros outside;
5. brightness: ``+ U(-brightness, brightness)`` (``intensity_prob``);
6. contrast: ``* (1 + U(-contrast, contrast))`` (``intensity_prob``).

Determinism contract (the same as the MONAI path's): every random parameter of a batch is drawn on the CPU from a
``torch.Generator`` that :meth:`BatchedAugmenter.reseed` resets, a fixed number of draws per batch whatever comes
out, so a batch's parameters depend only on the seed and the batch's position in the epoch; they are the same on
every device. The noise field is drawn on the batch's device from a seed drawn the same way: identical on one
device type, but the CPU's and CUDA's generators give different fields (so CPU and GPU runs differ in the noise,
as they do in the kernels' rounding).

:func:`draw_params` (pure) and :func:`apply_params` (pure) do the work; :class:`BatchedAugmenter` is the thin
stateful wrapper the training loop calls, with the same interface as :class:`her2lib.transforms.BatchAugmenter`.

Science layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .errors import ParameterError
from .transforms import AugmentSpec, _checked_geometry

__all__ = ["AugmentParams", "draw_params", "apply_params", "BatchedAugmenter", "gaussian_kernels"]

#: Gaussian kernels are truncated at this many SDs (MONAI ``GaussianFilter(truncated=4.0)``)
TRUNCATE = 4.0


@dataclass
class AugmentParams:
    """The random parameters of one batch of ``B`` samples in ``D`` spatial dimensions (CPU tensors).

    Attributes
    ----------
    flip : bool (B, n_flip_axes)
        Flip sample b along ``flip_axes[j]``.
    flip_axes : tuple of int
        Spatial axes (0 = first spatial axis).
    affine : bool (B,)
        Apply the scaling + translation.
    scale : float (B, D)
        Sampling-grid scale per axis: output voxel at offset ``u`` from the centre reads the input at
        ``scale * u + shift`` (MONAI's grid convention; > 1 zooms out).
    shift : float (B, D)
        Translation in voxels.
    noise : bool (B,)
    noise_std : float (B,)
    noise_seed : int
        Seed of the noise field's generator on the batch's device.
    blur : bool (B,)
    sigma : float (B, D)
        Blur SD per axis, in voxels.
    bright : bool (B,)
    offset : float (B,)
    contrast : bool (B,)
    factor : float (B,)
        Multiplier ``1 + U(-contrast, contrast)``.
    """

    flip: torch.Tensor
    flip_axes: tuple[int, ...]
    affine: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    noise: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: int
    blur: torch.Tensor
    sigma: torch.Tensor
    bright: torch.Tensor
    offset: torch.Tensor
    contrast: torch.Tensor
    factor: torch.Tensor

    def subset(self, keep: torch.Tensor) -> AugmentParams:
        """The parameters of the samples ``keep`` (a bool or index tensor over the batch)."""
        kw = {
            f.name: (
                getattr(self, f.name)[keep]
                if isinstance(getattr(self, f.name), torch.Tensor)
                else getattr(self, f.name)
            )
            for f in fields(self)
        }
        return AugmentParams(**kw)


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def draw_params(
    spec: AugmentSpec, batch_size: int, spatial_size: tuple[int, ...], *, generator: torch.Generator
) -> AugmentParams:
    """Draw one batch's parameters from ``generator`` (CPU), always the same number of draws for a given
    ``batch_size`` and number of dimensions, whatever the outcomes.

    Parameters
    ----------
    spec : AugmentSpec
    batch_size : int
    spatial_size : tuple of int
        ``(H, W)`` or ``(D, H, W)``: sets the translation range in voxels.
    generator : torch.Generator
        A CPU generator; advanced by the call.
    """
    b, nd = int(batch_size), len(spatial_size)
    axes = tuple(spec.flip_axes) if spec.flip_axes is not None else (nd - 1,)
    g = generator
    flip = torch.rand((b, len(axes)), generator=g, dtype=torch.float64) < spec.flip_prob
    affine = torch.rand(b, generator=g, dtype=torch.float64) < spec.affine_prob
    scale = 1.0 + _uniform(g, (b, nd), -spec.scale, spec.scale)
    side = torch.tensor([float(s) for s in spatial_size], dtype=torch.float64)
    shift = _uniform(g, (b, nd), -spec.translate, spec.translate) * side
    noise = torch.rand(b, generator=g, dtype=torch.float64) < spec.noise_prob
    noise_std = _uniform(g, (b,), 0.0, spec.noise_std)
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=g).item())
    blur = torch.rand(b, generator=g, dtype=torch.float64) < spec.blur_prob
    sigma = _uniform(g, (b, nd), float(spec.blur_sigma[0]), float(spec.blur_sigma[1]))
    bright = torch.rand(b, generator=g, dtype=torch.float64) < spec.intensity_prob
    offset = _uniform(g, (b,), -spec.brightness, spec.brightness)
    contrast = torch.rand(b, generator=g, dtype=torch.float64) < spec.intensity_prob
    factor = 1.0 + _uniform(g, (b,), -spec.contrast, spec.contrast)
    return AugmentParams(
        flip, axes, affine, scale, shift, noise, noise_std, noise_seed, blur, sigma, bright, offset, contrast, factor
    )


# ----------------------------------------------------------------------------------------------- the operations
def _flip(x: torch.Tensor, flip: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    for j, a in enumerate(axes):
        if bool(flip[:, j].any()):  # decided on the CPU mask: no device synchronisation
            sel = flip[:, j].to(x.device)
            x = torch.where(sel.view(-1, *[1] * (x.ndim - 1)), x.flip(2 + a), x)
    return x


def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scale + translate each sample of ``x (n, C, *S)`` about its centre (bilinear, zeros outside)."""
    n, spatial = x.shape[0], x.shape[2:]
    nd = len(spatial)
    side = torch.tensor([float(s) for s in spatial], dtype=torch.float64)
    # normalised coordinates (align_corners=False): u_norm = 2 u / side, with u the offset from the centre in voxels
    theta = torch.zeros((n, nd, nd + 1), dtype=torch.float64)
    rev = list(range(nd))[::-1]  # grid_sample's coordinates run (x, y[, z]) = the spatial axes reversed
    for row, axis in enumerate(rev):
        theta[:, row, row] = scale[:, axis]
        theta[:, row, nd] = 2.0 * shift[:, axis] / side[axis]
    grid = F.affine_grid(theta.to(x.device, torch.float32), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_kernels(sigma: torch.Tensor, *, truncate: float = TRUNCATE) -> torch.Tensor:
    """MONAI's 1-D Gaussian kernels (``gaussian_1d(approx="erf")``, what ``RandGaussianSmooth`` uses), one per SD,
    on a common support.

    Entry ``k`` of sample ``i``'s kernel is the Gaussian's mass over ``[k - 1/2, k + 1/2]``,
    ``(erf((k + 1/2) / (sqrt(2) sigma_i)) - erf((k - 1/2) / (sqrt(2) sigma_i))) / 2``, for ``|k|`` up to MONAI's
    radius ``int(max(truncate * sigma_i, 0.5) + 0.5)`` and 0 beyond it (MONAI does not renormalise the truncated
    kernel). Padding every kernel with zeros to the largest radius ``R`` leaves the filter unchanged.

    Parameters
    ----------
    sigma : torch.Tensor
        float (n,), in voxels, > 0.

    Returns
    -------
    torch.Tensor
        float64 (n, 2R + 1).
    """
    sigma = sigma.to(torch.float64)
    radius = (torch.clamp(truncate * sigma, min=0.5) + 0.5).floor()
    big = int(radius.max().item()) if len(sigma) else 0
    k = torch.arange(-big, big + 1, dtype=torch.float64)[None, :]
    t = 1.0 / (math.sqrt(2.0) * sigma[:, None])
    w = 0.5 * (torch.erf(t * (k + 0.5)) - torch.erf(t * (k - 0.5)))
    return w.clamp(min=0) * (k.abs() <= radius[:, None])


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each sample of ``x (n, 1, *S)`` with its own SD per axis (zeros outside)."""
    n, c, *spatial = x.shape
    nd = len(spatial)
    conv = F.conv2d if nd == 2 else F.conv3d
    y = x.reshape(1, n * c, *spatial)
    for axis in range(nd):
        ker = gaussian_kernels(sigma[:, axis]).to(x.device, torch.float32)  # (n, 2R+1)
        r = (ker.shape[1] - 1) // 2
        shape = [1] * nd
        shape[axis] = ker.shape[1]
        weight = ker.repeat_interleave(c, dim=0).view(n * c, 1, *shape)
        pad = [0] * nd
        pad[axis] = r
        y = conv(y, weight, padding=tuple(pad), groups=n * c)
    return y.view(n, c, *spatial)


def _noise(x: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    field = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return x + field * std.to(x.device, x.dtype).view(-1, *[1] * (x.ndim - 1))


def _on_subset(x: torch.Tensor, sel: torch.Tensor, fn) -> torch.Tensor:
    """``x`` with the samples ``sel`` replaced by ``fn(x[sel], index)``."""
    if not bool(sel.any()):
        return x
    idx = sel.nonzero().flatten()
    out = x.clone()
    out[idx.to(x.device)] = fn(x[idx.to(x.device)], idx)
    return out


def apply_params(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Augment a batch with given parameters (pure: ``x`` is not modified).

    Parameters
    ----------
    x : torch.Tensor
        float32 ``(B, C, *spatial)`` on any device.
    params : AugmentParams
        From :func:`draw_params` for ``B`` samples.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device.
    """
    p = params
    x = _flip(x, p.flip, p.flip_axes)
    x = _on_subset(x, p.affine, lambda xs, i: _affine(xs, p.scale[i], p.shift[i]))
    x = _on_subset(x, p.noise, lambda xs, i: _noise(xs, p.noise_std[i], p.noise_seed))
    x = _on_subset(x, p.blur, lambda xs, i: _blur(xs, p.sigma[i]))
    view = (-1, *[1] * (x.ndim - 1))
    dev, dt = x.device, x.dtype
    x = torch.where(p.bright.to(dev).view(view), x + p.offset.to(dev, dt).view(view), x)
    return torch.where(p.contrast.to(dev).view(view), x * p.factor.to(dev, dt).view(view), x)


class BatchedAugmenter:
    """The paper's augmentation for whole batches on their device (interface of
    :class:`her2lib.transforms.BatchAugmenter`).

    Parameters
    ----------
    spatial_dims : {2, 3}
    spatial_size : sequence of int
    spec : AugmentSpec, optional
    seed : int

    Notes
    -----
    ``__call__`` takes ``(B, C, *spatial)`` float32 on any device and returns a new tensor there; the input is not
    modified. Parameters are drawn on the CPU (see the module's determinism contract).
    """

    def __init__(self, spatial_dims: int, spatial_size, *, spec: AugmentSpec | None = None, seed: int = 0):
        self.spec = spec or AugmentSpec()
        self.spatial_dims = spatial_dims
        self.spatial_size, _ = _checked_geometry(spatial_dims, spatial_size, self.spec)
        if not 0 < self.spec.blur_sigma[0] <= self.spec.blur_sigma[1]:
            raise ParameterError(f"blur_sigma={self.spec.blur_sigma}: need 0 < low <= high.")
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the parameter generator from ``seed``."""
        self.generator.manual_seed(int(seed) % (2**63))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != self.spatial_dims + 2 or tuple(batch.shape[2:]) != self.spatial_size:
            raise ParameterError(
                f"BatchedAugmenter: got batch shape {tuple(batch.shape)}, expected "
                f"(B, C, {', '.join(map(str, self.spatial_size))})."
            )
        params = draw_params(self.spec, batch.shape[0], self.spatial_size, generator=self.generator)
        return apply_params(batch, params)
