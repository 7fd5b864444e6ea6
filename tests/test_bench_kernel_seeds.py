"""``benchmarks/bench_kernel_seeds.py``: what each arm trains with, and its summary (reference: scipy's Wilcoxon).

The benchmark itself trains whole cross-validations (minutes per seed), so CI checks its two pure parts: the
training configuration of each arm of each lever, and the summary lines computed from given runs.
"""

from __future__ import annotations

import importlib.util
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from her2lib.contract import REPO_ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_kernel_seeds", REPO_ROOT / "benchmarks" / "bench_kernel_seeds.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROFILE_MRI = {"lr": 3e-4, "epochs": 30, "patience": 5, "conv1_t_stride": 2}
SIZES = SimpleNamespace(us_size=96, mri_size=32)


@pytest.mark.parametrize(
    ("lever", "on", "patience", "cpu_kernels"),
    [
        ("cpu_kernels", False, 5, False),  # stock kernels, the profile's early stopping
        ("cpu_kernels", True, 5, True),
        ("patience", False, None, True),  # every epoch, her2lib's kernels
        ("patience", True, 5, True),
    ],
)
def test_each_arm_changes_only_its_lever(bench, lever, on, patience, cpu_kernels):
    _cfg, tc = bench._configs(PROFILE_MRI, SIZES, "mri", lever=lever, on=on, epochs=None)
    assert (tc.patience, tc.cpu_kernels) == (patience, cpu_kernels)
    assert (tc.epochs, tc.lr) == (30, 3e-4)


def _rows(test_off, test_on, *, wall_off=300.0, wall_on=150.0):
    rows = []
    for seed, (a, b) in enumerate(zip(test_off, test_on, strict=True)):
        rows.append({"seed": seed, "on": False, "wall": wall_off, "s_per_epoch": wall_off / 120, "test_auc": a,
                     "oof_auc": 0.7})  # fmt: skip
        rows.append({"seed": seed, "on": True, "wall": wall_on, "s_per_epoch": wall_on / 50, "test_auc": b,
                     "oof_auc": 0.7})  # fmt: skip
    return rows


def test_patience_summary_is_per_cross_validation_with_scipy_wilcoxon(bench):
    off, on = [0.70, 0.66, 0.72, 0.64, 0.69], [0.68, 0.67, 0.65, 0.60, 0.70]
    lines = bench.summary(_rows(off, on), lever="patience")
    assert lines[0] == "per cross-validation speed-up (every epoch / patience), median of 5 seeds: 2.00x"
    test_line = next(ln for ln in lines if ln.startswith("test_auc"))
    d = np.subtract(on, off)
    p = stats.wilcoxon(on, off).pvalue
    assert f"every epoch {np.mean(off):.3f} (sd {np.std(off, ddof=1):.3f}) | patience {np.mean(on):.3f}" in test_line
    assert f"paired difference {d.mean():+.3f} ({d.min():+.3f} to {d.max():+.3f}), Wilcoxon P = {p:.2f}" in test_line
    oof_line = next(ln for ln in lines if ln.startswith("oof_auc"))
    assert re.search(r"paired difference \+0\.000 .*Wilcoxon P = nan$", oof_line)  # no difference: no test


def test_kernel_summary_is_per_epoch(bench):
    lines = bench.summary(_rows([0.7, 0.6], [0.7, 0.6]), lever="cpu_kernels")
    # 300 s / 120 epochs against 150 s / 50 epochs: 2.5 s against 3.0 s per epoch
    assert lines[0] == "per-epoch speed-up (stock / her2lib), median of 2 seeds: 0.83x"


def test_replay_line_counts_epochs_and_moved_folds(bench):
    #               epoch: 1    2    3    4    5    6
    aucs = {0: [0.5, 0.7, 0.6, 0.6, 0.6, 0.6], 1: [0.5, 0.6, 0.6, 0.6, 0.6, 0.9]}
    m = pd.DataFrame(
        [{"fold": f, "epoch": e, "val_auc": a, "val_loss": 0.5} for f, v in aucs.items() for e, a in enumerate(v, 1)]
    )
    line = bench.replay_line(m, patiences=(2, 4))
    # fold 0: best 2 whatever the patience, stops at 4 (patience 2) or 6; fold 1: best 6 unstopped, patience 2 stops
    # at 4 with best 2, patience 4 runs to 6 and keeps 6
    assert line.startswith("replay (every epoch chose 2, 6;")
    assert line.endswith("2: 8 epochs, 1 moved; 4: 12 epochs, 0 moved")


def test_a_profile_that_trains_every_epoch(bench):
    every = {**PROFILE_MRI, "patience": 0}  # the default profile's DL-MRI since issue 11's seed study
    for on in (False, True):
        _cfg, tc = bench._configs(every, SIZES, "mri", lever="cpu_kernels", on=on, epochs=None)
        assert tc.patience is None and tc.cpu_kernels is on
    _cfg, tc = bench._configs(every, SIZES, "mri", lever="patience", on=True, epochs=None, patience=5)
    assert tc.patience == 5
    _cfg, tc = bench._configs(PROFILE_MRI, SIZES, "mri", lever="patience", on=True, epochs=None, patience=10)
    assert tc.patience == 10  # --patience overrides the profile's


def test_patience_lever_without_a_patience_is_refused_before_training(bench, capsys):
    # the repository's default profile trains DL-MRI every epoch: the patience arm needs --patience
    with pytest.raises(SystemExit) as err:
        bench.main(["--base", "reports/none", "--modality", "mri", "--lever", "patience", "--seeds", "0"])
    assert err.value.code == 2 and "give --patience N" in capsys.readouterr().err
