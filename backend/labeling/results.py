"""Model outputs -> Label Studio results: ``choices`` for classification, code-point ``labels``
spans for tagging (see `backend.labeling.text`), and the ``/predict`` entry wrapping them."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from backend.engine.iob2 import iob2_tags
from backend.engine.types import FloatArray, IndexArray, TaggingExample, TaskType

from .label_config import LabelConfig
from .ls_json import JSONObject

__all__ = ["iob2_spans", "classification_results", "tagging_results", "prediction_entry"]


def iob2_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Decode IOB2 tags into (first_word, end_word_exclusive, label); lenient like a model's
    argmax needs: an I- without a matching span starts one, a type change ends one."""
    spans: list[tuple[int, int, str]] = []
    current: tuple[int, int, str] | None = None  # the open span: first, end, label
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current[2] == label:
            current = (current[0], i + 1, label)
            continue
        if current is not None:
            spans.append(current)
            current = None
        if prefix in ("B", "I") and label:
            current = (i, i + 1, label)
    if current is not None:
        spans.append(current)
    return spans


def gold_tagging_results(
    words: Sequence[str], tags: Sequence[str], config: LabelConfig
) -> tuple[str, list[JSONObject]]:
    """A tagged sentence as Label Studio holds it: the words joined by spaces, and one ``labels``
    region per IOB2 span (code-point offsets) — how the demo and the tests annotate from gold."""
    text = " ".join(words)
    starts, pos = [], 0
    for word in words:
        starts.append(pos)
        pos += len(word) + 1
    regions = []
    for first, end, label in iob2_spans(tags):
        start, stop = starts[first], starts[end - 1] + len(words[end - 1])
        regions.append({"from_name": config.control_name, "to_name": config.object_name, "type": "labels",
                        "value": {"start": start, "end": stop, "text": text[start:stop], "labels": [label]}})
    return text, regions


def _require(config: LabelConfig, task_type: TaskType) -> None:
    if config.task_type is not task_type:
        raise ValueError(
            f"control {config.control_name!r} is {config.task_type.value}, not {task_type.value}"
        )


def classification_results(probs_row: FloatArray, config: LabelConfig, threshold: float = 0.5) -> list[JSONObject]:
    """One ``choices`` result for a task: the argmax class (single-label), or every class at or
    above `threshold` and at least the argmax (multi-label). ``score`` is the mean probability of
    the chosen classes."""
    _require(config, TaskType.CLASSIFICATION)
    probs = np.asarray(probs_row, dtype=float)
    labels = config.labels
    if probs.ndim != 1 or probs.shape[0] != len(labels):
        raise ValueError(f"expected {len(labels)} class probabilities for {list(labels)}, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"class probabilities are not finite: {probs.tolist()}")
    best = int(np.argmax(probs))
    chosen = [best]
    if config.schema.multi_label:
        chosen = sorted(set(np.flatnonzero(probs >= threshold).tolist()) | {best})
    return [
        {
            "from_name": config.control_name,
            "to_name": config.object_name,
            "type": "choices",
            "value": {"choices": [labels[i] for i in chosen]},
            "score": float(np.mean(probs[chosen])),
        }
    ]


def _checked_source(
    example: TaggingExample, probs: FloatArray, names: Sequence[str]
) -> tuple[list[tuple[int, int]], str]:
    """The example's word offsets and text, once the example and the probabilities are checked."""
    offsets, text = example.offsets, example.text
    if offsets is None or text is None:
        raise ValueError("tagging_results needs an example built from task text (with offsets and text)")
    if len(offsets) != len(example.words):
        raise ValueError(f"{len(offsets)} offsets for {len(example.words)} words")
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(f"expected an (n_words, {len(names)}) array over {list(names)}, got shape {probs.shape}")
    if probs.shape[0] > len(example.words):
        raise ValueError(f"{probs.shape[0]} probability rows for {len(example.words)} words")
    return offsets, text


def tagging_results(example: TaggingExample, word_probs: FloatArray, config: LabelConfig) -> list[JSONObject]:
    """Span results for one task from per-word tag probabilities (columns = ``output_names``, e.g.
    a fine-tuned tagger's), decoded into the most probable valid IOB2 sequence (`iob2.iob2_tags`:
    never an I-X that no B-X opens, where a per-word argmax could emit one), each span scored by
    its words' decoded tags' probabilities (see `decoded_tagging_results`)."""
    _require(config, TaskType.TAGGING)
    names = config.schema.output_names
    probs = np.asarray(word_probs, dtype=float)
    _checked_source(example, probs, names)
    if probs.shape[0] == 0:
        return []
    [decoded] = iob2_tags([probs], names)
    tags = np.array([names.index(t) for t in decoded], dtype=np.int64)
    return decoded_tagging_results(example, tags, probs[np.arange(len(tags)), tags], config)


def decoded_tagging_results(example: TaggingExample, tags: Sequence[int] | IndexArray, tag_probs: FloatArray,
                            config: LabelConfig) -> list[JSONObject]:
    """Span results for one task from decoded tag indices into ``output_names`` (a valid IOB2
    sequence, e.g. the token head's Viterbi path) and each tag's probability.

    Tags may be fewer than words (the model truncated a long text): later words get no span.
    Offsets are code points, ``text`` is exactly ``example.text[start:end]``, and ``score`` is the
    mean probability of the span's words' tags.
    """
    _require(config, TaskType.TAGGING)
    names = config.schema.output_names
    best = np.asarray(tags, dtype=np.int64)
    best_p = np.asarray(tag_probs, dtype=float)
    if best.ndim != 1 or best.shape != best_p.shape:
        raise ValueError(f"tags {best.shape} and their probabilities {best_p.shape} differ")
    if len(best) and (best.min() < 0 or best.max() >= len(names)):
        raise ValueError(f"tag indices outside the {len(names)} tags {list(names)}")
    offsets, text = _checked_source(example, np.zeros((len(best), len(names))), names)
    results = []
    for first, end, label in iob2_spans([names[i] for i in best]):
        start_char = offsets[first][0]
        end_char = offsets[end - 1][1]
        results.append(
            {
                "from_name": config.control_name,
                "to_name": config.object_name,
                "type": "labels",
                "value": {
                    "start": int(start_char),
                    "end": int(end_char),
                    "text": text[start_char:end_char],
                    "labels": [label],
                },
                "score": float(np.mean(best_p[first:end])),
            }
        )
    return results


def prediction_entry(result: list[JSONObject], score: float, model_version: str) -> JSONObject:
    """One entry of a ``/predict`` answer (or a prediction to import) for one task."""
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"prediction score must be finite, got {score}")
    return {"result": result, "score": score, "model_version": str(model_version)}
