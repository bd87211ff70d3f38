"""RQ jobs: one active-learning iteration per project, split so several workers share the pool.

A training request becomes a *pipeline* of jobs, identified by the training job's id::

    train_acquisition  (queue "training")   fetch labels, fit, save the checkpoint, draw the UPS
                                            subset, enqueue the chunks and the finisher
    score_chunk x N    (queue "scoring")    score SCORE_CHUNK_SIZE pool tasks each, store results
    finish_iteration   (queue "scoring",    keep the stale scores of the rest, push one prediction
                        depends on chunks)  per unlabeled task, set LS's model_version, publish

At most one pipeline runs and one waits per project (`ProjectStore` flags). Any failure (an
exception, a timeout, a worker that died) runs `on_pipeline_failure`: the error is recorded, the
serving version stays as it was, and a rerun follows if annotations arrived meanwhile.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from rq import Callback, Queue, SimpleWorker, Worker, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus

from backend.engine.errors import NotEnoughLabelsError
from backend.engine.acquisition.strategies import MahalanobisDistance, make_strategy
from backend.engine.models.transformer import TransformerModel, quiet_transformers
from backend.engine.acquisition.sampling import UPS
from backend.service.settings import Settings
from backend.labeling import LabelConfig, parse_label_config, tasks_to_examples
from backend.service.telemetry import Metrics
from backend.service.checkpoints import (
    NO_TEXT_ENTRY,
    CheckpointCache,
    checkpoint_dir,
    prune_checkpoints,
    write_checkpoint_extras,
)
from backend.service.store import UNTRAINED, ProjectStore, ScoreEntry, TrainingRequest, connect_redis

log = logging.getLogger(__name__)

RESULT_TTL = 7 * 24 * 3600
SCORE_JOB_TIMEOUT = 3600
QUEUE_KINDS = ("scoring", "training", "successor")  # worker order: finish an iteration before the next


class LabelStudioNotConfiguredError(RuntimeError):
    """Training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the backend's environment."""


class JobQueues:
    """The backend's RQ queues, named ``<KEY_PREFIX>-<kind>``. Needs a bytes (non-decoding) client."""

    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self.training = Queue(f"{prefix}-training", connection=connection)
        self.scoring = Queue(f"{prefix}-scoring", connection=connection)
        self.successor = Queue(f"{prefix}-successor", connection=connection)

    def all(self, kinds: tuple[str, ...] = QUEUE_KINDS) -> list[Queue]:
        unknown = set(kinds) - set(QUEUE_KINDS)
        if unknown:
            raise ValueError(f"unknown queue kinds {sorted(unknown)}; choose from {QUEUE_KINDS}")
        return [getattr(self, kind) for kind in kinds]

    def fetch(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return None


@dataclass
class JobContext:
    """Everything a job needs, built once per worker process from the settings."""

    settings: Settings
    store: ProjectStore
    queues: JobQueues
    metrics: Metrics
    checkpoints: CheckpointCache
    _ls: Any = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "JobContext":
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        store = ProjectStore.from_settings(settings)
        return cls(
            settings=settings,
            store=store,
            queues=JobQueues(connect_redis(settings, decode=False), settings.key_prefix),
            metrics=Metrics(store.r, settings.key_prefix),
            checkpoints=CheckpointCache(settings.model_dir, settings.model_cache_size, settings.device),
        )

    @property
    def ls(self):
        """The Label Studio client (created on first use: only training needs it)."""
        if self._ls is None:
            if not self.settings.label_studio_configured:
                raise LabelStudioNotConfiguredError(
                    "training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the backend's environment"
                )
            from backend.service.ls_client import LabelStudioClient

            self._ls = LabelStudioClient(
                self.settings.label_studio_url, self.settings.label_studio_api_key,
                timeout=self.settings.label_studio_timeout,
            )
        return self._ls


_context: JobContext | None = None


def context() -> JobContext:
    """The process's job context (from the environment unless `set_context` installed one)."""
    global _context
    if _context is None:
        _context = JobContext.from_settings(Settings.from_env())
    return _context


def set_context(ctx: JobContext | None) -> None:
    global _context
    _context = ctx


# ---------------------------------------------------------------------------------- requests


def request_training(ctx: JobContext, project_id: int, reason: str) -> TrainingRequest:
    """Queue a retrain unless one is waiting (it will see the new labels) or running (it runs
    once more afterwards). Never trains here: callers are HTTP requests with a 1 s budget."""
    if not ctx.settings.label_studio_configured:
        raise LabelStudioNotConfiguredError(
            "training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the backend's environment"
        )
    repair_stale_flags(ctx, project_id)
    job_id = f"train-{int(project_id)}-{uuid.uuid4().hex[:12]}"
    req = ctx.store.request_training(project_id, job_id)
    if req.outcome != "enqueue":
        return req
    try:
        ctx.queues.training.enqueue_call(
            train_acquisition, args=(int(project_id),), job_id=job_id, timeout=ctx.settings.job_timeout,
            result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
            meta={"project": int(project_id), "pipeline": job_id, "stage": "queued", "reason": reason,
                  "progress": 0.0},
            on_failure=Callback(on_pipeline_failure),
            description=f"train acquisition model, project {project_id} ({reason})",
        )
    except Exception:
        ctx.store.clear_job_field(project_id, "queued_job", job_id)
        raise
    ctx.metrics.count_job("train_acquisition", "enqueued")
    return req


_ALIVE = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.CREATED}


