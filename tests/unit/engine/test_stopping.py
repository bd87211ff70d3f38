"""The stopping signal fires when new labels stop changing the model's predictions and not while
they still do; its state survives the trip through JSON the service keeps between updates."""
import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from backend.engine.stopping import (
    Comparison,
    StabilizingPredictions,
    cohen_kappa,
    first_firing,
    stop_set,
)


def test_kappa_is_cohens():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    b[:300] = a[:300]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0  # one class all along: full agreement
    assert cohen_kappa([1, 1, 1], [0, 0, 0]) == 0.0


def test_the_signal_fires_on_identical_consecutive_predictions():
    signal = StabilizingPredictions(threshold=0.99, window=3, step=10)
    predictions = np.random.default_rng(1).integers(0, 3, 2000)
    fired = [signal.update(predictions, labeled).fired for labeled in range(10, 60, 10)]
    # the first model has nothing to compare with; three comparisons later the mean kappa is 1
    assert fired == [False, False, False, True, True]
    final = signal.signal()
    assert final.value == 1.0 and final.first_fired_at == 40 and "stopped changing" in final.why


def test_the_signal_stays_quiet_while_predictions_keep_changing():
    rng = np.random.default_rng(2)
    signal = StabilizingPredictions(threshold=0.99, window=3, step=10)
    base = rng.integers(0, 3, 2000)
    for labeled in range(10, 510, 10):
        changed = base.copy()
        flip = rng.choice(2000, 100, replace=False)  # 5% of the stop set changes at every update
        changed[flip] = (changed[flip] + 1) % 3
        result = signal.update(changed, labeled)
        base = changed
        assert not result.fired
    assert result.value is not None and result.value < 0.95 and result.first_fired_at is None


def test_updates_closer_than_the_step_are_not_compared():
    signal = StabilizingPredictions(step=10)
    same = np.zeros(50, np.int64)
    for labeled in (10, 11, 12, 15, 19, 20, 25, 30):  # a fast update after every annotation
        signal.update(same, labeled)
    assert [c.labeled for c in signal.history] == [10, 20, 30]


def test_the_state_survives_json_and_carries_on_identically():
    rng = np.random.default_rng(3)
    predictions = [rng.integers(0, 2, 300) for _ in range(6)]
    straight = StabilizingPredictions(threshold=0.5)
    resumed = StabilizingPredictions(threshold=0.5)
    for i, p in enumerate(predictions):
        expected = straight.update(p, 10 * (i + 1))
        resumed = StabilizingPredictions.from_dict(json.loads(json.dumps(resumed.to_dict())))
        got = resumed.update(p, 10 * (i + 1))
        assert got == expected
    assert json.loads(json.dumps(got.to_dict()))["history"][1]["kappa"] == pytest.approx(got.history[1].kappa)


def test_multi_label_predictions_compare_every_decision_and_survive_json():
    signal = StabilizingPredictions(window=1, threshold=0.99)
    rows = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    signal.update(rows, 10)
    signal = StabilizingPredictions.from_dict(json.loads(json.dumps(signal.to_dict())))
    assert signal.update(rows, 20).fired


def test_a_new_stop_set_starts_the_history_over():
    signal = StabilizingPredictions(window=1)
    signal.update(np.zeros(10, np.int64), 10)
    signal.update(np.zeros(10, np.int64), 20)
    assert signal.signal().fired
    signal.update(np.zeros(12, np.int64), 30)
    assert not signal.signal().fired and len(signal.history) == 1


def test_other_rules_replay_over_the_same_history():
    history = [Comparison(10, None, None, 0.9), Comparison(20, 0.8, 0.1, 0.7), Comparison(30, 0.95, 0.03, 0.5),
               Comparison(40, 0.99, 0.01, 0.4)]
    assert first_firing(history, 0.9, "kappa", window=2) == 40
    assert first_firing(history, 0.05, "changed", window=1) == 30
    assert first_firing(history, 0.6, "uncertainty", window=1) == 30
    assert first_firing(history, 0.999, "kappa", window=1) is None


def test_the_stop_set_is_a_seeded_sample_of_the_pool():
    assert stop_set(100, 2000).tolist() == list(range(100))
    a, b = stop_set(10000, 2000, seed=4), stop_set(10000, 2000, seed=4)
    assert (a == b).all() and len(np.unique(a)) == 2000 and (np.diff(a) > 0).all()
