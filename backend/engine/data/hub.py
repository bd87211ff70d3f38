"""Hugging Face hub corpora, `hf:<name>[:<config>]` (needs network or a warm cache; the tests use a
stand-in `datasets` module and never reach the hub)."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from backend.engine.data.formats import TOKEN_KEYS
from backend.engine.data.rows import ClassificationRows, Parsed, Row, keep_row, label_values, tagged_sentences
from backend.engine.errors import DatasetError
from backend.engine.types import TaskType


def read_hub(spec: str, wanted: TaskType | None, text_field: str, label_field: str) -> Parsed:
    """Train split: text/label columns, or tokens/ner_tags for tagging (ClassLabel ids become names)."""
    ds = _load_train_split(spec)
    columns = list(ds.column_names)
    token_col = next((c for c in TOKEN_KEYS if c in columns), None)
    tag_col = next((c for c in ("ner_tags", "tags") if c in columns), None)
    is_tagging = wanted is TaskType.TAGGING or (
        wanted is None and token_col is not None and tag_col is not None and label_field not in columns
    )
    if is_tagging:
        if token_col is None or tag_col is None:
            raise DatasetError(f"{spec}: tagging needs tokens/words and ner_tags/tags columns; columns are {columns}")
        names = _class_names(ds.features[tag_col])
        sentences = (
            (f"{spec}, row {i}", words, [names[t] if names is not None else t for t in tags])
            for i, (words, tags) in enumerate(zip(ds[token_col], ds[tag_col]))
        )
        return tagged_sentences(spec, sentences)
    missing = [c for c in (text_field, label_field) if c not in columns]
    if missing:
        raise DatasetError(
            f"{spec}: missing column(s) {', '.join(map(repr, missing))}; columns are {columns}. "
            "Pass text_field=/label_field= to name the right ones."
        )
    label_feature = ds.features[label_field]
    names = _class_names(label_feature)
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    for text, raw in zip(ds[text_field], ds[label_field]):
        labels = tuple(dict.fromkeys(_label_name(v, names) for v in label_values(raw) if v is not None and v != -1))
        if keep_row((text or "").strip(), labels, dropped):
            rows.append(((text or "").strip(), labels))
    return ClassificationRows(spec, rows, dropped, multi_label=_is_sequence(label_feature))


def _load_train_split(spec: str) -> Any:
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 2:
        raise DatasetError(f"bad hub spec {spec!r}; expected hf:<name>[:<config>]")
    name, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
    try:
        import datasets as hf_datasets
    except ImportError as exc:
        raise DatasetError(f"{spec} needs the Hugging Face datasets library: pip install 'datasets>=2.18'") from exc
    try:
        return hf_datasets.load_dataset(name, config, split="train")
    except Exception as exc:  # the library raises many types (network, missing config, ...)
        raise DatasetError(f"could not load {spec} from the Hugging Face hub: {exc}") from exc


def _is_sequence(feature: Any) -> bool:
    return isinstance(feature, list) or hasattr(feature, "feature")


def _class_names(feature: Any) -> list[str] | None:
    """ClassLabel names of a feature or of a sequence feature's items; None for string labels."""
    if isinstance(feature, list) and feature:
        feature = feature[0]
    inner = getattr(feature, "feature", feature)
    names = getattr(inner, "names", None)
    return list(names) if names else None


def _label_name(value: Any, names: list[str] | None) -> str:
    if names is not None and isinstance(value, (int, np.integer)):
        return names[int(value)]
    return str(value).strip()
