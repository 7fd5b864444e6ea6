"""Atomic writes and hashing."""

import os
import stat

import matplotlib.figure
import pytest

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
