"""Connecting to Redis, the errors that mean it cannot be reached (the web process's error
handlers import them), and the typed view of a decoding client the store reads through."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

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


class TextReplies(Protocol):
    """The read commands the store uses, typed as a decoding client answers them. redis-py types
    every reply ``bytes | str``; the store's client always decodes (`ProjectStore` checks), so the
    store reads through this view (`text_view`) rather than casting at each call."""

    def get(self, name: str) -> str | None: ...

    def hget(self, name: str, key: str) -> str | None: ...

    def hmget(self, name: str, keys: str | Sequence[str | int], *args: str) -> list[str | None]: ...

    def hgetall(self, name: str) -> dict[str, str]: ...

    def hkeys(self, name: str) -> list[str]: ...

    def smembers(self, name: str) -> set[str]: ...

    def lrange(self, name: str, start: int, end: int) -> list[str]: ...

    def lindex(self, name: str, index: int) -> str | None: ...

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[str]: ...


def text_view(client: redis.Redis) -> TextReplies:
    """`client` seen through `TextReplies` (the same object; only the static types differ)."""
    return cast(TextReplies, client)


def hash_fields(values: Mapping[Any, str | int | float]) -> Mapping[FieldT, EncodableT]:
    """`values` as HSET's ``mapping`` (redis-py's key type is invariant, so a ``dict[str, ...]`` or
    ``dict[int, ...]`` needs this widening; the object is unchanged)."""
    return cast("Mapping[FieldT, EncodableT]", values)
