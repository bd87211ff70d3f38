"""PLASM end to end with tiny models: classification and tagging, both filters, export, failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import asdict

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.engine.errors import Cancelled, NotEnoughLabelsError, StageError
from backend.engine.models import factory as factory_module
from backend.engine.models.factory import ClassicalModel, ModelFactory
from backend.engine.models.transformer import TrainingConfig
from backend.engine.plasm import export as export_module
from backend.engine.plasm import pipeline as plasm_module
from backend.engine.plasm.export import build_and_export, export_successor
from backend.engine.plasm.pipeline import (
    STAGES,
    FilterReport,
    PlasmOptions,
    PlasmSizes,
    average_predictions,
    filter_plan,
    run_plasm,
    split_folds,
    split_gold,
    strip_labels,
)
from backend.engine.types import LabelSchema, Predictions, TaskType
from tests.helpers.toy_data import toy_classification, toy_tagging

CLS = LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg"))
TAG = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))
FAST = TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=16, device="cpu")


def _options(teacher, successor, **kw) -> PlasmOptions:
    defaults = dict(teacher_training=FAST, successor_training=FAST, tracin_checkpoints=2)
    return PlasmOptions(teacher=str(teacher), successor=str(successor), **{**defaults, **kw})


# ------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize(
    "n, dev, mode, expected",
    [
        (100, 0.8, "both", (20, 10, 10)),
        (100, 0.8, "uncertainty", (20, 20, 0)),
        (100, 0.8, "tracin", (20, 0, 20)),
        (100, 0.8, "none", (0, 0, 0)),
        (7, 0.5, "both", (4, 2, 2)),
        (50, 1.0, "both", (0, 0, 0)),
        (50, 0.0, "tracin", (50, 0, 50)),
        (0, 0.3, "both", (0, 0, 0)),
    ],
)
def test_filter_plan_drops_one_minus_dev_score(n, dev, mode, expected):
    plan = filter_plan(n, dev, mode)
    assert (plan.total, plan.uncertainty, plan.tracin) == expected
    assert plan.uncertainty + plan.tracin == plan.total
    if mode != "none":
        assert plan.share == pytest.approx(min(1, max(0, 1 - dev)))


def test_filter_plan_uncertainty_fraction():
    plan = filter_plan(100, 0.6, "both", uncertainty_fraction=0.25)
    assert (plan.total, plan.uncertainty, plan.tracin) == (40, 10, 30)
    with pytest.raises(ValueError):
        filter_plan(10, 0.5, "bogus")


def test_split_gold_holds_out_ten_percent():
    gold = toy_classification(50)
    train, dev = split_gold(gold, 0.1, seed=0)
    assert len(dev) == 5 and len(train) == 45
    assert {id(e) for e in train}.isdisjoint({id(e) for e in dev})
    assert split_gold(gold, 0.1, seed=0)[1] == dev  # seeded
    assert len(split_gold(gold[:3], 0.1, 0)[1]) == 1


def test_options_validation():
    with pytest.raises(ValueError):
        PlasmOptions(teacher="t", successor="s", filter="nope")
    with pytest.raises(ValueError):
        PlasmOptions(teacher="t", successor="s", dev_share=0)
    with pytest.raises(ValueError):
        PlasmOptions(teacher="t", successor="s", teachers=0)


def test_teachers_hold_out_disjoint_dev_folds():
    gold = toy_classification(50)
    folds = split_folds(gold, 0.1, seed=0, folds=3)
    assert folds[0] == split_gold(gold, 0.1, seed=0)  # one teacher: the usual split
    devs = [{id(e) for e in dev} for _, dev in folds]
    assert [len(d) for d in devs] == [5, 5, 5] and len(set().union(*devs)) == 15
    for (train, _dev), ids in zip(folds, devs):
        assert len(train) == 45 and ids.isdisjoint({id(e) for e in train})
    with pytest.raises(NotEnoughLabelsError):
        split_folds(gold[:10], 0.1, seed=0, folds=10)  # 10 folds of 1 leave no training example


def test_ensemble_pseudo_labels_average_the_teachers():
    a = Predictions(TaskType.CLASSIFICATION, np.array([[0.9, 0.1], [0.4, 0.6]]))
    b = Predictions(TaskType.CLASSIFICATION, np.array([[0.3, 0.7], [0.2, 0.8]]))
    np.testing.assert_allclose(average_predictions([a, b]).probs, [[0.6, 0.4], [0.3, 0.7]])
    t1 = Predictions(TaskType.TAGGING, [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])])
    t2 = Predictions(TaskType.TAGGING, [np.array([[0.0, 1.0]]), np.array([[0.0, 1.0], [0.0, 1.0]])])
    avg = average_predictions([t1, t2]).probs
    np.testing.assert_allclose(avg[0], [[0.5, 0.5]]) and np.testing.assert_allclose(avg[1], [[0, 1], [0.5, 0.5]])


# ------------------------------------------------------------------------------ full runs
def _check_sizes(result, n_pool):
    plan = filter_plan(n_pool, result.metrics["teacher"]["main"], result.options.filter,
                       result.options.uncertainty_fraction)
    s = result.sizes
    assert isinstance(s, PlasmSizes) and isinstance(result.filter, FilterReport)
    assert s.pool == n_pool
    assert s.dropped_uncertainty == plan.uncertainty
    assert s.dropped_tracin == plan.tracin
    assert s.pseudo_kept == n_pool - plan.total
    assert len(result.kept_indices) == s.pseudo_kept
    expected_share = 0.0 if result.options.filter == "none" else 1 - result.metrics["teacher"]["main"]
    assert result.filter.share == pytest.approx(expected_share)


def test_full_plasm_classification_exports_loadable_successor(tiny_bert, tiny_electra, tmp_path):
    gold, pool = toy_classification(60), [strip_labels(e) for e in toy_classification(50, seed=3)]
    seen: list[str] = []
    result, paths = build_and_export(
        gold, pool, CLS, _options(tiny_bert, tiny_electra), tmp_path / "succ",
        progress=lambda stage, done, total: seen.append(stage),
    )
    assert [s for s in STAGES if s in seen] == list(STAGES)  # every stage reported, in order
    assert set(result.metrics) == {"teacher", "successor_plasm", "successor_gold_only"}
    plasm, gold_only = (result.metrics[f"successor_{name}"]["main"] for name in ("plasm", "gold_only"))
    assert result.chosen == ("gold_only" if gold_only > plasm else "plasm"), result.metrics  # gold-only if higher
    _check_sizes(result, 50)
    assert result.sizes.dropped_tracin > 0 and result.sizes.dropped_uncertainty > 0
    assert result.filter.tracin.form.startswith("last-layer")
    for stage in STAGES:
        assert result.stage_seconds[stage] >= 0

    # the export: from_pretrained directory + metrics.json + model card + archive
    d = paths.directory
    model = AutoModelForSequenceClassification.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    assert model.config.id2label == {0: "pos", 1: "neg"} and model.config.label2id == {"pos": 0, "neg": 1}
    assert model.config.model_type == "electra"
    with torch.no_grad():
        logits = model(**tok(["a great movie"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["chosen"] == result.chosen and metrics["sizes"] == asdict(result.sizes)
    assert metrics["filter"]["tracin"]["form"] == result.filter.tracin.form
    assert set(metrics["dev_metrics"]) == set(result.metrics)
    card = (d / "README.md").read_text()
    for needle in ("pseudo-labels kept", "TracIn", "dev split", "successor"):
        assert needle in card
    with tarfile.open(paths.archive) as tar:
        names = tar.getnames()
    assert "succ/config.json" in names and "succ/metrics.json" in names and "succ/README.md" in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_full_plasm_tagging_with_classical_successor(tiny_bert, tmp_path):
    gold, pool = toy_tagging(60), [strip_labels(e) for e in toy_tagging(40, seed=5)]
    opts = _options(tiny_bert, "bilstm-crf", successor_training=TrainingConfig(epochs=3, device="cpu"))
    result = run_plasm(gold, pool, TAG, opts)
    _check_sizes(result, 40)
    assert isinstance(result.model, ClassicalModel)
    for ex in (pool[i] for i in result.kept_indices):
        assert ex.tags == []  # the caller's pool is not modified
    paths = export_successor(result, tmp_path / "tagger")
    # loads with plain transformers in a fresh interpreter that never imports this package
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForTokenClassification, AutoTokenizer\n"
        f"d = {str(paths.directory)!r}\n"
        "m = AutoModelForTokenClassification.from_pretrained(d, trust_remote_code=True)\n"
        "t = AutoTokenizer.from_pretrained(d, trust_remote_code=True)\n"
        "enc = t([['alice', 'went', 'to', 'paris']], is_split_into_words=True, return_tensors='pt')\n"
        "out = m(**enc).logits\n"
        "assert 'backend' not in sys.modules\n"
        "print(tuple(out.shape), m.config.id2label[1])\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "(1, 4, 5) B-PER"


@pytest.mark.parametrize("mode", ["uncertainty", "none"])
def test_single_filters_drop_the_planned_share(tiny_bert, mode):
    gold, pool = toy_classification(40), [strip_labels(e) for e in toy_classification(30, seed=7)]
    result = run_plasm(gold, pool, CLS, _options(tiny_bert, "cnn", filter=mode, compare_gold_only=False))
    _check_sizes(result, 30)
    assert result.chosen == "plasm" and "successor_gold_only" not in result.metrics
    if mode == "none":
        assert result.sizes.pseudo_kept == 30
        assert result.filter.tracin is None


def test_teacher_ensemble_sets_the_filter_share_from_every_dev_fold(tiny_bert, tmp_path):
    gold, pool = toy_classification(40), [strip_labels(e) for e in toy_classification(30, seed=7)]
    opts = _options(tiny_bert, "cnn", filter="uncertainty", compare_gold_only=False, teachers=2)
    result, paths = build_and_export(gold, pool, CLS, opts, tmp_path / "succ")
    assert result.filter.teachers == 2 and result.filter.dev_examples == 8  # two folds of 10% of 40
    _check_sizes(result, 30)  # the share is 1 - the out-of-fold dev score
    assert result.sizes.dev == 4 and result.sizes.gold_train == 36  # the successor holds out the first fold
    assert "teachers: 2" in (paths.directory / "README.md").read_text()


def test_successor_on_all_gold_trains_on_the_dev_split_too(tiny_bert, tmp_path):
    gold, pool = toy_classification(40), [strip_labels(e) for e in toy_classification(30, seed=7)]
    with pytest.raises(ValueError, match="compare_gold_only"):
        _options(tiny_bert, "cnn", successor_all_gold=True)  # nothing held out to compare on
    opts = _options(tiny_bert, "cnn", filter="uncertainty", compare_gold_only=False, successor_all_gold=True)
    result, paths = build_and_export(gold, pool, CLS, opts, tmp_path / "succ")
    s = result.sizes
    assert (s.gold, s.dev, s.gold_train, s.successor_train) == (40, 4, 40, 40 + s.pseudo_kept)
    assert set(result.metrics) == {"teacher"}  # no dev score for a successor that trained on the dev split
    assert "every gold label" in result.chosen_reason and "| – |" in (paths.directory / "README.md").read_text()


def test_uncertainty_filter_drops_least_confident(tiny_bert):
    gold, pool = toy_classification(40), [strip_labels(e) for e in toy_classification(30, seed=7)]
    opts = _options(tiny_bert, "cnn", filter="uncertainty", compare_gold_only=False)
    labels = plasm_module.pseudo_label(gold, pool, CLS, opts)
    result = plasm_module.build_successor(labels, opts)
    dropped = np.setdiff1d(np.arange(30), result.kept_indices)
    if len(dropped) and len(result.kept_indices):
        assert labels.confidence[dropped].max() <= labels.confidence[result.kept_indices].min()


# ------------------------------------------------------------------------------ failures
def test_failing_stage_leaves_no_export(tiny_bert, tmp_path, monkeypatch):
    target = tmp_path / "succ"
    real = factory_module.make_model

    def broken(name, schema, config=None):
        model = real(name, schema, config)
        if name == "cnn":
            def fail(*args, **kwargs):
                raise RuntimeError("disk on fire")
            model.fit = fail
        return model

    monkeypatch.setattr(factory_module, "make_model", broken)
    gold, pool = toy_classification(30), [strip_labels(e) for e in toy_classification(20, seed=2)]
    with pytest.raises(StageError) as err:
        build_and_export(gold, pool, CLS, _options(tiny_bert, "cnn"), target)
    assert err.value.stage == "filter_tracin" and "disk on fire" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_failing_export_keeps_previous_export(tiny_bert, tmp_path, monkeypatch):
    gold, pool = toy_classification(30), [strip_labels(e) for e in toy_classification(20, seed=2)]
    result = run_plasm(gold, pool, CLS, _options(tiny_bert, "cnn", filter="uncertainty", compare_gold_only=False))
    target = tmp_path / "succ"
    export_successor(result, target)
    before = sorted(p.name for p in target.iterdir())
    archive_bytes = (tmp_path / "succ.tar.gz").read_bytes()

    def broken_card(*args, **kwargs):
        raise OSError("no space left")

    monkeypatch.setattr(export_module, "model_card", broken_card)
    with pytest.raises(OSError):
        export_successor(result, target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert (tmp_path / "succ.tar.gz").read_bytes() == archive_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["succ", "succ.tar.gz"]


def test_cancel_stops_and_exports_nothing(tiny_bert, tmp_path):
    gold, pool = toy_classification(30), [strip_labels(e) for e in toy_classification(20, seed=2)]
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(Cancelled):
        build_and_export(gold, pool, CLS, _options(tiny_bert, "cnn"), tmp_path / "succ", cancel_check=cancel)
    assert list(tmp_path.iterdir()) == []


def test_too_few_gold_labels_is_a_clear_error(tiny_bert):
    with pytest.raises(StageError, match="at least 2 gold"):
        run_plasm(toy_classification(1), [], CLS, _options(tiny_bert, "cnn"))


def test_model_factory_new_replaces_only_the_seed(tiny_bert):
    factory = ModelFactory(str(tiny_bert), CLS, FAST)
    assert factory.new().config == FAST
    seeded = factory.new(seed=7)
    assert seeded.config.seed == 7 and seeded.config.epochs == FAST.epochs
    assert factory.training.seed == FAST.seed  # the factory's config is not changed
    assert isinstance(ModelFactory("cnn", CLS).new(1), ClassicalModel)


def test_model_card_renders_every_field(tiny_bert, tmp_path):
    gold, pool = toy_classification(30), [strip_labels(e) for e in toy_classification(20, seed=2)]
    result = run_plasm(gold, pool, CLS, _options(tiny_bert, "cnn", filter="uncertainty", compare_gold_only=False))
    card = export_module.model_card(result, "succ")
    assert "$" not in card and "trust_remote_code=True" in card and "word level" in card
    assert f"| pseudo-labels kept | {result.sizes.pseudo_kept} |" in card
    assert "TracIn self-influence" not in card  # TracIn did not run
