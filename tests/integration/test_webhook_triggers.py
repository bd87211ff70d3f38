"""Training triggers as Label Studio 1.23.2 really sends them, and LS writes that do not grow.

* Connecting the backend makes LS create the project webhook ``<backend url>/webhook`` for all
  actions by itself (``create_ml_webhook``); nobody adds one by hand here. Annotations created
  through LS's API reach the backend through it and retrain after TRAIN_EVERY_N of them.
* A user-added duplicate webhook to the same URL makes LS post every event twice; the backend
  counts each annotation event once (identity: action, annotation id, update time).
* After each published version the finisher deletes LS's predictions of the superseded versions
  in bulk, keeping the serving and the previous one: after 3 iterations LS holds at most 2
  versions and at most 2 x the pool.
"""
from __future__ import annotations

import secrets
import time

import pytest
import requests

from tests.helpers.backend import CLASSIFICATION_XML
from tests.helpers.ls_admin import LabelStudioTestClient
from tests.helpers.servers import BackendProcesses
from tests.integration.test_backend_e2e import (  # noqa: F401  (module fixture `ls`)
    Stack,
    classification_tasks,
    ls,
    stack_env,
    wait_for_iteration,
)

pytestmark = pytest.mark.integration

EVERY_N = 4
POOL = 30


@pytest.fixture(scope="module")
def stack(label_studio, redis_server, tiny_bert, tmp_path_factory):
    """The e2e stack, retraining after every EVERY_N annotation events, without basic auth: LS's
    automatic webhook carries no credentials (with BASIC_AUTH on it gets 401, see the README)."""
    root = tmp_path_factory.mktemp("webhook-triggers")
    env = stack_env(label_studio, redis_server, tiny_bert, root, TRAIN_EVERY_N=str(EVERY_N),
                    BASIC_AUTH_USER="", BASIC_AUTH_PASS="")
    with BackendProcesses(env, root, startup_timeout=90) as processes:
        yield Stack(processes.url, env, processes)


def ls_api(label_studio, method: str, path: str, **kw) -> requests.Response:
    r = requests.request(method, f"{label_studio.url}{path}", timeout=120,
                         headers={"Authorization": f"Token {label_studio.token}"}, **kw)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:300]}"
    return r


def pending(stack: Stack, pid: int) -> int:
    return stack.get(f"/projects/{pid}").json()["pending_annotations"]


def new_project(ls: LabelStudioTestClient, stack: Stack, n: int) -> tuple[int, list[int], list[list[dict]], int]:
    pid = ls.create_project(f"webhooks-{secrets.token_hex(3)}", CLASSIFICATION_XML)["id"]
    data, results = classification_tasks(n)
    ids = ls.import_tasks(pid, data)
    backend = ls.connect_ml_backend(pid, stack.url, "feasible-al")
    return pid, ids, results, backend.id


def test_automatic_webhook_triggers_training_and_duplicates_count_once(stack, ls, label_studio):
    pid, ids, results, _ = new_project(ls, stack, POOL)
    hooks = ls_api(label_studio, "GET", "/api/webhooks/", params={"project": pid}).json()
    assert [(h["url"], h["send_for_all_actions"], h["send_payload"]) for h in hooks] == \
        [(f"{stack.url}/webhook", True, True)], "LS creates the backend's webhook when connecting it"

    # EVERY_N - 1 annotations: counted, no training; the N-th queues one.
    for task_id, result in zip(ids[: EVERY_N - 1], results):
        ls.create_annotation(task_id, result)
    state = stack.get(f"/projects/{pid}").json()
    assert state["pending_annotations"] == EVERY_N - 1 and state["last_job"] is None
    ls.create_annotation(ids[EVERY_N - 1], results[EVERY_N - 1])
    assert stack.get(f"/projects/{pid}").json()["last_job"], "the N-th annotation queues a training"
    first = wait_for_iteration(stack, pid, 1)

    # A user adds the same URL again: LS now posts every event twice.
    ls_api(label_studio, "POST", "/api/webhooks/", json={"project": pid, "url": f"{stack.url}/webhook",
                                                          "send_payload": True, "send_for_all_actions": True})
    assert len(ls_api(label_studio, "GET", "/api/webhooks/", params={"project": pid}).json()) == 2
    base = pending(stack, pid)  # annotations that arrived while iteration 1 ran are already counted
    made = [ls.create_annotation(t, r) for t, r in zip(ids[EVERY_N : 2 * EVERY_N - 2], results[EVERY_N:])]
    assert pending(stack, pid) == base + len(made), "each annotation counted once, not per webhook"
    # an edit is a new event (counted once too)
    ls_api(label_studio, "PATCH", f"/api/annotations/{made[0]['id']}/", json={"result": results[EVERY_N]})
    assert pending(stack, pid) == base + len(made) + 1
    assert stack.get(f"/projects/{pid}").json()["last_job"] == first["last_job"], "no training before N"
    for task_id, result in zip(ids[2 * EVERY_N - 2 : 2 * EVERY_N], results[2 * EVERY_N - 2 :]):
        ls.create_annotation(task_id, result)
    second = wait_for_iteration(stack, pid, 2)
    assert second["last_job"] != first["last_job"] and second["iteration"] == 2
    ls.delete_project(pid)


def wait_pruned(stack: Stack, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stack.get(f"/jobs/{job_id}").json()
        if status.get("ls_pruned"):
            return status["ls_pruned"]
        time.sleep(0.3)
    pytest.fail(f"no ls_pruned in the status of {job_id}: {status}\n{stack.log_tail()}")


def test_superseded_versions_predictions_are_deleted(stack, ls, label_studio):
    """Annotate before connecting (no events), then three Start trainings."""
    pid = ls.create_project(f"prune-{secrets.token_hex(3)}", CLASSIFICATION_XML)["id"]
    data, results = classification_tasks(POOL + 8)
    ids = ls.import_tasks(pid, data)
    for task_id, result in zip(ids[:8], results):
        ls.create_annotation(task_id, result)
    backend = ls.connect_ml_backend(pid, stack.url, "feasible-al")
    versions, outcomes = [], []
    for iteration in (1, 2, 3):
        ls.start_training(backend.id)
        state = wait_for_iteration(stack, pid, iteration)
        versions.append(state["version"])
        outcomes.append(wait_pruned(stack, state["last_job"]))
    assert all("error" not in o for o in outcomes), outcomes
    assert outcomes[0]["deleted"] == outcomes[1]["deleted"] == {}  # nothing superseded yet
    assert outcomes[2]["deleted"] == {versions[0]: POOL}
    held = ls_api(label_studio, "GET", f"/api/projects/{pid}/model-versions/").json()
    ours = {v: n for v, n in held.items() if v in versions}
    assert set(ours) == set(versions[1:]) and sum(ours.values()) <= 2 * POOL, held
    assert ls.get_project(pid)["model_version"] == versions[2]
    print(f"\nLS predictions after 3 iterations: {held}; prune outcomes: {outcomes}")
    ls.delete_project(pid)
