"""Per-project state in Redis: label config, serving version, cached scores, the unlabeled pool,
training-queue flags, iteration records. Survives a backend restart; Label Studio stays the source
of truth for annotations, so losing this state costs a re-score, never a label.

Key layout (``P`` = the settings' key prefix, ``<id>`` = the Label Studio project id)::

    P:projects                      set    project ids seen
    P:project:<id>                  hash   label_config, control_name, value_key, task_type,
                                           version ('untrained' before the first retrain), iteration,
                                           pending (annotation events since the last retrain request),
                                           queued_job / running_job / stage_job / dirty (training dedupe),
                                           last_job, last_error, last_error_job, last_error_at,
                                           pool_stale, pool_value_key, pool_refreshed_iteration,
                                           model_scored_total (tasks the model ran on, all paths)
    P:project:<id>:pool             hash   task id -> text (the cached unlabeled pool)
    P:project:<id>:pred:<version>   hash   task id -> {"result", "score", "u"} JSON: the LS-ready
                                           result, confidence and uncertainty held by that version
    P:project:<id>:iter:<version>   hash   an iteration in progress: pool snapshot, subset size,
                                           counters the scoring jobs add to, stage timings
    P:project:<id>:versions         list   published versions, oldest first
    P:project:<id>:iterations       list   JSON records of finished iterations (timings, counts)

The training flags change only through Lua scripts, so two web threads (or a webhook racing a
worker) can never queue two trainings for one project.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from backend.service.settings import Settings, redact_url

__all__ = [
    "UNTRAINED",
    "ProjectState",
    "ProjectStore",
    "ScoreEntry",
    "StoreUnavailableError",
    "TrainingRequest",
    "connect_redis",
]

UNTRAINED = "untrained"
MAX_ITERATION_RECORDS = 500
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class StoreUnavailableError(RuntimeError):
    """Redis cannot be reached. Annotations are safe in Label Studio; retry or press Start training."""


def connect_redis(settings: Settings, *, decode: bool = True) -> redis.Redis:
    """A client for ``REDIS_URL``: text replies for the store, bytes (``decode=False``) for RQ.
    Short connect timeout so a Redis that is down fails fast (LS waits 1 s on /webhook)."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=decode,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=max(settings.redis_timeout, 10.0),
        health_check_interval=30,
    )


@dataclass(frozen=True)
class ScoreEntry:
    """What a version says about one task: the LS result list, its confidence (the prediction
    score LS sorts by) and the strategy's uncertainty (what UPS ranks by)."""

    result: list[dict]
    score: float
    uncertainty: float

    def to_json(self) -> str:
        return json.dumps({"result": self.result, "score": self.score, "u": self.uncertainty}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> "ScoreEntry":
        data = json.loads(raw)
        return cls(data["result"], float(data["score"]), float(data.get("u", math.nan)))


@dataclass(frozen=True)
class TrainingRequest:
    """Outcome of asking for a retrain: ``enqueue`` (caller must enqueue `job_id`), ``queued``
    (one is already waiting: it will see the new labels), ``deferred`` (one is running: it runs
    once more after it)."""

    outcome: str
    job_id: str


@dataclass
class ProjectState:
    project_id: int
    label_config: str = ""
    control_name: str = ""
    value_key: str = ""
    task_type: str = ""
    version: str = UNTRAINED
    iteration: int = 0
    pending: int = 0
    queued_job: str | None = None
    running_job: str | None = None
    stage_job: str | None = None
    dirty: bool = False
    last_job: str | None = None
    last_error: str | None = None
    last_error_job: str | None = None
    last_error_at: float | None = None
    pool_stale: bool = False
    pool_value_key: str = ""
    pool_refreshed_iteration: int = 0
    model_scored_total: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, project_id: int, h: Mapping[str, str]) -> "ProjectState":
        def opt(name: str) -> str | None:
            return h.get(name) or None

        known = {
            "label_config", "control_name", "value_key", "task_type", "version", "iteration", "pending",
            "queued_job", "running_job", "stage_job", "dirty", "last_job", "last_error", "last_error_job",
            "last_error_at", "pool_stale", "pool_value_key", "pool_refreshed_iteration", "model_scored_total",
        }
        return cls(
            project_id=project_id,
            label_config=h.get("label_config", ""),
            control_name=h.get("control_name", ""),
            value_key=h.get("value_key", ""),
            task_type=h.get("task_type", ""),
            version=h.get("version") or UNTRAINED,
            iteration=int(h.get("iteration") or 0),
            pending=int(h.get("pending") or 0),
            queued_job=opt("queued_job"),
            running_job=opt("running_job"),
            stage_job=opt("stage_job"),
            dirty=h.get("dirty") == "1",
            last_job=opt("last_job"),
            last_error=opt("last_error"),
            last_error_job=opt("last_error_job"),
            last_error_at=float(h["last_error_at"]) if h.get("last_error_at") else None,
            pool_stale=h.get("pool_stale") == "1",
            pool_value_key=h.get("pool_value_key", ""),
            pool_refreshed_iteration=int(h.get("pool_refreshed_iteration") or 0),
            model_scored_total=int(h.get("model_scored_total") or 0),
            extra={k: v for k, v in h.items() if k not in known},
        )

    @property
    def trained(self) -> bool:
        return self.version != UNTRAINED

    def public(self) -> dict[str, Any]:
        """The state as shown by ``GET /projects/<id>`` (no label config XML)."""
        return {
            "project": self.project_id, "version": self.version, "iteration": self.iteration,
            "task_type": self.task_type or None, "control_name": self.control_name or None,
            "pending_annotations": self.pending, "queued_job": self.queued_job,
            "running_job": self.running_job, "rerun_after_current": self.dirty, "last_job": self.last_job,
            "last_error": self.last_error, "last_error_job": self.last_error_job,
            "last_error_at": self.last_error_at, "model_scored_total": self.model_scored_total,
        }


