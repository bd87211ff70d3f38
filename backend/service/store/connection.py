"""Connecting to Redis, and the errors that mean it cannot be reached (kept apart from the keys so
the web process's error handlers can import them without the store)."""
from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.service.settings import Settings

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class StoreUnavailableError(RuntimeError):
    """Redis cannot be reached. Annotations are safe in Label Studio; retry or press Start training."""


def connect_redis(settings: Settings, *, decode: bool = True, timeout: float | None = None) -> redis.Redis:
    """A client for ``REDIS_URL``: text replies for the store, bytes (``decode=False``) for RQ.
    Short connect timeout so a Redis that is down fails fast (LS waits 1 s on /webhook).
    ``timeout`` (the web process: REDIS_REQUEST_TIMEOUT) bounds the connect and every command,
    without retries, so a frozen Redis costs a request one timeout, not several."""
    if timeout is not None:
        return redis.Redis.from_url(settings.redis_url, decode_responses=decode, socket_connect_timeout=timeout,
                                    socket_timeout=timeout, retry=Retry(NoBackoff(), 0), health_check_interval=30)
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=decode,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=max(settings.redis_timeout, 10.0),
        health_check_interval=30,
    )
