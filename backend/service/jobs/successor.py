"""The PLASM successor-building RQ job (queue ``<KEY_PREFIX>-successor``) and its HTTP helpers.

``POST /successor`` -> `request_successor` validates the options, takes the project's successor
lock (one build per project at a time; a second request gets the running job's id) and enqueues
`build_successor_job`. The job fetches the gold labels and the unlabeled pool from Label Studio,
converts them with the project's stored label config and runs `backend.engine.plasm.pipeline.build_and_export`
into ``MODEL_DIR/<project>/successors/<job id>/`` (+ ``<job id>.tar.gz`` beside it). Its meta holds
``stage``, ``progress`` (0..1 of the stage), ``stage_done``/``stage_total``, and at the end
``metrics`` (`PlasmResult.to_dict()`); a failure records ``error``. The engine writes the export
atomically, so a failed or cancelled job leaves none. Cancel with `request_cancel` (a Redis flag
the engine's cancel check reads) or RQ's own job cancellation.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from rq import Callback, get_current_job
from rq.job import Job, JobStatus

from backend.engine.plasm.pipeline import FILTERS, PlasmCancelled, PlasmOptions, build_and_export
from backend.engine.models.transformer import TrainingConfig, quiet_transformers
from backend.labeling import parse_label_config, tasks_to_examples, unlabeled_examples

log = logging.getLogger(__name__)

RESULT_TTL = 7 * 24 * 3600
META_EVERY_S = 1.0
JOB_ID = re.compile(r"^successor-(\d+)-[0-9a-f]{12}$")
_ALIVE = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.CREATED}


class SuccessorOptionsError(ValueError):
    """The options of ``POST /successor`` are invalid (answered 400)."""


class SuccessorRunningError(RuntimeError):
    """A successor build already runs (or waits) for this project (answered 409)."""

    def __init__(self, project_id: int, job_id: str) -> None:
        super().__init__(f"a successor build for project {project_id} is already running: job {job_id}")
        self.job_id = job_id


# ---------------------------------------------------------------------------------- options

_TRAINING_KEYS = {"epochs": int, "learning_rate": float, "batch_size": int}


def _number(name: str, value: Any, kind: type, minimum: float, *, exclusive: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise SuccessorOptionsError(f"'{name}' must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        raise SuccessorOptionsError(f"'{name}' must be {'>' if exclusive else '>='} {minimum}, got {value!r}")
    return kind(value)


def parse_options(settings: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The job's options (plain JSON) from the request body, defaults filled; raises
    `SuccessorOptionsError` saying what is wrong. Unknown keys are refused (a typo would
    otherwise silently fall back to a default)."""
    allowed = {"project", "teacher", "successor", "filter", "max_pool", "dev_share", "tracin_checkpoints",
               "uncertainty_fraction", "compare_gold_only", "seed", "teacher_training", "successor_training",
               *_TRAINING_KEYS}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SuccessorOptionsError(f"unknown option(s) {unknown}; accepted: {sorted(allowed - {'project'})}")
    out: dict[str, Any] = {}
    for name, default in (("teacher", settings.teacher_model), ("successor", settings.successor_model)):
        value = body.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise SuccessorOptionsError(f"'{name}' must be a non-empty model name or directory")
        out[name] = value.strip()
    flt = body.get("filter", "both")
    if flt not in FILTERS:
        raise SuccessorOptionsError(f"'filter' must be one of {', '.join(FILTERS)}, got {flt!r}")
    out["filter"] = flt
    if body.get("max_pool") is not None:
        out["max_pool"] = _number("max_pool", body["max_pool"], int, 1)
    if "dev_share" in body:
        out["dev_share"] = _number("dev_share", body["dev_share"], float, 0, exclusive=True)
        if out["dev_share"] >= 1:
            raise SuccessorOptionsError("'dev_share' must be < 1")
    if "uncertainty_fraction" in body:
        out["uncertainty_fraction"] = _number("uncertainty_fraction", body["uncertainty_fraction"], float, 0)
        if out["uncertainty_fraction"] > 1:
            raise SuccessorOptionsError("'uncertainty_fraction' must be <= 1")
    if "tracin_checkpoints" in body:
        out["tracin_checkpoints"] = _number("tracin_checkpoints", body["tracin_checkpoints"], int, 1)
    if "seed" in body:
        out["seed"] = _number("seed", body["seed"], int, 0)
    if "compare_gold_only" in body:
        if not isinstance(body["compare_gold_only"], bool):
            raise SuccessorOptionsError("'compare_gold_only' must be true or false")
        out["compare_gold_only"] = body["compare_gold_only"]
    shared = {k: _number(k, body[k], kind, 0, exclusive=True) for k, kind in _TRAINING_KEYS.items() if k in body}
    for part in ("teacher_training", "successor_training"):
        own = body.get(part, {})
        if not isinstance(own, dict):
            raise SuccessorOptionsError(f"'{part}' must be an object with {sorted(_TRAINING_KEYS)}")
        bad = sorted(set(own) - set(_TRAINING_KEYS))
        if bad:
            raise SuccessorOptionsError(f"'{part}' accepts only {sorted(_TRAINING_KEYS)}, got {bad}")
        out[part] = {**shared, **{k: _number(f"{part}.{k}", v, _TRAINING_KEYS[k], 0, exclusive=True)
                                  for k, v in own.items()}}
    try:
        plasm_options(settings, out)
    except (ValueError, TypeError) as exc:
        raise SuccessorOptionsError(str(exc)) from None
    return out


