"""Tagging's cold start: the first sentences to tag are typical ones rich in name-like words (the
shape bits an uncased encoder cannot see), never sentences without words."""
from __future__ import annotations

import numpy as np

from backend.engine.acquisition.cold_start import (
    TAGGING_COLD_START_LABELS,
    name_like_counts,
    sentence_means,
    tagging_typical_order,
)
from backend.engine.proxy import FEATURE_DTYPE
from backend.engine.word_features import WordFeatures, offsets_of, sentence_shapes


def pool(sentences: list[list[str]], topics: list[int], dim: int = 16, seed: int = 0) -> WordFeatures:
    """Word features whose vectors sit near their sentence's topic centre, shapes from the words."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(topics) + 1, dim)) * 3
    rows = [centres[t] + rng.normal(0, 0.3, (len(s), dim)) for s, t in zip(sentences, topics, strict=True)]
    matrix = np.concatenate(rows) if rows else np.zeros((0, dim))
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
    shapes = np.concatenate([sentence_shapes(s) for s in sentences]) if rows else np.zeros(0, np.uint8)
    return WordFeatures(matrix.astype(FEATURE_DTYPE), shapes, offsets_of([len(s) for s in sentences]))


PLAIN = ["we", "went", "out", "to", "the", "shop", "and", "it", "was", "fine"]
NAMED = ["Then", "we", "met", "Alice", "at", "the", "NASA", "shop", "in", "Paris"]  # three name-like words


def mixed_pool(n: int = 120, seed: int = 0) -> tuple[WordFeatures, np.ndarray]:
    """Every third sentence rich in names, the rest plain; four topics; a few without words."""
    rng = np.random.default_rng(seed)
    sentences, topics, named = [], [], []
    for i in range(n):
        rich = i % 3 == 0
        words = list(rng.choice(NAMED if rich else PLAIN, size=int(rng.integers(5, 12))))
        if rich:
            words[1:3] = ["Alice", "NASA"]
        words[0] = words[0].capitalize() if rng.random() < 0.5 else words[0]  # sentence-initial: not a name cue
        sentences.append([] if i % 17 == 5 else words)
        topics.append(i % 4)
        named.append(rich and i % 17 != 5)
    return pool(sentences, topics, seed=seed), np.asarray(named)


def test_name_like_words_are_capitalised_inside_the_sentence_or_all_caps():
    sentences = [["Alice", "met", "Bob", "at", "NASA"], ["the", "end"], [], ["so", "I", "saw", "IBM"]]
    features = pool(sentences, [0, 0, 0, 0])
    # "Alice" starts the sentence; "Bob" and "NASA" count; so does a mid-sentence "I" (capitalised)
    assert name_like_counts(features).tolist() == [2, 0, 0, 2]


def test_sentence_means_average_each_sentences_word_vectors():
    features = pool([["a", "b", "c"], [], ["d"]], [0, 1, 2])
    means = sentence_means(features, np.array([2, 1, 0]))
    matrix = features.matrix.astype(np.float32)
    np.testing.assert_allclose(means[0], matrix[3], atol=1e-6)
    np.testing.assert_allclose(means[1], 0.0)
    np.testing.assert_allclose(means[2], matrix[:3].mean(axis=0), atol=1e-6)


def test_the_cold_start_picks_name_rich_sentences_never_empty_ones():
    features, named = mixed_pool()
    order = tagging_typical_order(features, k=12, seed=0)
    assert len(order) == 12 and len(set(order.tolist())) == 12
    assert (features.lengths[order] > 0).all()
    assert named[order].all()  # a third of the pool is name-rich: every pick comes from it
    assert name_like_counts(features)[order].min() >= np.median(name_like_counts(features))


def test_the_cold_start_is_deterministic_per_seed():
    features, _ = mixed_pool(seed=1)
    np.testing.assert_array_equal(tagging_typical_order(features, 10, seed=3), tagging_typical_order(features, 10, 3))


def test_k_larger_than_the_pool_gives_each_sentence_with_words_once():
    features, _ = mixed_pool(n=30, seed=2)
    order = tagging_typical_order(features, k=100, seed=0)
    with_words = np.flatnonzero(features.lengths > 0)
    assert sorted(order.tolist()) == with_words.tolist()
    assert tagging_typical_order(features, k=0).size == 0
    assert tagging_typical_order(WordFeatures.empty(16)).size == 0
    only_empty = WordFeatures(np.zeros((0, 16), FEATURE_DTYPE), np.zeros(0, np.uint8), np.zeros(4, np.int64))
    assert tagging_typical_order(only_empty, k=5).size == 0
    assert TAGGING_COLD_START_LABELS > 0
