"""Evaluation metrics: accuracy / macro-F1 for classification, strict IOB2 span F1 for tagging."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from seqeval.metrics import f1_score as span_f1
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, f1_score

from backend.engine.iob2 import iob2_tags
from backend.engine.types import (
    Example,
    LabelSchema,
    Predictions,
    TaskType,
    classification_examples,
    tagging_examples,
)


def decode_classes(predictions: Predictions, schema: LabelSchema, threshold: float = 0.5) -> list[tuple[str, ...]]:
    """Argmax classes, one tuple per example (every class at or above `threshold` for
    multi-label, at least the argmax)."""
    names = schema.output_names
    probs = np.asarray(predictions.probs)
    if schema.multi_label:
        return [tuple(names[i] for i in np.flatnonzero(row >= threshold)) or (names[int(row.argmax())],)
                for row in probs]
    return [(names[i],) for i in probs.argmax(axis=-1)]


def decode_tags(predictions: Predictions, schema: LabelSchema) -> list[list[str]]:
    """The most probable valid IOB2 tags of each example's words (`iob2.iob2_tags`: constrained
    Viterbi, never an I-X that no B-X opens, where a per-word argmax could emit one)."""
    return iob2_tags(list(predictions.probs), schema.output_names)


def decode_labels(
    predictions: Predictions, schema: LabelSchema, threshold: float = 0.5
) -> list[tuple[str, ...]] | list[list[str]]:
    """Argmax classes (tuples for multi-label) or per-word valid IOB2 tags (`decode_tags`)."""
    if schema.task_type is TaskType.TAGGING:
        return decode_tags(predictions, schema)
    return decode_classes(predictions, schema, threshold)


def main_metric_name(schema: LabelSchema) -> str:
    """Display name of `evaluate(...)["main"]` for this schema (tables, plots, model cards)."""
    if schema.task_type is TaskType.TAGGING:
        return "span F1 (strict)"
    return "macro-F1" if schema.multi_label else "accuracy"


def strict_span_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Strict IOB2 span F1 over sentences (seqeval; 0 where nothing is predicted or labeled)."""
    return float(span_f1([list(g) for g in gold], [list(p) for p in predicted], mode="strict", scheme=IOB2,
                         zero_division=0))


def evaluate(predictions: Predictions, examples: Sequence[Example], schema: LabelSchema) -> dict[str, float]:
    """The metrics a user compares models by; `main` is the one learning curves plot."""
    if schema.task_type is TaskType.TAGGING:
        gold_tags = [list(ex.tags) for ex in tagging_examples(examples)]
        f1 = strict_span_f1(gold_tags, decode_tags(predictions, schema))
        return {"main": f1, "span_f1": f1}
    predicted = decode_classes(predictions, schema)
    gold = [ex.labels for ex in classification_examples(examples)]
    if schema.multi_label:
        index = {n: i for i, n in enumerate(schema.labels)}

        def onehot(rows: Sequence[Sequence[str]]) -> NDArray[np.int_]:
            out = np.zeros((len(rows), len(index)), dtype=int)
            for r, labels in enumerate(rows):
                out[r, [index[lab] for lab in labels]] = 1
            return out

        y_true, y_pred = onehot(gold), onehot(predicted)
        macro = f1_score(y_true, y_pred, average="macro", zero_division=0)
        subset = float(accuracy_score(y_true, y_pred))
        return {"main": float(macro), "macro_f1": float(macro), "subset_accuracy": subset}
    y_true_classes = [labels[0] for labels in gold]
    y_pred_classes = [p[0] for p in predicted]
    acc = accuracy_score(y_true_classes, y_pred_classes)
    macro = f1_score(y_true_classes, y_pred_classes, labels=list(schema.labels), average="macro", zero_division=0)
    return {"main": float(acc), "accuracy": float(acc), "macro_f1": float(macro)}
