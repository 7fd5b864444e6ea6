"""Training-loop efficiency: samples/s of the real loop vs the bare model step, for DL-US and DL-MRI.

* real loop = :func:`her2lib.train.train_one_epoch`: batches drawn from the in-memory ROI tensor (loaded once from
  the on-disk ROI cache; on a GPU kept there by :func:`her2lib.train.place_inputs` when it fits), the augmentation
  of ``training.augment_backend`` (batched on the device, or MONAI per sample on the CPU), Mixup (DL-US), device
  transfer, forward, backward, AdamW step with the loss scaler;
* bare step = the same model, optimiser and loss on one ready batch already on the device.

The two are timed alternately (``--rounds`` times) in one process, so a machine shared with other jobs slows
both alike; the median of the per-round ratios is printed (target >= 0.9). The one-off cache load (read every patient's
preprocessed ROI from disk) is reported separately per sample.

Usage::

    .venv/bin/python benchmarks/bench_train_loop.py                       # default-profile shapes
    .venv/bin/python benchmarks/bench_train_loop.py --us-size 256 --mri-size 96 --us-variant convnextv2_tiny \
        --mri-stride 1 --device cuda                                       # paper shapes on a GPU
    .venv/bin/python benchmarks/bench_train_loop.py --cohort data/synthetic/default   # real cache loading
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timm.loss import SoftTargetCrossEntropy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from her2lib import models, roi, train  # noqa: E402
from her2lib.batch_augment import BatchedAugmenter  # noqa: E402
from her2lib.data import load_cohort  # noqa: E402
from her2lib.train import loop, runtime  # noqa: E402
from her2lib.transforms import AugmentSpec, BatchAugmenter  # noqa: E402


def make_augmenter(cfg, training, *, dev: torch.device, seed: int = 0):
    """The augmenter the training loop builds for ``training.augment_backend`` on ``dev``."""
    cls = BatchedAugmenter if training.resolved_backend(dev.type) == "batched" else BatchAugmenter
    return cls(cfg.spatial_dims, cfg.input_shape[1:], spec=AugmentSpec(), seed=seed)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _bare_epoch(model, opt, scaler, xb, yt, training, dev, n_steps, soft: bool) -> int:
    loss_fn = SoftTargetCrossEntropy() if soft else torch.nn.CrossEntropyLoss()
    amp = runtime._use_amp(training, dev)
    model.train()
    for _ in range(n_steps):
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
            logits = model(xb)
        loss = loss_fn(logits.float(), yt)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        float(loss.detach())
    _sync(dev)
    return n_steps * len(xb)


def bench(cfg, training, x: torch.Tensor, y: torch.Tensor, *, dev: torch.device, rounds: int, seed: int = 0) -> dict:
    """Alternate real-loop epochs and bare-step epochs; return samples/s (medians) and their ratio."""
    torch.manual_seed(seed)
    model = models.build_model(cfg).to(dev)
    cl = runtime._use_cl(training, dev)
    if cl:
        model = model.to(memory_format=runtime._memory_format(cfg.spatial_dims))
    opt = train.make_optimizer(model, training)
    scaler = torch.amp.GradScaler(dev.type, enabled=runtime._use_amp(training, dev))
    aug = make_augmenter(cfg, training, dev=dev, seed=seed)
    mixup = train.make_mixup(training, num_classes=cfg.num_classes)
    bs = training.batch_size
    x = train.place_inputs(x, device=dev, training=training)
    n_steps = len(loop._batches(len(x), bs, torch.Generator().manual_seed(0), mixup is not None))
    xb = runtime._to_device(x[:bs].clone(), dev, cl)
    if mixup is not None:
        yt = torch.full((bs, 2), 0.5, device=dev)
    else:
        yt = y[:bs].to(dev)
    # warm-up: one full epoch of each (allocator, MONAI grid caches, fused kernels)
    _bare_epoch(model, opt, scaler, xb, yt, training, dev, n_steps, mixup is not None)
    train.train_one_epoch(
        model,
        opt,
        scaler,
        x,
        y,
        training=training,
        device=dev,
        aug=aug,
        mixup=mixup,
        gen=torch.Generator().manual_seed(0),
        np_rs=np.random.RandomState(0),
    )
    real, bare = [], []
    for r in range(rounds):
        t = time.perf_counter()
        _, n = train.train_one_epoch(
            model,
            opt,
            scaler,
            x,
            y,
            training=training,
            device=dev,
            aug=aug,
            mixup=mixup,
            gen=torch.Generator().manual_seed(r),
            np_rs=np.random.RandomState(r),
        )
        _sync(dev)
        real.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        n = _bare_epoch(model, opt, scaler, xb, yt, training, dev, n_steps, mixup is not None)
        bare.append(n / (time.perf_counter() - t))
    r_med, b_med = statistics.median(real), statistics.median(bare)
    paired = statistics.median(a / b for a, b in zip(real, bare))
    return {
        "model": cfg.kind,
        "input": "x".join(map(str, cfg.input_shape[1:])),
        "batch": bs,
        "loop_samples_per_s": r_med,
        "bare_samples_per_s": b_med,
        "ratio": paired,
        "per_round_ratio": [a / b for a, b in zip(real, bare)],
        "real": real,
        "bare": bare,
    }


def _inputs(args, modality: str, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Inputs from the real ROI cache (``--cohort``) or random arrays; also the cache-load seconds/sample."""
    if args.cohort:
        df = load_cohort(Path(args.cohort) / "manifest.csv", check_files="exists")
        df = df[df["split"] == "train"].head(n)
        spec = roi.PreprocessSpec(us_size=args.us_size, mri_size=args.mri_size)
        cache = Path(args.cache or tempfile.mkdtemp(prefix="her2lib_bench_"))
        roi.preprocess_cohort(df, modality, spec, cache, progress=False)  # fill the cache
        t = time.perf_counter()
        x, _, _ = roi.preprocess_cohort(df, modality, spec, cache, progress=False)  # what a run does
        load = (time.perf_counter() - t) / len(df)
        return torch.from_numpy(x), torch.as_tensor(df["her2"].to_numpy().astype(np.int64)), load
    rng = np.random.default_rng(0)
    shape = (n, 1) + (size,) * (2 if modality == "us" else 3)
    x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    return x, torch.as_tensor(rng.integers(0, 2, n)), float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--us-size", type=int, default=96)
    ap.add_argument("--mri-size", type=int, default=32)
    ap.add_argument("--us-variant", default="convnextv2_atto")
    ap.add_argument("--mri-stride", type=int, default=2)
    ap.add_argument("--n", type=int, default=112, help="training samples per epoch (default: one CV fold)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cohort", default=None, help="cohort folder: time loading from the real ROI cache")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--only", choices=["us", "mri"], default=None)
    args = ap.parse_args(argv)
    dev = train.resolve_device(args.device)
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()}")
    rows = []
    todo = [
        ("us", models.DLUSConfig(variant=args.us_variant, image_size=args.us_size)),
        ("mri", models.DLMRIConfig(image_size=args.mri_size, conv1_t_stride=args.mri_stride)),
    ]
    for modality, cfg in todo:
        if args.only and modality != args.only:
            continue
        x, y, load = _inputs(args, modality, cfg.image_size, args.n)
        with runtime._deterministic(dev):
            res = bench(cfg, train.PAPER_TRAINING[cfg.kind], x, y, dev=dev, rounds=args.rounds)
        res["cache_load_s_per_sample"] = load
        rows.append(res)
        print(
            f"{res['model']:7s} {res['input']:>9s} batch {res['batch']}: real loop {res['loop_samples_per_s']:7.1f} "
            f"samples/s | bare step {res['bare_samples_per_s']:7.1f} samples/s | ratio {res['ratio']:.3f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in res['per_round_ratio'])}) | one-off cache load "
            f"{load * 1000:.1f} ms/sample",
            flush=True,
        )
    ok = all(r["ratio"] >= 0.9 for r in rows)
    print("target ratio >= 0.9:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
