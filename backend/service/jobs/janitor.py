"""Dead-job detection: a job whose worker is gone (``kill -9``, out of memory, host lost, Redis
lost mid-job) is declared dead within ``HEARTBEAT_TTL`` + ``JANITOR_INTERVAL`` seconds and one
heartbeat period (`confirmation_delay`), not at ``JOB_TIMEOUT``.

A running job's entry in RQ's `StartedJobRegistry` expires ``HEARTBEAT_TTL`` seconds after its
worker's last heartbeat (`Heartbeat`, a thread of every worker, renews it). `reap_dead_jobs` hands
the ones it saw expired on two passes `confirmation_delay` apart (a Redis that froze past the TTL
makes every live heartbeat read expired until the workers renew them) to RQ's own cleanup, which
runs the job's failure callback with `AbandonedJobError` and then retries it (scoring chunks) or
marks it failed and releases its dependents; it then releases project flags whose job is no
longer alive. Every worker runs it every ``JANITOR_INTERVAL`` seconds, and `request_training` and
``GET /projects/<id>`` before they read the state, under one lock so an expired job is handled once.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from backend.service.jobs.common import LIVE, META_LOST, job_status, rq_failure_message
from backend.service.runtime import JobContext
from backend.service.settings import Settings
from backend.service.store import compare_and_delete

if TYPE_CHECKING:
    from rq.executions import Execution
    from rq.worker import BaseWorker

__all__ = ["META_LOST", "Heartbeat", "declare_lost", "reap_dead_jobs", "repair_stale_flags"]

log = logging.getLogger(__name__)


def _registries(ctx: JobContext) -> list[StartedJobRegistry]:
    # A timer, not SIGALRM: the janitor runs in threads (the heartbeat, gunicorn's request threads).
    return [StartedJobRegistry(q.name, connection=ctx.queues.connection, death_penalty_class=TimerDeathPenalty)
            for q in ctx.queues.all()]


def reap_dead_jobs(ctx: JobContext, projects: Iterable[int] | None = None) -> int:
    """Declare dead every running job whose heartbeat expired, then release the stale flags of
    `projects` (default: all). Returns how many jobs were declared dead (0 when another process
    holds the janitor lock)."""
    conn = ctx.queues.connection
    key, token = ctx.store.janitor_lock_key(), uuid.uuid4().hex
    if not conn.set(key, token, nx=True, px=int(max(ctx.settings.janitor_interval, 5.0) * 3000)):
        return 0
    try:
        dead = 0
        confirmed = _confirmed_expiries(ctx)
        for registry in _registries(ctx):
            cutoff = confirmed.get(registry.key)
            expired = registry.get_expired_job_ids(cutoff) if cutoff is not None else []
            if expired:
                log.warning("declaring dead (no heartbeat for %d s): %s", ctx.settings.heartbeat_ttl, expired)
                registry.cleanup(cutoff)
                dead += len(expired)
        for project_id in ctx.store.project_ids() if projects is None else projects:
            repair_stale_flags(ctx, project_id)
        return dead
    finally:
        compare_and_delete(conn, key, token)


def confirmation_delay(settings: Settings) -> float:
    """Seconds a heartbeat must stay expired after the janitor first saw it before the job is declared
    dead: one heartbeat period and a second. After Redis froze (or the network dropped) every heartbeat
    reads expired the moment it answers again; a live worker renews its heartbeat within one period."""
    return heartbeat_period(settings) + 1.0


def heartbeat_period(settings: Settings) -> float:
    """How often `Heartbeat` renews a worker's heartbeat and runs the janitor."""
    return max(1.0, min(settings.heartbeat_ttl / 3, settings.janitor_interval))


def _confirmed_expiries(ctx: JobContext) -> dict[str, float]:
    """Per started registry key, the cutoff score up to which every expired entry is confirmed dead:
    seen expired on an earlier pass at least `confirmation_delay` ago, or expired on purpose
    (`declare_lost` sets score 0). Records first sightings and forgets entries renewed or gone."""
    conn = ctx.queues.connection
    sightings_key = ctx.store.janitor_sightings_key()
    seconds, micros = conn.time()
    now = float(seconds) + float(micros) / 1e6  # Redis's clock: the one every process's janitor shares
    seen = {member: float(at) for member, at in conn.hgetall(sightings_key).items()}
    delay = confirmation_delay(ctx.settings)
    cutoffs: dict[str, float] = {}
    expired_now: set[bytes] = set()
    first_seen: dict[bytes, float] = {}
    for registry in _registries(ctx):
        cutoff, waiting = None, False
        entries: list[tuple[bytes, float]] = conn.zrangebyscore(registry.key, 0, now, withscores=True)  # type: ignore[assignment]
        for member, score in entries:
            expired_now.add(member)
            if score > 0 and member not in seen:
                first_seen[member] = now
            # in score order: after the first entry still to confirm, the cutoff stays put
            waiting = waiting or (score > 0 and now - seen.get(member, now) < delay)
            if not waiting:
                cutoff = score
        if cutoff is not None:
            cutoffs[registry.key] = cutoff
    forgotten = [member for member in seen if member not in expired_now]
    if first_seen:
        conn.hset(sightings_key, mapping=first_seen)  # type: ignore[arg-type]
    if forgotten:
        conn.hdel(sightings_key, *forgotten)
    return cutoffs


