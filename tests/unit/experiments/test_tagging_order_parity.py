"""bench-labels' tagging curve measures the order that serves: its proxy-uncertainty sentences are
the ones `order_pool` puts first over a `TokenScorer`'s MNLP scores, after the cold start's
`tagging_typical_order`, re-fitted every query batch; the records carry the words labeled."""
from __future__ import annotations

import numpy as np

from backend.engine.acquisition.cold_start import tagging_typical_order
from backend.engine.acquisition.order import ColdStart, order_pool
from backend.engine.token_head import TokenHead, TokenScorer
from backend.experiments.label_efficiency import (
    RANDOM,
    UNCERTAINTY,
    LabelEfficiency,
    LabelEfficiencyConfig,
    load_corpus,
)
from backend.experiments.label_efficiency.runner import TaggingOrder
from tests.helpers.toy_data import toy_tagging


def write_conll(path, n):
    with open(path, "w") as fh:
        for ex in toy_tagging(n, seed=5):
            fh.writelines(f"{w}\t{t}\n" for w, t in zip(ex.words, ex.tags, strict=True))
            fh.write("\n")
    return path


def test_the_tagging_curve_follows_order_pool_over_token_scores(tmp_path, tiny_bert):
    path = write_conll(tmp_path / "toy.conll", 100)
    config = LabelEfficiencyConfig(corpora=(str(path),), model=str(tiny_bert), pool_size=75, test_size=25,
                                   seeds=(0,), budgets=(10, 20, 30, 40), finetune_budgets=(20,),
                                   methods=(RANDOM, UNCERTAINTY), tagging_cold_start_labels=15, device="cpu",
                                   cache_dir="")
    bench = LabelEfficiency(config)
    corpus = load_corpus(str(path), config.pool_size, config.test_size)
    bench._encode(corpus)
    words, schema, seed = corpus.pool_words, corpus.pool.schema, 0
    assert words is not None and len(words) == len(corpus.pool)
    permutation = np.random.default_rng(seed).permutation(len(corpus.pool))
    records, order = bench.tagging_curves(corpus, seed, permutation)

    # the same steps, straight through the engine: cold start, then MNLP via order_pool
    typical = tagging_typical_order(words, 15, seed)
    cold_start = ColdStart(len(typical), typical)
    ordering = TaggingOrder(words, cold_start, seed)  # bench-labels' own step, on a pool below UPS_MIN_WORDS
    expected: list[int] = []
    labeled = np.zeros(len(words), bool)
    head = None
    phases = []
    for b in bench.grid(len(corpus.pool)):
        while len(expected) < b:
            scores = TokenScorer(head).score_pool(words) if head is not None else None
            step = order_pool(scores, labeled, b - len(expected), int(labeled.sum()), cold_start)
            assert step.top.tolist() == ordering.next(head, labeled, b - len(expected)).tolist()
            phases.append(step.phase)
            expected.extend(int(i) for i in step.top)
            labeled[step.top] = True
        head = TokenHead(schema, seed).fit(words.take(np.array(expected)),
                                           [corpus.pool.examples[i].tags for i in expected])
    assert order.tolist() == expected
    assert set(order[:15].tolist()) == set(typical.tolist())  # the cold start's sentences first
    assert "typical" in phases and "uncertainty" in phases

    # every record: span F1 and the words labeled, for random's prefix and the order's
    lengths = words.lengths
    for r in records:
        rows = permutation[: r.labeled] if r.method == RANDOM else order[: r.labeled]
        assert r.detail["tokens"] == int(lengths[rows].sum())
        assert 0.0 <= r.metrics["main"] <= 1.0 and "span_f1" in r.metrics
        if r.method == UNCERTAINTY and r.labeled < len(order):  # the pre-annotations of the next batch
            assert 0.0 <= r.detail["shown_precision"] <= 1.0 and 0.0 <= r.detail["shown_recall"] <= 1.0
            assert r.detail["shown_gold_spans"] >= 0
    assert {r.method for r in records} == {RANDOM, UNCERTAINTY}


def test_forced_ups_rescores_a_draw_over_the_last_heads_scores_as_the_fast_update(tmp_path, tiny_bert):
    """`tagging_ups_min_words` 0: every head after the first re-scores UPS's draw (a full re-score
    every FULL_RESCORE_EVERY-th), through the fast update's `score_update`; the records say how
    many, and the order still labels each sentence once, cold start first. By default (a pool
    below UPS_MIN_WORDS) every sentence is scored, as the parity test above checks."""
    path = write_conll(tmp_path / "toy.conll", 140)
    config = LabelEfficiencyConfig(corpora=(str(path),), model=str(tiny_bert), pool_size=120, test_size=20,
                                   seeds=(0,), budgets=(10, 60, 110), finetune_budgets=(10,),
                                   methods=(RANDOM, UNCERTAINTY), tagging_cold_start_labels=10,
                                   tagging_ups_min_words=0, device="cpu", cache_dir="")
    bench = LabelEfficiency(config)
    corpus = load_corpus(str(path), config.pool_size, config.test_size)
    bench._encode(corpus)
    permutation = np.random.default_rng(0).permutation(len(corpus.pool))
    records, order = bench.tagging_curves(corpus, 0, permutation)
    assert len(set(order.tolist())) == len(order) == 110
    rescored = [r.detail["rescored"] for r in records if r.method == UNCERTAINTY]
    assert len(rescored) == len(bench.grid(len(corpus.pool))) == 11
    assert rescored[0] is None and rescored[10] is None, "no stale scores yet; the periodic full re-score"
    drawn = [n for n in rescored[1:10] if n is not None]
    assert len(drawn) == 9 and all(0 < n < len(corpus.pool) for n in drawn), rescored


def test_word_features_are_encoded_once_per_corpus_and_read_back_from_the_cache(tmp_path, tiny_bert):
    path = write_conll(tmp_path / "toy.conll", 40)
    config = LabelEfficiencyConfig(corpora=(str(path),), model=str(tiny_bert), pool_size=30, test_size=10,
                                   seeds=(0,), budgets=(10,), finetune_budgets=(10,), methods=(RANDOM,),
                                   device="cpu", cache_dir=str(tmp_path / "cache"))
    first, second = (load_corpus(str(path), 30, 10) for _ in range(2))
    LabelEfficiency(config)._encode(first)
    assert len(list((tmp_path / "cache" / "features").glob("*-words-*.npz"))) == 1
    LabelEfficiency(config)._encode(second)
    assert first.pool_words is not None and second.pool_words is not None and second.test_words is not None
    assert first.features_key == second.features_key
    np.testing.assert_array_equal(first.pool_words.matrix, second.pool_words.matrix)
    np.testing.assert_array_equal(first.pool_words.shapes, second.pool_words.shapes)
    np.testing.assert_array_equal(first.pool_words.offsets, second.pool_words.offsets)
    assert len(second.test_words) == 10
