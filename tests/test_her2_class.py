"""The three-class HER2 label (ASCO/CAP): every IHC/ISH combination, every accepted spelling, the vectorised helper,
and load_cohort's contradiction check, class column and per-split counts."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from her2lib import synth
from her2lib.data import HER2_CLASSES, DataError, her2_class, her2_classes, load_cohort

TINY = dict(n_patients=20, seed=5, us_shape=(64, 80), mri_shape=(12, 24, 24))

# every IHC score x every ISH state: the class, or None where undefined
EXPECTED = {
    ("0", "negative"): "zero",
    ("0", None): "zero",
    ("0", "positive"): "positive",  # ISH-amplified: HER2-positive whatever the IHC (ASCO/CAP 2018)
    ("1+", "negative"): "low",
    ("1+", None): "low",
    ("1+", "positive"): "positive",
    ("2+", "negative"): "low",
    ("2+", None): None,  # equivocal without ISH
    ("2+", "positive"): "positive",
    ("3+", "negative"): "positive",
    ("3+", None): "positive",
    ("3+", "positive"): "positive",
}
IHC_SPELLINGS = {
    "0": [0, "0", np.int64(0), 0.0, "0.0"],
    "1+": [1, "1+", "1"],
    "2+": [2, "2+", " 2+ ", 2.0],
    "3+": [3, "3+"],
}
ISH_SPELLINGS = {
    "negative": [0, "negative", "Negative", 0.0, False],
    "positive": [1, "positive", np.int64(1), True],
    None: [None, np.nan, "", "not_done"],
}


@pytest.mark.parametrize("ihc,ish", list(EXPECTED))
def test_every_combination_and_spelling(ihc, ish):
    want = EXPECTED[(ihc, ish)]
    for a in IHC_SPELLINGS[ihc]:
        for b in ISH_SPELLINGS[ish]:
            if want is None:
                with pytest.raises(DataError, match=r"IHC 2\+ without an ISH result.*record fish"):
                    her2_class(a, b)
            else:
                assert her2_class(a, b) == want, (a, b)


def test_classes_and_defaults():
    assert HER2_CLASSES == ("zero", "low", "positive")
    assert her2_class("1+") == "low" and her2_class(3) == "positive"


@pytest.mark.parametrize(
    "ihc,ish,match",
    [
        ("4+", None, r"her2_ihc = '4\+' is not an IHC score"),
        (4, None, "her2_ihc = 4 is not an IHC score"),
        (1.5, None, "not an IHC score"),
        (True, None, "not an IHC score"),
        ("2+", "equivocal", "fish = 'equivocal' is not an ISH result"),
        ("2+", 2, "fish = 2 is not an ISH result"),
        (None, "positive", "IHC score missing"),
        (np.nan, None, "IHC score missing"),
    ],
)
def test_unknown_or_missing_values_raise(ihc, ish, match):
    with pytest.raises(DataError, match=match):
        her2_class(ihc, ish)


def test_vectorised_helper():
    df = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e"],
            "her2_ihc": ["0", "1+", "2+", "2+", np.nan],
            "fish": ["not_done", np.nan, "negative", np.nan, "positive"],
        },
        index=[10, 11, 12, 13, 14],
    )
    out = her2_classes(df)
    assert out.name == "her2_class" and list(out.index) == [10, 11, 12, 13, 14]
    assert out.tolist() == ["zero", "low", "low", None, None]
    assert her2_classes(df.drop(columns="fish")).tolist() == ["zero", "low", None, None, None]
    assert her2_classes(df.drop(columns=["her2_ihc", "fish"])).isna().all()
    df.loc[[11, 13], "her2_ihc"] = ["5+", "x"]
    with pytest.raises(DataError, match=r"2 patient\(s\) with an unknown IHC/ISH value") as err:
        her2_classes(df)
    assert [p.split(":")[0] for p in err.value.problems] == ["patient b", "patient d"]


# ------------------------------------------------------------------ load_cohort
@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth.make_cohort(tmp_path_factory.mktemp("her2class") / "cohort", **TINY).parent


@pytest.fixture()
def copy(cohort, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(cohort, dst)
    return dst, pd.read_csv(dst / "manifest.csv", dtype=str, keep_default_na=False)


def _save(dst: Path, man: pd.DataFrame) -> Path:
    man.to_csv(dst / "manifest.csv", index=False)
    return dst / "manifest.csv"


def test_synthetic_cohort_loads_with_the_class_column_last(cohort):
    man = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    df = load_cohort(cohort, check_files="exists")
    assert list(df.columns) == [*man.columns, "her2_class"]
    assert df["her2_class"].tolist() == her2_classes(man).tolist()
    assert ((df["her2_class"] == "positive") == (df["her2"] == 1)).all()
    counts = df.attrs["her2_class_counts"]
    for split in ("train", "test"):
        sub = df[df["split"] == split]
        assert counts[split] == {c: int((sub["her2_class"] == c).sum()) for c in HER2_CLASSES} | {"undefined": 0}
    assert df.attrs["her2_class_undefined"] == {}
    assert sum(sum(v.values()) for v in counts.values()) == len(df)


def test_contradictions_name_every_patient(copy):
    dst, man = copy
    neg = man.index[man["her2"] == "0"][:2]
    pos = man.index[man["her2"] == "1"][:2]
    man.loc[neg[0], ["her2_ihc", "fish"]] = ["3+", "not_done"]  # her2 = 0 with IHC 3+
    man.loc[neg[1], ["her2_ihc", "fish"]] = ["2+", "positive"]  # her2 = 0 with IHC 2+ / ISH positive
    man.loc[pos[0], ["her2_ihc", "fish"]] = ["1+", "not_done"]  # her2 = 1 with IHC 1+
    man.loc[pos[1], ["her2_ihc", "fish"]] = ["2+", "negative"]  # her2 = 1 with IHC 2+ / ISH negative
    with pytest.raises(DataError, match=r"4 problem\(s\)") as err:
        load_cohort(_save(dst, man), check_files="exists")
    probs = err.value.problems
    for i, cls in ((neg[0], "positive"), (neg[1], "positive"), (pos[0], "low"), (pos[1], "low")):
        pid = man.loc[i, "patient_id"]
        hit = [p for p in probs if p.startswith(f"patient {pid}:")]
        assert len(hit) == 1 and f"HER2-{cls}" in hit[0] and "correct the her2 label or the IHC/ISH cells" in hit[0]


def test_equivocal_and_missing_ihc_are_kept_as_undefined(copy):
    dst, man = copy
    i_eq = man.index[man["her2"] == "0"][0]
    i_na = man.index[man["her2"] == "1"][0]
    man.loc[i_eq, ["her2_ihc", "fish"]] = ["2+", "not_done"]
    man.loc[i_na, ["her2_ihc", "fish"]] = ["", ""]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_cohort(_save(dst, man), check_files="exists")
    assert df.loc[i_eq, "her2_class"] is None and df.loc[i_na, "her2_class"] is None
    und = df.attrs["her2_class_undefined"]
    assert set(und) == {man.loc[i_eq, "patient_id"], man.loc[i_na, "patient_id"]}
    assert "IHC 2+ without an ISH result" in und[man.loc[i_eq, "patient_id"]]
    counts = df.attrs["her2_class_counts"]
    assert sum(v["undefined"] for v in counts.values()) == 2
    assert df["her2"].tolist() == man["her2"].astype(int).tolist()  # the binary task keeps them


def test_manifest_without_ihc_has_an_empty_class_column(copy):
    dst, man = copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_cohort(_save(dst, man.drop(columns=["her2_ihc", "fish"])), check_files="exists")
    assert df["her2_class"].isna().all()
    assert set(df.attrs["her2_class_undefined"].values()) == {"no her2_ihc column in the manifest"}


def test_unknown_codes_reported_once(copy):
    dst, man = copy
    man.loc[0, "her2_ihc"] = "4+"
    with pytest.raises(DataError) as err:
        load_cohort(_save(dst, man), check_files="exists")
    assert len([p for p in err.value.problems if "her2_ihc" in p]) == 1
