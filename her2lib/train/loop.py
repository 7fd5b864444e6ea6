"""Training one fold: the epoch loop, its checkpoints and resume, and one training epoch.

Science layer.

Reproducibility: every epoch's randomness (batch order, augmentation, Mixup, stochastic depth) is seeded from
``(seed, fold, epoch)``; checkpoints hold model, optimiser, loss scaler, scheduler, epoch and the global torch RNG
state, so an interrupted run resumes and ends with the same probabilities as an uninterrupted one. A finished fold
is reused only when its fingerprint (model and training configuration, augmentation, seed, fold, patient ids and
labels of the training AND selection sets, the input tensors, the selection protocol) matches. Checkpoints are
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from tqdm.auto import tqdm

from ..batch_augment import BatchedAugmenter
from ..cpu_kernels import use_cpu_kernels
from ..errors import ParameterError, UndefinedMetricWarning
from ..io import atomic_path
from ..models import ModelConfig, build_model, config_to_dict
from ..transforms import DEFAULT_AUGMENT, AugmentSpec, BatchAugmenter, _epoch_seed
from .config import TrainConfig
from .folds import _guard_train_only
from .optim import make_mixup, make_optimizer, make_scheduler
from .runtime import (
    _deterministic,
    _memory_format,
    _numpy_global_rng,
    _to_device,
    _use_amp,
    _use_cl,
    class_epoch_metrics,
    epoch_metrics,
    predict_proba,
    resolve_device,
)
from .stopping import improves, selection_key, stops_early

__all__ = ["FoldResult", "fit_fold", "train_one_epoch", "place_inputs", "EpochHook"]

EpochHook = Callable[[int, int, dict], None]


@dataclass
class FoldResult:
    """Outcome of one fold: best epoch (1-based), its selection-set metrics, per-epoch history and best weights."""

    fold: int
    best_epoch: int
    best_metrics: dict
    history: list[dict]
    state_dict: dict


# ----------------------------------------------------------------------------------------------- helpers
def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


def place_inputs(x: torch.Tensor, *, device: torch.device, training: TrainConfig, budget: float = 0.25) -> torch.Tensor:
    """Where the training loop keeps an input tensor: on a CUDA ``device`` when augmentation runs there
    (``training.augment_backend == "batched"``) and the tensor takes at most ``budget`` of the free GPU memory
    (then a batch is an index into GPU memory: no CPU work and no transfer per step); otherwise where it is, on the
    CPU, and each batch is copied to the device (a plain copy: an indexed batch of a pinned tensor would not be
    pinned, so pinning the whole tensor would buy nothing). ``training.augment_backend`` "auto" means batched on
    CUDA (:meth:`TrainConfig.resolved_backend`).

    Parameters
    ----------
    x : torch.Tensor
        float32 ``(n, C, *spatial)`` on the CPU (not modified).
    device : torch.device
    training : TrainConfig
    budget : float
        Largest fraction of the free GPU memory the tensor may take.
    """
    if device.type != "cuda":
        return x
    if training.resolved_backend(device.type) == "batched":
        free, _total = torch.cuda.mem_get_info(device)
        if x.numel() * x.element_size() <= budget * free:
            return x.to(device)
    return x


def _batches(n: int, batch_size: int, gen: torch.Generator, even: bool) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    out = []
    for i in range(0, n, batch_size):
        b = perm[i : i + batch_size]
        if even and len(b) % 2:
            b = b[:-1]
        if len(b) >= 2:  # BatchNorm needs >= 2 samples; a trailing single sample is skipped this epoch
            out.append(b)
    return out


def _interned(obj: Any) -> Any:
    """``obj`` with every string interned (new dicts, lists and tuples; tensors and other objects as they are).

    Pickle writes a string that is one object with an earlier one as a back-reference, so the bytes depend on object
    identity, not only on content: a resumed fold's history mixes rows unpickled from its resume state with new rows.
    Interned, equal strings are one object in both runs."""
    if type(obj) is str:
        return sys.intern(obj)
    if type(obj) in (dict, OrderedDict):
        new = type(obj)((_interned(k), _interned(v)) for k, v in obj.items())
        if getattr(obj, "__dict__", None):  # a state dict's _metadata
            new.__dict__.update(_interned(vars(obj)))
        return new
    if type(obj) in (list, tuple):
        return type(obj)(_interned(v) for v in obj)
    return obj


def _save(path: Path, obj: dict) -> None:
    """Write a checkpoint atomically, with equal bytes for equal content: strings interned (:func:`_interned`), and
    through a file object, so the zip's inner folder is ``archive/`` and not the temporary file's random name
    (``torch.save`` to a path names it after the file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(_interned(obj), f)


# ----------------------------------------------------------------------------------------------- one epoch
def train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    training: TrainConfig,
    device: torch.device,
    aug: BatchAugmenter | BatchedAugmenter | None,
    mixup,
    gen: torch.Generator,
    np_rs: np.random.RandomState,
) -> tuple[float, int]:
    """One training epoch over in-memory tensors (the loop :func:`fit_fold` runs and the benchmark times).

    Batches are drawn by ``gen`` (a trailing single sample is skipped: BatchNorm needs two; only the first
    ``training.max_steps`` are used when it is set) from ``x_train``, which may already sit on ``device``
    (:func:`place_inputs`). A :class:`~her2lib.batch_augment.BatchedAugmenter` augments the batch on ``device``,
    a MONAI :class:`~her2lib.transforms.BatchAugmenter` on the CPU before the transfer; then timm ``mixup``
    (drawing from ``np_rs``) and the step, with autocast + ``scaler`` when ``training`` enables AMP.

    Returns
    -------
    (float, int)
        Sum of the per-sample training loss and the number of samples seen.
    """
    soft_ce, ce = SoftTargetCrossEntropy(), nn.CrossEntropyLoss()
    amp, cl = _use_amp(training, device), _use_cl(training, device)
    model.train()
    tot, cnt = 0.0, 0
    batches = _batches(len(x_train), training.batch_size, gen, even=mixup is not None)
    for idx in batches[: training.max_steps]:  # max_steps None: every batch
        xb, yb = x_train[idx.to(x_train.device)], y_train[idx.to(y_train.device)]
        if isinstance(aug, BatchedAugmenter):
            xb = aug(xb.to(device, non_blocking=True))
        elif aug is not None:
            xb = aug(xb.cpu())
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if mixup is not None:
            with _numpy_global_rng(np_rs):
                xb, yt = mixup(xb.clone(), yb)
        else:
            yt = yb
        xb = _to_device(xb, device, cl)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(xb)
        loss = soft_ce(logits.float(), yt) if mixup is not None else ce(logits.float(), yt)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        tot += float(loss.detach()) * len(idx)
        cnt += len(idx)
    return tot, cnt


