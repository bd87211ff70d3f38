"""`feasible-al bench-backend --fast-latency --task ner`, short form: a tiny model, a 150-sentence
WNUT-16 span-labeling project on the session's real Label Studio (100 distinct sentences, the
other 50 repeated with a ``#1`` suffix word), 3 measured annotations while a fine-tune runs, and
the token head's compute alone on 2,000 synthetic sentences. Checks what a reader of the
benchmark relies on: each latency was measured up to /next serving the new fast version, the
tagging stages are recorded, the predictions Label Studio holds for the serving version carry
spans inside their texts, the features' memory and disk size are measured, and the JSON, table
and PNG are written."""
from __future__ import annotations

import json

import pytest

from backend.harness.config import BackendBenchConfig, FastLatencyConfig
from backend.harness.fast_latency import bench_corpus, measure
from backend.harness.fast_latency_report import print_table
from backend.service.jobs.fast_steps import FIRST_PUSH

pytestmark = pytest.mark.integration


def bench_config(model: str, out: str) -> BackendBenchConfig:
    fast = FastLatencyConfig(
        pool_sizes=(150,), annotations=3, held_pool=0, fast_updates=0, full_iterations=0, concurrent_training=True,
        fast_worker_queues=("fast", "scoring"), fast_top_k=12, compute_pool=2000, compute_labeled=40, max_texts=100,
        features_timeout=300.0, think_s=0.5)
    # the classification default corpus: --task ner takes wnut16 instead
    return BackendBenchConfig(mode="fast-latency", model=model, device="cpu", torch_threads=1, epochs=1,
                              full_rescore_iterations="1", output_dir=out, fast=fast)


def test_repeated_sentences_are_distinct_and_keep_their_gold_spans():
    corpus = bench_corpus("ner", "wnut16", 40)
    texts, results, keys = corpus.tasks(100)
    assert len(set(texts)) == 100 and texts[45] == texts[5] + " #1" and texts[85] == texts[5] + " #2"
    for text, result in zip(texts, results):
        for region in result:
            value = region["value"]
            assert region["type"] == "labels" and text[value["start"]:value["end"]] == value["text"]
    seed = corpus.seed(keys)
    assert len(seed) == 10 and all(results[i] for i in seed), "seed sentences hold entities"


def test_fast_latency_benchmark_ner_short_form(label_studio, redis_server, tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    results = measure(bench_config(str(tiny_bert), str(out)), label_studio, redis_server, tmp_path, out, task="ner")
    print_table(results)

    assert results["task"] == "ner" and results["dataset"] == "wnut16" and results["texts"]["distinct"] == 100
    pool = results["pools"]["150"]
    assert pool["latency_s"]["n"] == 3 and 0 < pool["latency_s"]["p50"] <= pool["latency_s"]["max"]
    for sample in pool["samples"]:
        assert sample["labeled"] >= pool["seed_labels"] == 10 and sample["pushed"] == 12
        assert {"fetch_labels", "encode", "fit", "score", "save", "create_predictions", "switch",
                "total"} <= set(sample["stages"])
        assert sample["seen_published_s"] <= sample["latency_s"]
    spans = pool["spans"]
    assert spans["version"].startswith("fast-")  # the serving one (a fine-tune's end may refit after the last sample)
    assert FIRST_PUSH <= spans["held"] <= spans["pushed"] == 12
    assert spans["with_spans"] >= 1 and spans["spans"] >= spans["with_spans"] and spans["spans_outside_text"] == 0
    (key, on_disk), = pool["features"].items()
    assert key.startswith("words-") and on_disk["disk_bytes"] > 0 and on_disk["shards"] >= 1

    compute = results["compute"]
    assert compute["task"] == "ner" and compute["pool"] == 2000 and compute["labeled"] == 40
    assert compute["dim"] == 32 and compute["compute_s"] > 0  # the tiny encoder's width
    assert set(compute["median_seconds"]) >= {"fit", "score", "order", "decode_top_k", "save", "fit_synthetic"}
    for size in ("150", "2000"):
        memory = compute["memory"][size]
        assert memory["sentences"] == int(size) and memory["nbytes"] > 0 and memory["disk_bytes"] > 0
        assert memory["bytes_per_sentence"] == pytest.approx(memory["nbytes"] / int(size), rel=1e-3)

    written = json.loads((out / "fast_latency.json").read_text())
    assert written["pools"]["150"]["latency_s"] == pool["latency_s"]
    assert (out / "fast_latency.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "fast-path latency (ner)" in table and "with >= 1 span" in table and "kB/sentence" in table
