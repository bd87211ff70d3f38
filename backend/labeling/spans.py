"""A tagging annotation (``labels`` span results) -> a word-level IOB2 `TaggingExample`.

Spans are validated one by one (offsets, old UTF-16 offsets, labels) and problems become warnings;
overlapping spans keep the earlier/longer one. Offsets are code points (`backend.labeling.text`).
"""
from __future__ import annotations

import bisect
from typing import Any, Literal

from backend.engine.types import TaggingExample

from .label_config import LabelConfig
from .ls_json import JSONObject
from .text import has_astral, split_words, utf16_to_index

__all__ = ["tagging_example", "unknown_labels"]

Span = tuple[int, int, str]  # code-point start, end (exclusive), schema label


def unknown_labels(task_id: Any, names: list[str], config: LabelConfig) -> str:
    """The warning for a task left out because its annotation uses labels the config lacks."""
    return (
        f"task {task_id!r}: label(s) {sorted(set(names))} not in control {config.control_name!r} "
        f"(known: {list(config.labels)}); task skipped"
    )


def tagging_example(
    task_id: Any, text: str, results: list[JSONObject], config: LabelConfig, warnings: list[str]
) -> tuple[TaggingExample | None, Literal["no_words", "unknown_label"] | None]:
    """``(example, None)``, or ``(None, reason)`` when the task must be skipped; an annotation with
    no spans is a valid all-``O`` example. Warnings are appended to `warnings`."""
    words = split_words(text)
    if not words:
        return None, "no_words"
    spans, unknown = _spans(task_id, text, results, config, warnings)
    if unknown:
        warnings.append(unknown_labels(task_id, unknown, config))
        return None, "unknown_label"
    tags = _iob2_tags(task_id, words, spans, warnings)
    return TaggingExample([w for w, _, _ in words], tags, [(s, e) for _, s, e in words], text), None


def _spans(
    task_id: Any, text: str, results: list[JSONObject], config: LabelConfig, warnings: list[str]
) -> tuple[list[Span], list[str]]:
    """The usable spans of the results, and the label names the config does not know."""
    astral = has_astral(text)  # only then can UTF-16 offsets differ
    spans: list[Span] = []
    unknown: list[str] = []
    for r in results:
        value = r["value"]
        names = value.get("labels")
        if isinstance(names, str):
            names = [names]
        names = [n for n in (names or []) if isinstance(n, str)]
        if not names:
            warnings.append(f"task {task_id!r}: span without labels skipped")
            continue
        label = config.canonical_label(names[0])
        if label is None:
            unknown.append(names[0])
            continue
        if len(names) > 1:
            warnings.append(f"task {task_id!r}: span with several labels {names}; kept {names[0]!r}")
        offsets = _span_offsets(task_id, value, text, astral, warnings)
        if offsets is not None:
            spans.append((offsets[0], offsets[1], label))
    return spans, unknown


def _integral(raw: object) -> int:
    """`raw` as an int when it is a whole number (5, 5.0, "5"); TypeError or ValueError otherwise
    (true/false, null, 5.5, "five", a list)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise TypeError
    value = int(raw)
    if value != float(raw):
        raise ValueError
    return value


def _span_offsets(
    task_id: Any, value: JSONObject, text: str, astral: bool, warnings: list[str]
) -> tuple[int, int] | None:
    """Validated code-point (start, end) of one span, or None (with a warning) when unusable."""
    raw_start, raw_end = value.get("start"), value.get("end")
    try:
        start, end = _integral(raw_start), _integral(raw_end)
    except (TypeError, ValueError):
        warnings.append(f"task {task_id!r}: span with non-integer offsets {raw_start!r}..{raw_end!r} skipped")
        return None
    span_text = value.get("text")
    if astral and isinstance(span_text, str) and span_text and 0 <= start < end and text[start:end] != span_text:
        s16, e16 = utf16_to_index(text, start), utf16_to_index(text, end)
        if text[s16:e16] == span_text:
            warnings.append(
                f"task {task_id!r}: span {start}..{end} {span_text!r} uses UTF-16 offsets "
                f"(old Label Studio); read as {s16}..{e16}"
            )
            start, end = s16, e16
    if not (0 <= start < end <= len(text)):
        warnings.append(
            f"task {task_id!r}: span {start}..{end} out of range for a text of {len(text)} characters; skipped"
        )
        return None
    return start, end


def _iob2_tags(
    task_id: Any, words: list[tuple[str, int, int]], spans: list[Span], warnings: list[str]
) -> list[str]:
    """One IOB2 tag per word; a span tags every word it touches, overlaps keep the earlier/longer."""
    starts = [s for _, s, _ in words]
    ends = [e for _, _, e in words]
    tags = ["O"] * len(words)
    kept: list[Span] = []
    next_free = 0  # first word index not yet covered by a kept span
    for start, end, label in sorted(set(spans), key=lambda s: (s[0], -s[1], s[2])):
        first = bisect.bisect_right(ends, start)  # first word ending after the span starts
        last = bisect.bisect_left(starts, end) - 1  # last word starting before the span ends
        if first > last:
            warnings.append(f"task {task_id!r}: span {start}..{end} {label!r} covers no word; skipped")
            continue
        if first < next_free:
            other = kept[-1]
            warnings.append(
                f"task {task_id!r}: span {start}..{end} {label!r} overlaps span {other[0]}..{other[1]} "
                f"{other[2]!r}; kept the earlier/longer one"
            )
            continue
        tags[first] = f"B-{label}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{label}"
        kept.append((start, end, label))
        next_free = last + 1
    return tags
