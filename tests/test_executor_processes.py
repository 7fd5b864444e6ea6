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
from her2lib.train import executors
from her2lib.train.executors import FoldJob, resolve_workers, train_folds


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


def _deaf_to_int_and_term(ready) -> None:
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(600)


def test_stop_ends_a_worker_that_ignores_sigint_and_sigterm():
    """The last resort of ``_stop`` (a worker outlived SIGINT and SIGTERM once in CI): SIGKILL after the grace time."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_deaf_to_int_and_term, args=(ready,))
    proc.start()
    assert ready.wait(60)
    executors._stop([proc], grace=0.2)
    assert not proc.is_alive() and proc.exitcode == -9
    assert not multiprocessing.active_children()


class _DiesWhenUnpickled:
    """A job argument whose unpickling (in the worker) ends the worker process at once, as an OOM kill would."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_worker_that_dies_is_a_clear_error_naming_the_folds():
    jobs = [FoldJob(k, (_DiesWhenUnpickled(),), {"device": "cpu"}) for k in (0, 1)]
    with pytest.raises(RuntimeError, match=r"a worker process died \(folds \[0, 1\] were not finished\)"):
        train_folds(jobs, executor="processes", workers=2, progress=False)
    assert not multiprocessing.active_children()


def test_an_error_that_cannot_travel_is_sent_with_its_type_and_message(monkeypatch):
    """An exception whose class cannot be rebuilt from its pickle (constructor with other arguments) would break the
    pool; the worker sends a RuntimeError with the type, message and traceback instead."""

    class Odd(Exception):
        def __init__(self, code, why):
            super().__init__(f"code {code}: {why}")

    def fail(job, x=None, *, num_threads):
        raise Odd(7, "no weights here")

    monkeypatch.setattr(executors, "run_job", fail)
    with pytest.raises(RuntimeError, match=r"fold 0: Odd: code 7: no weights here") as caught:
        executors._job_in_worker(FoldJob(0, ()), num_threads=1)
    assert "Traceback" in str(caught.value)
    monkeypatch.setattr(
        executors, "run_job", lambda job, x=None, *, num_threads: (_ for _ in ()).throw(ValueError("v"))
    )
    with pytest.raises(ValueError, match="^v$"):  # a picklable error travels as it is
        executors._job_in_worker(FoldJob(0, ()), num_threads=1)


def test_processes_refuse_a_gpu_and_bad_worker_counts():
    with pytest.raises(ParameterError, match="executor='local'"):
        train_folds([FoldJob(0, (), {"device": "cuda:0"})], executor="processes")
    for bad in (None, "a", float("nan")):
        with pytest.raises(ParameterError, match="workers"):
            resolve_workers(bad, cores=2)


def test_every_public_name_of_the_training_package_resolves():
    """``her2lib.train`` loads its model code lazily: every name in ``__all__`` must still be reachable, and a
    lazily loaded name is its submodule's object (not a stale copy)."""
    for name in train.__all__:
        assert getattr(train, name) is not None, name
    assert train.run_cv is train.cv.run_cv and train.fit_fold is train.loop.fit_fold
    with pytest.raises(AttributeError):
        train.no_such_name  # noqa: B018
