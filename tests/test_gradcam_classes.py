"""Grad-CAM for a chosen class (issue 13): the explained logit is the target class's index (checked against a
brute-force Grad-CAM of a 2-layer conv net), target_class validation, the one-vs-rest view the Figure-4 case
selection reads, the figures' class titles, and 07_gradcam's stage on a fabricated low-vs-zero run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from her2lib.contract import TASKS
from her2lib.errors import DataError, ParameterError
from her2lib.gradcam import cohort_cams, explained_class, grad_cam, one_vs_rest, select_cases
from her2lib.stats import youden_threshold


# ------------------------------------------------------------------------------ brute-force Grad-CAM reference
class TwoConv(nn.Module):
    """conv -> ReLU -> conv (the explained layer, ``features.2``) -> ReLU -> global mean -> linear (n_out logits)."""

    def __init__(self, n_out: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
        self.fc = nn.Linear(5, n_out)
        with torch.no_grad():
            self.fc.weight.normal_(0, 1.0)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(a).mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.features(x))


def _bilinear_np(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with the half-pixel (``align_corners=False``) convention, written out in numpy."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(np.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            lam = src - i0
            w[i, i0] += 1 - lam
            w[i, i1] += lam
        return w

    return weights(a.shape[0], size[0]) @ a @ weights(a.shape[1], size[1]).T


def _brute_force_cam(net: TwoConv, x: np.ndarray, j: int, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM from its definition, in float64: every ``d y_j / d A_k(s)`` by a central finite difference of the
    head (no autograd), ``alpha_k`` = their spatial mean, ``ReLU(sum_k alpha_k A_k)``; then the numpy bilinear
    upsampling and division by the maximum. Returns (low-resolution map, normalised map)."""
    net64 = TwoConv(net.fc.out_features)
    net64.load_state_dict(net.state_dict())
    net64 = net64.double().eval()
    with torch.no_grad():
        a = net64.features(torch.as_tensor(x, dtype=torch.float64)[None])
        grad = torch.zeros_like(a)
        for idx in np.ndindex(*a.shape[1:]):
            up, down = a.clone(), a.clone()
            up[(0, *idx)] += eps
            down[(0, *idx)] -= eps
            grad[(0, *idx)] = (net64.head(up)[0, j] - net64.head(down)[0, j]) / (2 * eps)
    alpha = grad[0].mean(dim=(1, 2))
    low = np.maximum((alpha[:, None, None] * a[0]).sum(0).numpy(), 0.0)
    up = _bilinear_np(low, x.shape[1:])
    return low, up / up.max() if up.max() > 0 else up


@pytest.fixture(scope="module")
def net_and_images():
    net = TwoConv(3, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4, 1, 16, 16, generator=g).numpy()
    return net, images


def test_class_index_is_honoured_against_brute_force(net_and_images):
    """For each class j the map equals the brute-force Grad-CAM of logit j (low-res map rtol 1e-4: float32 model
    against a float64 finite-difference reference; upsampled map atol 1e-4), and the classes' maps differ."""
    net, images = net_and_images
    checked = 0
    for x in images:
        maps = {}
        for j in range(3):
            res = grad_cam(net, x, "features.2", class_index=j)
            low, full = _brute_force_cam(net, x, j)
            assert res.class_index == j and res.cam_lowres.shape == low.shape == (8, 8)
            np.testing.assert_allclose(res.cam_lowres, low, rtol=1e-4, atol=1e-5 * max(low.max(), 1e-12))
            np.testing.assert_allclose(res.cam, full, atol=1e-4)
            assert res.probability == pytest.approx(
                float(torch.softmax(net(torch.as_tensor(x)[None]).detach(), 1)[0, j])
            )
            maps[j] = res.cam
        nonzero = [j for j in maps if maps[j].max() > 0]
        for i in nonzero:
            for j in nonzero:
                if i < j:
                    assert np.abs(maps[i] - maps[j]).max() > 0.05, (i, j)  # a different logit, a different map
                    checked += 1
    assert checked >= 4  # enough non-degenerate class pairs for the comparison to mean something


