"""The PLASM successor-building RQ job (queue ``<KEY_PREFIX>-successor``) and its HTTP helpers.

``POST /successor`` -> `request_successor` validates the options, takes the project's successor
lock (one build per project at a time; a second request gets the running job's id) and enqueues
`build_successor_job`. The job fetches the gold labels and the unlabeled pool from Label Studio,
converts them with the project's stored label config and runs `backend.engine.plasm.pipeline.build_and_export`
into ``MODEL_DIR/<project>/successors/<job id>/`` (+ ``<job id>.tar.gz`` beside it). Its
`PipelineStatus` holds ``stage``, ``progress`` (0..1 of the stage), ``stage_done``/``stage_total``,
the sizes and conversion report of the data, and at the end ``metrics`` (`PlasmResult.to_dict()`);
a failure records ``error``. The engine writes the export atomically, so a failed or cancelled
job leaves none. Cancel with `request_cancel` (a Redis flag the engine's cancel check reads) or
RQ's own job cancellation.
"""
from __future__ import annotations

import logging
import re
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus

from backend.engine.callbacks import CancelCheck, StageProgress
from backend.engine.device import quiet_transformers
from backend.engine.errors import Cancelled
from backend.engine.models.transformer import TrainingConfig
from backend.engine.plasm.export import build_and_export
from backend.engine.plasm.pipeline import FILTERS, PlasmOptions
from backend.labeling import LabelConfig, parse_label_config, tasks_to_examples, unlabeled_examples
from backend.service.jobs.acquisition_start import acquisition_teacher, successor_start
from backend.service.jobs.common import LIVE, META_KIND, META_PROJECT, Throttle, enqueue, failure_reason, job_status
from backend.service.jobs.stages import log_conversion
from backend.service.records import PipelineStatus
from backend.service.runtime import JobContext, context
from backend.service.settings import Settings

log = logging.getLogger(__name__)

META_EVERY_S = 1.0
JOB_ID = re.compile(r"^successor-(\d+)-[0-9a-f]{12}$")


class SuccessorOptionsError(ValueError):
    """The options of ``POST /successor`` are invalid (answered 400)."""


class SuccessorRunningError(RuntimeError):
    """A successor build already runs (or waits) for this project (answered 409)."""

    def __init__(self, project_id: int, job_id: str) -> None:
        super().__init__(f"a successor build for project {project_id} is already running: job {job_id}")
        self.job_id = job_id


# ---------------------------------------------------------------------------------- options

_TRAINING_KEYS = {"epochs": int, "learning_rate": float, "batch_size": int}
# Largest value an operator-facing request may ask for: beyond these a build runs for days or
# exhausts memory, which no real project needs.
MAXIMUM: dict[str, float] = {"epochs": 100, "learning_rate": 1.0, "batch_size": 1024, "max_pool": 10_000_000,
                             "tracin_checkpoints": 20, "teachers": 10, "seed": 2**32 - 1}


