"""The RQ worker process: ``feasible-al worker`` runs `run_worker` on the backend's queues.

It outlives Redis outages: when Redis drops (or freezes) RQ's work loop quits; `run_worker` then
waits for Redis with backoff, gives up the job the outage interrupted (recorded as failed, or
retried for a scoring chunk) and starts a fresh loop. It exits non-zero only for what a restart
cannot fix (Redis refusing the credentials, a failure outside Redis).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import SimpleWorker, Worker

from backend.engine.device import quiet_transformers
from backend.service.jobs.janitor import Heartbeat, declare_lost, reap_dead_jobs
from backend.service.runtime import QUEUE_KINDS, JobContext, set_context
from backend.service.settings import Settings
from backend.service.store import REDIS_ERRORS

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class WorkerStoppedError(RuntimeError):
    """The work loop stopped on an error a restart cannot fix; the message says which."""


class _Resilient:
    """Mixin for RQ's worker classes: short heartbeats while a job runs (`Heartbeat`), the janitor
    in RQ's maintenance, and a note of the Redis error (and the job) that ended the work loop."""

    heartbeat_ttl: int = 30
    watch: Heartbeat | None = None
    lost_redis: BaseException | None = None
    interrupted_job: str | None = None

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl

    def prepare_execution(self, job: Any) -> Any:
        execution = super().prepare_execution(job)  # type: ignore[misc]
        if self.watch is not None:
            self.watch.running = (job, execution)
        return execution

    def execute_job(self, job: Any, queue: Any) -> None:
        try:
            self._noting(super().execute_job, job, queue)  # type: ignore[misc]
        except REDIS_ERRORS:
            self.interrupted_job = job.id
            raise
        finally:
            if self.watch is not None:
                self.watch.running = None

    def clean_registries(self) -> None:
        """RQ's maintenance: expired jobs go through the janitor (its lock, its messages) first.
        RQ's own cleanup after it reaps what is still expired without the janitor's second sighting;
        it runs when a worker starts and then every `maintenance_interval` (at least 60 s)."""
        if self.watch is not None:
            reap_dead_jobs(self.watch.ctx)
        super().clean_registries()  # type: ignore[misc]

    def check_for_suspension(self, burst: bool) -> None:
        self._noting(super().check_for_suspension, burst)  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        self._noting(super().run_maintenance_tasks)  # type: ignore[misc]

    def _noting(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except REDIS_ERRORS as exc:
            self.lost_redis = exc
            raise


class ResilientSimpleWorker(_Resilient, SimpleWorker):
    """Jobs in the worker process (the default)."""


class ResilientForkWorker(_Resilient, Worker):
    """A forked child per job (``--fork``)."""


ResilientWorker = ResilientSimpleWorker | ResilientForkWorker


def _make_worker(ctx: JobContext, kinds: tuple[str, ...], fork: bool, name: str) -> ResilientWorker:
    cls: type[ResilientWorker] = ResilientForkWorker if fork else ResilientSimpleWorker
    worker = cls(ctx.queues.all(kinds), connection=ctx.queues.connection, name=name,
                 maintenance_interval=max(60, int(ctx.settings.janitor_interval)))
    worker.heartbeat_ttl = ctx.settings.heartbeat_ttl
    return worker


def wait_for_redis(ctx: JobContext, *, first_delay: float = 1.0) -> None:
    """Block until Redis answers, retrying with exponential backoff (capped at `MAX_BACKOFF`).
    Wrong credentials are not an outage: they raise `WorkerStoppedError`."""
    delay = first_delay
    while True:
        try:
            ctx.queues.connection.ping()
            return
        except redis.exceptions.AuthenticationError as exc:
            raise WorkerStoppedError(f"Redis at {ctx.store.where} refused the credentials: {exc}") from None
        except REDIS_ERRORS as exc:
            log.error("Redis at %s unavailable (%s); retrying in %.0f s", ctx.store.where, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


def _work_once(worker: ResilientWorker, ctx: JobContext, burst: bool) -> bool | None:
    """One RQ work loop; the jobs-done flag when it ended as asked, None when Redis was lost."""
    worker.watch = Heartbeat(worker, ctx)
    try:
        with worker.watch:
            worked = worker.work(burst=burst, logging_level="INFO")
    except REDIS_ERRORS as exc:  # in RQ's start-up or teardown (register_death)
        worker.lost_redis = worker.lost_redis or exc
        return None
    if getattr(worker, "_shutdown_requested_date", None) is not None or (burst and worker.lost_redis is None):
        return worked
    if worker.lost_redis is None:
        raise WorkerStoppedError("the worker loop stopped on an unexpected error (see the log above)")
    return None


def run_worker(
    settings: Settings, kinds: tuple[str, ...] = QUEUE_KINDS, *, burst: bool = False, fork: bool = False,
    name: str | None = None,
) -> bool:
    """Run an RQ worker on the backend's queues until asked to stop, through Redis outages. By
    default jobs run in the worker process itself (no fork per job): loaded checkpoints stay
    cached between chunk jobs and a CUDA context survives, which a fork would break.
    ``fork=True`` isolates each job in a child process."""
    quiet_transformers()
    ctx = JobContext.from_settings(settings)
    set_context(ctx)
    base = name or f"feasible-al-{socket.gethostname()}-{os.getpid()}"
    restarts = 0
    while True:
        wait_for_redis(ctx)
        worker = _make_worker(ctx, kinds, fork, base if restarts == 0 else f"{base}-r{restarts}")
        worked = _work_once(worker, ctx, burst)
        if worked is not None:
            return worked
        restarts += 1
        log.error("worker %s lost Redis (%s: %s); reconnecting", worker.name,
                  type(worker.lost_redis).__name__, worker.lost_redis)
        wait_for_redis(ctx)
        _give_up_interrupted(ctx, worker)


def _give_up_interrupted(ctx: JobContext, worker: ResilientWorker) -> None:
    """Record the job the outage interrupted (failed, or queued again when it may retry)."""
    job_id = worker.interrupted_job
    try:
        if job_id is not None:
            reason = (f"Redis connection lost while worker {worker.name} ran it "
                      f"({type(worker.lost_redis).__name__}: {worker.lost_redis})")
            if declare_lost(ctx, job_id, reason):
                log.warning("job %s given up after the Redis outage", job_id)
        reap_dead_jobs(ctx)
    except REDIS_ERRORS as exc:  # Redis dropped again: the janitor will see the job later
        log.warning("could not record the interrupted job %s yet: %s", job_id, exc)
