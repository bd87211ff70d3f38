"""The `Dataset` type, `load_dataset` (any source to a Dataset) and a seeded, stratified split.

Everything is read into the engine's plain example types (`ClassificationExample`,
`TaggingExample`) so a simulation never cares where the data came from. Tagging data is always
normalised to IOB2. Bad input raises `DatasetError` with a message that says what to fix; rows that
are merely empty are dropped and counted in `Dataset.dropped` so a run can report them instead of
failing.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.engine.data.corpora import PACKAGED_DATASETS, read_packaged
from backend.engine.data.formats import read_path
from backend.engine.data.hub import read_hub
from backend.engine.data.rows import ClassificationRows, Parsed, Row, TaggedSentences
from backend.engine.errors import DatasetError
from backend.engine.types import (
    ClassificationExample,
    Example,
    IndexArray,
    LabelSchema,
    TaskType,
    classification_examples,
    tagging_examples,
)


@dataclass
class Dataset:
    """A labeled corpus with its schema; `dropped` counts rows skipped while loading, by reason
    (`rows.DropReason`)."""

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
            return sum(len(ex.words) for ex in tagging_examples(self.examples))
        return sum(len(ex.text.split()) for ex in classification_examples(self.examples))

    def subset(self, indices: Sequence[int] | IndexArray) -> Dataset:
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
        parsed = read_hub(spec, wanted, text_field, label_field)
    elif spec in PACKAGED_DATASETS:
        parsed = read_packaged(spec, wanted)
    else:
        parsed = read_path(Path(spec).expanduser(), wanted, text_field, label_field)
    dataset = _assemble(parsed, wanted)
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


# --------------------------------------------------------------------------------------------
# Rows -> Dataset


def _assemble(parsed: Parsed, wanted: TaskType | None) -> Dataset:
    """The schema is the labels (or entity types) the rows use, sorted."""
    if isinstance(parsed, TaggedSentences):
        if wanted is TaskType.CLASSIFICATION:
            raise DatasetError(f"{parsed.name} holds tagging data, not classification")
        return _tagging_dataset(parsed)
    if wanted is TaskType.TAGGING:
        raise DatasetError(f"{parsed.name} holds classification data, not tagging")
    return _classification_dataset(parsed)


def _classification_dataset(parsed: ClassificationRows) -> Dataset:
    dropped = Counter(parsed.dropped)
    rows = _dedupe(parsed.rows, dropped) if parsed.dedupe else parsed.rows
    if not rows:
        raise DatasetError(f"{parsed.name}: no examples" + _dropped_note(dropped))
    labels = tuple(sorted({label for _, labs in rows for label in labs}))
    multi = parsed.multi_label if parsed.multi_label is not None else any(len(labs) > 1 for _, labs in rows)
    schema = LabelSchema(TaskType.CLASSIFICATION, labels, multi_label=multi)
    examples: list[Example] = [ClassificationExample(text, labs) for text, labs in rows]
    return Dataset(parsed.name, schema, examples, dict(dropped))


def _tagging_dataset(parsed: TaggedSentences) -> Dataset:
    if not parsed.examples:
        raise DatasetError(f"{parsed.name}: no sentences" + _dropped_note(parsed.dropped))
    types = sorted({tag[2:] for ex in parsed.examples for tag in ex.tags if tag != "O"})
    if not types:
        raise DatasetError(f"{parsed.name}: no entity tags found (every tag is O)")
    schema = LabelSchema(TaskType.TAGGING, tuple(types))
    return Dataset(parsed.name, schema, list(parsed.examples), dict(parsed.dropped))


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


def _stratified_pick(dataset: Dataset, n_test: int, rng: np.random.Generator) -> IndexArray:
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
