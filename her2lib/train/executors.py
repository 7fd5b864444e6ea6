"""Where the fold models are trained: in this process one after another (``"local"``), or as Ray tasks on a local
Ray or an existing Ray cluster (``"ray"``).

Science layer. A job is one :func:`her2lib.train.fit_fold` call (one model x fold). With ``executor="ray"``,
:func:`train_folds` sends every job to Ray first; each job writes its checkpoints and its finished ``fold{k}.pt``
atomically into the model folder (which every Ray node must see: one machine, or shared storage). Then
:func:`her2lib.train.run_cv` runs its usual loop, which finds each finished fold by its fingerprint and reuses it,
so the merge (predictions, tables) is the local code and the outputs are the local run's byte for byte:

* a job runs with the driver's torch thread count (CPU results depend on it) and asks Ray for that many CPUs, or
  for one GPU when the device is CUDA;
* a job whose worker dies is retried by Ray (``max_retries``) and resumes from its last checkpoint
  (:func:`her2lib.train.fit_fold`'s resume is byte-exact);
* Ray is optional (``pip install her2lib[distributed]``); without it ``executor="ray"`` raises a
  :class:`~her2lib.errors.ParameterError` naming the extra.

Each job reports its host, device, threads and wall time; :func:`train_folds` returns them with the executor and the
cluster's resources (``run_cv`` writes them to ``jobs.json`` in the model folder).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import ParameterError
from ..options import look_up_option
from .loop import FoldResult, fit_fold

__all__ = ["EXECUTORS", "FoldJob", "train_folds", "fit_job", "run_job"]

#: training executors of :func:`train_folds` / :func:`her2lib.train.run_cv`
EXECUTORS = ("local", "ray")


@dataclass
class FoldJob:
    """One :func:`her2lib.train.fit_fold` call: its positional arguments, ``options`` and the repetition of a
    repeated cross-validation it belongs to (0: the single run).

    With ``index = (fit_idx, sel_idx)``, ``args`` is ``(model_cfg, training, x, rows)`` holding the whole cohort's
    inputs, shared by every job of a cross-validation, and the fit and selection sets are sliced only when the job
    runs (:meth:`fit_args`): planning R repetitions x K folds does not hold R x K copies of the inputs. Without it,
    ``args`` are ``fit_fold``'s positional arguments as they are.
    """

    fold: int
    args: tuple
    options: dict[str, Any] = field(default_factory=dict)
    repeat: int = 0
    index: tuple | None = None

    def fit_args(self) -> tuple:
        """``fit_fold``'s positional arguments: ``(model_cfg, training, x_fit, rows_fit, x_sel, rows_sel)``."""
        if self.index is None:
            return self.args
        model_cfg, training, x, rows = self.args
        fit, sel = self.index
        return model_cfg, training, x[fit], rows.iloc[fit], x[sel], rows.iloc[sel]

    def without_inputs(self) -> FoldJob:
        """This job with its shared inputs ``x`` left out (Ray sends them once, :func:`run_job` puts them back)."""
        return replace(self, args=(*self.args[:2], None, *self.args[3:]))


def fit_job(job: FoldJob, *, num_threads: int) -> tuple[FoldResult, dict[str, Any]]:
    """Run one job in this process with ``num_threads`` torch threads: its :class:`FoldResult` and the record
    :func:`train_folds` keeps of it (repeat, fold, host, pid, device, threads, wall_s, best_epoch)."""
    torch.set_num_threads(int(num_threads))
    t0 = time.perf_counter()
    res = fit_fold(*job.fit_args(), fold=job.fold, **job.options)
    device = str(job.options.get("device", "cpu"))
    return res, {
        "repeat": int(job.repeat),
        "fold": int(job.fold),
        "host": platform.node(),
        "pid": os.getpid(),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "threads": int(num_threads),
        "wall_s": round(time.perf_counter() - t0, 3),
        "best_epoch": int(res.best_epoch),
    }


