"""The batch runner: parameter injection, rejection of unknown names, failure handling, provenance, index."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from her2lib.errors import ParameterError
from her2lib.runner import notebook as her2nb
from her2lib.runner import pipeline

COMMON = """profile: str = "default"  # profile name
seed: int = 0  # random seed
out_dir: str = "reports/default"  # output folder
cohort_dir: str = "data/synthetic/default"  # cohort folder
"""


def _notebook(path: Path, params: str, body: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(COMMON + params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def toy(tmp_path):
    """Three tiny notebooks (00 writes a table from its parameter, 01 may fail, 02 reads 00's table)."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(
        nbdir / "00_alpha.ipynb",
        'x: int = 1  # a number\nrewrite: str = ""  # new cohort image content\n',
        [
            f"from her2lib.runner import notebook as nb\nrun = nb.setup({str(nbdir / '00_alpha.ipynb')!r}, globals())",
            "from her2lib.io import write_text\nwrite_text(run.tables / 'alpha.csv', f'x\\n{x}\\n')",
            "if rewrite:\n    write_text(run.cohort_dir / 'img.txt', rewrite)",
        ],
    )
    _notebook(
        nbdir / "01_beta.ipynb",
        "fail: bool = False  # raise on purpose\n",
        [
            f"from her2lib.runner import notebook as nb\nrun = nb.setup({str(nbdir / '01_beta.ipynb')!r}, globals())",
            "if fail:\n    raise RuntimeError('deliberate failure in beta')",
            "from her2lib.io import write_text\nwrite_text(run.tables / 'beta.csv', 'ok\\n1\\n')",
        ],
    )
    _notebook(
        nbdir / "02_gamma.ipynb",
        "",
        [
            f"from her2lib.runner import notebook as nb\nrun = nb.setup({str(nbdir / '02_gamma.ipynb')!r}, globals())",
            "import pandas as pd\nx = int(pd.read_csv(run.tables / 'alpha.csv')['x'][0])\n"
            "from her2lib.io import write_text\nwrite_text(run.tables / 'gamma.csv', f'twice\\n{2 * x}\\n')",
        ],
    )
    cfg = tmp_path / "configs"
    cfg.mkdir()
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "img.txt").write_text("pixels")
    (cohort / "manifest.csv").write_text("patient_id,us_image\nP001,img.txt\n")

    def profile(name="toy", common=None, notebooks=None):
        data = {
            "common": {"profile": name, "seed": 0, "cohort_dir": str(cohort), **(common or {})},
            "notebooks": notebooks or {},
        }
        (cfg / f"{name}.yaml").write_text(yaml.safe_dump(data))
        return name

    return {"nbdir": nbdir, "cfg": cfg, "profile": profile, "out": tmp_path / "out", "cohort": cohort}


def _run(toy, name, **kw):
    return pipeline.run_pipeline(name, toy["out"], notebook_dir=toy["nbdir"], config_dir=toy["cfg"], **kw)


def test_injects_profile_parameters_and_writes_provenance_and_index(toy, capfd):
    name = toy["profile"](notebooks={"00_alpha": {"x": 21}})
    out = _run(toy, name)
    err = capfd.readouterr().err  # the terminal: the kernels inherit this process's stderr
    assert "[1/3] 00_alpha" in err and "[3/3] 02_gamma done in" in err  # which notebook runs, and when it ended
    assert "Kernel is running over TCP" not in err and "WARNING" not in err  # no kernel transport noise
    assert (out / "tables" / "alpha.csv").read_text() == "x\n21\n"
    assert (out / "tables" / "gamma.csv").read_text() == "twice\n42\n"
    for stem in ("00_alpha", "01_beta", "02_gamma"):
        assert (out / "notebooks" / f"{stem}.ipynb").is_file()
    assert json.loads((out / "params" / "00_alpha.json").read_text())["x"] == 21

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["profile"]["name"] == name
    assert prov["notebooks"]["00_alpha"]["parameters"]["x"] == 21
    assert prov["notebooks"]["00_alpha"]["parameters"]["out_dir"] == str(out)
    assert prov["notebooks"]["00_alpha"]["status"] == "ok"
    assert prov["notebooks"]["00_alpha"]["wall_s"] > 0
    assert prov["notebooks"]["00_alpha"]["outputs"] == ["tables/alpha.csv"]
    assert prov["packages"]["torch"] and prov["packages"]["papermill"]
    assert "commit" in prov["git"] and "dirty" in prov["git"]
    assert prov["cohort"]["n_files"] == 1 and len(prov["cohort"]["manifest_sha256"]) == 64
    assert prov["started_at"] and prov["finished_at"]
    # the machine that made the numbers (CPU training differs by instruction set; issue 9.9)
    m = prov["machine"]
    assert m["cpu_count"] >= 1 and m["torch_cpu_capability"] and m["cpu_model"]

    index = (out / "index.html").read_text()
    assert "tables/alpha.csv" in index and "00_alpha" in index and prov["cohort"]["manifest_sha256"][:12] in index
    from her2lib.runner.provenance import machine_summary

    assert machine_summary(m) in index


