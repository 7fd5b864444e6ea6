"""her2lib.cpu_kernels: the GEMM weight gradient of small 3D convolutions and the sum-of-squares GRN norm.

References: brute force (a loop over the kernel taps in float64, 1e-12), finite differences
(``torch.autograd.gradcheck`` in float64), and the stock kernels they replace (torch's ``nn.Conv3d`` / oneDNN and
timm's ``GlobalResponseNorm``: the forward pass and the convolution's input gradient bit-identical, the weight and
GRN gradients to 1e-5 relative in float32, the summation order being the only difference).
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from timm.layers.grn import GlobalResponseNorm
from torch import nn

from her2lib import cpu_kernels, models
from her2lib.cpu_kernels import (
    FastGlobalResponseNorm,
    SmallVolumeConv3d,
    conv3d_weight_grad,
    use_cpu_kernels,
    uses_gemm,
)
from her2lib.errors import ParameterError


def _brute_weight_grad(x, g, k, stride, padding):
    """dW[o, i, a, b, c] = sum over batch and output voxels of g[n, o, z, y, x] * x_pad[n, i, z*s+a, y*s+b, x*s+c]."""
    pd, ph, pw = padding
    xp = F.pad(x, (pw, pw, ph, ph, pd, pd))
    out = torch.zeros(g.shape[1], x.shape[1], *k, dtype=x.dtype)
    od, oh, ow = g.shape[2:]
    for a, b, c in itertools.product(range(k[0]), range(k[1]), range(k[2])):
        win = xp[
            :,
            :,
            a : a + stride[0] * (od - 1) + 1 : stride[0],
            b : b + stride[1] * (oh - 1) + 1 : stride[1],
            c : c + stride[2] * (ow - 1) + 1 : stride[2],
        ]
        out[:, :, a, b, c] = torch.einsum("nozyx,nizyx->oi", g, win)
    return out


@pytest.mark.parametrize(
    ("shape", "c_out", "k", "stride", "padding"),
    [
        ((2, 3, 1, 1, 1), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1)),  # the 1-voxel layer4 case
        ((3, 2, 2, 2, 2), 5, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
        ((2, 3, 4, 4, 4), 2, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
        ((2, 2, 5, 4, 6), 3, (3, 1, 2), (2, 1, 3), (1, 0, 1)),  # anisotropic kernel, stride, padding
        ((2, 4, 2, 2, 2), 3, (1, 1, 1), (2, 2, 2), (0, 0, 0)),  # 1x1x1 downsample
        ((1, 1, 9, 9, 9), 2, (7, 7, 7), (2, 2, 2), (3, 3, 3)),  # the stem
    ],
)
def test_weight_grad_equals_brute_force_and_torch(shape, c_out, k, stride, padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    w = torch.randn(c_out, shape[1], *k, generator=gen, dtype=torch.float64)
    out = F.conv3d(x, w, None, stride, padding)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = conv3d_weight_grad(x, g, k, stride=stride, padding=padding)
    torch.testing.assert_close(got, _brute_weight_grad(x, g, k, stride, padding), rtol=1e-12, atol=1e-12)
    ref = torch.ops.aten.convolution_backward(
        g, x, w, None, list(stride), list(padding), [1, 1, 1], False, [0, 0, 0], 1, [False, True, False]
    )[1]
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_weight_grad_refuses_a_wrong_output_shape():
    x, g = torch.randn(1, 2, 3, 3, 3), torch.randn(1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match="grad_out spatial shape"):
        conv3d_weight_grad(x, g, (3, 3, 3), padding=(1, 1, 1))


def test_autograd_function_passes_gradcheck():
    """Finite differences (float64) through forward, input gradient and weight gradient of the custom function."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = cpu_kernels._GemmWeightGradConv3d.apply
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, (1, 1, 1), (1, 1, 1)), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, (2, 2, 2), (1, 1, 1)), (x, w))


def _pair(c_in, c_out, k=3, stride=1, padding=1, seed=0):
    torch.manual_seed(seed)
    stock = nn.Conv3d(c_in, c_out, k, stride, padding, bias=False)
    fast = copy.deepcopy(stock)
    fast.__class__ = SmallVolumeConv3d
    return stock, fast


@pytest.mark.parametrize(("c_in", "size", "stride"), [(256, 2, 1), (512, 1, 1), (256, 2, 2), (64, 1, 1)])
def test_small_volume_conv_matches_the_stock_layer(c_in, size, stride):
    stock, fast = _pair(c_in, 32, stride=stride)
    x = torch.randn(4, c_in, size, size, size)
    assert uses_gemm(fast, x)
    outs, grads = [], []
    for layer in (stock, fast):
        xi = x.clone().requires_grad_(True)
        out = layer(xi)
        g = torch.linspace(-1, 1, out.numel()).view_as(out)
        out.backward(g)
        outs.append(out.detach())
        grads.append((xi.grad, layer.weight.grad))
    assert torch.equal(outs[0], outs[1])  # the forward pass is the stock oneDNN call
    assert torch.equal(grads[0][0], grads[1][0])  # so is the input gradient
    scale = grads[0][1].abs().max()
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=0, atol=1e-5 * float(scale))


