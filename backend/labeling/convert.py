"""Label Studio tasks <-> engine examples, and model outputs -> Label Studio results.

Character offsets
-----------------
Label Studio's ``<Text>`` span results (``value.start`` / ``value.end``) count **Unicode code
points**, i.e. Python ``str`` indices, not JavaScript UTF-16 code units: an emoji such as "🐱"
advances the offset by 1, not 2. Sources: the frontend fix "Store code points instead of js
length" (HumanSignal/label-studio PR #1559, merged via label-studio-frontend PR #308, 2022, after
issues #1008 and #1347 reported UTF-16 offsets in 2021) and the frontend's end-to-end test
``web/libs/editor/tests/integration/e2e/ner/emoji.cy.ts`` ("Should calculate offsets by code points
in text"): on ``"🐱 Warning: This is a test text"`` selecting "test" must serialize
``start=21, end=25`` (UTF-16 would give 22, 26), with the text-rendering feature flag on or off.
So offsets are used as Python indices, and predicted spans are sent as Python indices with
``text == task_text[start:end]``.

Annotations made with 2021-era releases may still hold UTF-16 offsets. When a span's own
``value.text`` does not match the code-point slice but does match the UTF-16 slice, the span is
converted (with a warning); otherwise offsets are trusted, because ``value.text`` is not always a
verbatim copy of the task text (Label Studio escapes newlines in it, for one).
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import regex

from backend.engine.types import ClassificationExample, Example, TaggingExample, TaskType

from .label_config import LabelConfig, LabelConfigError

__all__ = [
    "ConversionReport",
    "MissingTextFieldError",
    "split_words",
    "task_text",
    "latest_annotation",
    "tasks_to_examples",
    "unlabeled_examples",
    "iob2_spans",
    "classification_results",
    "tagging_results",
    "prediction_entry",
    "utf16_to_index",
    "index_to_utf16",
]


class MissingTextFieldError(LabelConfigError):
    """A task's data lacks the field the label config reads (``value="$field"``), or it is not text."""

    def __init__(self, field_name: str, task_id: Any, reason: str = "missing_text_field", detail: str = "") -> None:
        self.field_name = field_name
        self.task_id = task_id
        self.reason = reason
        msg = detail or f"task {task_id!r} has no data field {field_name!r} (the label config reads ${field_name})"
        super().__init__(msg)


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------

# CJK scripts are written without spaces: one character per token (as BERT's tokenizer does), so
# a span inside a sentence does not tag the whole sentence.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD_RE = regex.compile(
    r"[" + _CJK + r"]\p{M}*"  # one CJK character (with any combining marks)
    r"|(?:(?![" + _CJK + r"])[\p{L}\p{N}\p{M}_])+"  # a run of letters/digits/marks ("café", "हिन्दी")
    r"|(?=[^\s\p{Cf}])\X"  # any other visible grapheme: punctuation, a whole emoji ZWJ sequence
)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Split text into (word, start, end) with code-point offsets; punctuation and emoji are their
    own tokens, combining marks stay with their letter, whitespace and zero-width format
    characters are dropped."""
    return [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


# ---------------------------------------------------------------------------------------------
# UTF-16 helpers (legacy annotations; clients that count like JavaScript)
# ---------------------------------------------------------------------------------------------


def index_to_utf16(text: str, index: int) -> int:
    """Python index -> JavaScript (UTF-16 code unit) offset."""
    return index + sum(1 for ch in text[:index] if ord(ch) > 0xFFFF)


def utf16_to_index(text: str, offset: int) -> int:
    """JavaScript (UTF-16 code unit) offset -> Python index; an offset inside a surrogate pair
    rounds up to the next character."""
    units = 0
    for i, ch in enumerate(text):
        if units >= offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)


# ---------------------------------------------------------------------------------------------
# Reports and task access
# ---------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """Examples built from tasks, the ids they came from (parallel lists), and what was left out."""

    examples: list[Example] = field(default_factory=list)
    task_ids: list[Any] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of tasks
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str) -> None:
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


def task_text(task: dict, config: LabelConfig) -> str:
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
    return value


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
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return -math.inf


def _id_key(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -math.inf


def latest_annotation(task: dict) -> tuple[dict | None, str | None]:
    """The latest non-cancelled annotation (by updated_at, then created_at, then id).

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
        key=lambda a: (_timestamp(a.get("updated_at")), _timestamp(a.get("created_at")), _id_key(a.get("id"))),
    )
    return best, None


def _results_for(annotation: dict, config: LabelConfig) -> list[dict] | None:
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