def test_cohort_hash_changes_with_image_content(toy):
    from her2lib.runner.provenance import cohort_hash

    before = cohort_hash(toy["cohort"])
    (toy["cohort"] / "img.txt").write_text("other pixels")
    after = cohort_hash(toy["cohort"])
    assert before["manifest_sha256"] == after["manifest_sha256"]
    assert before["files_sha256"] != after["files_sha256"]


def test_cohort_hash_is_taken_after_notebook_00_rebuilt_the_cohort(toy):
    from her2lib.runner.provenance import cohort_hash

    before = cohort_hash(toy["cohort"])["files_sha256"]
    name = toy["profile"](notebooks={"00_alpha": {"rewrite": "rebuilt pixels"}})
    out = _run(toy, name)
    recorded = json.loads((out / "provenance.json").read_text())["cohort"]["files_sha256"]
    assert recorded == cohort_hash(toy["cohort"])["files_sha256"] != before


def test_unknown_parameter_is_rejected_before_anything_runs(toy):
    name = toy["profile"](notebooks={"00_alpha": {"xx": 3}})
    with pytest.raises(ParameterError, match=r"unknown parameter 'xx' into 00_alpha.ipynb.*Did you mean 'x'"):
        _run(toy, name)
    assert not (toy["out"] / "notebooks" / "00_alpha.ipynb").exists()


def test_unknown_common_parameter_and_section_are_rejected(toy):
    name = toy["profile"](common={"sed": 1})
    with pytest.raises(ParameterError, match="'sed'.*Did you mean 'seed'"):
        _run(toy, name)
    name = toy["profile"](notebooks={"00_alfa": {}})
    with pytest.raises(ParameterError, match="00_alfa.*Did you mean '00_alpha'"):
        _run(toy, name)
    with pytest.raises(ParameterError, match="Unknown profile 'tyo'.*Did you mean 'toy'"):
        _run(toy, "tyo")


def test_failing_notebook_stops_batch_and_keeps_earlier_outputs(toy):
    good = toy["profile"]("good")
    out = _run(toy, good)
    good_beta = (out / "notebooks" / "01_beta.ipynb").read_bytes()
    (out / "tables" / "gamma.csv").unlink()

    bad = toy["profile"]("bad", notebooks={"01_beta": {"fail": True}})
    with pytest.raises(pipeline.NotebookFailed, match=r"01_beta.ipynb failed in cell \d+.*deliberate failure"):
        _run(toy, bad)
    assert (out / "tables" / "alpha.csv").is_file()  # earlier notebook's output intact
    assert not (out / "tables" / "gamma.csv").exists()  # later notebook did not run
    assert (out / "notebooks" / "01_beta.ipynb").read_bytes() == good_beta  # previous good copy kept
    assert (out / "notebooks" / "01_beta.failed.ipynb").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["notebooks"]["01_beta"]["status"] == "failed"
    assert prov["status"] == "failed" and prov["finished_at"] and prov["cohort"]["n_files"] == 1
    assert "deliberate failure" in prov["notebooks"]["01_beta"]["error"]


def test_only_and_from_select_notebooks(toy):
    name = toy["profile"]()
    steps = pipeline.plan(pipeline.load_profile(name, toy["cfg"]), toy["out"], notebook_dir=toy["nbdir"], only=["2"])
    assert [s.stem for s in steps] == ["02_gamma"]
    steps = pipeline.plan(pipeline.load_profile(name, toy["cfg"]), toy["out"], notebook_dir=toy["nbdir"], start="01")
    assert [s.stem for s in steps] == ["01_beta", "02_gamma"]
    with pytest.raises(ParameterError, match="No notebook numbered '07'"):
        pipeline.plan(pipeline.load_profile(name, toy["cfg"]), toy["out"], notebook_dir=toy["nbdir"], only=["07"])


