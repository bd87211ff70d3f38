"""A Redis that accepts connections but never answers (SIGSTOP): the request path answers 503
JSON within REDIS_REQUEST_TIMEOUT (0.5 s) per request, well under Label Studio's 1 s webhook
budget, and works again once Redis resumes (SIGCONT)."""
from __future__ import annotations

import os
import signal
import time

import requests

from tests.faults.conftest import PROJECT

CALLS = [
    ("GET", "/health", None),
    ("POST", "/predict", {"tasks": [{"id": 1, "data": {"text": "hello"}}], "project": PROJECT}),
    ("POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, "task": {"id": 1},
                          "annotation": {"id": 1, "task": 1}}),
    ("GET", f"/projects/{PROJECT}", None),
]


def test_frozen_redis_gives_503_in_under_a_second_and_recovers(stack):
    pid = stack.redis._proc.pid  # noqa: SLF001 - the test's own redis-server
    for method, path, body in CALLS:  # warm connections first
        assert requests.request(method, stack.url + path, json=body, timeout=10).status_code < 500
    os.kill(pid, signal.SIGSTOP)
    timings = {}
    try:
        for method, path, body in CALLS * 2:
            started = time.monotonic()
            r = requests.request(method, stack.url + path, json=body, timeout=10)
            took = time.monotonic() - started
            timings[path] = max(took, timings.get(path, 0.0))
            assert r.status_code == 503 and r.headers["Content-Type"].startswith("application/json"), r.text
            if path == "/health":
                assert r.json()["status"] == "DOWN" and "unreachable" in r.json()["error"]
            else:
                assert r.json()["error"] == "redis_unavailable", r.json()
            assert took < 1.5, (path, took)
    finally:
        os.kill(pid, signal.SIGCONT)
    print("seconds to 503 with Redis frozen:", {k: round(v, 3) for k, v in timings.items()})
    for method, path, body in CALLS:
        r = requests.request(method, stack.url + path, json=body, timeout=10)
        assert r.status_code < 500, (path, r.text)
