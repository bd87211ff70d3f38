"""Tagging's fast path: per-word features from a frozen encoder, the per-word head, valid IOB2
decoding, and MNLP scores through the engine's one ordering (`order_pool`)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from backend.engine.acquisition.order import ColdStart, PoolScores, order_pool
from backend.engine.device import HALF_PRODUCT_DTYPES, fastest_half_product
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.proxy import FEATURE_DTYPE, FeatureEncoder
from backend.engine.token_head import (
    UPS_MIN_WORDS,
    HeadTags,
    TagOutputs,
    TokenHead,
    TokenScorer,
    decode,
    is_valid_iob2,
    mnlp,
    rows_to_rescore,
    viterbi_iob2,
)
from backend.engine.types import LabelSchema, TaskType
from backend.engine.word_features import (
    SHAPE_BITS,
    WordEncoder,
    WordFeatures,
    offsets_of,
    sentence_shapes,
    unpack_shapes,
)
from tests.helpers.toy_data import toy_tagging

SCHEMA = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))
NAMES = SCHEMA.output_names  # O, B-PER, I-PER, B-LOC, I-LOC


def bits(word_shapes: np.ndarray) -> list[set[str]]:
    return [{SHAPE_BITS[i] for i in np.flatnonzero(row)} for row in unpack_shapes(word_shapes)]


# ------------------------------------------------------------------------------- word features
def test_shape_bits_carry_the_casing_an_uncased_encoder_drops():
    shapes = bits(sentence_shapes(["Alice", "NASA", "iPhone", "3rd", "?!", "paris", "McDonald", "I"]))
    assert shapes[0] == {"capitalised", "sentence_initial"}
    assert shapes[1] == {"capitalised", "all_caps"}
    assert shapes[2] == {"inner_capitals"}
    assert shapes[3] == {"has_digit"}
    assert shapes[4] == {"punctuation_only"}
    assert shapes[5] == set()
    assert shapes[6] == {"capitalised", "inner_capitals"}
    assert shapes[7] == {"capitalised"}  # one letter: not "all caps"


def test_a_word_split_into_sub_tokens_gets_one_row_the_mean_of_its_sub_tokens(tiny_bert):
    words = ["bob", "aliceparis", "oslo"]  # the middle word is five word pieces
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    word_ids = encoded.word_ids(0)
    assert word_ids.count(1) > 1
    model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state[0]
    expected = torch.stack([hidden[[k for k, w in enumerate(word_ids) if w == i]].mean(0) for i in range(3)])
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()

    features = WordEncoder(FeatureEncoder(tiny_bert, device="cpu")).encode([words])
    assert features.matrix.dtype == FEATURE_DTYPE and features.matrix.shape == (3, features.dim)
    assert features.offsets.tolist() == [0, 3]
    np.testing.assert_allclose(features.matrix.astype(np.float32), expected, atol=3e-3)


def test_encoding_is_batch_invariant_keeps_input_order_and_empty_sentences(tiny_bert):
    sentences = [["alice", "went", "to", "the", "movie", "in", "paris"], [], ["bob"], ["the", "plot", "oslo"]]
    encoder = WordEncoder(FeatureEncoder(tiny_bert, device="cpu", batch_size=2))
    features = encoder.encode(sentences)
    assert len(features) == 4 and features.lengths.tolist() == [7, 0, 1, 3]
    np.testing.assert_allclose(np.linalg.norm(features.matrix.astype(np.float32), axis=1), 1.0, atol=3e-3)
    for i, sentence in enumerate(sentences):
        alone = encoder.encode([sentence])
        np.testing.assert_allclose(alone.matrix.astype(np.float32), features.sentence(i)[0].astype(np.float32),
                                   atol=3e-3)
    assert len(encoder.encode([])) == 0 and len(encoder.encode([[]])) == 1


def test_words_past_the_encoders_max_length_keep_a_row_with_a_zero_vector(tiny_bert):
    sentence = ["alice"] * 20
    features = WordEncoder(FeatureEncoder(tiny_bert, device="cpu", max_length=8)).encode([sentence])
    assert features.lengths.tolist() == [20]
    seen = features.matrix.astype(np.float32).any(axis=1)
    assert seen[:6].all() and not seen[6:].any()  # 8 tokens: [CLS], six words, [SEP]


def test_projection_stores_fewer_unit_norm_dims_the_same_way_every_time(tiny_bert):
    sentences = [["alice", "went", "to", "paris"], ["bob"]]
    encoder = WordEncoder(FeatureEncoder(tiny_bert, device="cpu"), projection_dim=8)
    features = encoder.encode(sentences)
    assert features.dim == 8 and features.matrix.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(features.matrix.astype(np.float32), axis=1), 1.0, atol=3e-3)
    again = WordEncoder(FeatureEncoder(tiny_bert, device="cpu"), projection_dim=8).encode(sentences)
    np.testing.assert_array_equal(again.matrix, features.matrix)


def test_word_features_take_and_concat_select_whole_sentences():
    lengths = [2, 0, 3, 1]
    offsets = offsets_of(lengths)
    matrix = np.arange(6 * 2, dtype=FEATURE_DTYPE).reshape(6, 2)
    features = WordFeatures(matrix, np.arange(6, dtype=np.uint8), offsets)
    picked = features.take(np.array([2, 1, 0]))
    assert picked.lengths.tolist() == [3, 0, 2]
    assert picked.shapes.tolist() == [2, 3, 4, 0, 1]
    np.testing.assert_array_equal(picked.matrix, matrix[[2, 3, 4, 0, 1]])
    joined = WordFeatures.concat([features, picked])
    assert len(joined) == 7 and joined.lengths.tolist() == lengths + [3, 0, 2]
    assert features.nbytes == matrix.nbytes + 6 + offsets.nbytes
    with pytest.raises(ValueError):
        WordFeatures(matrix, np.zeros(5, np.uint8), offsets)


# ------------------------------------------------------------------------------------ decoding
def valid_sequences(length: int) -> list[tuple[int, ...]]:
    return [seq for seq in itertools.product(range(len(NAMES)), repeat=length)
            if is_valid_iob2([NAMES[t] for t in seq])]


def test_viterbi_is_the_best_valid_sequence_by_brute_force():
    rng = np.random.default_rng(0)
    lengths = [1, 2, 3, 4, 0, 3, 4, 2]
    log_probs = np.log(rng.dirichlet(np.full(len(NAMES), 0.3), sum(lengths))).astype(np.float32)
    offsets = offsets_of(lengths)
    tags = viterbi_iob2(log_probs, offsets)
    for i, n in enumerate(lengths):
        rows = log_probs[offsets[i] : offsets[i + 1]]
        if n == 0:
            continue
        best = max(valid_sequences(n), key=lambda seq: sum(rows[k, t] for k, t in enumerate(seq)))
        got = tuple(int(t) for t in tags[offsets[i] : offsets[i + 1]])
        assert np.isclose(sum(rows[k, t] for k, t in enumerate(got)), sum(rows[k, t] for k, t in enumerate(best)))
        assert is_valid_iob2([NAMES[t] for t in got])


@pytest.mark.parametrize("adversary", ["inside_everywhere", "inside_of_the_other_label", "random_peaked"])
def test_decoding_never_puts_i_x_after_o_or_after_b_y(adversary):
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 30, 200)
    n = int(lengths.sum())
    probs = np.full((n, len(NAMES)), 1e-6)
    if adversary == "inside_everywhere":  # I tags most likely at every word, the first included
        probs[:, [2, 4]] = rng.uniform(0.4, 0.5, (n, 2))
    elif adversary == "inside_of_the_other_label":  # B-PER then I-LOC, over and over
        probs[0::2, 1], probs[1::2, 4] = 0.99, 0.99
    else:  # peaked, with exact zeros (log-probability -inf) among them
        probs = rng.dirichlet(np.full(len(NAMES), 0.05), n)
    with np.errstate(divide="ignore"):
        log_probs = np.log(probs / probs.sum(1, keepdims=True)).astype(np.float32)
    outputs = decode(log_probs, offsets_of(lengths), NAMES)
    assert all(is_valid_iob2(sentence) for sentence in outputs.all_tags())


def test_mnlp_is_the_mean_negative_log_probability_of_the_decoded_tags():
    log_probs = np.log(np.array([[0.5, 0.5, 0, 0, 0], [0.9, 0.1, 0, 0, 0], [0.2, 0.8, 0, 0, 0]]) + 1e-12)
    offsets = offsets_of([2, 0, 1])
    scores = mnlp(log_probs.astype(np.float32), np.array([0, 0, 1]), offsets)
    np.testing.assert_allclose(scores, [-(np.log(0.5) + np.log(0.9)) / 2, 0.0, -np.log(0.8)], rtol=1e-5)


# ---------------------------------------------------------------------------------------- head
@pytest.fixture(scope="module")
def toy(tiny_bert):
    examples = toy_tagging(80, seed=3)
    features = WordEncoder(FeatureEncoder(tiny_bert, device="cpu")).encode([e.words for e in examples])
    return examples, features


def test_head_fits_and_predicts_a_toy_tagging_set(toy):
    examples, features = toy
    train = np.arange(60)
    head = TokenHead(SCHEMA).fit(features.take(train), [examples[i].tags for i in train])
    outputs = head.predict(features)
    assert outputs.tag_probs.shape == outputs.tags.shape == (len(features.matrix),)
    assert ((outputs.tag_probs > 0) & (outputs.tag_probs <= 1)).all()
    predicted = outputs.all_tags()
    gold = [e.tags for e in examples]
    accuracy = np.mean([p == g for ps, gs in zip(predicted, gold, strict=True) for p, g in zip(ps, gs, strict=True)])
    assert accuracy >= 0.9
    assert all(is_valid_iob2(sentence) for sentence in predicted)


def test_every_product_dtype_gives_the_float32_log_probabilities_and_the_same_tags(toy):
    """The scoring product runs in the CPU's fastest dtype (a probe decides): each candidate must
    give what exact float32 arithmetic gives, up to half precision."""
    examples, features = toy
    head = TokenHead(SCHEMA).fit(features.take(np.arange(60)), [examples[i].tags for i in range(60)])
    chosen = fastest_half_product(features.dim, len(head.names), torch.get_num_threads())
    assert chosen in HALF_PRODUCT_DTYPES
    assert fastest_half_product(features.dim, len(head.names), torch.get_num_threads()) is chosen  # probed once
    x = head.inputs(features, np.arange(len(features.matrix))).astype(np.float64)
    logits = x @ np.asarray(head.coef, np.float64).T + np.asarray(head.intercept, np.float64)
    exact = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    for dtype in HALF_PRODUCT_DTYPES:
        got = head.log_proba(features, product_dtype=dtype)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exact, rtol=0.02, atol=0.05)
        assert (got.argmax(1) == exact.argmax(1)).mean() > 0.99


def test_head_with_only_o_seen_predicts_o_and_rejects_bad_labels(toy):
    examples, features = toy
    rows = np.array([0, 1])
    all_o = [["O"] * len(examples[i].words) for i in rows]
    head = TokenHead(SCHEMA).fit(features.take(rows), all_o)
    assert {t for sentence in head.predict(features).all_tags() for t in sentence} == {"O"}
    with pytest.raises(ValueError, match="outside the schema"):
        TokenHead(SCHEMA).fit(features.take(rows), [["B-ORG"] * len(examples[i].words) for i in rows])
    with pytest.raises(ValueError, match="differ"):
        TokenHead(SCHEMA).fit(features.take(rows), all_o[:1])
    with pytest.raises(NotEnoughLabelsError):
        TokenHead(SCHEMA).fit(WordFeatures.empty(features.dim), [])
    with pytest.raises(ValueError):
        TokenHead(LabelSchema(TaskType.CLASSIFICATION, ("a", "b")))


# ------------------------------------------------------------------------------------- ordering
def test_token_scorer_orders_the_pool_through_order_pool(toy):
    examples, features = toy
    two_empty = WordFeatures(features.matrix[:0], features.shapes[:0], np.zeros(3, np.int64))
    pool = WordFeatures.concat([features, two_empty])  # 80 sentences, then two without words
    labeled = np.zeros(len(pool), bool)
    labeled[:10] = True
    head = TokenHead(SCHEMA).fit(pool.take(np.arange(10)), [examples[i].tags for i in range(10)])
    scores = TokenScorer(head).score_pool(pool)
    assert len(scores) == len(pool) == 82 and len(scores.outputs) == 82
    assert scores.empty.tolist() == [False] * 80 + [True, True]
    np.testing.assert_allclose(scores.confidence, np.exp(-scores.uncertainty), rtol=1e-5)
    assert (scores.confidence[80:] == 1.0).all() and (scores.uncertainty[80:] == 0.0).all()

    order = order_pool(scores, labeled, 5, n_labeled=10)
    assert order.phase == "uncertainty" and len(order.top) == 5
    assert not labeled[order.top].any() and not scores.empty[order.top].any()
    unlabeled = np.flatnonzero(~labeled[:80])
    assert scores.uncertainty[order.top].min() >= np.sort(scores.uncertainty[unlabeled])[-5] - 1e-7

    typical = np.array([60, 3, 40, 12, 7, 55])
    cold = order_pool(scores, labeled, 3, n_labeled=10, cold_start=ColdStart(30, typical))
    assert cold.phase == "typical" and set(cold.top.tolist()) == {60, 40, 12}

    part = scores.take(order.top)
    assert isinstance(part, PoolScores) and isinstance(part.outputs, HeadTags)
    shown, everything = part.outputs.decode(), scores.outputs.decode()
    assert isinstance(shown, TagOutputs)
    assert [shown.sentence_tags(k) for k in range(5)] == [everything.sentence_tags(int(i)) for i in order.top]
    assert everything.all_tags() == head.predict(pool).all_tags()


def test_ups_rescores_a_subsample_of_large_pools_and_keeps_the_stale_scores(toy):
    """Fast updates on pools of at least UPS_MIN_WORDS words re-score UPS's draw over the last
    version's scores (the top share by stale uncertainty, never-scored sentences always), keep the
    stale scores elsewhere, and still decode any sentence they show; small pools, updates without
    stale scores and every FULL_RESCORE_EVERY-th update score everything."""
    from backend.engine.acquisition.sampling import UPS

    examples, features = toy
    big = WordFeatures.concat([features] * (UPS_MIN_WORDS // int(features.offsets[-1]) + 1))
    head = TokenHead(SCHEMA).fit(features.take(np.arange(20)), [examples[i].tags for i in range(20)])
    full = TokenScorer(head).score_pool(big)
    stale_u = full.uncertainty.astype(np.float64) + np.linspace(0, 1e-3, len(big))  # distinct ranks
    stale_u[:3] = np.nan  # created after the last version: never scored
    stale_c = np.exp(-stale_u).astype(np.float32)
    rng, sampler = np.random.default_rng(0), UPS(0.1, 0.01, full_rescore_iterations=())

    assert rows_to_rescore(features, stale_u[: len(features)], 1, sampler, rng) is None  # small pool
    assert rows_to_rescore(big, None, 1, sampler, rng) is None  # nothing stale
    assert rows_to_rescore(big, stale_u, 10, sampler, rng) is None  # the periodic full re-score
    rows = rows_to_rescore(big, stale_u, 1, sampler, rng)
    assert rows is not None and {0, 1, 2} <= set(rows.tolist())
    top = np.argsort(-np.nan_to_num(stale_u, nan=-1))[: int(0.1 * len(big))]
    assert set(top.tolist()) <= set(rows.tolist()) and 0.1 < len(rows) / len(big) < 0.2

    other = TokenHead(SCHEMA, seed=1, balance=0.0).fit(features.take(np.arange(40)),
                                                       [examples[i].tags for i in range(40)])
    scores = TokenScorer(other).rescore(big, rows, stale_c, stale_u.astype(np.float32))
    fresh = TokenScorer(other).score_pool(big)
    kept = np.setdiff1d(np.arange(len(big)), rows)
    np.testing.assert_allclose(scores.uncertainty[rows], fresh.uncertainty[rows], rtol=1e-5)
    np.testing.assert_array_equal(scores.uncertainty[kept], stale_u.astype(np.float32)[kept])
    shown = scores.outputs.take(kept[:3]).decode()  # a stale row shown (an audit): decoded by the new head
    assert [shown.sentence_tags(k) for k in range(3)] == [fresh.outputs.take(kept[:3]).decode().sentence_tags(k)
                                                          for k in range(3)]


def test_classification_pool_scores_still_take_array_rows():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], np.float32)
    scores = PoolScores(probs.max(1), 1 - probs.max(1), np.zeros(3, bool), probs)
    part = scores.take(np.array([2, 0]))
    np.testing.assert_array_equal(part.outputs, probs[[2, 0]])
    np.testing.assert_array_equal(part.confidence, probs[[2, 0]].max(1))


def test_cross_validation_save_and_load(toy, tmp_path):
    examples, features = toy
    rows = np.arange(40)
    tags = [examples[i].tags for i in rows]
    head = TokenHead(SCHEMA, seed=1).fit(features.take(rows), tags)
    estimate = head.cross_validate(features.take(rows), tags)
    assert estimate.folds == 5 and estimate.sentences == 40 and estimate.f1 is not None and estimate.f1 > 0.5
    assert TokenHead(SCHEMA).cross_validate(features.take(rows[:5]), tags[:5]).f1 is None  # too few to split
    head.save(tmp_path)
    again = TokenHead.load(tmp_path)
    assert again.schema == head.schema and again.balance == head.balance
    np.testing.assert_array_equal(again.log_proba(features), head.log_proba(features))
