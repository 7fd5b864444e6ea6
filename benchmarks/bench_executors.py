"""Cross-validation wall time: folds one after another on all cores (``executor="local"``) against folds side by
side in worker processes, one torch thread each (``executor="processes"``), for DL-US and DL-MRI.

Both run the same :func:`her2lib.train.run_cv` (real loop: MONAI augmentation, Mixup for DL-US, selection-set scoring
each epoch, checkpoints, predictions) on the same synthetic inputs at the default profile's sizes, with a fixed number
of epochs and no early stopping, so both do the same work; the processes' time includes starting the workers
(a fresh interpreter each, importing torch, timm and MONAI). The two are run alternately (``--rounds`` times) in one
process and the median of the per-round ratios is printed.

Usage::

    .venv/bin/python benchmarks/bench_executors.py                  # default-profile shapes, 4 folds x 3 epochs
    .venv/bin/python benchmarks/bench_executors.py --epochs 1 --folds 2 --n 24 --rounds 1   # seconds (CI)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from her2lib import models, train  # noqa: E402


def _cohort(
    n_train: int, n_test: int, shape: tuple[int, ...], folds: int
) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    rng = np.random.default_rng(0)
    n = n_train + n_test
    her2 = np.r_[np.arange(n_train) % 2, np.arange(n_test) % 2]
    df = pd.DataFrame(
        {"patient_id": [f"P{i:04d}" for i in range(n)], "split": ["train"] * n_train + ["test"] * n_test, "her2": her2}
    )
    x = rng.normal(size=(n, 1, *shape)).astype(np.float32)
    return df, x, train.assign_folds(df, n_folds=folds, seed=0)


def _time_cv(cfg, training, data, executor: str) -> float:
    df, x, folds = data
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train.run_cv(df, x, cfg, training, folds, out, progress=False, checkpoint_every=5, executor=executor)
        return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=149, help="training patients (default: the paper's 149)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=["us", "mri"], default=None)
    args = ap.parse_args(argv)
    cores = torch.get_num_threads()
    workers, threads = train.executors.resolve_workers(0)
    print(f"torch={torch.__version__} threads={cores}; processes: {workers} workers x {threads} thread(s)")
    specs = [
        ("dl_us", models.DLUSConfig(variant="convnextv2_atto", image_size=96), 5e-4, True),
        ("dl_mri", models.DLMRIConfig(image_size=32, conv1_t_stride=2), 3e-4, False),
    ]
    for name, cfg, lr, mixup in specs:
        if args.only and not name.endswith(args.only):
            continue
        training = train.TrainConfig(lr=lr, weight_decay=0.05, batch_size=16, epochs=args.epochs, mixup=mixup)
        data = _cohort(args.n, 12, cfg.input_shape[1:], args.folds)
        local, procs = [], []
        for _ in range(args.rounds):
            local.append(_time_cv(cfg, training, data, "local"))
            procs.append(_time_cv(cfg, training, data, "processes"))
        ratio = statistics.median(a / b for a, b in zip(local, procs))
        print(
            f"{name:7s} {args.folds} folds x {args.epochs} epochs, {args.n} patients: local {statistics.median(local):6.1f} s"
            f" | processes {statistics.median(procs):6.1f} s | speed-up {ratio:.2f}x "
            f"(rounds: {', '.join(f'{a / b:.2f}' for a, b in zip(local, procs))})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
