"""The paper's shapes on whatever device is present: samples/s of the input pipeline alone, of the bare model step
and of the real training loop, for DL-US (ConvNeXt V2 tiny, 256 x 256) and DL-MRI (3D ResNet18, 96^3, first-conv
stride 1), and the ratio real loop / bare step (target >= 0.9 on a GPU).

* loader alone = what the real loop does before the model: batches drawn from the in-memory ROI tensor, the
  augmentation, Mixup (DL-US), transfer to the device; timed for both augmentation backends: "batched" (torch ops on
  the device, :class:`her2lib.batch_augment.BatchedAugmenter`, inputs kept on a GPU by
  :func:`her2lib.train.place_inputs`) and "monai" (MONAI per sample on the CPU, :class:`her2lib.transforms.BatchAugmenter`);
* bare step and real loop = :func:`bench_train_loop.bench` (the same model, optimiser, loss and precision; real loop
  = :func:`her2lib.train.train_one_epoch`), timed alternately in one process so a shared machine slows both alike.

The paper's batch is 16. On a CPU the default batch is 2 and an epoch a few steps, so the script runs anywhere
(a full 96^3 batch of 16 needs ~15 GB on the CPU); ``--steps 1 --rounds 1`` is what the test runs. Inputs are
random tensors of the paper's shapes (the ROI cache is not needed: bench_train_loop.py ``--cohort`` times it).

Usage::

    .venv/bin/python benchmarks/bench_paper_shapes.py                          # paper shapes, this device
    .venv/bin/python benchmarks/bench_paper_shapes.py --steps 1 --rounds 1    # a quick check (CI)
    .venv/bin/python benchmarks/bench_paper_shapes.py --us-size 64 --mri-size 32 --us-variant convnextv2_atto
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_loop import bench, make_augmenter  # noqa: E402

from her2lib import models, train  # noqa: E402
from her2lib.batch_augment import BatchedAugmenter  # noqa: E402
from her2lib.train import loop, runtime  # noqa: E402

BACKENDS = ("batched", "monai")


def loader_alone(cfg, training, x: torch.Tensor, y: torch.Tensor, *, dev: torch.device, rounds: int) -> float:
    """Median samples/s of one epoch's input pipeline without the model (batches, the augmentation of
    ``training.augment_backend``, Mixup, transfer), as :func:`her2lib.train.train_one_epoch` runs it."""
    aug = make_augmenter(cfg, training, dev=dev)
    mixup = train.make_mixup(training, num_classes=cfg.num_classes)
    cl = runtime._use_cl(training, dev)
    x = train.place_inputs(x, device=dev, training=training)
    rates = []
    for r in range(rounds + 1):  # the first round warms MONAI's grids and the GPU kernels up
        t, n = time.perf_counter(), 0
        for idx in loop._batches(len(x), training.batch_size, torch.Generator().manual_seed(r), mixup is not None):
            xb, yb = x[idx.to(x.device)], y[idx].to(dev)
            xb = aug(xb.to(dev)) if isinstance(aug, BatchedAugmenter) else aug(xb.cpu()).to(dev)
            if mixup is not None:
                with runtime._numpy_global_rng(np.random.RandomState(r)):
                    xb, yb = mixup(xb.clone(), yb)
            xb = runtime._to_device(xb, dev, cl)
            n += len(idx)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if r:
            rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def _configs(args) -> list[tuple[str, models.DLUSConfig | models.DLMRIConfig]]:
    return [
        ("us", models.DLUSConfig(variant=args.us_variant, image_size=args.us_size)),
        ("mri", models.DLMRIConfig(image_size=args.mri_size, conv1_t_stride=args.mri_stride)),
    ]


def run(args) -> list[dict]:
    """Every measurement of the script, one row per model."""
    dev = train.resolve_device(args.device)
    batch = args.batch or (16 if dev.type == "cuda" else 2)
    rows = []
    for modality, cfg in _configs(args):
        if args.only and modality != args.only:
            continue
        training = replace(train.PAPER_TRAINING[cfg.kind], batch_size=batch, augment_backend=args.backend)
        n = batch * args.steps
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.normal(size=(n, *cfg.input_shape)).astype(np.float32))
        y = torch.as_tensor(np.tile([0, 1], n)[:n].astype(np.int64))
        with runtime._deterministic(dev):
            res = bench(cfg, training, x, y, dev=dev, rounds=args.rounds)
        for backend in BACKENDS:
            res[f"loader_{backend}_samples_per_s"] = loader_alone(
                cfg, replace(training, augment_backend=backend), x, y, dev=dev, rounds=args.rounds
            )
        if dev.type == "cuda":
            res["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        rows.append(res)
        print(
            f"{res['model']:7s} {res['input']:>10s} batch {batch:2d} x {args.steps} steps: loader alone "
            f"{res['loader_batched_samples_per_s']:8.1f} samples/s (batched on {dev.type}; MONAI on the CPU "
            f"{res['loader_monai_samples_per_s']:.1f} samples/s) | bare step {res['bare_samples_per_s']:8.2f} "
            f"samples/s | real loop ({args.backend}) {res['loop_samples_per_s']:8.2f} samples/s | ratio real/bare "
            f"{res['ratio']:.3f}"
            + (f" | peak GPU memory {res['peak_gpu_memory_gib']:.1f} GiB" if "peak_gpu_memory_gib" in res else ""),
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--us-size", type=int, default=256, help="DL-US input side (paper 256)")
    ap.add_argument("--mri-size", type=int, default=96, help="DL-MRI input side (paper 96)")
    ap.add_argument("--us-variant", default="convnextv2_tiny", help="paper profile: convnextv2_tiny")
    ap.add_argument("--mri-stride", type=int, default=1, help="first-conv stride (paper 1)")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0: 16 on a GPU, 2 on a CPU)")
    ap.add_argument("--steps", type=int, default=4, help="batches per timed epoch")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (medians are printed)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", choices=["us", "mri"], default=None)
    ap.add_argument("--backend", choices=BACKENDS, default="batched", help="the real loop's augmentation")
    args = ap.parse_args(argv)
    dev = train.resolve_device(args.device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none"
    print(
        f"device={dev} ({gpu}) cpu={platform.processor() or platform.machine()} "
        f"torch={torch.__version__} cpu_capability={torch.backends.cpu.get_cpu_capability()} "
        f"threads={torch.get_num_threads()}",
        flush=True,
    )
    rows = run(args)
    ok = all(r["ratio"] >= 0.9 for r in rows)
    print("target ratio real/bare >= 0.9 (a GPU with the machine's CPU cores):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
