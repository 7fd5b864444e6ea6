"""Stage ``07_gradcam``: Grad-CAM maps of the test cohort, Figure 4 and the localisation test against the centre
prior (the science is in :mod:`her2lib.gradcam`, the figures in :mod:`her2lib.figures.gradcam`).

Stages layer: imports science and core modules only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..contract import DL_MODELS, Modality, Task, prediction_path, read_class_predictions, read_predictions
from ..contract import modality as _modality
from ..contract import model as _model
from ..contract import task as _task
from ..data import load_cohort, read_image, task_cohort
from ..errors import ParameterError
from ..figures.gradcam import plot_gradcam_mri, plot_gradcam_us
from ..figures.multiclass import class_label
from ..gradcam import (
    TARGET_LAYERS,
    LocalisationTestResult,
    cam_to_source,
    cohort_cams,
    energy_summary,
    energy_table,
    explained_class,
    localisation_test,
    one_vs_rest,
    select_cases,
)
from ..io import write_csv
from ..options import look_up_option
from ..roi import PreprocessSpec, preprocess_cohort
from ..stats import youden_threshold
from ..train import load_fold_model
from ._common import RunDirs, notice, remove_stale

__all__ = ["GradCAMRun", "available_models", "run_gradcam"]


@dataclass(frozen=True)
class GradCAMRun:
    """Outputs of :func:`run_gradcam`: per-patient energy, its summary, the tests, the selected cases, files."""

    energy: pd.DataFrame
    summary: pd.DataFrame
    cases: pd.DataFrame
    files: tuple[Path, ...]
    tests: Mapping[str, LocalisationTestResult] = field(default_factory=dict)


@dataclass(frozen=True)
class _Target:
    """What the maps explain: the task, the target class, its logit index."""

    task: Task
    name: str  #: one of task.classes
    index: int  #: its logit index

    @property
    def is_paper(self) -> bool:
        """The paper's maps: binary task, HER2-positive logit (outputs as before the task parameter)."""
        return self.task.is_binary and self.name == "positive"

    @property
    def label(self) -> str:
        """The class as figures name it (``HER2-low``)."""
        return _class_name(self.name)


def _class_name(cls: str) -> str:
    """How the figures name a class of any task: ``HER2-zero``, ``HER2-low``, ``HER2-positive``, ``HER2-negative``."""
    return "HER2-negative" if cls == "negative" else class_label(cls)


@dataclass(frozen=True)
class _ModelMaps:
    """One model's maps of the test cohort (ROI frame) and what Figure 4 needs to draw them."""

    key: str
    modality: Modality
    ids: list[str]  #: patients mapped, sorted
    sources: pd.DataFrame  #: their cohort rows, indexed by patient_id
    test: pd.DataFrame  #: the model's test predictions, one-vs-rest view of the target class (gradcam.one_vs_rest)
    cases: pd.DataFrame  #: Figure-4 cases (select_cases, with model and threshold)
    threshold: float
    n_models: int
    cams: np.ndarray
    boxes: list
    energy: pd.DataFrame
    localisation: LocalisationTestResult


def _modality_of(key: str) -> Modality:
    """The modality of deep-learning model ``key`` (``"dl_us"`` -> the ``"us"`` :class:`Modality`)."""
    return _modality(_model(key).modalities[0])


def available_models(run: RunDirs, quiet: bool = False) -> list[str]:
    """The models of ``run`` that Grad-CAM can explain: fold checkpoints and both prediction files present.

    A model left out has its Figure-4 file of an earlier run in the same folder removed.

    Parameters
    ----------
    run : RunDirs
    quiet : bool
        Do not print a notice for a model left out (its modality is absent from the cohort, so its training
        notebook skipped it).

    Returns
    -------
    list of str
        Subset of :data:`her2lib.contract.DL_MODELS` (``["dl_us", "dl_mri"]``).
    """
    out = []
    for key in DL_MODELS:
        prefix, mod = _model(key).prefix, _modality_of(key)
        ok = (
            any((run.models / key).glob("fold*.pt"))
            and prediction_path(run.predictions, prefix, "oof").is_file()
            and prediction_path(run.predictions, prefix, "test").is_file()
        )
        if ok:
            out.append(key)
            continue
        remove_stale(run.figures / f"gradcam_{mod.key}.png")
        if not quiet:
            notice(
                f"No {mod.label} model or predictions in this run (its modality is absent from the cohort): "
                f"Grad-CAM for {mod.label} is skipped."
            )
    return out


