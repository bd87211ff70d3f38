"""`feasible-al bench-backend --mode label-efficiency`, short form: an easy two-class corpus (160 pool
tasks, 100 test texts), a tiny model, the README's deployment (a worker on every queue and one on the
fast queue alone) on the session's real Label Studio and Redis, 40 annotations taken from `/next`
with budgets 20 and 40. Checks what a reader of the benchmark relies on: the budgets are recorded
with accuracies in [0, 1], better than chance at the last one, every annotation came from `/next`
(each a different task) and reached the backend through Label Studio's own webhook (the fast updates
it triggered published), the deployment is named, and the run file, JSON, table and PNG are written."""
from __future__ import annotations

import csv
import json
import random

import pytest

from backend.harness.config import BackendBenchConfig, ServiceLoopConfig
from backend.harness.service_loop import measure
from backend.harness.service_loop_report import report, run_path
from tests.helpers.toy_data import FILLER, NEGATIVE, POSITIVE

pytestmark = pytest.mark.integration

POOL, TEST, BUDGETS = 160, 100, (20, 40)


def easy_corpus(path, n: int = POOL + TEST) -> None:
    """Three cue words of one class and a filler word per text: a frozen tiny encoder separates them."""
    rng = random.Random(0)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = "pos" if i % 2 == 0 else "neg"
            words = rng.sample(POSITIVE if label == "pos" else NEGATIVE, 3) + rng.sample(FILLER, 1)
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])


def test_service_loop_short_form(label_studio, redis_server, tiny_bert, tmp_path, capsys):
    corpus, out = tmp_path / "easy.csv", tmp_path / "out"
    easy_corpus(corpus)
    loop = ServiceLoopConfig(corpus=(str(corpus),), seeds=(0,), budgets=BUDGETS, workers=("readme",), test_size=TEST)
    config = BackendBenchConfig(mode="label-efficiency", model=str(tiny_bert), pool_size=POOL, output_dir=str(out),
                                loop=loop)
    (run,) = measure(config, label_studio, redis_server.url, tmp_path / "root", out)

    assert run["deployment"] == "readme"
    assert run["workers"] == "an RQ worker on every queue and one on the fast queue alone"
    assert run["settings"] == {"ACQUISITION_MODEL": str(tiny_bert)}  # everything else: the backend's defaults
    assert (run["pool"], run["test"]) == (POOL, TEST)
    points = run["points"]
    assert [p["labeled"] for p in points] == list(BUDGETS)
    for p in points:
        assert 0.0 <= p["accuracy"] <= 1.0 and sum(p["versions"].values()) == TEST
        assert p["serving_model"] in ("proxy", "finetuned")
    assert points[-1]["accuracy"] > 0.6, points  # two balanced classes: chance is 0.5

    log = run["annotation_log"]
    assert run["annotations"] == run["from_next"] == len(log) == BUDGETS[-1]
    assert all(r["from_next"] for r in log) and len({r["task"] for r in log}) == len(log)
    published = [r for r in log if r["outcome"] == "published"]
    assert published, "no annotation reached the backend through Label Studio's webhook"
    assert run["latency_s"]["n"] == len(published) and 0 < run["latency_s"]["p50"] <= run["latency_s"]["p95"]
    assert sum(run["outcomes"].values()) == len(log) and run["misses"] == run["outcomes"].get("miss", 0)

    compare = tmp_path / "label_efficiency.json"
    compare.write_text(json.dumps({"records": [{"corpus": run["corpus"], "method": "proxy-uncertainty", "seed": 0,
                                                "labeled": b, "metrics": {"main": 0.9}} for b in BUDGETS]}))
    text, json_path, png_path = report(out, str(compare))
    print(text)
    assert json.loads(run_path(out, run).read_text())["points"] == points
    written = json.loads(json_path.read_text())
    assert written["loop"][run["corpus"]]["readme"][str(BUDGETS[-1])]["mean"] == points[-1]["accuracy"]
    assert png_path.stat().st_size > 0
    table = capsys.readouterr().out
    assert "loop readme" in table and "proxy-uncertainty" in table and f"{points[-1]['accuracy']:.3f}" in table
