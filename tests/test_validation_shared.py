"""One validator of labels and probabilities (her2lib.stats._common): stats, evaluate and fusion raise the same error
type (DataError: bad input is bad data) with the same message for the same bad input."""

from __future__ import annotations

import numpy as np
import pytest

from her2lib import evaluate, fusion, stats
from her2lib.errors import DataError

GOOD_Y = np.array([0, 1, 0, 1, 1, 0])
GOOD_P = np.array([0.1, 0.8, 0.3, 0.7, 0.6, 0.2])

# (what, labels, probabilities): each one bad input
BAD = [
    ("label 2", np.array([0, 1, 2, 1, 1, 0]), GOOD_P),
    ("label NaN", np.array([0, 1, np.nan, 1, 1, 0]), GOOD_P),
    ("text labels", np.array(["neg", "pos", "neg", "pos", "pos", "neg"]), GOOD_P),
    ("probability > 1", GOOD_Y, np.array([0.1, 1.2, 0.3, 0.7, 0.6, 0.2])),
    ("probability < 0", GOOD_Y, np.array([0.1, 0.8, -0.3, 0.7, 0.6, 0.2])),
    ("probability NaN", GOOD_Y, np.array([0.1, 0.8, np.nan, 0.7, 0.6, 0.2])),
    ("lengths differ", GOOD_Y, GOOD_P[:5]),
    ("empty", np.array([]), np.array([])),
]

# callables taking (y_true, y_prob); the probability argument is named y_prob in every one of them
CALLERS = {
    "stats.calibration": lambda y, p: stats.calibration(y, p),
    "stats.brier_score": lambda y, p: stats.brier_score(y, p),
    "stats.calibration_curve": lambda y, p: stats.calibration_curve(y, p, n_bins=2),
    "stats.decision_curve": lambda y, p: stats.decision_curve(y, p),
    "evaluate.calibration_summary": lambda y, p: evaluate.calibration_summary(y, p),
    "evaluate.roc_points": lambda y, p: evaluate.roc_points(y, p),
}


def _message(fn, y, p) -> tuple[type, str]:
    with pytest.raises(Exception) as e:
        fn(y, p)
    return type(e.value), str(e.value)


@pytest.mark.parametrize("what,y,p", BAD, ids=[b[0] for b in BAD])
def test_same_error_and_message_everywhere(what, y, p):
    seen = {name: _message(fn, y, p) for name, fn in CALLERS.items()}
    types = {t for t, _ in seen.values()}
    messages = {m for _, m in seen.values()}
    assert types == {DataError}, seen
    assert len(messages) == 1, seen


@pytest.mark.parametrize("what,y,p", BAD[:3], ids=[b[0] for b in BAD[:3]])
def test_labels_score_functions_and_fusion_agree(what, y, p):
    """Score functions (any real score, not only probabilities) and the fusion fit say the same about labels."""
    ref = _message(CALLERS["stats.calibration"], y, p)
    assert _message(stats.auc, y, p) == ref
    assert _message(lambda y, p: stats.binary_metrics(y, p, 0.5), y, p) == ref
    assert _message(lambda y, p: fusion.fit_fusion(p, p, y), y, p) == ref


@pytest.mark.parametrize("what,y,p", BAD[3:7], ids=[b[0] for b in BAD[3:7]])
def test_fusion_probabilities_same_message_with_its_argument_name(what, y, p):
    """fit_fusion names its probability arguments p_us / p_mri; otherwise the message is the validator's."""
    t, ref = _message(CALLERS["stats.calibration"], y, p)
    assert _message(lambda y, p: fusion.fit_fusion(p, GOOD_P, y), y, p) == (t, ref.replace("y_prob", "p_us"))
    assert _message(lambda y, p: fusion.fit_fusion(GOOD_P, p, y), y, p) == (t, ref.replace("y_prob", "p_mri"))


def test_operating_point_labels_are_data_errors():
    with pytest.raises(DataError, match="y must hold 0/1 labels"):
        evaluate.operating_point_metrics([0, 2, 1], [0.1, 0.2, 0.3], 0.5)
