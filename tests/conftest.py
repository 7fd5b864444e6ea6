"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from her2lib.runner import pipeline


def simulate_fold_models(
    n_train: int = 20000,
    n_test: int = 20000,
    n_folds: int = 4,
    seed: int = 0,
    sep: dict | None = None,
    noise: float = 1.0,
) -> dict[str, pd.DataFrame]:
    """Prediction files of a cross-validated DL-US and DL-MRI as her2lib writes them, from a known truth.

    Each patient has a latent HER2 score ``s``; ``P(HER2+) = sigmoid(1.5 s - 0.5)``. Fold model k of modality m
    outputs ``sigmoid(sep_m * s + noise * e)`` with ``e`` standard normal, independent per model and patient (model
    noise). A training patient's OOF probability comes from the model of its own fold; every test patient gets all
    ``n_folds`` models' probabilities (``*_test_folds``) and their mean (``*_test``), as :func:`her2lib.train.run_cv`.
    """
    sep = sep or {"us": 1.2, "mri": 0.9}
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    s = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * s - 0.5)))).astype(int)
    ids = np.array([f"P{i:06d}" for i in range(n)])
    fold = np.arange(n_train) % n_folds
    out = {}
    for mod, a in sep.items():
        p = 1 / (1 + np.exp(-(a * s[:, None] + noise * rng.normal(size=(n, n_folds)))))
        out[f"{mod}_oof"] = pd.DataFrame(
            {
                "patient_id": ids[:n_train],
                "split": "train",
                "fold": fold,
                "her2": y[:n_train],
                "p_her2": p[np.arange(n_train), fold],
            }
        )
        pt = p[n_train:]
        out[f"{mod}_test"] = pd.DataFrame(
            {"patient_id": ids[n_train:], "split": "test", "fold": -1, "her2": y[n_train:], "p_her2": pt.mean(axis=1)}
        )
        out[f"{mod}_test_folds"] = pd.DataFrame(
            {
                "patient_id": np.repeat(ids[n_train:], n_folds),
                "split": "test",
                "her2": np.repeat(y[n_train:], n_folds),
                "model_fold": np.tile(np.arange(n_folds), n_test),
                "p_her2": pt.ravel(),
            }
        )
    return out


@pytest.fixture(scope="session")
def fold_model_sim():
    """Large simulated prediction files (20000 training OOF + 20000 test patients, 4 fold models)."""
    return simulate_fold_models()


@pytest.fixture(scope="module")
def module_tmp_path(request, tmp_path_factory) -> Iterator[Path]:
    """A temporary folder shared by one test module's fixtures (a pipeline run, a cohort), removed when the module is
    done if none of the session's tests failed meanwhile: the module-level counterpart of ``tmp_path`` under
    pyproject's ``tmp_path_retention_policy = "failed"``. A full run writes ~7 GB of fold models (132 MB per DL-MRI
    fold); kept to the end, they filled CI's disk (stop 23)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed_before = request.session.testsfailed
    yield path
    keep = request.session.testsfailed != failed_before
    if not keep and request.config.getini("tmp_path_retention_policy") == "failed":
        shutil.rmtree(path, ignore_errors=True)


def pytest_report_header(config) -> str:
    """Free disk space where the tests write (a full run peaks at a few GB there; see ``module_tmp_path``)."""
    where = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())  # pytest's own rule
    free = shutil.disk_usage(where).free / 2**30
    return f"her2lib: {free:.1f} GiB free in {where} (the suite's temporary folders need ~3 GiB at their peak)"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The output folder of one run of the smoke profile (every numbered notebook), shared by the end-to-end tests
    (tests/test_e2e_smoke.py, tests/test_interrupt.py, tests/test_report_browser.py): one batch per test session.
    Its cohort is built beside it, and the profile it ran is ``<folder>/../smoke.yaml`` (``provenance.json`` names
    it too). ``HER2LIB_TEST_SMOKE_RUN=<run folder>`` reuses an existing smoke run instead (development only: the
    tests then check that folder)."""
    reuse = os.environ.get("HER2LIB_TEST_SMOKE_RUN")
    if reuse:
        return Path(reuse).resolve()
    root = tmp_path_factory.mktemp("smoke")
    prof = yaml.safe_load((pipeline.CONFIG_DIR / "smoke.yaml").read_text())
    prof["common"]["cohort_dir"] = str(root / "cohort")
    path = root / "smoke.yaml"
    path.write_text(yaml.safe_dump(prof))
    return pipeline.run_pipeline(path, root / "out")
