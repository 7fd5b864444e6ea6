"""Faster CPU training for two layers whose stock CPU kernels are slow at the CPU profiles' sizes.

Science layer. Both models keep their architecture, parameters and state-dict names; what changes is how two
computations run on the CPU while autograd records (training), in the same mathematics with another
floating-point summation order:

* **3D convolutions on tiny volumes** (DL-MRI): at the ``default`` profile's ROI (32³, first-conv stride 2) the
  3D ResNet18's ``layer3`` sees 2³ voxels and ``layer4`` 1³. There oneDNN's weight-gradient kernel was 3-40x slower
  than the same gradient as one im2col + matrix product (machine C; 17-28x for ``layer4`` with AVX2 kernels) and
  took most of a DL-MRI training step. :class:`SmallVolumeConv3d` computes that weight gradient as one matrix
  product (:func:`conv3d_weight_grad`); the forward pass and the input gradient stay oneDNN's (bit-identical to the
  stock layer).
* **Global Response Normalisation** (DL-US, ConvNeXt V2): timm's LayerNorm2d leaves the activations
  channels-last in memory, and torch's CPU ``norm`` over the two spatial dims of such a tensor is a strided
  reduction, ~15x slower than a sum of squares. :class:`FastGlobalResponseNorm` takes the L2 norm as
  ``sqrt(sum(x²))`` with torch's own gradient formula (zero where the norm is zero) while training; predictions
  (``no_grad``) use timm's forward.

:func:`use_cpu_kernels` swaps these classes into a built model in place (:func:`her2lib.models.build_model` does
it; training follows ``TrainConfig.cpu_kernels``); on CUDA, with another dtype, under autocast or without autograd
the layers run the stock code, so predictions of given weights do not depend on them. Gradients agree with the
stock kernels to ~1e-6 relative (``tests/test_cpu_kernels.py``), so weights trained with them are not bit-identical
to weights trained without: a training run is a different (equally valid) floating-point path, as on another CPU.
``benchmarks/bench_cpu_kernels.py`` times both side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.grn import GlobalResponseNorm
from torch import nn

__all__ = ["conv3d_weight_grad", "SmallVolumeConv3d", "FastGlobalResponseNorm", "use_cpu_kernels", "uses_gemm"]

_MIN_CHANNELS = 256  # with up to 8 output voxels, the GEMM wins from 256 input channels (benchmarks/bench_cpu_kernels)


def conv3d_weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kernel_size: tuple[int, int, int],
    *,
    stride: tuple[int, int, int] = (1, 1, 1),
    padding: tuple[int, int, int] = (0, 0, 0),
) -> torch.Tensor:
    """Weight gradient of an ungrouped, undilated 3D convolution as one matrix product (im2col).

    Parameters
    ----------
    x : torch.Tensor
        The layer's input, ``(B, C_in, D, H, W)``.
    grad_out : torch.Tensor
        Gradient of the loss with respect to the layer's output, ``(B, C_out, oD, oH, oW)``.
    kernel_size, stride, padding : tuple of 3 int
        The convolution's (zero padding on both sides).

    Returns
    -------
    torch.Tensor
        ``(C_out, C_in, kD, kH, kW)``: ``sum over b, o of grad_out[b, :, o] x_padded[b, :, o * stride + k]``.
        The im2col matrix has ``B·oD·oH·oW`` rows and ``C_in·kD·kH·kW`` columns: meant for small volumes.
    """
    pd, ph, pw = padding
    xp = F.pad(x, (pw, pw, ph, ph, pd, pd)) if any(padding) else x
    cols = xp.unfold(2, kernel_size[0], stride[0]).unfold(3, kernel_size[1], stride[1])
    cols = cols.unfold(4, kernel_size[2], stride[2])  # (B, C_in, oD, oH, oW, kD, kH, kW)
    b, c_in, od, oh, ow = cols.shape[:5]
    if (od, oh, ow) != tuple(grad_out.shape[2:]):
        raise ValueError(f"grad_out spatial shape {tuple(grad_out.shape[2:])} is not the output's {(od, oh, ow)}.")
    rows = b * od * oh * ow
    cols = cols.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(rows, c_in * kernel_size[0] * kernel_size[1] * kernel_size[2])
    g = grad_out.permute(0, 2, 3, 4, 1).reshape(rows, grad_out.shape[1])
    return (g.t() @ cols).view(grad_out.shape[1], c_in, *kernel_size)


class _GemmWeightGradConv3d(torch.autograd.Function):
    """conv3d without bias: oneDNN forward and input gradient, :func:`conv3d_weight_grad` for the weight."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = tuple(stride), tuple(padding)
        return F.conv3d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1, 1], False, [0, 0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_w = conv3d_weight_grad(
                x, grad_out.contiguous(), tuple(weight.shape[2:]), stride=ctx.stride, padding=ctx.padding
            )
        return grad_x, grad_w, None, None


def _cpu_training(x: torch.Tensor) -> bool:
    """Where the fast paths run: float32 on the CPU, autograd recording, no autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def uses_gemm(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    """Whether :class:`SmallVolumeConv3d` takes the GEMM weight gradient for input ``x``: float32 on the CPU, a
    plain convolution (no bias, groups, dilation, or non-zero padding mode) and an output of one voxel, or of at
    most 8 voxels with at least 256 input channels (where oneDNN's kernel was 3-40x slower on machine C; below, it
    was about as fast or faster)."""
    if not (_cpu_training(x) and x.dim() == 5):
        return False
    if conv.bias is not None or conv.groups != 1 or conv.dilation != (1, 1, 1) or conv.padding_mode != "zeros":
        return False
    if isinstance(conv.padding, str):
        return False
    out_vox = 1
    for size, k, s, p in zip(x.shape[2:], conv.kernel_size, conv.stride, conv.padding):
        out_vox *= (size + 2 * p - k) // s + 1
    return out_vox == 1 or (out_vox <= 8 and conv.in_channels >= _MIN_CHANNELS)


class SmallVolumeConv3d(nn.Conv3d):
    """:class:`torch.nn.Conv3d` whose weight gradient is one matrix product when the output is tiny
    (:func:`uses_gemm`); otherwise, and on CUDA, exactly ``nn.Conv3d``. Same parameters and state-dict names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if uses_gemm(self, x):
            return _GemmWeightGradConv3d.apply(x, self.weight, self.stride, self.padding)
        return super().forward(x)


class _SpatialL2Norm(torch.autograd.Function):
    """``sqrt(sum(x², dims))`` with the gradient of ``torch.linalg.vector_norm``: ``x · g / n``, 0 where n = 0."""

    @staticmethod
    def forward(ctx, x, dims):
        n = (x * x).sum(dim=dims, keepdim=True).sqrt()
        ctx.save_for_backward(x, n)
        return n

    @staticmethod
    def backward(ctx, grad_n):
        x, n = ctx.saved_tensors
        return x * (grad_n / n).masked_fill_(n == 0, 0), None


class FastGlobalResponseNorm(GlobalResponseNorm):
    """timm's :class:`~timm.layers.grn.GlobalResponseNorm` (ConvNeXt V2) with the spatial L2 norm as a sum of
    squares while autograd records on the CPU (float32, no autocast: training); otherwise (predictions under
    ``no_grad``, CUDA) exactly timm's forward. Same parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _cpu_training(x):
            return super().forward(x)
        x_g = _SpatialL2Norm.apply(x, self.spatial_dim)
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n)


_SWAPS = {nn.Conv3d: SmallVolumeConv3d, GlobalResponseNorm: FastGlobalResponseNorm}


def use_cpu_kernels(model: nn.Module, *, enabled: bool = True) -> nn.Module:
    """Swap :class:`SmallVolumeConv3d` for every ``nn.Conv3d`` and :class:`FastGlobalResponseNorm` for every
    timm ``GlobalResponseNorm`` of ``model`` (in place: the class of each module changes, its parameters,
    buffers and hooks stay); ``enabled=False`` swaps the stock classes back. Returns ``model``."""
    for module in model.modules():
        for stock, fast in _SWAPS.items():
            if type(module) is (stock if enabled else fast):
                module.__class__ = fast if enabled else stock
    return model
