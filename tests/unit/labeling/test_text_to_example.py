"""`text_to_example`: a worker holding only a task's text gets the same example as
`unlabeled_examples` would build from the whole task, without fabricating a task dict."""
from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

import backend.labeling as labeling
from backend.engine.types import ClassificationExample, TaggingExample
from backend.labeling import LabelConfig, parse_label_config, text_to_example, unlabeled_examples

EXAMPLES = Path(__file__).resolve().parents[3] / "label_config_examples"
NER = parse_label_config((EXAMPLES / "ner.xml").read_text())
SENTIMENT = parse_label_config((EXAMPLES / "text_classification.xml").read_text())
TOPICS = parse_label_config((EXAMPLES / "multi_label_classification.xml").read_text())


@pytest.mark.parametrize("config", [NER, SENTIMENT, TOPICS], ids=["ner", "sentiment", "topics"])
@pytest.mark.parametrize("text", ["Alice met Bob in Paris.", "Hi 🐱, café 東京!", "  padded  "])
def test_same_example_as_from_a_task(config: LabelConfig, text: str):
    (expected,) = unlabeled_examples([{"id": 7, "data": {config.value_key: text}}], config).examples
    assert text_to_example(text, config) == expected


def test_tagging_example_has_words_offsets_and_no_tags():
    ex = text_to_example("Hi 🐱", NER)
    assert isinstance(ex, TaggingExample)
    assert ex.words == ["Hi", "🐱"] and ex.tags == [] and ex.offsets == [(0, 2), (3, 4)] and ex.text == "Hi 🐱"


def test_classification_example_has_no_labels():
    assert text_to_example("fine", SENTIMENT) == ClassificationExample("fine", ())


@pytest.mark.parametrize("text", ["", "   \n\t", None, 3])
@pytest.mark.parametrize("config", [NER, SENTIMENT], ids=["ner", "sentiment"])
def test_unusable_text_gives_none(config: LabelConfig, text):
    assert text_to_example(text, config) is None


def test_tagging_text_without_words_gives_none_and_the_task_is_skipped_as_no_words():
    text = "\u200b\u200d"  # zero-width format characters: not blank to str.strip, but no word
    assert text_to_example(text, NER) is None
    report = unlabeled_examples([{"id": 1, "data": {"text": text}}], NER)
    assert report.examples == [] and report.skipped == {"no_words": 1}
    assert text_to_example(text, SENTIMENT) == ClassificationExample(text, ())


def test_facade_exports_resolve_and_control_tag_is_a_closed_set():
    for name in labeling.__all__:
        assert getattr(labeling, name) is not None, name
    assert set(get_args(labeling.ControlTag)) == {"Choices", "Labels"}
    assert {NER.control_tag, SENTIMENT.control_tag} == {"Labels", "Choices"}
    assert "malformed_result" in get_args(labeling.SkipReason)