# Training dedupe, as atomic scripts over the project hash (KEYS[1]).
_REQUEST = """
local queued = redis.call('HGET', KEYS[1], 'queued_job')
if queued then return {'queued', queued} end
local running = redis.call('HGET', KEYS[1], 'running_job')
if running then
  redis.call('HSET', KEYS[1], 'dirty', '1')
  return {'deferred', running}
end
redis.call('HSET', KEYS[1], 'queued_job', ARGV[1], 'last_job', ARGV[1], 'pending', '0')
return {'enqueue', ARGV[1]}
"""
_BEGIN = """
local running = redis.call('HGET', KEYS[1], 'running_job')
if redis.call('HGET', KEYS[1], 'queued_job') == ARGV[1] then redis.call('HDEL', KEYS[1], 'queued_job') end
if running and running ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'dirty', '1')
  return {'busy', running}
end
redis.call('HSET', KEYS[1], 'running_job', ARGV[1], 'stage_job', ARGV[1], 'last_job', ARGV[1])
redis.call('HDEL', KEYS[1], 'dirty')
return {'run', ARGV[1]}
"""
_END = """
if redis.call('HGET', KEYS[1], 'running_job') ~= ARGV[1] then return -1 end
redis.call('HDEL', KEYS[1], 'running_job', 'stage_job')
local dirty = redis.call('HGET', KEYS[1], 'dirty')
redis.call('HDEL', KEYS[1], 'dirty')
if dirty then return 1 end
return 0
"""
_COMPARE_DELETE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
_SET_IF_RUNNING = """
if redis.call('HGET', KEYS[1], 'running_job') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""
_COUNT = """
local n = redis.call('HINCRBY', KEYS[1], 'pending', ARGV[1])
local every = tonumber(ARGV[2])
if every > 0 and n >= every then
  redis.call('HSET', KEYS[1], 'pending', '0')
  return {1, n}
