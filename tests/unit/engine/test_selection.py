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