def run_job(job: FoldJob, x=None, *, num_threads: int) -> dict[str, Any]:
    """A Ray task: :func:`fit_job` without the weights (they stay in the job's ``fold{k}.pt``); ``x``: the shared
    inputs of a job sent :meth:`FoldJob.without_inputs` (Ray resolves them from its object store)."""
    if x is not None:
        job = replace(job, args=(*job.args[:2], x, *job.args[3:]))
    return fit_job(job, num_threads=num_threads)[1]


def _submit(ray, remote, jobs: list[FoldJob], num_threads: int) -> dict:
    """Submit every job; the shared inputs of jobs with an ``index`` go to the object store once per tensor."""
    shared, pending = {}, {}
    for job in jobs:
        if job.index is None:
            ref = remote.remote(job, num_threads=num_threads)
        else:
            x = job.args[2]
            if id(x) not in shared:
                shared[id(x)] = ray.put(x)
            ref = remote.remote(job.without_inputs(), shared[id(x)], num_threads=num_threads)
        pending[ref] = (job.repeat, job.fold)
    return pending


def _import_ray():
    try:
        import ray  # lazy: the optional extra her2lib[distributed]; the local executor never needs it
    except ImportError as exc:
        raise ParameterError(
            "executor='ray' needs Ray, the optional extra: pip install 'her2lib[distributed]' (or pip install ray); "
            "or use executor='local'."
        ) from exc
    return ray


def _ray_jobs(
    jobs: list[FoldJob], *, ray_address: str | None, num_threads: int, gpu: bool, max_retries: int, report: Callable
) -> tuple[list[dict], dict]:
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address or None, include_dashboard=False, log_to_driver=False)
    try:
        resources = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
        need = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": min(num_threads, int(resources.get("CPU", 1)))}
        remote = ray.remote(max_retries=max_retries, retry_exceptions=False, **need)(run_job)
        pending = _submit(ray, remote, jobs, num_threads)
        done = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                done.append(ray.get(ref))
                report(done[-1], len(done), len(jobs))
        return sorted(done, key=lambda r: (r["repeat"], r["fold"])), resources
    finally:
        if started:
            ray.shutdown()


def train_folds(
    jobs: list[FoldJob],
    *,
    executor: str = "local",
    ray_address: str | None = None,
    max_retries: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the jobs with ``executor`` (``"local"``: nothing here, :func:`her2lib.train.run_cv` trains them in
    its loop).

    Parameters
    ----------
    jobs : list of FoldJob
    executor : {"local", "ray"}
    ray_address : str, optional
        None or "": start a local Ray for these jobs (stopped afterwards); "auto" or "host:port": join that
        cluster. A Ray already initialised in this process is used as it is.
    max_retries : int
        Ray retries of a job whose worker died (each retry resumes from the job's checkpoint).
    progress : bool
        Print a line per finished job.

    Returns
    -------
    dict
        ``executor``, ``ray_address``, ``resources`` (the cluster's, Ray only) and ``jobs`` (one record per job:
        repeat, fold, host, pid, device, threads, wall_s, best_epoch; Ray only: the local loop's are added by
        ``run_cv`` / ``run_repeated_cv``).
    """
    look_up_option(executor, EXECUTORS, name="executor")
    record: dict[str, Any] = {"executor": executor, "ray_address": ray_address or None, "resources": {}, "jobs": []}
    if executor == "local" or not jobs:
        return record
    device = str(jobs[0].options.get("device", "cpu"))

    def report(rec: dict, n_done: int, n_all: int) -> None:
        if progress:
            rep = f"repeat {rec['repeat']} " if any(j.repeat for j in jobs) else ""
            print(
                f"ray: {rep}fold {rec['fold']} done on {rec['host']} ({rec['device']}) in {rec['wall_s']:.1f} s "
                f"[{n_done}/{n_all}]",
                flush=True,
            )

    record["jobs"], record["resources"] = _ray_jobs(
        jobs,
        ray_address=ray_address,
        num_threads=torch.get_num_threads(),
        gpu=device.startswith("cuda"),
        max_retries=max_retries,
        report=report,
    )
    return record
