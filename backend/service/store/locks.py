"""Claims and locks: at most one job of a kind per project (``fast-queued``, ``features-build``,
``cv-queued``, ``prune-queued``), the LS model-version switch lock, the successor build lock and
its cancel flag.

Each is a string key holding its holder's token, taken with ``SET NX EX`` and released with
`compare_and_delete`, the one atomic compare-and-delete: a holder whose key expired and was taken
by another job never deletes the new holder's key (a GET followed by a DEL could)."""
from __future__ import annotations

import redis
from redis.lock import Lock

from backend.service.records import RESULT_TTL
from backend.service.store.keys import StoreBase
from backend.service.store.scripts import COMPARE_AND_DELETE, COMPARE_AND_SET


def compare_and_delete(conn: redis.Redis, key: str, token: str) -> bool:
    """Delete `key` only while it holds `token`, in one step (a Lua script); True when deleted.
    Works with decoding and bytes clients alike: Redis compares the raw bytes either way."""
    return bool(conn.register_script(COMPARE_AND_DELETE)(keys=[key], args=[token]))


class Locks(StoreBase):
    """Per-project claims, the LS switch lock and the successor lock and cancel flag."""

    # ------------------------------------------------------------------ claims
    def claim(self, project_id: int, name: str, job_id: str, ttl: int) -> str | None:
        """At most one job per project and `name`: None when `job_id` got it, else the holder.
        The claim expires after `ttl` seconds, so a job that died holding it blocks no one forever."""
        key = self.key(project_id, name)
        if self.r.set(key, job_id, nx=True, ex=ttl):
            return None
        return self._text.get(key) or None

    def release(self, project_id: int, name: str, job_id: str) -> bool:
        """Drop the claim `name` if `job_id` still holds it; True when it did."""
        return compare_and_delete(self.r, self.key(project_id, name), job_id)

    def ls_switch_lock(self, project_id: int, timeout: float = 900.0) -> Lock:
        """The lock every change of LS's model_version holds (push, switch, publish), so a fast
        update and a finishing iteration never interleave their switches. redis-py's `Lock`
        releases with its own token check (also a Lua script)."""
        lock: Lock = self.r.lock(self.key(project_id, "ls-switch"), timeout=timeout, blocking_timeout=timeout)
        return lock

    # ------------------------------------------------------------------ successor lock / cancel
    def successor_lock_holder(self, project_id: int) -> str | None:
        return self._text.get(self._successor_lock_key(project_id))

    def take_successor_lock(self, project_id: int, job_id: str, ttl: int, *, replacing: str | None = None) -> bool:
        """Take the project's successor lock for `job_id`: when free, or (``replacing``) from a
        holder known to be dead, only if it still holds it (one atomic compare-and-set)."""
        key = self._successor_lock_key(project_id)
        if replacing is None:
            return bool(self.r.set(key, job_id, nx=True, ex=ttl))
        return bool(self._script(COMPARE_AND_SET)(keys=[key], args=[replacing, job_id, int(ttl)]))

    def release_successor_lock(self, project_id: int, job_id: str) -> bool:
        """Drop the project's lock if `job_id` still holds it (never a lock another job took over)."""
        return compare_and_delete(self.r, self._successor_lock_key(project_id), job_id)

    def request_successor_cancel(self, job_id: str) -> None:
        self.r.set(self._cancel_key(job_id), "1", ex=RESULT_TTL)

    def successor_cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(self._cancel_key(job_id)))

    def clear_successor_cancel(self, job_id: str) -> None:
        self.r.delete(self._cancel_key(job_id))
