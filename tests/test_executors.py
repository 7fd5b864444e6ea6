"""Fold jobs on Ray (``executor="ray"``) against the local loop (``executor="local"``): the same outputs byte for
byte, also when a worker is killed mid-job (Ray retries it, it resumes from its checkpoint), and the smoke profile's
training notebooks with ``executor: ray`` against the session's smoke run.

Reference: the local executor's outputs (``fold{k}.pt`` files compared as bytes, prediction frames exactly).
Ray tests start a local Ray (about 10 s each) in a child process, never in the pytest process (see
:func:`_ray_cv_in_child`); they are skipped where Ray is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_interrupt import ENV, RUNNER, _copy_before_training  # the same run copy and environment as those tests

from her2lib import models, train
from her2lib.contract import REPO_ROOT
from her2lib.errors import ParameterError
from her2lib.train.executors import FoldJob, train_folds

CFG = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
TRAINING = train.TrainConfig(lr=1e-3, weight_decay=0.05, batch_size=4, epochs=3, mixup=False)


def _cohort(n_train=16, n_test=6):
    rng = np.random.default_rng(0)
    n = n_train + n_test
    her2 = np.r_[np.tile([0, 1], n_train // 2), np.tile([0, 1], n_test // 2)]
    df = pd.DataFrame(
        {"patient_id": [f"P{i:03d}" for i in range(n)], "split": ["train"] * n_train + ["test"] * n_test, "her2": her2}
    )
    x = rng.normal(size=(n, 1, 32, 32)).astype(np.float32)
    x[her2 == 1, :, 8:24, 8:24] += 1.0
    return df, x, train.assign_folds(df, n_folds=2, seed=0)


def _cv(out, **kw):
    df, x, folds = _cohort()
    return train.run_cv(df, x, CFG, TRAINING, folds, out, progress=False, checkpoint_every=1, **kw)


def _same_outputs(a, b, dir_a: Path, dir_b: Path) -> None:
    pd.testing.assert_frame_equal(a.oof, b.oof)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.test_folds, b.test_folds)
    pd.testing.assert_frame_equal(a.history, b.history)
    for k in (0, 1):
        assert (dir_a / f"fold{k}.pt").read_bytes() == (dir_b / f"fold{k}.pt").read_bytes(), k


def test_executor_is_validated_and_ray_missing_names_the_extra(monkeypatch):
    with pytest.raises(ParameterError, match="executor"):
        train_folds([], executor="slurm")
    assert train_folds([FoldJob(0, ())], executor="local")["jobs"] == []  # local: run_cv's own loop trains
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ParameterError, match=r"her2lib\[distributed\]"):
        train_folds([FoldJob(0, ())], executor="ray")


def test_local_jobs_are_recorded(tmp_path):
    _cv(tmp_path)
    rec = json.loads((tmp_path / "jobs.json").read_text())
    assert rec["executor"] == "local" and [j["fold"] for j in rec["jobs"]] == [0, 1]
    assert all(j["device"] == "cpu" and j["wall_s"] > 0 and j["host"] for j in rec["jobs"])


TESTS = Path(__file__).resolve().parent


def ray_cv(out: str, kill_marker: str | None = None) -> None:
    """``run_cv`` with ``executor="ray"`` into ``out`` (run in a child process by :func:`_ray_cv_in_child`); with
    ``kill_marker``, the first attempt of fold 1 kills its worker after epoch 2 and leaves its pid in the marker."""
    marker = Path(kill_marker) if kill_marker else None

    def kill_once(fold, epoch, row):  # runs in the Ray worker
        if marker is not None and fold == 1 and epoch == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)

    res = _cv(Path(out), executor="ray", epoch_hook=kill_once)
    train.write_predictions(res, Path(out) / "pred", "us")


def repeated_cv(out: str, executor: str) -> None:
    """Two repetitions (their own folds and seeds) of ``_cv``'s cohort with ``executor``, into ``out/r0`` and
    ``out/r1`` (run in a child process for Ray)."""
    df, x, folds0 = _cohort()
    folds = [folds0, train.assign_folds(df, n_folds=2, seed=train.repeat_seed(0, 1))]
    outs = [Path(out) / f"r{r}" for r in (0, 1)]
    seeds = [train.repeat_seed(0, r) for r in (0, 1)]
    res = train.run_repeated_cv(
        df, x, CFG, TRAINING, folds, outs, seeds=seeds, executor=executor, progress=False, checkpoint_every=1
    )
    for o, r in zip(outs, res):
        train.write_predictions(r, o / "pred", "us")


def _ray_cv_in_child(out: Path, kill_marker: Path | None = None) -> None:
    """Ray starts in a child process, never in the pytest process: ray.init there changed how the runner started
    later by tests/test_interrupt.py took Ctrl-C (the run went on to the end)."""
    args = [str(out)] + ([str(kill_marker)] if kill_marker else [])
    _in_child("ray_cv", args)


def _in_child(function: str, args: list[str]) -> None:
    """``test_executors.<function>(*args)`` in a child Python process (Ray starts there)."""
    code = f"import sys; sys.path[:0] = [{str(TESTS)!r}]; import test_executors as t; t.{function}(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _same_files(ref: Path, run: Path) -> None:
    """Fold models, metrics and prediction files of two run_cv model folders, byte for byte."""
    names = ["fold0.pt", "fold1.pt", "metrics.csv"]
    names += [f"pred/{p.name}" for p in (ref / "pred").glob("*.csv")]
    assert len(names) >= 6
    differ = [n for n in names if (ref / n).read_bytes() != (run / n).read_bytes()]
    assert not differ, differ


def _local_cv(out: Path) -> None:
    res = _cv(out)
    train.write_predictions(res, out / "pred", "us")


def test_ray_jobs_give_the_local_outputs_byte_for_byte(tmp_path):
    pytest.importorskip("ray")
    _local_cv(tmp_path / "local")
    _ray_cv_in_child(tmp_path / "ray")
    _same_files(tmp_path / "local", tmp_path / "ray")
    rec = json.loads((tmp_path / "ray" / "jobs.json").read_text())
    assert rec["executor"] == "ray" and rec["resources"]["CPU"] >= 1
    assert [j["fold"] for j in rec["jobs"]] == [0, 1] and all(j["pid"] != os.getpid() for j in rec["jobs"])


def test_a_killed_worker_is_retried_and_resumes_to_the_same_outputs(tmp_path):
    pytest.importorskip("ray")
    _local_cv(tmp_path / "local")
    marker = tmp_path / "killed"
    _ray_cv_in_child(tmp_path / "ray", kill_marker=marker)
    assert marker.exists(), "the worker was not killed: the test tested nothing"
    _same_files(tmp_path / "local", tmp_path / "ray")
    rec = json.loads((tmp_path / "ray" / "jobs.json").read_text())
    fold1 = next(j for j in rec["jobs"] if j["fold"] == 1)
    assert fold1["pid"] != int(marker.read_text())  # finished by another worker process


def test_all_repetitions_go_to_ray_together_and_match_the_local_run(tmp_path):
    """Repeated cross-validation on Ray: the 2 repetitions x 2 folds form one submission (4 jobs in one Ray
    session, recorded with their repetition) and give the local executor's files byte for byte."""
    pytest.importorskip("ray")
    repeated_cv(str(tmp_path / "local"), "local")
    _in_child("repeated_cv", [str(tmp_path / "ray"), "ray"])
    for r in ("r0", "r1"):
        _same_files(tmp_path / "local" / r, tmp_path / "ray" / r)
        rec = json.loads((tmp_path / "ray" / r / "jobs.json").read_text())
        assert rec["executor"] == "ray" and [(j["repeat"], j["fold"]) for j in rec["jobs"]] == [
            (int(r[1]), 0),
            (int(r[1]), 1),
        ]
    pids = {
        j["pid"] for r in ("r0", "r1") for j in json.loads((tmp_path / "ray" / r / "jobs.json").read_text())["jobs"]
    }
    assert os.getpid() not in pids
    assert (tmp_path / "local" / "r0" / "fold0.pt").read_bytes() != (
        tmp_path / "local" / "r1" / "fold0.pt"
    ).read_bytes()