def repair_stale_flags(ctx: JobContext, project_id: int) -> None:
    """Clear training flags whose job is gone (Redis flushed, job expired, worker killed before
    its failure callback ran), so a dead pipeline cannot block training forever."""
    state = ctx.store.get_project(project_id)
    if state is None:
        return
    if state.queued_job and _status(ctx, state.queued_job) not in _ALIVE:
        ctx.store.clear_job_field(project_id, "queued_job", state.queued_job)
    if state.running_job:
        stage = state.stage_job or state.running_job
        if _status(ctx, stage) not in _ALIVE:
            if ctx.store.end_pipeline(project_id, state.running_job) is not None:
                ctx.store.record_error(project_id, state.running_job,
                                       f"training pipeline {state.running_job} stopped without finishing "
                                       f"(job {stage} is gone or failed; was a worker killed?)")


def _status(ctx: JobContext, job_id: str) -> JobStatus | None:
    job = ctx.queues.fetch(job_id)
    if job is None:
        return None
    try:
        return job.get_status(refresh=False)
    except Exception:  # a job hash without a status: treat as gone
        return None


# ---------------------------------------------------------------------------------- the jobs


def new_version(iteration: int) -> str:
    """Unique, readable and sortable per project: ``acq-<iteration>-<UTC time>``."""
    return f"acq-{iteration}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def _set_meta(job: Job | None, **values: Any) -> None:
    """Merge into the job's meta as stored (other jobs of the pipeline write to it too)."""
    if job is not None:
        job.get_meta(refresh=True)
        job.meta.update(values)
        job.save_meta()


