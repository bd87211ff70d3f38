"""Suspect labels against a real Label Studio 1.23.2: the CV job that follows a fast update writes
the labels a cross-validated head contradicts as predictions of model version ``SUSPECT_VERSION``,
and the Data Manager's "Prediction model versions" filter (the query its UI sends) selects exactly
those tasks, while annotators keep seeing the fast version (the project's ``model_version``).

Mirrors tests/unit/service/test_pm_signals.py::test_a_flipped_label_is_a_suspect_in_the_page_and_in_label_studio,
with LS, gunicorn, an RQ worker and Redis real. What LS 1.23.2 offers (its source, checked on the
running server): ``filter:tasks:predictions_model_versions`` with operator ``contains`` takes a *list*
of versions and matches ``predictions__model_version__contains`` for each (data_manager/managers.py,
``apply_filters``; a bare string is iterated character by character and matches nearly every task).
The Prediction model's ``mislabeling`` float (tasks/models.py) is not a Data Manager column, a
filter on ``predictions__mislabeling`` is refused (``"__"``, CVE-2023-47117 guard in
data_manager/prepare_params.py) and ``POST /api/projects/<id>/import/predictions`` drops it
(data_import/api.py builds ``Prediction(task, project, result, score, model_version)``).
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
import requests

from backend.service.jobs.signals import SUSPECT_VERSION
from tests.helpers.backend import CLASSIFICATION_XML, SENTIMENT
from tests.helpers.ls_admin import UNCERTAINTY_SAMPLING
from tests.helpers.servers import BackendProcesses
from tests.helpers.toy_data import toy_classification
from tests.integration.test_backend_e2e import (  # noqa: F401  (module fixture `ls`)
    Stack,
    ls,
    stack_env,
    wait_for,
)

pytestmark = pytest.mark.integration

POOL = 60
LABELED = 40  # labeled in LS before the backend is connected: one fast update sees them all
FLIPPED = 8  # 1-based position of the copy labeled with the other class
FLIP = {"Positive": "Negative", "Negative": "Positive"}
# the Data Manager filter a reviewer sets: "Prediction model versions" contains "suspect-labels"
SUSPECT_FILTER = {"conjunction": "and", "items": [{
    "filter": "filter:tasks:predictions_model_versions", "operator": "contains", "type": "List",
    "value": [SUSPECT_VERSION],
}]}


@pytest.fixture(scope="module")
def stack(label_studio, redis_server, tiny_bert, tmp_path_factory):
    """The fast path on, as in test_fast_path (no basic auth: LS's automatic webhook carries none),
    with the unit test's settings: no cold start, no audits, small top K."""
    root = tmp_path_factory.mktemp("suspects")
    env = stack_env(label_studio, redis_server, tiny_bert, root, FAST_PATH="on", FAST_TOP_K="8",
                    FAST_COLD_START="0", AUDIT_SHARE="0", TRAIN_EVERY_N="0", BASIC_AUTH_USER="",
                    BASIC_AUTH_PASS="", TORCH_THREADS="1")
    with BackendProcesses(env, root, startup_timeout=90) as processes:
        yield Stack(processes.url, env, processes)


def choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]



def data_manager_ids(label_studio, pid: int, params: dict[str, Any]) -> list[int]:
    """Task ids ``GET /api/tasks`` answers for a Data Manager query (one page holds them all)."""
    r = requests.get(f"{label_studio.url}/api/tasks", params={"project": pid, "page_size": 1000, **params},
                     headers={"Authorization": f"Token {label_studio.token}"}, timeout=60)
    assert r.status_code == 200, r.text
    return sorted(int(t["id"]) for t in r.json()["tasks"])


