"""Query strategies behind one small interface: `score(predictions) -> Scores`.

Each returns an uncertainty (higher = more informative, what the query sorts by) and the
confidence Label Studio should get as the prediction `score` (low = uncertain, so LS's
*Uncertainty sampling* puts the most informative tasks first).

A strategy is saved beside a checkpoint as `strategy.json` (name and plain parameters) plus
`strategy.npz` when it holds fitted arrays, so checkpoints never depend on class paths (no pickle).
"""
from __future__ import annotations

import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from numpy.typing import NDArray

from backend.engine.io import atomic_file, atomic_write_json
from backend.engine.types import FloatArray, Predictions, TaskType

F64 = NDArray[np.float64]
Arrays = dict[str, NDArray[np.generic]]  # a strategy's fitted arrays, as saved in strategy.npz

EPS = 1e-12
STRATEGY_JSON = "strategy.json"
STRATEGY_NPZ = "strategy.npz"

StrategyName = Literal["least_confidence", "margin", "entropy", "mnlp", "mahalanobis", "random"]


@dataclass(frozen=True)
class Scores:
    uncertainty: FloatArray  # (N,), higher = more informative
    confidence: FloatArray  # (N,), in [0, 1]; sent to Label Studio as the prediction score

    def __post_init__(self) -> None:
        if self.uncertainty.shape != self.confidence.shape:
            raise ValueError("uncertainty and confidence must have the same shape")


class QueryStrategy(ABC):
    """Scores a pool's predictions. Subclasses declare which task types they support."""

    name: ClassVar[StrategyName]
    task_types: ClassVar[frozenset[TaskType]] = frozenset(TaskType)
    needs_embeddings: ClassVar[bool] = False

    @abstractmethod
    def score(self, predictions: Predictions) -> Scores: ...

    def check(self, task_type: TaskType) -> None:
        if task_type not in self.task_types:
            supported = ", ".join(sorted(t.value for t in self.task_types))
            raise ValueError(f"strategy '{self.name}' supports {supported}, not {task_type.value}")

    # Persistence (`save_strategy` / `load_strategy`): stateless strategies need none of this.
    def params(self) -> dict[str, Any]:
        """JSON-able settings and state that `restore` takes back."""
        return {}

    def fitted_arrays(self) -> Arrays:
        """Arrays learned by `fit`, saved to `strategy.npz`; empty when there are none."""
        return {}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: Arrays) -> Self:
        if arrays:
            raise ValueError(f"strategy '{cls.name}' holds no fitted arrays, but got {sorted(arrays)}")
        return cls(**params)


def _per_example(predictions: Predictions, fn: Callable[[F64], F64]) -> F64:
    """Apply a row-wise uncertainty to classification rows, or average it over a tagged text's words.

    The mean (not the sum or max) keeps long sentences comparable to short ones (Shen et al., 2017).
    """
    if predictions.task_type is TaskType.CLASSIFICATION:
        return fn(np.asarray(predictions.probs, dtype=np.float64))
    return np.array(
        [fn(np.asarray(p, dtype=np.float64)).mean() if len(p) else 0.0 for p in predictions.probs]
    )


def _max_prob(probs: F64, multi_label: bool) -> F64:
    top: F64
    if multi_label:  # each label is its own binary decision
        top = np.maximum(probs, 1 - probs).mean(axis=-1)
    else:
        top = probs.max(axis=-1)
    return top


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
        def margin(p: F64) -> F64:
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
        def entropy(p: F64) -> F64:
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
        uncertainty = _per_example(predictions, lambda p: -np.log(np.clip(p.max(axis=-1), EPS, 1.0)))
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
        self._centroids: F64 | None = None
        self._precision: F64 | None = None

    def fit(self, embeddings: FloatArray, labels: NDArray[np.generic]) -> MahalanobisDistance:
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

    def params(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}

    def fitted_arrays(self) -> Arrays:
        if self._centroids is None or self._precision is None:
            return {}
        return {"centroids": self._centroids, "precision": self._precision}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: Arrays) -> Self:
        strategy = cls(**params)
        if not arrays:
            return strategy  # saved before fit
        if set(arrays) != {"centroids", "precision"}:
            raise ValueError(f"expected arrays centroids and precision, got {sorted(arrays)}")
        centroids, precision = arrays["centroids"], arrays["precision"]
        if centroids.ndim != 2 or precision.shape != (centroids.shape[1], centroids.shape[1]):
            raise ValueError(f"centroids {centroids.shape} and precision {precision.shape} do not match")
        strategy._centroids = centroids.astype(np.float64, copy=False)
        strategy._precision = precision.astype(np.float64, copy=False)
        return strategy

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


