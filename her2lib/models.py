"""The two deep-learning models (Methods: "DL model of US" and "DL model of MRI").

* DL-US: ConvNeXt V2 (timm ``convnextv2_*``), one grey-level input channel, two logits. The paper does not name
  the ConvNeXt V2 size; :class:`DLUSConfig` defaults to ``convnextv2_tiny`` (our choice), CPU profiles use
  ``convnextv2_atto``.
* DL-MRI: 3D ResNet18 (MONAI ``resnet18(spatial_dims=3, n_input_channels=1)``), two logits. MONAI's first
  convolution has stride 1 by default (the paper's setting, we assume); ``conv1_t_stride=2`` makes CPU profiles
  affordable.

The configs describe the architecture only (the paper's defaults; notebook profiles overlay them); how a model is
trained (optimiser, schedule, Mixup, precision) is :class:`her2lib.train.TrainConfig`. ``config.json`` beside the
checkpoints records both. The factories download nothing unless asked: weights come from an optional local
checkpoint file (DL-MRI: e.g. MedicalNet's ``resnet_18.pth``), or, for DL-US with ``pretrained=True``, from
timm's ImageNet weights (downloaded by timm). Output index 1 of the logits is HER2-positive (binary task); for the
class tasks of :data:`her2lib.contract.TASKS` logit ``j`` is ``task.classes[j]`` (``num_classes =
task.n_classes``).

Science layer.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
from monai.networks.nets import resnet18
from torch import nn

from .cpu_kernels import use_cpu_kernels
from .errors import ParameterError
from .options import did_you_mean, look_up_option

__all__ = [
    "DLUSConfig",
    "DLMRIConfig",
    "ModelConfig",
    "build_dl_us",
    "build_dl_mri",
    "build_model",
    "config_to_dict",
    "config_from_dict",
]


@dataclass
class DLUSConfig:
    """DL-US: ConvNeXt V2 on the 2-D ultrasound ROI (paper defaults).

    Attributes
    ----------
    variant : str
        timm model name, ``convnextv2_atto`` ... ``convnextv2_huge``. Paper: unnamed; default ``convnextv2_tiny``.
    image_size : int
        Side of the square input in pixels (paper 256).
    in_chans, num_classes : int
        1 grey channel, 2 logits (index 1 = HER2-positive; 3 for the three-class task).
    drop_path_rate : float
        Stochastic depth rate.
    checkpoint : str or None
        Optional LOCAL weights file (timm/ImageNet ConvNeXt V2 ``.pth``/``.safetensors`` or a state dict);
        the 3-channel stem is summed to 1 channel and the classifier re-initialised. Never downloaded.
    pretrained : bool
        Start from timm's ImageNet weights of ``variant``, which timm DOWNLOADS (Hugging Face hub; cached under
        ``~/.cache/huggingface``): the one download her2lib makes, and only when asked for. The paper's learning
        rate (2e-5) is a fine-tuning rate. Stem and classifier are adapted as for ``checkpoint``; give one of the two.
    """

    variant: str = "convnextv2_tiny"
    image_size: int = 256
    in_chans: int = 1
    num_classes: int = 2
    drop_path_rate: float = 0.1
    checkpoint: str | None = None
    pretrained: bool = False
    kind: str = field(default="dl_us", init=False)

    @property
    def spatial_dims(self) -> int:
        return 2

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, ``(1, H, W)``."""
        return (self.in_chans, self.image_size, self.image_size)


