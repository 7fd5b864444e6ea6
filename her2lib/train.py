"""Four-fold cross-validation of DL-US and DL-MRI (Methods: "Four-fold cross-validation is used for both
training and evaluation"; "Stratified sampling was used to divide the dataset for cross-validation").

Protocol, without test-set leakage:

* :func:`assign_folds` splits the TRAINING cohort into 4 folds stratified by HER2 (test rows get fold -1); both
  models use the same folds so the fusion model can be fitted on out-of-fold (OOF) probabilities.
* :func:`run_cv` trains one model per fold on the other three folds (:func:`fit_fold`) and keeps the epoch with
  the best AUC on a **selection set** (ties: lower selection-set loss; accuracy, recall, F1 and loss are logged
  too). Two labelled choices of selection set (``selection=``):

  - ``"inner"`` (her2lib default): a stratified, seeded inner validation split (``inner_fraction`` of the fold's
    training part, seed from ``(seed, fold)``). The model trains on the rest. The held-out fold is touched only
    to predict it, so its OOF probabilities, and everything fitted on them later (Youden threshold, DL-US&MRI
    fusion), are honest.
  - ``"heldout"`` (the paper's protocol, labelled "paper" in the tables): the epoch is chosen on the held-out
    fold itself, which then gets its OOF probabilities from that chosen model; OOF AUCs are optimistic.

* Every fold model predicts the test cohort. ``CVResult.test_folds`` keeps each fold model's test probability
  (``{prefix}_test_folds.csv``) and ``CVResult.test`` their mean (``{prefix}_test.csv``, used for the AUC). A
  threshold or a fusion fitted on OOF probabilities (which are single-fold-model probabilities) is applied to
  the single fold models' test probabilities, never to their less spread mean (see :mod:`her2lib.evaluate`).
  The test cohort never enters :func:`fit_fold` (it raises if a test patient reaches it) and never chooses
  anything.

Epochs are 1-based in every file and figure (``metrics.csv``, ``dl_*_folds.csv``, learning curves).

Reproducibility: every epoch's randomness (batch order, augmentation, Mixup, stochastic depth) is seeded from
``(seed, fold, epoch)``; checkpoints hold model, optimiser, loss-scaler and epoch, so an interrupted run resumes
and ends with the same probabilities as an uninterrupted one. A finished fold is reused only when its
fingerprint (configuration, augmentation, seed, fold, patient ids and labels of the training AND selection sets,
the input tensors, the selection protocol) matches. Checkpoints are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .errors import DataError, ParameterError, UndefinedMetricWarning
from .fusion import PREDICTION_COLUMNS as _PREDICTION_COLUMNS
from .io import atomic_path, save_figure, write_csv, write_json
from .models import DLMRIConfig, DLUSConfig, build_model, config_from_dict, config_to_dict
from .transforms import AugmentSpec, BatchAugmenter, _epoch_seed

__all__ = ["assign_folds", "read_folds", "write_folds", "resolve_device", "epoch_metrics", "predict_proba",
           "fit_fold", "train_one_epoch", "make_optimizer", "make_scheduler", "make_mixup", "FoldResult", "CVResult", "run_cv", "load_fold_model", "write_predictions",
           "plot_learning_curves", "train_modality", "oof_performance", "PREDICTION_COLUMNS", "SELECTIONS",
           "inner_split", "TEST_FOLD_COLUMNS"]

PREDICTION_COLUMNS = list(_PREDICTION_COLUMNS)  # the contract of her2lib.fusion (one definition)
EpochHook = Callable[[int, int, dict], None]
#: columns of ``{prefix}_test_folds.csv``: one row per test patient and fold model
TEST_FOLD_COLUMNS = ["patient_id", "split", "her2", "model_fold", "p_her2"]
#: epoch-selection protocols of :func:`run_cv` -> label written to the tables
SELECTIONS = {"inner": "inner validation split of the fold's training part (her2lib default)",
              "heldout": "held-out fold (paper protocol; OOF optimistic)"}


# ----------------------------------------------------------------------------------------------- folds


def _check_cohort(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in ("patient_id", "split", "her2") if c not in df.columns]
    if missing:
        raise DataError(f"{where}: the cohort table lacks columns {missing}.")
    bad = sorted(set(df["split"]) - {"train", "test"})
    if bad:
        raise DataError(f"{where}: split values {bad} are not 'train'/'test'.")
    labels = set(pd.unique(df["her2"]))
    if not labels <= {0, 1}:
        raise DataError(f"{where}: her2 must be 0/1, found {sorted(map(str, labels))}.")
    if df["patient_id"].duplicated().any():
        dup = df.loc[df["patient_id"].duplicated(), "patient_id"].tolist()[:5]
        raise DataError(f"{where}: duplicated patient_id {dup}.")


def assign_folds(df: pd.DataFrame, n_folds: int = 4, seed: int = 0) -> pd.Series:
    """Stratified fold of every training patient; -1 for test patients.

    Parameters
    ----------
    df : pandas.DataFrame
        Cohort with ``patient_id``, ``split`` and ``her2`` columns.
    n_folds : int
        Number of folds (paper: 4).
    seed : int
        Shuffling seed.

    Returns
    -------
    pandas.Series
        int, named ``fold``, indexed like ``df``. Stratified by ``her2``; independent of the row order (patients
        are sorted by id before splitting).
    """
    from sklearn.model_selection import StratifiedKFold

    _check_cohort(df, "assign_folds")
    if n_folds < 2:
        raise ParameterError(f"n_folds={n_folds}: need at least 2 folds.")
    train = df[df["split"] == "train"].sort_values("patient_id")
    counts = train["her2"].value_counts()
    if len(counts) < 2 or counts.min() < n_folds:
        raise DataError(f"assign_folds: the training cohort has HER2 counts {counts.to_dict()}; every class needs "
                        f">= n_folds={n_folds} patients.")
    folds = pd.Series(-1, index=df.index, name="fold", dtype=int)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(skf.split(np.zeros(len(train)), train["her2"].to_numpy())):
        folds.loc[train.index[val]] = k
    return folds


def write_folds(path: str | os.PathLike, df: pd.DataFrame, folds: pd.Series) -> Path:
    """Write ``patient_id, split, her2, fold`` to ``path`` (CSV, atomic)."""
    out = df[["patient_id", "split", "her2"]].copy()
    out["fold"] = folds.loc[df.index].astype(int)
    return write_csv(path, out)


def read_folds(path: str | os.PathLike, df: pd.DataFrame) -> pd.Series:
    """Read a folds file (from :func:`write_folds`) and align it with ``df``'s rows.

    Raises
    ------
    DataError
        If a patient is missing, a test patient has a fold, or a split/label disagrees with ``df``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; run notebooks/02_preprocess.ipynb first (same out_dir).")
    f = pd.read_csv(path, dtype={"patient_id": str})
    m = df[["patient_id", "split", "her2"]].merge(f, on="patient_id", how="left", suffixes=("", "_file"))
    problems = [f"patient {p}: not in {path}" for p in m.loc[m["fold"].isna(), "patient_id"]]
    bad = m["fold"].notna() & ((m["split"] != m["split_file"]) | (m["her2"] != m["her2_file"]))
    problems += [f"patient {p}: split/her2 differ from {path}" for p in m.loc[bad, "patient_id"]]
    leak = m["fold"].notna() & (m["split"] == "test") & (m["fold"] != -1)
    problems += [f"patient {p}: test patient with a CV fold" for p in m.loc[leak, "patient_id"]]
    if problems:
        raise DataError(f"{path} does not match the cohort ({len(problems)} problems); re-run 02_preprocess.",
                        problems)
    return pd.Series(m["fold"].astype(int).to_numpy(), index=df.index, name="fold")


