"""Batch runner: execute the numbered notebooks in order with papermill, one profile at a time.

Usage::

    python -m her2lib.runner --profile default            # all notebooks -> reports/default/
    python -m her2lib.runner --profile smoke --out /tmp/x  # another output folder
    python -m her2lib.runner --profile default --only 05 06
    python -m her2lib.runner --profile default --from 03
    python -m her2lib.runner --profile paper --dry-run      # every notebook at paper sizes, in minutes

A profile (``configs/<profile>.yaml``) has a ``common`` section injected into every notebook and a
``notebooks`` section with one mapping per notebook stem. Every injected name must exist in that notebook's
``parameters`` cell: an unknown name is a :class:`~her2lib.errors.ParameterError` raised before anything runs.

The output folder receives ``notebooks/`` (executed copies), the folders the notebooks write
(``figures/``, ``tables/``, ``predictions/`` ...), ``provenance.json`` (rewritten after every notebook) and
``index.html``. A failing notebook stops the batch with exit status 1; its partial copy is kept as
``notebooks/<stem>.failed.ipynb`` and every earlier output stays as it was.

One batch at a time writes into an output folder (:mod:`~her2lib.runner.lock`): a second one started there stops
with a message naming the first. Ctrl-C (or SIGTERM) stops the running notebook's kernel, releases the folder and
prints the command that resumes (exit status 130); after a SIGKILL the same command, or ``--from NN``, clears the
stale lock and the temporary files and goes on from the last checkpoint, ending with the same outputs as an
uninterrupted run. A full or read-only disk stops the batch with ``error: Cannot write <path>: ...`` and the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..contract import REPO_ROOT, resolve_path
from ..errors import Her2libError, ParameterError
from ..io import output_error
from ..options import did_you_mean
from ..stages import PROGRESS_LOG
from . import lock, provenance
from .notebook import NOTEBOOK_DIR, parameter_names
from .progress import ProgressMonitor
from .report import write_index

__all__ = [
    "CONFIG_DIR",
    "PROFILES",
    "DRY_RUN",
    "dry_run_profile",
    "load_profile",
    "list_notebooks",
    "plan",
    "run_pipeline",
    "NotebookFailed",
    "main",
]

CONFIG_DIR = REPO_ROOT / "configs"
PROFILES = ("smoke", "default", "paper")
#: Kernel command-line options: the kernel's own log (e.g. "Kernel is running over TCP without encryption", on
#: a kernel bound to 127.0.0.1) stays out of the user's terminal; notebook output and errors are unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
_NB_PATTERN = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


#: What ``--dry-run`` changes in a profile: training stops after 2 batches of each of 2 epochs (so a resume state
#: is written and read back), Grad-CAM maps 2 patients plus the Figure-4 cases, the resampling tests run short.
#: Everything else (cohort, input sizes, models, batch size, precision, target layers) stays the profile's.
DRY_RUN: dict[str, dict[str, Any]] = {
    "03_train_us": {"epochs": 2, "max_steps": 2, "checkpoint_every": 1},
    "04_train_mri": {"epochs": 2, "max_steps": 2, "checkpoint_every": 1},
    "05_fusion": {"n_boot": 100},
    "06_evaluation": {"n_boot": 100},
    "07_gradcam": {"max_patients": 2, "n_permutations": 99},
}


def dry_run_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` (from :func:`load_profile`) with the :data:`DRY_RUN` overrides, named ``<name>-dry-run``.

    >>> p = dry_run_profile({"name": "paper", "path": "paper.yaml", "common": {}, "notebooks": {"03_train_us": {"epochs": 300}}})
    >>> p["name"], p["notebooks"]["03_train_us"]["epochs"], p["notebooks"]["03_train_us"]["max_steps"]
    ('paper-dry-run', 2, 2)
    """
    notebooks = {k: dict(v) for k, v in profile["notebooks"].items()}
    for stem, overrides in DRY_RUN.items():
        notebooks[stem] = {**notebooks.get(stem, {}), **overrides}
    name = f"{profile['name']}-dry-run"
    return {**profile, "name": name, "common": {**profile["common"], "profile": name}, "notebooks": notebooks}


class NotebookFailed(Her2libError):
    """A notebook raised while executing; names the notebook, the cell and the partial copy kept."""


@dataclass(frozen=True)
class Step:
    """One notebook to run and the parameters injected into it."""

    number: str
    stem: str
    path: Path
    parameters: dict[str, Any] = field(default_factory=dict)


