"""Stages layer: one function per numbered notebook.

Each stage takes the run's folders (:class:`RunDirs`) and the notebook's parameters, reads the files earlier
stages wrote, calls the science modules, writes its own files, and owns the notices a notebook prints when it
skips what the cohort cannot support (a missing modality), including removing an earlier run's stale outputs.

========================  ===========================================================  =====================
notebook                  stage                                                        module
========================  ===========================================================  =====================
00_cohort                 :func:`prepare_cohort`, :func:`cohort_counts`,               :mod:`.cohort`
                          :func:`draw_gallery`
01_cohort_tables          :func:`cohort_tables`                                        :mod:`.cohort`
02_preprocess             :func:`preprocess_modalities`                                :mod:`.preprocess`
03_train_us, 04_train_mri :func:`train_modality`                                       :mod:`.training`
05_fusion                 :func:`run_fusion`                                           :mod:`.fusion`
06_evaluation             :func:`run_evaluation`, :func:`evaluate_repetitions`         :mod:`.evaluation`
07_gradcam                :func:`run_gradcam`                                          :mod:`.gradcam`
========================  ===========================================================  =====================

Imports point one way: runner -> stages -> science -> core (tests/test_architecture.py checks it).
"""

from importlib import import_module

from ._common import PROGRESS_LOG as PROGRESS_LOG  # the runner follows this log (not a stage)
from ._common import RunDirs, log_progress, modality_present, notice, remove_stale

# The stage functions load on first use (PEP 562): the training and Grad-CAM stages import torch, timm and
# MONAI, which every notebook's ``setup`` (it needs only RunDirs) and the tables notebooks must not pay for.
_STAGES = {
    "prepare_cohort": "cohort",
    "cohort_counts": "cohort",
    "CohortCounts": "cohort",
    "draw_gallery": "cohort",
    "cohort_tables": "cohort",
    "preprocess_modalities": "preprocess",
    "Preprocessed": "preprocess",
    "train_modality": "training",
    "run_fusion": "fusion",
    "run_evaluation": "evaluation",
    "evaluate_repetitions": "evaluation",
    "run_gradcam": "gradcam",
    "GradCAMRun": "gradcam",
}

__all__ = ["RunDirs", "notice", "modality_present", "remove_stale", "log_progress", *_STAGES]


def __getattr__(name: str):
    if name in _STAGES:
        return getattr(import_module(f".{_STAGES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_STAGES))
