"""Few-shot defaults of fine-tuning: a floor on optimizer steps (tens of labels still get enough
updates) and LP-FT (the classification head starts from a linear probe, not at random)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.engine.models.transformer import PAPER_EPOCHS, TrainingConfig, TransformerModel
from backend.engine.proxy import ProxyHead
from backend.engine.types import LabelSchema, TaskType
from tests.helpers.toy_data import toy_classification, toy_tagging

CLS = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg"))
TAG = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))


def test_min_steps_raise_the_epochs_of_small_label_sets_only():
    config = TrainingConfig(min_steps=200, batch_size=16)
    # 20 labels = 2 batches an epoch: 100 epochs for 200 steps instead of the paper's 5 (10 steps)
    assert config.resolved_epochs(TaskType.CLASSIFICATION, 20) == 100
    assert config.resolved_epochs(TaskType.TAGGING, 20) == 100
    # thousands of labels already take more steps: the paper's schedule stands
    for task in TaskType:
        assert config.resolved_epochs(task, 5000) == PAPER_EPOCHS[task]
    assert TrainingConfig(min_steps=0).resolved_epochs(TaskType.CLASSIFICATION, 20) == 5
    assert TrainingConfig(epochs=3).resolved_epochs(TaskType.CLASSIFICATION, 20) == 3  # explicit epochs are kept
    with pytest.raises(ValueError):
        TrainingConfig(min_steps=-1)


def test_fit_on_20_labels_takes_min_steps(tiny_bert):
    seen: list[tuple[int, int]] = []
    config = TrainingConfig(min_steps=30, batch_size=16, device="cpu")
    report = TransformerModel(tiny_bert, CLS, config).fit(
        toy_classification(20), progress=lambda d, t: seen.append((d, t))
    )
    assert report.steps == 30 and seen[-1] == (30, 30)  # 15 epochs of 2 batches, not 5
    paper = TrainingConfig(min_steps=0, batch_size=16, device="cpu")
    assert TransformerModel(tiny_bert, CLS, paper).fit(toy_classification(20)).steps == 10


def test_tagging_gets_the_same_floor(tiny_distilbert):
    config = TrainingConfig(min_steps=60, batch_size=8, learning_rate=1e-3, device="cpu")
    # 3 batches an epoch: 20 epochs rather than the paper's 15
    assert TransformerModel(tiny_distilbert, TAG, config).fit(toy_tagging(20)).steps == 60


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert", "tiny_electra"])
def test_lp_ft_starts_the_head_from_the_probe(fixture, request):
    """At the first step (warm-up: learning rate 0) the head holds the logistic regression fitted
    on the features the head reads, for BERT's pooler, DistilBERT's pre-classifier and ELECTRA's
    dense head alike."""
    path = request.getfixturevalue(fixture)
    examples = toy_classification(40)
    config = TrainingConfig(min_steps=20, batch_size=16, seed=3, device="cpu", linear_probe_init=True)
    model = TransformerModel(path, CLS, config)
    captured: dict[str, np.ndarray] = {}

    def progress(done: int, total: int) -> None:
        if done == 1:
            head = model.head_layer()
            captured["weight"] = head.weight.detach().numpy().copy()
            captured["bias"] = head.bias.detach().numpy().copy()

    model.fit(examples, progress=progress)

    fresh = TransformerModel(path, CLS, config)
    fresh._model = fresh._fresh_model()
    features = fresh.head_features(fresh.encode(examples))
    labels = [ex.labels for ex in examples]
    probe = ProxyHead(CLS, seed=3)
    probe.fit(features, labels, c=probe.choose_c(features, labels), estimate=False)  # the CV grid's C
    np.testing.assert_allclose(captured["weight"], probe.coef, atol=1e-5)
    np.testing.assert_allclose(captured["bias"], probe.intercept, atol=1e-5)
    assert not np.allclose(model.head_layer().weight.detach().numpy(), probe.coef)  # then fine-tuned


def test_lp_ft_off_keeps_the_random_head_and_fits_are_seeded(tiny_bert):
    examples = toy_classification(40)
    runs = []
    for _ in range(2):
        config = TrainingConfig(min_steps=20, seed=1, device="cpu", linear_probe_init=True)
        model = TransformerModel(tiny_bert, CLS, config)
        model.fit(examples)
        runs.append(model.predict(examples).probs)
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)  # LP-FT keeps a seeded run reproducible
    off = TransformerModel(tiny_bert, CLS, TrainingConfig(min_steps=20, seed=1, device="cpu", linear_probe_init=False))
    off.fit(examples)
    assert not np.allclose(off.predict(examples).probs, runs[0], atol=1e-4)


def test_head_features_are_what_the_classifier_reads(tiny_bert):
    model = TransformerModel(tiny_bert, CLS, TrainingConfig(device="cpu"))
    examples = toy_classification(10)
    features = model.head_features(model.encode(examples))
    head = model.head_layer()
    with torch.no_grad():
        logits = torch.from_numpy(features) @ head.weight.T + head.bias
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), model.predict(examples).probs, atol=1e-5)
    assert TransformerModel(tiny_bert, TAG, TrainingConfig(device="cpu")).head_layer() is None
