import numpy as np
import pytest

from backend.engine.acquisition.sampling import UPS, FullPool, PoolScorer, RandomSubsample
from backend.engine.acquisition.strategies import LeastConfidence
from backend.engine.errors import EmptyPoolError
from backend.engine.types import Predictions, TaskType


def test_top_gamma_share_is_always_kept():
    sampler = UPS(gamma=0.1, temperature=0.01, full_rescore_iterations=())
    uncertainty = np.random.default_rng(0).random(1000)
    top = np.argsort(-uncertainty)[:100]
    for seed in range(50):
        mask = sampler.select(uncertainty, iteration=3, rng=np.random.default_rng(seed))
        assert mask[top].all()


def test_expected_share_about_eleven_percent_over_many_seeds():
    sampler = UPS(gamma=0.1, temperature=0.01, full_rescore_iterations=())
    rng = np.random.default_rng(1)
    shares = [sampler.select(rng.random(5000), 7, rng).mean() for _ in range(100)]
    assert np.mean(shares) == pytest.approx(0.11, abs=0.005)
    assert sampler.expected_share(5000) == pytest.approx(0.11, abs=0.002)


def test_keep_probability_follows_the_formula():
    sampler = UPS(gamma=0.2, temperature=0.05, full_rescore_iterations=())
    uncertainty = np.linspace(1, 0, 11)  # already sorted descending: rank i -> r = i / 11
    probs = sampler.keep_probabilities(uncertainty)
    ranks = np.arange(11) / 11
    np.testing.assert_allclose(probs, np.exp(-np.maximum(0, ranks - 0.2) / 0.05))


def test_never_scored_tasks_are_always_kept():
    sampler = UPS(full_rescore_iterations=())
    uncertainty = np.random.default_rng(0).random(500)
    uncertainty[[3, 250, 499]] = np.nan
    mask = sampler.select(uncertainty, 4, np.random.default_rng(0))
    assert mask[[3, 250, 499]].all()
    assert mask.mean() < 0.2


def test_full_rescore_schedule_and_first_scoring():
    sampler = UPS()  # default schedule 1, 2, 5, 9
    stale = np.random.default_rng(0).random(300)
    rng = np.random.default_rng(0)
    for it in (1, 2, 5, 9):
        assert sampler.select(stale, it, rng).all()
    for it in (3, 4, 6, 10):
        assert sampler.select(stale, it, rng).mean() < 0.2
    assert sampler.select(np.full(10, np.nan), 4, rng).all()


def test_sampling_is_seeded():
    sampler = UPS(full_rescore_iterations=())
    stale = np.random.default_rng(0).random(1000)
    a = sampler.select(stale, 3, np.random.default_rng(42))
    b = sampler.select(stale, 3, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)


def test_random_subsample_baseline_size_and_full_pool():
    stale = np.random.default_rng(0).random(1000)
    mask = RandomSubsample(0.11, full_rescore_iterations=()).select(stale, 3, np.random.default_rng(0))
    assert mask.sum() == 110
    assert FullPool().select(stale, 3, np.random.default_rng(0)).all()


def test_empty_pool_and_bad_parameters():
    with pytest.raises(EmptyPoolError):
        UPS().select(np.array([]), 3, np.random.default_rng(0))
    with pytest.raises(ValueError):
        UPS(gamma=1.5)
    with pytest.raises(ValueError):
        UPS(temperature=0)


def test_scorer_rescores_subset_keeps_stale_and_queries_fresh_only():
    n = 200
    rng = np.random.default_rng(0)
    stale_u = rng.random(n)
    stale_c = 1 - stale_u
    called = {}

    def predict(indices):
        called["indices"] = indices
        probs = np.tile([0.5, 0.5], (len(indices), 1))  # every re-scored task becomes maximally uncertain
        return Predictions(TaskType.CLASSIFICATION, probs)

    scorer = PoolScorer(LeastConfidence(), UPS(full_rescore_iterations=()), seed=0)
    result = scorer.score_pool(stale_u, stale_c, iteration=3, predict=predict)
    fresh = result.rescored
    np.testing.assert_array_equal(np.flatnonzero(fresh), called["indices"])
    np.testing.assert_allclose(result.uncertainty[fresh], 0.5)
    np.testing.assert_array_equal(result.uncertainty[~fresh], stale_u[~fresh])
    np.testing.assert_array_equal(result.confidence[~fresh], stale_c[~fresh])
    query = result.ranked_fresh()[:5]
    assert fresh[query].all()
