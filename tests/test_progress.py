"""Live progress: the training stage's epoch log and the runner's monitor that shows it in the terminal."""

from __future__ import annotations

import io
import json

import pytest

from her2lib.runner.progress import ProgressMonitor, read_events
from her2lib.stages import RunDirs, log_progress


@pytest.fixture()
def run(tmp_path) -> RunDirs:
    return RunDirs.from_out_dir(tmp_path / "out", tmp_path / "cohort")


def test_log_progress_appends_one_json_line_per_event(run):
    log_progress(run, "start", model="DL-US", total=4)
    log_progress(run, "epoch", model="DL-US", fold=0, n_folds=2, epoch=1, epochs=2, val_loss=0.5, val_auc=0.75)
    lines = run.progress_log.read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["start", "epoch"]
    assert json.loads(lines[1])["val_auc"] == 0.75 and "t" in json.loads(lines[1])


def test_read_events_leaves_an_unfinished_line_and_skips_garbage(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"event": "start"}\nnot json\n{"event": "epoch", "ep')
    events, offset = read_events(path)
    assert events == [{"event": "start"}] and offset == len(b'{"event": "start"}\nnot json\n')
    with open(path, "ab") as f:
        f.write(b'och": 1}\n')
    more, offset2 = read_events(path, offset)
    assert more == [{"event": "epoch", "epoch": 1}] and offset2 == path.stat().st_size
    assert read_events(tmp_path / "absent.jsonl", 7) == ([], 7)


def _epoch(fold, epoch, auc=0.7):
    return dict(model="DL-MRI", fold=fold, n_folds=2, epoch=epoch, epochs=3, val_loss=0.61, val_auc=auc)


def test_monitor_shows_model_fold_epoch_auc_and_an_eta_from_the_epochs_left(run):
    log_progress(run, "start", model="DL-US", total=99)  # an earlier notebook's events are not shown
    out = io.StringIO()
    with ProgressMonitor(run.progress_log, "[5/8] 04_train_mri", file=out, interval=0.01) as mon:
        log_progress(run, "start", model="DL-MRI", total=6)
        for fold in (0, 1):
            for epoch in (1, 2, 3):
                log_progress(run, "epoch", **_epoch(fold, epoch, auc=0.5 + 0.1 * epoch))
        log_progress(run, "end", model="DL-MRI")
    text = out.getvalue()
    assert [e["event"] for e in mon.shown] == ["start"] + ["epoch"] * 6 + ["end"]
    assert "[5/8] 04_train_mri DL-MRI" in text and "DL-US" not in text
    assert "6/6 epochs" in text  # the bar counts the profile's work: folds x epochs
    assert "fold 1 (2/2) epoch 3/3 loss 0.610 AUC 0.800" in text
    assert "<" in text  # elapsed<remaining: the ETA


def test_monitor_without_events_prints_nothing(run):
    out = io.StringIO()
    with ProgressMonitor(run.progress_log, "[1/8] 00_cohort", file=out, interval=0.01) as mon:
        pass
    assert out.getvalue() == "" and mon.shown == []
