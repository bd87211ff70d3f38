"""Label Studio tasks and annotations -> engine examples (labeled for training, unlabeled for
prediction), with a `ConversionReport` saying which tasks were left out and why.

Span offsets are code points (see `backend.labeling.text`); tagging annotations are read by
`backend.labeling.spans`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from backend.engine.types import ClassificationExample, Example, TaggingExample, TaskType

from .label_config import LabelConfig, LabelConfigError
from .ls_json import JSONObject
from .spans import tagging_example, unknown_labels
from .text import sanitize_text, split_words

__all__ = [
    "SkipReason",
    "ConversionReport",
    "MissingTextFieldError",
    "task_text",
    "latest_annotation",
    "tasks_to_examples",
    "unlabeled_examples",
    "text_to_example",
]

# Why a task gave no example; the keys of `ConversionReport.skipped`.
SkipReason = Literal[
    "invalid_task", "no_annotation", "cancelled", "missing_text_field", "non_string_text",
    "empty_text", "no_words", "malformed_result", "unknown_label", "no_label", "multiple_choices",
]
TextProblem = Literal["missing_text_field", "non_string_text"]


class MissingTextFieldError(LabelConfigError):
    """A task's data lacks the field the label config reads (``value="$field"``), or it is not text."""

    def __init__(
        self, field_name: str, task_id: Any, reason: TextProblem = "missing_text_field", detail: str = ""
    ) -> None:
        self.field_name = field_name
        self.task_id = task_id
        self.reason: TextProblem = reason
        msg = detail or f"task {task_id!r} has no data field {field_name!r} (the label config reads ${field_name})"
        super().__init__(msg)


@dataclass
class ConversionReport:
    """Examples built from tasks, the ids they came from (parallel lists), and what was left out."""

    examples: list[Example] = field(default_factory=list)
    task_ids: list[Any] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # SkipReason -> number of tasks
    warnings: list[str] = field(default_factory=list)
    # the tasks whose example comes from an annotation the project marked as ground truth
    ground_truth_ids: set[Any] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: SkipReason) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, task_id: Any, example: Example) -> None:
        self.examples.append(example)
        self.task_ids.append(task_id)

    def as_dict(self, max_warnings: int = 20) -> dict[str, Any]:
        """What a user reads to learn why tasks were not used (job status, project state, logs);
        warnings are capped so one broken import cannot flood Redis."""
        return {
            "examples": len(self.examples),
            "skipped": dict(sorted(self.skipped.items())),
            "warnings": self.warnings[:max_warnings],
            "warnings_total": len(self.warnings),
        }

    def summary(self) -> str:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{len(self.examples)} examples; skipped: {skipped}; {len(self.warnings)} warnings"


# ---------------------------------------------------------------------------------------------
# Task access
# ---------------------------------------------------------------------------------------------


def task_text(task: JSONObject, config: LabelConfig) -> str:
    """The text the label config points at, raising `MissingTextFieldError` if absent or not a string."""
    task_id = task.get("id") if isinstance(task, dict) else None
    data = task.get("data") if isinstance(task, dict) else None
    key = config.value_key
    if not isinstance(data, dict) or key not in data or data[key] is None:
        raise MissingTextFieldError(key, task_id)
    value = data[key]
    if not isinstance(value, str):
        raise MissingTextFieldError(
            key, task_id, "non_string_text",
            f"task {task_id!r}: data field {key!r} holds {type(value).__name__}, not text",
        )
    return sanitize_text(value)


def _timestamp(value: Any) -> float:
    """Sort key for created_at/updated_at: ISO strings (with or without zone) or unix numbers."""
    if isinstance(value, bool):
        return -math.inf
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return -math.inf
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return -math.inf


