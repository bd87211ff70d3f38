"""The fast path's bookkeeping: its queued claim, its sequence numbers and the project-hash fields
it reads back between updates (last event, last CV, cold-start typical sets, last outcome).
Named methods here replace the job code's raw hash reads, so the field names live in one place."""
from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from backend.service.records import json_default
from backend.service.store.keys import FAST_CV_FIELD, FAST_LAST_EVENT_FIELD, FAST_SEQ_FIELD, TYPICAL_FIELD
from backend.service.store.locks import Locks, compare_and_delete


class FastPathFields(Locks):
    """Claim, sequence and the fast path's fields on the project hash."""

    # ------------------------------------------------------------------ claim and sequence
    def request_fast(self, project_id: int, job_id: str, ttl: int = 600) -> str | None:
        """Claim the project's one queued fast update for `job_id`; returns the job already
        queued instead (its run will see the new labels), or None when `job_id` got the claim."""
        return self.claim(project_id, "fast-queued", job_id, ttl)

    def fast_begin(self, project_id: int, job_id: str) -> int:
        """A fast update starts: release the queued claim (later events queue the next one) and
        take a sequence number (publishing only moves forward)."""
        compare_and_delete(self.r, self.key(project_id, "fast-queued"), job_id)
        return self.next_fast_seq(project_id)

    def next_fast_seq(self, project_id: int) -> int:
        """Take the next fast-update sequence number (``fast_seq``, atomic increment)."""
        return int(self.r.hincrby(self.key(project_id), FAST_SEQ_FIELD, 1))

    # ------------------------------------------------------------------ last event
    def note_fast_event(self, project_id: int, at: float | None = None) -> None:
        """Record when an annotation reached the fast path (default now): a queued update waits
        FAST_UPDATE_DELAY after the latest one, so a burst of labels costs one update."""
        self.r.hset(self.key(project_id), FAST_LAST_EVENT_FIELD, time.time() if at is None else float(at))

    def last_fast_event(self, project_id: int) -> float:
        """When the last annotation reached the fast path (epoch seconds; 0.0 when none did)."""
        return float(self._text.hget(self.key(project_id), FAST_LAST_EVENT_FIELD) or 0.0)

    # ------------------------------------------------------------------ cold start typical sets
    @staticmethod
    def _typical_field(feature_key: str, count: int) -> str:
        if ":" in feature_key:
            raise ValueError(f"feature key {feature_key!r} must not contain ':'")
        return f"{TYPICAL_FIELD}:{feature_key}:{int(count)}"

    def typical_ids(self, project_id: int, feature_key: str, count: int) -> list[int] | None:
        """The cold start's `count` most typical task ids on that feature set, most typical first;
        None when not computed yet (it depends only on the features, so it is computed once)."""
        raw = self._text.hget(self.key(project_id), self._typical_field(feature_key, count))
        return None if raw is None else [int(t) for t in json.loads(raw)]

    def set_typical_ids(self, project_id: int, feature_key: str, count: int, task_ids: Sequence[int]) -> None:
        self.r.hset(self.key(project_id), self._typical_field(feature_key, count),
                    json.dumps([int(t) for t in task_ids]))

    def drop_typical_except(self, project_id: int, keep_feature_keys: Collection[str]) -> int:
        """Delete the typical sets of feature sets not in `keep_feature_keys` (their features were
        dropped, so the sets can never be used again); returns how many were deleted."""
        key = self.key(project_id)
        stale = [name for name in self._text.hkeys(key)
                 if name.startswith(f"{TYPICAL_FIELD}:") and name.split(":")[1] not in keep_feature_keys]
        return int(self.r.hdel(key, *stale)) if stale else 0

    # ------------------------------------------------------------------ last CV, last outcome
    def fast_cv(self, project_id: int) -> dict[str, Any] | None:
        """The last proxy-head CV record (estimate, labels and classes it saw, feature key), or None."""
        raw = self._text.hget(self.key(project_id), FAST_CV_FIELD)
        return json.loads(raw) if raw else None

    def set_fast_cv(self, project_id: int, record: Mapping[str, Any]) -> None:
        """Keep the CV record later fast updates report until the next CV is due."""
        self.r.hset(self.key(project_id), FAST_CV_FIELD, json.dumps(dict(record), default=json_default))

    def set_fast_status(self, project_id: int, status: Mapping[str, Any]) -> None:
        """What ``GET /projects/<id>`` shows under ``fast_path`` (the last fast update's outcome)."""
        self.r.hset(self.key(project_id), "fast_status",
                    json.dumps({**status, "at": round(time.time(), 3)}, default=json_default))
