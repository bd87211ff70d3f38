"""The quality estimate a project manager reads: its intervals hold the truth about as often as
they claim, the audit tasks are a uniform draw, and span F1 matches the metric the project reports."""
import json

import numpy as np
import pytest

from backend.engine.metrics import strict_span_f1
from backend.engine.quality import (
    AUDIT,
    AUDIT_HELDOUT_PPI,
    QualityEstimate,
    audit_accuracy,
    audit_estimate,
    audit_picks,
    audit_span_f1,
    density_ratio_weights,
    expected_accuracy,
    heldout_audit_outcomes,
    importance_weighted_accuracy,
    ppi_accuracy,
    proxy_cv_estimate,
    recent_audits,
    wilson_interval,
)
from backend.engine.types import LabelSchema, TaskType


@pytest.mark.parametrize("p", [0.3, 0.7, 0.92])
@pytest.mark.parametrize("n", [20, 60])
def test_the_wilson_interval_covers_the_true_accuracy_at_about_the_nominal_rate(p, n):
    rng = np.random.default_rng(0)
    covered = [audit_accuracy(rng.random(n) < p, confidence=0.9).covers(p) for _ in range(2000)]
    assert 0.85 <= np.mean(covered) <= 0.96


def test_an_audit_estimate_says_what_it_counted():
    estimate = audit_accuracy([True, True, False, True])
    assert estimate.value == 0.75 and estimate.n == 4 and estimate.method == AUDIT
    assert estimate.low < 0.75 < estimate.high and "3 of 4" in estimate.note
    assert QualityEstimate.from_dict(json.loads(json.dumps(estimate.to_dict()))) == estimate


def test_no_audits_yet_is_no_estimate_and_the_widest_interval():
    estimate = audit_accuracy([])
    assert estimate.value is None and (estimate.low, estimate.high) == (0.0, 1.0) and estimate.n == 0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_more_audits_give_a_narrower_interval():
    small, large = wilson_interval(15, 20), wilson_interval(150, 200)
    assert large[1] - large[0] < small[1] - small[0]


def test_span_f1_is_the_projects_strict_span_f1_with_a_bootstrap_interval():
    rng = np.random.default_rng(1)
    gold, predicted = [], []
    for _ in range(60):
        sentence = ["B-PER", "I-PER", "O", "B-LOC", "O"]
        guess = list(sentence)
        if rng.random() < 0.4:
            guess[3] = "O"
        if rng.random() < 0.2:
            guess[1] = "O"
        gold.append(sentence)
        predicted.append(guess)
    estimate = audit_span_f1(gold, predicted, seed=0)
    assert estimate.value == pytest.approx(strict_span_f1(gold, predicted))
    assert estimate.low < estimate.value < estimate.high and estimate.n == 60
    perfect = audit_span_f1(gold, gold)
    assert perfect.value == perfect.high == 1.0 and 0.95 < perfect.low < 1.0, "120 spans do not prove F1 = 1"
    assert audit_span_f1([], []).value is None


def test_span_f1_with_no_true_positive_among_a_few_spans_is_not_certain_of_zero():
    """20 audited tweets, 6 gold spans, none found: every bootstrap resample scores 0, yet the
    model may well find one span in five on the pool."""
    gold = [["B-PER", "O", "O"]] * 6 + [["O", "O", "O"]] * 14
    predicted = [["O", "O", "O"]] * 20
    estimate = audit_span_f1(gold, predicted, seed=0)
    assert estimate.value == estimate.low == 0.0 and 0.2 < estimate.high < 0.6


def test_bootstrap_span_f1_interval_covers_at_about_the_nominal_rate():
    rng = np.random.default_rng(2)
    population_gold = [["B-PER", "O", "B-LOC", "I-LOC"]] * 4000
    population_pred = [["B-PER", "O", "B-LOC", "I-LOC"] if rng.random() < 0.7 else ["B-PER", "O", "O", "O"]
                       for _ in range(4000)]
    truth = strict_span_f1(population_gold, population_pred)
    covered = []
    for seed in range(200):
        rows = np.random.default_rng(seed).integers(0, 4000, 40)
        estimate = audit_span_f1([population_gold[i] for i in rows], [population_pred[i] for i in rows],
                                 resamples=300, seed=seed)
        covered.append(estimate.covers(truth))
    assert 0.82 <= np.mean(covered) <= 0.97


def test_audit_picks_keep_the_order_without_audits_and_replace_every_slot_with_share_one():
    top, candidates = np.array([5, 3, 9]), np.arange(20)
    none = audit_picks(top, candidates, 0.0, np.random.default_rng(0))
    assert none.items.tolist() == [5, 3, 9] and not none.audit.any()
    every = audit_picks(top, candidates, 1.0, np.random.default_rng(0))
    assert every.audit.all() and len(set(every.items.tolist())) == 3 and set(every.items) <= set(candidates)