def tasks_to_examples(tasks: Sequence[dict], config: LabelConfig) -> ConversionReport:
    """Labeled examples from full Label Studio task JSON, one per usable task.

    Only the latest non-cancelled annotation of a task counts, and only its results whose
    ``from_name`` is the config's control. A task is skipped (and counted by reason) rather than
    raising: ``no_annotation``, ``cancelled``, ``missing_text_field``, ``non_string_text``,
    ``empty_text``, ``no_words``, ``malformed_result`` (the annotation's result is not a
    list of regions), ``unknown_label`` (a label the config does not define: the
    config changed, so the whole task is left out rather than half-labelled), and for
    classification ``no_label`` (nothing chosen) and ``multiple_choices`` (several choices under a
    single-choice config, e.g. from an API import: there is no right one to keep, so the task is
    left out). For tagging an annotation with no spans is a valid example: every word is ``O``.
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
        if config.task_type is TaskType.CLASSIFICATION:
            example: Example | None = _classification_example(task.get("id"), text, results, config, report)
        else:
            example = _tagging_example(task.get("id"), text, results, config, report)
        if example is not None:
            report.add(task.get("id"), example)
    return report


def unlabeled_examples(tasks: Sequence[dict], config: LabelConfig) -> ConversionReport:
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
        if config.task_type is TaskType.CLASSIFICATION:
            report.add(task.get("id"), ClassificationExample(text))
            continue
        words = split_words(text)
        if not words:
            report.skip("no_words")
            continue
        report.add(
            task.get("id"),
            TaggingExample([w for w, _, _ in words], [], [(s, e) for _, s, e in words], text),
        )
    return report


def _unknown(task_id: Any, names: list[str], config: LabelConfig, report: ConversionReport) -> None:
    report.skip("unknown_label")
    report.warnings.append(
        f"task {task_id!r}: label(s) {sorted(set(names))} not in control {config.control_name!r} "
        f"(known: {list(config.labels)}); task skipped"
    )


def _classification_example(
    task_id: Any, text: str, results: list[dict], config: LabelConfig, report: ConversionReport
) -> ClassificationExample | None:
    chosen: list[str] = []
    for r in results:
        choices = r["value"].get("choices")
        if isinstance(choices, str):
            choices = [choices]
        for c in choices or []:
            if isinstance(c, str) and c not in chosen:
                chosen.append(c)
    if not chosen:
        report.skip("no_label")
        return None
    mapped = [config.canonical_label(c) for c in chosen]
    unknown = [c for c, m in zip(chosen, mapped) if m is None]
    if unknown:
        _unknown(task_id, unknown, config, report)
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


_ASTRAL = regex.compile(r"[\U00010000-\U0010FFFF]")


def _span_offsets(
    task_id: Any, value: dict, text: str, astral: bool, report: ConversionReport
) -> tuple[int, int] | None:
    """Validated code-point (start, end) of one span, or None (with a warning) when unusable."""
    raw_start, raw_end = value.get("start"), value.get("end")
    try:
        if isinstance(raw_start, bool) or isinstance(raw_end, bool):
            raise TypeError
        start, end = int(raw_start), int(raw_end)  # type: ignore[arg-type]
        if start != float(raw_start) or end != float(raw_end):  # type: ignore[arg-type]
            raise ValueError
    except (TypeError, ValueError):
        report.warnings.append(f"task {task_id!r}: span with non-integer offsets {raw_start!r}..{raw_end!r} skipped")
        return None
    span_text = value.get("text")
    if astral and isinstance(span_text, str) and span_text and 0 <= start < end and text[start:end] != span_text:
        s16, e16 = utf16_to_index(text, start), utf16_to_index(text, end)
        if text[s16:e16] == span_text:
            report.warnings.append(
                f"task {task_id!r}: span {start}..{end} {span_text!r} uses UTF-16 offsets "
                f"(old Label Studio); read as {s16}..{e16}"
            )
            start, end = s16, e16
    if not (0 <= start < end <= len(text)):
        report.warnings.append(
            f"task {task_id!r}: span {start}..{end} out of range for a text of {len(text)} characters; skipped"
        )
        return None
    return start, end


def _tagging_example(
    task_id: Any, text: str, results: list[dict], config: LabelConfig, report: ConversionReport
) -> TaggingExample | None:
    words = split_words(text)
    if not words:
        report.skip("no_words")
        return None
    starts = [s for _, s, _ in words]
    ends = [e for _, _, e in words]

    astral = _ASTRAL.search(text) is not None  # only then can UTF-16 offsets differ
    spans: list[tuple[int, int, str]] = []
    unknown: list[str] = []
    for r in results:
        value = r["value"]
        names = value.get("labels")
        if isinstance(names, str):
            names = [names]
        names = [n for n in (names or []) if isinstance(n, str)]
        if not names:
            report.warnings.append(f"task {task_id!r}: span without labels skipped")
            continue
        label = config.canonical_label(names[0])
        if label is None:
            unknown.append(names[0])
            continue
        if len(names) > 1:
            report.warnings.append(f"task {task_id!r}: span with several labels {names}; kept {names[0]!r}")
        offsets = _span_offsets(task_id, value, text, astral, report)
        if offsets is not None:
            spans.append((offsets[0], offsets[1], label))
    if unknown:
        _unknown(task_id, unknown, config, report)
        return None

    tags = ["O"] * len(words)
    kept: list[tuple[int, int, str]] = []
    next_free = 0  # first word index not yet covered by a kept span
    for start, end, label in sorted(set(spans), key=lambda s: (s[0], -s[1], s[2])):
        first = bisect.bisect_right(ends, start)  # first word ending after the span starts
        last = bisect.bisect_left(starts, end) - 1  # last word starting before the span ends
        if first > last:
            report.warnings.append(f"task {task_id!r}: span {start}..{end} {label!r} covers no word; skipped")
            continue
        if first < next_free:
            other = kept[-1]
            report.warnings.append(
                f"task {task_id!r}: span {start}..{end} {label!r} overlaps span {other[0]}..{other[1]} "
                f"{other[2]!r}; kept the earlier/longer one"
            )
            continue
        tags[first] = f"B-{label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{label}"
        kept.append((start, end, label))
        next_free = last + 1
    return TaggingExample([w for w, _, _ in words], tags, [(s, e) for _, s, e in words], text)


# ---------------------------------------------------------------------------------------------
# Model outputs -> Label Studio results
# ---------------------------------------------------------------------------------------------


def iob2_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Decode IOB2 tags into (first_word, end_word_exclusive, label); lenient like a model's
    argmax needs: an I- without a matching span starts one, a type change ends one."""
    spans: list[tuple[int, int, str]] = []
    current: list[Any] | None = None  # [first, end, label]
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current[2] == label:
            current[1] = i + 1
            continue
        if current is not None:
            spans.append((current[0], current[1], current[2]))
            current = None
        if prefix in ("B", "I") and label:
            current = [i, i + 1, label]
    if current is not None:
        spans.append((current[0], current[1], current[2]))
    return spans


