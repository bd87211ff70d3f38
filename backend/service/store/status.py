"""Pipeline status records (``P:status:<job>``): what ``GET /jobs/<id>`` reports for a training
pipeline or a successor build while it runs and for RESULT_TTL seconds after."""
from __future__ import annotations

from typing import Any

from backend.service.records import RESULT_TTL, PipelineStatus, encode_values
from backend.service.store.connection import hash_fields
from backend.service.store.keys import StoreBase


class PipelineStatusStore(StoreBase):
    """Write, update and read `PipelineStatus` hashes (each write renews the expiry)."""

    def put_status(self, job_id: str, status: PipelineStatus) -> None:
        """Write a pipeline's whole status record (when it is queued)."""
        key = self._status_key(job_id)
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=hash_fields(status.to_hash()))
        pipe.expire(key, RESULT_TTL)
        pipe.execute()

    def update_status(self, job_id: str, **changes: Any) -> None:
        """Change some fields of a pipeline's status record (a stage starts, progress, an error)."""
        if changes:
            key = self._status_key(job_id)
            pipe = self.r.pipeline()
            pipe.hset(key, mapping=hash_fields(encode_values(changes)))
            pipe.expire(key, RESULT_TTL)
            pipe.execute()

    def get_status(self, job_id: str) -> PipelineStatus | None:
        h = self._text.hgetall(self._status_key(job_id))
        return PipelineStatus.from_hash(h) if h else None