# ----------------------------------------------------------------------------------------------- one fold
@dataclass
class _Trainer:
    """What one fold trains: model, optimiser, loss scaler, schedule (None: constant)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sched: Any


@dataclass
class _Progress:
    """Where a fold's training stands: history, the best epoch so far and the next epoch (0-based)."""

    history: list[dict] = field(default_factory=list)
    best_key: tuple[float, float] | None = None
    best_epoch: int = -1
    best_metrics: dict = field(default_factory=dict)
    best_state: dict | None = None
    start: int = 0
    best_saved: int = -1  # the best epoch that fold{k}_best.pt holds


@dataclass(frozen=True)
class _FoldRun:
    """The fixed settings of one fold's training run."""

    fold: int
    seed: int
    device: torch.device
    training: TrainConfig
    fingerprint: str
    final_path: Path
    state_path: Path
    best_path: Path
    checkpoint_every: int
    epoch_hook: EpochHook | None
    num_classes: int = 2


def _build_trainer(model_cfg: ModelConfig, training: TrainConfig, dev: torch.device) -> _Trainer:
    model = use_cpu_kernels(build_model(model_cfg), enabled=training.cpu_kernels)
    model = model.to(dev)
    if _use_cl(training, dev):
        model = model.to(memory_format=_memory_format(model_cfg.spatial_dims))
    opt = make_optimizer(model, training)
    scaler = torch.amp.GradScaler(dev.type, enabled=_use_amp(training, dev))
    return _Trainer(model, opt, scaler, make_scheduler(opt, training))


def _load_finished(run: _FoldRun) -> FoldResult | None:
    """The finished fold in ``fold{k}.pt`` when its fingerprint matches, else None."""
    if not run.final_path.exists():
        return None
    ck = torch.load(run.final_path, map_location="cpu", weights_only=True)
    if ck.get("fingerprint") == run.fingerprint and ck.get("complete"):
        return FoldResult(run.fold, int(ck["best_epoch"]), dict(ck["best_metrics"]), list(ck["history"]), ck["model"])
    return None


