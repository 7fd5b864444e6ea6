"""Where the fold models are trained: in this process one after another (``"local"``), side by side in worker
processes on this machine (``"processes"``), or as Ray tasks on a local Ray or an existing Ray cluster (``"ray"``).

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

``"processes"`` trains folds side by side on one machine's CPU, for cores that one small model's convolutions do
not all use (on 2 cores it gains only 1.0-1.1x: ``benchmarks/bench_executors.py``). Its jobs run in ``workers``
spawned processes with ``cores // workers`` torch threads each; as with Ray, each job writes its ``fold{k}.pt``
and :func:`her2lib.train.run_cv` reuses it, so the outputs are those of the local executor run with that thread
count, byte for byte. Epoch hooks (progress lines) are called in this process, in the order the workers report the
epochs. It refuses a CUDA device (use ``"local"`` or ``"ray"`` there) and an input tensor larger than the free
/dev/shm it travels through.

Each job reports its host, device, threads and wall time; :func:`train_folds` returns them with the executor and the
cluster's resources (``run_cv`` writes them to ``jobs.json`` in the model folder).
"""

from __future__ import annotations

import os
import platform
import queue as queue_mod
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import ParameterError
from ..options import look_up_option
from .loop import FoldResult, fit_fold

__all__ = ["EXECUTORS", "FoldJob", "train_folds", "fit_job", "run_job"]

#: training executors of :func:`train_folds` / :func:`her2lib.train.run_cv`
EXECUTORS = ("local", "processes", "ray")


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


# --------------------------------------------------------------------------------------------- worker processes
_EVENTS = None  # in a "processes" worker: the queue its epoch hooks send to (set by _init_worker)


def _init_worker(events, parent: int) -> None:
    """Worker start: keep the parent's epoch queue, and die with the parent (Linux ``PR_SET_PDEATHSIG``; a parent
    already gone ends the worker at once), so a killed notebook leaves no worker training into its folder."""
    global _EVENTS
    _EVENTS = events
    try:
        import ctypes  # lazy: Linux only
        import signal  # lazy: as above

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker ends when its job does
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@dataclass(frozen=True)
class _QueuedHook:
    """A worker's epoch hook: sends ``(job index, fold, epoch, row)`` to the parent, which calls the job's hook."""

    index: int

    def __call__(self, fold: int, epoch: int, row: dict) -> None:
        _EVENTS.put((self.index, fold, epoch, row))


def resolve_workers(workers: int, cores: int | None = None) -> tuple[int, int]:
    """``(worker processes, torch threads per worker)`` of the ``"processes"`` executor.

    ``workers`` 0 means one per core; each worker gets ``cores // workers`` threads (at least one), ``cores`` being
    this process's torch thread count (one per core by default). The thread count does not depend on the number of
    jobs, so a fold's result does not either; with fewer jobs than workers some cores stay idle (on 16 cores and
    4 folds, ``workers: 4`` gives 4 threads each).

    >>> resolve_workers(0, cores=2), resolve_workers(2, cores=16), resolve_workers(3, cores=2)
    ((2, 1), (2, 8), (3, 1))
    """
    try:
        ok = not isinstance(workers, bool) and int(workers) == workers and workers >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ParameterError(f"workers={workers!r}: give the number of worker processes (0: one per core).")
    cores = int(cores or torch.get_num_threads())
    n = int(workers) or cores
    return n, max(1, cores // n)


def _job_in_worker(job: FoldJob, *, num_threads: int) -> dict[str, Any]:
    """:func:`run_job` in a worker; an error that would not survive the trip to the parent (pickling) is sent as a
    RuntimeError carrying its type, message and traceback."""
    import pickle  # lazy: the error path only
    import traceback  # lazy: as above

    try:
        return run_job(job, num_threads=num_threads)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            text = "".join(traceback.format_exception(exc))
            raise RuntimeError(f"fold {job.fold}: {type(exc).__name__}: {exc}\n{text}") from None
        raise


def _stop(procs: list, *, grace: float = 5.0) -> None:
    """End the workers at once (an error or Ctrl-C in the parent): SIGINT first, so a checkpoint being written is
    cleaned up as on Ctrl-C, then SIGTERM, then SIGKILL, ``grace`` seconds apart; their jobs resume from their last
    checkpoints. Returns when every worker has ended and been reaped."""
    import signal  # lazy: the error path only

    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGINT)
    for proc in procs:
        if not _ended(proc, within=grace):
            proc.terminate()
            if not _ended(proc, within=grace):
                proc.kill()
                _ended(proc, within=60.0)