def _number(name: str, value: Any, kind: type, minimum: float, *, exclusive: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        what = "an integer" if kind is int else "a number"
        raise SuccessorOptionsError(f"'{name}' must be {what}, got {value!r:.40}")
    if value != value or value < minimum or (exclusive and value == minimum):
        raise SuccessorOptionsError(f"'{name}' must be {'>' if exclusive else '>='} {minimum}, got {value!r:.40}")
    maximum = MAXIMUM.get(name.rsplit(".", 1)[-1])
    if maximum is not None and value > maximum:
        raise SuccessorOptionsError(f"'{name}' must be <= {maximum:g}, got {value!r:.40}")
    return kind(value)


def allowed_models(settings: Settings) -> set[str]:
    """Model names a request may pick: the configured ones, packaged aliases and classical kinds
    (any directory under MODEL_DIR is allowed too, see `_model_option`)."""
    from backend.engine.models.factory import CLASSICAL_KINDS
    from backend.engine.packaged import PACKAGED_MODELS

    return {settings.teacher_model, settings.successor_model, settings.acquisition_model,
            *PACKAGED_MODELS, *CLASSICAL_KINDS}


def _model_option(settings: Settings, name: str, value: Any) -> str:
    """``value`` when the operator allowed it: a request must not load arbitrary hub models or
    read arbitrary local directories."""
    if not isinstance(value, str) or not value.strip():
        raise SuccessorOptionsError(f"'{name}' must be a non-empty model name or directory")
    model = value.strip()
    if model in allowed_models(settings):
        return model
    try:
        path = Path(model).resolve()
        under_model_dir = path.is_dir() and path.is_relative_to(settings.model_dir.resolve())
    except (OSError, ValueError):
        under_model_dir = False
    if not under_model_dir:
        raise SuccessorOptionsError(
            f"'{name}' {model[:200]!r} is not allowed: use TEACHER_MODEL / SUCCESSOR_MODEL / ACQUISITION_MODEL, "
            "a packaged model, cnn / bilstm-crf, or a directory under MODEL_DIR")
    return model


def parse_options(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    """The job's options (plain JSON) from the request body, defaults filled; raises
    `SuccessorOptionsError` saying what is wrong. Unknown keys are refused (a typo would
    otherwise silently fall back to a default)."""
    allowed = {"project", "teacher", "successor", "filter", "max_pool", "dev_share", "tracin_checkpoints",
               "uncertainty_fraction", "compare_gold_only", "seed", "teachers", "successor_all_gold",
               "acquisition_teacher", "successor_from_acquisition", "teacher_training",
               "successor_training",
               *_TRAINING_KEYS}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SuccessorOptionsError(f"unknown option(s) {unknown}; accepted: {sorted(allowed - {'project'})}")
    out: dict[str, Any] = {}
    for name, default in (("teacher", settings.teacher_model), ("successor", settings.successor_model)):
        out[name] = _model_option(settings, name, body.get(name, default))
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
    if "teachers" in body:
        out["teachers"] = _number("teachers", body["teachers"], int, 1)
    for flag in ("compare_gold_only", "successor_all_gold", "acquisition_teacher", "successor_from_acquisition"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise SuccessorOptionsError(f"'{flag}' must be true or false")
            out[flag] = body[flag]
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


def plasm_options(settings: Settings, options: dict[str, Any]) -> PlasmOptions:
    base = settings.training_config()
    nested = ("teacher_training", "successor_training", "acquisition_teacher", "successor_from_acquisition")
    kw = {k: v for k, v in options.items() if k not in nested}

    def training(part: str) -> TrainingConfig:
        over = options.get(part) or {}
        return replace(base, **over)

    return PlasmOptions(**kw, teacher_training=training("teacher_training"),
                        successor_training=training("successor_training"))


# ---------------------------------------------------------------------------------- paths


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


def export_ready(ctx: JobContext, job_id: str) -> bool:
    """Whether the successor job finished its export (its status says ``done``)."""
    status = ctx.store.get_status(job_id)
    return status is not None and status.stage == "done"


# ---------------------------------------------------------------------------------- requests


def _take_lock(ctx: JobContext, project_id: int, job_id: str) -> None:
    """Take the project's successor lock for `job_id`, taking it over from a holder whose job
    is gone; raises `SuccessorRunningError` when a live build holds it."""
    store = ctx.store
    ttl = int(ctx.settings.job_timeout) + 3600
    for _ in range(3):
        if store.take_successor_lock(project_id, job_id, ttl):
            return
        holder = store.successor_lock_holder(project_id)
        if holder is None:
            continue
        if job_status(ctx, holder) in LIVE:
            raise SuccessorRunningError(project_id, holder)
        # the holder died without releasing (worker killed, Redis job expired): take over
        if store.take_successor_lock(project_id, job_id, ttl, replacing=holder):
            return
    raise SuccessorRunningError(project_id, str(store.successor_lock_holder(project_id)))


def request_successor(ctx: JobContext, project_id: int, options: dict[str, Any]) -> str:
    """Take the project's lock and enqueue the build; raises `SuccessorRunningError`."""
    job_id = f"successor-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    _take_lock(ctx, project_id, job_id)
    try:
        ctx.store.put_status(job_id, PipelineStatus(project=int(project_id), kind="successor", stage="queued",
                                                    progress=0.0))
        enqueue(ctx.queues.successor, build_successor_job, (int(project_id), options), job_id=job_id,
                timeout=ctx.settings.job_timeout,
                meta={META_PROJECT: int(project_id), META_KIND: "successor", "options": options},
                on_failure=on_successor_failure, description=f"build PLASM successor, project {project_id}")
    except redis.exceptions.RedisError:
        ctx.store.release_successor_lock(project_id, job_id)
        raise
    return job_id


def request_cancel(ctx: JobContext, job_id: str) -> bool:
    """Ask a running build to stop at its next check (a queued one is cancelled by RQ)."""
    job = ctx.queues.fetch(job_id)
    if job is None or export_paths(ctx.settings.model_dir, job_id) is None:
        return False
    ctx.store.request_successor_cancel(job_id)
    if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        job.cancel()
        ctx.store.update_status(job_id, stage="cancelled", error="cancelled before it started")
        ctx.store.release_successor_lock(int(job.meta.get(META_PROJECT, -1)), job_id)
    return True


# ---------------------------------------------------------------------------------- the job


def _fetch_data(ctx: JobContext, project_id: int, job_id: str, config: LabelConfig) -> tuple[Any, Any]:
    """Gold labels and the unlabeled pool from Label Studio, converted; sizes and conversion
    reports go to the job's status and the worker log."""
    labeled = ctx.ls.labeled_tasks(project_id)
    gold = tasks_to_examples(labeled, config)
    labeled_ids = {int(t["id"]) for t in labeled if isinstance(t, dict) and "id" in t}
    pool = unlabeled_examples([t for t in ctx.ls.unlabeled_tasks(project_id) if int(t["id"]) not in labeled_ids],
                              config)
    log_conversion(project_id, "successor gold", gold)
    log_conversion(project_id, "successor pool", pool)
    ctx.store.update_status(
        job_id, progress=1.0,
        sizes={"gold": len(gold.examples), "pool": len(pool.examples), "gold_skipped": gold.skipped},
        conversion={"gold": gold.as_dict(), "pool": pool.as_dict()},
    )
    return gold, pool


def _cancel_check(ctx: JobContext, job: Job | None, job_id: str) -> CancelCheck:
    def cancel_check() -> bool:
        if ctx.store.successor_cancel_requested(job_id):
            return True
        if job is not None:
            try:
                return job.get_status(refresh=True) == JobStatus.CANCELED
            except (redis.exceptions.RedisError, ValueError):  # cannot tell: keep going
                return False
        return False

    return cancel_check


def _progress(ctx: JobContext, job_id: str) -> StageProgress:
    throttle = Throttle(META_EVERY_S)

    def progress(stage: str, done: int, total: int) -> None:
        if throttle.due(done, total, stage):
            ctx.store.update_status(job_id, stage=stage, progress=round(done / max(total, 1), 4),
                                    stage_done=int(done), stage_total=int(total))

    return progress


def build_successor_job(project_id: int, options: dict[str, Any]) -> dict[str, Any]:
    """Fetch gold + pool from Label Studio, run PLASM, export; returns the metrics."""
    ctx = context()
    settings, store = ctx.settings, ctx.store
    quiet_transformers()
    job = get_current_job()
    job_id = job.id if job is not None else f"successor-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    try:
        store.update_status(job_id, project=int(project_id), kind="successor", stage="fetch", progress=0.0)
        state = store.get_project(project_id)
        if state is None or not state.label_config:
            raise LookupError(f"unknown project {project_id}: Label Studio has not connected it to this backend")
        config = parse_label_config(state.label_config, state.control_name or None)
        gold, pool = _fetch_data(ctx, project_id, job_id, config)
        directory, _ = export_paths(settings.model_dir, job_id) or (
            successors_dir(settings.model_dir, project_id) / job_id, None)
        extra_teachers, why = acquisition_teacher(ctx, project_id, config, options)
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-start-") as scratch:
            start, started_from = successor_start(ctx, extra_teachers, why, options, Path(scratch) / "start")
            result, paths = build_and_export(
                gold.examples, pool.examples, config.schema, plasm_options(settings, {**options, **start}),
                directory, progress=_progress(ctx, job_id), cancel_check=_cancel_check(ctx, job, job_id),
                archive=True, extra_teachers=extra_teachers,
                extra={"project": int(project_id), "job_id": job_id, "acquisition_teacher": why,
                       "successor_start": started_from},
            )
        metrics = {**result.to_dict(), "acquisition_teacher": why, "successor_start": started_from}
        store.update_status(job_id, stage="done", progress=1.0, metrics=metrics)
        log.info("project %s: successor %s built (%s kept)", project_id, job_id, metrics["chosen"])
        return {"metrics": metrics, "archive": str(paths.archive)}
    except Cancelled as exc:
        store.update_status(job_id, stage="cancelled", error=str(exc))
        raise
    finally:
        store.clear_successor_cancel(job_id)
        store.release_successor_lock(project_id, job_id)


def on_successor_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """Record a clear error in the job's status and release the project's lock."""
    ctx = context()
    status = ctx.store.get_status(job.id)
    stage = (status.stage if status else None) or "start"
    name = getattr(exc_type, "__name__", str(exc_type))
    message = f"successor build failed at stage '{stage}': {name}: {exc_value}"[:2000]
    if issubclass(exc_type, AbandonedJobError):  # declared dead: say which worker stopped
        message = failure_reason(job, exc_type, exc_value, stage, ctx.settings.heartbeat_ttl)
    if stage == "cancelled":
        message = str(exc_value)[:2000]
    log.error("successor job %s: %s", job.id, message)
    try:
        ctx.store.update_status(job.id, error=message)
        ctx.store.release_successor_lock(int(job.meta.get(META_PROJECT, -1)), job.id)
    except redis.exceptions.RedisError as exc:  # the lock expires anyway
        log.warning("successor job %s: could not record the failure or release the project lock: %s", job.id, exc)
