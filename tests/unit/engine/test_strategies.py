import json
import math

import numpy as np
import pytest

from backend.engine.acquisition.strategies import (
    MNLP,
    STRATEGIES,
    Entropy,
    LeastConfidence,
    MahalanobisDistance,
    Margin,
    RandomBaseline,
    load_strategy,
    make_strategy,
    save_strategy,
)
from backend.engine.types import Predictions, TaskType

CLS = TaskType.CLASSIFICATION
TAG = TaskType.TAGGING


def cls_preds(rows, multi_label=False, embeddings=None):
    return Predictions(CLS, np.array(rows, dtype=np.float32), embeddings, multi_label)


def test_least_confidence_matches_hand_computed_values():
    scores = LeastConfidence().score(cls_preds([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    np.testing.assert_allclose(scores.uncertainty, [0.3, 0.6], atol=1e-6)
    np.testing.assert_allclose(scores.confidence, [0.7, 0.4], atol=1e-6)


def test_least_confidence_multi_label_treats_each_label_as_binary():
    scores = LeastConfidence().score(cls_preds([[0.9, 0.2], [0.5, 0.5]], multi_label=True))
    np.testing.assert_allclose(scores.confidence, [(0.9 + 0.8) / 2, 0.5], atol=1e-6)


def test_margin_and_entropy_hand_computed():
    preds = cls_preds([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    margin = Margin().score(preds)
    np.testing.assert_allclose(margin.uncertainty, [1 - 0.5, 1.0], atol=1e-6)
    entropy = Entropy().score(preds)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    np.testing.assert_allclose(entropy.uncertainty, [h, 1.0], atol=1e-5)
    np.testing.assert_allclose(entropy.confidence, [1 - h, 0.0], atol=1e-5)


def test_mnlp_averages_log_of_top_tag_probability_per_word():
    probs = [np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1]]), np.array([[0.2, 0.7, 0.1]]), np.zeros((0, 3))]
    scores = MNLP().score(Predictions(TAG, probs))
    expected0 = -(math.log(0.9) + math.log(0.5)) / 2
    np.testing.assert_allclose(scores.uncertainty, [expected0, -math.log(0.7), 0.0], atol=1e-6)
    np.testing.assert_allclose(scores.confidence, np.exp(-scores.uncertainty))
    # a longer confident sentence is not penalised for its length (the point of normalising)
    long_sure = Predictions(TAG, [np.tile([[0.9, 0.05, 0.05]], (30, 1))])
    assert MNLP().score(long_sure).uncertainty[0] == pytest.approx(-math.log(0.9), abs=1e-6)


def test_mnlp_refuses_classification():
    with pytest.raises(ValueError, match="supports tagging"):
        MNLP().score(cls_preds([[0.5, 0.5]]))


def test_mahalanobis_ranks_far_points_as_uncertain_and_survives_singular_covariance():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(0, 1, (5, 16)), rng.normal(5, 1, (5, 16))])  # n < dim: singular
    labels = np.array([0] * 5 + [1] * 5)
    strategy = MahalanobisDistance().fit(train, labels)
    pool = np.stack([np.zeros(16), np.full(16, 5.0), np.full(16, 40.0)])
    scores = strategy.score(Predictions(CLS, np.full((3, 2), 0.5), pool))
    assert np.all(np.isfinite(scores.uncertainty))
    assert scores.uncertainty[2] > 10 * max(scores.uncertainty[0], scores.uncertainty[1])
    assert np.all((scores.confidence > 0) & (scores.confidence <= 1))
    assert scores.confidence[2] < scores.confidence[0]


def test_mahalanobis_requires_fit_and_embeddings():
    with pytest.raises(RuntimeError, match="fit"):
        MahalanobisDistance().score(cls_preds([[0.5, 0.5]], embeddings=np.zeros((1, 4))))
    fitted = MahalanobisDistance().fit(np.eye(4), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="embeddings"):
        fitted.score(cls_preds([[0.5, 0.5]]))


