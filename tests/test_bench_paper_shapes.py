"""benchmarks/bench_paper_shapes.py runs on the CPU with a tiny step count and prints, for both models, the loader's
(both augmentation backends), the bare step's and the real loop's samples/s and their ratio (the numbers themselves
are the machine's)."""

from __future__ import annotations

import re
import subprocess
import sys

from her2lib.contract import REPO_ROOT


def test_bench_paper_shapes_prints_every_figure_for_both_models():
    # small inputs keep it to seconds; the paper's sizes are the script's defaults (measured in the closing note)
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_paper_shapes.py"), "--steps", "1", "--rounds", "1"]
    cmd += ["--us-size", "64", "--mri-size", "32", "--us-variant", "convnextv2_atto", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    assert "device=cpu" in out and "cpu_capability=" in out
    for model, shape in (("dl_us", "64x64"), ("dl_mri", "32x32x32")):
        line = next(ln for ln in out.splitlines() if ln.startswith(model))
        assert shape in line and "batch  2 x 1 steps" in line
        rates = [float(v) for v in re.findall(r"([0-9.]+) samples/s", line)]
        ratio = float(re.search(r"ratio real/bare ([0-9.]+)", line).group(1))
        assert len(rates) == 4 and all(r > 0 for r in rates) and ratio > 0  # loader x2 backends, bare, loop
        assert "batched on cpu" in line and "MONAI on the CPU" in line
    assert "target ratio real/bare >= 0.9" in out


def test_bench_paper_fold_times_epochs_and_projects_the_paper_run():
    """benchmarks/bench_paper_fold.py trains one fold of each model through fit_fold and projects 4 x 300 epochs
    from the measured seconds per epoch (checked here: projection = folds x (epochs x s/epoch + test scoring))."""
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_paper_fold.py"), "--epochs", "3", "--batch", "4"]
    cmd += ["--us-size", "32", "--mri-size", "16", "--us-variant", "convnextv2_atto", "--mri-stride", "2"]
    cmd += ["--n-train", "8", "--n-val", "4", "--n-test", "4", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    total = 0.0
    for model in ("dl_us", "dl_mri"):
        line = next(ln for ln in out.splitlines() if ln.startswith(model))
        assert "3 epochs" in line, line
        per_epoch = float(re.search(r"then ([0-9.]+) s/epoch", line).group(1))
        test_s = float(re.search(r"test scoring ([0-9.]+) s", line).group(1))
        projected = float(re.search(r"4 folds x 300 epochs: ([0-9.]+) min", line).group(1))
        assert per_epoch > 0 and abs(projected - 4 * (300 * per_epoch + test_s) / 60) <= 0.06 + 0.01 * projected
        total += projected
    both = float(re.search(r"both models: ([0-9.]+) min", out).group(1))
    assert abs(both - total) <= 0.1 + 0.01 * total
