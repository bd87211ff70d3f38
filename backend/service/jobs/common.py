"""RQ plumbing shared by the training pipeline and the successor job: enqueueing with one result
TTL, the RQ meta keys, the "is this job still alive" check, throttled progress, and the
``GET /jobs/<id>`` view (a read of the job's `PipelineStatus` plus RQ's own status)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Callback, Queue, Retry
from rq.exceptions import AbandonedJobError
from rq.job import Dependency, Job, JobStatus
from rq.types import FunctionReferenceType, JobDependencyType

from backend.service.records import RESULT_TTL, PipelineStatus
from backend.service.runtime import JobContext

__all__ = ["RESULT_TTL", "LIVE", "META_PROJECT", "META_PIPELINE", "META_KIND", "enqueue", "job_status",
           "Throttle", "describe_job",
           "failure_reason", "rq_failure_message", "META_LOST"]

# The only keys RQ meta holds (set once at enqueue; everything that changes is the PipelineStatus).
META_PROJECT, META_PIPELINE, META_KIND = "project", "pipeline", "kind"
# Set by a worker that gives up a job it was running (why: "Redis connection lost ..."), read on failure.
META_LOST = "lost"
# A job in one of these states may still run: its project flags / lock must not be taken over. RQ 3
# moves a dependent whose dependencies finished through READY_TO_ENQUEUE before QUEUED (and may hold a
# job RATE_LIMITED): without them the janitor, which GET /projects/<id> runs, declared a live pipeline
# dead in the instant its finisher waited there (the NER demo failed so once).
LIVE = frozenset({JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.CREATED,
                  *(getattr(JobStatus, name) for name in ("READY_TO_ENQUEUE", "RATE_LIMITED")
                    if hasattr(JobStatus, name))})


def enqueue(
    queue: Queue, func: FunctionReferenceType, args: tuple[Any, ...], *, meta: dict[str, Any], timeout: int,
    on_failure: Callable[..., Any], description: str, job_id: str | None = None,
    depends_on: JobDependencyType | None = None,
    retries: int = 0,
) -> Job:
    """Enqueue with the backend's result TTL and failure callback; `retries` reruns (a job whose
    worker died or lost Redis runs again on another worker). `func` may be a dotted name: a job
    that completes another module's work is named, so the modules need not import each other."""
    return queue.enqueue_call(
        func, args=args, job_id=job_id, timeout=timeout, result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
        meta=meta, on_failure=Callback(on_failure), description=description, depends_on=depends_on,
        retry=Retry(max=retries) if retries > 0 else None,
    )


def failure_reason(job: Job, exc_type: type, exc_value: BaseException, stage: str, heartbeat_ttl: int) -> str:
    """The failure in plain words: which worker stopped during which stage when it was declared
    dead (RQ's `AbandonedJobError` carries no message), else the exception's type and message."""
    if isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError):
        lost = (job.meta or {}).get(META_LOST)
        if lost:
            return f"stage {stage} was interrupted: {lost}"
        return (f"worker {job.worker_name or '(unknown)'} stopped during stage {stage} (no heartbeat for "
                f"{heartbeat_ttl} s: killed, out of memory, or its machine was lost)")
    name = getattr(exc_type, "__name__", str(exc_type))
    return f"{stage} failed: {name}: {exc_value or '(no message)'}"


def job_status(ctx: JobContext, job_id: str) -> JobStatus | None:
    """RQ's status of a job, or None when it is gone (expired, flushed, a hash without a status)."""
    job = ctx.queues.fetch(job_id)
    if job is None:
        return None
    try:
        return job.get_status(refresh=False)
    except (redis.exceptions.RedisError, ValueError):
        return None


class Throttle:
    """Lets a progress write through at most every `every` seconds, and always when the stage
    changes or the stage is done (so RQ meta / Redis is not written per training step)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._last = 0.0
        self._stage: str | None = None

    def due(self, done: int, total: int, stage: str | None = None) -> bool:
        now = time.monotonic()
        if stage != self._stage or done >= total or now - self._last >= self.every:
            self._last, self._stage = now, stage
            return True
        return False


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def rq_failure_message(job: Job) -> str:
    """The last line of RQ's recorded exception (why a job failed when nothing else says)."""
    result = job.latest_result()
    exc = result.exc_string if result else None
    return (exc or "").strip().splitlines()[-1] if exc else "failed"


def describe_job(ctx: JobContext, job_id: str) -> dict[str, Any] | None:
    """What ``GET /jobs/<id>`` shows: RQ status plus the pipeline's stage, progress and error."""
    job = ctx.queues.fetch(job_id)
    if job is None:
        return None
    meta = job.meta or {}
    rq_status = job.get_status(refresh=False)
    stored = ctx.store.get_status(meta.get(META_PIPELINE) or job.id)
    # before the first stage writes its status, RQ's meta names the project (None if it holds none)
    project = stored.project if stored is not None else meta.get(META_PROJECT)
    status = stored if stored is not None else PipelineStatus(project=-1)
    out: dict[str, Any] = {
        "id": job.id, "function": (job.func_name or "").rsplit(".", 1)[-1],
        "status": str(getattr(rq_status, "value", rq_status)),
        "project": project, "pipeline": status.pipeline, "stage": status.stage,
        "progress": status.progress, "version": status.version,
        "pipeline_status": status.status, "error": status.error,
        "enqueued_at": _iso(job.enqueued_at), "started_at": _iso(job.started_at), "ended_at": _iso(job.ended_at),
    }
    if rq_status == JobStatus.FAILED and not out["error"]:
        out["error"] = rq_failure_message(job)
    if status.stage == "score" and status.kind == "training":
        out["progress"] = status.scoring_progress()
        out["scoring"] = status.scoring_view()
    if status.kind == "successor":
        out["stage_done"], out["stage_total"] = status.stage_done, status.stage_total
        out["metrics"], out["sizes"], out["conversion"] = status.metrics, status.sizes, status.conversion
        out["download"] = f"/successor/{job.id}/download" if status.stage == "done" else None
    if status.iteration:
        out["iteration"] = status.iteration
    if status.ls_pruned:
        out["ls_pruned"] = status.ls_pruned
    if job.is_finished and status.pipeline != job.id:
        out["result"] = job.return_value()
    return out


def after_all(jobs: list[Job]) -> Dependency | None:
    """A dependency on every job in `jobs` (none when empty): the fan-in of a chunked stage, put
    at the front of its queue once the chunks are done."""
    return Dependency(jobs=jobs, enqueue_at_front=True) if jobs else None