def repair_stale_flags(ctx: JobContext, project_id: int) -> None:
    """Clear training flags whose job is gone (Redis flushed, job expired, worker killed before
    its failure callback ran), so a dead pipeline cannot block training forever."""
    state = ctx.store.get_project(project_id)
    if state is None:
        return
    if state.queued_job and job_status(ctx, state.queued_job) not in LIVE:
        ctx.store.clear_job_field(project_id, "queued_job", state.queued_job)
    if state.running_job:
        stage = state.stage_job or state.running_job
        if _between_stages(ctx, stage):
            return
        if job_status(ctx, stage) not in LIVE and ctx.store.end_pipeline(project_id, state.running_job) is not None:
            job = ctx.queues.fetch(stage)
            why = f"job {stage} failed: {rq_failure_message(job)}" if job is not None else f"job {stage} is gone"
            message = f"training pipeline {state.running_job} stopped without finishing ({why})"
            ctx.store.update_status(state.running_job, status="failed", error=message)
            ctx.store.record_error(project_id, state.running_job, message)


def _between_stages(ctx: JobContext, stage: str) -> bool:
    """The pipeline's current stage finished less than ``HEARTBEAT_TTL`` (at least 30 s) ago: its
    next stage is about to take over (``stage_job`` moves when it starts). Since
    ``GET /projects/<id>`` runs the janitor, that window was seen often enough to declare live
    pipelines dead."""
    job = ctx.queues.fetch(stage)
    if job is None or job.get_status(refresh=False) != JobStatus.FINISHED or job.ended_at is None:
        return False
    ended = job.ended_at if job.ended_at.tzinfo else job.ended_at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - ended).total_seconds() < max(30.0, float(ctx.settings.heartbeat_ttl))


def declare_lost(ctx: JobContext, job_id: str, reason: str) -> bool:
    """A worker that survived an outage gives up the job it was running: the reason goes into the
    job's meta (the failure callback shows it), its registry entry expires now, the janitor runs."""
    job = ctx.queues.fetch(job_id)
    if job is None or job.get_status(refresh=True) != JobStatus.STARTED:
        return False  # finished, failed, or lost with an empty Redis
    job.meta[META_LOST] = reason
    job.save_meta()  # type: ignore[no-untyped-call]  # rq leaves save_meta unannotated
    for registry in _registries(ctx):
        # the queues' connection does not decode: members are bytes
        members = [m for m in registry.connection.zrange(registry.key, 0, -1)
                   if isinstance(m, bytes) and m.decode().split(":", 1)[0] == job_id]
        if members:
            registry.connection.zadd(registry.key, {m: 0 for m in members}, xx=True)
    reap_dead_jobs(ctx)
    return True


class Heartbeat:
    """A worker's background thread: renews the running job's heartbeat (or, idle, the worker's own)
    every third of ``HEARTBEAT_TTL`` and runs `reap_dead_jobs` every ``JANITOR_INTERVAL`` seconds. Redis errors
    are logged and retried on the next beat (the worker loop handles the outage itself)."""

    def __init__(self, worker: BaseWorker, ctx: JobContext) -> None:
        self.worker, self.ctx = worker, ctx
        self.running: tuple[Job, Execution] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feasible-al-heartbeat", daemon=True)
        self._last_reap = 0.0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        settings = self.ctx.settings
        every = heartbeat_period(settings)
        while not self._stop.wait(every):
            try:
                running = self.running
                if running is not None:
                    self.worker.maintain_heartbeats(*running)
                else:  # idle too: `workers.workers_view` counts a worker alive while this stays fresh
                    self.worker.heartbeat()
                if time.monotonic() - self._last_reap >= settings.janitor_interval:
                    self._last_reap = time.monotonic()
                    reap_dead_jobs(self.ctx)
            except redis.exceptions.RedisError as exc:
                log.warning("heartbeat: Redis unavailable (%s); retrying in %.0f s", exc, every)
            except Exception:  # noqa: BLE001 - the thread must outlive one bad beat
                log.exception("heartbeat: unexpected error")
