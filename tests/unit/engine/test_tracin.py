"""TracIn: the last-layer closed form equals autograd, checkpoints, and it flags flipped labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.engine.models.factory import make_model
from backend.engine.models.transformer import IGNORE_INDEX, TrainingConfig
from backend.engine.plasm.tracin import (
    TracInCheckpoints,
    checkpoint_steps,
    last_layer_grad_norms,
    linear_schedule_lr,
    output_layer,
)
from backend.engine.types import ClassificationExample, LabelSchema, TaskType
from tests.helpers.toy_data import toy_classification, toy_tagging

CLS = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg"))
TAG = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))
MULTI = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg", "other"), multi_label=True)


def _autograd_norms(wrapper, examples):
    """||∇ ℓ(z)||² over the output layer's weight and bias, one backward pass per example; the
    per-example loss is the sum over its labeled positions (a CRF: its sequence NLL)."""
    model = wrapper.model
    model.eval()
    layer = output_layer(model, wrapper.schema.num_outputs)
    out = []
    for enc in wrapper.encode(examples, with_labels=True):
        batch = wrapper.collate([enc], with_labels=True)
        labels = batch.pop("labels")
        model.zero_grad()
        result = model(**batch, labels=labels)
        if wrapper.schema.task_type is TaskType.TAGGING and not hasattr(model, "crf"):
            logits = result.logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                                                     ignore_index=IGNORE_INDEX, reduction="sum")
        elif wrapper.schema.multi_label:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(result.logits, labels, reduction="sum")
        elif hasattr(model, "crf"):
            loss = result.loss  # batch of one: the sequence NLL
        else:
            loss = torch.nn.functional.cross_entropy(result.logits, labels, reduction="sum")
        loss.backward()
        out.append(float((layer.weight.grad ** 2).sum() + (layer.bias.grad ** 2).sum()))
    return np.array(out)


@pytest.mark.parametrize(
    "kind, schema",
    [("bert", CLS), ("electra", CLS), ("distilbert", CLS), ("bert", TAG), ("bert", MULTI), ("cnn", CLS),
     ("bilstm-crf", TAG)],
)
def test_closed_form_equals_autograd(kind, schema, tiny_bert, tiny_electra, tiny_distilbert):
    name = {"bert": tiny_bert, "electra": tiny_electra, "distilbert": tiny_distilbert}.get(kind, kind)
    if schema.task_type is TaskType.TAGGING:
        examples = toy_tagging(12)
    elif schema.multi_label:
        examples = [ClassificationExample(e.text, ("pos", "other") if i % 3 == 0 else e.labels)
                    for i, e in enumerate(toy_classification(12))]
    else:
        examples = toy_classification(12)
    wrapper = make_model(name, schema, TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=8, device="cpu"))
    wrapper.fit(examples)
    closed = last_layer_grad_norms(wrapper, examples, batch_size=5)  # padded batches
    exact = _autograd_norms(wrapper, examples)
    np.testing.assert_allclose(closed, exact, rtol=2e-3, atol=1e-6)


def test_checkpoint_steps_and_schedule():
    assert checkpoint_steps(100, 10, 3) == [30, 70, 100]
    assert checkpoint_steps(12, 2, 3) == [6, 12]  # no more checkpoints than epochs
    assert checkpoint_steps(5, 1, 1) == [5]
    assert checkpoint_steps(0, 1, 1) == []
    assert linear_schedule_lr(0, 100, 10, 1.0) == 0.0
    assert linear_schedule_lr(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert linear_schedule_lr(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert linear_schedule_lr(55, 100, 10, 1.0) == pytest.approx(0.5)


def test_tracker_scores_at_each_checkpoint():
    examples = toy_classification(40)
    wrapper = make_model("cnn", CLS, TrainingConfig(epochs=4, batch_size=10, device="cpu"))
    tracker = TracInCheckpoints(wrapper, examples[:10], checkpoints=2)
    seen = []
    tracker.extra_progress = lambda done, total: seen.append(done)
    wrapper.fit(examples, progress=tracker.progress)
    assert tracker.steps == [8, 16] and len(tracker.weights) == 2
    assert all(w > 0 for w in tracker.weights)
    assert seen == list(range(1, 17))
    assert tracker.scores.shape == (10,) and (tracker.scores > 0).all()


def test_self_influence_flags_flipped_labels():
    """Pruthi et al.'s use: mislabelled training examples get high self-influence (10% flipped,
    both classes; the top-20 holds at least 3x the chance share of them)."""
    examples = toy_classification(200)
    flipped = set(range(0, 200, 20)) | set(range(7, 200, 20))
    noisy = [
        ClassificationExample(e.text, (("neg",) if e.labels == ("pos",) else ("pos",)) if i in flipped else e.labels)
        for i, e in enumerate(examples)
    ]
    wrapper = make_model("cnn", CLS, TrainingConfig(epochs=8, batch_size=16, seed=0, device="cpu"))
    tracker = TracInCheckpoints(wrapper, noisy, checkpoints=3)
    wrapper.fit(noisy, progress=tracker.progress)
    top = set(np.argsort(-tracker.scores)[: len(flipped)].tolist())
    assert len(top & flipped) >= 3 * len(flipped) * len(flipped) // len(noisy)
    mask = np.isin(np.arange(len(noisy)), list(flipped))
    assert tracker.scores[mask].mean() > 1.5 * tracker.scores[~mask].mean()
