"""A table of malformed inputs over every endpoint of a real gunicorn + Redis: each gets the exact
4xx status and JSON error code (never a 5xx, never an HTML page), and the server keeps working."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.faults.conftest import MAX_REQUEST_BYTES, PROJECT
from tests.helpers.backend import CLASSIFICATION_XML

BIG = "9" * 5000
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _setup(project: Any, schema: Any = CLASSIFICATION_XML) -> dict:
    return {"project": project, "schema": schema}


def _predict(tasks: Any, project: Any = PROJECT, **extra: Any) -> dict:
    return {"tasks": tasks, "project": project, **extra}


def _hook(action: Any, project: Any = PROJECT, **extra: Any) -> dict:
    return {"action": action, "project": {"id": project}, **extra}


def _chunks(total: int, piece: int = 1 << 16):
    yield b'{"tasks": [], "project": 7, "pad": "'
    for _ in range(total // piece):
        yield b"x" * piece
    yield b'"}'


BAD_REQUEST, NOT_FOUND = (400, "bad_request"), (404, "not_found")
CASES = [
    # --- /setup: ids and fields
    Case("setup superscript id", "POST", "/setup", *BAD_REQUEST, json=_setup("²")),
    Case("setup 5000-digit id", "POST", "/setup", *BAD_REQUEST, json=_setup(BIG)),
    Case("setup 10**30 id", "POST", "/setup", *BAD_REQUEST, json=_setup(10**30)),
    Case("setup negative id", "POST", "/setup", *BAD_REQUEST, json=_setup(-1)),
    Case("setup boolean id", "POST", "/setup", *BAD_REQUEST, json=_setup(True)),
    Case("setup float id", "POST", "/setup", *BAD_REQUEST, json=_setup(1.5)),
    Case("setup arabic-indic digits", "POST", "/setup", *BAD_REQUEST, json=_setup("٣")),
    Case("setup no schema", "POST", "/setup", *BAD_REQUEST, json={"project": "7.1"}),
    Case("setup schema not a string", "POST", "/setup", *BAD_REQUEST, json=_setup("7.1", 5)),
    Case("setup broken XML", "POST", "/setup", 422, "invalid_label_config", json=_setup("7.1", "<View><Text")),
    # --- /predict: ids, tasks, fields
    Case("predict superscript project", "POST", "/predict", *BAD_REQUEST, json=_predict([], "²")),
    Case("predict 5000-digit project", "POST", "/predict", *BAD_REQUEST, json=_predict([], BIG)),
    Case("predict 10**30 project", "POST", "/predict", *BAD_REQUEST, json=_predict([], 10**30)),
    Case("predict superscript task id", "POST", "/predict", *BAD_REQUEST, json=_predict([{"id": "²", "data": {}}])),
    Case("predict 5000-digit task id", "POST", "/predict", *BAD_REQUEST, json=_predict([{"id": BIG, "data": {}}])),
    Case("predict 10**30 task id", "POST", "/predict", *BAD_REQUEST, json=_predict([{"id": 10**30, "data": {}}])),
    Case("predict task is a number", "POST", "/predict", *BAD_REQUEST, json=_predict([5])),
    Case("predict task is a string", "POST", "/predict", *BAD_REQUEST, json=_predict(["7"])),
    Case("predict tasks is an object", "POST", "/predict", *BAD_REQUEST, json=_predict({})),
    Case("predict tasks missing", "POST", "/predict", *BAD_REQUEST, json={"project": PROJECT}),
    Case("predict label_config not text", "POST", "/predict", *BAD_REQUEST, json=_predict([], label_config=5)),
    Case("predict unknown project", "POST", "/predict", 404, "unknown_project", json=_predict([], 99)),
    # --- /webhook
    Case("webhook no action", "POST", "/webhook", *BAD_REQUEST, json={"project": {"id": PROJECT}}),
    Case("webhook action not text", "POST", "/webhook", *BAD_REQUEST, json=_hook(5)),
    Case("webhook superscript project", "POST", "/webhook", *BAD_REQUEST, json=_hook("START_TRAINING", "²")),
    Case("webhook 5000-digit project", "POST", "/webhook", *BAD_REQUEST, json=_hook("PROJECT_UPDATED", BIG)),
    Case("webhook 10**30 project", "POST", "/webhook", *BAD_REQUEST, json=_hook("PROJECT_UPDATED", 10**30)),
    Case("webhook tasks [5]", "POST", "/webhook", *BAD_REQUEST, json=_hook("TASKS_CREATED", tasks=[5])),
    Case("webhook tasks ['7']", "POST", "/webhook", *BAD_REQUEST, json=_hook("TASKS_CREATED", tasks=["7"])),
    Case("webhook task id superscript", "POST", "/webhook", *BAD_REQUEST,
         json=_hook("TASKS_CREATED", tasks=[{"id": "²", "data": {"text": "x"}}])),
    Case("webhook deleted task null", "POST", "/webhook", *BAD_REQUEST, json=_hook("TASKS_DELETED", tasks=[None])),
    Case("webhook annotation task text", "POST", "/webhook", *BAD_REQUEST,
         json=_hook("ANNOTATION_CREATED", task="x", annotation={"id": 1})),
    Case("webhook annotations [5]", "POST", "/webhook", *BAD_REQUEST,
         json=_hook("ANNOTATIONS_CREATED", annotation=[5])),
    Case("webhook annotation task 10**30", "POST", "/webhook", *BAD_REQUEST,
         json=_hook("ANNOTATION_UPDATED", annotation={"id": 1, "task": 10**30})),
    Case("webhook deleted annotations [1]", "POST", "/webhook", *BAD_REQUEST,
         json=_hook("ANNOTATIONS_DELETED", annotations=[1])),
    Case("webhook unknown project", "POST", "/webhook", 404, "unknown_project", json=_hook("START_TRAINING", 99)),
    # --- /versions, /projects/<id>
    Case("versions superscript", "GET", "/versions?project=%C2%B2", *BAD_REQUEST),
    Case("versions 5000 digits", "GET", f"/versions?project={BIG}", *BAD_REQUEST),
    Case("versions 10**30", "GET", f"/versions?project={10**30}", *BAD_REQUEST),
    Case("versions letters", "GET", "/versions?project=abc", *BAD_REQUEST),
    Case("versions unknown", "GET", "/versions?project=99", 404, "unknown_project"),
    Case("projects superscript", "GET", "/projects/%C2%B2", *BAD_REQUEST),
    Case("projects 5000 digits", "GET", f"/projects/{BIG}", *BAD_REQUEST),
    Case("projects negative", "GET", "/projects/-1", *BAD_REQUEST),
    Case("projects unknown", "GET", "/projects/99", 404, "unknown_project"),
    # --- /jobs/<id>, successor job routes
    Case("jobs NUL", "GET", "/jobs/%00", 404, "unknown_job"),
    Case("jobs star", "GET", "/jobs/*", 404, "unknown_job"),
    Case("jobs double-encoded traversal", "GET", "/jobs/%252e%252e%252f%252e%252e%252fetc", 404, "unknown_job"),
    Case("jobs 6000 chars", "GET", "/jobs/" + "a" * 6000, 404, "unknown_job"),
    Case("jobs unknown", "GET", "/jobs/not-a-job", 404, "unknown_job"),
    Case("successor download unknown", "GET", "/successor/x/download", 404, "unknown_job"),
    Case("successor cancel unknown", "POST", "/successor/%2A/cancel", 404, "unknown_job"),
    # --- /successor options
    Case("successor epochs 10**9", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "epochs": 10**9}),
    Case("successor teacher /etc", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "teacher": "/etc"}),
    Case("successor hub model not allowed", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "successor": "gpt2"}),
    Case("successor batch size 0", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "batch_size": 0}),
    Case("successor batch size huge", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "batch_size": 10**6}),
    Case("successor lr text", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "learning_rate": "x"}),
    Case("successor tracin huge", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "tracin_checkpoints": 10**6}),
    Case("successor nested epochs huge", "POST", "/successor", 400, "bad_options",
         json={"project": PROJECT, "teacher_training": {"epochs": 10**9}}),
    Case("successor unknown option", "POST", "/successor", 400, "bad_options", json={"project": PROJECT, "epoch": 1}),
    Case("successor unknown project", "POST", "/successor", 404, "unknown_project", json={"project": 99}),
    Case("successor superscript project", "POST", "/successor", *BAD_REQUEST, json={"project": "²"}),
    # --- bodies and JSON
    Case("broken JSON", "POST", "/predict", 400, "malformed_json", data=b"{oops", headers=JSON),
    Case("empty body", "POST", "/webhook", 400, "empty_body", data=b"", headers=JSON),
    Case("JSON array body", "POST", "/setup", *BAD_REQUEST, data=b"[1, 2]", headers=JSON),
    Case("5000-digit JSON number", "POST", "/predict", 400, "malformed_json",
         data=b'{"tasks": [], "project": ' + BIG.encode() + b"}", headers=JSON),
    Case("NaN in JSON", "POST", "/webhook", 400, "malformed_json", data=b'{"action": NaN}', headers=JSON),
    Case("100k-deep nesting", "POST", "/predict", 400, "malformed_json", data=b"[" * 100_000, headers=JSON),
    Case("not UTF-8", "POST", "/predict", 400, "malformed_json", data=b'{"a": "\xff\xfe"}', headers=JSON),
    Case("text/plain body", "POST", "/predict", 415, "unsupported_media_type",
         data=json.dumps(_predict([])).encode(), headers={"Content-Type": "text/plain"}),
    Case("form body", "POST", "/webhook", 415, "unsupported_media_type", data=b"action=START_TRAINING",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Case("oversize body", "POST", "/predict", 413, "request_too_large",
         data=b'{"pad": "' + b"x" * (MAX_REQUEST_BYTES + 10) + b'"}', headers=JSON),
    Case("oversize chunked body", "POST", "/predict", 413, "request_too_large",
         data=_chunks(2 * MAX_REQUEST_BYTES), headers=JSON),  # type: ignore[arg-type]
    Case("too many JSON values", "POST", "/predict", 413, "too_many_json_values",
         data=b'{"tasks": [' + b"[]," * 200_000 + b'[]]}', headers=JSON),
    # --- routes and methods
    Case("unknown route", "GET", "/nope", *NOT_FOUND),
    Case("unknown nested route", "POST", "/predict/extra", *NOT_FOUND, json={}),
    Case("GET /predict", "GET", "/predict", 405, "method_not_allowed"),
    Case("GET /webhook", "GET", "/webhook", 405, "method_not_allowed"),
    Case("DELETE /health", "DELETE", "/health", 405, "method_not_allowed"),
    Case("PUT /setup", "PUT", "/setup", 405, "method_not_allowed", json={}),
    Case("POST /metrics", "POST", "/metrics", 405, "method_not_allowed", json={}),
    Case("POST /versions", "POST", "/versions", 405, "method_not_allowed", json={}),
    Case("GET /successor", "GET", "/successor", 405, "method_not_allowed"),
    Case("PATCH /projects/7", "PATCH", f"/projects/{PROJECT}", 405, "method_not_allowed", json={}),
]


def _send(stack, case: Case) -> requests.Response:
    return requests.request(case.method, stack.url + case.path, json=case.json, data=case.data,
                            headers=case.headers, timeout=30)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_gets_its_4xx_json_and_the_server_still_works(stack, case):
    r = _send(stack, case)
    assert r.headers.get("Content-Type", "").startswith("application/json"), (r.status_code, r.text[:300])
    body = r.json()
    assert (r.status_code, body["error"]) == (case.status, case.code), body
    assert body["status"] == case.status and body["message"]
    ok = requests.post(f"{stack.url}/predict", json=_predict([{"id": 1, "data": {"text": "fine"}}]), timeout=10)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1


def test_the_table_covers_every_endpoint():
    paths = {c.path.split("?")[0].rstrip("/").split("/")[1] for c in CASES}
    assert {"setup", "predict", "webhook", "versions", "projects", "jobs", "successor", "health", "metrics",
            "nope"} <= paths
    assert len(CASES) >= 60


def test_gunicorn_own_errors_are_json(stack):
    """Past gunicorn's request-line limit (8190) and with a broken Content-Length gunicorn answers
    itself, as JSON (backend.service.http_worker)."""
    answer = stack.raw(b"GET /jobs/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414") and json.loads(body)["error"] == "uri_too_long", answer[:300]
    answer = stack.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["error"] == "bad_request", answer[:300]


def test_lone_surrogates_are_replaced_not_a_crash(stack):
    """A task text holding "\\ud800" (valid JSON, invalid UTF-8) is stored with U+FFFD."""
    body = b'{"action": "TASKS_CREATED", "project": {"id": 7}, "tasks": [{"id": 5, "data": {"text": "a\\ud800b"}}]}'
    r = requests.post(f"{stack.url}/webhook", data=body, headers=JSON, timeout=10)
    assert r.status_code == 200 and r.json()["pool_added"] == 1, r.text
    predict = b'{"project": 7, "tasks": [{"id": 5, "data": {"text": "\\udfff alone"}}]}'
    r = requests.post(f"{stack.url}/predict", data=predict, headers=JSON, timeout=10)
    assert r.status_code == 200 and len(r.json()["results"]) == 1, r.text
