"""Benchmark: Grad-CAM of a test cohort, one input at a time (``grad_cam`` per patient and fold model, her2lib
before issue 11's batching) against ``grad_cams`` (one forward and one backward pass per batch), side by side in
one run, at the ``default`` profile's sizes: DL-US ConvNeXt V2 atto at 96², DL-MRI 3-D ResNet18 (first-conv
stride 2) at 32³, 48 patients, 4 fold models (random weights: the cost does not depend on them). Prints the time of
both, their ratio and the largest difference between the maps.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_gradcam.py                # default sizes, about a minute on 2 cores
    .venv/bin/python benchmarks/bench_gradcam.py --patients 8 --folds 1 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from her2lib.gradcam import grad_cam, grad_cams  # noqa: E402
from her2lib.runner.provenance import machine_info, machine_summary  # noqa: E402


def _models(kind: str, folds: int):
    if kind == "DL-US":
        import timm

        make = lambda: timm.create_model("convnextv2_atto", pretrained=False, in_chans=3, num_classes=2)  # noqa: E731
        return [make() for _ in range(folds)], "stages.3", (3, 96, 96)
    from monai.networks.nets import resnet18

    make = lambda: resnet18(spatial_dims=3, n_input_channels=1, num_classes=2, conv1_t_stride=2)  # noqa: E731
    return [make() for _ in range(folds)], "layer2", (1, 32, 32, 32)


def _one_at_a_time(models, images, layer) -> np.ndarray:
    return np.stack([[grad_cam(m, x, layer, class_index=1).cam for x in images] for m in models])


def _batched(models, images, layer) -> np.ndarray:
    return np.stack([grad_cams(m, images, layer, class_index=1) for m in models])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=48)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs of each")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine_summary(machine_info())}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for kind in ("DL-US", "DL-MRI"):
        models, layer, shape = _models(kind, args.folds)
        images = np.random.default_rng(0).normal(size=(args.patients, *shape)).astype(np.float32)
        times, maps = {}, {}
        for name, fn in (("one input at a time", _one_at_a_time), ("batched (grad_cams)", _batched)):
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                maps[name] = fn(models, images, layer)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        a, b = maps.values()
        ta, tb = times.values()
        print(
            f"{kind}: {args.patients} patients x {args.folds} fold models, layer {layer}: one at a time {ta:.2f} s, "
            f"batched {tb:.2f} s, ratio {ta / tb:.2f}x; largest map difference {np.abs(a - b).max():.1e}"
        )


if __name__ == "__main__":
    main()