def plasm_options(settings: Any, options: dict[str, Any]) -> PlasmOptions:
    base = settings.training_config()
    kw = {k: v for k, v in options.items() if k not in ("teacher_training", "successor_training")}

    def training(part: str) -> TrainingConfig:
        over = options.get(part) or {}
        return replace(base, **over)

    return PlasmOptions(**kw, teacher_training=training("teacher_training"),
                        successor_training=training("successor_training"))


# ---------------------------------------------------------------------------------- paths, keys


def successors_dir(model_dir: Path, project_id: int) -> Path:
    return Path(model_dir) / str(int(project_id)) / "successors"


def export_paths(model_dir: Path, job_id: str) -> tuple[Path, Path] | None:
    """The export directory and archive of a successor job id, or None for anything that is not
    a well-formed successor job id (so no user text ever becomes a path)."""
    m = JOB_ID.match(job_id or "")
    if m is None:
        return None
    base = successors_dir(model_dir, int(m.group(1)))
    return base / job_id, base / f"{job_id}.tar.gz"


def _lock_key(prefix: str, project_id: int) -> str:
    return f"{prefix}:successor-lock:{int(project_id)}"


def _cancel_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:successor-cancel:{job_id}"


def _job_status(ctx: Any, job_id: str) -> JobStatus | None:
    job = ctx.queues.fetch(job_id)
    if job is None:
        return None
    try:
        return job.get_status(refresh=False)
    except Exception:  # a job hash without a status: gone
        return None


# ---------------------------------------------------------------------------------- requests


def request_successor(ctx: Any, project_id: int, options: dict[str, Any]) -> str:
    """Take the project's lock and enqueue the build; raises `SuccessorRunningError`."""
    settings = ctx.settings
    r: redis.Redis = ctx.store.r
    key = _lock_key(settings.key_prefix, project_id)
    job_id = f"successor-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    ttl = int(settings.job_timeout) + 3600
    for _ in range(3):
        if r.set(key, job_id, nx=True, ex=ttl):
            break
        holder = r.get(key)
        if holder is None:
            continue
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if _job_status(ctx, holder) in _ALIVE:
            raise SuccessorRunningError(project_id, holder)
        # the holder died without releasing (worker killed, Redis job expired): take over
        with r.pipeline() as pipe:
            try:
                pipe.watch(key)
                current = pipe.get(key)
                current = current.decode() if isinstance(current, bytes) else current
                if current != holder:
                    continue
                pipe.multi()
                pipe.set(key, job_id, ex=ttl)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    else:
        holder = r.get(key)
        raise SuccessorRunningError(project_id, holder.decode() if isinstance(holder, bytes) else str(holder))
    try:
        ctx.queues.successor.enqueue_call(
            build_successor_job, args=(int(project_id), options), job_id=job_id, timeout=settings.job_timeout,
            result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
            meta={"project": int(project_id), "kind": "successor", "stage": "queued", "progress": 0.0,
                  "options": options},
            on_failure=Callback(on_successor_failure),
            description=f"build PLASM successor, project {project_id}",
        )
    except Exception:
        _release(ctx, project_id, job_id)
        raise
    return job_id