def train_acquisition(project_id: int) -> dict[str, Any]:
    """Stage 1 of an iteration: fit from the pretrained checkpoint, then fan out the scoring."""
    ctx = context()
    settings, store = ctx.settings, ctx.store
    quiet_transformers()
    job = get_current_job()
    pipeline_id = job.id if job is not None else f"inline-{uuid.uuid4().hex[:12]}"
    if not store.begin_training(project_id, pipeline_id):
        _set_meta(job, stage="skipped", pipeline_status="skipped")
        return {"skipped": "another training of this project is running; it will run once more"}
    started = time.time()
    t0 = time.perf_counter()
    _set_meta(job, stage="fetch", progress=0.0, pipeline_status="running")

    project = ctx.ls.get_project(project_id)
    config = parse_label_config(project["label_config"], settings.label_control_name or None)
    store.register_project(project_id, project["label_config"], config.control_name, config.value_key,
                           config.task_type.value)
    labeled = ctx.ls.labeled_tasks(project_id)
    report = tasks_to_examples(labeled, config)
    if not report.examples:
        raise NotEnoughLabelsError(
            f"project {project_id} has no usable annotated task yet ({report.summary()}); annotate some first"
        )
    state = store.get_project(project_id)
    assert state is not None  # registered above
    iteration = state.iteration + 1
    labeled_ids = {int(t["id"]) for t in labeled}
    pool_ids, refreshed = _sync_pool(ctx, project_id, config, labeled_ids, iteration)
    fetch_seconds = time.perf_counter() - t0

    _set_meta(job, stage="train")
    t1 = time.perf_counter()
    version = new_version(iteration)
    _set_meta(job, version=version)
    model = TransformerModel(settings.acquisition_model, config.schema, settings.training_config())
    last_progress = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last_progress[0] > 1.0 or done == total:
            last_progress[0] = now
            _set_meta(job, progress=round(done / max(total, 1), 4))

    fit = model.fit(report.examples, progress=progress)
    directory = checkpoint_dir(settings.model_dir, project_id, version)
    model.save(directory)
    strategy = make_strategy(settings.strategy, config.task_type, seed=settings.seed)
    if isinstance(strategy, MahalanobisDistance):
        embeddings = model.predict(report.examples, return_embeddings=True).embeddings
        strategy.fit(embeddings, np.array([ex.labels[0] for ex in report.examples]))  # type: ignore[union-attr]
    write_checkpoint_extras(directory, config, project["label_config"], strategy, {
        "project": project_id, "version": version, "iteration": iteration, "base": settings.acquisition_model,
        "labeled": len(report.examples), "pipeline": pipeline_id,
    })
    train_seconds = time.perf_counter() - t1

    _set_meta(job, stage="select", progress=0.0)
    stale = store.uncertainties(project_id, state.version, pool_ids)
    sampler = UPS(settings.ups_gamma, settings.ups_temperature, settings.full_rescore_iterations)
    rng = np.random.default_rng([settings.seed, int(project_id), iteration])
    mask = sampler.select(stale, iteration, rng) if pool_ids else np.zeros(0, dtype=bool)
    subset = [pool_ids[i] for i in np.flatnonzero(mask)]
    info = {
        "iteration": iteration, "version": version, "prev_version": state.version, "pipeline": pipeline_id,
        "value_key": config.value_key, "pool_size": len(pool_ids), "subset_size": len(subset),
        "never_scored": int(np.isnan(stale).sum()), "full_rescore": bool(mask.all()) if len(mask) else True,
        "pool_refreshed": refreshed, "labeled": len(report.examples), "skipped": report.skipped,
        "chunks": math.ceil(len(subset) / settings.score_chunk_size), "started_at": started,
        "fetch_seconds": fetch_seconds, "train_seconds": train_seconds, "fit_steps": fit.steps, "fit_loss": fit.final_loss,
        "scoring_started": time.time(),
    }
    store.start_iteration(project_id, version, info, pool_ids)
    _set_meta(job, stage="score")
    chunk_jobs, finisher = enqueue_scoring(ctx, project_id, pipeline_id, version, subset)
    store.set_stage_job(project_id, pipeline_id, finisher.id)
    ctx.metrics.count_job("train_acquisition", "finished")
    log.info("project %s: trained %s on %d examples in %.1fs; scoring %d of %d pool tasks in %d chunks",
             project_id, version, len(report.examples), train_seconds, len(subset), len(pool_ids), len(chunk_jobs))
    return {"version": version, "iteration": iteration, "labeled": len(report.examples),
            "pool_size": len(pool_ids), "subset_size": len(subset), "train_seconds": train_seconds}


