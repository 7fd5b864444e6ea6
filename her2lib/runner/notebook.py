"""Notebook set-up: the one ``setup`` call every numbered notebook makes after its ``parameters`` cell.

Runner layer. Contract (shared by all notebooks and the batch runner, :mod:`her2lib.runner.pipeline`):

* Every notebook's first code cell is tagged ``parameters`` and assigns one name per line
  (``name: type = value  # comment``). It always declares the common parameters ``profile``, ``seed``,
  ``out_dir`` and ``cohort_dir``.
* Relative paths are relative to the repository root, whatever the kernel's working directory.
* ``out_dir`` has a fixed layout (``figures/``, ``tables/``, ``predictions/``, ``models/``, ``cache/``,
  ``params/``); a notebook writes only there and reads only earlier notebooks' files or the cohort.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..contract import REPO_ROOT
from ..errors import ParameterError
from ..io import write_json
from ..stages import RunDirs, notice

__all__ = ["NOTEBOOK_DIR", "COMMON_PARAMETERS", "setup", "parameter_names", "parameters_cell", "get", "show_image"]

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
COMMON_PARAMETERS = ("profile", "seed", "out_dir", "cohort_dir")


def parameters_cell(notebook: str | os.PathLike) -> str:
    """Source of the code cell tagged ``parameters`` in ``notebook`` (a path, or a stem like ``"03_train_us"``)."""
    path = Path(notebook)
    if path.suffix != ".ipynb":
        path = NOTEBOOK_DIR / f"{notebook}.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    raise ParameterError(
        f"{path}: no code cell is tagged 'parameters'; tag the first code cell "
        "'parameters' (JupyterLab: property inspector > cell tags)."
    )


def parameter_names(notebook: str | os.PathLike) -> list[str]:
    """Names assigned in the notebook's ``parameters`` cell, in order."""
    tree = ast.parse(parameters_cell(notebook))
    names: list[str] = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for t in targets:
            if isinstance(t, ast.Name) and t.id not in names:
                names.append(t.id)
    return names


def setup(notebook: str, namespace: Mapping[str, Any]) -> RunDirs:
    """Collect ``notebook``'s parameters from ``namespace`` (pass ``globals()``), create the output layout
    and record the parameters in ``out_dir/params/<notebook>.json``.

    Parameters
    ----------
    notebook : str
        The notebook's stem, e.g. ``"03_train_us"`` (its committed copy in ``notebooks/`` defines the names),
        or a path to a notebook file.
    namespace : mapping
        Where the parameter values live after papermill injection (the notebook's ``globals()``).

    Returns
    -------
    RunDirs
        Absolute output folders of this run.
    """
    names = parameter_names(notebook)
    stem = Path(notebook).stem
    missing_common = [n for n in COMMON_PARAMETERS if n not in names]
    if missing_common:
        raise ParameterError(f"{stem}.ipynb: the parameters cell must declare {missing_common}.")
    params = {n: namespace[n] for n in names if n in namespace}
    dirs = RunDirs.from_out_dir(params["out_dir"], params["cohort_dir"])
    write_json(dirs.params / f"{stem}.json", params)
    return dirs


def get(obj: Any, attribute: str) -> Any:
    """``obj.attribute``, or None when ``obj`` is None (a skipped step); a cell ending in None shows nothing."""
    return None if obj is None else getattr(obj, attribute)


def show_image(path: str | os.PathLike, width: int | None = None):
    """An ``IPython.display.Image`` of ``path`` to show as a cell's last expression, or None (with a notice)
    when the figure was not made (its step was skipped)."""
    from IPython.display import Image  # lazy: IPython is only needed inside a notebook

    p = Path(path)
    if not p.is_file():
        notice(f"{p.name} was not made in this run (its step was skipped).")
        return None
    return Image(filename=str(p), width=width)
