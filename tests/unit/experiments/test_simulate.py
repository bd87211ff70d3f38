import json

import pytest

from backend.cli import main
from backend.engine.data import Dataset
from backend.engine.models.transformer import TrainingConfig
from backend.engine.types import LabelSchema, TaskType
from backend.experiments.simulate import Simulation, SimulationConfig, summarize
from tests.helpers.toy_data import toy_classification, toy_tagging, write_toy_csv

FAST = TrainingConfig(epochs=10, learning_rate=3e-3, device="cpu")


def cls_dataset(n, seed):
    return Dataset("toy", LabelSchema(TaskType.CLASSIFICATION, ("pos", "neg")), toy_classification(n, seed))


def test_ups_rescores_a_subset_only_on_optimized_iterations(tiny_bert):
    config = SimulationConfig(
        acquisition_model=str(tiny_bert), configurations=("full", "ups", "random_subsample", "random"),
        iterations=4, seeds=(0,), seed_size=20, query_size=20, full_rescore_iterations=(1,),
        gamma=0.1, temperature=0.01, training=FAST,
    )
    records = Simulation(config, cls_dataset(300, 0), cls_dataset(60, 1)).run()
    by = {(r.configuration, r.iteration): r for r in records}
    assert len(records) == 4 * 5
    for it in range(5):
        assert by[("full", it)].labeled == 20 + 20 * it
    # iterations 0 (never scored) and 1 (schedule) score the whole pool; 2 and 3 only the UPS subset
    for it in (0, 1):
        assert by[("ups", it)].rescored == by[("ups", it)].pool_size
    for it in (2, 3):
        full, ups, rnd = by[("full", it)], by[("ups", it)], by[("random_subsample", it)]
        assert full.rescored == full.pool_size
        assert 0.05 * ups.pool_size < ups.rescored < 0.25 * ups.pool_size
        assert abs(rnd.rescored - ups.rescored) <= 0.05 * ups.pool_size
    assert all(r.rescored == 0 for r in records if r.configuration == "random")
    # identical labeled sets train identical models: full and UPS agree until they diverge
    assert by[("full", 1)].metrics == by[("ups", 1)].metrics
    assert by[("full", 4)].metrics["main"] > 0.6


def test_mahalanobis_strategy_fits_on_labeled_embeddings(tiny_bert):
    config = SimulationConfig(
        acquisition_model=str(tiny_bert), configurations=("ups",), strategy="mahalanobis",
        iterations=2, seeds=(0,), seed_size=20, query_size=10, training=FAST,
    )
    records = Simulation(config, cls_dataset(120, 0), cls_dataset(40, 1)).run()
    assert [r.labeled for r in records] == [20, 30, 40]
    assert all(r.inference_seconds > 0 for r in records[:2])


def test_tagging_budget_counts_tokens_and_successor_is_evaluated(tiny_distilbert, tiny_electra):
    schema = LabelSchema(TaskType.TAGGING, ("PER", "LOC"))
    train = Dataset("toy-ner", schema, toy_tagging(200, 0))
    test = Dataset("toy-ner", schema, toy_tagging(40, 1))
    config = SimulationConfig(
        acquisition_model=str(tiny_distilbert), successor_model=str(tiny_electra),
        configurations=("ups", "random"), iterations=2, seeds=(0, 1), seed_share=0.05, query_share=0.05,
        training=FAST,
    )
    sim = Simulation(config, train, test)
    records = sim.run()
    budget = round(0.05 * sum(len(e.words) for e in train.examples))
    first = [r for r in records if r.iteration == 0]
    assert all(budget <= r.labeled_tokens < budget + 10 for r in first)
    assert all(r.successor_seconds > 0 for r in records)
    summary = summarize(records)
    assert set(summary) == {"ups", "random"}
    assert [row["iteration"] for row in summary["ups"]] == [0, 1, 2]
    assert all(0.0 <= row["main_mean"] <= 1.0 for row in summary["ups"])


def test_simulate_cli_writes_json_plot_and_table(tmp_path, tiny_bert, capsys):
    data = write_toy_csv(tmp_path / "toy.csv", 200)
    out = tmp_path / "run"
    code = main([
        "simulate", "--dataset", str(data), "--acquisition-model", str(tiny_bert), "--iterations", "2",
        "--seeds", "0", "1", "--seed-size", "10", "--query-size", "10", "--epochs", "2",
        "--learning-rate", "2e-3", "--device", "cpu", "--output-dir", str(out), "--test-size", "40",
    ])
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["pool_size"] == 160 and payload["test_size"] == 40
    assert set(payload["summary"]) == {"full", "ups", "random_subsample", "random"}
    assert len(payload["records"]) == 2 * 3 * 4
    assert (out / "learning_curve.png").stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "accuracy" in table and "random_subsample" in table
    assert payload["metric"] == "accuracy" and payload["data"]["dataset"] == str(data)

    # replay from the results.json: same config and data, one flag overridden on the command line
    again = tmp_path / "replay"
    assert main(["simulate", "--config", str(out / "results.json"), "--seeds", "1", "--output-dir", str(again)]) == 0
    replayed = json.loads((again / "results.json").read_text())
    assert replayed["config"] == {**payload["config"], "seeds": [1]}
    assert replayed["data"] == payload["data"] and replayed["test_size"] == 40


def test_simulate_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["simulate", "--dataset", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing.csv" in err


def test_config_validation():
    with pytest.raises(ValueError, match="unknown configurations"):
        SimulationConfig(acquisition_model="x", configurations=("fast",))
    with pytest.raises(ValueError):
        SimulationConfig(acquisition_model="x", seed_share=2.0)


def test_on_trained_sees_each_new_labeled_set_once(tiny_bert):
    config = SimulationConfig(acquisition_model=str(tiny_bert), configurations=("full", "random"), iterations=1,
                              seeds=(0,), seed_size=10, query_size=10, training=FAST)
    seen = []
    Simulation(config, cls_dataset(60, 0), cls_dataset(20, 1),
               on_trained=lambda seed, it, trained: seen.append((seed, it, len(trained.labeled)))).run()
    # iteration 0: both configurations share the seed set (one training); iteration 1: two sets
    assert seen == [(0, 0, 10), (0, 1, 20), (0, 1, 20)]
