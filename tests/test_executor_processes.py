"""Fold jobs side by side in worker processes (``executor="processes"``) against the local loop at the workers'
thread count: the same fold models byte for byte, the same predictions, every epoch reported in the parent, and an
error in a worker raised in the parent with the job's message.

Reference: ``run_cv`` with ``executor="local"`` after ``torch.set_num_threads(threads)`` (the thread count each
worker uses), ``fold{k}.pt`` compared as bytes, prediction and history frames exactly.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace

import pytest
import torch
from test_executors import CFG, TRAINING, _cohort, _same_outputs

from her2lib import train
from her2lib.errors import ParameterError
from her2lib.train.executors import resolve_workers


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cv(out, model_cfg=CFG, **kw):
    df, x, folds = _cohort()
    return train.run_cv(df, x, model_cfg, TRAINING, folds, out, progress=False, checkpoint_every=1, **kw)


def test_resolve_workers_gives_each_worker_its_share_of_the_cores():
    assert resolve_workers(0, cores=2) == (2, 1)
    assert resolve_workers(4, cores=16) == (4, 4)
    assert resolve_workers(3, cores=2) == (3, 1)  # more workers than cores: one thread each
    for bad in (-1, 1.5, True):
        with pytest.raises(ParameterError, match="workers"):
            resolve_workers(bad, cores=2)


def test_processes_give_the_local_outputs_at_the_workers_thread_count(tmp_path, one_thread):
    """Two workers of one thread each (``cores=2`` there: the test sets this process to 2 threads for the
    parent) against the local loop at one thread: fold models, histories and predictions identical; every epoch's
    hook call reaches the parent, once, with the worker's row."""
    local = _cv(tmp_path / "local")
    torch.set_num_threads(2)
    seen = []
    hook = lambda fold, epoch, row: seen.append((fold, epoch, row["val_auc"]))  # noqa: E731 (runs in the parent)
    procs = _cv(tmp_path / "proc", executor="processes", workers=2, epoch_hook=hook)
    _same_outputs(local, procs, tmp_path / "local", tmp_path / "proc")
    rec = json.loads((tmp_path / "proc" / "jobs.json").read_text())
    assert rec["executor"] == "processes" and rec["resources"] == {"workers": 2, "threads": 1}
    assert [j["fold"] for j in rec["jobs"]] == [0, 1] and {j["threads"] for j in rec["jobs"]} == {1}
    assert os.getpid() not in {j["pid"] for j in rec["jobs"]}  # trained in the workers
    expected = sorted((int(r.fold), int(r.epoch) - 1, r.val_auc) for r in local.history.itertuples())
    assert sorted(seen) == expected


def test_repetitions_go_to_the_workers_together(tmp_path, one_thread):
    """Two repetitions x two folds in one submission give each repetition's local result."""
    df, x, folds0 = _cohort()
    folds = [folds0, train.assign_folds(df, n_folds=2, seed=train.repeat_seed(0, 1))]
    kw = dict(seeds=[train.repeat_seed(0, r) for r in (0, 1)], progress=False, checkpoint_every=1)
    local = train.run_repeated_cv(df, x, CFG, TRAINING, folds, [tmp_path / "l0", tmp_path / "l1"], **kw)
    torch.set_num_threads(2)
    outs = [tmp_path / "p0", tmp_path / "p1"]
    procs = train.run_repeated_cv(df, x, CFG, TRAINING, folds, outs, executor="processes", workers=2, **kw)
    for r in (0, 1):
        _same_outputs(local[r], procs[r], tmp_path / f"l{r}", outs[r])
        rec = json.loads((outs[r] / "jobs.json").read_text())
        assert [(j["repeat"], j["fold"]) for j in rec["jobs"]] == [(r, 0), (r, 1)]


def test_an_error_in_a_worker_reaches_the_parent_with_its_message(tmp_path):
    """A job that fails in a worker (a checkpoint file that does not exist, found when the worker builds the
    model) raises the job's own error in the parent, and no worker is left running."""
    missing = tmp_path / "missing.pth"
    with pytest.raises(ParameterError, match="is not a file") as caught:
        _cv(tmp_path / "out", executor="processes", workers=2, model_cfg=replace(CFG, checkpoint=str(missing)))
    assert str(missing) in str(caught.value)
    assert not multiprocessing.active_children()
    assert not list((tmp_path / "out").glob("fold*.pt"))
