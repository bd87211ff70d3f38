"""The real-servers harness: private Redis instances (tests/helpers/servers.py, redis_server fixture)."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from tests.helpers.servers import RedisServer, free_port, redis_server_binary, wait_http

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
