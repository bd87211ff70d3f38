"""Peak RSS of the gunicorn worker for big /predict bodies (not a test; run by hand):

    HF_HUB_OFFLINE=1 python3 -m tests.faults.measure_predict_rss [MAX_REQUEST_BYTES]

Starts Redis + `feasible-al serve` on free ports (untrained project: measures the request path,
not the model), posts 10k and 100k Label Studio-shaped tasks (~1.5 KB each) and a 100 MB
``[[],[],...]`` body, and prints status, body size, seconds and the worker's VmHWM after each.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import requests

from backend.service.payloads import max_json_values
from backend.service.settings import Settings
from tests.faults.conftest import stack_env
from tests.helpers.backend import CLASSIFICATION_XML
from tests.helpers.servers import BackendProcesses, RedisServer

WORDS = "the plot is thin but the acting carries it and the score is lovely to hear".split()


def ls_task(i: int) -> dict:
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(110))
    return {"id": i, "data": {"text": text}, "meta": {}, "created_at": "2025-01-01T00:00:00.000000Z",
            "updated_at": "2025-01-01T00:00:00.000000Z", "is_labeled": False, "overlap": 1, "inner_id": i,
            "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 7, "updated_by": None,
            "file_upload": 12, "comment_authors": [], "annotations": [], "predictions": [], "drafts": [],
            "annotators": [], "annotations_results": "", "predictions_results": "", "predictions_score": None}


def worker_pids(master: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"\nPPid:\t{master}\n" in text and "gunicorn" in (status.parent / "cmdline").read_text(errors="replace"):
            out.append(int(status.parent.name))
    return out


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    extra = {"MAX_REQUEST_BYTES": sys.argv[1]} if len(sys.argv) > 1 else {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis_server:
        env = stack_env(redis_server.url, Path(tmp), **extra)
        if not extra:
            env.pop("MAX_REQUEST_BYTES")
        env["BODY_READ_TIMEOUT"] = "10"
        with BackendProcesses(env, Path(tmp) / "logs") as backend:
            requests.post(f"{backend.url}/setup", json={"project": "7.1", "schema": CLASSIFICATION_XML}, timeout=30)
            master = backend._procs[0].pid  # noqa: SLF001 - `feasible-al serve` execs gunicorn in place
            (worker,) = worker_pids(master)
            print(f"worker {worker}: RSS {vm(worker, 'VmRSS'):.0f} MB at rest")
            bodies = [(f"{n} tasks", json.dumps({"tasks": [ls_task(i) for i in range(n)], "project": 7}).encode())
                      for n in (10_000, 100_000)]
            bodies.append(("100 MB [[],...]", b'{"tasks": [' + b"[]," * (100_000_000 // 3) + b'[]], "project": 7}'))
            lists = max_json_values(Settings.from_env(env).max_request_bytes) // 2 - 10  # a '[' and a ',' each
            bodies.append(("worst accepted: [[],...] at the value cap", b'{"t": [' + b"[]," * lists + b"[]]}"))
            for name, body in bodies:
                started = time.monotonic()
                r = requests.post(f"{backend.url}/predict", data=body, timeout=300,
                                  headers={"Content-Type": "application/json"})
                print(f"{name}: {len(body) / 1e6:.1f} MB body -> {r.status_code} {r.text[:60]!r} in "
                      f"{time.monotonic() - started:.1f} s; worker VmHWM {vm(worker, 'VmHWM'):.0f} MB, "
                      f"VmRSS {vm(worker, 'VmRSS'):.0f} MB")


if __name__ == "__main__":
    main()