def enqueue_scoring(
    ctx: JobContext, project_id: int, pipeline_id: str, version: str, subset: list[int]
) -> tuple[list[Job], Job]:
    """Chunk jobs over the UPS subset and the finisher that waits for all of them."""
    size = ctx.settings.score_chunk_size
    meta = {"project": int(project_id), "pipeline": pipeline_id, "version": version}
    chunk_jobs = [
        ctx.queues.scoring.enqueue_call(
            score_chunk, args=(int(project_id), version, subset[i : i + size]), timeout=SCORE_JOB_TIMEOUT,
            result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL, meta={**meta, "stage": "score"},
            on_failure=Callback(on_pipeline_failure),
            description=f"score {len(subset[i : i + size])} pool tasks, project {project_id} {version}",
        )
        for i in range(0, len(subset), size)
    ]
    finisher = ctx.queues.scoring.enqueue_call(
        finish_iteration, args=(int(project_id), version), job_id=finisher_id(pipeline_id),
        timeout=ctx.settings.job_timeout,
        result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL, meta={**meta, "stage": "push"},
        depends_on=Dependency(jobs=chunk_jobs, enqueue_at_front=True) if chunk_jobs else None,
        on_failure=Callback(on_pipeline_failure),
        description=f"push predictions, project {project_id} {version}",
    )
    return chunk_jobs, finisher


def finisher_id(pipeline_id: str) -> str:
    """The finisher's job id, derived so a failing chunk can cancel it without a lookup."""
    return f"{pipeline_id}-finish"


