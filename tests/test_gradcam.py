"""Tests for her2lib.gradcam: 2-D (vs the grad-cam package), 3-D, single-logit, sign, energy fraction, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from her2lib.errors import ParameterError
from her2lib.gradcam import (energy_fraction, find_layer, grad_cam, lesion_centre, mask_fraction,
                             plot_gradcam_mri, plot_gradcam_us, select_cases)


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
    with pytest.raises(ParameterError, match="close matches"):
        grad_cam(m, _two_region_image(), "fet")
    with pytest.raises(ParameterError, match="NaN"):
        grad_cam(m, np.full((1, 8, 8), np.nan, np.float32), "feat")
    assert find_layer(m, "feat") is m.feat


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
            np.unravel_index(ref.argmax(), ref.shape), abs=3)
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
    test = pd.DataFrame({"patient_id": [f"P{i}" for i in range(8)], "her2": [1, 1, 1, 0, 0, 0, 1, 0],
                         "p_her2": [0.9, 0.7, 0.8, 0.1, 0.2, 0.6, 0.3, 0.05]})
    sel = select_cases(test, threshold=0.5)
    assert sel["outcome"].tolist() == ["TP", "FP", "TN", "FN"]
    assert sel["patient_id"].tolist() == ["P2", "P5", "P3", "P6"]  # TP median 0.8 -> P2; TN median 0.1 -> P3


def test_figures_written(tmp_path):
    rng = np.random.default_rng(0)
    mask2 = np.zeros((32, 32), np.uint8)
    mask2[10:20, 10:20] = 1
    mask3 = np.zeros((16, 32, 32), np.uint8)
    mask3[5:10, 10:20, 10:20] = 1
    cases2 = [dict(image=rng.normal(size=(32, 32)), cam=rng.uniform(size=(32, 32)), mask=mask2, patient_id="P1",
                   her2=1, p_her2=0.8, outcome="TP")]
    cases3 = [dict(image=rng.normal(size=(16, 32, 32)), cam=rng.uniform(size=(16, 32, 32)), mask=mask3,
                   patient_id="P2", her2=0, p_her2=0.2, outcome="TN")]
    import matplotlib.pyplot as plt

    plt.close(plot_gradcam_us(cases2, tmp_path / "us.png"))
    plt.close(plot_gradcam_mri(cases3, tmp_path / "mri.png"))
    assert (tmp_path / "us.png").stat().st_size > 1000
    assert (tmp_path / "mri.png").stat().st_size > 1000
    with pytest.raises(ParameterError, match="no cases"):
        plot_gradcam_us([])


# --------------------------------------------------------------------------------------- cohort level (07)
def _tiny_run(root):
    """A tiny run folder: synthetic cohort, ROI settings, one random-weight fold model per modality, predictions.

    The checkpoint layout (``config.json`` with ``{"config": ...}``, ``fold{k}.pt`` with ``model`` and
    ``complete``) is the one :func:`her2lib.train.load_fold_model` reads.
    """
    from dataclasses import asdict

    from her2lib import nb, synth
    from her2lib.data import load_cohort
    from her2lib.io import write_json
    from her2lib.models import DLMRIConfig, DLUSConfig, build_model
    from her2lib.train import assign_folds

    man = synth.make_cohort(root / "cohort", n_patients=20, seed=0, us_shape=(64, 72), mri_shape=(12, 32, 32))
    run = nb.RunDirs.from_out_dir(root / "out", root / "cohort")
    write_json(run.params / "02_preprocess.json", {"us_size": 64, "us_margin_px": 8, "mri_size": 32,
                                                   "mri_margin": 4, "mri_margin_unit": "px"})
    torch.manual_seed(0)
    for key, cfg in (("dl_us", DLUSConfig(variant="convnextv2_atto", image_size=64)),
                     ("dl_mri", DLMRIConfig(image_size=32))):
        d = run.models / key
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", {"config": asdict(cfg)})
        torch.save({"model": build_model(cfg).state_dict(), "complete": True}, d / "fold0.pt")
    df = load_cohort(man, check_files="exists")
    folds = assign_folds(df, n_folds=4, seed=0)
    rng = np.random.default_rng(0)
    for mod in ("us", "mri"):
        p = 1 / (1 + np.exp(-(1.5 * (2 * df.her2 - 1) + rng.normal(size=len(df)))))
        pr = pd.DataFrame({"patient_id": df.patient_id, "split": df.split, "fold": folds.to_numpy(),
                           "her2": df.her2, "p_her2": p})
        pr[pr.split == "train"].to_csv(run.predictions / f"{mod}_oof.csv", index=False)
        pr[pr.split == "test"].to_csv(run.predictions / f"{mod}_test.csv", index=False)
    return run


def test_run_gradcam_end_to_end(tmp_path):
    pytest.importorskip("timm")
    from her2lib.gradcam import run_gradcam

    run = _tiny_run(tmp_path)
    res = run_gradcam(run, folds=1, max_patients=2, progress=False, dpi=80)
    for f in ("gradcam_us.png", "gradcam_mri.png"):
        assert (run.figures / f).stat().st_size > 1000
    energy = pd.read_csv(run.tables / "gradcam_energy.csv")
    assert set(energy.model) == {"dl_us", "dl_mri"}
    assert ((energy.lesion_fraction > 0) & (energy.lesion_fraction < 1)).all()
    assert energy.energy_in_lesion.dropna().between(0, 1).all()
    assert set(res.cases.outcome) <= {"TP", "FP", "TN", "FN"}
    assert (run.tables / "gradcam_energy_summary.csv").is_file()
    with pytest.raises(ParameterError, match="unknown model"):
        run_gradcam(run, models=("dl_ct",))
