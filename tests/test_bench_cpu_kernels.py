"""``benchmarks/bench_cpu_kernels.py`` runs and prints its comparison (tiny settings: seconds, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys

from her2lib.contract import REPO_ROOT


def test_bench_cpu_kernels_prints_the_layer_table_and_both_epochs():
    cmd = [sys.executable, "benchmarks/bench_cpu_kernels.py", "--n", "16", "--rounds", "1", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=600).stdout
    assert out.startswith("machine: ")
    layers = re.findall(r"(\d+) -> +(\d+) k(\d) s(\d) in (\S+) out (\S+): .*her2lib uses (gemm|onednn)", out)
    assert len(layers) == 11  # the distinct convolutions of the 3D ResNet18 at 32^3, stride 2
    picked = {(int(a), int(b), k, s, o): p for a, b, k, s, _i, o, p in layers}
    assert picked[(512, 512, "3", "1", "1x1x1")] == "gemm" and picked[(1, 64, "7", "2", "16x16x16")] == "onednn"
    for name in ("dl_us", "dl_mri"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        stock, fast, ratio = map(
            float,
            re.search(r"stock kernels +([\d.]+) s \| her2lib kernels +([\d.]+) s \| speed-up ([\d.]+)x", line).groups(),
        )
        assert stock > 0 and fast > 0 and abs(ratio - stock / fast) < 0.02 + 0.02 * ratio
