"""Argument groups several commands share: the dataset and its split, training, successor training."""
from __future__ import annotations

from argparse import Namespace
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from backend.cli.args import arguments, build, values
from backend.engine.data import PACKAGED_DATASETS, Dataset, load_dataset, train_test_split
from backend.engine.models.transformer import TrainingConfig

if TYPE_CHECKING:
    from backend.engine.types import Example


@dataclass
class DataArgs:
    """Which labeled data a command reads, and how it is split (seed 0, so runs compare)."""

    dataset: str = field(default="rotten_tomatoes", metadata={"help": "a CSV/JSONL/CoNLL file, hf:<name>, or packaged"})
    text_field: str = field(default="text", metadata={"help": "text column / key"})
    label_field: str = field(default="label", metadata={"help": "label column / key"})
    max_examples: int | None = field(default=None, metadata={"help": "subsample the dataset first (seeded)"})
    test_size: float = field(default=0.2, metadata={"help": "held-out test share (<1) or count"})


_PACKAGED = "; ".join(f"{k}: {v}" for k, v in PACKAGED_DATASETS.items())
Data = arguments(DataArgs, "data", overrides={
    "dataset": {"help": f"a CSV/JSONL/CoNLL file, hf:<name>, or packaged: {_PACKAGED}"}})


def load_split(namespace: Namespace) -> tuple[Dataset, Dataset, Dataset]:
    """(dataset, train, test) for the parsed data flags."""
    data: DataArgs = build(namespace, Data)
    dataset = load_dataset(data.dataset, text_field=data.text_field, label_field=data.label_field,
                           max_examples=data.max_examples, seed=0)
    test_size = int(data.test_size) if data.test_size >= 1 else data.test_size
    return dataset, *train_test_split(dataset, test_size, seed=0)


# The run seed is set per run (simulation seed, PLASM --seed), never by a training flag.
Training = arguments(TrainingConfig, "training", exclude=("seed",))
Successor = arguments(
    TrainingConfig, "successor training (defaults: paper values; classical 10/20 epochs, lr 1e-3/5e-3)",
    include=("epochs", "learning_rate", "batch_size"), prefix="successor_",
    overrides={"batch_size": {"type": int | None, "default": None, "help": "default: --batch-size"}},
)


def successor_training(namespace: Namespace, training: TrainingConfig) -> TrainingConfig:
    """The successor's training: the main one with the successor_ flags in place."""
    chosen = values(namespace, Successor)
    return replace(training, epochs=chosen["epochs"], learning_rate=chosen["learning_rate"],
                   batch_size=chosen["batch_size"] or training.batch_size)


def pool_texts(examples: Iterable[Example]) -> list[str]:
    """Raw texts of labeled examples (tagging: words joined by spaces), e.g. for distillation."""
    from backend.engine.types import TaggingExample

    return [" ".join(ex.words) if isinstance(ex, TaggingExample) else ex.text for ex in examples]