def load_profile(profile: str | os.PathLike, config_dir: str | os.PathLike = CONFIG_DIR) -> dict[str, Any]:
    """Read and check a profile.

    Parameters
    ----------
    profile : str or path
        A profile name (``smoke``, ``default``, ``paper`` or any ``configs/<name>.yaml``) or a YAML path.
    config_dir : path
        Where named profiles live.

    Returns
    -------
    dict
        ``{"name": str, "path": Path, "common": dict, "notebooks": {stem: dict}}``.
    """
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(config_dir) / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
        raise ParameterError(
            f"Unknown profile {str(profile)!r}: {path} does not exist. Known profiles: "
            f"{known}.{did_you_mean(str(profile), known)}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({exc}). Fix the file.") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping with 'common' and 'notebooks', got {type(data).__name__}.")
    unknown = set(data) - {"common", "notebooks"}
    if unknown:
        bad = sorted(unknown)[0]
        raise ParameterError(
            f"{path}: unknown top-level key {bad!r}; allowed: 'common', 'notebooks'."
            f"{did_you_mean(bad, ['common', 'notebooks'])}"
        )
    common = data.get("common") or {}
    notebooks = data.get("notebooks") or {}
    for key, section in [("common", common)] + [(f"notebooks.{k}", v) for k, v in notebooks.items()]:
        if not isinstance(section, dict):
            raise ParameterError(f"{path}: section {key!r} must be a mapping of parameter: value.")
    if "out_dir" in common:
        raise ParameterError(f"{path}: 'out_dir' is set by the runner (--out), remove it from 'common'.")
    return {
        "name": common.get("profile", path.stem),
        "path": path,
        "common": dict(common),
        "notebooks": {str(k): dict(v) for k, v in notebooks.items()},
    }


def apply_overrides(
    profile: dict[str, Any], overrides: Sequence[str], *, notebook_dir: str | os.PathLike = NOTEBOOK_DIR
) -> dict[str, Any]:
    """A copy of ``profile`` with ``--set`` overrides applied.

    Parameters
    ----------
    profile : dict
        From :func:`load_profile`.
    overrides : sequence of str
        ``SECTION.NAME=VALUE``: ``SECTION`` is ``common``, a notebook's stem (``02_preprocess``) or its number
        (``02``); ``VALUE`` is read as YAML (``5``, ``1e-3``, ``true``, ``[96, 96]``, ``ray``). Later ones win. The
        run folder is still ``--out`` (default ``reports/<profile>/``): give another ``--out`` for a variant you
        want to keep beside the profile's own run.

    Returns
    -------
    dict
        The profile with the values set and ``overrides`` (the strings, for provenance); the parameter names are
        checked later against the notebooks' ``parameters`` cells, like the profile's own.
    """
    prof = {
        **profile,
        "common": dict(profile["common"]),
        "notebooks": {k: dict(v) for k, v in profile["notebooks"].items()},
    }
    stems = [p.stem for p in list_notebooks(notebook_dir)]
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ParameterError(f"--set {item!r}: write SECTION.NAME=VALUE, e.g. --set 02_preprocess.n_repeats=5.")
        value = _override_value(item, raw)
        if section == "common":
            if name == "out_dir":
                raise ParameterError("--set common.out_dir: the output folder is set by --out.")
            prof["common"][name] = value
            continue
        match = [s for s in stems if section in (s, s[:2])]
        if len(match) != 1:
            raise ParameterError(
                f"--set {item!r}: {section!r} is neither 'common' nor a notebook (stem or number) of {notebook_dir}."
                f"{did_you_mean(section, stems)}"
            )
        prof["notebooks"].setdefault(match[0], {})[name] = value
    prof["overrides"] = [*profile.get("overrides", []), *overrides]
    return prof


def _override_value(item: str, raw: str) -> Any:
    """The value of ``--set item``: YAML, with ``1e-3`` a number (YAML 1.1 reads it as a string); none refused."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ParameterError(f"--set {item!r}: the value is not valid YAML ({exc}).") from exc
    if value is None:
        raise ParameterError(f"--set {item!r}: give a value after '=' (e.g. --set 03.epochs=10).")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()) else value
    return value


def _refuse_dry_run_overrides(overrides: Sequence[str], prof: dict[str, Any]) -> None:
    """``--dry-run`` sets :data:`DRY_RUN`'s parameters; an override of one of them would be silently lost."""
    for stem, keys in DRY_RUN.items():
        for name in keys:
            if name in prof["notebooks"].get(stem, {}) and any(
                o.split("=", 1)[0].strip() in (f"{stem}.{name}", f"{stem[:2]}.{name}") for o in overrides
            ):
                raise ParameterError(
                    f"--set {stem}.{name} with --dry-run: the dry run sets {name} itself "
                    f"({DRY_RUN[stem][name]}); drop one of the two."
                )


