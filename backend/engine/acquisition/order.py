"""The order the annotator sees next: one implementation, called by the service's fast update and by
`bench-labels`, so every label-efficiency figure is a claim about the code that serves.

The seam is `PoolScorer`: anything that turns the pool's stored features into per-item scores
(`PoolScores`: the confidence Label Studio sorts by, the uncertainty the order follows, and which
items hold nothing to label). `ProxyScorer` is the classification one (a `ProxyHead` and a query
strategy over its class probabilities); a token-level head plugs in the same way, scoring a sentence
from its words.

`order_pool` then applies the one rule: while the labels are fewer than the cold start's count the
most typical unlabeled items go first (a head fitted on a handful of labels is confidently wrong
about whole regions of the pool), afterwards the most uncertain ones. The top K come back lowest
confidence first, the order Label Studio's *Uncertainty sampling* serves them in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, Protocol, Self, cast

import numpy as np
from typing_extensions import TypeVar  # `default=` (PEP 696) on Python 3.11

from backend.engine.acquisition.strategies import LeastConfidence, QueryStrategy, make_strategy
from backend.engine.errors import EmptyPoolError
from backend.engine.proxy import ProxyHead
from backend.engine.types import BoolArray, FloatArray, IndexArray, Predictions, TaskType

OrderPhase = Literal["typical", "uncertainty"]


class RowOutputs(Protocol):
    """Per-item outputs that are not one array row per item (tagging's per-word probabilities and
    tags of each sentence): they select items themselves."""

    def __len__(self) -> int: ...

    def take(self, rows: IndexArray) -> Self: ...


# What a scorer's items are stored as and what its outputs are: by default one array row per item
# (classification's feature rows and class probabilities).
FeaturesT_contra = TypeVar("FeaturesT_contra", contravariant=True, default=FloatArray)
OutputsT = TypeVar("OutputsT", bound="FloatArray | RowOutputs", default=FloatArray)


@dataclass(frozen=True)
class PoolScores(Generic[OutputsT]):
    """Per pool item: `confidence` (what Label Studio sorts by, ascending), `uncertainty` (higher =
    more informative), `empty` (nothing to label: ordered last, never pushed) and the head's raw
    output the results are built from (class probabilities for classification, one row per item;
    or a `RowOutputs`, e.g. tagging's per-word probabilities and tags)."""

    confidence: FloatArray
    uncertainty: FloatArray
    empty: BoolArray
    outputs: OutputsT

    def __len__(self) -> int:
        return len(self.confidence)

    def take(self, rows: IndexArray) -> PoolScores[OutputsT]:
        """The scores of `rows` only (e.g. the pool's rows of a feature set holding labeled ones too)."""
        outputs = self.outputs[rows] if isinstance(self.outputs, np.ndarray) else self.outputs.take(rows)
        return PoolScores(self.confidence[rows], self.uncertainty[rows], self.empty[rows],
                          cast(OutputsT, outputs))


class PoolScorer(Protocol[FeaturesT_contra, OutputsT]):
    """A fitted head that scores the pool from its stored features, one score per item
    (classification: a feature row per text; tagging: a sentence's word features)."""

    def score_pool(self, features: FeaturesT_contra) -> PoolScores[OutputsT]: ...


def proxy_strategy(name: str = "auto") -> QueryStrategy:
    """The configured strategy where it works on class probabilities alone, else least confidence
    (Mahalanobis needs a fine-tuned model's embeddings)."""
    try:
        strategy = make_strategy(name, TaskType.CLASSIFICATION)
    except ValueError:
        return LeastConfidence()
    return LeastConfidence() if strategy.needs_embeddings else strategy


@dataclass(frozen=True)
class ProxyScorer:
    """Classification: the proxy head's class probabilities, scored by a query strategy. Rows of all
    zeros (texts without tokens) are empty: confidence 1, uncertainty 0."""

    head: ProxyHead
    strategy: QueryStrategy

    def score_pool(self, features: FloatArray) -> PoolScores:
        probs, empty = self.head.predict_pool(features)
        confidence, uncertainty = score_probabilities(probs, self.head.schema.multi_label, self.strategy)
        confidence[empty], uncertainty[empty] = 1.0, 0.0
        return PoolScores(confidence, uncertainty, empty, probs)


def score_probabilities(probs: FloatArray, multi_label: bool, strategy: QueryStrategy
                        ) -> tuple[FloatArray, FloatArray]:
    """(confidence, uncertainty) per row of class probabilities, as float32."""
    if len(probs) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    scores = strategy.score(Predictions(TaskType.CLASSIFICATION, probs, multi_label=multi_label))
    return np.asarray(scores.confidence, np.float32), np.asarray(scores.uncertainty, np.float32)


@dataclass(frozen=True)
class ColdStart:
    """Until `labels` items are labeled, the most `typical` unlabeled ones go first (positions in the
    pool arrays, most typical first: `cold_start.typical_order`)."""

    labels: int
    typical: IndexArray

    def active(self, n_labeled: int) -> bool:
        return n_labeled < self.labels and len(self.typical) > 0


@dataclass(frozen=True)
class PoolOrder(Generic[OutputsT]):
    """The items to show next (`top`: pool positions, lowest confidence first, at most K), the
    scores of the whole pool (None when the cold start ordered without a head), and which rule chose."""

    top: IndexArray
    scores: PoolScores[OutputsT] | None
    phase: OrderPhase


def order_pool(scores: PoolScores[OutputsT] | None, labeled: BoolArray, k: int, n_labeled: int,
               cold_start: ColdStart | None = None) -> PoolOrder[OutputsT]:
    """The next `k` pool items to label. `labeled` flags pool positions already labeled (or
    otherwise out of the order); `n_labeled` is the label count the cold start rule reads.
    `scores` may be None only while the cold start chooses (no head before the first labels).
    Raises `EmptyPoolError` when no unlabeled item has anything to label."""
    labeled = np.asarray(labeled, bool)
    if cold_start is not None and cold_start.active(n_labeled):
        typical = np.asarray(cold_start.typical, np.int64)
        top = typical[~labeled[typical]][:k]
        if len(top):
            if scores is not None:  # lowest score first: the ones created first in LS lead
                top = top[np.argsort(scores.confidence[top], kind="stable")]
            return PoolOrder(top, scores, "typical")
    if scores is None:
        raise ValueError("ordering by uncertainty needs the pool's scores (a fitted head)")
    candidates = np.flatnonzero(~labeled & ~scores.empty)
    if not len(candidates):
        raise EmptyPoolError("no unlabeled pool item has anything to label")
    ranked = candidates[np.argsort(-scores.uncertainty[candidates], kind="stable")][:k]
    return PoolOrder(ranked, scores, "uncertainty")