# ----------------------------------------------------------------------------------------------- helpers


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``."""
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
    from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    if len(np.unique(y)) < 2:
        warnings.warn("held-out fold has one class; AUC undefined (NaN).", UndefinedMetricWarning, stacklevel=2)
        auc = float("nan")
    else:
        auc = float(roc_auc_score(y, p))
    return {"auc": auc, "accuracy": float(accuracy_score(y, pred)),
            "recall": float(recall_score(y, pred, zero_division=0)),
            "f1": float(f1_score(y, pred, zero_division=0))}


def _use_amp(cfg, device: torch.device) -> bool:
    return bool(cfg.amp) if cfg.amp is not None else device.type == "cuda"


def _use_cl(cfg, device: torch.device) -> bool:
    return bool(cfg.channels_last) if cfg.channels_last is not None else device.type == "cuda"


def _memory_format(cfg) -> torch.memory_format:
    return torch.channels_last if cfg.spatial_dims == 2 else torch.channels_last_3d


def _to_device(x: torch.Tensor, device: torch.device, cl: bool, cfg) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=_memory_format(cfg)) if cl else x


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, cfg=None, device: str | torch.device = "cpu",
                  batch_size: int = 32) -> np.ndarray:
    """Probability of HER2-positive (softmax of logit 1) for every sample.

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode by this function.
    x : torch.Tensor
        ``(n, 1, H, W)`` or ``(n, 1, D, H, W)`` float32.
    cfg : DLUSConfig or DLMRIConfig, optional
        For AMP / channels_last choices.
    device : str or torch.device
    batch_size : int

    Returns
    -------
    np.ndarray
        float64 ``(n,)``.
    """
    device = torch.device(device) if not isinstance(device, torch.device) else device
    amp = cfg is not None and _use_amp(cfg, device)
    cl = cfg is not None and _use_cl(cfg, device)
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = _to_device(torch.as_tensor(x[i:i + batch_size]), device, cl, cfg)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(xb)
        out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic algorithms during training, restored afterwards."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


@contextlib.contextmanager
def _numpy_global_rng(rs: np.random.RandomState):
    """Run a block that draws from NumPy's global RNG (timm Mixup does) on ``rs`` instead, leaving the caller's
    global state untouched."""
    saved = np.random.get_state()
    np.random.set_state(rs.get_state())
    try:
        yield
    finally:
        rs.set_state(np.random.get_state())
        np.random.set_state(saved)


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


def _batches(n: int, batch_size: int, gen: torch.Generator, even: bool) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    out = []
    for i in range(0, n, batch_size):
        b = perm[i:i + batch_size]
        if even and len(b) % 2:
            b = b[:-1]
        if len(b) >= 2:  # BatchNorm needs >= 2 samples; a trailing single sample is skipped this epoch
            out.append(b)
    return out


# ----------------------------------------------------------------------------------------------- one fold


@dataclass
class FoldResult:
    """Outcome of one fold: best epoch (1-based), its selection-set metrics, per-epoch history and best weights."""

    fold: int
    best_epoch: int
    best_metrics: dict
    history: list[dict]
    state_dict: dict


def _guard_train_only(rows: pd.DataFrame, what: str) -> None:
    if "split" not in rows.columns:
        raise DataError(f"fit_fold: {what} rows need a 'split' column (the leakage guard checks it).")
    test = rows.loc[rows["split"] != "train", "patient_id"].tolist()
    if test:
        raise DataError(f"fit_fold: test-cohort patients {test[:5]} reached the {what} data of a CV fold. The test "
                        "cohort must never be used for fitting or model selection; pass only split == 'train' "
                        "rows.")


def fit_fold(cfg: DLUSConfig | DLMRIConfig, x_train: torch.Tensor, rows_train: pd.DataFrame,
             x_val: torch.Tensor, rows_val: pd.DataFrame, *, fold: int, out_dir: str | os.PathLike,
             seed: int = 0, device: str | torch.device = "auto", augment: AugmentSpec | None = AugmentSpec(),
             resume: bool = True, checkpoint_every: int = 1, progress: bool = True,
             epoch_hook: EpochHook | None = None, fingerprint_extra: Any = None) -> FoldResult:
    """Train one fold and keep the epoch with the best held-out AUC.

    Parameters
    ----------
    cfg : DLUSConfig or DLMRIConfig
    x_train, x_val : torch.Tensor
        float32 ``(n, *cfg.input_shape)``; kept on the CPU, batches are moved to ``device``. ``x_val`` is the
        selection set: the epoch with the best AUC on it is kept (an inner validation split, or the held-out fold
        in the paper's protocol; see :func:`run_cv`).
    rows_train, rows_val : pandas.DataFrame
        ``patient_id, split, her2`` of the same rows. Every row must have ``split == "train"`` (raises otherwise).
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
        Continue from a matching checkpoint (same config, data, seed); otherwise start afresh.
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

    Returns
    -------
    FoldResult
        ``best_epoch`` and the ``epoch`` of every history row are 1-based.
    """
    from tqdm.auto import tqdm

    _guard_train_only(rows_train, "training")
    _guard_train_only(rows_val, "held-out")
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    if checkpoint_every < 1:
        raise ParameterError(f"checkpoint_every={checkpoint_every} must be >= 1.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final_path, state_path, best_path = (out_dir / f"fold{fold}.pt", out_dir / f"fold{fold}_state.pt",
                                         out_dir / f"fold{fold}_best.pt")
    y_train = torch.as_tensor(rows_train["her2"].to_numpy().astype(np.int64).copy())
    y_val = rows_val["her2"].to_numpy().astype(int)
    fingerprint = _hash(config_to_dict(cfg), asdict(augment) if augment else None, seed, fold,
                        rows_train["patient_id"].tolist(), rows_val["patient_id"].tolist(),
                        rows_train["her2"].tolist(), rows_val["her2"].tolist(), fingerprint_extra, x_train, x_val)

    if resume and final_path.exists():
        ck = torch.load(final_path, map_location="cpu", weights_only=True)
        if ck.get("fingerprint") == fingerprint and ck.get("complete"):
            return FoldResult(fold, int(ck["best_epoch"]), dict(ck["best_metrics"]), list(ck["history"]),
                              ck["model"])

    torch.manual_seed(_epoch_seed(seed, fold, 10**6))
    model = build_model(cfg)
    amp, cl = _use_amp(cfg, dev), _use_cl(cfg, dev)
    model = model.to(dev)
    if cl:
        model = model.to(memory_format=_memory_format(cfg))
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)
    sched = make_scheduler(opt, cfg)
    history: list[dict] = []
    best_key: tuple[float, float] | None = None
    best_epoch, best_metrics, best_state = -1, {}, None
    start = 0

    if resume and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        bk = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.exists() else None
        if st.get("fingerprint") == fingerprint and bk is not None and bk.get("fingerprint") == fingerprint \
                and int(bk["best_epoch"]) <= int(st["epoch"]) + 1 and int(bk["best_epoch"]) == int(st["best_epoch"]):
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            scaler.load_state_dict(st["scaler"])
            if sched is not None:
                sched.load_state_dict(st["scheduler"])
            history = list(st["history"])
            best_key = (float(st["best_key"][0]), float(st["best_key"][1]))
            best_epoch, best_metrics, best_state = int(st["best_epoch"]), dict(bk["best_metrics"]), bk["model"]
            start = int(st["epoch"]) + 1
        else:
            warnings.warn(f"{state_path}: checkpoint from another configuration/data; training fold {fold} afresh.",
                          RuntimeWarning, stacklevel=2)

    aug = BatchAugmenter(cfg.spatial_dims, cfg.input_shape[1:], augment, seed) if augment is not None else None
    mixup = make_mixup(cfg)
    desc = f"{cfg.kind} fold {fold}"
    bar = tqdm(range(start, cfg.epochs), desc=desc, initial=start, total=cfg.epochs, disable=not progress,
               leave=False)
    with _deterministic(dev):
        for epoch in bar:
            es = _epoch_seed(seed, fold, epoch)
            torch.manual_seed(es)
            gen = torch.Generator().manual_seed(es)
            np_rs = np.random.RandomState(_epoch_seed(seed, fold, epoch, 1))
            if aug is not None:
                aug.reseed(_epoch_seed(seed, fold, epoch, 2))
            tot, cnt = train_one_epoch(model, opt, scaler, x_train, y_train, cfg, dev, aug, mixup, gen, np_rs)
            lr_now = float(opt.param_groups[0]["lr"])
            if sched is not None:
                sched.step()
            p = predict_proba(model, x_val, cfg, dev, batch_size=max(2 * cfg.batch_size, 2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                met = epoch_metrics(y_val, p)
            eps = 1e-7
            val_loss = float(-np.mean(y_val * np.log(p + eps) + (1 - y_val) * np.log(1 - p + eps)))
            row = {"fold": int(fold), "epoch": int(epoch) + 1, "train_loss": tot / max(cnt, 1), "val_loss": val_loss,
                   **{f"val_{k}": v for k, v in met.items()}, "lr": lr_now}
            history.append(row)
            auc = met["auc"] if np.isfinite(met["auc"]) else -1.0
            key = (auc, -val_loss)
            if best_key is None or key > best_key:
                best_key, best_epoch, best_metrics = key, epoch + 1, row
                best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
                _save(best_path, {"model": best_state, "best_epoch": epoch + 1, "best_metrics": row,
                                  "fingerprint": fingerprint})
            if (epoch + 1) % checkpoint_every == 0 and epoch < cfg.epochs - 1:  # the last epoch ends in fold{k}.pt
                _save(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "scaler": scaler.state_dict(),
                                   "scheduler": sched.state_dict() if sched is not None else {}, "epoch": epoch, "history": history,
                                   "best_key": list(best_key), "best_epoch": best_epoch,
                                   "torch_rng": torch.get_rng_state(), "fingerprint": fingerprint})
            bar.set_postfix(val_auc=f"{met['auc']:.3f}", best=best_epoch)
            if epoch_hook is not None:
                epoch_hook(fold, epoch, row)
    _save(final_path, {"model": best_state, "best_epoch": best_epoch, "best_metrics": best_metrics,
                       "history": history, "fingerprint": fingerprint, "complete": True})
    for p_ in (state_path, best_path):
        with contextlib.suppress(FileNotFoundError):
            p_.unlink()
    return FoldResult(fold, best_epoch, best_metrics, history, best_state)


def train_one_epoch(model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    x_train: torch.Tensor, y_train: torch.Tensor, cfg, device: torch.device,
                    aug: BatchAugmenter | None, mixup, gen: torch.Generator,
                    np_rs: np.random.RandomState) -> tuple[float, int]:
    """One training epoch over in-memory tensors (the loop :func:`fit_fold` runs and the benchmark times).

    Batches are drawn by ``gen`` (a trailing single sample is skipped: BatchNorm needs two), augmented on the
    CPU by ``aug``, mixed by timm ``mixup`` (drawing from ``np_rs``), moved to ``device`` and stepped with
    autocast + ``scaler`` when the config enables AMP.

    Returns
    -------
    (float, int)
        Sum of the per-sample training loss and the number of samples seen.
    """
    from timm.loss import SoftTargetCrossEntropy

    soft_ce, ce = SoftTargetCrossEntropy(), nn.CrossEntropyLoss()
    amp, cl = _use_amp(cfg, device), _use_cl(cfg, device)
    model.train()
    tot, cnt = 0.0, 0
    for idx in _batches(len(x_train), cfg.batch_size, gen, even=mixup is not None):
        xb, yb = x_train[idx], y_train[idx]
        if aug is not None:
            xb = aug(xb)
        if mixup is not None:
            with _numpy_global_rng(np_rs):
                xb, yt = mixup(xb.clone(), yb)
        else:
            yt = yb
        xb, yt = _to_device(xb, device, cl, cfg), yt.to(device, non_blocking=True)
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


def make_mixup(cfg):
    """timm ``Mixup`` from the config, or None when ``cfg.mixup`` is off."""
    if not cfg.mixup:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, label_smoothing=cfg.label_smoothing,
                 num_classes=cfg.num_classes)


def make_scheduler(opt: torch.optim.Optimizer, cfg):
    """Per-epoch learning-rate schedule from ``cfg.lr_schedule`` (None for "constant")."""
    if cfg.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(cfg.epochs), 1))


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW (lr, weight decay from the config); the fused kernel when available (several times faster on CPU
    for the 33M-parameter 3D ResNet18)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def _save(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ----------------------------------------------------------------------------------------------- CV


@dataclass
class CVResult:
    """Predictions and logs of a cross-validated model.

    Attributes
    ----------
    oof : pandas.DataFrame
        One row per training patient: ``patient_id, split, fold, her2, p_her2`` (the fold model that did not
        train on the patient's fold).
    test : pandas.DataFrame
        One row per test patient, ``fold = -1``, ``p_her2`` = mean of the fold models (for the AUC and curves).
    history : pandas.DataFrame
        Per fold and (1-based) epoch: ``train_loss`` and the selection set's ``val_loss, val_auc, val_accuracy,
        val_recall, val_f1``, ``lr``.
    summary : pandas.DataFrame
        Per fold: the selection protocol, best epoch (1-based), its selection-set metrics, and the AUC of the
        kept model on the held-out fold (``heldout_auc``).
    test_folds : pandas.DataFrame
        Every fold model's test probabilities, ``TEST_FOLD_COLUMNS`` (long format, ``model_fold`` = fold of
        the model), sorted by patient then model fold.
    selection : str
        ``"inner"`` or ``"heldout"`` (:data:`SELECTIONS`).
    """

    oof: pd.DataFrame
    test: pd.DataFrame
    history: pd.DataFrame
    summary: pd.DataFrame
    test_folds: pd.DataFrame | None = None
    selection: str = "inner"


def inner_split(rows: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of one fold's training part into a training set and an inner selection set.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``patient_id, her2`` of the fold's training part (in any order).
    fraction : float
        Share of patients in the selection set, in (0, 0.5].
    seed : int

    Returns
    -------
    (ndarray, ndarray)
        Positional indices into ``rows`` of the training set and of the selection set, each sorted. The split
        depends on the patients, labels and seed only, not on the row order. Each class keeps at least one
        patient on each side.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    if not 0 < fraction <= 0.5:
        raise ParameterError(f"inner_fraction={fraction!r}: use a share in (0, 0.5] (e.g. 0.2).")
    counts = rows["her2"].value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise DataError(f"inner validation split: the fold's training part has HER2 counts {counts.to_dict()}; "
                        "each class needs >= 2 patients. Use selection='heldout' or a larger cohort.")
    order = np.argsort(rows["patient_id"].astype(str).to_numpy(), kind="stable")
    y = rows["her2"].to_numpy()[order]
    n_sel = max(int(round(fraction * len(rows))), 2)
    sss = StratifiedShuffleSplit(n_splits=1, test_size=n_sel, random_state=seed)
    tr, sel = next(sss.split(np.zeros(len(y)), y))
    return np.sort(order[tr]), np.sort(order[sel])


def run_cv(cohort: pd.DataFrame, inputs, cfg: DLUSConfig | DLMRIConfig, folds: pd.Series,
           out_dir: str | os.PathLike, *, seed: int = 0, device: str = "auto",
           augment: AugmentSpec | None = AugmentSpec(), resume: bool = True, checkpoint_every: int = 1,
           progress: bool = True, epoch_hook: EpochHook | None = None, selection: str = "inner",
           inner_fraction: float = 0.2) -> CVResult:
    """Cross-validate one model on the training cohort and predict the test cohort.

    Parameters
    ----------
    cohort : pandas.DataFrame
        ``patient_id, split, her2`` (others ignored), one row per patient.
    inputs : np.ndarray or torch.Tensor
        float32 ``(n_patients, *cfg.input_shape)`` in ``cohort`` row order (from
        :func:`her2lib.roi.preprocess_cohort`).
    cfg : DLUSConfig or DLMRIConfig
    folds : pandas.Series
        From :func:`assign_folds` / :func:`read_folds`, indexed like ``cohort``.
    out_dir : path
        Model folder (``run.models / "dl_us"`` or ``"dl_mri"``): ``config.json``, ``fold{k}.pt``, ``metrics.csv``.
    seed, device, augment, resume, checkpoint_every, progress, epoch_hook
        See :func:`fit_fold`.
    selection : {"inner", "heldout"}
        Where each fold's epoch is chosen: ``"inner"`` (default) on a stratified inner validation split of the
        fold's training part (:func:`inner_split`, ``inner_fraction`` of it, seed ``(seed, fold)``), so the
        held-out fold's OOF probabilities are honest; ``"heldout"`` on the held-out fold itself (the paper's
        protocol; optimistic OOF).
    inner_fraction : float
        Share of the fold's training part used as the inner selection set (``selection="inner"`` only).

    Returns
    -------
    CVResult
    """
    if selection not in SELECTIONS:
        import difflib
        close = difflib.get_close_matches(str(selection), list(SELECTIONS), n=1)
        raise ParameterError(f"selection={selection!r}: choose one of {list(SELECTIONS)}"
                             + (f" (did you mean {close[0]!r}?)" if close else "") + ".")
    _check_cohort(cohort, "run_cv")
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    if x.shape[0] != len(cohort) or tuple(x.shape[1:]) != tuple(cfg.input_shape):
        raise DataError(f"run_cv: inputs have shape {tuple(x.shape)}; expected ({len(cohort)}, "
                        f"{', '.join(map(str, cfg.input_shape))}). Fix: preprocess with the size of the config "
                        f"(image_size={cfg.image_size}).")
    if not torch.isfinite(x).all():
        raise DataError("run_cv: inputs contain NaN/inf.")
    folds = folds.loc[cohort.index].astype(int)
    is_train = (cohort["split"] == "train").to_numpy()
    if (folds[~is_train] != -1).any() or (folds[is_train] < 0).any():
        raise DataError("run_cv: folds must be -1 for test patients and >= 0 for training patients; "
                        "use her2lib.train.assign_folds.")
    fold_ids = [int(k) for k in sorted(folds[is_train].unique())]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", {"config": config_to_dict(cfg), "seed": seed, "folds": fold_ids,
                                         "augment": asdict(augment) if augment else None,
                                         "selection": selection, "selection_label": SELECTIONS[selection],
                                         "inner_fraction": inner_fraction if selection == "inner" else None})
    dev = resolve_device(device)
    rows = cohort[["patient_id", "split", "her2"]].reset_index(drop=True)
    fvals = folds.to_numpy()
    oof_parts, hist, summ, test_probs = [], [], [], []
    test_idx = np.flatnonzero(~is_train)
    test_fold_parts = []
    for k in fold_ids:
        tr = np.flatnonzero(is_train & (fvals != k))
        va = np.flatnonzero(is_train & (fvals == k))
        if selection == "inner":
            fit_i, sel_i = inner_split(rows.iloc[tr], inner_fraction, _epoch_seed(seed, k, 10**6, 3) % (2**32 - 1))
            fit_idx, sel_idx = tr[fit_i], tr[sel_i]
        else:
            fit_idx, sel_idx = tr, va
        extra = {"selection": selection, "inner_fraction": inner_fraction if selection == "inner" else None,
                 "heldout": rows.iloc[va]["patient_id"].tolist(), "heldout_her2": rows.iloc[va]["her2"].tolist()}
        res = fit_fold(cfg, x[fit_idx], rows.iloc[fit_idx], x[sel_idx], rows.iloc[sel_idx], fold=k,
                       out_dir=out_dir, seed=seed, device=dev, augment=augment, resume=resume,
                       checkpoint_every=checkpoint_every, progress=progress, epoch_hook=epoch_hook,
                       fingerprint_extra=extra)
        model = build_model(cfg)
        model.load_state_dict(res.state_dict)
        model = model.to(dev)
        if _use_cl(cfg, dev):
            model = model.to(memory_format=_memory_format(cfg))
        part = rows.iloc[va].copy()
        part["fold"] = k
        part["p_her2"] = predict_proba(model, x[va], cfg, dev)
        oof_parts.append(part)
        if len(test_idx):
            pt = predict_proba(model, x[test_idx], cfg, dev)
            test_probs.append(pt)
            tf = rows.iloc[test_idx][["patient_id", "split", "her2"]].copy()
            tf["model_fold"] = k
            tf["p_her2"] = pt
            test_fold_parts.append(tf)
        hist.extend(res.history)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            heldout_auc = epoch_metrics(part["her2"].to_numpy(), part["p_her2"].to_numpy())["auc"]
        summ.append({"fold": k, "selection": SELECTIONS[selection], "best_epoch": res.best_epoch,
                     "n_train": len(fit_idx), "n_select": len(sel_idx), "n_heldout": len(va),
                     **{c.replace("val_", "select_"): res.best_metrics.get(c)
                        for c in ("val_auc", "val_accuracy", "val_recall", "val_f1", "val_loss")},
                     "heldout_auc": heldout_auc})
    oof = pd.concat(oof_parts).sort_values("patient_id").reset_index(drop=True)[PREDICTION_COLUMNS]
    test = rows.iloc[test_idx].copy()
    test["fold"] = -1
    test["p_her2"] = np.mean(test_probs, axis=0) if test_probs else np.zeros(0)
    test = test.sort_values("patient_id").reset_index(drop=True)[PREDICTION_COLUMNS]
    test_folds = (pd.concat(test_fold_parts).sort_values(["patient_id", "model_fold"]).reset_index(drop=True)
                  [TEST_FOLD_COLUMNS] if test_fold_parts else pd.DataFrame(columns=TEST_FOLD_COLUMNS))
    history = pd.DataFrame(hist)
    write_csv(out_dir / "metrics.csv", history)
    return CVResult(oof=oof, test=test, history=history, summary=pd.DataFrame(summ), test_folds=test_folds,
                    selection=selection)


def load_fold_model(models_dir: str | os.PathLike, fold: int, device: str = "cpu") -> nn.Module:
    """The best model of one fold, in eval mode (for prediction and Grad-CAM).

    Parameters
    ----------
    models_dir : path
        A model folder written by :func:`run_cv` (``run.models / "dl_us"`` or ``"dl_mri"``), holding
        ``config.json`` and ``fold{k}.pt``.
    fold : int
    device : str

    Returns
    -------
    torch.nn.Module
    """
    models_dir = Path(models_dir)
    cfg_path, ck_path = models_dir / "config.json", models_dir / f"fold{fold}.pt"
    for p in (cfg_path, ck_path):
        if not p.exists():
            raise ParameterError(f"{p} does not exist; train the model first (notebooks 03/04) or check "
                                 "models_dir / fold.")
    cfg = config_from_dict(json.loads(cfg_path.read_text(encoding="utf-8"))["config"])
    cfg.checkpoint = None  # the fold file holds all weights
    model = build_model(cfg)
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    if not ck.get("complete"):
        raise ParameterError(f"{ck_path}: fold {fold} did not finish training; re-run the training notebook.")
    model.load_state_dict(ck["model"])
    return model.to(resolve_device(device)).eval()


def write_predictions(result: CVResult, predictions_dir: str | os.PathLike, prefix: str) -> list[Path]:
    """Write ``{prefix}_oof.csv``, ``{prefix}_test.csv`` (columns ``patient_id, split, fold, her2, p_her2``; test =
    mean of the fold models) and ``{prefix}_test_folds.csv`` (:data:`TEST_FOLD_COLUMNS`, each fold model's test
    probability)."""
    if prefix not in ("us", "mri"):
        raise ParameterError(f"prefix={prefix!r}: use 'us' or 'mri'.")
    d = Path(predictions_dir)
    out = [write_csv(d / f"{prefix}_oof.csv", result.oof), write_csv(d / f"{prefix}_test.csv", result.test)]
    if result.test_folds is not None:
        out.append(write_csv(d / f"{prefix}_test_folds.csv", result.test_folds))
    return out


def plot_learning_curves(history: pd.DataFrame | None, path: str | os.PathLike | None = None, title: str = "",
                         selection: str = "inner"):
    """Learning curves: training/held-out loss and held-out AUC per epoch, one line per fold.

    ``history=None`` (training skipped, see :func:`train_modality`) draws nothing and returns None.

    Parameters
    ----------
    history : pandas.DataFrame
        ``CVResult.history``.
    path : path, optional
        PNG written atomically.
    title : str
    selection : {"inner", "heldout"}
        Which set the solid lines and the chosen epoch refer to (:data:`SELECTIONS`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if history is None:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, h in history.groupby("fold"):
        ep = h["epoch"]  # 1-based
        line, = axes[0].plot(ep, h["train_loss"], ls="--", lw=1)
        axes[0].plot(ep, h["val_loss"], color=line.get_color(), lw=1.2, label=f"fold {k}")
        axes[1].plot(ep, h["val_auc"], color=line.get_color(), lw=1.2, label=f"fold {k}")
        best = h.loc[h["val_auc"].fillna(-1).idxmax()]
        axes[1].plot(best["epoch"], best["val_auc"], "o", color=line.get_color(), ms=4)
    where = "inner validation split" if selection == "inner" else "held-out fold"
    axes[0].set(xlabel="epoch", ylabel="loss", title=f"loss (dashed: training, solid: {where})")
    axes[1].set(xlabel="epoch", ylabel="AUC", title=f"{where} AUC (dot: chosen epoch)", ylim=(0, 1))
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig


def train_modality(run, cohort: pd.DataFrame, modality: str, spec, cfg: DLUSConfig | DLMRIConfig, *,
                   seed: int = 0, device: str = "auto", augment: AugmentSpec | None = AugmentSpec(),
                   resume: bool = True, checkpoint_every: int = 1, progress: bool = True, selection: str = "inner",
                   inner_fraction: float = 0.2) -> CVResult | None:
    """Everything of notebooks 03/04 for one modality, or nothing when the cohort lacks that modality.

    Parameters
    ----------
    run : her2lib.nb.RunDirs
        Reads ``run.cache`` (ROIs of notebook 02) and ``run.predictions/folds.csv``; writes the fold models
        under ``run.models/dl_<modality>``, ``run.predictions/<modality>_{oof,test}.csv`` and
        ``run.tables/dl_<modality>_folds.csv``.
    cohort : pandas.DataFrame
        From :func:`her2lib.data.load_cohort`.
    modality : {"us", "mri"}
    spec : her2lib.roi.PreprocessSpec
        The ROI settings of notebook 02.
    cfg : DLUSConfig or DLMRIConfig
    seed, device, augment, resume, checkpoint_every, progress, selection, inner_fraction
        As :func:`run_cv`.

    Returns
    -------
    CVResult or None
        None (after printing a notice and removing stale ``<modality>_{oof,test}.csv`` of an earlier run in the
        same folder, so later notebooks cannot use them) when no patient has an image of ``modality``.
    """
    from . import stages as nb
    from .contract import modality as _mod
    from .roi import preprocess_cohort

    if modality not in ("us", "mri"):
        raise ParameterError(f"modality={modality!r}: use 'us' or 'mri'.")
    if not nb.modality_present(cohort, modality, quiet=True):
        name, model = _mod(modality).name, _mod(modality).label
        nb.notice(f"No {name} images in this cohort: {model} is skipped (nothing is trained, no predictions "
                  f"are written; the fusion and the later {model} steps are skipped too).")
        for split in ("oof", "test", "test_folds"):
            (Path(run.predictions) / f"{modality}_{split}.csv").unlink(missing_ok=True)
        return None
    x, _, _ = preprocess_cohort(cohort, modality, spec, run.cache, progress=progress)
    folds = read_folds(Path(run.predictions) / "folds.csv", cohort)
    print("inputs:", x.shape)
    result = run_cv(cohort, x, cfg, folds, Path(run.models) / f"dl_{modality}", seed=seed, device=device,
                    augment=augment, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                    selection=selection, inner_fraction=inner_fraction)
    write_predictions(result, run.predictions, modality)
    write_csv(Path(run.tables) / f"dl_{modality}_folds.csv", result.summary)
    return result


def oof_performance(result: CVResult | None, threshold: float = 0.5) -> dict[str, float] | None:
    """:func:`epoch_metrics` of the out-of-fold predictions of ``result`` (None when training was skipped)."""
    if result is None:
        return None
    return epoch_metrics(result.oof["her2"].to_numpy(), result.oof["p_her2"].to_numpy(), threshold)