class RandomBaseline(QueryStrategy):
    """Random sampling baseline: random uncertainty; confidence = the top probability, so LS still
    shows a meaningful score."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def score(self, predictions: Predictions) -> Scores:
        confidence = LeastConfidence().score(predictions).confidence
        return Scores(self._rng.random(len(predictions)), confidence)

    def params(self) -> dict[str, Any]:
        # The generator's position too: a reloaded baseline continues the same random stream.
        return {"seed": self.seed, "rng_state": self._rng.bit_generator.state}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: Arrays) -> Self:
        params = dict(params)
        state = params.pop("rng_state", None)
        strategy = super().restore(params, arrays)
        if state is not None:
            strategy._rng.bit_generator.state = state
        return strategy


STRATEGIES: dict[str, type[QueryStrategy]] = {
    cls.name: cls for cls in (LeastConfidence, Margin, Entropy, MNLP, MahalanobisDistance, RandomBaseline)
}


def make_strategy(name: str, task_type: TaskType, seed: int = 0) -> QueryStrategy:
    """Build a strategy by name, checking it suits the task type; 'auto' = LC or MNLP as in the paper."""
    if name == "auto":
        name = "least_confidence" if task_type is TaskType.CLASSIFICATION else "mnlp"
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; choose one of: auto, {', '.join(STRATEGIES)}")
    strategy = RandomBaseline(seed) if name == "random" else STRATEGIES[name]()
    strategy.check(task_type)
    return strategy


def save_strategy(strategy: QueryStrategy, directory: str | Path) -> None:
    """Write `strategy.json` (name + plain parameters) and, for fitted arrays, `strategy.npz`."""
    directory = Path(directory)
    arrays = strategy.fitted_arrays()
    npz = directory / STRATEGY_NPZ
    if arrays:
        with atomic_file(npz) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=True, **arrays)  # numpy's default, named so no array name can mean it
    else:
        npz.unlink(missing_ok=True)  # left by an earlier save; it would not match this strategy
    atomic_write_json(directory / STRATEGY_JSON, {"name": strategy.name, **strategy.params()})


def load_strategy(directory: str | Path) -> QueryStrategy:
    """Rebuild the strategy `save_strategy` wrote. FileNotFoundError without `strategy.json`;
    ValueError on an unknown name or a file that does not describe a strategy."""
    path = Path(directory) / STRATEGY_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no {STRATEGY_JSON} in {directory}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise ValueError(f"{path} must be a JSON object with a string 'name'")
    params = dict(config)
    name = params.pop("name")
    if name not in STRATEGIES:
        raise ValueError(f"{path}: unknown strategy '{name}'; known: {', '.join(STRATEGIES)}")
    arrays = _read_arrays(Path(directory) / STRATEGY_NPZ)
    try:
        return STRATEGIES[name].restore(params, arrays)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot rebuild strategy '{name}': {exc}") from exc


def _read_arrays(path: Path) -> Arrays:
    if not path.exists():
        return {}
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable array file: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not an .npz archive")
    with npz:
        try:
            return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # object arrays need pickle
            raise ValueError(f"{path} is not a readable array file: {exc}") from exc
