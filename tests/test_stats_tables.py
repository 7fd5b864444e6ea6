"""Tests of her2lib.stats.tables: the paper's test rule (Tables 1-3), exact Fisher vs R, cohort_table rendering."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from her2lib.contract import table_spec
from her2lib.errors import DataError, ParameterError
from her2lib.stages import RunDirs
from her2lib.stages.cohort import cohort_tables as cohort_tables_stage
from her2lib.stats import (
    PAPER_PVALUES,
    CohortTables,
    TestResult,
    Variable,
    categorical_test,
    cohort_table,
    cohort_tables,
    compare_with_paper,
    continuous_test,
    fisher_exact_rx2,
    paper_variables,
    table_tests,
)
from her2lib.stats import tables as tables_module

FIX = Path(__file__).parent / "fixtures"
PAPER = table_spec()


def _paper_counts(col: str) -> np.ndarray:
    c = next(c for c in PAPER["categorical"] if c["column"] == col)
    return np.array([c["train"], c["test"]]).T


# ----------------------------------------------------------------------------------------- the paper's P values
CATEGORICAL = [c["column"] for c in PAPER["categorical"]]


def test_paper_pvalue_inventory():
    # 27 P values printed in Tables 1-3: 25 categorical (reproducible from counts) + age and tumour size
    # (continuous, printed only as median (Q1, Q3): not reproducible from the paper).
    assert len(PAPER_PVALUES) == 27
    assert len(CATEGORICAL) == 25
    assert set(PAPER_PVALUES) - set(CATEGORICAL) == {"age", "mri_size_mm"}


@pytest.mark.parametrize("col", CATEGORICAL)
def test_all_25_categorical_pvalues_of_tables_1_3(col):
    res = categorical_test(_paper_counts(col))
    assert round(res.pvalue, 3) == pytest.approx(PAPER_PVALUES[col], abs=1e-9), (col, res)


@pytest.mark.parametrize(
    "col, method",
    [
        ("location", "chi2_yates"),
        ("triple_negative", "fisher"),
        ("us_echo_pattern", "fisher_freeman_halton"),
        ("us_vascularity", "fisher_freeman_halton"),
        ("her2", "chi2"),
        ("mri_lesions", "chi2"),
        ("mri_skin", "chi2_yates"),
    ],
)
def test_rule_picks_the_papers_test(col, method):
    assert categorical_test(_paper_counts(col)).method == method


def test_issue_examples():
    assert round(categorical_test([[78, 27], [71, 21]]).pvalue, 3) == 0.761
    assert round(categorical_test([[135, 45], [14, 3]]).pvalue, 3) == 0.768
    assert round(categorical_test([[134, 38], [7, 5], [5, 3], [3, 2]]).pvalue, 3) == 0.177


def test_p_equal_one_falls_back_to_uncorrected_chi2():
    her2 = categorical_test(_paper_counts("her2"))
    assert her2.method == "chi2" and "gave P = 1" in her2.reason
    assert categorical_test(_paper_counts("her2"), method="chi2_yates").pvalue == 1.0
    assert categorical_test(_paper_counts("mri_lesions"), method="fisher").pvalue == pytest.approx(1.0)


def test_forced_methods_and_result_object():
    t = [[20, 9], [129, 39]]
    r = categorical_test(t, method="chi2")
    assert r.method == "chi2" and r.dof == 1 and r.statistic > 0
    assert categorical_test(t, method="chi2_yates").pvalue > r.pvalue
    f = categorical_test(t, method="fisher")
    assert f.method == "fisher" and f.statistic is None
    row = f.to_row()
    assert row["label"] == "Fisher's exact test" and row["n"] == "149/48"
    with pytest.raises(AttributeError):
        f.pvalue = 0.5  # frozen


def test_empty_levels_are_dropped():
    a = categorical_test([[24, 9], [73, 24], [0, 0], [44, 15]])
    b = categorical_test([[24, 9], [73, 24], [44, 15]])
    assert a.pvalue == b.pvalue and "1 empty level" in a.reason


@pytest.mark.parametrize(
    "bad, match",
    [([[1, 2, 3]], "shape"), ([[1, -2], [3, 4]], "non-negative"), ([[1.5, 2], [3, 4]], "non-negative integers")],
)
def test_categorical_validation(bad, match):
    with pytest.raises(DataError, match=match):
        categorical_test(bad)


def test_categorical_unknown_method_suggests():
    with pytest.raises(ParameterError, match="Did you mean 'fisher'"):
        categorical_test([[1, 2], [3, 4]], method="fischer")


# ----------------------------------------------------------------------------------------- exact Fisher vs R
FISHER_REF = json.loads((FIX / "fisher_reference.json").read_text())


@pytest.mark.parametrize("case", FISHER_REF["tables"], ids=lambda c: c["name"])
def test_fisher_exact_matches_r_fisher_test(case):
    assert fisher_exact_rx2(case["counts"]) == pytest.approx(case["p"], abs=1e-7, rel=1e-7)
    assert categorical_test(case["counts"], method="chi2").pvalue == pytest.approx(case["chi2_p"], abs=1e-10)


def test_fisher_2x2_matches_scipy():
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(1)
    for _ in range(20):
        t = rng.integers(0, 30, size=(2, 2))
        t[t.sum(axis=1) == 0, 0] = 1
        assert fisher_exact_rx2(t) == pytest.approx(fisher_exact(t).pvalue, abs=1e-10)


def test_fisher_invariant_to_row_order_and_group_swap():
    t = np.array([[24, 9], [73, 24], [44, 15], [8, 0]])
    p = fisher_exact_rx2(t)
    assert fisher_exact_rx2(t[::-1]) == pytest.approx(p, abs=1e-12)
    assert fisher_exact_rx2(t[:, ::-1]) == pytest.approx(p, abs=1e-12)


def test_fisher_refuses_huge_tables():
    with pytest.raises(ParameterError, match="method='chi2'"):
        fisher_exact_rx2([[500, 500]] * 4)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_fisher_live_against_r(tmp_path):
    rng = np.random.default_rng(12345)
    tables = [rng.integers(0, 25, size=(int(rng.integers(2, 6)), 2)) + np.array([1, 0]) for _ in range(6)]
    expr = ";".join(
        f"cat(sprintf('%.17g\\n', fisher.test(matrix(c({','.join(map(str, t.T.ravel()))}), ncol=2))$p.value))"
        for t in tables
    )
    out = subprocess.run(["Rscript", "-e", expr], capture_output=True, text=True, timeout=60, check=True).stdout
    for t, p in zip(tables, map(float, out.split())):
        assert fisher_exact_rx2(t) == pytest.approx(p, abs=1e-7, rel=1e-7)


# ----------------------------------------------------------------------------------------- continuous
def test_continuous_normal_uses_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(50, 10, 149), rng.normal(53, 10, 48)
    r = continuous_test(a, b)
    from scipy.stats import ttest_ind

    assert r.method == "student_t" and "both groups normal" in r.reason and r.label == "Student's t-test"
    assert r.pvalue == pytest.approx(ttest_ind(a, b).pvalue, rel=1e-12)
    assert r.dof == 149 + 48 - 2


def test_continuous_skewed_uses_mann_whitney():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(20, 149), rng.exponential(20, 48)
    r = continuous_test(a, b)
    from scipy.stats import mannwhitneyu

    assert r.method == "mann_whitney" and "Shapiro-Wilk P=" in r.reason
    assert r.pvalue == pytest.approx(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def test_continuous_validation():
    with pytest.raises(DataError, match="missing"):
        continuous_test([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="at least 2"):
        continuous_test([1.0], [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------------------- cohort tables
def _paper_cohort(seed: int = 0) -> pd.DataFrame:
    """A cohort with exactly the paper's counts (independent shuffles per variable) and skewed continuous data."""
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * 149 + ["test"] * 48)
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(197)], "split": split})
    for c in PAPER["categorical"]:
        vals = []
        for s in ("train", "test"):
            v = np.repeat(np.array(c["codes"], dtype=object), c[s])
            vals.append(rng.permutation(v))
        df[c["column"]] = np.concatenate(vals)
    df["her2"] = df["her2"].astype(int)
    df["age"] = np.round(rng.gamma(20, 2.6, 197))
    df["mri_size_mm"] = np.round(rng.lognormal(3.1, 0.4, 197), 1)
    return df


