"""``benchmarks/bench_executors.py`` runs and prints its comparison (tiny settings: seconds, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys

from her2lib.contract import REPO_ROOT


def test_bench_executors_prints_both_executors_and_the_speed_up():
    cmd = [sys.executable, "benchmarks/bench_executors.py", "--only", "us", "--n", "16", "--folds", "2"]
    cmd += ["--epochs", "1", "--rounds", "1"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=600).stdout
    assert "processes: " in out and "workers x" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("dl_us"))
    local, procs, ratio = map(
        float, re.search(r"local +([\d.]+) s \| processes +([\d.]+) s \| speed-up ([\d.]+)x", line).groups()
    )
    assert local > 0 and procs > 0 and abs(ratio - local / procs) < 0.02 + 0.01 * ratio