def _resume(run: _FoldRun, tr: _Trainer) -> _Progress:
    """Restore model, optimiser, scaler, schedule, history, best epoch and the torch RNG from the resume state;
    a fresh :class:`_Progress` (with a warning) when the state belongs to another configuration or data."""
    st = torch.load(run.state_path, map_location="cpu", weights_only=True)
    bk = torch.load(run.best_path, map_location="cpu", weights_only=True) if run.best_path.exists() else None
    if (
        st.get("fingerprint") == run.fingerprint
        and bk is not None
        and bk.get("fingerprint") == run.fingerprint
        and int(bk["best_epoch"]) <= int(st["epoch"]) + 1
        and int(bk["best_epoch"]) == int(st["best_epoch"])
    ):
        tr.model.load_state_dict(st["model"])
        tr.opt.load_state_dict(st["optimizer"])
        tr.scaler.load_state_dict(st["scaler"])
        if tr.sched is not None:
            tr.sched.load_state_dict(st["scheduler"])
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])
        return _Progress(
            history=list(st["history"]),
            best_key=(float(st["best_key"][0]), float(st["best_key"][1])),
            best_epoch=int(st["best_epoch"]),
            best_metrics=dict(bk["best_metrics"]),
            best_state=bk["model"],
            start=int(st["epoch"]) + 1,
            best_saved=int(bk["best_epoch"]),
        )
    warnings.warn(
        f"{run.state_path}: checkpoint from another configuration/data; training fold {run.fold} afresh.",
        RuntimeWarning,
        stacklevel=3,
    )
    return _Progress()


def _selection_row(
    run: _FoldRun, tr: _Trainer, epoch: int, train_loss: float, lr_now: float, x_val: torch.Tensor, y_val: np.ndarray
) -> tuple[dict, dict]:
    """The history row of one epoch (selection-set loss and metrics) and the metrics: those of
    :func:`epoch_metrics` with two logits, of :func:`class_epoch_metrics` (macro AUC) with more."""
    multi = run.num_classes > 2
    p = predict_proba(
        tr.model,
        x_val,
        training=run.training,
        device=run.device,
        batch_size=max(2 * run.training.batch_size, 2),
        all_classes=multi,
    )
    eps = 1e-7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        met = class_epoch_metrics(y_val, p) if multi else epoch_metrics(y_val, p)
    if multi:
        val_loss = float(-np.mean(np.log(p[np.arange(len(y_val)), y_val] + eps)))
    else:
        val_loss = float(-np.mean(y_val * np.log(p + eps) + (1 - y_val) * np.log(1 - p + eps)))
    row = {
        "fold": int(run.fold),
        "epoch": int(epoch) + 1,
        "train_loss": train_loss,
        "val_loss": val_loss,
        **{f"val_{k}": v for k, v in met.items()},
        "lr": lr_now,
    }
    return row, met


def _keep_if_best(run: _FoldRun, tr: _Trainer, prog: _Progress, epoch: int, row: dict, met: dict) -> None:
    key = selection_key(met["auc"], row["val_loss"])
    if improves(key, prog.best_key):
        prog.best_key, prog.best_epoch, prog.best_metrics = key, epoch + 1, row
        prog.best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tr.model.state_dict().items()}


def _save_resume_state(run: _FoldRun, tr: _Trainer, prog: _Progress, epoch: int) -> None:
    """Write the best weights so far (when they changed since the last write) and then the resume state: the two
    files always agree on the best epoch (written only here, an improvement costs no disk write of its own)."""
    if prog.best_saved != prog.best_epoch:
        _save(
            run.best_path,
            {
                "model": prog.best_state,
                "best_epoch": prog.best_epoch,
                "best_metrics": prog.best_metrics,
                "fingerprint": run.fingerprint,
            },
        )
        prog.best_saved = prog.best_epoch
    _save(
        run.state_path,
        {
            "model": tr.model.state_dict(),
            "optimizer": tr.opt.state_dict(),
            "scaler": tr.scaler.state_dict(),
            "scheduler": tr.sched.state_dict() if tr.sched is not None else {},
            "epoch": epoch,
            "history": prog.history,
            "best_key": list(prog.best_key),
            "best_epoch": prog.best_epoch,
            "torch_rng": torch.get_rng_state(),
            "fingerprint": run.fingerprint,
        },
    )