def test_cohort_table_reproduces_paper_counts_percentages_and_p():
    df = _paper_cohort()
    printed = json.loads((FIX / "paper_tables_printed.json").read_text())["categorical"]
    for table in ("table1_clinical", "table2_us", "table3_mri"):
        t = cohort_table(df, "split", table)
        assert list(t.columns[3:5]) == ["Train (n = 149)", "Test (n = 48)"]
        for col, rows in printed.items():
            block = t[(t["variable"] == col) & (t["level"] != "")]
            if block.empty:
                continue
            got = block[["Train (n = 149)", "Test (n = 48)"]].values.tolist()
            assert got == [r[1:] for r in rows], col  # e.g. HR test "30 (62)": half-to-even like the paper
            head = t[(t["variable"] == col) & (t["level"] == "")].iloc[0]
            assert head["P"] == f"{PAPER_PVALUES[col]:.3f}", col


def test_cohort_table_continuous_and_bonferroni():
    df = _paper_cohort()
    t = cohort_table(df, "split", "table3_mri")
    size = t[t["variable"] == "mri_size_mm"].iloc[0]
    assert size["Variables"].startswith("Largest tumor size, mm, median (Q1, Q3)")
    q1, med, q3 = np.quantile(df.loc[df.split == "train", "mri_size_mm"], [0.25, 0.5, 0.75])
    assert size["Train (n = 149)"].startswith(f"{med:g} (")
    tests = table_tests(df, "split", "table3_mri")
    assert len(tests) == 9
    np.testing.assert_allclose(tests["p_bonferroni"], np.minimum(tests["pvalue"] * 9, 1.0))


