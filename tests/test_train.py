"""Four-fold CV protocol: fold stratification/disjointness, no test patient in any fit, determinism, resume after
interruption, prediction files, fold-model loading."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from her2lib import contract, models, train
from her2lib.errors import DataError, ParameterError
from her2lib.figures.training import plot_learning_curves

US_TRAINING = train.PAPER_TRAINING["dl_us"]
MRI_TRAINING = train.PAPER_TRAINING["dl_mri"]


def _us(**kw) -> train.TrainConfig:
    """The paper's DL-US training settings with ``kw`` changed."""
    return replace(US_TRAINING, **kw)


def _cohort(n_train=16, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    her2 = np.r_[np.tile([0, 1], n_train // 2), np.tile([0, 1], n_test // 2)]
    df = pd.DataFrame(
        {"patient_id": [f"P{i:03d}" for i in range(n)], "split": ["train"] * n_train + ["test"] * n_test, "her2": her2}
    )
    return df, rng


def test_assign_folds_stratified_disjoint_deterministic():
    rng = np.random.default_rng(0)
    n = 197
    df = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "split": np.where(rng.random(n) < 0.75, "train", "test"),
            "her2": (rng.random(n) < 0.4).astype(int),
        }
    )
    f = train.assign_folds(df, n_folds=4, seed=0)
    assert (f[df.split == "test"] == -1).all()
    tr = df.split == "train"
    assert set(f[tr]) == {0, 1, 2, 3}
    sizes = f[tr].value_counts()
    assert sizes.max() - sizes.min() <= 1
    pos = df[tr].groupby(f[tr])["her2"].sum()
    assert pos.max() - pos.min() <= 1  # stratified
    assert f.equals(train.assign_folds(df, 4, 0))
    shuffled = df.sample(frac=1, random_state=1)
    assert f.equals(train.assign_folds(shuffled, 4, 0).loc[df.index])  # row order does not matter
    assert not f.equals(train.assign_folds(df, 4, 1))


def test_folds_file_roundtrip_and_validation(tmp_path):
    df, _ = _cohort()
    f = train.assign_folds(df, 2)
    train.write_folds(tmp_path / "folds.csv", df, f)
    assert train.read_folds(tmp_path / "folds.csv", df).equals(f)
    bad = pd.read_csv(tmp_path / "folds.csv")
    bad.loc[bad.split == "test", "fold"] = 0
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="does not match") as e:
        train.read_folds(tmp_path / "bad.csv", df)
    assert any("test patient with a CV fold" in p for p in e.value.problems)


def test_fit_fold_refuses_test_patients(tmp_path):
    df, rng = _cohort()
    x = torch.zeros(len(df), 1, 32, 32)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    with pytest.raises(DataError, match="test-cohort patients .*P016"):
        train.fit_fold(cfg, _us(epochs=1), x, df, x[:2], df.iloc[:2], fold=0, out_dir=tmp_path)
    with pytest.raises(DataError, match="held-out"):
        train.fit_fold(cfg, _us(epochs=1), x[:16], df.iloc[:16], x, df, fold=0, out_dir=tmp_path)


def _us_inputs(df, rng):
    x = rng.normal(size=(len(df), 1, 32, 32)).astype(np.float32)
    x[df.her2.to_numpy() == 1, :, 8:24, 8:24] += 1.0
    return x


