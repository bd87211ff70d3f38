"""Cold start: the first labels go to the most typical texts, one per cluster, biggest first."""
from __future__ import annotations

import numpy as np

from backend.engine.acquisition.cold_start import typical_order


def clusters(sizes: list[int], dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight unit-norm clusters around random centres: (features, cluster of each row, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim)) * 5
    rows = np.concatenate([c + rng.normal(0, 0.1, (n, dim)) for c, n in zip(centres, sizes)])
    which = np.repeat(np.arange(len(sizes)), sizes)
    return rows.astype(np.float32), which, centres


def test_one_text_per_cluster_nearest_its_centre_biggest_cluster_first():
    x, which, centres = clusters([50, 10, 30])
    order = typical_order(x, k=3, seed=0)
    assert which[order].tolist() == [0, 2, 1]
    for row in order:  # the most central member of its cluster
        members = np.flatnonzero(which == which[row])
        centre = x[members].mean(axis=0)
        assert row == members[np.argmin(np.linalg.norm(x[members] - centre, axis=1))]


def test_empty_texts_are_never_picked_and_small_pools_give_what_they_have():
    x, _, _ = clusters([3, 3])
    x[[0, 4]] = 0.0  # texts without tokens are stored as zero rows
    order = typical_order(x, k=30, seed=1)
    assert len(order) == 4 and not set(order.tolist()) & {0, 4} and len(set(order.tolist())) == 4
    assert typical_order(np.zeros((0, 16), np.float32)).size == 0
    assert typical_order(np.zeros((5, 16), np.float32)).size == 0


def test_the_same_seed_gives_the_same_order():
    x, _, _ = clusters([20, 20, 20, 20], seed=2)
    np.testing.assert_array_equal(typical_order(x, k=4, seed=3), typical_order(x, k=4, seed=3))


def test_repeated_texts_give_no_more_picks_than_distinct_ones():
    x, _, _ = clusters([1, 1, 1])
    repeated = np.repeat(x, 4, axis=0)  # three distinct texts, four copies each
    order = typical_order(repeated, k=30, seed=0)
    assert len(order) == 3 and len({tuple(repeated[r]) for r in order}) == 3
