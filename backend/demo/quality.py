"""How good a model is on the demo's held-out gold: the acquisition model through the backend's
``/predict`` (what Label Studio would be shown), the successor from its exported directory (what
the user ships). One metric for both: accuracy for classification, strict span F1 for NER
(`backend.engine.metrics.evaluate`'s ``main``)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqeval.metrics import f1_score as span_f1
from seqeval.scheme import IOB2

from backend.demo.data import DemoData, as_examples
from backend.engine.metrics import evaluate
from backend.engine.models.factory import load_model
from backend.engine.types import (
    ClassificationExample,
    Example,
    TaggingExample,
    TaskType,
    classification_examples,
    tagging_examples,
)


def compare(predicted: Sequence[Example | None], gold: Sequence[Example], task_type: TaskType) -> float:
    """Accuracy (classification; an unreadable prediction counts as wrong) or strict IOB2 span F1."""
    if task_type is TaskType.CLASSIFICATION:
        hits = [isinstance(p, ClassificationExample) and p.labels == g.labels
                for p, g in zip(predicted, classification_examples(gold))]
        return sum(hits) / max(len(hits), 1)
    gold_tagged = tagging_examples(gold)
    pred_tags = [list(p.tags) if isinstance(p, TaggingExample) else ["O"] * len(g.words)
                 for p, g in zip(predicted, gold_tagged)]
    gold_tags = [list(g.tags) for g in gold_tagged]
    return float(span_f1(gold_tags, pred_tags, mode="strict", scheme=IOB2, zero_division=0))


def held_out_examples(data: DemoData) -> list[Example]:
    """The held-out gold as examples, converted from its Label Studio results like annotations."""
    examples = as_examples(data.config, [t.text for t in data.held_out], [t.result for t in data.held_out])
    converted = [e for e in examples if e is not None]
    if len(converted) < len(examples):
        raise ValueError("a held-out gold task did not convert to an example")
    return converted


def predicted_quality(data: DemoData, results: Sequence[list[dict[str, Any]]], gold: Sequence[Example]) -> float:
    """The score of `/predict` results (one per held-out task, in order) against the gold."""
    predicted = as_examples(data.config, [t.text for t in data.held_out], list(results))
    return compare(predicted, gold, data.config.task_type)


def successor_quality(directory: Path, gold: Sequence[Example]) -> float:
    """The exported successor's score on the held-out gold (loaded from its directory with the
    training settings saved beside it)."""
    model = load_model(directory)
    return float(evaluate(model.predict(list(gold)), gold, model.schema)["main"])