def test_resume_after_interruption_gives_identical_result(tmp_path):
    df, rng = _cohort()
    x = _us_inputs(df, rng)
    folds = train.assign_folds(df, n_folds=2, seed=0)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=3, lr=1e-3, batch_size=4)
    ref = train.run_cv(df, x, cfg, tc, folds, tmp_path / "ref", progress=False)

    class Stop(Exception):
        pass

    def interrupt(fold, epoch, row):
        if fold == 1 and epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        train.run_cv(df, x, cfg, tc, folds, tmp_path / "run", progress=False, epoch_hook=interrupt)
    assert (tmp_path / "run" / "fold0.pt").exists() and (tmp_path / "run" / "fold1_state.pt").exists()
    seen = []
    res = train.run_cv(
        df, x, cfg, tc, folds, tmp_path / "run", progress=False, epoch_hook=lambda f, e, r: seen.append((f, e))
    )
    assert seen == [(1, 1), (1, 2)]  # fold 0 reused, fold 1 resumed after epoch 0
    pd.testing.assert_frame_equal(res.oof, ref.oof)
    pd.testing.assert_frame_equal(res.test, ref.test)
    pd.testing.assert_frame_equal(res.history, ref.history)
    assert not (tmp_path / "run" / "fold1_state.pt").exists()
    for k in (0, 1):  # the checkpoints too, byte for byte (pickle memo and zip folder name do not leak in)
        assert (tmp_path / "run" / f"fold{k}.pt").read_bytes() == (tmp_path / "ref" / f"fold{k}.pt").read_bytes()

    # outputs: OOF covers every training patient once, test = mean of fold models
    assert sorted(res.oof.patient_id) == sorted(df.patient_id[df.split == "train"])
    assert (res.test.fold == -1).all() and len(res.test) == 6
    m0 = train.load_fold_model(tmp_path / "run", 0)
    m1 = train.load_fold_model(tmp_path / "run", 1)
    xt = torch.as_tensor(x[df.split.to_numpy() == "test"])
    p = (train.predict_proba(m0, xt) + train.predict_proba(m1, xt)) / 2
    np.testing.assert_allclose(res.test.p_her2.to_numpy(), p, rtol=0, atol=1e-12)
    assert not m0.training
    paths = train.write_predictions(res, tmp_path / "pred", "us")
    back = pd.read_csv(paths[0])
    assert list(back.columns) == list(contract.PREDICTION_COLUMNS)
    plot_learning_curves(res.history, path=tmp_path / "lc.png")
    assert (tmp_path / "lc.png").stat().st_size > 0


def test_changed_config_retrains(tmp_path):
    df, rng = _cohort(8, 2)
    x = _us_inputs(df, rng)
    folds = train.assign_folds(df, n_folds=2)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=1, batch_size=4, mixup=False)
    train.run_cv(df, x, cfg, tc, folds, tmp_path, progress=False)
    seen = []
    train.run_cv(
        df, x, cfg, replace(tc, lr=1e-3), folds, tmp_path, progress=False, epoch_hook=lambda f, e, r: seen.append(f)
    )
    assert seen == [0, 1]  # a changed training setting retrains
    seen.clear()
    cfg.drop_path_rate = 0.2
    train.run_cv(
        df, x, cfg, replace(tc, lr=1e-3), folds, tmp_path, progress=False, epoch_hook=lambda f, e, r: seen.append(f)
    )
    assert seen == [0, 1]  # so does a changed architecture
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["drop_path_rate"] == 0.2 and saved["training"]["lr"] == 1e-3  # both recorded


def test_mri_cv_never_fits_on_test_patients(tmp_path, monkeypatch):
    df, rng = _cohort(8, 4)
    x = rng.normal(size=(len(df), 1, 16, 16, 16)).astype(np.float32)
    folds = train.assign_folds(df, n_folds=2)
    fitted = []
    real = train.fit_fold

    def spy(cfg, tc, xt, rt, xv, rv, **kw):
        assert not set(rt.patient_id) & set(rv.patient_id)  # training and held-out parts are disjoint
        fitted.extend(rt.patient_id)
        fitted.extend(rv.patient_id)
        return real(cfg, tc, xt, rt, xv, rv, **kw)

    monkeypatch.setattr(train.executors, "fit_fold", spy)  # the local executor's fit (train.executors.fit_job)
    cfg = models.DLMRIConfig(image_size=16, conv1_t_stride=2)
    res = train.run_cv(
        df, x, cfg, replace(MRI_TRAINING, epochs=1, batch_size=4, lr=1e-3), folds, tmp_path, progress=False
    )
    test_ids = set(df.patient_id[df.split == "test"])
    assert fitted and not (set(fitted) & test_ids)
    assert set(res.test.patient_id) == test_ids and res.test.p_her2.between(0, 1).all()


def test_run_cv_rejects_bad_inputs(tmp_path):
    df, rng = _cohort()
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=1)
    folds = train.assign_folds(df, 2)
    with pytest.raises(DataError, match="image_size=32"):
        train.run_cv(df, np.zeros((len(df), 1, 16, 16), np.float32), cfg, tc, folds, tmp_path)
    bad = folds.copy()
    bad.iloc[-1] = 0  # a test patient put into a fold
    with pytest.raises(DataError, match="-1 for test patients"):
        train.run_cv(df, np.zeros((len(df), 1, 32, 32), np.float32), cfg, tc, bad, tmp_path)
    with pytest.raises(ParameterError, match="selection='inerr' is not supported.*Did you mean 'inner'"):
        train.run_cv(df, np.zeros((len(df), 1, 32, 32), np.float32), cfg, tc, folds, tmp_path, selection="inerr")


