"""Do the default profile's speed levers change the trained models' AUCs? Several training seeds, lever off and on.

Two levers (``--lever``): her2lib's CPU kernels (``cpu_kernels``: stock vs her2lib's, early stopping as in the
profile) and early stopping (``patience``: every epoch vs the profile's patience, her2lib's kernels both times).

``TrainConfig(cpu_kernels=...)`` (notebooks 03/04's ``cpu_kernels``) decides whether training uses
:mod:`her2lib.cpu_kernels` or torch's and timm's stock kernels. Both compute the same gradients in another
summation order, so a run with one is a different floating-point path than a run with the other, like a run on
another CPU; this benchmark shows whether that difference is more than a seed's.

From a finished run folder (``--base``, e.g. ``reports/default``: its ROI cache, ``02_preprocess`` parameters and
folds; only read), it trains notebook 03's or 04's cross-validation (:func:`her2lib.stages.training.train_modality`
with the profile's settings: early stopping, inner selection split) for each ``--seeds`` seed with both kernel
choices (or both patience choices), alternating which goes first, into a temporary folder. Per run it prints wall
time, epochs run, seconds per epoch, OOF and test AUC (the mean of the fold models' test probabilities); then the
speed-up (per epoch for the kernels, per cross-validation for early stopping) and the paired AUC differences with a
Wilcoxon signed-rank test.

Usage::

    .venv/bin/python benchmarks/bench_kernel_seeds.py --base reports/default --modality mri --seeds 0 1 2 3 4 5 6 7
    .venv/bin/python benchmarks/bench_kernel_seeds.py --base reports/default --modality mri --seeds 0 --epochs 2  # minutes
    .venv/bin/python benchmarks/bench_kernel_seeds.py --base reports/default --modality mri --lever patience --patience 5 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from her2lib import data, models, roi, train, transforms  # noqa: E402
from her2lib.stages._common import RunDirs  # noqa: E402
from her2lib.stages.training import train_modality  # noqa: E402

NOTEBOOK = {"us": "03_train_us", "mri": "04_train_mri"}
REPLAY_PATIENCES = (3, 5, 8, 10, 15)
# Per lever: the name of each arm (off, on) and what the speed-up is measured on.
ARMS = {"cpu_kernels": ("stock", "her2lib"), "patience": ("every epoch", "patience")}


def _settings(profile: Path, modality: str) -> dict:
    return yaml.safe_load(profile.read_text())["notebooks"][NOTEBOOK[modality]]


def _configs(p: dict, spec, modality: str, *, lever: str, on: bool, epochs: int | None, patience: int | None = None):
    """The model and training configuration of one arm. The profile's ``patience`` (0 or absent: every epoch) unless
    the lever is early stopping: then every epoch (off) or ``patience`` (on; the profile's when not given)."""
    kept = p.get("patience") or None
    if lever == "patience":
        kept = (patience or kept) if on else None
    if modality == "us":
        cfg = models.DLUSConfig(variant=p.get("variant", "convnextv2_atto"), image_size=spec.us_size)
        wd, mixup = p.get("weight_decay", 0.05), p.get("mixup", True)
    else:
        cfg = models.DLMRIConfig(image_size=spec.mri_size, conv1_t_stride=p.get("conv1_t_stride", 2))
        wd, mixup = p.get("weight_decay", 0.01), p.get("mixup", False)
    tc = train.TrainConfig(
        lr=p["lr"],
        weight_decay=wd,
        epochs=epochs or p["epochs"],
        mixup=mixup,
        patience=kept,
        cpu_kernels=on or lever != "cpu_kernels",
    )
    return cfg, tc


def run_one(base: Path, work: Path, p: dict, modality: str, *, seed: int, lever: str, on: bool, epochs=None,
            patience=None) -> dict:  # fmt: skip
    """Train one cross-validation into ``work`` (made from ``base``'s cache, parameters and folds); its figures."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "predictions").mkdir(parents=True)
    for name in ("cache", "params"):
        shutil.copytree(base / name, work / name)
    shutil.copy(base / "predictions" / "folds.csv", work / "predictions" / "folds.csv")
    cohort_dir = json_param(base, "cohort_dir")
    run = RunDirs.from_out_dir(work, cohort_dir)
    cohort = data.load_cohort(run.manifest, check_files="exists")
    spec = roi.PreprocessSpec.from_params(run.params / "02_preprocess.json")
    cfg, tc = _configs(p, spec, modality, lever=lever, on=on, epochs=epochs, patience=patience)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train_modality(run, cohort, modality, spec, cfg, tc, seed=seed, augment=transforms.AugmentSpec(),
                       checkpoint_every=5, progress=False)  # fmt: skip
    wall = time.perf_counter() - t0
    kind = cfg.kind
    metrics = pd.read_csv(work / "models" / kind / "metrics.csv")
    epochs_run = len(metrics)
    oof = pd.read_csv(work / "predictions" / f"{modality}_oof.csv")
    test = pd.read_csv(work / "predictions" / f"{modality}_test.csv")
    return {
        "replay": replay_line(metrics) if tc.patience is None else "",
        "wall": wall,
        "epochs": epochs_run,
        "s_per_epoch": wall / epochs_run,
        "oof_auc": roc_auc_score(oof["her2"], oof["p_her2"]),
        "test_auc": roc_auc_score(test["her2"], test["p_her2"]),
    }


def replay_line(metrics: pd.DataFrame, patiences=REPLAY_PATIENCES) -> str:
    """For an unstopped cross-validation's ``metrics.csv``: per patience, the epochs early stopping would have run
    and in how many folds it would have chosen another epoch than every epoch did (:func:`train.replay_early_stopping`;
    exact, since a stopped fold's epochs are the unstopped fold's first ones). A fold whose choice is the same has
    the same weights, so only the folds counted here can move the AUCs."""
    folds = [g.sort_values("epoch").to_dict("records") for _, g in metrics.groupby("fold")]
    full = [train.replay_early_stopping(f, None) for f in folds]
    parts = []
    for k in patiences:
        r = [train.replay_early_stopping(f, k) for f in folds]
        moved = sum(a.best_epoch != b.best_epoch for a, b in zip(r, full, strict=True))
        parts.append(f"{k}: {sum(x.epochs_run for x in r)} epochs, {moved} moved")
    chosen = ", ".join(str(x.best_epoch) for x in full)
    return f"replay (every epoch chose {chosen}; patience: epochs run, folds choosing another epoch): " + "; ".join(
        parts
    )


def json_param(base: Path, name: str) -> str:
    """A path parameter of the base run (``params/02_preprocess.json``), e.g. ``cohort_dir``, made absolute."""
    value = json.loads((base / "params" / "02_preprocess.json").read_text())[name]
    return str(value if Path(value).is_absolute() else REPO / value)


def summary(rows: list[dict], *, lever: str = "cpu_kernels") -> list[str]:
    """Lines: the speed-up and paired AUC differences (lever on - off) with a Wilcoxon signed-rank test.

    ``rows``: one dict per run with ``seed``, ``on`` (bool), ``wall``, ``s_per_epoch``, ``test_auc``, ``oof_auc``.
    The kernels' speed-up is per epoch; early stopping's per cross-validation (it saves epochs, not time per epoch).
    """
    off_name, on_name = ARMS[lever]
    by = {(r["seed"], r["on"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    what, unit = ("per-epoch", "s_per_epoch") if lever == "cpu_kernels" else ("per cross-validation", "wall")
    ratio = statistics.median(by[s, False][unit] / by[s, True][unit] for s in seeds)
    out = [f"{what} speed-up ({off_name} / {on_name}), median of {len(seeds)} seeds: {ratio:.2f}x"]
    for key in ("test_auc", "oof_auc"):
        a = np.array([by[s, False][key] for s in seeds])
        b = np.array([by[s, True][key] for s in seeds])
        d = b - a
        p = stats.wilcoxon(b, a).pvalue if len(seeds) > 1 and np.any(d != 0) else float("nan")
        out.append(
            f"{key}: {off_name} {a.mean():.3f} (sd {a.std(ddof=1) if len(a) > 1 else 0:.3f}) | {on_name} {b.mean():.3f} "
            f"| paired difference {d.mean():+.3f} ({d.min():+.3f} to {d.max():+.3f}), Wilcoxon P = {p:.2f}"
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="a finished run folder (only read)")
    ap.add_argument("--profile", type=Path, default=REPO / "configs" / "default.yaml")
    ap.add_argument("--modality", choices=["us", "mri"], default="mri")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (a quick check)")
    ap.add_argument("--lever", choices=sorted(ARMS), default="cpu_kernels", help="what the two arms differ in")
    ap.add_argument(
        "--patience", type=int, default=None, help="--lever patience: the patience arm's (default: the profile's)"
    )
    args = ap.parse_args(argv)
    p = _settings(args.profile, args.modality)
    if args.lever == "patience" and not (args.patience or p.get("patience")):
        ap.error(
            f"--lever patience: {NOTEBOOK[args.modality]} trains every epoch in {args.profile.name}; give --patience N"
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="her2lib_seeds_") as tmp:
        for seed in args.seeds:
            for flag in (False, True) if seed % 2 else (True, False):
                res = run_one(args.base, Path(tmp) / f"{flag}_{seed}", p, args.modality, seed=seed,
                              lever=args.lever, on=flag, epochs=args.epochs, patience=args.patience)  # fmt: skip
                rows.append({"seed": seed, "on": flag, **res})
                print(
                    f"seed {seed} {ARMS[args.lever][flag]:11s}: {res['wall']:6.1f} s, {res['epochs']} epochs, "
                    f"{res['s_per_epoch']:.2f} s/epoch, OOF AUC {res['oof_auc']:.3f}, test AUC {res['test_auc']:.3f}",
                    flush=True,
                )
                if res["replay"]:
                    print("  " + res["replay"], flush=True)
    for line in summary(rows, lever=args.lever):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
