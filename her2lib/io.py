"""Atomic file writing and content hashing.

Everything her2lib writes goes through :func:`atomic_path`: the data is written to a temporary file in the
target folder and renamed over the target only once complete, so an interrupted run never leaves a
half-written file and never destroys the previous good copy. The finished file gets the permissions any
new file gets under the process's umask (``0o666 & ~umask``: 0644 under the usual 022), not the 0600 of a
temporary file, so a lab group or a web server can read the reports. A write that fails for want of space or
permission raises :class:`~her2lib.errors.OutputError` naming the file, the cause and the fix.

This module is part of her2lib's core layer: it imports only :mod:`her2lib.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError

__all__ = [
    "usable_cpus",
    "atomic_path",
    "is_temp_name",
    "output_error",
    "new_file_mode",
    "write_text",
    "write_json",
    "write_csv",
    "save_figure",
    "sha256_file",
    "hash_files",
]


def _umask() -> int:
    """The process's umask, read without changing it where the OS says it (Linux >= 4.7: /proc/self/status);
    elsewhere by setting and restoring it (a brief window in which another thread's new file would get 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """Permission bits a newly created file gets under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
# atomic_path's temporary names: "." + target name + "." + mkstemp's 8 random characters + target suffixes
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>(\.[^.]+)*)$")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_path`'s temporary files (``.table.csv.k3x_9qzb.csv``), which an
    interrupted process may leave behind; no final output name matches (final names do not start with a dot).

    >>> is_temp_name(".fold0_state.pt.ab3_x9qz.pt"), is_temp_name(".roc.png.a1b2c3d4.png"), is_temp_name("roc.png")
    (True, True, False)
    """
    m = _TEMP_NAME.match(name)
    if not m or not m["suffix"]:
        return False
    return m["suffix"] == ".tmp" or "".join(Path(m["name"]).suffixes).endswith(m["suffix"])


def output_error(exc: OSError, path: str | os.PathLike) -> OutputError:
    """The :class:`~her2lib.errors.OutputError` for ``exc``, raised while writing ``path``: the path, the system's
    reason and the fix (free space, a writable folder, or another ``--out``)."""
    path = Path(path)
    folder = path.parent
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        fix = f"Free space on the disk holding {folder}, or choose another output folder (--out)."
    elif exc.errno == errno.EROFS:
        fix = f"{folder} is on a read-only file system: choose a writable output folder (--out)."
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = f"Make {folder} writable for this user, or choose another output folder (--out)."
    else:
        fix = f"Check {folder}, or choose another output folder (--out)."
    err = OutputError(f"Cannot write {path}: {reason}. {fix}")
    err.errno, err.filename = exc.errno, str(path)
    return err


_FULL = 1 << 20  # a folder with less free space than this (1 MiB) counts as full


def _free_bytes(folder: Path) -> int:
    """Bytes this user may still write in ``folder``'s file system (a large number where that is unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _is_write_error(exc: BaseException, *paths: Path) -> bool:
    """An ``OSError`` about writing (no space, read-only, no permission) or about one of ``paths``."""
    if not isinstance(exc, OSError) or isinstance(exc, OutputError):
        return False
    if exc.errno in _NO_SPACE + (errno.EROFS,):
        return True
    if exc.filename is not None:
        return str(exc.filename) in {str(p) for p in paths}
    return exc.errno in _NO_WRITE  # a writer's own open()/write() without a file name


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds.

    The temporary file keeps ``target``'s suffix (or ``suffix``) so writers that infer the format from the
    extension (``.nii.gz``, ``.png``, ``.pt``) still work. On an exception the temporary file is removed and
    ``target`` is untouched. A full disk, a read-only folder or a missing permission (when creating, writing or
    renaming the file) raises :class:`~her2lib.errors.OutputError` naming ``target`` and the fix; so does any
    error of the writer when the disk is full (less than 1 MiB left), as writers that wrap the system's error.
    """
    target = Path(target)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(exc, target) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # a writer may have replaced the file; mkstemp made it 0600
            os.chmod(tmp_path, new_file_mode())
        os.replace(tmp_path, target)
    except BaseException as exc:
        # some writers report a full disk as their own error (torch.save: RuntimeError "unexpected pos ...")
        full = isinstance(exc, Exception) and not isinstance(exc, OSError) and _free_bytes(target.parent) < _FULL
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if full:
            raise output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), target) from exc
        if _is_write_error(exc, tmp_path, target):
            raise output_error(exc, target) from exc
        raise


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (keys sorted, so equal content gives equal bytes)."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(target: str | os.PathLike, df, **kwargs) -> Path:
    """Atomically write a pandas DataFrame as CSV (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(target)


def save_figure(fig, target: str | os.PathLike, dpi: int = 200, *, svg: bool = False) -> Path:
    """Atomically save a matplotlib figure (format from the suffix, PNG by default); ``svg=True`` also writes an
    SVG twin with the same stem. No time stamp or software tag and fixed SVG element ids, so a rerun writes
    identical bytes."""
    import matplotlib as mpl  # lazy: matplotlib is only needed by callers that draw

    target = Path(target)
    fmt = target.suffix.lstrip(".") or "png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, metadata={"Software": None} if fmt == "png" else None)
    if svg:
        with atomic_path(target.with_suffix(".svg")) as tmp, mpl.rc_context({"svg.hashsalt": "her2lib"}):
            fig.savefig(tmp, format="svg", metadata={"Date": None})
    return target


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which a container or ``taskset`` may narrow; else the count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """One SHA-256 over several files: each file's path (relative to ``root``) and content hash, in sorted order."""
    h = hashlib.sha256()
    items = []
    for p in paths:
        p = Path(p)
        name = str(p.relative_to(root)) if root is not None else str(p)
        items.append((name, p))
    for name, p in sorted(items):
        h.update(name.encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
        h.update(b"\n")
    return h.hexdigest()
