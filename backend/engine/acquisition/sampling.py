"""Unlabeled Pool Subsampling (UPS) and the pool samplers it is compared with.

A sampler decides which unlabeled tasks get re-scored this iteration, given the last uncertainty
computed for each (NaN = never scored). `PoolScorer` wraps a query strategy with any sampler: it
re-scores the drawn subset and keeps the stale scores of the rest (with `FullPool`, nothing is stale).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from backend.engine.acquisition.strategies import QueryStrategy
from backend.engine.errors import EmptyPoolError
from backend.engine.types import BoolArray, FloatArray, IndexArray, Predictions

F64 = NDArray[np.float64]

DEFAULT_FULL_RESCORE_ITERATIONS: tuple[int, ...] = (1, 2, 5, 9)

SamplerName = Literal["full", "ups", "random_subsample"]


class PoolSampler(ABC):
    """Chooses the tasks to re-score; never-scored tasks (NaN) are always chosen."""

    name: ClassVar[SamplerName]
    full_rescore_iterations: frozenset[int] = frozenset()  # iterations that re-score the whole pool

    @abstractmethod
    def _draw(self, uncertainty: F64, rng: np.random.Generator) -> BoolArray: ...

    def select(self, uncertainty: FloatArray, iteration: int, rng: np.random.Generator) -> BoolArray:
        """Boolean mask over the pool of the tasks to score at `iteration`."""
        stale = np.asarray(uncertainty, dtype=np.float64)
        if stale.ndim != 1:
            raise ValueError("uncertainty must be a 1-D array over the pool")
        if stale.size == 0:
            raise EmptyPoolError("the unlabeled pool is empty")
        never: BoolArray = np.isnan(stale)
        if never.all() or self.is_full_iteration(iteration):
            return np.ones(stale.size, dtype=bool)
        mask = np.zeros(stale.size, dtype=bool)
        scored = np.flatnonzero(~never)
        mask[scored] = self._draw(stale[scored], rng)
        return mask | never

    def is_full_iteration(self, iteration: int) -> bool:
        return iteration in self.full_rescore_iterations


class FullPool(PoolSampler):
    """The standard approach: re-score everything every iteration."""

    name = "full"

    def _draw(self, uncertainty: F64, rng: np.random.Generator) -> BoolArray:
        return np.ones(uncertainty.size, dtype=bool)


class UPS(PoolSampler):
    """Keep task i with probability exp(-max(0, r_i - gamma) / T), r_i its normalised rank by
    descending uncertainty. The top `gamma` share is always kept; the rest decays with `T`
    (gamma=0.1, T=0.01 keeps about 11%). Iterations in `full_rescore_iterations` re-score all."""

    name = "ups"

    def __init__(
        self,
        gamma: float = 0.1,
        temperature: float = 0.01,
        full_rescore_iterations: Iterable[int] = DEFAULT_FULL_RESCORE_ITERATIONS,
    ) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")
        if temperature <= 0:
            raise ValueError("temperature T must be > 0")
        self.gamma = gamma
        self.temperature = temperature
        self.full_rescore_iterations = frozenset(int(i) for i in full_rescore_iterations)

    def keep_probabilities(self, uncertainty: F64) -> F64:
        n = uncertainty.size
        order = np.argsort(-uncertainty, kind="stable")
        ranks = np.empty(n, dtype=np.float64)
        ranks[order] = np.arange(n) / max(n, 1)
        return np.exp(-np.maximum(0.0, ranks - self.gamma) / self.temperature)

    def expected_share(self, pool_size: int) -> float:
        return float(self.keep_probabilities(np.arange(pool_size, dtype=np.float64)).mean())

    def _draw(self, uncertainty: F64, rng: np.random.Generator) -> BoolArray:
        return rng.random(uncertainty.size) < self.keep_probabilities(uncertainty)


class RandomSubsample(PoolSampler):
    """Ablation baseline: re-score a uniformly random subset of the given share."""

    name = "random_subsample"

    def __init__(self, share: float, full_rescore_iterations: Iterable[int] = DEFAULT_FULL_RESCORE_ITERATIONS) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.full_rescore_iterations = frozenset(int(i) for i in full_rescore_iterations)

    def _draw(self, uncertainty: F64, rng: np.random.Generator) -> BoolArray:
        mask = np.zeros(uncertainty.size, dtype=bool)
        k = max(1, round(self.share * uncertainty.size))
        mask[rng.choice(uncertainty.size, size=min(k, uncertainty.size), replace=False)] = True
        return mask


@dataclass
class PoolScores:
    uncertainty: F64  # (N,) current best-known uncertainty per pool task
    confidence: F64  # (N,) matching Label Studio score
    rescored: BoolArray  # (N,) bool, True where this iteration ran the model

    def ranked_fresh(self) -> IndexArray:
        """Tasks scored this iteration, most uncertain first: the query is chosen from these only."""
        fresh = np.flatnonzero(self.rescored)
        if fresh.size == 0:
            raise EmptyPoolError("no freshly scored tasks to query from")
        return fresh[np.argsort(-self.uncertainty[fresh], kind="stable")]


class PoolScorer:
    """Wraps a query strategy with a pool sampler: score only the drawn subset, keep stale scores."""

    def __init__(self, strategy: QueryStrategy, sampler: PoolSampler, seed: int = 0) -> None:
        self.strategy = strategy
        self.sampler = sampler
        self.rng = np.random.default_rng(seed)

    def score_pool(
        self,
        stale_uncertainty: FloatArray,
        stale_confidence: FloatArray,
        iteration: int,
        predict: Callable[[IndexArray], Predictions],
    ) -> PoolScores:
        """`predict(indices)` runs the model on those pool tasks; it is called once."""
        mask = self.sampler.select(stale_uncertainty, iteration, self.rng)
        indices = np.flatnonzero(mask)
        scores = self.strategy.score(predict(indices))
        uncertainty = np.array(stale_uncertainty, dtype=np.float64, copy=True)
        confidence = np.array(stale_confidence, dtype=np.float64, copy=True)
        uncertainty[indices] = scores.uncertainty
        confidence[indices] = scores.confidence
        return PoolScores(uncertainty, confidence, mask)
