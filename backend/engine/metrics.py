"""Evaluation metrics: accuracy / macro-F1 for classification, strict IOB2 span F1 for tagging."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from seqeval.metrics import f1_score as span_f1
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, f1_score

from backend.engine.types import Example, LabelSchema, Predictions, TaskType


def decode_labels(predictions: Predictions, schema: LabelSchema, threshold: float = 0.5) -> list:
    """Argmax classes (tuples for multi-label) or per-word IOB2 tags."""
    names = schema.output_names
    if schema.task_type is TaskType.TAGGING:
        return [[names[i] for i in np.asarray(p).argmax(axis=-1)] for p in predictions.probs]
    probs = np.asarray(predictions.probs)
    if schema.multi_label:
        return [tuple(names[i] for i in np.flatnonzero(row >= threshold)) or (names[int(row.argmax())],) for row in probs]
    return [(names[i],) for i in probs.argmax(axis=-1)]


def main_metric_name(schema: LabelSchema) -> str:
    """Display name of `evaluate(...)["main"]` for this schema (tables, plots, model cards)."""
    if schema.task_type is TaskType.TAGGING:
        return "span F1 (strict)"
    return "macro-F1" if schema.multi_label else "accuracy"


def evaluate(predictions: Predictions, examples: Sequence[Example], schema: LabelSchema) -> dict[str, float]:
    """The metrics a user compares models by; `main` is the one learning curves plot."""
    predicted = decode_labels(predictions, schema)
    if schema.task_type is TaskType.TAGGING:
        gold = [list(ex.tags) for ex in examples]  # type: ignore[union-attr]
        f1 = span_f1(gold, predicted, mode="strict", scheme=IOB2, zero_division=0)
        return {"main": float(f1), "span_f1": float(f1)}
    if schema.multi_label:
        index = {n: i for i, n in enumerate(schema.labels)}
        def onehot(rows):
            out = np.zeros((len(rows), len(index)), dtype=int)
            for r, labels in enumerate(rows):
                out[r, [index[l] for l in labels]] = 1
            return out
        y_true, y_pred = onehot([ex.labels for ex in examples]), onehot(predicted)  # type: ignore[union-attr]
        macro = f1_score(y_true, y_pred, average="macro", zero_division=0)
        return {"main": float(macro), "macro_f1": float(macro), "subset_accuracy": float(accuracy_score(y_true, y_pred))}
    y_true = [ex.labels[0] for ex in examples]  # type: ignore[union-attr]
    y_pred = [p[0] for p in predicted]
    acc = accuracy_score(y_true, y_pred)
    macro = f1_score(y_true, y_pred, labels=list(schema.labels), average="macro", zero_division=0)
    return {"main": float(acc), "accuracy": float(acc), "macro_f1": float(macro)}
