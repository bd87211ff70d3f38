"""Query strategies behind one small interface: `score(predictions) -> Scores`.

Each returns an uncertainty (higher = more informative, what the query sorts by) and the
confidence Label Studio should get as the prediction `score` (low = uncertain, so LS's
*Uncertainty sampling* puts the most informative tasks first).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from backend.engine.types import Predictions, TaskType

EPS = 1e-12


@dataclass(frozen=True)
class Scores:
    uncertainty: np.ndarray  # (N,), higher = more informative
    confidence: np.ndarray  # (N,), in [0, 1]; sent to Label Studio as the prediction score

    def __post_init__(self) -> None:
        if self.uncertainty.shape != self.confidence.shape:
            raise ValueError("uncertainty and confidence must have the same shape")


class QueryStrategy(ABC):
    """Scores a pool's predictions. Subclasses declare which task types they support."""

    name: ClassVar[str]
    task_types: ClassVar[frozenset[TaskType]] = frozenset(TaskType)
    needs_embeddings: ClassVar[bool] = False

    @abstractmethod
    def score(self, predictions: Predictions) -> Scores: ...

    def check(self, task_type: TaskType) -> None:
        if task_type not in self.task_types:
            supported = ", ".join(sorted(t.value for t in self.task_types))
            raise ValueError(f"strategy '{self.name}' supports {supported}, not {task_type.value}")


def _per_example(predictions: Predictions, fn) -> np.ndarray:
    """Apply a row-wise uncertainty to classification rows, or average it over a tagged text's words."""
    if predictions.task_type is TaskType.CLASSIFICATION:
        return fn(np.asarray(predictions.probs, dtype=np.float64))
    return np.array(
        [fn(np.asarray(p, dtype=np.float64)).mean() if len(p) else 0.0 for p in predictions.probs]
    )


def _max_prob(probs: np.ndarray, multi_label: bool) -> np.ndarray:
    if multi_label:  # each label is its own binary decision
        return np.maximum(probs, 1 - probs).mean(axis=-1)
    return probs.max(axis=-1)


class LeastConfidence(QueryStrategy):
    """LC = 1 - max_y P(y|x); confidence = max_y P(y|x)."""

    name = "least_confidence"

    def score(self, predictions: Predictions) -> Scores:
        multi = predictions.multi_label
        confidence = _per_example(predictions, lambda p: _max_prob(p, multi))
        return Scores(1.0 - confidence, confidence)


class Margin(QueryStrategy):
    """Margin = 1 - (P(y1) - P(y2)); confidence = the margin itself."""

    name = "margin"

    def score(self, predictions: Predictions) -> Scores:
        def margin(p: np.ndarray) -> np.ndarray:
            if p.shape[-1] < 2:
                return np.ones(p.shape[:-1])
            top2 = np.sort(p, axis=-1)[..., -2:]
            return top2[..., 1] - top2[..., 0]

        confidence = _per_example(predictions, margin)
        return Scores(1.0 - confidence, confidence)


class Entropy(QueryStrategy):
    """Entropy normalised by log(C) to [0, 1]; confidence = 1 - normalised entropy."""

    name = "entropy"

    def score(self, predictions: Predictions) -> Scores:
        def entropy(p: np.ndarray) -> np.ndarray:
            c = p.shape[-1]
            h = -(p * np.log(np.clip(p, EPS, 1.0))).sum(axis=-1)
            return h / np.log(c) if c > 1 else np.zeros(p.shape[:-1])

        uncertainty = np.clip(_per_example(predictions, entropy), 0.0, 1.0)
        return Scores(uncertainty, 1.0 - uncertainty)


class MNLP(QueryStrategy):
    """Maximum normalised log-probability (Shen et al., 2017): -(1/n) sum_i log P(y_i*), y* the
    argmax tag of each word's first sub-token; confidence = exp(-MNLP), the geometric mean of the
    per-word top probabilities."""

    name = "mnlp"
    task_types = frozenset({TaskType.TAGGING})

    def score(self, predictions: Predictions) -> Scores:
        self.check(predictions.task_type)
        uncertainty = np.array(
            [
                -np.log(np.clip(np.asarray(p, dtype=np.float64).max(axis=-1), EPS, 1.0)).mean() if len(p) else 0.0
                for p in predictions.probs
            ]
        )
        return Scores(uncertainty, np.exp(-uncertainty))


class MahalanobisDistance(QueryStrategy):
    """Distance of the pooled embedding to the nearest class centroid under a shared covariance
    (Lee et al., 2018). Call `fit` with the labeled examples' embeddings first.

    The covariance is shrunk toward a scaled identity so it stays invertible when the labeled set
    is smaller than the embedding width (always the case early in active learning).
    """

    name = "mahalanobis"
    task_types = frozenset({TaskType.CLASSIFICATION})
    needs_embeddings = True

    def __init__(self, shrinkage: float = 0.1) -> None:
        if not 0 < shrinkage <= 1:
            raise ValueError("shrinkage must be in (0, 1]")
        self.shrinkage = shrinkage
        self._centroids: np.ndarray | None = None
        self._precision: np.ndarray | None = None

    def fit(self, embeddings: np.ndarray, labels: np.ndarray) -> "MahalanobisDistance":
        x = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(labels)
        classes = np.unique(y)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError("need one label per embedding and at least one example")
        centroids = np.stack([x[y == c].mean(axis=0) for c in classes])
        centered = x - centroids[np.searchsorted(classes, y)]
        cov = centered.T @ centered / max(len(x), 1)
        scale = np.trace(cov) / cov.shape[0] if np.trace(cov) > 0 else 1.0
        cov = (1 - self.shrinkage) * cov + self.shrinkage * scale * np.eye(cov.shape[0])
        self._centroids = centroids
        self._precision = np.linalg.pinv(cov, hermitian=True)
        return self

    def score(self, predictions: Predictions) -> Scores:
        self.check(predictions.task_type)
        if self._centroids is None or self._precision is None:
            raise RuntimeError("MahalanobisDistance.fit must be called with the labeled embeddings first")
        if predictions.embeddings is None:
            raise ValueError("Mahalanobis needs predictions with embeddings (return_embeddings=True)")
        x = np.asarray(predictions.embeddings, dtype=np.float64)
        diff = x[:, None, :] - self._centroids[None, :, :]  # (N, K, H)
        dist = np.einsum("nkh,hg,nkg->nk", diff, self._precision, diff)
        uncertainty = np.maximum(dist.min(axis=1), 0.0) / x.shape[1]  # per-dimension scale
        return Scores(uncertainty, 1.0 / (1.0 + uncertainty))


class RandomScores(QueryStrategy):
    """Random sampling baseline: random uncertainty; confidence = the top probability, so LS still
    shows a meaningful score."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def score(self, predictions: Predictions) -> Scores:
        confidence = LeastConfidence().score(predictions).confidence
        return Scores(self._rng.random(len(predictions)), confidence)


STRATEGIES: dict[str, type[QueryStrategy]] = {
    cls.name: cls for cls in (LeastConfidence, Margin, Entropy, MNLP, MahalanobisDistance, RandomScores)
}


def make_strategy(name: str, task_type: TaskType, seed: int = 0) -> QueryStrategy:
    """Build a strategy by name, checking it suits the task type; 'auto' = LC or MNLP as in the paper."""
    if name == "auto":
        name = "least_confidence" if task_type is TaskType.CLASSIFICATION else "mnlp"
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; choose one of: auto, {', '.join(STRATEGIES)}")
    strategy = RandomScores(seed) if name == "random" else STRATEGIES[name]()
    strategy.check(task_type)
    return strategy
