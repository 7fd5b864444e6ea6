"""Tests for her2lib.gradcam: 2-D (vs the grad-cam package), 3-D, single-logit, sign, energy fraction, the
localisation test against the centre prior, the way back to the source image; Figure 4
(her2lib.figures.gradcam) and the 07_gradcam stage (her2lib.stages.gradcam)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from her2lib.errors import ParameterError
from her2lib.figures.gradcam import plot_gradcam_mri, plot_gradcam_us
from her2lib.gradcam import (
    cohort_cams,
    energy_fraction,
    find_layer,
    grad_cam,
    grad_cams,
    lesion_centre,
    mask_fraction,
    select_cases,
)


# ------------------------------------------------------------------------------------------------ toy models
class MeanHead(nn.Module):
    """Feature layer = identity on the image; logit 1 = mean(A), logit 0 = -mean(A) (optionally one logit)."""

    def __init__(self, n_out: int = 2, dims: int = 2):
        super().__init__()
        self.feat = nn.Identity()
        self.n_out = n_out
        self.dims = dims

    def forward(self, x):
        a = self.feat(x * 1.0)
        s = a.mean(dim=tuple(range(1, a.ndim)))
        if self.n_out == 1:
            return s[:, None]
        return torch.stack([-s, s], dim=1)


def _two_region_image(h=32, w=32):
    x = np.zeros((1, h, w), np.float32)
    x[0, 4:12, 4:12] = 1.0  # raises the HER2+ logit
    x[0, 20:28, 20:28] = -1.0  # lowers it
    return x


def test_sign_positive_class_highlights_region_that_raises_logit():
    x = _two_region_image()
    res = grad_cam(MeanHead(), x, "feat", class_index=1)
    assert res.cam.shape == (32, 32)
    assert res.cam[4:12, 4:12].min() == pytest.approx(1.0)
    assert res.cam[20:28, 20:28].max() == pytest.approx(0.0)
    assert res.cam.max() == pytest.approx(1.0)
    # the negative class gets the opposite region (a sign error or abs() would not)
    res0 = grad_cam(MeanHead(), x, "feat", class_index=0)
    assert res0.cam[20:28, 20:28].min() == pytest.approx(1.0)
    assert res0.cam[4:12, 4:12].max() == pytest.approx(0.0)


def test_single_logit_model_and_class_index_errors():
    x = _two_region_image()
    res = grad_cam(MeanHead(n_out=1), x, "feat", class_index=None)
    assert res.class_index == 0
    assert res.cam[4:12, 4:12].min() == pytest.approx(1.0)
    assert res.probability == pytest.approx(float(torch.sigmoid(torch.tensor(res.logit))))
    with pytest.raises(ParameterError, match="out of range"):
        grad_cam(MeanHead(n_out=1), x, "feat", class_index=1)


def test_all_zero_map_stays_zero():
    x = -np.abs(_two_region_image())  # nothing supports the positive class
    res = grad_cam(MeanHead(), x, "feat", class_index=1)
    assert res.max_raw == 0.0
    assert not res.cam.any()


def test_input_and_layer_validation():
    m = MeanHead()
    with pytest.raises(ParameterError, match="unbatched channel-first"):
        grad_cam(m, np.zeros((32, 32), np.float32), "feat")
    with pytest.raises(ParameterError, match="no layer 'fet'. Did you mean 'feat'\\? Layers at that level: \\['feat"):
        grad_cam(m, _two_region_image(), "fet")
    with pytest.raises(ParameterError, match="NaN"):
        grad_cam(m, np.full((1, 8, 8), np.nan, np.float32), "feat")
    assert find_layer(m, "feat") is m.feat


def test_find_layer_lists_the_layers_at_the_level_of_a_wrong_name():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)), nn.Flatten())
    assert find_layer(net, "0.2") is net[0][2]
    with pytest.raises(ParameterError, match="no layer '0.7'.* Layers at that level: \\['0.0', '0.1', '0.2'\\]"):
        find_layer(net, "0.7")
    with pytest.raises(ParameterError, match="Layers at that level: \\['0', '1'\\]; see model.named_modules"):
        find_layer(net, "head.fc")


@pytest.fixture(scope="module")
def convnext():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("convnextv2_atto", pretrained=False, in_chans=1, num_classes=2)
    with torch.no_grad():  # a non-trivial head so the maps are not degenerate
        m.head.fc.weight.normal_(0, 1.0)
    return m.eval()


def test_2d_matches_grad_cam_package(convnext):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    g = torch.Generator().manual_seed(1)
    checked = 0
    for _ in range(3):
        x = torch.randn(1, 128, 128, generator=g)
        ours = grad_cam(convnext, x, convnext.stages[-1], class_index=1)
        if ours.max_raw == 0:
            continue
        with pgc.GradCAM(model=convnext, target_layers=[convnext.stages[-1]]) as cam:
            ref = cam(input_tensor=x[None], targets=[ClassifierOutputTarget(1)])[0]
        assert ref.shape == ours.cam.shape == (128, 128)
        # the package normalises before resizing (OpenCV), we after (torch, align_corners=False): same map
        # up to interpolation at the borders
        assert np.corrcoef(ours.cam.ravel(), ref.ravel())[0, 1] > 0.99
        assert np.abs(ours.cam - ref).max() < 0.08
        assert np.unravel_index(ours.cam.argmax(), ours.cam.shape) == pytest.approx(
            np.unravel_index(ref.argmax(), ref.shape), abs=3
        )
        checked += 1
    assert checked >= 2
    assert not convnext.training


def test_frozen_model_and_mode_restored(convnext):
    for p in convnext.parameters():
        p.requires_grad_(False)
    convnext.train()
    try:
        res = grad_cam(convnext, torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(2)), "stages.3")
        assert res.cam.shape == (64, 64)
        assert convnext.training  # restored
    finally:
        convnext.eval()
        for p in convnext.parameters():
            p.requires_grad_(True)


def test_3d_monai_resnet_matches_manual_autograd():
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    m = nets.resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()  # in-place ReLUs inside
    x = torch.randn(1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    res = grad_cam(m, x, "layer4", class_index=1)
    assert res.cam.shape == (32, 32, 32)
    assert res.cam.dtype == np.float32
    assert 0.0 <= res.cam.min() and res.cam.max() == pytest.approx(1.0)
    # independent computation with torch.autograd.grad on the same layers
    with torch.enable_grad():
        h = x[None]
        h = m.maxpool(m.act(m.bn1(m.conv1(h))))
        a = m.layer4(m.layer3(m.layer2(m.layer1(h))))
        logits = m.fc(torch.flatten(m.avgpool(a), 1))
        (grad,) = torch.autograd.grad(logits[0, 1], a)
    cam = torch.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1, keepdim=True))
    np.testing.assert_allclose(res.cam_lowres, cam[0, 0].detach().numpy(), rtol=1e-4, atol=1e-6)
    up = torch.nn.functional.interpolate(cam, size=(32, 32, 32), mode="trilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(res.cam, (up / up.max()).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert res.logit == pytest.approx(float(logits[0, 1].detach()), rel=1e-5)


def test_3d_sign_toy():
    x = np.zeros((1, 8, 16, 16), np.float32)
    x[0, 2:5, 3:7, 3:7] = 2.0
    res = grad_cam(MeanHead(dims=3), x, "feat", class_index=1)
    assert res.cam.shape == (8, 16, 16)
    assert res.cam[2:5, 3:7, 3:7].min() == pytest.approx(1.0)
    assert res.cam.sum() == pytest.approx(3 * 4 * 4)


# ------------------------------------------------------------------------------------------- energy fraction
def test_energy_fraction_values():
    mask = np.zeros((10, 10), np.uint8)
    mask[:5, :4] = 1  # 20 % of the pixels
    assert mask_fraction(mask) == pytest.approx(0.2)
    assert energy_fraction(np.ones((10, 10)), mask) == pytest.approx(0.2)  # uniform map = area fraction
    assert energy_fraction(mask.astype(float), mask) == pytest.approx(1.0)
    cam = np.zeros((10, 10))
    cam[0, 0], cam[9, 9] = 3.0, 1.0
    assert energy_fraction(cam, mask) == pytest.approx(0.75)
    with pytest.warns(RuntimeWarning, match="all zero"):
        assert np.isnan(energy_fraction(np.zeros((10, 10)), mask))
    with pytest.raises(ParameterError, match="same shape"):
        energy_fraction(np.ones((10, 9)), mask)
    with pytest.raises(ParameterError, match="non-negative"):
        energy_fraction(-np.ones((10, 10)), mask)


def test_lesion_centre_and_case_selection():
    m = np.zeros((5, 9, 9), np.uint8)
    m[1:4, 2:5, 6:9] = 1
    assert lesion_centre(m) == (2, 3, 7)
    assert lesion_centre(np.zeros((4, 6))) == (2, 3)
    test = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(8)],
            "her2": [1, 1, 1, 0, 0, 0, 1, 0],
            "p_her2": [0.9, 0.7, 0.8, 0.1, 0.2, 0.6, 0.3, 0.05],
        }
    )
    sel = select_cases(test, threshold=0.5)
    assert sel["outcome"].tolist() == ["TP", "FP", "TN", "FN"]
    assert sel["patient_id"].tolist() == ["P2", "P5", "P3", "P6"]  # TP median 0.8 -> P2; TN median 0.1 -> P3


# ------------------------------------------------------------------- localisation against the centre prior
def _lesion_2d(rng, shape=(120, 150)):
    """Irregular lesion (1-3 overlapping ellipses) of varied size anywhere in the image, some at the border."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros(shape, bool)
    cy, cx, r = rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(5, 18)
    for k in range(rng.integers(1, 4)):
        dy, dx = rng.normal(0, 0.5 * r, 2) if k else (0.0, 0.0)
        a, b, th = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
        y, x = yy - cy - dy, xx - cx - dx
        m |= ((y * np.cos(th) + x * np.sin(th)) / a) ** 2 + ((x * np.cos(th) - y * np.sin(th)) / b) ** 2 <= 1
    return m


