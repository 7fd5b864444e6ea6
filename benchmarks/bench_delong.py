"""Benchmark: paired DeLong test (her2lib.stats.delong_test) vs pROC roc() + roc.test(method = "delong").

Shows the O(N log N) scaling of the Sun & Xu (2014) midrank algorithm: time / (N log2 N) should stay roughly
constant from N = 10^4 to 10^6. When ``Rscript`` with pROC is available, the same data (written to a temporary
CSV) are timed in R in the same run: pROC ``roc()`` twice + ``roc.test(paired = TRUE)`` (CSV reading excluded),
and the speed ratio is printed, with a check that both give the same Z.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_delong.py                 # N = 1e4, 1e5, 1e6; R if present
    .venv/bin/python benchmarks/bench_delong.py --sizes 10000 100000 --repeats 5 --no-r

The default run takes well under two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from her2lib.stats import delong_test  # noqa: E402

R_SCRIPT = r"""
suppressPackageStartupMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); reps <- as.integer(args[2])
best <- Inf
for (i in seq_len(reps)) {
  t0 <- proc.time()[["elapsed"]]
  r1 <- roc(d$y, d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(d$y, d$b, levels = c(0, 1), direction = "<", quiet = TRUE)
  tt <- roc.test(r1, r2, method = "delong", paired = TRUE)
  best <- min(best, proc.time()[["elapsed"]] - t0)
}
cat(sprintf("%.6f %.17g %.17g\n", best, tt$statistic, tt$p.value))
"""


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlated scores of two models with ties (3 decimals), 30% positive."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int8)
    z = rng.normal(size=n)
    a = np.round(0.9 * y + z, 3)
    b = np.round(0.7 * y + 0.6 * z + 0.8 * rng.normal(size=n), 3)
    return y, a, b


def time_python(y, a, b, repeats: int) -> tuple[float, float]:
    best, z = math.inf, float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = delong_test(y, a, b)
        best = min(best, time.perf_counter() - t0)
        z = r.z
    return best, z


def time_r(y, a, b, repeats: int, timeout: float) -> tuple[float, float] | None:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "d.csv"
        np.savetxt(csv, np.c_[y, a, b], delimiter=",", header="y,a,b", comments="", fmt=["%d", "%.3f", "%.3f"])
        script = Path(tmp) / "bench.R"
        script.write_text(R_SCRIPT)
        try:
            out = subprocess.run(
                ["Rscript", str(script), str(csv), str(repeats)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            ).stdout.split()
        except subprocess.TimeoutExpired:
            return None
        return float(out[0]), float(out[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--no-r", action="store_true", help="skip pROC even if Rscript is present")
    ap.add_argument("--r-timeout", type=float, default=120.0, help="seconds allowed for each R run")
    args = ap.parse_args(argv)
    use_r = not args.no_r and shutil.which("Rscript") is not None
    print(f"paired DeLong, best of {args.repeats}; R/pROC: {'yes' if use_r else 'no (Rscript absent or --no-r)'}")
    header = f"{'N':>9} {'her2lib s':>10} {'us/(N log2 N)':>14}"
    if use_r:
        header += f" {'pROC s':>9} {'speed-up':>9} {'|dZ|':>9}"
    print(header)
    ratios = []
    for n in args.sizes:
        y, a, b = make_data(n)
        t, z = time_python(y, a, b, args.repeats)
        ratio = t / (n * math.log2(n)) * 1e6
        ratios.append(ratio)
        line = f"{n:>9} {t:>10.4f} {ratio:>14.5f}"
        if use_r:
            res = time_r(y, a, b, args.repeats if n < 1_000_000 else 1, args.r_timeout)
            if res is None:
                line += f" {'>' + str(int(args.r_timeout)):>9} {'':>9} {'':>9}"
            else:
                tr, zr = res
                line += f" {tr:>9.3f} {tr / t:>8.1f}x {abs(z - zr):>9.1e}"
        print(line, flush=True)
    print(
        f"time/(N log2 N) spread across sizes: max/min = {max(ratios) / min(ratios):.2f} "
        "(about 1 = O(N log N); O(N^2) would grow 100x per decade)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
