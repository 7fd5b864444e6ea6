"""Runs that survive interruption: one batch per output folder (the run lock), Ctrl-C and SIGKILL during training
followed by the same command, and a full or read-only output disk.

References: the lock file the first batch wrote (its PID, host and start time), ``/proc/<pid>/stat`` for whether that
PID still is that process, and, for the interrupted run, the outputs of the uninterrupted smoke run of the session
(tests/conftest.py ``smoke_run``), compared byte for byte.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import nbformat
import pytest
import yaml

from her2lib.contract import REPO_ROOT
from her2lib.io import is_temp_name
from her2lib.runner import lock, pipeline

RUNNER = [sys.executable, "-m", "her2lib.runner"]
# the same thread settings as the smoke_run fixture's kernels (inherited): CPU results depend on the thread count
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _leftovers(folder: Path) -> list[str]:
    """Temporary files (atomic_path's, papermill's ``.running.ipynb``) and the run lock under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob(".*")
        if p.is_file() and (is_temp_name(p.name) or p.name.endswith(".running.ipynb") or p.name == lock.LOCK_NAME)
    )


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the runner's kernels), from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _gone(pids: list[int], timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if not [p for p in pids if lock._pid_alive(p)]:
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------------------------ the run lock
def test_second_batch_is_refused_naming_the_first_and_a_killed_ones_lock_is_cleared(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [*RUNNER[:1], "-c", "import sys, time; from her2lib.runner import lock; lock.acquire(sys.argv[1], "
         "profile='smoke'); print('held', flush=True); time.sleep(120)", str(out)],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        first = json.loads((out / lock.LOCK_NAME).read_text())
        assert first["pid"] == holder.pid and first["hostname"] == socket.gethostname()
        assert pipeline.main(["--profile", "smoke", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid} on {first['hostname']}, started {first['started_at']}" in err
        assert "choose another --out" in err and str(out) in err
        assert not (out / "provenance.json").exists()  # nothing ran
        assert json.loads((out / lock.LOCK_NAME).read_text()) == first  # the first batch's lock is untouched
    finally:
        holder.kill()
        holder.wait()
    held = lock.acquire(out, profile="smoke")  # the killed holder's lock is stale now
    assert f"cleared a stale run lock in {out} (PID {holder.pid}" in capsys.readouterr().err
    assert json.loads(held.path.read_text())["pid"] == os.getpid()
    lock.release(held)
    assert not held.path.exists()


def _write_lock(out: Path, **changes) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    info = {**lock._record("smoke", ["python", "-m", "her2lib.runner"]), **changes}
    path = out / lock.LOCK_NAME
    path.write_text(json.dumps(info))
    return path


def test_stale_locks_are_cleared_and_live_or_foreign_ones_refused(tmp_path, capsys):
    """A dead PID (reaped, or a zombie), a reused PID (same number, other start time in /proc/<pid>/stat) and a lock
    from before a reboot are stale; this live process's lock and another host's lock are not."""
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    zombie = subprocess.Popen(["true"])  # exited, not yet waited for
    time.sleep(0.3)
    ticks = lock._proc_stat(os.getpid())[1]
    stale = {
        "dead": ({"pid": reaped.pid}, f"PID {reaped.pid} is no longer running"),
        "zombie": ({"pid": zombie.pid}, f"PID {zombie.pid} is no longer running"),
        "reused": ({"pid": os.getpid(), "pid_start_ticks": ticks + 1}, "now belongs to another process"),
        "rebooted": ({"boot_id": "another-boot"}, "the machine has restarted since"),
    }
    for name, (changes, reason) in stale.items():
        _write_lock(tmp_path / name, **changes)
        lock.release(lock.acquire(tmp_path / name))
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1, (name, err)
    zombie.wait()

    _write_lock(tmp_path / "live")
    with pytest.raises(lock.RunLocked, match=rf"PID {os.getpid()} on {socket.gethostname()}, started"):
        lock.acquire(tmp_path / "live")
    _write_lock(tmp_path / "foreign", hostname="another-host", pid=1)
    with pytest.raises(lock.RunLocked, match=r"on another-host.*not running any more, delete .*\.her2lib\.lock"):
        lock.acquire(tmp_path / "foreign")

    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / lock.LOCK_NAME).write_text("{")
    with pytest.raises(lock.RunLocked, match="being written"):  # may be a batch writing it this very moment
        lock.acquire(tmp_path / "garbled")
    os.utime(tmp_path / "garbled" / lock.LOCK_NAME, (time.time() - 60, time.time() - 60))
    lock.release(lock.acquire(tmp_path / "garbled"))
    assert "unreadable run lock" in capsys.readouterr().err


def test_sweep_removes_only_what_an_interrupted_batch_leaves(tmp_path):
    keep = ["tables/table1.csv", ".gitignore", "models/dl_us/fold0.pt", "notebooks/03_train_us.ipynb"]
    drop = [
        "tables/.table1.csv.k3x_9qzb.csv",
        "models/dl_us/.fold0_state.pt.ab3_x9qz.pt",
        "notebooks/.03_train_us.running.ipynb",
        "cache/.file_hashes.json.0a1b2c3d.json",
    ]
    for name in keep + drop:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = lock.sweep_temp_files(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in removed) == sorted(drop)
    assert all((tmp_path / k).exists() for k in keep)


def _toy(tmp_path: Path, body: str) -> dict:
    """One notebook (``00_toy``) whose only cell after the parameters runs ``body``, and its profile."""
    nbdir, cfg = tmp_path / "notebooks", tmp_path / "configs"
    nbdir.mkdir()
    cfg.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "toy"\nseed = 0\nout_dir = "out"\ncohort_dir = "cohort"\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "00_toy.ipynb")
    (cfg / "toy.yaml").write_text(yaml.safe_dump({"common": {"profile": "toy", "cohort_dir": str(tmp_path)}}))
    return {"notebook_dir": nbdir, "config_dir": cfg}