def test_a_flipped_label_is_a_suspect_the_data_manager_filters_on(stack, ls, label_studio):
    """Two texts (one per class), each repeated: one copy carries the other class. After the fast
    update and its CV job, that copy holds a ``suspect-labels`` prediction of its true class in LS,
    and the Data Manager filter on it selects that task alone."""
    some = [(ex.text, SENTIMENT[ex.labels[0]]) for ex in toy_classification(20, seed=6)]
    distinct = [next(e for e in some if e[1] == label) for label in ("Positive", "Negative")]
    data = [distinct[i % 2] for i in range(POOL)]
    pid = ls.create_project(f"suspects-{secrets.token_hex(3)}", CLASSIFICATION_XML)["id"]
    ids = ls.import_tasks(pid, [{"text": text} for text, _ in data])
    assert len(ids) == POOL
    flipped = ids[FLIPPED - 1]
    truth = data[FLIPPED - 1][1]
    for i, (task_id, (_, label)) in enumerate(zip(ids[:LABELED], data[:LABELED], strict=True)):
        ls.create_annotation(task_id, choice(FLIP[label] if i + 1 == FLIPPED else label))
    ls.connect_ml_backend(pid, stack.url, "feasible-al")
    ls.set_sampling(pid, UNCERTAINTY_SAMPLING)
    t0 = time.perf_counter()
    ls.create_annotation(ids[LABELED], choice(data[LABELED][1]))  # LS's webhook: the fast update

    # the fast update publishes, then its CV job (queue "scoring") lists the suspects and writes them to LS
    record = wait_for(lambda: (s := stack.get(f"/projects/{pid}").json().get("suspects")) and s.get("labeled")
                      == LABELED + 1 and s, 240, "the suspects of the CV job on all 41 labels", stack)
    seconds = time.perf_counter() - t0
    assert "note" not in record, record  # a note says LS refused the write
    flagged = {s["task"]: s for s in record["suspects"]}
    assert flagged.get(flipped, {}).get("given") == FLIP[truth] and flagged[flipped]["predicted"] == truth, record
    assert set(flagged) == {flipped}, "no consistently labeled copy is flagged"

    # what LS holds: one suspect prediction, on the flipped task, with the label the model suggests
    held = [(int(task["id"]), p) for task in ls.iter_tasks(pid, only_labeled=None, fields="all")
            for p in task.get("predictions", []) if p.get("model_version") == SUSPECT_VERSION]
    assert [task_id for task_id, _ in held] == [flipped], held
    prediction = held[0][1]
    assert prediction["result"][0]["value"]["choices"] == [truth]
    assert prediction["score"] == pytest.approx(flagged[flipped]["confidence"], abs=1e-3)
    assert ls.model_versions(pid).get(SUSPECT_VERSION) == 1

    # the Data Manager: the filter its UI sends inline, and the same filter saved in a tab (view)
    assert data_manager_ids(label_studio, pid, {"query": json.dumps({"filters": SUSPECT_FILTER})}) == [flipped]
    headers = {"Authorization": f"Token {label_studio.token}"}
    r = requests.post(f"{label_studio.url}/api/dm/views", headers=headers, timeout=30,
                      json={"project": pid, "data": {"title": "Suspect labels", "filters": SUSPECT_FILTER}})
    assert r.status_code == 201, r.text
    assert data_manager_ids(label_studio, pid, {"view": r.json()["id"]}) == [flipped]
    everything = data_manager_ids(label_studio, pid, {})
    assert len(everything) == POOL and flipped in everything

    # annotators keep seeing the fast version: the suspects are not the project's model_version
    project_version = ls.get_project(pid)["model_version"]
    state = stack.get(f"/projects/{pid}").json()
    assert project_version != SUSPECT_VERSION and project_version == state["version"], (project_version, state)
    assert project_version.startswith("fast-")
    print(f"\nannotation -> suspects written to LS in {seconds:.1f} s; flagged task {flipped} "
          f"({record['suspects'][0]['given']} -> {truth}, confidence {record['suspects'][0]['confidence']})")
    ls.delete_project(pid)
