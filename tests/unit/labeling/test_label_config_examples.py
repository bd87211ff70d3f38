"""Every label config in label_config_examples/ is one the backend accepts, and its sample tasks
(``<config>.tasks.json``, a Label Studio import file) carry text where the config reads it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.engine.types import TaskType
from backend.labeling import parse_label_config, text_to_example

EXAMPLES = Path(__file__).resolve().parents[3] / "label_config_examples"
CONFIGS = sorted(EXAMPLES.glob("*.xml"))


def sample_tasks(config_path: Path) -> Path:
    return config_path.with_name(f"{config_path.stem}.tasks.json")


def test_examples_cover_single_and_multi_label_classification_and_ner():
    kinds = set()
    for path in CONFIGS:
        config = parse_label_config(path.read_text())
        kinds.add((config.task_type, config.schema.multi_label))
    assert kinds == {(TaskType.CLASSIFICATION, False), (TaskType.CLASSIFICATION, True), (TaskType.TAGGING, False)}


def test_every_sample_file_belongs_to_a_config():
    assert {p.name for p in EXAMPLES.glob("*.tasks.json")} == {sample_tasks(p).name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_sample_tasks_match_their_config(path: Path):
    config = parse_label_config(path.read_text())
    tasks = json.loads(sample_tasks(path).read_text(encoding="utf-8"))
    assert isinstance(tasks, list) and 8 <= len(tasks) <= 12
    texts = []
    for task in tasks:
        assert set(task) == {"data"}, "an import file of plain tasks: {'data': {...}} only"
        assert set(task["data"]) == {config.value_key}, f"the config reads ${config.value_key}"
        text = task["data"][config.value_key]
        assert isinstance(text, str) and text.strip() and len(text) <= 200
        assert text_to_example(text, config) is not None
        texts.append(text)
    assert len(set(texts)) == len(texts), "sample texts are distinct"