def _train_epochs(
    run: _FoldRun,
    tr: _Trainer,
    prog: _Progress,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: np.ndarray,
    aug: BatchAugmenter | None,
    bar,
) -> None:
    """Epochs ``prog.start`` .. ``epochs - 1``: train, score the selection set, keep the best, checkpoint; stop
    early when ``training.patience`` says so (also right away, when resumed after the stop's last checkpoint)."""
    mixup = make_mixup(run.training, num_classes=run.num_classes)
    epochs = run.training.epochs
    x_train = place_inputs(x_train, device=run.device, training=run.training)
    x_val = place_inputs(x_val, device=run.device, training=run.training)
    for epoch in bar:
        if prog.history and _stops_early(run.training, prog, epoch - 1):
            break
        es = _epoch_seed(run.seed, run.fold, epoch)
        torch.manual_seed(es)
        gen = torch.Generator().manual_seed(es)
        np_rs = np.random.RandomState(_epoch_seed(run.seed, run.fold, epoch, 1))
        if aug is not None:
            aug.reseed(_epoch_seed(run.seed, run.fold, epoch, 2))
        tot, cnt = train_one_epoch(
            tr.model,
            tr.opt,
            tr.scaler,
            x_train,
            y_train,
            training=run.training,
            device=run.device,
            aug=aug,
            mixup=mixup,
            gen=gen,
            np_rs=np_rs,
        )
        lr_now = float(tr.opt.param_groups[0]["lr"])
        if tr.sched is not None:
            tr.sched.step()
        row, met = _selection_row(run, tr, epoch, tot / max(cnt, 1), lr_now, x_val, y_val)
        prog.history.append(row)
        _keep_if_best(run, tr, prog, epoch, row, met)
        if (epoch + 1) % run.checkpoint_every == 0 and epoch < epochs - 1:  # the last epoch ends in fold{k}.pt
            _save_resume_state(run, tr, prog, epoch)
        bar.set_postfix(val_auc=f"{met['auc']:.3f}", best=prog.best_epoch)
        if run.epoch_hook is not None:
            run.epoch_hook(run.fold, epoch, row)
    bar.close()


def _hashed_training(training: TrainConfig, dev: torch.device) -> dict[str, Any]:
    """``training.to_dict()`` with the augmentation backend that runs on ``dev``: "batched" is hashed, MONAI (also
    "auto" on a CPU) is left out as before the option, so a CPU run and a her2lib 0.1 run keep their fingerprints
    and a run never resumes or reuses folds made with the other backend. Likewise ``cpu_kernels`` is hashed only
    where it changes the numerics (True on a CPU): a fold trained with the stock kernels, before the option or with
    ``cpu_kernels=False``, is never reused or resumed by a run with her2lib's kernels, and is by one with False."""
    d = training.to_dict()
    d.pop("augment_backend", None)
    if training.resolved_backend(dev.type) == "batched":
        d["augment_backend"] = "batched"
    d.pop("cpu_kernels", None)
    if dev.type == "cpu" and training.cpu_kernels:
        d["cpu_kernels"] = True
    return d


def _augmenter(
    model_cfg: ModelConfig, training: TrainConfig, dev: torch.device, *, augment: AugmentSpec | None, seed: int
) -> BatchAugmenter | BatchedAugmenter | None:
    """The training augmentation of ``training.resolved_backend(dev.type)``; None without ``augment``."""
    if augment is None:
        return None
    cls = BatchedAugmenter if training.resolved_backend(dev.type) == "batched" else BatchAugmenter
    return cls(model_cfg.spatial_dims, model_cfg.input_shape[1:], spec=augment, seed=seed)


def _stops_early(training: TrainConfig, prog: _Progress, epoch: int) -> bool:
    """Early stopping: ``training.patience`` epochs (0-based ``epoch`` just finished) without a better selection
    key than the best epoch's."""
    return stops_early(epoch + 1, prog.best_epoch, training.patience)


