"""`feasible-al bench-backend --fast-latency`, short form: a tiny model, a 150-task project on the
session's real Label Studio, 3 measured annotations while a fine-tune runs, one full iteration
before LS's predictions are counted, and the compute alone on 2,000 synthetic tasks. Checks what
a reader of the benchmark relies on: each latency was measured up to /next serving the new fast
version, the stages are recorded, and the JSON, table and PNG are written."""
from __future__ import annotations

import json

import pytest

from backend.harness.config import BackendBenchConfig, FastLatencyConfig
from backend.harness.fast_latency import measure
from backend.harness.fast_latency_report import print_table

pytestmark = pytest.mark.integration


def bench_config(model: str, out: str) -> BackendBenchConfig:
    fast = FastLatencyConfig(
        pool_sizes=(150,), annotations=3, held_pool=150, fast_updates=3, full_iterations=1, concurrent_training=True,
        fast_worker_queues=("fast", "scoring"), fast_top_k=12, compute_pool=2000, compute_labeled=40, max_texts=150,
        features_timeout=300.0, think_s=0.5)
    return BackendBenchConfig(mode="fast-latency", model=model, dataset="rotten_tomatoes", device="cpu",
                              torch_threads=1, epochs=1, full_rescore_iterations="1", output_dir=out, fast=fast)


def test_fast_latency_benchmark_short_form(label_studio, redis_server, tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    results = measure(bench_config(str(tiny_bert), str(out)), label_studio, redis_server, tmp_path, out)
    print_table(results)

    pool = results["pools"]["150"]
    assert pool["latency_s"]["n"] == 3 and 0 < pool["latency_s"]["p50"] <= pool["latency_s"]["max"]
    for sample in pool["samples"]:
        # FIRST_PUSH before the switch, the rest after
        assert sample["labeled"] >= pool["seed_labels"] and sample["pushed"] == 12
        assert {"fetch_labels", "fit", "score", "create_predictions", "switch", "total"} <= set(sample["stages"])
        assert sample["seen_published_s"] <= sample["latency_s"]
    held = pool["held"]
    assert held["full_iterations"] >= 1 and held["fast_updates"] >= 3
    assert held["predictions_held"] == sum(held["versions_held"].values()) > 0
    compute = results["compute"]
    assert compute["pool"] == 2000 and compute["compute_s"] > 0

    written = json.loads((out / "fast_latency.json").read_text())
    assert written["pools"]["150"]["latency_s"] == pool["latency_s"]
    assert (out / "fast_latency.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "fast-path latency" in table and "LS predictions held" in table
