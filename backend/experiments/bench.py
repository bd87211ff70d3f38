"""Engine benchmarks: pool scoring speed (length-sorted vs max-length padding) and UPS shares.

Ratios are measured side by side in one process, alternating the contenders, because the
machines these run on are noisy.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from backend.engine.acquisition.sampling import UPS
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.types import Example, LabelSchema


@dataclass
class ScoringResult:
    name: str
    seconds: list[float]
    texts: int

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.best

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "best_seconds": self.best,
                "texts": self.texts, "texts_per_second": self.texts_per_second}


def bench_scoring(model: TransformerModel, examples: Sequence[Example], repeats: int = 3) -> list[ScoringResult]:
    """Score the same pool with per-batch padding after a length sort, and padded to max_length."""
    model.predict(examples[: min(len(examples), 64)])  # warm-up: lazy init, allocator, kernels
    sorted_run = ScoringResult("length-sorted, per-batch padding", [], len(examples))
    padded_run = ScoringResult("input order, padded to max_length", [], len(examples))
    for _ in range(repeats):
        for run, sort in ((sorted_run, True), (padded_run, False)):
            start = time.perf_counter()
            model.predict(examples, sort_by_length=sort)
            run.seconds.append(time.perf_counter() - start)
    return [sorted_run, padded_run]


def bench_training(
    model_name: str, schema: LabelSchema, examples: Sequence[Example], config: TrainingConfig, repeats: int = 2
) -> list[ScoringResult]:
    """One epoch of fine-tuning with random batches against length-grouped batches."""
    runs = [ScoringResult("random batches", [], len(examples)),
            ScoringResult("length-grouped batches", [], len(examples))]
    for _ in range(repeats):
        for run, grouped in zip(runs, (False, True)):
            settings = replace(config, epochs=1, group_by_length=grouped)
            run.seconds.append(TransformerModel(model_name, schema, settings).fit(examples).seconds)
    return runs


def ups_shares(pool_size: int, gamma: float, temperature: float, draws: int = 200, seed: int = 0) -> dict[str, float]:
    """Share of the pool UPS re-scores on an optimized iteration, over many seeded draws."""
    sampler = UPS(gamma, temperature, full_rescore_iterations=())
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(draws):
        uncertainty = rng.random(pool_size)
        shares.append(sampler.select(uncertainty, iteration=100, rng=rng).mean())
    shares_arr = np.array(shares)
    return {
        "pool_size": pool_size, "gamma": gamma, "temperature": temperature, "draws": draws,
        "expected_share": sampler.expected_share(pool_size),
        "mean_share": float(shares_arr.mean()), "std_share": float(shares_arr.std()),
    }
