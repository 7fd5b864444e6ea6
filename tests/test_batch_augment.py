"""Batched device-side augmentation (her2lib.batch_augment) against independent references.

References and tolerances:
* scaling + translation: ``scipy.ndimage.affine_transform(order=1, mode="grid-constant")`` in float64, |diff| <= 1e-5
  (float32 grid_sample);
* blur: MONAI's own ``GaussianSmooth`` (what ``RandGaussianSmooth`` applies: erf kernel, zeros outside) per sample
  and axis SD, |diff| <= 1e-5 (float32); the kernels against MONAI's ``gaussian_1d(approx="erf")``, 1e-6 (MONAI
  computes them in float32);
* flips and intensity changes: exact (``torch.flip``, float arithmetic);
* the whole chain against a per-sample NumPy/scipy composition of the same operations, 1e-5;
* noise: its per-sample SD against the drawn SD (a 4-SD tolerance of the sample SD of 32^3 normals);
* the draw frequencies against their probabilities (binomial, 5 SD).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import GaussianSmooth
from scipy import ndimage

from her2lib.batch_augment import AugmentParams, BatchedAugmenter, apply_params, draw_params, gaussian_kernels
from her2lib.errors import ParameterError
from her2lib.transforms import AugmentSpec

OFF = AugmentSpec(flip_prob=0, affine_prob=0, noise_prob=0, blur_prob=0, intensity_prob=0)


def _params(spec: AugmentSpec, b: int, size: tuple[int, ...], seed: int = 0) -> AugmentParams:
    return draw_params(spec, b, size, generator=torch.Generator().manual_seed(seed))


def _scipy_affine(img: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    c = (np.array(img.shape) - 1) / 2
    return ndimage.affine_transform(img, np.diag(scale), offset=c - scale * c + shift, order=1, mode="grid-constant")


@pytest.mark.parametrize("size", [(20, 24), (10, 12, 14)])
def test_affine_matches_scipy(size):
    spec = AugmentSpec(flip_prob=0, affine_prob=1, noise_prob=0, blur_prob=0, intensity_prob=0, scale=0.2)
    x = torch.randn(4, 1, *size, generator=torch.Generator().manual_seed(1))
    p = _params(spec, 4, size)
    y = apply_params(x, p)
    assert (p.scale - 1).abs().max() > 0.01 and p.shift.abs().max() > 0.5  # the draws do move the image
    for b in range(4):
        ref = _scipy_affine(x[b, 0].double().numpy(), p.scale[b].numpy(), p.shift[b].numpy())
        np.testing.assert_allclose(y[b, 0].numpy(), ref, atol=1e-5)


def test_kernels_equal_monais():
    sigma = torch.tensor([0.1, 0.25, 0.6, 1.0, 1.7])
    k = gaussian_kernels(sigma)
    big = (k.shape[1] - 1) // 2
    for i, s in enumerate(sigma.tolist()):
        ref = gaussian_1d(torch.tensor(s), truncated=4.0, approx="erf").double()
        pad = big - (len(ref) - 1) // 2
        np.testing.assert_allclose(k[i].numpy(), F.pad(ref, (pad, pad)).numpy(), atol=1e-6)
    assert k[1, big] < 0.96  # sigma 0.25 still blurs (0.954 in the centre; a sampled kernel would put 0.9987)


def _monai_blur(img: np.ndarray, sigma) -> np.ndarray:
    return GaussianSmooth(sigma=[float(v) for v in sigma])(torch.tensor(img[None].copy(), dtype=torch.float32))[
        0
    ].numpy()


@pytest.mark.parametrize("size", [(20, 24), (10, 12, 14)])
def test_blur_matches_monai(size):
    spec = AugmentSpec(flip_prob=0, affine_prob=0, noise_prob=0, blur_prob=1, intensity_prob=0, blur_sigma=(0.25, 1.5))
    x = torch.randn(3, 1, *size, generator=torch.Generator().manual_seed(2))
    p = _params(spec, 3, size, seed=5)
    y = apply_params(x, p)
    for b in range(3):
        np.testing.assert_allclose(y[b, 0].numpy(), _monai_blur(x[b, 0].numpy(), p.sigma[b]), atol=1e-5)


def _reference_chain(x: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Every operation but noise, sample by sample, in the module's order, with NumPy/scipy (blur: MONAI)."""
    out = []
    for b in range(x.shape[0]):
        img = x[b, 0].astype(np.float64)
        for j, a in enumerate(p.flip_axes):
            if p.flip[b, j]:
                img = np.flip(img, axis=a)
        if p.affine[b]:
            img = _scipy_affine(img, p.scale[b].numpy(), p.shift[b].numpy())
        if p.blur[b]:
            img = _monai_blur(img, p.sigma[b]).astype(np.float64)
        if p.bright[b]:
            img = img + float(p.offset[b])
        if p.contrast[b]:
            img = img * float(p.factor[b])
        out.append(img[None])
    return np.stack(out)


