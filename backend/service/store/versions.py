"""Iterations and the version ledger: an iteration's progress hash while it runs, publishing a
version (serving, lineage, records) in one transaction, the finished iteration records, the
labeled tasks each version was trained on, and which checkpoints must outlive pruning."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.client import Pipeline

from backend.service.records import RESULT_TTL, UNTRAINED, IterationInfo, IterationRecord, json_default
from backend.service.store.connection import hash_fields
from backend.service.store.state import ProjectStateStore

MAX_ITERATION_RECORDS = 500
MAX_VERSIONS = 200  # versions remembered per project (a fast update adds one per annotation burst)
FAST_PREFIX = "fast-"  # versions made by the fast path (same as `backend.service.checkpoints.FAST_PREFIX`)


def _record_json(record: IterationRecord | Mapping[str, Any]) -> str:
    data = record.to_dict() if isinstance(record, IterationRecord) else dict(record)
    return json.dumps(data, default=json_default)


def _push_capped(pipe: Pipeline, key: str, value: str, cap: int) -> None:
    """Append to a list and keep its last `cap` entries (the ledger never grows without bound)."""
    pipe.rpush(key, value)
    pipe.ltrim(key, -cap, -1)


class VersionLedger(ProjectStateStore):
    """Iteration progress, publishing, iteration records, trained-on sets, served versions."""

    # ------------------------------------------------------------------ an iteration in progress
    def start_iteration(self, project_id: int, info: IterationInfo, pool: Sequence[int]) -> None:
        """Write the iteration's progress hash with its pool snapshot (expires after RESULT_TTL)."""
        key = self._iter_key(project_id, info.version)
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=hash_fields({**info.to_hash(), "pool": json.dumps([int(t) for t in pool])}))
        pipe.expire(key, RESULT_TTL)
        pipe.execute()

    def add_iteration_progress(
        self, project_id: int, version: str, scored: int, seconds: float, pipeline_id: str | None = None
    ) -> tuple[int, int]:
        """Counters a scoring chunk adds to (the iteration's, the project's total and the
        pipeline's status); returns (tasks scored so far, chunks done)."""
        key = self._iter_key(project_id, version)
        pipe = self.r.pipeline()
        pipe.hincrby(key, "scored", int(scored))
        pipe.hincrbyfloat(key, "inference_seconds", float(seconds))
        pipe.hincrby(key, "chunks_done", 1)
        pipe.hincrby(self.key(project_id), "model_scored_total", int(scored))
        if pipeline_id:
            pipe.hincrby(self._status_key(pipeline_id), "scored", int(scored))
            pipe.hincrby(self._status_key(pipeline_id), "chunks_done", 1)
        scored_total, _, chunks_done, *_ = pipe.execute()
        return int(scored_total), int(chunks_done)

    def iteration_info(self, project_id: int, version: str) -> IterationInfo:
        h = self._text.hgetall(self._iter_key(project_id, version))
        if not h:
            raise KeyError(f"no iteration in progress for project {project_id} version {version}")
        return IterationInfo.from_hash(h)

    def iteration_pool(self, project_id: int, version: str) -> list[int]:
        """The pool snapshot the iteration scores (task ids, sorted)."""
        return [int(t) for t in json.loads(self._text.hget(self._iter_key(project_id, version), "pool") or "[]")]

    def discard_iteration(self, project_id: int, version: str) -> None:
        """Drop the scores and counters of an iteration that failed (never published)."""
        if version and version != self.current_version(project_id):
            self.r.delete(self._pred_key(project_id, version), self._iter_key(project_id, version))

    # ------------------------------------------------------------------ publishing
    def publish_version(
        self, project_id: int, version: str, iteration: int | None, record: IterationRecord | Mapping[str, Any] | None,
        *, serve: bool = True, fast_seq: int | None = None,
    ) -> None:
        """Publish `version` in one transaction. ``serve``: /setup and /predict answer from it
        (else a fine-tuned iteration only joins the acquisition lineage UPS works from, while
        the proxy keeps serving). A `record` (full iterations) also sets the project's iteration
        and ``acq_version``; a fast version (`fast_seq`) leaves them. Drops score hashes of
        versions that are neither the new, the previously serving nor the acquisition lineage's
        one (a /predict that read the old version a moment ago still finds its entries)."""
        pkey = self.key(project_id)
        previous, acq = self._text.hmget(pkey, "version", "acq_version")
        new_acq = version if record is not None else (acq or UNTRAINED)
        stale = self._stale_score_keys(project_id, {version, previous or UNTRAINED, new_acq})
        pipe = self.r.pipeline(transaction=True)
        fields: dict[str, str | int | float] = {}
        if serve:
            fields.update(version=version, published_at=time.time())
            _push_capped(pipe, self.key(project_id, "served"), version, MAX_VERSIONS)
        if record is not None:
            fields.update(acq_version=version)
            if iteration is not None:
                fields.update(iteration=int(iteration))
            _push_capped(pipe, self.key(project_id, "iterations"), _record_json(record), MAX_ITERATION_RECORDS)
        if fast_seq is not None:
            fields.update(fast_published_seq=int(fast_seq))
        if fields:
            pipe.hset(pkey, mapping=hash_fields(fields))
        versions_key = self.key(project_id, "versions")
        if self._text.lindex(versions_key, -1) != version:  # a lineage version now served is not added twice
            _push_capped(pipe, versions_key, version, MAX_VERSIONS)
        pipe.delete(self._iter_key(project_id, version), *stale)
        pipe.execute()

    def _stale_score_keys(self, project_id: int, keep: set[str]) -> list[str]:
        """Score hashes of versions outside `keep` (they can serve no /predict any more)."""
        return [k for k in self._text.scan_iter(match=self._pred_key(project_id, "*"), count=1000)
                if k.rsplit(":pred:", 1)[-1] not in keep]

    def versions(self, project_id: int) -> list[str]:
        """Published versions (fine-tuned and fast), oldest first."""
        return list(self._text.lrange(self.key(project_id, "versions"), 0, -1))

    def served_versions(self, project_id: int) -> list[str]:
        """Versions that served the project, oldest first (LS holds predictions of these)."""
        return list(self._text.lrange(self.key(project_id, "served"), 0, -1))

    # ------------------------------------------------------------------ iteration records
    def iterations(self, project_id: int, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` finished iterations as stored JSON (`IterationRecord.to_dict`), oldest first."""
        return [json.loads(x) for x in self._text.lrange(self.key(project_id, "iterations"), -limit, -1)]

    def last_iteration(self, project_id: int) -> dict[str, Any] | None:
        """The last finished iteration (`IterationRecord` as JSON) as ``GET /projects/<id>`` shows it."""
        raw = self._text.lindex(self.key(project_id, "iterations"), -1)
        return json.loads(raw) if raw else None

    def replace_last_iteration_record(self, project_id: int, record: IterationRecord) -> None:
        """Overwrite the last finished iteration's record: its push and serving outcome are known
        only after `publish_version` appended it. Raises `redis.ResponseError` when none was recorded."""
        self.r.lset(self.key(project_id, "iterations"), -1, _record_json(record))

    # ------------------------------------------------------------------ trained-on sets, pruning
    def remember_labeled(self, project_id: int, version: str, task_ids: Sequence[int]) -> None:
        """The labeled tasks `version` was trained on (its held-out labels are the later ones)."""
        key = self.key(project_id, "trained-on", version)
        pipe = self.r.pipeline()
        pipe.delete(key)
        if task_ids:
            pipe.sadd(key, *[int(t) for t in task_ids])
        pipe.expire(key, RESULT_TTL)
        pipe.execute()

    def trained_on(self, project_id: int, version: str) -> set[int] | None:
        """The tasks `version` was trained on; None when unknown (never recorded, or expired)."""
        key = self.key(project_id, "trained-on", version)
        if not self.r.exists(key):
            return None
        return {int(t) for t in self._text.smembers(key)}

    def checkpoints_to_keep(self, project_id: int, keep_versions: int) -> set[str]:
        """Checkpoint folders pruning must leave: the last `keep_versions` fine-tuned ones, the
        serving and previous serving version, and the one whose encoder made the pool features."""
        state = self.get_project(project_id)
        acq = [v for v in self.versions(project_id) if not v.startswith(FAST_PREFIX)]
        keep = set(acq[-keep_versions:]) | set(self.served_versions(project_id)[-2:])
        if state is not None:
            keep |= {state.version, state.acq_version}
            if state.feature_source_version:
                keep.add(state.feature_source_version)
        return keep