def _task_text(task: dict, config: LabelConfig) -> str:
    data = task.get("data")
    value = data.get(config.value_key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _sync_pool(
    ctx: JobContext, project_id: int, config: LabelConfig, labeled_ids: set[int], iteration: int
) -> tuple[list[int], bool]:
    """The unlabeled pool's ids (sorted), from the Redis cache when it can be trusted, else listed
    from Label Studio (listing 10k tasks takes seconds; the cache keeps it off most iterations)."""
    store = ctx.store
    state = store.get_project(project_id)
    assert state is not None
    reason = None
    if not store.pool_exists(project_id):
        reason = "no cached pool"
    elif state.pool_stale:
        reason = "events made the cached pool stale"
    elif state.pool_value_key != config.value_key:
        reason = "the label config reads another task field"
    elif iteration - state.pool_refreshed_iteration >= ctx.settings.pool_refresh_every:
        reason = "periodic refresh"
    if reason is None:
        store.pool_remove(project_id, labeled_ids)
        ids = store.pool_ids(project_id)
        total = ctx.ls.count_tasks(project_id)
        if total == len(ids) + len(labeled_ids):
            return ids, False
        reason = f"Label Studio holds {total} tasks, the cache knows {len(ids)} unlabeled + {len(labeled_ids)} labeled"
    log.info("project %s: listing the unlabeled pool (%s)", project_id, reason)
    tasks = ctx.ls.unlabeled_tasks(project_id)
    texts = {int(t["id"]): _task_text(t, config) for t in tasks if int(t["id"]) not in labeled_ids}
    store.pool_replace(project_id, texts, config.value_key, iteration)
    return sorted(texts), True


def score_chunk(project_id: int, version: str, task_ids: list[int]) -> dict[str, Any]:
    """Score one chunk of the UPS subset with the new checkpoint; results go to the store."""
    ctx = context()
    store = ctx.store
    t0 = time.perf_counter()
    value_key = store.iteration_info(project_id, version)["value_key"]
    texts = store.pool_texts(project_id, task_ids)
    tasks = [{"id": t, "data": {value_key: text} if text is not None else {}} for t, text in zip(task_ids, texts)]
    checkpoint = ctx.checkpoints.get(project_id, version)
    entries, ran = checkpoint.score(tasks)
    store.put_scores(project_id, version, dict(zip(task_ids, entries)))
    seconds = time.perf_counter() - t0
    scored, chunks_done = store.add_iteration_progress(project_id, version, ran, seconds)
    ctx.metrics.count_job("score_chunk", "finished")
    return {"tasks": len(task_ids), "model_scored": ran, "seconds": seconds, "chunks_done": chunks_done}


def finish_iteration(project_id: int, version: str) -> dict[str, Any]:
    """Keep stale scores for tasks UPS did not draw, push one prediction per unlabeled task with
    the new version in bulk, set the project's model_version, publish the version."""
    ctx = context()
    settings, store = ctx.settings, ctx.store
    info = store.iteration_info(project_id, version)
    pipeline_id = info["pipeline"]
    pipeline_job = ctx.queues.fetch(pipeline_id)
    _set_meta(pipeline_job, stage="push")
    pool: list[int] = info["pool"]
    prev = info["prev_version"]
    scoring_wall = time.time() - float(info["scoring_started"])

    raw = store.get_raw_scores(project_id, version, pool)
    missing = [t for t, r in zip(pool, raw) if r is None]
    kept = store.get_raw_scores(project_id, prev, missing) if prev != UNTRAINED else [None] * len(missing)
    fill: dict[int, str] = {}
    unscored = 0
    for task_id, old in zip(missing, kept):
        if old is None:  # cannot happen for a consistent pool (never-scored tasks are always drawn)
            unscored += 1
            old = NO_TEXT_ENTRY.to_json()
        fill[task_id] = old
    store.put_scores(project_id, version, fill)
    by_task = dict(zip(pool, raw))
    by_task.update(fill)

    t0 = time.perf_counter()
    predictions = []
    for task_id in pool:
        entry = ScoreEntry.from_json(by_task[task_id])  # type: ignore[arg-type]
        predictions.append({"task": task_id, "result": entry.result, "score": entry.score, "model_version": version})
    pushed = ctx.ls.import_predictions(project_id, predictions, batch_size=settings.push_batch_size) if predictions else 0
    ctx.ls.set_model_version(project_id, version)
    push_seconds = time.perf_counter() - t0

    iteration = int(info["iteration"])
    model_scored = int(info.get("scored", 0))
    record = {
        "iteration": iteration, "version": version, "previous_version": prev, "pipeline": pipeline_id,
        "labeled": int(info["labeled"]), "pool_size": len(pool), "subset_size": int(info["subset_size"]),
        "scored_by_model": model_scored, "kept_stale": len(missing) - unscored, "unscored": unscored,
        "rescored_share": (int(info["subset_size"]) / len(pool)) if pool else 0.0,
        "full_rescore": info.get("full_rescore") == "1", "pool_refreshed": info.get("pool_refreshed") == "1",
        "chunks": int(info["chunks"]), "pushed": int(pushed),
        "seconds": {
            "fetch": float(info["fetch_seconds"]), "train": float(info["train_seconds"]),
            "inference": float(info.get("inference_seconds", 0.0)), "scoring_wall": scoring_wall,
            "push": push_seconds, "total": time.time() - float(info["started_at"]),
        },
        "started_at": float(info["started_at"]), "finished_at": time.time(),
    }
    store.publish_version(project_id, version, iteration, record)
    store.clear_error(project_id)
    prune_checkpoints(settings.model_dir, project_id, keep=store.versions(project_id)[-settings.keep_versions:])
    _set_meta(pipeline_job, stage="done", progress=1.0, pipeline_status="finished", iteration_record=record)
    ctx.metrics.count_job("finish_iteration", "finished")
    rerun = store.end_pipeline(project_id, pipeline_id)
    if rerun:
        request_training(ctx, project_id, "annotations arrived during the previous run")
    log.info("project %s: published %s (scored %d of %d, pushed %d in %.1fs)",
             project_id, version, model_scored, len(pool), pushed, push_seconds)
    return record


def on_pipeline_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """Any stage failed: record why, keep the serving version, release the project's flag, cancel
    the finisher still waiting on a failed chunk, and rerun if annotations arrived meanwhile."""
    ctx = context()
    project_id = int(job.meta["project"])
    pipeline_id = job.meta.get("pipeline", job.id)
    version = job.meta.get("version")
    stage = job.meta.get("stage") or job.func_name
    name = getattr(exc_type, "__name__", str(exc_type))
    message = f"{stage} failed: {name}: {exc_value}"[:2000]
    log.error("project %s pipeline %s: %s", project_id, pipeline_id, message)
    ctx.metrics.count_job(job.func_name.rsplit(".", 1)[-1], "failed")
    pipeline_job = ctx.queues.fetch(pipeline_id) if pipeline_id != job.id else job
    if pipeline_job is not None:
        version = version or pipeline_job.meta.get("version")
        _set_meta(pipeline_job, pipeline_status="failed", error=message)
    if job.id != finisher_id(pipeline_id):
        waiting = ctx.queues.fetch(finisher_id(pipeline_id))
        if waiting is not None and waiting.get_status(refresh=False) == JobStatus.DEFERRED:
            waiting.cancel()
    ended = ctx.store.end_pipeline(project_id, pipeline_id)
    if ended is None:  # another chunk of this pipeline already reported its failure
        return
    ctx.store.record_error(project_id, pipeline_id, message)
    if version and version != ctx.store.current_version(project_id):
        ctx.store.discard_iteration(project_id, version)
        shutil.rmtree(checkpoint_dir(ctx.settings.model_dir, project_id, version), ignore_errors=True)
    if ended:
        try:
            request_training(ctx, project_id, "annotations arrived during a failed run")
        except Exception as exc:  # the failure is recorded; a rerun is a bonus
            log.warning("project %s: could not queue the rerun: %s", project_id, exc)


# ---------------------------------------------------------------------------------- status


def describe_job(ctx: JobContext, job_id: str) -> dict[str, Any] | None:
    """What ``GET /jobs/<id>`` shows: RQ status plus the pipeline's stage, progress and error."""
    job = ctx.queues.fetch(job_id)
    if job is None:
        return None
    meta = dict(job.meta or {})
    status = job.get_status(refresh=False)
    out: dict[str, Any] = {
        "id": job.id, "function": job.func_name.rsplit(".", 1)[-1], "status": str(getattr(status, "value", status)),
        "project": meta.get("project"), "pipeline": meta.get("pipeline"), "stage": meta.get("stage"),
        "progress": meta.get("progress"), "version": meta.get("version"),
        "pipeline_status": meta.get("pipeline_status"), "error": meta.get("error"),
        "enqueued_at": _iso(job.enqueued_at), "started_at": _iso(job.started_at), "ended_at": _iso(job.ended_at),
    }
    if status == JobStatus.FAILED and not out["error"]:
        exc = job.latest_result().exc_string if job.latest_result() else None
        out["error"] = (exc or "").strip().splitlines()[-1] if exc else "failed"
    if meta.get("stage") == "score" and meta.get("project") is not None and meta.get("version"):
        try:
            info = ctx.store.iteration_info(int(meta["project"]), meta["version"])
            subset = int(info.get("subset_size", 0))
            out["progress"] = round(int(info.get("scored", 0)) / subset, 4) if subset else 1.0
            out["scoring"] = {"scored": int(info.get("scored", 0)), "subset_size": subset,
                              "chunks": int(info.get("chunks", 0)), "chunks_done": int(info.get("chunks_done", 0))}
        except KeyError:
            pass
    if meta.get("kind") == "successor":
        out["stage_done"], out["stage_total"] = meta.get("stage_done"), meta.get("stage_total")
        out["metrics"], out["sizes"] = meta.get("metrics"), meta.get("sizes")
        out["download"] = f"/successor/{job.id}/download" if meta.get("stage") == "done" else None
    if meta.get("iteration_record"):
        out["iteration"] = meta["iteration_record"]
    if job.is_finished and meta.get("pipeline") != job.id:
        out["result"] = job.return_value()
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------------- worker


def run_worker(
    settings: Settings, kinds: tuple[str, ...] = QUEUE_KINDS, *, burst: bool = False, fork: bool = False,
    name: str | None = None,
) -> bool:
    """Run an RQ worker on the backend's queues. By default jobs run in the worker process itself
    (no fork per job): loaded checkpoints stay cached between chunk jobs and a CUDA context
    survives, which a fork would break. ``fork=True`` isolates each job in a child process."""
    quiet_transformers()
    ctx = JobContext.from_settings(settings)
    set_context(ctx)
    ctx.store.ping()
    worker_class = Worker if fork else SimpleWorker
    worker = worker_class(
        ctx.queues.all(kinds), connection=ctx.queues.connection,
        name=name or f"feasible-al-{socket.gethostname()}-{os.getpid()}",
    )
    return worker.work(burst=burst, logging_level="INFO")