@pytest.mark.parametrize("size", [(16, 18), (8, 10, 12)])
def test_chain_matches_per_sample_reference(size):
    spec = AugmentSpec(flip_axes=tuple(range(len(size))), noise_prob=0)  # the paper's probabilities, every axis
    x = torch.randn(24, 1, *size, generator=torch.Generator().manual_seed(3))
    p = _params(spec, 24, size, seed=7)
    assert p.flip.any() and p.affine.any() and p.blur.any() and p.bright.any() and p.contrast.any()
    assert not p.affine.all()  # a mix of transformed and untouched samples
    y = apply_params(x, p)
    np.testing.assert_allclose(y.numpy(), _reference_chain(x.numpy(), p), atol=1e-5)


def test_nothing_drawn_is_identity_and_input_untouched():
    x = torch.randn(5, 1, 6, 7, 8)
    keep = x.clone()
    y = apply_params(x, _params(OFF, 5, (6, 7, 8)))
    assert torch.equal(y, x) and torch.equal(x, keep)
    y = apply_params(x, _params(AugmentSpec(), 5, (6, 7, 8)))
    assert not torch.equal(y, x) and torch.equal(x, keep)


def test_noise_sd_is_the_drawn_one():
    spec = AugmentSpec(flip_prob=0, affine_prob=0, noise_prob=1, blur_prob=0, intensity_prob=0, noise_std=0.5)
    x = torch.zeros(6, 1, 32, 32, 32)
    p = _params(spec, 6, (32, 32, 32), seed=11)
    y = apply_params(x, p)
    n = 32**3
    for b in range(6):
        sd = float(y[b].std())
        assert abs(sd - float(p.noise_std[b])) <= 4 * float(p.noise_std[b]) / np.sqrt(2 * n) + 1e-6
    assert torch.equal(apply_params(x, p), y)  # the field is a function of the drawn seed


def test_draws_fixed_in_number_and_frequencies():
    """Whatever comes out, a batch takes the same number of draws: the generator ends in the same state for
    probabilities 0 and 1; and the frequencies are the spec's."""
    g0, g1 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    draw_params(OFF, 9, (5, 6, 7), generator=g0)
    draw_params(
        AugmentSpec(flip_prob=1, affine_prob=1, noise_prob=1, blur_prob=1, intensity_prob=1), 9, (5, 6, 7), generator=g1
    )
    assert torch.equal(g0.get_state(), g1.get_state())
    spec = AugmentSpec()
    n = 20000
    p = _params(spec, n, (10, 10))
    for got, prob in [
        (p.flip.float().mean(), spec.flip_prob),
        (p.affine.float().mean(), spec.affine_prob),
        (p.noise.float().mean(), spec.noise_prob),
        (p.blur.float().mean(), spec.blur_prob),
        (p.bright.float().mean(), spec.intensity_prob),
        (p.contrast.float().mean(), spec.intensity_prob),
    ]:
        assert abs(float(got) - prob) <= 5 * np.sqrt(prob * (1 - prob) / n)
    assert (p.scale - 1).abs().max() <= spec.scale and (p.scale - 1).abs().max() > 0.99 * spec.scale
    assert p.shift.abs().max() <= spec.translate * 10 and p.noise_std.max() <= spec.noise_std
    assert p.sigma.min() >= spec.blur_sigma[0] and p.sigma.max() <= spec.blur_sigma[1]
    assert (p.factor - 1).abs().max() <= spec.contrast and p.offset.abs().max() <= spec.brightness


def test_augmenter_reseed_reproduces_and_validates():
    aug = BatchedAugmenter(3, (8, 8, 8), seed=3)
    x = torch.randn(4, 1, 8, 8, 8)
    first = [aug(x), aug(x)]
    assert not torch.equal(first[0], first[1])  # the stream moves on between batches
    aug.reseed(3)
    assert torch.equal(aug(x), first[0]) and torch.equal(aug(x), first[1])
    with pytest.raises(ParameterError, match="expected"):
        aug(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ParameterError, match="flip_axes"):
        BatchedAugmenter(2, (8, 8), spec=AugmentSpec(flip_axes=(2,)))
    with pytest.raises(ParameterError, match="spatial_dims"):
        BatchedAugmenter(4, (8, 8, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_without_noise():  # pragma: no cover - GPU machines only
    spec = AugmentSpec(flip_axes=(0, 1, 2), noise_prob=0)
    x = torch.randn(8, 1, 12, 12, 12)
    p = _params(spec, 8, (12, 12, 12), seed=1)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN convolutions default to TF32
        np.testing.assert_allclose(apply_params(x.cuda(), p).cpu().numpy(), apply_params(x, p).numpy(), atol=1e-5)
