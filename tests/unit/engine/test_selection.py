import pytest

from backend.engine.selection import finetune_beats_proxy, switch_margin


@pytest.mark.parametrize("finetune, proxy, heldout, serves", [
    (0.5, 0.4, 10, False),   # one text of ten: noise
    (0.75, 0.70, 20, False),  # one text of twenty
    (0.75, 0.50, 20, True),   # five texts of twenty
    (1.0, 0.75, 4, True),     # every held-out text against one miss in four
    (0.9, 0.9, 50, False),    # a tie never switches
])
def test_the_fine_tune_serves_only_when_it_wins_by_more_than_one_standard_error(finetune, proxy, heldout, serves):
    assert finetune_beats_proxy(finetune, proxy, heldout) is serves


def test_the_margin_shrinks_as_held_out_labels_accumulate():
    margins = [switch_margin(0.7, 0.6, n) for n in (10, 40, 160)]
    assert margins[0] > margins[1] > margins[2] > 0
    assert margins[0] == pytest.approx(2 * margins[1]) and margins[1] == pytest.approx(2 * margins[2])
    assert switch_margin(1.0, 1.0, 10) == 0.0  # both perfect: nothing to overcome, and a tie still loses


def test_no_held_out_labels_is_an_error_not_a_zero_margin():
    with pytest.raises(ValueError, match="heldout"):
        switch_margin(0.8, 0.7, 0)


def test_tagging_switches_on_any_lead_of_the_paired_estimate():
    """Tagging compares both models on the same sentences, and a winning tagger hands the token head
    its word features: a lead of 0.01 on 40 sentences switches it, where classification would want
    about 0.07 more."""
    from backend.engine.selection import ModelEstimate, decide_serving, switch_standard_errors
    from backend.engine.types import TaskType

    finetuned, head = ModelEstimate(0.31, 40), ModelEstimate(0.30, 25)
    tagging = decide_serving(finetuned, head, 10, metric="span F1", proxy_measure="the token head's",
                             standard_errors=switch_standard_errors(TaskType.TAGGING))
    assert tagging.serve == "finetuned" and tagging.margin == 0.0
    assert tagging.why == "fine-tuned held-out span F1 0.31 > the token head's span F1 0.3 + margin 0.0"
    tie = decide_serving(ModelEstimate(0.30, 40), head, 10, standard_errors=switch_standard_errors(TaskType.TAGGING))
    assert tie.serve == "proxy", "a tie keeps the token head"
    classification = decide_serving(finetuned, head, 10,
                                    standard_errors=switch_standard_errors(TaskType.CLASSIFICATION))
    assert classification.serve == "proxy" and classification.margin == pytest.approx(0.0728, abs=1e-4)
