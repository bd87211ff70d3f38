"""`feasible-al` parsing: flags generated from the config dataclasses keep their names and defaults,
runs replay from their results.json, and bugs keep their tracebacks (README commands: test_readme.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.cli import build_parser, is_user_error, main, replay
from backend.cli.args import flatten_config
from backend.engine.errors import DatasetError
from backend.engine.metrics import main_metric_name
from backend.engine.types import LabelSchema, TaskType

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["simulate", "bench", "distill", "plasm", "simulate-plasm", "serve", "worker", "bench-backend"]


def _parse(argv):
    parser = build_parser()
    return replay(parser, parser.parse_args(argv), argv)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: feasible-al" in capsys.readouterr().out


def test_defaults_come_from_the_dataclasses():
    sim = _parse(["simulate"])
    assert (sim.batch_size, sim.max_length, sim.gamma, sim.temperature, sim.iterations) == (16, 128, 0.1, 0.01, 10)
    assert tuple(sim.seeds) == (0, 1, 2) and sim.acquisition_model == "all-MiniLM-L6-v2"
    assert (sim.dataset, sim.test_size, sim.output_dir, sim.device) == ("rotten_tomatoes", 0.2, "runs/simulate", "auto")
    sp = _parse(["simulate-plasm"])
    assert (sp.iterations, sp.student, sp.successor, sp.filter, sp.successor_batch_size) == (4, "distill", "classical",
                                                                                             "both", None)
    dis = _parse(["distill"])
    assert (dis.epochs, dis.learning_rate, dis.temperature, dis.output_dir) == (1, 1e-4, 2.0, "runs/student")
    pl = _parse(["plasm"])
    assert (pl.seed, pl.dev_share, pl.tracin_checkpoints, pl.no_archive, pl.export_dir) == (0, 0.1, 3, False,
                                                                                           "runs/successor")


def test_hyphen_flags_and_list_flags_keep_their_meaning():
    args = _parse(["--threads", "1", "simulate", "--seeds", "3", "4", "--full-rescore-iterations",
                   "--configurations", "full", "ups", "--max-examples", "50"])
    assert args.threads == 1 and list(args.seeds) == [3, 4] and list(args.full_rescore_iterations) == []
    assert list(args.configurations) == ["full", "ups"] and args.max_examples == 50
    pl = _parse(["plasm", "--no-archive", "--filter", "tracin", "--successor-epochs", "3"])
    assert pl.no_archive is True and pl.filter == "tracin" and pl.successor_epochs == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plasm", "--filter", "loud"])


def test_replay_from_an_old_simulate_results_file():
    saved = json.loads((REPO / "docs/benchmarks/rt-ups/results.json").read_text())
    args = _parse(["simulate", "--config", str(REPO / "docs/benchmarks/rt-ups/results.json"), "--seeds", "5"])
    config = saved["config"]
    assert list(args.configurations) == config["configurations"] and args.iterations == config["iterations"]
    assert args.learning_rate == config["training"]["learning_rate"] and args.seed_size == config["seed_size"]
    assert list(args.full_rescore_iterations) == config["full_rescore_iterations"]
    assert args.dataset == saved["dataset"]
    assert list(args.seeds) == [5]  # a flag given on the command line wins


def test_replay_of_a_plasm_experiment_maps_successor_training(tmp_path):
    saved = json.loads((REPO / "docs/benchmarks/plasm-wnut/results.json").read_text())
    args = _parse(["simulate-plasm", "--config", str(REPO / "docs/benchmarks/plasm-wnut/results.json")])
    assert (args.successor, args.student, args.max_pool) == ("bilstm-crf", saved["config"]["student"], 500)
    assert args.successor_epochs == 10 and args.epochs == 5 and args.batch_size == 8 and args.max_length == 64
    # the new layout: nested simulation / plasm blocks; the student is the loop's acquisition model
    new = {"config": {"simulation": {"acquisition_model": "runs/s", "iterations": 3, "training": {"seed": 7}},
                      "plasm": {"teacher": "t", "seed": 0, "successor_training": {"epochs": 9}}},
           "data": {"dataset": "wnut16", "test_size": 300}}
    (tmp_path / "r.json").write_text(json.dumps(new))
    args = _parse(["simulate-plasm", "--config", str(tmp_path / "r.json")])
    assert (args.student, args.iterations, args.teacher, args.successor_epochs) == ("runs/s", 3, "t", 9)
    assert (args.dataset, args.test_size) == ("wnut16", 300)


def test_flatten_config_keeps_outer_values():
    flat = flatten_config({"seed": 3, "training": {"seed": 0, "epochs": 2}, "successor_training": {"epochs": 4}})
    assert flat == {"seed": 3, "epochs": 2, "successor_epochs": 4}


def test_a_bad_config_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["simulate", "--config", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.startswith("error: --config")


def test_config_validation_errors_are_one_line(capsys):
    assert main(["simulate", "--seed-share", "2"]) == 2
    assert "seed_share must be in (0, 1)" in capsys.readouterr().err


def test_only_user_errors_are_shortened():
    def raised(fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the exception is the subject
            return exc
        raise AssertionError("no exception")

    from backend.experiments.simulate import SimulationConfig

    assert is_user_error(raised(lambda: SimulationConfig(configurations=("x",))))
    assert is_user_error(DatasetError("bad file"))
    assert not is_user_error(raised(lambda: np.zeros(3).reshape(2)))  # a library's ValueError: a bug
    assert not is_user_error(RuntimeError("invariant broken"))
    assert not is_user_error(KeyError("main"))


def test_main_metric_name_matches_evaluate():
    assert main_metric_name(LabelSchema(TaskType.CLASSIFICATION, ("a", "b"))) == "accuracy"
    assert main_metric_name(LabelSchema(TaskType.CLASSIFICATION, ("a", "b"), multi_label=True)) == "macro-F1"
    assert main_metric_name(LabelSchema(TaskType.TAGGING, ("PER",))) == "span F1 (strict)"