def test_uses_gemm_only_where_it_was_measured_faster():
    _, big = _pair(256, 8)
    _, small = _pair(128, 8)
    assert uses_gemm(big, torch.randn(2, 256, 2, 2, 2))  # 8 output voxels, 256 channels
    assert not uses_gemm(big, torch.randn(2, 256, 3, 3, 3))  # 27 output voxels: oneDNN's kernel
    assert not uses_gemm(small, torch.randn(2, 128, 2, 2, 2))  # 128 channels at 8 voxels: oneDNN's kernel
    assert uses_gemm(small, torch.randn(2, 128, 1, 1, 1))  # one output voxel: always the GEMM
    assert not uses_gemm(big, torch.randn(2, 256, 2, 2, 2, dtype=torch.float64))
    with torch.no_grad():
        assert not uses_gemm(big, torch.randn(2, 256, 2, 2, 2))
    biased = SmallVolumeConv3d(256, 8, 3, padding=1, bias=True)
    grouped = SmallVolumeConv3d(256, 8, 3, padding=1, bias=False, groups=2)
    assert not uses_gemm(biased, torch.randn(2, 256, 1, 1, 1))
    assert not uses_gemm(grouped, torch.randn(2, 256, 1, 1, 1))


def test_small_volume_conv_takes_the_stock_path_when_the_rule_says_so(monkeypatch):
    """A spy on the GEMM: called for the 1-voxel case, not for a large volume."""
    calls = []
    real = cpu_kernels.conv3d_weight_grad
    monkeypatch.setattr(cpu_kernels, "conv3d_weight_grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, fast = _pair(512, 4)
    fast(torch.randn(2, 512, 1, 1, 1)).sum().backward()
    assert len(calls) == 1
    fast(torch.randn(2, 512, 4, 4, 4)).sum().backward()
    assert len(calls) == 1


def _grn_pair(dim, channels_last, seed=0):
    torch.manual_seed(seed)
    stock = GlobalResponseNorm(dim, channels_last=channels_last)
    with torch.no_grad():
        stock.weight.normal_()
        stock.bias.normal_()
    fast = copy.deepcopy(stock)
    fast.__class__ = FastGlobalResponseNorm
    return stock, fast


@pytest.mark.parametrize("layout", ["nchw", "nchw_channels_last_memory", "nhwc"])
def test_grn_matches_timm(layout):
    stock, fast = _grn_pair(24, channels_last=layout == "nhwc")
    x = torch.randn(3, 24, 5, 5)
    if layout == "nchw_channels_last_memory":  # what ConvNeXt V2 feeds it (timm's LayerNorm2d permutes)
        x = x.to(memory_format=torch.channels_last)
    if layout == "nhwc":
        x = x.permute(0, 2, 3, 1).contiguous()
    if layout == "nhwc":
        x[1, ..., 3] = 0.0  # channel 3 of sample 1 is zero everywhere: its norm is 0
    else:
        x[1, 3] = 0.0
    res = []
    for layer in (stock, fast):
        xi = x.clone().requires_grad_(True)
        out = layer(xi)
        out.backward(torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out))
        res.append((out.detach(), xi.grad, layer.weight.grad, layer.bias.grad))
    for a, b in zip(res[0], res[1]):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_grn_zero_norm_gradient_is_zero_not_nan():
    _, fast = _grn_pair(4, channels_last=False)
    x = torch.zeros(2, 4, 3, 3, requires_grad=True)
    fast(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # d(x + bias + w * x * x_n)/dx with x_n = 0: just the identity


def test_models_are_built_with_the_cpu_kernels_and_keep_their_state_dicts():
    from monai.networks.nets import resnet18

    mri = models.build_dl_mri(models.DLMRIConfig(image_size=32, conv1_t_stride=2))
    convs = [m for m in mri.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is SmallVolumeConv3d for m in convs)
    stock = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    assert list(mri.state_dict()) == list(stock.state_dict())
    us = models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", image_size=64))
    grns = [m for m in us.modules() if isinstance(m, GlobalResponseNorm)]
    assert grns and all(type(m) is FastGlobalResponseNorm for m in grns)
    use_cpu_kernels(us, enabled=False)
    assert all(type(m) is GlobalResponseNorm for m in us.modules() if isinstance(m, GlobalResponseNorm))


@pytest.mark.parametrize("kind", ["mri", "us"])
def test_one_training_step_agrees_with_the_stock_kernels(kind):
    """The default profile's shapes: logits bit-identical, every parameter gradient to 1e-5 of its largest value."""
    torch.manual_seed(0)
    if kind == "mri":
        model = models.build_dl_mri(models.DLMRIConfig(image_size=32, conv1_t_stride=2))
        x = torch.randn(4, 1, 32, 32, 32)
    else:
        model = models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", image_size=96))
        x = torch.randn(4, 1, 96, 96)
    y = torch.tensor([0, 1, 1, 0])
    stock = use_cpu_kernels(copy.deepcopy(model), enabled=False)
    res = []
    for m in (stock, model):
        m.train()
        torch.manual_seed(1)  # stochastic depth
        logits = m(x)
        F.cross_entropy(logits, y).backward()
        res.append((logits.detach(), {n: p.grad for n, p in m.named_parameters()}))
    if kind == "mri":
        assert torch.equal(res[0][0], res[1][0])
    else:  # the GRN's norm is summed in another order
        torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-5, atol=1e-5)
    for name, g in res[0][1].items():
        scale = float(g.abs().max()) or 1.0
        torch.testing.assert_close(res[1][1][name], g, rtol=0, atol=1e-5 * scale, msg=name)


