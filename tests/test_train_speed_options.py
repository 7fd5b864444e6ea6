"""The training loop's speed options: early stopping (``TrainConfig.patience``), the batched device-side
augmentation backend (``augment_backend="batched"``) and where the inputs live (``place_inputs``).

Each is checked against the run without it: early stopping must keep exactly the epochs an unstopped run has up to
the stop (same seeds per epoch, so the same history rows) and stop where the rule says; the batched backend must be
the one used, deterministic, and resume to byte-identical checkpoints."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from her2lib import models, train
from her2lib.batch_augment import BatchedAugmenter
from her2lib.errors import ParameterError
from her2lib.figures.training import plot_learning_curves

CFG = models.DLUSConfig(variant="convnextv2_atto", image_size=32)
BASE = replace(train.PAPER_TRAINING["dl_us"], lr=1e-3, batch_size=4, mixup=False)


def _data(n_train=12, n_val=6, seed=0):
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "split": "train", "her2": np.arange(n) % 2})
    x = rng.normal(size=(n, 1, 32, 32)).astype(np.float32)
    x[df.her2.to_numpy() == 1, :, 8:24, 8:24] += 0.5
    x = torch.as_tensor(x)
    return x[:n_train], df.iloc[:n_train], x[n_train:], df.iloc[n_train:]


def _fit(tc, out, **kw):
    xt, tr, xv, va = _data()
    return train.fit_fold(CFG, tc, xt, tr, xv, va, fold=0, out_dir=out, progress=False, **kw)


def test_config_validates_and_keeps_old_fingerprints():
    with pytest.raises(ParameterError, match="patience"):
        replace(BASE, patience=0)
    with pytest.raises(ParameterError, match="augment_backend"):
        replace(BASE, augment_backend="kornia")
    d = BASE.to_dict()
    assert "patience" not in d and "augment_backend" not in d  # defaults: the dict (and fingerprints) of before
    d = replace(BASE, patience=3, augment_backend="batched").to_dict()
    assert d["patience"] == 3 and d["augment_backend"] == "batched"
    # "auto": batched on CUDA, MONAI on the CPU (her2lib 0.1's CPU results); explicit choices are kept
    assert BASE.augment_backend == "auto"
    assert BASE.resolved_backend("cpu") == "monai" and BASE.resolved_backend("cuda") == "batched"
    assert replace(BASE, augment_backend="batched").resolved_backend("cpu") == "batched"
    assert replace(BASE, augment_backend="monai").resolved_backend("cuda") == "monai"


def test_early_stopping_keeps_the_unstopped_runs_epochs(tmp_path):
    full = _fit(replace(BASE, epochs=8), tmp_path / "full")
    aucs = [r["val_auc"] for r in full.history]
    patience = 2
    stopped = _fit(replace(BASE, epochs=8, patience=patience), tmp_path / "stopped")
    # where the rule says: the first epoch e (1-based) with e - best_so_far(e) >= patience
    best, stop = 0, None
    keys = [(a, -r["val_loss"]) for a, r in zip(aucs, full.history)]
    for e in range(1, 9):
        if best == 0 or keys[e - 1] > keys[best - 1]:
            best = e
        if e - best >= patience:
            stop = e
            break
    assert stop is not None and stop < 8, "the fixture must stop early for the test to mean anything"
    assert len(stopped.history) == stop
    pd.testing.assert_frame_equal(pd.DataFrame(stopped.history), pd.DataFrame(full.history[:stop]))
    assert stopped.best_epoch == best
    # replaying the rule over the unstopped history (train.replay_early_stopping) gives what the loop did
    assert train.replay_early_stopping(full.history, patience) == train.stopping.Replay(patience, best, stop)
    assert train.replay_early_stopping(full.history, None) == train.stopping.Replay(None, full.best_epoch, 8)
    if full.best_epoch <= stop:
        for k, v in full.state_dict.items():
            assert torch.equal(v, stopped.state_dict[k]), k


def test_early_stop_resumes_to_the_same_result(tmp_path):
    tc = replace(BASE, epochs=10, patience=1, augment_backend="batched")
    ref = _fit(tc, tmp_path / "ref")
    assert len(ref.history) < 10, "the fixture must stop early for the test to mean anything"

    class Stop(Exception):
        pass

    def interrupt(fold, epoch, row):
        if epoch == len(ref.history) - 1:  # the early stop's last epoch, after its resume state is written
            raise Stop

    with pytest.raises(Stop):
        _fit(tc, tmp_path / "run", checkpoint_every=1, epoch_hook=interrupt)
    seen = []
    res = _fit(tc, tmp_path / "run", checkpoint_every=1, epoch_hook=lambda f, e, r: seen.append(e))
    assert seen == []  # nothing left to train after the stop
    assert res.best_epoch == ref.best_epoch and res.history == ref.history
    assert (tmp_path / "run" / "fold0.pt").read_bytes() == (tmp_path / "ref" / "fold0.pt").read_bytes()


def test_batched_backend_is_used_deterministic_and_resumable(tmp_path, monkeypatch):
    tc = replace(BASE, epochs=3, augment_backend="batched")
    calls = []
    real = BatchedAugmenter.__call__
    monkeypatch.setattr(BatchedAugmenter, "__call__", lambda self, b: calls.append(b.shape) or real(self, b))
    a = _fit(tc, tmp_path / "a")
    assert calls and all(s[0] == 4 for s in calls)
    b = _fit(tc, tmp_path / "b")
    assert (tmp_path / "a" / "fold0.pt").read_bytes() == (tmp_path / "b" / "fold0.pt").read_bytes()
    monai = _fit(replace(tc, augment_backend="monai"), tmp_path / "monai")
    assert monai.history != a.history  # another backend, other draws

    class Stop(Exception):
        pass

    def interrupt(fold, epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        _fit(tc, tmp_path / "c", checkpoint_every=1, epoch_hook=interrupt)
    _fit(tc, tmp_path / "c", checkpoint_every=1)
    assert (tmp_path / "c" / "fold0.pt").read_bytes() == (tmp_path / "a" / "fold0.pt").read_bytes()
    assert b.history == a.history


def test_fingerprint_hashes_the_backend_that_runs(tmp_path):
    """ "auto" and "monai" on the CPU are the same MONAI run (same fingerprint: the finished fold is reused);
    "batched" is another run (retrained)."""
    _fit(replace(BASE, epochs=1), tmp_path)
    seen = []
    _fit(replace(BASE, epochs=1, augment_backend="monai"), tmp_path, epoch_hook=lambda f, e, r: seen.append(e))
    assert seen == []  # reused
    _fit(replace(BASE, epochs=1, augment_backend="batched"), tmp_path, epoch_hook=lambda f, e, r: seen.append(e))
    assert seen == [0]  # retrained


def test_resume_between_checkpoints_after_a_new_best(tmp_path):
    """checkpoint_every=2 and an interruption after an improvement that no checkpoint holds yet: the run resumes
    from the last checkpoint (no restart) and ends byte-identical."""
    tc = replace(BASE, epochs=6)
    ref = _fit(tc, tmp_path / "ref", checkpoint_every=2)
    assert ref.best_epoch > 1

    class Stop(Exception):
        pass

    def interrupt(fold, epoch, row):
        if epoch == 4:  # checkpoints after epochs 2 and 4 (1-based): this is after epoch 5
            raise Stop

    with pytest.raises(Stop):
        _fit(tc, tmp_path / "run", checkpoint_every=2, epoch_hook=interrupt)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "training fold 0 afresh" would raise
        _fit(tc, tmp_path / "run", checkpoint_every=2, epoch_hook=lambda f, e, r: seen.append(e))
    assert seen == [4, 5]
    assert (tmp_path / "run" / "fold0.pt").read_bytes() == (tmp_path / "ref" / "fold0.pt").read_bytes()


def test_place_inputs():
    x = torch.zeros(3, 1, 4, 4)
    assert train.place_inputs(x, device=torch.device("cpu"), training=BASE) is x  # the CPU: as it is
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        dev = torch.device("cuda")
        assert train.place_inputs(x, device=dev, training=replace(BASE, augment_backend="batched")).is_cuda
        assert train.place_inputs(x, device=dev, training=BASE).is_cuda  # auto: batched on CUDA
        monai = replace(BASE, augment_backend="monai")
        assert train.place_inputs(x, device=dev, training=monai).is_pinned()  # MONAI runs on the CPU
        assert train.place_inputs(
            x, device=dev, training=replace(BASE, augment_backend="batched"), budget=0
        ).is_pinned()


def test_learning_curves_say_when_early_stopping_ended_a_fold():
    rows = [
        {"fold": f, "epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_auc": 0.5 + 0.01 * e}
        for f in (0, 1)
        for e in range(1, (6 if f == 0 else 4) + 1)
    ]
    history = pd.DataFrame(rows)
    title = plot_learning_curves(history, title="DL-US", epochs=6)._suptitle.get_text()
    assert title.startswith("DL-US: ") and "early stopping" in title and "epoch 6" in title
    assert plot_learning_curves(history[history.fold == 0], title="DL-US", epochs=6)._suptitle.get_text() == "DL-US"
    assert plot_learning_curves(history, title="DL-US")._suptitle.get_text() == "DL-US"  # epochs unknown: no claim


def test_deterministic_training_skips_the_nan_fill_on_the_cpu_and_restores_it():
    from her2lib.train.runtime import _deterministic

    before = torch.utils.deterministic.fill_uninitialized_memory
    with _deterministic(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert torch.utils.deterministic.fill_uninitialized_memory is before


@pytest.mark.parametrize("cfg", [CFG, models.DLMRIConfig(image_size=16, conv1_t_stride=2)], ids=["dl_us", "dl_mri"])
def test_the_nan_fill_changes_no_weight(cfg, monkeypatch):
    """Two epochs with torch's NaN fill of uninitialised memory and two without: bit-identical weights (a kernel
    that read memory before writing it would differ, the NaN fill making it NaN)."""
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(8, *cfg.input_shape)).astype(np.float32))
    y = torch.as_tensor(np.arange(8) % 2)
    tc = replace(BASE, batch_size=4, mixup=True)
    states = []
    for fill in (True, False):
        monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", fill)
        torch.manual_seed(0)
        model = models.build_model(cfg)
        opt = train.make_optimizer(model, tc)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        mixup = train.make_mixup(tc, num_classes=2)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            for epoch in range(2):
                train.train_one_epoch(
                    model, opt, scaler, x, y, training=tc, device=torch.device("cpu"), aug=None, mixup=mixup,
                    gen=torch.Generator().manual_seed(epoch), np_rs=np.random.RandomState(epoch),
                )  # fmt: skip
        finally:
            torch.use_deterministic_algorithms(False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_learning_curve_dot_is_the_epoch_training_kept(tmp_path):
    # an AUC tie (a 22-patient selection set has few distinct AUCs): the loop keeps the later epoch with the lower
    # loss; the figure once marked the first maximum of the AUC instead
    rows = [
        {"fold": 0, "epoch": e, "train_loss": 1.0, "val_loss": loss, "val_auc": auc}
        for e, (auc, loss) in enumerate([(0.6, 0.7), (0.9, 0.6), (0.8, 0.5), (0.9, 0.4), (0.7, 0.3)], 1)
    ]
    fig = plot_learning_curves(pd.DataFrame(rows))
    dots = [ln for ln in fig.axes[1].lines if ln.get_marker() == "o"]
    assert [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in dots] == [(4.0, 0.9)]
    # and on a real fold: the dot sits at FoldResult.best_epoch
    res = _fit(replace(BASE, epochs=4), tmp_path / "fold")
    fig = plot_learning_curves(pd.DataFrame([{"fold": 0, **r} for r in res.history]))
    (dot,) = [ln for ln in fig.axes[1].lines if ln.get_marker() == "o"]
    assert float(dot.get_xdata()[0]) == res.best_epoch
