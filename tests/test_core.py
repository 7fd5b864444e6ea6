"""The core layer: option look-up with hints, and the vocabulary module (her2lib.contract)."""

from __future__ import annotations

import json

import pytest

from her2lib import contract
from her2lib.errors import DataError, ParameterError
from her2lib.options import close_match, did_you_mean, look_up_option


# ------------------------------------------------------------------------------------------------ options
def test_look_up_option_returns_the_value_or_the_mapped_value():
    assert look_up_option("delong", ("delong", "bootstrap"), name="ci_method") == "delong"
    assert look_up_option("inner", {"inner": "inner split"}, name="selection") == "inner split"
    assert look_up_option(None, ("a",), name="x", default="a") == "a"


def test_look_up_option_names_the_parameter_the_choices_and_the_closest_one():
    with pytest.raises(ParameterError) as err:
        look_up_option("delnog", ("delong", "exact-binomial", "bootstrap"), name="ci_method")
    assert str(err.value) == (
        "ci_method='delnog' is not supported; choose one of ['delong', 'exact-binomial', "
        "'bootstrap']. Did you mean 'delong'?"
    )
    with pytest.raises(ParameterError, match=r"choose one of \['a', 'b'\]\.$"):  # nothing close: no hint
        look_up_option("zzz", ("a", "b"), name="x")
    with pytest.raises(ParameterError):  # None is not silently accepted without a default
        look_up_option(None, ("a",), name="x")
    with pytest.raises(ParameterError):  # unhashable input is an unsupported value, not a TypeError
        look_up_option(["a"], {"a": 1}, name="x")
    with pytest.raises(DataError, match="code='3\\+\\+'"):  # data problems keep their own error type
        look_up_option("3++", contract.HER2_IHC_CODES, name="code", error=DataError)


def test_close_match_and_did_you_mean():
    assert close_match("smok", ["smoke", "default"]) == "smoke"
    assert close_match(3, [1, 2, 3]) == "3"
    assert did_you_mean("qqq", ["smoke"]) == ""


# ------------------------------------------------------------------------------------------------ contract
def test_modalities_and_models_agree():
    for key, mod in contract.MODALITIES.items():
        assert mod.columns == (f"{key}_image", f"{key}_mask")
        assert contract.MODELS[mod.model].label == mod.label
        assert contract.MODELS[mod.model].prefix == key
        assert set(mod.columns) <= set(contract.PATH_COLUMNS)
    assert [m.label for m in contract.MODELS.values()] == ["DL-US", "DL-MRI", "DL-US&MRI"]  # paper order
    assert contract.model_label("dl_us_mri") == "DL-US&MRI" and contract.model_label("other") == "other"
    assert all(a in contract.MODELS and b in contract.MODELS for a, b in contract.PAIRS)
    with pytest.raises(ParameterError, match="Did you mean 'mri'"):
        contract.modality("mr")
    assert contract.MANIFEST_HEAD[:3] == contract.REQUIRED_COLUMNS


def test_table_spec_is_loaded_once_from_the_packaged_file():
    spec = contract.table_spec()
    assert spec is contract.table_spec()
    packaged = json.loads((contract.REPO_ROOT / "her2lib" / "resources" / "tables_1_3.json").read_text())
    assert spec == packaged
    assert spec["n"] == {"train": 149, "test": 48}  # the paper's cohort sizes
    assert {c["table"] for c in spec["categorical"]} == set(contract.PAPER_TABLES)


def test_resolve_path_is_relative_to_the_repository(tmp_path):
    assert contract.resolve_path("reports/x") == contract.REPO_ROOT / "reports" / "x"
    assert contract.resolve_path(tmp_path) == tmp_path


def test_prediction_path_and_reader(tmp_path):
    assert contract.prediction_path(tmp_path, "us", "oof") == tmp_path / "us_oof.csv"
    with pytest.raises(ParameterError, match="Did you mean 'test'"):
        contract.prediction_path(tmp_path, "us", "tset")
    with pytest.raises(DataError, match="03_train_us"):  # a missing file names the notebook that writes it
        contract.read_predictions(tmp_path / "us_oof.csv")
    (tmp_path / "us_oof.csv").write_text("patient_id,split,fold,her2,p_her2\nP1,train,0,1,0.7\nP2,train,1,0,1.2\n")
    with pytest.raises(DataError, match=r"p_her2 must be a finite probability.*P2"):
        contract.read_predictions(tmp_path / "us_oof.csv")