def fit_fold(
    model_cfg: ModelConfig,
    training: TrainConfig,
    x_train: torch.Tensor,
    rows_train: pd.DataFrame,
    x_val: torch.Tensor,
    rows_val: pd.DataFrame,
    *,
    fold: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    device: str | torch.device = "auto",
    augment: AugmentSpec | None = DEFAULT_AUGMENT,
    resume: bool = True,
    checkpoint_every: int = 1,
    progress: bool = True,
    epoch_hook: EpochHook | None = None,
    fingerprint_extra: Any = None,
    label: str = "her2",
) -> FoldResult:
    """Train one fold and keep the epoch with the best selection-set AUC.

    Parameters
    ----------
    model_cfg : DLUSConfig or DLMRIConfig
        The architecture.
    training : TrainConfig
        Optimiser, schedule, batches, epochs, Mixup, precision.
    x_train, x_val : torch.Tensor
        float32 ``(n, *model_cfg.input_shape)``; kept on the CPU, batches are moved to ``device``. ``x_val`` is
        the selection set: the epoch with the best AUC on it is kept (an inner validation split, or the held-out
        fold in the paper's protocol; see :func:`her2lib.train.run_cv`).
    rows_train, rows_val : pandas.DataFrame
        ``patient_id, split`` and ``label`` of the same rows. Every row must have ``split == "train"`` (raises
        otherwise).
    fold : int
        Fold number (part of the seeds and file names).
    out_dir : path
        Model folder, e.g. ``run.models / "dl_us"``; writes ``fold{k}.pt`` (best weights, history) and, while
        training, ``fold{k}_state.pt`` / ``fold{k}_best.pt`` (resume state, removed at the end).
    seed : int
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    augment : AugmentSpec or None
        Training augmentation; None disables it.
    resume : bool
        Continue from a matching checkpoint (same configuration, data, seed); otherwise start afresh.
    checkpoint_every : int
        Save the resume state every this many epochs (the finished fold is saved as ``fold{k}.pt``).
    progress : bool
        tqdm bar over epochs.
    epoch_hook : callable, optional
        ``hook(fold, epoch, metrics_row)`` after each epoch's checkpoint (``epoch`` is the 0-based loop index,
        ``metrics_row["epoch"]`` the 1-based epoch); may raise to interrupt (tests).
    fingerprint_extra : optional
        Anything else that must invalidate a finished fold when it changes (JSON-serialisable), e.g. the
        selection protocol and the held-out fold's patients and labels.
    label : str
        The column of ``rows_*`` with the label codes ``0 .. model_cfg.num_classes - 1``: ``her2`` (binary task) or
        the class tasks' codes (:func:`her2lib.train.run_cv` names it).

    Returns
    -------
    FoldResult
        ``best_epoch`` and the ``epoch`` of every history row are 1-based.
    """
    _guard_train_only(rows_train, "training")
    _guard_train_only(rows_val, "held-out")
    dev = resolve_device(device)
    if checkpoint_every < 1:
        raise ParameterError(f"checkpoint_every={checkpoint_every} must be >= 1.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_train = torch.as_tensor(rows_train[label].to_numpy().astype(np.int64).copy())
    y_val = rows_val[label].to_numpy().astype(int)
    fingerprint = _hash(
        # one flat dict, as her2lib 0.1 hashed its single config, so earlier runs' finished folds and resume
        # states stay valid (the model and training fields do not overlap)
        {**config_to_dict(model_cfg), **_hashed_training(training, dev)},
        asdict(augment) if augment else None,
        seed,
        fold,
        rows_train["patient_id"].tolist(),
        rows_val["patient_id"].tolist(),
        rows_train[label].tolist(),
        rows_val[label].tolist(),
        fingerprint_extra,
        x_train,
        x_val,
    )
    run = _FoldRun(
        fold=fold,
        seed=seed,
        device=dev,
        training=training,
        fingerprint=fingerprint,
        final_path=out_dir / f"fold{fold}.pt",
        state_path=out_dir / f"fold{fold}_state.pt",
        best_path=out_dir / f"fold{fold}_best.pt",
        checkpoint_every=checkpoint_every,
        epoch_hook=epoch_hook,
        num_classes=int(model_cfg.num_classes),
    )
    done = _load_finished(run) if resume else None
    if done is not None:
        return done

    torch.manual_seed(_epoch_seed(seed, fold, 10**6))
    tr = _build_trainer(model_cfg, training, dev)
    prog = _resume(run, tr) if resume and run.state_path.exists() else _Progress()
    aug = _augmenter(model_cfg, training, dev, augment=augment, seed=seed)
    bar = tqdm(
        range(prog.start, training.epochs),
        desc=f"{model_cfg.kind} fold {fold}",
        initial=prog.start,
        total=training.epochs,
        disable=not progress,
        leave=False,
    )
    with _deterministic(dev):
        _train_epochs(run, tr, prog, x_train, y_train, x_val, y_val, aug, bar)
    _save(
        run.final_path,
        {
            "model": prog.best_state,
            "best_epoch": prog.best_epoch,
            "best_metrics": prog.best_metrics,
            "history": prog.history,
            "fingerprint": fingerprint,
            "complete": True,
        },
    )
    for p_ in (run.state_path, run.best_path):
        with contextlib.suppress(FileNotFoundError):
            p_.unlink()
    return FoldResult(fold, prog.best_epoch, prog.best_metrics, prog.history, prog.best_state)
