"""The gold splits PLASM's teachers train and are scored on, their ensemble's predictions, and
pseudo-labeled (or unlabeled) copies of pool examples."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.engine.data.iob import to_iob2
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.metrics import decode_classes, decode_tags
from backend.engine.types import (
    ClassificationExample,
    Example,
    FloatArray,
    LabelSchema,
    Predictions,
    TaggingExample,
    TaskType,
    classification_examples,
    tagging_examples,
)


def split_gold(gold: Sequence[Example], dev_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded hold-out of `round(dev_share * n)` gold examples (at least one on each side)."""
    return split_folds(gold, dev_share, seed, 1)[0]


def split_folds(gold: Sequence[Example], dev_share: float, seed: int, folds: int
                ) -> list[tuple[list[Example], list[Example]]]:
    """`folds` disjoint seeded dev folds of `round(dev_share * n)` gold examples each (at least
    one), each with the rest as its training split; the first fold is `split_gold`'s."""
    n = len(gold)
    if n < 2:
        raise NotEnoughLabelsError(f"PLASM needs at least 2 gold examples (one for the dev split), got {n}")
    n_dev = min(n - 1, max(1, int(round(dev_share * n))))
    if folds * n_dev > n - 1:
        raise NotEnoughLabelsError(f"{folds} teachers need {folds} disjoint dev folds of {n_dev} and one training "
                                   f"example: more than the {n} gold examples")
    order = np.random.default_rng(seed).permutation(n)
    out = []
    for j in range(folds):
        dev_idx = np.sort(order[j * n_dev:(j + 1) * n_dev])
        train_idx = np.sort(np.setdiff1d(order, dev_idx))
        out.append(([gold[int(i)] for i in train_idx], [gold[int(i)] for i in dev_idx]))
    return out


def average_predictions(predictions: Sequence[Predictions]) -> Predictions:
    """The ensemble's predictions: the mean of the members' probabilities (per word for tagging)."""
    first = predictions[0]
    if len(predictions) == 1:
        return first
    probs: FloatArray | list[FloatArray]
    if isinstance(first.probs, np.ndarray):
        probs = np.mean([p.probs for p in predictions], axis=0)
    else:
        probs = [np.mean(rows, axis=0) for rows in zip(*(p.probs for p in predictions))]
    return Predictions(first.task_type, probs, multi_label=first.multi_label)


def concat_predictions(predictions: Sequence[Predictions]) -> Predictions:
    """Predictions for several example lists, one after the other."""
    first = predictions[0]
    probs: FloatArray | list[FloatArray]
    if isinstance(first.probs, np.ndarray):
        probs = np.concatenate([p.probs for p in predictions], axis=0)
    else:
        probs = [row for p in predictions for row in p.probs]
    return Predictions(first.task_type, probs, multi_label=first.multi_label)


def strip_labels(example: Example) -> Example:
    """An unlabeled copy of an example (what the pool holds)."""
    if isinstance(example, TaggingExample):
        return TaggingExample(list(example.words), [], example.offsets, example.text)
    return ClassificationExample(example.text)


def pseudo_examples(predictions: Predictions, pool: Sequence[Example], schema: LabelSchema) -> list[Example]:
    """Copies of the pool examples carrying the teacher's argmax labels (valid IOB2 for tagging)."""
    if schema.task_type is TaskType.CLASSIFICATION:
        classes = decode_classes(predictions, schema)
        return [ClassificationExample(ex.text, labels) for ex, labels in zip(classification_examples(pool), classes)]
    tags = decode_tags(predictions, schema)
    return [TaggingExample(list(ex.words), to_iob2(words), ex.offsets, ex.text)
            for ex, words in zip(tagging_examples(pool), tags)]
