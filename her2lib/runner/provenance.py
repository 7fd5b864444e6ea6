"""Provenance of a pipeline run: what code, which profile and parameters, which data, which packages.

``provenance.json`` is rewritten (atomically) after every notebook, so even a failed batch says what ran.
Each notebook's record lists the parameters injected, its start/end time, wall time, status and the output
files it wrote (found by modification time), which :mod:`her2lib.runner.report` uses to link outputs to notebooks.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from ..contract import PATH_COLUMNS, REPO_ROOT, resolve_path
from ..io import hash_files, sha256_file, write_json

__all__ = [
    "PACKAGES",
    "git_info",
    "package_versions",
    "cohort_hash",
    "start",
    "begin_notebook",
    "end_notebook",
    "save",
    "record_cohort",
    "finish",
    "FILE_NAME",
]

FILE_NAME = "provenance.json"
PACKAGES = (
    "her2lib",
    "torch",
    "torchvision",
    "timm",
    "monai",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "statsmodels",
    "SimpleITK",
    "nibabel",
    "pydicom",
    "matplotlib",
    "seaborn",
    "grad-cam",
    "papermill",
    "nbclient",
    "ipykernel",
    "tqdm",
    "PyYAML",
)
_SKIP_OUTPUT_DIRS = ("notebooks", "cache", "params", "logs")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_info(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit", "dirty", "branch"}`` of ``repo``; ``commit`` is ``None`` outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cohort_hash(cohort_dir: str | os.PathLike) -> dict[str, Any] | None:
    """SHA-256 of the cohort's ``manifest.csv`` and of every image and mask file it references.

    Returns ``None`` when there is no manifest yet.
    """
    cohort_dir = Path(cohort_dir)
    manifest = cohort_dir / "manifest.csv"
    if not manifest.is_file():
        return None
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    files = sorted({(cohort_dir / v).resolve() for c in PATH_COLUMNS if c in df for v in df[c] if v})
    existing = [f for f in files if f.is_file()]
    # files of an imported cohort may live beside the cohort folder (manifest paths like ../source/x.nii.gz):
    # name them relative to the deepest folder holding both (= cohort_dir when every file is inside it)
    root = Path(os.path.commonpath([str(cohort_dir.resolve()), *map(str, existing)]))
    return {
        "manifest": str(manifest),
        "manifest_sha256": sha256_file(manifest),
        "files_sha256": hash_files(existing, root=root) if existing else None,
        "n_files": len(existing),
        "n_missing": len(files) - len(existing),
        "n_patients": len(df),
    }


def machine_info() -> dict[str, Any]:
    """The machine that made the numbers: CPU model, the instruction set torch's CPU kernels dispatch to, cores,
    GPU, and the environment variables that cap oneDNN / MKL.

    CPU training results depend on it (oneDNN and MKL choose kernels per instruction set, so float rounding and
    therefore the trained weights differ between, e.g., AVX2 and AVX-512 machines); see the README.
    """
    import torch  # lazy: the runner process itself does not need torch until it records the machine

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        isa = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": model,
        "machine": platform.machine(),
        "torch_cpu_capability": isa,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "env": {
            k: os.environ[k]
            for k in (
                "ONEDNN_MAX_CPU_ISA",
                "DNNL_MAX_CPU_ISA",
                "MKL_ENABLE_INSTRUCTIONS",
                "ATEN_CPU_CAPABILITY",
                "OMP_NUM_THREADS",
            )
            if k in os.environ
        },
    }


def machine_summary(info: dict[str, Any] | None) -> str:
    """One line naming the machine, e.g. ``"Intel(R) Xeon(R) Processor @ 2.50GHz, AVX512, 2 cores, no GPU"``."""
    if not info:
        return "unknown machine"
    caps = ", ".join(f"{k}={v}" for k, v in (info.get("env") or {}).items())
    return (
        f"{info.get('cpu_model') or info.get('machine')}, {info.get('torch_cpu_capability') or '?'}, "
        f"{info.get('cpu_count')} cores, {info.get('gpu') or 'no GPU'}" + (f" ({caps})" if caps else "")
    )


def start(out: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """New provenance for a batch in ``out``; notebook records of an earlier batch there are kept."""
    previous: dict[str, Any] = {}
    path = out / FILE_NAME
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
    return {
        "her2lib_provenance": 1,
        "git": git_info(),
        "profile": {
            "name": profile["name"],
            "file": str(profile["path"]),
            "sha256": sha256_file(profile["path"]),
            "common": profile["common"],
            "notebooks": profile["notebooks"],
            "overrides": list(profile.get("overrides", [])),
        },
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "machine": machine_info(),
        "packages": package_versions(),
        "started_at": _now(),
        "finished_at": None,
        "status": "running",
        "cohort": None,
        "notebooks": dict(previous.get("notebooks", {})),
        "out_dir": str(out),
    }


def begin_notebook(prov: dict[str, Any], stem: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Open the record of one notebook (status ``running``) and return it."""
    record = {
        "parameters": dict(parameters),
        "started_at": _now(),
        "ended_at": None,
        "wall_s": None,
        "status": "running",
        "error": None,
        "outputs": [],
        "_t0": time.time(),
    }
    prov["notebooks"][stem] = record
    return record


