"""benchmarks/bench_paper_shapes.py runs on the CPU with a tiny step count and prints, for both models, the loader's,
the bare step's and the real loop's samples/s and their ratio (the numbers themselves are the machine's)."""

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
        assert len(rates) == 3 and all(r > 0 for r in rates) and ratio > 0
    assert "target ratio real/bare >= 0.9" in out
