"""Atomic writes, hashing, and the errors of a full or read-only output disk."""

import errno
import os
import shutil
import stat
import subprocess
import types
from pathlib import Path

import matplotlib.figure
import pytest

import her2lib.io as hio
from her2lib.errors import Her2libError, OutputError
from her2lib.io import atomic_path, hash_files, new_file_mode, save_figure, sha256_file, write_json, write_text


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    write_text(target, "good\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("boom")
    assert target.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_temp_path_keeps_suffix_and_json_is_deterministic(tmp_path):
    with atomic_path(tmp_path / "vol.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    write_json(tmp_path / "b.json", {"a": 2, "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_hash_files_depends_on_names_and_content_not_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    h = hash_files([a, b], root=tmp_path)
    assert h == hash_files([b, a], root=tmp_path)
    b.write_text("3")
    assert hash_files([a, b], root=tmp_path) != h
    assert sha256_file(a) == "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_umask_mode_not_the_temp_files_0600(tmp_path, umask, expected):
    """A table, a JSON and a figure written by her2lib are readable by the group/others the umask allows
    (mkstemp alone gives 0600). Reference: the mode ``open()`` gives a new file under the same umask."""
    matplotlib_figure = matplotlib.figure.Figure(figsize=(1, 1))
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what the OS gives a new file under this umask
        write_text(tmp_path / "a.md", "x")
        write_json(tmp_path / "a.json", {"a": 1})
        save_figure(matplotlib_figure, tmp_path / "a.png", svg=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    for name in ("a.md", "a.json", "a.png", "a.svg"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_new_file_mode_reads_the_umask_without_changing_it(monkeypatch):
    import her2lib.io as hio

    calls = []
    real = os.umask
    monkeypatch.setattr(hio.os, "umask", lambda m: calls.append(m) or real(m))
    old = real(0o077)
    try:
        assert new_file_mode() == 0o600
        if os.path.exists("/proc/self/status"):  # Linux: read, never set
            assert calls == []
    finally:
        real(old)


def test_new_file_mode_leaves_the_umask_unchanged():
    old = os.umask(0o027)
    try:
        assert new_file_mode() == 0o640
        assert new_file_mode() == 0o640  # reading it did not reset it
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------------ disk errors
def _fails_with(exc: OSError):
    def raise_(*args, **kwargs):
        raise exc

    return raise_


def test_full_disk_while_writing_names_the_file_and_the_fix(tmp_path):
    """ENOSPC from a writer's own write (no file name on the error, as ``f.write`` raises it) becomes an OutputError
    naming the target, the system's reason and the fix; the previous file is intact and no temporary file stays.
    Reference: the errno and message the OS gives (os.strerror)."""
    target = tmp_path / "tables" / "table.csv"
    write_text(target, "good\n")
    with pytest.raises(OutputError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    msg = str(caught.value)
    assert msg == (
        f"Cannot write {target}: {os.strerror(errno.ENOSPC)}. Free space on the disk holding {target.parent}, "
        "or choose another output folder (--out)."
    )
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(target) and isinstance(caught.value, Her2libError)
    assert target.read_text() == "good\n" and [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_read_only_folder_and_refused_rename_name_the_file(tmp_path, monkeypatch):
    """EROFS when creating the temporary file, EACCES when renaming it onto the target (the error names the temporary
    file, as os.replace does): both are OutputErrors naming the target; other errors pass through unchanged."""
    target = tmp_path / "figures" / "roc.png"
    with monkeypatch.context() as m:
        m.setattr(
            hio, "tempfile", types.SimpleNamespace(mkstemp=_fails_with(OSError(errno.EROFS, "Read-only file system")))
        )
        with pytest.raises(
            OutputError,
            match=rf"Cannot write {target}: Read-only file system\. .*read-only file system: choose a writable output folder",
        ):
            write_text(target, "x")
    real_replace = os.replace

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src), None, str(dst))

    with monkeypatch.context() as m:
        m.setattr(hio.os, "replace", refuse)
        with pytest.raises(
            OutputError, match=rf"Cannot write {target}: Permission denied\. Make {target.parent} writable"
        ):
            write_text(target, "x")
    assert os.replace is real_replace and list(target.parent.iterdir()) == []

    other = tmp_path / "input.csv"
    with pytest.raises(FileNotFoundError):  # a writer failing to read its input is not an output problem
        with atomic_path(target) as tmp:
            tmp.write_text(other.read_text())
    with pytest.raises(ValueError, match="bad value"):
        with atomic_path(target):
            raise ValueError("bad value")
    assert list(target.parent.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (the monkeypatched test covers it)")
def test_unwritable_folder_for_real(tmp_path):
    """A folder without write permission (chmod 0555), for a normal user."""
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=rf"Cannot write {folder / 'a.txt'}: Permission denied\. Make {folder}"):
            write_text(folder / "a.txt", "x")
    finally:
        folder.chmod(0o755)


def test_a_writers_own_error_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save reports ENOSPC as ``RuntimeError: ... unexpected pos``: with (simulated) no space left, any error of
    the writer becomes the full-disk OutputError; with space left, the writer's error passes through unchanged."""

    def write_fails():
        with atomic_path(tmp_path / "fold0.pt") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("unexpected pos 704 vs 598")

    monkeypatch.setattr(hio, "_free_bytes", lambda folder: 4096)
    with pytest.raises(OutputError, match=rf"Cannot write {tmp_path / 'fold0.pt'}: No space left on device\. Free"):
        write_fails()
    monkeypatch.setattr(hio, "_free_bytes", lambda folder: 10**12)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        write_fails()
    assert list(tmp_path.iterdir()) == []


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )


def test_really_full_and_really_read_only_disks(tmp_path):
    """A real 64 KiB tmpfs, filled and then remounted read-only (where this user may mount: root with
    CAP_SYS_ADMIN; skipped elsewhere). Reference: the kernel's own ENOSPC and EROFS."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        write_text(disk / "small.txt", "kept\n")
        with pytest.raises(
            OutputError, match=rf"Cannot write {disk / 'big.txt'}: No space left on device\. Free space"
        ):
            write_text(disk / "big.txt", "x" * 200_000)
        assert sorted(p.name for p in disk.iterdir()) == ["small.txt"]
        with pytest.raises(OutputError, match=rf"Cannot write {disk / 'fold0.pt'}: No space left on device\."):
            with atomic_path(disk / "fold0.pt") as tmp:  # a writer that wraps ENOSPC, as torch.save does
                try:
                    tmp.write_bytes(b"x" * 200_000)
                except OSError:
                    raise RuntimeError(
                        "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
                    ) from None
        assert sorted(p.name for p in disk.iterdir()) == ["small.txt"]
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(OutputError, match=rf"Cannot write {disk / 'small.txt'}: Read-only file system\."):
            write_text(disk / "small.txt", "new\n")
        assert (disk / "small.txt").read_text() == "kept\n"
    finally:
        subprocess.run(["umount", str(disk)], check=False)
