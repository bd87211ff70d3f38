"""Emulated active learning: gold labels stand in for annotators (the paper's experiment setup).

Several configurations (full-pool scoring, UPS, a random subsample of the same size, random
sampling) run in lockstep per seed, so trainings that are identical across configurations (the
seed set, the iterations that re-score the full pool) run once and are shared; the seconds
recorded for them are the seconds they really took.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backend.engine.data.datasets import Dataset
from backend.engine.errors import EmptyPoolError
from backend.engine.metrics import evaluate
from backend.engine.acquisition.strategies import MahalanobisDistance, make_strategy
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.types import Predictions, TaggingExample, TaskType
from backend.engine.acquisition.sampling import DEFAULT_FULL_RESCORE_ITERATIONS, UPS, FullPool, PoolSampler, RandomSubsample, UPSScorer

log = logging.getLogger(__name__)

CONFIGURATIONS = ("full", "ups", "random_subsample", "random")


@dataclass
class SimulationConfig:
    acquisition_model: str = field(metadata={"help": "hub name or local directory of the acquisition model"})
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
    training: TrainingConfig = field(default_factory=TrainingConfig)

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


@dataclass
class _Run:
    """The state of one configuration for one seed."""

    configuration: str
    labeled: list[int]
    uncertainty: np.ndarray
    confidence: np.ndarray
    scorer: UPSScorer | None
    rng: np.random.Generator


def _units(example) -> int:
    return len(example.words) if isinstance(example, TaggingExample) else 1


def _take_until(order: Sequence[int], sizes: np.ndarray, budget: int) -> list[int]:
    """Take items in order until their summed size reaches the budget (at least one item)."""
    taken, total = [], 0
    for i in order:
        taken.append(int(i))
        total += int(sizes[i])
        if total >= budget:
            break
    return taken


class Simulation:
    def __init__(
        self,
        config: SimulationConfig,
        train: Dataset,
        test: Dataset,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if len(train) == 0 or len(test) == 0:
            raise EmptyPoolError("simulation needs non-empty train and test splits")
        self.config = config
        self.train = train
        self.test = test
        self.schema = train.schema
        self.progress = progress or (lambda message: None)
        self.sizes = np.array([_units(ex) for ex in train.examples])
        # The paper counts tagging budgets in tokens; absolute sizes always count instances.
        tagging = self.schema.task_type is TaskType.TAGGING
        self.seed_unit = "tokens" if tagging and config.seed_size is None and config.query_size is None else "instances"
        share_default = 0.02 if tagging else 0.01
        total_units = int(self.sizes.sum()) if self.seed_unit == "tokens" else len(train)
        self.seed_budget = config.seed_size or max(1, round((config.seed_share or share_default) * total_units))
        self.query_budget = config.query_size or max(1, round((config.query_share or share_default) * total_units))
        self.strategy_name = config.strategy
        make_strategy(config.strategy, self.schema.task_type)  # validate early

    # ------------------------------------------------------------------ helpers
    def _sampler(self, configuration: str) -> PoolSampler:
        ups = UPS(self.config.gamma, self.config.temperature, self.config.full_rescore_iterations)
        if configuration == "ups":
            return ups
        if configuration == "random_subsample":
            return RandomSubsample(ups.expected_share(max(len(self.train), 1000)), self.config.full_rescore_iterations)
        return FullPool()

    def _budget_take(self, order: Sequence[int], budget: int) -> list[int]:
        if self.seed_unit == "tokens":
            return _take_until(order, self.sizes, budget)
        return [int(i) for i in order[:budget]]

    def _model(self, name: str, seed: int) -> TransformerModel:
        training = TrainingConfig(**{**asdict(self.config.training), "seed": seed})
        return TransformerModel(name, self.schema, training)

    # --------------------------------------------------------------------- run
    def run(self) -> list[IterationRecord]:
        records: list[IterationRecord] = []
        for seed in self.config.seeds:
            records.extend(self._run_seed(seed))
        return records

    def _run_seed(self, seed: int) -> list[IterationRecord]:
        n = len(self.train)
        seed_rng = np.random.default_rng(seed)
        initial = self._budget_take(seed_rng.permutation(n), self.seed_budget)
        runs = []
        for offset, name in enumerate(self.config.configurations):
            scorer = None
            if name != "random":
                scorer = UPSScorer(make_strategy(self.strategy_name, self.schema.task_type, seed), self._sampler(name), seed)
            runs.append(
                _Run(name, list(initial), np.full(n, np.nan), np.full(n, np.nan), scorer,
                     np.random.default_rng([seed, offset]))
            )
        records = []
        for iteration in range(self.config.iterations + 1):
            # Identical labeled sets give identical models: train and evaluate each distinct one once.
            cache: dict[tuple[int, ...], dict] = {}
            last = iteration == self.config.iterations
            for run in runs:
                key = tuple(sorted(run.labeled))
                if key not in cache:
                    cache[key] = self._train_and_evaluate(key, seed)
                shared = cache[key]
                inference_seconds, rescored = 0.0, 0
                if not last:
                    inference_seconds, rescored = self._query(run, shared, iteration)
                records.append(
                    IterationRecord(
                        configuration=run.configuration, seed=seed, iteration=iteration,
                        labeled=len(key), labeled_tokens=int(self.sizes[list(key)].sum()),
                        metrics=shared["metrics"], train_seconds=shared["train_seconds"],
                        successor_seconds=shared["successor_seconds"], inference_seconds=inference_seconds,
                        rescored=rescored, pool_size=n - len(key),
                    )
                )
                self.progress(
                    f"seed {seed} it {iteration} {run.configuration}: {shared['metrics']['main']:.3f} "
                    f"(train {shared['train_seconds']:.1f}s, infer {inference_seconds:.1f}s, rescored {rescored})"
                )
        return records

    def _train_and_evaluate(self, labeled: tuple[int, ...], seed: int) -> dict:
        examples = [self.train.examples[i] for i in labeled]
        acquisition = self._model(self.config.acquisition_model, seed)
        fit = acquisition.fit(examples)
        successor_seconds = 0.0
        evaluated = acquisition
        if self.config.successor_model:
            successor = self._model(self.config.successor_model, seed)
            successor_seconds = successor.fit(examples).seconds
            evaluated = successor
        metrics = evaluate(evaluated.predict(self.test.examples), self.test.examples, self.schema)
        return {
            "model": acquisition, "metrics": metrics, "train_seconds": fit.seconds,
            "successor_seconds": successor_seconds, "pool_predictions": {},
        }

    def _query(self, run: _Run, shared: dict, iteration: int) -> tuple[float, int]:
        labeled = set(run.labeled)
        pool = np.array([i for i in range(len(self.train)) if i not in labeled])
        if pool.size == 0:
            return 0.0, 0
        if run.scorer is None:  # random sampling needs no model
            chosen = self._budget_take(run.rng.permutation(pool), self.query_budget)
            run.labeled.extend(chosen)
            return 0.0, 0
        model: TransformerModel = shared["model"]
        strategy = run.scorer.strategy
        seconds = 0.0
        if isinstance(strategy, MahalanobisDistance):
            # class centroids and covariance come from the labeled set's embeddings
            start = time.perf_counter()
            labeled_examples = [self.train.examples[i] for i in run.labeled]
            embeddings = model.predict(labeled_examples, return_embeddings=True).embeddings
            strategy.fit(embeddings, np.array([ex.labels[0] for ex in labeled_examples]))  # type: ignore[union-attr]
            seconds += time.perf_counter() - start

        def predict(indices: np.ndarray) -> Predictions:
            nonlocal seconds
            key = (tuple(pool[indices]), strategy.needs_embeddings)
            cached = shared["pool_predictions"].get(key)
            if cached is None:
                start = time.perf_counter()
                preds = model.predict(
                    [self.train.examples[i] for i in pool[indices]], return_embeddings=strategy.needs_embeddings
                )
                cached = (preds, time.perf_counter() - start)
                shared["pool_predictions"][key] = cached
            seconds += cached[1]
            return cached[0]

        scores = run.scorer.score_pool(run.uncertainty[pool], run.confidence[pool], iteration, predict)
        run.uncertainty[pool] = scores.uncertainty
        run.confidence[pool] = scores.confidence
        chosen = self._budget_take(pool[scores.ranked_fresh()], self.query_budget)
        run.labeled.extend(chosen)
        run.uncertainty[chosen] = np.nan
        run.confidence[chosen] = np.nan
        return seconds, int(scores.rescored.sum())


# ---------------------------------------------------------------------- reports
def summarize(records: Sequence[IterationRecord]) -> dict[str, list[dict]]:
    """Mean and std over seeds per configuration and iteration."""
    out: dict[str, list[dict]] = {}
    configurations = list(dict.fromkeys(r.configuration for r in records))
    for name in configurations:
        rows = []
        iterations = sorted({r.iteration for r in records if r.configuration == name})
        for it in iterations:
            group = [r for r in records if r.configuration == name and r.iteration == it]
            main = np.array([r.metrics["main"] for r in group])
            rows.append({
                "iteration": it,
                "labeled": float(np.mean([r.labeled for r in group])),
                "main_mean": float(main.mean()), "main_std": float(main.std()),
                "train_seconds": float(np.mean([r.train_seconds for r in group])),
                "successor_seconds": float(np.mean([r.successor_seconds for r in group])),
                "inference_seconds": float(np.mean([r.inference_seconds for r in group])),
                "overall_seconds": float(np.mean([r.overall_seconds for r in group])),
                "rescored_share": float(np.mean([r.rescored / r.pool_size if r.pool_size else 0.0 for r in group])),
            })
        out[name] = rows
    return out


def format_table(summary: dict[str, list[dict]], metric_name: str) -> str:
    header = f"{'config':<17}{'it':>3}{'labeled':>9}{metric_name:>16}{'train s':>9}{'infer s':>9}{'total s':>9}{'rescored':>10}"
    lines = [header, "-" * len(header)]
    for name, rows in summary.items():
        for row in rows:
            lines.append(
                f"{name:<17}{row['iteration']:>3}{row['labeled']:>9.0f}"
                f"{row['main_mean']:>9.3f} ±{row['main_std']:.3f}"
                f"{row['train_seconds'] + row['successor_seconds']:>9.1f}{row['inference_seconds']:>9.2f}"
                f"{row['overall_seconds']:>9.1f}{row['rescored_share']:>9.1%}"
            )
    return "\n".join(lines)


def plot_learning_curves(summary: dict[str, list[dict]], metric_name: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in summary.items():
        x = [r["labeled"] for r in rows]
        mean = np.array([r["main_mean"] for r in rows])
        std = np.array([r["main_std"] for r in rows])
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("labeled instances")
    ax.set_ylabel(metric_name)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(
    records: Sequence[IterationRecord], config: SimulationConfig, dataset_name: str, output_dir: Path, extra: dict | None = None
) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    payload = {
        "dataset": dataset_name,
        "config": asdict(config),
        "summary": summary,
        "records": [{**asdict(r), "overall_seconds": r.overall_seconds} for r in records],
        **(extra or {}),
    }
    tmp = output_dir / ".results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(output_dir / "results.json")
    return payload
