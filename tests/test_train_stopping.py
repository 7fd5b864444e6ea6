"""``her2lib.train.stopping``: the epoch-selection key and early-stopping rule, and their replay over a history.

Reference: the rule written out by hand on small histories (the loop's own agreement with the replay is checked on
a real training run in ``tests/test_train_speed_options.py``)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from her2lib.errors import ParameterError
from her2lib.train.stopping import Replay, improves, replay_early_stopping, selection_key, stops_early


def _rows(aucs, losses=None):
    losses = losses or [0.5] * len(aucs)
    return [{"epoch": e, "val_auc": a, "val_loss": v} for e, (a, v) in enumerate(zip(aucs, losses, strict=True), 1)]


def test_selection_key_ranks_auc_then_lower_loss_and_undefined_auc_last():
    assert selection_key(0.7, 0.9) > selection_key(0.6, 0.1)
    assert selection_key(0.7, 0.4) > selection_key(0.7, 0.5)
    assert selection_key(math.nan, 0.1) < selection_key(0.0, 9.9)


def test_improves_is_strict_so_a_tie_keeps_the_earlier_epoch():
    assert improves((0.5, -1.0), None)
    assert improves((0.7, -0.5), (0.7, -0.6)) and not improves((0.7, -0.5), (0.7, -0.5))


def test_stops_early_counts_epochs_since_the_best():
    assert not stops_early(7, 3, 5) and stops_early(8, 3, 5) and not stops_early(30, 1, None)


@pytest.mark.parametrize(
    ("patience", "best", "run"),
    [(1, 2, 3), (2, 2, 4), (3, 2, 5), (4, 6, 10), (None, 6, 10)],
)
def test_replay_stops_where_the_rule_says(patience, best, run):
    #        epoch:  1    2    3    4    5    6    7    8    9    10
    rows = _rows([0.5, 0.7, 0.6, 0.7, 0.6, 0.8, 0.7, 0.7, 0.7, 0.75])  # epoch 4 ties epoch 2: the first one stays
    assert replay_early_stopping(rows, patience) == Replay(patience, best, run)


def test_replay_takes_a_metrics_csv_fold_and_breaks_ties_by_loss():
    m = pd.DataFrame(_rows([0.6, 0.6, 0.6], [0.7, 0.5, 0.6]))
    assert replay_early_stopping(m.to_dict("records"), 1) == Replay(1, 2, 3)


def test_replay_refuses_bad_input():
    with pytest.raises(ParameterError, match="patience=0"):
        replay_early_stopping(_rows([0.5]), 0)
    with pytest.raises(ParameterError, match="epoch 1 where 2 was expected.*'fold' column"):
        replay_early_stopping(_rows([0.5]) + _rows([0.6]), 3)
    with pytest.raises(ParameterError, match="no epochs"):
        replay_early_stopping([], 3)