def _id_key(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -math.inf


def latest_annotation(task: JSONObject) -> tuple[JSONObject | None, Literal["no_annotation", "cancelled"] | None]:
    """The latest non-cancelled annotation (by updated_at, then created_at, then id); one the
    project marked as ground truth (Label Studio's star, ``ground_truth``) comes before any other.

    Returns ``(annotation, None)``, or ``(None, reason)`` with reason "no_annotation" or "cancelled".
    """
    annotations = [a for a in (task.get("annotations") or []) if isinstance(a, dict)]
    if not annotations:
        return None, "no_annotation"
    live = [a for a in annotations if not a.get("was_cancelled")]
    if not live:
        return None, "cancelled"
    best = max(
        live,
        key=lambda a: (a.get("ground_truth") is True, _timestamp(a.get("updated_at")),
                       _timestamp(a.get("created_at")), _id_key(a.get("id"))),
    )
    return best, None


def _results_for(annotation: JSONObject, config: LabelConfig) -> list[JSONObject] | None:
    """The annotation's results for the config's control, or None when `result` is unreadable
    (a malformed JSON string, or not a list): for tagging an empty list means "no entities", so an
    unreadable result must not be read as one."""
    result = annotation.get("result") or []
    if isinstance(result, str):  # some exports/imports carry the result list as a JSON string
        try:
            result = json.loads(result)
        except (json.JSONDecodeError, ValueError):
            return None
    if not isinstance(result, list):
        return None
    return [
        r for r in result
        if isinstance(r, dict) and r.get("from_name") == config.control_name and isinstance(r.get("value"), dict)
    ]


def _check_text(task: Any, config: LabelConfig, report: ConversionReport) -> str | None:
    try:
        text = task_text(task, config)
    except MissingTextFieldError as exc:
        report.skip(exc.reason)
        return None
    if not text.strip():
        report.skip("empty_text")
        return None
    return text


# ---------------------------------------------------------------------------------------------
# Tasks -> examples
# ---------------------------------------------------------------------------------------------


def tasks_to_examples(tasks: Sequence[JSONObject], config: LabelConfig) -> ConversionReport:
    """Labeled examples from full Label Studio task JSON, one per usable task.

    Only the latest non-cancelled annotation of a task counts (a ground-truth one first: the
    report lists those tasks), and only its results whose ``from_name`` is the config's control.
    A task is skipped (and counted by reason) rather than raising: ``no_annotation``,
    ``cancelled``, ``missing_text_field``, ``non_string_text``, ``empty_text``, ``no_words``,
    ``malformed_result`` (the annotation's result is not a list of regions), ``unknown_label`` (a
    label the config does not define: the config changed, so the whole task is left out rather
    than half-labelled), and for classification ``no_label`` (nothing chosen) and
    ``multiple_choices`` (several choices under a single-choice config, e.g. from an API import:
    there is no right one to keep, so the task is left out). For tagging an annotation with no
    spans is a valid example: every word is ``O``.
    """
    report = ConversionReport()
    for task in tasks:
        if not isinstance(task, dict):
            report.skip("invalid_task")
            continue
        annotation, reason = latest_annotation(task)
        if annotation is None:
            report.skip(reason or "no_annotation")
            continue
        text = _check_text(task, config, report)
        if text is None:
            continue
        results = _results_for(annotation, config)
        if results is None:
            report.skip("malformed_result")
            report.warnings.append(
                f"task {task.get('id')!r}: annotation {annotation.get('id')!r} has a result that is not a "
                "list of regions (malformed JSON?); task skipped"
            )
            continue
        example = _labeled_example(task.get("id"), text, results, config, report)
        if example is not None:
            report.add(task.get("id"), example)
            if annotation.get("ground_truth") is True:
                report.ground_truth_ids.add(task.get("id"))
    return report


def _labeled_example(
    task_id: Any, text: str, results: list[JSONObject], config: LabelConfig, report: ConversionReport
) -> Example | None:
    if config.task_type is TaskType.CLASSIFICATION:
        return _classification_example(task_id, text, results, config, report)
    example, problem = tagging_example(task_id, text, results, config, report.warnings)
    if problem is not None:
        report.skip(problem)
    return example


def unlabeled_examples(tasks: Sequence[JSONObject], config: LabelConfig) -> ConversionReport:
    """Examples without labels for prediction, one per task with usable text (annotations are not
    looked at). Skips the same text problems as `tasks_to_examples`; `task_ids` tells which tasks
    the examples stand for, so callers can still answer one entry per task."""
    report = ConversionReport()
    for task in tasks:
        if not isinstance(task, dict):
            report.skip("invalid_task")
            continue
        text = _check_text(task, config, report)
        if text is None:
            continue
        example = text_to_example(text, config)
        if example is None:  # text is not blank here, so only a tagging text without words
            report.skip("no_words")
            continue
        report.add(task.get("id"), example)
    return report


def text_to_example(text: str, config: LabelConfig) -> Example | None:
    """An unlabeled example straight from a task's text (no task dict needed), or None when the
    text is unusable: blank, or for tagging without a single word."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = sanitize_text(text)
    if config.task_type is TaskType.CLASSIFICATION:
        return ClassificationExample(text)
    words = split_words(text)
    if not words:
        return None
    return TaggingExample([w for w, _, _ in words], [], [(s, e) for _, s, e in words], text)


def result_choices(results: list[JSONObject]) -> list[str]:
    """The choices a classification result names, in order, once each (a bare string counts as a
    one-item list; anything else is ignored): annotations and the backend's own predictions alike."""
    chosen: list[str] = []
    for r in results or []:
        choices = (r.get("value") or {}).get("choices") if isinstance(r, dict) else None
        if isinstance(choices, str):
            choices = [choices]
        for c in choices or []:
            if isinstance(c, str) and c not in chosen:
                chosen.append(c)
    return chosen


def _classification_example(
    task_id: Any, text: str, results: list[JSONObject], config: LabelConfig, report: ConversionReport
) -> ClassificationExample | None:
    chosen = result_choices(results)
    if not chosen:
        report.skip("no_label")
        return None
    mapped = [config.canonical_label(c) for c in chosen]
    unknown = [c for c, m in zip(chosen, mapped) if m is None]
    if unknown:
        report.skip("unknown_label")
        report.warnings.append(unknown_labels(task_id, unknown, config))
        return None
    labels = {m for m in mapped if m is not None}
    if not config.schema.multi_label and len(labels) > 1:
        report.skip("multiple_choices")
        report.warnings.append(
            f"task {task_id!r}: {len(labels)} choices {sorted(labels)} under single-choice control "
            f"{config.control_name!r}; task skipped"
        )
        return None
    return ClassificationExample(text, tuple(lab for lab in config.labels if lab in labels))