def test_mixed_precision_path_runs_on_cpu(tmp_path):
    """The CUDA code path (autocast float16 + GradScaler + channels_last), exercised on the CPU."""
    df, rng = _cohort(8, 4)
    x = _us_inputs(df, rng)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=1, batch_size=4, amp=True, channels_last=True)
    res = train.run_cv(df, x, cfg, tc, train.assign_folds(df, 2), tmp_path, progress=False)
    assert res.oof.p_her2.between(0, 1).all() and len(res.oof) == 8


# ----------------------------------------------------------------------------------------- epoch selection (issue 9.5)
def test_inner_split_stratified_deterministic_order_free():
    rng = np.random.default_rng(3)
    rows = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(112)], "her2": (rng.random(112) < 0.4).astype(int)})
    tr, sel = train.inner_split(rows, 0.2, seed=7)
    assert len(sel) == 22 and len(tr) == 90 and not set(tr) & set(sel)
    assert set(tr) | set(sel) == set(range(112))
    # stratified: the selection set's positive share is within one patient of the whole part's
    assert abs(rows.her2.iloc[sel].sum() - 22 * rows.her2.mean()) <= 1
    tr2, sel2 = train.inner_split(rows, 0.2, seed=7)
    assert np.array_equal(sel, sel2)
    shuffled = rows.sample(frac=1, random_state=0)
    _, sel3 = train.inner_split(shuffled, 0.2, seed=7)
    assert set(shuffled.patient_id.iloc[sel3]) == set(rows.patient_id.iloc[sel])  # row order does not matter
    assert not np.array_equal(sel, train.inner_split(rows, 0.2, seed=8)[1])
    with pytest.raises(DataError, match="each class needs >= 2"):
        train.inner_split(rows.assign(her2=0), 0.2, seed=0)


@pytest.mark.parametrize("selection", ["inner", "heldout"])
def test_selection_set_and_heldout_fold(tmp_path, monkeypatch, selection):
    """Default: the held-out fold reaches neither the fit nor the epoch selection; 'heldout' (paper) selects on it."""
    df, rng = _cohort(24, 4)
    x = _us_inputs(df, rng)
    folds = train.assign_folds(df, n_folds=2)
    calls = []
    real = train.fit_fold

    def spy(cfg, tc, xt, rt, xv, rv, **kw):
        calls.append((kw["fold"], set(rt.patient_id), set(rv.patient_id)))
        return real(cfg, tc, xt, rt, xv, rv, **kw)

    monkeypatch.setattr(train.executors, "fit_fold", spy)  # the local executor's fit (train.executors.fit_job)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    res = train.run_cv(
        df, x, cfg, _us(epochs=2, batch_size=4, mixup=False), folds, tmp_path, progress=False, selection=selection
    )
    assert [c[0] for c in calls] == [0, 1]  # the spy saw both folds' fits
    for k, fit_ids, sel_ids in calls:
        heldout = set(df.patient_id[folds == k])
        assert not fit_ids & sel_ids and not fit_ids & heldout
        if selection == "inner":
            assert not sel_ids & heldout and len(sel_ids) == round(0.2 * 12)
        else:
            assert sel_ids == heldout
    assert (res.summary.selection == train.SELECTIONS[selection]).all()
    assert res.selection == selection


def test_best_epoch_is_one_based_everywhere(tmp_path):
    df, rng = _cohort(16, 4)
    x = _us_inputs(df, rng)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=3, batch_size=4, lr=1e-3, mixup=False)
    res = train.run_cv(df, x, cfg, tc, train.assign_folds(df, 2), tmp_path, progress=False)
    assert sorted(res.history.epoch.unique()) == [1, 2, 3]
    for _, s in res.summary.iterrows():
        h = res.history[res.history.fold == s.fold]
        assert 1 <= s.best_epoch <= 3
        assert h.loc[h.epoch == s.best_epoch, "val_auc"].iloc[0] == s.select_auc
    back = pd.read_csv(tmp_path / "metrics.csv")
    assert back.epoch.min() == 1


