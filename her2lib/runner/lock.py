"""One batch at a time per run folder: the run lock, stale-lock recovery, and leftovers of an interrupted batch.

A batch holds ``<out>/.her2lib.lock`` while it runs: a small JSON file (PID, host, the process's start time,
profile, command, UTC start time) created atomically, so of two batches started into the same folder exactly one
gets it; the other stops with :class:`RunLocked`, naming the first (PID, host, start time) and what to do. The
lock is removed when the batch ends, also when a notebook failed or the batch was interrupted (Ctrl-C).

A batch that was killed (SIGKILL, power loss) leaves its lock behind. The next batch finds it *stale* when the
PID no longer runs on this host, or runs but is another process (its start time in ``/proc/<pid>/stat`` differs
from the one recorded: the PID was reused), or the machine has rebooted since; it says so in one line and takes
the lock. A lock written on another host is never cleared automatically (its process cannot be checked from here).

The killed batch may also have left temporary files (``her2lib.io.atomic_path``'s dot-named files and papermill's
``.NN_name.running.ipynb``); they never carry a final name, and :func:`sweep_temp_files` removes them once the
new batch holds the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import Her2libError
from ..io import is_temp_name, output_error

try:  # POSIX: serialise the check-and-create between batches on this host
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunLocked", "RunLock", "acquire", "release", "run_lock", "stale_reason", "sweep_temp_files"]

LOCK_NAME = ".her2lib.lock"
_MALFORMED_GRACE_S = 10.0  # an unreadable lock younger than this may be one being written right now


class RunLocked(Her2libError):
    """Another batch holds the run folder's lock; names it (PID, host, start time) and the fix."""


@dataclass(frozen=True)
class RunLock:
    """A lock this process holds: its file and the record written into it."""

    path: Path
    info: dict[str, Any]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` of ``pid`` from ``/proc/<pid>/stat``; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        fields = text[text.rindex(")") + 2 :].split()  # the name (field 2) may hold spaces and parentheses
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    stat = _proc_stat(pid)
    return not (stat and stat[0] in ("Z", "X"))  # a zombie has exited; it only waits for its parent


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(profile: str, command: Sequence[str] | None) -> dict[str, Any]:
    stat = _proc_stat(os.getpid())
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_start_ticks": stat[1] if stat else None,
        "started_at": _now(),
        "profile": profile,
        "command": shlex.join(command if command is not None else sys.orig_argv),
    }


def stale_reason(info: dict[str, Any]) -> str | None:
    """Why the lock ``info`` belongs to no running batch (``"PID 123 is no longer running"``), or None when its
    process may still run (alive on this host, or on another host, which cannot be checked from here)."""
    pid = info.get("pid")
    if info.get("hostname") != socket.gethostname() or not isinstance(pid, int):
        return None
    boot = _boot_id()
    if info.get("boot_id") and boot and info["boot_id"] != boot:
        return "the machine has restarted since"
    if not _pid_alive(pid):
        return f"PID {pid} is no longer running"
    stat = _proc_stat(pid)
    if info.get("pid_start_ticks") is not None and stat and stat[1] != info["pid_start_ticks"]:
        return f"PID {pid} now belongs to another process"
    return None


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's record; None when it is unreadable or not a lock record."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any]) -> str:
    return (
        f"PID {info.get('pid')} on {info.get('hostname')}, started {info.get('started_at')} "
        f"(profile {info.get('profile')!r}: {info.get('command')})"
    )


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create ``path`` holding ``info`` only if it does not exist (O_CREAT | O_EXCL); False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
    except BaseException:  # a full disk: leave no empty lock behind
        path.unlink(missing_ok=True)
        raise
    return True


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold an advisory lock on ``folder`` itself while a batch checks and takes the run lock, so two batches that
    both find the same stale lock cannot both clear it and both go on (a no-op where ``flock`` is unavailable)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _check_existing(path: Path, out: Path) -> None:
    """Refuse when ``path`` is a live batch's lock; clear it (saying so in one line) when it is stale."""
    info = _read(path)
    if info is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return
        if age < _MALFORMED_GRACE_S:
            raise RunLocked(f"{path} is being written by another batch starting in {out}; try again in a moment.")
        print(f"her2lib: removed an unreadable run lock {path} (left by an interrupted batch).", file=sys.stderr)
    else:
        reason = stale_reason(info)
        if reason is None:
            raise RunLocked(
                f"Another her2lib batch is running into {out}: {_describe(info)}. Wait for it to finish or stop it "
                f"(kill {info.get('pid')}), or choose another --out. If it is not running any more, delete {path}."
            )
        print(f"her2lib: cleared a stale run lock in {out} ({_describe(info)}; {reason}).", file=sys.stderr)
    path.unlink(missing_ok=True)


def acquire(out: str | os.PathLike, *, profile: str = "", command: Sequence[str] | None = None) -> RunLock:
    """Take ``<out>/.her2lib.lock`` for this process (the folder is created if needed).

    Raises
    ------
    RunLocked
        Another batch holds it (named in the message).
    her2lib.errors.OutputError
        The folder cannot be created or written (read-only, full, no permission).
    """
    out = Path(out)
    path = out / LOCK_NAME
    info = _record(profile, command)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with _exclusive(out):
            for _ in range(3):
                if _create(path, info):
                    return RunLock(path, info)
                _check_existing(path, out)
    except OSError as exc:
        raise output_error(exc, path) from exc
    raise RunLocked(f"Could not take the run lock {path}: other batches keep taking it. Try again.")


def release(lock: RunLock) -> None:
    """Remove the lock file, if it is still this process's lock."""
    current = _read(lock.path)
    if (
        current is not None
        and current.get("pid") == lock.info["pid"]
        and current.get("started_at") == lock.info["started_at"]
    ):
        with contextlib.suppress(FileNotFoundError):
            lock.path.unlink()


@contextlib.contextmanager
def run_lock(out: str | os.PathLike, *, profile: str = "", command: Sequence[str] | None = None) -> Iterator[RunLock]:
    """``with run_lock(out, profile=...):`` hold the run lock for the block; released however the block ends."""
    lock = acquire(out, profile=profile, command=command)
    try:
        yield lock
    finally:
        release(lock)


def sweep_temp_files(out: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted batch left in ``out``: temporary files of ``her2lib.io.atomic_path`` and
    papermill's ``.NN_name.running.ipynb``. Call it only while holding the run lock. Returns the paths removed."""
    removed = []
    for p in sorted(Path(out).rglob(".*")):
        if p.is_file() and p.name != LOCK_NAME and (is_temp_name(p.name) or p.name.endswith(".running.ipynb")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