def _lesion_3d(rng, shape=(20, 48, 48)):
    """Irregular lesion (1-2 ellipsoids, flatter in z as with thick MRI slices) of varied size and position."""
    d, h, w = shape
    zz, yy, xx = np.mgrid[:d, :h, :w]
    m = np.zeros(shape, bool)
    c, r = np.array([rng.uniform(4, d - 4), rng.uniform(8, h - 8), rng.uniform(8, w - 8)]), rng.uniform(3, 9)
    for k in range(rng.integers(1, 3)):
        o = c + (rng.normal(0, 0.4 * r, 3) if k else 0.0)
        rad = r * np.array([rng.uniform(0.3, 0.6), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)])
        m |= ((zz - o[0]) / rad[0]) ** 2 + ((yy - o[1]) / rad[1]) ** 2 + ((xx - o[2]) / rad[2]) ** 2 <= 1
    return m


@pytest.fixture(scope="module")
def roi_masks():
    """60 patients per modality, ROI-frame lesion masks made by the real ROI code (dilate, box, resize), so the
    lesion sits near but not exactly at the ROI centre, with varied size, and some boxes clipped at the border."""
    from her2lib import roi

    rng = np.random.default_rng(0)
    us = [roi.us_roi(rng.normal(size=(120, 150)), _lesion_2d(rng), margin_px=12, size=48) for _ in range(60)]
    mri = [roi.mri_roi(rng.normal(size=(20, 48, 48)), _lesion_3d(rng), margin=6, size=16) for _ in range(60)]
    out = {"us": np.stack([r.mask[0] for r in us]), "mri": np.stack([r.mask[0] for r in mri])}
    # realism of the fixture itself: lesion fractions vary, centroids are off-centre, some boxes are clipped
    for m in out.values():
        frac = m.reshape(len(m), -1).mean(1)
        assert frac.max() > 2 * frac.min()
        off = np.array([np.argwhere(x).mean(0) for x in m]) - (np.array(m.shape[1:]) - 1) / 2
        assert np.abs(off).max() > 1.0
    assert any(r.box[0][0] == 0 or r.box[1][0] == 0 or r.box[0][1] == 120 or r.box[1][1] == 150 for r in us)
    return out


