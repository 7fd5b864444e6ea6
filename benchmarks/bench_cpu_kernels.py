"""CPU training speed with her2lib's CPU kernels (``her2lib.cpu_kernels``) against torch's and timm's stock kernels.

Two parts, each timed side by side in one process (the two variants alternate, ``--rounds`` times; medians and the
median of the per-round ratios are printed, so a machine shared with other jobs slows both alike):

1. **per layer** (3D ResNet18 at the default profile's ROI, 32³ with first-conv stride 2, batch 16): the weight
   gradient of every distinct 3x3x3 / 1x1x1 convolution by oneDNN (``aten.convolution_backward``) and as one matrix
   product (:func:`her2lib.cpu_kernels.conv3d_weight_grad`), and which one :func:`her2lib.cpu_kernels.uses_gemm`
   picks;
2. **training epochs**: :func:`her2lib.train.train_one_epoch` (MONAI augmentation on the CPU, Mixup for DL-US, the
   AdamW step) for DL-US (ConvNeXt V2 atto, 96²) and DL-MRI, the same model weights once with the stock classes
   (``use_cpu_kernels(model, enabled=False)``) and once with her2lib's.

Usage::

    .venv/bin/python benchmarks/bench_cpu_kernels.py                     # default-profile shapes, one CV fold's 112 samples
    .venv/bin/python benchmarks/bench_cpu_kernels.py --n 16 --rounds 1   # seconds (CI)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from her2lib import models, train  # noqa: E402
from her2lib.cpu_kernels import SmallVolumeConv3d, conv3d_weight_grad, use_cpu_kernels, uses_gemm  # noqa: E402
from her2lib.runner.provenance import machine_info, machine_summary  # noqa: E402
from her2lib.transforms import AugmentSpec, BatchAugmenter  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def layer_table(mri_size: int, stride: int, batch: int, repeats: int) -> list[dict]:
    """oneDNN vs GEMM weight-gradient time (ms) of each distinct convolution of DL-MRI at ``mri_size``."""
    model = models.build_dl_mri(models.DLMRIConfig(image_size=mri_size, conv1_t_stride=stride))
    seen, rows = {}, []
    hooks = [
        m.register_forward_pre_hook(lambda m, a: seen.setdefault((m, tuple(a[0].shape)), a[0].detach()))
        for m in model.modules()
        if isinstance(m, SmallVolumeConv3d)
    ]
    with torch.no_grad():
        model(torch.randn(batch, 1, mri_size, mri_size, mri_size))
    for h in hooks:
        h.remove()
    done = set()
    for (conv, shape), x in seen.items():
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, shape[2:])
        if key in done:
            continue
        done.add(key)
        w = conv.weight.detach()
        g = torch.randn_like(torch.nn.functional.conv3d(x, w, None, conv.stride, conv.padding))
        args = (g, x, w, None, list(conv.stride), list(conv.padding), [1, 1, 1], False, [0, 0, 0], 1)
        onednn = _median_time(partial(torch.ops.aten.convolution_backward, *args, [False, True, False]), repeats)
        gemm = _median_time(
            partial(conv3d_weight_grad, x, g, conv.kernel_size, stride=conv.stride, padding=conv.padding), repeats
        )
        with torch.enable_grad():
            picked = "gemm" if uses_gemm(conv, x.requires_grad_(False)) else "onednn"
        rows.append({"layer": key, "out": tuple(g.shape[2:]), "onednn_ms": onednn * 1e3, "gemm_ms": gemm * 1e3,
                     "picked": picked})  # fmt: skip
    return rows


def epoch_times(cfg, n: int, rounds: int, seed: int = 0) -> dict:
    """Seconds per training epoch of ``n`` random samples with the stock and with her2lib's CPU kernels."""
    training = train.TrainConfig(lr=1e-4, weight_decay=0.05, batch_size=16, epochs=1, mixup=cfg.kind == "dl_us")
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(n, *cfg.input_shape)).astype(np.float32))
    y = torch.as_tensor(rng.integers(0, 2, n))
    torch.manual_seed(seed)
    fast = models.build_model(cfg)
    variants = {"stock": use_cpu_kernels(copy.deepcopy(fast), enabled=False), "her2lib": fast}
    state = {}
    for name, model in variants.items():
        opt = train.make_optimizer(model, training)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        aug = BatchAugmenter(cfg.spatial_dims, cfg.input_shape[1:], spec=AugmentSpec(), seed=seed)
        state[name] = (model, opt, scaler, aug)
    mixup = train.make_mixup(training, num_classes=cfg.num_classes)
    times = {name: [] for name in variants}

    def one(name: str, r: int) -> float:
        model, opt, scaler, aug = state[name]
        aug.reseed(r)
        t = time.perf_counter()
        train.train_one_epoch(
            model, opt, scaler, x, y, training=training, device=torch.device("cpu"), aug=aug, mixup=mixup,
            gen=torch.Generator().manual_seed(r), np_rs=np.random.RandomState(r),
        )  # fmt: skip
        return time.perf_counter() - t

    for name in variants:  # warm-up
        one(name, 0)
    for r in range(rounds):
        for name in variants if r % 2 == 0 else reversed(list(variants)):
            times[name].append(one(name, r + 1))
    ratio = statistics.median(a / b for a, b in zip(times["stock"], times["her2lib"]))
    return {"stock": statistics.median(times["stock"]), "her2lib": statistics.median(times["her2lib"]), "ratio": ratio}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=112, help="training samples per epoch (default: one CV fold's inner part)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10, help="timings per layer (median)")
    ap.add_argument("--only", choices=["us", "mri"], default=None)
    args = ap.parse_args(argv)
    print(f"machine: {machine_summary(machine_info())}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only != "us":
        print("DL-MRI weight gradient per layer (32^3, stride 2, batch 16), ms:")
        for row in layer_table(32, 2, 16, args.repeats):
            cin, cout, k, s, shape = row["layer"]
            print(
                f"  {cin:4d} -> {cout:4d} k{k[0]} s{s[0]} in {'x'.join(map(str, shape))} out "
                f"{'x'.join(map(str, row['out']))}: oneDNN {row['onednn_ms']:7.2f} | GEMM {row['gemm_ms']:7.2f} | "
                f"{row['onednn_ms'] / row['gemm_ms']:5.2f}x | her2lib uses {row['picked']}"
            )
    todo = [
        ("us", models.DLUSConfig(variant="convnextv2_atto", image_size=96)),
        ("mri", models.DLMRIConfig(image_size=32, conv1_t_stride=2)),
    ]
    for modality, cfg in todo:
        if args.only and modality != args.only:
            continue
        res = epoch_times(cfg, args.n, args.rounds)
        print(
            f"{cfg.kind} epoch of {args.n} samples: stock kernels {res['stock']:7.3f} s | her2lib kernels "
            f"{res['her2lib']:7.3f} s | speed-up {res['ratio']:.2f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