def test_cohort_cams_passes_class_index(net_and_images):
    net, images = net_and_images
    for j in range(3):
        ens = cohort_cams([net], images, "features.2", class_index=j, progress=False)
        for i, x in enumerate(images):
            np.testing.assert_allclose(ens[i], grad_cam(net, x, "features.2", class_index=j).cam, atol=1e-6)
    a = cohort_cams([net], images, "features.2", class_index=0, progress=False)
    b = cohort_cams([net], images, "features.2", class_index=2, progress=False)
    assert not np.allclose(a, b)


# ------------------------------------------------------------------------------------------ target_class
@pytest.mark.parametrize(
    "task, target, expect",
    [
        ("binary", "", ("positive", 1)),
        ("binary", "negative", ("negative", 0)),
        ("three-class", "", ("positive", 2)),
        ("three-class", "zero", ("zero", 0)),
        ("three-class", "low", ("low", 1)),
        ("low-vs-zero", "", ("low", 1)),
        ("low-vs-zero", "zero", ("zero", 0)),
    ],
)
def test_explained_class(task, target, expect):
    assert explained_class(task, target) == expect
    assert TASKS[task].classes[expect[1]] == expect[0]


def test_target_class_validation_names_the_tasks_classes():
    with pytest.raises(
        ParameterError,
        match=r"target_class='positive' is not supported; choose one of \['zero', 'low'\].*task='low-vs-zero'",
    ):
        explained_class("low-vs-zero", "positive")
    with pytest.raises(ParameterError, match=r"choose one of \['zero', 'low', 'positive'\]. Did you mean 'low'\?"):
        explained_class("three-class", "lwo")
    with pytest.raises(ParameterError, match=r"choose one of \['negative', 'positive'\]"):
        explained_class("binary", "low")
    with pytest.raises(ParameterError, match="task='three_class' is not supported"):
        explained_class("three_class")


def test_run_gradcam_rejects_a_bad_target_before_reading_anything(tmp_path):
    from her2lib import stages
    from her2lib.stages.gradcam import run_gradcam

    run = stages.RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")  # empty: nothing to read
    with pytest.raises(ParameterError, match=r"target_class='positive'.*\['zero', 'low'\]"):
        run_gradcam(run, task="low-vs-zero", target_class="positive")


# ------------------------------------------------------------------------------------------ one-vs-rest view
def _three_class_predictions(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1, 1, 1], n)
    cls = np.array(["zero", "low", "positive"])[rng.integers(0, 3, n)]
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:02d}" for i in range(n)],
            "her2_class": cls,
            "p_zero": p[:, 0],
            "p_low": p[:, 1],
            "p_positive": p[:, 2],
        }
    )


@pytest.mark.parametrize("target", ["zero", "low", "positive"])
def test_one_vs_rest_view_three_class(target):
    pred = _three_class_predictions()
    view = one_vs_rest(pred, "three-class", target)
    assert list(view.columns) == ["patient_id", "her2", "p_her2", "her2_class"]
    for r, v in zip(pred.itertuples(), view.itertuples()):  # row by row, from the definition
        assert v.patient_id == r.patient_id and v.her2_class == r.her2_class
        assert v.her2 == int(r.her2_class == target)
        assert v.p_her2 == getattr(r, f"p_{target}")
    # the Figure-4 outcomes of that view, brute force: positive = the target class, called at p >= threshold
    thr = youden_threshold(view["her2"], view["p_her2"])
    cases = select_cases(view, thr)
    for c in cases.itertuples():
        row = pred.set_index("patient_id").loc[c.patient_id]
        called, truth = row[f"p_{target}"] >= thr, row["her2_class"] == target
        assert (
            c.outcome
            == {(True, True): "TP", (True, False): "FP", (False, False): "TN", (False, True): "FN"}[
                (bool(called), bool(truth))
            ]
        )