end
return {0, n}
"""


class ProjectStore:
    """Typed access to the Redis keys above. Needs a client with ``decode_responses=True``."""

    def __init__(self, client: redis.Redis, prefix: str = "feasible-al") -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("ProjectStore needs a Redis client with decode_responses=True")
        self.r = client
        self.prefix = prefix
        self._request = client.register_script(_REQUEST)
        self._begin = client.register_script(_BEGIN)
        self._end = client.register_script(_END)
        self._compare_delete = client.register_script(_COMPARE_DELETE)
        self._set_if_running = client.register_script(_SET_IF_RUNNING)
        self._count = client.register_script(_COUNT)

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

    def _pred_key(self, project_id: int, version: str) -> str:
        return self.key(project_id, "pred", version)

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

    def get_project(self, project_id: int) -> ProjectState | None:
        h = self.r.hgetall(self.key(project_id))
        return ProjectState.from_hash(int(project_id), h) if h else None

    def project_ids(self) -> list[int]:
        return sorted(int(p) for p in self.r.smembers(f"{self.prefix}:projects"))

    def current_version(self, project_id: int) -> str:
        return self.r.hget(self.key(project_id), "version") or UNTRAINED

    def versions(self, project_id: int) -> list[str]:
        return list(self.r.lrange(self.key(project_id, "versions"), 0, -1))

    def set_fields(self, project_id: int, **values: Any) -> None:
        self.r.hset(self.key(project_id), mapping={k: _text(v) for k, v in values.items()})

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

    def count_annotations(self, project_id: int, n: int, every: int) -> tuple[bool, int]:
        """Add `n` annotation events; True when they reach `every` (the counter then restarts)."""
        due, count = self._count(keys=[self.key(project_id)], args=[int(n), int(every)])
        return bool(due), int(count)

    def record_error(self, project_id: int, job_id: str | None, message: str) -> None:
        self.set_fields(project_id, last_error=message[:2000], last_error_job=job_id or "", last_error_at=time.time())

    def clear_error(self, project_id: int) -> None:
        self.r.hdel(self.key(project_id), "last_error", "last_error_job", "last_error_at")

    # ------------------------------------------------------------------ scores
    def get_scores(self, project_id: int, version: str, task_ids: Sequence[int]) -> dict[int, ScoreEntry]:
        """Entries `version` holds for these tasks (missing ones left out); one round trip."""
        if not task_ids:
            return {}
        raw = self.r.hmget(self._pred_key(project_id, version), [int(t) for t in task_ids])
        return {int(t): ScoreEntry.from_json(v) for t, v in zip(task_ids, raw) if v is not None}

    def get_raw_scores(self, project_id: int, version: str, task_ids: Sequence[int]) -> list[str | None]:
        if not task_ids:
            return []
        return self.r.hmget(self._pred_key(project_id, version), [int(t) for t in task_ids])

    def put_scores(self, project_id: int, version: str, entries: Mapping[int, ScoreEntry | str]) -> None:
        if not entries:
            return
        mapping = {int(t): (e if isinstance(e, str) else e.to_json()) for t, e in entries.items()}
        self.r.hset(self._pred_key(project_id, version), mapping=mapping)

    def uncertainties(self, project_id: int, version: str, task_ids: Sequence[int]) -> np.ndarray:
        """Stale uncertainty per task for UPS; NaN where `version` never scored the task."""
        out = np.full(len(task_ids), np.nan, dtype=np.float64)
        if version == UNTRAINED or not task_ids:
            return out
        for i, raw in enumerate(self.get_raw_scores(project_id, version, task_ids)):
            if raw is not None:
                u = json.loads(raw).get("u")
                out[i] = np.nan if u is None else float(u)
        return out

    def scored_count(self, project_id: int, version: str) -> int:
        return int(self.r.hlen(self._pred_key(project_id, version)))

    def add_model_scored(self, project_id: int, n: int) -> None:
        self.r.hincrby(self.key(project_id), "model_scored_total", int(n))

    # ------------------------------------------------------------------ pool
    def pool_ids(self, project_id: int) -> list[int]:
        return sorted(int(t) for t in self.r.hkeys(self.key(project_id, "pool")))

    def pool_size(self, project_id: int) -> int:
        return int(self.r.hlen(self.key(project_id, "pool")))

    def pool_exists(self, project_id: int) -> bool:
        return bool(self.r.exists(self.key(project_id, "pool")))

    def pool_texts(self, project_id: int, task_ids: Sequence[int]) -> list[str | None]:
        if not task_ids:
            return []
        return self.r.hmget(self.key(project_id, "pool"), [int(t) for t in task_ids])

    def pool_replace(self, project_id: int, texts: Mapping[int, str], value_key: str, iteration: int) -> None:
        """Swap in a freshly listed pool (atomically: readers never see half of it)."""
        key = self.key(project_id, "pool")
        tmp = f"{key}:tmp"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        items = [(int(t), text) for t, text in texts.items()]
        for start in range(0, len(items), 5000):
            pipe.hset(tmp, mapping=dict(items[start : start + 5000]))
        if items:
            pipe.rename(tmp, key)
        else:
            pipe.delete(key)
        pipe.hset(self.key(project_id), mapping={
            "pool_value_key": value_key, "pool_stale": "0", "pool_refreshed_iteration": iteration,
        })
        pipe.execute()

    def pool_add(self, project_id: int, texts: Mapping[int, str]) -> None:
        if texts and self.pool_exists(project_id):  # no cache yet: the next training lists the pool
            self.r.hset(self.key(project_id, "pool"), mapping={int(t): v for t, v in texts.items()})

    def pool_remove(self, project_id: int, task_ids: Iterable[int]) -> int:
        ids = [int(t) for t in task_ids]
        return int(self.r.hdel(self.key(project_id, "pool"), *ids)) if ids else 0

    def mark_pool_stale(self, project_id: int) -> None:
        self.r.hset(self.key(project_id), "pool_stale", "1")

    # ------------------------------------------------------------------ iterations
    def start_iteration(self, project_id: int, version: str, info: Mapping[str, Any], pool: Sequence[int]) -> None:
        key = self._iter_key(project_id, version)
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={**{k: _text(v) for k, v in info.items()}, "pool": json.dumps([int(t) for t in pool]),
                                "scored": 0, "inference_seconds": 0.0, "chunks_done": 0})
        pipe.expire(key, 7 * 24 * 3600)
        pipe.execute()

    def add_iteration_progress(self, project_id: int, version: str, scored: int, seconds: float) -> tuple[int, int]:
        """Counters a scoring chunk adds to; returns (tasks scored so far, chunks done)."""
        key = self._iter_key(project_id, version)
        pipe = self.r.pipeline()
        pipe.hincrby(key, "scored", int(scored))
        pipe.hincrbyfloat(key, "inference_seconds", float(seconds))
        pipe.hincrby(key, "chunks_done", 1)
        pipe.hincrby(self.key(project_id), "model_scored_total", int(scored))
        scored_total, _, chunks_done, _ = pipe.execute()
        return int(scored_total), int(chunks_done)

    def iteration_info(self, project_id: int, version: str) -> dict[str, Any]:
        h = self.r.hgetall(self._iter_key(project_id, version))
        if not h:
            raise KeyError(f"no iteration in progress for project {project_id} version {version}")
        info: dict[str, Any] = dict(h)
        info["pool"] = json.loads(h.get("pool", "[]"))
        return info

    def set_iteration_fields(self, project_id: int, version: str, **values: Any) -> None:
        self.r.hset(self._iter_key(project_id, version), mapping={k: _text(v) for k, v in values.items()})

    def publish_version(self, project_id: int, version: str, iteration: int, record: Mapping[str, Any]) -> None:
        """Make `version` the one /setup and /predict serve, in one transaction; drops score
        hashes older than the previous version (a /predict that read the old version a moment
        ago still finds its entries)."""
        pkey = self.key(project_id)
        previous = self.r.hget(pkey, "version") or UNTRAINED
        keep = {version, previous}
        stale = [k for k in self.r.scan_iter(match=self._pred_key(project_id, "*"), count=1000)
                 if k.rsplit(":pred:", 1)[-1] not in keep]
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(pkey, mapping={"version": version, "iteration": int(iteration), "published_at": time.time()})
        pipe.rpush(self.key(project_id, "versions"), version)
        pipe.rpush(self.key(project_id, "iterations"), json.dumps(dict(record), default=_json_default))
        pipe.ltrim(self.key(project_id, "iterations"), -MAX_ITERATION_RECORDS, -1)
        pipe.delete(self._iter_key(project_id, version))
        for k in stale:
            pipe.delete(k)
        pipe.execute()

    def discard_iteration(self, project_id: int, version: str) -> None:
        """Drop the scores and counters of an iteration that failed (never published)."""
        if version and version != self.current_version(project_id):
            self.r.delete(self._pred_key(project_id, version), self._iter_key(project_id, version))

    def iterations(self, project_id: int, limit: int = 50) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.key(project_id, "iterations"), -limit, -1)]

    def last_iteration(self, project_id: int) -> dict[str, Any] | None:
        raw = self.r.lindex(self.key(project_id, "iterations"), -1)
        return json.loads(raw) if raw else None


def _text(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return value
    if value is None:
        return ""
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
