"""pyproject.toml and environment.yml name the same exact pins."""

import re
import tomllib
from pathlib import Path

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
