"""Four-fold cross-validation of DL-US and DL-MRI (Methods: "Four-fold cross-validation is used for both
training and evaluation"; "Stratified sampling was used to divide the dataset for cross-validation").

Science layer. Modules: :mod:`~her2lib.train.config` (:class:`TrainConfig`: how a model is trained),
:mod:`~her2lib.train.folds` (folds, inner split), :mod:`~her2lib.train.runtime` (device, precision, determinism,
prediction, metrics), :mod:`~her2lib.train.optim` (optimiser, schedule, Mixup), :mod:`~her2lib.train.stopping` (the
epoch-selection and early-stopping rule, and its replay over a finished fold's history), :mod:`~her2lib.train.loop`
(one fold: epochs, checkpoints, resume) and :mod:`~her2lib.train.cv` (cross-validation, prediction files, fold
models).

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

Repeated cross-validation (:func:`run_repeated_cv`): repetition ``r`` has its own folds and training seed
(:func:`repeat_seed`; repetition 0 is the single run, byte for byte) and its own model folder; every repetition's
fold jobs go to the executor (:mod:`~her2lib.train.executors`) in one submission.

Epochs are 1-based in every file and figure (``metrics.csv``, ``dl_*_folds.csv``, learning curves). For
reproducibility and resuming see :mod:`her2lib.train.loop`.
"""

import importlib as _importlib
from typing import Any as _Any

from . import config, folds, stopping
from .config import PAPER_TRAINING, TrainConfig
from .folds import assign_folds, inner_split, read_folds, repeat_seed, write_folds
from .stopping import replay_early_stopping

#: names loaded from their submodule on first use: those submodules import torch, timm and MONAI (seconds), which
#: the notebooks that only need the folds or the training configuration (02, 05) never load
_LAZY = {
    **dict.fromkeys(
        (
            "SELECTION_SETS",
            "SELECTIONS",
            "CVResult",
            "load_fold_model",
            "oof_performance",
            "run_cv",
            "run_repeated_cv",
            "write_predictions",
        ),
        "cv",
    ),
    **dict.fromkeys(("EpochHook", "FoldResult", "fit_fold", "place_inputs", "train_one_epoch"), "loop"),
    **dict.fromkeys(("make_mixup", "make_optimizer", "make_scheduler"), "optim"),
    **dict.fromkeys(("epoch_metrics", "predict_proba", "resolve_device"), "runtime"),
}
_SUBMODULES = ("cv", "executors", "loop", "optim", "runtime")


def __getattr__(name: str) -> _Any:
    """A lazily loaded name, looked up in its submodule each time (not cached here, so a test that patches the
    submodule's attribute is seen through the package too)."""
    if name in _SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(__all__) | {k for k in globals() if not k.startswith("_")})


__all__ = [
    "TrainConfig",
    "PAPER_TRAINING",
    "assign_folds",
    "read_folds",
    "write_folds",
    "inner_split",
    "repeat_seed",
    "replay_early_stopping",
    "resolve_device",
    "epoch_metrics",
    "predict_proba",
    "fit_fold",
    "train_one_epoch",
    "place_inputs",
    "make_optimizer",
    "make_scheduler",
    "make_mixup",
    "EpochHook",
    "FoldResult",
    "CVResult",
    "SELECTIONS",
    "SELECTION_SETS",
    "run_cv",
    "run_repeated_cv",
    "load_fold_model",
    "write_predictions",
    "oof_performance",
    "config",
    "cv",
    "executors",
    "folds",
    "loop",
    "optim",
    "runtime",
    "stopping",
]
