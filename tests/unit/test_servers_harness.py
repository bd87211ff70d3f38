"""The real-servers harness: private Redis instances (tests/helpers/servers.py, redis_server fixture),
and the backend's processes started as the README's quick start deploys them."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import redis

from backend.harness.processes import DEPLOYMENTS, describe_workers, stopped_on_sigterm
from tests.helpers.servers import (
    README_WORKERS,
    BackendProcesses,
    RedisServer,
    free_port,
    redis_server_binary,
    wait_http,
)

needs_redis = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server not installed")


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_http_times_out_on_a_closed_port():
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_http(f"http://127.0.0.1:{free_port()}/health", timeout=1.0, interval=0.2)
    assert time.monotonic() - started < 5


def test_wait_http_gives_up_when_the_process_died():
    with pytest.raises(RuntimeError):
        wait_http(f"http://127.0.0.1:{free_port()}/health", timeout=30, interval=0.1, alive=lambda: False)


@needs_redis
def test_redis_fixture_is_a_private_working_redis(redis_server, tmp_path):
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        client.set("harness:key", "value")
        assert client.get("harness:key") == b"value"
        config = client.config_get("*")
        assert config["port"] == str(redis_server.port)
        assert config["bind"] == "127.0.0.1"
        assert config["save"] == ""
        assert config["appendonly"] == "no"
        assert config["dir"] == str(redis_server.dir.resolve())
    finally:
        client.delete("harness:key")
        client.close()


@needs_redis
def test_redis_url_fixture_starts_empty(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("left-behind", 1)  # the next test using redis_url must not see it
    finally:
        client.close()


@needs_redis
def test_redis_url_fixture_is_flushed_between_tests(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get("left-behind") is None
    finally:
        client.close()


@needs_redis
def test_two_servers_are_isolated():
    with RedisServer() as a, RedisServer() as b:
        assert a.port != b.port
        ra, rb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
        ra.set("only-in-a", 1)
        assert rb.get("only-in-a") is None
        ra.close()
        rb.close()


@needs_redis
def test_stop_and_restart():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
        client.set("k", "v")
        server.stop()
        assert not server.running
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        server.start()
        assert server.running
        assert client.ping()  # same URL works again
        assert client.get("k") is None  # nothing persisted
        port = server.port
        server.restart()
        assert server.port == port and client.ping()
        client.close()
    # closed: the process is gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_the_deployments_in_words():
    assert describe_workers(DEPLOYMENTS["readme"]) == "an RQ worker on every queue and one on the fast queue alone"
    assert describe_workers(DEPLOYMENTS["single"]) == "an RQ worker on every queue"


@needs_redis
def test_readme_deployment_starts_a_worker_on_every_queue_and_one_on_the_fast_queue(redis_url, tmp_path):
    """`feasible-al worker &` + `feasible-al worker --queues fast &`, as the README's quick start
    (and the demo, and bench-backend --workers readme) run them: RQ sees both, with those queues."""
    from rq import Worker

    env = {**os.environ, "REDIS_URL": redis_url, "KEY_PREFIX": "harness-workers", "MODEL_DIR": str(tmp_path / "m"),
           "TORCH_THREADS": "1", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": ""}
    client = redis.Redis.from_url(redis_url)
    try:
        with BackendProcesses(env, tmp_path / "logs", startup_timeout=120, workers=README_WORKERS) as backend:
            assert backend.describe().endswith("(gunicorn) and an RQ worker on every queue and one on the fast "
                                               "queue alone")
            assert [p.name for p in backend.log_paths] == ["gunicorn.log", "worker.log", "worker-fast.log"]
            deadline = time.monotonic() + 120
            queues: list[list[str]] = []
            while time.monotonic() < deadline:
                queues = sorted(sorted(w.queue_names()) for w in Worker.all(connection=client))
                if len(queues) == 2:
                    break
                time.sleep(0.5)
            every = sorted(f"harness-workers-{k}" for k in ("fast", "scoring", "training", "successor"))
            assert queues == sorted([every, ["harness-workers-fast"]]), backend.log_tail()
    finally:
        client.close()


@needs_redis
def test_a_sigterm_stops_what_the_block_started():
    """A benchmark killed with SIGTERM (a CI timeout, a `kill`) stops its servers on the way out."""
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        with stopped_on_sigterm(), RedisServer() as server:
            port = server.port
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives first
    assert signal.getsignal(signal.SIGTERM) is previous
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