@pytest.mark.e2e
def test_smoke_training_notebooks_on_ray_match_the_local_smoke_run(smoke_run, tmp_path):
    """Notebooks 03-04 of the smoke profile with ``executor: ray`` (a local Ray started by the notebook) in a copy
    of the smoke run taken before training: predictions and fold models equal the local run's byte for byte."""
    pytest.importorskip("ray")
    run = tmp_path / "run"
    _copy_before_training(smoke_run, run)
    prof = yaml.safe_load(Path(json.loads((smoke_run / "provenance.json").read_text())["profile"]["file"]).read_text())
    for nb in ("03_train_us", "04_train_mri"):
        prof["notebooks"][nb]["executor"] = "ray"
    path = tmp_path / "smoke_ray.yaml"
    path.write_text(yaml.safe_dump(prof))
    cmd = [*RUNNER, "--profile", str(path), "--out", str(run), "--only", "03", "04"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    compared = [
        p.relative_to(smoke_run) for p in (smoke_run / "predictions").glob("*.csv") if p.name[:3] in ("us_", "mri")
    ]
    compared += [p.relative_to(smoke_run) for m in ("dl_us", "dl_mri") for p in (smoke_run / "models" / m).glob("*")]
    compared = [p for p in compared if p.name != "jobs.json"]  # jobs.json: hosts and wall times
    assert len(compared) >= 10
    differ = [str(p) for p in compared if (smoke_run / p).read_bytes() != (run / p).read_bytes()]
    assert not differ, f"executor ray differs from local: {differ}"
    for model in ("dl_us", "dl_mri"):
        rec = json.loads((run / "models" / model / "jobs.json").read_text())
        n_folds = len(list((run / "models" / model).glob("fold*.pt")))
        assert rec["executor"] == "ray" and len(rec["jobs"]) == n_folds >= 2, rec
