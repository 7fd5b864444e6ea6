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
06_evaluation             :func:`run_evaluation`                                       :mod:`.evaluation`
07_gradcam                :func:`run_gradcam`                                          :mod:`.gradcam`
========================  ===========================================================  =====================

Imports point one way: runner -> stages -> science -> core (tests/test_architecture.py checks it).
"""

from ._common import RunDirs, modality_present, notice, remove_stale
from .cohort import CohortCounts, cohort_counts, cohort_tables, draw_gallery, prepare_cohort
from .evaluation import run_evaluation
from .fusion import run_fusion
from .gradcam import GradCAMRun, run_gradcam
from .preprocess import Preprocessed, preprocess_modalities
from .training import train_modality

__all__ = [
    "RunDirs",
    "notice",
    "modality_present",
    "remove_stale",
    "prepare_cohort",
    "cohort_counts",
    "CohortCounts",
    "draw_gallery",
    "cohort_tables",
    "preprocess_modalities",
    "Preprocessed",
    "train_modality",
    "run_fusion",
    "run_evaluation",
    "run_gradcam",
    "GradCAMRun",
]
