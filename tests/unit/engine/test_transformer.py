import numpy as np
import pytest

from backend.engine.errors import NotEnoughLabelsError
from backend.engine.metrics import evaluate
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.types import ClassificationExample, LabelSchema, TaggingExample, TaskType
from tests.helpers.toy_data import toy_classification, toy_tagging

CLS_SCHEMA = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg"))
TAG_SCHEMA = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))
FAST = dict(epochs=8, learning_rate=2e-3, device="cpu")


@pytest.fixture(scope="module")
def trained_classifier(tiny_bert):
    model = TransformerModel(tiny_bert, CLS_SCHEMA, TrainingConfig(**FAST))
    model.fit(toy_classification(160))
    return model


def test_classifier_learns_the_toy_task_and_is_seeded(tiny_bert, trained_classifier):
    test = toy_classification(80, seed=5)
    preds = trained_classifier.predict(test)
    assert preds.probs.shape == (80, 2)
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1.0, atol=1e-5)
    assert evaluate(preds, test, CLS_SCHEMA)["accuracy"] >= 0.9
    again = TransformerModel(tiny_bert, CLS_SCHEMA, TrainingConfig(**FAST))
    again.fit(toy_classification(160))
    np.testing.assert_allclose(again.predict(test).probs, preds.probs, atol=1e-5)


def test_length_sorted_batches_give_the_same_outputs_as_max_padding(trained_classifier):
    test = toy_classification(50, seed=7)
    sorted_preds = trained_classifier.predict(test, batch_size=8, return_embeddings=True)
    padded = trained_classifier.predict(test, batch_size=8, sort_by_length=False, return_embeddings=True)
    np.testing.assert_allclose(sorted_preds.probs, padded.probs, atol=1e-5)
    assert sorted_preds.embeddings.shape == (50, 32)
    np.testing.assert_allclose(sorted_preds.embeddings, padded.embeddings, atol=1e-4)


def test_save_and_load_round_trip_replaces_atomically(tmp_path, trained_classifier):
    test = toy_classification(20, seed=3)
    target = tmp_path / "project" / "v1"
    trained_classifier.save(target)
    trained_classifier.save(target)  # overwriting a live checkpoint leaves one complete copy
    assert sorted(p.name for p in target.parent.iterdir()) == ["v1"]
    loaded = TransformerModel.load(target)
    assert loaded.schema == CLS_SCHEMA
    np.testing.assert_allclose(loaded.predict(test).probs, trained_classifier.predict(test).probs, atol=1e-6)
    assert loaded.model.config.id2label == {0: "pos", 1: "neg"}


def test_load_rejects_a_foreign_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        TransformerModel.load(tmp_path)


def test_multi_label_classifier_outputs_independent_probabilities(tiny_bert):
    schema = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg", "long"), multi_label=True)
    examples = [ClassificationExample(e.text, e.labels + (("long",) if len(e.text.split()) > 6 else ()))
                for e in toy_classification(80)]
    model = TransformerModel(tiny_bert, schema, TrainingConfig(**FAST))
    model.fit(examples)
    preds = model.predict(examples[:10])
    assert preds.multi_label and preds.probs.shape == (10, 3)
    assert ((preds.probs >= 0) & (preds.probs <= 1)).all()


def test_tagger_learns_entities_and_returns_one_row_per_word(tiny_distilbert):
    model = TransformerModel(tiny_distilbert, TAG_SCHEMA, TrainingConfig(**FAST))
    model.fit(toy_tagging(200))
    test = toy_tagging(60, seed=9)
    preds = model.predict(test)
    assert [p.shape for p in preds.probs] == [(len(e.words), 5) for e in test]
    assert evaluate(preds, test, TAG_SCHEMA)["span_f1"] > 0.6


def test_tagger_truncation_marks_cut_words_as_certain_outside(tiny_distilbert):
    model = TransformerModel(tiny_distilbert, TAG_SCHEMA, TrainingConfig(max_length=16, device="cpu"))
    long = TaggingExample(["alice"] * 40)
    probs = model.predict([long]).probs[0]
    assert probs.shape == (40, 5)
    np.testing.assert_allclose(probs[20:, 0], 1.0)


def test_training_rejects_empty_and_unknown_labels(tiny_bert):
    model = TransformerModel(tiny_bert, CLS_SCHEMA, TrainingConfig(**FAST))
    with pytest.raises(NotEnoughLabelsError):
        model.fit([])
    with pytest.raises(ValueError, match="outside the schema"):
        model.fit([ClassificationExample("good film", ("meh",))])


def test_config_validation():
    with pytest.raises(ValueError):
        TrainingConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainingConfig(warmup_ratio=1.0)
    assert TrainingConfig().resolved_epochs(TaskType.TAGGING) == 15
    assert TrainingConfig().resolved_learning_rate(TaskType.CLASSIFICATION) == 1e-4  # small encoders, few labels
    assert TrainingConfig().resolved_learning_rate(TaskType.TAGGING) == 3e-4  # tens of sentences, LP-FT


def test_tagging_schedule_goes_from_few_shot_to_the_papers():
    """Tagging's defaults: 3e-4 and the min_steps floor up to 200 sentences, the paper's 5e-5 and
    15 epochs from 1,000; explicit values always win."""
    config = TrainingConfig()
    rate = [config.resolved_learning_rate(TaskType.TAGGING, n) for n in (20, 200, 600, 1000, 5000)]
    assert rate[:2] == [3e-4, 3e-4] and 5e-5 < rate[2] < 3e-4 and rate[3:] == pytest.approx([5e-5, 5e-5])
    assert config.resolved_learning_rate(TaskType.CLASSIFICATION, 5000) == 1e-4
    assert TrainingConfig(learning_rate=1e-5).resolved_learning_rate(TaskType.TAGGING, 20) == 1e-5
    steps = {n: config.resolved_epochs(TaskType.TAGGING, n) * -(-n // 16) for n in (20, 50, 100, 160, 200)}
    assert all(100 <= s <= 112 for s in steps.values())  # the floor decides: about 100 steps
    assert config.resolved_epochs(TaskType.TAGGING, 1000) == 15
    assert TrainingConfig(min_steps=0).resolved_epochs(TaskType.TAGGING, 50) == 15  # the paper's schedule
    assert config.resolved_epochs(TaskType.CLASSIFICATION, 200) == 8  # classification unchanged: 100 steps