def _require(config: LabelConfig, task_type: TaskType) -> None:
    if config.task_type is not task_type:
        raise ValueError(
            f"control {config.control_name!r} is {config.task_type.value}, not {task_type.value}"
        )


def classification_results(probs_row: np.ndarray, config: LabelConfig, threshold: float = 0.5) -> list[dict]:
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


def tagging_results(example: TaggingExample, word_probs: np.ndarray, config: LabelConfig) -> list[dict]:
    """Span results for one task from per-word tag probabilities (columns = ``output_names``).

    Rows may be fewer than words (the model truncated a long text): later words get no span.
    Offsets are code points, ``text`` is exactly ``example.text[start:end]``, and ``score`` is the
    mean of the span's words' highest probabilities.
    """
    _require(config, TaskType.TAGGING)
    if example.offsets is None or example.text is None:
        raise ValueError("tagging_results needs an example built from task text (with offsets and text)")
    if len(example.offsets) != len(example.words):
        raise ValueError(f"{len(example.offsets)} offsets for {len(example.words)} words")
    names = config.schema.output_names
    probs = np.asarray(word_probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(f"expected an (n_words, {len(names)}) array over {list(names)}, got shape {probs.shape}")
    if probs.shape[0] > len(example.words):
        raise ValueError(f"{probs.shape[0]} probability rows for {len(example.words)} words")
    if probs.shape[0] == 0:
        return []
    best = probs.argmax(axis=1)
    best_p = probs.max(axis=1)
    results = []
    for first, end, label in iob2_spans([names[i] for i in best]):
        start_char = example.offsets[first][0]
        end_char = example.offsets[end - 1][1]
        results.append(
            {
                "from_name": config.control_name,
                "to_name": config.object_name,
                "type": "labels",
                "value": {
                    "start": int(start_char),
                    "end": int(end_char),
                    "text": example.text[start_char:end_char],
                    "labels": [label],
                },
                "score": float(np.mean(best_p[first:end])),
            }
        )
    return results


def prediction_entry(result: list[dict], score: float, model_version: str) -> dict:
    """One entry of a ``/predict`` answer (or a prediction to import) for one task."""
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"prediction score must be finite, got {score}")
    return {"result": result, "score": score, "model_version": str(model_version)}
