"""Prometheus metrics kept in Redis, so every gunicorn worker and RQ worker adds to the same
counters and ``GET /metrics`` from any process shows the whole backend.

Keys: ``P:metrics:http`` (requests by endpoint|method|status), ``P:metrics:http_seconds``
(latency histogram: per-bucket counts, sum, count per endpoint), ``P:metrics:jobs`` (job
outcomes). Project gauges (pool size, iteration, last iteration timings, last error) are read from
the project state at scrape time.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

if TYPE_CHECKING:  # avoid importing RQ / the store at module import
    from rq import Queue

    from backend.service.store import ProjectStore

log = logging.getLogger(__name__)

BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_WARN_EVERY = 60.0


class Metrics:
    """Write side (cheap, one pipelined round trip per request) and the scrape-time renderer."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix
        self._last_warning = 0.0

    def _key(self, name: str) -> str:
        return f"{self.prefix}:metrics:{name}"

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY:
            self._last_warning = now
            log.warning("metrics not recorded (Redis unavailable): %s", exc)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count a request and its latency; never fails the request it measures."""
        bucket = next((b for b in BUCKETS if seconds <= b), math.inf)
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.hincrby(self._key("http"), f"{endpoint}|{method}|{status}", 1)
            hist = self._key("http_seconds")
            pipe.hincrby(hist, f"{endpoint}|{bucket}", 1)
            pipe.hincrby(hist, f"{endpoint}|count", 1)
            pipe.hincrbyfloat(hist, f"{endpoint}|sum", float(seconds))
            pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            self._warn(exc)

    def count_job(self, kind: str, outcome: str) -> None:
        try:
            self.r.hincrby(self._key("jobs"), f"{kind}|{outcome}", 1)
        except (redis.exceptions.RedisError, OSError) as exc:
            self._warn(exc)

    # ------------------------------------------------------------------ scrape
    def counts(self, name: str) -> dict[str, float]:
        """One metrics hash (``http``, ``http_seconds``, ``jobs``): field -> value."""
        return {_decode(field): float(value) for field, value in self.r.hgetall(self._key(name)).items()}

    def render(self, store: ProjectStore, queues: Sequence[Queue] = ()) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self, store, queues))
        return generate_latest(registry)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Collector:
    def __init__(self, metrics: Metrics, store: ProjectStore, queues: Sequence[Queue]) -> None:
        self.m = metrics
        self.store = store
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        yield from self._http()
        jobs = CounterMetricFamily("feasible_al_jobs", "RQ jobs by kind and outcome", labels=["job", "outcome"])
        for field, value in self.m.counts("jobs").items():
            kind, _, outcome = field.partition("|")
            jobs.add_metric([kind, outcome], value)
        yield jobs
        queue_len = GaugeMetricFamily("feasible_al_queue_length", "jobs waiting per RQ queue", labels=["queue"])
        for q in self.queues:
            queue_len.add_metric([q.name], float(q.count))
        yield queue_len
        yield from self._projects()

    def _http(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "feasible_al_http_requests", "HTTP requests by endpoint, method and status",
            labels=["endpoint", "method", "status"],
        )
        for field, value in self.m.counts("http").items():
            endpoint, method, status = field.split("|", 2)
            requests.add_metric([endpoint, method, status], value)
        yield requests
        per_endpoint: dict[str, dict[str, float]] = {}
        for field, value in self.m.counts("http_seconds").items():
            endpoint, _, part = field.rpartition("|")
            per_endpoint.setdefault(endpoint, {})[part] = value
        latency = HistogramMetricFamily(
            "feasible_al_http_request_seconds", "HTTP request latency by endpoint", labels=["endpoint"]
        )
        for endpoint, parts in sorted(per_endpoint.items()):
            cumulative, buckets = 0.0, []
            for bound in BUCKETS:
                cumulative += parts.get(str(bound), 0.0)
                buckets.append((str(bound), cumulative))
            buckets.append(("+Inf", parts.get("count", cumulative + parts.get("inf", 0.0))))
            latency.add_metric([endpoint], buckets, parts.get("sum", 0.0))
        yield latency

    def _projects(self) -> Iterator[Metric]:
        labels = ["project"]
        pool = GaugeMetricFamily("feasible_al_pool_size", "cached unlabeled pool size", labels=labels)
        iteration = GaugeMetricFamily("feasible_al_iteration", "published active-learning iteration", labels=labels)
        running = GaugeMetricFamily("feasible_al_training_running", "1 while a training pipeline runs", labels=labels)
        queued = GaugeMetricFamily("feasible_al_training_queued", "1 while a training job waits", labels=labels)
        scored_total = CounterMetricFamily(
            "feasible_al_model_scored_tasks", "tasks the acquisition model ran on (all paths)", labels=labels
        )
        seconds = GaugeMetricFamily(
            "feasible_al_last_iteration_seconds", "phases of the last finished iteration",
            labels=["project", "phase"],
        )
        last_scored = GaugeMetricFamily(
            "feasible_al_last_iteration_scored_tasks", "pool tasks the model re-scored in the last iteration",
            labels=labels,
        )
        error = GaugeMetricFamily(
            "feasible_al_last_error_timestamp_seconds", "time of the last failed training pipeline",
            labels=["project", "job", "message"],
        )
        for pid in self.store.project_ids():
            state = self.store.get_project(pid)
            if state is None:
                continue
            p = str(pid)
            pool.add_metric([p], float(self.store.pool_size(pid)))
            iteration.add_metric([p], float(state.iteration))
            running.add_metric([p], 1.0 if state.running_job else 0.0)
            queued.add_metric([p], 1.0 if state.queued_job else 0.0)
            scored_total.add_metric([p], float(state.model_scored_total))
            record = self.store.last_iteration(pid)
            if record:
                for phase, value in record.get("seconds", {}).items():
                    seconds.add_metric([p, phase], float(value))
                last_scored.add_metric([p], float(record.get("scored_by_model", 0)))
            if state.last_error:
                error.add_metric([p, state.last_error_job or "", state.last_error[:300]], state.last_error_at or 0.0)
        yield from (pool, iteration, running, queued, scored_total, seconds, last_scored, error)
