"""How a model is trained (optimiser, schedule, batches, Mixup, precision), apart from what it is (its architecture,
:mod:`her2lib.models`).

Science layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ParameterError
from ..options import look_up_option

__all__ = ["TrainConfig", "PAPER_TRAINING", "LR_SCHEDULES", "AUGMENT_BACKENDS", "split_config_dict"]

#: learning-rate schedules of :func:`her2lib.train.make_scheduler`
LR_SCHEDULES = ("cosine", "constant")
#: augmentation implementations: batched torch ops on the training device (:mod:`her2lib.batch_augment`), MONAI's
#: per-sample transforms on the CPU (:mod:`her2lib.transforms`), or "auto" (batched on CUDA, MONAI on the CPU)
AUGMENT_BACKENDS = ("auto", "batched", "monai")


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
    patience : int or None
        Early stopping: end the fold's training once this many epochs have passed without a better selection-set
        AUC (the schedule still runs over ``epochs``; the best epoch is kept as without it); None = every epoch.
    augment_backend : {"auto", "batched", "monai"}
        "batched": the augmentations as batched torch operations on the training device
        (:mod:`her2lib.batch_augment`; what feeds a GPU); "monai": MONAI's transforms sample by sample on the CPU
        (:mod:`her2lib.transforms`; her2lib 0.1's path). Same augmentations and distributions, different draws.
        "auto": batched on a CUDA device, MONAI on the CPU (where the two run at about the same speed and MONAI
        keeps earlier CPU runs' results); see :meth:`resolved_backend`.
    cpu_kernels : bool
        Train with her2lib's faster CPU kernels (:mod:`her2lib.cpu_kernels`: the weight gradient of 3D convolutions
        on tiny volumes, ConvNeXt V2's GRN norm); the same mathematics in another summation order, so the weights
        are not bit-identical to those of torch's and timm's stock kernels. False: the stock kernels (on the same
        machine, the weights of her2lib before these kernels). Predictions of given weights do not depend on it
        (they run the stock code). No effect on CUDA. Hashed into the fold fingerprint only when True on a CPU.
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
    patience: int | None = None
    augment_backend: str = "auto"
    cpu_kernels: bool = True

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise ParameterError(f"TrainConfig: {name}={getattr(self, name)} must be > 0.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ParameterError(f"TrainConfig: max_steps={self.max_steps} must be >= 1 (or None: whole epochs).")
        if self.patience is not None and self.patience < 1:
            raise ParameterError(f"TrainConfig: patience={self.patience} must be >= 1 (or None: every epoch).")
        look_up_option(self.lr_schedule, LR_SCHEDULES, name="lr_schedule")
        look_up_option(self.augment_backend, AUGMENT_BACKENDS, name="augment_backend")
        if not isinstance(self.cpu_kernels, bool):
            raise ParameterError(f"TrainConfig: cpu_kernels={self.cpu_kernels!r} must be True or False.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready). ``max_steps`` and ``patience`` are left out while None, ``augment_backend``
        while "auto" and ``cpu_kernels`` while True, so the fold fingerprints and ``config.json`` of runs made before
        these options stay valid (the fingerprint hashes ``cpu_kernels`` separately: ``loop._hashed_training``)."""
        d = asdict(self)
        defaults = (("max_steps", None), ("patience", None), ("augment_backend", "auto"), ("cpu_kernels", True))
        for name, default in defaults:
            if d[name] == default:
                del d[name]
        return d

    def resolved_backend(self, device_type: str) -> str:
        """The augmentation backend used on a device of type ``device_type`` ("cpu", "cuda")."""
        if self.augment_backend != "auto":
            return self.augment_backend
        return "batched" if device_type == "cuda" else "monai"


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