def _centre_map(grid, roi_shape):
    """Image-blind centre map: centre cells of an 8x8 grid (2-D) / the centre voxel of a 3x3x3 layer4-sized grid
    (3-D), upsampled to the ROI as Grad-CAM upsamples its low-resolution map."""
    g = np.zeros(grid, np.float32)
    g[tuple(slice(s // 2 - 1, s // 2 + 1) if s % 2 == 0 else slice(s // 2, s // 2 + 1) for s in grid)] = 1.0
    mode = "bilinear" if len(grid) == 2 else "trilinear"
    up = torch.nn.functional.interpolate(
        torch.from_numpy(g)[None, None], size=roi_shape, mode=mode, align_corners=False
    )[0, 0].numpy()
    return up / up.max()


_GRIDS = {"us": (8, 8), "mri": (3, 3, 3)}


@pytest.mark.parametrize("mod", ["us", "mri"])
def test_image_blind_centre_map_beats_uniform_but_not_the_centre_prior(roi_masks, mod):
    from scipy.stats import wilcoxon

    from her2lib.gradcam import energy_table, localisation_test

    masks = roi_masks[mod]
    cams = np.broadcast_to(_centre_map(_GRIDS[mod], masks.shape[1:]), masks.shape)
    # the naive comparison with a uniform map is fooled: enrichment ~5-6, Wilcoxon P ~1e-11
    tab = energy_table([f"P{i}" for i in range(len(masks))], cams, masks, model=mod)
    assert tab["naive_enrichment_vs_uniform"].median() > 3
    assert wilcoxon(tab["energy_own_mask"] - tab["lesion_fraction"]).pvalue < 1e-6
    # the centre-prior null is not: own mask = other patients' masks on average, P not significant
    res = localisation_test(cams, masks, n_permutations=999, seed=0)
    assert res.pvalue > 0.05
    assert res.enrichment == pytest.approx(1.0, abs=1e-9)
    assert tab["enrichment_over_centre_prior"].median() == pytest.approx(1.0, abs=0.35)
    assert res.n_patients == 60 and res.n_permutations == 999


@pytest.mark.parametrize("mod", ["us", "mri"])
def test_noisy_image_blind_maps_keep_the_nominal_level(roi_masks, mod):
    """Centre map plus patient-specific noise unrelated to the lesion: P is (close to) uniform under H0."""
    from her2lib.gradcam import localisation_test

    masks = roi_masks[mod]
    centre = _centre_map(_GRIDS[mod], masks.shape[1:])
    ps = []
    for s in range(40):
        noise = np.random.default_rng(100 + s).uniform(0, 0.3, masks.shape).astype(np.float32)
        ps.append(localisation_test(centre + noise, masks, n_permutations=99, seed=s).pvalue)
    assert np.mean(np.array(ps) < 0.05) <= 0.15
    assert 0.25 < np.median(ps) < 0.75


@pytest.mark.parametrize("mod", ["us", "mri"])
def test_map_following_its_own_lesion_is_significant(roi_masks, mod):
    from scipy import ndimage

    from her2lib.gradcam import localisation_test

    masks = roi_masks[mod]
    rng = np.random.default_rng(1)
    sigma = 2.0 if mod == "us" else 1.0
    cams = np.stack([ndimage.gaussian_filter(m.astype(float), sigma) for m in masks])  # blurred own mask
    cams = cams + rng.uniform(0, 0.3, cams.shape)  # plus noise
    res = localisation_test(cams, masks, n_permutations=999, seed=0)
    assert res.pvalue <= 0.002
    assert res.enrichment > 1.1
    assert np.mean(res.energy_own > res.energy_others) > 0.6


def test_localisation_test_hand_values_and_determinism():
    from her2lib.gradcam import LocalisationTestResult, energy_matrix, localisation_test

    masks = np.zeros((3, 1, 4), np.uint8)
    masks[0, 0, 0] = masks[1, 0, 1] = masks[2, 0, 2:] = 1
    cams = np.array([[[2, 1, 1, 0]], [[0, 3, 1, 0]], [[0, 0, 1, 1]]], float)
    e = energy_matrix(cams, masks[:, None])  # (n, 1, ...) masks accepted
    np.testing.assert_allclose(e, [[0.5, 0.25, 0.25], [0, 0.75, 0.25], [0, 0, 1]])
    res = localisation_test(cams, masks, n_permutations=500, seed=3)
    np.testing.assert_allclose(res.energy_own, [0.5, 0.75, 1.0])
    np.testing.assert_allclose(res.energy_others, [0.25, 0.125, 0.0])
    assert res.statistic == pytest.approx(0.75)
    assert res.others_mean == pytest.approx(0.125)
    assert res.enrichment == pytest.approx(6.0)
    # 3! = 6 <= B: all permutations enumerated; T = 0.75 (identity), 1/6 and 1/12 (3-cycles), 5/12, 1/3 and
    # 1/4 (transpositions): only the identity reaches 0.75, exact P = 1/6 (never below 1/n!)
    assert res.exact and res.n_permutations == 6
    assert res.pvalue == pytest.approx(1 / 6)
    # B < n!: Monte Carlo, P = (1 + #{identity drawn}) / (1 + B) >= 1 / (1 + B)
    mc = localisation_test(cams, masks, n_permutations=5, seed=3)
    assert not mc.exact and mc.n_permutations == 5 and mc.pvalue in {k / 6 for k in range(1, 7)}
    assert res.seed == 3 and "centre prior" in res.method and res.alternative == "greater"
    row = res.to_row()
    assert set(row) == {
        "mean_energy_own",
        "mean_energy_others",
        "enrichment_over_centre_prior",
        "permutation_p",
        "n_patients",
        "n_zero_maps",
        "n_permutations",
        "exact",
        "seed",
        "alternative",
        "method",
    }
    assert isinstance(res, LocalisationTestResult)
    # deterministic for a seed (and a Generator with the same seed gives the same null)
    rng = np.random.default_rng(5)
    cams2 = rng.uniform(size=(12, 8, 8))
    masks2 = rng.uniform(size=(12, 8, 8)) < 0.3
    a = localisation_test(cams2, masks2, n_permutations=199, seed=7)
    b = localisation_test(cams2, masks2, n_permutations=199, seed=7)
    c = localisation_test(cams2, masks2, n_permutations=199, seed=np.random.default_rng(7))
    assert a == b and a.pvalue == c.pvalue and a.statistic == c.statistic
    assert localisation_test(cams2, masks2, n_permutations=199, seed=8).statistic == a.statistic


def test_localisation_test_zero_maps_small_n_and_errors():
    from her2lib.gradcam import energy_matrix, localisation_test

    masks = np.zeros((4, 6, 6), bool)
    for i in range(4):
        masks[i, i : i + 2, 1:3] = True
    cams = masks.astype(float)
    cams[2] = 0  # no positive evidence
    res = localisation_test(cams, masks, n_permutations=99, seed=0)
    assert res.n_patients == 3 and res.n_zero_maps == 1 and np.isfinite(res.pvalue)
    assert np.isnan(energy_matrix(cams, masks)[2]).all()
    assert np.isnan(localisation_test(cams[:2], masks[:2], n_permutations=9).pvalue)  # < 3 maps
    with pytest.raises(ParameterError, match="differ"):
        localisation_test(cams, masks[:, :5])
    with pytest.raises(ParameterError, match="empty"):
        localisation_test(cams, np.zeros_like(masks))
    with pytest.raises(ParameterError, match="non-negative"):
        localisation_test(-cams, masks)
    with pytest.raises(ParameterError, match="n_permutations"):
        localisation_test(cams, masks, n_permutations=0)


def test_energy_table_and_summary_columns():
    from her2lib.gradcam import ENERGY_COLUMNS, energy_summary, energy_table, localisation_test

    masks = np.zeros((4, 6, 6), np.uint8)
    for i in range(4):
        masks[i, i : i + 2, 1:3] = 1
    cams = np.clip(masks.astype(float) + 0.1, 0, 1)
    cams[3] = 0
    tab = energy_table(["A", "B", "C", "D"], cams, masks[:, None], model="dl_us")
    assert tuple(tab.columns) == ENERGY_COLUMNS
    assert tab["energy_own_mask"].iloc[:3].gt(tab["energy_other_masks_mean"].iloc[:3]).all()
    assert tab.iloc[3][["energy_own_mask", "energy_other_masks_mean"]].isna().all()
    np.testing.assert_allclose(tab["lesion_fraction"], 4 / 36)
    np.testing.assert_allclose(tab["naive_enrichment_vs_uniform"], tab["energy_own_mask"] / (4 / 36))
    np.testing.assert_allclose(
        tab["enrichment_over_centre_prior"], tab["energy_own_mask"] / tab["energy_other_masks_mean"]
    )
    test = localisation_test(cams, masks, n_permutations=99, seed=0)
    summ = energy_summary(tab, {"dl_us": test})
    row = summ.iloc[0]
    assert row["n"] == 3 and row["n_zero_maps"] == 1
    assert row["mean_energy_own"] == pytest.approx(tab["energy_own_mask"].mean())
    assert row["mean_energy_others"] == pytest.approx(tab["energy_other_masks_mean"].mean())
    assert row["permutation_p"] == test.pvalue and "centre prior" in row["method"]
    assert "wilcoxon_p" not in summ.columns and "naive_enrichment_vs_uniform_median" in summ.columns
    assert np.isnan(energy_summary(tab).iloc[0]["permutation_p"])  # no test given
    with pytest.raises(ParameterError, match="same maps"):
        energy_summary(
            tab, {"dl_us": localisation_test(np.r_[cams, cams[:1]], np.r_[masks, masks[:1]], n_permutations=9)}
        )


# ------------------------------------------------------------------------------------- back to the source image
def test_cam_to_source_same_size_is_a_paste_and_zero_outside():
    from her2lib.gradcam import cam_to_source

    cam = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = cam_to_source(cam, ((2, 5), (10, 14)), (8, 16))
    assert out.shape == (8, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out[2:5, 10:14], cam)
    out[2:5, 10:14] = 0
    assert not out.any()


def test_cam_to_source_inverts_the_roi_resize_of_a_linear_ramp():
    """A map that is linear in source coordinates stays linear through the ROI resize: the way back must give
    the source values exactly (away from the box edges, where the resize clamps)."""
    from her2lib.gradcam import cam_to_source

    box = ((5, 35), (3, 73))  # 30 x 70 box -> 16 x 16 ROI and back
    yy, xx = np.mgrid[:40, :80].astype(np.float32)
    f = 0.01 * yy + 0.003 * xx
    crop = torch.from_numpy(f[5:35, 3:73].copy())[None, None]
    roi_map = torch.nn.functional.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    back = cam_to_source(roi_map.numpy(), box, f.shape)
    np.testing.assert_allclose(back[8:32, 7:69], f[8:32, 7:69], atol=1e-5)
    assert not back[:5].any() and not back[:, 73:].any()


def _blob(shape, centre, sigma):
    grids = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2)).astype(np.float32)


def _centroid(w):
    idx = np.indices(w.shape).reshape(w.ndim, -1)
    return (idx * w.ravel()).sum(1) / w.sum()


def test_cam_to_source_blob_at_the_roi_lesion_lands_on_the_source_lesion_2d():
    """US: an elongated lesion at the image's left border (the box is clipped at x = 0), ROI 32 x 32 from a
    non-square box; a ROI-frame blob at the ROI lesion centre maps onto the source lesion's centroid."""
    from her2lib import roi
    from her2lib.gradcam import cam_to_source

    src = np.zeros((90, 120), bool)
    yy, xx = np.mgrid[:90, :120]
    src[((yy - 40) / 6) ** 2 + ((xx - 9) / 14) ** 2 <= 1] = True
    r = roi.us_roi(np.random.default_rng(0).normal(size=src.shape), src, margin_px=15, size=32)
    (y0, y1), (x0, x1) = r.box
    assert x0 == 0 and (y1 - y0) != (x1 - x0)  # clipped and anisotropic
    cam = _blob((32, 32), _centroid(r.mask[0].astype(float)), sigma=2.0)
    back = cam_to_source(cam, r.box, src.shape)
    assert back.shape == src.shape
    assert not back[:y0].any() and not back[y1:].any() and not back[:, x1:].any()
    np.testing.assert_allclose(_centroid(back), _centroid(src.astype(float)), atol=1.0)
    assert np.unravel_index(back.argmax(), back.shape) == pytest.approx(_centroid(src.astype(float)), abs=1.5)


def test_cam_to_source_blob_at_the_roi_lesion_lands_on_the_source_lesion_3d():
    """MRI: the ROI's z extent is the lesion's own 5 slices stretched to 16 (the box is 3x finer in z than in
    the ROI); the blob maps back onto the source lesion within a voxel on every axis."""
    from her2lib import roi
    from her2lib.gradcam import cam_to_source

    zz, yy, xx = np.mgrid[:24, :48, :48]
    src = ((zz - 14) / 2.2) ** 2 + ((yy - 30) / 6) ** 2 + ((xx - 20) / 4) ** 2 <= 1
    r = roi.mri_roi(np.random.default_rng(0).normal(size=src.shape), src, margin=8, size=16)
    (z0, z1), _, _ = r.box
    assert z1 - z0 == 5
    cam = _blob((16, 16, 16), _centroid(r.mask[0].astype(float)), sigma=1.5)
    back = cam_to_source(cam, r.box, src.shape)
    assert back.shape == src.shape and not back[:z0].any() and not back[z1:].any()
    np.testing.assert_allclose(_centroid(back), _centroid(src.astype(float)), atol=1.0)


def test_cam_to_source_box_past_the_border_is_clipped_and_errors():
    from her2lib.gradcam import cam_to_source

    cam = np.random.default_rng(0).uniform(size=(10, 10)).astype(np.float32)
    big = cam_to_source(cam, ((5, 25), (5, 25)), (30, 30))  # the same box on a larger canvas, shifted by 10
    part = cam_to_source(cam, ((-5, 15), (-5, 15)), (12, 12))  # a padded crop reaching past the top-left border
    np.testing.assert_allclose(part, big[10:22, 10:22])
    with pytest.raises(ParameterError, match="same number of axes"):
        cam_to_source(cam, ((0, 10),), (10, 10))
    with pytest.raises(ParameterError, match="does not overlap"):
        cam_to_source(cam, ((20, 30), (0, 10)), (10, 10))
    with pytest.raises(ParameterError, match="empty"):
        cam_to_source(cam, ((3, 3), (0, 10)), (10, 10))


def test_largest_lesion_slice():
    from her2lib.gradcam import largest_lesion_slice

    m = np.zeros((6, 5, 5), bool)
    m[1, :2, :2] = True  # area 4
    m[3, :3, :3] = True  # area 9: largest
    m[4, :2, :2] = True
    assert largest_lesion_slice(m) == 3
    m[2, :3, :3] = True  # tie 2 vs 3: nearer the centre of mass
    zc = (np.arange(6) * m.sum((1, 2))).sum() / m.sum()
    assert largest_lesion_slice(m) == (2 if abs(2 - zc) <= abs(3 - zc) else 3)
    assert largest_lesion_slice(np.zeros((7, 3, 3))) == 3
    with pytest.raises(ParameterError, match="D, H, W"):
        largest_lesion_slice(np.zeros((3, 3)))


# ------------------------------------------------------------------------------------------------- Figure 4
def _fig_texts(fig):
    from matplotlib.text import Text

    return " ".join(" ".join(t.get_text().split()) for t in fig.findobj(match=Text))  # wrapped lines joined


def test_figures_in_source_geometry(tmp_path):
    import matplotlib.pyplot as plt

    from her2lib.gradcam import cam_to_source

    rng = np.random.default_rng(0)
    mask2 = np.zeros((60, 80), np.uint8)
    mask2[20:30, 30:42] = 1
    box2 = ((10, 40), (20, 52))
    cam2 = cam_to_source(rng.uniform(size=(16, 16)), box2, mask2.shape)
    mask3 = np.zeros((12, 32, 32), np.uint8)
    mask3[5:8, 10:20, 10:20] = 1
    box3 = ((5, 8), (4, 26), (4, 26))
    cam3 = cam_to_source(rng.uniform(size=(8, 8, 8)), box3, mask3.shape)
    cases2 = [
        dict(
            image=rng.normal(size=mask2.shape),
            cam=cam2,
            mask=mask2,
            box=box2,
            patient_id="P1",
            her2=1,
            p_her2=0.8,
            outcome="TP",
        ),
        dict(
            image=rng.normal(size=mask2.shape),
            cam=cam2,
            mask=mask2,
            box=box2,
            patient_id="P3",
            her2=0,
            p_her2=0.1,
            outcome="TN",
        ),
    ]
    cases3 = [
        dict(
            image=rng.normal(size=mask3.shape),
            cam=cam3,
            mask=mask3,
            box=box3,
            spacing=(3.0, 1.4, 1.4),
            patient_id="P2",
            her2=0,
            p_her2=0.2,
            outcome="TN",
        )
    ]
    f2 = plot_gradcam_us(cases2, tmp_path / "us.png", layer="stages.3", note="Cases chosen at x.")
    f3 = plot_gradcam_mri(cases3, tmp_path / "mri.png", layer="layer4")
    for f in (f2, f3):
        text = _fig_texts(f)
        assert "Grad-CAM (max-normalised)" in text
        assert "not the Grad-CAM of the averaged prediction" in text  # what the fold-ensemble map is
        assert "back onto the image" in text
        assert "HER2+" in text or "HER2\u2212" in text
    assert "stages.3" in _fig_texts(f2) and "Cases chosen at x." in _fig_texts(f2)
    assert "P1: HER2+, p(HER2+) = 0.80" in _fig_texts(f2)
    assert "largest lesion area" in _fig_texts(f3) and "layer4" in _fig_texts(f3)
    plt.close(f2)
    plt.close(f3)
    assert (tmp_path / "us.png").stat().st_size > 1000
    assert (tmp_path / "mri.png").stat().st_size > 1000
    with pytest.raises(ParameterError, match="no cases"):
        plot_gradcam_us([])
    bad = dict(cases2[0], cam=rng.uniform(size=(16, 16)))  # a ROI-frame map: refused, with the fix
    with pytest.raises(ParameterError, match="cam_to_source"):
        plot_gradcam_us([bad])


# --------------------------------------------------------------------------------------- cohort level (07)
def _tiny_run(root):
    """A tiny run folder: synthetic cohort, ROI settings, one random-weight fold model per modality, predictions.

    The checkpoint layout (``config.json`` with ``{"config": ...}``, ``fold{k}.pt`` with ``model`` and
    ``complete``) is the one :func:`her2lib.train.load_fold_model` reads.
    """
    from dataclasses import asdict

    from her2lib import stages, synth
    from her2lib.data import load_cohort
    from her2lib.io import write_json
    from her2lib.models import DLMRIConfig, DLUSConfig, build_model
    from her2lib.train import assign_folds

    man = synth.make_cohort(root / "cohort", n_patients=20, seed=0, us_shape=(64, 72), mri_shape=(12, 32, 32))
    run = stages.RunDirs.from_out_dir(root / "out", root / "cohort")
    write_json(
        run.params / "02_preprocess.json",
        {"us_size": 64, "us_margin_px": 8, "mri_size": 32, "mri_margin": 4, "mri_margin_unit": "px"},
    )
    torch.manual_seed(0)
    for key, cfg in (
        ("dl_us", DLUSConfig(variant="convnextv2_atto", image_size=64)),
        ("dl_mri", DLMRIConfig(image_size=32)),
    ):
        d = run.models / key
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", {"config": asdict(cfg)})
        torch.save({"model": build_model(cfg).state_dict(), "complete": True}, d / "fold0.pt")
    df = load_cohort(man, check_files="exists")
    folds = assign_folds(df, n_folds=4, seed=0)
    rng = np.random.default_rng(0)
    for mod in ("us", "mri"):
        p = 1 / (1 + np.exp(-(1.5 * (2 * df.her2 - 1) + rng.normal(size=len(df)))))
        pr = pd.DataFrame(
            {"patient_id": df.patient_id, "split": df.split, "fold": folds.to_numpy(), "her2": df.her2, "p_her2": p}
        )
        pr[pr.split == "train"].to_csv(run.predictions / f"{mod}_oof.csv", index=False)
        pr[pr.split == "test"].to_csv(run.predictions / f"{mod}_test.csv", index=False)
    return run


def test_run_gradcam_end_to_end(tmp_path):
    pytest.importorskip("timm")
    from her2lib.stages.gradcam import run_gradcam

    run = _tiny_run(tmp_path)
    res = run_gradcam(run, folds=1, max_patients=2, progress=False, dpi=80)
    for f in ("gradcam_us.png", "gradcam_mri.png"):
        assert (run.figures / f).stat().st_size > 1000
    energy = pd.read_csv(run.tables / "gradcam_energy.csv")
    from her2lib.gradcam import ENERGY_COLUMNS

    assert tuple(energy.columns) == ENERGY_COLUMNS
    assert set(energy.model) == {"dl_us", "dl_mri"}
    assert ((energy.lesion_fraction > 0) & (energy.lesion_fraction < 1)).all()
    assert energy.energy_own_mask.dropna().between(0, 1).all()
    assert energy.energy_other_masks_mean.dropna().between(0, 1).all()
    assert set(res.cases.outcome) <= {"TP", "FP", "TN", "FN"}
    summary = pd.read_csv(run.tables / "gradcam_energy_summary.csv")
    assert list(summary.model) == ["dl_us", "dl_mri"]
    assert summary["method"].str.contains("centre prior").all()
    assert set(res.tests) == {"dl_us", "dl_mri"}
    for key, t in res.tests.items():
        row = summary.set_index("model").loc[key]
        assert row["n"] == t.n_patients and row["n_permutations"] == t.n_permutations and row["seed"] == 0
        assert row["permutation_p"] == pytest.approx(t.pvalue) if t.n_patients >= 3 else np.isnan(row["permutation_p"])
        assert t.exact == (t.n_patients >= 3 and math.factorial(t.n_patients) <= 9999)
    with pytest.raises(ParameterError, match="models='dl_ct' is not supported; choose one of \\['dl_us', 'dl_mri'\\]"):
        run_gradcam(run, models=("dl_ct",))


# ------------------------------------------------------------------------------------------ batched Grad-CAM
@pytest.mark.parametrize("dims", [2, 3])
def test_batched_grad_cams_equal_the_one_input_maps(dims):
    """grad_cams (one forward/backward per batch) against grad_cam per input: the paper's two backbones, eval mode
    (BatchNorm on running statistics in the 3-D ResNet, LayerNorm in ConvNeXt). Tolerance 1e-5: float32 batched
    kernels may round differently."""
    torch.manual_seed(0)
    if dims == 2:
        timm = pytest.importorskip("timm")
        m, layer = timm.create_model("convnextv2_atto", pretrained=False, num_classes=2), "stages.3"
        x = np.random.default_rng(1).normal(size=(5, 3, 64, 64)).astype(np.float32)
    else:
        nets = pytest.importorskip("monai.networks.nets")
        m, layer = nets.resnet18(spatial_dims=3, n_input_channels=1, num_classes=2), "layer4"
        x = np.random.default_rng(1).normal(size=(5, 1, 24, 24, 24)).astype(np.float32)
    m.train()  # grad_cams must switch to eval itself (and restore)
    batched = grad_cams(m, x, layer, class_index=1, batch_size=3)  # two batches, the second of two
    assert m.training and batched.shape == (5, *x.shape[2:]) and batched.dtype == np.float32
    for i in range(len(x)):
        one = grad_cam(m, x[i], layer, class_index=1).cam
        np.testing.assert_allclose(batched[i], one, atol=1e-5)
    ensemble = cohort_cams([m, m], x, layer, progress=False)  # two identical folds: the mean is each map
    np.testing.assert_allclose(ensemble, batched, atol=1e-6)
