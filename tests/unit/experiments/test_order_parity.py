"""The label-efficiency benchmark measures the order that serves: a fast update (real Redis, real
in-process RQ worker, tiny encoder) and bench-labels' query step, given the same features and the
same labels, put the same top K in front of the annotator, in the same order, both in the cold
start (typical texts) and after it (least confident)."""
from __future__ import annotations

import numpy as np
import pytest

from backend.engine.acquisition.cold_start import typical_order
from backend.engine.acquisition.order import ColdStart
from backend.engine.proxy import ProxyHead
from backend.experiments.label_efficiency.runner import next_to_label
from backend.labeling import parse_label_config
from backend.service.runtime import set_context
from tests.helpers.backend import CLASSIFICATION_XML
from tests.unit.service.test_fast_path import PID, TOP_K, annotate, connect, examples, make_backend, work


@pytest.mark.parametrize("cold_start_labels", [0, 30], ids=["uncertainty", "cold-start"])
def test_a_fast_update_and_the_benchmark_query_the_same_top_k(redis_url, tmp_path, tiny_bert, cold_start_labels):
    backend = make_backend(redis_url, tmp_path, tiny_bert, fast_cold_start=cold_start_labels)
    set_context(backend)
    try:
        data = examples(60)
        ls, client = connect(backend, [t for t, _ in data])
        for task_id in range(1, 12):
            ls.annotate(task_id, data[task_id - 1][1])
        annotate(client, ls, 12, data[11][1])  # the webhook: features, then a fast update
        work(backend)
        state = backend.store.get_project(PID)
        assert state is not None and state.fast_status and state.fast_status["status"] == "published"
        served = [p["task"] for p in sorted((p for p in ls.predictions if p["model_version"] == state.version),
                                            key=lambda p: p["score"])]

        # the benchmark's side: the same feature rows (every task, by id), labels and head rule
        features = backend.features.load(PID, state.feature_key)
        ids = np.sort(np.asarray(features.ids, np.int64))
        rows, found = features.rows(ids.tolist())
        assert found.all()
        pool_features = features.matrix[rows]
        labeled = ids <= 12
        schema = parse_label_config(CLASSIFICATION_XML).schema
        head = ProxyHead(schema, backend.settings.seed).fit(
            pool_features[labeled], [[data[t - 1][1]] for t in ids[labeled]])
        typical = typical_order(pool_features, cold_start_labels, backend.settings.seed) if cold_start_labels \
            else np.zeros(0, np.int64)
        picked = next_to_label(pool_features, head, labeled, TOP_K, ColdStart(cold_start_labels, typical))

        expected_order = "typical" if cold_start_labels else "uncertainty"
        assert state.fast_status["order"] == expected_order
        assert len(served) == TOP_K
        assert served == [int(t) for t in ids[picked]]
    finally:
        set_context(None)
