"""Local corpus files: CSV/TSV, JSON/JSON lines, CoNLL and `<label>/*.txt` folders, optionally compressed.

Each reader returns rows (`ClassificationRows` / `TaggedSentences`); `load_dataset` turns them into a
`Dataset`. Bad input raises `DatasetError` naming the file, line and what to fix.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from backend.engine.data.iob import valid_tag
from backend.engine.data.rows import (
    ClassificationRows,
    Parsed,
    Row,
    TaggedSentences,
    keep_row,
    label_values,
    tagged_sentences,
)
from backend.engine.errors import DatasetError
from backend.engine.packaged import PACKAGED_CORPORA
from backend.engine.types import TaskType

CSV_SUFFIXES = {".csv", ".tsv"}
JSON_SUFFIXES = {".jsonl", ".json"}
CONLL_SUFFIXES = {".conll", ".bio", ".txt"}
_COMPRESSED: dict[str, Callable[[Path], bytes]] = {
    ".bz2": lambda p: bz2.decompress(p.read_bytes()),
    ".gz": lambda p: gzip.decompress(p.read_bytes()),
    ".xz": lambda p: lzma.decompress(p.read_bytes()),
}
MULTI_LABEL_SEP = "|"
JsonObject = dict[str, Any]  # one parsed JSON object of a data file: its fields are whatever the file holds
TOKEN_KEYS = ("tokens", "words")
TAG_KEYS = ("tags", "ner_tags")


def read_path(path: Path, wanted: TaskType | None, text_field: str, label_field: str) -> Parsed:
    """Rows of a file (format from its suffix) or of a label-folder directory."""
    if path.is_dir():
        return ClassificationRows(path.name, *read_label_folders(path))
    if not path.exists():
        raise DatasetError(
            f"no such file {str(path)!r}, and not a packaged dataset name "
            f"({', '.join(PACKAGED_CORPORA)}) or hf:<name>[:<config>]"
        )
    suffix = _format_suffix(path)
    text = read_text(path)
    if not text.strip():
        raise DatasetError(f"{path} is empty")
    name = path.name.split(".")[0] or path.name
    if suffix in CSV_SUFFIXES:
        if wanted is TaskType.TAGGING:
            raise DatasetError(f"{path}: CSV/TSV files hold classification data; use .conll or .jsonl for tagging")
        delimiter = "\t" if suffix == ".tsv" else ","
        return ClassificationRows(name, *read_csv(text, path, text_field, label_field, delimiter=delimiter))
    if suffix in JSON_SUFFIXES:
        return _read_json(name, text, path, wanted, text_field, label_field)
    if wanted is TaskType.CLASSIFICATION:
        raise DatasetError(f"{path}: CoNLL files hold tagging data; use .csv/.tsv/.jsonl for classification")
    return read_conll(name, text, path)


def _format_suffix(path: Path) -> str:
    """The format suffix, looking through a compression suffix (`x.csv.bz2` -> `.csv`)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    known = CSV_SUFFIXES | JSON_SUFFIXES | CONLL_SUFFIXES
    if suffix not in known:
        raise DatasetError(
            f"{path}: unknown file type {suffix or '(no suffix)'!r}; expected one of {', '.join(sorted(known))}"
        )
    return suffix


