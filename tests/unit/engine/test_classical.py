"""Classical successors: the CRF against brute force, the models through the shared train/predict/
save/load path, and loading with the transformers Auto classes."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from backend.engine.metrics import evaluate
from backend.engine.models.classical import CRF, build_word_tokenizer, iob2_transition_mask
from backend.engine.models.factory import ClassicalModel, classical_kind, load_model, make_model
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.types import ClassificationExample, LabelSchema, TaggingExample, TaskType
from tests.helpers.toy_data import toy_classification, toy_tagging

CLS = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg"))
TAG = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))


def _crf(num_tags=3, constraints=None, seed=0):
    torch.manual_seed(seed)
    crf = CRF(num_tags, constraints)
    with torch.no_grad():
        for p in crf.parameters():
            p.uniform_(-1, 1)
    return crf


def _path_score(crf, emissions, path):
    trans, start = crf._trans()
    score = start[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score = score + trans[path[t - 1], path[t]] + emissions[t, path[t]]
    return score + crf.end_transitions[path[-1]]


def _brute(crf, emissions, length):
    paths = list(itertools.product(range(crf.num_tags), repeat=length))
    scores = torch.stack([_path_score(crf, emissions[:length], p) for p in paths])
    return paths, scores


@torch.no_grad()
def test_crf_nll_marginals_viterbi_match_brute_force():
    crf = _crf()
    torch.manual_seed(1)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    tags = torch.tensor([[0, 2, 1, 1], [2, 0, 0, 0]])
    nll = crf.nll(emissions, tags, mask)
    marg = crf.log_marginals(emissions, mask).exp()
    best = crf.viterbi(emissions, mask)
    for row, length in enumerate((4, 2)):
        paths, scores = _brute(crf, emissions[row], length)
        log_z = torch.logsumexp(scores, 0)
        gold = _path_score(crf, emissions[row, :length], tags[row, :length].tolist())
        assert float(nll[row]) == pytest.approx(float(log_z - gold), abs=1e-4)
        probs = (scores - log_z).exp()
        for t in range(length):
            expected = [float(sum(p for path, p in zip(paths, probs) if path[t] == k)) for k in range(3)]
            np.testing.assert_allclose(marg[row, t].detach().numpy(), expected, atol=1e-5)
        assert tuple(best[row]) == paths[int(scores.argmax())]


@torch.no_grad()
def test_crf_iob2_constraints_forbid_invalid_paths():
    id2label = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    allowed, start = iob2_transition_mask(id2label)
    assert start == [True, True, False, True, False]
    assert allowed[0][2] is False and allowed[1][2] is True and allowed[2][2] is True and allowed[3][2] is False
    assert iob2_transition_mask({0: "pos", 1: "neg"}) is None
    crf = _crf(5, (allowed, start))
    emissions = torch.zeros(1, 3, 5)
    emissions[0, :, 2] = 5.0  # I-PER everywhere would win without constraints
    path = crf.viterbi(emissions, torch.ones(1, 3, dtype=torch.bool))[0]
    assert path[0] != 2 and path[0] != 4
    marg = crf.log_marginals(emissions, torch.ones(1, 3, dtype=torch.bool)).exp()
    assert float(marg[0, 0, 2]) < 1e-3


def test_word_tokenizer_one_token_per_word_for_tagging():
    tok = build_word_tokenizer([["Alice", "went", "to", "Paris", "don't"]], split_words=False, lowercase=False)
    enc = tok([["Alice", "went", "to", "Lima", "don't"]], is_split_into_words=True)
    assert enc.word_ids(0) == [0, 1, 2, 3, 4]  # no special tokens, punctuation stays inside words
    assert enc["input_ids"][0][3] == tok.unk_token_id and tok.pad_token_id == 0
    cls_tok = build_word_tokenizer(["The film, really."], split_words=True, lowercase=True)
    assert cls_tok.convert_ids_to_tokens(cls_tok("THE FILM")["input_ids"]) == ["the", "film"]


@pytest.mark.parametrize("kind, schema, data", [("cnn", CLS, toy_classification), ("bilstm-crf", TAG, toy_tagging)])
def test_classical_models_train_save_load(kind, schema, data, tmp_path):
    train, test = data(160), data(60, seed=1)
    model = make_model(kind, schema, TrainingConfig(device="cpu", epochs=6))
    assert isinstance(model, ClassicalModel) and model.config.learning_rate is not None
    report = model.fit(train)
    assert report.steps > 0
    preds = model.predict(test, return_embeddings=True)
    score = evaluate(preds, test, schema)["main"]
    assert score > 0.7, score
    assert preds.embeddings is not None and len(preds.embeddings) == len(test)
    path = model.save(tmp_path / kind)
    assert (path / "classical.py").is_file()  # code beside the weights for trust_remote_code
    assert classical_kind(path) == kind
    again = load_model(path)
    assert isinstance(again, ClassicalModel)
    np.testing.assert_allclose(
        np.asarray(again.predict(test).probs if kind == "cnn" else np.concatenate(again.predict(test).probs)),
        np.asarray(preds.probs if kind == "cnn" else np.concatenate(preds.probs)), atol=1e-5,
    )
    auto = AutoModelForSequenceClassification if kind == "cnn" else AutoModelForTokenClassification
    hf = auto.from_pretrained(path)  # registered in this process: no remote code needed
    assert hf.config.id2label[1] == schema.output_names[1]
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == hf.config.vocab_size


def test_predictions_do_not_depend_on_batch_padding():
    train = toy_classification(80)
    model = make_model("cnn", CLS, TrainingConfig(device="cpu", epochs=2))
    model.fit(train)
    a = model.predict(train[:9], batch_size=9).probs
    b = np.stack([model.predict([ex]).probs[0] for ex in train[:9]])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_empty_and_odd_inputs():
    model = make_model("classical", TAG, TrainingConfig(device="cpu", epochs=1))
    model.fit(toy_tagging(20))
    preds = model.predict([TaggingExample([]), TaggingExample(["x"])])
    assert preds.probs[0].shape == (0, 5) and preds.probs[1].shape == (1, 5)
    cnn = make_model("cnn", CLS, TrainingConfig(device="cpu", epochs=1))
    cnn.fit(toy_classification(20))
    out = cnn.predict([ClassificationExample(""), ClassificationExample("a")]).probs
    assert out.shape == (2, 2) and np.isfinite(out).all()


def test_make_model_dispatch(tiny_bert):
    assert isinstance(make_model(tiny_bert, CLS), TransformerModel)
    assert not isinstance(make_model(tiny_bert, CLS), ClassicalModel)
    assert make_model("classical", CLS).kind == "cnn"
    assert make_model("classical", TAG).kind == "bilstm-crf"
    with pytest.raises(ValueError, match="does not suit"):
        ClassicalModel("cnn", TAG)
    with pytest.raises(RuntimeError, match="fit"):
        make_model("cnn", CLS).predict(toy_classification(2))
    assert math.isclose(make_model("cnn", CLS, TrainingConfig(learning_rate=0.01)).config.learning_rate, 0.01)
