"""Per-project state in Redis: label config, serving version, cached scores, the unlabeled pool,
training-queue flags, iteration records, pipeline status, the successor lock. Survives a backend
restart; Label Studio stays the source of truth for annotations, so losing this state costs a
re-score, never a label.

Key layout (``P`` = the settings' key prefix, ``<id>`` = the Label Studio project id)::

    P:projects                      set    project ids seen
    P:project:<id>                  hash   `ProjectState`: label_config, control_name, value_key, task_type,
                                           version ('untrained' before the first retrain), iteration,
                                           pending (annotation events since the last retrain request),
                                           queued_job / running_job / stage_job / dirty (training dedupe),
                                           last_job, last_error, last_error_job, last_error_at,
                                           pool_stale, pool_value_key, pool_refreshed_iteration,
                                           model_scored_total (tasks the model ran on, all paths)
    P:project:<id>:pool             hash   task id -> text (the cached unlabeled pool)
    P:project:<id>:pred:<version>   hash   task id -> {"result", "score", "u"} JSON: the LS-ready
                                           result, confidence and uncertainty held by that version
    P:project:<id>:iter:<version>   hash   `IterationInfo` of an iteration in progress (counters the
                                           scoring jobs add to, stage timings) + "pool" (JSON id list)
    P:project:<id>:versions         list   published versions (fine-tuned and fast), oldest first
    P:project:<id>:served           list   versions that served (LS holds predictions of these)
    P:project:<id>:fast-queued      string the fast update job waiting to run (at most one)
    P:project:<id>:features-build   string the pool-feature build job running (at most one)
    P:project:<id>:ls-switch        lock   held while LS's model_version changes
    P:project:<id>:iterations       list   `IterationRecord` JSON of finished iterations
    P:project:<id>:event:<identity> string an annotation event already counted (expires, see store_scripts)
    P:status:<job id>               hash   `PipelineStatus` of a training pipeline or successor job
    P:successor-lock:<id>           string the successor job id holding the project's build lock
    P:successor-cancel:<job id>     string set when a cancel of that successor build was asked
    P:metrics:*                     hashes Prometheus counters (`backend.service.telemetry`)

The training flags change only through Lua scripts (`backend.service.store_scripts`), so two web threads (or a webhook racing a
worker) can never queue two trainings for one project. Pool and score keys are handled by
`backend.service.pool_store.PoolAndScores`; the records are in `backend.service.records`.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.labeling import LabelConfig, parse_label_config
from backend.service.pool_store import PoolAndScores
from backend.service.store_scripts import BEGIN, COMPARE_DELETE, COUNT, END, EVENT_TTL, REQUEST, SET_IF_RUNNING
from backend.service.records import (
    RESULT_TTL,
    UNTRAINED,
    IterationInfo,
    IterationRecord,
    PipelineStatus,
    ProjectState,
    ScoreEntry,
    TrainingRequest,
    encode_values,
    json_default,
)
from backend.service.settings import Settings, redact_url

__all__ = [
    "UNTRAINED",
    "RESULT_TTL",
    "REDIS_ERRORS",
    "ProjectState",
    "ProjectStore",
    "ScoreEntry",
    "StoreUnavailableError",
    "TrainingRequest",
    "connect_redis",
]

MAX_ITERATION_RECORDS = 500
MAX_VERSIONS = 200  # versions remembered per project (a fast update adds one per annotation burst)
FAST_PREFIX = "fast-"
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


class ProjectStore(PoolAndScores):
    """Typed access to the Redis keys above. Needs a client with ``decode_responses=True``."""

    def __init__(self, client: redis.Redis, prefix: str = "feasible-al") -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("ProjectStore needs a Redis client with decode_responses=True")
        self.r = client
        self.prefix = prefix
        self._request = client.register_script(REQUEST)
        self._begin = client.register_script(BEGIN)
        self._end = client.register_script(END)
        self._compare_delete = client.register_script(COMPARE_DELETE)
        self._set_if_running = client.register_script(SET_IF_RUNNING)
        self._count = client.register_script(COUNT)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ProjectStore":
        return cls(connect_redis(settings), settings.key_prefix)

    @property
    def where(self) -> str:
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

    # ------------------------------------------------------------------ keys
    def key(self, project_id: int, *parts: str) -> str:
        return ":".join((self.prefix, "project", str(int(project_id)), *parts))

    def _iter_key(self, project_id: int, version: str) -> str:
        return self.key(project_id, "iter", version)

    # ------------------------------------------------------------------ projects
    def register_project(
        self, project_id: int, label_config: str, control_name: str, value_key: str, task_type: str
    ) -> bool:
        """Remember the project's label config; True when it differs from the stored one. The
        cached pool holds the texts of one task field, so only a change of that field marks the
        pool stale (a reformatted or relabeled config does not cost a re-listing)."""
        key = self.key(project_id)
        old_config, old_key = self.r.hmget(key, "label_config", "value_key")
        pipe = self.r.pipeline()
        pipe.sadd(f"{self.prefix}:projects", int(project_id))
        pipe.hset(key, mapping={
            "label_config": label_config, "control_name": control_name, "value_key": value_key,
            "task_type": task_type, "updated_at": time.time(),
        })
        pipe.hsetnx(key, "version", UNTRAINED)
        pipe.hsetnx(key, "created_at", time.time())
        if old_key is not None and old_key != value_key:
            pipe.hset(key, "pool_stale", "1")
        pipe.execute()
        return old_config is not None and old_config != label_config

    def register_label_config(self, project_id: int, xml: str, control_name: str | None = None) -> LabelConfig:
        """Parse the label config (raising `LabelConfigError` / `UnsupportedLabelConfigError` with
        what is wrong) and remember it for the project: the one way a config enters the store."""
        config = parse_label_config(xml, control_name or None)
        self.register_project(project_id, xml, config.control_name, config.value_key, config.task_type.value)
        return config

    def get_project(self, project_id: int) -> ProjectState | None:
        h = self.r.hgetall(self.key(project_id))
        return ProjectState.from_hash(int(project_id), h) if h else None

    def project_ids(self) -> list[int]:
        return sorted(int(p) for p in self.r.smembers(f"{self.prefix}:projects"))

    def current_version(self, project_id: int) -> str:
        return self.r.hget(self.key(project_id), "version") or UNTRAINED

    def versions(self, project_id: int) -> list[str]:
        return list(self.r.lrange(self.key(project_id, "versions"), 0, -1))

    # ------------------------------------------------------------------ training dedupe
    def request_training(self, project_id: int, new_job_id: str) -> TrainingRequest:
        outcome, job_id = self._request(keys=[self.key(project_id)], args=[new_job_id])
        return TrainingRequest(outcome, job_id)

    def begin_training(self, project_id: int, job_id: str) -> bool:
        """Mark `job_id` as the project's running pipeline; False (and a rerun flag) when another
        pipeline already runs."""
        outcome, _ = self._begin(keys=[self.key(project_id)], args=[job_id])
        return outcome == "run"

    def end_pipeline(self, project_id: int, job_id: str) -> bool | None:
        """Release the running flag held by `job_id`. Returns whether events arrived during the
        run (one more run is due), or None when `job_id` was not the running pipeline."""
        result = int(self._end(keys=[self.key(project_id)], args=[job_id]))
        return None if result < 0 else bool(result)

    def clear_job_field(self, project_id: int, field_name: str, job_id: str) -> bool:
        """Delete ``queued_job``/``running_job`` only if it still holds `job_id` (stale-flag repair)."""
        return bool(self._compare_delete(keys=[self.key(project_id)], args=[field_name, job_id]))

    def set_stage_job(self, project_id: int, pipeline_id: str, stage_job: str) -> bool:
        """Record the job the running pipeline waits on next (lets a webhook spot a dead pipeline)."""
        return bool(self._set_if_running(keys=[self.key(project_id)], args=[pipeline_id, "stage_job", stage_job]))

    def count_annotations(self, project_id: int, n: int, every: int, events: Sequence[str] = ()) -> tuple[bool, int]:
        """Add `n` annotation events plus those of `events` (identities such as
        ``ANNOTATION_CREATED:<id>:<updated_at>``) not seen in the last EVENT_TTL seconds, so an event
        that two webhooks deliver counts once. True when the count reaches `every` (it then restarts)."""
        due, count, _ = self.count_annotation_events(project_id, n, every, events)
        return due, count

    def count_annotation_events(
        self, project_id: int, n: int, every: int, events: Sequence[str] = ()
    ) -> tuple[bool, int, int]:
        """`count_annotations` plus how many of the events were new (0: all were duplicates)."""
        keys = [self.key(project_id)] + [self.key(project_id, "event", e) for e in events]
        due, count, fresh = self._count(keys=keys, args=[int(n), int(every), EVENT_TTL])
        return bool(due), int(count), int(fresh)

    def record_error(self, project_id: int, job_id: str | None, message: str) -> None:
        self.r.hset(self.key(project_id), mapping=encode_values({
            "last_error": message[:2000], "last_error_job": job_id or "", "last_error_at": time.time()}))

    def clear_error(self, project_id: int) -> None:
        self.r.hdel(self.key(project_id), "last_error", "last_error_job", "last_error_at")

    # ------------------------------------------------------------------ iterations
    def start_iteration(self, project_id: int, info: IterationInfo, pool: Sequence[int]) -> None:
        key = self._iter_key(project_id, info.version)
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={**info.to_hash(), "pool": json.dumps([int(t) for t in pool])})
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
        h = self.r.hgetall(self._iter_key(project_id, version))
        if not h:
            raise KeyError(f"no iteration in progress for project {project_id} version {version}")
        return IterationInfo.from_hash(h)

    def iteration_pool(self, project_id: int, version: str) -> list[int]:
        """The pool snapshot the iteration scores (task ids, sorted)."""
        return json.loads(self.r.hget(self._iter_key(project_id, version), "pool") or "[]")

    def publish_version(
        self, project_id: int, version: str, iteration: int | None, record: IterationRecord | dict | None,
        *, serve: bool = True, fast_seq: int | None = None,
    ) -> None:
        """Publish `version` in one transaction. ``serve``: /setup and /predict answer from it
        (else a fine-tuned iteration only joins the acquisition lineage UPS works from, while
        the proxy keeps serving). A `record` (full iterations) also sets the project's iteration
        and ``acq_version``; a fast version (`fast_seq`) leaves them. Drops score hashes of
        versions that are neither the new, the previously serving nor the acquisition lineage's
        one (a /predict that read the old version a moment ago still finds its entries)."""
        pkey = self.key(project_id)
        previous, acq = self.r.hmget(pkey, "version", "acq_version")
        new_acq = version if record is not None else (acq or UNTRAINED)
        keep = {version, previous or UNTRAINED, new_acq}
        stale = [k for k in self.r.scan_iter(match=self._pred_key(project_id, "*"), count=1000)
                 if k.rsplit(":pred:", 1)[-1] not in keep]
        pipe = self.r.pipeline(transaction=True)
        fields: dict[str, Any] = {}
        if serve:
            fields.update(version=version, published_at=time.time())
            pipe.rpush(self.key(project_id, "served"), version)
            pipe.ltrim(self.key(project_id, "served"), -MAX_VERSIONS, -1)
        if record is not None:
            data = record.to_dict() if isinstance(record, IterationRecord) else dict(record)
            fields.update(acq_version=version)
            if iteration is not None:
                fields.update(iteration=int(iteration))
            pipe.rpush(self.key(project_id, "iterations"), json.dumps(data, default=json_default))
            pipe.ltrim(self.key(project_id, "iterations"), -MAX_ITERATION_RECORDS, -1)
        if fast_seq is not None:
            fields.update(fast_published_seq=int(fast_seq))
        if fields:
            pipe.hset(pkey, mapping=fields)
        if self.r.lindex(self.key(project_id, "versions"), -1) != version:  # a lineage version now served
            pipe.rpush(self.key(project_id, "versions"), version)
            pipe.ltrim(self.key(project_id, "versions"), -MAX_VERSIONS, -1)
        pipe.delete(self._iter_key(project_id, version))
        for k in stale:
            pipe.delete(k)
        pipe.execute()

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
        key = self.key(project_id, "trained-on", version)
        if not self.r.exists(key):
            return None
        return {int(t) for t in self.r.smembers(key)}

    def served_versions(self, project_id: int) -> list[str]:
        """Versions that served the project, oldest first (LS holds predictions of these)."""
        return list(self.r.lrange(self.key(project_id, "served"), 0, -1))

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

    # ------------------------------------------------------------------ fast path
    def request_fast(self, project_id: int, job_id: str, ttl: int = 600) -> str | None:
        """Claim the project's one queued fast update for `job_id`; returns the job already
        queued instead (its run will see the new labels), or None when `job_id` got the claim."""
        return self.claim(project_id, "fast-queued", job_id, ttl)

    def claim(self, project_id: int, name: str, job_id: str, ttl: int) -> str | None:
        """At most one job per project and `name`: None when `job_id` got it, else the holder."""
        key = self.key(project_id, name)
        if self.r.set(key, job_id, nx=True, ex=ttl):
            return None
        return self.r.get(key) or None

    def release(self, project_id: int, name: str, job_id: str) -> None:
        self._compare_delete_key(self.key(project_id, name), job_id)

    def fast_begin(self, project_id: int, job_id: str) -> int:
        """A fast update starts: release the queued claim (later events queue the next one) and
        take a sequence number (publishing only moves forward)."""
        self._compare_delete_key(self.key(project_id, "fast-queued"), job_id)
        return int(self.r.hincrby(self.key(project_id), "fast_seq", 1))

    def _compare_delete_key(self, key: str, value: str) -> None:
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) == value:
                    pipe.multi()
                    pipe.delete(key)
                    pipe.execute()
            except redis.WatchError:
                pass

    def set_fast_status(self, project_id: int, status: dict[str, Any]) -> None:
        """What ``GET /projects/<id>`` shows under ``fast_path`` (the last fast update's outcome)."""
        self.r.hset(self.key(project_id), "fast_status",
                    json.dumps({**status, "at": round(time.time(), 3)}, default=json_default))

    def set_fields(self, project_id: int, **values: Any) -> None:
        if values:
            self.r.hset(self.key(project_id), mapping=encode_values(values))

    def ls_switch_lock(self, project_id: int, timeout: float = 900.0) -> Any:
        """The lock every change of LS's model_version holds (push, switch, publish), so a fast
        update and a finishing iteration never interleave their switches."""
        return self.r.lock(self.key(project_id, "ls-switch"), timeout=timeout, blocking_timeout=timeout)


    def discard_iteration(self, project_id: int, version: str) -> None:
        """Drop the scores and counters of an iteration that failed (never published)."""
        if version and version != self.current_version(project_id):
            self.r.delete(self._pred_key(project_id, version), self._iter_key(project_id, version))

    def iterations(self, project_id: int, limit: int = 50) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.key(project_id, "iterations"), -limit, -1)]

    def last_iteration(self, project_id: int) -> dict[str, Any] | None:
        """The last finished iteration (`IterationRecord` as JSON) as ``GET /projects/<id>`` shows it."""
        raw = self.r.lindex(self.key(project_id, "iterations"), -1)
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------------ pipeline status
    def _status_key(self, job_id: str) -> str:
        return f"{self.prefix}:status:{job_id}"

    def put_status(self, job_id: str, status: PipelineStatus) -> None:
        """Write a pipeline's whole status record (when it is queued)."""
        key = self._status_key(job_id)
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=status.to_hash())
        pipe.expire(key, RESULT_TTL)
        pipe.execute()

    def update_status(self, job_id: str, **changes: Any) -> None:
        """Change some fields of a pipeline's status record (a stage starts, progress, an error)."""
        if changes:
            key = self._status_key(job_id)
            pipe = self.r.pipeline()
            pipe.hset(key, mapping=encode_values(changes))
            pipe.expire(key, RESULT_TTL)
            pipe.execute()

    def get_status(self, job_id: str) -> PipelineStatus | None:
        h = self.r.hgetall(self._status_key(job_id))
        return PipelineStatus.from_hash(h) if h else None

    # ------------------------------------------------------------------ successor lock / cancel
    def _lock_key(self, project_id: int) -> str:
        return f"{self.prefix}:successor-lock:{int(project_id)}"

    def _cancel_key(self, job_id: str) -> str:
        return f"{self.prefix}:successor-cancel:{job_id}"

    def successor_lock_holder(self, project_id: int) -> str | None:
        return self.r.get(self._lock_key(project_id))

    def take_successor_lock(self, project_id: int, job_id: str, ttl: int, *, replacing: str | None = None) -> bool:
        """Take the project's successor lock for `job_id`: when free, or (``replacing``) from a
        holder known to be dead, only if it still holds it (optimistic, WATCH-based)."""
        key = self._lock_key(project_id)
        if replacing is None:
            return bool(self.r.set(key, job_id, nx=True, ex=ttl))
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != replacing:
                    return False
                pipe.multi()
                pipe.set(key, job_id, ex=ttl)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def release_successor_lock(self, project_id: int, job_id: str) -> None:
        """Drop the project's lock if `job_id` still holds it."""
        key = self._lock_key(project_id)
        if self.r.get(key) == job_id:
            self.r.delete(key)

    def request_successor_cancel(self, job_id: str) -> None:
        self.r.set(self._cancel_key(job_id), "1", ex=RESULT_TTL)

    def successor_cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(self._cancel_key(job_id)))

    def clear_successor_cancel(self, job_id: str) -> None:
        self.r.delete(self._cancel_key(job_id))
