"""Repeated cross-validation (``n_repeats``): seeds per repetition, the across-repetition summary, the training of
all repetitions in one submission, and the smoke profile's notebooks 02-06 with two repetitions.

References:

* the summary's mean / SD / percentiles: Python's ``statistics`` module (``mean``, ``stdev``,
  ``quantiles(method="inclusive")``, which is R's ``quantile(type = 7)``), to 1e-12;
* the per-repetition AUCs: scikit-learn's ``roc_auc_score`` (to 1e-12) of the repetition's prediction files; the
  AUC differences likewise, and the DeLong P values are :func:`her2lib.stats.delong_test`'s (itself checked against
  pROC in tests/test_stats_roc.py);
* the training of repetitions: :func:`her2lib.train.run_cv` called once per repetition with its folds and seed
  (fold files compared as bytes);
* one repetition is the single run: the smoke run's files, byte for byte.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from test_executors import CFG, TRAINING, _cohort
from test_interrupt import ENV, RUNNER, _copy_before_training

from her2lib import train
from her2lib.contract import REPO_ROOT
from her2lib.errors import DataError, ParameterError
from her2lib.evaluate import ModelPredictions
from her2lib.evaluate_repeats import evaluate_repeats
from her2lib.stages import RunDirs
from her2lib.stages.preprocess import preprocess_modalities
from her2lib.stats import delong_test, repeat_distribution

# ---------------------------------------------------------------------------------------------------------------
# the summary statistic
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 7, 40])
def test_repeat_distribution_matches_the_statistics_module(n):
    v = np.random.default_rng(n).normal(0.7, 0.05, size=n)
    d = repeat_distribution(v, level=0.95)
    cuts = statistics.quantiles(v.tolist(), n=40, method="inclusive")  # cut i/40: 2.5% is the first, 97.5% the last
    assert d.n == n
    assert d.mean == pytest.approx(statistics.mean(v), abs=1e-12)
    assert d.sd == pytest.approx(statistics.stdev(v), abs=1e-12)
    assert d.low == pytest.approx(cuts[0], abs=1e-12) and d.high == pytest.approx(cuts[-1], abs=1e-12)
    assert (d.minimum, d.maximum) == (v.min(), v.max())
    d90 = repeat_distribution(v, level=0.9)
    cuts = statistics.quantiles(v.tolist(), n=20, method="inclusive")
    assert d90.low == pytest.approx(cuts[0], abs=1e-12) and d90.high == pytest.approx(cuts[-1], abs=1e-12)


def test_repeat_distribution_leaves_out_undefined_values_and_refuses_bad_input():
    d = repeat_distribution([0.6, np.nan, 0.8])
    assert d.n == 2 and d.mean == pytest.approx(0.7)
    assert np.isnan(repeat_distribution([0.6]).sd)
    with pytest.raises(DataError, match="no repetition"):
        repeat_distribution([np.nan, np.nan])
    with pytest.raises(DataError, match="inf"):
        repeat_distribution([0.5, np.inf])
    with pytest.raises(ParameterError, match="level"):
        repeat_distribution([0.5, 0.6], level=95)


def test_repeat_seeds():
    assert train.repeat_seed(7, 0) == 7  # repetition 0 is the single run
    seeds = {(s, r): train.repeat_seed(s, r) for s in (0, 1, 2) for r in range(6)}
    assert len(set(seeds.values())) == len(seeds)  # seed 0's repetitions do not reuse seed 1's (seed + r would)
    assert train.repeat_seed(0, 3) == 465539300  # SeedSequence([0, 3])'s first word mod 2**31 - 1: fixed forever
    with pytest.raises(ParameterError, match="repeat"):
        train.repeat_seed(0, -1)


def test_more_than_one_repetition_is_refused_for_the_class_tasks(tmp_path):
    run = RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")
    with pytest.raises(ParameterError, match="n_repeats=2"):
        preprocess_modalities(run, None, None, task="three-class", n_repeats=2)
    with pytest.raises(ParameterError, match="n_repeats=0"):
        preprocess_modalities(run, None, None, n_repeats=0)


# ---------------------------------------------------------------------------------------------------------------
# evaluate_repeats on made-up predictions
# ---------------------------------------------------------------------------------------------------------------


def _preds(r: int, n: int = 40) -> dict[str, ModelPredictions]:
    rng = np.random.default_rng(100 + r)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    ids = [f"T{i:03d}" for i in range(n)]
    out = {}
    for key, label, signal in (("dl_us", "DL-US", 1.0), ("dl_mri", "DL-MRI", 0.5), ("dl_us_mri", "DL-US&MRI", 1.3)):
        p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
        test = pd.DataFrame({"patient_id": ids, "split": "test", "fold": -1, "her2": y, "p_her2": p})
        oof = test.assign(split="train", fold=np.arange(n) % 4, p_her2=rng.permutation(p))
        out[key] = ModelPredictions(key, label, oof, test)
    return out


def test_evaluate_repeats_against_scikit_learn_and_the_statistics_module():
    per = {r: _preds(r) for r in range(5)}
    res = evaluate_repeats(per, level=0.95)
    assert res.n_repeats == 5 and len(res.auc) == 15 and len(res.delong) == 15
    for _, row in res.auc.iterrows():
        p = next(m for m in per[row["repeat"]].values() if m.label == row["model"])
        assert row["test_auc"] == pytest.approx(roc_auc_score(p.test["her2"], p.test["p_her2"]), abs=1e-12)
        assert row["oof_auc"] == pytest.approx(roc_auc_score(p.oof["her2"], p.oof["p_her2"]), abs=1e-12)
    lab = {m.label: k for k, m in per[0].items()}
    for _, row in res.delong.iterrows():
        a, b = per[row["repeat"]][lab[row["model_a"]]].test, per[row["repeat"]][lab[row["model_b"]]].test
        ref = roc_auc_score(a["her2"], a["p_her2"]) - roc_auc_score(b["her2"], b["p_her2"])
        assert row["diff"] == pytest.approx(ref, abs=1e-12)
        assert row["p_value"] == delong_test(a["her2"], a["p_her2"], b["p_her2"]).pvalue  # wiring: a vs b, not b vs a
    s = res.summary.set_index(["quantity", "model"])
    for model, g in res.auc.groupby("model"):
        v = g.sort_values("repeat")["test_auc"].tolist()
        row = s.loc[("test AUC", model)]
        cuts = statistics.quantiles(v, n=40, method="inclusive")
        assert row["single_run"] == v[0] and row["n_repeats"] == 5
        assert row["mean"] == pytest.approx(statistics.mean(v), abs=1e-12)
        assert row["sd"] == pytest.approx(statistics.stdev(v), abs=1e-12)
        assert (row["low"], row["high"]) == pytest.approx((cuts[0], cuts[-1]), abs=1e-12)
    for (a, b), g in res.delong.groupby(["model_a", "model_b"]):
        row = s.loc[("AUC difference (DeLong)", f"{a} - {b}")]
        assert row["share_p_below_alpha"] == pytest.approx(np.mean(g["p_value"] < 0.05))
        assert row["mean"] == pytest.approx(statistics.mean(g["diff"]), abs=1e-12)
    assert "Across 5 repetitions" in res.text and "DL-US&MRI - DL-US" in res.text and "P < 0.05 in" in res.text
    res01 = evaluate_repeats(per, alpha=0.01)  # alpha is its own keyword, not 1 - level
    assert res01.summary["level"].eq(0.95).all()
    s01 = res01.summary.set_index(["quantity", "model"])
    for (a, b), g in res.delong.groupby(["model_a", "model_b"]):
        assert s01.loc[("AUC difference (DeLong)", f"{a} - {b}"), "share_p_below_alpha"] == np.mean(g["p_value"] < 0.01)


def test_evaluate_repeats_refuses_what_is_not_a_repeated_run():
    with pytest.raises(DataError, match="repetition 0"):
        evaluate_repeats({1: _preds(1), 2: _preds(2)})
    with pytest.raises(DataError, match="at least"):
        evaluate_repeats({0: _preds(0)})
    other = _preds(1)
    other["dl_us"] = ModelPredictions("dl_us", "DL-US", other["dl_us"].oof, other["dl_us"].test.iloc[1:])
    with pytest.raises(DataError, match="repetition 1's DL-US test predictions"):
        evaluate_repeats({0: _preds(0), 1: other})


# ---------------------------------------------------------------------------------------------------------------
# training: all repetitions in one submission give what one run_cv per repetition gives
# ---------------------------------------------------------------------------------------------------------------


def test_repeated_cv_equals_one_run_cv_per_repetition(tmp_path, monkeypatch):
    submitted = []
    real = train.cv.train_folds
    monkeypatch.setattr(train.cv, "train_folds", lambda jobs, **kw: submitted.append(jobs) or real(jobs, **kw))
    df, x, folds0 = _cohort()
    folds = [folds0, train.assign_folds(df, n_folds=2, seed=train.repeat_seed(0, 1))]
    assert not folds[0].equals(folds[1])
    seeds = [train.repeat_seed(0, r) for r in (0, 1)]
    seen = []
    hooks = [lambda f, e, row, r=r: seen.append((r, f, e)) for r in (0, 1)]
    outs = [tmp_path / "rep" / f"r{r}" for r in (0, 1)]
    res = train.run_repeated_cv(
        df, x, CFG, TRAINING, folds, outs, seeds=seeds, epoch_hooks=hooks, progress=False, checkpoint_every=1
    )
    jobs = submitted[0]  # the inputs are sliced when a job runs: each repetition's jobs share one x, and no copy
    assert all(j.index is not None and j.args[2] is jobs[2 * j.repeat].args[2] for j in jobs)
    assert len({j.args[2].data_ptr() for j in jobs}) == 1
    assert {(r, f) for r, f, _ in seen} == {(0, 0), (0, 1), (1, 0), (1, 1)}  # each repetition's hook saw its folds
    assert [[(j.repeat, j.fold) for j in jobs] for jobs in submitted] == [[(0, 0), (0, 1), (1, 0), (1, 1)]]  # one go
    for r in (0, 1):
        ref_dir = tmp_path / "single" / f"r{r}"
        ref = train.run_cv(df, x, CFG, TRAINING, folds[r], ref_dir, seed=seeds[r], progress=False, checkpoint_every=1)
        pd.testing.assert_frame_equal(res[r].oof, ref.oof)
        pd.testing.assert_frame_equal(res[r].test_folds, ref.test_folds)
        for k in (0, 1):
            assert (outs[r] / f"fold{k}.pt").read_bytes() == (ref_dir / f"fold{k}.pt").read_bytes(), (r, k)
        jobs = json.loads((outs[r] / "jobs.json").read_text())["jobs"]
        assert [(j["repeat"], j["fold"]) for j in jobs] == [(r, 0), (r, 1)]
    assert not res[0].test.equals(res[1].test)  # another split and seed: other models
    with pytest.raises(ParameterError, match="one of each per repetition"):
        train.run_repeated_cv(df, x, CFG, TRAINING, folds, outs[:1], seeds=seeds, progress=False)
    with pytest.raises(ParameterError, match="distinct"):
        train.run_repeated_cv(df, x, CFG, TRAINING, folds, outs, seeds=seeds, repeats=[1, 1], progress=False)


# ---------------------------------------------------------------------------------------------------------------
# the smoke profile's notebooks with two repetitions
# ---------------------------------------------------------------------------------------------------------------


def _run(profile: dict, path: Path, run: Path, *only: str) -> None:
    path.write_text(yaml.safe_dump(profile))
    cmd = [*RUNNER, "--profile", str(path), "--out", str(run), "--only", *only]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.e2e
def test_smoke_notebooks_with_two_repetitions(smoke_run, tmp_path):
    """Notebooks 02-06 of the smoke profile with ``n_repeats: 2`` in a copy of the smoke run taken before training:
    repetition 0 is the smoke run byte for byte, repetition 1 has its own folds and files, and notebook 06 reports
    the spread; then ``n_repeats: 1`` removes the repetition's outputs again."""
    run = tmp_path / "run"
    _copy_before_training(smoke_run, run)
    prof = yaml.safe_load(Path(json.loads((smoke_run / "provenance.json").read_text())["profile"]["file"]).read_text())
    prof["notebooks"]["02_preprocess"]["n_repeats"] = 2
    _run(prof, tmp_path / "smoke_rep.yaml", run, "02", "03", "04", "05", "06")
    same = [p.relative_to(smoke_run) for p in (smoke_run / "predictions").glob("*.csv")]
    same += [Path("tables") / n for n in ("performance.csv", "delong.csv", "dl_us_folds.csv", "dl_mri_folds.csv")]
    assert len(same) >= 12
    differ = [str(p) for p in same if (smoke_run / p).read_bytes() != (run / p).read_bytes()]
    assert not differ, differ
    rep = run / "predictions" / "repeats" / "r1"
    f0, f1 = pd.read_csv(run / "predictions" / "folds.csv"), pd.read_csv(rep / "folds.csv")
    assert f0[["patient_id", "split", "her2"]].equals(f1[["patient_id", "split", "her2"]])
    assert not f0["fold"].equals(f1["fold"]) and (f1.loc[f1["split"] == "test", "fold"] == -1).all()
    auc = pd.read_csv(run / "tables" / "repeats_auc.csv")
    for prefix, label in (("us", "DL-US"), ("mri", "DL-MRI"), ("fusion", "DL-US&MRI")):
        for r, folder in ((0, run / "predictions"), (1, rep)):
            t = pd.read_csv(folder / f"{prefix}_test.csv")
            got = auc.loc[(auc["repeat"] == r) & (auc["model"] == label), "test_auc"].item()
            assert got == pytest.approx(roc_auc_score(t["her2"], t["p_her2"]), abs=1e-12), (prefix, r)
    assert not pd.read_csv(rep / "us_test.csv").equals(pd.read_csv(run / "predictions" / "us_test.csv"))
    assert (run / "models" / "repeats" / "r1" / "dl_mri" / "fold0.pt").is_file()
    assert (run / "tables" / "repeats" / "r1" / "fusion_coefficients.csv").is_file()
    summary = pd.read_csv(run / "tables" / "repeats_summary.csv")
    assert set(summary["n_repeats"]) == {2} and len(summary) == 9
    assert (run / "figures" / "repeats.png").stat().st_size > 20_000
    assert "Across 2 repetitions" in (run / "index.html").read_text()  # the report's Results show the spread
    jobs = json.loads((run / "provenance.json").read_text())["notebooks"]["03_train_us"]["training_jobs"]
    assert [j["file"] for j in jobs] == ["models/dl_us/jobs.json", "models/repeats/r1/dl_us/jobs.json"]
    assert [[(x["repeat"], x["fold"]) for x in j["jobs"]] for j in jobs] == [[(r, k) for k in range(4)] for r in (0, 1)]
    assert all(j["executor"] == "local" and all(x["host"] and x["wall_s"] > 0 for x in j["jobs"]) for j in jobs)
    prof["notebooks"]["02_preprocess"]["n_repeats"] = 1
    _run(prof, tmp_path / "smoke_one.yaml", run, "02", "06")
    for base in ("predictions", "tables", "figures"):
        assert not (run / base / "repeats" / "r1").exists(), base
    assert (run / "models" / "repeats" / "r1" / "dl_us" / "fold0.pt").is_file()  # kept for reuse by fingerprint
    assert not (run / "tables" / "repeats_summary.csv").exists() and not (run / "figures" / "repeats.png").exists()