def test_random_is_seeded_and_reports_model_confidence():
    preds = cls_preds([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    a, b = RandomBaseline(3).score(preds), RandomBaseline(3).score(preds)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)
    np.testing.assert_allclose(a.confidence, [0.9, 0.6, 0.5], atol=1e-6)


def test_tagging_variants_average_over_words():
    probs = [np.array([[0.8, 0.2], [0.6, 0.4]])]
    scores = LeastConfidence().score(Predictions(TAG, probs))
    np.testing.assert_allclose(scores.confidence, [0.7], atol=1e-6)


def test_make_strategy_auto_and_errors():
    assert make_strategy("auto", CLS).name == "least_confidence"
    assert make_strategy("auto", TAG).name == "mnlp"
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        make_strategy("nope", CLS)
    with pytest.raises(ValueError, match="supports classification"):
        make_strategy("mahalanobis", TAG)


# ---------------------------------------------------------------------------------------------
# save_strategy / load_strategy: JSON + npz, never pickle


def _fitted_mahalanobis():
    rng = np.random.default_rng(1)
    return MahalanobisDistance(shrinkage=0.2).fit(rng.normal(size=(12, 8)), np.array([0, 1, 2] * 4))


def _round_trip_cases():
    rng = np.random.default_rng(0)
    cls = cls_preds(rng.dirichlet(np.ones(3), size=6), embeddings=rng.normal(size=(6, 8)))
    tag = Predictions(TAG, [rng.dirichlet(np.ones(5), size=n) for n in (3, 1, 0, 7)])
    used_random = RandomBaseline(5)
    used_random.score(cls)  # a reloaded baseline continues the stream where it was saved
    return [
        ("least_confidence", LeastConfidence(), cls),
        ("margin", Margin(), tag),
        ("entropy", Entropy(), cls),
        ("mnlp", MNLP(), tag),
        ("mahalanobis", _fitted_mahalanobis(), cls),
        ("random", used_random, cls),
    ]


@pytest.mark.parametrize(
    ("name", "strategy", "preds"), _round_trip_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_save_load_round_trip_gives_identical_scores(tmp_path, name, strategy, preds):
    save_strategy(strategy, tmp_path)
    loaded = load_strategy(tmp_path)
    assert type(loaded) is type(strategy) and loaded.name == name
    assert json.loads((tmp_path / "strategy.json").read_text())["name"] == name
    assert (tmp_path / "strategy.npz").exists() == (name == "mahalanobis")
    before, after = strategy.score(preds), loaded.score(preds)
    np.testing.assert_array_equal(before.uncertainty, after.uncertainty)
    np.testing.assert_array_equal(before.confidence, after.confidence)


def test_every_strategy_is_covered_by_the_round_trip():
    assert {name for name, _, _ in _round_trip_cases()} == set(STRATEGIES)


def test_unfitted_mahalanobis_round_trips_and_stale_npz_is_removed(tmp_path):
    save_strategy(_fitted_mahalanobis(), tmp_path)
    save_strategy(MahalanobisDistance(shrinkage=0.3), tmp_path)
    assert not (tmp_path / "strategy.npz").exists()
    loaded = load_strategy(tmp_path)
    assert loaded.shrinkage == 0.3
    with pytest.raises(RuntimeError, match="fit"):
        loaded.score(cls_preds([[0.5, 0.5]], embeddings=np.zeros((1, 8))))


def test_load_strategy_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="strategy.json"):
        load_strategy(tmp_path)
    (tmp_path / "strategy.json").write_text('{"name": "nope"}')
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        load_strategy(tmp_path)
    for bad in ("{not json", "[1, 2]", '{"shrinkage": 0.1}'):
        (tmp_path / "strategy.json").write_text(bad)
        with pytest.raises(ValueError, match="strategy.json"):
            load_strategy(tmp_path)
    (tmp_path / "strategy.json").write_text('{"name": "margin", "shrinkage": 0.1}')
    with pytest.raises(ValueError, match="cannot rebuild strategy 'margin'"):
        load_strategy(tmp_path)
    (tmp_path / "strategy.json").write_text('{"name": "mahalanobis", "shrinkage": 5}')
    with pytest.raises(ValueError, match="shrinkage"):
        load_strategy(tmp_path)


def test_load_strategy_rejects_bad_and_pickled_arrays(tmp_path):
    save_strategy(_fitted_mahalanobis(), tmp_path)
    np.savez(tmp_path / "strategy.npz", centroids=np.zeros((3, 8)), precision=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="do not match"):
        load_strategy(tmp_path)
    np.savez(tmp_path / "strategy.npz", centroids=np.array([{"a": 1}], dtype=object), precision=np.eye(2))
    with pytest.raises(ValueError, match="not a readable array file"):
        load_strategy(tmp_path)
    (tmp_path / "strategy.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="strategy.npz"):
        load_strategy(tmp_path)
