"""Unlabeled pool files (PLASM's pseudo-labeling pool): the formats `load_dataset` reads, without labels.

* `.txt` — one text per line (tagging: whitespace-separated words);
* `.jsonl` / `.json` — objects with the text field, or `tokens` / `words` lists for tagging;
* `.csv` / `.tsv` — the text column.

Compressed files (`.gz`, `.bz2`, `.xz`) and encodings are handled as in `formats`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from backend.engine.data.formats import (
    CSV_SUFFIXES,
    JSON_SUFFIXES,
    TOKEN_KEYS,
    JsonObject,
    json_records,
    read_text,
    split_lines,
)
from backend.engine.errors import DatasetError
from backend.engine.types import ClassificationExample, Example, TaggingExample, TaskType


def read_unlabeled_pool(path: str | Path, task_type: TaskType, text_field: str = "text") -> list[Example]:
    """Unlabeled examples of `task_type` from a pool file; empty entries are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such unlabeled pool file {str(path)!r}")
    text = read_text(path)
    suffix = Path(path.name.removesuffix(path.suffix)).suffix if path.suffix in (".gz", ".bz2", ".xz") else path.suffix
    if suffix in JSON_SUFFIXES:
        items = [_json_item(obj, text_field, path, line_no) for line_no, obj in json_records(text, path)]
    elif suffix in CSV_SUFFIXES:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        if text_field not in (reader.fieldnames or []):
            raise DatasetError(f"{path}: no column {text_field!r}; columns are {reader.fieldnames}")
        items = [row[text_field] for row in reader]
    else:
        items = [line for line in split_lines(text) if line.strip()]
    items = [item for item in items if item]
    if task_type is TaskType.TAGGING:
        return [TaggingExample(item.split() if isinstance(item, str) else [str(w) for w in item]) for item in items]
    return [ClassificationExample(item if isinstance(item, str) else " ".join(map(str, item))) for item in items]


def _json_item(obj: JsonObject, text_field: str, path: Path, line_no: int) -> Any:
    for key in (*TOKEN_KEYS, text_field):
        if obj.get(key):
            return obj[key]
    if text_field in obj or any(key in obj for key in TOKEN_KEYS):
        return None  # present but empty: skipped
    raise DatasetError(f"{path}, line {line_no}: needs {text_field!r} or one of {' / '.join(TOKEN_KEYS)}")
