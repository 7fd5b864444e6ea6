"""One CV fold of each model at the `paper` profile's settings, for a few epochs, on whatever device is present:
seconds per epoch (training + the selection set's scoring + checkpoints, as :func:`her2lib.train.fit_fold` runs
them), peak GPU memory, and the projected wall time of the full `paper` training (4 folds x 300 epochs, both models).

The inputs are random tensors with the paper cohort's fold sizes (149 training patients: a fold's training part of
~112, of which 20% is the inner selection split; 48 test patients), so no cohort has to be built first. The first
epoch (allocator, kernels) is left out of the per-epoch median.

Usage::

    .venv/bin/python benchmarks/bench_paper_fold.py                      # paper sizes, 3 epochs per model
    .venv/bin/python benchmarks/bench_paper_fold.py --epochs 20 --budget-s 240   # as many epochs as fit in 4 min
    .venv/bin/python benchmarks/bench_paper_fold.py --us-size 64 --mri-size 32 --us-variant convnextv2_atto \
        --mri-stride 2 --epochs 2 --n-train 16 --n-val 8 --n-test 8       # a quick check (the test)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from her2lib import models, train  # noqa: E402


class _Enough(Exception):
    """Raised by the epoch hook when enough epochs have been timed."""


def _rows(n: int, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"patient_id": [f"{prefix}{i:03d}" for i in range(n)], "split": "train", "her2": np.arange(n) % 2}
    )


def one_fold(cfg, training, args, *, dev: torch.device, checkpoint_every: int) -> dict:
    """Train fold 0 of ``cfg`` for ``args.epochs`` epochs (or until ``args.budget_s``); time every epoch."""
    rng = np.random.default_rng(0)
    x = {
        k: torch.from_numpy(rng.normal(size=(n, *cfg.input_shape)).astype(np.float32))
        for k, n in (("train", args.n_train), ("val", args.n_val), ("test", args.n_test))
    }
    stamps = [time.perf_counter()]
    deadline = stamps[0] + args.budget_s if args.budget_s else float("inf")

    def hook(fold, epoch, row):
        stamps.append(time.perf_counter())
        if len(stamps) - 1 >= args.epochs or stamps[-1] > deadline:
            raise _Enough  # the schedule is the paper's 300 epochs; the epochs so far are the measurement

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with tempfile.TemporaryDirectory(prefix="her2lib_fold_") as out:
        try:
            train.fit_fold(
                cfg,
                training,
                x["train"],
                _rows(args.n_train, "T"),
                x["val"],
                _rows(args.n_val, "V"),
                fold=0,
                out_dir=out,
                device=dev,
                resume=False,
                checkpoint_every=checkpoint_every,
                progress=False,
                epoch_hook=hook,
            )
        except _Enough:
            pass
        t = time.perf_counter()
        model = models.build_model(cfg).to(dev)
        train.predict_proba(model, x["test"], training=training, device=dev, batch_size=2 * training.batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        test_s = time.perf_counter() - t
    per_epoch = np.diff(stamps)
    steady = per_epoch[1:] if len(per_epoch) > 1 else per_epoch
    epoch_s = statistics.median(steady.tolist())
    res = {
        "model": cfg.kind,
        "input": "x".join(map(str, cfg.input_shape[1:])),
        "epochs_run": len(per_epoch),
        "first_epoch_s": float(per_epoch[0]),
        "epoch_s": epoch_s,
        "test_predict_s": test_s,
        "projected_s": args.folds * (args.paper_epochs * epoch_s + test_s),
    }
    if dev.type == "cuda":
        res["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--us-size", type=int, default=256)
    ap.add_argument("--mri-size", type=int, default=96)
    ap.add_argument("--us-variant", default="convnextv2_tiny")
    ap.add_argument("--mri-stride", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per model (the first is a warm-up)")
    ap.add_argument("--budget-s", type=float, default=0, help="stop a model's fold after this many seconds (0: none)")
    ap.add_argument("--n-train", type=int, default=89, help="a paper fold's training samples (inner split removed)")
    ap.add_argument("--n-val", type=int, default=23, help="its inner selection split")
    ap.add_argument("--n-test", type=int, default=48, help="test patients scored by each fold model")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--paper-epochs", type=int, default=300)
    ap.add_argument("--backend", choices=("batched", "monai"), default="batched", help="augmentation backend")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", choices=["us", "mri"], default=None)
    args = ap.parse_args(argv)
    dev = train.resolve_device(args.device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none"
    print(
        f"device={dev} ({gpu}) cpu={platform.processor() or platform.machine()} torch={torch.__version__} "
        f"threads={torch.get_num_threads()}",
        flush=True,
    )
    todo = [  # the paper profile's checkpoint_every: DL-US every epoch (notebook default), DL-MRI every 5
        ("us", models.DLUSConfig(variant=args.us_variant, image_size=args.us_size), 1),
        ("mri", models.DLMRIConfig(image_size=args.mri_size, conv1_t_stride=args.mri_stride), 5),
    ]
    total = 0.0
    for modality, cfg, every in todo:
        if args.only and modality != args.only:
            continue
        training = replace(
            train.PAPER_TRAINING[cfg.kind],
            batch_size=args.batch,
            epochs=args.paper_epochs,
            augment_backend=args.backend,
        )
        r = one_fold(cfg, training, args, dev=dev, checkpoint_every=every)
        total += r["projected_s"]
        print(
            f"{r['model']:7s} {r['input']:>10s} batch {args.batch}: {r['epochs_run']} epochs, first "
            f"{r['first_epoch_s']:.2f} s, then {r['epoch_s']:.3f} s/epoch | test scoring {r['test_predict_s']:.2f} s"
            + (f" | peak GPU memory {r['peak_gpu_memory_gib']:.1f} GiB" if "peak_gpu_memory_gib" in r else "")
            + f" | projected {args.folds} folds x {args.paper_epochs} epochs: {r['projected_s'] / 60:.1f} min",
            flush=True,
        )
    print(f"projected paper training, both models: {total / 60:.1f} min on {dev.type} ({gpu})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
