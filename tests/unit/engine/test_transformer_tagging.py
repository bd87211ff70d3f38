"""Tagging fine-tunes at small budgets: sub-token targets, LP-FT from the per-word probe, the
word-shape term, class-weighted loss and decoding that never emits invalid IOB2."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from backend.engine.iob2 import iob2_tags, is_valid_iob2
from backend.engine.models import encoding, probe, tagging_fit
from backend.engine.models.transformer import SHAPE_KEY, TrainingConfig, TransformerModel
from backend.engine.types import LabelSchema, TaggingExample, TaskType
from backend.engine.word_features import sentence_shapes
from tests.helpers.toy_data import toy_tagging

TAG = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))
NAMES = TAG.output_names  # O, B-PER, I-PER, B-LOC, I-LOC


def test_only_each_words_first_sub_token_carries_its_tag(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    example = TaggingExample(["Aliceparis", "was", "in", "Oslo"], ["B-PER", "O", "O", "B-LOC"])
    [enc] = encoding.encode(tokenizer, TAG, [example], 128, with_labels=True)
    word_ids = tokenizer(example.words, is_split_into_words=True).word_ids()
    assert word_ids.count(0) > 1  # the first word is several word pieces
    first = [word_ids.index(w) for w in range(4)]
    assert enc.word_starts == first
    expected = [encoding.IGNORE_INDEX] * len(word_ids)  # [CLS], [SEP] and continuation pieces
    for w, pos in enumerate(first):
        expected[pos] = NAMES.index(example.tags[w])
    assert enc.labels == expected
    assert enc.word_shapes == sentence_shapes(example.words).tolist()


def test_iob2_decoding_never_opens_a_span_with_inside():
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(len(NAMES)), size=n).astype(np.float32) for n in (1, 2, 5, 9, 0, 3)]
    probs.append(np.array([[0.1, 0.05, 0.75, 0.1, 0.0]] * 2, np.float32))  # argmax: I-PER I-PER
    tags = iob2_tags(probs, NAMES)
    assert [len(t) for t in tags] == [len(p) for p in probs]
    assert all(is_valid_iob2(t) for t in tags)
    assert tags[-1] == ["B-PER", "I-PER"]  # the inside run becomes one span, opened by B
    certain = [np.eye(len(NAMES), dtype=np.float32)[[1, 2, 0, 3]]]
    assert iob2_tags(certain, NAMES) == [["B-PER", "I-PER", "O", "B-LOC"]]


def test_defaults_switch_lp_ft_on_for_tagging_only():
    config = TrainingConfig()
    assert config.resolved_linear_probe_init(TaskType.TAGGING)
    assert not config.resolved_linear_probe_init(TaskType.CLASSIFICATION)
    assert TrainingConfig(linear_probe_init=False).resolved_linear_probe_init(TaskType.TAGGING) is False


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert", "tiny_electra"])
def test_lp_ft_starts_the_token_classifier_and_shape_term_from_the_probe(fixture, request):
    """At the first step (warm-up: learning rate 0) the token classifier holds the per-word probe
    fitted on what it reads at each word's first sub-token, the shape term that probe's shape weights."""
    path = request.getfixturevalue(fixture)
    examples = toy_tagging(30)
    config = TrainingConfig(min_steps=20, batch_size=8, seed=2, device="cpu", linear_probe_init=True,
                            word_shapes=True)
    model = TransformerModel(path, TAG, config)
    captured: dict[str, np.ndarray] = {}

    def progress(done: int, total: int) -> None:
        if done == 1:
            head = probe.classifier_head(model.model, TAG.num_outputs)
            captured["weight"] = head.weight.detach().numpy().copy()
            captured["bias"] = head.bias.detach().numpy().copy()
            captured["shape"] = model.shape_weight.detach().numpy().copy()

    model.fit(examples, progress=progress)

    fresh = TransformerModel(path, TAG, config)
    fresh._model = fresh._fresh_model()
    encoded = fresh.encode(examples, with_labels=True)
    head = probe.classifier_head(fresh.model, TAG.num_outputs)
    features = probe.word_inputs(fresh.model, head, fresh.batches(encoded, 64), encoded, fresh.autocast)
    lengths = [len(e.word_starts) for e in encoded]
    shapes = np.concatenate([sentence_shapes(ex.words) for ex in examples])
    fitted, scale = probe.tagging_probe(features, lengths, [ex.tags for ex in examples], shapes, TAG, seed=2)
    dim = features.shape[1]
    np.testing.assert_allclose(captured["weight"], fitted.coef[:, :dim] / scale, atol=1e-5)
    np.testing.assert_allclose(captured["bias"], fitted.intercept, atol=1e-5)
    np.testing.assert_allclose(captured["shape"], fitted.coef[:, dim:], atol=1e-5)
    trained = probe.classifier_head(model.model, TAG.num_outputs).weight.detach().numpy()
    assert not np.allclose(trained, captured["weight"])  # then fine-tuned


def test_word_inputs_are_what_the_token_classifier_reads(tiny_bert):
    model = TransformerModel(tiny_bert, TAG, TrainingConfig(device="cpu", word_shapes=False))
    examples = toy_tagging(6)
    encoded = model.encode(examples)
    head = probe.classifier_head(model.model, TAG.num_outputs)
    features = probe.word_inputs(model.model, head, model.batches(encoded, 4), encoded, model.autocast)
    with torch.no_grad():
        logits = torch.from_numpy(features) @ head.weight.T + head.bias
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), np.concatenate(model.predict(examples).probs),
                               atol=1e-5)


def test_a_few_shot_fit_finds_the_entities_and_decodes_valid_iob2(tiny_distilbert):
    train, test = toy_tagging(40), toy_tagging(40, seed=9)
    model = TransformerModel(tiny_distilbert, TAG, TrainingConfig(min_steps=40, learning_rate=1e-3, device="cpu"))
    model.fit(train)
    predictions = model.predict(test)
    tags = model.decode_tags(predictions)
    assert all(is_valid_iob2(t) for t in tags)
    assert sum(t != "O" for row in tags for t in row) > 0.5 * sum(t != "O" for ex in test for t in ex.tags)


def test_the_shape_term_learns_casing_an_uncased_encoder_cannot_see(tiny_bert, tmp_path):
    """A capitalised word is a name, the same word lowercase is not: the uncased encoder sees
    identical inputs, only the shape term tells them apart; save/load keeps it."""
    rng = np.random.default_rng(0)
    words = ["alice", "bob", "paris", "film", "plot", "story"]

    def sentence() -> TaggingExample:
        ws, ts = ["the"], ["O"]  # never sentence-initial: capitalised is the only cue
        for w in rng.choice(words, size=5):
            upper = bool(rng.random() < 0.4)
            ws.append(str(w).capitalize() if upper else str(w))
            ts.append("B-PER" if upper else "O")
        return TaggingExample(ws, ts)

    train, test = [sentence() for _ in range(40)], [sentence() for _ in range(20)]
    config = TrainingConfig(min_steps=30, learning_rate=1e-3, device="cpu", word_shapes=True)
    model = TransformerModel(tiny_bert, TAG, config)
    model.fit(train)
    assert model.decode_tags(model.predict(test)) == [list(ex.tags) for ex in test]
    model.save(tmp_path / "ckpt")
    loaded = TransformerModel.load(tmp_path / "ckpt")
    assert loaded.shape_weight is not None
    for a, b in zip(loaded.predict(test).probs, model.predict(test).probs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    blind = TransformerModel(tiny_bert, TAG, TrainingConfig(min_steps=30, learning_rate=1e-3, device="cpu",
                                                            word_shapes=False))
    blind.fit(train)
    assert blind.shape_weight is None
    assert blind.decode_tags(blind.predict(test)) != [list(ex.tags) for ex in test]


def test_tag_weights_balance_rare_tags(tiny_bert):
    model = TransformerModel(tiny_bert, TAG, TrainingConfig(device="cpu"))
    encoded = model.encode([TaggingExample(["a", "b", "c", "d"], ["O", "O", "O", "B-PER"])], with_labels=True)
    weights = tagging_fit.tag_weights(encoded, TAG.num_outputs, 1.0, torch.device("cpu")).numpy()
    np.testing.assert_allclose(weights, [4 / 6, 2.0, 1.0, 1.0, 1.0])  # 4 words, 2 tags seen: O 3, B-PER 1
    assert tagging_fit.tag_weights(encoded, TAG.num_outputs, 0.0, torch.device("cpu")) is None


def test_checkpoints_without_a_shape_term_save_none(tiny_bert, tmp_path):
    model = TransformerModel(tiny_bert, TAG, TrainingConfig(min_steps=5, device="cpu", word_shapes=False))
    model.fit(toy_tagging(10))
    model.save(tmp_path / "ckpt")
    assert SHAPE_KEY not in (tmp_path / "ckpt" / "al_schema.json").read_text()
    assert TransformerModel.load(tmp_path / "ckpt").shape_weight is None