@dataclass
class DLMRIConfig:
    """DL-MRI: MONAI 3D ResNet18 on the MRI ROI volume (paper defaults).

    Attributes
    ----------
    image_size : int
        Side of the cubic input in voxels (paper 96).
    conv1_t_size, conv1_t_stride : int
        Kernel size and stride of the first convolution (MONAI defaults 7 and 1; 2 for CPU profiles).
    n_input_channels, num_classes : int
    checkpoint : str or None
        Optional LOCAL state-dict file (e.g. MedicalNet resnet_18); keys with other shapes are skipped (warned).
    """

    image_size: int = 96
    conv1_t_size: int = 7
    conv1_t_stride: int = 1
    n_input_channels: int = 1
    num_classes: int = 2
    checkpoint: str | None = None
    kind: str = field(default="dl_mri", init=False)

    @property
    def spatial_dims(self) -> int:
        return 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, ``(1, D, H, W)``."""
        return (self.n_input_channels,) + (self.image_size,) * 3


ModelConfig = DLUSConfig | DLMRIConfig


def _validate(cfg: ModelConfig) -> None:
    if cfg.num_classes not in (2, 3):
        raise ParameterError(
            f"num_classes={cfg.num_classes}: her2lib models have 2 logits (binary and low-vs-zero tasks) or 3 "
            "(three-class: HER2-zero, -low, -positive); set it to the task's n_classes."
        )
    if cfg.image_size <= 0:
        raise ParameterError(f"{cfg.kind}: image_size={cfg.image_size} must be > 0.")
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        raise ParameterError(
            f"{cfg.kind}: checkpoint={cfg.checkpoint!r} is not a file. her2lib never downloads "
            "weights for checkpoint=; give a local file or checkpoint=None (random initialisation)."
        )
    if getattr(cfg, "pretrained", False) and cfg.checkpoint is not None:
        raise ParameterError(
            f"{cfg.kind}: pretrained=True (timm's ImageNet weights, downloaded) and checkpoint={cfg.checkpoint!r} "
            "(a local file) both name the starting weights; give one of them."
        )


def build_dl_us(cfg: DLUSConfig | None = None) -> nn.Module:
    """ConvNeXt V2 with ``in_chans`` input channels and 2 logits.

    Parameters
    ----------
    cfg : DLUSConfig, optional

    Returns
    -------
    torch.nn.Module
        Maps ``(B, 1, H, W)`` float to ``(B, 2)`` logits. Its GRN layers take the faster CPU gradient of
        :mod:`her2lib.cpu_kernels`.
    """
    cfg = cfg or DLUSConfig()
    _validate(cfg)
    if not cfg.variant.startswith("convnextv2_"):
        raise ParameterError(
            f"variant={cfg.variant!r}: DL-US is a ConvNeXt V2; use one of {timm.list_models('convnextv2_*')}."
        )
    look_up_option(cfg.variant, timm.list_models("convnextv2_*"), name="variant")
    kw: dict[str, Any] = dict(in_chans=cfg.in_chans, num_classes=cfg.num_classes, drop_path_rate=cfg.drop_path_rate)
    if cfg.pretrained:
        return use_cpu_kernels(_imagenet_dl_us(cfg, kw))
    if cfg.checkpoint is None:
        return use_cpu_kernels(timm.create_model(cfg.variant, pretrained=False, **kw))
    # Local file only: timm adapts the stem to in_chans and drops the mismatched classifier.
    model = timm.create_model(
        cfg.variant,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(Path(cfg.checkpoint).resolve()), hf_hub_id=None, url=None),
        **kw,
    )
    return use_cpu_kernels(model)


def _imagenet_dl_us(cfg: DLUSConfig, kw: dict[str, Any]) -> nn.Module:
    """ConvNeXt V2 with timm's ImageNet weights (``pretrained=True``: timm downloads them once, then uses its cache);
    a ParameterError naming the parameter and the offline fix when they cannot be had."""
    try:
        return timm.create_model(cfg.variant, pretrained=True, **kw)
    except (OSError, RuntimeError, ValueError) as exc:  # no network, hub refused, no weights for this variant
        raise ParameterError(
            f"dl_us: pretrained=True, but timm could not fetch the ImageNet weights of {cfg.variant!r} "
            f"({type(exc).__name__}: {exc}). Fix: run once on a machine that reaches huggingface.co (timm caches "
            "the file under ~/.cache/huggingface), or download the weights elsewhere and give "
            "checkpoint=<local file> with pretrained=False."
        ) from exc


def build_dl_mri(cfg: DLMRIConfig | None = None) -> nn.Module:
    """MONAI 3D ResNet18 with ``n_input_channels`` inputs and 2 logits.

    Parameters
    ----------
    cfg : DLMRIConfig, optional

    Returns
    -------
    torch.nn.Module
        Maps ``(B, 1, D, H, W)`` float to ``(B, 2)`` logits. Its 3D convolutions take the faster CPU weight
        gradient of :mod:`her2lib.cpu_kernels` on tiny volumes.
    """
    cfg = cfg or DLMRIConfig()
    _validate(cfg)
    if cfg.conv1_t_stride < 1:
        raise ParameterError(f"conv1_t_stride={cfg.conv1_t_stride} must be >= 1.")
    model = resnet18(
        spatial_dims=3,
        n_input_channels=cfg.n_input_channels,
        num_classes=cfg.num_classes,
        conv1_t_size=cfg.conv1_t_size,
        conv1_t_stride=cfg.conv1_t_stride,
        pretrained=False,
    )
    if cfg.checkpoint is not None:
        state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k.removeprefix("module."): v for k, v in state.items()}
        own = model.state_dict()
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(state) - set(keep))
        if not keep:
            raise ParameterError(f"checkpoint {cfg.checkpoint}: no tensor matches the 3D ResNet18's names/shapes.")
        if skipped:
            warnings.warn(
                f"checkpoint {cfg.checkpoint}: skipped {len(skipped)} tensors with other names/shapes "
                f"(e.g. {skipped[:3]}).",
                UserWarning,
                stacklevel=2,
            )
        model.load_state_dict(keep, strict=False)
    return use_cpu_kernels(model)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Dispatch to :func:`build_dl_us` or :func:`build_dl_mri` by the config's type."""
    if isinstance(cfg, DLUSConfig):
        return build_dl_us(cfg)
    if isinstance(cfg, DLMRIConfig):
        return build_dl_mri(cfg)
    raise ParameterError(f"build_model: expected DLUSConfig or DLMRIConfig, got {type(cfg).__name__}.")


_CONFIGS = {"dl_us": DLUSConfig, "dl_mri": DLMRIConfig}


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    """Plain dict (JSON-ready) of a config, including its ``kind``.

    ``pretrained`` is left out while False (its default), so the ``config.json`` files and fold fingerprints of runs
    made before the option existed stay valid (a finished fold is reused only when its fingerprint matches).
    """
    d = asdict(cfg)
    if d.get("pretrained") is False:
        del d["pretrained"]
    return d


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict` (unknown keys are an error, with the close match)."""
    d = dict(d)
    kind = d.pop("kind", None)
    cls = look_up_option(kind, _CONFIGS, name="config kind")
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(d) - set(names))
    if unknown:
        hints = "; ".join(f"{u!r}{did_you_mean(u, names)}" for u in unknown)
        raise ParameterError(
            f"{kind} config: unknown keys {hints} (architecture keys: {names}; training settings "
            "belong to her2lib.train.TrainConfig)."
        )
    return cls(**d)