def test_lock_is_released_after_a_failing_notebook(tmp_path):
    toy = _toy(tmp_path, "raise RuntimeError('deliberate failure')")
    with pytest.raises(pipeline.NotebookFailed, match="deliberate failure"):
        pipeline.run_pipeline("toy", tmp_path / "out", **toy)
    assert _leftovers(tmp_path / "out") == []
    assert (tmp_path / "out" / "notebooks" / "00_toy.failed.ipynb").is_file()


def test_ctrl_c_releases_the_folder_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C while papermill runs a notebook (simulated: papermill raises KeyboardInterrupt after writing its
    temporary copy): no lock, no temporary copy, provenance says ``interrupted``, the exception's note gives the
    command that resumes, and the command line prints it and exits with 130 (128 + SIGINT, as shells do); SIGTERM
    is handled as Ctrl-C while the command runs. (The real signal to a real run: the end-to-end test below.)"""
    import papermill

    def interrupted(source, target, **kwargs):
        Path(target).write_text("{}")  # papermill's partial notebook, under the temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as caught:
        pipeline.run_pipeline("toy", out, **_toy(tmp_path, "pass"))
    note = "\n".join(caught.value.__notes__)
    assert "Interrupted during 00_toy.ipynb" in note
    assert f"Resume with: python -m her2lib.runner --profile toy --out {out} --from 00" in note
    assert _leftovers(out) == []
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["status"] == prov["notebooks"]["00_toy"]["status"] == "interrupted"

    during = []

    def stopped(*args, **kwargs):
        during.append(signal.getsignal(signal.SIGTERM))
        raise caught.value

    monkeypatch.setattr(pipeline, "run_pipeline", stopped)
    capsys.readouterr()
    before = signal.getsignal(signal.SIGTERM)
    assert pipeline.main(["--profile", "toy", "--out", str(out)]) == 130
    assert capsys.readouterr().err == f"interrupted.\n{note}\n"
    assert during == [signal.default_int_handler]  # SIGTERM (kill, a batch system) stops the batch as Ctrl-C does
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------------------ disk errors
def test_unwritable_output_folder_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    """--out below a regular file, a read-only file system at the lock, and a full disk at the first write of
    provenance.json: each is ``error: Cannot write <path>: <reason>. <fix>`` with exit status 2, and no lock stays."""
    (tmp_path / "a_file").write_text("x")
    bad = tmp_path / "a_file" / "out"
    assert pipeline.main(["--profile", "smoke", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot write {bad / lock.LOCK_NAME}: ") and "Traceback" not in err

    def read_only(path, info):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    with monkeypatch.context() as m:
        m.setattr(lock, "_create", read_only)
        assert pipeline.main(["--profile", "smoke", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert f"Cannot write {tmp_path / 'ro' / lock.LOCK_NAME}: Read-only file system" in err
    assert "choose a writable output folder (--out)" in err

    import her2lib.io as hio

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(hio, "tempfile", types.SimpleNamespace(mkstemp=full))  # her2lib.io's writes only
    out = tmp_path / "full"
    assert pipeline.main(["--profile", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: Cannot write {out / 'provenance.json'}: No space left on device. Free space on the disk" in err
    assert _leftovers(out) == []


# ------------------------------------------------------------------------------------------------ end to end
def _copy_before_training(src: Path, dst: Path) -> None:
    """What notebooks 00-02 of ``src`` wrote (per its provenance.json), their executed copies, cache/ and params/:
    the state of a run folder in which training is about to start."""
    prov = json.loads((src / "provenance.json").read_text())
    done = ("00_cohort", "01_cohort_tables", "02_preprocess")
    files = [o for k in done for o in prov["notebooks"][k]["outputs"]] + [f"notebooks/{k}.ipynb" for k in done]
    files += [str(p.relative_to(src)) for d in ("cache", "params") for p in (src / d).rglob("*") if p.is_file()]
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f, dst / f)


@contextlib.contextmanager
def _terminal_sigint():
    """Processes started inside get the SIGINT disposition of a terminal's foreground command (default), also when
    this suite runs in the background: bash starts a background job (``make test &``, ``nohup ... &``) with SIGINT
    *ignored*, an ignored signal stays ignored across exec, and a batch started that way rightly ignores Ctrl-C
    (the test then failed with the whole batch finishing, exit 0: reproduced with SIGINT ignored in the parent)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a Python handler -> SIG_DFL in the child
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_and_stop_in_training(
    cmd: list[str], run: Path, sig: int, while_running=None
) -> tuple[subprocess.Popen, str, list[int]]:
    """Start the runner in its own process group, wait until DL-US training wrote a resume state (a
    ``fold*_state.pt`` newer than the start), call ``while_running(proc)``, send ``sig`` to the whole group; return
    the process, its stderr and the kernels it had."""
    t0 = time.time()
    with _terminal_sigint():
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True)
    check = None
    if while_running is not None:  # started as soon as the batch holds its lock, so it runs while the batch does
        while not (run / lock.LOCK_NAME).exists():  # (the smoke profile's training lasts only a few seconds)
            assert proc.poll() is None and time.time() - t0 < 120, "the runner never took its lock"
            time.sleep(0.01)
        check = while_running(proc)
    models = run / "models" / "dl_us"
    while not (states := [p for p in models.glob("fold*_state.pt") if p.stat().st_mtime > t0]):
        assert proc.poll() is None, f"the runner ended before training checkpointed: {proc.communicate()[1][-3000:]}"
        assert time.time() - t0 < 400, "no DL-US resume state within 400 s"
        time.sleep(0.03)
    seen = time.time() - t0
    kernels = _children(proc.pid)
    os.killpg(proc.pid, sig)
    sent = time.time() - t0
    if check is not None:
        check()
    _, err = proc.communicate(timeout=120)
    # when it was sent, for a batch that does not stop (as one started with SIGINT ignored: see _terminal_sigint)
    err += (
        f"\n[test] {signal.Signals(sig).name} sent {sent:.2f} s after the start ({states[0].name} seen at {seen:.2f} s)"
    )
    return proc, err, kernels