def read_text(path: Path, encoding: str | None = None) -> str:
    """Whole file as text; UTF-8 (BOM allowed) with a latin-1 fallback, since exported CSVs often are."""
    compressed = path.suffix.lower()
    data = _COMPRESSED[compressed](path) if compressed in _COMPRESSED else path.read_bytes()
    if encoding is not None:
        return data.decode(encoding)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def split_lines(text: str) -> list[str]:
    """Split on \\n/\\r only: str.splitlines also splits on \\x85 and \\u2028, which tweets contain."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_csv(
    text: str,
    path: Path | str,
    text_field: str,
    label_field: str,
    delimiter: str = ",",
    only_labels: tuple[set[str], str] | None = None,
) -> tuple[list[Row], Counter[str]]:
    """(text, labels) rows; `only_labels=(allowed, reason)` drops other labels, counted under reason."""
    if csv.field_size_limit() < 2**30:
        csv.field_size_limit(2**30)  # news articles overflow the 128 KiB default
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = reader.fieldnames or []
    missing = [f for f in (text_field, label_field) if f not in columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; columns are {columns}. "
            "Pass text_field=/label_field= to name the right ones."
        )
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    try:
        for record in reader:
            sample = (record.get(text_field) or "").strip()
            cell = record.get(label_field) or ""
            labels = tuple(dict.fromkeys(part.strip() for part in cell.split(MULTI_LABEL_SEP) if part.strip()))
            if only_labels is not None and not set(labels) <= only_labels[0]:
                dropped[only_labels[1]] += 1
                continue
            if keep_row(sample, labels, dropped):
                rows.append((sample, labels))
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from exc
    return rows, dropped


def _read_json(name: str, text: str, path: Path, wanted: TaskType | None, text_field: str, label_field: str) -> Parsed:
    """Tagging when the objects carry tokens and tags (and no label field), else classification."""
    records = json_records(text, path)
    if not records:
        raise DatasetError(f"{path} holds no JSON objects")
    first = records[0][1]
    looks_tagged = any(k in first for k in TOKEN_KEYS) and any(k in first for k in TAG_KEYS)
    task = wanted or (TaskType.TAGGING if looks_tagged and label_field not in first else TaskType.CLASSIFICATION)
    if task is TaskType.TAGGING:
        return tagged_sentences(name, _json_sentences(records, path))
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    any_list = False
    for line_no, obj in records:
        for key in (text_field, label_field):
            if key not in obj:
                raise DatasetError(
                    f"{path}, line {line_no}: missing field {key!r}; fields are {sorted(obj)}. "
                    "Pass text_field=/label_field= to name the right ones."
                )
        raw = obj[label_field]
        any_list |= isinstance(raw, list)
        labels = tuple(dict.fromkeys(str(v).strip() for v in label_values(raw) if v is not None and str(v).strip()))
        sample = "" if obj[text_field] is None else str(obj[text_field]).strip()
        if keep_row(sample, labels, dropped):
            rows.append((sample, labels))
    return ClassificationRows(name, rows, dropped, multi_label=any_list or None)


def _json_sentences(records: list[tuple[int, JsonObject]], path: Path) -> Iterator[tuple[str, list[Any], list[Any]]]:
    for line_no, obj in records:
        words = _pick(obj, TOKEN_KEYS, path, line_no)
        tags = _pick(obj, TAG_KEYS, path, line_no)
        if not isinstance(words, list) or not isinstance(tags, list):
            raise DatasetError(f"{path}, line {line_no}: tokens and tags must be lists")
        yield f"{path}, line {line_no}", words, tags


def json_records(text: str, path: Path) -> list[tuple[int, JsonObject]]:
    """(line number, object) pairs from a JSON array or from JSON lines."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
        if not all(isinstance(obj, dict) for obj in data):
            raise DatasetError(f"{path}: a JSON array must hold objects")
        return [(i + 1, obj) for i, obj in enumerate(data)]  # array index stands in for the line
    records: list[tuple[int, JsonObject]] = []
    for line_no, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {line_no}: malformed JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
        records.append((line_no, obj))
    return records


def _pick(obj: JsonObject, keys: tuple[str, ...], path: Path, line_no: int) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    raise DatasetError(f"{path}, line {line_no}: needs one of the fields {' / '.join(keys)}; fields are {sorted(obj)}")


def read_conll(name: str, text: str, path: Path | str) -> TaggedSentences:
    """CoNLL columns (first = token, last = tag); blank or whitespace-only lines end a sentence."""
    return tagged_sentences(name, _conll_sentences(text, path))


def _conll_sentences(text: str, path: Path | str) -> Iterator[tuple[str, list[str], list[str]]]:
    words: list[str] = []
    tags: list[str] = []
    start = 1
    for line_no, line in enumerate(split_lines(text), start=1):
        cols = ([c for c in line.split("\t") if c.strip()] if "\t" in line else line.split()) if line.strip() else []
        if not cols or cols[0].strip() == "-DOCSTART-":  # a sentence (or document) ends here
            if words:
                yield f"{path}, sentence at line {start}", words, tags
            words, tags = [], []
            continue
        if len(cols) < 2:
            raise DatasetError(f"{path}, line {line_no}: expected 'token<TAB>tag', got {line!r}")
        if not words:
            start = line_no
        tag = cols[-1].strip()
        if not valid_tag(tag):
            raise DatasetError(f"{path}, line {line_no}: invalid tag {tag!r} (expected O, B-<type>, I-<type>)")
        words.append(cols[0])
        tags.append(tag)
    if words:
        yield f"{path}, sentence at line {start}", words, tags


def read_label_folders(root: Path) -> tuple[list[Row], Counter[str]]:
    """`<root>/<label>/*.txt`, one document per file (the BBC news layout)."""
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for folder in folders:
        for file in sorted(folder.glob("*.txt")):
            text = read_text(file).strip()
            if keep_row(text, (folder.name,), dropped):
                rows.append((text, (folder.name,)))
    if not rows:
        raise DatasetError(f"{root}: no <label>/*.txt documents found")
    return rows, dropped
