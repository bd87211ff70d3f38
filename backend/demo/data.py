"""The demo's data: a packaged real corpus cut into a Label Studio pool and a held-out gold split.

The pool becomes the project's tasks; its gold labels stay on this side and are typed in through
Label Studio's API, one task at a time, as an annotator would. The held-out split never enters
Label Studio: it measures the acquisition model (through ``/predict``) and the successor.
Both sides go through the same Label Studio results -> examples conversion the backend uses, so
the scores compare like with like.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from backend.engine.data import load_dataset
from backend.engine.types import ClassificationExample, Example, TaggingExample, TaskType
from backend.labeling import LabelConfig, gold_tagging_results, parse_label_config, tasks_to_examples

DemoTask = Literal["classification", "ner"]
# The label configs: in a checkout beside backend/; in an installed environment (the Docker image
# copies them there) under <prefix>/share/feasible-al/.
EXAMPLES_DIRS = (Path(__file__).resolve().parents[2] / "label_config_examples",
                 Path(sys.prefix) / "share" / "feasible-al" / "label_config_examples")


def examples_dir() -> Path:
    """The first `EXAMPLES_DIRS` entry that exists."""
    for candidate in EXAMPLES_DIRS:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"label_config_examples/ not found in {' or '.join(map(str, EXAMPLES_DIRS))}")


@dataclass(frozen=True)
class Corpus:
    """A packaged corpus and the example label config the demo builds its project from."""

    dataset: str
    config_file: str
    task_type: TaskType


CORPORA: dict[str, Corpus] = {
    "classification": Corpus("rotten_tomatoes", "text_classification.xml", TaskType.CLASSIFICATION),
    "ner": Corpus("wnut16", "ner_wnut16.xml", TaskType.TAGGING),
}


@dataclass(frozen=True)
class GoldTask:
    """A task's text and the Label Studio result an annotator would save for it."""

    text: str
    result: list[dict[str, Any]]


@dataclass
class DemoData:
    corpus: Corpus
    label_config: str  # the XML the project is created with
    config: LabelConfig
    pool: list[GoldTask]  # imported into Label Studio, annotated from these results
    held_out: list[GoldTask]  # never imported: the gold the models are measured on

    def tasks(self) -> list[dict[str, Any]]:
        """The pool as a Label Studio import (data only: the labels are not imported)."""
        return [{"data": {self.config.value_key: item.text}} for item in self.pool]


def classification_config(example_xml: str, labels: tuple[str, ...]) -> str:
    """The example config with its choices replaced by the corpus's labels (the Rotten Tomatoes
    reviews are ``fresh`` / ``rotten``, the example's are Positive / Negative / Neutral)."""
    root = ET.fromstring(example_xml)
    choices = root.find(".//Choices")
    if choices is None:
        raise ValueError("the example classification config has no <Choices>")
    for child in list(choices):
        choices.remove(child)
    for label in labels:
        ET.SubElement(choices, "Choice", {"value": label})
    header = root.find(".//Header")
    if header is not None:
        header.set("value", f"Which label fits this text: {' or '.join(labels)}?")
    return ET.tostring(root, encoding="unicode")


def _result(config: LabelConfig, example: Example) -> GoldTask:
    names = {"from_name": config.control_name, "to_name": config.object_name}
    if isinstance(example, ClassificationExample):
        return GoldTask(example.text, [{**names, "type": "choices", "value": {"choices": list(example.labels)}}])
    assert isinstance(example, TaggingExample)
    return GoldTask(*gold_tagging_results(example.words, example.tags, config))


def load_demo_data(task: DemoTask, pool_size: int, held_out: int, seed: int = 0) -> DemoData:
    """`pool_size` + `held_out` examples of the task's packaged corpus (seeded), as gold tasks."""
    corpus = CORPORA[task]
    example_xml = (examples_dir() / corpus.config_file).read_text(encoding="utf-8")
    dataset = load_dataset(corpus.dataset, max_examples=pool_size + held_out, seed=seed)
    if len(dataset) < pool_size + held_out:
        raise ValueError(f"{corpus.dataset} has {len(dataset)} examples; the demo needs {pool_size + held_out}")
    xml = example_xml if corpus.task_type is TaskType.TAGGING else classification_config(
        example_xml, dataset.schema.labels)
    config = parse_label_config(xml)
    if set(dataset.schema.labels) - set(config.labels):
        raise ValueError(f"{corpus.config_file} lacks labels of {corpus.dataset}: {dataset.schema.labels}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    items = [_result(config, dataset.examples[i]) for i in order]
    return DemoData(corpus, xml, config, items[:pool_size], items[pool_size:])


def as_examples(config: LabelConfig, texts: list[str], results: list[list[dict[str, Any]]]) -> list[Example | None]:
    """Examples labelled by Label Studio results (gold or predicted), through the backend's own
    conversion; None where a result cannot be read (an empty classification result)."""
    tasks = [{"id": i, "data": {config.value_key: text}, "annotations": [{"id": 1, "result": result}]}
             for i, (text, result) in enumerate(zip(texts, results))]
    report = tasks_to_examples(tasks, config)
    out: list[Example | None] = [None] * len(texts)
    for task_id, example in zip(report.task_ids, report.examples):
        out[int(task_id)] = example
    return out
