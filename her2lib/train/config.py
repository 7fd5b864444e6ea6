"""How a model is trained (optimiser, schedule, batches, Mixup, precision), apart from what it is (its architecture,
:mod:`her2lib.models`).

Science layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ParameterError
from ..options import look_up_option

__all__ = ["TrainConfig", "PAPER_TRAINING", "LR_SCHEDULES", "split_config_dict"]

#: learning-rate schedules of :func:`her2lib.train.make_scheduler`
LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of one model (Methods: "DL model of US" / "DL model of MRI").

    ``lr``, ``weight_decay`` and ``mixup`` differ between the paper's two models; :data:`PAPER_TRAINING` holds
    both sets. The other defaults are the paper's for both.

    Attributes
    ----------
    lr, weight_decay : float
        AdamW learning rate and weight decay (paper: DL-US 2e-5 and 5e-2, DL-MRI 4e-6 and 1e-2).
    batch_size, epochs : int
        Paper: 16 and 300.
    lr_schedule : {"cosine", "constant"}
        The paper gives an *initial* learning rate, so it decays; the schedule is not named. "cosine": cosine
        annealing to 0 over ``epochs`` (stepped once per epoch).
    mixup : bool
        timm Mixup on the training batches (paper: DL-US yes; DL-MRI not mentioned, off).
    mixup_alpha, cutmix_alpha, label_smoothing : float
        timm ``Mixup`` parameters.
    amp : bool or None
        Mixed precision with dynamic loss scaling; None = on for CUDA, off on CPU.
    channels_last : bool or None
        None = on for CUDA only.
    max_steps : int or None
        Stop every epoch after this many batches (a dry run: every code path at full size in minutes); None = whole
        epochs.
    """

    lr: float
    weight_decay: float
    batch_size: int = 16
    epochs: int = 300
    lr_schedule: str = "cosine"
    mixup: bool = False
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.1
    amp: bool | None = None
    channels_last: bool | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise ParameterError(f"TrainConfig: {name}={getattr(self, name)} must be > 0.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ParameterError(f"TrainConfig: max_steps={self.max_steps} must be >= 1 (or None: whole epochs).")
        look_up_option(self.lr_schedule, LR_SCHEDULES, name="lr_schedule")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready). ``max_steps`` is left out while None, so the fold fingerprints and
        ``config.json`` of runs made before the option stay valid."""
        d = asdict(self)
        if d["max_steps"] is None:
            del d["max_steps"]
        return d


#: The paper's training settings per model key.
PAPER_TRAINING: dict[str, TrainConfig] = {
    "dl_us": TrainConfig(lr=2e-5, weight_decay=5e-2, mixup=True),
    "dl_mri": TrainConfig(lr=4e-6, weight_decay=1e-2, mixup=False),
}


def split_config_dict(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat configuration dict into its architecture part and its :class:`TrainConfig` part.

    her2lib 0.1 kept the training settings inside the model configuration (``config.json`` ``"config"``);
    reading such a file (an earlier run's trained models) goes through here.

    >>> split_config_dict({"kind": "dl_us", "image_size": 96, "lr": 5e-4, "epochs": 30})
    ({'kind': 'dl_us', 'image_size': 96}, {'lr': 0.0005, 'epochs': 30})
    """
    names = set(TrainConfig.__dataclass_fields__)
    return {k: v for k, v in d.items() if k not in names}, {k: v for k, v in d.items() if k in names}