def _read_source(modality: str, image_path, mask_path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Source image, mask and spacing as :mod:`her2lib.roi` reads them before cropping."""
    img, spacing = read_image(image_path)
    msk, _ = read_image(mask_path)
    if modality == "us":  # read_image already returns colour images as luminance (H, W)
        spacing = tuple(spacing)[:2]
    return img, msk > 0, tuple(float(s) for s in spacing)


def _models_to_explain(run: RunDirs, models: Sequence[str] | None) -> list[str]:
    if models is None:
        keys = available_models(run)
        if not keys:
            raise ParameterError(
                f"run_gradcam: no trained model in {run.models}; run 03_train_us or 04_train_mri first."
            )
        return keys
    return [look_up_option(m, DL_MODELS, name="models") for m in models]


def _fold_numbers(mdir: Path, folds: int | Sequence[int] | None, mod: Modality) -> list[int]:
    """The fold models to average: None or 0 = every ``fold{k}.pt`` in ``mdir``, an int n = the first n, a
    sequence = those."""
    present = sorted(int(p.stem[4:]) for p in mdir.glob("fold*.pt") if p.stem[4:].isdigit())
    if folds is None or isinstance(folds, (int, np.integer)):
        ks = present[:folds] if folds else present
    else:
        ks = [int(k) for k in folds]
    if not ks:
        raise ParameterError(
            f"run_gradcam: no fold checkpoints in {mdir}; run the training notebook ({mod.notebook}) first."
        )
    return ks


def _read_view(run: RunDirs, prefix: str, target: _Target, kind: str) -> pd.DataFrame:
    """A model's ``oof`` / ``test`` predictions in the one-vs-rest view of the target class (binary task, target
    ``positive``: the file's ``her2`` / ``p_her2``)."""
    path = prediction_path(run.predictions, prefix, kind)
    split = "train" if kind == "oof" else "test"
    if target.task.is_binary:
        pred = read_predictions(path, split)
    else:
        pred = read_class_predictions(path, target.task, split)
    return one_vs_rest(pred, target.task, target.name)


def _explain_model(
    run: RunDirs,
    key: str,
    cohort: pd.DataFrame,
    spec: PreprocessSpec,
    *,
    target: _Target,
    layer: str,
    folds: int | Sequence[int] | None,
    max_patients: int | None,
    progress: bool,
    n_permutations: int,
    seed: int,
) -> _ModelMaps:
    """Maps of one model for the test cohort (fold ensemble), their energy table and localisation test."""
    mod = _modality_of(key)
    mdir = run.models / key
    nets = [load_fold_model(mdir, k) for k in _fold_numbers(mdir, folds, mod)]
    prefix = _model(key).prefix
    test = _read_view(run, prefix, target, "test")
    oof = _read_view(run, prefix, target, "oof")
    thr = youden_threshold(oof["her2"], oof["p_her2"])  # one-vs-rest for a class task; training OOF only
    cases = select_cases(test, thr).assign(model=key, threshold=thr)
    ids = sorted(test["patient_id"])
    if max_patients:
        ids = sorted(set(ids[:max_patients]) | set(cases["patient_id"]))
    missing = [p for p in ids if p not in set(cohort["patient_id"])]
    if missing:
        raise ParameterError(
            f"run_gradcam: test patients {missing[:10]} of {prefix}_test.csv are not in "
            f"{run.manifest}; run the notebooks on one cohort."
        )
    sub = cohort.set_index("patient_id").loc[ids].reset_index()
    images, masks, boxes = preprocess_cohort(sub, mod.key, spec, run.cache, progress=progress)
    cams = cohort_cams(nets, images, layer, class_index=target.index, progress=progress, desc=f"Grad-CAM {mod.label}")
    energy = energy_table(ids, cams, masks, model=key)
    localisation = localisation_test(cams, masks, n_permutations=n_permutations, seed=seed)
    return _ModelMaps(
        key=key,
        modality=mod,
        ids=ids,
        sources=sub.set_index("patient_id"),
        test=test,
        cases=cases,
        threshold=thr,
        n_models=len(nets),
        cams=cams,
        boxes=boxes,
        energy=energy,
        localisation=localisation,
    )


def _figure_cases(maps: _ModelMaps, target: _Target) -> list[dict]:
    """Figure-4 cases of one model: source image, mask and the map mapped back onto the source grid (class task:
    with the patient's class, ``true_class``)."""
    mod = maps.modality
    pos = {p: i for i, p in enumerate(maps.ids)}
    pred = maps.test.set_index("patient_id")
    out = []
    for _, c in maps.cases.iterrows():
        pid = c["patient_id"]
        i = pos[pid]
        img, msk, spacing = _read_source(
            mod.key, maps.sources.loc[pid, mod.image_column], maps.sources.loc[pid, mod.mask_column]
        )
        out.append(
            dict(
                image=img,
                mask=msk,
                cam=cam_to_source(maps.cams[i], maps.boxes[i], img.shape),
                box=maps.boxes[i],
                spacing=spacing,
                patient_id=pid,
                her2=int(pred.loc[pid, "her2"]),
                p_her2=float(c["p_her2"]),
                outcome=c["outcome"],
            )
        )
        if not target.is_paper:
            out[-1]["true_class"] = _class_name(pred.loc[pid, "her2_class"])
    return out


def _draw_figure(run: RunDirs, maps: _ModelMaps, target: _Target, *, layer: str, dpi: int) -> Path:
    """Figure 4 of one model (``figures/gradcam_{us,mri}.png``), with a note on how the cases were chosen."""
    label = maps.modality.label
    if target.is_paper:
        note = (
            f"Fold ensemble of {maps.n_models} model(s). Cases chosen at {label}'s training-OOF Youden threshold "
            f"{maps.threshold:.3f} (p = the test prediction)."
        )
    else:
        note = (
            f"Task {target.task.key} ({target.task.title}). Fold ensemble of {maps.n_models} model(s). Cases "
            f"chosen at {label}'s training-OOF Youden threshold {maps.threshold:.3f} on p({target.label}) "
            "(p = the test prediction)."
        )
    flat = maps.cams.reshape(len(maps.cams), -1)
    if np.all(flat.max(axis=1) - flat.min(axis=1) <= 1e-6):
        note += (
            f" Every {label} map is constant: layer '{layer}' has a single spatial cell at this ROI "
            "size, so its Grad-CAM cannot localise."
        )
    plot = plot_gradcam_us if maps.modality.key == "us" else plot_gradcam_mri
    path = run.figures / f"gradcam_{maps.modality.key}.png"
    kw = {} if target.is_paper else {"target": target.label}
    fig = plot(_figure_cases(maps, target), path, dpi=dpi, layer=layer, note=note, **kw)
    plt.close(fig)
    return path


def _cases_table(cases: pd.DataFrame, test_views: Mapping[str, pd.DataFrame], target: _Target) -> pd.DataFrame:
    """``tables/gradcam_cases.csv``: binary task (target ``positive``) as :func:`select_cases` returns it; otherwise
    the one-vs-rest columns named for what they are (``her2_class, target_class, is_target, p_target``)."""
    if target.is_paper:
        return cases
    cls = [
        test_views[m].set_index("patient_id").loc[p, "her2_class"] for m, p in zip(cases["model"], cases["patient_id"])
    ]
    out = cases.rename(columns={"her2": "is_target", "p_her2": "p_target"})
    out.insert(2, "her2_class", cls)
    out.insert(3, "target_class", target.name)
    return out


def run_gradcam(
    run: RunDirs,
    *,
    task: str = "binary",
    target_class: str = "",
    models: Sequence[str] | None = None,
    folds: int | Sequence[int] | None = None,
    max_patients: int | None = None,
    progress: bool = True,
    dpi: int = 200,
    target_layers: dict[str, str] | None = None,
    n_permutations: int = 9999,
    seed: int = 0,
) -> GradCAMRun:
    """Everything of ``07_gradcam``: maps for the test cohort, Figure 4 and the localisation test.

    Parameters
    ----------
    run : RunDirs
        Reads ``run.manifest`` (and the source images and masks it lists, for Figure 4),
        ``run.params/02_preprocess.json`` (ROI settings; ROIs and their crop boxes come from ``run.cache``),
        ``run.models/<model>/fold{k}.pt`` and ``run.predictions/{us,mri}_{oof,test}.csv``.
    task : {"binary", "three-class", "low-vs-zero"}, keyword-only
        The task the models were trained for (:data:`her2lib.contract.TASKS`): its patients
        (:func:`her2lib.data.task_cohort`) and its prediction files (class tasks:
        :func:`her2lib.contract.read_class_predictions`).
    target_class : str, keyword-only
        The class whose logit the maps explain, one of the task's classes (:func:`her2lib.gradcam.explained_class`);
        empty = ``positive`` (binary, three-class) or ``low`` (low-vs-zero).
    models : sequence of {"dl_us", "dl_mri"}, optional, keyword-only
        None: the models that exist (:func:`available_models`, with a notice for a skipped one).
    folds : int, sequence of int or None, keyword-only
        Fold models whose maps are averaged: None or 0 = every ``fold{k}.pt`` present, an int n = the first n of
        them, a sequence = those folds.
    max_patients : int or None, keyword-only
        Limit the energy analysis to the first n test patients (by patient_id) plus the Figure-4 cases
        (for quick runs); None or 0 = the whole test cohort.
    progress : bool, keyword-only
    dpi : int, keyword-only
    target_layers : dict or None, keyword-only
        Layer per model, overriding :data:`her2lib.gradcam.TARGET_LAYERS` (the paper's: last ConvNeXt stage,
        ``layer4``). At CPU-profile ROI sizes ``layer4`` of the 3D ResNet18 is 1 or 2 voxels wide (32x
        downsampling), so such profiles explain an earlier stage (e.g. ``layer2``) and say so in the figure title.
    n_permutations : int, keyword-only
        Random permutations of the mask-permutation test (:func:`her2lib.gradcam.localisation_test`; all n! when
        fewer).
    seed : int, keyword-only
        Seed of that test.

    Returns
    -------
    GradCAMRun
        Writes ``tables/gradcam_energy.csv`` (per patient, :func:`her2lib.gradcam.energy_table`),
        ``tables/gradcam_energy_summary.csv`` (per model, :func:`her2lib.gradcam.energy_summary`),
        ``tables/gradcam_cases.csv`` and ``figures/gradcam_us.png`` / ``figures/gradcam_mri.png`` (maps mapped
        back onto the source images).

    Notes
    -----
    Figure-4 cases are chosen per model at that model's Youden threshold on its **training OOF** predictions
    (:func:`her2lib.gradcam.select_cases`); for a class task (or the binary task's ``negative`` class) on the
    one-vs-rest view of the target class (:func:`her2lib.gradcam.one_vs_rest`: positive = the target class,
    score = its probability), and ``gradcam_cases.csv`` then has the columns ``outcome, patient_id, her2_class,
    target_class, is_target, p_target, model, threshold``. The map is the fold ensemble of
    :func:`her2lib.gradcam.cohort_cams` (mean of max-normalised fold maps, not the Grad-CAM of the averaged
    prediction), for the target class's logit.
    """
    t = _task(task)
    target = _Target(t, *explained_class(t, target_class))
    layers = {**TARGET_LAYERS, **(target_layers or {})}
    keys = _models_to_explain(run, models)
    cohort = task_cohort(load_cohort(run.manifest, check_files="exists"), t)
    spec = PreprocessSpec.from_params(run.params / "02_preprocess.json")
    files: list[Path] = []
    energies, case_tabs, tests, views = [], [], {}, {}
    for key in keys:
        maps = _explain_model(
            run,
            key,
            cohort,
            spec,
            target=target,
            layer=layers[key],
            folds=folds,
            max_patients=max_patients,
            progress=progress,
            n_permutations=n_permutations,
            seed=seed,
        )
        energies.append(maps.energy)
        case_tabs.append(maps.cases)
        tests[key] = maps.localisation
        views[key] = maps.test
        files.append(_draw_figure(run, maps, target, layer=layers[key], dpi=dpi))
    energy = pd.concat(energies, ignore_index=True)
    summary = energy_summary(energy, tests)
    cases_all = _cases_table(pd.concat(case_tabs, ignore_index=True), views, target)
    files += [
        write_csv(run.tables / "gradcam_energy.csv", energy),
        write_csv(run.tables / "gradcam_energy_summary.csv", summary),
        write_csv(run.tables / "gradcam_cases.csv", cases_all),
    ]
    return GradCAMRun(energy=energy, summary=summary, cases=cases_all, files=tuple(files), tests=tests)