def test_cli_reports_bad_profile_with_exit_code_2(capsys):
    assert pipeline.main(["--profile", "smok"]) == 2
    assert "Did you mean 'smoke'" in capsys.readouterr().err


@pytest.mark.parametrize("profile", pipeline.PROFILES)
def test_shipped_profiles_match_the_shipped_notebooks(profile):
    prof = pipeline.load_profile(profile)
    steps = pipeline.plan(prof, Path("/tmp/her2lib-plan"))
    assert [s.stem for s in steps] == [p.stem for p in pipeline.list_notebooks()]


def test_shipped_notebooks_are_stripped_and_follow_the_contract():
    from her2lib.runner.nbstrip import is_clean

    notebooks = pipeline.list_notebooks()
    for path in notebooks:
        data = json.loads(path.read_text())
        assert is_clean(data), f"{path.name} carries outputs: run python -m her2lib.runner.nbstrip {path}"
        first_code = next(c for c in data["cells"] if c["cell_type"] == "code")
        assert "parameters" in first_code["metadata"].get("tags", []), f"{path.name}: first code cell untagged"
        names = her2nb.parameter_names(path)
        assert set(her2nb.COMMON_PARAMETERS) <= set(names), f"{path.name} lacks common parameters"
        # papermill parses the same names (an unparsable comment line makes it warn in the user's terminal)
        import papermill

        params = papermill.inspect_notebook(str(path))
        assert list(params) == names, f"{path.name}: papermill cannot parse a line"
        # one `name: type = value  # comment` line per parameter, as papermill's --help-notebook shows them (a
        # formatter that wraps a long line into `name = (\n value  # comment\n)` leaves papermill a default of "(")
        lines = [ln for ln in her2nb.parameters_cell(path).splitlines() if ln.strip()]
        assert len(lines) == len(names), f"{path.name}: a parameter spans several lines: shorten its comment"
        for name in names:
            assert params[name]["default"] not in ("(", "[", "{"), f"{path.name}: {name} wraps onto the next line"


def test_strip_notebook_removes_outputs(tmp_path):
    from her2lib.runner.nbstrip import is_clean, strip_notebook

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1+1")
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=3)]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert strip_notebook(path) is True
    assert is_clean(json.loads(path.read_text()))
    assert strip_notebook(path) is False


def test_set_overrides_single_parameters_and_is_recorded(toy):
    name = toy["profile"](notebooks={"00_alpha": {"x": 21}})
    out = _run(toy, name, only=["00", "02"], overrides=["00.x=4", "00_alpha.x=5"])  # the later one wins
    assert (out / "tables" / "gamma.csv").read_text() == "twice\n10\n"
    prov = json.loads((out / "provenance.json").read_text())
    assert (
        prov["profile"]["overrides"] == ["00.x=4", "00_alpha.x=5"]
        and prov["profile"]["notebooks"]["00_alpha"]["x"] == 5
    )
    prof = pipeline.load_profile(name, toy["cfg"])
    new = pipeline.apply_overrides(prof, ["common.seed=3", "01.fail=true"], notebook_dir=toy["nbdir"])
    assert new["common"]["seed"] == 3 and new["notebooks"]["01_beta"] == {"fail": True}
    assert prof["common"]["seed"] == 0 and "01_beta" not in prof["notebooks"]  # the loaded profile is not changed
    for bad, msg in (("00.x", "SECTION.NAME=VALUE"), ("x=1", "SECTION.NAME=VALUE"), ("07.x=1", "neither")):
        with pytest.raises(ParameterError, match=msg):
            pipeline.apply_overrides(prof, [bad], notebook_dir=toy["nbdir"])
    with pytest.raises(ParameterError, match="unknown parameter 'y'"):  # refused before anything runs
        _run(toy, name, overrides=["00.y=1"])
    assert (
        pipeline.apply_overrides(prof, ["00.x=1e-3"], notebook_dir=toy["nbdir"])["notebooks"]["00_alpha"]["x"] == 1e-3
    )
    with pytest.raises(ParameterError, match="give a value"):
        pipeline.apply_overrides(prof, ["00.x="], notebook_dir=toy["nbdir"])
    with pytest.raises(ParameterError, match="with --dry-run"):  # the dry run would silently replace it
        pipeline._refuse_dry_run_overrides(["03.epochs=10"], {"notebooks": {"03_train_us": {"epochs": 10}}})
    pipeline._refuse_dry_run_overrides(["03.lr=0.1"], {"notebooks": {"03_train_us": {"lr": 0.1}}})  # not a dry-run key