def test_one_vs_rest_view_binary_and_low_vs_zero():
    rng = np.random.default_rng(3)
    binary = pd.DataFrame({"patient_id": list("abcdef"), "her2": [0, 1, 1, 0, 1, 0], "p_her2": rng.uniform(size=6)})
    pos = one_vs_rest(binary, "binary")
    pd.testing.assert_series_equal(pos["her2"], binary["her2"], check_dtype=False)
    assert (pos["p_her2"].to_numpy() == binary["p_her2"].to_numpy()).all()  # the paper's columns, unchanged
    assert pos["her2_class"].tolist() == ["negative", "positive", "positive", "negative", "positive", "negative"]
    neg = one_vs_rest(binary, "binary", "negative")
    assert (neg["her2"] == 1 - binary["her2"]).all() and np.allclose(neg["p_her2"], 1 - binary["p_her2"])
    lvz = pd.DataFrame({"patient_id": ["a", "b", "c"], "her2_class": ["zero", "low", "low"], "p_zero": [0.7, 0.4, 0.1]})
    lvz["p_low"] = 1 - lvz["p_zero"]
    view = one_vs_rest(lvz, "low-vs-zero")  # default target: low
    assert view["her2"].tolist() == [0, 1, 1] and view["p_her2"].tolist() == lvz["p_low"].tolist()
    with pytest.raises(DataError, match="her2_class values outside"):
        one_vs_rest(lvz.assign(her2_class=["zero", "low", "positive"]), "low-vs-zero")


# ------------------------------------------------------------------------------------------------ Figure 4
def test_figure_titles_name_the_target_class(tmp_path):
    import matplotlib.pyplot as plt

    from her2lib.figures.gradcam import plot_gradcam_mri, plot_gradcam_us
    from her2lib.gradcam import cam_to_source

    rng = np.random.default_rng(0)
    mask = np.zeros((60, 80), np.uint8)
    mask[20:30, 30:42] = 1
    box = ((10, 40), (20, 52))
    case = dict(
        image=rng.normal(size=mask.shape),
        mask=mask,
        cam=cam_to_source(rng.uniform(size=(16, 16)), box, mask.shape),
        box=box,
        patient_id="P7",
        her2=1,
        p_her2=0.64,
        outcome="TP",
        true_class="HER2-low",
    )
    fig = plot_gradcam_us([case], tmp_path / "us.png", target="HER2-low", dpi=60)
    from matplotlib.text import Text

    text = " ".join(" ".join(t.get_text().split()) for t in fig.findobj(match=Text))
    plt.close(fig)
    assert "Grad-CAM for the HER2-low logit" in text and "P7: HER2-low p(HER2-low) = 0.64" in text
    assert "positive = HER2-low" in text and "HER2+" not in text and "HER2-positive" not in text
    with pytest.raises(ParameterError, match="true_class"):
        plot_gradcam_us([{k: v for k, v in case.items() if k != "true_class"}], target="HER2-low")
    mask3 = np.zeros((12, 32, 32), np.uint8)
    mask3[5:8, 10:20, 10:20] = 1
    box3 = ((5, 8), (4, 26), (4, 26))
    case3 = dict(
        case,
        image=rng.normal(size=mask3.shape),
        mask=mask3,
        cam=cam_to_source(rng.uniform(size=(8, 8, 8)), box3, mask3.shape),
        box=box3,
        true_class="HER2-zero",
        her2=0,
        outcome="FP",
    )
    fig = plot_gradcam_mri([case3], tmp_path / "mri.png", target="HER2-low", dpi=60)
    text = " ".join(" ".join(t.get_text().split()) for t in fig.findobj(match=Text))
    plt.close(fig)
    assert "DL-MRI Grad-CAM for the HER2-low logit" in text and "P7: HER2-zero p(HER2-low) = 0.64" in text
    with pytest.raises(ParameterError, match="true_class"):
        plot_gradcam_mri([{k: v for k, v in case3.items() if k != "true_class"}], target="HER2-low")


