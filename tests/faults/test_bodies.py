"""Request bodies against a real gunicorn: limits hold for every transfer encoding and stalled or
dripping uploads are dropped (BODY_READ_TIMEOUT=1 s here), so they cannot hold the request threads."""
from __future__ import annotations

import json
import socket
import threading
import time

import requests

from backend.harness.processes import HOST
from backend.service.limits import TOTAL_READ_FACTOR
from tests.faults.conftest import BODY_READ_TIMEOUT, MAX_REQUEST_BYTES

VALID = b'{"tasks": [], "project": 7}'


def _status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _headers(length: int | None = None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{size}\r\n\r\n".encode()


def test_chunked_body_over_the_limit_is_413_even_when_its_start_is_a_valid_request(stack):
    def body():
        yield VALID
        for _ in range(2 * MAX_REQUEST_BYTES // 65536):
            yield b" " * 65536
    r = requests.post(f"{stack.url}/predict", data=body(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"] == "request_too_large"
    small = requests.post(f"{stack.url}/predict", data=iter([VALID]), headers={"Content-Type": "application/json"},
                          timeout=10)
    assert small.status_code == 200 and small.json()["results"] == []


def test_a_huge_declared_body_is_refused_without_reading_it(stack):
    status, body = _status_and_json(stack.raw(_headers(300 * 1024 * 1024) + b"{"))
    assert status == 413 and body["error"] == "request_too_large"


def test_a_stalled_upload_is_dropped_after_the_read_timeout(stack):
    started = time.monotonic()
    status, body = _status_and_json(stack.raw(_headers(500_000) + b'{"tasks": [', timeout=30))
    took = time.monotonic() - started
    assert status == 408 and body["error"] == "body_timeout"
    assert BODY_READ_TIMEOUT * 0.9 < took < BODY_READ_TIMEOUT + 3, took


def test_stalled_clients_do_not_starve_the_request_threads(stack):
    """Nine clients declare a body and stall (gunicorn has 4 threads here): /health still answers."""
    sockets = []
    try:
        for _ in range(9):
            sock = socket.create_connection((HOST, stack.port), timeout=30)
            sock.sendall(_headers(MAX_REQUEST_BYTES // 2) + b"{")
            sockets.append(sock)
        started = time.monotonic()
        r = requests.get(f"{stack.url}/health", timeout=30)
        assert r.status_code == 200 and time.monotonic() - started < 4 * BODY_READ_TIMEOUT + 3
    finally:
        for sock in sockets:
            sock.close()


def test_a_dripping_upload_is_dropped_at_the_total_deadline(stack):
    """One byte every half second never trips the per-read timeout; the whole-body deadline
    (TOTAL_READ_FACTOR x BODY_READ_TIMEOUT) still ends it."""
    answer: list[bytes] = []
    stop = threading.Event()
    sock = socket.create_connection((HOST, stack.port), timeout=60)
    started = time.monotonic()

    def drip() -> None:
        try:
            while not stop.is_set():
                sock.sendall(b" ")
                time.sleep(BODY_READ_TIMEOUT / 2)
        except OSError:
            pass

    try:
        sock.sendall(_headers(100_000))
        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        answer.append(sock.recv(65536))
    finally:
        stop.set()
        sock.close()
    took = time.monotonic() - started
    assert answer[0].split(b" ", 2)[1] in (b"408", b"400"), answer[0][:200]
    assert took < TOTAL_READ_FACTOR * BODY_READ_TIMEOUT + 5, took