def list_notebooks(notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``notebook_dir``, in order."""
    return sorted(p for p in Path(notebook_dir).glob("*.ipynb") if _NB_PATTERN.match(p.name))


def plan(
    profile: dict[str, Any],
    out_dir: Path,
    *,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
    only: Sequence[str] | None = None,
    start: str | None = None,
) -> list[Step]:
    """Resolve which notebooks run with which parameters, and check every name before anything runs."""
    notebooks = list_notebooks(notebook_dir)
    if not notebooks:
        raise ParameterError(f"No numbered notebooks (NN_name.ipynb) in {notebook_dir}.")
    stems = [p.stem for p in notebooks]
    numbers = [s[:2] for s in stems]
    for stem in profile["notebooks"]:
        if stem not in stems:
            raise ParameterError(
                f"{profile['path']}: section notebooks.{stem} names no notebook in "
                f"{notebook_dir}.{did_you_mean(stem, stems)}"
            )
    wanted = [_as_number(x, numbers) for x in only] if only else None
    first = _as_number(start, numbers) if start else None
    steps = []
    for path, stem, num in zip(notebooks, stems, numbers):
        if wanted is not None and num not in wanted:
            continue
        if first is not None and num < first:
            continue
        params = {**profile["common"], **profile["notebooks"].get(stem, {}), "out_dir": str(out_dir)}
        declared = parameter_names(path)
        for name in params:
            if name not in declared:
                raise ParameterError(
                    f"Profile {profile['name']!r} injects unknown parameter {name!r} into {path.name}; "
                    f"its parameters cell declares {declared}.{did_you_mean(name, declared)} "
                    f"Fix {profile['path']} or the notebook's parameters cell."
                )
        steps.append(Step(num, stem, path, params))
    return steps


def _as_number(value: str, numbers: Sequence[str]) -> str:
    num = str(value)[:2].zfill(2) if str(value).isdigit() else str(value)[:2]
    if num not in numbers:
        raise ParameterError(f"No notebook numbered {value!r}; available: {list(numbers)}.")
    return num


def run_pipeline(
    profile: str | os.PathLike = "default",
    out_dir: str | os.PathLike | None = None,
    *,
    only: Sequence[str] | None = None,
    start: str | None = None,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
    config_dir: str | os.PathLike = CONFIG_DIR,
    kernel_name: str = "python3",
    log_output: bool = False,
    dry_run: bool = False,
    overrides: Sequence[str] = (),
) -> Path:
    """Execute the numbered notebooks for one profile; return the output folder.

    ``overrides`` (``--set SECTION.NAME=VALUE``, :func:`apply_overrides`) change single parameters of the profile
    for this batch; ``provenance.json`` records them and the values the notebooks ran with.

    ``dry_run=True`` runs the profile with :data:`DRY_RUN`'s overrides (:func:`dry_run_profile`) into
    ``reports/<profile>-dry-run/`` by default: every notebook and code path at the profile's sizes, in minutes.

    Raises
    ------
    ParameterError
        Unknown profile, notebook section or parameter (nothing has run).
    NotebookFailed
        A notebook raised or its kernel died; earlier outputs are intact and ``provenance.json`` records it.
    her2lib.runner.lock.RunLocked
        Another batch is running into the same output folder (nothing has run).
    her2lib.errors.OutputError
        The output folder cannot be written (full, read-only, no permission).
    KeyboardInterrupt
        Ctrl-C: the kernel is stopped, the lock released; the note says how to resume.
    """
    prof = load_profile(profile, config_dir)
    if overrides:
        prof = apply_overrides(prof, overrides, notebook_dir=notebook_dir)
        if dry_run:
            _refuse_dry_run_overrides(overrides, prof)
    if dry_run:
        prof = dry_run_profile(prof)
    out = resolve_path(out_dir) if out_dir else REPO_ROOT / "reports" / prof["name"]
    steps = plan(prof, out, notebook_dir=notebook_dir, only=only, start=start)
    with lock.run_lock(out, profile=prof["name"]):
        swept = lock.sweep_temp_files(out)
        if swept:
            print(
                f"her2lib: removed {len(swept)} temporary file(s) an interrupted batch left in {out}.", file=sys.stderr
            )
        resume = shlex.join(
            ["python", "-m", "her2lib.runner", "--profile", str(profile), "--out", str(out)]
            + [a for o in overrides for a in ("--set", o)]
            + (["--dry-run"] if dry_run else [])
        )
        return _run_steps(
            prof, out, steps, notebook_dir=notebook_dir, kernel_name=kernel_name, log_output=log_output, resume=resume
        )


def _close_failed(
    out: Path, prov: dict[str, Any], record: dict[str, Any], wall_s: float, *, status: str, error: str
) -> None:
    """Record a notebook that did not finish; best effort, so a full disk does not hide the original error."""
    with contextlib.suppress(OSError):
        provenance.end_notebook(record, wall_s, status, error=error)
        provenance.finish(out, prov, status=status)


def _run_steps(
    prof: dict[str, Any], out: Path, steps: list[Step], *, notebook_dir, kernel_name, log_output, resume
) -> Path:
    """Run ``steps`` (the caller holds the run lock); see :func:`run_pipeline`."""
    import papermill as pm  # lazy: papermill pulls in nbclient/jupyter; profile checks and --help do not need it
    from nbclient.exceptions import DeadKernelError  # lazy: as papermill
    from papermill.exceptions import PapermillExecutionError  # lazy: as papermill

    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    prov = provenance.start(out, prof)
    progress_log = out / PROGRESS_LOG
    for i, step in enumerate(steps, 1):
        label = f"[{i}/{len(steps)}] {step.stem}"
        print(f"her2lib [{prof['name']}] {label} ...", file=sys.stderr, flush=True)
        record = provenance.begin_notebook(prov, step.stem, step.parameters)
        provenance.save(out, prov)
        target = out / "notebooks" / step.path.name
        failed_copy = target.with_name(f"{step.stem}.failed.ipynb")
        t0 = time.perf_counter()
        tmp = target.with_name(f".{step.stem}.running.ipynb")
        try:
            with ProgressMonitor(progress_log, label):
                pm.execute_notebook(
                    str(step.path),
                    str(tmp),
                    parameters=step.parameters,
                    kernel_name=kernel_name,
                    cwd=str(Path(notebook_dir)),
                    progress_bar=False,
                    log_output=log_output,
                    extra_arguments=KERNEL_ARGUMENTS,
                )
        except (PapermillExecutionError, DeadKernelError) as exc:
            with contextlib.suppress(OSError):
                if tmp.exists():
                    os.replace(tmp, failed_copy)
            if isinstance(exc, DeadKernelError):
                what = "its kernel died (killed from outside, or out of memory: see `dmesg`)"
            else:
                what = f"failed in cell {exc.cell_index} (execution count {exc.exec_count}): {exc.ename}: {exc.evalue}"
            _close_failed(out, prov, record, time.perf_counter() - t0, status="failed", error=what)
            raise NotebookFailed(
                f"{step.path.name} {what}. The partial run is kept as {failed_copy}; earlier outputs in "
                f"{out} are intact. Fix the cause, then resume with --from {step.number}."
            ) from exc
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            stopped = isinstance(exc, KeyboardInterrupt)
            status = "interrupted" if stopped else "failed"
            _close_failed(out, prov, record, time.perf_counter() - t0, status=status, error=repr(exc))
            if stopped:
                exc.add_note(
                    f"Interrupted during {step.path.name}; every finished output in {out} is intact and a "
                    f"training notebook goes on from its last checkpoint. Resume with: {resume} --from {step.number}"
                )
            raise
        os.replace(tmp, target)
        failed_copy.unlink(missing_ok=True)
        provenance.end_notebook(record, time.perf_counter() - t0, "ok")
        provenance.save(out, prov)
        print(f"her2lib [{prof['name']}] {label} done in {record['wall_s']:.1f} s", file=sys.stderr, flush=True)
    provenance.finish(out, prov)
    write_index(out)
    return out


def _sigterm_as_interrupt():
    """Make SIGTERM stop the batch as Ctrl-C does (kernel stopped, lock released); return the handler it replaced,
    or None off the main thread, where signal handlers cannot be set."""
    try:
        return signal.signal(signal.SIGTERM, signal.default_int_handler) or signal.SIG_DFL
    except ValueError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m her2lib.runner``)."""
    parser = argparse.ArgumentParser(prog="python -m her2lib.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default", help="smoke, default, paper, or a YAML path")
    parser.add_argument("--out", default=None, help="output folder (default reports/<profile>/)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebook numbers")
    parser.add_argument("--from", dest="start", metavar="NN", help="start at this notebook number")
    parser.add_argument("--log-output", action="store_true", help="stream notebook output to the log")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.NAME=VALUE",
        help="override one parameter, e.g. --set 02_preprocess.n_repeats=5 or --set 03.epochs=10 (repeatable)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="every notebook at the profile's sizes, training 2 batches x 2 epochs per fold, Grad-CAM of 2 patients",
    )
    args = parser.parse_args(argv)
    previous = _sigterm_as_interrupt()
    try:
        out = run_pipeline(
            args.profile,
            args.out,
            only=args.only,
            start=args.start,
            log_output=args.log_output,
            dry_run=args.dry_run,
            overrides=args.overrides,
        )
    except Her2libError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, NotebookFailed) else 2
    except KeyboardInterrupt as exc:
        print("\n".join(["interrupted.", *getattr(exc, "__notes__", [])]), file=sys.stderr)
        return 130
    except OSError as exc:  # a disk error outside her2lib's own writers (a folder, papermill's notebook copy)
        if exc.errno not in _DISK_ERRNOS:
            raise
        print(f"error: {output_error(exc, exc.filename or args.out or 'reports')}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"Done: {out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
