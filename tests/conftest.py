"""Shared test helpers."""

from __future__ import annotations

import os
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
