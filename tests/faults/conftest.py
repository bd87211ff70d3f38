"""Fault-injection suite: a real gunicorn (`feasible-al serve`) and a real Redis on free
127.0.0.1 ports, one stack per test module (cases share it; each case is cheap)."""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from backend.harness.processes import HOST
from tests.helpers.backend import CLASSIFICATION_XML
from tests.helpers.servers import BackendProcesses, RedisServer, redis_server_binary

MAX_REQUEST_BYTES = 1 << 20
BODY_READ_TIMEOUT = 1.0
PROJECT = 7


@dataclass
class Stack:
    url: str
    port: int
    redis: RedisServer
    backend: BackendProcesses
    model_dir: Path

    def raw(self, payload: bytes, *, timeout: float = 10.0, read: bool = True) -> bytes:
        """Send bytes on a fresh connection; the whole answer (until the server closes)."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            sock.sendall(payload)
            if not read:
                return b""
            chunks = []
            while True:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
            return b"".join(chunks)


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def stack_env(redis_url: str, model_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "BASIC_AUTH_"))}
    env.update(REDIS_URL=redis_url, KEY_PREFIX=f"faults-{uuid.uuid4().hex[:6]}", MODEL_DIR=str(model_dir),
               ACQUISITION_MODEL="unused-model", MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
               BODY_READ_TIMEOUT=str(BODY_READ_TIMEOUT), THREADS="4", WORKERS="1", TORCH_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LOG_LEVEL="WARNING")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed: run scripts/ensure_redis.sh")
    tmp = tmp_path_factory.mktemp("faults")
    with RedisServer() as redis_server:
        model_dir = tmp / "models"
        model_dir.mkdir()
        with BackendProcesses(stack_env(redis_server.url, model_dir), tmp / "logs") as backend:
            s = Stack(backend.url, backend.port, redis_server, backend, model_dir)
            r = requests.post(f"{s.url}/setup", json={"project": f"{PROJECT}.1700000000",
                                                      "schema": CLASSIFICATION_XML}, timeout=10)
            assert r.status_code == 200, r.text
            yield s
