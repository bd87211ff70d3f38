"""What every reader hands to `load_dataset`: rows read from a source, before the label schema is known.

Readers (files, packaged corpora, the Hugging Face hub) differ in where rows come from, not in what
makes a row usable; the checks that decide that live here once.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from backend.engine.data.iob import to_iob2
from backend.engine.errors import DatasetError
from backend.engine.types import TaggingExample

# Why a row was skipped while loading: the keys of `Dataset.dropped`.
DropReason = Literal["empty_text", "empty_label", "plot", "duplicate", "conflicting_label"]
Row = tuple[str, tuple[str, ...]]  # (text, labels)


@dataclass
class ClassificationRows:
    name: str
    rows: list[Row]
    dropped: Counter[str] = field(default_factory=Counter)
    multi_label: bool | None = None  # None: multi-label when any row carries several labels
    dedupe: bool = False  # drop repeated texts (packaged corpora repeat some, sometimes with other labels)


@dataclass
class TaggedSentences:
    name: str
    examples: list[TaggingExample]
    dropped: Counter[str] = field(default_factory=Counter)


Parsed = ClassificationRows | TaggedSentences


def keep_row(text: str, labels: tuple[str, ...], dropped: Counter[str]) -> bool:
    """Whether a classification row has a text and a label; counts it under its reason if not."""
    if not text:
        dropped["empty_text"] += 1
        return False
    if not labels:
        dropped["empty_label"] += 1
        return False
    return True


def label_values(raw: Any) -> list[Any]:
    """A label cell as a list: a list/tuple as is (multi-label), None as no label, else one label."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    return [] if raw is None else [raw]


def tagging_example(words: Sequence[Any], tags: Sequence[Any], where: str) -> TaggingExample | None:
    """Checked IOB2 example, or None when it has no words (to be counted as dropped)."""
    if len(words) != len(tags):
        raise DatasetError(f"{where}: {len(words)} tokens but {len(tags)} tags")
    if not words:
        return None
    try:
        return TaggingExample([str(w) for w in words], to_iob2(tags))
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from exc


def tagged_sentences(name: str, sentences: Iterable[tuple[str, Sequence[Any], Sequence[Any]]]) -> TaggedSentences:
    """`(where, words, tags)` triples as checked IOB2 examples; sentences with no words are counted."""
    result = TaggedSentences(name, [])
    for where, words, tags in sentences:
        example = tagging_example(words, tags, where)
        if example is None:
            result.dropped["empty_text"] += 1
        else:
            result.examples.append(example)
    return result