# ------------------------------------------------------------------------------ 07_gradcam on a low-vs-zero run
def _low_vs_zero_run(root):
    """A fabricated low-vs-zero run: a synthetic cohort (40 patients: train 8 zero / 10 low, test 4 / 2), ROI
    settings, one random-weight two-logit fold model per modality (logit 0 = zero, 1 = low) and class-task
    prediction files for the HER2-negative patients."""
    from dataclasses import asdict

    from her2lib import stages, synth
    from her2lib.contract import class_prediction_columns
    from her2lib.data import load_cohort, task_cohort
    from her2lib.io import write_json
    from her2lib.models import DLMRIConfig, DLUSConfig, build_model

    man = synth.make_cohort(root / "cohort", n_patients=40, seed=0, us_shape=(64, 72), mri_shape=(12, 32, 32))
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
    df = task_cohort(load_cohort(man, check_files="exists"), "low-vs-zero")
    rng = np.random.default_rng(0)
    for mod in ("us", "mri"):
        low = 1 / (1 + np.exp(-(1.0 * (2 * (df.her2_class == "low") - 1) + rng.normal(size=len(df)))))
        pr = pd.DataFrame(
            {
                "patient_id": df.patient_id,
                "split": df.split,
                "fold": np.where(df.split == "train", np.arange(len(df)) % 4, -1),
                "her2_class": df.her2_class,
                "p_zero": 1 - low,
                "p_low": low,
            }
        )[list(class_prediction_columns("low-vs-zero"))]
        pr[pr.split == "train"].to_csv(run.predictions / f"{mod}_oof.csv", index=False)
        pr[pr.split == "test"].to_csv(run.predictions / f"{mod}_test.csv", index=False)
    return run, df


def test_run_gradcam_low_vs_zero_end_to_end(tmp_path):
    pytest.importorskip("timm")
    from her2lib.stages.gradcam import run_gradcam

    run, cohort = _low_vs_zero_run(tmp_path)
    res = run_gradcam(run, task="low-vs-zero", folds=1, max_patients=3, progress=False, dpi=60)
    cases = pd.read_csv(run.tables / "gradcam_cases.csv", dtype={"patient_id": str})
    assert list(cases.columns) == [
        "outcome",
        "patient_id",
        "her2_class",
        "target_class",
        "is_target",
        "p_target",
        "model",
        "threshold",
    ]
    assert (cases["target_class"] == "low").all() and set(cases["her2_class"]) <= {"zero", "low"}
    assert (cases["is_target"] == (cases["her2_class"] == "low").astype(int)).all()
    for model, prefix in (("dl_us", "us"), ("dl_mri", "mri")):
        oof = pd.read_csv(run.predictions / f"{prefix}_oof.csv")
        test = pd.read_csv(run.predictions / f"{prefix}_test.csv", dtype={"patient_id": str}).set_index("patient_id")
        thr = youden_threshold((oof["her2_class"] == "low").astype(int), oof["p_low"])  # OOF only, one-vs-rest
        sub = cases[cases.model == model]
        assert np.allclose(sub["threshold"], thr)
        assert np.allclose(sub["p_target"], test.loc[sub["patient_id"], "p_low"])
        for c in sub.itertuples():
            assert c.outcome[0] == ("T" if (c.p_target >= thr) == (c.her2_class == "low") else "F")
    negatives = set(cohort.loc[cohort.split == "test", "patient_id"])
    assert set(res.energy["patient_id"]) <= negatives  # HER2-positive patients are not part of this task
    for f in ("gradcam_us.png", "gradcam_mri.png"):
        assert (run.figures / f).stat().st_size > 1000
    # the other class's logit gives other maps (same patients, same models)
    zero = run_gradcam(run, task="low-vs-zero", target_class="zero", folds=1, max_patients=3, progress=False, dpi=60)
    e_low = res.energy.set_index(["model", "patient_id"])["energy_own_mask"]
    e_zero = zero.energy.set_index(["model", "patient_id"])["energy_own_mask"]
    both = e_low.index.intersection(e_zero.index)  # the first 3 test patients, and shared Figure-4 cases
    assert len(both) >= 6
    assert not np.allclose(e_low[both].to_numpy(), e_zero[both].to_numpy(), equal_nan=True)
    assert (zero.cases["target_class"] == "zero").all()