def test_train_config_switch_reaches_the_training_loop_and_the_fingerprint(tmp_path, monkeypatch):
    """``TrainConfig(cpu_kernels=False)`` trains with the stock kernels (a spy on the GEMM sees no call) and is a
    different fold fingerprint; the default (True) is left out of ``to_dict`` so earlier fingerprints stay valid."""
    import numpy as np
    import pandas as pd

    from her2lib import train

    calls = []
    real = cpu_kernels.conv3d_weight_grad
    monkeypatch.setattr(cpu_kernels, "conv3d_weight_grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = models.DLMRIConfig(image_size=16, conv1_t_stride=2)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(8, 1, 16, 16, 16)).astype(np.float32))
    df = pd.DataFrame({"patient_id": [f"P{i}" for i in range(8)], "split": "train", "her2": np.arange(8) % 2})
    results = {}
    for flag in (True, False):
        tc = train.TrainConfig(lr=1e-3, weight_decay=0.01, batch_size=4, epochs=1, cpu_kernels=flag)
        assert ("cpu_kernels" in tc.to_dict()) is (not flag)
        calls.clear()
        res = train.fit_fold(
            cfg, tc, x[:6], df.iloc[:6], x[6:], df.iloc[6:], fold=0, out_dir=tmp_path / str(flag), progress=False
        )
        results[flag] = (len(calls), torch.load(tmp_path / str(flag) / "fold0.pt", weights_only=True)["fingerprint"])
        assert res.best_epoch == 1
    assert results[True][0] > 0 and results[False][0] == 0
    assert results[True][1] != results[False][1]


def test_fingerprint_hashes_the_kernels_only_where_they_change_the_numerics():
    """True on a CPU is hashed (never reuse or resume a stock-kernel fold with her2lib's kernels); False is left out,
    so folds trained before the option existed match ``cpu_kernels=False``; on CUDA the option changes nothing."""
    from her2lib import train
    from her2lib.train.loop import _hashed_training

    on = train.TrainConfig(lr=1e-3, weight_decay=0.01)
    off = train.TrainConfig(lr=1e-3, weight_decay=0.01, cpu_kernels=False)
    before_option = {k: v for k, v in off.to_dict().items() if k != "cpu_kernels"}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _hashed_training(on, cpu) == {**before_option, "cpu_kernels": True}
    assert _hashed_training(off, cpu) == before_option
    assert _hashed_training(on, cuda) == _hashed_training(off, cuda)
    assert "cpu_kernels" not in on.to_dict() and off.to_dict()["cpu_kernels"] is False
    with pytest.raises(ParameterError, match="cpu_kernels"):
        train.TrainConfig(lr=1e-3, weight_decay=0.01, cpu_kernels=0)


def test_predictions_do_not_depend_on_the_kernels():
    """Without autograd (predictions, selection-set scoring) both models run the stock code: probabilities of given
    weights are bit-identical with and without her2lib's classes (GRN weights made non-zero: timm starts them at 0)."""
    torch.manual_seed(0)
    for model, x in (
        (models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", image_size=64)), torch.randn(3, 1, 64, 64)),
        (models.build_dl_mri(models.DLMRIConfig(image_size=32, conv1_t_stride=2)), torch.randn(3, 1, 32, 32, 32)),
    ):
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, GlobalResponseNorm):
                    m.weight.normal_()
                    m.bias.normal_()
        stock = use_cpu_kernels(copy.deepcopy(model), enabled=False).eval()
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), stock(x))