def test_changed_heldout_label_is_not_reused(tmp_path):
    """A corrected label of the held-out fold must not reuse a finished fold (its fingerprint covered only the
    training labels before)."""
    df, rng = _cohort(16, 2)
    x = _us_inputs(df, rng)
    folds = train.assign_folds(df, n_folds=2)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=1, batch_size=4, mixup=False)
    tr = df[(df.split == "train") & (folds == 0)]
    va = df[(df.split == "train") & (folds == 1)]
    xt, xv = torch.as_tensor(x[tr.index]), torch.as_tensor(x[va.index])
    train.fit_fold(cfg, tc, xt, tr, xv, va, fold=0, out_dir=tmp_path / "f", progress=False)
    seen = []
    train.fit_fold(
        cfg,
        tc,
        xt,
        tr,
        xv,
        va,
        fold=0,
        out_dir=tmp_path / "f",
        progress=False,
        epoch_hook=lambda f, e, r: seen.append(e),
    )
    assert seen == []  # identical inputs: reused
    va2 = va.copy()
    va2.iloc[0, va2.columns.get_loc("her2")] = 1 - va2.iloc[0]["her2"]
    train.fit_fold(
        cfg,
        tc,
        xt,
        tr,
        xv,
        va2,
        fold=0,
        out_dir=tmp_path / "f",
        progress=False,
        epoch_hook=lambda f, e, r: seen.append(e),
    )
    assert seen == [0]  # retrained
    # run_cv, inner selection: flipping one held-out label of fold 1 retrains fold 1 (fit/selection sets unchanged)
    out = tmp_path / "cv"
    train.run_cv(df, x, cfg, tc, folds, out, progress=False)
    fixed = df.copy()
    pid = va.patient_id.iloc[0]
    fixed.loc[fixed.patient_id == pid, "her2"] = 1 - fixed.loc[fixed.patient_id == pid, "her2"]
    seen = []
    train.run_cv(fixed, x, cfg, tc, folds, out, progress=False, epoch_hook=lambda f, e, r: seen.append(f))
    assert 1 in seen


def test_test_folds_hold_each_fold_model(tmp_path):
    df, rng = _cohort(16, 6)
    x = _us_inputs(df, rng)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    res = train.run_cv(
        df, x, cfg, _us(epochs=1, batch_size=4, mixup=False), train.assign_folds(df, 2), tmp_path / "m", progress=False
    )
    tf = res.test_folds
    assert list(tf.columns) == list(contract.TEST_FOLD_COLUMNS) and len(tf) == 12
    mean = tf.groupby("patient_id").p_her2.mean()
    np.testing.assert_allclose(mean.loc[res.test.patient_id].to_numpy(), res.test.p_her2.to_numpy(), atol=1e-15)
    m1 = train.load_fold_model(tmp_path / "m", 1)
    xt = torch.as_tensor(x[df.split.to_numpy() == "test"])
    np.testing.assert_allclose(
        tf[tf.model_fold == 1].sort_values("patient_id").p_her2.to_numpy(), train.predict_proba(m1, xt), atol=1e-12
    )
    paths = train.write_predictions(res, tmp_path / "pred", "us")
    assert paths[-1].name == "us_test_folds.csv"


# ----------------------------------------------------------------------------------------- configuration, resume state
def test_train_config_is_validated_and_holds_the_papers_settings():
    assert (US_TRAINING.lr, US_TRAINING.weight_decay, US_TRAINING.mixup) == (2e-5, 5e-2, True)
    assert (MRI_TRAINING.lr, MRI_TRAINING.weight_decay, MRI_TRAINING.mixup) == (4e-6, 1e-2, False)
    assert US_TRAINING.batch_size == MRI_TRAINING.batch_size == 16 and US_TRAINING.epochs == 300
    with pytest.raises(ParameterError, match="lr=0 must be > 0"):
        train.TrainConfig(lr=0, weight_decay=0.01)
    with pytest.raises(ParameterError, match="lr_schedule='cosin' is not supported.*Did you mean 'cosine'"):
        train.TrainConfig(lr=1e-3, weight_decay=0.01, lr_schedule="cosin")
    with pytest.raises(TypeError):
        models.DLUSConfig(lr=1e-3)  # training settings are no longer part of the architecture