def request_cancel(ctx: Any, job_id: str) -> bool:
    """Ask a running build to stop at its next check (a queued one is cancelled by RQ)."""
    job = ctx.queues.fetch(job_id)
    if job is None or export_paths(ctx.settings.model_dir, job_id) is None:
        return False
    ctx.store.r.set(_cancel_key(ctx.settings.key_prefix, job_id), "1", ex=RESULT_TTL)
    if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        job.cancel()
        _set_meta(job, stage="cancelled", error="cancelled before it started")
        _release(ctx, int(job.meta.get("project", -1)), job_id)
    return True


def _release(ctx: Any, project_id: int, job_id: str) -> None:
    """Drop the project's lock if this job still holds it."""
    r = ctx.store.r
    key = _lock_key(ctx.settings.key_prefix, project_id)
    holder = r.get(key)
    holder = holder.decode() if isinstance(holder, bytes) else holder
    if holder == job_id:
        r.delete(key)


def _set_meta(job: Job | None, **values: Any) -> None:
    if job is not None:
        job.get_meta(refresh=True)
        job.meta.update(values)
        job.save_meta()


# ---------------------------------------------------------------------------------- the job


def build_successor_job(project_id: int, options: dict[str, Any]) -> dict[str, Any]:
    """Fetch gold + pool from Label Studio, run PLASM, export; returns the metrics."""
    from backend.service.jobs.iteration import context

    ctx = context()
    settings, store = ctx.settings, ctx.store
    quiet_transformers()
    job = get_current_job()
    job_id = job.id if job is not None else f"successor-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    cancel_key = _cancel_key(settings.key_prefix, job_id)
    try:
        _set_meta(job, stage="fetch", progress=0.0)
        state = store.get_project(project_id)
        if state is None or not state.label_config:
            raise LookupError(f"unknown project {project_id}: Label Studio has not connected it to this backend")
        config = parse_label_config(state.label_config, state.control_name or None)
        labeled = ctx.ls.labeled_tasks(project_id)
        gold = tasks_to_examples(labeled, config)
        labeled_ids = {int(t["id"]) for t in labeled if isinstance(t, dict) and "id" in t}
        pool_tasks = [t for t in ctx.ls.unlabeled_tasks(project_id) if int(t["id"]) not in labeled_ids]
        pool = unlabeled_examples(pool_tasks, config)
        _set_meta(job, progress=1.0, sizes={"gold": len(gold.examples), "pool": len(pool.examples),
                                            "gold_skipped": gold.skipped})
        last = [0.0, ""]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if stage != last[1] or done >= total or now - last[0] >= META_EVERY_S:
                last[0], last[1] = now, stage
                _set_meta(job, stage=stage, progress=round(done / max(total, 1), 4),
                          stage_done=int(done), stage_total=int(total))

        def cancel_check() -> bool:
            if store.r.exists(cancel_key):
                return True
            if job is not None:
                try:
                    return job.get_status(refresh=True) == JobStatus.CANCELED
                except Exception:
                    return False
            return False

        directory, _ = export_paths(settings.model_dir, job_id) or (
            successors_dir(settings.model_dir, project_id) / job_id, None)
        result, paths = build_and_export(
            gold.examples, pool.examples, config.schema, plasm_options(settings, options), directory,
            progress=progress, cancel_check=cancel_check, archive=True,
            extra={"project": int(project_id), "job_id": job_id},
        )
        metrics = result.to_dict()
        _set_meta(job, stage="done", progress=1.0, metrics=metrics,
                  export={"directory": str(paths.directory), "archive": str(paths.archive)})
        log.info("project %s: successor %s built (%s kept)", project_id, job_id, metrics["chosen"])
        return {"metrics": metrics, "archive": str(paths.archive)}
    except PlasmCancelled as exc:
        _set_meta(job, stage="cancelled", error=str(exc))
        raise
    finally:
        store.r.delete(cancel_key)
        _release(ctx, project_id, job_id)


def on_successor_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """Record a clear error in the job's meta and release the project's lock."""
    from backend.service.jobs.iteration import context

    stage = job.meta.get("stage") or "start"
    name = getattr(exc_type, "__name__", str(exc_type))
    message = f"successor build failed at stage '{stage}': {name}: {exc_value}"[:2000]
    if stage == "cancelled":
        message = str(exc_value)[:2000]
    log.error("successor job %s: %s", job.id, message)
    _set_meta(job, error=message)
    try:
        _release(context(), int(job.meta.get("project", -1)), job.id)
    except Exception as exc:  # noqa: BLE001 - the lock expires anyway
        log.warning("successor job %s: could not release the project lock: %s", job.id, exc)
