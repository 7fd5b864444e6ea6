"""What every stage shares: the run's output folders (:class:`RunDirs`) and the notices a stage prints when it
skips what a cohort cannot support (single-modality cohorts, e.g. the MRI-only MAMA-MIA and Duke imports).

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..contract import modality as _modality
from ..contract import resolve_path
from ..data import available_modalities

__all__ = [
    "RunDirs",
    "PROGRESS_LOG",
    "REPEATS_DIR",
    "notice",
    "modality_present",
    "remove_stale",
    "log_progress",
]


#: Where in a run folder the training progress is logged (:func:`log_progress`), relative to the folder.
PROGRESS_LOG = Path("logs") / "progress.jsonl"


#: Subfolder of ``predictions/``, ``tables/``, ``figures/`` and ``models/`` holding repetitions 1, 2, ... of a
#: repeated cross-validation (``repeats/r1``, ...); repetition 0 is the single run, in the folders themselves.
REPEATS_DIR = "repeats"


@dataclass(frozen=True)
class RunDirs:
    """Output layout of one pipeline run (all absolute paths).

    ``out_dir`` has a fixed layout (``figures/``, ``tables/``, ``predictions/``, ``models/``, ``cache/``,
    ``params/``); a stage writes only there and reads only earlier stages' files or the cohort.
    """

    root: Path
    figures: Path
    tables: Path
    predictions: Path
    models: Path
    cache: Path
    params: Path
    cohort_dir: Path

    @property
    def manifest(self) -> Path:
        """The cohort's manifest (``cohort_dir / "manifest.csv"``)."""
        return self.cohort_dir / "manifest.csv"

    @property
    def progress_log(self) -> Path:
        """``logs/progress.jsonl``: one JSON line per training epoch, which the batch runner shows live."""
        return self.root / PROGRESS_LOG

    def repeat(self, r: int) -> RunDirs:
        """The folders of repetition ``r`` of a repeated cross-validation (created): ``self`` for ``r = 0``;
        otherwise ``predictions``, ``tables``, ``figures`` and ``models`` are their ``repeats/r{r}`` subfolders and
        the cohort, ROI cache, parameters and progress log are shared."""
        if int(r) == 0:
            return self
        sub = Path(REPEATS_DIR) / f"r{int(r)}"
        dirs = replace(
            self,
            figures=self.figures / sub,
            tables=self.tables / sub,
            predictions=self.predictions / sub,
            models=self.models / sub,
        )
        for d in (dirs.figures, dirs.tables, dirs.predictions, dirs.models):
            d.mkdir(parents=True, exist_ok=True)
        return dirs

    def repeats(self) -> list[int]:
        """The repetitions notebook 02 set up: 0 and every ``r`` with ``predictions/repeats/r{r}/folds.csv``."""
        found = (_repeat_number(p.parent.name) for p in (self.predictions / REPEATS_DIR).glob("r*/folds.csv"))
        return [0, *sorted(r for r in found if r is not None)]

    def remove_repeats(self, *, keep: int) -> list[Path]:
        """Remove the prediction, table and figure folders of repetitions ``r >= keep`` (an earlier run's, when this
        one has fewer); their fold models stay in ``models/repeats`` (reused by fingerprint if they come back)."""
        removed = []
        for base in (self.predictions, self.tables, self.figures):
            for d in sorted((base / REPEATS_DIR).glob("r*")):
                r = _repeat_number(d.name)
                if r is not None and r >= keep and d.is_dir():
                    shutil.rmtree(d)
                    removed.append(d)
        return removed

    @classmethod
    def from_out_dir(cls, out_dir: str | os.PathLike, cohort_dir: str | os.PathLike) -> RunDirs:
        root = resolve_path(out_dir)
        dirs = cls(
            root=root,
            figures=root / "figures",
            tables=root / "tables",
            predictions=root / "predictions",
            models=root / "models",
            cache=root / "cache",
            params=root / "params",
            cohort_dir=resolve_path(cohort_dir),
        )
        for d in (dirs.figures, dirs.tables, dirs.predictions, dirs.models, dirs.cache, dirs.params):
            d.mkdir(parents=True, exist_ok=True)
        return dirs


def _repeat_number(name: str) -> int | None:
    """``r`` of a repetition folder's name ``r{r}`` (``r >= 1``), else None."""
    m = re.fullmatch(r"r([1-9][0-9]*)", name)
    return int(m.group(1)) if m else None


def remove_stale(*paths: str | os.PathLike) -> list[Path]:
    """Delete outputs an earlier run left in the run folder that this run will not rewrite (a step skipped now).

    Parameters
    ----------
    *paths : path-like
        Files to remove; absent ones are ignored.

    Returns
    -------
    list of Path
        The files that existed and were removed.
    """
    removed = []
    for p in map(Path, paths):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def log_progress(run: RunDirs, event: str, **fields: Any) -> dict[str, Any]:
    """Append one progress event to :attr:`RunDirs.progress_log` (a JSON line, written and flushed at once).

    The batch runner (:mod:`her2lib.runner.progress`) follows this file while a notebook runs and shows the
    current model, fold and epoch with an ETA. It is an append-only log, not a result: a line cut short by a
    killed run is skipped by the reader.

    Parameters
    ----------
    run : RunDirs
    event : str
        ``"start"`` (fields ``model``, ``total`` epochs to train), ``"epoch"`` (``model``, ``fold``, ``n_folds``,
        ``epoch`` (1-based), ``epochs``, losses and AUC) or ``"end"`` (``model``).
    **fields
        JSON-serialisable values.

    Returns
    -------
    dict
        The event written (with ``event`` and the wall-clock time ``t`` in seconds).
    """
    record = {"event": event, "t": round(time.time(), 3), **fields}
    run.progress_log.parent.mkdir(parents=True, exist_ok=True)
    with open(run.progress_log, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
    return record


def notice(message: str) -> str:
    """Print a markdown-style notice into the notebook output (``> **Note.** message``) and return the text.

    Parameters
    ----------
    message : str
        What is skipped and why, in words a reader of the notebook understands.

    Returns
    -------
    str
        The printed line.
    """
    line = f"> **Note.** {message}"
    print(line, flush=True)
    return line


def modality_present(cohort, modality: str, what: str | None = None, *, quiet: bool = False) -> bool:
    """Whether ``cohort`` has images of ``modality``; if not, print a notice that ``what`` is skipped.

    Parameters
    ----------
    cohort : pandas.DataFrame
        From :func:`her2lib.data.load_cohort`.
    modality : {"us", "mri"}
    what : str, optional
        The step that needs the modality (default: the modality's model, ``DL-US`` / ``DL-MRI``).
    quiet : bool
        Do not print the notice.

    Returns
    -------
    bool
        True when at least one patient has an image of ``modality``.
    """
    mod = _modality(modality)
    present = modality in available_modalities(cohort, require_all=False)
    if not present and not quiet:
        notice(f"No {mod.name} images in this cohort: {what or mod.label} is skipped.")
    return present
