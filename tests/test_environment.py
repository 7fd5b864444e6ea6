"""pyproject.toml and environment.yml name the same exact pins; the test suite's disk contract."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(spec: str) -> tuple[str, str]:
    name, _, version = spec.partition("==")
    return re.sub(r"[-_.]+", "-", name.strip().lower()), version.strip()


def test_every_dependency_is_pinned_exactly_and_environment_yml_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = project["dependencies"] + extras["test"] + extras["distributed"]
    assert all("==" in p for p in pins), [p for p in pins if "==" not in p]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(map(_norm, pip_section)) == sorted(map(_norm, pins))


def test_lock_file_agrees_with_the_direct_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = dict(
        _norm(l)
        for l in (ROOT / "requirements-lock.txt").read_text().splitlines()
        if "==" in l and not l.startswith("#")
    )
    for name, version in map(_norm, project["dependencies"]):
        assert lock.get(name) == version, f"{name}: pyproject {version}, lock {lock.get(name)}"


DISK_TESTS = """
import os

import pytest


@pytest.fixture(scope="module")
def shared(module_tmp_path):
    (module_tmp_path / "run.bin").write_bytes(b"x" * 1000)
    return module_tmp_path


def test_writes(tmp_path, shared):
    (tmp_path / "fold0.pt").write_bytes(b"x" * 1000)
    assert (shared / "run.bin").exists()


def test_maybe_fails(tmp_path):
    (tmp_path / "kept.pt").write_bytes(b"x")
    assert os.environ.get("HER2LIB_FAIL") != "1"
"""


@pytest.mark.parametrize("fail", [False, True], ids=["all-pass", "one-fails"])
def test_passing_tests_leave_no_temporary_folders_and_failing_ones_keep_theirs(tmp_path, fail):
    """The suite's disk contract (stop 23's CI ran out of disk with every fold model kept to the end of the session):
    pyproject's retention options and conftest's ``module_tmp_path``, run by a pytest in a subprocess on three tests."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "pyproject.toml", proj)  # the [tool.pytest.ini_options] under test
    shutil.copy(ROOT / "tests" / "conftest.py", proj)
    (proj / "test_disk.py").write_text(DISK_TESTS)
    base = tmp_path / "base"  # a given --basetemp: per-test and per-module removal still apply, the session's not
    env = {**os.environ, "HER2LIB_FAIL": "1" if fail else "0"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={base}", "test_disk.py"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == (1 if fail else 0), done.stdout + done.stderr
    assert "GiB free in" in done.stdout  # conftest's header: the free disk space, for the next out-of-disk failure
    left = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert left == (["test_disk0/run.bin", "test_maybe_fails0/kept.pt"] if fail else []), left