def test_audit_slots_come_at_the_share_and_audit_tasks_uniformly_from_the_unlabeled_pool():
    rng = np.random.default_rng(3)
    top, candidates = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), np.arange(40)  # the top K are candidates too
    slots, counts = 0, np.zeros(40)
    for _ in range(6000):
        picks = audit_picks(top, candidates, 0.25, rng)
        assert len(picks.items) == 10 and len(set(picks.items.tolist())) == 10
        # the slots that are not audits show the order's items, in order
        shown = picks.items[~picks.audit].tolist()
        assert shown == [i for i in top.tolist() if i not in picks.audit_items.tolist()][: len(shown)]
        slots += picks.audit.sum()
        counts[picks.audit_items] += 1
    assert slots / 60000 == pytest.approx(0.25, abs=0.01)
    # every candidate, in the order's top K or not, is drawn as often (15,000 draws over 40 items)
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()


def test_audits_from_a_small_pool_never_repeat_or_leave_holes():
    picks = audit_picks(np.array([1, 2]), np.array([1, 2]), 1.0, np.random.default_rng(0), k=5)
    assert sorted(picks.items.tolist()) == [1, 2] and picks.audit.all()


def test_recent_audits_are_those_shown_since_half_of_todays_labels():
    assert recent_audits([0, 40, 50, 90], 100).tolist() == [False, False, True, True]


def test_prediction_powered_accuracy_covers_a_calibrated_models_accuracy():
    rng = np.random.default_rng(4)
    confidence = rng.uniform(0.5, 1.0, 5000)  # a calibrated model: right with its own probability
    truth = confidence.mean()
    covered = []
    for _ in range(500):
        rows = rng.choice(5000, 40, replace=False)
        right = rng.random(40) < confidence[rows] - 0.05  # 5 points over-confident
        estimate = ppi_accuracy(confidence, right, confidence[rows])
        covered.append(estimate.covers(truth - 0.05))
    assert 0.85 <= np.mean(covered) <= 0.96
    assert ppi_accuracy(confidence, [], []).value is None


def test_the_cv_reference_and_self_confidence_say_what_they_are():
    cv = proxy_cv_estimate(0.6, 100)
    assert cv.value == 0.6 and cv.low < 0.6 < cv.high and "biased" in cv.note
    assert proxy_cv_estimate(None, 3).value is None
    assert expected_accuracy(np.array([[0.9, 0.1], [0.3, 0.7]])).value == pytest.approx(0.8)


def test_uniform_weights_give_plain_accuracy_and_the_full_effective_count():
    estimate = importance_weighted_accuracy([True, False, True, True], np.ones(4))
    assert estimate.value == 0.75 and estimate.n == pytest.approx(4)


def test_density_ratio_weights_favour_labels_typical_of_the_pool():
    rng = np.random.default_rng(5)
    common, rare = rng.normal([3, 0], 0.3, (900, 2)), rng.normal([-3, 0], 0.3, (100, 2))
    pool = np.concatenate([common, rare])
    labeled = np.concatenate([common[:20], rare[:20]])  # the rare region over-represented 9x
    weights = density_ratio_weights(labeled, pool, clip_quantile=1.0)
    assert weights[:20].mean() > 3 * weights[20:].mean()
    assert weights.mean() == pytest.approx(1.0)


def test_heldout_audits_are_scored_by_a_head_that_never_saw_them():
    rng = np.random.default_rng(6)
    schema = LabelSchema(TaskType.CLASSIFICATION, ("a", "b"))
    x = np.concatenate([rng.normal(1, 0.2, (30, 8)), rng.normal(-1, 0.2, (30, 8))])
    labels = [("a",)] * 30 + [("b",)] * 30
    audit = np.zeros(60, bool)
    audit[[0, 1, 40]] = True
    assert heldout_audit_outcomes(x, labels, audit, schema).tolist() == [True, True, True]
    labels[40] = ("a",)  # an audit labeled against its cluster: the held-out head disagrees
    assert heldout_audit_outcomes(x, labels, audit, schema).tolist() == [True, True, False]


def test_the_default_estimate_holds_the_audits_out_and_covers_the_pool_accuracy():
    """Two overlapping classes: a head trained on the other labels is right on about as many audit
    texts as on the pool; the interval holds the pool accuracy of such a head about as often as it says."""
    schema = LabelSchema(TaskType.CLASSIFICATION, ("a", "b"))
    rng = np.random.default_rng(7)

    def draw(n):
        y = rng.integers(0, 2, n)
        return rng.normal(0, 1, (n, 8)) + np.outer(y * 2 - 1, np.r_[0.6, np.zeros(7)]), y

    covered = []
    for _ in range(40):
        x, y = draw(200)
        pool, pool_y = draw(2000)
        audit = rng.random(200) < 0.15
        labels = [(("a", "b")[i],) for i in y]
        estimate = audit_estimate(x, labels, audit, pool, schema)
        assert estimate.method == AUDIT_HELDOUT_PPI and estimate.n == audit.sum()
        head_truth = np.mean(heldout_accuracy_on(x[~audit], y[~audit], pool, pool_y, schema))
        covered.append(estimate.covers(head_truth))
    assert np.mean(covered) >= 0.8
    assert audit_estimate(x, labels, np.zeros(200, bool), pool, schema).value is None
    assert audit_estimate(x, labels, np.ones(200, bool), pool, schema).value is None


def heldout_accuracy_on(x, y, pool, pool_y, schema):
    from backend.engine.proxy import ProxyHead

    head = ProxyHead(schema).fit(x, [(("a", "b")[i],) for i in y], estimate=False)
    return head.predict_proba(pool).argmax(axis=1) == pool_y