def _ended(proc, *, within: float) -> bool:
    """Whether ``proc`` ends (and is reaped) within ``within`` seconds, polled. With ``join(timeout)`` instead, a
    worker was still listed as running after ``_stop`` (CI once; here 2 of 4 tries, its ``exitcode`` None)."""
    deadline = time.monotonic() + within
    while proc.is_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _pool_processes(pool: futures.ProcessPoolExecutor) -> list:
    """The pool's worker processes (before a shutdown forgets them), to drain their events or stop them."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _check_shared_memory(jobs: list[FoldJob]) -> None:
    """The inputs reach the workers through /dev/shm (torch's tensor sharing): refuse, with the fix, where it is
    too small for them (a container's default is 64 MB)."""
    inputs = [j.args[2] for j in jobs if len(j.args) > 2 and isinstance(j.args[2], torch.Tensor)]
    need = sum({id(x): x.nbytes for x in inputs}.values())
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return
    if need > st.f_bavail * st.f_frsize:
        raise ParameterError(
            f"executor='processes': the training inputs ({need / 1e9:.2f} GB) do not fit in /dev/shm "
            f"({st.f_bavail * st.f_frsize / 1e9:.2f} GB free), through which the workers receive them. Fix: a "
            "larger /dev/shm (docker run --shm-size=...), or executor='local'."
        )


def _process_jobs(jobs: list[FoldJob], *, workers: int, num_threads: int, report: Callable) -> list[dict]:
    import multiprocessing as mp  # lazy: the "processes" executor only

    _check_shared_memory(jobs)
    ctx = mp.get_context("spawn")  # a fresh interpreter: forking a process whose OpenMP pool has run is unsafe
    events = ctx.Queue()
    hooks = [job.options.get("epoch_hook") for job in jobs]
    sent = [
        replace(job, options={**job.options, "progress": False, "epoch_hook": None if h is None else _QueuedHook(i)})
        for i, (job, h) in enumerate(zip(jobs, hooks))
    ]

    def drain() -> None:
        while True:
            try:
                i, fold, epoch, row = events.get_nowait()
            except queue_mod.Empty:
                return
            hooks[i](fold, epoch, row)

    pool = futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(events, os.getpid())
    )
    done: list[dict] = []
    try:
        pending = {pool.submit(_job_in_worker, job, num_threads=num_threads): job.fold for job in sent}
        while pending:
            finished, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
            drain()
            for fut in finished:
                fold = pending.pop(fut)
                try:
                    done.append(fut.result())
                except futures.BrokenExecutor as exc:
                    folds = sorted([fold, *pending.values()])
                    raise RuntimeError(
                        f"executor='processes': a worker process died (folds {folds} were not finished), e.g. killed "
                        "for lack of memory. Fix: fewer workers (workers: N), or executor='local'; finished folds are "
                        "kept and the others resume from their checkpoints."
                    ) from exc
                report(done[-1], len(done), len(jobs))
        procs = _pool_processes(pool)
        pool.shutdown(wait=False)
        while any(p.is_alive() for p in procs):  # drain while the workers flush their last events and exit
            drain()
            for p in procs:
                p.join(timeout=0.05)
    except BaseException:
        procs = _pool_processes(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        _stop(procs)
        raise
    drain()
    return sorted(done, key=lambda r: (r["repeat"], r["fold"]))


def train_folds(
    jobs: list[FoldJob],
    *,
    executor: str = "local",
    ray_address: str | None = None,
    workers: int = 0,
    max_retries: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the jobs with ``executor`` (``"local"``: nothing here, :func:`her2lib.train.run_cv` trains them in
    its loop).

    Parameters
    ----------
    jobs : list of FoldJob
    executor : {"local", "processes", "ray"}
    ray_address : str, optional
        None or "": start a local Ray for these jobs (stopped afterwards); "auto" or "host:port": join that
        cluster. A Ray already initialised in this process is used as it is.
    workers : int
        ``"processes"``: worker processes (0: one per core), each with :func:`resolve_workers`' thread count.
    max_retries : int
        Ray retries of a job whose worker died (each retry resumes from the job's checkpoint).
    progress : bool
        Print a line per finished job.

    Returns
    -------
    dict
        ``executor``, ``ray_address``, ``resources`` (the cluster's, Ray only; ``"processes"``: ``workers`` and
        ``threads``) and ``jobs`` (one record per job: repeat, fold, host, pid, device, threads, wall_s,
        best_epoch; with ``"local"`` the local loop's are added by ``run_cv`` / ``run_repeated_cv``).
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
                f"{executor}: {rep}fold {rec['fold']} done on {rec['host']} ({rec['device']}) in {rec['wall_s']:.1f} s "
                f"[{n_done}/{n_all}]",
                flush=True,
            )

    if executor == "processes":
        if device.startswith("cuda"):
            raise ParameterError(
                "executor='processes' trains on the CPU (several folds side by side); on a GPU use executor='local' "
                "(one fold at a time on the GPU) or executor='ray' (one fold per GPU)."
            )
        n, threads = resolve_workers(workers)
        n = min(n, len(jobs))
        record["resources"] = {"workers": n, "threads": threads}
        record["jobs"] = _process_jobs(jobs, workers=n, num_threads=threads, report=report)
        return record
    record["jobs"], record["resources"] = _ray_jobs(
        jobs,
        ray_address=ray_address,
        num_threads=torch.get_num_threads(),
        gpu=device.startswith("cuda"),
        max_retries=max_retries,
        report=report,
    )
    return record
