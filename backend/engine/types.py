"""Plain data types the engine trades in: label schemas, examples and model outputs.

Kept free of Flask, Redis and Label Studio so the engine can run anywhere (simulation, workers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

# Array shapes the engine passes around, by element kind (any precision: float16 features,
# float32 probabilities, float64 scores; intp or int64 positions).
FloatArray = NDArray[np.floating[Any]]
IndexArray = NDArray[np.integer[Any]]  # positions into a list of examples, or into the pool
BoolArray = NDArray[np.bool_]


class TaskType(str, Enum):  # noqa: UP042 - StrEnum would change str() and f-strings of members
    CLASSIFICATION = "classification"
    TAGGING = "tagging"


@dataclass(frozen=True)
class LabelSchema:
    """What the model predicts: classes for classification, entity types for tagging."""

    task_type: TaskType
    labels: tuple[str, ...]
    multi_label: bool = False

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("a label schema needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels in {self.labels}")
        if self.multi_label and self.task_type is not TaskType.CLASSIFICATION:
            raise ValueError("multi_label applies to classification only")

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the model's output units: classes, or IOB2 tags (O, B-X, I-X, ...)."""
        if self.task_type is TaskType.CLASSIFICATION:
            return self.labels
        return ("O",) + tuple(f"{prefix}-{label}" for label in self.labels for prefix in ("B", "I"))

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    def to_dict(self) -> dict[str, Any]:
        return {"task_type": self.task_type.value, "labels": list(self.labels), "multi_label": self.multi_label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSchema:
        return cls(TaskType(data["task_type"]), tuple(data["labels"]), bool(data.get("multi_label", False)))


@dataclass
class ClassificationExample:
    text: str
    labels: tuple[str, ...] = ()  # gold classes; empty while unlabeled


@dataclass
class TaggingExample:
    words: list[str]
    tags: list[str] = field(default_factory=list)  # IOB2 tag per word; empty while unlabeled
    # Character offsets (start, end) of each word in `text`, when the example came from raw text.
    offsets: list[tuple[int, int]] | None = None
    text: str | None = None


Example = ClassificationExample | TaggingExample


def _all_classification(examples: Sequence[Example]) -> TypeGuard[Sequence[ClassificationExample]]:
    return all(isinstance(ex, ClassificationExample) for ex in examples)


def _all_tagging(examples: Sequence[Example]) -> TypeGuard[Sequence[TaggingExample]]:
    return all(isinstance(ex, TaggingExample) for ex in examples)


def classification_examples(examples: Sequence[Example]) -> Sequence[ClassificationExample]:
    """`examples` (the same sequence, not a copy) as classification examples: what code on a
    classification schema's path reads. A tagging example among them is a schema / data mismatch:
    TypeError."""
    if _all_classification(examples):
        return examples
    raise TypeError("expected classification examples (text and classes), got a tagging example")


def tagging_examples(examples: Sequence[Example]) -> Sequence[TaggingExample]:
    """`examples` (the same sequence) as tagging examples; TypeError on a classification example."""
    if _all_tagging(examples):
        return examples
    raise TypeError("expected tagging examples (words and tags), got a classification example")


@dataclass
class Predictions:
    """Model outputs for a batch of examples, in input order.

    Classification: `probs` is an (N, C) array (sigmoid outputs for multi-label).
    Tagging: `probs` is a list of (n_words, T) arrays, one per example, read at each word's first
    sub-token. `embeddings` (N, H) holds pooled [CLS] vectors when asked for (Mahalanobis);
    `features` (N, H) float16 the mean-pooled, L2-normalised vectors the proxy head reads, when asked
    for (the fast path's features aligned with a fine-tuned model, from the same forward pass).
    """

    task_type: TaskType
    probs: FloatArray | list[FloatArray]
    embeddings: FloatArray | None = None
    multi_label: bool = False  # sigmoid outputs, one binary decision per class
    features: FloatArray | None = None

    def __len__(self) -> int:
        return len(self.probs)
