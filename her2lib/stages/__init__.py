"""Stages layer: one function per numbered notebook.

Each stage takes the run's folders (:class:`RunDirs`) and the notebook's parameters, reads the files earlier
stages wrote, calls the science modules, writes its own files, and owns the notices a notebook prints when it
skips what the cohort cannot support (a missing modality).

Imports point one way: runner -> stages -> science -> core (tests/test_architecture.py checks it).
"""

from ._common import RunDirs, modality_present, notice, remove_stale

__all__ = ["RunDirs", "notice", "modality_present", "remove_stale"]