@pytest.mark.e2e
def test_ctrl_c_then_sigkill_during_training_then_rerun_gives_identical_outputs(smoke_run, tmp_path):
    """Ctrl-C (SIGINT to the process group) during DL-US training (meanwhile the same command in a second terminal is
    refused), the same command again, SIGKILL of the whole group during training, the same command once more:
    predictions, tables and models are byte-identical to the uninterrupted smoke run's, and no temporary file, lock
    or kernel is left at any point."""
    profile = json.loads((smoke_run / "provenance.json").read_text())["profile"]["file"]
    run = tmp_path / "run"
    _copy_before_training(smoke_run, run)
    cmd = [*RUNNER, "--profile", profile, "--out", str(run), "--from", "03"]

    def second_batch_is_refused(first: subprocess.Popen):
        """Start the same command while the first batch holds the lock; the returned check reads its answer."""
        held = json.loads((run / lock.LOCK_NAME).read_text())
        second = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ENV, stderr=subprocess.PIPE, text=True)

        def check() -> None:
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2 and held["pid"] == first.pid, err[-2000:]
            assert f"error: Another her2lib batch is running into {run}: PID {first.pid}" in err
            assert f"started {held['started_at']}" in err

        return check

    proc, err, kernels = _start_and_stop_in_training(cmd, run, signal.SIGINT, second_batch_is_refused)
    assert proc.returncode == 130, err[-3000:]
    assert f"Resume with: python -m her2lib.runner --profile {profile} --out {run} --from 03" in err
    assert kernels and _gone(kernels, 5), "Ctrl-C left the kernel running"
    assert _leftovers(run) == []

    proc, err, kernels = _start_and_stop_in_training(cmd, run, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert kernels and _gone(kernels, 15), "the kernel outlived its killed runner by more than 15 s"
    assert lock.LOCK_NAME in _leftovers(run)  # what a killed batch leaves: the next one must cope

    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"cleared a stale run lock in {run} (PID {proc.pid}" in done.stderr
    assert _leftovers(run) == []
    compared = [
        p.relative_to(smoke_run) for d in ("predictions", "tables", "models") for p in (smoke_run / d).rglob("*")
    ]
    compared = [p for p in compared if (smoke_run / p).is_file() and p.name != "jobs.json"]  # jobs.json: wall times
    assert len(compared) > 30
    differ = [str(p) for p in compared if (smoke_run / p).read_bytes() != (run / p).read_bytes()]
    assert not differ, f"outputs differ from the uninterrupted run: {differ}"
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["status"] == "ok" and all(prov["notebooks"][k]["status"] == "ok" for k in prov["notebooks"])
