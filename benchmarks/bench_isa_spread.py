"""How much do CPU-trained results move with the machine's instruction set?

oneDNN (convolutions), MKL (matrix products) and ATen pick their CPU kernels per instruction set, so an AVX2
machine and an AVX-512 machine round differently; over 30 epochs of training the difference grows into different
weights, probabilities and AUCs. This script measures that spread on this machine, side by side in one run:

1. ``--base``: a finished run folder made on this machine without caps (e.g. ``reports/default`` of ``make
   reproduce``); it is only read.
2. The same profile's training, fusion and evaluation notebooks (03-06) are re-run into ``--out/<variant>`` from
   a copy of the base's cohort, ROI cache and folds, once per variant:

   * ``native`` (only with ``--native``): no caps; must reproduce the base byte for byte (same machine, same code);
   * ``avx2``: ``ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2``, i.e. the kernels
     an AVX2-only machine would run (an AMD EPYC without AVX-512, for example; other vendors' microarchitectures
     may differ further).

3. It prints, per prediction file, the largest probability difference against the base and, per model, the test
   AUC of each variant.

Usage::

    .venv/bin/python benchmarks/bench_isa_spread.py --profile default --base reports/default --out /tmp/isa [--native]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CAPS = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "native": {},
}
FILES = ("us_oof", "us_test", "mri_oof", "mri_test", "fusion_oof", "fusion_test")


def _prepare(base: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("models", "notebooks", "*.failed.ipynb"))
    for f in (dest / "predictions").glob("*.csv"):
        if f.name != "folds.csv":
            f.unlink()


def _run(profile: str, out: Path, env_caps: dict) -> float:
    env = {**os.environ, **env_caps}
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "her2lib.runner",
            "--profile",
            profile,
            "--out",
            str(out),
            "--only",
            "03",
            "04",
            "05",
            "06",
        ],
        cwd=REPO,
        env=env,
        check=True,
    )
    return time.perf_counter() - t0


def _auc(df: pd.DataFrame) -> float:
    from her2lib.stats import auc

    return auc(df["her2"].to_numpy(), df["p_her2"].to_numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--base", type=Path, default=REPO / "reports" / "default")
    ap.add_argument("--out", type=Path, default=Path("/tmp/her2lib_isa"))
    ap.add_argument("--native", action="store_true", help="also re-run without caps (determinism check)")
    args = ap.parse_args()
    from her2lib.runner.provenance import machine_info, machine_summary

    base = args.base.resolve()
    prov = json.loads((base / "provenance.json").read_text())
    print("this machine :", machine_summary(machine_info()))
    print("base run made:", machine_summary(prov.get("machine")))
    variants = (["native"] if args.native else []) + ["avx2"]
    rows, times = [], {}
    for v in variants:
        out = args.out / v
        _prepare(base, out)
        print(f"\n== {v}: {CAPS[v] or 'no caps'} -> {out}", flush=True)
        times[v] = _run(args.profile, out, CAPS[v])
    print("\nlargest |p(variant) - p(base)| per prediction file (identical = byte-identical file):")
    for name in FILES:
        b = base / "predictions" / f"{name}.csv"
        if not b.is_file():
            continue
        ref = pd.read_csv(b, dtype={"patient_id": str})
        line = f"  {name:12s}"
        for v in variants:
            f = args.out / v / "predictions" / f"{name}.csv"
            same = f.read_bytes() == b.read_bytes()
            d = pd.read_csv(f, dtype={"patient_id": str})
            diff = float(np.max(np.abs(d["p_her2"].to_numpy() - ref["p_her2"].to_numpy())))
            line += f"  {v}: {'identical' if same else f'{diff:.3g}'}"
            rows.append(
                {
                    "file": name,
                    "variant": v,
                    "max_abs_diff": diff,
                    "identical": same,
                    "auc_base": _auc(ref),
                    "auc_variant": _auc(d),
                }
            )
        print(line)
    print("\nAUC (base -> variant):")
    for r in rows:
        print(
            f"  {r['file']:12s} {r['variant']:6s} {r['auc_base']:.3f} -> {r['auc_variant']:.3f} "
            f"({r['auc_variant'] - r['auc_base']:+.3f})"
        )
    print("\nwall time of notebooks 03-06:", ", ".join(f"{v} {t:.0f} s" for v, t in times.items()))
    pd.DataFrame(rows).to_csv(args.out / "isa_spread.csv", index=False)
    print("table:", args.out / "isa_spread.csv")


if __name__ == "__main__":
    main()
