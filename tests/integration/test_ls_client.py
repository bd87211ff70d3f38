"""backend.service.ls_client (and the ls_admin calls built on it) against a real Label Studio 1.23.2
(see tests/integration/conftest.py)."""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from backend.service.ls_client import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioNotFoundError,
    LabelStudioUnavailableError,
)
from tests.helpers.ls_admin import UNCERTAINTY_SAMPLING, LabelStudioTestClient
from tests.helpers.servers import free_port

pytestmark = pytest.mark.integration

LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices></View>'
)


def choice(label: str) -> list[dict]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def _next_via_http(label_studio, project_id: int) -> dict:
    """/next straight over HTTP (what the labeling UI calls), independent of the client."""
    response = requests.get(
        f"{label_studio.url}/api/projects/{project_id}/next",
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def project(ls_client):
    """A classification project with 30 tasks, 5 of them annotated through the API."""
    proj = ls_client.create_project(f"ls-client-{secrets.token_hex(3)}", LABEL_CONFIG)
    ids = ls_client.import_tasks(proj["id"], [{"text": f"review number {i}"} for i in range(30)])
    assert len(ids) == 30
    labeled = {ids[1]: "pos", ids[4]: "neg", ids[9]: "pos", ids[17]: "neg", ids[28]: "pos"}
    for task_id, label in labeled.items():
        ls_client.create_annotation(task_id, choice(label))
    yield {"id": proj["id"], "task_ids": ids, "labeled": labeled}
    ls_client.delete_project(proj["id"])


def test_get_project(ls_client, project):
    info = ls_client.get_project(project["id"])
    assert info["id"] == project["id"]
    assert info["title"].startswith("ls-client-")
    assert "<Choices" in info["label_config"]
    assert isinstance(info["model_version"], str)


def test_labeled_and_unlabeled_split(ls_client, project):
    pid, labeled = project["id"], project["labeled"]

    tasks = ls_client.labeled_tasks(pid)
    assert sorted(t["id"] for t in tasks) == sorted(labeled)
    for task in tasks:
        assert task["data"]["text"].startswith("review number")
        assert len(task["annotations"]) == 1
        annotation = task["annotations"][0]
        assert annotation["was_cancelled"] is False
        assert annotation["result"][0]["value"]["choices"] == [labeled[task["id"]]]

    unlabeled = ls_client.unlabeled_task_ids(pid)
    assert unlabeled == sorted(set(project["task_ids"]) - set(labeled))
    assert len(unlabeled) == 25

    # Paging: small pages give the same ids, in order, without duplicates.
    assert ls_client.unlabeled_task_ids(pid, page_size=7) == unlabeled
    everything = [t["id"] for t in ls_client.iter_tasks(pid, only_labeled=None, fields="task_only", page_size=4)]
    assert everything == sorted(project["task_ids"])
    pool = ls_client.unlabeled_tasks(pid)
    assert [t["id"] for t in pool] == unlabeled and set(pool[0]) == {"id", "data"}

    # A skipped (cancelled) annotation does not make a task labeled.
    skipped = unlabeled[3]
    ls_client.create_annotation(skipped, [], was_cancelled=True)
    assert skipped in ls_client.unlabeled_task_ids(pid)
    assert skipped not in {t["id"] for t in ls_client.labeled_tasks(pid)}


def test_predictions_drive_uncertainty_sampling(ls_client, label_studio, project):
    pid = project["id"]
    unlabeled = ls_client.unlabeled_task_ids(pid)
    rng = random.Random(7)
    scores = [round(0.05 + 0.9 * i / len(unlabeled), 4) for i in range(len(unlabeled))]
    rng.shuffle(scores)
    by_task = dict(zip(unlabeled, scores))
    lowest = min(by_task, key=by_task.get)
    assert lowest not in (unlabeled[0], unlabeled[-1])  # not something id order would also give

    created = ls_client.import_predictions(
        pid,
        [{"task": t, "result": choice("pos"), "score": s, "model_version": "v1"} for t, s in by_task.items()],
        batch_size=10,
    )
    assert created == 25
    # A stale version with an even lower score elsewhere must not count.
    decoy = max(by_task, key=by_task.get)
    ls_client.import_predictions(pid, [{"task": decoy, "result": choice("neg"), "score": 0.0, "model_version": "v0"}])

    ls_client.set_model_version(pid, "v1")
    ls_client.set_sampling(pid, UNCERTAINTY_SAMPLING)
    info = ls_client.get_project(pid)
    assert info["model_version"] == "v1"
    assert info["sampling"] == UNCERTAINTY_SAMPLING

    nxt = ls_client.next_task(pid)
    assert nxt is not None and nxt["id"] == lowest
    assert _next_via_http(label_studio, pid)["id"] == lowest

    # Predictions are attached to the tasks (fields="all").
    task = next(t for t in ls_client.iter_tasks(pid, only_labeled=False) if t["id"] == lowest)
    assert [(p["model_version"], p["score"]) for p in task["predictions"]] == [("v1", by_task[lowest])]

    # A new version re-orders: only predictions of the project's model_version count.
    ls_client.import_predictions(
        pid, [{"task": t, "result": choice("pos"), "score": 1.0 - s, "model_version": "v2"} for t, s in by_task.items()]
    )
    ls_client.set_model_version(pid, "v2")
    by_score = ls_client.iter_tasks(
        pid, only_labeled=False, fields="task_only", include=("id", "predictions_score"),
        ordering="tasks:predictions_score",
    )
    first = next(by_score)
    assert first["id"] == decoy and first["predictions_score"] == pytest.approx(1.0 - by_task[decoy])
    # /next keeps giving a user the task they hold a lock on (LS 1.23: the lock from the first
    # /next lasts 3x the average lead time, 1 h by default), whatever the new order ...
    assert ls_client.next_task(pid)["id"] == lowest
    # ... and once it is annotated, the next one follows the new version's scores.
    ls_client.create_annotation(lowest, choice("neg"))
    assert ls_client.next_task(pid)["id"] == decoy


def test_import_predictions_rejects_bad_input(ls_client, project):
    with pytest.raises(ValueError):
        ls_client.import_predictions(project["id"], [{"result": []}])
    with pytest.raises(ValueError):
        nan_score = {"task": project["task_ids"][0], "result": [], "score": float("nan")}
        ls_client.import_predictions(project["id"], [nan_score])
    with pytest.raises(LabelStudioError) as info:
        ls_client.import_predictions(project["id"], [{"task": 10**9, "result": choice("pos"), "score": 0.5}])
    assert info.value.status_code == 400


def test_not_found(ls_client):
    with pytest.raises(LabelStudioNotFoundError):
        ls_client.get_project(10**8)
    with pytest.raises(LabelStudioNotFoundError):
        ls_client.unlabeled_task_ids(10**8)


def test_label_studio_down_is_unavailable():
    client = LabelStudioTestClient(f"http://127.0.0.1:{free_port()}", "some-token", timeout=2, max_retries=0)
    for call in (lambda: client.get_project(1), lambda: client.unlabeled_task_ids(1),
                 lambda: client.import_predictions(1, [{"task": 1, "result": [], "score": 0.1}])):
        with pytest.raises(LabelStudioUnavailableError) as info:
            call()
        assert "some-token" not in str(info.value)


def test_wrong_key_is_auth_error_without_the_key(label_studio):
    key = "wrong-" + secrets.token_hex(16)
    client = LabelStudioTestClient(label_studio.url, key)
    calls = {
        "get_project": lambda: client.get_project(1),
        "unlabeled_task_ids": lambda: client.unlabeled_task_ids(1),
        "import_predictions": lambda: client.import_predictions(1, [{"task": 1, "result": [], "score": 0.1}]),
        "set_model_version": lambda: client.set_model_version(1, "v1"),
    }
    for name, call in calls.items():
        with pytest.raises(LabelStudioAuthError) as info:
            call()
        exc = info.value
        assert exc.status_code == 401, name
        assert key not in str(exc) and key not in repr(exc), name
        assert exc.__cause__ is None or key not in str(exc.__cause__), name
    assert key not in repr(client)


class _StubBackend:
    """The smallest ML backend LS accepts: /health, /setup, /predict, /webhook; records requests."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, payload):
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                stub.requests.append((self.path, {}))
                self._reply({"status": "UP", "model_class": "Stub"} if self.path.startswith("/health") else {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append((self.path, data))
                if self.path.startswith("/setup"):
                    self._reply({"model_version": "stub-v0"})
                elif self.path.startswith("/predict"):
                    self._reply({"results": [{"result": [], "score": 0.5, "model_version": "stub-v0"}
                                             for _ in data.get("tasks", [])]})
                else:
                    self._reply({"status": "ok"})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_connect_ml_backend_and_start_training(ls_client, project):
    pid = project["id"]
    with _StubBackend() as stub:
        backend = ls_client.connect_ml_backend(pid, stub.url, "stub-backend")
        assert backend.id and backend.url == stub.url
        assert [b.id for b in ls_client.list_ml_backends(pid)] == [backend.id]
        paths = [p for p, _ in stub.requests]
        assert any(p.startswith("/setup") for p in paths), paths

        ls_client.start_training(backend.id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            hooks = [d for p, d in stub.requests if p.startswith("/webhook")]
            if any(d.get("action") == "START_TRAINING" for d in hooks):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no START_TRAINING webhook; stub saw {[p for p, _ in stub.requests]}")
        assert not any(p.startswith("/train") for p, _ in stub.requests)
