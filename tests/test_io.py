"""Atomic writes and hashing."""

import pytest

from her2lib.io import atomic_path, hash_files, sha256_file, write_json, write_text


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
