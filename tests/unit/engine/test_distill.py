"""Distillation: a half-depth student initialised from every second teacher layer, saved atomically,
loadable as an acquisition model; MLM-head and headless teachers."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, BertForMaskedLM

from backend.engine.errors import Cancelled
from backend.engine.metrics import evaluate
from backend.engine.models.transformer import TrainingConfig, TransformerModel
from backend.engine.plasm.distill import (
    REPORT_FILE,
    DistillConfig,
    distill,
    has_mlm_head,
    hidden_map,
    make_student,
    student_layers,
)
from backend.engine.types import LabelSchema, TaskType
from tests.helpers.tiny_models import build_tiny_model, build_wordpiece_tokenizer
from tests.helpers.toy_data import corpus_lines, toy_classification

TEXTS = [e.text for e in toy_classification(48)]
FAST = DistillConfig(epochs=1, batch_size=16, device="cpu")


def test_layer_maps():
    assert student_layers(6) == [0, 2, 4]
    assert student_layers(12) == [0, 2, 4, 6, 8, 10]
    assert student_layers(5) == [0, 2]
    assert student_layers(1) == [0]
    assert hidden_map(6, 3) == {0: 0, 1: 2, 2: 4, 3: 6}


@pytest.mark.parametrize("arch, layers", [("bert", 4), ("distilbert", 4), ("electra", 2)])
def test_student_has_half_the_layers_copied_from_every_second(tmp_path, arch, layers):
    teacher_dir = build_tiny_model(tmp_path / "teacher", arch, layers=layers)
    teacher = AutoModel.from_pretrained(teacher_dir)
    student, keep = make_student(teacher)
    assert keep == list(range(0, layers, 2))
    t_layers = teacher.base_model.encoder.layer if arch != "distilbert" else teacher.transformer.layer
    s_layers = student.base_model.encoder.layer if arch != "distilbert" else student.transformer.layer
    assert len(s_layers) == layers // 2
    for j, i in enumerate(keep):
        for (name, ps), (_, pt) in zip(s_layers[j].named_parameters(), t_layers[i].named_parameters()):
            assert torch.equal(ps, pt), name
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)


def test_distill_headless_teacher_saves_loadable_student(tmp_path):
    teacher_dir = build_tiny_model(tmp_path / "teacher", "bert", layers=4)
    assert not has_mlm_head(str(teacher_dir))
    seen = []
    report = distill(teacher_dir, TEXTS, tmp_path / "student", FAST, progress=lambda d, t: seen.append((d, t)))
    assert report.soft_targets == "hidden"
    assert (report.teacher_layers, report.student_layers, report.kept_layers) == (4, 2, [0, 2])
    assert report.steps == 3 and seen[-1] == (3, 3)
    assert report.student_parameters < report.teacher_parameters
    assert all(v == v and v >= 0 for v in report.losses.values())  # finite, non-negative
    out = tmp_path / "student"
    assert json.loads((out / REPORT_FILE).read_text())["student_layers"] == 2
    assert AutoModel.from_pretrained(out).config.num_hidden_layers == 2
    assert AutoModelForSequenceClassification.from_pretrained(out, num_labels=2).config.num_hidden_layers == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # usable as the acquisition model
    schema = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg"))
    model = TransformerModel(out, schema, TrainingConfig(epochs=1, learning_rate=1e-3, device="cpu"))
    model.fit(toy_classification(32))
    assert set(evaluate(model.predict(toy_classification(8)), toy_classification(8), schema)) >= {"main"}


def test_distill_mlm_teacher_uses_mlm_soft_targets(tmp_path):
    tokenizer = build_wordpiece_tokenizer(corpus_lines())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    teacher_dir = tmp_path / "mlm"
    BertForMaskedLM(config).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    assert has_mlm_head(str(teacher_dir))
    report = distill(teacher_dir, TEXTS, tmp_path / "student", FAST)
    assert report.soft_targets == "mlm" and report.student_layers == 1
    assert report.losses["kl"] >= 0


def test_distill_reduces_the_loss(tmp_path):
    teacher_dir = build_tiny_model(tmp_path / "teacher", "bert", layers=4)
    first = distill(teacher_dir, TEXTS, tmp_path / "s1", DistillConfig(epochs=1, batch_size=8, device="cpu"))
    more = distill(teacher_dir, TEXTS, tmp_path / "s2",
                   DistillConfig(epochs=6, batch_size=8, learning_rate=1e-3, device="cpu"))
    assert more.losses["total"] < first.losses["total"]


def test_cancelled_distillation_writes_nothing(tmp_path):
    teacher_dir = build_tiny_model(tmp_path / "teacher", "bert", layers=2)
    with pytest.raises(Cancelled):
        distill(teacher_dir, TEXTS, tmp_path / "student", FAST, cancel_check=lambda: True)
    assert not (tmp_path / "student").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"]


def test_distill_rejects_empty_corpus(tmp_path):
    with pytest.raises(Exception, match="non-empty"):
        distill("unused", ["", "  "], tmp_path / "student", FAST)
