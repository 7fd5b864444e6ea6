"""Where and how a model runs: device choice, mixed precision and memory layout, deterministic algorithms, the
per-epoch metrics and batched prediction.

Science layer.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import torch
import torch.utils.deterministic
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score
from torch import nn

from ..errors import ParameterError, UndefinedMetricWarning
from .config import TrainConfig

__all__ = ["resolve_device", "epoch_metrics", "class_epoch_metrics", "predict_proba"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ParameterError(f"device={device!r}: use 'auto', 'cpu' or 'cuda[:N]' ({exc}).") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'.")
    return dev


def epoch_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, accuracy, recall (sensitivity) and F1 at ``threshold`` for labels ``y`` and probabilities ``p``.

    AUC is NaN (with :class:`UndefinedMetricWarning`) when ``y`` has one class.
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    if len(np.unique(y)) < 2:
        warnings.warn("held-out fold has one class; AUC undefined (NaN).", UndefinedMetricWarning, stacklevel=2)
        auc = float("nan")
    else:
        auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "accuracy": float(accuracy_score(y, pred)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
    }


def class_epoch_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The class tasks' counterpart of :func:`epoch_metrics`, under the same keys.

    Parameters
    ----------
    y : array_like of int, shape (n,)
        Label codes ``0 .. K-1``.
    proba : array_like, shape (n, K)
        Class probabilities (rows sum to 1).

    Returns
    -------
    dict
        ``auc``: macro one-vs-rest AUC (scikit-learn ``roc_auc_score(multi_class="ovr", average="macro")``; for
        K = 2 the AUC of ``proba[:, 1]``), NaN with :class:`UndefinedMetricWarning` when a class is absent from
        ``y``; ``accuracy`` of the most probable class; ``recall``: macro recall (balanced accuracy); ``f1``: macro F1.
    """
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, dtype=float)
    k = proba.shape[1]
    pred = proba.argmax(axis=1)
    if len(np.unique(y)) < k:
        warnings.warn("a class is absent from this set; AUC undefined (NaN).", UndefinedMetricWarning, stacklevel=2)
        auc = float("nan")
    elif k == 2:
        auc = float(roc_auc_score(y, proba[:, 1]))
    else:
        auc = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(k))))
    labels = list(range(k))
    return {
        "auc": auc,
        "accuracy": float(accuracy_score(y, pred)),
        "recall": float(recall_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
    }


def _use_amp(training: TrainConfig, device: torch.device) -> bool:
    return bool(training.amp) if training.amp is not None else device.type == "cuda"


def _use_cl(training: TrainConfig, device: torch.device) -> bool:
    return bool(training.channels_last) if training.channels_last is not None else device.type == "cuda"


def _memory_format(spatial_dims: int) -> torch.memory_format:
    """channels_last for 2-D models/batches, channels_last_3d for 3-D ones."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def _to_device(x: torch.Tensor, device: torch.device, cl: bool) -> torch.Tensor:
    """A batch ``(B, C, *spatial)`` on ``device``, in channels-last layout when ``cl``."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=_memory_format(x.ndim - 2)) if cl else x


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    x: torch.Tensor,
    *,
    training: TrainConfig | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    all_classes: bool = False,
) -> np.ndarray:
    """Probability of HER2-positive (softmax of logit 1) for every sample, or of every class.

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode by this function.
    x : torch.Tensor
        ``(n, 1, H, W)`` or ``(n, 1, D, H, W)`` float32.
    training : TrainConfig, optional
        For the AMP / channels_last choices (off without it).
    device : str or torch.device
    batch_size : int
    all_classes : bool
        Return the softmax of every logit (the class tasks) instead of that of logit 1.

    Returns
    -------
    np.ndarray
        float64 ``(n,)``, or ``(n, n_logits)`` with ``all_classes``.
    """
    device = torch.device(device) if not isinstance(device, torch.device) else device
    amp = training is not None and _use_amp(training, device)
    cl = training is not None and _use_cl(training, device)
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = _to_device(torch.as_tensor(x[i : i + batch_size]), device, cl)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(xb)
        prob = torch.softmax(logits.float(), dim=1)
        out.append((prob if all_classes else prob[:, 1]).cpu())
    if not out:
        return np.zeros((0, 0) if all_classes else 0)
    return torch.cat(out).double().numpy()


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic algorithms during training, restored afterwards.

    On the CPU, torch's companion setting ``torch.utils.deterministic.fill_uninitialized_memory`` (on by default with
    deterministic algorithms: every ``torch.empty`` is filled with NaN, a guard against kernels that read memory
    before writing it) is switched off: it cost 4-7% of a CPU training step and no CPU kernel of the loop reads
    uninitialised memory (the weights after a run with it on and off are bit-identical:
    ``tests/test_train_speed_options.py``; resumed and repeated runs stay byte-identical: ``tests/test_interrupt.py``).
    CUDA keeps torch's default (not measured there)."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    if device.type == "cpu":
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


@contextlib.contextmanager
def _numpy_global_rng(rs: np.random.RandomState):
    """Run a block that draws from NumPy's global RNG (timm Mixup does) on ``rs`` instead, leaving the caller's
    global state untouched."""
    saved = np.random.get_state()  # noqa: NPY002 (timm Mixup draws from the global RNG)
    np.random.set_state(rs.get_state())  # noqa: NPY002
    try:
        yield
    finally:
        rs.set_state(np.random.get_state())  # noqa: NPY002
        np.random.set_state(saved)  # noqa: NPY002
