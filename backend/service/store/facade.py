"""`ProjectStore`: the one object the web process and the workers use for Redis. It is the sum of
the concern mixins (each a module of this package); this module only binds them to a client."""
from __future__ import annotations

import redis

from backend.service.settings import Settings, redact_url
from backend.service.store.connection import REDIS_ERRORS, StoreUnavailableError, connect_redis
from backend.service.store.fastpath import FastPathFields
from backend.service.store.history import QualityHistory
from backend.service.store.pool import PoolAndScores
from backend.service.store.signals import PmSignals
from backend.service.store.status import PipelineStatusStore
from backend.service.store.training import TrainingFlags
from backend.service.store.versions import VersionLedger


class ProjectStore(TrainingFlags, VersionLedger, FastPathFields, PipelineStatusStore, PoolAndScores, QualityHistory,
                   PmSignals):
    """Typed access to the keys of `backend.service.store.keys`. Needs a client with
    ``decode_responses=True`` (every reader here expects text)."""

    def __init__(self, client: redis.Redis, prefix: str = "feasible-al") -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("ProjectStore needs a Redis client with decode_responses=True")
        super().__init__(client, prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProjectStore:
        return cls(connect_redis(settings), settings.key_prefix)

    @property
    def where(self) -> str:
        """The Redis this store talks to, for error messages (credentials redacted)."""
        kw = self.r.get_connection_kwargs()
        if kw.get("path"):
            return f"unix://{kw['path']}"
        return redact_url(f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}")

    def ping(self) -> None:
        """Raise `StoreUnavailableError` when Redis does not answer."""
        try:
            self.r.ping()
        except REDIS_ERRORS as exc:
            raise StoreUnavailableError(f"Redis at {self.where} is unreachable: {exc}") from None