def test_cohort_table_mean_sd_when_normal():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"split": ["train"] * 100 + ["test"] * 50, "age": rng.normal(50, 8, 150)})
    t = cohort_table(df, "split", [Variable("age", "Age", "continuous", unit="years")])
    assert "mean ± SD" in t.loc[0, "Variables"] and " ± " in t.loc[0, "Train (n = 100)"]
    assert t.loc[0, "Test"] == "Student's t-test"


def test_cohort_table_by_her2_and_missing_values():
    df = _paper_cohort()
    df.loc[[0, 5], "ki67"] = None
    t = cohort_table(df, "her2", "table1_clinical")
    assert list(t.columns[3:5]) == ["HER2-positive (n = 79)", "HER2-negative (n = 118)"]
    assert "[2 missing]" in t[(t.variable == "ki67") & (t.level == "")].iloc[0]["Variables"]
    assert "her2" not in set(t.variable)  # the grouping column is not compared with itself
    ki = t[(t.variable == "ki67") & (t.level != "")]
    assert (
        sum(int(c.split()[0]) for c in ki["HER2-positive (n = 79)"])
        + sum(int(c.split()[0]) for c in ki["HER2-negative (n = 118)"])
        == 195
    )


def test_cohort_table_codes_as_strings_from_csv(tmp_path):
    df = _paper_cohort()
    df.to_csv(tmp_path / "m.csv", index=False)
    back = pd.read_csv(tmp_path / "m.csv")
    a = table_tests(df, "split", "table1_clinical")["pvalue"].to_numpy()
    b = table_tests(back, "split", "table1_clinical")["pvalue"].to_numpy()
    np.testing.assert_allclose(a, b)


def test_cohort_table_errors():
    df = _paper_cohort()
    with pytest.raises(DataError, match="did you mean 'us_shape'"):
        cohort_table(df, "split", ["us_shap"])
    bad = df.copy()
    bad.loc[3, "location"] = "middle"
    with pytest.raises(DataError, match="'middle'"):
        cohort_table(bad, "split", "table1_clinical")
    with pytest.raises(DataError, match="exactly two groups"):
        cohort_table(df.assign(split=["a", "b", "c"] * 65 + ["a", "b"]), "split", "table1_clinical")
    with pytest.raises(ParameterError, match="table='table4' is not supported"):
        paper_variables("table4")


def test_compare_with_paper_all_match_on_paper_counts():
    df = _paper_cohort()
    tests = pd.concat([table_tests(df, "split", t) for t in ("table1_clinical", "table2_us", "table3_mri")])
    cmp = compare_with_paper(tests)
    cat = cmp[~cmp.variable.isin(["age", "mri_size_mm"])]
    assert len(cat) == 25 and cat["match"].all()


def test_paper_variables_order():
    v = paper_variables()
    assert [x.column for x in v][:2] == ["age", "location"]
    t3 = [x.column for x in paper_variables("table3_mri")]
    assert t3[:3] == ["mri_shape", "mri_margin", "mri_size_mm"]
    assert len(v) == 27 and isinstance(categorical_test([[1, 2], [3, 4]]), TestResult)


def test_cohort_tables_and_write(tmp_path, capsys):
    df = _paper_cohort()
    run = RunDirs.from_out_dir(tmp_path / "run", tmp_path / "cohort")
    tabs = cohort_tables_stage(run, df)
    assert isinstance(tabs, CohortTables) and tabs.absent == [] and tabs.empty == []
    assert capsys.readouterr().out == ""  # nothing to report for a complete cohort
    assert list(tabs.tables) == [
        "table1_clinical",
        "table2_us",
        "table3_mri",
        "table1_clinical_by_her2",
        "table2_us_by_her2",
        "table3_mri_by_her2",
        "tests",
        "pvalues_vs_paper",
    ]
    cmp = tabs["pvalues_vs_paper"]
    assert len(cmp) == 27 and cmp.loc[~cmp.variable.isin(["age", "mri_size_mm"]), "match"].all()
    assert sorted(p.name for p in run.tables.iterdir()) == sorted(f"{name}.csv" for name in tabs.tables)
    back = pd.read_csv(run.tables / "table2_us.csv", keep_default_na=False)
    assert back.shape == tabs["table2_us"].shape


def test_cohort_tables_test_each_variable_once(monkeypatch):
    """Every row of ``tests`` is one test run, and the tables are formatted from those same results."""
    df = _paper_cohort()
    calls = []
    for name in ("categorical_test", "continuous_test"):
        fn = getattr(tables_module, name)
        monkeypatch.setattr(
            tables_module, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k)
        )
    tabs = cohort_tables(df)
    assert len(calls) == len(tabs["tests"]) == 2 * 27 - 1  # by split and by HER2 status (no HER2 row by HER2)
    monkeypatch.undo()
    for name in ("table1_clinical", "table3_mri"):  # the same tables as one cohort_table call each
        assert tabs[name].equals(cohort_table(df, "split", name))