def test_resume_restores_the_torch_rng_state(tmp_path, monkeypatch):
    """The global torch RNG saved in the resume state is put back before training continues."""
    df, rng = _cohort(16, 2)
    x = _us_inputs(df, rng)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=3, batch_size=4, lr=1e-3, mixup=False)
    tr, va = df[df.split == "train"].iloc[:12], df[df.split == "train"].iloc[12:]
    xt, xv = torch.as_tensor(x[tr.index]), torch.as_tensor(x[va.index])

    class Stop(Exception):
        pass

    def interrupt(fold, epoch, row):
        raise Stop

    with pytest.raises(Stop):
        train.fit_fold(cfg, tc, xt, tr, xv, va, fold=0, out_dir=tmp_path, progress=False, epoch_hook=interrupt)
    saved = torch.load(tmp_path / "fold0_state.pt", weights_only=True)["torch_rng"]
    seen = []
    real = train.loop.BatchAugmenter  # built right after the resume state is restored

    def spy(*a, **kw):
        seen.append(torch.get_rng_state())
        return real(*a, **kw)

    monkeypatch.setattr(train.loop, "BatchAugmenter", spy)
    torch.manual_seed(12345)  # whatever the caller did in between
    train.fit_fold(cfg, tc, xt, tr, xv, va, fold=0, out_dir=tmp_path, progress=False)
    assert len(seen) == 1 and torch.equal(seen[0], saved)


def test_model_folders_of_her2lib_0_1_stay_loadable_and_resumable(tmp_path, monkeypatch):
    """her2lib 0.1 kept the training settings in the model configuration. Its config.json files (the fixture is
    the ``"config"`` of a 0.1 default-profile run) must still load, and its checkpoints must keep their
    fingerprint with the kernels they were trained with (``cpu_kernels=False``, torch's stock kernels): the
    fingerprint hashes the flat union of the two configurations, which must then equal the 0.1 dict. With
    her2lib's CPU kernels (the default) the fingerprint adds ``cpu_kernels: True``: other numerics, so a 0.1 fold is
    retrained rather than reused or resumed with them."""
    legacy = json.loads((contract.REPO_ROOT / "tests" / "fixtures" / "model_configs_v0_1.json").read_text())
    for kind, flat in legacy.items():
        arch, training = train.config.split_config_dict(flat)
        cfg, tc = models.config_from_dict(arch), train.TrainConfig(**training)
        assert {**models.config_to_dict(cfg), **tc.to_dict()} == flat, kind
        assert not set(models.config_to_dict(cfg)) & set(tc.to_dict())  # disjoint: the union loses nothing

    df, rng = _cohort(8, 2)
    folds = train.assign_folds(df, n_folds=2, seed=0)
    cfg = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
    tc = _us(epochs=1, lr=1e-3, batch_size=4)
    hashed = []
    real_hash = train.loop._hash
    monkeypatch.setattr(train.loop, "_hash", lambda *parts: hashed.append(parts[0]) or real_hash(*parts))
    stock = replace(tc, cpu_kernels=False)
    train.run_cv(df, _us_inputs(df, rng), cfg, stock, folds, tmp_path / "stock", progress=False)
    flat = {**models.config_to_dict(cfg), **tc.to_dict()}  # the 0.1 form
    assert hashed and all(h == flat for h in hashed)
    hashed.clear()
    train.run_cv(df, _us_inputs(df, rng), cfg, tc, folds, tmp_path / "m", progress=False)
    assert hashed and all(h == {**flat, "cpu_kernels": True} for h in hashed)
    path = tmp_path / "m" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"] = {**models.config_to_dict(cfg), **tc.to_dict()}  # the 0.1 layout
    path.write_text(json.dumps(meta))
    model = train.load_fold_model(tmp_path / "m", 0)
    x_test = torch.as_tensor(_us_inputs(df, np.random.default_rng(0))[df.split.to_numpy() == "test"])
    assert train.predict_proba(model, x_test).shape == (2,)
    meta["config"] = {"kind": "dl_us", "no_such_field": 1}
    path.write_text(json.dumps(meta))
    with pytest.raises(ParameterError, match=r"config\.json: not a model configuration.*re-run the training"):
        train.load_fold_model(tmp_path / "m", 0)
