"""Stages of notebooks 00 (the cohort: build or import it, count it, show it) and 01 (cohort tables).

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import synth
from ..adapters import IMPORTERS
from ..contract import PAPER_SPLITS, resolve_path
from ..errors import DataError, ParameterError
from ..figures.cohort import cohort_gallery
from ..io import write_csv
from ..options import look_up_option
from ..stats.tables import CohortTables
from ..stats.tables import cohort_tables as _cohort_tables
from ._common import RunDirs, notice

__all__ = ["SOURCES", "prepare_cohort", "CohortCounts", "cohort_counts", "draw_gallery", "cohort_tables"]

#: Where notebook 00's patients come from (its ``source`` parameter).
SOURCES: tuple[str, ...] = ("synthetic", "manifest", *IMPORTERS)


# ----------------------------------------------------------------------------------------------------------
# Notebook 00
# ----------------------------------------------------------------------------------------------------------
def _import_is_current(
    rec: Path, source: str, source_dir: Path, seed: int, test_fraction: float, external: list[str]
) -> bool:
    """Whether ``import_params.json`` records an import of the same source, folder, seed, test fraction and
    external collections."""
    old = json.loads(rec.read_text())
    return (
        old.get("source") == source
        and old.get("source_dir") == str(source_dir.resolve())
        and old.get("seed") == seed
        and old.get("test_fraction") == test_fraction
        and old.get("external_datasets", []) == external
    )


def prepare_cohort(
    cohort_dir: str | os.PathLike,
    *,
    source: str = "synthetic",
    source_dir: str | os.PathLike | None = None,
    n_patients: int = 197,
    seed: int = 0,
    test_fraction: float = 48 / 197,
    progress: bool = True,
    external_datasets: Sequence[str] = (),
    **knobs: Any,
) -> Path:
    """Build, import or locate the cohort; return its manifest (reuse it when built with the same parameters).

    Parameters
    ----------
    cohort_dir : path-like
        The cohort folder (relative paths are relative to the repository root).
    source : {"synthetic", "manifest", "mama-mia", "duke"}
        ``synthetic``: build with :func:`her2lib.synth.make_cohort` unless ``cohort_dir/synth_params.json``
        records the same parameters and the manifest exists. ``manifest``: use ``cohort_dir/manifest.csv`` as is.
        ``mama-mia`` / ``duke``: import from ``source_dir`` into ``cohort_dir`` with
        :data:`her2lib.adapters.IMPORTERS` (skipped when ``import_params.json`` matches).
    source_dir : path-like, optional
        Root of the real data set (``mama-mia``, ``duke``).
    n_patients, seed, **knobs
        Synthetic cohort size, seed and :class:`her2lib.synth.SynthKnobs`; ``seed`` also seeds the real-data split.
    test_fraction : float
        Test fraction of the real-data split.
    external_datasets : sequence of str
        ``mama-mia`` only: the source collections (e.g. ``["DUKE"]``) imported as the external validation cohort
        (:func:`her2lib.adapters.import_mama_mia`).
    progress : bool
        Show progress bars.

    Returns
    -------
    pathlib.Path
        ``cohort_dir / "manifest.csv"``.
    """
    look_up_option(source, SOURCES, name="source")
    if external_datasets and source != "mama-mia":
        raise ParameterError(
            f"external_datasets={list(external_datasets)} marks collections of MAMA-MIA as external; with "
            f"source={source!r} put split = external in the manifest instead (or n_external for a synthetic site)."
        )
    cdir = resolve_path(cohort_dir)
    manifest = cdir / "manifest.csv"
    if source == "synthetic":
        params = synth.synth_params(n_patients, seed, **knobs)
        rec = cdir / "synth_params.json"
        if manifest.is_file() and rec.is_file() and json.loads(rec.read_text()) == params:
            return manifest
        return synth.make_cohort(cdir, n_patients=n_patients, seed=seed, progress=progress, **knobs)
    if source == "manifest":
        if not manifest.is_file():
            raise DataError(f"{manifest}: not found; with source='manifest' cohort_dir must hold manifest.csv.")
        return manifest
    if not source_dir:
        raise ParameterError(f"source={source!r} needs source_dir (the data set's root folder).")
    src = resolve_path(source_dir)
    rec = cdir / "import_params.json"
    external = [str(d) for d in external_datasets]
    if manifest.is_file() and rec.is_file() and _import_is_current(rec, source, src, seed, test_fraction, external):
        return manifest
    extra = {"external_datasets": external} if external else {}
    return IMPORTERS[source](src, cdir, test_fraction=test_fraction, seed=seed, **extra)


@dataclass(frozen=True)
class CohortCounts:
    """Patients per split and HER2 status, and the categorical counts beside the paper's (notebook 00).

    Attributes
    ----------
    split : DataFrame
        Split x HER2 status crosstab with margins (``tables/cohort_split_counts.csv``).
    vs_paper : DataFrame
        :func:`her2lib.synth.paper_count_table` (``tables/cohort_counts_vs_paper.csv``).
    agrees : Series of bool
        :func:`her2lib.synth.paper_count_agreement`: per variable, whether every count is the paper's (scaled).
    """

    split: pd.DataFrame
    vs_paper: pd.DataFrame
    agrees: pd.Series


def cohort_counts(run: RunDirs, cohort: pd.DataFrame) -> CohortCounts:
    """Count the patients per split and HER2 status and every categorical level against the paper's Tables 1-3;
    write ``tables/cohort_split_counts.csv`` and ``tables/cohort_counts_vs_paper.csv``.

    Parameters
    ----------
    run : RunDirs
    cohort : DataFrame
        From :func:`her2lib.data.load_cohort`.
    """
    split = pd.crosstab(cohort["split"], cohort["her2"].map({0: "HER2-negative", 1: "HER2-positive"}), margins=True)
    write_csv(run.tables / "cohort_split_counts.csv", split.reset_index())
    vs_paper = synth.paper_count_table(cohort)
    write_csv(run.tables / "cohort_counts_vs_paper.csv", vs_paper)
    return CohortCounts(split, vs_paper, synth.paper_count_agreement(vs_paper))


def draw_gallery(run: RunDirs, cohort: pd.DataFrame, *, n_per_class: int = 3, seed: int = 0) -> Path:
    """Draw the cohort gallery (:func:`her2lib.figures.cohort.cohort_gallery`) to ``figures/cohort_gallery.png``
    and return that path."""
    path = run.figures / "cohort_gallery.png"
    cohort_gallery(cohort, path, n_per_class=n_per_class, seed=seed)
    return path


# ----------------------------------------------------------------------------------------------------------
# Notebook 01
# ----------------------------------------------------------------------------------------------------------
def cohort_tables(run: RunDirs, cohort: pd.DataFrame, *, alpha: float = 0.05) -> CohortTables:
    """Compute the cohort tables (:func:`her2lib.stats.tables.cohort_tables`), say which variables and tables the
    cohort could not fill, and write each table to ``tables/<name>.csv``.

    Parameters
    ----------
    run : RunDirs
    cohort : DataFrame
        From :func:`her2lib.data.load_cohort`.
    alpha : float
        Shapiro-Wilk level for continuous variables.

    Returns
    -------
    CohortTables
        ``result[name]`` is the table written to ``tables/<name>.csv``.
    """
    paper = cohort[cohort["split"].isin(PAPER_SPLITS)]
    if len(paper) < len(cohort):
        notice(
            f"{len(cohort) - len(paper)} external-validation patients are not in Tables 1-3 (training vs test "
            "cohort, as the paper's)."
        )
    result = _cohort_tables(paper, alpha=alpha)
    if result.absent:
        notice(
            f"The cohort has no column for {len(result.absent)} variable(s) of Tables 1-3, left out of the "
            f"tables: {', '.join(result.absent)}."
        )
    for name in result.empty:
        notice(f"{name}: none of its variables is in the cohort; the table is empty.")
    for name, table in result.tables.items():
        write_csv(run.tables / f"{name}.csv", table)
    return result
