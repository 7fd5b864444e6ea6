"""Optimiser, learning-rate schedule and Mixup, built from a :class:`~her2lib.train.TrainConfig`.

Science layer.
"""

from __future__ import annotations

import torch
from timm.data import Mixup
from torch import nn

from .config import TrainConfig

__all__ = ["make_optimizer", "make_scheduler", "make_mixup"]


def make_optimizer(model: nn.Module, training: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (lr, weight decay from ``training``); the fused kernel when available (several times faster on CPU
    for the 33M-parameter 3D ResNet18)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay, foreach=True)


def make_scheduler(opt: torch.optim.Optimizer, training: TrainConfig):
    """Per-epoch learning-rate schedule from ``training.lr_schedule`` (None for "constant")."""
    if training.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(training.epochs), 1))


def make_mixup(training: TrainConfig, num_classes: int = 2) -> Mixup | None:
    """timm ``Mixup`` from ``training``, or None when ``training.mixup`` is off."""
    if not training.mixup:
        return None
    return Mixup(
        mixup_alpha=training.mixup_alpha,
        cutmix_alpha=training.cutmix_alpha,
        label_smoothing=training.label_smoothing,
        num_classes=num_classes,
    )