def end_notebook(record: dict[str, Any], wall_s: float, status: str, *, error: str | None = None) -> None:
    """Close a record: wall time, status, error, and the output files written since it began."""
    record.update(ended_at=_now(), wall_s=round(wall_s, 3), status=status, error=error)
    out = Path(record["parameters"]["out_dir"])
    t0 = record.pop("_t0", None)
    if t0 is not None and out.is_dir():
        outputs = []
        for p in out.rglob("*"):
            rel = p.relative_to(out)
            if (
                p.is_file()
                and rel.parts[0] not in _SKIP_OUTPUT_DIRS
                and not p.name.startswith(".")
                and p.name not in (FILE_NAME, "index.html")
                and p.stat().st_mtime >= t0 - 1
            ):
                outputs.append(str(rel))
        record["outputs"] = sorted(outputs)
        jobs = [o for o in record["outputs"] if o.startswith("models/") and o.endswith("/jobs.json")]
        if jobs:
            record["training_jobs"] = [_jobs_summary(out, rel) for rel in jobs]
        if "tables/radiomics_settings.json" in record["outputs"]:  # notebook 05's feature-extraction settings
            try:
                record["radiomics_settings"] = json.loads((out / "tables/radiomics_settings.json").read_text("utf-8"))
            except (OSError, ValueError) as exc:
                record["radiomics_settings"] = {"error": f"unreadable: {exc}"}


def _jobs_summary(out: Path, rel: str) -> dict[str, Any]:
    """What a model folder's ``jobs.json`` (:func:`her2lib.train.executors.train_folds`) says, for the run's
    provenance: executor, cluster resources and, per job, repetition, fold, host, device, threads and wall time."""
    try:
        rec = json.loads((out / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"file": rel, "error": f"unreadable: {exc}"}
    keep = ("repeat", "fold", "host", "device", "threads", "wall_s")
    return {
        "file": rel,
        "executor": rec.get("executor"),
        "ray_address": rec.get("ray_address"),
        "resources": rec.get("resources", {}),
        "jobs": [{k: j.get(k) for k in keep} for j in rec.get("jobs", [])],
    }


def save(out: Path, prov: dict[str, Any]) -> None:
    """Write ``provenance.json`` atomically."""
    clean = {
        **prov,
        "notebooks": {
            k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in prov["notebooks"].items()
        },
    }
    write_json(out / FILE_NAME, clean)


def record_cohort(prov: dict[str, Any]) -> None:
    """Hash the cohort the batch used, once, when the batch ends (notebook 00 may have rebuilt it meanwhile)."""
    cohort_dir = prov["profile"]["common"].get("cohort_dir")
    prov["cohort"] = cohort_hash(resolve_path(cohort_dir)) if cohort_dir else None


def finish(out: Path, prov: dict[str, Any], status: str = "ok") -> None:
    """Stamp the end time and the batch status, hash the cohort and save (also called when a notebook failed)."""
    prov["finished_at"] = _now()
    prov["status"] = status
    record_cohort(prov)
    save(out, prov)
